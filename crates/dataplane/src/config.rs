//! Node configuration: serde types written by humans in TOML, validated by
//! [`crate::Dataplane::new`] (and the runtime `install_*` calls) with errors that name the field.
//!
//! ```toml
//! locator = "fc00:0:1::/48"
//! source_address = "fc00:0:1::1"
//! infrastructure_prefixes = ["fc00::/16"]
//! gateway = { address = "2001:db8::1", mac = "02:00:00:00:00:01" }
//!
//! [[ports]]
//! name = "up0"
//! kind = "uplink"
//! mac = "02:00:00:00:01:00"
//! peer_mac = "02:00:00:00:ff:00"
//!
//! [[ports]]
//! name = "tap0"
//! kind = "vm"
//! mac = "02:00:00:00:01:01"
//!
//! [[routes]]
//! prefix = "::/0"
//! port = "up0"
//!
//! [[sids]]
//! sid = "fc00:0:1::e5"
//! behavior = "End.S"
//! vm = "vm1"
//!
//! [[vms]]
//! name = "vm1"
//! addresses = ["2001:db8:100::10"]
//! mac = "02:00:00:00:10:10"
//! port = "tap0"
//! state = "running"
//!
//! [[hmac_keys]]                      # RFC 8754 2.1.2 HMAC TLV keys (docs/hmac.md)
//! id = 7
//! algorithm = "hmac-sha256"
//! secret_file = "hmac-7.key"         # read by the driver, relative to the config file
//! ```
//!
//! `migration_hmac_key = 7` (top level) signs the controller's SR paths and the commit-fence
//! markers with that key (docs/hmac.md, "Migrations").

use core::fmt;
use core::str::FromStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use ipnet::{IpNet, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::behavior::{Behavior, Flavor, Headend, SbufMode};
use crate::vm::VmState;

/// A configuration error: the field path (e.g. `sids[2] (fc00:0:2::e5)`) and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A field holds a value the engine cannot accept.
    #[error("{path}: {reason}")]
    Invalid {
        /// Where in the configuration, e.g. `vms[0].port`.
        path: String,
        /// What is wrong, as a sentence fragment.
        reason: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(path: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// The field path of the error.
    pub fn path(&self) -> &str {
        match self {
            ConfigError::Invalid { path, .. } => path,
        }
    }
}

/// An Ethernet MAC address, written `02:00:00:00:00:01` in configuration.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Whether the group bit is set (multicast or broadcast).
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 1 != 0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<MacAddr, String> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in out.iter_mut() {
            let p = parts
                .next()
                .ok_or_else(|| format!("invalid MAC address \"{s}\": expected 6 octets"))?;
            if p.len() != 2 {
                return Err(format!("invalid MAC address \"{s}\": octet \"{p}\""));
            }
            *b = u8::from_str_radix(p, 16)
                .map_err(|_| format!("invalid MAC address \"{s}\": octet \"{p}\""))?;
        }
        if parts.next().is_some() {
            return Err(format!("invalid MAC address \"{s}\": more than 6 octets"));
        }
        Ok(MacAddr(out))
    }
}

impl TryFrom<String> for MacAddr {
    type Error = String;
    fn try_from(s: String) -> Result<MacAddr, String> {
        s.parse()
    }
}

impl From<MacAddr> for String {
    fn from(m: MacAddr) -> String {
        m.to_string()
    }
}

/// The whole configuration of one node (one srmigd virtual router).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's SRv6 locator. Every local SID must be inside it (or inside one of
    /// `extra_locators`); a destination inside it that matches no SID is dropped (`NoSid`)
    /// instead of being routed.
    pub locator: Ipv6Net,
    /// More locators of this node (RFC 8986 3.1: a node may have several), e.g. one per
    /// service or VPN. Same rules as `locator`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_locators: Vec<Ipv6Net>,
    /// This node's address in the underlay: source of ICMPv6 errors sent to the underlay from
    /// an uplink without an `address` of its own, and of encapsulations made here unless
    /// `encap_source` is set. Local: answered to ping, usable as a segment endpoint.
    pub source_address: Ipv6Addr,
    /// Outer source address of encapsulations made here (H.Encaps, H.Encaps.Red,
    /// End.B6.Encaps), when it must differ from `source_address` (e.g. an anycast tunnel
    /// source). Local like `source_address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encap_source: Option<Ipv6Addr>,
    /// The SR domain: SRv6 packets (with an SRH, or addressed to a local SID) are accepted only
    /// from uplink ports and only with a source inside one of these prefixes.
    #[serde(default)]
    pub infrastructure_prefixes: Vec<Ipv6Net>,
    /// Ethernet ports, in the order of their [`crate::PortId`]s.
    pub ports: Vec<PortConfig>,
    /// FIB routes.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Local SIDs.
    #[serde(default)]
    pub sids: Vec<SidConfig>,
    /// SR policies (precomputed headend rewrites), referenced by mappings and End.B6.Encaps.
    #[serde(default)]
    pub policies: Vec<PolicyConfig>,
    /// VMs attached to this node (including VMs expected to arrive by migration: `absent`).
    #[serde(default)]
    pub vms: Vec<VmConfig>,
    /// Ingress steering of traffic from local VMs, by destination.
    #[serde(default)]
    pub mappings: Vec<MappingConfig>,
    /// Transit steering: traffic arriving on an uplink into an SR policy, by destination and
    /// table (the headend of an SR domain, or an L3VPN provider edge).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steering: Vec<SteeringConfig>,
    /// End.SBUF buffer bounds.
    #[serde(default)]
    pub buffer: BufferConfig,
    /// ICMPv6 error rate limit.
    #[serde(default)]
    pub icmp: IcmpConfig,
    /// Commit-fence bounds (see [`crate::fence`]).
    #[serde(default)]
    pub fence: FenceConfig,
    /// The anycast default gateway seen by VMs (same on every node).
    pub gateway: GatewayConfig,
    /// HMAC keys (RFC 8754 2.1.2): verify HMAC TLVs at local SIDs, sign keyed policies.
    #[serde(default)]
    pub hmac_keys: Vec<HmacKeyConfig>,
    /// The `[[hmac_keys]]` id that signs what a migration sends through the SR domain from
    /// this node: the SR paths the controller installs here (the agent's `vm:<name>` policies)
    /// and the commit-fence markers this node sends down them. Set it, with the same key on
    /// every host, where uplinks verify or require HMAC (`hmac = "require"`): unsigned, those
    /// packets are dropped there (`HmacMissing`). Unset, they carry no HMAC TLV.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration_hmac_key: Option<u32>,
}

impl NodeConfig {
    /// Reads the secret of every `[[hmac_keys]]` entry from its `secret_file` (relative paths
    /// are taken from `base`, the configuration file's directory) through `read`: the engine
    /// opens no files, the driver passes `std::fs::read`. The secret is the file's bytes
    /// without one trailing newline (`\n` or `\r\n`), as typed at `ip sr hmac set`'s prompt.
    pub fn load_hmac_secrets(
        &mut self,
        base: &Path,
        mut read: impl FnMut(&Path) -> std::io::Result<Vec<u8>>,
    ) -> Result<(), ConfigError> {
        for (i, k) in self.hmac_keys.iter_mut().enumerate() {
            let path = base.join(&k.secret_file);
            let mut bytes = read(&path).map_err(|e| {
                ConfigError::invalid(
                    format!("hmac_keys[{i}].secret_file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            if bytes.last() == Some(&b'\n') {
                bytes.pop();
                if bytes.last() == Some(&b'\r') {
                    bytes.pop();
                }
            }
            if bytes.is_empty() {
                return Err(ConfigError::invalid(
                    format!("hmac_keys[{i}].secret_file"),
                    format!("{} holds no secret", path.display()),
                ));
            }
            k.secret = HmacSecret::new(bytes);
        }
        Ok(())
    }
}

/// One HMAC key (`[[hmac_keys]]`), as `ip sr hmac set KEYID sha256` configures Linux.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HmacKeyConfig {
    /// HMAC Key ID, as carried in the HMAC TLV (1..=4294967295; 0 is refused).
    pub id: u32,
    /// The algorithm: `hmac-sha256`.
    pub algorithm: HmacAlgorithm,
    /// Where the secret is: read when the configuration is loaded
    /// ([`NodeConfig::load_hmac_secrets`]), never written back.
    pub secret_file: PathBuf,
    /// The secret read from `secret_file`. Never serialized, never printed.
    #[serde(skip)]
    pub secret: HmacSecret,
}

/// An HMAC algorithm of [`HmacKeyConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HmacAlgorithm {
    /// HMAC-SHA256 (RFC 2104, FIPS 180-4): a 32-octet HMAC field.
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
}

/// A secret key. `Debug` prints no byte of it, serde skips it and it is zeroed when dropped.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct HmacSecret(Vec<u8>);

impl HmacSecret {
    /// Wraps secret bytes.
    pub fn new(bytes: Vec<u8>) -> HmacSecret {
        HmacSecret(bytes)
    }

    /// The secret bytes (for keying the MAC at install time).
    pub(crate) fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Whether no secret was loaded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for HmacSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("HmacSecret(not loaded)")
        } else {
            f.write_str("HmacSecret(<redacted>)")
        }
    }
}

impl Drop for HmacSecret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// What an uplink does with the HMAC TLV of SRv6 packets to local SIDs (RFC 8754 2.1.2.1
/// "local policy"; Linux's `seg6_require_hmac` sysctl: 1, 0, -1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HmacMode {
    /// Every packet needs an HMAC TLV that verifies (`seg6_require_hmac = 1`).
    Require,
    /// An HMAC TLV, when present, must verify; a packet without one passes (the default;
    /// unlike Linux's 0, srmig does not wait for the legacy SRH "H" flag to look for it).
    #[default]
    Verify,
    /// HMAC TLVs are not looked at (`seg6_require_hmac = -1`).
    Ignore,
}

/// What a port connects to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortKind {
    /// The underlay (fabric) side: SRv6 traffic enters and leaves here.
    Uplink,
    /// A VM attachment (tap, vhost-user, socket): only the VM's own traffic, no SRH.
    Vm,
}

/// One Ethernet port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// Unique name (referenced by routes, SIDs and VMs).
    pub name: String,
    /// `uplink` or `vm`.
    pub kind: PortKind,
    /// This port's MAC address: source MAC of frames sent on an uplink; frames to it are accepted.
    pub mac: MacAddr,
    /// The next hop's MAC on an uplink (destination MAC of every frame sent on it). Required for
    /// uplinks; VM ports use the VM's MAC instead.
    #[serde(default)]
    pub peer_mac: Option<MacAddr>,
    /// The FIB table of an uplink's transit traffic (a VRF): packets arriving on it that are
    /// not for this node or a local VM are steered ([`SteeringConfig`]) and routed in this
    /// table instead of the main one (0). Not on VM ports. Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    /// Addresses answered in neighbor discovery on this port for others (proxy NDP, as
    /// `ip -6 neigh add proxy ADDR dev PORT`): hosts on the link that believe an address
    /// on-link (e.g. their /64) reach it through this node. Not local addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proxy_ndp: Vec<Ipv6Addr>,
    /// An IPv4 address of an uplink, answered in ARP with the port's MAC. Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<Ipv4Addr>,
    /// IPv4 addresses answered in ARP on this uplink for others (proxy ARP for a listed set,
    /// as [`PortConfig::proxy_ndp`] is for IPv6; Linux's `proxy_arp` sysctl answers for every
    /// address routed out of another interface): hosts on the link that believe an address
    /// on-link reach it through this node. Not local addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proxy_arp: Vec<Ipv4Addr>,
    /// An IPv6 address of the port, answered in neighbor discovery (so the underlay router can
    /// resolve the next hop towards the locator). On an uplink it is one of the node's own
    /// addresses: answered to ping, a segment endpoint, and the source of the ICMPv6 errors
    /// this port sends (see docs/conformance.md). Optional.
    #[serde(default)]
    pub address: Option<Ipv6Addr>,
    /// The port's IP MTU (as `ip link set mtu`: the largest IP packet, Ethernet header not
    /// included), 1280..=9216. A packet longer than this after the node's processing is
    /// dropped (`PacketTooBig`) and answered with an ICMPv6 Packet Too Big. Without it the
    /// driver may set one at run time ([`crate::Dataplane::set_port_mtu`]; srmigd uses the
    /// interface's MTU); `None` there too means no MTU check (only the buffer bound).
    #[serde(default)]
    pub mtu: Option<u16>,
    /// Uplinks only: HMAC TLV policy for SRv6 packets received here and processed at a local
    /// SID: `require`, `verify` (default) or `ignore` ([`HmacMode`]).
    #[serde(default)]
    pub hmac: Option<HmacMode>,
}

/// One FIB route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Destination prefix, IPv6 or IPv4.
    pub prefix: IpNet,
    /// Egress port name. On an uplink the frame goes to the port's `peer_mac`; on a VM port to
    /// the MAC of the VM attached there.
    pub port: String,
    /// FIB table id (End.T / End.DT* `table`); 0 is the main table.
    #[serde(default)]
    pub table: u32,
}

/// One transit steering rule: an IPv6 or IPv4 packet arriving on an uplink whose port is in
/// `table` (see [`PortConfig::table`]) and whose destination is in `prefix` gets `policy`'s
/// headend behavior, then goes to the policy's first segment through the main table (as
/// iproute2's `ip route add PREFIX encap seg6 mode encap segs ... table N`). The longest
/// matching rule wins; a matching rule wins over the table's routes. Local SIDs, the node's
/// own addresses and local VMs are reached before any rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SteeringConfig {
    /// Destination prefix, IPv6 or IPv4.
    pub prefix: IpNet,
    /// The SR policy (`[[policies]]` name). IPv4 destinations need H.Encaps or H.Encaps.Red.
    pub policy: String,
    /// The table whose ports' traffic the rule applies to (0: ports without `table`).
    #[serde(default)]
    pub table: u32,
}

/// One local SID. Which of the optional fields are required or allowed depends on `behavior`
/// (see [`crate::behavior::BEHAVIORS`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SidConfig {
    /// The SID (a /128 inside the locator; with NEXT-C-SID, the block+node prefix padded with zeros).
    pub sid: Ipv6Addr,
    /// The behavior, RFC spelling: `End`, `End.X`, `End.T`, `End.DX6`, `End.DX4`, `End.DT6`,
    /// `End.DT4`, `End.DT46`, `End.B6.Encaps`, `End.S`, `End.SBUF`.
    pub behavior: Behavior,
    /// Flavors: `PSP`, `USP`, `USD`, `NEXT-C-SID`.
    #[serde(default)]
    pub flavors: Vec<Flavor>,
    /// L3 adjacency neighbor (End.X, End.DX6, End.DX4).
    #[serde(default)]
    pub nexthop: Option<IpAddr>,
    /// L3 adjacency port name (End.X, End.DX6, End.DX4).
    #[serde(default)]
    pub port: Option<String>,
    /// FIB table id (End.T, End.DT6, End.DT4, End.DT46; default 0).
    #[serde(default)]
    pub table: Option<u32>,
    /// SR policy name (End.B6.Encaps).
    #[serde(default)]
    pub policy: Option<String>,
    /// VM name (End.S, End.SBUF). Without it, the inner destination address selects the VM.
    #[serde(default)]
    pub vm: Option<String>,
    /// End.SBUF mode: `buffer` (default) or `drop`.
    #[serde(default)]
    pub mode: Option<SbufMode>,
    /// NEXT-C-SID: locator block length in bits.
    #[serde(default)]
    pub locator_block_len: Option<u8>,
    /// NEXT-C-SID: locator node (+ function) length in bits, i.e. the C-SID length.
    #[serde(default, alias = "node_len")]
    pub locator_node_len: Option<u8>,
}

impl SidConfig {
    /// A SID with only the behavior set (convenience for programmatic installs).
    pub fn new(sid: Ipv6Addr, behavior: Behavior) -> SidConfig {
        SidConfig {
            sid,
            behavior,
            flavors: Vec::new(),
            nexthop: None,
            port: None,
            table: None,
            policy: None,
            vm: None,
            mode: None,
            locator_block_len: None,
            locator_node_len: None,
        }
    }
}

/// How the outer flow label of an encapsulation is chosen (RFC 6437, RFC 8986 5.1 S04).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowLabelMode {
    /// A hash of the inner addresses, flow label and protocol (default).
    #[default]
    Hash,
    /// Copy the inner flow label (0 for IPv4).
    Copy,
}

/// One SR policy: a headend behavior and a segment list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Unique name (referenced by mappings and End.B6.Encaps). `native` is reserved.
    pub name: String,
    /// `H.Encaps`, `H.Encaps.Red` or `H.Insert`.
    pub headend: Headend,
    /// Segments in traversal order (the first one is visited first).
    pub segments: Vec<Ipv6Addr>,
    /// Outer hop limit of encapsulations (default 64).
    #[serde(default)]
    pub hop_limit: Option<u8>,
    /// Outer flow label: `hash` (default) or `copy`.
    #[serde(default)]
    pub flow_label: FlowLabelMode,
    /// H.Encaps / H.Encaps.Red: the id of an `[[hmac_keys]]` key; the SRH then carries an HMAC
    /// TLV signed with it (RFC 8754 2.1.2), computed once when the policy is installed.
    #[serde(default)]
    pub hmac_key: Option<u32>,
}

/// A VM attached (or expected) here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// Unique name.
    pub name: String,
    /// The VM's addresses (IPv6 and IPv4): the only sources accepted from its port, and the
    /// destinations delivered to it.
    pub addresses: Vec<IpAddr>,
    /// The VM's MAC (destination MAC of frames delivered to it).
    pub mac: MacAddr,
    /// The VM port it is attached to.
    pub port: String,
    /// Initial state: `absent`, `running` or `paused` (default `absent`).
    #[serde(default)]
    pub state: VmState,
}

/// One ingress steering entry: traffic from local VMs to `vm_address` uses `policy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {
    /// Destination address or prefix (IPv6 or IPv4). Exact /128 (/32) entries win over prefixes.
    pub vm_address: IpNet,
    /// A policy name, or `native` for plain FIB forwarding.
    pub policy: String,
}

/// End.SBUF buffer bounds. Storage is preallocated once, sized by these bounds (about
/// `global_bytes` plus [`crate::buffer::CHUNK_SIZE`] bytes per packet: see [`crate::buffer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    /// Packets held per VM.
    pub per_vm_packets: u32,
    /// Bytes held per VM.
    pub per_vm_bytes: u64,
    /// Packets held in total.
    pub global_packets: u32,
    /// Bytes held in total.
    pub global_bytes: u64,
    /// Maximum age of a held packet in milliseconds; older ones are dropped (`BufferExpired`).
    pub max_age_ms: u64,
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            per_vm_packets: 2048,
            per_vm_bytes: 2 << 20,
            global_packets: 8192,
            global_bytes: 8 << 20,
            max_age_ms: 1000,
        }
    }
}

/// Commit-fence bounds (`[fence]` in node.toml; see [`crate::fence`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FenceConfig {
    /// How long direct packets from one ingress wait for its marker, in milliseconds; then
    /// they are delivered anyway (counted as a fence timeout).
    pub timeout_ms: u64,
    /// Packets held per (VM, ingress).
    pub per_ingress_packets: u32,
    /// Packets held by every fence together.
    pub global_packets: u32,
    /// Bytes held by every fence together.
    pub global_bytes: u64,
}

impl Default for FenceConfig {
    fn default() -> Self {
        FenceConfig {
            timeout_ms: 500,
            per_ingress_packets: 4096,
            global_packets: 8192,
            global_bytes: 8 << 20,
        }
    }
}

/// ICMPv6 error rate limit (token bucket, RFC 4443 section 2.4 (f)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IcmpConfig {
    /// Sustained errors per second.
    pub rate_per_sec: u32,
    /// Bucket depth.
    pub burst: u32,
}

impl Default for IcmpConfig {
    fn default() -> Self {
        IcmpConfig {
            rate_per_sec: 100,
            burst: 10,
        }
    }
}

/// The anycast default gateway on VM ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Gateway IPv6 address (answered in NDP on VM ports).
    pub address: Ipv6Addr,
    /// Gateway MAC (source MAC of frames sent to VMs).
    pub mac: MacAddr,
    /// Gateway IPv4 address: answered in ARP on VM ports with `mac` (the anycast gateway of
    /// IPv4 guests). Optional.
    #[serde(default)]
    pub ipv4_address: Option<Ipv4Addr>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parse_and_display() {
        let m: MacAddr = "02:00:0a:ff:00:01".parse().unwrap();
        assert_eq!(m.0, [2, 0, 0x0a, 0xff, 0, 1]);
        assert_eq!(m.to_string(), "02:00:0a:ff:00:01");
        assert!(!m.is_multicast());
        assert!("02:00:00:00:00".parse::<MacAddr>().is_err());
        assert!("02:00:00:00:00:00:00".parse::<MacAddr>().is_err());
        assert!("02:00:00:00:00:zz".parse::<MacAddr>().is_err());
        assert!("2:00:00:00:00:00".parse::<MacAddr>().is_err());
    }

    #[test]
    fn hmac_key_config() {
        let mut c: NodeConfig = toml::from_str(
            r#"
            locator = "fc00:0:1::/48"
            source_address = "fc00:0:1::1"
            ports = []
            gateway = { address = "2001:db8::1", mac = "02:00:00:00:00:01" }
            [[hmac_keys]]
            id = 7
            algorithm = "hmac-sha256"
            secret_file = "k7"
            [[hmac_keys]]
            id = 8
            algorithm = "hmac-sha256"
            secret_file = "/abs/k8"
            "#,
        )
        .unwrap();
        assert!(c.hmac_keys[0].secret.is_empty());
        let mut asked = Vec::new();
        c.load_hmac_secrets(Path::new("/etc/srmig"), |p| {
            asked.push(p.to_owned());
            Ok(b"s3cret\r\n".to_vec())
        })
        .unwrap();
        assert_eq!(
            asked,
            [PathBuf::from("/etc/srmig/k7"), PathBuf::from("/abs/k8")]
        );
        assert_eq!(c.hmac_keys[0].secret.expose(), b"s3cret");
        // Never printed, never serialized.
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("s3cret") && dbg.contains("<redacted>"),
            "{dbg}"
        );
        let ser = toml::to_string(&c).unwrap();
        assert!(
            !ser.contains("s3cret") && ser.contains("secret_file"),
            "{ser}"
        );
        // Unreadable and empty files name the field and the path.
        let e = c
            .load_hmac_secrets(Path::new("/etc/srmig"), |_| {
                Err(std::io::Error::from(std::io::ErrorKind::NotFound))
            })
            .unwrap_err();
        assert_eq!(e.path(), "hmac_keys[0].secret_file");
        assert!(e.to_string().contains("/etc/srmig/k7"), "{e}");
        let e = c
            .load_hmac_secrets(Path::new("/"), |_| Ok(b"\n".to_vec()))
            .unwrap_err();
        assert!(e.to_string().contains("holds no secret"), "{e}");
        // A wrong algorithm is a parse error naming the field.
        let e = toml::from_str::<HmacKeyConfig>(
            "id = 1\nalgorithm = \"hmac-sha1\"\nsecret_file = \"k\"",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("algorithm") && e.contains("hmac-sha256"), "{e}");
    }

    #[test]
    fn error_names_the_path() {
        let e = ConfigError::invalid("vms[0].port", "no port named \"tap9\"");
        assert_eq!(e.to_string(), "vms[0].port: no port named \"tap9\"");
        assert_eq!(e.path(), "vms[0].port");
    }
}
