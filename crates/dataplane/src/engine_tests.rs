//! Engine tests: every behavior, End.S / End.SBUF state transitions, buffer bounds and order,
//! every bad input (named drop + ICMPv6 error where the RFC says so), config validation, and a
//! no-panic property test. ICMPv6 and SRH output is checked with `srmig-wire` as the oracle.

use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use srmig_wire::icmpv6::{Packet as IcmpPacket, Repr as IcmpRepr};
use srmig_wire::ipv6::Packet as Ipv6Packet;
use srmig_wire::ndisc::{NdiscRepr, NeighborFlags};
use srmig_wire::srh::Srh;

use crate::testkit::canon::*;
use crate::testkit::*;
use crate::*;

const T0: Instant = Instant(1_000_000_000);

fn host(h: u16, state: VmState) -> Dataplane {
    Dataplane::new(host_config(h, state)).unwrap()
}

fn run(dp: &mut Dataplane, port: PortId, frame: &[u8]) -> (Verdict, Vec<u8>) {
    run_at(dp, T0, port, frame)
}

fn run_at(dp: &mut Dataplane, now: Instant, port: PortId, frame: &[u8]) -> (Verdict, Vec<u8>) {
    let mut b = Batch::new(1);
    assert!(b.push(port, frame).unwrap());
    dp.process_batch(now, &mut b);
    let p = &b.packets()[0];
    (p.verdict, p.data().to_vec())
}

fn drain(dp: &mut Dataplane, now: Instant) -> Vec<(PortId, Vec<u8>)> {
    let mut out = PacketBuf::new();
    let mut v = Vec::new();
    while let Some(p) = dp.poll_transmit(now, &mut out) {
        v.push((p, out.data().to_vec()));
    }
    v
}

fn ip6(frame: &[u8]) -> Ipv6Packet<&[u8]> {
    Ipv6Packet::new_checked(&frame[14..]).unwrap()
}

/// The single generated ICMPv6 message: (ip src, ip dst, type, code, pointer/param, invoking).
fn icmp_of(frame: &[u8]) -> (Ipv6Addr, Ipv6Addr, IcmpRepr<'_>) {
    let ip = Ipv6Packet::new_checked(&frame[14..]).unwrap();
    assert_eq!(ip.next_header(), srmig_wire::IpProtocol::from(58u8));
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let payload = &frame[54..];
    let p = IcmpPacket::new_checked(payload).unwrap();
    let r = IcmpRepr::parse_verified(&src, &dst, &p).unwrap();
    (src, dst, r)
}

fn expect_drop(dp: &mut Dataplane, port: PortId, frame: &[u8], reason: DropReason) {
    let before = dp.counters().drops(reason);
    let (v, _) = run(dp, port, frame);
    assert_eq!(v, Verdict::Drop(reason));
    assert_eq!(
        dp.counters().drops(reason),
        before + 1,
        "{reason:?} not counted"
    );
}

fn param_problem(dp: &mut Dataplane, code: u8, pointer: u32) {
    let g = drain(dp, T0);
    assert_eq!(g.len(), 1, "expected one ICMPv6 error");
    let (port, f) = &g[0];
    assert_eq!(*port, UPLINK);
    assert_eq!(&f[0..6], &router_mac(S));
    let (src, dst, r) = icmp_of(f);
    assert_eq!(src, uplink_address(S));
    assert_eq!(dst, sid(C, 1));
    match r {
        IcmpRepr::ParamProblem {
            code: c,
            pointer: p,
            invoking,
        } => {
            assert_eq!((c, p), (code, pointer));
            assert!(!invoking.is_empty());
        }
        other => panic!("expected Parameter Problem, got {other:?}"),
    }
}

fn inner() -> Vec<u8> {
    inner_to_vm1()
}

/// `p` (an IPv6 or IPv4 packet) as this node forwards it: hop limit or TTL minus one (IPv4
/// header checksum recomputed). Every decapsulated packet is forwarded this way.
fn forwarded(p: &[u8]) -> Vec<u8> {
    let mut q = p.to_vec();
    if q[0] >> 4 == 6 {
        q[7] -= 1;
    } else {
        let ihl = usize::from(q[0] & 0x0f) * 4;
        q[8] -= 1;
        q[10..12].fill(0);
        let c = !srmig_wire::checksum::data(&q[..ihl]);
        q[10..12].copy_from_slice(&c.to_be_bytes());
    }
    q
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

#[test]
fn canonical_config_round_trips_through_toml() {
    let (s, d) = two_hosts();
    for cfg in [s, d] {
        let text = toml::to_string(&cfg).unwrap();
        let back: NodeConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, cfg);
        Dataplane::new(back).unwrap();
    }
}

#[test]
fn toml_written_by_hand_parses() {
    let text = r#"
        locator = "fc00:0:1::/48"
        source_address = "fc00:0:1::1"
        infrastructure_prefixes = ["fc00::/16"]
        gateway = { address = "2001:db8::1", mac = "02:00:00:00:00:01" }
        buffer = { per_vm_packets = 10, per_vm_bytes = 10000, global_packets = 20, global_bytes = 20000, max_age_ms = 500 }

        [[ports]]
        name = "up0"
        kind = "uplink"
        mac = "02:00:00:00:01:00"
        peer_mac = "02:00:00:00:ff:01"

        [[ports]]
        name = "tap0"
        kind = "vm"
        mac = "02:00:00:00:01:01"

        [[routes]]
        prefix = "::/0"
        port = "up0"

        [[sids]]
        sid = "fc00:0:1::e5"
        behavior = "End.S"
        vm = "vm1"

        [[sids]]
        sid = "fc00:0:1::5b"
        behavior = "End.SBUF"
        mode = "drop"

        [[sids]]
        sid = "fc00:0:1:100::"
        behavior = "End"
        flavors = ["NEXT-C-SID"]
        locator_block_len = 48
        node_len = 16

        [[policies]]
        name = "p"
        headend = "H.Encaps.Red"
        segments = ["fc00:0:1::e5", "fc00:0:2::5b"]

        [[vms]]
        name = "vm1"
        addresses = ["2001:db8:100::10", "10.0.0.10"]
        mac = "02:00:00:00:10:10"
        port = "tap0"
        state = "running"

        [[mappings]]
        vm_address = "2001:db8:100::/64"
        policy = "p"
    "#;
    let cfg: NodeConfig = toml::from_str(text).unwrap();
    let dp = Dataplane::new(cfg).unwrap();
    assert_eq!(dp.vm_id("vm1"), Some(VmId(0)));
    assert_eq!(dp.port_id("tap0"), Some(PortId(1)));
    assert_eq!(dp.sids().count(), 3);
    // unknown fields and behaviors are rejected by serde with the name
    let bad = text.replace("mode = \"drop\"", "mode = \"drop\"\ncolour = 1");
    assert!(toml::from_str::<NodeConfig>(&bad)
        .unwrap_err()
        .to_string()
        .contains("colour"));
    let bad = text.replace("\"End.S\"", "\"End.Q\"");
    assert!(toml::from_str::<NodeConfig>(&bad)
        .unwrap_err()
        .to_string()
        .contains("unknown behavior \"End.Q\""));
}

#[test]
fn validate_accepts_what_new_builds_and_checks_the_buffer_bounds() {
    assert!(Dataplane::validate(host_config(S, VmState::Running)).is_ok());
    assert!(Dataplane::validate(host_config(D, VmState::Paused)).is_ok());
    let mut c = host_config(D, VmState::Paused);
    c.buffer.per_vm_packets = c.buffer.global_packets + 1;
    let validated = Dataplane::validate(c.clone()).expect_err("bound");
    assert_eq!(validated, Dataplane::new(c).expect_err("bound"));
}

#[test]
fn config_errors_name_the_field() {
    // Dataplane::validate (no packet storage) refuses exactly what Dataplane::new refuses.
    let err = |f: &dyn Fn(&mut NodeConfig)| {
        let mut c = host_config(S, VmState::Running);
        f(&mut c);
        let validated = Dataplane::validate(c.clone()).unwrap_err().to_string();
        let built = Dataplane::new(c).unwrap_err().to_string();
        assert_eq!(validated, built);
        built
    };
    assert_eq!(
        err(&|c| c.sids[3].nexthop = None),
        "sids[3] (fc00:0:1::e1): End.X requires parameter 'nexthop'"
    );
    assert_eq!(
        err(&|c| c.vms[0].port = "tap9".into()),
        "vms[0].port: no port named \"tap9\""
    );
    assert_eq!(
        err(&|c| c.vms[0].port = "up0".into()),
        "vms[0].port: \"up0\" is an uplink, not a VM port"
    );
    assert_eq!(
        err(&|c| c.sids[0].vm = Some("vm1".into())),
        "sids[0] (fc00:0:1::e): End does not take parameter 'vm'"
    );
    assert_eq!(
        err(&|c| c.sids[7].flavors = vec![Flavor::Psp]),
        "sids[7] (fc00:0:1::d6).flavors[0]: flavor PSP is not allowed on End.DT6"
    );
    assert_eq!(
        err(&|c| c.sids[11].vm = Some("nope".into())),
        "sids[11] (fc00:0:1::e5).vm: no VM named \"nope\""
    );
    assert_eq!(
        err(&|c| c.sids[10].policy = Some("to-d-insert".into())),
        "sids[10] (fc00:0:1::b6).policy: End.B6.Encaps needs an H.Encaps or H.Encaps.Red policy, \"to-d-insert\" is H.Insert"
    );
    assert_eq!(
        err(&|c| c.sids[0].sid = sid(D, 0xe)),
        "sids[0] (fc00:0:2::e): SID is outside the locator fc00:0:1::/48"
    );
    assert_eq!(
        err(&|c| c.sids[1].sid = sid(S, END)),
        "sids[1] (fc00:0:1::e): SID is already installed"
    );
    assert_eq!(
        err(&|c| c.ports[0].peer_mac = None),
        "ports[0].peer_mac: an uplink needs the MAC of its next hop"
    );
    assert_eq!(
        err(&|c| c.mappings[0].policy = "zz".into()),
        "mappings[0].policy: no policy named \"zz\""
    );
    assert_eq!(
        err(&|c| c.routes[0].port = "x".into()),
        "routes[0].port: no port named \"x\""
    );
    assert_eq!(
        err(&|c| c.vms[1].addresses[0] = vm1().into()),
        "vms[1].addresses[0]: 2001:db8:100::10 is already used by another VM"
    );
    assert_eq!(
        err(&|c| c.sids[0].flavors = vec![Flavor::NextCSid]),
        "sids[0] (fc00:0:1::e): NEXT-C-SID requires parameters 'locator_block_len' and 'locator_node_len'"
    );
    assert_eq!(
        err(&|c| c.buffer.max_age_ms = 0),
        "buffer.max_age_ms: must be at least 1"
    );
    assert!(err(&|c| c.policies[0].segments.clear()).starts_with("policies[0].segments:"));
}

#[test]
fn runtime_sid_and_policy_changes() {
    let mut dp = host(S, VmState::Running);
    let s = sid(S, 0x77);
    let f = uplink_frame(S, &[s, sid(D, END_DT6)], 1, &inner());
    expect_drop(&mut dp, UPLINK, &f, DropReason::NoSid);
    let id = dp.install_sid(SidConfig::new(s, Behavior::End)).unwrap();
    assert_eq!(run(&mut dp, UPLINK, &f).0, Verdict::Tx(UPLINK));
    assert_eq!(dp.counters().sid(id).packets, 1);
    let e = dp
        .install_sid(SidConfig::new(s, Behavior::EndX))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "sid (fc00:0:1::77): End.X requires parameter 'nexthop'"
    );
    assert_eq!(dp.remove_sid(s), Some(id));
    expect_drop(&mut dp, UPLINK, &f, DropReason::NoSid);
    // Replacing a policy keeps its id and changes the rewrite.
    let p = dp.policy_id("to-d").unwrap();
    let p2 = dp
        .install_policy(PolicyConfig {
            name: "to-d".into(),
            headend: Headend::HEncaps,
            segments: vec![sid(D, END_DT6)],
            hop_limit: Some(9),
            flow_label: FlowLabelMode::Copy,
            hmac_key: None,
        })
        .unwrap();
    assert_eq!(p, p2);
    let (v, out) = run(&mut dp, CLIENT_PORT, &client_frame(remote(), 100));
    assert_eq!(v, Verdict::Tx(UPLINK));
    let o = ip6(&out);
    assert_eq!(o.dst_addr(), sid(D, END_DT6));
    assert_eq!(o.hop_limit(), 9);
    assert_eq!(o.flow_label(), 0, "copied from the inner packet");
    assert_eq!(dp.counters().policy(p).packets, 1);
    // Mappings can be changed at runtime.
    dp.set_mapping("2001:db8:900::90/128".parse().unwrap(), Steering::Native)
        .unwrap();
    let (v, out) = run(&mut dp, CLIENT_PORT, &client_frame(remote(), 100));
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_eq!(ip6(&out).dst_addr(), remote());
    assert!(dp
        .set_mapping("::/0".parse().unwrap(), Steering::Policy(PolicyId(99)))
        .is_err());
    assert_eq!(
        dp.remove_mapping("2001:db8:900::90/128".parse().unwrap()),
        Some(Steering::Native)
    );
}

// ---------------------------------------------------------------------------------------------
// Endpoint behaviors
// ---------------------------------------------------------------------------------------------

#[test]
fn end_advances_to_next_segment() {
    let mut dp = host(S, VmState::Running);
    let f = uplink_frame(S, &[sid(S, END), sid(D, END_DT6)], 1, &inner());
    let (v, out) = run(&mut dp, UPLINK, &f);
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_eq!(&out[0..6], &router_mac(S));
    assert_eq!(&out[6..12], &uplink_mac(S));
    let p = ip6(&out);
    assert_eq!(p.dst_addr(), sid(D, END_DT6));
    assert_eq!(p.hop_limit(), 63);
    let srh = Srh::new_checked(p.payload()).unwrap();
    assert_eq!(srh.segments_left(), 0);
    assert_eq!(out.len(), f.len());
    let id = dp.sid_id(sid(S, END)).unwrap();
    assert_eq!(dp.counters().sid(id).packets, 1);
    assert_eq!(dp.counters().port(UPLINK).tx.packets, 1);
}

#[test]
fn end_psp_pops_the_srh() {
    let mut dp = host(S, VmState::Running);
    let inner = inner();
    let f = uplink_frame(S, &[sid(S, END_PSP), sid(D, END_DT6)], 1, &inner);
    let (v, out) = run(&mut dp, UPLINK, &f);
    assert_eq!(v, Verdict::Tx(UPLINK));
    let p = ip6(&out);
    assert_eq!(p.next_header(), srmig_wire::IpProtocol::from(41u8));
    assert_eq!(p.payload(), &inner[..]);
    assert_eq!(p.dst_addr(), sid(D, END_DT6));
    assert_eq!(out.len(), f.len() - 40);
    // With SL 2 -> 1 the SRH stays.
    let f = uplink_frame(
        S,
        &[sid(S, END_PSP), sid(C, END), sid(D, END_DT6)],
        2,
        &inner,
    );
    let (_, out) = run(&mut dp, UPLINK, &f);
    assert_eq!(ip6(&out).next_header(), srmig_wire::IpProtocol::from(43u8));
}

#[test]
fn end_at_last_segment_is_an_upper_layer_error_unless_usd() {
    let mut dp = host(S, VmState::Running);
    let f = uplink_frame(S, &[sid(S, END)], 0, &inner());
    expect_drop(&mut dp, UPLINK, &f, DropReason::UnsupportedNextHeader);
    // RFC 8986 4.1.1: code 4, pointer at the upper-layer header (after the 24-byte SRH).
    param_problem(&mut dp, 4, 40 + 24);
    // USD: decapsulate and forward the inner packet by FIB (to VM 1? no: by FIB, table 0).
    let f = uplink_frame(
        S,
        &[sid(S, END_USD)],
        0,
        &udp6_sized(sid(C, 9), sid(D, 9), 100),
    );
    let (v, out) = run(&mut dp, UPLINK, &f);
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_eq!(ip6(&out).dst_addr(), sid(D, 9));
    assert_eq!(out.len(), 14 + 100);
}

#[test]
fn end_x_and_end_t() {
    let mut dp = host(S, VmState::Running);
    let f = uplink_frame(S, &[sid(S, END_X), sid(D, END_DT6)], 1, &inner());
    let (v, out) = run(&mut dp, UPLINK, &f);
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_eq!(&out[0..6], &router_mac(S));
    assert_eq!(ip6(&out).dst_addr(), sid(D, END_DT6));
    // End.T: table 10 only routes fc00::/16.
    let f = uplink_frame(S, &[sid(S, END_T), sid(D, END_DT6)], 1, &inner());
    assert_eq!(run(&mut dp, UPLINK, &f).0, Verdict::Tx(UPLINK));
    let f = uplink_frame(S, &[sid(S, END_T), a6("2001:db8:5::1")], 1, &inner());
    expect_drop(&mut dp, UPLINK, &f, DropReason::NoRoute);
}

#[test]
fn end_dx6_dx4_dt6_dt4_dt46() {
    let mut dp = host(S, VmState::Running);
    let inner6 = inner();
    let inner4 = ipv4(Ipv4Addr::new(10, 7, 7, 7), VM1_V4, 17, 64, &[0u8; 60]);
    for (func, pkt, et) in [
        (END_DX6, &inner6, 0x86dd),
        (END_DT6, &inner6, 0x86dd),
        (END_DT46, &inner6, 0x86dd),
        (END_DX4, &inner4, 0x0800),
        (END_DT4, &inner4, 0x0800),
        (END_DT46, &inner4, 0x0800),
    ] {
        let f = uplink_frame(S, &[sid(S, func)], 0, pkt);
        let (v, out) = run(&mut dp, UPLINK, &f);
        assert_eq!(v, Verdict::Tx(VM1_PORT), "function {func:x}");
        assert_eq!(&out[0..6], &VM1_MAC);
        assert_eq!(&out[6..12], &GATEWAY_MAC);
        assert_eq!(u16::from_be_bytes([out[12], out[13]]), et);
        assert_eq!(
            out[14..],
            forwarded(pkt),
            "inner packet delivered with its hop limit / TTL decremented"
        );
    }
    // End.DT* deliver to the VM (counted), End.DX* cross-connect to the adjacency.
    assert_eq!(dp.counters().vm(VmId(0)).tx.packets, 4);
    // Wrong inner family: RFC 8986 4.1.1 error.
    let f = uplink_frame(S, &[sid(S, END_DT4)], 0, &inner6);
    expect_drop(&mut dp, UPLINK, &f, DropReason::UnsupportedNextHeader);
    param_problem(&mut dp, 4, 64);
    // SL != 0 on a decapsulating behavior: RFC 8986 4.4 S02-S03.
    let f = uplink_frame(S, &[sid(S, END_DX6), sid(D, END)], 1, &inner6);
    expect_drop(&mut dp, UPLINK, &f, DropReason::SegmentsLeftNotZero);
    param_problem(&mut dp, 0, 43);
    // End.DT6 to a VM that is not running here; to an address routed by FIB.
    let mut d = host(D, VmState::Absent);
    let f = uplink_frame(D, &[sid(D, END_DT6)], 0, &inner6);
    expect_drop(&mut d, UPLINK, &f, DropReason::VmNotRunning);
    let f = uplink_frame(
        D,
        &[sid(D, END_DT6)],
        0,
        &udp6_sized(sid(C, 5), a6("2001:db8:5::5"), 80),
    );
    assert_eq!(run(&mut d, UPLINK, &f).0, Verdict::Tx(UPLINK));
}

#[test]
fn end_b6_encaps_pushes_the_policy() {
    let mut dp = host(S, VmState::Running);
    let f = uplink_frame(S, &[sid(S, END_B6), sid(C, END)], 1, &inner());
    let (v, out) = run(&mut dp, UPLINK, &f);
    assert_eq!(v, Verdict::Tx(UPLINK));
    let o = ip6(&out);
    assert_eq!(o.src_addr(), sid(S, 1));
    assert_eq!(o.dst_addr(), sid(D, END));
    let srh = Srh::new_checked(o.payload()).unwrap();
    assert_eq!(srh.segments_left(), 1);
    assert_eq!(srh.segment(0), sid(D, END_DT6));
    assert_eq!(srh.next_header(), srmig_wire::IpProtocol::from(41u8));
    // the inner SR packet was advanced first (S16) and its hop limit decremented (S14)
    let inner = Ipv6Packet::new_checked(srh.payload()).unwrap();
    assert_eq!(inner.dst_addr(), sid(C, END));
    assert_eq!(inner.hop_limit(), 63);
    assert_eq!(o.payload_len() as usize, 40 + (f.len() - 14));
}

#[test]
fn a_segment_list_that_stays_on_this_host_is_cut_after_five_local_sids() {
    // The SID a frame arrives for, then up to four (`MAX_LOCAL_PASSES`) more of this host's
    // SIDs, each reached by looking up the destination the last one wrote: S::End five times,
    // then D::End.DT6, is served.
    let mut dp = host(S, VmState::Running);
    let path = |local: usize| {
        let mut segs = vec![sid(S, END); local];
        segs.push(sid(D, END_DT6));
        uplink_frame(S, &segs, local as u8, &inner())
    };
    let (v, out) = run(&mut dp, UPLINK, &path(5));
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_eq!(ip6(&out).dst_addr(), sid(D, END_DT6));
    // A sixth local SID in a row: dropped, and counted, not processed on and on.
    expect_drop(&mut dp, UPLINK, &path(6), DropReason::LocalSidLoop);
    assert_eq!(dp.counters().drops(DropReason::LocalSidLoop), 1);
}

#[test]
fn two_local_encapsulations_that_outgrow_the_headroom_are_dropped() {
    // S::End.B6.Encaps pushes "via-b6", whose first segment is a second local End.B6.Encaps
    // SID pushing "long" (12 segments): 80 + 240 bytes of headers in one pass, more than a
    // buffer's 256 bytes of headroom.
    let mut dp = host(S, VmState::Running);
    let b6_long = sid(S, 0xb61);
    let b6_via = sid(S, 0xb62);
    dp.install_policy(h_encaps(
        "long",
        (0..12).map(|i| sid(D, 0x100 + i)).collect(),
    ))
    .unwrap();
    dp.install_policy(h_encaps("via-b6", vec![b6_long, sid(D, END)]))
        .unwrap();
    for (at, policy) in [(b6_long, "long"), (b6_via, "via-b6")] {
        dp.install_sid(SidConfig {
            policy: Some(policy.into()),
            ..SidConfig::new(at, Behavior::EndB6Encaps)
        })
        .unwrap();
    }
    let f = uplink_frame(S, &[b6_via, sid(C, END)], 1, &inner());
    expect_drop(&mut dp, UPLINK, &f, DropReason::NoHeadroom);
    // One of them alone fits.
    let f = uplink_frame(S, &[b6_long, sid(C, END)], 1, &inner());
    let (v, out) = run(&mut dp, UPLINK, &f);
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_eq!(ip6(&out).dst_addr(), sid(D, 0x100));
}

#[test]
fn next_c_sid_shifts_then_falls_back_to_the_srh() {
    let mut dp = host(S, VmState::Running);
    // uSID style: block fc00::/32, 16-bit C-SIDs; S's node C-SID is 0001, D's is 0002.
    let mut c = SidConfig::new(a6("fc00:0:1::"), Behavior::End);
    c.flavors = vec![Flavor::NextCSid];
    c.locator_block_len = Some(32);
    c.locator_node_len = Some(16);
    dp.install_sid(c).unwrap();
    // DA fc00:0:1:2:d6:: carries the next C-SIDs 0002, 00d6: shifted to fc00:0:2:d6::
    let outer = ipv6(sid(C, 1), a6("fc00:0:1:2:d6::"), proto::IPV6, 64, &inner());
    let (v, out) = run(
        &mut dp,
        UPLINK,
        &eth(uplink_mac(S), router_mac(S), 0x86dd, &outer),
    );
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_eq!(ip6(&out).dst_addr(), a6("fc00:0:2:d6::"));
    assert_eq!(ip6(&out).hop_limit(), 63);
    // Empty argument: End processing with the SRH.
    let f = uplink_frame(S, &[a6("fc00:0:1::"), sid(D, END_DT6)], 1, &inner());
    let (v, out) = run(&mut dp, UPLINK, &f);
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_eq!(ip6(&out).dst_addr(), sid(D, END_DT6));
    // Empty argument and no SRH: upper-layer processing, not allowed at End.
    let outer = ipv6(sid(C, 1), a6("fc00:0:1::"), proto::IPV6, 64, &inner());
    let f = eth(uplink_mac(S), router_mac(S), 0x86dd, &outer);
    expect_drop(&mut dp, UPLINK, &f, DropReason::UnsupportedNextHeader);
}

#[test]
fn hop_limit_exceeded_sends_time_exceeded() {
    let mut dp = host(S, VmState::Running);
    for hl in [0u8, 1] {
        let mut f = uplink_frame(S, &[sid(S, END), sid(D, END_DT6)], 1, &inner());
        f[14 + 7] = hl;
        expect_drop(&mut dp, UPLINK, &f, DropReason::HopLimitExceeded);
        let g = drain(&mut dp, T0);
        assert_eq!(g.len(), 1);
        let (src, dst, r) = icmp_of(&g[0].1);
        assert_eq!((src, dst), (uplink_address(S), sid(C, 1)));
        match r {
            IcmpRepr::TimeExceeded { code: 0, invoking } => assert_eq!(invoking, &f[14..]),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(dp.counters().icmp().errors_sent, 2);
    // From a VM: the gateway answers.
    let mut f = client_frame(remote(), 100);
    f[14 + 7] = 1;
    expect_drop(&mut dp, CLIENT_PORT, &f, DropReason::HopLimitExceeded);
    let g = drain(&mut dp, T0);
    assert_eq!(g[0].0, CLIENT_PORT);
    assert_eq!(&g[0].1[0..6], &CLIENT_MAC);
    assert_eq!(&g[0].1[6..12], &GATEWAY_MAC);
    assert_eq!(icmp_of(&g[0].1).0, gateway());
}

// ---------------------------------------------------------------------------------------------
// RFC outcomes: decapsulated hop limits, Destination Unreachable, sources, Hop-by-Hop options,
// fragments (docs/conformance.md)
// ---------------------------------------------------------------------------------------------

/// The single generated ICMPv6 error: (egress, frame).
fn one_error(dp: &mut Dataplane) -> (PortId, Vec<u8>) {
    let g = drain(dp, T0);
    assert_eq!(g.len(), 1, "expected one ICMPv6 error");
    g.into_iter().next().unwrap()
}

/// An uplink frame from the underlay router to host S carrying `ip`.
fn from_router(ip: &[u8]) -> Vec<u8> {
    eth(uplink_mac(S), router_mac(S), 0x86dd, ip)
}

/// A frame from the client VM carrying `ip`.
fn from_client(ip: &[u8]) -> Vec<u8> {
    eth(GATEWAY_MAC, CLIENT_MAC, 0x86dd, ip)
}

#[test]
fn decapsulation_forwards_the_inner_packet_with_its_hop_limit() {
    let mut dp = host(S, VmState::Running);
    let inner_src = a6("2001:db8:777::7");
    for func in [END_DX6, END_DT6, END_DT46, END_S, END_SBUF, END_USD] {
        // Hop limit 2: forwarded with 1.
        let mut p = udp6_sized(inner_src, vm1(), 100);
        p[7] = 2;
        let f = uplink_frame(S, &[sid(S, func)], 0, &p);
        let (v, out) = run(&mut dp, UPLINK, &f);
        let want = if func == END_USD { UPLINK } else { VM1_PORT };
        assert_eq!(v, Verdict::Tx(want), "function {func:x}");
        assert_eq!(out[14..], forwarded(&p), "function {func:x}");
        // Hop limit 1 (and 0): Time Exceeded about the inner packet, to its source, through
        // the FIB (the uplink), from the node's source address.
        for hl in [1, 0] {
            p[7] = hl;
            let f = uplink_frame(S, &[sid(S, func)], 0, &p);
            expect_drop(&mut dp, UPLINK, &f, DropReason::HopLimitExceeded);
            let (port, g) = one_error(&mut dp);
            assert_eq!(port, UPLINK);
            assert_eq!(&g[0..12], &[router_mac(S), uplink_mac(S)].concat()[..]);
            let (src, dst, r) = icmp_of(&g);
            assert_eq!(
                (src, dst),
                (uplink_address(S), inner_src),
                "function {func:x}"
            );
            match r {
                IcmpRepr::TimeExceeded { code: 0, invoking } => assert_eq!(invoking, &p[..]),
                other => panic!("{other:?}"),
            }
        }
    }
    // IPv4: TTL decremented (checksum updated); TTL 1 is a counted drop (no ICMPv4 yet).
    for func in [END_DX4, END_DT4, END_DT46] {
        let p = ipv4(Ipv4Addr::new(10, 7, 7, 7), VM1_V4, 17, 2, &[0u8; 60]);
        let (v, out) = run(&mut dp, UPLINK, &uplink_frame(S, &[sid(S, func)], 0, &p));
        assert_eq!(v, Verdict::Tx(VM1_PORT));
        assert_eq!(out[14..], forwarded(&p));
        assert_eq!(out[14 + 8], 1);
        let p = ipv4(Ipv4Addr::new(10, 7, 7, 7), VM1_V4, 17, 1, &[0u8; 60]);
        let f = uplink_frame(S, &[sid(S, func)], 0, &p);
        expect_drop(&mut dp, UPLINK, &f, DropReason::Ipv4TtlExceeded);
    }
    assert!(drain(&mut dp, T0).is_empty());
    // An inner packet with a source that may not be forwarded: dropped, never answered.
    for (bad, reason) in [
        ("fe80::7", DropReason::LinkLocalSource),
        ("::1", DropReason::InvalidSourceAddress),
        ("ff02::1", DropReason::InvalidSourceAddress),
    ] {
        let p = udp6_sized(a6(bad), vm1(), 100);
        let f = uplink_frame(S, &[sid(S, END_DT6)], 0, &p);
        expect_drop(&mut dp, UPLINK, &f, reason);
    }
    assert!(drain(&mut dp, T0).is_empty());
}

#[test]
fn no_route_and_unknown_function_are_destination_unreachable() {
    let mut dp = host(S, VmState::Running);
    // End.T into table 10 (fc00::/16 only): the next segment has no route. The error quotes
    // the packet as this node left it (SL 0, DA the next segment, hop limit 63).
    let f = uplink_frame(S, &[sid(S, END_T), a6("2001:db8:5::1")], 1, &inner());
    expect_drop(&mut dp, UPLINK, &f, DropReason::NoRoute);
    let (port, g) = one_error(&mut dp);
    assert_eq!(port, UPLINK);
    assert_eq!(&g[0..6], &router_mac(S));
    let (src, dst, r) = icmp_of(&g);
    assert_eq!((src, dst), (uplink_address(S), sid(C, 1)));
    let mut want = f[14..].to_vec();
    want[7] = 63;
    want[40 + 3] = 0;
    want[24..40].copy_from_slice(&a6("2001:db8:5::1").octets());
    match r {
        IcmpRepr::DstUnreachable { code: 0, invoking } => assert_eq!(invoking, &want[..]),
        other => panic!("{other:?}"),
    }
    // An address inside the locator that is no SID: no entry for it here, code 0.
    let p = udp6_sized(sid(C, 1), sid(S, 0x99), 80);
    expect_drop(&mut dp, UPLINK, &from_router(&p), DropReason::NoSid);
    let (_, g) = one_error(&mut dp);
    let (src, dst, r) = icmp_of(&g);
    assert_eq!((src, dst), (uplink_address(S), sid(C, 1)));
    match r {
        IcmpRepr::DstUnreachable { code: 0, invoking } => assert_eq!(invoking, &p[..]),
        other => panic!("{other:?}"),
    }
    // The same from a VM: the gateway answers on the VM's port.
    let f = client_frame(sid(S, 0x99), 80);
    expect_drop(&mut dp, CLIENT_PORT, &f, DropReason::NoSid);
    let (port, g) = one_error(&mut dp);
    assert_eq!(port, CLIENT_PORT);
    assert_eq!(&g[0..12], &[CLIENT_MAC, GATEWAY_MAC].concat()[..]);
    let (src, dst, r) = icmp_of(&g);
    assert_eq!((src, dst), (gateway(), client()));
    match r {
        IcmpRepr::DstUnreachable { code: 0, invoking } => {
            assert_eq!(invoking, &forwarded(&f[14..])[..])
        }
        other => panic!("{other:?}"),
    }
    // Without a default route, transit traffic has no route either.
    let mut c = host_config(S, VmState::Running);
    c.routes
        .retain(|r| r.table != 0 || r.prefix.to_string() != "::/0");
    let mut dp = Dataplane::new(c).unwrap();
    let p = udp6_sized(sid(C, 1), a6("2001:db8:5::5"), 80);
    expect_drop(&mut dp, UPLINK, &from_router(&p), DropReason::NoRoute);
    let (_, g) = one_error(&mut dp);
    match icmp_of(&g).2 {
        IcmpRepr::DstUnreachable { code: 0, invoking } => assert_eq!(invoking, &forwarded(&p)[..]),
        other => panic!("{other:?}"),
    }
    // A VM's packet this node encapsulated and then cannot route: no error to itself.
    let f = client_frame(remote(), 100);
    expect_drop(&mut dp, CLIENT_PORT, &f, DropReason::NoRoute);
    assert!(drain(&mut dp, T0).is_empty());
}

#[test]
fn sources_that_may_not_leave_their_link() {
    let mut dp = host(S, VmState::Running);
    // Link-local source from the uplink, to be forwarded or delivered to a VM: Destination
    // Unreachable code 2 (beyond scope of source address) back on the link.
    for dst in [a6("2001:db8:5::5"), vm1()] {
        let p = udp6_sized(a6("fe80::99"), dst, 80);
        expect_drop(
            &mut dp,
            UPLINK,
            &from_router(&p),
            DropReason::LinkLocalSource,
        );
        let (port, g) = one_error(&mut dp);
        assert_eq!(port, UPLINK);
        assert_eq!(&g[0..6], &router_mac(S));
        let (src, dst, r) = icmp_of(&g);
        assert_eq!((src, dst), (uplink_address(S), a6("fe80::99")));
        match r {
            IcmpRepr::DstUnreachable { code: 2, invoking } => assert_eq!(invoking, &p[..]),
            other => panic!("{other:?}"),
        }
    }
    // From a VM: the gateway says so on the VM's port.
    let p = udp6_sized(a6("fe80::30"), remote(), 80);
    expect_drop(
        &mut dp,
        CLIENT_PORT,
        &from_client(&p),
        DropReason::LinkLocalSource,
    );
    let (port, g) = one_error(&mut dp);
    assert_eq!(port, CLIENT_PORT);
    let (src, dst, r) = icmp_of(&g);
    assert_eq!((src, dst), (gateway(), a6("fe80::30")));
    assert!(matches!(r, IcmpRepr::DstUnreachable { code: 2, .. }));
    // Multicast, loopback, unspecified: never a source; dropped without an answer.
    for bad in ["ff02::1", "ff0e::5", "::1", "::"] {
        let p = udp6_sized(a6(bad), a6("2001:db8:5::5"), 80);
        expect_drop(
            &mut dp,
            UPLINK,
            &from_router(&p),
            DropReason::InvalidSourceAddress,
        );
        let p = udp6_sized(a6(bad), remote(), 80);
        expect_drop(
            &mut dp,
            CLIENT_PORT,
            &from_client(&p),
            DropReason::InvalidSourceAddress,
        );
    }
    assert!(drain(&mut dp, T0).is_empty());
    // Neighbour discovery from a link-local source still works (answered, not forwarded).
    let ns = neighbor_solicitation(a6("fe80::30"), CLIENT_MAC, gateway());
    let (v, _) = run(&mut dp, CLIENT_PORT, &from_client(&ns));
    assert_eq!(v, Verdict::Consumed);
}

#[test]
fn multicast_next_segment_is_a_parameter_problem() {
    let mut dp = host(S, VmState::Running);
    // SL 1 -> 0: the next segment is Segment List[0], at 40 + 8.
    let f = uplink_frame(S, &[sid(S, END), a6("ff0e::1")], 1, &inner());
    expect_drop(&mut dp, UPLINK, &f, DropReason::MulticastSegment);
    param_problem(&mut dp, 0, 48);
    // SL 2 -> 1: Segment List[1], at 40 + 8 + 16; the quoted packet is the one received.
    let f = uplink_frame(
        S,
        &[sid(S, END_X), a6("ff02::2"), sid(D, END_DT6)],
        2,
        &inner(),
    );
    expect_drop(&mut dp, UPLINK, &f, DropReason::MulticastSegment);
    let (_, g) = one_error(&mut dp);
    match icmp_of(&g).2 {
        IcmpRepr::ParamProblem {
            code: 0,
            pointer: 64,
            invoking,
        } => assert_eq!(invoking, &f[14..]),
        other => panic!("{other:?}"),
    }
}

/// A Hop-by-Hop header (8 bytes, Next Header UDP) with one option of type `ty` at offset 2
/// and 4 bytes of data.
fn hbh(ty: u8) -> Vec<u8> {
    vec![17, 0, ty, 4, 0, 0, 0, 0]
}

#[test]
fn hop_by_hop_options_follow_their_action_bits() {
    let mut dp = host(S, VmState::Running);
    let transit = |h: &[u8]| {
        let mut payload = h.to_vec();
        payload.extend_from_slice(&[0u8; 16]);
        ipv6(sid(C, 1), a6("2001:db8:5::5"), 0, 64, &payload)
    };
    // Known (Router Alert) and unknown-skip (00) options: forwarded.
    for ty in [5u8, 0x1e] {
        let p = transit(&hbh(ty));
        let (v, out) = run(&mut dp, UPLINK, &from_router(&p));
        assert_eq!(v, Verdict::Tx(UPLINK), "type {ty:#x}");
        assert_eq!(out[14..], forwarded(&p));
    }
    // 01: discarded silently.
    expect_drop(
        &mut dp,
        UPLINK,
        &from_router(&transit(&hbh(0x5e))),
        DropReason::UnknownOption,
    );
    assert!(drain(&mut dp, T0).is_empty());
    // 10 and 11 (unicast destination): Parameter Problem code 2 at the Option Type (42).
    for ty in [0x9e, 0xde] {
        let p = transit(&hbh(ty));
        expect_drop(&mut dp, UPLINK, &from_router(&p), DropReason::UnknownOption);
        let (_, g) = one_error(&mut dp);
        let (src, dst, r) = icmp_of(&g);
        assert_eq!((src, dst), (uplink_address(S), sid(C, 1)));
        match r {
            IcmpRepr::ParamProblem {
                code: 2,
                pointer: 42,
                invoking,
            } => assert_eq!(invoking, &p[..]),
            other => panic!("{other:?}"),
        }
    }
    // An option running past its header: code 0 at the bad Opt Data Len byte (40 + 7).
    let p = transit(&[17, 0, 1, 2, 0, 0, 0x1e, 9]);
    expect_drop(&mut dp, UPLINK, &from_router(&p), DropReason::OptionOverrun);
    param_problem(&mut dp, 0, 47);
    // A header running past the packet: a counted drop.
    let p = ipv6(
        sid(C, 1),
        a6("2001:db8:5::5"),
        0,
        64,
        &[17, 3, 1, 4, 0, 0, 0, 0],
    );
    expect_drop(
        &mut dp,
        UPLINK,
        &from_router(&p),
        DropReason::HdrExtLenBeyondPacket,
    );
    // SRv6 to a local SID with a Hop-by-Hop header: processed before the SID.
    let mut payload = vec![43, 0, 0x9e, 4, 0, 0, 0, 0];
    let mut sr = srh(41, 1, &[sid(S, END), sid(D, END_DT6)], &[]);
    sr.extend_from_slice(&inner());
    payload.extend_from_slice(&sr);
    let p = ipv6(sid(C, 1), sid(S, END), 0, 64, &payload);
    expect_drop(&mut dp, UPLINK, &from_router(&p), DropReason::UnknownOption);
    param_problem(&mut dp, 2, 42);
    // From a VM: the gateway answers.
    let mut payload = hbh(0x9e);
    payload.extend_from_slice(&[0u8; 16]);
    let p = ipv6(client(), remote(), 0, 64, &payload);
    expect_drop(
        &mut dp,
        CLIENT_PORT,
        &from_client(&p),
        DropReason::UnknownOption,
    );
    let (port, g) = one_error(&mut dp);
    assert_eq!(port, CLIENT_PORT);
    assert_eq!(icmp_of(&g).0, gateway());
}

#[test]
fn non_first_fragment_at_a_sid_is_discarded_without_a_pointer_into_its_data() {
    let mut dp = host(S, VmState::Running);
    // SRH (Next Header Fragment) -> Fragment (offset `off` units, M=1, next `nh`) -> data.
    let fragmented = |segs: &[Ipv6Addr], sl: u8, nh: u8, off: u16| {
        let mut payload = srh(44, sl, segs, &[]);
        payload.extend_from_slice(&[nh, 0]);
        payload.extend_from_slice(&((off << 3) | 1).to_be_bytes());
        payload.extend_from_slice(&[0, 0, 0, 7]);
        payload.extend_from_slice(&inner()[..48]);
        let active = segs[segs.len() - 1 - usize::from(sl)];
        from_router(&ipv6(sid(C, 1), active, 43, 64, &payload))
    };
    for (func, nh) in [
        (END, 17),
        (END_DT6, 41),
        (END_DX6, 41),
        (END_S, 41),
        (END_SBUF, 41),
    ] {
        let f = fragmented(&[sid(S, func)], 0, nh, 5);
        expect_drop(&mut dp, UPLINK, &f, DropReason::NonFirstFragment);
    }
    assert!(
        drain(&mut dp, T0).is_empty(),
        "no error about fragment data"
    );
    // The first fragment has its upper-layer header: End at SL 0 points at it (40+24+8).
    let f = fragmented(&[sid(S, END)], 0, 17, 0);
    expect_drop(&mut dp, UPLINK, &f, DropReason::UnsupportedNextHeader);
    param_problem(&mut dp, 4, 72);
    // With segments left, End only needs the SRH (before the Fragment header): forwarded.
    let f = fragmented(&[sid(S, END), sid(D, END_DT6)], 1, 41, 5);
    assert_eq!(run(&mut dp, UPLINK, &f).0, Verdict::Tx(UPLINK));
}

// ---------------------------------------------------------------------------------------------
// Port MTU and Packet Too Big (RFC 4443 3.2, RFC 8200 section 5)
// ---------------------------------------------------------------------------------------------

/// The single generated Packet Too Big: (egress, frame, ip src, ip dst, mtu, invoking).
fn one_ptb(dp: &mut Dataplane) -> (PortId, Vec<u8>) {
    let g = drain(dp, T0);
    assert_eq!(g.len(), 1, "expected one Packet Too Big");
    let f = &g[0].1;
    // Type 2 code 0, checksum valid (parse_verified), whole error within 1280 bytes.
    assert_eq!(f[54..56], [2, 0]);
    assert!(f.len() - 14 <= 1280);
    match icmp_of(f).2 {
        IcmpRepr::PacketTooBig { .. } => {}
        other => panic!("expected Packet Too Big, got {other:?}"),
    }
    g.into_iter().next().unwrap()
}

fn ptb_fields(f: &[u8]) -> (Ipv6Addr, Ipv6Addr, u32, Vec<u8>) {
    let (src, dst, r) = icmp_of(f);
    match r {
        IcmpRepr::PacketTooBig { mtu, invoking } => (src, dst, mtu, invoking.to_vec()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn port_mtu_is_validated_and_settable() {
    let mut cfg = host_config(S, VmState::Running);
    cfg.ports[1].mtu = Some(1279);
    assert_eq!(
        Dataplane::new(cfg.clone()).unwrap_err().path(),
        "ports[1].mtu"
    );
    cfg.ports[1].mtu = Some(9217);
    assert_eq!(
        Dataplane::new(cfg.clone()).unwrap_err().path(),
        "ports[1].mtu"
    );
    cfg.ports[1].mtu = Some(9216);
    let mut dp = Dataplane::new(cfg).unwrap();
    assert_eq!(dp.port_mtu(VM1_PORT), Some(9216));
    assert_eq!(dp.port_mtu(UPLINK), None);
    assert!(dp.set_port_mtu(UPLINK, Some(1000)).is_err());
    assert!(dp.set_port_mtu(PortId(9), Some(1500)).is_err());
    dp.set_port_mtu(UPLINK, Some(1500)).unwrap();
    assert_eq!(dp.port_mtu(UPLINK), Some(1500));
    dp.set_port_mtu(UPLINK, None).unwrap();
    assert_eq!(dp.port_mtu(UPLINK), None);
    let t: PortConfig =
        toml::from_str("name = \"tap0\"\nkind = \"vm\"\nmac = \"02:00:00:00:00:01\"\nmtu = 9000")
            .unwrap();
    assert_eq!(t.mtu, Some(9000));
}

#[test]
fn jumbo_frames_cross_every_port_kind() {
    let mut s = host(S, VmState::Running);
    // 9216-byte IP packets: from a VM, encapsulated (+80), to the uplink; decapsulated to a VM.
    let (v, out) = run(&mut s, CLIENT_PORT, &client_frame(remote(), 9216));
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_eq!(out.len(), 14 + 9216 + 80);
    let big = udp6_sized(a6("2001:db8:777::7"), vm1(), 9216);
    let (v, out) = run(
        &mut s,
        UPLINK,
        &uplink_frame(S, &[sid(S, END_DT6)], 0, &big),
    );
    assert_eq!(v, Verdict::Tx(VM1_PORT));
    assert_eq!(out[14..], forwarded(&big));
    // An encapsulated jumbo arriving from the fabric fits the buffer too.
    let f = uplink_frame(S, &[sid(S, END), sid(D, END_DT6)], 1, &big);
    assert!(f.len() <= BUF_CAPACITY);
    assert_eq!(run(&mut s, UPLINK, &f).0, Verdict::Tx(UPLINK));
    // Beyond the buffer: the driver cannot receive it, and counts it.
    let mut b = Batch::new(1);
    assert!(b.push(UPLINK, &vec![0; BUF_CAPACITY + 1]).is_err());
    assert_eq!(
        s.drop_frame_too_large(UPLINK, BUF_CAPACITY + 1),
        Verdict::Drop(DropReason::FrameTooLarge)
    );
    assert_eq!(s.counters().drops(DropReason::FrameTooLarge), 1);
}

#[test]
fn transit_end_too_big_answers_the_source_with_the_egress_mtu() {
    let mut s = host(S, VmState::Running);
    s.set_port_mtu(UPLINK, Some(1400)).unwrap();
    let f = uplink_frame(
        S,
        &[sid(S, END), sid(D, END_DT6)],
        1,
        &udp6_sized(client(), remote(), 1400),
    );
    expect_drop(&mut s, UPLINK, &f, DropReason::PacketTooBig);
    let (port, g) = one_ptb(&mut s);
    assert_eq!(port, UPLINK);
    assert_eq!(&g[0..6], &router_mac(S));
    assert_eq!(&g[6..12], &uplink_mac(S));
    let (src, dst, mtu, inv) = ptb_fields(&g);
    assert_eq!((src, dst, mtu), (uplink_address(S), sid(C, 1), 1400));
    // The invoking packet is the start of the offending one (as forwarded: next segment).
    assert_eq!(inv.len(), 1280 - 48);
    assert_eq!(
        Ipv6Packet::new_unchecked(&inv[..]).dst_addr(),
        sid(D, END_DT6)
    );
    assert_eq!(&inv[100..], &f[14 + 100..14 + 1232]);
    assert_eq!(s.counters().icmp().packet_too_big_sent, 1);
    // Exactly the MTU is fine.
    let f = uplink_frame(
        S,
        &[sid(S, END), sid(D, END_DT6)],
        1,
        &udp6_sized(client(), remote(), 1400 - 80),
    );
    assert_eq!(run(&mut s, UPLINK, &f).0, Verdict::Tx(UPLINK));
    // End.X too.
    let f = uplink_frame(
        S,
        &[sid(S, END_X), sid(D, END_DT6)],
        1,
        &udp6_sized(client(), remote(), 1400),
    );
    expect_drop(&mut s, UPLINK, &f, DropReason::PacketTooBig);
    assert_eq!(ptb_fields(&one_ptb(&mut s).1).2, 1400);
}

#[test]
fn h_encaps_too_big_answers_the_vm_with_the_mtu_minus_the_encapsulation() {
    let mut s = host(S, VmState::Running);
    s.set_port_mtu(UPLINK, Some(1400)).unwrap();
    let f = client_frame(remote(), 1400);
    expect_drop(&mut s, CLIENT_PORT, &f, DropReason::PacketTooBig);
    let (port, g) = one_ptb(&mut s);
    // To the VM (not the tunnel source), from the gateway, on its port.
    assert_eq!(port, CLIENT_PORT);
    assert_eq!(&g[0..6], &CLIENT_MAC);
    assert_eq!(&g[6..12], &GATEWAY_MAC);
    let (src, dst, mtu, inv) = ptb_fields(&g);
    assert_eq!((src, dst), (gateway(), client()));
    assert_eq!(mtu, 1400 - 40 - 8 - 32);
    // The packet the VM sent (the gateway decremented its hop limit), truncated to fit.
    let mut sent = f[14..14 + inv.len()].to_vec();
    sent[7] -= 1;
    assert_eq!(inv, sent);
    // H.Encaps.Red: one segment less.
    let red = s.policy_id("to-d-red").unwrap();
    s.set_mapping(
        "2001:db8:900::90/128".parse().unwrap(),
        Steering::Policy(red),
    )
    .unwrap();
    expect_drop(&mut s, CLIENT_PORT, &f, DropReason::PacketTooBig);
    assert_eq!(ptb_fields(&one_ptb(&mut s).1).2, 1400 - 40 - 8 - 16);
}

#[test]
fn h_insert_too_big_returns_the_packet_the_vm_sent() {
    let mut s = host(S, VmState::Running);
    s.set_port_mtu(UPLINK, Some(1400)).unwrap();
    let ins = s.policy_id("to-d-insert").unwrap();
    s.set_mapping(
        "2001:db8:900::90/128".parse().unwrap(),
        Steering::Policy(ins),
    )
    .unwrap();
    let f = client_frame(remote(), 1380);
    expect_drop(&mut s, CLIENT_PORT, &f, DropReason::PacketTooBig);
    let (port, g) = one_ptb(&mut s);
    assert_eq!(port, CLIENT_PORT);
    let (src, dst, mtu, inv) = ptb_fields(&g);
    assert_eq!((src, dst, mtu), (gateway(), client(), 1400 - 56));
    let mut sent = f[14..14 + inv.len()].to_vec();
    sent[7] -= 1;
    assert_eq!(
        inv, sent,
        "SRH removed, original destination and next header back"
    );
}

#[test]
fn decapsulated_packet_too_big_answers_the_inner_source() {
    let mut s = host(S, VmState::Running);
    s.set_port_mtu(VM1_PORT, Some(1280)).unwrap();
    let inner_src = a6("2001:db8:777::7");
    let big = udp6_sized(inner_src, vm1(), 1300);
    for func in [END_DT6, END_DX6] {
        let f = uplink_frame(S, &[sid(S, func)], 0, &big);
        expect_drop(&mut s, UPLINK, &f, DropReason::PacketTooBig);
        let (port, g) = one_ptb(&mut s);
        // The inner source is reached through the FIB: the uplink, from the node address.
        assert_eq!(port, UPLINK);
        let (src, dst, mtu, inv) = ptb_fields(&g);
        assert_eq!((src, dst, mtu), (uplink_address(S), inner_src, 1280));
        // Quoted as forwarded (hop limit decremented at decapsulation).
        assert_eq!(inv[..], forwarded(&big)[..inv.len()]);
    }
    let ok = udp6_sized(inner_src, vm1(), 1280);
    let f = uplink_frame(S, &[sid(S, END_DT6)], 0, &ok);
    assert_eq!(run(&mut s, UPLINK, &f).0, Verdict::Tx(VM1_PORT));
}

#[test]
fn packet_too_big_is_never_about_an_error_and_is_rate_limited() {
    let mut s = host(S, VmState::Running);
    s.set_port_mtu(UPLINK, Some(1280)).unwrap();
    // An ICMPv6 error (type 1) that does not fit: dropped, not answered.
    let mut icmp = vec![1u8, 0, 0, 0, 0, 0, 0, 0];
    icmp.resize(1300, 0);
    let err = ipv6(client(), remote(), proto::ICMPV6, 64, &icmp);
    let f = eth(GATEWAY_MAC, CLIENT_MAC, 0x86dd, &err);
    expect_drop(&mut s, CLIENT_PORT, &f, DropReason::PacketTooBig);
    assert!(drain(&mut s, T0).is_empty());
    assert_eq!(s.counters().icmp().suppressed, 1);
    // IPv4 from a VM with DF: dropped under the same reason, ICMPv4 fragmentation needed
    // (see `icmpv4_errors_time_exceeded_unreachable_and_fragmentation_needed`), one token.
    let p = ipv4(CLIENT_V4, REMOTE_V4, 17, 64, &[7u8; 1300]);
    expect_drop(
        &mut s,
        CLIENT_PORT,
        &eth(GATEWAY_MAC, CLIENT_MAC, 0x0800, &p),
        DropReason::PacketTooBig,
    );
    assert_eq!(drain(&mut s, T0).len(), 1);
    // The limiter (burst 100 in the canonical config) bounds the answers: 99 tokens left.
    let f = client_frame(remote(), 1300);
    for _ in 0..150 {
        run(&mut s, CLIENT_PORT, &f);
    }
    assert_eq!(
        drain(&mut s, T0).len() as u64 + s.counters().icmp().queue_full,
        99
    );
    assert_eq!(s.counters().icmp().rate_limited, 51);
}

/// Host D with VM port MTU 1280: UDP packets of these IPv6 lengths from an outside source are
/// held by End.SBUF for the absent vm1, which then runs; returns the host and what draining
/// sends.
fn held_behind_mtu_1280_then_released(lens: &[usize]) -> (Dataplane, Vec<(PortId, Vec<u8>)>) {
    let mut d = host(D, VmState::Absent);
    let vm = d.vm_id("vm1").unwrap();
    d.set_port_mtu(VM1_PORT, Some(1280)).unwrap();
    let inner_src = a6("2001:db8:777::7");
    for &len in lens {
        let f = uplink_frame(
            D,
            &[sid(D, END_SBUF)],
            0,
            &udp6_sized(inner_src, vm1(), len),
        );
        assert_eq!(run(&mut d, UPLINK, &f).0, Verdict::Held(vm));
    }
    d.handle_vm_state(T0, vm, VmState::Running).unwrap();
    let g = drain(&mut d, T0);
    (d, g)
}

#[test]
fn held_packets_are_checked_against_the_vm_port_mtu_at_release() {
    let (d, g) = held_behind_mtu_1280_then_released(&[1280, 1281, 9000]);
    // The 1280-byte packet is released; the two others become Packet Too Big to their source.
    let released: Vec<_> = g.iter().filter(|(p, _)| *p == VM1_PORT).collect();
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].1.len(), 14 + 1280);
    assert_eq!(d.counters().drops(DropReason::PacketTooBig), 2);
    assert_eq!(d.counters().icmp().packet_too_big_sent, 2);
}

#[test]
fn a_release_of_only_too_big_packets_still_sends_their_errors() {
    // Found by the dataplane_ops fuzz target: poll_transmit answered None while the Packet Too
    // Big of the last held packet waited in the generated queue.
    let (d, g) = held_behind_mtu_1280_then_released(&[1281, 9000]);
    assert!(
        !d.has_pending_transmit(),
        "poll_transmit said None with errors pending"
    );
    assert_eq!(g.iter().filter(|(p, _)| *p == VM1_PORT).count(), 0);
    assert_eq!(d.counters().drops(DropReason::PacketTooBig), 2);
    assert_eq!(
        g.len() as u64,
        d.counters().icmp().packet_too_big_sent,
        "every error counted as sent went out"
    );
    assert!(!g.is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn sizes_around_the_mtu_are_forwarded_or_answered(mtu in 1280u16..=9216, delta in -64i32..64, encap in any::<bool>()) {
        let mut s = host(S, VmState::Running);
        s.set_port_mtu(UPLINK, Some(mtu)).unwrap();
        let (port, f, added, ptb_port) = if encap {
            // H.Encaps adds 80 bytes.
            let len = (i32::from(mtu) - 80 + delta).max(48) as usize;
            (CLIENT_PORT, client_frame(remote(), len), 80, CLIENT_PORT)
        } else {
            let len = (i32::from(mtu) - 80 + delta).max(48) as usize;
            (UPLINK, uplink_frame(S, &[sid(S, END), sid(D, END_DT6)], 1, &udp6_sized(client(), remote(), len)), 0, UPLINK)
        };
        let out_len = f.len() - 14 + added;
        let (v, _) = run(&mut s, port, &f);
        let g = drain(&mut s, T0);
        if out_len <= usize::from(mtu) {
            prop_assert_eq!(v, Verdict::Tx(UPLINK));
            prop_assert!(g.is_empty());
        } else {
            prop_assert_eq!(v, Verdict::Drop(DropReason::PacketTooBig));
            prop_assert_eq!(g.len(), 1);
            prop_assert_eq!(g[0].0, ptb_port);
            let (_, _, m, _) = ptb_fields(&g[0].1);
            prop_assert_eq!(m, (u32::from(mtu) - added as u32).max(1280));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// End.S and End.SBUF
// ---------------------------------------------------------------------------------------------

fn paper_frame(h: u16, sl: u8, inner: &[u8]) -> Vec<u8> {
    uplink_frame(h, &[sid(S, END_S), sid(D, END_SBUF)], sl, inner)
}

#[test]
fn end_s_delivers_forwards_or_drops() {
    let mut s = host(S, VmState::Running);
    let vm = s.vm_id("vm1").unwrap();
    let inner = inner();
    let (v, out) = run(&mut s, UPLINK, &paper_frame(S, 1, &inner));
    assert_eq!(v, Verdict::Tx(VM1_PORT));
    assert_eq!(out[14..], forwarded(&inner));
    assert_eq!(&out[0..6], &VM1_MAC);
    // Paused (stop-and-copy): act as End towards D::End.SBUF.
    s.handle_vm_state(T0, vm, VmState::Paused).unwrap();
    let (v, out) = run(&mut s, UPLINK, &paper_frame(S, 1, &inner));
    assert_eq!(v, Verdict::Tx(UPLINK));
    let o = ip6(&out);
    assert_eq!(o.dst_addr(), sid(D, END_SBUF));
    assert_eq!(Srh::new_checked(o.payload()).unwrap().segments_left(), 0);
    // Cancelled migration: running again, delivered again.
    s.handle_vm_state(T0, vm, VmState::Running).unwrap();
    assert_eq!(
        run(&mut s, UPLINK, &paper_frame(S, 1, &inner)).0,
        Verdict::Tx(VM1_PORT)
    );
    // Last segment and not here.
    s.handle_vm_state(T0, vm, VmState::Absent).unwrap();
    let f = uplink_frame(S, &[sid(S, END_S)], 0, &inner);
    expect_drop(&mut s, UPLINK, &f, DropReason::VmNotRunning);
    // Unknown inner destination at the last segment.
    let f = uplink_frame(
        S,
        &[sid(S, END_S)],
        0,
        &udp6_sized(sid(C, 1), a6("2001:db8:5::5"), 80),
    );
    expect_drop(&mut s, UPLINK, &f, DropReason::UnknownVm);
    assert_eq!(s.counters().vm(vm).dropped, 1);
}

#[test]
fn end_sbuf_holds_until_resume_and_releases_in_order() {
    let mut d = host(D, VmState::Absent);
    let vm = d.vm_id("vm1").unwrap();
    let pkts: Vec<Vec<u8>> = (0..5)
        .map(|i| udp6_sized(sid(C, 1), vm1(), 80 + i))
        .collect();
    for p in &pkts {
        assert_eq!(
            run(&mut d, UPLINK, &paper_frame(D, 0, p)).0,
            Verdict::Held(vm)
        );
    }
    assert_eq!(d.counters().buffer_occupancy(vm).packets, 5);
    assert_eq!(d.counters().vm(vm).held, 5);
    assert!(
        drain(&mut d, T0).is_empty(),
        "nothing released while absent"
    );
    // Paused at D (arrived, not yet resumed): still held.
    d.handle_vm_state(T0, vm, VmState::Paused).unwrap();
    assert_eq!(
        run(&mut d, UPLINK, &paper_frame(D, 0, &pkts[0])).0,
        Verdict::Held(vm)
    );
    d.handle_vm_state(T0, vm, VmState::Running).unwrap();
    // A packet arriving before the release is drained goes behind the held ones.
    let late = udp6_sized(sid(C, 1), vm1(), 200);
    assert_eq!(
        run(&mut d, UPLINK, &paper_frame(D, 0, &late)).0,
        Verdict::Held(vm)
    );
    let out = drain(&mut d, T0);
    let got: Vec<&[u8]> = out.iter().map(|(_, f)| &f[14..]).collect();
    let mut want: Vec<Vec<u8>> = pkts.iter().map(|p| forwarded(p)).collect();
    want.push(forwarded(&pkts[0]));
    want.push(forwarded(&late));
    assert_eq!(got, want, "released in arrival order, late packet last");
    for (port, f) in &out {
        assert_eq!(*port, VM1_PORT);
        assert_eq!(&f[0..6], &VM1_MAC);
        assert_eq!(&f[6..12], &GATEWAY_MAC);
    }
    assert_eq!(d.counters().vm(vm).released, 7);
    assert_eq!(d.counters().buffer_total(), Occupancy::default());
    // Buffer empty: direct delivery again.
    assert_eq!(
        run(&mut d, UPLINK, &paper_frame(D, 0, &late)).0,
        Verdict::Tx(VM1_PORT)
    );
}

/// A clone is an independent engine in the same state: what it holds and releases does not
/// touch the original, and both release the same packets the same way.
#[test]
fn a_clone_is_an_independent_copy() {
    let mut d = host(D, VmState::Absent);
    let vm = d.vm_id("vm1").unwrap();
    let held = udp6_sized(sid(C, 1), vm1(), 90);
    assert_eq!(
        run(&mut d, UPLINK, &paper_frame(D, 0, &held)).0,
        Verdict::Held(vm)
    );
    let mut c = d.clone();
    let late = udp6_sized(sid(C, 1), vm1(), 120);
    assert_eq!(
        run(&mut c, UPLINK, &paper_frame(D, 0, &late)).0,
        Verdict::Held(vm)
    );
    assert_eq!(c.counters().buffer_occupancy(vm).packets, 2);
    assert_eq!(d.counters().buffer_occupancy(vm).packets, 1);
    for e in [&mut d, &mut c] {
        e.handle_vm_state(T0, vm, VmState::Running).unwrap();
    }
    let (from_d, from_c) = (drain(&mut d, T0), drain(&mut c, T0));
    assert_eq!(from_d, vec![(VM1_PORT, from_c[0].1.clone())]);
    assert_eq!(from_c.len(), 2);
    assert_eq!(&from_c[1].1[14..], &forwarded(&late)[..]);
}

/// One observation per resume with packets held: how long the oldest had waited when the
/// release started (not the later arrivals, not a resume with nothing held).
#[test]
fn a_release_observes_how_long_its_oldest_packet_was_held() {
    let mut d = host(D, VmState::Absent);
    let vm = d.vm_id("vm1").unwrap();
    let ms = |n: u64| Instant(T0.0 + n * 1_000_000);
    for (i, at) in [0, 50, 170].into_iter().enumerate() {
        let p = udp6_sized(sid(C, 1), vm1(), 80 + i);
        assert_eq!(
            run_at(&mut d, ms(at), UPLINK, &paper_frame(D, 0, &p)).0,
            Verdict::Held(vm)
        );
    }
    assert_eq!(d.counters().holds().count, 0, "nothing released yet");
    d.handle_vm_state(ms(180), vm, VmState::Running).unwrap();
    let mut out = PacketBuf::new();
    assert!(
        d.poll_transmit(ms(181), &mut out).is_some(),
        "the first release"
    );
    // Told again in the middle of the release (a link event, then the hypervisor's
    // report): still one release, one observation.
    d.handle_vm_state(ms(181), vm, VmState::Running).unwrap();
    assert_eq!(drain(&mut d, ms(182)).len(), 2);
    let h = d.counters().holds();
    assert_eq!(h.count, 1);
    assert_eq!(
        h.sum_ns, 181_000_000,
        "the oldest packet, held from 0 to 181 ms"
    );
    let bucket = crate::HOLD_BUCKETS_S
        .iter()
        .position(|b| *b >= 0.181)
        .unwrap();
    assert_eq!(h.buckets[bucket], 1);
    assert_eq!(h.buckets.iter().sum::<u64>(), 1);
    // Paused and resumed with nothing held: no observation.
    d.handle_vm_state(ms(300), vm, VmState::Paused).unwrap();
    d.handle_vm_state(ms(310), vm, VmState::Running).unwrap();
    assert!(drain(&mut d, ms(311)).is_empty());
    assert_eq!(d.counters().holds().count, 1);
    // Resumed with packets held that are then discarded: nothing released, no observation,
    // and none later for a packet held while the VM runs.
    d.handle_vm_state(ms(400), vm, VmState::Absent).unwrap();
    let p = udp6_sized(sid(C, 1), vm1(), 90);
    assert_eq!(
        run_at(&mut d, ms(400), UPLINK, &paper_frame(D, 0, &p)).0,
        Verdict::Held(vm)
    );
    d.handle_vm_state(ms(450), vm, VmState::Running).unwrap();
    assert_eq!(d.discard_buffer(vm), 1);
    assert!(drain(&mut d, ms(451)).is_empty());
    d.handle_vm_state(ms(460), vm, VmState::Running).unwrap();
    assert_eq!(d.counters().holds().count, 1);
}

#[test]
fn end_sbuf_releases_ipv4_and_jumbo_packets_with_their_ethertype() {
    let mut d = host(D, VmState::Absent);
    let vm = d.vm_id("vm1").unwrap();
    let v4 = ipv4(Ipv4Addr::new(10, 7, 7, 7), VM1_V4, 17, 64, &[4u8; 60]);
    let jumbo = udp6_sized(sid(C, 1), vm1(), 9000);
    let v6 = udp6_sized(sid(C, 1), vm1(), 100);
    for p in [&v4, &jumbo, &v6] {
        assert_eq!(
            run(&mut d, UPLINK, &paper_frame(D, 0, p)).0,
            Verdict::Held(vm)
        );
    }
    d.handle_vm_state(T0, vm, VmState::Running).unwrap();
    let out = drain(&mut d, T0);
    let got: Vec<(u16, Vec<u8>)> = out
        .iter()
        .map(|(_, f)| (u16::from_be_bytes([f[12], f[13]]), f[14..].to_vec()))
        .collect();
    assert_eq!(
        got,
        vec![
            (0x0800, forwarded(&v4)),
            (0x86dd, forwarded(&jumbo)),
            (0x86dd, forwarded(&v6))
        ]
    );
    assert_eq!(d.counters().buffer_total(), Occupancy::default());
}

#[test]
fn no_reordering_when_release_interleaves_with_batches() {
    let mut d = host(D, VmState::Absent);
    let vm = d.vm_id("vm1").unwrap();
    let mut seq = 0u16;
    let mut frame = || {
        seq += 1;
        let mut p = udp6_sized(sid(C, 1), vm1(), 100);
        p[60..62].copy_from_slice(&seq.to_be_bytes());
        paper_frame(D, 0, &p)
    };
    let mut b = Batch::new(32);
    for _ in 0..32 {
        b.push(UPLINK, &frame()).unwrap();
    }
    d.process_batch(T0, &mut b);
    d.handle_vm_state(T0, vm, VmState::Running).unwrap();
    // Drain only a few, then a new batch arrives, then drain the rest.
    let mut out = PacketBuf::new();
    let mut delivered = Vec::new();
    for _ in 0..5 {
        d.poll_transmit(T0, &mut out).unwrap();
        delivered.push(u16::from_be_bytes([out.data()[74], out.data()[75]]));
    }
    b.clear();
    for _ in 0..32 {
        b.push(UPLINK, &frame()).unwrap();
    }
    d.process_batch(T0, &mut b);
    for p in b.iter() {
        match p.verdict {
            Verdict::Tx(_) => delivered.push(u16::from_be_bytes([p.data()[74], p.data()[75]])),
            Verdict::Held(_) => {}
            v => panic!("{v:?}"),
        }
    }
    while d.poll_transmit(T0, &mut out).is_some() {
        delivered.push(u16::from_be_bytes([out.data()[74], out.data()[75]]));
    }
    // Then a batch after the buffer is empty is delivered directly.
    b.clear();
    for _ in 0..4 {
        b.push(UPLINK, &frame()).unwrap();
    }
    d.process_batch(T0, &mut b);
    for p in b.iter() {
        assert!(matches!(p.verdict, Verdict::Tx(_)));
        delivered.push(u16::from_be_bytes([p.data()[74], p.data()[75]]));
    }
    let want: Vec<u16> = (1..=68).collect();
    assert_eq!(delivered, want);
}

#[test]
fn end_sbuf_drop_mode_and_running_delivery() {
    let mut d = host(D, VmState::Absent);
    let vm = d.vm_id("vm1").unwrap();
    let f = uplink_frame(D, &[sid(S, END_S), sid(D, END_SBUF_DROP)], 0, &inner());
    expect_drop(&mut d, UPLINK, &f, DropReason::SbufDropMode);
    d.handle_vm_state(T0, vm, VmState::Running).unwrap();
    assert_eq!(run(&mut d, UPLINK, &f).0, Verdict::Tx(VM1_PORT));
    assert_eq!(
        run(&mut d, UPLINK, &paper_frame(D, 0, &inner())).0,
        Verdict::Tx(VM1_PORT)
    );
    assert_eq!(d.counters().vm(vm).dropped, 1);
    // SL != 0 at End.SBUF is a Parameter Problem like any decapsulating behavior.
    let f = uplink_frame(D, &[sid(D, END_SBUF), sid(C, 1)], 1, &inner());
    expect_drop(&mut d, UPLINK, &f, DropReason::SegmentsLeftNotZero);
}

fn small_buffers(
    per_vm_packets: u32,
    per_vm_bytes: u64,
    global_packets: u32,
    global_bytes: u64,
) -> Dataplane {
    let mut c = host_config(D, VmState::Absent);
    c.buffer = BufferConfig {
        per_vm_packets,
        per_vm_bytes,
        global_packets,
        global_bytes,
        max_age_ms: 100,
    };
    // a second migrating VM on the client port for the global bounds
    c.vms[1].state = VmState::Absent;
    Dataplane::new(c).unwrap()
}

#[test]
fn buffer_bounds_are_enforced_and_counted() {
    let f = paper_frame(D, 0, &inner()); // 100-byte inner packet
                                         // per-VM packets
    let mut d = small_buffers(3, 100_000, 10, 100_000);
    for _ in 0..3 {
        assert!(matches!(run(&mut d, UPLINK, &f).0, Verdict::Held(_)));
    }
    expect_drop(&mut d, UPLINK, &f, DropReason::BufferFull);
    assert_eq!(d.counters().vm(VmId(0)).dropped, 1);
    // per-VM bytes
    let mut d = small_buffers(10, 250, 10, 100_000);
    assert!(matches!(run(&mut d, UPLINK, &f).0, Verdict::Held(_)));
    assert!(matches!(run(&mut d, UPLINK, &f).0, Verdict::Held(_)));
    expect_drop(&mut d, UPLINK, &f, DropReason::BufferFull);
    // global packets, across two VMs
    let mut d = small_buffers(2, 100_000, 3, 100_000);
    let to_client = paper_frame(D, 0, &udp6_sized(sid(C, 1), client(), 100));
    assert!(matches!(run(&mut d, UPLINK, &f).0, Verdict::Held(VmId(0))));
    assert!(matches!(run(&mut d, UPLINK, &f).0, Verdict::Held(VmId(0))));
    assert!(matches!(
        run(&mut d, UPLINK, &to_client).0,
        Verdict::Held(VmId(1))
    ));
    expect_drop(&mut d, UPLINK, &to_client, DropReason::BufferFull);
    assert_eq!(d.counters().buffer_total().packets, 3);
    // global bytes
    let mut d = small_buffers(5, 350, 10, 350);
    for _ in 0..3 {
        run(&mut d, UPLINK, &f);
    }
    expect_drop(&mut d, UPLINK, &to_client, DropReason::BufferFull);
}

#[test]
fn buffered_packets_expire_by_age() {
    let mut d = small_buffers(10, 100_000, 10, 100_000);
    let vm = VmId(0);
    let f = paper_frame(D, 0, &inner());
    let t = |ms: u64| Instant::from_millis(1000 + ms);
    run_at(&mut d, t(0), UPLINK, &f);
    run_at(&mut d, t(50), UPLINK, &f);
    run_at(&mut d, t(90), UPLINK, &f);
    assert_eq!(d.poll_timeout(), Some(t(100)));
    d.handle_timeout(t(99));
    assert_eq!(d.counters().buffer_occupancy(vm).packets, 3);
    d.handle_timeout(t(100));
    assert_eq!(d.counters().buffer_occupancy(vm).packets, 2);
    assert_eq!(d.counters().drops(DropReason::BufferExpired), 1);
    assert_eq!(d.poll_timeout(), Some(t(150)));
    // On release, the one older than max age is dropped, the other delivered.
    d.handle_vm_state(t(160), vm, VmState::Running).unwrap();
    let out = drain(&mut d, t(160));
    assert_eq!(out.len(), 1);
    assert_eq!(d.counters().vm(vm).expired, 2);
    assert_eq!(d.counters().vm(vm).released, 1);
    assert_eq!(d.counters().drops(DropReason::BufferExpired), 2);
    assert_eq!(d.poll_timeout(), None);
    // Discarding a torn-down path's buffer is counted.
    d.handle_vm_state(t(200), vm, VmState::Absent).unwrap();
    run_at(&mut d, t(200), UPLINK, &f);
    assert_eq!(d.discard_buffer(vm), 1);
    assert_eq!(d.counters().drops(DropReason::BufferDiscarded), 1);
}

#[test]
fn paper_path_end_to_end_across_s_and_d() {
    // C encapsulates towards S::End.S -> D::End.SBUF; S forwards to D while the VM is paused; D
    // holds then releases on resume; after the switch S forwards and D delivers directly.
    let (cs, cd) = two_hosts();
    let mut s = Dataplane::new(cs).unwrap();
    let mut d = Dataplane::new(cd).unwrap();
    let vm = VmId(0);
    let to_d = |frame: Vec<u8>| -> Vec<u8> {
        let mut f = frame;
        f[0..6].copy_from_slice(&uplink_mac(D));
        f[6..12].copy_from_slice(&router_mac(D));
        f
    };
    let inner = inner();
    s.handle_vm_state(T0, vm, VmState::Paused).unwrap();
    let (v, at_s) = run(&mut s, UPLINK, &paper_frame(S, 1, &inner));
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_eq!(
        run(&mut d, UPLINK, &to_d(at_s.clone())).0,
        Verdict::Held(vm)
    );
    s.handle_vm_state(T0, vm, VmState::Absent).unwrap();
    d.handle_vm_state(T0, vm, VmState::Running).unwrap();
    let released = drain(&mut d, T0);
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].1[14..], forwarded(&inner));
    let (v, at_s) = run(&mut s, UPLINK, &paper_frame(S, 1, &inner));
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_eq!(run(&mut d, UPLINK, &to_d(at_s)).0, Verdict::Tx(VM1_PORT));
}

// ---------------------------------------------------------------------------------------------
// Headends and VM ingress
// ---------------------------------------------------------------------------------------------

#[test]
fn h_encaps_from_a_vm() {
    let mut s = host(S, VmState::Running);
    let f = client_frame(remote(), 100);
    let (v, out) = run(&mut s, CLIENT_PORT, &f);
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_eq!(&out[0..6], &router_mac(S));
    let o = ip6(&out);
    assert_eq!(o.src_addr(), sid(S, 1));
    assert_eq!(o.dst_addr(), sid(D, END));
    assert_eq!(o.hop_limit(), 64);
    assert_ne!(o.flow_label(), 0);
    assert_eq!(o.payload_len() as usize, 8 + 32 + 100);
    let srh = Srh::new_checked(o.payload()).unwrap();
    assert_eq!((srh.segments_left(), srh.last_entry()), (1, 1));
    assert_eq!(srh.segment(0), sid(D, END_DT6));
    assert_eq!(srh.segment(1), sid(D, END));
    let inner = Ipv6Packet::new_checked(srh.payload()).unwrap();
    assert_eq!(inner.hop_limit(), 63, "the gateway is a router hop");
    assert_eq!(inner.dst_addr(), remote());
    // the same flow always gets the same label
    let (_, out2) = run(&mut s, CLIENT_PORT, &f);
    assert_eq!(ip6(&out2).flow_label(), o.flow_label());
    assert_eq!(s.counters().vm(VmId(1)).rx.packets, 2);
}

#[test]
fn h_encaps_red_and_h_insert() {
    let mut s = host(S, VmState::Running);
    let red = s.policy_id("to-d-red").unwrap();
    let ins = s.policy_id("to-d-insert").unwrap();
    let prefix: ipnet::IpNet = "2001:db8:900::90/128".parse().unwrap();
    s.set_mapping(prefix, Steering::Policy(red)).unwrap();
    let (v, out) = run(&mut s, CLIENT_PORT, &client_frame(remote(), 100));
    assert_eq!(v, Verdict::Tx(UPLINK));
    let o = ip6(&out);
    assert_eq!(o.dst_addr(), sid(D, END));
    let srh = Srh::new_checked(o.payload()).unwrap();
    // RFC 8986 5.2: first SID omitted, SL = 1, Last Entry = 0.
    assert_eq!((srh.segments_left(), srh.last_entry()), (1, 0));
    assert_eq!(srh.segment(0), sid(D, END_DT6));
    // ... and D's End processes it correctly.
    let mut d = host(D, VmState::Running);
    let mut f = out.clone();
    f[0..6].copy_from_slice(&uplink_mac(D));
    let (v, at_d) = run(&mut d, UPLINK, &f);
    assert_eq!(v, Verdict::Tx(UPLINK));
    // End (SL 1 -> 0, DA = D::End.DT6), then D's own End.DT6 in the same pass: decapsulated.
    assert_eq!(ip6(&at_d).dst_addr(), remote());
    assert_eq!(at_d.len(), 14 + 100);
    // One-segment reduced policy: no SRH at all.
    s.install_policy(PolicyConfig {
        name: "to-d-red".into(),
        headend: Headend::HEncapsRed,
        segments: vec![sid(D, END_DT6)],
        hop_limit: None,
        flow_label: FlowLabelMode::Hash,
        hmac_key: None,
    })
    .unwrap();
    let (_, out) = run(&mut s, CLIENT_PORT, &client_frame(remote(), 100));
    assert_eq!(ip6(&out).next_header(), srmig_wire::IpProtocol::from(41u8));
    assert_eq!(ip6(&out).payload_len(), 100);
    // H.Insert: SRH after the original header, original DA last.
    s.set_mapping(prefix, Steering::Policy(ins)).unwrap();
    let (v, out) = run(&mut s, CLIENT_PORT, &client_frame(remote(), 100));
    assert_eq!(v, Verdict::Tx(UPLINK));
    let o = ip6(&out);
    assert_eq!(o.src_addr(), client());
    assert_eq!(o.dst_addr(), sid(D, END));
    assert_eq!(o.payload_len() as usize, 60 + 56);
    let srh = Srh::new_checked(o.payload()).unwrap();
    assert_eq!((srh.segments_left(), srh.last_entry()), (2, 2));
    assert_eq!(srh.segment(0), remote());
    assert_eq!(srh.segment(1), sid(D, END_PSP));
    assert_eq!(srh.next_header(), srmig_wire::IpProtocol::from(17u8));
}

#[test]
fn ipv4_from_a_vm_is_encapsulated_with_next_header_4() {
    let mut s = host(S, VmState::Running);
    let p = ipv4(CLIENT_V4, REMOTE_V4, 17, 64, &[7u8; 40]);
    let (v, out) = run(
        &mut s,
        CLIENT_PORT,
        &eth(GATEWAY_MAC, CLIENT_MAC, 0x0800, &p),
    );
    assert_eq!(v, Verdict::Tx(UPLINK));
    let o = ip6(&out);
    let srh = Srh::new_checked(o.payload()).unwrap();
    assert_eq!(srh.next_header(), srmig_wire::IpProtocol::from(4u8));
    let inner = srh.payload();
    assert_eq!(inner[8], 63, "TTL decremented");
    assert_eq!(
        srmig_wire::checksum::data(&inner[..20]),
        0xffff,
        "checksum still valid"
    );
    // native IPv4 to an unmapped address, and local delivery
    let p = ipv4(CLIENT_V4, Ipv4Addr::new(192, 0, 2, 1), 17, 64, &[7u8; 40]);
    assert_eq!(
        run(
            &mut s,
            CLIENT_PORT,
            &eth(GATEWAY_MAC, CLIENT_MAC, 0x0800, &p)
        )
        .0,
        Verdict::Tx(UPLINK)
    );
    let p = ipv4(CLIENT_V4, VM1_V4, 17, 64, &[7u8; 40]);
    assert_eq!(
        run(
            &mut s,
            CLIENT_PORT,
            &eth(GATEWAY_MAC, CLIENT_MAC, 0x0800, &p)
        )
        .0,
        Verdict::Tx(VM1_PORT)
    );
    // bad checksum, spoofed source, TTL 1
    let mut p = ipv4(CLIENT_V4, REMOTE_V4, 17, 64, &[0u8; 8]);
    p[10] ^= 1;
    expect_drop(
        &mut s,
        CLIENT_PORT,
        &eth(GATEWAY_MAC, CLIENT_MAC, 0x0800, &p),
        DropReason::Ipv4BadChecksum,
    );
    let p = ipv4(Ipv4Addr::new(10, 30, 0, 31), REMOTE_V4, 17, 64, &[0u8; 8]);
    expect_drop(
        &mut s,
        CLIENT_PORT,
        &eth(GATEWAY_MAC, CLIENT_MAC, 0x0800, &p),
        DropReason::VmSourceSpoofed,
    );
    let p = ipv4(CLIENT_V4, REMOTE_V4, 17, 1, &[0u8; 8]);
    expect_drop(
        &mut s,
        CLIENT_PORT,
        &eth(GATEWAY_MAC, CLIENT_MAC, 0x0800, &p),
        DropReason::Ipv4TtlExceeded,
    );
}

#[test]
fn vm_ingress_native_local_and_local_sid_chain() {
    let mut s = host(S, VmState::Running);
    // unmapped destination: native FIB forwarding
    let (v, out) = run(&mut s, CLIENT_PORT, &client_frame(a6("2001:db8:5::5"), 80));
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_eq!(ip6(&out).hop_limit(), 63);
    assert_eq!(&out[6..12], &uplink_mac(S));
    // local running VM: delivered directly
    let (v, out) = run(&mut s, CLIENT_PORT, &client_frame(vm1(), 80));
    assert_eq!(v, Verdict::Tx(VM1_PORT));
    assert_eq!(&out[0..6], &VM1_MAC);
    // VM 1 paused at S and mapped onto the paper's path: the encapsulation's first segment is
    // S's own End.S, which forwards to D::End.SBUF in the same pass.
    let vm = s.vm_id("vm1").unwrap();
    s.handle_vm_state(T0, vm, VmState::Paused).unwrap();
    let p = s.policy_id("via-s-to-d").unwrap();
    s.set_mapping("2001:db8:100::10/128".parse().unwrap(), Steering::Policy(p))
        .unwrap();
    let (v, out) = run(&mut s, CLIENT_PORT, &client_frame(vm1(), 80));
    assert_eq!(v, Verdict::Tx(UPLINK));
    let o = ip6(&out);
    assert_eq!(o.dst_addr(), sid(D, END_SBUF));
    assert_eq!(Srh::new_checked(o.payload()).unwrap().segments_left(), 0);
    assert_eq!(
        s.counters().sid(s.sid_id(sid(S, END_S)).unwrap()).packets,
        1
    );
}

#[test]
fn ndp_for_the_gateway_is_answered() {
    let mut s = host(S, VmState::Running);
    let ns = neighbor_solicitation(client(), CLIENT_MAC, gateway());
    let mut dst_mac = [0x33, 0x33, 0xff, 0, 0, 0];
    dst_mac[3..].copy_from_slice(&gateway().octets()[13..]);
    let (v, _) = run(&mut s, CLIENT_PORT, &eth(dst_mac, CLIENT_MAC, 0x86dd, &ns));
    assert_eq!(v, Verdict::Consumed);
    let g = drain(&mut s, T0);
    assert_eq!(g.len(), 1);
    let (port, f) = &g[0];
    assert_eq!(*port, CLIENT_PORT);
    assert_eq!(&f[0..6], &CLIENT_MAC);
    assert_eq!(&f[6..12], &GATEWAY_MAC);
    let (src, dst, r) = icmp_of(f);
    assert_eq!((src, dst), (gateway(), client()));
    assert_eq!(ip6(f).hop_limit(), 255);
    match r {
        IcmpRepr::Ndisc(NdiscRepr::NeighborAdvert {
            flags,
            target_addr,
            lladdr,
        }) => {
            assert_eq!(target_addr, gateway());
            assert_eq!(lladdr.map(|a| a.0), Some(GATEWAY_MAC));
            assert!(
                flags.contains(NeighborFlags::ROUTER) && flags.contains(NeighborFlags::SOLICITED)
            );
        }
        other => panic!("{other:?}"),
    }
    // from a link-local source too (the usual case)
    let ns = neighbor_solicitation(a6("fe80::30"), CLIENT_MAC, gateway());
    assert_eq!(
        run(&mut s, CLIENT_PORT, &eth(dst_mac, CLIENT_MAC, 0x86dd, &ns)).0,
        Verdict::Consumed
    );
    assert_eq!(icmp_of(&drain(&mut s, T0)[0].1).1, a6("fe80::30"));
    // DAD probe: answered to all-nodes
    let ns = neighbor_solicitation(Ipv6Addr::UNSPECIFIED, CLIENT_MAC, gateway());
    assert_eq!(
        run(&mut s, CLIENT_PORT, &eth(dst_mac, CLIENT_MAC, 0x86dd, &ns)).0,
        Verdict::Consumed
    );
    assert_eq!(icmp_of(&drain(&mut s, T0)[0].1).1, a6("ff02::1"));
    // another target: not ours
    let ns = neighbor_solicitation(client(), CLIENT_MAC, a6("2001:db8::99"));
    expect_drop(
        &mut s,
        CLIENT_PORT,
        &eth(dst_mac, CLIENT_MAC, 0x86dd, &ns),
        DropReason::NdpNotForUs,
    );
    // bad checksum / hop limit
    let mut ns = neighbor_solicitation(client(), CLIENT_MAC, gateway());
    ns[7] = 64;
    expect_drop(
        &mut s,
        CLIENT_PORT,
        &eth(dst_mac, CLIENT_MAC, 0x86dd, &ns),
        DropReason::NdpInvalid,
    );
    // the uplink answers for its own address
    let target = Ipv6Addr::new(0xfc00, 0xffff, 0, 0, 0, 0, 0, S);
    let ns = neighbor_solicitation(a6("fe80::ff"), router_mac(S), target);
    assert_eq!(
        run(
            &mut s,
            UPLINK,
            &eth(uplink_mac(S), router_mac(S), 0x86dd, &ns)
        )
        .0,
        Verdict::Consumed
    );
    let g = drain(&mut s, T0);
    assert_eq!(&g[0].1[6..12], &uplink_mac(S));
    assert_eq!(s.counters().icmp().ndp_answered, 4);
}

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

#[test]
fn malformed_srv6_packets_are_dropped_with_their_reason() {
    let mut dp = host(S, VmState::Running);
    let good = uplink_frame(S, &[sid(S, END), sid(D, END_DT6)], 1, &inner());
    let srh_at = 14 + 40;
    // truncated Ethernet / IPv6
    expect_drop(&mut dp, UPLINK, &good[..10], DropReason::Truncated);
    expect_drop(&mut dp, UPLINK, &good[..14 + 30], DropReason::Truncated);
    // payload length beyond the frame
    expect_drop(
        &mut dp,
        UPLINK,
        &good[..good.len() - 1],
        DropReason::PayloadLengthBeyondFrame,
    );
    // truncated SRH (payload length consistent, header cut)
    let mut f = good[..srh_at + 4].to_vec();
    f[14 + 4..14 + 6].copy_from_slice(&4u16.to_be_bytes());
    expect_drop(&mut dp, UPLINK, &f, DropReason::Truncated);
    // Hdr Ext Len beyond the packet
    let mut f = good.clone();
    f[srh_at + 1] = 40;
    expect_drop(&mut dp, UPLINK, &f, DropReason::HdrExtLenBeyondPacket);
    // SL > LE + 1: Parameter Problem pointing at Segments Left (offset 43)
    let mut f = good.clone();
    f[srh_at + 3] = 3;
    expect_drop(&mut dp, UPLINK, &f, DropReason::SegmentsLeftBeyondLastEntry);
    param_problem(&mut dp, 0, 43);
    // LE beyond the segment list held by Hdr Ext Len
    let mut f = good.clone();
    f[srh_at + 4] = 2;
    expect_drop(&mut dp, UPLINK, &f, DropReason::LastEntryBeyondSegmentList);
    param_problem(&mut dp, 0, 43);
    // TLV overrunning the SRH: an SRH with an 8-byte TLV area whose TLV claims 20 bytes
    let mut srh_bytes = srh(
        41,
        1,
        &[sid(S, END), sid(D, END_DT6)],
        &[5, 20, 0, 0, 0, 0, 0, 0],
    );
    srh_bytes.extend_from_slice(&inner());
    let f = eth(
        uplink_mac(S),
        router_mac(S),
        0x86dd,
        &ipv6(sid(C, 1), sid(S, END), 43, 64, &srh_bytes),
    );
    expect_drop(&mut dp, UPLINK, &f, DropReason::TlvOverrun);
    // ... while a well-formed TLV area (PadN) is accepted
    let mut srh_bytes = srh(
        41,
        1,
        &[sid(S, END), sid(D, END_DT6)],
        &[4, 6, 0, 0, 0, 0, 0, 0],
    );
    srh_bytes.extend_from_slice(&inner());
    let f = eth(
        uplink_mac(S),
        router_mac(S),
        0x86dd,
        &ipv6(sid(C, 1), sid(S, END), 43, 64, &srh_bytes),
    );
    assert_eq!(run(&mut dp, UPLINK, &f).0, Verdict::Tx(UPLINK));
    // too many extension headers (a destination-options "loop")
    let mut chain = Vec::new();
    for _ in 0..12 {
        chain.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]);
    }
    let f = eth(
        uplink_mac(S),
        router_mac(S),
        0x86dd,
        &ipv6(sid(C, 1), sid(S, END), 60, 64, &chain),
    );
    expect_drop(&mut dp, UPLINK, &f, DropReason::TooManyExtensionHeaders);
    // SID not installed (inside the locator): Destination Unreachable, no route
    let f = uplink_frame(S, &[sid(S, 0x99), sid(D, END_DT6)], 1, &inner());
    expect_drop(&mut dp, UPLINK, &f, DropReason::NoSid);
    assert_eq!(drain(&mut dp, T0).len(), 1);
    // unsupported routing type with SL != 0
    let mut f = good.clone();
    f[srh_at + 2] = 0;
    expect_drop(&mut dp, UPLINK, &f, DropReason::UnsupportedRoutingType);
    param_problem(&mut dp, 0, 42);
    // wrong MAC, ethertype, version
    let mut f = good.clone();
    f[0] = 0x0a;
    expect_drop(&mut dp, UPLINK, &f, DropReason::WrongDestinationMac);
    let mut f = good.clone();
    f[12] = 0x88;
    expect_drop(&mut dp, UPLINK, &f, DropReason::UnsupportedEtherType);
    let mut f = good.clone();
    f[14] = 0x40;
    expect_drop(&mut dp, UPLINK, &f, DropReason::BadIpVersion);
    // unknown port
    let (v, _) = run(&mut dp, PortId(9), &good);
    assert_eq!(v, Verdict::Drop(DropReason::UnknownPort));
}

#[test]
fn sr_domain_is_closed() {
    let mut dp = host(S, VmState::Running);
    // SRH from a VM port
    let sr = srv6(client(), &[sid(D, END), remote()], 1, &inner());
    expect_drop(
        &mut dp,
        CLIENT_PORT,
        &eth(GATEWAY_MAC, CLIENT_MAC, 0x86dd, &sr),
        DropReason::SrhFromVmPort,
    );
    // a local SID as destination from a VM port, even without SRH
    let p = udp6_sized(client(), sid(S, END_DT6), 80);
    expect_drop(
        &mut dp,
        CLIENT_PORT,
        &eth(GATEWAY_MAC, CLIENT_MAC, 0x86dd, &p),
        DropReason::SrhFromVmPort,
    );
    // SRv6 from outside the infrastructure prefixes
    let sr = srv6(outsider(), &[sid(S, END), sid(D, END_DT6)], 1, &inner());
    expect_drop(
        &mut dp,
        UPLINK,
        &eth(uplink_mac(S), router_mac(S), 0x86dd, &sr),
        DropReason::SrhFromOutsideDomain,
    );
    let sr = srv6(
        outsider(),
        &[a6("2001:db8:5::5"), a6("2001:db8:5::6")],
        1,
        &inner(),
    );
    expect_drop(
        &mut dp,
        UPLINK,
        &eth(uplink_mac(S), router_mac(S), 0x86dd, &sr),
        DropReason::SrhFromOutsideDomain,
    );
    // spoofed VM source, and a VM's address from another VM's port
    let p = udp6_sized(a6("2001:db8:300::31"), remote(), 80);
    expect_drop(
        &mut dp,
        CLIENT_PORT,
        &eth(GATEWAY_MAC, CLIENT_MAC, 0x86dd, &p),
        DropReason::VmSourceSpoofed,
    );
    let p = udp6_sized(vm1(), remote(), 80);
    expect_drop(
        &mut dp,
        CLIENT_PORT,
        &eth(GATEWAY_MAC, CLIENT_MAC, 0x86dd, &p),
        DropReason::VmSourceSpoofed,
    );
    assert!(drain(&mut dp, T0).is_empty(), "no ICMPv6 error for these");
}

#[test]
fn icmp_errors_are_rate_limited_and_never_about_errors() {
    let mut c = host_config(S, VmState::Running);
    c.icmp = IcmpConfig {
        rate_per_sec: 1,
        burst: 2,
    };
    let mut dp = Dataplane::new(c).unwrap();
    let mut f = uplink_frame(S, &[sid(S, END), sid(D, END_DT6)], 1, &inner());
    f[14 + 7] = 1;
    for _ in 0..5 {
        expect_drop(&mut dp, UPLINK, &f, DropReason::HopLimitExceeded);
    }
    assert_eq!(dp.counters().icmp().errors_sent, 2);
    assert_eq!(dp.counters().icmp().rate_limited, 3);
    assert_eq!(drain(&mut dp, T0).len(), 2);
    run_at(&mut dp, T0 + core::time::Duration::from_secs(1), UPLINK, &f);
    assert_eq!(dp.counters().icmp().errors_sent, 3);
    // An ICMPv6 error as the invoking packet: never answered.
    let err = ipv6(sid(C, 1), sid(S, END), 58, 1, &[1, 0, 0, 0, 0, 0, 0, 0]);
    let f = eth(uplink_mac(S), router_mac(S), 0x86dd, &err);
    expect_drop(&mut dp, UPLINK, &f, DropReason::UnsupportedNextHeader);
    assert_eq!(dp.counters().icmp().suppressed, 1);
    assert!(drain(&mut dp, T0 + core::time::Duration::from_secs(1)).len() <= 1);
}

#[test]
fn bench_scenarios_measure_what_they_claim() {
    let mut batch = Batch::new(64);
    let mut out = PacketBuf::new();
    let names: Vec<&str> = bench_scenarios().iter().map(|s| s.name).collect();
    for want in [
        "End",
        "End.X",
        "End.DX6",
        "End.DT6",
        "End.S deliver",
        "End.S forward",
        "End.SBUF deliver",
        "End.SBUF hold",
        "End.SBUF release",
        "H.Encaps",
        "H.Encaps.Red",
        "H.Insert",
    ] {
        assert!(names.contains(&want), "missing scenario {want}");
    }
    for mut s in bench_scenarios() {
        for round in 0..3 {
            let n = s.run(T0, &mut batch, &mut out);
            assert_eq!(
                n,
                64,
                "{} round {round}: {:?}",
                s.name,
                batch.packets()[0].verdict
            );
        }
        let c = s.dataplane.counters();
        let unexpected = c.total_drops() - c.drops(DropReason::BufferDiscarded);
        assert_eq!(unexpected, 0, "{}", s.name);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_frames_never_panic(frames in proptest::collection::vec((0u16..4, proptest::collection::vec(any::<u8>(), 0..300)), 1..16)) {
        let mut dp = host(S, VmState::Running);
        let mut b = Batch::new(16);
        for (port, f) in &frames {
            b.push(PortId(*port), f).unwrap();
        }
        dp.process_batch(T0, &mut b);
        let mut out = PacketBuf::new();
        while dp.poll_transmit(T0, &mut out).is_some() {}
        let c = dp.counters();
        let drops = c.total_drops();
        let others = b.iter().filter(|p| !matches!(p.verdict, Verdict::Drop(_))).count() as u64;
        prop_assert_eq!(drops + others, frames.len() as u64);
    }

    #[test]
    fn mutated_srv6_frames_never_panic(pos in 0usize..200, val in any::<u8>(), cut in 0usize..40, port in 0u16..3, sl in 0u8..3) {
        let mut d = host(D, VmState::Absent);
        let mut f = uplink_frame(D, &[sid(S, END_S), sid(D, END_SBUF), sid(D, END)], sl, &inner());
        if pos < f.len() {
            f[pos] = val;
        }
        f.truncate(f.len().saturating_sub(cut));
        let (v, _) = run(&mut d, PortId(port), &f);
        let mut out = PacketBuf::new();
        while d.poll_transmit(T0, &mut out).is_some() {}
        d.handle_vm_state(T0, VmId(0), VmState::Running).unwrap();
        while d.poll_transmit(T0, &mut out).is_some() {}
        prop_assert!(matches!(v, Verdict::Tx(_) | Verdict::Drop(_) | Verdict::Held(_) | Verdict::Consumed));
    }
}

/// An ICMPv6 echo request (identifier 0x1234, sequence `seq`, `data`) in an IPv6 packet.
fn echo_request(src: Ipv6Addr, dst: Ipv6Addr, seq: u16, data: &[u8]) -> Vec<u8> {
    let mut m = vec![128, 0, 0, 0, 0x12, 0x34];
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(data);
    srmig_wire::icmpv6::Packet::new_unchecked(&mut m[..]).fill_checksum(&src, &dst);
    ipv6(src, dst, 58, 64, &m)
}

/// Checks that `frame` is the echo reply to `request` (an IPv6 packet, possibly with
/// extension headers before its echo request at `upper`) from `from`, sent to `eth_dst`.
fn assert_echo_reply(frame: &[u8], request: &[u8], upper: usize, from: Ipv6Addr, eth_dst: [u8; 6]) {
    assert_eq!(&frame[0..6], &eth_dst);
    let ip = ip6(frame);
    let req_src = Ipv6Packet::new_checked(request).unwrap().src_addr();
    assert_eq!((ip.src_addr(), ip.dst_addr()), (from, req_src));
    assert_eq!(ip.next_header(), srmig_wire::IpProtocol::ICMPV6);
    assert_eq!(ip.hop_limit(), 64);
    let msg = &frame[54..];
    assert_eq!(
        msg.len(),
        request.len() - upper,
        "same identifier, sequence and data"
    );
    assert_eq!((msg[0], msg[1]), (129, 0));
    assert_eq!(&msg[4..], &request[upper + 4..]);
    assert!(IcmpPacket::new_checked(msg)
        .unwrap()
        .verify_checksum(&from, &req_src));
}

#[test]
fn echo_requests_to_the_nodes_addresses_are_answered() {
    let mut dp = host(S, VmState::Running);
    let pinger = sid(C, 1);
    for to in [uplink_address(S), sid(S, 1)] {
        let req = echo_request(pinger, to, 7, b"srmig ping");
        let (v, out) = run(&mut dp, UPLINK, &from_router(&req));
        assert_eq!(v, Verdict::Tx(UPLINK), "echo to {to}");
        assert_echo_reply(&out, &req, 40, to, router_mac(S));
        assert_eq!(&out[6..12], &uplink_mac(S));
    }
    // With an SRH whose last segment is the node's address (SL 0): answered, no SRH back.
    let mut req = echo_request(pinger, uplink_address(S), 8, b"via sr");
    let icmp = req.split_off(40);
    let srv6_req = ipv6(
        pinger,
        uplink_address(S),
        43,
        64,
        &[srh(58, 0, &[sid(C, 0x40), uplink_address(S)], &[]), icmp].concat(),
    );
    let (v, out) = run(&mut dp, UPLINK, &from_router(&srv6_req));
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_echo_reply(&out, &srv6_req, 40 + 40, uplink_address(S), router_mac(S));
    // A VM pings its gateway.
    let gw = a6("2001:db8::1");
    let req = echo_request(client(), gw, 9, b"gw");
    let (v, out) = run(&mut dp, CLIENT_PORT, &from_client(&req));
    assert_eq!(v, Verdict::Tx(CLIENT_PORT));
    assert_echo_reply(&out, &req, 40, gw, CLIENT_MAC);
    assert_eq!(&out[6..12], &GATEWAY_MAC);
    assert_eq!(dp.counters().icmp().echo_replies, 4);
    // A corrupted request is not answered.
    let mut bad = echo_request(pinger, sid(S, 1), 10, b"x");
    let last = bad.len() - 1;
    bad[last] ^= 1;
    expect_drop(
        &mut dp,
        UPLINK,
        &from_router(&bad),
        DropReason::IcmpBadChecksum,
    );
}

#[test]
fn an_srh_to_a_local_address_is_processed_as_end() {
    let mut dp = host(S, VmState::Running);
    // RFC 8754 4.3: the interface address acts as a segment endpoint.
    let next = sid(D, END_DT6);
    let f = uplink_frame(S, &[uplink_address(S), next], 1, &inner());
    let (v, out) = run(&mut dp, UPLINK, &f);
    assert_eq!(v, Verdict::Tx(UPLINK));
    let ip = ip6(&out);
    assert_eq!(ip.dst_addr(), next);
    assert_eq!(ip.hop_limit(), 63);
    assert_eq!(out[14 + 40 + 3], 0, "Segments Left decremented");
    // From outside the SR domain: dropped (RFC 8754 5.1).
    let mut p = srv6(a6("2001:db8:bad::1"), &[sid(S, 1), next], 1, &inner());
    p[8..24].copy_from_slice(&a6("2001:db8:bad::1").octets());
    expect_drop(
        &mut dp,
        UPLINK,
        &from_router(&p),
        DropReason::SrhFromOutsideDomain,
    );
    // A type 0 routing header with Segments Left 1: Parameter Problem at its Routing Type.
    let mut rh0 = vec![17, 2, 0, 1, 0, 0, 0, 0];
    rh0.extend_from_slice(&a6("2001:db8:5::1").octets());
    let u = udp6_sized(sid(C, 1), uplink_address(S), 60);
    let p = ipv6(
        sid(C, 1),
        uplink_address(S),
        43,
        64,
        &[rh0, u[40..].to_vec()].concat(),
    );
    expect_drop(
        &mut dp,
        UPLINK,
        &from_router(&p),
        DropReason::UnsupportedRoutingType,
    );
    param_problem(&mut dp, 0, 42);
}

#[test]
fn other_traffic_to_a_local_address_is_refused() {
    let mut dp = host(S, VmState::Running);
    // UDP: port unreachable, from the address the datagram was sent to (RFC 4443 2.2).
    let p = udp6_sized(sid(C, 1), sid(S, 1), 80);
    expect_drop(
        &mut dp,
        UPLINK,
        &from_router(&p),
        DropReason::PortUnreachable,
    );
    let (port, g) = one_error(&mut dp);
    assert_eq!(port, UPLINK);
    let (src, dst, r) = icmp_of(&g);
    assert_eq!((src, dst), (sid(S, 1), sid(C, 1)));
    match r {
        IcmpRepr::DstUnreachable { code: 4, invoking } => assert_eq!(invoking, &p[..]),
        other => panic!("{other:?}"),
    }
    // TCP, an ICMPv6 echo reply, No Next Header: discarded, no answer.
    for proto in [6u8, 59] {
        let p = ipv6(sid(C, 1), uplink_address(S), proto, 64, &[0u8; 20]);
        expect_drop(
            &mut dp,
            UPLINK,
            &from_router(&p),
            DropReason::LocalNotServed,
        );
    }
    let mut reply = echo_request(sid(C, 1), uplink_address(S), 1, b"r");
    reply[40] = 129;
    expect_drop(
        &mut dp,
        UPLINK,
        &from_router(&reply),
        DropReason::LocalNotServed,
    );
    assert!(drain(&mut dp, T0).is_empty());
}

#[test]
fn encap_source_sets_the_tunnel_source_apart() {
    let tunnel = a6("fc00:0:1::7");
    let mut cfg = host_config(S, VmState::Running);
    cfg.encap_source = Some(tunnel);
    let mut dp = Dataplane::new(cfg).unwrap();
    // The client's traffic to the remote VM is encapsulated (policy `to-d`) from `tunnel`.
    let (v, out) = run(&mut dp, CLIENT_PORT, &client_frame(remote(), 100));
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_eq!(ip6(&out).src_addr(), tunnel);
    // The tunnel source is local too.
    let req = echo_request(sid(C, 1), tunnel, 1, b"t");
    let (v, out) = run(&mut dp, UPLINK, &from_router(&req));
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_echo_reply(&out, &req, 40, tunnel, router_mac(S));
    // Refused where it cannot be a source.
    let mut cfg = host_config(S, VmState::Running);
    cfg.encap_source = Some(a6("ff02::1"));
    assert!(Dataplane::new(cfg)
        .unwrap_err()
        .to_string()
        .starts_with("encap_source"));
}

/// An H.Encaps policy with the defaults (hop limit and flow label copied, no HMAC).
fn h_encaps(name: &str, segments: Vec<Ipv6Addr>) -> PolicyConfig {
    PolicyConfig {
        name: name.into(),
        headend: Headend::HEncaps,
        segments,
        hop_limit: None,
        flow_label: FlowLabelMode::Copy,
        hmac_key: None,
    }
}

#[test]
fn a_policy_is_removed_once_nothing_uses_it_and_its_id_is_reused() {
    let mut dp = host(S, VmState::Running);
    let p = dp.policy_id("to-d").unwrap();
    let (v, _) = run(&mut dp, CLIENT_PORT, &client_frame(remote(), 100));
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_eq!(dp.counters().policy(p).packets, 1);
    // Refused while anything steers into it; each user named, nothing changed.
    let refused = |dp: &mut Dataplane| dp.remove_policy("to-d").unwrap_err().to_string();
    assert_eq!(
        refused(&mut dp),
        "policy \"to-d\": an End.B6.Encaps SID uses it"
    );
    dp.remove_sid(sid(S, END_B6)).unwrap();
    assert_eq!(refused(&mut dp), "policy \"to-d\": a mapping uses it");
    // The /128 lives in the VM address table, the /16 in the prefix table: both count.
    dp.set_mapping(
        ipnet::IpNet::from(std::net::IpAddr::V6(remote())),
        Steering::Native,
    )
    .unwrap();
    assert_eq!(refused(&mut dp), "policy \"to-d\": a mapping uses it");
    dp.remove_mapping("10.90.0.0/16".parse().unwrap()).unwrap();
    assert_eq!(dp.policy_id("to-d"), Some(p), "a refusal changes nothing");
    assert_eq!(dp.remove_policy("to-d").unwrap(), Some(p));
    assert_eq!((dp.policy_id("to-d"), dp.policy(p)), (None, None));
    assert_eq!(dp.remove_policy("to-d").unwrap(), None, "already gone");
    let e = dp
        .set_mapping(
            ipnet::IpNet::from(std::net::IpAddr::V6(remote())),
            Steering::Policy(p),
        )
        .unwrap_err();
    assert!(e.to_string().contains("no policy with id"), "{e}");
    // The next new policy takes the freed id, with fresh counters and its own rewrite.
    let fresh = dp
        .install_policy(h_encaps("fresh", vec![sid(D, END_DT6)]))
        .unwrap();
    assert_eq!(fresh, p);
    assert_eq!(dp.counters().policy(fresh).packets, 0);
    dp.set_mapping(
        ipnet::IpNet::from(std::net::IpAddr::V6(remote())),
        Steering::Policy(fresh),
    )
    .unwrap();
    let (v, out) = run(&mut dp, CLIENT_PORT, &client_frame(remote(), 100));
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_eq!(ip6(&out).dst_addr(), sid(D, END_DT6));
    assert_eq!(dp.counters().policy(fresh).packets, 1);
    // A transit steering rule is a user too.
    let mut dp = steering_into_on_d();
    assert_eq!(
        dp.remove_policy("on-d").unwrap_err().to_string(),
        "policy \"on-d\": a steering rule uses it"
    );
    assert!(dp.remove_policy("on-s").unwrap().is_some(), "unused");
}

/// Host S with a transit steering rule into policy `on-d` (a user of it); `on-s` is unused.
fn steering_into_on_d() -> Dataplane {
    let mut cfg = host_config(S, VmState::Running);
    cfg.steering = vec![SteeringConfig {
        prefix: "2001:db8:e0::/64".parse().unwrap(),
        policy: "on-d".into(),
        table: 0,
    }];
    Dataplane::new(cfg).unwrap()
}

#[test]
fn several_policies_are_removed_at_once_as_one_by_one() {
    let dp = steering_into_on_d();
    let mut names: Vec<String> = dp.policy_names().map(str::to_owned).collect();
    names.sort();
    assert!(names.len() >= 3, "{names:?}");
    // Every policy of the host (used or not), an unused one twice, one unknown.
    let unused = names
        .iter()
        .find(|n| matches!(dp.clone().remove_policy(n), Ok(Some(_))))
        .unwrap();
    let mut asked: Vec<&str> = names.iter().map(String::as_str).collect();
    asked.push(unused.as_str());
    asked.push("no-such-policy");
    let mut one_by_one = dp.clone();
    let want: Vec<_> = asked
        .iter()
        .map(|n| one_by_one.remove_policy(n).map_err(|e| e.to_string()))
        .collect();
    let mut at_once = dp;
    let got: Vec<_> = at_once
        .remove_policies(asked.iter().copied())
        .into_iter()
        .map(|r| r.map_err(|e| e.to_string()))
        .collect();
    assert_eq!(got, want);
    assert!(got.iter().any(Result::is_err), "some are in use: {got:?}");
    assert!(got.iter().any(|r| matches!(r, Ok(Some(_)))), "{got:?}");
    assert_eq!(got[got.len() - 2], Ok(None), "gone the second time");
    let left = |dp: &Dataplane| {
        let mut n: Vec<String> = dp.policy_names().map(str::to_owned).collect();
        n.sort();
        n
    };
    assert_eq!(left(&at_once), left(&one_by_one));
    // The freed ids go to new policies in the same order.
    let fresh = |dp: &mut Dataplane| {
        dp.install_policy(h_encaps("fresh", vec![sid(D, END_DT6)]))
            .unwrap()
    };
    assert_eq!(fresh(&mut at_once), fresh(&mut one_by_one));
}

#[test]
fn removing_policies_that_are_not_installed_changes_nothing() {
    let mut dp = steering_into_on_d();
    let names = |dp: &Dataplane| {
        let mut n: Vec<(String, Option<PolicyId>)> = dp
            .policy_names()
            .map(|n| (n.to_owned(), dp.policy_id(n)))
            .collect();
        n.sort();
        n
    };
    let before = names(&dp);
    assert!(dp.remove_policies(std::iter::empty()).is_empty());
    assert_eq!(
        dp.remove_policies(["no-such-policy", "nor-this"])
            .into_iter()
            .map(|r| r.map_err(|e| e.to_string()))
            .collect::<Vec<_>>(),
        vec![Ok(None), Ok(None)]
    );
    assert_eq!(names(&dp), before);
    // The users are looked up when the first installed name comes, not before: a policy in
    // use after unknown names is still refused, and an unused one still goes.
    let got: Vec<_> = dp
        .remove_policies(["no-such-policy", "on-d", "on-s"])
        .into_iter()
        .map(|r| r.map_err(|e| e.to_string()))
        .collect();
    assert_eq!(got[0], Ok(None));
    assert_eq!(
        got[1],
        Err("policy \"on-d\": a steering rule uses it".to_owned())
    );
    assert!(matches!(got[2], Ok(Some(_))), "{got:?}");
    assert!(dp.policy_id("on-s").is_none());
    assert!(dp.policy_id("on-d").is_some());
}

#[test]
fn transit_traffic_is_steered_into_a_policy_by_table() {
    let mut cfg = host_config(S, VmState::Running);
    cfg.steering = vec![
        SteeringConfig {
            prefix: "2001:db8:e0::/64".parse().unwrap(),
            policy: "to-d".into(),
            table: 0,
        },
        SteeringConfig {
            prefix: "10.99.0.0/16".parse().unwrap(),
            policy: "to-d".into(),
            table: 0,
        },
    ];
    let mut dp = Dataplane::new(cfg.clone()).unwrap();
    // IPv6 transit from the router: H.Encaps toward D (inner hop limit decremented first, as
    // Linux's ip6_forward does before a seg6 encap route).
    let p = udp6_sized(a6("2001:db8:5::9"), a6("2001:db8:e0::5"), 100);
    let (v, out) = run(&mut dp, UPLINK, &from_router(&p));
    assert_eq!(v, Verdict::Tx(UPLINK));
    let outer = ip6(&out);
    assert_eq!(outer.src_addr(), sid(S, 1));
    assert_eq!(outer.dst_addr(), sid(D, END));
    assert_eq!(outer.next_header(), srmig_wire::IpProtocol::ROUTING);
    let inner_at = 14 + 40 + 8 + 16 * 2;
    let mut want = p.clone();
    want[7] = 63;
    assert_eq!(&out[inner_at..], &want[..]);
    assert_eq!(
        dp.counters().policy(dp.policy_id("to-d").unwrap()).packets,
        1
    );
    // IPv4 transit: the same policy carries it (Next Header 4 in the SRH).
    let p4 = ipv4(
        std::net::Ipv4Addr::new(192, 0, 2, 1),
        std::net::Ipv4Addr::new(10, 99, 1, 1),
        17,
        9,
        &[0u8; 16],
    );
    let (v, out) = run(
        &mut dp,
        UPLINK,
        &eth(uplink_mac(S), router_mac(S), 0x0800, &p4),
    );
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_eq!(ip6(&out).dst_addr(), sid(D, END));
    assert_eq!(out[14 + 40], 4, "SRH Next Header: IPv4");
    assert_eq!(out[inner_at + 8], 8, "inner TTL decremented");
    // Outside the rules: routed as before.
    let p = udp6_sized(a6("2001:db8:5::9"), a6("2001:db8:e1::5"), 100);
    let (v, out) = run(&mut dp, UPLINK, &from_router(&p));
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_eq!(ip6(&out).dst_addr(), a6("2001:db8:e1::5"));

    // A VRF: up0 bound to table 20, which has a rule of its own and no route for the rest.
    cfg.ports[0].table = Some(20);
    cfg.steering[0].table = 20;
    let mut dp = Dataplane::new(cfg.clone()).unwrap();
    let p = udp6_sized(a6("2001:db8:5::9"), a6("2001:db8:e0::5"), 100);
    let (v, out) = run(&mut dp, UPLINK, &from_router(&p));
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_eq!(ip6(&out).dst_addr(), sid(D, END));
    // The IPv4 rule is in table 0: table 20 has neither a rule nor a route for it.
    let (v, _) = run(
        &mut dp,
        UPLINK,
        &eth(uplink_mac(S), router_mac(S), 0x0800, &p4),
    );
    assert_eq!(v, Verdict::Drop(DropReason::NoRoute));
    // Nor for IPv6 outside its rule: Destination Unreachable from table 20's lookup.
    let p = udp6_sized(a6("2001:db8:5::9"), a6("2001:db8:e1::5"), 100);
    expect_drop(&mut dp, UPLINK, &from_router(&p), DropReason::NoRoute);
}

#[test]
fn steering_and_port_tables_are_validated() {
    let err = |cfg: NodeConfig| Dataplane::new(cfg).unwrap_err().to_string();
    let rule = |prefix: &str, policy: &str| SteeringConfig {
        prefix: prefix.parse().unwrap(),
        policy: policy.into(),
        table: 0,
    };
    let mut c = host_config(S, VmState::Running);
    c.steering = vec![rule("2001:db8:e0::/64", "nope")];
    assert_eq!(err(c), "steering[0].policy: no policy named \"nope\"");
    let mut c = host_config(S, VmState::Running);
    c.steering = vec![rule("10.0.0.0/8", "to-d-insert")];
    assert!(err(c).starts_with("steering[0].policy: H.Insert cannot carry IPv4"));
    let mut c = host_config(S, VmState::Running);
    c.steering = vec![
        rule("2001:db8:e0::/64", "to-d"),
        rule("2001:db8:e0::/64", "on-d"),
    ];
    assert_eq!(
        err(c),
        "steering[1].prefix: duplicate steering rule for 2001:db8:e0::/64 in table 0"
    );
    let mut c = host_config(S, VmState::Running);
    c.ports[1].table = Some(5);
    assert_eq!(
        err(c),
        "ports[1].table: only an uplink can be bound to a table"
    );
    // Round trip through TOML.
    let mut c = host_config(S, VmState::Running);
    c.steering = vec![rule("2001:db8:e0::/64", "to-d")];
    c.ports[0].table = Some(3);
    let back: NodeConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
    assert_eq!(back, c);
}

/// An ARP frame (Ethernet/IPv4) from `sha`/`spa` about `tpa`, broadcast.
fn arp(op: u16, sha: [u8; 6], spa: std::net::Ipv4Addr, tpa: std::net::Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4];
    a.extend_from_slice(&op.to_be_bytes());
    a.extend_from_slice(&sha);
    a.extend_from_slice(&spa.octets());
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&tpa.octets());
    a.extend_from_slice(&[0; 18]); // Ethernet padding to 60 bytes
    eth([0xff; 6], sha, 0x0806, &a)
}

#[test]
fn arp_for_the_gateway_is_answered_and_nothing_else() {
    use std::net::Ipv4Addr;
    let gw = Ipv4Addr::new(10, 0, 0, 1);
    let mut cfg = host_config(S, VmState::Running);
    cfg.ports[0].ipv4_address = Some(Ipv4Addr::new(192, 0, 2, 2));
    let mut dp = Dataplane::new(cfg).unwrap();
    // The client VM asks for its gateway: answered in place with the gateway MAC.
    let (v, out) = run(&mut dp, CLIENT_PORT, &arp(1, CLIENT_MAC, CLIENT_V4, gw));
    assert_eq!(v, Verdict::Tx(CLIENT_PORT));
    let mut want = vec![0, 1, 8, 0, 6, 4, 0, 2];
    want.extend_from_slice(&GATEWAY_MAC);
    want.extend_from_slice(&gw.octets());
    want.extend_from_slice(&CLIENT_MAC);
    want.extend_from_slice(&CLIENT_V4.octets());
    assert_eq!(out, eth(CLIENT_MAC, GATEWAY_MAC, 0x0806, &want));
    // The router asks for the uplink's IPv4 address: answered with the port's MAC.
    let r = Ipv4Addr::new(192, 0, 2, 1);
    let (v, out) = run(
        &mut dp,
        UPLINK,
        &arp(1, router_mac(S), r, Ipv4Addr::new(192, 0, 2, 2)),
    );
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_eq!(&out[0..6], &router_mac(S));
    assert_eq!(&out[14 + 8..14 + 14], &uplink_mac(S));
    assert_eq!(dp.counters().icmp().arp_answered, 2);
    // Gratuitous ARP and probes from the VM: counted, not answered, not flooded.
    for f in [
        arp(1, CLIENT_MAC, CLIENT_V4, CLIENT_V4),
        arp(2, CLIENT_MAC, CLIENT_V4, CLIENT_V4),
        arp(1, CLIENT_MAC, Ipv4Addr::UNSPECIFIED, CLIENT_V4),
    ] {
        expect_drop(&mut dp, CLIENT_PORT, &f, DropReason::ArpGratuitous);
    }
    // Another VM's address (vm1's, from the client's port), or nobody's: spoofed.
    expect_drop(
        &mut dp,
        CLIENT_PORT,
        &arp(1, CLIENT_MAC, VM1_V4, gw),
        DropReason::ArpSpoofed,
    );
    expect_drop(
        &mut dp,
        CLIENT_PORT,
        &arp(1, CLIENT_MAC, Ipv4Addr::new(10, 9, 9, 9), gw),
        DropReason::ArpSpoofed,
    );
    expect_drop(
        &mut dp,
        CLIENT_PORT,
        &arp(2, CLIENT_MAC, VM1_V4, VM1_V4),
        DropReason::ArpSpoofed,
    );
    // Not for us: another address, a reply, the gateway asked on an uplink.
    expect_drop(
        &mut dp,
        CLIENT_PORT,
        &arp(1, CLIENT_MAC, CLIENT_V4, Ipv4Addr::new(10, 0, 0, 99)),
        DropReason::ArpNotForUs,
    );
    expect_drop(
        &mut dp,
        CLIENT_PORT,
        &arp(2, CLIENT_MAC, CLIENT_V4, gw),
        DropReason::ArpNotForUs,
    );
    expect_drop(
        &mut dp,
        UPLINK,
        &arp(1, router_mac(S), r, gw),
        DropReason::ArpNotForUs,
    );
    // Malformed: short, wrong hardware type, wrong operation.
    let mut f = arp(1, CLIENT_MAC, CLIENT_V4, gw);
    f.truncate(14 + 20);
    expect_drop(&mut dp, CLIENT_PORT, &f, DropReason::ArpInvalid);
    let mut f = arp(1, CLIENT_MAC, CLIENT_V4, gw);
    f[15] = 6;
    expect_drop(&mut dp, CLIENT_PORT, &f, DropReason::ArpInvalid);
    let mut f = arp(1, CLIENT_MAC, CLIENT_V4, gw);
    f[21] = 3;
    expect_drop(&mut dp, CLIENT_PORT, &f, DropReason::ArpInvalid);
    assert!(drain(&mut dp, T0).is_empty());
}

/// The ICMPv4 error in a generated frame: (IPv4 source, destination, type, code, next-hop MTU,
/// quoted bytes), with both checksums verified.
fn icmpv4_of(f: &[u8]) -> (std::net::Ipv4Addr, std::net::Ipv4Addr, u8, u8, u16, Vec<u8>) {
    assert_eq!(&f[12..14], &[0x08, 0x00], "an IPv4 frame");
    let ip = &f[14..];
    assert_eq!(ip[0], 0x45);
    assert_eq!(
        srmig_wire::checksum::data(&ip[..20]),
        0xffff,
        "IPv4 checksum"
    );
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    assert_eq!(total, ip.len());
    assert!(total <= 576);
    assert_eq!(ip[9], 1, "ICMP");
    let m = &ip[20..];
    assert_eq!(srmig_wire::checksum::data(m), 0xffff, "ICMP checksum");
    let addr = |b: &[u8]| std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]);
    (
        addr(&ip[12..16]),
        addr(&ip[16..20]),
        m[0],
        m[1],
        u16::from_be_bytes([m[6], m[7]]),
        m[8..].to_vec(),
    )
}

#[test]
fn icmpv4_errors_time_exceeded_unreachable_and_fragmentation_needed() {
    use std::net::Ipv4Addr;
    let gw = Ipv4Addr::new(10, 0, 0, 1);
    let up_v4 = Ipv4Addr::new(192, 0, 2, 2);
    let mut cfg = host_config(S, VmState::Running);
    cfg.ports[0].ipv4_address = Some(up_v4);
    let mut dp = Dataplane::new(cfg.clone()).unwrap();
    let from_client_v4 = |p: &[u8]| eth(GATEWAY_MAC, CLIENT_MAC, 0x0800, p);
    // TTL 1 from the client VM: Time Exceeded from the gateway, on the client's port.
    let p = ipv4(CLIENT_V4, Ipv4Addr::new(192, 0, 2, 77), 17, 1, &[0u8; 600]);
    expect_drop(
        &mut dp,
        CLIENT_PORT,
        &from_client_v4(&p),
        DropReason::Ipv4TtlExceeded,
    );
    let g = drain(&mut dp, T0);
    assert_eq!(g.len(), 1);
    assert_eq!(g[0].0, CLIENT_PORT);
    assert_eq!(&g[0].1[0..12], &[CLIENT_MAC, GATEWAY_MAC].concat()[..]);
    let (src, dst, ty, code, _, quoted) = icmpv4_of(&g[0].1);
    assert_eq!((src, dst, ty, code), (gw, CLIENT_V4, 11, 0));
    assert_eq!(
        quoted,
        p[..576 - 28].to_vec(),
        "as much as fits in 576 bytes"
    );
    // Decapsulated at End.DT4 with inner TTL 1: to the inner source through the FIB (up0),
    // from the uplink's IPv4 address.
    let outsider_v4 = Ipv4Addr::new(198, 51, 100, 7);
    let inner = ipv4(outsider_v4, VM1_V4, 17, 1, &[1u8; 8]);
    let f = uplink_frame(S, &[sid(S, END_DT4)], 0, &inner);
    expect_drop(&mut dp, UPLINK, &f, DropReason::Ipv4TtlExceeded);
    let g = drain(&mut dp, T0);
    assert_eq!(g.len(), 1);
    assert_eq!(g[0].0, UPLINK);
    let (src, dst, ty, code, _, quoted) = icmpv4_of(&g[0].1);
    assert_eq!((src, dst, ty, code), (up_v4, outsider_v4, 11, 0));
    assert_eq!(quoted, inner);
    // H.Encaps of a DF packet that no longer fits: fragmentation needed with the MTU the
    // client must use (the egress MTU minus the 40 + 8 + 32 bytes this node adds).
    dp.set_port_mtu(UPLINK, Some(1400)).unwrap();
    let big = ipv4(CLIENT_V4, REMOTE_V4, 17, 64, &[2u8; 1380]);
    expect_drop(
        &mut dp,
        CLIENT_PORT,
        &from_client_v4(&big),
        DropReason::PacketTooBig,
    );
    let g = drain(&mut dp, T0);
    assert_eq!(g.len(), 1);
    let (src, dst, ty, code, mtu, _) = icmpv4_of(&g[0].1);
    assert_eq!((src, dst, ty, code), (gw, CLIENT_V4, 3, 4));
    assert_eq!(mtu, 1400 - 40 - 8 - 32);
    assert_eq!(dp.counters().icmp().packet_too_big_sent, 1);
    // Without DF: dropped, no error (this node does not fragment).
    let mut no_df = big.clone();
    no_df[6] = 0;
    no_df[10..12].fill(0);
    let c = !srmig_wire::checksum::data(&no_df[..20]);
    no_df[10..12].copy_from_slice(&c.to_be_bytes());
    expect_drop(
        &mut dp,
        CLIENT_PORT,
        &from_client_v4(&no_df),
        DropReason::PacketTooBig,
    );
    assert!(drain(&mut dp, T0).is_empty());
    // No route (a VRF without routes): network unreachable, back to the source over the
    // main table.
    cfg.ports[0].table = Some(30);
    let mut dp = Dataplane::new(cfg.clone()).unwrap();
    let p = ipv4(outsider_v4, Ipv4Addr::new(203, 0, 113, 1), 17, 9, &[0u8; 8]);
    let f = eth(uplink_mac(S), router_mac(S), 0x0800, &p);
    expect_drop(&mut dp, UPLINK, &f, DropReason::NoRoute);
    let g = drain(&mut dp, T0);
    assert_eq!(g.len(), 1);
    let (src, dst, ty, code, _, quoted) = icmpv4_of(&g[0].1);
    assert_eq!((src, dst, ty, code), (up_v4, outsider_v4, 3, 0));
    // Quoted as forwarded: TTL decremented, header checksum updated.
    let mut want = p.clone();
    want[8] -= 1;
    want[10..12].fill(0);
    let c = !srmig_wire::checksum::data(&want[..20]);
    want[10..12].copy_from_slice(&c.to_be_bytes());
    assert_eq!(quoted, want);
    // Never about an ICMPv4 error, a non-first fragment, or a broadcast destination.
    let mut err = ipv4(
        outsider_v4,
        Ipv4Addr::new(203, 0, 113, 1),
        1,
        9,
        &[11, 0, 0, 0],
    );
    let before = dp.counters().icmp().suppressed;
    expect_drop(
        &mut dp,
        UPLINK,
        &eth(uplink_mac(S), router_mac(S), 0x0800, &err),
        DropReason::NoRoute,
    );
    err[6] = 0x00;
    err[7] = 0x10; // fragment offset 16
    err[9] = 17;
    err[10..12].fill(0);
    let c = !srmig_wire::checksum::data(&err[..20]);
    err[10..12].copy_from_slice(&c.to_be_bytes());
    expect_drop(
        &mut dp,
        UPLINK,
        &eth(uplink_mac(S), router_mac(S), 0x0800, &err),
        DropReason::NoRoute,
    );
    assert!(drain(&mut dp, T0).is_empty());
    assert_eq!(dp.counters().icmp().suppressed, before + 2);
    // Without an IPv4 address on the way back: nothing is sent (counted as suppressed).
    cfg.ports[0].ipv4_address = None;
    let mut dp = Dataplane::new(cfg).unwrap();
    expect_drop(&mut dp, UPLINK, &f, DropReason::NoRoute);
    assert!(drain(&mut dp, T0).is_empty());
    assert_eq!(dp.counters().icmp().suppressed, 1);
}

#[test]
fn proxy_ndp_answers_for_listed_addresses_only() {
    let host_addr = a6("cafe::1");
    let proxied = a6("cafe::2");
    let mut cfg = host_config(S, VmState::Running);
    cfg.ports[0].proxy_ndp = vec![proxied];
    let mut dp = Dataplane::new(cfg).unwrap();
    let solicit = |target: Ipv6Addr, unicast: bool| {
        let ns = neighbor_solicitation(host_addr, router_mac(S), target);
        let mut ns = ns;
        let dst_mac = if unicast {
            ns[24..40].copy_from_slice(&target.octets());
            // The checksum covers the destination: rebuild it.
            ns[42..44].fill(0);
            let c = srmig_wire::checksum::combine(&[
                srmig_wire::checksum::pseudo_header_v6(
                    &host_addr,
                    &target,
                    srmig_wire::IpProtocol::ICMPV6,
                    (ns.len() - 40) as u32,
                ),
                srmig_wire::checksum::data(&ns[40..]),
            ]);
            ns[42..44].copy_from_slice(&(!c).to_be_bytes());
            uplink_mac(S)
        } else {
            let mut m = [0x33, 0x33, 0xff, 0, 0, 0];
            m[3..].copy_from_slice(&target.octets()[13..]);
            m
        };
        eth(dst_mac, router_mac(S), 0x86dd, &ns)
    };
    for unicast in [false, true] {
        let (v, _) = run(&mut dp, UPLINK, &solicit(proxied, unicast));
        assert_eq!(v, Verdict::Consumed, "unicast {unicast}");
        let g = drain(&mut dp, T0);
        assert_eq!(g.len(), 1);
        let (src, dst, r) = icmp_of(&g[0].1);
        assert_eq!((src, dst), (proxied, host_addr));
        match r {
            IcmpRepr::Ndisc(NdiscRepr::NeighborAdvert {
                target_addr,
                lladdr,
                ..
            }) => {
                assert_eq!(target_addr, proxied);
                assert_eq!(lladdr.map(|a| a.0), Some(uplink_mac(S)));
            }
            other => panic!("{other:?}"),
        }
    }
    // Not listed: not answered.
    let (v, _) = run(&mut dp, UPLINK, &solicit(a6("cafe::4"), false));
    assert_eq!(v, Verdict::Drop(DropReason::NdpNotForUs));
    assert!(drain(&mut dp, T0).is_empty());
    // An echo request to the proxied address is traffic, not neighbour discovery: routed.
    let (v, _) = run(
        &mut dp,
        UPLINK,
        &from_router(&echo_request(host_addr, proxied, 1, b"p")),
    );
    assert_eq!(v, Verdict::Tx(UPLINK));
}

#[test]
fn extra_locators_hold_sids_and_unknown_functions() {
    let mut cfg = host_config(S, VmState::Running);
    cfg.extra_locators = vec!["fc00:43:200::/48".parse().unwrap()];
    // An End.DT6 like the canonical one, at a SID of the extra locator.
    let mut dt6 = cfg
        .sids
        .iter()
        .find(|s| s.behavior == Behavior::EndDt6)
        .unwrap()
        .clone();
    dt6.sid = a6("fc00:43:200::6006");
    cfg.sids.push(dt6);
    let mut dp = Dataplane::new(cfg.clone()).unwrap();
    assert!(dp.sid_id(a6("fc00:43:200::6006")).is_some());
    // An unknown function inside the extra locator: NoSid, not routed.
    let p = udp6_sized(sid(C, 1), a6("fc00:43:200::99"), 80);
    expect_drop(&mut dp, UPLINK, &from_router(&p), DropReason::NoSid);
    // Outside every locator: refused, naming them.
    let mut bad = cfg.clone();
    bad.sids.last_mut().unwrap().sid = a6("fc00:44::1");
    let e = Dataplane::new(bad).unwrap_err().to_string();
    assert!(
        e.contains("SID is outside the locators fc00:0:1::/48, fc00:43:200::/48"),
        "{e}"
    );
    // Overlapping locators: refused.
    let mut bad = cfg;
    bad.extra_locators = vec!["fc00:0:1:5::/64".parse().unwrap()];
    assert_eq!(
        Dataplane::new(bad).unwrap_err().to_string(),
        "extra_locators[0]: fc00:0:1:5::/64 overlaps another locator"
    );
}

#[test]
fn icmpv4_echo_to_the_gateway_and_an_uplink_address_is_answered() {
    use std::net::Ipv4Addr;
    let gw = Ipv4Addr::new(10, 0, 0, 1);
    let up_v4 = Ipv4Addr::new(192, 0, 2, 2);
    let mut cfg = host_config(S, VmState::Running);
    cfg.ports[0].ipv4_address = Some(up_v4);
    let mut dp = Dataplane::new(cfg).unwrap();
    let echo = |src: Ipv4Addr, dst: Ipv4Addr, ty: u8| {
        let mut m = vec![ty, 0, 0, 0, 0x12, 0x34, 0, 7, b'p', b'i', b'n', b'g'];
        let c = !srmig_wire::checksum::data(&m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        ipv4(src, dst, 1, 64, &m)
    };
    for (port, from_mac, src, dst, our_mac) in [
        (CLIENT_PORT, CLIENT_MAC, CLIENT_V4, gw, GATEWAY_MAC),
        (
            UPLINK,
            router_mac(S),
            Ipv4Addr::new(192, 0, 2, 1),
            up_v4,
            uplink_mac(S),
        ),
    ] {
        let req = echo(src, dst, 8);
        let (v, out) = run(&mut dp, port, &eth(our_mac, from_mac, 0x0800, &req));
        assert_eq!(v, Verdict::Tx(port));
        assert_eq!(&out[0..12], &[from_mac, our_mac].concat()[..]);
        let ip = &out[14..];
        assert_eq!(srmig_wire::checksum::data(&ip[..20]), 0xffff);
        assert_eq!(
            (&ip[12..16], &ip[16..20]),
            (&dst.octets()[..], &src.octets()[..])
        );
        assert_eq!(ip[8], 64);
        assert_eq!(ip[20], 0, "echo reply");
        assert_eq!(srmig_wire::checksum::data(&ip[20..]), 0xffff);
        assert_eq!(&ip[24..], &req[24..], "identifier, sequence and data");
    }
    assert_eq!(dp.counters().icmp().echo_replies, 2);
    // Not an echo request: not served; a bad checksum: refused.
    let udp = ipv4(CLIENT_V4, gw, 17, 64, &[0u8; 8]);
    expect_drop(
        &mut dp,
        CLIENT_PORT,
        &eth(GATEWAY_MAC, CLIENT_MAC, 0x0800, &udp),
        DropReason::DestinedToGateway,
    );
    let mut bad = echo(CLIENT_V4, gw, 8);
    let last = bad.len() - 1;
    bad[last] ^= 1;
    expect_drop(
        &mut dp,
        CLIENT_PORT,
        &eth(GATEWAY_MAC, CLIENT_MAC, 0x0800, &bad),
        DropReason::IcmpBadChecksum,
    );
    let reply = echo(Ipv4Addr::new(192, 0, 2, 1), up_v4, 0);
    expect_drop(
        &mut dp,
        UPLINK,
        &eth(uplink_mac(S), router_mac(S), 0x0800, &reply),
        DropReason::LocalNotServed,
    );
}

#[test]
fn proxy_arp_answers_for_listed_addresses_only() {
    use std::net::Ipv4Addr;
    let host = Ipv4Addr::new(10, 0, 0, 1);
    let proxied = Ipv4Addr::new(10, 0, 0, 2);
    let host_mac = [0x02, 0, 0, 0, 0, 0x0a];
    let mut cfg = host_config(S, VmState::Running);
    cfg.ports[0].ipv4_address = Some(Ipv4Addr::new(10, 0, 0, 254));
    cfg.ports[0].proxy_arp = vec![proxied];
    let mut dp = Dataplane::new(cfg.clone()).unwrap();
    // A host asks for an address behind this node: answered with the port's MAC, as the
    // proxied address, back to the host.
    let (v, out) = run(&mut dp, UPLINK, &arp(1, host_mac, host, proxied));
    assert_eq!(v, Verdict::Tx(UPLINK));
    let mut want = vec![0, 1, 8, 0, 6, 4, 0, 2];
    want.extend_from_slice(&uplink_mac(S));
    want.extend_from_slice(&proxied.octets());
    want.extend_from_slice(&host_mac);
    want.extend_from_slice(&host.octets());
    assert_eq!(out, eth(host_mac, uplink_mac(S), 0x0806, &want));
    assert_eq!(dp.counters().icmp().arp_answered, 1);
    // Any other address (not listed, not the port's) is not ours; replies are not answered.
    expect_drop(
        &mut dp,
        UPLINK,
        &arp(1, host_mac, host, Ipv4Addr::new(10, 0, 0, 3)),
        DropReason::ArpNotForUs,
    );
    expect_drop(
        &mut dp,
        UPLINK,
        &arp(2, host_mac, host, proxied),
        DropReason::ArpNotForUs,
    );
    // Not on a VM port, and only unicast addresses.
    let mut bad = cfg.clone();
    bad.ports[1].proxy_arp = vec![proxied];
    let e = Dataplane::new(bad).unwrap_err().to_string();
    assert!(e.contains("ports[1].proxy_arp"), "{e}");
    let mut bad = cfg;
    bad.ports[0].proxy_arp = vec![Ipv4Addr::BROADCAST];
    let e = Dataplane::new(bad).unwrap_err().to_string();
    assert!(
        e.contains("ports[0].proxy_arp: 255.255.255.255 is not a unicast address"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// Commit fence (crate::fence), in virtual time
// ---------------------------------------------------------------------------------------------

/// `frame` as the underlay hands it to host `h` (its MACs rewritten).
fn towards(h: u16, frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[0..6].copy_from_slice(&uplink_mac(h));
    f[6..12].copy_from_slice(&router_mac(h));
    f
}

/// A direct packet for vm1 from ingress `src` (End.DT6 at D).
fn direct_from(src: Ipv6Addr, inner: &[u8]) -> Vec<u8> {
    eth(
        uplink_mac(D),
        router_mac(D),
        0x86dd,
        &srv6(src, &[sid(D, END_DT6)], 0, inner),
    )
}

fn old_path() -> [Ipv6Addr; 2] {
    [sid(S, END_S), sid(D, END_SBUF)]
}

/// The marker `ingress` sends for vm1 along the old path (its first frame out).
fn marker_from(ingress: &mut Dataplane, now: Instant) -> Vec<u8> {
    assert!(ingress.send_fence_marker(vm1().into(), &old_path()));
    assert!(ingress.has_pending_transmit());
    let out = drain(ingress, now);
    assert_eq!(out.len(), 1, "one marker");
    assert_eq!(out[0].0, UPLINK);
    out[0].1.clone()
}

fn numbered(k: u8) -> Vec<u8> {
    udp6(client(), vm1(), 1000, 2000, &[k; 16])
}

#[test]
fn the_fence_orders_direct_packets_behind_the_old_path() {
    let vm = VmId(0);
    let mut c = host(C, VmState::Absent);
    let mut s = host(S, VmState::Absent);
    let mut d = host(D, VmState::Running);
    d.set_fence_armed(vm, true).unwrap();
    assert!(d.fence_armed(vm));
    // p1 took the SR path before the commit; S forwards it, it is still in flight.
    let (v, p1_at_s) = run(&mut s, UPLINK, &paper_frame(S, 1, &numbered(1)));
    assert_eq!(v, Verdict::Tx(UPLINK));
    // C commits: marker down the old path, then p2 straight to D, which overtakes p1.
    let marker = marker_from(&mut c, T0);
    let p2 = direct_from(sid(C, 1), &numbered(2));
    assert_eq!(
        run(&mut d, UPLINK, &p2).0,
        Verdict::Held(vm),
        "p2 waits for C's marker"
    );
    assert!(drain(&mut d, T0).is_empty());
    let (v, p1) = run(&mut d, UPLINK, &towards(D, &p1_at_s));
    assert_eq!(
        v,
        Verdict::Tx(VM1_PORT),
        "p1 (old path) is delivered at once"
    );
    assert_eq!(p1[14..], forwarded(&numbered(1)));
    // The marker travels C -> S (End.S forwards it, the VM is not there) -> D.
    let (v, m_at_s) = run(&mut s, UPLINK, &towards(S, &marker));
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_eq!(ip6(&m_at_s).dst_addr(), sid(D, END_SBUF));
    let (v, _) = run(&mut d, UPLINK, &towards(D, &m_at_s));
    assert_eq!(v, Verdict::Consumed, "a marker never reaches the VM");
    let out = drain(&mut d, T0);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, VM1_PORT);
    assert_eq!(out[0].1[14..], forwarded(&numbered(2)));
    // The pair is open: p3 passes.
    let (v, _) = run(&mut d, UPLINK, &direct_from(sid(C, 1), &numbered(3)));
    assert_eq!(v, Verdict::Tx(VM1_PORT));
    let f = d.counters().fence();
    assert_eq!(
        (f.held, f.released, f.markers_received, f.timeouts),
        (1, 1, 1, 0)
    );
    assert_eq!(c.counters().fence().markers_sent, 1);
    assert_eq!(d.counters().vm(vm).fenced, 1);
    assert_eq!(d.counters().fence_now(), (0, 1));
}

#[test]
fn each_ingress_waits_for_its_own_marker_or_its_timeout() {
    let vm = VmId(0);
    let mut c = host(C, VmState::Absent);
    let mut d = host(D, VmState::Running);
    d.set_fence_armed(vm, true).unwrap();
    let t = |ms: u64| Instant(T0.as_nanos() + ms * 1_000_000);
    let other = sid(4, 1);
    run_at(&mut d, t(0), UPLINK, &direct_from(sid(C, 1), &numbered(1)));
    let (v, _) = run_at(&mut d, t(5), UPLINK, &direct_from(other, &numbered(2)));
    assert_eq!(v, Verdict::Held(vm));
    // C's marker (straight to D's End.SBUF here: S already forwarded it) releases C's only.
    let marker = marker_from(&mut c, t(1));
    let mut at_d = towards(D, &marker);
    // As S's End.S leaves it: DA = D::End.SBUF, Segments Left 0.
    at_d[14 + 24..14 + 40].copy_from_slice(&sid(D, END_SBUF).octets());
    at_d[14 + 40 + 3] = 0;
    assert_eq!(run_at(&mut d, t(6), UPLINK, &at_d).0, Verdict::Consumed);
    // Reported (srmigd tells the controller, whose cleanup waits for every ingress).
    let arrival = |ingress: Ipv6Addr, at: Instant| crate::MarkerArrival { vm, ingress, at };
    assert_eq!(d.poll_fence_arrival(), Some(arrival(sid(C, 1), t(6))));
    assert_eq!(d.poll_fence_arrival(), None);
    let out = drain(&mut d, t(6));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1[14..], forwarded(&numbered(1)));
    // The other ingress's marker is lost: its pair opens at its deadline (5 + 500 ms).
    assert_eq!(d.poll_timeout(), Some(t(505)));
    d.handle_timeout(t(504));
    assert!(drain(&mut d, t(504)).is_empty());
    d.handle_timeout(t(505));
    let out = drain(&mut d, t(505));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1[14..], forwarded(&numbered(2)));
    // A duplicate of C's marker, and the late marker of the other ingress, change nothing.
    assert_eq!(run_at(&mut d, t(510), UPLINK, &at_d).0, Verdict::Consumed);
    let mut late = at_d.clone();
    late[14 + 8..14 + 24].copy_from_slice(&other.octets());
    assert_eq!(run_at(&mut d, t(511), UPLINK, &late).0, Verdict::Consumed);
    assert_eq!(d.poll_fence_arrival(), Some(arrival(sid(C, 1), t(510))));
    assert_eq!(d.poll_fence_arrival(), Some(arrival(other, t(511))));
    // Not fenced any more: a marker is no news.
    d.set_fence_armed(vm, false).unwrap();
    assert_eq!(run_at(&mut d, t(512), UPLINK, &late).0, Verdict::Consumed);
    assert_eq!(d.poll_fence_arrival(), None);
    let f = d.counters().fence();
    assert_eq!(
        (
            f.markers_received,
            f.markers_duplicate,
            f.markers_late,
            f.timeouts
        ),
        (1, 1, 1, 1)
    );
    assert_eq!((f.held, f.released, f.markers_unarmed), (2, 2, 1));
    assert_eq!(d.poll_timeout(), None);
}

#[test]
fn order_holds_within_a_pair_while_its_fifo_drains() {
    let vm = VmId(0);
    let mut c = host(C, VmState::Absent);
    let mut d = host(D, VmState::Running);
    d.set_fence_armed(vm, true).unwrap();
    for k in 1..=3 {
        let (v, _) = run(&mut d, UPLINK, &direct_from(sid(C, 1), &numbered(k)));
        assert_eq!(v, Verdict::Held(vm));
    }
    let mut at_d = towards(D, &marker_from(&mut c, T0));
    at_d[14 + 24..14 + 40].copy_from_slice(&sid(D, END_SBUF).octets());
    at_d[14 + 40 + 3] = 0;
    // The marker and a newer packet in the same batch: the newer one queues behind the FIFO.
    let mut b = Batch::new(2);
    assert!(b.push(UPLINK, &at_d).unwrap());
    assert!(b
        .push(UPLINK, &direct_from(sid(C, 1), &numbered(4)))
        .unwrap());
    d.process_batch(T0, &mut b);
    assert_eq!(b.packets()[0].verdict, Verdict::Consumed);
    assert_eq!(b.packets()[1].verdict, Verdict::Held(vm));
    let out: Vec<Vec<u8>> = drain(&mut d, T0).into_iter().map(|(_, f)| f).collect();
    let want: Vec<Vec<u8>> = (1..=4).map(|k| forwarded(&numbered(k))).collect();
    assert_eq!(
        out.iter().map(|f| f[14..].to_vec()).collect::<Vec<_>>(),
        want
    );
}

#[test]
fn markers_never_reach_a_vm_and_come_only_from_the_domain() {
    let vm = VmId(0);
    let mut c = host(C, VmState::Absent);
    let marker = marker_from(&mut c, T0);
    // At S with the VM running there (a rollback, say): End.S forwards it, never delivers.
    let mut s = host(S, VmState::Running);
    let (v, out) = run(&mut s, UPLINK, &towards(S, &marker));
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_eq!(ip6(&out).dst_addr(), sid(D, END_SBUF));
    // At a decapsulating behavior other than End.SBUF: no upper layer, not delivered.
    let mut d = host(D, VmState::Running);
    let mut at_dt6 = towards(D, &out);
    at_dt6[14 + 24..14 + 40].copy_from_slice(&sid(D, END_DT6).octets());
    let (v, _) = run(&mut d, UPLINK, &at_dt6);
    assert!(matches!(v, Verdict::Drop(_)), "{v:?}");
    assert_eq!(d.counters().vm(vm).tx.packets, 0);
    // At End.SBUF of a VM not fenced here: consumed, counted.
    let (v, _) = run(&mut d, UPLINK, &towards(D, &out));
    assert_eq!(v, Verdict::Consumed);
    assert_eq!(d.counters().fence().markers_unarmed, 1);
    // From outside the SR domain (infrastructure_prefixes): refused before End.SBUF.
    d.set_fence_armed(vm, true).unwrap();
    let mut forged = towards(D, &out);
    forged[14 + 8..14 + 24].copy_from_slice(&outsider().octets());
    expect_drop(&mut d, UPLINK, &forged, DropReason::SrhFromOutsideDomain);
    assert_eq!(d.counters().fence().markers_received, 0);
    assert_eq!(d.counters().vm(vm).tx.packets, 0);
}

/// A host of the canonical world with the test HMAC key, its uplink in `mode`, signing its
/// markers with the key when `sign`.
fn keyed_host(h: u16, state: VmState, mode: HmacMode, sign: bool) -> Dataplane {
    let mut cfg = host_config(h, state);
    with_hmac(&mut cfg);
    cfg.ports[usize::from(UPLINK.0)].hmac = Some(mode);
    cfg.migration_hmac_key = sign.then_some(HMAC_KEY_ID);
    Dataplane::new(cfg).unwrap()
}

#[test]
fn markers_signed_with_the_migration_key_pass_uplinks_that_require_hmac() {
    let vm = VmId(0);
    let mut c = keyed_host(C, VmState::Absent, HmacMode::Require, true);
    let marker = marker_from(&mut c, T0);
    let o = ip6(&marker);
    assert_eq!(usize::from(o.payload_len()), o.payload().len());
    let h = Srh::new_checked(o.payload()).unwrap();
    let tlv = h
        .hmac_tlv()
        .expect("a well-formed TLV area")
        .expect("an HMAC TLV");
    assert_eq!((tlv.key_id, tlv.d_flag), (HMAC_KEY_ID, false));
    assert_eq!(
        crate::fence::marker_vm(o.payload()),
        Some(std::net::IpAddr::V6(vm1())),
        "the fence TLV is still read"
    );
    // S verifies it at End.S and forwards it; D verifies it at End.SBUF and opens the pair.
    let mut s = keyed_host(S, VmState::Absent, HmacMode::Require, true);
    let (v, out) = run(&mut s, UPLINK, &towards(S, &marker));
    assert_eq!(v, Verdict::Tx(UPLINK));
    let mut d = keyed_host(D, VmState::Running, HmacMode::Require, true);
    d.set_fence_armed(vm, true).unwrap();
    let (v, _) = run(&mut d, UPLINK, &towards(D, &out));
    assert_eq!(v, Verdict::Consumed);
    assert_eq!(d.counters().fence().markers_received, 1);
    // Without the key the same uplink drops it: the pair would wait for its timeout.
    let mut c = keyed_host(C, VmState::Absent, HmacMode::Require, false);
    let unsigned = marker_from(&mut c, T0);
    let mut s = keyed_host(S, VmState::Absent, HmacMode::Require, true);
    assert_eq!(
        run(&mut s, UPLINK, &towards(S, &unsigned)).0,
        Verdict::Drop(DropReason::HmacMissing)
    );
    // A marker whose source was changed on the way fails the HMAC (the source and the path
    // are in the HMAC text, RFC 8754 2.1.2.1; the TLVs are not).
    let mut forged = towards(D, &out);
    forged[14 + 8 + 15] ^= 1;
    assert_eq!(
        run(&mut d, UPLINK, &forged).0,
        Verdict::Drop(DropReason::HmacMismatch)
    );
    assert_eq!(d.counters().fence().markers_received, 1);
}

#[test]
fn the_migration_key_must_be_one_of_the_nodes_keys() {
    let mut cfg = host_config(C, VmState::Absent);
    cfg.migration_hmac_key = Some(HMAC_KEY_ID);
    let Err(e) = Dataplane::new(cfg.clone()) else {
        panic!("accepted a migration key that is not among the node's keys");
    };
    assert_eq!(e.path(), "migration_hmac_key");
    assert!(e.to_string().contains("no key with id 7"), "{e}");
    with_hmac(&mut cfg);
    assert!(Dataplane::new(cfg).is_ok());
}

#[test]
fn the_source_sends_its_marker_through_its_own_end_s() {
    // S commits too: its marker takes its local End.S in the same pass and leaves for D.
    let mut s = host(S, VmState::Absent);
    let m = marker_from(&mut s, T0);
    let o = ip6(&m);
    assert_eq!(o.src_addr(), sid(S, 1));
    assert_eq!(o.dst_addr(), sid(D, END_SBUF));
    let h = Srh::new_checked(o.payload()).unwrap();
    assert_eq!(h.segments_left(), 0);
    assert_eq!(
        crate::fence::marker_vm(o.payload()),
        Some(std::net::IpAddr::V6(vm1()))
    );
}

#[test]
fn a_pair_forgotten_at_the_disarm_leaves_the_release_list() {
    // Found by the `fence_ops` fuzz target: a pair whose last held packet has left, still in
    // the release list, was forgotten by the disarm but stayed in the list; the next pair to
    // take its slot was released before its own marker.
    let vm = VmId(0);
    let mut d = host(D, VmState::Running);
    let marker = |src: Ipv6Addr| {
        let m = crate::fence::build_marker(src, &[sid(D, END_SBUF)], vm1().into()).unwrap();
        eth(uplink_mac(D), router_mac(D), 0x86dd, &m)
    };
    d.set_fence_armed(vm, true).unwrap();
    let (v, _) = run(&mut d, UPLINK, &direct_from(sid(C, 1), &numbered(1)));
    assert_eq!(v, Verdict::Held(vm));
    assert_eq!(run(&mut d, UPLINK, &marker(sid(C, 1))).0, Verdict::Consumed);
    // This round takes the held packet; the pair is empty, its release not yet ended.
    let mut out = PacketBuf::new();
    assert_eq!(d.poll_transmit(T0, &mut out), Some(VM1_PORT));
    // The cleanup disarms; the next commit arms again and another ingress's packet waits.
    d.set_fence_armed(vm, false).unwrap();
    d.set_fence_armed(vm, true).unwrap();
    let (v, _) = run(&mut d, UPLINK, &direct_from(sid(S, 1), &numbered(2)));
    assert_eq!(v, Verdict::Held(vm));
    assert_eq!(
        d.poll_transmit(T0, &mut out),
        None,
        "released before its marker"
    );
    assert_eq!(run(&mut d, UPLINK, &marker(sid(S, 1))).0, Verdict::Consumed);
    let out = drain(&mut d, T0);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1[14..], forwarded(&numbered(2)));
}

#[test]
fn a_pair_still_releasing_after_the_disarm_keeps_its_new_packets_behind() {
    // srmigd takes what `poll_transmit` releases a chunk per poll round: a pair's queue may
    // still be leaving when the cleanup disarms the fence, and the pair's next packet must
    // not pass what is left of it.
    let vm = VmId(0);
    let mut d = host(D, VmState::Running);
    d.set_fence_armed(vm, true).unwrap();
    for k in 1..=3 {
        let (v, _) = run(&mut d, UPLINK, &direct_from(sid(C, 1), &numbered(k)));
        assert_eq!(v, Verdict::Held(vm));
    }
    d.set_fence_armed(vm, false).unwrap();
    // This round takes one frame.
    let mut out = PacketBuf::new();
    assert_eq!(d.poll_transmit(T0, &mut out), Some(VM1_PORT));
    assert_eq!(out.data()[14..], forwarded(&numbered(1)));
    // Next round: the pair's new packet queues behind 2 and 3; another ingress, never
    // held, passes.
    let (v, _) = run(&mut d, UPLINK, &direct_from(sid(C, 1), &numbered(4)));
    assert_eq!(v, Verdict::Held(vm));
    let (v, _) = run(&mut d, UPLINK, &direct_from(sid(4, 1), &numbered(5)));
    assert_eq!(v, Verdict::Tx(VM1_PORT));
    let out: Vec<Vec<u8>> = drain(&mut d, T0)
        .into_iter()
        .map(|(_, f)| f[14..].to_vec())
        .collect();
    let want: Vec<Vec<u8>> = (2..=4).map(|k| forwarded(&numbered(k))).collect();
    assert_eq!(out, want);
    // Drained: the pair is forgotten, and its packets pass again.
    assert_eq!(d.counters().fence_now(), (0, 0));
    let (v, _) = run(&mut d, UPLINK, &direct_from(sid(C, 1), &numbered(6)));
    assert_eq!(v, Verdict::Tx(VM1_PORT));
}

#[test]
fn disarming_releases_what_is_held_and_other_vms_are_never_fenced() {
    let vm = VmId(0);
    let mut d = host(D, VmState::Running);
    d.set_fence_armed(vm, true).unwrap();
    let (v, _) = run(&mut d, UPLINK, &direct_from(sid(C, 1), &numbered(1)));
    assert_eq!(v, Verdict::Held(vm));
    // The local client VM's traffic to vm1 is fenced too (this node's own ingress).
    let (v, _) = run(&mut d, CLIENT_PORT, &client_frame(vm1(), 80));
    assert_eq!(v, Verdict::Held(vm));
    // ... but not traffic to the client VM (not fenced).
    let (v, _) = run(
        &mut d,
        UPLINK,
        &direct_from(sid(C, 1), &udp6(vm1(), client(), 1, 2, b"x")),
    );
    assert_eq!(v, Verdict::Tx(CLIENT_PORT));
    d.set_fence_armed(vm, false).unwrap();
    let out = drain(&mut d, T0);
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|(p, _)| *p == VM1_PORT));
    assert_eq!(d.counters().fence_now(), (0, 0));
    let (v, _) = run(&mut d, UPLINK, &direct_from(sid(C, 1), &numbered(2)));
    assert_eq!(v, Verdict::Tx(VM1_PORT));
}
