//! IP protocol numbers (IANA "Assigned Internet Protocol Numbers"), shared by IPv4 Protocol and
//! IPv6 Next Header.

use core::fmt;

/// An IP protocol number / IPv6 Next Header value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpProtocol(pub u8);

impl IpProtocol {
    /// IPv6 Hop-by-Hop Options (0).
    pub const HOP_BY_HOP: IpProtocol = IpProtocol(0);
    /// ICMP for IPv4 (1).
    pub const ICMP: IpProtocol = IpProtocol(1);
    /// IPv4 encapsulation (4).
    pub const IPV4: IpProtocol = IpProtocol(4);
    /// TCP (6).
    pub const TCP: IpProtocol = IpProtocol(6);
    /// UDP (17).
    pub const UDP: IpProtocol = IpProtocol(17);
    /// IPv6 encapsulation (41).
    pub const IPV6: IpProtocol = IpProtocol(41);
    /// IPv6 Routing header (43).
    pub const ROUTING: IpProtocol = IpProtocol(43);
    /// IPv6 Fragment header (44).
    pub const FRAGMENT: IpProtocol = IpProtocol(44);
    /// Encapsulating Security Payload (50).
    pub const ESP: IpProtocol = IpProtocol(50);
    /// Authentication Header (51).
    pub const AH: IpProtocol = IpProtocol(51);
    /// ICMPv6 (58).
    pub const ICMPV6: IpProtocol = IpProtocol(58);
    /// No Next Header (59).
    pub const NO_NEXT_HEADER: IpProtocol = IpProtocol(59);
    /// IPv6 Destination Options (60).
    pub const DST_OPTS: IpProtocol = IpProtocol(60);
    /// Ethernet (143, RFC 8986 End.DX2 / encapsulated L2 frame).
    pub const ETHERNET: IpProtocol = IpProtocol(143);

    /// Whether this is an IPv6 extension header that [`crate::ext::walk`] follows:
    /// Hop-by-Hop, Routing, Fragment, Destination Options and AH (whose length counts in
    /// 4-octet units). ESP is not: everything after it is encrypted, so it ends the chain.
    #[inline]
    pub const fn is_ipv6_ext(self) -> bool {
        // One shift and test instead of a chain of compares (the dataplane asks per packet).
        const EXT: u64 = (1 << 0) | (1 << 43) | (1 << 44) | (1 << 51) | (1 << 60);
        self.0 < 64 && (EXT >> self.0) & 1 == 1
    }
}

impl From<u8> for IpProtocol {
    fn from(v: u8) -> Self {
        IpProtocol(v)
    }
}

impl From<IpProtocol> for u8 {
    fn from(v: IpProtocol) -> Self {
        v.0
    }
}

impl fmt::Display for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match *self {
            IpProtocol::HOP_BY_HOP => "HopByHop",
            IpProtocol::ICMP => "ICMP",
            IpProtocol::IPV4 => "IPv4",
            IpProtocol::TCP => "TCP",
            IpProtocol::UDP => "UDP",
            IpProtocol::IPV6 => "IPv6",
            IpProtocol::ROUTING => "Routing",
            IpProtocol::FRAGMENT => "Fragment",
            IpProtocol::ESP => "ESP",
            IpProtocol::AH => "AH",
            IpProtocol::ICMPV6 => "ICMPv6",
            IpProtocol::NO_NEXT_HEADER => "NoNextHeader",
            IpProtocol::DST_OPTS => "DestinationOptions",
            IpProtocol::ETHERNET => "Ethernet",
            IpProtocol(v) => return write!(f, "{v}"),
        };
        f.write_str(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext_classes() {
        for p in [
            IpProtocol::HOP_BY_HOP,
            IpProtocol::ROUTING,
            IpProtocol::FRAGMENT,
            IpProtocol::DST_OPTS,
            IpProtocol::AH,
        ] {
            assert!(p.is_ipv6_ext(), "{p}");
        }
        for p in [
            IpProtocol::TCP,
            IpProtocol::UDP,
            IpProtocol::ICMPV6,
            IpProtocol::IPV6,
            IpProtocol::NO_NEXT_HEADER,
            IpProtocol::ETHERNET,
            IpProtocol::ESP,
        ] {
            assert!(!p.is_ipv6_ext(), "{p}");
        }
        // Exactly the five, over every value.
        let all: Vec<u8> = (0..=255u8)
            .filter(|&v| IpProtocol(v).is_ipv6_ext())
            .collect();
        assert_eq!(all, vec![0, 43, 44, 51, 60]);
    }

    #[test]
    fn numbers_match_etherparse() {
        use etherparse::IpNumber;
        assert_eq!(IpProtocol::HOP_BY_HOP.0, IpNumber::IPV6_HEADER_HOP_BY_HOP.0);
        assert_eq!(IpProtocol::ROUTING.0, IpNumber::IPV6_ROUTE_HEADER.0);
        assert_eq!(
            IpProtocol::FRAGMENT.0,
            IpNumber::IPV6_FRAGMENTATION_HEADER.0
        );
        assert_eq!(IpProtocol::DST_OPTS.0, IpNumber::IPV6_DESTINATION_OPTIONS.0);
        assert_eq!(IpProtocol::ICMPV6.0, IpNumber::IPV6_ICMP.0);
        assert_eq!(
            IpProtocol::NO_NEXT_HEADER.0,
            IpNumber::IPV6_NO_NEXT_HEADER.0
        );
        assert_eq!(IpProtocol::ETHERNET.0, 143);
        assert_eq!(IpProtocol(200).to_string(), "200");
    }
}
