//! Starting and stopping the controller daemon.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use srmig_control::{Controller, ControllerConfig, Timeouts};
use srmig_tls::local::{CheckedListener, LocalSocketError, PeerPolicy};
use srmig_tls::{Role, TlsFiles};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::api;
use crate::driver::{External, HypervisorDriver};
use crate::engine::{now, Engine};
use crate::mailbox::Command;
use crate::push::{PushSettings, Pushers};
use crate::store::{Store, StoreError, StoreSpec};
use crate::types::ControllerInfo;

/// Default API socket of the controller.
pub const DEFAULT_SOCKET: &str = "/run/srmig/controller.sock";
/// Default store file.
pub const DEFAULT_STORE: &str = "/var/lib/srmig/controller.redb";

/// Daemon settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the API listens.
    pub socket: PathBuf,
    /// The store: the embedded redb file (default) or etcd.
    pub store: StoreSpec,
    /// Push delivery settings (propagation delay, timeouts, backoff).
    pub push: PushSettings,
    /// The core's phase time limits.
    pub timeouts: Timeouts,
    /// How many finished migrations to remember.
    pub finished_history: usize,
    /// Who runs the migrations on the hypervisor.
    pub driver: Arc<dyn HypervisorDriver>,
    /// How often the source and destination of a migration waiting for its hypervisor are
    /// polled (`GET /v1/status`) for VM states, in case a report was lost.
    pub state_poll: Duration,
    /// How often every host is polled (`GET /v1/status`) for its boot epoch and config
    /// version: a restarted srmigd gets its config back within this time (plus a push).
    pub host_poll: Duration,
    /// The group of the API socket (mode 0660; default: the daemon's own group).
    pub socket_group: Option<String>,
    /// The controller's TLS identity: to reach hosts registered with an `api_address`, and
    /// to serve its API over mutual TLS.
    pub tls: Option<ControllerTls>,
}

/// The controller's TLS identity and listener.
#[derive(Debug, Clone)]
pub struct ControllerTls {
    /// CA, certificate and key (`srmig pki issue --role controller`).
    pub files: TlsFiles,
    /// Where to serve the API over mutual TLS (srmigd's VM state reports, remote CLIs), if
    /// anywhere. Hosts may only `POST /v1/vm-state` about themselves; clients and
    /// controllers may do everything.
    pub listen: Option<SocketAddr>,
}

impl Options {
    /// Defaults with the given socket and store (external hypervisor, no propagation delay).
    pub fn new(socket: impl Into<PathBuf>, store: impl Into<PathBuf>) -> Self {
        Options {
            socket: socket.into(),
            store: StoreSpec::Embedded(store.into()),
            push: PushSettings::default(),
            timeouts: Timeouts::default(),
            finished_history: ControllerConfig::default().finished_history,
            driver: Arc::new(External),
            state_poll: Duration::from_secs(1),
            host_poll: Duration::from_secs(2),
            socket_group: None,
            tls: None,
        }
    }
}

/// Why the daemon could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The store could not be opened or read.
    #[error("cannot open the store")]
    Store(#[from] StoreError),
    /// The API socket could not be created (in use, not a socket, unknown group, I/O).
    #[error(transparent)]
    Socket(#[from] LocalSocketError),
    /// The TLS identity could not be loaded.
    #[error("cannot load the controller's TLS identity")]
    Tls(#[from] srmig_tls::ConfigError),
    /// The TLS listener could not be bound.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The async runtime could not be built.
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    /// Installing signal handlers failed.
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
    /// The HTTP server failed.
    #[error("the API server failed")]
    Serve(#[source] std::io::Error),
    /// A daemon task panicked or was aborted.
    #[error("a controller task ended abnormally")]
    Task(#[source] tokio::task::JoinError),
    /// This replica lost its leadership (etcd lease not kept alive): it stopped acting; a
    /// supervisor starts it again as a standby.
    #[error("lost the leadership of the controller replicas (etcd lease expired or unreachable)")]
    LeadershipLost,
}

/// A running controller: API server plus engine.
#[derive(Debug)]
pub struct Daemon {
    socket: PathBuf,
    commands: mpsc::Sender<Command>,
    stop_server: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
    stop_tls: Option<oneshot::Sender<()>>,
    tls_server: Option<JoinHandle<()>>,
    tls_addr: Option<SocketAddr>,
    engine: JoinHandle<()>,
    leadership_lost: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl Daemon {
    /// Opens the store (restoring what it holds: migrations in progress resume or roll back),
    /// binds the API socket and starts serving. Must be called inside a tokio runtime.
    pub async fn start(options: Options) -> Result<Daemon, DaemonError> {
        // Opening may wait (a standby replica campaigns until it leads): off the runtime.
        let spec = options.store.clone();
        let (store, loaded) = tokio::task::spawn_blocking(move || Store::open_spec(&spec))
            .await
            .map_err(DaemonError::Task)??;
        let leadership_lost = store.leadership_lost();
        let config = ControllerConfig {
            timeouts: options.timeouts,
            finished_history: options.finished_history,
        };
        let (core, registrations, restored) = match loaded {
            Some(l) => {
                let migrations = l.snapshot.migrations.len();
                tracing::info!(
                    store = %options.store.describe(),
                    hosts = l.hosts.len(),
                    migrations_in_progress = migrations,
                    "restoring the controller state"
                );
                (
                    Controller::restore(now(), config, l.snapshot),
                    l.hosts,
                    true,
                )
            }
            None => {
                // A new store: a newer epoch than any store before it, so hosts holding an
                // older controller's configs accept this one's at once.
                let epoch = now().0;
                tracing::info!(store = %options.store.describe(), epoch, "new store");
                (Controller::with_epoch(config, epoch), Vec::new(), false)
            }
        };
        let gid = options
            .socket_group
            .as_deref()
            .map(srmig_tls::local::group_id)
            .transpose()?;
        let tls_client = match &options.tls {
            Some(t) => Some(srmig_tls::HttpsClient::new(srmig_tls::client_config(
                &t.files,
            )?)),
            None => None,
        };
        let tls_server = match options.tls.as_ref().and_then(|t| t.listen.map(|a| (t, a))) {
            Some((t, addr)) => {
                let cfg = srmig_tls::server_config(
                    &t.files,
                    &[Role::Host, Role::Client, Role::Controller],
                )?;
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| DaemonError::Listen { addr, source })?;
                let bound = l.local_addr().unwrap_or(addr);
                Some((l, cfg, bound))
            }
            None => None,
        };
        let listener = srmig_tls::local::bind(&options.socket, gid).await?;
        let listener = CheckedListener::new(listener, PeerPolicy::for_this_process(gid));
        let (tx, rx) = mpsc::channel(1024);
        let pushers = Pushers::new(options.push, tx.clone(), tls_client);
        let mut engine = Engine::new(
            core,
            store,
            registrations,
            pushers,
            options.driver.clone(),
            tx.clone(),
            (options.state_poll, options.host_poll),
        );
        if restored {
            engine.resume();
        }
        let metrics = engine.metrics();
        let engine = tokio::spawn(engine.run(rx));
        let (stop_server, stopped) = oneshot::channel::<()>();
        let info = ControllerInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            driver: options.driver.name().to_owned(),
            driver_waits_for: options.driver.waits_for().to_owned(),
            ack_timeout_ms: options.timeouts.ack_ms,
            hypervisor_timeout_ms: options.timeouts.hypervisor_ms,
            cancel_grace_ms: options.timeouts.cancel_grace_ms,
        };
        let app = api::router(tx.clone(), metrics.clone(), info.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        let (stop_tls, tls_server, tls_addr) = match tls_server {
            Some((l, cfg, addr)) => {
                let (stop, stopped) = oneshot::channel::<()>();
                let app = api::router(tx.clone(), metrics, info)
                    .layer(axum::middleware::from_fn(api::authorize));
                let task = tokio::spawn(srmig_tls::serve(
                    l,
                    cfg,
                    app,
                    srmig_tls::ServeOptions::default(),
                    async {
                        let _ = stopped.await;
                    },
                ));
                tracing::info!(%addr, "controller API on mutual TLS");
                (Some(stop), Some(task), Some(addr))
            }
            None => (None, None, None),
        };
        tracing::info!(socket = %options.socket.display(), store = %options.store.describe(), "controller listening");
        Ok(Daemon {
            socket: options.socket,
            commands: tx,
            stop_server: Some(stop_server),
            server,
            stop_tls,
            tls_server,
            tls_addr,
            engine,
            leadership_lost,
        })
    }

    /// Resolves when this replica has lost its leadership (never for a single controller).
    pub async fn leadership_lost(&self) {
        match &self.leadership_lost {
            Some(flag) => {
                while !flag.load(std::sync::atomic::Ordering::Acquire) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            None => std::future::pending().await,
        }
    }

    /// The API socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The address the mutual-TLS API listens on, if it does.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// Stops serving, stops the engine (closing the store) and removes the socket file.
    pub async fn shutdown(mut self) -> Result<(), DaemonError> {
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
        }
        if let Some(stop) = self.stop_tls.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.tls_server.as_mut() {
            let _ = t.await;
        }
        let served = (&mut self.server).await;
        let _ = self.commands.send(Command::Shutdown).await;
        let engine = (&mut self.engine).await;
        let _ = std::fs::remove_file(&self.socket);
        served
            .map_err(DaemonError::Task)?
            .map_err(DaemonError::Serve)?;
        engine.map_err(DaemonError::Task)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A daemon dropped without `shutdown` stops its tasks anyway.
        self.server.abort();
        if let Some(t) = &self.tls_server {
            t.abort();
        }
        self.engine.abort();
    }
}

/// Runs the daemon until SIGINT or SIGTERM, on its own multi-threaded runtime.
pub fn run_blocking(options: Options) -> Result<(), DaemonError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    runtime.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
        let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
        let daemon = tokio::select! {
            d = Daemon::start(options) => d?,
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
        };
        let lost = tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); false }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); false }
            _ = daemon.leadership_lost() => {
                tracing::error!("leadership lost: this replica stops acting now");
                true
            }
        };
        daemon.shutdown().await?;
        if lost {
            return Err(DaemonError::LeadershipLost);
        }
        Ok(())
    })?;
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}
