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
}
