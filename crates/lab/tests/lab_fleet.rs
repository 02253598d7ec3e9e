//! The netns lab with more hosts and VMs (`srmig lab migrate --hosts 4 --vms 3 --chain`):
//! hosts C, S, D and E, three migrating VMs spread over S, D and E, the 1 ms probe against
//! every VM (IPv6), and one chain round with mapping pushes delayed by 30 ms: vm1 S->D while
//! vm2 D->E (and vm3 E->S), then vm1 D->E as soon as its first migration completed.
//!
//! - sr-buffer: every migration completes, each VM ends where the chain takes it, 0 probes
//!   lost, 0 duplicated and 0 reordered against every VM;
//! - teardown leaves no namespace behind.
//!
//! Needs root and the srmigd binary (built by `cargo test --workspace` or `cargo build`).
//! Without root it prints `SKIPPED: needs root` and passes, unless `CI` is set.

mod common;

use common::{have_root, namespaces_with_prefix, show};

use std::time::Duration;

use srmig_api::{MigrationPhase, Strategy};
use srmig_lab::orchestrate::plan::{HostRole, Plan};
use srmig_lab::orchestrate::{
    run, MigrationTiming, RunPlan, Testbed, TestbedOptions, WorkloadKind,
};
use srmig_lab::report::Family;

#[test]
fn a_chain_and_concurrent_migrations_lose_nothing() {
    if !have_root() {
        return;
    }
    let options = TestbedOptions {
        plan: Plan::sized(4, 3).expect("plan"),
        propagation_delay: Duration::from_millis(30),
        ..TestbedOptions::default()
    };
    let mut testbed = match Testbed::build(&options) {
        Ok(t) => t,
        Err(e) => panic!(
            "building the lab failed: {}",
            srmig_lab::orchestrate::error_chain(&e)
        ),
    };
    let prefix = testbed.lab().run_id().prefix();
    let mut plan = RunPlan::new(Strategy::SrBuffer, vec![WorkloadKind::Probe], 1);
    plan.chain = true;
    plan.family = Family::Ipv6;
    plan.timing = MigrationTiming {
        precopy: Duration::from_millis(300),
        downtime: Duration::from_millis(175),
    };
    plan.warmup = Duration::from_millis(700);
    let outcome = run(&mut testbed, &plan).unwrap_or_else(|e| {
        panic!(
            "lab run failed: {}",
            srmig_lab::orchestrate::error_chain(&e)
        )
    });
    show("chain", &outcome);
    let moves: Vec<(&str, &str, &str, &str)> = outcome
        .details
        .migrations
        .iter()
        .map(|m| {
            let r = &m.record;
            (r.vm.as_str(), r.from.as_str(), r.to.as_str(), r.outcome)
        })
        .collect();
    assert_eq!(
        moves,
        [
            ("vm1", "s", "d", "completed"),
            ("vm2", "d", "e", "completed"),
            ("vm1", "d", "e", "completed"),
            ("vm3", "e", "s", "completed"),
        ]
    );
    // Each cleanup waited for every host's commit-fence marker (none timed out).
    for m in &outcome.details.migrations {
        let phases: Vec<MigrationPhase> = m.record.phases.iter().map(|(p, _)| *p).collect();
        assert!(
            phases.contains(&MigrationPhase::FenceComplete)
                && !phases.contains(&MigrationPhase::FenceIncomplete),
            "{}: {phases:?}",
            m.record.id
        );
    }
    // vm1's second migration started after its first completed, while vm2's ran.
    let m = &outcome.details.migrations;
    assert!(m[2].record.requested_at_ms >= m[0].record.completed_at_ms);
    assert!(m[1].record.requested_at_ms < m[0].record.completed_at_ms);
    assert_eq!(testbed.vm_at_of(0), HostRole::Other(0));
    assert_eq!(testbed.vm_at_of(1), HostRole::Other(0));
    assert_eq!(testbed.vm_at_of(2), HostRole::Source);
    let probe = outcome.report.probe.as_ref().expect("probe report");
    let per_vm = &outcome.report.raw.as_ref().expect("raw").probe_per_vm;
    assert_eq!(per_vm.len(), 3, "{per_vm:?}");
    for vm in per_vm {
        assert!(vm.probe.sent > 1000, "{vm:?}");
        assert_eq!(
            vm.probe.lost, 0,
            "sr-buffer lost probes to {}: {vm:?}",
            vm.vm
        );
        assert_eq!(vm.probe.duplicated, 0, "{vm:?}");
        // The commit fence keeps every path switch in order, one way and echoed.
        assert_eq!(vm.probe.reordered, 0, "{vm:?}");
    }
    assert_eq!(probe.lost, 0, "{probe:?}");
    assert_eq!(
        outcome
            .report
            .migrations
            .iter()
            .filter(|m| m.vm.is_some())
            .count(),
        4
    );
    testbed.teardown().expect("teardown");
    let left = namespaces_with_prefix(&prefix);
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}
