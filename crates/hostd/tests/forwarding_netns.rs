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

use std::time::{Duration, Instant};

use hyper::StatusCode;
use srmig_lab::{Lab, MacAddr};

mod common;
use common::{
    bring_up, disable_ipv6, net, receiver, route_via_gateway, send_seqs, send_seqs_controlled,
    set_mtu, sock_addr, udp_socket, veth, vm_toml, wait_until, Daemon, StreamControl, TempDir,
    Underlay,
};

const VMA: &str = "2001:db8:a::10";
const VMB: &str = "2001:db8:a::20";
/// This test covers the VM ports' socket path (checksums completed by srmigd, a send refused
/// per frame when the interface goes): the VMs' packets all go through srmigd (also srmigd's
/// default; said explicitly). The VM ports' TC fast path has its own tests (`port_io_netns`,
/// `vm_fastpath`, the labs).
const SOCKETS_ONLY: &str = "\n[io]\nvm_fast_path = false\n";
const VMA_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 0x0a]);
const VMB_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 0x0b]);

/// The steering of a mapping: H.Encaps with `segments`, or `native` if there are none.
fn steering(segments: &[String]) -> String {
    if segments.is_empty() {
        return r#""native""#.to_owned();
    }
    let segs: Vec<String> = segments.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        r#"{{"encaps":{{"segments":[{}],"headend":"H.Encaps"}}}}"#,
        segs.join(",")
    )
}

/// Host config for host `n` with local VM `local` (steered natively) and a mapping for
/// `remote` via `segments`.
fn host_config(
    generation: u64,
    n: u8,
    local: (&str, &str, MacAddr),
    remote: (&str, &str),
    segments: &[String],
) -> String {
    host_config_steering(generation, n, (local, &[]), (remote, segments))
}

/// [`host_config`] with the local VM's mapping steered over `local_segments` too (the SR path
/// of a migration is installed on every host, the source included).
fn host_config_steering(
    generation: u64,
    n: u8,
    (local, local_segments): ((&str, &str, MacAddr), &[String]),
    (remote, segments): ((&str, &str), &[String]),
) -> String {
    format!(
        r#"{{"generation":{generation},
        "mappings":[{{"vm":"{lv}","addresses":["{la}"],"steering":{ls}}},
                    {{"vm":"{rv}","addresses":["{ra}"],"steering":{rs}}}],
        "local_vms":[{{"vm":"{lv}","addresses":["{la}"],"mac":"{lm}"}}],
        "sids":[{{"behavior":"End.DT6","sid":"fc00:0:{n}::d6"}},
                {{"behavior":"End.SBUF","sid":"fc00:0:{n}::eb","vm":"{lv}","mode":"buffer"}}]}}"#,
        lv = local.0,
        la = local.1,
        lm = local.2,
        ls = steering(local_segments),
        rv = remote.0,
        ra = remote.1,
        rs = steering(segments),
    )
}

#[test]
fn srmigd_forwards_buffers_and_releases_in_order() {
    if common::skip(
        "forwarding_netns::srmigd_forwards_buffers_and_releases_in_order",
        common::missing_root("network namespaces, AF_PACKET"),
    ) {
        return;
    }
    // Declared before the lab: removed after the lab is torn down, also on failure.
    let tmp = TempDir::new("srmigd-netns");
    let dir = tmp.path();
    let lab = Lab::new().expect("lab");
    let Underlay { s, d, .. } = Underlay::new(&lab);
    let vma = lab.add_netns("vma").expect("ns");
    let vmb = lab.add_netns("vmb").expect("ns");

    let (s_vm, vma_eth) = veth(
        &lab,
        (&s, "vma0", MacAddr([2, 0, 0, 0, 1, 1])),
        (&vma, "eth0", VMA_MAC),
    );
    let (d_vm, vmb_eth) = veth(
        &lab,
        (&d, "vmb0", MacAddr([2, 0, 0, 0, 2, 1])),
        (&vmb, "eth0", VMB_MAC),
    );
    // srmigd's interfaces: the host kernel stays out (no IPv6 on them).
    disable_ipv6(&[&s_vm, &d_vm]);
    lab.add_addr(&vma_eth, net(&format!("{VMA}/128")))
        .expect("addr");
    lab.add_addr(&vmb_eth, net(&format!("{VMB}/128")))
        .expect("addr");
    set_mtu(&[&vma_eth, &vmb_eth], 1400);
    bring_up(&lab, &[&s_vm, &vma_eth, &d_vm, &vmb_eth]);
    for vm in [&vma, &vmb] {
        route_via_gateway(&lab, vm);
    }

    let ds = Daemon::start(
        &lab,
        &s,
        dir,
        "s",
        &(common::node_toml(1) + &vm_toml(1, 1, "vma0", "vma", VMA, VMA_MAC) + SOCKETS_ONLY),
    );
    // D also declares vma (absent): it may arrive by migration on port vma0.
    let d_toml = common::node_toml(2)
        + &vm_toml(2, 1, "vmb0", "vmb", VMB, VMB_MAC)
        + &vm_toml(2, 2, "vma0", "vma", VMA, VMA_MAC)
        + SOCKETS_ONLY;
    let dd = Daemon::start(&lab, &d, dir, "d", &d_toml);
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
    let ack: srmig_api::Ack = serde_json::from_str(&body).expect("ack");
    assert_eq!((ack.host.as_str(), ack.epoch, ack.generation), ("s", 0, 1));
    assert_eq!(ack.boot_epoch, ds.status().boot_epoch);
    assert_ne!(ack.boot_epoch, 0);
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
    let dst = sock_addr(VMB, 9000);
    let rx = receiver(&vmb, dst, 40, Duration::from_secs(15));
    let tx = udp_socket(&vma, sock_addr(VMA, 0));
    let send = |seqs| send_seqs(&tx, dst, seqs);
    std::thread::sleep(Duration::from_millis(100));
    let delivered_before = dd.vm("vmb").tx.packets;
    send(0..10);
    // These go End.DT6 with vmb running: D must have delivered them before the link goes
    // down (on a loaded machine they can still be queued at D; End.DT6 would then drop them,
    // as it should for a paused VM without an SR path).
    wait_until(
        "datagrams 0..10 delivered to vmb",
        Duration::from_secs(5),
        Duration::from_millis(2),
        || match dd.vm("vmb").tx.packets.saturating_sub(delivered_before) {
            n if n >= 10 => Ok(()),
            n => Err(n),
        },
        |n| format!("{n} delivered\n{}", dd.logs()),
    );
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
    wait_until(
        "30 packets held",
        Duration::from_secs(3),
        Duration::from_millis(10),
        || match dd.metric(held_series) {
            Some(30) => Ok(()),
            held => Err(held),
        },
        |held| format!("{held:?} held\n{}", dd.logs()),
    );
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
    // VM ports stay on AF_PACKET under `auto` (docs/srmigd-api.md): the virtio_net_hdr says
    // which checksums the VM's stack left partial, and a send the vanishing interface refuses
    // is reported per frame (step 5 relies on it).
    for port in [&st.ports[1], &s_status.ports[1]] {
        assert_eq!(port.socket.as_deref(), Some("packet"), "{port:?}");
    }
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
    //
    //    The configs are the controller's footprint while the hypervisor works: End.S on S,
    //    End.SBUF on D, and the SR path for vma on *every* host, S included (see
    //    srmig_control::migration). S needs it: End.S may deliver a packet to vma0 just as
    //    the link leaves, before srmigd S has read the link event; the send fails and srmigd
    //    re-steers that frame down the path (S::End.S, vma paused now -> D::End.SBUF).
    //
    //    Unlike the lab (srmig_lab::orchestrate::testbed), the stop is not announced to S
    //    before the cut: here the link itself is the only signal, as the paper learns the
    //    VM's state from its attachment. No drain is needed either: vma only receives, so no
    //    reply of a still-running netns VM can be lost by the emulation.
    let sr_path = vec!["fc00:0:1::e5".to_owned(), "fc00:0:2::eb".to_owned()];
    let (st, body) = ds.put(
        "/v1/config",
        &host_config_steering(
            3,
            1,
            (("vma", VMA, VMA_MAC), &sr_path),
            (("vmb", VMB), &via_d_dt6),
        )
        .replace(
            r#"{"behavior":"End.DT6","sid":"fc00:0:1::d6"}"#,
            r#"{"behavior":"End.DT6","sid":"fc00:0:1::d6"},{"behavior":"End.S","sid":"fc00:0:1::e5","vm":"vma"}"#,
        ),
    );
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, body) = dd.put(
        "/v1/config",
        &host_config(2, 2, ("vmb", VMB, VMB_MAC), ("vma", VMA), &sr_path).replace(
            r#"{"behavior":"End.SBUF","sid":"fc00:0:2::eb","vm":"vmb","mode":"buffer"}"#,
            r#"{"behavior":"End.SBUF","sid":"fc00:0:2::eb","vm":"vma","mode":"buffer"},{"behavior":"End.SBUF","sid":"fc00:0:2::eb","vm":"vmb","mode":"buffer"}"#,
        ),
    );
    assert_eq!(st, StatusCode::OK, "{body}");
    let dst_a = sock_addr(VMA, 9001);
    const N: u32 = 300;
    let rx = receiver(&vma, dst_a, N as usize, Duration::from_secs(15));
    let tx_b = udp_socket(&vmb, sock_addr(VMB, 0));
    std::thread::sleep(Duration::from_millis(100));
    // The cut comes about 45 datagrams into the stream, which runs on through it; should
    // this thread fall far behind (a loaded machine), the sender waits for the cut at 150 and
    // for the resume at 220, so that every phase (at S, held at D, delivered at D) has traffic.
    let mut stream = StreamControl::default();
    let cut = stream.gate(150);
    let resumed = stream.gate(220);
    let control = stream.clone();
    let sender = std::thread::spawn(move || send_seqs_controlled(&tx_b, dst_a, 0..N, &control));
    stream.wait_sent(45, Duration::from_secs(5));
    let moved = lab.move_link(&s_vm, &d).expect("move vma0 to D");
    StreamControl::open(&cut);
    ds.wait_for("vma paused at S", Duration::from_secs(2), |st| {
        st.vms[0].state == srmig_api::VmState::Paused
    });
    std::thread::sleep(Duration::from_millis(100)); // the "downtime"
    disable_ipv6(&[&moved]);
    lab.set_up(&moved).expect("vma0 up at D");
    dd.wait_for("vma running at D", Duration::from_secs(2), |st| {
        st.vms
            .iter()
            .any(|v| v.name == "vma" && v.state == srmig_api::VmState::Running)
    });
    StreamControl::open(&resumed);
    sender.join().expect("sender");
    let got = rx.join().expect("receiver");
    let (s_st, d_st) = (ds.status(), dd.status());
    assert_eq!(
        got,
        (0..N).collect::<Vec<u32>>(),
        "loss or reordering\n{}\nS:\n{}\nD:\n{}",
        where_did_it_go(&got, N, &s_st, &d_st),
        ds.logs(),
        dd.logs()
    );
    // Nothing was refused by the vanishing link or sent to it while detached (re-steered
    // instead).
    let s_vma0 = &s_st.ports[1];
    assert_eq!(
        (s_vma0.io.tx_errors, s_vma0.io.tx_no_link),
        (0, 0),
        "{s_vma0:?}"
    );
    let vma_at_d = dd.vm("vma");
    assert_eq!(vma_at_d.state, srmig_api::VmState::Running);
    assert!(vma_at_d.held > 0, "nothing was held at D: {vma_at_d:?}");
    assert_eq!(vma_at_d.released, vma_at_d.held);
    eprintln!(
        "link move S -> D: {N} datagrams, 0 lost, in order; {} held at D and released; {} re-steered at S after a send to the vanished link",
        vma_at_d.held, s_vma0.io.resteered
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
        dm.stop(&lab);
    }
}

/// What srmigd S and D counted for vma, to tell where a missing or late datagram went: the
/// datagrams missing and out of order, End.S/End.SBUF counts, held and delivered packets,
/// vma0's socket counters on both hosts and every non-zero drop reason.
fn where_did_it_go(
    got: &[u32],
    n: u32,
    s: &srmig_api::HostStatus,
    d: &srmig_api::HostStatus,
) -> String {
    let missing: Vec<u32> = (0..n).filter(|i| !got.contains(i)).collect();
    let late: Vec<(u32, u32)> = got
        .windows(2)
        .filter(|w| w[1] < w[0])
        .map(|w| (w[0], w[1]))
        .collect();
    let mut out = format!("missing {missing:?}; (x, y): y arrived right after x {late:?}\n");
    for (host, st) in [("S", s), ("D", d)] {
        let sids: Vec<String> = st
            .sids
            .iter()
            .map(|x| format!("{} {}: {}", x.behavior, x.sid, x.traffic.packets))
            .collect();
        let drops: Vec<String> = st
            .drops
            .iter()
            .filter(|(_, v)| *v > 0)
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        out += &format!(
            "{host}: SIDs [{}]; drops [{}]\n",
            sids.join(", "),
            drops.join(", ")
        );
        if let Some(v) = st.vms.iter().find(|v| v.name == "vma") {
            out += &format!(
                "{host}: vma {:?}, delivered {}, held {}, released {}, dropped {}\n",
                v.state, v.tx.packets, v.held, v.released, v.dropped
            );
        }
        if let Some(p) = st.ports.iter().find(|p| p.name == "vma0") {
            out += &format!(
                "{host}: port vma0 attached {}, tx {}, {:?}\n",
                p.attached, p.tx.packets, p.io
            );
        }
    }
    out
}
