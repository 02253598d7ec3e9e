//! Neighbor Discovery (RFC 4861): Neighbor Solicitation / Advertisement bodies and options.
//!
//! ```text
//! Neighbor Solicitation (type 135)       Neighbor Advertisement (type 136)
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Type      |     Code      |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                           Reserved                            |   (NS)
//! |R|S|O|                     Reserved                            |   (NA)
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                                                               |
//! +                       Target Address                          +
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   Options ...
//! +-+-+-+-+-+-+-+-+-+-+-+-
//!
//! Option (RFC 4861 4.6), Length in units of 8 octets, 0 is invalid:
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Type      |    Length     |    Link-Layer Address ...
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use core::net::Ipv6Addr;
use core::ops::BitOr;

use crate::ethernet::Address;
use crate::icmpv6::{self, Message};
use crate::ipv6::addr;
use crate::{Error, Result};

/// Offset of the Target Address inside the ICMPv6 message.
pub const FIELD_TARGET: usize = 8;
/// Offset of the first option inside the ICMPv6 message.
pub const FIELD_OPTIONS: usize = 24;
/// NS/NA without options.
pub const MIN_LEN: usize = 24;
/// Hop Limit that NDP messages must carry (RFC 4861 7.1).
pub const HOP_LIMIT: u8 = 255;

/// Option type: Source Link-Layer Address.
pub const OPT_SOURCE_LLADDR: u8 = 1;
/// Option type: Target Link-Layer Address.
pub const OPT_TARGET_LLADDR: u8 = 2;

/// Neighbor Advertisement flags (R, S, O), as the first byte of the message-specific field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NeighborFlags(pub u8);

impl NeighborFlags {
    /// No flag.
    pub const EMPTY: NeighborFlags = NeighborFlags(0);
    /// R: the sender is a router.
    pub const ROUTER: NeighborFlags = NeighborFlags(0x80);
    /// S: sent in response to a Neighbor Solicitation.
    pub const SOLICITED: NeighborFlags = NeighborFlags(0x40);
    /// O: override an existing cache entry.
    pub const OVERRIDE: NeighborFlags = NeighborFlags(0x20);

    /// Whether every flag of `other` is set.
    #[inline]
    pub const fn contains(self, other: NeighborFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// R flag.
    #[inline]
    pub const fn router(self) -> bool {
        self.contains(Self::ROUTER)
    }

    /// S flag.
    #[inline]
    pub const fn solicited(self) -> bool {
        self.contains(Self::SOLICITED)
    }

    /// O flag.
    #[inline]
    pub const fn override_flag(self) -> bool {
        self.contains(Self::OVERRIDE)
    }
}

impl BitOr for NeighborFlags {
    type Output = NeighborFlags;
    fn bitor(self, rhs: Self) -> Self {
        NeighborFlags(self.0 | rhs.0)
    }
}

/// One NDP option, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NdiscOption<'a> {
    /// Source Link-Layer Address (first 6 octets: Ethernet).
    SourceLinkLayerAddr(Address),
    /// Target Link-Layer Address.
    TargetLinkLayerAddr(Address),
    /// Any other option (to be skipped, RFC 4861 4.6).
    Other {
        /// Type.
        opt_type: u8,
        /// Data after Type and Length (`Length * 8 - 2` octets).
        data: &'a [u8],
    },
}

/// Iterator over NDP options. Never panics; yields one `Err` ([`Error::ZeroLengthOption`] or
/// [`Error::TlvOverrun`]) and then ends.
#[derive(Debug, Clone)]
pub struct NdiscOptionIter<'a> {
    data: &'a [u8],
    failed: bool,
}

impl<'a> NdiscOptionIter<'a> {
    /// Iterate over an options area.
    pub fn new(data: &'a [u8]) -> Self {
        NdiscOptionIter {
            data,
            failed: false,
        }
    }
}

impl<'a> Iterator for NdiscOptionIter<'a> {
    type Item = Result<NdiscOption<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.data.is_empty() {
            return None;
        }
        let (t, len) = match self.data {
            [t, len, ..] => (*t, usize::from(*len) * 8),
            _ => {
                self.failed = true;
                return Some(Err(Error::TlvOverrun));
            }
        };
        if len == 0 {
            self.failed = true;
            return Some(Err(Error::ZeroLengthOption));
        }
        let Some(opt) = self.data.get(..len) else {
            self.failed = true;
            return Some(Err(Error::TlvOverrun));
        };
        self.data = &self.data[len..];
        let body = &opt[2..];
        let mac = || Address([body[0], body[1], body[2], body[3], body[4], body[5]]);
        Some(Ok(match t {
            OPT_SOURCE_LLADDR => NdiscOption::SourceLinkLayerAddr(mac()),
            OPT_TARGET_LLADDR => NdiscOption::TargetLinkLayerAddr(mac()),
            _ => NdiscOption::Other {
                opt_type: t,
                data: body,
            },
        }))
    }
}

/// Parsed NS / NA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NdiscRepr {
    /// Neighbor Solicitation.
    NeighborSolicit {
        /// Target Address.
        target_addr: Ipv6Addr,
        /// Source Link-Layer Address option, if present.
        lladdr: Option<Address>,
    },
    /// Neighbor Advertisement.
    NeighborAdvert {
        /// R/S/O flags.
        flags: NeighborFlags,
        /// Target Address.
        target_addr: Ipv6Addr,
        /// Target Link-Layer Address option, if present.
        lladdr: Option<Address>,
    },
}

impl NdiscRepr {
    /// Parse the NS/NA body of an ICMPv6 message (checksum not checked here; see
    /// [`icmpv6::Repr::parse_verified`]). Checks RFC 4861 7.1.1 / 7.1.2 rules that need only
    /// the message: code 0, length >= 24, target not multicast, options well formed (zero
    /// length is [`Error::ZeroLengthOption`]). Unknown options are skipped. Other NDP types
    /// are [`Error::UnrecognizedMessage`].
    pub fn parse<T: AsRef<[u8]> + ?Sized>(p: &icmpv6::Packet<&T>) -> Result<NdiscRepr> {
        p.check_len()?;
        let t = p.msg_type();
        if t != Message::NEIGHBOR_SOLICIT && t != Message::NEIGHBOR_ADVERT {
            return Err(Error::UnrecognizedMessage);
        }
        let b = p.as_bytes();
        let Some(target) = b.get(FIELD_TARGET..FIELD_OPTIONS) else {
            return Err(Error::Truncated);
        };
        if p.msg_code() != 0 {
            return Err(Error::Malformed("NDP code is not 0"));
        }
        let mut o = [0u8; 16];
        o.copy_from_slice(target);
        let target_addr = Ipv6Addr::from(o);
        if addr::is_multicast(&target_addr) {
            return Err(Error::Malformed("NDP target address is multicast"));
        }
        let mut src_ll = None;
        let mut tgt_ll = None;
        for opt in NdiscOptionIter::new(&b[FIELD_OPTIONS..]) {
            match opt? {
                NdiscOption::SourceLinkLayerAddr(a) => src_ll = Some(a),
                NdiscOption::TargetLinkLayerAddr(a) => tgt_ll = Some(a),
                NdiscOption::Other { .. } => {}
            }
        }
        Ok(if t == Message::NEIGHBOR_SOLICIT {
            NdiscRepr::NeighborSolicit {
                target_addr,
                lladdr: src_ll,
            }
        } else {
            NdiscRepr::NeighborAdvert {
                flags: NeighborFlags(b[4] & 0xe0),
                target_addr,
                lladdr: tgt_ll,
            }
        })
    }

    /// Checks of RFC 4861 7.1.1 / 7.1.2 that need the IPv6 header: Hop Limit 255; an NS from
    /// the unspecified address goes to a solicited-node address and carries no SLLAO; an NA
    /// to a multicast address has S clear.
    pub fn validate(&self, ip_src: &Ipv6Addr, ip_dst: &Ipv6Addr, hop_limit: u8) -> Result<()> {
        if hop_limit != HOP_LIMIT {
            return Err(Error::Malformed("NDP hop limit is not 255"));
        }
        match *self {
            NdiscRepr::NeighborSolicit { lladdr, .. } if ip_src.is_unspecified() => {
                if !addr::is_solicited_node(ip_dst) {
                    return Err(Error::Malformed(
                        "DAD NS not sent to a solicited-node address",
                    ));
                }
                if lladdr.is_some() {
                    return Err(Error::Malformed(
                        "DAD NS carries a source link-layer option",
                    ));
                }
            }
            NdiscRepr::NeighborAdvert { flags, .. }
                if addr::is_multicast(ip_dst) && flags.solicited() =>
            {
                return Err(Error::Malformed("multicast NA has the solicited flag"));
            }
            _ => {}
        }
        Ok(())
    }

    /// Target Address.
    pub fn target_addr(&self) -> Ipv6Addr {
        match *self {
            NdiscRepr::NeighborSolicit { target_addr, .. }
            | NdiscRepr::NeighborAdvert { target_addr, .. } => target_addr,
        }
    }

    /// ICMPv6 message length.
    pub fn buffer_len(&self) -> usize {
        let ll = match self {
            NdiscRepr::NeighborSolicit { lladdr, .. }
            | NdiscRepr::NeighborAdvert { lladdr, .. } => lladdr.is_some(),
        };
        MIN_LEN + if ll { 8 } else { 0 }
    }

    /// Write type, code, flags, target and option. The checksum is left for the caller
    /// ([`icmpv6::Repr::emit`] fills it).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut icmpv6::Packet<T>) {
        let (t, first, target, opt) = match *self {
            NdiscRepr::NeighborSolicit {
                target_addr,
                lladdr,
            } => (
                Message::NEIGHBOR_SOLICIT,
                0,
                target_addr,
                lladdr.map(|a| (OPT_SOURCE_LLADDR, a)),
            ),
            NdiscRepr::NeighborAdvert {
                flags,
                target_addr,
                lladdr,
            } => (
                Message::NEIGHBOR_ADVERT,
                flags.0 & 0xe0,
                target_addr,
                lladdr.map(|a| (OPT_TARGET_LLADDR, a)),
            ),
        };
        p.set_msg_type(t);
        p.set_msg_code(0);
        p.set_checksum(0);
        p.set_param(u32::from(first) << 24);
        let body = p.payload_mut();
        body[..16].copy_from_slice(&target.octets());
        if let Some((ot, a)) = opt {
            body[16] = ot;
            body[17] = 1;
            body[18..24].copy_from_slice(&a.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn a(s: &str) -> Ipv6Addr {
        s.parse().expect("addr")
    }

    const MAC: Address = Address([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);

    /// NS from fe80::1 for fe80::2 with SLLAO.
    fn golden_ns() -> Vec<u8> {
        let mut v = vec![135, 0, 0, 0, 0, 0, 0, 0];
        v.extend_from_slice(&a("fe80::2").octets());
        v.extend_from_slice(&[1, 1, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        v
    }

    #[test]
    fn golden_ns_pair() {
        let (src, dst) = (a("fe80::1"), addr::solicited_node(&a("fe80::2")));
        let mut g = golden_ns();
        icmpv6::Packet::new_unchecked(&mut g[..]).fill_checksum(&src, &dst);
        let r = NdiscRepr::NeighborSolicit {
            target_addr: a("fe80::2"),
            lladdr: Some(MAC),
        };
        let p = icmpv6::Packet::new_checked(&g[..]).expect("len");
        assert_eq!(
            icmpv6::Repr::parse_verified(&src, &dst, &p),
            Ok(icmpv6::Repr::Ndisc(r))
        );
        assert_eq!(r.validate(&src, &dst, 255), Ok(()));
        assert!(r.validate(&src, &dst, 64).is_err());
        let ir = icmpv6::Repr::Ndisc(r);
        let mut out = vec![0u8; ir.buffer_len()];
        ir.emit(&src, &dst, &mut icmpv6::Packet::new_unchecked(&mut out[..]));
        assert_eq!(out, g);

        // etherparse oracle: same type/code/checksum, and the target address in its payload.
        let mut pkt = vec![0u8; 40];
        crate::ipv6::emit_header(
            &mut pkt,
            src,
            dst,
            crate::IpProtocol::ICMPV6,
            g.len() as u16,
            255,
        );
        pkt.extend_from_slice(&g);
        let s = etherparse::SlicedPacket::from_ip(&pkt).expect("etherparse");
        let Some(etherparse::TransportSlice::Icmpv6(i)) = s.transport else {
            panic!("icmpv6")
        };
        assert!(matches!(
            i.icmp_type(),
            etherparse::Icmpv6Type::NeighborSolicitation
        ));
        let calc = i
            .header()
            .icmp_type
            .calc_checksum(src.octets(), dst.octets(), i.payload());
        assert_eq!(calc.ok(), Some(p.checksum()));
    }

    #[test]
    fn golden_na() {
        let r = NdiscRepr::NeighborAdvert {
            flags: NeighborFlags::ROUTER | NeighborFlags::SOLICITED | NeighborFlags::OVERRIDE,
            target_addr: a("2001:db8::1"),
            lladdr: Some(MAC),
        };
        let (src, dst) = (a("2001:db8::1"), a("2001:db8::99"));
        let ir = icmpv6::Repr::Ndisc(r);
        let mut out = vec![0u8; ir.buffer_len()];
        ir.emit(&src, &dst, &mut icmpv6::Packet::new_unchecked(&mut out[..]));
        assert_eq!(&out[..2], &[136, 0]);
        assert_eq!(&out[4..8], &[0xe0, 0, 0, 0]);
        assert_eq!(&out[24..], &[2, 1, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        let p = icmpv6::Packet::new_checked(&out[..]).expect("len");
        assert_eq!(icmpv6::Repr::parse_verified(&src, &dst, &p), Ok(ir));
        // NA to all-nodes must not be solicited.
        assert!(r.validate(&src, &addr::LINK_LOCAL_ALL_NODES, 255).is_err());
        assert_eq!(r.validate(&src, &dst, 255), Ok(()));
    }

    #[test]
    fn options_rules() {
        // Unknown option (type 14, nonce, 8 bytes) before SLLAO: skipped.
        let mut g = golden_ns();
        g.truncate(24);
        g.extend_from_slice(&[14, 1, 1, 2, 3, 4, 5, 6]);
        g.extend_from_slice(&[1, 1, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        let p = icmpv6::Packet::new_checked(&g[..]).expect("len");
        assert_eq!(
            NdiscRepr::parse(&p),
            Ok(NdiscRepr::NeighborSolicit {
                target_addr: a("fe80::2"),
                lladdr: Some(MAC)
            })
        );
        // Zero-length option.
        let mut z = golden_ns();
        z[25] = 0;
        let p = icmpv6::Packet::new_checked(&z[..]).expect("len");
        assert_eq!(NdiscRepr::parse(&p), Err(Error::ZeroLengthOption));
        // Overrun.
        let mut o = golden_ns();
        o[25] = 2;
        let p = icmpv6::Packet::new_checked(&o[..]).expect("len");
        assert_eq!(NdiscRepr::parse(&p), Err(Error::TlvOverrun));
        // Truncated, multicast target, bad code, DAD rules.
        let p = icmpv6::Packet::new_checked(&g[..23]).expect("len");
        assert_eq!(NdiscRepr::parse(&p), Err(Error::Truncated));
        let mut m = golden_ns();
        m[8] = 0xff;
        let p = icmpv6::Packet::new_checked(&m[..]).expect("len");
        assert!(matches!(NdiscRepr::parse(&p), Err(Error::Malformed(_))));
        let mut c = golden_ns();
        c[1] = 1;
        let p = icmpv6::Packet::new_checked(&c[..]).expect("len");
        assert!(matches!(NdiscRepr::parse(&p), Err(Error::Malformed(_))));
        let dad = NdiscRepr::NeighborSolicit {
            target_addr: a("fe80::2"),
            lladdr: None,
        };
        let sn = addr::solicited_node(&a("fe80::2"));
        assert_eq!(dad.validate(&Ipv6Addr::UNSPECIFIED, &sn, 255), Ok(()));
        assert!(dad
            .validate(&Ipv6Addr::UNSPECIFIED, &a("fe80::2"), 255)
            .is_err());
        let dad_ll = NdiscRepr::NeighborSolicit {
            target_addr: a("fe80::2"),
            lladdr: Some(MAC),
        };
        assert!(dad_ll.validate(&Ipv6Addr::UNSPECIFIED, &sn, 255).is_err());
        let rs = [133u8, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0];
        let p = icmpv6::Packet::new_checked(&rs[..]).expect("len");
        assert_eq!(icmpv6::Repr::parse(&p), Err(Error::UnrecognizedMessage));
    }

    fn arb_repr() -> impl Strategy<Value = NdiscRepr> {
        let target = any::<u128>()
            .prop_map(Ipv6Addr::from)
            .prop_filter("unicast", |a| !addr::is_multicast(a));
        let ll = proptest::option::of(any::<[u8; 6]>().prop_map(Address));
        (any::<bool>(), target, ll, any::<u8>()).prop_map(|(ns, target_addr, lladdr, f)| {
            if ns {
                NdiscRepr::NeighborSolicit {
                    target_addr,
                    lladdr,
                }
            } else {
                NdiscRepr::NeighborAdvert {
                    flags: NeighborFlags(f & 0xe0),
                    target_addr,
                    lladdr,
                }
            }
        })
    }

    proptest! {
        #[test]
        fn roundtrip(r in arb_repr()) {
            let ir = icmpv6::Repr::Ndisc(r);
            let (src, dst) = (a("fe80::1"), a("fe80::2"));
            let mut out = vec![0u8; ir.buffer_len()];
            ir.emit(&src, &dst, &mut icmpv6::Packet::new_unchecked(&mut out[..]));
            let p = icmpv6::Packet::new_checked(&out[..]).expect("len");
            prop_assert_eq!(icmpv6::Repr::parse_verified(&src, &dst, &p), Ok(ir));
        }

        #[test]
        fn options_no_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = NdiscOptionIter::new(&bytes).count();
            let mut m = vec![135u8, 0, 0, 0, 0, 0, 0, 0];
            m.extend_from_slice(&bytes);
            let p = icmpv6::Packet::new_checked(&m[..]).expect("len");
            let _ = NdiscRepr::parse(&p);
            m[0] = 136;
            let p = icmpv6::Packet::new_checked(&m[..]).expect("len");
            let _ = NdiscRepr::parse(&p);
        }
    }
}
