//! Learning VM states and host epochs by polling srmigd's `GET /v1/status`.
//!
//! srmigd reports VM state changes with `POST /v1/vm-state`, but gives up on a report after a
//! few attempts, and reports nothing to a controller that is down. The switchover (the
//! destination reporting the VM running) must not be missed, so the engine also polls:
//! every host once after a restore, and the source and destination of every migration
//! waiting for its hypervisor, periodically. A poll's result goes through the same
//! `handle_vm_state` path as a report.
//!
//! Every host is also polled every `host_poll` (a heartbeat): its boot epoch and the config
//! version in force go to the core's `handle_host_status`, so a restarted srmigd gets its
//! config back, and a lost acknowledgement is made up for, even with no report and no
//! migration.

use hyper::Method;
use srmig_api::{HostId, HostStatus, VmId, VmState};
use srmig_control::HostObservation;
use tokio::sync::mpsc;

use crate::http::PeerHttp;
use crate::mailbox::Command;
use crate::push::error_chain;

/// What one poll found.
#[derive(Debug)]
pub(crate) struct Observed {
    pub host: HostId,
    pub result: Result<Reading, String>,
}

/// What a host's status says: its VM states, boot epoch and config version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reading {
    pub states: Vec<(VmId, VmState)>,
    pub observation: HostObservation,
}

/// Polls one host in the background; the result arrives as [`Command::Observed`].
pub(crate) fn poll(host: HostId, http: PeerHttp, tx: mpsc::Sender<Command>) {
    tokio::spawn(async move {
        let result = match http.request(Method::GET, "/v1/status", None).await {
            Err(e) => Err(error_chain(&e)),
            Ok(r) if !r.status.is_success() => Err(format!("GET /v1/status answered {}", r.status)),
            Ok(r) => read_status(&host, &r.body)
                .map_err(|e| format!("GET /v1/status at {}: {e}", http.target())),
        };
        let _ = tx.send(Command::Observed(Observed { host, result })).await;
    });
}

/// The VM states, boot epoch and config version in a `GET /v1/status` body from the srmigd
/// of `host`.
fn read_status(host: &HostId, body: &[u8]) -> Result<Reading, String> {
    let s: HostStatus =
        serde_json::from_slice(body).map_err(|e| format!("unexpected body: {e}"))?;
    if s.name != host.as_str() {
        return Err(format!("srmigd runs as host {}, expected {host}", s.name));
    }
    let states = s
        .vms
        .into_iter()
        .map(|v| {
            VmId::new(v.name.clone())
                .map(|id| (id, v.state))
                .map_err(|e| format!("VM name {:?}: {e}", v.name))
        })
        .collect::<Result<_, _>>()?;
    Ok(Reading {
        states,
        observation: HostObservation {
            boot_epoch: s.boot_epoch,
            in_force: s.generation.map(|g| (s.epoch.unwrap_or(0), g)),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_vm_states_of_the_right_host() {
        let vm = |name: &str, state| srmig_api::VmStatus {
            name: name.into(),
            state,
            port: "vm0".into(),
            local: Some(true),
            addresses: vec![],
            buffer: Default::default(),
            rx: Default::default(),
            tx: Default::default(),
            held: 3,
            released: 0,
            expired: 0,
            dropped: 0,
            fenced: 0,
            state_since_us: None,
        };
        let status = HostStatus {
            name: "h2".into(),
            boot_epoch: 42,
            epoch: Some(5),
            generation: Some(7),
            ports: vec![],
            vms: vec![vm("web1", VmState::Running), vm("db1", VmState::Paused)],
            sids: vec![],
            policies: vec![],
            buffer: Default::default(),
            drops: Default::default(),
            icmp: Default::default(),
            holds: Default::default(),
            fence: Default::default(),
            release_latency: Default::default(),
        };
        let body = serde_json::to_vec(&status).expect("json");
        let h2 = HostId::new("h2").expect("name");
        let got = read_status(&h2, &body).expect("states");
        assert_eq!(
            got.observation,
            HostObservation {
                boot_epoch: 42,
                in_force: Some((5, 7))
            }
        );
        assert_eq!(
            got.states,
            vec![
                (VmId::new("web1").expect("vm"), VmState::Running),
                (VmId::new("db1").expect("vm"), VmState::Paused)
            ]
        );
        let h3 = HostId::new("h3").expect("name");
        let e = read_status(&h3, &body).expect_err("other host");
        assert!(e.contains("runs as host h2, expected h3"), "{e}");
        let e = read_status(
            &h2,
            br#"{"name":"h2","vms":[{"name":"web1","state":"gone"}]}"#,
        )
        .expect_err("bad");
        assert!(e.starts_with("unexpected body"), "{e}");
    }
}
