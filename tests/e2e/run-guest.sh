#!/usr/bin/env bash
# Boot one e2e guest under QEMU (TCG) against an already-running vhost-user
# virtio-fs daemon socket. The guest mounts the share, runs the chosen mode and
# prints "E2E-RESULT: PASS|FAIL ...". Serial output goes to the log file; test
# lines are echoed as they arrive. Exit status: 0 only if PASS was seen,
# 1 on FAIL/no marker, 124 on timeout, 2 on usage errors.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${E2E_CACHE:-$REPO/target/guest}

SOCKET=
KERNEL=6.1
QUEUES=1
CPUS=2
MODE=full
TIMEOUT=900
LOG=
MEM=1G
VERBOSE=0
QUEUE_SIZE=1024
XATTR=0
HOST_LOCKS=0
BOOTS=3
SUBMOUNT=
DIRECT_IO=0
GUEST_MAX_PAGES=

usage() {
    cat <<EOF
usage: $0 --socket PATH [--kernel 6.1|6.12] [--queues N] [--cpus N]
          [--mode full|smoke|demo|reboot|hotplug|readonly|options|rootless] [--boots N]
          [--timeout SECS] [--log FILE] [--mem SIZE]
          [--xattr] [--host-locks] [--submount announced|plain] [--direct-io]
          [--guest-max-pages N] [--verbose]

  --socket   vhost-user socket of a running virtio-fs daemon (required)
  --kernel   guest kernel prepared by setup.sh (default $KERNEL)
  --queues   virtio-fs request queues, num-request-queues (default $QUEUES)
  --cpus     guest vCPUs (default $CPUS)
  --mode     guest work: full, smoke, demo, or reboot: boot --boots times in one QEMU
             process (reboot -f or the monitor's system_reset with writes in flight, no
             unmount, between boots; the last boot rebinds the driver), or
             hotplug: hot-add a 512 MiB DIMM over QMP while the guest writes, or
             readonly: read the share and check every change fails EROFS (daemon
             started with --readonly), or
             options: check the daemon options of matrix.sh's options configuration
             (ACLs, xattr map, killpriv, quota, labels; guest-options-test.sh); the guest
             boots with security=selinux so that it labels new files, or
             rootless: check a daemon run as an unprivileged host user with translated
             ids, --allow-mmap and --preserve-noatime (guest-rootless-test.sh)
  --boots    boots in reboot mode (default $BOOTS)
  --timeout  kill QEMU after this many seconds (default $TIMEOUT)
  --log      serial console log (default: a new file under \$TMPDIR)
  --mem      guest RAM (default $MEM; above 3G QEMU maps it as two regions)
  --xattr    tell the guest (e2e.xattr=1) that the daemon serves xattrs;
             start the daemon with xattr support yourself
  --host-locks  tell the guest (e2e.hostlocks=1) that a host process holds
             locks on the share's host-locked file, and that a host process takes
             turns with it through the share's guest-locks/ (run-e2e.sh runs both)
  --submount announced|plain  tell the guest (e2e.submount=) that the host mounted a tmpfs on
             the share's submount/ and whether the daemon announces submounts
  --direct-io  tell the guest (e2e.directio=1) that the daemon passes O_DIRECT to the host
  --guest-max-pages N  the guest sets fs.fuse.max_pages_limit to N before mounting
             (e2e.fuse_max_pages=N; Linux 6.13+)
  --verbose  echo every console line, not just test lines
EOF
}

die() { printf '[run-guest] ERROR: %s\n' "$*" >&2; exit 2; }

while [ $# -gt 0 ]; do
    case $1 in
        --socket|--kernel|--queues|--cpus|--mode|--boots|--timeout|--log|--mem|--submount|--guest-max-pages)
            [ $# -ge 2 ] || die "$1 needs a value" ;;
    esac
    case $1 in
        --socket) SOCKET=$2; shift ;;
        --kernel) KERNEL=$2; shift ;;
        --queues) QUEUES=$2; shift ;;
        --cpus) CPUS=$2; shift ;;
        --mode) MODE=$2; shift ;;
        --boots) BOOTS=$2; shift ;;
        --timeout) TIMEOUT=$2; shift ;;
        --log) LOG=$2; shift ;;
        --mem) MEM=$2; shift ;;
        --xattr) XATTR=1 ;;
        --host-locks) HOST_LOCKS=1 ;;
        --submount) SUBMOUNT=$2; shift ;;
        --direct-io) DIRECT_IO=1 ;;
        --guest-max-pages) GUEST_MAX_PAGES=$2; shift ;;
        --verbose) VERBOSE=1 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
    shift
done

[ -n "$SOCKET" ] || { usage >&2; exit 2; }
[ -S "$SOCKET" ] || die "$SOCKET is not a socket (is the daemon running?)"
case $MODE in full|smoke|demo|reboot|hotplug|readonly|options|rootless) ;; *) die "bad --mode $MODE" ;; esac
case $SUBMOUNT in ''|announced|plain) ;; *) die "bad --submount $SUBMOUNT (announced or plain)" ;; esac
for n in "$QUEUES" "$CPUS" "$TIMEOUT" "$BOOTS" ${GUEST_MAX_PAGES:+"$GUEST_MAX_PAGES"}; do
    case $n in ''|*[!0-9]*|0) die "expected a positive number, got '$n'" ;; esac
done
VMLINUZ=$CACHE/$KERNEL/vmlinuz
INITRD=$CACHE/$KERNEL/initrd.gz
if [ ! -f "$VMLINUZ" ] || [ ! -f "$INITRD" ]; then
    die "no guest kernel $KERNEL in $CACHE; run tests/e2e/setup.sh first"
fi
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing; run setup.sh"
APPEND="console=ttyS0 quiet panic=-1 e2e.mode=$MODE e2e.boots=$BOOTS"
# A guest reset ends QEMU unless the test is about surviving it.
NO_REBOOT=(-no-reboot)
[ "$MODE" != reboot ] || NO_REBOOT=()
# Hotplug mode: room for one DIMM, a QMP socket to add it, new memory online by itself.
MEM_OPT=$MEM
HOTPLUG=()
QMP=
if [ "$MODE" = hotplug ] || [ "$MODE" = reboot ]; then
    QMP=$(mktemp -u "${TMPDIR:-/tmp}/e2e-qmp.XXXXXX.sock")
    HOTPLUG=(-qmp "unix:$QMP,server=on,wait=off")
fi
if [ "$MODE" = hotplug ]; then
    MEM_OPT="$MEM,slots=2,maxmem=8G"
    APPEND="$APPEND memhp_default_state=online_movable"
fi
# Options mode: SELinux as the guest's LSM. With no policy loaded it enforces nothing, but
# labels each new node "unlabeled", which the FUSE client sends with the request
# (SECURITY_CTX) for --security-label to store. Debian's default LSM, AppArmor, sends none.
[ "$MODE" != options ] || APPEND="$APPEND security=selinux"
[ "$XATTR" = 0 ] || APPEND="$APPEND e2e.xattr=1"
[ "$HOST_LOCKS" = 0 ] || APPEND="$APPEND e2e.hostlocks=1"
[ -z "$SUBMOUNT" ] || APPEND="$APPEND e2e.submount=$SUBMOUNT"
[ "$DIRECT_IO" = 0 ] || APPEND="$APPEND e2e.directio=1"
[ -z "$GUEST_MAX_PAGES" ] || APPEND="$APPEND e2e.fuse_max_pages=$GUEST_MAX_PAGES"
if [ -z "$LOG" ]; then
    LOG=$(mktemp "${TMPDIR:-/tmp}/e2e-guest.XXXXXX.log")
fi
: >"$LOG"

QEMU_PID=
TAIL_PID=
cleanup() {
    # Never leave QEMU behind, whatever happened.
    if [ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2>/dev/null; then
        kill -TERM "$QEMU_PID" 2>/dev/null || true
        sleep 1
        kill -KILL "$QEMU_PID" 2>/dev/null || true
    fi
    if [ -n "$TAIL_PID" ]; then kill "$TAIL_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# TCG only: KVM hangs on these (nested) hosts. The guest RAM must be a shared
# memfd so the vhost-user daemon can map it.
# shellcheck disable=SC2054  # commas belong to QEMU option values
QEMU=(qemu-system-x86_64
    -accel tcg -m "$MEM_OPT" -smp "$CPUS" ${HOTPLUG[@]+"${HOTPLUG[@]}"}
    -object "memory-backend-memfd,id=mem,size=$MEM,share=on" -numa node,memdev=mem
    -chardev "socket,id=c0,path=$SOCKET"
    -device "vhost-user-fs-pci,chardev=c0,tag=myfs,num-request-queues=$QUEUES,queue-size=$QUEUE_SIZE"
    -nodefaults -nographic -serial stdio -monitor none ${NO_REBOOT[@]+"${NO_REBOOT[@]}"}
    -kernel "$VMLINUZ" -initrd "$INITRD"
    -append "$APPEND")

echo "[run-guest] booting kernel $KERNEL ($MODE mode, $CPUS cpus, $QUEUES queues, xattrs $([ "$XATTR" = 1 ] && echo on || echo off), timeout ${TIMEOUT}s); log: $LOG"
START=$(date +%s)
"${QEMU[@]}" </dev/null >>"$LOG" 2>&1 &
QEMU_PID=$!

# Echo console lines as they arrive (serial lines end in CR LF; SeaBIOS
# writes terminal escapes before the kernel starts).
STRIP_ANSI='s/\x1b\[[0-9;?]*[A-Za-z]//g; s/\x1bc//g' 
if [ "$VERBOSE" = 1 ] || [ "$MODE" = demo ]; then
    FILTER='.'
else
    FILTER='^(ok |not ok |# |\[e2e\]|E2E-|GUEST-|HOST-EXPECT|qemu-system|Kernel panic|.*(BUG|Oops|Call Trace))'
fi
tail -n +1 -f "$LOG" --pid="$QEMU_PID" 2>/dev/null \
    | sed -u -e 's/\r$//' -e "$STRIP_ANSI" | grep --line-buffered -E "$FILTER" | sed -u 's/^/  guest| /' &
TAIL_PID=$!

# Hotplug mode: once the guest is writing, add a memfd backend and a pc-dimm (what a
# management layer does with QMP object-add + device_add).
QMP_PID=
if [ "$MODE" = hotplug ]; then
    (
        until grep -q 'E2E-HOTPLUG: ready' "$LOG" 2>/dev/null; do
            kill -0 "$QEMU_PID" 2>/dev/null || exit 0
            sleep 0.5
        done
        python3 "$HERE/qmp.py" "$QMP" \
            'object-add {"qom-type": "memory-backend-memfd", "id": "hmem1", "size": 536870912, "share": true}' \
            'device_add {"driver": "pc-dimm", "id": "dimm1", "memdev": "hmem1"}' \
            || echo "[run-guest] QMP hot-add failed"
    ) &
    QMP_PID=$!
fi
# Reboot mode: a boot that prints E2E-RESET-ME is reset from the monitor (system_reset).
if [ "$MODE" = reboot ]; then
    (
        done_resets=0
        while kill -0 "$QEMU_PID" 2>/dev/null; do
            n=$(grep -c 'E2E-RESET-ME' "$LOG" 2>/dev/null || true)
            if [ "${n:-0}" -gt "$done_resets" ]; then
                sleep 1 # let the guest's writer run into the reset
                python3 "$HERE/qmp.py" "$QMP" 'system_reset' || echo "[run-guest] QMP system_reset failed"
                done_resets=$n
            fi
            sleep 0.5
        done
    ) &
    QMP_PID=$!
fi

TIMED_OUT=0
while kill -0 "$QEMU_PID" 2>/dev/null; do
    if [ $(($(date +%s) - START)) -ge "$TIMEOUT" ]; then
        TIMED_OUT=1
        echo "[run-guest] TIMEOUT after ${TIMEOUT}s; killing QEMU" >&2
        kill -TERM "$QEMU_PID" 2>/dev/null || true
        sleep 2
        kill -KILL "$QEMU_PID" 2>/dev/null || true
        break
    fi
    sleep 1
done
QEMU_RC=0
wait "$QEMU_PID" || QEMU_RC=$?
if [ -n "$QMP_PID" ]; then wait "$QMP_PID" 2>/dev/null || true; rm -f "$QMP"; fi
QEMU_PID=
# Let the echo pipeline drain; tail stops by itself once QEMU is gone.
wait "$TAIL_PID" 2>/dev/null || true
TAIL_PID=
ELAPSED=$(($(date +%s) - START))

RESULT=$(sed -e 's/\r$//' -e "$STRIP_ANSI" "$LOG" | grep -E '^E2E-RESULT: ' | tail -n1 || true)
echo "[run-guest] guest finished in ${ELAPSED}s (qemu exit $QEMU_RC): ${RESULT:-no E2E-RESULT marker}"
if [ "$TIMED_OUT" = 1 ]; then
    exit 124
fi
[ "$RESULT" = "E2E-RESULT: PASS" ]
