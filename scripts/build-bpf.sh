#!/usr/bin/env bash
# Rebuilds the fast path's programs from their sources: the uplinks' XDP program
# (crates/hostd/bpf/fastpath.o) and the VM ports' TC program (vmport.o).
# The object is checked in so that building srmig needs no clang; the test
# `xdp_fastpath::the_checked_in_object_is_what_the_source_compiles_to` (run in CI, which
# installs clang) fails when the two differ. Needs Debian's clang (14 in bookworm: another
# version may emit other bytes; the test compares with the clang it finds).
set -euo pipefail
cd "$(dirname "$0")/../crates/hostd/bpf"
for prog in fastpath vmport; do
    clang -O2 -target bpf -mcpu=v3 -c "$prog.c" -o "$prog.o"
    echo "wrote $(pwd)/$prog.o ($(stat -c %s "$prog.o") bytes)"
done
