//! Interop oracle for IPv4 (dual-stack VMs): frames the engine itself produces, dissected by
//! tshark (Wireshark's ARP, IPv4, ICMP, SRH dissectors, checksums verified). Skips loudly when
//! tshark is not installed; `SRMIG_REQUIRE_TSHARK=1` (as CI sets) turns the skip into a failure.
//!
//! The frames: the ARP answer of the anycast gateway, a VM's IPv4 datagram encapsulated with
//! H.Encaps (SRH Next Header 4), the ICMPv4 Time Exceeded the gateway sends for TTL 1, the
//! ICMPv4 "fragmentation needed" for a DF packet that no longer fits after encapsulation, and
//! an IPv4 packet decapsulated by End.DT4 and delivered to its VM.

use std::net::Ipv4Addr;
use std::process::Command;

use crate::testkit::canon::*;
use crate::testkit::*;
use crate::*;

const T0: Instant = Instant(1_000_000_000);

fn run(dp: &mut Dataplane, port: PortId, frame: &[u8]) -> (Verdict, Vec<u8>) {
    let mut b = Batch::new(1);
    assert!(b.push(port, frame).expect("frame fits"));
    dp.process_batch(T0, &mut b);
    let p = &b.packets()[0];
    (p.verdict, p.data().to_vec())
}

/// The one frame the engine generated (an ICMP error), with its port.
fn generated(dp: &mut Dataplane) -> (PortId, Vec<u8>) {
    let mut out = PacketBuf::new();
    let port = dp.poll_transmit(T0, &mut out).expect("a generated frame");
    let frame = out.data().to_vec();
    assert!(dp.poll_transmit(T0, &mut out).is_none(), "one frame only");
    (port, frame)
}

/// A UDP datagram (no checksum: optional in IPv4) with `data`.
fn udp(data: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&4000u16.to_be_bytes());
    v.extend_from_slice(&7u16.to_be_bytes());
    v.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(data);
    v
}

fn arp_request(sha: [u8; 6], spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend_from_slice(&sha);
    a.extend_from_slice(&spa.octets());
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&tpa.octets());
    a.extend_from_slice(&[0; 18]);
    eth([0xff; 6], sha, 0x0806, &a)
}

/// A classic pcap of `frames` (Ethernet), written by pcap-file.
fn pcap(frames: &[Vec<u8>]) -> Vec<u8> {
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    let header = PcapHeader {
        datalink: pcap_file::DataLink::ETHERNET,
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(Vec::new(), header).expect("pcap header");
    for (i, f) in frames.iter().enumerate() {
        let ts = std::time::Duration::from_secs(i as u64);
        w.write_packet(&PcapPacket::new(ts, f.len() as u32, f))
            .expect("pcap packet");
    }
    w.into_writer()
}

#[test]
fn tshark_decodes_the_engines_ipv4_frames() {
    if Command::new("tshark").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("SRMIG_REQUIRE_TSHARK").is_none(),
            "tshark required but not installed"
        );
        eprintln!("SKIPPED tshark_decodes_the_engines_ipv4_frames: tshark is not installed");
        return;
    }
    let gw = Ipv4Addr::new(10, 0, 0, 1);
    let mut dp = Dataplane::new(host_config(S, VmState::Running)).expect("config");
    let from_client = |p: &[u8]| eth(GATEWAY_MAC, CLIENT_MAC, 0x0800, p);
    let mut frames = Vec::new();

    // 1. ARP: the gateway answers the client VM.
    let (v, out) = run(
        &mut dp,
        CLIENT_PORT,
        &arp_request(CLIENT_MAC, CLIENT_V4, gw),
    );
    assert_eq!(v, Verdict::Tx(CLIENT_PORT));
    frames.push(out);
    // 2. IPv4 from the client VM to a remote VM: H.Encaps, Next Header 4.
    let (v, out) = run(
        &mut dp,
        CLIENT_PORT,
        &from_client(&ipv4(CLIENT_V4, REMOTE_V4, 17, 64, &udp(b"dual-stack"))),
    );
    assert_eq!(v, Verdict::Tx(UPLINK));
    frames.push(out);
    // 3. TTL 1: Time Exceeded from the gateway address.
    let (v, _) = run(
        &mut dp,
        CLIENT_PORT,
        &from_client(&ipv4(CLIENT_V4, REMOTE_V4, 17, 1, &udp(b"ttl"))),
    );
    assert_eq!(v, Verdict::Drop(DropReason::Ipv4TtlExceeded));
    let (port, out) = generated(&mut dp);
    assert_eq!(port, CLIENT_PORT);
    frames.push(out);
    // 4. A DF packet that fits the VM's link but not the uplink after encapsulation:
    //    fragmentation needed, with the MTU the VM must use.
    dp.set_port_mtu(UPLINK, Some(1500)).expect("uplink MTU");
    let big = ipv4(CLIENT_V4, REMOTE_V4, 17, 64, &udp(&[0x5a; 1472]));
    let (v, _) = run(&mut dp, CLIENT_PORT, &from_client(&big));
    assert!(matches!(v, Verdict::Drop(_)), "{v:?}");
    let (port, out) = generated(&mut dp);
    assert_eq!(port, CLIENT_PORT);
    frames.push(out);
    // 5. End.DT4: an IPv4 packet from the fabric, decapsulated and delivered to vm1.
    let inner = ipv4(REMOTE_V4, VM1_V4, 17, 64, &udp(b"to vm1"));
    let (v, out) = run(
        &mut dp,
        UPLINK,
        &uplink_frame(S, &[sid(S, END_DT4)], 0, &inner),
    );
    assert_eq!(v, Verdict::Tx(VM1_PORT));
    frames.push(out);

    let path = std::env::temp_dir().join(format!("srmig-ipv4-tshark-{}.pcap", std::process::id()));
    std::fs::write(&path, pcap(&frames)).expect("write pcap");
    let fields = [
        "arp.opcode",
        "arp.src.hw_mac",
        "arp.src.proto_ipv4",
        "arp.dst.proto_ipv4",
        "ipv6.routing.nxt",
        "ip.src",
        "ip.dst",
        "ip.ttl",
        "ip.checksum.status",
        "icmp.type",
        "icmp.code",
        "icmp.checksum.status",
        "icmp.mtu",
        "_ws.expert.message",
    ];
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(&path).args([
        "-o",
        "ip.check_checksum:TRUE",
        "-T",
        "fields",
        "-E",
        "separator=|",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=,",
    ]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("run tshark");
    if std::env::var_os("KEEP_PCAP").is_none() {
        let _ = std::fs::remove_file(&path);
    }
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split('|').collect()).collect();
    assert_eq!(lines.len(), frames.len(), "{text}");
    for (i, l) in lines.iter().enumerate() {
        // The one remark allowed: the Time Exceeded quotes a packet whose TTL was 1.
        let allowed = if i == 2 {
            "\"Time To Live\" only 1"
        } else {
            ""
        };
        assert_eq!(
            l[13],
            allowed,
            "tshark expert info on frame {}: {text}",
            i + 1
        );
    }
    let client = CLIENT_V4.to_string();
    let remote = REMOTE_V4.to_string();

    // ARP reply: gateway MAC for the gateway address, to the client.
    let l = &lines[0];
    assert_eq!(l[0], "2", "{text}");
    assert_eq!(l[1], "02:00:00:00:00:01", "{text}");
    assert_eq!(l[2], gw.to_string(), "{text}");
    assert_eq!(l[3], client, "{text}");
    // H.Encaps: SRH Next Header 4, the inner IPv4 intact, TTL decremented, checksum good.
    let l = &lines[1];
    assert_eq!(l[4], "4", "{text}");
    assert_eq!(
        (l[5], l[6], l[7], l[8]),
        (client.as_str(), remote.as_str(), "63", "1"),
        "{text}"
    );
    // Time Exceeded from the gateway to the client, quoting the packet (outer, then quoted
    // header's fields).
    let l = &lines[2];
    assert_eq!(l[5], format!("{gw},{client}"), "{text}");
    assert_eq!(l[6], format!("{client},{remote}"), "{text}");
    assert_eq!((l[9], l[10], l[11]), ("11", "0", "1"), "{text}");
    assert!(
        l[8].starts_with('1'),
        "IPv4 checksum status (1 = good): {text}"
    );
    // Fragmentation needed: type 3 code 4 with the MTU that fits after the encapsulation.
    let l = &lines[3];
    assert_eq!((l[9], l[10], l[11]), ("3", "4", "1"), "{text}");
    let mtu: u32 = l[12].parse().unwrap_or_else(|_| panic!("icmp.mtu: {text}"));
    // 1500 minus what H.Encaps adds here: IPv6 (40), an SRH (8) with two segments (32).
    assert_eq!(mtu, 1500 - 40 - 8 - 32, "next-hop MTU: {text}");
    // End.DT4 delivery: plain IPv4 to vm1, TTL decremented, checksum good.
    let l = &lines[4];
    assert!(l[4].is_empty(), "{text}");
    assert_eq!(
        (l[5], l[6], l[7], l[8]),
        (remote.as_str(), VM1_V4.to_string().as_str(), "63", "1"),
        "{text}"
    );
}
