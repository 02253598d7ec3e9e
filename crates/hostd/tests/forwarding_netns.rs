//! Two real srmigd processes on a Linux IPv6 underlay:
//!
//! ```text
//!  vma ns ─eth0══vma0─ [s ns: srmigd S] ─up0══rs0─ [r ns: Linux router] ─rd0══up0─ [d ns: srmigd D] ─vmb0══eth0─ vmb ns
//!  2001:db8:a::10/128     locator fc00:0:1::/48       plain IPv6 routing       locator fc00:0:2::/48      2001:db8:a::20/128
//! ```
//!
//! - ping and UDP from vma to vmb: H.Encaps at S (host config mapping) -> router -> End.DT6 at D,
//!   and back (D's mapping for vma, End.DT6 at S); the VMs resolve the anycast gateway
//!   (`fe80::1`) through srmigd's NDP, the router resolves srmigd's uplink addresses too;
//! - End.SBUF: S's mapping for vmb moves to `D::End.SBUF`; D's VM link goes down (vmb paused),
//!   30 datagrams are held (visible in /metrics), the link comes back and they arrive in order;
//! - /metrics shows the per-SID, per-VM and per-policy counters;
//! - SIGTERM stops srmigd and removes its socket.
//!
//! Needs root. Without root it prints `SKIPPED: needs root` and passes, unless `CI` is set.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use ipnet::IpNet;
use srmig_hostd::client::blocking_request;
use srmig_hostd::status::HostStatus;
use srmig_lab::{Lab, LinkEnd, MacAddr, Netns, Route};

fn have_root() -> bool {
    // The effective uid, from /proc.
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false);
    if root {
        return true;
    }
    eprintln!("SKIPPED: needs root (network namespaces, AF_PACKET)");
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set: root-only srmigd tests must not be skipped"
    );
    false
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address literal")
}

fn net(s: &str) -> IpNet {
    s.parse().expect("prefix literal")
}

const GW_MAC: &str = "02:00:00:00:00:01";
const VMA: &str = "2001:db8:a::10";
const VMB: &str = "2001:db8:a::20";
const VMA_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 0x0a]);
const VMB_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 0x0b]);

fn node_toml(n: u8, vm_port: &str, vm: &str, vm_addr: &str, vm_mac: MacAddr) -> String {
    format!(
        r#"
locator = "fc00:0:{n}::/48"
source_address = "2001:db8:ff:{n}::2"
infrastructure_prefixes = ["2001:db8:ff::/48", "fc00::/16"]
gateway = {{ address = "fe80::1", mac = "{GW_MAC}" }}

[[ports]]
name = "up0"
kind = "uplink"
mac = "02:00:00:00:0{n}:00"
peer_mac = "02:00:00:00:0{n}:ff"
address = "2001:db8:ff:{n}::2"

[[ports]]
name = "{vm_port}"
kind = "vm"
mac = "02:00:00:00:0{n}:01"

[[routes]]
prefix = "::/0"
port = "up0"

[[vms]]
name = "{vm}"
addresses = ["{vm_addr}"]
mac = "{vm_mac}"
port = "{vm_port}"
"#
    )
}

/// Host config for host `n` with local VM `local` and a mapping for `remote` via `segments`.
fn host_config(
    generation: u64,
    n: u8,
    local: (&str, &str, MacAddr),
    remote: (&str, &str),
    segments: &[String],
) -> String {
    let segs: Vec<String> = segments.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        r#"{{"generation":{generation},
        "mappings":[{{"vm":"{lv}","addresses":["{la}"],"steering":"native"}},
                    {{"vm":"{rv}","addresses":["{ra}"],
                      "steering":{{"encaps":{{"segments":[{segs}],"headend":"H.Encaps"}}}}}}],
        "local_vms":[{{"vm":"{lv}","addresses":["{la}"],"mac":"{lm}"}}],
        "sids":[{{"behavior":"End.DT6","sid":"fc00:0:{n}::d6"}},
                {{"behavior":"End.SBUF","sid":"fc00:0:{n}::eb","vm":"{lv}","mode":"buffer"}}]}}"#,
        lv = local.0,
        la = local.1,
        lm = local.2,
        rv = remote.0,
        ra = remote.1,
        segs = segs.join(","),
    )
}

struct Daemon {
    pid: u32,
    sock: PathBuf,
    log: PathBuf,
}

impl Daemon {
    fn get(&self, path: &str) -> (StatusCode, String) {
        let (s, b) = blocking_request(&self.sock, Method::GET, path, None).unwrap_or_else(|e| {
            panic!(
                "GET {path}: {}\n{}",
                srmig_hostd::client::error_chain(&e),
                self.logs()
            )
        });
        (s, String::from_utf8_lossy(&b).into_owned())
    }

    fn put(&self, path: &str, body: &str) -> (StatusCode, String) {
        let (s, b) = blocking_request(
            &self.sock,
            Method::PUT,
            path,
            Some(body.as_bytes().to_vec()),
        )
        .unwrap_or_else(|e| {
            panic!(
                "PUT {path}: {}\n{}",
                srmig_hostd::client::error_chain(&e),
                self.logs()
            )
        });
        (s, String::from_utf8_lossy(&b).into_owned())
    }

    fn status(&self) -> HostStatus {
        let (s, b) = self.get("/v1/status");
        assert_eq!(s, StatusCode::OK, "{b}");
        serde_json::from_str(&b).expect("status JSON")
    }

    fn metric(&self, series: &str) -> Option<u64> {
        let (_, text) = self.get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for(&self, what: &str, timeout: Duration, mut ok: impl FnMut(&HostStatus) -> bool) {
        let start = Instant::now();
        loop {
            let st = self.status();
            if ok(&st) {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "timed out waiting for {what}: {st:#?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn start_daemon(lab: &Lab, ns: &Netns, dir: &Path, name: &str, toml: &str) -> Daemon {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(&cfg, toml).expect("write node config");
    let sock = dir.join(format!("{name}.sock"));
    let log = dir.join(format!("{name}.log"));
    let argv = [
        env!("CARGO_BIN_EXE_srmigd"),
        "--config",
        cfg.to_str().expect("utf8 path"),
        "--api",
        sock.to_str().expect("utf8 path"),
    ];
    let pid = lab.spawn(ns, &argv, Some(&log)).expect("spawn srmigd");
    let d = Daemon { pid, sock, log };
    let start = Instant::now();
    loop {
        if d.sock.exists()
            && blocking_request(&d.sock, Method::GET, "/v1/status", None)
                .is_ok_and(|(s, _)| s == StatusCode::OK)
        {
            return d;
        }
        assert!(
            lab.child_running(pid),
            "srmigd {name} exited:\n{}",
            d.logs()
        );
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "srmigd {name} did not come up:\n{}",
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn veth(
    lab: &Lab,
    a: &Netns,
    a_if: &str,
    a_mac: MacAddr,
    b: &Netns,
    b_if: &str,
    b_mac: MacAddr,
) -> (LinkEnd, LinkEnd) {
    let v = lab.add_veth(a, a_if, b, b_if).expect("veth");
    lab.set_mac(&v.a, a_mac).expect("mac");
    lab.set_mac(&v.b, b_mac).expect("mac");
    (v.a, v.b)
}

/// Receives sequence-numbered datagrams until `n` arrived or `timeout` passed.
fn receive(sock: &UdpSocket, n: usize, timeout: Duration) -> Vec<u32> {
    let mut got = Vec::new();
    let start = Instant::now();
    let mut buf = [0u8; 64];
    while got.len() < n && start.elapsed() < timeout {
        if let Ok(len) = sock.recv(&mut buf) {
            if len >= 4 {
                got.push(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
            }
        }
    }
    got
}

#[test]
fn srmigd_forwards_buffers_and_releases_in_order() {
    if !have_root() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("srmigd-netns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let lab = Lab::new().expect("lab");
    let r = lab.add_netns("r").expect("ns");
    let s = lab.add_netns("s").expect("ns");
    let d = lab.add_netns("d").expect("ns");
    let vma = lab.add_netns("vma").expect("ns");
    let vmb = lab.add_netns("vmb").expect("ns");

    let (rs0, s_up) = veth(
        &lab,
        &r,
        "rs0",
        MacAddr([2, 0, 0, 0, 1, 0xff]),
        &s,
        "up0",
        MacAddr([2, 0, 0, 0, 1, 0]),
    );
    let (rd0, d_up) = veth(
        &lab,
        &r,
        "rd0",
        MacAddr([2, 0, 0, 0, 2, 0xff]),
        &d,
        "up0",
        MacAddr([2, 0, 0, 0, 2, 0]),
    );
    let (s_vm, vma_eth) = veth(
        &lab,
        &s,
        "vma0",
        MacAddr([2, 0, 0, 0, 1, 1]),
        &vma,
        "eth0",
        VMA_MAC,
    );
    let (d_vm, vmb_eth) = veth(
        &lab,
        &d,
        "vmb0",
        MacAddr([2, 0, 0, 0, 2, 1]),
        &vmb,
        "eth0",
        VMB_MAC,
    );
    // srmigd's interfaces: the host kernel stays out (no IPv6 on them).
    for end in [&s_up, &d_up, &s_vm, &d_vm] {
        end.netns
            .set_sysctl(&format!("net/ipv6/conf/{}/disable_ipv6", end.ifname), "1")
            .expect("disable_ipv6");
    }
    lab.add_addr(&rs0, net("2001:db8:ff:1::1/64"))
        .expect("addr");
    lab.add_addr(&rd0, net("2001:db8:ff:2::1/64"))
        .expect("addr");
    lab.enable_forwarding(&r).expect("forwarding");
    lab.add_addr(&vma_eth, net(&format!("{VMA}/128")))
        .expect("addr");
    lab.add_addr(&vmb_eth, net(&format!("{VMB}/128")))
        .expect("addr");
    for end in [&vma_eth, &vmb_eth] {
        end.netns
            .ip(&["link", "set", "dev", &end.ifname, "mtu", "1400"])
            .expect("mtu");
    }
    for end in [&rs0, &s_up, &rd0, &d_up, &s_vm, &vma_eth, &d_vm, &vmb_eth] {
        lab.set_up(end).expect("up");
    }
    for end in [&rs0, &s_up, &rd0, &d_up, &s_vm, &vma_eth, &d_vm, &vmb_eth] {
        lab.wait_up(end, Duration::from_secs(5)).expect("wait up");
    }
    lab.add_route(&r, &Route::to(net("fc00:0:1::/48"), ip("2001:db8:ff:1::2")))
        .expect("route");
    lab.add_route(&r, &Route::to(net("fc00:0:2::/48"), ip("2001:db8:ff:2::2")))
        .expect("route");
    for vm in [&vma, &vmb] {
        lab.add_route(vm, &Route::default_v6(ip("fe80::1"), Some("eth0")))
            .expect("default route");
    }

    let ds = start_daemon(
        &lab,
        &s,
        &dir,
        "s",
        &node_toml(1, "vma0", "vma", VMA, VMA_MAC),
    );
    // D also declares vma (absent): it may arrive by migration on port vma0.
    let d_toml = format!(
        "{}\n[[ports]]\nname = \"vma0\"\nkind = \"vm\"\nmac = \"02:00:00:00:02:02\"\n\n\
         [[vms]]\nname = \"vma\"\naddresses = [\"{VMA}\"]\nmac = \"{VMA_MAC}\"\nport = \"vma0\"\n",
        node_toml(2, "vmb0", "vmb", VMB, VMB_MAC)
    );
    let dd = start_daemon(&lab, &d, &dir, "d", &d_toml);
    // The VM links were up at startup: the VMs run.
    for (dm, vm) in [(&ds, "vma"), (&dd, "vmb")] {
        dm.wait_for("VM running", Duration::from_secs(2), |st| {
            st.vms[0].name == vm && st.vms[0].state == srmig_api::VmState::Running
        });
    }

    let via_d_dt6 = vec!["fc00:0:2::d6".to_owned()];
    let via_s_dt6 = vec!["fc00:0:1::d6".to_owned()];
    let (st, body) = ds.put(
        "/v1/config",
        &host_config(1, 1, ("vma", VMA, VMA_MAC), ("vmb", VMB), &via_d_dt6),
    );
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body, r#"{"host":"s","generation":1}"#);
    let (st, body) = dd.put(
        "/v1/config",
        &host_config(1, 2, ("vmb", VMB, VMB_MAC), ("vma", VMA), &via_s_dt6),
    );
    assert_eq!(st, StatusCode::OK, "{body}");

    // 1. ping vma -> vmb and back (NDP for the gateway, H.Encaps, router, End.DT6).
    let out = vma
        .exec("ping", &["-6", "-c", "5", "-i", "0.05", "-W", "2", VMB])
        .unwrap_or_else(|e| panic!("ping failed: {e}\nS:\n{}\nD:\n{}", ds.logs(), dd.logs()));
    assert!(out.contains(" 0% packet loss"), "{out}");

    // 2. UDP with the SR path S -> D::End.SBUF, buffering while vmb's link is down.
    let dst: SocketAddr = format!("[{VMB}]:9000").parse().expect("socket address");
    let rx = vmb
        .spawn("udp-rx", move || {
            let sock = UdpSocket::bind(dst).expect("bind receiver");
            sock.set_read_timeout(Some(Duration::from_millis(50)))
                .expect("timeout");
            receive(&sock, 40, Duration::from_secs(15))
        })
        .expect("receiver thread");
    let tx = vma
        .spawn("udp-tx", || {
            UdpSocket::bind("[2001:db8:a::10]:0").expect("bind sender")
        })
        .expect("sender thread")
        .join()
        .expect("sender socket");
    // (The socket was created inside vma: it keeps sending from there.)
    let send = |range: std::ops::Range<u32>| {
        for i in range {
            tx.send_to(&i.to_be_bytes(), dst).expect("send");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    std::thread::sleep(Duration::from_millis(100));
    send(0..10);
    let via_d_sbuf = vec!["fc00:0:2::eb".to_owned()];
    let (st, body) = ds.put(
        "/v1/config",
        &host_config(2, 1, ("vma", VMA, VMA_MAC), ("vmb", VMB), &via_d_sbuf),
    );
    assert_eq!(st, StatusCode::OK, "{body}");
    // A stale generation is refused and changes nothing.
    let (st, body) = ds.put(
        "/v1/config",
        &host_config(1, 1, ("vma", VMA, VMA_MAC), ("vmb", VMB), &via_d_dt6),
    );
    assert_eq!(st, StatusCode::CONFLICT, "{body}");

    lab.set_down(&d_vm).expect("vm link down");
    dd.wait_for("vmb paused", Duration::from_secs(2), |st| {
        st.vms[0].state == srmig_api::VmState::Paused
    });
    send(10..40);
    let held_series = r#"srmig_buffer_packets{vm="vmb"}"#;
    let start = Instant::now();
    while dd.metric(held_series) != Some(30) {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "30 packets not held: {:?}\n{}",
            dd.metric(held_series),
            dd.logs()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let up_at = Instant::now();
    lab.set_up(&d_vm).expect("vm link up");
    let got = rx.join().expect("receiver");
    let released_after = up_at.elapsed();
    assert_eq!(
        got,
        (0..40).collect::<Vec<u32>>(),
        "order or loss\nD:\n{}",
        dd.logs()
    );
    eprintln!("30 held datagrams delivered {released_after:?} after the VM link came up");

    // 3. Counters.
    let sbuf = r#"srmig_sid_packets_total{sid="fc00:0:2::eb",behavior="End.SBUF"}"#;
    assert_eq!(dd.metric(sbuf), Some(30));
    assert_eq!(dd.metric(r#"srmig_vm_held_total{vm="vmb"}"#), Some(30));
    assert_eq!(dd.metric(r#"srmig_vm_released_total{vm="vmb"}"#), Some(30));
    assert_eq!(dd.metric(held_series), Some(0));
    assert!(
        dd.metric(r#"srmig_sid_packets_total{sid="fc00:0:2::d6",behavior="End.DT6"}"#) >= Some(15)
    );
    assert!(
        ds.metric(r#"srmig_sid_packets_total{sid="fc00:0:1::d6",behavior="End.DT6"}"#) >= Some(5)
    );
    assert!(ds.metric(r#"srmig_policy_packets_total{policy="vm:vmb"}"#) >= Some(45));
    assert!(dd.metric(r#"srmig_port_attached{port="vmb0"}"#) == Some(1));
    let st = dd.status();
    assert_eq!(st.generation, Some(1));
    assert!(st.ports[1].io.attachments >= 2, "{:?}", st.ports[1]);
    assert_eq!(st.vms[0].state, srmig_api::VmState::Running);
    let s_status = ds.status();
    assert!(
        s_status.ports[1].io.rx_csum_completed > 0,
        "UDP from the VM carries offloaded checksums: {:?}",
        s_status.ports[1]
    );

    // 4. TCP through the SR path (iperf3), TSO/GSO off on the VM side as documented.
    if std::process::Command::new("iperf3")
        .arg("--version")
        .output()
        .is_ok()
    {
        for vm in [&vma, &vmb] {
            vm.exec("ethtool", &["-K", "eth0", "tso", "off", "gso", "off"])
                .expect("ethtool");
        }
        let server = lab
            .spawn(&vmb, &["iperf3", "-s", "-1", "-B", VMB], None)
            .expect("iperf3 server");
        std::thread::sleep(Duration::from_millis(300));
        let out = vma
            .exec("iperf3", &["-c", VMB, "-t", "2", "-J"])
            .unwrap_or_else(|e| panic!("iperf3: {e}\nS:\n{}\nD:\n{}", ds.logs(), dd.logs()));
        let v: serde_json::Value = serde_json::from_str(&out).expect("iperf3 JSON");
        let bps = v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .expect("bits_per_second");
        let retr = v["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0);
        eprintln!(
            "TCP vma -> vmb through S H.Encaps -> D End.SBUF: {:.0} Mb/s, {retr} retransmits",
            bps / 1e6
        );
        assert!(bps > 10e6, "TCP throughput {bps} b/s");
        let _ = lab.stop_child(server);
        let s_io = ds.status().ports[1].io;
        assert_eq!(s_io.rx_gso, 0, "{s_io:?}");
        assert_eq!(s_io.rx_truncated, 0, "{s_io:?}");
    } else {
        eprintln!("iperf3 not installed: TCP phase skipped");
    }

    // 5. A migration at the network level: vma's host end moves from S to D (new ifindex,
    //    same name) while vmb sends to vma over S::End.S -> D::End.SBUF.
    let (st, body) = ds.put(
        "/v1/config",
        &host_config(3, 1, ("vma", VMA, VMA_MAC), ("vmb", VMB), &via_d_dt6).replace(
            r#"{"behavior":"End.DT6","sid":"fc00:0:1::d6"}"#,
            r#"{"behavior":"End.DT6","sid":"fc00:0:1::d6"},{"behavior":"End.S","sid":"fc00:0:1::e5","vm":"vma"}"#,
        ),
    );
    assert_eq!(st, StatusCode::OK, "{body}");
    let sr_path = vec!["fc00:0:1::e5".to_owned(), "fc00:0:2::eb".to_owned()];
    let (st, body) = dd.put(
        "/v1/config",
        &host_config(2, 2, ("vmb", VMB, VMB_MAC), ("vma", VMA), &sr_path).replace(
            r#"{"behavior":"End.SBUF","sid":"fc00:0:2::eb","vm":"vmb","mode":"buffer"}"#,
            r#"{"behavior":"End.SBUF","sid":"fc00:0:2::eb","vm":"vma","mode":"buffer"},{"behavior":"End.SBUF","sid":"fc00:0:2::eb","vm":"vmb","mode":"buffer"}"#,
        ),
    );
    assert_eq!(st, StatusCode::OK, "{body}");
    let dst_a: SocketAddr = format!("[{VMA}]:9001").parse().expect("socket address");
    const N: u32 = 300;
    let rx = vma
        .spawn("udp-rx-a", move || {
            let sock = UdpSocket::bind(dst_a).expect("bind receiver");
            sock.set_read_timeout(Some(Duration::from_millis(50)))
                .expect("timeout");
            receive(&sock, N as usize, Duration::from_secs(15))
        })
        .expect("receiver thread");
    let tx_b = vmb
        .spawn("udp-tx-b", || {
            UdpSocket::bind("[2001:db8:a::20]:0").expect("bind sender")
        })
        .expect("sender thread")
        .join()
        .expect("sender socket");
    std::thread::sleep(Duration::from_millis(100));
    let sender = std::thread::spawn(move || {
        for i in 0..N {
            tx_b.send_to(&i.to_be_bytes(), dst_a).expect("send");
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    std::thread::sleep(Duration::from_millis(50));
    let moved = lab.move_link(&s_vm, &d).expect("move vma0 to D");
    ds.wait_for("vma paused at S", Duration::from_secs(2), |st| {
        st.vms[0].state == srmig_api::VmState::Paused
    });
    std::thread::sleep(Duration::from_millis(100)); // the "downtime"
    moved
        .netns
        .set_sysctl("net/ipv6/conf/vma0/disable_ipv6", "1")
        .expect("disable_ipv6");
    lab.set_up(&moved).expect("vma0 up at D");
    sender.join().expect("sender");
    let got = rx.join().expect("receiver");
    assert_eq!(
        got,
        (0..N).collect::<Vec<u32>>(),
        "loss or reordering\nS:\n{}\nD:\n{}",
        ds.logs(),
        dd.logs()
    );
    let d_st = dd.status();
    let vma_at_d = d_st.vms.iter().find(|v| v.name == "vma").expect("vma at D");
    assert_eq!(vma_at_d.state, srmig_api::VmState::Running);
    assert!(vma_at_d.held > 0, "nothing was held at D: {vma_at_d:?}");
    assert_eq!(vma_at_d.released, vma_at_d.held);
    eprintln!(
        "link move S -> D: {N} datagrams, 0 lost, in order; {} held at D and released",
        vma_at_d.held
    );
    // Every held packet went through End.S at S first (once vma runs at D, D delivers its
    // own traffic to it directly).
    let end_s = ds
        .metric(r#"srmig_sid_packets_total{sid="fc00:0:1::e5",behavior="End.S"}"#)
        .unwrap_or(0);
    assert!(
        end_s >= vma_at_d.held,
        "End.S saw {end_s}, D held {}",
        vma_at_d.held
    );

    // 6. SIGTERM: clean stop, socket removed.
    for dm in [&ds, &dd] {
        lab.stop_child(dm.pid).expect("stop srmigd");
        assert!(!dm.sock.exists(), "socket left behind:\n{}", dm.logs());
        assert!(dm.logs().contains("srmigd stopped"), "{}", dm.logs());
    }
    drop(lab);
    let _ = std::fs::remove_dir_all(&dir);
}
