//! `srmig migrate` as an operator runs it: the real `srmig` binary against an in-process
//! controller daemon (the same code as `srmig controller`) and fake srmigd hosts (axum on
//! unix sockets that acknowledge every config and show VM states). The test plays the
//! hypervisor: it reports the VM paused and running, or posts the hypervisor's outcome.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use srmig_api::{
    Ack, HostConfig, HostId, HypervisorEvent, HypervisorProgress, HypervisorReport, MigrateRequest,
    MigrationId, MigrationPhase, MigrationStatus, Strategy, Timestamp, VmId, VmState,
    VmStateReport,
};
use srmig_controller::follow::{self, FollowError, FollowOptions};
use srmig_controller::{
    ControllerClient, Daemon, HostRegistration, HypervisorDriver, HypervisorEventKind,
    HypervisorPost, MigrationOrder, Options, ReportSink,
};
use tokio::task::JoinHandle;

// ----- fake srmigd -----

#[derive(Clone, Default)]
struct FakeState {
    host: String,
    /// (epoch, generation) of the last config applied.
    in_force: Arc<Mutex<Option<(u64, u64)>>>,
}

async fn put_config(State(s): State<FakeState>, body: Bytes) -> Response {
    let config: HostConfig = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    *s.in_force.lock().expect("lock") = Some((config.epoch, config.generation));
    Json(Ack {
        epoch: config.epoch,
        boot_epoch: 1,
        host: HostId::new(s.host.clone()).expect("name"),
        generation: config.generation,
    })
    .into_response()
}

async fn get_status(State(s): State<FakeState>) -> Response {
    let in_force = *s.in_force.lock().expect("lock");
    Json(srmig_api::HostStatus {
        name: s.host.clone(),
        boot_epoch: 1,
        epoch: in_force.map(|v| v.0),
        generation: in_force.map(|v| v.1),
        ports: vec![],
        vms: vec![],
        sids: vec![],
        policies: vec![],
        buffer: Default::default(),
        drops: Default::default(),
        icmp: Default::default(),
        holds: Default::default(),
        fence: Default::default(),
        release_latency: Default::default(),
    })
    .into_response()
}

struct FakeHost {
    socket: PathBuf,
    task: JoinHandle<()>,
}

impl FakeHost {
    fn start(name: &str, socket: PathBuf) -> Self {
        let listener = tokio::net::UnixListener::bind(&socket).expect("bind fake srmigd");
        let app = Router::new()
            .route("/v1/config", axum::routing::put(put_config))
            .route("/v1/status", axum::routing::get(get_status))
            .with_state(FakeState {
                host: name.to_owned(),
                ..FakeState::default()
            });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeHost { socket, task }
    }

    /// The host goes away (its socket stops answering).
    fn stop(&self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for FakeHost {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ----- a hypervisor driver that reports progress, like the QMP driver -----

/// Sends four progress samples (a quarter of 100 MB more each time, 100 ms apart), the final
/// figures and `completed`; the test then reports the VM running at the destination.
#[derive(Debug)]
struct FakeQemu;

impl HypervisorDriver for FakeQemu {
    fn name(&self) -> &'static str {
        "fake-qemu"
    }

    fn waits_for(&self) -> &'static str {
        "the fake QEMU to copy 100 MB"
    }

    fn start(&self, order: MigrationOrder, reports: ReportSink) {
        tokio::spawn(async move {
            const TOTAL: u64 = 100_000_000;
            for step in 1..=4u64 {
                tokio::time::sleep(Duration::from_millis(150)).await;
                let sent = TOTAL * step / 4 - 1;
                reports.progress(
                    order.id,
                    HypervisorProgress {
                        status: "active".into(),
                        total_time_ms: Some(step * 150),
                        ram_transferred: Some(sent),
                        ram_remaining: Some(TOTAL - sent),
                        ram_total: Some(TOTAL),
                        passes: Some(1),
                        ..Default::default()
                    },
                );
            }
            let done = HypervisorProgress {
                status: "completed".into(),
                total_time_ms: Some(700),
                ram_transferred: Some(TOTAL),
                ram_remaining: Some(0),
                ram_total: Some(TOTAL),
                passes: Some(2),
                downtime_ms: Some(12),
                ..Default::default()
            };
            reports.final_progress(order.id, done).await;
            reports
                .report(HypervisorReport {
                    vm: order.vm,
                    migration: order.id,
                    event: HypervisorEvent::Completed,
                })
                .await;
        });
    }

    fn cancel(&self, _order: MigrationOrder, _reports: ReportSink) {}
}

// ----- world -----

fn web1() -> VmId {
    VmId::new("web1").expect("name")
}

fn host(i: usize) -> HostId {
    HostId::new(format!("h{i}")).expect("name")
}

fn registration(i: usize, socket: &Path) -> HostRegistration {
    let json = format!(
        r#"{{"name":"h{i}","locator":"fc00:{i}::/48","sid_end_s":"fc00:{i}::e5","sid_end_sbuf":"fc00:{i}::eb","sid_dt6":"fc00:{i}::d6","underlay":"2001:db8:ff::{i}","api_socket":{:?}}}"#,
        socket.display().to_string()
    );
    serde_json::from_str(&json).expect("registration")
}

struct World {
    dir: tempfile::TempDir,
    socket: PathBuf,
    hosts: Vec<FakeHost>,
    daemon: Option<Daemon>,
    client: ControllerClient,
}

impl World {
    /// Three fake hosts, a controller (options `tweak`ed), web1 on h1, every host in sync.
    async fn new(tweak: impl FnOnce(&mut Options)) -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("controller.sock");
        let hosts: Vec<FakeHost> = (1..=3)
            .map(|i| FakeHost::start(&format!("h{i}"), dir.path().join(format!("h{i}.sock"))))
            .collect();
        let mut options = Options::new(&socket, dir.path().join("controller.redb"));
        tweak(&mut options);
        let daemon = Daemon::start(options).await.expect("controller starts");
        let client = ControllerClient::new(&socket);
        for (i, h) in hosts.iter().enumerate() {
            client
                .add_host(&registration(i + 1, &h.socket))
                .await
                .expect("host registered");
        }
        let vm = serde_json::from_str(
            r#"{"name":"web1","addresses":["2001:db8:a::10"],"mac":"52:54:00:00:00:10","host":"h1"}"#,
        )
        .expect("vm");
        client.add_vm(&vm).await.expect("vm registered");
        let w = World {
            dir,
            socket,
            hosts,
            daemon: Some(daemon),
            client,
        };
        w.wait_for("every host acknowledges", || async {
            let hosts = w.client.hosts().await.expect("hosts");
            hosts
                .iter()
                .all(|h| h.generation_pushed > 0 && h.generation_acked == h.generation_pushed)
                .then_some(())
        })
        .await;
        w
    }

    fn controller(&self) -> &str {
        self.socket.to_str().expect("utf-8 path")
    }

    async fn wait_for<T, F, Fut>(&self, what: &str, mut probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let start = Instant::now();
        loop {
            if let Some(v) = probe().await {
                return v;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "timed out waiting until {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The only migration, once it exists.
    async fn migration(&self) -> MigrationStatus {
        self.wait_for("the migration is requested", || async {
            self.client
                .migrations()
                .await
                .expect("list")
                .into_iter()
                .next()
        })
        .await
    }

    async fn wait_phase(&self, id: MigrationId, phase: MigrationPhase) -> MigrationStatus {
        self.wait_for(&format!("{id} reaches {phase}"), || async {
            let s = self.client.migration(id).await.expect("status");
            (s.phase == phase).then_some(s)
        })
        .await
    }

    async fn vm_state(&self, on: usize, state: VmState) {
        self.client
            .report_vm_state(&VmStateReport {
                vm: web1(),
                host: host(on),
                state,
                at: Timestamp(0),
                boot_epoch: None,
                last_delivery_us: None,
            })
            .await
            .expect("vm state accepted");
    }

    async fn hypervisor(&self, id: MigrationId, event: HypervisorEventKind, reason: Option<&str>) {
        self.client
            .hypervisor(
                id,
                &HypervisorPost {
                    event,
                    reason: reason.map(str::to_owned),
                },
            )
            .await
            .expect("hypervisor event accepted");
    }

    async fn shutdown(mut self) {
        if let Some(d) = self.daemon.take() {
            d.shutdown().await.expect("clean shutdown");
        }
    }
}

/// `srmig ARGS` running in the background; `.await` its output.
struct Srmig(JoinHandle<std::io::Result<Output>>);

impl Srmig {
    fn spawn(args: &[&str]) -> Srmig {
        let child = Command::new(env!("CARGO_BIN_EXE_srmig"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run srmig");
        Srmig(tokio::task::spawn_blocking(move || {
            child.wait_with_output()
        }))
    }

    async fn output(self) -> Ran {
        let out = tokio::time::timeout(Duration::from_secs(30), self.0)
            .await
            .expect("srmig ends within 30 s")
            .expect("join")
            .expect("output");
        Ran {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

#[derive(Debug)]
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn expect_code(&self, code: i32) {
        assert_eq!(self.code, Some(code), "{self:#?}");
    }
}

/// `12:00:01.234 UTC  +   234 ms  ...`
fn is_timestamped(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 30
        && b[2] == b':'
        && b[5] == b':'
        && b[8] == b'.'
        && line[12..].starts_with(" UTC  +")
        && line[..2].bytes().all(|c| c.is_ascii_digit())
}

// ----- tests -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_migration_exits_0_with_phase_and_heartbeat_lines() {
    let w = World::new(|_| {}).await;
    let run = Srmig::spawn(&[
        "migrate",
        "web1",
        "--to",
        "h2",
        "--controller",
        w.controller(),
        "--heartbeat",
        "300ms",
    ]);
    let id = w.migration().await.id;
    w.wait_phase(id, MigrationPhase::ExpectHypervisorDone).await;
    // Long enough for a few heartbeats while the hypervisor "works".
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    w.vm_state(1, VmState::Paused).await;
    w.vm_state(2, VmState::Running).await;
    w.hypervisor(id, HypervisorEventKind::Completed, None).await;
    let ran = run.output().await;
    ran.expect_code(0);
    let out = &ran.stdout;
    for expected in [
        "m1: web1 from h1 to h2 (sr-buffer), accepted (hypervisor driver external)",
        "requested: accepted by the controller",
        "expect-endpoint-acks: ",
        "expect-path-acks: SR path S::End.S -> D::End.SBUF pushed to every host",
        "expect-hypervisor-done: ",
        // What it waits for, with the id filled in, and the controller's own limit.
        "waiting for the hypervisor (driver external): an outside party",
        "POST /v1/migrations/1/hypervisor",
        "(hypervisor timeout 10 min)",
        "; waiting for the hypervisor (driver external); the controller asks it to cancel in 9 min",
        "source-paused: ",
        "expect-commit-acks: switched over",
        "expect-cleanup-acks: ",
        "completed: the VM runs on the destination",
        "m1 completed in ",
    ] {
        assert!(out.contains(expected), "no {expected:?} in\n{out}");
    }
    let beats = out.matches("still expect-hypervisor-done").count();
    assert!(beats >= 2, "{beats} heartbeats in\n{out}");
    let lines: Vec<&str> = out.lines().collect();
    let (last, progress) = lines.split_last().expect("lines");
    assert!(last.ends_with("web1 now runs on h2"), "{last}");
    for line in progress {
        assert!(is_timestamped(line), "not timestamped: {line:?}");
    }
    assert!(ran.stderr.is_empty(), "{}", ran.stderr);
    // `srmig migration show`: the timeline, and the figures derived from it.
    let show = Srmig::spawn(&["migration", "show", "m1", "--controller", w.controller()])
        .output()
        .await;
    show.expect_code(0);
    for expected in [
        "migration m1: web1 from h1 to h2 (sr-buffer), completed",
        "ms  source-paused",
        "path armed on every ingress ",
        "blackout seen by the controller ",
    ] {
        assert!(
            show.stdout.contains(expected),
            "no {expected:?} in\n{}",
            show.stdout
        );
    }
    let json = Srmig::spawn(&[
        "migration",
        "show",
        "1",
        "--json",
        "--controller",
        w.controller(),
    ])
    .output()
    .await;
    json.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(json.stdout.trim()).expect("JSON");
    assert!(v["derived"]["blackout_ms"].as_u64().is_some(), "{v}");
    assert!(v["derived"]["total_ms"].as_u64().is_some(), "{v}");
    let list = Srmig::spawn(&["migration", "list", "--controller", w.controller()])
        .output()
        .await;
    list.expect_code(0);
    assert!(
        list.stdout
            .starts_with("m1  web1  h1 -> h2  sr-buffer  completed"),
        "{}",
        list.stdout
    );
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hypervisor_failure_exits_3_and_says_why() {
    let w = World::new(|_| {}).await;
    let run = Srmig::spawn(&[
        "migrate",
        "web1",
        "--to",
        "h3",
        "--controller",
        w.controller(),
    ]);
    let id = w.migration().await.id;
    w.wait_phase(id, MigrationPhase::ExpectHypervisorDone).await;
    w.hypervisor(id, HypervisorEventKind::Failed, Some("disk on fire"))
        .await;
    let ran = run.output().await;
    ran.expect_code(3);
    assert!(
        ran.stdout.contains("expect-rollback-acks: rolling back"),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stderr.contains("m1 failed after ")
            && ran.stderr.contains("disk on fire")
            && ran.stderr.contains("web1 stays on h1"),
        "{}",
        ran.stderr
    );
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_that_do_not_acknowledge_are_named_then_the_migration_rolls_back() {
    let mut w = World::new(|o| o.timeouts.ack_ms = 1_500).await;
    w.hosts[2].stop();
    let run = Srmig::spawn(&[
        "migrate",
        "web1",
        "--to",
        "h2",
        "--controller",
        w.controller(),
        "--heartbeat",
        "400ms",
    ]);
    // h3 never acknowledges the SR path: the ack timeout rolls the migration back, and the
    // rollback waits for every host, h3 included, so h3 comes back once it is under way.
    let id = w.migration().await.id;
    w.wait_phase(id, MigrationPhase::ExpectRollbackAcks).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let socket = w.hosts[2].socket.clone();
    w.hosts[2] = FakeHost::start("h3", socket);
    let ran = run.output().await;
    ran.expect_code(3);
    assert!(
        ran.stdout.contains("not acknowledged yet: h3 (acked ")
            && ran.stdout.contains("; last push failed: generation ")
            && ran.stdout.contains("cannot connect to "),
        "{}",
        ran.stdout
    );
    assert!(ran.stderr.contains("web1 stays on h1"), "{}", ran.stderr);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_exits_4_and_leaves_the_migration_running() {
    let w = World::new(|_| {}).await;
    let started = Instant::now();
    let ran = Srmig::spawn(&[
        "migrate",
        "web1",
        "--to",
        "h2",
        "--controller",
        w.controller(),
        "--timeout",
        "1s",
    ])
    .output()
    .await;
    ran.expect_code(4);
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(
        ran.stderr
            .contains("timed out after 1.0 s (--timeout): m1 is still expect-hypervisor-done")
            && ran.stderr.contains("NOT cancelled and goes on"),
        "{}",
        ran.stderr
    );
    let s = w.client.migration(MigrationId(1)).await.expect("status");
    assert_eq!(s.phase, MigrationPhase::ExpectHypervisorDone);
    assert!(!s
        .phases
        .iter()
        .any(|r| r.phase == MigrationPhase::CancelRequested));
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_with_cancel_on_timeout_cancels() {
    let w = World::new(|_| {}).await;
    let ran = Srmig::spawn(&[
        "migrate",
        "web1",
        "--to",
        "h2",
        "--controller",
        w.controller(),
        "--timeout",
        "1s",
        "--cancel-on-timeout",
    ])
    .output()
    .await;
    ran.expect_code(4);
    assert!(
        ran.stderr.contains(
            "cancel requested (--cancel-on-timeout): the controller asked the hypervisor to \
             cancel, and m1 rolls back to h1 once it confirms"
        ),
        "{}",
        ran.stderr
    );
    let s = w.client.migration(MigrationId(1)).await.expect("status");
    assert!(s
        .phases
        .iter()
        .any(|r| r.phase == MigrationPhase::CancelRequested));
    // The (external) hypervisor confirms; the VM stays on h1.
    w.hypervisor(MigrationId(1), HypervisorEventKind::Cancelled, None)
        .await;
    w.wait_phase(MigrationId(1), MigrationPhase::Cancelled)
        .await;
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_on_timeout_past_the_switchover_leaves_lagging_hosts_behind() {
    let w = World::new(|_| {}).await;
    let run = Srmig::spawn(&[
        "migrate",
        "web1",
        "--to",
        "h2",
        "--controller",
        w.controller(),
        "--timeout",
        "3s",
        "--cancel-on-timeout",
    ]);
    let id = w.migration().await.id;
    w.wait_phase(id, MigrationPhase::ExpectHypervisorDone).await;
    // h3 goes away, then the VM runs at h2: the commit waits for h3.
    w.hosts[2].stop();
    w.vm_state(2, VmState::Running).await;
    w.wait_phase(id, MigrationPhase::ExpectCommitAcks).await;
    let ran = run.output().await;
    ran.expect_code(4);
    assert!(
        ran.stderr.contains(
            "past the switchover, so the controller only stops waiting for hosts that have not \
             acknowledged (left behind) and m1 completes on h2"
        ),
        "{}",
        ran.stderr
    );
    let done = w.wait_phase(id, MigrationPhase::Completed).await;
    assert_eq!(done.left_behind, vec![host(3)]);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_wait_prints_the_id_and_exits_0() {
    let w = World::new(|_| {}).await;
    let ran = Srmig::spawn(&[
        "migrate",
        "web1",
        "--to",
        "h2",
        "--strategy",
        "sr-drop",
        "--controller",
        w.controller(),
        "--no-wait",
    ])
    .output()
    .await;
    ran.expect_code(0);
    assert!(
        ran.stdout
            .contains("m1: web1 from h1 to h2 (sr-drop), accepted"),
        "{}",
        ran.stdout
    );
    let last = ran.stdout.lines().last().expect("a line");
    assert!(
        last.starts_with("m1 is ") && last.contains("; not waiting for it to end"),
        "{last}"
    );
    // The migration goes on without the command.
    w.wait_phase(MigrationId(1), MigrationPhase::ExpectHypervisorDone)
        .await;
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_migration_exits_1_with_the_api_error() {
    let w = World::new(|_| {}).await;
    let ran = Srmig::spawn(&[
        "migrate",
        "web1",
        "--to",
        "h1",
        "--controller",
        w.controller(),
    ])
    .output()
    .await;
    ran.expect_code(1);
    assert!(
        ran.stderr.contains(
            "error: the controller refused the migration (already-on-host): VM web1 is already \
             on host h1"
        ),
        "{}",
        ran.stderr
    );
    let ran = Srmig::spawn(&[
        "migrate",
        "web9",
        "--to",
        "h2",
        "--controller",
        w.controller(),
    ])
    .output()
    .await;
    ran.expect_code(1);
    assert!(ran.stderr.contains("(unknown-vm)"), "{}", ran.stderr);
    w.shutdown().await;
}

#[test]
fn unreachable_controller_exits_1_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("nobody.sock");
    let out = Command::new(env!("CARGO_BIN_EXE_srmig"))
        .args(["migrate", "web1", "--to", "h2", "--controller"])
        .arg(&socket)
        .output()
        .expect("run srmig");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "error: cannot reach the controller at {}",
            socket.display()
        )) && err.contains("No such file or directory")
            && err.contains("is the controller running"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn usage_errors_keep_clap_exit_code_2() {
    for args in [
        &["migrate", "web1"][..],
        &["migrate", "web1", "--to", "h2", "--timeout", "90"],
        &["migrate", "web1", "--to", "h2", "--cancel-on-timeout"],
        &["migrate", "web1", "--to", "h2", "--strategy", "teleport"],
        &["migrate", "web 1", "--to", "h2"],
        &[
            "migrate",
            "web1",
            "--to",
            "h2",
            "--no-wait",
            "--timeout",
            "5s",
        ],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_srmig"))
            .args(args)
            .output()
            .expect("run srmig");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    let help = Command::new(env!("CARGO_BIN_EXE_srmig"))
        .args(["migrate", "--help"])
        .output()
        .expect("run srmig");
    let text = String::from_utf8_lossy(&help.stdout);
    for code in ["  0  ", "  1  ", "  2  ", "  3  ", "  4  "] {
        assert!(
            text.contains(code),
            "exit code {code:?} undocumented:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hypervisor_progress_shows_ram_and_eta() {
    let w = World::new(|o| o.driver = Arc::new(FakeQemu)).await;
    let run = Srmig::spawn(&[
        "migrate",
        "web1",
        "--to",
        "h2",
        "--controller",
        w.controller(),
    ]);
    let id = w.migration().await.id;
    w.wait_for("the hypervisor's final figures", || async {
        let s = w.client.migration(id).await.expect("status");
        s.hypervisor.filter(|p| p.downtime_ms.is_some())
    })
    .await;
    w.vm_state(2, VmState::Running).await;
    let ran = run.output().await;
    ran.expect_code(0);
    let out = &ran.stdout;
    for expected in [
        "accepted (hypervisor driver fake-qemu)",
        "waiting for the hypervisor (driver fake-qemu): the fake QEMU to copy 100 MB",
        "hypervisor: active ",
        "MB remaining, ETA ",
        "hypervisor-completed: ",
        "hypervisor: completed 700 ms, downtime 12 ms",
    ] {
        assert!(out.contains(expected), "no {expected:?} in\n{out}");
    }
    w.shutdown().await;
}

/// The library function the CLI calls: a controller that goes away while a migration is
/// followed is reported as lost contact (not as the migration's outcome).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_that_goes_away_is_lost_contact() {
    let mut w = World::new(|_| {}).await;
    let options = FollowOptions {
        poll: Duration::from_millis(50),
        heartbeat: Duration::from_millis(100),
        lost_contact: Duration::from_millis(600),
        ..FollowOptions::default()
    };
    let req = MigrateRequest {
        vm: web1(),
        to: host(2),
        strategy: Strategy::SrBuffer,
    };
    let client = w.client.clone();
    let silent = Arc::new(Mutex::new(0usize));
    let seen = silent.clone();
    let follower = tokio::spawn(async move {
        follow::follow(&client, &req, &options, |e| {
            if matches!(e.kind, follow::EventKind::ControllerSilent { .. }) {
                *seen.lock().expect("lock") += 1;
            }
        })
        .await
    });
    let id = w.migration().await.id;
    w.wait_phase(id, MigrationPhase::ExpectHypervisorDone).await;
    if let Some(d) = w.daemon.take() {
        d.shutdown().await.expect("shutdown");
    }
    let end = tokio::time::timeout(Duration::from_secs(10), follower)
        .await
        .expect("gives up in time")
        .expect("join");
    match end {
        Err(FollowError::LostContact { id: lost, .. }) => assert_eq!(lost, id),
        other => panic!("expected lost contact, got {other:?}"),
    }
    assert!(*silent.lock().expect("lock") >= 1);
    drop(w.dir);
}

// ----- over mutual TLS, from another machine -----

/// A CA in `dir` with the certificates the TLS tests need: the controller's (valid for
/// 127.0.0.1), the operator alice's, and host h1's (also valid for 127.0.0.1).
fn pki(dir: &Path) -> srmig_tls::TlsFiles {
    use srmig_tls::{IssueOptions, PeerIdentity, Role};
    srmig_tls::init_ca(dir, &srmig_tls::CaOptions::default()).expect("CA");
    let issue = |role, name: &str| {
        let mut o = IssueOptions::new(PeerIdentity::new(role, name).expect("identity"));
        if role != Role::Client {
            o.sans = vec!["127.0.0.1".parse().expect("san")];
        }
        srmig_tls::issue(dir, dir, &o).expect("issue")
    };
    issue(Role::Client, "alice");
    issue(Role::Host, "h1");
    issue(Role::Controller, "ctl")
}

fn tls_controller(files: srmig_tls::TlsFiles) -> impl FnOnce(&mut Options) {
    move |o: &mut Options| {
        o.tls = Some(srmig_controller::ControllerTls {
            files,
            listen: Some("127.0.0.1:0".parse().expect("addr")),
        });
    }
}

/// `srmig migrate ... --controller URL --tls-dir DIR --tls-name NAME`, run to its end.
async fn migrate_over_tls(to: &str, url: &str, dir: &Path, name: &str) -> Ran {
    let dir = dir.to_str().expect("utf-8 path");
    Srmig::spawn(&[
        "migrate",
        "web1",
        "--to",
        to,
        "--controller",
        url,
        "--tls-dir",
        dir,
        "--tls-name",
        name,
    ])
    .output()
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_over_mutual_tls_with_a_client_certificate() {
    let certs = tempfile::tempdir().expect("tempdir");
    let pki_dir = certs.path().join("pki");
    let w = World::new(tls_controller(pki(&pki_dir))).await;
    let addr = w
        .daemon
        .as_ref()
        .and_then(|d| d.tls_addr())
        .expect("TLS listener");
    let url = format!("https://{addr}");

    let run = Srmig::spawn(&[
        "migrate",
        "web1",
        "--to",
        "h2",
        "--controller",
        &url,
        "--tls-dir",
        pki_dir.to_str().expect("utf-8 path"),
        "--tls-name",
        "alice",
    ]);
    let id = w.migration().await.id;
    w.wait_phase(id, MigrationPhase::ExpectHypervisorDone).await;
    w.vm_state(1, VmState::Paused).await;
    w.vm_state(2, VmState::Running).await;
    w.hypervisor(id, HypervisorEventKind::Completed, None).await;
    let ran = run.output().await;
    ran.expect_code(0);
    assert!(ran.stdout.contains("expect-path-acks: "), "{}", ran.stdout);
    let last = ran.stdout.lines().last().expect("a line");
    assert!(last.ends_with("web1 now runs on h2"), "{last}");
    assert!(ran.stderr.is_empty(), "{}", ran.stderr);

    // A host's certificate (copied where a client's would be) is authenticated, then refused
    // by the controller: hosts may only report about their own VMs.
    let as_host = certs.path().join("as-host");
    std::fs::create_dir(&as_host).expect("dir");
    for (from, to) in [
        ("ca.pem", "ca.pem"),
        ("host-h1.pem", "client-h1.pem"),
        ("host-h1.key", "client-h1.key"),
    ] {
        std::fs::copy(pki_dir.join(from), as_host.join(to)).expect("copy");
    }
    let ran = migrate_over_tls("h1", &url, &as_host, "h1").await;
    ran.expect_code(1);
    for expected in [
        "error: the controller refused the migration (forbidden): host/h1 may only report about \
         its own VMs (POST /v1/vm-state, POST /v1/fence, POST /v1/release), not POST /v1/migrations",
        "this certificate may not migrate",
    ] {
        assert!(ran.stderr.contains(expected), "{}", ran.stderr);
    }

    // A client certificate from another CA: this CLI does not trust the controller's.
    let other = certs.path().join("other");
    pki(&other);
    let ran = migrate_over_tls("h1", &url, &other, "alice").await;
    ran.expect_code(1);
    for expected in [
        format!(
            "error: cannot reach the controller at {url}: TLS handshake with {addr} failed: \
             invalid peer certificate: UnknownIssuer"
        ),
        "the controller refused this CLI's certificate, or this CLI does not trust the \
         controller's"
            .to_owned(),
    ] {
        assert!(ran.stderr.contains(&expected), "{}", ran.stderr);
    }

    // No certificate of that name.
    let ran = migrate_over_tls("h1", &url, &pki_dir, "bob").await;
    ran.expect_code(1);
    let missing = pki_dir.join("client-bob.pem");
    for expected in [
        format!("{}: no such file", missing.display()),
        "srmig pki issue --dir CA_DIR --role client --name bob".to_owned(),
    ] {
        assert!(ran.stderr.contains(&expected), "{}", ran.stderr);
    }

    // https:// without --tls-dir is a usage error, with clap's exit code.
    let ran = Srmig::spawn(&["migrate", "web1", "--to", "h1", "--controller", &url])
        .output()
        .await;
    ran.expect_code(2);
    assert!(
        ran.stderr.contains(&format!(
            "error: --controller {url} is reached over mutual TLS: give --tls-dir DIR"
        )),
        "{}",
        ran.stderr
    );
    assert_eq!(w.client.migrations().await.expect("list").len(), 1);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_that_is_not_a_controller_is_named() {
    let certs = tempfile::tempdir().expect("tempdir");
    let dir = certs.path();
    pki(dir);
    let host = srmig_tls::TlsFiles::in_dir(
        dir,
        &srmig_tls::PeerIdentity::new(srmig_tls::Role::Host, "h1").expect("identity"),
    );

    // A srmigd's TLS listener (h1's certificate) where the controller was expected.
    let config = srmig_tls::server_config(&host, &[srmig_tls::Role::Client]).expect("config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(srmig_tls::serve(
        listener,
        config,
        Router::new(),
        srmig_tls::ServeOptions::default(),
        std::future::pending(),
    ));
    let ran = migrate_over_tls("h2", &format!("https://{addr}"), dir, "alice").await;
    ran.expect_code(1);
    for expected in [
        format!("{addr} is host/h1, expected a controller"),
        format!("https://{addr} is not the controller's TLS listener (a srmigd's?)"),
    ] {
        assert!(ran.stderr.contains(&expected), "{}", ran.stderr);
    }
    server.abort();

    // Nobody listening: the port of a listener just closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let ran = migrate_over_tls("h2", &format!("https://{closed}"), dir, "alice").await;
    ran.expect_code(1);
    for expected in [
        format!("error: cannot reach the controller at https://{closed}"),
        format!("cannot connect to {closed}"),
        "is the controller listening there".to_owned(),
    ] {
        assert!(ran.stderr.contains(&expected), "{}", ran.stderr);
    }
}
