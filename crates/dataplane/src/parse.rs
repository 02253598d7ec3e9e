//! Private header constants and the fast-path extension-header walker.
//!
//! These duplicate a few constants of `srmig-wire` on purpose: the engine reads fixed offsets
//! straight from the frame (no view construction per header) and must not depend on the
//! ordering of a sibling crate's development. Layouts are from RFC 8200 section 3/4 and
//! RFC 8754 section 2.

use crate::drop::DropReason;

pub(crate) const ETH_HEADER_LEN: usize = 14;
pub(crate) const ETHERTYPE_IPV6: u16 = 0x86dd;
pub(crate) const ETHERTYPE_IPV4: u16 = 0x0800;
pub(crate) const IPV6_HEADER_LEN: usize = 40;
pub(crate) const IPV4_MIN_HEADER_LEN: usize = 20;

pub(crate) const NH_HOPOPTS: u8 = 0;
pub(crate) const NH_IPV4: u8 = 4;
pub(crate) const NH_IPV6: u8 = 41;
pub(crate) const NH_ROUTING: u8 = 43;
pub(crate) const NH_FRAGMENT: u8 = 44;
pub(crate) const NH_AH: u8 = 51;
pub(crate) const NH_ICMPV6: u8 = 58;
pub(crate) const NH_DSTOPTS: u8 = 60;

/// Routing Type of the SRH (RFC 8754 section 2).
pub(crate) const ROUTING_TYPE_SRH: u8 = 4;

/// Offsets inside the SRH (RFC 8754 section 2):
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// | Next Header   |  Hdr Ext Len  | Routing Type  | Segments Left |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |  Last Entry   |     Flags     |              Tag              |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |            Segment List[0] (128-bit IPv6 address)             |
/// ```
pub(crate) const SRH_NEXT_HEADER: usize = 0;
pub(crate) const SRH_HDR_EXT_LEN: usize = 1;
pub(crate) const SRH_ROUTING_TYPE: usize = 2;
pub(crate) const SRH_SEGMENTS_LEFT: usize = 3;
pub(crate) const SRH_LAST_ENTRY: usize = 4;
pub(crate) const SRH_SEGMENTS: usize = 8;

/// TLV types of the SRH with a one-byte encoding (RFC 8754 section 2.1.1.1).
const TLV_PAD1: u8 = 0;

/// Extension headers walked before giving up (`TooManyExtensionHeaders`).
pub(crate) const MAX_EXT_HEADERS: usize = 8;

/// The result of walking an IPv6 packet's extension headers. Offsets are relative to the start
/// of the IPv6 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Chain {
    /// Offset of the (first) routing header.
    pub(crate) routing: Option<usize>,
    /// Offset of the Next Header byte that announced the routing header.
    pub(crate) routing_nh_at: usize,
    /// Offset of the upper-layer header (may equal the packet length).
    pub(crate) upper: usize,
    /// The upper-layer protocol number.
    pub(crate) upper_proto: u8,
    /// Offset of the Next Header byte announcing the upper layer.
    pub(crate) upper_nh_at: usize,
    /// Whether a Hop-by-Hop Options header is present.
    pub(crate) has_hbh: bool,
}

/// Walks the extension headers of `pkt` (an IPv6 packet trimmed to its Payload Length).
/// The caller guarantees `pkt.len() >= 40`.
#[inline]
pub(crate) fn walk(pkt: &[u8]) -> Result<Chain, DropReason> {
    let mut nh = pkt[6];
    let mut nh_at = 6usize;
    let mut off = IPV6_HEADER_LEN;
    let mut chain = Chain {
        routing: None,
        routing_nh_at: 0,
        upper: 0,
        upper_proto: 0,
        upper_nh_at: 0,
        has_hbh: false,
    };
    let mut count = 0usize;
    loop {
        let len = match nh {
            NH_HOPOPTS | NH_ROUTING | NH_DSTOPTS | NH_AH | NH_FRAGMENT => {
                if count == MAX_EXT_HEADERS {
                    return Err(DropReason::TooManyExtensionHeaders);
                }
                count += 1;
                if pkt.len() < off + 8 {
                    return Err(DropReason::Truncated);
                }
                match nh {
                    NH_FRAGMENT => 8,
                    NH_AH => (usize::from(pkt[off + 1]) + 2) * 4,
                    _ => (usize::from(pkt[off + 1]) + 1) * 8,
                }
            }
            _ => {
                chain.upper = off;
                chain.upper_proto = nh;
                chain.upper_nh_at = nh_at;
                return Ok(chain);
            }
        };
        if pkt.len() < off + len {
            return Err(DropReason::HdrExtLenBeyondPacket);
        }
        match nh {
            NH_HOPOPTS => {
                // RFC 8200 section 4.1: Hop-by-Hop only immediately after the IPv6 header.
                if off != IPV6_HEADER_LEN {
                    return Err(DropReason::DuplicateExtensionHeader);
                }
                chain.has_hbh = true;
            }
            NH_ROUTING => {
                if chain.routing.is_some() {
                    return Err(DropReason::DuplicateExtensionHeader);
                }
                chain.routing = Some(off);
                chain.routing_nh_at = nh_at;
            }
            _ => {}
        }
        nh = pkt[off];
        nh_at = off;
        off += len;
    }
}

/// Checks the TLV area `tlvs` of an SRH (RFC 8754 section 2.1): every TLV must fit.
#[inline]
pub(crate) fn check_tlvs(tlvs: &[u8]) -> Result<(), DropReason> {
    let mut i = 0usize;
    while i < tlvs.len() {
        if tlvs[i] == TLV_PAD1 {
            i += 1;
            continue;
        }
        let Some(&len) = tlvs.get(i + 1) else {
            return Err(DropReason::TlvOverrun);
        };
        i += 2 + usize::from(len);
        if i > tlvs.len() {
            return Err(DropReason::TlvOverrun);
        }
    }
    Ok(())
}

#[inline]
pub(crate) fn read_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
pub(crate) fn write_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline]
pub(crate) fn read_addr(b: &[u8], at: usize) -> u128 {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    u128::from_be_bytes(a)
}

#[inline]
pub(crate) fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// One's-complement sum of `data` added to `sum` (RFC 1071), not folded.
pub(crate) fn checksum_add(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum = sum.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
    }
    if let [last] = chunks.remainder() {
        sum = sum.wrapping_add(u32::from(*last) << 8);
    }
    sum
}

/// Folds a one's-complement sum and complements it.
pub(crate) fn checksum_finish(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The ICMPv6 checksum of `msg` (checksum field included as stored) between `src` and `dst`
/// (RFC 4443 section 2.3 / RFC 8200 section 8.1 pseudo-header).
pub(crate) fn icmpv6_checksum(src: &[u8], dst: &[u8], msg: &[u8]) -> u16 {
    let mut sum = checksum_add(0, src);
    sum = checksum_add(sum, dst);
    let len = msg.len() as u32;
    sum = sum.wrapping_add(len >> 16).wrapping_add(len & 0xffff);
    sum = sum.wrapping_add(u32::from(NH_ICMPV6));
    sum = checksum_add(sum, msg);
    checksum_finish(sum)
}

/// IPv4 header checksum over `hdr` (checksum field must be zeroed by the caller, or verify by
/// checking that the result over the stored header is 0).
pub(crate) fn ipv4_checksum(hdr: &[u8]) -> u16 {
    checksum_finish(checksum_add(0, hdr))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv6(nh: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0x60, 0, 0, 0];
        v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        v.extend_from_slice(&[nh, 64]);
        v.extend_from_slice(&[0; 32]);
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn walks_hbh_dst_srh_to_upper() {
        let mut p = vec![NH_DSTOPTS, 0, 0, 0, 0, 0, 0, 0]; // HBH
        p.extend_from_slice(&[NH_ROUTING, 0, 0, 0, 0, 0, 0, 0]); // DstOpts
        p.extend_from_slice(&[NH_IPV6, 2, 4, 0, 0, 0, 0, 0]); // SRH with one segment
        p.extend_from_slice(&[0; 16]);
        p.extend_from_slice(&[0; 4]);
        let pkt = ipv6(NH_HOPOPTS, &p);
        let c = walk(&pkt).unwrap();
        assert!(c.has_hbh);
        assert_eq!(c.routing, Some(56));
        assert_eq!(c.routing_nh_at, 48);
        assert_eq!(c.upper, 56 + 24);
        assert_eq!(c.upper_proto, NH_IPV6);
        assert_eq!(c.upper_nh_at, 56);
    }

    #[test]
    fn rejects_bad_chains() {
        // truncated extension header
        assert_eq!(
            walk(&ipv6(NH_ROUTING, &[0, 0, 4])),
            Err(DropReason::Truncated)
        );
        // Hdr Ext Len beyond the packet
        assert_eq!(
            walk(&ipv6(NH_ROUTING, &[59, 4, 4, 0, 0, 0, 0, 0])),
            Err(DropReason::HdrExtLenBeyondPacket)
        );
        // endless destination options
        let many: Vec<u8> = (0..10)
            .flat_map(|_| [NH_DSTOPTS, 0, 0, 0, 0, 0, 0, 0])
            .collect();
        assert_eq!(
            walk(&ipv6(NH_DSTOPTS, &many)),
            Err(DropReason::TooManyExtensionHeaders)
        );
        // two routing headers
        let two = [[NH_ROUTING, 0, 0, 0, 0, 0, 0, 0], [59, 0, 0, 0, 0, 0, 0, 0]].concat();
        assert_eq!(
            walk(&ipv6(NH_ROUTING, &two)),
            Err(DropReason::DuplicateExtensionHeader)
        );
        // HBH not first
        let late = [[NH_HOPOPTS, 0, 0, 0, 0, 0, 0, 0], [59, 0, 0, 0, 0, 0, 0, 0]].concat();
        assert_eq!(
            walk(&ipv6(NH_DSTOPTS, &late)),
            Err(DropReason::DuplicateExtensionHeader)
        );
        // no extension header at all
        let c = walk(&ipv6(17, &[0; 8])).unwrap();
        assert_eq!((c.upper, c.upper_proto, c.routing), (40, 17, None));
    }

    #[test]
    fn tlvs() {
        assert_eq!(check_tlvs(&[]), Ok(()));
        assert_eq!(check_tlvs(&[0, 0, 4, 2, 0xaa, 0xbb]), Ok(()));
        assert_eq!(check_tlvs(&[4, 5, 0, 0]), Err(DropReason::TlvOverrun));
        assert_eq!(check_tlvs(&[0, 4]), Err(DropReason::TlvOverrun));
    }

    #[test]
    fn checksums() {
        // RFC 1071 example bytes
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum_finish(checksum_add(0, &d)), !0xddf2);
        let mut hdr = [
            0x45, 0, 0, 0x54, 0, 0, 0x40, 0, 0x40, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        let c = ipv4_checksum(&hdr);
        hdr[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(ipv4_checksum(&hdr), 0);
    }
}
