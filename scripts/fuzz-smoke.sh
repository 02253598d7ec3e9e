#!/usr/bin/env bash
# A short run of every fuzz target (FUZZ_SECONDS each, default 5; scripts/fuzz-long.sh for long runs). Needs the nightly toolchain and cargo-fuzz; in CI (CI set)
# cargo-fuzz is installed when a nightly exists, otherwise the smoke run is skipped loudly.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-5}
. scripts/fuzz-targets.sh

if ! rustup toolchain list 2>/dev/null | grep '^nightly' >/dev/null; then
    echo "SKIPPED: fuzz smoke run needs a nightly toolchain (none installed)" >&2
    exit 0
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    if [ -n "${CI:-}" ]; then
        cargo install --quiet --locked cargo-fuzz
    else
        echo "SKIPPED: cargo-fuzz not installed (cargo install cargo-fuzz)" >&2
        exit 0
    fi
fi
cd fuzz
for target in $(cargo +nightly fuzz list); do
    echo "fuzzing $target for ${seconds}s"
    mkdir -p "corpus/$target"
    # shellcheck disable=SC2046
    GLIBC_TUNABLES="$(fuzz_malloc_tunables "$target")" cargo +nightly fuzz run "$target" "corpus/$target" -- -max_total_time="$seconds" -print_final_stats=1 \
        $(fuzz_target_args "$target") 2>&1 \
        | grep -E "^(#|stat::number_of_executed_units|==|SUMMARY|INFO: Running)" | tail -n 3
done
