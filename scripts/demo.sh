#!/usr/bin/env bash
# The daemon's main job, end to end: installs what is needed (Debian packages, a guest kernel),
# builds async-virtiofsd, serves a small demo directory, and boots a Linux guest under QEMU that
# mounts it, lists and reads it, and writes a file back, which is then shown from the host.
# Run as root on a Debian 12 machine.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}

echo "==> installing prerequisites and preparing the guest kernel"
bash tests/e2e/setup.sh --kernel 6.1
echo "==> building async-virtiofsd (release)"
cargo build --release -p async-virtiofsd

work=$(mktemp -d /tmp/async-virtiofsd-demo.XXXXXX)
daemon_pid=
cleanup() {
    if [ -n "$daemon_pid" ]; then kill "$daemon_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

share=$work/share
mkdir -p "$share/docs"
echo "Hello from the host: this directory is served by async-virtiofsd." >"$share/hello.txt"
printf 'a small file in a subdirectory\n' >"$share/docs/notes.txt"
sock=$work/vhost-fs.sock

echo "==> serving $share on $sock"
target/release/async-virtiofsd --shared-dir "$share" --socket-path "$sock" \
    --thread-pool-size 64 2>"$work/daemon.log" &
daemon_pid=$!
for _ in $(seq 100); do
    grep -q "Waiting for vhost-user socket connection" "$work/daemon.log" && break
    kill -0 "$daemon_pid" 2>/dev/null || { cat "$work/daemon.log"; exit 1; }
    sleep 0.1
done

echo "==> booting a Linux guest that mounts the share (QEMU TCG, about 15 s)"
bash tests/e2e/run-guest.sh --socket "$sock" --kernel 6.1 --mode demo --verbose --timeout 300

wait "$daemon_pid" && rc=0 || rc=$?
daemon_pid=
echo "==> daemon log"
cat "$work/daemon.log"
echo "==> daemon exit status: $rc"
echo "==> written by the guest, read on the host:"
cat "$share/guest-was-here.txt"
[ "$rc" = 0 ]
