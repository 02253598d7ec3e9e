//! Frames built valid for the host, port and VM they target, then mutated.

use std::net::{Ipv4Addr, Ipv6Addr};

use srmig_dataplane::testkit::{
    a6, canon, eth, ipv4, ipv6, neighbor_solicitation, proto, sign_frame, srh, udp6, HMAC_KEY_ID,
    HMAC_SECRET,
};

use super::ops::{Dst, Field, Hmac, Inner, Mutation, Next, Segs, Sid, Size, Src};
use super::world::{self, END_SBUF_VM2, END_S_VM2, END_USP};

/// Where the headers of a built frame are (for field overrides).
#[derive(Debug, Clone, Copy, Default)]
pub struct Layout {
    /// IPv4 rather than IPv6 at offset 14.
    pub v4: bool,
    /// Offset of the SRH.
    pub srh: Option<usize>,
    /// Offset of the inner IP header, and whether it is IPv4.
    pub inner: Option<(usize, bool)>,
}

fn size_bytes(s: Size) -> usize {
    match s {
        Size::Small => 100,
        Size::Mid => 600,
        Size::Large => 1400,
        Size::Jumbo => 3000,
        Size::Oversize => 9500,
    }
}

/// The UDP payload of a packet of `total` IP bytes with header `hdr`: the sequence number
/// first (every frame is distinct), then a pattern.
fn payload(seq: u32, total: usize, hdr: usize) -> Vec<u8> {
    let n = total.saturating_sub(hdr).max(4);
    let mut d: Vec<u8> = (0..n).map(|i| i as u8).collect();
    d[..4].copy_from_slice(&seq.to_be_bytes());
    d
}

/// An IPv4 UDP packet (checksum 0: none, allowed over IPv4).
fn udp4(src: Ipv4Addr, dst: Ipv4Addr, seq: u32, total: usize) -> Vec<u8> {
    let data = payload(seq, total, 28);
    let len = (8 + data.len()) as u16;
    let mut u = Vec::with_capacity(usize::from(len));
    u.extend_from_slice(&4000u16.to_be_bytes());
    u.extend_from_slice(&5000u16.to_be_bytes());
    u.extend_from_slice(&len.to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(&data);
    ipv4(src, dst, proto::UDP, 64, &u)
}

fn udp6_seq(src: Ipv6Addr, dst: Ipv6Addr, seq: u32, total: usize) -> Vec<u8> {
    udp6(src, dst, 4000, 5000, &payload(seq, total, 48))
}

const CORRESPONDENT: &str = "2001:db8:777::7";

/// The address of `sid` on host `h`.
pub fn sid_addr(h: u16, target: Sid, next_host: u16) -> Ipv6Addr {
    use canon::*;
    let f = match target {
        Sid::End => END,
        Sid::EndPsp => END_PSP,
        Sid::EndUsp => END_USP,
        Sid::EndUsd => END_USD,
        Sid::EndX => END_X,
        Sid::EndT => END_T,
        Sid::EndDx6 => END_DX6,
        Sid::EndDx4 => END_DX4,
        Sid::EndDt6 => END_DT6,
        Sid::EndDt4 => END_DT4,
        Sid::EndDt46 => END_DT46,
        Sid::EndB6 => END_B6,
        Sid::EndS => END_S,
        Sid::EndSVm2 => END_S_VM2,
        Sid::EndSbuf => END_SBUF,
        Sid::EndSbufDrop => END_SBUF_DROP,
        Sid::EndSbufVm2 => END_SBUF_VM2,
        // C-SIDs: this node's, then the next node's, then an empty argument.
        Sid::NextCSid => {
            let [b0, b1] = world::USID_BLOCK;
            return Ipv6Addr::new(b0, b1, h, next_host, 0, 0, 0, 0);
        }
        Sid::Unassigned => 0x777,
        Sid::SourceAddress => 1,
    };
    sid(h, f)
}

fn next_addr(n: Next) -> (Ipv6Addr, u16) {
    use canon::*;
    match n {
        Next::DSbuf => (sid(D, END_SBUF), D),
        Next::DDt6 => (sid(D, END_DT6), D),
        Next::SEnd => (sid(S, END), S),
        Next::CEnd => (sid(C, END), C),
        Next::Multicast => (a6("ff02::1"), D),
    }
}

/// The inner packet of an uplink frame: (bytes, next header).
fn inner_packet(inner: Inner, size: Size, seq: u32) -> (Vec<u8>, u8) {
    let total = size_bytes(size);
    let from = a6(CORRESPONDENT);
    let from4 = Ipv4Addr::new(10, 77, 0, 7);
    let v6 = |dst| (udp6_seq(from, dst, seq, total), proto::IPV6);
    let v4 = |dst| (udp4(from4, dst, seq, total), proto::IPV4);
    match inner {
        Inner::Vm1 => v6(canon::vm1()),
        Inner::Client => v6(canon::client()),
        Inner::Vm2 => v6(world::vm2()),
        Inner::Vm1V4 => v4(canon::VM1_V4),
        Inner::Vm2V4 => v4(world::VM2_V4),
        Inner::Remote => v6(canon::remote()),
        Inner::Outsider => v6(canon::outsider()),
        Inner::Unknown => v6(a6("2001:db8:555::5")),
        Inner::Udp => {
            // A bare UDP datagram as the upper layer (not an IP packet).
            let p = udp6_seq(from, canon::vm1(), seq, total);
            (p[40..].to_vec(), proto::UDP)
        }
    }
}

/// An uplink frame to host `h` (from its underlay router).
#[allow(clippy::too_many_arguments)]
pub fn uplink(
    h: u16,
    sid: Sid,
    segs: Segs,
    next: Next,
    src: Src,
    inner: Inner,
    size: Size,
    hmac: Hmac,
    seq: u32,
) -> (Vec<u8>, Layout) {
    let (next, next_host) = next_addr(next);
    let target = sid_addr(h, sid, next_host);
    let src = match src {
        Src::Domain => canon::sid(canon::C, 1),
        Src::Outsider => canon::outsider(),
        Src::LinkLocal => a6("fe80::1"),
        Src::Unspecified => Ipv6Addr::UNSPECIFIED,
    };
    let (inner, nh) = inner_packet(inner, size, seq);
    let inner_v4 = nh == proto::IPV4;
    let (ip, layout) = match segs {
        Segs::NoSrh => (
            ipv6(src, target, nh, 64, &inner),
            Layout {
                v4: false,
                srh: None,
                inner: Some((54, inner_v4)),
            },
        ),
        _ => {
            let (list, sl): (&[Ipv6Addr], u8) = match segs {
                Segs::Last => (&[target], 0),
                _ => (&[target, next], 1),
            };
            let mut p = srh(nh, sl, list, &[]);
            if segs == Segs::BeyondLastEntry {
                // Last Entry 1: Segments Left 3 is beyond Last Entry + 1.
                p[3] = 3;
            }
            let at = 54 + p.len();
            p.extend_from_slice(&inner);
            (
                ipv6(src, target, proto::ROUTING, 64, &p),
                Layout {
                    v4: false,
                    srh: Some(54),
                    inner: Some((at, inner_v4)),
                },
            )
        }
    };
    let mut f = eth(canon::uplink_mac(h), canon::router_mac(h), 0x86dd, &ip);
    let mut layout = layout;
    if layout.srh.is_some() {
        let srh_len = (usize::from(f[55]) + 1) * 8;
        match hmac {
            Hmac::None => {}
            Hmac::Signed => sign_frame(&mut f, HMAC_KEY_ID, HMAC_SECRET, false),
            Hmac::SignedD => sign_frame(&mut f, HMAC_KEY_ID, HMAC_SECRET, true),
            Hmac::UnknownKey => sign_frame(&mut f, 99, HMAC_SECRET, false),
            Hmac::BadMac => {
                sign_frame(&mut f, HMAC_KEY_ID, HMAC_SECRET, false);
                f[54 + srh_len + 8] ^= 1;
            }
        }
        if hmac != Hmac::None {
            layout.inner = layout.inner.map(|(at, v4)| (at + 40, v4));
        }
    }
    (f, layout)
}

/// An ICMPv6 echo request with a correct checksum.
fn echo6(src: Ipv6Addr, dst: Ipv6Addr, seq: u32) -> Vec<u8> {
    let mut m = vec![128, 0, 0, 0, 0, 1, 0, 1];
    m.extend_from_slice(&seq.to_be_bytes());
    let mut p = ipv6(src, dst, proto::ICMPV6, 64, &m);
    let _ = srmig_wire::checksum::fix_l4_checksum(&mut p);
    p
}

/// An ARP request from `mac`/`spa` for `tpa`.
fn arp_request(mac: [u8; 6], spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend_from_slice(&mac);
    a.extend_from_slice(&spa.octets());
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&tpa.octets());
    eth([0xff; 6], mac, 0x0806, &a)
}

/// A frame sent by VM `vm` (by id) of host `h` from its own port, MAC and address.
pub fn from_vm(h: u16, vm: usize, dst: Dst, size: Size, seq: u32) -> (Vec<u8>, Layout) {
    let total = size_bytes(size);
    let mac = world::VM_MACS[vm];
    let (src6, src4) = (world::vm_v6(vm), world::vm_v4(vm));
    let to6 = |dst| udp6_seq(src6, dst, seq, total);
    let to4 = |dst| udp4(src4, dst, seq, total);
    let gw = canon::GATEWAY_MAC;
    let v6 = |ip: Vec<u8>| (eth(gw, mac, 0x86dd, &ip), Layout::default());
    let v4 = |ip: Vec<u8>| {
        (
            eth(gw, mac, 0x0800, &ip),
            Layout {
                v4: true,
                ..Layout::default()
            },
        )
    };
    match dst {
        Dst::Remote => v6(to6(canon::remote())),
        Dst::Red => v6(to6(a6("2001:db8:910::1"))),
        Dst::Insert => v6(to6(a6("2001:db8:920::1"))),
        Dst::Keyed => v6(to6(a6("2001:db8:901::1"))),
        Dst::Vm1 => v6(to6(canon::vm1())),
        Dst::Client => v6(to6(canon::client())),
        Dst::Vm2 => v6(to6(world::vm2())),
        Dst::Outsider => v6(to6(canon::outsider())),
        Dst::RemoteV4 => v4(to4(canon::REMOTE_V4)),
        Dst::RedV4 => v4(to4(Ipv4Addr::new(10, 91, 0, 1))),
        Dst::InsertV4 => v4(to4(Ipv4Addr::new(10, 92, 0, 1))),
        Dst::Vm1V4 => v4(to4(canon::VM1_V4)),
        Dst::Vm2V4 => v4(to4(world::VM2_V4)),
        Dst::GatewayEcho => v6(echo6(src6, canon::gateway(), seq)),
        Dst::GatewayNs => {
            let ns = neighbor_solicitation(src6, mac, canon::gateway());
            // To the solicited-node group's MAC.
            let g = canon::gateway().octets();
            let m = [0x33, 0x33, 0xff, g[13], g[14], g[15]];
            (eth(m, mac, 0x86dd, &ns), Layout::default())
        }
        Dst::GatewayArp => (
            arp_request(mac, src4, Ipv4Addr::new(10, 0, 0, 1)),
            Layout::default(),
        ),
        Dst::LocalSid => v6(to6(canon::sid(h, canon::END_DT6))),
    }
}

fn field_offset(f: Field, l: &Layout) -> Option<usize> {
    let srh = |k: usize| l.srh.map(|s| s + k);
    Some(match (f, l.v4) {
        (Field::EtherType, _) => 12,
        (Field::IpVersion, _) => 14,
        (Field::PayloadLength, false) => 18,
        (Field::PayloadLength, true) => 16,
        (Field::NextHeader, false) => 20,
        (Field::NextHeader, true) => 23,
        (Field::HopLimit, false) => 21,
        (Field::HopLimit, true) => 22,
        (Field::SrcLast, false) => 37,
        (Field::SrcLast, true) => 29,
        (Field::DstLast, false) => 53,
        (Field::DstLast, true) => 33,
        (Field::SrhNextHeader, _) => srh(0)?,
        (Field::SrhHdrExtLen, _) => srh(1)?,
        (Field::SrhRoutingType, _) => srh(2)?,
        (Field::SrhSegmentsLeft, _) => srh(3)?,
        (Field::SrhLastEntry, _) => srh(4)?,
        (Field::InnerVersion, _) => l.inner?.0,
        (Field::InnerHopLimit, _) => {
            let (at, v4) = l.inner?;
            at + if v4 { 8 } else { 7 }
        }
    })
}

/// Applies `m` to frame `f`; returns the port override, if any.
pub fn mutate(f: &mut Vec<u8>, l: &Layout, m: Mutation) -> Option<super::ops::Port> {
    match m {
        Mutation::None => {}
        Mutation::Flip { at, mask } => {
            if !f.is_empty() {
                let i = usize::from(at) % f.len();
                f[i] ^= mask;
            }
        }
        Mutation::Truncate { keep } => {
            if !f.is_empty() {
                f.truncate(usize::from(keep) % f.len());
            }
        }
        Mutation::Pad { n } => f.resize(f.len() + usize::from(n), 0),
        Mutation::Set { field, value } => {
            if let Some(i) = field_offset(field, l).filter(|&i| i < f.len()) {
                f[i] = match field {
                    Field::IpVersion | Field::InnerVersion => (value << 4) | (f[i] & 0x0f),
                    _ => value,
                };
            }
        }
        Mutation::Port { port } => return Some(port),
    }
    None
}
