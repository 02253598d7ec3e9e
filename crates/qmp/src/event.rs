//! QMP events, typed where srmig cares and raw otherwise.
//!
//! Every event keeps QEMU's own timestamp (wall clock, microseconds, taken when QEMU emitted
//! it), so the events of two QEMUs (source and destination) and a switch log can be merged by
//! sorting, and the true pause of a migration is `dst RESUME - src STOP` of these timestamps.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::types::MigrationStatus;

/// When QEMU emitted an event: `{"seconds": s, "microseconds": us}`, wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp {
    /// Seconds since the Unix epoch (QEMU sends -1 if it could not read the clock).
    pub seconds: i64,
    /// Microseconds within the second.
    pub microseconds: i64,
}

impl Timestamp {
    /// Microseconds since the Unix epoch.
    pub fn as_micros(&self) -> i64 {
        self.seconds
            .saturating_mul(1_000_000)
            .saturating_add(self.microseconds)
    }

    /// The timestamp as a `SystemTime`, or `None` for QEMU's "no clock" value (negative).
    pub fn to_system_time(&self) -> Option<SystemTime> {
        let micros = u64::try_from(self.as_micros()).ok()?;
        UNIX_EPOCH.checked_add(Duration::from_micros(micros))
    }

    /// `self - earlier` in (possibly negative) milliseconds.
    pub fn millis_since(&self, earlier: &Timestamp) -> f64 {
        (self.as_micros() - earlier.as_micros()) as f64 / 1000.0
    }
}

/// The events srmig acts on, parsed; everything else is [`EventKind::Other`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// The vCPUs stopped (on the source of a migration: the pause begins).
    Stop,
    /// The vCPUs run again (on the destination of a migration: the pause ends).
    Resume,
    /// Migration state change (needs the `events` migration capability on that QEMU).
    Migration {
        /// The new state.
        status: MigrationStatus,
    },
    /// A RAM pre-copy pass began (source, `events` capability).
    MigrationPass {
        /// Pass number, from 1.
        pass: u64,
    },
    /// A `-netdev stream` peer connected.
    NetdevStreamConnected {
        /// The `id=` of the netdev.
        netdev_id: String,
        /// The peer's address as QEMU reports it (`{"type": "unix", "path": ...}` or inet).
        addr: Value,
    },
    /// A `-netdev stream` peer disconnected.
    NetdevStreamDisconnected {
        /// The `id=` of the netdev.
        netdev_id: String,
    },
    /// QEMU is shutting down (after `quit`, a guest poweroff, a signal).
    Shutdown {
        /// True if the guest asked for it.
        guest: bool,
        /// QEMU's reason, e.g. `host-qmp-quit`, `guest-shutdown`, `host-signal`.
        reason: String,
    },
    /// An event not typed here, or a typed one whose data did not match (kept, not dropped).
    Other,
}

/// One event, with its raw name and data next to the typed view.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// QEMU's event name, e.g. `STOP`.
    pub name: String,
    /// When QEMU emitted it.
    pub timestamp: Timestamp,
    /// The `data` member (`Null` when absent).
    pub data: Value,
    /// The typed view.
    pub kind: EventKind,
}

#[derive(Deserialize)]
struct MigrationData {
    status: MigrationStatus,
}

#[derive(Deserialize)]
struct PassData {
    pass: u64,
}

#[derive(Deserialize)]
struct NetdevData {
    #[serde(rename = "netdev-id")]
    netdev_id: String,
    #[serde(default)]
    addr: Value,
}

#[derive(Deserialize)]
struct ShutdownData {
    guest: bool,
    reason: String,
}

impl Event {
    /// Builds an event and its typed view from the wire parts.
    pub fn new(name: String, timestamp: Timestamp, data: Value) -> Event {
        let kind = typed(&name, &data).unwrap_or(EventKind::Other);
        Event {
            name,
            timestamp,
            data,
            kind,
        }
    }
}

fn typed(name: &str, data: &Value) -> Option<EventKind> {
    fn de<T: serde::de::DeserializeOwned>(data: &Value) -> Option<T> {
        match T::deserialize(data) {
            Ok(t) => Some(t),
            Err(err) => {
                tracing::warn!(%err, %data, "QMP event data does not match its type; kept as Other");
                None
            }
        }
    }
    Some(match name {
        "STOP" => EventKind::Stop,
        "RESUME" => EventKind::Resume,
        "MIGRATION" => EventKind::Migration {
            status: de::<MigrationData>(data)?.status,
        },
        "MIGRATION_PASS" => EventKind::MigrationPass {
            pass: de::<PassData>(data)?.pass,
        },
        "NETDEV_STREAM_CONNECTED" => {
            let d = de::<NetdevData>(data)?;
            EventKind::NetdevStreamConnected {
                netdev_id: d.netdev_id,
                addr: d.addr,
            }
        }
        "NETDEV_STREAM_DISCONNECTED" => EventKind::NetdevStreamDisconnected {
            netdev_id: de::<NetdevData>(data)?.netdev_id,
        },
        "SHUTDOWN" => {
            let d = de::<ShutdownData>(data)?;
            EventKind::Shutdown {
                guest: d.guest,
                reason: d.reason,
            }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts() -> Timestamp {
        Timestamp {
            seconds: 1_763_900_000,
            microseconds: 123_456,
        }
    }

    #[test]
    fn types_the_events_srmig_uses() {
        let cases = [
            ("STOP", Value::Null, EventKind::Stop),
            ("RESUME", Value::Null, EventKind::Resume),
            (
                "MIGRATION",
                json!({"status": "pre-switchover"}),
                EventKind::Migration {
                    status: MigrationStatus::PreSwitchover,
                },
            ),
            (
                "MIGRATION_PASS",
                json!({"pass": 2}),
                EventKind::MigrationPass { pass: 2 },
            ),
            (
                "NETDEV_STREAM_CONNECTED",
                json!({"netdev-id": "n0", "addr": {"type": "unix", "path": "/tmp/vm.sock"}}),
                EventKind::NetdevStreamConnected {
                    netdev_id: "n0".into(),
                    addr: json!({"type": "unix", "path": "/tmp/vm.sock"}),
                },
            ),
            (
                "NETDEV_STREAM_DISCONNECTED",
                json!({"netdev-id": "n0"}),
                EventKind::NetdevStreamDisconnected {
                    netdev_id: "n0".into(),
                },
            ),
            (
                "SHUTDOWN",
                json!({"guest": false, "reason": "host-qmp-quit"}),
                EventKind::Shutdown {
                    guest: false,
                    reason: "host-qmp-quit".into(),
                },
            ),
            ("BLOCK_JOB_READY", json!({"device": "x"}), EventKind::Other),
        ];
        for (name, data, kind) in cases {
            let ev = Event::new(name.into(), ts(), data.clone());
            assert_eq!(ev.kind, kind, "{name}");
            assert_eq!(ev.data, data);
            assert_eq!(ev.name, name);
        }
    }

    #[test]
    fn mismatched_data_is_kept_as_other() {
        let ev = Event::new("MIGRATION".into(), ts(), json!({"state": "x"}));
        assert_eq!(ev.kind, EventKind::Other);
        assert_eq!(ev.data, json!({"state": "x"}));
        let ev = Event::new("MIGRATION_PASS".into(), ts(), json!({"pass": -1}));
        assert_eq!(ev.kind, EventKind::Other);
    }

    #[test]
    fn unknown_migration_status_is_preserved() {
        let ev = Event::new("MIGRATION".into(), ts(), json!({"status": "brand-new"}));
        assert_eq!(
            ev.kind,
            EventKind::Migration {
                status: MigrationStatus::Unknown("brand-new".into())
            }
        );
    }

    #[test]
    fn timestamps_convert_and_subtract() {
        let a = ts();
        let b = Timestamp {
            seconds: 1_763_900_000,
            microseconds: 148_956,
        };
        assert_eq!(a.as_micros(), 1_763_900_000_123_456);
        assert!((b.millis_since(&a) - 25.5).abs() < 1e-9);
        assert!((a.millis_since(&b) + 25.5).abs() < 1e-9);
        let st = a.to_system_time().expect("valid");
        assert_eq!(
            st.duration_since(UNIX_EPOCH)
                .expect("after epoch")
                .as_micros(),
            1_763_900_000_123_456
        );
        let none = Timestamp {
            seconds: -1,
            microseconds: -1,
        };
        assert_eq!(none.to_system_time(), None);
    }
}
