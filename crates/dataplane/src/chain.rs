//! The extension header chain of a packet, as the engine needs it, from
//! [`srmig_wire::ext::walk`].
//!
//! The engine wants offsets from the start of the IPv6 header (it patches bytes in place), the
//! offset of the Next Header byte that announced the routing header (to pop an SRH, PSP), and a
//! few rules the generic walker leaves to its caller: a second Routing header and a Hop-by-Hop
//! header that is not first are both `DuplicateExtensionHeader` (RFC 8200 section 4.1), and each
//! wire error maps to one named drop reason.

use srmig_wire::ext::{self, FIELD_HDR_EXT_LEN, FIELD_NEXT_HEADER, MIN_LEN};
use srmig_wire::srh::{FIELD_ROUTING_TYPE, FIELD_SEGMENTS_LEFT};
use srmig_wire::{ipv6, Error, IpProtocol};

use crate::drop::DropReason;

/// Extension headers walked before giving up (`TooManyExtensionHeaders`).
pub(crate) const MAX_EXT_HEADERS: usize = ext::MAX_CHAIN;

/// Offset of the IPv6 Next Header field.
const IPV6_NEXT_HEADER: usize = 6;

/// The result of walking an IPv6 packet's extension headers. Offsets are relative to the start
/// of the IPv6 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Chain {
    /// Offset of the (only) routing header.
    pub(crate) routing: Option<usize>,
    /// Offset of the Next Header byte that announced the routing header.
    pub(crate) routing_nh_at: usize,
    /// Routing Type of the routing header (0 without one).
    pub(crate) routing_type: u8,
    /// Segments Left of the routing header (0 without one).
    pub(crate) segments_left: u8,
    /// Offset of the upper-layer header (may equal the packet length).
    pub(crate) upper: usize,
    /// The upper-layer protocol.
    pub(crate) upper_proto: IpProtocol,
    /// Whether a Hop-by-Hop Options header is present.
    pub(crate) has_hbh: bool,
    /// Whether the chain ends at a non-first Fragment header: `upper` then points at
    /// fragment data, not at a header (RFC 8200 4.5).
    pub(crate) fragment_data: bool,
}

/// The drop reason of a chain that [`ext::walk`] refused.
#[cold]
fn reason(e: Error) -> DropReason {
    match e {
        Error::HdrExtLenBeyondPacket => DropReason::HdrExtLenBeyondPacket,
        Error::TooManyExtensionHeaders => DropReason::TooManyExtensionHeaders,
        Error::HopByHopNotFirst => DropReason::DuplicateExtensionHeader,
        _ => DropReason::Truncated,
    }
}

/// Walks the extension headers of `pkt` (an IPv6 packet trimmed to its Payload Length; the
/// caller guarantees `pkt.len() >= 40`).
///
/// The two common shapes are answered without the generic walk: no extension header at all,
/// and a single Routing header right after the IPv6 header followed by the upper layer (every
/// SRv6 packet of the benches, encapsulated or inserted). Both give exactly what
/// [`ext::walk`] would; everything else goes through it.
#[inline]
pub(crate) fn walk(pkt: &[u8]) -> Result<Chain, DropReason> {
    let first = IpProtocol(pkt.get(IPV6_NEXT_HEADER).copied().unwrap_or(0));
    if !first.is_ipv6_ext() {
        return Ok(Chain {
            routing: None,
            routing_nh_at: 0,
            routing_type: 0,
            segments_left: 0,
            upper: ipv6::HEADER_LEN,
            upper_proto: first,
            has_hbh: false,
            fragment_data: false,
        });
    }
    if first == IpProtocol::ROUTING {
        if let Some(rh) = pkt.get(ipv6::HEADER_LEN..ipv6::HEADER_LEN + MIN_LEN) {
            let len = (usize::from(rh[FIELD_HDR_EXT_LEN]) + 1) * 8;
            let next = IpProtocol(rh[FIELD_NEXT_HEADER]);
            if !next.is_ipv6_ext() && ipv6::HEADER_LEN + len <= pkt.len() {
                return Ok(Chain {
                    routing: Some(ipv6::HEADER_LEN),
                    routing_nh_at: IPV6_NEXT_HEADER,
                    routing_type: rh[FIELD_ROUTING_TYPE],
                    segments_left: rh[FIELD_SEGMENTS_LEFT],
                    upper: ipv6::HEADER_LEN + len,
                    upper_proto: next,
                    has_hbh: false,
                    fragment_data: false,
                });
            }
        }
    }
    walk_slow(first, pkt)
}

/// The general case, through [`ext::walk`].
#[inline(never)]
fn walk_slow(first: IpProtocol, pkt: &[u8]) -> Result<Chain, DropReason> {
    let payload = pkt.get(ipv6::HEADER_LEN..).unwrap_or(&[]);
    let c = ext::walk(first, payload, MAX_EXT_HEADERS).map_err(reason)?;
    let headers = c.headers();
    let mut routing = None;
    let mut routing_nh_at = 0;
    for (i, h) in headers.iter().enumerate() {
        if h.protocol != IpProtocol::ROUTING {
            continue;
        }
        if routing.is_some() {
            return Err(DropReason::DuplicateExtensionHeader);
        }
        routing = Some(ipv6::HEADER_LEN + h.offset());
        routing_nh_at = match i.checked_sub(1).and_then(|p| headers.get(p)) {
            Some(prev) => ipv6::HEADER_LEN + prev.offset() + FIELD_NEXT_HEADER,
            None => IPV6_NEXT_HEADER,
        };
    }
    // The walker checked that every header it returned holds at least its 8 fixed bytes.
    let field = |f: usize| routing.and_then(|o| pkt.get(o + f)).copied().unwrap_or(0);
    Ok(Chain {
        routing,
        routing_nh_at,
        routing_type: field(FIELD_ROUTING_TYPE),
        segments_left: field(FIELD_SEGMENTS_LEFT),
        upper: ipv6::HEADER_LEN + c.ext_len(),
        upper_proto: c.upper.0,
        has_hbh: headers
            .first()
            .is_some_and(|h| h.protocol == IpProtocol::HOP_BY_HOP),
        // The walker stops right after a non-first Fragment header (8 bytes, checked).
        fragment_data: headers.last().is_some_and(|h| {
            h.protocol == IpProtocol::FRAGMENT
                && pkt
                    .get(ipv6::HEADER_LEN + h.offset() + 2..ipv6::HEADER_LEN + h.offset() + 4)
                    .is_some_and(|o| u16::from_be_bytes([o[0], o[1]]) >> 3 != 0)
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HBH: u8 = 0;
    const RH: u8 = 43;
    const DST: u8 = 60;
    const IPV6: u8 = 41;

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
        let mut p = vec![DST, 0, 0, 0, 0, 0, 0, 0]; // HBH
        p.extend_from_slice(&[RH, 0, 0, 0, 0, 0, 0, 0]); // DstOpts
        p.extend_from_slice(&[IPV6, 2, 4, 0, 0, 0, 0, 0]); // SRH with one segment
        p.extend_from_slice(&[0; 16]);
        p.extend_from_slice(&[0; 4]);
        let pkt = ipv6(HBH, &p);
        let c = walk(&pkt).unwrap();
        assert!(c.has_hbh);
        assert_eq!(c.routing, Some(56));
        assert_eq!(c.routing_nh_at, 48);
        assert_eq!((c.routing_type, c.segments_left), (4, 0));
        assert_eq!(c.upper, 56 + 24);
        assert_eq!(c.upper_proto, IpProtocol::IPV6);
    }

    #[test]
    fn srh_right_after_the_ipv6_header() {
        let mut p = vec![IPV6, 2, 4, 0, 0, 0, 0, 0];
        p.extend_from_slice(&[0; 16]);
        p.extend_from_slice(&[0; 40]);
        let c = walk(&ipv6(RH, &p)).unwrap();
        assert_eq!(
            c,
            Chain {
                routing: Some(40),
                routing_nh_at: 6,
                routing_type: 4,
                segments_left: 0,
                upper: 64,
                upper_proto: IpProtocol::IPV6,
                has_hbh: false,
                fragment_data: false,
            }
        );
    }

    proptest::proptest! {
        /// The shortcuts answer exactly what the generic walk answers.
        #[test]
        fn fast_paths_agree_with_ext_walk(
            nh in proptest::sample::select(vec![RH, DST, HBH, 17, 41, 4, 59, 44]),
            next in proptest::sample::select(vec![RH, DST, HBH, 17, 41, 4, 59]),
            hel in 0u8..6,
            extra in 0usize..64,
        ) {
            let mut p = vec![next, hel, 4, 0, 0, 0, 0, 0];
            p.resize(extra, 0);
            let pkt = ipv6(nh, &p);
            proptest::prop_assert_eq!(walk(&pkt), walk_slow(IpProtocol(nh), &pkt));
        }
    }

    #[test]
    fn marks_non_first_fragments() {
        // SRH (SL 0) -> Fragment (offset 8 units) -> "IPv6" data.
        let mut p = vec![44, 2, 4, 0, 0, 0, 0, 0];
        p.extend_from_slice(&[0; 16]);
        p.extend_from_slice(&[IPV6, 0, 0, 8 << 3, 0, 0, 0, 1]);
        p.extend_from_slice(&[0x60; 40]);
        let c = walk(&ipv6(RH, &p)).unwrap();
        assert!(c.fragment_data);
        assert_eq!((c.upper, c.upper_proto), (40 + 32, IpProtocol::IPV6));
        // The first fragment (offset 0, M=1) is followed by headers.
        p[24 + 3] = 1;
        let c = walk(&ipv6(RH, &p)).unwrap();
        assert!(!c.fragment_data);
    }

    #[test]
    fn rejects_bad_chains() {
        // truncated extension header
        assert_eq!(walk(&ipv6(RH, &[0, 0, 4])), Err(DropReason::Truncated));
        // Hdr Ext Len beyond the packet
        assert_eq!(
            walk(&ipv6(RH, &[59, 4, 4, 0, 0, 0, 0, 0])),
            Err(DropReason::HdrExtLenBeyondPacket)
        );
        // endless destination options
        let many: Vec<u8> = (0..10).flat_map(|_| [DST, 0, 0, 0, 0, 0, 0, 0]).collect();
        assert_eq!(
            walk(&ipv6(DST, &many)),
            Err(DropReason::TooManyExtensionHeaders)
        );
        // two routing headers
        let two = [[RH, 0, 0, 0, 0, 0, 0, 0], [59, 0, 0, 0, 0, 0, 0, 0]].concat();
        assert_eq!(
            walk(&ipv6(RH, &two)),
            Err(DropReason::DuplicateExtensionHeader)
        );
        // HBH not first
        let late = [[HBH, 0, 0, 0, 0, 0, 0, 0], [59, 0, 0, 0, 0, 0, 0, 0]].concat();
        assert_eq!(
            walk(&ipv6(DST, &late)),
            Err(DropReason::DuplicateExtensionHeader)
        );
        // no extension header at all
        let c = walk(&ipv6(17, &[0; 8])).unwrap();
        assert_eq!(
            (c.upper, c.upper_proto, c.routing),
            (40, IpProtocol::UDP, None)
        );
    }
}
