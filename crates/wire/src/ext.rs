//! Generic IPv6 extension headers (RFC 8200 4): Hop-by-Hop Options, Destination Options and
//! Routing share the `Next Header, Hdr Ext Len` layout; the Fragment header is fixed-size;
//! the walker also steps over AH (RFC 4302, length in 4-octet units).
//! Also: the HBH/DestOpts options iterator and the extension-header chain walker.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Next Header  |  Hdr Ext Len  |                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               +
//! .                   Header-specific data                        .
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!
//! Fragment header (RFC 8200 4.5):
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Next Header  |   Reserved    |      Fragment Offset    |Res|M|
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         Identification                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use crate::ip::IpProtocol;
use crate::{Error, Result};

/// Offset of Next Header in every extension header.
pub const FIELD_NEXT_HEADER: usize = 0;
/// Offset of Hdr Ext Len.
pub const FIELD_HDR_EXT_LEN: usize = 1;
/// Smallest extension header.
pub const MIN_LEN: usize = 8;

/// A read/write view of a generic extension header (HBH, DestOpts, Routing).
///
/// The buffer starts at the header and may extend past it. After `new_checked` every getter
/// is safe; on an unchecked view the fixed getters panic below 2 bytes, slice getters clamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ExtHeader<T> {
    /// Wrap without validation.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        ExtHeader { buffer }
    }

    /// Wrap and validate with [`ExtHeader::check_len`].
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let h = Self::new_unchecked(buffer);
        h.check_len()?;
        Ok(h)
    }

    /// Buffer >= 8 bytes and `header_len() <= buffer`.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < MIN_LEN {
            Err(Error::Truncated)
        } else if self.header_len() > len {
            Err(Error::HdrExtLenBeyondPacket)
        } else {
            Ok(())
        }
    }

    /// Give back the buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Next Header.
    #[inline]
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[FIELD_NEXT_HEADER])
    }

    /// Hdr Ext Len (8-octet units beyond the first 8).
    #[inline]
    pub fn hdr_ext_len(&self) -> u8 {
        self.buffer.as_ref()[FIELD_HDR_EXT_LEN]
    }

    /// `(Hdr Ext Len + 1) * 8`.
    #[inline]
    pub fn header_len(&self) -> usize {
        (usize::from(self.hdr_ext_len()) + 1) * 8
    }

    /// Header-specific data: bytes 2..header_len (clamped to the buffer).
    #[inline]
    pub fn data(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        if b.len() < 2 {
            return &[];
        }
        &b[2..self.header_len().min(b.len())]
    }

    /// Options of a Hop-by-Hop or Destination Options header.
    #[inline]
    pub fn options(&self) -> OptionIter<'_> {
        OptionIter::new(self.data())
    }

    /// Routing Type (byte 2) of a Routing header.
    #[inline]
    pub fn routing_type(&self) -> u8 {
        self.buffer.as_ref()[2]
    }

    /// Segments Left (byte 3) of a Routing header (any type).
    #[inline]
    pub fn segments_left(&self) -> u8 {
        self.buffer.as_ref()[3]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ExtHeader<T> {
    /// Set Next Header.
    #[inline]
    pub fn set_next_header(&mut self, nh: IpProtocol) {
        self.buffer.as_mut()[FIELD_NEXT_HEADER] = nh.0;
    }

    /// Set Hdr Ext Len.
    #[inline]
    pub fn set_hdr_ext_len(&mut self, v: u8) {
        self.buffer.as_mut()[FIELD_HDR_EXT_LEN] = v;
    }

    /// Mutable header-specific data (clamped).
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        let b = self.buffer.as_mut();
        let end = end.min(b.len());
        b.get_mut(2..end).unwrap_or(&mut [])
    }
}

/// Option type Pad1.
pub const OPT_PAD1: u8 = 0;
/// Option type PadN.
pub const OPT_PADN: u8 = 1;

/// What to do with an unrecognized option (RFC 8200 4.2: the two high-order bits of the type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnknownOptionAction {
    /// 00: skip over the option.
    Skip,
    /// 01: discard the packet.
    Discard,
    /// 10: discard and send ICMPv6 Parameter Problem code 2 pointing at the option type.
    DiscardSendIcmp,
    /// 11: as above, only if the destination was not multicast.
    DiscardSendIcmpIfNotMulticast,
}

impl UnknownOptionAction {
    /// Decode from an option type.
    #[inline]
    pub const fn of(opt_type: u8) -> Self {
        match opt_type >> 6 {
            0 => Self::Skip,
            1 => Self::Discard,
            2 => Self::DiscardSendIcmp,
            _ => Self::DiscardSendIcmpIfNotMulticast,
        }
    }
}

/// One HBH/DestOpts option, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opt<'a> {
    /// Pad1.
    Pad1,
    /// PadN with `len` padding octets.
    PadN {
        /// Opt Data Len.
        len: u8,
    },
    /// Any other option.
    Other {
        /// Option Type.
        opt_type: u8,
        /// Option Data.
        data: &'a [u8],
    },
}

/// Iterator over HBH/DestOpts options. Never panics; yields one `Err(TlvOverrun)` and ends on
/// an option running past the header.
#[derive(Debug, Clone)]
pub struct OptionIter<'a> {
    data: &'a [u8],
    pos: usize,
    failed: bool,
}

impl<'a> OptionIter<'a> {
    /// Iterate over an options area (header bytes 2..).
    pub fn new(data: &'a [u8]) -> Self {
        OptionIter {
            data,
            pos: 0,
            failed: false,
        }
    }

    /// Offset of the next option inside the area (plus 2 for the offset in the header).
    pub fn offset(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for OptionIter<'a> {
    type Item = Result<Opt<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let rest = self.data.get(self.pos..)?;
        let (&t, rest) = rest.split_first()?;
        if t == OPT_PAD1 {
            self.pos += 1;
            return Some(Ok(Opt::Pad1));
        }
        let body = rest
            .split_first()
            .and_then(|(&len, rest)| rest.get(..usize::from(len)));
        let Some(body) = body else {
            self.failed = true;
            return Some(Err(Error::TlvOverrun));
        };
        self.pos += 2 + body.len();
        Some(Ok(if t == OPT_PADN {
            Opt::PadN {
                len: body.len() as u8,
            }
        } else {
            Opt::Other {
                opt_type: t,
                data: body,
            }
        }))
    }
}

/// Option type Router Alert (RFC 2711): known, nothing to do for a router without local
/// control-plane listeners.
pub const OPT_ROUTER_ALERT: u8 = 5;

/// The outcome of [`process_options`] on a Hop-by-Hop or Destination Options header
/// (RFC 8200 4.2). Offsets are from the start of the extension header (add the header's own
/// offset to get an ICMPv6 Parameter Problem pointer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OptionsVerdict {
    /// Every option was recognized or is to be skipped (action bits 00): process the packet.
    Pass,
    /// The first option whose type is not recognized and whose action bits (01, 10, 11) say
    /// to discard the packet; `offset` is that of its Option Type byte (the pointer of the
    /// Parameter Problem code 2 that actions 10 and 11 call for).
    Unknown {
        /// What RFC 8200 4.2 says to do (never [`UnknownOptionAction::Skip`]).
        action: UnknownOptionAction,
        /// Offset of the Option Type byte.
        offset: usize,
    },
    /// An option runs past the end of the header: `offset` is that of its Opt Data Len byte
    /// (or of its Option Type byte when the header ends right after it), the byte a
    /// Parameter Problem code 0 points at.
    BadLength {
        /// Offset of the erroneous byte.
        offset: usize,
    },
}

/// Processes the options of the Hop-by-Hop or Destination Options header `header` (its
/// Next Header byte first, exactly `header_len()` bytes long, as [`walk`] returns it) in
/// order, as RFC 8200 4.2 says: Pad1 and PadN are skipped, `known(type)` options are
/// accepted, and the first unrecognized option decides by its two high-order bits. The first
/// problem found wins (options are processed in the order they appear). Never panics, never
/// allocates; a header shorter than 2 bytes has no options.
pub fn process_options(header: &[u8], known: impl Fn(u8) -> bool) -> OptionsVerdict {
    let data = header.get(2..).unwrap_or(&[]);
    let mut pos = 0usize;
    while let Some(&t) = data.get(pos) {
        if t == OPT_PAD1 {
            pos += 1;
            continue;
        }
        let Some(&len) = data.get(pos + 1) else {
            return OptionsVerdict::BadLength { offset: 2 + pos };
        };
        let next = pos + 2 + usize::from(len);
        if next > data.len() {
            return OptionsVerdict::BadLength {
                offset: 2 + pos + 1,
            };
        }
        if t != OPT_PADN && !known(t) {
            let action = UnknownOptionAction::of(t);
            if action != UnknownOptionAction::Skip {
                return OptionsVerdict::Unknown {
                    action,
                    offset: 2 + pos,
                };
            }
        }
        pos = next;
    }
    OptionsVerdict::Pass
}

/// Length of the Hop-by-Hop / Destination Options header [`emit_options_header`] writes for
/// `opts`: 2 + the options, padded to a multiple of 8 (`None` above 2048 bytes, the most
/// Hdr Ext Len can say).
pub fn options_header_len(opts: &[Opt<'_>]) -> Option<usize> {
    let body: usize = opts
        .iter()
        .map(|o| match o {
            Opt::Pad1 => 1,
            Opt::PadN { len } => 2 + usize::from(*len),
            Opt::Other { data, .. } => 2 + data.len(),
        })
        .sum();
    let len = (2 + body).div_ceil(8) * 8;
    (len <= 2048).then_some(len)
}

/// Writes a Hop-by-Hop / Destination Options header with `next_header` and `opts` (in order)
/// into `buf`, padding the end with Pad1 or PadN, and returns its length
/// ([`options_header_len`]). `None` if it does not fit `buf`, exceeds 2048 bytes, or an
/// `Opt::Other` carries more than 255 bytes of data or a Pad1/PadN type.
pub fn emit_options_header(
    next_header: IpProtocol,
    opts: &[Opt<'_>],
    buf: &mut [u8],
) -> Option<usize> {
    let len = options_header_len(opts)?;
    let out = buf.get_mut(..len)?;
    out[FIELD_NEXT_HEADER] = next_header.0;
    out[FIELD_HDR_EXT_LEN] = u8::try_from(len / 8 - 1).ok()?;
    let mut pos = 2;
    for o in opts {
        match o {
            Opt::Pad1 => {
                out[pos] = OPT_PAD1;
                pos += 1;
            }
            Opt::PadN { len } => {
                let n = usize::from(*len);
                out[pos] = OPT_PADN;
                out[pos + 1] = *len;
                out[pos + 2..pos + 2 + n].fill(0);
                pos += 2 + n;
            }
            Opt::Other { opt_type, data } => {
                if *opt_type == OPT_PAD1 || *opt_type == OPT_PADN {
                    return None;
                }
                out[pos] = *opt_type;
                out[pos + 1] = u8::try_from(data.len()).ok()?;
                out[pos + 2..pos + 2 + data.len()].copy_from_slice(data);
                pos += 2 + data.len();
            }
        }
    }
    match len - pos {
        0 => {}
        1 => out[pos] = OPT_PAD1,
        n => {
            out[pos] = OPT_PADN;
            out[pos + 1] = (n - 2) as u8;
            out[pos + 2..len].fill(0);
        }
    }
    Some(len)
}

/// Length of the Fragment header.
pub const FRAGMENT_LEN: usize = 8;

/// A read/write view of a Fragment header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Fragment<T> {
    /// Wrap without validation.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Fragment { buffer }
    }

    /// Wrap and check the buffer holds 8 bytes.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let f = Self::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }

    /// Buffer >= 8 bytes.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < FRAGMENT_LEN {
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

    /// Next Header.
    #[inline]
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[0])
    }

    /// Fragment Offset in 8-octet units.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[2], b[3]]) >> 3
    }

    /// M flag: more fragments follow.
    #[inline]
    pub fn more_frags(&self) -> bool {
        self.buffer.as_ref()[3] & 1 != 0
    }

    /// Identification.
    #[inline]
    pub fn ident(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([b[4], b[5], b[6], b[7]])
    }

    /// First fragment (offset 0): the upper-layer header follows.
    #[inline]
    pub fn is_first(&self) -> bool {
        self.frag_offset() == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Fragment<T> {
    /// Set Next Header.
    #[inline]
    pub fn set_next_header(&mut self, nh: IpProtocol) {
        self.buffer.as_mut()[0] = nh.0;
    }

    /// Set Fragment Offset (8-octet units, 13 bits) and M flag; clears the reserved fields.
    #[inline]
    pub fn set_frag_offset(&mut self, offset: u16, more: bool) {
        let b = self.buffer.as_mut();
        b[1] = 0;
        b[2..4].copy_from_slice(&((offset << 3) | u16::from(more)).to_be_bytes());
    }

    /// Set Identification.
    #[inline]
    pub fn set_ident(&mut self, id: u32) {
        self.buffer.as_mut()[4..8].copy_from_slice(&id.to_be_bytes());
    }
}

/// Capacity of a [`Chain`]: the walker never records more extension headers than this.
pub const MAX_CHAIN: usize = 8;

/// One extension header found by [`walk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChainEntry {
    /// Which header.
    pub protocol: IpProtocol,
    /// Offset from the start of the walked payload (just after the IPv6 header). `u16`
    /// keeps [`Chain`] small (IPv6 payloads without jumbograms are < 64 KiB).
    pub offset: u16,
    /// Length in bytes (at most 2048).
    pub len: u16,
}

impl ChainEntry {
    /// Offset as `usize`.
    #[inline]
    pub const fn offset(&self) -> usize {
        self.offset as usize
    }

    /// Header length as `usize`.
    #[inline]
    pub const fn header_len(&self) -> usize {
        self.len as usize
    }
}

const EMPTY_ENTRY: ChainEntry = ChainEntry {
    protocol: IpProtocol(0),
    offset: 0,
    len: 0,
};

/// The extension header chain of an IPv6 packet, as found by [`walk`]. All offsets are from
/// the start of the walked payload (the byte after the fixed IPv6 header). No allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chain {
    entries: [ChainEntry; MAX_CHAIN],
    count: usize,
    /// `(offset, len)` of the first Routing header, if any.
    pub routing: Option<(usize, usize)>,
    /// Offset of the first Fragment header, if any.
    pub fragment: Option<usize>,
    /// The upper-layer protocol (first non-extension Next Header, possibly
    /// `NO_NEXT_HEADER`, `IPV6`, `IPV4`, `ETHERNET`...) and its offset. Behind a non-first
    /// fragment the offset points at fragment data, not at a header.
    pub upper: (IpProtocol, usize),
}

impl Chain {
    /// The extension headers in order.
    #[inline]
    pub fn headers(&self) -> &[ChainEntry] {
        &self.entries[..self.count]
    }

    /// Number of extension headers.
    #[inline]
    pub fn len(&self) -> usize {
        self.count
    }

    /// No extension headers at all.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Total length of the extension headers (= offset of the upper layer).
    #[inline]
    pub fn ext_len(&self) -> usize {
        self.upper.1
    }

    /// Next Header value that points at `headers()[i]`'s successor lives at
    /// `headers()[i].offset`; for the upper layer this gives the offset of the Next Header
    /// byte to rewrite when removing/inserting a header after the last extension header
    /// (`None` means it is the IPv6 header's Next Header).
    #[inline]
    pub fn last_next_header_offset(&self) -> Option<usize> {
        self.headers().last().map(ChainEntry::offset)
    }
}

/// Walk the extension header chain starting with Next Header `first` over `payload` (the
/// bytes after the fixed IPv6 header, bounded by Payload Length).
///
/// At most `min(max_headers, MAX_CHAIN)` extension headers are accepted; one more is
/// [`Error::TooManyExtensionHeaders`] (this bounds long chains). Hop-by-Hop anywhere but first
/// is [`Error::HopByHopNotFirst`]. A header whose first 8 bytes are missing is
/// [`Error::Truncated`]; one whose Hdr Ext Len points past `payload` is
/// [`Error::HdrExtLenBeyondPacket`]. The walk stops after a non-first Fragment header.
/// The upper-layer header itself is not validated.
#[inline]
pub fn walk(first: IpProtocol, payload: &[u8], max_headers: usize) -> Result<Chain> {
    let limit = max_headers.min(MAX_CHAIN);
    let mut chain = Chain {
        entries: [EMPTY_ENTRY; MAX_CHAIN],
        count: 0,
        routing: None,
        fragment: None,
        upper: (first, 0),
    };
    let mut nh = first;
    let mut off = 0usize;
    while nh.is_ipv6_ext() {
        if chain.count >= limit {
            return Err(Error::TooManyExtensionHeaders);
        }
        if nh == IpProtocol::HOP_BY_HOP && chain.count != 0 {
            return Err(Error::HopByHopNotFirst);
        }
        let rest = payload.get(off..).unwrap_or(&[]);
        if rest.len() < MIN_LEN {
            return Err(Error::Truncated);
        }
        let len = match nh {
            IpProtocol::FRAGMENT => FRAGMENT_LEN,
            // RFC 4302 2.2: Payload Len in 4-octet units, minus 2.
            IpProtocol::AH => (usize::from(rest[FIELD_HDR_EXT_LEN]) + 2) * 4,
            _ => (usize::from(rest[FIELD_HDR_EXT_LEN]) + 1) * 8,
        };
        if len > rest.len() {
            return Err(Error::HdrExtLenBeyondPacket);
        }
        if off > usize::from(u16::MAX) {
            return Err(Error::Malformed("extension header chain beyond 64 KiB"));
        }
        chain.entries[chain.count] = ChainEntry {
            protocol: nh,
            offset: off as u16,
            len: len as u16,
        };
        chain.count += 1;
        if nh == IpProtocol::ROUTING && chain.routing.is_none() {
            chain.routing = Some((off, len));
        }
        let next = IpProtocol(rest[FIELD_NEXT_HEADER]);
        off += len;
        if nh == IpProtocol::FRAGMENT {
            if chain.fragment.is_none() {
                chain.fragment = Some(off - len);
            }
            // Not the first fragment: what follows is data, not headers.
            if u16::from_be_bytes([rest[2], rest[3]]) >> 3 != 0 {
                chain.upper = (next, off);
                return Ok(chain);
            }
        }
        nh = next;
    }
    chain.upper = (nh, off);
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// HBH (PadN 4) -> DestOpts (16 bytes: option 0x3e len 4, PadN 6)
    /// -> SRH-ish routing (24 bytes) -> Fragment (first) -> UDP.
    fn chain_bytes() -> Vec<u8> {
        let mut v = vec![60, 0, 1, 4, 0, 0, 0, 0]; // HBH: PadN len 4
        v.extend_from_slice(&[43, 1, 0x3e, 4, 1, 2, 3, 4, 1, 6, 0, 0, 0, 0, 0, 0]); // DestOpts
        v.extend_from_slice(&[44, 2, 4, 0, 0, 0, 0, 0]); // Routing type 4, 1 segment
        v.extend_from_slice(&[0u8; 16]);
        v.extend_from_slice(&[17, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef]); // Fragment, offset 0, M=1
        v.extend_from_slice(&[0, 1, 0, 2, 0, 8, 0, 0]); // UDP
        v
    }

    #[test]
    fn golden_walk() {
        let b = chain_bytes();
        let c = walk(IpProtocol::HOP_BY_HOP, &b, 8).expect("walk");
        let protos: Vec<_> = c
            .headers()
            .iter()
            .map(|e| (e.protocol, e.offset(), e.header_len()))
            .collect();
        assert_eq!(
            protos,
            vec![
                (IpProtocol::HOP_BY_HOP, 0, 8),
                (IpProtocol::DST_OPTS, 8, 16),
                (IpProtocol::ROUTING, 24, 24),
                (IpProtocol::FRAGMENT, 48, 8),
            ]
        );
        assert_eq!(c.routing, Some((24, 24)));
        assert_eq!(c.fragment, Some(48));
        assert_eq!(c.upper, (IpProtocol::UDP, 56));
        assert_eq!(c.last_next_header_offset(), Some(48));

        // etherparse agrees on the upper layer position.
        let (exts, next, rest) = etherparse::Ipv6Extensions::from_slice(
            etherparse::IpNumber::IPV6_HEADER_HOP_BY_HOP,
            &b,
        )
        .expect("etherparse");
        assert_eq!(next.0, 17);
        assert_eq!(rest.len(), b.len() - 56);
        assert!(exts.routing.is_some() && exts.fragment.is_some());
    }

    #[test]
    fn walk_errors() {
        let b = chain_bytes();
        assert_eq!(
            walk(IpProtocol::HOP_BY_HOP, &b, 3),
            Err(Error::TooManyExtensionHeaders)
        );
        assert_eq!(
            walk(IpProtocol::HOP_BY_HOP, &b[..40], 8),
            Err(Error::HdrExtLenBeyondPacket)
        );
        assert_eq!(
            walk(IpProtocol::HOP_BY_HOP, &b[..28], 8),
            Err(Error::Truncated)
        );
        let mut b2 = b.clone();
        b2[8] = 0; // DestOpts -> HBH
        assert_eq!(
            walk(IpProtocol::HOP_BY_HOP, &b2, 8),
            Err(Error::HopByHopNotFirst)
        );
        // A self-referencing chain (DestOpts -> DestOpts -> ...) is bounded.
        let looped = [60u8, 0, 1, 4, 0, 0, 0, 0].repeat(20);
        assert_eq!(
            walk(IpProtocol::DST_OPTS, &looped, 100),
            Err(Error::TooManyExtensionHeaders)
        );
        // No extension headers at all.
        let c = walk(IpProtocol::TCP, &[], 8).expect("walk");
        assert!(c.is_empty());
        assert_eq!(c.upper, (IpProtocol::TCP, 0));
        assert_eq!(c.last_next_header_offset(), None);
    }

    #[test]
    fn walks_ah() {
        // DestOpts (8) -> AH (payload len 4 => 24 bytes) -> TCP.
        let mut b = vec![51u8, 0, 1, 4, 0, 0, 0, 0];
        b.extend_from_slice(&[6, 4, 0, 0]);
        b.extend_from_slice(&[0u8; 20]);
        let c = walk(IpProtocol::DST_OPTS, &b, 8).expect("walk");
        assert_eq!(
            c.headers()[1],
            ChainEntry {
                protocol: IpProtocol::AH,
                offset: 8,
                len: 24
            }
        );
        assert_eq!(c.upper, (IpProtocol::TCP, 32));
        assert_eq!(
            walk(IpProtocol::DST_OPTS, &b[..31], 8),
            Err(Error::HdrExtLenBeyondPacket)
        );
        // ESP ends the chain.
        let c = walk(IpProtocol::ESP, &b, 8).expect("walk");
        assert_eq!(c.upper, (IpProtocol::ESP, 0));
    }

    #[test]
    fn non_first_fragment_stops() {
        let mut b = vec![6u8, 0, 0x00, 0x09, 0, 0, 0, 1]; // offset 1, M=1
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]); // data looks like HBH
        let c = walk(IpProtocol::FRAGMENT, &b, 8).expect("walk");
        assert_eq!(c.upper, (IpProtocol::TCP, 8));
        let f = Fragment::new_checked(&b[..]).expect("frag");
        assert_eq!(
            (f.frag_offset(), f.more_frags(), f.ident(), f.is_first()),
            (1, true, 1, false)
        );
    }

    #[test]
    fn fragment_setters_match_etherparse() {
        let mut b = [0u8; 8];
        let mut f = Fragment::new_unchecked(&mut b[..]);
        f.set_next_header(IpProtocol::UDP);
        f.set_frag_offset(185, true);
        f.set_ident(0xcafe_f00d);
        let (h, _) = etherparse::Ipv6FragmentHeader::from_slice(&b).expect("etherparse");
        assert_eq!(h.fragment_offset.value(), 185);
        assert!(h.more_fragments);
        assert_eq!(h.identification, 0xcafe_f00d);
        assert_eq!(h.next_header.0, 17);
    }

    #[test]
    fn options() {
        let b = chain_bytes();
        let h = ExtHeader::new_checked(&b[8..]).expect("destopts");
        assert_eq!((h.next_header(), h.header_len()), (IpProtocol::ROUTING, 16));
        let opts: Vec<_> = h.options().collect::<Result<_>>().expect("opts");
        assert_eq!(
            opts,
            vec![
                Opt::Other {
                    opt_type: 0x3e,
                    data: &[1, 2, 3, 4]
                },
                Opt::PadN { len: 6 }
            ]
        );
        assert_eq!(UnknownOptionAction::of(0x3e), UnknownOptionAction::Skip);
        assert_eq!(
            UnknownOptionAction::of(0xc2),
            UnknownOptionAction::DiscardSendIcmpIfNotMulticast
        );
        let mut bad = b[8..24].to_vec();
        bad[3] = 30; // option length past the header
        let h = ExtHeader::new_checked(&bad[..]).expect("len ok");
        let r: Vec<_> = h.options().collect();
        assert_eq!(r, vec![Err(Error::TlvOverrun)]);
        let r = ExtHeader::new_checked(&b[24..]).expect("routing");
        assert_eq!((r.routing_type(), r.segments_left()), (4, 0));
        assert_eq!(
            ExtHeader::new_checked(&b[..7]).err(),
            Some(Error::Truncated)
        );
        assert_eq!(
            ExtHeader::new_checked(&b[8..20]).err(),
            Some(Error::HdrExtLenBeyondPacket)
        );
    }

    #[test]
    fn process_options_follows_the_action_bits() {
        let none = |_: u8| false;
        // HBH, 8 bytes: PadN 4 -> pass.
        assert_eq!(
            process_options(&[59, 0, 1, 4, 0, 0, 0, 0], none),
            OptionsVerdict::Pass
        );
        // Pad1, then an unknown 00 option (skipped), then PadN 0.
        assert_eq!(
            process_options(&[59, 0, 0, 0x1e, 1, 9, 1, 0], none),
            OptionsVerdict::Pass
        );
        for (ty, action) in [
            (0x5e, UnknownOptionAction::Discard),
            (0x9e, UnknownOptionAction::DiscardSendIcmp),
            (0xde, UnknownOptionAction::DiscardSendIcmpIfNotMulticast),
        ] {
            // Pad1, then the option at header offset 3.
            assert_eq!(
                process_options(&[59, 0, 0, ty, 2, 0, 0, 0], none),
                OptionsVerdict::Unknown { action, offset: 3 }
            );
            // A known option of that type passes.
            assert_eq!(
                process_options(&[59, 0, 0, ty, 2, 0, 0, 0], |t| t == ty),
                OptionsVerdict::Pass
            );
        }
        // The first problem wins: an overrun after an unknown 10 option is not reached.
        assert_eq!(
            process_options(&[59, 0, 0x9e, 0, 1, 9, 0, 0], none),
            OptionsVerdict::Unknown {
                action: UnknownOptionAction::DiscardSendIcmp,
                offset: 2
            }
        );
        // Opt Data Len past the header: pointer at the length byte.
        assert_eq!(
            process_options(&[59, 0, 1, 2, 0, 0, 0x1e, 1], none),
            OptionsVerdict::BadLength { offset: 7 }
        );
        // Option type as the last byte: pointer at the type byte.
        assert_eq!(
            process_options(&[59, 0, 1, 3, 0, 0, 0, 0x1e], none),
            OptionsVerdict::BadLength { offset: 7 }
        );
        assert_eq!(process_options(&[], none), OptionsVerdict::Pass);
    }

    #[test]
    fn golden_options_header() {
        let opts = [Opt::Other {
            opt_type: OPT_ROUTER_ALERT,
            data: &[0, 0],
        }];
        let mut b = [0xffu8; 16];
        assert_eq!(emit_options_header(IpProtocol::UDP, &opts, &mut b), Some(8));
        assert_eq!(&b[..8], &[17, 0, 5, 2, 0, 0, 1, 0]);
        let one = [Opt::Other {
            opt_type: 0x3e,
            data: &[7; 3],
        }];
        assert_eq!(emit_options_header(IpProtocol::TCP, &one, &mut b), Some(8));
        assert_eq!(&b[..8], &[6, 0, 0x3e, 3, 7, 7, 7, OPT_PAD1]);
        assert_eq!(
            emit_options_header(IpProtocol::TCP, &one, &mut b[..7]),
            None
        );
        let pad = [Opt::Other {
            opt_type: OPT_PADN,
            data: &[],
        }];
        assert_eq!(emit_options_header(IpProtocol::TCP, &pad, &mut b), None);
    }

    proptest! {
        #[test]
        fn walk_no_panic(first in any::<u8>(), bytes in proptest::collection::vec(any::<u8>(), 0..200), max in 0usize..12) {
            if let Ok(c) = walk(IpProtocol(first), &bytes, max) {
                prop_assert!(c.len() <= max.min(MAX_CHAIN));
                prop_assert!(c.upper.1 <= bytes.len());
                for e in c.headers() {
                    prop_assert!(e.offset() + e.header_len() <= bytes.len());
                }
            }
        }

        #[test]
        fn process_options_no_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            match process_options(&bytes, |t| t & 1 == 0) {
                OptionsVerdict::Pass => {}
                OptionsVerdict::Unknown { action, offset } => {
                    prop_assert!(offset < bytes.len());
                    prop_assert_eq!(UnknownOptionAction::of(bytes[offset]), action);
                    prop_assert!(action != UnknownOptionAction::Skip);
                }
                OptionsVerdict::BadLength { offset } => prop_assert!(offset < bytes.len()),
            }
        }

        /// `emit` then the options iterator gives back the options (plus the end padding),
        /// and the header passes processing when every option type is known.
        #[test]
        fn options_round_trip(
            raw in proptest::collection::vec(
                (2u8..=255, proptest::collection::vec(any::<u8>(), 0..20)), 0..12),
            nh in any::<u8>(),
        ) {
            let opts: Vec<Opt<'_>> = raw
                .iter()
                .map(|(t, d)| Opt::Other { opt_type: *t, data: d })
                .collect();
            let mut buf = [0u8; 2048];
            let n = emit_options_header(IpProtocol(nh), &opts, &mut buf).expect("fits");
            prop_assert_eq!(Some(n), options_header_len(&opts));
            prop_assert_eq!(n % 8, 0);
            let h = ExtHeader::new_checked(&buf[..n]).expect("checked");
            prop_assert_eq!(h.next_header(), IpProtocol(nh));
            prop_assert_eq!(h.header_len(), n);
            let back: Vec<Opt<'_>> = h.options().collect::<Result<_>>().expect("parse");
            prop_assert_eq!(&back[..opts.len()], &opts[..]);
            let padding = back[opts.len()..].iter().all(|o| matches!(o, Opt::Pad1 | Opt::PadN { .. }));
            prop_assert!(padding);
            prop_assert_eq!(process_options(&buf[..n], |_| true), OptionsVerdict::Pass);
        }

        #[test]
        fn views_no_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let u = ExtHeader::new_unchecked(&bytes[..]);
            let _ = u.data();
            let _ = u.options().count();
            if let Ok(h) = ExtHeader::new_checked(&bytes[..]) {
                let _ = (h.next_header(), h.hdr_ext_len(), h.header_len(), h.routing_type(), h.segments_left());
                let _ = h.options().count();
            }
            if let Ok(f) = Fragment::new_checked(&bytes[..]) {
                let _ = (f.next_header(), f.frag_offset(), f.more_frags(), f.ident());
            }
        }
    }
}
