//! srmigd's port I/O with real traffic, on one topology (the forwarding test's, with a 9100-byte
//! underlay and 9000-byte VMs):
//!
//! ```text
//!  vma ns ─eth0══vma0─ [s ns: srmigd S] ─up0══rs0─ [r ns: Linux router] ─rd0══up0─ [d ns: srmigd D] ─vmb0══eth0─ vmb ns
//!  MTU 9000              uplink MTU 9100              MTU 9100                uplink MTU 9100         MTU 9000
//! ```
//!
//! 1. Jumbo frames: 8000-byte UDP datagrams from vma reach vmb whole (H.Encaps at S, End.DT6 at
//!    D), none cut.
//! 2. VM offloads: a TCP stream from vma with TSO/GSO *on* (the guest default) arrives whole
//!    at vmb; S counts the GSO super-frames it segmented and none it could not.
//! 3. Path MTU: S's uplink MTU drops to 4000 while srmigd runs; srmigd picks it up, and a
//!    `ping -M do -s 8000` from vma makes S answer Packet Too Big with 4000 minus the 64 bytes
//!    H.Encaps adds: vma's kernel caches path MTU 3936 for vmb, and pings that fit go through.
//!    Steps 1 and 2 run twice: S's VM port through srmigd's socket (`[io] vm_fast_path =
//!    false`), then on its TC fast path (`[io] fast_path = ["vma0"]`, attached as a clsact
//!    filter, `vm_tc_hook = "clsact"`, as on a kernel without tcx; the netns labs cover tcx:
//!    the program encapsulates the super-frames whole; srmigd turns the veth uplink's
//!    transmit checksum offload off while it runs, and back on at exit; it steers the VM
//!    port's receive to its worker's CPU, and writes that back at exit; the filter is gone
//!    after a clean exit, and a filter left by a SIGKILLed srmigd is removed by the next
//!    one's start, even one without the fast path); step 3 runs on the fast path (the
//!    program hands srmigd what does not fit).
//! 4. AF_XDP: a srmigd told `[io] mode = "xdp"` attaches its 1500-byte uplink with AF_XDP
//!    (`auto` keeps veths on AF_PACKET); once that srmigd is SIGKILLed, no XDP program is left
//!    on the interface.
//!
//! Needs root. Without root it prints `SKIPPED: needs root` and passes, unless `CI` is set.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use hyper::StatusCode;
use srmig_lab::{Lab, MacAddr};

mod common;
use common::{
    bring_up, disable_ipv6, net, route_via_gateway, set_mtu, sock_addr, udp_socket, veth, vm_toml,
    wait_until, Daemon, TempDir, Underlay,
};

const VMA: &str = "2001:db8:a::10";
const VMB: &str = "2001:db8:a::20";
const VMA_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 0x0a]);
const VMB_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 0x0b]);

/// Host `n`'s config: local VM `local`, and a mapping for `remote` by H.Encaps to the other
/// host's End.DT6.
fn host_config(n: u8, local: (&str, &str, MacAddr), remote: (&str, &str)) -> String {
    let other = 3 - n;
    format!(
        r#"{{"generation":1,
        "mappings":[{{"vm":"{lv}","addresses":["{la}"],"steering":"native"}},
                    {{"vm":"{rv}","addresses":["{ra}"],
                      "steering":{{"encaps":{{"segments":["fc00:0:{other}::d6"],"headend":"H.Encaps"}}}}}}],
        "local_vms":[{{"vm":"{lv}","addresses":["{la}"],"mac":"{lm}"}}],
        "sids":[{{"behavior":"End.DT6","sid":"fc00:0:{n}::d6"}}]}}"#,
        lv = local.0,
        la = local.1,
        lm = local.2,
        rv = remote.0,
        ra = remote.1,
    )
}

/// The id of the XDP program attached to `ifname` in `ns`, from `ip -d link show`.
fn xdp_prog(ns: &srmig_lab::Netns, ifname: &str) -> Option<String> {
    let out = ns
        .ip(&["-d", "link", "show", "dev", ifname])
        .expect("ip link show");
    let at = out.find("prog/xdp id ")?;
    Some(out[at..].split_whitespace().nth(2)?.to_owned())
}

#[test]
fn jumbo_frames_offloads_path_mtu_and_xdp() {
    if common::skip(
        "port_io_netns::jumbo_frames_offloads_path_mtu_and_xdp",
        common::missing_root("network namespaces, AF_PACKET, AF_XDP"),
    ) || common::skip(
        "port_io_netns::jumbo_frames_offloads_path_mtu_and_xdp",
        common::missing_tool(&["ping", "ethtool", "tc"]),
    ) {
        return;
    }
    let tmp = TempDir::new("srmigd-portio");
    let dir = tmp.path();
    let lab = Lab::new().expect("lab");
    let u = Underlay::new(&lab);
    set_mtu(&[&u.rs0, &u.s_up, &u.rd0, &u.d_up], 9100);
    let vma = lab.add_netns("vma").expect("ns");
    let vmb = lab.add_netns("vmb").expect("ns");
    let (s_vm, vma_eth) = veth(
        &lab,
        (&u.s, "vma0", MacAddr([2, 0, 0, 0, 1, 1])),
        (&vma, "eth0", VMA_MAC),
    );
    let (d_vm, vmb_eth) = veth(
        &lab,
        (&u.d, "vmb0", MacAddr([2, 0, 0, 0, 2, 1])),
        (&vmb, "eth0", VMB_MAC),
    );
    disable_ipv6(&[&s_vm, &d_vm]);
    lab.add_addr(&vma_eth, net(&format!("{VMA}/128")))
        .expect("addr");
    lab.add_addr(&vmb_eth, net(&format!("{VMB}/128")))
        .expect("addr");
    set_mtu(&[&vma_eth, &vmb_eth, &s_vm, &d_vm], 9000);
    bring_up(&lab, &[&s_vm, &vma_eth, &d_vm, &vmb_eth]);
    for vm in [&vma, &vmb] {
        route_via_gateway(&lab, vm);
        // The guest default, explicitly: srmigd must take GSO super-frames.
        vm.exec("ethtool", &["-K", "eth0", "tso", "on", "gso", "on"])
            .expect("ethtool -K eth0 tso on gso on");
    }
    let ds = Daemon::start(
        &lab,
        &u.s,
        dir,
        "s",
        &(common::node_toml(1)
            + &vm_toml(1, 1, "vma0", "vma", VMA, VMA_MAC)
            + "\n[io]\nvm_fast_path = false\n"),
    );
    let dd = Daemon::start(
        &lab,
        &u.d,
        dir,
        "d",
        &(common::node_toml(2) + &vm_toml(2, 1, "vmb0", "vmb", VMB, VMB_MAC)),
    );
    let (st, body) = ds.put(
        "/v1/config",
        &host_config(1, ("vma", VMA, VMA_MAC), ("vmb", VMB)),
    );
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, body) = dd.put(
        "/v1/config",
        &host_config(2, ("vmb", VMB, VMB_MAC), ("vma", VMA)),
    );
    assert_eq!(st, StatusCode::OK, "{body}");
    for (dm, port, mtu) in [(&ds, "up0", 9100), (&ds, "vma0", 9000), (&dd, "up0", 9100)] {
        let p = dm.port(port);
        assert!(p.attached, "{} {port} not attached\n{}", dm.name, dm.logs());
        assert_eq!(
            p.mtu,
            Some(mtu),
            "{} {port}: MTU from the interface\n{}",
            dm.name,
            dm.logs()
        );
        eprintln!("{} {port}: socket {:?}, mtu {:?}", dm.name, p.socket, p.mtu);
    }
    let out = vma
        .exec("ping", &["-6", "-c", "3", "-i", "0.05", "-W", "2", VMB])
        .unwrap_or_else(|e| panic!("ping failed: {e}\nS:\n{}\nD:\n{}", ds.logs(), dd.logs()));
    assert!(out.contains(" 0% packet loss"), "{out}");

    jumbo_and_tso(&vma, &vmb, &ds, &dd, false);

    // 1-2 again with S's VM port on the TC fast path ([io] fast_path = ["vma0"]), attached
    // as a clsact filter.
    ds.stop(&lab);
    let fast_toml = common::node_toml(1)
        + &vm_toml(1, 1, "vma0", "vma", VMA, VMA_MAC)
        + "\n[io]\nvm_fast_path = false\nfast_path = [\"vma0\"]\nvm_tc_hook = \"clsact\"\n";
    let ds = Daemon::start(&lab, &u.s, dir, "s-fast", &fast_toml);
    let (st, body) = ds.put(
        "/v1/config",
        &host_config(1, ("vma", VMA, VMA_MAC), ("vmb", VMB)),
    );
    assert_eq!(st, StatusCode::OK, "{body}");
    let tx_csum = |ns: &srmig_lab::Netns| {
        ns.exec("ethtool", &["-k", "up0"])
            .expect("ethtool -k up0")
            .lines()
            .find(|l| l.starts_with("tx-checksumming:"))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        tx_csum(&u.s).contains("off"),
        "srmigd turned S's veth uplink's checksum offload off: {}",
        tx_csum(&u.s)
    );
    // The VM port's receive is steered to the CPU srmigd's worker is pinned to (its packets
    // keep their order when the program hands them over: crate::port::steer).
    let rps = |ns: &srmig_lab::Netns| {
        ns.exec("cat", &["/sys/class/net/vma0/queues/rx-0/rps_cpus"])
            .expect("reading vma0's rps_cpus")
            .trim()
            .trim_start_matches(['0', ','])
            .to_owned()
    };
    assert!(
        matches!(rps(&u.s).as_str(), "1" | "2" | "4" | "8"),
        "vma0's receive steered to one CPU while the TC program is attached: {:?}\n{}",
        rps(&u.s),
        ds.logs()
    );
    assert_eq!(
        ds.port("vma0").fast_path_hook.as_deref(),
        Some("clsact"),
        "{}",
        ds.logs()
    );
    assert_eq!(
        srmig_filters(&u.s),
        1,
        "srmigd's clsact filter on vma0 while it runs: {}\n{}",
        ingress_filters(&u.s),
        ds.logs()
    );
    jumbo_and_tso(&vma, &vmb, &ds, &dd, true);

    // 3. Path MTU: S's uplink shrinks to 4000 while srmigd runs.
    u.s.ip(&["link", "set", "dev", "up0", "mtu", "4000"])
        .expect("mtu 4000");
    wait_until(
        "S's up0 MTU is 4000",
        Duration::from_secs(3),
        Duration::from_millis(20),
        || match ds.port("up0").mtu {
            Some(4000) => Ok(()),
            m => Err(m),
        },
        |m| format!("MTU {m:?}\n{}", ds.logs()),
    );
    // The first ping leaves at 8048 bytes and earns the Packet Too Big; the later ones fail
    // locally ("message too long") once vma's kernel learnt the path MTU.
    let _ = vma.exec(
        "ping",
        &[
            "-6", "-M", "do", "-s", "8000", "-c", "3", "-i", "0.2", "-W", "1", VMB,
        ],
    );
    let route = vma.ip(&["-6", "route", "get", VMB]).expect("ip route get");
    assert!(
        route.contains("mtu 3936"),
        "vma did not learn path MTU 4000 - 64 from srmigd's Packet Too Big: {route}\nS:\n{}",
        ds.logs()
    );
    let out = vma
        .exec(
            "ping",
            &[
                "-6", "-M", "do", "-s", "3800", "-c", "3", "-i", "0.05", "-W", "2", VMB,
            ],
        )
        .unwrap_or_else(|e| panic!("ping -s 3800 failed: {e}\nS:\n{}", ds.logs()));
    assert!(out.contains(" 0% packet loss"), "{out}");

    // 4. AF_XDP on a 1500-byte uplink, and nothing left after a SIGKILL.
    let x = lab.add_netns("x").expect("ns");
    let (_xr, x_up) = veth(
        &lab,
        (&u.r, "rx0", MacAddr([2, 0, 0, 0, 9, 0xff])),
        (&x, "up0", MacAddr([2, 0, 0, 0, 9, 0])),
    );
    disable_ipv6(&[&x_up]);
    bring_up(&lab, &[&_xr, &x_up]);
    // `auto` keeps veths on AF_PACKET (their peer may hand over partial checksums): ask for
    // AF_XDP explicitly, as an operator whose underlay sends complete frames would.
    let dx = Daemon::start(
        &lab,
        &x,
        dir,
        "x",
        &(common::node_toml(9) + "\n[io]\nmode = \"xdp\"\n"),
    );
    let p = dx.port("up0");
    assert!(p.attached, "x up0 not attached\n{}", dx.logs());
    assert_eq!(
        p.socket.as_deref(),
        Some("xdp"),
        "io mode xdp on a 1500-byte veth uses AF_XDP\n{}",
        dx.logs()
    );
    assert!(
        xdp_prog(&x, "up0").is_some(),
        "no XDP program while srmigd runs"
    );
    sigkill(dx.pid);
    wait_until(
        "no XDP program on up0 after SIGKILL",
        Duration::from_secs(5),
        Duration::from_millis(20),
        || match xdp_prog(&x, "up0") {
            None => Ok(()),
            Some(id) => Err(id),
        },
        |id| format!("program {id} still attached"),
    );
    ds.stop(&lab);
    assert!(
        tx_csum(&u.s).contains("on"),
        "srmigd turned S's uplink checksum offload back on at exit: {}",
        tx_csum(&u.s)
    );
    assert_eq!(
        rps(&u.s),
        "",
        "srmigd wrote vma0's receive steering back (no CPU) at exit"
    );
    assert_eq!(
        srmig_filters(&u.s),
        0,
        "srmigd removed its clsact filter at exit: {}",
        ingress_filters(&u.s)
    );

    // A SIGKILLed srmigd leaves its clsact filter; the next srmigd removes it at start, also
    // when it does not use the fast path itself.
    let dk = Daemon::start(&lab, &u.s, dir, "s-kill", &fast_toml);
    let (st, body) = dk.put(
        "/v1/config",
        &host_config(1, ("vma", VMA, VMA_MAC), ("vmb", VMB)),
    );
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(srmig_filters(&u.s), 1, "{}", ingress_filters(&u.s));
    sigkill(dk.pid);
    wait_until(
        "s-kill gone",
        Duration::from_secs(5),
        Duration::from_millis(20),
        || {
            if lab.child_running(dk.pid) {
                Err(())
            } else {
                Ok(())
            }
        },
        |()| "srmigd still running after SIGKILL".to_owned(),
    );
    assert_eq!(
        srmig_filters(&u.s),
        1,
        "a SIGKILLed srmigd leaves its filter: {}",
        ingress_filters(&u.s)
    );
    let da = Daemon::start(
        &lab,
        &u.s,
        dir,
        "s-after",
        &(common::node_toml(1)
            + &vm_toml(1, 1, "vma0", "vma", VMA, VMA_MAC)
            + "\n[io]\nvm_fast_path = false\n"),
    );
    assert_eq!(
        srmig_filters(&u.s),
        0,
        "the next srmigd removed the stale filter at start: {}\n{}",
        ingress_filters(&u.s),
        da.logs()
    );
    assert!(
        da.logs()
            .contains("removed a previous srmigd's clsact filter"),
        "{}",
        da.logs()
    );
    da.stop(&lab);
    dd.stop(&lab);
}

/// SIGKILLs process `pid` (kill(1) rather than libc: no unsafe in tests).
fn sigkill(pid: u32) {
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success(), "kill -KILL {pid}");
}

/// `tc filter show dev vma0 ingress` in `ns` (empty without a clsact qdisc).
fn ingress_filters(ns: &srmig_lab::Netns) -> String {
    ns.exec("tc", &["filter", "show", "dev", "vma0", "ingress"])
        .unwrap_or_default()
}

/// How many of srmigd's filters (program `srmig_vm`, pref 21330) vma0's ingress has.
fn srmig_filters(ns: &srmig_lab::Netns) -> usize {
    ingress_filters(ns)
        .lines()
        .filter(|l| l.contains("pref 21330") && l.contains("srmig_vm"))
        .count()
}

/// Steps 1 and 2: ten 8000-byte datagrams from vma reach vmb whole, then a 24 MiB TCP stream
/// with TSO/GSO on in vma arrives intact. `fast`: S's VM port has the TC fast path, which
/// then forwards the super-frames whole (S's srmigd segments none).
fn jumbo_and_tso(
    vma: &srmig_lab::Netns,
    vmb: &srmig_lab::Netns,
    ds: &Daemon,
    dd: &Daemon,
    fast: bool,
) {
    // 1. Jumbo frames.
    let dst = sock_addr(VMB, 9000);
    let rx = udp_socket(vmb, dst);
    rx.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let tx = udp_socket(vma, sock_addr(VMA, 0));
    let mut sent = Vec::new();
    for k in 0..10u8 {
        let dgram: Vec<u8> = (0..8000usize).map(|i| (i as u8) ^ k).collect();
        tx.send_to(&dgram, dst).expect("send 8000 bytes");
        sent.push(dgram);
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut buf = vec![0u8; 65536];
    for (k, want) in sent.iter().enumerate() {
        let n = rx.recv(&mut buf).unwrap_or_else(|e| {
            panic!(
                "datagram {k} of 8000 bytes not received: {e}\nS:\n{}\nD:\n{}",
                ds.logs(),
                dd.logs()
            )
        });
        assert_eq!(&buf[..n], &want[..], "datagram {k} arrived changed");
    }
    assert_eq!(ds.port("vma0").io.rx_truncated, 0);

    // 2. A TCP stream with TSO/GSO on in the sender.
    const BYTES: usize = 24 << 20;
    let listen = sock_addr(VMB, 5001);
    let sink = vmb
        .spawn("tcp-sink", move || -> std::io::Result<(usize, u64)> {
            let l = TcpListener::bind(listen)?;
            let (mut c, _) = l.accept()?;
            c.set_read_timeout(Some(Duration::from_secs(20)))?;
            let (mut n, mut sum) = (0usize, 0u64);
            let mut b = vec![0u8; 1 << 16];
            loop {
                let k = c.read(&mut b)?;
                if k == 0 {
                    return Ok((n, sum));
                }
                for (i, x) in b[..k].iter().enumerate() {
                    sum = sum.wrapping_add(u64::from(*x) * ((n + i) as u64 % 251 + 1));
                }
                n += k;
            }
        })
        .expect("sink thread");
    std::thread::sleep(Duration::from_millis(200));
    let want_sum = vma
        .run(move || -> std::io::Result<u64> {
            let mut c = TcpStream::connect_timeout(&listen, Duration::from_secs(5))?;
            let chunk: Vec<u8> = (0..(1usize << 20)).map(|i| (i * 7 + 3) as u8).collect();
            let mut sum = 0u64;
            for r in 0..(BYTES >> 20) {
                c.write_all(&chunk)?;
                for (i, x) in chunk.iter().enumerate() {
                    let at = (r << 20) + i;
                    sum = sum.wrapping_add(u64::from(*x) * (at as u64 % 251 + 1));
                }
            }
            Ok(sum)
        })
        .expect("netns")
        .unwrap_or_else(|e| panic!("TCP sender: {e}\nS:\n{}\nD:\n{}", ds.logs(), dd.logs()));
    let (got, got_sum) = sink
        .join()
        .expect("sink")
        .unwrap_or_else(|e| panic!("TCP sink: {e}\nS:\n{}\nD:\n{}", ds.logs(), dd.logs()));
    assert_eq!(got, BYTES, "bytes received");
    assert_eq!(got_sum, want_sum, "stream content");
    let io = ds.port("vma0").io;
    eprintln!(
        "TCP {BYTES} bytes: S vma0 rx_gso {} (segments {}), rx_gso_bad {}, csum completed {}",
        io.rx_gso, io.rx_gso_segments, io.rx_gso_bad, io.rx_csum_completed
    );
    assert_eq!(io.rx_gso_bad, 0, "{io:?}");
    if fast {
        let p = ds.port("vma0");
        assert!(p.fast_path, "the TC fast path is on\n{}", ds.logs());
        assert!(
            p.rx.packets > p.io.rx_frames + 1000,
            "the TC program forwarded the stream: {} frames received on vma0, {} through srmigd's socket\n{}",
            p.rx.packets,
            p.io.rx_frames,
            ds.logs()
        );
    } else {
        assert!(io.rx_gso > 0, "no GSO super-frame seen: {io:?}");
    }
}
