//! The control API: HTTP/1.1 + JSON on a unix socket (axum), documented in
//! `docs/srmigd-api.md`.
//!
//! Handlers never touch the engine: each request becomes a [`Command`] for the dataplane
//! thread (for every worker's, with `--workers N`: see [`crate::workers`]), which applies it
//! between two batches and replies; the workers' replies are merged (the first error wins,
//! status counters are summed). Request bodies are parsed here,
//! before anything is sent, so a malformed request gets `400` and changes nothing. Every error
//! body is an [`ApiError`].

use std::net::Ipv6Addr;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use srmig_api::{ApiError, ApiErrorCode, HostConfig, HostConfigDelta};
use srmig_dataplane::SidConfig;

#[cfg(test)]
use crate::dataplane_loop::DataplaneHandle;
use crate::mailbox::Command;
use crate::metrics;
use crate::workers::{merge_replies, Workers};
use srmig_agent::AgentError;
use srmig_api::HostStatus;

/// Body of `PUT /v1/vms/{name}/state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmStateRequest {
    /// `state`: `absent`, `running` or `paused`.
    pub state: srmig_api::VmState,
}

fn error(status: StatusCode, code: ApiErrorCode, message: impl Into<String>) -> Response {
    (status, Json(ApiError::new(code, message))).into_response()
}

fn command_error(e: &AgentError) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(e.to_api())).into_response()
}

fn unavailable() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        ApiErrorCode::Internal,
        "the dataplane thread is not running",
    )
}

fn parse<T: for<'de> Deserialize<'de>>(what: &str, body: &[u8]) -> Result<T, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            ApiErrorCode::InvalidRequest,
            format!("invalid {what}: {e}"),
        ))
    })
}

/// The router, with the workers' handles as state (a single
/// [`crate::dataplane_loop::DataplaneHandle`] converts).
pub fn router(dp: impl Into<Workers>) -> Router {
    let dp: Workers = dp.into();
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/config", put(put_config).patch(patch_config))
        .route("/v1/vms/{name}/state", put(put_vm_state))
        .route("/v1/sids", post(post_sid))
        .route("/v1/sids/{sid}", delete(delete_sid))
        .route("/metrics", get(get_metrics))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                ApiErrorCode::InvalidRequest,
                "no such endpoint (see docs/srmigd-api.md)",
            )
        })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                ApiErrorCode::InvalidRequest,
                "method not allowed on this endpoint",
            )
        })
        .with_state(dp)
}

/// Every worker's status, merged (one worker: its status as it is).
async fn host_status(dp: &Workers) -> Option<HostStatus> {
    let replies = dp.call(Command::Status).await.ok()?;
    let mut it = replies.into_iter();
    let mut s = it.next()?;
    for o in it {
        s.merge(&o);
    }
    Some(s)
}

/// The reply of a command every worker applied: the first error, else worker 0's reply
/// (`merge` may fold the others' into it).
async fn call_all<T, E: std::fmt::Display>(
    dp: &Workers,
    what: &str,
    make: impl Fn(crate::mailbox::Reply<Result<T, E>>) -> Command,
    merge: impl Fn(&mut T, T),
) -> Option<Result<T, E>> {
    merge_replies(what, dp.call(make).await.ok()?, merge)
}

/// Keeps worker 0's reply.
fn first<T>(_: &mut T, _: T) {}

async fn status(State(dp): State<Workers>) -> Response {
    match host_status(&dp).await {
        Some(s) => Json(s).into_response(),
        None => unavailable(),
    }
}

async fn get_metrics(State(dp): State<Workers>) -> Response {
    match host_status(&dp).await {
        Some(s) => (
            [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
            metrics::render(&s),
        )
            .into_response(),
        None => unavailable(),
    }
}

async fn put_config(State(dp): State<Workers>, body: Bytes) -> Response {
    let hc: HostConfig = match parse("host config", &body) {
        Ok(h) => h,
        Err(r) => return *r,
    };
    let make = |r| Command::ApplyConfig(Box::new(hc.clone()), r);
    match call_all(&dp, "PUT /v1/config", make, first).await {
        Some(Ok(ack)) => Json(ack).into_response(),
        Some(Err(e)) => command_error(&e),
        None => unavailable(),
    }
}

async fn patch_config(State(dp): State<Workers>, body: Bytes) -> Response {
    let delta: HostConfigDelta = match parse("host config delta", &body) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let make = |r| Command::ApplyDelta(Box::new(delta.clone()), r);
    match call_all(&dp, "PATCH /v1/config", make, first).await {
        Some(Ok(ack)) => Json(ack).into_response(),
        Some(Err(e)) => command_error(&e),
        None => unavailable(),
    }
}

async fn put_vm_state(
    State(dp): State<Workers>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let req: VmStateRequest = match parse("VM state request", &body) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let make = |r| Command::SetVmState(name.clone(), req.state, r);
    let merge = |a: &mut srmig_api::VmStatus, b: srmig_api::VmStatus| a.merge(&b);
    match call_all(&dp, "PUT /v1/vms/{name}/state", make, merge).await {
        Some(Ok(vm)) => Json(vm).into_response(),
        Some(Err(e)) => command_error(&e),
        None => unavailable(),
    }
}

async fn post_sid(State(dp): State<Workers>, body: Bytes) -> Response {
    let cfg: SidConfig = match parse("SID", &body) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let make = |r| Command::InstallSid(Box::new(cfg.clone()), r);
    match call_all(&dp, "POST /v1/sids", make, first).await {
        Some(Ok(s)) => (StatusCode::CREATED, Json(s)).into_response(),
        Some(Err(e)) => command_error(&e),
        None => unavailable(),
    }
}

async fn delete_sid(State(dp): State<Workers>, Path(sid): Path<String>) -> Response {
    let Ok(sid) = sid.parse::<Ipv6Addr>() else {
        return error(
            StatusCode::BAD_REQUEST,
            ApiErrorCode::InvalidRequest,
            format!("\"{sid}\" is not an IPv6 address"),
        );
    };
    match call_all(
        &dp,
        "DELETE /v1/sids",
        |r| Command::RemoveSid(sid, r),
        first,
    )
    .await
    {
        Some(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Some(Err(e)) => command_error(&e),
        None => unavailable(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use srmig_agent::testkit::{base, hc_json};
    use srmig_agent::Agent;
    use tower::ServiceExt;

    /// A router backed by a real `Agent` on a thread that handles commands (no sockets).
    fn app() -> (Router, std::thread::JoinHandle<()>) {
        let (handle, rx, _wake) = DataplaneHandle::new().expect("eventfd");
        let mut agent =
            Agent::new(srmig_api::HostId::new("h1").expect("name"), base(), 1).expect("agent");
        let t = std::thread::spawn(move || {
            while let Ok(cmd) = rx.recv() {
                if !crate::dataplane_loop::serve(
                    &mut agent,
                    srmig_dataplane::Instant::ZERO,
                    cmd,
                    &[],
                ) {
                    break;
                }
            }
        });
        (router(handle), t)
    }

    async fn call(app: &Router, method: &str, uri: &str, body: &str) -> (StatusCode, Bytes) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .expect("request");
        let resp = app.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, body)
    }

    async fn status_of(app: &Router) -> HostStatus {
        let (s, b) = call(app, "GET", "/v1/status", "").await;
        assert_eq!(s, StatusCode::OK);
        serde_json::from_slice(&b).expect("status JSON")
    }

    fn api_error(b: &[u8]) -> ApiError {
        serde_json::from_slice(b).expect("ApiError JSON")
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn malformed_requests_get_400_and_change_nothing() {
        rt().block_on(async {
            let (app, _t) = app();
            let (s, _) = call(&app, "PUT", "/v1/config", &hc_json(1)).await;
            assert_eq!(s, StatusCode::OK);
            let before = status_of(&app).await;
            let cases: [(&str, &str, String); 7] = [
                ("PUT", "/v1/config", "{not json".into()),
                (
                    "PUT",
                    "/v1/config",
                    hc_json(2).replace("\"generation\"", "\"gen\""),
                ),
                (
                    "PUT",
                    "/v1/config",
                    hc_json(2).replace("2001:db8:a::30", "2001:db8:zz::30"),
                ),
                (
                    "PUT",
                    "/v1/config",
                    hc_json(2).replace("H.Encaps", "H.Bogus"),
                ),
                (
                    "PUT",
                    "/v1/vms/web1/state",
                    r#"{"state":"sleeping"}"#.into(),
                ),
                (
                    "POST",
                    "/v1/sids",
                    r#"{"sid":"fc00:0:1::99","behavior":"End.Nope"}"#.into(),
                ),
                ("DELETE", "/v1/sids/not-an-address", String::new()),
            ];
            for (m, uri, body) in &cases {
                let (s, b) = call(&app, m, uri, body).await;
                assert_eq!(s, StatusCode::BAD_REQUEST, "{m} {uri} {body}");
                let e = api_error(&b);
                assert_eq!(e.code, ApiErrorCode::InvalidRequest);
                assert!(!e.message.is_empty());
            }
            // Valid JSON that the node refuses: also 400, also no change.
            let (s, b) = call(
                &app,
                "PUT",
                "/v1/config",
                &hc_json(2).replace("fc00:0:1::e5", "fc00:0:7::e5"),
            )
            .await;
            assert_eq!(s, StatusCode::BAD_REQUEST);
            assert!(api_error(&b).message.contains("dataplane refuses"));
            assert_eq!(status_of(&app).await, before);
        });
    }

    #[test]
    fn stale_generation_is_409() {
        rt().block_on(async {
            let (app, _t) = app();
            let (s, b) = call(&app, "PUT", "/v1/config", &hc_json(7)).await;
            assert_eq!(s, StatusCode::OK);
            let ack: srmig_api::Ack = serde_json::from_slice(&b).expect("ack");
            assert_eq!((ack.host.as_str(), ack.generation), ("h1", 7));
            let (s, b) = call(&app, "PUT", "/v1/config", &hc_json(6)).await;
            assert_eq!(s, StatusCode::CONFLICT);
            let e = api_error(&b);
            assert_eq!(e.code, ApiErrorCode::Conflict);
            assert!(e.message.contains("older"), "{}", e.message);
            assert_eq!(status_of(&app).await.generation, Some(7));
        });
    }

    #[test]
    fn patch_applies_a_delta_or_answers_base_mismatch() {
        rt().block_on(async {
            let (app, _t) = app();
            let delta = r#"{"epoch":0,"base_generation":7,"generation":8,
                "mappings":[{"vm":"far1","addresses":["2001:db8:a::30"],
                             "steering":{"encaps":{"segments":["fc00:0:9::d6"],"headend":"H.Encaps"}}}]}"#;
            // Nothing in force yet: base-mismatch.
            let (s, b) = call(&app, "PATCH", "/v1/config", delta).await;
            assert_eq!(s, StatusCode::CONFLICT);
            assert_eq!(api_error(&b).code, ApiErrorCode::BaseMismatch);
            let (s, _) = call(&app, "PUT", "/v1/config", &hc_json(7)).await;
            assert_eq!(s, StatusCode::OK);
            let (s, b) = call(&app, "PATCH", "/v1/config", delta).await;
            assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
            let ack: srmig_api::Ack = serde_json::from_slice(&b).expect("ack");
            assert_eq!(ack.generation, 8);
            let st = status_of(&app).await;
            assert_eq!(st.generation, Some(8));
            let p = st
                .policies
                .iter()
                .find(|p| p.name == "vm:far1")
                .expect("policy");
            assert_eq!(p.segments, vec!["fc00:0:9::d6".parse::<Ipv6Addr>().expect("sid")]);
            let (s, b) = call(&app, "PATCH", "/v1/config", "{\"epoch\":0}").await;
            assert_eq!(s, StatusCode::BAD_REQUEST);
            assert_eq!(api_error(&b).code, ApiErrorCode::InvalidRequest);
        });
    }

    #[test]
    fn vm_state_sids_and_metrics() {
        rt().block_on(async {
            let (app, _t) = app();
            let (s, b) = call(&app, "PUT", "/v1/vms/db1/state", r#"{"state":"running"}"#).await;
            assert_eq!(s, StatusCode::OK);
            let vm: srmig_api::VmStatus = serde_json::from_slice(&b).expect("vm");
            assert_eq!(vm.state, srmig_api::VmState::Running);
            let (s, b) = call(&app, "PUT", "/v1/vms/nope/state", r#"{"state":"running"}"#).await;
            assert_eq!(s, StatusCode::NOT_FOUND);
            assert_eq!(api_error(&b).code, ApiErrorCode::UnknownVm);

            let sid = r#"{"sid":"fc00:0:1::e5","behavior":"End.S","vm":"web1"}"#;
            let (s, _) = call(&app, "POST", "/v1/sids", sid).await;
            assert_eq!(s, StatusCode::CREATED);
            let (s, _) = call(&app, "POST", "/v1/sids", sid).await;
            assert_eq!(s, StatusCode::CONFLICT);
            // Refused by the engine (outside the locator): 400.
            let (s, _) = call(
                &app,
                "POST",
                "/v1/sids",
                r#"{"sid":"fc00:0:9::1","behavior":"End.DT6"}"#,
            )
            .await;
            assert_eq!(s, StatusCode::BAD_REQUEST);
            let (s, b) = call(&app, "GET", "/metrics", "").await;
            assert_eq!(s, StatusCode::OK);
            let text = String::from_utf8(b.to_vec()).expect("utf8");
            assert!(
                text.contains("srmig_sid_packets_total{sid=\"fc00:0:1::e5\",behavior=\"End.S\"} 0")
            );
            assert!(text.contains("srmig_vm_state{vm=\"db1\",state=\"running\"} 1"));
            let (s, _) = call(&app, "DELETE", "/v1/sids/fc00:0:1::e5", "").await;
            assert_eq!(s, StatusCode::NO_CONTENT);
            let (s, _) = call(&app, "DELETE", "/v1/sids/fc00:0:1::e5", "").await;
            assert_eq!(s, StatusCode::NOT_FOUND);
            let (s, b) = call(&app, "GET", "/v2/nothing", "").await;
            assert_eq!(s, StatusCode::NOT_FOUND);
            api_error(&b);
            let (s, b) = call(&app, "POST", "/v1/status", "").await;
            assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
            api_error(&b);
        });
    }
}
