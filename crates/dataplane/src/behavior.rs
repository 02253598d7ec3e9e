//! The declarative behavior table: every SRv6 endpoint behavior the engine implements, with its
//! RFC spelling, required and optional parameters and allowed flavors, like the `seg6_action_table`
//! of Linux `net/ipv6/seg6_local.c`. A SID's configuration is checked against this table once,
//! when the SID is installed ([`crate::Dataplane::install_sid`]); the fast path never re-validates.
//!
//! Also here: the flavors (RFC 8986 section 4.16, draft-ietf-spring-srv6-srh-compression
//! NEXT-C-SID), the SR policy headend behaviors (RFC 8986 section 5) and the End.SBUF mode.

use core::fmt;
use core::str::FromStr;

use serde::{Deserialize, Serialize};

/// An SRv6 endpoint behavior (RFC 8986 section 4, plus srmig's End.S and End.SBUF).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Behavior {
    /// RFC 8986 4.1: Endpoint.
    End,
    /// RFC 8986 4.2: Endpoint with L3 cross-connect.
    EndX,
    /// RFC 8986 4.3: Endpoint with specific IPv6 table lookup.
    EndT,
    /// RFC 8986 4.4: decapsulation and IPv6 cross-connect.
    EndDx6,
    /// RFC 8986 4.5: decapsulation and IPv4 cross-connect.
    EndDx4,
    /// RFC 8986 4.6: decapsulation and specific IPv6 table lookup.
    EndDt6,
    /// RFC 8986 4.7: decapsulation and specific IPv4 table lookup.
    EndDt4,
    /// RFC 8986 4.8: decapsulation and specific IP table lookup.
    EndDt46,
    /// RFC 8986 4.13: bound to an SRv6 policy with encapsulation.
    EndB6Encaps,
    /// srmig (Desmouceaux et al.): deliver to the VM if it runs here, else act as End.
    EndS,
    /// srmig: deliver to the VM if it runs here, else buffer (or drop) until it does.
    EndSbuf,
}

/// A SID parameter (a field of [`crate::config::SidConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Param {
    /// `nexthop`: the L3 adjacency's neighbor address.
    Nexthop,
    /// `port`: the egress port of the L3 adjacency.
    Port,
    /// `table`: a FIB table id.
    Table,
    /// `policy`: the name of an SR policy.
    Policy,
    /// `vm`: the name of a local VM.
    Vm,
    /// `mode`: End.SBUF mode (`buffer` or `drop`).
    Mode,
}

impl Param {
    /// The configuration field name.
    pub const fn name(self) -> &'static str {
        match self {
            Param::Nexthop => "nexthop",
            Param::Port => "port",
            Param::Table => "table",
            Param::Policy => "policy",
            Param::Vm => "vm",
            Param::Mode => "mode",
        }
    }
}

/// A behavior flavor (RFC 8986 section 4.16; NEXT-C-SID from the SRH compression draft).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Flavor {
    /// Penultimate Segment Pop of the SRH (RFC 8986 4.16.1).
    Psp,
    /// Ultimate Segment Pop of the SRH (RFC 8986 4.16.2).
    Usp,
    /// Ultimate Segment Decapsulation (RFC 8986 4.16.3).
    Usd,
    /// NEXT-C-SID compressed segment shift (draft-ietf-spring-srv6-srh-compression section 4.1).
    NextCSid,
}

impl Flavor {
    /// All flavors.
    pub const ALL: [Flavor; 4] = [Flavor::Psp, Flavor::Usp, Flavor::Usd, Flavor::NextCSid];

    /// RFC spelling.
    pub const fn name(self) -> &'static str {
        match self {
            Flavor::Psp => "PSP",
            Flavor::Usp => "USP",
            Flavor::Usd => "USD",
            Flavor::NextCSid => "NEXT-C-SID",
        }
    }

    pub(crate) const fn bit(self) -> u8 {
        match self {
            Flavor::Psp => 1,
            Flavor::Usp => 2,
            Flavor::Usd => 4,
            Flavor::NextCSid => 8,
        }
    }
}

/// A set of flavors, as a bit set (cheap to test per packet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct FlavorSet(u8);

impl FlavorSet {
    /// The empty set.
    pub const EMPTY: FlavorSet = FlavorSet(0);

    /// Whether `f` is in the set.
    #[inline]
    pub const fn contains(self, f: Flavor) -> bool {
        self.0 & f.bit() != 0
    }

    /// Adds `f`.
    pub fn insert(&mut self, f: Flavor) {
        self.0 |= f.bit();
    }
}

impl FromIterator<Flavor> for FlavorSet {
    fn from_iter<I: IntoIterator<Item = Flavor>>(iter: I) -> Self {
        let mut s = FlavorSet::EMPTY;
        for f in iter {
            s.insert(f);
        }
        s
    }
}

/// SR policy headend behaviors (RFC 8986 section 5; H.Insert from
/// draft-filsfils-spring-srv6-net-pgm-insertion, not part of RFC 8986).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Headend {
    /// RFC 8986 5.1: push an outer IPv6 header with an SRH holding every segment.
    HEncaps,
    /// RFC 8986 5.2: as H.Encaps, but the first segment is only in the outer DA (no SRH for one segment).
    HEncapsRed,
    /// Insert an SRH after the IPv6 header; the original DA becomes the last segment.
    HInsert,
}

impl Headend {
    /// RFC spelling.
    pub const fn name(self) -> &'static str {
        match self {
            Headend::HEncaps => "H.Encaps",
            Headend::HEncapsRed => "H.Encaps.Red",
            Headend::HInsert => "H.Insert",
        }
    }
}

/// What End.SBUF does with packets for a VM that is not running here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SbufMode {
    /// Hold them in the VM's bounded FIFO and release them, in order, when it resumes here.
    #[default]
    Buffer,
    /// Drop them (`SbufDropMode`): the paper's comparison variant.
    Drop,
}

/// One row of the behavior table.
#[derive(Debug, Clone, Copy)]
pub struct BehaviorSpec {
    /// The behavior.
    pub behavior: Behavior,
    /// RFC spelling, as displayed by iproute2 and VPP.
    pub name: &'static str,
    /// Where it is specified.
    pub reference: &'static str,
    /// Parameters that must be present.
    pub required: &'static [Param],
    /// Parameters that may be present.
    pub optional: &'static [Param],
    /// Flavors that may be applied.
    pub flavors: &'static [Flavor],
}

const END_FLAVORS: &[Flavor] = &[Flavor::Psp, Flavor::Usp, Flavor::Usd, Flavor::NextCSid];

/// The behavior table. `install_sid` accepts a SID only if its parameters and flavors fit its row.
pub const BEHAVIORS: &[BehaviorSpec] = &[
    BehaviorSpec {
        behavior: Behavior::End,
        name: "End",
        reference: "RFC 8986 4.1",
        required: &[],
        optional: &[],
        flavors: END_FLAVORS,
    },
    BehaviorSpec {
        behavior: Behavior::EndX,
        name: "End.X",
        reference: "RFC 8986 4.2",
        required: &[Param::Nexthop, Param::Port],
        optional: &[],
        flavors: END_FLAVORS,
    },
    BehaviorSpec {
        behavior: Behavior::EndT,
        name: "End.T",
        reference: "RFC 8986 4.3",
        required: &[Param::Table],
        optional: &[],
        flavors: &[Flavor::Psp, Flavor::Usp, Flavor::Usd],
    },
    BehaviorSpec {
        behavior: Behavior::EndDx6,
        name: "End.DX6",
        reference: "RFC 8986 4.4",
        required: &[Param::Port],
        optional: &[Param::Nexthop],
        flavors: &[],
    },
    BehaviorSpec {
        behavior: Behavior::EndDx4,
        name: "End.DX4",
        reference: "RFC 8986 4.5",
        required: &[Param::Port],
        optional: &[Param::Nexthop],
        flavors: &[],
    },
    BehaviorSpec {
        behavior: Behavior::EndDt6,
        name: "End.DT6",
        reference: "RFC 8986 4.6",
        required: &[],
        optional: &[Param::Table],
        flavors: &[],
    },
    BehaviorSpec {
        behavior: Behavior::EndDt4,
        name: "End.DT4",
        reference: "RFC 8986 4.7",
        required: &[],
        optional: &[Param::Table],
        flavors: &[],
    },
    BehaviorSpec {
        behavior: Behavior::EndDt46,
        name: "End.DT46",
        reference: "RFC 8986 4.8",
        required: &[],
        optional: &[Param::Table],
        flavors: &[],
    },
    BehaviorSpec {
        behavior: Behavior::EndB6Encaps,
        name: "End.B6.Encaps",
        reference: "RFC 8986 4.13",
        required: &[Param::Policy],
        optional: &[],
        flavors: &[],
    },
    BehaviorSpec {
        behavior: Behavior::EndS,
        name: "End.S",
        reference: "Desmouceaux et al., CNSM 2018",
        required: &[],
        optional: &[Param::Vm],
        flavors: &[],
    },
    BehaviorSpec {
        behavior: Behavior::EndSbuf,
        name: "End.SBUF",
        reference: "Desmouceaux et al., CNSM 2018",
        required: &[],
        optional: &[Param::Vm, Param::Mode],
        flavors: &[],
    },
];

impl Behavior {
    /// This behavior's row of [`BEHAVIORS`].
    pub fn spec(self) -> &'static BehaviorSpec {
        // The table holds one row per variant, in declaration order (checked by a unit test).
        &BEHAVIORS[self as usize]
    }

    /// RFC spelling.
    pub fn name(self) -> &'static str {
        self.spec().name
    }
}

macro_rules! name_conversions {
    ($ty:ty, $err:literal, $all:expr) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $all.into_iter().find(|b| b.name() == s).ok_or_else(|| {
                    let known: Vec<&str> = $all.into_iter().map(|b| b.name()).collect();
                    format!(
                        concat!("unknown ", $err, " \"{}\" (known: {})"),
                        s,
                        known.join(", ")
                    )
                })
            }
        }
        impl TryFrom<String> for $ty {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                s.parse()
            }
        }
        impl From<$ty> for String {
            fn from(b: $ty) -> String {
                b.name().to_owned()
            }
        }
    };
}

name_conversions!(Behavior, "behavior", BEHAVIORS.iter().map(|s| s.behavior));
name_conversions!(Flavor, "flavor", Flavor::ALL);
name_conversions!(
    Headend,
    "headend behavior",
    [Headend::HEncaps, Headend::HEncapsRed, Headend::HInsert]
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_in_variant_order_and_names_round_trip() {
        for (i, spec) in BEHAVIORS.iter().enumerate() {
            assert_eq!(spec.behavior as usize, i, "row {i} out of order");
            assert_eq!(spec.name.parse::<Behavior>(), Ok(spec.behavior));
            assert_eq!(spec.behavior.to_string(), spec.name);
        }
        assert_eq!("End.DX6".parse::<Behavior>(), Ok(Behavior::EndDx6));
        let err = "End.Y".parse::<Behavior>().unwrap_err();
        assert!(err.contains("unknown behavior \"End.Y\""), "{err}");
        assert!(err.contains("End.SBUF"));
    }

    #[test]
    fn flavors_and_headends_parse() {
        assert_eq!("NEXT-C-SID".parse::<Flavor>(), Ok(Flavor::NextCSid));
        assert_eq!("H.Encaps.Red".parse::<Headend>(), Ok(Headend::HEncapsRed));
        assert!("psp".parse::<Flavor>().is_err());
        let set: FlavorSet = [Flavor::Psp, Flavor::Usd].into_iter().collect();
        assert!(set.contains(Flavor::Psp) && set.contains(Flavor::Usd));
        assert!(!set.contains(Flavor::Usp) && !set.contains(Flavor::NextCSid));
    }

    #[test]
    fn required_params_are_not_also_optional() {
        for spec in BEHAVIORS {
            for p in spec.required {
                assert!(!spec.optional.contains(p), "{}: {:?}", spec.name, p);
            }
        }
    }
}
