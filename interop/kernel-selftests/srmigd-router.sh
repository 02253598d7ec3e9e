# srmigd as one router of a kernel SRv6 selftest: start it in the router's namespace with the
# node.toml the override's `srmig_node_toml` writes (from what the wrapped setup functions
# recorded), and stop it. Sourced by the overrides; needs SRMIGD, SRMIG_WORK, SRMIG_RT,
# SRMIG_PORTS (one entry per port) and `srmig_rt_ns` (the router's namespace name).

# The MAC of interface $2 in namespace $1.
srmig_mac()
{
	local ns=$1 ifname=$2
	command ip -netns "${ns}" -j link show "${ifname}" |
		python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["address"])'
}

srmig_start()
{
	local ns
	ns=$(srmig_rt_ns)
	local toml="${SRMIG_WORK}/rt${SRMIG_RT}.toml"
	local log="${SRMIG_WORK}/srmigd.log"
	srmig_node_toml >"${toml}"
	ip netns exec "${ns}" "${SRMIGD}" --config "${toml}" \
		--api "${SRMIG_WORK}/srmigd.sock" --name "rt-${SRMIG_RT}" --log-format json \
		>"${log}" 2>&1 &
	SRMIG_PID=$!
	echo "${SRMIG_PID}" >"${SRMIG_WORK}/srmigd.pid"
	local ports=${#SRMIG_PORTS[@]} i
	for i in $(seq 1 100); do
		if [ "$(grep -c '"message":"port attached"' "${log}" 2>/dev/null)" -ge "${ports}" ]; then
			echo "srmigd is rt-${SRMIG_RT} (pid ${SRMIG_PID}, ${ports} ports, config ${toml})"
			return 0
		fi
		if ! kill -0 "${SRMIG_PID}" 2>/dev/null; then
			break
		fi
		sleep 0.1
	done
	echo "srmigd did not attach its ${ports} ports; its log:" >&2
	tail -n 20 "${log}" >&2
	return 1
}

srmig_stop()
{
	if [ -n "${SRMIG_PID}" ] && kill -0 "${SRMIG_PID}" 2>/dev/null; then
		kill "${SRMIG_PID}"
		wait "${SRMIG_PID}" 2>/dev/null
	fi
	SRMIG_PID=""
}

# The test's setup, then srmigd; srmigd stopped before the test's cleanup (the override saved
# the originals as kernel_setup and kernel_cleanup).
setup()
{
	kernel_setup "$@"
	srmig_start
}

cleanup()
{
	srmig_stop
	kernel_cleanup "$@"
}
