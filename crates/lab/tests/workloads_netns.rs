//! End-to-end check of the lab substrate and the workloads on real namespaces:
//! client ns <-> router ns <-> vm ns, plain Linux IPv6 routing.
//!
//! Needs root (network namespaces). Without root it prints `SKIPPED: needs root` and passes,
//! unless `CI` is set, in which case it fails.

use std::net::{IpAddr, SocketAddr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use srmig_lab::registry::{ProcessId, RunRecord};
use srmig_lab::report::{Report, Strategy, VmKind};
use srmig_lab::topology::list_namespaces_with_prefix;
use srmig_lab::workload::http::{run_http, HttpConfig, HttpServer};
use srmig_lab::workload::probe::{run_probe, Baseline, ProbeConfig, ProbeResponder};
use srmig_lab::workload::tcp::{run_tcp_sender, tcp_report, TcpReceiver, TcpSenderConfig};
use srmig_lab::{cleanup_stale_in, Lab, LabOptions, LinkEnd, MacAddr, Netns, Route, RunId};

/// True if the test may run; prints the skip loudly (and fails under CI) otherwise.
fn have_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("SKIPPED: needs root (network namespaces)");
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set: root-only lab tests must not be skipped"
    );
    false
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address literal")
}

fn net(s: &str) -> IpNet {
    s.parse().expect("prefix literal")
}

/// The three-namespace topology.
struct Topo {
    client: Netns,
    vm: Netns,
    /// Router end of the router <-> vm link (the VM's "attachment").
    router_to_vm: LinkEnd,
    router: Netns,
}

const CLIENT: &str = "fd00:1::2";
const VM: &str = "fd00:2::2";
const ROUTER_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
const VM_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x02]);

fn build(lab: &Lab) -> Topo {
    let client = lab.add_netns("client").expect("client ns");
    let router = lab.add_netns("router").expect("router ns");
    let vm = lab.add_netns("vm").expect("vm ns");
    let c_r = lab
        .add_veth(&client, "eth0", &router, "to-client")
        .expect("client veth");
    let r_v = lab
        .add_veth(&router, "to-vm", &vm, "eth0")
        .expect("vm veth");
    lab.set_mac(&r_v.a, ROUTER_MAC).expect("router mac");
    lab.set_mac(&r_v.b, VM_MAC).expect("vm mac");
    lab.enable_forwarding(&router).expect("forwarding");
    for (end, addr) in [
        (&c_r.a, "fd00:1::2/64"),
        (&c_r.b, "fd00:1::1/64"),
        (&r_v.a, "fd00:2::1/64"),
        (&r_v.b, "fd00:2::2/64"),
    ] {
        lab.add_addr(end, net(addr)).expect("address");
        lab.set_up(end).expect("link up");
    }
    for end in [&c_r.a, &c_r.b, &r_v.a, &r_v.b] {
        lab.wait_up(end, Duration::from_secs(5))
            .expect("link operational");
    }
    // Static neighbors on the VM link: after a cut, traffic resumes without waiting for
    // neighbor discovery (whose 1 s retransmission would otherwise blur the measured gap).
    lab.add_neighbor(&r_v.a, ip(VM), VM_MAC)
        .expect("router neighbor");
    lab.add_neighbor(&r_v.b, ip("fd00:2::1"), ROUTER_MAC)
        .expect("vm neighbor");
    lab.add_route(&client, &Route::default_v6(ip("fd00:1::1"), Some("eth0")))
        .expect("client route");
    lab.add_route(&vm, &Route::default_v6(ip("fd00:2::1"), Some("eth0")))
        .expect("vm route");
    Topo {
        client,
        vm,
        router_to_vm: r_v.a,
        router,
    }
}

/// Cuts the VM's attachment (router side, like a host detaching a paused VM) for `gap`.
fn cut(lab: &Lab, topo: &Topo, gap: Duration) {
    lab.set_down(&topo.router_to_vm).expect("cut");
    thread::sleep(gap);
    lab.set_up(&topo.router_to_vm).expect("restore");
    // Admin-down removes the connected route; make sure it is back whatever the kernel did.
    lab.add_route(
        &topo.router,
        &Route {
            dst: Some(net("fd00:2::/64")),
            via: None,
            dev: Some(topo.router_to_vm.ifname.clone()),
            family_v6: true,
        },
    )
    .expect("restore route");
    lab.add_neighbor(&topo.router_to_vm, ip(VM), VM_MAC)
        .expect("restore neighbor");
}

#[test]
fn workloads_are_clean_then_see_a_200ms_cut_and_teardown_is_complete() {
    if !have_root() {
        return;
    }
    let lab = Lab::new().expect("lab");
    let prefix = lab.run_id().prefix();
    let registry = PathBuf::from("/run/srmig-lab").join(format!("{}.json", lab.run_id()));
    assert!(registry.exists(), "registry file written");
    let topo = build(&lab);
    assert_eq!(lab.live_namespaces().expect("list").len(), 3);
    let vm_addr = ip(VM);
    let client_addr = ip(CLIENT);
    assert_ne!(vm_addr, client_addr);

    // Probe, 2 s.
    let responder =
        ProbeResponder::spawn(&topo.vm, SocketAddr::new(vm_addr, 7000)).expect("responder");
    let probe = run_probe(
        &topo.client,
        &ProbeConfig::new(responder.local_addr(), 2000),
    )
    .expect("probe");
    let p = &probe.report;
    eprintln!("probe: {p:?}");
    assert_eq!((p.sent, p.lost, p.duplicated), (2000, 0, 0), "{p:?}");
    assert_eq!(p.send_errors, 0);
    assert!(p.median_rtt_ms > 0.0 && p.median_rtt_ms < 5.0, "{p:?}");
    let last_sent = probe.samples[1999].sent_ms;
    assert!((1995.0..2200.0).contains(&last_sent), "drift: {last_sent}");

    // HTTP, 2 s at 100/s.
    let server = HttpServer::spawn(&topo.vm, SocketAddr::new(vm_addr, 8080)).expect("server");
    let http = run_http(
        &topo.client,
        &HttpConfig::new(server.local_addr(), Duration::from_secs(2)),
    )
    .expect("http");
    let h = &http.report;
    eprintln!("http: {h:?}");
    assert_eq!(
        (h.requests, h.failed, h.slow_ge_900ms),
        (200, 0, 0),
        "{h:?}"
    );
    assert!(h.p50_ms < 50.0 && h.p99_ms < 500.0, "{h:?}");
    assert_eq!(server.stop().expect("server stop"), 200);

    // TCP bulk towards the VM, 2 s.
    let receiver = TcpReceiver::spawn(
        &topo.vm,
        SocketAddr::new(vm_addr, 5001),
        Duration::from_millis(100),
    )
    .expect("receiver");
    let sender = run_tcp_sender(
        &topo.client,
        &TcpSenderConfig::new(receiver.local_addr(), Duration::from_secs(2)),
    )
    .expect("sender");
    let received = receiver.finish().expect("receiver finish");
    let t = tcp_report(&received, &sender);
    eprintln!("tcp: {t:?}");
    assert_eq!(received.total_bytes, sender.bytes_sent);
    assert!((19..=22).contains(&t.bins_mbps.len()), "{t:?}");
    assert!(t.median_mbps > 50.0, "{t:?}");
    assert!(t.worst_bin_mbps > 0.0, "{t:?}");
    assert!(!t.rto_seen, "no RTO without a cut: {t:?}");

    // The measurement sees loss: cut the VM's attachment for 200 ms mid-run.
    let config = ProbeConfig {
        baseline: Baseline::FixedMs(p.median_rtt_ms),
        ..ProbeConfig::new(responder.local_addr(), 1500)
    };
    let cut_probe = thread::scope(|scope| {
        let run = scope.spawn(|| run_probe(&topo.client, &config));
        thread::sleep(Duration::from_millis(500));
        let t0 = Instant::now();
        cut(&lab, &topo, Duration::from_millis(200));
        eprintln!("cut lasted {:?} including ip commands", t0.elapsed());
        run.join().expect("probe thread").expect("probe")
    });
    let c = &cut_probe.report;
    eprintln!("cut probe: {c:?}");
    assert!((180..=320).contains(&c.lost), "expected ~200 lost: {c:?}");
    assert_eq!(c.duplicated, 0);
    // The losses form one gap around the cut, not scattered drops.
    let lost: Vec<u64> = cut_probe
        .samples
        .iter()
        .filter(|s| s.received_ms.is_none())
        .map(|s| s.seq)
        .collect();
    let span = lost.last().copied().unwrap_or(0) - lost.first().copied().unwrap_or(0) + 1;
    assert!(
        span <= c.lost + 5,
        "loss not contiguous: span {span}, lost {}",
        c.lost
    );
    assert!(
        lost.first().is_some_and(|&s| (400..700).contains(&s)),
        "gap at {lost:?}"
    );
    assert!(responder.stop().expect("responder stop").echoed >= 3000);

    // The report carries the contracted names.
    let report = Report {
        strategy: Strategy::None,
        vm_kind: VmKind::Netns,
        migrations: Vec::new(),
        probe: Some(cut_probe.report.clone()),
        http: Some(http.report.clone()),
        tcp: Some(t),
        family: srmig_lab::report::Family::Ipv6,
        probe_v4: None,
        http_v4: None,
        tcp_v4: None,
        raw: None,
    };
    let json = serde_json::to_value(&report).expect("json");
    assert_eq!(json["probe"]["lost"], c.lost);
    assert_eq!(json["http"]["requests"], 200);

    lab.teardown().expect("teardown");
    assert!(
        list_namespaces_with_prefix(&prefix)
            .expect("list")
            .is_empty(),
        "namespaces left behind"
    );
    assert!(!registry.exists(), "registry file left behind");
}

#[test]
fn teardown_runs_when_the_test_panics() {
    if !have_root() {
        return;
    }
    let prefix = Mutex::new(String::new());
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let lab = Lab::new().expect("lab");
        *prefix.lock().expect("lock") = lab.run_id().prefix();
        let a = lab.add_netns("a").expect("ns a");
        let b = lab.add_netns("b").expect("ns b");
        lab.add_veth(&a, "x", &b, "y").expect("veth");
        let pid = lab
            .spawn(&a, &["sleep", "30"], None)
            .expect("child process");
        assert!(lab.child_running(pid));
        assert_eq!(lab.live_namespaces().expect("list").len(), 2);
        panic!("deliberate panic with a live lab");
    }));
    assert!(outcome.is_err());
    let prefix = prefix.into_inner().expect("lock");
    assert!(!prefix.is_empty());
    assert!(
        list_namespaces_with_prefix(&prefix)
            .expect("list")
            .is_empty(),
        "Drop during unwinding must delete the namespaces"
    );
}

#[test]
fn moved_link_end_lives_in_the_new_namespace_and_children_are_stopped() {
    if !have_root() {
        return;
    }
    let lab = Lab::new().expect("lab");
    let s = lab.add_netns("s").expect("s");
    let d = lab.add_netns("d").expect("d");
    let vm = lab.add_netns("vm").expect("vm");
    let veth = lab.add_veth(&s, "vm1", &vm, "eth0").expect("veth");
    let moved = lab.move_link(&veth.a, &d).expect("move");
    assert_eq!(moved.netns, d);
    assert!(d.ip(&["link", "show", "dev", "vm1"]).is_ok());
    assert!(s.ip(&["link", "show", "dev", "vm1"]).is_err());
    lab.add_addr(&moved, net("fd00:9::1/64")).expect("addr");
    lab.set_up(&moved).expect("up");
    // Sysctls are per namespace: the lab set keep_addr_on_down in `vm`, not in the root.
    assert_eq!(
        vm.sysctl("net.ipv6.conf.all.keep_addr_on_down")
            .expect("sysctl"),
        "1"
    );
    let pid = lab.spawn(&vm, &["sleep", "30"], None).expect("spawn");
    lab.stop_child(pid).expect("stop child");
    assert!(!lab.child_running(pid));
    // Sockets created by a thread inside `d` belong to `d`: the moved end's address is
    // bindable there and nowhere else.
    let bind = || std::net::UdpSocket::bind("[fd00:9::1]:0").map(drop);
    assert!(d.run(bind).expect("run in d").is_ok());
    assert!(s.run(bind).expect("run in s").is_err());
    assert!(
        bind().is_err(),
        "the root namespace does not have the address"
    );
    let in_d = d
        .spawn("bind-in-d", move || bind().is_ok())
        .expect("spawn in d");
    assert!(in_d.join().expect("join"));
    drop(lab);
    assert!(!s.exists() && !d.exists() && !vm.exists());
}

#[test]
fn cleanup_stale_removes_a_dead_runs_namespaces() {
    if !have_root() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("srmig-lab-it-{}", std::process::id()));
    let run_id = RunId::generate();
    // A run whose owner is long dead: a pid that cannot exist.
    let mut record = RunRecord::new(run_id.as_str());
    record.owner = ProcessId {
        pid: u32::MAX - 7,
        start_time: Some(1),
    };
    let name = format!("{}left", run_id.prefix());
    record.namespaces.push(name.clone());
    record.store(&dir).expect("store");
    let out = std::process::Command::new("ip")
        .args(["netns", "add", &name])
        .output()
        .expect("ip netns add");
    assert!(out.status.success());
    // A live lab in the same registry must be untouched.
    let live = Lab::with_options(LabOptions {
        registry_dir: dir.clone(),
        ..LabOptions::default()
    })
    .expect("live lab");
    let live_ns = live.add_netns("keep").expect("keep ns");

    let report = cleanup_stale_in(&dir);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.runs, vec![run_id.as_str().to_owned()]);
    assert_eq!(report.namespaces_deleted, 1);
    assert!(!Netns::from_name(&name).exists());
    assert!(live_ns.exists());
    drop(live);
    assert!(!live_ns.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Env var that turns [`helper_hold_a_lab_until_killed`] from a no-op into the child side of
/// the signal tests.
const HOLD_ENV: &str = "SRMIG_LAB_TEST_HOLD";

/// Child side of the signal tests (a no-op unless [`HOLD_ENV`] is set): builds a lab with a
/// child process, prints the run id on stdout, then waits to be signalled.
#[test]
fn helper_hold_a_lab_until_killed() {
    if std::env::var_os(HOLD_ENV).is_none() {
        return;
    }
    let lab = Lab::new().expect("lab");
    let a = lab.add_netns("a").expect("ns");
    let b = lab.add_netns("b").expect("ns");
    lab.add_veth(&a, "x", &b, "y").expect("veth");
    lab.spawn(&a, &["sleep", "60"], None).expect("child");
    #[allow(clippy::print_stdout)]
    {
        println!("RUNID={}", lab.run_id());
    }
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    thread::sleep(Duration::from_secs(30));
}

/// Starts [`helper_hold_a_lab_until_killed`] in a child process; returns it and its run id.
fn start_holder() -> (std::process::Child, String) {
    use std::io::BufRead as _;
    let exe = std::env::current_exe().expect("test binary");
    let mut child = std::process::Command::new(exe)
        .args(["--exact", "helper_hold_a_lab_until_killed", "--nocapture"])
        .env(HOLD_ENV, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn holder");
    let stdout = child.stdout.take().expect("stdout");
    let run_id = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| line.strip_prefix("RUNID=").map(str::to_owned))
        .expect("holder printed its run id");
    (child, run_id)
}

/// Live `sleep 60` processes started by the holder's lab, found through its registry file.
fn registry_children(run_id: &str) -> Vec<ProcessId> {
    let path = PathBuf::from("/run/srmig-lab").join(format!("{run_id}.json"));
    RunRecord::load(&path).expect("holder registry").children
}

#[test]
fn sigterm_tears_the_lab_down() {
    if !have_root() {
        return;
    }
    let (mut child, run_id) = start_holder();
    let prefix = format!("srmig-{run_id}-");
    assert_eq!(list_namespaces_with_prefix(&prefix).expect("list").len(), 2);
    let children = registry_children(&run_id);
    assert_eq!(children.len(), 1);
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let status = child.wait().expect("wait holder");
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(
        status.signal(),
        Some(15),
        "dies of SIGTERM after cleanup: {status:?}"
    );
    assert!(list_namespaces_with_prefix(&prefix)
        .expect("list")
        .is_empty());
    assert!(!children[0].is_alive(), "child process killed");
    assert!(!PathBuf::from("/run/srmig-lab")
        .join(format!("{run_id}.json"))
        .exists());
}

#[test]
fn sigkill_leftovers_are_removed_by_cleanup_stale() {
    if !have_root() {
        return;
    }
    let (mut child, run_id) = start_holder();
    let prefix = format!("srmig-{run_id}-");
    let children = registry_children(&run_id);
    child.kill().expect("SIGKILL");
    child.wait().expect("wait holder");
    assert_eq!(
        list_namespaces_with_prefix(&prefix).expect("list").len(),
        2,
        "SIGKILL leaves the namespaces behind"
    );
    let report = srmig_lab::cleanup_stale();
    assert!(report.runs.contains(&run_id), "{report:?}");
    assert!(list_namespaces_with_prefix(&prefix)
        .expect("list")
        .is_empty());
    assert!(!children[0].is_alive(), "orphaned child process killed");
}
