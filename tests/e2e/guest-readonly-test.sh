#!/bin/sh
# A share served with `--readonly` (busybox sh), run by /init in e2e.mode=readonly with the
# share on ROOT. The host put readonly/data (its md5 in readonly/data.md5), readonly/dir/ and
# readonly/link -> data there. Reading must work; every kind of change must fail with EROFS
# ("Read-only file system") and leave the host's files as they were (run-e2e.sh compares).
# Prints TAP-like lines; exit status 0 only if every check passed.
#
# usage: guest-readonly-test.sh [ROOT=/mnt]
# shellcheck shell=sh

ROOT=${1:-/mnt}
DIR=$ROOT/readonly
. /e2e/guest-lib.sh

# refused NAME CMD...: CMD must fail, saying "Read-only file system".
refused() { _n=$1; shift; fails "$_n" 'Read-only file system' "$@"; }

# Reading works.
want=$(cut -d' ' -f1 "$DIR/data.md5")
got=$(md5sum "$DIR/data" | cut -d' ' -f1)
if [ "$got" = "$want" ]; then ok "read the host's file"; else not_ok "read" "md5 $got, want $want"; fi
if [ "$(readlink "$DIR/link")" = data ]; then ok "readlink"; else not_ok "readlink" "$(readlink "$DIR/link")"; fi
if ls "$DIR/dir" >/dev/null 2>&1; then ok "list a directory"; else not_ok "list" "ls failed"; fi
echo "GUEST-MD5 readonly/data $got"

# matrix.sh serves this share --cache=never without --allow-mmap: every file is direct I/O,
# which the guest kernel maps privately but refuses to map shared (ENODEV).
if out=$(/e2e/guest-probe mmap-read "$DIR/data" shared 2>&1 >/dev/null); then
    not_ok "shared mmap of a direct-I/O file without --allow-mmap" "succeeded"
elif echo "$out" | grep -q ENODEV; then
    ok "shared mmap of a direct-I/O file without --allow-mmap: ENODEV"
else
    not_ok "shared mmap without --allow-mmap" "failed otherwise: $out"
fi
got=$(/e2e/guest-probe mmap-read "$DIR/data" private | md5sum | cut -d' ' -f1)
if [ "$got" = "$want" ]; then ok "private mmap reads the file"; else not_ok "private mmap" "md5 $got, want $want"; fi

# Every change is refused.
refused "write an existing file" sh -c "echo x >>'$DIR/data'"
refused "truncate an existing file" sh -c ": >'$DIR/data'"
refused "create a file" sh -c "echo x >'$DIR/new'"
refused "mkdir" mkdir "$DIR/newdir"
refused "rmdir" rmdir "$DIR/dir"
refused "unlink" rm "$DIR/data"
refused "rename" mv "$DIR/data" "$DIR/moved"
refused "symlink" ln -s data "$DIR/link2"
refused "hard link" ln "$DIR/data" "$DIR/data2"
refused "chmod" chmod 600 "$DIR/data"
refused "chown" chown 1:1 "$DIR/data"
refused "touch (utimes)" touch -d '2001-01-01 00:00' "$DIR/data"
refused "mknod a FIFO" mkfifo "$DIR/fifo"

echo "# readonly test: $FAILED failed checks"
[ "$FAILED" = 0 ]
