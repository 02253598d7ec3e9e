//! The lab's topology (see [`plan`](super::plan) for the picture), built and owned by a
//! [`Testbed`], and the emulated migration of the netns VM.
//!
//! # Migration of a netns VM
//!
//! ```text
//!  lab                        controller                 srmigd S          srmigd D
//!   │ POST /v1/migrations ───►│ prepare: path S::End.S -> D::End.SBUF on every host (SR),
//!   │                         │          D may attach the VM (traditional) ── acks ──┘
//!   │ poll until expect-hypervisor-done
//!   │ pre-copy (sleep)        │
//!   │ stop: PUT /v1/vms/vm1/state paused ──────────────► vm1 paused ──► report
//!   │ 2 ms: the VM's last replies leave through S
//!   │ cut: ip link set vm1-port netns D (S: port gone), att down
//!   │ downtime (sleep)        │
//!   │ vm1-port up at D (no carrier yet)
//!   │ attach: att up ────────────────────────────────────────────────► port up: vm1 running
//!   │                         │◄───────────────────────────────────────────────── report
//!   │                         │ switchover: mapping "on D", commit acks, cleanup acks
//!   │ POST .../hypervisor {"event":"completed"}
//!   │ poll until completed
//! ```
//!
//! The VM's own interface, addresses, routes and neighbor entries never change: only the
//! host-side end of its attachment moves (`move_link`), as a VM's vhost-user/TAP attachment
//! leaves S and appears at D.
//!
//! The stop is announced to the source srmigd (as a hypervisor tells its virtual switch),
//! and the link is cut [`DRAIN`] after srmigd answered. A stopped VM emits nothing and the
//! packets in its rings migrate with it; a netns VM keeps running, so without this its
//! replies to packets that arrived just before the cut would be lost by the emulation, not
//! by the network.
//!
//! `pause_ms` (the report's `blackout_ms`) is measured from the stop to the attach at the
//! destination (the moment of the system call that brings the VM's side up); `total_ms`
//! from the migration request to the controller's `completed`. A netns VM cannot stop
//! receiving, so its stop is the moment the source srmigd's dataplane applied it (the
//! `state_since_us` its API answers with): from then on nothing is delivered to the VM at
//! the source. Timed from the request, the frames srmigd delivered while the request was
//! on its way (up to 1.5 ms on a loaded machine) would count as reaching a VM already
//! stopped; timed from the answer, the time the answer took (as long) would count as
//! network downtime. Either would misstate the network's downtime against the blackout.

/// Between the source srmigd's answer to the stop and the cut of the VM's link.
pub const DRAIN: Duration = Duration::from_millis(2);

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use std::sync::Arc;

use srmig_api::{
    MigrateRequest, MigrationId, MigrationPhase, MigrationStatus, Strategy, VmId, VmState,
};
use srmig_controller::{
    HostRegistration, HypervisorDriver, HypervisorEventKind, HypervisorPost, QemuLauncher, Qmp,
    QmpSettings,
};

use super::control::ControlPlane;
use super::error::{MigrationFailure, OrchestrateError};
use super::fault::{Component, Fault, FaultKind, FaultPhase, FaultPlan, FaultRecord};
use super::hook::LauncherService;
use super::libvirt::LibvirtVm;
use super::plan::{
    mgmt_addrs, HostPlan, HostRole, Plan, CONTROL_NS, GATEWAY_ADDR, GATEWAY_ADDR_V4, GATEWAY_MAC,
    HV_ATT, HV_NIC, MGMT_IFNAME, MGMT_PORT, ROUTER_NS, UPLINK_IFNAME, VM_IFNAME,
};
use super::preflight;
use super::qemu::{self, GuestImage, LabLauncher, QemuOptions};
use super::srmigd::Srmigd;
use crate::clock::WallAnchor;
use crate::netns::Netns;
use crate::registry::REGISTRY_DIR;
use crate::report::VmKind;
use crate::topology::{Lab, LinkEnd, MacAddr, Route};

/// A VM's End.SBUF counters at a host, and the host's hold-time histogram totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BufferCounters {
    held: u64,
    released: u64,
    fenced: u64,
    dropped: u64,
    holds: u64,
    hold_ns: u64,
}

impl BufferCounters {
    /// The mean hold time of the releases since `before` (one per migration).
    fn hold_ms_since(&self, before: &BufferCounters) -> Option<f64> {
        let n = self.holds.checked_sub(before.holds).filter(|n| *n > 0)?;
        Some(self.hold_ns.saturating_sub(before.hold_ns) as f64 / n as f64 / 1e6)
    }
}

/// How long links get to come up, hosts to acknowledge, the VM to become reachable.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one controller phase may take before the lab gives up.
const PHASE_TIMEOUT: Duration = Duration::from_secs(30);
/// Controller polling interval while waiting for a phase.
const POLL: Duration = Duration::from_millis(2);
/// The same for each of several migrations in flight.
const MANY_POLL: Duration = Duration::from_millis(20);

/// How a testbed is built.
#[derive(Debug, Clone)]
pub struct TestbedOptions {
    /// Addressing plan.
    pub plan: Plan,
    /// Delay of every controller config push (emulates a slow mapping update).
    pub propagation_delay: Duration,
    /// Where srmigd is looked for (default: next to the running executable).
    pub bin_dir: Option<PathBuf>,
    /// Directory for configurations, sockets and logs (default: a fresh one under the
    /// system temp dir, removed at teardown unless `keep_dir`).
    pub work_dir: Option<PathBuf>,
    /// Keep the work directory (logs) after teardown.
    pub keep_dir: bool,
    /// What the migrating VM is: a network namespace (emulated migration) or a QEMU guest
    /// live-migrated by the controller's QMP driver.
    pub vm_kind: VmKind,
    /// QEMU settings (`vm_kind` qemu only).
    pub qemu: QemuOptions,
    /// Run the controller as its own `srmig controller` process (found like srmigd), which
    /// the lab can kill and start again, instead of inside the lab process.
    pub controller_process: bool,
    /// Controller replicas (`--controllers N`); above 1 needs `store_etcd`.
    pub controllers: usize,
    /// The controller's state in an etcd the lab starts (`--store etcd`); implies
    /// `controller_process`.
    pub store_etcd: bool,
    /// Where progress lines go (building, booting, migrations and their phases).
    pub progress: super::Progress,
}

impl Default for TestbedOptions {
    fn default() -> Self {
        TestbedOptions {
            plan: Plan::default(),
            propagation_delay: Duration::ZERO,
            bin_dir: None,
            work_dir: None,
            keep_dir: false,
            vm_kind: VmKind::Netns,
            qemu: QemuOptions::default(),
            controller_process: false,
            controllers: 1,
            store_etcd: false,
            progress: super::Progress::default(),
        }
    }
}

/// Emulated hypervisor timing of one migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrationTiming {
    /// Pre-copy: the VM keeps running at S.
    pub precopy: Duration,
    /// Stop-and-copy: the VM is attached nowhere.
    pub downtime: Duration,
}

impl Default for MigrationTiming {
    /// 500 ms pre-copy, the paper's 175 ms downtime.
    fn default() -> Self {
        MigrationTiming {
            precopy: Duration::from_millis(500),
            downtime: Duration::from_millis(175),
        }
    }
}

/// What happened during one migration; times are milliseconds since the caller's origin.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MigrationRecord {
    /// Controller id (`m3`).
    pub id: String,
    /// The VM moved (`vm1`, ...).
    pub vm: String,
    /// Source host.
    pub from: String,
    /// Destination host.
    pub to: String,
    /// Strategy.
    pub strategy: Strategy,
    /// `completed`, or `rolled_back` (only under injected faults: the VM stayed where it
    /// was; the times and counters of the move are then 0).
    pub outcome: &'static str,
    /// Cut to attach.
    pub pause_ms: f64,
    /// Request to `completed`.
    pub total_ms: f64,
    /// Request to the hypervisor phase (path or endpoint acknowledged everywhere).
    pub prepare_ms: f64,
    /// Attach to `completed` (switchover, commit and cleanup acknowledgements).
    pub finish_ms: f64,
    /// When the migration was requested.
    pub requested_at_ms: f64,
    /// When the VM was stopped (announced to the source, then its link cut).
    pub cut_at_ms: f64,
    /// When the VM's link was up at the destination.
    pub attached_at_ms: f64,
    /// When the controller reported `completed`.
    pub completed_at_ms: f64,
    /// Packets the destination held for the VM during this migration (End.SBUF).
    pub held: u64,
    /// Packets the destination released to the VM.
    pub released: u64,
    /// Direct packets the destination's commit fence held for the VM until their
    /// ingress's marker (or its timeout).
    pub fenced: u64,
    /// Packets the destination dropped for the VM (End.SBUF drop mode, full or expired).
    pub dropped: u64,
    /// How long the oldest packet the destination held had waited when the VM resumed, as
    /// srmigd there measured it (its `holds`); `None` if it released nothing.
    pub hold_ms: Option<f64>,
    /// The controller's phases, milliseconds since the request.
    pub phases: Vec<(MigrationPhase, u64)>,
    /// What the hosts' srmigd reported to the controller of the VM's traffic (the source's
    /// last delivery before the pause, the destination's release): the controller's own
    /// network downtime and release latency ([`srmig_api::MigrationFigures`]).
    pub delivery: srmig_api::DeliveryRecord,
}

/// A fault fired in a migration and not yet recorded.
#[derive(Debug)]
struct PendingFault {
    fault: Fault,
    /// The migration's number on the testbed, from 1.
    migration: u32,
    id: Option<MigrationId>,
    killed_at: Instant,
    restart_at: Instant,
    started_at: Option<Instant>,
    recovered_at: Option<Instant>,
    /// srmigd: its boot epoch before the kill.
    boot_before: Option<u64>,
    controller_phase: Option<String>,
    /// `kill-leader`: the replica killed.
    killed_replica: Option<usize>,
}

/// The namespaces of the topology.
#[derive(Debug, Clone)]
struct Spaces {
    /// One per host, [`HostRole::index`] order.
    hosts: Vec<Netns>,
    client: Netns,
    /// The controller's namespace (management network).
    ctl: Netns,
}

/// The migrating VMs.
#[derive(Debug)]
enum Vm {
    /// Namespaces (one per migrating VM, plan order), each with an attachment that moves.
    Netns(Vec<NetnsVm>),
    /// A QEMU guest, migrated by the controller's QMP driver.
    Qemu(Box<QemuVm>),
    /// A QEMU guest run by two libvirtds, migrated with `virsh migrate --live`.
    Libvirt(Box<LibvirtVm>),
    /// Only while the testbed is built: a libvirt VM not started yet.
    Pending(Box<PendingLibvirt>),
}

/// A netns VM: its namespace, and its attachment (`port`, at the host it runs on, and the
/// port's peer `att` in its hypervisor namespace), which moves.
#[derive(Debug, Clone)]
struct NetnsVm {
    ns: Netns,
    port: LinkEnd,
    att: LinkEnd,
}

/// One migration of a [`Testbed::migrate_many`] round: migrating VM number `vm` (plan
/// order, from 0) moves from where it is to `to`, once the round's migration number
/// `after` (if any) has completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move {
    /// The VM (index in [`Plan::vms`]).
    pub vm: usize,
    /// Its destination.
    pub to: HostRole,
    /// The migration of the same round this one waits for.
    pub after: Option<usize>,
}

/// Where a netns migration of a round is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Not requested yet (waiting for the migration it is `after`).
    Waiting,
    /// Requested; waiting for the path (or endpoint) acknowledged everywhere.
    Arming,
    /// The VM runs at the source until `t_hv + precopy`.
    Precopy,
    /// Stopped at `t_stop`, which the source srmigd confirmed at `t_paused`; its last
    /// replies leave until `t_paused + DRAIN`.
    Draining,
    /// Attached nowhere until `t_stop + downtime`.
    Down,
    /// Attached at the destination at `t_attach`; the hypervisor's `completed` is next.
    Attached,
    /// Waiting for the controller's end.
    Finishing,
    /// Ended (record taken).
    Done,
}

/// One netns migration of a round in progress.
#[derive(Debug, Clone)]
struct Flight {
    mv: Move,
    stage: Stage,
    from: HostRole,
    id: Option<MigrationId>,
    c0: Option<BufferCounters>,
    t_req: Instant,
    t_hv: Instant,
    t_stop: Instant,
    t_paused: Instant,
    t_attach: Instant,
    /// The end of the last step (status polls: arming, finishing).
    polled: Option<Instant>,
}

impl Flight {
    fn new(mv: Move) -> Flight {
        let now = Instant::now();
        Flight {
            mv,
            stage: Stage::Waiting,
            from: HostRole::Source,
            id: None,
            c0: None,
            t_req: now,
            t_hv: now,
            t_stop: now,
            t_paused: now,
            t_attach: now,
            polled: None,
        }
    }

    /// When this migration's next step is due: its timed steps at their moment, the
    /// controller polled every `poll`, the other steps at once (`None`: ended).
    fn next_due(&self, timing: MigrationTiming, poll: Duration) -> Option<Instant> {
        match self.stage {
            Stage::Precopy => Some(self.t_hv + timing.precopy),
            Stage::Draining => Some(self.t_paused + DRAIN),
            Stage::Down => Some(self.t_stop + timing.downtime),
            Stage::Arming | Stage::Finishing => Some(self.polled.map_or(self.t_req, |p| p + poll)),
            Stage::Waiting | Stage::Attached => Some(self.t_req),
            Stage::Done => None,
        }
    }

    /// Whether the next step is due at `now`.
    fn is_due(&self, now: Instant, timing: MigrationTiming, poll: Duration) -> bool {
        match self.stage {
            Stage::Waiting | Stage::Attached => true,
            _ => self.next_due(timing, poll).is_some_and(|t| t <= now),
        }
    }
}

/// What the I/O of a migration step returned ([`Testbed::flight_io`]).
#[derive(Debug)]
enum FlightIo {
    /// The destination's counters before, and the controller's id.
    Requested { c0: BufferCounters, id: MigrationId },
    /// The controller's status of the migration.
    Status(Box<MigrationStatus>),
    /// The source srmigd's dataplane applied the VM's pause at `applied` (its
    /// `state_since_us`; the moment it answered if it does not say): nothing is delivered to
    /// the VM at the source after it. Its answer came at `answered`.
    Paused { applied: Instant, answered: Instant },
    /// The attachment is at the destination (its new end).
    Moved(LinkEnd),
    /// The VM side came up at this moment.
    Attached(Instant),
    /// The hypervisor's `completed` was posted.
    Posted,
}

/// From a network namespace's `/proc/net/netstat`, the TCP receive counters the QEMU guest's
/// responder reports: `tcp_ofo_queued` (`TCPOFOQueue`: segments that arrived after a gap),
/// `tcp_ofo_drops`, `tcp_backlog_drops`, `tcp_rcvq_drops` (segments dropped) and
/// `tcp_dsack_sent` (`TCPDSACKOldSent` + `TCPDSACKOfoSent`: duplicates answered with a
/// D-SACK); -1 for a counter the kernel does not have.
pub fn vm_stack_counters(netstat: &str) -> std::collections::BTreeMap<String, i64> {
    let mut tcpext = std::collections::BTreeMap::new();
    let mut lines = netstat.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let (Some(("TcpExt", names)), Some(("TcpExt", values))) =
            (names.split_once(": "), values.split_once(": "))
        else {
            continue;
        };
        for (k, v) in names.split_whitespace().zip(values.split_whitespace()) {
            if let Ok(v) = v.parse::<i64>() {
                tcpext.insert(k, v);
            }
        }
    }
    let get = |k: &str| tcpext.get(k).copied();
    let dsack = get("TCPDSACKOldSent")
        .zip(get("TCPDSACKOfoSent"))
        .map(|(a, b)| a + b);
    [
        ("tcp_ofo_queued", get("TCPOFOQueue")),
        ("tcp_ofo_drops", get("TCPOFODrop")),
        ("tcp_backlog_drops", get("TCPBacklogDrop")),
        ("tcp_rcvq_drops", get("TCPRcvQDrop")),
        ("tcp_dsack_sent", dsack),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.unwrap_or(-1)))
    .collect()
}

/// When srmigd applied a state it reported as applied at `us` (wall clock, microseconds since
/// the Unix epoch), which is not after its answer came (`answered`, also without a moment).
fn applied_at(us: Option<u64>, answered: Instant) -> Instant {
    us.and_then(|us| WallAnchor::now().instant_of_unix_us(us))
        .map_or(answered, |at| at.min(answered))
}

/// The name of migrating VM number `i` (plan order).
fn vms_name(plan: &Plan, i: usize) -> &'static str {
    plan.vms().nth(i).map_or(plan.vm.name, |v| v.name)
}

/// The QEMU side of a testbed.
#[derive(Debug)]
struct QemuVm {
    launcher: Arc<LabLauncher>,
    /// The in-process controller's driver (`None` when the controller is a process of its
    /// own: its driver then starts QEMUs through the hook and [`LauncherService`]).
    driver: Option<Qmp>,
    /// The driver's settings (either way).
    settings: QmpSettings,
    /// The launcher relay for a controller process.
    #[allow(dead_code)] // held for its Drop (stops the relay, removes the socket)
    service: Option<LauncherService>,
    /// The `GUEST-READY` line of the first boot.
    ready: String,
    /// The guest's boot id after the first boot.
    boot_id: String,
}

/// The netns lab: router, three hosts each running srmigd, the client VM on C and the
/// migrating VM, the in-process controller with everything registered. Torn down when
/// dropped (and on SIGINT/SIGTERM, through the [`Lab`] guard).
#[derive(Debug)]
pub struct Testbed {
    plan: Plan,
    spaces: Spaces,
    daemons: Vec<Srmigd>,
    vm: Vm,
    /// Where each migrating VM runs now (plan order).
    vm_at: Vec<HostRole>,
    dir: PathBuf,
    keep_dir: bool,
    /// `save_statuses` ran.
    statuses_saved: bool,
    propagation_delay: Duration,
    /// The run's certificates (management network).
    tls: LabPki,
    /// Faults to inject in every migration (`--fault`).
    fault_plan: FaultPlan,
    /// Faults fired and not yet recovered.
    pending: Vec<PendingFault>,
    /// Faults that ended, for the report.
    fault_records: Vec<FaultRecord>,
    /// Migrations started on this testbed.
    migrations_started: u32,
    /// Where progress lines go.
    progress: super::Progress,
    // Declared last: dropped after the fields above; `Drop` stops the controller first.
    control: ControlPlane,
    lab: Lab,
}

/// The certificates of a lab run, in `<run dir>/pki`: a CA, the controller's (valid for its
/// end of every management link) and each host's (valid for its `mgmt0` address).
#[derive(Debug, Clone)]
pub(crate) struct LabPki {
    /// The directory (`srmig pki` layout).
    pub dir: PathBuf,
    /// The controller's files.
    pub controller: srmig_tls::TlsFiles,
}

impl LabPki {
    fn create(dir: &Path, plan: &Plan) -> Result<LabPki, OrchestrateError> {
        use srmig_tls::{pki, PeerIdentity, Role, San};
        let err = |e: &dyn std::fmt::Display| OrchestrateError::Options(format!("lab PKI: {e}"));
        pki::init_ca(dir, &pki::CaOptions::default()).map_err(|e| err(&e))?;
        let mut sans = Vec::new();
        for (i, host) in plan.hosts.iter().enumerate() {
            let (ctl_addr, host_addr) = mgmt_addrs(i + 1);
            sans.push(San::Ip(ctl_addr.into()));
            let id = PeerIdentity::new(Role::Host, host.name).map_err(|e| err(&e))?;
            let mut o = pki::IssueOptions::new(id);
            o.sans = vec![San::Ip(host_addr.into())];
            pki::issue(dir, dir, &o).map_err(|e| err(&e))?;
        }
        let id = PeerIdentity::new(Role::Controller, "controller").map_err(|e| err(&e))?;
        let mut o = pki::IssueOptions::new(id);
        o.sans = sans;
        let controller = pki::issue(dir, dir, &o).map_err(|e| err(&e))?;
        Ok(LabPki {
            dir: dir.to_owned(),
            controller,
        })
    }
}

impl Testbed {
    /// Checks the environment and builds the whole lab; on error everything built so far is
    /// torn down.
    pub fn build(options: &TestbedOptions) -> Result<Testbed, OrchestrateError> {
        preflight::check_environment()?;
        let dirs = preflight::binary_dirs(options.bin_dir.as_deref());
        let srmigd = preflight::find_binary("srmigd", &dirs)?;
        if options.controllers > 1 && !options.store_etcd {
            return Err(OrchestrateError::Options(
                "controller replicas need the etcd store".into(),
            ));
        }
        if options.vm_kind != VmKind::Netns
            && (options.plan.vms().count() > 1 || options.plan.hosts.len() > 3)
        {
            return Err(OrchestrateError::Options(
                "the QEMU and libvirt labs migrate one VM between S and D (--vms and --hosts \
                 are for netns VMs)"
                    .into(),
            ));
        }
        // The libvirt hook (`srmig libvirt-hook`) is the srmig binary.
        let srmig_hook = match options.vm_kind {
            VmKind::Libvirt => {
                preflight::check_libvirt()?;
                Some(preflight::find_binary("srmig", &dirs)?)
            }
            _ => None,
        };
        let srmig = match options.controller_process || options.store_etcd {
            true => Some(preflight::find_binary("srmig", &dirs)?),
            false => None,
        };
        // The guest is built (or found in its cache) before anything exists to tear down.
        let image =
            match options.vm_kind {
                VmKind::Sim => return Err(OrchestrateError::Options(
                    "the simulator's VMs exist only in virtual time: run `srmig sim`, not a lab"
                        .into(),
                )),
                VmKind::Netns => None,
                VmKind::Qemu | VmKind::Libvirt => {
                    preflight::check_qemu()?;
                    Some(match &options.qemu.guest_dir {
                        Some(dir) => GuestImage::in_dir(dir)?,
                        None => {
                            options
                                .progress
                                .step("guest image: building or reusing the cached one");
                            GuestImage::build_or_cached_with(&options.progress)?
                        }
                    })
                }
            };
        let lab = Lab::new()?;
        let dir = match &options.work_dir {
            Some(d) => d.clone(),
            None => {
                remove_stale_work_dirs(&std::env::temp_dir(), Path::new(REGISTRY_DIR));
                std::env::temp_dir().join(format!("{WORK_DIR_PREFIX}{}", lab.run_id()))
            }
        };
        std::fs::create_dir_all(&dir).map_err(|source| OrchestrateError::File {
            action: "creating the lab directory",
            path: dir.clone(),
            source,
        })?;
        let plan = options.plan.clone();
        let keep_dir = options.keep_dir || options.work_dir.is_some();
        options.progress.step(&format!(
            "building the lab: router, hosts {}, VMs, controller",
            plan.hosts
                .iter()
                .map(|h| h.name)
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let result = build_topology(&lab, &plan, image.is_some()).and_then(|(spaces, vm)| {
            let (vm, driver) = match (vm, image) {
                (TopologyVm::Netns(vms), _) => (Vm::Netns(vms), None),
                (TopologyVm::Qemu { hv }, Some(image)) if options.vm_kind == VmKind::Libvirt => {
                    let Some(srmig) = &srmig_hook else {
                        return Err(OrchestrateError::Options("no srmig binary".into()));
                    };
                    // Started below, once the controller's socket exists (the hook's target).
                    let pending = PendingLibvirt {
                        hv,
                        image,
                        srmig: srmig.clone(),
                    };
                    (Vm::Pending(Box::new(pending)), None)
                }
                (TopologyVm::Qemu { hv }, Some(image)) => {
                    let launcher = Arc::new(LabLauncher::new(
                        lab.handle(),
                        hv,
                        &dir,
                        image,
                        options.qemu.memory_mib,
                        plan.vm.clone(),
                        [HostRole::Source, HostRole::Destination]
                            .map(|r| plan.host(r).name.to_owned())
                            .to_vec(),
                        plan.vm_mtu(),
                    ));
                    let (driver, service) = match &srmig {
                        None => (
                            Some(Qmp::new(
                                Arc::clone(&launcher) as Arc<dyn QemuLauncher>,
                                options.qemu.driver.clone(),
                            )),
                            None,
                        ),
                        Some(_) => (
                            None,
                            Some(LauncherService::start(
                                Arc::clone(&launcher),
                                &dir.join("launcher.sock"),
                            )?),
                        ),
                    };
                    let qemu = QemuVm {
                        launcher,
                        driver: driver.clone(),
                        settings: options.qemu.driver.clone(),
                        service,
                        ready: String::new(),
                        boot_id: String::new(),
                    };
                    (
                        Vm::Qemu(Box::new(qemu)),
                        driver.map(|d| Arc::new(d) as Arc<dyn HypervisorDriver>),
                    )
                }
                (TopologyVm::Qemu { .. }, None) => {
                    return Err(OrchestrateError::Options("no guest image".into()))
                }
            };
            let tls = LabPki::create(&dir.join("pki"), &plan)?;
            // The controller's runtime is built in the management namespace: its worker
            // threads, and so its TCP sockets, live there.
            let control = match &srmig {
                Some(bin) => {
                    let extra_args = match &vm {
                        Vm::Qemu(q) => qmp_args(&plan, &dir, bin, q)?,
                        Vm::Netns(_) | Vm::Libvirt(_) | Vm::Pending(_) => Vec::new(),
                    };
                    let spec = super::control::ProcessSpec {
                        bin: bin.clone(),
                        extra_args,
                        replicas: options.controllers,
                        etcd: options.store_etcd,
                    };
                    ControlPlane::start_process(
                        lab.handle(),
                        &spaces.ctl,
                        &dir,
                        options.propagation_delay,
                        &tls,
                        &spec,
                    )?
                }
                None => spaces.ctl.run(|| {
                    ControlPlane::start_with(&dir, options.propagation_delay, driver, Some(&tls))
                })??,
            };
            let vm = match vm {
                Vm::Pending(p) => {
                    let hosts =
                        [HostRole::Source, HostRole::Destination].map(|r| plan.host(r).name);
                    Vm::Libvirt(Box::new(LibvirtVm::start(
                        lab.handle(),
                        p.hv,
                        &dir,
                        p.image,
                        options.qemu.memory_mib,
                        plan.vm.clone(),
                        plan.vm_mtu(),
                        &hosts,
                        &p.srmig,
                        control.socket(),
                    )?))
                }
                vm => vm,
            };
            Ok((spaces, vm, control, tls))
        });
        let (spaces, vm, control, tls) = match result {
            Ok(parts) => parts,
            Err(e) => {
                remove_dir(&dir, keep_dir);
                return Err(e);
            }
        };
        let vm_at = (0..plan.vms().count()).map(|i| plan.home(i)).collect();
        let mut testbed = Testbed {
            plan,
            spaces,
            daemons: Vec::new(),
            vm,
            vm_at,
            dir,
            keep_dir,
            statuses_saved: false,
            propagation_delay: options.propagation_delay,
            control,
            tls,
            fault_plan: FaultPlan::default(),
            pending: Vec::new(),
            fault_records: Vec::new(),
            migrations_started: 0,
            progress: options.progress.clone(),
            lab,
        };
        let progress = options.progress.clone();
        let ready = testbed
            .start_daemons(&srmigd)
            .and_then(|()| {
                if testbed.vm_kind() != VmKind::Netns {
                    progress.step("booting the guest (TCG: several seconds)");
                }
                let t = Instant::now();
                testbed.start_guest(options.qemu.boot_timeout).map(|()| t)
            })
            .map(|t| {
                if testbed.vm_kind() != VmKind::Netns {
                    progress.step(&format!(
                        "guest ready after {:.1} s",
                        t.elapsed().as_secs_f64()
                    ));
                }
            })
            .and_then(|()| testbed.register())
            .and_then(|()| testbed.check_connectivity())
            .and_then(|()| testbed.read_boot_id());
        if ready.is_ok() {
            progress.step("lab ready: hosts registered, every host reaches the VMs");
        }
        if let Err(e) = ready {
            // Keep the srmigd and QEMU logs the error points to (the next run with a default
            // work directory removes them), and say where they are.
            testbed.keep_work_dir();
            return Err(OrchestrateError::LogsKept {
                dir: testbed.dir().to_owned(),
                inner: Box::new(e),
            });
        }
        Ok(testbed)
    }

    /// QEMU: starts the VM's first QEMU on S, registers it with the driver and waits for
    /// the guest to be ready. Netns: nothing to do.
    fn start_guest(&mut self, boot_timeout: Duration) -> Result<(), OrchestrateError> {
        let source = self.plan.host(HostRole::Source).name;
        if let Vm::Libvirt(libvirt) = &mut self.vm {
            libvirt.start_guest(source, Strategy::SrBuffer, boot_timeout)?;
            tracing::info!(ready = %libvirt.ready, "guest ready (libvirt domain)");
            return Ok(());
        }
        let Vm::Qemu(qemu) = &mut self.vm else {
            return Ok(());
        };
        let launched = qemu.launcher.launch(source, false)?;
        let vm = VmId::new(self.plan.vm.name)
            .map_err(|e| OrchestrateError::Options(format!("VM name: {e}")))?;
        // A controller process finds the first QEMU at S's QMP endpoint.
        if let Some(driver) = &qemu.driver {
            driver.register(vm, launched.instance.clone());
        }
        qemu.ready = qemu.launcher.wait_ready(&launched, boot_timeout)?;
        tracing::info!(ready = %qemu.ready, "guest ready");
        Ok(())
    }

    fn read_boot_id(&mut self) -> Result<(), OrchestrateError> {
        let address = self.plan.vm.address;
        match &mut self.vm {
            Vm::Qemu(qemu) => {
                qemu.boot_id = qemu::guest_info(&self.spaces.client, address)?.boot_id
            }
            Vm::Libvirt(l) => l.boot_id = qemu::guest_info(&self.spaces.client, address)?.boot_id,
            Vm::Netns(_) | Vm::Pending(_) => {}
        }
        Ok(())
    }

    /// The kind of the migrating VM.
    pub fn vm_kind(&self) -> VmKind {
        match self.vm {
            Vm::Netns(_) | Vm::Pending(_) => VmKind::Netns,
            Vm::Qemu(_) => VmKind::Qemu,
            Vm::Libvirt(_) => VmKind::Libvirt,
        }
    }

    /// QEMU: the guest's boot id now (asked over TCP port 9 from the client VM), to compare
    /// with [`first_boot_id`](Self::first_boot_id). `None` for a netns VM.
    pub fn guest_boot_id(&self) -> Result<Option<String>, OrchestrateError> {
        Ok(self.guest_info()?.map(|i| i.boot_id))
    }

    /// QEMU: the guest's boot id and counters now (TCP port 9). `None` for a netns VM.
    pub fn guest_info(&self) -> Result<Option<qemu::GuestInfo>, OrchestrateError> {
        match &self.vm {
            Vm::Netns(_) | Vm::Pending(_) => Ok(None),
            Vm::Qemu(_) => qemu::guest_info(&self.spaces.client, self.plan.vm.address).map(Some),
            // A guest that does not answer: where libvirt has it, and what its logs say.
            Vm::Libvirt(l) => qemu::guest_info(&self.spaces.client, self.plan.vm.address)
                .map(Some)
                .map_err(|e| l.with_domain_state(e)),
        }
    }

    /// netns: the first migrating VM's TCP receive counters, read in its namespace
    /// ([`vm_stack_counters`], the keys of the QEMU guest's responder). `None` for other
    /// VM kinds (their guest reports its own: [`Testbed::guest_info`]).
    pub fn netns_vm_counters(
        &self,
    ) -> Result<Option<std::collections::BTreeMap<String, i64>>, OrchestrateError> {
        let Some(ns) = self.vm_ns_of(0) else {
            return Ok(None);
        };
        // `/proc/self/net` is the main thread's namespace; this thread's is `thread-self`.
        let text = ns
            .run(|| std::fs::read_to_string("/proc/thread-self/net/netstat"))?
            .map_err(|e| {
                OrchestrateError::Options(format!("reading the VM's /proc/net/netstat: {e}"))
            })?;
        Ok(Some(vm_stack_counters(&text)))
    }

    /// The kernel's drop and error counters of every interface in the run's namespaces
    /// (`ip -s link`: `rx.dropped`, `rx.errors`, `tx.dropped`, `tx.errors`), keyed
    /// `IFNAME@NS.rx_dropped` (NS without the run's prefix). A frame the kernel lost between
    /// the daemons (a veth refusing it, a backlog full) shows here and nowhere in srmigd.
    pub fn kernel_link_counters(
        &self,
    ) -> Result<std::collections::BTreeMap<String, u64>, OrchestrateError> {
        let prefix = self.lab.run_id().prefix();
        let mut out = std::collections::BTreeMap::new();
        for ns in crate::topology::list_namespaces_with_prefix(&prefix)? {
            let text = crate::cmd::ip(&["-n", &ns, "-s", "-j", "link", "show"])?;
            let short = ns.strip_prefix(&prefix).unwrap_or(&ns);
            out.extend(link_drop_counters(&text, short));
        }
        Ok(out)
    }

    /// QEMU: the guest's boot id after its first boot. `None` for a netns VM.
    pub fn first_boot_id(&self) -> Option<&str> {
        match &self.vm {
            Vm::Netns(_) | Vm::Pending(_) => None,
            Vm::Qemu(q) => Some(&q.boot_id),
            Vm::Libvirt(l) => Some(&l.boot_id),
        }
    }

    /// QEMU: the QEMU process running the VM now (pid), as the controller's driver knows it.
    pub fn qemu_pid(&self) -> Option<u32> {
        let Vm::Qemu(q) = &self.vm else { return None };
        let vm = VmId::new(self.plan.vm.name).ok()?;
        match &q.driver {
            Some(driver) => driver
                .instance(&vm)
                .and_then(|i| u32::try_from(i.handle).ok()),
            None => q.launcher.pid_on(self.plan.host(self.vm_at()).name),
        }
    }

    /// libvirt: the libvirtds and the domain (`None` for other VM kinds).
    pub fn libvirt(&self) -> Option<&LibvirtVm> {
        match &self.vm {
            Vm::Libvirt(l) => Some(l),
            _ => None,
        }
    }

    /// Where this testbed's progress lines go (the run's workload and migration lines).
    pub fn progress(&self) -> &super::Progress {
        &self.progress
    }

    /// The in-process controller (e.g. to cancel a migration).
    pub fn control(&self) -> &ControlPlane {
        &self.control
    }

    /// The addressing plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The directory holding node configurations, sockets and srmigd logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Keeps the work directory (configurations, srmigd logs) after teardown, e.g. after a
    /// failure; the next run with a default work directory removes it.
    pub fn keep_work_dir(&mut self) {
        self.keep_dir = true;
    }

    /// The controller's config push delay.
    pub fn propagation_delay(&self) -> Duration {
        self.propagation_delay
    }

    /// The [`Lab`] guard (namespace names, run id).
    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    /// The client VM's namespace.
    pub fn client_ns(&self) -> &Netns {
        &self.spaces.client
    }

    /// The (first) migrating VM's namespace (a netns VM; `None` for a QEMU guest).
    pub fn vm_ns(&self) -> Option<&Netns> {
        self.vm_ns_of(0)
    }

    /// The namespace of migrating VM number `i` (plan order; netns VMs only).
    pub fn vm_ns_of(&self, i: usize) -> Option<&Netns> {
        match &self.vm {
            Vm::Netns(vms) => vms.get(i).map(|v| &v.ns),
            Vm::Qemu(_) | Vm::Libvirt(_) | Vm::Pending(_) => None,
        }
    }

    /// Where the (first) migrating VM runs now.
    pub fn vm_at(&self) -> HostRole {
        self.vm_at_of(0)
    }

    /// Where migrating VM number `i` (plan order) runs now.
    pub fn vm_at_of(&self, i: usize) -> HostRole {
        self.vm_at.get(i).copied().unwrap_or(HostRole::Source)
    }

    fn host_index(role: HostRole) -> usize {
        role.index()
    }

    fn daemon(&self, role: HostRole) -> Result<&Srmigd, OrchestrateError> {
        self.daemons
            .get(Self::host_index(role))
            .ok_or_else(|| OrchestrateError::Options("srmigd is not started".into()))
    }

    fn start_daemons(&mut self, bin: &Path) -> Result<(), OrchestrateError> {
        if self.plan.hmac {
            self.write_hmac_secret()?;
        }
        for i in 0..self.plan.hosts.len() {
            let daemon = self.start_daemon(bin, i)?;
            self.daemons.push(daemon);
        }
        Ok(())
    }

    /// The lab's HMAC secret ([`super::plan::LAB_HMAC_KEY_FILE`]): 32 random octets, hex,
    /// readable by root only.
    fn write_hmac_secret(&self) -> Result<(), OrchestrateError> {
        use std::io::Read as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = self.dir.join(super::plan::LAB_HMAC_KEY_FILE);
        let file_error = |action, source| OrchestrateError::File {
            action,
            path: path.clone(),
            source,
        };
        let mut raw = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut raw))
            .map_err(|e| file_error("reading /dev/urandom for the HMAC secret", e))?;
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, hex.as_bytes()))
            .map_err(|e| file_error("writing the HMAC secret", e))
    }

    /// Starts the srmigd of host number `i` (plan order) on the management network.
    fn start_daemon(&self, bin: &Path, i: usize) -> Result<Srmigd, OrchestrateError> {
        let (host, ns) = (&self.plan.hosts[i], &self.spaces.hosts[i]);
        let toml = match self.vm {
            Vm::Netns(_) | Vm::Pending(_) => self.plan.node_toml(host),
            Vm::Qemu(_) => self.plan.node_toml_qemu(host, &self.dir),
            Vm::Libvirt(_) => self.plan.node_toml_libvirt(host, &self.dir),
        };
        let (ctl_addr, host_addr) = mgmt_addrs(i + 1);
        let mgmt = super::srmigd::Mgmt {
            tls_dir: self.tls.dir.clone(),
            listen: std::net::SocketAddr::from((host_addr, MGMT_PORT)),
            // Every replica's URL: srmigd reports to the one that leads.
            controller: (0..self.control.replicas())
                .map(|r| format!("https://{ctl_addr}:{}", super::control::replica_port(r)))
                .collect::<Vec<_>>()
                .join(","),
        };
        // One CPU per dataplane (srmigd pins its workers: docs/srmigd-api.md, `--cpus`),
        // chosen here so they do not pile up: C, the client's ingress, busy all along, gets
        // CPU 0 to itself; the VMs' hosts share the others (S and D are busy together only
        // during a pause, when S hands D what D buffers).
        let ncpu = std::thread::available_parallelism().map_or(1, usize::from);
        let cpu = match (i, ncpu) {
            (0, _) | (_, 1) => 0,
            (i, n) => 1 + (i - 1) % (n - 1),
        };
        Srmigd::start(
            &self.lab,
            ns,
            bin,
            &self.dir,
            host,
            &toml,
            &self.control,
            &mgmt,
            cpu,
        )
    }

    /// Kills the srmigd of `role` with SIGKILL (a crash), starts it again with the same
    /// configuration and waits, with no call to the controller, until the controller has
    /// given it its host config back (boot epoch seen, config re-pushed and acknowledged).
    /// Returns the time from the kill to that acknowledgement.
    pub fn restart_srmigd(&mut self, role: HostRole) -> Result<Duration, OrchestrateError> {
        let i = Self::host_index(role);
        let bin = preflight::find_binary("srmigd", &preflight::binary_dirs(None))?;
        let old = self.daemon(role)?;
        let host = old.host().to_owned();
        let before = old.status(&self.control)?["boot_epoch"].as_u64();
        let killed_at = Instant::now();
        self.lab.kill_child(old.pid())?;
        let daemon = self.start_daemon(&bin, i)?;
        self.daemons[i] = daemon;
        loop {
            if self.srmigd_in_sync(role, before)? {
                return Ok(killed_at.elapsed());
            }
            if killed_at.elapsed() > SETUP_TIMEOUT {
                return Err(OrchestrateError::Timeout {
                    what: format!("the controller giving restarted srmigd {host} its config back"),
                    waited: SETUP_TIMEOUT,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the srmigd of `role` runs with a boot epoch other than `before` and holds the
    /// configuration the controller pushed to it last, acknowledged.
    fn srmigd_in_sync(
        &self,
        role: HostRole,
        before: Option<u64>,
    ) -> Result<bool, OrchestrateError> {
        let daemon = self.daemon(role)?;
        let st = daemon.status(&self.control)?;
        let boot = st["boot_epoch"].as_u64();
        let generation = st["generation"].as_u64();
        let view = self
            .control
            .hosts()?
            .into_iter()
            .find(|h| h.registration.info.name.as_str() == daemon.host());
        Ok(match (generation, view) {
            (Some(g), Some(v)) => {
                boot != before && g == v.generation_pushed && v.generation_acked >= g
            }
            _ => false,
        })
    }

    /// Whether the controller answers and every host acknowledged what it pushed.
    fn controller_in_sync(&self) -> bool {
        self.control.hosts().is_ok_and(|hosts| {
            hosts
                .iter()
                .all(|h| h.generation_acked > 0 && h.generation_acked >= h.generation_pushed)
        })
    }

    /// Sets the faults injected in every following migration (see [`super::fault`]). Needs
    /// the controller as its own process for controller faults.
    pub fn set_faults(&mut self, plan: FaultPlan) -> Result<(), OrchestrateError> {
        if matches!(self.vm, Vm::Libvirt(_)) && !plan.faults.is_empty() {
            return Err(OrchestrateError::Options(
                "faults are not injected in the libvirt lab (use --vm-kind qemu or netns)".into(),
            ));
        }
        if !self.control.is_process()
            && plan
                .faults
                .iter()
                .any(|f| matches!(f.target, Component::Controller | Component::Leader))
        {
            return Err(OrchestrateError::Options(
                "controller faults need the controller as its own process \
                 (TestbedOptions::controller_process)"
                    .into(),
            ));
        }
        self.fault_plan = plan;
        Ok(())
    }

    /// A migration starts: the `steady` faults fire, and the migration is requested once
    /// everything is back in sync.
    fn begin_migration(&mut self) -> Result<(), OrchestrateError> {
        self.migrations_started += 1;
        self.fire(FaultPhase::Steady, None)?;
        let limit = Instant::now() + PHASE_TIMEOUT;
        while self.faults_pending() && Instant::now() < limit {
            self.tick_faults()?;
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Migration `id` was accepted: the `steady` faults belong to it, the `prepare` ones fire.
    fn requested(&mut self, id: MigrationId) -> Result<(), OrchestrateError> {
        for p in self.pending.iter_mut().filter(|p| p.id.is_none()) {
            p.id = Some(id);
        }
        self.fire(FaultPhase::Prepare, Some(id))
    }

    /// The faults that ended since the last call (the report's `faults`).
    pub fn take_fault_records(&mut self) -> Vec<FaultRecord> {
        std::mem::take(&mut self.fault_records)
    }

    /// Fires the faults of `phase` for migration `id` (SIGKILL now; started again by
    /// [`tick_faults`](Self::tick_faults)).
    fn fire(&mut self, phase: FaultPhase, id: Option<MigrationId>) -> Result<(), OrchestrateError> {
        let faults: Vec<Fault> = self.fault_plan.at(phase).collect();
        if faults.is_empty() {
            return Ok(());
        }
        let controller_phase = match id {
            Some(id) if self.control.running() => {
                self.control.migration(id).ok().map(|s| s.phase.to_string())
            }
            _ => None,
        };
        for fault in faults {
            // Still down from an earlier fault: wait until it is started again, then kill it.
            let limit = Instant::now() + PHASE_TIMEOUT;
            while self
                .pending
                .iter()
                .any(|p| p.fault.target == fault.target && p.started_at.is_none())
            {
                if Instant::now() > limit {
                    return Err(OrchestrateError::Timeout {
                        what: format!("{} to be started again", fault.what()),
                        waited: PHASE_TIMEOUT,
                    });
                }
                self.tick_faults()?;
                std::thread::sleep(Duration::from_millis(5));
            }
            let boot_before = match fault.target {
                Component::Srmigd(role) => self
                    .daemon(role)?
                    .status(&self.control)
                    .ok()
                    .and_then(|st| st["boot_epoch"].as_u64()),
                Component::Controller | Component::Leader => None,
            };
            let killed_at = Instant::now();
            let mut killed_replica = None;
            match fault.target {
                Component::Controller => self.control.kill()?,
                Component::Leader => killed_replica = Some(self.control.kill_leader()?),
                Component::Srmigd(role) => {
                    let pid = self.daemon(role)?.pid();
                    self.lab.kill_child(pid)?;
                }
            }
            tracing::info!(%fault, migration = self.migrations_started, "fault: SIGKILL");
            let restart_at = match fault.kind {
                FaultKind::Kill => killed_at + self.fault_plan.down,
                FaultKind::Restart => killed_at,
            };
            self.pending.push(PendingFault {
                fault,
                migration: self.migrations_started,
                id,
                killed_at,
                restart_at,
                started_at: None,
                recovered_at: None,
                boot_before,
                controller_phase: controller_phase.clone(),
                killed_replica,
            });
        }
        self.tick_faults()
    }

    /// Starts again what is due, and notes what has recovered.
    fn tick_faults(&mut self) -> Result<(), OrchestrateError> {
        let now = Instant::now();
        for i in 0..self.pending.len() {
            let p = &self.pending[i];
            if p.started_at.is_none() && now >= p.restart_at {
                match p.fault.target {
                    Component::Controller | Component::Leader => self.control.start_again()?,
                    Component::Srmigd(role) => {
                        let bin = preflight::find_binary("srmigd", &preflight::binary_dirs(None))?;
                        let daemon = self.start_daemon(&bin, Self::host_index(role))?;
                        self.daemons[Self::host_index(role)] = daemon;
                    }
                }
                self.pending[i].started_at = Some(Instant::now());
                tracing::info!(fault = %self.pending[i].fault, "fault: started again");
            }
            let p = &self.pending[i];
            if p.started_at.is_some() && p.recovered_at.is_none() {
                let synced = match p.fault.target {
                    Component::Controller | Component::Leader => self.controller_in_sync(),
                    Component::Srmigd(role) => {
                        self.srmigd_in_sync(role, p.boot_before).unwrap_or(false)
                    }
                };
                if synced {
                    self.pending[i].recovered_at = Some(Instant::now());
                }
            }
        }
        Ok(())
    }

    /// Whether a fault is in progress (a process down or not yet in sync).
    fn faults_pending(&self) -> bool {
        self.pending.iter().any(|p| p.recovered_at.is_none())
    }

    /// Runs `f` until it succeeds; while a fault is in progress a failure is retried (the
    /// process it needs may be down) for up to [`PHASE_TIMEOUT`].
    fn retrying<T>(
        &mut self,
        mut f: impl FnMut(&Self) -> Result<T, OrchestrateError>,
    ) -> Result<T, OrchestrateError> {
        let start = Instant::now();
        loop {
            match f(self) {
                Ok(v) => return Ok(v),
                Err(e) if !self.faults_pending() || start.elapsed() > PHASE_TIMEOUT => {
                    return Err(e)
                }
                Err(e) => {
                    tracing::debug!(error = %super::control::error_chain(&e), "retrying while a fault is in progress");
                    self.tick_faults()?;
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    /// Waits until every fault fired has recovered, then records them with the outcome of
    /// their migration.
    fn finish_faults(&mut self, outcome: &'static str) -> Result<(), OrchestrateError> {
        let start = Instant::now();
        while self.faults_pending() {
            if start.elapsed() > PHASE_TIMEOUT {
                let what: Vec<String> = self
                    .pending
                    .iter()
                    .filter(|p| p.recovered_at.is_none())
                    .map(|p| p.fault.to_string())
                    .collect();
                return Err(OrchestrateError::Timeout {
                    what: format!("recovery from the faults {}", what.join(", ")),
                    waited: PHASE_TIMEOUT,
                });
            }
            self.tick_faults()?;
            std::thread::sleep(Duration::from_millis(10));
        }
        let finished_by = (self.control.replicas() > 1)
            .then(|| self.control.find_leader().map(|i| format!("c{i}")))
            .flatten();
        for p in self.pending.drain(..) {
            let ms = |a: Instant, b: Option<Instant>| {
                b.map_or(0.0, |b| b.saturating_duration_since(a).as_secs_f64() * 1e3)
            };
            self.fault_records.push(FaultRecord {
                fault: p.fault.what(),
                phase: p.fault.phase.name(),
                migration: p.migration,
                id: p.id.map_or_else(String::new, |id| format!("m{}", id.0)),
                outcome,
                recovered_ms: ms(p.killed_at, p.recovered_at),
                down_ms: ms(p.killed_at, p.started_at),
                controller_phase: p.controller_phase,
                killed_replica: p.killed_replica.map(|i| format!("c{i}")),
                finished_by: finished_by.clone(),
            });
        }
        Ok(())
    }

    /// Registers hosts and VMs with the controller and waits until every host acknowledged
    /// its configuration.
    fn register(&self) -> Result<(), OrchestrateError> {
        for (i, host) in self.plan.hosts.iter().enumerate() {
            let (_, host_addr) = mgmt_addrs(i + 1);
            self.control.add_host(&HostRegistration {
                info: host.info(),
                api: srmig_controller::HostApi::ApiAddress(format!("{host_addr}:{MGMT_PORT}")),
            })?;
        }
        self.control
            .add_vm(&self.plan.client.info(self.plan.host(HostRole::Client)))?;
        for (i, vm) in self.plan.vms().enumerate() {
            self.control
                .add_vm(&vm.info(self.plan.host(self.plan.home(i))))?;
        }
        let start = Instant::now();
        loop {
            let hosts = self.control.hosts()?;
            if hosts
                .iter()
                .all(|h| h.generation_acked > 0 && h.generation_acked >= h.generation_pushed)
            {
                return Ok(());
            }
            if start.elapsed() > SETUP_TIMEOUT {
                let detail: Vec<String> = hosts
                    .iter()
                    .map(|h| {
                        format!(
                            "{}: pushed {} acked {} ({})",
                            h.registration.info.name,
                            h.generation_pushed,
                            h.generation_acked,
                            h.last_push_error.as_deref().unwrap_or("no error")
                        )
                    })
                    .collect();
                return Err(OrchestrateError::Timeout {
                    what: format!(
                        "host configuration acknowledgements ({})",
                        detail.join("; ")
                    ),
                    waited: SETUP_TIMEOUT,
                });
            }
            self.check_daemons()?;
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Pings every migrating VM from the client until it answers, over IPv6 and over IPv4
    /// (neighbour discovery on the underlay is static; this checks the whole path both ways,
    /// and the VMs' ARP for the IPv4 gateway).
    fn check_connectivity(&self) -> Result<(), OrchestrateError> {
        let start = Instant::now();
        let targets: Vec<(&str, String)> = self
            .plan
            .vms()
            .flat_map(|vm| {
                [
                    ("-6", vm.address.to_string()),
                    ("-4", vm.address_v4.to_string()),
                ]
            })
            .collect();
        for (flag, target) in targets {
            loop {
                match self
                    .spaces
                    .client
                    .exec("ping", &[flag, "-n", "-c", "1", "-W", "1", target.as_str()])
                {
                    Ok(_) => break,
                    Err(e) if start.elapsed() > SETUP_TIMEOUT => {
                        return Err(OrchestrateError::NoConnectivity {
                            target,
                            detail: e.to_string(),
                        })
                    }
                    Err(_) => {
                        self.check_daemons()?;
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        }
        Ok(())
    }

    /// Fails if a srmigd process has exited.
    pub fn check_daemons(&self) -> Result<(), OrchestrateError> {
        let killed = |d: &Srmigd| {
            self.pending.iter().any(|p| {
                p.started_at.is_none()
                    && matches!(p.fault.target, Component::Srmigd(r)
                        if self.plan.host(r).name == d.host())
            })
        };
        match self
            .daemons
            .iter()
            .find(|d| !killed(d) && !d.running(&self.lab))
        {
            Some(dead) => Err(dead.error("exited")),
            None => Ok(()),
        }
    }

    /// Per-host loss counters of every srmigd, for before/after diffs: the dataplane's
    /// `drops` (reason -> count) and each port's I/O losses as `<port>.<counter>`
    /// ([`PORT_LOSS_COUNTERS`]: frames the port could not send or receive, frames a stopped
    /// QEMU had read that could not be recovered).
    pub fn drop_counters(&self) -> Result<Vec<(String, serde_json::Value)>, OrchestrateError> {
        self.daemons
            .iter()
            .map(|d| {
                let status = d.status(&self.control)?;
                Ok((d.host().to_owned(), loss_counters(&status)))
            })
            .collect()
    }

    /// Every srmigd's `GET /v1/status`, by host.
    pub fn statuses(&self) -> Result<Vec<(String, serde_json::Value)>, OrchestrateError> {
        self.daemons
            .iter()
            .map(|d| Ok((d.host().to_owned(), d.status(&self.control)?)))
            .collect()
    }

    /// The take-backs of every srmigd's QEMU ports so far, summed over hosts:
    /// `(recovery_counted, recovery_count_refused)` (docs/qemu.md section 3: decided by the
    /// guest's own count at a source's `pre-switchover`, or not).
    pub fn qemu_take_backs(&self) -> Result<(u64, u64), OrchestrateError> {
        let mut sum = (0, 0);
        for d in &self.daemons {
            let status = d.status(&self.control)?;
            for port in status["ports"].as_array().into_iter().flatten() {
                let io = &port["io"];
                sum.0 += io["recovery_counted"].as_u64().unwrap_or(0);
                sum.1 += io["recovery_count_refused"].as_u64().unwrap_or(0);
            }
        }
        Ok(sum)
    }

    /// `(held, released, dropped + expired)` of the migrating VM `vm` on host `role`.
    fn vm_buffer_counters(
        &self,
        role: HostRole,
        vm: &str,
    ) -> Result<BufferCounters, OrchestrateError> {
        let status = self.daemon(role)?.status(&self.control)?;
        let vm = status["vms"]
            .as_array()
            .and_then(|vms| vms.iter().find(|v| v["name"] == vm))
            .cloned()
            .unwrap_or_default();
        let n = |k: &str| vm[k].as_u64().unwrap_or(0);
        let holds = |k: &str| status["holds"][k].as_u64().unwrap_or(0);
        Ok(BufferCounters {
            held: n("held"),
            released: n("released"),
            fenced: n("fenced"),
            dropped: n("dropped") + n("expired"),
            holds: holds("count"),
            hold_ns: holds("sum_ns"),
        })
    }

    /// Migrates the VM to the other of S and D through the controller with `strategy`,
    /// emulating the hypervisor with `timing`. Times in the record are relative to `origin`.
    ///
    /// A QEMU guest is migrated by the controller's QMP driver (`timing` does not apply):
    /// the record's pause is the true pause, the source's STOP to the destination's RESUME.
    pub fn migrate(
        &mut self,
        strategy: Strategy,
        timing: MigrationTiming,
        origin: Instant,
    ) -> Result<MigrationRecord, OrchestrateError> {
        match self.vm {
            Vm::Netns(_) => {
                let mv = Move {
                    vm: 0,
                    to: self.other_host(),
                    after: None,
                };
                let mut records = self.migrate_many(&[mv], strategy, timing, origin)?;
                records
                    .pop()
                    .ok_or_else(|| OrchestrateError::Options("no migration record".into()))
            }
            Vm::Qemu(_) => self.migrate_qemu(strategy, origin),
            Vm::Libvirt(_) => self.migrate_libvirt(strategy, origin),
            Vm::Pending(_) => Err(OrchestrateError::Options("libvirt not started".into())),
        }
    }

    fn other_host(&self) -> HostRole {
        match self.vm_at() {
            HostRole::Source => HostRole::Destination,
            _ => HostRole::Source,
        }
    }

    fn migrate_qemu(
        &mut self,
        strategy: Strategy,
        origin: Instant,
    ) -> Result<MigrationRecord, OrchestrateError> {
        let (from, to) = (self.vm_at(), self.other_host());
        let vm_name = self.plan.vm.name;
        self.begin_migration()?;
        let c0 = self.retrying(|t| t.vm_buffer_counters(to, vm_name))?;
        let req = MigrateRequest {
            vm: self.plan.vm.info(self.plan.host(from)).name,
            to: self.plan.host(to).info().name,
            strategy,
        };
        let t_req = Instant::now();
        // The wall clock at `origin`: QEMU's event timestamps are wall-clock microseconds.
        let origin_wall_us = wall_us() - micros(t_req.saturating_duration_since(origin));
        let accepted = self.retrying(|t| t.control.migrate(&req))?;
        let id = accepted.id;
        self.requested(id)?;
        let limit = self.qemu_phase_timeout();
        let any = |phase: FaultPhase| self.fault_plan.at(phase).next().is_some();
        let (f_migrating, f_switchover, f_commit, f_cleanup) = (
            any(FaultPhase::Migrating),
            any(FaultPhase::Switchover),
            any(FaultPhase::Commit),
            any(FaultPhase::Cleanup),
        );
        if f_migrating {
            // QEMU is sending the guest's memory.
            self.wait_status_for(id, "QEMU's pre-copy", limit, |st| {
                st.hypervisor.as_ref().is_some_and(|h| h.status == "active") || past_hypervisor(st)
            })?;
            self.fire(FaultPhase::Migrating, Some(id))?;
        }
        if f_switchover {
            // The source stopped the VM (its srmigd reported it paused, or the driver saw STOP).
            self.wait_status_for(id, "the switchover", limit, |st| {
                st.phases
                    .iter()
                    .any(|r| r.phase == MigrationPhase::SourcePaused)
                    || st
                        .hypervisor
                        .as_ref()
                        .is_some_and(|h| h.stopped_at_us.is_some())
                    || past_hypervisor(st)
            })?;
            self.fire(FaultPhase::Switchover, Some(id))?;
        }
        if f_commit {
            self.wait_status_for(id, "the commit", limit, past_hypervisor)?;
            self.fire(FaultPhase::Commit, Some(id))?;
        }
        if f_cleanup {
            self.wait_status_for(id, "the cleanup", limit, |st| {
                st.phase == MigrationPhase::ExpectCleanupAcks || st.phase.is_terminal()
            })?;
            self.fire(FaultPhase::Cleanup, Some(id))?;
        }
        let done = self.wait_status_for(id, "the end of the migration", limit, |st| {
            st.phase.is_terminal()
        })?;
        let t_done = Instant::now();
        if done.phase != MigrationPhase::Completed {
            return self.rolled_back(&done, strategy, from, to, origin, t_req);
        }
        self.vm_at[0] = to;
        self.finish_faults("completed")?;
        // The core may complete (the destination srmigd reported the VM running, commit and
        // cleanup acknowledged) a moment before the driver's final figures arrive.
        let mut hv = done.hypervisor.clone().unwrap_or_default();
        let figures_by = Instant::now() + Duration::from_secs(10);
        while (hv.stopped_at_us.is_none() || hv.resumed_at_us.is_none())
            && Instant::now() < figures_by
        {
            std::thread::sleep(Duration::from_millis(10));
            hv = self.control.migration(id)?.hypervisor.unwrap_or_default();
        }
        let (stop_us, resume_us) = match (hv.stopped_at_us, hv.resumed_at_us) {
            (Some(stop), Some(resume)) => (stop, resume),
            // A controller that re-attached after a restart did not see QEMU's STOP and
            // RESUME events: the pause is then QEMU's own downtime figure, placed at the end.
            _ if !self.fault_plan.faults.is_empty() => {
                let end = wall_us();
                let downtime = i64::try_from(hv.downtime_ms.unwrap_or(0) * 1000).unwrap_or(0);
                (end - downtime, end)
            }
            _ => {
                return Err(OrchestrateError::Qemu(format!(
                    "migration m{} completed but QEMU's STOP and RESUME events were not both \
                     seen ({hv}): no pause can be measured",
                    id.0
                )))
            }
        };
        let c1 = self.vm_buffer_counters(to, vm_name)?;
        Ok(self.hypervisor_record(
            &done,
            strategy,
            (from, to),
            (c0, c1),
            WallTimes {
                origin,
                origin_wall_us,
                t_req,
                t_done,
                stopped_at_us: stop_us,
                resumed_at_us: resume_us,
            },
        ))
    }

    /// The record of a migration a hypervisor ran (QEMU over QMP, libvirt): its pause and
    /// timeline from QEMU's STOP and RESUME (wall clock), End.SBUF's counters at `to` before
    /// and after.
    fn hypervisor_record(
        &self,
        done: &MigrationStatus,
        strategy: Strategy,
        (from, to): (HostRole, HostRole),
        (c0, c1): (BufferCounters, BufferCounters),
        t: WallTimes,
    ) -> MigrationRecord {
        let ms = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64() * 1e3;
        let wall_ms = |us: i64| (us - t.origin_wall_us) as f64 / 1e3;
        let phase_ms = |phase: MigrationPhase| {
            done.phases
                .iter()
                .find(|r| r.phase == phase)
                .map(|r| r.at_ms.millis_since(done.started_at_ms) as f64)
        };
        let attached_at_ms = wall_ms(t.resumed_at_us);
        let completed_at_ms = ms(t.origin, t.t_done);
        MigrationRecord {
            id: format!("m{}", done.id.0),
            vm: done.vm.to_string(),
            from: self.plan.host(from).name.to_owned(),
            to: self.plan.host(to).name.to_owned(),
            strategy,
            outcome: "completed",
            pause_ms: (t.resumed_at_us - t.stopped_at_us) as f64 / 1e3,
            total_ms: ms(t.t_req, t.t_done),
            prepare_ms: phase_ms(MigrationPhase::ExpectHypervisorDone).unwrap_or(0.0),
            finish_ms: completed_at_ms - attached_at_ms,
            requested_at_ms: ms(t.origin, t.t_req),
            cut_at_ms: wall_ms(t.stopped_at_us),
            attached_at_ms,
            completed_at_ms,
            held: c1.held.saturating_sub(c0.held),
            released: c1.released.saturating_sub(c0.released),
            fenced: c1.fenced.saturating_sub(c0.fenced),
            dropped: c1.dropped.saturating_sub(c0.dropped),
            hold_ms: c1.hold_ms_since(&c0),
            phases: done
                .phases
                .iter()
                .map(|r| (r.phase, r.at_ms.millis_since(done.started_at_ms)))
                .collect(),
            delivery: done.delivery,
        }
    }

    /// libvirt: one `virsh migrate --live` from where the VM runs to the other host, with no
    /// srmig command in the loop: the destination's libvirt hook asks the controller for the
    /// migration and waits until the path is armed, the destination's srmigd reports the VM
    /// running at QEMU's RESUME, and the controller commits. The lab only watches.
    fn migrate_libvirt(
        &mut self,
        strategy: Strategy,
        origin: Instant,
    ) -> Result<MigrationRecord, OrchestrateError> {
        let (from, to) = (self.vm_at(), self.other_host());
        let (from_name, to_name) = (self.plan.host(from).name, self.plan.host(to).name);
        let vm_name = self.plan.vm.name;
        let Vm::Libvirt(libvirt) = &self.vm else {
            return Err(OrchestrateError::Options("not a libvirt VM".into()));
        };
        libvirt.set_strategy(from_name, strategy)?;
        self.begin_migration()?;
        let c0 = self.retrying(|t| t.vm_buffer_counters(to, vm_name))?;
        let known: Vec<MigrationId> = self
            .retrying(|t| t.control.migrations())?
            .iter()
            .map(|m| m.id)
            .collect();
        let t_req = Instant::now();
        let origin_wall_us = wall_us() - micros(t_req.saturating_duration_since(origin));
        let req_wall_us = wall_us();
        let Vm::Libvirt(libvirt) = &self.vm else {
            return Err(OrchestrateError::Options("not a libvirt VM".into()));
        };
        let virsh = libvirt.start_migration(from_name, to_name)?;
        let virsh_done = std::thread::spawn(move || virsh.wait_with_output());
        // The hook creates the migration at the controller before libvirt prepares D.
        let limit = self.qemu_phase_timeout();
        let found_by = Instant::now() + PHASE_TIMEOUT;
        let id = loop {
            let all = self.retrying(|t| t.control.migrations())?;
            if let Some(m) = all
                .iter()
                .find(|m| m.vm.as_str() == vm_name && !known.contains(&m.id))
            {
                break m.id;
            }
            if virsh_done.is_finished() || Instant::now() > found_by {
                let out = join_virsh(virsh_done)?;
                return Err(OrchestrateError::Qemu(format!(
                    "virsh migrate {vm_name} {from_name} -> {to_name} ({}) created no migration                      at the controller (is the libvirt hook installed?): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            std::thread::sleep(POLL);
        };
        let done = self.wait_status_for(id, "the end of the migration", limit, |st| {
            st.phase.is_terminal()
        })?;
        let t_done = Instant::now();
        let out = join_virsh(virsh_done)?;
        if done.phase != MigrationPhase::Completed || !out.status.success() {
            return Err(OrchestrateError::Qemu(format!(
                "migration m{} of {vm_name} {from_name} -> {to_name}: controller {}{}, virsh                  migrate {}: {}",
                id.0,
                done.phase,
                done.error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        self.vm_at[0] = to;
        // QEMU's STOP and RESUME, as libvirt relays them (its listener may print them a moment
        // after the controller completed).
        let Vm::Libvirt(libvirt) = &self.vm else {
            return Err(OrchestrateError::Options("not a libvirt VM".into()));
        };
        let figures_by = Instant::now() + Duration::from_secs(5);
        let pause = loop {
            if let Some(p) = libvirt.pause_events(from_name, to_name, req_wall_us - 1000) {
                break p;
            }
            if Instant::now() > figures_by {
                return Err(OrchestrateError::Qemu(format!(
                    "migration m{} completed but libvirt relayed no STOP on {from_name} and                      RESUME on {to_name}: no pause can be measured",
                    id.0
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let c1 = self.vm_buffer_counters(to, vm_name)?;
        Ok(self.hypervisor_record(
            &done,
            strategy,
            (from, to),
            (c0, c1),
            WallTimes {
                origin,
                origin_wall_us,
                t_req,
                t_done,
                stopped_at_us: pause.stopped_at_us,
                resumed_at_us: pause.resumed_at_us,
            },
        ))
    }

    /// How long a QEMU migration may take before the lab gives up: the driver's own limit
    /// (after which it cancels and reports) plus room for starting QEMU and the pushes.
    fn qemu_phase_timeout(&self) -> Duration {
        let driver = match &self.vm {
            Vm::Qemu(q) => q.driver_timeout(),
            Vm::Libvirt(_) => LIBVIRT_MIGRATION_TIMEOUT,
            Vm::Netns(_) | Vm::Pending(_) => Duration::ZERO,
        };
        driver + PHASE_TIMEOUT + self.propagation_delay * 8
    }

    /// Netns VMs: one round of migrations ([`Plan::round_moves`]): every migrating VM moves
    /// one host on, all at once, or with `chain` the chain of `vm1` and `vm2`. The records
    /// are in the order the moves were planned.
    pub fn migrate_round(
        &mut self,
        chain: bool,
        strategy: Strategy,
        timing: MigrationTiming,
        origin: Instant,
    ) -> Result<Vec<MigrationRecord>, OrchestrateError> {
        let moves: Vec<Move> = self
            .plan
            .round_moves(&self.vm_at, chain)
            .into_iter()
            .map(|(vm, to, after)| Move { vm, to, after })
            .collect();
        self.migrate_many(&moves, strategy, timing, origin)
    }

    /// Netns VMs: performs the migrations of one round, all at once (each waits only for
    /// the migration it is `after`), emulating the hypervisor with `timing`, and returns
    /// their records in `moves` order. Times in the records are relative to `origin`.
    ///
    /// The round is driven by one loop that advances each migration through its steps
    /// (request, path armed, pre-copy, stop and drain, cut, downtime, attach, the
    /// controller's end) as their moments come, so that concurrent migrations overlap as
    /// they would on real hosts. A migration's pause is measured from its own stop to its
    /// own attach. `hold_ms` is left out of the records when the round has more than one
    /// migration: srmigd's hold-time histogram is per host, not per VM.
    ///
    /// Faults (`--fault`) are injected only into rounds of one migration.
    pub fn migrate_many(
        &mut self,
        moves: &[Move],
        strategy: Strategy,
        timing: MigrationTiming,
        origin: Instant,
    ) -> Result<Vec<MigrationRecord>, OrchestrateError> {
        let Vm::Netns(vms) = &self.vm else {
            return Err(OrchestrateError::Options(
                "concurrent migrations need netns VMs".into(),
            ));
        };
        let atts: Vec<LinkEnd> = vms.iter().map(|v| v.att.clone()).collect();
        if moves.len() > 1 && !self.fault_plan.faults.is_empty() {
            return Err(OrchestrateError::Options(
                "faults are injected into one migration at a time, not into concurrent ones".into(),
            ));
        }
        for (i, m) in moves.iter().enumerate() {
            if m.vm >= atts.len() || m.to.index() >= self.plan.hosts.len() {
                return Err(OrchestrateError::Options(format!(
                    "migration {i} of the round: no VM {} or host {:?} in the plan",
                    m.vm, m.to
                )));
            }
            if m.to == HostRole::Client || m.after.is_some_and(|a| a >= i) {
                return Err(OrchestrateError::Options(format!(
                    "migration {i} of the round: VMs do not move to C, and a migration waits \
                     only for an earlier one"
                )));
            }
        }
        let mut flights: Vec<Flight> = moves.iter().map(|&m| Flight::new(m)).collect();
        let mut records: Vec<Option<MigrationRecord>> = vec![None; moves.len()];
        // With several migrations in flight, each polls the controller less often (the
        // polls share the cores with the workloads and srmigd).
        let poll = if moves.len() > 1 { MANY_POLL } else { POLL };
        while records.iter().any(Option::is_none) {
            self.tick_faults()?;
            let now = Instant::now();
            let due: Vec<usize> = (0..flights.len())
                .filter(|&i| {
                    let f = &flights[i];
                    f.mv.after.is_none_or(|a| flights[a].stage == Stage::Done)
                        && f.is_due(now, timing, poll)
                })
                .collect();
            for &i in &due {
                self.flight_begin(&mut flights[i])?;
            }
            // The steps due now run side by side, as each VM's hypervisor would: one
            // thread per migration (the step's I/O only; the bookkeeping follows here).
            let outputs: Vec<Result<FlightIo, OrchestrateError>> = match due.as_slice() {
                [] => Vec::new(),
                &[i] => {
                    let f = &flights[i];
                    vec![self.retrying(|t| t.flight_io(f, &atts, strategy))]
                }
                many => {
                    let this = &*self;
                    let (flights, atts) = (&flights, &atts);
                    std::thread::scope(|scope| {
                        let handles: Vec<_> = many
                            .iter()
                            .map(|&i| {
                                scope.spawn(move || this.flight_io(&flights[i], atts, strategy))
                            })
                            .collect();
                        handles
                            .into_iter()
                            .map(|h| {
                                h.join().unwrap_or_else(|_| {
                                    Err(OrchestrateError::WorkloadPanicked("lab migration step"))
                                })
                            })
                            .collect()
                    })
                }
            };
            for (&i, output) in due.iter().zip(outputs) {
                if let Some(record) = self.flight_end(&mut flights[i], output?, strategy, origin)? {
                    records[i] = Some(record);
                }
            }
            let next = flights
                .iter()
                .filter_map(|f| f.next_due(timing, poll))
                .min()
                .unwrap_or_else(|| Instant::now() + poll);
            let now = Instant::now();
            if next > now {
                std::thread::sleep((next - now).min(poll));
            }
        }
        let mut records: Vec<MigrationRecord> = records.into_iter().flatten().collect();
        if records.len() > 1 {
            for r in &mut records {
                r.hold_ms = None;
            }
        }
        Ok(records)
    }

    /// The bookkeeping before a step of `f`: where a migration starts from, and the moment
    /// of its request. (The stop's moment is the source srmigd's: [`FlightIo::Paused`].)
    fn flight_begin(&mut self, f: &mut Flight) -> Result<(), OrchestrateError> {
        if f.stage == Stage::Waiting {
            f.from = self.vm_at_of(f.mv.vm);
            if f.from == f.mv.to {
                return Err(OrchestrateError::Options(format!(
                    "{} is already on {}",
                    vms_name(&self.plan, f.mv.vm),
                    self.plan.host(f.mv.to).name
                )));
            }
            self.begin_migration()?;
            f.t_req = Instant::now();
        }
        Ok(())
    }

    /// The I/O of `f`'s next step (no state of the testbed changes here: the steps of
    /// concurrent migrations run on threads of their own).
    fn flight_io(
        &self,
        f: &Flight,
        atts: &[LinkEnd],
        strategy: Strategy,
    ) -> Result<FlightIo, OrchestrateError> {
        let vm_name = vms_name(&self.plan, f.mv.vm);
        let id = || {
            f.id.ok_or_else(|| OrchestrateError::Options("no migration id".into()))
        };
        Ok(match f.stage {
            Stage::Waiting => {
                let c0 = self.vm_buffer_counters(f.mv.to, vm_name)?;
                let req = MigrateRequest {
                    vm: VmId::new(vm_name)
                        .map_err(|e| OrchestrateError::Options(format!("VM name: {e}")))?,
                    to: self.plan.host(f.mv.to).info().name,
                    strategy,
                };
                let id = self.control.migrate(&req)?.id;
                FlightIo::Requested { c0, id }
            }
            Stage::Arming | Stage::Finishing => {
                FlightIo::Status(Box::new(self.control.migration(id()?)?))
            }
            // Stop-and-copy: the hypervisor stops the VM and tells the source's virtual
            // switch; the VM's last replies drain...
            Stage::Precopy => {
                let since =
                    self.daemon(f.from)?
                        .set_vm_state(&self.control, vm_name, VmState::Paused)?;
                let answered = Instant::now();
                FlightIo::Paused {
                    applied: applied_at(since, answered),
                    answered,
                }
            }
            Stage::Draining => {
                // ...the attachment leaves the source (where it is now: a VM may move twice
                // in a round)...
                let port = match &self.vm {
                    Vm::Netns(v) => v[f.mv.vm].port.clone(),
                    Vm::Qemu(_) | Vm::Libvirt(_) | Vm::Pending(_) => {
                        return Err(OrchestrateError::Options("not a netns VM".into()))
                    }
                };
                let to_ns = &self.spaces.hosts[f.mv.to.index()];
                let moved = self.lab.move_link(&port, to_ns)?;
                self.lab.set_down(&atts[f.mv.vm])?;
                // (Moved links arrive down; the host's default already disables IPv6 on
                // arrivals.)
                to_ns.set_sysctl(&format!("net/ipv6/conf/{}/disable_ipv6", moved.ifname), "1")?;
                // The port is up at the destination but without carrier while `att` is
                // down: srmigd there does not consider it attached yet.
                self.lab.set_up(&moved)?;
                FlightIo::Moved(moved)
            }
            // ...and appears at the destination, VM side last: `att` is activated while it
            // is opened, before the destination srmigd hears that its port has carrier. The
            // VM resumes: its attachment comes up, timestamped by the system call itself.
            Stage::Down => FlightIo::Attached(self.lab.set_up_timed(&atts[f.mv.vm])?),
            Stage::Attached => {
                let id = id()?;
                let completed = HypervisorPost {
                    event: HypervisorEventKind::Completed,
                    reason: None,
                };
                match self.control.hypervisor(id, &completed) {
                    Ok(_) => {}
                    // A post the controller took just before it was killed: the retry is
                    // refused because the migration has moved on.
                    Err(e) => match self.control.migration(id) {
                        Ok(st) if st.phase != MigrationPhase::ExpectHypervisorDone => {}
                        _ => return Err(e),
                    },
                }
                FlightIo::Posted
            }
            Stage::Done => FlightIo::Posted,
        })
    }

    /// The bookkeeping after a step of `f` (faults fired, the VM's new place, the next
    /// stage); the record when it ended.
    fn flight_end(
        &mut self,
        f: &mut Flight,
        io: FlightIo,
        strategy: Strategy,
        origin: Instant,
    ) -> Result<Option<MigrationRecord>, OrchestrateError> {
        let vm_name = vms_name(&self.plan, f.mv.vm);
        f.polled = Some(Instant::now());
        let what = match (f.stage, &io) {
            (Stage::Waiting, FlightIo::Requested { id, .. }) => {
                Some(format!("m{} requested, arming the path", id.0))
            }
            (Stage::Precopy, _) => Some("pre-copy over: paused at the source".to_owned()),
            (Stage::Draining, _) => Some("the attachment leaves the source".to_owned()),
            (Stage::Down, _) => Some("resumed at the destination".to_owned()),
            (Stage::Attached, _) => Some("hypervisor done: commit and cleanup".to_owned()),
            _ => None,
        };
        if let Some(what) = what {
            self.progress.detail(&format!(
                "{vm_name} {} -> {}: {what}",
                self.plan.host(f.from).name,
                self.plan.host(f.mv.to).name
            ));
        }
        match (f.stage, io) {
            (Stage::Waiting, FlightIo::Requested { c0, id }) => {
                f.c0 = Some(c0);
                f.id = Some(id);
                self.requested(id)?;
                f.stage = Stage::Arming;
                f.polled = None;
            }
            (Stage::Arming, FlightIo::Status(status)) => {
                let id = status.id;
                if status.phase == MigrationPhase::ExpectHypervisorDone {
                    f.t_hv = Instant::now();
                    self.fire(FaultPhase::Migrating, Some(id))?;
                    f.stage = Stage::Precopy;
                } else if status.phase.is_terminal() {
                    // Rolled back before the VM moved (e.g. a host did not acknowledge in
                    // time).
                    f.stage = Stage::Done;
                    let (from, to) = (f.from, f.mv.to);
                    let mut record =
                        self.rolled_back(&status, strategy, from, to, origin, f.t_req)?;
                    record.vm = vm_name.to_owned();
                    return Ok(Some(record));
                } else if f.t_req.elapsed() > PHASE_TIMEOUT {
                    self.check_daemons()?;
                    return Err(OrchestrateError::Timeout {
                        what: format!(
                            "the hypervisor phase of migration m{} (phase {})",
                            id.0, status.phase
                        ),
                        waited: PHASE_TIMEOUT,
                    });
                }
            }
            (Stage::Finishing, FlightIo::Status(status)) => {
                if status.phase.is_terminal() {
                    f.stage = Stage::Done;
                    return self
                        .finished(f, &status, vm_name, strategy, origin)
                        .map(Some);
                }
                if f.t_attach.elapsed() > PHASE_TIMEOUT {
                    self.check_daemons()?;
                    return Err(OrchestrateError::Timeout {
                        what: format!(
                            "the end of migration m{} (phase {})",
                            status.id.0, status.phase
                        ),
                        waited: PHASE_TIMEOUT,
                    });
                }
            }
            (Stage::Precopy, FlightIo::Paused { applied, answered }) => {
                f.t_stop = applied;
                f.t_paused = answered;
                self.fire(FaultPhase::Switchover, f.id)?;
                f.stage = Stage::Draining;
            }
            (Stage::Draining, FlightIo::Moved(moved)) => {
                if let Vm::Netns(v) = &mut self.vm {
                    v[f.mv.vm].port = moved;
                }
                self.vm_at[f.mv.vm] = f.mv.to;
                f.stage = Stage::Down;
            }
            (Stage::Down, FlightIo::Attached(at)) => {
                f.t_attach = at;
                f.stage = Stage::Attached;
            }
            (Stage::Attached, FlightIo::Posted) => {
                let id =
                    f.id.ok_or_else(|| OrchestrateError::Options("no migration id".into()))?;
                self.faults_after_attach(id)?;
                f.stage = Stage::Finishing;
                f.polled = None;
            }
            (stage, io) => {
                return Err(OrchestrateError::Options(format!(
                    "lab migration step {stage:?} got {io:?}"
                )))
            }
        }
        Ok(None)
    }

    /// After the hypervisor's `completed`: fires the commit and cleanup faults at their
    /// phases.
    fn faults_after_attach(&mut self, id: MigrationId) -> Result<(), OrchestrateError> {
        if self.fault_plan.at(FaultPhase::Commit).next().is_some() {
            self.wait_phase(id, "the commit", |p| {
                matches!(
                    p,
                    MigrationPhase::ExpectCommitAcks | MigrationPhase::ExpectCleanupAcks
                ) || p.is_terminal()
            })?;
            self.fire(FaultPhase::Commit, Some(id))?;
        }
        if self.fault_plan.at(FaultPhase::Cleanup).next().is_some() {
            self.wait_phase(id, "the cleanup", |p| {
                p == MigrationPhase::ExpectCleanupAcks || p.is_terminal()
            })?;
            self.fire(FaultPhase::Cleanup, Some(id))?;
        }
        Ok(())
    }

    /// The record of netns migration `f`, which the controller ended with `done`.
    fn finished(
        &mut self,
        f: &Flight,
        done: &MigrationStatus,
        vm_name: &str,
        strategy: Strategy,
        origin: Instant,
    ) -> Result<MigrationRecord, OrchestrateError> {
        let t_done = Instant::now();
        if done.phase != MigrationPhase::Completed {
            return Err(MigrationFailure::of(done));
        }
        self.finish_faults("completed")?;
        let c1 = self.vm_buffer_counters(f.mv.to, vm_name)?;
        let c0 = f.c0.unwrap_or(c1);
        let ms = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64() * 1e3;
        Ok(MigrationRecord {
            id: format!("m{}", done.id.0),
            vm: vm_name.to_owned(),
            from: self.plan.host(f.from).name.to_owned(),
            to: self.plan.host(f.mv.to).name.to_owned(),
            strategy,
            outcome: "completed",
            pause_ms: ms(f.t_stop, f.t_attach),
            total_ms: ms(f.t_req, t_done),
            prepare_ms: ms(f.t_req, f.t_hv),
            finish_ms: ms(f.t_attach, t_done),
            requested_at_ms: ms(origin, f.t_req),
            cut_at_ms: ms(origin, f.t_stop),
            attached_at_ms: ms(origin, f.t_attach),
            completed_at_ms: ms(origin, t_done),
            held: c1.held.saturating_sub(c0.held),
            released: c1.released.saturating_sub(c0.released),
            fenced: c1.fenced.saturating_sub(c0.fenced),
            dropped: c1.dropped.saturating_sub(c0.dropped),
            hold_ms: c1.hold_ms_since(&c0),
            phases: done
                .phases
                .iter()
                .map(|r| (r.phase, r.at_ms.millis_since(done.started_at_ms)))
                .collect(),
            delivery: done.delivery,
        })
    }

    /// The record of a migration that ended failed or cancelled with the VM where it was;
    /// an error unless faults were injected (a lab run without faults must complete).
    fn rolled_back(
        &mut self,
        done: &MigrationStatus,
        strategy: Strategy,
        from: HostRole,
        to: HostRole,
        origin: Instant,
        t_req: Instant,
    ) -> Result<MigrationRecord, OrchestrateError> {
        if self.fault_plan.faults.is_empty() {
            return Err(MigrationFailure::of(done));
        }
        tracing::warn!(migration = done.id.0, phase = %done.phase, error = ?done.error, "migration rolled back under faults");
        self.finish_faults("rolled_back")?;
        let t_done = Instant::now();
        let ms = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64() * 1e3;
        Ok(MigrationRecord {
            id: format!("m{}", done.id.0),
            vm: self.plan.vm.name.to_owned(),
            from: self.plan.host(from).name.to_owned(),
            to: self.plan.host(to).name.to_owned(),
            strategy,
            outcome: "rolled_back",
            pause_ms: 0.0,
            total_ms: ms(t_req, t_done),
            prepare_ms: 0.0,
            finish_ms: 0.0,
            requested_at_ms: ms(origin, t_req),
            cut_at_ms: 0.0,
            attached_at_ms: 0.0,
            completed_at_ms: ms(origin, t_done),
            held: 0,
            released: 0,
            fenced: 0,
            dropped: 0,
            hold_ms: None,
            phases: done
                .phases
                .iter()
                .map(|r| (r.phase, r.at_ms.millis_since(done.started_at_ms)))
                .collect(),
            delivery: done.delivery,
        })
    }

    fn wait_phase(
        &mut self,
        id: srmig_api::MigrationId,
        what: &str,
        reached: impl Fn(MigrationPhase) -> bool,
    ) -> Result<MigrationStatus, OrchestrateError> {
        self.wait_phase_for(id, what, PHASE_TIMEOUT, reached)
    }

    fn wait_phase_for(
        &mut self,
        id: srmig_api::MigrationId,
        what: &str,
        limit: Duration,
        reached: impl Fn(MigrationPhase) -> bool,
    ) -> Result<MigrationStatus, OrchestrateError> {
        let status = self.wait_status_for(id, what, limit, |st| {
            reached(st.phase) || st.phase.is_terminal()
        })?;
        if reached(status.phase) {
            Ok(status)
        } else {
            Err(MigrationFailure::of(&status))
        }
    }

    /// Polls migration `id` until `reached` says so (retrying while a fault is in
    /// progress), for at most `limit`.
    fn wait_status_for(
        &mut self,
        id: srmig_api::MigrationId,
        what: &str,
        limit: Duration,
        reached: impl Fn(&MigrationStatus) -> bool,
    ) -> Result<MigrationStatus, OrchestrateError> {
        let start = Instant::now();
        let mut shown = None;
        loop {
            self.tick_faults()?;
            let status = self.retrying(|t| t.control.migration(id))?;
            if shown != Some(status.phase) {
                shown = Some(status.phase);
                self.progress.detail(&format!(
                    "m{} {} -> {}: {} ({:.1} s)",
                    id.0,
                    status.from,
                    status.to,
                    status.phase,
                    start.elapsed().as_secs_f64()
                ));
            }
            if reached(&status) {
                return Ok(status);
            }
            if start.elapsed() > limit {
                self.check_daemons()?;
                return Err(OrchestrateError::Timeout {
                    what: format!("{what} of migration m{} (phase {})", id.0, status.phase),
                    waited: limit,
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// Stops the controller and tears the lab down now (also done on drop; with the work
    /// directory kept, each srmigd's last `/v1/status` is written there as
    /// `status-<host>.json` first).
    pub fn teardown(mut self) -> Result<(), OrchestrateError> {
        self.save_statuses();
        self.shutdown_libvirt();
        self.control.shutdown();
        self.lab.teardown()?;
        Ok(())
    }

    /// libvirt: destroys the domain and stops the daemons while the controller still answers
    /// their hooks.
    fn shutdown_libvirt(&mut self) {
        if let Vm::Libvirt(l) = &mut self.vm {
            l.shutdown();
        }
    }

    /// With the work directory kept: each srmigd's last `/v1/status` into
    /// `status-<host>.json` there (what every srmigd counted, for whoever reads the logs).
    fn save_statuses(&mut self) {
        if !self.keep_dir || self.statuses_saved {
            return;
        }
        self.statuses_saved = true;
        for d in &self.daemons {
            if let Ok(st) = d.status(&self.control) {
                let path = self.dir.join(format!("status-{}.json", d.host()));
                let text = serde_json::to_string_pretty(&st).unwrap_or_default();
                if let Err(e) = std::fs::write(&path, text) {
                    tracing::warn!(path = %path.display(), error = %e, "writing srmigd's last status failed");
                }
            }
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        self.save_statuses();
        self.shutdown_libvirt();
        self.control.shutdown();
        if let Err(e) = self.lab.teardown() {
            tracing::error!(error = %e, "lab teardown failed");
        }
        remove_dir(&self.dir, self.keep_dir);
    }
}

/// [`Testbed::kernel_link_counters`] of one namespace (`ns`), from `ip -s -j link show`.
fn link_drop_counters(json: &str, ns: &str) -> Vec<(String, u64)> {
    let Ok(serde_json::Value::Array(links)) = serde_json::from_str::<serde_json::Value>(json)
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for link in &links {
        let Some(name) = link["ifname"].as_str() else {
            continue;
        };
        for dir in ["rx", "tx"] {
            for what in ["dropped", "errors"] {
                if let Some(n) = link["stats64"][dir][what].as_u64() {
                    out.push((format!("{name}@{ns}.{dir}_{what}"), n));
                }
            }
        }
    }
    out
}

/// Port I/O counters that mean a frame was lost or may have been (srmigd `/v1/status`,
/// `ports[].io`).
pub const PORT_LOSS_COUNTERS: [&str; 11] = [
    "rx_errors",
    "rx_truncated",
    "rx_ring_drops",
    "rx_gso_bad",
    "rx_bad_csum_meta",
    "rx_bad_records",
    "tx_errors",
    "tx_no_link",
    "tx_queue_full",
    "recovery_inexact",
    "recovery_lost",
];

/// `drops` of a srmigd status plus `<port>.<counter>` for [`PORT_LOSS_COUNTERS`].
/// The commit-fence counters (`GET /v1/status` `fence`) that [`loss_counters`] reports:
/// packets let through out of order (`bypassed`, and the pairs opened by `timeouts`),
/// markers lost or late, held packets dropped.
const FENCE_ANOMALY_COUNTERS: [&str; 6] = [
    "bypassed",
    "timeouts",
    "markers_late",
    "markers_unsent",
    "markers_unarmed",
    "dropped",
];

fn loss_counters(status: &serde_json::Value) -> serde_json::Value {
    let mut all = status["drops"].as_object().cloned().unwrap_or_default();
    for port in status["ports"].as_array().into_iter().flatten() {
        let name = port["name"].as_str().unwrap_or("?");
        for counter in PORT_LOSS_COUNTERS {
            if let Some(n) = port["io"][counter].as_u64() {
                all.insert(format!("{name}.{counter}"), n.into());
            }
        }
    }
    // What may deliver out of order (not lost): a VM port's fast path turned on before
    // srmigd caught up with it, the commit fence's bypasses and timeouts; markers lost.
    for port in status["ports"].as_array().into_iter().flatten() {
        let name = port["name"].as_str().unwrap_or("?");
        if let Some(n) = port["io"]["fast_forced_enables"].as_u64() {
            all.insert(format!("{name}.fast_forced_enables"), n.into());
        }
    }
    for counter in FENCE_ANOMALY_COUNTERS {
        if let Some(n) = status["fence"][counter].as_u64() {
            all.insert(format!("fence.{counter}"), n.into());
        }
    }
    serde_json::Value::Object(all)
}

/// When a hypervisor's migration happened: the workload's origin (monotonic and wall clock),
/// the request, the end, and QEMU's STOP and RESUME (wall clock, microseconds).
#[derive(Debug, Clone, Copy)]
struct WallTimes {
    origin: Instant,
    origin_wall_us: i64,
    t_req: Instant,
    t_done: Instant,
    stopped_at_us: i64,
    resumed_at_us: i64,
}

/// The output of a `virsh migrate` run on a thread.
fn join_virsh(
    handle: std::thread::JoinHandle<std::io::Result<std::process::Output>>,
) -> Result<std::process::Output, OrchestrateError> {
    handle
        .join()
        .map_err(|_| OrchestrateError::Qemu("the virsh migrate thread panicked".into()))?
        .map_err(|e| OrchestrateError::Qemu(format!("virsh migrate: {e}")))
}

/// A libvirt VM between the topology and the controller: started once the controller's API
/// socket exists, since the libvirt hooks call it.
#[derive(Debug)]
struct PendingLibvirt {
    hv: Netns,
    image: GuestImage,
    srmig: PathBuf,
}

/// How long a `virsh migrate --live` of the lab's guest may take (TCG: a few seconds).
const LIBVIRT_MIGRATION_TIMEOUT: Duration = Duration::from_secs(120);

impl QemuVm {
    fn driver_timeout(&self) -> Duration {
        self.settings.migration_timeout
    }
}

/// Whether migration `st` is past its hypervisor phase (commit, cleanup, or ended).
fn past_hypervisor(st: &MigrationStatus) -> bool {
    matches!(
        st.phase,
        MigrationPhase::ExpectCommitAcks | MigrationPhase::ExpectCleanupAcks
    ) || st.phase.is_terminal()
}

/// `srmig controller` arguments that make a controller process drive the lab's QEMU: the
/// QMP endpoints of S and D, the hook relaying to the lab's launcher, the driver settings.
fn qmp_args(
    plan: &Plan,
    dir: &Path,
    srmig: &Path,
    qemu: &QemuVm,
) -> Result<Vec<String>, OrchestrateError> {
    let service = qemu.service.as_ref().ok_or_else(|| {
        OrchestrateError::Options("no QEMU launcher relay for the controller process".into())
    })?;
    let hook = super::hook::write_hook_script(dir, srmig, service.path())?;
    let mut args = vec!["--hypervisor".to_owned(), "qmp".to_owned()];
    for role in [HostRole::Source, HostRole::Destination] {
        let host = plan.host(role).name;
        args.push("--qmp-endpoint".to_owned());
        args.push(format!(
            "{host}={}",
            qemu::QemuPaths::of(dir, host).qmp.display()
        ));
    }
    args.extend([
        "--qemu-launcher".to_owned(),
        hook.display().to_string(),
        "--qmp-migration-timeout-ms".to_owned(),
        qemu.settings.migration_timeout.as_millis().to_string(),
    ]);
    if let Some(bw) = qemu
        .settings
        .parameters
        .as_ref()
        .and_then(|p| p.max_bandwidth)
    {
        args.extend(["--qmp-max-bandwidth".to_owned(), bw.to_string()]);
    }
    Ok(args)
}

/// Microseconds since the Unix epoch (wall clock, as QEMU's event timestamps).
fn wall_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, micros)
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Default work directories are `<temp>/srmig-lab-<run id>`.
const WORK_DIR_PREFIX: &str = "srmig-lab-";

/// Removes default work directories of runs that no longer exist (no registry file: the run
/// ended, or a signal ended it after its teardown, which cannot remove the directory of an
/// in-process controller and srmigd logs).
fn remove_stale_work_dirs(temp: &Path, registry: &Path) {
    let Ok(entries) = std::fs::read_dir(temp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(run_id) = name.to_str().and_then(|n| n.strip_prefix(WORK_DIR_PREFIX)) else {
            continue;
        };
        let valid_id = !run_id.is_empty()
            && run_id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if valid_id
            && entry.file_type().is_ok_and(|t| t.is_dir())
            && !registry.join(format!("{run_id}.json")).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn remove_dir(dir: &Path, keep: bool) {
    if !keep && std::env::var_os("SRMIG_LAB_KEEP_DIR").is_none() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The migrating VM's part of the topology.
enum TopologyVm {
    /// Each migrating VM's namespace, its srmigd port (at its home host) and the port's
    /// peer `att` in the VM's hypervisor namespace.
    Netns(Vec<NetnsVm>),
    /// The hypervisors' namespace QEMU runs in (loopback up, for the migration stream).
    Qemu { hv: Netns },
}

/// Creates namespaces, links, addresses, routes and neighbors.
fn build_topology(
    lab: &Lab,
    plan: &Plan,
    qemu: bool,
) -> Result<(Spaces, TopologyVm), OrchestrateError> {
    let router = lab.add_netns(ROUTER_NS)?;
    let mut hosts = Vec::with_capacity(plan.hosts.len());
    for host in &plan.hosts {
        let ns = lab.add_netns(host.name)?;
        // Interfaces created in or moved into a host namespace have IPv6 off from the
        // start: srmigd owns them, the host kernel stays out (no link-local, NDP, MLD).
        ns.set_sysctl("net/ipv6/conf/default/disable_ipv6", "1")?;
        hosts.push(ns);
    }
    let client = lab.add_netns(plan.client.name)?;
    // The management network: the controller's namespace, a link to each host. The
    // controller reaches srmigd, and srmigd the controller, only over it (mutual TLS).
    let ctl = lab.add_netns(CONTROL_NS)?;
    let mut mgmt = Vec::new();
    for (i, ns) in hosts.iter().enumerate() {
        let (ctl_addr, host_addr) = mgmt_addrs(i + 1);
        let v = lab.add_veth(&ctl, &format!("m{}", i + 1), ns, MGMT_IFNAME)?;
        lab.add_addr(
            &v.a,
            ipnet::IpNet::V4(
                ipnet::Ipv4Net::new(ctl_addr, 24)
                    .map_err(|e| OrchestrateError::Options(e.to_string()))?,
            ),
        )?;
        lab.add_addr(
            &v.b,
            ipnet::IpNet::V4(
                ipnet::Ipv4Net::new(host_addr, 24)
                    .map_err(|e| OrchestrateError::Options(e.to_string()))?,
            ),
        )?;
        mgmt.push(v.a);
        mgmt.push(v.b);
    }
    let c = hosts[HostRole::Client.index()].clone();

    let mut up = Vec::new();
    // Underlay: router <-> each host's uplink.
    for (host, ns) in plan.hosts.iter().zip(&hosts) {
        let link = veth(
            lab,
            (&router, &host.router_ifname(), host.router_mac()),
            (ns, UPLINK_IFNAME, host.uplink_mac()),
        )?;
        lab.add_addr(&link.0, ipnet::IpNet::V6(router_net(host)?))?;
        // No offloads on the router's side of the underlay: srmigd's uplinks use AF_XDP
        // where they can, which carries frames of one MTU, never GSO super-frames.
        router.exec(
            "ethtool",
            &[
                "-K",
                &link.0.ifname,
                "tso",
                "off",
                "gso",
                "off",
                "gro",
                "off",
            ],
        )?;
        // A switch port's buffer on the router's side. The host's end runs XDP (srmigd's
        // AF_XDP uplink), so the veth hands it frames through a 256-frame ring; without a
        // qdisc a burst beyond that ring is dropped (`tx_dropped` here, seen by no srmigd
        // counter): a TCP flow's burst into a host just as it releases a VM's buffer lost
        // 26 frames in one run of six (docs/order.md, session 36). With a qdisc, Linux 6.16
        // and later stop the queue while the ring is full and the frames wait here, as they
        // would in a switch (up to 4096: 6 MB of 1500-byte frames).
        router.exec(
            "tc",
            &[
                "qdisc",
                "replace",
                "dev",
                &link.0.ifname,
                "root",
                "pfifo",
                "limit",
                "4096",
            ],
        )?;
        up.push(link.0);
        up.push(link.1);
    }
    lab.enable_forwarding(&router)?;
    // The client VM: its eth0 and the host-side end (the srmigd VM port) directly.
    let (client_port, client_eth) = veth(
        lab,
        (&c, plan.client.port, plan.client.port_mac),
        (&client, VM_IFNAME, plan.client.mac),
    )?;
    // The migrating VMs. QEMU (one VM): its hypervisors' namespace, loopback up (migration
    // stream); srmigd attaches the VM through QEMU's sockets, no link. Netns: eth0 <-> nic
    // [hv] att <-> vmN-port (at its home host), tc between nic and att.
    let mut qemu_hv = None;
    let mut netns_vms = Vec::new();
    let mut vm_eths = vec![(&plan.client, client_eth.clone())];
    if qemu {
        let hv = lab.add_netns(&plan.vm.hv_ns())?;
        hv.ip(&["link", "set", "dev", "lo", "up"])?;
        qemu_hv = Some(hv);
    } else {
        for (i, vm_plan) in plan.vms().enumerate() {
            let hv = lab.add_netns(&vm_plan.hv_ns())?;
            let vm = lab.add_netns(vm_plan.name)?;
            hv.set_sysctl("net/ipv6/conf/default/disable_ipv6", "1")?;
            let (nic_mac, att_mac) = vm_plan.hv_macs();
            let (vm_eth, nic) = veth(lab, (&vm, VM_IFNAME, vm_plan.mac), (&hv, HV_NIC, nic_mac))?;
            let home = &hosts[plan.home(i).index()];
            let (att, vm_port) = veth(
                lab,
                (&hv, HV_ATT, att_mac),
                (home, vm_plan.port, vm_plan.port_mac),
            )?;
            for (from, to) in [(HV_NIC, HV_ATT), (HV_ATT, HV_NIC)] {
                hv.exec("tc", &["qdisc", "add", "dev", from, "clsact"])?;
                hv.exec(
                    "tc",
                    &[
                        "filter", "add", "dev", from, "ingress", "protocol", "all", "u32", "match",
                        "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", to,
                    ],
                )?;
            }
            up.extend([vm_eth.clone(), nic, att.clone(), vm_port.clone()]);
            vm_eths.push((vm_plan, vm_eth));
            netns_vms.push(NetnsVm {
                ns: vm,
                port: vm_port,
                att,
            });
        }
    }
    let mut vm_ends = Vec::new();
    for (vm_plan, vm_end) in &vm_eths {
        let mtu = plan.vm_mtu().to_string();
        vm_end
            .netns
            .ip(&["link", "set", "dev", VM_IFNAME, "mtu", &mtu])?;
        // TSO/GSO stay on, as in every real guest: srmigd segments the super-frames.
        lab.add_addr(
            vm_end,
            ipnet::IpNet::V6(
                ipnet::Ipv6Net::new(vm_plan.address, 128)
                    .map_err(|e| OrchestrateError::Options(e.to_string()))?,
            ),
        )?;
        lab.add_addr(
            vm_end,
            ipnet::IpNet::V4(
                ipnet::Ipv4Net::new(vm_plan.address_v4, 32)
                    .map_err(|e| OrchestrateError::Options(e.to_string()))?,
            ),
        )?;
        vm_ends.push(vm_end.clone());
    }
    drop(vm_eths);
    up.extend([client_port, client_eth]);
    up.extend(mgmt);
    for end in &up {
        lab.set_up(end)?;
    }
    for end in &up {
        lab.wait_up(end, SETUP_TIMEOUT)?;
    }
    // After `up` (an admin-down wipes them): routes and static neighbors.
    for host in &plan.hosts {
        let to_host = LinkEnd {
            netns: router.clone(),
            ifname: host.router_ifname(),
        };
        lab.add_neighbor(
            &to_host,
            std::net::IpAddr::V6(host.underlay()),
            host.uplink_mac(),
        )?;
        lab.add_route(
            &router,
            &Route {
                dst: Some(ipnet::IpNet::V6(host.locator())),
                via: Some(std::net::IpAddr::V6(host.underlay())),
                dev: Some(host.router_ifname()),
                family_v6: true,
            },
        )?;
    }
    for vm_end in &vm_ends {
        lab.add_neighbor(vm_end, std::net::IpAddr::V6(GATEWAY_ADDR), GATEWAY_MAC)?;
        lab.add_route(
            &vm_end.netns,
            &Route::default_v6(std::net::IpAddr::V6(GATEWAY_ADDR), Some(VM_IFNAME)),
        )?;
        // IPv4: the gateway is on-link (the VM's own address is a /32) and is resolved with
        // ARP, answered by srmigd: no static neighbour entry, unlike IPv6's.
        let gw4 = GATEWAY_ADDR_V4.to_string();
        vm_end.netns.ip(&[
            "-4", "route", "replace", &gw4, "dev", VM_IFNAME, "scope", "link",
        ])?;
        vm_end.netns.ip(&[
            "-4", "route", "replace", "default", "via", &gw4, "dev", VM_IFNAME,
        ])?;
    }
    let vm = match qemu_hv {
        None => TopologyVm::Netns(netns_vms),
        Some(hv) => TopologyVm::Qemu { hv },
    };
    Ok((Spaces { hosts, client, ctl }, vm))
}

fn router_net(host: &HostPlan) -> Result<ipnet::Ipv6Net, OrchestrateError> {
    ipnet::Ipv6Net::new(host.router_addr(), 64)
        .map_err(|e| OrchestrateError::Options(e.to_string()))
}

/// A veth `a <-> b` with the given names and MACs.
fn veth(
    lab: &Lab,
    a: (&Netns, &str, MacAddr),
    b: (&Netns, &str, MacAddr),
) -> Result<(LinkEnd, LinkEnd), OrchestrateError> {
    let v = lab.add_veth(a.0, a.1, b.0, b.1)?;
    lab.set_mac(&v.a, a.2)?;
    lab.set_mac(&v.b, b.2)?;
    Ok((v.a, v.b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_link_counters_come_from_ip_s_link() {
        let json = r#"[{"ifname":"lo","stats64":{"rx":{"bytes":0,"packets":0,"errors":0,"dropped":0},"tx":{"bytes":0,"packets":0,"errors":0,"dropped":0}}},
            {"ifname":"up0","stats64":{"rx":{"errors":1,"dropped":7},"tx":{"errors":0,"dropped":3}}},
            {"stats64":{}}]"#;
        let got: std::collections::BTreeMap<String, u64> =
            link_drop_counters(json, "d").into_iter().collect();
        assert_eq!(got["up0@d.rx_dropped"], 7);
        assert_eq!(got["up0@d.tx_dropped"], 3);
        assert_eq!(got["up0@d.rx_errors"], 1);
        assert_eq!(got["lo@d.tx_errors"], 0);
        assert_eq!(got.len(), 8);
        assert!(link_drop_counters("not json", "d").is_empty());
    }

    #[test]
    fn vm_stack_counters_come_from_tcpext() {
        let netstat = "TcpExt: SyncookiesSent TCPOFOQueue TCPOFODrop TCPBacklogDrop TCPDSACKOldSent TCPDSACKOfoSent\n\
                       TcpExt: 0 7 1 2 3 4\n\
                       IpExt: InNoRoutes InTruncatedPkts\n\
                       IpExt: 5 6\n";
        let c = vm_stack_counters(netstat);
        assert_eq!(c["tcp_ofo_queued"], 7);
        assert_eq!(c["tcp_ofo_drops"], 1);
        assert_eq!(c["tcp_backlog_drops"], 2);
        assert_eq!(c["tcp_dsack_sent"], 7);
        // Not in this kernel's list.
        assert_eq!(c["tcp_rcvq_drops"], -1);
        assert_eq!(c.len(), 5);
        assert!(vm_stack_counters("").values().all(|&v| v == -1));
    }

    /// A wall-clock moment 2 ms ago is an instant 2 ms (and a little) before now; a moment
    /// after now is now, and so is no moment.
    #[test]
    fn wall_clock_moments_map_to_instants() {
        let wall_us = |d: Duration| {
            u64::try_from(
                (std::time::SystemTime::now() - d)
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("after 1970")
                    .as_micros(),
            )
            .expect("fits")
        };
        let us = wall_us(Duration::from_millis(2));
        let now = Instant::now();
        let at = applied_at(Some(us), now);
        let back = now - at;
        // The anchor is exact to half its 2 µs bracket, so 2 ms less that, at worst.
        assert!(
            back >= Duration::from_micros(1_990) && back < Duration::from_secs(1),
            "{back:?}"
        );
        let later = wall_us(Duration::ZERO) + 5_000_000;
        assert_eq!(applied_at(Some(later), now), now);
        assert_eq!(applied_at(None, now), now);
    }

    #[test]
    fn loss_counters_merge_drops_and_port_losses() {
        let status = serde_json::json!({
            "drops": {"NoSid": 2},
            "fence": {"bypassed": 4, "held": 9},
            "ports": [
                {"name": "vm1-port", "io": {"tx_queue_full": 3, "rx_frames": 100, "fast_forced_enables": 1}},
                {"name": "up0", "io": {"tx_errors": 0}}
            ]
        });
        let all = loss_counters(&status);
        assert_eq!(all["NoSid"], 2);
        assert_eq!(all["vm1-port.tx_queue_full"], 3);
        assert_eq!(all["up0.tx_errors"], 0);
        assert!(all.get("vm1-port.rx_frames").is_none());
        assert_eq!(all["fence.bypassed"], 4);
        assert_eq!(all["vm1-port.fast_forced_enables"], 1);
        assert!(
            all.get("fence.held").is_none(),
            "holding in order is no anomaly"
        );
    }

    #[test]
    fn stale_work_dirs_of_ended_runs_are_removed() {
        let root = std::env::temp_dir().join(format!("srmig-testbed-{}", std::process::id()));
        let (temp, registry) = (root.join("tmp"), root.join("registry"));
        for d in [
            "srmig-lab-dead1",
            "srmig-lab-live1",
            "srmig-lab-Bad",
            "other",
        ] {
            std::fs::create_dir_all(temp.join(d)).expect("dir");
        }
        std::fs::create_dir_all(&registry).expect("dir");
        std::fs::write(registry.join("live1.json"), "{}").expect("write");
        remove_stale_work_dirs(&temp, &registry);
        assert!(!temp.join("srmig-lab-dead1").exists());
        assert!(temp.join("srmig-lab-live1").exists());
        assert!(temp.join("srmig-lab-Bad").exists());
        assert!(temp.join("other").exists());
        std::fs::remove_dir_all(&root).expect("cleanup");
    }
}
