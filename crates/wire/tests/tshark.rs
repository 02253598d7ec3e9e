//! Interop oracle: packets built by srmig-wire, dissected by tshark (Wireshark's SRH, ICMPv6
//! and NDP dissectors). Skips loudly when tshark is not installed; set
//! `SRMIG_REQUIRE_TSHARK=1` (as CI does) to turn the skip into a failure.

use std::net::Ipv6Addr;
use std::process::Command;

use srmig_wire::ethernet::{self, Address, EtherType, Frame};
use srmig_wire::icmpv6::{self, Message};
use srmig_wire::ndisc::NdiscRepr;
use srmig_wire::srh::{Srh, SrhRepr, TlvRepr};
use srmig_wire::{checksum, ipv6, IpProtocol};

fn a(s: &str) -> Ipv6Addr {
    s.parse().expect("addr")
}

fn eth(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; ethernet::HEADER_LEN + payload.len()];
    let r = ethernet::Repr {
        dst_addr: Address([0x02, 0, 0, 0, 0, 2]),
        src_addr: Address([0x02, 0, 0, 0, 0, 1]),
        ethertype: EtherType::IPV6,
    };
    let mut fr = Frame::new_unchecked(&mut f[..]);
    r.emit(&mut fr);
    fr.payload_mut().copy_from_slice(payload);
    f
}

fn pcap(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in [0xa1b2_c3d4u32.to_le_bytes(), [2, 0, 4, 0]] {
        out.extend_from_slice(&v);
    }
    out.extend_from_slice(&[0u8; 8]); // thiszone, sigfigs
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
    for (i, f) in frames.iter().enumerate() {
        out.extend_from_slice(&(i as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(f);
    }
    out
}

fn srh_udp_packet() -> Vec<u8> {
    let path = [a("fc00:1::1"), a("fc00:2::1"), a("2001:db8::2")];
    let mut r = SrhRepr::from_path(IpProtocol::UDP, &path).expect("path");
    r.segments_left = 1;
    r.tag = 0xbeef;
    r.tlvs = vec![
        TlvRepr::PadN { len: 0 },
        TlvRepr::Hmac {
            d_flag: false,
            key_id: 7,
            hmac: vec![0x11; 32],
        },
    ];
    let srh_len = r.buffer_len();
    let udp = [
        0x30, 0x39, 0x16, 0x2e, 0x00, 0x0c, 0, 0, b'd', b'a', b't', b'a',
    ];
    let mut pkt = vec![0u8; 40 + srh_len];
    ipv6::emit_header(
        &mut pkt,
        a("2001:db8::1"),
        path[1],
        IpProtocol::ROUTING,
        (srh_len + udp.len()) as u16,
        64,
    );
    r.emit(&mut Srh::new_unchecked(&mut pkt[40..]))
        .expect("emit");
    pkt.extend_from_slice(&udp);
    assert_eq!(checksum::fix_l4_checksum(&mut pkt), Ok(true));
    pkt
}

fn param_problem_packet() -> Vec<u8> {
    let inv = srh_udp_packet();
    let mut buf = [0u8; 1280];
    let n = icmpv6::emit_error(
        &mut buf,
        a("fc00:2::1"),
        a("2001:db8::1"),
        Message::PARAM_PROBLEM,
        0,
        43,
        &inv,
    );
    buf[..n].to_vec()
}

fn ns_packet() -> Vec<u8> {
    let (src, dst) = (a("fe80::1"), ipv6::addr::solicited_node(&a("fe80::2")));
    let r = icmpv6::Repr::Ndisc(NdiscRepr::NeighborSolicit {
        target_addr: a("fe80::2"),
        lladdr: Some(Address([0x52, 0x54, 0, 0x12, 0x34, 0x56])),
    });
    let mut pkt = vec![0u8; 40 + r.buffer_len()];
    ipv6::emit_header(
        &mut pkt,
        src,
        dst,
        IpProtocol::ICMPV6,
        r.buffer_len() as u16,
        255,
    );
    r.emit(
        &src,
        &dst,
        &mut icmpv6::Packet::new_unchecked(&mut pkt[40..]),
    );
    pkt
}

#[test]
fn tshark_agrees() {
    if Command::new("tshark").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("SRMIG_REQUIRE_TSHARK").is_none(),
            "tshark required but not installed"
        );
        eprintln!("SKIPPED tshark_agrees: tshark is not installed");
        return;
    }
    let frames = [
        eth(&srh_udp_packet()),
        eth(&param_problem_packet()),
        eth(&ns_packet()),
    ];
    let path = std::env::temp_dir().join(format!("srmig-wire-tshark-{}.pcap", std::process::id()));
    std::fs::write(&path, pcap(&frames)).expect("write pcap");
    let fields = [
        "ipv6.routing.type",
        "ipv6.routing.segleft",
        "ipv6.routing.srh.last_entry",
        "ipv6.routing.srh.tag",
        "ipv6.routing.srh.addr",
        "udp.checksum.status",
        "icmpv6.type",
        "icmpv6.code",
        "icmpv6.pointer",
        "icmpv6.checksum.status",
        "icmpv6.nd.ns.target_address",
        "icmpv6.opt.linkaddr",
        "_ws.expert.severity",
    ];
    let mut cmd = Command::new("tshark");
    cmd.arg("-r")
        .arg(&path)
        .args(["-o", "udp.check_checksum:TRUE", "-T", "fields"]);
    cmd.args([
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
    assert_eq!(lines.len(), 3, "{text}");

    // Frame 1: SRH + UDP.
    let l = &lines[0];
    assert_eq!(l[0], "4", "{text}");
    assert_eq!(l[1], "1", "{text}");
    assert_eq!(l[2], "2", "{text}");
    assert_eq!(l[3], "beef", "{text}");
    assert_eq!(l[4], "2001:db8::2,fc00:2::1,fc00:1::1", "{text}");
    assert_eq!(l[5], "1", "UDP checksum status (1 = good): {text}");
    assert!(l[12].is_empty(), "tshark expert info: {text}");

    // Frame 2: ICMPv6 Parameter Problem pointing at Segments Left; the invoking packet's SRH
    // is dissected too (hence repeated routing fields).
    let l = &lines[1];
    assert!(l[6].starts_with('4'), "{text}");
    assert!(l[7].starts_with('0'), "{text}");
    assert_eq!(l[8], "43", "{text}");
    assert_eq!(l[9], "1", "ICMPv6 checksum status (1 = good): {text}");
    // tshark 4.0 reports the quoted UDP checksum as bad although the same bytes verify in
    // frame 1; it appears not to use the SRH final destination inside ICMPv6 errors, so the
    // quoted UDP checksum status is not checked.

    // Frame 3: NS with SLLAO.
    let l = &lines[2];
    assert_eq!(l[6], "135", "{text}");
    assert_eq!(l[9], "1", "{text}");
    assert_eq!(l[10], "fe80::2", "{text}");
    assert_eq!(l[11], "52:54:00:12:34:56", "{text}");
    assert!(l[12].is_empty(), "tshark expert info: {text}");
}
