#!/usr/bin/env bash
# Builds and runs the fuzz targets of async-virtiofsd for SECONDS each (default 60), one after
# the other, one fuzzing process at a time; exits non-zero on the first crash (libFuzzer leaves
# the input in fuzz/artifacts/TARGET/). Works with the stable toolchain: cargo-fuzz passes
# nightly-only rustc flags (-Zsanitizer=address, ...), which RUSTC_BOOTSTRAP=1 lets stable accept.
# See fuzz/README.md.
#
#   bash fuzz/run.sh [SECONDS [TARGET...]]     (no TARGET: every target, `cargo fuzz list`)
#
# Extra libFuzzer flags for every target can be given in FUZZ_ARGS (e.g. FUZZ_ARGS=-runs=1000000).
set -euo pipefail

SECS=${1:-60}
shift || true
FUZZ=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$FUZZ"
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz from crates.io (about 2 minutes on 2 cores)"
    cargo install cargo-fuzz --version 0.13.2 --locked
fi

# fuzz/ is a workspace of its own: the root's `cargo fmt --all` and `cargo test` do not see it.
cargo fmt --check
# The seeds run clean on both harnesses, and every per-opcode seed is accepted (plain build).
cargo test --lib --quiet

# The request_pipeline harness builds its temporary share under TMPDIR; keep it here, start clean.
export TMPDIR="$FUZZ/target/tmp"
rm -rf "$TMPDIR"
mkdir -p "$TMPDIR"

if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    dirs=("corpus/$target")
    for extra in "seeds/$target" "regressions/$target"; do
        [[ -d $extra ]] && dirs+=("$extra")
    done
    asan=${ASAN_OPTIONS:-}
    if [[ $target == fuse_decoder ]]; then
        # Every function of the server is one big frame per request; ASan's fake stacks for
        # stack-use-after-return cost this fast target about a third of its speed.
        asan="${asan:+$asan:}detect_stack_use_after_return=0"
    fi
    echo "==> fuzz target $target for ${SECS}s (corpus: ${dirs[*]})"
    # -timeout: a request that blocks for 10 s is a bug (a hang), reported like a crash.
    # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
    ASAN_OPTIONS=$asan cargo fuzz run "$target" "${dirs[@]}" -- \
        -max_total_time="$SECS" -timeout=10 -print_final_stats=1 ${FUZZ_ARGS:-}
done
