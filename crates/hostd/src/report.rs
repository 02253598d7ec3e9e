//! Reports VM state changes, commit-fence markers and releases to the controller: `POST
//! /v1/vm-state` with a [`VmStateReport`], `POST /v1/fence` with a [`FenceReport`], `POST
//! /v1/release` with a [`ReleaseReport`], over the controller's
//! unix socket, or over mutual TLS to `https://HOST:PORT` (this host's certificate; the
//! controller's must carry a controller identity).
//!
//! Reports are sent in order, each tried up to [`ATTEMPTS`] times per controller address; a
//! report that still fails is logged and dropped, and srmigd keeps forwarding on its own state
//! (the controller learns the VM's state again from the next report or by polling
//! `GET /v1/status`).
//!
//! Controller replicas (`--controller A,B,C`): only the leading replica serves its API (a
//! standby has no listener), so a report goes to the address that worked last, and on a
//! failure (no answer, refused connection, a 5xx) to the next one: after a failover srmigd
//! follows the new leader by itself, without a restart or a new flag.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use hyper::Method;
use srmig_api::{FenceReport, ReleaseReport, VmStateReport};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tracing::{debug, warn};

use crate::client;

/// Attempts per report.
pub const ATTEMPTS: u32 = 3;

/// Time limit of one attempt.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the controller is.
#[derive(Debug, Clone)]
pub enum Target {
    /// Its unix socket.
    Unix(PathBuf),
    /// Its mutual-TLS listener.
    Tls {
        /// This host's client.
        client: srmig_tls::HttpsClient,
        /// The controller's address; any controller identity is accepted.
        endpoint: srmig_tls::Endpoint,
    },
}

impl Target {
    /// `https://HOST:PORT` (needs this host's TLS files) or a socket path
    /// ([`srmig_tls::ApiAddress`]).
    pub fn parse(value: &str, tls: Option<&srmig_tls::TlsFiles>) -> anyhow::Result<Target> {
        let endpoint = match srmig_tls::ApiAddress::parse(value).context("--controller")? {
            srmig_tls::ApiAddress::Unix(socket) => return Ok(Target::Unix(socket)),
            srmig_tls::ApiAddress::Https(endpoint) => endpoint,
        };
        let files = tls.with_context(|| {
            format!("--controller {value} is reached over mutual TLS: --tls-dir is needed")
        })?;
        let client = srmig_tls::HttpsClient::new(
            srmig_tls::client_config(files).context("cannot load this host's TLS identity")?,
        )
        .with_timeout(ATTEMPT_TIMEOUT);
        Ok(Target::Tls {
            client,
            endpoint: endpoint.expect_role(srmig_tls::Role::Controller),
        })
    }

    async fn post(
        &self,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(hyper::StatusCode, Vec<u8>), String> {
        match self {
            Target::Unix(socket) => client::request(socket, Method::POST, path, Some(body))
                .await
                .map(|(s, b)| (s, b.to_vec()))
                .map_err(|e| client::error_chain(&e)),
            Target::Tls { client, endpoint } => client
                .request(endpoint, Method::POST, path, Some(body))
                .await
                .map(|(s, b)| (s, b.to_vec()))
                .map_err(|e| client::error_chain(&e)),
        }
    }
}

/// `--controller`: one or more comma-separated addresses (replicas), see [`Target::parse`].
pub fn parse_targets(
    value: &str,
    tls: Option<&srmig_tls::TlsFiles>,
) -> anyhow::Result<Vec<Target>> {
    value
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| Target::parse(v, tls))
        .collect::<anyhow::Result<Vec<_>>>()
        .and_then(|t| {
            anyhow::ensure!(!t.is_empty(), "--controller: no address");
            Ok(t)
        })
}

/// What srmigd tells the controller.
#[derive(Debug, Clone)]
pub enum Report {
    /// A VM state change (`POST /v1/vm-state`).
    VmState(VmStateReport),
    /// A commit-fence marker reached this host (`POST /v1/fence`).
    Fence(FenceReport),
    /// A VM that resumed here got its first frame (`POST /v1/release`).
    Release(ReleaseReport),
}

impl Report {
    fn path(&self) -> &'static str {
        match self {
            Report::VmState(_) => "/v1/vm-state",
            Report::Fence(_) => "/v1/fence",
            Report::Release(_) => "/v1/release",
        }
    }

    fn body(&self) -> serde_json::Result<Vec<u8>> {
        match self {
            Report::VmState(r) => serde_json::to_vec(r),
            Report::Fence(r) => serde_json::to_vec(r),
            Report::Release(r) => serde_json::to_vec(r),
        }
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Report::VmState(r) => write!(f, "VM state report ({} {})", r.vm, r.state),
            Report::Fence(r) => write!(f, "fence report ({} from {})", r.vm, r.ingress),
            Report::Release(r) => write!(
                f,
                "release report ({}, first frame {} us after the resume)",
                r.vm,
                r.release.latency_us()
            ),
        }
    }
}

/// A dataplane worker's way to the reporter task.
#[derive(Debug, Clone)]
pub struct Reporter {
    tx: UnboundedSender<Report>,
    vm_states: bool,
}

impl Reporter {
    /// Sends into `tx`; VM states only if `vm_states` (with several workers only worker 0
    /// reports them: the others follow the same events), fence reports always (a marker
    /// reaches the one worker its flow hashes to).
    pub fn new(tx: UnboundedSender<Report>, vm_states: bool) -> Reporter {
        Reporter { tx, vm_states }
    }

    /// Queues `r` for the controller (dropped if this worker does not report VM states, or
    /// at shutdown when the reporter is gone).
    pub fn send(&self, r: Report) {
        if matches!(r, Report::VmState(_)) && !self.vm_states {
            return;
        }
        let _ = self.tx.send(r);
    }
}

/// Sends every report received on `rx` to the controller (one of `targets`, see the module
/// docs), until `rx` closes.
pub async fn run(targets: Vec<Target>, mut rx: UnboundedReceiver<Report>) {
    let mut current = 0;
    while let Some(r) = rx.recv().await {
        let body = match r.body() {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "cannot serialize {r}");
                continue;
            }
        };
        let mut delay = Duration::from_millis(50);
        let n = targets.len().max(1);
        let attempts = ATTEMPTS * u32::try_from(n).unwrap_or(u32::MAX);
        for attempt in 1..=attempts {
            let Some(target) = targets.get(current % n) else {
                return;
            };
            let attempt_result =
                tokio::time::timeout(ATTEMPT_TIMEOUT, target.post(r.path(), body.clone())).await;
            let next_replica = match attempt_result {
                Err(_) => {
                    warn!(attempt, "controller did not answer a {r} in time");
                    true
                }
                Ok(Ok((s, _))) if s.is_success() => {
                    debug!("{r} sent");
                    break;
                }
                Ok(Ok((s, b))) => {
                    warn!(
                        status = s.as_u16(),
                        body = %String::from_utf8_lossy(&b), attempt,
                        "controller refused a {r}"
                    );
                    s.is_server_error()
                }
                Ok(Err(e)) => {
                    warn!(error = %e, attempt, "cannot send a {r} to the controller");
                    true
                }
            };
            if next_replica && n > 1 {
                // Another replica may lead now: try it at once, back off once around.
                current = (current + 1) % n;
                if current != 0 {
                    continue;
                }
            }
            if attempt < attempts {
                tokio::time::sleep(delay).await;
                delay = (delay * 4).min(Duration::from_secs(2));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_controller_addresses_are_replicas() {
        let t = parse_targets("/run/a.sock, /run/b.sock,/run/c.sock", None).expect("three");
        assert_eq!(t.len(), 3);
        assert!(parse_targets(" , ", None).is_err());
        assert!(parse_targets("/run/a.sock,http://x:1", None).is_err());
    }

    #[test]
    fn targets_are_sockets_or_https_urls_with_tls_files() {
        assert!(matches!(
            Target::parse("/run/srmig/controller.sock", None),
            Ok(Target::Unix(_))
        ));
        let no_tls = Target::parse("https://10.0.0.2:7443", None).expect_err("no TLS files");
        assert!(
            no_tls.to_string().contains("--tls-dir is needed"),
            "{no_tls}"
        );
        let files = srmig_tls::TlsFiles::new("/nonexistent/ca.pem", "/x.pem", "/x.key");
        for bad in ["https://fd00::2:7443", "http://10.0.0.2:7443"] {
            let e = Target::parse(bad, Some(&files)).expect_err(bad);
            assert!(format!("{e:#}").starts_with("--controller: "), "{e:#}");
        }
        let e = Target::parse("https://10.0.0.2:7443", Some(&files)).expect_err("no files");
        assert!(format!("{e:#}").contains("/nonexistent/ca.pem"), "{e:#}");
    }
}
