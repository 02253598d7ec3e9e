//! Identifiers and small value types: host and VM names, migration ids, timestamps, MAC addresses.
//!
//! Names are validated when they are built or deserialized, so a `HostId` or `VmId` that exists
//! is always a usable name (it can appear in a file name, a URL path segment or a log line).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest accepted host or VM name, in bytes.
pub const MAX_NAME_LEN: usize = 63;

/// Why a host or VM name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is the empty string.
    #[error("name is empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    #[error("name is {len} bytes long, the limit is {MAX_NAME_LEN}")]
    TooLong {
        /// Length of the refused name, in bytes.
        len: usize,
    },
    /// The name holds a character outside `[A-Za-z0-9._-]`.
    #[error("name contains {found:?}; only ASCII letters, digits, '.', '_' and '-' are allowed")]
    BadCharacter {
        /// The first refused character.
        found: char,
    },
    /// The name starts with '.' or '-'.
    #[error("name must not start with '.' or '-'")]
    BadStart,
}

fn check_name(s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong { len: s.len() });
    }
    if let Some(found) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(NameError::BadCharacter { found });
    }
    if s.starts_with(['.', '-']) {
        return Err(NameError::BadStart);
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// JSON: a string of 1 to 63 characters from `[A-Za-z0-9._-]`, not starting with `.` or `-`.
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps a name.
            pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
                let name = name.into();
                check_name(&name)?;
                Ok(Self(name))
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(name: String) -> Result<Self, NameError> {
                Self::new(name)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// The name of a host (one srmigd instance), unique in the data center.
    HostId
);
name_type!(
    /// The name of a VM, unique in the data center.
    VmId
);
name_type!(
    /// The name of a virtual network: the VMs of one tenant's segment, which talk to each
    /// other. It scopes what hosts are told: a host holds the mappings of a network's VMs only
    /// while one of them is local there (see `srmig_control::model`).
    NetworkId
);

/// Identifier of one migration, assigned by the controller; never reused by a controller
/// instance or by one restored from its snapshot.
///
/// JSON: an unsigned integer.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct MigrationId(pub u64);

impl fmt::Display for MigrationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m{}", self.0)
    }
}

/// A point in time, in milliseconds since an epoch chosen by whoever produces it.
///
/// The controller uses milliseconds since the Unix epoch; the sans-IO cores only compare and
/// add. JSON: an unsigned integer.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The timestamp `ms` milliseconds later, saturating at the end of time.
    #[must_use]
    pub fn plus_ms(self, ms: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(ms))
    }

    /// Milliseconds elapsed from `earlier` to `self`, zero if `earlier` is later.
    #[must_use]
    pub fn millis_since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ms", self.0)
    }
}

/// A 48-bit Ethernet MAC address.
///
/// JSON: a string of six two-digit hexadecimal groups separated by colons,
/// `"52:54:00:12:34:56"` (either case accepted, lowercase emitted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

/// Why a MAC address string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {input:?}: expected six hexadecimal pairs separated by ':'")]
pub struct MacAddrError {
    /// The refused text.
    pub input: String,
}

impl MacAddr {
    /// True for a group (multicast or broadcast) address, which a VM cannot own.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }
}

impl FromStr for MacAddr {
    type Err = MacAddrError;
    fn from_str(s: &str) -> Result<Self, MacAddrError> {
        let err = || MacAddrError {
            input: s.to_owned(),
        };
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(err)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(HostId::new("host-1").is_ok());
        assert!(VmId::new("vm_a.web").is_ok());
        assert_eq!(HostId::new(""), Err(NameError::Empty));
        assert_eq!(
            VmId::new("a b"),
            Err(NameError::BadCharacter { found: ' ' })
        );
        assert_eq!(VmId::new("-x"), Err(NameError::BadStart));
        assert_eq!(
            VmId::new("x".repeat(64)),
            Err(NameError::TooLong { len: 64 })
        );
        assert!(VmId::new("x".repeat(63)).is_ok());
    }

    #[test]
    fn names_are_validated_when_deserialized() {
        let ok: HostId = serde_json::from_str("\"h1\"").expect("valid name");
        assert_eq!(ok.as_str(), "h1");
        assert_eq!(serde_json::to_string(&ok).expect("serialize"), "\"h1\"");
        let err = serde_json::from_str::<HostId>("\"h/1\"").expect_err("slash refused");
        assert!(err.to_string().contains("'/'"), "{err}");
    }

    #[test]
    fn mac_round_trip() {
        let mac: MacAddr = "52:54:00:AB:cd:0f".parse().expect("valid mac");
        assert_eq!(mac.0, [0x52, 0x54, 0x00, 0xab, 0xcd, 0x0f]);
        assert_eq!(mac.to_string(), "52:54:00:ab:cd:0f");
        let json = serde_json::to_string(&mac).expect("serialize");
        assert_eq!(json, "\"52:54:00:ab:cd:0f\"");
        assert_eq!(
            serde_json::from_str::<MacAddr>(&json).expect("deserialize"),
            mac
        );
        assert!(!mac.is_multicast());
        assert!("ff:ff:ff:ff:ff:ff"
            .parse::<MacAddr>()
            .expect("broadcast parses")
            .is_multicast());
    }

    #[test]
    fn mac_rejects_malformed() {
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:0f:11",
            "52:54:00:ab:cd:f",
            "52:54:00:ab:cd:0g",
            "525400abcd0f",
            "52-54-00-ab-cd-0f",
            "+5:54:00:ab:cd:0f",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn timestamp_arithmetic_saturates() {
        assert_eq!(Timestamp(5).plus_ms(10), Timestamp(15));
        assert_eq!(Timestamp(u64::MAX).plus_ms(1), Timestamp(u64::MAX));
        assert_eq!(Timestamp(15).millis_since(Timestamp(5)), 10);
        assert_eq!(Timestamp(5).millis_since(Timestamp(15)), 0);
    }
}
