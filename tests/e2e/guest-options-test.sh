#!/bin/sh
# The daemon's options that change what a guest sees (busybox sh), run by /init in
# e2e.mode=options with the share on ROOT. matrix.sh's `options` configuration starts the
# daemon with
#   --posix-acl --xattrmap=/map/trusted./user.virtiofs./ --killpriv-v2
#   --max-inodes 100 --max-bytes 4M --security-label
# and boots the guest with security=selinux (run-guest.sh), so it has an LSM that labels new
# files. The host put options/xmap/host-file there, with user.virtiofs.trusted.from-host=h1,
# user.plain=p1 and trusted.host-only=t1 (run-e2e.sh). Busybox has no setfacl, setfattr or
# way to switch uid: /e2e/guest-probe does those (`as`, `setacl`, `getxattr`, ...).
# Prints TAP-like lines and HOST-EXPECT lines for run-e2e.sh, and
#   GUEST-QUOTA inodes N bytes B     the quota df showed; the share is left holding N inodes
#                                    below its root (the root is not counted)
# Exit status 0 only if every check passed.
#
# usage: guest-options-test.sh [ROOT=/mnt]
# shellcheck shell=sh

ROOT=${1:-/mnt}
D=$ROOT/options
MAX_INODES=100
MAX_BYTES=$((4 * 1024 * 1024))
. /e2e/guest-lib.sh
mode() { stat -c %a "$1" 2>&1; }

cd / || exit 1
mkdir -p "$D/acl" "$D/kp" "$D/label" "$D/quota" || { echo "not ok - setup: mkdir in $D"; exit 1; }
chmod 755 "$D" "$D/acl"
chmod 777 "$D/kp"

# --- --posix-acl ----------------------------------------------------------------------------
# A named user's entry grants what the mode does not; a mask limits it; a named user's empty
# entry denies what "other" allows; a default ACL is inherited. Enforced for uid 1000 and 1001.
A=$D/acl
echo secret >"$A/named"
chmod 640 "$A/named"
fails "acl: uid 1000 cannot read a 0640 root file" "Permission denied" as 1000 cat "$A/named"
works "acl: setacl u:1000:r-- (system.posix_acl_access)" \
    "$P" setacl "$A/named" access 'u::rw-,u:1000:r--,g::r--,m::r--,o::---'
expect "acl: getacl reads it back" 'u::rw-,u:1000:r--,g::r--,m::r--,o::---' \
    "$($P getacl "$A/named" access 2>&1)"
expect "acl: the mode's group bits are the mask" 640 "$(mode "$A/named")"
drop_caches
expect "acl: uid 1000 reads through its entry" secret "$(as 1000 cat "$A/named" 2>&1)"
fails "acl: uid 1001 still cannot read" "Permission denied" as 1001 cat "$A/named"
fails "acl: uid 1000 cannot write (entry r--)" "Permission denied" \
    as 1000 sh -c "echo x >>'$A/named'"
chmod 600 "$A/named"
expect "acl: chmod 600 sets the mask to ---" 'u::rw-,u:1000:r--,g::r--,m::---,o::---' \
    "$($P getacl "$A/named" access 2>&1)"
fails "acl: the mask --- now denies uid 1000" "Permission denied" as 1000 cat "$A/named"
host_expect acl options/acl/named 'u::rw-,u:1000:r--,g::r--,m::---,o::---'
host_expect mode options/acl/named 600

echo public >"$A/denied"
chmod 644 "$A/denied"
works "acl: setacl u:1000:--- on a 0644 file" \
    "$P" setacl "$A/denied" access 'u::rw-,u:1000:---,g::r--,m::r--,o::r--'
fails "acl: uid 1000 is denied by its entry" "Permission denied" as 1000 cat "$A/denied"
expect "acl: uid 1001 reads as other" public "$(as 1001 cat "$A/denied" 2>&1)"

mkdir "$A/inherit"
works "acl: setacl default u:1000:rwx on a directory" \
    "$P" setacl "$A/inherit" default 'u::rwx,u:1000:rwx,g::r-x,m::rwx,o::---'
echo from-root >"$A/inherit/new"
mkdir "$A/inherit/sub"
expect "acl: a new file inherits the default ACL (masked by its mode)" \
    'u::rw-,u:1000:rwx,g::r-x,m::rw-,o::---' "$($P getacl "$A/inherit/new" access 2>&1)"
expect "acl: a new directory inherits it as its default ACL" \
    'u::rwx,u:1000:rwx,g::r-x,m::rwx,o::---' "$($P getacl "$A/inherit/sub" default 2>&1)"
works "acl: uid 1000 appends to the inherited file" as 1000 sh -c "echo from-1000 >>'$A/inherit/new'"
fails "acl: uid 1001 cannot read it" "Permission denied" as 1001 cat "$A/inherit/new"
host_expect acl options/acl/inherit/new 'u::rw-,u:1000:rwx,g::r-x,m::rw-,o::---'
host_expect md5 options/acl/inherit/new "$(md5sum <"$A/inherit/new" | cut -d' ' -f1)"

# --- --xattrmap=/map/trusted./user.virtiofs./ -----------------------------------------------
X=$D/xmap
expect "xattrmap: the host's user.virtiofs.trusted.from-host is trusted.from-host" h1 \
    "$($P getxattr "$X/host-file" trusted.from-host 2>&1)"
expect "xattrmap: user.plain passes unchanged" p1 "$($P getxattr "$X/host-file" user.plain 2>&1)"
expect "xattrmap: listxattr shows the mapped names only" 'trusted.from-host user.plain' \
    "$($P listxattr "$X/host-file" 2>&1 | grep -v '^security\.' | sort | tr '\n' ' ' | sed 's/ $//')"
fails "xattrmap: the host's own trusted.host-only is out of reach" ENODATA \
    "$P" getxattr "$X/host-file" trusted.host-only
echo guest >"$X/guest-file"
works "xattrmap: setxattr trusted.overlay.opaque" \
    "$P" setxattr "$X/guest-file" trusted.overlay.opaque y
drop_caches
expect "xattrmap: getxattr trusted.overlay.opaque" y \
    "$($P getxattr "$X/guest-file" trusted.overlay.opaque 2>&1)"
fails "xattrmap: the guest cannot name user.virtiofs. itself" EPERM \
    "$P" setxattr "$X/guest-file" user.virtiofs.trusted.forged z
host_expect xattr options/xmap/guest-file user.virtiofs.trusted.overlay.opaque y
host_expect no-xattr options/xmap/guest-file trusted.overlay.opaque
host_expect no-xattr options/xmap/guest-file user.virtiofs.trusted.forged

# --- --killpriv-v2 --------------------------------------------------------------------------
# The guest leaves clearing SUID/SGID to the daemon (WRITE_KILL_SUIDGID, OPEN_KILL_SUIDGID,
# FATTR_KILL_SUIDGID): a write, an O_TRUNC open and a truncate by uid 1000 (no CAP_FSETID) of
# root's files clear them; SGID without group execute stays; root's own write keeps both.
K=$D/kp
# setbits FILE MODE: a root-owned file with MODE.
setbits() { echo root-wrote >"$1" && chmod "$2" "$1"; }
setbits "$K/suid" 4777
setbits "$K/sgid" 2777
setbits "$K/sgid-noexec" 2766
setbits "$K/otrunc" 4777
setbits "$K/truncate" 4777
setbits "$K/root" 6777
works "killpriv: uid 1000 appends to a SUID file" as 1000 sh -c "echo w >>'$K/suid'"
works "killpriv: uid 1000 appends to a SGID g+x file" as 1000 sh -c "echo w >>'$K/sgid'"
works "killpriv: uid 1000 appends to a SGID g-x file" as 1000 sh -c "echo w >>'$K/sgid-noexec'"
works "killpriv: uid 1000 opens a SUID file O_TRUNC" as 1000 sh -c ": >'$K/otrunc'"
works "killpriv: uid 1000 truncates a SUID file" as 1000 truncate -s 2 "$K/truncate"
works "killpriv: root appends to a SUID+SGID file" sh -c "echo w >>'$K/root'"
drop_caches
for f in suid:777 sgid:777 sgid-noexec:2766 otrunc:777 truncate:777 root:6777; do
    expect "killpriv: mode of kp/${f%:*} after the write" "${f#*:}" "$(mode "$K/${f%:*}")"
    host_expect mode "options/kp/${f%:*}" "${f#*:}"
done

# --- --security-label -----------------------------------------------------------------------
# With SELinux on (security=selinux) and no policy loaded, the guest labels every new node
# "unlabeled" and sends that with the request; the daemon stores it before replying.
L=$D/label
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
note "guest LSMs: $(cat /sys/kernel/security/lsm 2>&1)"
echo labelled >"$L/file"
mkdir "$L/dir"
ln -s file "$L/symlink"
mkfifo "$L/fifo"
for n in file dir symlink fifo; do
    if [ -e "$L/$n" ] || [ -L "$L/$n" ]; then ok "label: created $n"; else not_ok "label: $n" "missing"; fi
    host_expect xattr "options/label/$n" security.selinux unlabeled
done

# --- --max-inodes 100 --max-bytes 4M --------------------------------------------------------
# Last: it fills the share. statfs shows the quota; a write past the bytes is cut short, then
# EDQUOT; the 101st inode is EDQUOT; frees give back; the share is left at the inode limit.
Q=$D/quota
# shellcheck disable=SC2046
set -- $(stat -f -c '%S %b %c' "$ROOT")
expect "quota: statfs bytes (f_blocks x f_frsize)" "$MAX_BYTES" "$(($1 * $2))"
expect "quota: statfs inodes (f_files)" "$MAX_INODES" "$3"
expect "quota: df shows 4096 1K-blocks" 4096 "$(df -k "$ROOT" | awk 'NR == 2 { print $2 }')"
echo "GUEST-QUOTA inodes $3 bytes $(($1 * $2))"

fails "quota: writing 8 MiB stops" "Disk quota exceeded" \
    dd if=/dev/zero of="$Q/fill" bs=64k count=128
size=$(stat -c %s "$Q/fill")
if [ "$size" -gt 0 ] && [ "$size" -le "$MAX_BYTES" ]; then
    ok "quota: the write was cut short at $size bytes"
else
    not_ok "quota: size of the cut-short file" "$size"
fi
fails "quota: a new file's first block" "Disk quota exceeded" dd if=/dev/zero of="$Q/more" bs=4k count=1
rm -f "$Q/more" "$Q/fill"
works "quota: unlink gives the bytes back (1 MiB fits again)" \
    dd if=/dev/zero of="$Q/after" bs=64k count=16
fails "quota: fill up again" "Disk quota exceeded" dd if=/dev/zero of="$Q/fill" bs=64k count=128
host_expect size options/quota/fill "$(stat -c %s "$Q/fill")"

free=$(stat -f -c %d "$ROOT")
note "quota: $free inodes free before the fill"
# At most the quota's worth (a share without one would take minutes to fill).
[ "$free" -le "$MAX_INODES" ] || free=$MAX_INODES
i=0
while [ "$i" -lt "$free" ]; do
    : >"$Q/i.$i" || break
    i=$((i + 1))
done
expect "quota: as many files as statfs said were free" "$free" "$i"
expect "quota: statfs shows no inode free" 0 "$(stat -f -c %d "$ROOT")"
fails "quota: one more file" "Disk quota exceeded" sh -c ": >'$Q/one-more'"
fails "quota: one more directory" "Disk quota exceeded" mkdir "$Q/dir-more"
fails "quota: one more symlink" "Disk quota exceeded" ln -s i.0 "$Q/symlink-more"
fails "quota: one more FIFO" "Disk quota exceeded" mkfifo "$Q/fifo-more"
works "quota: a hard link makes no inode" ln "$Q/i.0" "$Q/hardlink"
rm -f "$Q/i.1"
works "quota: unlink gives an inode back" sh -c ": >'$Q/again'"
expect "quota: ls lists them all" $((free + 3)) "$(ls "$Q" | wc -l)"
for n in one-more dir-more symlink-more fifo-more; do host_expect absent "options/quota/$n"; done

echo "# options test: $FAILED failed checks"
[ "$FAILED" = 0 ]
