//! `srmig bench control`: how long the controller takes to arm the SR path of a migrating VM on
//! every ingress, and to commit, with N hosts; see `docs/bench-control.md`.
//!
//! ```text
//!  driver (this thread)          controller runtime (2 workers)     hosts runtime (2 workers)
//!  ControllerClient ── unix ──►  srmig_controller::Daemon  ── PUT /v1/config ──► h0 .. h<N-1>:
//!   plays the hypervisor         (the real daemon: engine,    GET /v1/status      axum on a unix
//!   (VM state reports,            store, pushers, polls)  ◄── Ack ────────────    socket, a real
//!    POST .../hypervisor)              │                                          srmig_agent::Agent
//!                                      └── embedded redb file, or etcd (started here, or
//!                                          --etcd-endpoints)
//! ```
//!
//! # One run
//! 1. Start etcd (for `--store etcd` without `--etcd-endpoints`), the N hosts, the daemon.
//! 2. Register N hosts, then N VMs (`vm<j>` at home on `h<j>`), and wait until every host has
//!    acknowledged its latest config (the setup is timed, not measured).
//! 3. `--migrations M`, one after another: migration `k` moves `vm<k mod N>` between its home
//!    host and the next one (there and back on later rounds). Each one, as the lab's emulated
//!    hypervisor does with no pre-copy time and no downtime: `POST /v1/migrations`
//!    (`sr-buffer`); poll until `expect-hypervisor-done`; the source's agent is told the VM
//!    paused and its report posted; the destination's agent is told it runs and its report
//!    posted (the switchover); `POST .../hypervisor {"event":"completed"}`; poll until the
//!    migration ends, which must be `completed`.
//! 4. `--batches B` of `--concurrent K` migrations of distinct VMs started together.
//!
//! # What is measured
//! Times come from the controller's own phase records ([`srmig_api::PhaseRecord`], Unix
//! milliseconds; same clock as the driver, same process), so polling adds nothing to them:
//! - `armed_ms`: from just before `POST /v1/migrations` to the record of
//!   `expect-hypervisor-done`, which the controller enters when every host has acknowledged
//!   the config with the SR path (endpoint acks from S and D first, then the path on all N);
//! - `committed_ms`: from the same start to the record of `expect-cleanup-acks`, entered when
//!   every host has acknowledged the commit (the mapping "on D"). The bench sets the
//!   controller's `drain_ms` to 0 so that this phase starts at the last commit ack (and
//!   `fence_wait_ms` to 0: the fake hosts forward no packets, so no commit-fence markers);
//! - `commit_ms`: from just before the destination's "running" report (the switchover) to the
//!   same record: the commit alone.
//!
//! The phase records have millisecond resolution (their times are truncated: each figure may
//! read up to 1 ms short).
//!
//! The time limits that would turn a slow phase into a rollback are lifted (ack timeout,
//! `--ack-timeout-ms`, default 60 s; push request timeout 30 s), so that the bench measures
//! how long a phase takes instead of failing it. Everything else is the daemon's default,
//! including its heartbeat `GET /v1/status` to every host every 2 s.
//!
//! This reads clocks and spawns threads and etcd: it is a benchmark driver, not a core crate.

mod etcd;
mod hosts;
mod report;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use srmig_api::{HostId, MigrateRequest, MigrationPhase, MigrationStatus, Strategy, VmId, VmState};
use srmig_controller::{
    ClientError, ControllerClient, Daemon, DaemonError, EtcdOptions, HypervisorEventKind,
    HypervisorPost, StoreSpec,
};

pub use report::{render_table, ControlReport, Percentiles, Rss, Section};

use report::round2;

use hosts::{Fleet, WireSnapshot};

/// The time limit of each call to the controller: it answers only between the acks it
/// processes, and with a thousand hosts a registration can wait behind many of them.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Where the controller keeps its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// The embedded redb file (the default of `srmig controller`).
    Embedded,
    /// etcd.
    Etcd,
}

impl StoreKind {
    /// `embedded` or `etcd`.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Embedded => "embedded",
            StoreKind::Etcd => "etcd",
        }
    }
}

impl std::str::FromStr for StoreKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "embedded" => Ok(StoreKind::Embedded),
            "etcd" => Ok(StoreKind::Etcd),
            other => Err(format!("--store {other:?}: expected embedded or etcd")),
        }
    }
}

/// How the hosts and VMs get into the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupKind {
    /// `POST /v1/hosts` and `POST /v1/vms`, one by one, as an operator would.
    Api,
    /// Written into the store before the daemon starts, which then restores them and pushes
    /// every host its config once, as a restarted controller does (registering N VMs
    /// through the API costs every host a config push per VM: O(N^2) pushes).
    Store,
}

impl std::str::FromStr for SetupKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "api" => Ok(SetupKind::Api),
            "store" => Ok(SetupKind::Store),
            other => Err(format!("--setup {other:?}: expected api or store")),
        }
    }
}

impl SetupKind {
    /// `api` or `store`.
    pub fn as_str(self) -> &'static str {
        match self {
            SetupKind::Api => "api",
            SetupKind::Store => "store",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Hosts (and VMs: one at home on each), at least 2.
    pub hosts: usize,
    /// The store.
    pub store: StoreKind,
    /// `--store etcd`: an etcd cluster to use instead of starting one (client URLs; the
    /// request count is read from the first one's `/metrics`, `http://` only).
    pub etcd_endpoints: Vec<String>,
    /// Migrations one after another.
    pub migrations: usize,
    /// Migrations started together in each batch (0: no batches).
    pub concurrent: usize,
    /// Batches of `concurrent` migrations.
    pub batches: usize,
    /// How the hosts and VMs are registered.
    pub setup: SetupKind,
    /// The controller's heartbeat: every host's `GET /v1/status` this often (the daemon's
    /// default is 2 s).
    pub host_poll: Duration,
    /// The controller's ack timeout of the prepare phases.
    pub ack_timeout: Duration,
    /// How long the setup (registration, first configs acknowledged) may take.
    pub setup_limit: Duration,
    /// How long one migration may take before the bench gives up.
    pub migration_limit: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            hosts: 100,
            store: StoreKind::Embedded,
            etcd_endpoints: Vec::new(),
            migrations: 20,
            concurrent: 10,
            batches: 2,
            setup: SetupKind::Api,
            host_poll: srmig_controller::Options::new("", "").host_poll,
            ack_timeout: Duration::from_secs(60),
            setup_limit: Duration::from_secs(1800),
            migration_limit: Duration::from_secs(300),
        }
    }
}

/// Why the bench could not run or finish.
#[derive(Debug, thiserror::Error)]
pub enum ControlBenchError {
    /// The options or the generated configuration are wrong.
    #[error("{0}")]
    Setup(String),
    /// A file, socket or process operation failed.
    #[error("cannot {what}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// etcd could not be started or read.
    #[error("{0}")]
    Etcd(String),
    /// The controller daemon failed.
    #[error("the controller daemon failed")]
    Daemon(#[source] DaemonError),
    /// A request to the controller failed.
    #[error("{what}")]
    Client {
        /// The request.
        what: String,
        /// The error.
        #[source]
        source: ClientError,
    },
    /// A migration did not complete, or took too long.
    #[error("{0}")]
    Migration(String),
    /// The setup did not converge in time.
    #[error("{0}")]
    Timeout(String),
}

fn client_error(what: impl Into<String>) -> impl FnOnce(ClientError) -> ControlBenchError {
    let what = what.into();
    move |source| ControlBenchError::Client { what, source }
}

/// Unix time in milliseconds, with a fraction.
pub(crate) fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// `VmRSS` and `VmHWM` of `/proc/<pid>/status` (`self` for this process), in MiB.
pub(crate) fn rss_mib(pid: &str) -> (f64, f64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// How one migration ended: its figures, or why it did not complete.
type Outcome = Result<Sample, String>;

/// One migration's figures, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    endpoint_acks: f64,
    armed: f64,
    commit: f64,
    committed: f64,
}

/// The running pieces, torn down in order on drop (daemon, hosts, etcd).
struct Bench {
    client: ControllerClient,
    fleet: Arc<Fleet>,
    /// Where each VM is mapped now (host index).
    at: Vec<usize>,
    etcd_metrics: Option<String>,
    options: Options,
}

/// Runs the bench; `progress` gets a line now and then (setup steps, sections).
pub fn run(
    options: &Options,
    progress: &mut dyn FnMut(&str),
) -> Result<ControlReport, ControlBenchError> {
    let n = options.hosts;
    if n < 2 {
        return Err(ControlBenchError::Setup(
            "--hosts must be at least 2".into(),
        ));
    }
    if n > 60_000 {
        return Err(ControlBenchError::Setup(
            "--hosts must be at most 60000 (one VM address per host in 2001:db8:a::/112)".into(),
        ));
    }
    if options.concurrent > n {
        return Err(ControlBenchError::Setup(format!(
            "--concurrent {} is more than the {n} VMs",
            options.concurrent
        )));
    }
    let work = tempfile::Builder::new()
        .prefix("srmig-bench-control-")
        .tempdir()
        .map_err(|source| ControlBenchError::Io {
            what: "create a work directory".into(),
            source,
        })?;
    let (rss_start, _) = rss_mib("self");

    // etcd.
    let etcd_process = match (options.store, options.etcd_endpoints.is_empty()) {
        (StoreKind::Etcd, true) => {
            let bin = etcd::find_binary()?;
            progress(&format!("starting {}", bin.display()));
            Some(etcd::EtcdProcess::start(&bin, &work.path().join("etcd"))?)
        }
        _ => None,
    };
    let etcd_endpoints: Vec<String> = match &etcd_process {
        Some(p) => vec![p.url.clone()],
        None => options.etcd_endpoints.clone(),
    };

    let runtime = |name: &str| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(name)
            .enable_all()
            .build()
            .map_err(|source| ControlBenchError::Io {
                what: format!("start the {name} runtime"),
                source,
            })
    };
    let hosts_rt = runtime("bench-hosts")?;
    let controller_rt = runtime("bench-controller")?;
    let driver = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| ControlBenchError::Io {
            what: "start the driver runtime".into(),
            source,
        })?;

    // Hosts.
    progress(&format!("starting {n} hosts (agents on unix sockets)"));
    let fleet = hosts_rt.block_on(Fleet::start(n, work.path()))?;
    let fleet = Arc::new(fleet);
    let (rss_hosts, _) = rss_mib("self");

    // Controller.
    let socket = work.path().join("controller.sock");
    let mut daemon_options = srmig_controller::Options::new(&socket, work.path().join("c.redb"));
    if options.store == StoreKind::Etcd {
        let mut etcd = EtcdOptions::new(etcd_endpoints.clone());
        etcd.prefix = format!(
            "/srmig-bench-control/{}-{}/",
            std::process::id(),
            unix_ms() as u64
        );
        daemon_options.store = StoreSpec::Etcd(etcd);
    }
    daemon_options.timeouts.ack_ms = u64::try_from(options.ack_timeout.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    daemon_options.timeouts.drain_ms = 0;
    // The fake hosts forward no packets, so they send no commit-fence markers.
    daemon_options.timeouts.fence_wait_ms = 0;
    daemon_options.push.request_timeout = Duration::from_secs(30);
    daemon_options.host_poll = options.host_poll;
    if options.setup == SetupKind::Store {
        progress(&format!("writing {n} hosts and {n} VMs into the store"));
        preload(&daemon_options.store, &fleet)?;
    }
    let daemon = controller_rt
        .block_on(Daemon::start(daemon_options))
        .map_err(ControlBenchError::Daemon)?;

    let mut bench = Bench {
        client: ControllerClient::new(&socket).with_timeout(CALL_TIMEOUT),
        fleet: fleet.clone(),
        at: (0..n).collect(),
        etcd_metrics: etcd_endpoints.first().cloned(),
        options: options.clone(),
    };
    let result = driver.block_on(bench.measure(progress, rss_start, rss_hosts, &etcd_process));

    // Teardown: the controller first (no pushes to hosts that are gone), then the hosts.
    let stopped = controller_rt.block_on(daemon.shutdown());
    controller_rt.shutdown_timeout(Duration::from_secs(2));
    drop(bench);
    if let Ok(mut f) = Arc::try_unwrap(fleet) {
        hosts_rt.block_on(async { f.stop() });
    }
    hosts_rt.shutdown_timeout(Duration::from_secs(2));
    drop(etcd_process);
    let report = result?;
    stopped.map_err(ControlBenchError::Daemon)?;
    Ok(report)
}

impl Bench {
    async fn measure(
        &mut self,
        progress: &mut dyn FnMut(&str),
        rss_start: f64,
        rss_hosts: f64,
        etcd_process: &Option<etcd::EtcdProcess>,
    ) -> Result<ControlReport, ControlBenchError> {
        let n = self.options.hosts;
        let t_setup = Instant::now();
        if self.options.setup == SetupKind::Api {
            self.register(progress).await?;
        }
        self.converge().await?;
        let setup_s = round2(t_setup.elapsed().as_secs_f64());
        let (rss_setup, _) = rss_mib("self");
        progress(&format!(
            "setup done in {setup_s:.1} s; {} migrations one after another",
            self.options.migrations
        ));

        // One after another.
        let before = self.counters().await?;
        let t = Instant::now();
        let mut samples = Vec::with_capacity(self.options.migrations);
        for k in 0..self.options.migrations {
            let j = k % n;
            let o = self.migrate(j).await?;
            progress(&match &o {
                Ok(s) => format!(
                    "migration {}/{}: armed {:.0} ms, committed {:.0} ms",
                    k + 1,
                    self.options.migrations,
                    s.armed,
                    s.committed
                ),
                Err(e) => format!("migration {}/{}: {e}", k + 1, self.options.migrations),
            });
            samples.push(o);
        }
        let sequential = self
            .section(&samples, t.elapsed(), &before, &self.counters().await?)
            .await;

        // Concurrent batches.
        let k = self.options.concurrent;
        let concurrent = if k > 0 && self.options.batches > 0 {
            progress(&format!(
                "{} batches of {k} concurrent migrations",
                self.options.batches
            ));
            let before = self.counters().await?;
            let t = Instant::now();
            let mut samples = Vec::new();
            for b in 0..self.options.batches {
                let first = self.options.migrations + b * k;
                let vms: Vec<usize> = (0..k).map(|x| (first + x) % n).collect();
                samples.extend(self.migrate_together(&vms).await?);
            }
            Some(
                self.section(&samples, t.elapsed(), &before, &self.counters().await?)
                    .await,
            )
        } else {
            None
        };
        let (rss_end, rss_peak) = rss_mib("self");
        let etcd_rss = etcd_process
            .as_ref()
            .map(|p| round2(rss_mib(&p.pid().to_string()).1));
        let push_failures = self.push_failures().await;
        Ok(ControlReport {
            hosts: n,
            vms: n,
            store: self.options.store.as_str(),
            sequential,
            concurrent_migrations: k,
            concurrent,
            setup: self.options.setup.as_str(),
            host_poll_ms: u64::try_from(self.options.host_poll.as_millis()).unwrap_or(u64::MAX),
            setup_s,
            rss_mb: Rss {
                start: round2(rss_start),
                hosts_started: round2(rss_hosts),
                setup_done: round2(rss_setup),
                end: round2(rss_end),
                peak: round2(rss_peak),
            },
            host_kb: round2((rss_hosts - rss_start).max(0.0) * 1024.0 / n as f64),
            etcd_rss_mb: etcd_rss,
            push_failures,
            optimized: !cfg!(debug_assertions),
        })
    }

    /// Registers the hosts and VMs through the API.
    async fn register(&mut self, progress: &mut dyn FnMut(&str)) -> Result<(), ControlBenchError> {
        let n = self.options.hosts;
        let step = (n / 10).max(1);
        let t = Instant::now();
        for (i, reg) in self.fleet.registrations().enumerate() {
            self.client
                .add_host(reg)
                .await
                .map_err(client_error(format!("register host {i}")))?;
            if (i + 1) % step == 0 {
                progress(&format!(
                    "registered {} of {n} hosts ({:.1} s)",
                    i + 1,
                    t.elapsed().as_secs_f64()
                ));
            }
        }
        for j in 0..n {
            self.client
                .add_vm(&hosts::vm_info(j)?)
                .await
                .map_err(client_error(format!("register VM {j}")))?;
            if (j + 1) % step == 0 {
                progress(&format!(
                    "registered {} of {n} VMs ({:.1} s)",
                    j + 1,
                    t.elapsed().as_secs_f64()
                ));
            }
        }
        Ok(())
    }

    /// Waits until every host acknowledged its latest config.
    async fn converge(&mut self) -> Result<(), ControlBenchError> {
        let n = self.options.hosts;
        let start = Instant::now();
        loop {
            let hosts = self
                .client
                .hosts()
                .await
                .map_err(client_error("list the hosts"))?;
            let behind = hosts
                .iter()
                .filter(|h| h.generation_acked < h.generation_pushed || h.generation_pushed == 0)
                .count();
            if behind == 0 && hosts.len() == n {
                return Ok(());
            }
            if start.elapsed() > self.options.setup_limit {
                return Err(ControlBenchError::Timeout(format!(
                    "{behind} of {n} hosts had not acknowledged their first configs after {} s",
                    self.options.setup_limit.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Migrates VM `j` to the other host it can run on, and records it.
    async fn migrate(&mut self, j: usize) -> Result<Outcome, ControlBenchError> {
        let (from, to) = self.route(j);
        let s = migrate_one(
            &self.client,
            &self.fleet,
            j,
            from,
            to,
            self.options.migration_limit,
        )
        .await?;
        if s.is_ok() {
            self.at[j] = to;
        }
        Ok(s)
    }

    /// Starts the migrations of the VMs `vms` together; waits for all of them.
    async fn migrate_together(&mut self, vms: &[usize]) -> Result<Vec<Outcome>, ControlBenchError> {
        let mut set = tokio::task::JoinSet::new();
        for &j in vms {
            let (from, to) = self.route(j);
            let (client, fleet, limit) = (
                self.client.clone(),
                self.fleet.clone(),
                self.options.migration_limit,
            );
            set.spawn(async move {
                migrate_one(&client, &fleet, j, from, to, limit)
                    .await
                    .map(|s| (j, to, s))
            });
        }
        let mut samples = Vec::with_capacity(vms.len());
        while let Some(joined) = set.join_next().await {
            let (j, to, s) = joined.map_err(|e| {
                ControlBenchError::Migration(format!("a migration task failed: {e}"))
            })??;
            if s.is_ok() {
                self.at[j] = to;
            }
            samples.push(s);
        }
        Ok(samples)
    }

    /// (from, to) of VM `j`'s next migration: between its home `h<j>` and `h<j+1>`.
    fn route(&self, j: usize) -> (usize, usize) {
        let n = self.options.hosts;
        let home = j;
        let away = (j + 1) % n;
        let from = self.at[j];
        (from, if from == home { away } else { home })
    }

    async fn counters(&self) -> Result<(WireSnapshot, Option<u64>), ControlBenchError> {
        let etcd = match &self.etcd_metrics {
            Some(url) => Some(etcd::requests_served(url).await?),
            None => None,
        };
        Ok((self.fleet.stats(), etcd))
    }

    async fn section(
        &self,
        outcomes: &[Outcome],
        wall: Duration,
        before: &(WireSnapshot, Option<u64>),
        after: &(WireSnapshot, Option<u64>),
    ) -> Section {
        let m = outcomes.len().max(1) as f64;
        let samples: Vec<Sample> = outcomes.iter().filter_map(|o| o.clone().ok()).collect();
        let mut failures: Vec<String> = outcomes.iter().filter_map(|o| o.clone().err()).collect();
        failures.dedup();
        let wire = after.0.since(&before.0);
        let pick =
            |f: fn(&Sample) -> f64| Percentiles::of(&samples.iter().map(f).collect::<Vec<f64>>());
        Section {
            migrations: outcomes.len(),
            failed: outcomes.len() - samples.len(),
            failures,
            armed_ms: pick(|s| s.armed),
            committed_ms: pick(|s| s.committed),
            commit_ms: pick(|s| s.commit),
            endpoint_acks_ms: pick(|s| s.endpoint_acks),
            etcd_requests_per_migration: match (before.1, after.1) {
                (Some(b), Some(a)) => Some(round2(a.saturating_sub(b) as f64 / m)),
                _ => None,
            },
            config_pushes_per_migration: round2(wire.config_puts as f64 / m),
            config_bytes_per_migration: (wire.config_bytes as f64 / m).round(),
            agent_apply_ms_per_migration: round2(wire.apply_ns as f64 / 1e6 / m),
            configs_refused: wire.refused,
            status_polls: wire.status_gets,
            status_bytes: wire.status_bytes,
            wall_s: round2(wall.as_secs_f64()),
        }
    }

    /// `srmig_controller_push_failures_total`, all kinds, from the controller's `/metrics`.
    async fn push_failures(&self) -> Option<u64> {
        let http = srmig_controller::http::UnixHttp::new(
            PathBuf::from(self.client.target()),
            Duration::from_secs(5),
        );
        let r = http
            .request(hyper::Method::GET, "/metrics", None)
            .await
            .ok()?;
        let text = String::from_utf8_lossy(&r.body);
        Some(
            text.lines()
                .filter(|l| l.starts_with("srmig_controller_push_failures_total"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum(),
        )
    }
}

/// Writes the fleet's hosts and one VM per host into the store `spec` (see
/// [`SetupKind::Store`]): what the daemon would have saved after registering them.
fn preload(spec: &StoreSpec, fleet: &Fleet) -> Result<(), ControlBenchError> {
    let registrations: Vec<_> = fleet.registrations().cloned().collect();
    let mut model = srmig_control::Model::default();
    for r in &registrations {
        model
            .add_host(r.info.clone())
            .map_err(|e| ControlBenchError::Setup(e.to_string()))?;
    }
    for j in 0..registrations.len() {
        model
            .add_vm(hosts::vm_info(j)?)
            .map_err(|e| ControlBenchError::Setup(e.to_string()))?;
    }
    let snapshot = srmig_control::ControllerSnapshot {
        model,
        generations: Default::default(),
        migrations: Vec::new(),
        finished: Vec::new(),
        next_id: 1,
        epoch: unix_ms() as u64,
    };
    let store_error = |e: srmig_controller::StoreError| {
        ControlBenchError::Setup(format!("cannot preload the store: {e}"))
    };
    let (mut store, loaded) = srmig_controller::Store::open_spec(spec).map_err(store_error)?;
    if loaded.is_some() {
        return Err(ControlBenchError::Setup(
            "the store is not empty; --setup store needs a new one".into(),
        ));
    }
    store.save(&registrations, &snapshot).map_err(store_error)?;
    Ok(())
}

/// The time of the first record of `phase` in `st`, Unix ms.
fn phase_at(st: &MigrationStatus, phase: MigrationPhase) -> Option<f64> {
    st.phases
        .iter()
        .find(|r| r.phase == phase)
        .map(|r| r.at_ms.0 as f64)
}

/// Polls migration `id` until `done` holds for its phase.
async fn wait_for(
    client: &ControllerClient,
    id: srmig_api::MigrationId,
    limit: Instant,
    what: &str,
    done: impl Fn(MigrationPhase) -> bool,
) -> Result<MigrationStatus, ControlBenchError> {
    loop {
        let st = client
            .migration(id)
            .await
            .map_err(client_error(format!("follow migration m{}", id.0)))?;
        if done(st.phase) {
            return Ok(st);
        }
        if Instant::now() > limit {
            return Err(ControlBenchError::Migration(format!(
                "migration m{} of {} did not reach {what} in time (phase {})",
                id.0, st.vm, st.phase
            )));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// One migration of VM `j` from host `from` to host `to`, driven as the lab's emulated
/// hypervisor does (see the module docs).
async fn migrate_one(
    client: &ControllerClient,
    fleet: &Fleet,
    j: usize,
    from: usize,
    to: usize,
    limit: Duration,
) -> Result<Outcome, ControlBenchError> {
    let bad = |e: String| ControlBenchError::Setup(e);
    let vm = hosts::vm_name(j);
    let req = MigrateRequest {
        vm: VmId::new(vm.clone()).map_err(|e| bad(e.to_string()))?,
        to: HostId::new(hosts::host_name(to)).map_err(|e| bad(e.to_string()))?,
        strategy: Strategy::SrBuffer,
    };
    let deadline = Instant::now() + limit;
    let t0 = unix_ms();
    let accepted = client
        .migrate(&req)
        .await
        .map_err(client_error(format!("migrate {vm} to {}", req.to)))?;
    let id = accepted.id;
    let armed = wait_for(client, id, deadline, "expect-hypervisor-done", |p| {
        p == MigrationPhase::ExpectHypervisorDone || p.is_terminal()
    })
    .await?;
    if armed.phase.is_terminal() {
        return Ok(Err(failed(&armed)));
    }
    // Stop-and-copy: paused at the source; resumed at the destination (the switchover).
    if let Some(r) = fleet.set_vm_state(from, &vm, VmState::Paused)? {
        client
            .report_vm_state(&r)
            .await
            .map_err(client_error(format!("report {vm} paused")))?;
    }
    let t_switch = unix_ms();
    if let Some(r) = fleet.set_vm_state(to, &vm, VmState::Running)? {
        client
            .report_vm_state(&r)
            .await
            .map_err(client_error(format!("report {vm} running")))?;
    }
    let completed = HypervisorPost {
        event: HypervisorEventKind::Completed,
        reason: None,
    };
    client
        .hypervisor(id, &completed)
        .await
        .map_err(client_error(format!("post completed for m{}", id.0)))?;
    let done = wait_for(client, id, deadline, "its end", MigrationPhase::is_terminal).await?;
    if done.phase != MigrationPhase::Completed {
        return Ok(Err(failed(&done)));
    }
    let at = |p| {
        phase_at(&done, p).ok_or_else(|| {
            ControlBenchError::Migration(format!("migration m{} has no {p} record", id.0))
        })
    };
    let path = at(MigrationPhase::ExpectPathAcks)?;
    let armed = at(MigrationPhase::ExpectHypervisorDone)?;
    let committed = at(MigrationPhase::ExpectCleanupAcks)?;
    let since = |t: f64, from: f64| (t - from).max(0.0);
    Ok(Ok(Sample {
        endpoint_acks: since(path, t0),
        armed: since(armed, t0),
        commit: since(committed, t_switch),
        committed: since(committed, t0),
    }))
}

/// Why migration `st` did not complete.
fn failed(st: &MigrationStatus) -> String {
    format!(
        "ended {}: {}",
        st.phase,
        st.error.as_deref().unwrap_or("no error given")
    )
}
