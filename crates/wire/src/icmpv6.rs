//! ICMPv6 (RFC 4443) messages, and the no-alloc ICMPv6 error builder used by the fast path.
//! Neighbor Discovery bodies live in [`crate::ndisc`].
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Type      |     Code      |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Unused / MTU / Pointer / Identifier + Sequence Number     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    As much of invoking packet                 |
//! +                as possible without the ICMPv6 packet          +
//! |                exceeding the minimum IPv6 MTU [IPv6]          |
//! ```

use core::fmt;
use core::net::Ipv6Addr;

use crate::checksum;
use crate::ip::IpProtocol;
use crate::ipv6;
use crate::ndisc::NdiscRepr;
use crate::{Error, Result};

/// ICMPv6 message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Message(pub u8);

impl Message {
    /// Destination Unreachable (1).
    pub const DST_UNREACHABLE: Message = Message(1);
    /// Packet Too Big (2).
    pub const PACKET_TOO_BIG: Message = Message(2);
    /// Time Exceeded (3).
    pub const TIME_EXCEEDED: Message = Message(3);
    /// Parameter Problem (4).
    pub const PARAM_PROBLEM: Message = Message(4);
    /// Echo Request (128).
    pub const ECHO_REQUEST: Message = Message(128);
    /// Echo Reply (129).
    pub const ECHO_REPLY: Message = Message(129);
    /// Router Solicitation (133).
    pub const ROUTER_SOLICIT: Message = Message(133);
    /// Router Advertisement (134).
    pub const ROUTER_ADVERT: Message = Message(134);
    /// Neighbor Solicitation (135).
    pub const NEIGHBOR_SOLICIT: Message = Message(135);
    /// Neighbor Advertisement (136).
    pub const NEIGHBOR_ADVERT: Message = Message(136);
    /// Redirect (137).
    pub const REDIRECT: Message = Message(137);

    /// Error messages have types 0..=127 (RFC 4443 2.1).
    #[inline]
    pub const fn is_error(self) -> bool {
        self.0 < 128
    }

    /// Neighbor Discovery messages (133..=137).
    #[inline]
    pub const fn is_ndisc(self) -> bool {
        matches!(self.0, 133..=137)
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match *self {
            Message::DST_UNREACHABLE => "destination unreachable",
            Message::PACKET_TOO_BIG => "packet too big",
            Message::TIME_EXCEEDED => "time exceeded",
            Message::PARAM_PROBLEM => "parameter problem",
            Message::ECHO_REQUEST => "echo request",
            Message::ECHO_REPLY => "echo reply",
            Message::ROUTER_SOLICIT => "router solicitation",
            Message::ROUTER_ADVERT => "router advertisement",
            Message::NEIGHBOR_SOLICIT => "neighbor solicitation",
            Message::NEIGHBOR_ADVERT => "neighbor advertisement",
            Message::REDIRECT => "redirect",
            Message(v) => return write!(f, "type {v}"),
        };
        f.write_str(s)
    }
}

/// Destination Unreachable codes (RFC 4443 3.1).
pub mod dst_unreachable {
    /// No route to destination.
    pub const NO_ROUTE: u8 = 0;
    /// Communication administratively prohibited.
    pub const ADMIN_PROHIBITED: u8 = 1;
    /// Beyond scope of source address.
    pub const BEYOND_SCOPE: u8 = 2;
    /// Address unreachable.
    pub const ADDR_UNREACHABLE: u8 = 3;
    /// Port unreachable.
    pub const PORT_UNREACHABLE: u8 = 4;
    /// Source address failed ingress/egress policy.
    pub const FAILED_POLICY: u8 = 5;
    /// Reject route to destination.
    pub const REJECT_ROUTE: u8 = 6;
    /// Error in Source Routing Header (RFC 6554).
    pub const SRC_ROUTING_HEADER: u8 = 7;
}

/// Time Exceeded codes (RFC 4443 3.3).
pub mod time_exceeded {
    /// Hop limit exceeded in transit.
    pub const HOP_LIMIT: u8 = 0;
    /// Fragment reassembly time exceeded.
    pub const FRAG_REASSEMBLY: u8 = 1;
}

/// Parameter Problem codes (RFC 4443 3.4, RFC 7112, RFC 8883).
pub mod param_problem {
    /// Erroneous header field encountered (e.g. SRH Segments Left, RFC 8754 4.3.1.1).
    pub const ERRONEOUS_HEADER_FIELD: u8 = 0;
    /// Unrecognized Next Header type encountered.
    pub const UNRECOGNIZED_NEXT_HEADER: u8 = 1;
    /// Unrecognized IPv6 option encountered.
    pub const UNRECOGNIZED_OPTION: u8 = 2;
    /// IPv6 first fragment has incomplete IPv6 header chain.
    pub const INCOMPLETE_CHAIN: u8 = 3;
    /// Extension header too big (RFC 8883).
    pub const EXT_HEADER_TOO_BIG: u8 = 5;
    /// Extension header chain too long (RFC 8883).
    pub const EXT_HEADER_CHAIN_TOO_LONG: u8 = 6;
}

/// Field offsets.
pub mod field {
    use core::ops::Range;
    /// Type.
    pub const TYPE: usize = 0;
    /// Code.
    pub const CODE: usize = 1;
    /// Checksum.
    pub const CHECKSUM: Range<usize> = 2..4;
    /// Message-specific 32 bits (unused / MTU / pointer / ident+seq / NDP flags).
    pub const DATA: Range<usize> = 4..8;
    /// Echo identifier.
    pub const ECHO_IDENT: Range<usize> = 4..6;
    /// Echo sequence number.
    pub const ECHO_SEQNO: Range<usize> = 6..8;
    /// Body (invoking packet / echo data / NDP target and options).
    pub const BODY: usize = 8;
}

/// Length of the ICMPv6 header (type, code, checksum, 32 message-specific bits).
pub const HEADER_LEN: usize = 8;

/// Largest ICMPv6 error packet, IPv6 header included (RFC 4443 2.4 (c)).
pub const MAX_ERROR_PACKET_LEN: usize = ipv6::MIN_MTU;

/// Hop limit used by [`emit_error`].
pub const DEFAULT_HOP_LIMIT: u8 = 64;

/// A read/write view of an ICMPv6 message. Getters are safe after `new_checked`.
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

    /// Wrap and check the buffer holds the 8-byte header.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Buffer >= 8 bytes.
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

    /// Type.
    #[inline]
    pub fn msg_type(&self) -> Message {
        Message(self.buffer.as_ref()[field::TYPE])
    }

    /// Code.
    #[inline]
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum.
    #[inline]
    pub fn checksum(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[2], b[3]])
    }

    /// The 32 message-specific bits: MTU (Packet Too Big), Pointer (Parameter Problem).
    #[inline]
    pub fn param(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([b[4], b[5], b[6], b[7]])
    }

    /// MTU of a Packet Too Big.
    #[inline]
    pub fn mtu(&self) -> u32 {
        self.param()
    }

    /// Pointer of a Parameter Problem.
    #[inline]
    pub fn pointer(&self) -> u32 {
        self.param()
    }

    /// Echo Identifier.
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[4], b[5]])
    }

    /// Echo Sequence Number.
    #[inline]
    pub fn echo_seq_no(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[6], b[7]])
    }

    /// Everything after the 8-byte header (clamped).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(field::BODY..).unwrap_or(&[])
    }

    /// The whole message bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Whether the checksum verifies for this message between `src` and `dst` (the whole
    /// buffer is the ICMPv6 message).
    #[inline]
    pub fn verify_checksum(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        let b = self.buffer.as_ref();
        checksum::combine(&[
            checksum::pseudo_header_v6(src, dst, IpProtocol::ICMPV6, b.len() as u32),
            checksum::data(b),
        ]) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set Type.
    #[inline]
    pub fn set_msg_type(&mut self, t: Message) {
        self.buffer.as_mut()[field::TYPE] = t.0;
    }

    /// Set Code.
    #[inline]
    pub fn set_msg_code(&mut self, c: u8) {
        self.buffer.as_mut()[field::CODE] = c;
    }

    /// Set Checksum.
    #[inline]
    pub fn set_checksum(&mut self, c: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }

    /// Set the 32 message-specific bits.
    #[inline]
    pub fn set_param(&mut self, v: u32) {
        self.buffer.as_mut()[field::DATA].copy_from_slice(&v.to_be_bytes());
    }

    /// Set Echo Identifier.
    #[inline]
    pub fn set_echo_ident(&mut self, v: u16) {
        self.buffer.as_mut()[field::ECHO_IDENT].copy_from_slice(&v.to_be_bytes());
    }

    /// Set Echo Sequence Number.
    #[inline]
    pub fn set_echo_seq_no(&mut self, v: u16) {
        self.buffer.as_mut()[field::ECHO_SEQNO].copy_from_slice(&v.to_be_bytes());
    }

    /// Mutable body (clamped).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.buffer
            .as_mut()
            .get_mut(field::BODY..)
            .unwrap_or(&mut [])
    }

    /// Compute and write the checksum over the whole buffer.
    #[inline]
    pub fn fill_checksum(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.set_checksum(0);
        let b = self.buffer.as_ref();
        let sum = checksum::combine(&[
            checksum::pseudo_header_v6(src, dst, IpProtocol::ICMPV6, b.len() as u32),
            checksum::data(b),
        ]);
        self.set_checksum(!sum);
    }
}

/// Parsed ICMPv6 message, borrowing the invoking packet / echo data from the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repr<'a> {
    /// Destination Unreachable.
    DstUnreachable {
        /// Code (see [`dst_unreachable`]).
        code: u8,
        /// As much of the invoking packet as fits.
        invoking: &'a [u8],
    },
    /// Packet Too Big.
    PacketTooBig {
        /// Next-hop MTU.
        mtu: u32,
        /// Invoking packet.
        invoking: &'a [u8],
    },
    /// Time Exceeded.
    TimeExceeded {
        /// Code (see [`time_exceeded`]).
        code: u8,
        /// Invoking packet.
        invoking: &'a [u8],
    },
    /// Parameter Problem.
    ParamProblem {
        /// Code (see [`param_problem`]).
        code: u8,
        /// Offset in the invoking packet where the error was detected.
        pointer: u32,
        /// Invoking packet.
        invoking: &'a [u8],
    },
    /// Echo Request.
    EchoRequest {
        /// Identifier.
        ident: u16,
        /// Sequence Number.
        seq_no: u16,
        /// Data.
        data: &'a [u8],
    },
    /// Echo Reply.
    EchoReply {
        /// Identifier.
        ident: u16,
        /// Sequence Number.
        seq_no: u16,
        /// Data.
        data: &'a [u8],
    },
    /// Neighbor Discovery (NS / NA).
    Ndisc(NdiscRepr),
}

impl<'a> Repr<'a> {
    /// Parse a message without checking the checksum (use [`Repr::parse_verified`] for
    /// untrusted input unless the checksum was checked elsewhere). Errors:
    /// [`Error::Truncated`], [`Error::UnrecognizedMessage`], NDP errors from [`NdiscRepr`].
    pub fn parse<T: AsRef<[u8]> + ?Sized>(p: &Packet<&'a T>) -> Result<Repr<'a>> {
        p.check_len()?;
        let body: &'a [u8] = p.buffer.as_ref().get(field::BODY..).unwrap_or(&[]);
        let code = p.msg_code();
        Ok(match p.msg_type() {
            Message::DST_UNREACHABLE => Repr::DstUnreachable {
                code,
                invoking: body,
            },
            Message::PACKET_TOO_BIG => Repr::PacketTooBig {
                mtu: p.mtu(),
                invoking: body,
            },
            Message::TIME_EXCEEDED => Repr::TimeExceeded {
                code,
                invoking: body,
            },
            Message::PARAM_PROBLEM => Repr::ParamProblem {
                code,
                pointer: p.pointer(),
                invoking: body,
            },
            Message::ECHO_REQUEST => Repr::EchoRequest {
                ident: p.echo_ident(),
                seq_no: p.echo_seq_no(),
                data: body,
            },
            Message::ECHO_REPLY => Repr::EchoReply {
                ident: p.echo_ident(),
                seq_no: p.echo_seq_no(),
                data: body,
            },
            t if t.is_ndisc() => Repr::Ndisc(NdiscRepr::parse(p)?),
            _ => return Err(Error::UnrecognizedMessage),
        })
    }

    /// Verify the checksum ([`Error::BadChecksum`]) then [`Repr::parse`].
    pub fn parse_verified<T: AsRef<[u8]> + ?Sized>(
        src: &Ipv6Addr,
        dst: &Ipv6Addr,
        p: &Packet<&'a T>,
    ) -> Result<Repr<'a>> {
        p.check_len()?;
        if !p.verify_checksum(src, dst) {
            return Err(Error::BadChecksum);
        }
        Self::parse(p)
    }

    /// Length of the message written by [`Repr::emit`].
    pub fn buffer_len(&self) -> usize {
        match self {
            Repr::DstUnreachable { invoking, .. }
            | Repr::PacketTooBig { invoking, .. }
            | Repr::TimeExceeded { invoking, .. }
            | Repr::ParamProblem { invoking, .. } => HEADER_LEN + invoking.len(),
            Repr::EchoRequest { data, .. } | Repr::EchoReply { data, .. } => {
                HEADER_LEN + data.len()
            }
            Repr::Ndisc(n) => n.buffer_len(),
        }
    }

    /// Write the message into `p` (sized by [`Repr::buffer_len`]; the checksum covers the
    /// whole buffer, so pass exactly that many bytes) and fill the checksum.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        src: &Ipv6Addr,
        dst: &Ipv6Addr,
        p: &mut Packet<T>,
    ) {
        let (t, code, param, body): (Message, u8, u32, &[u8]) = match *self {
            Repr::DstUnreachable { code, invoking } => {
                (Message::DST_UNREACHABLE, code, 0, invoking)
            }
            Repr::PacketTooBig { mtu, invoking } => (Message::PACKET_TOO_BIG, 0, mtu, invoking),
            Repr::TimeExceeded { code, invoking } => (Message::TIME_EXCEEDED, code, 0, invoking),
            Repr::ParamProblem {
                code,
                pointer,
                invoking,
            } => (Message::PARAM_PROBLEM, code, pointer, invoking),
            Repr::EchoRequest {
                ident,
                seq_no,
                data,
            } => (
                Message::ECHO_REQUEST,
                0,
                (u32::from(ident) << 16) | u32::from(seq_no),
                data,
            ),
            Repr::EchoReply {
                ident,
                seq_no,
                data,
            } => (
                Message::ECHO_REPLY,
                0,
                (u32::from(ident) << 16) | u32::from(seq_no),
                data,
            ),
            Repr::Ndisc(ref n) => {
                n.emit(p);
                p.fill_checksum(src, dst);
                return;
            }
        };
        p.set_msg_type(t);
        p.set_msg_code(code);
        p.set_param(param);
        p.payload_mut()[..body.len()].copy_from_slice(body);
        p.fill_checksum(src, dst);
    }
}

/// Build a complete ICMPv6 error packet (IPv6 header + ICMPv6 header + invoking packet) in
/// `buf`, without allocating. `param` is the 32-bit field after the checksum (MTU for Packet
/// Too Big, Pointer for Parameter Problem, 0 otherwise). The invoking packet is truncated so
/// the whole packet is at most [`MAX_ERROR_PACKET_LEN`] (1280) bytes and fits `buf`.
/// Hop limit is [`DEFAULT_HOP_LIMIT`].
///
/// Returns the number of bytes written, or 0 if `buf` cannot hold even the 48-byte headers.
/// Callers must apply the RFC 4443 2.4 (e) rules (no error about an error, a multicast
/// destination, ...) and rate limiting themselves.
pub fn emit_error(
    buf: &mut [u8],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    msg_type: Message,
    code: u8,
    param: u32,
    invoking: &[u8],
) -> usize {
    const HDRS: usize = ipv6::HEADER_LEN + HEADER_LEN;
    let room = buf.len().min(MAX_ERROR_PACKET_LEN);
    if room < HDRS {
        return 0;
    }
    let n = invoking.len().min(room - HDRS);
    let total = HDRS + n;
    let buf = &mut buf[..total];
    let (ip, icmp) = buf.split_at_mut(ipv6::HEADER_LEN);
    ipv6::emit_header(
        ip,
        src,
        dst,
        IpProtocol::ICMPV6,
        (HEADER_LEN + n) as u16,
        DEFAULT_HOP_LIMIT,
    );
    icmp[0] = msg_type.0;
    icmp[1] = code;
    icmp[2] = 0;
    icmp[3] = 0;
    icmp[4..8].copy_from_slice(&param.to_be_bytes());
    icmp[8..].copy_from_slice(&invoking[..n]);
    let sum = checksum::combine(&[
        checksum::pseudo_header_v6(&src, &dst, IpProtocol::ICMPV6, (HEADER_LEN + n) as u32),
        checksum::data(icmp),
    ]);
    icmp[2..4].copy_from_slice(&(!sum).to_be_bytes());
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn a(s: &str) -> Ipv6Addr {
        s.parse().expect("addr")
    }

    /// An invoking packet: IPv6 + SRH with Segments Left 5 > Last Entry + 1.
    fn invoking() -> Vec<u8> {
        let mut p = vec![0u8; 40];
        let segs = [a("fc00:2::1"), a("fc00:1::1")];
        let mut srh = [0u8; 40];
        let n = crate::srh::emit_srh(&mut srh, IpProtocol::NO_NEXT_HEADER, 5, 0, &segs);
        ipv6::emit_header(
            &mut p,
            a("2001:db8::1"),
            a("fc00:1::1"),
            IpProtocol::ROUTING,
            n as u16,
            64,
        );
        p.extend_from_slice(&srh[..n]);
        p
    }

    #[test]
    fn golden_param_problem() {
        let inv = invoking();
        let pointer = (ipv6::HEADER_LEN + crate::srh::FIELD_SEGMENTS_LEFT) as u32;
        let (src, dst) = (a("fc00:1::1"), a("2001:db8::1"));
        let mut buf = [0u8; 2000];
        let n = emit_error(&mut buf, src, dst, Message::PARAM_PROBLEM, 0, pointer, &inv);
        assert_eq!(n, 48 + inv.len());
        let out = &buf[..n];
        // Byte-level expectations.
        assert_eq!(
            &out[0..8],
            &[0x60, 0, 0, 0, 0, (8 + inv.len()) as u8, 58, 64]
        );
        assert_eq!(&out[40..42], &[4, 0]);
        assert_eq!(&out[44..48], &[0, 0, 0, 43]);
        assert_eq!(&out[48..], &inv[..]);
        // Our view and Repr.
        let ip = ipv6::Packet::new_checked(out).expect("ipv6");
        let icmp = Packet::new_checked(ip.payload()).expect("icmp");
        assert!(icmp.verify_checksum(&src, &dst));
        assert_eq!(
            Repr::parse_verified(&src, &dst, &icmp),
            Ok(Repr::ParamProblem {
                code: 0,
                pointer: 43,
                invoking: &inv
            })
        );
        // Repr::emit produces the same bytes.
        let r = Repr::ParamProblem {
            code: 0,
            pointer: 43,
            invoking: &inv,
        };
        let mut b2 = vec![0u8; r.buffer_len()];
        r.emit(&src, &dst, &mut Packet::new_unchecked(&mut b2[..]));
        assert_eq!(&b2[..], ip.payload());
        // etherparse as an independent oracle (parses type, pointer and checksum).
        let h = etherparse::SlicedPacket::from_ip(out).expect("etherparse");
        let Some(etherparse::TransportSlice::Icmpv6(s)) = h.transport else {
            panic!("no icmpv6")
        };
        assert_eq!(
            s.icmp_type(),
            etherparse::Icmpv6Type::ParameterProblem(etherparse::icmpv6::ParameterProblemHeader {
                code: etherparse::icmpv6::ParameterProblemCode::ErroneousHeaderField,
                pointer: 43
            })
        );
        let calc = s
            .header()
            .icmp_type
            .calc_checksum(src.octets(), dst.octets(), s.payload());
        assert_eq!(calc.ok(), Some(icmp.checksum()));
    }

    #[test]
    fn emit_error_truncates_to_1280() {
        let big = vec![0xabu8; 3000];
        let mut buf = vec![0u8; 4000];
        let n = emit_error(
            &mut buf,
            a("::1"),
            a("::2"),
            Message::PACKET_TOO_BIG,
            0,
            1500,
            &big,
        );
        assert_eq!(n, 1280);
        let ip = ipv6::Packet::new_checked(&buf[..n]).expect("ipv6");
        assert_eq!(usize::from(ip.payload_len()), 1240);
        let icmp = Packet::new_checked(ip.payload()).expect("icmp");
        assert!(icmp.verify_checksum(&a("::1"), &a("::2")));
        assert_eq!(icmp.mtu(), 1500);
        // Small buffer: truncated to fit; too small: nothing.
        let mut small = [0u8; 100];
        assert_eq!(
            emit_error(
                &mut small,
                a("::1"),
                a("::2"),
                Message::TIME_EXCEEDED,
                0,
                0,
                &big
            ),
            100
        );
        assert_eq!(
            emit_error(
                &mut small[..47],
                a("::1"),
                a("::2"),
                Message::TIME_EXCEEDED,
                0,
                0,
                &big
            ),
            0
        );
    }

    #[test]
    fn echo_golden_and_etherparse() {
        let (src, dst) = (a("fc00::1"), a("fc00::2"));
        let mut oracle = Vec::new();
        etherparse::PacketBuilder::ipv6(src.octets(), dst.octets(), 64)
            .icmpv6_echo_request(0x1234, 7)
            .write(&mut oracle, b"abcd")
            .expect("write");
        let r = Repr::EchoRequest {
            ident: 0x1234,
            seq_no: 7,
            data: b"abcd",
        };
        let mut b = vec![0u8; r.buffer_len()];
        r.emit(&src, &dst, &mut Packet::new_unchecked(&mut b[..]));
        assert_eq!(&b[..], &oracle[40..]);
        assert_eq!(&b[..8], &[128, 0, b[2], b[3], 0x12, 0x34, 0, 7]);
        let p = Packet::new_checked(&b[..]).expect("icmp");
        assert_eq!(Repr::parse_verified(&src, &dst, &p), Ok(r));
        let mut bad = b.clone();
        bad[9] ^= 1;
        let p = Packet::new_checked(&bad[..]).expect("icmp");
        assert_eq!(
            Repr::parse_verified(&src, &dst, &p),
            Err(Error::BadChecksum)
        );
        let unknown = [200u8, 0, 0, 0, 0, 0, 0, 0];
        let p = Packet::new_checked(&unknown[..]).expect("icmp");
        assert_eq!(Repr::parse(&p), Err(Error::UnrecognizedMessage));
        assert_eq!(Message(200).to_string(), "type 200");
        assert!(Message::PARAM_PROBLEM.is_error() && !Message::ECHO_REPLY.is_error());
    }

    fn arb_repr(buf: &[u8]) -> impl Strategy<Value = Repr<'_>> {
        let b = buf;
        (0u8..6, any::<u8>(), any::<u32>(), 0..=b.len()).prop_map(move |(k, code, param, n)| {
            let d = &b[..n];
            match k {
                0 => Repr::DstUnreachable { code, invoking: d },
                1 => Repr::PacketTooBig {
                    mtu: param,
                    invoking: d,
                },
                2 => Repr::TimeExceeded { code, invoking: d },
                3 => Repr::ParamProblem {
                    code,
                    pointer: param,
                    invoking: d,
                },
                4 => Repr::EchoRequest {
                    ident: param as u16,
                    seq_no: (param >> 16) as u16,
                    data: d,
                },
                _ => Repr::EchoReply {
                    ident: param as u16,
                    seq_no: (param >> 16) as u16,
                    data: d,
                },
            }
        })
    }

    static DATA: [u8; 64] = {
        let mut d = [0u8; 64];
        let mut i = 0;
        while i < 64 {
            d[i] = (i * 7) as u8;
            i += 1;
        }
        d
    };

    proptest! {
        #[test]
        fn roundtrip(r in arb_repr(&DATA), s in any::<u128>(), d in any::<u128>()) {
            let (src, dst) = (Ipv6Addr::from(s), Ipv6Addr::from(d));
            let mut b = vec![0u8; r.buffer_len()];
            r.emit(&src, &dst, &mut Packet::new_unchecked(&mut b[..]));
            let p = Packet::new_checked(&b[..]).expect("len");
            prop_assert_eq!(Repr::parse_verified(&src, &dst, &p), Ok(r));
        }

        #[test]
        fn no_panic(bytes in proptest::collection::vec(any::<u8>(), 0..120), t in prop_oneof![Just(None), (1u8..5).prop_map(Some), (128u8..138).prop_map(Some)]) {
            let mut bytes = bytes;
            if let (Some(t), Some(first)) = (t, bytes.first_mut()) {
                *first = t;
            }
            let u = Packet::new_unchecked(&bytes[..]);
            let _ = Repr::parse(&u);
            let _ = u.payload();
            if let Ok(p) = Packet::new_checked(&bytes[..]) {
                let _ = (p.msg_type(), p.msg_code(), p.checksum(), p.param(), p.echo_ident(), p.echo_seq_no());
                let _ = p.verify_checksum(&Ipv6Addr::LOCALHOST, &Ipv6Addr::LOCALHOST);
                if let Ok(r) = Repr::parse(&p) {
                    // Whatever parses re-emits to a message of a sane length.
                    prop_assert!(r.buffer_len() <= bytes.len() + 8);
                }
            }
        }

        #[test]
        fn emit_error_always_valid(inv in proptest::collection::vec(any::<u8>(), 0..1500), cap in 0usize..1600, t in any::<u8>(), c in any::<u8>(), param in any::<u32>()) {
            let mut buf = vec![0u8; cap];
            let n = emit_error(&mut buf, Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED, Message(t), c, param, &inv);
            if cap < 48 {
                prop_assert_eq!(n, 0);
            } else {
                prop_assert!(n <= 1280 && n <= cap && n >= 48);
                prop_assert_eq!(crate::checksum::verify_l4_checksum(&buf[..n]), Ok(true));
            }
        }
    }
}
