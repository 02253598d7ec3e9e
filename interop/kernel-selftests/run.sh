#!/usr/bin/env bash
# The Linux kernel's own SRv6 selftests (tools/testing/selftests/net/srv6_*.sh) with srmigd in
# place of one router: every other node stays Linux, the tests' checks run unchanged.
#
#   bash interop/kernel-selftests/run.sh            (root; SRMIGD=path/to/srmigd to choose it)
#
# The tests come from Debian's linux-source-6.12 package (`apt-get download`, extracted once
# into target/kernel-selftests/; KSELFTESTS_DIR=DIR uses a tree you already have). For each
# applicable test, a copy of the script sources an override (NAME.sh here) right before its
# `setup`; the override keeps the kernel's setup for every node but srmigd's router, records
# what that router must do, and starts srmigd with a node.toml generated from it. The test's
# TEST lines are its verdict; a check that cannot apply to a forwarding plane is listed below
# with the reason and must fail (so the list stays true); any other failure fails the run.
#
# Each test runs in its own work directory; its srmigd and namespaces are removed when it
# ends, fails or run.sh is interrupted. Each test's wall time is printed.
#
# Tests and status (see docs/conformance.md, "Kernel selftests"):
#   srv6_end_flavors_test.sh      srmigd as rt-4 (End, End with PSP at SL 2, transit routes);
#                                 on a kernel without dummy devices the Linux routers get a veth
#                                 of the dummy's name (see end_flavors.sh)
#   srv6_end_dt6_l3vpn_test.sh    srmigd as rt-1 (End.DT6 / End.DT4 / End.DT46 into its tenant
#   srv6_end_dt4_l3vpn_test.sh    tables, H.Encaps steering per table, proxy NDP and ARP, the
#   srv6_end_dt46_l3vpn_test.sh   gateway addresses; see l3vpn.sh). On a kernel without VRF
#                                 devices (CONFIG_NET_VRF; this project's machines) the Linux
#                                 router rt-2 gets per-tenant tables chosen by ip rules instead
#                                 (SRMIG_NOVRF=1 and the test's VRF skip lifted); l3vpn.sh
#                                 lists each replacement and why it is equivalent
#   srv6_hencap_red_l3vpn_test.sh srmigd as rt-1 (H.Encaps.Red per table, End, End.DT46;
#                                 see hencap_red.sh), the same VRF-less Linux routers
#   srv6_end_next_csid_l3vpn_test.sh
#   srv6_end_x_next_csid_l3vpn_test.sh
#                                 srmigd as rt-3 (End / End.X with the NEXT-C-SID flavor,
#                                 block 32 + node 16: C-SID shift without an SRH, fall back to
#                                 the SRH at a zero argument; End.X to its adjacency rt-4;
#                                 see next_csid.sh, which prints srmigd's SID and per-port
#                                 counters for the VPN checks); the Linux routers' dummy as in
#                                 end_flavors.sh, rt-1 and rt-2 VRF-less as in hencap_red.sh
#   the others                    see NOT_APPLICABLE_TESTS below
#
# SRMIG_TESTS="a.sh b.sh" runs only those tests.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "${here}/../.." && pwd)

if [ "$(id -u)" != 0 ]; then
	echo "SKIPPED: the kernel selftests need root" >&2
	[ -n "${CI:-}" ] && { echo "CI is set: a skipped root test is a failure" >&2; exit 1; }
	exit 0
fi

SRMIGD=${SRMIGD:-${root}/target/debug/srmigd}
if [ ! -x "${SRMIGD}" ]; then
	echo "srmigd not found at ${SRMIGD} (cargo build -p srmig-hostd, or SRMIGD=PATH)" >&2
	exit 1
fi

# The selftests tree.
if [ -z "${KSELFTESTS_DIR:-}" ]; then
	cache=${root}/target/kernel-selftests
	KSELFTESTS_DIR=${cache}/net
	if [ ! -f "${KSELFTESTS_DIR}/srv6_end_dt6_l3vpn_test.sh" ]; then
		dl=$(mktemp -d)
		trap 'rm -rf "${dl}"' EXIT
		echo "fetching the kernel selftests (apt-get download linux-source-6.12)..."
		(cd "${dl}" && apt-get download -qq linux-source-6.12 2>/dev/null)
		mkdir -p "${KSELFTESTS_DIR}"
		dpkg-deb --fsys-tarfile "${dl}"/linux-source-6.12_*.deb |
			tar -x -O --wildcards '*/linux-source-6.12.tar.xz' | xz -d |
			tar -x -C "${dl}" --wildcards \
				'linux-source-6.12/tools/testing/selftests/net/srv6_*' \
				'linux-source-6.12/tools/testing/selftests/net/lib.sh'
		cp "${dl}"/linux-source-6.12/tools/testing/selftests/net/{srv6_*,lib.sh} "${KSELFTESTS_DIR}/"
		rm -rf "${dl}"
		trap - EXIT
	fi
fi

# test script -> override, srmigd's router, whether the override has a VRF-less setup for the
# Linux routers, and the checks that cannot apply ('|'-separated TEST line texts).
TESTS=${SRMIG_TESTS:-"srv6_end_flavors_test.sh srv6_end_dt6_l3vpn_test.sh srv6_end_dt4_l3vpn_test.sh srv6_end_dt46_l3vpn_test.sh srv6_hencap_red_l3vpn_test.sh srv6_end_next_csid_l3vpn_test.sh srv6_end_x_next_csid_l3vpn_test.sh"}
declare -A OVERRIDE=(
	[srv6_end_flavors_test.sh]=end_flavors.sh
	[srv6_end_dt6_l3vpn_test.sh]=l3vpn.sh
	[srv6_end_dt4_l3vpn_test.sh]=l3vpn.sh
	[srv6_end_dt46_l3vpn_test.sh]=l3vpn.sh
	[srv6_hencap_red_l3vpn_test.sh]=hencap_red.sh
	[srv6_end_next_csid_l3vpn_test.sh]=next_csid.sh
	[srv6_end_x_next_csid_l3vpn_test.sh]=next_csid.sh
)
declare -A ROUTER=(
	[srv6_end_flavors_test.sh]=4
	[srv6_end_dt6_l3vpn_test.sh]=1
	[srv6_end_dt4_l3vpn_test.sh]=1
	[srv6_end_dt46_l3vpn_test.sh]=1
	[srv6_hencap_red_l3vpn_test.sh]=1
	[srv6_end_next_csid_l3vpn_test.sh]=3
	[srv6_end_x_next_csid_l3vpn_test.sh]=3
)
declare -A NOVRF_OVERRIDE=(
	[srv6_end_dt6_l3vpn_test.sh]=1
	[srv6_end_dt4_l3vpn_test.sh]=1
	[srv6_end_dt46_l3vpn_test.sh]=1
	[srv6_hencap_red_l3vpn_test.sh]=1
	[srv6_end_next_csid_l3vpn_test.sh]=1
	[srv6_end_x_next_csid_l3vpn_test.sh]=1
)
declare -A NOT_APPLICABLE=(
	[srv6_end_flavors_test.sh]="Routers connectivity: rt-4 -> rt-1|Routers connectivity: rt-4 -> rt-2|Routers connectivity: rt-4 -> rt-3"
	[srv6_end_dt6_l3vpn_test.sh]="Routers connectivity: rt-1 -> rt-2"
	[srv6_end_dt4_l3vpn_test.sh]="Routers connectivity: rt-1 -> rt-2"
	[srv6_end_dt46_l3vpn_test.sh]="Routers connectivity: rt-1 -> rt-2"
	[srv6_hencap_red_l3vpn_test.sh]="Routers connectivity: rt-1 -> rt-2|Routers connectivity: rt-1 -> rt-3|Routers connectivity: rt-1 -> rt-4"
	[srv6_end_next_csid_l3vpn_test.sh]="Routers connectivity: rt-3 -> rt-1|Routers connectivity: rt-3 -> rt-2|Routers connectivity: rt-3 -> rt-4"
	[srv6_end_x_next_csid_l3vpn_test.sh]="Routers connectivity: rt-3 -> rt-1|Routers connectivity: rt-3 -> rt-2|Routers connectivity: rt-3 -> rt-4"
)
WHY_NOT_APPLICABLE="the ping runs in the replaced router's own kernel stack, which srmigd keeps off its ports (no address there); srmigd answers the other routers' pings"
NOT_APPLICABLE_TESTS="srv6_end_dx4_netfilter_test.sh srv6_end_dx6_netfilter_test.sh (the kernel's netfilter hooks on seg6local) srv6_hl2encap_red_l2vpn_test.sh (L2 behaviors)"

modprobe vrf 2>/dev/null || true
novrf=1
[ -e /proc/sys/net/vrf/strict_mode ] && novrf=0

# srmigd and the namespaces of a test never outlive it, also when it fails or run.sh is
# interrupted: stop_test kills the test's srmigd and deletes the namespaces with the
# selftests' names (rt_*, hs_*, rt-*, hs-*) created while it ran.
work=""
ns_before=""
stop_test()
{
	if [ -n "${work}" ] && [ -f "${work}/srmigd.pid" ]; then
		local pid
		pid=$(cat "${work}/srmigd.pid")
		if kill -0 "${pid}" 2>/dev/null; then kill "${pid}" 2>/dev/null || true; fi
	fi
	local ns
	for ns in $(ip netns list | awk '{print $1}'); do
		case "${ns}" in
		rt_* | hs_* | rt-* | hs-*) ;;
		*) continue ;;
		esac
		grep -qxF -- "${ns}" <<<"${ns_before}" || ip netns del "${ns}" 2>/dev/null || true
	done
}
# The test runs in the background and run.sh waits for it, so that a signal reaches this trap
# at once (bash runs traps only between foreground commands, and the tests' pings swallow
# SIGINT and let the test go on).
test_pid=""
on_signal()
{
	if [ -n "${test_pid}" ]; then
		kill -TERM "${test_pid}" 2>/dev/null || true
		wait "${test_pid}" 2>/dev/null || true
	fi
	stop_test
	echo "interrupted; the test's output is in ${work:-nowhere}" >&2
	exit 130
}
trap on_signal INT TERM

failed=0
summary=()
for test in ${TESTS}; do
	novrf_env=0
	if [ -n "${NOVRF_OVERRIDE[$test]:-}" ] && [ "${novrf}" = 1 ]; then
		novrf_env=1
	fi
	work=$(mktemp -d /tmp/srmig-kselftest.XXXXXX)
	ns_before=$(ip netns list | awk '{print $1}')
	cp "${KSELFTESTS_DIR}/${test}" "${KSELFTESTS_DIR}/lib.sh" "${work}/"
	# The override goes in after the test's functions, before its main part (the root check).
	# Without VRF devices the test's VRF skip is lifted for the override's VRF-less setup
	# (SRMIG_NOVRF=1); nothing else in the test changes.
	python3 - "${work}/${test}" "${here}/${OVERRIDE[$test]}" "${novrf_env}" <<'PY'
import re, sys
path, override, novrf = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
text = open(path).read()
m = re.search(r'^if \[ "\$\(id -u\)" -ne 0 \];\s*then', text, re.M)
if not m:
    sys.exit(f"{path}: no root check to hook the override before (another kernel version?)")
text = text[:m.start()] + f'. "{override}"\n' + text[m.start():]
if novrf:
    check = "[ ! -e /proc/sys/net/vrf/strict_mode ]"
    if text.count(check) != 1:
        sys.exit(f"{path}: the VRF check is not there once (another kernel version?)")
    text = text.replace(check, check + ' && [ "${SRMIG_NOVRF:-0}" != 1 ]')
open(path, "w").write(text)
PY
	how="srmigd as rt-${ROUTER[$test]}"
	[ "${novrf_env}" = 0 ] || how+=", the Linux router's VRFs as ip-rule tables (no VRF here)"
	echo "=== ${test} (${how}) ==="
	started=${SECONDS}
	set +e
	(cd "${work}" && SRMIGD="${SRMIGD}" SRMIG_WORK="${work}" SRMIG_RT="${ROUTER[$test]}" \
		SRMIG_NOVRF="${novrf_env}" exec bash "./${test}") >"${work}/out" 2>&1 &
	test_pid=$!
	wait "${test_pid}"
	status=$?
	test_pid=""
	set -e
	took=$((SECONDS - started))
	stop_test
	grep -E 'TEST: |^Tests (passed|failed)|srmigd is rt|srmigd counters|SKIP' "${work}/out" | sed 's/^ *//' || true
	na=()
	IFS='|' read -r -a na <<<"${NOT_APPLICABLE[$test]:-}"
	na_args=()
	for line in "${na[@]}"; do na_args+=(-e "${line}"); done
	[ ${#na_args[@]} -gt 0 ] || na_args=(-e '@@none@@')
	ok=$(grep -c '\[ OK \]' "${work}/out" || true)
	unexpected=$(grep '\[FAIL\]' "${work}/out" | grep -vF "${na_args[@]}" || true)
	expected_fail=$(grep '\[FAIL\]' "${work}/out" | grep -cF "${na_args[@]}" || true)
	if [ -n "${unexpected}" ] || [ "${ok}" = 0 ] || grep -q '^SKIP' "${work}/out"; then
		echo "${test}: FAILED (exit ${status}, ${took}s); output and srmigd's log in ${work}" >&2
		tail -n 30 "${work}/out" >&2
		[ -f "${work}/srmigd.log" ] && tail -n 20 "${work}/srmigd.log" >&2
		summary+=("${test}: FAILED (${took}s)")
		failed=1
		continue
	fi
	if [ "${expected_fail}" != "${#na[@]}" ]; then
		echo "${test}: ${expected_fail} of the ${#na[@]} checks listed as not applicable failed: update run.sh" >&2
		summary+=("${test}: FAILED (the not-applicable list is not true)")
		failed=1
		continue
	fi
	echo "${test}: ${ok} checks passed with ${how} in ${took}s; not applicable (${WHY_NOT_APPLICABLE}): ${NOT_APPLICABLE[$test]:-none}"
	summary+=("${test}: ${ok} passed, ${expected_fail} not applicable (required to fail), ${took}s")
	rm -rf "${work}"
	work=""
done
echo
for line in "${summary[@]}"; do echo "${line}"; done
echo "not applicable: ${NOT_APPLICABLE_TESTS}"
exit "${failed}"
