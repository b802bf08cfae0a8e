#!/usr/bin/env bash
# Instructions per request of a daemon, counted by callgrind (repeatable to a fraction of a
# percent, unlike timings on a shared VM): the daemon runs under valgrind with no sandbox, the
# request_cost example sends N requests of one kind one at a time, ends the session and
# disconnects, the daemon exits, and the total is divided by N. Startup and INIT are counted too,
# so compare runs with the same N.
#
# usage: benches/instructions.sh DAEMON-BINARY getattr|lookup|read4k|write4k [N=20000] [POOL=0]
# KEEP=DIR keeps callgrind's output and its per-function annotation there.
set -euo pipefail
BIN=${1:?daemon binary}; OP=${2:?request kind}; N=${3:-20000}; POOL=${4:-0}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
command -v valgrind >/dev/null || { apt-get install -y -q valgrind >/dev/null; }
cargo build -q --release -p vhost-user-fs-client --example request_cost --manifest-path "$REPO/Cargo.toml"
CLIENT=$REPO/target/release/examples/request_cost
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir "$TMP/share"
valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.out" "$BIN" --socket-path="$TMP/sock" \
    --shared-dir="$TMP/share" --thread-pool-size="$POOL" --sandbox none --seccomp none \
    >"$TMP/daemon.log" 2>&1 &
pid=$!
for _ in $(seq 300); do [ -S "$TMP/sock" ] && break; sleep 0.1; done
"$CLIENT" "$TMP/sock" "$OP" "$N"
wait "$pid" || { echo "daemon failed:"; tail "$TMP/daemon.log"; exit 1; }
callgrind_annotate "$TMP/cg.out" >"$TMP/annotate.txt" 2>/dev/null
total=$(awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}' "$TMP/annotate.txt")
if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$TMP/cg.out" "$TMP/annotate.txt" "$KEEP/"; fi
echo "$OP pool=$POOL: $total instructions for $N requests: $(( total / N )) per request"
