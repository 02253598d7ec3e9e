//! IPv6 fixed header (RFC 8200 section 3).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Traffic Class |           Flow Label                  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         Payload Length        |  Next Header  |   Hop Limit   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                                                               |
//! +                         Source Address                        +
//! |                          (16 octets)                          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                                                               |
//! +                      Destination Address                      +
//! |                          (16 octets)                          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use core::net::Ipv6Addr;

use crate::ip::IpProtocol;
use crate::{Error, Result};

/// Field offsets (pub so the dataplane can compute ICMPv6 Parameter Problem pointers).
pub mod field {
    use core::ops::Range;
    /// Version, Traffic Class, Flow Label.
    pub const VER_TC_FLOW: Range<usize> = 0..4;
    /// Payload Length.
    pub const PAYLOAD_LEN: Range<usize> = 4..6;
    /// Next Header.
    pub const NEXT_HEADER: usize = 6;
    /// Hop Limit.
    pub const HOP_LIMIT: usize = 7;
    /// Source Address.
    pub const SRC_ADDR: Range<usize> = 8..24;
    /// Destination Address.
    pub const DST_ADDR: Range<usize> = 24..40;
}

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;

/// Minimum link MTU every IPv6 link must support (RFC 8200 5).
pub const MIN_MTU: usize = 1280;

/// A read/write view of an IPv6 packet.
///
/// After [`Packet::new_checked`] succeeds every getter is safe. On a [`Packet::new_unchecked`]
/// view shorter than [`HEADER_LEN`] the header getters panic; [`Packet::payload`] never panics
/// once the header is present (it is clamped to the buffer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

#[inline]
fn addr_at(b: &[u8], at: usize) -> Ipv6Addr {
    let mut o = [0u8; 16];
    o.copy_from_slice(&b[at..at + 16]);
    Ipv6Addr::from(o)
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap a buffer without checking it.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wrap a buffer and validate it with [`Packet::check_len`].
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Validate: the buffer holds the fixed header, the version is 6 and Payload Length fits
    /// in the buffer (the buffer may be longer, e.g. Ethernet padding).
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 6 {
            return Err(Error::BadVersion);
        }
        if HEADER_LEN + usize::from(self.payload_len()) > len {
            return Err(Error::PayloadLengthBeyondPacket);
        }
        Ok(())
    }

    /// Give back the buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Fixed header length (always [`HEADER_LEN`]).
    #[inline]
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Header plus Payload Length: the bytes of the packet proper (excluding link padding).
    #[inline]
    pub fn total_len(&self) -> usize {
        HEADER_LEN + usize::from(self.payload_len())
    }

    /// Version (6 for a valid packet).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    /// Traffic Class.
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        let b = self.buffer.as_ref();
        (b[0] << 4) | (b[1] >> 4)
    }

    /// Flow Label (20 bits).
    #[inline]
    pub fn flow_label(&self) -> u32 {
        let b = self.buffer.as_ref();
        (u32::from(b[1] & 0x0f) << 16) | (u32::from(b[2]) << 8) | u32::from(b[3])
    }

    /// Payload Length.
    #[inline]
    pub fn payload_len(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[4], b[5]])
    }

    /// Next Header.
    #[inline]
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[field::NEXT_HEADER])
    }

    /// Hop Limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source Address.
    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        addr_at(self.buffer.as_ref(), field::SRC_ADDR.start)
    }

    /// Destination Address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        addr_at(self.buffer.as_ref(), field::DST_ADDR.start)
    }

    /// The payload: `Payload Length` bytes after the header, clamped to the buffer.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let end = self.total_len().min(b.len());
        b.get(HEADER_LEN..end).unwrap_or(&[])
    }

    /// The packet proper: header plus payload, without trailing link padding (clamped).
    #[inline]
    pub fn packet_bytes(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[..self.total_len().min(b.len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set Version.
    #[inline]
    pub fn set_version(&mut self, v: u8) {
        let b = self.buffer.as_mut();
        b[0] = (b[0] & 0x0f) | (v << 4);
    }

    /// Set Traffic Class.
    #[inline]
    pub fn set_traffic_class(&mut self, tc: u8) {
        let b = self.buffer.as_mut();
        b[0] = (b[0] & 0xf0) | (tc >> 4);
        b[1] = (b[1] & 0x0f) | (tc << 4);
    }

    /// Set Flow Label (low 20 bits of `fl`).
    #[inline]
    pub fn set_flow_label(&mut self, fl: u32) {
        let b = self.buffer.as_mut();
        b[1] = (b[1] & 0xf0) | ((fl >> 16) as u8 & 0x0f);
        b[2] = (fl >> 8) as u8;
        b[3] = fl as u8;
    }

    /// Set Payload Length.
    #[inline]
    pub fn set_payload_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::PAYLOAD_LEN].copy_from_slice(&len.to_be_bytes());
    }

    /// Set Next Header.
    #[inline]
    pub fn set_next_header(&mut self, nh: IpProtocol) {
        self.buffer.as_mut()[field::NEXT_HEADER] = nh.0;
    }

    /// Set Hop Limit.
    #[inline]
    pub fn set_hop_limit(&mut self, hl: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = hl;
    }

    /// Set Source Address.
    #[inline]
    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&a.octets());
    }

    /// Set Destination Address.
    #[inline]
    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&a.octets());
    }

    /// Mutable payload (`Payload Length` bytes, clamped to the buffer).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.total_len();
        let b = self.buffer.as_mut();
        let end = end.min(b.len());
        b.get_mut(HEADER_LEN..end).unwrap_or(&mut [])
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// Parsed IPv6 fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source Address.
    pub src_addr: Ipv6Addr,
    /// Destination Address.
    pub dst_addr: Ipv6Addr,
    /// Next Header.
    pub next_header: IpProtocol,
    /// Payload Length.
    pub payload_len: usize,
    /// Hop Limit.
    pub hop_limit: u8,
    /// Traffic Class.
    pub traffic_class: u8,
    /// Flow Label (20 bits).
    pub flow_label: u32,
}

impl Repr {
    /// Parse a view (validated again, so an unchecked view is fine).
    pub fn parse<T: AsRef<[u8]> + ?Sized>(p: &Packet<&T>) -> Result<Repr> {
        p.check_len()?;
        Ok(Repr {
            src_addr: p.src_addr(),
            dst_addr: p.dst_addr(),
            next_header: p.next_header(),
            payload_len: usize::from(p.payload_len()),
            hop_limit: p.hop_limit(),
            traffic_class: p.traffic_class(),
            flow_label: p.flow_label(),
        })
    }

    /// Length of the header written by [`Repr::emit`].
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Write the header. `payload_len` is truncated to u16 (callers validate it against the
    /// 65535 limit before building a Repr).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_version(6);
        p.set_traffic_class(self.traffic_class);
        p.set_flow_label(self.flow_label);
        p.set_payload_len(self.payload_len as u16);
        p.set_next_header(self.next_header);
        p.set_hop_limit(self.hop_limit);
        p.set_src_addr(self.src_addr);
        p.set_dst_addr(self.dst_addr);
    }
}

/// Write a complete fixed header in one go (no-alloc fast path helper).
///
/// # Panics
/// If `buf` is shorter than [`HEADER_LEN`].
#[inline]
pub fn emit_header(
    buf: &mut [u8],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next_header: IpProtocol,
    payload_len: u16,
    hop_limit: u8,
) {
    buf[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
    buf[field::PAYLOAD_LEN].copy_from_slice(&payload_len.to_be_bytes());
    buf[field::NEXT_HEADER] = next_header.0;
    buf[field::HOP_LIMIT] = hop_limit;
    buf[field::SRC_ADDR].copy_from_slice(&src.octets());
    buf[field::DST_ADDR].copy_from_slice(&dst.octets());
}

/// Address-class helpers.
pub mod addr {
    use core::net::Ipv6Addr;

    /// All-nodes link-local multicast `ff02::1`.
    pub const LINK_LOCAL_ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    /// All-routers link-local multicast `ff02::2`.
    pub const LINK_LOCAL_ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);

    /// `fe80::/10`.
    #[inline]
    pub const fn is_unicast_link_local(a: &Ipv6Addr) -> bool {
        let o = a.octets();
        o[0] == 0xfe && (o[1] & 0xc0) == 0x80
    }

    /// `ff00::/8`.
    #[inline]
    pub const fn is_multicast(a: &Ipv6Addr) -> bool {
        a.octets()[0] == 0xff
    }

    /// Solicited-node multicast address `ff02::1:ffXX:XXXX` of `a` (RFC 4291 2.7.1).
    #[inline]
    pub const fn solicited_node(a: &Ipv6Addr) -> Ipv6Addr {
        let o = a.octets();
        Ipv6Addr::new(
            0xff02,
            0,
            0,
            0,
            0,
            1,
            0xff00 | o[13] as u16,
            ((o[14] as u16) << 8) | o[15] as u16,
        )
    }

    /// Whether `a` is a solicited-node multicast address (`ff02::1:ff00:0/104`).
    #[inline]
    pub const fn is_solicited_node(a: &Ipv6Addr) -> bool {
        let o = a.octets();
        o[0] == 0xff
            && o[1] == 0x02
            && o[2] == 0
            && o[3] == 0
            && o[4] == 0
            && o[5] == 0
            && o[6] == 0
            && o[7] == 0
            && o[8] == 0
            && o[9] == 0
            && o[10] == 0
            && o[11] == 1
            && o[12] == 0xff
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // 2001:db8::1 -> 2001:db8::2, UDP, tc 0xb8, flow 0x12345, hop limit 64, 4 bytes payload,
    // plus 2 bytes of link padding.
    static PKT: [u8; 46] = [
        0x6b, 0x81, 0x23, 0x45, 0x00, 0x04, 0x11, 0x40, //
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, //
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, //
        1, 2, 3, 4, 0, 0,
    ];

    fn repr() -> Repr {
        Repr {
            src_addr: "2001:db8::1".parse().expect("a"),
            dst_addr: "2001:db8::2".parse().expect("a"),
            next_header: IpProtocol::UDP,
            payload_len: 4,
            hop_limit: 64,
            traffic_class: 0xb8,
            flow_label: 0x12345,
        }
    }

    #[test]
    fn golden_parse() {
        let p = Packet::new_checked(&PKT[..]).expect("valid");
        assert_eq!(Repr::parse(&p), Ok(repr()));
        assert_eq!(p.payload(), &[1, 2, 3, 4]);
        assert_eq!(p.packet_bytes().len(), 44);
    }

    #[test]
    fn golden_emit() {
        let mut buf = [0u8; 46];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        repr().emit(&mut p);
        p.payload_mut().copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(buf, PKT);
        let mut buf2 = [0u8; 40];
        emit_header(
            &mut buf2,
            repr().src_addr,
            repr().dst_addr,
            IpProtocol::UDP,
            4,
            64,
        );
        let mut expect = PKT;
        expect[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
        assert_eq!(buf2[..], expect[..40]);
    }

    #[test]
    fn etherparse_agrees() {
        let (h, _) = etherparse::Ipv6Header::from_slice(&PKT).expect("etherparse");
        let r = repr();
        assert_eq!(h.source, r.src_addr.octets());
        assert_eq!(h.destination, r.dst_addr.octets());
        assert_eq!(h.traffic_class, r.traffic_class);
        assert_eq!(h.flow_label.value(), r.flow_label);
        assert_eq!(h.payload_length, 4);
        assert_eq!(h.hop_limit, 64);
        assert_eq!(h.next_header.0, 17);
    }

    #[test]
    fn errors() {
        assert_eq!(
            Packet::new_checked(&PKT[..39]).err(),
            Some(Error::Truncated)
        );
        let mut b = PKT;
        b[0] = 0x45;
        assert_eq!(Packet::new_checked(&b[..]).err(), Some(Error::BadVersion));
        assert_eq!(
            Packet::new_checked(&PKT[..43]).err(),
            Some(Error::PayloadLengthBeyondPacket)
        );
        assert!(Packet::new_checked(&PKT[..44]).is_ok());
    }

    #[test]
    fn setters() {
        let mut b = PKT;
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_hop_limit(3);
        p.set_dst_addr("::1".parse().expect("a"));
        p.set_traffic_class(0x12);
        p.set_flow_label(0xfffff);
        assert_eq!(p.hop_limit(), 3);
        assert_eq!(p.dst_addr(), Ipv6Addr::LOCALHOST);
        assert_eq!(
            (p.version(), p.traffic_class(), p.flow_label()),
            (6, 0x12, 0xfffff)
        );
    }

    #[test]
    fn address_classes() {
        let a: Ipv6Addr = "fe80::1:2345:6789".parse().expect("a");
        assert!(addr::is_unicast_link_local(&a));
        let sn = addr::solicited_node(&a);
        assert_eq!(sn, "ff02::1:ff45:6789".parse::<Ipv6Addr>().expect("a"));
        assert!(addr::is_solicited_node(&sn) && addr::is_multicast(&sn));
        assert!(!addr::is_solicited_node(&addr::LINK_LOCAL_ALL_NODES));
    }

    fn arb_repr() -> impl Strategy<Value = Repr> {
        (
            any::<u128>(),
            any::<u128>(),
            any::<u8>(),
            0usize..2000,
            any::<u8>(),
            any::<u8>(),
            0u32..(1 << 20),
        )
            .prop_map(|(s, d, nh, pl, hl, tc, fl)| Repr {
                src_addr: Ipv6Addr::from(s),
                dst_addr: Ipv6Addr::from(d),
                next_header: IpProtocol(nh),
                payload_len: pl,
                hop_limit: hl,
                traffic_class: tc,
                flow_label: fl,
            })
    }

    proptest! {
        #[test]
        fn roundtrip(r in arb_repr()) {
            let mut buf = vec![0u8; r.buffer_len() + r.payload_len];
            r.emit(&mut Packet::new_unchecked(&mut buf[..]));
            prop_assert_eq!(Repr::parse(&Packet::new_checked(&buf[..]).expect("valid")), Ok(r));
        }

        #[test]
        fn no_panic(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            if let Ok(p) = Packet::new_checked(&bytes[..]) {
                let _ = (p.version(), p.traffic_class(), p.flow_label(), p.payload_len());
                let _ = (p.next_header(), p.hop_limit(), p.src_addr(), p.dst_addr());
                prop_assert_eq!(p.payload().len(), usize::from(p.payload_len()));
                let _ = p.packet_bytes();
            }
            let p = Packet::new_unchecked(&bytes[..]);
            let _ = Repr::parse(&p);
            if bytes.len() >= HEADER_LEN {
                let _ = (p.payload(), p.packet_bytes());
            }
        }
    }
}
