//! The fault matrix of the netns lab (`srmig lab migrate --fault WHAT:PHASE`), end to end, on
//! one testbed whose controller runs as its own `srmig controller` process:
//!
//! for each WHAT (`kill-controller`, `restart-controller`, `kill-srmigd-s|d|c`,
//! `restart-srmigd-s|d|c`), one sr-buffer migration with that fault injected at every PHASE
//! (`steady`, `prepare`, `migrating`, `switchover`, `commit`, `cleanup`) while the 1 ms
//! probe runs. Required, per the control-plane issue:
//! - every migration completes or rolls back (none stuck, no error);
//! - controller faults lose no probe (and duplicate none);
//! - an srmigd fault loses at most the probes sent while that srmigd was down or had not yet
//!   got its config back (`recovered_ms`), and the host gets its config back with no operator
//!   action (each fault's `recovered_ms` is measured until the controller re-pushed it and it
//!   was acknowledged);
//! - after the whole matrix, a migration without faults completes and loses nothing;
//! - with the client's srmigd restarted while a 200 us probe runs, 3 migrations deliver
//!   every probe in order at the VM (the hand-over to the client port's TC program);
//! - 2 migrations with a 1.2 s pause, a probe every 200 us per family, lose, duplicate and
//!   reorder nothing (a long End.SBUF release, answered as it comes);
//! - teardown leaves no namespace, srmigd or controller process behind.
//!
//! Needs root, srmigd and srmig (built by `cargo test --workspace`). Without root it prints
//! `SKIPPED: needs root` and passes, unless `CI` is set. About 3 minutes here.

mod common;

use common::{have_root, processes_mentioning, show};

use std::time::Instant;

use srmig_lab::orchestrate::fault::{Component, Fault, FaultPhase};
use srmig_lab::orchestrate::{
    error_chain, run, OrchestrateError, RunPlan, Testbed, TestbedOptions,
};
use srmig_lab::report::Family;

const WHATS: [&str; 8] = [
    "kill-controller",
    "restart-controller",
    "kill-srmigd-s",
    "kill-srmigd-d",
    "kill-srmigd-c",
    "restart-srmigd-s",
    "restart-srmigd-d",
    "restart-srmigd-c",
];

fn plan(faults: Vec<Fault>) -> RunPlan {
    common::fault_run_plan(faults)
}

#[test]
fn every_kill_and_restart_at_every_phase_ends_completed_or_rolled_back() {
    if !have_root() {
        return;
    }
    let started = Instant::now();
    let options = TestbedOptions {
        controller_process: true,
        ..TestbedOptions::default()
    };
    let mut testbed = match Testbed::build(&options) {
        Ok(t) => t,
        Err(e) => panic!("building the lab failed: {}", error_chain(&e)),
    };
    let prefix = testbed.lab().run_id().prefix();
    let dir = testbed.dir().to_owned();
    let fail = |what: &str, e: OrchestrateError| -> ! {
        panic!("{what}: lab run failed: {}", error_chain(&e))
    };

    let mut rolled_back = 0;
    for what in WHATS {
        let faults: Vec<Fault> = FaultPhase::ALL
            .iter()
            .map(|p| format!("{what}:{}", p.name()).parse().expect("fault"))
            .collect();
        let on_controller = faults[0].target == Component::Controller;
        let outcome = run(&mut testbed, &plan(faults)).unwrap_or_else(|e| fail(what, e));
        show(what, &outcome);
        let probe = outcome.report.probe.as_ref().expect("probe report");
        let records = &outcome.details.faults;
        assert_eq!(records.len(), FaultPhase::ALL.len(), "{what}: {records:?}");
        for r in records {
            assert_eq!(r.fault, what);
            assert!(
                r.outcome == "completed" || r.outcome == "rolled_back",
                "{r:?}"
            );
            rolled_back += usize::from(r.outcome == "rolled_back");
            assert!(r.recovered_ms > 0.0 && r.recovered_ms < 15_000.0, "{r:?}");
        }
        assert_eq!(probe.duplicated, 0, "{what}: {probe:?}");
        if on_controller {
            assert_eq!(probe.lost, 0, "{what} lost probes: {probe:?}");
        } else {
            // At most what arrived while that srmigd was down or without its config: one
            // probe per millisecond, each a request and an answer that may cross it.
            let exposed_ms: f64 = records.iter().map(|r| r.recovered_ms).sum();
            assert!(
                (probe.lost as f64) <= exposed_ms + 50.0,
                "{what}: lost {} probes, more than the {exposed_ms:.0} ms it was down or \
                 without its config: {probe:?}",
                probe.lost
            );
        }
    }
    eprintln!(
        "{rolled_back} of {} faulted migrations rolled back",
        WHATS.len()
    );

    // The next migration after all of that: no fault, nothing lost.
    let after = run(&mut testbed, &plan(Vec::new())).unwrap_or_else(|e| fail("after", e));
    show("after the fault matrix", &after);
    let p = after.report.probe.as_ref().expect("probe report");
    assert_eq!(p.lost, 0, "{p:?}");
    assert_eq!(after.details.migrations[0].record.outcome, "completed");

    // The client's srmigd restarted while the probe runs every 200 us: its VM port's socket
    // lands frames before the port's TC program is attached, and each configuration change
    // after that hands the client's traffic from srmigd back to the program. Nothing may
    // overtake what srmigd still holds then (until 2026-12-06 the count srmigd gave the
    // program was off by those frames: 5 and 6 probes reordered at the VM in two runs of 6
    // such migrations, 0 since).
    let mut restart_c = plan(vec!["restart-srmigd-c:steady".parse().expect("fault")]);
    restart_c.migrations = 3;
    restart_c.probe_interval = std::time::Duration::from_micros(200);
    let handed = run(&mut testbed, &restart_c).unwrap_or_else(|e| fail("restart-c", e));
    show("restart-srmigd-c, then 3 migrations", &handed);
    let p = handed.report.probe.as_ref().expect("probe report");
    let one_way = p.at_vm.as_ref().expect("one-way view");
    assert_eq!((p.duplicated, p.reordered), (0, 0), "{p:?}");
    assert_eq!(one_way.reordered, 0, "{one_way:?}");
    assert!(
        handed
            .details
            .migrations
            .iter()
            .all(|m| m.record.outcome == "completed"),
        "{:?}",
        handed.details.migrations
    );

    // A long pause at a high rate: 1.2 s with a probe every 200 us per family holds about
    // 12,000 packets (End.SBUF keeps 16,384 per VM), and the VM answers the release as it
    // comes. srmigd releases a chunk per poll round and reads the VM port in between (until
    // 2026-12-06 it released all at once, and the answers overflowed the VM port's receive
    // ring: 7,640 lost in such a run of 2 migrations, every probe delivered one way).
    let mut long = plan(Vec::new());
    long.migrations = 2;
    long.family = Family::Dual;
    long.probe_interval = std::time::Duration::from_micros(200);
    long.timing.downtime = std::time::Duration::from_millis(1200);
    let paused = run(&mut testbed, &long).unwrap_or_else(|e| fail("long pause", e));
    show("1.2 s pauses, a probe every 200 us per family", &paused);
    for p in [&paused.report.probe, &paused.report.probe_v4] {
        let p = p.as_ref().expect("probe report of each family");
        let one_way = p.at_vm.as_ref().expect("one-way view");
        assert_eq!((p.lost, p.duplicated, p.reordered), (0, 0, 0), "{p:?}");
        assert_eq!((one_way.lost, one_way.reordered), (0, 0), "{one_way:?}");
    }
    assert!(
        paused
            .details
            .migrations
            .iter()
            .all(|m| m.record.outcome == "completed" && m.record.held > 10_000),
        "{:?}",
        paused.details.migrations
    );

    testbed.teardown().expect("teardown");
    let left = srmig_lab::list_namespaces_with_prefix(&prefix).expect("list namespaces");
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    let dir_text = dir.display().to_string();
    let procs = processes_mentioning(&dir_text);
    assert!(procs.is_empty(), "processes left behind: {procs:?}");
    eprintln!("fault matrix took {:?}", started.elapsed());
}
