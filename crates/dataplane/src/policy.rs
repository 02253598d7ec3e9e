//! SR policies with precomputed headend rewrites, and the ingress mapping (destination ->
//! steering) used for traffic from local VMs.
//!
//! A policy's rewrite is built once at install time: for H.Encaps / H.Encaps.Red the outer IPv6
//! header followed by the SRH; for H.Insert the SRH alone, with Segment List\[0\] left for the
//! original destination. The fast path copies these bytes into the packet's headroom and patches
//! Payload Length, Next Header, Traffic Class, Flow Label (and, for H.Insert, Segment List\[0\]).
//! A policy with `hmac_key` has its HMAC TLV, HMAC included, in the rewrite (see `crate::hmac`).

use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;

use crate::batch::HEADROOM;
use crate::behavior::Headend;
use crate::config::{ConfigError, FlowLabelMode, PolicyConfig};
use crate::fib::Lpm;
use crate::hmac::{self, HmacTable};
use srmig_wire::{ethernet, ipv6, srh, IpProtocol};

/// Index of an SR policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PolicyId(pub u32);

impl PolicyId {
    /// The index as `usize`.
    #[inline]
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// How traffic from a local VM to a destination is steered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Steering {
    /// Plain FIB forwarding (hop limit decremented).
    Native,
    /// Apply this SR policy's headend behavior.
    Policy(PolicyId),
}

/// Maximum segments in a policy (the SRH of H.Insert holds one more).
pub const MAX_SEGMENTS: usize = 12;

/// Maximum segments in a policy with an HMAC key: its rewrite (IPv6 40 + SRH 8 + 16 per
/// segment + HMAC TLV 40) and the Ethernet header must fit [`HEADROOM`].
pub const MAX_HMAC_SEGMENTS: usize =
    (HEADROOM - ethernet::HEADER_LEN - ipv6::HEADER_LEN - srh::FIXED_LEN - srh::HMAC_TLV_LEN)
        / srh::SEGMENT_LEN;

/// Default outer hop limit.
pub const DEFAULT_HOP_LIMIT: u8 = 64;

/// An installed policy.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub(crate) name: String,
    pub(crate) headend: Headend,
    pub(crate) segments: Vec<Ipv6Addr>,
    pub(crate) flow_label: FlowLabelMode,
    /// The precomputed bytes (see the module docs).
    pub(crate) rewrite: Vec<u8>,
    /// Offset of the SRH inside `rewrite`, if there is one.
    pub(crate) srh_offset: Option<usize>,
    /// Whether the policy is installed (removed policies keep their id until replaced).
    pub(crate) active: bool,
}

impl Policy {
    /// Marks a removed policy's slot free and lets go of its segments and rewrite.
    pub(crate) fn retire(&mut self) {
        self.active = false;
        self.name = String::new();
        self.segments = Vec::new();
        self.rewrite = Vec::new();
        self.srh_offset = None;
    }

    /// Validates `cfg` (field path prefix `path`) and precomputes its rewrite.
    pub(crate) fn build(
        path: &str,
        cfg: &PolicyConfig,
        source: Ipv6Addr,
        keys: &HmacTable,
    ) -> Result<Policy, ConfigError> {
        if cfg.name.is_empty() || cfg.name == "native" {
            return Err(ConfigError::invalid(
                format!("{path}.name"),
                format!("\"{}\" is not a valid policy name", cfg.name),
            ));
        }
        if cfg.segments.is_empty() {
            return Err(ConfigError::invalid(
                format!("{path}.segments"),
                "a policy needs at least one segment",
            ));
        }
        if cfg.segments.len() > MAX_SEGMENTS {
            return Err(ConfigError::invalid(
                format!("{path}.segments"),
                format!(
                    "{} segments, at most {MAX_SEGMENTS} are supported",
                    cfg.segments.len()
                ),
            ));
        }
        for (i, s) in cfg.segments.iter().enumerate() {
            if s.is_multicast() || s.is_unspecified() || s.is_loopback() {
                return Err(ConfigError::invalid(
                    format!("{path}.segments[{i}]"),
                    format!("{s} is not a unicast SID"),
                ));
            }
        }
        if cfg.hop_limit == Some(0) {
            return Err(ConfigError::invalid(
                format!("{path}.hop_limit"),
                "must be at least 1",
            ));
        }
        let key = match cfg.hmac_key {
            None => None,
            Some(_) if cfg.headend == Headend::HInsert => {
                return Err(ConfigError::invalid(
                    format!("{path}.hmac_key"),
                    "H.Insert cannot carry an HMAC (it would be computed per packet over the \
                     original source and destination); use H.Encaps or H.Encaps.Red",
                ))
            }
            Some(id) => Some(keys.key(id).ok_or_else(|| {
                ConfigError::invalid(
                    format!("{path}.hmac_key"),
                    format!("no key with id {id} in [[hmac_keys]]"),
                )
            })?),
        };
        let hop_limit = cfg.hop_limit.unwrap_or(DEFAULT_HOP_LIMIT);
        let segs = &cfg.segments;
        let n = segs.len();
        let (rewrite, srh_offset) = match cfg.headend {
            Headend::HEncaps => {
                let mut v = ipv6_header(source, segs[0], hop_limit, IpProtocol::ROUTING);
                emit_srh(&mut v, segs.iter().rev(), (n - 1) as u8);
                if let Some(k) = key {
                    hmac::sign_rewrite(&mut v, ipv6::HEADER_LEN, k, false);
                }
                (v, Some(ipv6::HEADER_LEN))
            }
            Headend::HEncapsRed if n == 1 && key.is_some() => {
                // No reduced list can hold zero segments: an SRH with the one SID carries the
                // HMAC TLV (the DA is Segment List[0], so the D flag stays clear).
                let mut v = ipv6_header(source, segs[0], hop_limit, IpProtocol::ROUTING);
                emit_srh(&mut v, segs.iter(), 0);
                if let Some(k) = key {
                    hmac::sign_rewrite(&mut v, ipv6::HEADER_LEN, k, false);
                }
                (v, Some(ipv6::HEADER_LEN))
            }
            Headend::HEncapsRed => {
                // RFC 8986 5.2: the first SID is only in the DA; SL stays n-1, Last Entry n-2.
                if n == 1 {
                    // Next Header patched per packet (41 or 4).
                    (ipv6_header(source, segs[0], hop_limit, IpProtocol(0)), None)
                } else {
                    let mut v = ipv6_header(source, segs[0], hop_limit, IpProtocol::ROUTING);
                    emit_srh(&mut v, segs[1..].iter().rev(), (n - 1) as u8);
                    if let Some(k) = key {
                        // The DA (the first SID) is not in the list: D flag set (RFC 8754 2.1.2).
                        hmac::sign_rewrite(&mut v, ipv6::HEADER_LEN, k, true);
                    }
                    (v, Some(ipv6::HEADER_LEN))
                }
            }
            Headend::HInsert => {
                // Segment List[0] = original DA (patched per packet), then the policy reversed.
                let mut v = Vec::new();
                let placeholder = Ipv6Addr::UNSPECIFIED;
                emit_srh(
                    &mut v,
                    core::iter::once(&placeholder).chain(segs.iter().rev()),
                    n as u8,
                );
                (v, Some(0))
            }
        };
        // The rewrite and the Ethernet header go in front of the packet.
        if key.is_some() && rewrite.len() + ethernet::HEADER_LEN > HEADROOM {
            return Err(ConfigError::invalid(
                format!("{path}.segments"),
                format!(
                    "{n} segments and an HMAC TLV do not fit the {HEADROOM}-byte headroom \
                     (at most {} segments with hmac_key)",
                    MAX_HMAC_SEGMENTS
                ),
            ));
        }
        // The reserve for the longest list is not kept: a data center's hosts hold a policy
        // per remote VM.
        let mut rewrite = rewrite;
        rewrite.shrink_to_fit();
        Ok(Policy {
            name: cfg.name.clone(),
            headend: cfg.headend,
            segments: cfg.segments.clone(),
            flow_label: cfg.flow_label,
            rewrite,
            srh_offset,
            active: true,
        })
    }
}

/// A 40-byte IPv6 header with zero payload length, traffic class and flow label.
fn ipv6_header(src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8, next_header: IpProtocol) -> Vec<u8> {
    let mut v = vec![0; ipv6::HEADER_LEN];
    v.reserve(srh::FIXED_LEN + srh::SEGMENT_LEN * (MAX_SEGMENTS + 1));
    ipv6::emit_header(&mut v, src, dst, next_header, 0, hop_limit);
    v
}

/// Appends an SRH (RFC 8754 section 2, [`srh::emit_srh`]) holding `list` as Segment
/// List\[0..\] (already reversed), with the given Segments Left; Next Header is left 0
/// (patched per packet).
fn emit_srh<'a>(v: &mut Vec<u8>, list: impl Iterator<Item = &'a Ipv6Addr>, sl: u8) {
    let list: Vec<Ipv6Addr> = list.copied().collect();
    let at = v.len();
    v.resize(at + srh::FIXED_LEN + srh::SEGMENT_LEN * list.len(), 0);
    let n = srh::emit_srh(&mut v[at..], IpProtocol(0), sl, 0, &list);
    // Only fails for an empty or too long list, which Policy::build has refused.
    debug_assert_eq!(n, v.len() - at);
    v.truncate(at + n);
}

/// Destination -> steering, exact entries first (they are the longest prefixes).
#[derive(Debug, Clone, Default)]
pub(crate) struct MappingTable {
    pub(crate) v6: Lpm<Steering, 128>,
    pub(crate) v4: Lpm<Steering, 32>,
}

impl MappingTable {
    /// The policies the prefix mappings (not the /128s of the VM table) steer into (one per
    /// mapping).
    pub(crate) fn policies_used(&self) -> impl Iterator<Item = PolicyId> + '_ {
        self.v6
            .iter()
            .chain(self.v4.iter())
            .filter_map(|(_, _, s)| match s {
                Steering::Policy(p) => Some(p),
                Steering::Native => None,
            })
    }

    pub(crate) fn with_hasher(h: crate::hash::AddrHash) -> MappingTable {
        MappingTable {
            v6: Lpm::with_hasher(h),
            v4: Lpm::with_hasher(h),
        }
    }

    pub(crate) fn set(&mut self, prefix: IpNet, s: Steering) {
        match prefix {
            IpNet::V6(p) => {
                self.v6.insert(u128::from(p.network()), p.prefix_len(), s);
            }
            IpNet::V4(p) => {
                self.v4
                    .insert(u128::from(u32::from(p.network())), p.prefix_len(), s);
            }
        }
    }

    pub(crate) fn remove(&mut self, prefix: IpNet) -> Option<Steering> {
        match prefix {
            IpNet::V6(p) => self.v6.remove(u128::from(p.network()), p.prefix_len()),
            IpNet::V4(p) => self
                .v4
                .remove(u128::from(u32::from(p.network())), p.prefix_len()),
        }
    }

    /// The entry of exactly `prefix`.
    pub(crate) fn lookup_exact(&self, prefix: IpNet) -> Option<Steering> {
        match prefix {
            IpNet::V6(p) => self.v6.get_exact(u128::from(p.network()), p.prefix_len()),
            IpNet::V4(p) => self
                .v4
                .get_exact(u128::from(u32::from(p.network())), p.prefix_len()),
        }
    }

    /// The steering of the longest prefix holding `dst`.
    pub(crate) fn lookup(&self, dst: IpAddr) -> Option<Steering> {
        match dst {
            IpAddr::V6(a) => self.v6.lookup(u128::from(a)).map(|(_, s)| s),
            IpAddr::V4(a) => self.v4.lookup(u128::from(u32::from(a))).map(|(_, s)| s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn cfg(headend: Headend, segs: &[&str]) -> PolicyConfig {
        PolicyConfig {
            name: "p".into(),
            headend,
            segments: segs.iter().map(|s| a(s)).collect(),
            hop_limit: None,
            flow_label: FlowLabelMode::Hash,
            hmac_key: None,
        }
    }

    #[test]
    fn h_encaps_rewrite_golden() {
        let p = Policy::build(
            "policies[0]",
            &cfg(Headend::HEncaps, &["fc00:0:1::e5", "fc00:0:2::5b"]),
            a("fc00:0:3::1"),
            &HmacTable::default(),
        )
        .unwrap();
        let r = &p.rewrite;
        assert_eq!(r.len(), 40 + 8 + 32);
        assert_eq!(r[0], 0x60);
        assert_eq!(r[6], 43);
        assert_eq!(r[7], 64);
        assert_eq!(&r[8..24], &a("fc00:0:3::1").octets());
        assert_eq!(&r[24..40], &a("fc00:0:1::e5").octets());
        // SRH: hdr ext len 4, type 4, SL 1, LE 1
        assert_eq!(&r[40..48], &[0, 4, 4, 1, 1, 0, 0, 0]);
        assert_eq!(&r[48..64], &a("fc00:0:2::5b").octets());
        assert_eq!(&r[64..80], &a("fc00:0:1::e5").octets());
        assert_eq!(p.srh_offset, Some(40));
    }

    #[test]
    fn h_encaps_red_rewrite() {
        let p = Policy::build(
            "p",
            &cfg(Headend::HEncapsRed, &["fc00:0:1::e5", "fc00:0:2::5b"]),
            a("fc00::1"),
            &HmacTable::default(),
        )
        .unwrap();
        assert_eq!(p.rewrite.len(), 40 + 8 + 16);
        // SL 1, LE 0
        assert_eq!(&p.rewrite[40..48], &[0, 2, 4, 1, 0, 0, 0, 0]);
        assert_eq!(&p.rewrite[48..64], &a("fc00:0:2::5b").octets());
        let one = Policy::build(
            "p",
            &cfg(Headend::HEncapsRed, &["fc00:0:2::5b"]),
            a("fc00::1"),
            &HmacTable::default(),
        )
        .unwrap();
        assert_eq!(one.rewrite.len(), 40);
        assert_eq!(one.srh_offset, None);
    }

    #[test]
    fn h_insert_rewrite() {
        let p = Policy::build(
            "p",
            &cfg(Headend::HInsert, &["fc00:0:1::e5", "fc00:0:2::5b"]),
            a("fc00::1"),
            &HmacTable::default(),
        )
        .unwrap();
        assert_eq!(p.rewrite.len(), 8 + 48);
        assert_eq!(&p.rewrite[0..8], &[0, 6, 4, 2, 2, 0, 0, 0]);
        assert_eq!(&p.rewrite[8..24], &[0; 16]);
        assert_eq!(&p.rewrite[24..40], &a("fc00:0:2::5b").octets());
        assert_eq!(&p.rewrite[40..56], &a("fc00:0:1::e5").octets());
    }

    #[test]
    fn validation_names_fields() {
        let e = Policy::build(
            "policies[3]",
            &cfg(Headend::HEncaps, &[]),
            a("fc00::1"),
            &HmacTable::default(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "policies[3].segments: a policy needs at least one segment"
        );
        let e = Policy::build(
            "policies[0]",
            &cfg(Headend::HEncaps, &["ff02::1"]),
            a("fc00::1"),
            &HmacTable::default(),
        )
        .unwrap_err();
        assert_eq!(e.path(), "policies[0].segments[0]");
        let mut c = cfg(Headend::HEncaps, &["fc00::2"]);
        c.name = "native".into();
        assert!(Policy::build("policies[0]", &c, a("fc00::1"), &HmacTable::default()).is_err());
    }

    #[test]
    fn mapping_exact_beats_prefix() {
        let mut m = MappingTable::default();
        m.set("2001:db8::/32".parse().unwrap(), Steering::Native);
        m.set(
            "2001:db8::10/128".parse().unwrap(),
            Steering::Policy(PolicyId(1)),
        );
        m.set("10.0.0.0/8".parse().unwrap(), Steering::Policy(PolicyId(2)));
        assert_eq!(
            m.lookup("2001:db8::10".parse().unwrap()),
            Some(Steering::Policy(PolicyId(1)))
        );
        assert_eq!(
            m.lookup("2001:db8::11".parse().unwrap()),
            Some(Steering::Native)
        );
        assert_eq!(
            m.lookup("10.1.1.1".parse().unwrap()),
            Some(Steering::Policy(PolicyId(2)))
        );
        assert_eq!(m.lookup("2001:db9::1".parse().unwrap()), None);
        assert_eq!(
            m.remove("2001:db8::10/128".parse().unwrap()),
            Some(Steering::Policy(PolicyId(1)))
        );
        assert_eq!(
            m.lookup("2001:db8::10".parse().unwrap()),
            Some(Steering::Native)
        );
    }
}
