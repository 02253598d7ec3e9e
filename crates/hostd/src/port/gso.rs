//! Software segmentation of GSO/TSO super-frames from VMs.
//!
//! Why: every Linux guest has TSO/GSO on by default, so its TCP stack hands over frames of up
//! to 64 KiB with a `virtio_net_hdr` ([`super::vnet`]) that says "cut this into `gso_size`
//! payload bytes per segment". srmigd encapsulates VM frames in SRv6 and sends them to a
//! remote host, which expects wire-sized packets with complete checksums, so it does what a
//! NIC would: it cuts the super-frame here, before the engine sees it, the way the kernel's
//! `tcp_gso_segment`, `__udp_gso_segment` and `inet_gso_segment` do it in software.
//!
//! Per segment: the L2 + L3 + L4 headers of the super-frame (their length parsed from the
//! frame; `hdr_len` is only a hint and only has to lie within the frame, `csum_start` and
//! `csum_offset`, when given, must point at the L4 checksum), then the next `gso_size` payload
//! bytes (the last segment is shorter), with
//! - IPv4: Total Length, Identification (the super-frame's, plus the segment index, as
//!   `inet_gso_segment` does without `SKB_GSO_TCP_FIXEDID`), Header Checksum;
//! - IPv6: Payload Length;
//! - TCP: Sequence Number (+ payload offset); FIN and PSH only on the last segment, CWR only
//!   on the first (`tcp_gso_segment`); other flags, options and the urgent pointer copied;
//! - UDP: Length;
//! - the complete L4 checksum (pseudo-header + segment), so no segment needs an offload.
//!
//! Supported: Ethernet II, optionally with one 802.1Q tag, carrying IPv4 (with options, not a
//! fragment) or IPv6 (no extension headers), with `gso_type` TCPV4 / TCPV6 (with or without
//! the ECN bit) over TCP, or UDP_L4 (USO) over UDP. Rejected with a [`GsoError`]: UFO
//! (`VIRTIO_NET_HDR_GSO_UDP`, which needs IP fragmentation), IPv6 extension headers and
//! jumbograms (BIG TCP), other EtherTypes, and any metadata that does not match the frame.
//! A super-frame whose payload fits in one segment yields that one packet, its checksum
//! completed (the kernel does not treat it as GSO either).
//!
//! Two ways in, neither allocates:
//! - [`segment`]: builds each segment in a caller-owned scratch buffer and hands it to a
//!   closure (e.g. one that pushes it into a `Batch`) until the closure says "no room".
//! - [`Segmenter`]: validates once, then [`Segmenter::write_next`] writes each segment
//!   straight into a buffer the caller provides (e.g. a packet slot), saving the copy.

use super::vnet::{
    checksum_field, fold, ones_sum, VnetHdr, VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP,
    VIRTIO_NET_HDR_GSO_UDP_L4,
};

/// Most segments one super-frame may yield. A Linux guest's smallest MSS
/// (`tcp_min_snd_mss`, 48) cuts 64 KiB into 1366 segments.
pub const MAX_GSO_SEGMENTS: usize = 2048;

const ETH_HEADER_LEN: usize = 14;
const VLAN_TAG_LEN: usize = 4;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const IPV4_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const TCP_HEADER_LEN: usize = 20;
const TCP_CHECKSUM_OFFSET: usize = 16;
const UDP_HEADER_LEN: usize = 8;
const UDP_CHECKSUM_OFFSET: usize = 6;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// Why a super-frame could not be segmented (the caller drops it and counts the reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GsoError {
    /// `gso_type` is NONE: there is nothing to segment.
    #[error("the frame is not a GSO super-frame (gso_type is NONE)")]
    NotGso,
    /// `gso_type` is not TCPV4, TCPV6, UDP or UDP_L4 (ECN only with TCP).
    #[error("gso_type {gso_type:#04x} is not a GSO type virtio defines")]
    UnknownGsoType {
        /// The `gso_type` field.
        gso_type: u8,
    },
    /// `gso_type` is UDP (UFO), which needs IP fragmentation.
    #[error("UDP fragmentation offload (gso_type UDP) is not supported, only UDP_L4")]
    UdpFragmentation,
    /// `gso_size` is 0.
    #[error("gso_size is 0")]
    ZeroGsoSize,
    /// `hdr_len` says the headers end after the frame does.
    #[error("hdr_len {hdr_len} is beyond the end of the {frame_len}-byte frame")]
    HdrLenBeyondFrame {
        /// The `hdr_len` field.
        hdr_len: u16,
        /// Length of the frame.
        frame_len: usize,
    },
    /// The frame ends inside its Ethernet, IP or L4 header.
    #[error("the frame ends inside its headers")]
    Truncated,
    /// The EtherType (after at most one 802.1Q tag) is neither IPv4 nor IPv6.
    #[error("EtherType {ethertype:#06x} is neither IPv4 nor IPv6")]
    UnsupportedEtherType {
        /// The EtherType.
        ethertype: u16,
    },
    /// The IP version nibble does not match the EtherType, or the IPv4 IHL is below 5.
    #[error("the IP header is malformed (version or header length)")]
    BadIpHeader,
    /// The IP length field says the packet is longer than the frame, or shorter than its
    /// headers.
    #[error("the IP length field does not match the frame")]
    BadIpLength,
    /// The IPv4 packet is a fragment.
    #[error("the IPv4 packet is a fragment")]
    Ipv4Fragment,
    /// IPv6 Payload Length 0: a jumbogram (BIG TCP).
    #[error("IPv6 jumbograms (BIG TCP) are not supported")]
    Ipv6Jumbogram,
    /// The IPv6 header is followed by an extension header.
    #[error("IPv6 next header {next_header} is an extension header or not TCP/UDP")]
    Ipv6ExtensionHeader {
        /// The IPv6 Next Header field.
        next_header: u8,
    },
    /// TCPV4 on an IPv6 packet or TCPV6 on an IPv4 packet.
    #[error("gso_type {gso_type:#04x} does not match the IP version of the packet")]
    WrongIpVersion {
        /// The `gso_type` field.
        gso_type: u8,
    },
    /// TCPV4/TCPV6 on a packet that is not TCP, or UDP_L4 on one that is not UDP.
    #[error("gso_type {gso_type:#04x} does not match L4 protocol {protocol}")]
    WrongProtocol {
        /// The `gso_type` field.
        gso_type: u8,
        /// The IPv4 Protocol / IPv6 Next Header.
        protocol: u8,
    },
    /// The TCP Data Offset is below 5.
    #[error("the TCP data offset is below 5 words")]
    BadTcpHeader,
    /// `csum_start`/`csum_offset` do not point at the L4 checksum field.
    #[error("csum_start {csum_start} / csum_offset {csum_offset} do not point at the L4 checksum")]
    CsumMetaMismatch {
        /// The `csum_start` field.
        csum_start: u16,
        /// The `csum_offset` field.
        csum_offset: u16,
    },
    /// UDP_L4 without `VIRTIO_NET_HDR_F_NEEDS_CSUM` (the kernel refuses it too).
    #[error("a UDP_L4 super-frame must have the NEEDS_CSUM flag")]
    UdpWithoutCsumOffload,
    /// The super-frame would yield more than [`MAX_GSO_SEGMENTS`] segments.
    #[error("the super-frame would yield {segments} segments, more than 2048")]
    TooManySegments {
        /// Segment count.
        segments: usize,
    },
    /// A segment does not fit the buffer it is to be written to.
    #[error("a {len}-byte segment does not fit the {room}-byte buffer")]
    SegmentTooLarge {
        /// Length of the largest segment.
        len: usize,
        /// Size of the buffer.
        room: usize,
    },
}

/// What [`segment`] did with a valid super-frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GsoOutcome {
    /// Segments handed to the closure.
    pub emitted: usize,
    /// Segments not built because the closure returned `false` (no room); the caller
    /// counts them as dropped.
    pub not_emitted: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum L3 {
    V4,
    V6,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum L4 {
    Tcp,
    Udp,
}

/// A validated super-frame, cut into segments one at a time.
///
/// [`new`](Self::new) checks the metadata against the frame; after that
/// [`write_next`](Self::write_next) fails only if the buffer it is given is too small.
#[derive(Debug, Clone)]
pub struct Segmenter<'a> {
    /// Headers, then payload; the IP packet ends at `headers_len + payload_len`.
    frame: &'a [u8],
    l3: L3,
    l4: L4,
    l3_off: usize,
    l4_off: usize,
    headers_len: usize,
    payload_len: usize,
    gso_size: u16,
    count: usize,
    next: usize,
    /// One's-complement sum of the pseudo-header without the length (addresses, protocol).
    pseudo_sum: u64,
    /// The next segment's IPv4 Identification.
    ipv4_id: u16,
    /// The next segment's TCP Sequence Number.
    tcp_seq: u32,
}

impl<'a> Segmenter<'a> {
    /// Validates `hdr` against `frame` (an Ethernet frame, without the `virtio_net_hdr`).
    pub fn new(frame: &'a [u8], hdr: &VnetHdr) -> Result<Segmenter<'a>, GsoError> {
        let gso_type = hdr.gso_type;
        let (want_l3, want_l4) = match gso_type & !VIRTIO_NET_HDR_GSO_ECN {
            VIRTIO_NET_HDR_GSO_NONE if gso_type == VIRTIO_NET_HDR_GSO_NONE => {
                return Err(GsoError::NotGso)
            }
            VIRTIO_NET_HDR_GSO_TCPV4 => (Some(L3::V4), L4::Tcp),
            VIRTIO_NET_HDR_GSO_TCPV6 => (Some(L3::V6), L4::Tcp),
            VIRTIO_NET_HDR_GSO_UDP_L4 if gso_type & VIRTIO_NET_HDR_GSO_ECN == 0 => (None, L4::Udp),
            VIRTIO_NET_HDR_GSO_UDP if gso_type & VIRTIO_NET_HDR_GSO_ECN == 0 => {
                return Err(GsoError::UdpFragmentation)
            }
            _ => return Err(GsoError::UnknownGsoType { gso_type }),
        };
        if hdr.gso_size == 0 {
            return Err(GsoError::ZeroGsoSize);
        }
        if usize::from(hdr.hdr_len) > frame.len() {
            return Err(GsoError::HdrLenBeyondFrame {
                hdr_len: hdr.hdr_len,
                frame_len: frame.len(),
            });
        }
        if want_l4 == L4::Udp && !hdr.needs_csum() {
            return Err(GsoError::UdpWithoutCsumOffload);
        }

        // L2: Ethernet II, at most one 802.1Q tag.
        let mut ethertype = be16(frame, 12)?;
        let mut l3_off = ETH_HEADER_LEN;
        if ethertype == ETHERTYPE_VLAN {
            ethertype = be16(frame, 16)?;
            l3_off += VLAN_TAG_LEN;
        }

        // L3.
        let (l3, protocol, l4_off, ip_end, pseudo_sum, ipv4_id) = match ethertype {
            ETHERTYPE_IPV4 => {
                let ip = frame
                    .get(l3_off..l3_off + IPV4_HEADER_LEN)
                    .ok_or(GsoError::Truncated)?;
                let ihl = usize::from(ip[0] & 0x0f) * 4;
                if ip[0] >> 4 != 4 || ihl < IPV4_HEADER_LEN {
                    return Err(GsoError::BadIpHeader);
                }
                if frame.len() < l3_off + ihl {
                    return Err(GsoError::Truncated);
                }
                let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
                if total < ihl || l3_off + total > frame.len() {
                    return Err(GsoError::BadIpLength);
                }
                // MF set or a fragment offset: a fragment. (DF and the reserved bit are kept.)
                if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
                    return Err(GsoError::Ipv4Fragment);
                }
                let pseudo = ones_sum(&ip[12..20]) + u64::from(ip[9]);
                let id = u16::from_be_bytes([ip[4], ip[5]]);
                (L3::V4, ip[9], l3_off + ihl, l3_off + total, pseudo, id)
            }
            ETHERTYPE_IPV6 => {
                let ip = frame
                    .get(l3_off..l3_off + IPV6_HEADER_LEN)
                    .ok_or(GsoError::Truncated)?;
                if ip[0] >> 4 != 6 {
                    return Err(GsoError::BadIpHeader);
                }
                let payload = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
                if payload == 0 {
                    return Err(GsoError::Ipv6Jumbogram);
                }
                let next_header = ip[6];
                if next_header != PROTO_TCP && next_header != PROTO_UDP {
                    return Err(GsoError::Ipv6ExtensionHeader { next_header });
                }
                let end = l3_off + IPV6_HEADER_LEN + payload;
                if end > frame.len() {
                    return Err(GsoError::BadIpLength);
                }
                let pseudo = ones_sum(&ip[8..40]) + u64::from(next_header);
                (
                    L3::V6,
                    next_header,
                    l3_off + IPV6_HEADER_LEN,
                    end,
                    pseudo,
                    0,
                )
            }
            _ => return Err(GsoError::UnsupportedEtherType { ethertype }),
        };
        if want_l3.is_some_and(|w| w != l3) {
            return Err(GsoError::WrongIpVersion { gso_type });
        }
        let (want_proto, csum_field) = match want_l4 {
            L4::Tcp => (PROTO_TCP, TCP_CHECKSUM_OFFSET),
            L4::Udp => (PROTO_UDP, UDP_CHECKSUM_OFFSET),
        };
        if protocol != want_proto {
            return Err(GsoError::WrongProtocol { gso_type, protocol });
        }

        // L4 header.
        let l4_len = match want_l4 {
            L4::Tcp => {
                let off = *frame.get(l4_off + 12).ok_or(GsoError::Truncated)?;
                let len = usize::from(off >> 4) * 4;
                if len < TCP_HEADER_LEN {
                    return Err(GsoError::BadTcpHeader);
                }
                len
            }
            L4::Udp => UDP_HEADER_LEN,
        };
        let headers_len = l4_off + l4_len;
        if headers_len > ip_end {
            // The frame may hold the header, but the IP packet says it ends before.
            return Err(if headers_len > frame.len() {
                GsoError::Truncated
            } else {
                GsoError::BadIpLength
            });
        }
        if hdr.needs_csum()
            && (usize::from(hdr.csum_start) != l4_off || usize::from(hdr.csum_offset) != csum_field)
        {
            return Err(GsoError::CsumMetaMismatch {
                csum_start: hdr.csum_start,
                csum_offset: hdr.csum_offset,
            });
        }

        // At most 65535: both IP length fields are 16 bits (jumbograms were refused).
        let payload_len = ip_end - headers_len;
        let gso_size = hdr.gso_size;
        let count = payload_len.div_ceil(usize::from(gso_size)).max(1);
        if count > MAX_GSO_SEGMENTS {
            return Err(GsoError::TooManySegments { segments: count });
        }
        let tcp_seq = match want_l4 {
            L4::Tcp => u32::from_be_bytes([
                frame[l4_off + 4],
                frame[l4_off + 5],
                frame[l4_off + 6],
                frame[l4_off + 7],
            ]),
            L4::Udp => 0,
        };
        Ok(Segmenter {
            frame: &frame[..ip_end],
            l3,
            l4: want_l4,
            l3_off,
            l4_off,
            headers_len,
            payload_len,
            gso_size,
            count,
            next: 0,
            pseudo_sum,
            ipv4_id,
            tcp_seq,
        })
    }

    /// How many segments the super-frame yields (at least 1).
    pub fn segment_count(&self) -> usize {
        self.count
    }

    /// How many segments [`write_next`](Self::write_next) has yet to write.
    pub fn remaining(&self) -> usize {
        self.count - self.next
    }

    /// Length of the L2 + L3 + L4 headers every segment starts with.
    pub fn headers_len(&self) -> usize {
        self.headers_len
    }

    /// Length of the largest segment (a full `gso_size` of payload, or all of it).
    pub fn max_segment_len(&self) -> usize {
        self.headers_len + usize::from(self.gso_size).min(self.payload_len)
    }

    /// Writes the next segment at the start of `out` and returns its length; `Ok(None)` once
    /// every segment was written. If `out` is too small nothing is consumed.
    pub fn write_next(&mut self, out: &mut [u8]) -> Result<Option<usize>, GsoError> {
        if self.next >= self.count {
            return Ok(None);
        }
        let index = self.next;
        let gso_size = usize::from(self.gso_size);
        let start = index * gso_size;
        let chunk = gso_size.min(self.payload_len - start);
        let hl = self.headers_len;
        let len = hl + chunk;
        let Some(out) = out.get_mut(..len) else {
            return Err(GsoError::SegmentTooLarge {
                len,
                room: out.len(),
            });
        };
        out[..hl].copy_from_slice(&self.frame[..hl]);
        out[hl..].copy_from_slice(&self.frame[hl + start..hl + start + chunk]);
        let first = index == 0;
        let last = index + 1 == self.count;

        // L3. Lengths fit in 16 bits: no segment is longer than the super-frame, whose own
        // 16-bit length fields held its lengths.
        let ip = &mut out[self.l3_off..self.l4_off];
        match self.l3 {
            L3::V4 => {
                put16(ip, 2, len - self.l3_off);
                // The kernel's per-segment id: the super-frame's plus the index, wrapping
                // (advanced below).
                ip[4..6].copy_from_slice(&self.ipv4_id.to_be_bytes());
                ip[10..12].fill(0);
                let c = !fold(ones_sum(ip));
                ip[10..12].copy_from_slice(&c.to_be_bytes());
            }
            L3::V6 => put16(ip, 4, len - self.l3_off - IPV6_HEADER_LEN),
        }

        // L4.
        let l4 = &mut out[self.l4_off..];
        let l4_len = l4.len();
        let csum_at = match self.l4 {
            L4::Tcp => {
                // The super-frame's plus the payload offset, wrapping (advanced below).
                l4[4..8].copy_from_slice(&self.tcp_seq.to_be_bytes());
                if !first {
                    l4[13] &= !TCP_CWR;
                }
                if !last {
                    l4[13] &= !(TCP_FIN | TCP_PSH);
                }
                TCP_CHECKSUM_OFFSET
            }
            L4::Udp => {
                put16(l4, 4, l4_len);
                UDP_CHECKSUM_OFFSET
            }
        };
        l4[csum_at..csum_at + 2].fill(0);
        // Pseudo-header length: 16 bits for IPv4, 32 for IPv6; both fit in 16 here.
        let acc = self.pseudo_sum + l4_len as u64 + ones_sum(l4);
        l4[csum_at..csum_at + 2].copy_from_slice(&checksum_field(acc).to_be_bytes());

        self.next += 1;
        self.ipv4_id = self.ipv4_id.wrapping_add(1);
        self.tcp_seq = self.tcp_seq.wrapping_add(u32::from(self.gso_size));
        Ok(Some(len))
    }
}

/// Cuts the super-frame `frame` (an Ethernet frame as received after its `virtio_net_hdr`
/// `hdr`) into segments, builds each in `scratch` and hands it to `emit`, until all are
/// emitted or `emit` returns `false` (no room: the rest are counted in
/// [`GsoOutcome::not_emitted`]). `scratch` must hold the largest segment
/// ([`Segmenter::max_segment_len`]); nothing is emitted when any check fails.
pub fn segment(
    frame: &[u8],
    hdr: &VnetHdr,
    scratch: &mut [u8],
    emit: &mut impl FnMut(&[u8]) -> bool,
) -> Result<GsoOutcome, GsoError> {
    let mut s = Segmenter::new(frame, hdr)?;
    let max = s.max_segment_len();
    if scratch.len() < max {
        return Err(GsoError::SegmentTooLarge {
            len: max,
            room: scratch.len(),
        });
    }
    let mut outcome = GsoOutcome::default();
    while let Some(len) = s.write_next(scratch)? {
        if !emit(&scratch[..len]) {
            outcome.not_emitted = s.remaining() + 1;
            break;
        }
        outcome.emitted += 1;
    }
    Ok(outcome)
}

fn be16(b: &[u8], at: usize) -> Result<u16, GsoError> {
    match b.get(at..at + 2) {
        Some(&[hi, lo]) => Ok(u16::from_be_bytes([hi, lo])),
        _ => Err(GsoError::Truncated),
    }
}

/// Writes a length known to fit in 16 bits (see the callers).
fn put16(b: &mut [u8], at: usize, v: usize) {
    debug_assert!(v <= usize::from(u16::MAX));
    let v = u16::try_from(v).unwrap_or(u16::MAX);
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::vnet::VIRTIO_NET_HDR_F_NEEDS_CSUM;
    use proptest::prelude::*;

    const SRC4: [u8; 4] = [10, 0, 0, 1];
    const DST4: [u8; 4] = [10, 0, 0, 2];
    const SRC6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const DST6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    const ACK: u8 = 0x10;
    /// A Linux TCP header's options: NOP, NOP, timestamps.
    const TCP_TS_OPTIONS: [u8; 12] = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];

    /// RFC 1071, written independently of the code under test: the sum of the words,
    /// end-around carry.
    fn rfc1071_sum(parts: &[&[u8]]) -> u16 {
        let bytes: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        let mut sum: u32 = 0;
        for c in bytes.chunks(2) {
            let hi = u32::from(c[0]) << 8;
            let lo = c.get(1).copied().map_or(0, u32::from);
            sum += hi | lo;
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    /// The pseudo-header bytes for an L4 segment of `l4_len` bytes (RFC 793 / RFC 8200 8.1).
    fn pseudo_header(v6: bool, proto: u8, l4_len: usize) -> Vec<u8> {
        let mut p = Vec::new();
        if v6 {
            p.extend_from_slice(&SRC6);
            p.extend_from_slice(&DST6);
            p.extend_from_slice(&(l4_len as u32).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, proto]);
        } else {
            p.extend_from_slice(&SRC4);
            p.extend_from_slice(&DST4);
            p.extend_from_slice(&[0, proto]);
            p.extend_from_slice(&(l4_len as u16).to_be_bytes());
        }
        p
    }

    #[derive(Debug, Clone, Copy)]
    struct Spec {
        v6: bool,
        udp: bool,
        vlan: bool,
        payload: usize,
        gso_size: u16,
        tcp_flags: u8,
        ipv4_id: u16,
        seq: u32,
    }

    impl Spec {
        fn tcp(v6: bool, payload: usize) -> Spec {
            Spec {
                v6,
                udp: false,
                vlan: false,
                payload,
                gso_size: 1448,
                tcp_flags: ACK | TCP_PSH | TCP_FIN,
                ipv4_id: 0x1234,
                seq: 1000,
            }
        }

        fn udp(v6: bool, payload: usize) -> Spec {
            Spec {
                udp: true,
                gso_size: 1200,
                ..Spec::tcp(v6, payload)
            }
        }
    }

    /// Payload byte `i`: not periodic in the segment size, so a misplaced chunk shows.
    fn payload_byte(i: usize) -> u8 {
        (i.wrapping_mul(7) ^ (i >> 8)) as u8
    }

    /// A super-frame as a Linux guest hands it over with TSO/USO on: the headers once, all the
    /// payload, lengths of the whole, the L4 checksum field holding the pseudo-header sum
    /// (CHECKSUM_PARTIAL), and the `virtio_net_hdr` `virtio_net_hdr_from_skb` would write.
    fn super_frame(s: &Spec) -> (Vec<u8>, VnetHdr) {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        if s.vlan {
            f.extend_from_slice(&[0x81, 0x00, 0x00, 0x2a]);
        }
        let ethertype: u16 = if s.v6 { 0x86dd } else { 0x0800 };
        f.extend_from_slice(&ethertype.to_be_bytes());
        let l3 = f.len();
        let proto = if s.udp { PROTO_UDP } else { PROTO_TCP };
        let l4_hdr = if s.udp { 8 } else { 32 };
        let l4_len = l4_hdr + s.payload;
        if s.v6 {
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&(l4_len as u16).to_be_bytes());
            f.extend_from_slice(&[proto, 64]);
            f.extend_from_slice(&SRC6);
            f.extend_from_slice(&DST6);
        } else {
            f.extend_from_slice(&[0x45, 0]);
            f.extend_from_slice(&((20 + l4_len) as u16).to_be_bytes());
            f.extend_from_slice(&s.ipv4_id.to_be_bytes());
            f.extend_from_slice(&[0x40, 0, 64, proto, 0, 0]); // DF
            f.extend_from_slice(&SRC4);
            f.extend_from_slice(&DST4);
            let c = !rfc1071_sum(&[&f[l3..]]);
            f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
        }
        let l4 = f.len();
        if s.udp {
            f.extend_from_slice(&[0x30, 0x39, 0x00, 0x35]);
            f.extend_from_slice(&(l4_len as u16).to_be_bytes());
            f.extend_from_slice(&[0, 0]);
        } else {
            f.extend_from_slice(&[0x1f, 0x90, 0xc3, 0x50]);
            f.extend_from_slice(&s.seq.to_be_bytes());
            f.extend_from_slice(&0xabcd_0001u32.to_be_bytes());
            f.extend_from_slice(&[0x80, s.tcp_flags, 0x01, 0xf5, 0, 0, 0, 0]);
            f.extend_from_slice(&TCP_TS_OPTIONS);
        }
        f.extend((0..s.payload).map(payload_byte));
        let csum_offset: u16 = if s.udp { 6 } else { 16 };
        let partial = rfc1071_sum(&[&pseudo_header(s.v6, proto, l4_len)]);
        let at = l4 + usize::from(csum_offset);
        f[at..at + 2].copy_from_slice(&partial.to_be_bytes());
        let gso_type = match (s.udp, s.v6) {
            (true, _) => VIRTIO_NET_HDR_GSO_UDP_L4,
            (false, false) => VIRTIO_NET_HDR_GSO_TCPV4,
            (false, true) => VIRTIO_NET_HDR_GSO_TCPV6,
        } | if !s.udp && s.tcp_flags & TCP_CWR != 0 {
            VIRTIO_NET_HDR_GSO_ECN
        } else {
            0
        };
        let hdr = VnetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type,
            hdr_len: (l4 + l4_hdr) as u16,
            gso_size: s.gso_size,
            csum_start: l4 as u16,
            csum_offset,
        };
        (f, hdr)
    }

    /// Runs `segment` with room for everything; returns the segments.
    fn cut(frame: &[u8], hdr: &VnetHdr) -> Result<Vec<Vec<u8>>, GsoError> {
        let mut segs = Vec::new();
        let mut scratch = [0u8; 4096];
        let out = segment(frame, hdr, &mut scratch, &mut |s: &[u8]| {
            segs.push(s.to_vec());
            true
        })?;
        assert_eq!(out.emitted, segs.len());
        assert_eq!(out.not_emitted, 0);
        Ok(segs)
    }

    /// Checks every segment against the super-frame, independently of the code under test;
    /// returns the concatenated payloads.
    fn check_segments(s: &Spec, frame: &[u8], segs: &[Vec<u8>]) -> Vec<u8> {
        let l3 = if s.vlan { 18 } else { 14 };
        let l4 = l3 + if s.v6 { 40 } else { 20 };
        let hl = l4 + if s.udp { 8 } else { 32 };
        let proto = if s.udp { PROTO_UDP } else { PROTO_TCP };
        let gso = usize::from(s.gso_size);
        let want_count = s.payload.div_ceil(gso).max(1);
        assert_eq!(segs.len(), want_count, "{s:?}");
        let mut payload = Vec::new();
        for (i, seg) in segs.iter().enumerate() {
            let first = i == 0;
            let last = i + 1 == segs.len();
            let chunk = if last { s.payload - i * gso } else { gso };
            assert_eq!(seg.len(), hl + chunk, "segment {i} length");
            // L2 copied as is.
            assert_eq!(seg[..l3], frame[..l3]);
            let l4_len = seg.len() - l4;
            if s.v6 {
                assert_eq!(
                    u16::from_be_bytes([seg[l3 + 4], seg[l3 + 5]]) as usize,
                    l4_len
                );
                assert_eq!(seg[l3 + 6..l3 + 40], frame[l3 + 6..l3 + 40]);
            } else {
                let ip = &seg[l3..l4];
                assert_eq!(u16::from_be_bytes([ip[2], ip[3]]) as usize, seg.len() - l3);
                let id = u16::from_be_bytes([ip[4], ip[5]]);
                assert_eq!(id, s.ipv4_id.wrapping_add(i as u16), "segment {i} IPv4 id");
                assert_eq!(ip[6..10], frame[l3 + 6..l3 + 10], "flags, TTL, protocol");
                assert_eq!(
                    rfc1071_sum(&[ip]),
                    0xffff,
                    "segment {i} IPv4 header checksum"
                );
            }
            let l4h = &seg[l4..hl];
            if s.udp {
                assert_eq!(u16::from_be_bytes([l4h[4], l4h[5]]) as usize, l4_len);
                assert_eq!(l4h[..4], frame[l4..l4 + 4], "ports");
            } else {
                let seq = u32::from_be_bytes([l4h[4], l4h[5], l4h[6], l4h[7]]);
                assert_eq!(seq, s.seq.wrapping_add((i * gso) as u32), "segment {i} seq");
                let mut flags = s.tcp_flags;
                if !first {
                    flags &= !TCP_CWR;
                }
                if !last {
                    flags &= !(TCP_FIN | TCP_PSH);
                }
                assert_eq!(l4h[13], flags, "segment {i} TCP flags");
                // Everything else in the TCP header is the super-frame's.
                assert_eq!(l4h[..4], frame[l4..l4 + 4]);
                assert_eq!(l4h[8..13], frame[l4 + 8..l4 + 13]);
                assert_eq!(l4h[14..16], frame[l4 + 14..l4 + 16]);
                assert_eq!(l4h[18..], frame[l4 + 18..hl]);
            }
            let ph = pseudo_header(s.v6, proto, l4_len);
            assert_eq!(
                rfc1071_sum(&[&ph, &seg[l4..]]),
                0xffff,
                "segment {i} L4 checksum"
            );
            payload.extend_from_slice(&seg[hl..]);
        }
        payload
    }

    fn original_payload(s: &Spec) -> Vec<u8> {
        (0..s.payload).map(payload_byte).collect()
    }

    #[test]
    fn tso_ipv6_three_full_segments_and_a_short_one() {
        let s = Spec {
            tcp_flags: ACK | TCP_PSH | TCP_FIN | TCP_CWR,
            seq: 0xffff_f000, // wraps inside the super-frame
            ..Spec::tcp(true, 3 * 1448 + 100)
        };
        let (frame, hdr) = super_frame(&s);
        assert_eq!(
            hdr.gso_type,
            VIRTIO_NET_HDR_GSO_TCPV6 | VIRTIO_NET_HDR_GSO_ECN
        );
        assert_eq!((hdr.hdr_len, hdr.csum_start, hdr.csum_offset), (86, 54, 16));
        let segs = cut(&frame, &hdr).expect("segments");
        assert_eq!(
            segs.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![86 + 1448, 86 + 1448, 86 + 1448, 86 + 100]
        );
        assert_eq!(segs[0][54 + 13], ACK | TCP_CWR);
        assert_eq!(segs[1][54 + 13], ACK);
        assert_eq!(segs[3][54 + 13], ACK | TCP_PSH | TCP_FIN);
        assert_eq!(check_segments(&s, &frame, &segs), original_payload(&s));
    }

    #[test]
    fn tso_ipv4_ids_and_header_checksums() {
        let s = Spec {
            ipv4_id: 0xfffe, // wraps
            ..Spec::tcp(false, 3 * 1448 + 100)
        };
        let (frame, hdr) = super_frame(&s);
        assert_eq!(hdr.gso_type, VIRTIO_NET_HDR_GSO_TCPV4);
        assert_eq!((hdr.hdr_len, hdr.csum_start), (66, 34));
        let segs = cut(&frame, &hdr).expect("segments");
        let ids: Vec<u16> = segs
            .iter()
            .map(|g| u16::from_be_bytes([g[18], g[19]]))
            .collect();
        assert_eq!(ids, vec![0xfffe, 0xffff, 0x0000, 0x0001]);
        assert_eq!(check_segments(&s, &frame, &segs), original_payload(&s));
    }

    #[test]
    fn tso_ipv4_behind_a_vlan_tag() {
        let s = Spec {
            vlan: true,
            ..Spec::tcp(false, 2 * 1448 + 1)
        };
        let (frame, hdr) = super_frame(&s);
        let segs = cut(&frame, &hdr).expect("segments");
        assert_eq!(segs.len(), 3);
        assert_eq!(check_segments(&s, &frame, &segs), original_payload(&s));
    }

    #[test]
    fn uso_ipv6_and_ipv4() {
        for v6 in [true, false] {
            let s = Spec::udp(v6, 2 * 1200 + 7);
            let (frame, hdr) = super_frame(&s);
            assert_eq!(hdr.gso_type, VIRTIO_NET_HDR_GSO_UDP_L4);
            let segs = cut(&frame, &hdr).expect("segments");
            assert_eq!(segs.len(), 3);
            for g in &segs {
                let l4 = if v6 { 54 } else { 34 };
                assert_ne!(&g[l4 + 6..l4 + 8], &[0, 0], "a UDP checksum is always sent");
            }
            assert_eq!(check_segments(&s, &frame, &segs), original_payload(&s));
        }
    }

    #[test]
    fn a_super_frame_that_fits_one_segment_keeps_all_its_flags() {
        for payload in [0, 1, 1448] {
            let s = Spec {
                tcp_flags: ACK | TCP_PSH | TCP_FIN | TCP_CWR,
                ..Spec::tcp(true, payload)
            };
            let (frame, hdr) = super_frame(&s);
            let segs = cut(&frame, &hdr).expect("one segment");
            assert_eq!(segs.len(), 1);
            assert_eq!(segs[0].len(), frame.len());
            assert_eq!(check_segments(&s, &frame, &segs), original_payload(&s));
        }
    }

    #[test]
    fn hdr_len_is_a_hint_and_ethernet_padding_is_left_out() {
        // Linux reports the skb's linear length, which may hold payload: headers are parsed.
        let s = Spec::tcp(false, 3000);
        let (mut frame, mut hdr) = super_frame(&s);
        hdr.hdr_len = 200;
        frame.extend_from_slice(&[0xee; 6]); // trailing bytes beyond the IP packet
        let segs = cut(&frame, &hdr).expect("segments");
        assert_eq!(check_segments(&s, &frame, &segs), original_payload(&s));
        // Without NEEDS_CSUM (older guests) TCP is segmented just the same.
        hdr.flags = 0;
        hdr.hdr_len = 0;
        assert_eq!(cut(&frame, &hdr).expect("segments"), segs);
    }

    #[test]
    fn no_room_stops_and_counts_the_rest() {
        let s = Spec::tcp(true, 5 * 1448);
        let (frame, hdr) = super_frame(&s);
        let mut scratch = [0u8; 2048];
        let mut n = 0;
        let out = segment(&frame, &hdr, &mut scratch, &mut |_: &[u8]| {
            n += 1;
            n <= 2
        })
        .expect("valid");
        assert_eq!(
            out,
            GsoOutcome {
                emitted: 2,
                not_emitted: 3
            }
        );
    }

    #[test]
    fn segmenter_writes_into_caller_buffers() {
        let s = Spec::tcp(false, 3 * 1448 + 100);
        let (frame, hdr) = super_frame(&s);
        let mut seg = Segmenter::new(&frame, &hdr).expect("valid");
        assert_eq!(seg.segment_count(), 4);
        assert_eq!(seg.headers_len(), 66);
        assert_eq!(seg.max_segment_len(), 66 + 1448);
        // Too small: an error, and the segment is not consumed.
        let mut small = [0u8; 100];
        assert_eq!(
            seg.write_next(&mut small),
            Err(GsoError::SegmentTooLarge {
                len: 66 + 1448,
                room: 100
            })
        );
        assert_eq!(seg.remaining(), 4);
        let mut got = Vec::new();
        let mut buf = [0u8; 1600];
        while let Some(len) = seg.write_next(&mut buf).expect("fits") {
            got.push(buf[..len].to_vec());
        }
        assert_eq!(seg.remaining(), 0);
        assert_eq!(seg.write_next(&mut buf), Ok(None));
        assert_eq!(got, cut(&frame, &hdr).expect("same"));
        // segment() refuses a scratch buffer that cannot hold the largest segment.
        let mut scratch = [0u8; 1000];
        assert_eq!(
            segment(&frame, &hdr, &mut scratch, &mut |_: &[u8]| true),
            Err(GsoError::SegmentTooLarge {
                len: 66 + 1448,
                room: 1000
            })
        );
    }

    /// A valid IPv4 TSO frame with `f` applied to it, segmented.
    fn v4_with(f: impl FnOnce(&mut Vec<u8>, &mut VnetHdr)) -> Result<Vec<Vec<u8>>, GsoError> {
        let (mut frame, mut hdr) = super_frame(&Spec::tcp(false, 3000));
        f(&mut frame, &mut hdr);
        cut(&frame, &hdr)
    }

    /// The same for IPv6.
    fn v6_with(f: impl FnOnce(&mut Vec<u8>, &mut VnetHdr)) -> Result<Vec<Vec<u8>>, GsoError> {
        let (mut frame, mut hdr) = super_frame(&Spec::tcp(true, 3000));
        f(&mut frame, &mut hdr);
        cut(&frame, &hdr)
    }

    #[test]
    fn inconsistent_metadata_is_refused() {
        use GsoError::*;
        assert_eq!(v4_with(|_, h| h.gso_type = 0), Err(NotGso));
        for t in [2, 6, 0x7f, 0x80, 0x85, 0x83] {
            assert_eq!(
                v4_with(|_, h| h.gso_type = t),
                Err(UnknownGsoType { gso_type: t }),
                "{t:#x}"
            );
        }
        assert_eq!(
            v4_with(|_, h| h.gso_type = VIRTIO_NET_HDR_GSO_UDP),
            Err(UdpFragmentation)
        );
        assert_eq!(v4_with(|_, h| h.gso_size = 0), Err(ZeroGsoSize));
        assert_eq!(
            v4_with(|f, h| h.hdr_len = f.len() as u16 + 1),
            Err(HdrLenBeyondFrame {
                hdr_len: 66 + 3000 + 1,
                frame_len: 66 + 3000
            })
        );
        assert_eq!(
            v4_with(|_, h| h.gso_size = 1),
            Err(TooManySegments { segments: 3000 })
        );
        assert_eq!(
            v4_with(|_, h| h.gso_type = VIRTIO_NET_HDR_GSO_TCPV6),
            Err(WrongIpVersion {
                gso_type: VIRTIO_NET_HDR_GSO_TCPV6
            })
        );
        assert_eq!(
            v6_with(|_, h| h.gso_type = VIRTIO_NET_HDR_GSO_TCPV4),
            Err(WrongIpVersion {
                gso_type: VIRTIO_NET_HDR_GSO_TCPV4
            })
        );
        assert_eq!(
            v6_with(|_, h| {
                h.gso_type = VIRTIO_NET_HDR_GSO_UDP_L4;
                h.csum_offset = 6;
            }),
            Err(WrongProtocol {
                gso_type: VIRTIO_NET_HDR_GSO_UDP_L4,
                protocol: PROTO_TCP
            })
        );
        assert_eq!(
            v4_with(|_, h| h.csum_start = 14),
            Err(CsumMetaMismatch {
                csum_start: 14,
                csum_offset: 16
            })
        );
        assert_eq!(
            v6_with(|_, h| h.csum_offset = 6),
            Err(CsumMetaMismatch {
                csum_start: 54,
                csum_offset: 6
            })
        );
        let (frame, mut hdr) = super_frame(&Spec::udp(true, 3000));
        hdr.flags = 0;
        assert_eq!(cut(&frame, &hdr), Err(UdpWithoutCsumOffload));
        let (frame, mut hdr) = super_frame(&Spec::udp(true, 3000));
        hdr.gso_type = VIRTIO_NET_HDR_GSO_TCPV6;
        assert_eq!(
            cut(&frame, &hdr),
            Err(WrongProtocol {
                gso_type: VIRTIO_NET_HDR_GSO_TCPV6,
                protocol: PROTO_UDP
            })
        );
    }

    #[test]
    fn frames_that_are_not_what_they_claim_are_refused() {
        use GsoError::*;
        assert_eq!(
            v4_with(|f, h| {
                f.truncate(13);
                h.hdr_len = 0;
            }),
            Err(Truncated)
        );
        assert_eq!(
            v4_with(|f, h| {
                f.truncate(30);
                h.hdr_len = 0;
            }),
            Err(Truncated)
        );
        assert_eq!(
            v6_with(|f, h| {
                f.truncate(60);
                f[18..20].copy_from_slice(&6u16.to_be_bytes());
                h.hdr_len = 0;
            }),
            Err(Truncated)
        );
        assert_eq!(
            v4_with(|f, _| f[12..14].copy_from_slice(&0x0806u16.to_be_bytes())),
            Err(UnsupportedEtherType { ethertype: 0x0806 })
        );
        assert_eq!(
            v4_with(|f, _| f[12..14].copy_from_slice(&0x88a8u16.to_be_bytes())),
            Err(UnsupportedEtherType { ethertype: 0x88a8 })
        );
        assert_eq!(v4_with(|f, _| f[14] = 0x65), Err(BadIpHeader));
        assert_eq!(v4_with(|f, _| f[14] = 0x44), Err(BadIpHeader));
        assert_eq!(v6_with(|f, _| f[14] = 0x40), Err(BadIpHeader));
        // IPv4 options that run past the frame.
        assert_eq!(
            v4_with(|f, h| {
                f.truncate(40);
                f[16..18].copy_from_slice(&26u16.to_be_bytes());
                f[14] = 0x4f;
                h.hdr_len = 0;
            }),
            Err(Truncated)
        );
        // Total Length beyond the frame, or too short for the TCP header.
        assert_eq!(
            v4_with(|f, _| f[16..18].copy_from_slice(&4000u16.to_be_bytes())),
            Err(BadIpLength)
        );
        assert_eq!(
            v4_with(|f, _| f[16..18].copy_from_slice(&40u16.to_be_bytes())),
            Err(BadIpLength)
        );
        assert_eq!(
            v4_with(|f, _| f[16..18].copy_from_slice(&10u16.to_be_bytes())),
            Err(BadIpLength)
        );
        assert_eq!(
            v6_with(|f, _| f[18..20].copy_from_slice(&4000u16.to_be_bytes())),
            Err(BadIpLength)
        );
        assert_eq!(v4_with(|f, _| f[20] |= 0x20), Err(Ipv4Fragment)); // MF
        assert_eq!(v4_with(|f, _| f[21] = 1), Err(Ipv4Fragment)); // offset
        assert_eq!(
            v6_with(|f, _| f[18..20].copy_from_slice(&[0, 0])),
            Err(Ipv6Jumbogram)
        );
        for nh in [0, 43, 44, 60, 59] {
            assert_eq!(
                v6_with(|f, _| f[20] = nh),
                Err(Ipv6ExtensionHeader { next_header: nh })
            );
        }
        assert_eq!(v4_with(|f, _| f[34 + 12] = 0x40), Err(BadTcpHeader));
        // Data Offset 15 (60 bytes): past the IP packet's end, or past the frame's.
        assert_eq!(
            v6_with(|f, _| {
                f[18..20].copy_from_slice(&40u16.to_be_bytes());
                f[54 + 12] = 0xf0;
            }),
            Err(BadIpLength)
        );
        assert_eq!(
            v6_with(|f, h| {
                f[18..20].copy_from_slice(&40u16.to_be_bytes());
                f.truncate(54 + 40);
                h.hdr_len = 0;
                f[54 + 12] = 0xf0;
            }),
            Err(Truncated)
        );
    }

    #[test]
    fn errors_read_as_sentences() {
        let e = GsoError::HdrLenBeyondFrame {
            hdr_len: 90,
            frame_len: 60,
        };
        assert_eq!(
            e.to_string(),
            "hdr_len 90 is beyond the end of the 60-byte frame"
        );
        assert_eq!(
            GsoError::UnknownGsoType { gso_type: 0x85 }.to_string(),
            "gso_type 0x85 is not a GSO type virtio defines"
        );
    }

    fn arb_spec() -> impl Strategy<Value = Spec> {
        (
            any::<(bool, bool, bool)>(),
            0usize..6000,
            1u16..2000,
            any::<u8>(),
            any::<u16>(),
            any::<u32>(),
        )
            .prop_filter_map(
                "too many segments",
                |((v6, udp, vlan), payload, gso_size, flags, id, seq)| {
                    let s = Spec {
                        v6,
                        udp,
                        vlan,
                        payload,
                        gso_size,
                        tcp_flags: flags,
                        ipv4_id: id,
                        seq,
                    };
                    (payload.div_ceil(usize::from(gso_size)) <= MAX_GSO_SEGMENTS).then_some(s)
                },
            )
    }

    fn arb_hdr() -> impl Strategy<Value = VnetHdr> {
        any::<[u8; crate::port::vnet::VNET_HDR_LEN]>().prop_map(|b| VnetHdr::parse(&b))
    }

    proptest! {
        #[test]
        fn segments_give_back_the_payload(s in arb_spec()) {
            let (frame, hdr) = super_frame(&s);
            let segs = cut(&frame, &hdr).expect("valid super-frame");
            prop_assert_eq!(check_segments(&s, &frame, &segs), original_payload(&s));
        }

        #[test]
        fn never_panics_on_arbitrary_input(
            frame in proptest::collection::vec(any::<u8>(), 0..400),
            hdr in arb_hdr(),
            room in 0usize..3000,
        ) {
            let mut scratch = vec![0u8; room];
            let _ = segment(&frame, &hdr, &mut scratch, &mut |_: &[u8]| true);
            if let Ok(mut s) = Segmenter::new(&frame, &hdr) {
                while let Ok(Some(_)) = s.write_next(&mut scratch) {}
            }
        }

        #[test]
        fn never_panics_on_damaged_super_frames(
            s in arb_spec(),
            hdr in arb_hdr(),
            keep_hdr in any::<bool>(),
            damage in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 0..6),
            cut_at in any::<proptest::sample::Index>(),
            shorten in any::<bool>(),
        ) {
            let (mut frame, good_hdr) = super_frame(&s);
            for (at, v) in damage {
                let i = at.index(frame.len().min(80));
                frame[i] = v;
            }
            if shorten {
                frame.truncate(cut_at.index(frame.len() + 1));
            }
            let hdr = if keep_hdr { good_hdr } else { hdr };
            let mut scratch = vec![0u8; 4096];
            let _ = segment(&frame, &hdr, &mut scratch, &mut |seg: &[u8]| {
                assert!(seg.len() <= frame.len().max(4096));
                true
            });
        }
    }
}
