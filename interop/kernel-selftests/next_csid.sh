# Sourced by run.sh into the kernel's srv6_end_next_csid_l3vpn_test.sh and
# srv6_end_x_next_csid_l3vpn_test.sh, before their main part: router rt-3 (SRMIG_RT; rt-4
# works too, rt-1 and rt-2 are not mapped) becomes srmigd, the other routers and both hosts
# stay Linux. The tests' topology, addresses, SIDs, C-SID containers, policies and checks are
# unchanged.
#
# Why rt-3: it is the router the NEXT-C-SID flavor is tested on. In the End test every VPN
# path crosses its End NEXT-C-SID SID fcbb:0:300::/48 (block 32, node 16): the IPv6 policies'
# single C-SID container (fcbb:0:400:300:200:d46:: and fcbb:0:300:400:100:d46::) has a non-zero
# argument there, so rt-3 shifts the next C-SID into place without any SRH; the IPv4 policies'
# container fcbb:0:300:: has a zero argument, so rt-3 falls back to End on the SRH
# (fcff:N::d46). In the End.X test rt-3's End.X NEXT-C-SID (adjacency rt-4) does both on three
# of the four paths (shift on hs-1 -> hs-2 IPv6, SRH on IPv4 both ways), and must send to
# rt-4 although its routes lead to rt-2 or rt-1 directly. rt-1 and rt-2 are the VPN ends
# (H.Encaps.Red, End.DT46 into the tenant), which the other L3VPN tests already run srmigd
# as; and the tests' C-SID container configuration checks run `ip route add ... seg6local`
# on rt-1: they test the kernel's netlink validation, so they stay with a Linux rt-1.
#
# The mapping, kernel -> srmigd (rt-3):
#   veth-rt-3-N with fcf0:0:p:q::3/64     -> port veth-rt-3-N (uplink), that address and the
#                                            link's /64
#   route fcff:N::/32 via rt-N (localsid)  -> route fcff:N::/32 -> veth-rt-3-N
#   route fcbb:0:N00::/48 via rt-N         -> route fcbb:0:N00::/48 -> veth-rt-3-N
#   fcbb:0:300::/48 End flavors next-csid lblen 32 nflen 16
#                                          -> SID fcbb:0:300:: End, flavors NEXT-C-SID,
#                                             locator_block_len 32, locator_node_len 16;
#                                             locator fcbb:0:300::/48
#   ... End.X nh6 fcf0:0:3:4::4 flavors next-csid ... (set_end_x_nextcsid, replacing it)
#                                          -> the same SID as End.X, nexthop fcf0:0:3:4::4,
#                                             port veth-rt-3-4
#   rules to fcff::/16 and fcbb::/32 lookup 90, the dummy device
#                                          -> nothing (srmigd's SIDs are its own, its routes
#                                             one table)
#
# The Linux routers: their dummy dum0 (an anchor for seg6local routes) is a veth of that name
# on a kernel without CONFIG_DUMMY (bin-nodummy/ip, as in end_flavors.sh). Without VRF devices
# (SRMIG_NOVRF=1, see l3vpn.sh and docs/conformance.md) rt-1 and rt-2 get the same
# replacements as in hencap_red.sh: vrf-100 is table 100 chosen by `ip rule iif veth-t100` and
# `ip rule to <the attached host>` (addresses noprefixroute, connected routes and the
# unreachable defaults in table 100); the encap.red routes are in table 100 with a core link
# as device; End.DT46 vrftable 100 on a decapsulation SID is End.DT6 table 100 for IPv6 inner
# packets and End.DX4 nh4 10.0.0.N (the router's one host) for IPv4 ones, the latter in
# localsid table 92 (91 is the tests' own C-SID container test table), chosen by
# `ip rule fwmark 4 to <SID>` after an nft rule marks IPv4-in-IPv6 (with or without an SRH).

: "${SRMIG_RT:=3}"
: "${SRMIGD:?SRMIGD must name the srmigd binary}"
: "${SRMIG_WORK:?SRMIG_WORK must name a work directory}"
: "${SRMIG_NOVRF:=0}"

case "${SRMIG_RT}" in
3 | 4) ;;
*)
	echo "next_csid.sh: srmigd as rt-${SRMIG_RT} is not mapped (rt-3 or rt-4)" >&2
	exit 1
	;;
esac
case "$(basename "$0")" in
srv6_end_next_csid_l3vpn_test.sh) SRMIG_END_X=0 ;;
srv6_end_x_next_csid_l3vpn_test.sh) SRMIG_END_X=1 ;;
*)
	echo "next_csid.sh: unknown test $(basename "$0")" >&2
	exit 1
	;;
esac

SRMIG_LOCALSID4_TABLE_ID=92
SRMIG_NOVRF_MARK=4

SRMIG_PORTS=()   # name|address|peer_ns|peer_if
SRMIG_ROUTES=()  # prefix|port
SRMIG_SID=""     # End or End.X
SRMIG_ADJ=""     # End.X: nexthop|port
SRMIG_PID=""

# The Linux routers' dummy device on a kernel without dummy devices.
if ! ip link add srmig-dumtest type dummy 2>/dev/null; then
	SRMIG_REAL_IP=$(command -v ip)
	export SRMIG_REAL_IP
	export PATH="$(dirname "${BASH_SOURCE[0]}")/bin-nodummy:${PATH}"
else
	ip link del srmig-dumtest
fi

eval "kernel_setup_rt_networking() $(declare -f setup_rt_networking | tail -n +2)"
eval "kernel_setup_rt_local_sids() $(declare -f setup_rt_local_sids | tail -n +2)"
eval "kernel_setup_hs() $(declare -f setup_hs | tail -n +2)"
eval "kernel___setup_l3vpn() $(declare -f __setup_l3vpn | tail -n +2)"
if [ "${SRMIG_END_X}" = 1 ]; then
	eval "kernel_set_end_x_nextcsid() $(declare -f set_end_x_nextcsid | tail -n +2)"
fi
eval "kernel_host_vpn_tests() $(declare -f host_vpn_tests | tail -n +2)"
eval "kernel_setup() $(declare -f setup | tail -n +2)"
eval "kernel_cleanup() $(declare -f cleanup | tail -n +2)"

srmig_rt_ns()
{
	get_rtname "${SRMIG_RT}"
}

# The kernel test's prefixes are spelled out in full (fcbb:0000:0300:0000:...): srmigd's
# node.toml gets them in the usual short form.
srmig_canon_net()
{
	python3 -c 'import ipaddress,sys; print(ipaddress.ip_network(sys.argv[1]))' "$1"
}

srmig_port_up()
{
	local ns=$1 ifname=$2
	ip netns exec "${ns}" sysctl -wq "net.ipv6.conf.${ifname}.disable_ipv6=1"
	ip -netns "${ns}" link set "${ifname}" up
}

setup_rt_networking()
{
	local rt="$1" rt_neighs="$2"
	if [ "${rt}" != "${SRMIG_RT}" ]; then
		kernel_setup_rt_networking "$@"
		return
	fi
	local nsname neigh devname net_prefix
	nsname="$(get_rtname "${rt}")"
	for neigh in ${rt_neighs}; do
		devname="veth-rt-${rt}-${neigh}"
		net_prefix="$(get_network_prefix "${rt}" "${neigh}")"
		srmig_port_up "${nsname}" "${devname}"
		SRMIG_PORTS+=("${devname}|${net_prefix}::${rt}|$(get_rtname "${neigh}")|veth-rt-${neigh}-${rt}")
		SRMIG_ROUTES+=("${net_prefix}::/64|${devname}")
	done
	ip -netns "${nsname}" link set lo up
}

setup_rt_local_sids()
{
	local rt="$1" rt_neighs="$2"
	if [ "${rt}" != "${SRMIG_RT}" ]; then
		kernel_setup_rt_local_sids "$@"
		return
	fi
	local neigh
	for neigh in ${rt_neighs}; do
		SRMIG_ROUTES+=("${VPN_LOCATOR_SERVICE}:${neigh}::/32|veth-rt-${rt}-${neigh}")
		SRMIG_ROUTES+=("$(srmig_canon_net "$(build_lcnode_func_prefix "${neigh}")")|veth-rt-${rt}-${neigh}")
	done
	# The End test's routers have the End NEXT-C-SID SID; the End.X test's get End.X from
	# set_end_x_nextcsid only.
	[ "${SRMIG_END_X}" = 1 ] || SRMIG_SID=End
	return 0
}

set_end_x_nextcsid()
{
	local rt="$1" adj="$2"
	if [ "${rt}" != "${SRMIG_RT}" ]; then
		kernel_set_end_x_nextcsid "$@"
		return
	fi
	SRMIG_SID=End.X
	SRMIG_ADJ="$(get_network_prefix "${rt}" "${adj}")::${adj}|veth-rt-${rt}-${adj}"
}

setup_hs()
{
	local hs="$1" rt="$2"
	if [ "${rt}" = "${SRMIG_RT}" ]; then
		echo "next_csid.sh: a host on srmigd's router is not mapped" >&2
		return 1
	fi
	if [ "${SRMIG_NOVRF}" != 1 ]; then
		kernel_setup_hs "$@"
		return
	fi
	local hsname rtname dev=${RT2HS_DEVNAME} tid=${VRF_TID} fam
	hsname="$(get_hsname "${hs}")"
	rtname="$(get_rtname "${rt}")"

	# The host, exactly as the test sets it up.
	ip netns exec "${hsname}" sysctl -wq net.ipv6.conf.all.accept_dad=0
	ip netns exec "${hsname}" sysctl -wq net.ipv6.conf.default.accept_dad=0
	ip -netns "${hsname}" link add veth0 type veth peer name "${dev}" netns "${rtname}"
	ip -netns "${hsname}" addr add "${IPv6_HS_NETWORK}::${hs}/64" dev veth0 nodad
	ip -netns "${hsname}" addr add "${IPv4_HS_NETWORK}.${hs}/24" dev veth0
	ip -netns "${hsname}" link set veth0 up
	ip -netns "${hsname}" link set lo up

	# The router without VRF devices: table VRF_TID chosen by ip rules.
	ip -netns "${rtname}" link set "${dev}" up
	ip -netns "${rtname}" addr add "${IPv6_HS_NETWORK}::254/64" dev "${dev}" nodad noprefixroute
	ip -netns "${rtname}" addr add "${IPv4_HS_NETWORK}.254/24" dev "${dev}" noprefixroute
	ip -netns "${rtname}" -6 route add "${IPv6_HS_NETWORK}::/64" dev "${dev}" table "${tid}"
	ip -netns "${rtname}" -4 route add "${IPv4_HS_NETWORK}.0/24" dev "${dev}" table "${tid}" \
		proto kernel scope link src "${IPv4_HS_NETWORK}.254"
	ip -netns "${rtname}" -6 rule add to "${IPv6_HS_NETWORK}::${hs}" lookup "${tid}" prio 1001
	ip -netns "${rtname}" -4 rule add to "${IPv4_HS_NETWORK}.${hs}" lookup "${tid}" prio 1001
	for fam in -6 -4; do
		ip -netns "${rtname}" "${fam}" rule add iif "${dev}" lookup "${tid}" prio 1000
		ip -netns "${rtname}" "${fam}" route add unreachable default metric 4278198272 \
			table "${tid}"
	done
	ip netns exec "${rtname}" sysctl -wq "net.ipv6.conf.${dev}.proxy_ndp=1"
	ip netns exec "${rtname}" sysctl -wq "net.ipv4.conf.${dev}.proxy_arp=1"
	ip netns exec "${rtname}" sysctl -wq "net.ipv4.conf.${dev}.rp_filter=0"
}

# The kernel's __setup_l3vpn on routers without VRF devices (the SIDs and policies computed
# as there).
__setup_l3vpn()
{
	local src="$1" dst="$2" end_rts="$3" mode="$4" traffic="$5"
	if [ "${src}" = "${SRMIG_RT}" ] || [ "${dst}" = "${SRMIG_RT}" ]; then
		echo "next_csid.sh: a VPN end on srmigd's router is not mapped" >&2
		return 1
	fi
	if [ "${SRMIG_NOVRF}" != 1 ]; then
		kernel___setup_l3vpn "$@"
		return
	fi
	local rtsrc_nsname rtdst_nsname container lcnfunc dt policy decapsid n core
	rtsrc_nsname="$(get_rtname "${src}")"
	rtdst_nsname="$(get_rtname "${dst}")"
	container="${LCBLOCK_ADDR}"
	for n in ${end_rts}; do
		lcnfunc="$(build_csid "${n}")"
		container="${container}${lcnfunc}"
	done
	if [ "${mode}" -eq 1 ]; then
		dt="$(build_csid "${dst}")${DT46_FUNC}"
		container="${container}${dt}"
		policy="$(build_ipv6_addr "${container}")"
		decapsid="$(build_ipv6_addr "${LCBLOCK_ADDR}${dt}")"
	else
		decapsid="${VPN_LOCATOR_SERVICE}:${dst}::${DT46_FUNC}"
		policy="$(build_ipv6_addr "${container}"),${decapsid}"
	fi

	# The encap routes in table VRF_TID, on a core link (the test's device is vrf-100).
	core=$(ip -netns "${rtsrc_nsname}" -o link show |
		awk -F': ' '$2 ~ /^veth-rt-/ {sub(/@.*/, "", $2); print $2; exit}')
	if [ "${traffic}" -eq 6 ]; then
		ip -netns "${rtsrc_nsname}" -6 route add "${IPv6_HS_NETWORK}::${dst}" \
			table "${VRF_TID}" encap seg6 mode "${HEADEND_ENCAP}" segs "${policy}" \
			dev "${core}"
		ip -netns "${rtsrc_nsname}" -6 neigh add proxy "${IPv6_HS_NETWORK}::${dst}" \
			dev "${RT2HS_DEVNAME}"
	else
		ip -netns "${rtsrc_nsname}" -4 route add "${IPv4_HS_NETWORK}.${dst}" \
			table "${VRF_TID}" encap seg6 mode "${HEADEND_ENCAP}" segs "${policy}" \
			dev "${core}"
	fi

	# End.DT46 vrftable: End.DT6 table for IPv6, End.DX4 to the router's host for IPv4.
	ip -netns "${rtdst_nsname}" -6 route add "${decapsid}" table "${LOCALSID_TABLE_ID}" \
		encap seg6local action End.DT6 table "${VRF_TID}" dev "${RT2HS_DEVNAME}"
	ip -netns "${rtdst_nsname}" -6 route add "${decapsid}" \
		table "${SRMIG_LOCALSID4_TABLE_ID}" encap seg6local action End.DX4 \
		nh4 "${IPv4_HS_NETWORK}.${dst}" dev "${RT2HS_DEVNAME}"
	ip -netns "${rtdst_nsname}" -6 rule add fwmark "${SRMIG_NOVRF_MARK}" to "${decapsid}" \
		lookup "${SRMIG_LOCALSID4_TABLE_ID}" prio 998
	ip netns exec "${rtdst_nsname}" nft list table ip6 srmig-dt46 &>/dev/null && return 0
	ip netns exec "${rtdst_nsname}" nft -f - <<EOF
table ip6 srmig-dt46 {
	chain prerouting {
		type filter hook prerouting priority mangle;
		ip6 nexthdr 4 meta mark set ${SRMIG_NOVRF_MARK}
		ip6 nexthdr 43 @nh,320,8 4 meta mark set ${SRMIG_NOVRF_MARK}
	}
}
EOF
}

# What srmigd did during the VPN checks (its metrics, read on its API socket): packets at its
# SID and sent per port, printed after the checks. The checks cannot tell End.X from End
# (both reach the next router); the port counts show where End.X sent the packets.
srmig_counters()
{
	command -v curl >/dev/null || return 0
	curl -s --max-time 2 --unix-socket "${SRMIG_WORK}/srmigd.sock" http://srmigd/metrics |
		awk '/^srmig_sid_packets_total|^srmig_port_tx_packets_total/ {print $1, $2}'
}

host_vpn_tests()
{
	local before after
	before=$(srmig_counters)
	kernel_host_vpn_tests "$@"
	after=$(srmig_counters)
	python3 - "${before}" "${after}" "${SRMIG_RT}" <<'PY'
import re, sys
def parse(text):
    return {line.rsplit(" ", 1)[0]: int(line.rsplit(" ", 1)[1]) for line in text.splitlines()}
before, after = parse(sys.argv[1]), parse(sys.argv[2])
if not after:
    sys.exit(0)
diff = {k: v - before.get(k, 0) for k, v in sorted(after.items())}
sids = [f"{m[1]} ({m[2]}) {d}" for k, d in diff.items()
        if (m := re.match(r'srmig_sid_packets_total\{sid="([^"]*)",behavior="([^"]*)"', k))]
ports = [f"{m[1]} {d}" for k, d in diff.items()
         if (m := re.match(r'srmig_port_tx_packets_total\{port="([^"]*)"', k))]
print(f"srmigd counters (rt-{sys.argv[3]}) during the VPN checks: packets at SID "
      + ", ".join(sids) + "; sent on " + ", ".join(ports))
PY
}

srmig_node_toml()
{
	local first=${SRMIG_PORTS[0]} rest name address peer_ns peer_if prefix port sid
	local nexthop adjport
	sid=$(srmig_canon_net "$(build_lcnode_func_prefix "${SRMIG_RT}")")
	cat <<EOF
# Generated by interop/kernel-selftests for rt-${SRMIG_RT} of $(basename "$0").
locator = "${sid}"
source_address = "$(echo "${first}" | cut -d'|' -f2)"
infrastructure_prefixes = ["${IPv6_RT_NETWORK}::/16"]
gateway = { address = "fe80::1", mac = "02:00:00:00:00:01" }
EOF
	for rest in "${SRMIG_PORTS[@]}"; do
		IFS='|' read -r name address peer_ns peer_if <<<"${rest}"
		cat <<EOF

[[ports]]
name = "${name}"
kind = "uplink"
mac = "$(srmig_mac "$(srmig_rt_ns)" "${name}")"
peer_mac = "$(srmig_mac "${peer_ns}" "${peer_if}")"
address = "${address}"
EOF
	done
	for rest in "${SRMIG_ROUTES[@]}"; do
		IFS='|' read -r prefix port <<<"${rest}"
		printf '\n[[routes]]\nprefix = "%s"\nport = "%s"\n' "${prefix}" "${port}"
	done
	[ -n "${SRMIG_SID}" ] || return 0
	printf '\n[[sids]]\nsid = "%s"\nbehavior = "%s"\n' "${sid%/*}" "${SRMIG_SID}"
	printf 'flavors = ["NEXT-C-SID"]\nlocator_block_len = %s\nlocator_node_len = %s\n' \
		"${LCBLOCK_BLEN}" "${LCNODEFUNC_BLEN}"
	if [ "${SRMIG_SID}" = End.X ]; then
		IFS='|' read -r nexthop adjport <<<"${SRMIG_ADJ}"
		printf 'nexthop = "%s"\nport = "%s"\n' "${nexthop}" "${adjport}"
	fi
	return 0
}

. "$(dirname "${BASH_SOURCE[0]}")/srmigd-router.sh"
