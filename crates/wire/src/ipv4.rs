//! IPv4 header (RFC 791), minimal: enough for End.DX4/End.DT4 delivery and tests.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version|  IHL  |Type of Service|          Total Length         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         Identification        |Flags|      Fragment Offset    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Time to Live |    Protocol   |         Header Checksum       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       Source Address                          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Destination Address                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Options                    |    Padding    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use core::net::Ipv4Addr;

use crate::checksum;
use crate::ip::IpProtocol;
use crate::{Error, Result};

/// Field offsets.
pub mod field {
    use core::ops::Range;
    /// Version and IHL.
    pub const VER_IHL: usize = 0;
    /// Type of Service (DSCP + ECN).
    pub const TOS: usize = 1;
    /// Total Length.
    pub const TOTAL_LEN: Range<usize> = 2..4;
    /// Identification.
    pub const IDENT: Range<usize> = 4..6;
    /// Flags and Fragment Offset.
    pub const FLAGS_FRAG: Range<usize> = 6..8;
    /// Time to Live.
    pub const TTL: usize = 8;
    /// Protocol.
    pub const PROTOCOL: usize = 9;
    /// Header Checksum.
    pub const CHECKSUM: Range<usize> = 10..12;
    /// Source Address.
    pub const SRC_ADDR: Range<usize> = 12..16;
    /// Destination Address.
    pub const DST_ADDR: Range<usize> = 16..20;
}

/// Length of a header without options.
pub const HEADER_LEN: usize = 20;

/// A read/write view of an IPv4 packet. Getters are safe after `new_checked`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap without validation.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wrap and validate with [`Packet::check_len`].
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Buffer >= 20, version 4, `20 <= IHL*4 <= Total Length <= buffer`.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 4 {
            return Err(Error::BadVersion);
        }
        let total = usize::from(self.total_len());
        if total > len {
            return Err(Error::PayloadLengthBeyondPacket);
        }
        if self.header_len() < HEADER_LEN || self.header_len() > total {
            return Err(Error::BadHeaderLength);
        }
        Ok(())
    }

    /// Give back the buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version.
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// IHL (32-bit words).
    #[inline]
    pub fn ihl(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] & 0x0f
    }

    /// Header length in bytes (IHL * 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.ihl()) * 4
    }

    /// Type of Service byte (DSCP << 2 | ECN).
    #[inline]
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::TOS]
    }

    /// Total Length.
    #[inline]
    pub fn total_len(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[2], b[3]])
    }

    /// Identification.
    #[inline]
    pub fn ident(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[4], b[5]])
    }

    /// Don't Fragment flag.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        self.buffer.as_ref()[6] & 0x40 != 0
    }

    /// More Fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        self.buffer.as_ref()[6] & 0x20 != 0
    }

    /// Fragment Offset (8-octet units).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[6] & 0x1f, b[7]])
    }

    /// Time to Live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol.
    #[inline]
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[field::PROTOCOL])
    }

    /// Header Checksum.
    #[inline]
    pub fn checksum(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[10], b[11]])
    }

    /// Source Address.
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        let b = self.buffer.as_ref();
        Ipv4Addr::new(b[12], b[13], b[14], b[15])
    }

    /// Destination Address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = self.buffer.as_ref();
        Ipv4Addr::new(b[16], b[17], b[18], b[19])
    }

    /// Whether the header checksum verifies (header length clamped to the buffer).
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        let b = self.buffer.as_ref();
        let end = self.header_len().min(b.len());
        checksum::data(&b[..end]) == 0xffff
    }

    /// Payload: `header_len()..total_len()`, clamped to the buffer.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let end = usize::from(self.total_len()).min(b.len());
        b.get(self.header_len()..end).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set Version and IHL.
    #[inline]
    pub fn set_version_ihl(&mut self, version: u8, ihl: u8) {
        self.buffer.as_mut()[field::VER_IHL] = (version << 4) | (ihl & 0x0f);
    }

    /// Set Type of Service.
    #[inline]
    pub fn set_tos(&mut self, v: u8) {
        self.buffer.as_mut()[field::TOS] = v;
    }

    /// Set Total Length.
    #[inline]
    pub fn set_total_len(&mut self, v: u16) {
        self.buffer.as_mut()[field::TOTAL_LEN].copy_from_slice(&v.to_be_bytes());
    }

    /// Set Identification.
    #[inline]
    pub fn set_ident(&mut self, v: u16) {
        self.buffer.as_mut()[field::IDENT].copy_from_slice(&v.to_be_bytes());
    }

    /// Set flags (DF, MF) and Fragment Offset.
    #[inline]
    pub fn set_flags_frag(&mut self, dont_frag: bool, more_frags: bool, offset: u16) {
        let v = (u16::from(dont_frag) << 14) | (u16::from(more_frags) << 13) | (offset & 0x1fff);
        self.buffer.as_mut()[field::FLAGS_FRAG].copy_from_slice(&v.to_be_bytes());
    }

    /// Set Protocol (checksum not updated).
    #[inline]
    pub fn set_protocol(&mut self, p: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = p.0;
    }

    /// Set Header Checksum.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&v.to_be_bytes());
    }

    /// Set Source Address (checksum not updated).
    #[inline]
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&a.octets());
    }

    /// Set Destination Address (checksum not updated).
    #[inline]
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&a.octets());
    }

    /// Set TTL, updating the header checksum incrementally (RFC 1624).
    #[inline]
    pub fn set_ttl(&mut self, ttl: u8) {
        let b = self.buffer.as_ref();
        let old = u16::from_be_bytes([b[8], b[9]]);
        let new = u16::from_be_bytes([ttl, b[9]]);
        let c = checksum::update_u16(self.checksum(), old, new);
        self.buffer.as_mut()[field::TTL] = ttl;
        self.set_checksum(c);
    }

    /// Recompute and write the header checksum (header length clamped to the buffer).
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let end = self.header_len().min(self.buffer.as_ref().len());
        let c = !checksum::data(&self.buffer.as_ref()[..end]);
        self.set_checksum(c);
    }

    /// Mutable payload (clamped).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (start, end) = (self.header_len(), usize::from(self.total_len()));
        let b = self.buffer.as_mut();
        let end = end.min(b.len());
        b.get_mut(start..end).unwrap_or(&mut [])
    }
}

/// Parsed IPv4 header (options are not represented).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source Address.
    pub src_addr: Ipv4Addr,
    /// Destination Address.
    pub dst_addr: Ipv4Addr,
    /// Protocol.
    pub protocol: IpProtocol,
    /// Payload length (Total Length - header length).
    pub payload_len: usize,
    /// Time to Live.
    pub ttl: u8,
    /// Type of Service.
    pub tos: u8,
}

impl Repr {
    /// Parse a view; validates structure and the header checksum.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(p: &Packet<&T>) -> Result<Repr> {
        p.check_len()?;
        if !p.verify_checksum() {
            return Err(Error::BadChecksum);
        }
        Ok(Repr {
            src_addr: p.src_addr(),
            dst_addr: p.dst_addr(),
            protocol: p.protocol(),
            payload_len: usize::from(p.total_len()) - p.header_len(),
            ttl: p.ttl(),
            tos: p.tos(),
        })
    }

    /// Header length written by `emit` (20, no options).
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Write a 20-byte header (ident 0, DF set, no fragmentation) with its checksum.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_version_ihl(4, 5);
        p.set_tos(self.tos);
        p.set_total_len((HEADER_LEN + self.payload_len) as u16);
        p.set_ident(0);
        p.set_flags_frag(true, false, 0);
        p.buffer.as_mut()[field::TTL] = self.ttl;
        p.set_protocol(self.protocol);
        p.set_src_addr(self.src_addr);
        p.set_dst_addr(self.dst_addr);
        p.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // 192.0.2.1 -> 198.51.100.2, UDP, TTL 64, DF, 4 bytes payload.
    fn golden() -> Vec<u8> {
        let mut v = vec![
            0x45, 0x00, 0x00, 0x18, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0, 0, 192, 0, 2, 1, 198,
            51, 100, 2, 1, 2, 3, 4,
        ];
        let c = !checksum::data(&v[..20]);
        v[10..12].copy_from_slice(&c.to_be_bytes());
        v
    }

    fn repr() -> Repr {
        Repr {
            src_addr: Ipv4Addr::new(192, 0, 2, 1),
            dst_addr: Ipv4Addr::new(198, 51, 100, 2),
            protocol: IpProtocol::UDP,
            payload_len: 4,
            ttl: 64,
            tos: 0,
        }
    }

    #[test]
    fn golden_pair() {
        let g = golden();
        let p = Packet::new_checked(&g[..]).expect("valid");
        assert_eq!(Repr::parse(&p), Ok(repr()));
        assert_eq!(p.payload(), &[1, 2, 3, 4]);
        assert!(p.dont_frag() && !p.more_frags() && p.frag_offset() == 0);
        let mut out = vec![0u8; 24];
        let mut q = Packet::new_unchecked(&mut out[..]);
        repr().emit(&mut q);
        q.payload_mut().copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(out, g);
        let (h, _) = etherparse::Ipv4Header::from_slice(&g).expect("etherparse");
        assert_eq!(h.header_checksum, p.checksum());
        assert_eq!(h.calc_header_checksum(), p.checksum());
    }

    #[test]
    fn ttl_incremental() {
        let mut g = golden();
        let mut p = Packet::new_unchecked(&mut g[..]);
        for ttl in [63u8, 1, 0, 255] {
            p.set_ttl(ttl);
            assert!(p.verify_checksum(), "ttl {ttl}");
        }
        let mut full = g.clone();
        Packet::new_unchecked(&mut full[..]).fill_checksum();
        assert_eq!(full, g);
    }

    #[test]
    fn errors() {
        let g = golden();
        assert_eq!(Packet::new_checked(&g[..19]).err(), Some(Error::Truncated));
        assert_eq!(
            Packet::new_checked(&g[..23]).err(),
            Some(Error::PayloadLengthBeyondPacket)
        );
        let mut b = g.clone();
        b[0] = 0x65;
        assert_eq!(Packet::new_checked(&b[..]).err(), Some(Error::BadVersion));
        b[0] = 0x44;
        assert_eq!(
            Packet::new_checked(&b[..]).err(),
            Some(Error::BadHeaderLength)
        );
        b[0] = 0x47; // 28 > total 24
        assert_eq!(
            Packet::new_checked(&b[..]).err(),
            Some(Error::BadHeaderLength)
        );
        let mut b = g.clone();
        b[15] ^= 1;
        let p = Packet::new_checked(&b[..]).expect("structure");
        assert_eq!(Repr::parse(&p), Err(Error::BadChecksum));
    }

    proptest! {
        #[test]
        fn roundtrip(s in any::<u32>(), d in any::<u32>(), proto in any::<u8>(), len in 0usize..100, ttl in any::<u8>(), tos in any::<u8>()) {
            let r = Repr { src_addr: s.into(), dst_addr: d.into(), protocol: IpProtocol(proto), payload_len: len, ttl, tos };
            let mut buf = vec![0u8; r.buffer_len() + len];
            r.emit(&mut Packet::new_unchecked(&mut buf[..]));
            prop_assert_eq!(Repr::parse(&Packet::new_checked(&buf[..]).expect("valid")), Ok(r));
        }

        #[test]
        fn no_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let u = Packet::new_unchecked(&bytes[..]);
            let _ = Repr::parse(&u);
            if let Ok(p) = Packet::new_checked(&bytes[..]) {
                let _ = (p.version(), p.ihl(), p.tos(), p.total_len(), p.ident(), p.dont_frag());
                let _ = (p.more_frags(), p.frag_offset(), p.ttl(), p.protocol(), p.checksum());
                let _ = (p.src_addr(), p.dst_addr(), p.verify_checksum(), p.payload());
                let mut b = bytes.clone();
                let mut m = Packet::new_unchecked(&mut b[..]);
                m.set_ttl(3);
                let _ = m.payload_mut();
            }
        }
    }
}
