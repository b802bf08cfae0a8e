#!/bin/sh
# A daemon run as an unprivileged host user (busybox sh), run by /init in e2e.mode=rootless with
# the share on ROOT. matrix.sh's `rootless` configuration starts the daemon as the host user
# avfs-e2e (uid U, gid G; run-e2e.sh --daemon-user), which owns the share, in its own user
# namespace (namespace id 0 = U, 1..65536 = its subordinate ids S..S+65535) with
#   --translate-uid map:1000:2000:10 --translate-uid squash-guest:1010:0:10
#   --translate-uid forbid-guest:1500:1   (the same for gids)
#   --cache=never --allow-mmap --preserve-noatime --posix-acl
# So guest root is U on the host; guest 1000..1009 are namespace 2000..2009, host S+1999..;
# guest 1010..1019 are squashed to namespace 0 (host U); 1500 is refused (EPERM); a guest id
# no rule covers passes unchanged and, past the namespace's 65536 ids, cannot be used (EINVAL).
# The host wrote rootless/ids ("U G S SG") and, in rootless/ids-dir, files of host root (not in
# the namespace), of namespace ids 2003 and 3000; rootless/mmap/host-file; rootless/atime/*
# with atime 2001-01-01 (978307200), root-noatime owned by host root (run-e2e.sh).
# Prints TAP-like lines and HOST-EXPECT lines for run-e2e.sh. Exit status 0 only if every
# check passed.
#
# usage: guest-rootless-test.sh [ROOT=/mnt]
# shellcheck shell=sh

ROOT=${1:-/mnt}
D=$ROOT/rootless
. /e2e/guest-lib.sh
owner() { stat -c %u:%g "$1" 2>&1; }

cd / || exit 1
# shellcheck disable=SC2046
set -- $(cat "$D/ids" 2>/dev/null)
[ $# = 4 ] || { echo "not ok - setup: no ids in $D/ids"; exit 1; }
U=$1 G=$2 SU=$3 SG=$4
echo "# daemon user $U:$G, subordinate ids from $SU:$SG"

# --- a rootless daemon with translated ids ---------------------------------------------------
I=$D/ids-dir
expect "ids: the share's root (the daemon user's) is guest root's" 0:0 "$(owner "$ROOT")"
echo root >"$I/by-root"
mkdir "$I/dir-root"
if [ "$(owner "$I/by-root")" = 0:0 ] && [ "$(owner "$I/dir-root")" = 0:0 ]; then
    ok "ids: guest root owns what it made"
else
    not_ok "ids: guest root owns what it made" "$(owner "$I/by-root"), $(owner "$I/dir-root")"
fi
host_expect owner rootless/ids-dir/by-root "$U:$G"
host_expect owner rootless/ids-dir/dir-root "$U:$G"

echo chowned >"$I/chowned"
works "ids: root chowns to 1000:1001" chown 1000:1001 "$I/chowned"
drop_caches
expect "ids: the guest sees 1000:1001" 1000:1001 "$(owner "$I/chowned")"
host_expect owner rootless/ids-dir/chowned "$((SU + 1999)):$((SG + 2000))"

mkdir "$I/open"
chmod 777 "$I/open"
works "ids: uid 1001 makes a file" as 1001 sh -c "echo u >'$I/open/by-1001'"
expect "ids: uid 1001 made it, as the guest sees it" 1001:1001 "$(owner "$I/open/by-1001")"
host_expect owner rootless/ids-dir/open/by-1001 "$((SU + 2000)):$((SG + 2000))"
works "ids: uid 1012 (squashed) makes a file" as 1012 sh -c "echo s >'$I/open/by-1012'"
expect "ids: the squashed user's file is guest root's" 0:0 "$(owner "$I/open/by-1012")"
host_expect owner rootless/ids-dir/open/by-1012 "$U:$G"

fails "ids: chown to the forbidden 1500" "Operation not permitted" chown 1500 "$I/by-root"
fails "ids: chgrp to the forbidden 1500" "Operation not permitted" chgrp 1500 "$I/by-root"
fails "ids: the forbidden uid 1500 cannot make a file" "Operation not permitted" \
    as 1500 sh -c ": >'$I/open/by-1500'"
# No rule: namespace id 70000, which the namespace does not map.
fails "ids: chown to 70000 (outside the namespace)" "Invalid argument" chown 70000 "$I/by-root"
fails "ids: uid 70000 cannot make a file" "Invalid argument" as 70000 sh -c ": >'$I/open/by-70000'"
drop_caches
expect "ids: refused chowns changed nothing" 0:0 "$(owner "$I/by-root")"
host_expect owner rootless/ids-dir/by-root "$U:$G"
for n in by-1500 by-70000; do host_expect absent "rootless/ids-dir/open/$n"; done

expect "ids: host root's file shows the overflow id" 65534:65534 "$(owner "$I/host-root")"
fails "ids: guest root cannot read host root's 0600 file" "Permission denied" cat "$I/host-root"
expect "ids: namespace id 2003 shows as guest 1003 (map rule back)" 1003:1003 \
    "$(owner "$I/host-2003")"
expect "ids: namespace id 3000 passes unchanged" 3000:3000 "$(owner "$I/host-3000")"
mkdir "$I/gone" && echo x >"$I/gone/f"
works "ids: guest root removes what it made" rm -r "$I/gone"
host_expect absent rootless/ids-dir/gone

# --- --posix-acl: the ids inside ACLs are translated as the owners are ------------------------
# Guest 1003 is namespace 2003, which the host kernel stores as S+2002 (the daemon's namespace
# to the host); a forbidden id and one outside the namespace are EINVAL, as the kernel answers
# an ACL entry whose id it cannot map.
C=$D/acl
mkdir "$C"
echo secret >"$C/f"
chmod 640 "$C/f"
ACL='u::rw-,u:1003:r--,g::r--,g:1009:r--,m::r--,o::---'
works "acl: setacl u:1003:r--,g:1009:r--" "$P" setacl "$C/f" access "$ACL"
drop_caches
expect "acl: getacl shows the guest's ids" "$ACL" "$($P getacl "$C/f" access 2>&1)"
expect "acl: uid 1003 reads through its entry" secret "$(as 1003 cat "$C/f" 2>&1)"
fails "acl: uid 1004 cannot read" "Permission denied" as 1004 cat "$C/f"
expect "acl: gid 1009 reads through its entry" secret "$("$P" as 1100 1009 cat "$C/f" 2>&1)"
fails "acl: an entry for the forbidden uid 1500" EINVAL \
    "$P" setacl "$C/f" access 'u::rw-,u:1500:r--,g::r--,m::r--,o::---'
fails "acl: an entry for uid 70000 (outside the namespace)" EINVAL \
    "$P" setacl "$C/f" access 'u::rw-,u:70000:r--,g::r--,m::r--,o::---'
expect "acl: refused ACLs changed nothing" "$ACL" "$($P getacl "$C/f" access 2>&1)"
host_expect acl rootless/acl/f "u::rw-,u:$((SU + 2002)):r--,g::r--,g:$((SG + 2008)):r--,m::r--,o::---"

# --- --allow-mmap (--cache=never: every file is direct I/O) ---------------------------------
# Guests from Linux 6.6 offer DIRECT_IO_ALLOW_MMAP; before, a shared mapping of a direct-I/O
# file is ENODEV whatever the daemon says.
M=$D/mmap
dd if=/dev/zero of="$M/guest-file" bs=4k count=2 2>/dev/null
case $(uname -r) in
    [0-5].*|6.[0-5].*)
        fails "mmap: shared writable mmap on Linux $(uname -r) (before 6.6)" ENODEV \
            "$P" mmap-write "$M/host-file" HELLO
        expect "mmap: the host's file unchanged" 0123456789abcdef "$(cat "$M/host-file")"
        echo guest >"$M/guest-file"
        ;;
    *)
        works "mmap: shared writable mmap of the host's file, msync" \
            "$P" mmap-write "$M/host-file" HELLO
        expect "mmap: a read sees what the mapping wrote" HELLO56789abcdef "$(cat "$M/host-file")"
        works "mmap: shared writable mmap of a guest file" \
            "$P" mmap-write "$M/guest-file" from-the-guest
        expect "mmap: shared read-only mapping" from-the-guest \
            "$("$P" mmap-read "$M/guest-file" shared | tr -d '\0')"
        ;;
esac
expect "mmap: private mapping" "$(tr -d '\0' <"$M/guest-file")" \
    "$("$P" mmap-read "$M/guest-file" private | tr -d '\0')"
host_expect md5 rootless/mmap/host-file "$(md5sum <"$M/host-file" | cut -d' ' -f1)"
host_expect md5 rootless/mmap/guest-file "$(md5sum <"$M/guest-file" | cut -d' ' -f1)"
host_expect size rootless/mmap/guest-file "$(stat -c %s "$M/guest-file")"

# --- --preserve-noatime ---------------------------------------------------------------------
# The daemon's own files: O_NOATIME is kept, the host's atime stays; a plain read moves it. A
# file of host root: the daemon may not use O_NOATIME there (neither owner nor CAP_FOWNER over
# it), and with --preserve-noatime the open fails EPERM rather than quietly updating atime.
A=$D/atime
expect "noatime: O_NOATIME read of own-noatime" "atime own-noatime" "$("$P" noatime-read "$A/own-noatime" 2>&1)"
expect "noatime: plain read of own-plain" "atime own-plain" "$(cat "$A/own-plain" 2>&1)"
fails "noatime: O_NOATIME open of host root's file" EPERM "$P" noatime-read "$A/root-noatime"
expect "noatime: host root's file reads without O_NOATIME" "atime root-noatime" \
    "$(cat "$A/root-noatime" 2>&1)"
host_expect atime rootless/atime/own-noatime 978307200
host_expect atime-not rootless/atime/own-plain 978307200
host_expect atime-not rootless/atime/root-noatime 978307200

echo "# rootless test: $FAILED failed checks"
[ "$FAILED" = 0 ]
