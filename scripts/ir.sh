#!/usr/bin/env bash
# Instructions per packet of every `srmig bench dataplane` scenario (docs/perf.md, "How"):
# builds crates/dataplane/benches/ir.rs and runs it under callgrind for N = 10 and N = 60
# batches; (Ir(60) - Ir(10)) / (50 x 256) is the count per packet, setup excluded.
#
#   scripts/ir.sh [SCENARIO...]     # all scenarios when none is named
#
# CARGO_TARGET_DIR is honoured; SRC=DIR measures the checkout in DIR instead.
# Prints "name<TAB>Ir/packet" lines.
set -euo pipefail
cd "${SRC:-$(dirname "$0")/..}"
target=${CARGO_TARGET_DIR:-target}
cargo bench -q -p srmig-dataplane --features testkit --bench ir --no-run 2>/dev/null
ir=$(ls -t "$target"/release/deps/ir-* | grep -v '\.d$' | head -1)
if [ $# -eq 0 ]; then
    set -- "End" "End.X" "End.DX6" "End.DT6" "End.S deliver" "End.S forward" \
        "End.SBUF deliver" "End.SBUF hold" "End.SBUF release" "H.Encaps" "H.Encaps.Red" "H.Insert"
fi
total() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$ir" "$1" "$2" 2>&1 |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
for s in "$@"; do
    a=$(total 10 "$s")
    b=$(total 60 "$s")
    printf '%s\t%s\n' "$s" "$(( (b - a + 6400) / 12800 ))"
done
