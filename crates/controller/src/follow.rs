//! `srmig migrate`'s procedure: ask the controller for a migration, then follow it to its end,
//! to a time limit, or until the controller stops answering, telling the caller what happens
//! as [`FollowEvent`]s. The caller only renders them (the CLI: timestamped lines, or a progress
//! bar on a terminal); what to say, and when, is decided here.
//!
//! ```text
//!  GET /v1/info (driver, timeouts; optional) ─► POST /v1/migrations ─► Accepted   [--no-wait: end]
//!  every `poll`: GET /v1/migrations/{id} ─► Phase         one per new history entry
//!                                        ─► WaitingForHypervisor   on entering expect-hypervisor-done
//!                                        ─► Progress      the hypervisor's figures changed
//!  nothing said for `heartbeat` ─────────► Heartbeat     (ack phases: GET /v1/hosts names the hosts behind)
//!  no answer ─► ControllerSilent ... for `lost_contact` ─► Err(LostContact)
//!  terminal phase ─► Completed | RolledBack        `timeout` ─► [POST .../cancel] TimedOut
//! ```
//!
//! A time limit never cancels the migration unless asked to ([`FollowOptions::cancel_on_timeout`]):
//! the controller's own phase timeouts (acks, hypervisor; see [`ControllerInfo`]) still apply.
//! Stopping to follow (Ctrl-C) leaves the migration running.

use std::time::Duration;

use hyper::StatusCode;
use srmig_api::{
    ApiError, HypervisorProgress, MigrateRequest, MigrationId, MigrationPhase, MigrationStatus,
    PhaseRecord, Timestamp,
};
use tokio::time::Instant;

use crate::client::{progress_moved, ClientError, ControllerClient};
use crate::engine::now;
use crate::http::PeerHttpError;
use crate::types::{ControllerInfo, HostView};

/// How [`follow`] (and [`migrate_and_follow`]) behave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowOptions {
    /// Follow the migration to its end (`false`: return once it is accepted).
    pub wait: bool,
    /// How often the migration's status is read.
    pub poll: Duration,
    /// Stop following after this long (from the request); `None`: no limit of our own.
    pub timeout: Option<Duration>,
    /// When `timeout` is reached, ask the controller to cancel the migration.
    pub cancel_on_timeout: bool,
    /// Say something at least this often: a [`FollowEvent`] of kind
    /// [`EventKind::Heartbeat`] when nothing else was said.
    pub heartbeat: Duration,
    /// Give up when the controller has not answered for this long while following.
    pub lost_contact: Duration,
}

impl Default for FollowOptions {
    fn default() -> Self {
        FollowOptions {
            wait: true,
            poll: Duration::from_millis(200),
            timeout: None,
            cancel_on_timeout: false,
            heartbeat: Duration::from_secs(10),
            lost_contact: Duration::from_secs(30),
        }
    }
}

/// Something worth telling while a migration is followed.
#[derive(Debug, Clone, Copy)]
pub struct FollowEvent<'a> {
    /// When: the record's time for a phase, the client's clock otherwise (Unix milliseconds).
    pub at: Timestamp,
    /// The migration's latest known status.
    pub status: &'a MigrationStatus,
    /// What happened.
    pub kind: EventKind<'a>,
}

/// The kinds of [`FollowEvent`].
#[derive(Debug, Clone, Copy)]
pub enum EventKind<'a> {
    /// The controller accepted the request (`info`: what it runs with, if it said).
    Accepted {
        /// `GET /v1/info`, when the controller answered it.
        info: Option<&'a ControllerInfo>,
    },
    /// A new entry of the migration's history: a phase entered or an observation made.
    Phase(&'a PhaseRecord),
    /// The migration now waits for its hypervisor (once per entry into
    /// `expect-hypervisor-done`).
    WaitingForHypervisor(&'a HypervisorWait),
    /// The hypervisor's figures changed; `notable` when worth a line of its own (a new
    /// status or pass, another quarter of the memory sent, the final figures; see
    /// [`progress_moved`]).
    Progress {
        /// The figures.
        progress: &'a HypervisorProgress,
        /// Worth a line.
        notable: bool,
    },
    /// Nothing else was said for [`FollowOptions::heartbeat`].
    Heartbeat(&'a Heartbeat),
    /// The controller did not answer; still trying (until [`FollowOptions::lost_contact`]).
    ControllerSilent {
        /// Why the last read failed.
        error: &'a ClientError,
        /// For how long it has not answered.
        silent_for: Duration,
    },
}

/// What a migration in `expect-hypervisor-done` waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HypervisorWait {
    /// The controller's hypervisor driver (`None`: the controller did not say).
    pub driver: Option<String>,
    /// What that driver waits for (`{id}` already replaced by the migration's number).
    pub waits_for: String,
    /// The controller's hypervisor timeout.
    pub timeout: Option<Duration>,
    /// When the controller asks the hypervisor to cancel (the phase's start plus `timeout`).
    pub cancel_at: Option<Timestamp>,
}

/// A heartbeat: where the migration stands when nothing else happened for a while.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// The current phase.
    pub phase: MigrationPhase,
    /// How long the migration has been in it.
    pub in_phase: Duration,
    /// In `expect-hypervisor-done`: what it waits for.
    pub hypervisor: Option<HypervisorWait>,
    /// The hypervisor's latest figures, if it reports any.
    pub progress: Option<HypervisorProgress>,
    /// In a phase that waits for acknowledgements: the hosts that have not acknowledged the
    /// config pushed to them (empty if all have, or if the list could not be read).
    pub behind: Vec<HostBehind>,
}

/// A host that has not acknowledged its latest config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostBehind {
    /// The host.
    pub host: String,
    /// The generation pushed to it.
    pub pushed: u64,
    /// The highest it acknowledged.
    pub acked: u64,
    /// Why the last push attempt failed, if it did.
    pub last_error: Option<String>,
}

/// How following a migration ended.
#[derive(Debug)]
pub enum FollowEnd {
    /// [`FollowOptions::wait`] was false: the migration was accepted (and goes on).
    Accepted(MigrationStatus),
    /// The migration completed: the VM runs on the destination, mapped there.
    Completed(MigrationStatus),
    /// The migration failed or was cancelled and rolled back to the source (`phase` says
    /// which, `error` why).
    RolledBack(MigrationStatus),
    /// [`FollowOptions::timeout`] was reached before the migration ended.
    TimedOut {
        /// The last status read.
        status: MigrationStatus,
        /// The limit.
        after: Duration,
        /// Whether a cancel was requested, and what the controller said.
        cancel: TimeoutCancel,
    },
}

/// What happened to the migration when the time limit was reached.
#[derive(Debug)]
pub enum TimeoutCancel {
    /// Not asked ([`FollowOptions::cancel_on_timeout`] false): the migration goes on.
    NotRequested,
    /// The controller accepted the cancel: the migration rolls back (its status after the
    /// request).
    Requested(Box<MigrationStatus>),
    /// The controller refused or did not answer the cancel (too late: past the switchover,
    /// the migration can only complete).
    Failed(ClientError),
}

/// Why a migration could not be requested or followed.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The controller could not be reached (or did not answer in time; over TLS: the
    /// handshake failed, or a peer that is not a controller answered).
    #[error("cannot reach the controller at {controller}")]
    Unreachable {
        /// The controller's API socket path or `https://HOST:PORT`.
        controller: String,
        /// What went wrong.
        #[source]
        source: PeerHttpError,
    },
    /// The controller refused the migration.
    #[error("the controller refused the migration ({}): {}", error.code, error.message)]
    Refused {
        /// The HTTP status.
        status: StatusCode,
        /// The error body: code and message.
        error: ApiError,
    },
    /// The controller answered the request with something the API does not document.
    #[error("the controller's answer to the migration request is not understood")]
    Request(#[source] ClientError),
    /// The controller stopped answering while the migration was followed.
    #[error(
        "lost contact with the controller while following {id}: no answer for {} s; the \
         migration goes on without this command (GET /v1/migrations/{})",
        silent_for.as_secs(),
        id.0
    )]
    LostContact {
        /// The migration.
        id: MigrationId,
        /// How long the controller was silent.
        silent_for: Duration,
        /// The last failure.
        #[source]
        source: ClientError,
    },
    /// The controller answered a status read with an error (it no longer knows the
    /// migration, ...).
    #[error("the controller failed to report on {id}")]
    Following {
        /// The migration.
        id: MigrationId,
        /// The failure.
        #[source]
        source: ClientError,
    },
    /// The async runtime could not be built ([`migrate_and_follow`]).
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
}

/// Sorts a failure of the request itself (before the migration was accepted).
fn request_error(controller: &str, e: ClientError) -> FollowError {
    match e {
        ClientError::Http(source) => FollowError::Unreachable {
            controller: controller.to_owned(),
            source: *source,
        },
        ClientError::Api { status, error } => FollowError::Refused { status, error },
        other => FollowError::Request(other),
    }
}

/// A failure worth retrying while following: no answer, or a controller shutting down (it
/// restarts and resumes the migration from its store).
fn transient(e: &ClientError) -> bool {
    match e {
        ClientError::Http(_) => true,
        ClientError::Api { status, .. } => *status == StatusCode::SERVICE_UNAVAILABLE,
        _ => false,
    }
}

fn is_ack_phase(phase: MigrationPhase) -> bool {
    matches!(
        phase,
        MigrationPhase::ExpectEndpointAcks
            | MigrationPhase::ExpectPathAcks
            | MigrationPhase::ExpectCommitAcks
            | MigrationPhase::ExpectRollbackAcks
            | MigrationPhase::ExpectCleanupAcks
    )
}

/// The blocking form of [`follow`], on a runtime of its own (the CLI's entry point): `client`
/// from [`ControllerClient::new`] (a socket) or [`ControllerClient::to`] (`--controller
/// PATH|https://HOST:PORT`).
pub fn migrate_and_follow(
    client: &ControllerClient,
    req: &MigrateRequest,
    options: &FollowOptions,
    on_event: impl FnMut(&FollowEvent<'_>),
) -> Result<FollowEnd, FollowError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(FollowError::Runtime)?;
    runtime.block_on(follow(client, req, options, on_event))
}

/// Requests the migration `req` from the controller behind `client` and follows it (see the
/// module docs), calling `on_event` as things happen.
pub async fn follow(
    client: &ControllerClient,
    req: &MigrateRequest,
    options: &FollowOptions,
    mut on_event: impl FnMut(&FollowEvent<'_>),
) -> Result<FollowEnd, FollowError> {
    let started = Instant::now();
    let controller = client.target();
    // What the controller runs with; an older controller without /v1/info is fine.
    let info = match client.info().await {
        Ok(info) => Some(info),
        Err(ClientError::Http(source)) => {
            return Err(FollowError::Unreachable {
                controller,
                source: *source,
            });
        }
        Err(_) => None,
    };
    let accepted = client
        .migrate(req)
        .await
        .map_err(|e| request_error(&controller, e))?;
    on_event(&FollowEvent {
        at: accepted.started_at_ms,
        status: &accepted,
        kind: EventKind::Accepted {
            info: info.as_ref(),
        },
    });
    if !options.wait {
        return Ok(FollowEnd::Accepted(accepted));
    }
    let id = accepted.id;
    let deadline = options.timeout.map(|t| started + t);
    let mut tracker = Tracker::new(info, accepted);
    let mut silent_since: Option<Instant> = None;
    let mut last_said = Instant::now();
    loop {
        match client.migration(id).await {
            Ok(status) => {
                silent_since = None;
                if tracker.update(status, &mut on_event) {
                    last_said = Instant::now();
                }
                let status = &tracker.status;
                match status.phase {
                    MigrationPhase::Completed => return Ok(FollowEnd::Completed(status.clone())),
                    MigrationPhase::Failed | MigrationPhase::Cancelled => {
                        return Ok(FollowEnd::RolledBack(status.clone()))
                    }
                    _ => {}
                }
            }
            Err(e) if transient(&e) => {
                let since = *silent_since.get_or_insert_with(Instant::now);
                let silent_for = since.elapsed();
                if silent_for >= options.lost_contact {
                    return Err(FollowError::LostContact {
                        id,
                        silent_for,
                        source: e,
                    });
                }
                if last_said.elapsed() >= options.heartbeat.min(options.lost_contact / 3) {
                    on_event(&FollowEvent {
                        at: now(),
                        status: &tracker.status,
                        kind: EventKind::ControllerSilent {
                            error: &e,
                            silent_for,
                        },
                    });
                    last_said = Instant::now();
                }
            }
            Err(source) => return Err(FollowError::Following { id, source }),
        }
        if silent_since.is_none() && last_said.elapsed() >= options.heartbeat {
            let behind = if is_ack_phase(tracker.status.phase) {
                hosts_behind(client).await
            } else {
                Vec::new()
            };
            let beat = tracker.heartbeat(behind);
            on_event(&FollowEvent {
                at: now(),
                status: &tracker.status,
                kind: EventKind::Heartbeat(&beat),
            });
            last_said = Instant::now();
        }
        if let (Some(deadline), Some(after)) = (deadline, options.timeout) {
            if Instant::now() >= deadline {
                let cancel = if options.cancel_on_timeout {
                    match client.cancel(id).await {
                        Ok(s) => TimeoutCancel::Requested(Box::new(s)),
                        Err(e) => TimeoutCancel::Failed(e),
                    }
                } else {
                    TimeoutCancel::NotRequested
                };
                return Ok(FollowEnd::TimedOut {
                    status: tracker.status,
                    after,
                    cancel,
                });
            }
        }
        // Wake for the next poll, heartbeat or the time limit, whichever comes first.
        let mut nap = options
            .poll
            .min((last_said + options.heartbeat).saturating_duration_since(Instant::now()));
        if let Some(deadline) = deadline {
            nap = nap.min(deadline.saturating_duration_since(Instant::now()));
        }
        tokio::time::sleep(nap).await;
    }
}

/// The hosts that have not acknowledged their latest config (empty if unknown).
async fn hosts_behind(client: &ControllerClient) -> Vec<HostBehind> {
    let Ok(hosts) = client.hosts().await else {
        return Vec::new();
    };
    hosts
        .into_iter()
        .filter(|h: &HostView| h.generation_acked < h.generation_pushed)
        .map(|h| HostBehind {
            host: h.registration.info.name.to_string(),
            pushed: h.generation_pushed,
            acked: h.generation_acked,
            last_error: h.last_push_error,
        })
        .collect()
}

/// What has been told so far.
struct Tracker {
    info: Option<ControllerInfo>,
    status: MigrationStatus,
    /// History entries already told.
    seen: usize,
    /// The hypervisor figures last told, and the last ones worth a line.
    progress: Option<HypervisorProgress>,
    notable: Option<HypervisorProgress>,
}

impl Tracker {
    fn new(info: Option<ControllerInfo>, accepted: MigrationStatus) -> Self {
        Tracker {
            info,
            status: accepted,
            seen: 0,
            progress: None,
            notable: None,
        }
    }

    /// Tells what is new in `status`; true if something worth a line was told.
    fn update(
        &mut self,
        status: MigrationStatus,
        on_event: &mut impl FnMut(&FollowEvent<'_>),
    ) -> bool {
        self.status = status;
        let mut said = false;
        let records = self.status.phases.get(self.seen..).unwrap_or_default();
        for record in records {
            on_event(&FollowEvent {
                at: record.at_ms,
                status: &self.status,
                kind: EventKind::Phase(record),
            });
            if record.phase == MigrationPhase::ExpectHypervisorDone {
                let wait = self.hypervisor_wait(record.at_ms);
                on_event(&FollowEvent {
                    at: record.at_ms,
                    status: &self.status,
                    kind: EventKind::WaitingForHypervisor(&wait),
                });
            }
            said = true;
        }
        self.seen = self.seen.max(self.status.phases.len());
        if let Some(p) = &self.status.hypervisor {
            if self.progress.as_ref() != Some(p) {
                let notable = progress_moved(self.notable.as_ref(), p);
                on_event(&FollowEvent {
                    at: now(),
                    status: &self.status,
                    kind: EventKind::Progress {
                        progress: p,
                        notable,
                    },
                });
                if notable {
                    self.notable = Some(p.clone());
                    said = true;
                }
                self.progress = Some(p.clone());
            }
        }
        said
    }

    /// When the current phase began (its latest record).
    fn phase_since(&self) -> Timestamp {
        self.status
            .phases
            .iter()
            .rev()
            .find(|r| r.phase == self.status.phase)
            .map_or(self.status.started_at_ms, |r| r.at_ms)
    }

    fn hypervisor_wait(&self, since: Timestamp) -> HypervisorWait {
        let id = self.status.id.0.to_string();
        let timeout = self
            .info
            .as_ref()
            .map(|i| Duration::from_millis(i.hypervisor_timeout_ms));
        HypervisorWait {
            driver: self.info.as_ref().map(|i| i.driver.clone()),
            waits_for: self.info.as_ref().map_or_else(
                || "the hypervisor to move the VM and report the outcome".to_owned(),
                |i| i.driver_waits_for.replace("{id}", &id),
            ),
            timeout,
            cancel_at: self
                .info
                .as_ref()
                .map(|i| Timestamp(since.0.saturating_add(i.hypervisor_timeout_ms))),
        }
    }

    fn heartbeat(&self, behind: Vec<HostBehind>) -> Heartbeat {
        let since = self.phase_since();
        Heartbeat {
            phase: self.status.phase,
            in_phase: Duration::from_millis(now().millis_since(since)),
            hypervisor: (self.status.phase == MigrationPhase::ExpectHypervisorDone)
                .then(|| self.hypervisor_wait(since)),
            progress: self.status.hypervisor.clone(),
            behind,
        }
    }
}

/// Whether the migration is past its switchover (the VM ran at the destination and the
/// mapping moved there): from then on it can only complete.
pub fn switched_over(status: &MigrationStatus) -> bool {
    status
        .phases
        .iter()
        .any(|r| r.phase == MigrationPhase::ExpectCommitAcks)
}

// ----- what to say -----

/// A short explanation of a phase or observation, for people.
pub fn phase_gloss(phase: MigrationPhase) -> &'static str {
    match phase {
        MigrationPhase::Requested => "accepted by the controller",
        MigrationPhase::ExpectEndpointAcks => {
            "endpoint configs pushed to the source and destination; waiting for their acks"
        }
        MigrationPhase::ExpectPathAcks => {
            "SR path S::End.S -> D::End.SBUF pushed to every host; waiting for every ack"
        }
        MigrationPhase::ExpectHypervisorDone => {
            "migration started on the hypervisor; waiting for the VM to run at the destination"
        }
        MigrationPhase::SourcePaused => "the source reports the VM paused (stop-and-copy)",
        MigrationPhase::HypervisorCompleted => "the hypervisor reports the migration complete",
        MigrationPhase::CancelRequested => "cancel requested",
        MigrationPhase::Retried => {
            "a phase timed out: configs pushed again to the hosts that had not acknowledged"
        }
        MigrationPhase::HostsLeftBehind => {
            "stopped waiting for hosts that did not acknowledge (left behind: they get the \
             current config when they answer; until then they may steer along the old path)"
        }
        MigrationPhase::FenceComplete => {
            "the destination received every host's commit-fence marker: nothing left on the old path"
        }
        MigrationPhase::FenceIncomplete => {
            "cleaning up without every host's commit-fence marker (fence_wait_ms ran out)"
        }
        MigrationPhase::ExpectCommitAcks => {
            "switched over: the VM runs at the destination; waiting for every host to ack the new mapping"
        }
        MigrationPhase::ExpectRollbackAcks => {
            "rolling back: waiting for every host to ack the mapping to the source"
        }
        MigrationPhase::ExpectCleanupAcks => {
            "removing End.S, End.SBUF and the leaving host's attachment; waiting for acks"
        }
        MigrationPhase::Completed => "the VM runs on the destination, mapped there",
        MigrationPhase::Failed | MigrationPhase::Cancelled => {
            "rolled back; the VM stays on the source"
        }
    }
}

/// Bytes as MB with one decimal (`41.0 MB`), as the hypervisor line shows them.
fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// A duration for people: tenths of a second below 10 s, whole seconds below 2 minutes,
/// minutes and seconds from there (`0.4 s`, `45 s`, `9 min 20 s`).
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s < 10 {
        format!("{:.1} s", d.as_secs_f64())
    } else if s < 120 {
        format!("{s} s")
    } else if s.is_multiple_of(60) {
        format!("{} min", s / 60)
    } else {
        format!("{} min {} s", s / 60, s % 60)
    }
}

/// The hypervisor's estimate of the time left: the memory still to send at the average rate
/// so far (`ram_transferred / total_time_ms`). `None` without those figures, or once the
/// migration completed. Pre-copy resends dirtied pages, so it is an estimate.
pub fn eta(p: &HypervisorProgress) -> Option<Duration> {
    if p.downtime_ms.is_some() {
        return None;
    }
    let (sent, remaining, ms) = (p.ram_transferred?, p.ram_remaining?, p.total_time_ms?);
    if sent == 0 || ms == 0 {
        return None;
    }
    let left_ms = u128::from(remaining) * u128::from(ms) / u128::from(sent);
    Some(Duration::from_millis(
        u64::try_from(left_ms).unwrap_or(u64::MAX),
    ))
}

/// The average transfer rate so far, in MB/s.
fn rate_mb_s(p: &HypervisorProgress) -> Option<f64> {
    let (sent, ms) = (p.ram_transferred?, p.total_time_ms?);
    (ms > 0).then(|| sent as f64 / 1e3 / ms as f64)
}

/// The hypervisor's figures with what is left:
/// `active 31% (41.0/134.8 MB, pass 1) 212 ms; 93.8 MB remaining, ETA 1 s at 193.4 MB/s`.
pub fn progress_text(p: &HypervisorProgress) -> String {
    let mut s = p.to_string();
    if p.downtime_ms.is_none() {
        if let Some(remaining) = p.ram_remaining {
            s.push_str(&format!("; {} remaining", mb(remaining)));
            if let Some(eta) = eta(p) {
                s.push_str(&format!(", ETA {}", human_duration(eta)));
            }
            if let Some(rate) = rate_mb_s(p) {
                s.push_str(&format!(" at {rate:.1} MB/s"));
            }
        }
    }
    s
}

impl HypervisorWait {
    /// `waiting for the hypervisor (driver external): an outside party ...; the controller
    /// asks it to cancel at 12:10:00 UTC (hypervisor timeout 10 min)`.
    pub fn text(&self) -> String {
        let mut s = String::from("waiting for the hypervisor");
        if let Some(d) = &self.driver {
            s.push_str(&format!(" (driver {d})"));
        }
        s.push_str(": ");
        s.push_str(&self.waits_for);
        if let (Some(at), Some(t)) = (self.cancel_at, self.timeout) {
            s.push_str(&format!(
                "; the controller asks it to cancel at {} (hypervisor timeout {})",
                clock(at),
                human_duration(t)
            ));
        }
        s
    }
}

impl Heartbeat {
    /// `still expect-hypervisor-done after 40 s: ...`.
    pub fn text(&self) -> String {
        let mut s = format!(
            "still {} after {}",
            self.phase,
            human_duration(self.in_phase)
        );
        if let Some(p) = &self.progress {
            s.push_str(&format!("; hypervisor: {}", progress_text(p)));
        } else if let Some(w) = &self.hypervisor {
            s.push_str(&format!(
                "; waiting for {}",
                w.driver.as_deref().map_or_else(
                    || "the hypervisor".to_owned(),
                    |d| format!("the hypervisor (driver {d})")
                )
            ));
            if let Some(at) = w.cancel_at {
                let left = at.millis_since(now());
                s.push_str(&format!(
                    "; the controller asks it to cancel in {}",
                    human_duration(Duration::from_millis(left))
                ));
            }
        }
        if !self.behind.is_empty() {
            let hosts: Vec<String> = self
                .behind
                .iter()
                .map(|h| {
                    let mut t = format!("{} (acked {} of {}", h.host, h.acked, h.pushed);
                    if let Some(e) = &h.last_error {
                        t.push_str(&format!("; last push failed: {e}"));
                    }
                    t.push(')');
                    t
                })
                .collect();
            s.push_str(&format!("; not acknowledged yet: {}", hosts.join(", ")));
        }
        s
    }
}

impl FollowEvent<'_> {
    /// The event as one line of text, without a timestamp.
    pub fn text(&self) -> String {
        let s = self.status;
        match self.kind {
            EventKind::Accepted { info } => {
                let mut t = format!(
                    "{}: {} from {} to {} ({}), accepted",
                    s.id, s.vm, s.from, s.to, s.strategy
                );
                if let Some(i) = info {
                    t.push_str(&format!(" (hypervisor driver {})", i.driver));
                }
                t
            }
            EventKind::Phase(r) => {
                let mut t = format!("{}: {}", r.phase, phase_gloss(r.phase));
                if r.phase.is_terminal() || r.phase == MigrationPhase::ExpectRollbackAcks {
                    if let Some(e) = &s.error {
                        t.push_str(&format!(" ({e})"));
                    }
                }
                if r.phase == MigrationPhase::HostsLeftBehind && !s.left_behind.is_empty() {
                    let hosts: Vec<String> = s.left_behind.iter().map(|h| h.to_string()).collect();
                    t.push_str(&format!(": {}", hosts.join(", ")));
                }
                t
            }
            EventKind::WaitingForHypervisor(w) => w.text(),
            EventKind::Progress { progress, .. } => {
                format!("hypervisor: {}", progress_text(progress))
            }
            EventKind::Heartbeat(h) => h.text(),
            EventKind::ControllerSilent { error, silent_for } => format!(
                "the controller does not answer ({}); still trying after {}",
                crate::push::error_chain(error),
                human_duration(silent_for)
            ),
        }
    }

    /// The event as a timestamped line: `12:00:01.234 UTC  +   234 ms  <text>`.
    pub fn line(&self) -> String {
        format!(
            "{}  {}",
            stamp(self.at, self.status.started_at_ms),
            self.text()
        )
    }
}

/// `12:00:01.234 UTC` (the time of day of Unix milliseconds).
pub fn clock(at: Timestamp) -> String {
    let day_ms = at.0 % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03} UTC",
        day_ms / 3_600_000,
        (day_ms / 60_000) % 60,
        (day_ms / 1000) % 60,
        day_ms % 1000
    )
}

/// `12:00:01.234 UTC  +   234 ms`: the time of day and the time since `started`.
pub fn stamp(at: Timestamp, started: Timestamp) -> String {
    format!("{}  +{:>6} ms", clock(at), at.millis_since(started))
}

#[cfg(test)]
mod tests {
    use super::*;
    use srmig_api::{HostId, Strategy, VmId};

    fn progress() -> HypervisorProgress {
        HypervisorProgress {
            status: "active".into(),
            total_time_ms: Some(2_000),
            ram_transferred: Some(50_000_000),
            ram_remaining: Some(100_000_000),
            ram_total: Some(134_000_000),
            passes: Some(1),
            ..Default::default()
        }
    }

    fn status() -> MigrationStatus {
        MigrationStatus {
            id: MigrationId(3),
            vm: VmId::new("web1").expect("name"),
            from: HostId::new("h1").expect("name"),
            to: HostId::new("h2").expect("name"),
            strategy: Strategy::SrBuffer,
            phase: MigrationPhase::ExpectHypervisorDone,
            started_at_ms: Timestamp(43_200_000),
            phases: vec![],
            error: None,
            hypervisor: None,
            left_behind: vec![],
            delivery: Default::default(),
        }
    }

    #[test]
    fn eta_from_the_average_rate() {
        assert_eq!(eta(&progress()), Some(Duration::from_secs(4)));
        let done = HypervisorProgress {
            downtime_ms: Some(20),
            ..progress()
        };
        assert_eq!(eta(&done), None);
        let start = HypervisorProgress {
            ram_transferred: Some(0),
            ..progress()
        };
        assert_eq!(eta(&start), None);
        let bare = HypervisorProgress {
            status: "setup".into(),
            ..Default::default()
        };
        assert_eq!(eta(&bare), None);
        assert_eq!(progress_text(&bare), "setup");
        assert_eq!(
            progress_text(&progress()),
            "active 37% (50.0/134.0 MB, pass 1) 2000 ms; 100.0 MB remaining, ETA 4.0 s at 25.0 MB/s"
        );
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(Duration::from_millis(45_900)), "45 s");
        assert_eq!(human_duration(Duration::from_millis(420)), "0.4 s");
        assert_eq!(human_duration(Duration::from_millis(9_960)), "10.0 s");
        assert_eq!(human_duration(Duration::from_secs(600)), "10 min");
        assert_eq!(human_duration(Duration::from_secs(560)), "9 min 20 s");
    }

    #[test]
    fn lines_say_what_is_awaited() {
        let s = status();
        let wait = HypervisorWait {
            driver: Some("external".into()),
            waits_for: "someone to move it".into(),
            timeout: Some(Duration::from_secs(600)),
            cancel_at: Some(Timestamp(43_200_000 + 600_000)),
        };
        let e = FollowEvent {
            at: Timestamp(43_200_250),
            status: &s,
            kind: EventKind::WaitingForHypervisor(&wait),
        };
        assert_eq!(
            e.line(),
            "12:00:00.250 UTC  +   250 ms  waiting for the hypervisor (driver external): \
             someone to move it; the controller asks it to cancel at 12:10:00.000 UTC \
             (hypervisor timeout 10 min)"
        );
        let beat = Heartbeat {
            phase: MigrationPhase::ExpectPathAcks,
            in_phase: Duration::from_secs(12),
            hypervisor: None,
            progress: None,
            behind: vec![HostBehind {
                host: "h3".into(),
                pushed: 5,
                acked: 4,
                last_error: Some("cannot connect".into()),
            }],
        };
        assert_eq!(
            beat.text(),
            "still expect-path-acks after 12 s; not acknowledged yet: h3 (acked 4 of 5; last \
             push failed: cannot connect)"
        );
        let beat = Heartbeat {
            phase: MigrationPhase::ExpectHypervisorDone,
            in_phase: Duration::from_secs(40),
            hypervisor: Some(wait),
            progress: Some(progress()),
            behind: vec![],
        };
        assert!(
            beat.text()
                .starts_with("still expect-hypervisor-done after 40 s; hypervisor: active 37%"),
            "{}",
            beat.text()
        );
    }

    #[test]
    fn the_tracker_tells_each_record_once_and_explains_the_hypervisor_wait() {
        let info = ControllerInfo {
            version: "0".into(),
            driver: "external".into(),
            driver_waits_for: "a post to /v1/migrations/{id}/hypervisor".into(),
            ack_timeout_ms: 5_000,
            hypervisor_timeout_ms: 60_000,
            cancel_grace_ms: 30_000,
        };
        let mut s = status();
        s.phase = MigrationPhase::Requested;
        let mut t = Tracker::new(Some(info), s.clone());
        let mut lines = Vec::new();
        let mut record = |e: &FollowEvent<'_>| lines.push(e.text());
        let at = |phase, ms| PhaseRecord {
            phase,
            at_ms: Timestamp(ms),
        };
        s.phases = vec![at(MigrationPhase::Requested, 43_200_000)];
        assert!(t.update(s.clone(), &mut record));
        assert!(!t.update(s.clone(), &mut record));
        s.phases
            .push(at(MigrationPhase::ExpectHypervisorDone, 43_200_010));
        s.phase = MigrationPhase::ExpectHypervisorDone;
        assert!(t.update(s.clone(), &mut record));
        s.hypervisor = Some(progress());
        assert!(t.update(s.clone(), &mut record));
        // A small move of the figures is told (for progress bars) but is not a line.
        s.hypervisor = Some(HypervisorProgress {
            total_time_ms: Some(2_100),
            ..progress()
        });
        assert!(!t.update(s.clone(), &mut record));
        assert_eq!(lines.len(), 5, "{lines:#?}");
        assert_eq!(lines[0], "requested: accepted by the controller");
        assert!(
            lines[1].starts_with("expect-hypervisor-done: "),
            "{}",
            lines[1]
        );
        assert_eq!(
            lines[2],
            "waiting for the hypervisor (driver external): a post to /v1/migrations/3/hypervisor; \
             the controller asks it to cancel at 12:01:00.010 UTC (hypervisor timeout 60 s)"
        );
        assert!(
            lines[3].starts_with("hypervisor: active 37%"),
            "{}",
            lines[3]
        );
        let beat = t.heartbeat(vec![]);
        assert_eq!(beat.phase, MigrationPhase::ExpectHypervisorDone);
        assert!(beat.hypervisor.is_some() && beat.progress.is_some());
    }
}
