//! `srmigd --config node.toml --api /run/srmig/HOST.sock [--name HOST] [--controller PATH]
//! [--log-format json|text]`: the per-host srmig daemon (see the library docs).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use srmig_api::HostId;
use srmig_hostd::dataplane_loop::{DataplaneHandle, DataplaneLoop};
use srmig_hostd::node::{Command, Node};
use srmig_hostd::{api, config, qmpwatch, report};
use tokio::sync::Notify;
use tracing::{error, info, warn};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// srmigd: the srmig SRv6 virtual router of one host.
#[derive(Debug, Parser)]
#[command(name = "srmigd", version)]
struct Args {
    /// Node configuration (TOML): locator, ports (interface names), routes, SIDs, VMs.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Unix socket of the control API (created; removed on exit).
    #[arg(long, value_name = "PATH")]
    api: PathBuf,
    /// Host name (default: the API socket's file stem, e.g. `h1` for `/run/srmig/h1.sock`).
    #[arg(long)]
    name: Option<String>,
    /// Unix socket of the controller's API, to report VM state changes to.
    #[arg(long, value_name = "PATH")]
    controller: Option<PathBuf>,
    /// Log format on stderr (filter with RUST_LOG, default `info`).
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

fn main() {
    let args = Args::parse();
    init_logging(args.log_format);
    if let Err(e) = run(&args) {
        error!("{e:#}");
        std::process::exit(1);
    }
}

/// Binds the API socket, replacing a stale socket file but never a live one.
fn bind_api(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            bail!("{} is in use by a running process", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
    }
    let l =
        UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("cannot set permissions of {}", path.display()))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

fn run(args: &Args) -> anyhow::Result<()> {
    let config::DaemonConfig {
        node: cfg,
        qemu,
        io,
    } = config::load_daemon(&args.config)?;
    let name = match &args.name {
        Some(n) => n.clone(),
        None => args
            .api
            .file_stem()
            .and_then(|s| s.to_str())
            .map(str::to_owned)
            .context("--name is needed when the API socket path has no file stem")?,
    };
    let host = HostId::new(name.clone()).with_context(|| format!("invalid host name {name:?}"))?;
    let node = Node::new(host.clone(), cfg)
        .with_context(|| format!("invalid node configuration {}", args.config.display()))?;
    let (handle, commands, wake) = DataplaneHandle::new().context("cannot create the eventfd")?;
    let (report_tx, report_rx) = match &args.controller {
        Some(_) => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            (Some(tx), Some(rx))
        }
        None => (None, None),
    };
    let lp = DataplaneLoop::new(node, commands, wake, report_tx, &qemu, &io)
        .context("cannot start the dataplane (netlink)")?;
    let listener = bind_api(&args.api)?;

    let dp_done = Arc::new(Notify::new());
    let dp_thread = {
        let done = Arc::clone(&dp_done);
        std::thread::Builder::new()
            .name("srmig-dp".into())
            .spawn(move || {
                let r = lp.run();
                done.notify_one();
                r
            })
            .context("cannot spawn the dataplane thread")?
    };
    let controller = args.controller.clone();
    let api_path = args.api.clone();
    let rt_thread = std::thread::Builder::new()
        .name("srmig-api".into())
        .spawn(move || -> anyhow::Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot build the tokio runtime")?;
            rt.block_on(async move {
                let listener = tokio::net::UnixListener::from_std(listener)
                    .context("cannot register the API socket")?;
                if let (Some(path), Some(rx)) = (controller, report_rx) {
                    tokio::spawn(report::run(path, rx));
                }
                for q in &qemu {
                    if let Some(qmp) = &q.qmp {
                        tokio::spawn(qmpwatch::run(q.port.clone(), qmp.clone(), handle.clone()));
                    }
                }
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
                let mut int =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
                let shutdown = async move {
                    tokio::select! {
                        _ = term.recv() => info!("SIGTERM: stopping"),
                        _ = int.recv() => info!("SIGINT: stopping"),
                        () = dp_done.notified() => warn!("dataplane thread ended: stopping"),
                    }
                };
                info!(host = %host, api = %api_path.display(), "srmigd ready");
                axum::serve(listener, api::router(handle.clone()))
                    .with_graceful_shutdown(shutdown)
                    .await
                    .context("API server failed")?;
                // The dataplane thread may already be gone; that is fine.
                let _ = handle.send(Command::Shutdown);
                Ok(())
            })
        })
        .context("cannot spawn the API thread")?;

    let api_result = rt_thread
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the API thread panicked")));
    if api_result.is_err() {
        // Make sure the dataplane thread stops too: its command channel closes when every
        // handle is dropped, which happened with the API thread.
        warn!("API thread failed; stopping the dataplane");
    }
    let dp_result = dp_thread
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the dataplane thread panicked")));
    if let Err(e) = std::fs::remove_file(&args.api) {
        warn!(error = %e, path = %args.api.display(), "cannot remove the API socket");
    }
    api_result?;
    dp_result.context("dataplane loop failed")?;
    info!("srmigd stopped");
    Ok(())
}
