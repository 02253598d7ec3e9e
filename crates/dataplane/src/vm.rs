//! The VM table: VMs attached (or expected) here, their ports, addresses and states.
//!
//! State transitions come from srmigd (`handle_vm_state`), which learns them from the VM's
//! attachment and the hypervisor:
//!
//! ```text
//!   Absent ──(resume here after migration)──► Running ──(stop-and-copy pause)──► Paused
//!     ▲                                          ▲                                  │
//!     └───────────(migrated away)────────────────┴──────────(resume / cancel)───────┘
//! ```
//!
//! End.S delivers only to `Running` VMs, End.SBUF holds packets for any other state.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::hash::{fast_map, AddrHash, FastMap};
use crate::policy::Steering;
use crate::port::PortId;

/// Index of a VM, in configuration order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct VmId(pub u32);

impl VmId {
    /// The index as `usize`.
    #[inline]
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// The state of a VM's attachment on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    /// Not on this node (not yet arrived, or migrated away).
    #[default]
    Absent,
    /// Running here: packets are delivered to it.
    Running,
    /// Here but paused (stop-and-copy phase of a migration away, or not yet resumed).
    Paused,
}

/// An installed VM.
#[derive(Debug, Clone)]
pub(crate) struct Vm {
    pub(crate) name: String,
    pub(crate) addresses: Vec<IpAddr>,
    pub(crate) mac: [u8; 6],
    pub(crate) port: PortId,
    pub(crate) state: VmState,
    /// Resumed with packets held for it, the first not released yet: the release that
    /// follows observes how long that packet waited ([`crate::HoldHistogram`]).
    pub(crate) resumed_holding: bool,
}

/// What one IPv6 address means on this node: the local VM that owns it and the exact (/128)
/// ingress steering towards it. Both live in one table so that traffic from a local VM, which
/// needs both answers for its destination, pays one hash probe (shorter mapping prefixes stay
/// in [`crate::policy::MappingTable`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct AddrEntry {
    /// The local VM with this address.
    pub(crate) vm: Option<VmId>,
    /// The /128 mapping of this address.
    pub(crate) steering: Option<Steering>,
}

/// VMs with exact-match address lookups; the IPv6 table also holds /128 mappings
/// ([`AddrEntry`]).
#[derive(Debug, Clone)]
pub(crate) struct VmTable {
    pub(crate) vms: Vec<Vm>,
    by_v6: FastMap<u128, AddrEntry>,
    by_v4: FastMap<u32, VmId>,
}

impl VmTable {
    pub(crate) fn new(h: AddrHash) -> VmTable {
        VmTable {
            vms: Vec::new(),
            by_v6: fast_map(h),
            by_v4: fast_map(h),
        }
    }

    /// Adds a VM whose fields were validated by the caller; addresses must be unused.
    pub(crate) fn push(&mut self, vm: Vm) -> VmId {
        let id = VmId(self.vms.len() as u32);
        for a in &vm.addresses {
            match a {
                IpAddr::V6(a) => {
                    self.by_v6.entry(u128::from(*a)).or_default().vm = Some(id);
                }
                IpAddr::V4(a) => {
                    self.by_v4.insert(u32::from(*a), id);
                }
            }
        }
        self.vms.push(vm);
        id
    }

    pub(crate) fn owner_of(&self, a: IpAddr) -> Option<VmId> {
        match a {
            IpAddr::V6(a) => self.by_v6(u128::from(a)),
            IpAddr::V4(a) => self.by_v4(u32::from(a)),
        }
    }

    #[inline]
    /// Every IPv6 address a local VM has.
    pub(crate) fn vm_v6_addrs(&self) -> impl Iterator<Item = u128> + '_ {
        self.by_v6
            .iter()
            .filter(|(_, e)| e.vm.is_some())
            .map(|(&a, _)| a)
    }

    /// Every /128 mapping (an address and its steering), local VM or not.
    pub(crate) fn v6_steering(&self) -> impl Iterator<Item = (u128, Steering)> + '_ {
        self.by_v6
            .iter()
            .filter_map(|(&a, e)| e.steering.map(|s| (a, s)))
    }

    pub(crate) fn by_v6(&self, a: u128) -> Option<VmId> {
        self.v6_entry(a).vm
    }

    /// Everything known about the IPv6 address `a` (one probe).
    #[inline]
    pub(crate) fn v6_entry(&self, a: u128) -> AddrEntry {
        if self.by_v6.is_empty() {
            return AddrEntry::default();
        }
        self.by_v6.get(&a).copied().unwrap_or_default()
    }

    /// Sets (`Some`) or removes (`None`) the /128 steering of `a`; returns the previous one.
    pub(crate) fn set_steering_v6(&mut self, a: u128, s: Option<Steering>) -> Option<Steering> {
        match s {
            Some(s) => self.by_v6.entry(a).or_default().steering.replace(s),
            None => {
                let e = self.by_v6.get_mut(&a)?;
                let prev = e.steering.take();
                if e.vm.is_none() {
                    self.by_v6.remove(&a);
                }
                prev
            }
        }
    }

    #[inline]
    pub(crate) fn by_v4(&self, a: u32) -> Option<VmId> {
        if self.by_v4.is_empty() {
            return None;
        }
        self.by_v4.get(&a).copied()
    }

    pub(crate) fn by_name(&self, name: &str) -> Option<VmId> {
        self.vms
            .iter()
            .position(|v| v.name == name)
            .map(|i| VmId(i as u32))
    }

    #[inline]
    pub(crate) fn get(&self, id: VmId) -> Option<&Vm> {
        self.vms.get(id.index())
    }

    pub(crate) fn len(&self) -> usize {
        self.vms.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn lookups() {
        let mut t = VmTable::new(AddrHash::default());
        let a6: Ipv6Addr = "2001:db8::10".parse().unwrap();
        let a4 = Ipv4Addr::new(10, 0, 0, 10);
        let id = t.push(Vm {
            name: "vm1".into(),
            addresses: vec![a6.into(), a4.into()],
            mac: [2, 0, 0, 0, 0, 0x10],
            port: PortId(1),
            state: VmState::Running,
            resumed_holding: false,
        });
        assert_eq!(t.by_v6(u128::from(a6)), Some(id));
        assert_eq!(t.by_v4(u32::from(a4)), Some(id));
        assert_eq!(t.owner_of(a4.into()), Some(id));
        assert_eq!(t.by_v6(1), None);
        assert_eq!(t.by_name("vm1"), Some(id));
        assert_eq!(t.by_name("vm2"), None);
        assert_eq!(t.get(id).map(|v| v.state), Some(VmState::Running));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn steering_shares_the_address_table() {
        let mut t = VmTable::new(AddrHash::default());
        let a6: Ipv6Addr = "2001:db8::10".parse().unwrap();
        let id = t.push(Vm {
            name: "vm1".into(),
            addresses: vec![a6.into()],
            mac: [2, 0, 0, 0, 0, 0x10],
            port: PortId(1),
            state: VmState::Running,
            resumed_holding: false,
        });
        let a = u128::from(a6);
        let p = Steering::Policy(crate::policy::PolicyId(3));
        assert_eq!(t.set_steering_v6(a, Some(p)), None);
        assert_eq!(
            t.v6_entry(a),
            AddrEntry {
                vm: Some(id),
                steering: Some(p)
            }
        );
        assert_eq!(t.set_steering_v6(a, Some(Steering::Native)), Some(p));
        assert_eq!(t.set_steering_v6(a, None), Some(Steering::Native));
        // The VM keeps its address.
        assert_eq!(
            t.v6_entry(a),
            AddrEntry {
                vm: Some(id),
                steering: None
            }
        );
        // A mapping for an address without a VM comes and goes.
        assert_eq!(t.set_steering_v6(7, Some(p)), None);
        assert_eq!(t.v6_entry(7).steering, Some(p));
        assert_eq!(t.set_steering_v6(7, None), Some(p));
        assert_eq!(t.v6_entry(7), AddrEntry::default());
        assert_eq!(t.by_v6.len(), 1);
        assert_eq!(t.set_steering_v6(8, None), None);
    }
}
