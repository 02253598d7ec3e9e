//! From the controller's [`HostConfig`] to the engine's tables.
//!
//! The node config (TOML) is the base: ports, routes, the VMs this host can attach (with their
//! ports), static SIDs, policies and mappings. A host config is complete, and replaces what the
//! previous one installed:
//!
//! | host config | engine |
//! |---|---|
//! | `mappings[]` with `encaps` | a policy `vm:<VM>` (H.Encaps / H.Encaps.Red) and one /128 (IPv6) or /32 (IPv4) mapping per address |
//! | `mappings[]` `native` | a `native` /128 or /32 mapping per address (local delivery or FIB) |
//! | `sids[]` End.DT6 / End.DT46 | SID End.DT6 / End.DT46, main table |
//! | `sids[]` End.S / End.SBUF | SID with `vm` set (one VM at that SID) or unset (several: the inner destination selects the VM) |
//! | `local_vms[]` | checked against the node config's `[[vms]]` (name, MAC, addresses) |
//!
//! Host-config SIDs override node-config SIDs at the same address; SIDs added through
//! `POST /v1/sids` override both. A mapping withdrawn by a later host config falls back to the
//! node config's mapping for the same prefix, if any.
//!
//! [`plan`] validates everything without touching the live engine: it checks the host config
//! itself, then builds a scratch engine from the merged configuration (the same validation
//! code the live installs run). Only a plan that passed is applied, between two batches.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;

use ipnet::IpNet;
use srmig_api::{HostConfig, SidEntry};
use srmig_dataplane::{
    Behavior, Dataplane, FlowLabelMode, Headend, MappingConfig, NodeConfig, PolicyConfig, SbufMode,
    SidConfig,
};

/// Prefix of the names of policies made from host-config mappings.
pub const POLICY_PREFIX: &str = "vm:";

/// The engine state a host config asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Policies from the host config's mappings (`vm:<VM>`).
    pub policies: Vec<PolicyConfig>,
    /// /128 and /32 mappings from the host config: prefix -> policy name (or `native`). A
    /// map: a delta replaces a few prefixes of a thousand, and a whole plan is compared with
    /// the one in force prefix by prefix.
    pub mappings: BTreeMap<IpNet, String>,
    /// The whole desired SID table (node config, host config, API), by address.
    pub sids: BTreeMap<Ipv6Addr, SidConfig>,
}

/// Why a host config cannot be applied here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The host config contradicts itself.
    #[error("invalid host config: {0}")]
    Inconsistent(#[from] srmig_api::HostConfigError),
    /// The host config does not fit this node (names the host-config field).
    #[error("{field}: {reason}")]
    Mismatch {
        /// The host-config field, e.g. `local_vms[1]`.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The merged configuration fails the engine's validation.
    #[error("the dataplane refuses the merged configuration: {0}")]
    Refused(String),
}

fn mismatch(field: impl Into<String>, reason: impl Into<String>) -> PlanError {
    PlanError::Mismatch {
        field: field.into(),
        reason: reason.into(),
    }
}

fn headend(h: srmig_api::Headend) -> Headend {
    match h {
        srmig_api::Headend::HEncaps => Headend::HEncaps,
        srmig_api::Headend::HEncapsRed => Headend::HEncapsRed,
    }
}

fn sbuf_mode(m: srmig_api::SbufMode) -> SbufMode {
    match m {
        srmig_api::SbufMode::Buffer => SbufMode::Buffer,
        srmig_api::SbufMode::Drop => SbufMode::Drop,
    }
}

/// Computes and validates the engine state for `hc` on a node configured by `base`, with
/// `extra` SIDs from the API.
pub fn plan(
    base: &NodeConfig,
    hc: &HostConfig,
    extra: &BTreeMap<Ipv6Addr, SidConfig>,
) -> Result<Plan, PlanError> {
    hc.validate()?;
    for (i, l) in hc.local_vms.iter().enumerate() {
        let field = format!("local_vms[{i}] ({})", l.vm);
        let Some(v) = base.vms.iter().find(|v| v.name == l.vm.as_str()) else {
            return Err(mismatch(
                field,
                "VM has no attachment on this host (declare it with its port in the node config's [[vms]])",
            ));
        };
        if v.mac.0 != l.mac.0 {
            return Err(mismatch(
                field,
                format!("MAC {} differs from the node config's {}", l.mac, v.mac),
            ));
        }
        if let Some(a) = l.addresses.iter().find(|a| !v.addresses.contains(a)) {
            return Err(mismatch(
                field,
                format!("address {a} is not one of the node config's addresses for this VM"),
            ));
        }
    }
    let (policies, mappings) = mapping_plan(base, &hc.mappings)?;
    let mut sids: BTreeMap<Ipv6Addr, SidConfig> =
        base.sids.iter().map(|s| (s.sid, s.clone())).collect();
    // Host-config entries grouped by SID (validate() guarantees one behavior per SID).
    let mut groups: BTreeMap<Ipv6Addr, Vec<(usize, &SidEntry)>> = BTreeMap::new();
    for (i, s) in hc.sids.iter().enumerate() {
        groups.entry(s.sid()).or_default().push((i, s));
    }
    for (sid, entries) in groups {
        let mut vms = Vec::new();
        let mut mode = None;
        for (i, e) in &entries {
            if let Some(vm) = e.vm() {
                if !base.vms.iter().any(|v| v.name == vm.as_str()) {
                    return Err(mismatch(
                        format!("sids[{i}] ({sid})"),
                        format!("VM {vm} has no attachment on this host"),
                    ));
                }
                vms.push(vm.as_str().to_owned());
            }
            if let SidEntry::EndSbuf { mode: m, .. } = e {
                if mode.is_some_and(|prev| prev != *m) {
                    return Err(mismatch(
                        format!("sids[{i}] ({sid})"),
                        "End.SBUF entries of one SID must share one mode",
                    ));
                }
                mode = Some(*m);
            }
        }
        let behavior = match entries.first().map(|(_, e)| *e) {
            Some(SidEntry::EndS { .. }) => Behavior::EndS,
            Some(SidEntry::EndSbuf { .. }) => Behavior::EndSbuf,
            Some(SidEntry::EndDt46 { .. }) => Behavior::EndDt46,
            _ => Behavior::EndDt6,
        };
        let mut cfg = SidConfig::new(sid, behavior);
        if matches!(behavior, Behavior::EndS | Behavior::EndSbuf) && vms.len() == 1 {
            cfg.vm = vms.pop();
        }
        cfg.mode = mode.map(sbuf_mode);
        sids.insert(sid, cfg);
    }
    for (sid, cfg) in extra {
        sids.insert(*sid, cfg.clone());
    }
    let plan = Plan {
        policies,
        mappings: mappings.into_iter().collect(),
        sids,
    };
    // The engine's own validation, on a scratch instance without packet storage.
    Dataplane::validate(plan.merged(base)).map_err(|e| PlanError::Refused(e.to_string()))?;
    Ok(plan)
}

/// Policies and (prefix, target) mappings: what [`mapping_plan`] makes.
pub type MappingPlan = (Vec<PolicyConfig>, Vec<(IpNet, String)>);

/// The engine policies and (prefix, target) mappings for `mappings`: one policy
/// `vm:<name>` per encapsulated VM (signed with the node's `migration_hmac_key`, if set),
/// `native` for a VM attached here.
pub fn mapping_plan(
    base: &NodeConfig,
    mappings_in: &[srmig_api::Mapping],
) -> Result<MappingPlan, PlanError> {
    let mut policies = Vec::new();
    let mut mappings = Vec::new();
    for m in mappings_in {
        let target = match &m.steering {
            srmig_api::Steering::Native => "native".to_owned(),
            srmig_api::Steering::Encaps(e) => {
                let name = format!("{POLICY_PREFIX}{}", m.vm);
                if base.policies.iter().any(|p| p.name == name) {
                    return Err(mismatch(
                        format!("mappings ({})", m.vm),
                        format!("policy name \"{name}\" is taken by the node config"),
                    ));
                }
                policies.push(PolicyConfig {
                    name: name.clone(),
                    headend: headend(e.headend),
                    segments: e.segments.clone(),
                    hop_limit: None,
                    flow_label: FlowLabelMode::Hash,
                    hmac_key: base.migration_hmac_key,
                });
                name
            }
        };
        for a in &m.addresses {
            mappings.push((IpNet::from(*a), target.clone()));
        }
    }
    Ok((policies, mappings))
}

impl Plan {
    /// The plan merged into the node config, as one configuration.
    pub fn merged(&self, base: &NodeConfig) -> NodeConfig {
        let mut cfg = base.clone();
        cfg.policies.extend(self.policies.iter().cloned());
        cfg.sids = self.sids.values().cloned().collect();
        cfg.mappings
            .extend(self.mappings.iter().map(|(p, t)| MappingConfig {
                vm_address: *p,
                policy: t.clone(),
            }));
        cfg
    }

    /// The plan of a node without host config: the node config plus API SIDs.
    pub fn base_only(base: &NodeConfig, extra: &BTreeMap<Ipv6Addr, SidConfig>) -> Plan {
        let mut sids: BTreeMap<Ipv6Addr, SidConfig> =
            base.sids.iter().map(|s| (s.sid, s.clone())).collect();
        for (sid, cfg) in extra {
            sids.insert(*sid, cfg.clone());
        }
        Plan {
            policies: Vec::new(),
            mappings: BTreeMap::new(),
            sids,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{base, hc};

    #[test]
    fn translates_mappings_and_sids() {
        let p = plan(&base(), &hc(1), &BTreeMap::new()).expect("plan");
        assert_eq!(p.policies.len(), 1);
        assert_eq!(p.policies[0].name, "vm:far1");
        assert_eq!(p.policies[0].headend, Headend::HEncaps);
        assert_eq!(p.mappings.len(), 2);
        assert!(p
            .mappings
            .get(&"2001:db8:a::30/128".parse().expect("net"))
            .is_some_and(|t| t == "vm:far1"));
        assert!(p
            .mappings
            .get(&"2001:db8:a::10/128".parse().expect("net"))
            .is_some_and(|t| t == "native"));
        let s = |a: &str| p.sids[&a.parse::<Ipv6Addr>().expect("addr")].clone();
        assert_eq!(s("fc00:0:1::d6").behavior, Behavior::EndDt6);
        // One VM at the End.S SID: the VM is the parameter.
        assert_eq!(s("fc00:0:1::e5").vm.as_deref(), Some("web1"));
        // Two VMs at the End.SBUF SID: the inner destination selects.
        let sbuf = s("fc00:0:1::eb");
        assert_eq!(sbuf.behavior, Behavior::EndSbuf);
        assert_eq!(sbuf.vm, None);
        assert_eq!(sbuf.mode, Some(SbufMode::Buffer));
    }

    #[test]
    fn sr_paths_are_signed_with_the_migration_key() {
        let mut base = base();
        assert_eq!(
            plan(&base, &hc(1), &BTreeMap::new())
                .expect("plan")
                .policies[0]
                .hmac_key,
            None
        );
        base.hmac_keys.push(srmig_dataplane::HmacKeyConfig {
            id: 7,
            algorithm: srmig_dataplane::HmacAlgorithm::HmacSha256,
            secret_file: "hmac-7.key".into(),
            secret: srmig_dataplane::HmacSecret::new(b"s3cret".to_vec()),
        });
        base.migration_hmac_key = Some(7);
        let p = plan(&base, &hc(1), &BTreeMap::new()).expect("plan");
        assert_eq!(p.policies[0].name, "vm:far1");
        assert_eq!(p.policies[0].hmac_key, Some(7));
        // A signed SRH holds at most 9 segments: a longer path is refused, naming the policy.
        let mut h = hc(1);
        let srmig_api::Steering::Encaps(e) = &mut h.mappings[1].steering else {
            panic!("far1 is encapsulated");
        };
        e.segments = (1..=10u16)
            .map(|i| Ipv6Addr::new(0xfc00, 0, 2, 0, 0, 0, 0, i))
            .collect();
        let err = plan(&base, &h, &BTreeMap::new()).expect_err("too long to sign");
        assert!(err.to_string().contains("hmac_key"), "{err}");
    }

    #[test]
    fn dual_stack_mappings_and_dt46() {
        let mut base = base();
        base.vms[0]
            .addresses
            .push("10.1.0.10".parse().expect("addr"));
        let mut h = hc(1);
        h.mappings[0]
            .addresses
            .push("10.1.0.10".parse().expect("addr"));
        h.mappings[1]
            .addresses
            .push("10.1.0.30".parse().expect("addr"));
        h.local_vms[0]
            .addresses
            .push("10.1.0.10".parse().expect("addr"));
        h.sids[0] = SidEntry::EndDt46 {
            sid: "fc00:0:1::d6".parse().expect("addr"),
        };
        let p = plan(&base, &h, &BTreeMap::new()).expect("plan");
        assert!(p
            .mappings
            .get(&"10.1.0.30/32".parse().expect("net"))
            .is_some_and(|t| t == "vm:far1"));
        assert!(p
            .mappings
            .get(&"10.1.0.10/32".parse().expect("net"))
            .is_some_and(|t| t == "native"));
        let dt46 = &p.sids[&"fc00:0:1::d6".parse::<Ipv6Addr>().expect("addr")];
        assert_eq!(dt46.behavior, Behavior::EndDt46);
        assert_eq!(dt46.vm, None);
        // An IPv4 address the node config does not give the VM is refused.
        h.local_vms[0]
            .addresses
            .push("10.1.0.99".parse().expect("addr"));
        let e = plan(&base, &h, &BTreeMap::new()).expect_err("foreign address");
        assert!(e.to_string().contains("10.1.0.99"), "{e}");
    }

    #[test]
    fn unknown_local_vm_is_refused_with_its_field() {
        let mut h = hc(1);
        h.local_vms[0].vm = srmig_api::VmId::new("ghost").expect("name");
        let e = plan(&base(), &h, &BTreeMap::new()).expect_err("ghost");
        assert!(e.to_string().starts_with("local_vms[0] (ghost):"), "{e}");
        let mut h = hc(1);
        h.local_vms[0].mac = "52:54:00:00:00:99".parse().expect("mac");
        let e = plan(&base(), &h, &BTreeMap::new()).expect_err("mac");
        assert!(e.to_string().contains("MAC"), "{e}");
    }

    #[test]
    fn sid_outside_locator_is_refused_by_the_engine() {
        let mut h = hc(1);
        h.sids.push(SidEntry::EndDt6 {
            sid: "fc00:0:9::d6".parse().expect("addr"),
        });
        let e = plan(&base(), &h, &BTreeMap::new()).expect_err("outside");
        assert!(matches!(e, PlanError::Refused(_)), "{e}");
    }

    #[test]
    fn mixed_sbuf_modes_are_refused() {
        let mut h = hc(1);
        if let Some(SidEntry::EndSbuf { mode, .. }) = h.sids.last_mut() {
            *mode = srmig_api::SbufMode::Drop;
        }
        let e = plan(&base(), &h, &BTreeMap::new()).expect_err("modes");
        assert!(e.to_string().contains("one mode"), "{e}");
    }

    #[test]
    fn api_sids_override() {
        let mut extra = BTreeMap::new();
        let sid: Ipv6Addr = "fc00:0:1::d6".parse().expect("addr");
        let mut c = SidConfig::new(sid, Behavior::EndDt6);
        c.table = Some(0);
        extra.insert(sid, c.clone());
        let p = plan(&base(), &hc(1), &extra).expect("plan");
        assert_eq!(p.sids[&sid], c);
        let b = Plan::base_only(&base(), &extra);
        assert_eq!(b.sids[&sid], c);
        assert!(b.mappings.is_empty());
    }
}
