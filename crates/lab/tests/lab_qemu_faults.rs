//! Faults around the QEMU lab (`--vm-kind qemu`), end to end: what the lab and the controller's
//! QMP driver do when QEMU does not start, when the guest never becomes ready, when an operator
//! cancels a live migration, and when the destination QEMU dies in the middle of one.
//!
//! Every test checks that the error names its cause, that the VM still answers where it runs
//! (UDP echo on port 7 from the client VM, through the SR fabric, and its srmigd sees it
//! running), that a following migration succeeds without a reboot (same boot id), and that
//! teardown leaves no QEMU process and no namespace of the run behind. A 2 ms echo stream runs
//! across each cancel, each kill and the migration after them: not one datagram may be lost
//! (the paper's rollback "without losing a packet").
//!
//! The migrations here are slowed down on purpose (`max-bandwidth` capped at 8 MB/s, so the
//! pre-copy of the 128 MiB guest takes about 10 s) so that a cancel or a kill lands in the
//! middle of it. The whole file takes about a minute here.
//!
//! Needs root, QEMU (`qemu-system-x86_64`), the cached guest image and the srmigd binary
//! (`cargo build -p srmig-hostd`). Without root or QEMU it prints `SKIPPED: ...` and passes,
//! unless `CI` is set. The tests run one at a time (each boots a TCG guest).

mod common;

use common::processes_mentioning;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use srmig_api::{HostId, MigrateRequest, MigrationId, MigrationPhase, MigrationStatus, Strategy};
use srmig_api::{VmId, VmState};
use srmig_lab::list_namespaces_with_prefix;
use srmig_lab::orchestrate::fault::FaultPlan;
use srmig_lab::orchestrate::plan::HostRole;
use srmig_lab::orchestrate::qemu::{GuestImage, QemuOptions};
use srmig_lab::orchestrate::{
    error_chain, is_root, run, MigrationTiming, OrchestrateError, RunPlan, Testbed, TestbedOptions,
    WorkloadKind,
};
use srmig_lab::report::VmKind;
use srmig_lab::Netns;

/// Migration bandwidth cap (bytes/s) for the cancel and kill tests: a migration of the idle
/// 128 MiB guest then takes about 10 s (measured: 9.4 to 9.8 s).
const SLOW_BANDWIDTH: u64 = 8_000_000;
/// How long the tests wait for a controller phase or a hypervisor status.
const WAIT: Duration = Duration::from_secs(30);
/// UDP echo probes sent to check that the VM answers.
const PROBES: u16 = 20;

/// One QEMU testbed at a time: each boots a TCG guest on a machine with two cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    // A failed test poisons the lock; the next one still runs alone.
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn skip(test: &str, why: &str) -> bool {
    let msg = format!("SKIPPED: {why} [{test}]");
    // Straight to the process's stderr: `eprintln!` would be captured, and a passing test's
    // capture is never shown.
    let _ = writeln!(std::io::stderr(), "\n!!!!!!!! {msg} !!!!!!!!\n");
    assert!(
        std::env::var_os("CI").is_none(),
        "{msg}: CI is set, the QEMU fault tests must not be skipped"
    );
    false
}

/// Root and QEMU, or a loud skip (a failure under `CI`).
fn can_run(test: &str) -> bool {
    if !is_root() {
        return skip(
            test,
            "needs root (network namespaces, veth pairs, AF_PACKET for srmigd)",
        );
    }
    let qemu = std::process::Command::new("qemu-system-x86_64")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !qemu {
        return skip(test, "needs qemu-system-x86_64 (Debian: qemu-system-x86)");
    }
    true
}

fn guest_dir() -> PathBuf {
    let image = GuestImage::build_or_cached()
        .unwrap_or_else(|e| panic!("the guest image is missing: {}", error_chain(&e)));
    image
        .kernel
        .parent()
        .expect("the kernel lies in the guest directory")
        .to_owned()
}

/// QEMU testbed options; `max_bandwidth` caps the driver's migrations.
fn options(memory_mib: u32, boot_timeout: Duration, max_bandwidth: Option<u64>) -> TestbedOptions {
    let mut qemu = QemuOptions {
        guest_dir: Some(guest_dir()),
        memory_mib,
        boot_timeout,
        ..QemuOptions::default()
    };
    if let Some(bw) = max_bandwidth {
        let mut parameters = qemu.driver.parameters.take().unwrap_or_default();
        parameters.max_bandwidth = Some(bw);
        qemu.driver.parameters = Some(parameters);
    }
    TestbedOptions {
        vm_kind: VmKind::Qemu,
        qemu,
        ..TestbedOptions::default()
    }
}

fn build(options: &TestbedOptions) -> Testbed {
    let started = Instant::now();
    let testbed = Testbed::build(options)
        .unwrap_or_else(|e| panic!("building the QEMU lab failed: {}", error_chain(&e)));
    eprintln!(
        "lab built in {:.1} s (guest boot id {})",
        started.elapsed().as_secs_f64(),
        testbed.first_boot_id().unwrap_or("?")
    );
    testbed
}

/// `(pid, command line)` of the running QEMU processes whose command line mentions `needle`.
fn qemu_processes(needle: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // Zombies (killed, not reaped yet) have an empty command line: not running.
        let Ok(bytes) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let mut args = bytes.split(|&b| b == 0);
        let is_qemu = args
            .next()
            .is_some_and(|argv0| argv0.ends_with(b"qemu-system-x86_64"));
        let text = String::from_utf8_lossy(&bytes).replace('\0', " ");
        if is_qemu && text.contains(needle) {
            found.push((pid, text));
        }
    }
    found
}

/// Checks that run `run_id` (work directory `dir`) left no namespace and no QEMU behind.
fn assert_nothing_left(run_id: &str, dir: &Path) {
    let prefix = format!("srmig-{run_id}-");
    let namespaces = list_namespaces_with_prefix(&prefix).expect("ip netns list");
    assert!(
        namespaces.is_empty(),
        "namespaces of run {run_id} left behind: {namespaces:?}"
    );
    let dir = dir.to_str().expect("UTF-8 work dir");
    let qemus = qemu_processes(dir);
    assert!(qemus.is_empty(), "QEMU processes left behind: {qemus:?}");
    let others = processes_mentioning(dir);
    assert!(others.is_empty(), "processes left behind: {others:?}");
}

/// The run id in a default work directory path (`<temp>/srmig-lab-<run id>/...`) quoted in
/// `text`, and that directory.
fn work_dir_in(text: &str) -> Option<(String, PathBuf)> {
    let marker = "srmig-lab-";
    let at = text.find(marker)?;
    let id: String = text[at + marker.len()..]
        .chars()
        .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        .collect();
    if id.is_empty() {
        return None;
    }
    Some((
        id.clone(),
        std::env::temp_dir().join(format!("{marker}{id}")),
    ))
}

/// Sends [`PROBES`] UDP datagrams to the VM's echo port from the client VM; returns how many
/// distinct ones came back within a second after the last.
fn echo_replies(client: &Netns, vm: Ipv6Addr) -> u16 {
    let target = SocketAddr::V6(SocketAddrV6::new(vm, 7, 0, 0));
    let answered = client
        .run(move || -> std::io::Result<BTreeSet<u16>> {
            let socket = UdpSocket::bind("[::]:0")?;
            socket.set_read_timeout(Some(Duration::from_millis(50)))?;
            let mut seen = BTreeSet::new();
            let mut buf = [0u8; 64];
            let mut drain = |seen: &mut BTreeSet<u16>| {
                while let Ok((n, from)) = socket.recv_from(&mut buf) {
                    if from.ip() == target.ip() && from.port() == 7 && n == 2 {
                        seen.insert(u16::from_be_bytes([buf[0], buf[1]]));
                    }
                }
            };
            for seq in 0..PROBES {
                socket.send_to(&seq.to_be_bytes(), target)?;
                drain(&mut seen);
            }
            let until = Instant::now() + Duration::from_secs(1);
            while seen.len() < usize::from(PROBES) && Instant::now() < until {
                drain(&mut seen);
            }
            Ok(seen)
        })
        .expect("a thread in the client namespace")
        .unwrap_or_else(|e| panic!("UDP echo to {target} failed: {e}"));
    u16::try_from(answered.len()).unwrap_or(u16::MAX)
}

/// A UDP echo stream from the client VM to the VM (one datagram every [`STREAM_GAP`]) running
/// across a fault, to count what the rollback lost.
struct Stream {
    stop: Arc<AtomicBool>,
    thread: srmig_lab::NetnsThread<std::io::Result<(u32, u32)>>,
}

/// Interval of the [`Stream`] datagrams.
const STREAM_GAP: Duration = Duration::from_millis(2);

impl Stream {
    fn start(client: &Netns, vm: Ipv6Addr) -> Stream {
        let target = SocketAddr::V6(SocketAddrV6::new(vm, 7, 0, 0));
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = client
            .spawn("fault-stream", move || -> std::io::Result<(u32, u32)> {
                let socket = UdpSocket::bind("[::]:0")?;
                socket.set_nonblocking(true)?;
                let mut seen = BTreeSet::new();
                let mut buf = [0u8; 64];
                let mut drain = |seen: &mut BTreeSet<u32>| {
                    while let Ok((n, from)) = socket.recv_from(&mut buf) {
                        if from.ip() == target.ip() && from.port() == 7 && n == 4 {
                            seen.insert(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
                        }
                    }
                };
                let mut sent = 0u32;
                let mut next = Instant::now();
                while !flag.load(Ordering::Relaxed) {
                    // A full socket buffer is a lost probe, not an error of the test.
                    let _ = socket.send_to(&sent.to_be_bytes(), target);
                    sent += 1;
                    next += STREAM_GAP;
                    while Instant::now() < next {
                        drain(&mut seen);
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
                let until = Instant::now() + Duration::from_secs(1);
                while seen.len() < sent as usize && Instant::now() < until {
                    drain(&mut seen);
                    std::thread::sleep(Duration::from_millis(1));
                }
                Ok((sent, u32::try_from(seen.len()).unwrap_or(u32::MAX)))
            })
            .expect("a thread in the client namespace");
        Stream { stop, thread }
    }

    /// Stops the stream; `(sent, answered)`.
    fn finish(self) -> (u32, u32) {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.join() {
            Ok(Ok(counts)) => counts,
            Ok(Err(e)) => panic!("the echo stream failed: {e}"),
            Err(_) => panic!("the echo stream thread panicked"),
        }
    }
}

/// Lets the stream run a little longer, then checks every datagram came back.
fn assert_stream_lossless(stream: Stream) {
    std::thread::sleep(Duration::from_millis(300));
    let (sent, answered) = stream.finish();
    eprintln!("echo stream: {answered}/{sent} answered");
    assert!(sent > 100, "the stream sent only {sent} datagrams");
    assert_eq!(answered, sent, "echo datagrams lost");
}

/// The VM's state as srmigd on `host` sees it (`GET /v1/status`).
fn vm_state_at(testbed: &Testbed, host: HostRole) -> VmState {
    let name = testbed.plan().host(host).name;
    let socket = testbed.dir().join(format!("{name}.sock"));
    let status = testbed
        .control()
        .srmigd_get(&socket, "/v1/status")
        .unwrap_or_else(|e| panic!("status of srmigd {name}: {e}"));
    let vm = status["vms"]
        .as_array()
        .and_then(|vms| vms.iter().find(|v| v["name"] == testbed.plan().vm.name))
        .unwrap_or_else(|| panic!("srmigd {name} does not list the VM: {status}"));
    serde_json::from_value(vm["state"].clone())
        .unwrap_or_else(|e| panic!("srmigd {name}: VM state {}: {e}", vm["state"]))
}

/// The VM answers at `host`: its srmigd sees it running, every echo probe comes back, and it
/// did not reboot.
fn assert_answers_at(testbed: &Testbed, host: HostRole) {
    let other = match host {
        HostRole::Source => HostRole::Destination,
        _ => HostRole::Source,
    };
    assert_eq!(testbed.vm_at(), host, "the lab thinks the VM is elsewhere");
    assert_eq!(vm_state_at(testbed, host), VmState::Running);
    assert_ne!(
        vm_state_at(testbed, other),
        VmState::Running,
        "srmigd on the other host also sees the VM running"
    );
    let replies = echo_replies(testbed.client_ns(), testbed.plan().vm.address);
    assert_eq!(replies, PROBES, "the VM answered {replies}/{PROBES} echoes");
    let boot_id = testbed
        .guest_boot_id()
        .unwrap_or_else(|e| panic!("boot id: {}", error_chain(&e)));
    assert_eq!(
        boot_id.as_deref(),
        testbed.first_boot_id(),
        "the guest rebooted"
    );
}

fn request_to_destination(testbed: &Testbed) -> MigrateRequest {
    MigrateRequest {
        vm: VmId::new(testbed.plan().vm.name).expect("VM name"),
        to: HostId::new(testbed.plan().host(HostRole::Destination).name).expect("host name"),
        strategy: Strategy::SrBuffer,
    }
}

/// Polls migration `id` until `reached` (which sees the whole status); fails on a terminal
/// phase `reached` did not accept, or after [`WAIT`].
fn wait_for(
    testbed: &Testbed,
    id: MigrationId,
    what: &str,
    reached: impl Fn(&MigrationStatus) -> bool,
) -> MigrationStatus {
    let start = Instant::now();
    loop {
        let status = testbed
            .control()
            .migration(id)
            .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
        if reached(&status) {
            return status;
        }
        assert!(
            !status.phase.is_terminal(),
            "migration m{} ended {} before {what} (error: {:?}, hypervisor: {:?})",
            id.0,
            status.phase,
            status.error,
            status.hypervisor
        );
        assert!(
            start.elapsed() < WAIT,
            "no {what} within {WAIT:?}: phase {}, hypervisor {:?}",
            status.phase,
            status.hypervisor
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until QEMU is in the middle of the pre-copy: the controller waits for the
/// hypervisor and QEMU has sent some of the guest's memory, not all of it.
fn wait_precopy(testbed: &Testbed, id: MigrationId) -> MigrationStatus {
    wait_for(testbed, id, "an active pre-copy", |s| {
        s.phase == MigrationPhase::ExpectHypervisorDone
            && s.hypervisor.as_ref().is_some_and(|h| {
                h.status == "active" && h.ram_transferred.is_some_and(|b| b > 4_000_000)
            })
    })
}

fn wait_end(testbed: &Testbed, id: MigrationId) -> MigrationStatus {
    wait_for(testbed, id, "the end of the migration", |s| {
        s.phase.is_terminal()
    })
}

fn phase_names(status: &MigrationStatus) -> Vec<String> {
    status.phases.iter().map(|r| r.phase.to_string()).collect()
}

/// A normal migration S -> D after a fault, with an echo stream running: completes without
/// loss, and the same guest answers at D.
fn migrate_normally(testbed: &mut Testbed) {
    let stream = Stream::start(testbed.client_ns(), testbed.plan().vm.address);
    let started = Instant::now();
    let record = testbed
        .migrate(Strategy::SrBuffer, MigrationTiming::default(), started)
        .unwrap_or_else(|e| panic!("the migration after the fault failed: {}", error_chain(&e)));
    eprintln!(
        "then {} {} -> {} completed in {:.1} s (pause {:.1} ms, held {}, released {}, dropped {})",
        record.id,
        record.from,
        record.to,
        record.total_ms / 1e3,
        record.pause_ms,
        record.held,
        record.released,
        record.dropped
    );
    // The fault left nothing in the way: End.SBUF at D holds and releases as usual.
    assert_stream_lossless(stream);
    assert_eq!(record.to, testbed.plan().host(HostRole::Destination).name);
    assert_eq!(record.held, record.released, "{record:?}");
    assert_eq!(record.dropped, 0, "{record:?}");
    assert_answers_at(testbed, HostRole::Destination);
}

/// Tears `testbed` down and checks nothing of it is left.
fn teardown_clean(testbed: Testbed) {
    let run_id = testbed.lab().run_id().as_str().to_owned();
    let dir = testbed.dir().to_owned();
    testbed
        .teardown()
        .unwrap_or_else(|e| panic!("teardown failed: {}", error_chain(&e)));
    assert_nothing_left(&run_id, &dir);
    assert!(!dir.exists(), "work dir left behind: {}", dir.display());
}

/// A build that must fail: returns the error and the run's work directory (which the error
/// must quote; a failed build keeps it for the logs it points to), after checking that no
/// namespace and no process of the run is left.
fn build_fails(options: &TestbedOptions) -> (String, PathBuf) {
    let started = Instant::now();
    let err: OrchestrateError = match Testbed::build(options) {
        Ok(testbed) => {
            drop(testbed);
            panic!("the lab was built although it must fail");
        }
        Err(e) => e,
    };
    let text = error_chain(&err);
    eprintln!(
        "build failed after {:.1} s as expected:\n{text}",
        started.elapsed().as_secs_f64()
    );
    let (run_id, dir) =
        work_dir_in(&text).unwrap_or_else(|| panic!("the error names no file of the run: {text}"));
    assert_nothing_left(&run_id, &dir);
    (text, dir)
}

#[test]
fn qemu_that_cannot_start_fails_the_build_with_its_log_and_leaves_nothing() {
    if !can_run("qemu_that_cannot_start_fails_the_build_with_its_log_and_leaves_nothing") {
        return;
    }
    let _serial = one_at_a_time();
    // QEMU cannot set up u32::MAX MiB of guest memory and exits at once.
    let (text, dir) = build_fails(&options(u32::MAX, Duration::from_secs(60), None));
    assert!(text.contains("QEMU"), "{text}");
    assert!(text.contains("exited before the guest was ready"), "{text}");
    let log = dir.join("qemu-s-0.log");
    assert!(
        text.contains(&log.display().to_string()),
        "the error names no QEMU log: {text}"
    );
    assert!(
        text.contains("cannot set up guest memory"),
        "the error does not quote QEMU's own message: {text}"
    );
    assert!(log.is_file(), "no log {}", log.display());
    std::fs::remove_dir_all(&dir).expect("removing the kept work dir");
}

#[test]
fn guest_that_is_not_ready_in_time_fails_the_build_and_qemu_is_killed() {
    if !can_run("guest_that_is_not_ready_in_time_fails_the_build_and_qemu_is_killed") {
        return;
    }
    let _serial = one_at_a_time();
    let (text, dir) = build_fails(&options(128, Duration::from_millis(300), None));
    assert!(text.contains("QEMU"), "{text}");
    assert!(text.contains("not ready after 300ms"), "{text}");
    let console = dir.join("qemu-s-0.serial");
    assert!(
        text.contains(&console.display().to_string()),
        "the error names no console: {text}"
    );
    // QEMU was running (it opened its console) before the lab killed it.
    assert!(
        console.is_file(),
        "QEMU never started: no {}",
        console.display()
    );
    std::fs::remove_dir_all(&dir).expect("removing the kept work dir");
}

/// When the cancel test cancels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CancelAt {
    /// As soon as the phase is `expect-hypervisor-done`.
    HypervisorPhase,
    /// Once QEMU has sent part of the guest's memory.
    PreCopy,
}

/// Starts a migration S -> D, cancels it at `when` with an echo stream running, and checks
/// that it ends `cancelled` without loss, the destination QEMU gone and the VM at S.
fn cancel_and_check(testbed: &Testbed, when: CancelAt, source_qemu: u32, dir: &str) {
    let stream = Stream::start(testbed.client_ns(), testbed.plan().vm.address);
    let accepted = testbed
        .control()
        .migrate(&request_to_destination(testbed))
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    let id = accepted.id;
    let reached = match when {
        CancelAt::HypervisorPhase => wait_for(testbed, id, "the hypervisor phase", |s| {
            s.phase == MigrationPhase::ExpectHypervisorDone
        }),
        CancelAt::PreCopy => wait_precopy(testbed, id),
    };
    eprintln!(
        "m{}: cancelling at {when:?} ({})",
        id.0,
        reached
            .hypervisor
            .as_ref()
            .map_or_else(|| "QEMU not migrating yet".to_owned(), ToString::to_string)
    );
    let asked = Instant::now();
    testbed
        .control()
        .cancel(id)
        .unwrap_or_else(|e| panic!("cancel: {}", error_chain(&e)));
    let done = wait_end(testbed, id);
    eprintln!(
        "m{} ended {} {:.0} ms after the cancel (error {:?}; hypervisor {}); phases {:?}",
        id.0,
        done.phase,
        asked.elapsed().as_secs_f64() * 1e3,
        done.error,
        done.hypervisor
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        phase_names(&done)
    );
    assert_stream_lossless(stream);
    assert_eq!(
        done.phase,
        MigrationPhase::Cancelled,
        "the bandwidth cap should have kept QEMU busy: {done:?}"
    );
    assert!(
        done.phases
            .iter()
            .any(|r| r.phase == MigrationPhase::CancelRequested),
        "{:?}",
        phase_names(&done)
    );
    assert_eq!(
        done.hypervisor.as_ref().map(|h| h.status.as_str()),
        Some("cancelled"),
        "QEMU's own status"
    );
    // The destination QEMU is gone, the source QEMU still runs the VM.
    let qemus = qemu_processes(dir);
    assert_eq!(
        qemus.iter().map(|q| q.0).collect::<Vec<_>>(),
        [source_qemu],
        "{qemus:?}"
    );
    assert_eq!(testbed.qemu_pid(), Some(source_qemu));
    assert_answers_at(testbed, HostRole::Source);
}

#[test]
fn cancelled_migration_rolls_back_to_the_source_and_the_next_one_succeeds() {
    if !can_run("cancelled_migration_rolls_back_to_the_source_and_the_next_one_succeeds") {
        return;
    }
    let _serial = one_at_a_time();
    let started = Instant::now();
    let mut testbed = build(&options(
        128,
        Duration::from_secs(120),
        Some(SLOW_BANDWIDTH),
    ));
    let source_qemu = testbed.qemu_pid().expect("the source QEMU's pid");
    let dir = testbed.dir().to_str().expect("UTF-8 work dir").to_owned();
    assert_answers_at(&testbed, HostRole::Source);

    // As soon as the controller hands the migration to the hypervisor (QEMU may not even
    // have started on D), then in the middle of the pre-copy.
    for when in [CancelAt::HypervisorPhase, CancelAt::PreCopy] {
        cancel_and_check(&testbed, when, source_qemu, &dir);
    }

    migrate_normally(&mut testbed);
    teardown_clean(testbed);
    eprintln!(
        "cancel test done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn destination_qemu_killed_mid_migration_fails_it_and_the_next_one_succeeds() {
    if !can_run("destination_qemu_killed_mid_migration_fails_it_and_the_next_one_succeeds") {
        return;
    }
    let _serial = one_at_a_time();
    let started = Instant::now();
    let mut testbed = build(&options(
        128,
        Duration::from_secs(120),
        Some(SLOW_BANDWIDTH),
    ));
    let source_qemu = testbed.qemu_pid().expect("the source QEMU's pid");
    let dir = testbed.dir().to_str().expect("UTF-8 work dir").to_owned();
    assert_answers_at(&testbed, HostRole::Source);

    let stream = Stream::start(testbed.client_ns(), testbed.plan().vm.address);
    let accepted = testbed
        .control()
        .migrate(&request_to_destination(&testbed))
        .unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    let id = accepted.id;
    let active = wait_precopy(&testbed, id);
    let destination: Vec<(u32, String)> = qemu_processes(&dir)
        .into_iter()
        .filter(|(pid, _)| *pid != source_qemu)
        .collect();
    let [(victim, cmdline)] = destination.as_slice() else {
        panic!("expected exactly one destination QEMU besides {source_qemu}: {destination:?}");
    };
    assert!(
        cmdline.contains("-incoming") && cmdline.contains("qemu-d.qmp"),
        "{cmdline}"
    );
    eprintln!(
        "m{}: killing the destination QEMU {victim} during the pre-copy ({})",
        id.0,
        active
            .hypervisor
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default()
    );
    let pid = nix::unistd::Pid::from_raw(i32::try_from(*victim).expect("pid fits i32"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("SIGKILL");
    let killed = Instant::now();

    let done = wait_end(&testbed, id);
    eprintln!(
        "m{} ended {} {:.0} ms after the kill (error {:?}; hypervisor {}); phases {:?}",
        id.0,
        done.phase,
        killed.elapsed().as_secs_f64() * 1e3,
        done.error,
        done.hypervisor
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        phase_names(&done)
    );
    assert_stream_lossless(stream);
    assert_eq!(done.phase, MigrationPhase::Failed, "{done:?}");
    let reason = done.error.clone().unwrap_or_default();
    assert!(
        reason.contains("hypervisor failed") && reason.len() > "hypervisor failed".len() + 4,
        "the reason does not name the hypervisor's failure: {done:?}"
    );
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "the failure took {:?} to be noticed",
        killed.elapsed()
    );
    let qemus = qemu_processes(&dir);
    assert_eq!(
        qemus.iter().map(|q| q.0).collect::<Vec<_>>(),
        [source_qemu],
        "{qemus:?}"
    );
    assert_eq!(testbed.qemu_pid(), Some(source_qemu));
    assert_answers_at(&testbed, HostRole::Source);

    migrate_normally(&mut testbed);
    teardown_clean(testbed);
    eprintln!("kill test done in {:.1} s", started.elapsed().as_secs_f64());
}

/// Migration bandwidth for the controller kills: about 3 s per migration of the idle guest,
/// so a controller killed at `migrating` is back (1 s later) while QEMU still migrates.
const KILL_BANDWIDTH: u64 = 40_000_000;

/// The controller (its own `srmig controller` process, driving QEMU over QMP with the lab's
/// launcher hook) is SIGKILLed during QEMU's pre-copy, then during the switchover (the VM
/// paused at the source), and started again 1 s later: it re-attaches to the migration QEMU
/// is running (or has finished) and completes it or rolls it back; the 1 ms probe loses
/// nothing, the guest never reboots, and a migration without faults follows.
#[test]
fn controller_killed_during_a_qemu_migration_reattaches_and_loses_nothing() {
    if !can_run("controller_killed_during_a_qemu_migration_reattaches_and_loses_nothing") {
        return;
    }
    let _serial = one_at_a_time();
    let mut opts = options(128, Duration::from_secs(120), Some(KILL_BANDWIDTH));
    opts.controller_process = true;
    let mut testbed = build(&opts);
    let run_id = testbed.lab().run_id().as_str().to_owned();
    let dir = testbed.dir().to_owned();
    let boot = testbed.first_boot_id().map(str::to_owned);
    let plan = |fault: Option<&str>| {
        let mut plan = RunPlan::new(Strategy::SrBuffer, vec![WorkloadKind::Probe], 1);
        plan.vm_kind = VmKind::Qemu;
        plan.gap = Duration::from_secs(4);
        plan.faults = FaultPlan {
            faults: fault
                .map(|f| vec![f.parse().expect("fault")])
                .unwrap_or_default(),
            down: Duration::from_secs(1),
        };
        plan
    };
    for fault in ["kill-controller:migrating", "kill-controller:switchover"] {
        let outcome = run(&mut testbed, &plan(Some(fault)))
            .unwrap_or_else(|e| panic!("{fault}: {}", error_chain(&e)));
        eprintln!("--- {fault}\n{}", outcome.summary());
        let probe = outcome.report.probe.as_ref().expect("probe report");
        assert!(probe.sent > 1000, "{probe:?}");
        assert_eq!(probe.lost, 0, "{fault}: {probe:?}");
        let records = &outcome.details.faults;
        assert_eq!(records.len(), 1, "{records:?}");
        let r = &records[0];
        assert!(
            r.outcome == "completed" || r.outcome == "rolled_back",
            "{r:?}"
        );
        assert!(r.recovered_ms < 15_000.0, "{r:?}");
        if fault.ends_with("migrating") {
            // Killed while QEMU migrated: the restarted controller found it still running.
            assert_eq!(
                r.controller_phase.as_deref(),
                Some("expect-hypervisor-done"),
                "{r:?}"
            );
        }
    }
    let after =
        run(&mut testbed, &plan(None)).unwrap_or_else(|e| panic!("after: {}", error_chain(&e)));
    eprintln!("--- after the controller kills\n{}", after.summary());
    let probe = after.report.probe.as_ref().expect("probe report");
    assert_eq!(probe.lost, 0, "{probe:?}");
    assert_eq!(after.details.migrations[0].record.outcome, "completed");
    assert_eq!(
        testbed.guest_boot_id().expect("boot id"),
        boot,
        "the guest rebooted"
    );
    testbed.teardown().expect("teardown");
    assert_nothing_left(&run_id, &dir);
}

#[test]
fn work_dir_is_found_in_error_text() {
    let text = "QEMU: QEMU on s exited; its log (/tmp/srmig-lab-1a2b3c/qemu-s-0.log) ends";
    let (id, dir) = work_dir_in(text).expect("found");
    assert_eq!(id, "1a2b3c");
    assert_eq!(dir, std::env::temp_dir().join("srmig-lab-1a2b3c"));
    assert_eq!(work_dir_in("no directory here"), None);
    assert_eq!(work_dir_in("/tmp/srmig-lab-/x"), None);
}
