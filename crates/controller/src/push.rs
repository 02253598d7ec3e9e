//! Delivery of `PushConfig` actions: one task per host sends `PUT /v1/config` to its srmigd and
//! feeds the reply [`Ack`] back to the engine.
//!
//! Hosts are served concurrently (a slow or dead host delays nobody else). Per host, configs
//! go out in order; each becomes eligible `propagation_delay` after the core produced it (to
//! emulate a slow mapping update), and when several are eligible only the newest is sent
//! (configs are complete, so a newer one supersedes the older). A failed delivery (no
//! connection, timeout, 5xx) is retried with exponential backoff for as long as the core still
//! wants it, that is until a newer config for that host supersedes it. A 4xx answer means
//! srmigd refused the config: it is reported and not retried (the core's timeouts decide what
//! happens next).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use hyper::{Method, StatusCode};
use srmig_api::{Ack, ApiError, HostConfig, HostId};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::http::{PeerHttp, UnixHttp};
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
    hosts: BTreeMap<HostId, (mpsc::UnboundedSender<HostConfig>, JoinHandle<()>)>,
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
            http,
            settings: self.settings,
            events: self.events.clone(),
            rx,
            queue: VecDeque::new(),
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

    /// Queues a config for a host. Returns false if the host has no push task.
    pub(crate) fn push(&self, host: &HostId, config: HostConfig) -> bool {
        match self.hosts.get(host) {
            Some((tx, _)) => tx.send(config).is_ok(),
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
    http: PeerHttp,
    settings: PushSettings,
    events: mpsc::Sender<Command>,
    rx: mpsc::UnboundedReceiver<HostConfig>,
    /// Configs not yet delivered, oldest first, with the instant each becomes eligible.
    queue: VecDeque<(Instant, HostConfig)>,
}

enum Attempt {
    Acked(Ack),
    Refused(String),
    Transient(String),
}

impl Worker {
    async fn run(mut self) {
        let mut backoff = self.settings.min_backoff;
        let mut retry_at: Option<Instant> = None;
        loop {
            // Wait for something to send.
            let Some(&(ready, _)) = self.queue.front() else {
                match self.rx.recv().await {
                    Some(config) => self.enqueue(config),
                    None => return,
                }
                continue;
            };
            let wake = retry_at.map_or(ready, |r| r.max(ready));
            if Instant::now() < wake {
                tokio::select! {
                    received = self.rx.recv() => match received {
                        Some(config) => self.enqueue(config),
                        None => return,
                    },
                    () = tokio::time::sleep_until(wake) => {}
                }
                continue;
            }
            // Several eligible configs: only the newest matters.
            let now = Instant::now();
            while self.queue.len() > 1 && self.queue.get(1).is_some_and(|(r, _)| *r <= now) {
                self.queue.pop_front();
            }
            let Some((_, config)) = self.queue.front() else {
                continue;
            };
            let generation = config.generation;
            match self.attempt(config).await {
                Attempt::Acked(ack) => {
                    self.queue.pop_front();
                    backoff = self.settings.min_backoff;
                    retry_at = None;
                    if self
                        .events
                        .send(Command::Push(PushOutcome::Acked(ack)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Attempt::Refused(error) => {
                    tracing::warn!(host = %self.host, generation, %error, "srmigd refused the config");
                    self.queue.pop_front();
                    backoff = self.settings.min_backoff;
                    retry_at = None;
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

    fn enqueue(&mut self, config: HostConfig) {
        let ready = Instant::now() + self.settings.propagation_delay;
        self.queue.push_back((ready, config));
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

    async fn attempt(&self, config: &HostConfig) -> Attempt {
        let body = match serde_json::to_vec(config) {
            Ok(b) => b,
            Err(e) => return Attempt::Refused(format!("cannot encode the config: {e}")),
        };
        let response = match self
            .http
            .request(Method::PUT, "/v1/config", Some(body))
            .await
        {
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
        let detail = match serde_json::from_slice::<ApiError>(&response.body) {
            Ok(err) => err.to_string(),
            Err(_) => String::from_utf8_lossy(&response.body)
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
