# Sourced by run.sh into the kernel's srv6_end_dt6_l3vpn_test.sh, just before its `setup`:
# router rt-1 becomes srmigd, rt-2 and every host stay Linux. The test's checks are unchanged.
#
# The setup functions are wrapped: for rt-1 they wire the same links and addresses the kernel
# version would, but instead of configuring rt-1's kernel (VRF devices, seg6 encap routes,
# seg6local End.DT6 routes, proxy NDP) they record what srmigd must do; the original runs
# for everything else. After the test's setup, srmigd starts in rt-1's namespace with the
# node.toml generated from those records (srmig_node_toml), and stops in `cleanup`.
#
# The mapping, kernel -> srmigd:
#   vrf-T with veth-tT enslaved            -> port veth-tT, kind uplink, table = T
#   addr cafe::254/64 on veth-tT           -> the port's address (answered to NDP and ping)
#   neigh add proxy cafe::H dev veth-tT    -> the port's proxy_ndp
#   cafe::/64 connected in vrf-T           -> route cafe::/64 -> veth-tT in table T
#   route cafe::H/128 vrf vrf-T encap seg6 mode encap segs SID
#                                          -> policy (H.Encaps [SID]) + steering in table T
#   route SID/128 vrf vrf-T via fd00::2    -> route fc00::/16 -> veth0 (main table)
#   route SID table 90 encap seg6local action End.DT6 vrftable T
#                                          -> sid SID, End.DT6, table T
#   addr fd00::1/64 on veth0               -> port veth0's address, source_address

: "${SRMIG_RT:=1}"
: "${SRMIGD:?SRMIGD must name the srmigd binary}"
: "${SRMIG_WORK:?SRMIG_WORK must name a work directory}"

# Records: one line per item, fields separated by '|'.
SRMIG_PORTS=()     # name|table|address|peer_ns|peer_if
SRMIG_PROXY=()     # port|address
SRMIG_STEER=()     # table|prefix|sid
SRMIG_SIDS=()      # sid|table
SRMIG_PID=""

eval "kernel_setup_rt_networking() $(declare -f setup_rt_networking | tail -n +2)"
eval "kernel_setup_hs() $(declare -f setup_hs | tail -n +2)"
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
	eval local nsname=\${rt_${id}}
	local peer=$((3 - id))
	ip link set veth-rt-${id} netns ${nsname}
	ip -netns ${nsname} link set veth-rt-${id} name veth0
	srmig_port_up "${nsname}" veth0
	ip -netns ${nsname} link set lo up
	SRMIG_PORTS+=("veth0|0|${IPv6_RT_NETWORK}::${id}|rt_${peer}|veth0")
}

setup_hs()
{
	local hid=$1
	local rid=$2
	local tid=$3
	if [ "${rid}" != "${SRMIG_RT}" ]; then
		kernel_setup_hs "$@"
		return
	fi
	eval local hsname=\${hs_t${tid}_${hid}}
	eval local rtname=\${rt_${rid}}
	local rtveth=veth-t${tid}

	# The host, exactly as the test sets it up.
	ip netns exec ${hsname} sysctl -wq net.ipv6.conf.all.accept_dad=0
	ip netns exec ${hsname} sysctl -wq net.ipv6.conf.default.accept_dad=0
	ip -netns ${hsname} link add veth0 type veth peer name ${rtveth}
	ip -netns ${hsname} link set ${rtveth} netns ${rtname}
	ip -netns ${hsname} addr add ${IPv6_HS_NETWORK}::${hid}/64 dev veth0 nodad
	ip -netns ${hsname} link set veth0 up
	ip -netns ${hsname} link set lo up

	# The router's side: srmigd's port in table tid (the VRF), cafe::254 its address.
	srmig_port_up "${rtname}" "${rtveth}"
	SRMIG_PORTS+=("${rtveth}|${tid}|${IPv6_HS_NETWORK}::254|hs_t${tid}_${hid}|veth0")
}

setup_vpn_config()
{
	local hssrc=$1
	local rtsrc=$2
	local hsdst=$3
	local rtdst=$4
	local tid=$5

	eval local rtsrc_name=\${rt_${rtsrc}}
	eval local rtdst_name=\${rt_${rtdst}}
	local rtveth=veth-t${tid}
	local vpn_sid=${VPN_LOCATOR_SERVICE}:${hssrc}${hsdst}:${tid}::6006

	if [ "${rtsrc}" = "${SRMIG_RT}" ]; then
		SRMIG_PROXY+=("${rtveth}|${IPv6_HS_NETWORK}::${hsdst}")
		SRMIG_STEER+=("${tid}|${IPv6_HS_NETWORK}::${hsdst}/128|${vpn_sid}")
	else
		ip -netns ${rtsrc_name} -6 neigh add proxy ${IPv6_HS_NETWORK}::${hsdst} dev ${rtveth}
		ip -netns ${rtsrc_name} -6 route add ${IPv6_HS_NETWORK}::${hsdst}/128 vrf vrf-${tid} \
			encap seg6 mode encap segs ${vpn_sid} dev veth0
		ip -netns ${rtsrc_name} -6 route add ${vpn_sid}/128 vrf vrf-${tid} \
			via fd00::${rtdst} dev veth0
	fi

	if [ "${rtdst}" = "${SRMIG_RT}" ]; then
		SRMIG_SIDS+=("${vpn_sid}|${tid}")
	else
		ip -netns ${rtdst_name} -6 route add ${vpn_sid}/128 table ${LOCALSID_TABLE_ID} \
			encap seg6local action End.DT6 vrftable ${tid} dev vrf-${tid}
		if [ -z "$(ip -netns ${rtdst_name} -6 rule show | \
		    grep "to ${VPN_LOCATOR_SERVICE}::/16 lookup ${LOCALSID_TABLE_ID}")" ]; then
			ip -netns ${rtdst_name} -6 rule add \
				to ${VPN_LOCATOR_SERVICE}::/16 \
				lookup ${LOCALSID_TABLE_ID} prio 999
		fi
	fi
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
	local name address peer_ns peer_if proxies p
	for rest in "${SRMIG_PORTS[@]}"; do
		IFS='|' read -r name table address peer_ns peer_if <<<"${rest}"
		proxies=""
		for p in "${SRMIG_PROXY[@]}"; do
			[ "${p%%|*}" = "${name}" ] && proxies+="\"${p#*|}\", "
		done
		cat <<EOF

[[ports]]
name = "${name}"
kind = "uplink"
mac = "$(srmig_mac "$(srmig_rt_ns)" "${name}")"
peer_mac = "$(srmig_mac "${!peer_ns}" "${peer_if}")"
address = "${address}"
EOF
		if [ "${table}" != 0 ]; then
			echo "table = ${table}"
			echo "proxy_ndp = [${proxies%, }]"
			cat <<EOF

[[routes]]
prefix = "${IPv6_HS_NETWORK}::/64"
port = "${name}"
table = ${table}
EOF
		else
			cat <<EOF

[[routes]]
prefix = "${VPN_LOCATOR_SERVICE}::/16"
port = "${name}"

[[routes]]
prefix = "${IPv6_RT_NETWORK}::/64"
port = "${name}"
EOF
		fi
	done
	local prefix n=0
	for rest in "${SRMIG_STEER[@]}"; do
		IFS='|' read -r table prefix sid <<<"${rest}"
		n=$((n + 1))
		cat <<EOF

[[policies]]
name = "vpn-${n}"
headend = "H.Encaps"
segments = ["${sid}"]

[[steering]]
prefix = "${prefix}"
policy = "vpn-${n}"
table = ${table}
EOF
	done
	for rest in "${SRMIG_SIDS[@]}"; do
		IFS='|' read -r sid table <<<"${rest}"
		cat <<EOF

[[sids]]
sid = "${sid}"
behavior = "End.DT6"
table = ${table}
EOF
	done
}

. "$(dirname "${BASH_SOURCE[0]}")/srmigd-router.sh"
