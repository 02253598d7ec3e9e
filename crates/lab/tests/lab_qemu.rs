//! The QEMU lab end to end (what `srmig lab migrate --vm-kind qemu` runs): hosts C, S and D
//! running the real srmigd, the controller with its QMP driver, a real QEMU guest (TCG, its
//! own kernel) live-migrated S -> D -> S, the 1 ms probe from the client VM on C. On one
//! testbed, in one run:
//!
//! - sr-buffer, S -> D -> S: 0 probes lost, duplicated or reordered over IPv6 and over IPv4
//!   (the dual-stack guest answers both at once; it resolves its IPv4 gateway with ARP; the
//!   source pauses before the switchover for srmigd's exact take-back), the guest not rebooted
//!   (same boot id), every migration with a true pause (source STOP to destination RESUME)
//!   measured;
//! - traditional, S -> D -> S: probes are lost in both families (frames sent to the source
//!   after its STOP die with the source QEMU, and the mapping moves only after completion);
//! - teardown leaves no QEMU, srmigd or namespace behind.
//!
//! Needs root, `qemu-system-x86_64` and the guest build's packages (busybox-static, cpio,
//! kmod, gcc, libc6-dev; the guest is built once into ~/.cache/srmig/guest). Without them it
//! prints `SKIPPED` and passes, unless `CI` is set.

mod common;

use common::{processes_mentioning, show};

use std::time::Instant;

use srmig_api::Strategy;
use srmig_lab::orchestrate::{error_chain, run, RunPlan, Testbed, TestbedOptions};
use srmig_lab::report::VmKind;

fn skip(why: &str) -> bool {
    common::skip("QEMU lab", why)
}

fn missing_prerequisite() -> Option<String> {
    common::missing_vm_prerequisite(&[])
}

fn plan(strategy: Strategy, migrations: u32) -> RunPlan {
    common::vm_plan(VmKind::Qemu, strategy, migrations)
}

#[test]
fn qemu_guest_migrates_s_d_s_without_loss_where_traditional_loses() {
    if let Some(why) = missing_prerequisite() {
        if skip(&why) {
            return;
        }
    }
    let started = Instant::now();
    let options = TestbedOptions {
        vm_kind: VmKind::Qemu,
        ..TestbedOptions::default()
    };
    let mut testbed = Testbed::build(&options)
        .unwrap_or_else(|e| panic!("building the QEMU lab failed: {}", error_chain(&e)));
    eprintln!("QEMU lab up in {:.1} s", started.elapsed().as_secs_f64());
    let prefix = testbed.lab().run_id().prefix();
    let dir = testbed.dir().to_owned();
    let first_boot = testbed.first_boot_id().expect("a QEMU guest").to_owned();
    let fail = |what: &str, e: srmig_lab::orchestrate::OrchestrateError| -> ! {
        panic!("{what} failed: {}", error_chain(&e))
    };

    // sr-buffer, S -> D -> S.
    let buffer =
        run(&mut testbed, &plan(Strategy::SrBuffer, 2)).unwrap_or_else(|e| fail("sr-buffer", e));
    show("sr-buffer", &buffer);
    let probe = buffer.report.probe.as_ref().expect("probe report");
    let route: Vec<(&str, &str)> = buffer
        .details
        .migrations
        .iter()
        .map(|m| (m.record.from.as_str(), m.record.to.as_str()))
        .collect();
    assert_eq!(route, [("s", "d"), ("d", "s")]);
    assert!(probe.sent > 3000, "{probe:?}");
    assert_eq!(probe.lost, 0, "sr-buffer lost probes: {probe:?}");
    let probe4 = buffer.report.probe_v4.as_ref().expect("IPv4 probe report");
    assert!(probe4.sent > 3000, "{probe4:?}");
    assert_eq!(probe4.lost, 0, "sr-buffer lost IPv4 probes: {probe4:?}");
    // The source pauses before the switchover and srmigd S takes back exactly what the guest
    // did not get (its receive queue's count): nothing reaches it twice, nothing out of order
    // (worst of the echo and the guest's one-way counters).
    for (family, p) in [("IPv6", probe), ("IPv4", probe4)] {
        assert_eq!(
            p.duplicated, 0,
            "sr-buffer duplicated {family} probes: {p:?}"
        );
        assert_eq!(p.reordered, 0, "sr-buffer reordered {family} probes: {p:?}");
    }
    // ... because each take-back was decided by the guest's count, not by luck.
    let take_backs = testbed.qemu_take_backs().expect("srmigd status");
    assert_eq!(take_backs, (2, 0), "(counted, count refused) take-backs");
    for m in &buffer.details.migrations {
        let r = &m.record;
        assert!(
            r.pause_ms > 0.0 && r.pause_ms < 2000.0,
            "{}: the true pause was not measured: {r:?}",
            r.id
        );
        assert!(
            r.cut_at_ms < r.attached_at_ms && r.attached_at_ms <= r.completed_at_ms + 1.0,
            "{r:?}"
        );
        assert!(
            r.held > 0 && r.released == r.held,
            "End.SBUF did not hold: {r:?}"
        );
    }
    // What srmigd reported to the controller: the network downtime spans the pause (the
    // source's last frame to the guest before its STOP, the destination's first after its
    // RESUME; a 1 ms probe keeps both close to them), the release follows the resume.
    for m in &buffer.report.migrations {
        let down = m
            .reported_network_downtime_ms
            .expect("network downtime reported to the controller");
        let release = m
            .reported_release_latency_ms
            .expect("release latency reported to the controller");
        assert!(
            down > m.blackout_ms - 20.0 && down < m.blackout_ms + 100.0 && release < 50.0,
            "reported network downtime {down:.2} ms, blackout {:.2} ms, release {release:.2} ms",
            m.blackout_ms
        );
    }
    assert_eq!(
        buffer.details.guest_boot_id.as_deref(),
        Some(first_boot.as_str()),
        "the guest rebooted"
    );

    // traditional, S -> D -> S on the same guest: loss.
    let traditional = run(&mut testbed, &plan(Strategy::Traditional, 2))
        .unwrap_or_else(|e| fail("traditional", e));
    show("traditional", &traditional);
    let probe = traditional.report.probe.as_ref().expect("probe report");
    assert!(probe.lost > 0, "traditional lost nothing: {probe:?}");
    let probe4 = traditional
        .report
        .probe_v4
        .as_ref()
        .expect("IPv4 probe report");
    assert!(
        probe4.lost > 0,
        "traditional lost no IPv4 probe: {probe4:?}"
    );
    assert_eq!(
        traditional.details.guest_boot_id.as_deref(),
        Some(first_boot.as_str())
    );

    testbed.teardown().unwrap_or_else(|e| fail("teardown", e));
    let left = srmig_lab::list_namespaces_with_prefix(&prefix).expect("ip netns list");
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    let procs = processes_mentioning(&dir.display().to_string());
    assert!(procs.is_empty(), "processes left behind: {procs:?}");
    eprintln!(
        "QEMU lab test took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
