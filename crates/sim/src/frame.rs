//! The frames the simulated VMs send and receive: Ethernet + IPv6 + UDP, built with
//! etherparse (checksums included), carrying a small workload header:
//!
//! ```text
//!  0      1                 5                        13                       21
//! +------+-----------------+------------------------+------------------------+
//! | kind | flow (u32, BE)  | sequence (u64, BE)     | sent at (ns, u64, BE)  |
//! +------+-----------------+------------------------+------------------------+
//! ```
//!
//! A VM only ever receives frames the engine delivered on its port: plain IPv6 after
//! decapsulation, so reading them back takes fixed offsets ([`parse_vm_frame`]) and anything
//! else is counted as foreign. The fabric reads only the outer IPv6 destination
//! ([`outer_destination`]), as an IPv6 router does.

use std::net::Ipv6Addr;

use etherparse::PacketBuilder;

/// UDP port of every workload datagram.
pub const PORT: u16 = 7777;
/// Bytes of the workload header.
pub const HEADER_LEN: usize = 21;
const ETH: usize = 14;
const IP6: usize = 40;
const UDP: usize = 8;

/// What a workload datagram is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A probe toward a VM.
    Probe = 1,
    /// The VM's answer to a probe.
    ProbeReply = 2,
    /// HTTP session: SYN.
    Syn = 3,
    /// SYN-ACK.
    SynAck = 4,
    /// The request.
    Request = 5,
    /// The response.
    Response = 6,
    /// TCP bulk: a data segment.
    Data = 7,
    /// TCP bulk: a cumulative acknowledgement.
    Ack = 8,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Probe,
            2 => Kind::ProbeReply,
            3 => Kind::Syn,
            4 => Kind::SynAck,
            5 => Kind::Request,
            6 => Kind::Response,
            7 => Kind::Data,
            8 => Kind::Ack,
            _ => return None,
        })
    }
}

/// A workload datagram's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Msg {
    /// What it is.
    pub kind: Kind,
    /// The workload flow it belongs to.
    pub flow: u32,
    /// Its sequence number (probe, session or byte offset).
    pub seq: u64,
    /// When its original was sent (virtual ns).
    pub sent_at: u64,
}

/// Builds a VM's frame: from `src` (MAC `src_mac`) to `dst` through the gateway MAC `gw_mac`,
/// `len` bytes of UDP payload at least (the header, then zeros).
pub fn vm_frame(
    src_mac: [u8; 6],
    gw_mac: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    msg: Msg,
    len: usize,
) -> Vec<u8> {
    let mut payload = vec![0u8; len.max(HEADER_LEN)];
    payload[0] = msg.kind as u8;
    payload[1..5].copy_from_slice(&msg.flow.to_be_bytes());
    payload[5..13].copy_from_slice(&msg.seq.to_be_bytes());
    payload[13..21].copy_from_slice(&msg.sent_at.to_be_bytes());
    let builder = PacketBuilder::ethernet2(src_mac, gw_mac)
        .ipv6(src.octets(), dst.octets(), 64)
        .udp(PORT, PORT);
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    // Writing into a Vec cannot fail; a payload too long for UDP cannot happen (len is ours).
    if builder.write(&mut out, &payload).is_err() {
        out.clear();
    }
    out
}

/// A frame delivered to a VM: its source, destination and workload header, if it is one of
/// the simulator's datagrams.
pub fn parse_vm_frame(frame: &[u8]) -> Option<(Ipv6Addr, Ipv6Addr, Msg)> {
    if frame.len() < ETH + IP6 + UDP + HEADER_LEN
        || frame[12..14] != [0x86, 0xdd]
        || frame[ETH + 6] != 17
    {
        return None;
    }
    let addr = |at: usize| -> Option<Ipv6Addr> {
        let b: [u8; 16] = frame.get(at..at + 16)?.try_into().ok()?;
        Some(Ipv6Addr::from(b))
    };
    let src = addr(ETH + 8)?;
    let dst = addr(ETH + 24)?;
    let p = &frame[ETH + IP6 + UDP..];
    let u64_at = |at: usize| -> Option<u64> {
        Some(u64::from_be_bytes(p.get(at..at + 8)?.try_into().ok()?))
    };
    let msg = Msg {
        kind: Kind::from_u8(p[0])?,
        flow: u32::from_be_bytes(p.get(1..5)?.try_into().ok()?),
        seq: u64_at(5)?,
        sent_at: u64_at(13)?,
    };
    Some((src, dst, msg))
}

/// The outer IPv6 destination of a frame leaving a host's uplink.
pub fn outer_destination(frame: &[u8]) -> Option<Ipv6Addr> {
    if frame.get(12..14)? != [0x86, 0xdd] {
        return None;
    }
    let b: [u8; 16] = frame.get(ETH + 24..ETH + 40)?.try_into().ok()?;
    Some(Ipv6Addr::from(b))
}

/// An SRv6-encapsulated frame on the fabric (outer IPv6, an optional SRH, then IPv6): the
/// offset of the inner IPv6 header and its destination.
pub fn inner_destination(frame: &[u8]) -> Option<(usize, Ipv6Addr)> {
    if frame.get(12..14)? != [0x86, 0xdd] {
        return None;
    }
    let mut next = *frame.get(ETH + 6)?;
    let mut at = ETH + IP6;
    if next == 43 {
        next = *frame.get(at)?;
        at += 8 + 8 * usize::from(*frame.get(at + 1)?);
    }
    if next != 41 {
        return None;
    }
    let b: [u8; 16] = frame.get(at + 24..at + 40)?.try_into().ok()?;
    Some((at, Ipv6Addr::from(b)))
}

/// Replaces `from` by `to` in the outer headers of an encapsulated frame whose inner IPv6
/// header starts at `inner` ([`inner_destination`]): the outer destination and each of the
/// SRH's segments; returns how many it replaced.
pub fn rewrite_outer(frame: &mut [u8], inner: usize, from: Ipv6Addr, to: Ipv6Addr) -> usize {
    let (from, to) = (from.octets(), to.octets());
    let end = inner.min(frame.len());
    let mut n = 0;
    let mut swap = |at: usize| {
        if frame.get(at..at + 16) == Some(&from[..]) {
            frame[at..at + 16].copy_from_slice(&to);
            n += 1;
        }
    };
    swap(ETH + 24);
    // The SRH (right after the outer header) lists its segments from its 8th byte on.
    let mut at = ETH + IP6 + 8;
    while at + 16 <= end {
        swap(at);
        at += 16;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An H.Encaps frame (outer IPv6, SRH with one segment, inner IPv6): the inner
    /// destination is found past the SRH, and the rewrite changes the outer destination and
    /// the segment, never the inner packet.
    #[test]
    fn an_encapsulated_frame_is_read_and_redirected() {
        let sid: Ipv6Addr = "fc00:0:2::d6".parse().expect("sid");
        let other: Ipv6Addr = "fc00:0:3::d6".parse().expect("sid");
        let vm: Ipv6Addr = "2001:db8:a::5".parse().expect("vm");
        let mut f = vec![0u8; ETH + IP6 + 24 + IP6 + 8];
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        f[ETH + 6] = 43;
        f[ETH + 24..ETH + 40].copy_from_slice(&sid.octets());
        let srh = ETH + IP6;
        f[srh] = 41;
        f[srh + 1] = 2;
        f[srh + 8..srh + 24].copy_from_slice(&sid.octets());
        let inner = srh + 24;
        f[inner + 8..inner + 24].copy_from_slice(&sid.octets()); // inner source: left alone
        f[inner + 24..inner + 40].copy_from_slice(&vm.octets());
        assert_eq!(inner_destination(&f), Some((inner, vm)));
        assert_eq!(rewrite_outer(&mut f, inner, sid, other), 2);
        assert_eq!(outer_destination(&f), Some(other));
        assert_eq!(f[srh + 8..srh + 24], other.octets());
        assert_eq!(f[inner + 8..inner + 24], sid.octets());
        assert_eq!(inner_destination(&f), Some((inner, vm)));
        // Without the SRH, and not encapsulated at all.
        let mut g = f.clone();
        g[ETH + 6] = 41;
        g.drain(srh..inner);
        assert_eq!(inner_destination(&g), Some((srh, vm)));
        g[ETH + 6] = 17;
        assert_eq!(inner_destination(&g), None);
        assert_eq!(inner_destination(&f[..inner + 30]), None);
    }

    #[test]
    fn a_built_frame_reads_back() {
        let msg = Msg {
            kind: Kind::Request,
            flow: 7,
            seq: 1 << 40,
            sent_at: 123_456,
        };
        let src: Ipv6Addr = "2001:db8:a::1".parse().expect("addr");
        let dst: Ipv6Addr = "2001:db8:a::2".parse().expect("addr");
        let f = vm_frame([2; 6], [4; 6], src, dst, msg, 100);
        assert_eq!(f.len(), 14 + 40 + 8 + 100);
        assert_eq!(parse_vm_frame(&f), Some((src, dst, msg)));
        assert_eq!(outer_destination(&f), Some(dst));
        let parsed = etherparse::SlicedPacket::from_ethernet(&f).expect("etherparse reads it");
        assert!(parsed.transport.is_some());
    }

    #[test]
    fn foreign_frames_are_refused() {
        assert_eq!(parse_vm_frame(&[0u8; 30]), None);
        let mut f = vm_frame(
            [2; 6],
            [4; 6],
            Ipv6Addr::LOCALHOST,
            Ipv6Addr::LOCALHOST,
            Msg {
                kind: Kind::Probe,
                flow: 0,
                seq: 0,
                sent_at: 0,
            },
            0,
        );
        f[ETH + IP6 + UDP] = 99;
        assert_eq!(parse_vm_frame(&f), None);
    }
}
