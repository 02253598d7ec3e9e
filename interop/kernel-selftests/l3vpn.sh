# Sourced by run.sh into the kernel's srv6_end_dt6_l3vpn_test.sh, srv6_end_dt4_l3vpn_test.sh
# and srv6_end_dt46_l3vpn_test.sh, before their main part: router rt-1 (SRMIG_RT) becomes
# srmigd, rt-2 and every host stay Linux. The tests' topology, addresses, SIDs and checks are
# unchanged. The three tests differ only in the tenant address families (IPv6_HS_NETWORK,
# IPv4_HS_NETWORK) and the decapsulating behavior (End.DT6, End.DT4, End.DT46), so one
# override serves them.
#
# The setup functions are wrapped: for srmigd's router they wire the same links and record
# what the kernel would be told (VRF devices, seg6 encap routes, seg6local End.DT* routes,
# proxy NDP / ARP); srmigd starts with the node.toml generated from the records
# (srmig_node_toml) after the test's setup and stops in its cleanup. The mapping, kernel ->
# srmigd:
#   vrf-T with veth-tT enslaved            -> port veth-tT, kind uplink, table = T
#   addr cafe::254/64, 10.0.0.254/24 on veth-tT
#                                          -> the port's address and ipv4_address (answered
#                                             to NDP / ARP and ping)
#   neigh add proxy cafe::H dev veth-tT    -> the port's proxy_ndp
#   proxy_arp=1 on veth-tT (answers for the hosts routed elsewhere: the steered ones)
#                                          -> the port's proxy_arp, the steered 10.0.0.H
#   cafe::/64, 10.0.0.0/24 connected in vrf-T
#                                          -> routes -> veth-tT in table T
#   route cafe::H/128 (10.0.0.H/32) vrf vrf-T encap seg6 mode encap segs SID
#                                          -> policy (H.Encaps [SID]) + steering in table T
#   route SID/128 vrf vrf-T via fd00::2    -> route fc00::/16 -> veth0 (main table)
#   route SID table 90 encap seg6local action End.DT* vrftable T
#                                          -> sid SID, End.DT*, table T
#   addr fd00::1/64 on veth0               -> port veth0's address, source_address
#   unreachable defaults in vrf-T (dt46)   -> nothing: a table without a route drops
#
# The Linux router on a kernel without VRF devices (CONFIG_NET_VRF; this project's machines):
# /proc/sys/net/vrf/strict_mode missing means the test would skip, so run.sh lets it run
# only with SRMIG_NOVRF=1, and rt-2 gets the same tenant separation without VRF devices:
#   vrf-T (table T, veth-tT enslaved)      -> table T selected by `ip rule iif veth-tT`
#                                             (forwarded traffic) and `ip rule to HOST` for
#                                             the tenant's attached host (the router's own
#                                             replies; host addresses are unique across
#                                             tenants here); the addresses get noprefixroute
#                                             and their connected routes go into table T; T
#                                             ends in an unreachable default so a tenant's
#                                             lookup never falls through to another table
#   ... vrf vrf-T encap seg6 / via fd00::1 -> the same routes in table T
#   End.DT6 vrftable T                     -> End.DT6 table T (the legacy table mode: the
#                                             same lookup of the inner packet in table T)
#   End.DT4 vrftable T                     -> End.DX4 nh4 10.0.0.H dev veth-tT: the kernel
#                                             has End.DT4 only with a VRF device; each SID of
#                                             these tests serves exactly one host (the SID
#                                             is fc00:<src><dst>:<tenant>::), so the
#                                             cross-connect to that host delivers the same
#                                             packets to the same place
#   End.DT46 vrftable T                    -> both of the above on the same SID: IPv6 inner
#                                             packets hit End.DT6 table T (localsid table
#                                             90), IPv4 inner packets (SRH next header 4,
#                                             marked by an nft rule in prerouting) hit
#                                             End.DX4 in localsid table 91 (ip rule fwmark)
# With VRF devices the Linux routers run the test's own commands.

: "${SRMIG_RT:=1}"
: "${SRMIGD:?SRMIGD must name the srmigd binary}"
: "${SRMIG_WORK:?SRMIG_WORK must name a work directory}"
: "${SRMIG_NOVRF:=0}"

case "$(basename "$0")" in
srv6_end_dt6_l3vpn_test.sh) SRMIG_DT=End.DT6 SRMIG_FUNC=6006 ;;
srv6_end_dt4_l3vpn_test.sh) SRMIG_DT=End.DT4 SRMIG_FUNC=6004 ;;
srv6_end_dt46_l3vpn_test.sh) SRMIG_DT=End.DT46 SRMIG_FUNC=6046 ;;
*)
	echo "l3vpn.sh: unknown test $(basename "$0")" >&2
	exit 1
	;;
esac
SRMIG_V6=${IPv6_HS_NETWORK:+1}
SRMIG_V4=${IPv4_HS_NETWORK:+1}
# The second localsid table (End.DT46 without VRF: the IPv4 half).
SRMIG_LOCALSID4_TABLE_ID=91
SRMIG_NOVRF_MARK=4

# Records: one line per item, fields separated by '|'.
SRMIG_PORTS=()     # name|table|peer_ns|peer_if
SRMIG_PROXY=()     # port|address (IPv6 or IPv4)
SRMIG_STEER=()     # table|prefix|sid
SRMIG_SIDS=()      # sid|table
SRMIG_PID=""

eval "kernel_setup_rt_networking() $(declare -f setup_rt_networking | tail -n +2)"
eval "kernel_setup() $(declare -f setup | tail -n +2)"
eval "kernel_cleanup() $(declare -f cleanup | tail -n +2)"

# The port of srmigd's router: the kernel stays off it (no address, no IPv6 at all).
srmig_port_up()
{
	local ns=$1 ifname=$2
	ip netns exec "${ns}" sysctl -wq "net.ipv6.conf.${ifname}.disable_ipv6=1"
	ip -netns "${ns}" link set "${ifname}" up
}

setup_rt_networking()
{
	local id=$1
	if [ "${id}" != "${SRMIG_RT}" ]; then
		kernel_setup_rt_networking "$@"
		return
	fi
	local nsname peer=$((3 - id))
	eval nsname=\${rt_${id}}
	ip link set "veth-rt-${id}" netns "${nsname}"
	ip -netns "${nsname}" link set "veth-rt-${id}" name veth0
	srmig_port_up "${nsname}" veth0
	ip -netns "${nsname}" link set lo up
	SRMIG_PORTS+=("veth0|0|rt_${peer}|veth0")
}

setup_hs()
{
	local hid=$1 rid=$2 tid=$3
	local hsname rtname rtveth=veth-t${tid}
	eval hsname=\${hs_t${tid}_${hid}}
	eval rtname=\${rt_${rid}}

	# The host, exactly as the tests set it up.
	ip netns exec "${hsname}" sysctl -wq net.ipv6.conf.all.accept_dad=0
	ip netns exec "${hsname}" sysctl -wq net.ipv6.conf.default.accept_dad=0
	ip -netns "${hsname}" link add veth0 type veth peer name "${rtveth}"
	ip -netns "${hsname}" link set "${rtveth}" netns "${rtname}"
	[ -n "${SRMIG_V6}" ] &&
		ip -netns "${hsname}" addr add "${IPv6_HS_NETWORK}::${hid}/64" dev veth0 nodad
	[ -n "${SRMIG_V4}" ] &&
		ip -netns "${hsname}" addr add "${IPv4_HS_NETWORK}.${hid}/24" dev veth0
	ip -netns "${hsname}" link set veth0 up
	ip -netns "${hsname}" link set lo up

	if [ "${rid}" = "${SRMIG_RT}" ]; then
		# srmigd's port in table tid (the VRF); its addresses come from srmig_node_toml.
		srmig_port_up "${rtname}" "${rtveth}"
		SRMIG_PORTS+=("${rtveth}|${tid}|hs_t${tid}_${hid}|veth0")
		return
	fi

	if [ -n "${SRMIG_V4}" ]; then
		ip netns exec "${rtname}" sysctl -wq net.ipv4.conf.all.rp_filter=0
		ip netns exec "${rtname}" sysctl -wq net.ipv4.conf.default.rp_filter=0
	fi
	ip netns exec "${rtname}" sysctl -wq net.ipv6.conf.all.accept_dad=0
	ip netns exec "${rtname}" sysctl -wq net.ipv6.conf.default.accept_dad=0
	if [ "${SRMIG_NOVRF}" = 1 ]; then
		srmig_novrf_tenant "${rtname}" "${rtveth}" "${tid}" "${hid}"
	else
		# The tests' own VRF setup.
		ip -netns "${rtname}" link add "vrf-${tid}" type vrf table "${tid}"
		ip -netns "${rtname}" link set "vrf-${tid}" up
		ip -netns "${rtname}" link set "${rtveth}" master "vrf-${tid}"
		[ -n "${SRMIG_V6}" ] && ip -netns "${rtname}" addr add \
			"${IPv6_HS_NETWORK}::254/64" dev "${rtveth}" nodad
		[ -n "${SRMIG_V4}" ] && ip -netns "${rtname}" addr add \
			"${IPv4_HS_NETWORK}.254/24" dev "${rtveth}"
		ip -netns "${rtname}" link set "${rtveth}" up
		ip netns exec "${rtname}" sh -c "echo 1 > /proc/sys/net/vrf/strict_mode"
	fi
	[ -n "${SRMIG_V6}" ] &&
		ip netns exec "${rtname}" sysctl -wq "net.ipv6.conf.${rtveth}.proxy_ndp=1"
	[ -n "${SRMIG_V4}" ] &&
		ip netns exec "${rtname}" sysctl -wq "net.ipv4.conf.${rtveth}.proxy_arp=1"
	return 0
}

# Tenant tid's table on a Linux router without VRF devices (see the header).
srmig_novrf_tenant()
{
	local ns=$1 dev=$2 tid=$3 hid=$4 fam
	ip -netns "${ns}" link set "${dev}" up
	if [ -n "${SRMIG_V6}" ]; then
		ip -netns "${ns}" addr add "${IPv6_HS_NETWORK}::254/64" dev "${dev}" nodad noprefixroute
		ip -netns "${ns}" -6 route add "${IPv6_HS_NETWORK}::/64" dev "${dev}" table "${tid}"
		ip -netns "${ns}" -6 rule add to "${IPv6_HS_NETWORK}::${hid}" lookup "${tid}" prio 1001
	fi
	if [ -n "${SRMIG_V4}" ]; then
		ip -netns "${ns}" addr add "${IPv4_HS_NETWORK}.254/24" dev "${dev}" noprefixroute
		ip -netns "${ns}" -4 route add "${IPv4_HS_NETWORK}.0/24" dev "${dev}" table "${tid}" \
			proto kernel scope link src "${IPv4_HS_NETWORK}.254"
		ip -netns "${ns}" -4 rule add to "${IPv4_HS_NETWORK}.${hid}" lookup "${tid}" prio 1001
	fi
	for fam in -6 -4; do
		ip -netns "${ns}" "${fam}" rule add iif "${dev}" lookup "${tid}" prio 1000
		ip -netns "${ns}" "${fam}" route add unreachable default metric 4278198272 \
			table "${tid}"
	done
}

setup_vpn_config()
{
	local hssrc=$1 rtsrc=$2 hsdst=$3 rtdst=$4 tid=$5
	local rtsrc_name rtdst_name rtveth=veth-t${tid}
	local vpn_sid=${VPN_LOCATOR_SERVICE}:${hssrc}${hsdst}:${tid}::${SRMIG_FUNC}
	local vrf="vrf vrf-${tid}"
	[ "${SRMIG_NOVRF}" = 1 ] && vrf="table ${tid}"
	eval rtsrc_name=\${rt_${rtsrc}}
	eval rtdst_name=\${rt_${rtdst}}

	# The ingress router: proxy NDP, the encap routes per family, the SID's route.
	if [ "${rtsrc}" = "${SRMIG_RT}" ]; then
		if [ -n "${SRMIG_V6}" ]; then
			SRMIG_PROXY+=("${rtveth}|${IPv6_HS_NETWORK}::${hsdst}")
			SRMIG_STEER+=("${tid}|${IPv6_HS_NETWORK}::${hsdst}/128|${vpn_sid}")
		fi
		if [ -n "${SRMIG_V4}" ]; then
			SRMIG_PROXY+=("${rtveth}|${IPv4_HS_NETWORK}.${hsdst}")
			SRMIG_STEER+=("${tid}|${IPv4_HS_NETWORK}.${hsdst}/32|${vpn_sid}")
		fi
	else
		if [ -n "${SRMIG_V6}" ]; then
			ip -netns "${rtsrc_name}" -6 neigh add proxy "${IPv6_HS_NETWORK}::${hsdst}" \
				dev "${rtveth}"
			ip -netns "${rtsrc_name}" -6 route add "${IPv6_HS_NETWORK}::${hsdst}/128" \
				${vrf} encap seg6 mode encap segs "${vpn_sid}" dev veth0
		fi
		if [ -n "${SRMIG_V4}" ]; then
			ip -netns "${rtsrc_name}" -4 route add "${IPv4_HS_NETWORK}.${hsdst}/32" \
				${vrf} encap seg6 mode encap segs "${vpn_sid}" dev veth0
		fi
		ip -netns "${rtsrc_name}" -6 route add "${vpn_sid}/128" ${vrf} \
			via "fd00::${rtdst}" dev veth0
		if [ "${SRMIG_DT}" = End.DT46 ] && [ "${SRMIG_NOVRF}" != 1 ]; then
			ip -netns "${rtsrc_name}" -6 route add unreachable default \
				metric 4278198272 ${vrf}
			ip -netns "${rtsrc_name}" -4 route add unreachable default \
				metric 4278198272 ${vrf}
		fi
	fi

	# The egress router: the SID's decapsulating behavior.
	if [ "${rtdst}" = "${SRMIG_RT}" ]; then
		SRMIG_SIDS+=("${vpn_sid}|${tid}")
		return 0
	fi
	if [ "${SRMIG_NOVRF}" != 1 ]; then
		ip -netns "${rtdst_name}" -6 route add "${vpn_sid}/128" table "${LOCALSID_TABLE_ID}" \
			encap seg6local action "${SRMIG_DT}" vrftable "${tid}" dev "vrf-${tid}"
	else
		local dx4=(encap seg6local action End.DX4 nh4 "${IPv4_HS_NETWORK}.${hsdst}"
			dev "${rtveth}")
		case "${SRMIG_DT}" in
		End.DT6 | End.DT46)
			ip -netns "${rtdst_name}" -6 route add "${vpn_sid}/128" \
				table "${LOCALSID_TABLE_ID}" \
				encap seg6local action End.DT6 table "${tid}" dev "${rtveth}"
			;;
		End.DT4)
			ip -netns "${rtdst_name}" -6 route add "${vpn_sid}/128" \
				table "${LOCALSID_TABLE_ID}" "${dx4[@]}"
			;;
		esac
		if [ "${SRMIG_DT}" = End.DT46 ]; then
			ip -netns "${rtdst_name}" -6 route add "${vpn_sid}/128" \
				table "${SRMIG_LOCALSID4_TABLE_ID}" "${dx4[@]}"
			srmig_novrf_dt46_demux "${rtdst_name}"
		fi
	fi
	if [ -z "$(ip -netns "${rtdst_name}" -6 rule show |
		grep "to ${VPN_LOCATOR_SERVICE}::/16 lookup ${LOCALSID_TABLE_ID}")" ]; then
		ip -netns "${rtdst_name}" -6 rule add \
			to "${VPN_LOCATOR_SERVICE}::/16" \
			lookup "${LOCALSID_TABLE_ID}" prio 999
	fi
}

# End.DT46 without VRF: SRv6 packets whose SRH carries IPv4 (next header 4) are marked in
# prerouting and looked up in the second localsid table (End.DX4), once per router.
srmig_novrf_dt46_demux()
{
	local ns=$1
	ip netns exec "${ns}" nft list table ip6 srmig-dt46 &>/dev/null && return 0
	ip netns exec "${ns}" nft -f - <<EOF
table ip6 srmig-dt46 {
	chain prerouting {
		type filter hook prerouting priority mangle;
		ip6 nexthdr 43 @nh,320,8 4 meta mark set ${SRMIG_NOVRF_MARK}
	}
}
EOF
	ip -netns "${ns}" -6 rule add fwmark "${SRMIG_NOVRF_MARK}" \
		to "${VPN_LOCATOR_SERVICE}::/16" lookup "${SRMIG_LOCALSID4_TABLE_ID}" prio 998
}

srmig_rt_ns()
{
	local v="rt_${SRMIG_RT}"
	echo "${!v}"
}

# The /48 of a SID (its locator in these tests: fc00:<hosts>:<tenant>::/48).
srmig_locator()
{
	python3 -c 'import ipaddress,sys; print(ipaddress.ip_network(sys.argv[1] + "/48", strict=False))' "$1"
}

srmig_node_toml()
{
	local locators=() sid rest table l
	for rest in "${SRMIG_SIDS[@]}"; do
		sid=${rest%%|*}
		l=$(srmig_locator "${sid}")
		[[ " ${locators[*]} " == *" ${l} "* ]] || locators+=("${l}")
	done
	local extra=""
	for l in "${locators[@]:1}"; do extra+="\"${l}\", "; done

	cat <<EOF
# Generated by interop/kernel-selftests for rt-${SRMIG_RT} of $(basename "$0").
locator = "${locators[0]}"
extra_locators = [${extra%, }]
source_address = "${IPv6_RT_NETWORK}::${SRMIG_RT}"
infrastructure_prefixes = ["${IPv6_RT_NETWORK}::/16", "${VPN_LOCATOR_SERVICE}::/16"]
gateway = { address = "fe80::1", mac = "02:00:00:00:00:01" }
EOF
	local name peer_ns peer_if ndp arp p a
	for rest in "${SRMIG_PORTS[@]}"; do
		IFS='|' read -r name table peer_ns peer_if <<<"${rest}"
		cat <<EOF

[[ports]]
name = "${name}"
kind = "uplink"
mac = "$(srmig_mac "$(srmig_rt_ns)" "${name}")"
peer_mac = "$(srmig_mac "${!peer_ns}" "${peer_if}")"
EOF
		if [ "${table}" = 0 ]; then
			cat <<EOF
address = "${IPv6_RT_NETWORK}::${SRMIG_RT}"

[[routes]]
prefix = "${VPN_LOCATOR_SERVICE}::/16"
port = "${name}"

[[routes]]
prefix = "${IPv6_RT_NETWORK}::/64"
port = "${name}"
EOF
			continue
		fi
		ndp="" arp=""
		for p in "${SRMIG_PROXY[@]}"; do
			[ "${p%%|*}" = "${name}" ] || continue
			a=${p#*|}
			if [[ "${a}" == *:* ]]; then ndp+="\"${a}\", "; else arp+="\"${a}\", "; fi
		done
		echo "table = ${table}"
		if [ -n "${SRMIG_V6}" ]; then
			echo "address = \"${IPv6_HS_NETWORK}::254\""
			echo "proxy_ndp = [${ndp%, }]"
		fi
		if [ -n "${SRMIG_V4}" ]; then
			echo "ipv4_address = \"${IPv4_HS_NETWORK}.254\""
			echo "proxy_arp = [${arp%, }]"
		fi
		[ -n "${SRMIG_V6}" ] && printf '\n[[routes]]\nprefix = "%s"\nport = "%s"\ntable = %s\n' \
			"${IPv6_HS_NETWORK}::/64" "${name}" "${table}"
		[ -n "${SRMIG_V4}" ] && printf '\n[[routes]]\nprefix = "%s"\nport = "%s"\ntable = %s\n' \
			"${IPv4_HS_NETWORK}.0/24" "${name}" "${table}"
	done
	# One policy per SID (the v4 and v6 steering of a DT46 SID share it).
	local prefix policies=() n i
	for rest in "${SRMIG_STEER[@]}"; do
		IFS='|' read -r table prefix sid <<<"${rest}"
		n=-1
		for i in "${!policies[@]}"; do
			[ "${policies[$i]}" = "${sid}" ] && n=${i}
		done
		if [ "${n}" = -1 ]; then
			n=${#policies[@]}
			policies+=("${sid}")
			printf '\n[[policies]]\nname = "vpn-%s"\nheadend = "H.Encaps"\nsegments = ["%s"]\n' \
				"${n}" "${sid}"
		fi
		printf '\n[[steering]]\nprefix = "%s"\npolicy = "vpn-%s"\ntable = %s\n' \
			"${prefix}" "${n}" "${table}"
	done
	for rest in "${SRMIG_SIDS[@]}"; do
		IFS='|' read -r sid table <<<"${rest}"
		printf '\n[[sids]]\nsid = "%s"\nbehavior = "%s"\ntable = %s\n' \
			"${sid}" "${SRMIG_DT}" "${table}"
	done
}

. "$(dirname "${BASH_SOURCE[0]}")/srmigd-router.sh"
