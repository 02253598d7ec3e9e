//! The libvirt lab end to end (what `srmig lab migrate --vm-kind libvirt` runs): two real
//! libvirtds, one per host, each with `srmig libvirt-hook` installed as its QEMU hook; the
//! guest a libvirt domain whose NIC is srmigd's; migrations started with `virsh migrate --live`
//! and nothing else. On one testbed, in one run:
//!
//! - sr-buffer, S -> D -> S: 0 probes lost or duplicated over IPv6 and IPv4 (each take-back
//!   decided by the guest's count at libvirt's pre-switchover pause), the guest not rebooted, every
//!   migration created by the destination's hook (the lab never asks the controller), End.SBUF
//!   holding and releasing, the pause taken from QEMU's events as libvirt relays them;
//! - traditional, S -> D -> S: probes lost;
//! - a domain whose srmig metadata names a VM the controller does not know: the hook refuses,
//!   `virsh migrate` fails with the hook's message, the domain runs on where it was;
//! - a migration that fails on the destination after the path was armed (its QEMU cannot
//!   listen on the migration address): the destination's hook reports it at `release`, the
//!   controller rolls back at once (not after its hypervisor timeout), the VM keeps answering;
//! - teardown leaves no libvirtd, QEMU or namespace behind.
//!
//! Needs root, QEMU and the guest build's packages (as `lab_qemu`) and libvirt
//! (`libvirt-daemon-system`, `libvirt-clients`). Without them it prints `SKIPPED` and passes,
//! unless `CI` is set.

mod common;

use common::{processes_mentioning, show};

use std::time::{Duration, Instant};

use srmig_api::{MigrationPhase, Strategy};
use srmig_lab::orchestrate::libvirt::virsh;
use srmig_lab::orchestrate::{error_chain, run, RunPlan, Testbed, TestbedOptions};
use srmig_lab::report::VmKind;

fn skip(why: &str) -> bool {
    common::skip("libvirt lab", why)
}

fn missing_prerequisite() -> Option<String> {
    common::missing_vm_prerequisite(&["libvirtd", "virsh"])
}

fn plan(strategy: Strategy, migrations: u32) -> RunPlan {
    common::vm_plan(VmKind::Libvirt, strategy, migrations)
}

#[test]
fn virsh_migrate_is_lossless_with_the_hook_and_failures_roll_back() {
    if let Some(why) = missing_prerequisite() {
        if skip(&why) {
            return;
        }
    }
    let started = Instant::now();
    let options = TestbedOptions {
        vm_kind: VmKind::Libvirt,
        ..TestbedOptions::default()
    };
    let mut testbed = Testbed::build(&options)
        .unwrap_or_else(|e| panic!("building the libvirt lab failed: {}", error_chain(&e)));
    eprintln!("libvirt lab up in {:.1} s", started.elapsed().as_secs_f64());
    let prefix = testbed.lab().run_id().prefix();
    let dir = testbed.dir().to_owned();
    let first_boot = testbed.first_boot_id().expect("a libvirt guest").to_owned();
    let fail = |what: &str, e: srmig_lab::orchestrate::OrchestrateError| -> ! {
        panic!("{what} failed: {}", error_chain(&e))
    };

    // sr-buffer, S -> D -> S.
    let buffer =
        run(&mut testbed, &plan(Strategy::SrBuffer, 2)).unwrap_or_else(|e| fail("sr-buffer", e));
    show("sr-buffer", &buffer);
    let route: Vec<(&str, &str)> = buffer
        .details
        .migrations
        .iter()
        .map(|m| (m.record.from.as_str(), m.record.to.as_str()))
        .collect();
    assert_eq!(route, [("s", "d"), ("d", "s")]);
    for (family, probe) in [
        ("IPv6", buffer.report.probe.as_ref()),
        ("IPv4", buffer.report.probe_v4.as_ref()),
    ] {
        let probe = probe.unwrap_or_else(|| panic!("{family} probe report"));
        assert!(probe.sent > 3000, "{family}: {probe:?}");
        assert_eq!(probe.lost, 0, "sr-buffer lost {family} probes: {probe:?}");
        assert_eq!(
            probe.duplicated, 0,
            "sr-buffer duplicated {family}: {probe:?}"
        );
    }
    // libvirt pauses its sources before the switchover itself: srmigd takes back exactly
    // there (and leaves migrate-continue to libvirt).
    let take_backs = testbed.qemu_take_backs().expect("srmigd status");
    assert_eq!(take_backs, (2, 0), "(counted, count refused) take-backs");
    for m in &buffer.details.migrations {
        let r = &m.record;
        assert!(
            r.pause_ms > 0.0 && r.pause_ms < 2000.0,
            "{}: the pause was not measured: {r:?}",
            r.id
        );
        assert!(
            r.held > 0 && r.released == r.held,
            "End.SBUF did not hold: {r:?}"
        );
    }
    // The network cannot deliver to a paused VM, so its downtime covers the blackout (both
    // from QEMU's timestamps; 20 ms for the hosts' sampling). It may be longer: a guest
    // starved of CPU before the pause stops taking frames earlier. But never longer than
    // the worst delay a 1 ms probe saw.
    let worst_delay = buffer
        .report
        .probe
        .as_ref()
        .map_or(0.0, |p| p.max_extra_delay_ms + p.baseline_rtt_ms);
    for m in &buffer.report.migrations {
        let down = m
            .reported_network_downtime_ms
            .expect("network downtime reported to the controller");
        assert!(
            down > m.blackout_ms - 20.0 && down < worst_delay + 20.0,
            "reported network downtime {down:.2} ms, blackout {:.2} ms, worst probe delay \
             {worst_delay:.2} ms",
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

    let libvirt = testbed.libvirt().expect("a libvirt testbed");
    let (s, d) = (
        libvirt.host("s").expect("s").uri.clone(),
        libvirt.host("d").expect("d").uri.clone(),
    );
    let before = testbed
        .control()
        .migrations()
        .unwrap_or_else(|e| fail("listing migrations", e))
        .len();

    // A VM the controller does not know: the hook refuses, libvirt's migration fails.
    libvirt
        .set_metadata("s", "ghost", Strategy::SrBuffer)
        .unwrap_or_else(|e| fail("virsh metadata", e));
    let out = libvirt
        .start_migration("s", "d")
        .and_then(|c| {
            c.wait_with_output()
                .map_err(|e| srmig_lab::orchestrate::OrchestrateError::Qemu(e.to_string()))
        })
        .unwrap_or_else(|e| fail("virsh migrate", e));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the migration of an unknown VM went on"
    );
    assert!(
        stderr.contains("srmig libvirt-hook") && stderr.contains("ghost"),
        "virsh does not show the hook's reason: {stderr}"
    );
    let state = virsh(&s, &["domstate", "vm1"]).unwrap_or_else(|e| fail("domstate", e));
    assert!(
        String::from_utf8_lossy(&state.stdout).contains("running"),
        "the domain does not run on s after the refusal: {state:?}"
    );
    libvirt
        .set_metadata("s", "vm1", Strategy::SrBuffer)
        .unwrap_or_else(|e| fail("virsh metadata", e));

    // A migration that fails on D after the path was armed: rolled back through the hook.
    let t0 = Instant::now();
    let out = libvirt
        .start_migration_via("s", "d", "tcp://[2001:db8::dead]")
        .and_then(|c| {
            c.wait_with_output()
                .map_err(|e| srmig_lab::orchestrate::OrchestrateError::Qemu(e.to_string()))
        })
        .unwrap_or_else(|e| fail("virsh migrate", e));
    assert!(
        !out.status.success(),
        "a migration to an address D cannot listen on succeeded"
    );
    let failed = loop {
        let all = testbed
            .control()
            .migrations()
            .unwrap_or_else(|e| fail("listing migrations", e));
        assert_eq!(
            all.len(),
            before + 1,
            "the failing migration was not created by the hook (or twice): {all:?}"
        );
        let last = all.into_iter().max_by_key(|m| m.id.0).expect("one");
        if last.phase.is_terminal() {
            break last;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the failed libvirt migration was not rolled back within 30 s: {last:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(failed.phase, MigrationPhase::Failed, "{failed:?}");
    assert!(
        failed
            .error
            .as_deref()
            .is_some_and(|e| e.contains("libvirt released the domain on d")),
        "{failed:?}"
    );
    let state = virsh(&s, &["domstate", "vm1"]).unwrap_or_else(|e| fail("domstate", e));
    assert!(String::from_utf8_lossy(&state.stdout).contains("running"));
    let on_d = virsh(&d, &["list", "--name"]).unwrap_or_else(|e| fail("list", e));
    assert!(
        !String::from_utf8_lossy(&on_d.stdout).contains("vm1"),
        "a vm1 domain was left on d: {on_d:?}"
    );
    // The VM still answers where it is, and migrates again.
    let again =
        run(&mut testbed, &plan(Strategy::SrBuffer, 1)).unwrap_or_else(|e| fail("after", e));
    let probe = again.report.probe.as_ref().expect("probe report");
    assert_eq!(probe.lost, 0, "{probe:?}");
    assert_eq!(
        again.details.guest_boot_id.as_deref(),
        Some(first_boot.as_str())
    );

    testbed.teardown().unwrap_or_else(|e| fail("teardown", e));
    let left = srmig_lab::list_namespaces_with_prefix(&prefix).expect("ip netns list");
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    let procs = processes_mentioning(&dir.display().to_string());
    assert!(procs.is_empty(), "processes left behind: {procs:?}");
    eprintln!(
        "libvirt lab test took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
