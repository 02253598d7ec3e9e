//! The local SID table: installed SIDs, their resolved parameters, and the lookup used per
//! packet (exact /128 first, then the block+node prefixes of NEXT-C-SID SIDs).

use std::net::{IpAddr, Ipv6Addr};

use ipnet::Ipv6Net;

use crate::behavior::{Behavior, Flavor, FlavorSet, Headend, Param, SbufMode};
use crate::config::{ConfigError, PortKind, SidConfig};
use crate::fib::{Adjacency, Fib, Lpm, TableIdx};
use crate::policy::{Policy, PolicyId};
use crate::port::{Port, PortId};
use crate::vm::{VmId, VmTable};

/// Index of an installed SID (stable while the SID is installed; reused after removal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SidId(pub u32);

impl SidId {
    /// The index as `usize`.
    #[inline]
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// A behavior with its parameters resolved to ids (what the fast path executes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SidAction {
    End,
    EndX(Adjacency),
    EndT(TableIdx),
    EndDx6(Adjacency),
    EndDx4(Adjacency),
    EndDt6(TableIdx),
    EndDt4(TableIdx),
    EndDt46(TableIdx),
    EndB6Encaps(PolicyId),
    EndS(Option<VmId>),
    EndSbuf(Option<VmId>, SbufMode),
}

/// NEXT-C-SID layout: locator block and C-SID (node + function) lengths in bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CsidLayout {
    pub(crate) block_len: u8,
    pub(crate) node_len: u8,
}

/// An installed SID.
#[derive(Debug, Clone)]
pub(crate) struct SidEntry {
    pub(crate) sid: Ipv6Addr,
    pub(crate) behavior: Behavior,
    pub(crate) action: SidAction,
    pub(crate) flavors: FlavorSet,
    pub(crate) csid: Option<CsidLayout>,
    pub(crate) config: SidConfig,
}

impl SidEntry {
    /// Prefix length under which the SID is matched.
    pub(crate) fn prefix_len(&self) -> u8 {
        self.csid.map_or(128, |c| c.block_len + c.node_len)
    }
}

/// What SID validation needs to resolve names.
#[derive(Debug)]
pub(crate) struct Resolver<'a> {
    /// The node's locators (`locator` first, then `extra_locators`).
    pub(crate) locators: &'a [Ipv6Net],
    pub(crate) ports: &'a [Port],
    pub(crate) vms: &'a VmTable,
    pub(crate) policies: &'a [Policy],
    pub(crate) fib: &'a mut Fib,
    pub(crate) gateway_mac: [u8; 6],
}

impl Resolver<'_> {
    fn port(&self, path: &str, name: &str) -> Result<PortId, ConfigError> {
        self.ports
            .iter()
            .position(|p| p.name == name)
            .map(|i| PortId(i as u16))
            .ok_or_else(|| {
                ConfigError::invalid(format!("{path}.port"), format!("no port named \"{name}\""))
            })
    }

    /// The adjacency for sending out of `port` (uplink peer MAC, or the VM attached there).
    pub(crate) fn adjacency(&self, path: &str, port: PortId) -> Result<Adjacency, ConfigError> {
        let p = &self.ports[port.index()];
        match (p.kind, p.peer_mac) {
            (_, Some(peer)) => Ok(Adjacency {
                port,
                dst_mac: peer,
                src_mac: if p.kind == PortKind::Vm {
                    self.gateway_mac
                } else {
                    p.mac
                },
            }),
            (PortKind::Vm, None) => {
                let vm = self
                    .vms
                    .vms
                    .iter()
                    .find(|v| v.port == port)
                    .ok_or_else(|| {
                        ConfigError::invalid(
                            format!("{path}.port"),
                            format!("VM port \"{}\" has no peer_mac and no VM attached", p.name),
                        )
                    })?;
                Ok(Adjacency {
                    port,
                    dst_mac: vm.mac,
                    src_mac: self.gateway_mac,
                })
            }
            (PortKind::Uplink, None) => Err(ConfigError::invalid(
                format!("{path}.port"),
                format!("uplink \"{}\" has no peer_mac", p.name),
            )),
        }
    }

    fn vm(&self, path: &str, name: &str) -> Result<VmId, ConfigError> {
        self.vms.by_name(name).ok_or_else(|| {
            ConfigError::invalid(format!("{path}.vm"), format!("no VM named \"{name}\""))
        })
    }

    fn policy(&self, path: &str, name: &str) -> Result<PolicyId, ConfigError> {
        self.policies
            .iter()
            .position(|p| p.active && p.name == name)
            .map(|i| PolicyId(i as u32))
            .ok_or_else(|| {
                ConfigError::invalid(
                    format!("{path}.policy"),
                    format!("no policy named \"{name}\""),
                )
            })
    }

    fn table(&mut self, path: &str, id: Option<u32>) -> Result<TableIdx, ConfigError> {
        self.fib
            .ensure_table(id.unwrap_or(0))
            .ok_or_else(|| ConfigError::invalid(format!("{path}.table"), "too many FIB tables"))
    }
}

fn present(cfg: &SidConfig, p: Param) -> bool {
    match p {
        Param::Nexthop => cfg.nexthop.is_some(),
        Param::Port => cfg.port.is_some(),
        Param::Table => cfg.table.is_some(),
        Param::Policy => cfg.policy.is_some(),
        Param::Vm => cfg.vm.is_some(),
        Param::Mode => cfg.mode.is_some(),
    }
}

const ALL_PARAMS: [Param; 6] = [
    Param::Nexthop,
    Param::Port,
    Param::Table,
    Param::Policy,
    Param::Vm,
    Param::Mode,
];

/// Validates `cfg` against the behavior table and resolves its parameters. `path` names the
/// SID in error messages, e.g. `sids[2] (fc00:0:2::e5)`.
pub(crate) fn build(
    path: &str,
    cfg: &SidConfig,
    r: &mut Resolver<'_>,
) -> Result<SidEntry, ConfigError> {
    let spec = cfg.behavior.spec();
    let err = |reason: String| ConfigError::invalid(path, reason);
    for p in spec.required {
        if !present(cfg, *p) {
            return Err(err(format!(
                "{} requires parameter '{}'",
                spec.name,
                p.name()
            )));
        }
    }
    for p in ALL_PARAMS {
        if present(cfg, p) && !spec.required.contains(&p) && !spec.optional.contains(&p) {
            return Err(err(format!(
                "{} does not take parameter '{}'",
                spec.name,
                p.name()
            )));
        }
    }
    let mut flavors = FlavorSet::EMPTY;
    for (i, f) in cfg.flavors.iter().enumerate() {
        if !spec.flavors.contains(f) {
            return Err(ConfigError::invalid(
                format!("{path}.flavors[{i}]"),
                format!("flavor {f} is not allowed on {}", spec.name),
            ));
        }
        flavors.insert(*f);
    }
    let next_csid = flavors.contains(Flavor::NextCSid);
    let csid = match (next_csid, cfg.locator_block_len, cfg.locator_node_len) {
        (true, Some(b), Some(n)) => {
            if b == 0 || n == 0 || u16::from(b) + u16::from(n) >= 128 || b % 8 != 0 || n % 8 != 0 {
                return Err(err(format!(
                    "NEXT-C-SID lengths block {b} + node {n} must be non-zero multiples of 8 below 128 bits"
                )));
            }
            let host = u128::MAX >> (b + n);
            if u128::from(cfg.sid) & host != 0 {
                return Err(err(format!(
                    "NEXT-C-SID SID has bits set after its {} bit block+node prefix",
                    b + n
                )));
            }
            Some(CsidLayout {
                block_len: b,
                node_len: n,
            })
        }
        (true, _, _) => {
            return Err(err(
                "NEXT-C-SID requires parameters 'locator_block_len' and 'locator_node_len'".into(),
            ))
        }
        (false, None, None) => None,
        (false, _, _) => {
            return Err(err(
                "'locator_block_len'/'locator_node_len' are only used with flavor NEXT-C-SID"
                    .into(),
            ))
        }
    };
    if !r.locators.iter().any(|l| l.contains(&cfg.sid)) {
        return Err(err(match r.locators {
            [one] => format!("SID is outside the locator {one}"),
            all => format!(
                "SID is outside the locators {}",
                all.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }));
    }
    let port = |r: &Resolver<'_>| -> Result<Adjacency, ConfigError> {
        let name = cfg.port.as_deref().unwrap_or_default();
        let id = r.port(path, name)?;
        r.adjacency(path, id)
    };
    let action = match cfg.behavior {
        Behavior::End => SidAction::End,
        Behavior::EndX => {
            if !matches!(cfg.nexthop, Some(IpAddr::V6(_))) {
                return Err(ConfigError::invalid(
                    format!("{path}.nexthop"),
                    "End.X needs an IPv6 nexthop",
                ));
            }
            SidAction::EndX(port(r)?)
        }
        Behavior::EndT => SidAction::EndT(r.table(path, cfg.table)?),
        Behavior::EndDx6 => {
            if matches!(cfg.nexthop, Some(IpAddr::V4(_))) {
                return Err(ConfigError::invalid(
                    format!("{path}.nexthop"),
                    "End.DX6 needs an IPv6 nexthop",
                ));
            }
            SidAction::EndDx6(port(r)?)
        }
        Behavior::EndDx4 => {
            if matches!(cfg.nexthop, Some(IpAddr::V6(_))) {
                return Err(ConfigError::invalid(
                    format!("{path}.nexthop"),
                    "End.DX4 needs an IPv4 nexthop",
                ));
            }
            SidAction::EndDx4(port(r)?)
        }
        Behavior::EndDt6 => SidAction::EndDt6(r.table(path, cfg.table)?),
        Behavior::EndDt4 => SidAction::EndDt4(r.table(path, cfg.table)?),
        Behavior::EndDt46 => SidAction::EndDt46(r.table(path, cfg.table)?),
        Behavior::EndB6Encaps => {
            let name = cfg.policy.as_deref().unwrap_or_default();
            let id = r.policy(path, name)?;
            if r.policies[id.index()].headend == Headend::HInsert {
                return Err(ConfigError::invalid(
                    format!("{path}.policy"),
                    format!("End.B6.Encaps needs an H.Encaps or H.Encaps.Red policy, \"{name}\" is H.Insert"),
                ));
            }
            SidAction::EndB6Encaps(id)
        }
        Behavior::EndS => SidAction::EndS(cfg.vm.as_deref().map(|v| r.vm(path, v)).transpose()?),
        Behavior::EndSbuf => SidAction::EndSbuf(
            cfg.vm.as_deref().map(|v| r.vm(path, v)).transpose()?,
            cfg.mode.unwrap_or_default(),
        ),
    };
    Ok(SidEntry {
        sid: cfg.sid,
        behavior: cfg.behavior,
        action,
        flavors,
        csid,
        config: cfg.clone(),
    })
}

/// The local SID table.
#[derive(Debug, Clone, Default)]
pub(crate) struct SidTable {
    pub(crate) entries: Vec<Option<SidEntry>>,
    lpm: Lpm<SidId, 128>,
}

impl SidTable {
    pub(crate) fn with_hasher(h: crate::hash::AddrHash) -> SidTable {
        SidTable {
            entries: Vec::new(),
            lpm: Lpm::with_hasher(h),
        }
    }

    /// Installs `e`; fails (with `path`) if the same SID prefix is installed.
    pub(crate) fn insert(&mut self, path: &str, e: SidEntry) -> Result<SidId, ConfigError> {
        let key = u128::from(e.sid);
        let len = e.prefix_len();
        if self.lpm.get_exact(key, len).is_some() {
            return Err(ConfigError::invalid(path, "SID is already installed"));
        }
        let id = match self.entries.iter().position(Option::is_none) {
            Some(i) => SidId(i as u32),
            None => {
                self.entries.push(None);
                SidId((self.entries.len() - 1) as u32)
            }
        };
        self.lpm.insert(key, len, id);
        self.entries[id.index()] = Some(e);
        Ok(id)
    }

    /// Removes the SID installed at exactly `sid` (either as /128 or as a C-SID prefix).
    pub(crate) fn remove(&mut self, sid: Ipv6Addr) -> Option<SidId> {
        let key = u128::from(sid);
        let (len, id) = self.entries.iter().enumerate().find_map(|(i, e)| {
            e.as_ref()
                .filter(|e| e.sid == sid)
                .map(|e| (e.prefix_len(), SidId(i as u32)))
        })?;
        self.lpm.remove(key, len);
        self.entries[id.index()] = None;
        Some(id)
    }

    /// The shortest prefix length under which a SID is matched (128 when empty).
    pub(crate) fn min_prefix_len(&self) -> u8 {
        self.entries
            .iter()
            .flatten()
            .map(SidEntry::prefix_len)
            .min()
            .unwrap_or(128)
    }

    #[inline]
    pub(crate) fn lookup(&self, dst: u128) -> Option<SidId> {
        self.lpm.lookup(dst).map(|(_, id)| id)
    }

    #[inline]
    pub(crate) fn get(&self, id: SidId) -> Option<&SidEntry> {
        self.entries.get(id.index()).and_then(Option::as_ref)
    }

    /// Whether any SID refers to policy `p` (a policy in use cannot be removed, nor turned
    /// into an insertion).
    pub(crate) fn uses_policy(&self, p: PolicyId) -> bool {
        self.policies_used().any(|q| q == p)
    }

    /// The policies the End.B6.Encaps SIDs steer into (one per SID).
    pub(crate) fn policies_used(&self) -> impl Iterator<Item = PolicyId> + '_ {
        self.entries
            .iter()
            .flatten()
            .filter_map(|e| match e.action {
                SidAction::EndB6Encaps(p) => Some(p),
                _ => None,
            })
    }
}
