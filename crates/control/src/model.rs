//! The controller's model: hosts, VMs, the VM -> host mapping, and the function that turns
//! the model plus the migrations in flight into each host's [`HostConfig`].
//!
//! # What each host is told
//!
//! Steady state, VM `v` mapped to host `H`:
//! - on `H`: `v` is local (attached), steering `native`;
//! - on every other host: steering `H.Encaps [H.sid_dt6]` (End.DT6 at `H` delivers it).
//!
//! The host's decapsulation SID (`sid_dt6`) is End.DT6 while every VM is IPv6-only, and
//! End.DT46 as soon as one VM has an IPv4 address: IPv4 packets to a VM travel as the SRv6
//! payload (Next Header 4) along the same segment lists, and End.S / End.SBUF select the VM
//! by the inner destination of either family.
//!
//! While a migration of `v` from `S` to `D` is in flight, its [`Footprint`] adds:
//! - `attach`: `v` is local on both `S` and `D` (D must accept the VM when it resumes there,
//!   S keeps its attachment until the cleanup);
//! - `endpoints` (SR strategies): End.S for `v` on `S`, End.SBUF for `v` on `D` in the
//!   requested mode;
//! - `path` (SR strategies, between prepare and switchover): on *every* host, `S` and `D`
//!   included, steering `H.Encaps [S.sid_end_s, D.sid_end_sbuf]` with `v`'s address as the inner
//!   destination. S and D use the path too: a VM on S talking to `v` must not hit `v` paused,
//!   and a VM on D must not miss it before it arrives.
//!   The path mapping is marked `fence`: when the commit config steers `v` otherwise, each
//!   ingress sends a commit-fence marker down the path as it switches
//!   (`srmig_dataplane::fence`); `D` fences `v` while its End.SBUF entry exists. The mark
//!   goes with the path, so the commit and the cleanup change nothing more on other hosts.
//!
//! # Networks: what each host is told about
//!
//! A VM may belong to a virtual network (`VmInfo::network`, a tenant's segment). A host is
//! told about a networked VM (its mapping, and the SR path while it migrates) only while the
//! network is *present* on the host: one of its VMs is mapped there, or is attached there by
//! a migration (the footprint's `attach`, on the source and the destination). A VM without a
//! network is told to every host, as before networks existed. So a host holds the mappings
//! of its own tenants, not of the whole data center: with 100,000 VMs in networks of 20 over
//! 10,000 hosts, a host holds a few hundred mappings instead of 100,000, and a migration
//! changes the configs of the hosts of one network, not of every host.
//!
//! A destination gains the network at the migration's first push (the attachment), so it
//! holds the path to every peer before the VM resumes there; the source loses it at the
//! cleanup if no other VM of the network is left there. Traffic between networks is not
//! srmig's: a destination a host is not told about follows the host's routes like any
//! address outside the data center.
//!
//! [`Model::host_config`] is a pure function of the model and the footprints, so a restarted
//! controller recomputes exactly what it pushed before.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr};

use serde::{Deserialize, Serialize};
use srmig_api::{
    Encaps, Headend, HostConfig, HostId, HostInfo, HostInfoError, LocalVm, MacAddr, Mapping,
    NetworkId, SbufMode, SidEntry, Steering, VmId, VmInfo,
};

/// Why the model refused a host or a VM.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// A host with this name is already registered.
    #[error("host {0} is already registered")]
    DuplicateHost(HostId),
    /// The host's own fields are inconsistent.
    #[error("host {host} is invalid")]
    InvalidHost {
        /// The refused host.
        host: HostId,
        /// What is wrong with it.
        #[source]
        source: HostInfoError,
    },
    /// The host's locator overlaps another host's locator.
    #[error("locator of host {host} overlaps the locator of host {other}")]
    LocatorOverlap {
        /// The refused host.
        host: HostId,
        /// The host already holding the overlapping locator.
        other: HostId,
    },
    /// The host's underlay address is already another host's.
    #[error("underlay address {addr} of host {host} is already used by host {other}")]
    UnderlayInUse {
        /// The refused host.
        host: HostId,
        /// The shared address.
        addr: Ipv6Addr,
        /// The host already using it.
        other: HostId,
    },
    /// A VM with this name is already registered.
    #[error("VM {0} is already registered")]
    DuplicateVm(VmId),
    /// The VM names a host that is not registered.
    #[error("VM {vm} names host {host}, which is not registered")]
    UnknownHost {
        /// The refused VM.
        vm: VmId,
        /// The unknown host.
        host: HostId,
    },
    /// The VM has no address.
    #[error("VM {0} has no address")]
    NoAddresses(VmId),
    /// A VM address is not a unicast address usable by a VM.
    #[error("address {addr} of VM {vm} is not a unicast address")]
    BadAddress {
        /// The refused VM.
        vm: VmId,
        /// The address.
        addr: IpAddr,
    },
    /// A VM address is already another VM's, or lies inside a host's locator.
    #[error("address {addr} of VM {vm} is already used by {owner}")]
    AddressInUse {
        /// The refused VM.
        vm: VmId,
        /// The address.
        addr: IpAddr,
        /// Who holds it (`VM x` or `the locator of host y`).
        owner: String,
    },
    /// The VM's MAC address is a group address or already another VM's.
    #[error("MAC address {mac} of VM {vm} is {why}")]
    BadMac {
        /// The refused VM.
        vm: VmId,
        /// The MAC address.
        mac: MacAddr,
        /// `a multicast address` or `already used by VM x`.
        why: String,
    },
}

/// What one in-flight migration adds to the hosts' configs (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Footprint {
    /// The migrating VM.
    pub vm: VmId,
    /// The source host.
    pub from: HostId,
    /// The destination host.
    pub to: HostId,
    /// The VM is local on both the source and the destination.
    pub attach: bool,
    /// End.S on the source and End.SBUF (in this mode) on the destination.
    pub endpoints: Option<SbufMode>,
    /// Every host steers the VM through `S::End.S -> D::End.SBUF`.
    pub path: bool,
}

/// Hosts, VMs and the VM -> host mapping, with the indexes that keep every lookup the
/// controller makes per input logarithmic in the data center's size (a VM by address or MAC,
/// a host by locator or underlay address, a network's VMs and the hosts they are mapped to).
/// Only hosts and VMs are stored (JSON: `{"hosts":{..},"vms":{..}}`); the indexes are rebuilt
/// when a model is read back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ModelData", into = "ModelData")]
pub struct Model {
    hosts: BTreeMap<HostId, HostInfo>,
    vms: BTreeMap<VmId, VmInfo>,
    index: Index,
}

/// What a model stores.
#[derive(Serialize, Deserialize)]
struct ModelData {
    hosts: BTreeMap<HostId, HostInfo>,
    vms: BTreeMap<VmId, VmInfo>,
}

impl From<ModelData> for Model {
    fn from(d: ModelData) -> Model {
        let mut index = Index::default();
        for h in d.hosts.values() {
            index.add_host(h);
        }
        for v in d.vms.values() {
            index.add_vm(v);
        }
        Model {
            hosts: d.hosts,
            vms: d.vms,
            index,
        }
    }
}

impl From<Model> for ModelData {
    fn from(m: Model) -> ModelData {
        ModelData {
            hosts: m.hosts,
            vms: m.vms,
        }
    }
}

/// Lookups derived from the hosts and VMs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Index {
    /// Host locators by their first address (locators never overlap).
    locators: BTreeMap<u128, HostId>,
    underlays: BTreeMap<Ipv6Addr, HostId>,
    addresses: BTreeMap<IpAddr, VmId>,
    macs: BTreeMap<MacAddr, VmId>,
    /// VMs with an IPv4 address.
    ipv4_vms: usize,
    /// VMs without a network (reachable from every host).
    unscoped: BTreeSet<VmId>,
    /// Each network's VMs.
    members: BTreeMap<NetworkId, BTreeSet<VmId>>,
    /// Per host, per network: how many of the network's VMs are mapped to the host.
    present: BTreeMap<HostId, BTreeMap<NetworkId, u32>>,
    /// The same counts per network, per host.
    by_net: BTreeMap<NetworkId, BTreeMap<HostId, u32>>,
}

impl Index {
    fn add_host(&mut self, h: &HostInfo) {
        self.locators
            .insert(u128::from(h.locator.network()), h.name.clone());
        self.underlays.insert(h.underlay, h.name.clone());
    }

    fn remove_host(&mut self, h: &HostInfo) {
        self.locators.remove(&u128::from(h.locator.network()));
        self.underlays.remove(&h.underlay);
    }

    fn add_vm(&mut self, v: &VmInfo) {
        for a in &v.addresses {
            self.addresses.insert(*a, v.name.clone());
        }
        self.macs.insert(v.mac, v.name.clone());
        if v.addresses.iter().any(IpAddr::is_ipv4) {
            self.ipv4_vms += 1;
        }
        match &v.network {
            None => {
                self.unscoped.insert(v.name.clone());
            }
            Some(n) => {
                self.members
                    .entry(n.clone())
                    .or_default()
                    .insert(v.name.clone());
                self.map(n, &v.host);
            }
        }
    }

    fn remove_vm(&mut self, v: &VmInfo) {
        for a in &v.addresses {
            self.addresses.remove(a);
        }
        self.macs.remove(&v.mac);
        if v.addresses.iter().any(IpAddr::is_ipv4) {
            self.ipv4_vms -= 1;
        }
        match &v.network {
            None => {
                self.unscoped.remove(&v.name);
            }
            Some(n) => {
                if let Some(m) = self.members.get_mut(n) {
                    m.remove(&v.name);
                    if m.is_empty() {
                        self.members.remove(n);
                    }
                }
                self.unmap(n, &v.host);
            }
        }
    }

    fn map(&mut self, n: &NetworkId, host: &HostId) {
        *self
            .present
            .entry(host.clone())
            .or_default()
            .entry(n.clone())
            .or_default() += 1;
        *self
            .by_net
            .entry(n.clone())
            .or_default()
            .entry(host.clone())
            .or_default() += 1;
    }

    fn unmap(&mut self, n: &NetworkId, host: &HostId) {
        decrement(&mut self.present, host, n);
        decrement(&mut self.by_net, n, host);
    }

    /// The host whose locator holds `addr`.
    fn locator_of<'a>(
        &self,
        addr: Ipv6Addr,
        hosts: &'a BTreeMap<HostId, HostInfo>,
    ) -> Option<&'a HostId> {
        let (_, name) = self.locators.range(..=u128::from(addr)).next_back()?;
        hosts
            .get(name)
            .filter(|h| h.locator.contains(&addr))
            .map(|h| &h.name)
    }
}

/// Decrements `counts[a][b]`, removing what reaches zero.
fn decrement<A: Ord, B: Ord>(counts: &mut BTreeMap<A, BTreeMap<B, u32>>, a: &A, b: &B) {
    let Some(inner) = counts.get_mut(a) else {
        return;
    };
    if let Some(c) = inner.get_mut(b) {
        *c = c.saturating_sub(1);
        if *c == 0 {
            inner.remove(b);
        }
    }
    if inner.is_empty() {
        counts.remove(a);
    }
}

/// Where the networks of the VMs in flight are present besides their mappings: a migrating
/// VM attached to its source and its destination makes its network present on both, so the
/// destination learns the network's VMs before the VM resumes there, and the source keeps
/// them until the cleanup. Made by [`Model::reach`] from the footprints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reach {
    attached: BTreeSet<(HostId, NetworkId)>,
}

impl Reach {
    /// The (host, network) pairs the footprints attach.
    pub fn attached(&self) -> &BTreeSet<(HostId, NetworkId)> {
        &self.attached
    }
}

impl Model {
    /// An empty model.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a host after checking it against itself and the other hosts.
    pub fn add_host(&mut self, info: HostInfo) -> Result<(), ModelError> {
        if self.hosts.contains_key(&info.name) {
            return Err(ModelError::DuplicateHost(info.name));
        }
        info.validate().map_err(|source| ModelError::InvalidHost {
            host: info.name.clone(),
            source,
        })?;
        // Locators never overlap, so only the neighbours by first address can: the one
        // starting at or before this one (it may contain it), the first one after (this one
        // may contain it).
        let first = u128::from(info.locator.network());
        let before = self.index.locators.range(..=first).next_back();
        let after = self.index.locators.range(first..).next();
        for (_, other) in before.into_iter().chain(after) {
            let Some(other) = self.hosts.get(other) else {
                continue;
            };
            if other.locator.contains(&info.locator) || info.locator.contains(&other.locator) {
                return Err(ModelError::LocatorOverlap {
                    host: info.name,
                    other: other.name.clone(),
                });
            }
        }
        if let Some(other) = self.index.underlays.get(&info.underlay) {
            return Err(ModelError::UnderlayInUse {
                host: info.name,
                addr: info.underlay,
                other: other.clone(),
            });
        }
        let inside = IpAddr::V6(info.locator.network())..=IpAddr::V6(info.locator.broadcast());
        if let Some((addr, vm)) = self.index.addresses.range(inside).next() {
            return Err(ModelError::AddressInUse {
                vm: vm.clone(),
                addr: *addr,
                owner: format!("the locator of host {}", info.name),
            });
        }
        self.index.add_host(&info);
        self.hosts.insert(info.name.clone(), info);
        Ok(())
    }

    /// Registers a VM on the host it names, after checking its addresses and MAC.
    pub fn add_vm(&mut self, info: VmInfo) -> Result<(), ModelError> {
        if self.vms.contains_key(&info.name) {
            return Err(ModelError::DuplicateVm(info.name));
        }
        if !self.hosts.contains_key(&info.host) {
            return Err(ModelError::UnknownHost {
                vm: info.name,
                host: info.host,
            });
        }
        if info.addresses.is_empty() {
            return Err(ModelError::NoAddresses(info.name));
        }
        if info.mac.is_multicast() {
            return Err(ModelError::BadMac {
                vm: info.name,
                mac: info.mac,
                why: "a multicast address".into(),
            });
        }
        for (i, addr) in info.addresses.iter().enumerate() {
            let broadcast = matches!(addr, IpAddr::V4(a) if a.is_broadcast());
            if addr.is_unspecified() || addr.is_loopback() || addr.is_multicast() || broadcast {
                return Err(ModelError::BadAddress {
                    vm: info.name,
                    addr: *addr,
                });
            }
            let owner = if info.addresses[..i].contains(addr) {
                Some(format!("VM {}", info.name))
            } else if let Some(vm) = self.index.addresses.get(addr) {
                Some(format!("VM {vm}"))
            } else {
                match addr {
                    IpAddr::V6(a) => self
                        .index
                        .locator_of(*a, &self.hosts)
                        .map(|h| format!("the locator of host {h}")),
                    IpAddr::V4(_) => None,
                }
            };
            if let Some(owner) = owner {
                return Err(ModelError::AddressInUse {
                    vm: info.name,
                    addr: *addr,
                    owner,
                });
            }
        }
        if let Some(other) = self.index.macs.get(&info.mac) {
            return Err(ModelError::BadMac {
                vm: info.name,
                mac: info.mac,
                why: format!("already used by VM {other}"),
            });
        }
        self.index.add_vm(&info);
        self.vms.insert(info.name.clone(), info);
        Ok(())
    }

    /// Removes a host (the caller checked that no VM is mapped to it); false if unknown.
    pub(crate) fn remove_host(&mut self, name: &HostId) -> bool {
        match self.hosts.remove(name) {
            Some(h) => {
                self.index.remove_host(&h);
                true
            }
            None => false,
        }
    }

    /// Removes a VM; false if unknown.
    pub(crate) fn remove_vm(&mut self, name: &VmId) -> bool {
        match self.vms.remove(name) {
            Some(v) => {
                self.index.remove_vm(&v);
                true
            }
            None => false,
        }
    }

    /// A registered host.
    pub fn host(&self, name: &HostId) -> Option<&HostInfo> {
        self.hosts.get(name)
    }

    /// The registered host with this underlay address.
    pub fn host_by_underlay(&self, addr: &Ipv6Addr) -> Option<&HostInfo> {
        self.index
            .underlays
            .get(addr)
            .and_then(|h| self.hosts.get(h))
    }

    /// A registered VM (its `host` field is its current mapping).
    pub fn vm(&self, name: &VmId) -> Option<&VmInfo> {
        self.vms.get(name)
    }

    /// All hosts, by name.
    pub fn hosts(&self) -> impl Iterator<Item = &HostInfo> {
        self.hosts.values()
    }

    /// All VMs, by name.
    pub fn vms(&self) -> impl Iterator<Item = &VmInfo> {
        self.vms.values()
    }

    /// How many VMs are registered.
    pub fn vm_count(&self) -> usize {
        self.vms.len()
    }

    /// The VMs of network `n`, by name.
    pub fn network_vms(&self, n: &NetworkId) -> impl Iterator<Item = &VmId> {
        self.index.members.get(n).into_iter().flatten()
    }

    /// Changes a VM's mapping. Returns false if the VM or the host is unknown.
    pub(crate) fn set_vm_host(&mut self, vm: &VmId, host: &HostId) -> bool {
        if !self.hosts.contains_key(host) {
            return false;
        }
        let Some(info) = self.vms.get_mut(vm) else {
            return false;
        };
        if let Some(n) = &info.network {
            self.index.unmap(n, &info.host);
            self.index.map(n, host);
        }
        info.host = host.clone();
        true
    }

    /// The attachments of `fps` (as made by [`Model::footprints_by_vm`]) that make a network
    /// present on a host.
    pub fn reach(&self, fps: &BTreeMap<VmId, &Footprint>) -> Reach {
        let mut attached = BTreeSet::new();
        for (vm, f) in fps {
            let Some(n) = self.vms.get(vm).and_then(|v| v.network.as_ref()) else {
                continue;
            };
            if f.attach {
                attached.insert((f.from.clone(), n.clone()));
                attached.insert((f.to.clone(), n.clone()));
            }
        }
        Reach { attached }
    }

    /// True if network `n` is present on `host`: one of its VMs is mapped there, or attached
    /// there by a migration (`reach`).
    pub fn present(&self, host: &HostId, n: &NetworkId, reach: &Reach) -> bool {
        self.index
            .present
            .get(host)
            .is_some_and(|nets| nets.contains_key(n))
            || reach.attached.contains(&(host.clone(), n.clone()))
    }

    /// True if `host` is told how to reach `vm`: the VM has no network, or its network is
    /// present on the host.
    pub fn reaches(&self, host: &HostId, vm: &VmInfo, reach: &Reach) -> bool {
        vm.network
            .as_ref()
            .is_none_or(|n| self.present(host, n, reach))
    }

    /// The hosts where network `n` is present (see [`Model::present`]).
    pub fn network_hosts(&self, n: &NetworkId, reach: &Reach) -> BTreeSet<HostId> {
        let mut out: BTreeSet<HostId> = reach
            .attached
            .iter()
            .filter(|(_, m)| m == n)
            .map(|(h, _)| h.clone())
            .collect();
        out.extend(
            self.index
                .by_net
                .get(n)
                .into_iter()
                .flatten()
                .map(|(h, _)| h.clone()),
        );
        out
    }

    /// The hosts told how to reach `vm` (every host for a VM without a network).
    pub fn hosts_reaching(&self, vm: &VmInfo, reach: &Reach) -> Vec<HostId> {
        match &vm.network {
            None => self.hosts.keys().cloned().collect(),
            Some(n) => self.network_hosts(n, reach).into_iter().collect(),
        }
    }

    /// The networks present on `host` (see [`Model::present`]).
    pub fn networks_on(&self, host: &HostId, reach: &Reach) -> BTreeSet<NetworkId> {
        let mut out: BTreeSet<NetworkId> = self
            .index
            .present
            .get(host)
            .map(|nets| nets.keys().cloned().collect())
            .unwrap_or_default();
        for (h, n) in &reach.attached {
            if h == host {
                out.insert(n.clone());
            }
        }
        out
    }

    /// The config `host` must apply, given the footprints of the migrations in flight (at
    /// most one per VM; footprints naming unknown VMs or hosts are ignored). `None` if the host
    /// is not registered.
    ///
    /// The controller keeps each host's config up to date incrementally with
    /// [`Model::mapping_on`], [`Model::is_local_on`] and [`Model::sids_on`] (O(VMs that
    /// changed) per host); this is the whole computation, for a host's first push and to check
    /// the incremental one. It looks only at the VMs the host may be told about: those
    /// without a network and those of the networks present on it.
    pub fn host_config(
        &self,
        host: &HostId,
        generation: u64,
        footprints: &[Footprint],
    ) -> Option<HostConfig> {
        let fps = self.footprints_by_vm(footprints);
        let reach = self.reach(&fps);
        self.host_config_with(host, generation, &fps, &reach)
    }

    /// [`Model::host_config`] with the footprints by VM ([`Model::footprints_by_vm`]) and
    /// their reach ([`Model::reach`]) already worked out: they do not depend on the host, so a
    /// caller making the configs of several hosts works them out once.
    pub fn host_config_with(
        &self,
        host: &HostId,
        generation: u64,
        fps: &BTreeMap<VmId, &Footprint>,
        reach: &Reach,
    ) -> Option<HostConfig> {
        self.hosts.get(host)?;
        let mut names: BTreeSet<&VmId> = self.index.unscoped.iter().collect();
        for n in self.networks_on(host, reach) {
            names.extend(self.index.members.get(&n).into_iter().flatten());
        }
        let mut mappings = Vec::with_capacity(names.len());
        let mut local_vms = Vec::new();
        for name in names {
            let Some(vm) = self.vms.get(name) else {
                continue;
            };
            let fp = fps.get(&vm.name).copied();
            if let Some(m) = self.mapping_on(host, vm, fp, reach) {
                mappings.push(m);
            }
            if let Some(l) = self.is_local_on(host, vm, fp) {
                local_vms.push(l);
            }
        }
        let sids = self.sids_on(host, fps, self.dual_stack())?;
        Some(HostConfig {
            epoch: 0,
            generation,
            mappings,
            local_vms,
            sids,
        })
    }

    /// The footprints that count, by VM: the first one of each VM whose source and
    /// destination are registered.
    pub fn footprints_by_vm<'a>(
        &self,
        footprints: &'a [Footprint],
    ) -> BTreeMap<VmId, &'a Footprint> {
        let mut out = BTreeMap::new();
        for f in footprints {
            if self.hosts.contains_key(&f.from) && self.hosts.contains_key(&f.to) {
                out.entry(f.vm.clone()).or_insert(f);
            }
        }
        out
    }

    /// True if any VM has an IPv4 address (every host's decapsulation SID is then End.DT46).
    pub fn dual_stack(&self) -> bool {
        self.index.ipv4_vms > 0
    }

    /// How `host` reaches `vm` (`fp`: its migration's footprint, if any); `None` if the VM's
    /// host is not registered, or the host is not told about the VM (`reach`: see
    /// [`Model::reaches`]).
    pub fn mapping_on(
        &self,
        host: &HostId,
        vm: &VmInfo,
        fp: Option<&Footprint>,
        reach: &Reach,
    ) -> Option<Mapping> {
        let owner = self.hosts.get(&vm.host)?;
        if !self.reaches(host, vm, reach) {
            return None;
        }
        let path = fp.filter(|f| f.path).and_then(|f| {
            let s = self.hosts.get(&f.from)?;
            let d = self.hosts.get(&f.to)?;
            Some(vec![s.sid_end_s, d.sid_end_sbuf])
        });
        // The SR path is fenced: leaving it (the commit) sends a marker down it.
        let fence = path.is_some();
        let steering = match path {
            Some(segments) => Steering::Encaps(Encaps {
                segments,
                headend: Headend::HEncaps,
            }),
            None if &vm.host == host => Steering::Native,
            None => Steering::Encaps(Encaps {
                segments: vec![owner.sid_dt6],
                headend: Headend::HEncaps,
            }),
        };
        Some(Mapping {
            vm: vm.name.clone(),
            addresses: vm.addresses.clone(),
            steering,
            fence,
        })
    }

    /// `vm` as a local VM of `host`, if it is one: mapped there, or migrating to or from
    /// there with its attachment in place (and its host registered).
    pub fn is_local_on(
        &self,
        host: &HostId,
        vm: &VmInfo,
        fp: Option<&Footprint>,
    ) -> Option<LocalVm> {
        self.hosts.get(&vm.host)?;
        let attached_here = fp.is_some_and(|f| f.attach && (&f.from == host || &f.to == host));
        (&vm.host == host || attached_here).then(|| LocalVm {
            vm: vm.name.clone(),
            addresses: vm.addresses.clone(),
            mac: vm.mac,
        })
    }

    /// `host`'s SID table: its decapsulation SID (End.DT46 if `dual_stack`, else End.DT6),
    /// then End.S / End.SBUF entries of the migrations from / to it, by VM name. `fps` as
    /// made by [`Model::footprints_by_vm`]. `None` if the host is not registered.
    pub fn sids_on(
        &self,
        host: &HostId,
        fps: &BTreeMap<VmId, &Footprint>,
        dual_stack: bool,
    ) -> Option<Vec<SidEntry>> {
        let me = self.hosts.get(host)?;
        let mut sids = vec![if dual_stack {
            SidEntry::EndDt46 { sid: me.sid_dt6 }
        } else {
            SidEntry::EndDt6 { sid: me.sid_dt6 }
        }];
        for (vm, f) in fps {
            let Some(info) = self.vms.get(vm) else {
                continue;
            };
            if !self.hosts.contains_key(&info.host) {
                continue;
            }
            let Some(mode) = f.endpoints else {
                continue;
            };
            if &f.from == host {
                sids.push(SidEntry::EndS {
                    sid: me.sid_end_s,
                    vm: vm.clone(),
                });
            }
            if &f.to == host {
                sids.push(SidEntry::EndSbuf {
                    sid: me.sid_end_sbuf,
                    vm: vm.clone(),
                    mode,
                });
            }
        }
        Some(sids)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn host(i: u16) -> HostInfo {
        HostInfo {
            name: HostId::new(format!("h{i}")).expect("name"),
            locator: format!("fc00:{i:x}::/48").parse().expect("locator"),
            sid_end_s: format!("fc00:{i:x}::e5").parse().expect("sid"),
            sid_end_sbuf: format!("fc00:{i:x}::eb").parse().expect("sid"),
            sid_dt6: format!("fc00:{i:x}::d6").parse().expect("sid"),
            underlay: format!("2001:db8:ff::{i:x}").parse().expect("underlay"),
        }
    }

    pub(crate) fn vm(i: u16, on: u16) -> VmInfo {
        VmInfo {
            name: VmId::new(format!("vm{i}")).expect("name"),
            addresses: vec![format!("2001:db8:a::{i:x}").parse().expect("addr")],
            mac: MacAddr([0x52, 0x54, 0, 0, 0, i as u8]),
            host: HostId::new(format!("h{on}")).expect("name"),
            network: None,
        }
    }

    fn hid(i: u16) -> HostId {
        host(i).name
    }

    fn model3() -> Model {
        let mut m = Model::new();
        for i in 1..=3 {
            m.add_host(host(i)).expect("host");
        }
        m.add_vm(vm(1, 1)).expect("vm");
        m
    }

    fn encaps(segments: Vec<Ipv6Addr>) -> Steering {
        Steering::Encaps(Encaps {
            segments,
            headend: Headend::HEncaps,
        })
    }

    #[test]
    fn steady_state_encapsulates_to_the_owner_dt6() {
        let m = model3();
        let v = vm(1, 1).name;
        let c1 = m.host_config(&hid(1), 1, &[]).expect("h1");
        assert_eq!(c1.mapping(&v).expect("mapping").steering, Steering::Native);
        assert!(c1.is_local(&v));
        assert_eq!(
            c1.sids,
            vec![SidEntry::EndDt6 {
                sid: host(1).sid_dt6
            }]
        );
        for i in [2, 3] {
            let c = m.host_config(&hid(i), 1, &[]).expect("host");
            assert_eq!(
                c.mapping(&v).expect("mapping").steering,
                encaps(vec![host(1).sid_dt6])
            );
            assert!(!c.is_local(&v));
            c.validate().expect("valid config");
        }
        assert!(m.host_config(&hid(9), 1, &[]).is_none());
    }

    #[test]
    fn an_ipv4_address_makes_every_decapsulation_sid_dt46() {
        let mut m = model3();
        let mut v2 = vm(2, 2);
        v2.addresses.push("10.1.0.2".parse().expect("addr"));
        m.add_vm(v2.clone()).expect("dual-stack vm");
        for i in 1..=3 {
            let c = m.host_config(&hid(i), 1, &[]).expect("host");
            assert_eq!(
                c.sids[0],
                SidEntry::EndDt46 {
                    sid: host(i).sid_dt6
                }
            );
            assert_eq!(
                c.mapping(&v2.name).expect("mapping").addresses,
                v2.addresses
            );
            c.validate().expect("valid config");
        }
        let c2 = m.host_config(&hid(2), 1, &[]).expect("h2");
        let local = c2
            .local_vms
            .iter()
            .find(|l| l.vm == v2.name)
            .expect("local");
        assert_eq!(local.addresses, v2.addresses);
        // The same IPv4 address cannot belong to two VMs.
        let mut v3 = vm(3, 3);
        v3.addresses.push("10.1.0.2".parse().expect("addr"));
        assert!(matches!(m.add_vm(v3), Err(ModelError::AddressInUse { .. })));
    }

    #[test]
    fn sr_footprint_installs_path_everywhere_and_endpoints_on_s_and_d() {
        let m = model3();
        let v = vm(1, 1).name;
        let fp = Footprint {
            vm: v.clone(),
            from: hid(1),
            to: hid(2),
            attach: true,
            endpoints: Some(SbufMode::Buffer),
            path: true,
        };
        let path = encaps(vec![host(1).sid_end_s, host(2).sid_end_sbuf]);
        for i in 1..=3 {
            let c = m
                .host_config(&hid(i), 5, std::slice::from_ref(&fp))
                .expect("host");
            c.validate().expect("valid config");
            assert_eq!(c.mapping(&v).expect("mapping").steering, path, "h{i}");
            assert_eq!(c.is_local(&v), i != 3, "h{i} attachment");
        }
        let c1 = m
            .host_config(&hid(1), 5, std::slice::from_ref(&fp))
            .expect("h1");
        assert!(c1.sids.contains(&SidEntry::EndS {
            sid: host(1).sid_end_s,
            vm: v.clone()
        }));
        let c2 = m
            .host_config(&hid(2), 5, std::slice::from_ref(&fp))
            .expect("h2");
        assert!(c2.sids.contains(&SidEntry::EndSbuf {
            sid: host(2).sid_end_sbuf,
            vm: v.clone(),
            mode: SbufMode::Buffer
        }));
        let c3 = m.host_config(&hid(3), 5, &[fp]).expect("h3");
        assert_eq!(c3.sids.len(), 1);
    }

    fn in_network(mut v: VmInfo, n: &str) -> VmInfo {
        v.network = Some(NetworkId::new(n).expect("network"));
        v
    }

    /// h1..h4; vm1 (h1) and vm2 (h2) in `blue`, vm3 (h3) in `red`, vm4 (h4) in no network.
    fn networks() -> Model {
        let mut m = Model::new();
        for i in 1..=4 {
            m.add_host(host(i)).expect("host");
        }
        m.add_vm(in_network(vm(1, 1), "blue")).expect("vm1");
        m.add_vm(in_network(vm(2, 2), "blue")).expect("vm2");
        m.add_vm(in_network(vm(3, 3), "red")).expect("vm3");
        m.add_vm(vm(4, 4)).expect("vm4");
        m
    }

    fn told(m: &Model, h: u16, fps: &[Footprint]) -> Vec<String> {
        let c = m.host_config(&hid(h), 1, fps).expect("host");
        c.validate().expect("valid config");
        c.mappings.iter().map(|x| x.vm.to_string()).collect()
    }

    #[test]
    fn a_host_is_told_about_its_networks_and_the_vms_without_one() {
        let m = networks();
        assert_eq!(told(&m, 1, &[]), ["vm1", "vm2", "vm4"]);
        assert_eq!(told(&m, 2, &[]), ["vm1", "vm2", "vm4"]);
        assert_eq!(told(&m, 3, &[]), ["vm3", "vm4"]);
        assert_eq!(told(&m, 4, &[]), ["vm4"]);
        let blue = NetworkId::new("blue").expect("network");
        let reach = Reach::default();
        assert_eq!(
            m.network_hosts(&blue, &reach)
                .into_iter()
                .collect::<Vec<_>>(),
            [hid(1), hid(2)]
        );
        let vm4 = m.vm(&vm(4, 4).name).expect("vm4").clone();
        assert_eq!(m.hosts_reaching(&vm4, &reach).len(), 4);
    }

    #[test]
    fn a_migration_brings_its_network_to_the_destination_until_the_cleanup() {
        let mut m = networks();
        let v = vm(1, 1).name;
        let fp = Footprint {
            vm: v.clone(),
            from: hid(1),
            to: hid(4),
            attach: true,
            endpoints: Some(SbufMode::Buffer),
            path: true,
        };
        let fps = std::slice::from_ref(&fp);
        // D learns vm1's peers (and the path to vm1) with the attachment; h3 never does.
        assert_eq!(told(&m, 4, fps), ["vm1", "vm2", "vm4"]);
        assert_eq!(told(&m, 3, fps), ["vm3", "vm4"]);
        let path = encaps(vec![host(1).sid_end_s, host(4).sid_end_sbuf]);
        for h in [1, 2, 4] {
            let c = m.host_config(&hid(h), 1, fps).expect("host");
            assert_eq!(c.mapping(&v).expect("mapping").steering, path, "h{h}");
        }
        // Committed, still attached on S: S keeps blue until the cleanup, then drops it.
        assert!(m.set_vm_host(&v, &hid(4)));
        let attached = Footprint {
            endpoints: None,
            path: false,
            ..fp.clone()
        };
        assert_eq!(
            told(&m, 1, std::slice::from_ref(&attached)),
            ["vm1", "vm2", "vm4"]
        );
        assert_eq!(told(&m, 1, &[]), ["vm4"]);
        assert_eq!(told(&m, 4, &[]), ["vm1", "vm2", "vm4"]);
        assert_eq!(told(&m, 2, &[]), ["vm1", "vm2", "vm4"]);
    }

    #[test]
    fn the_indexes_follow_every_change_and_survive_a_snapshot() {
        let mut m = networks();
        assert!(!m.dual_stack());
        let mut v5 = in_network(vm(5, 3), "blue");
        v5.addresses.push("10.0.0.5".parse().expect("addr"));
        m.add_vm(v5.clone()).expect("vm5");
        assert!(m.dual_stack());
        assert_eq!(told(&m, 3, &[]), ["vm1", "vm2", "vm3", "vm4", "vm5"]);
        // Taken addresses and MACs are found through the index.
        let mut dup = vm(6, 1);
        dup.addresses = vec!["10.0.0.5".parse().expect("addr")];
        assert!(matches!(
            m.add_vm(dup),
            Err(ModelError::AddressInUse { .. })
        ));
        let mut dup = vm(6, 1);
        dup.mac = v5.mac;
        assert!(matches!(m.add_vm(dup), Err(ModelError::BadMac { .. })));
        let json = serde_json::to_string(&m).expect("serialize");
        let keys: Vec<String> = serde_json::from_str::<serde_json::Value>(&json)
            .expect("json")
            .as_object()
            .expect("object")
            .keys()
            .cloned()
            .collect();
        assert_eq!(keys, ["hosts", "vms"], "only hosts and VMs are stored");
        let back: Model = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, m, "the indexes are rebuilt");
        assert!(m.remove_vm(&v5.name));
        assert!(!m.dual_stack());
        assert_eq!(told(&m, 3, &[]), ["vm3", "vm4"]);
        m.add_vm(vm(6, 1))
            .expect("the freed address and MAC can be used again");
        assert_eq!(
            m.host_by_underlay(&host(2).underlay).map(|h| &h.name),
            Some(&hid(2))
        );
    }

    #[test]
    fn only_the_sr_path_mapping_is_fenced() {
        let mut m = model3();
        let v = vm(1, 1).name;
        let mut fp = Footprint {
            vm: v.clone(),
            from: hid(1),
            to: hid(2),
            attach: true,
            endpoints: Some(SbufMode::Buffer),
            path: true,
        };
        let fence_on = |m: &Model, fp: &Footprint, i: u16| {
            let c = m
                .host_config(&hid(i), 5, std::slice::from_ref(fp))
                .expect("host");
            c.validate().expect("valid config");
            c.mapping(&v).expect("mapping").fence
        };
        for i in 1..=3 {
            assert!(fence_on(&m, &fp, i), "path armed: h{i}");
        }
        // Committed (mapped to D, End.SBUF still there), rolled back, cleaned up: not fenced.
        fp.path = false;
        assert!(!fence_on(&m, &fp, 3));
        assert!(m.set_vm_host(&v, &hid(2)));
        assert!(!fence_on(&m, &fp, 3));
        assert!(
            !m.host_config(&hid(3), 5, &[])
                .expect("host")
                .mapping(&v)
                .expect("mapping")
                .fence
        );
    }

    #[test]
    fn endpoints_without_path_keep_mapping_steering() {
        let m = model3();
        let v = vm(1, 1).name;
        let fp = Footprint {
            vm: v.clone(),
            from: hid(1),
            to: hid(2),
            attach: true,
            endpoints: Some(SbufMode::Drop),
            path: false,
        };
        let c2 = m
            .host_config(&hid(2), 1, std::slice::from_ref(&fp))
            .expect("h2");
        assert_eq!(
            c2.mapping(&v).expect("mapping").steering,
            encaps(vec![host(1).sid_dt6])
        );
        assert!(c2.sids.iter().any(|s| matches!(
            s,
            SidEntry::EndSbuf {
                mode: SbufMode::Drop,
                ..
            }
        )));
        let c1 = m.host_config(&hid(1), 1, &[fp]).expect("h1");
        assert_eq!(c1.mapping(&v).expect("mapping").steering, Steering::Native);
    }

    #[test]
    fn mapping_change_moves_native_delivery() {
        let mut m = model3();
        let v = vm(1, 1).name;
        assert!(m.set_vm_host(&v, &hid(2)));
        assert!(!m.set_vm_host(&v, &hid(9)));
        let c1 = m.host_config(&hid(1), 1, &[]).expect("h1");
        assert_eq!(
            c1.mapping(&v).expect("mapping").steering,
            encaps(vec![host(2).sid_dt6])
        );
        assert!(!c1.is_local(&v));
        let c2 = m.host_config(&hid(2), 1, &[]).expect("h2");
        assert_eq!(c2.mapping(&v).expect("mapping").steering, Steering::Native);
    }

    #[test]
    fn refuses_bad_hosts() {
        let mut m = model3();
        assert_eq!(m.add_host(host(1)), Err(ModelError::DuplicateHost(hid(1))));
        let mut h = host(4);
        h.locator = "fc00::/16".parse().expect("prefix");
        assert!(matches!(
            m.add_host(h),
            Err(ModelError::LocatorOverlap { .. })
        ));
        let mut h = host(4);
        h.underlay = host(1).underlay;
        assert!(matches!(
            m.add_host(h),
            Err(ModelError::UnderlayInUse { .. })
        ));
        let mut h = host(4);
        h.sid_dt6 = "fc00:5::d6".parse().expect("sid");
        let err = m.add_host(h).expect_err("sid outside locator");
        assert!(matches!(err, ModelError::InvalidHost { .. }));
        assert!(std::error::Error::source(&err).is_some());
        let mut h = host(4);
        h.locator = "2001:db8:a::/64".parse().expect("prefix");
        h.sid_end_s = "2001:db8:a::e5".parse().expect("sid");
        h.sid_end_sbuf = "2001:db8:a::eb".parse().expect("sid");
        h.sid_dt6 = "2001:db8:a::d6".parse().expect("sid");
        assert!(matches!(
            m.add_host(h),
            Err(ModelError::AddressInUse { .. })
        ));
    }

    #[test]
    fn refuses_bad_vms() {
        let mut m = model3();
        assert_eq!(
            m.add_vm(vm(1, 2)),
            Err(ModelError::DuplicateVm(vm(1, 1).name))
        );
        assert!(matches!(
            m.add_vm(vm(2, 9)),
            Err(ModelError::UnknownHost { .. })
        ));
        let mut v = vm(2, 1);
        v.addresses.clear();
        assert!(matches!(m.add_vm(v), Err(ModelError::NoAddresses(_))));
        let mut v = vm(2, 1);
        v.addresses = vm(1, 1).addresses;
        assert!(matches!(m.add_vm(v), Err(ModelError::AddressInUse { .. })));
        let mut v = vm(2, 1);
        v.addresses.push(v.addresses[0]);
        assert!(matches!(m.add_vm(v), Err(ModelError::AddressInUse { .. })));
        let mut v = vm(2, 1);
        v.addresses = vec!["fc00:2::99".parse().expect("addr")];
        assert!(matches!(m.add_vm(v), Err(ModelError::AddressInUse { .. })));
        let mut v = vm(2, 1);
        v.addresses = vec![Ipv6Addr::LOCALHOST.into()];
        assert!(matches!(m.add_vm(v), Err(ModelError::BadAddress { .. })));
        for bad in ["127.0.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255"] {
            let mut v = vm(2, 1);
            v.addresses.push(bad.parse().expect("addr"));
            assert!(
                matches!(m.add_vm(v), Err(ModelError::BadAddress { .. })),
                "{bad}"
            );
        }
        let mut v = vm(2, 1);
        v.mac = vm(1, 1).mac;
        assert!(matches!(m.add_vm(v), Err(ModelError::BadMac { .. })));
        let mut v = vm(2, 1);
        v.mac = MacAddr([0x01, 0, 0x5e, 0, 0, 1]);
        assert!(matches!(m.add_vm(v), Err(ModelError::BadMac { .. })));
        m.add_vm(vm(2, 3)).expect("a good VM is accepted");
        assert_eq!(m.vms().count(), 2);
    }
}
