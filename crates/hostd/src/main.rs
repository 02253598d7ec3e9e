//! `srmigd --config node.toml --api /run/srmig/HOST.sock [--name HOST] [--api-group GROUP]
//! [--listen ADDR:PORT --tls-dir DIR] [--controller PATH|https://HOST:PORT[,...]]
//! [--log-format json|text] [--workers N] [--cpus LIST|any]`: the per-host srmig daemon (see the
//! library docs; `--workers`: [`srmig_hostd::workers`]; trust model: `docs/security.md`).

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use srmig_agent::Agent;
use srmig_api::HostId;
use srmig_hostd::cli::{Args, LogFormat};
use srmig_hostd::dataplane_loop::{DataplaneHandle, DataplaneLoop};
use srmig_hostd::mailbox::Command;
use srmig_hostd::workers::{self, Workers};
use srmig_hostd::{api, config, qmpwatch, report};
use tokio::sync::Notify;
use tracing::{error, info, warn};

/// Logs go to stderr through a writer thread: the dataplane thread formats a line and hands
/// it over, and never waits for a `write` (a VM's resume logs two lines before its first
/// frame leaves). Nothing is dropped: when the writer falls behind, the logging thread
/// waits. The returned guard writes what is queued when it is dropped.
fn init_logging(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("srmig-log")
        .finish(std::io::stderr());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
    guard
}

fn main() {
    let args = Args::parse();
    let logs = init_logging(args.log_format);
    if let Err(e) = run(&args) {
        error!("{e:#}");
        drop(logs);
        std::process::exit(1);
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let daemon = config::load_daemon(&args.config)?;
    workers::check(args.workers, &daemon)
        .with_context(|| format!("node configuration {}", args.config.display()))?;
    let placement = workers::CpuPlacement::parse(args.cpus.as_deref())?;
    let allowed = workers::allowed_cpus();
    let config::DaemonConfig {
        node: cfg,
        qemu,
        io,
        notes,
    } = daemon;
    for note in notes {
        warn!(config = %args.config.display(), "{note}");
    }
    let n = args.workers;
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
    if n > 1 {
        // The configuration as written first: its errors then name the configured values.
        drop(
            Agent::new(host.clone(), cfg.clone(), 0)
                .with_context(|| format!("invalid node configuration {}", args.config.display()))?,
        );
        info!(
            workers = n,
            "several workers: every port uses AF_PACKET with PACKET_FANOUT_HASH (AF_XDP is not used); End.SBUF and ICMPv6 limits divided among the workers"
        );
    }
    let (report_tx, report_rx) = match &args.controller {
        Some(_) => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            (Some(tx), Some(rx))
        }
        None => (None, None),
    };
    let fanout = (n > 1).then(workers::fanout_salt);
    let boot_epoch = new_boot_epoch();
    info!(
        boot_epoch,
        "boot epoch (new at every start: the controller re-sends its config when it changes)"
    );
    let mut loops = Vec::with_capacity(n);
    let mut handles = Vec::with_capacity(n);
    for k in 0..n {
        let agent = Agent::new(
            host.clone(),
            workers::worker_node_config(&cfg, n),
            boot_epoch,
        )
        .with_context(|| format!("invalid node configuration {}", args.config.display()))?;
        let (handle, commands, wake) =
            DataplaneHandle::new().context("cannot create the eventfd")?;
        // Only worker 0 reports VM states: the others' follow the same events.
        let reporter = report_tx
            .clone()
            .map(|tx| report::Reporter::new(tx, k == 0));
        let lp = DataplaneLoop::new(agent, commands, wake, reporter, &qemu, &io, fanout)
            .with_context(|| {
                if n > 1 {
                    format!("cannot start dataplane worker {k} (netlink)")
                } else {
                    "cannot start the dataplane (netlink)".to_owned()
                }
            })?;
        loops.push(lp);
        handles.push(handle);
    }
    // The workers hold the senders: the reporter ends when they do.
    drop(report_tx);
    // Each worker relays the commit-fence markers it receives to the others.
    if n > 1 {
        for (k, lp) in loops.iter_mut().enumerate() {
            let peers = handles
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != k)
                .map(|(_, h)| h.clone())
                .collect();
            lp.set_peers(peers);
        }
    }
    let handle = handles[0].clone();
    let all = Workers::new(handles);
    let gid = args
        .api_group
        .as_deref()
        .map(srmig_tls::local::group_id)
        .transpose()?;
    let tls = match &args.tls_dir {
        Some(dir) => {
            let me = srmig_tls::PeerIdentity::new(srmig_tls::Role::Host, host.as_str())?;
            Some(srmig_tls::TlsFiles::in_dir(dir, &me))
        }
        None => None,
    };
    let tls_server = match (&tls, args.listen) {
        (Some(files), Some(addr)) => {
            let cfg = srmig_tls::server_config(
                files,
                &[srmig_tls::Role::Controller, srmig_tls::Role::Client],
            )
            .context("cannot load this host's TLS identity")?;
            let l = std::net::TcpListener::bind(addr)
                .with_context(|| format!("cannot listen on {addr}"))?;
            l.set_nonblocking(true)?;
            Some((l, cfg))
        }
        _ => None,
    };
    let reporter = match &args.controller {
        None => None,
        Some(c) => Some(report::parse_targets(c, tls.as_ref())?),
    };
    let listener = srmig_tls::local::bind_std(&args.api, gid)?;
    listener.set_nonblocking(true)?;

    let dp_done = Arc::new(Notify::new());
    let mut dp_threads = Vec::with_capacity(n);
    for (k, lp) in loops.into_iter().enumerate() {
        let done = Arc::clone(&dp_done);
        let name = if n > 1 {
            format!("srmig-dp{k}")
        } else {
            "srmig-dp".to_owned()
        };
        let (placement, allowed) = (placement.clone(), allowed.clone());
        let t = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                // One CPU per worker keeps every flow in order (workers::CpuPlacement).
                match placement.cpu_for(k, n, &allowed, workers::current_cpu()) {
                    Some(cpu) => match workers::pin_current_thread(cpu) {
                        Ok(()) => info!(worker = k, cpu, "dataplane worker pinned"),
                        Err(e) => warn!(
                            worker = k,
                            cpu,
                            error = %e,
                            "cannot pin the dataplane worker: the scheduler may move it, \
                             and flows to veth ports may then be reordered"
                        ),
                    },
                    None => info!(
                        worker = k,
                        "dataplane worker not pinned (--cpus any): flows to veth ports may be \
                         reordered when the scheduler moves it"
                    ),
                }
                let r = lp.run();
                done.notify_one();
                r
            })
            .context("cannot spawn the dataplane thread")?;
        dp_threads.push(t);
    }
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
                let listener = srmig_tls::local::CheckedListener::new(
                    listener,
                    srmig_tls::local::PeerPolicy::for_this_process(gid),
                );
                if let (Some(target), Some(rx)) = (reporter, report_rx) {
                    tokio::spawn(report::run(target, rx));
                }
                let (stop_tls, tls_stopped) = tokio::sync::oneshot::channel::<()>();
                let tls_task = match tls_server {
                    Some((l, cfg)) => {
                        let l = tokio::net::TcpListener::from_std(l)
                            .context("cannot register the TLS listener")?;
                        Some(tokio::spawn(srmig_tls::serve(
                            l,
                            cfg,
                            api::router(all.clone()),
                            srmig_tls::ServeOptions::default(),
                            async {
                                let _ = tls_stopped.await;
                            },
                        )))
                    }
                    None => None,
                };
                for q in &qemu {
                    if let Some(qmp) = &q.qmp {
                        tokio::spawn(qmpwatch::run(
                            q.port.clone(),
                            qmp.clone(),
                            q.migrate_continue,
                            handle.clone(),
                        ));
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
                axum::serve(listener, api::router(all.clone()))
                    .with_graceful_shutdown(shutdown)
                    .await
                    .context("API server failed")?;
                let _ = stop_tls.send(());
                if let Some(t) = tls_task {
                    let _ = t.await;
                }
                // A dataplane thread may already be gone; that is fine.
                let _ = all.send_all(|| Command::Shutdown);
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
    let mut dp_result = Ok(());
    for t in dp_threads {
        let r = t
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the dataplane thread panicked")));
        if dp_result.is_ok() {
            dp_result = r;
        }
    }
    if let Err(e) = std::fs::remove_file(&args.api) {
        warn!(error = %e, path = %args.api.display(), "cannot remove the API socket");
    }
    api_result?;
    dp_result.context("dataplane loop failed")?;
    info!("srmigd stopped");
    Ok(())
}

/// A boot epoch: a number that differs at every start of srmigd (the wall clock in
/// nanoseconds, mixed with the process id by the standard library's randomly keyed hasher so
/// two starts in the same nanosecond or after a clock step back still differ). Never 0, which
/// means "no epoch" to a controller.
fn new_boot_epoch() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(nanos);
    h.write_u32(std::process::id());
    h.finish().max(1)
}
