//! The frames the generator sends, one per case: exactly `linux_forward.sh`'s frames (an inner
//! IPv6/UDP packet of 100 bytes, SRv6 around it for End and End.DX6), with the UDP payload
//! grown so that the whole frame is `--frame-bytes` long when that is larger.
//!
//! Sizes are Ethernet frames as the generator hands them to the veth: destination MAC to the
//! last payload byte, no FCS.
//!
//! With `--flows N` a case has N frames, flow 0 being the reference frame. Flow `i` differs
//! only in what a flow hash sees, never in where the DUT sends it:
//! - plain IPv6 and H.Encaps: the UDP source port is `1234 + i` (checksum fixed);
//! - End and End.DX6: the outer Flow Label is `i` and the inner UDP source port `1234 + i`
//!   (inner checksum fixed). Both, because the kernel has two hashes: `skb_get_hash` (RPS)
//!   stops at a non-zero Flow Label and hashes the outer addresses and the label, while the
//!   symmetric hash of `PACKET_FANOUT_HASH` (how srmigd's workers share a port) ignores the
//!   label and walks past the SRH into the inner packet's addresses and ports. On 6.18 an
//!   End frame lands on the same fanout member as a plain frame with the same inner port,
//!   with or without the label.

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
/// Most flows of `--flows`: source ports stay below 65535 and Flow Labels within 20 bits,
/// and 1024 frames of the largest size still fit in memory (65 MB).
pub const MAX_FLOWS: usize = 1024;
/// The reference frames' UDP source port (flow 0).
const SRC_PORT: u16 = 1234;
/// Their UDP destination port.
const DST_PORT: u16 = 5678;

/// Bytes in front of the inner packet's UDP payload for `case`.
fn overhead(case: Case) -> usize {
    let inner = ETH_LEN + IPV6_LEN + UDP_LEN;
    match case {
        Case::Ipv6 | Case::HEncaps | Case::HEncapsVm => inner,
        Case::End => inner + IPV6_LEN + srh_len(2),
        Case::EndDx6 => inner + IPV6_LEN + srh_len(1),
    }
}

/// The frame length used for `case` when `--frame-bytes` is `requested`: `requested`, or the
/// reference frame of that case if that is larger.
pub(crate) fn frame_len(case: Case, requested: usize) -> usize {
    requested.max(overhead(case) + MIN_PAYLOAD)
}

/// The frames the generator sends for `case`, one per flow (`flows` is 1 to [`MAX_FLOWS`],
/// checked by `Options::validate`); the first is the reference frame.
pub(crate) fn frames(case: Case, requested: usize, flows: usize) -> Vec<Vec<u8>> {
    (0..flows.clamp(1, MAX_FLOWS))
        .map(|i| flow_frame(case, requested, len16(i)))
        .collect()
}

/// The frame of flow `flow` for `case` (see the module doc).
fn flow_frame(case: Case, requested: usize, flow: u16) -> Vec<u8> {
    let payload = frame_len(case, requested) - overhead(case);
    let sport = SRC_PORT.wrapping_add(flow);
    let label = u32::from(flow);
    let ip = match case {
        Case::Ipv6 => inner_packet(ADDR_GEN, PLAIN_DST, sport, payload),
        Case::HEncaps | Case::HEncapsVm => inner_packet(ADDR_GEN, ENCAP_DST, sport, payload),
        // Segment List[0] is the last segment: SINK_SEG after SID_END, SL = 1.
        Case::End => srv6_packet(
            SID_END,
            label,
            1,
            &[SINK_SEG, SID_END],
            &inner_packet(ADDR_GEN, PLAIN_DST, sport, payload),
        ),
        Case::EndDx6 => srv6_packet(
            SID_DX6,
            label,
            0,
            &[SID_DX6],
            &inner_packet(ADDR_GEN, PLAIN_DST, sport, payload),
        ),
    };
    ethernet(MAC_D0, &ip)
}

/// The generator-ceiling frame: the plain IPv6 frame of `requested` bytes to a MAC address
/// nobody has, so the DUT's kernel drops it on ingress (`PACKET_OTHERHOST`).
pub(crate) fn foreign_frame(requested: usize) -> Vec<u8> {
    let payload = frame_len(Case::Ipv6, requested) - overhead(Case::Ipv6);
    ethernet(
        MAC_FOREIGN,
        &inner_packet(ADDR_GEN, PLAIN_DST, SRC_PORT, payload),
    )
}

fn ethernet(dst: [u8; 6], ip: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_LEN + ip.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&MAC_G0);
    f.extend_from_slice(&EtherType::IPV6.0.to_be_bytes());
    f.extend_from_slice(ip);
    f
}

/// IPv6 + UDP (`sport` -> 5678) with `payload` bytes of 0xab and a valid checksum.
fn inner_packet(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, payload: usize) -> Vec<u8> {
    let udp_len = UDP_LEN + payload;
    let mut p = vec![0u8; IPV6_LEN + udp_len];
    ipv6::emit_header(&mut p, src, dst, IpProtocol::UDP, len16(udp_len), 64);
    let udp = &mut p[IPV6_LEN..];
    udp[0..2].copy_from_slice(&sport.to_be_bytes());
    udp[2..4].copy_from_slice(&DST_PORT.to_be_bytes());
    udp[4..6].copy_from_slice(&len16(udp_len).to_be_bytes());
    udp[UDP_LEN..].fill(0xab);
    // The packet was just built well-formed, so this cannot fail; a zero checksum would be
    // caught by the golden test below.
    let _ = checksum::fix_l4_checksum(&mut p);
    p
}

/// Outer IPv6 (src ADDR_GEN, dst `da`, Flow Label `flow_label`) + SRH (`segments` in wire
/// order) around `inner`.
fn srv6_packet(
    da: Ipv6Addr,
    flow_label: u32,
    segments_left: u8,
    segments: &[Ipv6Addr],
    inner: &[u8],
) -> Vec<u8> {
    let srh_bytes = srh_len(segments.len());
    let mut p = vec![0u8; IPV6_LEN + srh_bytes + inner.len()];
    let payload_len = len16(srh_bytes + inner.len());
    ipv6::emit_header(&mut p, ADDR_GEN, da, IpProtocol::ROUTING, payload_len, 64);
    ipv6::Packet::new_unchecked(&mut p[..]).set_flow_label(flow_label);
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
    use std::collections::HashSet;

    use srmig_wire::ethernet::Frame;

    use super::*;

    /// The single frame of `--flows 1`.
    fn frame(case: Case, requested: usize) -> Vec<u8> {
        flow_frame(case, requested, 0)
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Today's (pre-`--flows`) reference frames: every header byte, then 52 bytes of 0xab.
    fn golden(case: Case) -> String {
        let headers = match case {
            Case::Ipv6 => concat!(
                "020000000100",
                "020000000001",
                "86dd",
                "60000000",
                "003c",
                "1140",
                "20010db8000100000000000000000002",
                "20010db8009900000000000000000001",
                "04d2",
                "162e",
                "003c",
                "18f8",
            ),
            Case::HEncaps | Case::HEncapsVm => concat!(
                "020000000100",
                "020000000001",
                "86dd",
                "60000000",
                "003c",
                "1140",
                "20010db8000100000000000000000002",
                "20010db8007700000000000000000001",
                "04d2",
                "162e",
                "003c",
                "191a",
            ),
            Case::End => concat!(
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
                "01000000",
                "fc000002000000000000000000000001",
                "fc00000100000000000000000000000e",
                "60000000",
                "003c",
                "1140",
                "20010db8000100000000000000000002",
                "20010db8009900000000000000000001",
                "04d2",
                "162e",
                "003c",
                "18f8",
            ),
            Case::EndDx6 => concat!(
                "020000000100",
                "020000000001",
                "86dd",
                "60000000",
                "007c",
                "2b40",
                "20010db8000100000000000000000002",
                "fc0000010000000000000000000000d6",
                "2902",
                "0400",
                "00000000",
                "fc0000010000000000000000000000d6",
                "60000000",
                "003c",
                "1140",
                "20010db8000100000000000000000002",
                "20010db8009900000000000000000001",
                "04d2",
                "162e",
                "003c",
                "18f8",
            ),
        };
        format!("{headers}{}", "ab".repeat(MIN_PAYLOAD))
    }

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

    #[test]
    fn one_flow_is_the_reference_frame() {
        for case in Case::ALL {
            let f = frames(case, MIN_FRAME_BYTES, 1);
            assert_eq!(f.len(), 1, "{case:?}");
            assert_eq!(hex(&f[0]), golden(case), "{case:?}");
        }
    }

    /// Where flow `i`'s frame may differ from flow 0's: the outer Flow Label (SRv6 cases),
    /// the UDP source port and the UDP checksum.
    fn may_differ(case: Case, len: usize, payload: usize) -> Vec<usize> {
        let udp_at = len - payload - UDP_LEN;
        let mut at = vec![udp_at, udp_at + 1, udp_at + 6, udp_at + 7];
        if matches!(case, Case::End | Case::EndDx6) {
            at.extend([ETH_LEN + 1, ETH_LEN + 2, ETH_LEN + 3]);
        }
        at
    }

    /// The inner IPv6/UDP packet of a generator frame, checked by srmig-wire on the way.
    fn inner_packet_of(case: Case, f: &[u8]) -> (u32, Vec<Ipv6Addr>, Vec<u8>) {
        let eth = Frame::new_checked(f).expect("Ethernet");
        assert_eq!(eth.ethertype(), EtherType::IPV6);
        let ip = ipv6::Packet::new_checked(eth.payload()).expect("IPv6");
        match case {
            Case::Ipv6 | Case::HEncaps | Case::HEncapsVm => {
                (0, vec![ip.dst_addr()], ip.packet_bytes().to_vec())
            }
            Case::End | Case::EndDx6 => {
                assert_eq!(ip.next_header(), IpProtocol::ROUTING);
                let srh = srh::Srh::new_checked(ip.payload()).expect("SRH");
                assert_eq!(srh.next_header(), IpProtocol::IPV6);
                let mut route = vec![ip.dst_addr()];
                route.extend(srh.segments());
                route.push(Ipv6Addr::from(u128::from(srh.segments_left())));
                let inner = ipv6::Packet::new_checked(srh.payload()).expect("inner IPv6");
                (ip.flow_label(), route, inner.packet_bytes().to_vec())
            }
        }
    }

    #[test]
    fn flows_are_distinct_valid_and_routed_alike() {
        const N: usize = 64;
        for case in Case::ALL {
            for requested in [MIN_FRAME_BYTES, 1500] {
                let all = frames(case, requested, N);
                assert_eq!(all.len(), N);
                let distinct: HashSet<&Vec<u8>> = all.iter().collect();
                assert_eq!(distinct.len(), N, "{case:?}: frames repeat");
                let len = frame_len(case, requested);
                let payload = len - overhead(case);
                let differ = may_differ(case, len, payload);
                let (_, route0, _) = inner_packet_of(case, &all[0]);
                for (i, f) in all.iter().enumerate() {
                    assert_eq!(f.len(), len, "{case:?} flow {i}");
                    for (at, (a, b)) in f.iter().zip(&all[0]).enumerate() {
                        assert!(
                            a == b || differ.contains(&at),
                            "{case:?} flow {i}: byte {at} differs from flow 0"
                        );
                    }
                    let (label, route, inner) = inner_packet_of(case, f);
                    assert_eq!(route, route0, "{case:?} flow {i}: same way through the DUT");
                    assert_eq!(
                        checksum::verify_l4_checksum(&inner),
                        Ok(true),
                        "{case:?} flow {i}"
                    );
                    let udp = &inner[IPV6_LEN..];
                    let sport = u16::from_be_bytes([udp[0], udp[1]]);
                    assert_eq!(usize::from(sport), 1234 + i, "{case:?} flow {i}");
                    let want_label = if matches!(case, Case::End | Case::EndDx6) {
                        i
                    } else {
                        0
                    };
                    assert_eq!(label as usize, want_label, "{case:?} flow {i}");
                }
            }
        }
    }

    #[test]
    fn flows_are_capped() {
        assert_eq!(frames(Case::Ipv6, MIN_FRAME_BYTES, 0).len(), 1);
        let all = frames(Case::End, MIN_FRAME_BYTES, MAX_FLOWS + 5);
        assert_eq!(all.len(), MAX_FLOWS);
        assert!(all
            .iter()
            .all(|f| inner_packet_of(Case::End, f).0 < 1 << 20));
    }
}
