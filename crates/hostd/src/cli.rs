//! srmigd's command line ([`Args`]), here rather than in `main.rs` so that `srmig man`
//! renders srmigd's manual page from the same definition.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The srmig SRv6 virtual router of one host: forwards its VMs' traffic, End.S and End.SBUF
/// during their migrations, and applies the configuration the controller pushes.
#[derive(Debug, Parser)]
#[command(name = "srmigd", version)]
pub struct Args {
    /// Node configuration (TOML): locator, ports (interface names), routes, SIDs, VMs.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Unix socket of the control API for local administration (created mode 0660; a stale
    /// socket is replaced, anything else at PATH is refused; removed on exit).
    #[arg(long, value_name = "PATH")]
    pub api: PathBuf,
    /// Group of the API socket (default: srmigd's own group).
    #[arg(long, value_name = "GROUP")]
    pub api_group: Option<String>,
    /// Serve the control API over mutual TLS on ADDR:PORT too (the controller on another
    /// machine, operators' CLIs); needs --tls-dir.
    #[arg(long, value_name = "ADDR:PORT", requires = "tls_dir")]
    pub listen: Option<std::net::SocketAddr>,
    /// This host's TLS files (`srmig pki issue --role host --name HOST`): DIR/ca.pem,
    /// DIR/host-HOST.pem and DIR/host-HOST.key.
    #[arg(long, value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Host name (default: the API socket's file stem, e.g. `h1` for `/run/srmig/h1.sock`).
    #[arg(long)]
    pub name: Option<String>,
    /// The controller's API, to report VM state changes to: its unix socket PATH, or
    /// https://HOST:PORT (mutual TLS with --tls-dir; its certificate must name a controller).
    /// Controller replicas: every replica's address, comma-separated; reports go to the one
    /// that answers (the leader).
    #[arg(long, value_name = "PATH|URL[,...]")]
    pub controller: Option<String>,
    /// Log format on stderr (filter with RUST_LOG, default `info`).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Dataplane workers: threads with an engine and sockets each, the kernel spreading flows
    /// over them (AF_PACKET fanout; no AF_XDP, no [[qemu]] ports with more than one).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub workers: usize,
    /// Pin worker k to CPU k of LIST, modulo its length (e.g. `1`, `0,1`, `0-3`); `any`: no
    /// pinning (flows to veth ports may then be reordered when the scheduler moves a worker).
    /// Default: a single worker stays on the CPU it starts on, several take the CPUs the
    /// process may use in turn.
    #[arg(long, value_name = "LIST|any")]
    pub cpus: Option<String>,
}
