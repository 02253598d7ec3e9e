//! IPv6 Segment Routing Header (RFC 8754), the Routing header with Routing Type 4.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Next Header   |  Hdr Ext Len  | Routing Type  | Segments Left |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Last Entry   |     Flags     |              Tag              |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                                                               |
//! |            Segment List[0] (128-bit IPv6 address)             |
//! |                                                               |
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                                                               |
//! |                                                               |
//!                               ...
//! |                                                               |
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                                                               |
//! |            Segment List[n] (128-bit IPv6 address)             |
//! |                                                               |
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! //                                                             //
//! //         Optional Type Length Value objects (variable)       //
//! //                                                             //
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! **Order of the segment list.** The list is encoded in *reverse* path order:
//! `Segment List[0]` is the **last** segment of the path (the final destination) and
//! `Segment List[Last Entry]` is the first. Segments Left indexes the *active* segment, so a
//! fresh H.Encaps with path `S1, S2, S3` writes `[S3, S2, S1]`, Segments Left = 2 and sets the
//! IPv6 Destination Address to `Segment List[2] = S1`. An endpoint decrements Segments Left and
//! copies `Segment List[Segments Left]` into the Destination Address.
//!
//! **Validation.** [`Srh::check_len`] (run by [`Srh::new_checked`]) validates the fixed part,
//! Hdr Ext Len against the buffer, Routing Type 4 and Last Entry against the header; TLVs are
//! validated lazily by [`Srh::check_tlvs`] (or while iterating [`Srh::tlvs`]) so the fast path
//! can skip them. `Segments Left > Last Entry + 1` is *not* a parse error: RFC 8754 4.3.1.1
//! requires the processing node to answer with an ICMPv6 Parameter Problem pointing at
//! [`FIELD_SEGMENTS_LEFT`], so the view exposes it ([`Srh::segments_left_in_range`]).
//!
//! TLVs (RFC 8754 2.1):
//!
//! ```text
//!  0                   1
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-
//! |     Type      |    Length     | Variable-length data
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-
//!
//! Pad1 (type 0) is a single octet with no Length. PadN is type 4. HMAC (type 5):
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Type      |    Length     |D|        RESERVED             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                      HMAC Key ID (4 octets)                   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                                                              //
//! |                      HMAC (Variable)                         //
//! |                                                              //
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use core::net::Ipv6Addr;

use crate::ip::IpProtocol;
use crate::{Error, Result};

/// Offset of Next Header.
pub const FIELD_NEXT_HEADER: usize = 0;
/// Offset of Hdr Ext Len.
pub const FIELD_HDR_EXT_LEN: usize = 1;
/// Offset of Routing Type.
pub const FIELD_ROUTING_TYPE: usize = 2;
/// Offset of Segments Left (the ICMPv6 Parameter Problem pointer of RFC 8754 4.3.1.1 is the
/// SRH's offset in the packet plus this).
pub const FIELD_SEGMENTS_LEFT: usize = 3;
/// Offset of Last Entry.
pub const FIELD_LAST_ENTRY: usize = 4;
/// Offset of Flags.
pub const FIELD_FLAGS: usize = 5;
/// Offset of Tag (2 octets).
pub const FIELD_TAG: usize = 6;
/// Offset of `Segment List[0]`.
pub const FIELD_SEGMENT_LIST: usize = 8;

/// Length of the fixed part (before `Segment List[0]`).
pub const FIXED_LEN: usize = 8;
/// Length of one segment.
pub const SEGMENT_LEN: usize = 16;
/// Routing Type of the SRH.
pub const ROUTING_TYPE: u8 = 4;
/// Largest segment list an SRH without TLVs can carry (Hdr Ext Len = 2 * n <= 255).
pub const MAX_SEGMENTS: usize = 127;
/// Largest SRH in bytes ((255 + 1) * 8).
pub const MAX_LEN: usize = 2048;

/// TLV type Pad1.
pub const TLV_PAD1: u8 = 0;
/// TLV type PadN.
pub const TLV_PADN: u8 = 4;
/// TLV type HMAC.
pub const TLV_HMAC: u8 = 5;
/// TLV type of srmig's commit-fence marker (`srmig_dataplane::fence`): 124, the first of the
/// values RFC 8754 section 8.2 sets aside for experimentation and testing (124-126). The
/// high-order bit is clear: the TLV does not change en route.
pub const TLV_FENCE: u8 = 124;
/// Fixed part of the HMAC TLV data (D flag + reserved + key id).
pub const HMAC_FIXED_LEN: usize = 6;
/// The D flag in the first data octet of the HMAC TLV (RFC 8754 2.1.2): set, the Destination
/// Address is not verified against the segment list (a reduced segment list, RFC 8986 5.2).
pub const HMAC_D_FLAG: u8 = 0x80;
/// Length of the HMAC field this crate emits: RFC 8754 2.1.2.1 truncates the digest to 32
/// octets (all of HMAC-SHA256).
pub const HMAC_FIELD_LEN: usize = 32;
/// Octets of an HMAC TLV with a [`HMAC_FIELD_LEN`]-octet HMAC: Type, Length (38), D + reserved,
/// Key ID, HMAC. A multiple of 8, so appending it keeps the SRH aligned.
pub const HMAC_TLV_LEN: usize = 2 + HMAC_FIXED_LEN + HMAC_FIELD_LEN;
/// Length of the fixed part of the HMAC text ([`hmac_text_prefix`]): Source Address (16),
/// Last Entry (1), Flags (1), HMAC Key ID (4). The segment list follows it.
pub const HMAC_TEXT_PREFIX_LEN: usize = 22;

/// A read/write view of a Segment Routing Header.
///
/// The buffer starts at the SRH and may extend past it (the rest of the packet).
/// After [`Srh::new_checked`] every getter is safe, and [`Srh::segment`] is safe for
/// `i <= last_entry()`. On a [`Srh::new_unchecked`] view the fixed-field getters panic if the
/// buffer is shorter than 8 bytes; the slice/iterator getters ([`Srh::segments_bytes`],
/// [`Srh::segments`], [`Srh::tlvs`], [`Srh::segment_checked`]) never panic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srh<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Srh<T> {
    /// Wrap without validation.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Srh<T> {
        Srh { buffer }
    }

    /// Wrap and validate with [`Srh::check_len`].
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Srh<T>> {
        let s = Self::new_unchecked(buffer);
        s.check_len()?;
        Ok(s)
    }

    /// Validate the header structure (not the TLVs, see [`Srh::check_tlvs`]):
    /// buffer >= 8, header length <= buffer, Routing Type 4,
    /// `(Last Entry + 1) * 16 <= header length - 8`.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < FIXED_LEN {
            return Err(Error::Truncated);
        }
        if self.header_len() > b.len() {
            return Err(Error::HdrExtLenBeyondPacket);
        }
        if b[FIELD_ROUTING_TYPE] != ROUTING_TYPE {
            return Err(Error::NotSegmentRouting);
        }
        if self.tlv_offset() > self.header_len() {
            return Err(Error::LastEntryBeyondHeader);
        }
        Ok(())
    }

    /// Validate every TLV (Pad1/PadN/HMAC/unknown): none overruns the header and HMAC TLVs
    /// have at least their fixed 6 octets.
    pub fn check_tlvs(&self) -> Result<()> {
        for t in self.tlvs() {
            t?;
        }
        Ok(())
    }

    /// Check only that every TLV fits in the header (RFC 8754 2.1; what Linux
    /// `seg6_validate_srh` checks): Pad1 is one octet, every other TLV is `2 + Length` octets.
    /// Unlike [`Srh::check_tlvs`] the contents of known TLVs (e.g. a short HMAC TLV) are not
    /// judged. No allocation, no iterator state: the transit fast path runs this per packet.
    #[inline]
    pub fn check_tlv_bounds(&self) -> Result<()> {
        let tlvs = self.tlv_bytes();
        let mut i = 0usize;
        while let Some(&t) = tlvs.get(i) {
            if t == TLV_PAD1 {
                i += 1;
                continue;
            }
            let Some(&len) = tlvs.get(i + 1) else {
                return Err(Error::TlvOverrun);
            };
            i += 2 + usize::from(len);
            if i > tlvs.len() {
                return Err(Error::TlvOverrun);
            }
        }
        Ok(())
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

    /// Hdr Ext Len (8-octet units, not counting the first 8 octets).
    #[inline]
    pub fn hdr_ext_len(&self) -> u8 {
        self.buffer.as_ref()[FIELD_HDR_EXT_LEN]
    }

    /// Header length in bytes: `(Hdr Ext Len + 1) * 8`.
    #[inline]
    pub fn header_len(&self) -> usize {
        (usize::from(self.hdr_ext_len()) + 1) * 8
    }

    /// Routing Type (4 on a checked view).
    #[inline]
    pub fn routing_type(&self) -> u8 {
        self.buffer.as_ref()[FIELD_ROUTING_TYPE]
    }

    /// Segments Left. May exceed `last_entry() + 1` on a checked view; see the module docs.
    #[inline]
    pub fn segments_left(&self) -> u8 {
        self.buffer.as_ref()[FIELD_SEGMENTS_LEFT]
    }

    /// Last Entry: index of the last element of the segment list (count - 1).
    #[inline]
    pub fn last_entry(&self) -> u8 {
        self.buffer.as_ref()[FIELD_LAST_ENTRY]
    }

    /// Number of segments (`Last Entry + 1`).
    #[inline]
    pub fn num_segments(&self) -> usize {
        usize::from(self.last_entry()) + 1
    }

    /// Flags.
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[FIELD_FLAGS]
    }

    /// Tag.
    #[inline]
    pub fn tag(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[FIELD_TAG], b[FIELD_TAG + 1]])
    }

    /// Whether `Segments Left <= Last Entry + 1` (RFC 8754 4.3.1.1). When false, the
    /// processing node must send an ICMPv6 Parameter Problem, code 0, pointing to
    /// [`FIELD_SEGMENTS_LEFT`], and drop the packet.
    #[inline]
    pub fn segments_left_in_range(&self) -> bool {
        usize::from(self.segments_left()) <= self.num_segments()
    }

    /// Offset of the TLV area (end of the segment list) from the start of the SRH.
    #[inline]
    pub fn tlv_offset(&self) -> usize {
        FIXED_LEN + self.num_segments() * SEGMENT_LEN
    }

    /// `Segment List[i]` (i = 0 is the *last* segment of the path).
    ///
    /// Never panics on a checked view when `i <= last_entry()`. Panics if the segment lies
    /// outside the buffer (like slice indexing); use [`Srh::segment_checked`] otherwise.
    #[inline]
    pub fn segment(&self, i: usize) -> Ipv6Addr {
        debug_assert!(i <= usize::from(self.last_entry()));
        let at = FIELD_SEGMENT_LIST + i * SEGMENT_LEN;
        let mut o = [0u8; 16];
        o.copy_from_slice(&self.buffer.as_ref()[at..at + SEGMENT_LEN]);
        Ipv6Addr::from(o)
    }

    /// `Segment List[i]` if `i <= last_entry()` and it lies inside the header and buffer.
    #[inline]
    pub fn segment_checked(&self, i: usize) -> Option<Ipv6Addr> {
        let b = self.buffer.as_ref();
        if b.len() < FIXED_LEN || i > usize::from(self.last_entry()) {
            return None;
        }
        let at = FIELD_SEGMENT_LIST + i * SEGMENT_LEN;
        let end = self.header_len().min(b.len());
        let s: [u8; 16] = b
            .get(at..at + SEGMENT_LEN)
            .filter(|_| at + SEGMENT_LEN <= end)?
            .try_into()
            .ok()?;
        Some(Ipv6Addr::from(s))
    }

    /// The raw segment list bytes (`(Last Entry + 1) * 16` bytes, clamped to header and buffer).
    #[inline]
    pub fn segments_bytes(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        if b.len() < FIXED_LEN {
            return &[];
        }
        let end = self.tlv_offset().min(self.header_len()).min(b.len());
        &b[FIELD_SEGMENT_LIST..end]
    }

    /// Iterator over the segment list in list order (`Segment List[0]` first), clamped.
    #[inline]
    pub fn segments(&self) -> impl Iterator<Item = Ipv6Addr> + '_ {
        self.segments_bytes().chunks_exact(SEGMENT_LEN).map(|c| {
            let mut o = [0u8; 16];
            o.copy_from_slice(c);
            Ipv6Addr::from(o)
        })
    }

    /// The TLV area bytes: from the end of the segment list to the end of the header (clamped).
    #[inline]
    pub fn tlv_bytes(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        if b.len() < FIXED_LEN {
            return &[];
        }
        let end = self.header_len().min(b.len());
        b.get(self.tlv_offset()..end).unwrap_or(&[])
    }

    /// Iterator over the TLVs. Yields `Err` once (then stops) on a malformed TLV.
    #[inline]
    pub fn tlvs(&self) -> TlvIter<'_> {
        TlvIter::new(self.tlv_bytes())
    }

    /// The HMAC TLV of the header, if there is one, without allocating (RFC 8754 2.1.2).
    ///
    /// Errors: a TLV overruns the header ([`Error::TlvOverrun`]), the HMAC TLV is shorter than
    /// its fixed fields ([`Error::BadTlvLength`]), or there is more than one HMAC TLV
    /// ([`Error::Malformed`]: which one would a verifier trust?). The HMAC field's length is not
    /// judged here (the verifier knows what its key's algorithm produces). Never panics.
    pub fn hmac_tlv(&self) -> Result<Option<HmacTlv<'_>>> {
        let mut it = self.tlvs();
        let mut found = None;
        loop {
            let at = it.offset();
            match it.next() {
                None => return Ok(found),
                Some(Err(e)) => return Err(e),
                Some(Ok(Tlv::Hmac {
                    d_flag,
                    key_id,
                    hmac,
                })) => {
                    if found.is_some() {
                        return Err(Error::Malformed("more than one HMAC TLV"));
                    }
                    // A TLV was found, so the buffer holds the fixed part.
                    found = Some(HmacTlv {
                        offset: self.tlv_offset() + at,
                        d_flag,
                        key_id,
                        hmac,
                    });
                }
                Some(Ok(_)) => {}
            }
        }
    }

    /// The whole header as bytes (`header_len()`, clamped to the buffer).
    #[inline]
    pub fn header_bytes(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        if b.len() < FIXED_LEN {
            return b;
        }
        &b[..self.header_len().min(b.len())]
    }

    /// What follows the header (clamped).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        if b.len() < FIXED_LEN {
            return &[];
        }
        b.get(self.header_len()..).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Srh<T> {
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

    /// Set Routing Type.
    #[inline]
    pub fn set_routing_type(&mut self, v: u8) {
        self.buffer.as_mut()[FIELD_ROUTING_TYPE] = v;
    }

    /// Set Segments Left.
    #[inline]
    pub fn set_segments_left(&mut self, v: u8) {
        self.buffer.as_mut()[FIELD_SEGMENTS_LEFT] = v;
    }

    /// Set Last Entry.
    #[inline]
    pub fn set_last_entry(&mut self, v: u8) {
        self.buffer.as_mut()[FIELD_LAST_ENTRY] = v;
    }

    /// Set Flags.
    #[inline]
    pub fn set_flags(&mut self, v: u8) {
        self.buffer.as_mut()[FIELD_FLAGS] = v;
    }

    /// Set Tag.
    #[inline]
    pub fn set_tag(&mut self, v: u16) {
        self.buffer.as_mut()[FIELD_TAG..FIELD_TAG + 2].copy_from_slice(&v.to_be_bytes());
    }

    /// Set `Segment List[i]`. Panics if the segment lies outside the buffer.
    #[inline]
    pub fn set_segment(&mut self, i: usize, a: Ipv6Addr) {
        let at = FIELD_SEGMENT_LIST + i * SEGMENT_LEN;
        self.buffer.as_mut()[at..at + SEGMENT_LEN].copy_from_slice(&a.octets());
    }

    /// Mutable TLV area (clamped), e.g. to fill an HMAC in place.
    #[inline]
    pub fn tlv_bytes_mut(&mut self) -> &mut [u8] {
        let (start, end) = {
            let b = self.buffer.as_ref();
            if b.len() < FIXED_LEN {
                return &mut [];
            }
            (self.tlv_offset(), self.header_len().min(b.len()))
        };
        self.buffer.as_mut().get_mut(start..end).unwrap_or(&mut [])
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Srh<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// One TLV of the SRH TLV area, borrowed from the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tlv<'a> {
    /// Pad1: a single zero octet.
    Pad1,
    /// PadN with `len` octets of padding data (after Type and Length).
    PadN {
        /// Length field.
        len: u8,
    },
    /// HMAC TLV (RFC 8754 2.1.2).
    Hmac {
        /// The D flag: when set, the Destination Address is not included in the HMAC.
        d_flag: bool,
        /// HMAC Key ID.
        key_id: u32,
        /// The HMAC bytes (Length - 6 octets; RFC: multiple of 8, at most 32; not enforced
        /// here, the HMAC verifier decides).
        hmac: &'a [u8],
    },
    /// Any other TLV. RFC 8754 2.1: the caller decides what to do with unknown types (the
    /// high-order bits of the type are for the processing rules, this crate just reports them).
    Unknown {
        /// Type.
        tlv_type: u8,
        /// Data (Length octets).
        data: &'a [u8],
    },
}

impl Tlv<'_> {
    /// Octets this TLV occupies on the wire.
    pub fn wire_len(&self) -> usize {
        match self {
            Tlv::Pad1 => 1,
            Tlv::PadN { len } => 2 + usize::from(*len),
            Tlv::Hmac { hmac, .. } => 2 + HMAC_FIXED_LEN + hmac.len(),
            Tlv::Unknown { data, .. } => 2 + data.len(),
        }
    }
}

/// The HMAC TLV of an SRH, borrowed from the packet ([`Srh::hmac_tlv`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HmacTlv<'a> {
    /// Offset of the TLV's Type octet from the start of the SRH (an ICMPv6 Parameter Problem
    /// about the HMAC points here, RFC 8754 2.1.2.1).
    pub offset: usize,
    /// The D flag ([`HMAC_D_FLAG`]).
    pub d_flag: bool,
    /// HMAC Key ID.
    pub key_id: u32,
    /// The HMAC field (Length - 6 octets).
    pub hmac: &'a [u8],
}

/// The fixed part of the text an SRH's HMAC is computed over (RFC 8754 2.1.2.1): the IPv6
/// Source Address, Last Entry, Flags and HMAC Key ID. The text continues with every address
/// of the segment list ([`Srh::segments_bytes`]); feed both to the MAC, nothing is copied.
#[inline]
pub fn hmac_text_prefix(
    source: &[u8; 16],
    last_entry: u8,
    flags: u8,
    key_id: u32,
) -> [u8; HMAC_TEXT_PREFIX_LEN] {
    let mut t = [0u8; HMAC_TEXT_PREFIX_LEN];
    t[..16].copy_from_slice(source);
    t[16] = last_entry;
    t[17] = flags;
    t[18..].copy_from_slice(&key_id.to_be_bytes());
    t
}

/// No-alloc HMAC TLV emitter: writes Type 5, Length 38, the D flag, Key ID and `hmac` into
/// `buf`. Returns the octets written ([`HMAC_TLV_LEN`]), or 0 (nothing written) if `buf` is
/// too small. The caller adds [`HMAC_TLV_LEN`] / 8 to the SRH's Hdr Ext Len.
#[inline]
pub fn emit_hmac_tlv(
    buf: &mut [u8],
    d_flag: bool,
    key_id: u32,
    hmac: &[u8; HMAC_FIELD_LEN],
) -> usize {
    let Some(buf) = buf.get_mut(..HMAC_TLV_LEN) else {
        return 0;
    };
    buf[0] = TLV_HMAC;
    buf[1] = (HMAC_FIXED_LEN + HMAC_FIELD_LEN) as u8;
    buf[2] = if d_flag { HMAC_D_FLAG } else { 0 };
    buf[3] = 0;
    buf[4..8].copy_from_slice(&key_id.to_be_bytes());
    buf[8..].copy_from_slice(hmac);
    HMAC_TLV_LEN
}

/// Iterator over the TLVs of a byte area. Never panics; yields one `Err` on a malformed TLV
/// ([`Error::TlvOverrun`] or [`Error::BadTlvLength`]) and then ends.
#[derive(Debug, Clone)]
pub struct TlvIter<'a> {
    data: &'a [u8],
    pos: usize,
    failed: bool,
}

impl<'a> TlvIter<'a> {
    /// Iterate over `data` (the TLV area only).
    pub fn new(data: &'a [u8]) -> Self {
        TlvIter {
            data,
            pos: 0,
            failed: false,
        }
    }

    /// Offset of the next TLV inside the area (useful to compute ICMP pointers on error).
    pub fn offset(&self) -> usize {
        self.pos
    }

    fn fail(&mut self, e: Error) -> Option<Result<Tlv<'a>>> {
        self.failed = true;
        Some(Err(e))
    }
}

impl<'a> Iterator for TlvIter<'a> {
    type Item = Result<Tlv<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let rest = self.data.get(self.pos..)?;
        let (&t, rest) = rest.split_first()?;
        if t == TLV_PAD1 {
            self.pos += 1;
            return Some(Ok(Tlv::Pad1));
        }
        let Some((&len, rest)) = rest.split_first() else {
            return self.fail(Error::TlvOverrun);
        };
        let Some(body) = rest.get(..usize::from(len)) else {
            return self.fail(Error::TlvOverrun);
        };
        let tlv = match t {
            TLV_PADN => Tlv::PadN { len },
            TLV_HMAC => {
                let (Some(&d), Some(kid), Some(hmac)) =
                    (body.first(), body.get(2..6), body.get(HMAC_FIXED_LEN..))
                else {
                    return self.fail(Error::BadTlvLength);
                };
                Tlv::Hmac {
                    d_flag: d & HMAC_D_FLAG != 0,
                    key_id: u32::from_be_bytes([kid[0], kid[1], kid[2], kid[3]]),
                    hmac,
                }
            }
            _ => Tlv::Unknown {
                tlv_type: t,
                data: body,
            },
        };
        self.pos += 2 + usize::from(len);
        Some(Ok(tlv))
    }
}

/// Owned TLV, for [`SrhRepr`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TlvRepr {
    /// Pad1.
    Pad1,
    /// PadN with `len` zero octets.
    PadN {
        /// Length field (padding octets after Type and Length).
        len: u8,
    },
    /// HMAC.
    Hmac {
        /// D flag.
        d_flag: bool,
        /// Key ID.
        key_id: u32,
        /// HMAC bytes (at most 249).
        hmac: Vec<u8>,
    },
    /// Other TLV (type must not be 0, 4 or 5).
    Unknown {
        /// Type.
        tlv_type: u8,
        /// Data (at most 255 bytes).
        data: Vec<u8>,
    },
}

impl TlvRepr {
    /// Owned copy of a borrowed TLV.
    pub fn from_tlv(t: &Tlv<'_>) -> TlvRepr {
        match *t {
            Tlv::Pad1 => TlvRepr::Pad1,
            Tlv::PadN { len } => TlvRepr::PadN { len },
            Tlv::Hmac {
                d_flag,
                key_id,
                hmac,
            } => TlvRepr::Hmac {
                d_flag,
                key_id,
                hmac: hmac.to_vec(),
            },
            Tlv::Unknown { tlv_type, data } => TlvRepr::Unknown {
                tlv_type,
                data: data.to_vec(),
            },
        }
    }

    /// Octets on the wire.
    pub fn wire_len(&self) -> usize {
        match self {
            TlvRepr::Pad1 => 1,
            TlvRepr::PadN { len } => 2 + usize::from(*len),
            TlvRepr::Hmac { hmac, .. } => 2 + HMAC_FIXED_LEN + hmac.len(),
            TlvRepr::Unknown { data, .. } => 2 + data.len(),
        }
    }

    /// Write into `buf` (exactly `wire_len()` bytes).
    fn emit(&self, buf: &mut [u8]) -> Result<()> {
        let buf = buf
            .get_mut(..self.wire_len())
            .ok_or(Error::BufferTooSmall)?;
        match self {
            TlvRepr::Pad1 => buf[0] = TLV_PAD1,
            TlvRepr::PadN { len } => {
                buf[0] = TLV_PADN;
                buf[1] = *len;
                buf[2..].fill(0);
            }
            TlvRepr::Hmac {
                d_flag,
                key_id,
                hmac,
            } => {
                let len = u8::try_from(HMAC_FIXED_LEN + hmac.len())
                    .map_err(|_| Error::Malformed("HMAC TLV longer than 255 octets"))?;
                buf[0] = TLV_HMAC;
                buf[1] = len;
                buf[2] = if *d_flag { HMAC_D_FLAG } else { 0 };
                buf[3] = 0;
                buf[4..8].copy_from_slice(&key_id.to_be_bytes());
                buf[8..].copy_from_slice(hmac);
            }
            TlvRepr::Unknown { tlv_type, data } => {
                let len = u8::try_from(data.len())
                    .map_err(|_| Error::Malformed("TLV longer than 255 octets"))?;
                buf[0] = *tlv_type;
                buf[1] = len;
                buf[2..].copy_from_slice(data);
            }
        }
        Ok(())
    }
}

/// Parsed Segment Routing Header (control paths and tests; allocates).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SrhRepr {
    /// Next Header.
    pub next_header: IpProtocol,
    /// Segments Left.
    pub segments_left: u8,
    /// Last Entry. Written verbatim by [`SrhRepr::emit`]; normally `segments.len() - 1`.
    pub last_entry: u8,
    /// Flags.
    pub flags: u8,
    /// Tag.
    pub tag: u16,
    /// The segment list in wire order: `segments[0]` is the **last** segment of the path.
    pub segments: Vec<Ipv6Addr>,
    /// TLVs in wire order (including any padding TLVs).
    pub tlvs: Vec<TlvRepr>,
}

impl SrhRepr {
    /// Build the SRH for travelling `path` in order (first hop first): reverses it into
    /// wire order and sets Segments Left to the first hop (`path.len() - 1`).
    /// Errors if `path` is empty or longer than [`MAX_SEGMENTS`].
    pub fn from_path(next_header: IpProtocol, path: &[Ipv6Addr]) -> Result<SrhRepr> {
        if path.is_empty() || path.len() > MAX_SEGMENTS {
            return Err(Error::Malformed("segment list must have 1 to 127 segments"));
        }
        let n = path.len() as u8;
        Ok(SrhRepr {
            next_header,
            segments_left: n - 1,
            last_entry: n - 1,
            flags: 0,
            tag: 0,
            segments: path.iter().rev().copied().collect(),
            tlvs: Vec::new(),
        })
    }

    /// Parse a view: validates the header and all TLVs.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(srh: &Srh<&T>) -> Result<SrhRepr> {
        srh.check_len()?;
        let tlvs = srh
            .tlvs()
            .map(|t| t.map(|t| TlvRepr::from_tlv(&t)))
            .collect::<Result<Vec<_>>>()?;
        Ok(SrhRepr {
            next_header: srh.next_header(),
            segments_left: srh.segments_left(),
            last_entry: srh.last_entry(),
            flags: srh.flags(),
            tag: srh.tag(),
            segments: srh.segments().collect(),
            tlvs,
        })
    }

    fn unpadded_len(&self) -> usize {
        FIXED_LEN
            + self.segments.len() * SEGMENT_LEN
            + self.tlvs.iter().map(TlvRepr::wire_len).sum::<usize>()
    }

    /// Octets of padding [`SrhRepr::emit`] appends (as Pad1 or PadN) to reach a multiple of 8.
    pub fn padding_len(&self) -> usize {
        (8 - self.unpadded_len() % 8) % 8
    }

    /// The TLV that `emit` appends as padding, if any.
    pub fn padding_tlv(&self) -> Option<TlvRepr> {
        match self.padding_len() {
            0 => None,
            1 => Some(TlvRepr::Pad1),
            n => Some(TlvRepr::PadN { len: (n - 2) as u8 }),
        }
    }

    /// Header length on the wire, padded to a multiple of 8 octets.
    pub fn buffer_len(&self) -> usize {
        self.unpadded_len() + self.padding_len()
    }

    /// Write the header into `srh`, appending padding if the TLVs do not end on an 8-octet
    /// boundary. Errors if the buffer is too small, the header would exceed [`MAX_LEN`], or a
    /// TLV is too long.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, srh: &mut Srh<T>) -> Result<()> {
        let len = self.buffer_len();
        if len > MAX_LEN {
            return Err(Error::Malformed("SRH longer than 2048 octets"));
        }
        let buf = srh
            .buffer
            .as_mut()
            .get_mut(..len)
            .ok_or(Error::BufferTooSmall)?;
        buf[FIELD_NEXT_HEADER] = self.next_header.0;
        buf[FIELD_HDR_EXT_LEN] = (len / 8 - 1) as u8;
        buf[FIELD_ROUTING_TYPE] = ROUTING_TYPE;
        buf[FIELD_SEGMENTS_LEFT] = self.segments_left;
        buf[FIELD_LAST_ENTRY] = self.last_entry;
        buf[FIELD_FLAGS] = self.flags;
        buf[FIELD_TAG..FIELD_TAG + 2].copy_from_slice(&self.tag.to_be_bytes());
        let mut at = FIELD_SEGMENT_LIST;
        for s in &self.segments {
            buf[at..at + SEGMENT_LEN].copy_from_slice(&s.octets());
            at += SEGMENT_LEN;
        }
        for t in self.tlvs.iter().chain(self.padding_tlv().as_ref()) {
            t.emit(&mut buf[at..])?;
            at += t.wire_len();
        }
        debug_assert_eq!(at, len);
        Ok(())
    }
}

/// No-alloc SRH emitter for the fast path (and for precomputing encapsulation rewrites).
///
/// Writes an SRH without TLVs: Routing Type 4, Flags 0, `Last Entry = segments.len() - 1`,
/// `Hdr Ext Len = 2 * segments.len()`. `segments` is in **wire order**: `segments[0]` is
/// `Segment List[0]`, the **last** segment of the path (reverse a path before calling).
///
/// Returns the number of bytes written (`8 + 16 * segments.len()`), or 0 (nothing written) if
/// `segments` is empty, longer than [`MAX_SEGMENTS`], or `buf` is too small.
#[inline]
pub fn emit_srh(
    buf: &mut [u8],
    next_header: IpProtocol,
    segments_left: u8,
    tag: u16,
    segments: &[Ipv6Addr],
) -> usize {
    let n = segments.len();
    if n == 0 || n > MAX_SEGMENTS {
        return 0;
    }
    let len = FIXED_LEN + n * SEGMENT_LEN;
    let Some(buf) = buf.get_mut(..len) else {
        return 0;
    };
    let (fixed, list) = buf.split_at_mut(FIXED_LEN);
    let tag = tag.to_be_bytes();
    fixed.copy_from_slice(&[
        next_header.0,
        (2 * n) as u8,
        ROUTING_TYPE,
        segments_left,
        (n - 1) as u8,
        0,
        tag[0],
        tag[1],
    ]);
    for (dst, s) in list.chunks_exact_mut(SEGMENT_LEN).zip(segments) {
        dst.copy_from_slice(&s.octets());
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tlv_bounds() {
        // One segment, then the given TLV area (padded to whole octets of 8 by the caller).
        let srh_with = |tlvs: &[u8]| {
            let mut v = vec![17, (2 + tlvs.len() / 8) as u8, ROUTING_TYPE, 0, 0, 0, 0, 0];
            v.extend_from_slice(&[0u8; 16]);
            v.extend_from_slice(tlvs);
            v
        };
        let ok = srh_with(&[0, 0, 4, 2, 0xaa, 0xbb, 0, 0]);
        assert_eq!(
            Srh::new_checked(&ok[..]).map(|s| s.check_tlv_bounds()),
            Ok(Ok(()))
        );
        // PadN whose length runs past the header.
        let over = srh_with(&[4, 7, 0, 0, 0, 0, 0, 0]);
        let s = Srh::new_checked(&over[..]).expect("structure is valid");
        assert_eq!(s.check_tlv_bounds(), Err(Error::TlvOverrun));
        // A type octet as the very last octet: its Length is missing.
        let no_len = srh_with(&[0, 0, 0, 0, 0, 0, 0, 4]);
        let s = Srh::new_checked(&no_len[..]).expect("structure is valid");
        assert_eq!(s.check_tlv_bounds(), Err(Error::TlvOverrun));
        // A short HMAC TLV fits (bounds only), though check_tlvs rejects it.
        let short_hmac = srh_with(&[TLV_HMAC, 2, 0, 0, 0, 0, 0, 0]);
        let s = Srh::new_checked(&short_hmac[..]).expect("structure is valid");
        assert_eq!(s.check_tlv_bounds(), Ok(()));
        assert_eq!(s.check_tlvs(), Err(Error::BadTlvLength));
        // No TLVs at all.
        let bare = srh_with(&[]);
        assert_eq!(
            Srh::new_checked(&bare[..]).map(|s| s.check_tlv_bounds()),
            Ok(Ok(()))
        );
    }

    fn a(s: &str) -> Ipv6Addr {
        s.parse().expect("addr")
    }

    /// SRH with 3 segments, a PadN TLV (len 0), and an HMAC TLV (D=1, key 0x01020304,
    /// 32-byte HMAC), 2 more octets of PadN to align: 8 + 48 + 2 + 40 + 6 = 104 octets.
    fn golden() -> Vec<u8> {
        let mut v = vec![
            17, // next header UDP
            12, // hdr ext len: (104 / 8) - 1
            4,  // routing type
            1,  // segments left
            2,  // last entry
            0,  // flags
            0xbe, 0xef, // tag
        ];
        v.extend_from_slice(&a("2001:db8::3").octets());
        v.extend_from_slice(&a("2001:db8::2").octets());
        v.extend_from_slice(&a("2001:db8::1").octets());
        v.extend_from_slice(&[4, 0]); // PadN len 0
        v.extend_from_slice(&[5, 38, 0x80, 0, 1, 2, 3, 4]); // HMAC hdr
        v.extend((0u8..32).map(|i| i ^ 0x5a)); // HMAC
        v.extend_from_slice(&[4, 4, 0, 0, 0, 0]); // PadN len 4 (emit's padding)
        assert_eq!(v.len(), 104);
        v
    }

    fn golden_repr() -> SrhRepr {
        SrhRepr {
            next_header: IpProtocol::UDP,
            segments_left: 1,
            last_entry: 2,
            flags: 0,
            tag: 0xbeef,
            segments: vec![a("2001:db8::3"), a("2001:db8::2"), a("2001:db8::1")],
            tlvs: vec![
                TlvRepr::PadN { len: 0 },
                TlvRepr::Hmac {
                    d_flag: true,
                    key_id: 0x01020304,
                    hmac: (0u8..32).map(|i| i ^ 0x5a).collect(),
                },
            ],
        }
    }

    #[test]
    fn golden_view() {
        let bytes = golden();
        let s = Srh::new_checked(&bytes[..]).expect("valid");
        assert_eq!(s.next_header(), IpProtocol::UDP);
        assert_eq!(s.header_len(), 104);
        assert_eq!(
            (s.routing_type(), s.segments_left(), s.last_entry()),
            (4, 1, 2)
        );
        assert_eq!((s.flags(), s.tag()), (0, 0xbeef));
        assert_eq!(s.segment(0), a("2001:db8::3"));
        assert_eq!(s.segment(2), a("2001:db8::1"));
        assert_eq!(s.segment_checked(3), None);
        assert_eq!(s.segments_bytes().len(), 48);
        assert!(s.segments_left_in_range());
        s.check_tlvs().expect("tlvs ok");
        let tlvs: Vec<_> = s.tlvs().collect::<Result<_>>().expect("tlvs");
        assert_eq!(tlvs.len(), 3);
        assert_eq!(tlvs[0], Tlv::PadN { len: 0 });
        match tlvs[1] {
            Tlv::Hmac {
                d_flag,
                key_id,
                hmac,
            } => {
                assert!(d_flag);
                assert_eq!(key_id, 0x01020304);
                assert_eq!(hmac.len(), 32);
                assert_eq!(hmac[0], 0x5a);
            }
            other => panic!("not hmac: {other:?}"),
        }
        assert_eq!(tlvs[2], Tlv::PadN { len: 4 });
        assert!(s.payload().is_empty());
    }

    #[test]
    fn golden_repr_roundtrip() {
        let bytes = golden();
        let r = golden_repr();
        assert_eq!(r.buffer_len(), 104);
        assert_eq!(r.padding_tlv(), Some(TlvRepr::PadN { len: 4 }));
        let mut out = vec![0xffu8; r.buffer_len()];
        r.emit(&mut Srh::new_unchecked(&mut out[..])).expect("emit");
        assert_eq!(out, bytes);
        let mut padded = r.clone();
        padded.tlvs.push(TlvRepr::PadN { len: 4 });
        assert_eq!(
            SrhRepr::parse(&Srh::new_checked(&bytes[..]).expect("v")),
            Ok(padded)
        );
    }

    #[test]
    fn etherparse_sees_same_routing_header() {
        // IPv6 + our SRH + 4 bytes payload; etherparse treats the SRH as a raw routing header.
        let srh = golden();
        let mut pkt = vec![0u8; 40];
        crate::ipv6::emit_header(
            &mut pkt,
            a("2001:db8::a"),
            a("2001:db8::2"),
            IpProtocol::ROUTING,
            (srh.len() + 8) as u16,
            64,
        );
        pkt.extend_from_slice(&srh);
        pkt.extend_from_slice(&[0, 1, 0, 2, 0, 8, 0, 0]); // UDP header, checksum 0
        let h = etherparse::PacketHeaders::from_ip_slice(&pkt).expect("etherparse");
        let net = h.net.expect("net");
        let etherparse::NetHeaders::Ipv6(_, exts) = net else {
            panic!("not v6")
        };
        let rh = exts.routing.expect("routing");
        assert_eq!(rh.routing.header_len(), 104);
        let raw = rh.routing.to_bytes();
        assert_eq!(&raw[..], &srh[..]);
        assert_eq!(rh.routing.next_header.0, 17);
    }

    #[test]
    fn errors() {
        let bytes = golden();
        assert_eq!(Srh::new_checked(&bytes[..7]).err(), Some(Error::Truncated));
        assert_eq!(
            Srh::new_checked(&bytes[..103]).err(),
            Some(Error::HdrExtLenBeyondPacket)
        );
        let mut b = bytes.clone();
        b[FIELD_ROUTING_TYPE] = 0;
        assert_eq!(
            Srh::new_checked(&b[..]).err(),
            Some(Error::NotSegmentRouting)
        );
        let mut b = bytes.clone();
        b[FIELD_LAST_ENTRY] = 6; // 7 segments = 112 > 96
        assert_eq!(
            Srh::new_checked(&b[..]).err(),
            Some(Error::LastEntryBeyondHeader)
        );
        b[FIELD_LAST_ENTRY] = 5; // 6 segments = 96: valid, no TLV area left
        let s = Srh::new_checked(&b[..]).expect("valid");
        assert_eq!(s.tlvs().count(), 0);
        // Segments Left beyond Last Entry + 1: not a parse error.
        let mut b = bytes.clone();
        b[FIELD_SEGMENTS_LEFT] = 4;
        let s = Srh::new_checked(&b[..]).expect("valid");
        assert!(!s.segments_left_in_range());
        // TLV overrun: HMAC length claims more than is there.
        let mut b = bytes.clone();
        b[59] = 200;
        let s = Srh::new_checked(&b[..]).expect("structure valid");
        assert_eq!(s.check_tlvs(), Err(Error::TlvOverrun));
        assert_eq!(SrhRepr::parse(&s), Err(Error::TlvOverrun));
        // HMAC TLV too short for its fixed fields.
        let mut b = bytes.clone();
        b[58..62].copy_from_slice(&[5, 2, 0, 0]);
        let s = Srh::new_checked(&b[..]).expect("structure valid");
        let mut it = s.tlvs();
        assert_eq!(it.next(), Some(Ok(Tlv::PadN { len: 0 })));
        assert_eq!(it.next(), Some(Err(Error::BadTlvLength)));
        assert_eq!(it.next(), None);
        // Type with no length byte at the end of the area.
        assert_eq!(
            TlvIter::new(&[0, 7]).collect::<Vec<_>>(),
            vec![Ok(Tlv::Pad1), Err(Error::TlvOverrun)]
        );
    }

    #[test]
    fn setters() {
        let mut b = golden();
        let mut s = Srh::new_unchecked(&mut b[..]);
        s.set_segments_left(0);
        s.set_segment(1, a("fc00::1"));
        s.set_tag(7);
        s.set_flags(0x80);
        s.set_next_header(IpProtocol::IPV6);
        assert_eq!(s.segments_left(), 0);
        assert_eq!(s.segment(1), a("fc00::1"));
        assert_eq!(
            (s.tag(), s.flags(), s.next_header()),
            (7, 0x80, IpProtocol::IPV6)
        );
        s.tlv_bytes_mut()[0] = 0; // PadN -> Pad1 + Pad1 (len 0 byte reads as Pad1)
        assert_eq!(
            s.tlvs().take(2).collect::<Vec<_>>(),
            vec![Ok(Tlv::Pad1), Ok(Tlv::Pad1)]
        );
    }

    #[test]
    fn fast_emitter_matches_repr() {
        let path = [a("fc00:1::1"), a("fc00:2::1"), a("fc00:3::100")];
        let r = SrhRepr::from_path(IpProtocol::IPV6, &path).expect("path");
        assert_eq!(r.segments[0], path[2]);
        assert_eq!(r.segments_left, 2);
        let mut via_repr = vec![0u8; r.buffer_len()];
        r.emit(&mut Srh::new_unchecked(&mut via_repr[..]))
            .expect("emit");
        let mut fast = [0u8; 64];
        let wire: Vec<_> = path.iter().rev().copied().collect();
        let n = emit_srh(&mut fast, IpProtocol::IPV6, 2, 0, &wire);
        assert_eq!(n, 56);
        assert_eq!(&fast[..n], &via_repr[..]);
        let s = Srh::new_checked(&fast[..n]).expect("valid");
        // The active segment is Segment List[Segments Left] = first hop.
        assert_eq!(s.segment(usize::from(s.segments_left())), path[0]);
        assert_eq!(emit_srh(&mut fast[..55], IpProtocol::IPV6, 2, 0, &wire), 0);
        assert_eq!(emit_srh(&mut fast, IpProtocol::IPV6, 0, 0, &[]), 0);
        assert!(SrhRepr::from_path(IpProtocol::IPV6, &[]).is_err());
    }

    #[test]
    fn hmac_tlv_golden() {
        let bytes = golden();
        let s = Srh::new_checked(&bytes[..]).expect("valid");
        let h = s.hmac_tlv().expect("well formed").expect("present");
        // After the fixed part (8), 3 segments (48) and a PadN of 2 octets.
        assert_eq!(h.offset, 58);
        assert!(h.d_flag);
        assert_eq!(h.key_id, 0x01020304);
        assert_eq!(h.hmac.len(), HMAC_FIELD_LEN);
        assert_eq!(bytes[h.offset], TLV_HMAC);
        // The fast emitter writes exactly what the Repr writes.
        let mut tlv = [0u8; HMAC_TLV_LEN];
        let mac: [u8; 32] = core::array::from_fn(|i| i as u8 ^ 0x5a);
        assert_eq!(emit_hmac_tlv(&mut tlv, true, 0x01020304, &mac), 40);
        assert_eq!(&tlv[..], &bytes[58..98]);
        assert_eq!(emit_hmac_tlv(&mut tlv[..39], true, 1, &mac), 0);
        // Text prefix: source, Last Entry, Flags, Key ID.
        let src = a("2001:db8::a").octets();
        let t = hmac_text_prefix(&src, 2, 0x08, 0x01020304);
        assert_eq!(&t[..16], &src);
        assert_eq!(&t[16..], &[2, 0x08, 1, 2, 3, 4]);
    }

    #[test]
    fn hmac_tlv_errors() {
        let bytes = golden();
        // No TLVs: none found.
        let mut bare = bytes[..56].to_vec();
        bare[FIELD_HDR_EXT_LEN] = 6;
        let s = Srh::new_checked(&bare[..]).expect("valid");
        assert_eq!(s.hmac_tlv(), Ok(None));
        // Two HMAC TLVs.
        let mut two = bytes[..56].to_vec();
        let mac = [7u8; 32];
        let mut tlv = [0u8; HMAC_TLV_LEN];
        emit_hmac_tlv(&mut tlv, false, 9, &mac);
        two.extend_from_slice(&tlv);
        two.extend_from_slice(&tlv);
        two[FIELD_HDR_EXT_LEN] = (two.len() / 8 - 1) as u8;
        let s = Srh::new_checked(&two[..]).expect("valid");
        assert!(matches!(s.hmac_tlv(), Err(Error::Malformed(_))));
        // A short HMAC TLV and an overrun.
        let mut short = bytes.clone();
        short[58..62].copy_from_slice(&[5, 2, 0, 0]);
        let s = Srh::new_checked(&short[..]).expect("valid");
        assert_eq!(s.hmac_tlv(), Err(Error::BadTlvLength));
        let mut over = bytes.clone();
        over[59] = 200;
        let s = Srh::new_checked(&over[..]).expect("valid");
        assert_eq!(s.hmac_tlv(), Err(Error::TlvOverrun));
    }

    fn arb_tlv() -> impl Strategy<Value = TlvRepr> {
        prop_oneof![
            Just(TlvRepr::Pad1),
            any::<u8>().prop_map(|len| TlvRepr::PadN { len }),
            (
                any::<bool>(),
                any::<u32>(),
                proptest::collection::vec(any::<u8>(), 0..=32)
            )
                .prop_map(|(d_flag, key_id, hmac)| TlvRepr::Hmac {
                    d_flag,
                    key_id,
                    hmac
                }),
            (
                any::<u8>().prop_filter("known", |t| ![0, 4, 5].contains(t)),
                proptest::collection::vec(any::<u8>(), 0..40)
            )
                .prop_map(|(tlv_type, data)| TlvRepr::Unknown { tlv_type, data }),
        ]
    }

    fn arb_repr() -> impl Strategy<Value = SrhRepr> {
        (
            any::<u8>(),
            any::<u8>(),
            any::<u8>(),
            any::<u16>(),
            proptest::collection::vec(any::<u128>().prop_map(Ipv6Addr::from), 1..20),
            proptest::collection::vec(arb_tlv(), 0..5),
        )
            .prop_map(|(nh, sl, flags, tag, segments, tlvs)| SrhRepr {
                next_header: IpProtocol(nh),
                segments_left: sl,
                last_entry: (segments.len() - 1) as u8,
                flags,
                tag,
                segments,
                tlvs,
            })
    }

    fn exercise<T: AsRef<[u8]>>(s: &Srh<T>) {
        let _ = (
            s.next_header(),
            s.hdr_ext_len(),
            s.header_len(),
            s.routing_type(),
        );
        let _ = (s.segments_left(), s.last_entry(), s.flags(), s.tag());
        let _ = (s.segments_left_in_range(), s.tlv_offset(), s.num_segments());
        let _ = (
            s.segments_bytes(),
            s.tlv_bytes(),
            s.header_bytes(),
            s.payload(),
        );
        let _ = s.segments().count();
        let _ = s.tlvs().count();
        let _ = s.check_tlvs();
        let _ = s.hmac_tlv();
        for i in 0..300 {
            let _ = s.segment_checked(i);
        }
    }

    proptest! {
        #[test]
        fn roundtrip(r in arb_repr()) {
            let mut buf = vec![0u8; r.buffer_len()];
            r.emit(&mut Srh::new_unchecked(&mut buf[..])).expect("emit");
            prop_assert_eq!(buf.len() % 8, 0);
            let parsed = SrhRepr::parse(&Srh::new_checked(&buf[..]).expect("valid"));
            let mut expect = r.clone();
            expect.tlvs.extend(r.padding_tlv());
            prop_assert_eq!(parsed, Ok(expect));
        }

        #[test]
        fn hmac_tlv_roundtrip(r in arb_repr()) {
            // Whatever else the header holds, the HMAC TLV found is the one emitted (or the
            // parse reports why there is none to trust).
            let mut buf = vec![0u8; r.buffer_len()];
            r.emit(&mut Srh::new_unchecked(&mut buf[..])).expect("emit");
            let s = Srh::new_checked(&buf[..]).expect("valid");
            let hmacs: Vec<_> = r.tlvs.iter().filter_map(|t| match t {
                TlvRepr::Hmac { d_flag, key_id, hmac } => Some((*d_flag, *key_id, hmac.clone())),
                _ => None,
            }).collect();
            match (s.hmac_tlv(), hmacs.len()) {
                (Ok(None), 0) => {}
                (Ok(Some(h)), 1) => {
                    prop_assert_eq!((h.d_flag, h.key_id, h.hmac.to_vec()), hmacs[0].clone());
                    prop_assert_eq!(buf[h.offset], TLV_HMAC);
                }
                (Err(Error::Malformed(_)), n) => prop_assert!(n > 1),
                (other, n) => prop_assert!(false, "{:?} with {} HMAC TLVs", other, n),
            }
        }

        #[test]
        fn hmac_tlv_emit_parse(d_flag in any::<bool>(), key_id in any::<u32>(), mac in any::<[u8; 32]>()) {
            let mut tlv = [0u8; HMAC_TLV_LEN];
            prop_assert_eq!(emit_hmac_tlv(&mut tlv, d_flag, key_id, &mac), HMAC_TLV_LEN);
            let parsed: Vec<_> = TlvIter::new(&tlv).collect();
            prop_assert_eq!(parsed, vec![Ok(Tlv::Hmac { d_flag, key_id, hmac: &mac[..] })]);
        }

        #[test]
        fn no_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let u = Srh::new_unchecked(&bytes[..]);
            let _ = (u.segments_bytes(), u.tlv_bytes(), u.header_bytes(), u.payload());
            let _ = u.segments().count();
            let _ = u.tlvs().count();
            let _ = u.segment_checked(0);
            let _ = u.hmac_tlv();
            let _ = SrhRepr::parse(&u);
            if let Ok(s) = Srh::new_checked(&bytes[..]) {
                exercise(&s);
                for i in 0..=usize::from(s.last_entry()) {
                    let _ = s.segment(i);
                }
            }
        }

        #[test]
        fn no_panic_valid_prefix(r in arb_repr(), cut in any::<proptest::sample::Index>(), flip in any::<(usize, u8)>()) {
            // Mutations of valid headers reach deeper code than pure random bytes.
            let mut buf = vec![0u8; r.buffer_len()];
            r.emit(&mut Srh::new_unchecked(&mut buf[..])).expect("emit");
            let i = flip.0 % buf.len();
            buf[i] ^= flip.1;
            let buf = &buf[..cut.index(buf.len() + 1)];
            if let Ok(s) = Srh::new_checked(buf) {
                exercise(&s);
                let _ = SrhRepr::parse(&s);
            }
        }
    }
}
