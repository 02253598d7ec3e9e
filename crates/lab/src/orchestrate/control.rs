//! The control plane of a lab run: the real controller daemon (`srmig-controller`) on a unix
//! socket in the run's directory, and blocking wrappers around its typed client and around
//! srmigd's status endpoint.
//!
//! The controller runs either inside the lab process, on its own tokio runtime
//! ([`ControlPlane::start_with`]: the lab then needs one binary besides itself, srmigd), or as
//! its own `srmig controller` process in the management namespace
//! ([`ControlPlane::start_process`]), which the lab can SIGKILL and start again (fault
//! injection, `srmig lab migrate --fault`). It is the same daemon code and the same
//! unix-socket HTTP API either way; srmigd reports VM states to it over mutual TLS.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use srmig_api::{MigrateRequest, MigrationId, MigrationStatus, VmInfo};
use srmig_controller::http::UnixHttp;
use srmig_controller::{
    ClientError, ControllerClient, Daemon, HostRegistration, HostView, HypervisorDriver,
    HypervisorPost, Options, VmView,
};

use super::error::OrchestrateError;
use crate::netns::Netns;
use crate::topology::LabHandle;

/// How long a controller process gets to answer its API after it was started.
const PROCESS_START_TIMEOUT: Duration = Duration::from_secs(15);

/// The controller (in-process or a process of its own) and a client of it.
#[derive(Debug)]
pub struct ControlPlane {
    runtime: tokio::runtime::Runtime,
    daemon: Option<Daemon>,
    process: Option<ControllerProcess>,
    client: ControllerClient,
    socket: PathBuf,
}

/// A `srmig controller` process of the lab (see [`ControlPlane::start_process`]).
#[derive(Debug)]
struct ControllerProcess {
    lab: LabHandle,
    ns: Netns,
    argv: Vec<String>,
    log: PathBuf,
    /// `None` while killed.
    pid: Option<u32>,
}

/// How the lab starts a `srmig controller` process.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// The `srmig` binary.
    pub bin: PathBuf,
    /// Arguments after the ones the lab sets itself (`--socket`, `--store`, TLS,
    /// `--propagation-delay-ms`, polls): e.g. `--hypervisor qmp ...`.
    pub extra_args: Vec<String>,
}

impl ControlPlane {
    /// Starts the controller with its socket and store in `dir`; every config push is held
    /// `propagation_delay` (the paper's slow mapping update).
    ///
    /// Call from a thread in the root network namespace: the runtime's worker threads are
    /// created here and inherit it.
    pub fn start(
        dir: &Path,
        propagation_delay: Duration,
    ) -> Result<ControlPlane, OrchestrateError> {
        ControlPlane::start_with(dir, propagation_delay, None, None)
    }

    /// [`start`](Self::start) with a hypervisor driver (default: the external driver, to
    /// which the lab posts the emulated hypervisor's events) and a TLS identity (hosts are
    /// then reached over the management network, and srmigd reports there: the API listens
    /// on port [`MGMT_PORT`](super::plan::MGMT_PORT) of every address of the calling
    /// thread's namespace).
    pub(crate) fn start_with(
        dir: &Path,
        propagation_delay: Duration,
        driver: Option<Arc<dyn HypervisorDriver>>,
        tls: Option<&super::testbed::LabPki>,
    ) -> Result<ControlPlane, OrchestrateError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("srmig-lab-controller")
            .enable_all()
            .build()
            .map_err(OrchestrateError::Runtime)?;
        let socket = dir.join("controller.sock");
        let mut options = Options::new(&socket, dir.join("controller.redb"));
        options.push.propagation_delay = propagation_delay;
        if let Some(driver) = driver {
            options.driver = driver;
        }
        // Migrations waiting for the (emulated) hypervisor are also polled a bit faster than
        // the default, in case a VM state report is lost.
        options.state_poll = Duration::from_millis(500);
        options.tls = tls.map(|t| srmig_controller::ControllerTls {
            files: t.controller.clone(),
            listen: Some(std::net::SocketAddr::from((
                std::net::Ipv4Addr::UNSPECIFIED,
                super::plan::MGMT_PORT,
            ))),
        });
        // Started on a worker thread: the listener and every connection are made in the
        // workers' network namespace.
        let daemon = runtime
            .block_on(runtime.spawn(Daemon::start(options)))
            .map_err(|e| OrchestrateError::Options(format!("controller start task: {e}")))?
            .map_err(OrchestrateError::ControllerStart)?;
        Ok(ControlPlane {
            runtime,
            daemon: Some(daemon),
            process: None,
            client: ControllerClient::new(&socket),
            socket,
        })
    }

    /// Starts the controller as its own `srmig controller` process in `ns` (a child of the
    /// lab: killed at teardown), with its socket, store and log (`controller.log`) in `dir`,
    /// its API also over mutual TLS on port [`MGMT_PORT`](super::plan::MGMT_PORT); returns
    /// once its API answers.
    pub(crate) fn start_process(
        lab: LabHandle,
        ns: &Netns,
        dir: &Path,
        propagation_delay: Duration,
        tls: &super::testbed::LabPki,
        spec: &ProcessSpec,
    ) -> Result<ControlPlane, OrchestrateError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("srmig-lab-client")
            .enable_all()
            .build()
            .map_err(OrchestrateError::Runtime)?;
        let socket = dir.join("controller.sock");
        let text = |p: &Path| p.display().to_string();
        let mut argv = vec![
            text(&spec.bin),
            "controller".to_owned(),
            "--socket".to_owned(),
            text(&socket),
            "--store".to_owned(),
            text(&dir.join("controller.redb")),
            "--propagation-delay-ms".to_owned(),
            propagation_delay.as_millis().to_string(),
            // As in-process: migrations waiting for the hypervisor poll their hosts twice a
            // second in case a VM state report is lost.
            "--state-poll-ms".to_owned(),
            "500".to_owned(),
            "--tls-dir".to_owned(),
            text(&tls.dir),
            "--tls-name".to_owned(),
            "controller".to_owned(),
            "--listen".to_owned(),
            format!("0.0.0.0:{}", super::plan::MGMT_PORT),
        ];
        argv.extend(spec.extra_args.iter().cloned());
        let mut process = ControllerProcess {
            lab,
            ns: ns.clone(),
            argv,
            log: dir.join("controller.log"),
            pid: None,
        };
        let client = ControllerClient::new(&socket);
        process.start(&runtime, &client)?;
        Ok(ControlPlane {
            runtime,
            daemon: None,
            process: Some(process),
            client,
            socket,
        })
    }

    /// Whether the controller runs as its own process (and can be killed).
    pub fn is_process(&self) -> bool {
        self.process.is_some()
    }

    /// Kills the controller process with SIGKILL (a crash). Errors for an in-process
    /// controller.
    pub fn kill(&mut self) -> Result<(), OrchestrateError> {
        let process = self.process.as_mut().ok_or_else(|| {
            OrchestrateError::Options(
                "the lab's controller runs in-process; it cannot be killed".into(),
            )
        })?;
        if let Some(pid) = process.pid.take() {
            process.lab.kill_child(pid)?;
            tracing::info!(pid, "controller killed");
        }
        Ok(())
    }

    /// Starts the controller process again (after [`kill`](Self::kill)) with the same
    /// arguments and store; returns once its API answers.
    pub fn start_again(&mut self) -> Result<(), OrchestrateError> {
        let process = self.process.as_mut().ok_or_else(|| {
            OrchestrateError::Options("the lab's controller runs in-process".into())
        })?;
        if process.pid.is_some() {
            return Ok(());
        }
        process.start(&self.runtime, &self.client)
    }

    /// Whether the controller process is alive (always true in-process).
    pub fn running(&self) -> bool {
        self.process
            .as_ref()
            .is_none_or(|p| p.pid.is_some_and(|pid| p.lab.child_running(pid)))
    }

    /// The controller's API socket (srmigd's `--controller`).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn call<T>(
        &self,
        request: impl Into<String>,
        f: impl std::future::Future<Output = Result<T, ClientError>>,
    ) -> Result<T, OrchestrateError> {
        self.runtime
            .block_on(f)
            .map_err(OrchestrateError::controller(request))
    }

    /// `POST /v1/hosts`.
    pub fn add_host(&self, reg: &HostRegistration) -> Result<HostView, OrchestrateError> {
        self.call(
            format!("POST /v1/hosts {}", reg.info.name),
            self.client.add_host(reg),
        )
    }

    /// `GET /v1/hosts`.
    pub fn hosts(&self) -> Result<Vec<HostView>, OrchestrateError> {
        self.call("GET /v1/hosts", self.client.hosts())
    }

    /// `POST /v1/vms`.
    pub fn add_vm(&self, vm: &VmInfo) -> Result<VmView, OrchestrateError> {
        self.call(format!("POST /v1/vms {}", vm.name), self.client.add_vm(vm))
    }

    /// `POST /v1/migrations`.
    pub fn migrate(&self, req: &MigrateRequest) -> Result<MigrationStatus, OrchestrateError> {
        self.call(
            format!(
                "POST /v1/migrations {} to {} ({})",
                req.vm, req.to, req.strategy
            ),
            self.client.migrate(req),
        )
    }

    /// `GET /v1/migrations/{id}`.
    pub fn migration(&self, id: MigrationId) -> Result<MigrationStatus, OrchestrateError> {
        self.call(
            format!("GET /v1/migrations/{}", id.0),
            self.client.migration(id),
        )
    }

    /// `POST /v1/migrations/{id}/cancel`.
    pub fn cancel(&self, id: MigrationId) -> Result<MigrationStatus, OrchestrateError> {
        self.call(
            format!("POST /v1/migrations/{}/cancel", id.0),
            self.client.cancel(id),
        )
    }

    /// `POST /v1/migrations/{id}/hypervisor`.
    pub fn hypervisor(
        &self,
        id: MigrationId,
        post: &HypervisorPost,
    ) -> Result<MigrationStatus, OrchestrateError> {
        self.call(
            format!("POST /v1/migrations/{}/hypervisor", id.0),
            self.client.hypervisor(id, post),
        )
    }

    /// `GET path` on a srmigd API socket; the JSON body of a 200 answer.
    pub fn srmigd_get(&self, socket: &Path, path: &str) -> Result<serde_json::Value, String> {
        self.srmigd_call(socket, Method::GET, path, None)
    }

    /// One request to a srmigd API socket; the JSON body of a 2xx answer (`null` if empty).
    pub fn srmigd_call(
        &self,
        socket: &Path,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, String> {
        let http = UnixHttp::new(socket, Duration::from_secs(2));
        let body = body.map(|b| b.to_string().into_bytes());
        let response = self
            .runtime
            .block_on(http.request(method.clone(), path, body))
            .map_err(|e| error_chain(&e))?;
        if !response.status.is_success() {
            return Err(format!(
                "{method} {path}: {}: {}",
                response.status,
                String::from_utf8_lossy(&response.body)
            ));
        }
        if response.body.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&response.body)
            .map_err(|e| format!("{method} {path}: not JSON: {e}"))
    }

    /// Stops the controller and removes its socket.
    pub fn shutdown(&mut self) {
        if let Some(daemon) = self.daemon.take() {
            if let Err(e) = self.runtime.block_on(daemon.shutdown()) {
                tracing::warn!(error = %error_chain(&e), "controller shutdown");
            }
        }
        if let Some(process) = self.process.as_mut() {
            if let Some(pid) = process.pid.take() {
                // SIGTERM: the daemon removes its socket on the way out.
                if let Err(e) = process.lab.stop_child(pid) {
                    tracing::debug!(pid, error = %e, "controller process already gone");
                }
            }
        }
    }
}

impl ControllerProcess {
    /// Spawns the process and waits until `client` gets an answer from it.
    fn start(
        &mut self,
        runtime: &tokio::runtime::Runtime,
        client: &ControllerClient,
    ) -> Result<(), OrchestrateError> {
        let argv: Vec<&str> = self.argv.iter().map(String::as_str).collect();
        let pid = self.lab.spawn(&self.ns, &argv, Some(&self.log))?;
        self.pid = Some(pid);
        let start = std::time::Instant::now();
        loop {
            if runtime.block_on(client.hosts()).is_ok() {
                tracing::info!(
                    pid,
                    after_ms = start.elapsed().as_millis() as u64,
                    "controller process answers"
                );
                return Ok(());
            }
            if !self.lab.child_running(pid) {
                self.pid = None;
                return Err(OrchestrateError::ControllerProcess(format!(
                    "srmig controller exited at startup; its log ({}) ends with:\n{}",
                    self.log.display(),
                    log_tail(&self.log)
                )));
            }
            if start.elapsed() > PROCESS_START_TIMEOUT {
                return Err(OrchestrateError::ControllerProcess(format!(
                    "srmig controller did not answer on its socket within \
                     {PROCESS_START_TIMEOUT:?}; its log ({}) ends with:\n{}",
                    self.log.display(),
                    log_tail(&self.log)
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The last lines of a log file (empty if unreadable).
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// `error: cause: cause` on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn error_chain_joins_causes() {
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(error_chain(&e), "outer: inner");
    }

    #[test]
    fn controller_starts_answers_and_stops() {
        let dir = std::env::temp_dir().join(format!("srmig-lab-cp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let mut cp = ControlPlane::start(&dir, Duration::ZERO).expect("start");
        assert!(cp.socket().exists());
        assert!(cp.hosts().expect("hosts").is_empty());
        let err = cp
            .migration(MigrationId(42))
            .expect_err("no such migration");
        assert!(error_chain(&err).contains("/v1/migrations/42"), "{err}");
        cp.shutdown();
        assert!(!cp.socket().exists());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
