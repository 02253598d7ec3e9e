# Sourced by run.sh into the kernel's srv6_hencap_red_l3vpn_test.sh, before its main part:
# router rt-1 (SRMIG_RT) becomes srmigd, rt-2, rt-3, rt-4 and every host stay Linux. The
# test's topology, addresses, SIDs, policies and checks are unchanged.
#
# rt-1 is where most of the test happens: the headend of hs-1's H.Encaps.Red policies (IPv6
# with three SIDs: the first in the DA, two in the SRH; IPv4 with one SID: no SRH at all), the
# End.DT46 of hs-2's traffic to hs-1 (an SRH-less IPv6 packet, and IPv4 behind an SRH via
# rt-4 and rt-3), and an End on hs-4's path to hs-3. The mapping, kernel -> srmigd:
#   veth-rt-1-N with fcf0:0:p:q::1/64       -> port veth-rt-1-N (uplink), that address, and
#                                              the link's /64
#   route fcff:N::/32 via rt-N (localsid)   -> route fcff:N::/32 -> veth-rt-1-N
#   seg6local End / End.DT46 vrftable 100   -> SIDs fcff:1::e End, fcff:1::d46 End.DT46
#                                              table 100; locator fcff:1::/32
#   vrf-100 with veth-t100, cafe::254/64, 10.0.0.254/24, proxy_ndp / proxy_arp
#                                           -> port veth-t100 in table 100, its address and
#                                              ipv4_address, proxy_ndp / proxy_arp for the
#                                              steered hs-2, the /64 and /24 in table 100
#   route cafe::2 (10.0.0.2) vrf vrf-100 encap seg6 mode encap.red segs ...
#                                           -> policy (H.Encaps.Red, the same segments) and
#                                              steering in table 100
#   unreachable defaults in vrf-100         -> nothing: a table without a route drops
#
# The Linux routers on a kernel without VRF devices (SRMIG_NOVRF=1; see l3vpn.sh for the
# reasons, the same replacements are used): vrf-100 is table 100 selected by `ip rule iif
# veth-t100` and `ip rule to <the attached host>`; the seg6 encap routes are in table 100 with
# a core link as their device (as the test's comment asks, not the host's port, for proxy
# ARP); End's device is veth-t100; End.DT46 vrftable 100 is End.DT6 table 100 for IPv6 inner
# packets and End.DX4 nh4 10.0.0.N (the router's one host) for IPv4 ones, told apart by an nft
# mark on IPv4-in-IPv6 (with or without an SRH) and `ip rule fwmark` to a second localsid
# table.

: "${SRMIG_RT:=1}"
: "${SRMIGD:?SRMIGD must name the srmigd binary}"
: "${SRMIG_WORK:?SRMIG_WORK must name a work directory}"
: "${SRMIG_NOVRF:=0}"

SRMIG_LOCALSID4_TABLE_ID=91
SRMIG_NOVRF_MARK=4

SRMIG_PORTS=()   # name|address|peer_ns|peer_if|table
SRMIG_ROUTES=()  # prefix|port|table
SRMIG_SIDS=()    # sid|behavior|table
SRMIG_POLICY=()  # prefix|segments (comma-separated)
SRMIG_PID=""

eval "kernel_setup_rt_networking() $(declare -f setup_rt_networking | tail -n +2)"
eval "kernel_setup_rt_local_sids() $(declare -f setup_rt_local_sids | tail -n +2)"
eval "kernel_setup_hs() $(declare -f setup_hs | tail -n +2)"
eval "kernel___setup_rt_policy() $(declare -f __setup_rt_policy | tail -n +2)"
eval "kernel_setup() $(declare -f setup | tail -n +2)"
eval "kernel_cleanup() $(declare -f cleanup | tail -n +2)"

srmig_rt_ns()
{
	get_rtname "${SRMIG_RT}"
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
		SRMIG_PORTS+=("${devname}|${net_prefix}::${rt}|$(get_rtname "${neigh}")|veth-rt-${neigh}-${rt}|0")
		SRMIG_ROUTES+=("${net_prefix}::/64|${devname}|0")
	done
	ip -netns "${nsname}" link set lo up
}

setup_hs()
{
	local hs="$1" rt="$2"
	if [ "${rt}" != "${SRMIG_RT}" ] && [ "${SRMIG_NOVRF}" != 1 ]; then
		kernel_setup_hs "$@"
		return
	fi
	local hsname rtname
	hsname="$(get_hsname "${hs}")"
	rtname="$(get_rtname "${rt}")"

	# The host, exactly as the test sets it up.
	ip netns exec "${hsname}" sysctl -wq net.ipv6.conf.all.accept_dad=0
	ip netns exec "${hsname}" sysctl -wq net.ipv6.conf.default.accept_dad=0
	ip -netns "${hsname}" link add veth0 type veth \
		peer name "${RT2HS_DEVNAME}" netns "${rtname}"
	ip -netns "${hsname}" addr add "${IPv6_HS_NETWORK}::${hs}/64" dev veth0 nodad
	ip -netns "${hsname}" addr add "${IPv4_HS_NETWORK}.${hs}/24" dev veth0
	ip -netns "${hsname}" link set veth0 up
	ip -netns "${hsname}" link set lo up

	if [ "${rt}" = "${SRMIG_RT}" ]; then
		srmig_port_up "${rtname}" "${RT2HS_DEVNAME}"
		SRMIG_PORTS+=("${RT2HS_DEVNAME}|${IPv6_HS_NETWORK}::254|${hsname}|veth0|${VRF_TID}")
		SRMIG_ROUTES+=("${IPv6_HS_NETWORK}::/64|${RT2HS_DEVNAME}|${VRF_TID}")
		SRMIG_ROUTES+=("${IPv4_HS_NETWORK}.0/24|${RT2HS_DEVNAME}|${VRF_TID}")
		return 0
	fi

	# The Linux router without VRF devices: table VRF_TID chosen by ip rules.
	local dev=${RT2HS_DEVNAME} tid=${VRF_TID} fam
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
	done
	ip netns exec "${rtname}" sysctl -wq "net.ipv6.conf.${dev}.proxy_ndp=1"
	ip netns exec "${rtname}" sysctl -wq "net.ipv4.conf.${dev}.proxy_arp=1"
	ip netns exec "${rtname}" sysctl -wq "net.ipv4.conf.${dev}.rp_filter=0"
}

setup_rt_local_sids()
{
	local rt="$1" rt_neighs="$2"
	local nsname neigh
	nsname="$(get_rtname "${rt}")"
	if [ "${rt}" = "${SRMIG_RT}" ]; then
		for neigh in ${rt_neighs}; do
			SRMIG_ROUTES+=("${VPN_LOCATOR_SERVICE}:${neigh}::/32|veth-rt-${rt}-${neigh}|0")
		done
		SRMIG_SIDS+=("${VPN_LOCATOR_SERVICE}:${rt}::${END_FUNC}|End|")
		SRMIG_SIDS+=("${VPN_LOCATOR_SERVICE}:${rt}::${DT46_FUNC}|End.DT46|${VRF_TID}")
		return 0
	fi
	if [ "${SRMIG_NOVRF}" != 1 ]; then
		kernel_setup_rt_local_sids "$@"
		return
	fi
	local net_prefix devname dev=${RT2HS_DEVNAME} fam
	for neigh in ${rt_neighs}; do
		devname="veth-rt-${rt}-${neigh}"
		net_prefix="$(get_network_prefix "${rt}" "${neigh}")"
		ip -netns "${nsname}" -6 route add "${VPN_LOCATOR_SERVICE}:${neigh}::/32" \
			table "${LOCALSID_TABLE_ID}" via "${net_prefix}::${neigh}" dev "${devname}"
	done
	ip -netns "${nsname}" -6 route add "${VPN_LOCATOR_SERVICE}:${rt}::${END_FUNC}" \
		table "${LOCALSID_TABLE_ID}" encap seg6local action End dev "${dev}"
	# End.DT46 vrftable: End.DT6 table for IPv6, End.DX4 to the router's host for IPv4.
	ip -netns "${nsname}" -6 route add "${VPN_LOCATOR_SERVICE}:${rt}::${DT46_FUNC}" \
		table "${LOCALSID_TABLE_ID}" encap seg6local action End.DT6 table "${VRF_TID}" \
		dev "${dev}"
	ip -netns "${nsname}" -6 route add "${VPN_LOCATOR_SERVICE}:${rt}::${DT46_FUNC}" \
		table "${SRMIG_LOCALSID4_TABLE_ID}" encap seg6local action End.DX4 \
		nh4 "${IPv4_HS_NETWORK}.${rt}" dev "${dev}"
	ip netns exec "${nsname}" nft -f - <<EOF
table ip6 srmig-dt46 {
	chain prerouting {
		type filter hook prerouting priority mangle;
		ip6 nexthdr 4 meta mark set ${SRMIG_NOVRF_MARK}
		ip6 nexthdr 43 @nh,320,8 4 meta mark set ${SRMIG_NOVRF_MARK}
	}
}
EOF
	ip -netns "${nsname}" -6 rule add fwmark "${SRMIG_NOVRF_MARK}" \
		to "${VPN_LOCATOR_SERVICE}::/16" lookup "${SRMIG_LOCALSID4_TABLE_ID}" prio 998
	ip -netns "${nsname}" -6 rule add to "${VPN_LOCATOR_SERVICE}::/16" \
		lookup "${LOCALSID_TABLE_ID}" prio 999
	for fam in -6 -4; do
		ip -netns "${nsname}" "${fam}" route add unreachable default metric 4278198272 \
			table "${VRF_TID}"
	done
}

__setup_rt_policy()
{
	local dst="$1" encap_rt="$2" end_rts="$3" dec_rt="$4" mode="$5" traffic="$6"
	if [ "${encap_rt}" != "${SRMIG_RT}" ] && [ "${SRMIG_NOVRF}" != 1 ]; then
		kernel___setup_rt_policy "$@"
		return
	fi
	local nsname policy='' n
	nsname="$(get_rtname "${encap_rt}")"
	for n in ${end_rts}; do
		policy="${policy}${VPN_LOCATOR_SERVICE}:${n}::${END_FUNC},"
	done
	policy="${policy}${VPN_LOCATOR_SERVICE}:${dec_rt}::${DT46_FUNC}"

	if [ "${encap_rt}" = "${SRMIG_RT}" ]; then
		[ "${mode}" = encap.red ] || {
			echo "hencap_red.sh: mode ${mode} is not mapped" >&2
			return 1
		}
		if [ "${traffic}" -eq 6 ]; then
			SRMIG_POLICY+=("${IPv6_HS_NETWORK}::${dst}/128|${policy}")
		else
			SRMIG_POLICY+=("${IPv4_HS_NETWORK}.${dst}/32|${policy}")
		fi
		return 0
	fi

	# Without VRF devices: the route in table VRF_TID, on a core link.
	local core
	core=$(ip -netns "${nsname}" -o link show | awk -F': ' '$2 ~ /^veth-rt-/ {sub(/@.*/, "", $2); print $2; exit}')
	if [ "${traffic}" -eq 6 ]; then
		ip -netns "${nsname}" -6 route add "${IPv6_HS_NETWORK}::${dst}" table "${VRF_TID}" \
			encap seg6 mode "${mode}" segs "${policy}" dev "${core}"
		ip -netns "${nsname}" -6 neigh add proxy "${IPv6_HS_NETWORK}::${dst}" \
			dev "${RT2HS_DEVNAME}"
	else
		ip -netns "${nsname}" -4 route add "${IPv4_HS_NETWORK}.${dst}" table "${VRF_TID}" \
			encap seg6 mode "${mode}" segs "${policy}" dev "${core}"
	fi
}

srmig_node_toml()
{
	local first=${SRMIG_PORTS[0]} rest name address peer_ns peer_if table prefix port
	local sid behavior segs ndp="" arp="" i=0
	for rest in "${SRMIG_POLICY[@]}"; do
		prefix=${rest%%|*}
		if [[ "${prefix}" == *:* ]]; then
			ndp+="\"${prefix%/*}\", "
		else
			arp+="\"${prefix%/*}\", "
		fi
	done
	cat <<EOF
# Generated by interop/kernel-selftests for rt-${SRMIG_RT} of $(basename "$0").
locator = "${VPN_LOCATOR_SERVICE}:${SRMIG_RT}::/32"
source_address = "$(echo "${first}" | cut -d'|' -f2)"
infrastructure_prefixes = ["${IPv6_RT_NETWORK}::/16", "${VPN_LOCATOR_SERVICE}::/16"]
gateway = { address = "fe80::1", mac = "02:00:00:00:00:01" }
EOF
	for rest in "${SRMIG_PORTS[@]}"; do
		IFS='|' read -r name address peer_ns peer_if table <<<"${rest}"
		cat <<EOF

[[ports]]
name = "${name}"
kind = "uplink"
mac = "$(srmig_mac "$(srmig_rt_ns)" "${name}")"
peer_mac = "$(srmig_mac "${peer_ns}" "${peer_if}")"
address = "${address}"
EOF
		if [ "${table}" != 0 ]; then
			cat <<EOF
table = ${table}
ipv4_address = "${IPv4_HS_NETWORK}.254"
proxy_ndp = [${ndp%, }]
proxy_arp = [${arp%, }]
EOF
		fi
	done
	for rest in "${SRMIG_ROUTES[@]}"; do
		IFS='|' read -r prefix port table <<<"${rest}"
		printf '\n[[routes]]\nprefix = "%s"\nport = "%s"\ntable = %s\n' \
			"${prefix}" "${port}" "${table}"
	done
	for rest in "${SRMIG_POLICY[@]}"; do
		IFS='|' read -r prefix segs <<<"${rest}"
		i=$((i + 1))
		printf '\n[[policies]]\nname = "vpn-%s"\nheadend = "H.Encaps.Red"\nsegments = ["%s"]\n' \
			"${i}" "${segs//,/\", \"}"
		printf '\n[[steering]]\nprefix = "%s"\npolicy = "vpn-%s"\ntable = %s\n' \
			"${prefix}" "${i}" "${VRF_TID}"
	done
	for rest in "${SRMIG_SIDS[@]}"; do
		IFS='|' read -r sid behavior table <<<"${rest}"
		printf '\n[[sids]]\nsid = "%s"\nbehavior = "%s"\n' "${sid}" "${behavior}"
		[ -n "${table}" ] && printf 'table = %s\n' "${table}"
	done
	return 0
}

. "$(dirname "${BASH_SOURCE[0]}")/srmigd-router.sh"
