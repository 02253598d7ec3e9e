//! The `virtio_net_hdr` that prefixes every frame of an AF_PACKET socket with
//! `PACKET_VNET_HDR` (and of a TAP with `IFF_VNET_HDR`), and completion of the partial
//! checksum it can announce.
//!
//! ```text
//!  0               1               2               3
//! +---------------+---------------+-------------------------------+
//! |     flags     |   gso_type    |            hdr_len            |
//! +---------------+---------------+-------------------------------+
//! |            gso_size           |          csum_start           |
//! +-------------------------------+-------------------------------+
//! |          csum_offset          |
//! +-------------------------------+
//! ```
//!
//! This is the legacy layout (`struct virtio_net_hdr`, linux/virtio_net.h, no `num_buffers`).
//! AF_PACKET fills it in host byte order (`vio_le()`, little endian on every host srmigd
//! runs on); [`VnetHdr::parse`] and [`VnetHdr::emit`] use native byte order accordingly.
//!
//! The fields, as the kernel's `virtio_net_hdr_to_skb` reads them:
//! - `flags`: [`VIRTIO_NET_HDR_F_NEEDS_CSUM`]: the L4 checksum is partial (CHECKSUM_PARTIAL):
//!   the 16-bit field at `csum_start + csum_offset` holds the pseudo-header sum and the sum
//!   over `csum_start..` still has to be added ([`complete_checksum`]).
//!   [`VIRTIO_NET_HDR_F_DATA_VALID`]: the checksum was verified already (receive side only).
//! - `gso_type`: [`VIRTIO_NET_HDR_GSO_NONE`] for an ordinary frame; otherwise the frame is a
//!   super-frame to be cut into segments of `gso_size` payload bytes
//!   ([`super::gso`]), optionally with [`VIRTIO_NET_HDR_GSO_ECN`] (TCP, CWR set).
//! - `hdr_len`: how many bytes of headers to replicate per segment. Only a hint: Linux sets
//!   it to the linear part of the skb (which can hold payload too), other drivers to the
//!   header length; it is not trusted.

/// Size of the `virtio_net_hdr` that prefixes every frame with `PACKET_VNET_HDR`.
pub const VNET_HDR_LEN: usize = 10;

/// `flags`: the L4 checksum is partial; `csum_start`/`csum_offset` say where it goes.
pub const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
/// `flags`: the checksum was validated already.
pub const VIRTIO_NET_HDR_F_DATA_VALID: u8 = 2;

/// `gso_type`: not a GSO frame.
pub const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
/// `gso_type`: TCP over IPv4 segmentation (TSO).
pub const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
/// `gso_type`: UDP fragmentation offload (UFO: IP fragments, not UDP segments).
pub const VIRTIO_NET_HDR_GSO_UDP: u8 = 3;
/// `gso_type`: TCP over IPv6 segmentation (TSO).
pub const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;
/// `gso_type`: UDP segmentation offload (USO: one UDP datagram per segment).
pub const VIRTIO_NET_HDR_GSO_UDP_L4: u8 = 5;
/// `gso_type` bit: the TCP super-frame has CWR set (ECN).
pub const VIRTIO_NET_HDR_GSO_ECN: u8 = 0x80;

/// The fields of a `virtio_net_hdr` (legacy layout, native byte order, as AF_PACKET uses).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    /// `VIRTIO_NET_HDR_F_*` bits.
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_*`, possibly with [`VIRTIO_NET_HDR_GSO_ECN`].
    pub gso_type: u8,
    /// Length of the headers to replicate per segment (a hint, see the module doc).
    pub hdr_len: u16,
    /// Payload bytes per segment (the MSS for TCP).
    pub gso_size: u16,
    /// Where checksumming starts (the L4 header), from the start of the frame.
    pub csum_start: u16,
    /// Where the checksum field is, from `csum_start`.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Reads the header (native byte order).
    #[inline]
    pub fn parse(b: &[u8; VNET_HDR_LEN]) -> VnetHdr {
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16::from_ne_bytes([b[2], b[3]]),
            gso_size: u16::from_ne_bytes([b[4], b[5]]),
            csum_start: u16::from_ne_bytes([b[6], b[7]]),
            csum_offset: u16::from_ne_bytes([b[8], b[9]]),
        }
    }

    /// Writes the header (native byte order).
    #[inline]
    pub fn emit(&self, b: &mut [u8; VNET_HDR_LEN]) {
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
    }

    /// Whether the frame is a GSO super-frame (`gso_type` other than NONE).
    #[inline]
    pub fn is_gso(&self) -> bool {
        self.gso_type != VIRTIO_NET_HDR_GSO_NONE
    }

    /// Whether the L4 checksum is partial ([`VIRTIO_NET_HDR_F_NEEDS_CSUM`]).
    #[inline]
    pub fn needs_csum(&self) -> bool {
        self.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0
    }
}

/// One's-complement sum of `bytes` as big-endian 16-bit words (an odd trailing byte padded
/// with 0), not folded. Fine for any frame: 2^48 words before the accumulator overflows.
#[inline]
pub(crate) fn ones_sum(bytes: &[u8]) -> u64 {
    let mut acc: u64 = 0;
    let mut chunks = bytes.chunks_exact(4);
    for c in &mut chunks {
        acc += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let mut pairs = chunks.remainder().chunks_exact(2);
    for p in &mut pairs {
        acc += u64::from(u16::from_be_bytes([p[0], p[1]]));
    }
    if let [last] = pairs.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds a one's-complement accumulator to 16 bits.
#[inline]
pub(crate) fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    // The loop leaves at most 16 bits: never the fallback.
    u16::try_from(acc).unwrap_or(u16::MAX)
}

/// The checksum field for a one's-complement accumulator: the folded sum complemented, 0
/// sent as 0xffff (as the kernel's `skb_checksum_help` does; for UDP 0 means "none").
#[inline]
pub(crate) fn checksum_field(acc: u64) -> u16 {
    match !fold(acc) {
        0 => 0xffff,
        c => c,
    }
}

/// Completes a partial (offloaded) checksum the way the kernel's `skb_checksum_help` does:
/// the field at `start + offset` holds the pseudo-header sum; the one's complement sum of
/// everything from `start` to the end of the frame, complemented, replaces it (0 becomes
/// 0xffff). Returns `false` (frame untouched) if the offsets do not fit the frame.
pub fn complete_checksum(frame: &mut [u8], start: usize, offset: usize) -> bool {
    let Some(field) = start.checked_add(offset) else {
        return false;
    };
    if field.checked_add(2).is_none_or(|end| end > frame.len()) {
        return false;
    }
    let c = checksum_field(ones_sum(&frame[start..]));
    frame[field..field + 2].copy_from_slice(&c.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 1071 verification: summing a packet with a correct checksum gives 0xffff.
    fn verify(data: &[u8]) -> bool {
        let mut sum: u64 = 0;
        for c in data.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], 0])
            };
            sum += u64::from(w);
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum == 0xffff
    }

    #[test]
    fn completes_a_partial_checksum() {
        // "Frame": 4 bytes of header, then an L4 segment whose checksum field (offset 2)
        // holds a pseudo-header sum of 0x1234, then an odd-length payload.
        let mut f = vec![
            0xaa, 0xbb, 0xcc, 0xdd, 0x00, 0x35, 0x12, 0x34, 1, 2, 3, 4, 5,
        ];
        let pseudo = 0x1234u16;
        assert!(complete_checksum(&mut f, 4, 2));
        // The segment plus the pseudo-header sum must now verify.
        // (The pseudo-header sum goes first: the segment has an odd length.)
        let mut seg = pseudo.to_be_bytes().to_vec();
        seg.extend_from_slice(&f[4..]);
        assert!(verify(&seg), "{f:02x?}");
        // Header bytes are untouched.
        assert_eq!(&f[..4], &[0xaa, 0xbb, 0xcc, 0xdd]);
    }

    #[test]
    fn zero_checksum_becomes_ffff() {
        // A segment whose sum is 0xffff complements to 0: must be sent as 0xffff.
        let mut f = vec![0xff, 0xff, 0x00, 0x00];
        assert!(complete_checksum(&mut f, 0, 2));
        assert_eq!(&f[2..], &[0xff, 0xff]);
    }

    #[test]
    fn refuses_offsets_outside_the_frame() {
        let mut f = vec![0u8; 8];
        assert!(!complete_checksum(&mut f, 6, 1));
        assert!(!complete_checksum(&mut f, 8, 0));
        assert!(!complete_checksum(&mut f, usize::MAX, 2));
        assert!(!complete_checksum(&mut f, 2, usize::MAX));
        assert_eq!(f, vec![0u8; 8]);
        assert!(complete_checksum(&mut f, 6, 0));
    }

    #[test]
    fn rfc1071_example_sum() {
        // RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to 0xddf2.
        assert_eq!(
            fold(ones_sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7])),
            0xddf2
        );
        assert_eq!(fold(ones_sum(&[0x01])), 0x0100);
        assert_eq!(fold(ones_sum(&[0x01, 0x02, 0x03])), 0x0402);
        assert_eq!(fold(ones_sum(&[])), 0);
    }

    #[test]
    fn vnet_header_fields() {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
        b[1] = VIRTIO_NET_HDR_GSO_TCPV6 | VIRTIO_NET_HDR_GSO_ECN;
        b[2..4].copy_from_slice(&74u16.to_ne_bytes());
        b[4..6].copy_from_slice(&1428u16.to_ne_bytes());
        b[6..8].copy_from_slice(&54u16.to_ne_bytes());
        b[8..10].copy_from_slice(&16u16.to_ne_bytes());
        let h = VnetHdr::parse(&b);
        assert_eq!(
            h,
            VnetHdr {
                flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
                gso_type: 0x84,
                hdr_len: 74,
                gso_size: 1428,
                csum_start: 54,
                csum_offset: 16,
            }
        );
        assert!(h.is_gso() && h.needs_csum());
        let mut out = [0xeeu8; VNET_HDR_LEN];
        h.emit(&mut out);
        assert_eq!(out, b);
        // An all-zero header: ordinary frame, complete checksum.
        let z = VnetHdr::parse(&[0u8; VNET_HDR_LEN]);
        assert_eq!(z, VnetHdr::default());
        assert!(!z.is_gso() && !z.needs_csum());
        assert_eq!(z.gso_type, VIRTIO_NET_HDR_GSO_NONE);
    }

    proptest! {
        #[test]
        fn parse_emit_round_trip(b in any::<[u8; VNET_HDR_LEN]>()) {
            let h = VnetHdr::parse(&b);
            let mut out = [0u8; VNET_HDR_LEN];
            h.emit(&mut out);
            prop_assert_eq!(out, b);
            prop_assert_eq!(VnetHdr::parse(&out), h);
        }

        #[test]
        fn completed_checksum_verifies(
            data in proptest::collection::vec(any::<u8>(), 2..300),
            start in 0usize..64,
            pseudo in any::<u16>(),
        ) {
            // Checksum field at an even offset from `start`, holding the pseudo-header sum.
            let start = start.min(data.len() - 2);
            let offset = ((data.len() - 2 - start) / 2) * 2;
            let mut f = data.clone();
            f[start + offset..start + offset + 2].copy_from_slice(&pseudo.to_be_bytes());
            prop_assert!(complete_checksum(&mut f, start, offset));
            let mut seg = pseudo.to_be_bytes().to_vec();
            seg.extend_from_slice(&f[start..]);
            prop_assert!(verify(&seg));
            prop_assert_eq!(&f[..start], &data[..start]);
        }

        #[test]
        fn complete_checksum_never_panics(
            mut f in proptest::collection::vec(any::<u8>(), 0..64),
            start in any::<usize>(),
            offset in any::<usize>(),
        ) {
            let _ = complete_checksum(&mut f, start, offset);
        }
    }
}
