//! Ethernet II frames (IEEE 802.3, no VLAN tags).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                     Destination Address                       |
//! +                               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                               |                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               +
//! |                        Source Address                         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           EtherType           |  Payload ...
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use core::fmt;
use core::net::Ipv6Addr;

use crate::{Error, Result};

/// A 48-bit IEEE MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Address(pub [u8; 6]);

impl Address {
    /// ff:ff:ff:ff:ff:ff
    pub const BROADCAST: Address = Address([0xff; 6]);
    /// 00:00:00:00:00:00
    pub const UNSPECIFIED: Address = Address([0; 6]);

    /// Build from a slice of exactly 6 bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Address> {
        let a: [u8; 6] = b.try_into().map_err(|_| Error::Truncated)?;
        Ok(Address(a))
    }

    /// The six bytes.
    #[inline]
    pub const fn as_bytes(&self) -> &[u8; 6] {
        &self.0
    }

    /// Group bit (I/G) set: multicast or broadcast.
    #[inline]
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// ff:ff:ff:ff:ff:ff.
    #[inline]
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// Unicast (group bit clear).
    #[inline]
    pub const fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// Locally administered bit (U/L) set.
    #[inline]
    pub const fn is_local(&self) -> bool {
        self.0[0] & 0x02 != 0
    }

    /// The Ethernet multicast address of an IPv6 multicast group (RFC 2464 7):
    /// `33:33` followed by the low 32 bits of the group address.
    #[inline]
    pub const fn from_ipv6_multicast(addr: &Ipv6Addr) -> Address {
        let o = addr.octets();
        Address([0x33, 0x33, o[12], o[13], o[14], o[15]])
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl From<[u8; 6]> for Address {
    fn from(b: [u8; 6]) -> Self {
        Address(b)
    }
}

/// An EtherType value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EtherType(pub u16);

impl EtherType {
    /// IPv4 (0x0800).
    pub const IPV4: EtherType = EtherType(0x0800);
    /// ARP (0x0806).
    pub const ARP: EtherType = EtherType(0x0806);
    /// IPv6 (0x86dd).
    pub const IPV6: EtherType = EtherType(0x86dd);
}

impl fmt::Display for EtherType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EtherType::IPV4 => f.write_str("IPv4"),
            EtherType::ARP => f.write_str("ARP"),
            EtherType::IPV6 => f.write_str("IPv6"),
            EtherType(v) => write!(f, "0x{v:04x}"),
        }
    }
}

/// Field offsets.
pub mod field {
    use core::ops::{Range, RangeFrom};
    /// Destination address.
    pub const DESTINATION: Range<usize> = 0..6;
    /// Source address.
    pub const SOURCE: Range<usize> = 6..12;
    /// EtherType.
    pub const ETHERTYPE: Range<usize> = 12..14;
    /// Payload.
    pub const PAYLOAD: RangeFrom<usize> = 14..;
}

/// Length of the Ethernet II header.
pub const HEADER_LEN: usize = 14;

/// A read/write view of an Ethernet II frame.
///
/// All getters are safe (never panic) once [`Frame::new_checked`] (or [`Frame::check_len`])
/// succeeded; on a [`Frame::new_unchecked`] view shorter than [`HEADER_LEN`] they panic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wrap a buffer without checking its length.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Frame<T> {
        Frame { buffer }
    }

    /// Wrap a buffer and check that it holds the whole header.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Frame<T>> {
        let f = Self::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }

    /// Check that the buffer holds the whole header.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Give back the buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Header length (always [`HEADER_LEN`]).
    #[inline]
    pub const fn header_len() -> usize {
        HEADER_LEN
    }

    /// Destination MAC address.
    #[inline]
    pub fn dst_addr(&self) -> Address {
        let b = self.buffer.as_ref();
        Address([b[0], b[1], b[2], b[3], b[4], b[5]])
    }

    /// Source MAC address.
    #[inline]
    pub fn src_addr(&self) -> Address {
        let b = self.buffer.as_ref();
        Address([b[6], b[7], b[8], b[9], b[10], b[11]])
    }

    /// EtherType.
    #[inline]
    pub fn ethertype(&self) -> EtherType {
        let b = self.buffer.as_ref();
        EtherType(u16::from_be_bytes([b[12], b[13]]))
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Frame<&'a T> {
    /// The payload (everything after the header), borrowing the underlying buffer.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Set the destination MAC address.
    #[inline]
    pub fn set_dst_addr(&mut self, a: Address) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&a.0);
    }

    /// Set the source MAC address.
    #[inline]
    pub fn set_src_addr(&mut self, a: Address) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&a.0);
    }

    /// Set the EtherType.
    #[inline]
    pub fn set_ethertype(&mut self, t: EtherType) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&t.0.to_be_bytes());
    }

    /// Mutable payload.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Frame<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// Parsed Ethernet II header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source address.
    pub src_addr: Address,
    /// Destination address.
    pub dst_addr: Address,
    /// EtherType.
    pub ethertype: EtherType,
}

impl Repr {
    /// Parse a checked frame.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(frame: &Frame<&T>) -> Result<Repr> {
        frame.check_len()?;
        Ok(Repr {
            src_addr: frame.src_addr(),
            dst_addr: frame.dst_addr(),
            ethertype: frame.ethertype(),
        })
    }

    /// Bytes needed by [`Repr::emit`].
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Write the header into `frame` (which must be at least [`HEADER_LEN`] long).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut Frame<T>) {
        frame.set_dst_addr(self.dst_addr);
        frame.set_src_addr(self.src_addr);
        frame.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    static FRAME: [u8; 18] = [
        0x33, 0x33, 0xff, 0x00, 0x00, 0x02, // dst
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // src
        0x86, 0xdd, // ethertype
        0xde, 0xad, 0xbe, 0xef,
    ];

    fn repr() -> Repr {
        Repr {
            dst_addr: Address([0x33, 0x33, 0xff, 0, 0, 2]),
            src_addr: Address([0x02, 0, 0, 0, 0, 1]),
            ethertype: EtherType::IPV6,
        }
    }

    #[test]
    fn golden_parse() {
        let f = Frame::new_checked(&FRAME[..]).expect("valid");
        assert_eq!(Repr::parse(&f), Ok(repr()));
        assert_eq!(f.payload(), &[0xde, 0xad, 0xbe, 0xef]);
        assert!(f.dst_addr().is_multicast());
        assert!(f.src_addr().is_unicast() && f.src_addr().is_local());
        assert_eq!(f.src_addr().to_string(), "02:00:00:00:00:01");
        assert_eq!(f.ethertype().to_string(), "IPv6");
        assert_eq!(EtherType(0x88cc).to_string(), "0x88cc");
    }

    #[test]
    fn golden_emit() {
        let mut buf = [0u8; 18];
        let mut f = Frame::new_unchecked(&mut buf[..]);
        repr().emit(&mut f);
        f.payload_mut().copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(buf, FRAME);
    }

    #[test]
    fn etherparse_agrees() {
        let (h, rest) = etherparse::Ethernet2Header::from_slice(&FRAME).expect("etherparse");
        assert_eq!(h.destination, repr().dst_addr.0);
        assert_eq!(h.source, repr().src_addr.0);
        assert_eq!(h.ether_type.0, EtherType::IPV6.0);
        assert_eq!(rest.len(), 4);
    }

    #[test]
    fn truncated() {
        assert_eq!(
            Frame::new_checked(&FRAME[..13]).err(),
            Some(Error::Truncated)
        );
        assert!(Frame::new_checked(&FRAME[..14]).is_ok());
    }

    #[test]
    fn ipv6_multicast_mac() {
        let g: Ipv6Addr = "ff02::1:ff00:2".parse().expect("addr");
        assert_eq!(
            Address::from_ipv6_multicast(&g),
            Address([0x33, 0x33, 0xff, 0, 0, 2])
        );
        assert!(Address::BROADCAST.is_broadcast() && Address::BROADCAST.is_multicast());
        assert_eq!(Address::from_bytes(&[1, 2, 3]), Err(Error::Truncated));
    }

    proptest! {
        #[test]
        fn roundtrip(d in any::<[u8; 6]>(), s in any::<[u8; 6]>(), t in any::<u16>()) {
            let r = Repr { dst_addr: Address(d), src_addr: Address(s), ethertype: EtherType(t) };
            let mut buf = vec![0u8; r.buffer_len()];
            r.emit(&mut Frame::new_unchecked(&mut buf[..]));
            prop_assert_eq!(Repr::parse(&Frame::new_checked(&buf[..]).expect("len")), Ok(r));
        }

        #[test]
        fn no_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(f) = Frame::new_checked(&bytes[..]) {
                let _ = (f.dst_addr(), f.src_addr(), f.ethertype(), f.payload());
                let _ = Repr::parse(&f);
            }
            let f = Frame::new_unchecked(&bytes[..]);
            let _ = Repr::parse(&f);
        }
    }
}
