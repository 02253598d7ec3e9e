//! Ports: the Ethernet attachments of the node (uplinks to the underlay, VM ports).

use std::net::Ipv6Addr;

use crate::config::PortKind;

/// Index of a port, in configuration order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PortId(pub u16);

impl PortId {
    /// The index as `usize`.
    #[inline]
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// A configured port (installed state).
#[derive(Debug, Clone)]
pub(crate) struct Port {
    pub(crate) name: String,
    pub(crate) kind: PortKind,
    pub(crate) mac: [u8; 6],
    /// Uplink next-hop MAC.
    pub(crate) peer_mac: Option<[u8; 6]>,
    /// Address answered in neighbor discovery on this port.
    pub(crate) address: Option<Ipv6Addr>,
    /// Proxy NDP targets of this port (`PortConfig::proxy_ndp`).
    pub(crate) proxy_ndp: Vec<Ipv6Addr>,
    /// Proxy ARP targets of this port (`PortConfig::proxy_arp`).
    pub(crate) proxy_arp: Vec<u32>,
    /// IPv4 address answered in ARP on this port (uplinks).
    pub(crate) ipv4_address: Option<u32>,
    /// The table of the port's transit traffic (`PortConfig::table`; the main table 0 by
    /// default), resolved when the engine is built.
    pub(crate) table: crate::fib::TableIdx,
    /// The IP MTU, if one is set.
    pub(crate) mtu: Option<u16>,
    /// The longest frame that may leave this port: the MTU plus the Ethernet header, or
    /// `usize::MAX` without an MTU (one compare on egress).
    pub(crate) max_frame: usize,
}

impl Port {
    /// `max_frame` for an MTU.
    pub(crate) fn max_frame_for(mtu: Option<u16>) -> usize {
        mtu.map_or(usize::MAX, |m| {
            usize::from(m) + srmig_wire::ethernet::HEADER_LEN
        })
    }
}
