//! Named drop reasons. Every packet the engine discards is counted under exactly one of these.

macro_rules! drop_reasons {
    ($( $(#[$doc:meta])* $name:ident, )*) => {
        /// Why the engine discarded a packet. Each variant indexes a counter
        /// (see [`crate::Counters::drops`]); `as_str()` gives the stable name used in metrics.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        #[non_exhaustive]
        pub enum DropReason {
            $( $(#[$doc])* $name, )*
        }

        impl DropReason {
            /// Every reason, in counter-index order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$name,)*];
            /// Number of reasons (size of the drop counter array).
            pub const COUNT: usize = DropReason::ALL.len();

            /// The stable name of the reason (the variant name).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( DropReason::$name => stringify!($name), )*
                }
            }

            /// Index into the drop counter array.
            pub const fn index(self) -> usize {
                self as usize
            }

            /// Every reason, sorted by [`DropReason::as_str`]: the order of a map keyed by
            /// name, so that building one (the status API's `drops`) finds its input sorted.
            pub fn by_name() -> &'static [DropReason] {
                static SORTED: std::sync::OnceLock<Vec<DropReason>> = std::sync::OnceLock::new();
                SORTED.get_or_init(|| {
                    let mut v = DropReason::ALL.to_vec();
                    v.sort_unstable_by_key(|r| r.as_str());
                    v
                })
            }
        }
    };
}

drop_reasons! {
    /// The frame or one of its headers is shorter than the header it claims to hold.
    Truncated,
    /// The ingress port id of the packet is not a configured port.
    UnknownPort,
    /// Unicast Ethernet destination that is neither the port MAC nor the gateway MAC.
    WrongDestinationMac,
    /// EtherType other than IPv6 or IPv4.
    UnsupportedEtherType,
    /// IP version field disagrees with the EtherType.
    BadIpVersion,
    /// IPv6 Payload Length runs past the end of the frame.
    PayloadLengthBeyondFrame,
    /// An extension header's Hdr Ext Len runs past the end of the packet.
    HdrExtLenBeyondPacket,
    /// More extension headers than the engine walks (also catches header "loops").
    TooManyExtensionHeaders,
    /// The same extension header appears twice where RFC 8200 allows it once, or Hop-by-Hop not first.
    DuplicateExtensionHeader,
    /// A TLV in the SRH TLV area overruns the SRH (RFC 8754 section 2.1).
    TlvOverrun,
    /// A Hop-by-Hop option this node does not recognize whose action bits (01, 10, 11) say to
    /// discard the packet (RFC 8200 4.2; 10 and 11 to a unicast destination: ICMPv6 Parameter
    /// Problem code 2 pointing at the Option Type).
    UnknownOption,
    /// A Hop-by-Hop option whose Opt Data Len runs past its header (ICMPv6 Parameter Problem
    /// code 0 pointing at the bad byte).
    OptionOverrun,
    /// The ingress requires HMAC (`hmac = "require"`) and the SRv6 packet to a local SID
    /// carries no HMAC TLV (RFC 8754 2.1.2.1).
    HmacMissing,
    /// The HMAC TLV names a Key ID that is not in `[[hmac_keys]]` (ICMPv6 Parameter Problem).
    HmacUnknownKey,
    /// The HMAC TLV's HMAC differs from the one computed with its key (ICMPv6 Parameter
    /// Problem pointing at the TLV, RFC 8754 2.1.2.1).
    HmacMismatch,
    /// The D flag is clear and the Destination Address is not `Segment List[Segments Left]`
    /// (RFC 8754 2.1.2: D set means Destination Address verification is disabled).
    HmacDestinationMismatch,
    /// An HMAC TLV shorter than its fixed fields, with an HMAC field of the wrong length for
    /// its key's algorithm, or a second HMAC TLV in one SRH.
    HmacMalformed,
    /// SRH Segments Left > Last Entry + 1 (RFC 8754 section 4.3.1.1, ICMPv6 Parameter Problem).
    SegmentsLeftBeyondLastEntry,
    /// SRH Last Entry beyond the segment list held by Hdr Ext Len (RFC 8754 section 4.3.1.1).
    LastEntryBeyondSegmentList,
    /// A routing header of a type other than 4 with Segments Left != 0 (RFC 8200 section 4.4).
    UnsupportedRoutingType,
    /// Segments Left != 0 on a behavior that requires the last segment (RFC 8986 4.4 S02).
    SegmentsLeftNotZero,
    /// The next segment of the SRH is a multicast address, which must not appear in a Routing
    /// header (RFC 4291 2.7): ICMPv6 Parameter Problem code 0 pointing at that Segment List
    /// entry.
    MulticastSegment,
    /// Hop Limit would reach zero in forwarding (ICMPv6 Time Exceeded code 0).
    HopLimitExceeded,
    /// Upper-layer header not allowed at this SID (RFC 8986 section 4.1.1, ICMPv6 code 4).
    UnsupportedNextHeader,
    /// Upper-layer processing at a SID (last segment, decapsulation, End.S) of a non-first
    /// fragment: what follows the Fragment header is data this node did not parse, so no
    /// error can point into it (discarded silently; this node does not reassemble).
    NonFirstFragment,
    /// The destination is inside the local locator but no SID is installed there (ICMPv6
    /// Destination Unreachable code 0: this node has no entry for it).
    NoSid,
    /// No FIB route for the destination (IPv6: ICMPv6 Destination Unreachable code 0).
    NoRoute,
    /// Local SID processing looped more than the engine allows.
    LocalSidLoop,
    /// A packet with an SRH, or addressed to a local SID, arrived on a VM port.
    SrhFromVmPort,
    /// An SRv6 packet from an uplink whose source is outside the infrastructure prefixes.
    SrhFromOutsideDomain,
    /// A VM port packet whose source is not an address of the VM attached to that port.
    VmSourceSpoofed,
    /// A link-local source on a packet that would leave its link (forwarded, delivered to
    /// another port, or decapsulated): ICMPv6 Destination Unreachable code 2, beyond scope of
    /// source address (RFC 4443 3.1), when the source can be answered on its link.
    LinkLocalSource,
    /// A forwarded packet whose source is multicast, the loopback address or unspecified
    /// (RFC 4291 2.5.2, 2.5.3, 2.7: never a source on the wire); no ICMPv6 error (RFC 4443
    /// 2.4 (e)).
    InvalidSourceAddress,
    /// Multicast destination on a path that only forwards unicast.
    MulticastDestination,
    /// Neighbor discovery not addressed to the gateway (or a port address): ignored.
    NdpNotForUs,
    /// A malformed neighbor solicitation (hop limit != 255, bad checksum, short).
    NdpInvalid,
    /// A packet addressed to the gateway itself (no local services).
    DestinedToGateway,
    /// UDP to one of this node's addresses (no UDP service): Destination Unreachable code 4
    /// (port unreachable, RFC 4443 3.1).
    PortUnreachable,
    /// An ICMPv6 message to this node whose checksum does not verify.
    IcmpBadChecksum,
    /// ARP that is not an Ethernet/IPv4 request or reply of the right length.
    ArpInvalid,
    /// ARP not asking for the gateway (VM ports) or the port's IPv4 address (uplinks), and
    /// ARP replies (nothing is learned: addresses come from the configuration). Never flooded.
    ArpNotForUs,
    /// Gratuitous ARP (sender address = target address, or an RFC 5227 announcement) from a
    /// VM: its MAC and addresses come from its config, nothing to learn.
    ArpGratuitous,
    /// ARP on a VM port whose sender address is not that VM's own (another VM's, or
    /// anyone's): dropped, never answered.
    ArpSpoofed,
    /// Addressed to one of this node's addresses with an upper layer it does not serve (TCP,
    /// ICMPv6 other than an echo request, No Next Header) or a fragment (no reassembly):
    /// discarded without an answer.
    LocalNotServed,
    /// End.S at the last segment, or delivery (End.DT*, native) to a VM that is not running here.
    VmNotRunning,
    /// The VM that End.S / End.SBUF would deliver to cannot be determined from the inner packet.
    UnknownVm,
    /// End.SBUF in drop mode for a VM that is not running here.
    SbufDropMode,
    /// End.SBUF buffer full (per-VM or global, packets or bytes).
    BufferFull,
    /// The packet is too large for a buffer slot.
    BufferPacketTooLarge,
    /// A buffered packet exceeded the maximum age.
    BufferExpired,
    /// A buffered packet discarded by an explicit `discard_buffer` (path torn down).
    BufferDiscarded,
    /// Prepending a header would exceed the packet buffer headroom.
    NoHeadroom,
    /// The frame does not fit a packet buffer ([`crate::BUF_CAPACITY`]) or, rewritten, the
    /// IPv6 Payload Length field. Counted by drivers (and `srmig replay`) through
    /// [`crate::Dataplane::drop_frame_too_large`] for frames they cannot even receive.
    FrameTooLarge,
    /// The packet is longer than the egress port's MTU after this node's processing (ICMPv6
    /// Packet Too Big to its original source, RFC 4443 3.2; IPv4 with DF: ICMPv4
    /// fragmentation needed, RFC 1191; IPv4 without DF: no error, nothing is fragmented).
    PacketTooBig,
    /// H.Insert cannot be applied to this packet (IPv4, or a Hop-by-Hop header present).
    InsertNotApplicable,
    /// IPv4 header invalid (IHL < 5, total length beyond frame).
    Ipv4Malformed,
    /// IPv4 header checksum mismatch.
    Ipv4BadChecksum,
    /// IPv4 TTL would reach zero in forwarding (ICMPv4 Time Exceeded to the source).
    Ipv4TtlExceeded,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_indices_are_consistent() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert!(!r.as_str().is_empty());
        }
        assert_eq!(
            DropReason::SegmentsLeftBeyondLastEntry.as_str(),
            "SegmentsLeftBeyondLastEntry"
        );
        assert_eq!(DropReason::BufferFull.as_str(), "BufferFull");
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
        let by_name: Vec<_> = DropReason::by_name().iter().map(|r| r.as_str()).collect();
        assert_eq!(by_name, names);
    }
}
