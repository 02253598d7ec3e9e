//! One srmigd process of the lab: started in its host's namespace through the [`Lab`] guard
//! (so it is killed at teardown), with its node configuration, API socket and log in the run's
//! directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::control::ControlPlane;
use super::error::OrchestrateError;
use super::plan::HostPlan;
use crate::netns::Netns;
use crate::topology::Lab;

/// How long srmigd gets to answer `GET /v1/status` after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines of the log quoted in errors.
const LOG_TAIL_LINES: usize = 15;

/// How a lab srmigd is reached on the management network: its TLS files, its listener, and
/// the controller's URL it reports to.
#[derive(Debug, Clone)]
pub struct Mgmt {
    /// The run's PKI directory (`host-<name>.pem` etc.).
    pub tls_dir: PathBuf,
    /// `--listen`.
    pub listen: std::net::SocketAddr,
    /// `--controller https://..`.
    pub controller: String,
}

/// A running srmigd.
#[derive(Debug)]
pub struct Srmigd {
    host: String,
    pid: u32,
    socket: PathBuf,
    log: PathBuf,
}

impl Srmigd {
    /// Writes `node_toml` and starts `bin` in `ns` for `host`, serving its API over mutual
    /// TLS and reporting to the controller on the management network (`mgmt`), its dataplane
    /// pinned to `cpu` (`--cpus`); returns once its API answers.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        lab: &Lab,
        ns: &Netns,
        bin: &Path,
        dir: &Path,
        host: &HostPlan,
        node_toml: &str,
        control: &ControlPlane,
        mgmt: &Mgmt,
        cpu: usize,
    ) -> Result<Srmigd, OrchestrateError> {
        let config = dir.join(format!("{}.toml", host.name));
        std::fs::write(&config, node_toml).map_err(|source| OrchestrateError::File {
            action: "writing node configuration",
            path: config.clone(),
            source,
        })?;
        let socket = dir.join(format!("{}.sock", host.name));
        let log = dir.join(format!("{}.log", host.name));
        let (bin_s, config_s, socket_s, tls_s) = (
            path_str(bin)?,
            path_str(&config)?,
            path_str(&socket)?,
            path_str(&mgmt.tls_dir)?,
        );
        let listen = mgmt.listen.to_string();
        let cpu = cpu.to_string();
        let argv = [
            bin_s,
            "--config",
            config_s,
            "--api",
            socket_s,
            "--name",
            host.name,
            "--tls-dir",
            tls_s,
            "--listen",
            &listen,
            "--controller",
            &mgmt.controller,
            "--cpus",
            &cpu,
        ];
        let pid = lab.spawn(ns, &argv, Some(&log))?;
        let daemon = Srmigd {
            host: host.name.to_owned(),
            pid,
            socket,
            log,
        };
        let start = Instant::now();
        loop {
            if daemon.socket.exists() && control.srmigd_get(&daemon.socket, "/v1/status").is_ok() {
                return Ok(daemon);
            }
            if !lab.child_running(pid) {
                return Err(daemon.error("exited at startup"));
            }
            if start.elapsed() > START_TIMEOUT {
                return Err(daemon.error(&format!("did not answer within {START_TIMEOUT:?}")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The host name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Its API socket (the controller's `api_socket` for this host).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the process still runs.
    pub fn running(&self, lab: &Lab) -> bool {
        lab.child_running(self.pid)
    }

    /// `GET /v1/status` as JSON.
    pub fn status(&self, control: &ControlPlane) -> Result<serde_json::Value, OrchestrateError> {
        control
            .srmigd_get(&self.socket, "/v1/status")
            .map_err(|e| self.error(&format!("did not answer GET /v1/status ({e})")))
    }

    /// `PUT /v1/vms/{vm}/state`: what the hypervisor tells the virtual switch. Returns when
    /// srmigd applied it (`state_since_us`, wall clock), if it says.
    pub fn set_vm_state(
        &self,
        control: &ControlPlane,
        vm: &str,
        state: srmig_api::VmState,
    ) -> Result<Option<u64>, OrchestrateError> {
        let reply = control
            .srmigd_call(
                &self.socket,
                hyper::Method::PUT,
                &format!("/v1/vms/{vm}/state"),
                Some(serde_json::json!({ "state": state })),
            )
            .map_err(|e| self.error(&format!("refused the VM state {state} ({e})")))?;
        let status: srmig_api::VmStatus = serde_json::from_value(reply)
            .map_err(|e| self.error(&format!("answered the VM state {state} with ({e})")))?;
        Ok(status.state_since_us.filter(|_| status.state == state))
    }

    /// An error naming this daemon, with the end of its log.
    pub fn error(&self, what: &str) -> OrchestrateError {
        OrchestrateError::Srmigd {
            host: self.host.clone(),
            what: what.to_owned(),
            log: self.log.clone(),
            tail: log_tail(&self.log, LOG_TAIL_LINES),
        }
    }
}

fn path_str(path: &Path) -> Result<&str, OrchestrateError> {
    path.to_str()
        .ok_or_else(|| OrchestrateError::Options(format!("path {} is not UTF-8", path.display())))
}

/// The last `n` lines of a file (empty if unreadable).
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let path = std::env::temp_dir().join(format!("srmig-lab-tail-{}", std::process::id()));
        std::fs::write(&path, "a\nb\nc\nd\n").expect("write");
        assert_eq!(log_tail(&path, 2), "c\nd");
        assert_eq!(log_tail(&path, 10), "a\nb\nc\nd");
        std::fs::remove_file(&path).expect("cleanup");
        assert_eq!(log_tail(&path, 3), "");
    }
}
