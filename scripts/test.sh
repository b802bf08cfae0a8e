#!/usr/bin/env bash
# Runs every test of async-virtiofsd: formatting, lints, unit and integration tests, the
# dependency policy, the guest end-to-end matrix (a real Linux guest under QEMU mounts the
# share), and the benchmark harness in its quick mode (so it cannot rot; it asserts no timing). Installs what it needs first (Debian packages, guest kernels, cargo-deny); run as root
# on a Debian 12 machine. CI runs exactly this (.ci/run).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
export CARGO_TERM_COLOR=never

step() { printf '\n==> %s\n' "$*"; }
t0=$(date +%s)
# Bridge mounts that exist before this run (e.g. left by a test process killed from outside,
# whose daemon is gone) are not this run's doing; only new ones fail the final check.
bridge_mounts() { awk '/ - fuse\.vhost-user-fs /{print $5}' /proc/self/mountinfo | sort; }
mounts_before=$(bridge_mounts)

step "prerequisites: guest rig (QEMU, busybox, kernels) and cargo-deny"
bash tests/e2e/setup.sh
if ! cargo deny --version >/dev/null 2>&1; then
    echo "installing cargo-deny from crates.io (about 4 minutes on 2 cores)"
    cargo install cargo-deny --version 0.20.2 --locked
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

step "cargo test (unit and integration tests)"
cargo test --workspace

step "cargo deny check licenses bans sources"
# The advisory database cannot be fetched here (no network beyond the package registries), so
# `cargo deny check advisories` is not run; see README.
cargo deny check licenses bans sources

step "fuzz targets, 60 s each (fuzz/run.sh; installs cargo-fuzz if missing)"
bash fuzz/run.sh 60

step "guest end-to-end matrix (QEMU TCG)"
cargo build -p async-virtiofsd
bash tests/e2e/matrix.sh "$REPO/target/debug/async-virtiofsd"

step "libvirt starts the daemon for a domain's <filesystem> (Debian's libvirt 9.0, TCG guest)"
bash tests/libvirt/run.sh "$REPO/target/debug/async-virtiofsd"

step "Debian package: build, dpkg -i, the installed daemon serves a guest, dpkg -r"
bash tests/package/run.sh

step "soak, 60 s: mixed verified workload at depth 256 on 4 queues, DESTROY/INIT, new daemons (docs/soak.md)"
cargo build --release -p vhost-user-fs-client --bin vhost-user-fs-soak
target/release/vhost-user-fs-soak --daemon "$REPO/target/debug/async-virtiofsd" --duration 60s \
    --destroy-every 15s --reconnect-every 25s

step "benchmark harness, quick mode (reports only; fails if our daemon cannot serve a cell)"
bash benches/run --quick --out "$REPO/target/bench-quick"
if grep -q '^async-virtiofsd,' "$REPO/target/bench-quick/skipped.csv"; then
    echo "async-virtiofsd failed benchmark cells:"
    grep '^async-virtiofsd,' "$REPO/target/bench-quick/skipped.csv"
    exit 1
fi
grep -q '^async-virtiofsd,' "$REPO/target/bench-quick/results.csv" ||
    { echo "no benchmark results for async-virtiofsd"; exit 1; }

step "bridge POSIX suite on every daemon (host, async-virtiofsd, C and Rust virtiofsd via /dev/fuse)"
# Also part of `cargo test` above; here the reference daemons must be present (benches/run
# installed the Rust virtiofsd), so a missing one fails instead of being skipped.
BRIDGE_REQUIRE_ALL_DAEMONS=1 \
    RUST_VIRTIOFSD_BIN="${BENCH_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/async-virtiofsd/bench-tools}/bin/virtiofsd" \
    cargo test -p vhost-user-fs-mount --test posix -- --test-threads 1 --nocapture
left=$(comm -13 <(echo "$mounts_before") <(bridge_mounts) | sed '/^$/d')
if [ -n "$left" ]; then
    echo "bridge mounts left behind by this run:"; echo "$left"; exit 1
fi
if [ -n "$mounts_before" ]; then
    echo "note: bridge mounts that predate this run (not checked): $mounts_before"
fi

step "all tests passed in $(( $(date +%s) - t0 ))s"
