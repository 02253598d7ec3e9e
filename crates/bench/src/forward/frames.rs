//! The frames the generator sends, one per case: exactly `linux_forward.sh`'s frames (an inner
//! IPv6/UDP packet of 100 bytes, SRv6 around it for End and End.DX6), with the UDP payload
//! grown so that the whole frame is `--frame-bytes` long when that is larger.
//!
//! Sizes are Ethernet frames as the generator hands them to the veth: destination MAC to the
//! last payload byte, no FCS.

use std::net::Ipv6Addr;

use srmig_wire::ethernet::EtherType;
use srmig_wire::{checksum, ipv6, srh, IpProtocol};

use super::topology::{
    ADDR_GEN, ENCAP_DST, MAC_D0, MAC_FOREIGN, MAC_G0, PLAIN_DST, SID_DX6, SID_END, SINK_SEG,
};
use super::Case;

/// Ethernet header.
const ETH_LEN: usize = 14;
/// IPv6 fixed header.
const IPV6_LEN: usize = 40;
/// UDP header.
const UDP_LEN: usize = 8;
/// UDP payload of the reference frames (`PAYLOAD=52`): a 100-byte inner packet.
pub(crate) const MIN_PAYLOAD: usize = 52;
/// The smallest frame of any case: plain IPv6 with the reference's 100-byte inner packet.
pub const MIN_FRAME_BYTES: usize = ETH_LEN + IPV6_LEN + UDP_LEN + MIN_PAYLOAD;
/// What an SRH with `n` segments adds.
const fn srh_len(n: usize) -> usize {
    8 + 16 * n
}
/// The most the DUT adds to a packet (H.Encaps: outer IPv6 + SRH with one segment).
pub(crate) const MAX_GROWTH: usize = IPV6_LEN + srh_len(1);

/// Bytes in front of the inner packet's UDP payload for `case`.
fn overhead(case: Case) -> usize {
    let inner = ETH_LEN + IPV6_LEN + UDP_LEN;
    match case {
        Case::Ipv6 | Case::HEncaps => inner,
        Case::End => inner + IPV6_LEN + srh_len(2),
        Case::EndDx6 => inner + IPV6_LEN + srh_len(1),
    }
}

/// The frame length used for `case` when `--frame-bytes` is `requested`: `requested`, or the
/// reference frame of that case if that is larger.
pub(crate) fn frame_len(case: Case, requested: usize) -> usize {
    requested.max(overhead(case) + MIN_PAYLOAD)
}

/// The frame the generator sends for `case`.
pub(crate) fn frame(case: Case, requested: usize) -> Vec<u8> {
    let payload = frame_len(case, requested) - overhead(case);
    let ip = match case {
        Case::Ipv6 => inner_packet(ADDR_GEN, PLAIN_DST, payload),
        Case::HEncaps => inner_packet(ADDR_GEN, ENCAP_DST, payload),
        // Segment List[0] is the last segment: SINK_SEG after SID_END, SL = 1.
        Case::End => srv6_packet(
            SID_END,
            1,
            &[SINK_SEG, SID_END],
            &inner_packet(ADDR_GEN, PLAIN_DST, payload),
        ),
        Case::EndDx6 => srv6_packet(
            SID_DX6,
            0,
            &[SID_DX6],
            &inner_packet(ADDR_GEN, PLAIN_DST, payload),
        ),
    };
    ethernet(MAC_D0, &ip)
}

/// The generator-ceiling frame: the plain IPv6 frame of `requested` bytes to a MAC address
/// nobody has, so the DUT's kernel drops it on ingress (`PACKET_OTHERHOST`).
pub(crate) fn foreign_frame(requested: usize) -> Vec<u8> {
    let payload = frame_len(Case::Ipv6, requested) - overhead(Case::Ipv6);
    ethernet(MAC_FOREIGN, &inner_packet(ADDR_GEN, PLAIN_DST, payload))
}

fn ethernet(dst: [u8; 6], ip: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_LEN + ip.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&MAC_G0);
    f.extend_from_slice(&EtherType::IPV6.0.to_be_bytes());
    f.extend_from_slice(ip);
    f
}

/// IPv6 + UDP (1234 -> 5678) with `payload` bytes of 0xab and a valid checksum.
fn inner_packet(src: Ipv6Addr, dst: Ipv6Addr, payload: usize) -> Vec<u8> {
    let udp_len = UDP_LEN + payload;
    let mut p = vec![0u8; IPV6_LEN + udp_len];
    ipv6::emit_header(&mut p, src, dst, IpProtocol::UDP, len16(udp_len), 64);
    let udp = &mut p[IPV6_LEN..];
    udp[0..2].copy_from_slice(&1234u16.to_be_bytes());
    udp[2..4].copy_from_slice(&5678u16.to_be_bytes());
    udp[4..6].copy_from_slice(&len16(udp_len).to_be_bytes());
    udp[UDP_LEN..].fill(0xab);
    // The packet was just built well-formed, so this cannot fail; a zero checksum would be
    // caught by the golden test below.
    let _ = checksum::fix_l4_checksum(&mut p);
    p
}

/// Outer IPv6 (src ADDR_GEN, dst `da`) + SRH (`segments` in wire order) around `inner`.
fn srv6_packet(da: Ipv6Addr, segments_left: u8, segments: &[Ipv6Addr], inner: &[u8]) -> Vec<u8> {
    let srh_bytes = srh_len(segments.len());
    let mut p = vec![0u8; IPV6_LEN + srh_bytes + inner.len()];
    let payload_len = len16(srh_bytes + inner.len());
    ipv6::emit_header(&mut p, ADDR_GEN, da, IpProtocol::ROUTING, payload_len, 64);
    let written = srh::emit_srh(
        &mut p[IPV6_LEN..],
        IpProtocol::IPV6,
        segments_left,
        0,
        segments,
    );
    debug_assert_eq!(written, srh_bytes);
    p[IPV6_LEN + srh_bytes..].copy_from_slice(inner);
    p
}

/// Lengths here are bounded by the MTU check in `Options::validate` (at most 65535).
fn len16(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_sizes_at_the_minimum() {
        assert_eq!(MIN_FRAME_BYTES, 114);
        assert_eq!(frame(Case::Ipv6, MIN_FRAME_BYTES).len(), 114);
        assert_eq!(frame(Case::HEncaps, MIN_FRAME_BYTES).len(), 114);
        assert_eq!(frame(Case::End, MIN_FRAME_BYTES).len(), 194);
        assert_eq!(frame(Case::EndDx6, MIN_FRAME_BYTES).len(), 178);
        assert_eq!(foreign_frame(MIN_FRAME_BYTES).len(), 114);
    }

    #[test]
    fn padded_to_the_requested_size() {
        for case in Case::ALL {
            assert_eq!(frame(case, 1500).len(), 1500, "{case:?}");
            assert_eq!(frame(case, 9000).len(), 9000, "{case:?}");
        }
    }

    #[test]
    fn inner_udp_checksum_verifies() {
        for case in Case::ALL {
            let f = frame(case, 300);
            let inner_at = f.len() - (300 - overhead(case) + UDP_LEN + IPV6_LEN);
            assert_eq!(
                checksum::verify_l4_checksum(&f[inner_at..]),
                Ok(true),
                "{case:?}"
            );
        }
    }

    #[test]
    fn golden_end_frame_matches_linux_forward_sh() {
        // The first bytes of `frame_for end` in linux_forward.sh (PAYLOAD=52).
        let f = frame(Case::End, MIN_FRAME_BYTES);
        let hex: String = f[..14 + 40 + 8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            concat!(
                "020000000100",
                "020000000001",
                "86dd",
                "60000000",
                "008c",
                "2b40",
                "20010db8000100000000000000000002",
                "fc00000100000000000000000000000e",
                "2904",
                "0401",
                "01000000"
            )
        );
        assert_eq!(&f[62..78], &SINK_SEG.octets());
        assert_eq!(&f[78..94], &SID_END.octets());
    }
}
