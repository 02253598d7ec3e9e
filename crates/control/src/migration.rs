//! One migration as an explicit state machine.
//!
//! Each state is a type named for what it waits for; a transition consumes the old state and
//! returns the next, so a stale state cannot be acted on. [`Migration`] wraps them for storage
//! (and for persistence: every state is serde-serializable, so a restarted controller reloads
//! it and resumes or rolls back). The states hold no I/O: the [`Controller`] feeds them events
//! and turns their changes into [`Action`]s.
//!
//! # States
//!
//! ```text
//!                   SR strategies                              traditional
//!  Requested ──► ExpectEndpointAcks ──► ExpectPathAcks ──┐    Requested
//!                     │ timeout/cancel      │ timeout/   │        │
//!                     ▼                     ▼ cancel     ▼        ▼
//!               ExpectRollbackAcks ◄─── (any of these) ExpectHypervisorDone
//!                     │          ◄──── failed / cancelled ──┘    │ VM running at D
//!                     ▼                                          ▼
//!               ExpectCleanupAcks ◄─────────────────────── ExpectCommitAcks
//!                     │
//!                     ▼
//!                    Done (completed | failed | cancelled)
//! ```
//!
//! Footprint of each state on the hosts' configs (see [`crate::model`]):
//!
//! | state | VM attached on S and D | End.S on S, End.SBUF on D | SR path on every host | mapping |
//! |---|---|---|---|---|
//! | ExpectEndpointAcks | yes | yes | no | S |
//! | ExpectPathAcks | yes | yes | yes | S |
//! | ExpectHypervisorDone | yes | SR only | SR only | S |
//! | ExpectCommitAcks | yes | SR only | no | **D** |
//! | ExpectRollbackAcks | yes | SR only | no | S |
//! | ExpectCleanupAcks, Done | no | no | no | D if completed, else S |
//!
//! # Protocol (SR strategies, success)
//!
//! ```text
//!  controller            S (source)        D (destination)     C (other ingresses)   hypervisor
//!      │ PushConfig g: End.S(v)  │                  │                    │                 │
//!      ├────────────────────────►│                  │                    │                 │
//!      │ PushConfig g: End.SBUF(v), attach v        │                    │                 │
//!      ├───────────────────────────────────────────►│                    │                 │
//!      │◄──── Ack ───────────────┤◄──── Ack ────────┤                    │   ExpectEndpointAcks
//!      │ PushConfig: v via [S::End.S, D::End.SBUF] (to S, D and every C) │                 │
//!      ├────────────────────────►├─────────────────►├───────────────────►│                 │
//!      │◄──── Ack (every host) ──┴──────────────────┴────────────────────┤   ExpectPathAcks
//!      │ StartMigration(v, S, D)                                         │                 │
//!      ├────────────────────────────────────────────────────────────────────────────────►│
//!      │        pre-copy: packets reach v at S (End.S delivers)          │                 │
//!      │◄── VmState(v, S, paused) ┤  stop-and-copy: End.S forwards to D, End.SBUF buffers │
//!      │◄── VmState(v, D, running) ─────────────────┤ End.SBUF releases the buffer, in order
//!      │◄── Hypervisor: completed ───────────────────────────────────────────────────────┤
//!      │ PushConfig: v on D (D native, others [D::End.DT6])               │  ExpectHypervisorDone
//!      ├────────────────────────►├─────────────────►├───────────────────►│                 │
//!      │◄──── Ack (every host) ──┴──────────────────┴────────────────────┤   ExpectCommitAcks
//!      │◄── FenceReport(v, from each host's underlay) ┤ (markers down the old path)          │
//!      │ PushConfig: remove End.S, End.SBUF, S detaches v                 │                 │
//!      ├────────────────────────►├─────────────────►│                    │                 │
//!      │◄──── Ack (S and D) ─────┴──────────────────┤                    │   ExpectCleanupAcks
//!      │ MigrationFinished(completed)                                     │                 │
//! ```
//!
//! The path's mappings are marked `fence` (`Mapping::fence`): as each host switches away
//! from the path at the commit, it sends a marker down it, and D (which fences the VM while its
//! End.SBUF entry exists) delivers each host's direct packets only after that host's marker,
//! so the VM sees its packets in order (`srmig_dataplane::fence`). D reports each marker
//! ([`srmig_api::FenceReport`]); the cleanup waits, after the last commit acknowledgement, for
//! `drain_ms` and until the marker of every host came (`fence-complete`), at most
//! `fence_wait_ms` (then `fence-incomplete`): a marker is the last packet its host sent along
//! the old path, so none is left there when End.S and End.SBUF go. The cleanup ends the
//! fence: D releases what it still holds.
//!
//! The switchover is the destination reporting the VM running: before it, a failure, a cancel
//! or a timeout rolls the mapping back to S (packets already on the path are still delivered:
//! End.S delivers locally while the VM runs at S); after it, the migration can only go forward.
//! The SR path is removed only after every host acknowledged the config that no longer uses
//! it, and End.S/End.SBUF only after that, so no packet is ever sent to a missing SID.
//!
//! `traditional` skips the prepare states: the destination is told to attach the VM, the
//! migration starts at once, and the mapping changes only when D reports the VM running
//! (packets sent to S in between are lost: that is the baseline being measured).
//!
//! # Timeouts
//!
//! - prepare states: a host that does not acknowledge in time aborts the migration (rollback);
//! - `ExpectHypervisorDone`: on timeout the controller asks the hypervisor to cancel, and asks
//!   again after a grace period and then every hypervisor timeout, marking the migration
//!   stalled. It rolls back only when the hypervisor confirms (`failed` or `cancelled`): until
//!   then the VM may be on either host, and only the SR path, kept installed, reaches it on
//!   both. Once the hypervisor reported completion it no longer asks to cancel and just waits
//!   for D's report;
//! - commit, rollback and cleanup cannot be abandoned: the controller re-pushes the config to
//!   the hosts that have not acknowledged, with a fresh generation, and waits again.
//!
//! [`Controller`]: crate::Controller
//! [`Action`]: crate::Action

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use srmig_api::{
    DeliveryRecord, HostId, MigrationId, MigrationOutcome, MigrationPhase, MigrationStatus,
    PhaseRecord, SbufMode, Strategy, Timestamp, VmId,
};

use crate::model::Footprint;

/// Per-phase time limits, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    /// How long to wait for every awaited host to acknowledge a config.
    pub ack_ms: u64,
    /// How long the hypervisor may take, from `StartMigration` to the VM running at D.
    pub hypervisor_ms: u64,
    /// How long to wait for the hypervisor to confirm a cancel before rolling back anyway.
    pub cancel_grace_ms: u64,
    /// After every host acknowledged the commit, how long End.S and End.SBUF stay installed
    /// before the cleanup removes them: packets already on the old SR path (in a host's
    /// queue, on the wire) still reach a SID instead of being dropped as `NoSid`.
    #[serde(default)]
    pub drain_ms: u64,
    /// After every host acknowledged the commit, how long the cleanup waits at most for the
    /// commit-fence marker of every host to reach D ([`srmig_api::FenceReport`]; at least
    /// `drain_ms`). Waiting for them means nothing is left on the old SR path when End.S and
    /// End.SBUF go. 0: do not wait for markers (only `drain_ms`).
    #[serde(default = "default_fence_wait_ms")]
    pub fence_wait_ms: u64,
    /// How long commit, rollback and cleanup wait for a host that does not acknowledge
    /// (re-pushing every `ack_ms`) before leaving it behind: the migration ends, and the host
    /// gets the current config when it answers again (its push is retried until then).
    #[serde(default = "default_unreachable_ms")]
    pub unreachable_ms: u64,
}

fn default_fence_wait_ms() -> u64 {
    2_000
}

fn default_unreachable_ms() -> u64 {
    60_000
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            ack_ms: 5_000,
            hypervisor_ms: 600_000,
            cancel_grace_ms: 30_000,
            drain_ms: 50,
            fence_wait_ms: default_fence_wait_ms(),
            unreachable_ms: default_unreachable_ms(),
        }
    }
}

/// The hosts whose acknowledgement a state waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckScope {
    /// Only the source and the destination (their SID tables changed).
    Endpoints,
    /// Every registered host (the VM's steering changed everywhere).
    AllHosts,
}

/// The acknowledgements a state still waits for, and until when.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AckWait {
    /// Host -> the generation it must acknowledge (or exceed). Not persisted: a restored
    /// controller pushes every host again and re-arms every wait on those pushes
    /// ([`crate::Controller::restore`]), so a stored set would never be read, and keeping it
    /// in the row cost one store write per batch of acknowledgements (O(hosts) writes of a
    /// shrinking record per phase; ~25 of the ~32 etcd transactions of a migration at 1,000
    /// hosts).
    #[serde(skip)]
    pending: BTreeMap<HostId, u64>,
    /// When the wait times out.
    deadline: Timestamp,
    /// How many times the pushes were repeated after a timeout.
    retries: u32,
}

impl AckWait {
    /// Starts waiting for `pending` until `deadline`.
    pub fn arm(&mut self, pending: BTreeMap<HostId, u64>, deadline: Timestamp) {
        self.pending = pending;
        self.deadline = deadline;
    }

    /// Records that `host` has `generation` in force; returns true if that satisfied it.
    pub fn on_ack(&mut self, host: &HostId, generation: u64) -> bool {
        match self.pending.get(host) {
            Some(&needed) if generation >= needed => {
                self.pending.remove(host);
                true
            }
            _ => false,
        }
    }

    /// True once every awaited host has acknowledged.
    pub fn is_complete(&self) -> bool {
        self.pending.is_empty()
    }

    /// The hosts still awaited, with the generation each must reach.
    pub fn pending(&self) -> &BTreeMap<HostId, u64> {
        &self.pending
    }

    /// When the wait times out.
    pub fn deadline(&self) -> Timestamp {
        self.deadline
    }

    /// How many times the wait was re-armed after a timeout.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// Stops waiting for the hosts still pending; returns them.
    pub fn abandon(&mut self) -> Vec<HostId> {
        std::mem::take(&mut self.pending).into_keys().collect()
    }

    /// Stops waiting for `host` (removed); true if it was awaited.
    pub fn forget(&mut self, host: &HostId) -> bool {
        self.pending.remove(host).is_some()
    }

    /// Re-arms after a timeout (the caller re-pushed to the laggards).
    pub fn retry(&mut self, deadline: Timestamp) {
        self.deadline = deadline;
        self.retries = self.retries.saturating_add(1);
    }

    /// A sentence naming the laggards, for error messages.
    pub fn describe_laggards(&self) -> String {
        let hosts: Vec<String> = self
            .pending
            .iter()
            .map(|(h, g)| format!("{h} (generation {g})"))
            .collect();
        hosts.join(", ")
    }
}

/// What every state carries: identity, history and the last error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationCore {
    /// The migration's id.
    pub id: MigrationId,
    /// The VM.
    pub vm: VmId,
    /// The source host (the VM's mapping when the request was accepted).
    pub from: HostId,
    /// The destination host.
    pub to: HostId,
    /// The strategy.
    pub strategy: Strategy,
    /// When the request was accepted.
    pub started_at: Timestamp,
    /// Every state entered and observation made, oldest first.
    pub phases: Vec<PhaseRecord>,
    /// Why the migration is failing, rolling back or stalled.
    pub error: Option<String>,
    /// A cancel was requested by the operator.
    pub cancel_requested: bool,
    /// Hosts that never acknowledged a phase that cannot be abandoned and were left behind
    /// (they get the current config when they answer again).
    #[serde(default)]
    pub left_behind: Vec<HostId>,
    /// What the hosts reported of the VM's traffic around the move (the source's last
    /// delivery before the pause, the destination's release).
    #[serde(default)]
    pub delivery: DeliveryRecord,
}

impl MigrationCore {
    pub(crate) fn record(&mut self, phase: MigrationPhase, now: Timestamp) {
        self.phases.push(PhaseRecord { phase, at_ms: now });
    }

    /// Records `phase` unless it is already the latest record (keeps repeated retries from
    /// growing the history).
    fn record_once(&mut self, phase: MigrationPhase, now: Timestamp) {
        if self.phases.last().map(|p| p.phase) != Some(phase) {
            self.record(phase, now);
        }
    }

    fn mark_cancel_requested(&mut self, now: Timestamp) {
        if !self.cancel_requested {
            self.cancel_requested = true;
            self.record(MigrationPhase::CancelRequested, now);
        }
    }

    fn sbuf_mode(&self) -> Option<SbufMode> {
        match self.strategy {
            Strategy::Traditional => None,
            Strategy::SrDrop => Some(SbufMode::Drop),
            Strategy::SrBuffer => Some(SbufMode::Buffer),
        }
    }

    fn footprint(&self, path: bool) -> Footprint {
        Footprint {
            vm: self.vm.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
            attach: true,
            endpoints: self.sbuf_mode(),
            path: path && self.strategy.is_sr(),
        }
    }

    fn into_rollback(mut self, now: Timestamp, outcome: MigrationOutcome) -> ExpectRollbackAcks {
        if let MigrationOutcome::Failed(reason) = &outcome {
            self.error = Some(reason.clone());
        }
        self.record(MigrationPhase::ExpectRollbackAcks, now);
        ExpectRollbackAcks {
            core: self,
            wait: AckWait::default(),
            outcome,
        }
    }
}

/// Accepted; nothing pushed yet. Transient: left within the call that created it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requested {
    /// Common data.
    pub core: MigrationCore,
}

/// SR: End.S (on S) and End.SBUF (on D) pushed; waits for S and D to acknowledge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectEndpointAcks {
    /// Common data.
    pub core: MigrationCore,
    /// Acknowledgements awaited.
    pub wait: AckWait,
}

/// SR: the path `S::End.S -> D::End.SBUF` pushed to every host; waits for every host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectPathAcks {
    /// Common data.
    pub core: MigrationCore,
    /// Acknowledgements awaited.
    pub wait: AckWait,
}

/// `StartMigration` issued; waits for the VM to run at D (or for the hypervisor to give up).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectHypervisorDone {
    /// Common data.
    pub core: MigrationCore,
    /// When this wait times out.
    pub deadline: Timestamp,
    /// When S reported the VM paused, if it did.
    pub source_paused_at: Option<Timestamp>,
    /// The hypervisor reported completion (D's report may still be on its way).
    pub hypervisor_completed: bool,
    /// When it did (`None` in stores written before this field).
    #[serde(default)]
    pub completed_at: Option<Timestamp>,
    /// `CancelMigration` was sent to the hypervisor.
    pub cancel_sent: bool,
}

/// Mapping "VM on D" pushed to every host; waits for every host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectCommitAcks {
    /// Common data.
    pub core: MigrationCore,
    /// Acknowledgements awaited.
    pub wait: AckWait,
    /// Once every host acknowledged: when the cleanup may start ([`Timeouts::drain_ms`]).
    #[serde(default)]
    pub drain_until: Option<Timestamp>,
    /// Hosts whose commit-fence marker must reach D before the cleanup: with an SR strategy,
    /// every host registered when the commit was pushed (each had the path, each sends a
    /// marker as it switches away from it).
    #[serde(default)]
    pub expect_markers: BTreeSet<HostId>,
    /// Hosts whose marker D reported ([`srmig_api::FenceReport`]). Not persisted: one
    /// store write per marker would cost a migration O(hosts) writes of a growing record.
    /// Once complete, the `fence-complete` record (persisted) says so; a controller restarted
    /// before that waits for the markers still to come, or `fence_wait_ms`.
    #[serde(skip)]
    pub markers: BTreeSet<HostId>,
    /// Once every host acknowledged: how long the cleanup waits for the markers at most
    /// ([`Timeouts::fence_wait_ms`]).
    #[serde(default)]
    pub fence_until: Option<Timestamp>,
}

/// Mapping "VM on S" (no SR path) pushed to every host after a failure or cancel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectRollbackAcks {
    /// Common data.
    pub core: MigrationCore,
    /// Acknowledgements awaited.
    pub wait: AckWait,
    /// `failed` or `cancelled`.
    pub outcome: MigrationOutcome,
}

/// End.S, End.SBUF and the extra attachment removed; waits for S and D.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectCleanupAcks {
    /// Common data.
    pub core: MigrationCore,
    /// Acknowledgements awaited.
    pub wait: AckWait,
    /// How the migration ends once cleaned up.
    pub outcome: MigrationOutcome,
}

/// Finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    /// Common data.
    pub core: MigrationCore,
    /// How it ended.
    pub outcome: MigrationOutcome,
}

/// What leaving [`Requested`] leads to.
#[derive(Debug)]
pub enum Begun {
    /// SR strategies: install the endpoints first.
    Prepare(ExpectEndpointAcks),
    /// Traditional: start the hypervisor at once.
    Migrate(ExpectHypervisorDone),
}

/// What a timeout in [`ExpectHypervisorDone`] leads to (the state is kept either way).
#[derive(Debug)]
pub enum HypervisorTimeout {
    /// (Re)send `CancelMigration` to the hypervisor and keep waiting for its answer.
    SendCancel(ExpectHypervisorDone),
    /// The hypervisor completed but D has not reported: keep waiting (stalled).
    Stalled(ExpectHypervisorDone),
    /// The hypervisor completed and D has been silent for `unreachable_ms`: commit.
    CommitUnconfirmed(ExpectHypervisorDone),
}

impl Requested {
    /// Accepts a request: the history starts with `requested`.
    pub fn new(
        id: MigrationId,
        vm: VmId,
        from: HostId,
        to: HostId,
        strategy: Strategy,
        now: Timestamp,
    ) -> Self {
        let mut core = MigrationCore {
            id,
            vm,
            from,
            to,
            strategy,
            started_at: now,
            phases: Vec::new(),
            error: None,
            cancel_requested: false,
            left_behind: Vec::new(),
            delivery: DeliveryRecord::default(),
        };
        core.record(MigrationPhase::Requested, now);
        Requested { core }
    }

    /// Leaves `Requested`: prepare (SR) or start the hypervisor (traditional).
    pub fn begin(mut self, now: Timestamp, timeouts: &Timeouts) -> Begun {
        if self.core.strategy.is_sr() {
            self.core.record(MigrationPhase::ExpectEndpointAcks, now);
            Begun::Prepare(ExpectEndpointAcks {
                core: self.core,
                wait: AckWait::default(),
            })
        } else {
            Begun::Migrate(ExpectHypervisorDone::enter(self.core, now, timeouts))
        }
    }
}

impl ExpectEndpointAcks {
    /// S and D acknowledged: install the path everywhere.
    pub fn endpoints_installed(mut self, now: Timestamp) -> ExpectPathAcks {
        self.core.record(MigrationPhase::ExpectPathAcks, now);
        ExpectPathAcks {
            core: self.core,
            wait: AckWait::default(),
        }
    }

    /// A host did not acknowledge in time (or another failure) before the path was installed.
    pub fn abort(self, now: Timestamp, reason: String) -> ExpectRollbackAcks {
        self.core
            .into_rollback(now, MigrationOutcome::Failed(reason))
    }

    /// The operator cancelled before the path was installed.
    pub fn cancel(mut self, now: Timestamp) -> ExpectRollbackAcks {
        self.core.mark_cancel_requested(now);
        self.core.into_rollback(now, MigrationOutcome::Cancelled)
    }
}

impl ExpectPathAcks {
    /// Every host uses the path: start the hypervisor.
    pub fn path_installed(self, now: Timestamp, timeouts: &Timeouts) -> ExpectHypervisorDone {
        ExpectHypervisorDone::enter(self.core, now, timeouts)
    }

    /// A host did not acknowledge in time before the hypervisor was involved.
    pub fn abort(self, now: Timestamp, reason: String) -> ExpectRollbackAcks {
        self.core
            .into_rollback(now, MigrationOutcome::Failed(reason))
    }

    /// The operator cancelled before the hypervisor was involved.
    pub fn cancel(mut self, now: Timestamp) -> ExpectRollbackAcks {
        self.core.mark_cancel_requested(now);
        self.core.into_rollback(now, MigrationOutcome::Cancelled)
    }
}

impl ExpectHypervisorDone {
    fn enter(mut core: MigrationCore, now: Timestamp, timeouts: &Timeouts) -> Self {
        core.record(MigrationPhase::ExpectHypervisorDone, now);
        ExpectHypervisorDone {
            core,
            deadline: now.plus_ms(timeouts.hypervisor_ms),
            source_paused_at: None,
            hypervisor_completed: false,
            completed_at: None,
            cancel_sent: false,
        }
    }

    /// S reported the VM paused (recorded once).
    pub fn source_paused(&mut self, now: Timestamp) {
        if self.source_paused_at.is_none() {
            self.source_paused_at = Some(now);
            self.core.record(MigrationPhase::SourcePaused, now);
        }
    }

    /// The hypervisor reported completion (recorded once); D's report is still needed, but
    /// if D stays silent for `unreachable_ms` the hypervisor's word is taken (see
    /// [`timed_out`](Self::timed_out)): the deadline comes that close.
    pub fn hypervisor_completed(&mut self, now: Timestamp, timeouts: &Timeouts) {
        if !self.hypervisor_completed {
            self.hypervisor_completed = true;
            self.completed_at = Some(now);
            self.core.record(MigrationPhase::HypervisorCompleted, now);
            self.deadline = self.deadline.min(now.plus_ms(timeouts.unreachable_ms));
        }
    }

    /// The operator asks to cancel. Returns true if `CancelMigration` must be sent now
    /// (false if it was already sent, or if the hypervisor already completed: too late).
    pub fn request_cancel(&mut self, now: Timestamp, timeouts: &Timeouts) -> bool {
        if self.hypervisor_completed || self.cancel_sent {
            return false;
        }
        self.core.mark_cancel_requested(now);
        self.cancel_sent = true;
        self.deadline = self.deadline.min(now.plus_ms(timeouts.cancel_grace_ms));
        true
    }

    /// Switchover: the VM runs at D. The caller changes the mapping to D.
    pub fn destination_running(mut self, now: Timestamp) -> ExpectCommitAcks {
        // A stall or an unanswered cancel is moot once the VM runs at D.
        self.core.error = None;
        self.commit(now)
    }

    /// Switchover on the hypervisor's word alone (D silent; see [`timed_out`](Self::timed_out)):
    /// the error that says so stays in the migration's status.
    pub fn commit_unconfirmed(self, now: Timestamp) -> ExpectCommitAcks {
        self.commit(now)
    }

    fn commit(mut self, now: Timestamp) -> ExpectCommitAcks {
        self.core.record(MigrationPhase::ExpectCommitAcks, now);
        ExpectCommitAcks {
            core: self.core,
            wait: AckWait::default(),
            drain_until: None,
            expect_markers: BTreeSet::new(),
            markers: BTreeSet::new(),
            fence_until: None,
        }
    }

    /// The hypervisor reported failure or cancellation: roll back to S.
    pub fn hypervisor_gave_up(
        self,
        now: Timestamp,
        outcome: MigrationOutcome,
    ) -> ExpectRollbackAcks {
        self.core.into_rollback(now, outcome)
    }

    /// The deadline passed. `destination_heard` is when the controller last heard anything
    /// from D (an acknowledgement, a status, a report), if it did.
    ///
    /// The controller never rolls back on a guess: until the hypervisor says it failed or
    /// cancelled, the VM may be on either host, and only the SR path (kept installed) reaches
    /// it on both. So a silent hypervisor is asked to cancel, then asked again every
    /// `hypervisor_ms`, with the migration marked stalled.
    ///
    /// Once the hypervisor reported completion the VM runs at D by its word, and the commit
    /// waits only for D to confirm it. A D that answers but does not report the VM running is
    /// waited for (the VM is not running there yet: committing would send its traffic to a
    /// paused VM). A D silent for `unreachable_ms` since the completion cannot confirm
    /// anything: the hypervisor's word is taken and the commit goes ahead
    /// ([`HypervisorTimeout::CommitUnconfirmed`]); D gets the config when it answers again.
    pub fn timed_out(
        mut self,
        now: Timestamp,
        timeouts: &Timeouts,
        destination_heard: Option<Timestamp>,
    ) -> HypervisorTimeout {
        if self.hypervisor_completed {
            let completed = self.completed_at.unwrap_or(now);
            let silent_since = destination_heard.map_or(completed, |h| h.max(completed));
            let silent_ms = now.millis_since(silent_since);
            if silent_ms >= timeouts.unreachable_ms {
                self.core.error = Some(format!(
                    "committed on the hypervisor's word: {} has been silent for {silent_ms} ms \
                     since the hypervisor reported completion, so it could not confirm {} running",
                    self.core.to, self.core.vm
                ));
                return HypervisorTimeout::CommitUnconfirmed(self);
            }
            self.core.error = Some(format!(
                "the hypervisor reported completion but {} has not reported {} running",
                self.core.to, self.core.vm
            ));
            self.core.record_once(MigrationPhase::Retried, now);
            self.deadline = now.plus_ms(timeouts.hypervisor_ms).min(
                silent_since
                    .plus_ms(timeouts.unreachable_ms)
                    .max(now.plus_ms(1)),
            );
            HypervisorTimeout::Stalled(self)
        } else if !self.cancel_sent {
            self.core.error = Some(format!(
                "the hypervisor did not finish within {} ms; cancelling",
                timeouts.hypervisor_ms
            ));
            self.cancel_sent = true;
            self.core.record(MigrationPhase::CancelRequested, now);
            self.deadline = now.plus_ms(timeouts.cancel_grace_ms);
            HypervisorTimeout::SendCancel(self)
        } else {
            self.core.error = Some(format!(
                "the hypervisor has not confirmed the cancel of {}; keeping the SR path until it reports",
                self.core.vm
            ));
            self.core.record_once(MigrationPhase::Retried, now);
            self.deadline = now.plus_ms(timeouts.hypervisor_ms);
            HypervisorTimeout::SendCancel(self)
        }
    }
}

impl ExpectCommitAcks {
    /// D reported the marker of `host` at `now`; records `fence-complete` when it was the
    /// last one awaited.
    pub fn marker_seen(&mut self, host: HostId, now: Timestamp) {
        if !self.expect_markers.contains(&host) || self.fence_complete() {
            return;
        }
        self.markers.insert(host);
        if self.fence_complete() {
            self.core.record(MigrationPhase::FenceComplete, now);
        }
    }

    /// Every awaited host's marker reached D (hosts left behind are not awaited: they may not
    /// even have switched).
    ///
    /// The recorded `fence-complete` is looked at first: [`Migration::deadline`] asks this of
    /// every migration at every controller input, and the scan over every awaited host made
    /// that O(migrations x hosts) per input once the fence was complete.
    pub fn fence_complete(&self) -> bool {
        self.core
            .phases
            .iter()
            .any(|r| r.phase == MigrationPhase::FenceComplete)
            || self
                .expect_markers
                .iter()
                .all(|h| self.markers.contains(h) || self.core.left_behind.contains(h))
    }

    /// Once every host acknowledged, whether the cleanup may start at `now`: after the drain
    /// and, unless `fence_wait_ms` ran out (recorded as `fence-incomplete`), after every
    /// marker. The first call starts both clocks.
    pub fn may_clean_up(&mut self, now: Timestamp, t: &Timeouts) -> bool {
        let drain_until = *self.drain_until.get_or_insert(now.plus_ms(t.drain_ms));
        let fence_until = *self
            .fence_until
            .get_or_insert(now.plus_ms(t.drain_ms.max(t.fence_wait_ms)));
        if now < drain_until {
            return false;
        }
        if t.fence_wait_ms == 0 || self.fence_complete() {
            return true;
        }
        if now < fence_until {
            return false;
        }
        self.core.record_once(MigrationPhase::FenceIncomplete, now);
        true
    }

    /// When [`may_clean_up`](Self::may_clean_up) may change its answer, once the clocks run.
    fn cleanup_deadline(&self) -> Option<Timestamp> {
        let drain = self.drain_until?;
        if self.fence_complete() {
            return Some(drain);
        }
        Some(self.fence_until.map_or(drain, |f| f.max(drain)))
    }

    /// Every host maps the VM to D: remove the SR endpoints.
    pub fn committed(mut self, now: Timestamp) -> ExpectCleanupAcks {
        self.core.record(MigrationPhase::ExpectCleanupAcks, now);
        ExpectCleanupAcks {
            core: self.core,
            wait: AckWait::default(),
            outcome: MigrationOutcome::Completed,
        }
    }
}

impl ExpectRollbackAcks {
    /// Every host maps the VM to S without the path: remove the SR endpoints.
    pub fn rolled_back(mut self, now: Timestamp) -> ExpectCleanupAcks {
        self.core.record(MigrationPhase::ExpectCleanupAcks, now);
        ExpectCleanupAcks {
            core: self.core,
            wait: AckWait::default(),
            outcome: self.outcome,
        }
    }
}

impl ExpectCleanupAcks {
    /// S and D removed the endpoints: finished.
    pub fn cleaned(mut self, now: Timestamp) -> Done {
        self.core.record(self.outcome.phase(), now);
        Done {
            core: self.core,
            outcome: self.outcome,
        }
    }
}

/// A migration in any state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[allow(clippy::large_enum_variant)]
pub enum Migration {
    /// See [`Requested`].
    Requested(Requested),
    /// See [`ExpectEndpointAcks`].
    ExpectEndpointAcks(ExpectEndpointAcks),
    /// See [`ExpectPathAcks`].
    ExpectPathAcks(ExpectPathAcks),
    /// See [`ExpectHypervisorDone`].
    ExpectHypervisorDone(ExpectHypervisorDone),
    /// See [`ExpectCommitAcks`].
    ExpectCommitAcks(ExpectCommitAcks),
    /// See [`ExpectRollbackAcks`].
    ExpectRollbackAcks(ExpectRollbackAcks),
    /// See [`ExpectCleanupAcks`].
    ExpectCleanupAcks(ExpectCleanupAcks),
    /// See [`Done`].
    Done(Done),
}

impl Migration {
    /// The data common to every state.
    pub fn core(&self) -> &MigrationCore {
        match self {
            Migration::Requested(s) => &s.core,
            Migration::ExpectEndpointAcks(s) => &s.core,
            Migration::ExpectPathAcks(s) => &s.core,
            Migration::ExpectHypervisorDone(s) => &s.core,
            Migration::ExpectCommitAcks(s) => &s.core,
            Migration::ExpectRollbackAcks(s) => &s.core,
            Migration::ExpectCleanupAcks(s) => &s.core,
            Migration::Done(s) => &s.core,
        }
    }

    /// The current state as a phase name.
    pub fn phase(&self) -> MigrationPhase {
        match self {
            Migration::Requested(_) => MigrationPhase::Requested,
            Migration::ExpectEndpointAcks(_) => MigrationPhase::ExpectEndpointAcks,
            Migration::ExpectPathAcks(_) => MigrationPhase::ExpectPathAcks,
            Migration::ExpectHypervisorDone(_) => MigrationPhase::ExpectHypervisorDone,
            Migration::ExpectCommitAcks(_) => MigrationPhase::ExpectCommitAcks,
            Migration::ExpectRollbackAcks(_) => MigrationPhase::ExpectRollbackAcks,
            Migration::ExpectCleanupAcks(_) => MigrationPhase::ExpectCleanupAcks,
            Migration::Done(d) => d.outcome.phase(),
        }
    }

    /// When a finished migration finished (its outcome's phase record; a late observation
    /// recorded after it does not move it), then its id: the order of the controller's history
    /// of finished migrations, which the store restores it in. `None` while in progress.
    pub fn finish_order(&self) -> Option<(Timestamp, MigrationId)> {
        let Migration::Done(d) = self else {
            return None;
        };
        let phase = d.outcome.phase();
        let at = d
            .core
            .phases
            .iter()
            .find(|r| r.phase == phase)
            .map_or(Timestamp(0), |r| r.at_ms);
        Some((at, d.core.id))
    }

    /// The outcome, once done.
    pub fn outcome(&self) -> Option<&MigrationOutcome> {
        match self {
            Migration::Done(d) => Some(&d.outcome),
            _ => None,
        }
    }

    /// What this state adds to the hosts' configs (`None` once cleaned up).
    pub fn footprint(&self) -> Option<Footprint> {
        match self {
            Migration::Requested(_) | Migration::ExpectCleanupAcks(_) | Migration::Done(_) => None,
            Migration::ExpectEndpointAcks(s) => Some(s.core.footprint(false)),
            Migration::ExpectPathAcks(s) => Some(s.core.footprint(true)),
            Migration::ExpectHypervisorDone(s) => Some(s.core.footprint(true)),
            Migration::ExpectCommitAcks(s) => Some(s.core.footprint(false)),
            Migration::ExpectRollbackAcks(s) => Some(s.core.footprint(false)),
        }
    }

    /// Which hosts the state waits for, if it waits for acknowledgements.
    pub fn ack_scope(&self) -> Option<AckScope> {
        match self {
            Migration::ExpectEndpointAcks(_) | Migration::ExpectCleanupAcks(_) => {
                Some(AckScope::Endpoints)
            }
            Migration::ExpectPathAcks(_)
            | Migration::ExpectCommitAcks(_)
            | Migration::ExpectRollbackAcks(_) => Some(AckScope::AllHosts),
            Migration::Requested(_) | Migration::ExpectHypervisorDone(_) | Migration::Done(_) => {
                None
            }
        }
    }

    /// The acknowledgement wait of the state, if it has one.
    pub fn wait(&self) -> Option<&AckWait> {
        match self {
            Migration::ExpectEndpointAcks(s) => Some(&s.wait),
            Migration::ExpectPathAcks(s) => Some(&s.wait),
            Migration::ExpectCommitAcks(s) => Some(&s.wait),
            Migration::ExpectRollbackAcks(s) => Some(&s.wait),
            Migration::ExpectCleanupAcks(s) => Some(&s.wait),
            Migration::Requested(_) | Migration::ExpectHypervisorDone(_) | Migration::Done(_) => {
                None
            }
        }
    }

    /// Mutable access to the acknowledgement wait.
    pub fn wait_mut(&mut self) -> Option<&mut AckWait> {
        match self {
            Migration::ExpectEndpointAcks(s) => Some(&mut s.wait),
            Migration::ExpectPathAcks(s) => Some(&mut s.wait),
            Migration::ExpectCommitAcks(s) => Some(&mut s.wait),
            Migration::ExpectRollbackAcks(s) => Some(&mut s.wait),
            Migration::ExpectCleanupAcks(s) => Some(&mut s.wait),
            Migration::Requested(_) | Migration::ExpectHypervisorDone(_) | Migration::Done(_) => {
                None
            }
        }
    }

    pub(crate) fn core_mut(&mut self) -> &mut MigrationCore {
        match self {
            Migration::Requested(s) => &mut s.core,
            Migration::ExpectEndpointAcks(s) => &mut s.core,
            Migration::ExpectPathAcks(s) => &mut s.core,
            Migration::ExpectHypervisorDone(s) => &mut s.core,
            Migration::ExpectCommitAcks(s) => &mut s.core,
            Migration::ExpectRollbackAcks(s) => &mut s.core,
            Migration::ExpectCleanupAcks(s) => &mut s.core,
            Migration::Done(s) => &mut s.core,
        }
    }

    /// Re-arms the acknowledgement wait after a timeout (the caller re-pushed to the hosts
    /// still awaited). Records `retried` the first time in a state only, so a host that stays
    /// down does not grow the history without bound.
    pub fn retry_wait(&mut self, now: Timestamp, deadline: Timestamp) {
        let Some(wait) = self.wait_mut() else {
            return;
        };
        let first = wait.retries() == 0;
        wait.retry(deadline);
        if first {
            self.core_mut().record(MigrationPhase::Retried, now);
        }
    }

    /// When the current state times out, if it can.
    pub fn deadline(&self) -> Option<Timestamp> {
        match self {
            Migration::ExpectHypervisorDone(s) => Some(s.deadline),
            Migration::ExpectCommitAcks(s) if s.wait.is_complete() && s.drain_until.is_some() => {
                s.cleanup_deadline()
            }
            other => other.wait().map(AckWait::deadline),
        }
    }

    /// Progress report for the API.
    pub fn status(&self) -> MigrationStatus {
        let core = self.core();
        MigrationStatus {
            id: core.id,
            vm: core.vm.clone(),
            from: core.from.clone(),
            to: core.to.clone(),
            strategy: core.strategy,
            phase: self.phase(),
            started_at_ms: core.started_at,
            phases: core.phases.clone(),
            error: core.error.clone(),
            hypervisor: None,
            left_behind: core.left_behind.clone(),
            delivery: core.delivery,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        ack_ms: 100,
        hypervisor_ms: 1_000,
        cancel_grace_ms: 50,
        drain_ms: 0,
        fence_wait_ms: 0,
        unreachable_ms: 1_000,
    };

    fn requested(strategy: Strategy) -> Requested {
        Requested::new(
            MigrationId(1),
            VmId::new("v").expect("name"),
            HostId::new("s").expect("name"),
            HostId::new("d").expect("name"),
            strategy,
            Timestamp(10),
        )
    }

    fn phases(core: &MigrationCore) -> Vec<MigrationPhase> {
        core.phases.iter().map(|p| p.phase).collect()
    }

    fn prepare(strategy: Strategy) -> ExpectEndpointAcks {
        match requested(strategy).begin(Timestamp(10), &T) {
            Begun::Prepare(s) => s,
            Begun::Migrate(_) => panic!("SR strategy must prepare"),
        }
    }

    fn migrating(strategy: Strategy) -> ExpectHypervisorDone {
        prepare(strategy)
            .endpoints_installed(Timestamp(11))
            .path_installed(Timestamp(12), &T)
    }

    #[test]
    fn sr_success_walks_every_state_and_records_it() {
        let s = prepare(Strategy::SrBuffer);
        let fp = Migration::ExpectEndpointAcks(s.clone())
            .footprint()
            .expect("footprint");
        assert!(fp.attach && !fp.path);
        assert_eq!(fp.endpoints, Some(SbufMode::Buffer));

        let s = s.endpoints_installed(Timestamp(11));
        let fp = Migration::ExpectPathAcks(s.clone())
            .footprint()
            .expect("footprint");
        assert!(fp.path);

        let mut s = s.path_installed(Timestamp(12), &T);
        assert_eq!(s.deadline, Timestamp(1_012));
        s.source_paused(Timestamp(20));
        s.source_paused(Timestamp(21));
        assert_eq!(s.source_paused_at, Some(Timestamp(20)));
        let s = s.destination_running(Timestamp(30));
        let fp = Migration::ExpectCommitAcks(s.clone())
            .footprint()
            .expect("footprint");
        assert!(!fp.path && fp.endpoints.is_some());

        let s = s.committed(Timestamp(31));
        assert!(Migration::ExpectCleanupAcks(s.clone())
            .footprint()
            .is_none());
        let done = s.cleaned(Timestamp(32));
        assert_eq!(done.outcome, MigrationOutcome::Completed);
        let m = Migration::Done(done);
        assert_eq!(m.phase(), MigrationPhase::Completed);
        assert_eq!(
            phases(m.core()),
            vec![
                MigrationPhase::Requested,
                MigrationPhase::ExpectEndpointAcks,
                MigrationPhase::ExpectPathAcks,
                MigrationPhase::ExpectHypervisorDone,
                MigrationPhase::SourcePaused,
                MigrationPhase::ExpectCommitAcks,
                MigrationPhase::ExpectCleanupAcks,
                MigrationPhase::Completed,
            ]
        );
        let status = m.status();
        assert_eq!(status.phases.last().map(|p| p.at_ms), Some(Timestamp(32)));
        assert_eq!(status.started_at_ms, Timestamp(10));
        assert_eq!(status.error, None);
    }

    #[test]
    fn traditional_skips_prepare_and_has_no_sr_footprint() {
        let s = match requested(Strategy::Traditional).begin(Timestamp(10), &T) {
            Begun::Migrate(s) => s,
            Begun::Prepare(_) => panic!("traditional must not prepare"),
        };
        let fp = Migration::ExpectHypervisorDone(s.clone())
            .footprint()
            .expect("footprint");
        assert!(fp.attach);
        assert_eq!(fp.endpoints, None);
        assert!(!fp.path);
        assert_eq!(
            phases(&s.core),
            vec![
                MigrationPhase::Requested,
                MigrationPhase::ExpectHypervisorDone
            ]
        );
    }

    #[test]
    fn prepare_aborts_roll_back_with_the_outcome() {
        let r = prepare(Strategy::SrDrop).cancel(Timestamp(50));
        assert!(r.core.cancel_requested);
        assert!(phases(&r.core).contains(&MigrationPhase::CancelRequested));
        assert_eq!(r.outcome, MigrationOutcome::Cancelled);
        assert_eq!(r.core.error, None);
        let fp = Migration::ExpectRollbackAcks(r.clone())
            .footprint()
            .expect("footprint");
        assert!(!fp.path && fp.endpoints == Some(SbufMode::Drop));
        let done = r.rolled_back(Timestamp(51)).cleaned(Timestamp(52));
        assert_eq!(Migration::Done(done).phase(), MigrationPhase::Cancelled);

        let r = prepare(Strategy::SrBuffer)
            .endpoints_installed(Timestamp(11))
            .abort(Timestamp(60), "h3 silent".into());
        assert_eq!(r.core.error.as_deref(), Some("h3 silent"));
        let done = r.rolled_back(Timestamp(61)).cleaned(Timestamp(62));
        assert_eq!(Migration::Done(done).phase(), MigrationPhase::Failed);
    }

    #[test]
    fn hypervisor_failure_rolls_back() {
        let r = migrating(Strategy::SrBuffer).hypervisor_gave_up(
            Timestamp(40),
            MigrationOutcome::Failed("hypervisor: boom".into()),
        );
        assert_eq!(
            phases(&r.core).last(),
            Some(&MigrationPhase::ExpectRollbackAcks)
        );
        assert_eq!(
            Migration::ExpectRollbackAcks(r).ack_scope(),
            Some(AckScope::AllHosts)
        );
    }

    #[test]
    fn cancel_during_migration_is_sent_once_and_shortens_the_deadline() {
        let mut s = migrating(Strategy::SrBuffer);
        assert!(s.request_cancel(Timestamp(20), &T));
        assert!(s.core.cancel_requested);
        assert_eq!(s.deadline, Timestamp(70));
        assert!(!s.request_cancel(Timestamp(21), &T));
        // The grace period passes without an answer: ask again, never roll back on a guess.
        match s.timed_out(Timestamp(70), &T, None) {
            HypervisorTimeout::SendCancel(s) => {
                assert_eq!(s.deadline, Timestamp(1_070));
                assert!(s.core.error.is_some());
            }
            other => panic!("expected another cancel, got {other:?}"),
        }
    }

    #[test]
    fn cancel_after_hypervisor_completion_is_refused() {
        let mut s = migrating(Strategy::SrBuffer);
        s.hypervisor_completed(Timestamp(20), &T);
        assert!(!s.request_cancel(Timestamp(21), &T));
        assert!(!s.core.cancel_requested);
    }

    #[test]
    fn hypervisor_timeout_cancels_then_keeps_asking() {
        let s = migrating(Strategy::SrBuffer);
        let s = match s.timed_out(Timestamp(1_012), &T, None) {
            HypervisorTimeout::SendCancel(s) => s,
            other => panic!("expected cancel, got {other:?}"),
        };
        assert!(s.cancel_sent);
        assert_eq!(s.deadline, Timestamp(1_062));
        let mut s = s;
        for round in 0..3u64 {
            let now = s.deadline;
            s = match s.timed_out(now, &T, None) {
                HypervisorTimeout::SendCancel(s) => s,
                other => panic!("round {round}: expected cancel, got {other:?}"),
            };
            assert_eq!(s.deadline, now.plus_ms(T.hypervisor_ms));
        }
        let retried = phases(&s.core)
            .iter()
            .filter(|p| **p == MigrationPhase::Retried)
            .count();
        assert_eq!(retried, 1);
        // The hypervisor finally answers: roll back as failed (the controller asked, not the
        // operator).
        let r = s.hypervisor_gave_up(
            Timestamp(9_000),
            MigrationOutcome::Failed("cancelled after timeout".into()),
        );
        assert!(matches!(r.outcome, MigrationOutcome::Failed(_)));
    }

    #[test]
    fn after_completion_a_destination_that_answers_is_waited_for_and_never_rolled_back() {
        let mut s = migrating(Strategy::SrBuffer);
        s.hypervisor_completed(Timestamp(20), &T);
        s.hypervisor_completed(Timestamp(21), &T);
        // The deadline comes at most the unreachable timeout after the completion.
        assert!(
            s.deadline <= Timestamp(20 + T.unreachable_ms),
            "{:?}",
            s.deadline
        );
        for round in 0..3u64 {
            let now = s.deadline;
            // D answered a moment ago (it is up; the VM is not running there yet).
            s = match s.timed_out(now, &T, Some(Timestamp(now.0 - 10))) {
                HypervisorTimeout::Stalled(s) => s,
                other => panic!("round {round}: expected stall, got {other:?}"),
            };
            assert!(s.deadline > now && s.deadline <= now.plus_ms(T.hypervisor_ms));
        }
        assert!(s
            .core
            .error
            .as_deref()
            .is_some_and(|e| e.contains("running")));
        let c = s.destination_running(Timestamp(9_999));
        assert_eq!(
            phases(&c.core)
                .iter()
                .filter(|p| **p == MigrationPhase::HypervisorCompleted)
                .count(),
            1
        );
    }

    #[test]
    fn after_completion_a_silent_destination_gets_the_commit_on_the_hypervisors_word() {
        let mut s = migrating(Strategy::SrBuffer);
        s.hypervisor_completed(Timestamp(20), &T);
        // Heard from D before the completion only: silent since the completion.
        let at = Timestamp(20 + T.unreachable_ms);
        match s
            .clone()
            .timed_out(Timestamp(at.0 - 1), &T, Some(Timestamp(15)))
        {
            HypervisorTimeout::Stalled(s) => assert_eq!(s.deadline, at),
            other => panic!("too early: {other:?}"),
        }
        let s = match s.timed_out(at, &T, Some(Timestamp(15))) {
            HypervisorTimeout::CommitUnconfirmed(s) => s,
            other => panic!("expected the commit, got {other:?}"),
        };
        let c = s.commit_unconfirmed(at);
        assert!(
            c.core
                .error
                .as_deref()
                .is_some_and(|e| e.contains("hypervisor's word") && e.contains("silent")),
            "{:?}",
            c.core.error
        );
        assert_eq!(
            phases(&c.core).last(),
            Some(&MigrationPhase::ExpectCommitAcks)
        );
    }

    #[test]
    fn ack_wait_is_cumulative_and_ignores_strangers() {
        let h = |s: &str| HostId::new(s).expect("name");
        let mut w = AckWait::default();
        assert!(w.is_complete());
        w.arm(BTreeMap::from([(h("a"), 3), (h("b"), 5)]), Timestamp(100));
        assert!(!w.on_ack(&h("a"), 2));
        assert!(!w.on_ack(&h("c"), 9));
        assert!(w.on_ack(&h("a"), 4));
        assert!(!w.on_ack(&h("a"), 4));
        assert!(!w.is_complete());
        assert_eq!(w.describe_laggards(), "b (generation 5)");
        w.retry(Timestamp(200));
        assert_eq!((w.deadline(), w.retries()), (Timestamp(200), 1));
        assert!(w.on_ack(&h("b"), 5));
        assert!(w.is_complete());
    }

    #[test]
    fn states_survive_a_json_round_trip() {
        let mut s = migrating(Strategy::SrDrop);
        s.source_paused(Timestamp(15));
        let m = Migration::ExpectHypervisorDone(s);
        let json = serde_json::to_string(&m).expect("serialize");
        assert!(json.starts_with(r#"{"expect-hypervisor-done":"#), "{json}");
        let back: Migration = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, m);
        assert_eq!(back.deadline(), Some(Timestamp(1_012)));
    }
}
