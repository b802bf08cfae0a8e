#!/usr/bin/env bash
# fio inside a real guest (QEMU TCG) against async-virtiofsd and the reference daemons, the
# daemons interleaved round by round, medians and ratios at the end (issue 11's guest check).
# Under TCG absolute numbers mean little (the guest runs 20-50x slower than the host, and the
# same daemon was seen at 715 and 2000 IOPS an hour apart); ratios of interleaved runs still rank
# the daemons.
#
#   benches/guest-fio.sh [--rounds N] [--runtime SECS] [--kernel 6.12|6.1] [--cpus N]
#                        [--jobs JOB,...] [--configs NAME=DAEMON:POOL:QUEUES[:ARG...],...] [--out DIR]
#
# Defaults: 3 rounds, 10 s per job (+2 s ramp), kernel 6.12 with 4 vCPUs, jobs
# randread4k-1,randread4k-16,seqread1m-1 (JOB-QD: QD synchronous O_DIRECT psync jobs, as in
# benches/run's fio mode), configs
#   ours-4q=async-virtiofsd:64:4, ours-1q=async-virtiofsd:64:1, rust=rust-virtiofsd:0:1
# (POOL: --thread-pool-size; 64 is our default; the references serve one request queue; add
# c=c-virtiofsd:0:1 for the C virtiofsd; ARGs, separated by colons, are appended to the daemon's
# command line: ours-4q-t1=async-virtiofsd:64:4:--queue-threads=1 interleaves a setting of ours
# with the default in one run). The daemons' command lines come from
# vhost_user_fs_client::daemons (the `daemon_command` example), cache=auto.
# ASYNC_VIRTIOFSD_BIN=PATH runs that build of ours instead of this tree's.
# Output: DIR/results.csv (round,config,job,iops,bw_kib_s), DIR/summary.md, DIR/logs/.
# Needs root (QEMU's shared memory, the daemons' sandboxes), tests/e2e/setup.sh's packages and
# guest kernel (run here), fio on the host (its binary and libraries go into the initramfs), and
# the Rust virtiofsd where benches/run installs it.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
ROUNDS=3 RUNTIME=10 KERNEL=6.12 CPUS=4 OUT=target/bench-guest
JOBS=randread4k-1,randread4k-16,seqread1m-1
CONFIGS=ours-4q=async-virtiofsd:64:4,ours-1q=async-virtiofsd:64:1,rust=rust-virtiofsd:0:1
die() { printf '[guest-fio] ERROR: %s\n' "$*" >&2; exit 2; }
log() { printf '[guest-fio %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --rounds|--runtime|--kernel|--cpus|--jobs|--configs|--out) [[ $# -ge 2 ]] || die "$1 needs a value" ;;
    esac
    case $1 in
        --rounds) ROUNDS=$2; shift ;;
        --runtime) RUNTIME=$2; shift ;;
        --kernel) KERNEL=$2; shift ;;
        --cpus) CPUS=$2; shift ;;
        --jobs) JOBS=$2; shift ;;
        --configs) CONFIGS=$2; shift ;;
        --out) OUT=$2; shift ;;
        -h|--help) sed -n '2,22p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
    shift
done
for n in "$ROUNDS" "$RUNTIME" "$CPUS"; do
    [[ $n =~ ^[1-9][0-9]*$ ]] || die "expected a positive number, got '$n'"
done
[[ $(id -u) -eq 0 ]] || die "needs root"
command -v fio >/dev/null || die "fio is not installed on the host (tests/e2e/setup.sh installs it)"
IFS=, read -ra CONFIG_LIST <<<"$CONFIGS"
for c in "${CONFIG_LIST[@]}"; do
    [[ $c =~ ^[a-z0-9-]+=(async-virtiofsd|c-virtiofsd|rust-virtiofsd):[0-9]+:[1-9][0-9]*(:--[a-z0-9-]+(=[a-zA-Z0-9_.,-]+)?)*$ ]] \
        || die "bad config '$c' (NAME=DAEMON:POOL:QUEUES[:--ARG[=VALUE]...])"
done
mkdir -p "$OUT/logs"
OUT=$(cd "$OUT" && pwd)
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"

log "building async-virtiofsd and the daemon_command example (release)"
cargo build --release --quiet -p async-virtiofsd
# (separately: --example would limit the first build to examples)
cargo build --release --quiet -p vhost-user-fs-client --example daemon_command
# ASYNC_VIRTIOFSD_BIN set by the caller: another build of ours (an A/B of two commits).
export ASYNC_VIRTIOFSD_BIN=${ASYNC_VIRTIOFSD_BIN:-$TARGET_DIR/release/async-virtiofsd}
DAEMON_COMMAND=$TARGET_DIR/release/examples/daemon_command
tests/e2e/setup.sh --kernel "$KERNEL" >"$OUT/logs/setup.log" 2>&1 \
    || { tail -5 "$OUT/logs/setup.log"; die "tests/e2e/setup.sh failed (log: $OUT/logs/setup.log)"; }
CACHE=${E2E_CACHE:-$REPO/target/guest}
KDIR=$CACHE/$KERNEL.kernel
[[ -f $KDIR/vmlinuz ]] || die "no guest kernel in $KDIR"

# The initramfs: busybox, fio with every library it links, the init script, the modules.
INITRD=$OUT/initrd-$KERNEL.gz
log "initramfs with fio ($(fio --version))"
ROOT=$(mktemp -d)
trap 'rm -rf "$ROOT"' EXIT
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,mnt,fio-lib,lib/modules/e2e,lib64}
BUSYBOX=$(dpkg -L busybox-static | grep -m1 '/bin/busybox$')
cp "$BUSYBOX" "$ROOT/bin/busybox"
while read -r applet; do
    [[ $applet == bin/busybox ]] || ln -sf /bin/busybox "$ROOT/$applet"
done < <("$BUSYBOX" --list-full)
cp "$(command -v fio)" "$ROOT/usr/bin/fio"
while read -r lib; do
    cp -L "$lib" "$ROOT/fio-lib/"
done < <(ldd "$(command -v fio)" | awk '$3 ~ /^\// { print $3 }')
INTERP=$(ldd "$(command -v fio)" | awk '$1 ~ /^\/lib.*ld-linux/ { print $1 }')
[[ -n $INTERP ]] || die "cannot find fio's dynamic loader"
mkdir -p "$ROOT$(dirname "$INTERP")"
cp -L "$INTERP" "$ROOT$INTERP"
install -m 755 benches/guest-fio/init.sh "$ROOT/init"
cp "$KDIR/modules/order" "$ROOT/lib/modules/e2e/order"
while read -r ko; do
    [[ -n $ko ]] && cp "$KDIR/modules/$ko.ko" "$ROOT/lib/modules/e2e/"
done <"$KDIR/modules/order"
(cd "$ROOT" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -6 >"$INITRD"
rm -rf "$ROOT"

# The share: a 256 MiB file of random bytes (written once, reused).
SHARE=$OUT/share
mkdir -p "$SHARE"
DATA=$SHARE/fio-data.bin
if [[ $(stat -c %s "$DATA" 2>/dev/null || echo 0) -ne $((256 << 20)) ]]; then
    log "writing $DATA (256 MiB)"
    head -c $((256 << 20)) /dev/urandom >"$DATA"
fi

CSV=$OUT/results.csv
echo "round,config,job,iops,bw_kib_s" >"$CSV"
# How long a guest may take: boot, then per job ramp + runtime + fio's own set-up, ample for TCG.
NJOBS=$(tr ',' '\n' <<<"$JOBS" | grep -c .)
TIMEOUT=$((120 + NJOBS * (RUNTIME + 2) * 4))

DAEMON_PID=
QEMU_PID=
stop_all() {
    if [[ -n $QEMU_PID ]]; then kill -KILL "$QEMU_PID" 2>/dev/null || true; wait "$QEMU_PID" 2>/dev/null || true; fi
    if [[ -n $DAEMON_PID ]]; then
        # Our daemon and the C one exit when QEMU disconnects; give them a moment, then the group.
        for _ in $(seq 50); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
        kill -TERM -- "-$DAEMON_PID" 2>/dev/null || true
        sleep 0.5
        kill -KILL -- "-$DAEMON_PID" 2>/dev/null || true
        wait "$DAEMON_PID" 2>/dev/null || true
    fi
    QEMU_PID= DAEMON_PID=
}
trap 'stop_all; rm -rf "$ROOT"' EXIT

run_one() {
    local round=$1 name=$2 daemon=$3 pool=$4 queues=$5 extra=$6 sock log cmd
    sock=$(mktemp -u /tmp/guest-fio.XXXXXX.sock)
    log="$OUT/logs/r$round-$name"
    mapfile -t cmd < <("$DAEMON_COMMAND" "$daemon" "$pool" "$sock" "$SHARE") \
        || die "no command line for $daemon"
    [[ ${#cmd[@]} -gt 0 ]] || die "no command line for $daemon (is it installed? benches/run installs the references)"
    [[ -z $extra ]] || { local more; IFS=: read -ra more <<<"$extra"; cmd+=("${more[@]}"); }
    setsid "${cmd[@]}" >"$log.daemon" 2>&1 &
    DAEMON_PID=$!
    for _ in $(seq 100); do [[ -S $sock ]] && break; sleep 0.05; done
    [[ -S $sock ]] || { stop_all; die "$name: daemon did not listen (log: $log.daemon)"; }
    sleep 0.1
    # shellcheck disable=SC2054  # commas belong to QEMU option values
    timeout "$TIMEOUT" qemu-system-x86_64 -accel tcg -m 1G -smp "$CPUS" \
        -object memory-backend-memfd,id=mem,size=1G,share=on -numa node,memdev=mem \
        -chardev "socket,id=c0,path=$sock" \
        -device "vhost-user-fs-pci,chardev=c0,tag=myfs,num-request-queues=$queues,queue-size=1024" \
        -nodefaults -nographic -serial stdio -monitor none -no-reboot \
        -kernel "$KDIR/vmlinuz" -initrd "$INITRD" \
        -append "console=ttyS0 quiet panic=-1 fio.jobs=$JOBS fio.runtime=$RUNTIME" \
        </dev/null >"$log.console" 2>&1 &
    QEMU_PID=$!
    wait "$QEMU_PID" || true
    QEMU_PID=
    stop_all
    rm -f "$sock"
    local got
    got=$(tr -d '\r' <"$log.console" | awk -v r="$round" -v c="$name" \
        '$1 == "FIO-RESULT" { printf "%s,%s,%s,%.0f,%.0f\n", r, c, $2, $3, $4 }')
    if [[ -z $got ]] || ! grep -q 'FIO-DONE PASS' "$log.console"; then
        log "  $name: no complete result (console: $log.console)"
    fi
    [[ -z $got ]] || { echo "$got" >>"$CSV"; log "  $name: $(awk -F, '{ printf "%s %s IOPS  ", $3, $4 }' <<<"$got")"; }
}

for round in $(seq "$ROUNDS"); do
    log "round $round of $ROUNDS"
    # Interleave: each round starts with the next config, so no daemon always runs first.
    n=${#CONFIG_LIST[@]}
    for i in $(seq 0 $((n - 1))); do
        c=${CONFIG_LIST[$(((i + round - 1) % n))]}
        name=${c%%=*} spec=${c#*=}
        IFS=: read -r daemon pool queues extra <<<"$spec"
        run_one "$round" "$name" "$daemon" "$pool" "$queues" "$extra"
    done
done

# Medians per config and job; ratio of each of ours to the best reference per job.
python3 - "$CSV" "$OUT/summary.md" "$KERNEL" "$CPUS" "$ROUNDS" "$RUNTIME" <<'EOF'
import csv, statistics, sys
path, out, kernel, cpus, rounds, runtime = sys.argv[1:]
rows = list(csv.DictReader(open(path)))
med = {}
for key in {(r["config"], r["job"]) for r in rows}:
    vals = [float(r["iops"]) for r in rows if (r["config"], r["job"]) == key]
    med[key] = (statistics.median(vals), len(vals))
configs = sorted({c for c, _ in med})
jobs = sorted({j for _, j in med})
ours = [c for c in configs if c.startswith("ours")]
refs = [c for c in configs if not c.startswith("ours")]
lines = [f"# fio in a {kernel} guest ({cpus} vCPUs, TCG): median IOPS of {rounds} interleaved rounds, {runtime} s per job", "",
         "| job | " + " | ".join(configs) + " | " + " | ".join(f"{o} / best reference" for o in ours) + " |",
         "|---" * (1 + len(configs) + len(ours)) + "|"]
for j in jobs:
    cells = [f"{med[(c, j)][0]:.0f} (n={med[(c, j)][1]})" if (c, j) in med else "-" for c in configs]
    best = max((med[(c, j)][0] for c in refs if (c, j) in med), default=None)
    ratios = [f"{med[(o, j)][0] / best:.2f}" if best and (o, j) in med else "-" for o in ours]
    lines.append(f"| {j} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
log "done: $OUT/summary.md"
