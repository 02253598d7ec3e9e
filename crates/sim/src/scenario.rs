//! What a simulation runs: the data center, the world around the cores, the workloads and the
//! schedule. `srmig sim run SCENARIO.toml` reads one of these; `sim paper` and `sim scale`
//! build theirs in code ([`Scenario::paper`], [`Scenario::scale`]).
//!
//! Every field has a default, so a scenario file names only what it changes:
//!
//! ```toml
//! seed = 7
//! hosts = 8
//! hosts_per_leaf = 4
//! vms_per_host = 2
//! strategy = "sr-buffer"
//! [migration]
//! model = "qemu"            # or "fixed" (precopy_ms / pause_ms, as the netns lab)
//! memory_mib = 2048
//! [control]
//! loss = 0.01               # a lost control segment costs a TCP retransmission timeout
//! [[migrations]]
//! vm = 0                    # VM index (VM j starts on host j % hosts)
//! to = 5                    # host index
//! at_ms = 1000
//! [[partitions]]
//! hosts = [3]
//! from_ms = 1500
//! until_ms = 2500
//! ```

use serde::{Deserialize, Serialize};
use srmig_api::Strategy;

/// One simulation's whole input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    /// Seed of every random choice (control delays, losses, schedules): the same seed gives
    /// the same run, event for event.
    pub seed: u64,
    /// Hosts (each one srmigd: a real agent and dataplane).
    pub hosts: usize,
    /// Hosts under one leaf switch of the leaf-spine fabric.
    pub hosts_per_leaf: usize,
    /// VMs starting on each host (VM `j` starts on host `j % hosts`).
    pub vms_per_host: usize,
    /// VMs per virtual network (a tenant's segment: VM `j` is in network `j / network_size`,
    /// so a network's VMs start on consecutive hosts). A host is told only about the VMs of
    /// the networks present on it (`srmig_control::model`), and each workload's client is a
    /// VM of its target's network. 0: no networks, every host is told about every VM.
    pub network_size: usize,
    /// How migrations steer traffic: `traditional`, `sr-drop`, `sr-buffer`, or the
    /// comparison baseline `ovn-like` ([`SimStrategy`]).
    pub strategy: SimStrategy,
    /// `ovn-like`: how long after the guest resumes the destination's chassis delivers the
    /// clones (QEMU announces the guest with a RARP at the resume; the chassis activates the
    /// port when it sees it), ms. An assumption, not a measurement: see docs/sim.md.
    pub ovn_activation_ms: f64,
    /// The fabric's links.
    pub fabric: FabricConfig,
    /// The control network between the controller and the hosts.
    pub control: ControlConfig,
    /// How long a live migration takes.
    pub migration: MigrationModel,
    /// Each migration's guest differs: its memory and dirty rate (QEMU model), or pre-copy
    /// and pause (fixed model), are scaled by a factor drawn uniformly in
    /// `[1 - spread, 1 + spread]`.
    pub migration_spread: f64,
    /// End.SBUF bounds on every host.
    pub buffer: BufferBounds,
    /// The workloads.
    pub workloads: WorkloadConfig,
    /// Migrations requested at given times.
    pub migrations: Vec<ScheduledMigration>,
    /// Random migrations added to `migrations` (`random_migrations` of them, at most
    /// `concurrent` in flight, each to a random other host).
    pub random_migrations: usize,
    /// Migrations in flight at once for `random_migrations`.
    pub concurrent: usize,
    /// Control-network partitions.
    pub partitions: Vec<Partition>,
    /// Host crashes (srmigd dies with its tables and comes back with a new boot epoch).
    pub crashes: Vec<Crash>,
    /// Simulated time after the last migration ended before the run stops, ms.
    pub tail_ms: u64,
    /// Stop the run at this simulated time whatever is left, ms (a bound, not a target).
    pub max_sim_ms: u64,
}

/// How a simulated migration steers the VM's traffic: srmig's three strategies, run by the
/// real control core, or an OVN-like baseline for comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SimStrategy {
    /// srmig's `traditional`: the mapping changes when the destination reports the VM running.
    Traditional,
    /// srmig's `sr-drop`.
    SrDrop,
    /// srmig's `sr-buffer` (zero loss: the invariants check it on every event).
    SrBuffer,
    /// The way OVN migrates a port bound to two chassis (`requested-chassis` naming both): from
    /// the migration's start, every frame to the VM that crosses the fabric to the source is
    /// cloned to the destination too; the source delivers while the guest runs there, the
    /// destination from the guest's resume plus [`Scenario::ovn_activation_ms`] (the RARP the
    /// guest sends at the resume activates the port there). Frames arriving in the pause, and
    /// at the destination before the activation, are lost. The controller runs a
    /// `traditional` migration under it (its mapping change ends the cloning); the cloning is
    /// the world's, not srmig's.
    OvnLike,
}

impl SimStrategy {
    /// The strategy the controller is asked for.
    pub fn controller(self) -> Strategy {
        match self {
            SimStrategy::Traditional | SimStrategy::OvnLike => Strategy::Traditional,
            SimStrategy::SrDrop => Strategy::SrDrop,
            SimStrategy::SrBuffer => Strategy::SrBuffer,
        }
    }

    /// The CLI's and the reports' name (`sr-buffer`).
    pub fn name(self) -> &'static str {
        match self {
            SimStrategy::Traditional => "traditional",
            SimStrategy::SrDrop => "sr-drop",
            SimStrategy::SrBuffer => "sr-buffer",
            SimStrategy::OvnLike => "ovn-like",
        }
    }

    /// Every strategy, srmig's first.
    pub const ALL: [SimStrategy; 4] = [
        SimStrategy::Traditional,
        SimStrategy::SrDrop,
        SimStrategy::SrBuffer,
        SimStrategy::OvnLike,
    ];
}

impl From<Strategy> for SimStrategy {
    fn from(s: Strategy) -> Self {
        match s {
            Strategy::Traditional => SimStrategy::Traditional,
            Strategy::SrDrop => SimStrategy::SrDrop,
            Strategy::SrBuffer => SimStrategy::SrBuffer,
        }
    }
}

impl std::str::FromStr for SimStrategy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SimStrategy::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown strategy {s:?}: expected traditional, sr-drop, sr-buffer or ovn-like"
                )
            })
    }
}

/// Links of the leaf-spine fabric (every link the same).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FabricConfig {
    /// Propagation and switching latency per hop, microseconds.
    pub hop_latency_us: f64,
    /// Link bandwidth, Gb/s (serialization on every hop; queueing at the hosts' links).
    pub bandwidth_gbps: f64,
    /// Bytes a host link may queue before it drops (tail drop, counted).
    pub queue_bytes: u64,
    /// Probability that a frame is lost on the fabric (counted).
    pub loss: f64,
}

/// The control network: every message (config push, acknowledgement, VM state report,
/// hypervisor event) rides a TCP connection, so a lost segment delays it by a retransmission
/// timeout rather than losing it; messages on one connection stay in order.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// One-way delay, fixed part, ms.
    pub delay_ms: f64,
    /// One-way delay, exponentially distributed part: its mean, ms.
    pub jitter_ms: f64,
    /// Probability that a transmission is lost (each loss adds a retransmission timeout:
    /// 200 ms, doubling).
    pub loss: f64,
    /// Extra delay of every config push, ms (the labs' `--propagation-delay-ms`: a slow
    /// mapping update).
    pub push_delay_ms: f64,
    /// Time the agent takes to apply a config, ms (on top of the real planning and install).
    pub apply_ms: f64,
}

/// How a live migration runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "kebab-case", deny_unknown_fields)]
pub enum MigrationModel {
    /// Fixed times, as the netns lab emulates them.
    Fixed {
        /// Pre-copy, ms.
        precopy_ms: f64,
        /// Stop-and-copy pause, ms.
        pause_ms: f64,
    },
    /// QEMU's pre-copy: rounds send what the previous round dirtied until the rest fits in
    /// the downtime limit (or `max_rounds`), then the stop-and-copy pause sends the rest.
    Qemu {
        /// Guest memory, MiB.
        #[serde(default = "default_memory_mib")]
        memory_mib: f64,
        /// Pages dirtied while the guest runs, MiB/s.
        #[serde(default = "default_dirty_mib_s")]
        dirty_mib_s: f64,
        /// Migration bandwidth, MiB/s.
        #[serde(default = "default_bandwidth_mib_s")]
        bandwidth_mib_s: f64,
        /// QEMU's `downtime-limit`, ms.
        #[serde(default = "default_downtime_limit_ms")]
        downtime_limit_ms: f64,
        /// Rounds before QEMU stops the guest whatever is left.
        #[serde(default = "default_max_rounds")]
        max_rounds: u32,
        /// Setup before the first round (destination QEMU started, connection), ms.
        #[serde(default = "default_setup_ms")]
        setup_ms: f64,
        /// Fixed part of the pause (device state, switchover), ms.
        #[serde(default = "default_switchover_ms")]
        switchover_ms: f64,
    },
}

fn default_memory_mib() -> f64 {
    4096.0
}

fn default_dirty_mib_s() -> f64 {
    100.0
}

fn default_bandwidth_mib_s() -> f64 {
    1100.0
}

fn default_downtime_limit_ms() -> f64 {
    300.0
}

fn default_max_rounds() -> u32 {
    30
}

fn default_setup_ms() -> f64 {
    200.0
}

fn default_switchover_ms() -> f64 {
    30.0
}

/// End.SBUF bounds (per VM and per host).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BufferBounds {
    /// Packets held per VM.
    pub per_vm_packets: u32,
    /// Bytes held per VM.
    pub per_vm_bytes: u64,
    /// Packets held per host.
    pub global_packets: u32,
    /// Bytes held per host.
    pub global_bytes: u64,
    /// Oldest packet held, ms.
    pub max_age_ms: u64,
    /// Commit fence: packets held per (VM, ingress).
    pub fence_per_ingress_packets: u32,
    /// Commit fence: packets held per host.
    pub fence_packets: u32,
    /// Commit fence: bytes held per host.
    pub fence_bytes: u64,
    /// Commit fence: how long direct packets wait for the marker, ms.
    pub fence_timeout_ms: u64,
}

/// The workloads: each migrating VM is probed from a client VM on another host and HTTP
/// sessions open to it, from a while before its migration is requested until a while after
/// it ended.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkloadConfig {
    /// Probe interval, ms (0: no probes). One probe is one UDP datagram with a sequence
    /// number, answered by the VM.
    pub probe_interval_ms: f64,
    /// New HTTP sessions per second (0: none): SYN, SYN-ACK, request, response, with Linux's
    /// 1 s SYN retry and a 200 ms minimum RTO for the request.
    pub http_rate: f64,
    /// TCP bulk transfer toward each migrating VM at this NIC rate, Mb/s (0: none).
    pub tcp_mbps: f64,
    /// Workloads start this long before a migration is requested, ms.
    pub lead_ms: f64,
    /// And stop this long after it ended, ms.
    pub trail_ms: f64,
}

/// A migration at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduledMigration {
    /// VM index.
    pub vm: usize,
    /// Destination host index.
    pub to: usize,
    /// When it is requested, ms.
    pub at_ms: u64,
}

/// Hosts cut off from the controller for a while (their messages wait, as TCP retries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// Host indexes.
    pub hosts: Vec<usize>,
    /// Start, ms.
    pub from_ms: u64,
    /// End, ms.
    pub until_ms: u64,
}

/// A host's srmigd crashing and restarting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Crash {
    /// Host index.
    pub host: usize,
    /// When it dies, ms.
    pub at_ms: u64,
    /// How long it stays down, ms.
    pub down_ms: u64,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            seed: 1,
            hosts: 3,
            hosts_per_leaf: 16,
            vms_per_host: 1,
            network_size: 0,
            strategy: SimStrategy::SrBuffer,
            ovn_activation_ms: 1.0,
            fabric: FabricConfig::default(),
            control: ControlConfig::default(),
            migration: MigrationModel::default(),
            migration_spread: 0.0,
            buffer: BufferBounds::default(),
            workloads: WorkloadConfig::default(),
            migrations: Vec::new(),
            random_migrations: 0,
            concurrent: 1,
            partitions: Vec::new(),
            crashes: Vec::new(),
            tail_ms: 1000,
            max_sim_ms: 24 * 3600 * 1000,
        }
    }
}

impl Default for FabricConfig {
    fn default() -> Self {
        FabricConfig {
            hop_latency_us: 5.0,
            bandwidth_gbps: 10.0,
            queue_bytes: 1 << 20,
            loss: 0.0,
        }
    }
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            delay_ms: 0.5,
            jitter_ms: 0.5,
            loss: 0.0,
            push_delay_ms: 0.0,
            apply_ms: 0.2,
        }
    }
}

impl Default for MigrationModel {
    fn default() -> Self {
        MigrationModel::Fixed {
            precopy_ms: 500.0,
            pause_ms: 175.0,
        }
    }
}

impl Default for BufferBounds {
    fn default() -> Self {
        BufferBounds {
            per_vm_packets: 4096,
            per_vm_bytes: 4 << 20,
            global_packets: 16384,
            global_bytes: 16 << 20,
            max_age_ms: 2000,
            fence_per_ingress_packets: 2048,
            fence_packets: 8192,
            fence_bytes: 8 << 20,
            fence_timeout_ms: 500,
        }
    }
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            probe_interval_ms: 1.0,
            http_rate: 0.0,
            tcp_mbps: 0.0,
            lead_ms: 200.0,
            trail_ms: 300.0,
        }
    }
}

/// Why a scenario cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScenarioError {
    /// A field is out of range or contradicts another.
    #[error("scenario: {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The TOML does not parse.
    #[error("scenario file: {0}")]
    Parse(String),
}

impl Scenario {
    /// Parses a scenario file and checks it.
    pub fn from_toml(text: &str) -> Result<Scenario, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Parse(e.to_string()))?;
        s.check()?;
        Ok(s)
    }

    /// The number of VMs.
    pub fn vms(&self) -> usize {
        self.hosts * self.vms_per_host
    }

    /// Checks ranges and references.
    pub fn check(&self) -> Result<(), ScenarioError> {
        let bad =
            |field: &'static str, reason: String| Err(ScenarioError::Invalid { field, reason });
        if !(2..=65_000).contains(&self.hosts) {
            return bad("hosts", format!("{} is not in 2..=65000", self.hosts));
        }
        if self.hosts_per_leaf == 0 {
            return bad("hosts_per_leaf", "must be at least 1".into());
        }
        if self.vms_per_host == 0 || self.vms() > 4_000_000 {
            return bad(
                "vms_per_host",
                format!("{} VMs in all is not in 1..=4000000", self.vms()),
            );
        }
        if self.network_size == 1 {
            return bad(
                "network_size",
                "a network of one VM has no client for its workloads: 0 (no networks) or at \
                 least 2"
                    .into(),
            );
        }
        if !(0.0..=60_000.0).contains(&self.ovn_activation_ms) {
            return bad(
                "ovn_activation_ms",
                format!("{} is not in [0, 60000]", self.ovn_activation_ms),
            );
        }
        let p = |x: f64| (0.0..1.0).contains(&x);
        if !p(self.fabric.loss) {
            return bad(
                "fabric.loss",
                format!("{} is not in [0, 1)", self.fabric.loss),
            );
        }
        if !p(self.control.loss) {
            return bad(
                "control.loss",
                format!("{} is not in [0, 1)", self.control.loss),
            );
        }
        let nonneg = [
            ("fabric.hop_latency_us", self.fabric.hop_latency_us),
            ("control.delay_ms", self.control.delay_ms),
            ("control.jitter_ms", self.control.jitter_ms),
            ("control.push_delay_ms", self.control.push_delay_ms),
            ("control.apply_ms", self.control.apply_ms),
            (
                "workloads.probe_interval_ms",
                self.workloads.probe_interval_ms,
            ),
            ("workloads.http_rate", self.workloads.http_rate),
            ("workloads.tcp_mbps", self.workloads.tcp_mbps),
            ("workloads.lead_ms", self.workloads.lead_ms),
            ("workloads.trail_ms", self.workloads.trail_ms),
        ];
        for (field, v) in nonneg {
            if !(v.is_finite() && v >= 0.0) {
                return bad(field, format!("{v} must be a finite number >= 0"));
            }
        }
        if !(0.0..1.0).contains(&self.migration_spread) {
            return bad(
                "migration_spread",
                format!("{} is not in [0, 1)", self.migration_spread),
            );
        }
        if !(self.fabric.bandwidth_gbps.is_finite() && self.fabric.bandwidth_gbps > 0.0) {
            return bad("fabric.bandwidth_gbps", "must be > 0".into());
        }
        if self.workloads.probe_interval_ms > 0.0 && self.workloads.probe_interval_ms < 0.01 {
            return bad(
                "workloads.probe_interval_ms",
                "must be 0 or at least 0.01".into(),
            );
        }
        match self.migration {
            MigrationModel::Fixed {
                precopy_ms,
                pause_ms,
            } => {
                if !(precopy_ms >= 0.0
                    && pause_ms > 0.0
                    && precopy_ms.is_finite()
                    && pause_ms.is_finite())
                {
                    return bad("migration", "precopy_ms >= 0 and pause_ms > 0".into());
                }
            }
            MigrationModel::Qemu {
                memory_mib,
                dirty_mib_s,
                bandwidth_mib_s,
                downtime_limit_ms,
                max_rounds,
                setup_ms,
                switchover_ms,
            } => {
                let all = [
                    memory_mib,
                    dirty_mib_s,
                    bandwidth_mib_s,
                    downtime_limit_ms,
                    setup_ms,
                    switchover_ms,
                ];
                if all.iter().any(|v| !(v.is_finite() && *v >= 0.0))
                    || memory_mib <= 0.0
                    || bandwidth_mib_s <= 0.0
                    || max_rounds == 0
                {
                    return bad(
                        "migration",
                        "memory_mib and bandwidth_mib_s > 0, max_rounds >= 1, the rest >= 0".into(),
                    );
                }
            }
        }
        for (i, m) in self.migrations.iter().enumerate() {
            if m.vm >= self.vms() {
                return bad(
                    "migrations",
                    format!("[{i}]: VM {} does not exist ({} VMs)", m.vm, self.vms()),
                );
            }
            if m.to >= self.hosts {
                return bad(
                    "migrations",
                    format!("[{i}]: host {} does not exist ({} hosts)", m.to, self.hosts),
                );
            }
        }
        if self.random_migrations > 0 && self.concurrent == 0 {
            return bad(
                "concurrent",
                "must be at least 1 with random_migrations".into(),
            );
        }
        for (i, p) in self.partitions.iter().enumerate() {
            if p.hosts.iter().any(|&h| h >= self.hosts) || p.until_ms < p.from_ms {
                return bad(
                    "partitions",
                    format!("[{i}]: unknown host or until_ms < from_ms"),
                );
            }
        }
        for (i, c) in self.crashes.iter().enumerate() {
            if c.host >= self.hosts {
                return bad("crashes", format!("[{i}]: host {} does not exist", c.host));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_module_example_parses_and_checks() {
        let text = r#"
seed = 7
hosts = 8
hosts_per_leaf = 4
vms_per_host = 2
strategy = "sr-buffer"
[migration]
model = "qemu"
memory_mib = 2048
[control]
loss = 0.01
[[migrations]]
vm = 0
to = 5
at_ms = 1000
[[partitions]]
hosts = [3]
from_ms = 1500
until_ms = 2500
"#;
        let s = Scenario::from_toml(text).expect("parses");
        assert_eq!(s.hosts, 8);
        assert_eq!(s.migrations.len(), 1);
        assert!((s.control.loss - 0.01).abs() < 1e-12);
    }

    proptest::proptest! {
        /// Whatever the text, parsing returns a scenario that passed its checks or an error;
        /// it never panics.
        #[test]
        fn any_text_parses_or_is_refused(text in "\\PC{0,200}") {
            if let Ok(s) = Scenario::from_toml(&text) {
                proptest::prop_assert!(s.check().is_ok());
            }
        }

        /// Numbers anywhere in range or out of it: a scenario that parses is within bounds.
        #[test]
        fn numeric_fields_are_checked(
            hosts in 0usize..70_000,
            loss in -1.0f64..2.0,
            pause in -10.0f64..1000.0,
            spread in -1.0f64..2.0,
        ) {
            let text = format!(
                "hosts = {hosts}\nmigration_spread = {spread}\n[fabric]\nloss = {loss}\n\
                 [migration]\nmodel = \"fixed\"\nprecopy_ms = 10\npause_ms = {pause}\n"
            );
            match Scenario::from_toml(&text) {
                Ok(s) => {
                    proptest::prop_assert!((2..=65_000).contains(&s.hosts));
                    proptest::prop_assert!((0.0..1.0).contains(&s.fabric.loss));
                    proptest::prop_assert!((0.0..1.0).contains(&s.migration_spread));
                }
                Err(e) => proptest::prop_assert!(!e.to_string().is_empty()),
            }
        }
    }

    #[test]
    fn bad_fields_are_named() {
        let e = Scenario::from_toml("hosts = 1").expect_err("one host");
        assert!(e.to_string().contains("hosts"), "{e}");
        let e = Scenario::from_toml("[[migrations]]\nvm = 9\nto = 1\nat_ms = 0").expect_err("vm");
        assert!(e.to_string().contains("VM 9"), "{e}");
        let e = Scenario::from_toml("colour = 1").expect_err("unknown field");
        assert!(e.to_string().contains("colour"), "{e}");
    }
}
