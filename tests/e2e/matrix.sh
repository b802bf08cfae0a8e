#!/usr/bin/env bash
# Runs the guest end-to-end suite against async-virtiofsd in every configuration the daemon must
# serve: --thread-pool-size 0, 1 and 64 on the Debian 12 guest (one request queue), and 4 request
# queues on the Debian 13 guest with 4 vCPUs, where the daemon's per-queue statistics must show
# that more than one request queue served requests. Ends with "e2e matrix: N passed, N failed".
#
# usage: tests/e2e/matrix.sh [path/to/async-virtiofsd]   (default: target/debug/async-virtiofsd)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
BIN=${1:-$REPO/target/debug/async-virtiofsd}
[ -x "$BIN" ] || { echo "matrix: no daemon binary at $BIN (run cargo build)" >&2; exit 2; }
LOGS=$REPO/target/e2e-logs/matrix
rm -rf "$LOGS"
mkdir -p "$LOGS"

bash "$HERE/setup.sh"

passed=0
failed=0
failures=()

# run NAME KERNEL CPUS QUEUES POOL
run() {
    local name=$1 kernel=$2 cpus=$3 queues=$4 pool=$5
    local dir=$LOGS/$name start rc
    echo "=== e2e $name: kernel $kernel, $cpus vCPUs, $queues request queue(s), --thread-pool-size=$pool"
    start=$(date +%s)
    rc=0
    bash "$HERE/run-e2e.sh" --no-setup --kernel "$kernel" --cpus "$cpus" --queues "$queues" \
        --mode full --log-dir "$dir" \
        --daemon-cmd "$BIN --socket-path={socket} --shared-dir={shared} --thread-pool-size=$pool" \
        >"$dir.out" 2>&1 || rc=$?
    grep -E '^(guest|host|daemon|e2e):|not ok' "$dir.out" | sed 's/^/    /' || true
    # What the daemon says it served, per queue (logged at shutdown).
    grep -oE 'queue=[0-9]+ requests=[0-9]+' "$dir/daemon.log" | sed 's/^/    /' || true
    if [ "$rc" = 0 ] && [ "$queues" -gt 1 ]; then
        local used
        used=$(grep -oE 'request_queues_used=[0-9]+' "$dir/daemon.log" | cut -d= -f2 || true)
        if [ "${used:-0}" -lt 2 ]; then
            echo "    not ok - only ${used:-0} of $queues request queues served requests"
            rc=1
        else
            echo "    ok - $used of $queues request queues served requests"
        fi
    fi
    echo "    $(( $(date +%s) - start ))s, logs in $dir"
    if [ "$rc" = 0 ]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        failures+=("$name")
        tail -n 30 "$dir.out" | sed 's/^/    | /'
    fi
}

run pool0 6.1 2 1 0
run pool1 6.1 2 1 1
run pool64 6.1 2 1 64
run multiqueue 6.12 4 4 64

[ "$failed" = 0 ] || echo "failed configurations: ${failures[*]}"
echo "e2e matrix: $passed passed, $failed failed"
[ "$failed" = 0 ]
