#!/usr/bin/env bash
# Replays the dataplane_ops corpus (default: fuzz/corpus/dataplane_ops; or the files and
# directories given) through the fuzz harness with statistics, and prints per behavior, headend,
# drop reason and End.SBUF / End.S path how many inputs reach it. Fails if a behavior, a headend
# or an End.SBUF path is not reached. `--trace` first prints every operation and verdict.
# Runs on the stable toolchain (no fuzzer needed).
set -euo pipefail
args=()
for a in "$@"; do
    case "$a" in
        --*) args+=("$a") ;;
        *) args+=("$(realpath "$a")") ;;
    esac
done
cd "$(dirname "$0")/../fuzz"
exec cargo run --quiet --example dataplane_ops_coverage -- "${args[@]}"
