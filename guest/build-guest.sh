#!/bin/bash
# build-guest.sh - builds the srmig QEMU guest (Debian kernel + busybox initramfs), cached.
#
# Usage: guest/build-guest.sh [--force] [--cache-dir DIR] [--kernel-pkg PKG]
#
# Prints the directory holding the guest as the only line on stdout (logs go to stderr):
#   vmlinuz        the Debian kernel, unpacked from its .deb (never installed on the host)
#   initramfs.gz   busybox-static, the virtio modules, the static responder and /init
#   manifest.txt   kernel package and version, modules in load order, build hash
#   build.hash     hash of this script and responder.c; a mismatch triggers a rebuild
#
# Cache: ${SRMIG_GUEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/srmig/guest}/<kernel-version>/.
# The guest is rebuilt only when it is missing, when this script or responder.c changed, or
# with --force. Without network or apt lists, an existing build with the current hash is reused.
#
# Guest kernel command line: console=ttyS0 srmig.addr=2001:db8:100::10/64 srmig.gw=2001:db8:100::1
# [srmig.mtu=1400] [srmig.hostname=NAME]
# (see guest/README.md for what the guest does and which ports it answers on).
#
# Host packages: busybox-static cpio kmod gcc libc6-dev (and apt/dpkg, present on Debian).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SELF="$HERE/$(basename "${BASH_SOURCE[0]}")"
RESPONDER_SRC="$HERE/responder.c"
# The virtio modules the guest needs (=m in Debian's config); dependencies are added from
# modules.dep and everything is loaded in dependency order.
MODULES=(virtio_pci virtio_net)

log() { printf 'build-guest: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

FORCE=0
CACHE_BASE=${SRMIG_GUEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/srmig/guest}
KERNEL_PKG=${SRMIG_GUEST_KERNEL_PKG:-}
while [ $# -gt 0 ]; do
  case $1 in
    --force) FORCE=1 ;;
    --cache-dir) CACHE_BASE=${2:?--cache-dir needs a directory}; shift ;;
    --kernel-pkg) KERNEL_PKG=${2:?--kernel-pkg needs a package name}; shift ;;
    -h|--help) sed -n '2,20p' "$SELF" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
  shift
done

for tool in busybox cpio gzip depmod gcc dpkg apt-get apt-cache sha256sum flock; do
  command -v "$tool" >/dev/null || die "missing host tool '$tool' (apt-get install -y busybox-static cpio kmod gcc libc6-dev)"
done
BUSYBOX=$(command -v busybox)
# A dynamically linked busybox would not run in the initramfs (no libc there).
if file_out=$(LC_ALL=C readelf -l "$BUSYBOX" 2>/dev/null) && grep -q 'INTERP' <<<"$file_out"; then
  die "$BUSYBOX is dynamically linked; install busybox-static"
fi
[ -f "$RESPONDER_SRC" ] || die "missing $RESPONDER_SRC"

HASH=$(cat "$SELF" "$RESPONDER_SRC" | sha256sum | cut -c1-16)
mkdir -p "$CACHE_BASE"
CACHE_BASE=$(cd "$CACHE_BASE" && pwd)

# Serialize concurrent builds (parallel tests) on one lock for the whole cache.
exec 9>"$CACHE_BASE/.lock"
flock 9

is_current() { # DIR -> true if DIR holds a complete build with the current hash
  [ -f "$1/vmlinuz" ] && [ -f "$1/initramfs.gz" ] && [ "$(cat "$1/build.hash" 2>/dev/null)" = "$HASH" ]
}

# 1. Which kernel: whatever linux-image-amd64 points at (or --kernel-pkg).
if [ -z "$KERNEL_PKG" ]; then
  KERNEL_PKG=$(apt-cache depends linux-image-amd64 2>/dev/null |
    awk '/Depends: linux-image-[0-9]/ { print $2; exit }') || true
fi
if [ -z "$KERNEL_PKG" ]; then
  # Offline: reuse the newest current build, if any.
  for d in $(ls -1dt "$CACHE_BASE"/*/ 2>/dev/null); do
    if is_current "${d%/}" && [ "$FORCE" = 0 ]; then
      log "apt-cache cannot resolve linux-image-amd64; reusing ${d%/}"
      echo "${d%/}"
      exit 0
    fi
  done
  die "cannot resolve linux-image-amd64 (run apt-get update, or pass --kernel-pkg linux-image-<version>-amd64)"
fi
KVER=${KERNEL_PKG#linux-image-}
case $KVER in ''|*/*|.*) die "unexpected kernel package name '$KERNEL_PKG'" ;; esac
OUT="$CACHE_BASE/$KVER"

if [ "$FORCE" = 0 ] && is_current "$OUT"; then
  log "up to date: $OUT"
  echo "$OUT"
  exit 0
fi

# 2. Build in a scratch dir next to the cache (same filesystem: the final mv is atomic).
WORK=$(mktemp -d "$CACHE_BASE/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
chmod 755 "$WORK" # apt-get download drops privileges to _apt when it can
log "building $KERNEL_PKG into $OUT"

(cd "$WORK" && apt-get download "$KERNEL_PKG" >&2) || die "apt-get download $KERNEL_PKG failed"
DEB=$(ls "$WORK"/"$KERNEL_PKG"_*.deb)
KPKG_VERSION=$(dpkg-deb -f "$DEB" Version)
mkdir "$WORK/kpkg"
dpkg -x "$DEB" "$WORK/kpkg"
rm -f "$DEB"
[ -d "$WORK/kpkg/lib/modules/$KVER" ] || die "package has no lib/modules/$KVER"
[ -f "$WORK/kpkg/boot/vmlinuz-$KVER" ] || die "package has no boot/vmlinuz-$KVER"
# The .deb ships no modules.dep (depmod runs at install time): generate it.
depmod -b "$WORK/kpkg" "$KVER"
MODDIR="$WORK/kpkg/lib/modules/$KVER"

ROOT="$WORK/root"
mkdir -p "$ROOT"/{bin,dev,proc,sys,tmp,run,etc,lib/modules}
ln -s bin "$ROOT/sbin"
cp "$BUSYBOX" "$ROOT/bin/busybox"
for applet in $("$BUSYBOX" --list); do
  [ -e "$ROOT/bin/$applet" ] || ln -s busybox "$ROOT/bin/$applet"
done

# 3. Modules in dependency order: a depth-first walk of modules.dep.
declare -A SEEN=()
ORDER=()
add_module() { # path relative to MODDIR, as in modules.dep
  local rel=$1 line dep
  [ -n "${SEEN[$rel]:-}" ] && return 0
  SEEN[$rel]=1
  line=$(grep -m1 "^$rel:" "$MODDIR/modules.dep") || die "$rel not in modules.dep"
  for dep in ${line#*:}; do add_module "$dep"; done
  ORDER+=("$rel")
}
for m in "${MODULES[@]}"; do
  rel=$(grep -m1 -E "(^|/)$m\.ko(\.xz|\.zst|\.gz)?:" "$MODDIR/modules.dep" | cut -d: -f1) ||
    die "module $m not found (built in? then drop it from MODULES)"
  add_module "$rel"
done
: >"$ROOT/lib/modules/load-order"
for rel in "${ORDER[@]}"; do
  base=$(basename "$rel")
  case $base in # busybox insmod wants plain .ko files
    *.ko) cp "$MODDIR/$rel" "$ROOT/lib/modules/$base" ;;
    *.ko.xz) xz -dc "$MODDIR/$rel" >"$ROOT/lib/modules/${base%.xz}"; base=${base%.xz} ;;
    *.ko.zst) zstd -qdc "$MODDIR/$rel" >"$ROOT/lib/modules/${base%.zst}"; base=${base%.zst} ;;
    *.ko.gz) gzip -dc "$MODDIR/$rel" >"$ROOT/lib/modules/${base%.gz}"; base=${base%.gz} ;;
    *) die "unexpected module file $rel" ;;
  esac
  echo "$base" >>"$ROOT/lib/modules/load-order"
done

# 4. The responder: static, so it needs nothing from the initramfs.
gcc -static -O2 -Wall -Wextra -o "$ROOT/bin/srmig-responder" "$RESPONDER_SRC" 2> >(grep -v 'statically linked' >&2 || true)
strip "$ROOT/bin/srmig-responder" 2>/dev/null || true

# 5. /init (PID 1). Everything it needs is in the kernel command line, so one image serves
# every VM. GUEST-READY goes to ttyS0 once the NIC is configured and the responder listens.
cat >"$ROOT/init" <<'INIT'
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
CONSOLE=/dev/ttyS0; [ -c $CONSOLE ] || CONSOLE=/dev/console
say() { echo "$*" >$CONSOLE; }

ADDR= GW= ADDR4= GW4= MTU= HOSTNAME=srmig-guest
for arg in $(cat /proc/cmdline); do
  case $arg in
    srmig.addr=*) ADDR=${arg#srmig.addr=} ;;
    srmig.gw=*) GW=${arg#srmig.gw=} ;;
    srmig.addr4=*) ADDR4=${arg#srmig.addr4=} ;;
    srmig.gw4=*) GW4=${arg#srmig.gw4=} ;;
    srmig.mtu=*) MTU=${arg#srmig.mtu=} ;;
    srmig.hostname=*) HOSTNAME=${arg#srmig.hostname=} ;;
  esac
done
hostname "$HOSTNAME"

# No DAD (busybox ip has no 'nodad'): set the default before eth0 exists so it inherits it.
echo 0 >/proc/sys/net/ipv6/conf/default/accept_dad
echo 0 >/proc/sys/net/ipv6/conf/all/accept_dad
for m in $(cat /lib/modules/load-order); do
  insmod /lib/modules/$m || say "GUEST-ERROR insmod $m failed"
done
ip link set lo up
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
if [ -e /sys/class/net/eth0 ]; then
  [ -n "$MTU" ] && { ip link set eth0 mtu "$MTU" || say "GUEST-ERROR bad srmig.mtu=$MTU"; }
  ip link set eth0 up
  [ -n "$ADDR" ] && { ip -6 addr add "$ADDR" dev eth0 || say "GUEST-ERROR bad srmig.addr=$ADDR"; }
  [ -n "$GW" ] && { ip -6 route add default via "$GW" dev eth0 || say "GUEST-ERROR bad srmig.gw=$GW"; }
  # IPv4: a /32 with the gateway on-link (resolved with ARP, answered by srmigd).
  [ -n "$ADDR4" ] && { ip -4 addr add "$ADDR4" dev eth0 || say "GUEST-ERROR bad srmig.addr4=$ADDR4"; }
  [ -n "$GW4" ] && { { ip -4 route add "$GW4" dev eth0 scope link && ip -4 route add default via "$GW4" dev eth0; } || say "GUEST-ERROR bad srmig.gw4=$GW4"; }
else
  say "GUEST-ERROR no eth0"
fi

setsid srmig-responder >$CONSOLE 2>&1 </dev/null &
# wait until the responder listens (its UDP port 7 shows up in /proc/net/udp6)
i=0
while ! grep -q ':0007 ' /proc/net/udp6 && [ $i -lt 100 ]; do sleep 0.02; i=$((i + 1)); done

say "GUEST-READY addr=${ADDR:-none} gw=${GW:-none} addr4=${ADDR4:-none} gw4=${GW4:-none} boot_id=$(cat /proc/sys/kernel/random/boot_id) uptime=$(cut -d' ' -f1 /proc/uptime)"

# A shell on the serial console for debugging; PID 1 never exits.
while true; do
  setsid cttyhack sh
  sleep 1
done
INIT
chmod 755 "$ROOT/init"

(cd "$ROOT" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -6 >"$WORK/initramfs.gz"

# 6. Publish: replace the old build in one rename.
STAGE="$WORK/out"
mkdir "$STAGE"
mv "$WORK/initramfs.gz" "$STAGE/initramfs.gz"
cp "$WORK/kpkg/boot/vmlinuz-$KVER" "$STAGE/vmlinuz"
{
  echo "kernel_package=$KERNEL_PKG"
  echo "kernel_package_version=$KPKG_VERSION"
  echo "kernel_version=$KVER"
  echo "modules=$(tr '\n' ' ' <"$ROOT/lib/modules/load-order" | sed 's/ $//')"
  echo "busybox=$("$BUSYBOX" | head -1)"
  echo "build_hash=$HASH"
} >"$STAGE/manifest.txt"
echo "$HASH" >"$STAGE/build.hash"
rm -rf "$OUT.old"
[ -e "$OUT" ] && mv "$OUT" "$OUT.old"
mv "$STAGE" "$OUT"
rm -rf "$OUT.old"
log "built $OUT: vmlinuz $(du -k "$OUT/vmlinuz" | cut -f1) KiB, initramfs $(du -k "$OUT/initramfs.gz" | cut -f1) KiB, modules: $(tr '\n' ' ' <"$ROOT/lib/modules/load-order")"
echo "$OUT"
