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
//!
//! **Replicas** (`srmig lab migrate --store etcd --controllers N`): the lab starts etcd in the
//! management namespace (a child of the lab, data in the run's directory) and N `srmig
//! controller --store etcd --replica-id cI` processes, replica `I` with its own socket
//! (`controller-I.sock`), log and TLS port (`MGMT_PORT + I`). One leads (the only one with an
//! API); srmigd gets every replica's URL and follows the leader. The lab's requests go to the
//! replica that led last; when it does not answer, the lab finds the one that does (a
//! failover takes about the lease TTL, 1 s, plus up to 0.5 s) and sends the request there.
//! `kill-leader` faults kill whichever replica leads.

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

/// The controller (in-process, a process of its own, or several replica processes) and a
/// client of it.
#[derive(Debug)]
pub struct ControlPlane {
    runtime: tokio::runtime::Runtime,
    daemon: Option<Daemon>,
    /// The controller processes: none (in-process), one, or the replicas.
    processes: Vec<ControllerProcess>,
    /// One client per process (or the in-process daemon's), same order.
    clients: Vec<ControllerClient>,
    /// Their API sockets.
    sockets: Vec<PathBuf>,
    /// The replica believed to lead (index into `clients`).
    leader: std::sync::atomic::AtomicUsize,
    /// The lab's etcd (replicas), its pid.
    etcd: Option<(LabHandle, u32)>,
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
    /// Controller processes (1 unless replicas; more than 1 needs `etcd`).
    pub replicas: usize,
    /// Keep the state in an etcd the lab starts (else a redb file); every process is then a
    /// replica (`--replica-id cI`).
    pub etcd: bool,
}

/// The etcd client port inside the management namespace (its own loopback).
pub const ETCD_CLIENT_PORT: u16 = 2379;
/// The leadership lease TTL of lab replicas, in seconds (the lab's etcd grants 1 s: see
/// `start_etcd`).
pub const LEADER_TTL_S: u64 = 1;
/// How long a request waits for a replica to lead (a failover is about the lease TTL).
const FAILOVER_WAIT: Duration = Duration::from_secs(10);

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
            processes: Vec::new(),
            clients: vec![ControllerClient::new(&socket)],
            sockets: vec![socket],
            leader: 0.into(),
            etcd: None,
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
        let replicas = spec.replicas.max(1);
        let etcd = if spec.etcd {
            Some((lab.clone(), start_etcd(&lab, ns, dir)?))
        } else {
            None
        };
        let text = |p: &Path| p.display().to_string();
        let mut processes = Vec::new();
        let mut clients = Vec::new();
        let mut sockets = Vec::new();
        for i in 0..replicas {
            let (socket, log) = if spec.replicas > 1 {
                (
                    dir.join(format!("controller-{i}.sock")),
                    dir.join(format!("controller-{i}.log")),
                )
            } else {
                (dir.join("controller.sock"), dir.join("controller.log"))
            };
            let mut argv = vec![
                text(&spec.bin),
                "controller".to_owned(),
                "--socket".to_owned(),
                text(&socket),
                "--propagation-delay-ms".to_owned(),
                propagation_delay.as_millis().to_string(),
                // As in-process: migrations waiting for the hypervisor poll their hosts twice
                // a second in case a VM state report is lost.
                "--state-poll-ms".to_owned(),
                "500".to_owned(),
                "--tls-dir".to_owned(),
                text(&tls.dir),
                "--tls-name".to_owned(),
                "controller".to_owned(),
                "--listen".to_owned(),
                format!("0.0.0.0:{}", replica_port(i)),
            ];
            if spec.etcd {
                argv.extend([
                    "--store".to_owned(),
                    "etcd".to_owned(),
                    "--etcd-endpoints".to_owned(),
                    format!("http://127.0.0.1:{ETCD_CLIENT_PORT}"),
                    "--replica-id".to_owned(),
                    format!("c{i}"),
                    "--leader-ttl-s".to_owned(),
                    LEADER_TTL_S.to_string(),
                ]);
            } else {
                argv.extend(["--store".to_owned(), text(&dir.join("controller.redb"))]);
            }
            argv.extend(spec.extra_args.iter().cloned());
            let mut process = ControllerProcess {
                lab: lab.clone(),
                ns: ns.clone(),
                argv,
                log,
                pid: None,
            };
            let client = ControllerClient::new(&socket);
            // The first one leads; the others wait as standbys (no API to wait for).
            if i == 0 {
                process.start(&runtime, &client)?;
            } else {
                process.spawn_standby()?;
            }
            processes.push(process);
            clients.push(client);
            sockets.push(socket);
        }
        Ok(ControlPlane {
            runtime,
            daemon: None,
            processes,
            clients,
            sockets,
            leader: 0.into(),
            etcd,
        })
    }

    /// How many controller replicas run (1 unless `--controllers N`).
    pub fn replicas(&self) -> usize {
        self.clients.len()
    }

    /// Which replica leads now (the one whose API answers), if any.
    pub fn find_leader(&self) -> Option<usize> {
        let current = self.leader.load(std::sync::atomic::Ordering::Relaxed);
        let n = self.clients.len();
        (0..n).map(|k| (current + k) % n).find(|&i| {
            self.processes.get(i).is_none_or(|p| p.pid.is_some())
                && self
                    .runtime
                    .block_on(async {
                        tokio::time::timeout(Duration::from_millis(500), self.clients[i].info())
                            .await
                    })
                    .is_ok_and(|r| r.is_ok())
        })
    }

    /// Kills the replica that leads now (SIGKILL); returns its index. Errors if none leads.
    pub fn kill_leader(&mut self) -> Result<usize, OrchestrateError> {
        let start = std::time::Instant::now();
        let i = loop {
            match self.find_leader() {
                Some(i) => break i,
                None if start.elapsed() > FAILOVER_WAIT => {
                    return Err(OrchestrateError::ControllerProcess(format!(
                        "no controller replica leads after {FAILOVER_WAIT:?}"
                    )))
                }
                None => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        let process = self.processes.get_mut(i).ok_or_else(|| {
            OrchestrateError::Options("the lab's controller runs in-process".into())
        })?;
        if let Some(pid) = process.pid.take() {
            process.lab.kill_child(pid)?;
            tracing::info!(replica = i, pid, "leading controller replica killed");
        }
        Ok(i)
    }

    /// Whether the controller runs as its own process (and can be killed).
    pub fn is_process(&self) -> bool {
        !self.processes.is_empty()
    }

    /// Kills the controller process with SIGKILL (a crash); with replicas, the one that
    /// leads. Errors for an in-process controller.
    pub fn kill(&mut self) -> Result<(), OrchestrateError> {
        if self.processes.len() > 1 {
            return self.kill_leader().map(drop);
        }
        let process = self.processes.first_mut().ok_or_else(|| {
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

    /// Starts the killed controller process again (after [`kill`](Self::kill)) with the same
    /// arguments and store; returns once its API answers. With replicas, the killed ones come
    /// back as standbys (another replica leads by then), and this returns once one leads.
    pub fn start_again(&mut self) -> Result<(), OrchestrateError> {
        if self.processes.is_empty() {
            return Err(OrchestrateError::Options(
                "the lab's controller runs in-process".into(),
            ));
        }
        if self.processes.len() == 1 {
            let process = &mut self.processes[0];
            if process.pid.is_some() {
                return Ok(());
            }
            return process.start(&self.runtime, &self.clients[0]);
        }
        for p in self.processes.iter_mut().filter(|p| p.pid.is_none()) {
            p.spawn_standby()?;
        }
        Ok(())
    }

    /// Whether the controller process is alive (always true in-process); with replicas,
    /// whether one leads.
    pub fn running(&self) -> bool {
        match self.processes.len() {
            0 => true,
            1 => self.processes[0]
                .pid
                .is_some_and(|pid| self.processes[0].lab.child_running(pid)),
            _ => self.find_leader().is_some(),
        }
    }

    /// The API socket of the controller (with replicas: of the one believed to lead).
    pub fn socket(&self) -> &Path {
        let i = self.leader.load(std::sync::atomic::Ordering::Relaxed);
        &self.sockets[i.min(self.sockets.len() - 1)]
    }

    /// One request to the controller; with replicas, to the one that leads (see the module
    /// docs: when the replica that led does not answer, the request waits up to
    /// [`FAILOVER_WAIT`] for another to lead, and goes there).
    fn call<T, F, Fut>(&self, request: impl Into<String>, f: F) -> Result<T, OrchestrateError>
    where
        F: Fn(ControllerClient) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        use std::sync::atomic::Ordering;
        let current = self.leader.load(Ordering::Relaxed);
        let result = self.runtime.block_on(f(self.clients[current].clone()));
        let unreachable = matches!(result, Err(ClientError::Http(_)));
        if self.clients.len() < 2 || !unreachable {
            return result.map_err(OrchestrateError::controller(request));
        }
        let start = std::time::Instant::now();
        loop {
            if let Some(i) = self.find_leader() {
                if i != current {
                    tracing::info!(replica = i, "controller replica leads now");
                }
                self.leader.store(i, Ordering::Relaxed);
                return self
                    .runtime
                    .block_on(f(self.clients[i].clone()))
                    .map_err(OrchestrateError::controller(request));
            }
            if start.elapsed() > FAILOVER_WAIT {
                return result.map_err(OrchestrateError::controller(request));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `POST /v1/hosts`.
    pub fn add_host(&self, reg: &HostRegistration) -> Result<HostView, OrchestrateError> {
        self.call(
            format!("POST /v1/hosts {}", reg.info.name),
            |c| async move { c.add_host(reg).await },
        )
    }

    /// `GET /v1/hosts`.
    pub fn hosts(&self) -> Result<Vec<HostView>, OrchestrateError> {
        self.call("GET /v1/hosts", |c| async move { c.hosts().await })
    }

    /// `POST /v1/vms`.
    pub fn add_vm(&self, vm: &VmInfo) -> Result<VmView, OrchestrateError> {
        self.call(format!("POST /v1/vms {}", vm.name), |c| async move {
            c.add_vm(vm).await
        })
    }

    /// `POST /v1/migrations`.
    pub fn migrate(&self, req: &MigrateRequest) -> Result<MigrationStatus, OrchestrateError> {
        self.call(
            format!(
                "POST /v1/migrations {} to {} ({})",
                req.vm, req.to, req.strategy
            ),
            |c| async move { c.migrate(req).await },
        )
    }

    /// `GET /v1/migrations/{id}`.
    pub fn migration(&self, id: MigrationId) -> Result<MigrationStatus, OrchestrateError> {
        self.call(format!("GET /v1/migrations/{}", id.0), |c| async move {
            c.migration(id).await
        })
    }

    /// `GET /v1/migrations`.
    pub fn migrations(&self) -> Result<Vec<MigrationStatus>, OrchestrateError> {
        self.call("GET /v1/migrations".to_owned(), |c| async move {
            c.migrations().await
        })
    }

    /// `POST /v1/migrations/{id}/cancel`.
    pub fn cancel(&self, id: MigrationId) -> Result<MigrationStatus, OrchestrateError> {
        self.call(
            format!("POST /v1/migrations/{}/cancel", id.0),
            |c| async move { c.cancel(id).await },
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
            |c| async move { c.hypervisor(id, post).await },
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
        for process in &mut self.processes {
            if let Some(pid) = process.pid.take() {
                // SIGTERM: the daemon removes its socket on the way out.
                if let Err(e) = process.lab.stop_child(pid) {
                    tracing::debug!(pid, error = %e, "controller process already gone");
                }
            }
        }
        if let Some((lab, pid)) = self.etcd.take() {
            if let Err(e) = lab.stop_child(pid) {
                tracing::debug!(pid, error = %e, "etcd already gone");
            }
        }
    }
}

/// The TLS port of replica `i` (`MGMT_PORT + i`).
pub fn replica_port(i: usize) -> u16 {
    super::plan::MGMT_PORT + u16::try_from(i).unwrap_or(0)
}

/// Starts the lab's etcd in `ns` (loopback, data in `dir/etcd`) and waits until it listens.
fn start_etcd(lab: &LabHandle, ns: &Netns, dir: &Path) -> Result<u32, OrchestrateError> {
    let data = dir.join("etcd");
    let client = format!("http://127.0.0.1:{ETCD_CLIENT_PORT}");
    let peer = format!("http://127.0.0.1:{}", ETCD_CLIENT_PORT + 1);
    let argv = [
        "etcd".to_owned(),
        "--name=lab".to_owned(),
        format!("--data-dir={}", data.display()),
        format!("--listen-client-urls={client}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster=lab={peer}"),
        // etcd grants a lease at least 1.5 x its election timeout, in whole seconds: 2 s with
        // the default 1 s. With 500 ms (one member on loopback: nothing to elect) the
        // replicas' 1 s leadership lease is granted as asked.
        "--heartbeat-interval=100".to_owned(),
        "--election-timeout=500".to_owned(),
    ];
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let log = dir.join("etcd.log");
    let pid = lab.spawn(ns, &argv, Some(&log))?;
    let start = std::time::Instant::now();
    loop {
        let up = ns
            .run(|| {
                std::net::TcpStream::connect_timeout(
                    &std::net::SocketAddr::from(([127, 0, 0, 1], ETCD_CLIENT_PORT)),
                    Duration::from_millis(200),
                )
                .is_ok()
            })
            .unwrap_or(false);
        if up {
            return Ok(pid);
        }
        if !lab.child_running(pid) || start.elapsed() > PROCESS_START_TIMEOUT {
            return Err(OrchestrateError::ControllerProcess(format!(
                "etcd did not start (is the etcd-server package installed?); its log ({}) \
                 ends with:\n{}",
                log.display(),
                log_tail(&log)
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl ControllerProcess {
    /// Spawns a replica that waits as a standby (no API to wait for); fails only if it
    /// cannot be spawned.
    fn spawn_standby(&mut self) -> Result<(), OrchestrateError> {
        let argv: Vec<&str> = self.argv.iter().map(String::as_str).collect();
        self.pid = Some(self.lab.spawn(&self.ns, &argv, Some(&self.log))?);
        Ok(())
    }

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
