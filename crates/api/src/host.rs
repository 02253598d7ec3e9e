//! Host registration: what srmigd tells the controller about itself.

use std::net::Ipv6Addr;

use ipnet::Ipv6Net;
use serde::{Deserialize, Serialize};

use crate::ids::HostId;

/// A host (one srmigd instance) as registered with the controller.
///
/// Golden JSON:
/// ```json
/// {"name":"h1","locator":"fc00:1::/48","sid_end_s":"fc00:1::e5",
///  "sid_end_sbuf":"fc00:1::eb","sid_dt6":"fc00:1::d6","underlay":"2001:db8:ff::1"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostInfo {
    /// `name`: the host's unique name.
    pub name: HostId,
    /// `locator`: the SRv6 locator prefix of the host (`"fc00:1::/48"`); the underlay routes
    /// it to the host. Every SID below must lie inside it.
    pub locator: Ipv6Net,
    /// `sid_end_s`: the host's End.S SID, active for the VMs migrating away from this host.
    pub sid_end_s: Ipv6Addr,
    /// `sid_end_sbuf`: the host's End.SBUF SID, active for the VMs migrating to this host.
    pub sid_end_sbuf: Ipv6Addr,
    /// `sid_dt6`: the host's End.DT6 SID: decapsulate and deliver to the local VM owning the
    /// inner destination address (steady-state delivery).
    pub sid_dt6: Ipv6Addr,
    /// `underlay`: the host's own address on the IPv6 underlay, used as the outer source
    /// address of the packets it encapsulates.
    pub underlay: Ipv6Addr,
}

/// Why a [`HostInfo`] is not acceptable on its own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostInfoError {
    /// A SID field lies outside the host's locator.
    #[error("{field} {sid} is outside the locator {locator}")]
    SidOutsideLocator {
        /// The offending field name (`sid_end_s`, `sid_end_sbuf` or `sid_dt6`).
        field: &'static str,
        /// The SID given.
        sid: Ipv6Addr,
        /// The host's locator.
        locator: Ipv6Net,
    },
    /// Two SID fields hold the same address.
    #[error("{first} and {second} are both {sid}; each behavior needs its own SID")]
    DuplicateSid {
        /// First field name.
        first: &'static str,
        /// Second field name.
        second: &'static str,
        /// The shared SID.
        sid: Ipv6Addr,
    },
    /// The underlay address lies inside the locator (the locator is for SIDs only).
    #[error("underlay {underlay} is inside the locator {locator}")]
    UnderlayInLocator {
        /// The underlay address given.
        underlay: Ipv6Addr,
        /// The host's locator.
        locator: Ipv6Net,
    },
    /// A SID or the underlay address is unspecified, loopback or multicast.
    #[error("{field} {addr} is not a unicast address")]
    NotUnicast {
        /// The offending field name.
        field: &'static str,
        /// The address given.
        addr: Ipv6Addr,
    },
}

impl HostInfo {
    /// The three SID fields with their JSON names.
    pub fn sids(&self) -> [(&'static str, Ipv6Addr); 3] {
        [
            ("sid_end_s", self.sid_end_s),
            ("sid_end_sbuf", self.sid_end_sbuf),
            ("sid_dt6", self.sid_dt6),
        ]
    }

    /// Checks the fields against each other (SIDs inside the locator, distinct, unicast).
    pub fn validate(&self) -> Result<(), HostInfoError> {
        let sids = self.sids();
        for (field, addr) in sids.iter().copied().chain([("underlay", self.underlay)]) {
            if addr.is_unspecified() || addr.is_loopback() || addr.is_multicast() {
                return Err(HostInfoError::NotUnicast { field, addr });
            }
        }
        for (field, sid) in sids {
            if !self.locator.contains(&sid) {
                return Err(HostInfoError::SidOutsideLocator {
                    field,
                    sid,
                    locator: self.locator,
                });
            }
        }
        for (i, (first, a)) in sids.iter().enumerate() {
            for (second, b) in &sids[i + 1..] {
                if a == b {
                    return Err(HostInfoError::DuplicateSid {
                        first,
                        second,
                        sid: *a,
                    });
                }
            }
        }
        if self.locator.contains(&self.underlay) {
            return Err(HostInfoError::UnderlayInLocator {
                underlay: self.underlay,
                locator: self.locator,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOLDEN: &str = r#"{"name":"h1","locator":"fc00:1::/48","sid_end_s":"fc00:1::e5","sid_end_sbuf":"fc00:1::eb","sid_dt6":"fc00:1::d6","underlay":"2001:db8:ff::1"}"#;

    fn addr(s: &str) -> Ipv6Addr {
        s.parse().expect("test address")
    }

    fn h1() -> HostInfo {
        HostInfo {
            name: HostId::new("h1").expect("name"),
            locator: "fc00:1::/48".parse().expect("prefix"),
            sid_end_s: addr("fc00:1::e5"),
            sid_end_sbuf: addr("fc00:1::eb"),
            sid_dt6: addr("fc00:1::d6"),
            underlay: addr("2001:db8:ff::1"),
        }
    }

    #[test]
    fn golden_json() {
        assert_eq!(serde_json::to_string(&h1()).expect("serialize"), GOLDEN);
        let back: HostInfo = serde_json::from_str(GOLDEN).expect("deserialize");
        assert_eq!(back, h1());
        back.validate().expect("golden host is valid");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let json = GOLDEN.replace("}", r#","extra":1}"#);
        let err = serde_json::from_str::<HostInfo>(&json).expect_err("extra field");
        assert!(err.to_string().contains("unknown field `extra`"), "{err}");
    }

    #[test]
    fn validation_names_the_field() {
        let mut h = h1();
        h.sid_end_sbuf = addr("fc00:2::eb");
        assert_eq!(
            h.validate(),
            Err(HostInfoError::SidOutsideLocator {
                field: "sid_end_sbuf",
                sid: addr("fc00:2::eb"),
                locator: h.locator,
            })
        );
        let mut h = h1();
        h.sid_dt6 = h.sid_end_s;
        assert!(matches!(
            h.validate(),
            Err(HostInfoError::DuplicateSid {
                first: "sid_end_s",
                second: "sid_dt6",
                ..
            })
        ));
        let mut h = h1();
        h.underlay = addr("fc00:1::1");
        assert!(matches!(
            h.validate(),
            Err(HostInfoError::UnderlayInLocator { .. })
        ));
        let mut h = h1();
        h.underlay = Ipv6Addr::UNSPECIFIED;
        assert!(matches!(
            h.validate(),
            Err(HostInfoError::NotUnicast {
                field: "underlay",
                ..
            })
        ));
    }
}
