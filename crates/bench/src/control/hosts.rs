//! The N hosts of `srmig bench control`: each one a real [`srmig_agent::Agent`] (the code
//! srmigd runs: plan, validate on a scratch engine, install into a live
//! [`srmig_dataplane::Dataplane`]) behind the endpoints of srmigd's API the controller
//! calls, `PUT /v1/config`, `PATCH /v1/config` and `GET /v1/status`, with srmigd's wire
//! format (JSON [`HostConfig`] or [`srmig_api::HostConfigDelta`] in, [`srmig_api::Ack`] or
//! [`srmig_api::ApiError`] out). Each host listens on
//! its own unix socket, as a host registered with `api_socket`; all of them are served by the
//! one runtime the caller runs them on.
//!
//! What srmigd does around the agent and this does not: port I/O, workers, the hypervisor
//! watcher, reporting VM state changes by itself. The bench plays the hypervisor instead: it
//! sets a VM's state through [`Fleet::set_vm_state`] (as `PUT /v1/vms/{name}/state` does) and
//! posts the agent's report to the controller itself.
//!
//! Every host is a two-port node (uplink `up0`, VM port `vm0`) that can attach two VMs: its own
//! (`vm<i>` on `h<i>`, running) and its left neighbour's (`vm<i-1>`, absent), the one that
//! migrates to it. End.SBUF buffers are bounded small (16 packets per VM, 32 in all) so that a
//! thousand engines fit in memory; the bench sends no packets.

use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use srmig_agent::{Agent, WallClock};
use srmig_api::{
    ApiError, ApiErrorCode, HostConfig, HostId, HostInfo, MacAddr, VmId, VmInfo, VmState,
    VmStateReport,
};
use srmig_controller::{HostApi, HostRegistration};
use srmig_dataplane::NodeConfig;
use tokio::task::JoinHandle;

use super::ControlBenchError;

/// Wire and CPU counters summed over every host (read before and after a measured section).
#[derive(Debug, Default)]
pub(crate) struct WireStats {
    /// `PUT /v1/config` and `PATCH /v1/config` requests received.
    pub config_puts: AtomicU64,
    /// Their body bytes.
    pub config_bytes: AtomicU64,
    /// Nanoseconds spent parsing and applying them (the agents' CPU time).
    pub apply_ns: AtomicU64,
    /// Configs refused (4xx/5xx answered).
    pub refused: AtomicU64,
    /// `GET /v1/status` requests answered.
    pub status_gets: AtomicU64,
    /// Their body bytes.
    pub status_bytes: AtomicU64,
}

/// A copy of [`WireStats`] at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WireSnapshot {
    pub config_puts: u64,
    pub config_bytes: u64,
    pub apply_ns: u64,
    pub refused: u64,
    pub status_gets: u64,
    pub status_bytes: u64,
}

impl WireSnapshot {
    /// What happened between `earlier` and `self`.
    pub(crate) fn since(&self, earlier: &WireSnapshot) -> WireSnapshot {
        WireSnapshot {
            config_puts: self.config_puts.saturating_sub(earlier.config_puts),
            config_bytes: self.config_bytes.saturating_sub(earlier.config_bytes),
            apply_ns: self.apply_ns.saturating_sub(earlier.apply_ns),
            refused: self.refused.saturating_sub(earlier.refused),
            status_gets: self.status_gets.saturating_sub(earlier.status_gets),
            status_bytes: self.status_bytes.saturating_sub(earlier.status_bytes),
        }
    }
}

impl WireStats {
    pub(crate) fn snapshot(&self) -> WireSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WireSnapshot {
            config_puts: r(&self.config_puts),
            config_bytes: r(&self.config_bytes),
            apply_ns: r(&self.apply_ns),
            refused: r(&self.refused),
            status_gets: r(&self.status_gets),
            status_bytes: r(&self.status_bytes),
        }
    }
}

/// One host: its registration and its agent.
#[derive(Debug)]
struct Host {
    registration: HostRegistration,
    agent: Mutex<Agent>,
}

#[derive(Debug, Clone)]
struct AppState {
    host: Arc<Host>,
    stats: Arc<WireStats>,
}

/// The hosts and their API servers.
#[derive(Debug)]
pub(crate) struct Fleet {
    hosts: Vec<Arc<Host>>,
    servers: Vec<JoinHandle<()>>,
    stats: Arc<WireStats>,
    /// The agents' clock: `Instant::ZERO` of every engine.
    epoch: Instant,
}

/// The name of host `i`.
pub(crate) fn host_name(i: usize) -> String {
    format!("h{i}")
}

/// The name of VM `j` (at home on host `j`).
pub(crate) fn vm_name(j: usize) -> String {
    format!("vm{j}")
}

fn locator_group(i: usize) -> usize {
    i + 1
}

/// Host `i`'s registration fields: locator `fc00:0:<i+1>::/48`, End.S `::e5`, End.SBUF `::eb`,
/// End.DT6 `::d6`, underlay `2001:db8:ff::<i+1>`.
pub(crate) fn host_info(i: usize) -> Result<HostInfo, ControlBenchError> {
    let g = locator_group(i);
    let json = serde_json::json!({
        "name": host_name(i),
        "locator": format!("fc00:0:{g:x}::/48"),
        "sid_end_s": format!("fc00:0:{g:x}::e5"),
        "sid_end_sbuf": format!("fc00:0:{g:x}::eb"),
        "sid_dt6": format!("fc00:0:{g:x}::d6"),
        "underlay": format!("2001:db8:ff::{g:x}"),
    });
    serde_json::from_value(json).map_err(|e| ControlBenchError::Setup(format!("host {i}: {e}")))
}

fn vm_address(j: usize) -> Ipv6Addr {
    let n = u16::try_from(j + 1).unwrap_or(u16::MAX);
    Ipv6Addr::new(0x2001, 0xdb8, 0xa, 0, 0, 0, 0, n)
}

fn vm_mac(j: usize) -> [u8; 6] {
    let n = u16::try_from(j).unwrap_or(u16::MAX).to_be_bytes();
    [0x52, 0x54, 0x00, 0x00, n[0], n[1]]
}

/// VM `j`'s registration: at home on host `j`.
pub(crate) fn vm_info(j: usize) -> Result<VmInfo, ControlBenchError> {
    let bad = |e: String| ControlBenchError::Setup(format!("VM {j}: {e}"));
    Ok(VmInfo {
        name: VmId::new(vm_name(j)).map_err(|e| bad(e.to_string()))?,
        addresses: vec![IpAddr::V6(vm_address(j))],
        mac: MacAddr(vm_mac(j)),
        host: HostId::new(host_name(j)).map_err(|e| bad(e.to_string()))?,
        network: None,
    })
}

/// Host `i`'s node config (of `n` hosts): see the module docs.
fn node_config(i: usize, n: usize) -> Result<NodeConfig, ControlBenchError> {
    let g = locator_group(i);
    let vm = |j: usize, state: &str| {
        let m = vm_mac(j);
        serde_json::json!({
            "name": vm_name(j),
            "addresses": [vm_address(j).to_string()],
            "mac": format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5]),
            "port": "vm0",
            "state": state,
        })
    };
    let left = (i + n - 1) % n;
    let json = serde_json::json!({
        "locator": format!("fc00:0:{g:x}::/48"),
        "source_address": format!("2001:db8:ff::{g:x}"),
        "infrastructure_prefixes": ["fc00::/16", "2001:db8:ff::/48"],
        "gateway": { "address": "2001:db8:a::1", "mac": "02:00:00:00:00:01" },
        "ports": [
            { "name": "up0", "kind": "uplink", "mac": "02:00:00:00:01:00", "peer_mac": "02:00:00:00:ff:00" },
            { "name": "vm0", "kind": "vm", "mac": "02:00:00:00:01:01" },
        ],
        "routes": [ { "prefix": "::/0", "port": "up0" } ],
        "vms": [vm(i, "running"), vm(left, "absent")],
        "buffer": {
            "per_vm_packets": 16, "per_vm_bytes": 32768,
            "global_packets": 32, "global_bytes": 65536, "max_age_ms": 1000,
        },
    });
    serde_json::from_value(json)
        .map_err(|e| ControlBenchError::Setup(format!("node config of host {i}: {e}")))
}

impl Fleet {
    /// Builds `n` agents and serves each on `<dir>/h<i>.sock`. Must be called inside the
    /// runtime that is to serve them.
    pub(crate) async fn start(n: usize, dir: &Path) -> Result<Fleet, ControlBenchError> {
        let stats = Arc::new(WireStats::default());
        let epoch = Instant::now();
        let unix_us_at_zero = (super::unix_ms() * 1000.0).floor() as u64;
        let mut hosts = Vec::with_capacity(n);
        let mut servers = Vec::with_capacity(n);
        for i in 0..n {
            let info = host_info(i)?;
            let mut agent = Agent::new(info.name.clone(), node_config(i, n)?, 1)
                .map_err(|e| ControlBenchError::Setup(format!("agent of host {i}: {e}")))?;
            agent.set_clock(WallClock { unix_us_at_zero });
            let socket: PathBuf = dir.join(format!("{}.sock", host_name(i)));
            let listener = tokio::net::UnixListener::bind(&socket).map_err(|source| {
                ControlBenchError::Io {
                    what: format!("bind {}", socket.display()),
                    source,
                }
            })?;
            let host = Arc::new(Host {
                registration: HostRegistration {
                    info,
                    api: HostApi::ApiSocket(socket),
                },
                agent: Mutex::new(agent),
            });
            let app = Router::new()
                .route("/v1/config", put(put_config).patch(patch_config))
                .route("/v1/status", get(status))
                .fallback(|| async {
                    error(
                        StatusCode::NOT_FOUND,
                        ApiErrorCode::InvalidRequest,
                        "no such endpoint in the bench's host".into(),
                    )
                })
                .with_state(AppState {
                    host: host.clone(),
                    stats: stats.clone(),
                });
            servers.push(tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            }));
            hosts.push(host);
        }
        Ok(Fleet {
            hosts,
            servers,
            stats,
            epoch,
        })
    }

    /// The registrations to post, host 0 first.
    pub(crate) fn registrations(&self) -> impl Iterator<Item = &HostRegistration> {
        self.hosts.iter().map(|h| &h.registration)
    }

    /// The wire counters.
    pub(crate) fn stats(&self) -> WireSnapshot {
        self.stats.snapshot()
    }

    /// Sets `vm`'s state on host `i` as the hypervisor would tell srmigd; returns the agent's
    /// report of the change, for the controller (`None` if the state did not change).
    pub(crate) fn set_vm_state(
        &self,
        i: usize,
        vm: &str,
        state: VmState,
    ) -> Result<Option<VmStateReport>, ControlBenchError> {
        let host = self
            .hosts
            .get(i)
            .ok_or_else(|| ControlBenchError::Setup(format!("no host {i}")))?;
        let now = srmig_dataplane::Instant(
            u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX),
        );
        let mut agent = host.agent.lock().unwrap_or_else(PoisonError::into_inner);
        agent
            .set_vm_state(now, vm, state)
            .map_err(|e| ControlBenchError::Setup(format!("host {i}: VM {vm}: {e}")))?;
        Ok(agent.poll_report())
    }

    /// Stops every server.
    pub(crate) fn stop(&mut self) {
        for s in self.servers.drain(..) {
            s.abort();
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop();
    }
}

fn error(status: StatusCode, code: ApiErrorCode, message: String) -> Response {
    (status, Json(ApiError::new(code, message))).into_response()
}

/// `PUT /v1/config`, as srmigd answers it: 200 and the Ack, or the agent's error status and
/// an [`ApiError`].
async fn put_config(State(s): State<AppState>, body: Bytes) -> Response {
    apply(&s, &body, |agent, hc: HostConfig| {
        agent.apply_host_config(hc)
    })
}

/// `PATCH /v1/config`, as srmigd answers it.
async fn patch_config(State(s): State<AppState>, body: Bytes) -> Response {
    apply(&s, &body, |agent, d: srmig_api::HostConfigDelta| {
        agent.apply_host_config_delta(&d)
    })
}

/// Parses `body` and applies it to the host's agent with `f`, counting bytes and time.
fn apply<T: serde::de::DeserializeOwned>(
    s: &AppState,
    body: &[u8],
    f: impl FnOnce(&mut Agent, T) -> Result<srmig_api::Ack, srmig_agent::AgentError>,
) -> Response {
    let started = Instant::now();
    s.stats.config_puts.fetch_add(1, Ordering::Relaxed);
    s.stats
        .config_bytes
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    let reply = match serde_json::from_slice::<T>(body) {
        Err(e) => error(
            StatusCode::BAD_REQUEST,
            ApiErrorCode::InvalidRequest,
            format!("invalid host config: {e}"),
        ),
        Ok(hc) => {
            let applied = f(
                &mut s.host.agent.lock().unwrap_or_else(PoisonError::into_inner),
                hc,
            );
            match applied {
                Ok(ack) => Json(ack).into_response(),
                Err(e) => {
                    let status = StatusCode::from_u16(e.http_status())
                        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                    (status, Json(e.to_api())).into_response()
                }
            }
        }
    };
    if !reply.status().is_success() {
        s.stats.refused.fetch_add(1, Ordering::Relaxed);
    }
    let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    s.stats.apply_ns.fetch_add(ns, Ordering::Relaxed);
    reply
}

/// `GET /v1/status`: the agent's status (no port I/O: every port reads as detached).
async fn status(State(s): State<AppState>) -> Response {
    let st = s
        .host
        .agent
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .status(&[]);
    match serde_json::to_vec(&st) {
        Ok(body) => {
            s.stats.status_gets.fetch_add(1, Ordering::Relaxed);
            s.stats
                .status_bytes
                .fetch_add(body.len() as u64, Ordering::Relaxed);
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response()
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            ApiErrorCode::Internal,
            e.to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_configs_build_engines_and_registrations_validate() {
        for i in [0, 1, 999] {
            let cfg = node_config(i, 1000).expect("node config");
            Agent::new(HostId::new(host_name(i)).expect("name"), cfg, 1).expect("agent");
            host_info(i).expect("host").validate().expect("valid host");
            vm_info(i).expect("vm");
        }
    }
}
