//! The sans-IO controller core.
//!
//! Inputs come in through `add_*`, `request_migration`, `cancel_migration` and `handle_*`,
//! each with the current time; outputs come out of [`Controller::poll_action`]; the next
//! deadline is [`Controller::poll_timeout`]. The daemon around it owns the sockets, the store
//! and the clock.
//!
//! Bookkeeping per host: the generation of the last config pushed and the highest generation
//! acknowledged. A config is pushed only when a host's desired state changes (or again, with a
//! fresh generation, when a phase that cannot be abandoned times out waiting for that host).
//! A migration state that waits for acknowledgements records, on entry, the generation each
//! awaited host must reach; acknowledgements are cumulative.
//!
//! State that heals, without operator action:
//! - **Store epoch.** Every config carries the controller's `epoch` and hosts order configs by
//!   (`epoch`, `generation`). A controller on a new or lost store starts a newer epoch (the
//!   daemon picks its clock), so running hosts accept it at once. If a host turns out to hold
//!   a newer version than this controller ever pushed (an older controller's push from a
//!   newer epoch, a hand-made push with generation `u64::MAX`), the controller moves to an
//!   epoch above the host's and pushes every host again: no config can lock a host.
//! - **Boot epoch.** srmigd reports a boot epoch (new at every start) with its acks, its VM
//!   state reports and its status. When a host's boot epoch changes, whatever it acknowledged
//!   before is gone: the controller pushes its full config again (with a fresh generation),
//!   and migrations waiting on that host wait for the new acknowledgement.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

use srmig_api::{
    Ack, FenceReport, HostConfig, HostConfigDelta, HostId, HostInfo, HypervisorEvent,
    HypervisorReport, MigrateRequest, MigrationId, MigrationOutcome, MigrationPhase,
    MigrationStatus, NetworkId, ReleaseReport, Strategy, Timestamp, VmId, VmInfo, VmState,
    VmStateReport,
};

use crate::migration::{
    AckScope, AckWait, Begun, HypervisorTimeout, Migration, Requested, Timeouts,
};
use crate::model::{Footprint, Model, ModelError, Reach};

/// Updates `pushed` (the config last pushed to `host`, same epoch) in place to the desired
/// state and returns what changed (generation left for the caller), or `None` if nothing did.
/// `dirty`: the VMs whose entries may have changed, `also`: more of them on this host (the
/// VMs of a network that appeared on it or left it); `fps`: footprints by VM; `reach`: where
/// networks are attached.
fn config_delta(
    model: &Model,
    host: &HostId,
    pushed: &mut HostConfig,
    (dirty, also): (&BTreeSet<VmId>, Option<&BTreeSet<VmId>>),
    (fps, reach): (&BTreeMap<VmId, &Footprint>, &Reach),
    dual_stack: bool,
) -> Option<HostConfigDelta> {
    let mut delta = HostConfigDelta {
        epoch: pushed.epoch,
        base_generation: pushed.generation,
        generation: pushed.generation,
        mappings: Vec::new(),
        removed: Vec::new(),
        local_vms: None,
        sids: None,
    };
    let mut local_changed = false;
    let also = also.into_iter().flatten().filter(|v| !dirty.contains(*v));
    for vm in dirty.iter().chain(also) {
        let info = model.vm(vm);
        let fp = fps.get(vm).copied();
        let want = info.and_then(|v| model.mapping_on(host, v, fp, reach));
        match (pushed.mappings.binary_search_by(|m| m.vm.cmp(vm)), want) {
            (Ok(i), Some(m)) => {
                if pushed.mappings[i] != m {
                    pushed.mappings[i] = m.clone();
                    delta.mappings.push(m);
                }
            }
            (Ok(i), None) => {
                pushed.mappings.remove(i);
                delta.removed.push(vm.clone());
            }
            (Err(i), Some(m)) => {
                pushed.mappings.insert(i, m.clone());
                delta.mappings.push(m);
            }
            (Err(_), None) => {}
        }
        let want = info.and_then(|v| model.is_local_on(host, v, fp));
        match (pushed.local_vms.binary_search_by(|l| l.vm.cmp(vm)), want) {
            (Ok(i), Some(l)) => {
                if pushed.local_vms[i] != l {
                    pushed.local_vms[i] = l;
                    local_changed = true;
                }
            }
            (Ok(i), None) => {
                pushed.local_vms.remove(i);
                local_changed = true;
            }
            (Err(i), Some(l)) => {
                pushed.local_vms.insert(i, l);
                local_changed = true;
            }
            (Err(_), None) => {}
        }
    }
    if local_changed {
        delta.local_vms = Some(pushed.local_vms.clone());
    }
    if let Some(sids) = model.sids_on(host, fps, dual_stack) {
        if sids != pushed.sids {
            pushed.sids.clone_from(&sids);
            delta.sids = Some(sids);
        }
    }
    (!delta.is_empty()).then_some(delta)
}

/// Controller settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerConfig {
    /// Per-phase time limits.
    pub timeouts: Timeouts,
    /// How many finished migrations to keep for status queries.
    pub finished_history: usize,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            timeouts: Timeouts::default(),
            finished_history: 256,
        }
    }
}

/// Something the daemon around the controller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this config to this host's srmigd (and expect an [`Ack`]).
    PushConfig {
        /// The host.
        host: HostId,
        /// The complete desired state, with a generation greater than any sent to it before.
        config: HostConfig,
    },
    /// Send this change to this host's srmigd (`PATCH /v1/config`; expect an [`Ack`]). It
    /// applies to the config of the previous push to that host (`PushConfig` or
    /// `PushDelta`); the daemon keeps that config, applies the delta to it and sends the
    /// whole result instead when the host does not hold the base.
    PushDelta {
        /// The host.
        host: HostId,
        /// What changed since the previous push, with the next generation.
        delta: HostConfigDelta,
    },
    /// Start migrating the VM on the hypervisor (QEMU over QMP, or the netns emulation) and
    /// report the outcome with [`Controller::handle_hypervisor`].
    StartMigration {
        /// The migration.
        id: MigrationId,
        /// The VM.
        vm: VmId,
        /// The source host.
        from: HostId,
        /// The destination host.
        to: HostId,
        /// The strategy (informational for the driver: the network side is already set up).
        strategy: Strategy,
    },
    /// Ask the hypervisor to cancel the migration (QMP `migrate_cancel`); it answers with
    /// `cancelled`, or `completed` if it was too late.
    CancelMigration {
        /// The migration.
        id: MigrationId,
        /// The VM.
        vm: VmId,
        /// The source host.
        from: HostId,
        /// The destination host.
        to: HostId,
    },
    /// The migration is over (persist it, tell whoever waits for it).
    MigrationFinished {
        /// The migration.
        id: MigrationId,
        /// The VM.
        vm: VmId,
        /// How it ended.
        outcome: MigrationOutcome,
    },
    /// A host held a config version this controller never pushed; the controller moved to
    /// `epoch` and pushes every host again (log it; the epoch is in the snapshot).
    EpochAdvanced {
        /// The host found ahead.
        host: HostId,
        /// The version it held: (`epoch`, `generation`).
        theirs: (u64, u64),
        /// The controller's new epoch.
        epoch: u64,
    },
}

impl Action {
    /// For a push, whole or delta: the host and the version (`epoch`, `generation`) it makes.
    pub fn push_version(&self) -> Option<(&HostId, (u64, u64))> {
        match self {
            Action::PushConfig { host, config } => Some((host, config.version())),
            Action::PushDelta { host, delta } => Some((host, delta.version())),
            _ => None,
        }
    }
}

/// Why a migration request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefuseReason {
    /// The VM is not registered.
    #[error("VM {0} is not registered")]
    UnknownVm(VmId),
    /// The destination host is not registered.
    #[error("host {0} is not registered")]
    UnknownHost(HostId),
    /// The VM is already mapped to the destination.
    #[error("VM {vm} is already on host {host}")]
    AlreadyOnHost {
        /// The VM.
        vm: VmId,
        /// Its current (and requested) host.
        host: HostId,
    },
    /// The VM has a migration in progress.
    #[error("VM {vm} is already migrating ({id})")]
    AlreadyMigrating {
        /// The VM.
        vm: VmId,
        /// The migration in progress.
        id: MigrationId,
    },
    /// Every migration id is taken (only a damaged store gets near 2^64).
    #[error("no migration id is left (the next one would be {0})")]
    NoIdLeft(MigrationId),
}

/// Why a report (ack, VM state, hypervisor event) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// The reporting host is not registered.
    #[error("host {0} is not registered")]
    UnknownHost(HostId),
    /// The VM is not registered.
    #[error("VM {0} is not registered")]
    UnknownVm(VmId),
}

/// Why a host or a VM cannot be removed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoveError {
    /// No host of that name.
    #[error("host {0} is not registered")]
    UnknownHost(HostId),
    /// No VM of that name.
    #[error("VM {0} is not registered")]
    UnknownVm(VmId),
    /// VMs are mapped to the host.
    #[error("host {host} still has VMs ({}); migrate or remove them first", vms.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    HostHasVms {
        /// The host.
        host: HostId,
        /// Its VMs.
        vms: Vec<VmId>,
    },
    /// A migration from or to the host, or of the VM, is in progress.
    #[error("{what} is part of migration {id} in progress; wait for it to end or cancel it")]
    Migrating {
        /// The host or VM, in words.
        what: String,
        /// The migration.
        id: MigrationId,
    },
}

/// Why a cancel was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CancelError {
    /// No such migration (or it is too old to be remembered).
    #[error("migration {0} does not exist")]
    UnknownMigration(MigrationId),
    /// The migration already finished.
    #[error("migration {id} already finished: {outcome}")]
    AlreadyFinished {
        /// The migration.
        id: MigrationId,
        /// How it ended.
        outcome: MigrationOutcome,
    },
    /// The VM already runs on the destination (or the hypervisor completed): it can only go
    /// forward.
    #[error(
        "migration {id} is past its switchover ({phase}): the hypervisor reported it complete; \
         it commits when the destination reports the VM running, or on the hypervisor's word \
         once the destination has been silent for the unreachable timeout"
    )]
    TooLate {
        /// The migration.
        id: MigrationId,
        /// Its current phase.
        phase: MigrationPhase,
    },
}

/// Per-host push/ack bookkeeping.
#[derive(Debug, Clone, Default)]
struct HostSync {
    /// Generation of the last config pushed (0: none yet).
    generation: u64,
    /// Highest generation acknowledged.
    acked: u64,
    /// The last config pushed.
    pushed: Option<HostConfig>,
    /// The host's boot epoch, as last seen (`None`: not seen since this controller started).
    boot_epoch: Option<u64>,
    /// When the host was last heard from (an acknowledgement, a status, a VM state report).
    last_heard: Option<Timestamp>,
}

/// What a controller persists to resume after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerSnapshot {
    /// Hosts, VMs and the mapping.
    pub model: Model,
    /// The last generation pushed to each host (restored generations continue above it),
    /// removed hosts included (one registered again continues above its old generations).
    pub generations: BTreeMap<HostId, u64>,
    /// Migrations in progress.
    pub migrations: Vec<Migration>,
    /// Recently finished migrations.
    pub finished: Vec<Migration>,
    /// The next migration id.
    pub next_id: u64,
    /// The store epoch (0 in stores written before epochs: restored as a new epoch).
    #[serde(default)]
    pub epoch: u64,
}

/// A [`ControllerSnapshot`] borrowed from the controller ([`Controller::snapshot_view`]);
/// [`ControllerSnapshot::view`] borrows one from an owned snapshot.
#[derive(Debug, Clone)]
pub struct SnapshotView<'a> {
    /// Hosts, VMs and the mapping.
    pub model: &'a Model,
    /// As [`ControllerSnapshot::generations`] (it serialises the same).
    pub generations: BTreeMap<&'a HostId, u64>,
    /// Migrations in progress, then the recently finished ones.
    pub migrations: Vec<&'a Migration>,
    /// The next migration id.
    pub next_id: u64,
    /// The store epoch.
    pub epoch: u64,
    /// How many of `migrations` are in progress (the rest are finished).
    pub active: usize,
}

impl ControllerSnapshot {
    /// This snapshot as a [`SnapshotView`].
    pub fn view(&self) -> SnapshotView<'_> {
        SnapshotView {
            model: &self.model,
            generations: self.generations.iter().map(|(h, g)| (h, *g)).collect(),
            migrations: self.migrations.iter().chain(&self.finished).collect(),
            next_id: self.next_id,
            epoch: self.epoch,
            active: self.migrations.len(),
        }
    }

    /// Whether the migrations in progress fit the model ([`SnapshotView::check`]).
    pub fn check(&self) -> Result<(), SnapshotError> {
        self.view().check()
    }
}

impl SnapshotView<'_> {
    /// Whether the migrations in progress fit the model, as every state the controller
    /// reaches does: each moves a registered VM between two registered hosts, the VM is on
    /// one of them (its mapping moves from the source to the destination at the commit and
    /// nowhere else), and a VM has at most one. A store holding anything else was damaged or
    /// edited by hand; restoring from it would leave a migration that can never finish (its
    /// VM's reports refused) or two that steer the same VM.
    pub fn check(&self) -> Result<(), SnapshotError> {
        let mut by_vm: BTreeMap<&VmId, MigrationId> = BTreeMap::new();
        for m in &self.migrations[..self.active.min(self.migrations.len())] {
            let core = m.core();
            let id = core.id;
            if matches!(m, Migration::Done(_)) {
                continue;
            }
            let Some(vm) = self.model.vm(&core.vm) else {
                return Err(SnapshotError::UnknownVm {
                    id,
                    vm: core.vm.clone(),
                });
            };
            for host in [&core.from, &core.to] {
                if self.model.host(host).is_none() {
                    return Err(SnapshotError::UnknownHost {
                        id,
                        host: host.clone(),
                    });
                }
            }
            if core.from == core.to {
                return Err(SnapshotError::ToItself {
                    id,
                    host: core.to.clone(),
                });
            }
            if vm.host != core.from && vm.host != core.to {
                return Err(SnapshotError::VmElsewhere {
                    id,
                    vm: core.vm.clone(),
                    host: vm.host.clone(),
                });
            }
            if let Some(first) = by_vm.insert(&core.vm, id) {
                return Err(SnapshotError::TwoMigrations {
                    vm: core.vm.clone(),
                    first,
                    second: id,
                });
            }
        }
        Ok(())
    }
}

/// Why a [`ControllerSnapshot`]'s migrations in progress do not fit its model
/// ([`ControllerSnapshot::check`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// A migration of a VM that is not registered.
    #[error("{id} moves VM {vm}, which is not registered")]
    UnknownVm {
        /// The migration.
        id: MigrationId,
        /// Its VM.
        vm: VmId,
    },
    /// A migration from or to a host that is not registered.
    #[error("{id} names host {host}, which is not registered")]
    UnknownHost {
        /// The migration.
        id: MigrationId,
        /// The unknown host.
        host: HostId,
    },
    /// A migration whose source is its destination.
    #[error("{id} moves its VM from host {host} to itself")]
    ToItself {
        /// The migration.
        id: MigrationId,
        /// Its source and destination.
        host: HostId,
    },
    /// A migration whose VM is on neither of its hosts.
    #[error("{id} moves VM {vm}, which is on host {host}, neither its source nor its destination")]
    VmElsewhere {
        /// The migration.
        id: MigrationId,
        /// Its VM.
        vm: VmId,
        /// Where the model has the VM.
        host: HostId,
    },
    /// Two migrations in progress for one VM.
    #[error("VM {vm} has two migrations in progress, {first} and {second}")]
    TwoMigrations {
        /// The VM.
        vm: VmId,
        /// One migration.
        first: MigrationId,
        /// The other.
        second: MigrationId,
    },
}

/// Which persisted rows may have changed since [`Controller::take_unsaved`] was last called:
/// a store compares only those rows with what it wrote, instead of every host, VM and
/// finished migration at every commit (O(changes) instead of O(hosts + VMs) per commit; at
/// 1,000 hosts the full comparison was a fifth of the controller's CPU).
///
/// Migrations in progress are not listed: a store compares all of them (they are few and
/// change at almost every input).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unsaved {
    /// Every row may have changed (a new or restored controller): compare them all.
    pub all: bool,
    /// Hosts added or removed.
    pub hosts: BTreeSet<HostId>,
    /// VMs added, removed or mapped to another host.
    pub vms: BTreeSet<VmId>,
    /// Finished migrations that changed: those that just finished, those dropped from the
    /// history, and those a late report updated.
    pub finished: BTreeSet<MigrationId>,
}

impl Unsaved {
    /// Every row may have changed.
    pub fn everything() -> Self {
        Unsaved {
            all: true,
            ..Unsaved::default()
        }
    }

    /// Adds what `other` lists (changes not saved yet, and newer ones).
    pub fn merge(&mut self, other: Unsaved) {
        self.all |= other.all;
        self.hosts.extend(other.hosts);
        self.vms.extend(other.vms);
        self.finished.extend(other.finished);
    }

    /// Nothing listed.
    pub fn is_empty(&self) -> bool {
        !self.all && self.hosts.is_empty() && self.vms.is_empty() && self.finished.is_empty()
    }
}

/// What a host says about itself (its `GET /v1/status`): see
/// [`Controller::handle_host_status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostObservation {
    /// srmigd's boot epoch (0: unknown).
    pub boot_epoch: u64,
    /// The version of the host config in force: (`epoch`, `generation`), `None` before the
    /// first one.
    pub in_force: Option<(u64, u64)>,
}

/// The controller core. See the module docs. `Clone` copies it exactly (tests and fuzzing
/// start many runs from one built controller); a controller that restarts is restored from its
/// [`ControllerSnapshot`] instead.
#[derive(Debug, Clone)]
pub struct Controller {
    config: ControllerConfig,
    model: Model,
    sync: BTreeMap<HostId, HostSync>,
    /// The last generation pushed to each removed host: if it is registered again, its srmigd
    /// may still hold that config, so its generations continue above it.
    retired: BTreeMap<HostId, u64>,
    active: BTreeMap<MigrationId, Migration>,
    by_vm: BTreeMap<VmId, MigrationId>,
    finished: VecDeque<Migration>,
    vm_states: BTreeMap<(VmId, HostId), (VmState, Timestamp)>,
    next_id: u64,
    actions: VecDeque<Action>,
    /// The store epoch: carried by every config pushed (see the module docs).
    epoch: u64,
    /// VMs whose mapping or attachment may have changed since the last config sync (model
    /// changes; footprint changes are found by comparing with `synced_footprints`).
    dirty_vms: BTreeSet<VmId>,
    /// The footprints of the last config sync, by VM.
    synced_footprints: BTreeMap<VmId, Footprint>,
    /// The networks attached by those footprints.
    reach: Reach,
    /// Networks whose presence may have changed beyond the VMs in `dirty_vms` (a removed
    /// VM's).
    dirty_networks: BTreeSet<NetworkId>,
    /// A change every host sees (a VM without a network changed, or the data center became
    /// dual-stack): the next sync looks at every host.
    all_hosts_dirty: bool,
    /// Whether the last sync's configs were dual-stack.
    synced_dual_stack: bool,
    /// Hosts not pushed a whole config in this epoch yet.
    unpushed: BTreeSet<HostId>,
    /// Per network, the hosts whose pushed configs hold its VMs (the network was present
    /// there at the last sync).
    told: BTreeMap<NetworkId, BTreeSet<HostId>>,
    /// Per network, the hosts it left and the generation that removed it there: until a
    /// host acknowledges that generation it may still steer to the network's VMs, so a
    /// migration waiting for every host told about a VM waits for these hosts too.
    departed: BTreeMap<NetworkId, BTreeMap<HostId, u64>>,
    /// Rows changed since the last [`Controller::take_unsaved`].
    unsaved: Unsaved,
}

impl Controller {
    /// An empty controller, epoch 0 (see [`Controller::with_epoch`]).
    pub fn new(config: ControllerConfig) -> Self {
        Controller::with_epoch(config, 0)
    }

    /// An empty controller on a new store of epoch `epoch`: it must be above the epoch of any
    /// store used before (the daemon takes its clock in milliseconds).
    pub fn with_epoch(config: ControllerConfig, epoch: u64) -> Self {
        Controller {
            epoch,
            config,
            model: Model::new(),
            sync: BTreeMap::new(),
            retired: BTreeMap::new(),
            active: BTreeMap::new(),
            by_vm: BTreeMap::new(),
            finished: VecDeque::new(),
            vm_states: BTreeMap::new(),
            next_id: 1,
            actions: VecDeque::new(),
            dirty_vms: BTreeSet::new(),
            synced_footprints: BTreeMap::new(),
            reach: Reach::default(),
            dirty_networks: BTreeSet::new(),
            all_hosts_dirty: false,
            synced_dual_stack: false,
            unpushed: BTreeSet::new(),
            told: BTreeMap::new(),
            departed: BTreeMap::new(),
            unsaved: Unsaved::everything(),
        }
    }

    /// Registers a host; it is pushed its first config.
    pub fn add_host(&mut self, info: HostInfo) -> Result<(), ModelError> {
        let name = info.name.clone();
        self.model.add_host(info)?;
        self.unsaved.hosts.insert(name.clone());
        self.unpushed.insert(name.clone());
        if let Some(generation) = self.retired.remove(&name) {
            let sync = HostSync {
                generation,
                ..HostSync::default()
            };
            self.sync.insert(name, sync);
        }
        self.sync_configs();
        Ok(())
    }

    /// Registers a VM; every host is pushed a config with its mapping.
    pub fn add_vm(&mut self, info: VmInfo) -> Result<(), ModelError> {
        let name = info.name.clone();
        self.model.add_vm(info)?;
        self.unsaved.vms.insert(name.clone());
        self.dirty_vms.insert(name);
        self.sync_configs();
        Ok(())
    }

    /// Accepts or refuses a migration; on acceptance the first actions are queued.
    pub fn request_migration(
        &mut self,
        now: Timestamp,
        req: MigrateRequest,
    ) -> Result<MigrationId, RefuseReason> {
        let vm = self
            .model
            .vm(&req.vm)
            .ok_or_else(|| RefuseReason::UnknownVm(req.vm.clone()))?;
        if self.model.host(&req.to).is_none() {
            return Err(RefuseReason::UnknownHost(req.to));
        }
        if let Some(&id) = self.by_vm.get(&req.vm) {
            return Err(RefuseReason::AlreadyMigrating { vm: req.vm, id });
        }
        if vm.host == req.to {
            return Err(RefuseReason::AlreadyOnHost {
                vm: req.vm,
                host: req.to,
            });
        }
        let id = MigrationId(self.next_id);
        self.next_id = self
            .next_id
            .checked_add(1)
            .ok_or(RefuseReason::NoIdLeft(id))?;
        let requested = Requested::new(
            id,
            req.vm.clone(),
            vm.host.clone(),
            req.to,
            req.strategy,
            now,
        );
        self.by_vm.insert(req.vm, id);
        self.active.insert(id, Migration::Requested(requested));
        let t = self.config.timeouts;
        self.transition(id, now, |m| match m {
            Migration::Requested(r) => match r.begin(now, &t) {
                Begun::Prepare(s) => Migration::ExpectEndpointAcks(s),
                Begun::Migrate(s) => Migration::ExpectHypervisorDone(s),
            },
            other => other,
        });
        Ok(id)
    }

    /// Asks to cancel a migration. Before the hypervisor is involved this rolls back at once;
    /// during the migration it sends `CancelMigration` and rolls back when the hypervisor
    /// confirms.
    pub fn cancel_migration(&mut self, now: Timestamp, id: MigrationId) -> Result<(), CancelError> {
        let t = self.config.timeouts;
        let Some(m) = self.active.get_mut(&id) else {
            return match self.finished.iter().find(|m| m.core().id == id) {
                Some(done) => Err(CancelError::AlreadyFinished {
                    id,
                    outcome: done
                        .outcome()
                        .cloned()
                        .unwrap_or(MigrationOutcome::Cancelled),
                }),
                None => Err(CancelError::UnknownMigration(id)),
            };
        };
        match m {
            Migration::Requested(_)
            | Migration::ExpectEndpointAcks(_)
            | Migration::ExpectPathAcks(_) => {
                self.transition(id, now, |m| match m {
                    Migration::ExpectEndpointAcks(s) => {
                        Migration::ExpectRollbackAcks(s.cancel(now))
                    }
                    Migration::ExpectPathAcks(s) => Migration::ExpectRollbackAcks(s.cancel(now)),
                    other => other,
                });
                Ok(())
            }
            Migration::ExpectHypervisorDone(s) => {
                if s.hypervisor_completed {
                    return Err(CancelError::TooLate {
                        id,
                        phase: MigrationPhase::ExpectHypervisorDone,
                    });
                }
                if s.request_cancel(now, &t) {
                    self.actions.push_back(Action::CancelMigration {
                        id,
                        vm: s.core.vm.clone(),
                        from: s.core.from.clone(),
                        to: s.core.to.clone(),
                    });
                }
                Ok(())
            }
            // Past the switchover or already rolling back: nothing to undo, only waiting to
            // stop. The hosts that have not acknowledged are left behind now (they get the
            // current config when they answer), and the migration ends.
            Migration::ExpectCommitAcks(_)
            | Migration::ExpectRollbackAcks(_)
            | Migration::ExpectCleanupAcks(_) => {
                m.core_mut().cancel_requested = true;
                m.core_mut().record(MigrationPhase::CancelRequested, now);
                self.leave_behind(id, now);
                Ok(())
            }
            Migration::Done(d) => Err(CancelError::AlreadyFinished {
                id,
                outcome: d.outcome.clone(),
            }),
        }
    }

    /// Removes a host: refused while VMs are mapped to it or a migration goes from or to it.
    /// Migrations waiting for its acknowledgement stop waiting for it; nothing is pushed to it
    /// any more (the daemon stops its push task).
    pub fn remove_host(&mut self, now: Timestamp, host: &HostId) -> Result<(), RemoveError> {
        if self.model.host(host).is_none() {
            return Err(RemoveError::UnknownHost(host.clone()));
        }
        if let Some(m) = self
            .active
            .values()
            .find(|m| &m.core().from == host || &m.core().to == host)
        {
            return Err(RemoveError::Migrating {
                what: format!("host {host}"),
                id: m.core().id,
            });
        }
        let vms: Vec<VmId> = self
            .model
            .vms()
            .filter(|v| &v.host == host)
            .map(|v| v.name.clone())
            .collect();
        if !vms.is_empty() {
            return Err(RemoveError::HostHasVms {
                host: host.clone(),
                vms,
            });
        }
        self.model.remove_host(host);
        self.unsaved.hosts.insert(host.clone());
        self.unpushed.remove(host);
        for told in self.told.values_mut() {
            told.remove(host);
        }
        for departed in self.departed.values_mut() {
            departed.remove(host);
        }
        if let Some(sync) = self.sync.remove(host) {
            self.retired.insert(host.clone(), sync.generation);
        }
        self.vm_states.retain(|(_, h), _| h != host);
        let ids: Vec<MigrationId> = self.active.keys().copied().collect();
        for id in ids {
            if let Some(w) = self.active.get_mut(&id).and_then(Migration::wait_mut) {
                w.forget(host);
            }
            self.advance_if_acked(id, now);
        }
        Ok(())
    }

    /// Removes a VM: refused while it migrates. Every host is pushed a config without it.
    pub fn remove_vm(&mut self, vm: &VmId) -> Result<(), RemoveError> {
        if self.model.vm(vm).is_none() {
            return Err(RemoveError::UnknownVm(vm.clone()));
        }
        if let Some(&id) = self.by_vm.get(vm) {
            return Err(RemoveError::Migrating {
                what: format!("VM {vm}"),
                id,
            });
        }
        match self.model.vm(vm).and_then(|v| v.network.clone()) {
            Some(n) => {
                self.dirty_networks.insert(n);
            }
            None => self.all_hosts_dirty = true,
        }
        self.model.remove_vm(vm);
        self.unsaved.vms.insert(vm.clone());
        self.dirty_vms.insert(vm.clone());
        self.vm_states.retain(|(v, _), _| v != vm);
        self.sync_configs();
        Ok(())
    }

    /// A host acknowledges a version: its config (`epoch`, `generation`) is in force in the
    /// srmigd of boot epoch `boot_epoch` (see the module docs for what epochs change).
    pub fn handle_ack(&mut self, now: Timestamp, ack: Ack) -> Result<(), InputError> {
        self.heard(&ack.host, now);
        let sync = self
            .sync
            .get(&ack.host)
            .ok_or_else(|| InputError::UnknownHost(ack.host.clone()))?;
        if ack.epoch > self.epoch || (ack.epoch == self.epoch && ack.generation > sync.generation) {
            // Never pushed by this controller: the host is ahead of it.
            self.host_ahead(&ack.host, (ack.epoch, ack.generation));
            return Ok(());
        }
        let restarted = self.observe_boot(&ack.host, ack.boot_epoch);
        if ack.epoch < self.epoch {
            // An older epoch's config is in force there; ours is on its way (or must be).
            if restarted {
                self.host_lost_config(&ack.host, 0);
            }
            return Ok(());
        }
        if restarted {
            self.host_lost_config(&ack.host, ack.generation);
        }
        self.on_acked(now, &ack.host, ack.generation);
        Ok(())
    }

    /// What a host's status says (polled): its boot epoch and the version in force. A new
    /// boot epoch, or a host that lost what it acknowledged, gets its config again; a host
    /// ahead of this controller moves it to a newer epoch; a version of ours in force counts
    /// as an acknowledgement (one may have been lost).
    pub fn handle_host_status(
        &mut self,
        now: Timestamp,
        host: &HostId,
        seen: HostObservation,
    ) -> Result<(), InputError> {
        self.heard(host, now);
        let sync = self
            .sync
            .get(host)
            .ok_or_else(|| InputError::UnknownHost(host.clone()))?;
        let (pushed, acked) = (sync.generation, sync.acked);
        let ours = match seen.in_force {
            Some((e, g)) if e > self.epoch || (e == self.epoch && g > pushed) => {
                self.host_ahead(host, (e, g));
                return Ok(());
            }
            Some((e, g)) if e == self.epoch => Some(g),
            _ => None,
        };
        let restarted = self.observe_boot(host, seen.boot_epoch);
        let holds = ours.unwrap_or(0);
        if restarted || holds < acked {
            self.host_lost_config(host, holds);
        }
        if let Some(g) = ours {
            self.on_acked(now, host, g);
        }
        Ok(())
    }

    /// The store epoch (carried by every config pushed).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// A host reports a VM's state there.
    pub fn handle_vm_state(
        &mut self,
        now: Timestamp,
        report: VmStateReport,
    ) -> Result<(), InputError> {
        if self.model.host(&report.host).is_none() {
            return Err(InputError::UnknownHost(report.host));
        }
        self.heard(&report.host, now);
        // The host restarted (whatever the VM: a report about a VM the controller does not
        // know still tells that).
        if let Some(b) = report.boot_epoch {
            if self.observe_boot(&report.host, b) {
                self.host_lost_config(&report.host, 0);
            }
        }
        if self.model.vm(&report.vm).is_none() {
            return Err(InputError::UnknownVm(report.vm));
        }
        self.vm_states.insert(
            (report.vm.clone(), report.host.clone()),
            (report.state, now),
        );
        let Some(&id) = self.by_vm.get(&report.vm) else {
            return Ok(());
        };
        // The source's own report says when it last delivered to the VM; the controller's
        // poll of the source may have told the pause first, without that.
        if let (Some(m), VmState::Paused, Some(us)) = (
            self.active.get_mut(&id),
            report.state,
            report.last_delivery_us,
        ) {
            let core = m.core_mut();
            if core.from == report.host && core.delivery.source_last_delivery_us.is_none() {
                core.delivery.source_last_delivery_us = Some(us);
            }
        }
        let Some(Migration::ExpectHypervisorDone(s)) = self.active.get_mut(&id) else {
            return Ok(());
        };
        if report.host == s.core.to && report.state == VmState::Running {
            self.transition(id, now, |m| match m {
                Migration::ExpectHypervisorDone(s) => {
                    Migration::ExpectCommitAcks(s.destination_running(now))
                }
                other => other,
            });
        } else if report.host == s.core.from && report.state == VmState::Paused {
            s.source_paused(now);
        }
        Ok(())
    }

    /// A host's report about a VM: both must be known; the host was heard from.
    fn report_from(&mut self, now: Timestamp, host: &HostId, vm: &VmId) -> Result<(), InputError> {
        if self.model.host(host).is_none() {
            return Err(InputError::UnknownHost(host.clone()));
        }
        self.heard(host, now);
        if self.model.vm(vm).is_none() {
            return Err(InputError::UnknownVm(vm.clone()));
        }
        Ok(())
    }

    /// A VM resumed on a host and got its first frame there: recorded in the VM's migration
    /// to that host (the one in progress, or the last one that finished, if it has no release
    /// yet), from which the release latency and the network downtime are derived
    /// ([`srmig_api::MigrationFigures`]). A report matching no such migration (a resume
    /// after a restart, a VM paused and resumed in place) changes nothing.
    pub fn handle_release_report(
        &mut self,
        now: Timestamp,
        report: ReleaseReport,
    ) -> Result<(), InputError> {
        self.report_from(now, &report.host, &report.vm)?;
        let active = self
            .by_vm
            .get(&report.vm)
            .and_then(|id| self.active.get_mut(id))
            .map(Migration::core_mut);
        let core = match active {
            Some(core) => Some(core),
            None => self
                .finished
                .iter_mut()
                .rev()
                .map(Migration::core_mut)
                .find(|c| c.vm == report.vm),
        };
        if let Some(core) = core {
            if core.to == report.host && core.delivery.release.is_none() {
                core.delivery.release = Some(report.release);
                self.unsaved.finished.insert(core.id);
            }
        }
        Ok(())
    }

    /// The destination reports a commit-fence marker for a VM: the host whose underlay
    /// address sent it has switched to the direct path, and nothing of its is left on the old
    /// one. Once every host's marker came (and the drain is over), the cleanup starts. A
    /// report for a VM not committing to that host, or from an address that is no host's
    /// underlay, changes nothing.
    pub fn handle_fence_report(
        &mut self,
        now: Timestamp,
        report: FenceReport,
    ) -> Result<(), InputError> {
        self.report_from(now, &report.host, &report.vm)?;
        let Some(&id) = self.by_vm.get(&report.vm) else {
            return Ok(());
        };
        let Some(ingress) = self
            .model
            .host_by_underlay(&report.ingress)
            .map(|h| h.name.clone())
        else {
            return Ok(());
        };
        let Some(Migration::ExpectCommitAcks(s)) = self.active.get_mut(&id) else {
            return Ok(());
        };
        if s.core.to != report.host {
            return Ok(());
        }
        s.marker_seen(ingress, now);
        if s.fence_complete() {
            self.advance_if_acked(id, now);
        }
        Ok(())
    }

    /// The hypervisor driver reports on a migration it was asked to run. Events for a
    /// migration that is not waiting for its hypervisor (stale, or for an older migration of
    /// the same VM) are ignored.
    pub fn handle_hypervisor(
        &mut self,
        now: Timestamp,
        report: HypervisorReport,
    ) -> Result<(), InputError> {
        if self.model.vm(&report.vm).is_none() {
            return Err(InputError::UnknownVm(report.vm));
        }
        let id = report.migration;
        let Some(Migration::ExpectHypervisorDone(s)) = self.active.get_mut(&id) else {
            return Ok(());
        };
        if s.core.vm != report.vm {
            return Ok(());
        }
        let outcome = match report.event {
            HypervisorEvent::Completed => {
                s.hypervisor_completed(now, &self.config.timeouts);
                return Ok(());
            }
            HypervisorEvent::Failed(reason) => {
                MigrationOutcome::Failed(format!("the hypervisor failed the migration: {reason}"))
            }
            HypervisorEvent::Cancelled if s.core.cancel_requested => MigrationOutcome::Cancelled,
            HypervisorEvent::Cancelled if s.cancel_sent => MigrationOutcome::Failed(format!(
                "the hypervisor did not finish within {} ms and was cancelled",
                self.config.timeouts.hypervisor_ms
            )),
            HypervisorEvent::Cancelled => {
                MigrationOutcome::Failed("the hypervisor cancelled the migration".into())
            }
        };
        self.transition(id, now, |m| match m {
            Migration::ExpectHypervisorDone(s) => {
                Migration::ExpectRollbackAcks(s.hypervisor_gave_up(now, outcome))
            }
            other => other,
        });
        Ok(())
    }

    /// The earliest deadline of any migration.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.active.values().filter_map(Migration::deadline).min()
    }

    /// Acts on every deadline at or before `now`.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        let t = self.config.timeouts;
        let due: Vec<MigrationId> = self
            .active
            .iter()
            .filter(|(_, m)| m.deadline().is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(m) = self.active.get(&id) else {
                continue;
            };
            match m {
                Migration::ExpectEndpointAcks(_) | Migration::ExpectPathAcks(_) => {
                    let reason = format!(
                        "{} did not acknowledge within {} ms",
                        m.wait().map(AckWait::describe_laggards).unwrap_or_default(),
                        t.ack_ms
                    );
                    self.transition(id, now, |m| match m {
                        Migration::ExpectEndpointAcks(s) => {
                            Migration::ExpectRollbackAcks(s.abort(now, reason))
                        }
                        Migration::ExpectPathAcks(s) => {
                            Migration::ExpectRollbackAcks(s.abort(now, reason))
                        }
                        other => other,
                    });
                }
                Migration::ExpectHypervisorDone(s) => {
                    let heard = self.sync.get(&s.core.to).and_then(|h| h.last_heard);
                    let Some(Migration::ExpectHypervisorDone(s)) = self.active.remove(&id) else {
                        continue;
                    };
                    match s.timed_out(now, &t, heard) {
                        HypervisorTimeout::SendCancel(s) => {
                            self.actions.push_back(Action::CancelMigration {
                                id,
                                vm: s.core.vm.clone(),
                                from: s.core.from.clone(),
                                to: s.core.to.clone(),
                            });
                            self.active.insert(id, Migration::ExpectHypervisorDone(s));
                        }
                        HypervisorTimeout::Stalled(s) => {
                            self.active.insert(id, Migration::ExpectHypervisorDone(s));
                        }
                        HypervisorTimeout::CommitUnconfirmed(s) => {
                            self.active.insert(id, Migration::ExpectHypervisorDone(s));
                            self.transition(id, now, |m| match m {
                                Migration::ExpectHypervisorDone(s) => {
                                    Migration::ExpectCommitAcks(s.commit_unconfirmed(now))
                                }
                                other => other,
                            });
                        }
                    }
                }
                Migration::ExpectCommitAcks(c) if c.wait.is_complete() => {
                    // The drain after the commit is over.
                    self.advance_if_acked(id, now);
                }
                Migration::ExpectCommitAcks(_)
                | Migration::ExpectRollbackAcks(_)
                | Migration::ExpectCleanupAcks(_)
                    if m.wait().is_some_and(|w| {
                        (u64::from(w.retries()) + 1).saturating_mul(t.ack_ms) >= t.unreachable_ms
                    }) =>
                {
                    self.leave_behind(id, now);
                }
                Migration::ExpectCommitAcks(_)
                | Migration::ExpectRollbackAcks(_)
                | Migration::ExpectCleanupAcks(_) => {
                    let laggards: Vec<HostId> = m
                        .wait()
                        .map(|w| w.pending().keys().cloned().collect())
                        .unwrap_or_default();
                    for host in &laggards {
                        self.repush(host);
                    }
                    if let Some(m) = self.active.get_mut(&id) {
                        m.retry_wait(now, now.plus_ms(t.ack_ms));
                    }
                }
                Migration::Requested(_) | Migration::Done(_) => {}
            }
        }
    }

    /// The next action to carry out, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Hosts, VMs and the current mapping.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The last config pushed to a host.
    pub fn pushed_config(&self, host: &HostId) -> Option<&HostConfig> {
        self.sync.get(host).and_then(|s| s.pushed.as_ref())
    }

    /// The highest generation a host acknowledged (0: none).
    pub fn acked_generation(&self, host: &HostId) -> Option<u64> {
        self.sync.get(host).map(|s| s.acked)
    }

    /// The last state a host reported for a VM.
    pub fn vm_state(&self, vm: &VmId, host: &HostId) -> Option<VmState> {
        self.vm_states
            .get(&(vm.clone(), host.clone()))
            .map(|(state, _)| *state)
    }

    /// The migration in progress for a VM.
    pub fn migration_of(&self, vm: &VmId) -> Option<MigrationId> {
        self.by_vm.get(vm).copied()
    }

    /// A migration in progress or recently finished.
    pub fn migration(&self, id: MigrationId) -> Option<&Migration> {
        self.active
            .get(&id)
            .or_else(|| self.finished.iter().find(|m| m.core().id == id))
    }

    /// Status of every migration in progress, then of the recently finished ones.
    pub fn statuses(&self) -> Vec<MigrationStatus> {
        self.migrations().map(Migration::status).collect()
    }

    /// Every migration in progress, then the recently finished ones: what
    /// [`Controller::statuses`] reports, borrowed (nothing copied).
    pub fn migrations(&self) -> impl Iterator<Item = &Migration> {
        self.active.values().chain(self.finished.iter())
    }

    /// Number of migrations in progress.
    pub fn active_migrations(&self) -> usize {
        self.active.len()
    }

    /// Everything needed to resume after a restart.
    pub fn snapshot(&self) -> ControllerSnapshot {
        ControllerSnapshot {
            model: self.model.clone(),
            generations: self
                .sync
                .iter()
                .map(|(h, s)| (h.clone(), s.generation))
                .chain(self.retired.iter().map(|(h, g)| (h.clone(), *g)))
                .collect(),
            migrations: self.active.values().cloned().collect(),
            finished: self.finished.iter().cloned().collect(),
            next_id: self.next_id,
            epoch: self.epoch,
        }
    }

    /// What [`Controller::snapshot`] holds, borrowed: for a store that writes only the rows
    /// that changed, without copying the whole model at every commit.
    pub fn snapshot_view(&self) -> SnapshotView<'_> {
        SnapshotView {
            model: &self.model,
            generations: self
                .sync
                .iter()
                .map(|(h, s)| (h, s.generation))
                .chain(self.retired.iter().map(|(h, g)| (h, *g)))
                .collect(),
            migrations: self.migrations().collect(),
            next_id: self.next_id,
            epoch: self.epoch,
            active: self.active.len(),
        }
    }

    /// The rows changed since the last call (see [`Unsaved`]); a new or restored controller
    /// starts with [`Unsaved::everything`]. A caller whose save fails keeps what this
    /// returned and merges it into the next.
    pub fn take_unsaved(&mut self) -> Unsaved {
        std::mem::take(&mut self.unsaved)
    }

    /// Rebuilds a controller from a snapshot. What hosts applied meanwhile is unknown, so every
    /// host is pushed its config again (with a generation above any it saw), every wait is
    /// re-armed on those pushes, and hypervisor waits get a fresh deadline. The daemon must
    /// have its agents re-send their VM states and the hypervisor driver re-report.
    ///
    /// A snapshot without an epoch (written before epochs) gets `now` as its epoch.
    pub fn restore(now: Timestamp, config: ControllerConfig, snapshot: ControllerSnapshot) -> Self {
        let epoch = if snapshot.epoch == 0 {
            now.0
        } else {
            snapshot.epoch
        };
        let mut c = Controller::with_epoch(config, epoch);
        c.model = snapshot.model;
        // Above every id the store holds, finished ones included (a `next_id` lower than
        // those, from a damaged store, would give a new migration a finished one's id).
        c.next_id = snapshot
            .migrations
            .iter()
            .chain(&snapshot.finished)
            .map(|m| m.core().id.0.saturating_add(1))
            .fold(snapshot.next_id.max(1), u64::max);
        c.unpushed = c.model.hosts().map(|h| h.name.clone()).collect();
        for host in c.model.hosts() {
            let generation = snapshot.generations.get(&host.name).copied().unwrap_or(0);
            c.sync.insert(
                host.name.clone(),
                HostSync {
                    generation,
                    acked: 0,
                    pushed: None,
                    boot_epoch: None,
                    last_heard: None,
                },
            );
        }
        c.retired = snapshot
            .generations
            .into_iter()
            .filter(|(h, _)| c.model.host(h).is_none())
            .collect();
        for m in snapshot.finished {
            c.remember_finished(m);
        }
        let mut ids = Vec::new();
        for m in snapshot.migrations {
            let id = m.core().id;
            if let Migration::Done(_) = m {
                c.remember_finished(m);
                continue;
            }
            c.by_vm.insert(m.core().vm.clone(), id);
            c.active.insert(id, m);
            ids.push(id);
        }
        c.sync_configs();
        let t = config.timeouts;
        for id in ids {
            match c.active.get_mut(&id) {
                Some(Migration::Requested(_)) => {
                    c.transition(id, now, |m| match m {
                        Migration::Requested(r) => match r.begin(now, &t) {
                            Begun::Prepare(s) => Migration::ExpectEndpointAcks(s),
                            Begun::Migrate(s) => Migration::ExpectHypervisorDone(s),
                        },
                        other => other,
                    });
                }
                Some(Migration::ExpectHypervisorDone(s)) => {
                    s.deadline = now.plus_ms(if s.cancel_sent {
                        t.cancel_grace_ms
                    } else {
                        t.hypervisor_ms
                    });
                }
                _ => {
                    c.arm(id, now);
                    c.advance_if_acked(id, now);
                }
            }
        }
        c
    }

    // ----- internals -----

    /// Replaces migration `id`'s state by `f(state)` and runs the new state's entry effects.
    fn transition(
        &mut self,
        id: MigrationId,
        now: Timestamp,
        f: impl FnOnce(Migration) -> Migration,
    ) {
        let Some(m) = self.active.remove(&id) else {
            return;
        };
        let before = m.phase();
        let next = f(m);
        let changed = next.phase() != before;
        self.active.insert(id, next);
        if changed {
            self.on_enter(id, now);
        }
    }

    /// Entry effects of the state migration `id` just entered.
    fn on_enter(&mut self, id: MigrationId, now: Timestamp) {
        if let Some(Migration::ExpectCommitAcks(s)) = self.active.get_mut(&id) {
            let (vm, to) = (s.core.vm.clone(), s.core.to.clone());
            if s.core.strategy.is_sr() {
                // Every host told about the VM had the SR path; each sends a marker as it
                // leaves it.
                if let Some(info) = self.model.vm(&vm) {
                    s.expect_markers = self
                        .model
                        .hosts_reaching(info, &self.reach)
                        .into_iter()
                        .collect();
                }
            }
            self.model.set_vm_host(&vm, &to);
            self.unsaved.vms.insert(vm.clone());
            self.dirty_vms.insert(vm.clone());
        }
        self.sync_configs();
        match self.active.get(&id) {
            Some(Migration::ExpectHypervisorDone(s)) => {
                self.actions.push_back(Action::StartMigration {
                    id,
                    vm: s.core.vm.clone(),
                    from: s.core.from.clone(),
                    to: s.core.to.clone(),
                    strategy: s.core.strategy,
                });
            }
            Some(Migration::Done(_)) => {
                self.finish(id);
                return;
            }
            _ => {}
        }
        self.arm(id, now);
        self.advance_if_acked(id, now);
    }

    /// Arms the wait of migration `id` on the hosts in its scope that have not acknowledged
    /// their last push.
    fn arm(&mut self, id: MigrationId, now: Timestamp) {
        let Some(m) = self.active.get_mut(&id) else {
            return;
        };
        let Some(scope) = m.ack_scope() else {
            return;
        };
        let hosts: Vec<HostId> = match scope {
            AckScope::Endpoints => vec![m.core().from.clone(), m.core().to.clone()],
            // Every host told about the VM (every host for a VM without a network), and the
            // hosts its network left that may not have applied that yet.
            AckScope::AllHosts => match self.model.vm(&m.core().vm) {
                Some(info) => {
                    let mut hosts = self.model.hosts_reaching(info, &self.reach);
                    if let Some(departed) =
                        info.network.as_ref().and_then(|n| self.departed.get_mut(n))
                    {
                        let sync = &self.sync;
                        departed.retain(|h, g| sync.get(h).is_some_and(|s| s.acked < *g));
                        hosts.extend(departed.keys().cloned());
                    }
                    hosts
                }
                None => self.model.hosts().map(|h| h.name.clone()).collect(),
            },
        };
        let pending = hosts
            .into_iter()
            .filter_map(|h| {
                let s = self.sync.get(&h)?;
                (s.acked < s.generation).then_some((h, s.generation))
            })
            .collect();
        if let Some(wait) = m.wait_mut() {
            wait.arm(pending, now.plus_ms(self.config.timeouts.ack_ms));
        }
    }

    /// Moves migration `id` on if its acknowledgement wait is complete.
    fn advance_if_acked(&mut self, id: MigrationId, now: Timestamp) {
        let complete = self
            .active
            .get(&id)
            .and_then(Migration::wait)
            .is_some_and(AckWait::is_complete);
        if !complete {
            return;
        }
        let t = self.config.timeouts;
        // Commit acknowledged everywhere: keep End.S/End.SBUF for the drain period, and until
        // every host's commit-fence marker reached D (bounded by `fence_wait_ms`).
        if let Some(Migration::ExpectCommitAcks(s)) = self.active.get_mut(&id) {
            if !s.may_clean_up(now, &t) {
                return;
            }
        }
        self.transition(id, now, |m| match m {
            Migration::ExpectEndpointAcks(s) => {
                Migration::ExpectPathAcks(s.endpoints_installed(now))
            }
            Migration::ExpectPathAcks(s) => {
                Migration::ExpectHypervisorDone(s.path_installed(now, &t))
            }
            Migration::ExpectCommitAcks(s) => Migration::ExpectCleanupAcks(s.committed(now)),
            Migration::ExpectRollbackAcks(s) => Migration::ExpectCleanupAcks(s.rolled_back(now)),
            Migration::ExpectCleanupAcks(s) => Migration::Done(s.cleaned(now)),
            other => other,
        });
    }

    fn finish(&mut self, id: MigrationId) {
        let Some(m) = self.active.remove(&id) else {
            return;
        };
        let vm = m.core().vm.clone();
        if self.by_vm.get(&vm) == Some(&id) {
            self.by_vm.remove(&vm);
        }
        if let Some(outcome) = m.outcome() {
            self.actions.push_back(Action::MigrationFinished {
                id,
                vm,
                outcome: outcome.clone(),
            });
        }
        self.remember_finished(m);
    }

    fn remember_finished(&mut self, m: Migration) {
        self.unsaved.finished.insert(m.core().id);
        // In finish order (at the back, unless restored or the clock went back), so that the
        // oldest finished goes first and a restore from the store keeps the same history.
        let key = m.finish_order();
        let at = self
            .finished
            .iter()
            .rposition(|f| f.finish_order() <= key)
            .map_or(0, |i| i + 1);
        self.finished.insert(at, m);
        while self.finished.len() > self.config.finished_history {
            if let Some(old) = self.finished.pop_front() {
                self.unsaved.finished.insert(old.core().id);
            }
        }
    }

    /// Pushes every host whose desired state changed what changed: a delta with the
    /// mappings of the VMs that changed (O(changed VMs) per host, not O(all VMs)), or the
    /// complete config to a host not pushed yet in this epoch.
    ///
    /// What a VM's entries on a host depend on: the VM (its host, addresses, MAC, network),
    /// its migration's footprint, whether its network is present on the host, and the hosts
    /// involved, which cannot change while the VM or the migration exists. So the entries
    /// that can change are those of the VMs the model changed (`dirty_vms`), of the VMs whose
    /// footprint changed since the last sync, and, on a host a network appeared on or left,
    /// of that network's VMs. A network's presence changes only with its own VMs, so only
    /// the hosts of the dirty VMs' networks (before and after) are looked at, with the
    /// sources and destinations whose SID tables changed; every host only for a change to a
    /// VM without a network or to the dual-stack switch.
    fn sync_configs(&mut self) {
        let footprints: Vec<Footprint> = self
            .active
            .values()
            .filter_map(Migration::footprint)
            .collect();
        let fps = self.model.footprints_by_vm(&footprints);
        let mut dirty = std::mem::take(&mut self.dirty_vms);
        for (vm, f) in &fps {
            if self.synced_footprints.get(vm) != Some(*f) {
                dirty.insert(vm.clone());
            }
        }
        for vm in self.synced_footprints.keys() {
            if !fps.contains_key(vm) {
                dirty.insert(vm.clone());
            }
        }
        let reach = self.model.reach(&fps);
        let dual_stack = self.model.dual_stack();
        let mut all_hosts =
            std::mem::take(&mut self.all_hosts_dirty) || dual_stack != self.synced_dual_stack;
        let mut hosts: BTreeSet<HostId> = std::mem::take(&mut self.unpushed);
        let mut nets = std::mem::take(&mut self.dirty_networks);
        for vm in &dirty {
            match self.model.vm(vm).map(|v| &v.network) {
                Some(Some(n)) => {
                    nets.insert(n.clone());
                }
                Some(None) => all_hosts = true,
                None => {}
            }
            // SID tables: the source and the destination, before and after.
            for f in fps
                .get(vm)
                .copied()
                .into_iter()
                .chain(self.synced_footprints.get(vm))
            {
                hosts.insert(f.from.clone());
                hosts.insert(f.to.clone());
            }
        }
        // Hosts a network appeared on or left get all of its VMs looked at.
        let mut also: BTreeMap<HostId, BTreeSet<VmId>> = BTreeMap::new();
        let mut departed = Vec::new();
        for n in &nets {
            let now = self.model.network_hosts(n, &reach);
            let before = self.told.remove(n).unwrap_or_default();
            departed.extend(before.difference(&now).map(|h| (n.clone(), h.clone())));
            for h in now.symmetric_difference(&before) {
                also.entry(h.clone())
                    .or_default()
                    .extend(self.model.network_vms(n).cloned());
            }
            hosts.extend(before);
            hosts.extend(now.iter().cloned());
            if !now.is_empty() {
                self.told.insert(n.clone(), now);
            }
        }
        // (By reference: a sync of every host copies no host name it does not push to.)
        let names: Box<dyn Iterator<Item = &HostId>> = if all_hosts {
            Box::new(self.model.hosts().map(|h| &h.name))
        } else {
            Box::new(hosts.iter().filter(|h| self.model.host(h).is_some()))
        };
        for name in names {
            // Looked up before inserting: no copy of the name for the hosts already known.
            if !self.sync.contains_key(name) {
                self.sync.insert(name.clone(), HostSync::default());
            }
            let Some(sync) = self.sync.get_mut(name) else {
                continue;
            };
            let action = match sync.pushed.as_mut() {
                Some(pushed) if pushed.epoch == self.epoch => {
                    let Some(mut delta) = config_delta(
                        &self.model,
                        name,
                        pushed,
                        (&dirty, also.get(name)),
                        (&fps, &reach),
                        dual_stack,
                    ) else {
                        continue;
                    };
                    sync.generation = sync.generation.saturating_add(1);
                    delta.generation = sync.generation;
                    pushed.generation = sync.generation;
                    Action::PushDelta {
                        host: name.clone(),
                        delta,
                    }
                }
                _ => {
                    let Some(mut config) = self.model.host_config_with(
                        name,
                        sync.generation.saturating_add(1),
                        &fps,
                        &reach,
                    ) else {
                        continue;
                    };
                    // The networks this whole config holds.
                    for n in self.model.networks_on(name, &reach) {
                        self.told.entry(n).or_default().insert(name.clone());
                    }
                    config.epoch = self.epoch;
                    if sync
                        .pushed
                        .as_ref()
                        .is_some_and(|p| p.same_state(&config) && p.epoch == config.epoch)
                    {
                        continue;
                    }
                    sync.generation = config.generation;
                    sync.pushed = Some(config.clone());
                    Action::PushConfig {
                        host: name.clone(),
                        config,
                    }
                }
            };
            self.actions.push_back(action);
        }
        for (n, h) in departed {
            if let Some(sync) = self.sync.get(&h) {
                self.departed
                    .entry(n)
                    .or_default()
                    .insert(h, sync.generation);
            }
        }
        self.check_synced(&fps, &reach);
        self.synced_footprints = fps.into_iter().map(|(vm, f)| (vm, f.clone())).collect();
        self.synced_dual_stack = dual_stack;
        self.reach = reach;
    }

    /// In debug builds (tests), with up to 100,000 mapping entries in all: every host's
    /// incrementally kept config equals the one computed whole.
    fn check_synced(&self, fps: &BTreeMap<VmId, &Footprint>, reach: &Reach) {
        if !cfg!(debug_assertions)
            || self.sync.len().saturating_mul(self.model.vm_count()) > 100_000
        {
            return;
        }
        for (host, sync) in &self.sync {
            let (Some(pushed), Some(whole)) = (
                &sync.pushed,
                self.model
                    .host_config_with(host, sync.generation, fps, reach),
            ) else {
                continue;
            };
            assert!(
                pushed.same_state(&whole),
                "the incremental config of {host} diverged from the whole one:\n{pushed:?}\n{whole:?}"
            );
        }
    }

    /// Stops migration `id` waiting for the hosts that have not acknowledged its current
    /// phase (see [`Timeouts::unreachable_ms`]) and moves it on.
    fn leave_behind(&mut self, id: MigrationId, now: Timestamp) {
        let Some(m) = self.active.get_mut(&id) else {
            return;
        };
        let hosts = m.wait_mut().map(AckWait::abandon).unwrap_or_default();
        if !hosts.is_empty() {
            let core = m.core_mut();
            for h in hosts {
                if !core.left_behind.contains(&h) {
                    core.left_behind.push(h);
                }
            }
            core.record(MigrationPhase::HostsLeftBehind, now);
        }
        self.advance_if_acked(id, now);
    }

    /// `host` said something (an acknowledgement, a status, a report).
    fn heard(&mut self, host: &HostId, now: Timestamp) {
        if let Some(sync) = self.sync.get_mut(host) {
            sync.last_heard = Some(sync.last_heard.map_or(now, |t| t.max(now)));
        }
    }

    /// Records `host`'s boot epoch; `true` if it changed (srmigd restarted: what it
    /// acknowledged before is gone). 0 (unknown) changes nothing.
    fn observe_boot(&mut self, host: &HostId, boot_epoch: u64) -> bool {
        let Some(sync) = self.sync.get_mut(host) else {
            return false;
        };
        if boot_epoch == 0 || sync.boot_epoch == Some(boot_epoch) {
            return false;
        }
        let restarted = sync.boot_epoch.is_some();
        sync.boot_epoch = Some(boot_epoch);
        restarted
    }

    /// `host` holds generation `holds` of this epoch at most (0: none of ours): what it
    /// acknowledged above that is gone, and the config is pushed again unless `holds` is the
    /// last one pushed.
    fn host_lost_config(&mut self, host: &HostId, holds: u64) {
        let Some(sync) = self.sync.get_mut(host) else {
            return;
        };
        sync.acked = holds.min(sync.generation);
        if sync.acked < sync.generation {
            self.repush(host);
        }
    }

    /// `host` acknowledged generation `generation` of this epoch (cumulative).
    fn on_acked(&mut self, now: Timestamp, host: &HostId, generation: u64) {
        let Some(sync) = self.sync.get_mut(host) else {
            return;
        };
        // Equal still counts: after a restart `host_lost_config` sets `acked` to what the
        // host holds, from this very acknowledgement, before it gets here.
        if generation < sync.acked {
            return;
        }
        sync.acked = generation;
        let ids: Vec<MigrationId> = self.active.keys().copied().collect();
        for id in ids {
            if let Some(wait) = self.active.get_mut(&id).and_then(Migration::wait_mut) {
                wait.on_ack(host, generation);
            }
            self.advance_if_acked(id, now);
        }
    }

    /// `host` holds version `theirs`, which this controller never pushed: moves to an epoch
    /// above it and pushes every host its config again.
    fn host_ahead(&mut self, host: &HostId, theirs: (u64, u64)) {
        if theirs.0 >= srmig_api::MAX_EPOCH {
            // Reserved (srmigd refuses such configs): never follow it there. Our config is
            // pushed again; a host that holds it anyway needs its srmigd restarted.
            self.repush(host);
            return;
        }
        self.epoch = self.epoch.max(theirs.0).saturating_add(1);
        self.actions.push_back(Action::EpochAdvanced {
            host: host.clone(),
            theirs,
            epoch: self.epoch,
        });
        let hosts: Vec<HostId> = self.sync.keys().cloned().collect();
        for h in hosts {
            if let Some(sync) = self.sync.get_mut(&h) {
                sync.acked = 0;
            }
            self.repush(&h);
        }
    }

    /// Pushes a host's current config again with a fresh generation (after a timeout).
    fn repush(&mut self, host: &HostId) {
        let Some(sync) = self.sync.get_mut(host) else {
            return;
        };
        let Some(pushed) = sync.pushed.as_mut() else {
            return;
        };
        sync.generation = sync.generation.saturating_add(1);
        pushed.generation = sync.generation;
        pushed.epoch = self.epoch;
        self.actions.push_back(Action::PushConfig {
            host: host.clone(),
            config: pushed.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::{host, vm};
    use srmig_api::{SidEntry, Steering};

    const T: Timeouts = Timeouts {
        ack_ms: 100,
        hypervisor_ms: 1_000,
        cancel_grace_ms: 50,
        drain_ms: 0,
        fence_wait_ms: 0,
        unreachable_ms: 1_000,
    };

    fn hid(i: u16) -> HostId {
        host(i).name
    }
    fn vid(i: u16) -> VmId {
        vm(i, 1).name
    }

    /// Three hosts, vm1 on h1; initial pushes applied and acknowledged.
    fn setup() -> Controller {
        let mut c = Controller::new(ControllerConfig {
            timeouts: T,
            finished_history: 8,
        });
        for i in 1..=3 {
            c.add_host(host(i)).expect("host");
        }
        c.add_vm(vm(1, 1)).expect("vm");
        ack_all(&mut c, Timestamp(0));
        c
    }

    fn drain(c: &mut Controller) -> Vec<Action> {
        std::iter::from_fn(|| c.poll_action()).collect()
    }

    /// Acknowledges every pending push; returns the other actions seen.
    fn ack_all(c: &mut Controller, now: Timestamp) -> Vec<Action> {
        ack_all_pushed(c, now).0
    }

    /// The hypervisor reports vm1's migration `id` completed at `now`.
    fn hypervisor_completed(c: &mut Controller, now: u64, id: MigrationId) {
        let report = HypervisorReport {
            vm: vid(1),
            migration: id,
            event: HypervisorEvent::Completed,
        };
        c.handle_hypervisor(Timestamp(now), report).expect("event");
    }

    fn request(
        c: &mut Controller,
        to: u16,
        strategy: Strategy,
    ) -> Result<MigrationId, RefuseReason> {
        c.request_migration(
            Timestamp(10),
            MigrateRequest {
                vm: vid(1),
                to: hid(to),
                strategy,
            },
        )
    }

    fn report(c: &mut Controller, now: u64, on: u16, state: VmState) {
        c.handle_vm_state(
            Timestamp(now),
            VmStateReport {
                boot_epoch: None,
                last_delivery_us: None,
                vm: vid(1),
                host: hid(on),
                state,
                at: Timestamp(now),
            },
        )
        .expect("report");
    }

    fn phase(c: &Controller, id: MigrationId) -> MigrationPhase {
        c.migration(id).expect("migration").phase()
    }

    fn steering(c: &Controller, on: u16) -> Steering {
        c.pushed_config(&hid(on))
            .and_then(|cfg| cfg.mapping(&vid(1)))
            .expect("mapping")
            .steering
            .clone()
    }

    fn has_sr_sids(c: &Controller) -> bool {
        (1..=3).any(|i| {
            c.pushed_config(&hid(i)).is_some_and(|cfg| {
                cfg.sids
                    .iter()
                    .any(|s| matches!(s, SidEntry::EndS { .. } | SidEntry::EndSbuf { .. }))
            })
        })
    }

    fn pushes(actions: &[Action]) -> Vec<HostId> {
        actions
            .iter()
            .filter_map(|a| a.push_version().map(|(h, _)| h.clone()))
            .collect()
    }

    #[test]
    fn refusals() {
        let mut c = setup();
        let r = c.request_migration(
            Timestamp(1),
            MigrateRequest {
                vm: vid(9),
                to: hid(2),
                strategy: Strategy::SrBuffer,
            },
        );
        assert_eq!(r, Err(RefuseReason::UnknownVm(vid(9))));
        assert_eq!(
            request(&mut c, 9, Strategy::SrBuffer),
            Err(RefuseReason::UnknownHost(hid(9)))
        );
        assert_eq!(
            request(&mut c, 1, Strategy::SrBuffer),
            Err(RefuseReason::AlreadyOnHost {
                vm: vid(1),
                host: hid(1)
            })
        );
        let id = request(&mut c, 2, Strategy::SrBuffer).expect("accepted");
        assert_eq!(
            request(&mut c, 3, Strategy::SrBuffer),
            Err(RefuseReason::AlreadyMigrating { vm: vid(1), id })
        );
        // Even back to the source while migrating: already migrating wins.
        assert_eq!(
            request(&mut c, 1, Strategy::Traditional),
            Err(RefuseReason::AlreadyMigrating { vm: vid(1), id })
        );
    }

    /// After the first whole config, a migration costs every host a delta with the one VM's
    /// mapping, whatever the number of VMs; only S and D get SID and local VM changes.
    #[test]
    fn migration_pushes_deltas_of_one_mapping() {
        let mut c = setup();
        for i in 2..=9 {
            c.add_vm(vm(i, 1 + i % 3)).expect("vm");
        }
        ack_all(&mut c, Timestamp(0));
        let _ = request(&mut c, 2, Strategy::SrBuffer).expect("accepted");
        let mut seen = 0;
        for _ in 0..4 {
            for a in drain(&mut c) {
                let Action::PushDelta { host, delta } = &a else {
                    assert!(a.push_version().is_none(), "a whole config: {a:?}");
                    continue;
                };
                seen += 1;
                assert!(
                    delta.mappings.len() <= 1 && delta.removed.is_empty(),
                    "{delta:?}"
                );
                assert!(delta.mappings.iter().all(|m| m.vm == vid(1)));
                if host != &hid(1) && host != &hid(2) {
                    assert!(
                        delta.sids.is_none() && delta.local_vms.is_none(),
                        "{delta:?}"
                    );
                }
                let (host, (epoch, generation)) = (host.clone(), delta.version());
                c.handle_ack(
                    Timestamp(11),
                    Ack {
                        epoch,
                        boot_epoch: 0,
                        host,
                        generation,
                    },
                )
                .expect("ack");
            }
            report(&mut c, 20, 2, VmState::Running);
        }
        // Endpoints (S, D), path (3), commit (3), cleanup (S, D).
        assert_eq!(seen, 10);
        assert_eq!(steering(&c, 3), steering(&c, 1).clone());
    }

    #[test]
    fn sr_migration_end_to_end() {
        let mut c = setup();
        let id = request(&mut c, 2, Strategy::SrBuffer).expect("accepted");
        assert_eq!(phase(&c, id), MigrationPhase::ExpectEndpointAcks);
        // Only S and D change in the endpoint step.
        let actions = drain(&mut c);
        assert_eq!(pushes(&actions), vec![hid(1), hid(2)]);
        let gen_of = |a: &Action| a.push_version().map_or(0, |(_, v)| v.1);
        // An ack from S alone is not enough.
        c.handle_ack(
            Timestamp(11),
            Ack {
                epoch: 0,
                boot_epoch: 0,
                host: hid(1),
                generation: gen_of(&actions[0]),
            },
        )
        .expect("ack");
        assert_eq!(phase(&c, id), MigrationPhase::ExpectEndpointAcks);
        c.handle_ack(
            Timestamp(12),
            Ack {
                epoch: 0,
                boot_epoch: 0,
                host: hid(2),
                generation: gen_of(&actions[1]),
            },
        )
        .expect("ack");
        assert_eq!(phase(&c, id), MigrationPhase::ExpectPathAcks);
        let path = Steering::Encaps(srmig_api::Encaps {
            segments: vec![host(1).sid_end_s, host(2).sid_end_sbuf],
            headend: srmig_api::Headend::HEncaps,
        });
        for i in 1..=3 {
            assert_eq!(steering(&c, i), path, "h{i} uses the SR path");
        }
        // The hypervisor is started only once every host acknowledged the path.
        let others = ack_all(&mut c, Timestamp(13));
        assert_eq!(
            others,
            vec![Action::StartMigration {
                id,
                vm: vid(1),
                from: hid(1),
                to: hid(2),
                strategy: Strategy::SrBuffer
            }]
        );
        assert_eq!(phase(&c, id), MigrationPhase::ExpectHypervisorDone);
        report(&mut c, 20, 1, VmState::Paused);
        hypervisor_completed(&mut c, 25, id);
        assert_eq!(phase(&c, id), MigrationPhase::ExpectHypervisorDone);
        report(&mut c, 30, 2, VmState::Running);
        assert_eq!(phase(&c, id), MigrationPhase::ExpectCommitAcks);
        assert_eq!(c.model().vm(&vid(1)).expect("vm").host, hid(2));
        assert_eq!(steering(&c, 2), Steering::Native);
        assert!(has_sr_sids(&c), "endpoints stay until every host committed");
        let others = ack_all(&mut c, Timestamp(31));
        assert_eq!(
            others,
            vec![Action::MigrationFinished {
                id,
                vm: vid(1),
                outcome: MigrationOutcome::Completed
            }]
        );
        assert!(!has_sr_sids(&c));
        assert!(!c.pushed_config(&hid(1)).expect("h1").is_local(&vid(1)));
        assert_eq!(c.migration_of(&vid(1)), None);
        assert_eq!(c.active_migrations(), 0);
        assert_eq!(c.poll_timeout(), None);
        let status = c.migration(id).expect("kept").status();
        assert_eq!(status.phase, MigrationPhase::Completed);
        assert!(status
            .phases
            .iter()
            .any(|p| p.phase == MigrationPhase::SourcePaused));
        assert!(status
            .phases
            .iter()
            .any(|p| p.phase == MigrationPhase::HypervisorCompleted));
    }

    /// Acknowledges every pending push; returns the other actions seen and the hosts pushed.
    fn ack_all_pushed(c: &mut Controller, now: Timestamp) -> (Vec<Action>, BTreeSet<HostId>) {
        let mut others = Vec::new();
        let mut pushed = BTreeSet::new();
        loop {
            let actions = drain(c);
            if actions.is_empty() {
                return (others, pushed);
            }
            for a in actions {
                let Some((host, (epoch, generation))) = a.push_version() else {
                    others.push(a);
                    continue;
                };
                pushed.insert(host.clone());
                let ack = Ack {
                    epoch,
                    boot_epoch: 0,
                    host: host.clone(),
                    generation,
                };
                c.handle_ack(now, ack).expect("ack");
            }
        }
    }

    #[test]
    fn a_networked_vm_migrates_with_only_its_networks_hosts() {
        let mut c = Controller::new(ControllerConfig {
            timeouts: T,
            finished_history: 8,
        });
        for i in 1..=5 {
            c.add_host(host(i)).expect("host");
        }
        let blue = |mut v: VmInfo| {
            v.network = Some(NetworkId::new("blue").expect("network"));
            v
        };
        c.add_vm(blue(vm(1, 1))).expect("vm1");
        c.add_vm(blue(vm(2, 2))).expect("vm2");
        let mut red = vm(3, 3);
        red.network = Some(NetworkId::new("red").expect("network"));
        c.add_vm(red).expect("vm3");
        ack_all(&mut c, Timestamp(0));
        let h = |hs: &[u16]| hs.iter().map(|&i| hid(i)).collect::<BTreeSet<_>>();
        // vm1 moves h1 -> h4: only blue's hosts (h1, h2) and the destination hear of it.
        let id = request(&mut c, 4, Strategy::SrBuffer).expect("accepted");
        let (others, pushed) = ack_all_pushed(&mut c, Timestamp(11));
        assert_eq!(pushed, h(&[1, 2, 4]));
        assert!(matches!(others.as_slice(), [Action::StartMigration { .. }]));
        let h4 = c.pushed_config(&hid(4)).expect("h4");
        assert!(h4.mapping(&vid(2)).is_some(), "D learns vm1's peers first");
        assert!(h4.is_local(&vid(1)));
        for cfg in [&hid(3), &hid(5)].map(|x| c.pushed_config(x).expect("config")) {
            assert!(cfg.mapping(&vid(1)).is_none() && cfg.mapping(&vid(2)).is_none());
        }
        report(&mut c, 20, 1, VmState::Paused);
        hypervisor_completed(&mut c, 25, id);
        report(&mut c, 30, 4, VmState::Running);
        let s = match c.active.get(&id) {
            Some(Migration::ExpectCommitAcks(s)) => s,
            other => panic!("not committing: {other:?}"),
        };
        assert_eq!(
            s.expect_markers,
            h(&[1, 2, 4]),
            "markers from blue's hosts only"
        );
        let (others, pushed) = ack_all_pushed(&mut c, Timestamp(31));
        assert!(matches!(
            others.as_slice(),
            [Action::MigrationFinished {
                outcome: MigrationOutcome::Completed,
                ..
            }]
        ));
        assert!(!pushed.contains(&hid(3)) && !pushed.contains(&hid(5)));
        // h1 has no blue VM left: it forgets blue; h2 and h4 hold both blue VMs.
        assert!(c.pushed_config(&hid(1)).expect("h1").mappings.is_empty());
        for i in [2, 4] {
            let cfg = c.pushed_config(&hid(i)).expect("config");
            assert!(cfg.mapping(&vid(1)).is_some() && cfg.mapping(&vid(2)).is_some());
        }
        assert_eq!(
            c.pushed_config(&hid(2))
                .expect("h2")
                .mapping(&vid(1))
                .expect("vm1")
                .steering,
            Steering::Encaps(srmig_api::Encaps {
                segments: vec![host(4).sid_dt6],
                headend: srmig_api::Headend::HEncaps,
            })
        );
    }

    #[test]
    fn unsaved_lists_exactly_the_rows_that_changed() {
        let mut c = setup();
        let first = c.take_unsaved();
        assert!(first.all, "a new controller has saved nothing");
        assert_eq!(c.take_unsaved(), Unsaved::default(), "taken");
        let id = request(&mut c, 2, Strategy::SrBuffer).expect("accepted");
        ack_all(&mut c, Timestamp(11));
        // Arming and acknowledging the path changes no host, VM or finished migration row
        // (the migration in progress is always compared).
        assert_eq!(c.take_unsaved(), Unsaved::default());
        report(&mut c, 20, 1, VmState::Paused);
        report(&mut c, 30, 2, VmState::Running);
        ack_all(&mut c, Timestamp(31));
        assert_eq!(phase(&c, id), MigrationPhase::Completed);
        let u = c.take_unsaved();
        assert_eq!(u.vms, [vid(1)].into(), "the VM is mapped to D");
        assert_eq!(u.finished, [id].into(), "the migration finished");
        assert!(!u.all && u.hosts.is_empty());
        release_report(&mut c, 40, 2, 39_000);
        assert_eq!(c.take_unsaved().finished, [id].into(), "a late report");
        c.add_host(host(4)).expect("host");
        assert_eq!(c.take_unsaved().hosts, [hid(4)].into());
        let mut restored =
            Controller::restore(Timestamp(50), ControllerConfig::default(), c.snapshot());
        assert!(
            restored.take_unsaved().all,
            "a restored controller compares every row"
        );
    }

    fn release_report(c: &mut Controller, now: u64, on: u16, first_us: u64) {
        c.handle_release_report(
            Timestamp(now),
            ReleaseReport {
                vm: vid(1),
                host: hid(on),
                release: srmig_api::ReleaseFigures {
                    resumed_at_us: first_us - 300,
                    first_delivery_us: first_us,
                    held: 7,
                    released: 7,
                    fenced: 1,
                    dropped: 0,
                },
            },
        )
        .expect("release report");
    }

    /// The source's pause report gives the last delivery, the destination's release report
    /// the first one after the resume: the migration's figures derive the release latency and
    /// the network downtime from them. A release from another host, a second one, or one
    /// after the migration ended with a release already recorded change nothing; a late
    /// first one (no traffic until after the cleanup) is still recorded.
    #[test]
    fn delivery_figures_come_from_the_hosts_reports() {
        let mut c = setup();
        let id = request(&mut c, 2, Strategy::SrBuffer).expect("accepted");
        ack_all(&mut c, Timestamp(11));
        ack_all(&mut c, Timestamp(12));
        assert_eq!(phase(&c, id), MigrationPhase::ExpectHypervisorDone);
        // The controller's poll of S sees the pause first (no delivery time), S's own report
        // follows with it.
        report(&mut c, 19, 1, VmState::Paused);
        c.handle_vm_state(
            Timestamp(20),
            VmStateReport {
                vm: vid(1),
                host: hid(1),
                state: VmState::Paused,
                at: Timestamp(20),
                boot_epoch: None,
                last_delivery_us: Some(19_900),
            },
        )
        .expect("paused");
        report(&mut c, 30, 2, VmState::Running);
        release_report(&mut c, 30, 3, 99_000); // not the destination
        assert_eq!(c.migration(id).expect("m").status().delivery.release, None);
        release_report(&mut c, 30, 2, 30_100);
        release_report(&mut c, 31, 2, 40_000); // a second resume: the first stays
        let f = c.migration(id).expect("m").status().figures();
        assert_eq!(f.release_latency_us, Some(300));
        assert_eq!(f.network_downtime_us, Some(10_200));
        ack_all(&mut c, Timestamp(32));
        assert_eq!(phase(&c, id), MigrationPhase::Completed);
        let status = c.migration(id).expect("kept").status();
        assert_eq!(status.delivery.release.map(|r| r.held), Some(7));
        // The record survives a snapshot and restore.
        let json = serde_json::to_string(&status).expect("serialize");
        assert!(
            json.contains(r#""source_last_delivery_us":19900"#),
            "{json}"
        );

        // Back to h1, no traffic until after the end: the release still lands in the record.
        let back = request(&mut c, 1, Strategy::SrBuffer).expect("accepted");
        ack_all(&mut c, Timestamp(40));
        ack_all(&mut c, Timestamp(41));
        report(&mut c, 50, 2, VmState::Paused);
        report(&mut c, 60, 1, VmState::Running);
        ack_all(&mut c, Timestamp(61));
        assert_eq!(phase(&c, back), MigrationPhase::Completed);
        release_report(&mut c, 90, 1, 90_000);
        let f = c.migration(back).expect("kept").status().figures();
        assert_eq!(f.release_latency_us, Some(300));
        assert_eq!(
            f.network_downtime_us, None,
            "h2 said nothing of its deliveries"
        );
        // Unknown hosts and VMs are input errors, as for the other reports.
        let mut bad = ReleaseReport {
            vm: vid(1),
            host: hid(9),
            release: srmig_api::ReleaseFigures::default(),
        };
        assert!(c.handle_release_report(Timestamp(91), bad.clone()).is_err());
        bad.host = hid(1);
        bad.vm = vid(9);
        assert!(c.handle_release_report(Timestamp(91), bad).is_err());
    }

    #[test]
    fn destination_running_before_hypervisor_event_also_commits() {
        let mut c = setup();
        let id = request(&mut c, 3, Strategy::SrDrop).expect("accepted");
        ack_all(&mut c, Timestamp(11));
        report(&mut c, 20, 3, VmState::Running);
        assert_eq!(phase(&c, id), MigrationPhase::ExpectCommitAcks);
        // A late event is ignored.
        c.handle_hypervisor(
            Timestamp(21),
            HypervisorReport {
                vm: vid(1),
                migration: id,
                event: HypervisorEvent::Failed("late".into()),
            },
        )
        .expect("event");
        assert_eq!(phase(&c, id), MigrationPhase::ExpectCommitAcks);
        ack_all(&mut c, Timestamp(22));
        assert_eq!(phase(&c, id), MigrationPhase::Completed);
    }

    #[test]
    fn cleanup_waits_for_the_drain_after_the_commit() {
        let (mut c, id) = committed_at_22(Timeouts { drain_ms: 50, ..T });
        // Committed everywhere; End.S / End.SBUF stay until the drain is over.
        assert_eq!(phase(&c, id), MigrationPhase::ExpectCommitAcks);
        assert!(has_sr_sids(&c));
        assert_eq!(c.poll_timeout(), Some(Timestamp(72)));
        c.handle_timeout(Timestamp(71));
        assert!(drain(&mut c).is_empty(), "nothing before the drain ends");
        c.handle_timeout(Timestamp(72));
        assert_eq!(phase(&c, id), MigrationPhase::ExpectCleanupAcks);
        ack_all(&mut c, Timestamp(73));
        assert_eq!(phase(&c, id), MigrationPhase::Completed);
        assert!(!has_sr_sids(&c));
    }

    fn phases_of(c: &Controller, id: MigrationId) -> Vec<MigrationPhase> {
        let m = c.migration(id).expect("kept");
        m.core().phases.iter().map(|p| p.phase).collect()
    }

    fn fence_report(c: &mut Controller, now: u64, from: u16) {
        c.handle_fence_report(
            Timestamp(now),
            FenceReport {
                vm: vid(1),
                host: hid(3),
                ingress: host(from).underlay,
                at: Timestamp(now),
            },
        )
        .expect("fence report");
    }

    /// Three hosts, vm1 migrating h1 -> h3 with sr-buffer, committed and acknowledged at 22.
    fn committed_at_22(timeouts: Timeouts) -> (Controller, MigrationId) {
        let mut c = Controller::new(ControllerConfig {
            timeouts,
            finished_history: 8,
        });
        for i in 1..=3 {
            c.add_host(host(i)).expect("host");
        }
        c.add_vm(vm(1, 1)).expect("vm");
        ack_all(&mut c, Timestamp(0));
        let id = request(&mut c, 3, Strategy::SrBuffer).expect("accepted");
        ack_all(&mut c, Timestamp(11));
        report(&mut c, 20, 3, VmState::Running);
        ack_all(&mut c, Timestamp(22));
        (c, id)
    }

    /// [`committed_at_22`] with a 50 ms drain and a 1 s fence wait.
    fn committed_with_fence_wait() -> (Controller, MigrationId) {
        committed_at_22(Timeouts {
            drain_ms: 50,
            fence_wait_ms: 1_000,
            ..T
        })
    }

    #[test]
    fn cleanup_waits_for_every_hosts_fence_marker() {
        let (mut c, id) = committed_with_fence_wait();
        // Markers of h1 and h3 came (one before the drain ended); h2's is still on its way.
        fence_report(&mut c, 30, 1);
        // A duplicate, a report from an address that is no host's, and one from the wrong
        // host change nothing.
        fence_report(&mut c, 31, 1);
        c.handle_fence_report(
            Timestamp(31),
            FenceReport {
                vm: vid(1),
                host: hid(3),
                ingress: "2001:db8:99::1".parse().expect("addr"),
                at: Timestamp(31),
            },
        )
        .expect("ignored");
        c.handle_fence_report(
            Timestamp(31),
            FenceReport {
                vm: vid(1),
                host: hid(1),
                ingress: host(2).underlay,
                at: Timestamp(31),
            },
        )
        .expect("ignored");
        c.handle_timeout(Timestamp(72));
        fence_report(&mut c, 80, 3);
        assert_eq!(phase(&c, id), MigrationPhase::ExpectCommitAcks);
        assert!(
            has_sr_sids(&c),
            "End.S / End.SBUF stay until every marker came"
        );
        assert_eq!(c.poll_timeout(), Some(Timestamp(1_022)));
        assert!(drain(&mut c).is_empty());
        // The last marker: the cleanup starts at once.
        fence_report(&mut c, 90, 2);
        assert_eq!(phase(&c, id), MigrationPhase::ExpectCleanupAcks);
        ack_all(&mut c, Timestamp(91));
        assert_eq!(phase(&c, id), MigrationPhase::Completed);
        let phases = phases_of(&c, id);
        assert!(
            phases.contains(&MigrationPhase::FenceComplete),
            "{phases:?}"
        );
        assert!(
            !phases.contains(&MigrationPhase::FenceIncomplete),
            "{phases:?}"
        );
    }

    #[test]
    fn markers_before_the_drain_ends_leave_only_the_drain() {
        let (mut c, id) = committed_with_fence_wait();
        for h in 1..=3 {
            fence_report(&mut c, 30, h);
        }
        assert_eq!(phase(&c, id), MigrationPhase::ExpectCommitAcks);
        assert_eq!(c.poll_timeout(), Some(Timestamp(72)));
        c.handle_timeout(Timestamp(72));
        assert_eq!(phase(&c, id), MigrationPhase::ExpectCleanupAcks);
    }

    #[test]
    fn markers_are_not_persisted_but_a_complete_fence_is() {
        let (mut c, id) = committed_with_fence_wait();
        let stored = |c: &Controller| -> Migration {
            let json = serde_json::to_string(c.migration(id).expect("active")).expect("json");
            serde_json::from_str(&json).expect("back")
        };
        fence_report(&mut c, 30, 1);
        let Migration::ExpectCommitAcks(s) = stored(&c) else {
            panic!("not committing")
        };
        assert!(s.markers.is_empty() && !s.fence_complete());
        fence_report(&mut c, 31, 2);
        fence_report(&mut c, 32, 3);
        let Migration::ExpectCommitAcks(s) = stored(&c) else {
            panic!("not committing")
        };
        assert!(
            s.fence_complete(),
            "fence-complete is in the stored history"
        );
    }

    #[test]
    fn lost_markers_delay_the_cleanup_by_the_fence_wait_at_most() {
        let (mut c, id) = committed_with_fence_wait();
        fence_report(&mut c, 30, 3);
        c.handle_timeout(Timestamp(72));
        c.handle_timeout(Timestamp(1_021));
        assert_eq!(phase(&c, id), MigrationPhase::ExpectCommitAcks);
        c.handle_timeout(Timestamp(1_022));
        assert_eq!(phase(&c, id), MigrationPhase::ExpectCleanupAcks);
        ack_all(&mut c, Timestamp(1_023));
        assert_eq!(phase(&c, id), MigrationPhase::Completed);
        let phases = phases_of(&c, id);
        assert!(
            phases.contains(&MigrationPhase::FenceIncomplete),
            "{phases:?}"
        );
    }

    #[test]
    fn reports_outside_the_hypervisor_phase_do_not_advance() {
        let mut c = setup();
        let id = request(&mut c, 2, Strategy::SrBuffer).expect("accepted");
        report(&mut c, 11, 2, VmState::Running);
        c.handle_hypervisor(
            Timestamp(11),
            HypervisorReport {
                vm: vid(1),
                migration: id,
                event: HypervisorEvent::Completed,
            },
        )
        .expect("event");
        assert_eq!(phase(&c, id), MigrationPhase::ExpectEndpointAcks);
        assert_eq!(c.vm_state(&vid(1), &hid(2)), Some(VmState::Running));
    }

    #[test]
    fn traditional_changes_mapping_only_when_destination_runs() {
        let mut c = setup();
        let id = request(&mut c, 2, Strategy::Traditional).expect("accepted");
        assert_eq!(phase(&c, id), MigrationPhase::ExpectHypervisorDone);
        let actions = drain(&mut c);
        // D is told to attach the VM before the hypervisor starts; nothing else changes.
        assert_eq!(pushes(&actions), vec![hid(2)]);
        assert!(matches!(
            actions.last(),
            Some(Action::StartMigration { .. })
        ));
        assert!(!has_sr_sids(&c));
        assert_eq!(
            steering(&c, 3),
            Steering::Encaps(srmig_api::Encaps {
                segments: vec![host(1).sid_dt6],
                headend: srmig_api::Headend::HEncaps,
            })
        );
        report(&mut c, 20, 1, VmState::Paused);
        c.handle_hypervisor(
            Timestamp(21),
            HypervisorReport {
                vm: vid(1),
                migration: id,
                event: HypervisorEvent::Completed,
            },
        )
        .expect("event");
        assert_eq!(c.model().vm(&vid(1)).expect("vm").host, hid(1));
        report(&mut c, 22, 2, VmState::Running);
        assert_eq!(phase(&c, id), MigrationPhase::ExpectCommitAcks);
        assert_eq!(
            steering(&c, 3),
            Steering::Encaps(srmig_api::Encaps {
                segments: vec![host(2).sid_dt6],
                headend: srmig_api::Headend::HEncaps,
            })
        );
        ack_all(&mut c, Timestamp(23));
        assert_eq!(phase(&c, id), MigrationPhase::Completed);
    }

    #[test]
    fn hypervisor_failure_rolls_back_to_source() {
        let mut c = setup();
        let id = request(&mut c, 2, Strategy::SrBuffer).expect("accepted");
        ack_all(&mut c, Timestamp(11));
        report(&mut c, 20, 1, VmState::Paused);
        report(&mut c, 21, 1, VmState::Running);
        c.handle_hypervisor(
            Timestamp(22),
            HypervisorReport {
                vm: vid(1),
                migration: id,
                event: HypervisorEvent::Failed("EIO".into()),
            },
        )
        .expect("event");
        assert_eq!(phase(&c, id), MigrationPhase::ExpectRollbackAcks);
        assert_eq!(steering(&c, 1), Steering::Native);
        assert!(
            has_sr_sids(&c),
            "End.S stays until the rollback is acknowledged"
        );
        let others = ack_all(&mut c, Timestamp(23));
        assert!(matches!(
            others.as_slice(),
            [Action::MigrationFinished { outcome: MigrationOutcome::Failed(r), .. }] if r.contains("EIO")
        ));
        assert!(!has_sr_sids(&c));
        assert_eq!(c.model().vm(&vid(1)).expect("vm").host, hid(1));
        assert!(!c.pushed_config(&hid(2)).expect("h2").is_local(&vid(1)));
        let status = c.migration(id).expect("kept").status();
        assert!(status.error.is_some_and(|e| e.contains("EIO")));
    }

    #[test]
    fn cancel_in_prepare_rolls_back_at_once() {
        let mut c = setup();
        let id = request(&mut c, 2, Strategy::SrBuffer).expect("accepted");
        c.cancel_migration(Timestamp(11), id).expect("cancel");
        assert_eq!(phase(&c, id), MigrationPhase::ExpectRollbackAcks);
        let others = ack_all(&mut c, Timestamp(12));
        assert!(others
            .iter()
            .all(|a| !matches!(a, Action::StartMigration { .. })));
        assert_eq!(phase(&c, id), MigrationPhase::Cancelled);
        assert_eq!(
            c.cancel_migration(Timestamp(13), id),
            Err(CancelError::AlreadyFinished {
                id,
                outcome: MigrationOutcome::Cancelled
            })
        );
        assert_eq!(
            c.cancel_migration(Timestamp(13), MigrationId(99)),
            Err(CancelError::UnknownMigration(MigrationId(99)))
        );
    }

    #[test]
    fn cancel_during_migration_goes_through_the_hypervisor() {
        let mut c = setup();
        let id = request(&mut c, 2, Strategy::SrBuffer).expect("accepted");
        ack_all(&mut c, Timestamp(11));
        c.cancel_migration(Timestamp(12), id).expect("cancel");
        assert!(matches!(
            drain(&mut c).as_slice(),
            [Action::CancelMigration { id: i, .. }] if *i == id
        ));
        // Idempotent: no second CancelMigration.
        c.cancel_migration(Timestamp(13), id).expect("cancel again");
        assert!(drain(&mut c).is_empty());
        assert_eq!(phase(&c, id), MigrationPhase::ExpectHypervisorDone);
        c.handle_hypervisor(
            Timestamp(14),
            HypervisorReport {
                vm: vid(1),
                migration: id,
                event: HypervisorEvent::Cancelled,
            },
        )
        .expect("event");
        ack_all(&mut c, Timestamp(15));
        assert_eq!(phase(&c, id), MigrationPhase::Cancelled);
    }

    #[test]
    fn cancel_too_late_after_switchover() {
        let mut c = setup();
        let id = request(&mut c, 2, Strategy::SrBuffer).expect("accepted");
        ack_all(&mut c, Timestamp(11));
        c.handle_hypervisor(
            Timestamp(12),
            HypervisorReport {
                vm: vid(1),
                migration: id,
                event: HypervisorEvent::Completed,
            },
        )
        .expect("event");
        assert!(matches!(
            c.cancel_migration(Timestamp(13), id),
            Err(CancelError::TooLate { .. })
        ));
        report(&mut c, 14, 2, VmState::Running);
        assert_eq!(phase(&c, id), MigrationPhase::ExpectCommitAcks);
        // Past the switchover a cancel can only stop the waiting: the hosts that have not
        // acknowledged the commit are left behind and the migration goes on to completion.
        drain(&mut c);
        c.cancel_migration(Timestamp(15), id)
            .expect("cancel stops the wait");
        let st = c.migration(id).expect("m").status();
        assert_eq!(st.left_behind, vec![hid(1), hid(2), hid(3)]);
        assert!(st
            .phases
            .iter()
            .any(|p| p.phase == MigrationPhase::HostsLeftBehind));
        ack_all(&mut c, Timestamp(16));
        assert_eq!(phase(&c, id), MigrationPhase::Completed);
        assert_eq!(c.model().vm(&vid(1)).expect("vm").host, hid(2));
    }

    #[test]
    fn an_unreachable_host_never_keeps_a_rollback_waiting_forever() {
        let mut c = setup();
        let id = request(&mut c, 2, Strategy::SrBuffer).expect("accepted");
        // h3 never answers again: the prepare phase aborts, the rollback re-pushes to it
        // every ack_ms, then leaves it behind after unreachable_ms.
        let mut now = 11;
        loop {
            for a in drain(&mut c) {
                if let Some((host, (epoch, generation))) =
                    a.push_version().map(|(h, v)| (h.clone(), v))
                {
                    if host != hid(3) {
                        c.handle_ack(
                            Timestamp(now),
                            Ack {
                                epoch,
                                boot_epoch: 0,
                                host,
                                generation,
                            },
                        )
                        .expect("ack");
                    }
                }
            }
            if phase(&c, id).is_terminal() {
                break;
            }
            let deadline = c.poll_timeout().expect("a deadline");
            now = deadline.0;
            assert!(
                now < 11 + T.ack_ms + T.unreachable_ms * 3,
                "still waiting at {now}"
            );
            c.handle_timeout(deadline);
        }
        let st = c.migration(id).expect("m").status();
        assert!(matches!(phase(&c, id), MigrationPhase::Failed), "{st:?}");
        assert_eq!(st.left_behind, vec![hid(3)]);
        assert_eq!(c.model().vm(&vid(1)).expect("vm").host, hid(1));
    }

    #[test]
    fn hosts_and_vms_are_removed_unless_a_migration_needs_them() {
        let mut c = setup();
        let id = request(&mut c, 2, Strategy::SrBuffer).expect("accepted");
        drain(&mut c);
        assert!(matches!(
            c.remove_vm(&vid(1)),
            Err(RemoveError::Migrating { id: m, .. }) if m == id
        ));
        for h in [1, 2] {
            let e = c.remove_host(Timestamp(12), &hid(h)).expect_err("endpoint");
            assert!(e.to_string().contains("migration"), "{e}");
        }
        // h3 is only an ingress the prepare phase waits for: removing it lets it go on.
        c.handle_ack(
            Timestamp(12),
            Ack {
                epoch: 0,
                boot_epoch: 0,
                host: hid(1),
                generation: c.pushed_config(&hid(1)).expect("cfg").generation,
            },
        )
        .expect("ack");
        c.handle_ack(
            Timestamp(12),
            Ack {
                epoch: 0,
                boot_epoch: 0,
                host: hid(2),
                generation: c.pushed_config(&hid(2)).expect("cfg").generation,
            },
        )
        .expect("ack");
        assert_eq!(phase(&c, id), MigrationPhase::ExpectPathAcks);
        ack_all_but(&mut c, Timestamp(13), &hid(3));
        assert_eq!(phase(&c, id), MigrationPhase::ExpectPathAcks);
        c.remove_host(Timestamp(14), &hid(3)).expect("remove h3");
        assert_eq!(phase(&c, id), MigrationPhase::ExpectHypervisorDone);
        assert!(c.model().host(&hid(3)).is_none());
        assert_eq!(
            c.remove_host(Timestamp(14), &hid(3)),
            Err(RemoveError::UnknownHost(hid(3)))
        );
        // Finish it, then remove the VM: every host gets a config without it.
        report(&mut c, 15, 2, VmState::Running);
        ack_all(&mut c, Timestamp(16));
        assert_eq!(phase(&c, id), MigrationPhase::Completed);
        let e = c.remove_host(Timestamp(17), &hid(2)).expect_err("has vm1");
        assert!(e.to_string().contains("still has VMs (vm1)"), "{e}");
        c.remove_vm(&vid(1)).expect("remove vm1");
        let pushed: Vec<HostId> = drain(&mut c)
            .into_iter()
            .filter_map(|a| {
                a.push_version().map(|(h, _)| {
                    assert!(c
                        .pushed_config(h)
                        .expect("pushed")
                        .mapping(&vid(1))
                        .is_none());
                    h.clone()
                })
            })
            .collect();
        assert_eq!(pushed, vec![hid(1), hid(2)]);
        c.remove_host(Timestamp(18), &hid(2)).expect("empty host");
    }

    /// A host removed and registered again may still run the srmigd that holds its last
    /// config: its generations continue above that one, across a restart too (found by the
    /// `controller_api` fuzz target). Restarting at 1 had the host refuse the older pushes,
    /// and a status showing the old config at a generation the controller had reached again
    /// counted as the acknowledgement of a different config.
    #[test]
    fn a_host_registered_again_continues_its_generations() {
        let mut c = setup();
        c.add_vm(vm(2, 3)).expect("vm2 on h3");
        ack_all(&mut c, Timestamp(1));
        let before = c.pushed_config(&hid(3)).expect("pushed").generation;
        c.remove_vm(&vid(2)).expect("remove vm2");
        ack_all(&mut c, Timestamp(2));
        let last = c.pushed_config(&hid(3)).expect("pushed").generation;
        assert!(last > before);
        c.remove_host(Timestamp(3), &hid(3)).expect("remove h3");
        c.add_host(host(3)).expect("h3 again");
        let again = c.pushed_config(&hid(3)).expect("pushed").generation;
        assert!(again > last, "pushed generation {again} after {last}");

        c.remove_host(Timestamp(4), &hid(3)).expect("remove h3");
        let mut r = Controller::restore(Timestamp(5), c.config, c.snapshot());
        r.add_host(host(3)).expect("h3 after a restart");
        let restored = r.pushed_config(&hid(3)).expect("pushed").generation;
        assert!(
            restored > again,
            "pushed generation {restored} after {again}"
        );
    }

    /// Acknowledges every pending push except `skip`'s.
    fn ack_all_but(c: &mut Controller, now: Timestamp, skip: &HostId) {
        for a in drain(c) {
            if let Some((host, (epoch, generation))) = a.push_version().map(|(h, v)| (h.clone(), v))
            {
                if &host != skip {
                    c.handle_ack(
                        now,
                        Ack {
                            epoch,
                            boot_epoch: 0,
                            host,
                            generation,
                        },
                    )
                    .expect("ack");
                }
            }
        }
    }

    #[test]
    fn cancel_during_a_rollback_ends_it_now() {
        let mut c = setup();
        let id = request(&mut c, 2, Strategy::SrBuffer).expect("accepted");
        drain(&mut c); // nobody acknowledges
        c.handle_timeout(Timestamp(10 + T.ack_ms));
        assert_eq!(phase(&c, id), MigrationPhase::ExpectRollbackAcks);
        c.cancel_migration(Timestamp(200), id).expect("cancel");
        // Rollback abandoned -> cleanup armed; a second cancel abandons that too.
        c.cancel_migration(Timestamp(201), id).expect("cancel");
        assert!(phase(&c, id).is_terminal(), "{:?}", phase(&c, id));
        assert!(!c.migration(id).expect("m").status().left_behind.is_empty());
    }

    #[test]
    fn cancel_sent_but_hypervisor_completes_anyway() {
        let mut c = setup();
        let id = request(&mut c, 2, Strategy::SrBuffer).expect("accepted");
        ack_all(&mut c, Timestamp(11));
        c.cancel_migration(Timestamp(12), id).expect("cancel");
        report(&mut c, 13, 2, VmState::Running);
        ack_all(&mut c, Timestamp(14));
        assert_eq!(phase(&c, id), MigrationPhase::Completed);
    }

    #[test]
    fn silent_ingress_in_prepare_aborts_on_timeout() {
        let mut c = setup();
        let id = request(&mut c, 2, Strategy::SrBuffer).expect("accepted");
        for a in drain(&mut c) {
            if let Some((host, (epoch, generation))) = a.push_version().map(|(h, v)| (h.clone(), v))
            {
                c.handle_ack(
                    Timestamp(11),
                    Ack {
                        epoch,
                        boot_epoch: 0,
                        host,
                        generation,
                    },
                )
                .expect("ack");
            }
        }
        assert_eq!(phase(&c, id), MigrationPhase::ExpectPathAcks);
        for a in drain(&mut c) {
            if let Some((host, (epoch, generation))) = a.push_version().map(|(h, v)| (h.clone(), v))
            {
                if host != hid(3) {
                    c.handle_ack(
                        Timestamp(12),
                        Ack {
                            epoch,
                            boot_epoch: 0,
                            host,
                            generation,
                        },
                    )
                    .expect("ack");
                }
            }
        }
        assert_eq!(phase(&c, id), MigrationPhase::ExpectPathAcks);
        let deadline = c.poll_timeout().expect("deadline");
        assert_eq!(deadline, Timestamp(11 + T.ack_ms));
        c.handle_timeout(Timestamp(deadline.0 - 1));
        assert_eq!(phase(&c, id), MigrationPhase::ExpectPathAcks);
        c.handle_timeout(deadline);
        assert_eq!(phase(&c, id), MigrationPhase::ExpectRollbackAcks);
        let err = c.migration(id).expect("m").status().error.expect("error");
        assert!(err.contains("h3"), "{err}");
        // The rollback waits for h3 too; h3 comes back and acks everything.
        ack_all(&mut c, Timestamp(200));
        assert_eq!(phase(&c, id), MigrationPhase::Failed);
        assert_eq!(
            steering(&c, 3),
            Steering::Encaps(srmig_api::Encaps {
                segments: vec![host(1).sid_dt6],
                headend: srmig_api::Headend::HEncaps,
            })
        );
    }

    #[test]
    fn commit_retries_a_silent_host_and_never_gives_up() {
        let mut c = setup();
        let id = request(&mut c, 2, Strategy::SrBuffer).expect("accepted");
        ack_all(&mut c, Timestamp(11));
        report(&mut c, 20, 2, VmState::Running);
        // Everyone but h3 acknowledges the commit.
        for a in drain(&mut c) {
            if let Some((host, (epoch, generation))) = a.push_version().map(|(h, v)| (h.clone(), v))
            {
                if host != hid(3) {
                    c.handle_ack(
                        Timestamp(21),
                        Ack {
                            epoch,
                            boot_epoch: 0,
                            host,
                            generation,
                        },
                    )
                    .expect("ack");
                }
            }
        }
        assert_eq!(phase(&c, id), MigrationPhase::ExpectCommitAcks);
        let mut last_gen = c.pushed_config(&hid(3)).expect("h3").generation;
        for round in 1..=3u64 {
            let deadline = c.poll_timeout().expect("deadline");
            c.handle_timeout(deadline);
            assert_eq!(
                phase(&c, id),
                MigrationPhase::ExpectCommitAcks,
                "round {round}"
            );
            let actions = drain(&mut c);
            assert_eq!(pushes(&actions), vec![hid(3)]);
            let Some((_, (_, generation))) = actions.first().and_then(Action::push_version) else {
                panic!("expected a push");
            };
            assert!(generation > last_gen);
            last_gen = generation;
        }
        let retried = c
            .migration(id)
            .expect("m")
            .status()
            .phases
            .iter()
            .filter(|p| p.phase == MigrationPhase::Retried)
            .count();
        assert_eq!(retried, 1, "retries are recorded once per state");
        // An ack of the original (older) generation is enough: acks are cumulative and the
        // content did not change.
        c.handle_ack(
            Timestamp(900),
            Ack {
                epoch: 0,
                boot_epoch: 0,
                host: hid(3),
                generation: last_gen,
            },
        )
        .expect("ack");
        ack_all(&mut c, Timestamp(901));
        assert_eq!(phase(&c, id), MigrationPhase::Completed);
    }

    #[test]
    fn hypervisor_timeout_cancels_and_rolls_back_only_when_confirmed() {
        let mut c = setup();
        let id = request(&mut c, 2, Strategy::SrBuffer).expect("accepted");
        ack_all(&mut c, Timestamp(11));
        let deadline = c.poll_timeout().expect("deadline");
        assert_eq!(deadline, Timestamp(11 + T.hypervisor_ms));
        c.handle_timeout(deadline);
        assert!(matches!(
            drain(&mut c).as_slice(),
            [Action::CancelMigration { .. }]
        ));
        assert_eq!(phase(&c, id), MigrationPhase::ExpectHypervisorDone);
        let grace = c.poll_timeout().expect("grace");
        assert_eq!(grace, deadline.plus_ms(T.cancel_grace_ms));
        // No answer: the cancel is repeated, the SR path stays.
        c.handle_timeout(grace);
        assert!(matches!(
            drain(&mut c).as_slice(),
            [Action::CancelMigration { .. }]
        ));
        assert_eq!(phase(&c, id), MigrationPhase::ExpectHypervisorDone);
        assert!(matches!(steering(&c, 3), Steering::Encaps(e) if e.segments.len() == 2));
        assert!(c.migration(id).expect("m").status().error.is_some());
        // A stale event (another migration id) is ignored.
        c.handle_hypervisor(
            grace,
            HypervisorReport {
                vm: vid(1),
                migration: MigrationId(id.0 + 7),
                event: HypervisorEvent::Cancelled,
            },
        )
        .expect("stale event");
        assert_eq!(phase(&c, id), MigrationPhase::ExpectHypervisorDone);
        c.handle_hypervisor(
            grace,
            HypervisorReport {
                vm: vid(1),
                migration: id,
                event: HypervisorEvent::Cancelled,
            },
        )
        .expect("event");
        assert_eq!(phase(&c, id), MigrationPhase::ExpectRollbackAcks);
        let others = ack_all(&mut c, grace);
        assert!(matches!(
            others.as_slice(),
            [Action::MigrationFinished { outcome: MigrationOutcome::Failed(r), .. }] if r.contains("within")
        ));
        assert_eq!(c.model().vm(&vid(1)).expect("vm").host, hid(1));
    }

    #[test]
    fn inputs_are_validated() {
        let mut c = setup();
        assert_eq!(
            c.handle_ack(
                Timestamp(1),
                Ack {
                    epoch: 0,
                    boot_epoch: 0,
                    host: hid(9),
                    generation: 1
                }
            ),
            Err(InputError::UnknownHost(hid(9)))
        );
        assert_eq!(
            c.handle_vm_state(
                Timestamp(1),
                VmStateReport {
                    boot_epoch: None,
                    last_delivery_us: None,
                    vm: vid(9),
                    host: hid(1),
                    state: VmState::Running,
                    at: Timestamp(1)
                }
            ),
            Err(InputError::UnknownVm(vid(9)))
        );
        assert_eq!(
            c.handle_hypervisor(
                Timestamp(1),
                HypervisorReport {
                    vm: vid(9),
                    migration: MigrationId(1),
                    event: HypervisorEvent::Completed
                }
            ),
            Err(InputError::UnknownVm(vid(9)))
        );
        // Stale and duplicate acks are harmless.
        c.handle_ack(
            Timestamp(1),
            Ack {
                epoch: 0,
                boot_epoch: 0,
                host: hid(1),
                generation: 1,
            },
        )
        .expect("stale ack");
    }

    #[test]
    fn generations_strictly_increase_and_unchanged_hosts_are_not_pushed() {
        let mut c = setup();
        let mut last: BTreeMap<HostId, u64> = BTreeMap::new();
        for i in 1..=3 {
            last.insert(hid(i), c.pushed_config(&hid(i)).expect("cfg").generation);
        }
        c.add_vm(vm(2, 3)).expect("vm2");
        let _ = request(&mut c, 2, Strategy::SrBuffer).expect("accepted");
        for a in drain(&mut c) {
            if let Some((host, (_, generation))) = a.push_version().map(|(h, v)| (h.clone(), v)) {
                let prev = last.insert(host.clone(), generation).unwrap_or(0);
                assert!(generation > prev, "{host}: {generation} after {prev}");
            }
        }
        // Nothing changed: nothing pushed.
        c.handle_timeout(Timestamp(0));
        assert!(drain(&mut c).is_empty());
    }

    #[test]
    fn concurrent_migrations_of_different_vms() {
        let mut c = setup();
        c.add_vm(vm(2, 2)).expect("vm2");
        ack_all(&mut c, Timestamp(0));
        let a = request(&mut c, 2, Strategy::SrBuffer).expect("vm1");
        let b = c
            .request_migration(
                Timestamp(10),
                MigrateRequest {
                    vm: vm(2, 2).name,
                    to: hid(3),
                    strategy: Strategy::SrDrop,
                },
            )
            .expect("vm2");
        ack_all(&mut c, Timestamp(11));
        assert_eq!(phase(&c, a), MigrationPhase::ExpectHypervisorDone);
        assert_eq!(phase(&c, b), MigrationPhase::ExpectHypervisorDone);
        c.handle_vm_state(
            Timestamp(12),
            VmStateReport {
                boot_epoch: None,
                last_delivery_us: None,
                vm: vm(2, 2).name,
                host: hid(3),
                state: VmState::Running,
                at: Timestamp(12),
            },
        )
        .expect("report");
        ack_all(&mut c, Timestamp(13));
        assert_eq!(phase(&c, b), MigrationPhase::Completed);
        assert_eq!(phase(&c, a), MigrationPhase::ExpectHypervisorDone);
        // vm1's path is intact on every host.
        for i in 1..=3 {
            assert!(matches!(steering(&c, i), Steering::Encaps(e) if e.segments.len() == 2));
        }
    }

    #[test]
    fn snapshot_restore_resumes_mid_migration() {
        let mut c = setup();
        let id = request(&mut c, 2, Strategy::SrBuffer).expect("accepted");
        ack_all(&mut c, Timestamp(11));
        report(&mut c, 20, 2, VmState::Running);
        drain(&mut c); // commit pushes lost with the crash
        let old_gens: BTreeMap<HostId, u64> = (1..=3)
            .map(|i| (hid(i), c.pushed_config(&hid(i)).expect("cfg").generation))
            .collect();
        let json = serde_json::to_string(&c.snapshot()).expect("serialize");
        let snap: ControllerSnapshot = serde_json::from_str(&json).expect("deserialize");
        let mut r = Controller::restore(
            Timestamp(500),
            ControllerConfig {
                timeouts: T,
                finished_history: 8,
            },
            snap,
        );
        assert_eq!(phase(&r, id), MigrationPhase::ExpectCommitAcks);
        let actions = drain(&mut r);
        assert_eq!(pushes(&actions).len(), 3, "every host is pushed again");
        for a in &actions {
            if let Some((host, (epoch, generation))) = a.push_version().map(|(h, v)| (h.clone(), v))
            {
                assert!(generation > old_gens[&host]);
                r.handle_ack(
                    Timestamp(501),
                    Ack {
                        epoch,
                        boot_epoch: 0,
                        host: host.clone(),
                        generation,
                    },
                )
                .expect("ack");
            }
        }
        ack_all(&mut r, Timestamp(502));
        assert_eq!(phase(&r, id), MigrationPhase::Completed);
        assert_eq!(
            r.request_migration(
                Timestamp(503),
                MigrateRequest {
                    vm: vid(1),
                    to: hid(3),
                    strategy: Strategy::SrBuffer
                }
            ),
            Ok(MigrationId(id.0 + 1))
        );
    }

    #[test]
    fn restore_mid_hypervisor_keeps_waiting_with_a_fresh_deadline() {
        let mut c = setup();
        let id = request(&mut c, 2, Strategy::SrDrop).expect("accepted");
        ack_all(&mut c, Timestamp(11));
        let mut r = Controller::restore(
            Timestamp(5_000),
            ControllerConfig {
                timeouts: T,
                finished_history: 8,
            },
            c.snapshot(),
        );
        assert_eq!(phase(&r, id), MigrationPhase::ExpectHypervisorDone);
        assert_eq!(r.poll_timeout(), Some(Timestamp(5_000 + T.hypervisor_ms)));
        // No second StartMigration: the driver keeps running the migration.
        assert!(drain(&mut r).iter().all(|a| a.push_version().is_some()));
        report_on(&mut r, 5_001, 2, VmState::Running);
        ack_all(&mut r, Timestamp(5_002));
        assert_eq!(phase(&r, id), MigrationPhase::Completed);
    }

    fn report_on(c: &mut Controller, now: u64, on: u16, state: VmState) {
        report(c, now, on, state);
    }

    #[test]
    fn a_restore_gives_new_migrations_ids_above_the_finished_ones() {
        let mut c = setup();
        let id = request(&mut c, 2, Strategy::SrBuffer).expect("accepted");
        c.cancel_migration(Timestamp(11), id).expect("cancel");
        ack_all(&mut c, Timestamp(12));
        assert_eq!(c.active_migrations(), 0);
        // A damaged store: its next id is lower than the finished migration's.
        let mut snapshot = c.snapshot();
        assert_eq!(snapshot.finished.len(), 1);
        snapshot.next_id = 1;
        let config = ControllerConfig {
            timeouts: T,
            finished_history: 8,
        };
        let mut r = Controller::restore(Timestamp(5_000), config, snapshot);
        let again = request(&mut r, 2, Strategy::SrBuffer).expect("accepted");
        assert_eq!(again, MigrationId(id.0 + 1));
    }

    #[test]
    fn the_finished_history_keeps_finish_order_across_a_restore() {
        let mut c = setup();
        c.add_vm(vm(2, 2)).expect("vm");
        ack_all(&mut c, Timestamp(1));
        let first = request(&mut c, 2, Strategy::SrBuffer).expect("accepted");
        let second = c
            .request_migration(
                Timestamp(10),
                MigrateRequest {
                    vm: vid(2),
                    to: hid(3),
                    strategy: Strategy::SrBuffer,
                },
            )
            .expect("accepted");
        // The second finishes first.
        c.cancel_migration(Timestamp(11), second).expect("cancel");
        ack_all(&mut c, Timestamp(12));
        hypervisor_completed(&mut c, 20, first);
        report(&mut c, 21, 2, VmState::Running);
        ack_all(&mut c, Timestamp(22));
        assert_eq!(phase(&c, first), MigrationPhase::Completed);
        let order = |c: &Controller| c.statuses().iter().map(|m| m.id).collect::<Vec<_>>();
        assert_eq!(order(&c), [second, first]);
        let config = ControllerConfig {
            timeouts: T,
            finished_history: 8,
        };
        assert_eq!(
            order(&Controller::restore(Timestamp(5_000), config, c.snapshot())),
            [second, first]
        );
        // The store's rows come by id: restored in finish order all the same.
        let mut by_id = c.snapshot();
        by_id.finished.sort_by_key(|m| m.core().id);
        assert_eq!(
            order(&Controller::restore(Timestamp(5_000), config, by_id)),
            [second, first]
        );
    }

    #[test]
    fn the_last_migration_id_is_refused_not_wrapped() {
        let mut snapshot = setup().snapshot();
        snapshot.next_id = u64::MAX;
        let config = ControllerConfig {
            timeouts: T,
            finished_history: 8,
        };
        let mut r = Controller::restore(Timestamp(5_000), config, snapshot);
        assert_eq!(
            request(&mut r, 2, Strategy::SrBuffer),
            Err(RefuseReason::NoIdLeft(MigrationId(u64::MAX)))
        );
        assert_eq!(r.active_migrations(), 0);
    }

    #[test]
    fn finished_history_is_bounded() {
        let mut c = setup();
        for round in 0..20u16 {
            let to = 2 + (round % 2);
            let id = request(&mut c, to, Strategy::SrBuffer).expect("accepted");
            c.cancel_migration(Timestamp(11), id).expect("cancel");
            ack_all(&mut c, Timestamp(12));
        }
        assert_eq!(c.statuses().len(), 8);
        assert!(c.migration(MigrationId(1)).is_none());
        assert!(c.migration(MigrationId(20)).is_some());
    }
}
