//! Delivery of `PushConfig` and `PushDelta` actions: one task per host sends its srmigd the
//! change (`PATCH /v1/config` with a [`HostConfigDelta`]) or the whole config (`PUT
//! /v1/config`) and feeds the reply [`Ack`] back to the engine.
//!
//! Each task keeps its host's connection open between pushes ([`PeerConnection`]: one TLS
//! handshake per host, not per push; a connection that breaks is replaced at once).
//!
//! Hosts are served concurrently (a slow or dead host delays nobody else). Per host, pushes
//! are taken in order; each becomes eligible `propagation_delay` after the core produced it
//! (to emulate a slow mapping update). The task keeps the whole config the pushes taken so far
//! make (`desired`: a whole config replaces it, a delta is applied to it in place, O(VMs in the
//! delta)) and the composition of the deltas taken since the host's last acknowledgement
//! (`pending`). When several pushes are eligible they are folded into one. What goes out:
//! - `PATCH` with `pending` when the host acknowledged its base: O(changed VMs) on the wire
//!   and in srmigd;
//! - `PUT` with `desired` otherwise: the host's first config, after a whole push from the core
//!   (restart, epoch, timeout), after a refusal, and when srmigd answers the `PATCH` with
//!   `409 base-mismatch` (it restarted, or holds another version) or does not know `PATCH`
//!   (an older srmigd: `PUT` from then on).
//!
//! A failed delivery (no connection, timeout, 5xx) is retried with exponential backoff, with
//! whatever became eligible meanwhile folded in. Any other 4xx answer means srmigd refused the
//! config: it is reported and not retried (the core's timeouts decide what happens next).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use hyper::{Method, StatusCode};
use srmig_api::{Ack, ApiError, ApiErrorCode, HostConfig, HostConfigDelta, HostId};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::http::{PeerConnection, PeerHttp, UnixHttp};
use crate::mailbox::Command;
use crate::types::HostApi;

/// Push settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushSettings {
    /// Added delay before every push (0: none).
    pub propagation_delay: Duration,
    /// Time limit of one `PUT /v1/config` exchange.
    pub request_timeout: Duration,
    /// First retry delay; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
}

impl Default for PushSettings {
    fn default() -> Self {
        PushSettings {
            propagation_delay: Duration::ZERO,
            request_timeout: Duration::from_secs(2),
            min_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_secs(1),
        }
    }
}

/// One push from the core, for one host.
#[derive(Debug)]
pub(crate) enum Push {
    /// A whole config (`Action::PushConfig`).
    Whole(HostConfig),
    /// A change to the previous push (`Action::PushDelta`).
    Delta(HostConfigDelta),
}

/// What a push attempt produced, for the engine.
#[derive(Debug)]
pub(crate) enum PushOutcome {
    /// srmigd acknowledged.
    Acked(Ack),
    /// The attempt failed; `retrying` tells whether it will be tried again.
    Failed {
        host: HostId,
        generation: u64,
        error: String,
        retrying: bool,
    },
}

/// The per-host push tasks.
#[derive(Debug)]
pub(crate) struct Pushers {
    settings: PushSettings,
    events: mpsc::Sender<Command>,
    /// The controller's TLS client, for hosts registered with an `api_address`.
    tls: Option<srmig_tls::HttpsClient>,
    hosts: BTreeMap<HostId, (mpsc::UnboundedSender<Push>, JoinHandle<()>)>,
}

impl Pushers {
    pub(crate) fn new(
        settings: PushSettings,
        events: mpsc::Sender<Command>,
        tls: Option<srmig_tls::HttpsClient>,
    ) -> Self {
        Pushers {
            settings,
            events,
            tls,
            hosts: BTreeMap::new(),
        }
    }

    /// How to reach `host`'s srmigd at `api`, each request limited to `timeout`: its unix
    /// socket, or its TLS listener (with this controller's certificate; the host's must name
    /// `srmig://host/<host>`). An error if the controller has no TLS identity for an address.
    pub(crate) fn http(
        &self,
        host: &HostId,
        api: &HostApi,
        timeout: Duration,
    ) -> Result<PeerHttp, String> {
        match api {
            HostApi::ApiSocket(p) => Ok(PeerHttp::Unix(UnixHttp::new(p.clone(), timeout))),
            HostApi::ApiAddress(_) => {
                let client = self.tls.clone().ok_or_else(|| {
                    format!("{api} is a TCP address, and this controller has no TLS identity to reach it (start it with --tls-dir)")
                })?;
                let (addr, server_name) = api
                    .address()
                    .ok_or_else(|| format!("{api}: not host:port"))?;
                let peer = srmig_tls::PeerIdentity::new(srmig_tls::Role::Host, host.as_str())
                    .map_err(|e| e.to_string())?;
                let endpoint = srmig_tls::Endpoint::new(addr, server_name)
                    .map_err(|e| e.to_string())?
                    .expect_peer(peer);
                Ok(PeerHttp::Tls {
                    client: client.with_timeout(timeout),
                    endpoint,
                })
            }
        }
    }

    /// Starts the push task of a host (idempotent).
    pub(crate) fn add_host(&mut self, host: HostId, api: &HostApi) -> Result<(), String> {
        if self.hosts.contains_key(&host) {
            return Ok(());
        }
        let http = self.http(&host, api, self.settings.request_timeout)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let worker = Worker {
            host: host.clone(),
            http: PeerConnection::new(http),
            settings: self.settings,
            events: self.events.clone(),
            rx,
            queue: VecDeque::new(),
            desired: None,
            pending: None,
            host_has: None,
            settled: true,
            no_patch: false,
        };
        let task = tokio::spawn(worker.run());
        self.hosts.insert(host, (tx, task));
        Ok(())
    }

    /// Stops a host's push task (the host was removed).
    pub(crate) fn remove_host(&mut self, host: &HostId) {
        if let Some((_, task)) = self.hosts.remove(host) {
            task.abort();
        }
    }

    /// Queues a push for a host. Returns false if the host has no push task.
    pub(crate) fn push(&self, host: &HostId, push: Push) -> bool {
        match self.hosts.get(host) {
            Some((tx, _)) => tx.send(push).is_ok(),
            None => false,
        }
    }
}

impl Drop for Pushers {
    fn drop(&mut self) {
        for (_, task) in self.hosts.values() {
            task.abort();
        }
    }
}

struct Worker {
    host: HostId,
    /// srmigd's API, the connection kept open between pushes.
    http: PeerConnection,
    settings: PushSettings,
    events: mpsc::Sender<Command>,
    rx: mpsc::UnboundedReceiver<Push>,
    /// Pushes not taken yet, oldest first, with the instant each becomes eligible.
    queue: VecDeque<(Instant, Push)>,
    /// The whole config the pushes taken so far make.
    desired: Option<HostConfig>,
    /// The deltas taken since the host's last acknowledgement, composed, while they apply to
    /// the version the host acknowledged; `None`: a whole config goes out.
    pending: Option<HostConfigDelta>,
    /// The version the host last acknowledged.
    host_has: Option<(u64, u64)>,
    /// `desired` was acknowledged or refused: nothing to send until the next push.
    settled: bool,
    /// The host answered `PATCH` with 404 or 405: it only takes whole configs.
    no_patch: bool,
}

enum Attempt {
    Acked(Ack),
    Refused(String),
    Transient(String),
    /// The host cannot apply the delta (`409 base-mismatch`, or no `PATCH`): send the whole
    /// config at once.
    NeedsWhole {
        no_patch: bool,
    },
}

impl Worker {
    async fn run(mut self) {
        let mut backoff = self.settings.min_backoff;
        let mut retry_at: Option<Instant> = None;
        loop {
            self.take_eligible(Instant::now());
            let outstanding = !self.settled && self.desired.is_some();
            let next_ready = self.queue.front().map(|(ready, _)| *ready);
            // When to act next: a due retry, else at once; or when the next push is eligible.
            let wake = match (outstanding, next_ready) {
                (true, _) => retry_at,
                (false, Some(ready)) => Some(ready),
                (false, None) => None,
            };
            match wake {
                Some(at) if Instant::now() < at => {
                    tokio::select! {
                        received = self.rx.recv() => match received {
                            Some(push) => self.enqueue(push),
                            None => return,
                        },
                        () = tokio::time::sleep_until(at) => {}
                    }
                    continue;
                }
                None if !outstanding => {
                    match self.rx.recv().await {
                        Some(push) => self.enqueue(push),
                        None => return,
                    }
                    continue;
                }
                _ => {}
            }
            if !outstanding {
                continue;
            }
            retry_at = None;
            let generation = self.desired.as_ref().map_or(0, |d| d.generation);
            match self.attempt().await {
                Attempt::Acked(ack) => {
                    backoff = self.settings.min_backoff;
                    self.host_has = Some((ack.epoch, ack.generation));
                    self.pending = None;
                    self.settled = self.desired.as_ref().map(HostConfig::version) == self.host_has;
                    if !self.settled {
                        // Acknowledged another version than the one sent: try again, paced.
                        retry_at = Some(Instant::now() + backoff);
                        backoff = (backoff * 2).min(self.settings.max_backoff);
                    }
                    if self
                        .events
                        .send(Command::Push(PushOutcome::Acked(ack)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Attempt::NeedsWhole { no_patch } => {
                    tracing::debug!(host = %self.host, generation, no_patch, "the host cannot apply the delta; sending the whole config");
                    self.no_patch |= no_patch;
                    self.pending = None;
                }
                Attempt::Refused(error) => {
                    tracing::warn!(host = %self.host, generation, %error, "srmigd refused the config");
                    backoff = self.settings.min_backoff;
                    // Not retried; the host keeps what it had, so the next push goes out whole.
                    self.settled = true;
                    self.pending = None;
                    if !self.report_failure(generation, error, false).await {
                        return;
                    }
                }
                Attempt::Transient(error) => {
                    tracing::debug!(host = %self.host, generation, %error, retry_in_ms = backoff.as_millis() as u64, "push failed; retrying");
                    retry_at = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(self.settings.max_backoff);
                    if !self.report_failure(generation, error, true).await {
                        return;
                    }
                }
            }
        }
    }

    fn enqueue(&mut self, push: Push) {
        let ready = Instant::now() + self.settings.propagation_delay;
        self.queue.push_back((ready, push));
    }

    /// Folds every push eligible at `now` into `desired` and `pending`.
    fn take_eligible(&mut self, now: Instant) {
        while self.queue.front().is_some_and(|(ready, _)| *ready <= now) {
            let Some((_, push)) = self.queue.pop_front() else {
                break;
            };
            self.settled = false;
            match push {
                Push::Whole(config) => {
                    self.desired = Some(config);
                    self.pending = None;
                }
                Push::Delta(delta) => {
                    let Some(desired) = self.desired.as_mut() else {
                        tracing::error!(host = %self.host, generation = delta.generation, "a config delta before any whole config; dropped (the controller pushes the whole config again at its timeout)");
                        self.settled = true;
                        continue;
                    };
                    if let Err(e) = desired.apply_delta(&delta) {
                        tracing::error!(host = %self.host, error = %e, "a config delta does not apply to the previous push; dropped (the controller pushes the whole config again at its timeout)");
                        self.desired = None;
                        self.pending = None;
                        self.settled = true;
                        continue;
                    }
                    self.pending = match self.pending.take() {
                        Some(p) => p.then(delta).ok(),
                        None if self.host_has == Some(delta.base()) => Some(delta),
                        None => None,
                    };
                }
            }
        }
    }

    async fn report_failure(&self, generation: u64, error: String, retrying: bool) -> bool {
        self.events
            .send(Command::Push(PushOutcome::Failed {
                host: self.host.clone(),
                generation,
                error,
                retrying,
            }))
            .await
            .is_ok()
    }

    /// Sends `pending` (`PATCH`) when the host holds its base, else `desired` (`PUT`).
    async fn attempt(&mut self) -> Attempt {
        let delta = self
            .pending
            .as_ref()
            .filter(|p| !self.no_patch && Some(p.base()) == self.host_has);
        let (method, body) = match (delta, &self.desired) {
            (Some(d), _) => (Method::PATCH, serde_json::to_vec(d)),
            (None, Some(c)) => (Method::PUT, serde_json::to_vec(c)),
            (None, None) => return Attempt::Refused("nothing to send".into()),
        };
        let body = match body {
            Ok(b) => b,
            Err(e) => return Attempt::Refused(format!("cannot encode the config: {e}")),
        };
        let patch = method == Method::PATCH;
        let response = match self.http.request(method, "/v1/config", Some(body)).await {
            Ok(r) => r,
            Err(e) => return Attempt::Transient(error_chain(&e)),
        };
        if response.status.is_success() {
            return match serde_json::from_slice::<Ack>(&response.body) {
                Ok(ack) if ack.host == self.host => Attempt::Acked(ack),
                Ok(ack) => Attempt::Refused(format!(
                    "the srmigd at {} answered as host {}, expected {}",
                    self.http.target(),
                    ack.host,
                    self.host
                )),
                Err(e) => Attempt::Transient(format!("the reply is not an Ack: {e}")),
            };
        }
        let api_error = serde_json::from_slice::<ApiError>(&response.body).ok();
        if patch {
            if matches!(
                response.status,
                StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
            ) && api_error
                .as_ref()
                .is_none_or(|e| e.code != ApiErrorCode::UnknownVm)
            {
                return Attempt::NeedsWhole { no_patch: true };
            }
            if api_error
                .as_ref()
                .is_some_and(|e| e.code == ApiErrorCode::BaseMismatch)
            {
                return Attempt::NeedsWhole { no_patch: false };
            }
        }
        let detail = match api_error {
            Some(err) => err.to_string(),
            None => String::from_utf8_lossy(&response.body)
                .chars()
                .take(200)
                .collect(),
        };
        let error = format!("srmigd answered {}: {detail}", response.status);
        if response.status.is_client_error() && response.status != StatusCode::REQUEST_TIMEOUT {
            Attempt::Refused(error)
        } else {
            Attempt::Transient(error)
        }
    }
}

/// An error and its sources, one sentence each, joined by ": ".
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
