//! `srmig`: the command-line front end. It parses arguments, calls into the library crates and
//! prints; it holds no logic of its own.
#![allow(clippy::print_stdout)] // printing is this binary's job

mod connect;
mod controller;
mod libvirt_hook;
mod manpages;
mod migrate;
mod migration;
mod progress;
mod sim;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use srmig_replay::run::PacketRecord;
use srmig_replay::{Input, ReplayConfig, Summary};

#[derive(Debug, Parser)]
#[command(
    name = "srmig",
    version,
    about = "Zero-loss VM migration with IPv6 Segment Routing"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Replay captures through one node's dataplane offline.
    Replay {
        /// Node configuration (TOML; see docs/replay.md), optionally with [[events]].
        #[arg(long)]
        config: PathBuf,
        /// An input capture for an ingress port, as PORT=FILE (Ethernet, pcap or pcapng).
        /// Repeatable.
        #[arg(long = "pcap", value_name = "PORT=FILE", required = true)]
        pcaps: Vec<String>,
        /// Directory for <port>.pcap outputs and summary.json (the outputs of an earlier run
        /// there are removed first, and named).
        #[arg(long)]
        out: PathBuf,
        /// Do not print the per-packet table.
        #[arg(long)]
        quiet: bool,
    },
    /// The lab demo: the paper's four configurations on the netns lab (root), printed as the
    /// paper's table; with --offline, an example migration replayed packet by packet.
    Demo {
        /// Replay the example offline through the dataplane (no root, no namespaces).
        #[arg(long)]
        offline: bool,
        /// Where reports (lab) or captures, configurations and summaries (offline) go.
        #[arg(long, default_value = "out/demo")]
        out: PathBuf,
        /// Lab demo: migrations per strategy and workload.
        #[arg(long, default_value_t = 2)]
        migrations: u32,
        /// Lab demo: workloads (probe, http, tcp, all, or a comma-separated list).
        #[arg(long, default_value = "probe,http")]
        workload: String,
    },
    /// Network-namespace labs: real srmigd processes, the controller, VMs and workloads.
    Lab {
        #[command(subcommand)]
        what: LabCommand,
    },
    /// The data-center simulator: srmig's real dataplane, agent and controller cores for
    /// every host, in virtual time (`paper`, `scale`, `run SCENARIO.toml`; docs/sim.md).
    Sim {
        #[command(subcommand)]
        what: sim::SimCommand,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
    /// Run the controller daemon (API on a unix socket and, with --tls-dir and --listen, over
    /// mutual TLS; embedded store; pushes to srmigd).
    Controller(Box<ControllerArgs>),
    /// Certificates for mutual TLS between the controller, hosts and operators (see
    /// docs/security.md, Certificates).
    Pki {
        #[command(subcommand)]
        what: PkiCommand,
    },
    /// Migrate a VM through the controller and show its progress until it ends.
    #[command(after_help = migrate::AFTER_HELP)]
    Migrate(migrate::MigrateArgs),
    /// Look at migrations the controller ran or runs: `show ID` (a timeline with the path
    /// armed, blackout and commit times), `list`.
    Migration {
        #[command(subcommand)]
        what: migration::MigrationCommand,
    },
    /// Print a shell completion script for srmig on stdout (e.g.
    /// `srmig completions bash > /etc/bash_completion.d/srmig`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the manual pages of srmig (section 1, one per command) and srmigd (section 8)
    /// into a directory (e.g. `srmig man --out /usr/local/share/man`: man1/ and man8/ below it).
    Man {
        /// The directory; `man1/` and `man8/` are created in it.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// libvirt's QEMU hook (/etc/libvirt/hooks/qemu runs it with libvirt's arguments): arms
    /// the SR path before libvirt prepares an incoming live migration of a domain with srmig
    /// metadata, and reports a failed one (see docs/operators.md).
    LibvirtHook(libvirt_hook::HookArgs),
}

#[derive(Debug, clap::Args)]
struct ControllerArgs {
    /// Unix socket of the API (see docs/controller-api.md), created mode 0660.
    #[arg(long, default_value = srmig_controller::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Group of the API socket (default: the controller's own group).
    #[arg(long, value_name = "GROUP")]
    socket_group: Option<String>,
    /// The store: the embedded redb file at this path (created if missing, restored on
    /// start), or `etcd` for an etcd cluster (--etcd-endpoints; replicas share it).
    #[arg(long, value_name = "PATH|etcd", default_value = srmig_controller::DEFAULT_STORE)]
    store: PathBuf,
    /// `--store etcd`: the cluster's client URLs, comma-separated (https:// with --etcd-ca).
    #[arg(long, value_name = "URL[,URL...]", value_delimiter = ',')]
    etcd_endpoints: Vec<String>,
    /// `--store etcd`: the key prefix of this controller cluster's state.
    #[arg(long, default_value = "/srmig/")]
    etcd_prefix: String,
    /// `--store etcd`: CA certificate (PEM) the etcd servers' certificates are checked with.
    #[arg(long, value_name = "FILE")]
    etcd_ca: Option<PathBuf>,
    /// `--store etcd`: client certificate (PEM) for etcd's client-cert-auth (with --etcd-key).
    #[arg(long, value_name = "FILE", requires = "etcd_key")]
    etcd_cert: Option<PathBuf>,
    /// `--store etcd`: the client certificate's key (PEM).
    #[arg(long, value_name = "FILE", requires = "etcd_cert")]
    etcd_key: Option<PathBuf>,
    /// `--store etcd`: timeout of etcd requests, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    etcd_timeout_ms: u64,
    /// `--store etcd`: run as one of several controller replicas under this id: wait as a
    /// standby until elected (etcd lease), and exit (status 3) if the leadership is lost.
    #[arg(long, value_name = "ID")]
    replica_id: Option<String>,
    /// `--replica-id`: the leadership lease's TTL in seconds. A dead leader is replaced
    /// within about this time plus 0.6 s. etcd grants at least 1.5 x its --election-timeout,
    /// in whole seconds: 2 s with its default (1000 ms); 1 s needs an election timeout of at
    /// most 666 ms. A longer grant is logged.
    #[arg(long, default_value_t = 2)]
    leader_ttl_s: u64,
    /// Delay every config push by this many milliseconds (emulates a slow mapping update).
    #[arg(long, default_value_t = 0)]
    propagation_delay_ms: u64,
    /// How long hosts have to acknowledge a config, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    ack_timeout_ms: u64,
    /// How long End.S and End.SBUF stay after every host acknowledged a migration's commit,
    /// in milliseconds: packets still queued on the old path (S -> D) arrive within it. Raise
    /// it where hosts can queue packets longer (overloaded hosts showed up to 900 ms).
    #[arg(long, default_value_t = 50)]
    drain_ms: u64,
    /// After every host acknowledged a migration's commit, how long the cleanup waits at most
    /// for the destination to report every host's commit-fence marker (nothing left on the old
    /// SR path), in milliseconds; 0 waits only `--drain-ms`.
    #[arg(long, default_value_t = 2_000)]
    fence_wait_ms: u64,
    /// How long the hypervisor may take before the migration is cancelled, in milliseconds.
    #[arg(long, default_value_t = 600_000)]
    hypervisor_timeout_ms: u64,
    /// How often every host is polled for its boot epoch and config version, in
    /// milliseconds (a restarted srmigd gets its config back within about this time).
    #[arg(long, default_value_t = 2_000)]
    host_poll_ms: u64,
    /// How often the source and destination of a migration waiting for its hypervisor are
    /// polled for VM states (in case a report was lost), in milliseconds.
    #[arg(long, default_value_t = 1_000)]
    state_poll_ms: u64,
    /// The controller's TLS files (`srmig pki`): DIR/ca.pem, DIR/controller-NAME.pem and
    /// .key. Needed to reach hosts registered with an `api_address`.
    #[arg(long, value_name = "DIR")]
    tls_dir: Option<PathBuf>,
    /// The controller's name in its certificate (srmig://controller/NAME).
    #[arg(long, value_name = "NAME", default_value = "controller")]
    tls_name: String,
    /// Serve the API over mutual TLS on ADDR:PORT too (srmigd's reports, remote CLIs);
    /// needs --tls-dir.
    #[arg(long, value_name = "ADDR:PORT", requires = "tls_dir")]
    listen: Option<std::net::SocketAddr>,
    #[command(flatten)]
    hypervisor: controller::HypervisorArgs,
}

#[derive(Debug, Subcommand)]
enum PkiCommand {
    /// Make the CA: DIR/ca.pem and DIR/ca.key (mode 0600; DIR created 0700). Refuses to
    /// overwrite an existing CA unless --force.
    Init {
        /// Directory of the CA.
        #[arg(long)]
        dir: PathBuf,
        /// Replace an existing ca.pem/ca.key (every certificate it issued stops being trusted).
        #[arg(long)]
        force: bool,
        /// Validity, in days.
        #[arg(long, default_value_t = srmig_tls::pki::DEFAULT_CA_DAYS)]
        days: u32,
        /// The CA's common name (default: "srmig CA" and 8 hex digits of its key identifier).
        #[arg(long)]
        name: Option<String>,
    },
    /// Issue a certificate signed by the CA in DIR: OUT/<role>-<name>.pem and .key (0600),
    /// identity srmig://<role>/<name>, plus a copy of ca.pem when OUT is another directory.
    Issue {
        /// Directory of the CA (ca.pem, ca.key).
        #[arg(long)]
        dir: PathBuf,
        /// host (srmigd), controller, or client (an operator's CLI).
        #[arg(long)]
        role: srmig_tls::Role,
        /// The holder's name (a host's name as registered with the controller).
        #[arg(long)]
        name: String,
        /// An IP address or DNS name the holder is reached at (repeatable; at least one for a
        /// host or a controller).
        #[arg(long = "san", value_name = "ADDR_OR_DNS")]
        sans: Vec<srmig_tls::San>,
        /// Validity, in days.
        #[arg(long, default_value_t = srmig_tls::pki::DEFAULT_CERT_DAYS)]
        days: u32,
        /// Where the files go (default: DIR).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
enum LabCommand {
    /// Run workloads from a client VM to a VM migrating S -> D -> S ... and write the report.
    Migrate(Box<LabMigrateArgs>),
    /// The paper's comparison: no migration, traditional, sr-drop and sr-buffer on every
    /// workload; prints the table and writes reports, plots and paper.md into DIR.
    Paper {
        /// VM kind: netns (emulated migration of a namespace), qemu (a QEMU guest,
        /// live-migrated over QMP by the controller) or libvirt (a QEMU guest run by two
        /// libvirtds, migrated with `virsh migrate --live` and srmig's libvirt hook).
        #[arg(long, default_value = "netns")]
        vm_kind: String,
        /// qemu, libvirt: a built guest directory (vmlinuz, initramfs.gz); default: build or
        /// reuse the cached one (guest/build-guest.sh).
        #[arg(long)]
        guest_dir: Option<PathBuf>,
        /// qemu, libvirt: guest memory in MiB.
        #[arg(long, default_value_t = 128)]
        memory_mib: u32,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Migrations per strategy and workload.
        #[arg(long, default_value_t = 5)]
        migrations: u32,
        /// Workloads (probe, http, tcp, all, or a comma-separated list).
        #[arg(long, default_value = "all")]
        workload: String,
        /// Delay of every controller config push, in milliseconds (a slow mapping update).
        #[arg(long, default_value_t = 100)]
        propagation_delay_ms: u64,
    },
    /// Removes what killed lab runs left behind (their namespaces, links and processes, as
    /// listed in /run/srmig-lab); runs whose process is alive are left alone. `lab migrate`,
    /// `lab paper`, `demo` and `bench forward` do this first on their own.
    Clean,
    /// The lab's QEMU launcher hook (what a lab controller process runs as
    /// `--qemu-launcher`): relays `start VM HOST` / `stop VM HOST HANDLE` to the running lab.
    QemuHook {
        /// The lab's launcher socket (DIR/launcher.sock of the run).
        #[arg(long)]
        socket: PathBuf,
        /// start VM HOST | stop VM HOST HANDLE
        #[arg(num_args = 3..=4, value_name = "ARGS")]
        args: Vec<String>,
    },
}

#[derive(Debug, clap::Args)]
struct LabMigrateArgs {
    /// VM kind: netns (a namespace with its own kernel stack, migration emulated with
    /// --precopy-ms/--downtime-ms), qemu (a QEMU guest under TCG, live-migrated over QMP by
    /// the controller; the pause reported is QEMU's own) or libvirt (the same guest as a
    /// domain of two libvirtds, one per host, migrated with `virsh migrate --live`; srmig
    /// learns of each migration from its libvirt hook; docs/operators.md).
    #[arg(long, default_value = "netns")]
    vm_kind: String,
    /// qemu, libvirt: a built guest directory (vmlinuz, initramfs.gz); default: build or
    /// reuse the cached one (guest/build-guest.sh).
    #[arg(long)]
    guest_dir: Option<PathBuf>,
    /// qemu, libvirt: guest memory in MiB.
    #[arg(long, default_value_t = 128)]
    memory_mib: u32,
    /// qemu: the source pauses before the switchover so srmigd takes back exactly what the
    /// guest did not get; the controller's driver continues it after this many milliseconds
    /// if no srmigd did. 0: no pause (the older take-back, which may send a frame twice).
    #[arg(long, default_value_t = 500, value_name = "MS")]
    qmp_switchover_wait_ms: u64,
    /// traditional, sr-drop or sr-buffer.
    #[arg(long, default_value = "sr-buffer")]
    strategy: String,
    /// probe, http, tcp, all, or a comma-separated list; each runs during its own migrations.
    #[arg(long, default_value = "probe")]
    workload: String,
    /// Address family of the workloads: ipv6, ipv4 or dual (both at once, during the same
    /// migrations; the VMs are always dual-stack). IPv4 results are `probe_v4`, `http_v4`,
    /// `tcp_v4` in the report.
    #[arg(long, default_value = "dual")]
    family: String,
    /// Consecutive migrations per workload; 0 runs the no-migration baseline. With several
    /// VMs (--vms, --chain) each is a round: every VM moves once, all at the same time.
    #[arg(long, default_value_t = 5)]
    migrations: u32,
    /// netns: migrating VMs (1-16), spread over the hosts other than C (vm1 on S, vm2 on D,
    /// ...); in each round every VM moves one host on (S -> D -> E -> ... -> S) at the same
    /// time, with the probe running against all of them.
    #[arg(long, default_value_t = 1)]
    vms: usize,
    /// netns: hosts (3-23): C (the client's), S, D, then E, F, ...
    #[arg(long, default_value_t = 3)]
    hosts: usize,
    /// netns: chained migrations (needs --vms 2 and --hosts 4 or more): vm1 moves S->D while
    /// vm2 moves D->E, and vm1 moves again D->E as soon as its first migration completed
    /// (with --propagation-delay-ms the pushes of vm2's migration are still on their way).
    #[arg(long)]
    chain: bool,
    /// Emulated stop-and-copy pause, in milliseconds (the paper's: 175).
    #[arg(long, default_value_t = 175)]
    downtime_ms: u64,
    /// Emulated pre-copy, in milliseconds.
    #[arg(long, default_value_t = 500)]
    precopy_ms: u64,
    /// Idle time between a migration's expected end and the next request, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    gap_ms: u64,
    /// Delay of every controller config push, in milliseconds (a slow mapping update).
    #[arg(long, default_value_t = 0)]
    propagation_delay_ms: u64,
    /// Workload duration of a --migrations 0 baseline, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    baseline_ms: u64,
    /// The probe's interval in microseconds, per VM and family (the resolution of the
    /// network downtime it measures). At least 100.
    #[arg(long, default_value_t = 1000, value_name = "US")]
    probe_interval_us: u64,
    /// New HTTP sessions per second.
    #[arg(long, default_value_t = 100)]
    http_rate: u32,
    /// Where the JSON report is written.
    #[arg(long)]
    report: PathBuf,
    /// netns: every srmigd's port I/O (node.toml `[io] mode`): auto (AF_XDP on veths, the
    /// default), xdp or packet (AF_PACKET rings; VM ports then keep the VMs' TSO/GSO).
    #[arg(long)]
    io: Option<String>,
    /// netns: how every srmigd attaches its VM ports' TC program (node.toml `[io]
    /// vm_tc_hook`): auto (tcx where the kernel has it, the default), tcx or clsact.
    #[arg(long, value_parser = ["auto", "tcx", "clsact"])]
    vm_tc_hook: Option<String>,
    /// Every VM port on the TC fast path: a VM's packets to mapped destinations are
    /// encapsulated by srmigd's TC program in the kernel (netns and libvirt VMs; QEMU stream
    /// ports have no interface to attach it to). srmigd's default since 2026-12-05: this flag
    /// is kept for scripts and changes nothing.
    #[arg(long, conflicts_with = "no_vm_fast_path")]
    vm_fast_path: bool,
    /// Every VM packet through srmigd's sockets (node.toml `[io] vm_fast_path = false`), to
    /// compare with the TC fast path.
    #[arg(long)]
    no_vm_fast_path: bool,
    /// Every host's uplink requires an RFC 8754 HMAC TLV on SRv6 packets (node.toml
    /// `hmac = "require"`), and the migrations' SR paths and commit-fence markers are signed
    /// (`migration_hmac_key`; one random key for the whole lab).
    #[arg(long)]
    hmac: bool,
    /// Keep srmigd configurations and logs in this directory (default: a temporary one,
    /// removed at the end).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Where srmigd is (default: next to this executable).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Inject a fault in every migration, WHAT:PHASE (repeatable). WHAT: kill-controller,
    /// kill-srmigd-s|d|c (SIGKILL, down for --fault-down-ms, then started again),
    /// restart-controller, restart-srmigd-s|d|c (SIGKILL, started again at once). PHASE:
    /// prepare, migrating, switchover, commit, cleanup, steady (between migrations). The
    /// report gains "faults". Controller faults run the controller as its own process.
    #[arg(long, value_name = "WHAT:PHASE")]
    fault: Vec<String>,
    /// How long a kill-* fault leaves the process down, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    fault_down_ms: u64,
    /// Run the lab's controller as its own `srmig controller` process (found next to
    /// srmigd) instead of inside this process.
    #[arg(long)]
    controller_process: bool,
    /// The controller's store: embedded (a redb file) or etcd (the lab starts etcd in the
    /// management namespace; needs the etcd-server package).
    #[arg(long, default_value = "embedded", value_name = "embedded|etcd")]
    store: String,
    /// Controller replicas (with --store etcd): N `srmig controller` processes, one leads;
    /// `--fault kill-leader:PHASE` kills whichever leads.
    #[arg(long, default_value_t = 1)]
    controllers: usize,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Mpps per dataplane behavior on one core, 256-packet batches, ~100-byte inner packets.
    Dataplane {
        /// Print JSON: {"behaviors": {"End.S deliver": {"mpps": .., "ns_per_packet": ..}, ...}}.
        #[arg(long)]
        json: bool,
        /// Measuring time per behavior, in milliseconds.
        #[arg(long, default_value_t = 600)]
        ms: u64,
        /// Only behaviors whose name contains this.
        #[arg(long)]
        filter: Option<String>,
    },
    /// Forwarding through veth (gen -> dut -> sink namespaces, root): srmigd and the Linux
    /// kernel on the same CPUs and frames; Mpps, ratio and srmigd's zero-loss rate per case.
    /// See docs/bench-forward.md.
    Forward(BenchForwardArgs),
    /// The controller with N in-process hosts (real agents behind srmigd's config API on unix
    /// sockets): migrate to the SR path acknowledged on every host, and to the commit
    /// acknowledged, p50/p99/max; etcd requests per migration. See docs/bench-control.md.
    Control(BenchControlArgs),
}

#[derive(Debug, clap::Args)]
struct BenchControlArgs {
    /// Hosts (at least 2), each with one VM at home.
    #[arg(long, default_value_t = 100)]
    hosts: usize,
    /// The controller's store: embedded (a redb file) or etcd (started by the bench on
    /// loopback, unless --etcd-endpoints is given).
    #[arg(long, default_value = "embedded")]
    store: srmig_bench::control::StoreKind,
    /// --store etcd: use this etcd cluster (client URLs, comma-separated) instead of starting
    /// one; the request count is read from the first one's /metrics (http:// only).
    #[arg(long, value_delimiter = ',', value_name = "URL[,URL...]")]
    etcd_endpoints: Vec<String>,
    /// Migrations one after another.
    #[arg(long, default_value_t = 20)]
    migrations: usize,
    /// Migrations started together in each batch (0: no batches).
    #[arg(long, default_value_t = 10)]
    concurrent: usize,
    /// Batches of --concurrent migrations.
    #[arg(long, default_value_t = 2)]
    batches: usize,
    /// How the hosts and VMs get into the controller: api (POST /v1/hosts and /v1/vms one by
    /// one; every VM registered costs every host a config push) or store (written into the
    /// store before the daemon starts, which restores them and pushes each host once).
    #[arg(long, default_value = "api")]
    setup: srmig_bench::control::SetupKind,
    /// The controller's heartbeat: GET /v1/status to every host this often, in milliseconds
    /// (the daemon's default: 2000).
    #[arg(long, default_value_t = 2000)]
    host_poll_ms: u64,
    /// The controller's acknowledgement timeout of the prepare phases, in milliseconds
    /// (lifted from the daemon's 5000 so that a slow phase is measured, not rolled back).
    #[arg(long, default_value_t = 60_000)]
    ack_timeout_ms: u64,
    /// Print only JSON: {"hosts":N,"store":..,"armed_ms":{"p50":..,"p99":..,"max":..},
    /// "committed_ms":{..},"etcd_requests_per_migration":..,...}.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct BenchForwardArgs {
    /// Frame length sent by the generator (Ethernet header to payload end, no FCS); a case
    /// whose reference frame is longer uses that. 1000 and more also report Gb/s.
    #[arg(long, default_value_t = srmig_bench::forward::MIN_FRAME_BYTES)]
    frame_bytes: usize,
    /// srmigd's --workers (passed only when not 1).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Distinct flows the generator sends round-robin (they differ in the UDP source port,
    /// the inner one for End and End.DX6, which also get the outer flow label), so srmigd's
    /// fanout hash can spread them over --workers; 1 to 1024, every flow goes the same way
    /// through the DUT.
    #[arg(long, default_value_t = 1)]
    flows: usize,
    /// srmigd's port I/O mode (node.toml [io] mode): auto (the bench's veths are uplinks:
    /// AF_XDP), xdp (AF_XDP or fail) or packet (AF_PACKET rings).
    #[arg(long, default_value = "auto")]
    io: String,
    /// srmigd's fast path on d0 and d1 (node.toml [io] fast_path): on (the default; transit
    /// IPv6, End, End.DX6 and H.Encaps forwarded by srmigd's XDP program on the uplinks, and
    /// in h_encaps_vm, where d0 is a VM port, by its TC program) or off (every frame through
    /// srmigd's sockets).
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    fast_path: String,
    /// How srmigd attaches d0's TC program in h_encaps_vm (node.toml [io] vm_tc_hook): auto
    /// (srmigd's default: tcx where the kernel has it), tcx or clsact (as on a kernel without
    /// tcx, e.g. Debian bookworm's 6.1).
    #[arg(long, value_parser = ["auto", "tcx", "clsact"])]
    vm_tc_hook: Option<String>,
    /// Print only JSON: {"cases": {"end": {"srmigd_mpps": .., "linux_mpps": .., "ratio": ..,
    /// "srmigd_zero_loss_mpps": .., ...}, ...}, "generator_ceiling_mpps": .., ...}.
    #[arg(long)]
    json: bool,
    /// Repetitions per case and DUT (min/median/max reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Length of one repetition, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    duration_ms: u64,
    /// Cases: ipv6, end, end_dx6, h_encaps (transit, as Linux's seg6 encap route),
    /// h_encaps_vm (srmigd's VM-port egress; Linux as h_encaps), comma-separated, or all.
    #[arg(long, default_value = "all")]
    cases: String,
    /// The srmigd binary (default: srmigd next to this executable).
    #[arg(long)]
    srmigd: Option<PathBuf>,
    /// Leave the namespaces and srmigd's work directory in place, for debugging.
    #[arg(long)]
    keep: bool,
    /// Skip the Linux kernel's zero-loss search (saves about 6 s per case).
    #[arg(long)]
    no_linux_zero_loss: bool,
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(code) => code,
        Err(e) => {
            // As `fn main() -> anyhow::Result<()>` would print it.
            eprintln!("Error: {e:?}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<ExitCode> {
    match command {
        // `srmig migrate` prints its own errors and has exit codes of its own (its --help).
        Command::Migrate(args) => return Ok(migrate::run(args)),
        Command::Migration { what } => return Ok(migration::run(what)),
        Command::LibvirtHook(args) => return Ok(libvirt_hook::run(args)),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "srmig",
                &mut std::io::stdout(),
            );
            return Ok(ExitCode::SUCCESS);
        }
        Command::Man { out } => {
            for page in manpages::write(<Cli as clap::CommandFactory>::command(), &out)? {
                println!("{}", page.display());
            }
            return Ok(ExitCode::SUCCESS);
        }
        Command::Replay {
            config,
            pcaps,
            out,
            quiet,
        } => cmd_replay(config, pcaps, out, quiet),
        Command::Demo {
            offline: true, out, ..
        } => cmd_demo(out),
        Command::Demo {
            offline: false,
            out,
            migrations,
            workload,
        } => cmd_lab_demo(out, migrations, &workload),
        Command::Lab {
            what: LabCommand::Clean,
        } => {
            if !srmig_lab::orchestrate::is_root() {
                bail!("`srmig lab clean` deletes namespaces and kills processes: run it as root");
            }
            let removed = clean_stale_labs();
            if removed == 0 {
                println!("no leftovers of killed lab runs");
            }
            Ok(())
        }
        Command::Lab {
            what: LabCommand::Migrate(args),
        } => cmd_lab_migrate(*args),
        Command::Lab {
            what: LabCommand::QemuHook { socket, args },
        } => {
            let out = srmig_lab::orchestrate::hook::hook_call(&socket, &args)
                .map_err(|e| anyhow::anyhow!("qemu-hook {}: {e}", args.join(" ")))?;
            if !out.is_empty() {
                println!("{out}");
            }
            Ok(())
        }
        Command::Lab {
            what:
                LabCommand::Paper {
                    vm_kind,
                    guest_dir,
                    memory_mib,
                    out,
                    migrations,
                    workload,
                    propagation_delay_ms,
                },
        } => {
            let mut testbed = srmig_lab::orchestrate::TestbedOptions {
                vm_kind: srmig_lab::orchestrate::parse_vm_kind(&vm_kind)?,
                ..Default::default()
            };
            testbed.qemu.guest_dir = guest_dir;
            testbed.qemu.memory_mib = memory_mib;
            cmd_lab_paper(
                out,
                migrations,
                &workload,
                Duration::from_millis(propagation_delay_ms),
                testbed,
            )
        }
        Command::Bench {
            what: BenchCommand::Dataplane { json, ms, filter },
        } => cmd_bench(json, ms, filter),
        Command::Bench {
            what: BenchCommand::Forward(args),
        } => cmd_bench_forward(args),
        Command::Bench {
            what: BenchCommand::Control(args),
        } => cmd_bench_control(args),
        Command::Sim { what } => sim::cmd_sim(what),
        Command::Controller(args) => cmd_controller(*args),
        Command::Pki { what } => cmd_pki(what),
    }?;
    Ok(ExitCode::SUCCESS)
}

/// Removes the leftovers of lab runs whose process is gone (killed with SIGKILL, or with
/// its children at once), says what went, and returns how many runs that was. Problems are
/// reported and do not stop the caller: a new run uses its own names.
fn clean_stale_labs() -> usize {
    if !srmig_lab::orchestrate::is_root() {
        return 0;
    }
    let report = srmig_lab::cleanup_stale();
    for run in &report.runs {
        eprintln!("srmig lab: removed the leftovers of killed run {run}");
    }
    if !report.runs.is_empty() {
        eprintln!(
            "srmig lab: {} namespaces deleted, {} processes killed",
            report.namespaces_deleted, report.children_killed
        );
    }
    for e in &report.errors {
        eprintln!("srmig lab: cleaning a killed run's leftovers: {e}");
    }
    report.runs.len()
}

fn cmd_pki(what: PkiCommand) -> Result<()> {
    use srmig_tls::pki;
    match what {
        PkiCommand::Init {
            dir,
            force,
            days,
            name,
        } => {
            let options = pki::CaOptions {
                common_name: name,
                validity: pki::Validity::days_from_now(days)?,
                force,
            };
            let files = pki::init_ca(&dir, &options)?;
            println!(
                "wrote {} (the CA certificate: give it to every party)",
                files.cert.display()
            );
            println!(
                "wrote {} (the CA key, 0600: keep it here, never on hosts)",
                files.key.display()
            );
        }
        PkiCommand::Issue {
            dir,
            role,
            name,
            sans,
            days,
            out,
            force,
        } => {
            let identity = srmig_tls::PeerIdentity::new(role, name)?;
            let mut options = pki::IssueOptions::new(identity.clone());
            options.sans = sans;
            options.validity = pki::Validity::days_from_now(days)?;
            options.force = force;
            let files = pki::issue(&dir, out.as_deref().unwrap_or(&dir), &options)?;
            println!("issued {} for {days} days", identity.uri());
            println!("wrote {}", files.cert.display());
            println!("wrote {} (0600)", files.key.display());
            println!("CA:   {}", files.ca.display());
        }
    }
    Ok(())
}

fn cmd_controller(a: ControllerArgs) -> Result<()> {
    let driver = a.hypervisor.driver()?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut options = srmig_controller::Options::new(a.socket, a.store.clone());
    if a.store.as_os_str() == "etcd" {
        if a.etcd_endpoints.is_empty() {
            bail!("--store etcd needs --etcd-endpoints URL[,URL...]");
        }
        let mut etcd = srmig_controller::EtcdOptions::new(a.etcd_endpoints);
        etcd.prefix = a.etcd_prefix;
        etcd.timeout = Duration::from_millis(a.etcd_timeout_ms.max(1));
        if let Some(ca) = a.etcd_ca {
            etcd.tls = Some(srmig_controller::EtcdTls {
                ca,
                identity: a.etcd_cert.zip(a.etcd_key),
            });
        } else if a.etcd_cert.is_some() {
            bail!("--etcd-cert needs --etcd-ca (TLS to etcd)");
        }
        etcd.replica = a
            .replica_id
            .map(|id| (id, Duration::from_secs(a.leader_ttl_s.max(1))));
        options.store = srmig_controller::StoreSpec::Etcd(etcd);
    } else if !a.etcd_endpoints.is_empty() || a.replica_id.is_some() {
        bail!("--etcd-endpoints and --replica-id need --store etcd");
    }
    options.push.propagation_delay = Duration::from_millis(a.propagation_delay_ms);
    options.timeouts.ack_ms = a.ack_timeout_ms;
    options.timeouts.drain_ms = a.drain_ms;
    options.timeouts.fence_wait_ms = a.fence_wait_ms;
    options.timeouts.hypervisor_ms = a.hypervisor_timeout_ms;
    options.host_poll = Duration::from_millis(a.host_poll_ms.max(1));
    options.state_poll = Duration::from_millis(a.state_poll_ms.max(1));
    options.socket_group = a.socket_group;
    options.driver = driver;
    if let Some(dir) = a.tls_dir {
        let id = srmig_tls::PeerIdentity::new(srmig_tls::Role::Controller, a.tls_name)?;
        options.tls = Some(srmig_controller::ControllerTls {
            files: srmig_tls::TlsFiles::in_dir(&dir, &id),
            listen: a.listen,
        });
    }
    match srmig_controller::run_blocking(options) {
        Err(srmig_controller::DaemonError::LeadershipLost) => {
            eprintln!("srmig controller: lost the leadership of the replicas; exiting (status 3)");
            std::process::exit(3);
        }
        other => other?,
    }
    Ok(())
}

fn cmd_replay(config: PathBuf, pcaps: Vec<String>, out: PathBuf, quiet: bool) -> Result<()> {
    let cfg = ReplayConfig::load(&config)?;
    for note in &cfg.notes {
        eprintln!("note: {}: {note}", config.display());
    }
    let mut inputs = Vec::new();
    for p in pcaps {
        let Some((port, file)) = p.split_once('=') else {
            bail!("--pcap {p}: expected PORT=FILE, e.g. --pcap up0=in.pcap");
        };
        inputs.push(Input {
            port: port.to_owned(),
            file: PathBuf::from(file),
        });
    }
    // Records are printed and spooled into summary.json as the replay goes: memory does not
    // grow with the captures.
    let mut story = Story {
        writer: srmig_replay::SummaryWriter::create(&out)?,
        quiet,
    };
    let summary = srmig_replay::replay_into(&cfg, &inputs, &out, &mut story)?;
    for note in summary.notes.iter().filter(|n| !cfg.notes.contains(n)) {
        eprintln!("note: {note}");
    }
    let path = story.writer.finish(&summary)?;
    print_totals(&summary);
    println!("summary: {}", path.display());
    Ok(())
}

/// `srmig replay`'s records: each printed as it happens (unless --quiet) and streamed into
/// summary.json.
struct Story {
    writer: srmig_replay::SummaryWriter,
    quiet: bool,
}

impl srmig_replay::RecordSink for Story {
    fn packet(&mut self, p: &PacketRecord) -> Result<(), srmig_replay::ReplayError> {
        if !self.quiet {
            print_packet(p);
        }
        self.writer.packet(p)
    }

    fn generated(
        &mut self,
        g: &srmig_replay::run::GeneratedRecord,
    ) -> Result<(), srmig_replay::ReplayError> {
        if !self.quiet {
            print_generated(g);
        }
        self.writer.generated(g)
    }

    fn event(
        &mut self,
        e: &srmig_replay::run::EventRecord,
    ) -> Result<(), srmig_replay::ReplayError> {
        if !self.quiet {
            print_event(e);
        }
        Ok(())
    }
}

fn write_summary(summary: &Summary, out: &std::path::Path) -> Result<PathBuf> {
    let path = out.join("summary.json");
    // Written as it is encoded (a summary has a record per packet: no copy in memory).
    let file =
        std::fs::File::create(&path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut w = std::io::BufWriter::new(file);
    serde_json::to_writer_pretty(&mut w, summary)
        .with_context(|| format!("cannot write {}", path.display()))?;
    std::io::Write::flush(&mut w).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

fn verdict_text(p: &PacketRecord) -> String {
    match p.verdict {
        "tx" => format!("-> {}", p.egress.as_deref().unwrap_or("?")),
        "drop" => format!("DROP {}", p.reason.unwrap_or("?")),
        "held" => format!("HELD for {}", p.vm.as_deref().unwrap_or("?")),
        other => other.to_owned(),
    }
}

fn print_event(e: &srmig_replay::run::EventRecord) {
    println!(
        "  {:>9.3} ms  == {} is now {:?}",
        e.time_us as f64 / 1000.0,
        e.vm,
        e.state
    );
}

fn print_generated(g: &srmig_replay::run::GeneratedRecord) {
    println!(
        "  {:>9.3} ms  <- {} released/generated: {}",
        g.time_us as f64 / 1000.0,
        g.egress,
        g.summary
    );
}

/// The per-packet story: each input packet with its verdict, VM state changes where they
/// happened, and what the node generated or released, in time order.
fn print_packets(s: &Summary) {
    let mut events = s.events.iter().peekable();
    let mut generated = s.generated.iter().peekable();
    for p in &s.packets {
        while let Some(e) = events.next_if(|e| e.after_packets < p.n) {
            print_event(e);
            while let Some(g) = generated.next_if(|g| g.time_us <= e.time_us) {
                print_generated(g);
            }
        }
        print_packet(p);
        while let Some(g) = generated.next_if(|g| g.time_us <= p.time_us) {
            print_generated(g);
        }
    }
    events.for_each(print_event);
    generated.for_each(print_generated);
}

fn print_packet(p: &PacketRecord) {
    println!(
        "#{:<4}{:>9.3} ms  {} {:<28} {}",
        p.n,
        p.time_us as f64 / 1000.0,
        p.port,
        verdict_text(p),
        p.summary
    );
}

fn print_totals(s: &Summary) {
    let t = &s.totals;
    println!(
        "{} packets in: {} forwarded/delivered, {} held, {} dropped, {} consumed; {} generated or released",
        t.packets, t.tx, t.held, t.dropped, t.consumed, t.generated
    );
    for (reason, n) in &s.counters.drops {
        println!("  drops {reason}: {n}");
    }
    for o in &s.outputs {
        println!("  wrote {} ({} frames)", o.file, o.frames);
    }
}

fn cmd_demo(out: PathBuf) -> Result<()> {
    let report = srmig_replay::demo::run_demo(&out)?;
    println!(
        "Example migration of vm1 from host S to host D over the SR path S::End.S -> D::End.SBUF"
    );
    println!("input: {}\n", report.input.display());
    println!("== host S (End.S; vm1 pauses after packet 4) ==");
    print_packets(&report.source);
    print_totals(&report.source);
    write_summary(&report.source, &report.source_out)?;
    println!("\n== host D (End.SBUF; vm1 resumes 3.5 ms after the first forwarded packet) ==");
    print_packets(&report.dest);
    print_totals(&report.dest);
    write_summary(&report.dest, &report.dest_out)?;
    let delivered_s = report
        .source
        .packets
        .iter()
        .filter(|p| p.egress.as_deref() == Some("vm1-tap"))
        .count();
    let delivered_d = report
        .dest
        .packets
        .iter()
        .filter(|p| p.egress.as_deref() == Some("vm1-tap"))
        .count()
        + report
            .dest
            .generated
            .iter()
            .filter(|g| g.egress == "vm1-tap")
            .count();
    let sent = report.source.packets.len();
    println!(
        "\nvm1 received {} of {} packets ({} at S before the pause, {} at D), lost {}.",
        delivered_s + delivered_d,
        sent,
        delivered_s,
        delivered_d,
        sent.saturating_sub(delivered_s + delivered_d)
    );
    println!(
        "Captures and summary.json files are under {}",
        out.display()
    );
    Ok(())
}

fn cmd_lab_migrate(args: LabMigrateArgs) -> Result<()> {
    use srmig_lab::orchestrate as lab;
    clean_stale_labs();
    let workloads = lab::WorkloadKind::parse_set(&args.workload)?;
    let mut run = lab::RunPlan::new(
        lab::parse_strategy(&args.strategy)?,
        workloads,
        args.migrations,
    );
    run.timing = lab::MigrationTiming {
        precopy: Duration::from_millis(args.precopy_ms),
        downtime: Duration::from_millis(args.downtime_ms),
    };
    run.gap = Duration::from_millis(args.gap_ms);
    run.baseline = Duration::from_millis(args.baseline_ms);
    run.http_rate = args.http_rate;
    if args.probe_interval_us < 100 {
        bail!(
            "--probe-interval-us {}: at least 100",
            args.probe_interval_us
        );
    }
    run.probe_interval = Duration::from_micros(args.probe_interval_us);
    run.chain = args.chain;
    run.family = srmig_lab::report::Family::parse(&args.family).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown --family {:?}: expected ipv6, ipv4 or dual",
            args.family
        )
    })?;
    run.faults = lab::fault::FaultPlan {
        faults: args
            .fault
            .iter()
            .map(|f| f.parse())
            .collect::<Result<_, _>>()?,
        down: Duration::from_millis(args.fault_down_ms),
    };
    let store_etcd = match args.store.as_str() {
        "embedded" => false,
        "etcd" => true,
        other => bail!("unknown --store {other:?}: expected embedded or etcd"),
    };
    if args.controllers == 0 || (args.controllers > 1 && !store_etcd) {
        bail!("--controllers N: N >= 1, and N > 1 needs --store etcd");
    }
    let mut plan = lab::plan::Plan::sized(args.hosts, args.vms).map_err(|e| anyhow::anyhow!(e))?;
    if let Some(mode) = args.io {
        if !["auto", "xdp", "packet"].contains(&mode.as_str()) {
            bail!("--io: {mode:?} is not auto, xdp or packet");
        }
        plan.io_mode = Some(mode);
    }
    plan.vm_fast_path = !args.no_vm_fast_path;
    plan.vm_tc_hook = args.vm_tc_hook.clone();
    plan.hmac = args.hmac;
    let mut testbed = lab::TestbedOptions {
        plan,
        propagation_delay: Duration::from_millis(args.propagation_delay_ms),
        bin_dir: args.bin_dir,
        keep_dir: args.work_dir.is_some(),
        work_dir: args.work_dir,
        controller_process: args.controller_process,
        controllers: args.controllers,
        store_etcd,
        ..lab::TestbedOptions::default()
    };
    testbed.qemu.guest_dir = args.guest_dir;
    testbed.qemu.memory_mib = args.memory_mib;
    testbed.qemu.driver.switchover_wait = (args.qmp_switchover_wait_ms > 0)
        .then(|| Duration::from_millis(args.qmp_switchover_wait_ms));
    let shown = progress::LabProgress::new();
    testbed.progress = shown.progress();
    let options = lab::MigrateOptions {
        vm_kind: lab::parse_vm_kind(&args.vm_kind)?,
        testbed,
        run,
    };
    let outcome = lab::run_migrate(&options);
    shown.finish();
    let outcome = outcome?;
    outcome.write(&args.report)?;
    print!("{}", outcome.summary());
    println!("report: {}", args.report.display());
    Ok(())
}

fn cmd_lab_demo(out: PathBuf, migrations: u32, workload: &str) -> Result<()> {
    cmd_lab_paper(
        out,
        migrations,
        workload,
        Duration::from_millis(100),
        srmig_lab::orchestrate::TestbedOptions::default(),
    )
}

fn cmd_lab_paper(
    out: PathBuf,
    migrations: u32,
    workload: &str,
    propagation_delay: Duration,
    testbed: srmig_lab::orchestrate::TestbedOptions,
) -> Result<()> {
    use srmig_lab::orchestrate as lab;
    if !lab::is_root() {
        bail!(
            "`srmig demo` runs the netns lab: it needs root (network namespaces, veth pairs, \
             AF_PACKET sockets for srmigd). Run it as root (sudo), or run `srmig demo --offline` \
             for the replay demo, which needs neither."
        );
    }
    clean_stale_labs();
    let mut options = lab::demo::DemoOptions::new(out.clone());
    options.migrations = migrations;
    options.workloads = lab::WorkloadKind::parse_set(workload)?;
    options.propagation_delay = propagation_delay;
    let migration = match testbed.vm_kind {
        srmig_lab::report::VmKind::Netns => "emulated migrations: 500 ms pre-copy, 175 ms downtime",
        srmig_lab::report::VmKind::Qemu => "QEMU live migrations (TCG guest, over QMP)",
        srmig_lab::report::VmKind::Libvirt => {
            "libvirt live migrations (virsh migrate --live, TCG guest)"
        }
        // parse_vm_kind never yields it; the testbed would refuse it.
        srmig_lab::report::VmKind::Sim => "simulated migrations (use `srmig sim paper`)",
    };
    options.testbed = testbed;
    let shown = progress::LabProgress::new();
    options.testbed.progress = shown.progress();
    println!(
        "srmig lab demo: one VM migrating between hosts s and d while a client VM on host c \
         talks to it;\n{} migrations per strategy and workload, {migration}, {} ms mapping \
         propagation delay",
        options.migrations,
        options.propagation_delay.as_millis()
    );
    let steps = options.testbed.progress.clone();
    let runs = lab::demo::run_demo(&options, |line| steps.step(line));
    shown.finish();
    let runs = runs?;
    let files = lab::demo::write_outputs(&out, &runs)?;
    println!();
    print!("{}", lab::demo::table(&runs));
    println!();
    for r in &runs {
        println!("report {}: {}", r.name, r.report.display());
    }
    for f in &files {
        println!("wrote {}", f.display());
    }
    Ok(())
}

fn cmd_bench(json: bool, ms: u64, filter: Option<String>) -> Result<()> {
    let report = srmig_bench::run_dataplane(Duration::from_millis(ms), filter.as_deref())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    if !report.optimized {
        println!("warning: debug build; use --release for meaningful numbers");
    }
    println!("{:<20} {:>8} {:>12}", "behavior", "Mpps", "ns/packet");
    for (name, r) in &report.behaviors {
        println!("{:<20} {:>8.2} {:>12.1}", name, r.mpps, r.ns_per_packet);
    }
    Ok(())
}

fn cmd_bench_control(args: BenchControlArgs) -> Result<()> {
    use srmig_bench::control;
    if !args.etcd_endpoints.is_empty() && args.store != control::StoreKind::Etcd {
        bail!("--etcd-endpoints needs --store etcd");
    }
    let options = control::Options {
        hosts: args.hosts,
        store: args.store,
        etcd_endpoints: args.etcd_endpoints,
        migrations: args.migrations,
        concurrent: args.concurrent,
        batches: args.batches,
        setup: args.setup,
        host_poll: Duration::from_millis(args.host_poll_ms),
        ack_timeout: Duration::from_millis(args.ack_timeout_ms),
        ..control::Options::default()
    };
    let report = control::run(&options, &mut |line| eprintln!("# {line}"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", control::render_table(&report));
    }
    Ok(())
}

fn cmd_bench_forward(args: BenchForwardArgs) -> Result<()> {
    use srmig_bench::forward;
    clean_stale_labs();
    let options = forward::Options {
        frame_bytes: args.frame_bytes,
        workers: args.workers,
        flows: args.flows,
        io: args.io,
        fast_path: args.fast_path == "on",
        vm_tc_hook: args.vm_tc_hook,
        reps: args.reps,
        duration: Duration::from_millis(args.duration_ms),
        cases: forward::Case::parse_list(&args.cases)?,
        srmigd: args.srmigd,
        keep: args.keep,
        linux_zero_loss: !args.no_linux_zero_loss,
        ..forward::Options::default()
    };
    let report = forward::run(&options, &mut |line| eprintln!("# {line}"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", forward::render_table(&report));
    }
    Ok(())
}
