#!/usr/bin/env bash
# Builds target/debian/srmig_<version>-1_<arch>.deb: srmig and srmigd (release), their manual
# pages, shell completions, the systemd units (/lib/systemd/system, nothing enabled) and the
# libvirt hook's template, staged by scripts/install.sh --prefix /usr. Needs cargo-deb
# (`cargo install cargo-deb`). Install with `apt install ./target/debian/srmig_*.deb`.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo deb --version > /dev/null 2>&1; then
    echo "build-deb.sh: needs cargo-deb: cargo install cargo-deb" >&2
    exit 1
fi
cargo build --release --locked -p srmig-cli -p srmig-hostd
rm -rf target/deb-root
scripts/install.sh --prefix /usr --destdir target/deb-root --bin-dir target/release > /dev/null
cargo deb -p srmig-cli --no-build --strip
