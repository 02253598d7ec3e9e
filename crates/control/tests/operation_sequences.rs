//! Operation-sequence test: random interleavings of migration requests, config deliveries
//! (with lost acknowledgements), hypervisor progress, failures, cancels and timeouts, in
//! virtual time, against a model of the world (hosts applying configs in order, a hypervisor
//! that moves the VM), with the routing invariants checked after every operation. The model,
//! the operations and the checker are in `ops_model/mod.rs`, shared with the `control_ops`
//! fuzz target (`fuzz/src/control_ops.rs`); this file brings the proptest generator.

mod ops_model;

use std::collections::BTreeMap;

use ops_model::{Op, World, HOSTS, VMS};
use proptest::prelude::*;
use srmig_api::{MigrationOutcome, Steering};

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    prop_oneof![
        2 => (0..VMS, 0..HOSTS, 0..3u8).prop_map(|(vm, to, strategy)| Op::Request { vm, to, strategy }),
        8 => (0..HOSTS, prop::bool::weighted(0.1)).prop_map(|(host, lose_ack)| Op::Deliver { host, lose_ack }),
        3 => (0..VMS, any::<u8>()).prop_map(|(vm, order)| Op::HypStep { vm, order }),
        3 => (0..VMS).prop_map(|vm| Op::HypNotify { vm }),
        1 => (0..VMS).prop_map(|vm| Op::HypFail { vm }),
        1 => (0..VMS).prop_map(|vm| Op::Cancel { vm }),
        2 => prop_oneof![1u64..60, 90u64..1200].prop_map(|ms| Op::Advance { ms }),
    ]
}

proptest! {
    // 512 cases by default; PROPTEST_CASES raises it for a long run.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_operation_sequences_keep_every_vm_reachable(ops in prop::collection::vec(op(), 1..120)) {
        ops_model::run(&ops)?;
    }
}

/// The harness itself must be able to fail: a controller fed a hand-made "bad" config (the
/// VM's mapping moved before it runs at D) is caught by `check`.
#[test]
fn the_invariant_catches_a_premature_mapping_change() {
    let mut w = World::new().expect("world");
    let vm = w.vm(1);
    let from = w.c.model().vm(&vm).expect("vm").host.clone();
    let other = w
        .hosts
        .iter()
        .find(|h| h.name != from)
        .expect("another host")
        .clone();
    let mut cfg = w.applied[&other.name].clone();
    for m in &mut cfg.mappings {
        if m.vm == vm {
            m.steering = Steering::Native;
        }
    }
    w.applied.insert(other.name.clone(), cfg);
    assert!(w.check().is_err());
}

/// A scripted run through the world: SR buffer migration with every notification order.
#[test]
fn scripted_sr_migrations_complete_in_every_notification_order() {
    for order in 0..6u8 {
        let mut w = World::new().expect("world");
        let run = [
            Op::Request {
                vm: 1,
                to: 3,
                strategy: 2,
            },
            Op::Deliver {
                host: 0,
                lose_ack: false,
            },
            Op::Deliver {
                host: 1,
                lose_ack: false,
            },
            Op::Deliver {
                host: 2,
                lose_ack: false,
            },
            Op::Deliver {
                host: 3,
                lose_ack: false,
            },
            Op::Deliver {
                host: 0,
                lose_ack: false,
            },
            Op::Deliver {
                host: 1,
                lose_ack: false,
            },
            Op::Deliver {
                host: 2,
                lose_ack: false,
            },
            Op::Deliver {
                host: 3,
                lose_ack: false,
            },
            Op::HypStep { vm: 1, order },
            Op::HypNotify { vm: 1 },
            Op::HypStep { vm: 1, order },
            Op::HypNotify { vm: 1 },
            Op::HypStep { vm: 1, order },
            Op::HypNotify { vm: 1 },
            Op::HypNotify { vm: 1 },
            Op::HypNotify { vm: 1 },
        ];
        for op in &run {
            w.apply(op).expect("op");
            w.check().expect("invariant");
        }
        w.settle().expect("settle");
        assert_eq!(w.finished.len(), 1);
        assert_eq!(w.finished[0].1, MigrationOutcome::Completed);
        assert_eq!(w.c.model().vm(&w.vm(1)).expect("vm").host, w.host(3));
    }
}

/// The generator must reach the interesting paths, or the property above proves little:
/// over a fixed-seed batch, every outcome and every phase where something can go wrong occurs.
#[test]
fn generator_reaches_every_outcome_and_timeout() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    use srmig_api::MigrationPhase;

    let mut runner = TestRunner::deterministic();
    let strategy = prop::collection::vec(op(), 1..120);
    let mut outcomes = BTreeMap::new();
    let mut phases = std::collections::HashSet::new();
    for _ in 0..300 {
        let ops = strategy.new_tree(&mut runner).expect("generate").current();
        let mut w = World::new().expect("world");
        for op in &ops {
            w.apply(op).expect("op");
        }
        w.settle().expect("settle");
        for (_, outcome) in &w.finished {
            let key = match outcome {
                MigrationOutcome::Completed => "completed",
                MigrationOutcome::Failed(_) => "failed",
                MigrationOutcome::Cancelled => "cancelled",
            };
            *outcomes.entry(key).or_insert(0u32) += 1;
        }
        for s in w.c.statuses() {
            phases.extend(s.phases.iter().map(|p| p.phase));
        }
    }
    for key in ["completed", "failed", "cancelled"] {
        assert!(
            outcomes.get(key).copied().unwrap_or(0) > 0,
            "{key} never happened: {outcomes:?}"
        );
    }
    for p in [
        MigrationPhase::SourcePaused,
        MigrationPhase::HypervisorCompleted,
        MigrationPhase::CancelRequested,
        MigrationPhase::Retried,
        MigrationPhase::ExpectRollbackAcks,
    ] {
        assert!(phases.contains(&p), "{p} never happened: {phases:?}");
    }
}
