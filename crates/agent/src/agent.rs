//! The agent: the engine plus the control state around it (node config, host config in force,
//! API SIDs, VM state reports). No I/O: srmigd's dataplane loop owns an `Agent` and calls it
//! between batches, so every change here is atomic with respect to packets.

use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv6Addr;

use ipnet::IpNet;
use srmig_api::{
    Ack, ApiError, ApiErrorCode, DeltaError, FenceReport, HostConfig, HostConfigDelta, HostId,
    SidEntry, Timestamp, VmStateReport,
};
use srmig_dataplane::{
    ConfigError, Dataplane, Instant, NodeConfig, PolicyConfig, PortId, PortKind, SidConfig,
    Steering, VmId, VmState,
};
use tracing::{debug, info, warn};

use srmig_api::{
    BufferStatus, DropCounts, HostStatus, IcmpStatus, PolicyStatus, PortIoStats, PortStatus,
    SidStatus, Traffic, VmStatus,
};
use srmig_dataplane::PacketBytes;

use crate::apply::{mapping_plan, plan, Plan, PlanError, POLICY_PREFIX};

/// Why a request was refused; each maps to one HTTP status and [`ApiErrorCode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    /// The request is invalid for this node (400).
    #[error("{0}")]
    Invalid(String),
    /// The host config is older than (or conflicts with) the one in force (409).
    #[error("{0}")]
    Stale(String),
    /// A host config delta whose base is not the version in force (409, `base-mismatch`: the
    /// sender must send the whole config).
    #[error("{0}")]
    BaseMismatch(String),
    /// No VM of that name here (404).
    #[error("no VM named \"{0}\" on this host")]
    UnknownVm(String),
    /// No SID at that address (404).
    #[error("no SID installed at {0}")]
    UnknownSid(Ipv6Addr),
    /// A SID already exists at that address (409).
    #[error("a SID is already installed at {0}; delete it first")]
    SidExists(Ipv6Addr),
    /// The engine refused a change it had validated (500; the previous state was restored).
    #[error("internal error: {0}")]
    Internal(String),
}

impl AgentError {
    /// The HTTP status code.
    pub fn http_status(&self) -> u16 {
        match self {
            AgentError::Invalid(_) => 400,
            AgentError::Stale(_) | AgentError::SidExists(_) | AgentError::BaseMismatch(_) => 409,
            AgentError::UnknownVm(_) | AgentError::UnknownSid(_) => 404,
            AgentError::Internal(_) => 500,
        }
    }

    /// The JSON error body.
    pub fn to_api(&self) -> ApiError {
        let code = match self {
            AgentError::Invalid(_) => ApiErrorCode::InvalidRequest,
            AgentError::Stale(_) | AgentError::SidExists(_) => ApiErrorCode::Conflict,
            AgentError::BaseMismatch(_) => ApiErrorCode::BaseMismatch,
            AgentError::UnknownVm(_) => ApiErrorCode::UnknownVm,
            AgentError::UnknownSid(_) => ApiErrorCode::InvalidRequest,
            AgentError::Internal(_) => ApiErrorCode::Internal,
        };
        ApiError::new(code, self.to_string())
    }
}

impl From<PlanError> for AgentError {
    fn from(e: PlanError) -> Self {
        AgentError::Invalid(e.to_string())
    }
}

/// Where a VM state change came from (for logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateSource {
    /// The VM port's link.
    Link,
    /// The control API.
    Api,
    /// The hypervisor (QMP run state and the QEMU stream attachment).
    Hypervisor,
}

fn to_api_state(s: VmState) -> srmig_api::VmState {
    match s {
        VmState::Absent => srmig_api::VmState::Absent,
        VmState::Running => srmig_api::VmState::Running,
        VmState::Paused => srmig_api::VmState::Paused,
    }
}

fn from_api_state(s: srmig_api::VmState) -> VmState {
    match s {
        srmig_api::VmState::Absent => VmState::Absent,
        srmig_api::VmState::Running => VmState::Running,
        srmig_api::VmState::Paused => VmState::Paused,
    }
}

/// Every drop reason with its count, for the status. The list of names is built once (sorted
/// by name, as `drop_counts_by_name` yields them) and copied for each status, which takes the
/// counts in the same order.
fn drop_counts(c: &srmig_dataplane::CountersView<'_>) -> DropCounts {
    static NAMES: std::sync::OnceLock<DropCounts> = std::sync::OnceLock::new();
    let mut drops = NAMES
        .get_or_init(|| {
            c.drop_counts_by_name()
                .map(|(r, _)| (r.as_str(), 0))
                .collect()
        })
        .clone();
    for (slot, (_, n)) in drops.counts_mut().zip(c.drop_counts_by_name()) {
        *slot = n;
    }
    drops
}

fn traffic(p: PacketBytes) -> Traffic {
    Traffic {
        packets: p.packets,
        bytes: p.bytes,
    }
}

/// The I/O side of one port, as the daemon that owns its socket sees it (for the status).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortInfo {
    /// Current ifindex of the interface, if it exists.
    pub ifindex: Option<u32>,
    /// Whether a socket is open on it.
    pub attached: bool,
    /// I/O counters.
    pub io: PortIoStats,
    /// `xdp` or `packet` while attached.
    pub socket: Option<&'static str>,
    /// Whether the XDP fast path forwards on the port.
    pub fast_path: bool,
    /// How the port's fast path program is attached (`xdp`, `tcx`, `clsact`), if it is.
    pub fast_path_hook: Option<&'static str>,
    /// The interface's MTU, as read when the socket was opened.
    pub mtu: Option<u32>,
}

/// Maps the engine's clock to the wall clock, for the timestamps of VM state reports: the
/// Unix time in milliseconds at `Instant::ZERO`. The daemon reads the wall clock once, when
/// it starts its monotonic clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WallClock {
    /// Unix time (microseconds) at `Instant::ZERO`.
    pub unix_us_at_zero: u64,
}

impl WallClock {
    /// The wall-clock time of `now` (milliseconds).
    pub fn at(&self, now: Instant) -> Timestamp {
        Timestamp(self.at_us(now) / 1_000)
    }

    /// The wall-clock time of `now`, microseconds since the Unix epoch.
    pub fn at_us(&self, now: Instant) -> u64 {
        self.unix_us_at_zero.saturating_add(now.as_nanos() / 1_000)
    }
}

/// The engine and its control state.
#[derive(Debug, Clone)]
pub struct Agent {
    dp: Dataplane,
    host: HostId,
    base: NodeConfig,
    applied: Option<HostConfig>,
    /// Which VM `applied` maps each address to (checking a delta is then O(VMs in it)).
    owners: std::collections::HashMap<std::net::IpAddr, srmig_api::VmId>,
    /// Plan in force (node config + host config + API SIDs).
    plan: Plan,
    extra_sids: BTreeMap<Ipv6Addr, SidConfig>,
    /// VM id and port of each node-config VM, in configuration order.
    vms: Vec<(VmId, PortId)>,
    reports: VecDeque<VmStateReport>,
    clock: WallClock,
    boot_epoch: u64,
    release_latency: srmig_api::ReleaseLatencyStatus,
    /// Per port (by index): when the I/O layer last handed it a frame
    /// ([`Agent::note_delivered`]).
    last_delivery: Vec<Option<Instant>>,
    /// Per VM (as `vms`): its counters at its previous release report (the next one reports
    /// what changed since).
    release_baseline: Vec<srmig_dataplane::VmCounters>,
    /// Per VM (as `vms`): when its current state was applied (`None`: never changed here).
    state_since: Vec<Option<Instant>>,
    /// Release reports not yet polled (bounded: [`MAX_RELEASE_REPORTS`]).
    releases: VecDeque<srmig_api::ReleaseReport>,
}

/// Release reports kept until the I/O layer polls them; beyond, the oldest is dropped (one
/// per resume: only a burst of VM resumes without a poll in between could reach it).
const MAX_RELEASE_REPORTS: usize = 256;

impl Agent {
    /// Builds the engine from the node config. `boot_epoch` must differ at every start of the
    /// daemon (the controller sends its full config again when it changes); report times are
    /// relative to `Instant::ZERO` until [`Agent::set_clock`].
    pub fn new(host: HostId, base: NodeConfig, boot_epoch: u64) -> Result<Agent, ConfigError> {
        let dp = Dataplane::new(base.clone())?;
        let mut vms = Vec::with_capacity(base.vms.len());
        for (i, v) in base.vms.iter().enumerate() {
            let (Some(id), Some(port)) = (dp.vm_id(&v.name), dp.port_id(&v.port)) else {
                return Err(ConfigError::Invalid {
                    path: format!("vms[{i}]"),
                    reason: "VM or port missing from the engine".into(),
                });
            };
            vms.push((id, port));
        }
        let extra = BTreeMap::new();
        Ok(Agent {
            clock: WallClock::default(),
            boot_epoch,
            plan: Plan::base_only(&base, &extra),
            dp,
            host,
            base,
            applied: None,
            owners: std::collections::HashMap::new(),
            extra_sids: extra,
            release_baseline: vec![srmig_dataplane::VmCounters::default(); vms.len()],
            state_since: vec![None; vms.len()],
            vms,
            reports: VecDeque::new(),
            release_latency: srmig_api::ReleaseLatencyStatus::new(),
            last_delivery: Vec::new(),
            releases: VecDeque::new(),
        })
    }

    /// Sets how the engine's clock maps to Unix time (report timestamps).
    pub fn set_clock(&mut self, clock: WallClock) {
        self.clock = clock;
    }

    /// The engine.
    pub fn dataplane(&mut self) -> &mut Dataplane {
        &mut self.dp
    }

    /// The host name.
    pub fn host(&self) -> &HostId {
        &self.host
    }

    /// The node config.
    pub fn base(&self) -> &NodeConfig {
        &self.base
    }

    /// The controller's host config in force (`None` before the first one), as applied: a
    /// delta's result is the config it made.
    pub fn host_config(&self) -> Option<&HostConfig> {
        self.applied.as_ref()
    }

    /// The next VM state change to report to the controller, oldest first.
    pub fn poll_report(&mut self) -> Option<VmStateReport> {
        self.reports.pop_front()
    }

    /// The next commit-fence marker that reached one of this host's VMs' End.SBUF, as a
    /// report for the controller (whose cleanup waits for every ingress's marker).
    pub fn poll_fence_report(&mut self) -> Option<FenceReport> {
        while let Some(a) = self.dp.poll_fence_arrival() {
            let Some(i) = self.vms.iter().position(|(id, _)| *id == a.vm) else {
                continue;
            };
            let Ok(vm) = srmig_api::VmId::new(self.base.vms[i].name.clone()) else {
                continue;
            };
            return Some(FenceReport {
                vm,
                host: self.host.clone(),
                ingress: a.ingress,
                at: self.clock.at(a.at),
            });
        }
        None
    }

    /// Another worker of this srmigd received the commit-fence marker `report` describes
    /// (`--workers N`): opens this worker's (VM, ingress) pair as the marker would
    /// ([`srmig_dataplane::Dataplane::fence_marker_relayed`]). The caller has processed every
    /// frame it received before. Returns whether a pair was opened (`false` for a VM unknown
    /// or not fenced here, or a pair already open).
    pub fn fence_marker_relayed(&mut self, now: Instant, report: &FenceReport) -> bool {
        let Some(i) = self
            .base
            .vms
            .iter()
            .position(|v| v.name == report.vm.as_str())
        else {
            return false;
        };
        let Some(&(id, _)) = self.vms.get(i) else {
            return false;
        };
        self.dp.fence_marker_relayed(now, id, report.ingress)
    }

    fn change_vm_state(&mut self, now: Instant, i: usize, state: VmState, source: StateSource) {
        let (vm, _) = self.vms[i];
        let old = self.dp.vm_state(vm);
        if old == Some(state) {
            return;
        }
        if let Err(e) = self.dp.handle_vm_state(now, vm, state) {
            warn!(vm = %self.base.vms[i].name, error = %e, "VM state change refused");
            return;
        }
        if let Some(since) = self.state_since.get_mut(i) {
            *since = Some(now);
        }
        let held = self.dp.counters().buffer_occupancy(vm).packets;
        info!(
            vm = %self.base.vms[i].name,
            from = ?old,
            to = ?state,
            source = ?source,
            held,
            "VM state changed"
        );
        if let Ok(name) = srmig_api::VmId::new(self.base.vms[i].name.clone()) {
            let last_delivery_us = match state {
                VmState::Paused => self
                    .last_delivery
                    .get(self.vms[i].1.index())
                    .copied()
                    .flatten()
                    .map(|t| self.clock.at_us(t)),
                _ => None,
            };
            self.reports.push_back(VmStateReport {
                vm: name,
                host: self.host.clone(),
                state: to_api_state(state),
                at: self.clock.at(now),
                boot_epoch: Some(self.boot_epoch),
                last_delivery_us,
            });
        }
    }

    /// A VM port was attached (`up`) or detached: the VMs on it run, or pause.
    pub fn port_attachment(&mut self, now: Instant, port: PortId, up: bool) {
        for i in 0..self.vms.len() {
            if self.vms[i].1 != port {
                continue;
            }
            let cur = self.dp.vm_state(self.vms[i].0);
            let next = match (up, cur) {
                (true, _) => VmState::Running,
                (false, Some(VmState::Running)) => VmState::Paused,
                (false, _) => continue,
            };
            self.change_vm_state(now, i, next, StateSource::Link);
        }
    }

    /// The state of the VMs on `port` (the first one's; `None` if no VM uses the port).
    pub fn port_vm_state(&self, port: PortId) -> Option<VmState> {
        self.vms
            .iter()
            .find(|(_, p)| *p == port)
            .and_then(|(vm, _)| self.dp.vm_state(*vm))
    }

    /// The VMs attached to `port`.
    pub fn vms_on_port(&self, port: PortId) -> impl Iterator<Item = VmId> + '_ {
        self.vms
            .iter()
            .filter(move |(_, p)| *p == port)
            .map(|(vm, _)| *vm)
    }

    /// The VM on `port` a frame sent there was for: the one whose MAC is the frame's
    /// destination, else the port's first VM.
    pub fn vm_for_frame(&self, port: PortId, frame: &[u8]) -> Option<VmId> {
        let dst = frame.get(..6);
        let mut first = None;
        for (i, (vm, p)) in self.vms.iter().enumerate() {
            if *p != port {
                continue;
            }
            if first.is_none() {
                first = Some(*vm);
            }
            if dst == Some(&self.base.vms[i].mac.0[..]) {
                return Some(*vm);
            }
        }
        first
    }

    /// Sends `frame`, which was delivered to `vm`'s port but never reached the VM (it
    /// stopped), toward the VM's current location ([`Dataplane::reinject_for_vm`]); the frame
    /// to transmit, if any, is left in `out`.
    pub fn reinject_for_vm(
        &mut self,
        now: Instant,
        vm: VmId,
        frame: &[u8],
        out: &mut srmig_dataplane::PacketBuf,
    ) -> Option<srmig_dataplane::Verdict> {
        Some(self.dp.reinject_for_vm(now, vm, frame, out))
    }

    /// Sets every VM on `port` to `state` (reported when it changes).
    pub fn set_port_vm_state(
        &mut self,
        now: Instant,
        port: PortId,
        state: VmState,
        source: StateSource,
    ) {
        for i in 0..self.vms.len() {
            if self.vms[i].1 == port {
                self.change_vm_state(now, i, state, source);
            }
        }
    }

    /// `PUT /v1/vms/{name}/state`: sets a VM's state (reported if it changes).
    pub fn set_vm_state(
        &mut self,
        now: Instant,
        name: &str,
        state: srmig_api::VmState,
    ) -> Result<VmStatus, AgentError> {
        let i = self
            .base
            .vms
            .iter()
            .position(|v| v.name == name)
            .ok_or_else(|| AgentError::UnknownVm(name.to_owned()))?;
        self.change_vm_state(now, i, from_api_state(state), StateSource::Api);
        Ok(self.vm_status(i))
    }

    /// Applies a host config (see [`crate::apply`]); atomic: on any error nothing changes.
    ///
    /// Versions are (`epoch`, `generation`) pairs, compared lexicographically: a config of a
    /// newer controller epoch is applied whatever its generation (a controller on a new store
    /// is never locked out by what an older one pushed); within an epoch, an older generation
    /// is refused, and the same one is acknowledged again if its content is the same.
    pub fn apply_host_config(&mut self, hc: HostConfig) -> Result<Ack, AgentError> {
        if hc.epoch > srmig_api::MAX_EPOCH {
            return Err(AgentError::Invalid(format!(
                "epoch {} is above the highest epoch a controller may use ({}): refused, so that \
                 no config can lock this host against later ones",
                hc.epoch,
                srmig_api::MAX_EPOCH
            )));
        }
        if let Some(cur) = &self.applied {
            let (new, old) = (hc.version(), cur.version());
            if new < old {
                return Err(AgentError::Stale(format!(
                    "epoch {} generation {} is older than epoch {} generation {} in force",
                    new.0, new.1, old.0, old.1
                )));
            }
            if new == old {
                if hc.same_state(cur) {
                    return Ok(self.ack(old));
                }
                return Err(AgentError::Stale(format!(
                    "epoch {} generation {} is in force with different content; send a newer generation",
                    new.0, new.1
                )));
            }
        }
        let next = plan(&self.base, &hc, &self.extra_sids)?;
        self.install_plan(next)?;
        let markers = fence_markers(self.applied.as_ref(), &hc.mappings);
        self.send_fence_markers(markers);
        self.sync_fences(&hc);
        info!(
            epoch = hc.epoch,
            generation = hc.generation,
            "host config applied"
        );
        let v = hc.version();
        self.owners = hc
            .mappings
            .iter()
            .flat_map(|m| m.addresses.iter().map(|a| (*a, m.vm.clone())))
            .collect();
        self.applied = Some(hc);
        Ok(self.ack(v))
    }

    /// Applies a host config delta (`PATCH /v1/config`, see [`srmig_api::HostConfigDelta`]);
    /// atomic like [`Agent::apply_host_config`].
    ///
    /// The delta must apply to the version in force (else [`AgentError::BaseMismatch`]: the
    /// controller then sends the whole config); the delta that made the version in force is
    /// acknowledged again (its reply may have been lost). A delta that changes only mappings
    /// is installed incrementally: the named VMs' policies and mappings, validated by the
    /// engine as they are installed, O(VMs in the delta) instead of O(all VMs); one that
    /// changes the local VMs or the SID table goes through the whole-config path.
    pub fn apply_host_config_delta(&mut self, delta: &HostConfigDelta) -> Result<Ack, AgentError> {
        let Some(cur) = &self.applied else {
            return Err(AgentError::BaseMismatch(format!(
                "no host config is in force here, the delta applies to epoch {} generation {}; send the whole config",
                delta.epoch, delta.base_generation
            )));
        };
        if delta.version() == cur.version() {
            return Ok(self.ack(cur.version()));
        }
        if delta.base() != cur.version() {
            let e = DeltaError::BaseMismatch {
                base: delta.base(),
                held: cur.version(),
            };
            return Err(AgentError::BaseMismatch(format!(
                "{e}; send the whole config"
            )));
        }
        delta
            .check()
            .map_err(|e| AgentError::Invalid(e.to_string()))?;
        if delta.local_vms.is_some() || delta.sids.is_some() {
            let mut next = cur.clone();
            next.apply_delta(delta)
                .map_err(|e| AgentError::Invalid(e.to_string()))?;
            return self.apply_host_config(next);
        }
        // Mappings only: checked, installed and recorded in place, O(VMs in the delta).
        cur.validate_delta_with(delta, |addr| self.owners.get(addr))
            .map_err(|e| {
                AgentError::Invalid(format!("the config the delta makes is invalid: {e}"))
            })?;
        let (policies, mappings) = mapping_plan(&self.base, &delta.mappings)?;
        // The prefixes the delta's VMs had: withdrawn unless mapped again.
        let old: Vec<IpNet> = delta
            .mappings
            .iter()
            .map(|m| &m.vm)
            .chain(&delta.removed)
            .filter_map(|vm| cur.mapping(vm))
            .flat_map(|m| m.addresses.iter().map(|a| IpNet::from(*a)))
            .collect();
        if let Err(e) = self.install_mappings(&policies, &old, &mappings) {
            warn!(error = %e, "the engine refused a host config delta; restoring the previous state");
            // What may have changed: the delta's prefixes; the plan in force is unchanged.
            let touched = Plan {
                policies: Vec::new(),
                mappings: mappings.iter().cloned().collect(),
                sids: self.plan.sids.clone(),
            };
            let prev = self.plan.clone();
            if let Err(e2) = self.install_diff(&touched, &prev) {
                warn!(error = %e2, "restoring the previous plan failed");
            }
            return Err(AgentError::Invalid(format!(
                "the engine refused the delta: {e}"
            )));
        }
        let plan = &mut self.plan;
        for p in &old {
            plan.mappings.remove(p);
        }
        plan.mappings.extend(mappings);
        // The policies of the delta's VMs that were encapsulated and are no longer (native
        // now, or removed) leave the plan, as a whole config's plan would not have them.
        let mut retired = Vec::new();
        let unencapsulated = delta
            .mappings
            .iter()
            .filter(|m| m.steering == srmig_api::Steering::Native)
            .map(|m| &m.vm)
            .chain(&delta.removed);
        for vm in unencapsulated {
            let was_encapsulated = self
                .applied
                .as_ref()
                .and_then(|a| a.mapping(vm))
                .is_some_and(|m| m.steering != srmig_api::Steering::Native);
            if !was_encapsulated {
                continue;
            }
            let name = format!("{POLICY_PREFIX}{vm}");
            let at = match plan.policies.binary_search_by(|x| x.name.cmp(&name)) {
                Ok(at) => Some(at),
                Err(_) => plan.policies.iter().position(|x| x.name == name),
            };
            if let Some(at) = at {
                plan.policies.remove(at);
                retired.push(name);
            }
        }
        for p in policies {
            // Kept sorted by name where it was (binary search), else searched linearly.
            let at = match plan.policies.binary_search_by(|x| x.name.cmp(&p.name)) {
                Ok(at) => Ok(at),
                Err(at) => plan
                    .policies
                    .iter()
                    .position(|x| x.name == p.name)
                    .ok_or(at),
            };
            match at {
                Ok(at) => plan.policies[at] = p,
                Err(at) => plan.policies.insert(at, p),
            }
        }
        // The policies that left the plan leave the engine too (nothing of the plan steers
        // into them any more), as `install_diff` does for a whole config.
        self.retire_policies(retired.iter().map(String::as_str));
        for vm in delta.mappings.iter().map(|m| &m.vm).chain(&delta.removed) {
            if let Some(m) = self.applied.as_ref().and_then(|a| a.mapping(vm)) {
                for a in &m.addresses {
                    self.owners.remove(a);
                }
            }
        }
        for m in &delta.mappings {
            for a in &m.addresses {
                self.owners.insert(*a, m.vm.clone());
            }
        }
        let markers = fence_markers(self.applied.as_ref(), &delta.mappings);
        self.send_fence_markers(markers);
        if let Some(applied) = self.applied.as_mut() {
            if let Err(e) = applied.apply_delta(delta) {
                // Checked above; cannot happen.
                warn!(error = %e, "recording the applied delta failed");
            }
        }
        info!(
            epoch = delta.epoch,
            generation = delta.generation,
            mappings = delta.mappings.len(),
            removed = delta.removed.len(),
            "host config delta applied"
        );
        Ok(self.ack(delta.version()))
    }

    /// Installs `policies`, withdraws the `old` prefixes not in `mappings` (falling back to
    /// the node config's mapping), sets `mappings`.
    fn install_mappings(
        &mut self,
        policies: &[PolicyConfig],
        old: &[IpNet],
        mappings: &[(IpNet, String)],
    ) -> Result<(), ConfigError> {
        for p in policies {
            self.dp.install_policy(p.clone())?;
        }
        for prefix in old {
            if !mappings.iter().any(|(p, _)| p == prefix) {
                self.withdraw_mapping(*prefix)?;
            }
        }
        for (prefix, target) in mappings {
            let s = self.steering(target, *prefix)?;
            self.dp.set_mapping(*prefix, s)?;
        }
        Ok(())
    }

    /// Removes the host config's mapping of `prefix`, falling back to the node config's.
    fn withdraw_mapping(&mut self, prefix: IpNet) -> Result<(), ConfigError> {
        match self
            .base
            .mappings
            .iter()
            .find(|m| m.vm_address.trunc() == prefix)
        {
            Some(m) => {
                let s = self.steering(&m.policy, prefix)?;
                self.dp.set_mapping(prefix, s)?;
            }
            None => {
                self.dp.remove_mapping(prefix);
            }
        }
        Ok(())
    }

    /// This srmigd's boot epoch (reported with acks, VM state reports and the status).
    pub fn boot_epoch(&self) -> u64 {
        self.boot_epoch
    }

    fn ack(&self, (epoch, generation): (u64, u64)) -> Ack {
        Ack {
            host: self.host.clone(),
            epoch,
            boot_epoch: self.boot_epoch,
            generation,
        }
    }

    /// Queues the commit-fence markers of `markers` (see [`fence_markers`]).
    fn send_fence_markers(&mut self, markers: Vec<(std::net::IpAddr, Vec<Ipv6Addr>)>) {
        for (vm, path) in markers {
            if !self.dp.send_fence_marker(vm, &path) {
                warn!(%vm, "commit-fence marker not sent: too many queued");
            }
        }
    }

    /// Fences exactly the VMs that have an End.SBUF entry in `hc` (see
    /// `srmig_dataplane::fence`): only they can meet packets on the old SR path after a commit.
    fn sync_fences(&mut self, hc: &HostConfig) {
        let fenced: std::collections::BTreeSet<&str> = hc
            .sids
            .iter()
            .filter_map(|s| match s {
                SidEntry::EndSbuf { vm, .. } => Some(vm.as_str()),
                _ => None,
            })
            .collect();
        for (i, (id, _)) in self.vms.iter().enumerate() {
            let want = self
                .base
                .vms
                .get(i)
                .is_some_and(|v| fenced.contains(v.name.as_str()));
            if self.dp.fence_armed(*id) != want {
                if let Err(e) = self.dp.set_fence_armed(*id, want) {
                    warn!(error = %e, "commit fence not changed");
                }
            }
        }
    }

    /// Installs a validated plan; if the engine still refuses a step, restores the previous
    /// plan and reports an internal error.
    fn install_plan(&mut self, next: Plan) -> Result<(), AgentError> {
        let prev = self.plan.clone();
        match self.install_diff(&prev, &next) {
            Ok(()) => {
                self.plan = next;
                Ok(())
            }
            Err(e) => {
                warn!(error = %e, "engine refused a validated plan; restoring the previous one");
                if let Err(e2) = self.install_diff(&next, &prev) {
                    warn!(error = %e2, "restoring the previous plan failed");
                }
                Err(AgentError::Internal(e.to_string()))
            }
        }
    }

    /// Changes the engine from `prev` (the plan it holds) to `next`: only the policies,
    /// SIDs and mappings that differ, so a whole config that changes one VM of a thousand
    /// costs O(VMs) comparisons, not O(VMs) engine installs.
    fn install_diff(&mut self, prev: &Plan, next: &Plan) -> Result<(), ConfigError> {
        // Policies first (replacing a policy keeps its id, so mappings follow atomically).
        let held: std::collections::HashMap<&str, &PolicyConfig> =
            prev.policies.iter().map(|p| (p.name.as_str(), p)).collect();
        for p in &next.policies {
            if held.get(p.name.as_str()) == Some(&p) {
                continue;
            }
            self.dp.install_policy(p.clone())?;
        }
        // SIDs: remove what changed or went away, install what is new or changed.
        let installed: BTreeMap<Ipv6Addr, SidConfig> =
            self.dp.sids().map(|(_, _, c)| (c.sid, c.clone())).collect();
        for (sid, cfg) in &installed {
            if next.sids.get(sid) != Some(cfg) {
                self.dp.remove_sid(*sid);
            }
        }
        for (sid, cfg) in &next.sids {
            if installed.get(sid) != Some(cfg) {
                self.dp.install_sid(cfg.clone())?;
            }
        }
        // Mappings: withdraw the old ones (falling back to the node config's), set the new.
        for prefix in prev.mappings.keys() {
            if next.mappings.contains_key(prefix) {
                continue;
            }
            self.withdraw_mapping(*prefix)?;
        }
        for (prefix, target) in &next.mappings {
            if prev.mappings.get(prefix) == Some(target) {
                continue;
            }
            let s = self.steering(target, *prefix)?;
            self.dp.set_mapping(*prefix, s)?;
        }
        // Policies last: what `next` no longer has leaves the engine, now that no mapping
        // or SID of `next` steers into it.
        let wanted: std::collections::HashSet<&str> =
            next.policies.iter().map(|p| p.name.as_str()).collect();
        self.retire_policies(
            prev.policies
                .iter()
                .map(|p| p.name.as_str())
                .filter(|name| !wanted.contains(name)),
        );
        Ok(())
    }

    /// Removes the policies `names` from the engine (one look at its tables for all of
    /// them), except those something outside the plan still uses (a SID installed through
    /// the API): they stay, as they did before the plan dropped them.
    fn retire_policies<'a>(&mut self, names: impl Iterator<Item = &'a str> + Clone) {
        for (name, removed) in names.clone().zip(self.dp.remove_policies(names)) {
            if let Err(e) = removed {
                debug!(policy = name, reason = %e, "policy kept in the engine");
            }
        }
    }

    fn steering(&self, target: &str, prefix: IpNet) -> Result<Steering, ConfigError> {
        if target == "native" {
            return Ok(Steering::Native);
        }
        self.dp
            .policy_id(target)
            .map(Steering::Policy)
            .ok_or_else(|| ConfigError::Invalid {
                path: format!("mapping {prefix}"),
                reason: format!("no policy named \"{target}\""),
            })
    }

    /// `POST /v1/sids`.
    pub fn install_sid(&mut self, cfg: SidConfig) -> Result<SidStatus, AgentError> {
        let sid = cfg.sid;
        if self.dp.sid_id(sid).is_some() {
            return Err(AgentError::SidExists(sid));
        }
        self.dp
            .install_sid(cfg.clone())
            .map_err(|e| AgentError::Invalid(e.to_string()))?;
        self.extra_sids.insert(sid, cfg.clone());
        self.plan.sids.insert(sid, cfg);
        info!(%sid, "SID installed through the API");
        self.sid_status(sid)
            .ok_or_else(|| AgentError::Internal(format!("SID {sid} vanished")))
    }

    /// `DELETE /v1/sids/{sid}`.
    pub fn remove_sid(&mut self, sid: Ipv6Addr) -> Result<(), AgentError> {
        // A SID of the host config in force (or of the node config) is the controller's: the
        // same config pushed again is acknowledged as in force, so removing it here would
        // leave it missing while acknowledged (found by the `srmigd_api` fuzz target).
        let configured = self.base.sids.iter().any(|s| s.sid == sid)
            || self
                .applied
                .as_ref()
                .is_some_and(|h| h.sids.iter().any(|s| s.sid() == sid));
        if configured {
            return Err(AgentError::Stale(format!(
                "SID {sid} belongs to the configuration in force (node config or the \
                 controller's host config): it goes with a newer host config, not through the API"
            )));
        }
        if self.dp.remove_sid(sid).is_none() {
            return Err(AgentError::UnknownSid(sid));
        }
        self.extra_sids.remove(&sid);
        self.plan.sids.remove(&sid);
        info!(%sid, "SID removed through the API");
        Ok(())
    }

    fn sid_status(&self, sid: Ipv6Addr) -> Option<SidStatus> {
        let c = self.dp.counters();
        self.dp
            .sids()
            .find(|(_, _, cfg)| cfg.sid == sid)
            .map(|(id, b, cfg)| SidStatus {
                sid: cfg.sid,
                behavior: b.name().to_owned(),
                vm: cfg.vm.clone(),
                traffic: traffic(c.sid(id)),
            })
    }

    fn vm_status(&self, i: usize) -> VmStatus {
        let v = &self.base.vms[i];
        let (id, _) = self.vms[i];
        let c = self.dp.counters();
        let vc = c.vm(id);
        let occ = c.buffer_occupancy(id);
        VmStatus {
            name: v.name.clone(),
            state: to_api_state(self.dp.vm_state(id).unwrap_or_default()),
            port: v.port.clone(),
            local: self
                .applied
                .as_ref()
                .map(|h| h.local_vms.iter().any(|l| l.vm.as_str() == v.name.as_str())),
            addresses: v.addresses.clone(),
            buffer: BufferStatus {
                packets: occ.packets,
                bytes: occ.bytes,
            },
            rx: traffic(vc.rx),
            tx: traffic(vc.tx),
            held: vc.held,
            released: vc.released,
            expired: vc.expired,
            dropped: vc.dropped,
            fenced: vc.fenced,
            state_since_us: self
                .state_since
                .get(i)
                .copied()
                .flatten()
                .map(|t| self.clock.at_us(t)),
        }
    }

    /// The full status snapshot; `ports` holds the I/O side of each port, by port id.
    pub fn status(&self, ports: &[PortInfo]) -> HostStatus {
        let c = self.dp.counters();
        let ports = self
            .base
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let pc = c.port(PortId(i as u16));
                let info = ports.get(i).copied().unwrap_or_default();
                PortStatus {
                    name: p.name.clone(),
                    kind: match p.kind {
                        PortKind::Uplink => "uplink",
                        PortKind::Vm => "vm",
                    }
                    .to_owned(),
                    ifindex: info.ifindex,
                    attached: info.attached,
                    rx: traffic(pc.rx),
                    tx: traffic(pc.tx),
                    io: info.io,
                    socket: info.socket.map(str::to_owned),
                    fast_path: info.fast_path,
                    fast_path_hook: info.fast_path_hook.map(str::to_owned),
                    mtu: self.dp.port_mtu(PortId(i as u16)),
                }
            })
            .collect();
        let vms = (0..self.vms.len()).map(|i| self.vm_status(i)).collect();
        let sids = self
            .dp
            .sids()
            .map(|(id, b, cfg)| SidStatus {
                sid: cfg.sid,
                behavior: b.name().to_owned(),
                vm: cfg.vm.clone(),
                traffic: traffic(c.sid(id)),
            })
            .collect();
        let policies = self
            .base
            .policies
            .iter()
            .map(|p| p.name.as_str())
            .chain(self.plan.policies.iter().map(|p| p.name.as_str()))
            .filter_map(|name| {
                let id = self.dp.policy_id(name)?;
                let (h, segs) = self.dp.policy(id)?;
                Some(PolicyStatus {
                    name: name.to_owned(),
                    headend: h.name().to_owned(),
                    segments: segs.to_vec(),
                    traffic: traffic(c.policy(id)),
                })
            })
            .collect();
        let total = c.buffer_total();
        let ic = c.icmp();
        HostStatus {
            name: self.host.to_string(),
            boot_epoch: self.boot_epoch,
            epoch: self.applied.as_ref().map(|h| h.epoch),
            generation: self.applied.as_ref().map(|h| h.generation),
            ports,
            vms,
            sids,
            policies,
            buffer: BufferStatus {
                packets: total.packets,
                bytes: total.bytes,
            },
            drops: drop_counts(&c),
            icmp: IcmpStatus {
                errors_sent: ic.errors_sent,
                rate_limited: ic.rate_limited,
                queue_full: ic.queue_full,
                suppressed: ic.suppressed,
                ndp_answered: ic.ndp_answered,
                echo_replies: ic.echo_replies,
                arp_answered: ic.arp_answered,
            },
            holds: {
                let h = c.holds();
                srmig_api::HoldStatus {
                    le_ms: srmig_dataplane::HOLD_BUCKETS_S
                        .iter()
                        .map(|s| (s * 1000.0).round() as u64)
                        .collect(),
                    counts: h.buckets.to_vec(),
                    count: h.count,
                    sum_ns: h.sum_ns,
                }
            },
            fence: {
                let f = c.fence();
                let (holding, pairs) = c.fence_now();
                srmig_api::FenceStatus {
                    markers_sent: f.markers_sent,
                    markers_unsent: f.markers_unsent,
                    markers_received: f.markers_received,
                    markers_duplicate: f.markers_duplicate,
                    markers_late: f.markers_late,
                    markers_unarmed: f.markers_unarmed,
                    held: f.held,
                    released: f.released,
                    timeouts: f.timeouts,
                    bypassed: f.bypassed,
                    dropped: f.dropped,
                    holding,
                    pairs: pairs as u64,
                    arrivals_dropped: f.arrivals_dropped,
                    markers_relayed: f.markers_relayed,
                }
            },
            release_latency: self.release_latency.clone(),
        }
    }

    /// The I/O layer handed `port` frames at `now` (called once per port and round with
    /// frames): a VM's pause report carries its port's last delivery
    /// ([`VmStateReport::last_delivery_us`]).
    pub fn note_delivered(&mut self, port: PortId, now: Instant) {
        let i = port.index();
        if i >= self.last_delivery.len() {
            self.last_delivery.resize(i + 1, None);
        }
        self.last_delivery[i] = Some(now);
    }

    /// Frames written to `port` were taken back after its VMs paused: the VMs never got them,
    /// so their last delivery is when the hypervisor took the newest frame left with it,
    /// `kept_us` (wall clock, µs since the Unix epoch, as the I/O layer saw it; `None`: no
    /// longer known). Amends the pause reports of the port's VMs still queued (the take-back
    /// follows the state change that queued them): the controller's network downtime must
    /// not start at frames the VM never read, nor at the last write when the hypervisor was
    /// still reading a backlog.
    pub fn amend_last_delivery(&mut self, port: PortId, kept_us: Option<u64>) {
        for i in 0..self.vms.len() {
            if self.vms[i].1 != port {
                continue;
            }
            let name = self.base.vms[i].name.as_str();
            if let Some(r) = self
                .reports
                .iter_mut()
                .rev()
                .find(|r| r.vm.as_str() == name)
                .filter(|r| r.state == srmig_api::VmState::Paused)
            {
                r.last_delivery_us = kept_us;
            }
        }
    }

    /// The first frame to `port` since its VM resumed at `resumed_at` reached the kernel at
    /// `now` (measured by the I/O layer): observed in `release_latency` ([`Agent::status`]),
    /// and reported to the controller for each VM on the port
    /// ([`Agent::poll_release_report`]) with what its buffers did since its previous report.
    pub fn observe_release(&mut self, port: PortId, resumed_at: Instant, now: Instant) {
        let ns = now.saturating_duration_since(resumed_at).as_nanos();
        self.release_latency
            .observe(u64::try_from(ns).unwrap_or(u64::MAX));
        self.note_delivered(port, now);
        for i in 0..self.vms.len() {
            let (vm, p) = self.vms[i];
            if p != port {
                continue;
            }
            let c = self.dp.counters().vm(vm);
            let b = std::mem::replace(&mut self.release_baseline[i], c);
            let Ok(name) = srmig_api::VmId::new(self.base.vms[i].name.clone()) else {
                continue;
            };
            if self.releases.len() >= MAX_RELEASE_REPORTS {
                self.releases.pop_front();
            }
            self.releases.push_back(srmig_api::ReleaseReport {
                vm: name,
                host: self.host.clone(),
                release: srmig_api::ReleaseFigures {
                    resumed_at_us: self.clock.at_us(resumed_at),
                    first_delivery_us: self.clock.at_us(now),
                    held: c.held.saturating_sub(b.held),
                    released: c.released.saturating_sub(b.released),
                    fenced: c.fenced.saturating_sub(b.fenced),
                    dropped: c.dropped.saturating_sub(b.dropped),
                },
            });
        }
    }

    /// The next release report for the controller (a VM that resumed here got its first
    /// frame), oldest first.
    pub fn poll_release_report(&mut self) -> Option<srmig_api::ReleaseReport> {
        self.releases.pop_front()
    }
}

/// The commit-fence markers an ingress sends when `next` replaces what `prev` mapped: one
/// down each fenced SR path (`fence`) of the mappings in force that `next` steers otherwise,
/// for the VM's first address.
fn fence_markers(
    prev: Option<&HostConfig>,
    next: &[srmig_api::Mapping],
) -> Vec<(std::net::IpAddr, Vec<Ipv6Addr>)> {
    let mut out = Vec::new();
    let Some(prev) = prev else {
        return out;
    };
    for m in next {
        let Some(old) = prev.mapping(&m.vm).filter(|o| o.fence) else {
            continue;
        };
        if let (srmig_api::Steering::Encaps(e), Some(addr)) = (&old.steering, m.addresses.first()) {
            if old.steering != m.steering {
                out.push((*addr, e.segments.clone()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{base, hc};

    fn node() -> Agent {
        Agent::new(HostId::new("h1").expect("name"), base(), 77).expect("agent")
    }

    fn addr(s: &str) -> Ipv6Addr {
        s.parse().expect("addr")
    }

    /// The address check of a delta uses the agent's index of the config in force: an
    /// address still held by a VM the delta does not touch is refused; one the delta moves
    /// between two of its VMs, or one a VM gave up earlier, is taken.
    #[test]
    fn a_delta_is_checked_against_the_addresses_in_force() {
        let mapping = |vm: &str, a: &str, sid: &str| -> srmig_api::Mapping {
            serde_json::from_str(&format!(
                r#"{{"vm":"{vm}","addresses":["{a}"],"steering":{{"encaps":{{"segments":["{sid}"],"headend":"H.Encaps"}}}}}}"#
            ))
            .expect("mapping")
        };
        let mut agent = node();
        let mut cur = hc(1);
        cur.mappings
            .push(mapping("far7", "2001:db8:a::77", "fc00:0:4::d6"));
        cur.mappings.sort_by(|a, b| a.vm.cmp(&b.vm));
        agent.apply_host_config(cur.clone()).expect("first");
        let next = |cur: &HostConfig, change: &dyn Fn(&mut HostConfig)| {
            let mut n = cur.clone();
            n.generation += 1;
            change(&mut n);
            n.mappings.sort_by(|a, b| a.vm.cmp(&b.vm));
            n
        };
        // far8 takes far7's address while far7 keeps it: refused, nothing changes.
        let bad = next(&cur, &|n| {
            n.mappings
                .push(mapping("far8", "2001:db8:a::77", "fc00:0:5::d6"));
        });
        let e = agent
            .apply_host_config_delta(&cur.delta_to(&bad))
            .expect_err("duplicate address");
        assert!(e.to_string().contains("2001:db8:a::77"), "{e}");
        assert_eq!(agent.status(&[]).generation, Some(cur.generation));
        // The address moves from far7 to far8 in one delta: taken.
        let moved = next(&cur, &|n| {
            n.mappings.retain(|m| m.vm.as_str() != "far7");
            n.mappings
                .push(mapping("far8", "2001:db8:a::77", "fc00:0:5::d6"));
        });
        agent
            .apply_host_config_delta(&cur.delta_to(&moved))
            .expect("moved");
        // far7 comes back with its old address: refused (far8 holds it now).
        let back = next(&moved, &|n| {
            n.mappings
                .push(mapping("far7", "2001:db8:a::77", "fc00:0:4::d6"));
        });
        assert!(agent
            .apply_host_config_delta(&moved.delta_to(&back))
            .is_err());
        // far7 comes back with a new address, and far8 gives ::77 up in a later delta.
        let back = next(&moved, &|n| {
            n.mappings
                .push(mapping("far7", "2001:db8:a::78", "fc00:0:4::d6"));
        });
        agent
            .apply_host_config_delta(&moved.delta_to(&back))
            .expect("new address");
        let freed = next(&back, &|n| {
            n.mappings.retain(|m| m.vm.as_str() != "far8");
        });
        agent
            .apply_host_config_delta(&back.delta_to(&freed))
            .expect("far8 removed");
        let taken = next(&freed, &|n| {
            n.mappings
                .push(mapping("far9", "2001:db8:a::77", "fc00:0:5::d6"));
        });
        agent
            .apply_host_config_delta(&freed.delta_to(&taken))
            .expect("the freed address is taken");
        assert_eq!(agent.status(&[]).generation, Some(taken.generation));
    }

    /// Whatever steps a sequence of configs takes, an agent fed deltas forwards exactly like
    /// one fed the whole configs: same mapping for every address, same policies, same SIDs.
    #[test]
    fn deltas_apply_like_whole_configs() {
        let far = |n: &str| {
            format!("2001:db8:a::{n}")
                .parse::<std::net::IpAddr>()
                .expect("addr")
        };
        let mut configs = vec![hc(1)];
        let mut c = hc(2);
        // far1 moves onto another path; far2 appears.
        c.mappings[1] = serde_json::from_str(
            r#"{"vm":"far1","addresses":["2001:db8:a::30"],"steering":{"encaps":{"segments":["fc00:0:4::d6"],"headend":"H.Encaps"}}}"#,
        )
        .expect("mapping");
        c.mappings.push(
            serde_json::from_str(
                r#"{"vm":"far2","addresses":["2001:db8:a::31","10.1.0.31"],"steering":{"encaps":{"segments":["fc00:0:5::d6"],"headend":"H.Encaps"}}}"#,
            )
            .expect("mapping"),
        );
        configs.push(c.clone());
        // far1 goes away; web1 becomes remote.
        let mut c = c.clone();
        c.generation = 3;
        c.mappings.retain(|m| m.vm.as_str() != "far1");
        c.mappings[0].steering = srmig_api::Steering::Encaps(srmig_api::Encaps {
            segments: vec![addr("fc00:0:2::d6")],
            headend: srmig_api::Headend::HEncaps,
        });
        configs.push(c.clone());
        // SIDs change too (whole-config path inside the delta).
        let mut c = c.clone();
        c.generation = 4;
        c.sids.truncate(1);
        c.mappings.sort_by(|a, b| a.vm.cmp(&b.vm));
        configs.push(c);
        for cfg in &mut configs {
            cfg.mappings.sort_by(|a, b| a.vm.cmp(&b.vm));
        }
        let (mut whole, mut delta) = (node(), node());
        delta.apply_host_config(configs[0].clone()).expect("first");
        for pair in configs.windows(2) {
            whole.apply_host_config(pair[1].clone()).expect("whole");
            let d = pair[0].delta_to(&pair[1]);
            let ack = delta.apply_host_config_delta(&d).expect("delta");
            assert_eq!(ack.generation, pair[1].generation);
            // The same delta again: acknowledged, nothing changes.
            assert_eq!(delta.apply_host_config_delta(&d).expect("again"), ack);
            for a in ["10", "20", "30", "31"]
                .map(far)
                .into_iter()
                .chain([far("30"), "10.1.0.31".parse().expect("v4")])
            {
                let policy = |n: &mut Agent| {
                    let s = n.dataplane().mapping(a);
                    s.map(|s| match s {
                        Steering::Policy(id) => format!("{:?}", n.dataplane().policy(id)),
                        other => format!("{other:?}"),
                    })
                };
                assert_eq!(
                    policy(&mut delta),
                    policy(&mut whole),
                    "{a} at {}",
                    pair[1].generation
                );
            }
            let (sd, sw) = (delta.status(&[]), whole.status(&[]));
            assert_eq!(sd.sids, sw.sids);
            assert_eq!(sd.policies, sw.policies, "at {}", pair[1].generation);
            // The engines hold the VM policies of the plan and no other (a VM that went away
            // or went native took its policy along).
            for (n, st) in [(&delta, &sd), (&whole, &sw)] {
                let mut held: Vec<&str> =
                    n.dp.policy_names()
                        .filter(|p| p.starts_with(POLICY_PREFIX))
                        .collect();
                held.sort_unstable();
                let mut planned: Vec<&str> = st
                    .policies
                    .iter()
                    .map(|p| p.name.as_str())
                    .filter(|p| p.starts_with(POLICY_PREFIX))
                    .collect();
                planned.sort_unstable();
                assert_eq!(held, planned, "at {}", pair[1].generation);
            }
            assert_eq!(sd.generation, sw.generation);
        }
        // A delta on another base is refused with base-mismatch and changes nothing.
        let mut stale = configs[0].delta_to(&configs[1]);
        stale.base_generation = 9;
        stale.generation = 10;
        let e = delta.apply_host_config_delta(&stale).expect_err("mismatch");
        assert_eq!(e.to_api().code, ApiErrorCode::BaseMismatch);
        assert_eq!(e.http_status(), 409);
        assert_eq!(delta.status(&[]).generation, Some(4));
        // No config yet: base-mismatch too.
        assert!(matches!(
            node().apply_host_config_delta(&configs[0].delta_to(&configs[1])),
            Err(AgentError::BaseMismatch(_))
        ));
    }

    #[test]
    fn host_config_generations() {
        let mut n = node();
        let ack = n.apply_host_config(hc(5)).expect("apply");
        assert_eq!(ack.generation, 5);
        assert_eq!(ack.host.as_str(), "h1");
        // Same generation, same content: acknowledged again.
        assert_eq!(n.apply_host_config(hc(5)).expect("again").generation, 5);
        // Older: refused.
        assert!(matches!(
            n.apply_host_config(hc(4)),
            Err(AgentError::Stale(_))
        ));
        // Same generation, different content: refused.
        let mut other = hc(5);
        other.mappings.pop();
        let e = n.apply_host_config(other).expect_err("conflict");
        assert_eq!(e.http_status(), 409);
        let st = n.status(&[]);
        assert_eq!(st.generation, Some(5));
        assert!(st.sids.iter().any(|s| s.behavior == "End.S"));
        assert!(st.policies.iter().any(|p| p.name == "vm:far1"));
        assert_eq!(
            n.dp.mapping("2001:db8:a::30".parse().expect("addr")),
            n.dp.policy_id("vm:far1").map(Steering::Policy)
        );
    }

    #[test]
    fn a_reserved_epoch_is_refused_so_no_config_is_out_of_reach() {
        let mut n = node();
        let mut h = hc(3);
        h.epoch = srmig_api::MAX_EPOCH;
        n.apply_host_config(h.clone())
            .expect("the highest usable epoch");
        h.epoch = srmig_api::MAX_EPOCH + 1;
        h.generation = 4;
        let e = n.apply_host_config(h.clone()).expect_err("reserved");
        assert_eq!(e.http_status(), 400);
        assert!(e.to_string().contains("highest epoch"), "{e}");
        h.epoch = u64::MAX;
        h.generation = u64::MAX;
        assert_eq!(
            n.apply_host_config(h).expect_err("reserved").http_status(),
            400
        );
        assert_eq!(n.status(&[]).generation, Some(3));
    }

    #[test]
    fn a_newer_epoch_wins_whatever_its_generation() {
        let mut n = node();
        let at = |epoch, generation| {
            let mut h = hc(generation);
            h.epoch = epoch;
            h
        };
        // A push with the largest generation cannot lock the host: the controller's next
        // epoch is applied.
        let ack = n.apply_host_config(at(10, u64::MAX)).expect("apply");
        assert_eq!(
            (ack.epoch, ack.generation, ack.boot_epoch),
            (10, u64::MAX, 77)
        );
        let mut newer = at(11, 1);
        newer.mappings.pop();
        let ack = n.apply_host_config(newer.clone()).expect("newer epoch");
        assert_eq!((ack.epoch, ack.generation), (11, 1));
        assert_eq!(n.dp.mapping("2001:db8:a::30".parse().expect("addr")), None);
        // An older epoch (a deposed controller, a stale push) is refused, even with a higher
        // generation, and changes nothing.
        let e = n
            .apply_host_config(at(10, u64::MAX))
            .expect_err("older epoch");
        assert_eq!(e.http_status(), 409);
        assert!(
            e.to_string().contains("older than epoch 11 generation 1"),
            "{e}"
        );
        // The same version and content again: acknowledged.
        assert_eq!(n.apply_host_config(newer).expect("again").epoch, 11);
        let st = n.status(&[]);
        assert_eq!(
            (st.boot_epoch, st.epoch, st.generation),
            (77, Some(11), Some(1))
        );
    }

    /// The status says when the VM's current state was applied here: the moment from which a
    /// paused VM gets nothing at this host. Setting the same state again keeps it.
    #[test]
    fn vm_status_says_since_when_its_state_holds() {
        let mut n = node();
        n.set_clock(WallClock {
            unix_us_at_zero: 1_000_000_000,
        });
        let name = n.base.vms[0].name.clone();
        let before = n.vm_status(0);
        assert_eq!(before.state_since_us, None);
        let json = serde_json::to_string(&before).expect("serialize");
        assert!(!json.contains("state_since_us"), "{json}");
        let want = if before.state == srmig_api::VmState::Paused {
            srmig_api::VmState::Running
        } else {
            srmig_api::VmState::Paused
        };
        let st = n
            .set_vm_state(Instant::from_nanos(250_000_500), &name, want)
            .expect("set");
        assert_eq!((st.state, st.state_since_us), (want, Some(1_000_250_000)));
        let again = n
            .set_vm_state(Instant::from_millis(300), &name, want)
            .expect("set again");
        assert_eq!(again.state_since_us, Some(1_000_250_000));
    }

    /// Frames taken back after a pause were never the VM's: the queued pause reports take
    /// their last delivery from the newest frame kept, or drop it when that is unknown;
    /// reports already sent and running reports are left alone.
    #[test]
    fn a_take_back_sets_the_last_delivery_from_the_frames_kept() {
        let mut n = node();
        n.set_clock(WallClock {
            unix_us_at_zero: 1_000_000_000,
        });
        let vm_port = PortId(1);
        let on_port = n.vms.iter().filter(|(_, p)| *p == vm_port).count();
        let reports = |n: &mut Agent| std::iter::from_fn(|| n.poll_report()).collect::<Vec<_>>();
        n.port_attachment(Instant::from_millis(10), vm_port, true);
        n.amend_last_delivery(vm_port, Some(1));
        assert!(reports(&mut n).iter().all(|r| r.last_delivery_us.is_none()));
        n.note_delivered(vm_port, Instant::from_millis(200));
        n.port_attachment(Instant::from_millis(250), vm_port, false);
        // The last amendment stands, earlier or later than the last write (a backlog the
        // hypervisor read after it).
        n.amend_last_delivery(vm_port, Some(1_000_150_000));
        n.amend_last_delivery(vm_port, Some(1_000_220_000));
        n.amend_last_delivery(PortId(0), Some(1));
        let paused = reports(&mut n);
        assert_eq!(paused.len(), on_port);
        assert!(paused
            .iter()
            .all(|r| r.last_delivery_us == Some(1_000_220_000)));
        n.amend_last_delivery(vm_port, Some(1));
        assert!(reports(&mut n).is_empty(), "sent reports stay sent");
        n.port_attachment(Instant::from_millis(300), vm_port, true);
        n.port_attachment(Instant::from_millis(350), vm_port, false);
        n.amend_last_delivery(vm_port, None);
        let paused = reports(&mut n);
        assert_eq!(paused.len(), 2 * on_port, "running, then paused");
        let last: Vec<_> = paused
            .iter()
            .filter(|r| r.state == srmig_api::VmState::Paused)
            .map(|r| r.last_delivery_us)
            .collect();
        assert_eq!(
            last,
            vec![None; on_port],
            "unknown once every kept frame is gone"
        );
    }

    /// A pause report says when the VM's port last got a frame; the first frame after a
    /// resume gives a release report with the resume, the delivery and what End.SBUF did since
    /// the previous one.
    #[test]
    fn pause_and_release_reports_carry_delivery_times() {
        let mut n = node();
        n.set_clock(WallClock {
            unix_us_at_zero: 1_000_000_000,
        });
        let vm_port = PortId(1);
        let on_port = n.vms.iter().filter(|(_, p)| *p == vm_port).count();
        assert!(on_port >= 1);
        let reports = |n: &mut Agent| std::iter::from_fn(|| n.poll_report()).collect::<Vec<_>>();
        n.port_attachment(Instant::from_millis(10), vm_port, true);
        assert!(reports(&mut n).iter().all(|r| r.last_delivery_us.is_none()));
        n.note_delivered(vm_port, Instant::from_nanos(200_000_500));
        n.note_delivered(PortId(0), Instant::from_millis(240));
        n.port_attachment(Instant::from_millis(250), vm_port, false);
        let paused = reports(&mut n);
        assert_eq!(paused.len(), on_port);
        for r in &paused {
            assert_eq!(r.state, srmig_api::VmState::Paused);
            assert_eq!(r.last_delivery_us, Some(1_000_200_000));
        }
        n.port_attachment(Instant::from_millis(400), vm_port, true);
        let running = reports(&mut n);
        assert_eq!(running.len(), on_port);
        assert!(running.iter().all(|r| r.last_delivery_us.is_none()));
        assert!(n.poll_release_report().is_none());
        n.observe_release(
            vm_port,
            Instant::from_millis(400),
            Instant::from_nanos(400_300_000),
        );
        let released = std::iter::from_fn(|| n.poll_release_report()).collect::<Vec<_>>();
        assert_eq!(released.len(), on_port, "one report per VM on the port");
        for r in &released {
            assert_eq!(r.host, HostId::new("h1").expect("name"));
            assert_eq!(r.release.resumed_at_us, 1_000_400_000);
            assert_eq!(r.release.first_delivery_us, 1_000_400_300);
            assert_eq!(r.release.latency_us(), 300);
            assert_eq!((r.release.held, r.release.released), (0, 0));
        }
        assert_eq!(n.status(&[]).release_latency.count, 1);
        // A port without a VM: observed, not reported.
        n.observe_release(
            PortId(0),
            Instant::from_millis(500),
            Instant::from_millis(501),
        );
        assert!(n.poll_release_report().is_none());
    }

    #[test]
    fn reports_carry_the_boot_epoch_and_wall_time() {
        let mut n = node();
        n.set_clock(WallClock {
            unix_us_at_zero: 1_000_000_000,
        });
        n.port_attachment(Instant::from_millis(250), PortId(1), false);
        let r = n.poll_report().expect("report");
        assert_eq!(r.boot_epoch, Some(77));
        assert_eq!(r.at, Timestamp(1_000_250));
    }

    #[test]
    fn refused_config_changes_nothing() {
        let mut n = node();
        n.apply_host_config(hc(1)).expect("apply");
        let before = n.status(&[]);
        let mut bad = hc(2);
        bad.sids.push(srmig_api::SidEntry::EndDt6 {
            sid: addr("fc00:0:9::1"),
        });
        let e = n.apply_host_config(bad).expect_err("outside the locator");
        assert_eq!(e.http_status(), 400);
        assert_eq!(n.status(&[]), before);
    }

    #[test]
    fn next_generation_withdraws_sids_and_mappings() {
        let mut n = node();
        n.apply_host_config(hc(1)).expect("apply");
        let mut h2 = hc(2);
        h2.sids.retain(|s| s.behavior() == "End.DT6");
        h2.mappings.retain(|m| m.vm.as_str() == "web1");
        n.apply_host_config(h2).expect("apply 2");
        let st = n.status(&[]);
        assert_eq!(st.sids.len(), 1, "{:?}", st.sids);
        assert_eq!(n.dp.mapping("2001:db8:a::30".parse().expect("addr")), None);
        assert_eq!(st.generation, Some(2));
    }

    #[test]
    fn api_sids_and_vm_state() {
        let mut n = node();
        let sid = addr("fc00:0:1::77");
        let s = n
            .install_sid(SidConfig::new(sid, srmig_dataplane::Behavior::EndDt6))
            .expect("install");
        assert_eq!(s.behavior, "End.DT6");
        assert_eq!(
            n.install_sid(SidConfig::new(sid, srmig_dataplane::Behavior::EndDt6)),
            Err(AgentError::SidExists(sid))
        );
        // It survives a host config (API SIDs are part of every plan).
        n.apply_host_config(hc(1)).expect("apply");
        assert!(n.dp.sid_id(sid).is_some());
        n.remove_sid(sid).expect("remove");
        assert_eq!(n.remove_sid(sid), Err(AgentError::UnknownSid(sid)));
        // The host config's own SIDs are not the API's to remove: the same config pushed
        // again is acknowledged as in force, and they must be there.
        for entry in &hc(1).sids {
            let e = n.remove_sid(entry.sid()).expect_err("a host config SID");
            assert_eq!(e.http_status(), 409, "{e}");
            assert!(n.dp.sid_id(entry.sid()).is_some(), "{e}");
        }
        n.apply_host_config(hc(1)).expect("the same config again");
        for entry in &hc(1).sids {
            assert!(n.dp.sid_id(entry.sid()).is_some());
        }

        // Link down pauses the running VM only; up runs both; each change is reported once.
        n.port_attachment(Instant::ZERO, PortId(1), false);
        let r: Vec<_> = std::iter::from_fn(|| n.poll_report()).collect();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].vm.as_str(), "web1");
        assert_eq!(r[0].state, srmig_api::VmState::Paused);
        n.port_attachment(Instant::ZERO, PortId(1), true);
        assert_eq!(std::iter::from_fn(|| n.poll_report()).count(), 2);
        n.port_attachment(Instant::ZERO, PortId(1), true);
        assert!(n.poll_report().is_none());
    }

    /// The commit as an ingress sees it: far1's mapping leaves its fenced SR path, so one
    /// marker goes down that path (whole config and delta alike); a re-push sends none, nor
    /// does leaving a path not marked `fence`. End.SBUF entries arm the VMs' fences, their
    /// removal disarms them.
    #[test]
    fn a_commit_sends_one_fence_marker_and_end_sbuf_entries_arm_fences() {
        let commit = |generation: u64, keep_sbuf: bool| {
            let mut h = hc(generation);
            let far = h
                .mappings
                .iter_mut()
                .find(|m| m.vm.as_str() == "far1")
                .expect("far1");
            far.steering = srmig_api::Steering::Encaps(srmig_api::Encaps {
                segments: vec![addr("fc00:0:3::d6")],
                headend: srmig_api::Headend::HEncaps,
            });
            if !keep_sbuf {
                h.sids.retain(|s| !matches!(s, SidEntry::EndSbuf { .. }));
            }
            h
        };
        let marker_dst = |n: &mut Agent| -> Vec<Ipv6Addr> {
            let mut out = srmig_dataplane::PacketBuf::new();
            let mut dsts = Vec::new();
            while n
                .dataplane()
                .poll_transmit(Instant::ZERO, &mut out)
                .is_some()
            {
                let d = out.data();
                let mut a = [0u8; 16];
                a.copy_from_slice(&d[14 + 24..14 + 40]);
                dsts.push(Ipv6Addr::from(a));
            }
            dsts
        };
        let path = |fence: bool| {
            let mut h = hc(1);
            for m in h.mappings.iter_mut().filter(|m| m.vm.as_str() == "far1") {
                m.fence = fence;
            }
            h
        };
        // Leaving a path that is not fenced sends nothing.
        let mut n = node();
        n.apply_host_config(path(false)).expect("unfenced path");
        n.apply_host_config(commit(2, true)).expect("commit");
        assert!(marker_dst(&mut n).is_empty());
        for delta in [false, true] {
            let mut n = node();
            n.apply_host_config(path(true)).expect("path");
            let (web1, db1) = (VmId(0), VmId(1));
            assert!(n.dataplane().fence_armed(web1) && n.dataplane().fence_armed(db1));
            assert!(marker_dst(&mut n).is_empty(), "no marker before the commit");
            let next = commit(2, delta);
            if delta {
                let d = path(true).delta_to(&next);
                assert!(d.sids.is_none(), "a mappings-only delta");
                n.apply_host_config_delta(&d).expect("commit delta");
            } else {
                n.apply_host_config(next.clone()).expect("commit");
                assert!(!n.dataplane().fence_armed(web1), "End.SBUF gone: disarmed");
            }
            assert_eq!(
                marker_dst(&mut n),
                vec![addr("fc00:0:2::e5")],
                "delta: {delta}"
            );
            assert_eq!(n.dataplane().counters().fence().markers_sent, 1);
            // The same commit again (a re-push with a fresh generation): no second marker.
            n.apply_host_config(commit(3, delta)).expect("again");
            assert!(marker_dst(&mut n).is_empty());
        }
    }

    /// The status lists every drop reason once, in name order, with the engine's count: the
    /// list of names built once is filled in the engine's order.
    #[test]
    fn status_drops_are_the_engines_counts() {
        let mut agent = node();
        let mut batch = srmig_dataplane::Batch::new(4);
        for frame in [&[0u8; 3][..], &[0xff; 20][..], &[0u8; 3][..]] {
            assert!(batch.push(PortId(0), frame).expect("fits"));
        }
        agent.dataplane().process_batch(Instant::ZERO, &mut batch);
        for _ in 0..2 {
            let st = agent.status(&[]);
            let c = agent.dataplane().counters();
            let want: Vec<(&str, u64)> = c
                .drop_counts_by_name()
                .map(|(r, n)| (r.as_str(), n))
                .collect();
            let got: Vec<(&str, u64)> = st.drops.iter().collect();
            assert_eq!(got, want);
            assert_eq!(got.len(), srmig_dataplane::DropReason::COUNT);
            assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "{got:?}");
            assert_eq!(st.drops.iter().map(|(_, n)| n).sum::<u64>(), 3, "{got:?}");
        }
    }
}
