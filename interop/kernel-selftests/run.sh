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
# Tests and status (see docs/conformance.md, "Kernel selftests"):
#   srv6_end_flavors_test.sh      srmigd as rt-4 (End, End with PSP at SL 2, transit routes);
#                                 on a kernel without dummy devices the Linux routers get a veth
#                                 of the dummy's name (see end_flavors.sh)
#   srv6_end_dt6_l3vpn_test.sh    srmigd as rt-1 (End.DT6 into VRF tables, H.Encaps steering
#                                 per VRF, proxy NDP, the VRF gateway address). The Linux
#                                 routers need VRF devices: on a kernel without CONFIG_NET_VRF
#                                 (this project's CI machines) it is reported as "cannot run
#                                 here" and has not run to the end yet
#   the others                    see NOT_YET and NOT_APPLICABLE_TESTS below
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

# test script -> override, srmigd's router, what the kernel must have for the Linux nodes,
# and the checks that cannot apply ('|'-separated TEST line texts) with the reason.
declare -A OVERRIDE=(
	[srv6_end_flavors_test.sh]=end_flavors.sh
	[srv6_end_dt6_l3vpn_test.sh]=dt6_l3vpn.sh
)
declare -A ROUTER=(
	[srv6_end_flavors_test.sh]=4
	[srv6_end_dt6_l3vpn_test.sh]=1
)
declare -A NEEDS_VRF=(
	[srv6_end_dt6_l3vpn_test.sh]=1
)
declare -A NOT_APPLICABLE=(
	[srv6_end_flavors_test.sh]="Routers connectivity: rt-4 -> rt-1|Routers connectivity: rt-4 -> rt-2|Routers connectivity: rt-4 -> rt-3"
	[srv6_end_dt6_l3vpn_test.sh]="Routers connectivity: rt-1 -> rt-2"
)
WHY_NOT_APPLICABLE="the ping runs in the replaced router's own kernel stack, which srmigd keeps off its ports (no address there); srmigd answers the other routers' pings"
NOT_YET="srv6_end_dt4_l3vpn_test.sh srv6_end_dt46_l3vpn_test.sh srv6_hencap_red_l3vpn_test.sh srv6_end_next_csid_l3vpn_test.sh srv6_end_x_next_csid_l3vpn_test.sh"
NOT_APPLICABLE_TESTS="srv6_end_dx4_netfilter_test.sh srv6_end_dx6_netfilter_test.sh (the kernel's netfilter hooks on seg6local) srv6_hl2encap_red_l2vpn_test.sh (L2 behaviors)"

modprobe vrf 2>/dev/null || true
have_vrf=0
[ -e /proc/sys/net/vrf/strict_mode ] && have_vrf=1

failed=0
cannot=()
for test in srv6_end_flavors_test.sh srv6_end_dt6_l3vpn_test.sh; do
	if [ -n "${NEEDS_VRF[$test]:-}" ] && [ "${have_vrf}" = 0 ]; then
		cannot+=("${test} (the Linux routers need VRF devices; this kernel has no CONFIG_NET_VRF)")
		continue
	fi
	work=$(mktemp -d /tmp/srmig-kselftest.XXXXXX)
	cp "${KSELFTESTS_DIR}/${test}" "${KSELFTESTS_DIR}/lib.sh" "${work}/"
	# The override goes in after the test's functions, before its main part (the root check).
	python3 - "${work}/${test}" "${here}/${OVERRIDE[$test]}" <<'PY'
import re, sys
path, override = sys.argv[1], sys.argv[2]
text = open(path).read()
m = re.search(r'^if \[ "\$\(id -u\)" -ne 0 \];\s*then', text, re.M)
if not m:
    sys.exit(f"{path}: no root check to hook the override before (another kernel version?)")
open(path, "w").write(text[:m.start()] + f'. "{override}"\n' + text[m.start():])
PY
	echo "=== ${test} (srmigd as rt-${ROUTER[$test]}) ==="
	set +e
	(cd "${work}" && SRMIGD="${SRMIGD}" SRMIG_WORK="${work}" SRMIG_RT="${ROUTER[$test]}" \
		bash "./${test}") >"${work}/out" 2>&1
	status=$?
	set -e
	# srmigd never outlives its test, even if the test died.
	if [ -f "${work}/srmigd.pid" ] && kill -0 "$(cat "${work}/srmigd.pid")" 2>/dev/null; then
		kill "$(cat "${work}/srmigd.pid")" || true
	fi
	grep -E 'TEST: |^Tests (passed|failed)|srmigd is rt|SKIP' "${work}/out" | sed 's/^ *//' || true
	na=()
	IFS='|' read -r -a na <<<"${NOT_APPLICABLE[$test]:-}"
	na_args=()
	for line in "${na[@]}"; do na_args+=(-e "${line}"); done
	[ ${#na_args[@]} -gt 0 ] || na_args=(-e '@@none@@')
	ok=$(grep -c '\[ OK \]' "${work}/out" || true)
	unexpected=$(grep '\[FAIL\]' "${work}/out" | grep -vF "${na_args[@]}" || true)
	expected_fail=$(grep '\[FAIL\]' "${work}/out" | grep -cF "${na_args[@]}" || true)
	if [ -n "${unexpected}" ] || [ "${ok}" = 0 ] || grep -q '^SKIP' "${work}/out"; then
		echo "${test}: FAILED (exit ${status}); output and srmigd's log in ${work}" >&2
		tail -n 30 "${work}/out" >&2
		[ -f "${work}/srmigd.log" ] && tail -n 20 "${work}/srmigd.log" >&2
		failed=1
		continue
	fi
	if [ "${expected_fail}" != "${#na[@]}" ]; then
		echo "${test}: ${expected_fail} of the ${#na[@]} checks listed as not applicable failed: update run.sh" >&2
		failed=1
		continue
	fi
	echo "${test}: ${ok} checks passed with srmigd as rt-${ROUTER[$test]}; not applicable (${WHY_NOT_APPLICABLE}): ${NOT_APPLICABLE[$test]:-none}"
	rm -rf "${work}"
done
for c in "${cannot[@]}"; do echo "cannot run here: ${c}"; done
echo "not applicable: ${NOT_APPLICABLE_TESTS}"
echo "not run yet (need srmigd features or a harness of their own): ${NOT_YET}"
exit "${failed}"
