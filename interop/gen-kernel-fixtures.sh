#!/usr/bin/env bash
# gen-kernel-fixtures.sh -- capture SRv6 frames produced by the Linux kernel's own seg6 (headend)
# and seg6local (endpoint) code, for srmig's interop tests.
#
# Usage: sudo interop/gen-kernel-fixtures.sh [OUTPUT_DIR]     (default: interop/fixtures)
#
# Every capture is made in private network namespaces joined by veth pairs, with fixed MAC and
# IPv6 addresses, static neighbour entries (no NDP on the wire), DAD and router solicitations
# off, and fixed ICMPv6 echo identifiers / payloads / flow labels, so that re-running the script
# reproduces the same bytes. Pcap record timestamps are rewritten to fixed values (see
# normalize_pcap) so the files themselves are byte-for-byte reproducible.
# See interop/fixtures/README.md for the topologies, addresses and what the kernel did.
#
# Requires root, iproute2 (ip, with seg6 support), tcpdump, ping (iputils >= 20210202 for -e),
# ethtool and python3. Cleans up its namespaces and temporary files on exit, error and Ctrl-C.
set -Eeuo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:-$HERE/fixtures}"
PREFIX="srmig-ix-$$-"
TMP="$(mktemp -d /tmp/srmig-ix.XXXXXX)"
NAMESPACES=()
CAPTURE_PIDS=()

log() { printf '[gen-kernel-fixtures] %s\n' "$*" >&2; }

cleanup() {
    local pid ns
    for pid in "${CAPTURE_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    CAPTURE_PIDS=()
    for ns in "${NAMESPACES[@]}"; do
        ip netns del "$ns" 2>/dev/null || true
    done
    NAMESPACES=()
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'log "failed at line $LINENO: $BASH_COMMAND"' ERR
trap 'log "interrupted"; exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# Preconditions
# ---------------------------------------------------------------------------------------------
if [[ $EUID -ne 0 ]]; then
    log "must run as root (network namespaces, tcpdump)"
    exit 1
fi
for tool in ip tcpdump ping python3 ethtool; do
    command -v "$tool" >/dev/null || { log "missing tool: $tool"; exit 1; }
done
mkdir -p "$OUT"

# ---------------------------------------------------------------------------------------------
# Fixed plan (documented in fixtures/README.md; mirrored in fixtures/manifest.json)
# ---------------------------------------------------------------------------------------------
# Link A: headend H <-> endpoint E (or the sink R in the headend topology)
H_MAC=02:00:00:00:0a:01;  H_ADDR=2001:db8:a::1
E_A_MAC=02:00:00:00:0a:02; E_A_ADDR=2001:db8:a::2
# Link B: endpoint E <-> next node N
E_B_MAC=02:00:00:00:0b:01; E_B_ADDR=2001:db8:b::1
N_MAC=02:00:00:00:0b:02;   N_ADDR=2001:db8:b::2
# Link C (router headend only): a VM-like source V <-> headend H (H is V's default gateway)
V_MAC=02:00:00:00:0c:10;   V_ADDR=2001:db8:c::10
H_C_MAC=02:00:00:00:0c:01; H_C_ADDR=2001:db8:c::1
# The "VM" prefix the headend steers into SRv6, and the VM address (lives on N)
VM_PREFIX=2001:db8:f00::/64
VM_ADDR=2001:db8:f00::10
# SIDs. fc00:1::/48 is E's locator ("source host S"), fc00:2::/48 is N's ("destination host D").
SID_END=fc00:1::e        # End
SID_END_X=fc00:1::e1     # End.X nh6 N
SID_END_DX6=fc00:1::d6   # End.DX6 nh6 N
SID_END_DT6=fc00:1::f6   # End.DT6 table 100 (legacy mode: no VRF in this kernel)
SID_NEXT=fc00:2::e       # a SID at N (the segment after E's)
# Probe traffic: two ICMPv6 echo requests and one UDP datagram per capture.
PING_IDENT=21330         # 0x5352, "SR" (ping -e wants decimal)
PING_FLOWLABEL=0x12345
PING_PATTERN=5352763600  # payload bytes 53 52 76 36 00 ... (8 bytes: too short for a timestamp)
UDP_SPORT=40000; UDP_DPORT=5000; UDP_PAYLOAD="srmig-interop"

ns() { printf '%s%s' "$PREFIX" "$1"; }
nsx() { local n; n="$(ns "$1")"; shift; ip netns exec "$n" "$@"; }

# Create a namespace with deterministic IPv6 settings (applied to "default" before any link
# exists in it, so every interface created later inherits them).
ns_add() {
    local name; name="$(ns "$1")"
    ip netns add "$name"
    NAMESPACES+=("$name")
    local conf
    for conf in all default; do
        nsx "$1" sysctl -qw "net.ipv6.conf.$conf.accept_dad=0" \
            "net.ipv6.conf.$conf.dad_transmits=0" \
            "net.ipv6.conf.$conf.router_solicitations=0" \
            "net.ipv6.conf.$conf.forwarding=1" \
            "net.ipv6.conf.$conf.seg6_enabled=1" \
            "net.ipv6.conf.$conf.accept_ra=0"
    done
    # Inner flow labels: none unless the application sets one (ping -F). Outer flow label of
    # seg6 encapsulation: copied from the inner packet (seg6_flowlabel=0, the default).
    nsx "$1" sysctl -qw net.ipv6.auto_flowlabels=0 net.ipv6.seg6_flowlabel=0
    nsx "$1" ip link set lo up
}

# veth pair between two namespaces, fixed MACs, up.
# link NS_A DEV_A MAC_A NS_B DEV_B MAC_B
link() {
    ip link add "$2" netns "$(ns "$1")" address "$3" type veth \
        peer name "$5" netns "$(ns "$4")" address "$6"
    local dev
    for dev in "$1:$2" "$4:$5"; do
        nsx "${dev%%:*}" sysctl -qw "net.ipv6.conf.${dev#*:}.seg6_enabled=1" \
            "net.ipv6.conf.${dev#*:}.forwarding=1" "net.ipv6.conf.${dev#*:}.accept_dad=0"
        # Compute checksums in software: with veth's default checksum offload the inner UDP
        # checksum is never filled in (CHECKSUM_PARTIAL) and would be wrong in the captures.
        nsx "${dev%%:*}" ethtool -K "${dev#*:}" tx off >/dev/null
        nsx "${dev%%:*}" ip link set "${dev#*:}" up
    done
}

# Static neighbour entry: no NS/NA ever appears on the wire.
neigh() { nsx "$1" ip -6 neigh replace "$2" lladdr "$3" dev "$4" nud permanent; }

# Start tcpdump (Ethernet link type, packet-buffered, immediate mode) and wait until it is
# listening. tcpdump stops by itself after COUNT frames (-c).
# capture_start NS DEV DIRECTION(in|out) FILE COUNT FILTER
capture_start() {
    local log_file="$TMP/tcpdump.$(basename "$4").log"
    # Not through nsx: a function would run in a subshell and $! would not be tcpdump's pid.
    # --immediate-mode: without it libpcap's TPACKET_V3 ring hands frames over only when a
    # block fills or times out, and frames still in the ring are lost when tcpdump is stopped.
    ip netns exec "$(ns "$1")" tcpdump -n -U --immediate-mode -Z root -i "$2" -Q "$3" \
        -y EN10MB -c "$5" -w "$4" "$6" 2>"$log_file" &
    CAPTURE_PIDS+=("$!")
    local i
    for i in $(seq 100); do
        grep -q "listening on" "$log_file" 2>/dev/null && return 0
        sleep 0.05
    done
    log "tcpdump on $1/$2 did not start:"; cat "$log_file" >&2
    return 1
}

# Wait (at most ~5 s) for every capture to reach its frame count, then stop any laggard with
# SIGTERM (on which tcpdump flushes and closes the file; background jobs of a non-interactive
# shell ignore SIGINT). A short capture is caught later by normalize_pcap's frame count.
capture_stop() {
    local pid i
    for pid in "${CAPTURE_PIDS[@]}"; do
        for i in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    CAPTURE_PIDS=()
}

# Send the probes from namespace $1 (source address $2) towards $VM_ADDR: 2 echo requests and
# 1 UDP datagram. Replies may or may not come back depending on the topology; only the requests
# matter.
send_probes() {
    nsx "$1" ping -6 -n -q -c 2 -i 0.2 -W 1 -e "$PING_IDENT" -F "$PING_FLOWLABEL" \
        -s 8 -p "$PING_PATTERN" -I "$2" "$VM_ADDR" >/dev/null 2>&1 || true
    nsx "$1" python3 - "$2" "$UDP_SPORT" "$VM_ADDR" "$UDP_DPORT" "$UDP_PAYLOAD" <<'PY'
import socket, sys
src, sport, dst, dport, payload = sys.argv[1:6]
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind((src, int(sport)))
s.sendto(payload.encode(), (dst, int(dport)))
PY
}

# Rewrite pcap record timestamps to 2026-01-01T00:00:00Z + i*1ms so files are reproducible.
# Fails if the capture does not hold exactly the expected number of frames.
normalize_pcap() {
    python3 - "$1" "$2" <<'PY'
import struct, sys
path, expected = sys.argv[1], int(sys.argv[2])
data = bytearray(open(path, "rb").read())
magic = struct.unpack_from("<I", data, 0)[0]
if magic != 0xA1B2C3D4:
    sys.exit(f"{path}: unexpected pcap magic {magic:#x}")
linktype = struct.unpack_from("<I", data, 20)[0]
if linktype != 1:
    sys.exit(f"{path}: link type {linktype}, expected 1 (Ethernet)")
off, n = 24, 0
while off < len(data):
    incl = struct.unpack_from("<I", data, off + 8)[0]
    struct.pack_into("<II", data, off, 1767225600, n * 1000)
    off += 16 + incl
    n += 1
if n != expected:
    sys.exit(f"{path}: captured {n} frames, expected {expected}")
open(path, "wb").write(data)
PY
}

# Move a finished capture into the output directory.
publish() { normalize_pcap "$TMP/$1" "$2"; install -m 0644 "$TMP/$1" "$OUT/$1"; log "wrote $OUT/$1 ($2 frames)"; }

# tcpdump filters. ip6[6] is the IPv6 Next Header: 43 = routing header, i.e. an SRv6 packet
# (no other extension header precedes the SRH in anything the kernel emits here). The H.Encaps.Red
# fixture may carry no SRH at all with one segment, but we use two, so it always has one.
FILTER_SRV6='ip6 and ip6[6] == 43'
# Decapsulated traffic towards the VM (End.DX6 / End.DT6 output): echo requests and UDP only.
FILTER_TO_VM="ip6 dst host $VM_ADDR and (udp or (icmp6 and ip6[40] == 128))"

# ---------------------------------------------------------------------------------------------
# Topology 1: headend.   [V (v0) -- link C -- (h1)] H (h0) ---- link A ---- (r0) R
# H steers $VM_PREFIX into SRv6; R is a silent sink (blackhole for the SIDs). With "router",
# the traffic comes from V and H is a router (seg6 encap on the forwarding path, like srmig's
# ingress for its VMs); without it, H originates the traffic itself.
# ---------------------------------------------------------------------------------------------
headend_topology() {
    if [[ ${1:-} == router ]]; then
        ns_add v
        ns_add h
        link v v0 "$V_MAC" h h1 "$H_C_MAC"
        nsx v ip -6 addr add "$V_ADDR/64" dev v0
        nsx h ip -6 addr add "$H_C_ADDR/64" dev h1
        neigh v "$H_C_ADDR" "$H_C_MAC" v0
        neigh h "$V_ADDR" "$V_MAC" h1
        nsx v ip -6 route add default via "$H_C_ADDR" dev v0
    else
        ns_add h
    fi
    ns_add r
    link h h0 "$H_MAC" r r0 "$E_A_MAC"
    nsx h ip -6 addr add "$H_ADDR/64" dev h0
    nsx r ip -6 addr add "$E_A_ADDR/64" dev r0
    neigh h "$E_A_ADDR" "$E_A_MAC" h0
    neigh r "$H_ADDR" "$H_MAC" r0
    nsx h ip -6 route add fc00::/16 via "$E_A_ADDR" dev h0
    nsx h ip sr tunsrc set "$H_ADDR"
    nsx r ip -6 route add blackhole fc00::/16
    nsx r ip -6 route add blackhole "$VM_PREFIX"
}

headend_teardown() {
    local ns
    for ns in "${NAMESPACES[@]}"; do ip netns del "$ns"; done
    NAMESPACES=()
}

# capture_headend BASENAME MODE: host-originated traffic, BASENAME.pcap (H's egress).
capture_headend() {
    local base="$1" mode="$2"
    headend_topology
    nsx h ip -6 route add "$VM_PREFIX" encap seg6 mode "$mode" segs "$SID_END,$SID_NEXT" dev h0
    capture_start h h0 out "$TMP/$base.pcap" 3 "$FILTER_SRV6"
    send_probes h "$H_ADDR"
    capture_stop
    publish "$base.pcap" 3
    headend_teardown
}

# capture_headend_router BASENAME MODE: traffic from V forwarded by H: BASENAME_in.pcap (H's
# ingress from V, plain IPv6) and BASENAME_out.pcap (H's egress, SRv6).
capture_headend_router() {
    local base="$1" mode="$2"
    headend_topology router
    nsx h ip -6 route add "$VM_PREFIX" encap seg6 mode "$mode" segs "$SID_END,$SID_NEXT" dev h0
    capture_start h h1 in "$TMP/${base}_in.pcap" 3 "$FILTER_TO_VM"
    capture_start h h0 out "$TMP/${base}_out.pcap" 3 "$FILTER_SRV6"
    send_probes v "$V_ADDR"
    capture_stop
    publish "${base}_in.pcap" 3
    publish "${base}_out.pcap" 3
    headend_teardown
}

# ---------------------------------------------------------------------------------------------
# Topology 2: endpoint.   H (h0) -- link A -- (e0) E (e1) -- link B -- (n0) N
# H encapsulates towards a SID of E; E runs one seg6local behavior; N holds the VM address and
# silently drops anything sent to N's own SIDs.
# ---------------------------------------------------------------------------------------------
endpoint_topology() {
    ns_add h; ns_add e; ns_add n
    link h h0 "$H_MAC" e e0 "$E_A_MAC"
    link e e1 "$E_B_MAC" n n0 "$N_MAC"
    nsx h ip -6 addr add "$H_ADDR/64" dev h0
    nsx e ip -6 addr add "$E_A_ADDR/64" dev e0
    nsx e ip -6 addr add "$E_B_ADDR/64" dev e1
    nsx n ip -6 addr add "$N_ADDR/64" dev n0
    nsx n ip -6 addr add "$VM_ADDR/128" dev lo
    neigh h "$E_A_ADDR" "$E_A_MAC" h0
    neigh e "$H_ADDR" "$H_MAC" e0
    neigh e "$N_ADDR" "$N_MAC" e1
    neigh n "$E_B_ADDR" "$E_B_MAC" n0
    nsx h ip -6 route add fc00::/16 via "$E_A_ADDR" dev h0
    nsx h ip sr tunsrc set "$H_ADDR"
    nsx e ip -6 route add fc00:2::/48 via "$N_ADDR" dev e1
    nsx e ip -6 route add "$VM_PREFIX" via "$N_ADDR" dev e1
    nsx e ip -6 route add "$VM_PREFIX" via "$N_ADDR" dev e1 table 100 # for End.DT6
    nsx n ip -6 route add default via "$E_B_ADDR" dev n0
    nsx n ip -6 route add blackhole fc00:2::/48
}

# capture_endpoint BASENAME HEADEND_MODE SEGS OUT_FILTER SEG6LOCAL_ARGS...
capture_endpoint() {
    local base="$1" mode="$2" segs="$3" out_filter="$4"
    shift 4
    endpoint_topology
    nsx h ip -6 route add "$VM_PREFIX" encap seg6 mode "$mode" segs "$segs" dev h0
    if ! nsx e ip -6 route add "$@" 2>"$TMP/seg6local.err"; then
        log "SKIP $base: kernel refused 'ip -6 route add $*': $(cat "$TMP/seg6local.err")"
        headend_teardown
        return 0
    fi
    capture_start e e0 in "$TMP/${base}_in.pcap" 3 "$FILTER_SRV6"
    capture_start e e1 out "$TMP/${base}_out.pcap" 3 "$out_filter"
    send_probes h "$H_ADDR"
    capture_stop
    publish "${base}_in.pcap" 3
    publish "${base}_out.pcap" 3
    headend_teardown
}

# ---------------------------------------------------------------------------------------------
# Captures
# ---------------------------------------------------------------------------------------------
log "kernel $(uname -r), $(ip -V)"

# Headends: H.Encaps, H.Insert, H.Encaps.Red (if the kernel and iproute2 know encap.red),
# host-originated and forwarded.
HAVE_RED=yes
headend_topology
if ! nsx h ip -6 route add "$VM_PREFIX" encap seg6 mode encap.red segs "$SID_END,$SID_NEXT" \
    dev h0 2>"$TMP/red.err"; then
    HAVE_RED=no
    log "SKIP h_encaps_red*, end_red*: mode encap.red not supported: $(cat "$TMP/red.err")"
fi
headend_teardown
capture_headend h_encaps encap
capture_headend h_insert inline
capture_headend_router h_encaps_fwd encap
capture_headend_router h_insert_fwd inline
if [[ $HAVE_RED == yes ]]; then
    capture_headend h_encaps_red encap.red
    capture_headend_router h_encaps_red_fwd encap.red
fi

# Endpoints. End and End.X forward to the next SID (at N); End.DX6 and End.DT6 decapsulate
# and forward the inner packet to the VM on N (their SID is the last segment: the kernel's
# End.DX6/End.DT6 refuse packets whose SRH still has Segments Left > 0).
capture_endpoint end encap "$SID_END,$SID_NEXT" "$FILTER_SRV6" \
    "$SID_END/128" encap seg6local action End dev e0
# The same End node fed with H.Insert and H.Encaps.Red packets.
capture_endpoint end_insert inline "$SID_END,$SID_NEXT" "$FILTER_SRV6" \
    "$SID_END/128" encap seg6local action End dev e0
if [[ $HAVE_RED == yes ]]; then
    capture_endpoint end_red encap.red "$SID_END,$SID_NEXT" "$FILTER_SRV6" \
        "$SID_END/128" encap seg6local action End dev e0
fi
capture_endpoint end_x encap "$SID_END_X,$SID_NEXT" "$FILTER_SRV6" \
    "$SID_END_X/128" encap seg6local action End.X nh6 "$N_ADDR" dev e0
capture_endpoint end_dx6 encap "$SID_END_DX6" "$FILTER_TO_VM" \
    "$SID_END_DX6/128" encap seg6local action End.DX6 nh6 "$N_ADDR" dev e0
# End.DT6 in legacy mode ("table"), looking the inner destination up in table 100.
# ("vrftable" mode needs a VRF device; this kernel is built without CONFIG_NET_VRF.)
capture_endpoint end_dt6 encap "$SID_END_DT6" "$FILTER_TO_VM" \
    "$SID_END_DT6/128" encap seg6local action End.DT6 table 100 dev e0

log "done: $(ls "$OUT"/*.pcap | wc -l) pcap files in $OUT"
