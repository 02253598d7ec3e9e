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
}

/// VMs with exact-match address lookups.
#[derive(Debug)]
pub(crate) struct VmTable {
    pub(crate) vms: Vec<Vm>,
    by_v6: FastMap<u128, VmId>,
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
                    self.by_v6.insert(u128::from(*a), id);
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
    pub(crate) fn by_v6(&self, a: u128) -> Option<VmId> {
        if self.by_v6.is_empty() {
            return None;
        }
        self.by_v6.get(&a).copied()
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
}
