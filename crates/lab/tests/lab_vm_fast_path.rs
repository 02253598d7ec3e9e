//! The netns lab with every VM port on srmigd's TC fast path (srmigd's default, `[io]
//! vm_fast_path`; `srmig lab migrate --no-vm-fast-path` turns it off): the VMs' packets to
//! mapped destinations are encapsulated in the kernel by the VM port's program, which the migrations move between
//! tables (the SR path at a migration's start, the direct path at its commit) and between
//! hosts (the VM port is attached at D, detached at S). Over 4 sr-buffer migrations with the
//! probe and a TCP stream (TSO on in the guests, both families at once):
//!
//! - 0 probes lost, duplicated or reordered, echoed and one way at the VM;
//! - the TCP streams carry data and see no retransmission timeout; the IPv6 stream, which the
//!   program carries, has no segment retransmitted spuriously (D-SACKed by the VM): the
//!   program and srmigd hand the VM's packets over to each other in order at every table
//!   change, also with the slow srmigd of this debug build (`srmig_hostd::port::FastWait`,
//!   `srmig_hostd::port::steer`). The IPv4 stream goes through srmigd's sockets only: its
//!   order is not what this test is about;
//! - the program is attached as a clsact filter (`[io] vm_tc_hook = "clsact"`, as on a kernel
//!   without tcx links; the other netns lab tests use tcx);
//! - the program forwarded the client's packets (the client port's receive count is larger
//!   than what srmigd's socket received);
//! - teardown leaves no namespace and no srmigd process behind.
//!
//! Needs root and the srmigd binary. Without root it prints `SKIPPED: needs root` and passes,
//! unless `CI` is set.

mod common;

use common::{have_root, namespaces_with_prefix, processes_mentioning, show, sr_buffer_plan};

use srmig_lab::orchestrate::{run, Testbed, TestbedOptions, WorkloadKind};

#[test]
fn sr_buffer_loses_nothing_on_the_vm_fast_path() {
    if !have_root() {
        return;
    }
    let mut options = TestbedOptions::default();
    options.plan.vm_fast_path = true;
    // As on a kernel without tcx (every other netns lab test attaches with tcx here).
    options.plan.vm_tc_hook = Some("clsact".to_owned());
    let mut testbed = Testbed::build(&options).unwrap_or_else(|e| {
        panic!(
            "building the lab failed: {}",
            srmig_lab::orchestrate::error_chain(&e)
        )
    });
    let prefix = testbed.lab().run_id().prefix();
    let dir = testbed.dir().to_owned();
    let plan = sr_buffer_plan(vec![WorkloadKind::Probe, WorkloadKind::Tcp], 4);
    let r = run(&mut testbed, &plan).unwrap_or_else(|e| {
        panic!(
            "lab run failed: {}",
            srmig_lab::orchestrate::error_chain(&e)
        )
    });
    show("sr-buffer, VM ports on the TC fast path", &r);
    for (family, probe) in [("IPv6", &r.report.probe), ("IPv4", &r.report.probe_v4)] {
        let probe = probe.as_ref().expect("probe report");
        assert!(probe.sent > 2000, "{family}: {probe:?}");
        assert_eq!(probe.lost, 0, "{family}: {probe:?}");
        assert_eq!(probe.duplicated, 0, "{family}: {probe:?}");
        assert_eq!(probe.reordered, 0, "{family}: {probe:?}");
    }
    for (family, tcp) in [("IPv6", &r.report.tcp), ("IPv4", &r.report.tcp_v4)] {
        let tcp = tcp.as_ref().expect("tcp report");
        assert!(tcp.bytes > 10 << 20, "{family} TCP carried little: {tcp:?}");
        assert!(
            !tcp.rto_seen,
            "{family} TCP saw a retransmission timeout: {tcp:?}"
        );
    }
    let tcp6 = r.report.tcp.as_ref().expect("tcp report");
    assert_eq!(
        tcp6.spurious_retransmits,
        Some(0),
        "IPv6 TCP segments reordered at a table change: {tcp6:?}"
    );
    let statuses = testbed.statuses().expect("srmigd status");
    let (_, c) = statuses
        .iter()
        .find(|(h, _)| h == "c")
        .expect("the client host's status");
    let port = c["ports"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "client-port"))
        .expect("client-port in the status");
    let (rx, socket_rx) = (
        port["rx"]["packets"].as_u64().unwrap_or(0),
        port["io"]["rx_frames"].as_u64().unwrap_or(0),
    );
    eprintln!("client-port: {rx} packets received, {socket_rx} through srmigd's socket");
    assert_eq!(port["fast_path"], true, "{port}");
    assert_eq!(port["fast_path_hook"], "clsact", "{port}");
    assert!(
        rx > socket_rx + 10_000,
        "the TC program forwarded little: {rx} received, {socket_rx} by the socket"
    );

    testbed.teardown().unwrap_or_else(|e| {
        panic!(
            "teardown failed: {}",
            srmig_lab::orchestrate::error_chain(&e)
        )
    });
    let left = namespaces_with_prefix(&prefix);
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    let procs = processes_mentioning(dir.to_str().expect("utf8 dir"));
    assert!(procs.is_empty(), "processes left behind: {procs:?}");
}
