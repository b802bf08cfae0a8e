#!/bin/sh
# Guest-side virtio-fs checks (busybox sh). Runs inside the e2e guest on the
# share root and prints one TAP-like line per check:
#   ok - NAME            not ok - NAME: DETAIL        ok - NAME # SKIP WHY
# plus facts for the host to verify against the shared directory:
#   GUEST-MD5 PATH SUM                     md5 of PATH (relative to the share)
#   GUEST-MD5-RANGE PATH OFFSET LEN SUM    md5 of a byte range of PATH
#   HOST-EXPECT KIND PATH VALUE...         see run-e2e.sh
# Exit status is non-zero if any check failed.
#
# usage: guest-fs-test.sh [full|smoke] [ROOT=/mnt] [TAG=myfs]
#   full:  everything, including 64 MiB transfers and a 1000-entry directory
#   smoke: the same operations with small sizes (a quick sanity pass)
# TCG makes the guest 20-50x slower than the host: keep the work lean.
# ls | wc -l is deliberate: counting directory entries is the point (READDIR).
# shellcheck shell=sh disable=SC2317,SC2012,SC2010

MODE=${1:-full}
ROOT=${2:-/mnt}
TAG=${3:-myfs}
cd / || exit 1
# touch -t/-d below are interpreted in local time; pin it to UTC.
TZ=UTC0
export TZ

PASSED=0
FAILED=0
SKIPPED=0
ok() { PASSED=$((PASSED + 1)); echo "ok - $1"; }
not_ok() { FAILED=$((FAILED + 1)); echo "not ok - $1: $2"; }
skip() { SKIPPED=$((SKIPPED + 1)); echo "ok - $1 # SKIP $2"; }
note() { echo "# $*"; }
# expect NAME EXPECTED ACTUAL
expect() {
    if [ "$2" = "$3" ]; then ok "$1"; else not_ok "$1" "expected '$2', got '$3'"; fi
}
# try NAME CMD...: the command must succeed.
try() {
    _name=$1; shift
    if _out=$("$@" 2>&1); then ok "$_name"; else not_ok "$_name" "'$*' failed: $_out"; fi
}
# refuse NAME CMD...: the command must fail.
refuse() {
    _name=$1; shift
    if _out=$("$@" 2>&1); then not_ok "$_name" "'$*' unexpectedly succeeded"; else ok "$_name"; fi
}
host_expect() { echo "HOST-EXPECT $*"; }
md5() { md5sum "$1" 2>/dev/null | cut -d' ' -f1; }
size() { stat -c %s "$1" 2>/dev/null; }
# Drop the guest page cache so reads really go through the daemon.
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
now() { date +%s; }

case $MODE in
    full) NFILES=1000 BIG_MB=64 PAR_MB=4 ;;
    smoke) NFILES=100 BIG_MB=4 PAR_MB=1 ;;
    *) echo "usage: $0 [full|smoke] [ROOT] [TAG]" >&2; exit 2 ;;
esac
read -r CMDLINE </proc/cmdline
T0=$(now)
W=$ROOT/e2e-work      # scratch area, removed at the end
HC=$ROOT/host-check   # left behind for the host to verify
rm -rf "$W" "$HC" "$ROOT/big.bin"
mkdir -p "$W" "$HC" || { echo "not ok - setup: cannot create dirs in $ROOT"; exit 1; }
note "guest-fs-test: mode $MODE on $ROOT, $(nproc) cpus, kernel $(uname -r)"

# --- statfs -------------------------------------------------------------
# shellcheck disable=SC2046
set -- $(stat -f -c '%b %f %S' "$ROOT" 2>/dev/null)
if [ $# -eq 3 ] && [ "$1" -gt 0 ] && [ "$3" -gt 0 ] && [ "$2" -le "$1" ]; then
    ok "statfs (blocks=$1 free=$2 bsize=$3)"
else
    not_ok statfs "stat -f gave '$*'"
fi
try "df" df "$ROOT"

# --- create / write / read / append ---------------------------------------
F=$W/file.txt
: >"$F"
if [ -f "$F" ] && [ "$(size "$F")" = 0 ]; then ok create; else not_ok create "no empty $F"; fi
refuse "create exclusive on existing file fails" sh -c "set -C; : >'$F'"
printf 'hello virtiofs\n' >"$F"
expect "write + read back" "hello virtiofs" "$(cat "$F")"
printf 'second line\n' >>"$F"
expect "append" "hello virtiofs
second line" "$(cat "$F")"
expect "size after append" 27 "$(size "$F")"

# --- truncate, overwrite in place, sparse write, fallocate -----------------
truncate -s 5 "$F"
expect "truncate shrink" "5 hello" "$(size "$F") $(cat "$F")"
truncate -s 4096 "$F"
zero_md5=$(dd if=/dev/zero bs=4091 count=1 2>/dev/null | md5sum | cut -d' ' -f1)
expect "truncate grow (size)" 4096 "$(size "$F")"
expect "truncate grow (zero fill)" "hello $zero_md5" \
    "$(head -c 5 "$F") $(tail -c 4091 "$F" | md5sum | cut -d' ' -f1)"
printf 'HELLO' | dd of="$F" bs=5 count=1 conv=notrunc 2>/dev/null
expect "overwrite in place" "4096 HELLO" "$(size "$F") $(head -c 5 "$F")"
printf 'X' | dd of="$W/sparse" bs=1 seek=1048575 conv=notrunc 2>/dev/null
expect "write at offset (sparse)" "1048576 X" "$(size "$W/sparse") $(tail -c 1 "$W/sparse")"
if fallocate -l 1048576 "$W/falloc" 2>/tmp/err; then
    expect fallocate 1048576 "$(size "$W/falloc")"
else
    not_ok fallocate "$(cat /tmp/err)"
fi

# --- fsync / fdatasync / syncfs ------------------------------------------
try "dd conv=fsync" dd if=/dev/zero of="$W/synced" bs=65536 count=4 conv=fsync
try "fsync (sync FILE)" sync "$W/synced"
try "fdatasync (sync -d FILE)" sync -d "$W/synced"
try "fsync directory (sync DIR)" sync "$W"
try "syncfs (sync -f)" sync -f "$W/synced"

# --- rename ---------------------------------------------------------------
echo a >"$W/r1"
mv "$W/r1" "$W/r2"
expect "rename within directory" "absent a" \
    "$([ -e "$W/r1" ] && echo present || echo absent) $(cat "$W/r2" 2>&1)"
mkdir "$W/d1" "$W/d2"
echo b >"$W/d1/x"
mv "$W/d1/x" "$W/d2/y"
expect "rename across directories" "absent b" \
    "$([ -e "$W/d1/x" ] && echo present || echo absent) $(cat "$W/d2/y" 2>&1)"
echo old >"$W/target"
echo new >"$W/source"
mv -f "$W/source" "$W/target"
expect "rename over existing file" "absent new" \
    "$([ -e "$W/source" ] && echo present || echo absent) $(cat "$W/target" 2>&1)"
mv "$W/d2" "$W/d3"
expect "rename non-empty directory" "b" "$(cat "$W/d3/y" 2>&1)"

# --- files the host checks ----------------------------------------------
printf 'virtio-fs host check\nline 2\n' >"$HC/data.txt"
expect "host-check/data.txt written" "virtio-fs host check" "$(head -n1 "$HC/data.txt")"
host_expect md5 host-check/data.txt "$(md5 "$HC/data.txt")"
host_expect size host-check/data.txt 28

# --- hard links -----------------------------------------------------------
echo linkdata >"$HC/link-a"
if ln "$HC/link-a" "$HC/link-b" 2>/tmp/err; then
    expect "hard link count" "2 2" "$(stat -c %h "$HC/link-a") $(stat -c %h "$HC/link-b")"
    expect "hard link same inode" "$(stat -c %i "$HC/link-a")" "$(stat -c %i "$HC/link-b")"
    echo more >>"$HC/link-b"
    expect "hard link shares data" "linkdata
more" "$(cat "$HC/link-a")"
    ln "$HC/link-a" "$W/link-c"
    rm "$W/link-c"
    expect "link count after unlinking a third link" 2 "$(stat -c %h "$HC/link-a")"
else
    not_ok "hard link" "$(cat /tmp/err)"
fi
host_expect links host-check/link-a 2
host_expect same-inode host-check/link-a host-check/link-b

# --- symlinks -------------------------------------------------------------
if ln -s data.txt "$HC/sym" 2>/tmp/err; then
    expect "symlink readlink" data.txt "$(readlink "$HC/sym")"
    expect "symlink lstat type" "symbolic link" "$(stat -c %F "$HC/sym")"
    expect "read through symlink" "virtio-fs host check" "$(head -n1 "$HC/sym")"
else
    not_ok symlink "$(cat /tmp/err)"
fi
ln -s /nonexistent/target "$W/dangling" 2>/dev/null
expect "dangling symlink readlink" /nonexistent/target "$(readlink "$W/dangling")"
host_expect symlink host-check/sym data.txt

# --- mkdir / rmdir --------------------------------------------------------
if mkdir -p "$W/a/b/c"; then ok "mkdir -p"; else not_ok "mkdir -p" "failed"; fi
if err=$(rmdir "$W/a" 2>&1); then
    not_ok "rmdir non-empty fails" "rmdir succeeded"
else
    case $err in
        *"not empty"*) ok "rmdir non-empty fails (ENOTEMPTY)" ;;
        *) not_ok "rmdir non-empty fails" "wrong error: $err" ;;
    esac
fi
try "rmdir empty directories" rmdir "$W/a/b/c" "$W/a/b" "$W/a"
expect "rmdir removed it" absent "$([ -e "$W/a" ] && echo present || echo absent)"
refuse "mkdir existing fails" mkdir "$W/d3"
mkdir "$HC/dir-751" && chmod 751 "$HC/dir-751"
expect "directory chmod" 751 "$(stat -c %a "$HC/dir-751")"
host_expect mode host-check/dir-751 751
host_expect type host-check/dir-751 directory

# --- long names -----------------------------------------------------------
name=
while [ ${#name} -lt 255 ]; do name=${name}n; done
echo long >"$W/$name"
expect "255-byte file name" long "$(cat "$W/$name" 2>&1)"
refuse "256-byte file name rejected" sh -c ": >'$W/${name}x'"

# --- large directory --------------------------------------------------------
t=$(now)
mkdir "$W/many"
i=0
while [ $i -lt "$NFILES" ]; do
    : >"$W/many/f$i"   # shell redirection: no fork per file
    i=$((i + 1))
done
expect "readdir $NFILES entries (ls | wc -l)" "$NFILES" "$(ls "$W/many" | wc -l)"
expect "readdirplus $NFILES entries (ls -l)" "$NFILES" "$(ls -l "$W/many" | grep -c ' f[0-9]')"
expect "readdir names complete" "$(seq 0 $((NFILES - 1)) | sort | md5sum)" \
    "$(ls "$W/many" | sed 's/^f//' | sort | md5sum)"
# Unlink every file ending in 0 or 5 (a fifth) and list again.
rm -f "$W/many/"f*0 "$W/many/"f*5
REMAIN=$((NFILES * 4 / 5))
expect "readdir after unlinking a fifth" "$REMAIN" "$(ls "$W/many" | wc -l)"
mv "$W/many" "$HC/many"
host_expect count host-check/many "$REMAIN"
note "large directory: $(($(now) - t))s"

# --- chmod / chown / utimes / mkfifo ---------------------------------------
echo m >"$HC/mode-640"
chmod 640 "$HC/mode-640"
expect "chmod 640" 640 "$(stat -c %a "$HC/mode-640")"
chmod 4755 "$W/file.txt"
expect "chmod 4755 (setuid)" 4755 "$(stat -c %a "$W/file.txt")"
host_expect mode host-check/mode-640 640
echo o >"$HC/owned"
if chown 1234:5678 "$HC/owned" 2>/tmp/err; then
    expect "chown 1234:5678" 1234:5678 "$(stat -c %u:%g "$HC/owned")"
else
    not_ok "chown 1234:5678" "$(cat /tmp/err)"
fi
host_expect owner host-check/owned 1234:5678
mkdir "$HC/owned-dir" && chown 1234:5678 "$HC/owned-dir"
expect "chown directory" 1234:5678 "$(stat -c %u:%g "$HC/owned-dir")"
host_expect owner host-check/owned-dir 1234:5678
echo t >"$HC/stamped"
touch -t 200102030405.06 "$HC/stamped"
expect "utimes (touch -t)" 981173106 "$(stat -c %Y "$HC/stamped")"
host_expect mtime host-check/stamped 981173106
echo t >"$W/stamped2"
touch -d '2010-01-02 03:04:05' "$W/stamped2"
expect "utimes (touch -d)" 1262401445 "$(stat -c %Y "$W/stamped2")"
touch -a -t 199901010000.00 "$W/stamped2"
expect "atime only (touch -a)" "915148800 1262401445" "$(stat -c '%X %Y' "$W/stamped2")"
if mkfifo "$HC/fifo" 2>/tmp/err; then
    expect "mkfifo (mknod)" fifo "$(stat -c %F "$HC/fifo")"
else
    not_ok "mkfifo (mknod)" "$(cat /tmp/err)"
fi
host_expect type host-check/fifo fifo

# --- unlink ---------------------------------------------------------------
echo u >"$W/unlinkme"
rm "$W/unlinkme"
expect unlink absent "$([ -e "$W/unlinkme" ] && echo present || echo absent)"
refuse "open after unlink fails" cat "$W/unlinkme"
echo gone >"$HC/unlinked"
rm "$HC/unlinked"
host_expect absent host-check/unlinked
echo "still readable" >"$W/open-unlinked"
exec 3<"$W/open-unlinked"
rm "$W/open-unlinked"
expect "read an open file after unlink" "still readable" "$(cat <&3)"
exec 3<&-

# --- xattrs (only if busybox has the applets; Debian's lacks them) ----------
if command -v setfattr >/dev/null 2>&1 && command -v getfattr >/dev/null 2>&1; then
    echo x >"$W/xattr"
    if err=$(setfattr -n user.e2e -v hello "$W/xattr" 2>&1); then
        expect "xattr set/get" hello \
            "$(getfattr --only-values -n user.e2e "$W/xattr" 2>&1)"
    else
        case $err in
            *"not supported"*) skip xattr "daemon reports xattrs not supported" ;;
            *) not_ok xattr "setfattr: $err" ;;
        esac
    fi
else
    skip xattr "no setfattr/getfattr applet in this busybox (guest-probe checks xattrs)"
fi

# --- system calls busybox cannot make: tests/guest-probe --------------------
# xattrs (or EOPNOTSUPP when they are off), SEEK_DATA/SEEK_HOLE, fallocate modes,
# renameat2 flags, O_DIRECT (unaligned too: e2e.directio=1 says the daemon passes O_DIRECT
# on, so the host may refuse it), fsync/fdatasync, flock, statx, copy_file_range and
# utimensat nanoseconds, locks, O_TMPFILE + linkat, syncfs, in $ROOT/probe.
# e2e.hostlocks=1: a host process holds locks on $ROOT/host-locked (run-e2e.sh
# --host-locks) that the guest must not get, and another takes turns with the probe through
# $ROOT/guest-locks/ to see the locks a guest process holds there, then takes them once that
# process was killed or closed the file. e2e.xattr=1 on the kernel command line
# says the daemon serves xattrs; the probe then leaves probe/xattr-host-check
# with user.e2e=from-guest (run-e2e.sh --xattr checks it). Its lines count here.
PROBE=/e2e/guest-probe
if [ -x "$PROBE" ]; then
    t=$(now)
    set -- --o-direct-model /tmp/o-direct.model
    case " $CMDLINE " in *" e2e.xattr=1 "*) set -- "$@" --xattr ;; esac
    case " $CMDLINE " in
        *" e2e.hostlocks=1 "*) set -- "$@" --host-locked "$ROOT/host-locked" --guest-locks "$ROOT/guest-locks" ;;
    esac
    case " $CMDLINE " in *" e2e.directio=1 "*) set -- "$@" --direct-io ;; esac
    "$PROBE" "$ROOT/probe" "$@" >/tmp/probe.out 2>&1
    rc=$?
    cat /tmp/probe.out
    _fail=$(grep -c '^not ok - ' /tmp/probe.out)
    _skip=$(grep -c '^ok - .* # SKIP ' /tmp/probe.out)
    PASSED=$((PASSED + $(grep -c '^ok - ' /tmp/probe.out) - _skip))
    FAILED=$((FAILED + _fail))
    SKIPPED=$((SKIPPED + _skip))
    if [ "$rc" != 0 ] && [ "$_fail" = 0 ]; then
        not_ok guest-probe "exited with status $rc"
    fi
    # What the probe meant to write with O_DIRECT; the host compares its copy of the file.
    if [ -f /tmp/o-direct.model ]; then
        echo "GUEST-MD5 probe/o-direct-host-check $(md5 /tmp/o-direct.model)"
        rm -f /tmp/o-direct.model
    fi
    note "guest-probe run: $(($(now) - t))s"
else
    skip guest-probe "$PROBE is not in the initramfs"
fi

# --- big sequential transfers ---------------------------------------------
t=$(now)
BIG_BYTES=$((BIG_MB * 1048576))
# Keep the source in guest RAM (tmpfs): its md5 is the truth the share's copy
# is compared with, both here and on the host.
dd if=/dev/urandom of=/tmp/big.src bs=1M count="$BIG_MB" 2>/dev/null
src_md5=$(md5 /tmp/big.src)
if dd if=/tmp/big.src of="$ROOT/big.bin" bs=1M conv=fsync 2>/tmp/err; then
    ok "write ${BIG_MB} MiB (dd bs=1M conv=fsync)"
else
    not_ok "write ${BIG_MB} MiB" "$(cat /tmp/err)"
fi
# O_DIRECT, 1 MiB at a time: each dd write is one FUSE WRITE of 1 MiB when the daemon agreed
# to MAX_PAGES (the host checks the daemon's log for it).
if dd if=/tmp/big.src of="$ROOT/direct.bin" bs=1M count=4 oflag=direct 2>/tmp/err; then
    expect "write 4 MiB with O_DIRECT (dd bs=1M oflag=direct)" "$(head -c 4194304 /tmp/big.src | md5sum | cut -d' ' -f1)" \
        "$(md5 "$ROOT/direct.bin")"
elif grep -qi 'invalid\|unknown' /tmp/err; then
    skip "write 4 MiB with O_DIRECT" "this dd has no oflag=direct: $(cat /tmp/err)"
else
    not_ok "write 4 MiB with O_DIRECT" "$(cat /tmp/err)"
fi
# O_DIRECT, 4 MiB at a time: each dd write becomes WRITEs of max_pages pages (the daemon offers
# queue size - 4 = 1020; the guest takes at most fs.fuse.max_pages_limit, 256 unless raised: see
# run-e2e.sh --guest-max-pages). The matrix checks the WRITE sizes in the daemon's log.
N4=$((BIG_MB / 4))
[ "$N4" -le 2 ] || N4=2
if dd if=/tmp/big.src of="$ROOT/direct-4m.bin" bs=4M count="$N4" oflag=direct 2>/tmp/err; then
    sum=$(head -c $((N4 * 4194304)) /tmp/big.src | md5sum | cut -d' ' -f1)
    expect "write $((N4 * 4)) MiB with O_DIRECT (dd bs=4M oflag=direct)" "$sum" "$(md5 "$ROOT/direct-4m.bin")"
    echo "GUEST-MD5 direct-4m.bin $sum"
elif grep -qi 'invalid\|unknown' /tmp/err; then
    skip "write $((N4 * 4)) MiB with O_DIRECT" "this dd has no oflag=direct: $(cat /tmp/err)"
else
    not_ok "write $((N4 * 4)) MiB with O_DIRECT" "$(cat /tmp/err)"
fi
rm -f /tmp/big.src
drop_caches
expect "${BIG_MB} MiB size" "$BIG_BYTES" "$(size "$ROOT/big.bin")"
expect "${BIG_MB} MiB read back (md5, caches dropped)" "$src_md5" "$(md5 "$ROOT/big.bin")"
echo "GUEST-MD5 big.bin $src_md5"
note "big write + read: $(($(now) - t))s"

HOSTFILE=$ROOT/host-64m.bin
if [ -f "$HOSTFILE" ]; then
    t=$(now)
    drop_caches
    sum=$(md5 "$HOSTFILE")
    echo "GUEST-MD5 host-64m.bin $sum"
    if [ -f "$HOSTFILE.md5" ]; then
        expect "read host-64m.bin (md5 vs host)" "$(cut -d' ' -f1 "$HOSTFILE.md5")" "$sum"
    else
        ok "read host-64m.bin (md5 checked by the host)"
    fi
    # Unaligned and page-aligned ranges, for the host to compare.
    echo "GUEST-MD5-RANGE host-64m.bin 1000000 70000 $(dd if="$HOSTFILE" bs=1000 skip=1000 count=70 2>/dev/null | md5sum | cut -d' ' -f1)"
    echo "GUEST-MD5-RANGE host-64m.bin 16781312 12288 $(dd if="$HOSTFILE" bs=4096 skip=4097 count=3 2>/dev/null | md5sum | cut -d' ' -f1)"
    note "host file read: $(($(now) - t))s"
else
    skip "read host-64m.bin" "not present in the share"
fi

# --- parallel I/O (spreads requests over vCPUs and request queues) --------
t=$(now)
JOBS=4
dd if=/dev/urandom of=/tmp/par.src bs=1M count="$PAR_MB" 2>/dev/null
par_md5=$(md5 /tmp/par.src)
j=1
while [ $j -le $JOBS ]; do
    (
        mkdir "$W/par$j"
        dd if=/tmp/par.src of="$W/par$j/data" bs=64k 2>/dev/null
        k=0
        while [ $k -lt 50 ]; do : >"$W/par$j/m$k"; k=$((k + 1)); done
    ) &
    j=$((j + 1))
done
wait
rm -f /tmp/par.src
drop_caches
bad=
j=1
while [ $j -le $JOBS ]; do
    [ "$(md5 "$W/par$j/data")" = "$par_md5" ] || bad="$bad data$j"
    [ "$(ls "$W/par$j" | wc -l)" = 51 ] || bad="$bad entries$j"
    j=$((j + 1))
done
if [ -z "$bad" ]; then ok "parallel writers ($JOBS x ${PAR_MB} MiB + 50 files)"; else not_ok "parallel writers" "mismatch:$bad"; fi
note "parallel: $(($(now) - t))s"

# --- cleanup of the scratch area (bulk unlink + rmdir) ----------------------
try "rm -r scratch tree" rm -r "$W"
expect "scratch tree gone" absent "$([ -e "$W" ] && echo present || echo absent)"

# --- a host mount inside the share (run-e2e.sh --submount) -----------------
# The host mounted a tmpfs on submount/ before the daemon started. e2e.submount=announced: the
# daemon runs with --announce-submounts (FUSE_ATTR_SUBMOUNT on directories whose mount differs
# from their parent's), so the guest kernel mounts the directory as a submount of its own, with
# its own st_dev. e2e.submount=plain: no announcement, one st_dev for the whole share.
SUBMOUNT=
case " $CMDLINE " in
    *" e2e.submount=announced "*) SUBMOUNT=announced ;;
    *" e2e.submount=plain "*) SUBMOUNT=plain ;;
esac
if [ -n "$SUBMOUNT" ]; then
    S=$ROOT/submount
    root_dev=$(stat -c %d "$ROOT")
    # stat(2) of an automount point does not mount it (it answers for the directory the
    # guest looked up); a walk into it does.
    pre_dev=$(stat -c %d "$S")
    ls "$S/" >/dev/null
    sub_dev=$(stat -c %d "$S")
    file_dev=$(stat -c %d "$S/from-host.txt")
    note "st_dev: share root $root_dev, submount/ $sub_dev (stat before a walk into it: $pre_dev), submount/from-host.txt $file_dev ($SUBMOUNT)"
    expect "read a host file on the submount" "on the host's tmpfs" "$(cat "$S/from-host.txt" 2>&1)"
    if [ "$SUBMOUNT" = announced ]; then
        if [ -n "$sub_dev" ] && [ "$sub_dev" != "$root_dev" ]; then
            ok "announced submount has its own st_dev ($sub_dev, root $root_dev)"
        else
            not_ok "announced submount has its own st_dev" "submount $sub_dev, root $root_dev"
        fi
        expect "a file on the submount has the submount's st_dev" "$sub_dev" "$file_dev"
        if grep -q " $S virtiofs " /proc/mounts; then
            ok "the guest kernel mounted submount/ itself (/proc/mounts)"
        else
            not_ok "submount in /proc/mounts" "$(grep " $ROOT" /proc/mounts | tr '\n' ';')"
        fi
    else
        expect "unannounced submount shares the root's st_dev" "$root_dev" "$sub_dev"
        if grep -q " $S " /proc/mounts; then
            not_ok "no guest mount on submount/" "$(grep " $S " /proc/mounts)"
        else
            ok "no guest mount on submount/"
        fi
    fi
    printf 'written by the guest\n' >"$S/from-guest.txt"
    expect "write on the submount" "written by the guest" "$(cat "$S/from-guest.txt" 2>&1)"
    host_expect md5 submount/from-guest.txt "$(md5 "$S/from-guest.txt")"
    host_expect same-dev submount/from-guest.txt submount
    host_expect other-dev submount .
    refuse "hard link from the share into the submount fails (EXDEV)" ln "$ROOT/hello.txt" "$S/hello-link"
    if [ "$SUBMOUNT" = announced ]; then
        # An automount: unmounted, it comes back at the next access.
        try "umount the submount" umount "$S"
        expect "the submount comes back at the next access" "on the host's tmpfs" "$(cat "$S/from-host.txt" 2>&1)"
        expect "st_dev again its own" yes "$([ "$(stat -c %d "$S")" != "$root_dev" ] && echo yes || echo no)"
        umount "$S" 2>/dev/null
    fi
fi

# --- unmount and mount again: FUSE DESTROY, then a fresh INIT -------------
if grep -q " $ROOT virtiofs " /proc/mounts; then
    if umount "$ROOT" 2>/tmp/err; then
        ok umount
        if grep -q " $ROOT virtiofs " /proc/mounts; then not_ok "umount" "still mounted"; fi
        if mount -t virtiofs "$TAG" "$ROOT" 2>/tmp/err; then
            ok "mount again"
            expect "data survives remount" "virtio-fs host check" "$(head -n1 "$HC/data.txt" 2>&1)"
            expect "metadata survives remount" "2 1234:5678 640 data.txt" \
                "$(stat -c %h "$HC/link-a") $(stat -c %u:%g "$HC/owned") $(stat -c %a "$HC/mode-640") $(readlink "$HC/sym")"
            expect "big file after remount" "$BIG_BYTES" "$(size "$ROOT/big.bin")"
        else
            not_ok "mount again" "$(cat /tmp/err)"
        fi
    else
        not_ok umount "$(cat /tmp/err)"
    fi
else
    skip "umount + mount" "$ROOT is not a virtiofs mount"
fi

note "guest-fs-test: $PASSED passed, $FAILED failed, $SKIPPED skipped in $(($(now) - T0))s"
[ "$FAILED" -eq 0 ]
