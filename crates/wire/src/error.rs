//! The single error type of the wire crate.
//!
//! Every variant names one precise condition, so the dataplane can map it 1:1 to a named drop
//! reason and a counter. The type is `Copy` and carries no heap data: producing one on the fast
//! path costs nothing more than returning an integer.

/// Why a buffer could not be viewed or parsed as the requested header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The buffer is shorter than the fixed part of the header.
    #[error("buffer is shorter than the header")]
    Truncated,
    /// The IP version field does not hold the expected version.
    #[error("IP version field is not the expected version")]
    BadVersion,
    /// IPv6 Payload Length (or IPv4 Total Length) points past the end of the buffer.
    #[error("IP payload length points past the end of the packet")]
    PayloadLengthBeyondPacket,
    /// IPv4 IHL is below 5 or the header it announces is longer than the buffer/total length.
    #[error("IPv4 header length is invalid")]
    BadHeaderLength,
    /// An extension header's Hdr Ext Len points past the end of the packet.
    #[error("extension header length points past the end of the packet")]
    HdrExtLenBeyondPacket,
    /// A routing header's Routing Type is not 4 (Segment Routing Header).
    #[error("routing header is not a segment routing header (routing type != 4)")]
    NotSegmentRouting,
    /// The SRH Last Entry field describes a segment list longer than the header.
    #[error("SRH last entry points past the end of the header")]
    LastEntryBeyondHeader,
    /// A TLV or option runs past the end of its container.
    #[error("TLV or option runs past the end of its header")]
    TlvOverrun,
    /// A TLV has a length that is invalid for its type (e.g. a short HMAC TLV).
    #[error("TLV has an invalid length for its type")]
    BadTlvLength,
    /// The extension header chain is longer than the configured bound (loops, long chains).
    #[error("too many extension headers")]
    TooManyExtensionHeaders,
    /// A Hop-by-Hop Options header appears anywhere but immediately after the IPv6 header.
    #[error("hop-by-hop options header is not the first extension header")]
    HopByHopNotFirst,
    /// A checksum did not verify.
    #[error("checksum does not verify")]
    BadChecksum,
    /// An NDP option has length 0 (RFC 4861 4.6: must be silently discarded).
    #[error("neighbor discovery option has zero length")]
    ZeroLengthOption,
    /// An ICMPv6 message has a type/code this crate does not represent.
    #[error("unrecognized ICMPv6 message")]
    UnrecognizedMessage,
    /// The output buffer passed to an emitter is too small.
    #[error("output buffer is too small")]
    BufferTooSmall,
    /// Something else is wrong; the string names the field.
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
}

/// Result alias used throughout the crate.
pub type Result<T> = core::result::Result<T, Error>;
