//! `srmigd --workers 2` on the forwarding test's topology:
//!
//! ```text
//!  vma ns ─eth0══vma0─ [s ns: srmigd S, 2 workers] ─up0══rs0─ [r ns: Linux router] ─rd0══up0─ [d ns: srmigd D, 2 workers] ─vmb0══eth0─ vmb ns
//! ```
//!
//! 1. Every port uses AF_PACKET (fanout), both workers' sockets attached.
//! 2. Sixteen UDP flows vma -> vmb (sixteen source ports, sent at the same time): every
//!    datagram arrives, each flow in order; the status counters are the workers' sums (S's
//!    policy and D's End.DT6 saw exactly the datagrams sent, vma0 received them and a few
//!    NDP/MLD frames).
//! 3. End.SBUF: S's mapping for vmb moves to `D::End.SBUF`; D's VM link goes down (vmb paused
//!    on both workers), four flows are held (the sum shows in /metrics), the link comes back
//!    and every datagram of each flow arrives, in order.
//! 4. The commit fence: S moves vmb from a fenced detour (`D::End.SBUF`) to the direct path;
//!    the markers of S's workers reach one of D's workers, which relays them to the other:
//!    sixteen flows sent right after arrive whole and in order, and no pair of D waits for the
//!    fence's timeout.
//! 5. At the stop each worker logs what it received: both workers of S and of D had traffic
//!    (the kernel did spread the flows).
//!
//! Needs root. Without root it prints `SKIPPED: needs root` and passes, unless `CI` is set.
//! [`refuses_qemu_and_xdp_with_several_workers`] needs nothing.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::StatusCode;
use srmig_lab::{Lab, MacAddr, Netns};

mod common;
use common::{
    bring_up, disable_ipv6, net, receiver, route_via_gateway, send_seqs, set_mtu, sock_addr,
    udp_socket, veth, vm_toml, wait_until, Daemon, TempDir, Underlay,
};

const VMA: &str = "2001:db8:a::10";
const VMB: &str = "2001:db8:a::20";
const VMA_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 0x0a]);
const VMB_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 0x0b]);
const WORKERS: &[&str] = &["--workers", "2"];

/// Host `n`'s config: local VM `local` (native), `remote` by H.Encaps over `segment`, and
/// End.DT6 and End.SBUF (for the local VM) SIDs.
fn host_config(
    generation: u64,
    n: u8,
    local: (&str, &str, MacAddr),
    remote: (&str, &str),
    segment: &str,
) -> String {
    format!(
        r#"{{"generation":{generation},
        "mappings":[{{"vm":"{lv}","addresses":["{la}"],"steering":"native"}},
                    {{"vm":"{rv}","addresses":["{ra}"],
                      "steering":{{"encaps":{{"segments":["{segment}"],"headend":"H.Encaps"}}}}}}],
        "local_vms":[{{"vm":"{lv}","addresses":["{la}"],"mac":"{lm}"}}],
        "sids":[{{"behavior":"End.DT6","sid":"fc00:0:{n}::d6"}},
                {{"behavior":"End.SBUF","sid":"fc00:0:{n}::eb","vm":"{lv}","mode":"buffer"}}]}}"#,
        lv = local.0,
        la = local.1,
        lm = local.2,
        rv = remote.0,
        ra = remote.1,
    )
}

/// Host `n`'s config as [`host_config`], with the mapping of `remote` marked as a fenced SR
/// path (`"fence": true`, what the controller sets on the migration's detour) when `fence`,
/// and without the End.SBUF SID when `sbuf` is false.
fn host_config_fenced(
    generation: u64,
    n: u8,
    local: (&str, &str, MacAddr),
    remote: (&str, &str),
    segment: &str,
    fence: bool,
    sbuf: bool,
) -> String {
    let sbuf_sid = if sbuf {
        format!(
            r#",{{"behavior":"End.SBUF","sid":"fc00:0:{n}::eb","vm":"{}","mode":"buffer"}}"#,
            local.0
        )
    } else {
        String::new()
    };
    format!(
        r#"{{"generation":{generation},
        "mappings":[{{"vm":"{lv}","addresses":["{la}"],"steering":"native"}},
                    {{"vm":"{rv}","addresses":["{ra}"],"fence":{fence},
                      "steering":{{"encaps":{{"segments":["{segment}"],"headend":"H.Encaps"}}}}}}],
        "local_vms":[{{"vm":"{lv}","addresses":["{la}"],"mac":"{lm}"}}],
        "sids":[{{"behavior":"End.DT6","sid":"fc00:0:{n}::d6"}}{sbuf_sid}]}}"#,
        lv = local.0,
        la = local.1,
        lm = local.2,
        rv = remote.0,
        ra = remote.1,
    )
}

/// Flow `f`'s datagrams carry `f * 1000 + i`.
const FLOW: u32 = 1000;

/// Sends `per_flow` datagrams on each of `flows` flows (one socket, so one source port, per
/// flow) from `ns` to `dst`, all flows at the same time; returns once all are sent.
fn send_flows(ns: &Netns, src: &str, dst: SocketAddr, flows: u32, per_flow: u32) {
    let senders: Vec<_> = (0..flows)
        .map(|f| {
            let sock = udp_socket(ns, sock_addr(src, 0));
            std::thread::spawn(move || send_seqs(&sock, dst, f * FLOW..f * FLOW + per_flow))
        })
        .collect();
    for s in senders {
        s.join().expect("sender");
    }
}

/// Checks that every flow arrived whole and in order; returns a description of what did
/// not.
fn check_flows(got: &[u32], flows: u32, per_flow: u32) -> Result<(), String> {
    let mut bad = Vec::new();
    for f in 0..flows {
        let seen: Vec<u32> = got
            .iter()
            .filter(|s| **s / FLOW == f)
            .map(|s| s % FLOW)
            .collect();
        if seen != (0..per_flow).collect::<Vec<u32>>() {
            bad.push(format!("flow {f}: {seen:?}"));
        }
    }
    if got.len() != (flows * per_flow) as usize {
        bad.push(format!(
            "{} datagrams, {} sent",
            got.len(),
            flows * per_flow
        ));
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad.join("\n"))
    }
}

fn policy_packets(d: &Daemon, name: &str) -> u64 {
    d.status()
        .policies
        .iter()
        .find(|p| p.name == name)
        .map_or(0, |p| p.traffic.packets)
}

fn sid_packets(d: &Daemon, sid: &str) -> u64 {
    d.status()
        .sids
        .iter()
        .find(|s| s.sid.to_string() == sid)
        .map_or(0, |s| s.traffic.packets)
}

#[test]
fn two_workers_keep_flows_in_order_and_buffer_per_vm() {
    if common::skip(
        "workers_netns::two_workers_keep_flows_in_order_and_buffer_per_vm",
        common::missing_root("network namespaces, AF_PACKET fanout"),
    ) {
        return;
    }
    let tmp = TempDir::new("srmigd-workers");
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
    let ds = Daemon::start_with(
        &lab,
        &s,
        dir,
        "s",
        &(common::node_toml(1) + &vm_toml(1, 1, "vma0", "vma", VMA, VMA_MAC)),
        WORKERS,
    );
    let dd = Daemon::start_with(
        &lab,
        &d,
        dir,
        "d",
        &(common::node_toml(2) + &vm_toml(2, 1, "vmb0", "vmb", VMB, VMB_MAC)),
        WORKERS,
    );

    // 1. Both workers attached every port with AF_PACKET (fanout), never AF_XDP.
    for dm in [&ds, &dd] {
        dm.wait_for(
            "VM running, ports attached by both workers",
            Duration::from_secs(5),
            |st| {
                st.vms[0].state == srmig_api::VmState::Running
                    && st.ports.iter().all(|p| {
                        p.attached && p.io.attachments == 2 && p.socket.as_deref() == Some("packet")
                    })
            },
        );
        assert!(dm.logs().contains("several workers"), "{}", dm.logs());
    }
    let (st, body) = ds.put(
        "/v1/config",
        &host_config(1, 1, ("vma", VMA, VMA_MAC), ("vmb", VMB), "fc00:0:2::d6"),
    );
    assert_eq!(st, StatusCode::OK, "{body}");
    // Every worker acknowledges with the one boot epoch of the process.
    let ack: srmig_api::Ack = serde_json::from_str(&body).expect("ack");
    assert_eq!((ack.host.as_str(), ack.epoch, ack.generation), ("s", 0, 1));
    assert_eq!(ack.boot_epoch, ds.status().boot_epoch);
    let (st, body) = dd.put(
        "/v1/config",
        &host_config(1, 2, ("vmb", VMB, VMB_MAC), ("vma", VMA), "fc00:0:1::d6"),
    );
    assert_eq!(st, StatusCode::OK, "{body}");
    // Both workers refuse a stale generation alike: one error, nothing changed.
    let (st, body) = ds.put(
        "/v1/config",
        &host_config(0, 1, ("vma", VMA, VMA_MAC), ("vmb", VMB), "fc00:0:2::d6"),
    );
    assert_eq!(st, StatusCode::CONFLICT, "{body}");
    assert_eq!(ds.status().generation, Some(1));

    // Warm up the gateway's neighbour entry in vma (NDP through srmigd).
    let dst = sock_addr(VMB, 9000);
    let rx = receiver(&vmb, dst, 1, Duration::from_secs(5));
    send_seqs(&udp_socket(&vma, sock_addr(VMA, 0)), dst, 0..1);
    assert_eq!(rx.join().expect("receiver"), vec![0], "{}", ds.logs());

    // 2. Eight flows at once: all arrive, each in order; counters are the sums.
    // 16 flows: the chance that they all hash to one worker is 2^-15.
    const FLOWS: u32 = 16;
    const PER_FLOW: u32 = 25;
    let total = u64::from(FLOWS * PER_FLOW);
    let (s0, d0) = (ds.status(), dd.status());
    let policy0 = policy_packets(&ds, "vm:vmb");
    let dt6_0 = sid_packets(&dd, "fc00:0:2::d6");
    let rx = receiver(&vmb, dst, total as usize, Duration::from_secs(20));
    send_flows(&vma, VMA, dst, FLOWS, PER_FLOW);
    let got = rx.join().expect("receiver");
    if let Err(e) = check_flows(&got, FLOWS, PER_FLOW) {
        // Where they went: srmigd's drops and what vmb's own kernel dropped (a full socket
        // buffer counts as Udp6RcvbufErrors there).
        let udp6 = vmb
            .run(|| std::fs::read_to_string("/proc/thread-self/net/snmp6"))
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let udp6: Vec<&str> = udp6.lines().filter(|l| l.starts_with("Udp6")).collect();
        panic!(
            "loss or reordering:\n{e}\nS drops: {:?}\nD drops: {:?}\nD vmb tx: {}\nvmb: {udp6:?}\nS:\n{}\nD:\n{}",
            ds.status().drops,
            dd.status().drops,
            dd.status().vms[0].tx.packets - d0.vms[0].tx.packets,
            ds.logs(),
            dd.logs()
        );
    }
    let (s1, d1) = (ds.status(), dd.status());
    assert_eq!(policy_packets(&ds, "vm:vmb") - policy0, total);
    assert_eq!(sid_packets(&dd, "fc00:0:2::d6") - dt6_0, total);
    assert_eq!(d1.vms[0].tx.packets - d0.vms[0].tx.packets, total);
    // vma0 received the datagrams and, at most, a few frames of the VM's own (NDP, MLD).
    let vma0_rx = s1.ports[1].rx.packets - s0.ports[1].rx.packets;
    assert!(
        (total..total + 20).contains(&vma0_rx),
        "vma0 received {vma0_rx} frames for {total} datagrams"
    );
    for st in [&s1, &d1] {
        for p in &st.ports {
            assert_eq!(p.rx.packets, p.io.rx_frames, "{p:?}");
        }
    }
    eprintln!("{FLOWS} flows x {PER_FLOW} datagrams through 2+2 workers: none lost, each in order");

    // 3. End.SBUF across a VM link down/up, several flows held by both workers.
    let (st, body) = ds.put(
        "/v1/config",
        &host_config(2, 1, ("vma", VMA, VMA_MAC), ("vmb", VMB), "fc00:0:2::eb"),
    );
    assert_eq!(st, StatusCode::OK, "{body}");
    lab.set_down(&d_vm).expect("vm link down");
    dd.wait_for("vmb paused", Duration::from_secs(2), |st| {
        st.vms[0].state == srmig_api::VmState::Paused
    });
    const HELD_FLOWS: u32 = 4;
    const HELD_PER_FLOW: u32 = 30;
    let held = u64::from(HELD_FLOWS * HELD_PER_FLOW);
    let rx = receiver(&vmb, dst, held as usize, Duration::from_secs(20));
    send_flows(&vma, VMA, dst, HELD_FLOWS, HELD_PER_FLOW);
    let held_series = r#"srmig_buffer_packets{vm="vmb"}"#;
    wait_until(
        "every datagram held",
        Duration::from_secs(3),
        Duration::from_millis(10),
        || match dd.metric(held_series) {
            Some(n) if n == held => Ok(()),
            n => Err(n),
        },
        |n| format!("{n:?} held\n{}", dd.logs()),
    );
    lab.set_up(&d_vm).expect("vm link up");
    let got = rx.join().expect("receiver");
    if let Err(e) = check_flows(&got, HELD_FLOWS, HELD_PER_FLOW) {
        panic!(
            "End.SBUF release: loss or reordering:\n{e}\nD:\n{}",
            dd.logs()
        );
    }
    let vmb_st = dd.vm("vmb");
    assert_eq!(vmb_st.state, srmig_api::VmState::Running);
    assert_eq!((vmb_st.held, vmb_st.released), (held, held), "{vmb_st:?}");
    assert_eq!(dd.metric(held_series), Some(0));
    eprintln!("{HELD_FLOWS} flows x {HELD_PER_FLOW} datagrams held by End.SBUF over 2 workers and released, each in order");

    // 3b. The commit fence across workers. D fences vmb while it has vmb's End.SBUF: re-armed
    //     here (gen 2 without the SID, gen 3 with it), so every pair starts over. S steers vmb
    //     over the fenced detour D::End.SBUF, then directly to D::End.DT6: each of S's workers
    //     sends a marker down the old path, and the kernel hands both to one of D's workers
    //     (same headers, same flow hash). The flows sent right after take the direct path and
    //     hash to both of D's workers: the one without a marker must open its pair from the
    //     relayed marker, not after the fence's 500 ms timeout.
    for (generation, sbuf) in [(2, false), (3, true)] {
        let (st, body) = dd.put(
            "/v1/config",
            &host_config_fenced(
                generation,
                2,
                ("vmb", VMB, VMB_MAC),
                ("vma", VMA),
                "fc00:0:1::d6",
                false,
                sbuf,
            ),
        );
        assert_eq!(st, StatusCode::OK, "{body}");
    }
    // The markers may well reach D before the first direct packet: a pair opened by one
    // before any packet came lets that worker's packets pass at once.
    let f0 = dd.status().fence;
    for (generation, segment, fence) in [(3, "fc00:0:2::eb", true), (4, "fc00:0:2::d6", false)] {
        let (st, body) = ds.put(
            "/v1/config",
            &host_config_fenced(
                generation,
                1,
                ("vma", VMA, VMA_MAC),
                ("vmb", VMB),
                segment,
                fence,
                true,
            ),
        );
        assert_eq!(st, StatusCode::OK, "{body}");
    }
    const FENCED_PER_FLOW: u32 = 10;
    let fenced = u64::from(FLOWS * FENCED_PER_FLOW);
    let rx = receiver(&vmb, dst, fenced as usize, Duration::from_secs(20));
    let sent_at = std::time::Instant::now();
    send_flows(&vma, VMA, dst, FLOWS, FENCED_PER_FLOW);
    let got = rx.join().expect("receiver");
    let took = sent_at.elapsed();
    let f1 = dd.status().fence;
    if let Err(e) = check_flows(&got, FLOWS, FENCED_PER_FLOW) {
        panic!(
            "fenced flows: loss or reordering:\n{e}\nD fence {f1:?}\nD:\n{}",
            dd.logs()
        );
    }
    assert_eq!(
        f1.timeouts, f0.timeouts,
        "a worker's pair waited for the timeout: {f1:?}"
    );
    assert!(
        (f1.markers_received + f1.markers_relayed) - (f0.markers_received + f0.markers_relayed)
            >= 2,
        "each of D's two workers opens its pair by a marker, received or relayed: {f0:?} -> {f1:?}"
    );
    eprintln!(
        "fence over 2 workers: {} marker(s) received, {} relayed, {} held, 0 timeouts; {fenced} datagrams in {} ms",
        f1.markers_received - f0.markers_received,
        f1.markers_relayed - f0.markers_relayed,
        f1.held - f0.held,
        took.as_millis()
    );

    // 4. Both workers of each srmigd received a share of the flows.
    for dm in [&ds, &dd] {
        dm.stop(&lab);
        let shares = worker_rx_frames(&dm.logs());
        assert_eq!(shares.len(), 2, "{}", dm.logs());
        for (w, n) in &shares {
            assert!(
                *n >= u64::from(PER_FLOW),
                "worker {w} of {} received {n} frames: {shares:?}",
                dm.name
            );
        }
        eprintln!("srmigd {}: frames received per worker {shares:?}", dm.name);
    }
}

/// `(worker, rx_frames)` of every "dataplane worker totals" line of a text log.
fn worker_rx_frames(log: &str) -> Vec<(String, u64)> {
    log.lines()
        .filter(|l| l.contains("dataplane worker totals"))
        .filter_map(|l| {
            let field = |k: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(k))
                    .map(|v| v.trim_matches('"').to_owned())
            };
            Some((field("worker=")?, field("rx_frames=")?.parse().ok()?))
        })
        .collect()
}

/// srmigd refuses `--workers 2` with a `[[qemu]]` port or `[io] mode = "xdp"`, before it
/// touches the network (no root needed).
#[test]
fn refuses_qemu_and_xdp_with_several_workers() {
    let tmp = TempDir::new("srmigd-workers-refuse");
    let base = common::node_toml(1) + &vm_toml(1, 1, "vma0", "vma", VMA, VMA_MAC);
    let cases = [
        (
            "qemu",
            base.clone() + "\n[[qemu]]\nport = \"vma0\"\nsocket = \"/nonexistent/vma.net\"\n",
            "[[qemu]] port \"vma0\"",
        ),
        (
            "xdp",
            base.clone() + "\n[io]\nmode = \"xdp\"\n",
            "[io] mode = \"xdp\"",
        ),
    ];
    for (name, toml, want) in cases {
        let cfg = tmp.path().join(format!("{name}.toml"));
        std::fs::write(&cfg, toml).expect("write");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_srmigd"))
            .args(["--config", cfg.to_str().expect("utf8")])
            .args(["--api", tmp.path().join("x.sock").to_str().expect("utf8")])
            .args(WORKERS)
            .env("RUST_LOG", "error")
            .output()
            .expect("run srmigd");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains(want), "{name}: {err}");
        assert!(err.contains("--workers 2"), "{name}: {err}");
        assert!(!tmp.path().join("x.sock").exists());
    }
}
