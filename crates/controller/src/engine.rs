//! The engine: one task that owns the sans-IO [`Controller`], the [`Store`], the push tasks and
//! the hypervisor driver, and processes [`Command`]s one at a time.
//!
//! ```text
//!   API handlers ──┐                         ┌──► Store::save (write-ahead, durable)
//!   push tasks  ───┼─► Command ─► Controller ┤
//!   driver      ───┤   (mpsc)      handle_*  └──► actions: PushConfig ─► push task of the host
//!   timer       ───┘                                      StartMigration / CancelMigration ─► driver
//! ```
//!
//! Every accepted input is persisted before its actions are carried out and before the API
//! caller is answered. If the store cannot be written, the actions are held (no host sees a
//! generation the store does not know) and the save is retried every second; the caller gets
//! a 500 `internal` error that says so.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::StatusCode;
use srmig_api::{
    Ack, ApiErrorCode, HostId, HypervisorReport, MigrationId, MigrationPhase, MigrationStatus,
    Timestamp, VmState, VmStateReport,
};
use srmig_control::{
    Action, CancelError, Controller, InputError, Migration, ModelError, RefuseReason, RemoveError,
    Unsaved,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::driver::{HypervisorDriver, MigrationOrder, ReportSink};
use crate::mailbox::Command;
use crate::mailbox::Failure;
use crate::metrics::Metrics;
use crate::push::{error_chain, Push, PushOutcome, Pushers};
use crate::resync::{self, Observed};
use crate::store::Store;
use crate::types::{HostRegistration, HostView, HypervisorEventKind, HypervisorPost, VmView};

/// The most acknowledgements handled under one commit (see `Engine::acks_in_batch`).
const ACK_BATCH: usize = 1024;

/// Milliseconds since the Unix epoch: the controller's clock.
pub(crate) fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Timestamp(ms)
}

#[derive(Debug, Default)]
struct HostRuntime {
    registration: Option<HostRegistration>,
    last_push_error: Option<String>,
}

pub(crate) struct Engine {
    core: Controller,
    store: Store,
    hosts: BTreeMap<HostId, HostRuntime>,
    pushers: Pushers,
    driver: Arc<dyn HypervisorDriver>,
    sink: ReportSink,
    /// Actions produced by the core and not carried out yet (the store save failed).
    held: Vec<Action>,
    /// When to retry a failed save.
    save_retry: Option<Instant>,
    last_save_error: Option<String>,
    /// Rows the core changed that no save has written yet (kept across a failed save).
    unsaved: Unsaved,
    /// Command sender (for background polls).
    tx: mpsc::Sender<Command>,
    /// How often to poll the endpoints of migrations waiting for their hypervisor.
    poll_interval: Duration,
    /// When to poll next (`None`: no migration needs it).
    poll_at: Option<Instant>,
    /// How often every host is polled for its epochs (heartbeat).
    host_poll: Duration,
    /// When to poll every host next.
    host_poll_at: Instant,
    /// Hosts with a poll in flight.
    polling: std::collections::BTreeSet<HostId>,
    /// The hypervisor driver's latest progress per migration (memory only).
    progress: BTreeMap<MigrationId, srmig_api::HypervisorProgress>,
    /// `GET /metrics` (recorded here, rendered by the API).
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("store", &self.store.describe())
            .field("hosts", &self.hosts.len())
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}

impl Engine {
    pub(crate) fn new(
        core: Controller,
        store: Store,
        registrations: Vec<HostRegistration>,
        pushers: Pushers,
        driver: Arc<dyn HypervisorDriver>,
        tx: mpsc::Sender<Command>,
        (poll_interval, host_poll): (Duration, Duration),
    ) -> Self {
        let mut engine = Engine {
            tx: tx.clone(),
            poll_interval,
            poll_at: None,
            host_poll,
            host_poll_at: Instant::now() + host_poll,
            polling: std::collections::BTreeSet::new(),
            progress: BTreeMap::new(),
            metrics: Arc::new(Metrics::new()),
            core,
            store,
            hosts: BTreeMap::new(),
            pushers,
            driver,
            sink: ReportSink::new(tx),
            held: Vec::new(),
            save_retry: None,
            last_save_error: None,
            unsaved: Unsaved::default(),
        };
        for reg in registrations {
            // A host the controller cannot reach any more (an address and no TLS identity):
            // kept, shown with the reason, its migrations time out.
            let last_push_error = engine
                .pushers
                .add_host(reg.info.name.clone(), &reg.api)
                .err()
                .inspect(|e| tracing::error!(host = %reg.info.name, error = %e, "cannot reach a registered host"));
            engine.hosts.insert(
                reg.info.name.clone(),
                HostRuntime {
                    registration: Some(reg),
                    last_push_error,
                },
            );
        }
        engine
    }

    /// The metrics this engine records, for the API to render.
    pub(crate) fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// After a restore: poll every host for the VM states reported while the controller was
    /// away, and re-attach the driver to migrations the hypervisor is running.
    pub(crate) fn resume(&mut self) {
        let hosts: Vec<HostId> = self.hosts.keys().cloned().collect();
        for host in hosts {
            self.poll_host(host);
        }
        for status in self.core.statuses() {
            if let Some(Migration::ExpectHypervisorDone(_)) = self.core.migration(status.id) {
                self.driver.resume(
                    MigrationOrder {
                        id: status.id,
                        vm: status.vm.clone(),
                        from: status.from.clone(),
                        to: status.to.clone(),
                        strategy: Some(status.strategy),
                    },
                    self.sink.clone(),
                );
            }
        }
    }

    /// Processes commands until `Shutdown` or until every sender is gone.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        // Carry out what the restore (or nothing) produced.
        if let Err(f) = self.commit() {
            tracing::error!(error = %f.error, "initial save failed");
        }
        loop {
            let deadline = self.next_deadline();
            let command = tokio::select! {
                c = rx.recv() => c,
                () = sleep_until(deadline), if deadline.is_some() => {
                    self.on_timer();
                    continue;
                }
            };
            match command {
                None | Some(Command::Shutdown) => break,
                Some(Command::Push(PushOutcome::Acked(ack))) => {
                    if !self.acks_in_batch(ack, &mut rx) {
                        break;
                    }
                }
                Some(c) => self.handle(c),
            }
        }
        tracing::info!("controller engine stopped");
    }

    /// Handles `first` and every acknowledgement already queued behind it (up to
    /// [`ACK_BATCH`]) with one commit: when N hosts acknowledge a phase at once the state is
    /// saved once per batch, not N times. The first other command queued is handled after
    /// that commit. `false` if that command was `Shutdown` (or every sender is gone).
    fn acks_in_batch(&mut self, first: Ack, rx: &mut mpsc::Receiver<Command>) -> bool {
        self.apply_ack(first);
        let mut next = None;
        for _ in 1..ACK_BATCH {
            match rx.try_recv() {
                Ok(Command::Push(PushOutcome::Acked(ack))) => self.apply_ack(ack),
                Ok(other) => {
                    next = Some(other);
                    break;
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    next = Some(Command::Shutdown);
                    break;
                }
            }
        }
        if let Err(f) = self.commit() {
            tracing::error!(error = %f.error, "save failed; actions held");
        }
        match next {
            Some(Command::Shutdown) => false,
            Some(c) => {
                self.handle(c);
                true
            }
            None => true,
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let core = self.core.poll_timeout().map(|t| {
            let wait = t.millis_since(now());
            Instant::now() + Duration::from_millis(wait)
        });
        [core, self.save_retry, self.poll_at, Some(self.host_poll_at)]
            .into_iter()
            .flatten()
            .min()
    }

    fn poll_host(&mut self, host: HostId) {
        let Some(http) = self
            .hosts
            .get(&host)
            .and_then(|h| h.registration.as_ref())
            .and_then(|r| {
                self.pushers
                    .http(&host, &r.api, Duration::from_secs(2))
                    .ok()
            })
        else {
            return;
        };
        if self.polling.insert(host.clone()) {
            resync::poll(host, http, self.tx.clone());
        }
    }

    /// The source and destination of every migration waiting for its hypervisor.
    fn hosts_to_poll(&self) -> Vec<HostId> {
        let mut hosts: Vec<HostId> = self
            .core
            .statuses()
            .into_iter()
            .filter(|s| s.phase == MigrationPhase::ExpectHypervisorDone)
            .flat_map(|s| [s.from, s.to])
            .collect();
        hosts.sort();
        hosts.dedup();
        hosts
    }

    /// Keeps the poll timer armed while some migration waits for its hypervisor.
    fn schedule_poll(&mut self) {
        if self.poll_at.is_none() && !self.hosts_to_poll().is_empty() {
            self.poll_at = Some(Instant::now() + self.poll_interval);
        }
    }

    fn on_observed(&mut self, observed: Observed) {
        self.polling.remove(&observed.host);
        self.metrics.polled(observed.result.is_ok());
        let reading = match observed.result {
            Ok(r) => r,
            Err(error) => {
                tracing::debug!(host = %observed.host, %error, "VM state poll failed");
                return;
            }
        };
        if let Err(e) = self
            .core
            .handle_host_status(now(), &observed.host, reading.observation)
        {
            tracing::warn!(error = %e, "polled host status refused");
        }
        for (vm, state) in reading.states {
            if self.core.model().vm(&vm).is_none()
                || self.core.vm_state(&vm, &observed.host) == Some(state)
            {
                continue;
            }
            tracing::info!(%vm, host = %observed.host, %state, "VM state learned by polling");
            let report = VmStateReport {
                vm,
                host: observed.host.clone(),
                state,
                at: now(),
                boot_epoch: None,
                last_delivery_us: None,
            };
            if let Err(e) = self.core.handle_vm_state(now(), report) {
                tracing::warn!(error = %e, "polled VM state refused");
            }
        }
        if let Err(f) = self.commit() {
            tracing::error!(error = %f.error, "save failed; actions held");
        }
    }

    fn on_timer(&mut self) {
        let t = now();
        if self.core.poll_timeout().is_some_and(|d| d <= t) {
            self.core.handle_timeout(t);
        }
        if self.save_retry.is_some_and(|r| r <= Instant::now()) {
            self.save_retry = None;
        }
        if self.poll_at.is_some_and(|p| p <= Instant::now()) {
            self.poll_at = None;
            for host in self.hosts_to_poll() {
                self.poll_host(host);
            }
        }
        if self.host_poll_at <= Instant::now() {
            self.host_poll_at = Instant::now() + self.host_poll;
            let hosts: Vec<HostId> = self.hosts.keys().cloned().collect();
            for host in hosts {
                self.poll_host(host);
            }
        }
        if let Err(f) = self.commit() {
            tracing::error!(error = %f.error, "save failed; actions held");
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::AddHost(reg, reply) => {
                let r = self.add_host(reg);
                let _ = reply.send(r);
            }
            Command::AddVm(vm, reply) => {
                let name = vm.name.clone();
                let r = self
                    .core
                    .add_vm(vm)
                    .map_err(model_failure)
                    .and_then(|()| self.commit())
                    .and_then(|()| {
                        self.vm_view(&name).ok_or_else(|| {
                            Failure::new(
                                StatusCode::INTERNAL_SERVER_ERROR,
                                ApiErrorCode::Internal,
                                format!("VM {name} vanished after registration"),
                            )
                        })
                    });
                let _ = reply.send(r);
            }
            Command::RemoveHost(host, reply) => {
                let r = self
                    .core
                    .remove_host(now(), &host)
                    .map_err(remove_failure)
                    .and_then(|()| {
                        self.pushers.remove_host(&host);
                        self.hosts.remove(&host);
                        self.polling.remove(&host);
                        tracing::info!(%host, "host removed");
                        self.commit()
                    });
                let _ = reply.send(r);
            }
            Command::RemoveVm(vm, reply) => {
                let r = self
                    .core
                    .remove_vm(&vm)
                    .map_err(remove_failure)
                    .and_then(|()| {
                        tracing::info!(%vm, "VM removed");
                        self.commit()
                    });
                let _ = reply.send(r);
            }
            Command::Hosts(reply) => {
                let _ = reply.send(Ok(self.host_views()));
            }
            Command::Vms(reply) => {
                let views = self
                    .core
                    .model()
                    .vms()
                    .filter_map(|v| self.vm_view(&v.name))
                    .collect();
                let _ = reply.send(Ok(views));
            }
            Command::VmState(report, reply) => {
                tracing::info!(vm = %report.vm, host = %report.host, state = %report.state, "VM state report");
                let r = self
                    .core
                    .handle_vm_state(now(), report)
                    .map_err(input_failure)
                    .and_then(|()| self.commit());
                let _ = reply.send(r);
            }
            Command::Fence(report, reply) => {
                tracing::debug!(vm = %report.vm, host = %report.host, ingress = %report.ingress, "fence report");
                let r = self
                    .core
                    .handle_fence_report(now(), report)
                    .map_err(input_failure)
                    .and_then(|()| self.commit());
                let _ = reply.send(r);
            }
            Command::Release(report, reply) => {
                tracing::debug!(vm = %report.vm, host = %report.host, latency_us = report.release.latency_us(), held = report.release.held, "release report");
                let r = self
                    .core
                    .handle_release_report(now(), report)
                    .map_err(input_failure)
                    .and_then(|()| self.commit());
                let _ = reply.send(r);
            }
            Command::Migrate(req, reply) => {
                let r = self
                    .core
                    .request_migration(now(), req)
                    .map_err(refuse_failure)
                    .and_then(|id| {
                        self.commit()?;
                        self.status(id)
                    });
                if let Ok(s) = &r {
                    tracing::info!(migration = %s.id, vm = %s.vm, from = %s.from, to = %s.to, strategy = %s.strategy, "migration accepted");
                }
                let _ = reply.send(r);
            }
            Command::Migration(id, reply) => {
                let _ = reply.send(self.status(id));
            }
            Command::Migrations(reply) => {
                let statuses = self
                    .core
                    .statuses()
                    .into_iter()
                    .map(|s| self.with_progress(s))
                    .collect();
                let _ = reply.send(Ok(statuses));
            }
            Command::HypervisorProgress(id, p) => {
                if self.core.migration(id).is_some() {
                    self.progress.insert(id, p);
                }
                // Forget progress of migrations the core no longer remembers.
                let core = &self.core;
                self.progress.retain(|id, _| core.migration(*id).is_some());
            }
            Command::Hypervisor(id, post, reply) => {
                let r = self.hypervisor_post(id, &post);
                let _ = reply.send(r);
            }
            Command::Cancel(id, reply) => {
                let r = self
                    .core
                    .cancel_migration(now(), id)
                    .map_err(cancel_failure)
                    .and_then(|()| {
                        self.commit()?;
                        self.status(id)
                    });
                let _ = reply.send(r);
            }
            Command::HypervisorReport(report) => {
                if let Err(e) = self.core.handle_hypervisor(now(), report) {
                    tracing::warn!(error = %e, "hypervisor report refused");
                }
                if let Err(f) = self.commit() {
                    tracing::error!(error = %f.error, "save failed; actions held");
                }
            }
            Command::Push(PushOutcome::Acked(ack)) => self.on_ack(ack),
            Command::Observed(o) => self.on_observed(o),
            Command::Push(PushOutcome::Failed {
                host,
                generation,
                error,
                retrying,
            }) => {
                self.metrics.push_failed(retrying);
                if !retrying {
                    tracing::warn!(%host, generation, %error, "push refused");
                }
                if let Some(h) = self.hosts.get_mut(&host) {
                    h.last_push_error = Some(format!("generation {generation}: {error}"));
                }
            }
            Command::Shutdown => {}
        }
    }

    fn add_host(&mut self, reg: HostRegistration) -> Result<HostView, Failure> {
        let name = reg.info.name.clone();
        // Reachable first: nothing is registered that could never be pushed to.
        self.pushers
            .http(&name, &reg.api, Duration::from_secs(1))
            .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, ApiErrorCode::InvalidRequest, e))?;
        self.core
            .add_host(reg.info.clone())
            .map_err(model_failure)?;
        if let Err(e) = self.pushers.add_host(name.clone(), &reg.api) {
            tracing::error!(host = %name, error = %e, "cannot reach the host");
        }
        self.hosts.insert(
            name.clone(),
            HostRuntime {
                registration: Some(reg),
                last_push_error: None,
            },
        );
        self.commit()?;
        self.host_views()
            .into_iter()
            .find(|h| h.registration.info.name == name)
            .ok_or_else(|| {
                Failure::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ApiErrorCode::Internal,
                    format!("host {name} vanished after registration"),
                )
            })
    }

    fn on_ack(&mut self, ack: Ack) {
        self.apply_ack(ack);
        if let Err(f) = self.commit() {
            tracing::error!(error = %f.error, "save failed; actions held");
        }
    }

    /// An acknowledgement into the core, without saving (the caller commits).
    fn apply_ack(&mut self, ack: Ack) {
        self.metrics.acked();
        let host = ack.host.clone();
        if let Some(h) = self.hosts.get_mut(&host) {
            h.last_push_error = None;
        }
        match self.core.handle_ack(now(), ack) {
            Ok(()) => {}
            Err(e) => tracing::warn!(error = %e, "ack refused"),
        }
    }

    fn hypervisor_post(
        &mut self,
        id: MigrationId,
        post: &HypervisorPost,
    ) -> Result<MigrationStatus, Failure> {
        let Some(m) = self.core.migration(id) else {
            return Err(Failure::new(
                StatusCode::NOT_FOUND,
                ApiErrorCode::UnknownMigration,
                format!("migration {id} does not exist"),
            ));
        };
        match m {
            Migration::ExpectHypervisorDone(_) => {}
            Migration::Requested(_)
            | Migration::ExpectEndpointAcks(_)
            | Migration::ExpectPathAcks(_) => {
                return Err(Failure::new(
                    StatusCode::CONFLICT,
                    ApiErrorCode::Conflict,
                    format!(
                        "migration {id} has not been started on the hypervisor yet (phase {}); event ignored",
                        m.phase()
                    ),
                ));
            }
            _ => {
                // Past the hypervisor phase: a late event that agrees with what happened (the
                // VM ran at D before the hypervisor said so, or a repeated rollback report) is
                // fine; one that contradicts it is refused.
                let went_forward = m
                    .core()
                    .phases
                    .iter()
                    .any(|p| p.phase == MigrationPhase::ExpectCommitAcks);
                let completed = post.event == HypervisorEventKind::Completed;
                if went_forward == completed {
                    return self.status(id);
                }
                return Err(Failure::new(
                    StatusCode::CONFLICT,
                    ApiErrorCode::Conflict,
                    format!(
                        "migration {id} already {} (phase {}); {:?} event ignored",
                        if went_forward {
                            "switched over to the destination"
                        } else {
                            "rolled back to the source"
                        },
                        m.phase(),
                        post.event
                    ),
                ));
            }
        }
        let vm = m.core().vm.clone();
        let report = HypervisorReport {
            vm,
            migration: id,
            event: post.to_event(),
        };
        tracing::info!(migration = %id, event = ?report.event, "hypervisor event");
        self.core
            .handle_hypervisor(now(), report)
            .map_err(input_failure)?;
        self.commit()?;
        self.status(id)
    }

    /// Persists the state, then carries out the core's actions (held if the save fails).
    fn commit(&mut self) -> Result<(), Failure> {
        self.held
            .extend(std::iter::from_fn(|| self.core.poll_action()));
        if self.save_retry.is_some() {
            return Err(self.save_failure());
        }
        let registrations: Vec<&HostRegistration> = self
            .hosts
            .values()
            .filter_map(|h| h.registration.as_ref())
            .collect();
        self.unsaved.merge(self.core.take_unsaved());
        match self
            .store
            .save_view(&registrations, &self.core.snapshot_view(), &self.unsaved)
        {
            Ok(stats) => {
                self.unsaved = Unsaved::default();
                if stats.written + stats.removed > 0 {
                    tracing::trace!(written = stats.written, removed = stats.removed, "saved");
                }
                self.last_save_error = None;
            }
            Err(e) => {
                let msg = error_chain(&e);
                tracing::error!(error = %msg, "cannot save the controller state");
                self.last_save_error = Some(msg);
                self.metrics.save_failed();
                self.save_retry = Some(Instant::now() + Duration::from_secs(1));
                return Err(self.save_failure());
            }
        }
        for action in std::mem::take(&mut self.held) {
            self.execute(action);
        }
        self.metrics.set_state(
            self.core.active_migrations(),
            self.hosts.len(),
            self.core.epoch(),
        );
        self.schedule_poll();
        Ok(())
    }

    fn save_failure(&self) -> Failure {
        Failure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ApiErrorCode::Internal,
            format!(
                "the change was accepted but cannot be saved ({}); it is held until the store works again",
                self.last_save_error.as_deref().unwrap_or("store error")
            ),
        )
    }

    fn execute(&mut self, action: Action) {
        match action {
            Action::PushConfig { host, config } => {
                tracing::debug!(%host, generation = config.generation, "push config");
                self.metrics.config_pushed();
                if !self.pushers.push(&host, Push::Whole(config)) {
                    tracing::error!(%host, "no push task for host");
                }
            }
            Action::PushDelta { host, delta } => {
                tracing::debug!(%host, generation = delta.generation, mappings = delta.mappings.len(), "push config delta");
                self.metrics.config_pushed();
                if !self.pushers.push(&host, Push::Delta(delta)) {
                    tracing::error!(%host, "no push task for host");
                }
            }
            Action::StartMigration {
                id,
                vm,
                from,
                to,
                strategy,
            } => {
                tracing::info!(migration = %id, driver = self.driver.name(), "start migration on the hypervisor");
                self.driver.start(
                    MigrationOrder {
                        id,
                        vm,
                        from,
                        to,
                        strategy: Some(strategy),
                    },
                    self.sink.clone(),
                );
            }
            Action::CancelMigration { id, vm, from, to } => {
                tracing::info!(migration = %id, driver = self.driver.name(), "cancel migration on the hypervisor");
                self.driver.cancel(
                    MigrationOrder {
                        id,
                        vm,
                        from,
                        to,
                        strategy: None,
                    },
                    self.sink.clone(),
                );
            }
            Action::MigrationFinished { id, vm, outcome } => {
                tracing::info!(migration = %id, %vm, %outcome, "migration finished");
                let status = self.core.migration(id).map(Migration::status);
                self.metrics.migration_finished(&outcome, status.as_ref());
            }
            Action::EpochAdvanced {
                host,
                theirs,
                epoch,
            } => {
                tracing::warn!(%host, their_epoch = theirs.0, their_generation = theirs.1, epoch, "host holds a config this controller never pushed: moved to a newer epoch, pushing every host again");
                self.metrics.epoch_advanced();
            }
        }
    }

    fn with_progress(&self, mut s: MigrationStatus) -> MigrationStatus {
        s.hypervisor = self.progress.get(&s.id).cloned();
        s
    }

    fn status(&self, id: MigrationId) -> Result<MigrationStatus, Failure> {
        self.core
            .migration(id)
            .map(|m| self.with_progress(m.status()))
            .ok_or_else(|| {
                Failure::new(
                    StatusCode::NOT_FOUND,
                    ApiErrorCode::UnknownMigration,
                    format!("migration {id} does not exist"),
                )
            })
    }

    fn host_views(&self) -> Vec<HostView> {
        self.hosts
            .iter()
            .filter_map(|(name, h)| {
                let registration = h.registration.clone()?;
                Some(HostView {
                    registration,
                    generation_pushed: self.core.pushed_config(name).map_or(0, |c| c.generation),
                    generation_acked: self.core.acked_generation(name).unwrap_or(0),
                    last_push_error: h.last_push_error.clone(),
                })
            })
            .collect()
    }

    fn vm_view(&self, name: &srmig_api::VmId) -> Option<VmView> {
        let info = self.core.model().vm(name)?.clone();
        let states: BTreeMap<HostId, VmState> = self
            .core
            .model()
            .hosts()
            .filter_map(|h| Some((h.name.clone(), self.core.vm_state(name, &h.name)?)))
            .collect();
        Some(VmView {
            migration: self.core.migration_of(name),
            info,
            states,
        })
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn model_failure(e: ModelError) -> Failure {
    let (status, code) = match &e {
        ModelError::DuplicateHost(_)
        | ModelError::DuplicateVm(_)
        | ModelError::LocatorOverlap { .. }
        | ModelError::UnderlayInUse { .. }
        | ModelError::AddressInUse { .. } => (StatusCode::CONFLICT, ApiErrorCode::Conflict),
        ModelError::BadMac { why, .. } if why.starts_with("already") => {
            (StatusCode::CONFLICT, ApiErrorCode::Conflict)
        }
        ModelError::UnknownHost { .. } => (StatusCode::NOT_FOUND, ApiErrorCode::UnknownHost),
        _ => (StatusCode::BAD_REQUEST, ApiErrorCode::InvalidRequest),
    };
    Failure::new(status, code, error_chain(&e))
}

fn refuse_failure(e: RefuseReason) -> Failure {
    let (status, code) = match &e {
        RefuseReason::UnknownVm(_) => (StatusCode::NOT_FOUND, ApiErrorCode::UnknownVm),
        RefuseReason::UnknownHost(_) => (StatusCode::NOT_FOUND, ApiErrorCode::UnknownHost),
        RefuseReason::AlreadyOnHost { .. } => (StatusCode::CONFLICT, ApiErrorCode::AlreadyOnHost),
        RefuseReason::AlreadyMigrating { .. } => {
            (StatusCode::CONFLICT, ApiErrorCode::AlreadyMigrating)
        }
        RefuseReason::NoIdLeft(_) => (StatusCode::INTERNAL_SERVER_ERROR, ApiErrorCode::Internal),
    };
    Failure::new(status, code, e.to_string())
}

fn input_failure(e: InputError) -> Failure {
    let (status, code) = match &e {
        InputError::UnknownHost(_) => (StatusCode::NOT_FOUND, ApiErrorCode::UnknownHost),
        InputError::UnknownVm(_) => (StatusCode::NOT_FOUND, ApiErrorCode::UnknownVm),
    };
    Failure::new(status, code, e.to_string())
}

fn remove_failure(e: RemoveError) -> Failure {
    let (status, code) = match &e {
        RemoveError::UnknownHost(_) => (StatusCode::NOT_FOUND, ApiErrorCode::UnknownHost),
        RemoveError::UnknownVm(_) => (StatusCode::NOT_FOUND, ApiErrorCode::UnknownVm),
        RemoveError::HostHasVms { .. } | RemoveError::Migrating { .. } => {
            (StatusCode::CONFLICT, ApiErrorCode::Conflict)
        }
    };
    Failure::new(status, code, e.to_string())
}

fn cancel_failure(e: CancelError) -> Failure {
    let (status, code) = match &e {
        CancelError::UnknownMigration(_) => (StatusCode::NOT_FOUND, ApiErrorCode::UnknownMigration),
        CancelError::AlreadyFinished { .. } | CancelError::TooLate { .. } => {
            (StatusCode::CONFLICT, ApiErrorCode::TooLateToCancel)
        }
    };
    Failure::new(status, code, e.to_string())
}
