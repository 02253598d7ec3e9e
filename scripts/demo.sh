#!/usr/bin/env bash
# srmig's main job (the README's quick start): the paper's experiment on the netns lab, as
# root: no migration, traditional, SR with End.SBUF dropping, SR with End.SBUF buffering, a VM
# migrating between two hosts running srmigd while a client VM probes it. Prints the paper's
# table; reports, plots and paper.md go to out/demo/. Sets the machine up first
# (scripts/setup.sh). Extra arguments go to `srmig demo` (e.g. --migrations 4).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --workspace
exec ./target/release/srmig demo "$@"
