//! The desired forwarding state the controller pushes to each srmigd, and its acknowledgement.
//!
//! A [`HostConfig`] is complete (not a delta): the host replaces its whole VM mapping, local VM
//! set and SID table with it. Its version is the pair (`epoch`, `generation`), ordered
//! lexicographically: `epoch` is the controller store's epoch (it moves forward when a
//! controller starts on a new or lost store, or finds a host ahead of it, so no config a host
//! holds can lock the controller out), `generation` strictly increases per host within an
//! epoch. A host refuses a config older than the one it holds and answers every config it
//! applies (or already holds) with an [`Ack`], which also carries the host's boot epoch
//! (srmigd's, new at every start: the controller sends the full config again to a host whose
//! boot epoch changed).
//!
//! Contract for the data plane, which the controller relies on:
//! - a host applies a config atomically (no packet sees half of it);
//! - an ingress whose segment list starts with one of its own SIDs processes that SID locally
//!   (during a migration the source and the destination are ingresses too and use the same
//!   `S::End.S -> D::End.SBUF` path as everyone else);
//! - an [`Ack`] for generation `g` means "generation `g` or a later one is in force here".

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::ids::{HostId, MacAddr, VmId};

/// The highest epoch a config may carry. A controller's epoch is the time its store was made,
/// in milliseconds since the Unix epoch (about 2^41 today), plus one each time it overtakes a
/// version it never pushed; epochs above this are reserved: srmigd refuses a config carrying
/// one and the controller never moves to one, so no version can ever be out of a controller's
/// reach (a config at epoch `u64::MAX` would lock its host against every later push).
pub const MAX_EPOCH: u64 = 1 << 62;

/// The complete forwarding state one host must apply.
///
/// Golden JSON (host `h3` during an SR migration of `web1` from `h1` to `h2`, pretty-printed):
/// ```json
/// {"epoch":1700000000000,"generation":7,
///  "mappings":[{"vm":"web1","addresses":["2001:db8:a::10"],
///               "steering":{"encaps":{"segments":["fc00:1::e5","fc00:2::eb"],"headend":"H.Encaps"}}},
///              {"vm":"db1","addresses":["2001:db8:a::20"],"steering":"native"}],
///  "local_vms":[{"vm":"db1","addresses":["2001:db8:a::20"],"mac":"52:54:00:00:00:20"}],
///  "sids":[{"behavior":"End.DT6","sid":"fc00:3::d6"}]}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// `epoch`: the controller store's epoch (0 if absent); a config of a newer epoch
    /// replaces one of an older epoch whatever their generations. At most [`MAX_EPOCH`].
    #[serde(default)]
    pub epoch: u64,
    /// `generation`: strictly increasing per host within an epoch; acknowledged by
    /// [`Ack::generation`].
    pub generation: u64,
    /// `mappings`: how this host, as an ingress, reaches each VM (sorted by VM name).
    pub mappings: Vec<Mapping>,
    /// `local_vms`: the VMs this host must be ready to attach: the VMs mapped here, plus the
    /// VMs migrating to or from here while their migration is in progress (sorted by name).
    pub local_vms: Vec<LocalVm>,
    /// `sids`: the local SID table (the host's End.DT6 first, then per-VM End.S / End.SBUF
    /// entries sorted by VM name).
    pub sids: Vec<SidEntry>,
}

/// How an ingress reaches one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// `vm`: the VM.
    pub vm: VmId,
    /// `addresses`: the VM's addresses (IPv6 and IPv4): packets to any of them follow
    /// `steering` (an IPv4 packet is carried as the SRv6 payload with Next Header 4).
    pub addresses: Vec<IpAddr>,
    /// `steering`: what to do with those packets.
    pub steering: Steering,
    /// `fence` (optional, default `false`): `steering` is a migration's SR path. When a later
    /// config steers the VM otherwise (the commit), the ingress sends a commit-fence marker
    /// down this path as it switches (see `srmig_dataplane::fence`), so that the destination
    /// delivers what takes the new path after what took the old one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fence: bool,
}

/// What an ingress does with packets for a VM.
///
/// JSON: `"native"`, or `{"encaps": {"segments": [...], "headend": "H.Encaps"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Steering {
    /// The VM is attached to this host: deliver directly, no encapsulation.
    Native,
    /// Encapsulate towards a segment list; the VM's address stays the inner destination.
    Encaps(Encaps),
}

/// An encapsulation policy: segment list and headend behavior.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Encaps {
    /// `segments`: the SIDs to visit, first to last (the first is the outer destination
    /// address; the packet's own destination, the VM, is carried inside). Never empty.
    pub segments: Vec<Ipv6Addr>,
    /// `headend`: the headend behavior (RFC 8986 spelling).
    pub headend: Headend,
}

/// SRv6 headend behaviors (RFC 8986 section 5), spelled as in the RFC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Headend {
    /// `"H.Encaps"`: outer IPv6 header plus an SRH holding every segment.
    #[serde(rename = "H.Encaps")]
    HEncaps,
    /// `"H.Encaps.Red"`: like H.Encaps, without the first segment in the SRH.
    #[serde(rename = "H.Encaps.Red")]
    HEncapsRed,
}

impl fmt::Display for Headend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Headend::HEncaps => "H.Encaps",
            Headend::HEncapsRed => "H.Encaps.Red",
        })
    }
}

/// A VM a host must be ready to attach (accept its frames, deliver to it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalVm {
    /// `vm`: the VM.
    pub vm: VmId,
    /// `addresses`: the only source addresses accepted from the VM (IPv6 and IPv4).
    pub addresses: Vec<IpAddr>,
    /// `mac`: the VM's MAC address.
    pub mac: MacAddr,
}

/// What End.SBUF does with a packet while the VM does not run on its host yet.
///
/// JSON: `"buffer"` or `"drop"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SbufMode {
    /// Hold the packet in the VM's bounded buffer; release in order when the VM resumes here.
    Buffer,
    /// Drop the packet (the paper's comparison variant), counting it.
    Drop,
}

impl fmt::Display for SbufMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SbufMode::Buffer => "buffer",
            SbufMode::Drop => "drop",
        })
    }
}

/// One entry of a host's local SID table.
///
/// JSON: an object whose `behavior` field (RFC spelling) selects the other fields:
/// `{"behavior":"End.DT6","sid":"..."}`, `{"behavior":"End.DT46","sid":"..."}`,
/// `{"behavior":"End.S","sid":"...","vm":"..."}`,
/// `{"behavior":"End.SBUF","sid":"...","vm":"...","mode":"buffer"}`.
/// Several End.S (or End.SBUF) entries may share one SID, one per VM migrating: the behavior
/// then applies to packets whose inner destination is one of those VMs' addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "behavior", deny_unknown_fields)]
pub enum SidEntry {
    /// End.DT6: decapsulate, deliver to the local VM owning the inner destination.
    #[serde(rename = "End.DT6")]
    EndDt6 {
        /// `sid`: the SID.
        sid: Ipv6Addr,
    },
    /// End.DT46: decapsulate an IPv6 or IPv4 packet, deliver to the local VM owning the
    /// inner destination (the host's decapsulation SID once a VM has an IPv4 address).
    #[serde(rename = "End.DT46")]
    EndDt46 {
        /// `sid`: the SID.
        sid: Ipv6Addr,
    },
    /// End.S: deliver to `vm` if its attachment is up here, otherwise go to the next segment.
    #[serde(rename = "End.S")]
    EndS {
        /// `sid`: the SID.
        sid: Ipv6Addr,
        /// `vm`: the VM migrating away from this host.
        vm: VmId,
    },
    /// End.SBUF: deliver to `vm` if it runs here, otherwise buffer or drop per `mode`.
    #[serde(rename = "End.SBUF")]
    EndSbuf {
        /// `sid`: the SID.
        sid: Ipv6Addr,
        /// `vm`: the VM migrating to this host.
        vm: VmId,
        /// `mode`: buffer or drop while the VM is not running here.
        mode: SbufMode,
    },
}

impl SidEntry {
    /// The entry's SID.
    pub fn sid(&self) -> Ipv6Addr {
        match self {
            SidEntry::EndDt6 { sid }
            | SidEntry::EndDt46 { sid }
            | SidEntry::EndS { sid, .. }
            | SidEntry::EndSbuf { sid, .. } => *sid,
        }
    }

    /// The VM the entry is for, if it is a per-VM behavior.
    pub fn vm(&self) -> Option<&VmId> {
        match self {
            SidEntry::EndDt6 { .. } | SidEntry::EndDt46 { .. } => None,
            SidEntry::EndS { vm, .. } | SidEntry::EndSbuf { vm, .. } => Some(vm),
        }
    }

    /// The behavior's RFC spelling.
    pub fn behavior(&self) -> &'static str {
        match self {
            SidEntry::EndDt6 { .. } => "End.DT6",
            SidEntry::EndDt46 { .. } => "End.DT46",
            SidEntry::EndS { .. } => "End.S",
            SidEntry::EndSbuf { .. } => "End.SBUF",
        }
    }
}

/// Why a [`HostConfig`] cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostConfigError {
    /// A VM appears twice in `mappings` (or twice in `local_vms`).
    #[error("{field}: VM {vm} appears more than once")]
    DuplicateVm {
        /// `mappings` or `local_vms`.
        field: &'static str,
        /// The repeated VM.
        vm: VmId,
    },
    /// An address belongs to two mappings.
    #[error("mappings: address {addr} is claimed by both {first} and {second}")]
    DuplicateAddress {
        /// The shared address.
        addr: IpAddr,
        /// First VM claiming it.
        first: VmId,
        /// Second VM claiming it.
        second: VmId,
    },
    /// A mapping has no address, or an encapsulation has no segment.
    #[error("mappings: VM {vm} has an empty {what}")]
    Empty {
        /// The VM whose mapping is incomplete.
        vm: VmId,
        /// `addresses` or `segments`.
        what: &'static str,
    },
    /// One SID carries two different behaviors.
    #[error("sids: {sid} is both {first} and {second}")]
    SidConflict {
        /// The SID.
        sid: Ipv6Addr,
        /// First behavior.
        first: &'static str,
        /// Second behavior.
        second: &'static str,
    },
    /// The same (behavior, SID, VM) entry appears twice.
    #[error("sids: {behavior} {sid} for VM {vm} appears more than once")]
    DuplicateSidEntry {
        /// The behavior.
        behavior: &'static str,
        /// The SID.
        sid: Ipv6Addr,
        /// The VM.
        vm: VmId,
    },
}

impl Mapping {
    /// Checks the mapping on its own: at least one address, and at least one segment when it
    /// encapsulates.
    pub fn check(&self) -> Result<(), HostConfigError> {
        if self.addresses.is_empty() {
            return Err(HostConfigError::Empty {
                vm: self.vm.clone(),
                what: "addresses",
            });
        }
        if matches!(&self.steering, Steering::Encaps(e) if e.segments.is_empty()) {
            return Err(HostConfigError::Empty {
                vm: self.vm.clone(),
                what: "segments",
            });
        }
        Ok(())
    }
}

impl HostConfig {
    /// The mapping for `vm`, if any.
    pub fn mapping(&self, vm: &VmId) -> Option<&Mapping> {
        // Sorted by VM as the controller sends them; anything else is searched linearly.
        match self.mappings.binary_search_by(|m| m.vm.cmp(vm)) {
            Ok(at) => Some(&self.mappings[at]),
            Err(_) => self.mappings.iter().find(|m| &m.vm == vm),
        }
    }

    /// True if `vm` is in `local_vms`.
    pub fn is_local(&self, vm: &VmId) -> bool {
        self.local_vms.iter().any(|l| &l.vm == vm)
    }

    /// The version: (`epoch`, `generation`), compared lexicographically.
    pub fn version(&self) -> (u64, u64) {
        (self.epoch, self.generation)
    }

    /// True if both configs hold the same forwarding state (generations aside).
    pub fn same_state(&self, other: &HostConfig) -> bool {
        self.mappings == other.mappings
            && self.local_vms == other.local_vms
            && self.sids == other.sids
    }

    /// Checks internal consistency; srmigd refuses (and does not ack) a config that fails.
    pub fn validate(&self) -> Result<(), HostConfigError> {
        let mut vms = BTreeSet::new();
        let mut owners = std::collections::BTreeMap::new();
        for m in &self.mappings {
            if !vms.insert(&m.vm) {
                return Err(HostConfigError::DuplicateVm {
                    field: "mappings",
                    vm: m.vm.clone(),
                });
            }
            m.check()?;
            for addr in &m.addresses {
                if let Some(first) = owners.insert(*addr, &m.vm) {
                    if first != &m.vm {
                        return Err(HostConfigError::DuplicateAddress {
                            addr: *addr,
                            first: first.clone(),
                            second: m.vm.clone(),
                        });
                    }
                }
            }
        }
        let mut locals = BTreeSet::new();
        for l in &self.local_vms {
            if !locals.insert(&l.vm) {
                return Err(HostConfigError::DuplicateVm {
                    field: "local_vms",
                    vm: l.vm.clone(),
                });
            }
        }
        let mut behaviors = std::collections::BTreeMap::new();
        let mut entries = BTreeSet::new();
        for s in &self.sids {
            if let Some(first) = behaviors.insert(s.sid(), s.behavior()) {
                if first != s.behavior() {
                    return Err(HostConfigError::SidConflict {
                        sid: s.sid(),
                        first,
                        second: s.behavior(),
                    });
                }
            }
            if let Some(vm) = s.vm() {
                if !entries.insert((s.behavior(), s.sid(), vm)) {
                    return Err(HostConfigError::DuplicateSidEntry {
                        behavior: s.behavior(),
                        sid: s.sid(),
                        vm: vm.clone(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// A host's acknowledgement: generation `generation` of epoch `epoch` (or a later version) is
/// in force there, in the srmigd that started with boot epoch `boot_epoch`.
///
/// Golden JSON: `{"host":"h3","epoch":1700000000000,"generation":7,"boot_epoch":42}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    /// `host`: the acknowledging host.
    pub host: HostId,
    /// `epoch`: the epoch of the config now in force there (0 if absent).
    #[serde(default)]
    pub epoch: u64,
    /// `generation`: the generation now in force there.
    pub generation: u64,
    /// `boot_epoch`: the acknowledging srmigd's boot epoch (0 if absent).
    #[serde(default)]
    pub boot_epoch: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(s: &str) -> VmId {
        VmId::new(s).expect("name")
    }
    fn addr(s: &str) -> Ipv6Addr {
        s.parse().expect("addr")
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().expect("addr")
    }

    fn sample() -> HostConfig {
        HostConfig {
            epoch: 1_700_000_000_000,
            generation: 7,
            mappings: vec![
                Mapping {
                    vm: vm("web1"),
                    addresses: vec![ip("2001:db8:a::10")],
                    steering: Steering::Encaps(Encaps {
                        segments: vec![addr("fc00:1::e5"), addr("fc00:2::eb")],
                        headend: Headend::HEncaps,
                    }),
                    fence: false,
                },
                Mapping {
                    vm: vm("db1"),
                    addresses: vec![ip("2001:db8:a::20")],
                    steering: Steering::Native,
                    fence: false,
                },
            ],
            local_vms: vec![LocalVm {
                vm: vm("db1"),
                addresses: vec![ip("2001:db8:a::20")],
                mac: "52:54:00:00:00:20".parse().expect("mac"),
            }],
            sids: vec![SidEntry::EndDt6 {
                sid: addr("fc00:3::d6"),
            }],
        }
    }

    const GOLDEN: &str = concat!(
        r#"{"epoch":1700000000000,"generation":7,"mappings":[{"vm":"web1","addresses":["2001:db8:a::10"],"#,
        r#""steering":{"encaps":{"segments":["fc00:1::e5","fc00:2::eb"],"headend":"H.Encaps"}}},"#,
        r#"{"vm":"db1","addresses":["2001:db8:a::20"],"steering":"native"}],"#,
        r#""local_vms":[{"vm":"db1","addresses":["2001:db8:a::20"],"mac":"52:54:00:00:00:20"}],"#,
        r#""sids":[{"behavior":"End.DT6","sid":"fc00:3::d6"}]}"#
    );

    #[test]
    fn host_config_golden_json() {
        let json = serde_json::to_string(&sample()).expect("serialize");
        assert_eq!(json, GOLDEN);
        let back: HostConfig = serde_json::from_str(GOLDEN).expect("deserialize");
        assert_eq!(back, sample());
        back.validate().expect("sample is valid");
    }

    #[test]
    fn sid_entries_golden_json() {
        let cases = [
            (
                SidEntry::EndS {
                    sid: addr("fc00:1::e5"),
                    vm: vm("web1"),
                },
                r#"{"behavior":"End.S","sid":"fc00:1::e5","vm":"web1"}"#,
            ),
            (
                SidEntry::EndSbuf {
                    sid: addr("fc00:2::eb"),
                    vm: vm("web1"),
                    mode: SbufMode::Drop,
                },
                r#"{"behavior":"End.SBUF","sid":"fc00:2::eb","vm":"web1","mode":"drop"}"#,
            ),
        ];
        for (entry, golden) in cases {
            assert_eq!(serde_json::to_string(&entry).expect("serialize"), golden);
            assert_eq!(
                serde_json::from_str::<SidEntry>(golden).expect("deserialize"),
                entry
            );
        }
        // Field order does not matter on input.
        let reordered = r#"{"mode":"buffer","vm":"web1","sid":"fc00:2::eb","behavior":"End.SBUF"}"#;
        assert!(matches!(
            serde_json::from_str::<SidEntry>(reordered).expect("deserialize"),
            SidEntry::EndSbuf {
                mode: SbufMode::Buffer,
                ..
            }
        ));
    }

    #[test]
    fn sid_entries_refuse_missing_and_unknown_fields() {
        for bad in [
            r#"{"behavior":"End.SBUF","sid":"fc00:2::eb","vm":"web1"}"#,
            r#"{"behavior":"End.S","sid":"fc00:1::e5"}"#,
            r#"{"behavior":"End.DT6","sid":"fc00:3::d6","vm":"web1"}"#,
            r#"{"behavior":"End.X","sid":"fc00:3::d6"}"#,
            r#"{"sid":"fc00:3::d6"}"#,
        ] {
            assert!(
                serde_json::from_str::<SidEntry>(bad).is_err(),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn steering_refuses_unknown_variants_and_fields() {
        assert!(serde_json::from_str::<Steering>("\"Native\"").is_err());
        assert!(serde_json::from_str::<Steering>(
            r#"{"encaps":{"segments":["fc00:1::1"],"headend":"H.Encaps","x":1}}"#
        )
        .is_err());
        assert!(serde_json::from_str::<Steering>(
            r#"{"encaps":{"segments":["fc00:1::1"],"headend":"H.Insert"}}"#
        )
        .is_err());
        let red: Steering = serde_json::from_str(
            r#"{"encaps":{"segments":["fc00:1::1"],"headend":"H.Encaps.Red"}}"#,
        )
        .expect("H.Encaps.Red");
        assert!(matches!(
            red,
            Steering::Encaps(Encaps {
                headend: Headend::HEncapsRed,
                ..
            })
        ));
    }

    #[test]
    fn validate_catches_inconsistencies() {
        let mut c = sample();
        c.mappings[1].addresses = vec![ip("2001:db8:a::10")];
        assert!(matches!(
            c.validate(),
            Err(HostConfigError::DuplicateAddress { .. })
        ));

        let mut c = sample();
        c.mappings[1].vm = vm("web1");
        assert!(matches!(
            c.validate(),
            Err(HostConfigError::DuplicateVm {
                field: "mappings",
                ..
            })
        ));

        let mut c = sample();
        c.mappings[0].steering = Steering::Encaps(Encaps {
            segments: vec![],
            headend: Headend::HEncaps,
        });
        assert!(matches!(
            c.validate(),
            Err(HostConfigError::Empty {
                what: "segments",
                ..
            })
        ));

        let mut c = sample();
        c.sids.push(SidEntry::EndS {
            sid: addr("fc00:3::d6"),
            vm: vm("web1"),
        });
        assert!(matches!(
            c.validate(),
            Err(HostConfigError::SidConflict { .. })
        ));

        // Two VMs sharing one End.S SID is the normal case; the same VM twice is not.
        let mut c = sample();
        for name in ["web1", "db1"] {
            c.sids.push(SidEntry::EndS {
                sid: addr("fc00:3::e5"),
                vm: vm(name),
            });
        }
        c.validate().expect("one End.S SID shared by two VMs");
        c.sids.push(SidEntry::EndS {
            sid: addr("fc00:3::e5"),
            vm: vm("db1"),
        });
        assert!(matches!(
            c.validate(),
            Err(HostConfigError::DuplicateSidEntry { .. })
        ));
    }

    #[test]
    fn same_state_ignores_generation() {
        let a = sample();
        let mut b = sample();
        b.generation = 8;
        assert!(a.same_state(&b));
        b.sids.clear();
        assert!(!a.same_state(&b));
    }

    #[test]
    fn ack_golden_json() {
        let ack = Ack {
            host: HostId::new("h3").expect("name"),
            epoch: 1_700_000_000_000,
            generation: 7,
            boot_epoch: 42,
        };
        let golden = r#"{"host":"h3","epoch":1700000000000,"generation":7,"boot_epoch":42}"#;
        assert_eq!(serde_json::to_string(&ack).expect("serialize"), golden);
        assert_eq!(
            serde_json::from_str::<Ack>(golden).expect("deserialize"),
            ack
        );
        assert!(serde_json::from_str::<Ack>(r#"{"host":"h3"}"#).is_err());
        // An ack of a srmigd without epochs: both 0.
        let old = serde_json::from_str::<Ack>(r#"{"host":"h3","generation":7}"#).expect("old");
        assert_eq!((old.epoch, old.boot_epoch), (0, 0));
    }

    #[test]
    fn a_mapping_says_it_is_a_fenced_path_only_when_it_is() {
        let mut m = sample().mappings.remove(0);
        let plain = serde_json::to_string(&m).expect("json");
        assert!(!plain.contains("fence"), "{plain}");
        m.fence = true;
        let j = serde_json::to_string(&m).expect("json");
        assert!(
            j.ends_with(r#""headend":"H.Encaps"}},"fence":true}"#),
            "{j}"
        );
        assert_eq!(serde_json::from_str::<Mapping>(&j).expect("parse"), m);
    }
}
