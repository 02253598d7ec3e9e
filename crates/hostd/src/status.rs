//! The body of `GET /v1/status`: everything srmigd knows about its node, with counters.
//! `/metrics` is rendered from the same snapshot (see [`crate::metrics`]).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::port::PortIoStats;

/// Packets and bytes held in End.SBUF buffers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BufferStatus {
    /// `packets` held now.
    pub packets: u64,
    /// `bytes` held now (L3 bytes).
    pub bytes: u64,
}

/// Packet and byte counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    /// `packets`.
    pub packets: u64,
    /// `bytes`.
    pub bytes: u64,
}

impl From<srmig_dataplane::PacketBytes> for Traffic {
    fn from(p: srmig_dataplane::PacketBytes) -> Traffic {
        Traffic {
            packets: p.packets,
            bytes: p.bytes,
        }
    }
}

/// One port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStatus {
    /// `name`: the interface name.
    pub name: String,
    /// `kind`: `uplink` or `vm`.
    pub kind: String,
    /// `ifindex`: the interface's index, `null` while no interface of that name exists.
    pub ifindex: Option<u32>,
    /// `attached`: the interface is up with carrier and srmigd has a socket on it.
    pub attached: bool,
    /// `rx`: frames the engine received on the port.
    pub rx: Traffic,
    /// `tx`: frames the engine sent on the port.
    pub tx: Traffic,
    /// `io`: socket-level counters.
    pub io: PortIoStats,
    /// `socket`: `xdp` (AF_XDP) or `packet` (AF_PACKET ring) while attached, `null` otherwise
    /// (and for QEMU stream ports).
    #[serde(default)]
    pub socket: Option<String>,
    /// `mtu`: the MTU the engine checks egress packets against (node.toml's, or the
    /// interface's as read at attach), `null` if none is known.
    #[serde(default)]
    pub mtu: Option<u16>,
}

/// One VM known to this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmStatus {
    /// `name`.
    pub name: String,
    /// `state`: `absent`, `running` or `paused`.
    pub state: srmig_api::VmState,
    /// `port`: the VM port it attaches to.
    pub port: String,
    /// `local`: whether the last host config lists it in `local_vms` (`null` before the
    /// first host config).
    pub local: Option<bool>,
    /// `addresses`.
    pub addresses: Vec<IpAddr>,
    /// `buffer`: what its End.SBUF buffer holds now.
    pub buffer: BufferStatus,
    /// `rx`: packets received from it.
    pub rx: Traffic,
    /// `tx`: packets delivered to it.
    pub tx: Traffic,
    /// `held`: packets put in its buffer.
    pub held: u64,
    /// `released`: packets released from its buffer.
    pub released: u64,
    /// `expired`: packets that expired in its buffer.
    pub expired: u64,
    /// `dropped`: packets for it that were dropped.
    pub dropped: u64,
}

/// One installed local SID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SidStatus {
    /// `sid`.
    pub sid: Ipv6Addr,
    /// `behavior`: RFC spelling.
    pub behavior: String,
    /// `vm`: the VM parameter (End.S, End.SBUF), if any.
    pub vm: Option<String>,
    /// `traffic`: packets and bytes that matched it.
    pub traffic: Traffic,
}

/// One SR policy (ingress steering).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyStatus {
    /// `name`: `vm:<VM>` for policies from the host config.
    pub name: String,
    /// `headend`: RFC spelling.
    pub headend: String,
    /// `segments`.
    pub segments: Vec<Ipv6Addr>,
    /// `traffic`: packets and bytes steered into it.
    pub traffic: Traffic,
}

/// ICMPv6 and NDP generation counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IcmpStatus {
    /// `errors_sent`.
    pub errors_sent: u64,
    /// `rate_limited`.
    pub rate_limited: u64,
    /// `queue_full`.
    pub queue_full: u64,
    /// `suppressed`.
    pub suppressed: u64,
    /// `ndp_answered`.
    pub ndp_answered: u64,
}

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStatus {
    /// `name`: the host name.
    pub name: String,
    /// `generation`: the host config generation in force, `null` before the first one.
    pub generation: Option<u64>,
    /// `ports`, in port id order.
    pub ports: Vec<PortStatus>,
    /// `vms`, in configuration order.
    pub vms: Vec<VmStatus>,
    /// `sids`: installed local SIDs.
    pub sids: Vec<SidStatus>,
    /// `policies`: installed SR policies.
    pub policies: Vec<PolicyStatus>,
    /// `buffer`: all End.SBUF buffers together.
    pub buffer: BufferStatus,
    /// `drops`: every drop reason with its count.
    pub drops: BTreeMap<String, u64>,
    /// `icmp`.
    pub icmp: IcmpStatus,
}
