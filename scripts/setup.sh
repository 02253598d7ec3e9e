#!/usr/bin/env bash
# Installs what srmig's build, demo and tests need on Debian bookworm with Rust (rustup): the
# Debian packages and the rustup components. Idempotent; as root it installs what is missing,
# otherwise it says what is missing and how to install it (exit status 1).
#
# Called by scripts/demo.sh and scripts/test.sh (the README's two commands) and by .ci/run.
set -euo pipefail

packages=(
    # build: the C toolchain, protoc (etcd client), clang (the XDP programs)
    gcc libc6-dev protobuf-compiler clang
    # labs and tests: namespaces and links, captures, workloads
    iproute2 iputils-ping tcpdump tshark python3 nftables iperf3 ethtool kmod
    # the QEMU and libvirt labs and their guest image
    qemu-system-x86 busybox-static cpio libvirt-daemon-system libvirt-clients
    # the plots' PNG copies (a font for their text)
    fonts-dejavu-core
    # the etcd store tests, the systemd unit checks
    etcd-server systemd
)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep "install ok installed" >/dev/null; then
        missing+=("$p")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup: missing Debian packages: ${missing[*]}" >&2
        echo "setup: run as root, or: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" > /dev/null
    # The etcd-server package may start a system etcd; srmig's tests run their own on free
    # ports, and the lab in its own namespace.
fi

if command -v rustup > /dev/null; then
    for c in rustfmt clippy; do
        if ! rustup component list --installed 2>/dev/null | grep "^$c" >/dev/null; then
            echo "setup: adding the rustup component $c"
            rustup component add "$c"
        fi
    done
elif ! command -v cargo > /dev/null; then
    echo "setup: no Rust toolchain: install one with rustup (https://rustup.rs)" >&2
    exit 1
fi
