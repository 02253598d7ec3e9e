//! The HTTP/JSON API (axum). Handlers parse and validate the request completely, then hand a
//! command to the engine and wait for its answer; a malformed request never reaches the
//! engine, so it changes nothing. Every error body is an [`ApiError`].
//!
//! | method and path | body | success |
//! |---|---|---|
//! | `POST /v1/hosts` | [`HostRegistration`] | 201 [`HostView`] |
//! | `GET /v1/hosts` | | 200 `[HostView]` |
//! | `DELETE /v1/hosts/{name}` | | 204 (409 while VMs are mapped to it or a migration goes from or to it) |
//! | `POST /v1/vms` | [`VmInfo`] | 201 [`VmView`] |
//! | `GET /v1/vms` | | 200 `[VmView]` |
//! | `DELETE /v1/vms/{name}` | | 204 (409 while it migrates) |
//! | `POST /v1/vm-state` | [`VmStateReport`] | 204 |
//! | `POST /v1/fence` | [`FenceReport`] | 204 |
//! | `POST /v1/release` | [`ReleaseReport`] | 204 |
//! | `POST /v1/migrations` | [`MigrateRequest`] | 201 [`MigrationStatus`] |
//! | `GET /v1/migrations` | | 200 `[MigrationStatus]` |
//! | `GET /v1/migrations/{id}` | | 200 [`MigrationStatus`] |
//! | `POST /v1/migrations/{id}/hypervisor` | [`HypervisorPost`] | 200 [`MigrationStatus`] |
//! | `POST /v1/migrations/{id}/cancel` | | 200 [`MigrationStatus`] |
//! | `GET /v1/info` | | 200 [`ControllerInfo`] |
//! | `GET /metrics` | | 200 OpenMetrics text (families: `metrics.rs`) |
//!
//! `GET /v1/info` and `GET /metrics` are answered here, without the engine.
//!
//!
//! Who may do what: on the unix socket, whoever the socket's mode, group and peer-credential
//! check let in (local administration) may do everything. Over mutual TLS ([`authorize`]), an
//! operator's client certificate (`srmig://client/..`) or a controller's may do everything; a
//! host's certificate (`srmig://host/<name>`) may only `POST /v1/vm-state`, `POST /v1/fence`
//! and `POST /v1/release`, and only about itself (`host` = `<name>`): 403 `forbidden`
//! otherwise.
//!
//! [`VmInfo`]: srmig_api::VmInfo
//! [`VmStateReport`]: srmig_api::VmStateReport
//! [`FenceReport`]: srmig_api::FenceReport
//! [`ReleaseReport`]: srmig_api::ReleaseReport
//! [`MigrateRequest`]: srmig_api::MigrateRequest
//! [`MigrationStatus`]: srmig_api::MigrationStatus

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Serialize;
use srmig_api::{
    ApiError, ApiErrorCode, FenceReport, HostId, MigrationId, ReleaseReport, VmStateReport,
};
use srmig_tls::{PeerIdentity, Role};
use tokio::sync::{mpsc, oneshot};

use crate::mailbox::{Command, Failure};
use crate::metrics::{self, Metrics};
use crate::types::{ControllerInfo, HostRegistration, HostView, HypervisorPost, VmView};

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.status, Json(self.error)).into_response()
    }
}

#[derive(Debug, Clone)]
struct AppState {
    tx: mpsc::Sender<Command>,
    metrics: Arc<Metrics>,
    info: Arc<ControllerInfo>,
}

/// Builds the router; handlers talk to the engine through `tx`, `GET /metrics` renders
/// `metrics` and `GET /v1/info` answers `info`.
pub(crate) fn router(
    tx: mpsc::Sender<Command>,
    metrics: Arc<Metrics>,
    info: ControllerInfo,
) -> Router {
    Router::new()
        .route("/v1/hosts", post(add_host).get(hosts))
        .route("/v1/hosts/{name}", axum::routing::delete(remove_host))
        .route("/v1/vms", post(add_vm).get(vms))
        .route("/v1/vms/{name}", axum::routing::delete(remove_vm))
        .route("/v1/vm-state", post(vm_state))
        .route("/v1/fence", post(fence))
        .route("/v1/release", post(release))
        .route("/v1/migrations", post(migrate).get(migrations))
        .route("/v1/migrations/{id}", get(migration))
        .route("/v1/migrations/{id}/hypervisor", post(hypervisor))
        .route("/v1/migrations/{id}/cancel", post(cancel))
        .route("/v1/info", get(get_info))
        .route("/metrics", get(get_metrics))
        .fallback(not_found)
        .with_state(AppState {
            tx,
            metrics,
            info: Arc::new(info),
        })
}

/// The authorization of the mutual-TLS listener (see the module docs): a request without a
/// verified srmig identity, or from a host to anything but `POST /v1/vm-state`, gets 403.
pub(crate) async fn authorize(req: Request, next: Next) -> Response {
    let forbidden = |message: String| {
        Failure::new(StatusCode::FORBIDDEN, ApiErrorCode::Forbidden, message).into_response()
    };
    match req.extensions().get::<PeerIdentity>() {
        None => forbidden("no srmig identity on this connection".into()),
        Some(id) => match id.role() {
            Role::Client | Role::Controller => next.run(req).await,
            Role::Host
                if req.method() == axum::http::Method::POST
                    && matches!(
                        req.uri().path(),
                        "/v1/vm-state" | "/v1/fence" | "/v1/release"
                    ) =>
            {
                next.run(req).await
            }
            Role::Host => forbidden(format!(
                "{id} may only report about its own VMs (POST /v1/vm-state, POST /v1/fence, \
                 POST /v1/release), \
                 not {} {}",
                req.method(),
                req.uri().path()
            )),
        },
    }
}

/// Parses a JSON body, refusing it with a 400 that quotes serde's reason.
fn parse<T: DeserializeOwned>(body: &Bytes, what: &str) -> Result<T, Failure> {
    serde_json::from_slice(body).map_err(|e| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            ApiErrorCode::InvalidRequest,
            format!("the body is not a valid {what}: {e}"),
        )
    })
}

fn parse_id(text: &str) -> Result<MigrationId, Failure> {
    let digits = text.strip_prefix('m').unwrap_or(text);
    digits.parse::<u64>().map(MigrationId).map_err(|_| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            ApiErrorCode::InvalidRequest,
            format!("{text:?} is not a migration id (expected a number such as 3 or m3)"),
        )
    })
}

/// Sends a command built around a reply channel and waits for the engine's answer.
async fn ask<T>(
    state: &AppState,
    make: impl FnOnce(oneshot::Sender<Result<T, Failure>>) -> Command,
) -> Result<T, Failure> {
    let (reply, answer) = oneshot::channel();
    let gone = || {
        Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ApiErrorCode::Internal,
            "the controller is shutting down",
        )
    };
    state.tx.send(make(reply)).await.map_err(|_| gone())?;
    answer.await.map_err(|_| gone())?
}

fn respond<T: Serialize>(status: StatusCode, r: Result<T, Failure>) -> Response {
    match r {
        Ok(v) => (status, Json(v)).into_response(),
        Err(f) => f.into_response(),
    }
}

async fn add_host(State(s): State<AppState>, body: Bytes) -> Response {
    let r: Result<HostView, Failure> = async {
        let reg: HostRegistration = parse(&body, "host registration")?;
        ask(&s, |r| Command::AddHost(reg, r)).await
    }
    .await;
    respond(StatusCode::CREATED, r)
}

async fn remove_host(State(s): State<AppState>, Path(name): Path<String>) -> Response {
    let r = async {
        let host = srmig_api::HostId::new(name.clone()).map_err(|e| {
            Failure::new(
                StatusCode::BAD_REQUEST,
                ApiErrorCode::InvalidRequest,
                format!("{name:?} is not a host name: {e}"),
            )
        })?;
        ask(&s, |r| Command::RemoveHost(host, r)).await
    }
    .await;
    match r {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(f) => f.into_response(),
    }
}

async fn remove_vm(State(s): State<AppState>, Path(name): Path<String>) -> Response {
    let r = async {
        let vm = srmig_api::VmId::new(name.clone()).map_err(|e| {
            Failure::new(
                StatusCode::BAD_REQUEST,
                ApiErrorCode::InvalidRequest,
                format!("{name:?} is not a VM name: {e}"),
            )
        })?;
        ask(&s, |r| Command::RemoveVm(vm, r)).await
    }
    .await;
    match r {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(f) => f.into_response(),
    }
}

async fn hosts(State(s): State<AppState>) -> Response {
    respond(StatusCode::OK, ask(&s, Command::Hosts).await)
}

async fn add_vm(State(s): State<AppState>, body: Bytes) -> Response {
    let r: Result<VmView, Failure> = async {
        let vm = parse(&body, "VM")?;
        ask(&s, |r| Command::AddVm(vm, r)).await
    }
    .await;
    respond(StatusCode::CREATED, r)
}

async fn vms(State(s): State<AppState>) -> Response {
    respond(StatusCode::OK, ask(&s, Command::Vms).await)
}

/// A host's certificate may only report about itself.
fn own_report(caller: Option<&PeerIdentity>, host: &HostId) -> Result<(), Failure> {
    match caller {
        Some(id) if id.role() == Role::Host && id.name() != host.as_str() => Err(Failure::new(
            StatusCode::FORBIDDEN,
            ApiErrorCode::Forbidden,
            format!("{id} may only report about its own VMs, not host {host}'s"),
        )),
        _ => Ok(()),
    }
}

async fn vm_state(
    State(s): State<AppState>,
    caller: Option<axum::Extension<PeerIdentity>>,
    body: Bytes,
) -> Response {
    let r = async {
        let report: VmStateReport = parse(&body, "VM state report")?;
        own_report(caller.as_ref().map(|e| &e.0), &report.host)?;
        ask(&s, |r| Command::VmState(report, r)).await
    }
    .await;
    match r {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(f) => f.into_response(),
    }
}

async fn fence(
    State(s): State<AppState>,
    caller: Option<axum::Extension<PeerIdentity>>,
    body: Bytes,
) -> Response {
    let r = async {
        let report: FenceReport = parse(&body, "fence report")?;
        own_report(caller.as_ref().map(|e| &e.0), &report.host)?;
        ask(&s, |r| Command::Fence(report, r)).await
    }
    .await;
    match r {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(f) => f.into_response(),
    }
}

async fn release(
    State(s): State<AppState>,
    caller: Option<axum::Extension<PeerIdentity>>,
    body: Bytes,
) -> Response {
    let r = async {
        let report: ReleaseReport = parse(&body, "release report")?;
        own_report(caller.as_ref().map(|e| &e.0), &report.host)?;
        ask(&s, |r| Command::Release(report, r)).await
    }
    .await;
    match r {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(f) => f.into_response(),
    }
}

async fn migrate(State(s): State<AppState>, body: Bytes) -> Response {
    let r = async {
        let req = parse(&body, "migration request")?;
        ask(&s, |r| Command::Migrate(req, r)).await
    }
    .await;
    respond(StatusCode::CREATED, r)
}

async fn migrations(State(s): State<AppState>) -> Response {
    respond(StatusCode::OK, ask(&s, Command::Migrations).await)
}

async fn migration(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    let r = async {
        let id = parse_id(&id)?;
        ask(&s, |r| Command::Migration(id, r)).await
    }
    .await;
    respond(StatusCode::OK, r)
}

async fn hypervisor(State(s): State<AppState>, Path(id): Path<String>, body: Bytes) -> Response {
    let r = async {
        let id = parse_id(&id)?;
        let post: HypervisorPost = parse(&body, "hypervisor event")?;
        ask(&s, |r| Command::Hypervisor(id, post, r)).await
    }
    .await;
    respond(StatusCode::OK, r)
}

async fn cancel(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    let r = async {
        let id = parse_id(&id)?;
        ask(&s, |r| Command::Cancel(id, r)).await
    }
    .await;
    respond(StatusCode::OK, r)
}

async fn get_info(State(s): State<AppState>) -> Response {
    Json(s.info.as_ref()).into_response()
}

async fn get_metrics(State(s): State<AppState>) -> Response {
    match s.metrics.render() {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(_) => Failure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ApiErrorCode::Internal,
            "cannot render the metrics",
        )
        .into_response(),
    }
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(ApiError::new(
            ApiErrorCode::InvalidRequest,
            "no such endpoint (see docs/controller-api.md)",
        )),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_ids_parse_with_or_without_prefix() {
        assert_eq!(parse_id("3").expect("id"), MigrationId(3));
        assert_eq!(parse_id("m17").expect("id"), MigrationId(17));
        for bad in ["", "m", "-1", "x3", "3.0", "99999999999999999999999"] {
            let f = parse_id(bad).expect_err("refused");
            assert_eq!(f.status, StatusCode::BAD_REQUEST);
            assert_eq!(f.error.code, ApiErrorCode::InvalidRequest);
        }
    }

    #[test]
    fn parse_errors_name_the_problem() {
        let f = parse::<srmig_api::MigrateRequest>(&Bytes::from_static(b"{\"vm\":1}"), "x")
            .expect_err("refused");
        assert_eq!(f.status, StatusCode::BAD_REQUEST);
        assert!(
            f.error.message.contains("invalid type"),
            "{}",
            f.error.message
        );
    }
}
