#!/usr/bin/env bash
# End-to-end test of one virtio-fs daemon configuration:
#   1. make a temporary shared directory with host-prepared files,
#   2. start the daemon (--daemon-cmd, with {socket} and {shared} replaced),
#   3. boot a guest against it (run-guest.sh) that exercises the share,
#   4. verify on the host what the guest reported and left behind,
#   5. check that the daemon exits by itself once QEMU disconnects
#      (otherwise stop it with SIGTERM), and print a summary.
# Exit status is 0 only if everything passed. Logs are kept in --log-dir.
#
# Example (the C reference daemon):
#   tests/e2e/run-e2e.sh --kernel 6.1 --daemon-cmd \
#     '/usr/lib/qemu/virtiofsd --socket-path={socket} -o source={shared},cache=auto'
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
export E2E_CACHE=${E2E_CACHE:-$REPO/target/guest}

DAEMON_CMD=
KERNEL=6.1
QUEUES=1
CPUS=2
MODE=full
BOOTS=3
TIMEOUT=900
LOG_DIR=
KEEP=0
SETUP=1
VERBOSE=()
DAEMON_EXIT_WAIT=15
ALLOW_LINGER=0
XATTR=()
HOST_LOCKS=()
MEM=()
SUBMOUNT=
DIRECT_IO=()
GUEST_MAX_PAGES=()
DAEMON_USER=

usage() {
    cat <<EOF
usage: $0 --daemon-cmd 'CMD {socket} {shared}' [--kernel 6.1|6.12] [--queues N]
          [--cpus N] [--mode full|smoke|demo|reboot|hotplug|readonly|options|rootless]
          [--boots N] [--timeout SECS] [--log-dir DIR] [--daemon-user NAME]
          [--daemon-exit-wait SECS] [--allow-daemon-linger] [--keep] [--no-setup]
          [--mem SIZE] [--xattr] [--host-locks] [--submount announced|plain] [--direct-io]
          [--guest-max-pages N] [--verbose]

  --daemon-cmd           daemon command line; {socket} becomes the vhost-user
                         socket path, {shared} the shared directory
  --kernel/--queues/--cpus/--mode/--boots/--timeout/--mem/--verbose   passed to run-guest.sh;
                         in reboot mode the host also checks that the daemon started a
                         FUSE session per boot and ended each abandoned one
  --xattr                the daemon serves xattrs (give it its xattr option in
                         --daemon-cmd): passed to run-guest.sh, so the guest
                         checks xattrs work instead of failing EOPNOTSUPP, and
                         the host checks the xattr the guest set
  --host-locks           a host process holds a POSIX lock and a flock on the
                         share's host-locked file while the guest runs, and the
                         guest checks it cannot take them; and (full and smoke
                         modes) host-lock-peer.py takes turns with the guest probe
                         through the share's guest-locks/: a guest process's
                         F_SETLK and flock must block the host's, and the host
                         must get them once that process is SIGKILLed or closes
                         the file (checked here after the run). For a daemon with
                         real host locks; the references emulate locks in the guest
  --submount MODE        before the daemon starts, mount a 4 MiB tmpfs on the share's
                         submount/ (a file from the host in it); unmounted at the end
                         whatever happens. MODE says what the guest must see: announced
                         (give the daemon --announce-submounts: its own st_dev, a guest
                         mount of its own) or plain (the root's st_dev, no guest mount);
                         either way the host checks a file the guest wrote landed on the tmpfs
  --direct-io            the daemon passes O_DIRECT to the host (give it --allow-direct-io):
                         the guest probe then accepts EINVAL for unaligned O_DIRECT
  --daemon-user NAME     run the daemon as this unprivileged host user (setpriv, no
                         supplementary groups): the temporary directory and the share are
                         made its own, and {uid}, {gid}, {subuid}, {subgid} in --daemon-cmd
                         become its ids and the first ids of its /etc/subuid and /etc/subgid
                         ranges. Rootless mode needs it (setup.sh makes the user avfs-e2e)
  --guest-max-pages N    the guest raises fs.fuse.max_pages_limit to N before mounting
                         (Linux 6.13+), so READ/WRITE may go past 1 MiB
  --log-dir              where serial.log, daemon.log and summary.txt go
                         (default: target/e2e-logs/<time>-<kernel>-<mode>...)
  --daemon-exit-wait     seconds the daemon gets to exit by itself after the
                         guest powers off (default $DAEMON_EXIT_WAIT)
  --allow-daemon-linger  a daemon that had to be stopped is a warning, not a failure
  --keep                 keep the shared directory (path printed at the end)
  --no-setup             do not run setup.sh first (it is fast when cached)
EOF
}

say() { printf '[e2e] %s\n' "$*"; }
die() { printf '[e2e] ERROR: %s\n' "$*" >&2; exit 2; }

while [ $# -gt 0 ]; do
    case $1 in
        --daemon-cmd|--kernel|--queues|--cpus|--mode|--boots|--timeout|--log-dir|--daemon-exit-wait|--submount|--guest-max-pages|--daemon-user)
            [ $# -ge 2 ] || die "$1 needs a value" ;;
    esac
    case $1 in
        --daemon-cmd) DAEMON_CMD=$2; shift ;;
        --kernel) KERNEL=$2; shift ;;
        --queues) QUEUES=$2; shift ;;
        --cpus) CPUS=$2; shift ;;
        --mode) MODE=$2; shift ;;
        --boots) BOOTS=$2; shift ;;
        --timeout) TIMEOUT=$2; shift ;;
        --log-dir) LOG_DIR=$2; shift ;;
        --daemon-exit-wait) DAEMON_EXIT_WAIT=$2; shift ;;
        --allow-daemon-linger) ALLOW_LINGER=1 ;;
        --keep) KEEP=1 ;;
        --no-setup) SETUP=0 ;;
        --xattr) XATTR=(--xattr) ;;
        --host-locks) HOST_LOCKS=(--host-locks) ;;
        --submount) SUBMOUNT=$2; shift ;;
        --direct-io) DIRECT_IO=(--direct-io) ;;
        --guest-max-pages) GUEST_MAX_PAGES=(--guest-max-pages "$2"); shift ;;
        --daemon-user) DAEMON_USER=$2; shift ;;
        --mem) [ $# -ge 2 ] || die "--mem needs a value"; MEM=(--mem "$2"); shift ;;
        --verbose) VERBOSE=(--verbose) ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
    shift
done
[ -n "$DAEMON_CMD" ] || { usage >&2; exit 2; }
case $MODE in full|smoke|demo|reboot|hotplug|readonly|options|rootless) ;; *) die "bad --mode $MODE" ;; esac
[ "$MODE" != rootless ] || [ -n "$DAEMON_USER" ] || die "--mode rootless needs --daemon-user"
case $SUBMOUNT in ''|announced|plain) ;; *) die "bad --submount $SUBMOUNT (announced or plain)" ;; esac
if [ -n "$SUBMOUNT" ]; then
    case $MODE in full|smoke) ;; *) die "--submount needs --mode full or smoke" ;; esac
fi

if [ -z "$LOG_DIR" ]; then
    LOG_DIR=$REPO/target/e2e-logs/$(date +%Y%m%d-%H%M%S)-k$KERNEL-$MODE-c$CPUS-q$QUEUES
fi
mkdir -p "$LOG_DIR"
LOG_DIR=$(cd "$LOG_DIR" && pwd)
SERIAL_LOG=$LOG_DIR/serial.log
DAEMON_LOG=$LOG_DIR/daemon.log
SUMMARY=$LOG_DIR/summary.txt

TMP=
DAEMON_PID=
GUEST_PID=
LOCKER_PID=
PEER_PID=
SUBMOUNT_DIR=
# shellcheck disable=SC2317  # invoked via trap
cleanup() {
    # Stop whatever we started (by pid / our own process groups), then drop
    # the temporary share.
    if [ -n "$GUEST_PID" ] && kill -0 "$GUEST_PID" 2>/dev/null; then
        kill -TERM "$GUEST_PID" 2>/dev/null || true   # its trap kills QEMU
        wait "$GUEST_PID" 2>/dev/null || true
    fi
    if [ -n "$DAEMON_PID" ]; then stop_daemon >/dev/null 2>&1 || true; fi
    if [ -n "$LOCKER_PID" ]; then kill "$LOCKER_PID" 2>/dev/null || true; fi
    if [ -n "$PEER_PID" ]; then kill "$PEER_PID" 2>/dev/null || true; fi
    # The host tmpfs inside the share: unmounted before the share goes, lazily if it is busy.
    if [ -n "$SUBMOUNT_DIR" ] && mountpoint -q "$SUBMOUNT_DIR"; then
        umount "$SUBMOUNT_DIR" 2>/dev/null || umount -l "$SUBMOUNT_DIR" \
            || say "could not unmount $SUBMOUNT_DIR"
    fi
    if [ -n "$TMP" ]; then
        if [ "$KEEP" = 1 ]; then
            say "kept shared directory: $TMP/shared"
        else
            rm -rf "$TMP"
        fi
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The daemon runs in its own session (setsid), so its process group is
# DAEMON_PID and helpers it forks (the C virtiofsd forks into a pid
# namespace) can be signalled together.
DAEMON_RC=
stop_daemon() {
    kill -TERM -- "-$DAEMON_PID" 2>/dev/null || kill -TERM "$DAEMON_PID" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$DAEMON_PID" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$DAEMON_PID" 2>/dev/null; then
        say "daemon ignored SIGTERM for 10s; sending SIGKILL"
        kill -KILL -- "-$DAEMON_PID" 2>/dev/null || kill -KILL "$DAEMON_PID" 2>/dev/null || true
    fi
    DAEMON_RC=0
    wait "$DAEMON_PID" 2>/dev/null || DAEMON_RC=$?
    DAEMON_PID=
}

if [ "$SETUP" = 1 ]; then
    # Cheap when cached; rebuilds the initramfs if the guest scripts changed.
    "$HERE/setup.sh" --kernel "$KERNEL"
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/e2e-run.XXXXXX")
SHARED=$TMP/shared
SOCKET=$TMP/vhost-fs.sock
mkdir -p "$SHARED"

# Host-prepared content the guest reads.
printf 'hello from the host\n' >"$SHARED/hello.txt"
HOST_MD5=
if [ "$MODE" = full ]; then
    say "creating 64 MiB host-64m.bin"
    dd if=/dev/urandom of="$SHARED/host-64m.bin" bs=1M count=64 status=none
    HOST_MD5=$(md5sum "$SHARED/host-64m.bin" | cut -d' ' -f1)
    echo "$HOST_MD5  host-64m.bin" >"$SHARED/host-64m.bin.md5"
fi

# Readonly mode: files for the guest to read and fail to change (the daemon runs --readonly);
# their state is recorded to compare after the run.
if [ "$MODE" = readonly ]; then
    mkdir -p "$SHARED/readonly/dir"
    dd if=/dev/urandom of="$SHARED/readonly/data" bs=1k count=300 status=none
    md5sum "$SHARED/readonly/data" >"$SHARED/readonly/data.md5"
    ln -s data "$SHARED/readonly/link"
    READONLY_BEFORE=$(cd "$SHARED/readonly" && find . -printf '%p %y %m %s %T@ %n\n' | sort)
fi

# Options mode (the daemon runs with matrix.sh's options flags): a file whose xattrs the
# guest reads through --xattrmap=/map/trusted./user.virtiofs./ (trusted.from-host and user.plain
# visible, the host's own trusted.host-only not).
if [ "$MODE" = options ]; then
    mkdir -p "$SHARED/options/xmap"
    echo 'host file' >"$SHARED/options/xmap/host-file"
    python3 -c '
import os, sys
for name, value in [("user.virtiofs.trusted.from-host", b"h1"), ("user.plain", b"p1"),
                    ("trusted.host-only", b"t1")]:
    os.setxattr(sys.argv[1], name, value)' "$SHARED/options/xmap/host-file"
fi

# The daemon's user and the first ids of its subordinate ranges (its namespace's --uid-map and
# --gid-map), for the command's placeholders and rootless mode's files.
if [ -n "$DAEMON_USER" ]; then
    D_UID=$(id -u "$DAEMON_USER") && D_GID=$(id -g "$DAEMON_USER") \
        || die "no host user $DAEMON_USER (setup.sh adds avfs-e2e)"
    first_subid() { awk -F: -v u="$DAEMON_USER" -v n="$D_UID" '$1 == u || $1 == n { print $2; exit }' "$1"; }
    D_SUBUID=$(first_subid /etc/subuid) D_SUBGID=$(first_subid /etc/subgid)
    [ -n "$D_SUBUID" ] && [ -n "$D_SUBGID" ] || die "$DAEMON_USER has no range in /etc/subuid and /etc/subgid"
fi

# Rootless mode (the daemon runs as --daemon-user and owns the share): the ids the guest
# computes the host owners from (rootless/ids: uid gid subuid subgid), files the daemon's user
# owns for mmap and O_NOATIME, and files of ids its namespace maps or does not. Every atime is
# 2001-01-01 (978307200), which a plain read then moves (relatime: older than the mtime).
if [ "$MODE" = rootless ]; then
    R=$SHARED/rootless
    mkdir -p "$R/ids-dir" "$R/mmap" "$R/atime"
    echo "$D_UID $D_GID $D_SUBUID $D_SUBGID" >"$R/ids"
    printf '0123456789abcdef\n' >"$R/mmap/host-file"
    for f in own-noatime own-plain root-noatime; do echo "atime $f" >"$R/atime/$f"; done
    chown -R "$D_UID:$D_GID" "$SHARED"
    # Host root's (not in the namespace: the overflow id in the guest, out of the daemon's reach).
    echo 'host root only' >"$R/ids-dir/host-root"
    chmod 600 "$R/ids-dir/host-root"
    chown 0:0 "$R/atime/root-noatime"
    chmod 644 "$R/atime/root-noatime"
    # Namespace ids 2003 and 3000 (subordinate ids 2002 and 2999).
    echo sub >"$R/ids-dir/host-2003"
    chown "$((D_SUBUID + 2002)):$((D_SUBGID + 2002))" "$R/ids-dir/host-2003"
    echo sub >"$R/ids-dir/host-3000"
    chown "$((D_SUBUID + 2999)):$((D_SUBGID + 2999))" "$R/ids-dir/host-3000"
    touch -a -d @978307200 "$R/atime/"*
fi
if [ -n "$DAEMON_USER" ]; then
    # The daemon's user creates the socket here and opens the share.
    chown "$D_UID:$D_GID" "$TMP" "$SHARED"
fi

# A host process that holds locks on host-locked for the guest to run into: an
# fcntl (POSIX) write lock through one descriptor and a flock through another.
if [ ${#HOST_LOCKS[@]} -gt 0 ]; then
    printf 'locked by the host\n' >"$SHARED/host-locked"
    python3 -c '
import fcntl, sys, time
a = open(sys.argv[1], "r+"); fcntl.lockf(a, fcntl.LOCK_EX | fcntl.LOCK_NB)
b = open(sys.argv[1], "r+"); fcntl.flock(b, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("locked", flush=True)
time.sleep(100000)' "$SHARED/host-locked" >"$TMP/locker.out" 2>&1 &
    LOCKER_PID=$!
    for _ in $(seq 50); do grep -q locked "$TMP/locker.out" 2>/dev/null && break; sleep 0.1; done
    grep -q locked "$TMP/locker.out" || die "host lock holder failed: $(cat "$TMP/locker.out")"
fi

# The other direction, in the modes that run the guest probe: a host process that takes turns
# with the probe (--guest-locks) through new files in guest-locks/ and tries to take the locks
# a guest process holds on guest-locks/target; what it saw goes to $PEER_OUT (checked below).
# Its first wait covers the boot and the guest's earlier checks; it is stopped after the run.
PEER_OUT=
if [ ${#HOST_LOCKS[@]} -gt 0 ] && { [ "$MODE" = full ] || [ "$MODE" = smoke ]; }; then
    mkdir "$SHARED/guest-locks"
    printf 'locked by a guest process\n' >"$SHARED/guest-locks/target"
    PEER_OUT=$TMP/guest-locks.txt
    : >"$PEER_OUT"
    python3 "$HERE/host-lock-peer.py" "$SHARED/guest-locks" "$PEER_OUT" \
        --first-wait "$TIMEOUT" >"$TMP/lock-peer.log" 2>&1 &
    PEER_PID=$!
fi

# A host mount inside the share, made before the daemon starts (its sandbox clones the share's
# mounts when it starts).
if [ -n "$SUBMOUNT" ]; then
    SUBMOUNT_DIR=$SHARED/submount
    mkdir "$SUBMOUNT_DIR"
    mount -t tmpfs -o size=4m,mode=0755 e2e-submount "$SUBMOUNT_DIR" \
        || die "cannot mount a tmpfs on $SUBMOUNT_DIR (needs root)"
    printf "on the host's tmpfs\n" >"$SUBMOUNT_DIR/from-host.txt"
    say "tmpfs mounted on the share's submount/ (guest expects: $SUBMOUNT)"
fi

# Substitute placeholders with shell-quoted paths.
cmd=${DAEMON_CMD//\{socket\}/$(printf '%q' "$SOCKET")}
cmd=${cmd//\{shared\}/$(printf '%q' "$SHARED")}
if [ -n "$DAEMON_USER" ]; then
    cmd=${cmd//\{uid\}/$D_UID}
    cmd=${cmd//\{gid\}/$D_GID}
    cmd=${cmd//\{subuid\}/$D_SUBUID}
    cmd=${cmd//\{subgid\}/$D_SUBGID}
    # A clone under a private directory (/root, mode 700) is out of the user's reach: then it
    # runs a copy of the daemon's binary from its own temporary directory.
    # (The binary: the command's first word that is an executable file's absolute path.)
    bin=
    for w in $cmd; do
        case $w in /*) if [ -f "$w" ] && [ -x "$w" ]; then bin=$w; break; fi ;; esac
    done
    if [ -n "$bin" ] && ! setpriv --reuid="$D_UID" --regid="$D_GID" --clear-groups test -x "$bin"; then
        install -m 755 -o "$D_UID" -g "$D_GID" "$bin" "$TMP/daemon-bin"
        say "$DAEMON_USER cannot run $bin where it is: running a copy, $TMP/daemon-bin"
        cmd=${cmd/"$bin"/"$TMP/daemon-bin"}
    fi
    cmd="setpriv --reuid=$D_UID --regid=$D_GID --clear-groups $cmd"
fi
say "starting daemon: $cmd"
say "daemon log: $DAEMON_LOG"
setsid bash -c "exec $cmd" </dev/null >"$DAEMON_LOG" 2>&1 &
DAEMON_PID=$!

for _ in $(seq 150); do
    [ -S "$SOCKET" ] && break
    kill -0 "$DAEMON_PID" 2>/dev/null || break
    sleep 0.2
done
if [ ! -S "$SOCKET" ]; then
    say "daemon did not create $SOCKET; last log lines:"
    tail -n 20 "$DAEMON_LOG" | sed 's/^/  daemon| /'
    exit 1
fi

GUEST_START=$(date +%s)
"$HERE/run-guest.sh" --socket "$SOCKET" --kernel "$KERNEL" --queues "$QUEUES" \
    --cpus "$CPUS" --mode "$MODE" --boots "$BOOTS" --timeout "$TIMEOUT" --log "$SERIAL_LOG" \
    ${XATTR[@]+"${XATTR[@]}"} ${HOST_LOCKS[@]+"${HOST_LOCKS[@]}"} ${MEM[@]+"${MEM[@]}"} \
    ${SUBMOUNT:+--submount "$SUBMOUNT"} ${DIRECT_IO[@]+"${DIRECT_IO[@]}"} \
    ${GUEST_MAX_PAGES[@]+"${GUEST_MAX_PAGES[@]}"} ${VERBOSE[@]+"${VERBOSE[@]}"} &
GUEST_PID=$!
# A daemon that dies while the guest runs leaves the guest hanging on its
# next request; stop the guest shortly after instead of waiting for the
# timeout. (bash reaps the daemon, so kill -0 fails once it has exited.)
DAEMON_DIED_AT=
while kill -0 "$GUEST_PID" 2>/dev/null; do
    if [ -z "$DAEMON_DIED_AT" ] && ! kill -0 "$DAEMON_PID" 2>/dev/null; then
        DAEMON_DIED_AT=$(date +%s)
    fi
    if [ -n "$DAEMON_DIED_AT" ] && [ $(($(date +%s) - DAEMON_DIED_AT)) -ge 20 ]; then
        say "daemon exited while the guest was still running; stopping the guest"
        kill -TERM "$GUEST_PID" 2>/dev/null || true
        break
    fi
    sleep 1
done
GUEST_RC=0
wait "$GUEST_PID" || GUEST_RC=$?
GUEST_PID=
GUEST_SECS=$(($(date +%s) - GUEST_START))

if [ -n "$DAEMON_DIED_AT" ] && [ "$GUEST_RC" != 0 ]; then
    say "daemon log tail:"
    tail -n 10 "$DAEMON_LOG" | sed 's/^/  daemon| /'
fi

# Give the daemon a chance to notice the disconnect and exit on its own.
DAEMON_SELF_EXIT=0
for _ in $(seq $((DAEMON_EXIT_WAIT * 5))); do
    kill -0 "$DAEMON_PID" 2>/dev/null || { DAEMON_SELF_EXIT=1; break; }
    sleep 0.2
done
if [ "$DAEMON_SELF_EXIT" = 1 ]; then
    DAEMON_RC=0
    wait "$DAEMON_PID" || DAEMON_RC=$?
    # Reap helpers left in its process group, if any.
    if kill -0 -- "-$DAEMON_PID" 2>/dev/null; then
        say "daemon left processes behind in its group; killing them"
        kill -KILL -- "-$DAEMON_PID" 2>/dev/null || true
    fi
    DAEMON_PID=
else
    say "daemon still running ${DAEMON_EXIT_WAIT}s after the guest finished; sending SIGTERM"
    stop_daemon
fi

# The lock peer is done unless the guest never got to (or through) the handshake.
PEER_RC=
if [ -n "$PEER_PID" ]; then
    if kill -0 "$PEER_PID" 2>/dev/null; then
        kill "$PEER_PID" 2>/dev/null || true
        PEER_RC=killed
    fi
    wait "$PEER_PID" 2>/dev/null || PEER_RC=${PEER_RC:-$?}
    PEER_PID=
fi

# ---------------------------------------------------------------- host checks
H_PASS=0 H_FAIL=0 H_SKIP=0
hok() { H_PASS=$((H_PASS + 1)); echo "host ok - $1"; }
hnot() { H_FAIL=$((H_FAIL + 1)); echo "host not ok - $1: $2"; }
hexpect() { if [ "$2" = "$3" ]; then hok "$1"; else hnot "$1" "expected '$2', got '$3'"; fi; }

# Clean console text: no CRs, no terminal escapes.
CLEAN=$TMP/serial.txt
sed -e 's/\r$//' -e 's/\x1b\[[0-9;?]*[A-Za-z]//g; s/\x1bc//g' "$SERIAL_LOG" >"$CLEAN"
G_PASS=$(grep -E '^ok - ' "$CLEAN" | grep -vc ' # SKIP' || true)
G_SKIP=$(grep -E '^ok - .* # SKIP' -c "$CLEAN" || true)
G_FAIL=$(grep -c '^not ok - ' "$CLEAN" || true)

echo "--- host checks"
if [ "$GUEST_RC" = 0 ]; then
    hok "guest reported E2E-RESULT: PASS"
else
    hnot "guest result" "$(grep -E '^E2E-RESULT' "$CLEAN" | tail -n1 || echo "no E2E-RESULT marker") (run-guest exit $GUEST_RC)"
fi

in_share() {  # refuse paths that leave the share
    case $1 in /*|..|../*|*/../*|*/..) return 1 ;; esac
}
# Guest-reported md5 sums against the files in the shared directory.
while read -r _ path sum; do
    in_share "$path" || { hnot "md5 $path" "bad path"; continue; }
    hexpect "md5 $path matches guest" "$sum" "$(md5sum <"$SHARED/$path" 2>&1 | cut -d' ' -f1)"
done < <(grep -E '^GUEST-MD5 ' "$CLEAN")
while read -r _ path off len sum; do
    in_share "$path" || { hnot "md5 range $path" "bad path"; continue; }
    hexpect "md5 $path [$off,+$len) matches guest" "$sum" \
        "$(dd if="$SHARED/$path" bs=65536 skip="$off" count="$len" \
              iflag=skip_bytes,count_bytes status=none | md5sum | cut -d' ' -f1)"
done < <(grep -E '^GUEST-MD5-RANGE ' "$CLEAN")
if [ -n "$HOST_MD5" ]; then
    hexpect "host-64m.bin unchanged on the host" "$HOST_MD5" \
        "$(md5sum <"$SHARED/host-64m.bin" | cut -d' ' -f1)"
fi

# An xattr of a host file as text (trailing NULs dropped), or the errno name.
host_xattr() {
    python3 -c '
import errno, os, sys
try:
    print(os.getxattr(sys.argv[1], sys.argv[2], follow_symlinks=False).rstrip(b"\0").decode())
except OSError as e:
    print(errno.errorcode[e.errno])' "$1" "$2"
}
# The access ACL of a host file in getfacl's short form (u::rw-,u:1000:r--,...).
host_acl() {
    python3 -c '
import os, struct, sys
v = os.getxattr(sys.argv[1], "system.posix_acl_access")
tags = {1: "u", 2: "u", 4: "g", 8: "g", 16: "m", 32: "o"}
out = []
for tag, perm, uid in struct.iter_unpack("<HHI", v[4:]):
    who = str(uid) if tag in (2, 8) else ""
    bits = "".join(c if perm & b else "-" for c, b in (("r", 4), ("w", 2), ("x", 1)))
    out.append(tags[tag] + ":" + who + ":" + bits)
print(",".join(out))' "$1" 2>&1 | tail -n1
}

# What the guest left in the share: HOST-EXPECT KIND PATH A [REST].
while read -r _ kind path a rest; do
    in_share "$path" || { hnot "$kind $path" "bad path"; continue; }
    p=$SHARED/$path
    case $kind in
        md5) hexpect "content of $path" "$a" "$(md5sum <"$p" 2>&1 | cut -d' ' -f1)" ;;
        size) hexpect "size of $path" "$a" "$(stat -c %s "$p" 2>&1)" ;;
        mode) hexpect "mode of $path" "$a" "$(stat -c %a "$p" 2>&1)" ;;
        owner) hexpect "owner of $path" "$a" "$(stat -c %u:%g "$p" 2>&1)" ;;
        links) hexpect "link count of $path" "$a" "$(stat -c %h "$p" 2>&1)" ;;
        mtime) hexpect "mtime of $path" "$a" "$(stat -c %Y "$p" 2>&1)" ;;
        atime) hexpect "atime of $path" "$a" "$(stat -c %X "$p" 2>&1)" ;;
        atime-not)
            t=$(stat -c %X "$p" 2>&1)
            if [ "$t" != "$a" ]; then hok "atime of $path moved ($t)"; else hnot "atime of $path" "still $a"; fi ;;
        same-inode)
            in_share "$a" || { hnot "same-inode $path" "bad path"; continue; }
            hexpect "$path and $a are one inode" "$(stat -c %d:%i "$p" 2>&1)" \
                "$(stat -c %d:%i "$SHARED/$a" 2>&1)" ;;
        symlink)
            if [ -L "$p" ]; then
                hexpect "symlink $path target" "$a" "$(readlink "$p")"
            else
                hnot "symlink $path" "not a symlink on the host"
            fi ;;
        type)
            # stat -c %F wording differs between busybox and coreutils.
            case $a in
                fifo) t=-p ;; directory) t=-d ;; regular) t=-f ;; *) t=-z ;;
            esac
            if [ ! -L "$p" ] && test "$t" "$p"; then
                hok "$path is a $a"
            else
                hnot "type of $path" "not a $a: $(stat -c %F "$p" 2>&1)"
            fi ;;
        count) hexpect "entries in $path" "$a" "$(find "$p" -mindepth 1 -maxdepth 1 | wc -l)" ;;
        same-dev|other-dev)
            in_share "$a" || { hnot "$kind $path" "bad path"; continue; }
            d1=$(stat -c %d "$p" 2>&1) d2=$(stat -c %d "$SHARED/$a" 2>&1)
            if { [ "$kind" = same-dev ] && [ "$d1" = "$d2" ]; } \
                || { [ "$kind" = other-dev ] && [ "$d1" != "$d2" ]; }; then
                hok "$path and $a: $kind on the host ($d1, $d2)"
            else
                hnot "$path and $a: $kind on the host" "st_dev $d1 and $d2"
            fi ;;
        xattr) hexpect "$path: xattr $a on the host" "$rest" "$(host_xattr "$p" "$a")" ;;
        no-xattr) hexpect "$path: no xattr $a on the host" ENODATA "$(host_xattr "$p" "$a")" ;;
        acl) hexpect "$path: ACL on the host" "$a" "$(host_acl "$p")" ;;
        absent)
            if [ -e "$p" ] || [ -L "$p" ]; then hnot "$path absent" "still exists"; else hok "$path absent"; fi ;;
        *) hnot "HOST-EXPECT $kind" "unknown kind" ;;
    esac
done < <(grep -E '^HOST-EXPECT ' "$CLEAN")

# The birth time the guest's statx saw, against the host's (FUSE_STATX: Linux 6.6 guests and
# later; the 6.1 guest has none to report, the 6.12 one must).
while read -r _ path btime; do
    in_share "$path" || { hnot "btime $path" "bad path"; continue; }
    if [ "$btime" = absent ]; then
        if [ "$KERNEL" = 6.1 ]; then hok "btime of $path: none before Linux 6.6 (guest $KERNEL)"
        else hnot "btime of $path" "the $KERNEL guest got no birth time"; fi
    else
        hexpect "btime of $path equals the host's" "$btime" "$(stat -c %.9W "$SHARED/$path" 2>&1)"
    fi
done < <(grep -E '^GUEST-BTIME ' "$CLEAN")

# The xattr the guest's probe set (guest-fs-test.sh runs it in probe/), read
# with the host's getxattr(2).
if [ ${#XATTR[@]} -gt 0 ] && [ "$MODE" != demo ]; then
    hexpect "user.e2e of probe/xattr-host-check (host getxattr)" from-guest \
        "$(python3 -c 'import os, sys; print(os.getxattr(sys.argv[1], "user.e2e").decode())' \
              "$SHARED/probe/xattr-host-check" 2>&1 | tail -n1)"
fi

# What the lock peer saw of the guest's locks (host-lock-peer.py): each line is a check, and
# the handshake must have run to its end (DONE), or the peer says where it stopped.
if [ -n "$PEER_OUT" ]; then
    while IFS= read -r line; do
        case $line in
            'ok - '*) hok "${line#ok - } (host-lock-peer)" ;;
            'not ok - '*)
                line=${line#not ok - }
                hnot "${line%%: *} (host-lock-peer)" "${line#*: }" ;;
        esac
    done <"$PEER_OUT"
    if grep -qx DONE "$PEER_OUT"; then
        hexpect "guest locks: host-lock-peer checks" 12 "$(grep -c '^ok - ' "$PEER_OUT")"
    else
        hnot "guest locks handshake" "incomplete (host-lock-peer ${PEER_RC:+exit $PEER_RC, }$(grep -c '^ok - ' "$PEER_OUT") ok); its log: $(tail -n 3 "$TMP/lock-peer.log" | tr '\n' ' ')"
    fi
fi

# In full mode the guest must have reported the essentials; a silently
# skipped section must not pass.
if [ "$MODE" = full ]; then
    for want in '^GUEST-MD5 big.bin ' '^GUEST-MD5 host-64m.bin ' '^GUEST-MD5-RANGE ' \
                '^HOST-EXPECT owner ' '^HOST-EXPECT symlink ' '^HOST-EXPECT links ' \
                '^HOST-EXPECT mode ' '^HOST-EXPECT mtime ' '^HOST-EXPECT count ' \
                '^# guest-probe: [0-9]+ passed' '^GUEST-MD5 probe/o-direct-host-check ' \
                '^GUEST-BTIME probe/btime-host-check ' \
                '^GUEST-MD5 direct-4m.bin '; do
        grep -qE "$want" "$CLEAN" || hnot "guest report" "no line matching $want"
    done
    if [ -e "$SHARED/e2e-work" ]; then hnot "scratch area removed" "e2e-work still exists"; fi
fi
# Submount: the guest compared the st_devs and wrote on the tmpfs (checked above through its
# HOST-EXPECT lines), and the tmpfs is still the host's mount.
if [ -n "$SUBMOUNT" ]; then
    for want in '^# st_dev: share root ' '^HOST-EXPECT same-dev submount/from-guest.txt '; do
        grep -qE "$want" "$CLEAN" || hnot "guest report (submount)" "no line matching $want"
    done
    if mountpoint -q "$SUBMOUNT_DIR" && [ "$(stat -f -c %T "$SUBMOUNT_DIR")" = tmpfs ]; then
        hok "submount/ is still the host's tmpfs"
    else
        hnot "submount/" "no longer a tmpfs mount on the host"
    fi
fi
# Readonly mode: the guest read the data and nothing in the share changed.
if [ "$MODE" = readonly ]; then
    grep -qE '^GUEST-MD5 readonly/data ' "$CLEAN" || hnot "guest report" "no md5 of readonly/data"
    hexpect "readonly/: nothing changed" "$READONLY_BEFORE" \
        "$(cd "$SHARED/readonly" && find . -printf '%p %y %m %s %T@ %n\n' | sort)"
    hexpect "guest refusals seen" 13 "$(grep -cE '^ok - .*: Read-only file system$' "$CLEAN" || true)"
fi
# Options mode: the guest reported its sections, and the quota held on the host: the share
# holds exactly the inodes statfs allowed below its root (the guest filled them; the root is
# not counted, hard links count once) and its regular files allocate no more than the byte
# limit.
if [ "$MODE" = options ]; then
    for want in '^ok - acl: uid 1000 reads through its entry' '^ok - xattrmap: getxattr trusted' \
                '^ok - killpriv: mode of kp/suid' '^ok - label: created fifo' '^GUEST-QUOTA '; do
        grep -qE "$want" "$CLEAN" || hnot "guest report" "no line matching $want"
    done
    read -r _ _ q_inodes _ q_bytes < <(grep -E '^GUEST-QUOTA ' "$CLEAN" | tail -n1) || true
    hexpect "inodes in the share (host), the quota the guest's statfs showed" "${q_inodes:-?}" \
        "$(find "$SHARED" -mindepth 1 -printf '%i\n' | sort -u | wc -l)"
    used=$(find "$SHARED" -type f -printf '%i %b\n' | sort -u | awk '{ s += $2 * 512 } END { print s }')
    if [ -n "${q_bytes:-}" ] && [ "$used" -le "$q_bytes" ]; then
        hok "regular files allocate $used bytes on the host, within the quota of $q_bytes"
    else
        hnot "bytes allocated on the host" "$used, quota ${q_bytes:-not reported}"
    fi
fi
# Rootless mode: the guest reported each section.
if [ "$MODE" = rootless ]; then
    for want in '^ok - ids: guest root owns what it made' '^ok - ids: uid 1001 made' \
                '^ok - mmap: (shared writable mmap|private mapping)' \
                '^ok - noatime: O_NOATIME read of own-noatime' \
                '^ok - acl: uid 1003 reads through its entry' \
                '^HOST-EXPECT atime '; do
        grep -qE "$want" "$CLEAN" || hnot "guest report" "no line matching $want"
    done
fi
# Hotplug mode: the guest saw the memory and checked its data in it.
if [ "$MODE" = hotplug ]; then
    grep -qE '^ok - memory hot-added while writing' "$CLEAN" && hok "guest saw the hot-added memory" \
        || hnot "memory hot-add" "the guest did not report it"
    grep -qE '^GUEST-MD5 hotplug/big ' "$CLEAN" || hnot "guest report" "no md5 of hotplug/big"
fi
# Reboot mode: every boot ran (the share says how many completed) and verified the others.
if [ "$MODE" = reboot ]; then
    hexpect "boots completed (share's reboot/boots)" "$BOOTS" "$(cat "$SHARED/reboot/boots" 2>&1)"
    hexpect "boots that verified what earlier boots wrote" "$((BOOTS - 1))" \
        "$(grep -cE '^ok - boot [0-9]+: block-1 intact' "$CLEAN" || true)"
fi
if [ "$MODE" = demo ]; then
    hexpect "guest wrote guest-was-here.txt" yes \
        "$(grep -q '^hello from the guest' "$SHARED/guest-was-here.txt" 2>/dev/null && echo yes || echo no)"
fi

# The daemon should exit by itself, with status 0, when QEMU disconnects.
if [ "$DAEMON_SELF_EXIT" = 1 ]; then
    DAEMON_NOTE="exited on its own with status $DAEMON_RC"
    hexpect "daemon exit status" 0 "$DAEMON_RC"
else
    DAEMON_NOTE="did NOT exit on its own; stopped with SIGTERM (status $DAEMON_RC)"
    if [ "$ALLOW_LINGER" = 1 ]; then
        H_SKIP=$((H_SKIP + 1))
        echo "host ok - daemon exits after disconnect # SKIP allowed to linger; $DAEMON_NOTE"
    else
        hnot "daemon exits after disconnect" "$DAEMON_NOTE"
    fi
fi

PASSED=$((G_PASS + H_PASS))
FAILED=$((G_FAIL + H_FAIL))
SKIPPED=$((G_SKIP + H_SKIP))
{
    echo "=== e2e summary: kernel $KERNEL, mode $MODE, $CPUS cpus, $QUEUES queues, xattrs $([ ${#XATTR[@]} -gt 0 ] && echo on || echo off)${SUBMOUNT:+, submount $SUBMOUNT}${GUEST_MAX_PAGES[1]:+, guest max_pages_limit ${GUEST_MAX_PAGES[1]}}"
    echo "daemon command: $cmd"
    echo "guest:  $G_PASS ok, $G_FAIL not ok, $G_SKIP skipped; boot + test ${GUEST_SECS}s (run-guest exit $GUEST_RC)"
    echo "host:   $H_PASS ok, $H_FAIL not ok"
    echo "daemon: $DAEMON_NOTE"
    grep -E '^not ok - ' "$CLEAN" | sed 's/^/failed in guest: /' || true
    echo "logs:   $LOG_DIR"
    echo "e2e: $PASSED passed, $FAILED failed, $SKIPPED skipped"
} | tee "$SUMMARY"
if [ "$FAILED" -eq 0 ] && [ "$GUEST_RC" = 0 ]; then
    echo "RESULT: PASS"
    exit 0
fi
echo "RESULT: FAIL"
exit 1
