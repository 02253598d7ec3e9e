//! Test kit: realistic frame builders, the canonical two-host configuration of the paper
//! (hosts S and D, one migrating VM, End.S and End.SBUF SIDs, the policy
//! `S::End.S -> D::End.SBUF`), and ready-made bench scenarios.
//!
//! Available with the `testkit` feature (and always in this crate's tests).

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::batch::{Batch, PacketBuf, Verdict};
use crate::behavior::{Behavior, Flavor, Headend, SbufMode};
use crate::config::{
    BufferConfig, FlowLabelMode, GatewayConfig, IcmpConfig, MacAddr, MappingConfig, NodeConfig,
    PolicyConfig, PortConfig, PortKind, RouteConfig, SidConfig, VmConfig,
};
use crate::engine::Dataplane;
use crate::policy::Steering;
use crate::port::PortId;
use crate::time::Instant;
use crate::vm::{VmId, VmState};
use srmig_wire::{checksum, IpProtocol};

/// IP protocol numbers used by the builders.
pub mod proto {
    /// IPv4-in-IPv6.
    pub const IPV4: u8 = 4;
    /// UDP.
    pub const UDP: u8 = 17;
    /// IPv6-in-IPv6.
    pub const IPV6: u8 = 41;
    /// Routing header.
    pub const ROUTING: u8 = 43;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// No next header.
    pub const NONE: u8 = 59;
    /// Destination options.
    pub const DSTOPTS: u8 = 60;
    /// Hop-by-hop options.
    pub const HOPOPTS: u8 = 0;
}

/// Parses a literal address (panics on a typo: test code only).
pub fn a6(s: &str) -> Ipv6Addr {
    s.parse().unwrap_or_else(|_| panic!("bad IPv6 literal {s}"))
}

/// An Ethernet II frame.
pub fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(14 + payload.len());
    v.extend_from_slice(&dst);
    v.extend_from_slice(&src);
    v.extend_from_slice(&ethertype.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// An IPv6 packet (traffic class 0, flow label 0).
pub fn ipv6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next_header: u8,
    hop_limit: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut v = Vec::with_capacity(40 + payload.len());
    v.extend_from_slice(&[0x60, 0, 0, 0]);
    v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    v.extend_from_slice(&[next_header, hop_limit]);
    v.extend_from_slice(&src.octets());
    v.extend_from_slice(&dst.octets());
    v.extend_from_slice(payload);
    v
}

/// An SRH. `segments` is given in traversal order (first visited first); it is written
/// reversed as Segment List\[0..\] (RFC 8754 section 2). `tlvs` are appended (their length must
/// make the header a multiple of 8 bytes). Last Entry = `segments.len() - 1`.
pub fn srh(next_header: u8, segments_left: u8, segments: &[Ipv6Addr], tlvs: &[u8]) -> Vec<u8> {
    let len = 8 + 16 * segments.len() + tlvs.len();
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&[
        next_header,
        ((len / 8) - 1) as u8,
        4,
        segments_left,
        (segments.len() as u8).wrapping_sub(1),
        0,
        0,
        0,
    ]);
    for s in segments.iter().rev() {
        v.extend_from_slice(&s.octets());
    }
    v.extend_from_slice(tlvs);
    v
}

/// A UDP datagram over IPv6 with a correct checksum, wrapped in its IPv6 header.
pub fn udp6(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let len = (8 + data.len()) as u16;
    let mut u = Vec::with_capacity(usize::from(len));
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&len.to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(data);
    let sum = checksum::combine(&[
        checksum::pseudo_header_v6(&src, &dst, IpProtocol::UDP, u32::from(len)),
        checksum::data(&u),
    ]);
    let c = match !sum {
        0 => 0xffff,
        c => c,
    };
    u[6..8].copy_from_slice(&c.to_be_bytes());
    ipv6(src, dst, proto::UDP, 64, &u)
}

/// An IPv6 UDP packet of exactly `total` bytes (at least 48).
pub fn udp6_sized(src: Ipv6Addr, dst: Ipv6Addr, total: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..total.saturating_sub(48)).map(|i| i as u8).collect();
    udp6(src, dst, 4000, 5000, &data)
}

/// An IPv4 packet with a correct header checksum.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, ttl: u8, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut v = vec![0x45, 0];
    v.extend_from_slice(&total.to_be_bytes());
    v.extend_from_slice(&[0, 1, 0x40, 0, ttl, protocol, 0, 0]);
    v.extend_from_slice(&src.octets());
    v.extend_from_slice(&dst.octets());
    let c = !checksum::data(&v);
    v[10..12].copy_from_slice(&c.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// An SRv6 packet: outer IPv6 from `src` with an SRH holding `segments` (traversal order),
/// Segments Left `sl`, DA = the active segment, carrying `inner` (an IPv6 packet, or IPv4 if
/// its version nibble is 4).
pub fn srv6(src: Ipv6Addr, segments: &[Ipv6Addr], sl: u8, inner: &[u8]) -> Vec<u8> {
    let nh = if inner.first().is_some_and(|b| b >> 4 == 4) {
        proto::IPV4
    } else {
        proto::IPV6
    };
    let mut payload = srh(nh, sl, segments, &[]);
    payload.extend_from_slice(inner);
    // Segment List[sl] is segments[len - 1 - sl].
    let active = segments
        .len()
        .checked_sub(1 + usize::from(sl))
        .and_then(|i| segments.get(i))
        .copied()
        .unwrap_or(Ipv6Addr::UNSPECIFIED);
    ipv6(src, active, proto::ROUTING, 64, &payload)
}

/// A Neighbor Solicitation for `target` from `src` (to its solicited-node group), with a
/// Source Link-Layer Address option unless `src` is unspecified.
pub fn neighbor_solicitation(src: Ipv6Addr, src_mac: [u8; 6], target: Ipv6Addr) -> Vec<u8> {
    let t = target.octets();
    let dst = Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(t[13]),
        u16::from_be_bytes([t[14], t[15]]),
    );
    let mut m = vec![135, 0, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&t);
    if !src.is_unspecified() {
        m.extend_from_slice(&[1, 1]);
        m.extend_from_slice(&src_mac);
    }
    let sum = checksum::combine(&[
        checksum::pseudo_header_v6(&src, &dst, IpProtocol::ICMPV6, m.len() as u32),
        checksum::data(&m),
    ]);
    let c = !sum;
    m[2..4].copy_from_slice(&c.to_be_bytes());
    ipv6(src, dst, proto::ICMPV6, 255, &m)
}

/// Addresses, MACs and names of the canonical configuration.
pub mod canon {
    use super::*;

    /// The SR domain.
    pub fn domain() -> ipnet::Ipv6Net {
        "fc00::/16".parse().unwrap_or_else(|_| unreachable!())
    }
    /// A host's SID: `fc00:0:<host>::<func>` (host 1 = S, 2 = D, 3 = a correspondent C).
    pub fn sid(host: u16, func: u16) -> Ipv6Addr {
        Ipv6Addr::new(0xfc00, 0, host, 0, 0, 0, 0, func)
    }
    /// Host S.
    pub const S: u16 = 1;
    /// Host D.
    pub const D: u16 = 2;
    /// Correspondent host C (only as a source of SRv6 traffic).
    pub const C: u16 = 3;
    /// Function: End.
    pub const END: u16 = 0xe;
    /// Function: End with PSP.
    pub const END_PSP: u16 = 0xe0;
    /// Function: End with USD.
    pub const END_USD: u16 = 0xed;
    /// Function: End.X via the uplink.
    pub const END_X: u16 = 0xe1;
    /// Function: End.T table 10.
    pub const END_T: u16 = 0xe7;
    /// Function: End.DX6 to the VM port.
    pub const END_DX6: u16 = 0xd06;
    /// Function: End.DX4 to the VM port.
    pub const END_DX4: u16 = 0xd04;
    /// Function: End.DT6.
    pub const END_DT6: u16 = 0xd6;
    /// Function: End.DT4.
    pub const END_DT4: u16 = 0xd4;
    /// Function: End.DT46.
    pub const END_DT46: u16 = 0xd46;
    /// Function: End.B6.Encaps (policy "to-d").
    pub const END_B6: u16 = 0xb6;
    /// Function: End.S (VM selected by the inner destination).
    pub const END_S: u16 = 0xe5;
    /// Function: End.SBUF in buffer mode.
    pub const END_SBUF: u16 = 0x5b;
    /// Function: End.SBUF in drop mode.
    pub const END_SBUF_DROP: u16 = 0x5d;
    /// The migrating VM's IPv6 address.
    pub fn vm1() -> Ipv6Addr {
        a6("2001:db8:100::10")
    }
    /// The migrating VM's IPv4 address.
    pub const VM1_V4: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 10);
    /// The local client VM's address (a VM on each host that talks to remote VMs).
    pub fn client() -> Ipv6Addr {
        a6("2001:db8:300::30")
    }
    /// The client VM's IPv4 address.
    pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(10, 30, 0, 30);
    /// A remote VM reached through policies (mapped in the canonical config).
    pub fn remote() -> Ipv6Addr {
        a6("2001:db8:900::90")
    }
    /// A remote IPv4 VM reached through policy "to-d".
    pub const REMOTE_V4: Ipv4Addr = Ipv4Addr::new(10, 90, 0, 90);
    /// An outside host (not in the SR domain).
    pub fn outsider() -> Ipv6Addr {
        a6("2001:db8:dead::1")
    }
    /// Gateway address.
    pub fn gateway() -> Ipv6Addr {
        a6("2001:db8::1")
    }
    /// Gateway MAC.
    pub const GATEWAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
    /// Uplink MAC of host `h`.
    pub const fn uplink_mac(h: u16) -> [u8; 6] {
        [0x02, 0, 0, 0, h as u8, 0]
    }
    /// The underlay router's MAC as seen by host `h`.
    pub const fn router_mac(h: u16) -> [u8; 6] {
        [0x02, 0, 0, 0, 0xff, h as u8]
    }
    /// VM 1's MAC.
    pub const VM1_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x10, 0x10];
    /// Client VM's MAC.
    pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x30, 0x30];
    /// Port ids: uplink, vm1, client.
    pub const UPLINK: crate::PortId = crate::PortId(0);
    /// VM 1's port.
    pub const VM1_PORT: crate::PortId = crate::PortId(1);
    /// The client VM's port.
    pub const CLIENT_PORT: crate::PortId = crate::PortId(2);
}

fn sidc(sid: Ipv6Addr, behavior: Behavior) -> SidConfig {
    SidConfig::new(sid, behavior)
}

fn policy(name: &str, headend: Headend, segments: Vec<Ipv6Addr>) -> PolicyConfig {
    PolicyConfig {
        name: name.into(),
        headend,
        segments,
        hop_limit: None,
        flow_label: FlowLabelMode::Hash,
        hmac_key: None,
    }
}

/// The configuration of host `h` (`canon::S` or `canon::D`), with VM 1 in `vm1_state`.
///
/// The address of host `h`'s uplink `up0` (`fc00:ffff::h`): local to the host, the source of
/// the ICMPv6 errors it sends out of `up0`.
pub fn uplink_address(h: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfc00, 0xffff, 0, 0, 0, 0, 0, h)
}

/// Ports: `up0` (uplink, id 0), `vm1` (id 1), `client` (id 2). VMs: `vm1` (the migrating VM),
/// `client` (running, talks to remote VMs). SIDs `fc00:0:h::<func>` for every behavior (see
/// [`canon`]). Policies: `via-s-to-d` = H.Encaps `S::End.S -> D::End.SBUF` (the paper's path),
/// `to-d` = H.Encaps `D::End -> D::End.DT6`, `to-d-red` (H.Encaps.Red), `to-d-insert` (H.Insert),
/// `on-s`/`on-d` (H.Encaps to End.DT6). Mappings: the remote VM -> `to-d`.
pub fn host_config(h: u16, vm1_state: VmState) -> NodeConfig {
    use canon::*;
    let mut sids = vec![
        sidc(sid(h, END), Behavior::End),
        SidConfig {
            flavors: vec![Flavor::Psp],
            ..sidc(sid(h, END_PSP), Behavior::End)
        },
        SidConfig {
            flavors: vec![Flavor::Usd],
            ..sidc(sid(h, END_USD), Behavior::End)
        },
        SidConfig {
            nexthop: Some(a6("fe80::ff").into()),
            port: Some("up0".into()),
            ..sidc(sid(h, END_X), Behavior::EndX)
        },
        SidConfig {
            table: Some(10),
            ..sidc(sid(h, END_T), Behavior::EndT)
        },
        SidConfig {
            port: Some("vm1".into()),
            ..sidc(sid(h, END_DX6), Behavior::EndDx6)
        },
        SidConfig {
            port: Some("vm1".into()),
            ..sidc(sid(h, END_DX4), Behavior::EndDx4)
        },
        sidc(sid(h, END_DT6), Behavior::EndDt6),
        sidc(sid(h, END_DT4), Behavior::EndDt4),
        sidc(sid(h, END_DT46), Behavior::EndDt46),
        SidConfig {
            policy: Some("to-d".into()),
            ..sidc(sid(h, END_B6), Behavior::EndB6Encaps)
        },
        sidc(sid(h, END_S), Behavior::EndS),
        SidConfig {
            mode: Some(SbufMode::Buffer),
            ..sidc(sid(h, END_SBUF), Behavior::EndSbuf)
        },
        SidConfig {
            mode: Some(SbufMode::Drop),
            ..sidc(sid(h, END_SBUF_DROP), Behavior::EndSbuf)
        },
    ];
    sids.shrink_to_fit();
    NodeConfig {
        locator: format!("fc00:0:{h:x}::/48")
            .parse()
            .unwrap_or_else(|_| unreachable!()),
        source_address: sid(h, 1),
        infrastructure_prefixes: vec![domain()],
        ports: vec![
            PortConfig {
                name: "up0".into(),
                kind: PortKind::Uplink,
                mac: MacAddr(uplink_mac(h)),
                peer_mac: Some(MacAddr(router_mac(h))),
                address: Some(uplink_address(h)),
                mtu: None,
                hmac: None,
                table: None,
                ipv4_address: None,
                proxy_ndp: Vec::new(),
                proxy_arp: Vec::new(),
            },
            PortConfig {
                name: "vm1".into(),
                kind: PortKind::Vm,
                mac: MacAddr([0x02, 0, 0, 0, h as u8, 1]),
                peer_mac: None,
                address: None,
                mtu: None,
                hmac: None,
                table: None,
                ipv4_address: None,
                proxy_ndp: Vec::new(),
                proxy_arp: Vec::new(),
            },
            PortConfig {
                name: "client".into(),
                kind: PortKind::Vm,
                mac: MacAddr([0x02, 0, 0, 0, h as u8, 2]),
                peer_mac: None,
                address: None,
                mtu: None,
                hmac: None,
                table: None,
                ipv4_address: None,
                proxy_ndp: Vec::new(),
                proxy_arp: Vec::new(),
            },
        ],
        routes: vec![
            RouteConfig {
                prefix: "::/0".parse().unwrap_or_else(|_| unreachable!()),
                port: "up0".into(),
                table: 0,
            },
            RouteConfig {
                prefix: "0.0.0.0/0".parse().unwrap_or_else(|_| unreachable!()),
                port: "up0".into(),
                table: 0,
            },
            RouteConfig {
                prefix: "fc00::/16".parse().unwrap_or_else(|_| unreachable!()),
                port: "up0".into(),
                table: 10,
            },
        ],
        sids,
        policies: vec![
            policy(
                "via-s-to-d",
                Headend::HEncaps,
                vec![sid(S, END_S), sid(D, END_SBUF)],
            ),
            policy("to-d", Headend::HEncaps, vec![sid(D, END), sid(D, END_DT6)]),
            policy(
                "to-d-red",
                Headend::HEncapsRed,
                vec![sid(D, END), sid(D, END_DT6)],
            ),
            policy(
                "to-d-insert",
                Headend::HInsert,
                vec![sid(D, END), sid(D, END_PSP)],
            ),
            policy("on-s", Headend::HEncaps, vec![sid(S, END_DT6)]),
            policy("on-d", Headend::HEncaps, vec![sid(D, END_DT6)]),
        ],
        vms: vec![
            VmConfig {
                name: "vm1".into(),
                addresses: vec![vm1().into(), VM1_V4.into()],
                mac: MacAddr(VM1_MAC),
                port: "vm1".into(),
                state: vm1_state,
            },
            VmConfig {
                name: "client".into(),
                addresses: vec![client().into(), CLIENT_V4.into()],
                mac: MacAddr(CLIENT_MAC),
                port: "client".into(),
                state: VmState::Running,
            },
        ],
        mappings: vec![
            MappingConfig {
                vm_address: "2001:db8:900::90/128"
                    .parse()
                    .unwrap_or_else(|_| unreachable!()),
                policy: "to-d".into(),
            },
            MappingConfig {
                vm_address: "10.90.0.0/16".parse().unwrap_or_else(|_| unreachable!()),
                policy: "to-d".into(),
            },
        ],
        buffer: BufferConfig::default(),
        icmp: IcmpConfig {
            rate_per_sec: 1000,
            burst: 100,
        },
        fence: crate::config::FenceConfig::default(),
        gateway: GatewayConfig {
            address: gateway(),
            mac: MacAddr(GATEWAY_MAC),
            ipv4_address: Some(Ipv4Addr::new(10, 0, 0, 1)),
        },
        hmac_keys: Vec::new(),
        migration_hmac_key: None,
        encap_source: None,
        steering: Vec::new(),
        extra_locators: Vec::new(),
    }
}

/// The paper's two hosts: S with VM 1 running, D with VM 1 absent (about to arrive).
pub fn two_hosts() -> (NodeConfig, NodeConfig) {
    (
        host_config(canon::S, VmState::Running),
        host_config(canon::D, VmState::Absent),
    )
}

/// A ~100-byte inner IPv6 UDP packet from the correspondent to VM 1.
pub fn inner_to_vm1() -> Vec<u8> {
    udp6_sized(a6("2001:db8:777::7"), canon::vm1(), 100)
}

/// An uplink frame to host `h` carrying an SRv6 packet from C.
pub fn uplink_frame(h: u16, segments: &[Ipv6Addr], sl: u8, inner: &[u8]) -> Vec<u8> {
    eth(
        canon::uplink_mac(h),
        canon::router_mac(h),
        0x86dd,
        &srv6(canon::sid(canon::C, 1), segments, sl, inner),
    )
}

/// HMAC key id of [`with_hmac`].
pub const HMAC_KEY_ID: u32 = 7;
/// HMAC secret of [`with_hmac`] (what `ip sr hmac set 7 sha256` was given for the kernel
/// fixture in `hmac_tests`).
pub const HMAC_SECRET: &[u8] = b"srmig-hmac-test";

/// Adds HMAC to a canonical configuration: key [`HMAC_KEY_ID`] (hmac-sha256,
/// [`HMAC_SECRET`]), policy `to-d-hmac` (H.Encaps `D::End -> D::End.DT6` signed with it) and
/// the mapping `2001:db8:901::/48 -> to-d-hmac`.
pub fn with_hmac(cfg: &mut NodeConfig) {
    use canon::*;
    cfg.hmac_keys.push(crate::config::HmacKeyConfig {
        id: HMAC_KEY_ID,
        algorithm: crate::config::HmacAlgorithm::HmacSha256,
        secret_file: "hmac-7.key".into(),
        secret: crate::config::HmacSecret::new(HMAC_SECRET.to_vec()),
    });
    cfg.policies.push(PolicyConfig {
        hmac_key: Some(HMAC_KEY_ID),
        ..policy(
            "to-d-hmac",
            Headend::HEncaps,
            vec![sid(D, END), sid(D, END_DT6)],
        )
    });
    cfg.mappings.push(MappingConfig {
        vm_address: "2001:db8:901::/48"
            .parse()
            .unwrap_or_else(|_| unreachable!()),
        policy: "to-d-hmac".into(),
    });
}

/// Signs the SRv6 packet of an Ethernet frame (IPv6 header right after Ethernet, SRH right
/// after IPv6) by appending an HMAC TLV computed with `secret` (RFC 8754 2.1.2.1), fixing Hdr
/// Ext Len and Payload Length. An independent implementation (a plain `Hmac<Sha256>` over the
/// text built here), for tests and fuzzers.
pub fn sign_frame(frame: &mut Vec<u8>, key_id: u32, secret: &[u8], d_flag: bool) {
    use hmac::{KeyInit, Mac};
    use srmig_wire::srh;
    let (ip, o) = (14, 54);
    let srh_len = (usize::from(frame[o + 1]) + 1) * 8;
    let at = o + srh_len;
    let mut tlv = [0u8; srh::HMAC_TLV_LEN];
    srh::emit_hmac_tlv(&mut tlv, d_flag, key_id, &[0; srh::HMAC_FIELD_LEN]);
    frame.splice(at..at, tlv);
    frame[o + 1] += (srh::HMAC_TLV_LEN / 8) as u8;
    let pl = u16::from_be_bytes([frame[ip + 4], frame[ip + 5]]) + srh::HMAC_TLV_LEN as u16;
    frame[ip + 4..ip + 6].copy_from_slice(&pl.to_be_bytes());
    let n = usize::from(frame[o + 4]) + 1;
    let mut text = frame[ip + 8..ip + 24].to_vec();
    text.extend_from_slice(&[frame[o + 4], frame[o + 5]]);
    text.extend_from_slice(&key_id.to_be_bytes());
    text.extend_from_slice(&frame[o + 8..o + 8 + 16 * n]);
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret) else {
        unreachable!("HMAC takes keys of any length")
    };
    mac.update(&text);
    let out = mac.finalize().into_bytes();
    frame[at + 8..at + srh::HMAC_TLV_LEN].copy_from_slice(&out);
}

/// A frame sent by the client VM of a host to `dst` (IPv6 UDP, `total` bytes of IP).
pub fn client_frame(dst: Ipv6Addr, total: usize) -> Vec<u8> {
    eth(
        canon::GATEWAY_MAC,
        canon::CLIENT_MAC,
        0x86dd,
        &udp6_sized(canon::client(), dst, total),
    )
}

/// What a scenario's packets must come out as (checked by the crate's tests, so a bench
/// cannot silently measure a drop path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Every packet is sent on this port.
    Tx(PortId),
    /// Every packet is held for this VM.
    Held(VmId),
}

/// How a scenario is run between batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScenarioKind {
    /// Refill and process.
    Forward,
    /// Refill, process (held), then discard the VM's buffer.
    HoldDiscard(VmId),
    /// Refill, process (held), resume the VM, drain `poll_transmit`, pause it again.
    HoldRelease(VmId),
}

/// A ready-to-run bench scenario.
#[derive(Debug)]
pub struct Scenario {
    /// Behavior name, e.g. `End.SBUF hold`.
    pub name: &'static str,
    /// The engine, configured.
    pub dataplane: Dataplane,
    /// The prototype frame.
    pub frame: Vec<u8>,
    /// Its ingress port.
    pub ingress: PortId,
    /// Between-batch handling.
    pub kind: ScenarioKind,
    /// Expected verdict of every packet.
    pub expect: Expect,
}

impl Scenario {
    /// Fills `batch` to capacity with copies of the prototype frame.
    pub fn fill(&self, batch: &mut Batch) {
        batch.clear();
        while !batch.is_full() {
            if !matches!(batch.push(self.ingress, &self.frame), Ok(true)) {
                break;
            }
        }
    }

    /// Refills, processes one batch and does the between-batch work. Returns how many packets
    /// got the expected verdict (released packets count for `HoldRelease`).
    pub fn run(&mut self, now: Instant, batch: &mut Batch, out: &mut PacketBuf) -> usize {
        self.fill(batch);
        self.dataplane.process_batch(now, batch);
        let expected = match self.expect {
            Expect::Tx(p) => Verdict::Tx(p),
            Expect::Held(v) => Verdict::Held(v),
        };
        let ok = batch.iter().filter(|p| p.verdict == expected).count();
        match self.kind {
            ScenarioKind::Forward => ok,
            ScenarioKind::HoldDiscard(vm) => {
                self.dataplane.discard_buffer(vm);
                ok
            }
            ScenarioKind::HoldRelease(vm) => {
                let _ = self.dataplane.handle_vm_state(now, vm, VmState::Running);
                let mut released = 0;
                while self.dataplane.poll_transmit(now, out).is_some() {
                    released += 1;
                }
                let _ = self.dataplane.handle_vm_state(now, vm, VmState::Absent);
                released
            }
        }
    }
}

fn dp(h: u16, state: VmState) -> Dataplane {
    Dataplane::new(host_config(h, state))
        .unwrap_or_else(|e| panic!("canonical config invalid: {e}"))
}

/// The bench scenarios, one per behavior: End, End.X, End.DX6, End.DT6, End.S deliver,
/// End.S forward, End.SBUF deliver, End.SBUF hold, End.SBUF release, H.Encaps, H.Encaps.Red,
/// H.Insert. Inner packets are 100-byte IPv6 UDP packets.
pub fn bench_scenarios() -> Vec<Scenario> {
    use canon::*;
    let inner = inner_to_vm1();
    let vm1_id = VmId(0);
    let fwd = |name, h, state, frame: Vec<u8>, ingress, expect| Scenario {
        name,
        dataplane: dp(h, state),
        frame,
        ingress,
        kind: ScenarioKind::Forward,
        expect,
    };
    let mut v = vec![
        fwd(
            "End",
            S,
            VmState::Running,
            uplink_frame(S, &[sid(S, END), sid(D, END_DT6)], 1, &inner),
            UPLINK,
            Expect::Tx(UPLINK),
        ),
        fwd(
            "End.X",
            S,
            VmState::Running,
            uplink_frame(S, &[sid(S, END_X), sid(D, END_DT6)], 1, &inner),
            UPLINK,
            Expect::Tx(UPLINK),
        ),
        fwd(
            "End.DX6",
            S,
            VmState::Running,
            uplink_frame(S, &[sid(S, END_DX6)], 0, &inner),
            UPLINK,
            Expect::Tx(VM1_PORT),
        ),
        fwd(
            "End.DT6",
            S,
            VmState::Running,
            uplink_frame(S, &[sid(S, END_DT6)], 0, &inner),
            UPLINK,
            Expect::Tx(VM1_PORT),
        ),
        fwd(
            "End.S deliver",
            S,
            VmState::Running,
            uplink_frame(S, &[sid(S, END_S), sid(D, END_SBUF)], 1, &inner),
            UPLINK,
            Expect::Tx(VM1_PORT),
        ),
        fwd(
            "End.S forward",
            S,
            VmState::Paused,
            uplink_frame(S, &[sid(S, END_S), sid(D, END_SBUF)], 1, &inner),
            UPLINK,
            Expect::Tx(UPLINK),
        ),
        fwd(
            "End.SBUF deliver",
            D,
            VmState::Running,
            uplink_frame(D, &[sid(S, END_S), sid(D, END_SBUF)], 0, &inner),
            UPLINK,
            Expect::Tx(VM1_PORT),
        ),
    ];
    v.push(Scenario {
        name: "End.SBUF hold",
        dataplane: dp(D, VmState::Absent),
        frame: uplink_frame(D, &[sid(S, END_S), sid(D, END_SBUF)], 0, &inner),
        ingress: UPLINK,
        kind: ScenarioKind::HoldDiscard(vm1_id),
        expect: Expect::Held(vm1_id),
    });
    v.push(Scenario {
        name: "End.SBUF release",
        dataplane: dp(D, VmState::Absent),
        frame: uplink_frame(D, &[sid(S, END_S), sid(D, END_SBUF)], 0, &inner),
        ingress: UPLINK,
        kind: ScenarioKind::HoldRelease(vm1_id),
        expect: Expect::Held(vm1_id),
    });
    let to_remote = client_frame(remote(), 100);
    v.push(fwd(
        "H.Encaps",
        S,
        VmState::Running,
        to_remote.clone(),
        CLIENT_PORT,
        Expect::Tx(UPLINK),
    ));
    let mut red = fwd(
        "H.Encaps.Red",
        S,
        VmState::Running,
        to_remote.clone(),
        CLIENT_PORT,
        Expect::Tx(UPLINK),
    );
    let mut ins = fwd(
        "H.Insert",
        S,
        VmState::Running,
        to_remote,
        CLIENT_PORT,
        Expect::Tx(UPLINK),
    );
    for (s, name) in [(&mut red, "to-d-red"), (&mut ins, "to-d-insert")] {
        let p = s
            .dataplane
            .policy_id(name)
            .unwrap_or_else(|| unreachable!());
        let prefix = "2001:db8:900::90/128"
            .parse()
            .unwrap_or_else(|_| unreachable!());
        s.dataplane
            .set_mapping(prefix, Steering::Policy(p))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    v.push(red);
    v.push(ins);
    v
}
