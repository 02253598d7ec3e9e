//! A typed client of the controller API (used by `srmig migrate`, the lab and the tests),
//! over the controller's unix socket or, from another machine, over its mutual-TLS listener
//! (`srmig controller --tls-dir DIR --listen ADDR:PORT`) with a `srmig://client/<name>`
//! certificate. `srmig migrate` itself (request, follow, heartbeat, time limit) is
//! [`crate::follow`].

use std::path::PathBuf;
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use srmig_api::{
    ApiError, MigrateRequest, MigrationId, MigrationStatus, PhaseRecord, VmInfo, VmStateReport,
};

use srmig_tls::{ApiAddress, Role, TlsFiles};

use crate::http::{PeerHttp, PeerHttpError, UnixHttp};
use crate::types::{ControllerInfo, HostRegistration, HostView, HypervisorPost, VmView};

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer (not running, wrong path or address, timeout; over TLS: a refused
    /// handshake, or a peer that is not a controller).
    #[error("no answer from the controller")]
    Http(#[source] Box<PeerHttpError>),
    /// The controller refused the request.
    #[error("the controller refused the request ({status}): {error}")]
    Api {
        /// The HTTP status.
        status: StatusCode,
        /// The error body.
        error: ApiError,
    },
    /// The answer is not what the API documents.
    #[error("unexpected answer ({status}): {body}")]
    BadResponse {
        /// The HTTP status.
        status: StatusCode,
        /// The beginning of the body.
        body: String,
    },
    /// `https://HOST:PORT` without a certificate to present.
    #[error(
        "{target} is reached over mutual TLS, which needs a client certificate \
         (srmig://client/<name>, from `srmig pki issue --role client`)"
    )]
    NoCertificate {
        /// `https://HOST:PORT`.
        target: String,
    },
    /// The certificate, its key or the CA could not be loaded.
    #[error("cannot load the client certificate to reach {target}")]
    Certificate {
        /// `https://HOST:PORT`.
        target: String,
        /// Which file, and what is wrong with it.
        #[source]
        source: srmig_tls::ConfigError,
    },
    /// The async runtime could not be built (blocking helpers).
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
}

impl From<PeerHttpError> for ClientError {
    /// Boxed: a TLS failure names the peers involved, and every caller's error carries this one.
    fn from(e: PeerHttpError) -> Self {
        ClientError::Http(Box::new(e))
    }
}

impl ClientError {
    /// The API error, if the controller refused the request.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            ClientError::Api { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// The time limit of each call (connect, TLS handshake, request, whole response).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A client of one controller.
#[derive(Debug, Clone)]
pub struct ControllerClient {
    http: PeerHttp,
}

impl ControllerClient {
    /// A client of the controller serving `socket` (each call limited to [`CALL_TIMEOUT`]).
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        ControllerClient {
            http: PeerHttp::Unix(UnixHttp::new(socket, CALL_TIMEOUT)),
        }
    }

    /// A client of the controller's mutual-TLS listener at `endpoint`, presenting the
    /// certificate in `files` (a `client` one, to be allowed more than a host's
    /// `POST /v1/vm-state`). The controller's certificate must be valid for the endpoint's
    /// host and carry a `srmig://controller/...` identity (any name), as srmigd requires of the
    /// controller it reports to.
    pub fn https(endpoint: srmig_tls::Endpoint, files: &TlsFiles) -> Result<Self, ClientError> {
        let target = format!("https://{}", endpoint.addr());
        let config = srmig_tls::client_config(files)
            .map_err(|source| ClientError::Certificate { target, source })?;
        Ok(ControllerClient {
            http: PeerHttp::Tls {
                client: srmig_tls::HttpsClient::new(config).with_timeout(CALL_TIMEOUT),
                endpoint: endpoint.expect_role(Role::Controller),
            },
        })
    }

    /// A client of the controller at `address` (`--controller PATH|https://HOST:PORT`); `tls`
    /// is needed for `https://` ([`ControllerClient::https`]) and unused for a socket.
    pub fn to(address: &ApiAddress, tls: Option<&TlsFiles>) -> Result<Self, ClientError> {
        match address {
            ApiAddress::Unix(socket) => Ok(ControllerClient::new(socket.clone())),
            ApiAddress::Https(endpoint) => {
                let files = tls.ok_or_else(|| ClientError::NoCertificate {
                    target: address.to_string(),
                })?;
                ControllerClient::https(endpoint.clone(), files)
            }
        }
    }

    /// The same client with another time limit per call than [`CALL_TIMEOUT`] (`srmig bench
    /// control` registers thousands of hosts and VMs while the controller is busy pushing).
    pub fn with_timeout(self, timeout: Duration) -> Self {
        let http = match self.http {
            PeerHttp::Unix(u) => PeerHttp::Unix(UnixHttp::new(u.socket().to_owned(), timeout)),
            PeerHttp::Tls { client, endpoint } => PeerHttp::Tls {
                client: client.with_timeout(timeout),
                endpoint,
            },
        };
        ControllerClient { http }
    }

    /// Where the controller is, for messages: its socket path or `https://HOST:PORT`.
    pub fn target(&self) -> String {
        self.http.target()
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let response = self.http.request(method, path, body).await?;
        let snippet = || {
            String::from_utf8_lossy(&response.body)
                .chars()
                .take(300)
                .collect::<String>()
        };
        if !response.status.is_success() {
            return match serde_json::from_slice::<ApiError>(&response.body) {
                Ok(error) => Err(ClientError::Api {
                    status: response.status,
                    error,
                }),
                Err(_) => Err(ClientError::BadResponse {
                    status: response.status,
                    body: snippet(),
                }),
            };
        }
        // 204: callers expecting `()` decode JSON `null`.
        let body: &[u8] = if response.body.is_empty() {
            b"null"
        } else {
            &response.body
        };
        serde_json::from_slice(body).map_err(|_| ClientError::BadResponse {
            status: response.status,
            body: snippet(),
        })
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::BadResponse {
            status: StatusCode::BAD_REQUEST,
            body: format!("cannot encode the request: {e}"),
        })?;
        self.call(Method::POST, path, Some(bytes)).await
    }

    /// `GET /v1/info`.
    pub async fn info(&self) -> Result<ControllerInfo, ClientError> {
        self.call(Method::GET, "/v1/info", None).await
    }

    /// `POST /v1/hosts`.
    pub async fn add_host(&self, reg: &HostRegistration) -> Result<HostView, ClientError> {
        self.post("/v1/hosts", reg).await
    }

    /// `GET /v1/hosts`.
    pub async fn hosts(&self) -> Result<Vec<HostView>, ClientError> {
        self.call(Method::GET, "/v1/hosts", None).await
    }

    /// `POST /v1/vms`.
    pub async fn add_vm(&self, vm: &VmInfo) -> Result<VmView, ClientError> {
        self.post("/v1/vms", vm).await
    }

    /// `GET /v1/vms`.
    pub async fn vms(&self) -> Result<Vec<VmView>, ClientError> {
        self.call(Method::GET, "/v1/vms", None).await
    }

    /// `POST /v1/vm-state`.
    pub async fn report_vm_state(&self, report: &VmStateReport) -> Result<(), ClientError> {
        self.post("/v1/vm-state", report).await
    }

    /// `POST /v1/fence`.
    pub async fn report_fence(&self, report: &srmig_api::FenceReport) -> Result<(), ClientError> {
        self.post("/v1/fence", report).await
    }

    /// `POST /v1/release`.
    pub async fn report_release(
        &self,
        report: &srmig_api::ReleaseReport,
    ) -> Result<(), ClientError> {
        self.post("/v1/release", report).await
    }

    /// `POST /v1/migrations`.
    pub async fn migrate(&self, req: &MigrateRequest) -> Result<MigrationStatus, ClientError> {
        self.post("/v1/migrations", req).await
    }

    /// `GET /v1/migrations/{id}`.
    pub async fn migration(&self, id: MigrationId) -> Result<MigrationStatus, ClientError> {
        self.call(Method::GET, &format!("/v1/migrations/{}", id.0), None)
            .await
    }

    /// `GET /v1/migrations`.
    pub async fn migrations(&self) -> Result<Vec<MigrationStatus>, ClientError> {
        self.call(Method::GET, "/v1/migrations", None).await
    }

    /// `POST /v1/migrations/{id}/hypervisor`.
    pub async fn hypervisor(
        &self,
        id: MigrationId,
        post: &HypervisorPost,
    ) -> Result<MigrationStatus, ClientError> {
        self.post(&format!("/v1/migrations/{}/hypervisor", id.0), post)
            .await
    }

    /// `POST /v1/migrations/{id}/cancel`.
    pub async fn cancel(&self, id: MigrationId) -> Result<MigrationStatus, ClientError> {
        self.call(
            Method::POST,
            &format!("/v1/migrations/{}/cancel", id.0),
            None,
        )
        .await
    }

    /// Polls a migration every `interval` until it reaches a terminal phase, calling
    /// `on_record` once per history entry (including those already present), in order.
    pub async fn follow(
        &self,
        id: MigrationId,
        interval: Duration,
        mut on_record: impl FnMut(&MigrationStatus, &PhaseRecord),
    ) -> Result<MigrationStatus, ClientError> {
        let mut seen = 0;
        loop {
            let status = self.migration(id).await?;
            for record in status.phases.iter().skip(seen) {
                on_record(&status, record);
            }
            seen = seen.max(status.phases.len());
            if status.phase.is_terminal() {
                return Ok(status);
            }
            tokio::time::sleep(interval).await;
        }
    }
}

/// `srmig migrate`: posts `req` to the controller at `socket` and follows the migration to
/// its end, calling `on_record` for every phase entered or observation made. Returns the final
/// status (whose phase says whether it completed); refusals are errors.
pub fn migrate_blocking(
    socket: impl Into<PathBuf>,
    req: &MigrateRequest,
    poll: Duration,
    on_record: impl FnMut(&MigrationStatus, &PhaseRecord),
) -> Result<MigrationStatus, ClientError> {
    migrate_blocking_with_progress(socket, req, poll, on_record, |_, _| {})
}

/// [`migrate_blocking`], also calling `on_progress` when the hypervisor's progress (QMP
/// `query-migrate`, see [`srmig_api::HypervisorProgress`]) moves on noticeably: a new status,
/// a new pass, another quarter of the memory sent, or the final figures.
pub fn migrate_blocking_with_progress(
    socket: impl Into<PathBuf>,
    req: &MigrateRequest,
    poll: Duration,
    mut on_record: impl FnMut(&MigrationStatus, &PhaseRecord),
    mut on_progress: impl FnMut(&MigrationStatus, &srmig_api::HypervisorProgress),
) -> Result<MigrationStatus, ClientError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ClientError::Runtime)?;
    let client = ControllerClient::new(socket);
    runtime.block_on(async {
        let accepted = client.migrate(req).await?;
        let mut shown: Option<srmig_api::HypervisorProgress> = None;
        let mut seen = 0;
        loop {
            let status = client.migration(accepted.id).await?;
            for record in status.phases.iter().skip(seen) {
                on_record(&status, record);
            }
            seen = seen.max(status.phases.len());
            if let Some(p) = &status.hypervisor {
                if progress_moved(shown.as_ref(), p) {
                    on_progress(&status, p);
                    shown = Some(p.clone());
                }
            }
            if status.phase.is_terminal() {
                return Ok(status);
            }
            tokio::time::sleep(poll).await;
        }
    })
}

/// Whether `new` is worth a line after `old` (see [`migrate_blocking_with_progress`]).
pub fn progress_moved(
    old: Option<&srmig_api::HypervisorProgress>,
    new: &srmig_api::HypervisorProgress,
) -> bool {
    let Some(old) = old else {
        return true;
    };
    let quarter = |p: &srmig_api::HypervisorProgress| match (p.ram_transferred, p.ram_total) {
        (Some(t), Some(total)) if total > 0 => (t.min(total) * 4) / total,
        _ => 0,
    };
    old.status != new.status
        || old.passes != new.passes
        || quarter(old) != quarter(new)
        || old.downtime_ms != new.downtime_ms
        || old.pause_us != new.pause_us
}

/// One hypervisor progress line, in the style of [`progress_line`]:
/// `                     hypervisor: active 30% (41.0/134.8 MB, pass 1) 212 ms`
pub fn hypervisor_line(p: &srmig_api::HypervisorProgress) -> String {
    format!("{:>21}hypervisor: {p}", "")
}

/// One progress line: wall-clock time (UTC), time since the request, phase.
///
/// `12:00:01.234 UTC  +    4 ms  expect-path-acks`
pub fn progress_line(status: &MigrationStatus, record: &PhaseRecord) -> String {
    format!(
        "{}  {}",
        crate::follow::stamp(record.at_ms, status.started_at_ms),
        record.phase
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use srmig_api::{HostId, MigrationPhase, Strategy, Timestamp, VmId};

    #[test]
    fn hypervisor_progress_lines_only_when_it_moves() {
        let p = srmig_api::HypervisorProgress {
            status: "active".into(),
            total_time_ms: Some(10),
            ram_transferred: Some(10),
            ram_total: Some(100),
            passes: Some(1),
            ..Default::default()
        };
        assert!(progress_moved(None, &p));
        let later = srmig_api::HypervisorProgress {
            total_time_ms: Some(60),
            ram_transferred: Some(20),
            ..p.clone()
        };
        assert!(!progress_moved(Some(&p), &later));
        let quarter = srmig_api::HypervisorProgress {
            ram_transferred: Some(26),
            ..later.clone()
        };
        assert!(progress_moved(Some(&later), &quarter));
        let done = srmig_api::HypervisorProgress {
            status: "completed".into(),
            ..quarter.clone()
        };
        assert!(progress_moved(Some(&quarter), &done));
        assert_eq!(
            hypervisor_line(&p),
            "                     hypervisor: active 10% (0.0/0.0 MB, pass 1) 10 ms"
        );
    }

    #[test]
    fn progress_line_shape() {
        let status = MigrationStatus {
            id: MigrationId(1),
            vm: VmId::new("v").expect("name"),
            from: HostId::new("a").expect("name"),
            to: HostId::new("b").expect("name"),
            strategy: Strategy::SrBuffer,
            phase: MigrationPhase::Completed,
            started_at_ms: Timestamp(86_400_000 * 3 + 3_600_000 * 12 + 1_000),
            phases: vec![],
            error: None,
            hypervisor: None,
            left_behind: vec![],
            delivery: Default::default(),
        };
        let rec = PhaseRecord {
            phase: MigrationPhase::ExpectPathAcks,
            at_ms: Timestamp(86_400_000 * 3 + 3_600_000 * 12 + 1_234),
        };
        assert_eq!(
            progress_line(&status, &rec),
            "12:00:01.234 UTC  +   234 ms  expect-path-acks"
        );
    }
}
