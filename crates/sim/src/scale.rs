//! `srmig sim scale`: many hosts, many VMs, many migrations, per strategy.
//!
//! `vms` VMs spread evenly over `hosts` hosts; `migrations` of them (chosen by the seed, each
//! at most once) move to a random other host, `concurrent` at a time (a new one is requested
//! when one ends, after an exponential gap of 50 ms on average). Each migrating VM is probed
//! every `probe_interval_ms` from a VM that stays put on another host, from 200 ms before its
//! request until 300 ms after its end. Migrations follow QEMU's pre-copy model
//! ([`crate::hypervisor`]) with `memory_mib` of guest memory.
//!
//! The simulation itself never reads a clock; this command measures the wall time around it
//! to report the speedup (`sim_seconds / wall_seconds`).

use serde::{Deserialize, Serialize};
use srmig_api::MigrationOutcome;

use crate::paper;
use crate::scenario::{MigrationModel, Scenario, SimStrategy};
use crate::workload::percentile;
use crate::world::{Outcome, SimError, World};

/// Parameters of `sim scale`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaleParams {
    /// Hosts.
    pub hosts: usize,
    /// VMs (spread evenly: rounded up to a multiple of `hosts`).
    pub vms: usize,
    /// Migrations.
    pub migrations: usize,
    /// Migrations in flight at once.
    pub concurrent: usize,
    /// Seed.
    pub seed: u64,
    /// Strategies to run, each over the same data center and schedule.
    pub strategies: Vec<SimStrategy>,
    /// Probe interval, ms.
    pub probe_interval_ms: f64,
    /// Guest memory, MiB.
    pub memory_mib: f64,
    /// VMs per virtual network (0: none, every host is told about every VM).
    pub network_size: usize,
    /// Leave each data center allocated when its run ends ([`World::leak_at_end`]): for a
    /// process that exits right after.
    pub leak_at_end: bool,
}

impl Default for ScaleParams {
    fn default() -> Self {
        ScaleParams {
            hosts: 100,
            vms: 1000,
            migrations: 100,
            concurrent: 10,
            seed: 1,
            strategies: SimStrategy::ALL.to_vec(),
            probe_interval_ms: 10.0,
            memory_mib: 1024.0,
            network_size: 20,
            leak_at_end: false,
        }
    }
}

/// p50 / p99 / max of a figure, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
    /// Values.
    pub n: usize,
}

impl Spread {
    fn of(mut v: Vec<f64>) -> Spread {
        Spread {
            p50: percentile(&mut v, 50.0),
            p99: percentile(&mut v, 99.0),
            max: v.iter().fold(0.0, |m: f64, x| m.max(*x)),
            n: v.len(),
        }
    }
}

/// One strategy's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StrategyFigures {
    /// The strategy.
    pub strategy: SimStrategy,
    /// Migrations completed.
    pub completed: usize,
    /// Migrations failed or cancelled (rolled back).
    pub rolled_back: usize,
    /// Migrations the controller refused.
    pub refused: usize,
    /// Probes sent to migrating VMs.
    pub probes_sent: u64,
    /// Probes that never reached their VM.
    pub lost: u64,
    /// Probes that reached their VM twice.
    pub duplicated: u64,
    /// Probes that reached their VM after a later one.
    pub reordered: u64,
    /// Answers lost on the way back (the client's view, minus `lost`).
    pub answers_lost: u64,
    /// The longest time without a probe reaching the VM, per migration.
    pub network_downtime_ms: Spread,
    /// The guest's pause, per migration.
    pub pause_ms: Spread,
    /// From the request to the SR path armed on every ingress, per migration.
    pub arm_ms: Spread,
    /// From the hypervisor's completion to the end (commit, cleanup), per migration.
    pub commit_ms: Spread,
    /// Messages from the controller to hosts.
    pub controller_messages: u64,
    /// Whole-config pushes among them.
    pub config_pushes: u64,
    /// Delta pushes among them.
    pub delta_pushes: u64,
    /// Messages from hosts (acks, reports) and hypervisors to the controller.
    pub agent_messages: u64,
    /// Frames through dataplanes.
    pub frames: u64,
    /// Dataplane drops by reason.
    pub drops: Vec<(String, u64)>,
    /// Events.
    pub events: u64,
    /// Invariant checks made (all held, or the run would have failed).
    pub invariant_checks: u64,
    /// Virtual time simulated, s.
    pub sim_seconds: f64,
    /// Wall time to build the data center (hosts' first configs included), s.
    pub setup_wall_seconds: f64,
    /// Wall time of the whole run, s.
    pub wall_seconds: f64,
    /// `sim_seconds / wall_seconds`.
    pub speedup: f64,
}

/// The report of `sim scale`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleReport {
    /// Hosts.
    pub hosts: usize,
    /// VMs.
    pub vms: usize,
    /// Migrations requested per strategy.
    pub migrations: usize,
    /// Migrations in flight at once.
    pub concurrent: usize,
    /// Seed.
    pub seed: u64,
    /// Per strategy.
    pub strategies: Vec<StrategyFigures>,
    /// Virtual time, all strategies, s.
    pub sim_seconds: f64,
    /// Wall time, all strategies, s.
    pub wall_seconds: f64,
    /// `sim_seconds / wall_seconds`.
    pub speedup: f64,
}

/// The CLI's name of a strategy.
pub fn strategy_name(s: SimStrategy) -> &'static str {
    s.name()
}

/// The scenario of one strategy.
pub fn scenario(p: &ScaleParams, strategy: SimStrategy) -> Scenario {
    let hosts = p.hosts.max(2);
    let vms_per_host = p.vms.div_ceil(hosts).max(1);
    let mut sc = Scenario {
        seed: p.seed,
        hosts,
        hosts_per_leaf: 32,
        vms_per_host,
        network_size: p.network_size,
        strategy,
        random_migrations: p.migrations,
        concurrent: p.concurrent.max(1),
        migration: MigrationModel::Qemu {
            memory_mib: p.memory_mib,
            dirty_mib_s: 50.0,
            bandwidth_mib_s: 1100.0,
            downtime_limit_ms: 300.0,
            max_rounds: 30,
            setup_ms: 200.0,
            switchover_ms: 30.0,
        },
        migration_spread: 0.5,
        tail_ms: 500,
        ..Scenario::default()
    };
    // Small End.SBUF bounds so that thousands of engines fit in memory; a pause of ~100 ms
    // at a 10 ms probe interval holds ~10 packets per VM.
    sc.buffer.per_vm_packets = 256;
    sc.buffer.per_vm_bytes = 256 * 2048;
    sc.buffer.global_packets = 1024;
    sc.buffer.global_bytes = 1024 * 2048;
    // A fence holds what one ingress sends directly while its marker is on the way (a few
    // milliseconds: at most a probe or two per ingress); a bound reached would deliver out of
    // order, which the invariants catch.
    sc.buffer.fence_per_ingress_packets = 16;
    sc.buffer.fence_packets = 64;
    sc.buffer.fence_bytes = 64 * 2048;
    sc.workloads.probe_interval_ms = p.probe_interval_ms;
    sc.workloads.http_rate = 0.0;
    sc
}

/// Runs every strategy of `p`; `progress` is told each strategy's start.
pub fn run(p: &ScaleParams, mut progress: impl FnMut(&str)) -> Result<ScaleReport, SimError> {
    let mut strategies = Vec::new();
    for &s in &p.strategies {
        progress(&format!(
            "{}: {} hosts, {} VMs, {} migrations ({} at a time)",
            strategy_name(s),
            p.hosts,
            p.vms,
            p.migrations,
            p.concurrent
        ));
        let sc = scenario(p, s);
        let t0 = std::time::Instant::now();
        let mut world = World::new(&sc)?;
        if p.leak_at_end {
            world.leak_at_end();
        }
        let setup = t0.elapsed().as_secs_f64();
        let outcome = world.run()?;
        let wall = t0.elapsed().as_secs_f64();
        strategies.push(figures(&outcome, setup, wall));
    }
    let sim_seconds = strategies.iter().map(|f| f.sim_seconds).sum::<f64>();
    let wall_seconds = strategies.iter().map(|f| f.wall_seconds).sum::<f64>();
    Ok(ScaleReport {
        hosts: p.hosts,
        vms: p.hosts.max(2) * p.vms.div_ceil(p.hosts.max(2)).max(1),
        migrations: p.migrations,
        concurrent: p.concurrent,
        seed: p.seed,
        strategies,
        sim_seconds,
        wall_seconds,
        speedup: sim_seconds / wall_seconds.max(1e-9),
    })
}

/// Runs one scenario (`srmig sim run`) and returns its figures.
pub fn run_scenario(sc: &Scenario) -> Result<StrategyFigures, SimError> {
    let t0 = std::time::Instant::now();
    let mut world = World::new(sc)?;
    world.start_scheduled_workloads();
    let setup = t0.elapsed().as_secs_f64();
    let outcome = world.run()?;
    Ok(figures(&outcome, setup, t0.elapsed().as_secs_f64()))
}

/// One strategy's figures from its outcome.
pub fn figures(o: &Outcome, setup_wall_seconds: f64, wall_seconds: f64) -> StrategyFigures {
    let probe = paper::merge_probes(o, None).unwrap_or_default();
    let at_vm = probe.at_vm.clone().unwrap_or_default();
    let mut downtime = Vec::new();
    let mut pause = Vec::new();
    for m in &o.migrations {
        if let (Some(f), Some(paused), Some(resumed), Some(end)) = (
            m.probe.and_then(|i| o.probes.get(i)),
            m.paused_at,
            m.resumed_at,
            m.finished_at,
        ) {
            let from = paused.saturating_sub(50_000_000).max(m.requested_at);
            downtime.push(f.longest_gap_ms(from, end.max(resumed)));
            pause.push((resumed - paused) as f64 / 1e6);
        }
    }
    let sim_seconds = o.sim_ns as f64 / 1e9;
    StrategyFigures {
        strategy: o.strategy,
        completed: o
            .migrations
            .iter()
            .filter(|m| m.outcome == Some(MigrationOutcome::Completed))
            .count(),
        rolled_back: o
            .migrations
            .iter()
            .filter(|m| {
                matches!(
                    m.outcome,
                    Some(MigrationOutcome::Failed(_) | MigrationOutcome::Cancelled)
                )
            })
            .count(),
        refused: o.migrations.iter().filter(|m| m.refused.is_some()).count(),
        probes_sent: probe.sent,
        lost: at_vm.lost,
        duplicated: at_vm.duplicated,
        reordered: at_vm.reordered,
        answers_lost: probe.lost.saturating_sub(at_vm.lost),
        network_downtime_ms: Spread::of(downtime),
        pause_ms: Spread::of(pause),
        arm_ms: Spread::of(o.migrations.iter().filter_map(|m| m.arm_ms).collect()),
        commit_ms: Spread::of(o.migrations.iter().filter_map(|m| m.commit_ms).collect()),
        controller_messages: o.stats.controller_messages,
        config_pushes: o.stats.config_pushes,
        delta_pushes: o.stats.delta_pushes,
        agent_messages: o.stats.agent_messages,
        frames: o.stats.frames,
        drops: o.drops.clone(),
        events: o.stats.events,
        invariant_checks: o.stats.checks,
        sim_seconds,
        setup_wall_seconds,
        wall_seconds,
        speedup: sim_seconds / wall_seconds.max(1e-9),
    }
}
