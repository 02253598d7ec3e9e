//! A change to a host's config: what `PATCH /v1/config` carries.
//!
//! A [`HostConfig`] is complete; with N VMs it holds N mappings, so pushing it to N ingresses
//! whenever one VM's steering changes costs O(N) per host and O(N^2) per migration. A
//! [`HostConfigDelta`] carries only what changed since the version the host holds: the
//! mappings of the VMs whose steering changed (whole, replacing the host's entry), the VMs
//! whose mapping went away, and, only when they changed, the whole `local_vms` list and the
//! whole SID table (both are O(VMs on this host), not O(all VMs)).
//!
//! A delta names the version it applies to (`epoch`, `base_generation`) and the version it
//! makes (`epoch`, `generation`). A host whose version is not the base refuses it (`409`,
//! `base-mismatch`); the sender then sends the complete config, which always applies.
//!
//! Golden JSON (host `h3` when `web1`'s SR path is armed; nothing else changed):
//! ```json
//! {"epoch":1700000000000,"base_generation":7,"generation":8,
//!  "mappings":[{"vm":"web1","addresses":["2001:db8:a::10"],
//!               "steering":{"encaps":{"segments":["fc00:1::e5","fc00:2::eb"],"headend":"H.Encaps"}}}]}
//! ```
//! with, when they changed, `"removed":["vm7"]`, `"local_vms":[...]`, `"sids":[...]`.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::config::{HostConfig, HostConfigError, LocalVm, Mapping, SidEntry};
use crate::ids::VmId;

/// What changed in a host's config between two versions of one epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfigDelta {
    /// `epoch`: the epoch of both versions.
    pub epoch: u64,
    /// `base_generation`: the generation the delta applies to.
    pub base_generation: u64,
    /// `generation`: the generation it makes (greater than `base_generation`).
    pub generation: u64,
    /// `mappings`: new or changed mappings, whole (sorted by VM name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mappings: Vec<Mapping>,
    /// `removed`: VMs whose mapping is gone (sorted; one without a mapping is ignored).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<VmId>,
    /// `local_vms`: the complete new list, if it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_vms: Option<Vec<LocalVm>>,
    /// `sids`: the complete new SID table, if it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sids: Option<Vec<SidEntry>>,
}

/// Why a delta cannot be applied to (or composed with) a config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    /// The config is not at the delta's base version.
    #[error("the delta applies to epoch {} generation {}, the config in force is epoch {} generation {}", base.0, base.1, held.0, held.1)]
    BaseMismatch {
        /// The delta's base (`epoch`, `base_generation`).
        base: (u64, u64),
        /// The version held.
        held: (u64, u64),
    },
    /// `generation` is not above `base_generation`.
    #[error("generation {generation} is not above base_generation {base}")]
    NotForward {
        /// `base_generation`.
        base: u64,
        /// `generation`.
        generation: u64,
    },
    /// A VM is named twice (in `mappings`, in `removed`, or in both).
    #[error("VM {0} appears more than once in the delta's mappings and removed")]
    DuplicateVm(VmId),
}

impl HostConfigDelta {
    /// True if the delta changes nothing (only the version moves).
    pub fn is_empty(&self) -> bool {
        self.mappings.is_empty()
            && self.removed.is_empty()
            && self.local_vms.is_none()
            && self.sids.is_none()
    }

    /// The version it applies to.
    pub fn base(&self) -> (u64, u64) {
        (self.epoch, self.base_generation)
    }

    /// The version it makes.
    pub fn version(&self) -> (u64, u64) {
        (self.epoch, self.generation)
    }

    /// Checks the delta on its own: moves forward, names every VM once.
    pub fn check(&self) -> Result<(), DeltaError> {
        if self.generation <= self.base_generation {
            return Err(DeltaError::NotForward {
                base: self.base_generation,
                generation: self.generation,
            });
        }
        let mut seen = std::collections::BTreeSet::new();
        for vm in self.mappings.iter().map(|m| &m.vm).chain(&self.removed) {
            if !seen.insert(vm) {
                return Err(DeltaError::DuplicateVm(vm.clone()));
            }
        }
        Ok(())
    }

    /// `self` followed by `next` as one delta (from `self`'s base to `next`'s version).
    pub fn then(mut self, next: HostConfigDelta) -> Result<HostConfigDelta, DeltaError> {
        if next.base() != self.version() {
            return Err(DeltaError::BaseMismatch {
                base: next.base(),
                held: self.version(),
            });
        }
        for vm in &next.removed {
            self.mappings.retain(|m| &m.vm != vm);
            if let Err(at) = self.removed.binary_search(vm) {
                self.removed.insert(at, vm.clone());
            }
        }
        for m in next.mappings {
            if let Ok(at) = self.removed.binary_search(&m.vm) {
                self.removed.remove(at);
            }
            match self.mappings.binary_search_by(|x| x.vm.cmp(&m.vm)) {
                Ok(at) => self.mappings[at] = m,
                Err(at) => self.mappings.insert(at, m),
            }
        }
        if next.local_vms.is_some() {
            self.local_vms = next.local_vms;
        }
        if next.sids.is_some() {
            self.sids = next.sids;
        }
        self.generation = next.generation;
        Ok(self)
    }
}

impl HostConfig {
    /// The delta that turns `self` into `next` (same epoch assumed: the delta carries
    /// `next`'s). Mappings are compared by VM; both lists must be sorted by VM name, as the
    /// controller makes them.
    pub fn delta_to(&self, next: &HostConfig) -> HostConfigDelta {
        let mut mappings = Vec::new();
        let mut removed = Vec::new();
        let (mut a, mut b) = (
            self.mappings.iter().peekable(),
            next.mappings.iter().peekable(),
        );
        loop {
            match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some(x), None) => {
                    removed.push(x.vm.clone());
                    a.next();
                }
                (None, Some(y)) => {
                    mappings.push((*y).clone());
                    b.next();
                }
                (Some(x), Some(y)) => match x.vm.cmp(&y.vm) {
                    std::cmp::Ordering::Less => {
                        removed.push(x.vm.clone());
                        a.next();
                    }
                    std::cmp::Ordering::Greater => {
                        mappings.push((*y).clone());
                        b.next();
                    }
                    std::cmp::Ordering::Equal => {
                        if x != y {
                            mappings.push((*y).clone());
                        }
                        a.next();
                        b.next();
                    }
                },
            }
        }
        HostConfigDelta {
            epoch: next.epoch,
            base_generation: self.generation,
            generation: next.generation,
            mappings,
            removed,
            local_vms: (self.local_vms != next.local_vms).then(|| next.local_vms.clone()),
            sids: (self.sids != next.sids).then(|| next.sids.clone()),
        }
    }

    /// Checks that applying `delta` (mappings only) to this valid config gives a valid config,
    /// looking only at what the delta changes: O(VMs in the delta x VMs) instead of the
    /// O(VMs log VMs) of [`HostConfig::validate`] on the result. `local_vms` and `sids` in the
    /// delta are not looked at (validate the result whole when they change).
    pub fn validate_delta(&self, delta: &HostConfigDelta) -> Result<(), HostConfigError> {
        self.validate_delta_with(delta, |addr| {
            self.mappings
                .iter()
                .find(|x| x.addresses.contains(addr))
                .map(|x| &x.vm)
        })
    }

    /// [`HostConfig::validate_delta`] with `owner` telling which VM this config maps an
    /// address to (a caller that keeps an index of its config makes the check O(VMs in the
    /// delta); `validate_delta` scans the mappings).
    pub fn validate_delta_with<'a>(
        &'a self,
        delta: &HostConfigDelta,
        owner: impl Fn(&IpAddr) -> Option<&'a VmId>,
    ) -> Result<(), HostConfigError> {
        let touched =
            |vm: &VmId| delta.mappings.iter().any(|m| &m.vm == vm) || delta.removed.contains(vm);
        for (i, m) in delta.mappings.iter().enumerate() {
            if delta.mappings[..i].iter().any(|x| x.vm == m.vm) {
                return Err(HostConfigError::DuplicateVm {
                    field: "mappings",
                    vm: m.vm.clone(),
                });
            }
            m.check()?;
            for addr in &m.addresses {
                let other = delta.mappings[..i]
                    .iter()
                    .find(|x| x.addresses.contains(addr))
                    .map(|x| &x.vm)
                    // A valid config maps an address to one VM at most.
                    .or_else(|| owner(addr).filter(|vm| !touched(vm)));
                if let Some(first) = other {
                    return Err(HostConfigError::DuplicateAddress {
                        addr: *addr,
                        first: first.clone(),
                        second: m.vm.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Applies `delta` in place; on error nothing changed. Removing a VM that has no mapping
    /// is not an error (a composed delta may remove a VM its first part added). The result is
    /// not validated (see [`HostConfig::validate`]).
    pub fn apply_delta(&mut self, delta: &HostConfigDelta) -> Result<(), DeltaError> {
        if delta.base() != self.version() {
            return Err(DeltaError::BaseMismatch {
                base: delta.base(),
                held: self.version(),
            });
        }
        delta.check()?;
        if !delta.removed.is_empty() {
            self.mappings.retain(|m| !delta.removed.contains(&m.vm));
        }
        for m in &delta.mappings {
            // Mappings are kept sorted by VM (as this inserts them); a config that came
            // unsorted is searched linearly.
            let at = match self.mappings.binary_search_by(|x| x.vm.cmp(&m.vm)) {
                Ok(at) => Some(at),
                Err(_) => self.mappings.iter().position(|x| x.vm == m.vm),
            };
            match at {
                Some(at) => self.mappings[at] = m.clone(),
                None => {
                    let at = self.mappings.partition_point(|x| x.vm < m.vm);
                    self.mappings.insert(at, m.clone());
                }
            }
        }
        if let Some(l) = &delta.local_vms {
            self.local_vms = l.clone();
        }
        if let Some(s) = &delta.sids {
            self.sids = s.clone();
        }
        self.generation = delta.generation;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Encaps, Headend, Steering};
    use crate::ids::MacAddr;
    use proptest::prelude::*;
    use std::net::IpAddr;

    fn mapping(i: u8, steer: u8) -> Mapping {
        Mapping {
            vm: VmId::new(format!("vm{i:03}")).expect("name"),
            addresses: vec![format!("2001:db8:a::{i:x}").parse().expect("addr")],
            steering: match steer % 3 {
                0 => Steering::Native,
                1 => Steering::Encaps(Encaps {
                    segments: vec!["fc00:1::d6".parse().expect("sid")],
                    headend: Headend::HEncaps,
                }),
                _ => Steering::Encaps(Encaps {
                    segments: vec![
                        "fc00:1::e5".parse().expect("sid"),
                        "fc00:2::eb".parse().expect("sid"),
                    ],
                    headend: Headend::HEncaps,
                }),
            },
            fence: false,
        }
    }

    fn local(i: u8) -> LocalVm {
        LocalVm {
            vm: VmId::new(format!("vm{i:03}")).expect("name"),
            addresses: vec![IpAddr::from([10, 1, 0, i])],
            mac: MacAddr([0x52, 0x54, 0, 0, 0, i]),
        }
    }

    /// A config from (VM number, steering) pairs (VM numbers deduplicated, sorted).
    fn config(generation: u64, vms: &[(u8, u8)], locals: &[u8], dt46: bool) -> HostConfig {
        let mut mappings: Vec<Mapping> = vms.iter().map(|&(i, s)| mapping(i, s)).collect();
        mappings.sort_by(|a, b| a.vm.cmp(&b.vm));
        mappings.dedup_by(|a, b| a.vm == b.vm);
        let mut local_vms: Vec<LocalVm> = locals.iter().map(|&i| local(i)).collect();
        local_vms.sort_by(|a, b| a.vm.cmp(&b.vm));
        local_vms.dedup_by(|a, b| a.vm == b.vm);
        let sid = "fc00:3::d6".parse().expect("sid");
        HostConfig {
            epoch: 5,
            generation,
            mappings,
            local_vms,
            sids: vec![if dt46 {
                SidEntry::EndDt46 { sid }
            } else {
                SidEntry::EndDt6 { sid }
            }],
        }
    }

    #[test]
    fn golden_json() {
        let before = config(7, &[(1, 0), (2, 1)], &[1], false);
        let after = config(8, &[(1, 0), (2, 2)], &[1], false);
        let d = before.delta_to(&after);
        assert_eq!(
            serde_json::to_string(&d).expect("json"),
            r#"{"epoch":5,"base_generation":7,"generation":8,"mappings":[{"vm":"vm002","addresses":["2001:db8:a::2"],"steering":{"encaps":{"segments":["fc00:1::e5","fc00:2::eb"],"headend":"H.Encaps"}}}]}"#
        );
        let back: HostConfigDelta =
            serde_json::from_str(&serde_json::to_string(&d).expect("json")).expect("parse");
        assert_eq!(back, d);
    }

    #[test]
    fn base_mismatch_and_bad_deltas_change_nothing() {
        let a = config(7, &[(1, 0), (2, 1)], &[1], false);
        let b = config(8, &[(1, 0)], &[1], false);
        let d = a.delta_to(&b);
        let mut other = config(6, &[(1, 0), (2, 1)], &[1], false);
        let before = other.clone();
        assert!(matches!(
            other.apply_delta(&d),
            Err(DeltaError::BaseMismatch { .. })
        ));
        assert_eq!(other, before);
        let mut twice = d.clone();
        twice.mappings.push(mapping(2, 0));
        let mut x = a.clone();
        assert_eq!(
            x.apply_delta(&twice),
            Err(DeltaError::DuplicateVm(VmId::new("vm002").expect("name")))
        );
        assert_eq!(x, a);
        let mut back = d;
        back.generation = 7;
        assert!(matches!(
            x.apply_delta(&back),
            Err(DeltaError::NotForward { .. })
        ));
        assert_eq!(x, a);
    }

    fn arb_config(generation: u64) -> impl Strategy<Value = HostConfig> {
        (
            proptest::collection::vec((0u8..40, 0u8..3), 0..30),
            proptest::collection::vec(0u8..40, 0..4),
            any::<bool>(),
        )
            .prop_map(move |(vms, locals, dt46)| config(generation, &vms, &locals, dt46))
    }

    proptest! {
        /// Applying `a.delta_to(b)` to `a` gives `b`, and the delta holds only what changed.
        #[test]
        fn delta_round_trip(a in arb_config(3), b in arb_config(4)) {
            let d = a.delta_to(&b);
            let mut x = a.clone();
            x.apply_delta(&d).expect("applies");
            prop_assert_eq!(&x, &b);
            for m in &d.mappings {
                prop_assert!(a.mapping(&m.vm) != Some(m));
            }
            prop_assert_eq!(d.is_empty(), a.same_state(&b));
        }

        /// `validate_delta` on a valid config judges the delta as `validate` judges the
        /// result (mappings: the generated configs' SIDs and local VMs are always valid).
        #[test]
        fn validate_delta_agrees(a in arb_config(3), b in arb_config(4), dup in 0u8..40, into in 0u8..40) {
            prop_assume!(a.validate().is_ok());
            let mut d = a.delta_to(&b);
            d.local_vms = None;
            d.sids = None;
            // Sometimes give one changed mapping another VM's address.
            if let Some(m) = d.mappings.first_mut() {
                if dup % 3 == 0 {
                    m.addresses.push(format!("2001:db8:a::{into:x}").parse().expect("addr"));
                }
            }
            let mut result = a.clone();
            result.apply_delta(&d).expect("applies");
            prop_assert_eq!(a.validate_delta(&d).is_ok(), result.validate().is_ok(), "{:?}", d);
        }

        /// Two deltas composed with `then` give the same config as applied one after the other.
        #[test]
        fn composition(a in arb_config(3), b in arb_config(4), c in arb_config(9)) {
            let (d1, d2) = (a.delta_to(&b), b.delta_to(&c));
            let both = d1.then(d2).expect("composes");
            prop_assert_eq!(both.base(), a.version());
            let mut x = a.clone();
            x.apply_delta(&both).expect("applies");
            prop_assert_eq!(&x.mappings, &c.mappings);
            prop_assert_eq!(&x.local_vms, &c.local_vms);
            prop_assert_eq!(&x.sids, &c.sids);
            prop_assert_eq!(x.generation, 9);
        }
    }
}
