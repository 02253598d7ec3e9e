//! Learning VM states by polling srmigd's `GET /v1/status`.
//!
//! srmigd reports VM state changes with `POST /v1/vm-state`, but gives up on a report after a
//! few attempts, and reports nothing to a controller that is down. The switchover (the
//! destination reporting the VM running) must not be missed, so the engine also polls:
//! every host once after a restore, and the source and destination of every migration
//! waiting for its hypervisor, periodically. A poll's result goes through the same
//! `handle_vm_state` path as a report.

use std::time::Duration;

use hyper::Method;
use serde::Deserialize;
use srmig_api::{HostId, VmId, VmState};
use tokio::sync::mpsc;

use crate::engine::Command;
use crate::http::UnixHttp;
use crate::push::error_chain;

/// The part of srmigd's `GET /v1/status` the controller reads (other fields are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HostStatusLite {
    /// `name`: the host name srmigd runs as.
    pub name: String,
    /// `vms`: the VMs srmigd knows, with their state there.
    #[serde(default)]
    pub vms: Vec<VmStatusLite>,
}

/// One VM of [`HostStatusLite`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct VmStatusLite {
    /// `name`: the VM.
    pub name: VmId,
    /// `state`: `absent`, `running` or `paused`.
    pub state: VmState,
}

/// What one poll found.
#[derive(Debug)]
pub(crate) struct Observed {
    pub host: HostId,
    pub result: Result<Vec<(VmId, VmState)>, String>,
}

/// Polls one host in the background; the result arrives as [`Command::Observed`].
pub(crate) fn poll(
    host: HostId,
    socket: std::path::PathBuf,
    timeout: Duration,
    tx: mpsc::Sender<Command>,
) {
    tokio::spawn(async move {
        let http = UnixHttp::new(socket, timeout);
        let result = match http.request(Method::GET, "/v1/status", None).await {
            Err(e) => Err(error_chain(&e)),
            Ok(r) if !r.status.is_success() => Err(format!("GET /v1/status answered {}", r.status)),
            Ok(r) => match serde_json::from_slice::<HostStatusLite>(&r.body) {
                Err(e) => Err(format!("GET /v1/status: unexpected body: {e}")),
                Ok(s) if s.name != host.as_str() => Err(format!(
                    "the srmigd at {} runs as host {}, expected {host}",
                    http.socket().display(),
                    s.name
                )),
                Ok(s) => Ok(s.vms.into_iter().map(|v| (v.name, v.state)).collect()),
            },
        };
        let _ = tx.send(Command::Observed(Observed { host, result })).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_srmigd_status_shape_and_ignores_the_rest() {
        let body = r#"{"name":"h2","generation":7,"ports":[],"vms":[
            {"name":"web1","state":"running","port":"vm0","local":true,"addresses":[],
             "buffer":{"packets":0,"bytes":0},"held":3}],"sids":[],"drops":{}}"#;
        let s: HostStatusLite = serde_json::from_str(body).expect("parse");
        assert_eq!(s.name, "h2");
        assert_eq!(s.vms.len(), 1);
        assert_eq!(s.vms[0].state, VmState::Running);
        assert!(serde_json::from_str::<HostStatusLite>(
            r#"{"name":"h2","vms":[{"name":"web1","state":"gone"}]}"#
        )
        .is_err());
    }
}
