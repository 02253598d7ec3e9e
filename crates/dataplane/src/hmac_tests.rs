//! HMAC TLV tests through the engine: a frame signed by the Linux kernel verifies, every failure
//! is dropped under its name (with the Parameter Problem where one is sent), the modes, and the
//! exact bytes of keyed H.Encaps / H.Encaps.Red against HMACs computed independently.

use std::net::Ipv6Addr;

use srmig_wire::icmpv6::{Packet as IcmpPacket, Repr as IcmpRepr};
use srmig_wire::ipv6::Packet as Ipv6Packet;
use srmig_wire::srh::{self, Srh};

use super::HmacTable;
use crate::testkit::canon::*;
use crate::testkit::*;
use crate::*;

const T0: Instant = Instant(1_000_000_000);

/// Captured on the wire from Linux 6.x, made by (see `interop/gen-kernel-fixtures.sh` for the
/// namespace plumbing):
///
/// ```text
/// ip sr hmac set 7 sha256            # secret "srmig-hmac-test" at the prompt
/// ip sr tunsrc set fc00:0:1::1
/// ip -6 route add 2001:db8:9::/64 encap seg6 mode encap \
///     segs fc00:0:2::e,fc00:0:2::d6 hmac 7 dev va
/// ping -c1 -s 16 -p 00 2001:db8:9::10   # from 2001:db8:a::1
/// ```
///
/// SRH: Hdr Ext Len 9, SL 1, LE 1, Flags 0x08 (Linux's legacy "HMAC present" flag), then the
/// HMAC TLV `05 26 00 00 00000007` + 32 octets, last in the header. Python agrees:
/// `hmac.new(b"srmig-hmac-test", src + bytes([1, 8]) + (7).to_bytes(4, "big") + seg0 + seg1,
/// hashlib.sha256).hexdigest()` = `d1e6d0a8...60c8fe59`.
const KERNEL_FRAME: &str = "020000000b01020000000a0186dd6003ab7400902b40fc0000000001000000000000\
    00000001fc00000000020000000000000000000e2909040101080000fc0000000002000000000000000000d6fc000\
    00000020000000000000000000e0526000000000007d1e6d0a86e2c7d6070d0a5b89f738d8d065f5f8f0c1e6ff589\
    001ffa60c8fe596003ab7400183a4020010db8000a0000000000000000000120010db8000900000000000000000010\
    800097bf68060001ffdf0f6b000000000f05060000000000";

/// The kernel's HMAC in [`KERNEL_FRAME`].
const KERNEL_HMAC: &str = "d1e6d0a86e2c7d6070d0a5b89f738d8d065f5f8f0c1e6ff589001ffa60c8fe59";

/// Offset of the HMAC TLV in the kernel's IPv6 packet (IPv6 40 + SRH fixed 8 + 2 segments).
const KERNEL_TLV_AT: u32 = 40 + 8 + 32;

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The kernel's frame, addressed to host D's uplink.
fn kernel_frame() -> Vec<u8> {
    let mut f = unhex(KERNEL_FRAME);
    assert_eq!(f.len(), 198);
    f[0..6].copy_from_slice(&uplink_mac(D));
    f[6..12].copy_from_slice(&router_mac(D));
    f
}

fn node(h: u16, secret: Option<&[u8]>, mode: Option<HmacMode>) -> Dataplane {
    let mut cfg = host_config(h, VmState::Absent);
    if let Some(s) = secret {
        with_hmac(&mut cfg);
        cfg.hmac_keys[0].secret = HmacSecret::new(s.to_vec());
    }
    cfg.ports[0].hmac = mode;
    Dataplane::new(cfg).unwrap()
}

fn run(dp: &mut Dataplane, port: PortId, frame: &[u8]) -> (Verdict, Vec<u8>) {
    let mut b = Batch::new(1);
    assert!(b.push(port, frame).unwrap());
    dp.process_batch(T0, &mut b);
    let p = &b.packets()[0];
    (p.verdict, p.data().to_vec())
}

fn expect_drop(dp: &mut Dataplane, frame: &[u8], reason: DropReason) {
    let before = dp.counters().drops(reason);
    assert_eq!(run(dp, UPLINK, frame).0, Verdict::Drop(reason));
    assert_eq!(
        dp.counters().drops(reason),
        before + 1,
        "{reason:?} not counted"
    );
}

/// The one generated packet is a Parameter Problem, code 0, with this pointer, to `to`.
fn expect_param_problem(dp: &mut Dataplane, to: Ipv6Addr, pointer: u32) {
    let mut out = PacketBuf::new();
    let mut gen = Vec::new();
    while let Some(p) = dp.poll_transmit(T0, &mut out) {
        gen.push((p, out.data().to_vec()));
    }
    assert_eq!(gen.len(), 1, "expected one ICMPv6 error");
    let f = &gen[0].1;
    let ip = Ipv6Packet::new_checked(&f[14..]).unwrap();
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    assert_eq!(dst, to);
    let p = IcmpPacket::new_checked(&f[54..]).unwrap();
    match IcmpRepr::parse_verified(&src, &dst, &p).unwrap() {
        IcmpRepr::ParamProblem {
            code, pointer: p, ..
        } => assert_eq!((code, p), (0, pointer)),
        other => panic!("expected Parameter Problem, got {other:?}"),
    }
}

fn no_generated(dp: &mut Dataplane) {
    assert!(dp.poll_transmit(T0, &mut PacketBuf::new()).is_none());
}

#[test]
fn kernel_signed_frame_verifies_and_we_compute_the_same_hmac() {
    let f = kernel_frame();
    // Our MAC over the kernel's SRH gives the kernel's bytes.
    let mut cfg = host_config(D, VmState::Absent);
    with_hmac(&mut cfg);
    let table = HmacTable::build(&cfg.hmac_keys, &cfg.ports).unwrap();
    let key = table.key(HMAC_KEY_ID).unwrap();
    let src: [u8; 16] = f[22..38].try_into().unwrap();
    let view = Srh::new_checked(&f[54..]).unwrap();
    assert_eq!(key.compute(&src, &view).to_vec(), unhex(KERNEL_HMAC));
    // Through the engine: End, then End.DT6 (the SRH is verified at both), then the inner
    // packet is routed out of the uplink.
    let mut d = Dataplane::new(cfg).unwrap();
    let (v, out) = run(&mut d, UPLINK, &f);
    assert_eq!(v, Verdict::Tx(UPLINK));
    let ip = Ipv6Packet::new_checked(&out[14..]).unwrap();
    assert_eq!(ip.dst_addr(), a6("2001:db8:9::10"));
    assert_eq!(ip.next_header(), srmig_wire::IpProtocol::from(58u8));
    // So does the required mode.
    let mut d = node(D, Some(HMAC_SECRET), Some(HmacMode::Require));
    assert_eq!(run(&mut d, UPLINK, &f).0, Verdict::Tx(UPLINK));
}

#[test]
fn wrong_hmac_is_dropped_with_a_parameter_problem_at_the_tlv() {
    let mut d = node(D, Some(b"another secret"), None);
    expect_drop(&mut d, &kernel_frame(), DropReason::HmacMismatch);
    expect_param_problem(&mut d, sid(S, 1), KERNEL_TLV_AT);
    // One bit of the segment list changed: the same.
    let mut d = node(D, Some(HMAC_SECRET), None);
    let mut f = kernel_frame();
    f[54 + 8 + 15] ^= 1; // Segment List[0]'s last octet
    expect_drop(&mut d, &f, DropReason::HmacMismatch);
    expect_param_problem(&mut d, sid(S, 1), KERNEL_TLV_AT);
    // The flags are in the text too.
    let mut f = kernel_frame();
    f[54 + srh::FIELD_FLAGS] = 0;
    expect_drop(&mut d, &f, DropReason::HmacMismatch);
}

#[test]
fn unknown_key_is_dropped_even_without_keys() {
    let mut d = node(D, None, None);
    expect_drop(&mut d, &kernel_frame(), DropReason::HmacUnknownKey);
    expect_param_problem(&mut d, sid(S, 1), KERNEL_TLV_AT);
    // Ignored where the port says so.
    let mut d = node(D, None, Some(HmacMode::Ignore));
    assert_eq!(run(&mut d, UPLINK, &kernel_frame()).0, Verdict::Tx(UPLINK));
    let mut d = node(D, Some(b"wrong"), Some(HmacMode::Ignore));
    assert_eq!(run(&mut d, UPLINK, &kernel_frame()).0, Verdict::Tx(UPLINK));
}

#[test]
fn required_hmac_missing_is_dropped_silently() {
    let plain = uplink_frame(D, &[sid(D, END), sid(D, END_DT6)], 1, &inner_to_vm1());
    let mut d = node(D, Some(HMAC_SECRET), Some(HmacMode::Require));
    expect_drop(&mut d, &plain, DropReason::HmacMissing);
    no_generated(&mut d);
    // Without an SRH at all (H.Encaps.Red with one segment) too.
    let inner = inner_to_vm1();
    let bare = eth(
        uplink_mac(D),
        router_mac(D),
        0x86dd,
        &ipv6(sid(C, 1), sid(D, END_DT6), proto::IPV6, 64, &inner),
    );
    expect_drop(&mut d, &bare, DropReason::HmacMissing);
    // The default (verify) lets both through.
    let mut d = node(D, Some(HMAC_SECRET), None);
    assert_ne!(
        run(&mut d, UPLINK, &plain).0,
        Verdict::Drop(DropReason::HmacMissing)
    );
    assert_ne!(
        run(&mut d, UPLINK, &bare).0,
        Verdict::Drop(DropReason::HmacMissing)
    );
}

#[test]
fn d_flag_clear_needs_the_destination_in_the_list() {
    // Signed by an independent implementation (testkit::sign_frame): passes.
    let mut d = node(D, Some(HMAC_SECRET), Some(HmacMode::Require));
    let mut f = uplink_frame(D, &[sid(D, END), sid(D, END_DT6)], 1, &inner_to_vm1());
    sign_frame(&mut f, HMAC_KEY_ID, HMAC_SECRET, false);
    // End, End.DT6, then VM 1 is not running on D: past every HMAC check.
    assert_eq!(
        run(&mut d, UPLINK, &f).0,
        Verdict::Drop(DropReason::VmNotRunning)
    );
    // The DA is another local SID than Segment List[SL]: HMAC text unchanged, still dropped.
    let mut moved = f.clone();
    moved[38..54].copy_from_slice(&sid(D, END_X).octets());
    expect_drop(&mut d, &moved, DropReason::HmacDestinationMismatch);
    expect_param_problem(&mut d, sid(C, 1), KERNEL_TLV_AT);
    // With the D flag the headend says the DA is not in the list: accepted.
    let mut f = uplink_frame(D, &[sid(D, END), sid(D, END_DT6)], 1, &inner_to_vm1());
    sign_frame(&mut f, HMAC_KEY_ID, HMAC_SECRET, true);
    f[38..54].copy_from_slice(&sid(D, END_X).octets());
    assert_eq!(run(&mut d, UPLINK, &f).0, Verdict::Tx(UPLINK));
}

#[test]
fn malformed_hmac_tlvs() {
    let mut d = node(D, Some(HMAC_SECRET), None);
    // HMAC field of 8 octets (Length 14) where SHA-256 gives 32.
    let short_field = {
        let mut tlvs = vec![5, 14, 0, 0, 0, 0, 0, 7];
        tlvs.extend_from_slice(&[0xab; 8]);
        let mut p = srh(proto::IPV6, 1, &[sid(D, END), sid(D, END_DT6)], &tlvs);
        p.extend_from_slice(&inner_to_vm1());
        eth(
            uplink_mac(D),
            router_mac(D),
            0x86dd,
            &ipv6(sid(C, 1), sid(D, END), proto::ROUTING, 64, &p),
        )
    };
    expect_drop(&mut d, &short_field, DropReason::HmacMalformed);
    expect_param_problem(&mut d, sid(C, 1), KERNEL_TLV_AT);
    // Shorter than the fixed fields, after a PadN.
    let mut p = srh(
        proto::IPV6,
        1,
        &[sid(D, END), sid(D, END_DT6)],
        &[4, 0, 5, 2, 0, 0, 0, 0],
    );
    p.extend_from_slice(&inner_to_vm1());
    let f = eth(
        uplink_mac(D),
        router_mac(D),
        0x86dd,
        &ipv6(sid(C, 1), sid(D, END), proto::ROUTING, 64, &p),
    );
    expect_drop(&mut d, &f, DropReason::HmacMalformed);
    expect_param_problem(&mut d, sid(C, 1), KERNEL_TLV_AT + 2);
    // Two HMAC TLVs, the first one valid.
    let mut f = kernel_frame();
    let tlv = f[54 + 40..54 + 80].to_vec();
    f.splice(54 + 80..54 + 80, tlv);
    f[55] += 5;
    let pl = u16::from_be_bytes([f[18], f[19]]) + 40;
    f[18..20].copy_from_slice(&pl.to_be_bytes());
    expect_drop(&mut d, &f, DropReason::HmacMalformed);
}

#[test]
fn keyed_h_encaps_exact_bytes() {
    // S encapsulates the client's packet to 2001:db8:901::1 with policy to-d-hmac.
    let mut s = node(S, Some(HMAC_SECRET), None);
    let frame = client_frame(a6("2001:db8:901::1"), 100);
    let (v, out) = run(&mut s, CLIENT_PORT, &frame);
    assert_eq!(v, Verdict::Tx(UPLINK));
    let ip = &out[14..];
    assert_eq!(ip.len(), 40 + 80 + 100);
    assert_eq!(&ip[4..8], &[0, 180, 43, 64]); // payload length, next header, hop limit
    assert_eq!(&ip[8..24], &sid(S, 1).octets());
    assert_eq!(&ip[24..40], &sid(D, END).octets());
    // SRH: NH 41, Hdr Ext Len 9 (2 segments + 40 octets of TLV), SL 1, LE 1, Flags 0, Tag 0.
    let mut expect = vec![41, 9, 4, 1, 1, 0, 0, 0];
    expect.extend_from_slice(&sid(D, END_DT6).octets());
    expect.extend_from_slice(&sid(D, END).octets());
    expect.extend_from_slice(&[5, 38, 0, 0, 0, 0, 0, 7]);
    // python3: hmac.new(b"srmig-hmac-test", ip("fc00:0:1::1") + bytes([1, 0]) +
    //   (7).to_bytes(4, "big") + ip("fc00:0:2::d6") + ip("fc00:0:2::e"), sha256)
    expect.extend_from_slice(&unhex(
        "e592bb4553428d78fee91e11d9fb890cbea7e1c5fbf426aaeabfdbbb4a3a707d",
    ));
    assert_eq!(&ip[40..120], &expect[..]);
    // The client's packet, forwarded (hop limit decremented) into the tunnel.
    let mut sent = frame[14..].to_vec();
    sent[7] -= 1;
    assert_eq!(&ip[120..], &sent[..]);
    // D requires HMAC and accepts it: End, End.DT6, delivered to the remote VM's route.
    let mut d = node(D, Some(HMAC_SECRET), Some(HmacMode::Require));
    let mut to_d = out.clone();
    to_d[0..6].copy_from_slice(&uplink_mac(D));
    to_d[6..12].copy_from_slice(&router_mac(D));
    let (v, inner) = run(&mut d, UPLINK, &to_d);
    assert_eq!(v, Verdict::Tx(UPLINK));
    // The inner packet (its hop limit aside).
    assert_eq!(&inner[14 + 8..], &frame[14 + 8..]);
}

#[test]
fn keyed_h_encaps_red_sets_the_d_flag() {
    let mut cfg = host_config(S, VmState::Running);
    with_hmac(&mut cfg);
    cfg.policies.last_mut().unwrap().headend = Headend::HEncapsRed;
    let mut s = Dataplane::new(cfg).unwrap();
    let frame = client_frame(a6("2001:db8:901::1"), 100);
    let (v, out) = run(&mut s, CLIENT_PORT, &frame);
    assert_eq!(v, Verdict::Tx(UPLINK));
    let ip = &out[14..];
    assert_eq!(&ip[24..40], &sid(D, END).octets());
    // Reduced list: LE 0, SL 1; the TLV with D set.
    let mut expect = vec![41, 7, 4, 1, 0, 0, 0, 0];
    expect.extend_from_slice(&sid(D, END_DT6).octets());
    expect.extend_from_slice(&[5, 38, 0x80, 0, 0, 0, 0, 7]);
    // python3: hmac.new(b"srmig-hmac-test", ip("fc00:0:1::1") + bytes([0, 0]) +
    //   (7).to_bytes(4, "big") + ip("fc00:0:2::d6"), sha256)
    expect.extend_from_slice(&unhex(
        "7be6db790fee3a4f7295761c6243f01fbb6bec0f8f6df184ebd08ac2c6079364",
    ));
    assert_eq!(&ip[40..104], &expect[..]);
    let mut d = node(D, Some(HMAC_SECRET), Some(HmacMode::Require));
    let mut to_d = out.clone();
    to_d[0..6].copy_from_slice(&uplink_mac(D));
    to_d[6..12].copy_from_slice(&router_mac(D));
    assert_eq!(run(&mut d, UPLINK, &to_d).0, Verdict::Tx(UPLINK));
    // One segment: a one-segment SRH carries the TLV (no D flag: the DA is in it).
    let mut cfg = host_config(S, VmState::Running);
    with_hmac(&mut cfg);
    let p = cfg.policies.last_mut().unwrap();
    p.headend = Headend::HEncapsRed;
    p.segments = vec![sid(D, END_DT6)];
    let mut s = Dataplane::new(cfg).unwrap();
    let (_, out) = run(&mut s, CLIENT_PORT, &frame);
    assert_eq!(
        &out[14 + 40..14 + 56],
        &[41, 7, 4, 0, 0, 0, 0, 0, 0xfc, 0, 0, 0, 0, 2, 0, 0]
    );
    assert_eq!(out[14 + 40 + 24 + 2], 0);
}

#[test]
fn config_errors_name_the_field() {
    let base = || {
        let mut c = host_config(S, VmState::Running);
        with_hmac(&mut c);
        c
    };
    let err = |c: NodeConfig| Dataplane::new(c).unwrap_err().to_string();
    let mut c = base();
    c.policies.last_mut().unwrap().hmac_key = Some(9);
    assert_eq!(
        err(c),
        "policies[6].hmac_key: no key with id 9 in [[hmac_keys]]"
    );
    let mut c = base();
    c.policies.last_mut().unwrap().headend = Headend::HInsert;
    assert!(err(c).starts_with("policies[6].hmac_key: H.Insert cannot carry an HMAC"));
    let mut c = base();
    c.hmac_keys[0].secret = HmacSecret::default();
    let e = err(c);
    assert!(
        e.starts_with("hmac_keys[0].secret_file: the secret of hmac-7.key was not loaded"),
        "{e}"
    );
    let mut c = base();
    c.hmac_keys.push(c.hmac_keys[0].clone());
    assert_eq!(err(c), "hmac_keys[1].id: duplicate key id 7");
    let mut c = base();
    c.hmac_keys[0].id = 0;
    assert!(err(c).starts_with("hmac_keys[0].id: 0 is not a key id"));
    let mut c = base();
    c.ports[1].hmac = Some(HmacMode::Require);
    assert!(err(c).starts_with("ports[1].hmac: applies to uplinks only"));
    let mut c = base();
    let p = c.policies.last_mut().unwrap();
    p.segments = (0..10).map(|i| sid(D, 0x100 + i)).collect();
    assert!(err(c).starts_with("policies[6].segments: 10 segments and an HMAC TLV"));
    let mut c = base();
    c.policies.last_mut().unwrap().segments = (0..9).map(|i| sid(D, 0x100 + i)).collect();
    assert!(Dataplane::new(c).is_ok());
    // The secret never shows in the engine's Debug output.
    let d = Dataplane::new(base()).unwrap();
    let dbg = format!("{d:?} {:?}", base());
    assert!(!dbg.contains("srmig-hmac-test"));
}

#[test]
fn keyed_policies_can_be_installed_at_run_time() {
    let mut s = node(S, Some(HMAC_SECRET), None);
    let mut p = PolicyConfig {
        name: "late".into(),
        headend: Headend::HEncaps,
        segments: vec![sid(D, END_DT6)],
        hop_limit: None,
        flow_label: FlowLabelMode::Hash,
        hmac_key: Some(HMAC_KEY_ID),
    };
    s.install_policy(p.clone()).unwrap();
    p.hmac_key = Some(8);
    assert_eq!(
        s.install_policy(p).unwrap_err().to_string(),
        "policy \"late\".hmac_key: no key with id 8 in [[hmac_keys]]"
    );
}
