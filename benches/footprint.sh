#!/usr/bin/env bash
# Density: threads and resident memory of an idle daemon after it served a burst.
#
#   benches/footprint.sh DAEMON [QUEUES DEPTH ROUNDS SETTLE_SECS] [-- DAEMON_OPTIONS...]
#
# Starts DAEMON (async-virtiofsd, or any virtiofsd taking --socket-path/--shared-dir) on a
# scratch share, connects with QUEUES request queues (default 1), sends ROUNDS rounds of DEPTH
# GETATTRs per queue (default 64 x 20), waits SETTLE_SECS (default 15: tokio's idle blocking
# threads retire after 10 s), then prints the daemon tree's threads and VmRSS. Needs the
# release example: cargo build --release -p vhost-user-fs-client --example idle_footprint
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DAEMON="${1:?usage: benches/footprint.sh DAEMON [QUEUES DEPTH ROUNDS SETTLE] [-- OPTIONS]}"; shift
ARGS=()
while [[ $# -gt 0 && $1 != -- ]]; do ARGS+=("$1"); shift; done
[[ ${1:-} == -- ]] && shift
Q=${ARGS[0]:-1} D=${ARGS[1]:-64} R=${ARGS[2]:-20} S=${ARGS[3]:-15}
DIR="$(mktemp -d)"
mkdir -p "$DIR/share"
"$DAEMON" --socket-path "$DIR/sock" --shared-dir "$DIR/share" "$@" 2>"$DIR/log" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 100); do [[ -S $DIR/sock ]] && break; sleep 0.05; done
"${CARGO_TARGET_DIR:-$REPO/target}/release/examples/idle_footprint" "$DIR/sock" "$PID" "$Q" "$D" "$R" "$S"
