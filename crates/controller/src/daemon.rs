//! Starting and stopping the controller daemon.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use srmig_control::{Controller, ControllerConfig, Timeouts};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::api;
use crate::driver::{External, HypervisorDriver};
use crate::engine::{now, Engine};
use crate::mailbox::Command;
use crate::push::{PushSettings, Pushers};
use crate::store::{Store, StoreError};

/// Default API socket of the controller.
pub const DEFAULT_SOCKET: &str = "/run/srmig/controller.sock";
/// Default store file.
pub const DEFAULT_STORE: &str = "/var/lib/srmig/controller.redb";

/// Daemon settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the API listens.
    pub socket: PathBuf,
    /// The redb store file.
    pub store: PathBuf,
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
}

impl Options {
    /// Defaults with the given socket and store (external hypervisor, no propagation delay).
    pub fn new(socket: impl Into<PathBuf>, store: impl Into<PathBuf>) -> Self {
        Options {
            socket: socket.into(),
            store: store.into(),
            push: PushSettings::default(),
            timeouts: Timeouts::default(),
            finished_history: ControllerConfig::default().finished_history,
            driver: Arc::new(External),
            state_poll: Duration::from_secs(1),
            host_poll: Duration::from_secs(2),
        }
    }
}

/// Why the daemon could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The store could not be opened or read.
    #[error("cannot open the store")]
    Store(#[from] StoreError),
    /// Another process serves the socket.
    #[error("{0} is already served by a running process")]
    SocketInUse(PathBuf),
    /// The socket path exists and is not a socket.
    #[error("{0} exists and is not a unix socket")]
    NotASocket(PathBuf),
    /// Binding or preparing the socket failed.
    #[error("cannot listen on {path}")]
    Bind {
        /// The socket path.
        path: PathBuf,
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
}

/// A running controller: API server plus engine.
#[derive(Debug)]
pub struct Daemon {
    socket: PathBuf,
    commands: mpsc::Sender<Command>,
    stop_server: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
    engine: JoinHandle<()>,
}

impl Daemon {
    /// Opens the store (restoring what it holds: migrations in progress resume or roll back),
    /// binds the API socket and starts serving. Must be called inside a tokio runtime.
    pub async fn start(options: Options) -> Result<Daemon, DaemonError> {
        let (store, loaded) = Store::open(&options.store)?;
        let config = ControllerConfig {
            timeouts: options.timeouts,
            finished_history: options.finished_history,
        };
        let (core, registrations, restored) = match loaded {
            Some(l) => {
                let migrations = l.snapshot.migrations.len();
                tracing::info!(
                    store = %options.store.display(),
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
                tracing::info!(store = %options.store.display(), epoch, "new store");
                (Controller::with_epoch(config, epoch), Vec::new(), false)
            }
        };
        let listener = bind(&options.socket).await?;
        let (tx, rx) = mpsc::channel(1024);
        let pushers = Pushers::new(options.push, tx.clone());
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
        let engine = tokio::spawn(engine.run(rx));
        let (stop_server, stopped) = oneshot::channel::<()>();
        let app = api::router(tx.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        tracing::info!(socket = %options.socket.display(), store = %options.store.display(), "controller listening");
        Ok(Daemon {
            socket: options.socket,
            commands: tx,
            stop_server: Some(stop_server),
            server,
            engine,
        })
    }

    /// The API socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Stops serving, stops the engine (closing the store) and removes the socket file.
    pub async fn shutdown(mut self) -> Result<(), DaemonError> {
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
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
        self.engine.abort();
    }
}

/// Binds the API socket, replacing a stale socket file nobody serves.
async fn bind(path: &Path) -> Result<UnixListener, DaemonError> {
    use std::os::unix::fs::FileTypeExt;
    let bind_err = |source| DaemonError::Bind {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(bind_err)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if tokio::net::UnixStream::connect(path).await.is_ok() {
                return Err(DaemonError::SocketInUse(path.to_owned()));
            }
            std::fs::remove_file(path).map_err(bind_err)?;
        }
        Ok(_) => return Err(DaemonError::NotASocket(path.to_owned())),
        Err(_) => {}
    }
    UnixListener::bind(path).map_err(bind_err)
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
        let daemon = Daemon::start(options).await?;
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        daemon.shutdown().await
    })?;
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}
