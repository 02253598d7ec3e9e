//! The simulated data center: every host's real [`Agent`] (and the real
//! [`srmig_dataplane::Dataplane`] inside it), the real [`Controller`], and the world around
//! them, run from one event queue in virtual time.
//!
//! ```text
//!  client VM ──VmTx──> host C: Agent/Dataplane ──uplink──> fabric (leaf-spine: hops,
//!                      (H.Encaps S::End.S,D::End.SBUF)     serialization, host-link queues,
//!                                                          loss) ──Uplink──> host S / D
//!  host S/D: Dataplane (End.S, End.SBUF, End.DT6) ──VM port──> target VM ──VmTx (answer)──> ...
//!
//!  Controller ──PushConfig/PushDelta──> control network ──ToHost──> Agent::apply_host_config*
//!       ^                                (delay, jitter, loss as TCP RTOs, partitions)   |
//!       └──── handle_ack / handle_vm_state / fence / release reports <──ToCtl─────────────┘
//!  Controller ──StartMigration──> hypervisor model: pre-copy ── pause: VM port down at S
//!       ^                                                  └── resume: VM port up at D
//!       └──── handle_hypervisor(Completed) <──────────────────────┘
//! ```
//!
//! What is real: the dataplanes forward every frame (encapsulation, End.S, End.SBUF holds and
//! releases, the commit fence, drops with their reasons); the agents plan and install every
//! config the controller pushes and report VM state changes from port up/down events; the
//! controller runs every migration's state machine, timeouts included. What is modelled: the
//! fabric (routers are IPv6 forwarders on the outer destination; spine links do not queue),
//! the control network, QEMU's timing ([`crate::hypervisor`]) and the VMs' network stacks
//! ([`crate::workload`]).
//!
//! Invariants are checked as events happen ([`World::check_arrival`], the buffer bounds after
//! every hold) and at the end (every probe delivered, every migration ended); a broken one
//! stops the run with [`SimError::Invariant`], which carries the seed and the last events.

use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv6Addr;

use hashbrown::HashMap;
use srmig_agent::{Agent, WallClock};
use srmig_api::{
    Ack, FenceReport, HostConfig, HostConfigDelta, HostId, HostInfo, HypervisorEvent,
    HypervisorReport, MacAddr, MigrateRequest, MigrationId, MigrationOutcome, MigrationPhase,
    NetworkId, ReleaseReport, Timestamp, VmId, VmInfo, VmStateReport,
};
use srmig_control::{
    Action, Controller, ControllerConfig, ControllerSnapshot, HostObservation, Model,
};
use srmig_dataplane::{Instant, NodeConfig, PacketBuf, PortId, Verdict};

use crate::frame::{self, Kind, Msg};
use crate::hypervisor;
use crate::queue::{Nanos, Queue};
use crate::rng::Rng;
use crate::scenario::{Scenario, SimStrategy};
use crate::workload::{Arrival, HttpFlow, ProbeFlow, Session, TcpFlow, MAX_TRIES, MSS, SYN_RTO_NS};

const MS: Nanos = 1_000_000;
/// The gateway MAC every VM sends to.
const GATEWAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// Every host's uplink MAC, and the fabric router's.
const UPLINK_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0];
const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xff, 0];
/// A VM's answer leaves this long after the request arrived.
const VM_TURNAROUND: Nanos = 20_000;
/// Workload datagrams' UDP payload size (a small request, like the lab's probe).
const PAYLOAD: usize = 64;
/// How often the controller polls every host's status when hosts can crash or messages be
/// lost (srmig-controller's host poll).
const STATUS_POLL: Nanos = 2_000 * MS;
/// The first TCP retransmission timeout of a control message.
const CONTROL_RTO: Nanos = 200 * MS;
/// Events kept for the trace of a broken invariant.
const TRACE: usize = 64;

/// Why a run stopped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimError {
    /// The scenario cannot be built into a data center.
    #[error("setup: {0}")]
    Setup(String),
    /// An invariant broke.
    #[error(
        "invariant broken at {at_ms:.3} ms (event {event}, seed {seed}): {what}\nlast events:\n{trace}"
    )]
    Invariant {
        /// The scenario's seed (rerun it to replay the same events).
        seed: u64,
        /// Virtual time, ms.
        at_ms: f64,
        /// Events processed before.
        event: u64,
        /// What broke.
        what: String,
        /// The last events, oldest first.
        trace: String,
    },
}

/// What each migration did.
#[derive(Debug, Clone, PartialEq)]
pub struct MigrationRecord {
    /// VM index.
    pub vm: u32,
    /// Source host index.
    pub from: u32,
    /// Destination host index.
    pub to: u32,
    /// Requested at, ns.
    pub requested_at: Nanos,
    /// The controller's id (`None` if refused).
    pub id: Option<MigrationId>,
    /// Why the controller refused it.
    pub refused: Option<String>,
    /// Guest paused at the source, ns.
    pub paused_at: Option<Nanos>,
    /// Guest resumed at the destination, ns.
    pub resumed_at: Option<Nanos>,
    /// The controller finished it, ns.
    pub finished_at: Option<Nanos>,
    /// How it ended.
    pub outcome: Option<MigrationOutcome>,
    /// From the request to the path armed on every ingress (the hypervisor started), ms.
    pub arm_ms: Option<f64>,
    /// From the hypervisor's completion to the migration's end (commit and cleanup), ms.
    pub commit_ms: Option<f64>,
    /// The probe stream and HTTP flow aimed at the VM.
    pub probe: Option<usize>,
    /// The HTTP flow aimed at the VM.
    pub http: Option<usize>,
    /// Pre-copy rounds.
    pub rounds: u32,
    /// The guest's factor on the migration model (`Scenario::migration_spread`).
    pub factor: f64,
}

/// Counters of the world around the cores.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events processed.
    pub events: u64,
    /// Frames through a dataplane.
    pub frames: u64,
    /// Frames the fabric lost at random.
    pub fabric_lost: u64,
    /// Frames dropped at a full host link.
    pub fabric_queue_drops: u64,
    /// Frames to a destination the fabric has no route for.
    pub fabric_unroutable: u64,
    /// Frames sent to a host whose srmigd was down.
    pub host_down_drops: u64,
    /// Frames delivered on a VM port while the VM was not running there (lost in the port).
    pub port_lost: u64,
    /// Frames the dataplanes dropped (all reasons; by reason in [`Outcome::drops`]).
    pub dataplane_drops: u64,
    /// `ovn-like`: clones sent to a migration's destination.
    pub ovn_clones: u64,
    /// `ovn-like`: clones the destination's chassis dropped before the port was active there.
    pub ovn_clones_inactive: u64,
    /// Frames End.SBUF or the fence held.
    pub held: u64,
    /// Messages from the controller to hosts (configs, status polls).
    pub controller_messages: u64,
    /// Config pushes among them: whole configs.
    pub config_pushes: u64,
    /// Config pushes among them: deltas.
    pub delta_pushes: u64,
    /// Messages from hosts and hypervisors to the controller.
    pub agent_messages: u64,
    /// Configs an agent refused.
    pub configs_refused: u64,
    /// Control messages lost to a host that was down.
    pub control_lost: u64,
    /// Controller epoch advances.
    pub epoch_advances: u64,
    /// Invariant checks made.
    pub checks: u64,
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The scenario's seed.
    pub seed: u64,
    /// The strategy.
    pub strategy: SimStrategy,
    /// Every migration.
    pub migrations: Vec<MigrationRecord>,
    /// Every probe stream.
    pub probes: Vec<ProbeFlow>,
    /// Every HTTP flow.
    pub http: Vec<HttpFlow>,
    /// Every TCP bulk flow.
    pub tcp: Vec<TcpFlow>,
    /// Counters of the world.
    pub stats: Stats,
    /// Dataplane drops by reason, summed over hosts.
    pub drops: Vec<(String, u64)>,
    /// Virtual time at the end, ns.
    pub sim_ns: Nanos,
    /// Hosts and VMs.
    pub hosts: usize,
    /// VMs.
    pub vms: usize,
}

#[derive(Debug)]
enum ToHost {
    Full(HostConfig),
    Delta(HostConfigDelta),
    StatusPoll,
}

#[derive(Debug)]
enum ToCtl {
    Ack(Ack),
    VmState(VmStateReport),
    Fence(FenceReport),
    Release(ReleaseReport),
    Hypervisor(HypervisorReport),
    Status(HostId, HostObservation),
}

#[derive(Debug)]
enum Ev {
    Uplink {
        host: u32,
        frame: Vec<u8>,
    },
    VmTx {
        vm: u32,
        frame: Vec<u8>,
    },
    HostTimer {
        host: u32,
    },
    ToHost {
        host: u32,
        msg: ToHost,
    },
    ToCtl {
        msg: ToCtl,
    },
    CtlTimer,
    Request {
        idx: usize,
    },
    RandomNext,
    HvStart {
        id: MigrationId,
    },
    HvPause {
        id: MigrationId,
    },
    HvResume {
        id: MigrationId,
    },
    HvCancel {
        id: MigrationId,
    },
    ProbeTick {
        flow: usize,
    },
    HttpOpen {
        flow: usize,
    },
    HttpTimer {
        flow: usize,
        session: usize,
        tries: u32,
        syn: bool,
    },
    TcpTick {
        flow: usize,
    },
    TcpTimer {
        flow: usize,
    },
    Crash {
        host: u32,
    },
    Restart {
        host: u32,
    },
    StatusPoll,
    End,
}

impl Ev {
    fn name(&self) -> &'static str {
        match self {
            Ev::Uplink { .. } => "frame at uplink",
            Ev::VmTx { .. } => "VM sends",
            Ev::HostTimer { .. } => "host timer",
            Ev::ToHost { .. } => "message to host",
            Ev::ToCtl { .. } => "message to controller",
            Ev::CtlTimer => "controller timer",
            Ev::Request { .. } => "migration requested",
            Ev::RandomNext => "next random migration",
            Ev::HvStart { .. } => "hypervisor starts",
            Ev::HvPause { .. } => "guest paused",
            Ev::HvResume { .. } => "guest resumed",
            Ev::HvCancel { .. } => "hypervisor cancel",
            Ev::ProbeTick { .. } => "probe",
            Ev::HttpOpen { .. } => "HTTP open",
            Ev::HttpTimer { .. } => "HTTP timer",
            Ev::TcpTick { .. } => "TCP send",
            Ev::TcpTimer { .. } => "TCP timer",
            Ev::Crash { .. } => "srmigd crashes",
            Ev::Restart { .. } => "srmigd restarts",
            Ev::StatusPoll => "status poll",
            Ev::End => "end",
        }
    }
}

struct Host {
    name: HostId,
    node: NodeConfig,
    agent: Option<Agent>,
    boot_epoch: u64,
    uplink: PortId,
    /// VM index on each VM port (by port index).
    port_vm: Vec<Option<u32>>,
    /// Each VM's port here.
    vm_port: BTreeMap<u32, PortId>,
    timer: Option<Nanos>,
    up_busy: Nanos,
    down_busy: Nanos,
    to_host_fifo: Nanos,
    to_ctl_fifo: Nanos,
    leaf: usize,
}

struct Vm {
    name: VmId,
    addr: Ipv6Addr,
    mac: [u8; 6],
    host: u32,
    running: bool,
    /// Frames the guest queued while paused (sent when it resumes).
    pending: Vec<Vec<u8>>,
    /// Resumed at, until the first frame delivered after it (for the release report).
    resumed: Option<Nanos>,
    probe: Option<usize>,
    http: Option<usize>,
    tcp: Option<usize>,
    /// As a client: its flows.
    client_of: Vec<usize>,
    client_http: Vec<usize>,
}

/// `ovn-like`: frames crossing the fabric to the source for `vm_addr` are cloned to `to`.
struct OvnClone {
    vm_addr: Ipv6Addr,
    mig: usize,
    from: u32,
    to: u32,
}

struct HvRun {
    mig: usize,
    paused: bool,
    cancelled: bool,
    pause_ms: f64,
}

/// One simulation.
pub struct World {
    sc: Scenario,
    now: Nanos,
    q: Queue<Ev>,
    rng: Rng,
    hosts: Vec<Host>,
    host_index: HashMap<HostId, u32>,
    vms: Vec<Vm>,
    ctl: Controller,
    ctl_timer: Option<Nanos>,
    migs: Vec<MigrationRecord>,
    mig_of: HashMap<MigrationId, usize>,
    hv: HashMap<MigrationId, HvRun>,
    probes: Vec<ProbeFlow>,
    http: Vec<HttpFlow>,
    tcp: Vec<TcpFlow>,
    random_plan: VecDeque<(u32, u32, f64)>,
    /// Each scheduled migration's guest factor (`Scenario::migration_spread`), drawn at setup
    /// so that every strategy migrates the same guests.
    scheduled_factors: Vec<f64>,
    random_in_flight: usize,
    stats: Stats,
    trace: VecDeque<(Nanos, &'static str, String)>,
    pkt: PacketBuf,
    out: PacketBuf,
    lossless: bool,
    drops: HashMap<String, u64>,
    ended: bool,
    status_polls: bool,
    pending_violation: Option<SimError>,
    scheduled_issued: usize,
    end_scheduled: bool,
    origin: Nanos,
    /// The schedule runs (the first configs are in force; see [`World::settle`]).
    running: bool,
    /// Leave the hosts and the controller allocated when the run ends ([`World::leak_at_end`]).
    leak: bool,
    /// `ovn-like`: the migrations cloning, by source host.
    clones: HashMap<u32, Vec<OvnClone>>,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("now", &self.now)
            .field("hosts", &self.hosts.len())
            .field("vms", &self.vms.len())
            .field("events", &self.stats.events)
            .finish()
    }
}

fn host_name(i: usize) -> String {
    format!("h{i}")
}

/// VM `j`'s network (`Scenario::network_size`).
fn network_of(sc: &Scenario, j: usize) -> Result<Option<NetworkId>, SimError> {
    if sc.network_size == 0 {
        return Ok(None);
    }
    NetworkId::new(format!("net{}", j / sc.network_size))
        .map(Some)
        .map_err(|e| SimError::Setup(e.to_string()))
}

fn vm_name(j: usize) -> String {
    format!("vm{j}")
}

fn group(i: usize) -> u16 {
    u16::try_from(i + 1).unwrap_or(u16::MAX)
}

fn vm_addr(j: usize) -> Ipv6Addr {
    let n = j as u64 + 1;
    Ipv6Addr::new(
        0x2001,
        0xdb8,
        0xb,
        0,
        0,
        ((n >> 32) & 0xffff) as u16,
        ((n >> 16) & 0xffff) as u16,
        (n & 0xffff) as u16,
    )
}

fn vm_mac(j: usize) -> [u8; 6] {
    let b = (j as u32).to_be_bytes();
    [0x52, 0x54, b[0], b[1], b[2], b[3]]
}

fn mac_str(m: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// Host `i`'s End.DT6 SID (as [`host_info`] registers it).
fn sid_dt6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfc00, 0, group(i), 0, 0, 0, 0, 0xd6)
}

fn host_info(i: usize) -> Result<HostInfo, SimError> {
    let g = group(i);
    let json = serde_json::json!({
        "name": host_name(i),
        "locator": format!("fc00:0:{g:x}::/48"),
        "sid_end_s": format!("fc00:0:{g:x}::e5"),
        "sid_end_sbuf": format!("fc00:0:{g:x}::eb"),
        "sid_dt6": format!("fc00:0:{g:x}::d6"),
        "underlay": format!("2001:db8:ff::{g:x}"),
    });
    serde_json::from_value(json).map_err(|e| SimError::Setup(format!("host {i}: {e}")))
}

/// Host `i`'s node config: uplink `up0`, one VM port per VM that runs or may arrive here.
fn node_config(sc: &Scenario, i: usize, vms: &[(usize, bool)]) -> Result<NodeConfig, SimError> {
    let g = group(i);
    let b = sc.buffer;
    let mut ports = vec![serde_json::json!({
        "name": "up0", "kind": "uplink", "mac": mac_str(UPLINK_MAC), "peer_mac": mac_str(ROUTER_MAC),
    })];
    let mut vm_list = Vec::new();
    for (k, &(j, home)) in vms.iter().enumerate() {
        let port = format!("p{k}");
        ports.push(serde_json::json!({
            "name": port, "kind": "vm", "mac": mac_str([0x02, 0, 0, 0, 0x02, 0]),
        }));
        vm_list.push(serde_json::json!({
            "name": vm_name(j),
            "addresses": [vm_addr(j).to_string()],
            "mac": mac_str(vm_mac(j)),
            "port": port,
            "state": if home { "running" } else { "absent" },
        }));
    }
    let json = serde_json::json!({
        "locator": format!("fc00:0:{g:x}::/48"),
        "source_address": format!("2001:db8:ff::{g:x}"),
        "infrastructure_prefixes": ["fc00::/16", "2001:db8:ff::/48"],
        "gateway": { "address": "2001:db8:b:0:ffff:ffff:ffff:ffff", "mac": mac_str(GATEWAY_MAC) },
        "ports": ports,
        "routes": [ { "prefix": "::/0", "port": "up0" } ],
        "vms": vm_list,
        "buffer": {
            "per_vm_packets": b.per_vm_packets, "per_vm_bytes": b.per_vm_bytes,
            "global_packets": b.global_packets, "global_bytes": b.global_bytes,
            "max_age_ms": b.max_age_ms,
        },
        "fence": {
            "timeout_ms": b.fence_timeout_ms, "per_ingress_packets": b.fence_per_ingress_packets,
            "global_packets": b.fence_packets, "global_bytes": b.fence_bytes,
        },
    });
    serde_json::from_value(json)
        .map_err(|e| SimError::Setup(format!("node config of host {i}: {e}")))
}

impl World {
    /// Builds the data center of `sc`: hosts with their agents, the controller (which pushes
    /// every host its first config), the workloads and the schedule.
    pub fn new(sc: &Scenario) -> Result<World, SimError> {
        sc.check().map_err(|e| SimError::Setup(e.to_string()))?;
        let sc = sc.clone();
        let mut rng = Rng::new(sc.seed);
        let n_hosts = sc.hosts;
        let n_vms = sc.vms();
        // Where each VM starts, and every host it may run on (the node configs list them).
        let home = |j: usize| j % n_hosts;
        let mut may_run: Vec<Vec<(usize, bool)>> = vec![Vec::new(); n_hosts];
        for j in 0..n_vms {
            may_run[home(j)].push((j, true));
        }
        let mut migrating = vec![false; n_vms];
        for m in &sc.migrations {
            migrating[m.vm] = true;
            if !may_run[m.to].iter().any(|(j, _)| *j == m.vm) {
                may_run[m.to].push((m.vm, false));
            }
        }
        // Random migrations: each VM at most once, to a random other host; planned now so
        // that every destination's node config lists the VM.
        let mut random_plan = VecDeque::new();
        if sc.random_migrations > 0 {
            let candidates: Vec<usize> = (0..n_vms).filter(|&j| !migrating[j]).collect();
            // Half of the VMs stay put: the clients of the workloads.
            if sc.random_migrations > candidates.len() / 2 {
                return Err(SimError::Setup(format!(
                    "{} random migrations need at least twice as many VMs that do not migrate \
                     otherwise ({} here)",
                    sc.random_migrations,
                    candidates.len()
                )));
            }
            let mut pool = candidates;
            for _ in 0..sc.random_migrations {
                let k = rng.below(pool.len());
                let j = pool.swap_remove(k);
                let mut to = rng.below(n_hosts - 1);
                if to >= home(j) {
                    to += 1;
                }
                migrating[j] = true;
                may_run[to].push((j, false));
                let spread = sc.migration_spread;
                let factor = 1.0 - spread + 2.0 * spread * rng.unit();
                random_plan.push_back((j as u32, to as u32, factor));
            }
        }
        let scheduled_factors: Vec<f64> = sc
            .migrations
            .iter()
            .map(|_| {
                let spread = sc.migration_spread;
                if spread > 0.0 {
                    1.0 - spread + 2.0 * spread * rng.unit()
                } else {
                    1.0
                }
            })
            .collect();
        let mut hosts = Vec::with_capacity(n_hosts);
        let mut host_index = HashMap::new();
        let mut model = Model::new();
        for (i, vms_here) in may_run.iter().enumerate() {
            let info = host_info(i)?;
            let node = node_config(&sc, i, vms_here)?;
            let mut agent = Agent::new(info.name.clone(), node.clone(), 1)
                .map_err(|e| SimError::Setup(format!("agent of host {i}: {e}")))?;
            agent.set_clock(WallClock { unix_us_at_zero: 0 });
            let dp = agent.dataplane();
            let uplink = dp
                .port_id("up0")
                .ok_or_else(|| SimError::Setup(format!("host {i}: no uplink")))?;
            let mut port_vm = vec![None; vms_here.len() + 1];
            let mut vm_port = BTreeMap::new();
            for (k, &(j, _)) in vms_here.iter().enumerate() {
                let p = dp
                    .port_id(&format!("p{k}"))
                    .ok_or_else(|| SimError::Setup(format!("host {i}: no port p{k}")))?;
                if let Some(slot) = port_vm.get_mut(p.index()) {
                    *slot = Some(j as u32);
                }
                vm_port.insert(j as u32, p);
            }
            host_index.insert(info.name.clone(), i as u32);
            model
                .add_host(info.clone())
                .map_err(|e| SimError::Setup(format!("host {i}: {e}")))?;
            hosts.push(Host {
                name: info.name,
                node,
                agent: Some(agent),
                boot_epoch: 1,
                uplink,
                port_vm,
                vm_port,
                timer: None,
                up_busy: 0,
                down_busy: 0,
                to_host_fifo: 0,
                to_ctl_fifo: 0,
                leaf: i / sc.hosts_per_leaf,
            });
        }
        let mut vms = Vec::with_capacity(n_vms);
        for j in 0..n_vms {
            let name = VmId::new(vm_name(j)).map_err(|e| SimError::Setup(e.to_string()))?;
            model
                .add_vm(VmInfo {
                    name: name.clone(),
                    addresses: vec![vm_addr(j).into()],
                    mac: MacAddr(vm_mac(j)),
                    host: hosts[home(j)].name.clone(),
                    network: network_of(&sc, j)?,
                })
                .map_err(|e| SimError::Setup(format!("VM {j}: {e}")))?;
            vms.push(Vm {
                name,
                addr: vm_addr(j),
                mac: vm_mac(j),
                host: home(j) as u32,
                running: true,
                pending: Vec::new(),
                resumed: None,
                probe: None,
                http: None,
                tcp: None,
                client_of: Vec::new(),
                client_http: Vec::new(),
            });
        }
        let snapshot = ControllerSnapshot {
            model,
            generations: Default::default(),
            migrations: Vec::new(),
            finished: Vec::new(),
            next_id: 1,
            epoch: 1,
        };
        let ctl = Controller::restore(Timestamp(0), ControllerConfig::default(), snapshot);
        let lossless = sc.fabric.loss == 0.0 && sc.crashes.is_empty();
        let status_polls =
            !sc.crashes.is_empty() || sc.control.loss > 0.0 || !sc.partitions.is_empty();
        let mut w = World {
            now: 0,
            q: Queue::default(),
            rng,
            hosts,
            host_index,
            vms,
            ctl,
            ctl_timer: None,
            migs: Vec::new(),
            mig_of: HashMap::new(),
            hv: HashMap::new(),
            probes: Vec::new(),
            http: Vec::new(),
            tcp: Vec::new(),
            random_plan,
            scheduled_factors,
            random_in_flight: 0,
            stats: Stats::default(),
            trace: VecDeque::with_capacity(TRACE),
            pkt: PacketBuf::new(),
            out: PacketBuf::new(),
            lossless,
            drops: HashMap::new(),
            ended: false,
            status_polls,
            pending_violation: None,
            scheduled_issued: 0,
            end_scheduled: false,
            origin: 0,
            running: false,
            leak: false,
            clones: HashMap::new(),
            sc,
        };
        for i in 0..n_hosts {
            w.after_host(i as u32);
        }
        w.ctl_drain();
        w.settle()?;
        let o = w.origin;
        for (idx, m) in w.sc.migrations.clone().iter().enumerate() {
            w.q.push(o + m.at_ms * MS, Ev::Request { idx });
        }
        let start = o + (w.sc.workloads.lead_ms as Nanos * MS).max(100 * MS);
        for _ in 0..w.sc.concurrent.min(w.random_plan.len()) {
            let jitter = (w.rng.unit() * 100.0 * MS as f64) as Nanos;
            w.q.push(start + jitter, Ev::RandomNext);
        }
        for c in w.sc.crashes.clone() {
            let host = c.host as u32;
            w.q.push(o + c.at_ms * MS, Ev::Crash { host });
            w.q.push(o + (c.at_ms + c.down_ms) * MS, Ev::Restart { host });
        }
        if w.status_polls {
            w.q.push(o + STATUS_POLL, Ev::StatusPoll);
        }
        Ok(w)
    }

    /// Runs the first config pushes until every host acknowledged its first config: that
    /// moment is the schedule's time zero ([`World::origin`]), so no workload starts against
    /// a host that has no config yet.
    fn settle(&mut self) -> Result<(), SimError> {
        let mut next = 0;
        while next < self.hosts.len() {
            let name = &self.hosts[next].name;
            if self.ctl.acked_generation(name).is_some_and(|g| g > 0) {
                next += 1;
                continue;
            }
            let Some((at, ev)) = self.q.pop() else {
                return Err(SimError::Setup(format!(
                    "host {next} never acknowledged its first config"
                )));
            };
            self.now = at;
            self.stats.events += 1;
            self.handle(ev)?;
        }
        self.origin = self.now;
        Ok(())
    }

    /// When every host held its first config: time zero of the scenario's schedule, ns.
    pub fn origin(&self) -> Nanos {
        self.origin
    }

    /// Makes the run end without freeing the hosts and the controller (most of the memory):
    /// for a process that exits right after, where freeing 10,000 hosts' tables one by one
    /// takes seconds the operating system does at once.
    pub fn leak_at_end(&mut self) {
        self.leak = true;
    }

    /// Runs until nothing is left to do (or `max_sim_ms`), checks the end invariants and
    /// returns what happened.
    pub fn run(mut self) -> Result<Outcome, SimError> {
        let limit = self.sc.max_sim_ms.saturating_mul(MS);
        self.running = true;
        self.maybe_end();
        while let Some((at, ev)) = self.q.pop() {
            if at > limit {
                break;
            }
            self.now = at;
            self.stats.events += 1;
            if self.trace.len() == TRACE {
                self.trace.pop_front();
            }
            let detail = match &ev {
                Ev::Uplink { host, .. }
                | Ev::HostTimer { host }
                | Ev::Crash { host }
                | Ev::Restart { host } => format!("host {host}"),
                Ev::ToHost { host, msg } => format!(
                    "host {host}: {}",
                    match msg {
                        ToHost::Full(c) => format!("config {}", c.generation),
                        ToHost::Delta(d) => format!("delta {:?}", d.base()),
                        ToHost::StatusPoll => "status".into(),
                    }
                ),
                Ev::VmTx { vm, .. } => format!("vm {vm}"),
                Ev::HvStart { id }
                | Ev::HvPause { id }
                | Ev::HvResume { id }
                | Ev::HvCancel { id } => format!("migration {}", id.0),
                Ev::ToCtl { msg } => format!("{msg:?}").chars().take(120).collect(),
                _ => String::new(),
            };
            self.trace.push_back((at, ev.name(), detail));
            self.handle(ev)?;
            if let Some(e) = self.pending_violation.take() {
                return Err(e);
            }
            if self.ended {
                break;
            }
        }
        self.finish()
    }

    fn violation(&self, what: String) -> SimError {
        let trace = self
            .trace
            .iter()
            .map(|(t, name, d)| format!("  {:>12.3} ms  {name}  {d}", *t as f64 / 1e6))
            .collect::<Vec<_>>()
            .join("\n");
        SimError::Invariant {
            seed: self.sc.seed,
            at_ms: self.now as f64 / 1e6,
            event: self.stats.events,
            what,
            trace,
        }
    }

    fn handle(&mut self, ev: Ev) -> Result<(), SimError> {
        match ev {
            Ev::Uplink { host, frame } => {
                let port = self.hosts[host as usize].uplink;
                self.host_rx(host, port, &frame)?;
            }
            Ev::VmTx { vm, frame } => self.vm_tx(vm, frame)?,
            Ev::HostTimer { host } => {
                let h = &mut self.hosts[host as usize];
                h.timer = None;
                if let Some(agent) = h.agent.as_mut() {
                    let now = Instant(self.now);
                    if agent.dataplane().poll_timeout().is_some_and(|t| t <= now) {
                        agent.dataplane().handle_timeout(now);
                    }
                }
                self.after_host(host);
            }
            Ev::ToHost { host, msg } => self.host_message(host, msg),
            Ev::ToCtl { msg } => self.ctl_message(msg),
            Ev::CtlTimer => {
                self.ctl_timer = None;
                let now = self.ctl_now();
                if self.ctl.poll_timeout().is_some_and(|t| t <= now) {
                    self.ctl.handle_timeout(now);
                }
                self.ctl_drain();
            }
            Ev::Request { idx } => {
                let m = self.sc.migrations[idx];
                self.scheduled_issued += 1;
                let factor = self.scheduled_factors.get(idx).copied().unwrap_or(1.0);
                self.request(m.vm as u32, m.to as u32, factor);
            }
            Ev::RandomNext => {
                if let Some((vm, to, factor)) = self.random_plan.pop_front() {
                    self.random_in_flight += 1;
                    self.request(vm, to, factor);
                }
            }
            Ev::HvStart { id } => self.hv_start(id),
            Ev::HvPause { id } => self.hv_pause(id),
            Ev::HvResume { id } => self.hv_resume(id),
            Ev::HvCancel { id } => self.hv_cancel(id),
            Ev::ProbeTick { flow } => self.probe_tick(flow)?,
            Ev::HttpOpen { flow } => self.http_open(flow)?,
            Ev::HttpTimer {
                flow,
                session,
                tries,
                syn,
            } => self.http_timer(flow, session, tries, syn)?,
            Ev::TcpTick { flow } => self.tcp_tick(flow)?,
            Ev::TcpTimer { flow } => self.tcp_timer(flow)?,
            Ev::Crash { host } => self.crash(host),
            Ev::Restart { host } => self.restart(host)?,
            Ev::StatusPoll => {
                for h in 0..self.hosts.len() {
                    self.stats.controller_messages += 1;
                    self.send_host(h as u32, ToHost::StatusPoll, 0.0);
                }
                if !self.quiet() {
                    self.q.push(self.now + STATUS_POLL, Ev::StatusPoll);
                }
            }
            Ev::End => self.ended = true,
        }
        self.maybe_end();
        Ok(())
    }

    /// Nothing scheduled will ever matter again: every migration requested and ended, every
    /// workload stopped.
    fn quiet(&self) -> bool {
        self.scheduled_issued == self.sc.migrations.len()
            && self.random_plan.is_empty()
            && self
                .migs
                .iter()
                .all(|m| m.finished_at.is_some() || m.refused.is_some())
            && self
                .probes
                .iter()
                .all(|p| p.stop.is_some_and(|s| s <= self.now))
            && self
                .http
                .iter()
                .all(|h| h.stop.is_some_and(|s| s <= self.now))
    }

    /// Once everything is quiet, the run stops after the tail (late timers, drains, answers).
    fn maybe_end(&mut self) {
        if self.running && !self.end_scheduled && self.quiet() {
            self.end_scheduled = true;
            self.q.push(self.now + self.sc.tail_ms * MS, Ev::End);
        }
    }

    // ---- hosts ------------------------------------------------------------------------

    fn host_rx(&mut self, h: u32, port: PortId, frame: &[u8]) -> Result<(), SimError> {
        let now = Instant(self.now);
        let host = &mut self.hosts[h as usize];
        let Some(agent) = host.agent.as_mut() else {
            self.stats.host_down_drops += 1;
            return Ok(());
        };
        self.stats.frames += 1;
        let dp = agent.dataplane();
        let verdict = if self.pkt.set_data(frame).is_err() {
            dp.drop_frame_too_large(port, frame.len())
        } else {
            self.pkt.ingress = port;
            dp.process_packet(now, &mut self.pkt)
        };
        match verdict {
            Verdict::Tx(p) => {
                let data = self.pkt.data().to_vec();
                self.emit(h, p, data);
            }
            Verdict::Drop(_) => self.stats.dataplane_drops += 1,
            Verdict::Held(vm) => {
                self.stats.held += 1;
                self.check_buffer(h, vm)?;
            }
            Verdict::Consumed => {}
        }
        self.after_host(h);
        Ok(())
    }

    /// Invariant: End.SBUF stays within its bounds, per VM and per host.
    fn check_buffer(&mut self, h: u32, vm: srmig_dataplane::VmId) -> Result<(), SimError> {
        self.stats.checks += 1;
        let b = self.sc.buffer;
        let Some(agent) = self.hosts[h as usize].agent.as_mut() else {
            return Ok(());
        };
        let c = agent.dataplane().counters();
        let one = c.buffer_occupancy(vm);
        let all = c.buffer_total();
        if one.packets > u64::from(b.per_vm_packets)
            || one.bytes > b.per_vm_bytes
            || all.packets > u64::from(b.global_packets)
            || all.bytes > b.global_bytes
        {
            return Err(self.violation(format!(
                "End.SBUF on host {h} holds {} packets / {} bytes for one VM and {} / {} in all, \
                 beyond its bounds ({} / {} per VM, {} / {} in all)",
                one.packets,
                one.bytes,
                all.packets,
                all.bytes,
                b.per_vm_packets,
                b.per_vm_bytes,
                b.global_packets,
                b.global_bytes
            )));
        }
        Ok(())
    }

    /// After anything touched host `h`: what its engine has to send, its reports, its timer.
    fn after_host(&mut self, h: u32) {
        let now = Instant(self.now);
        let mut frames = Vec::new();
        let mut msgs = Vec::new();
        let host = &mut self.hosts[h as usize];
        let Some(agent) = host.agent.as_mut() else {
            return;
        };
        while let Some(p) = agent.dataplane().poll_transmit(now, &mut self.out) {
            frames.push((p, self.out.data().to_vec()));
        }
        while let Some(r) = agent.poll_report() {
            msgs.push(ToCtl::VmState(r));
        }
        while let Some(r) = agent.poll_fence_report() {
            msgs.push(ToCtl::Fence(r));
        }
        while let Some(r) = agent.poll_release_report() {
            msgs.push(ToCtl::Release(r));
        }
        let due = agent.dataplane().poll_timeout();
        if let Some(t) = due {
            let t = t.as_nanos().max(self.now);
            if host.timer.is_none_or(|x| t < x) {
                host.timer = Some(t);
                self.q.push(t, Ev::HostTimer { host: h });
            }
        }
        for m in msgs {
            self.send_ctl(h, m, 0.0);
        }
        for (p, f) in frames {
            self.emit(h, p, f);
        }
    }

    /// A frame leaves host `h` on port `p`.
    fn emit(&mut self, h: u32, p: PortId, frame: Vec<u8>) {
        if p == self.hosts[h as usize].uplink {
            self.fabric(h, frame);
            return;
        }
        let Some(vm) = self.hosts[h as usize]
            .port_vm
            .get(p.index())
            .copied()
            .flatten()
        else {
            self.stats.port_lost += 1;
            return;
        };
        let v = &self.vms[vm as usize];
        if !(v.running && v.host == h) {
            self.stats.port_lost += 1;
            return;
        }
        let now = self.now;
        if let Some(agent) = self.hosts[h as usize].agent.as_mut() {
            agent.note_delivered(p, Instant(now));
            if let Some(resumed) = self.vms[vm as usize].resumed.take() {
                agent.observe_release(p, Instant(resumed), Instant(now));
            }
        }
        self.vm_rx(vm, &frame);
        // observe_release may have queued a report.
        self.after_host_reports(h);
    }

    fn after_host_reports(&mut self, h: u32) {
        let mut msgs = Vec::new();
        if let Some(agent) = self.hosts[h as usize].agent.as_mut() {
            while let Some(r) = agent.poll_release_report() {
                msgs.push(ToCtl::Release(r));
            }
        }
        for m in msgs {
            self.send_ctl(h, m, 0.0);
        }
    }

    // ---- fabric ------------------------------------------------------------------------

    /// A host sends `frame` on its uplink (`ovn-like`: cloned first if it is for a migrating
    /// VM's source).
    fn fabric(&mut self, from: u32, frame: Vec<u8>) {
        if !self.clones.is_empty() {
            self.ovn_clone(from, &frame);
        }
        self.transmit(from, frame);
    }

    /// `ovn-like`: the ingress chassis clones a frame for a VM bound to two chassis to the
    /// destination's decapsulation SID; the destination's chassis drops it until the port is
    /// active there (the guest's resume plus `ovn_activation_ms`).
    fn ovn_clone(&mut self, from: u32, frame: &[u8]) {
        let Some(to) = frame::outer_destination(frame).and_then(|d| self.route(d)) else {
            return;
        };
        let Some(list) = self.clones.get(&to) else {
            return;
        };
        let Some((inner, dst)) = frame::inner_destination(frame) else {
            return;
        };
        let Some(c) = list.iter().find(|c| c.vm_addr == dst) else {
            return;
        };
        let (mig, s, d) = (c.mig, c.from, c.to);
        let active_from = self.migs[mig]
            .resumed_at
            .map(|t| t.saturating_add((self.sc.ovn_activation_ms * MS as f64) as Nanos));
        if active_from.is_none_or(|t| self.now < t) {
            self.stats.ovn_clones_inactive += 1;
            return;
        }
        let mut clone = frame.to_vec();
        if frame::rewrite_outer(&mut clone, inner, sid_dt6(s as usize), sid_dt6(d as usize)) == 0 {
            return;
        }
        self.stats.ovn_clones += 1;
        self.transmit(from, clone);
    }

    fn transmit(&mut self, from: u32, mut frame: Vec<u8>) {
        let Some(to) = frame::outer_destination(&frame).and_then(|d| self.route(d)) else {
            self.stats.fabric_unroutable += 1;
            return;
        };
        if self.rng.chance(self.sc.fabric.loss) {
            self.stats.fabric_lost += 1;
            return;
        }
        let f = self.sc.fabric;
        let ser = (frame.len() as f64 * 8.0 / f.bandwidth_gbps) as Nanos;
        let queue_limit = (f.queue_bytes as f64 * 8.0 / f.bandwidth_gbps) as Nanos;
        let now = self.now;
        let src = &mut self.hosts[from as usize];
        if src.up_busy.saturating_sub(now) > queue_limit {
            self.stats.fabric_queue_drops += 1;
            return;
        }
        src.up_busy = src.up_busy.max(now) + ser;
        let sent = src.up_busy;
        let hops: u64 = if src.leaf == self.hosts[to as usize].leaf {
            2
        } else {
            4
        };
        let at_leaf = sent + hops * f.hop_latency_us as Nanos * 1000 + (hops - 1) * ser;
        let dst = &mut self.hosts[to as usize];
        if dst.down_busy.saturating_sub(at_leaf) > queue_limit {
            self.stats.fabric_queue_drops += 1;
            return;
        }
        dst.down_busy = dst.down_busy.max(at_leaf) + ser;
        let arrival = dst.down_busy;
        // The last router's rewrite: its MAC to the host's uplink.
        frame[0..6].copy_from_slice(&UPLINK_MAC);
        frame[6..12].copy_from_slice(&ROUTER_MAC);
        self.q.push(arrival, Ev::Uplink { host: to, frame });
    }

    /// The host owning an outer destination: a locator `fc00:0:G::/48` or an underlay
    /// address `2001:db8:ff::G` (host G-1).
    fn route(&self, dst: Ipv6Addr) -> Option<u32> {
        let s = dst.segments();
        let g = match s {
            [0xfc00, 0, g, ..] => g,
            [0x2001, 0xdb8, 0xff, 0, 0, 0, 0, g] => g,
            _ => return None,
        };
        let i = usize::from(g).checked_sub(1)?;
        (i < self.hosts.len()).then_some(i as u32)
    }

    // ---- VMs ---------------------------------------------------------------------------

    fn vm_tx(&mut self, vm: u32, frame: Vec<u8>) -> Result<(), SimError> {
        let v = &mut self.vms[vm as usize];
        if !v.running {
            v.pending.push(frame);
            return Ok(());
        }
        let h = v.host;
        let Some(&port) = self.hosts[h as usize].vm_port.get(&vm) else {
            return Err(SimError::Setup(format!(
                "VM {vm} runs on host {h}, which has no port for it"
            )));
        };
        self.host_rx(h, port, &frame)
    }

    fn send_from_vm(&mut self, vm: u32, to: Ipv6Addr, msg: Msg, delay: Nanos) {
        let v = &self.vms[vm as usize];
        let frame = frame::vm_frame(v.mac, GATEWAY_MAC, v.addr, to, msg, PAYLOAD);
        self.q.push(self.now + delay, Ev::VmTx { vm, frame });
    }

    /// A frame reached VM `vm` (running on the host that delivered it).
    fn vm_rx(&mut self, vm: u32, frame: &[u8]) {
        let Some((src, _dst, msg)) = frame::parse_vm_frame(frame) else {
            return;
        };
        let now = self.now;
        let flow = msg.flow as usize;
        match msg.kind {
            Kind::Probe => {
                if let Some(p) = self.probes.get_mut(flow) {
                    let arrival = p.record_at_vm(msg.seq, now);
                    self.check_arrival(flow, msg.seq, arrival);
                    self.send_from_vm(
                        vm,
                        src,
                        Msg {
                            kind: Kind::ProbeReply,
                            ..msg
                        },
                        VM_TURNAROUND,
                    );
                }
            }
            Kind::ProbeReply => {
                if let Some(p) = self.probes.get_mut(flow) {
                    p.record_answer(msg.seq, now);
                }
            }
            Kind::Syn => self.send_from_vm(
                vm,
                src,
                Msg {
                    kind: Kind::SynAck,
                    ..msg
                },
                VM_TURNAROUND,
            ),
            Kind::Request => self.send_from_vm(
                vm,
                src,
                Msg {
                    kind: Kind::Response,
                    ..msg
                },
                VM_TURNAROUND,
            ),
            Kind::SynAck => {
                let Some(f) = self.http.get_mut(flow) else {
                    return;
                };
                let Some(s) = f.sessions.get_mut(msg.seq as usize) else {
                    return;
                };
                if s.established.is_some() {
                    return;
                }
                s.established = Some(now);
                s.requests = 1;
                let rtt = now.saturating_sub(msg.sent_at);
                f.srtt = Some(f.srtt.map_or(rtt, |r| (7 * r + rtt) / 8));
                let rto = f.request_rto(1);
                let target = self.vms[f.target as usize].addr;
                self.send_from_vm(
                    vm,
                    target,
                    Msg {
                        kind: Kind::Request,
                        sent_at: now,
                        ..msg
                    },
                    0,
                );
                self.q.push(
                    now + rto,
                    Ev::HttpTimer {
                        flow,
                        session: msg.seq as usize,
                        tries: 1,
                        syn: false,
                    },
                );
            }
            Kind::Response => {
                let Some(s) = self
                    .http
                    .get_mut(flow)
                    .and_then(|f| f.sessions.get_mut(msg.seq as usize))
                else {
                    return;
                };
                if s.done.is_none() {
                    s.done = Some(now);
                }
            }
            Kind::Data => {
                let Some(f) = self.tcp.get_mut(flow) else {
                    return;
                };
                let ack = f.receive(msg.seq, now);
                self.send_from_vm(
                    vm,
                    src,
                    Msg {
                        kind: Kind::Ack,
                        seq: ack,
                        ..msg
                    },
                    VM_TURNAROUND,
                );
            }
            Kind::Ack => self.tcp_ack(flow, msg.seq),
        }
    }

    /// Invariant (sr-buffer on a lossless fabric): the VM receives each probe once and in
    /// order. (The loss half is checked at the end, when nothing can be in flight.)
    fn check_arrival(&mut self, flow: usize, seq: u64, arrival: Option<Arrival>) {
        if !(self.lossless && self.sc.strategy == SimStrategy::SrBuffer) {
            return;
        }
        self.stats.checks += 1;
        let what = match arrival {
            Some(Arrival::InOrder) | None => return,
            Some(Arrival::Duplicate) => format!("probe {seq} of flow {flow} reached its VM twice"),
            Some(Arrival::Reordered { after }) => {
                format!("probe {seq} of flow {flow} reached its VM after probe {after}")
            }
        };
        if self.pending_violation.is_none() {
            self.pending_violation = Some(self.violation(what));
        }
    }

    // ---- control network ---------------------------------------------------------------

    fn ctl_now(&self) -> Timestamp {
        Timestamp(self.now / MS)
    }

    /// One-way delay of a control message: fixed part, jitter, a TCP retransmission timeout
    /// per lost transmission, waiting out a partition of `host`.
    fn control_delay(&mut self, host: u32, extra_ms: f64) -> Nanos {
        let c = self.sc.control;
        let mut d = ((c.delay_ms + self.rng.exp(c.jitter_ms) + extra_ms) * MS as f64) as Nanos;
        let mut rto = CONTROL_RTO;
        while self.rng.chance(c.loss) {
            d += rto;
            rto = (rto * 2).min(60_000 * MS);
        }
        let mut at = self.now + d;
        for p in &self.sc.partitions {
            let (from, until) = (self.origin + p.from_ms * MS, self.origin + p.until_ms * MS);
            if at >= from && at < until && p.hosts.contains(&(host as usize)) {
                at = until + d;
            }
        }
        at
    }

    fn send_host(&mut self, host: u32, msg: ToHost, extra_ms: f64) {
        let mut at = self.control_delay(host, extra_ms);
        let h = &mut self.hosts[host as usize];
        // One connection per host: in order.
        at = at.max(h.to_host_fifo);
        h.to_host_fifo = at;
        self.q.push(at, Ev::ToHost { host, msg });
    }

    fn send_ctl(&mut self, host: u32, msg: ToCtl, extra_ms: f64) {
        self.stats.agent_messages += 1;
        let mut at = self.control_delay(host, extra_ms);
        let h = &mut self.hosts[host as usize];
        at = at.max(h.to_ctl_fifo);
        h.to_ctl_fifo = at;
        self.q.push(at, Ev::ToCtl { msg });
    }

    fn host_message(&mut self, h: u32, msg: ToHost) {
        let apply_ms = self.sc.control.apply_ms;
        let host = &mut self.hosts[h as usize];
        let Some(agent) = host.agent.as_mut() else {
            // srmigd is down: the connection is refused; the status poll catches up later.
            self.stats.control_lost += 1;
            return;
        };
        let reply = match msg {
            ToHost::Full(hc) => agent.apply_host_config(hc).map(ToCtl::Ack),
            ToHost::Delta(d) => match agent.apply_host_config_delta(&d) {
                Ok(ack) => Ok(ToCtl::Ack(ack)),
                // The host does not hold the delta's base (it restarted): the daemon sends
                // the whole config instead, as srmig-controller does.
                Err(_) => match self.ctl.pushed_config(&host.name).cloned() {
                    Some(full) => agent.apply_host_config(full).map(ToCtl::Ack),
                    None => return,
                },
            },
            ToHost::StatusPoll => {
                let s = agent.status(&[]);
                Ok(ToCtl::Status(
                    host.name.clone(),
                    HostObservation {
                        boot_epoch: s.boot_epoch,
                        in_force: s.generation.map(|g| (s.epoch.unwrap_or(0), g)),
                    },
                ))
            }
        };
        match reply {
            Ok(m) => self.send_ctl(h, m, apply_ms),
            Err(_) => self.stats.configs_refused += 1,
        }
        self.after_host(h);
    }

    fn ctl_message(&mut self, msg: ToCtl) {
        let now = self.ctl_now();
        // Inputs the controller refuses (unknown host or VM) cannot come from this world;
        // they would show as a migration that never ends, checked at the end.
        let _ = match msg {
            ToCtl::Ack(a) => self.ctl.handle_ack(now, a),
            ToCtl::VmState(r) => self.ctl.handle_vm_state(now, r),
            ToCtl::Fence(r) => self.ctl.handle_fence_report(now, r),
            ToCtl::Release(r) => self.ctl.handle_release_report(now, r),
            ToCtl::Hypervisor(r) => self.ctl.handle_hypervisor(now, r),
            ToCtl::Status(host, obs) => self.ctl.handle_host_status(now, &host, obs),
        };
        self.ctl_drain();
    }

    /// Carries out the controller's actions and re-arms its timer.
    fn ctl_drain(&mut self) {
        while let Some(a) = self.ctl.poll_action() {
            match a {
                Action::PushConfig { host, config } => {
                    let Some(&h) = self.host_index.get(&host) else {
                        continue;
                    };
                    self.stats.controller_messages += 1;
                    self.stats.config_pushes += 1;
                    let extra = self.sc.control.push_delay_ms;
                    self.send_host(h, ToHost::Full(config), extra);
                }
                Action::PushDelta { host, delta } => {
                    let Some(&h) = self.host_index.get(&host) else {
                        continue;
                    };
                    self.stats.controller_messages += 1;
                    self.stats.delta_pushes += 1;
                    let extra = self.sc.control.push_delay_ms;
                    self.send_host(h, ToHost::Delta(delta), extra);
                }
                Action::StartMigration { id, from, .. } => {
                    if let Some(&h) = self.host_index.get(&from) {
                        let at = self.control_delay(h, 0.0);
                        self.q.push(at, Ev::HvStart { id });
                    }
                }
                Action::CancelMigration { id, from, .. } => {
                    if let Some(&h) = self.host_index.get(&from) {
                        let at = self.control_delay(h, 0.0);
                        self.q.push(at, Ev::HvCancel { id });
                    }
                }
                Action::MigrationFinished { id, outcome, .. } => self.finished(id, outcome),
                Action::EpochAdvanced { .. } => self.stats.epoch_advances += 1,
            }
        }
        if let Some(t) = self.ctl.poll_timeout() {
            let at = t.0.saturating_mul(MS).max(self.now);
            if self.ctl_timer.is_none_or(|x| at < x) {
                self.ctl_timer = Some(at);
                self.q.push(at, Ev::CtlTimer);
            }
        }
    }

    // ---- migrations --------------------------------------------------------------------

    fn request(&mut self, vm: u32, to: u32, factor: f64) {
        let from = self.vms[vm as usize].host;
        let idx = self.migs.len();
        let mut rec = MigrationRecord {
            vm,
            from,
            to,
            requested_at: self.now,
            id: None,
            refused: None,
            paused_at: None,
            resumed_at: None,
            finished_at: None,
            outcome: None,
            arm_ms: None,
            commit_ms: None,
            probe: None,
            http: None,
            rounds: 0,
            factor,
        };
        let req = MigrateRequest {
            vm: self.vms[vm as usize].name.clone(),
            to: self.hosts[to as usize].name.clone(),
            strategy: self.sc.strategy.controller(),
        };
        match self.ctl.request_migration(self.ctl_now(), req) {
            Ok(id) => {
                rec.id = Some(id);
                self.mig_of.insert(id, idx);
                if self.sc.strategy == SimStrategy::OvnLike {
                    self.clones.entry(from).or_default().push(OvnClone {
                        vm_addr: self.vms[vm as usize].addr,
                        mig: idx,
                        from,
                        to,
                    });
                }
            }
            Err(e) => rec.refused = Some(e.to_string()),
        }
        // The workloads aimed at the VM (started now unless already running: they began
        // `lead_ms` earlier for scheduled migrations).
        rec.probe = self.vms[vm as usize].probe;
        rec.http = self.vms[vm as usize].http;
        if rec.probe.is_none() && rec.http.is_none() && rec.refused.is_none() {
            let (p, hf) = self.start_workloads(vm, from, Some(to));
            rec.probe = p;
            rec.http = hf;
        }
        self.migs.push(rec);
        if self.migs[idx].refused.is_some() {
            self.stop_workloads(idx);
            self.random_done();
        }
        self.ctl_drain();
    }

    fn hv_start(&mut self, id: MigrationId) {
        let Some(&idx) = self.mig_of.get(&id) else {
            return;
        };
        if self.hv.contains_key(&id) {
            return;
        }
        let factor = self.migs[idx].factor;
        let t = hypervisor::plan(hypervisor::scaled(self.sc.migration, factor));
        self.migs[idx].rounds = t.rounds;
        self.hv.insert(
            id,
            HvRun {
                mig: idx,
                paused: false,
                cancelled: false,
                pause_ms: t.pause_ms,
            },
        );
        self.q.push(
            self.now + (t.precopy_ms * MS as f64) as Nanos,
            Ev::HvPause { id },
        );
    }

    fn hv_pause(&mut self, id: MigrationId) {
        let Some(run) = self.hv.get_mut(&id) else {
            return;
        };
        if run.cancelled {
            return;
        }
        run.paused = true;
        let pause = (run.pause_ms * MS as f64) as Nanos;
        let idx = run.mig;
        let vm = self.migs[idx].vm;
        let from = self.migs[idx].from;
        self.migs[idx].paused_at = Some(self.now);
        self.vms[vm as usize].running = false;
        let now = Instant(self.now);
        let host = &mut self.hosts[from as usize];
        if let (Some(&port), Some(agent)) = (host.vm_port.get(&vm), host.agent.as_mut()) {
            agent.port_attachment(now, port, false);
        }
        self.after_host(from);
        self.q.push(self.now + pause, Ev::HvResume { id });
    }

    fn hv_resume(&mut self, id: MigrationId) {
        let Some(run) = self.hv.get(&id) else { return };
        let idx = run.mig;
        let (vm, from, to) = (self.migs[idx].vm, self.migs[idx].from, self.migs[idx].to);
        self.migs[idx].resumed_at = Some(self.now);
        let v = &mut self.vms[vm as usize];
        v.host = to;
        v.running = true;
        v.resumed = Some(self.now);
        let pending = std::mem::take(&mut v.pending);
        let now = Instant(self.now);
        let host = &mut self.hosts[to as usize];
        if let (Some(&port), Some(agent)) = (host.vm_port.get(&vm), host.agent.as_mut()) {
            agent.port_attachment(now, port, true);
        }
        self.after_host(to);
        for f in pending {
            self.q.push(self.now, Ev::VmTx { vm, frame: f });
        }
        let report = HypervisorReport {
            vm: self.vms[vm as usize].name.clone(),
            migration: id,
            event: HypervisorEvent::Completed,
        };
        self.send_ctl(from, ToCtl::Hypervisor(report), 0.0);
    }

    fn hv_cancel(&mut self, id: MigrationId) {
        let Some(run) = self.hv.get_mut(&id) else {
            return;
        };
        if run.paused {
            // Too late: the guest is in its pause; completion is reported at the resume.
            return;
        }
        run.cancelled = true;
        let idx = run.mig;
        let (vm, from) = (self.migs[idx].vm, self.migs[idx].from);
        let report = HypervisorReport {
            vm: self.vms[vm as usize].name.clone(),
            migration: id,
            event: HypervisorEvent::Cancelled,
        };
        self.send_ctl(from, ToCtl::Hypervisor(report), 0.0);
    }

    fn finished(&mut self, id: MigrationId, outcome: MigrationOutcome) {
        let Some(&idx) = self.mig_of.get(&id) else {
            return;
        };
        if self.migs[idx].finished_at.is_some() {
            return;
        }
        if let Some(m) = self.ctl.migration(id) {
            let st = m.status();
            let at = |p: MigrationPhase| st.phases.iter().find(|r| r.phase == p).map(|r| r.at_ms.0);
            let requested = st.started_at_ms.0;
            self.migs[idx].arm_ms = at(MigrationPhase::ExpectHypervisorDone)
                .map(|t| t.saturating_sub(requested) as f64);
            let end = st.phases.last().map(|r| r.at_ms.0);
            self.migs[idx].commit_ms = at(MigrationPhase::HypervisorCompleted)
                .zip(end)
                .map(|(a, b)| b.saturating_sub(a) as f64);
        }
        self.migs[idx].finished_at = Some(self.now);
        self.migs[idx].outcome = Some(outcome);
        let from = self.migs[idx].from;
        if let Some(list) = self.clones.get_mut(&from) {
            list.retain(|c| c.mig != idx);
            if list.is_empty() {
                self.clones.remove(&from);
            }
        }
        self.stop_workloads(idx);
        self.random_done();
    }

    fn random_done(&mut self) {
        if self.random_in_flight > 0 {
            self.random_in_flight -= 1;
            if !self.random_plan.is_empty() {
                let gap = (self.rng.exp(50.0) * MS as f64) as Nanos;
                self.q.push(self.now + gap, Ev::RandomNext);
            }
        }
    }

    // ---- workloads ---------------------------------------------------------------------

    /// A client VM for `target`: the nearest VM before it that never migrates, on a host other
    /// than the migration's source and destination (the lab's client host C).
    /// With networks, the client is a VM of the target's network (the nearest before it in
    /// the network, wrapping around).
    fn client_for(&self, target: u32, from: u32, to: Option<u32>) -> Option<u32> {
        let (base, n) = match self.sc.network_size {
            0 => (0, self.vms.len() as u32),
            size => {
                let size = size as u32;
                let base = target / size * size;
                (base, size.min(self.vms.len() as u32 - base))
            }
        };
        let migrating = |j: u32| {
            self.sc.migrations.iter().any(|m| m.vm as u32 == j)
                || self.random_plan.iter().any(|(v, _, _)| *v == j)
                || self.migs.iter().any(|m| m.vm == j)
        };
        let t = target - base;
        (1..n)
            .map(|k| base + (t + n - k) % n)
            .filter(|&j| self.vms[j as usize].host != from && Some(self.vms[j as usize].host) != to)
            .take(64)
            .find(|&j| !migrating(j))
    }

    fn start_workloads(
        &mut self,
        vm: u32,
        from: u32,
        to: Option<u32>,
    ) -> (Option<usize>, Option<usize>) {
        let Some(client) = self.client_for(vm, from, to) else {
            return (None, None);
        };
        let w = self.sc.workloads;
        let mut out = (None, None);
        if w.probe_interval_ms > 0.0 {
            let i = self.probes.len();
            self.probes.push(ProbeFlow::new(
                client,
                vm,
                (w.probe_interval_ms * MS as f64) as Nanos,
            ));
            self.vms[vm as usize].probe = Some(i);
            self.vms[client as usize].client_of.push(i);
            self.q.push(self.now, Ev::ProbeTick { flow: i });
            out.0 = Some(i);
        }
        if w.tcp_mbps > 0.0 {
            let i = self.tcp.len();
            self.tcp
                .push(TcpFlow::new(client, vm, w.tcp_mbps, self.now));
            self.vms[vm as usize].tcp = Some(i);
            self.q.push(self.now, Ev::TcpTick { flow: i });
            self.tcp[i].tick_armed = true;
        }
        if w.http_rate > 0.0 {
            let i = self.http.len();
            self.http
                .push(HttpFlow::new(client, vm, (1e9 / w.http_rate) as Nanos));
            self.vms[vm as usize].http = Some(i);
            self.vms[client as usize].client_http.push(i);
            self.q.push(self.now, Ev::HttpOpen { flow: i });
            out.1 = Some(i);
        }
        out
    }

    /// Starts the workloads of scheduled migrations `lead_ms` ahead (called at setup).
    pub fn start_scheduled_workloads(&mut self) {
        let lead = (self.sc.workloads.lead_ms * MS as f64) as Nanos;
        for m in self.sc.migrations.clone() {
            let vm = m.vm as u32;
            if self.vms[vm as usize].probe.is_some() || self.vms[vm as usize].http.is_some() {
                continue;
            }
            let from = self.vms[vm as usize].host;
            let at = (self.origin + m.at_ms * MS)
                .saturating_sub(lead)
                .max(self.origin);
            let saved = self.now;
            self.now = at;
            self.start_workloads(vm, from, Some(m.to as u32));
            self.now = saved;
        }
    }

    fn stop_workloads(&mut self, idx: usize) {
        let vm = self.migs[idx].vm as usize;
        // Another migration of the same VM still to come keeps them running.
        let later = self.sc.migrations.iter().filter(|m| m.vm == vm).count()
            > self.migs.iter().filter(|m| m.vm as usize == vm).count();
        if later {
            return;
        }
        let stop = self.now + (self.sc.workloads.trail_ms * MS as f64) as Nanos;
        if let Some(p) = self.migs[idx].probe {
            self.probes[p].stop = Some(stop);
        }
        if let Some(h) = self.migs[idx].http {
            self.http[h].stop = Some(stop);
        }
        if let Some(t) = self.vms[vm].tcp {
            self.tcp[t].stop = Some(stop);
        }
    }

    fn probe_tick(&mut self, flow: usize) -> Result<(), SimError> {
        let now = self.now;
        let p = &mut self.probes[flow];
        if p.stop.is_some_and(|s| now >= s) {
            return Ok(());
        }
        let seq = p.record_send(now);
        let (client, target, interval) = (p.client, p.target, p.interval);
        let msg = Msg {
            kind: Kind::Probe,
            flow: flow as u32,
            seq,
            sent_at: now,
        };
        let dst = self.vms[target as usize].addr;
        self.q.push(now + interval, Ev::ProbeTick { flow });
        let v = &self.vms[client as usize];
        let frame = frame::vm_frame(v.mac, GATEWAY_MAC, v.addr, dst, msg, PAYLOAD);
        self.vm_tx(client, frame)
    }

    fn http_open(&mut self, flow: usize) -> Result<(), SimError> {
        let now = self.now;
        let f = &mut self.http[flow];
        if f.stop.is_some_and(|s| now >= s) {
            return Ok(());
        }
        let session = f.sessions.len();
        f.sessions.push(Session {
            started: now,
            syns: 1,
            established: None,
            requests: 0,
            done: None,
        });
        let (client, target, spacing) = (f.client, f.target, f.spacing);
        self.q.push(now + spacing, Ev::HttpOpen { flow });
        self.q.push(
            now + SYN_RTO_NS,
            Ev::HttpTimer {
                flow,
                session,
                tries: 1,
                syn: true,
            },
        );
        let dst = self.vms[target as usize].addr;
        let msg = Msg {
            kind: Kind::Syn,
            flow: flow as u32,
            seq: session as u64,
            sent_at: now,
        };
        let v = &self.vms[client as usize];
        let frame = frame::vm_frame(v.mac, GATEWAY_MAC, v.addr, dst, msg, PAYLOAD);
        self.vm_tx(client, frame)
    }

    fn http_timer(
        &mut self,
        flow: usize,
        session: usize,
        tries: u32,
        syn: bool,
    ) -> Result<(), SimError> {
        let now = self.now;
        let f = &mut self.http[flow];
        let Some(s) = f.sessions.get_mut(session) else {
            return Ok(());
        };
        if s.done.is_some() || tries >= MAX_TRIES || (syn && s.established.is_some()) {
            return Ok(());
        }
        let kind = if syn {
            s.syns += 1;
            Kind::Syn
        } else {
            s.requests += 1;
            Kind::Request
        };
        let next = if syn {
            SYN_RTO_NS << tries
        } else {
            f.request_rto(tries + 1)
        };
        let (client, target) = (f.client, f.target);
        self.q.push(
            now + next,
            Ev::HttpTimer {
                flow,
                session,
                tries: tries + 1,
                syn,
            },
        );
        let dst = self.vms[target as usize].addr;
        let msg = Msg {
            kind,
            flow: flow as u32,
            seq: session as u64,
            sent_at: now,
        };
        let v = &self.vms[client as usize];
        let frame = frame::vm_frame(v.mac, GATEWAY_MAC, v.addr, dst, msg, PAYLOAD);
        self.vm_tx(client, frame)
    }

    fn tcp_send_one(&mut self, flow: usize, retransmission: bool) -> Result<(), SimError> {
        let now = self.now;
        let f = &mut self.tcp[flow];
        let seq = if retransmission {
            f.take_retransmission(now)
        } else {
            f.take_segment(now).0
        };
        let (client, target) = (f.client, f.target);
        if f.timer_at.is_none() {
            self.tcp_arm(flow);
        }
        let dst = self.vms[target as usize].addr;
        let msg = Msg {
            kind: Kind::Data,
            flow: flow as u32,
            seq,
            sent_at: now,
        };
        let v = &self.vms[client as usize];
        let frame = frame::vm_frame(v.mac, GATEWAY_MAC, v.addr, dst, msg, MSS);
        self.vm_tx(client, frame)
    }

    /// (Re)arms the flow's retransmission timer at now + RTO (one timer event outstanding:
    /// a later deadline is found when it fires).
    fn tcp_arm(&mut self, flow: usize) {
        let f = &mut self.tcp[flow];
        let at = self.now + f.rto();
        f.timer_at = Some(at);
        if f.timer_gen == 0 {
            f.timer_gen = 1;
            self.q.push(at, Ev::TcpTimer { flow });
        }
    }

    fn tcp_tick(&mut self, flow: usize) -> Result<(), SimError> {
        let now = self.now;
        let f = &mut self.tcp[flow];
        f.tick_armed = false;
        if !f.can_send(now) {
            return Ok(());
        }
        if f.nic_free_at > now {
            // The NIC is still sending the previous segment: ACK-clocked sends are paced too.
            f.tick_armed = true;
            self.q.push(f.nic_free_at, Ev::TcpTick { flow });
            return Ok(());
        }
        self.tcp_send_one(flow, false)?;
        let f = &mut self.tcp[flow];
        if f.can_send(now) && !f.tick_armed {
            f.tick_armed = true;
            self.q.push(now + f.pacing, Ev::TcpTick { flow });
        }
        Ok(())
    }

    fn tcp_ack(&mut self, flow: usize, ack: u64) {
        let now = self.now;
        let Some(f) = self.tcp.get_mut(flow) else {
            return;
        };
        let retransmit = f.on_ack(ack, now);
        if f.una >= f.high {
            f.timer_at = None;
        } else {
            self.tcp_arm(flow);
        }
        if retransmit {
            // Fast retransmit: the oldest unacknowledged segment, now.
            let _ = self.tcp_send_one(flow, true);
        }
        let f = &mut self.tcp[flow];
        if !f.tick_armed && f.can_send(now) {
            f.tick_armed = true;
            self.q.push(now, Ev::TcpTick { flow });
        }
    }

    fn tcp_timer(&mut self, flow: usize) -> Result<(), SimError> {
        let now = self.now;
        let f = &mut self.tcp[flow];
        f.timer_gen = 0;
        match f.timer_at {
            None => return Ok(()),
            Some(t) if t > now => {
                f.timer_gen = 1;
                self.q.push(t, Ev::TcpTimer { flow });
                return Ok(());
            }
            Some(_) => {}
        }
        f.timer_at = None;
        if f.una >= f.high {
            return Ok(());
        }
        f.on_timeout();
        self.tcp_arm(flow);
        let f = &mut self.tcp[flow];
        if !f.tick_armed {
            f.tick_armed = true;
            self.q.push(now, Ev::TcpTick { flow });
        }
        Ok(())
    }

    // ---- failures ----------------------------------------------------------------------

    fn crash(&mut self, h: u32) {
        let host = &mut self.hosts[h as usize];
        if let Some(mut agent) = host.agent.take() {
            for (r, n) in agent.dataplane().counters().drop_counts() {
                *self.drops.entry(format!("{r:?}")).or_default() += n;
            }
        }
        host.timer = None;
    }

    fn restart(&mut self, h: u32) -> Result<(), SimError> {
        let now = Instant(self.now);
        let host = &mut self.hosts[h as usize];
        host.boot_epoch += 1;
        let mut agent = Agent::new(host.name.clone(), host.node.clone(), host.boot_epoch)
            .map_err(|e| SimError::Setup(format!("agent of host {h} after its restart: {e}")))?;
        agent.set_clock(WallClock { unix_us_at_zero: 0 });
        // The hypervisor's truth: VMs running here are attached, the others are not.
        for (&vm, &port) in &host.vm_port {
            let v = &self.vms[vm as usize];
            agent.port_attachment(now, port, v.host == h && v.running);
        }
        host.agent = Some(agent);
        self.after_host(h);
        Ok(())
    }

    // ---- the end -----------------------------------------------------------------------

    fn finish(mut self) -> Result<Outcome, SimError> {
        // Invariant: every migration ended (completed, failed or cancelled: rolled back),
        // and the VM is where its outcome says.
        for (i, m) in self.migs.iter().enumerate() {
            self.stats.checks += 1;
            if m.refused.is_some() {
                continue;
            }
            let Some(outcome) = &m.outcome else {
                let phase =
                    m.id.and_then(|id| self.ctl.migration(id))
                        .map(|x| format!("{:?}", x.status().phase));
                return Err(self.violation(format!(
                    "migration {i} (VM {} from host {} to {}) never ended (phase {})",
                    m.vm,
                    m.from,
                    m.to,
                    phase.unwrap_or_else(|| "unknown".into())
                )));
            };
            let model_host = self
                .ctl
                .model()
                .vm(&self.vms[m.vm as usize].name)
                .map(|v| v.host.clone());
            let expected = match outcome {
                MigrationOutcome::Completed => m.to,
                _ => m.from,
            };
            let later = self.migs[i + 1..]
                .iter()
                .any(|x| x.vm == m.vm && x.refused.is_none());
            if !later && model_host.as_ref() != Some(&self.hosts[expected as usize].name) {
                return Err(self.violation(format!(
                    "migration {i} of VM {} ended {outcome:?} but the controller maps it to {model_host:?}",
                    m.vm
                )));
            }
        }
        // Invariant (sr-buffer, lossless fabric, no crash): every probe reached its VM.
        if self.lossless && self.sc.strategy == SimStrategy::SrBuffer {
            for (i, p) in self.probes.iter().enumerate() {
                self.stats.checks += 1;
                let lost = p.lost_at_vm();
                if lost > 0 {
                    let first = p.at_vm.iter().position(|n| *n == 0).unwrap_or(0);
                    return Err(self.violation(format!(
                        "{lost} probes of flow {i} (VM {}) never reached it; the first is probe {first}, sent at {:.3} ms",
                        p.target,
                        p.sent.get(first).copied().unwrap_or(0) as f64 / 1e6
                    )));
                }
            }
        }
        for h in &mut self.hosts {
            if let Some(agent) = h.agent.as_mut() {
                for (r, n) in agent.dataplane().counters().drop_counts() {
                    if n > 0 {
                        *self.drops.entry(format!("{r:?}")).or_default() += n;
                    }
                }
            }
        }
        let (hosts, vms) = (self.hosts.len(), self.vms.len());
        if self.leak {
            std::mem::forget(std::mem::take(&mut self.hosts));
            let empty = Controller::new(ControllerConfig::default());
            std::mem::forget(std::mem::replace(&mut self.ctl, empty));
        }
        let mut drops: Vec<(String, u64)> =
            self.drops.into_iter().filter(|(_, n)| *n > 0).collect();
        drops.sort();
        Ok(Outcome {
            seed: self.sc.seed,
            strategy: self.sc.strategy,
            migrations: self.migs,
            probes: self.probes,
            http: self.http,
            tcp: self.tcp,
            stats: self.stats,
            drops,
            sim_ns: self.now,
            hosts,
            vms,
        })
    }
}

/// Runs `sc` with no migration: the workloads aimed at VM `target` for `duration_ms`
/// (the paper's "no migration" row).
pub fn baseline(sc: &Scenario, target: usize, duration_ms: u64) -> Result<Outcome, SimError> {
    let mut sc = sc.clone();
    sc.migrations.clear();
    sc.random_migrations = 0;
    let mut w = World::new(&sc)?;
    if target >= w.vms.len() {
        return Err(SimError::Setup(format!("no VM {target}")));
    }
    let vm = target as u32;
    let from = w.vms[target].host;
    let origin = w.now;
    w.now = origin + (sc.workloads.lead_ms * MS as f64) as Nanos;
    let (p, h) = w.start_workloads(vm, from, None);
    let stop = w.now + duration_ms * MS;
    if let Some(p) = p {
        w.probes[p].stop = Some(stop);
    }
    if let Some(h) = h {
        w.http[h].stop = Some(stop);
    }
    if let Some(t) = w.vms[target].tcp {
        w.tcp[t].stop = Some(stop);
    }
    w.now = origin;
    w.run()
}

/// Builds and runs `sc`.
pub fn run(sc: &Scenario) -> Result<Outcome, SimError> {
    let mut w = World::new(sc)?;
    w.start_scheduled_workloads();
    w.run()
}
