#!/usr/bin/env bash
# Installs srmig on this machine: the binaries (srmig, srmigd), their manual pages, shell
# completions, the systemd units, /etc/srmig and the libvirt hook's template. Run as root; see docs/install.md.
#
#   scripts/install.sh [--prefix /usr/local] [--destdir DIR] [--bin-dir DIR]
#
#   --prefix   where binaries, pages and completions go (default /usr/local); the units'
#              ExecStart follows it
#   --destdir  stage everything below DIR instead of / (packaging; nothing is enabled)
#   --bin-dir  take srmig and srmigd from DIR instead of building them with `cargo install`
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=/usr/local
destdir=
bindir_in=
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
        --destdir) destdir=${2:?--destdir needs a directory}; shift 2 ;;
        --bin-dir) bindir_in=${2:?--bin-dir needs a directory}; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done
case "$prefix" in /*) ;; *) echo "install.sh: --prefix must be absolute: $prefix" >&2; exit 2 ;; esac

root="${destdir%/}"
bin="$root$prefix/bin"
mkdir -p "$bin"
if [ -n "$bindir_in" ]; then
    for b in srmig srmigd; do
        [ -x "$bindir_in/$b" ] || { echo "install.sh: no executable $bindir_in/$b" >&2; exit 1; }
        install -m 0755 "$bindir_in/$b" "$bin/$b"
    done
else
    cargo install --locked --path crates/cli --root "$root$prefix" --target-dir target
    cargo install --locked --path crates/hostd --root "$root$prefix" --target-dir target
    rm -f "$root$prefix/.crates.toml" "$root$prefix/.crates2.json"
fi

"$bin/srmig" man --out "$root$prefix/share/man" > /dev/null
completions="$root$prefix/share/bash-completion/completions"
mkdir -p "$completions" "$root$prefix/share/zsh/site-functions" "$root$prefix/share/fish/vendor_completions.d"
"$bin/srmig" completions bash > "$completions/srmig"
"$bin/srmig" completions zsh > "$root$prefix/share/zsh/site-functions/_srmig"
"$bin/srmig" completions fish > "$root$prefix/share/fish/vendor_completions.d/srmig.fish"

units="$root/etc/systemd/system"
mkdir -p "$units"
for u in dist/systemd/*.service; do
    sed "s|/usr/local/bin/|$prefix/bin/|g" "$u" > "$units/$(basename "$u")"
    chmod 0644 "$units/$(basename "$u")"
done
install -d -m 0750 "$root/etc/srmig"
# The libvirt hook, as a template to copy to /etc/libvirt/hooks/qemu (docs/operators.md).
install -d "$root$prefix/share/srmig/libvirt"
sed "s|/usr/local/bin/|$prefix/bin/|g" dist/libvirt/qemu > "$root$prefix/share/srmig/libvirt/qemu"
chmod 0755 "$root$prefix/share/srmig/libvirt/qemu"

if [ -z "$destdir" ] && command -v systemctl > /dev/null && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi
echo "installed srmig, srmigd, manual pages, completions and systemd units under ${root:-/}"
echo "next: /etc/srmig/<host>.toml, then systemctl enable --now srmigd@<host> (docs/install.md)"
