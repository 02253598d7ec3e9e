//! Random small data centers (with or without virtual networks), schedules and failures:
//! every invariant of the simulator must hold for sr-buffer (it fails the run loudly, with the
//! seed, if one breaks), and every migration of every strategy ends, completed or rolled back.

use proptest::prelude::*;
use srmig_api::MigrationOutcome;
use srmig_sim::scenario::{Crash, MigrationModel, Partition, Scenario, SimStrategy};
use srmig_sim::world;

#[derive(Debug, Clone)]
struct Case {
    seed: u64,
    hosts: usize,
    vms_per_host: usize,
    migrations: usize,
    concurrent: usize,
    control_loss: f64,
    jitter_ms: f64,
    push_delay_ms: f64,
    partition: Option<(usize, u64, u64)>,
    crash: Option<(usize, u64, u64)>,
    pause_ms: f64,
    /// VMs per virtual network (0: none).
    network_size: usize,
}

fn case() -> impl Strategy<Value = Case> {
    (
        any::<u64>(),
        3usize..8,
        2usize..4,
        1usize..4,
        1usize..3,
        prop_oneof![Just(0.0), 0.0..0.1f64],
        0.0..5.0f64,
        prop_oneof![Just(0.0), 0.0..150.0f64],
        proptest::option::of((0usize..8, 0u64..3000, 100u64..1500)),
        proptest::option::of((0usize..8, 0u64..3000, 100u64..2000)),
        20.0..300.0f64,
        prop_oneof![Just(0usize), 2usize..6],
    )
        .prop_map(
            |(
                seed,
                hosts,
                vms_per_host,
                migrations,
                concurrent,
                control_loss,
                jitter_ms,
                push_delay_ms,
                partition,
                crash,
                pause_ms,
                network_size,
            )| Case {
                seed,
                hosts,
                vms_per_host,
                migrations,
                concurrent,
                control_loss,
                jitter_ms,
                push_delay_ms,
                partition: partition.map(|(h, a, d)| (h % hosts, a, d)),
                crash: crash.map(|(h, a, d)| (h % hosts, a, d)),
                pause_ms,
                network_size,
            },
        )
}

fn scenario(c: &Case, strategy: SimStrategy, failures: bool) -> Scenario {
    let mut sc = Scenario {
        seed: c.seed,
        hosts: c.hosts,
        hosts_per_leaf: 2,
        vms_per_host: c.vms_per_host,
        network_size: c.network_size,
        strategy,
        random_migrations: c.migrations,
        concurrent: c.concurrent,
        migration: MigrationModel::Fixed {
            precopy_ms: 300.0,
            pause_ms: c.pause_ms,
        },
        tail_ms: 500,
        ..Scenario::default()
    };
    sc.control.loss = c.control_loss;
    sc.control.jitter_ms = c.jitter_ms;
    sc.control.push_delay_ms = c.push_delay_ms;
    sc.workloads.probe_interval_ms = 2.0;
    sc.workloads.http_rate = 20.0;
    if failures {
        if let Some((h, at, d)) = c.partition {
            sc.partitions.push(Partition {
                hosts: vec![h],
                from_ms: at,
                until_ms: at + d,
            });
        }
        if let Some((h, at, d)) = c.crash {
            sc.crashes.push(Crash {
                host: h,
                at_ms: at,
                down_ms: d,
            });
        }
    }
    sc
}

fn ended(o: &world::Outcome) {
    for m in &o.migrations {
        assert!(
            m.refused.is_some() || m.outcome.is_some(),
            "seed {}: migration {m:?} never ended",
            o.seed
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Control-plane delay, jitter, loss and partitions: sr-buffer still loses, duplicates
    /// and reorders nothing (checked on every arrival and at the end by the simulator), and
    /// every migration completes or rolls back.
    #[test]
    fn sr_buffer_holds_every_invariant_under_control_plane_faults(c in case()) {
        let mut sc = scenario(&c, SimStrategy::SrBuffer, true);
        sc.crashes.clear();
        let o = world::run(&sc).map_err(|e| TestCaseError::fail(e.to_string()))?;
        ended(&o);
        let lost: u64 = o.probes.iter().map(|p| p.lost_at_vm()).sum();
        prop_assert_eq!(lost, 0);
        prop_assert!(o.stats.checks > 0);
    }

    /// A host's srmigd crashing and restarting: probes may be lost (the host forwards
    /// nothing while down) but every migration still ends and the buffers stay bounded.
    #[test]
    fn every_strategy_ends_every_migration_with_crashes(c in case()) {
        for strategy in SimStrategy::ALL {
            let sc = scenario(&c, strategy, true);
            let o = world::run(&sc).map_err(|e| TestCaseError::fail(e.to_string()))?;
            ended(&o);
        }
    }
}

#[test]
fn a_seed_replays_the_same_run() {
    let c = Case {
        seed: 42,
        hosts: 5,
        vms_per_host: 2,
        migrations: 3,
        concurrent: 2,
        control_loss: 0.05,
        jitter_ms: 2.0,
        push_delay_ms: 20.0,
        partition: Some((1, 500, 400)),
        crash: None,
        pause_ms: 120.0,
        network_size: 3,
    };
    let sc = scenario(&c, SimStrategy::SrBuffer, true);
    let a = world::run(&sc).expect("runs");
    let b = world::run(&sc).expect("runs");
    assert_eq!(a.stats, b.stats);
    assert_eq!(a.migrations, b.migrations);
    assert_eq!(a.sim_ns, b.sim_ns);
    let mut other = sc.clone();
    other.seed = 43;
    let c = world::run(&other).expect("runs");
    assert_ne!((a.stats.events, a.sim_ns), (c.stats.events, c.sim_ns));
}

#[test]
fn a_migration_refused_by_the_controller_is_recorded_not_run() {
    // Two migrations of the same VM at the same time: the controller refuses the second.
    let sc = Scenario {
        hosts: 3,
        migrations: vec![
            srmig_sim::scenario::ScheduledMigration {
                vm: 1,
                to: 2,
                at_ms: 500,
            },
            srmig_sim::scenario::ScheduledMigration {
                vm: 1,
                to: 0,
                at_ms: 500,
            },
        ],
        ..Scenario::default()
    };
    let o = world::run(&sc).expect("runs");
    assert_eq!(o.migrations.len(), 2);
    assert_eq!(o.migrations[0].outcome, Some(MigrationOutcome::Completed));
    assert!(
        o.migrations[1]
            .refused
            .as_deref()
            .is_some_and(|r| r.contains("vm1")),
        "{:?}",
        o.migrations[1]
    );
}

#[test]
fn a_broken_invariant_names_the_seed_and_the_last_events() {
    // End.SBUF bounded at 2 packets per VM with a 1 ms probe over a 175 ms pause: the buffer
    // drops (BufferFull), so probes are lost, which sr-buffer's invariant must report.
    let mut sc = Scenario {
        seed: 9,
        hosts: 3,
        migrations: vec![srmig_sim::scenario::ScheduledMigration {
            vm: 1,
            to: 2,
            at_ms: 500,
        }],
        ..Scenario::default()
    };
    sc.buffer.per_vm_packets = 2;
    let e = world::run(&sc).expect_err("probes are lost");
    let text = e.to_string();
    assert!(text.contains("seed 9"), "{text}");
    assert!(text.contains("never reached"), "{text}");
    assert!(text.contains("last events"), "{text}");
}
