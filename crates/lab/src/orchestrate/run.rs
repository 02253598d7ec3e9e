//! `srmig lab migrate`: workloads from the client VM to the migrating VM during N consecutive
//! migrations (S -> D -> S ...), and the report.
//!
//! Each selected workload runs alone during its own N migrations (with `all`: probe, then
//! HTTP, then TCP, as the paper measured each workload separately), so a TCP bulk transfer
//! does not fill the probe's buffer or queue. One workload phase:
//!
//! ```text
//!  0        warmup      warmup+slot        ...                      duration
//!  |─────────|──────────────|──────────── ... ─────────|──── tail ───|
//!  client starts   migration 1      migration 2          last done     client stops
//! ```
//!
//! Migration `i` is requested at `warmup + i * slot`, where a slot is the expected length of
//! one migration (4 x propagation delay + pre-copy + downtime) plus `gap`; a migration that
//! overruns delays the next, and the run fails if the last one ends after the workload.
//! With `--migrations 0` (the no-migration baseline) the workload runs for `baseline`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;
use srmig_api::Strategy;

use super::error::OrchestrateError;
use super::fault::{FaultPlan, FaultRecord};
use super::plan::{Plan, VmPlan};
use super::testbed::{MigrationRecord, MigrationTiming, Testbed, TestbedOptions};
use crate::report::{
    self, Family, MigrationReport, ProbeReport, RawSeries, Report, TcpReport, VmKind, VmProbeReport,
};
use crate::workload::http::{
    run_http, summarize as summarize_http, HttpConfig, HttpSample, HttpServer,
};
use crate::workload::probe::{run_probe, Baseline, ProbeConfig, ProbeResponder, ProbeResult};
use crate::workload::tcp::{
    run_tcp_sender, tcp_report, tcp_report_from_sender, TcpReceiver, TcpSenderConfig,
};
use crate::workload::{sleep_until, WorkloadError};

/// A probe of one migrating VM (index in the plan) over one family (`true`: IPv4).
type ProbeKey = (usize, bool);

/// A workload of the paper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    /// 1 ms UDP probes with sequence numbers, echoed by the VM.
    Probe,
    /// New TCP connection + request + response, 100 per second by default.
    Http,
    /// TCP bulk transfer to the VM, throughput in 100 ms bins.
    Tcp,
}

impl WorkloadKind {
    /// Every workload, in the order `all` runs them.
    pub const ALL: [WorkloadKind; 3] = [WorkloadKind::Probe, WorkloadKind::Http, WorkloadKind::Tcp];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::Probe => "probe",
            WorkloadKind::Http => "http",
            WorkloadKind::Tcp => "tcp",
        }
    }

    /// Parses `probe`, `http`, `tcp`, `all`, or a comma-separated list of them.
    pub fn parse_set(text: &str) -> Result<Vec<WorkloadKind>, OrchestrateError> {
        let mut set = Vec::new();
        for part in text.split(',').map(str::trim) {
            match part {
                "all" => set.extend(WorkloadKind::ALL),
                "probe" => set.push(WorkloadKind::Probe),
                "http" => set.push(WorkloadKind::Http),
                "tcp" => set.push(WorkloadKind::Tcp),
                other => {
                    return Err(OrchestrateError::Options(format!(
                        "unknown workload {other:?}: expected probe, http, tcp or all"
                    )))
                }
            }
        }
        set.sort();
        set.dedup();
        Ok(set)
    }
}

/// Parses a `--vm-kind` value.
pub fn parse_vm_kind(text: &str) -> Result<VmKind, OrchestrateError> {
    match text {
        "netns" => Ok(VmKind::Netns),
        "qemu" => Ok(VmKind::Qemu),
        "libvirt" => Ok(VmKind::Libvirt),
        other => Err(OrchestrateError::Options(format!(
            "unknown VM kind {other:?}: expected netns, qemu or libvirt"
        ))),
    }
}

/// Parses a `--strategy` value.
pub fn parse_strategy(text: &str) -> Result<Strategy, OrchestrateError> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).map_err(|_| {
        OrchestrateError::Options(format!(
            "unknown strategy {text:?}: expected traditional, sr-drop or sr-buffer"
        ))
    })
}

/// What one run measures on a [`Testbed`].
#[derive(Debug, Clone, PartialEq)]
pub struct RunPlan {
    /// Steering during the migrations.
    pub strategy: Strategy,
    /// Workloads, each run alone during its own `migrations` migrations.
    pub workloads: Vec<WorkloadKind>,
    /// Consecutive migrations per workload; 0 is the no-migration baseline.
    pub migrations: u32,
    /// Emulated pre-copy and downtime.
    pub timing: MigrationTiming,
    /// Idle time after each migration's expected end, before the next one.
    pub gap: Duration,
    /// Workload time before the first migration.
    pub warmup: Duration,
    /// Workload time after the last migration's expected end.
    pub tail: Duration,
    /// Workload duration of a no-migration baseline run.
    pub baseline: Duration,
    /// Probe interval (1 ms in the paper).
    pub probe_interval: Duration,
    /// Baseline RTT for the probe's extra delay (e.g. the median of a baseline run); default:
    /// the median of the first 100 answers of the run (before any migration).
    pub probe_baseline_ms: Option<f64>,
    /// New HTTP sessions per second.
    pub http_rate: u32,
    /// The VM kind the plan is for (a QEMU migration's length is QEMU's, not `timing`).
    pub vm_kind: VmKind,
    /// Faults injected in every migration (`--fault`; see [`super::fault`]).
    pub faults: FaultPlan,
    /// The workloads' address families (`--family`): with `dual`, each workload runs over
    /// IPv6 and IPv4 at the same time (the VMs are always dual-stack).
    pub family: Family,
    /// Chained migrations (`--chain`; netns, at least two VMs and four hosts): see
    /// [`Plan::round_moves`](super::plan::Plan::round_moves).
    pub chain: bool,
    /// Migrating VMs of the testbed (set from its plan by [`run`]): each VM beyond the
    /// first adds [`PER_VM_ALLOWANCE`] to a round's slot.
    pub vms: usize,
}

/// What each concurrent migration beyond the first adds to a round's slot: N VMs' steps
/// share this machine's two cores with the workloads (10 VMs: a round takes ~2.8 s from the
/// requests to the last completion with the defaults, against 0.9 s for one).
pub const PER_VM_ALLOWANCE: Duration = Duration::from_millis(250);

/// The expected length of a QEMU live migration in the lab, for scheduling: starting the
/// destination QEMU (~0.3 s), the driver's attach grace (0.15 s), pre-copy of a 128 MiB TCG
/// guest (0.5-1.5 s here), completion and the final pushes.
pub const QEMU_MIGRATION_ESTIMATE: Duration = Duration::from_secs(3);

/// The same for a libvirt migration: libvirt's begin/prepare steps, the hook arming the path,
/// the destination QEMU started by libvirtd (~1 s here), pre-copy, libvirt's finish and
/// confirm steps (measured 1.5-2.7 s on 2 busy cores).
pub const LIBVIRT_MIGRATION_ESTIMATE: Duration = Duration::from_secs(5);

impl RunPlan {
    /// Defaults: 500 ms pre-copy, 175 ms downtime, 1 s gap, 1 s warmup and tail, 5 s
    /// baseline, 1 ms probes, 100 HTTP sessions per second.
    pub fn new(strategy: Strategy, workloads: Vec<WorkloadKind>, migrations: u32) -> RunPlan {
        RunPlan {
            strategy,
            workloads,
            migrations,
            timing: MigrationTiming::default(),
            gap: Duration::from_secs(1),
            warmup: Duration::from_secs(1),
            tail: Duration::from_secs(1),
            baseline: Duration::from_secs(5),
            probe_interval: Duration::from_millis(1),
            probe_baseline_ms: None,
            http_rate: 100,
            vm_kind: VmKind::Netns,
            faults: FaultPlan::default(),
            family: Family::Dual,
            chain: false,
            vms: 1,
        }
    }

    /// Time between two migration requests (rounds of concurrent migrations: a chain
    /// round is up to three migrations one after the other).
    pub fn slot(&self, propagation_delay: Duration) -> Duration {
        let migration = match self.vm_kind {
            VmKind::Netns | VmKind::Sim => self.timing.precopy + self.timing.downtime,
            VmKind::Qemu => QEMU_MIGRATION_ESTIMATE,
            VmKind::Libvirt => LIBVIRT_MIGRATION_ESTIMATE,
        };
        let serial = if self.chain { 3 } else { 1 };
        let concurrent = PER_VM_ALLOWANCE * u32::try_from(self.vms.saturating_sub(1)).unwrap_or(0);
        (propagation_delay * 4 + migration) * serial
            + concurrent
            + self.gap
            + self.faults.allowance()
    }

    /// How long each workload runs.
    pub fn workload_duration(&self, propagation_delay: Duration) -> Duration {
        if self.migrations == 0 {
            return self.baseline;
        }
        self.warmup + self.slot(propagation_delay) * self.migrations + self.tail
    }

    fn validate(&self) -> Result<(), OrchestrateError> {
        let bad = |m: &str| Err(OrchestrateError::Options(m.to_owned()));
        if self.workloads.is_empty() {
            return bad("no workload selected");
        }
        if self.timing.downtime.is_zero() {
            return bad("the downtime must be > 0 ms");
        }
        if self.timing.downtime > Duration::from_secs(10)
            || self.timing.precopy > Duration::from_secs(60)
        {
            return bad("downtime is limited to 10 s and pre-copy to 60 s");
        }
        if self.migrations > 1000 {
            return bad("at most 1000 migrations per workload");
        }
        if self.probe_interval.is_zero() || self.http_rate == 0 {
            return bad("the probe interval and the HTTP rate must be > 0");
        }
        if self.migrations == 0 && self.baseline < Duration::from_millis(500) {
            return bad("a baseline run needs at least 500 ms");
        }
        if self.warmup < Duration::from_millis(200) {
            return bad("the warmup must be at least 200 ms (the probe's baseline RTT)");
        }
        Ok(())
    }
}

/// One migration of the run with the workload it happened under.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkloadMigration {
    /// The workload running (its client's clock is the origin of the record's times).
    pub workload: WorkloadKind,
    /// What happened.
    #[serde(flatten)]
    pub record: MigrationRecord,
    /// Where the longest gap in deliveries to a netns VM was (the `network_downtime_ms`),
    /// for finding out what made it longer than the pause.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vm_gap: Option<DeliveryGap>,
}

/// The longest gap between two probes delivered to the VM around a migration: the probes
/// on both sides (their sequence numbers: the `raw.probe` entry with that `seq` says when
/// it was sent) and when they arrived, ms since the workload's origin.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DeliveryGap {
    /// The last probe before the gap.
    pub seq_before: u64,
    /// When it reached the VM.
    pub before_ms: f64,
    /// The first probe after the gap.
    pub seq_after: u64,
    /// When it reached the VM.
    pub after_ms: f64,
}

/// A migration seen from a netns VM's deliveries.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct VmView {
    network_downtime_ms: Option<f64>,
    release_latency_ms: Option<f64>,
    gap: Option<DeliveryGap>,
}

/// Parameters of the run, recorded in the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunParams {
    /// Pre-copy, ms.
    pub precopy_ms: f64,
    /// Requested downtime, ms.
    pub downtime_ms: f64,
    /// Controller push delay, ms.
    pub propagation_delay_ms: f64,
    /// Migrations per workload.
    pub migrations_per_workload: u32,
    /// Each workload's duration, ms.
    pub workload_duration_ms: f64,
    /// Migration request spacing, ms.
    pub slot_ms: f64,
    /// Probe interval, ms.
    pub probe_interval_ms: f64,
    /// HTTP sessions per second.
    pub http_rate_per_s: u32,
    /// Workloads, in run order.
    pub workloads: Vec<WorkloadKind>,
}

/// Details beyond the contract fields, written under the report's `raw` key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunDetails {
    /// Every migration, with timestamps relative to its workload's start.
    pub migrations: Vec<WorkloadMigration>,
    /// The run's parameters.
    pub params: RunParams,
    /// Drops counted by each srmigd during the run, by reason, with its ports' losses
    /// (`vm1-port.tx_queue_full`) and its commit fence's anomalies (`fence.bypassed`,
    /// `fence.timeouts`, ...: out of order, not lost); growth during the run, non-zero only.
    pub drops: BTreeMap<String, BTreeMap<String, u64>>,
    /// The paper's TCP figure: the worst 500 ms window (5 consecutive 100 ms bins), Mb/s.
    pub tcp_worst_500ms_mbps: Option<f64>,
    /// QEMU: the guest's boot id, the same before and after the run (checked: a changed
    /// boot id fails the run with [`OrchestrateError::GuestRebooted`]).
    pub guest_boot_id: Option<String>,
    /// How the VM's counters grew during the run. QEMU: its responder's echo counters
    /// (`echo_rx`, `echo_tx`, `echo_tx_retried`, `echo_tx_failed`), its kernel's UDP
    /// errors (`udp_rcvbuf_errors`, ...: where a probe the network delivered died) and TCP
    /// receive counters (`tcp_ofo_queued`, ...). netns: the TCP receive counters of the first
    /// migrating VM's namespace ([`super::testbed::vm_stack_counters`]).
    pub guest_counters: Option<BTreeMap<String, i64>>,
    /// The injected faults, as they happened (the report's top-level `faults`, present
    /// when `--fault` was given).
    pub faults: Vec<FaultRecord>,
    /// How the kernel's drop and error counters of the run's interfaces grew during the
    /// run (non-zero only; [`super::testbed::Testbed::kernel_link_counters`]): frames lost
    /// between the daemons, where no srmigd counter sees them. An interface that moved
    /// (a VM's attachment) counts from its creation.
    pub kernel_drops: BTreeMap<String, u64>,
}

/// The outcome of a run: the contract report and the details.
#[derive(Debug, Clone, PartialEq)]
pub struct LabRun {
    /// The report (contract fields; `raw` holds the probe and HTTP series).
    pub report: Report,
    /// Migration timelines, parameters, drop counters.
    pub details: RunDetails,
}

impl LabRun {
    /// The report JSON: the contract fields, and under `raw` the probe and HTTP series plus
    /// `migrations`, `params` and `drops`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(&self.report).unwrap_or_default();
        let extra = [
            ("migrations", serde_json::to_value(&self.details.migrations)),
            ("params", serde_json::to_value(&self.details.params)),
            ("drops", serde_json::to_value(&self.details.drops)),
            (
                "kernel_drops",
                serde_json::to_value(&self.details.kernel_drops),
            ),
            (
                "tcp_worst_500ms_mbps",
                serde_json::to_value(self.details.tcp_worst_500ms_mbps),
            ),
            (
                "guest_boot_id",
                serde_json::to_value(&self.details.guest_boot_id),
            ),
            (
                "guest_counters",
                serde_json::to_value(&self.details.guest_counters),
            ),
        ];
        if let Some(obj) = value.as_object_mut() {
            if !self.details.faults.is_empty() {
                obj.insert(
                    "faults".to_owned(),
                    serde_json::to_value(&self.details.faults).unwrap_or_default(),
                );
            }
            let raw = obj
                .entry("raw")
                .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
            if let Some(raw) = raw.as_object_mut() {
                for (key, v) in extra {
                    raw.insert(key.to_owned(), v.unwrap_or_default());
                }
            }
        }
        value
    }

    /// Writes [`to_json`](Self::to_json) to `path` (compact; the raw series are long).
    pub fn write(&self, path: &Path) -> Result<(), OrchestrateError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| OrchestrateError::File {
                action: "creating the report directory",
                path: dir.to_owned(),
                source,
            })?;
        }
        let text = serde_json::to_string(&self.to_json()).unwrap_or_default();
        std::fs::write(path, text + "\n").map_err(|source| OrchestrateError::File {
            action: "writing the report",
            path: path.to_owned(),
            source,
        })
    }

    /// A few lines for a terminal.
    pub fn summary(&self) -> String {
        let r = &self.report;
        let mut out = String::new();
        let n = r.migrations.len();
        let avg = |f: fn(&MigrationReport) -> f64| {
            if n == 0 {
                0.0
            } else {
                r.migrations.iter().map(f).sum::<f64>() / n as f64
            }
        };
        let strategy = serde_json::to_value(r.strategy)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let kind = vm_kind_name(r.vm_kind);
        if n == 0 {
            let _ = writeln!(out, "no migration (baseline), {kind} VM");
        } else {
            let _ = writeln!(
                out,
                "{strategy}, {kind} VM, {n} migrations (pause {:.1} ms, total {:.0} ms on average; \
                 propagation delay {:.0} ms)",
                avg(|m| m.pause_ms),
                avg(|m| m.total_ms),
                self.details.params.propagation_delay_ms,
            );
        }
        let max = |f: fn(&MigrationReport) -> Option<f64>| {
            r.migrations
                .iter()
                .filter_map(f)
                .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
        };
        if let (Some(down), Some(release)) = (
            max(|m| m.network_downtime_ms),
            max(|m| m.release_latency_ms),
        ) {
            let _ =
                writeln!(
                out,
                "  at the VM: network downtime {down:.1} ms at most (blackout {:.1} ms at most), \
                 first release {release:.2} ms after the resume at most",
                r.migrations.iter().map(|m| m.blackout_ms).fold(0.0, f64::max)
            );
        }
        if let (Some(down), Some(release)) = (
            max(|m| m.reported_network_downtime_ms),
            max(|m| m.reported_release_latency_ms),
        ) {
            let _ = writeln!(
                out,
                "  reported by srmigd: network downtime {down:.1} ms at most, first release \
                 {release:.2} ms after the resume at most"
            );
        }
        let probes = [("probe", &r.probe), ("probe/4", &r.probe_v4)];
        for (label, p) in probes.iter().filter_map(|(l, p)| Some((l, p.as_ref()?))) {
            let _ = writeln!(
                out,
                "  {label:<7} {} sent, {} lost, {} duplicated, {} reordered; max extra delay \
                 {:.1} ms over a {:.3} ms baseline, {} answers delayed > 10 ms",
                p.sent,
                p.lost,
                p.duplicated,
                p.reordered,
                p.max_extra_delay_ms,
                p.baseline_rtt_ms,
                p.delayed_gt_10ms
            );
            if let Some(w) = &p.at_vm {
                let _ = writeln!(
                    out,
                    "  {:<7} one way, at the VM: {} received, {} lost, {} duplicated, {} reordered",
                    "", w.received, w.lost, w.duplicated, w.reordered
                );
                if let Some(e) = &w.worst_echo {
                    let _ = writeln!(
                        out,
                        "  {:<7} echo without the responder's lag (up to {:.1} ms): max extra \
                         delay {:.1} ms (probe {}: {:.1} ms to the VM, {:.1} in the responder, \
                         {:.1} back; the VM took in the rest of its release for {:.1} ms)",
                        "",
                        w.max_responder_lag_ms,
                        e.extra_ms,
                        e.seq,
                        e.to_vm_ms,
                        e.responder_ms,
                        e.back_ms,
                        e.queue_behind_ms
                    );
                }
                // Each reordered probe, by VM when there are several, to place against the
                // migrations' times (same origin).
                let family = if *label == "probe" { "ipv6" } else { "ipv4" };
                let per_vm: Vec<(&str, &[crate::report::Reordered])> = match &r.raw {
                    Some(raw) if !raw.probe_per_vm.is_empty() => raw
                        .probe_per_vm
                        .iter()
                        .filter(|v| v.family == family)
                        .filter_map(|v| {
                            Some((v.vm.as_str(), &v.probe.at_vm.as_ref()?.reorders[..]))
                        })
                        .collect(),
                    _ => vec![("", &w.reorders[..])],
                };
                for (vm, list) in per_vm {
                    for o in list {
                        let _ = writeln!(
                            out,
                            "  {:<7} reordered at the VM: {vm}{}probe {} after {}, at {:.1} ms",
                            "",
                            if vm.is_empty() { "" } else { " " },
                            o.seq,
                            o.after,
                            o.at_ms
                        );
                    }
                }
            }
        }
        let https = [("http", &r.http), ("http/4", &r.http_v4)];
        for (label, h) in https.iter().filter_map(|(l, h)| Some((l, h.as_ref()?))) {
            let _ = writeln!(
                out,
                "  {label:<7} {} requests, {} failed; p50 {:.2} ms, p99 {:.1} ms, max {:.1} ms; \
                 {} took >= 0.9 s",
                h.requests, h.failed, h.p50_ms, h.p99_ms, h.max_ms, h.slow_ge_900ms
            );
        }
        let tcps = [("tcp", &r.tcp), ("tcp/4", &r.tcp_v4)];
        for (label, t) in tcps.iter().filter_map(|(l, t)| Some((l, t.as_ref()?))) {
            let _ = writeln!(
                out,
                "  {label:<7} median {:.0} Mb/s, worst 100 ms bin {:.0} Mb/s ({:.0} %), {} \
                 retransmits{}, retransmission timeout: {}{}",
                t.median_mbps,
                t.worst_bin_mbps,
                if t.median_mbps > 0.0 {
                    100.0 * t.worst_bin_mbps / t.median_mbps
                } else {
                    0.0
                },
                t.retransmits,
                t.spurious_retransmits
                    .map(|n| format!(" ({n} spurious: D-SACKed by the VM)"))
                    .unwrap_or_default(),
                if t.rto_seen { "yes" } else { "no" },
                t.reordering_seen
                    .map(|n| format!(", reordering seen by the sender {n}"))
                    .unwrap_or_default()
            );
        }
        if let Some(w) = self.details.tcp_worst_500ms_mbps {
            let _ = writeln!(
                out,
                "          worst 500 ms window {w:.0} Mb/s (the paper's figure)"
            );
        }
        for f in &self.details.faults {
            let _ = writeln!(
                out,
                "  fault {}:{} in migration {} ({}): {}, down {:.0} ms, back in sync after {:.0} ms{}",
                f.fault,
                f.phase,
                f.migration,
                f.id,
                f.outcome,
                f.down_ms,
                f.recovered_ms,
                match (&f.killed_replica, &f.finished_by) {
                    (Some(k), Some(by)) => format!(" ({k} killed, finished by {by})"),
                    (None, Some(by)) => format!(" (finished by {by})"),
                    _ => String::new(),
                }
            );
        }
        if let Some(id) = &self.details.guest_boot_id {
            let _ = writeln!(out, "  guest: same boot id before and after ({id})");
        }
        if let Some(counters) = &self.details.guest_counters {
            let list: Vec<String> = counters.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(out, "  guest counters: {}", list.join(", "));
        }
        for (host, drops) in &self.details.drops {
            let list: Vec<String> = drops.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(out, "  srmigd {host} drops: {}", list.join(", "));
        }
        if !self.details.kernel_drops.is_empty() {
            let list: Vec<String> = self
                .details
                .kernel_drops
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(out, "  kernel drops and errors: {}", list.join(", "));
        }
        out
    }
}

/// `srmig lab migrate` options.
#[derive(Debug, Clone)]
pub struct MigrateOptions {
    /// VM kind (overrides `testbed.vm_kind` and `run.vm_kind`).
    pub vm_kind: VmKind,
    /// How the testbed is built.
    pub testbed: TestbedOptions,
    /// What is measured.
    pub run: RunPlan,
}

/// Builds a testbed, runs `options.run` on it, tears it down.
pub fn run_migrate(options: &MigrateOptions) -> Result<LabRun, OrchestrateError> {
    let mut plan = options.run.clone();
    plan.vm_kind = options.vm_kind;
    plan.validate()?;
    check_fleet(&plan, &options.testbed.plan)?;
    let mut testbed_options = options.testbed.clone();
    testbed_options.vm_kind = options.vm_kind;
    // Controller faults need a controller process to kill.
    testbed_options.controller_process |= plan.faults.faults.iter().any(|f| {
        matches!(
            f.target,
            super::fault::Component::Controller | super::fault::Component::Leader
        )
    });
    let mut testbed = Testbed::build(&testbed_options)?;
    let result = run(&mut testbed, &plan);
    let result = result.map_err(|e| {
        testbed.keep_work_dir();
        OrchestrateError::LogsKept {
            dir: testbed.dir().to_owned(),
            inner: Box::new(e),
        }
    });
    let torn_down = testbed.teardown();
    let outcome = result?;
    torn_down?;
    Ok(outcome)
}

/// Runs `plan` on an existing testbed (the VM continues from wherever it is).
pub fn run(testbed: &mut Testbed, plan: &RunPlan) -> Result<LabRun, OrchestrateError> {
    let mut plan = plan.clone();
    plan.vms = testbed.plan().vms().count();
    let plan = &plan;
    plan.validate()?;
    let vm_kind = testbed.vm_kind();
    if plan.vm_kind != vm_kind {
        return Err(OrchestrateError::Options(format!(
            "the run plan is for a {} VM but the testbed runs a {} VM",
            vm_kind_name(plan.vm_kind),
            vm_kind_name(vm_kind)
        )));
    }
    check_fleet(plan, testbed.plan())?;
    let vm_plans: Vec<VmPlan> = testbed.plan().vms().cloned().collect();
    let several = vm_plans.len() > 1 || plan.chain;
    testbed.set_faults(plan.faults.clone())?;
    let guest_before = testbed.guest_info()?;
    let netns_before = testbed.netns_vm_counters()?;
    let drops_before = testbed.drop_counters()?;
    let kernel_before = testbed.kernel_link_counters()?;
    let prop = testbed.propagation_delay();
    let duration = plan.workload_duration(prop);
    let mut report = Report {
        strategy: if plan.migrations == 0 {
            report::Strategy::None
        } else {
            report_strategy(plan.strategy)
        },
        vm_kind,
        migrations: Vec::new(),
        probe: None,
        http: None,
        tcp: None,
        family: plan.family,
        probe_v4: None,
        http_v4: None,
        tcp_v4: None,
        raw: Some(RawSeries::default()),
    };
    let mut migrations = Vec::new();
    let families = plan.family.v4_flags();
    let first_family = families.first().copied().unwrap_or(false);
    // Migration id -> network downtime, release latency and the gap, seen at a netns VM.
    let mut vm_view: BTreeMap<String, VmView> = BTreeMap::new();
    for &kind in &plan.workloads {
        let client_ns = testbed.client_ns().clone();
        let records = match kind {
            WorkloadKind::Probe => {
                // A netns VM gets the lab's responders; the QEMU guest runs its own (UDP 7,
                // both families). One probe per VM and family, all at the same time.
                let count =
                    u64::try_from(duration.as_nanos() / plan.probe_interval.as_nanos().max(1))
                        .unwrap_or(u64::MAX);
                let mut responders = Vec::new();
                let mut configs = Vec::new();
                for (vi, vm) in vm_plans.iter().enumerate() {
                    for &v4 in families {
                        let addr = sock(vm.addr(v4), 7);
                        let target = match testbed.vm_ns_of(vi) {
                            Some(ns) => {
                                let r = ProbeResponder::spawn(ns, addr)
                                    .map_err(OrchestrateError::workload("probe"))?;
                                let target = r.local_addr();
                                responders.push(((vi, v4), r));
                                target
                            }
                            None => addr,
                        };
                        let mut config = ProbeConfig::new(target, count);
                        config.interval = plan.probe_interval;
                        if let Some(ms) = plan.probe_baseline_ms {
                            config.baseline = Baseline::FixedMs(ms);
                        }
                        configs.push(((vi, v4), config));
                    }
                }
                let (mut results, records, origin) =
                    with_migrations(testbed, plan, kind, move || {
                        each_family(configs, |c| run_probe(&client_ns, c))
                    })?;
                // A netns VM: the one-way view at the VM, from each responder; per
                // migration, the network's downtime and the release latency from the first
                // family's deliveries to the VM that moved.
                for ((vi, v4), responder) in responders {
                    let log = responder
                        .stop()
                        .map_err(OrchestrateError::workload("probe"))?;
                    let Some((_, result)) = results.iter_mut().find(|(k, _)| *k == (vi, v4)) else {
                        continue;
                    };
                    let (one_way, delivered) = log.one_way(result, origin);
                    result.report = result.report.clone().with_one_way(one_way);
                    if v4 == first_family {
                        let at: Vec<(u64, f64)> = delivered
                            .iter()
                            .map(|&(seq, t)| (seq, ms(t.saturating_duration_since(origin))))
                            .collect();
                        for r in records.iter().filter(|r| r.vm == vm_plans[vi].name) {
                            vm_view.insert(r.id.clone(), delivery_figures(&at, r));
                        }
                    }
                }
                let raw = report.raw.get_or_insert_with(RawSeries::default);
                for &v4 in families {
                    let mine: Vec<&(ProbeKey, ProbeResult)> =
                        results.iter().filter(|((_, f), _)| *f == v4).collect();
                    let reports: Vec<ProbeReport> =
                        mine.iter().map(|(_, r)| r.report.clone()).collect();
                    let merged = ProbeReport::merge(&reports);
                    if several {
                        raw.probe_per_vm
                            .extend(mine.iter().map(|((vi, _), r)| VmProbeReport {
                                vm: vm_plans[*vi].name.to_owned(),
                                family: if v4 { "ipv4" } else { "ipv6" }.to_owned(),
                                probe: r.report.clone(),
                            }));
                    }
                    let samples = results
                        .iter()
                        .find(|(k, _)| *k == (0, v4))
                        .map(|(_, r)| r.samples.clone())
                        .unwrap_or_default();
                    if v4 {
                        raw.probe_v4 = samples;
                        report.probe_v4 = merged;
                    } else {
                        raw.probe = samples;
                        report.probe = merged;
                    }
                }
                records
            }
            WorkloadKind::Http => {
                // The QEMU guest answers HTTP itself (TCP 80, the same body). One client per
                // VM and family, all at the same time; each family's report is computed from
                // every VM's requests together.
                let mut servers = Vec::new();
                let mut configs = Vec::new();
                for (vi, vm) in vm_plans.iter().enumerate() {
                    for &v4 in families {
                        let addr = sock(vm.addr(v4), 80);
                        let target = match testbed.vm_ns_of(vi) {
                            Some(ns) => {
                                let server = HttpServer::spawn(ns, addr)
                                    .map_err(OrchestrateError::workload("http"))?;
                                let target = server.local_addr();
                                servers.push(server);
                                target
                            }
                            None => addr,
                        };
                        let mut config = HttpConfig::new(target, duration);
                        config.rate_per_s = plan.http_rate;
                        configs.push(((vi, v4), config));
                    }
                }
                let (results, records, _) = with_migrations(testbed, plan, kind, move || {
                    each_family(configs, |c| run_http(&client_ns, c))
                })?;
                for server in servers {
                    server.stop().map_err(OrchestrateError::workload("http"))?;
                }
                let raw = report.raw.get_or_insert_with(RawSeries::default);
                for &v4 in families {
                    let samples: Vec<HttpSample> = results
                        .iter()
                        .filter(|((_, f), _)| *f == v4)
                        .flat_map(|(_, r)| r.samples.iter().cloned())
                        .collect();
                    let summary = Some(summarize_http(&samples));
                    if v4 {
                        raw.http_v4 = samples;
                        report.http_v4 = summary;
                    } else {
                        raw.http = samples;
                        report.http = summary;
                    }
                }
                records
            }
            WorkloadKind::Tcp => {
                // A netns VM gets the lab's receivers (bins of received bytes). The QEMU
                // guest's sink (TCP 5001) reports nothing: the sender bins the bytes the
                // guest acknowledged (TCP_INFO). One sender per VM and family, all at the
                // same time; each family's report is their sum.
                let mut receivers = Vec::new();
                let mut configs = Vec::new();
                for (vi, vm) in vm_plans.iter().enumerate() {
                    for &v4 in families {
                        let addr = sock(vm.addr(v4), 5001);
                        let target = match testbed.vm_ns_of(vi) {
                            Some(ns) => {
                                let r = TcpReceiver::spawn(ns, addr, Duration::from_millis(100))
                                    .map_err(OrchestrateError::workload("tcp"))?;
                                let target = r.local_addr();
                                receivers.push(((vi, v4), r));
                                target
                            }
                            None => addr,
                        };
                        configs.push(((vi, v4), TcpSenderConfig::new(target, duration)));
                    }
                }
                let (senders, records, _) = with_migrations(testbed, plan, kind, move || {
                    each_family(configs, |c| run_tcp_sender(&client_ns, c))
                })?;
                let mut received = BTreeMap::new();
                for (key, receiver) in receivers {
                    let stats = receiver
                        .finish()
                        .map_err(OrchestrateError::workload("tcp"))?;
                    received.insert(key, stats);
                }
                let mut summaries: BTreeMap<bool, Vec<TcpReport>> = BTreeMap::new();
                for (key, sender) in senders {
                    let summary = match received.get(&key) {
                        Some(r) => tcp_report(r, &sender),
                        None => tcp_report_from_sender(&sender),
                    };
                    summaries.entry(key.1).or_default().push(summary);
                }
                for (v4, all) in summaries {
                    let summary = TcpReport::merge(&all);
                    if v4 {
                        report.tcp_v4 = summary;
                    } else {
                        report.tcp = summary;
                    }
                }
                records
            }
        };
        for record in records {
            let VmView {
                network_downtime_ms,
                release_latency_ms,
                gap,
            } = vm_view.get(&record.id).copied().unwrap_or_default();
            let reported = record.delivery;
            report.migrations.push(MigrationReport {
                vm: several.then(|| record.vm.clone()),
                pause_ms: record.pause_ms,
                total_ms: record.total_ms,
                blackout_ms: record.pause_ms,
                network_downtime_ms,
                release_latency_ms,
                reported_network_downtime_ms: reported
                    .network_downtime_us()
                    .map(|us| us as f64 / 1e3),
                reported_release_latency_ms: reported
                    .release_latency_us()
                    .map(|us| us as f64 / 1e3),
                held: record.held,
                fenced: record.fenced,
                released: record.released,
                hold_ms: record.hold_ms,
            });
            migrations.push(WorkloadMigration {
                workload: kind,
                record,
                vm_gap: gap,
            });
        }
    }
    let drops_after = testbed.drop_counters()?;
    let kernel_after = testbed.kernel_link_counters()?;
    let kernel_drops: BTreeMap<String, u64> = kernel_after
        .iter()
        .map(|(k, &v)| {
            (
                k.clone(),
                v.saturating_sub(kernel_before.get(k).copied().unwrap_or(0)),
            )
        })
        .filter(|&(_, v)| v > 0)
        .collect();
    let guest_after = testbed.guest_info()?;
    let mut guest_counters = None;
    if let (Some(before), Some(after)) = (&guest_before, &guest_after) {
        if before.boot_id != after.boot_id {
            return Err(OrchestrateError::GuestRebooted {
                before: before.boot_id.clone(),
                after: after.boot_id.clone(),
            });
        }
        guest_counters = Some(counter_growth(&before.counters, &after.counters));
    }
    // A netns VM: its namespace's stack counters, as the QEMU guest reports its own.
    if let (Some(before), Some(after)) = (&netns_before, testbed.netns_vm_counters()?) {
        guest_counters = Some(counter_growth(before, &after));
    }
    let tcp_worst_500ms = report
        .tcp
        .as_ref()
        .or(report.tcp_v4.as_ref())
        .and_then(|t| worst_window(&t.bins_mbps, 5));
    Ok(LabRun {
        report,
        details: RunDetails {
            migrations,
            params: RunParams {
                precopy_ms: ms(plan.timing.precopy),
                downtime_ms: ms(plan.timing.downtime),
                propagation_delay_ms: ms(prop),
                migrations_per_workload: plan.migrations,
                workload_duration_ms: ms(duration),
                slot_ms: ms(plan.slot(prop)),
                probe_interval_ms: ms(plan.probe_interval),
                http_rate_per_s: plan.http_rate,
                workloads: plan.workloads.clone(),
            },
            drops: drop_diff(&drops_before, &drops_after),
            tcp_worst_500ms_mbps: tcp_worst_500ms,
            guest_boot_id: guest_after.map(|g| g.boot_id),
            guest_counters,
            faults: testbed.take_fault_records(),
            kernel_drops,
        },
    })
}

/// What a run with several migrating VMs (`--vms`, `--chain`) supports: checked before the
/// testbed is built.
fn check_fleet(run: &RunPlan, plan: &Plan) -> Result<(), OrchestrateError> {
    let vms = plan.vms().count();
    let several = vms > 1 || run.chain;
    let bad = |m: &str| Err(OrchestrateError::Options(m.to_owned()));
    if run.chain && (vms < 2 || plan.hosts.len() < 4) {
        return bad(
            "--chain needs at least --vms 2 and --hosts 4 (VM a S->D while VM b D->E, then a \
             D->E)",
        );
    }
    if several && !run.faults.faults.is_empty() {
        return bad("faults are injected with one migrating VM (not with --vms > 1 or --chain)");
    }
    if (several || plan.hosts.len() > 3) && run.vm_kind != VmKind::Netns {
        return bad("the QEMU and libvirt labs migrate one VM between S and D (--vms, --hosts, --chain are for netns VMs)");
    }
    Ok(())
}

/// Starts `client` on a thread, performs the plan's migrations on this thread on schedule,
/// then waits for the client. Migration times are relative to the client's start.
fn with_migrations<T: Send + 'static>(
    testbed: &mut Testbed,
    plan: &RunPlan,
    kind: WorkloadKind,
    client: impl FnOnce() -> Result<T, WorkloadError> + Send + 'static,
) -> Result<(T, Vec<MigrationRecord>, Instant), OrchestrateError> {
    let duration = plan.workload_duration(testbed.propagation_delay());
    let slot = plan.slot(testbed.propagation_delay());
    // The origin of the migration timeline is the client thread's start, a fraction of a
    // millisecond before the workload's own clock starts (thread, setns, socket).
    let (started_tx, started_rx) = std::sync::mpsc::sync_channel(1);
    let handle = thread::Builder::new()
        .name(format!("lab-{}", kind.name()))
        .spawn(move || {
            let _ = started_tx.send(Instant::now());
            client()
        })
        .map_err(|source| {
            OrchestrateError::Lab(crate::LabError::Thread {
                name: format!("lab-{}", kind.name()),
                source,
            })
        })?;
    let origin = started_rx
        .recv()
        .map_err(|_| OrchestrateError::WorkloadPanicked(kind.name()))?;
    let progress = testbed.progress().clone();
    progress.step(&format!(
        "{} workload, {}: {} migration{} over {:.0} s",
        kind.name(),
        plan.strategy,
        plan.migrations,
        if plan.migrations == 1 { "" } else { "s" },
        duration.as_secs_f64()
    ));
    let mut records = Vec::new();
    for i in 0..plan.migrations {
        sleep_until(origin + plan.warmup + slot * i);
        progress.detail(&format!(
            "{} migration {}/{} starts",
            kind.name(),
            i + 1,
            plan.migrations
        ));
        // On error the client thread is left to finish on its own (it ends with its
        // duration, or fails once the lab is torn down).
        let first = records.len();
        match testbed.vm_kind() {
            VmKind::Qemu | VmKind::Libvirt => {
                records.push(testbed.migrate(plan.strategy, plan.timing, origin)?)
            }
            VmKind::Netns | VmKind::Sim => records.extend(testbed.migrate_round(
                plan.chain,
                plan.strategy,
                plan.timing,
                origin,
            )?),
        }
        for r in &records[first..] {
            progress.step(&format!(
                "{} migration {}/{}: {} {} {} -> {} {}: pause {:.1} ms, total {:.0} ms, held {} \
                 released {}",
                kind.name(),
                i + 1,
                plan.migrations,
                r.id,
                r.vm,
                r.from,
                r.to,
                r.outcome,
                r.pause_ms,
                r.total_ms,
                r.held,
                r.released
            ));
        }
    }
    progress.detail(&format!("{} workload: waiting for its end", kind.name()));
    let value = handle
        .join()
        .map_err(|_| OrchestrateError::WorkloadPanicked(kind.name()))?
        .map_err(OrchestrateError::workload(kind.name()))?;
    testbed.check_daemons()?;
    if let Some(last) = records.last() {
        let end_ms = ms(duration);
        if last.completed_at_ms > end_ms - 100.0 {
            return Err(OrchestrateError::Options(format!(
                "migration {} ended {:.0} ms into a {end_ms:.0} ms {} workload: the workload \
                 did not cover it (migrations took longer than planned; raise the gap)",
                last.id,
                last.completed_at_ms,
                kind.name()
            )));
        }
    }
    Ok((value, records, origin))
}

/// From the probes that reached the VM (sequence number, ms since the workload's origin):
/// the longest gap between two deliveries from the migration's request to its completion
/// (plus 100 ms: the release comes after the attach) and where it was, and the first
/// delivery after the VM was attached at the destination, minus that attach.
fn delivery_figures(at_ms: &[(u64, f64)], r: &MigrationRecord) -> VmView {
    deliveries_around(
        at_ms,
        r.requested_at_ms,
        r.attached_at_ms,
        r.completed_at_ms,
    )
}

/// [`delivery_figures`] of a migration requested, attached at the destination and completed
/// at these times (ms since the origin).
fn deliveries_around(
    at_ms: &[(u64, f64)],
    requested_at_ms: f64,
    attached_at_ms: f64,
    completed_at_ms: f64,
) -> VmView {
    let mut window: Vec<(u64, f64)> = at_ms
        .iter()
        .copied()
        .filter(|&(_, t)| t >= requested_at_ms && t <= completed_at_ms + 100.0)
        .collect();
    window.sort_by(|a, b| a.1.total_cmp(&b.1));
    let gap = window
        .windows(2)
        .map(|w| DeliveryGap {
            seq_before: w[0].0,
            before_ms: w[0].1,
            seq_after: w[1].0,
            after_ms: w[1].1,
        })
        .max_by(|a, b| (a.after_ms - a.before_ms).total_cmp(&(b.after_ms - b.before_ms)));
    let latency = window
        .iter()
        .find(|&&(_, t)| t >= attached_at_ms)
        .map(|(_, t)| t - attached_at_ms);
    VmView {
        network_downtime_ms: gap.map(|g| g.after_ms - g.before_ms),
        release_latency_ms: latency,
        gap,
    }
}

/// How much each of a VM's counters grew over the run: `after - before`, or -1 (the
/// guest's and the netns VM's "could not be read") where either reading is -1 or missing.
fn counter_growth(
    before: &BTreeMap<String, i64>,
    after: &BTreeMap<String, i64>,
) -> BTreeMap<String, i64> {
    after
        .iter()
        .map(|(k, &v)| {
            let b = before.get(k).copied().unwrap_or(-1);
            (k.clone(), if v < 0 || b < 0 { -1 } else { v - b })
        })
        .collect()
}

/// The lowest mean of `n` consecutive values (`None` if fewer than `n`).
fn worst_window(bins: &[f64], n: usize) -> Option<f64> {
    if n == 0 {
        return None;
    }
    bins.windows(n)
        .map(|w| w.iter().sum::<f64>() / n as f64)
        .min_by(f64::total_cmp)
}

/// `netns` or `qemu`.
pub fn vm_kind_name(kind: VmKind) -> &'static str {
    match kind {
        VmKind::Netns => "netns",
        VmKind::Qemu => "qemu",
        VmKind::Libvirt => "libvirt",
        VmKind::Sim => "sim",
    }
}

fn sock(addr: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(addr, port)
}

/// Runs `client` once per family's configuration, all at the same time (one thread each),
/// and returns the results in the same order; the first error wins.
fn each_family<K: Copy + Send + Sync, C: Sync, T: Send>(
    configs: Vec<(K, C)>,
    client: impl Fn(&C) -> Result<T, WorkloadError> + Sync,
) -> Result<Vec<(K, T)>, WorkloadError> {
    if let [(key, config)] = configs.as_slice() {
        return Ok(vec![(*key, client(config)?)]);
    }
    let client = &client;
    thread::scope(|scope| {
        let handles: Vec<_> = configs
            .iter()
            .map(|(v4, config)| (*v4, scope.spawn(move || client(config))))
            .collect();
        handles
            .into_iter()
            .map(|(v4, h)| {
                let value = h
                    .join()
                    .map_err(|_| WorkloadError::Panicked("lab workload (one family)"))??;
                Ok((v4, value))
            })
            .collect()
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn report_strategy(s: Strategy) -> report::Strategy {
    match s {
        Strategy::Traditional => report::Strategy::Traditional,
        Strategy::SrDrop => report::Strategy::SrDrop,
        Strategy::SrBuffer => report::Strategy::SrBuffer,
    }
}

/// Per host, the non-zero increase of each drop counter.
fn drop_diff(
    before: &[(String, serde_json::Value)],
    after: &[(String, serde_json::Value)],
) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for (host, now) in after {
        let then = before
            .iter()
            .find(|(h, _)| h == host)
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let Some(now) = now.as_object() else { continue };
        let grown: BTreeMap<String, u64> = now
            .iter()
            .filter_map(|(reason, v)| {
                let delta = v
                    .as_u64()?
                    .saturating_sub(then[reason].as_u64().unwrap_or(0));
                (delta > 0).then(|| (reason.clone(), delta))
            })
            .collect();
        if !grown.is_empty() {
            out.insert(host.clone(), grown);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The longest gap in deliveries around a migration, where it was, and the first
    /// delivery after the attach; deliveries outside the migration do not count.
    #[test]
    fn the_longest_delivery_gap_is_found_with_its_probes() {
        // Every ms from 0 to 20 except a "pause" from 10 to 15 (exclusive), plus one
        // delivery long before the request (a bigger gap outside the window).
        let mut at: Vec<(u64, f64)> = (0..=20u32)
            .filter(|t| !(11..15).contains(t))
            .map(|t| (u64::from(t), f64::from(t) + 100.0))
            .collect();
        at.push((99, 0.0));
        let v = deliveries_around(&at, 100.0, 114.5, 118.0);
        let g = v.gap.expect("a gap");
        assert_eq!((g.seq_before, g.seq_after), (10, 15));
        assert_eq!(v.network_downtime_ms, Some(5.0));
        assert_eq!(v.release_latency_ms, Some(0.5));
        assert_eq!(deliveries_around(&[], 0.0, 1.0, 2.0), VmView::default());
    }

    /// An unreadable counter (-1) or one missing before stays unreadable; it never reads 0.
    #[test]
    fn counter_growth_keeps_unreadable_counters_unreadable() {
        let m = |v: &[(&str, i64)]| -> BTreeMap<String, i64> {
            v.iter().map(|&(k, n)| (k.to_owned(), n)).collect()
        };
        let before = m(&[("a", 5), ("b", -1), ("c", -1), ("d", 2)]);
        let after = m(&[("a", 9), ("b", -1), ("c", 4), ("d", -1), ("e", 3)]);
        assert_eq!(
            counter_growth(&before, &after),
            m(&[("a", 4), ("b", -1), ("c", -1), ("d", -1), ("e", -1)])
        );
    }

    #[test]
    fn workload_sets_parse() {
        assert_eq!(
            WorkloadKind::parse_set("all").expect("all"),
            WorkloadKind::ALL.to_vec()
        );
        assert_eq!(
            WorkloadKind::parse_set("tcp,probe").expect("list"),
            [WorkloadKind::Probe, WorkloadKind::Tcp]
        );
        assert!(WorkloadKind::parse_set("ping").is_err());
        assert_eq!(parse_vm_kind("qemu").expect("qemu"), VmKind::Qemu);
        assert!(parse_vm_kind("kvm").is_err());
        assert_eq!(parse_strategy("sr-drop").expect("s"), Strategy::SrDrop);
        assert!(parse_strategy("sr_drop").is_err());
    }

    #[test]
    fn schedule_covers_every_migration() {
        let mut plan = RunPlan::new(Strategy::SrBuffer, vec![WorkloadKind::Probe], 3);
        let prop = Duration::from_millis(50);
        assert_eq!(
            plan.slot(prop),
            Duration::from_millis(200 + 500 + 175 + 1000)
        );
        assert_eq!(
            plan.workload_duration(prop),
            Duration::from_millis(1000 + 3 * 1875 + 1000)
        );
        plan.migrations = 0;
        assert_eq!(plan.workload_duration(prop), Duration::from_secs(5));
        plan.validate().expect("valid");
        plan.workloads.clear();
        assert!(plan.validate().is_err());
    }

    #[test]
    fn a_missing_guest_fails_before_anything_is_built() {
        let mut testbed = TestbedOptions::default();
        testbed.qemu.guest_dir = Some(std::env::temp_dir().join("srmig-no-such-guest"));
        let options = MigrateOptions {
            vm_kind: VmKind::Qemu,
            testbed,
            run: RunPlan::new(Strategy::SrBuffer, vec![WorkloadKind::Probe], 1),
        };
        let err = run_migrate(&options).expect_err("no guest");
        let text = err.to_string();
        // Not root: refused at once; root: the binaries and the guest directory are checked
        // before any namespace exists (srmigd not built yet or QEMU missing would be named).
        assert!(
            text.contains("needs root")
                || text.contains("srmigd was not found")
                || text.contains("has no vmlinuz")
                || text.contains("qemu-system-x86_64"),
            "{text}"
        );
    }

    #[test]
    fn worst_window_is_the_lowest_moving_mean() {
        let bins = [10.0, 10.0, 0.0, 5.0, 10.0, 10.0];
        assert_eq!(worst_window(&bins, 2), Some(2.5));
        assert_eq!(worst_window(&bins, 6), Some(7.5));
        assert_eq!(worst_window(&bins, 7), None);
        assert_eq!(worst_window(&bins, 0), None);
    }

    #[test]
    fn drop_diff_keeps_growth_only() {
        let before = vec![("s".to_owned(), json!({"BufferFull": 1, "VmNotRunning": 5}))];
        let after = vec![
            ("s".to_owned(), json!({"BufferFull": 1, "VmNotRunning": 9})),
            ("d".to_owned(), json!({"BufferFull": 0})),
        ];
        let diff = drop_diff(&before, &after);
        assert_eq!(diff.len(), 1);
        assert_eq!(diff["s"]["VmNotRunning"], 4);
    }

    #[test]
    fn report_json_has_contract_fields_and_details_under_raw() {
        let run = LabRun {
            report: Report {
                strategy: report::Strategy::SrBuffer,
                vm_kind: VmKind::Netns,
                migrations: vec![MigrationReport {
                    pause_ms: 176.0,
                    total_ms: 700.0,
                    ..MigrationReport::default()
                }],
                probe: None,
                http: None,
                tcp: None,
                family: Family::Ipv6,
                probe_v4: None,
                http_v4: None,
                tcp_v4: None,
                raw: Some(RawSeries::default()),
            },
            details: RunDetails {
                migrations: Vec::new(),
                params: RunParams {
                    precopy_ms: 500.0,
                    downtime_ms: 175.0,
                    propagation_delay_ms: 0.0,
                    migrations_per_workload: 1,
                    workload_duration_ms: 3675.0,
                    slot_ms: 1675.0,
                    probe_interval_ms: 1.0,
                    http_rate_per_s: 100,
                    workloads: vec![WorkloadKind::Probe],
                },
                drops: BTreeMap::new(),
                tcp_worst_500ms_mbps: None,
                guest_boot_id: Some("4f0c".into()),
                guest_counters: None,
                kernel_drops: BTreeMap::new(),
                faults: Vec::new(),
            },
        };
        let v = run.to_json();
        assert_eq!(v["raw"]["guest_boot_id"], "4f0c");
        assert!(v.get("faults").is_none(), "no faults, no key");
        let mut with_faults = run.clone();
        with_faults.details.faults.push(FaultRecord {
            fault: "kill-controller".into(),
            phase: "migrating",
            migration: 1,
            id: "m1".into(),
            outcome: "completed",
            recovered_ms: 1200.0,
            down_ms: 1000.0,
            controller_phase: Some("expect-hypervisor-done".into()),
            killed_replica: None,
            finished_by: None,
        });
        with_faults.details.faults.push(FaultRecord {
            fault: "kill-leader".into(),
            killed_replica: Some("c0".into()),
            finished_by: Some("c2".into()),
            ..with_faults.details.faults[0].clone()
        });
        let json = with_faults.to_json();
        let f = &json["faults"][0];
        for key in ["fault", "phase", "migration", "outcome", "recovered_ms"] {
            assert!(f.get(key).is_some(), "faults[0].{key} missing: {f}");
        }
        assert!(f.get("finished_by").is_none(), "single controller: {f}");
        assert_eq!(json["faults"][1]["killed_replica"], "c0");
        assert_eq!(json["faults"][1]["finished_by"], "c2");
        let keys: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        for key in [
            "strategy",
            "vm_kind",
            "migrations",
            "probe",
            "http",
            "tcp",
            "family",
            "raw",
        ] {
            assert!(keys.contains(&key), "{key} missing: {keys:?}");
        }
        assert_eq!(keys.len(), 8, "{keys:?}");
        // The contract's two fields, and the network figures beside them (absent when the
        // VM's side was not seen).
        assert_eq!(
            v["migrations"][0],
            json!({"pause_ms": 176.0, "total_ms": 700.0, "blackout_ms": 0.0, "held": 0, "released": 0, "fenced": 0})
        );
        assert_eq!(v["raw"]["params"]["downtime_ms"], 175.0);
        assert!(v["raw"]["probe"].as_array().is_some());
        assert!(run
            .summary()
            .starts_with("sr-buffer, netns VM, 1 migrations"));
    }
}
