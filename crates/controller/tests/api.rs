//! API tests: an in-process controller on a temporary unix socket, and fake srmigd endpoints
//! (axum on temporary unix sockets) that record every `PUT /v1/config` and answer with acks.

use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use axum::{Json, Router};
use hyper::Method;
use srmig_api::{
    Ack, ApiError, ApiErrorCode, Encaps, Headend, HostConfig, HostId, MigrateRequest, MigrationId,
    MigrationPhase, MigrationStatus, SbufMode, SidEntry, Steering, Strategy, Timestamp, VmId,
    VmInfo, VmState, VmStateReport,
};
use srmig_controller::http::UnixHttp;
use srmig_controller::{
    ClientError, ControllerClient, Daemon, HostRegistration, HypervisorEventKind, HypervisorPost,
    Options,
};
use tokio::task::JoinHandle;

// ----- fake srmigd -----

#[derive(Clone, Default)]
struct FakeState {
    host: String,
    /// Every config received, with when.
    configs: Arc<Mutex<Vec<(Instant, HostConfig)>>>,
    /// Answer 503 to this many requests before accepting.
    fail_next: Arc<AtomicUsize>,
    /// VM states shown by `GET /v1/status`.
    vms: Arc<Mutex<Vec<(String, VmState)>>>,
}

async fn get_status(State(s): State<FakeState>) -> Response {
    let vms = s
        .vms
        .lock()
        .expect("lock")
        .iter()
        .map(|(name, state)| srmig_api::VmStatus {
            name: name.clone(),
            state: *state,
            port: "vm0".into(),
            local: None,
            addresses: vec![],
            buffer: Default::default(),
            rx: Default::default(),
            tx: Default::default(),
            held: 0,
            released: 0,
            expired: 0,
            dropped: 0,
            fenced: 0,
            state_since_us: None,
        })
        .collect();
    // The version in force: the last config applied.
    let in_force = s
        .configs
        .lock()
        .expect("lock")
        .last()
        .map(|(_, c)| (c.epoch, c.generation));
    Json(srmig_api::HostStatus {
        name: s.host.clone(),
        boot_epoch: 1,
        epoch: in_force.map(|v| v.0),
        generation: in_force.map(|v| v.1),
        ports: vec![],
        vms,
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

async fn put_config(State(s): State<FakeState>, body: Bytes) -> Response {
    if s.fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response();
    }
    let config: HostConfig = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    if let Err(e) = config.validate() {
        return (StatusCode::BAD_REQUEST, e.to_string()).into_response();
    }
    let (epoch, generation) = (config.epoch, config.generation);
    s.configs
        .lock()
        .expect("lock")
        .push((Instant::now(), config));
    Json(Ack {
        epoch,
        boot_epoch: 1,
        host: HostId::new(s.host.clone()).expect("name"),
        generation,
    })
    .into_response()
}

struct FakeHost {
    socket: PathBuf,
    state: FakeState,
    task: Option<JoinHandle<()>>,
}

impl FakeHost {
    fn new(name: &str, socket: PathBuf) -> Self {
        FakeHost {
            socket,
            state: FakeState {
                host: name.to_owned(),
                ..FakeState::default()
            },
            task: None,
        }
    }

    fn start(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        let listener = tokio::net::UnixListener::bind(&self.socket).expect("bind fake srmigd");
        let app = Router::new()
            .route("/v1/config", put(put_config))
            .route("/v1/status", axum::routing::get(get_status))
            .with_state(self.state.clone());
        self.task = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
    }

    fn show_vm(&self, vm: &str, state: VmState) {
        self.state
            .vms
            .lock()
            .expect("lock")
            .push((vm.to_owned(), state));
    }

    fn configs(&self) -> Vec<(Instant, HostConfig)> {
        self.state.configs.lock().expect("lock").clone()
    }

    fn latest(&self) -> HostConfig {
        self.configs()
            .last()
            .expect("a config was pushed")
            .1
            .clone()
    }
}

impl Drop for FakeHost {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

// ----- world -----

fn name(i: usize) -> HostId {
    HostId::new(format!("h{i}")).expect("name")
}
fn web1() -> VmId {
    VmId::new("web1").expect("name")
}
fn sid(i: usize, last: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfc00, i as u16, 0, 0, 0, 0, 0, last)
}

fn registration(i: usize, socket: PathBuf) -> HostRegistration {
    let json = format!(
        r#"{{"name":"h{i}","locator":"fc00:{i}::/48","sid_end_s":"fc00:{i}::e5","sid_end_sbuf":"fc00:{i}::eb","sid_dt6":"fc00:{i}::d6","underlay":"2001:db8:ff::{i}","api_socket":{:?}}}"#,
        socket.display().to_string()
    );
    serde_json::from_str(&json).expect("registration")
}

fn vm_info() -> VmInfo {
    serde_json::from_str(
        r#"{"name":"web1","addresses":["2001:db8:a::10"],"mac":"52:54:00:00:00:10","host":"h1"}"#,
    )
    .expect("vm")
}

struct World {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    store: PathBuf,
    hosts: Vec<FakeHost>,
    daemon: Option<Daemon>,
    client: ControllerClient,
}

impl World {
    /// Three fake hosts (started) and a controller with `tweak`ed options.
    async fn new(tweak: impl FnOnce(&mut Options)) -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("controller.sock");
        let store = dir.path().join("state/controller.redb");
        let mut hosts: Vec<FakeHost> = (1..=3)
            .map(|i| FakeHost::new(&format!("h{i}"), dir.path().join(format!("h{i}.sock"))))
            .collect();
        for h in &mut hosts {
            h.start();
        }
        let mut options = Options::new(&socket, &store);
        tweak(&mut options);
        let daemon = Daemon::start(options).await.expect("controller starts");
        World {
            client: ControllerClient::new(&socket),
            _dir: dir,
            socket,
            store,
            hosts,
            daemon: Some(daemon),
        }
    }

    async fn restart(&mut self, tweak: impl FnOnce(&mut Options)) {
        if let Some(d) = self.daemon.take() {
            d.shutdown().await.expect("clean shutdown");
        }
        let mut options = Options::new(&self.socket, &self.store);
        tweak(&mut options);
        self.daemon = Some(Daemon::start(options).await.expect("controller restarts"));
    }

    async fn register(&self) {
        for (i, h) in self.hosts.iter().enumerate() {
            let view = self
                .client
                .add_host(&registration(i + 1, h.socket.clone()))
                .await
                .expect("host registered");
            assert_eq!(view.registration.info.name, name(i + 1));
        }
        let vm = self.client.add_vm(&vm_info()).await.expect("vm registered");
        assert_eq!(vm.info.host, name(1));
        assert_eq!(vm.migration, None);
        self.wait_synced().await;
    }

    /// Waits until every host acknowledged the last config pushed to it.
    async fn wait_synced(&self) {
        wait_for("every host acknowledges", || async {
            let hosts = self.client.hosts().await.expect("hosts");
            hosts
                .iter()
                .all(|h| h.generation_pushed > 0 && h.generation_acked == h.generation_pushed)
                .then_some(())
        })
        .await;
    }

    async fn migrate(&self, to: usize, strategy: Strategy) -> MigrationStatus {
        self.client
            .migrate(&MigrateRequest {
                vm: web1(),
                to: name(to),
                strategy,
            })
            .await
            .expect("migration accepted")
    }

    async fn wait_phase(&self, id: MigrationId, phase: MigrationPhase) -> MigrationStatus {
        wait_for(&format!("{id} reaches {phase}"), || async {
            let s = self.client.migration(id).await.expect("status");
            assert!(
                !(s.phase.is_terminal() && s.phase != phase),
                "{id} ended as {} while waiting for {phase}: {s:?}",
                s.phase
            );
            (s.phase == phase).then_some(s)
        })
        .await
    }

    async fn vm_state(&self, host: usize, state: VmState) {
        self.client
            .report_vm_state(&VmStateReport {
                boot_epoch: None,
                last_delivery_us: None,
                vm: web1(),
                host: name(host),
                state,
                at: Timestamp(0),
            })
            .await
            .expect("vm state accepted");
    }

    /// Host `at` reports the commit-fence marker of host `from` for web1 (`POST /v1/fence`).
    async fn fence_marker(&self, at: usize, from: usize) {
        self.client
            .report_fence(&srmig_api::FenceReport {
                vm: web1(),
                host: name(at),
                ingress: format!("2001:db8:ff::{from}").parse().expect("addr"),
                at: Timestamp(0),
            })
            .await
            .expect("fence report accepted");
    }

    async fn hypervisor(&self, id: MigrationId, event: HypervisorEventKind) -> MigrationStatus {
        self.client
            .hypervisor(
                id,
                &HypervisorPost {
                    event,
                    reason: None,
                },
            )
            .await
            .expect("hypervisor event accepted")
    }

    async fn shutdown(mut self) {
        if let Some(d) = self.daemon.take() {
            d.shutdown().await.expect("clean shutdown");
        }
    }
}

async fn wait_for<T, F, Fut>(what: &str, mut probe: F) -> T
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
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn phases(s: &MigrationStatus) -> Vec<MigrationPhase> {
    s.phases.iter().map(|p| p.phase).collect()
}

fn steering_of(config: &HostConfig) -> Steering {
    config
        .mapping(&web1())
        .expect("web1 is mapped on every host")
        .steering
        .clone()
}

fn encaps(segments: Vec<Ipv6Addr>) -> Steering {
    Steering::Encaps(Encaps {
        segments,
        headend: Headend::HEncaps,
    })
}

fn api_code(e: &ClientError) -> (StatusCode, ApiErrorCode) {
    match e {
        ClientError::Api { status, error } => (*status, error.code),
        other => panic!("expected an API error, got {other:?}"),
    }
}

// ----- tests -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sr_buffer_migration_walks_every_phase() {
    let w = World::new(|_| {}).await;
    w.register().await;
    // Steady state: h1 delivers natively, the others encapsulate to h1's End.DT6.
    assert_eq!(steering_of(&w.hosts[0].latest()), Steering::Native);
    assert_eq!(
        steering_of(&w.hosts[2].latest()),
        encaps(vec![sid(1, 0xd6)])
    );

    let accepted = w.migrate(2, Strategy::SrBuffer).await;
    assert_eq!(
        (accepted.from.clone(), accepted.to.clone()),
        (name(1), name(2))
    );
    let id = accepted.id;
    let at_hypervisor = w.wait_phase(id, MigrationPhase::ExpectHypervisorDone).await;
    let entered = Instant::now();

    // Before the hypervisor phase, every host steers web1 through S::End.S -> D::End.SBUF,
    // S holds End.S and D holds End.SBUF in buffer mode, and both may attach the VM.
    let path = encaps(vec![sid(1, 0xe5), sid(2, 0xeb)]);
    for (i, h) in w.hosts.iter().enumerate() {
        let first_with_path = h
            .configs()
            .into_iter()
            .find(|(_, c)| c.mapping(&web1()).is_some_and(|m| m.steering == path))
            .unwrap_or_else(|| panic!("h{} never got the SR path", i + 1));
        assert!(first_with_path.0 <= entered);
        assert_eq!(steering_of(&h.latest()), path, "h{}", i + 1);
    }
    let s_cfg = w.hosts[0].latest();
    let d_cfg = w.hosts[1].latest();
    assert!(s_cfg.sids.contains(&SidEntry::EndS {
        sid: sid(1, 0xe5),
        vm: web1()
    }));
    assert!(d_cfg.sids.contains(&SidEntry::EndSbuf {
        sid: sid(2, 0xeb),
        vm: web1(),
        mode: SbufMode::Buffer
    }));
    assert!(s_cfg.is_local(&web1()) && d_cfg.is_local(&web1()));
    assert!(!w.hosts[2].latest().is_local(&web1()));
    assert_eq!(
        phases(&at_hypervisor),
        vec![
            MigrationPhase::Requested,
            MigrationPhase::ExpectEndpointAcks,
            MigrationPhase::ExpectPathAcks,
            MigrationPhase::ExpectHypervisorDone
        ]
    );
    // Still mapped to S while the hypervisor works.
    let vms = w.client.vms().await.expect("vms");
    assert_eq!(vms[0].info.host, name(1));
    assert_eq!(vms[0].migration, Some(id));

    // The emulated move: pause at S, resume at D, then the hypervisor reports completion.
    w.vm_state(1, VmState::Paused).await;
    w.vm_state(2, VmState::Running).await;
    // D's first delivery after the resume (`POST /v1/release`).
    w.client
        .report_release(&srmig_api::ReleaseReport {
            vm: web1(),
            host: name(2),
            release: srmig_api::ReleaseFigures {
                resumed_at_us: 1_000_000,
                first_delivery_us: 1_000_250,
                held: 12,
                released: 12,
                fenced: 0,
                dropped: 0,
            },
        })
        .await
        .expect("release report accepted");
    let late = w.hypervisor(id, HypervisorEventKind::Completed).await;
    assert_eq!(late.id, id);
    assert_eq!(late.figures().release_latency_us, Some(250));
    assert_eq!(late.delivery.release.map(|r| r.held), Some(12));
    // D (h2) reports every host's commit-fence marker: the cleanup waits for them (these fake
    // hosts forward nothing, so the test sends what srmigd would).
    w.wait_phase(id, MigrationPhase::ExpectCommitAcks).await;
    for from in 1..=3 {
        w.fence_marker(2, from).await;
    }
    let done = w.wait_phase(id, MigrationPhase::Completed).await;
    assert_eq!(
        phases(&done),
        vec![
            MigrationPhase::Requested,
            MigrationPhase::ExpectEndpointAcks,
            MigrationPhase::ExpectPathAcks,
            MigrationPhase::ExpectHypervisorDone,
            MigrationPhase::SourcePaused,
            MigrationPhase::ExpectCommitAcks,
            MigrationPhase::FenceComplete,
            MigrationPhase::ExpectCleanupAcks,
            MigrationPhase::Completed
        ]
    );
    assert_eq!(done.error, None);
    // Committed and cleaned: mapping on h2, no End.S / End.SBUF left, h1 detached web1.
    w.wait_synced().await;
    assert_eq!(steering_of(&w.hosts[1].latest()), Steering::Native);
    assert_eq!(
        steering_of(&w.hosts[0].latest()),
        encaps(vec![sid(2, 0xd6)])
    );
    assert_eq!(
        steering_of(&w.hosts[2].latest()),
        encaps(vec![sid(2, 0xd6)])
    );
    for h in &w.hosts {
        assert!(h.latest().sids.iter().all(|s| s.vm().is_none()));
    }
    assert!(!w.hosts[0].latest().is_local(&web1()));
    let vms = w.client.vms().await.expect("vms");
    assert_eq!(vms[0].info.host, name(2));
    assert_eq!(vms[0].migration, None);
    assert_eq!(vms[0].states.get(&name(2)), Some(&VmState::Running));
    // Generations strictly increase per host.
    for h in &w.hosts {
        let gens: Vec<u64> = h.configs().iter().map(|(_, c)| c.generation).collect();
        assert!(gens.windows(2).all(|p| p[0] < p[1]), "{gens:?}");
    }
    let all = w.client.migrations().await.expect("list");
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].phase, MigrationPhase::Completed);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traditional_commits_only_when_destination_reports_running() {
    let w = World::new(|_| {}).await;
    w.register().await;
    let id = w.migrate(2, Strategy::Traditional).await.id;
    w.wait_phase(id, MigrationPhase::ExpectHypervisorDone).await;
    w.wait_synced().await;
    // No SR path: the others keep sending to S, D is told to attach the VM.
    assert_eq!(
        steering_of(&w.hosts[2].latest()),
        encaps(vec![sid(1, 0xd6)])
    );
    assert!(w.hosts[1].latest().is_local(&web1()));
    assert!(w.hosts.iter().all(|h| h.latest().sids.len() == 1));

    // The hypervisor finishing is not enough.
    let s = w.hypervisor(id, HypervisorEventKind::Completed).await;
    assert_eq!(s.phase, MigrationPhase::ExpectHypervisorDone);
    assert!(phases(&s).contains(&MigrationPhase::HypervisorCompleted));
    w.vm_state(1, VmState::Paused).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let s = w.client.migration(id).await.expect("status");
    assert_eq!(s.phase, MigrationPhase::ExpectHypervisorDone);
    assert_eq!(w.client.vms().await.expect("vms")[0].info.host, name(1));
    assert_eq!(
        steering_of(&w.hosts[2].latest()),
        encaps(vec![sid(1, 0xd6)])
    );

    // D reporting the VM running commits.
    w.vm_state(2, VmState::Running).await;
    let done = w.wait_phase(id, MigrationPhase::Completed).await;
    let p = phases(&done);
    assert!(!p.contains(&MigrationPhase::ExpectPathAcks));
    assert!(!p.contains(&MigrationPhase::ExpectEndpointAcks));
    let commit = p
        .iter()
        .position(|x| *x == MigrationPhase::ExpectCommitAcks)
        .expect("commit");
    let hv = p
        .iter()
        .position(|x| *x == MigrationPhase::HypervisorCompleted)
        .expect("hypervisor completed");
    assert!(hv < commit);
    w.wait_synced().await;
    assert_eq!(
        steering_of(&w.hosts[2].latest()),
        encaps(vec![sid(2, 0xd6)])
    );
    assert_eq!(w.client.vms().await.expect("vms")[0].info.host, name(2));
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_carry_a_reason() {
    let w = World::new(|_| {}).await;
    w.register().await;
    let refuse = |vm: &str, to: &str| MigrateRequest {
        vm: VmId::new(vm).expect("name"),
        to: HostId::new(to).expect("name"),
        strategy: Strategy::SrBuffer,
    };
    let e = w
        .client
        .migrate(&refuse("web9", "h2"))
        .await
        .expect_err("unknown VM");
    assert_eq!(
        api_code(&e),
        (StatusCode::NOT_FOUND, ApiErrorCode::UnknownVm)
    );
    assert!(e.to_string().contains("web9"), "{e}");
    let e = w
        .client
        .migrate(&refuse("web1", "h9"))
        .await
        .expect_err("unknown host");
    assert_eq!(
        api_code(&e),
        (StatusCode::NOT_FOUND, ApiErrorCode::UnknownHost)
    );
    let e = w
        .client
        .migrate(&refuse("web1", "h1"))
        .await
        .expect_err("already there");
    assert_eq!(
        api_code(&e),
        (StatusCode::CONFLICT, ApiErrorCode::AlreadyOnHost)
    );
    assert!(e.to_string().contains("already on host h1"), "{e}");

    let id = w.migrate(2, Strategy::SrBuffer).await.id;
    let e = w
        .client
        .migrate(&refuse("web1", "h3"))
        .await
        .expect_err("already migrating");
    assert_eq!(
        api_code(&e),
        (StatusCode::CONFLICT, ApiErrorCode::AlreadyMigrating)
    );
    assert!(e.to_string().contains(&id.to_string()), "{e}");

    // Registrations that clash.
    let e = w
        .client
        .add_host(&registration(1, w.hosts[0].socket.clone()))
        .await
        .expect_err("duplicate host");
    assert_eq!(api_code(&e), (StatusCode::CONFLICT, ApiErrorCode::Conflict));
    let mut vm = vm_info();
    vm.name = VmId::new("web2").expect("name");
    vm.host = HostId::new("h7").expect("name");
    let e = w.client.add_vm(&vm).await.expect_err("unknown host");
    assert_eq!(
        api_code(&e),
        (StatusCode::NOT_FOUND, ApiErrorCode::UnknownHost)
    );
    vm.host = name(2);
    let e = w.client.add_vm(&vm).await.expect_err("address in use");
    assert_eq!(api_code(&e), (StatusCode::CONFLICT, ApiErrorCode::Conflict));
    assert!(e.to_string().contains("2001:db8:a::10"), "{e}");

    // Hypervisor events and cancels on the wrong migration.
    let e = w
        .client
        .hypervisor(
            MigrationId(99),
            &HypervisorPost {
                event: HypervisorEventKind::Completed,
                reason: None,
            },
        )
        .await
        .expect_err("unknown migration");
    assert_eq!(
        api_code(&e),
        (StatusCode::NOT_FOUND, ApiErrorCode::UnknownMigration)
    );
    let e = w.client.cancel(MigrationId(99)).await.expect_err("unknown");
    assert_eq!(
        api_code(&e),
        (StatusCode::NOT_FOUND, ApiErrorCode::UnknownMigration)
    );
    let e = w
        .client
        .migration(MigrationId(99))
        .await
        .expect_err("unknown");
    assert_eq!(
        api_code(&e),
        (StatusCode::NOT_FOUND, ApiErrorCode::UnknownMigration)
    );

    // Finish the migration, then cancel it: too late.
    w.wait_phase(id, MigrationPhase::ExpectHypervisorDone).await;
    w.vm_state(2, VmState::Running).await;
    w.wait_phase(id, MigrationPhase::Completed).await;
    let e = w.client.cancel(id).await.expect_err("finished");
    assert_eq!(
        api_code(&e),
        (StatusCode::CONFLICT, ApiErrorCode::TooLateToCancel)
    );
    let e = w
        .client
        .hypervisor(
            id,
            &HypervisorPost {
                event: HypervisorEventKind::Failed,
                reason: Some("late".into()),
            },
        )
        .await
        .expect_err("contradicts the outcome");
    assert_eq!(api_code(&e), (StatusCode::CONFLICT, ApiErrorCode::Conflict));
    // Reports about unknown VMs or hosts.
    let e = w
        .client
        .report_vm_state(&VmStateReport {
            boot_epoch: None,
            last_delivery_us: None,
            vm: VmId::new("ghost").expect("name"),
            host: name(1),
            state: VmState::Running,
            at: Timestamp(0),
        })
        .await
        .expect_err("unknown vm");
    assert_eq!(
        api_code(&e),
        (StatusCode::NOT_FOUND, ApiErrorCode::UnknownVm)
    );
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_change_nothing() {
    let w = World::new(|_| {}).await;
    w.register().await;
    let raw = UnixHttp::new(&w.socket, Duration::from_secs(2));
    let before_hosts = w.client.hosts().await.expect("hosts");
    let before_configs: Vec<usize> = w.hosts.iter().map(|h| h.configs().len()).collect();
    let cases: &[(Method, &str, &str)] = &[
        (Method::POST, "/v1/migrations", "{"),
        (Method::POST, "/v1/migrations", ""),
        (Method::POST, "/v1/migrations", r#"{"vm":"web1","to":"h2"}"#),
        (
            Method::POST,
            "/v1/migrations",
            r#"{"vm":"web1","to":"h2","strategy":"teleport"}"#,
        ),
        (
            Method::POST,
            "/v1/migrations",
            r#"{"vm":"web1","to":"h2","strategy":"sr-buffer","from":"h1"}"#,
        ),
        (
            Method::POST,
            "/v1/migrations",
            r#"{"vm":"web 1","to":"h2","strategy":"sr-buffer"}"#,
        ),
        (Method::POST, "/v1/hosts", r#"{"name":"h4"}"#),
        (Method::POST, "/v1/hosts", "[1,2,3]"),
        (
            Method::POST,
            "/v1/vms",
            r#"{"name":"web2","addresses":["nope"],"mac":"52:54:00:00:00:11","host":"h1"}"#,
        ),
        (
            Method::POST,
            "/v1/vm-state",
            r#"{"vm":"web1","host":"h2","state":"flying","at":0}"#,
        ),
        (
            Method::POST,
            "/v1/migrations/1/hypervisor",
            r#"{"event":"exploded"}"#,
        ),
        (Method::GET, "/v1/migrations/abc", ""),
        (Method::POST, "/v1/migrations/-3/cancel", ""),
    ];
    for (method, path, body) in cases {
        let body = (!body.is_empty() || *method == Method::POST).then(|| body.as_bytes().to_vec());
        let r = raw
            .request(method.clone(), path, body)
            .await
            .expect("answered");
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{method} {path}: {:?}",
            r.body
        );
        let e: srmig_api::ApiError = serde_json::from_slice(&r.body).expect("an ApiError body");
        assert_eq!(e.code, ApiErrorCode::InvalidRequest, "{method} {path}");
        assert!(!e.message.is_empty());
    }
    let r = raw
        .request(Method::GET, "/v1/nothing-here", None)
        .await
        .expect("answered");
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(w.client.migrations().await.expect("list").is_empty());
    assert_eq!(w.client.hosts().await.expect("hosts"), before_hosts);
    assert_eq!(w.client.vms().await.expect("vms").len(), 1);
    let after_configs: Vec<usize> = w.hosts.iter().map(|h| h.configs().len()).collect();
    assert_eq!(after_configs, before_configs);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_from_the_store_mid_migration_resumes() {
    let mut w = World::new(|_| {}).await;
    w.register().await;
    let id = w.migrate(2, Strategy::SrBuffer).await.id;
    let before = w.wait_phase(id, MigrationPhase::ExpectHypervisorDone).await;
    w.vm_state(1, VmState::Paused).await;
    let last_gens: Vec<u64> = w.hosts.iter().map(|h| h.latest().generation).collect();

    w.restart(|_| {}).await;

    // Same migration, same phase and history; hosts pushed again above their generation,
    // still with the SR path.
    let after = w.client.migration(id).await.expect("restored");
    assert_eq!(after.phase, MigrationPhase::ExpectHypervisorDone);
    assert_eq!(after.started_at_ms, before.started_at_ms);
    assert!(phases(&after).contains(&MigrationPhase::SourcePaused));
    w.wait_synced().await;
    let path = encaps(vec![sid(1, 0xe5), sid(2, 0xeb)]);
    for (h, last) in w.hosts.iter().zip(&last_gens) {
        let latest = h.latest();
        assert!(latest.generation > *last, "{} <= {last}", latest.generation);
        assert_eq!(steering_of(&latest), path);
    }
    let hosts = w.client.hosts().await.expect("hosts");
    assert_eq!(hosts.len(), 3);
    assert_eq!(
        hosts[0].registration.api,
        srmig_controller::HostApi::ApiSocket(w.hosts[0].socket.clone())
    );

    // A second request for the same VM is still refused; a new one gets a fresh id later.
    let e = w
        .client
        .migrate(&MigrateRequest {
            vm: web1(),
            to: name(3),
            strategy: Strategy::SrDrop,
        })
        .await
        .expect_err("still migrating");
    assert_eq!(
        api_code(&e),
        (StatusCode::CONFLICT, ApiErrorCode::AlreadyMigrating)
    );

    w.vm_state(2, VmState::Running).await;
    w.hypervisor(id, HypervisorEventKind::Completed).await;
    w.wait_phase(id, MigrationPhase::Completed).await;

    // Restart again: the finished migration and the new mapping are remembered.
    w.restart(|_| {}).await;
    let done = w.client.migration(id).await.expect("remembered");
    assert_eq!(done.phase, MigrationPhase::Completed);
    assert_eq!(w.client.vms().await.expect("vms")[0].info.host, name(2));
    let next = w.migrate(3, Strategy::SrDrop).await;
    assert!(next.id > id);
    w.wait_phase(next.id, MigrationPhase::ExpectHypervisorDone)
        .await;
    assert!(w.hosts[2].latest().sids.contains(&SidEntry::EndSbuf {
        sid: sid(3, 0xeb),
        vm: web1(),
        mode: SbufMode::Drop
    }));
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_during_the_hypervisor_phase_rolls_back() {
    let w = World::new(|_| {}).await;
    w.register().await;
    let id = w.migrate(2, Strategy::SrBuffer).await.id;
    w.wait_phase(id, MigrationPhase::ExpectHypervisorDone).await;
    let s = w.client.cancel(id).await.expect("cancel accepted");
    assert!(phases(&s).contains(&MigrationPhase::CancelRequested));
    // The external hypervisor confirms.
    w.hypervisor(id, HypervisorEventKind::Cancelled).await;
    let done = w.wait_phase(id, MigrationPhase::Cancelled).await;
    assert!(phases(&done).contains(&MigrationPhase::ExpectRollbackAcks));
    w.wait_synced().await;
    assert_eq!(w.client.vms().await.expect("vms")[0].info.host, name(1));
    assert_eq!(
        steering_of(&w.hosts[2].latest()),
        encaps(vec![sid(1, 0xd6)])
    );
    assert!(!w.hosts[1].latest().is_local(&web1()));
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_are_retried_until_the_host_answers() {
    let mut w = World::new(|o| {
        o.push.min_backoff = Duration::from_millis(5);
        o.push.max_backoff = Duration::from_millis(40);
    })
    .await;
    // h3 is down when registered, then comes up.
    if let Some(t) = w.hosts[2].task.take() {
        t.abort();
    }
    let _ = std::fs::remove_file(&w.hosts[2].socket);
    for (i, h) in w.hosts.iter().enumerate() {
        w.client
            .add_host(&registration(i + 1, h.socket.clone()))
            .await
            .expect("host");
    }
    w.client.add_vm(&vm_info()).await.expect("vm");
    let h3 = wait_for("h3's push fails", || async {
        let hosts = w.client.hosts().await.expect("hosts");
        hosts
            .into_iter()
            .find(|h| h.registration.info.name == name(3))
            .filter(|h| h.last_push_error.is_some())
    })
    .await;
    assert_eq!(h3.generation_acked, 0);
    assert!(
        h3.last_push_error
            .as_deref()
            .is_some_and(|e| e.contains("cannot connect")),
        "{:?}",
        h3.last_push_error
    );
    // It answers 503 a few times once up.
    w.hosts[2].state.fail_next.store(3, Ordering::SeqCst);
    w.hosts[2].start();
    w.wait_synced().await;
    assert_eq!(w.hosts[2].state.fail_next.load(Ordering::SeqCst), 0);
    let h3 = w.client.hosts().await.expect("hosts");
    assert_eq!(h3[2].last_push_error, None);
    // Only the newest config is delivered to a host that was away.
    assert_eq!(w.hosts[2].configs().len(), 1);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn propagation_delay_delays_every_push() {
    let w = World::new(|o| o.push.propagation_delay = Duration::from_millis(150)).await;
    w.register().await;
    let t0 = Instant::now();
    let id = w.migrate(2, Strategy::SrBuffer).await.id;
    w.wait_phase(id, MigrationPhase::ExpectHypervisorDone).await;
    // Two rounds (endpoints, then path), each delayed.
    let elapsed = t0.elapsed();
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    for h in &w.hosts {
        let (first_after, _) = h
            .configs()
            .into_iter()
            .find(|(t, _)| *t >= t0)
            .expect("a push after the request");
        assert!(first_after - t0 >= Duration::from_millis(150));
    }
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_controller_cannot_take_a_served_socket() {
    let w = World::new(|_| {}).await;
    let other_store = w._dir.path().join("other.redb");
    let err = Daemon::start(Options::new(&w.socket, &other_store))
        .await
        .expect_err("socket in use");
    assert!(
        err.to_string().contains("in use by a running process"),
        "{err}"
    );
    // The socket is 0660 whatever the umask was.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&w.socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660);
    // A path that is not a socket is refused and left alone.
    let file = w._dir.path().join("not-a-socket");
    std::fs::write(&file, "keep me").expect("write");
    let err = Daemon::start(Options::new(&file, w._dir.path().join("o2.redb")))
        .await
        .expect_err("regular file");
    assert!(err.to_string().contains("not a unix socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).expect("read"), "keep me");
    let err = Daemon::start(Options::new(w._dir.path().join("c2.sock"), &w.store))
        .await
        .expect_err("store in use");
    assert!(err.to_string().contains("store"), "{err}");
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_running_report_is_learned_by_polling() {
    let w = World::new(|o| o.state_poll = Duration::from_millis(30)).await;
    w.register().await;
    let id = w.migrate(2, Strategy::SrBuffer).await.id;
    w.wait_phase(id, MigrationPhase::ExpectHypervisorDone).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        w.client.migration(id).await.expect("status").phase,
        MigrationPhase::ExpectHypervisorDone
    );
    // srmigd on h2 sees the VM up, but its report never reaches the controller.
    w.hosts[1].show_vm("web1", VmState::Running);
    let done = w.wait_phase(id, MigrationPhase::Completed).await;
    assert!(phases(&done).contains(&MigrationPhase::ExpectCommitAcks));
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_while_the_controller_was_down_is_found_after_restart() {
    // Polling during the migration is slow here: only the restart's poll can find it.
    let mut w = World::new(|o| o.state_poll = Duration::from_secs(60)).await;
    w.register().await;
    let id = w.migrate(2, Strategy::Traditional).await.id;
    w.wait_phase(id, MigrationPhase::ExpectHypervisorDone).await;
    if let Some(d) = w.daemon.take() {
        d.shutdown().await.expect("shutdown");
    }
    w.hosts[0].show_vm("web1", VmState::Absent);
    w.hosts[1].show_vm("web1", VmState::Running);
    w.restart(|o| o.state_poll = Duration::from_secs(60)).await;
    let done = w.wait_phase(id, MigrationPhase::Completed).await;
    assert!(phases(&done).contains(&MigrationPhase::ExpectCommitAcks));
    assert_eq!(w.client.vms().await.expect("vms")[0].info.host, name(2));
    w.shutdown().await;
}

// ----- hosts on other machines: mutual TLS -----

/// A PKI in a temporary directory: the CA, and files for any identity.
struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    fn new() -> TestPki {
        let dir = tempfile::tempdir().expect("tempdir");
        srmig_tls::init_ca(dir.path(), &srmig_tls::CaOptions::default()).expect("CA");
        TestPki { dir }
    }

    fn issue(&self, role: srmig_tls::Role, name: &str) -> srmig_tls::TlsFiles {
        let id = srmig_tls::PeerIdentity::new(role, name).expect("identity");
        let mut o = srmig_tls::IssueOptions::new(id);
        o.sans = vec!["127.0.0.1".parse().expect("san")];
        srmig_tls::issue(self.dir.path(), self.dir.path(), &o).expect("issue")
    }
}

/// A fake srmigd served over mutual TLS with `files` (controllers and clients may call it).
async fn tls_fake_host(
    name: &str,
    files: &srmig_tls::TlsFiles,
) -> (FakeState, std::net::SocketAddr, JoinHandle<()>) {
    let state = FakeState {
        host: name.to_owned(),
        ..FakeState::default()
    };
    let app = Router::new()
        .route("/v1/config", put(put_config))
        .route("/v1/status", axum::routing::get(get_status))
        .with_state(state.clone());
    let cfg = srmig_tls::server_config(
        files,
        &[srmig_tls::Role::Controller, srmig_tls::Role::Client],
    )
    .expect("server config");
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let task = tokio::spawn(srmig_tls::serve(
        l,
        cfg,
        app,
        srmig_tls::ServeOptions::default(),
        std::future::pending(),
    ));
    (state, addr, task)
}

fn tcp_registration(i: usize, addr: std::net::SocketAddr) -> String {
    format!(
        r#"{{"name":"h{i}","locator":"fc00:{i}::/48","sid_end_s":"fc00:{i}::e5","sid_end_sbuf":"fc00:{i}::eb","sid_dt6":"fc00:{i}::d6","underlay":"2001:db8:ff::{i}","api_address":"{addr}"}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_on_other_machines_are_reached_and_authorized_over_mutual_tls() {
    use srmig_tls::Role;
    let pki = TestPki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut o = Options::new(dir.path().join("c.sock"), dir.path().join("c.redb"));
    o.tls = Some(srmig_controller::ControllerTls {
        files: pki.issue(Role::Controller, "ctl"),
        listen: Some("127.0.0.1:0".parse().expect("addr")),
    });
    let daemon = Daemon::start(o).await.expect("controller");
    let ctl_addr = daemon.tls_addr().expect("TLS listener");
    let local = UnixHttp::new(daemon.socket(), Duration::from_secs(5));

    // h1 is reached over TCP with its own certificate; h2's address answers with h1's
    // certificate (an impostor or a mix-up): never pushed to.
    let h1_files = pki.issue(Role::Host, "h1");
    let (h1, h1_addr, _t1) = tls_fake_host("h1", &h1_files).await;
    let (h2, h2_addr, _t2) = tls_fake_host("h2", &h1_files).await;
    for (i, addr) in [(1, h1_addr), (2, h2_addr)] {
        let r = local
            .request(
                Method::POST,
                "/v1/hosts",
                Some(tcp_registration(i, addr).into_bytes()),
            )
            .await
            .expect("register");
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    wait_for("h1 acknowledges over TLS", || {
        let h1 = h1.clone();
        async move { (!h1.configs.lock().expect("lock").is_empty()).then_some(()) }
    })
    .await;
    let hosts: Vec<serde_json::Value> = wait_for("h2's push error is shown", || {
        let local = local.clone();
        async move {
            let r = local.request(Method::GET, "/v1/hosts", None).await.ok()?;
            let v: Vec<serde_json::Value> = serde_json::from_slice(&r.body).ok()?;
            v.iter()
                .any(|h| h["name"] == "h2" && h["last_push_error"].is_string())
                .then_some(v)
        }
    })
    .await;
    let h2_error = hosts.iter().find(|h| h["name"] == "h2").expect("h2")["last_push_error"]
        .as_str()
        .expect("error")
        .to_owned();
    assert!(
        h2_error.contains("is host/h1, expected host/h2"),
        "{h2_error}"
    );
    assert!(h2.configs.lock().expect("lock").is_empty());

    // What each certificate may do on the controller's TLS API.
    let as_peer = |files: &srmig_tls::TlsFiles| {
        srmig_tls::HttpsClient::new(srmig_tls::client_config(files).expect("client config"))
    };
    let to_ctl = srmig_tls::Endpoint::new(ctl_addr.to_string(), "127.0.0.1")
        .expect("endpoint")
        .expect_role(Role::Controller);
    let report = |host: &str| {
        format!(r#"{{"vm":"web1","host":"{host}","state":"running","at":1,"boot_epoch":7}}"#)
            .into_bytes()
    };
    let h1_client = as_peer(&h1_files);
    let vm =
        r#"{"name":"web1","addresses":["2001:db8:a::10"],"mac":"52:54:00:00:00:10","host":"h1"}"#;
    let alice = as_peer(&pki.issue(Role::Client, "alice"));
    let (st, body) = alice
        .request(
            &to_ctl,
            Method::POST,
            "/v1/vms",
            Some(vm.as_bytes().to_vec()),
        )
        .await
        .expect("alice registers a VM");
    assert_eq!(st, StatusCode::CREATED, "{body:?}");
    let (st, _) = h1_client
        .request(&to_ctl, Method::POST, "/v1/vm-state", Some(report("h1")))
        .await
        .expect("h1 reports");
    assert_eq!(st, StatusCode::NO_CONTENT);
    let fence = |host: &str| {
        format!(r#"{{"vm":"web1","host":"{host}","ingress":"2001:db8:ff::1","at":1}}"#).into_bytes()
    };
    let (st, body) = h1_client
        .request(&to_ctl, Method::POST, "/v1/fence", Some(fence("h1")))
        .await
        .expect("h1 reports a fence marker");
    assert_eq!(st, StatusCode::NO_CONTENT, "{body:?}");
    let release = |host: &str| {
        format!(
            r#"{{"vm":"web1","host":"{host}","release":{{"resumed_at_us":1,"first_delivery_us":2,"held":0,"released":0,"fenced":0,"dropped":0}}}}"#
        )
        .into_bytes()
    };
    let (st, body) = h1_client
        .request(&to_ctl, Method::POST, "/v1/release", Some(release("h1")))
        .await
        .expect("h1 reports a release");
    assert_eq!(st, StatusCode::NO_CONTENT, "{body:?}");
    for (method, path, body) in [
        (Method::POST, "/v1/vm-state", Some(report("h2"))),
        (Method::POST, "/v1/fence", Some(fence("h2"))),
        (Method::POST, "/v1/release", Some(release("h2"))),
        (Method::GET, "/v1/hosts", None),
        (
            Method::POST,
            "/v1/migrations",
            Some(br#"{"vm":"web1","to":"h2"}"#.to_vec()),
        ),
    ] {
        let (st, body) = h1_client
            .request(&to_ctl, method.clone(), path, body)
            .await
            .expect("answered");
        assert_eq!(st, StatusCode::FORBIDDEN, "{method} {path}");
        let e: ApiError = serde_json::from_slice(&body).expect("error body");
        assert_eq!(e.code, ApiErrorCode::Forbidden, "{e}");
    }
    let (st, _) = alice
        .request(&to_ctl, Method::GET, "/v1/hosts", None)
        .await
        .expect("alice lists hosts");
    assert_eq!(st, StatusCode::OK);
    daemon.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_host_needs_a_controller_with_a_tls_identity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(Options::new(
        dir.path().join("c.sock"),
        dir.path().join("c.redb"),
    ))
    .await
    .expect("controller");
    let local = UnixHttp::new(daemon.socket(), Duration::from_secs(5));
    let r = local
        .request(
            Method::POST,
            "/v1/hosts",
            Some(tcp_registration(1, "127.0.0.1:7443".parse().expect("addr")).into_bytes()),
        )
        .await
        .expect("answered");
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let e: ApiError = serde_json::from_slice(&r.body).expect("error");
    assert!(e.message.contains("--tls-dir"), "{e}");
    daemon.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_and_vms_are_deleted_unless_a_migration_needs_them() {
    let w = World::new(|_| {}).await;
    w.register().await;
    w.wait_synced().await;
    let local = UnixHttp::new(&w.socket, Duration::from_secs(5));
    let delete = |path: &'static str| {
        let local = local.clone();
        async move {
            let r = local
                .request(Method::DELETE, path, None)
                .await
                .expect("answered");
            let code = (!r.body.is_empty()).then(|| {
                serde_json::from_slice::<ApiError>(&r.body)
                    .expect("error")
                    .code
            });
            (r.status, code)
        }
    };
    let m = w.migrate(2, Strategy::SrBuffer).await;
    for (path, code) in [
        ("/v1/vms/web1", ApiErrorCode::Conflict),
        ("/v1/hosts/h1", ApiErrorCode::Conflict),
        ("/v1/hosts/h2", ApiErrorCode::Conflict),
        ("/v1/hosts/h9", ApiErrorCode::UnknownHost),
        ("/v1/vms/nope", ApiErrorCode::UnknownVm),
    ] {
        let (st, c) = delete(path).await;
        assert_eq!(c, Some(code), "DELETE {path}: {st}");
    }
    w.client.cancel(m.id).await.expect("cancel");
    w.hypervisor(m.id, HypervisorEventKind::Cancelled).await;
    w.wait_phase(m.id, MigrationPhase::Cancelled).await;
    // h3 only ingresses: removed; web1 then h1.
    assert_eq!(delete("/v1/hosts/h3").await, (StatusCode::NO_CONTENT, None));
    assert_eq!(
        delete("/v1/hosts/h1").await,
        (StatusCode::CONFLICT, Some(ApiErrorCode::Conflict))
    );
    assert_eq!(delete("/v1/vms/web1").await, (StatusCode::NO_CONTENT, None));
    assert_eq!(delete("/v1/hosts/h1").await, (StatusCode::NO_CONTENT, None));
    let hosts = w.client.hosts().await.expect("hosts");
    assert_eq!(
        hosts
            .iter()
            .map(|h| h.registration.info.name.to_string())
            .collect::<Vec<_>>(),
        vec!["h2"]
    );
    // The remaining host's config no longer maps web1.
    wait_for("h2 gets a config without web1", || {
        let latest = w.hosts[1].latest();
        async move { latest.mapping(&web1()).is_none().then_some(()) }
    })
    .await;
    w.shutdown().await;
}

/// The value of one sample of `GET /metrics` (`series` as written, labels included).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_migration() {
    let w = World::new(|o| o.host_poll = Duration::from_millis(50)).await;
    let raw = UnixHttp::new(&w.socket, Duration::from_secs(2));
    let metrics = || async {
        let r = raw
            .request(Method::GET, "/metrics", None)
            .await
            .expect("answered");
        assert_eq!(r.status, StatusCode::OK);
        let text = String::from_utf8(r.body.to_vec()).expect("utf-8");
        assert!(text.ends_with("# EOF\n"), "{text}");
        text
    };
    w.register().await;
    let info = w.client.info().await.expect("GET /v1/info");
    assert_eq!(info.driver, "external");
    assert!(info
        .driver_waits_for
        .contains("/v1/migrations/{id}/hypervisor"));
    assert_eq!(info.hypervisor_timeout_ms, 600_000);

    let before = metrics().await;
    assert_eq!(sample(&before, "srmig_controller_hosts"), 3.0);
    assert_eq!(sample(&before, "srmig_controller_active_migrations"), 0.0);
    assert!(sample(&before, "srmig_controller_epoch") > 1.7e12);
    let pushes = sample(&before, "srmig_controller_config_pushes_total");
    let acks = sample(&before, "srmig_controller_acks_total");
    assert!(pushes >= 3.0 && acks >= 3.0, "{pushes} pushes, {acks} acks");
    let completed = "srmig_controller_migrations_total{outcome=\"completed\"}";
    assert_eq!(sample(&before, completed), 0.0);
    assert!(!before.contains("srmig_controller_migration_phase_duration_seconds_count"));

    let id = w.migrate(2, Strategy::SrBuffer).await.id;
    w.wait_phase(id, MigrationPhase::ExpectHypervisorDone).await;
    let during = metrics().await;
    assert_eq!(sample(&during, "srmig_controller_active_migrations"), 1.0);
    assert!(sample(&during, "srmig_controller_config_pushes_total") > pushes);
    w.vm_state(1, VmState::Paused).await;
    w.vm_state(2, VmState::Running).await;
    w.wait_phase(id, MigrationPhase::Completed).await;
    w.wait_synced().await;
    wait_for("a host poll", || async {
        let text = metrics().await;
        (sample(&text, "srmig_controller_host_polls_total") > 0.0).then_some(())
    })
    .await;

    let after = metrics().await;
    assert_eq!(sample(&after, completed), 1.0);
    assert_eq!(
        sample(
            &after,
            "srmig_controller_migrations_total{outcome=\"failed\"}"
        ),
        0.0
    );
    assert_eq!(sample(&after, "srmig_controller_active_migrations"), 0.0);
    assert!(sample(&after, "srmig_controller_acks_total") > acks);
    assert_eq!(
        sample(&after, "srmig_controller_host_poll_failures_total"),
        0.0
    );
    for phase in [
        "requested",
        "expect-endpoint-acks",
        "expect-path-acks",
        "expect-hypervisor-done",
        "expect-commit-acks",
        "expect-cleanup-acks",
    ] {
        let series =
            format!("srmig_controller_migration_phase_duration_seconds_count{{phase=\"{phase}\"}}");
        assert_eq!(sample(&after, &series), 1.0, "{phase}");
    }
    assert!(!after.contains("phase=\"source-paused\""), "{after}");
    assert_eq!(
        sample(
            &after,
            "srmig_controller_migration_duration_seconds_count{outcome=\"completed\"}"
        ),
        1.0
    );
    w.shutdown().await;
}
