#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each and writes a table (target, executions, exec/s,
# coverage as libFuzzer's cov/ft, crashes, slow units) to $FUZZ_LONG_OUT (default out/fuzz-long.md) and
# stdout. FUZZ_SANITIZER=none (default: address) runs the fast profile without a sanitizer
# (built into $CARGO_TARGET_DIR/none, so both profiles stay built). Corpora grow in
# fuzz/corpus/<target> (only the committed seed-* files are tracked); crashes land in
# fuzz/artifacts/<target>. FUZZ_RUNS=N also stops each target after N executions (libFuzzer
# -runs), whichever comes first; targets named after SECONDS run alone, in that order.
# Interrupted (Ctrl-C or SIGINT, or SIGTERM: a script started in the background with `&` or
# nohup ignores SIGINT), the running target stops as at its time limit (libFuzzer prints its
# final statistics), its line is written marked "(interrupted)", the targets after it do not
# run, and the script exits with 130.
# FUZZ_JOBS=N (default 1) runs each target on N cores at once: libFuzzer's fork mode (-fork=N),
# N fuzzing processes at a time that share the corpus. The table counts the executions of all
# of them (the last "#N:" line of the parent) over the wall time; a fuzzing process killed by
# an interrupt does not report, so an interrupted line counts only the processes that ended.
#
#   scripts/fuzz-long.sh 600                      # 10 minutes per target, address sanitizer
#   FUZZ_SANITIZER=none scripts/fuzz-long.sh 3600 # an hour per target, no sanitizer
#   FUZZ_SANITIZER=none FUZZ_RUNS=100000000 scripts/fuzz-long.sh 7200 wire_parse qmp_lines
#   FUZZ_SANITIZER=none FUZZ_JOBS=2 FUZZ_RUNS=100000000 scripts/fuzz-long.sh 9000 replay_pcap
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:?usage: scripts/fuzz-long.sh SECONDS [TARGET...]}
shift
runs=${FUZZ_RUNS:+-runs=$FUZZ_RUNS}
san=${FUZZ_SANITIZER:-address}
jobs=${FUZZ_JOBS:-1}
case "$jobs" in
    '' | *[!0-9]* | 0) echo "FUZZ_JOBS must be a number of cores (1 or more), not '$jobs'" >&2; exit 2 ;;
esac
fork=
if [ "$jobs" -gt 1 ]; then fork=-fork=$jobs; fi
root=$PWD
out=${FUZZ_LONG_OUT:-$root/out/fuzz-long.md}
mkdir -p "$(dirname "$out")"
. scripts/fuzz-targets.sh
cd fuzz
if [ "$san" = none ]; then
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/none"
fi
cargo +nightly fuzz build -s "$san"
# The targets run as built (not through `cargo fuzz run`, which would check the build again
# and stand between this script and the fuzzer when it has to be stopped).
bin_dir="${CARGO_TARGET_DIR:-$PWD/target}/$(rustc +nightly -vV | sed -n 's/^host: //p')/release"
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
interrupted=
fuzzer=
stop() {
    interrupted=1
    # (the fuzzer leads its own process group: in fork mode its fuzzing processes go too)
    if [ -n "$fuzzer" ]; then kill -TERM -- "-$fuzzer" 2>/dev/null || true; fi
}
trap stop INT TERM
{
    echo "# fuzz-long: ${seconds} s per target${FUZZ_RUNS:+ or $FUZZ_RUNS executions}, sanitizer ${san}, ${jobs} core(s) per target, $(date -u +%Y-%m-%dT%H:%MZ), $(git rev-parse --short HEAD)"
    echo
    echo "| target | executions | exec/s | cov | ft | crashes | slow units |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
} > "$out"
cat "$out"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "artifacts/$target"
    # Crashes, leaks, timeouts and out-of-memory inputs count; a "slow unit" (an input that
    # took more than libFuzzer's -report_slow_units, 10 s, of wall time, e.g. while the
    # machine or the process was stopped) is listed apart: it is not a failure.
    failures() { find "artifacts/$target" -type f ! -name 'slow-unit-*' | wc -l; }
    slow() { find "artifacts/$target" -type f -name 'slow-unit-*' | wc -l; }
    before=$(failures)
    slow_before=$(slow)
    # In the background, so that an interrupt reaches the trap while the fuzzer runs; libFuzzer
    # ends a run on SIGTERM as on its time limit, final statistics included.
    # In its own process group (setsid), so that an interrupt reaches fork mode's processes.
    started=$(date +%s)
    # TMPDIR: fork mode's working directory (libFuzzerTemp.FuzzWithFork<pid>.dir), which an
    # interrupted run does not remove itself, lives in $logs and goes with it.
    # shellcheck disable=SC2046
    TMPDIR="$logs" GLIBC_TUNABLES="$(fuzz_malloc_tunables "$target")" setsid "$bin_dir/$target" -artifact_prefix="$PWD/artifacts/$target/" \
        -max_total_time="$seconds" $runs $fork -print_final_stats=1 $(fuzz_target_args "$target") \
        "corpus/$target" > "$logs/$target.log" 2>&1 &
    fuzzer=$!
    # (wait returns early when a trapped signal arrives: wait again for the fuzzer to finish)
    while kill -0 "$fuzzer" 2>/dev/null; do wait "$fuzzer" || true; done
    fuzzer=
    after=$(failures)
    slow_units=$(($(slow) - slow_before))
    # (a run that failed to start has none of these lines: "?" in the table, not an exit)
    if [ -z "$fork" ]; then
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$target.log" | tail -n 1)
        rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$logs/$target.log" | tail -n 1)
    else
        # The parent's lines: "#<executions of all jobs>: cov: .. ft: .. corp: .. exec/s: <one job's>"
        execs=$(sed -n 's/^#\([0-9]*\): cov: .*/\1/p' "$logs/$target.log" | tail -n 1)
        elapsed=$(($(date +%s) - started))
        rate=${execs:+$((execs / (elapsed > 0 ? elapsed : 1)))}
    fi
    cov=$(grep -o 'cov: [0-9]*' "$logs/$target.log" | tail -n 1 | cut -d' ' -f2 || true)
    ft=$(grep -o 'ft: [0-9]*' "$logs/$target.log" | tail -n 1 | cut -d' ' -f2 || true)
    line="| $target${interrupted:+ (interrupted)} | ${execs:-?} | ${rate:-?} | ${cov:-?} | ${ft:-?} | $((after - before)) | $slow_units |"
    echo "$line" | tee -a "$out"
    if [ -z "$execs" ]; then
        echo "$target did not run; the end of its log:" >&2
        tail -n 5 "$logs/$target.log" >&2
    fi
    if [ "$after" -gt "$before" ]; then
        grep -E "panicked|SUMMARY|ERROR" "$logs/$target.log" | head -n 5 >&2 || true
    fi
    if [ -n "$interrupted" ]; then
        echo "interrupted: the targets after $target did not run" >&2
        break
    fi
done
echo
echo "table written to $out"
if [ -n "$interrupted" ]; then exit 130; fi
