//! Internet checksum (RFC 1071), the IPv6 pseudo-header (RFC 8200 8.1), incremental update
//! (RFC 1624) and recomputation of upper-layer checksums after a packet was rewritten.
//!
//! Convention (as in smoltcp): [`data`], [`pseudo_header_v6`] and [`combine`] return the
//! *folded one's-complement sum*, not yet complemented; the checksum field holds `!sum`.
//! A buffer whose checksum field is included verifies when its sum is `0xffff`.

use core::net::{Ipv4Addr, Ipv6Addr};

use crate::ext;
use crate::ip::IpProtocol;
use crate::ipv6;
use crate::srh::Srh;
use crate::{Error, Result};

#[inline]
const fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// One's-complement sum of `bytes` (big-endian 16-bit words, odd trailing byte padded with 0).
#[inline]
pub fn data(bytes: &[u8]) -> u16 {
    let mut acc: u64 = 0;
    let mut chunks = bytes.chunks_exact(4);
    for c in &mut chunks {
        acc += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    let mut pairs = rest.chunks_exact(2);
    for p in &mut pairs {
        acc += u64::from(u16::from_be_bytes([p[0], p[1]]));
    }
    if let Some(&last) = pairs.remainder().first() {
        acc += u64::from(last) << 8;
    }
    fold(acc)
}

/// One's-complement sum of partial sums.
#[inline]
pub fn combine(sums: &[u16]) -> u16 {
    fold(sums.iter().map(|&s| u64::from(s)).sum())
}

/// Sum of the IPv6 pseudo-header: source, destination, upper-layer length, next header.
#[inline]
pub fn pseudo_header_v6(src: &Ipv6Addr, dst: &Ipv6Addr, next_header: IpProtocol, len: u32) -> u16 {
    let mut acc = u64::from(data(&src.octets())) + u64::from(data(&dst.octets()));
    acc += u64::from(len >> 16) + u64::from(len & 0xffff) + u64::from(next_header.0);
    fold(acc)
}

/// Sum of the IPv4 pseudo-header.
#[inline]
pub fn pseudo_header_v4(src: &Ipv4Addr, dst: &Ipv4Addr, protocol: IpProtocol, len: u16) -> u16 {
    let acc = u64::from(data(&src.octets()))
        + u64::from(data(&dst.octets()))
        + u64::from(len)
        + u64::from(protocol.0);
    fold(acc)
}

/// RFC 1624 eqn. 3: new checksum field after a 16-bit word changed from `old` to `new`:
/// `HC' = ~(~HC + ~m + m')`.
#[inline]
pub const fn update_u16(checksum: u16, old: u16, new: u16) -> u16 {
    !fold(!checksum as u64 + !old as u64 + new as u64)
}

/// RFC 1624 for a run of bytes (equal, even lengths; e.g. an address rewrite). If the lengths
/// differ or are odd the result is meaningless; callers pass fixed-size fields.
#[inline]
pub fn update_bytes(checksum: u16, old: &[u8], new: &[u8]) -> u16 {
    debug_assert!(old.len() == new.len() && old.len().is_multiple_of(2));
    // ~old summed = !data(old) in one's complement.
    !fold(u64::from(!checksum) + u64::from(!data(old)) + u64::from(data(new)))
}

/// Where the upper-layer checksum lives for `proto`, relative to the upper-layer header.
#[inline]
fn l4_checksum_offset(proto: IpProtocol) -> Option<usize> {
    match proto {
        IpProtocol::UDP => Some(6),
        IpProtocol::TCP => Some(16),
        IpProtocol::ICMPV6 => Some(2),
        _ => None,
    }
}

/// Locate the upper layer of an IPv6 packet: (protocol, offset from packet start, length,
/// pseudo-header destination). The pseudo-header destination is the final destination: with
/// an SRH present that is `Segment List[0]` (RFC 8200 8.1, RFC 8754 2).
fn locate_l4(pkt: &[u8]) -> Result<Option<(IpProtocol, usize, usize, Ipv6Addr)>> {
    let p = ipv6::Packet::new_checked(pkt)?;
    let payload = p.payload();
    let chain = ext::walk(p.next_header(), payload, ext::MAX_CHAIN)?;
    if chain.fragment.is_some() {
        return Ok(None);
    }
    let (proto, off) = chain.upper;
    if l4_checksum_offset(proto).is_none() {
        return Ok(None);
    }
    let mut dst = p.dst_addr();
    if let Some((roff, _)) = chain.routing {
        if let Ok(srh) = Srh::new_checked(&payload[roff..]) {
            dst = srh.segment(0);
        }
    }
    Ok(Some((
        proto,
        ipv6::HEADER_LEN + off,
        payload.len() - off,
        dst,
    )))
}

fn l4_sum(pkt: &[u8], proto: IpProtocol, at: usize, len: usize, dst: &Ipv6Addr) -> u16 {
    let src = ipv6::Packet::new_unchecked(pkt).src_addr();
    combine(&[
        pseudo_header_v6(&src, dst, proto, len as u32),
        data(&pkt[at..at + len]),
    ])
}

/// Recompute the UDP, TCP or ICMPv6 checksum of an IPv6 packet in place (after a rewrite of
/// addresses, SRH or payload). Returns `Ok(true)` if a checksum was written, `Ok(false)` if
/// the packet has no such upper layer or is a fragment. Errors if the IPv6 header or the
/// extension chain is malformed, or the upper-layer header is truncated.
pub fn fix_l4_checksum(pkt: &mut [u8]) -> Result<bool> {
    let Some((proto, at, len, dst)) = locate_l4(pkt)? else {
        return Ok(false);
    };
    let field = at + l4_checksum_offset(proto).unwrap_or(0);
    if len < l4_checksum_offset(proto).unwrap_or(0) + 2 {
        return Err(Error::Truncated);
    }
    pkt[field..field + 2].fill(0);
    let mut c = !l4_sum(pkt, proto, at, len, &dst);
    if proto == IpProtocol::UDP && c == 0 {
        c = 0xffff;
    }
    pkt[field..field + 2].copy_from_slice(&c.to_be_bytes());
    Ok(true)
}

/// Verify the UDP, TCP or ICMPv6 checksum of an IPv6 packet. `Ok(true)` if it verifies,
/// `Err(BadChecksum)` if not, `Ok(false)` if there is nothing to verify (other protocol,
/// fragment). A zero UDP checksum is invalid over IPv6 (RFC 8200 8.1).
pub fn verify_l4_checksum(pkt: &[u8]) -> Result<bool> {
    let Some((proto, at, len, dst)) = locate_l4(pkt)? else {
        return Ok(false);
    };
    if len < l4_checksum_offset(proto).unwrap_or(0) + 2 {
        return Err(Error::Truncated);
    }
    if l4_sum(pkt, proto, at, len, &dst) == 0xffff {
        Ok(true)
    } else {
        Err(Error::BadChecksum)
    }
}

/// What [`complete_partial`] found in a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartialChecksum {
    /// No TCP or UDP checksum to look at: another protocol, a fragment, a UDP checksum of 0
    /// over IPv4 ("none"), or headers too malformed to find one (the engine judges those).
    NotApplicable,
    /// The checksum verifies.
    Valid,
    /// The field held the pseudo-header sum (a checksum left for the device to finish,
    /// CHECKSUM_PARTIAL); it was completed in place and now verifies.
    Completed,
    /// The checksum is wrong and is not a partial one: left as it is, for the receiver to
    /// drop.
    Invalid,
}

/// The deepest a packet is looked into for its TCP/UDP header: the outer IP header and two
/// levels of IP-in-IP (IPv6 or IPv4 in SRv6 encapsulation, and one more).
const MAX_NESTING: usize = 3;

/// Where a TCP/UDP checksum of a packet lives: offset of the L4 header, its length (as the IP
/// headers say, not the frame: Ethernet pads short frames), the protocol, the pseudo-header sum.
struct L4At {
    at: usize,
    len: usize,
    proto: IpProtocol,
    pseudo: u16,
    v4: bool,
}

/// Finds the TCP/UDP header of an IPv6 (`version` 6) or IPv4 packet, through IPv6 extension
/// headers (the SRH's `Segment List[0]` as the pseudo-header destination) and nested IP-in-IP.
fn locate_tcp_udp(pkt: &[u8]) -> Option<L4At> {
    let mut base = 0usize;
    for _ in 0..MAX_NESTING {
        let p = pkt.get(base..)?;
        let (proto, off, len, pseudo, v4) = match p.first()? >> 4 {
            6 => {
                let ip = ipv6::Packet::new_checked(p).ok()?;
                let payload = ip.payload();
                let chain = ext::walk(ip.next_header(), payload, ext::MAX_CHAIN).ok()?;
                if chain.fragment.is_some() {
                    return None;
                }
                let (proto, off) = chain.upper;
                let len = payload.len().checked_sub(off)?;
                let mut dst = ip.dst_addr();
                if let Some((roff, _)) = chain.routing {
                    if let Ok(srh) = Srh::new_checked(&payload[roff..]) {
                        dst = srh.segment(0);
                    }
                }
                let len32 = u32::try_from(len).ok()?;
                let pseudo = pseudo_header_v6(&ip.src_addr(), &dst, proto, len32);
                (proto, ipv6::HEADER_LEN + off, len, pseudo, false)
            }
            4 => {
                let ip = crate::ipv4::Packet::new_checked(p).ok()?;
                if ip.more_frags() || ip.frag_offset() != 0 {
                    return None;
                }
                let hl = ip.header_len();
                let total = usize::from(ip.total_len());
                let len = total.checked_sub(hl)?;
                if total > p.len() {
                    return None;
                }
                let proto = ip.protocol();
                let len16 = u16::try_from(len).ok()?;
                let pseudo = pseudo_header_v4(&ip.src_addr(), &ip.dst_addr(), proto, len16);
                (proto, hl, len, pseudo, true)
            }
            _ => return None,
        };
        match proto {
            IpProtocol::TCP | IpProtocol::UDP => {
                return Some(L4At {
                    at: base + off,
                    len,
                    proto,
                    pseudo,
                    v4,
                })
            }
            IpProtocol::IPV6 | IpProtocol::IPV4 => base += off,
            _ => return None,
        }
    }
    None
}

/// Checks the TCP or UDP checksum of an IP packet (IPv6 or IPv4, possibly inside SRv6 or other
/// IP-in-IP encapsulation) and completes it if it was left partial.
///
/// A local kernel stack that sends through a veth hands the frame over with the checksum
/// offloaded (CHECKSUM_PARTIAL): the field holds only the pseudo-header sum and whoever
/// transmits "in hardware" finishes it. AF_PACKET says so in the `virtio_net_hdr`; AF_XDP
/// carries only the bytes. Such a field is recognised by its value, the folded
/// pseudo-header sum (as Linux's `tcp_v6_send_check` / `udp6_hwcsum_outgoing` write it),
/// and only when the checksum does not verify; it is then completed as the kernel's
/// `skb_checksum_help` would. A corrupted packet whose field happens to equal its
/// pseudo-header sum (1 in 65,536 of corrupted packets) would be "repaired" too: the price
/// of not having the kernel's flag.
pub fn complete_partial(pkt: &mut [u8]) -> PartialChecksum {
    let Some(l4) = locate_tcp_udp(pkt) else {
        return PartialChecksum::NotApplicable;
    };
    let Some(field_off) = l4_checksum_offset(l4.proto) else {
        return PartialChecksum::NotApplicable;
    };
    if l4.len < field_off + 2 || l4.at + l4.len > pkt.len() {
        return PartialChecksum::NotApplicable;
    }
    let field = l4.at + field_off;
    let value = u16::from_be_bytes([pkt[field], pkt[field + 1]]);
    if l4.proto == IpProtocol::UDP && value == 0 && l4.v4 {
        return PartialChecksum::NotApplicable;
    }
    let seg = &pkt[l4.at..l4.at + l4.len];
    if combine(&[l4.pseudo, data(seg)]) == 0xffff {
        return PartialChecksum::Valid;
    }
    // One's complement has two zeros: a pseudo-header sum of 0xffff may be written as 0.
    let partial = value == l4.pseudo || (l4.pseudo == 0xffff && value == 0);
    if !partial {
        return PartialChecksum::Invalid;
    }
    pkt[field..field + 2].fill(0);
    let mut c = !combine(&[l4.pseudo, data(&pkt[l4.at..l4.at + l4.len])]);
    if c == 0 {
        // UDP sends 0 as 0xffff (0 means "no checksum"); TCP may do the same.
        c = 0xffff;
    }
    pkt[field..field + 2].copy_from_slice(&c.to_be_bytes());
    PartialChecksum::Completed
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn a(s: &str) -> Ipv6Addr {
        s.parse().expect("addr")
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3 example: 00 01 f2 03 f4 f5 f6 f7 -> sum ddf2.
        assert_eq!(
            data(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0xddf2
        );
        assert_eq!(data(&[0x01]), 0x0100);
        assert_eq!(data(&[]), 0);
        assert_eq!(combine(&[0xffff, 0x0001]), 0x0001);
    }

    fn udp_packet(payload: &[u8]) -> Vec<u8> {
        use etherparse::PacketBuilder;
        let b = PacketBuilder::ipv6(a("2001:db8::1").octets(), a("2001:db8::2").octets(), 64)
            .udp(1234, 5678);
        let mut out = Vec::new();
        b.write(&mut out, payload).expect("write");
        out
    }

    #[test]
    fn fix_matches_etherparse_udp() {
        let good = udp_packet(b"hello srv6");
        let mut bad = good.clone();
        bad[46] ^= 0xff;
        bad[47] ^= 0x0f;
        assert_eq!(verify_l4_checksum(&bad), Err(Error::BadChecksum));
        assert_eq!(fix_l4_checksum(&mut bad), Ok(true));
        assert_eq!(bad, good);
        assert_eq!(verify_l4_checksum(&good), Ok(true));
    }

    #[test]
    fn fix_matches_etherparse_tcp_and_icmpv6() {
        use etherparse::PacketBuilder;
        let mut tcp = Vec::new();
        PacketBuilder::ipv6(a("fc00::1").octets(), a("fc00::2").octets(), 64)
            .tcp(80, 4000, 7, 1000)
            .write(&mut tcp, b"GET / HTTP/1.1\r\n")
            .expect("tcp");
        let mut t = tcp.clone();
        t[56] = 0;
        t[57] = 0;
        assert_eq!(fix_l4_checksum(&mut t), Ok(true));
        assert_eq!(t, tcp);

        let mut icmp = Vec::new();
        PacketBuilder::ipv6(a("fc00::1").octets(), a("fc00::2").octets(), 64)
            .icmpv6_echo_request(1, 2)
            .write(&mut icmp, b"ping")
            .expect("icmp");
        let mut i = icmp.clone();
        i[42] = 0x12;
        assert_eq!(fix_l4_checksum(&mut i), Ok(true));
        assert_eq!(i, icmp);
    }

    #[test]
    fn srh_uses_final_destination() {
        // IPv6 (dst = first segment) + SRH [final, first] + UDP: the pseudo-header uses
        // Segment List[0] (the final destination), like a receiver after the last segment.
        let inner = udp_packet(b"data");
        // inner was summed with dst 2001:db8::2; build an SRH whose Segment List[0] is that.
        let segs = [a("2001:db8::2"), a("fc00:1::100")];
        let mut srh = [0u8; 40];
        let n = crate::srh::emit_srh(&mut srh, IpProtocol::UDP, 1, 0, &segs);
        let l4 = &inner[40..];
        let mut pkt = vec![0u8; 40];
        ipv6::emit_header(
            &mut pkt,
            a("2001:db8::1"),
            a("fc00:1::100"),
            IpProtocol::ROUTING,
            (n + l4.len()) as u16,
            64,
        );
        pkt.extend_from_slice(&srh[..n]);
        pkt.extend_from_slice(l4);
        assert_eq!(verify_l4_checksum(&pkt), Ok(true));
        let before = pkt.clone();
        assert_eq!(fix_l4_checksum(&mut pkt), Ok(true));
        assert_eq!(pkt, before);
    }

    #[test]
    fn nothing_to_fix() {
        let mut p = udp_packet(b"x");
        p[6] = 59; // no next header
        assert_eq!(fix_l4_checksum(&mut p), Ok(false));
        p[6] = 17;
        p[4..6].copy_from_slice(&4u16.to_be_bytes()); // UDP header cut to 4 bytes
        assert_eq!(fix_l4_checksum(&mut p), Err(Error::Truncated));
        assert_eq!(fix_l4_checksum(&mut [0u8; 10]), Err(Error::Truncated));
    }

    proptest! {
        #[test]
        fn incremental_matches_full(mut buf in proptest::collection::vec(any::<u8>(), 2..64).prop_filter("even", |v| v.len() % 2 == 0), at in any::<proptest::sample::Index>(), new in any::<[u8; 2]>()) {
            let c0 = !data(&buf);
            let i = at.index(buf.len() / 2) * 2;
            let old = u16::from_be_bytes([buf[i], buf[i + 1]]);
            buf[i..i + 2].copy_from_slice(&new);
            let full = !data(&buf);
            let inc = update_u16(c0, old, u16::from_be_bytes(new));
            // One's complement has two zeros; compare as sums.
            prop_assert_eq!(fold(u64::from(!inc)) % 0xffff, fold(u64::from(!full)) % 0xffff);
        }

        #[test]
        fn update_bytes_matches_full(prefix in proptest::collection::vec(any::<u8>(), 0..16).prop_map(|mut v| { v.truncate(v.len() & !1); v }), old in any::<[u8; 16]>(), new in any::<[u8; 16]>()) {
            let mut buf = prefix.clone();
            buf.extend_from_slice(&old);
            let c0 = !data(&buf);
            buf.truncate(prefix.len());
            buf.extend_from_slice(&new);
            let full = !data(&buf);
            let inc = update_bytes(c0, &old, &new);
            prop_assert_eq!((!inc) % 0xffff, (!full) % 0xffff);
        }

        #[test]
        fn fix_no_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut b = bytes.clone();
            let _ = fix_l4_checksum(&mut b);
            let _ = verify_l4_checksum(&bytes);
        }
    }

    /// IP packets with a correct TCP or UDP checksum, built by etherparse.
    fn ip_packets() -> Vec<(&'static str, Vec<u8>)> {
        use etherparse::PacketBuilder;
        let payload: Vec<u8> = (0..101u8).collect();
        let mut out = Vec::new();
        let v6 = || PacketBuilder::ipv6(a("fc00::1").octets(), a("fc00::2").octets(), 64);
        let v4 = || PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64);
        let mut p = Vec::new();
        v6().udp(1000, 2000).write(&mut p, &payload).expect("write");
        out.push(("ipv6 udp", std::mem::take(&mut p)));
        v6().tcp(1000, 2000, 7, 1024)
            .write(&mut p, &payload)
            .expect("write");
        out.push(("ipv6 tcp", std::mem::take(&mut p)));
        v4().udp(1000, 2000).write(&mut p, &payload).expect("write");
        out.push(("ipv4 udp", std::mem::take(&mut p)));
        v4().tcp(1000, 2000, 7, 1024)
            .write(&mut p, &payload)
            .expect("write");
        out.push(("ipv4 tcp", std::mem::take(&mut p)));
        out
    }

    /// `inner` in an IPv6 header and an SRH of one segment (next header 41 or 4).
    fn srv6_encap(inner: &[u8]) -> Vec<u8> {
        let nh = if inner[0] >> 4 == 6 { 41 } else { 4 };
        let mut srh = vec![nh, 2, 4, 0, 0, 0, 0, 0];
        srh.extend_from_slice(&a("fc00:9::1").octets());
        let plen = (srh.len() + inner.len()) as u16;
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&plen.to_be_bytes());
        p.extend_from_slice(&[43, 64]);
        p.extend_from_slice(&a("fc00:1::1").octets());
        p.extend_from_slice(&a("fc00:9::1").octets());
        p.extend_from_slice(&srh);
        p.extend_from_slice(inner);
        p
    }

    /// The L4 checksum field's offset in an etherparse packet (IPv6 40 / IPv4 20 bytes).
    fn field_of(p: &[u8]) -> usize {
        let (hl, proto) = if p[0] >> 4 == 6 {
            (40, p[6])
        } else {
            (20, p[9])
        };
        hl + if proto == 17 { 6 } else { 16 }
    }

    /// Makes the checksum of a plain packet partial, as a sending kernel leaves it.
    fn make_partial(p: &mut [u8], field: usize, pseudo: u16) {
        p[field..field + 2].copy_from_slice(&pseudo.to_be_bytes());
    }

    fn pseudo_of(p: &[u8]) -> u16 {
        if p[0] >> 4 == 6 {
            let ip = ipv6::Packet::new_checked(p).expect("ipv6");
            pseudo_header_v6(
                &ip.src_addr(),
                &ip.dst_addr(),
                ip.next_header(),
                u32::from(ip.payload_len()),
            )
        } else {
            let ip = crate::ipv4::Packet::new_checked(p).expect("ipv4");
            pseudo_header_v4(
                &ip.src_addr(),
                &ip.dst_addr(),
                ip.protocol(),
                ip.total_len() - 20,
            )
        }
    }

    #[test]
    fn partial_checksums_are_completed_plain_and_encapsulated() {
        for (name, good) in ip_packets() {
            let field = field_of(&good);
            let pseudo = pseudo_of(&good);
            // Plain.
            let mut p = good.clone();
            assert_eq!(complete_partial(&mut p), PartialChecksum::Valid, "{name}");
            assert_eq!(p, good, "{name}: a valid packet is not touched");
            make_partial(&mut p, field, pseudo);
            assert_eq!(
                complete_partial(&mut p),
                PartialChecksum::Completed,
                "{name}"
            );
            assert_eq!(
                p, good,
                "{name}: completed as the sender's stack would have"
            );
            // Inside SRv6, with Ethernet padding after it.
            let enc_good = srv6_encap(&good);
            let off = enc_good.len() - good.len();
            let mut e = enc_good.clone();
            make_partial(&mut e, off + field, pseudo);
            e.extend_from_slice(&[0xee; 7]);
            assert_eq!(
                complete_partial(&mut e),
                PartialChecksum::Completed,
                "{name}"
            );
            assert_eq!(&e[..enc_good.len()], &enc_good[..], "{name} in SRv6");
            // Corrupted, not partial: left alone.
            let mut c = good.clone();
            let last = c.len() - 1;
            c[last] ^= 0x5a;
            let before = c.clone();
            assert_eq!(complete_partial(&mut c), PartialChecksum::Invalid, "{name}");
            assert_eq!(c, before);
        }
    }

    #[test]
    fn nothing_to_complete() {
        // IPv4 UDP without a checksum (0): nothing to do.
        let mut p = ip_packets().remove(2).1;
        let field = field_of(&p);
        p[field..field + 2].fill(0);
        assert_eq!(complete_partial(&mut p), PartialChecksum::NotApplicable);
        assert_eq!(&p[field..field + 2], &[0, 0]);
        // A fragment, ICMPv6, garbage, empty.
        let mut frag = ip_packets().remove(2).1;
        frag[6] |= 0x20; // More Fragments
        frag[10..12].fill(0);
        assert_eq!(complete_partial(&mut frag), PartialChecksum::NotApplicable);
        let mut icmp = Vec::new();
        etherparse::PacketBuilder::ipv6(a("fc00::1").octets(), a("fc00::2").octets(), 64)
            .icmpv6_echo_request(1, 2)
            .write(&mut icmp, &[1, 2, 3])
            .expect("write");
        assert_eq!(complete_partial(&mut icmp), PartialChecksum::NotApplicable);
        assert_eq!(complete_partial(&mut []), PartialChecksum::NotApplicable);
        assert_eq!(
            complete_partial(&mut [0x60; 30]),
            PartialChecksum::NotApplicable
        );
    }

    proptest! {
        #[test]
        fn complete_partial_never_panics(mut b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = complete_partial(&mut b);
        }

        #[test]
        fn any_partial_payload_completes_to_the_senders_checksum(
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            which in 0usize..4,
        ) {
            use etherparse::PacketBuilder;
            let v6 = || PacketBuilder::ipv6(a("fc00::1").octets(), a("fc00::2").octets(), 64);
            let v4 = || PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64);
            let mut good = Vec::new();
            match which {
                0 => v6().udp(7, 9).write(&mut good, &payload),
                1 => v6().tcp(7, 9, 1, 100).write(&mut good, &payload),
                2 => v4().udp(7, 9).write(&mut good, &payload),
                _ => v4().tcp(7, 9, 1, 100).write(&mut good, &payload),
            }.expect("write");
            let field = field_of(&good);
            let mut p = good.clone();
            make_partial(&mut p, field, pseudo_of(&good));
            let r = complete_partial(&mut p);
            // A payload can make the full checksum equal the pseudo-header sum: then the
            // packet was valid as it stood.
            prop_assert!(matches!(r, PartialChecksum::Completed | PartialChecksum::Valid));
            prop_assert_eq!(p, good);
        }
    }
}
