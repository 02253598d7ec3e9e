//! The forwarding engine: [`Dataplane`] and its per-packet pipeline.
//!
//! ```text
//!  frame ─► port/Ethernet checks ─┬─ IPv6 ─┬─ uplink: local SID? ─► endpoint behavior ─┐
//!                                 │        │          local VM?  ─► deliver            │
//!                                 │        │          else       ─► FIB (transit)      │
//!                                 │        └─ VM port: source check, NDP for gateway,  │
//!                                 │                    no SRH/SID, local VM / mapping  │
//!                                 │                    (H.Encaps[.Red] / H.Insert /    │
//!                                 │                    native) ─► FIB ─► local SID? ───┘
//!                                 └─ IPv4 ─► VM / mapping (H.Encaps with NH 4) / FIB
//! ```
//!
//! Egress: every `Tx(port)` verdict becomes final in one place (`conclude`, and the End.SBUF
//! release in `poll_transmit`): a frame longer than the port's MTU plus its Ethernet header is
//! dropped (`PacketTooBig`) and answered with an ICMPv6 Packet Too Big to the packet's original
//! source (the VM when this node encapsulated or inserted; see `packet_too_big`). Ports without
//! an MTU are only bounded by the buffer ([`crate::BUF_CAPACITY`]); generated packets (at most
//! 1294 bytes) always fit an MTU of 1280 or more and are not checked.
//!
//! Sans-IO: `process_batch(now, batch)` writes a [`Verdict`] per packet; generated packets
//! (ICMPv6 errors, NDP answers, packets released from End.SBUF buffers) come out of
//! [`Dataplane::poll_transmit`]; buffer expiry is driven by `poll_timeout`/`handle_timeout`.
//! The driver contract: after each `process_batch` and each `handle_vm_state`, call
//! `poll_transmit` until it returns `None`. Order towards a VM is preserved regardless: while a
//! VM's buffer is non-empty, new packets for it are appended to the buffer (`Held`) instead of
//! being delivered ahead of it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

use ipnet::{IpNet, Ipv6Net};
use srmig_wire::ethernet::{self, EtherType};
use srmig_wire::ext::{OptionsVerdict, UnknownOptionAction};
use srmig_wire::ipv4::field as v4f;
use srmig_wire::ipv6::field as v6f;
use srmig_wire::{checksum, icmpv6, ipv4, ipv6, srh, IpProtocol};

use crate::batch::{Batch, PacketBuf, Verdict};
use crate::behavior::{Flavor, FlavorSet, Headend, SbufMode};
use crate::buffer::SbufStore;
use crate::chain::{walk, Chain};
use crate::config::{
    ConfigError, FlowLabelMode, MappingConfig, NodeConfig, PolicyConfig, PortKind, SidConfig,
    SteeringConfig,
};
use crate::counters::{Counters, CountersView, PacketBytes};
use crate::drop::DropReason;
use crate::fence::{self, Fences, Gate};
use crate::fib::{Adjacency, Fib, Lpm, TableIdx};
use crate::hash::{self, AddrHash};
use crate::hmac::HmacTable;
use crate::icmp::{
    emit_error, emit_icmpv4_error, emit_na, GenQueue, RateLimiter, DEST_UNREACHABLE_BEYOND_SCOPE,
    DEST_UNREACHABLE_NO_ROUTE, DEST_UNREACHABLE_PORT, ICMPV4_DEST_UNREACHABLE, ICMPV4_FRAG_NEEDED,
    ICMPV4_NET_UNREACHABLE, ICMPV4_TIME_EXCEEDED, ICMPV6_DEST_UNREACHABLE, ICMPV6_ECHO_REPLY,
    ICMPV6_ECHO_REQUEST, ICMPV6_PACKET_TOO_BIG, ICMPV6_PARAM_PROBLEM, ICMPV6_TIME_EXCEEDED,
    MIN_MTU, NDP_NEIGHBOR_SOLICIT, PARAM_PROBLEM_ERRONEOUS_FIELD, PARAM_PROBLEM_SR_UPPER_LAYER,
    PARAM_PROBLEM_UNRECOGNIZED_OPTION,
};
use crate::policy::{MappingTable, Policy, PolicyId, Steering};
use crate::port::{Port, PortId};
use crate::sid::{self, Resolver, SidAction, SidId, SidTable};
use crate::time::Instant;
use crate::vm::{Vm, VmId, VmState, VmTable};

/// How many local SIDs one packet may traverse in a single pass (e.g. an encapsulation whose
/// first segment is local, then End.S, then a local End.SBUF).
const MAX_LOCAL_PASSES: u8 = 4;

const ALL_NODES: [u8; 16] = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];

/// Per-packet context that does not change while a packet is processed.
#[derive(Debug, Clone, Copy)]
struct Ctx {
    now: Instant,
    ingress: PortId,
    kind: PortKind,
    /// Source MAC of the received frame (where ICMPv6 errors and NDP answers go).
    src_mac: [u8; 6],
}

/// The SRv6 forwarding engine of one node.
///
/// `Clone` copies every table and buffer, the End.SBUF and fence stores whole (their
/// preallocated size, made resident): an exact copy for tests, fuzzing and snapshots, not
/// something to do on the data path.
#[derive(Debug, Clone)]
pub struct Dataplane {
    locator: u128,
    locator_mask: u128,
    /// Every locator (`locator`, then `extra_locators`) and, for the packet path, each as
    /// (network, mask) after the first.
    locator_nets: Vec<Ipv6Net>,
    extra_locators: Vec<(u128, u128)>,
    source_address: [u8; 16],
    /// Outer source of encapsulations made here (`encap_source`, else `source_address`).
    encap_source: [u8; 16],
    /// This node's own unicast addresses on the uplink side: `source_address`,
    /// `encap_source` and every uplink's `address` (see [`Dataplane::local_v6`]).
    local_addrs: Vec<u128>,
    infrastructure: Vec<(u128, u128)>,
    gateway: [u8; 16],
    gateway_mac: [u8; 6],
    /// The gateway's IPv4 address (answered in ARP on VM ports).
    gateway_v4: Option<u32>,
    ports: Vec<Port>,
    fib: Fib,
    sids: SidTable,
    policies: Vec<Policy>,
    /// Policy ids by name: a host with N VMs has N policies, and the control plane names them
    /// on every mapping it installs (a linear search was O(N) string compares per install).
    policy_names: HashMap<String, PolicyId>,
    /// Ids of removed policies, reused by the next new ones (a host that sees thousands of
    /// VMs come and go keeps as many policy slots as it had policies at once).
    free_policies: Vec<PolicyId>,
    vms: VmTable,
    /// Mappings shorter than /128 (IPv6) and all IPv4 mappings; IPv6 /128 mappings share
    /// the VM address table ([`crate::vm::AddrEntry`]).
    mappings: MappingTable,
    /// Whether every SID prefix lies inside the locator (then a destination outside the
    /// locator needs no SID lookup).
    sids_within_locator: bool,
    buffers: SbufStore,
    /// VMs whose buffer is being released (Running with a non-empty buffer), in order.
    releasing: Vec<VmId>,
    /// Commit fences ([`crate::fence`]).
    fences: Fences,
    gen: GenQueue,
    icmp: RateLimiter,
    counters: Counters,
    /// HMAC keys and each port's HMAC mode (RFC 8754 2.1.2, `crate::hmac`).
    hmac: HmacTable,
    /// The key that signs the commit-fence markers sent from here (`migration_hmac_key`, an
    /// id in `hmac`).
    marker_key: Option<u32>,
}

fn mask_of(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

impl Dataplane {
    /// Validates `cfg` completely and builds the engine (all storage is allocated here). The
    /// exact-match tables hash with [`hash::DEFAULT_SEED`]; drivers facing untrusted traffic
    /// should prefer [`Dataplane::with_hash_seed`] with a random seed.
    pub fn new(cfg: NodeConfig) -> Result<Dataplane, ConfigError> {
        Dataplane::with_hash_seed(cfg, hash::DEFAULT_SEED)
    }

    /// [`Dataplane::new`] with the tables' hash keys derived from `seed` (see [`hash`]).
    pub fn with_hash_seed(cfg: NodeConfig, seed: u64) -> Result<Dataplane, ConfigError> {
        Dataplane::build(cfg, seed, true)
    }

    /// Validates `cfg` exactly as [`Dataplane::new`] does (the same code installs every
    /// table), without allocating packet storage (End.SBUF chunks and rings, the ICMP
    /// queue): what a config apply checks a new configuration with before touching the live
    /// engine. The default End.SBUF storage alone is 12 MiB, written in part (chunk lists)
    /// on every build.
    pub fn validate(cfg: NodeConfig) -> Result<(), ConfigError> {
        Dataplane::build(cfg, hash::DEFAULT_SEED, false).map(drop)
    }

    /// Builds the engine; `storage`: allocate packet storage (false: the engine only
    /// validates, and is dropped).
    fn build(cfg: NodeConfig, seed: u64, storage: bool) -> Result<Dataplane, ConfigError> {
        let hasher = AddrHash::new(seed);
        let locator_net = cfg.locator.trunc();
        let mut locator_nets = vec![locator_net];
        for (i, l) in cfg.extra_locators.iter().enumerate() {
            let l = l.trunc();
            if locator_nets.iter().any(|o| o.contains(&l) || l.contains(o)) {
                return Err(ConfigError::invalid(
                    format!("extra_locators[{i}]"),
                    format!("{l} overlaps another locator"),
                ));
            }
            locator_nets.push(l);
        }
        let extra_locators = locator_nets[1..]
            .iter()
            .map(|l| {
                let m = mask_of(l.prefix_len());
                (u128::from(l.network()) & m, m)
            })
            .collect();
        if cfg.source_address.is_multicast() || cfg.source_address.is_unspecified() {
            return Err(ConfigError::invalid(
                "source_address",
                "must be a unicast address",
            ));
        }
        if let Some(a) = cfg.encap_source {
            if a.is_multicast() || a.is_unspecified() || a.is_loopback() {
                return Err(ConfigError::invalid(
                    "encap_source",
                    "must be a unicast address",
                ));
            }
        }
        if cfg.gateway.address.is_multicast() || cfg.gateway.address.is_unspecified() {
            return Err(ConfigError::invalid(
                "gateway.address",
                "must be a unicast address",
            ));
        }
        if cfg.gateway.mac.is_multicast() {
            return Err(ConfigError::invalid("gateway.mac", "must be a unicast MAC"));
        }
        // Ports.
        if cfg.ports.len() > usize::from(u16::MAX) {
            return Err(ConfigError::invalid("ports", "too many ports"));
        }
        let mut ports = Vec::with_capacity(cfg.ports.len());
        for (i, p) in cfg.ports.iter().enumerate() {
            if p.name.is_empty() {
                return Err(ConfigError::invalid(
                    format!("ports[{i}].name"),
                    "must not be empty",
                ));
            }
            if cfg.ports[..i].iter().any(|q| q.name == p.name) {
                return Err(ConfigError::invalid(
                    format!("ports[{i}].name"),
                    format!("duplicate port name \"{}\"", p.name),
                ));
            }
            if p.mac.is_multicast() {
                return Err(ConfigError::invalid(
                    format!("ports[{i}].mac"),
                    "must be a unicast MAC",
                ));
            }
            if p.kind == PortKind::Uplink && p.peer_mac.is_none() {
                return Err(ConfigError::invalid(
                    format!("ports[{i}].peer_mac"),
                    "an uplink needs the MAC of its next hop",
                ));
            }
            check_mtu(&format!("ports[{i}].mtu"), p.mtu)?;
            if !p.proxy_arp.is_empty() && p.kind != PortKind::Uplink {
                return Err(ConfigError::invalid(
                    format!("ports[{i}].proxy_arp"),
                    "only an uplink answers ARP for others (VM ports answer for the gateway)",
                ));
            }
            if let Some(a) = p.proxy_arp.iter().find(|a| {
                a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback()
            }) {
                return Err(ConfigError::invalid(
                    format!("ports[{i}].proxy_arp"),
                    format!("{a} is not a unicast address"),
                ));
            }
            if p.table.is_some() && p.kind != PortKind::Uplink {
                return Err(ConfigError::invalid(
                    format!("ports[{i}].table"),
                    "only an uplink can be bound to a table",
                ));
            }
            ports.push(Port {
                name: p.name.clone(),
                kind: p.kind,
                mac: p.mac.0,
                peer_mac: p.peer_mac.map(|m| m.0),
                address: p.address,
                ipv4_address: p.ipv4_address.map(u32::from),
                proxy_ndp: p.proxy_ndp.clone(),
                proxy_arp: p.proxy_arp.iter().map(|a| u32::from(*a)).collect(),
                table: TableIdx(0),
                mtu: p.mtu,
                max_frame: Port::max_frame_for(p.mtu),
            });
        }
        let port_by_name = |path: String, name: &str| -> Result<PortId, ConfigError> {
            ports
                .iter()
                .position(|p| p.name == name)
                .map(|i| PortId(i as u16))
                .ok_or_else(|| ConfigError::invalid(path, format!("no port named \"{name}\"")))
        };
        // VMs.
        let mut vms = VmTable::new(hasher);
        for (i, v) in cfg.vms.iter().enumerate() {
            if v.name.is_empty() {
                return Err(ConfigError::invalid(
                    format!("vms[{i}].name"),
                    "must not be empty",
                ));
            }
            if vms.by_name(&v.name).is_some() {
                return Err(ConfigError::invalid(
                    format!("vms[{i}].name"),
                    format!("duplicate VM name \"{}\"", v.name),
                ));
            }
            let port = port_by_name(format!("vms[{i}].port"), &v.port)?;
            if ports[port.index()].kind != PortKind::Vm {
                return Err(ConfigError::invalid(
                    format!("vms[{i}].port"),
                    format!("\"{}\" is an uplink, not a VM port", v.port),
                ));
            }
            if v.mac.is_multicast() {
                return Err(ConfigError::invalid(
                    format!("vms[{i}].mac"),
                    "must be a unicast MAC",
                ));
            }
            if v.addresses.is_empty() {
                return Err(ConfigError::invalid(
                    format!("vms[{i}].addresses"),
                    "a VM needs an address",
                ));
            }
            for (j, a) in v.addresses.iter().enumerate() {
                let bad = match a {
                    IpAddr::V6(a) => {
                        a.is_multicast()
                            || a.is_unspecified()
                            || a.is_loopback()
                            || (a.segments()[0] & 0xffc0) == 0xfe80
                    }
                    IpAddr::V4(a) => {
                        a.is_multicast()
                            || a.is_unspecified()
                            || a.is_broadcast()
                            || a.is_loopback()
                    }
                };
                if bad {
                    return Err(ConfigError::invalid(
                        format!("vms[{i}].addresses[{j}]"),
                        format!("{a} is not a global unicast address"),
                    ));
                }
                if vms.owner_of(*a).is_some() || v.addresses[..j].contains(a) {
                    return Err(ConfigError::invalid(
                        format!("vms[{i}].addresses[{j}]"),
                        format!("{a} is already used by another VM"),
                    ));
                }
            }
            vms.push(Vm {
                name: v.name.clone(),
                addresses: v.addresses.clone(),
                mac: v.mac.0,
                port,
                state: v.state,
                resumed_holding: false,
            });
        }
        let buffers = if storage {
            SbufStore::new(cfg.buffer, vms.len())?
        } else {
            SbufStore::unallocated(cfg.buffer, vms.len())?
        };
        let fences = Fences::new(cfg.fence, vms.len())?;
        if cfg.buffer.max_age_ms == 0 {
            return Err(ConfigError::invalid(
                "buffer.max_age_ms",
                "must be at least 1",
            ));
        }
        let mut infrastructure = Vec::with_capacity(cfg.infrastructure_prefixes.len());
        for p in &cfg.infrastructure_prefixes {
            let m = mask_of(p.prefix_len());
            infrastructure.push((u128::from(p.network()) & m, m));
        }
        let hmac = HmacTable::build(&cfg.hmac_keys, &cfg.ports)?;
        if let Some(id) = cfg.migration_hmac_key {
            if hmac.key(id).is_none() {
                return Err(ConfigError::invalid(
                    "migration_hmac_key",
                    format!("no key with id {id} in [[hmac_keys]]"),
                ));
            }
        }
        let encap_source = cfg.encap_source.unwrap_or(cfg.source_address);
        let mut local_addrs = vec![u128::from(cfg.source_address), u128::from(encap_source)];
        local_addrs.extend(
            cfg.ports
                .iter()
                .filter(|p| p.kind == PortKind::Uplink)
                .filter_map(|p| p.address)
                .map(u128::from),
        );
        local_addrs.sort_unstable();
        local_addrs.dedup();
        let mut dp = Dataplane {
            locator: u128::from(locator_net.network()),
            locator_mask: mask_of(locator_net.prefix_len()),
            locator_nets,
            extra_locators,
            source_address: cfg.source_address.octets(),
            encap_source: encap_source.octets(),
            local_addrs,
            infrastructure,
            gateway: cfg.gateway.address.octets(),
            gateway_mac: cfg.gateway.mac.0,
            gateway_v4: cfg.gateway.ipv4_address.map(u32::from),
            fib: Fib::new(hasher),
            sids: SidTable::with_hasher(hasher),
            policies: Vec::new(),
            policy_names: HashMap::new(),
            free_policies: Vec::new(),
            counters: Counters::new(ports.len(), vms.len()),
            ports,
            vms,
            mappings: MappingTable::with_hasher(hasher),
            sids_within_locator: true,
            buffers,
            releasing: Vec::with_capacity(cfg.vms.len()),
            fences,
            gen: if storage {
                GenQueue::new()
            } else {
                GenQueue::unallocated()
            },
            icmp: RateLimiter::new(cfg.icmp),
            hmac,
            marker_key: cfg.migration_hmac_key,
        };
        // Routes.
        for (i, r) in cfg.routes.iter().enumerate() {
            let path = format!("routes[{i}]");
            let port = dp.port_id(&r.port).ok_or_else(|| {
                ConfigError::invalid(
                    format!("{path}.port"),
                    format!("no port named \"{}\"", r.port),
                )
            })?;
            let adj = dp.resolver().adjacency(&path, port)?;
            let table = dp.fib.table_for(&path, r.table)?;
            insert_prefix(
                (&mut table.v6, &mut table.v4),
                r.prefix,
                adj,
                &path,
                format_args!("route for {} in table {}", r.prefix.trunc(), r.table),
            )?;
        }
        // Policies.
        for (i, p) in cfg.policies.iter().enumerate() {
            if dp.policy_names.contains_key(&p.name) {
                return Err(ConfigError::invalid(
                    format!("policies[{i}].name"),
                    format!("duplicate policy name \"{}\"", p.name),
                ));
            }
            dp.install_policy_at(&format!("policies[{i}]"), p)?;
        }
        // SIDs.
        for (i, s) in cfg.sids.iter().enumerate() {
            dp.install_sid_at(&format!("sids[{i}] ({})", s.sid), s)?;
        }
        // Tables of the ports (VRFs) and transit steering.
        for (i, p) in cfg.ports.iter().enumerate() {
            if let Some(id) = p.table {
                let t = dp.fib.ensure_table(id).ok_or_else(|| {
                    ConfigError::invalid(format!("ports[{i}].table"), "too many FIB tables")
                })?;
                dp.ports[i].table = t;
            }
        }
        for (i, r) in cfg.steering.iter().enumerate() {
            dp.add_steering(&format!("steering[{i}]"), r)?;
        }
        // Mappings.
        for (i, m) in cfg.mappings.iter().enumerate() {
            dp.set_mapping_at(&format!("mappings[{i}]"), m)?;
        }
        Ok(dp)
    }

    /// Installs one transit steering rule (`[[steering]]`).
    fn add_steering(&mut self, path: &str, r: &SteeringConfig) -> Result<(), ConfigError> {
        let p = self.policy_id(&r.policy).ok_or_else(|| {
            ConfigError::invalid(
                format!("{path}.policy"),
                format!("no policy named \"{}\"", r.policy),
            )
        })?;
        let v4 = matches!(r.prefix, IpNet::V4(_));
        if v4 && self.policies[p.index()].headend == Headend::HInsert {
            return Err(ConfigError::invalid(
                format!("{path}.policy"),
                "H.Insert cannot carry IPv4: use H.Encaps or H.Encaps.Red",
            ));
        }
        let table = self.fib.table_for(path, r.table)?;
        insert_prefix(
            (&mut table.steer_v6, &mut table.steer_v4),
            r.prefix,
            p,
            path,
            format_args!(
                "steering rule for {} in table {}",
                r.prefix.trunc(),
                r.table
            ),
        )?;
        Ok(())
    }

    fn resolver(&mut self) -> Resolver<'_> {
        Resolver {
            locators: &self.locator_nets,
            ports: &self.ports,
            vms: &self.vms,
            policies: &self.policies,
            fib: &mut self.fib,
            gateway_mac: self.gateway_mac,
        }
    }

    // ----------------------------------------------------------------------------------------
    // Runtime changes (control plane; may allocate)
    // ----------------------------------------------------------------------------------------

    /// Installs a local SID, validated against the behavior table.
    pub fn install_sid(&mut self, cfg: SidConfig) -> Result<SidId, ConfigError> {
        let path = format!("sid ({})", cfg.sid);
        self.install_sid_at(&path, &cfg)
    }

    fn install_sid_at(&mut self, path: &str, cfg: &SidConfig) -> Result<SidId, ConfigError> {
        let entry = sid::build(path, cfg, &mut self.resolver())?;
        let id = self.sids.insert(path, entry)?;
        self.sids_within_locator = self.sids.min_prefix_len() >= self.longest_locator();
        if self.counters.sids.len() <= id.index() {
            self.counters
                .sids
                .resize(id.index() + 1, PacketBytes::default());
        }
        self.counters.sids[id.index()] = PacketBytes::default();
        Ok(id)
    }

    /// Removes the SID installed at `sid`; returns its (now free) id.
    pub fn remove_sid(&mut self, sid: Ipv6Addr) -> Option<SidId> {
        let id = self.sids.remove(sid);
        self.sids_within_locator = self.sids.min_prefix_len() >= self.longest_locator();
        id
    }

    /// Installs an SR policy, or replaces the policy of the same name (keeping its id, so
    /// mappings and End.B6.Encaps SIDs follow the new segment list atomically).
    pub fn install_policy(&mut self, cfg: PolicyConfig) -> Result<PolicyId, ConfigError> {
        let path = format!("policy \"{}\"", cfg.name);
        self.install_policy_at(&path, &cfg)
    }

    fn install_policy_at(
        &mut self,
        path: &str,
        cfg: &PolicyConfig,
    ) -> Result<PolicyId, ConfigError> {
        let p = Policy::build(path, cfg, Ipv6Addr::from(self.encap_source), &self.hmac)?;
        if let Some(&id) = self.policy_names.get(&cfg.name) {
            let i = id.index();
            if p.headend == Headend::HInsert && self.sids.uses_policy(id) {
                return Err(ConfigError::invalid(
                    format!("{path}.headend"),
                    "policy is used by an End.B6.Encaps SID and must stay an encapsulation",
                ));
            }
            self.policies[i] = p;
            return Ok(id);
        }
        let id = match self.free_policies.pop() {
            Some(id) => {
                self.policies[id.index()] = p;
                self.counters.policies[id.index()] = PacketBytes::default();
                id
            }
            None => {
                let id = PolicyId(self.policies.len() as u32);
                self.policies.push(p);
                self.counters.policies.push(PacketBytes::default());
                id
            }
        };
        self.policy_names.insert(cfg.name.clone(), id);
        Ok(id)
    }

    /// Removes the policy named `name`; returns its id (`None` if there is none), which a
    /// later new policy may reuse. Refused while a mapping, an End.B6.Encaps SID or a
    /// steering rule uses it: those go first. O(mappings + SIDs + steering rules); to remove
    /// several, [`Dataplane::remove_policies`] looks at the tables once for all of them.
    pub fn remove_policy(&mut self, name: &str) -> Result<Option<PolicyId>, ConfigError> {
        self.remove_policies([name]).pop().unwrap_or(Ok(None))
    }

    /// Removes the policies named in `names`, each as [`Dataplane::remove_policy`] would, in
    /// order (a name given twice is gone the second time: `Ok(None)`), and returns what it
    /// would have returned for each. The tables are looked at once for all of them, and not
    /// at all when no name is installed: O(mappings + SIDs + steering rules + names) at
    /// most, O(names) when there is nothing to remove, where removing them one by one costs
    /// that for every name (a host config that stops encapsulating a thousand VMs among ten
    /// thousand mappings).
    pub fn remove_policies<'a>(
        &mut self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Vec<Result<Option<PolicyId>, ConfigError>> {
        // Removing a policy changes what uses no other one, so one look serves every name. The
        // look waits for the first name that is installed: a call that retires nothing (most
        // config pushes) reads no table.
        let mut users = None;
        let mut results = Vec::new();
        for name in names {
            let Some(&id) = self.policy_names.get(name) else {
                results.push(Ok(None));
                continue;
            };
            let users = users.get_or_insert_with(|| self.policy_users());
            if let Some(user) = users.get(id.index()).copied().flatten() {
                results.push(Err(ConfigError::invalid(
                    format!("policy \"{name}\""),
                    format!("{user} uses it"),
                )));
                continue;
            }
            self.policy_names.remove(name);
            self.policies[id.index()].retire();
            self.counters.policies[id.index()] = PacketBytes::default();
            self.free_policies.push(id);
            results.push(Ok(Some(id)));
        }
        results
    }

    /// What uses each policy, by id, when something does: an End.B6.Encaps SID, else a
    /// steering rule, else a mapping (the VM table's /128s included). One pass over each table.
    fn policy_users(&self) -> Vec<Option<&'static str>> {
        let mut users = vec![None; self.policies.len()];
        let mut mark = |p: PolicyId, user: &'static str| {
            if let Some(u) = users.get_mut(p.index()) {
                u.get_or_insert(user);
            }
        };
        self.sids
            .policies_used()
            .for_each(|p| mark(p, "an End.B6.Encaps SID"));
        self.fib
            .policies_used()
            .for_each(|p| mark(p, "a steering rule"));
        self.mappings
            .policies_used()
            .for_each(|p| mark(p, "a mapping"));
        for (_, s) in self.vms.v6_steering() {
            if let Steering::Policy(p) = s {
                mark(p, "a mapping");
            }
        }
        users
    }

    /// Sets the ingress steering for `prefix` (traffic from local VMs).
    pub fn set_mapping(&mut self, prefix: IpNet, steering: Steering) -> Result<(), ConfigError> {
        if let Steering::Policy(p) = steering {
            if self.policies.get(p.index()).is_none_or(|p| !p.active) {
                return Err(ConfigError::invalid(
                    format!("mapping {prefix}"),
                    format!("no policy with id {}", p.0),
                ));
            }
        }
        self.store_mapping(prefix.trunc(), Some(steering));
        Ok(())
    }

    fn set_mapping_at(&mut self, path: &str, m: &MappingConfig) -> Result<(), ConfigError> {
        let steering = if m.policy == "native" {
            Steering::Native
        } else {
            let id = self.policy_id(&m.policy).ok_or_else(|| {
                ConfigError::invalid(
                    format!("{path}.policy"),
                    format!("no policy named \"{}\"", m.policy),
                )
            })?;
            Steering::Policy(id)
        };
        self.store_mapping(m.vm_address.trunc(), Some(steering));
        Ok(())
    }

    /// Removes the steering entry for exactly `prefix`.
    pub fn remove_mapping(&mut self, prefix: IpNet) -> Option<Steering> {
        self.store_mapping(prefix.trunc(), None)
    }

    /// Sets (or removes, `None`) the steering of exactly `prefix`; returns the previous one.
    fn store_mapping(&mut self, prefix: IpNet, steering: Option<Steering>) -> Option<Steering> {
        match (prefix, steering) {
            (IpNet::V6(p), s) if p.prefix_len() == 128 => {
                self.vms.set_steering_v6(u128::from(p.addr()), s)
            }
            (p, Some(s)) => {
                let prev = self.mappings.lookup_exact(p);
                self.mappings.set(p, s);
                prev
            }
            (p, None) => self.mappings.remove(p),
        }
    }

    /// The steering that applies to traffic from local VMs towards `dst`.
    pub fn mapping(&self, dst: IpAddr) -> Option<Steering> {
        match dst {
            IpAddr::V6(a) => self.steering_v6(u128::from(a), self.vms.v6_entry(u128::from(a))),
            IpAddr::V4(_) => self.mappings.lookup(dst),
        }
    }

    /// The steering towards `dst`, whose address-table entry is `e`: its /128 mapping, else
    /// the longest shorter prefix.
    #[inline]
    fn steering_v6(&self, dst: u128, e: crate::vm::AddrEntry) -> Option<Steering> {
        match e.steering {
            Some(s) => Some(s),
            None => self.mappings.v6.lookup(dst).map(|(_, s)| s),
        }
    }

    /// The local SID matching `dst`.
    #[inline]
    /// The longest locator prefix: a SID prefix at least this long lies inside its locator.
    fn longest_locator(&self) -> u8 {
        self.locator_nets
            .iter()
            .map(Ipv6Net::prefix_len)
            .max()
            .unwrap_or(128)
    }

    fn local_sid(&self, dst: u128) -> Option<SidId> {
        if self.sids_within_locator && !self.in_locator(dst) {
            return None;
        }
        self.sids.lookup(dst)
    }

    /// Records a VM state change. When the VM becomes `Running` with packets held, they are
    /// released, in arrival order, through `poll_transmit`.
    pub fn handle_vm_state(
        &mut self,
        _now: Instant,
        vm: VmId,
        state: VmState,
    ) -> Result<(), ConfigError> {
        let Some(v) = self.vms.vms.get_mut(vm.index()) else {
            return Err(ConfigError::invalid(format!("vm {}", vm.0), "no such VM"));
        };
        let resumed = state == VmState::Running && v.state != VmState::Running;
        v.state = state;
        // A resume (not a repeated "running") with packets held starts a release to observe.
        v.resumed_holding = state == VmState::Running
            && (v.resumed_holding || (resumed && !self.buffers.is_empty(vm)));
        if v.resumed_holding && !self.releasing.contains(&vm) {
            self.releasing.push(vm);
        }
        Ok(())
    }

    /// Drops everything held for `vm` (e.g. the SR path is torn down); returns how many packets.
    pub fn discard_buffer(&mut self, vm: VmId) -> u64 {
        let n = self.buffers.discard(vm);
        if let Some(v) = self.vms.vms.get_mut(vm.index()) {
            v.resumed_holding = false;
        }
        self.counters.drops[DropReason::BufferDiscarded.index()] += n;
        if let Some(c) = self.counters.vm_mut(vm) {
            c.dropped += n;
        }
        n
    }

    /// Sets (`Some`) or clears (`None`: no MTU check) the IP MTU of `port`, e.g. to the
    /// interface's MTU when the port attaches. Validated as `PortConfig::mtu` (1280..=9216).
    pub fn set_port_mtu(&mut self, port: PortId, mtu: Option<u16>) -> Result<(), ConfigError> {
        let path = format!("port {}.mtu", port.0);
        check_mtu(&path, mtu)?;
        let Some(p) = self.ports.get_mut(port.index()) else {
            return Err(ConfigError::invalid(path, "no such port"));
        };
        p.mtu = mtu;
        p.max_frame = Port::max_frame_for(mtu);
        Ok(())
    }

    /// The IP MTU of `port` (`None`: no MTU set, or no such port).
    pub fn port_mtu(&self, port: PortId) -> Option<u16> {
        self.ports.get(port.index()).and_then(|p| p.mtu)
    }

    /// Counts a frame a driver received on `ingress` but could not put in a packet buffer
    /// (longer than [`crate::BUF_CAPACITY`]): received on the port and dropped as
    /// `FrameTooLarge`. Returns that verdict, for drivers that record one per frame.
    pub fn drop_frame_too_large(&mut self, ingress: PortId, len: usize) -> Verdict {
        if let Some(c) = self.counters.ports.get_mut(ingress.index()) {
            c.rx.add(len);
        }
        self.counters.drop(DropReason::FrameTooLarge);
        Verdict::Drop(DropReason::FrameTooLarge)
    }

    /// The id of the VM named `name`.
    pub fn vm_id(&self, name: &str) -> Option<VmId> {
        self.vms.by_name(name)
    }

    /// The state of `vm`.
    pub fn vm_state(&self, vm: VmId) -> Option<VmState> {
        self.vms.get(vm).map(|v| v.state)
    }

    /// The id of the port named `name`.
    pub fn port_id(&self, name: &str) -> Option<PortId> {
        self.ports
            .iter()
            .position(|p| p.name == name)
            .map(|i| PortId(i as u16))
    }

    /// The id of the SID installed at `sid`.
    pub fn sid_id(&self, sid: Ipv6Addr) -> Option<SidId> {
        self.sids
            .entries
            .iter()
            .position(|e| e.as_ref().is_some_and(|e| e.sid == sid))
            .map(|i| SidId(i as u32))
    }

    /// The id of the policy named `name`.
    pub fn policy_id(&self, name: &str) -> Option<PolicyId> {
        self.policy_names
            .get(name)
            .copied()
            .filter(|id| self.policies.get(id.index()).is_some_and(|p| p.active))
    }

    /// Installed SIDs with their behavior and configuration.
    pub fn sids(&self) -> impl Iterator<Item = (SidId, crate::behavior::Behavior, &SidConfig)> {
        self.sids
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|e| (SidId(i as u32), e.behavior, &e.config)))
    }

    /// The names of the installed policies (in no particular order).
    pub fn policy_names(&self) -> impl Iterator<Item = &str> {
        self.policy_names.keys().map(String::as_str)
    }

    /// The headend behavior and segment list of policy `id`.
    pub fn policy(&self, id: PolicyId) -> Option<(Headend, &[Ipv6Addr])> {
        self.policies
            .get(id.index())
            .filter(|p| p.active)
            .map(|p| (p.headend, p.segments.as_slice()))
    }

    /// The ports' names, by id.
    pub fn port_names(&self) -> impl Iterator<Item = (PortId, &str)> {
        self.ports
            .iter()
            .enumerate()
            .map(|(i, p)| (PortId(i as u16), p.name.as_str()))
    }

    /// Bytes preallocated for End.SBUF packet storage (see [`crate::buffer`]).
    pub fn buffer_storage_bytes(&self) -> usize {
        self.buffers.storage_bytes()
    }

    /// Read-only counters and buffer occupancy.
    pub fn counters(&self) -> CountersView<'_> {
        CountersView {
            c: &self.counters,
            buffers: &self.buffers,
            fences: &self.fences,
        }
    }

    // ----------------------------------------------------------------------------------------
    // Timers and generated packets
    // ----------------------------------------------------------------------------------------

    /// The next instant at which `handle_timeout` has work (a held packet expiring, a commit
    /// fence giving up on its marker).
    pub fn poll_timeout(&self) -> Option<Instant> {
        (0..self.vms.len())
            .filter_map(|i| self.buffers.deadline(VmId(i as u32)))
            .chain(self.fences.poll_timeout())
            .min()
    }

    /// Drops held packets that are older than the maximum age; opens commit fences whose
    /// marker did not come in time (their packets then leave through `poll_transmit`).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.fences.handle_timeout(now);
        for i in 0..self.vms.len() {
            let vm = VmId(i as u32);
            let n = self.buffers.expire(vm, now);
            if n > 0 {
                self.counters.drops[DropReason::BufferExpired.index()] += n;
                self.counters.vms[i].expired += n;
            }
        }
    }

    /// Whether `poll_transmit` has something to send.
    pub fn has_pending_transmit(&self) -> bool {
        !self.gen.is_empty()
            || !self.releasing.is_empty()
            || !self.fences.markers.is_empty()
            || !self.fences.releasing.is_empty()
    }

    /// Writes the next generated or released frame into `out` and returns its egress port.
    /// Commit-fence markers first, then generated packets (ICMPv6, NDP), then buffered packets
    /// of VMs that are running again, in arrival order (expired ones are dropped on the way:
    /// `BufferExpired`), then packets a commit fence released.
    ///
    /// `None` means nothing is pending ([`Dataplane::has_pending_transmit`] is false): a held
    /// packet too big for its VM port generates its Packet Too Big here, and that error is
    /// returned before any later packet.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut PacketBuf) -> Option<PortId> {
        if let Some(port) = self.next_marker(now, out) {
            return Some(port);
        }
        loop {
            if let Some(port) = self.gen.pop_into(out) {
                if let Some(c) = self.counters.ports.get_mut(port.index()) {
                    c.tx.add(out.len());
                }
                out.verdict = Verdict::Tx(port);
                return Some(port);
            }
            match self.release_next(now, out) {
                Some(port) => return Some(port),
                None if self.gen.is_empty() => match self.release_fenced(now, out) {
                    Some(port) => return Some(port),
                    None if self.gen.is_empty() => return None,
                    None => {}
                },
                // A held packet too big for its VM port queued its error: that goes first.
                None => {}
            }
        }
    }

    /// The next held packet of a running VM into `out`, dropping expired ones on the way.
    /// Returns early (`None`) when a packet too big for its VM port queued an error in
    /// `gen`, so that the caller sends it first.
    fn release_next(&mut self, now: Instant, out: &mut PacketBuf) -> Option<PortId> {
        while let Some(&vm) = self.releasing.first() {
            let Some(v) = self.vms.get(vm) else {
                self.releasing.remove(0);
                continue;
            };
            if v.state != VmState::Running {
                self.releasing.remove(0);
                continue;
            }
            let (mac, port) = (v.mac, v.port);
            // The held packet is copied into `out`, with room for its Ethernet header.
            let r = match self.buffers.pop_fresh(vm, now, out) {
                None => {
                    // Empty (everything expired, or discarded): nothing of this resume left
                    // to observe.
                    if let Some(v) = self.vms.vms.get_mut(vm.index()) {
                        v.resumed_holding = false;
                    }
                    self.releasing.remove(0);
                    continue;
                }
                Some(Err(_)) => {
                    self.counters.drops[DropReason::BufferExpired.index()] += 1;
                    self.counters.vms[vm.index()].expired += 1;
                    continue;
                }
                Some(Ok(r)) => r,
            };
            match self.frame_released(now, out, r, mac, port) {
                Ok(()) => {}
                Err(false) => {
                    self.counters.drops[DropReason::BufferDiscarded.index()] += 1;
                    continue;
                }
                Err(true) => {
                    self.counters.vms[vm.index()].dropped += 1;
                    if !self.gen.is_empty() {
                        return None;
                    }
                    continue;
                }
            }
            let len = out.end - out.start;
            if let Some(v) = self.vms.vms.get_mut(vm.index()) {
                if std::mem::take(&mut v.resumed_holding) {
                    let waited = now.as_nanos().saturating_sub(r.arrived.as_nanos());
                    self.counters.holds.observe(waited);
                }
            }
            let c = &mut self.counters.vms[vm.index()];
            c.released += 1;
            c.tx.add(len);
            self.counters.ports[port.index()].tx.add(len);
            out.ingress = port;
            out.verdict = Verdict::Tx(port);
            return Some(port);
        }
        None
    }

    /// Puts the Ethernet header of a packet released from a store (`r`) in front of it, for
    /// the VM at `mac` behind `port`, and checks it against the port's MTU (held packets were
    /// never checked: they did not go out; the same check as `conclude`). `Err(true)`: too
    /// big (its Packet Too Big is queued); `Err(false)`: no room for the header.
    fn frame_released(
        &mut self,
        now: Instant,
        out: &mut PacketBuf,
        r: crate::buffer::Released,
        mac: [u8; 6],
        port: PortId,
    ) -> Result<(), bool> {
        let Some(s) = r.l3.checked_sub(ethernet::HEADER_LEN) else {
            return Err(false);
        };
        if let Some(eth) = out.buf.get_mut(s..r.l3) {
            eth[..6].copy_from_slice(&mac);
            eth[6..12].copy_from_slice(&self.gateway_mac);
            eth[12..].copy_from_slice(&r.ethertype.0.to_be_bytes());
        }
        out.start = s;
        out.end = r.end;
        if r.end - s > self.ports[port.index()].max_frame {
            out.verdict = self.packet_too_big(now, out, port, false);
            return Err(true);
        }
        Ok(())
    }

    // ----------------------------------------------------------------------------------------
    // Commit fence (crate::fence)
    // ----------------------------------------------------------------------------------------

    /// The next marker that reached a fenced VM's End.SBUF here (oldest first), to report to
    /// the controller ([`crate::fence::MarkerArrival`]).
    pub fn poll_fence_arrival(&mut self) -> Option<fence::MarkerArrival> {
        self.fences.arrivals.pop_front()
    }

    /// Fences (`true`) or stops fencing `vm`: while fenced, direct packets for it (End.DT6,
    /// End.DT4, End.DT46, and from this node's VM ports) wait, per ingress, for that ingress's
    /// marker (see [`crate::fence`]). Set it while the VM has an End.SBUF entry here. Stopping
    /// releases what is held through `poll_transmit`.
    pub fn set_fence_armed(&mut self, vm: VmId, armed: bool) -> Result<(), ConfigError> {
        self.fences.set_armed(vm, armed)
    }

    /// Whether `vm` is fenced here.
    pub fn fence_armed(&self, vm: VmId) -> bool {
        self.fences.is_armed(vm)
    }

    /// Another engine of this host (srmigd `--workers N`) received the commit-fence marker
    /// for `vm` from `ingress` (its [`fence::MarkerArrival`]): the kernel hands a marker to one
    /// worker only, but each worker fences the direct packets of its own flows. Opens this
    /// engine's pair as the marker would (held packets leave through `poll_transmit`), reports
    /// no arrival, and counts `fence.markers_relayed`. Call it only once this engine has
    /// processed every frame received before the marker (the old path's packets of its flows
    /// came before the marker). Returns whether a pair was opened.
    pub fn fence_marker_relayed(&mut self, now: Instant, vm: VmId, ingress: Ipv6Addr) -> bool {
        matches!(
            self.fences.on_relayed_marker(now, vm, u128::from(ingress)),
            fence::MarkerOutcome::Opened
        )
    }

    /// Queues a commit-fence marker for the VM at `vm` along `path` (the segment list this
    /// node used for it until now, first segment first), from this node's encapsulation
    /// source. It leaves through the next `poll_transmit`, ahead of everything else. `false`
    /// (counted as `fence.markers_unsent`) if too many markers are queued.
    pub fn send_fence_marker(&mut self, vm: IpAddr, path: &[Ipv6Addr]) -> bool {
        if self.fences.markers.len() >= fence::MAX_PENDING_MARKERS {
            self.fences.counters.markers_unsent += 1;
            return false;
        }
        self.fences.markers.push((vm, path.to_vec()));
        true
    }

    /// Builds and routes the next queued marker into `out`.
    fn next_marker(&mut self, now: Instant, out: &mut PacketBuf) -> Option<PortId> {
        while !self.fences.markers.is_empty() {
            let (vm, path) = self.fences.markers.remove(0);
            let src = Ipv6Addr::from(self.encap_source);
            let key = self.marker_key.and_then(|id| self.hmac.key(id));
            let routed = fence::build_signed_marker(src, &path, vm, key).and_then(|l3| {
                let mut frame = vec![0u8; ethernet::HEADER_LEN];
                frame.extend_from_slice(&l3);
                out.set_data(&frame).ok()?;
                // As if a local VM sent it: this node's own SIDs on the path (End.S when this
                // node is the source) run in the same pass, with a VM port's HMAC mode.
                let port = self
                    .ports
                    .iter()
                    .position(|p| p.kind == PortKind::Vm)
                    .unwrap_or(0);
                let ctx = Ctx {
                    now,
                    ingress: PortId(port as u16),
                    kind: PortKind::Vm,
                    src_mac: [0; 6],
                };
                out.ingress = ctx.ingress;
                let ip = out.start + ethernet::HEADER_LEN;
                let v = self.fib_v6(&ctx, out, ip, TableIdx(0), 0);
                let v = self.conclude(now, out, v);
                out.verdict = v;
                match v {
                    Verdict::Tx(p) => Some(p),
                    _ => None,
                }
            });
            match routed {
                Some(p) => {
                    self.fences.counters.markers_sent += 1;
                    return Some(p);
                }
                None => self.fences.counters.markers_unsent += 1,
            }
        }
        None
    }

    /// A marker (an SRH with Next Header 59 and the fence TLV) at End.SBUF: opens its pair.
    /// `None` if the packet is no marker (it is then processed as any other).
    fn fence_marker_in(
        &mut self,
        ctx: &Ctx,
        pkt: &PacketBuf,
        ip: usize,
        srh_rel: usize,
    ) -> Option<Verdict> {
        let vm_addr = fence::marker_vm(pkt.buf.get(ip + srh_rel..pkt.end)?)?;
        // Its source is inside the SR domain: checked for every packet to a local SID
        // (`SrhFromOutsideDomain`), as is its HMAC where the ingress port requires one.
        let src = read_addr(&pkt.buf, ip + v6f::SRC_ADDR.start);
        let vm = match vm_addr {
            IpAddr::V6(a) => self.vms.v6_entry(u128::from(a)).vm,
            IpAddr::V4(a) => self.vms.by_v4(u32::from(a)),
        };
        match vm {
            Some(vm) => {
                self.fences.on_marker(ctx.now, vm, src);
            }
            None => self.fences.counters.markers_unarmed += 1,
        }
        Some(Verdict::Consumed)
    }

    /// Delivers a packet that came the direct way (not through End.S / End.SBUF) to `vm`,
    /// unless `vm`'s commit fence holds it, or its pair still releases what the fence held
    /// (then it queues behind). Its ingress is the source of the outer IPv6 header at `outer`
    /// (decapsulated here), or this node for `None` (from one of its VM ports); it is read
    /// only when `vm` is fenced or a pair is releasing.
    #[inline]
    fn deliver_direct(
        &mut self,
        ctx: &Ctx,
        pkt: &mut PacketBuf,
        l3: usize,
        vm: VmId,
        ethertype: EtherType,
        outer: Option<usize>,
    ) -> Verdict {
        if self.fences.is_armed(vm) || self.fences.is_releasing() {
            let ingress = match outer {
                Some(ip) => read_addr(&pkt.buf, ip + v6f::SRC_ADDR.start),
                None => u128::from_be_bytes(self.encap_source),
            };
            if let Gate::Hold(slot) = self.fences.gate(ctx.now, vm, ingress) {
                let pushed = self
                    .fences
                    .store_mut()
                    .map(|s| s.push(VmId(slot as u32), ctx.now, pkt, l3, ethertype));
                if let Some(Ok(())) = pushed {
                    self.fences.counters.held += 1;
                    self.counters.vms[vm.index()].fenced += 1;
                    return Verdict::Held(vm);
                }
                self.fences.counters.bypassed += 1;
            }
        }
        self.deliver(ctx, pkt, l3, vm, ethertype)
    }

    /// The next packet an open fence releases, into `out`.
    fn release_fenced(&mut self, now: Instant, out: &mut PacketBuf) -> Option<PortId> {
        while let Some(&slot) = self.fences.releasing.first() {
            let Some(vm) = self.fences.slot_vm(slot) else {
                self.fences.drained(slot);
                continue;
            };
            let Some(r) = self
                .fences
                .store_mut()
                .and_then(|s| s.pop(VmId(slot as u32), Some(out)))
            else {
                self.fences.drained(slot);
                continue;
            };
            let Some(v) = self.vms.get(vm).filter(|v| v.state == VmState::Running) else {
                self.fences.counters.dropped += 1;
                self.counters.vms[vm.index()].dropped += 1;
                self.counters.drop(DropReason::VmNotRunning);
                continue;
            };
            let (mac, port) = (v.mac, v.port);
            if let Err(too_big) = self.frame_released(now, out, r, mac, port) {
                self.fences.counters.dropped += 1;
                self.counters.vms[vm.index()].dropped += 1;
                if !too_big {
                    self.counters.drop(DropReason::BufferDiscarded);
                }
                if too_big && !self.gen.is_empty() {
                    return None;
                }
                continue;
            }
            let len = out.end - out.start;
            self.fences.counters.released += 1;
            self.counters.vms[vm.index()].tx.add(len);
            self.counters.ports[port.index()].tx.add(len);
            out.ingress = port;
            out.verdict = Verdict::Tx(port);
            return Some(port);
        }
        None
    }

    // ----------------------------------------------------------------------------------------
    // Fast path
    // ----------------------------------------------------------------------------------------

    /// Processes every packet of `batch`, writing each one's verdict. Never panics on packet
    /// contents, never allocates.
    pub fn process_batch(&mut self, now: Instant, batch: &mut Batch) {
        for pkt in batch.packets_mut() {
            let v = self.process(now, pkt);
            pkt.verdict = self.conclude(now, pkt, v);
        }
    }

    /// Processes a single packet (same as a batch of one).
    pub fn process_packet(&mut self, now: Instant, pkt: &mut PacketBuf) -> Verdict {
        let v = self.process(now, pkt);
        let v = self.conclude(now, pkt, v);
        pkt.verdict = v;
        v
    }

    /// The one place a pipeline verdict becomes final: a `Tx` frame longer than its egress
    /// port's MTU (one compare) becomes a `PacketTooBig` drop answered with an ICMPv6 Packet
    /// Too Big; drops and transmissions are counted.
    #[inline]
    fn conclude(&mut self, now: Instant, pkt: &PacketBuf, v: Verdict) -> Verdict {
        match v {
            Verdict::Drop(r) => self.counters.drop(r),
            Verdict::Tx(p) => {
                let len = pkt.end - pkt.start;
                if self
                    .ports
                    .get(p.index())
                    .is_some_and(|port| len > port.max_frame)
                {
                    let from_vm = self
                        .ports
                        .get(pkt.ingress.index())
                        .is_some_and(|i| i.kind == PortKind::Vm);
                    return self.packet_too_big(now, pkt, p, from_vm);
                }
                if let Some(c) = self.counters.ports.get_mut(p.index()) {
                    c.tx.add(len);
                }
            }
            Verdict::Held(_) | Verdict::Consumed => {}
        }
        v
    }

    #[inline]
    fn process(&mut self, now: Instant, pkt: &mut PacketBuf) -> Verdict {
        let Some(port) = self.ports.get(pkt.ingress.index()) else {
            return Verdict::Drop(DropReason::UnknownPort);
        };
        let kind = port.kind;
        let port_mac = port.mac;
        let len = pkt.end - pkt.start;
        self.counters.ports[pkt.ingress.index()].rx.add(len);
        if len < ethernet::HEADER_LEN {
            return Verdict::Drop(DropReason::Truncated);
        }
        let s = pkt.start;
        let b = &pkt.buf;
        let dst_mac = &b[s..s + 6];
        if dst_mac[0] & 1 == 0
            && dst_mac != port_mac
            && !(kind == PortKind::Vm && dst_mac == self.gateway_mac)
        {
            return Verdict::Drop(DropReason::WrongDestinationMac);
        }
        let mut src_mac = [0u8; 6];
        src_mac.copy_from_slice(&b[s + 6..s + 12]);
        let ctx = Ctx {
            now,
            ingress: pkt.ingress,
            kind,
            src_mac,
        };
        match EtherType(read_u16(b, s + 12)) {
            EtherType::IPV6 => self.ipv6_in(&ctx, pkt),
            EtherType::IPV4 => self.ipv4_in(&ctx, pkt),
            EtherType::ARP => self.arp_in(&ctx, pkt),
            _ => Verdict::Drop(DropReason::UnsupportedEtherType),
        }
    }

    #[inline]
    fn in_domain(&self, src: u128) -> bool {
        self.infrastructure.iter().any(|&(n, m)| src & m == n)
    }

    #[inline]
    fn in_locator(&self, dst: u128) -> bool {
        dst & self.locator_mask == self.locator
            || (!self.extra_locators.is_empty()
                && self.extra_locators.iter().any(|&(n, m)| dst & m == n))
    }

    fn ipv6_in(&mut self, ctx: &Ctx, pkt: &mut PacketBuf) -> Verdict {
        let ip = pkt.start + ethernet::HEADER_LEN;
        if pkt.end - ip < ipv6::HEADER_LEN {
            return Verdict::Drop(DropReason::Truncated);
        }
        let Some(h) = ip6(&pkt.buf, ip) else {
            return Verdict::Drop(DropReason::Truncated);
        };
        if h.version() != 6 {
            return Verdict::Drop(DropReason::BadIpVersion);
        }
        let total = h.total_len();
        if ip + total > pkt.end {
            return Verdict::Drop(DropReason::PayloadLengthBeyondFrame);
        }
        // Strip Ethernet padding.
        pkt.end = ip + total;
        match ctx.kind {
            PortKind::Uplink => self.uplink_v6(ctx, pkt, ip),
            PortKind::Vm => self.vm_port_v6(ctx, pkt, ip),
        }
    }

    fn uplink_v6(&mut self, ctx: &Ctx, pkt: &mut PacketBuf, ip: usize) -> Verdict {
        let Some(h) = ip6(&pkt.buf, ip) else {
            return Verdict::Drop(DropReason::Truncated);
        };
        let (dst, src, nh) = (
            u128::from(h.dst_addr()),
            u128::from(h.src_addr()),
            h.next_header(),
        );
        if dst >> 120 == 0xff {
            if nh == IpProtocol::ICMPV6 {
                return self.ndp_in(ctx, pkt, ip);
            }
            return Verdict::Drop(DropReason::MulticastDestination);
        }
        if nh == IpProtocol::HOP_BY_HOP {
            if let Err(v) = self.hop_by_hop(ctx, pkt, ip) {
                return v;
            }
        }
        // Most uplink traffic is SRv6 to a local SID: look it up directly (no locator test).
        if let Some(sid) = self.sids.lookup(dst) {
            // RFC 8754 section 5.1: SRv6 packets only from inside the SR domain.
            if !self.in_domain(src) {
                return Verdict::Drop(DropReason::SrhFromOutsideDomain);
            }
            return self.endpoint(ctx, pkt, ip, sid, 0);
        }
        if self.local_addrs.contains(&dst) {
            return self.local_v6(ctx, pkt, ip);
        }
        if nh == IpProtocol::ICMPV6
            && pkt.buf.get(ip + ipv6::HEADER_LEN) == Some(&NDP_NEIGHBOR_SOLICIT)
        {
            let proxy = &self.ports[ctx.ingress.index()].proxy_ndp;
            if !proxy.is_empty() && proxy.iter().any(|a| u128::from(*a) == dst) {
                // A unicast solicitation (NUD) for an address this port answers for.
                return self.ndp_in(ctx, pkt, ip);
            }
        }
        if nh.is_ipv6_ext() {
            match walk(&pkt.buf[ip..pkt.end]) {
                Err(r) => return Verdict::Drop(r),
                Ok(c) => {
                    if c.routing.is_some()
                        && c.routing_type == srh::ROUTING_TYPE
                        && !self.in_domain(src)
                    {
                        return Verdict::Drop(DropReason::SrhFromOutsideDomain);
                    }
                }
            }
        }
        // Transit (or delivery to a local VM): the packet leaves its link.
        if let Some(r) = source_error(src) {
            return self.bad_source(ctx, pkt, ip, r);
        }
        if self.in_locator(dst) {
            return self.unreachable(ctx, pkt, ip, DropReason::NoSid);
        }
        if let Err(v) = self.hop_limit_forward(ctx, pkt, ip) {
            return v;
        }
        if let Some(vm) = self.vms.by_v6(dst) {
            return self.deliver(ctx, pkt, ip, vm, EtherType::IPV6);
        }
        let table = self.ports[ctx.ingress.index()].table;
        if let Some(p) = self.fib.steer_v6(table, dst) {
            let has_hbh = nh == IpProtocol::HOP_BY_HOP;
            return self.apply_policy(ctx, pkt, ip, p, true, has_hbh);
        }
        self.fib_v6(ctx, pkt, ip, table, 0)
    }

    fn vm_port_v6(&mut self, ctx: &Ctx, pkt: &mut PacketBuf, ip: usize) -> Verdict {
        let Some(h) = ip6(&pkt.buf, ip) else {
            return Verdict::Drop(DropReason::Truncated);
        };
        let (dst, src, nh) = (
            u128::from(h.dst_addr()),
            u128::from(h.src_addr()),
            h.next_header(),
        );
        match self.vms.by_v6(src) {
            Some(vm) if self.vms.vms[vm.index()].port == ctx.ingress => {
                self.counters.vms[vm.index()].rx.add(pkt.end - pkt.start);
            }
            _ => {
                let link_local = src >> 118 == 0xfe80 >> 6;
                if (link_local || src == 0) && nh == IpProtocol::ICMPV6 {
                    return self.ndp_in(ctx, pkt, ip);
                }
                // Neighbour discovery aside, nothing leaves the VM's link with such a source.
                if let Some(r) = source_error(src) {
                    return self.bad_source(ctx, pkt, ip, r);
                }
                return Verdict::Drop(DropReason::VmSourceSpoofed);
            }
        }
        let gateway = u128::from_be_bytes(self.gateway);
        if dst >> 120 == 0xff || dst == gateway {
            if dst == gateway && nh == IpProtocol::ICMPV6 && is_echo_request(pkt, ip) {
                return self.echo_reply(ctx, pkt, ip, ipv6::HEADER_LEN);
            }
            if nh == IpProtocol::ICMPV6 {
                return self.ndp_in(ctx, pkt, ip);
            }
            return Verdict::Drop(if dst == gateway {
                DropReason::DestinedToGateway
            } else {
                DropReason::MulticastDestination
            });
        }
        if nh == IpProtocol::HOP_BY_HOP {
            if let Err(v) = self.hop_by_hop(ctx, pkt, ip) {
                return v;
            }
        }
        // The SR domain is closed: no SRH and no local SID from a VM (RFC 8754 section 5.1).
        if self.local_sid(dst).is_some() {
            return Verdict::Drop(DropReason::SrhFromVmPort);
        }
        let mut has_hbh = false;
        if nh.is_ipv6_ext() {
            match walk(&pkt.buf[ip..pkt.end]) {
                Err(r) => return Verdict::Drop(r),
                Ok(c) => {
                    if c.routing.is_some() {
                        return Verdict::Drop(DropReason::SrhFromVmPort);
                    }
                    has_hbh = c.has_hbh;
                }
            }
        }
        if let Err(v) = self.hop_limit_forward(ctx, pkt, ip) {
            return v;
        }
        // One probe: the local VM at `dst` and the /128 mapping of `dst`.
        let e = self.vms.v6_entry(dst);
        if let Some(vm) = e.vm {
            if self.vms.vms[vm.index()].state == VmState::Running {
                return self.deliver_direct(ctx, pkt, ip, vm, EtherType::IPV6, None);
            }
        }
        match self.steering_v6(dst, e) {
            Some(Steering::Policy(p)) => self.apply_policy(ctx, pkt, ip, p, true, has_hbh),
            Some(Steering::Native) | None => {
                if self.in_locator(dst) {
                    return self.unreachable(ctx, pkt, ip, DropReason::NoSid);
                }
                if let Some(vm) = e.vm {
                    return self.deliver_direct(ctx, pkt, ip, vm, EtherType::IPV6, None);
                }
                self.fib_v6(ctx, pkt, ip, TableIdx(0), 0)
            }
        }
    }

    /// The source of packets this node sends out of uplink `p` on its own behalf (ICMPv6
    /// errors): the port's `address`, else `source_address`.
    #[inline]
    fn uplink_source(&self, p: &Port) -> [u8; 16] {
        p.address.map_or(self.source_address, |a| a.octets())
    }

    /// An IPv6 packet from an uplink addressed to one of this node's own addresses
    /// (`source_address`, `encap_source`, an uplink's `address`), not a SID:
    /// - a routing header with Segments Left > 0: an SRH is processed as End (RFC 8754 4.3:
    ///   an SR-enabled node's local interface address is a segment endpoint; only from inside
    ///   the SR domain, 5.1; its HMAC TLV checked as at any SID), and the packet goes on to
    ///   the next segment; any other type (RH0, deprecated by RFC 5095) gets a Parameter
    ///   Problem code 0 at its Routing Type (RFC 8200 4.4);
    /// - otherwise the upper layer (RFC 8754 4.3.1.1 SL = 0; RFC 8200 4): an echo request is
    ///   answered (RFC 4443 4.2), UDP gets Destination Unreachable code 4 (no UDP service), a
    ///   neighbour solicitation is answered as before, and the rest (TCP, other ICMPv6, No
    ///   Next Header, fragments: no reassembly) is discarded, counted as `LocalNotServed`.
    #[cold]
    fn local_v6(&mut self, ctx: &Ctx, pkt: &mut PacketBuf, ip: usize) -> Verdict {
        let src = read_addr(&pkt.buf, ip + v6f::SRC_ADDR.start);
        let chain = match walk(&pkt.buf[ip..pkt.end]) {
            Ok(c) => c,
            Err(r) => return Verdict::Drop(r),
        };
        if let Some(rh) = chain.routing.filter(|_| chain.segments_left != 0) {
            if chain.routing_type != srh::ROUTING_TYPE {
                return self.icmp_error(
                    ctx,
                    pkt,
                    ip,
                    ICMPV6_PARAM_PROBLEM,
                    PARAM_PROBLEM_ERRONEOUS_FIELD,
                    (rh + srh::FIELD_ROUTING_TYPE) as u32,
                    DropReason::UnsupportedRoutingType,
                );
            }
            if !self.in_domain(src) {
                return Verdict::Drop(DropReason::SrhFromOutsideDomain);
            }
            if let Err(f) = self
                .hmac
                .check(ctx.ingress, &pkt.buf[ip..pkt.end], Some(rh))
            {
                let Some(ptr) = f.pointer else {
                    return Verdict::Drop(f.reason);
                };
                let code = PARAM_PROBLEM_ERRONEOUS_FIELD;
                return self.icmp_error(ctx, pkt, ip, ICMPV6_PARAM_PROBLEM, code, ptr, f.reason);
            }
            let ip = match self.end_step(ctx, pkt, ip, rh, chain.routing_nh_at, FlavorSet::EMPTY) {
                Ok(ip) => ip,
                Err(v) => return v,
            };
            return self.fib_v6(ctx, pkt, ip, TableIdx(0), 0);
        }
        if let Some(r) = source_error(src) {
            return self.bad_source(ctx, pkt, ip, r);
        }
        if chain.fragment_data {
            return Verdict::Drop(DropReason::LocalNotServed);
        }
        match chain.upper_proto {
            IpProtocol::ICMPV6 => {
                let ty = pkt.buf.get(ip + chain.upper).copied();
                if ty == Some(ICMPV6_ECHO_REQUEST) {
                    self.echo_reply(ctx, pkt, ip, chain.upper)
                } else if ty == Some(NDP_NEIGHBOR_SOLICIT) && chain.upper == ipv6::HEADER_LEN {
                    self.ndp_in(ctx, pkt, ip)
                } else {
                    Verdict::Drop(DropReason::LocalNotServed)
                }
            }
            IpProtocol::UDP => {
                // RFC 4443 2.2 (a): from the address the packet was sent to.
                let mut from = [0u8; 16];
                from.copy_from_slice(&pkt.buf[ip + v6f::DST_ADDR.start..ip + v6f::DST_ADDR.end]);
                self.icmp_error_from(
                    ctx,
                    pkt,
                    ip,
                    Some(from),
                    (ICMPV6_DEST_UNREACHABLE, DEST_UNREACHABLE_PORT, 0),
                    DropReason::PortUnreachable,
                )
            }
            _ => Verdict::Drop(DropReason::LocalNotServed),
        }
    }

    /// Turns the echo request at `ip` (ICMPv6 message at `ip + upper`, after any extension
    /// headers, which the reply leaves out) into the echo reply, in place, back out of the
    /// port it came in on to the neighbour that sent it (RFC 4443 4.2: same identifier,
    /// sequence number and data; from the address the request was sent to). A request whose
    /// checksum does not verify is discarded (`IcmpBadChecksum`).
    #[cold]
    fn echo_reply(&mut self, ctx: &Ctx, pkt: &mut PacketBuf, ip: usize, upper: usize) -> Verdict {
        let (src, dst) = (
            addr(&pkt.buf[ip + v6f::SRC_ADDR.start..ip + v6f::SRC_ADDR.end]),
            addr(&pkt.buf[ip + v6f::DST_ADDR.start..ip + v6f::DST_ADDR.end]),
        );
        let msg_at = ip + upper;
        if pkt.end < msg_at + 8 {
            return Verdict::Drop(DropReason::Truncated);
        }
        let msg_len = pkt.end - msg_at;
        let Ok(len16) = u16::try_from(msg_len) else {
            return Verdict::Drop(DropReason::FrameTooLarge);
        };
        if !icmpv6::Packet::new_unchecked(&pkt.buf[msg_at..pkt.end]).verify_checksum(&src, &dst) {
            return Verdict::Drop(DropReason::IcmpBadChecksum);
        }
        if upper != ipv6::HEADER_LEN {
            pkt.buf.copy_within(msg_at..pkt.end, ip + ipv6::HEADER_LEN);
        }
        let body = ip + ipv6::HEADER_LEN;
        pkt.end = body + msg_len;
        ipv6::emit_header(
            &mut pkt.buf[ip..body],
            dst,
            src,
            IpProtocol::ICMPV6,
            len16,
            ECHO_REPLY_HOP_LIMIT,
        );
        let m = &mut pkt.buf[body..pkt.end];
        m[0] = ICMPV6_ECHO_REPLY;
        m[1] = 0;
        icmpv6::Packet::new_unchecked(m).fill_checksum(&dst, &src);
        self.counters.icmp.echo_replies += 1;
        self.back_to_sender(ctx, pkt)
    }

    /// The MAC this node answers with on the ingress port: the gateway's on a VM port, the
    /// port's own on an uplink.
    #[inline]
    fn our_mac(&self, ctx: &Ctx) -> [u8; 6] {
        match ctx.kind {
            PortKind::Vm => self.gateway_mac,
            PortKind::Uplink => self.ports[ctx.ingress.index()].mac,
        }
    }

    /// Sends the frame answered in place back out of its ingress port, to the neighbour that
    /// sent it, from [`Dataplane::our_mac`].
    fn back_to_sender(&self, ctx: &Ctx, pkt: &mut PacketBuf) -> Verdict {
        let mac = self.our_mac(ctx);
        let eth = pkt.start;
        pkt.buf[eth..eth + 6].copy_from_slice(&ctx.src_mac);
        pkt.buf[eth + 6..eth + 12].copy_from_slice(&mac);
        Verdict::Tx(ctx.ingress)
    }

    /// Decrements the hop limit of the IPv6 header at `ip`, or drops with Time Exceeded.
    #[inline]
    fn hop_limit_forward(
        &mut self,
        ctx: &Ctx,
        pkt: &mut PacketBuf,
        ip: usize,
    ) -> Result<(), Verdict> {
        let hl = pkt.buf[ip + v6f::HOP_LIMIT];
        if hl <= 1 {
            return Err(self.icmp_error(
                ctx,
                pkt,
                ip,
                ICMPV6_TIME_EXCEEDED,
                0,
                0,
                DropReason::HopLimitExceeded,
            ));
        }
        pkt.buf[ip + v6f::HOP_LIMIT] = hl - 1;
        Ok(())
    }

    /// The packet exposed by a decapsulation (at `inner`, of `proto`, already validated by
    /// `inner_v6`/`inner_v4`) is forwarded by this node, to an adjacency, a FIB route or a
    /// local VM: RFC 8986 4.4-4.8 and 4.16.3 "forward the exposed packet" is IP forwarding
    /// (Linux: `ip6_forward` / `ip_forward` after `decap_and_validate`). Its source is
    /// checked (`source_error`; no error back), its hop limit or TTL decremented; at 1 or 0
    /// it is dropped with an ICMPv6 Time Exceeded about the inner packet to its source, routed
    /// like a Packet Too Big (IPv4: `Ipv4TtlExceeded` with an ICMPv4 Time Exceeded, routed
    /// the same way, see [`Dataplane::error_to_source_v4`]).
    ///
    /// Inline, the common IPv6 case only (hop limit above 1, a source that is not multicast,
    /// link-local or in `::/64`: one 8-byte read and four compares); any other IPv6 packet
    /// takes `forward_inner_v6_slow`, which decides exactly.
    #[inline(always)]
    fn forward_inner(
        &mut self,
        now: Instant,
        pkt: &mut PacketBuf,
        inner: usize,
        proto: IpProtocol,
    ) -> Result<(), DropReason> {
        if proto == IpProtocol::IPV4 {
            let b = &mut pkt.buf;
            if b[inner + v4f::TTL] <= 1 {
                self.error_to_source_v4(now, &pkt.buf[inner..pkt.end], ICMPV4_TIME_EXCEEDED, 0, 0);
                return Err(DropReason::Ipv4TtlExceeded);
            }
            let ihl = usize::from(b[inner] & 0x0f) * 4;
            decrement_ttl(&mut b[inner..inner + ihl]);
            return Ok(());
        }
        // The high 64 bits of every source `source_error` refuses: multicast (ff00::/8),
        // link-local (fe80::/10), `::` and `::1` (high half zero).
        let src_hi = (read_addr(&pkt.buf, inner + v6f::SRC_ADDR.start) >> 64) as u64;
        let suspect = src_hi >> 56 == 0xff || src_hi >> 54 == 0xfe80 >> 6 || src_hi == 0;
        let hl = &mut pkt.buf[inner + v6f::HOP_LIMIT];
        if *hl > 1 && !suspect {
            *hl -= 1;
            return Ok(());
        }
        self.forward_inner_v6_slow(now, pkt, inner)
    }

    /// [`Dataplane::forward_inner`] of an IPv6 packet, every case.
    #[cold]
    #[inline(never)]
    fn forward_inner_v6_slow(
        &mut self,
        now: Instant,
        pkt: &mut PacketBuf,
        inner: usize,
    ) -> Result<(), DropReason> {
        if let Some(r) = source_error(read_addr(&pkt.buf, inner + v6f::SRC_ADDR.start)) {
            return Err(r);
        }
        let hl = pkt.buf[inner + v6f::HOP_LIMIT];
        if hl <= 1 {
            self.error_to_source(now, &pkt.buf[inner..pkt.end], ICMPV6_TIME_EXCEEDED, 0, 0);
            return Err(DropReason::HopLimitExceeded);
        }
        pkt.buf[inner + v6f::HOP_LIMIT] = hl - 1;
        Ok(())
    }

    /// Hop-by-Hop Options (RFC 8200 4.2, 4.3) of the IPv6 packet at `ip` (Next Header 0):
    /// Pad1, PadN and Router Alert are known; an unknown option's two high-order bits decide
    /// (00 skip, 01 discard, 10 discard with Parameter Problem code 2 pointing at its type,
    /// 11 the same unless the destination is multicast); an option running past the header
    /// is a Parameter Problem code 0 pointing at the bad byte.
    #[cold]
    #[inline(never)]
    fn hop_by_hop(&mut self, ctx: &Ctx, pkt: &PacketBuf, ip: usize) -> Result<(), Verdict> {
        // The caller checked the fixed header: `ip + 40 <= pkt.end`.
        let at = ip + ipv6::HEADER_LEN;
        if pkt.end - at < srmig_wire::ext::MIN_LEN {
            return Err(Verdict::Drop(DropReason::Truncated));
        }
        let len = (usize::from(pkt.buf[at + srmig_wire::ext::FIELD_HDR_EXT_LEN]) + 1) * 8;
        if at + len > pkt.end {
            return Err(Verdict::Drop(DropReason::HdrExtLenBeyondPacket));
        }
        let known = |t: u8| t == srmig_wire::ext::OPT_ROUTER_ALERT;
        let (code, offset, reason) =
            match srmig_wire::ext::process_options(&pkt.buf[at..at + len], known) {
                OptionsVerdict::Pass => return Ok(()),
                OptionsVerdict::BadLength { offset } => (
                    PARAM_PROBLEM_ERRONEOUS_FIELD,
                    offset,
                    DropReason::OptionOverrun,
                ),
                OptionsVerdict::Unknown { action, offset } => {
                    let multicast = pkt.buf[ip + v6f::DST_ADDR.start] == 0xff;
                    match action {
                        UnknownOptionAction::DiscardSendIcmp => {}
                        UnknownOptionAction::DiscardSendIcmpIfNotMulticast if !multicast => {}
                        _ => return Err(Verdict::Drop(DropReason::UnknownOption)),
                    }
                    (
                        PARAM_PROBLEM_UNRECOGNIZED_OPTION,
                        offset,
                        DropReason::UnknownOption,
                    )
                }
            };
        Err(self.icmp_error(
            ctx,
            pkt,
            ip,
            ICMPV6_PARAM_PROBLEM,
            code,
            (ipv6::HEADER_LEN + offset) as u32,
            reason,
        ))
    }

    /// Drops a packet whose source may not leave its link (`reason` from `source_error`):
    /// a link-local source is told Destination Unreachable code 2 (beyond scope of source
    /// address, RFC 4443 3.1) on its link; the other sources cannot be answered.
    #[cold]
    fn bad_source(&mut self, ctx: &Ctx, pkt: &PacketBuf, ip: usize, reason: DropReason) -> Verdict {
        if reason != DropReason::LinkLocalSource {
            return Verdict::Drop(reason);
        }
        self.icmp_error(
            ctx,
            pkt,
            ip,
            ICMPV6_DEST_UNREACHABLE,
            DEST_UNREACHABLE_BEYOND_SCOPE,
            0,
            reason,
        )
    }

    /// Drops the IPv6 packet at `ip` for which this node has no route (`NoRoute`) or no SID
    /// inside its own locator (`NoSid`) with a Destination Unreachable code 0 (RFC 4443 3.1:
    /// "lack of a matching entry in the forwarding node's routing table"). A packet this node
    /// encapsulated itself (its source is `encap_source`) is dropped without an error: the
    /// error would come back to this node.
    #[cold]
    fn unreachable(
        &mut self,
        ctx: &Ctx,
        pkt: &PacketBuf,
        ip: usize,
        reason: DropReason,
    ) -> Verdict {
        if pkt
            .buf
            .get(ip + v6f::SRC_ADDR.start..ip + v6f::SRC_ADDR.end)
            == Some(&self.encap_source[..])
        {
            self.counters.icmp.suppressed += 1;
            return Verdict::Drop(reason);
        }
        self.icmp_error(
            ctx,
            pkt,
            ip,
            ICMPV6_DEST_UNREACHABLE,
            DEST_UNREACHABLE_NO_ROUTE,
            0,
            reason,
        )
    }

    /// Sends the IPv6 packet at `ip` by FIB lookup of its destination in `table`; a local SID
    /// destination is processed here (up to `MAX_LOCAL_PASSES`).
    #[inline]
    fn fib_v6(
        &mut self,
        ctx: &Ctx,
        pkt: &mut PacketBuf,
        ip: usize,
        table: TableIdx,
        depth: u8,
    ) -> Verdict {
        let Some(h) = ip6(&pkt.buf, ip) else {
            return Verdict::Drop(DropReason::Truncated);
        };
        let dst = u128::from(h.dst_addr());
        if self.in_locator(dst) {
            if let Some(sid) = self.sids.lookup(dst) {
                if depth >= MAX_LOCAL_PASSES {
                    return Verdict::Drop(DropReason::LocalSidLoop);
                }
                return self.endpoint(ctx, pkt, ip, sid, depth + 1);
            }
            return self.unreachable(ctx, pkt, ip, DropReason::NoSid);
        }
        match self.fib.lookup_v6(table, dst) {
            Some(adj) => tx(pkt, ip, adj, EtherType::IPV6),
            None => self.unreachable(ctx, pkt, ip, DropReason::NoRoute),
        }
    }

    /// Delivers the IP packet at `l3` to `vm` (or appends it to the VM's buffer while that
    /// buffer is being released, to keep arrival order).
    #[inline]
    fn deliver(
        &mut self,
        ctx: &Ctx,
        pkt: &mut PacketBuf,
        l3: usize,
        vm: VmId,
        ethertype: EtherType,
    ) -> Verdict {
        let Some(v) = self.vms.vms.get(vm.index()) else {
            return Verdict::Drop(DropReason::UnknownVm);
        };
        if v.state != VmState::Running {
            self.counters.vms[vm.index()].dropped += 1;
            return Verdict::Drop(DropReason::VmNotRunning);
        }
        if !self.buffers.is_empty(vm) {
            return self.hold(ctx, pkt, l3, vm, ethertype);
        }
        let (mac, port) = (v.mac, v.port);
        let s = l3 - ethernet::HEADER_LEN;
        let b = &mut pkt.buf;
        b[s..s + 6].copy_from_slice(&mac);
        b[s + 6..s + 12].copy_from_slice(&self.gateway_mac);
        write_u16(b, s + 12, ethertype.0);
        pkt.start = s;
        self.counters.vms[vm.index()].tx.add(pkt.end - s);
        Verdict::Tx(port)
    }

    /// Copies the IP packet at `l3` (of type `ethertype`) into `vm`'s End.SBUF buffer (see
    /// [`crate::buffer`]).
    fn hold(
        &mut self,
        ctx: &Ctx,
        pkt: &mut PacketBuf,
        l3: usize,
        vm: VmId,
        ethertype: EtherType,
    ) -> Verdict {
        match self.buffers.push(vm, ctx.now, pkt, l3, ethertype) {
            Ok(()) => {
                self.counters.vms[vm.index()].held += 1;
                if self.vms.vms[vm.index()].state == VmState::Running
                    && !self.releasing.contains(&vm)
                {
                    // Cannot allocate: capacity is the number of VMs.
                    self.releasing.push(vm);
                }
                Verdict::Held(vm)
            }
            Err(r) => {
                self.counters.vms[vm.index()].dropped += 1;
                Verdict::Drop(r)
            }
        }
    }

    /// Endpoint processing of the IPv6 packet at `ip`, whose destination matched `sid`.
    fn endpoint(
        &mut self,
        ctx: &Ctx,
        pkt: &mut PacketBuf,
        ip: usize,
        sid: SidId,
        depth: u8,
    ) -> Verdict {
        let Some(entry) = self.sids.get(sid) else {
            return Verdict::Drop(DropReason::NoSid);
        };
        let (action, flavors, csid) = (entry.action, entry.flavors, entry.csid);
        if let Some(c) = self.counters.sids.get_mut(sid.index()) {
            c.add(pkt.end - pkt.start);
        }
        let chain = match walk(&pkt.buf[ip..pkt.end]) {
            Ok(c) => c,
            Err(r) => return Verdict::Drop(r),
        };
        // The SRH, if the routing header is one. RFC 8200 section 4.4: an unrecognized Routing
        // Type with Segments Left != 0 is a Parameter Problem pointing at the Routing Type.
        let mut srh = None;
        if let Some(rh) = chain.routing {
            if chain.routing_type == srh::ROUTING_TYPE {
                srh = Some(rh);
            } else if chain.segments_left != 0 {
                return self.icmp_error(
                    ctx,
                    pkt,
                    ip,
                    ICMPV6_PARAM_PROBLEM,
                    PARAM_PROBLEM_ERRONEOUS_FIELD,
                    (rh + srh::FIELD_ROUTING_TYPE) as u32,
                    DropReason::UnsupportedRoutingType,
                );
            }
        }
        // RFC 8754 2.1.2.1: the HMAC TLV, by the ingress port's mode (crate::hmac).
        if let Err(f) = self.hmac.check(ctx.ingress, &pkt.buf[ip..pkt.end], srh) {
            let Some(ptr) = f.pointer else {
                return Verdict::Drop(f.reason);
            };
            let code = PARAM_PROBLEM_ERRONEOUS_FIELD;
            return self.icmp_error(ctx, pkt, ip, ICMPV6_PARAM_PROBLEM, code, ptr, f.reason);
        }
        // NEXT-C-SID (draft-ietf-spring-srv6-srh-compression section 4.1): if the DA carries
        // a next C-SID in its argument, shift it into place instead of consulting the SRH.
        if let Some(c) = csid {
            let da = read_addr(&pkt.buf, ip + v6f::DST_ADDR.start);
            let arg_bits = 128 - u32::from(c.block_len) - u32::from(c.node_len);
            let arg = da & ((1u128 << arg_bits) - 1);
            if arg != 0 {
                if let Err(v) = self.hop_limit_forward(ctx, pkt, ip) {
                    return v;
                }
                let block = da & mask_of(c.block_len);
                let new = block | (arg << c.node_len);
                pkt.buf[ip + v6f::DST_ADDR.start..ip + v6f::DST_ADDR.end]
                    .copy_from_slice(&new.to_be_bytes());
                return match action {
                    SidAction::EndX(adj) => tx(pkt, ip, adj, EtherType::IPV6),
                    _ => self.fib_v6(ctx, pkt, ip, TableIdx(0), depth),
                };
            }
        }
        let sl = if srh.is_some() {
            chain.segments_left
        } else {
            0
        };
        // Behind a non-first fragment is data, not the upper-layer header: whatever would
        // process it (last segment, decapsulation, End.S's VM lookup) cannot, and no error may
        // point into bytes this node did not parse. Discard (this node does not reassemble).
        if chain.fragment_data && (sl == 0 || matches!(action, SidAction::EndS(_))) {
            return Verdict::Drop(DropReason::NonFirstFragment);
        }
        match action {
            SidAction::End
            | SidAction::EndX(_)
            | SidAction::EndT(_)
            | SidAction::EndB6Encaps(_) => {
                let Some(o) = srh.filter(|_| sl > 0) else {
                    return self.upper_layer_end(ctx, pkt, ip, &chain, action, flavors, depth);
                };
                // RFC 8986 4.1 S05-S16.
                let ip = match self.end_step(ctx, pkt, ip, o, chain.routing_nh_at, flavors) {
                    Ok(ip) => ip,
                    Err(v) => return v,
                };
                match action {
                    SidAction::EndX(adj) => tx(pkt, ip, adj, EtherType::IPV6),
                    SidAction::EndT(t) => self.fib_v6(ctx, pkt, ip, t, depth),
                    SidAction::EndB6Encaps(p) => {
                        // RFC 8986 4.13 S17-S21: push a new IPv6 header with B's SRH.
                        let ip = match self.encap_with(pkt, ip, p, true) {
                            Ok(ip) => ip,
                            Err(r) => return Verdict::Drop(r),
                        };
                        self.fib_v6(ctx, pkt, ip, TableIdx(0), depth)
                    }
                    _ => self.fib_v6(ctx, pkt, ip, TableIdx(0), depth),
                }
            }
            SidAction::EndS(vm_param) => {
                let inner = ip + chain.upper;
                let vm = vm_param.or_else(|| self.inner_vm(pkt, inner, chain.upper_proto));
                // A commit-fence marker (no upper layer) always goes on to the End.SBUF.
                let marker = chain.upper_proto == IpProtocol::NO_NEXT_HEADER && sl > 0;
                let running = !marker
                    && vm.is_some_and(|v| self.vms.vms[v.index()].state == VmState::Running);
                if running {
                    return self.decap_to_vm(ctx, pkt, ip, &chain, vm);
                }
                if let Some(o) = srh.filter(|_| sl > 0) {
                    // Not here: act as End towards the next segment (the destination host).
                    let ip = match self.end_step(ctx, pkt, ip, o, chain.routing_nh_at, flavors) {
                        Ok(ip) => ip,
                        Err(v) => return v,
                    };
                    return self.fib_v6(ctx, pkt, ip, TableIdx(0), depth);
                }
                match vm {
                    Some(v) => {
                        self.counters.vms[v.index()].dropped += 1;
                        Verdict::Drop(DropReason::VmNotRunning)
                    }
                    None if matches!(chain.upper_proto, IpProtocol::IPV6 | IpProtocol::IPV4) => {
                        Verdict::Drop(DropReason::UnknownVm)
                    }
                    None => self.upper_layer_error(ctx, pkt, ip, &chain),
                }
            }
            _ => {
                // Decapsulating behaviors (RFC 8986 4.4-4.8 S02-S05; End.SBUF the same way):
                // only as the last segment.
                if let Some(o) = srh.filter(|_| sl != 0) {
                    return self.icmp_error(
                        ctx,
                        pkt,
                        ip,
                        ICMPV6_PARAM_PROBLEM,
                        PARAM_PROBLEM_ERRONEOUS_FIELD,
                        (o + srh::FIELD_SEGMENTS_LEFT) as u32,
                        DropReason::SegmentsLeftNotZero,
                    );
                }
                if let (SidAction::EndSbuf(..), Some(o), IpProtocol::NO_NEXT_HEADER) =
                    (action, srh, chain.upper_proto)
                {
                    if let Some(v) = self.fence_marker_in(ctx, pkt, ip, o) {
                        return v;
                    }
                }
                self.decap_behavior(ctx, pkt, ip, &chain, action)
            }
        }
    }

    /// RFC 8986 section 4.1 S05-S16 (End with SL > 0), plus the PSP flavor (4.16.1). Returns
    /// the (possibly moved) offset of the IPv6 header.
    #[inline]
    fn end_step(
        &mut self,
        ctx: &Ctx,
        pkt: &mut PacketBuf,
        ip: usize,
        srh_rel: usize,
        routing_nh_at: usize,
        flavors: FlavorSet,
    ) -> Result<usize, Verdict> {
        let o = ip + srh_rel;
        let b = &pkt.buf;
        let hl = b[ip + v6f::HOP_LIMIT];
        // S05: hop limit.
        if hl <= 1 {
            return Err(self.icmp_error(
                ctx,
                pkt,
                ip,
                ICMPV6_TIME_EXCEEDED,
                0,
                0,
                DropReason::HopLimitExceeded,
            ));
        }
        // The walker checked that the whole header lies inside the packet.
        let view = srh::Srh::new_unchecked(&b[o..pkt.end]);
        let hel = usize::from(view.hdr_ext_len());
        let sl = usize::from(view.segments_left());
        let le = usize::from(view.last_entry());
        // S09-S10: max_LE = (Hdr Ext Len / 2) - 1; Last Entry > max_LE or SL > LE + 1 is a
        // Parameter Problem code 0 pointing at Segments Left.
        let ptr = (srh_rel + srh::FIELD_SEGMENTS_LEFT) as u32;
        if hel < 2 || le > hel / 2 - 1 {
            return Err(self.icmp_error(
                ctx,
                pkt,
                ip,
                ICMPV6_PARAM_PROBLEM,
                PARAM_PROBLEM_ERRONEOUS_FIELD,
                ptr,
                DropReason::LastEntryBeyondSegmentList,
            ));
        }
        if sl > le + 1 {
            return Err(self.icmp_error(
                ctx,
                pkt,
                ip,
                ICMPV6_PARAM_PROBLEM,
                PARAM_PROBLEM_ERRONEOUS_FIELD,
                ptr,
                DropReason::SegmentsLeftBeyondLastEntry,
            ));
        }
        // RFC 8754 section 2.1: TLVs after the segment list must fit in the SRH.
        let srh_len = view.header_len();
        if view.tlv_offset() < srh_len && view.check_tlv_bounds().is_err() {
            return Err(Verdict::Drop(DropReason::TlvOverrun));
        }
        // RFC 4291 2.7: multicast addresses must not "appear in any Routing header". A
        // multicast next segment is an erroneous field of the SRH, reported before the DA is
        // rewritten (an error about a packet to a multicast address must be suppressed).
        let next_rel = srh_rel + srh::FIELD_SEGMENT_LIST + 16 * (sl - 1);
        if b[ip + next_rel] == 0xff {
            return Err(self.icmp_error(
                ctx,
                pkt,
                ip,
                ICMPV6_PARAM_PROBLEM,
                PARAM_PROBLEM_ERRONEOUS_FIELD,
                next_rel as u32,
                DropReason::MulticastSegment,
            ));
        }
        // S14-S16.
        let b = &mut pkt.buf;
        b[ip + v6f::HOP_LIMIT] = hl - 1;
        let sl = sl - 1;
        b[o + srh::FIELD_SEGMENTS_LEFT] = sl as u8;
        let seg = o + srh::FIELD_SEGMENT_LIST + 16 * sl;
        b.copy_within(seg..seg + 16, ip + v6f::DST_ADDR.start);
        if sl == 0 && flavors.contains(Flavor::Psp) {
            // RFC 8986 4.16.1 S14.1-S14.4: pop the SRH.
            b[ip + routing_nh_at] = b[o + srh::FIELD_NEXT_HEADER];
            let pl = read_u16(b, ip + v6f::PAYLOAD_LEN.start) as usize - srh_len;
            write_u16(b, ip + v6f::PAYLOAD_LEN.start, pl as u16);
            b.copy_within(pkt.start..o, pkt.start + srh_len);
            pkt.start += srh_len;
            return Ok(ip + srh_len);
        }
        Ok(ip)
    }

    /// Upper-layer processing at an End/End.X/End.T/End.B6.Encaps SID (RFC 8986 4.1.1; USD
    /// flavor 4.16.3: decapsulate an inner IPv6 or IPv4 packet and forward it).
    #[allow(clippy::too_many_arguments)]
    fn upper_layer_end(
        &mut self,
        ctx: &Ctx,
        pkt: &mut PacketBuf,
        ip: usize,
        chain: &Chain,
        action: SidAction,
        flavors: FlavorSet,
        depth: u8,
    ) -> Verdict {
        if flavors.contains(Flavor::Usd) {
            let inner = ip + chain.upper;
            let table = match action {
                SidAction::EndT(t) => t,
                _ => TableIdx(0),
            };
            match chain.upper_proto {
                IpProtocol::IPV6 => {
                    if let Err(r) = self
                        .inner_v6(pkt, inner)
                        .and_then(|()| self.forward_inner(ctx.now, pkt, inner, IpProtocol::IPV6))
                    {
                        return Verdict::Drop(r);
                    }
                    pkt.start = inner - ethernet::HEADER_LEN;
                    return match action {
                        SidAction::EndX(adj) => tx(pkt, inner, adj, EtherType::IPV6),
                        _ => self.fib_v6(ctx, pkt, inner, table, depth),
                    };
                }
                IpProtocol::IPV4 => {
                    if let Err(r) = self
                        .inner_v4(pkt, inner)
                        .and_then(|()| self.forward_inner(ctx.now, pkt, inner, IpProtocol::IPV4))
                    {
                        return Verdict::Drop(r);
                    }
                    pkt.start = inner - ethernet::HEADER_LEN;
                    return match action {
                        SidAction::EndX(adj) => tx(pkt, inner, adj, EtherType::IPV4),
                        _ => self.fib_v4(ctx.now, pkt, inner, table),
                    };
                }
                _ => {}
            }
        }
        self.upper_layer_error(ctx, pkt, ip, chain)
    }

    /// RFC 8986 section 4.1.1: the upper-layer header is not allowed at this SID (this node
    /// terminates no upper-layer protocol at its SIDs): Parameter Problem code 4 (SR
    /// Upper-layer Header Error) pointing at the upper-layer header.
    #[cold]
    fn upper_layer_error(
        &mut self,
        ctx: &Ctx,
        pkt: &PacketBuf,
        ip: usize,
        chain: &Chain,
    ) -> Verdict {
        self.icmp_error(
            ctx,
            pkt,
            ip,
            ICMPV6_PARAM_PROBLEM,
            PARAM_PROBLEM_SR_UPPER_LAYER,
            chain.upper as u32,
            DropReason::UnsupportedNextHeader,
        )
    }

    /// The local VM addressed by the inner packet at `inner`.
    #[inline]
    fn inner_vm(&self, pkt: &PacketBuf, inner: usize, proto: IpProtocol) -> Option<VmId> {
        match proto {
            IpProtocol::IPV6 if pkt.end >= inner + ipv6::HEADER_LEN => {
                let h = ip6(&pkt.buf, inner)?;
                self.vms.by_v6(u128::from(h.dst_addr()))
            }
            IpProtocol::IPV4 if pkt.end >= inner + ipv4::HEADER_LEN => self
                .vms
                .by_v4(read_u32(&pkt.buf, inner + v4f::DST_ADDR.start)),
            _ => None,
        }
    }

    /// Validates an inner IPv6 header at `inner` and trims the packet to it.
    #[inline]
    fn inner_v6(&self, pkt: &mut PacketBuf, inner: usize) -> Result<(), DropReason> {
        if pkt.end < inner + ipv6::HEADER_LEN {
            return Err(DropReason::Truncated);
        }
        let h = ip6(&pkt.buf, inner).ok_or(DropReason::Truncated)?;
        if h.version() != 6 {
            return Err(DropReason::BadIpVersion);
        }
        let end = inner + h.total_len();
        if end > pkt.end {
            return Err(DropReason::PayloadLengthBeyondFrame);
        }
        pkt.end = end;
        Ok(())
    }

    /// Validates an inner IPv4 header at `inner` and trims the packet to it.
    #[inline]
    fn inner_v4(&self, pkt: &mut PacketBuf, inner: usize) -> Result<(), DropReason> {
        if pkt.end < inner + ipv4::HEADER_LEN {
            return Err(DropReason::Truncated);
        }
        let b = &pkt.buf;
        if b[inner] >> 4 != 4 {
            return Err(DropReason::BadIpVersion);
        }
        let ihl = usize::from(b[inner] & 0x0f) * 4;
        let total = usize::from(read_u16(b, inner + v4f::TOTAL_LEN.start));
        if ihl < ipv4::HEADER_LEN || total < ihl || inner + total > pkt.end {
            return Err(DropReason::Ipv4Malformed);
        }
        pkt.end = inner + total;
        Ok(())
    }

    /// End.S delivery: decapsulate and deliver to `vm` (running here).
    fn decap_to_vm(
        &mut self,
        ctx: &Ctx,
        pkt: &mut PacketBuf,
        ip: usize,
        chain: &Chain,
        vm: Option<VmId>,
    ) -> Verdict {
        let inner = ip + chain.upper;
        let proto = chain.upper_proto;
        let et = match proto {
            IpProtocol::IPV6 => self.inner_v6(pkt, inner).map(|()| EtherType::IPV6),
            IpProtocol::IPV4 => self.inner_v4(pkt, inner).map(|()| EtherType::IPV4),
            _ => return self.upper_layer_error(ctx, pkt, ip, chain),
        };
        let et = et.and_then(|et| self.forward_inner(ctx.now, pkt, inner, proto).map(|()| et));
        match (et, vm) {
            (Ok(et), Some(vm)) => self.deliver(ctx, pkt, inner, vm, et),
            (Err(r), _) => Verdict::Drop(r),
            (Ok(_), None) => Verdict::Drop(DropReason::UnknownVm),
        }
    }

    /// The decapsulating behaviors (End.DX6/DX4/DT6/DT4/DT46/SBUF), SL == 0 already checked.
    fn decap_behavior(
        &mut self,
        ctx: &Ctx,
        pkt: &mut PacketBuf,
        ip: usize,
        chain: &Chain,
        action: SidAction,
    ) -> Verdict {
        let inner = ip + chain.upper;
        let proto = chain.upper_proto;
        let allowed = match action {
            SidAction::EndDx6(_) | SidAction::EndDt6(_) => proto == IpProtocol::IPV6,
            SidAction::EndDx4(_) | SidAction::EndDt4(_) => proto == IpProtocol::IPV4,
            _ => proto == IpProtocol::IPV6 || proto == IpProtocol::IPV4,
        };
        if !allowed {
            return self.upper_layer_error(ctx, pkt, ip, chain);
        }
        let checked = if proto == IpProtocol::IPV6 {
            self.inner_v6(pkt, inner)
        } else {
            self.inner_v4(pkt, inner)
        };
        if let Err(r) = checked.and_then(|()| self.forward_inner(ctx.now, pkt, inner, proto)) {
            return Verdict::Drop(r);
        }
        let et = if proto == IpProtocol::IPV6 {
            EtherType::IPV6
        } else {
            EtherType::IPV4
        };
        pkt.start = inner - ethernet::HEADER_LEN;
        match action {
            SidAction::EndDx6(adj) | SidAction::EndDx4(adj) => tx(pkt, inner, adj, et),
            SidAction::EndDt6(t) | SidAction::EndDt4(t) | SidAction::EndDt46(t) => {
                if let Some(vm) = self.inner_vm(pkt, inner, proto) {
                    return self.deliver_direct(ctx, pkt, inner, vm, et, Some(ip));
                }
                if proto == IpProtocol::IPV6 {
                    let Some(h) = ip6(&pkt.buf, inner) else {
                        return Verdict::Drop(DropReason::Truncated);
                    };
                    let dst = u128::from(h.dst_addr());
                    match self.fib.lookup_v6(t, dst) {
                        Some(adj) => tx(pkt, inner, adj, et),
                        None => self.unreachable(ctx, pkt, inner, DropReason::NoRoute),
                    }
                } else {
                    self.fib_v4(ctx.now, pkt, inner, t)
                }
            }
            SidAction::EndSbuf(vm_param, mode) => {
                let Some(vm) = vm_param.or_else(|| self.inner_vm(pkt, inner, proto)) else {
                    return Verdict::Drop(DropReason::UnknownVm);
                };
                if self.vms.vms[vm.index()].state == VmState::Running {
                    return self.deliver(ctx, pkt, inner, vm, et);
                }
                match mode {
                    SbufMode::Drop => {
                        self.counters.vms[vm.index()].dropped += 1;
                        Verdict::Drop(DropReason::SbufDropMode)
                    }
                    SbufMode::Buffer => self.hold(ctx, pkt, inner, vm, et),
                }
            }
            _ => Verdict::Drop(DropReason::UnsupportedNextHeader),
        }
    }

    /// IPv4 FIB lookup and transmission (no TTL change: decapsulated or already decremented).
    fn fib_v4(&mut self, now: Instant, pkt: &mut PacketBuf, l3: usize, table: TableIdx) -> Verdict {
        let dst = read_u32(&pkt.buf, l3 + 16);
        match self.fib.lookup_v4(table, dst) {
            Some(adj) => tx(pkt, l3, adj, EtherType::IPV4),
            None => {
                // RFC 1812 5.2.7.1: network unreachable to the source.
                let inv = &pkt.buf[l3..pkt.end];
                self.error_to_source_v4(
                    now,
                    inv,
                    ICMPV4_DEST_UNREACHABLE,
                    ICMPV4_NET_UNREACHABLE,
                    0,
                );
                Verdict::Drop(DropReason::NoRoute)
            }
        }
    }

    /// Applies policy `p` to the packet from a local VM at `ip` (IPv6 if `v6`), then routes the
    /// result.
    fn apply_policy(
        &mut self,
        ctx: &Ctx,
        pkt: &mut PacketBuf,
        ip: usize,
        p: PolicyId,
        v6: bool,
        has_hbh: bool,
    ) -> Verdict {
        let Some(policy) = self.policies.get(p.index()) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        if let Some(c) = self.counters.policies.get_mut(p.index()) {
            c.add(pkt.end - pkt.start);
        }
        let new_ip = match policy.headend {
            Headend::HEncaps | Headend::HEncapsRed => self.encap_with(pkt, ip, p, v6),
            Headend::HInsert => {
                if !v6 || has_hbh {
                    return Verdict::Drop(DropReason::InsertNotApplicable);
                }
                insert_srh(pkt, ip, &policy.rewrite)
            }
        };
        match new_ip {
            Ok(ip) => self.fib_v6(ctx, pkt, ip, TableIdx(0), 0),
            Err(r) => Verdict::Drop(r),
        }
    }

    /// H.Encaps / H.Encaps.Red with policy `p`'s precomputed rewrite (RFC 8986 5.1 / 5.2).
    #[inline]
    fn encap_with(
        &self,
        pkt: &mut PacketBuf,
        ip: usize,
        p: PolicyId,
        v6: bool,
    ) -> Result<usize, DropReason> {
        let Some(policy) = self.policies.get(p.index()) else {
            return Err(DropReason::NoRoute);
        };
        let rw = &policy.rewrite;
        let n = rw.len();
        if ip < n + ethernet::HEADER_LEN {
            return Err(DropReason::NoHeadroom);
        }
        let inner_len = pkt.end - ip;
        let payload = n - ipv6::HEADER_LEN + inner_len;
        if payload > usize::from(u16::MAX) {
            return Err(DropReason::FrameTooLarge);
        }
        let b = &mut pkt.buf;
        // RFC 8986 5.1 S04: outer Traffic Class and Flow Label from the inner packet.
        let (tc, inner_fl) = if v6 {
            let w = read_u32(b, ip);
            (((w >> 20) & 0xff) as u8, w & 0x000f_ffff)
        } else {
            (b[ip + v4f::TOS], 0)
        };
        let fl = match policy.flow_label {
            FlowLabelMode::Copy => inner_fl,
            FlowLabelMode::Hash => flow_hash(b, ip, v6),
        };
        let new_ip = ip - n;
        b[new_ip..ip].copy_from_slice(rw);
        let w = (6u32 << 28) | (u32::from(tc) << 20) | fl;
        b[new_ip + v6f::VER_TC_FLOW.start..new_ip + v6f::VER_TC_FLOW.end]
            .copy_from_slice(&w.to_be_bytes());
        write_u16(b, new_ip + v6f::PAYLOAD_LEN.start, payload as u16);
        let nh = if v6 {
            IpProtocol::IPV6
        } else {
            IpProtocol::IPV4
        };
        match policy.srh_offset {
            Some(o) => b[new_ip + o + srh::FIELD_NEXT_HEADER] = nh.0,
            None => b[new_ip + v6f::NEXT_HEADER] = nh.0,
        }
        pkt.start = new_ip - ethernet::HEADER_LEN;
        Ok(new_ip)
    }

    // ----------------------------------------------------------------------------------------
    // IPv4
    // ----------------------------------------------------------------------------------------

    fn ipv4_in(&mut self, ctx: &Ctx, pkt: &mut PacketBuf) -> Verdict {
        let ip = pkt.start + ethernet::HEADER_LEN;
        if let Err(r) = self.inner_v4(pkt, ip) {
            return Verdict::Drop(if r == DropReason::BadIpVersion {
                r
            } else if pkt.end < ip + ipv4::HEADER_LEN {
                DropReason::Truncated
            } else {
                r
            });
        }
        let b = &pkt.buf;
        let ihl = usize::from(b[ip] & 0x0f) * 4;
        if checksum::data(&b[ip..ip + ihl]) != 0xffff {
            return Verdict::Drop(DropReason::Ipv4BadChecksum);
        }
        let src = read_u32(b, ip + v4f::SRC_ADDR.start);
        let dst = read_u32(b, ip + v4f::DST_ADDR.start);
        if dst >> 28 == 0xe || dst == u32::MAX {
            return Verdict::Drop(DropReason::MulticastDestination);
        }
        if ctx.kind == PortKind::Vm {
            match self.vms.by_v4(src) {
                Some(vm) if self.vms.vms[vm.index()].port == ctx.ingress => {
                    self.counters.vms[vm.index()].rx.add(pkt.end - pkt.start);
                }
                _ => return Verdict::Drop(DropReason::VmSourceSpoofed),
            }
        }
        let local = match ctx.kind {
            PortKind::Vm => self.gateway_v4,
            PortKind::Uplink => self.ports[ctx.ingress.index()].ipv4_address,
        };
        if local == Some(dst) {
            return self.local_v4(ctx, pkt, ip, ihl);
        }
        // TTL (RFC 791 / RFC 1812 5.3.1): Time Exceeded to the source.
        let ttl = pkt.buf[ip + v4f::TTL];
        if ttl <= 1 {
            self.error_to_source_v4(ctx.now, &pkt.buf[ip..pkt.end], ICMPV4_TIME_EXCEEDED, 0, 0);
            return Verdict::Drop(DropReason::Ipv4TtlExceeded);
        }
        decrement_ttl(&mut pkt.buf[ip..ip + ihl]);
        if let Some(vm) = self.vms.by_v4(dst) {
            if ctx.kind == PortKind::Uplink {
                return self.deliver(ctx, pkt, ip, vm, EtherType::IPV4);
            }
            if self.vms.vms[vm.index()].state == VmState::Running {
                return self.deliver_direct(ctx, pkt, ip, vm, EtherType::IPV4, None);
            }
        }
        if ctx.kind == PortKind::Vm {
            if let Some((_, Steering::Policy(p))) = self.mappings.v4.lookup(u128::from(dst)) {
                return self.apply_policy(ctx, pkt, ip, p, false, false);
            }
            if let Some(vm) = self.vms.by_v4(dst) {
                return self.deliver_direct(ctx, pkt, ip, vm, EtherType::IPV4, None);
            }
            return self.fib_v4(ctx.now, pkt, ip, TableIdx(0));
        }
        let table = self.ports[ctx.ingress.index()].table;
        if let Some(p) = self.fib.steer_v4(table, dst) {
            return self.apply_policy(ctx, pkt, ip, p, false, false);
        }
        self.fib_v4(ctx.now, pkt, ip, table)
    }

    /// An IPv4 packet for this node's address on the ingress port (the gateway's
    /// `ipv4_address` on a VM port, the uplink's `ipv4_address`): an ICMP echo request is
    /// answered in place, back to the neighbour that sent it (RFC 792; identifier, sequence
    /// and data kept, TTL 64, options kept as received); a request with a wrong checksum is
    /// `IcmpBadChecksum`; everything else (other ICMP, UDP, TCP, fragments) is
    /// `LocalNotServed` (VM ports: `DestinedToGateway`, as for IPv6).
    #[cold]
    fn local_v4(&mut self, ctx: &Ctx, pkt: &mut PacketBuf, ip: usize, ihl: usize) -> Verdict {
        let not_served = if ctx.kind == PortKind::Vm {
            DropReason::DestinedToGateway
        } else {
            DropReason::LocalNotServed
        };
        let b = &pkt.buf;
        let fragment = read_u16(b, ip + v4f::FLAGS_FRAG.start) & 0x3fff != 0;
        let msg = ip + ihl;
        if fragment
            || b[ip + v4f::PROTOCOL] != 1
            || pkt.end < msg + 8
            || b[msg] != 8
            || b[msg + 1] != 0
        {
            return Verdict::Drop(not_served);
        }
        if checksum::data(&b[msg..pkt.end]) != 0xffff {
            return Verdict::Drop(DropReason::IcmpBadChecksum);
        }
        let b = &mut pkt.buf;
        // Swap the addresses, TTL 64, header checksum anew.
        let (src, dst) = (
            read_u32(b, ip + v4f::SRC_ADDR.start),
            read_u32(b, ip + v4f::DST_ADDR.start),
        );
        b[ip + v4f::SRC_ADDR.start..ip + v4f::SRC_ADDR.end].copy_from_slice(&dst.to_be_bytes());
        b[ip + v4f::DST_ADDR.start..ip + v4f::DST_ADDR.end].copy_from_slice(&src.to_be_bytes());
        b[ip + v4f::TTL] = ECHO_REPLY_HOP_LIMIT;
        b[ip + v4f::CHECKSUM.start..ip + v4f::CHECKSUM.end].fill(0);
        let c = !checksum::data(&b[ip..ip + ihl]);
        write_u16(b, ip + v4f::CHECKSUM.start, c);
        // Echo reply (type 0), ICMP checksum anew.
        b[msg] = 0;
        b[msg + 2..msg + 4].fill(0);
        let c = !checksum::data(&b[msg..pkt.end]);
        write_u16(b, msg + 2, c);
        self.counters.icmp.echo_replies += 1;
        self.back_to_sender(ctx, pkt)
    }

    // ----------------------------------------------------------------------------------------
    // Generated packets
    // ----------------------------------------------------------------------------------------

    /// ARP (RFC 826) at the anycast gateway: a request for the gateway's IPv4 address on a VM
    /// port (from that VM's own address), or for an uplink's `ipv4_address` or one of its
    /// `proxy_arp` addresses, is answered in place, back to the sender. Nothing is learned
    /// and nothing is flooded: VM MACs and addresses come from the configuration, so
    /// gratuitous ARP from a VM is counted and dropped (`ArpGratuitous`), ARP claiming an
    /// address that is not the VM's own is `ArpSpoofed`, and the rest is `ArpNotForUs`.
    #[cold]
    fn arp_in(&mut self, ctx: &Ctx, pkt: &mut PacketBuf) -> Verdict {
        const ARP_LEN: usize = 28;
        let a = pkt.start + ethernet::HEADER_LEN;
        if pkt.end < a + ARP_LEN {
            return Verdict::Drop(DropReason::ArpInvalid);
        }
        let b = &pkt.buf;
        // Ethernet (1), IPv4 (0x0800), 6-byte hardware and 4-byte protocol addresses.
        if read_u16(b, a) != 1 || read_u16(b, a + 2) != 0x0800 || b[a + 4] != 6 || b[a + 5] != 4 {
            return Verdict::Drop(DropReason::ArpInvalid);
        }
        let op = read_u16(b, a + 6);
        if op != 1 && op != 2 {
            return Verdict::Drop(DropReason::ArpInvalid);
        }
        let spa = read_u32(b, a + 14);
        let tpa = read_u32(b, a + 24);
        let target = match ctx.kind {
            PortKind::Vm => {
                let own = self
                    .vms
                    .by_v4(spa)
                    .is_some_and(|vm| self.vms.vms[vm.index()].port == ctx.ingress);
                if spa == tpa || (spa == 0 && op == 1) {
                    // Announcement or probe (RFC 5227): about the VM's own address.
                    return Verdict::Drop(if own || spa == 0 {
                        DropReason::ArpGratuitous
                    } else {
                        DropReason::ArpSpoofed
                    });
                }
                if !own {
                    return Verdict::Drop(DropReason::ArpSpoofed);
                }
                self.gateway_v4
            }
            PortKind::Uplink => {
                let port = &self.ports[ctx.ingress.index()];
                if port.proxy_arp.contains(&tpa) {
                    Some(tpa)
                } else {
                    port.ipv4_address
                }
            }
        };
        if op != 1 || target != Some(tpa) {
            return Verdict::Drop(DropReason::ArpNotForUs);
        }
        let mac = self.our_mac(ctx);
        let mut sha = [0u8; 6];
        sha.copy_from_slice(&pkt.buf[a + 8..a + 14]);
        let b = &mut pkt.buf;
        write_u16(b, a + 6, 2);
        b[a + 18..a + 24].copy_from_slice(&sha);
        b[a + 24..a + 28].copy_from_slice(&spa.to_be_bytes());
        b[a + 8..a + 14].copy_from_slice(&mac);
        b[a + 14..a + 18].copy_from_slice(&tpa.to_be_bytes());
        pkt.end = a + ARP_LEN;
        self.counters.icmp.arp_answered += 1;
        self.back_to_sender(ctx, pkt)
    }

    /// Neighbor solicitations for the gateway (VM ports) or the port address (RFC 4861 7.1.1
    /// validation, 7.2.4 answer). Everything else ICMPv6 that reaches here is not for us.
    #[cold]
    fn ndp_in(&mut self, ctx: &Ctx, pkt: &PacketBuf, ip: usize) -> Verdict {
        let b = &pkt.buf[ip..pkt.end];
        let dst_multicast = b[24] == 0xff;
        if b[6] != IpProtocol::ICMPV6.0 || b.len() < ipv6::HEADER_LEN + 4 {
            return Verdict::Drop(if dst_multicast {
                DropReason::MulticastDestination
            } else {
                DropReason::NdpNotForUs
            });
        }
        let ty = b[ipv6::HEADER_LEN];
        if ty != NDP_NEIGHBOR_SOLICIT {
            return Verdict::Drop(if (133..=137).contains(&ty) {
                DropReason::NdpNotForUs
            } else if dst_multicast {
                DropReason::MulticastDestination
            } else {
                DropReason::DestinedToGateway
            });
        }
        let msg = &b[ipv6::HEADER_LEN..];
        if b[7] != 255
            || msg.len() < 24
            || msg[1] != 0
            || !icmpv6::Packet::new_unchecked(msg)
                .verify_checksum(&addr(&b[8..24]), &addr(&b[24..40]))
        {
            return Verdict::Drop(DropReason::NdpInvalid);
        }
        let mut target = [0u8; 16];
        target.copy_from_slice(&msg[8..24]);
        let port = &self.ports[ctx.ingress.index()];
        let mac = if ctx.kind == PortKind::Vm && target == self.gateway {
            self.gateway_mac
        } else if port.address.is_some_and(|a| a.octets() == target)
            || port.proxy_ndp.iter().any(|a| a.octets() == target)
        {
            port.mac
        } else {
            return Verdict::Drop(DropReason::NdpNotForUs);
        };
        let unspecified = b[8..24].iter().all(|&x| x == 0);
        let mut dst = [0u8; 16];
        let eth_dst = if unspecified {
            dst = ALL_NODES;
            ALL_NODES_MAC
        } else {
            dst.copy_from_slice(&b[8..24]);
            ctx.src_mac
        };
        if self.gen.push(ctx.ingress, &eth_dst, &mac, |out| {
            emit_na(
                out,
                Ipv6Addr::from(target),
                Ipv6Addr::from(dst),
                mac,
                true,
                !unspecified,
            )
        }) {
            self.counters.icmp.ndp_answered += 1;
        } else {
            self.counters.icmp.queue_full += 1;
        }
        Verdict::Consumed
    }

    /// `pkt` (verdict `Tx(egress)`) is longer than `egress`'s MTU: drops it (`PacketTooBig`)
    /// and queues an ICMPv6 Packet Too Big (RFC 4443 3.2, RFC 8200 section 5) for its original
    /// source, unless RFC 4443 2.4 (e) forbids it or the rate limit is reached.
    ///
    /// The original source and the MTU it must use depend on what this node did, found from
    /// the frame (cold path, nothing recorded per packet):
    /// - forwarded (transit, End, End.X, ...) or decapsulated (End.DX6, End.DT6, USD,
    ///   End.SBUF release): the packet's own source, the egress MTU;
    /// - encapsulated here (outer source = this node's `encap_source`: H.Encaps,
    ///   H.Encaps.Red, End.B6.Encaps, possibly several in one pass): the source of the packet
    ///   inside this node's headers, the egress MTU minus those headers. Linux answers the
    ///   tunnel source instead, which the real sender never hears of (a PMTUD black hole);
    /// - H.Insert on a VM's packet (an SRH on a packet from a VM port): the VM, with the
    ///   packet it sent (SRH removed, Segment List\[0\] back as destination) and the egress MTU
    ///   minus the SRH.
    ///
    /// The MTU is reported as at least 1280 (RFC 8200 section 5): this node does not fragment
    /// its encapsulations, so a tunnel over a 1280-byte link cannot carry 1280-byte packets.
    /// IPv4 (forwarded, or encapsulated here): with DF set, an ICMPv4 "fragmentation needed"
    /// (RFC 1191) with the MTU the source must use, routed like the other ICMPv4 errors
    /// ([`Dataplane::error_to_source_v4`]); without DF the packet is dropped (counted): this
    /// node does not fragment.
    ///
    /// The error leaves through the port toward its destination: the VM's port for a local
    /// running VM (from the gateway address), else the FIB route (from the gateway address on
    /// a VM port, `source_address` on an uplink). Sources reached only through an SR policy
    /// mapping are not encapsulated: the error follows the FIB like any underlay destination.
    #[cold]
    #[inline(never)]
    fn packet_too_big(
        &mut self,
        now: Instant,
        pkt: &PacketBuf,
        egress: PortId,
        from_vm: bool,
    ) -> Verdict {
        const REASON: DropReason = DropReason::PacketTooBig;
        self.counters.drop(REASON);
        let Some(mtu) = self.ports.get(egress.index()).and_then(|p| p.mtu) else {
            return Verdict::Drop(REASON);
        };
        if let Some((inv, next_mtu)) = self.too_big_v4(pkt, u32::from(mtu)) {
            // RFC 1191 4: only a DF packet is refused with "fragmentation needed"; this node
            // does not fragment, so a packet without DF is dropped (counted) without one.
            if inv.len() >= ipv4::HEADER_LEN && inv[v4f::FLAGS_FRAG.start] & 0x40 != 0 {
                let m = u16::try_from(next_mtu.max(68)).unwrap_or(u16::MAX);
                if self.error_to_source_v4(now, inv, ICMPV4_DEST_UNREACHABLE, ICMPV4_FRAG_NEEDED, m)
                {
                    self.counters.icmp.packet_too_big_sent += 1;
                }
            }
            return Verdict::Drop(REASON);
        }
        let mut scratch = [0u8; MIN_MTU];
        let Some(tb) = self.too_big_target(pkt, u32::from(mtu), from_vm, &mut scratch) else {
            return Verdict::Drop(REASON);
        };
        let ptb_mtu = tb.mtu.max(MIN_MTU as u32);
        if self.error_to_source(now, tb.invoking, ICMPV6_PACKET_TOO_BIG, 0, ptb_mtu) {
            self.counters.icmp.packet_too_big_sent += 1;
        }
        Verdict::Drop(REASON)
    }

    /// The IPv4 packet a too-big frame carries as its source sent it, and the MTU that source
    /// must use: a forwarded IPv4 frame (the egress MTU), or IPv4 inside this node's own
    /// encapsulations (outer source `encap_source`; the egress MTU minus those headers).
    /// `None` for anything else (IPv6, handled by [`Dataplane::too_big_target`]). The packet
    /// is the tail of the frame (`pkt.end - len..pkt.end`).
    fn too_big_v4<'a>(&self, pkt: &'a PacketBuf, egress_mtu: u32) -> Option<(&'a [u8], u32)> {
        let b = &pkt.buf[..pkt.end];
        if pkt.len() < ethernet::HEADER_LEN + ipv4::HEADER_LEN {
            return None;
        }
        let mut ip = pkt.start + ethernet::HEADER_LEN;
        match EtherType(read_u16(b, pkt.start + 12)) {
            EtherType::IPV4 => return Some((&b[ip..], egress_mtu)),
            EtherType::IPV6 => {}
            _ => return None,
        }
        let mut mtu = egress_mtu;
        for _ in 0..=MAX_LOCAL_PASSES {
            if b.len() < ip + ipv6::HEADER_LEN
                || b[ip + v6f::SRC_ADDR.start..ip + v6f::SRC_ADDR.end] != self.encap_source
            {
                return None;
            }
            let c = walk(&b[ip..]).ok()?;
            mtu = mtu.saturating_sub(c.upper as u32);
            match c.upper_proto {
                IpProtocol::IPV4 if ip + c.upper + ipv4::HEADER_LEN <= b.len() => {
                    return Some((&b[ip + c.upper..], mtu));
                }
                IpProtocol::IPV6 => ip += c.upper,
                _ => return None,
            }
        }
        None
    }

    /// Queues the ICMPv4 error `ty`/`code` about `inv` (an IPv4 packet) for its source (RFC
    /// 792, RFC 1812 4.3.2): routed like [`Dataplane::error_to_source`] (a local running VM,
    /// else table 0), from the gateway's `ipv4_address` out of a VM port or the uplink's
    /// `ipv4_address`; without such an address no error is sent (counted as suppressed).
    /// Never about an ICMPv4 error, a non-first fragment, a packet to a multicast or
    /// broadcast address, or from a source that is not one host (RFC 1812 4.3.2.7). Returns
    /// whether it was queued.
    #[cold]
    #[inline(never)]
    fn error_to_source_v4(&mut self, now: Instant, inv: &[u8], ty: u8, code: u8, mtu: u16) -> bool {
        if must_not_answer_v4(inv) {
            self.counters.icmp.suppressed += 1;
            return false;
        }
        let dst = read_u32(inv, v4f::SRC_ADDR.start);
        let Some((port, dst_mac, src_mac)) = self.route_back(IpAddr::from(dst.to_be_bytes()))
        else {
            self.counters.icmp.no_route += 1;
            return false;
        };
        let src = match self.ports.get(port.index()) {
            Some(p) if p.kind == PortKind::Uplink => p.ipv4_address,
            _ => self.gateway_v4,
        };
        let Some(src) = src else {
            self.counters.icmp.suppressed += 1;
            return false;
        };
        self.send_error(now, (port, dst_mac, src_mac), EtherType::IPV4, |out| {
            emit_icmpv4_error(out, src, dst, ty, code, mtu, inv)
        })
    }

    /// Queues the ICMPv6 error `ty`/`code`/`param` about `inv` (an IPv6 packet) for `inv`'s
    /// source, routed like any packet this node originates (see [`Dataplane::packet_too_big`]):
    /// unless RFC 4443 2.4 (e) forbids it, no port leads there, or the rate limit is reached.
    /// Returns whether it was queued.
    #[cold]
    #[inline(never)]
    fn error_to_source(&mut self, now: Instant, inv: &[u8], ty: u8, code: u8, param: u32) -> bool {
        if must_not_answer(inv) {
            self.counters.icmp.suppressed += 1;
            return false;
        }
        let dst = read_addr(inv, v6f::SRC_ADDR.start);
        let Some((port, dst_mac, src_mac)) = self.route_back(IpAddr::from(dst.to_be_bytes()))
        else {
            self.counters.icmp.no_route += 1;
            return false;
        };
        let src = match self.ports.get(port.index()) {
            Some(p) if p.kind == PortKind::Uplink => self.uplink_source(p),
            _ => self.gateway,
        };
        self.send_error(now, (port, dst_mac, src_mac), EtherType::IPV6, |out| {
            emit_error(
                out,
                Ipv6Addr::from(src),
                Ipv6Addr::from(dst),
                ty,
                code,
                param,
                inv,
            )
        })
    }

    /// Where a packet this node originates for `dst` leaves, and its destination and source
    /// MACs: a local running VM's port (from the gateway MAC), else the main table's route.
    fn route_back(&self, dst: IpAddr) -> Option<(PortId, [u8; 6], [u8; 6])> {
        let vm = match dst {
            IpAddr::V6(a) => self.vms.by_v6(u128::from(a)),
            IpAddr::V4(a) => self.vms.by_v4(u32::from(a)),
        };
        let vm_port = vm
            .map(|vm| &self.vms.vms[vm.index()])
            .filter(|v| v.state == VmState::Running)
            .map(|v| (v.port, v.mac, self.gateway_mac));
        vm_port.or_else(|| {
            match dst {
                IpAddr::V6(a) => self.fib.lookup_v6(TableIdx(0), u128::from(a)),
                IpAddr::V4(a) => self.fib.lookup_v4(TableIdx(0), u32::from(a)),
            }
            .map(|a| (a.port, a.dst_mac, a.src_mac))
        })
    }

    /// Queues a generated error (`fill` writes the IP packet) on `via` = (port, destination
    /// MAC, source MAC) unless the rate limit is reached or the queue is full; counted either
    /// way. Returns whether it was queued.
    fn send_error(
        &mut self,
        now: Instant,
        via: (PortId, [u8; 6], [u8; 6]),
        ethertype: EtherType,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> bool {
        if !self.icmp.allow(now) {
            self.counters.icmp.rate_limited += 1;
            return false;
        }
        let (port, dst_mac, src_mac) = via;
        if self
            .gen
            .push_typed(port, &dst_mac, &src_mac, ethertype, fill)
        {
            self.counters.icmp.errors_sent += 1;
            true
        } else {
            self.counters.icmp.queue_full += 1;
            false
        }
    }

    /// The original packet inside the IPv6 frame `pkt` and the MTU its source must use (see
    /// [`Dataplane::packet_too_big`]); `None` for IPv4 ([`Dataplane::too_big_v4`]) or a frame too
    /// short to answer. An H.Insert'ed packet is rebuilt without its SRH in `scratch`.
    fn too_big_target<'a>(
        &self,
        pkt: &'a PacketBuf,
        egress_mtu: u32,
        from_vm: bool,
        scratch: &'a mut [u8; MIN_MTU],
    ) -> Option<TooBig<'a>> {
        let b = &pkt.buf[..pkt.end];
        if pkt.len() < ethernet::HEADER_LEN + ipv6::HEADER_LEN
            || read_u16(b, pkt.start + 12) != EtherType::IPV6.0
        {
            // IPv4: ICMPv4 "fragmentation needed" is another piece of work; counted only.
            return None;
        }
        let mut ip = pkt.start + ethernet::HEADER_LEN;
        let mut mtu = egress_mtu;
        // Peel the encapsulations this node made (at most one per local pass, plus the headend).
        let mut peeled = false;
        for _ in 0..=MAX_LOCAL_PASSES {
            if b[ip + v6f::SRC_ADDR.start..ip + v6f::SRC_ADDR.end] != self.encap_source {
                break;
            }
            let Ok(c) = walk(&b[ip..]) else { break };
            match c.upper_proto {
                IpProtocol::IPV6 if ip + c.upper + ipv6::HEADER_LEN <= b.len() => {
                    ip += c.upper;
                    mtu = mtu.saturating_sub(c.upper as u32);
                    peeled = true;
                }
                // IPv4 from a VM, encapsulated here: no ICMPv4 error yet (counted drop).
                IpProtocol::IPV4 => return None,
                _ => break,
            }
        }
        if from_vm && !peeled {
            // H.Insert: an SRH on a packet from a VM port was put there by this node (VMs may
            // not send one). The VM gets back the packet it sent.
            if let Ok(c) = walk(&b[ip..]) {
                if let Some(rh) = c.routing.filter(|_| c.routing_type == srh::ROUTING_TYPE) {
                    let o = ip + rh;
                    let srh_len = srh::Srh::new_unchecked(&b[o..]).header_len();
                    let seg0 = o + srh::FIELD_SEGMENT_LIST;
                    if seg0 + 16 <= b.len() && o + srh_len <= b.len() && rh == ipv6::HEADER_LEN {
                        let rest = &b[o + srh_len..];
                        let n = (ipv6::HEADER_LEN + rest.len()).min(MIN_MTU);
                        scratch[..ipv6::HEADER_LEN].copy_from_slice(&b[ip..ip + ipv6::HEADER_LEN]);
                        scratch[ipv6::HEADER_LEN..n].copy_from_slice(&rest[..n - ipv6::HEADER_LEN]);
                        scratch[v6f::NEXT_HEADER] = b[o + srh::FIELD_NEXT_HEADER];
                        let pl =
                            read_u16(b, ip + v6f::PAYLOAD_LEN.start).saturating_sub(srh_len as u16);
                        write_u16(scratch, v6f::PAYLOAD_LEN.start, pl);
                        scratch[v6f::DST_ADDR].copy_from_slice(&b[seg0..seg0 + 16]);
                        return Some(TooBig {
                            invoking: &scratch[..n],
                            mtu: mtu.saturating_sub(srh_len as u32),
                        });
                    }
                }
            }
        }
        Some(TooBig {
            invoking: &b[ip..],
            mtu,
        })
    }

    /// Queues an ICMPv6 error about the packet at `ip` (unless RFC 4443 2.4 (e) forbids it or
    /// the rate limit is reached) and returns `Drop(reason)`.
    #[cold]
    #[allow(clippy::too_many_arguments)]
    fn icmp_error(
        &mut self,
        ctx: &Ctx,
        pkt: &PacketBuf,
        ip: usize,
        ty: u8,
        code: u8,
        param: u32,
        reason: DropReason,
    ) -> Verdict {
        self.icmp_error_from(ctx, pkt, ip, None, (ty, code, param), reason)
    }

    /// [`Dataplane::icmp_error`] from source `from` (default: the gateway on a VM port, the
    /// uplink's source, see [`Dataplane::uplink_source`]); `message` is (type, code, param).
    #[cold]
    fn icmp_error_from(
        &mut self,
        ctx: &Ctx,
        pkt: &PacketBuf,
        ip: usize,
        from: Option<[u8; 16]>,
        message: (u8, u8, u32),
        reason: DropReason,
    ) -> Verdict {
        let (ty, code, param) = message;
        let inv = &pkt.buf[ip..pkt.end];
        if must_not_answer(inv) {
            self.counters.icmp.suppressed += 1;
        } else if !self.icmp.allow(ctx.now) {
            self.counters.icmp.rate_limited += 1;
        } else {
            let (src, src_mac) = match ctx.kind {
                PortKind::Vm => (self.gateway, self.gateway_mac),
                PortKind::Uplink => {
                    let p = &self.ports[ctx.ingress.index()];
                    (self.uplink_source(p), p.mac)
                }
            };
            let src = from.unwrap_or(src);
            let dst = &inv[8..24];
            if self.gen.push(ctx.ingress, &ctx.src_mac, &src_mac, |out| {
                emit_error(out, Ipv6Addr::from(src), addr(dst), ty, code, param, inv)
            }) {
                self.counters.icmp.errors_sent += 1;
            } else {
                self.counters.icmp.queue_full += 1;
            }
        }
        Verdict::Drop(reason)
    }
}

/// Where a Packet Too Big goes and what it says, found from the frame that did not fit.
struct TooBig<'a> {
    /// The packet as its original source sent it (as far as this node changed it).
    invoking: &'a [u8],
    /// The MTU that source must use.
    mtu: u32,
}

/// Validates a port MTU: an IPv6 link needs at least 1280 (RFC 8200 section 5); the buffers
/// hold at most [`crate::MAX_MTU`].
fn check_mtu(path: &str, mtu: Option<u16>) -> Result<(), ConfigError> {
    match mtu {
        Some(m) if !(MIN_MTU..=crate::batch::MAX_MTU).contains(&usize::from(m)) => {
            Err(ConfigError::invalid(
                path,
                format!(
                    "MTU {m} is outside {MIN_MTU}..={} (IPv6 minimum to jumbo frames)",
                    crate::batch::MAX_MTU
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// RFC 4443 section 2.4 (e): no error in response to an ICMPv6 error, to a packet sent to a
/// multicast address, or to a packet whose source does not identify a single node.
/// Whether RFC 1812 4.3.2.7 forbids an ICMPv4 error about the IPv4 packet `inv`: too short
/// to quote, an ICMPv4 error itself, a non-first fragment, sent to a multicast or broadcast
/// address, or from `0.0.0.0`, a loopback, multicast, broadcast or class E address.
fn must_not_answer_v4(inv: &[u8]) -> bool {
    if inv.len() < ipv4::HEADER_LEN || inv[0] >> 4 != 4 {
        return true;
    }
    let src = read_u32(inv, v4f::SRC_ADDR.start);
    let dst = read_u32(inv, v4f::DST_ADDR.start);
    let bad_src = src == 0 || src >> 24 == 127 || src >> 28 >= 0xe;
    let bad_dst = dst >> 28 == 0xe || dst == u32::MAX;
    let frag_offset = read_u16(inv, v4f::FLAGS_FRAG.start) & 0x1fff;
    let ihl = usize::from(inv[0] & 0x0f) * 4;
    let icmp_error = inv[v4f::PROTOCOL] == 1
        && inv
            .get(ihl)
            .is_some_and(|t| matches!(t, 3 | 4 | 5 | 11 | 12));
    bad_src || bad_dst || frag_offset != 0 || icmp_error
}

/// Inserts `v` at `prefix` into a table's IPv6 or IPv4 longest-prefix map; a prefix already
/// there is refused at `{path}.prefix` as a duplicate `what`.
fn insert_prefix<V: Copy>(
    (v6, v4): (&mut Lpm<V, 128>, &mut Lpm<V, 32>),
    prefix: IpNet,
    v: V,
    path: &str,
    what: std::fmt::Arguments<'_>,
) -> Result<(), ConfigError> {
    let prev = match prefix {
        IpNet::V6(n) => v6.insert(u128::from(n.network()), n.prefix_len(), v),
        IpNet::V4(n) => v4.insert(u128::from(u32::from(n.network())), n.prefix_len(), v),
    };
    if prev.is_some() {
        return Err(ConfigError::invalid(
            format!("{path}.prefix"),
            format!("duplicate {what}"),
        ));
    }
    Ok(())
}

/// Hop limit of echo replies (Linux's default for the node's own packets).
const ECHO_REPLY_HOP_LIMIT: u8 = 64;

/// Whether the IPv6 packet at `ip` (no extension headers) is an ICMPv6 echo request.
#[inline]
fn is_echo_request(pkt: &PacketBuf, ip: usize) -> bool {
    pkt.buf.get(ip + ipv6::HEADER_LEN).copied() == Some(ICMPV6_ECHO_REQUEST)
        && ip + ipv6::HEADER_LEN < pkt.end
}

fn must_not_answer(inv: &[u8]) -> bool {
    if inv.len() < ipv6::HEADER_LEN
        || inv[8] == 0xff
        || inv[24] == 0xff
        || inv[8..24].iter().all(|&x| x == 0)
    {
        return true;
    }
    match walk(inv) {
        Ok(c) => c.upper_proto == IpProtocol::ICMPV6 && inv.get(c.upper).is_some_and(|&t| t < 128),
        Err(_) => false,
    }
}

/// Why an IPv6 source may not be forwarded off its link, if it may not: multicast, `::` and
/// `::1` are never sources on the wire (RFC 4291 2.5.2, 2.5.3, 2.7: `InvalidSourceAddress`),
/// a link-local source stays on its link (RFC 4291 2.5.6, RFC 4443 3.1: `LinkLocalSource`).
#[inline]
fn source_error(src: u128) -> Option<DropReason> {
    if src >> 120 == 0xff || src <= 1 {
        Some(DropReason::InvalidSourceAddress)
    } else if src >> 118 == 0xfe80 >> 6 {
        Some(DropReason::LinkLocalSource)
    } else {
        None
    }
}

/// Writes the Ethernet header for `adj` in front of the L3 packet at `l3` and returns `Tx`.
#[inline]
fn tx(pkt: &mut PacketBuf, l3: usize, adj: Adjacency, ethertype: EtherType) -> Verdict {
    let s = l3 - ethernet::HEADER_LEN;
    let b = &mut pkt.buf;
    b[s..s + 6].copy_from_slice(&adj.dst_mac);
    b[s + 6..s + 12].copy_from_slice(&adj.src_mac);
    write_u16(b, s + 12, ethertype.0);
    pkt.start = s;
    Verdict::Tx(adj.port)
}

/// H.Insert: inserts the precomputed SRH `srh` after the IPv6 header at `ip`, with the
/// original DA as Segment List\[0\] and the first policy segment as the new DA.
fn insert_srh(pkt: &mut PacketBuf, ip: usize, srh: &[u8]) -> Result<usize, DropReason> {
    let n = srh.len();
    if ip < n + ethernet::HEADER_LEN {
        return Err(DropReason::NoHeadroom);
    }
    let b = &mut pkt.buf;
    let payload = usize::from(read_u16(b, ip + v6f::PAYLOAD_LEN.start)) + n;
    if payload > usize::from(u16::MAX) {
        return Err(DropReason::FrameTooLarge);
    }
    let new_ip = ip - n;
    let orig_nh = b[ip + v6f::NEXT_HEADER];
    b.copy_within(ip..ip + ipv6::HEADER_LEN, new_ip);
    let o = new_ip + ipv6::HEADER_LEN;
    let mut da = [0u8; 16];
    da.copy_from_slice(&b[new_ip + v6f::DST_ADDR.start..new_ip + v6f::DST_ADDR.end]);
    b[o..o + n].copy_from_slice(srh);
    b[o + srh::FIELD_NEXT_HEADER] = orig_nh;
    b[o + srh::FIELD_SEGMENT_LIST..o + srh::FIELD_SEGMENT_LIST + 16].copy_from_slice(&da);
    let sl = usize::from(b[o + srh::FIELD_SEGMENTS_LEFT]);
    let first = o + srh::FIELD_SEGMENT_LIST + 16 * sl;
    b.copy_within(first..first + 16, new_ip + v6f::DST_ADDR.start);
    b[new_ip + v6f::NEXT_HEADER] = IpProtocol::ROUTING.0;
    write_u16(b, new_ip + v6f::PAYLOAD_LEN.start, payload as u16);
    pkt.start = new_ip - ethernet::HEADER_LEN;
    Ok(new_ip)
}

/// A 20-bit flow label from the inner addresses, flow label / protocol (RFC 6437 section 3).
#[inline]
fn flow_hash(b: &[u8], ip: usize, v6: bool) -> u32 {
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut mix = |x: u64| {
        h = (h ^ x).wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 29;
    };
    if v6 {
        let a = read_addr(b, ip + v6f::SRC_ADDR.start);
        let d = read_addr(b, ip + v6f::DST_ADDR.start);
        mix(a as u64);
        mix((a >> 64) as u64);
        mix(d as u64);
        mix((d >> 64) as u64);
        mix(u64::from(read_u32(b, ip) & 0x000f_ffff) | (u64::from(b[ip + v6f::NEXT_HEADER]) << 32));
    } else {
        mix(u64::from(read_u32(b, ip + v4f::SRC_ADDR.start))
            | (u64::from(read_u32(b, ip + v4f::DST_ADDR.start)) << 32));
        mix(u64::from(b[ip + v4f::PROTOCOL]));
    }
    let fl = ((h >> 32) as u32 ^ h as u32) & 0x000f_ffff;
    if fl == 0 {
        1
    } else {
        fl
    }
}

/// Decrements the TTL of an IPv4 header and updates its checksum incrementally (RFC 1624 eqn 3).
#[inline]
fn decrement_ttl(hdr: &mut [u8]) {
    let old = u16::from_be_bytes([hdr[8], hdr[9]]);
    hdr[8] -= 1;
    let new = u16::from_be_bytes([hdr[8], hdr[9]]);
    let hc = u16::from_be_bytes([hdr[10], hdr[11]]);
    let mut sum = u32::from(!hc) + u32::from(!old) + u32::from(new);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let c = !(sum as u16);
    hdr[10..12].copy_from_slice(&c.to_be_bytes());
}

#[inline]
fn read_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
fn write_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline]
fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The 128-bit address at `at` (callers have checked the bounds).
#[inline]
fn read_addr(b: &[u8], at: usize) -> u128 {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    u128::from_be_bytes(a)
}

/// A view of the fixed IPv6 header at `at`, over exactly its 40 bytes: one bounds check here,
/// none in the getters.
#[inline(always)]
fn ip6(b: &[u8], at: usize) -> Option<ipv6::Packet<&[u8; ipv6::HEADER_LEN]>> {
    let h: &[u8; ipv6::HEADER_LEN] = b
        .get(at..at.checked_add(ipv6::HEADER_LEN)?)?
        .try_into()
        .ok()?;
    Some(ipv6::Packet::new_unchecked(h))
}

/// An address from a 16-byte slice.
#[inline]
fn addr(b: &[u8]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    Ipv6Addr::from(a)
}

pub mod fastpath;
mod reinject;

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
