//! `srmig sim paper`: the paper's experiment in virtual time, run the way `srmig lab paper`
//! runs it on the netns lab, and reported in the same shape (the lab's [`Report`]s and
//! [`srmig_lab::paper::paper_table`]).
//!
//! Three hosts, C (the client VM `vm0`), S (the migrating VM `vm1`) and D; `vm1` moves
//! S -> D -> S ... (`migrations` times) with the lab's timing: pre-copy 500 ms, pause 175 ms,
//! a slot of 4 push delays + pre-copy + pause + 1 s between requests, 1 s of workload before
//! the first and after the last. The paper's four configurations (no migration, traditional,
//! SR with End.SBUF dropping, SR with End.SBUF buffering) and, for comparison, the OVN-like
//! baseline the lab cannot run (docs/sim.md, "The OVN-like baseline"). Workloads: the 1 ms probe, HTTP session
//! openings at 100 per second and a TCP bulk transfer toward the VM (Reno, paced at
//! `tcp_mbps`), all at the same time (the lab runs them one after the other; they do not
//! share a bottleneck here).

use srmig_lab::report::{
    EchoFigures, Family, HttpReport, MigrationReport, OneWayReport, ProbeReport, Report,
    Strategy as LabStrategy, TcpReport, VmKind,
};

use crate::scenario::{MigrationModel, Scenario, ScheduledMigration, SimStrategy};
use crate::workload::percentile;
use crate::world::{self, Outcome, SimError};

/// Parameters of `sim paper`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PaperParams {
    /// Seed.
    pub seed: u64,
    /// Migrations per configuration.
    pub migrations: u32,
    /// Extra delay of every config push, ms (`lab paper`'s default: 100).
    pub propagation_delay_ms: f64,
    /// Pre-copy, ms.
    pub precopy_ms: f64,
    /// Pause, ms.
    pub pause_ms: f64,
    /// TCP bulk transfer toward the VM at this rate, Mb/s (0: no TCP workload).
    pub tcp_mbps: f64,
    /// OVN-like: the destination chassis delivers this long after the resume, ms
    /// ([`Scenario::ovn_activation_ms`]).
    pub ovn_activation_ms: f64,
}

impl Default for PaperParams {
    fn default() -> Self {
        PaperParams {
            seed: 1,
            migrations: 5,
            propagation_delay_ms: 100.0,
            precopy_ms: 500.0,
            pause_ms: 175.0,
            tcp_mbps: 1000.0,
            ovn_activation_ms: 1.0,
        }
    }
}

/// A row of `sim paper`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Configuration {
    /// One of the paper's configurations, as `lab paper` runs it.
    Paper(LabStrategy),
    /// The OVN-like baseline ([`SimStrategy::OvnLike`]): the VM's traffic cloned to both
    /// chassis, the destination's activated after the resume. The simulator's only; its
    /// report's `strategy` is `traditional`, the srmig migration underneath.
    OvnLike,
}

impl Configuration {
    /// The row's name in the table and in `--json` (`configuration`).
    pub fn name(self) -> &'static str {
        match self {
            Configuration::Paper(s) => srmig_lab::paper::configuration_name(s),
            Configuration::OvnLike => "OVN-like (sim only)",
        }
    }

    /// The lab strategy its report carries.
    pub fn lab_strategy(self) -> LabStrategy {
        match self {
            Configuration::Paper(s) => s,
            Configuration::OvnLike => LabStrategy::Traditional,
        }
    }
}

/// The paper's four configurations, then the OVN-like baseline, in table order.
pub const CONFIGURATIONS: [Configuration; 5] = [
    Configuration::Paper(LabStrategy::None),
    Configuration::Paper(LabStrategy::Traditional),
    Configuration::Paper(LabStrategy::SrDrop),
    Configuration::Paper(LabStrategy::SrBuffer),
    Configuration::OvnLike,
];

/// The scenario of one configuration (no migration: run it with [`world::baseline`]).
pub fn scenario(p: &PaperParams, config: Configuration) -> Scenario {
    let slot_ms = 4.0 * p.propagation_delay_ms + p.precopy_ms + p.pause_ms + 1000.0;
    let lead_ms = 1000.0;
    let migrations = match config {
        Configuration::Paper(LabStrategy::None) => Vec::new(),
        _ => (0..p.migrations)
            .map(|k| ScheduledMigration {
                vm: 1,
                to: if k % 2 == 0 { 2 } else { 1 },
                at_ms: (lead_ms + f64::from(k) * slot_ms) as u64,
            })
            .collect(),
    };
    let mut sc = Scenario {
        seed: p.seed,
        hosts: 3,
        vms_per_host: 1,
        strategy: match config {
            Configuration::Paper(LabStrategy::Traditional) => SimStrategy::Traditional,
            Configuration::Paper(LabStrategy::SrDrop) => SimStrategy::SrDrop,
            Configuration::Paper(_) => SimStrategy::SrBuffer,
            Configuration::OvnLike => SimStrategy::OvnLike,
        },
        migration: MigrationModel::Fixed {
            precopy_ms: p.precopy_ms,
            pause_ms: p.pause_ms,
        },
        migrations,
        ..Scenario::default()
    };
    sc.control.push_delay_ms = p.propagation_delay_ms;
    sc.workloads.probe_interval_ms = 1.0;
    sc.workloads.http_rate = 100.0;
    sc.workloads.tcp_mbps = p.tcp_mbps;
    sc.ovn_activation_ms = p.ovn_activation_ms;
    sc.workloads.lead_ms = lead_ms;
    sc.workloads.trail_ms = 1000.0;
    sc.tail_ms = 2000;
    sc
}

/// Runs every configuration; returns each one's outcome and lab-shaped report.
pub fn run(p: &PaperParams) -> Result<Vec<(Configuration, Outcome, Report)>, SimError> {
    let mut out = Vec::new();
    for config in CONFIGURATIONS {
        let sc = scenario(p, config);
        let outcome = match config {
            Configuration::Paper(LabStrategy::None) => world::baseline(&sc, 1, 5000)?,
            _ => world::run(&sc)?,
        };
        let report = report(config.lab_strategy(), &outcome);
        out.push((config, outcome, report));
    }
    Ok(out)
}

/// The lab-shaped report of one run.
pub fn report(strategy: LabStrategy, o: &Outcome) -> Report {
    let migrations = o
        .migrations
        .iter()
        .map(|m| {
            let pause_ms = match (m.paused_at, m.resumed_at) {
                (Some(a), Some(b)) => (b - a) as f64 / 1e6,
                _ => 0.0,
            };
            let flow = m.probe.and_then(|i| o.probes.get(i));
            let (downtime, release) = match (flow, m.paused_at, m.resumed_at, m.finished_at) {
                (Some(f), Some(paused), Some(resumed), Some(end)) => {
                    let from = paused.saturating_sub(50_000_000).max(m.requested_at);
                    let release = f
                        .vm_arrivals
                        .iter()
                        .find(|&&t| t >= resumed)
                        .map(|t| (t - resumed) as f64 / 1e6);
                    (Some(f.longest_gap_ms(from, end.max(resumed))), release)
                }
                _ => (None, None),
            };
            MigrationReport {
                vm: Some(format!("vm{}", m.vm)),
                pause_ms,
                total_ms: m
                    .finished_at
                    .map_or(0.0, |f| (f - m.requested_at) as f64 / 1e6),
                blackout_ms: pause_ms,
                network_downtime_ms: downtime,
                release_latency_ms: release,
                ..MigrationReport::default()
            }
        })
        .collect();
    let first_pause = o.migrations.iter().filter_map(|m| m.paused_at).min();
    let probe = merge_probes(o, first_pause);
    let http = http_report(o);
    Report {
        strategy,
        vm_kind: VmKind::Sim,
        migrations,
        probe,
        http,
        tcp: tcp_report(o),
        family: Family::Ipv6,
        probe_v4: None,
        http_v4: None,
        tcp_v4: None,
        raw: None,
    }
}

/// The probe figures of every stream together (the lab's report shape).
pub fn merge_probes(o: &Outcome, first_pause: Option<u64>) -> Option<ProbeReport> {
    if o.probes.is_empty() {
        return None;
    }
    let mut r = ProbeReport::default();
    let mut at_vm = OneWayReport::default();
    let mut echo = EchoFigures::default();
    let mut rtts = Vec::new();
    let mut before = Vec::new();
    for f in &o.probes {
        r.sent += f.sent.len() as u64;
        for (sent, ans) in f.sent.iter().zip(&f.answered) {
            if let Some(a) = ans {
                let rtt = (a - sent) as f64 / 1e6;
                rtts.push(rtt);
                if first_pause.is_none_or(|p| *sent < p) {
                    before.push(rtt);
                }
            }
        }
        at_vm.received += f.at_vm.iter().filter(|n| **n > 0).count() as u64;
        at_vm.lost += f.lost_at_vm();
        at_vm.duplicated += f.vm_duplicated;
        at_vm.reordered += f.vm_reordered;
        echo.duplicated += f.echo_duplicated;
        echo.reordered += f.echo_reordered;
    }
    r.received = rtts.len() as u64;
    r.lost = r.sent - r.received;
    r.duplicated = at_vm.duplicated.max(echo.duplicated);
    r.reordered = at_vm.reordered.max(echo.reordered);
    r.baseline_rtt_ms = percentile(&mut before, 50.0);
    r.median_rtt_ms = percentile(&mut rtts, 50.0);
    r.max_extra_delay_ms = rtts
        .iter()
        .fold(0.0f64, |m, x| m.max(x - r.baseline_rtt_ms));
    r.delayed_gt_10ms = rtts
        .iter()
        .filter(|x| **x - r.baseline_rtt_ms > 10.0)
        .count() as u64;
    r.at_vm = Some(at_vm);
    r.echo = Some(echo);
    Some(r)
}

/// The HTTP figures of every flow together.
pub fn http_report(o: &Outcome) -> Option<HttpReport> {
    if o.http.is_empty() {
        return None;
    }
    let mut lat = Vec::new();
    let mut failed = 0;
    for f in &o.http {
        for s in &f.sessions {
            match s.done {
                Some(d) => lat.push((d - s.started) as f64 / 1e6),
                None => failed += 1,
            }
        }
    }
    let slow = lat.iter().filter(|x| **x >= 900.0).count() as u64;
    Some(HttpReport {
        requests: lat.len() as u64 + failed,
        failed,
        p50_ms: percentile(&mut lat, 50.0),
        p99_ms: percentile(&mut lat, 99.0),
        max_ms: lat.iter().fold(0.0, |m: f64, x| m.max(*x)),
        slow_ge_900ms: slow,
        max_start_delay_ms: 0.0,
    })
}

/// The TCP figures of the first bulk flow: goodput per 100 ms bin while it ran.
pub fn tcp_report(o: &Outcome) -> Option<TcpReport> {
    let f = o.tcp.first()?;
    let mut bins = f.bins_mbps();
    // The last bin is cut by the stop; drop it as the lab does with partial bins.
    bins.pop();
    if bins.is_empty() {
        return None;
    }
    let mut sorted = bins.clone();
    Some(TcpReport {
        median_mbps: percentile(&mut sorted, 50.0),
        worst_bin_mbps: bins.iter().fold(f64::INFINITY, |m, x| m.min(*x)),
        bins_mbps: bins,
        retransmits: f.retransmits,
        bin_ms: crate::workload::BIN_NS as f64 / 1e6,
        bytes: f.rcv_nxt * crate::workload::MSS as u64,
        rto_seen: f.rtos > 0,
        total_rto: Some(f.rtos),
        // The modelled TCP has no D-SACK and no reordering detection.
        spurious_retransmits: None,
        reordering_seen: None,
    })
}
