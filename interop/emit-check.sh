#!/usr/bin/env bash
# emit-check.sh -- prove that SRv6 frames EMITTED by srmig's dataplane are accepted by tshark's
# SRH dissector and by a Linux kernel SRv6 node.
#
# Usage: sudo interop/emit-check.sh [FRAMES.pcap]
#   Without an argument the frames come from `cargo run -p srmig-dataplane --example
#   emit_interop` (H.Encaps, H.Encaps.Red and H.Insert of one UDP datagram each; see that
#   example for the addresses). Exit status 0 only if every check passes.
#
# (a) tshark: every frame decodes with an SRH of the expected type, segments left and segment
#     list, no malformed-packet or warning/error expert info, UDP checksums verified.
# (b) kernel: the frames are injected with a raw AF_PACKET socket into a namespace whose
#     kernel runs `seg6local action End` on fc00:9::e and `seg6local action End.DX6` on
#     fc00:9::d6; a UDP listener behind it must receive all three inner datagrams.
#
#   X (x0) ---- (k0) K (k1) ---- (s0) S
#   injector     kernel SRv6      sink: 2001:db8:f00::10/11/12, UDP listener on port 5000
set -Eeuo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
PREFIX="srmig-ec-$$-"
TMP="$(mktemp -d /tmp/srmig-ec.XXXXXX)"
NAMESPACES=()
LISTENER_PID=""

log() { printf '[emit-check] %s\n' "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }

cleanup() {
    if [[ -n $LISTENER_PID ]]; then
        kill -TERM "$LISTENER_PID" 2>/dev/null || true
        wait "$LISTENER_PID" 2>/dev/null || true
    fi
    local ns
    for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'log "error at line $LINENO: $BASH_COMMAND"' ERR
trap 'log "interrupted"; exit 130' INT TERM

[[ $EUID -eq 0 ]] || fail "must run as root (network namespaces, raw sockets)"
for tool in ip tshark python3 ethtool; do
    command -v "$tool" >/dev/null || fail "missing tool: $tool"
done

# ---------------------------------------------------------------------------------------------
# The frames under test
# ---------------------------------------------------------------------------------------------
PCAP="${1:-}"
if [[ -z $PCAP ]]; then
    PCAP="$TMP/emit.pcap"
    (cd "$REPO" && cargo run -q -p srmig-dataplane --example emit_interop -- "$PCAP") \
        || fail "emit_interop example failed"
fi
[[ -s $PCAP ]] || fail "no frames in $PCAP"

# Expected, per frame: segments left | last entry | segment list (tshark order = Segment
# List[0] first) | inner/upper-layer payload.
EXPECTED=(
    "1|1|fc00:9::d6,fc00:9::e|srmig-emit-encaps"
    "1|0|fc00:9::d6|srmig-emit-red"
    "1|1|2001:db8:f00::12,fc00:9::e|srmig-emit-insert"
)

# ---------------------------------------------------------------------------------------------
# (a) tshark
# ---------------------------------------------------------------------------------------------
TSHARK=(tshark -n -r "$PCAP" -o udp.check_checksum:TRUE)
"${TSHARK[@]}" -V >"$TMP/tshark.txt" 2>"$TMP/tshark.err" || fail "tshark: $(cat "$TMP/tshark.err")"
if grep -nE 'Malformed|Expert Info \((Warning|Error)' "$TMP/tshark.txt"; then
    fail "tshark reports malformed packets or warnings (above)"
fi
mapfile -t ROWS < <("${TSHARK[@]}" -T fields -E separator='|' -e ipv6.routing.type \
    -e ipv6.routing.segleft -e ipv6.routing.srh.last_entry -e ipv6.routing.srh.addr \
    -e udp.checksum.status -e data.data 2>/dev/null)
[[ ${#ROWS[@]} -eq ${#EXPECTED[@]} ]] || fail "tshark saw ${#ROWS[@]} frames, expected ${#EXPECTED[@]}"
for i in "${!EXPECTED[@]}"; do
    IFS='|' read -r rtype segleft last addrs cksum data <<<"${ROWS[$i]}"
    IFS='|' read -r want_sl want_le want_addrs want_payload <<<"${EXPECTED[$i]}"
    payload="$(printf '%s' "$data" | xxd -r -p 2>/dev/null || python3 -c \
        'import sys; print(bytes.fromhex(sys.argv[1]).decode(), end="")' "$data")"
    [[ $rtype == 4 ]] || fail "frame $((i + 1)): routing type '$rtype', expected 4 (SRH)"
    [[ $segleft == "$want_sl" && $last == "$want_le" ]] \
        || fail "frame $((i + 1)): SL/LE $segleft/$last, expected $want_sl/$want_le"
    [[ $addrs == "$want_addrs" ]] || fail "frame $((i + 1)): segments '$addrs', expected '$want_addrs'"
    # udp.checksum.status: 1 = Good (2 = Unverified, 0 = Bad)
    [[ $cksum == 1 ]] || fail "frame $((i + 1)): UDP checksum status '$cksum', expected 1 (good)"
    [[ $payload == "$want_payload" ]] || fail "frame $((i + 1)): payload '$payload'"
    log "tshark ok: frame $((i + 1)) SL=$segleft LE=$last segments=$addrs payload=$payload"
done

# ---------------------------------------------------------------------------------------------
# (b) the kernel
# ---------------------------------------------------------------------------------------------
ns() { printf '%s%s' "$PREFIX" "$1"; }
nsx() { local n; n="$(ns "$1")"; shift; ip netns exec "$n" "$@"; }
ns_add() {
    ip netns add "$(ns "$1")"
    NAMESPACES+=("$(ns "$1")")
    local conf
    for conf in all default; do
        nsx "$1" sysctl -qw "net.ipv6.conf.$conf.accept_dad=0" \
            "net.ipv6.conf.$conf.router_solicitations=0" "net.ipv6.conf.$conf.forwarding=1" \
            "net.ipv6.conf.$conf.seg6_enabled=1" "net.ipv6.conf.$conf.accept_ra=0"
    done
    nsx "$1" ip link set lo up
}
link() {
    ip link add "$2" netns "$(ns "$1")" address "$3" type veth \
        peer name "$5" netns "$(ns "$4")" address "$6"
    local dev
    for dev in "$1:$2" "$4:$5"; do
        nsx "${dev%%:*}" sysctl -qw "net.ipv6.conf.${dev#*:}.seg6_enabled=1"
        nsx "${dev%%:*}" ethtool -K "${dev#*:}" tx off >/dev/null
        nsx "${dev%%:*}" ip link set "${dev#*:}" up
    done
}

ns_add x; ns_add k; ns_add s
# MACs: x0 and k0 are the srmig node's up0 port and its peer in the emit_interop example.
link x x0 02:00:00:00:0e:01 k k0 02:00:00:00:0e:02
link k k1 02:00:00:00:0f:01 s s0 02:00:00:00:0f:02
nsx k ip -6 addr add 2001:db8:e::2/64 dev k0
nsx k ip -6 addr add 2001:db8:f::1/64 dev k1
nsx s ip -6 addr add 2001:db8:f::2/64 dev s0
for a in 10 11 12; do nsx s ip -6 addr add "2001:db8:f00::$a/128" dev lo; done
nsx k ip -6 neigh replace 2001:db8:f::2 lladdr 02:00:00:00:0f:02 dev k1 nud permanent
nsx s ip -6 neigh replace 2001:db8:f::1 lladdr 02:00:00:00:0f:01 dev s0 nud permanent
nsx s ip -6 route add default via 2001:db8:f::1 dev s0
nsx k ip -6 route add 2001:db8:f00::/64 via 2001:db8:f::2 dev k1
nsx k ip -6 route add fc00:9::e/128 encap seg6local action End dev k0
nsx k ip -6 route add fc00:9::d6/128 encap seg6local action End.DX6 nh6 2001:db8:f::2 dev k0

# Listener on S: waits for the three payloads (5 s at most).
nsx s python3 - "$TMP/listener.ready" "${#EXPECTED[@]}" >"$TMP/received.txt" <<'PY' &
import socket, sys
ready, count = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("::", 5000))
s.settimeout(5.0)
open(ready, "w").close()
for _ in range(count):
    try:
        data, peer = s.recvfrom(2048)
    except socket.timeout:
        break
    print(f"{peer[0]} {data.decode(errors='replace')}", flush=True)
PY
LISTENER_PID=$!
for _ in $(seq 100); do [[ -e $TMP/listener.ready ]] && break; sleep 0.05; done
[[ -e $TMP/listener.ready ]] || fail "UDP listener did not start"

before="$(nsx k cat /proc/net/snmp6 | awk '$1 == "Ip6InReceives" {print $2}')"
# Inject every frame of the pcap, unchanged, on x0 (raw AF_PACKET socket).
nsx x python3 - "$PCAP" x0 <<'PY'
import socket, struct, sys
path, dev = sys.argv[1], sys.argv[2]
data = open(path, "rb").read()
magic = struct.unpack_from("<I", data, 0)[0]
endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
if struct.unpack_from(endian + "I", data, 20)[0] != 1:
    sys.exit("pcap link type is not Ethernet")
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((dev, 0))
off, n = 24, 0
while off + 16 <= len(data):
    incl = struct.unpack_from(endian + "I", data, off + 8)[0]
    s.send(data[off + 16: off + 16 + incl])
    off += 16 + incl
    n += 1
print(f"injected {n} frames", file=sys.stderr)
PY
wait "$LISTENER_PID" || true
LISTENER_PID=""
after="$(nsx k cat /proc/net/snmp6 | awk '$1 == "Ip6InReceives" {print $2}')"
log "kernel node K: Ip6InReceives $before -> $after"
nsx k ip -6 route show | grep seg6local >&2 || true

status=0
for want in "2001:db8:e00::10 srmig-emit-encaps" "2001:db8:e00::10 srmig-emit-red" \
    "2001:db8:e00::10 srmig-emit-insert"; do
    if grep -qxF "$want" "$TMP/received.txt"; then
        log "kernel ok: delivered '$want'"
    else
        log "kernel FAIL: not delivered: '$want'"
        status=1
    fi
done
[[ $status -eq 0 ]] || { log "received:"; cat "$TMP/received.txt" >&2; fail "kernel did not deliver every frame"; }
log "PASS: tshark decodes srmig's SRv6 frames cleanly and the kernel accepts them"
