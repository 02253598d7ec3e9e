//! Typed arguments and results of the commands srmig uses (QAPI names, QEMU 7.2 schema).
//!
//! QAPI enums are mapped to Rust enums that keep unknown values (`Unknown(String)`) instead of
//! failing, so a newer QEMU that adds a state does not break the client. Results ignore members
//! they do not know, and members that QEMU only sends in some states are `Option`s.

use serde::{Deserialize, Serialize};

/// Declares a QAPI string enum with an `Unknown(String)` fallback and serde both ways.
macro_rules! qapi_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
            /// A value this client does not know (from a newer QEMU).
            Unknown(String),
        }

        impl $name {
            /// QEMU's spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $text,)*
                    $name::Unknown(s) => s,
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> $name {
                match s {
                    $($text => $name::$variant,)*
                    other => $name::Unknown(other.to_owned()),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Ok($name::from(&*s))
            }
        }
    };
}

qapi_enum! {
    /// QAPI `MigrationStatus`.
    MigrationStatus {
        /// No migration has run.
        None = "none",
        /// Setting up (connection, capabilities).
        Setup = "setup",
        /// `migrate_cancel` issued, not yet cancelled.
        Cancelling = "cancelling",
        /// Cancelled; the source keeps running.
        Cancelled = "cancelled",
        /// Pre-copy in progress (the source VM runs).
        Active = "active",
        /// Post-copy in progress.
        PostcopyActive = "postcopy-active",
        /// Post-copy paused (network failure).
        PostcopyPaused = "postcopy-paused",
        /// Post-copy recovering.
        PostcopyRecover = "postcopy-recover",
        /// Done: on the source the VM is in `postmigrate`, on the destination it runs.
        Completed = "completed",
        /// Failed; the source keeps (or resumes) running.
        Failed = "failed",
        /// COLO fault tolerance.
        Colo = "colo",
        /// Paused before switchover (`pause-before-switchover`); vCPUs already stopped,
        /// waiting for `migrate-continue`.
        PreSwitchover = "pre-switchover",
        /// Device state being migrated (after `pre-switchover`).
        Device = "device",
        /// Waiting for a device unplug (failover).
        WaitUnplug = "wait-unplug",
    }
}

impl MigrationStatus {
    /// True for the states a migration never leaves.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            MigrationStatus::Completed | MigrationStatus::Failed | MigrationStatus::Cancelled
        )
    }
}

qapi_enum! {
    /// QAPI `RunState`.
    RunState {
        /// Stopped by the debugger.
        Debug = "debug",
        /// Waiting for an incoming migration.
        Inmigrate = "inmigrate",
        /// Internal error.
        InternalError = "internal-error",
        /// Stopped on an I/O error.
        IoError = "io-error",
        /// Paused (`stop`).
        Paused = "paused",
        /// Source after a completed migration (paused, waiting for `quit`).
        Postmigrate = "postmigrate",
        /// Not started yet (`-S`).
        Prelaunch = "prelaunch",
        /// Stop-and-copy in progress on the source.
        FinishMigrate = "finish-migrate",
        /// Restoring a snapshot.
        RestoreVm = "restore-vm",
        /// Running.
        Running = "running",
        /// Saving a snapshot.
        SaveVm = "save-vm",
        /// Guest shut down (with `-no-shutdown`).
        Shutdown = "shutdown",
        /// Guest suspended.
        Suspended = "suspended",
        /// Watchdog fired.
        Watchdog = "watchdog",
        /// Guest panicked.
        GuestPanicked = "guest-panicked",
        /// COLO.
        Colo = "colo",
    }
}

/// Result of `query-status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusInfo {
    /// True if the vCPUs run.
    pub running: bool,
    /// The run state.
    pub status: RunState,
}

/// RAM statistics of `query-migrate` (all counters in bytes or pages, as QEMU names them).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RamStats {
    /// Bytes sent so far.
    #[serde(default)]
    pub transferred: u64,
    /// Bytes still to send.
    #[serde(default)]
    pub remaining: u64,
    /// Guest RAM size.
    #[serde(default)]
    pub total: u64,
    /// Zero pages (not sent in full).
    #[serde(default)]
    pub duplicate: u64,
    /// Pages sent in full.
    #[serde(default)]
    pub normal: u64,
    /// Bytes of the pages sent in full.
    #[serde(default)]
    pub normal_bytes: u64,
    /// Pages dirtied per second.
    #[serde(default)]
    pub dirty_pages_rate: u64,
    /// Throughput of the last iteration, Mbit/s.
    #[serde(default)]
    pub mbps: f64,
    /// Dirty bitmap syncs so far (one per pass).
    #[serde(default)]
    pub dirty_sync_count: u64,
    /// Page size in bytes.
    #[serde(default)]
    pub page_size: u64,
    /// Bytes sent during pre-copy.
    #[serde(default)]
    pub precopy_bytes: u64,
    /// Bytes sent while the VM was stopped.
    #[serde(default)]
    pub downtime_bytes: u64,
    /// Bytes sent during post-copy.
    #[serde(default)]
    pub postcopy_bytes: u64,
}

/// Result of `query-migrate`. Empty (`status: None`) when no migration ever ran.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MigrationInfo {
    /// Current state.
    pub status: Option<MigrationStatus>,
    /// Milliseconds since the migration started (final value once completed). QEMU 7.2
    /// reports `completed` slightly before it fills this in: see [`MigrationInfo::is_settled`].
    pub total_time: Option<u64>,
    /// Source-side downtime in ms (STOP until the last byte sent; leaves out the
    /// destination's load and resume).
    pub downtime: Option<u64>,
    /// Expected downtime in ms while active.
    pub expected_downtime: Option<u64>,
    /// Setup time in ms.
    pub setup_time: Option<u64>,
    /// RAM statistics.
    pub ram: Option<RamStats>,
    /// Why the migration failed (when `failed`).
    pub error_desc: Option<String>,
}

impl MigrationInfo {
    /// True once the migration ended and its figures are final: `failed` or `cancelled`, or
    /// `completed` with `total-time` filled in (QEMU 7.2 flips the status first).
    pub fn is_settled(&self) -> bool {
        match &self.status {
            Some(MigrationStatus::Completed) => self.total_time.is_some_and(|t| t > 0),
            Some(s) => s.is_final(),
            None => false,
        }
    }
}

qapi_enum! {
    /// QAPI `MigrationCapability` (the ones srmig may use are named; any other by `Unknown`).
    MigrationCapability {
        /// Emit `MIGRATION` / `MIGRATION_PASS` events. Needed on source *and* destination.
        Events = "events",
        /// Stop in `pre-switchover` after the vCPUs stop, until `migrate-continue`.
        PauseBeforeSwitchover = "pause-before-switchover",
        /// XBZRLE page compression.
        Xbzrle = "xbzrle",
        /// Post-copy RAM.
        PostcopyRam = "postcopy-ram",
        /// Several migration channels.
        Multifd = "multifd",
        /// Throttle the guest when it dirties memory faster than it is sent.
        AutoConverge = "auto-converge",
        /// Do not send zero blocks.
        ZeroBlocks = "zero-blocks",
        /// Return path from destination to source.
        ReturnPath = "return-path",
    }
}

/// Parameters for `migrate-set-parameters`; only the `Some` members are sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MigrationParameters {
    /// Bandwidth cap in bytes/s (QEMU 7.2 default: 128 MiB/s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bandwidth: Option<u64>,
    /// Largest tolerated downtime in ms (default 300); QEMU stops the VM once it estimates
    /// the rest fits in this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downtime_limit: Option<u64>,
    /// Self-announce: first delay in ms (default 50).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub announce_initial: Option<u64>,
    /// Self-announce: largest delay in ms (default 550).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub announce_max: Option<u64>,
    /// Self-announce: rounds (default 5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub announce_rounds: Option<u64>,
    /// Self-announce: delay increase per round in ms (default 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub announce_step: Option<u64>,
    /// Number of multifd channels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multifd_channels: Option<u64>,
    /// Auto-converge: initial throttle percentage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_throttle_initial: Option<u64>,
    /// Auto-converge: throttle increment percentage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_throttle_increment: Option<u64>,
}

/// One virtio device of `x-query-virtio` (QEMU 7.2: unstable, `x-` prefixed).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct VirtioInfo {
    /// The device's QOM path, for `x-query-virtio-queue-status`
    /// (`/machine/peripheral-anon/device[0]/virtio-backend`).
    pub path: String,
    /// The device's name (`virtio-net`, `virtio-blk`, ...).
    pub name: String,
}

/// The state of one virtqueue, from `x-query-virtio-queue-status` (only what srmig reads).
///
/// On a virtio-net receive queue, `used_idx` counts (modulo 2^16) the receive buffers the
/// device filled since the guest's driver set the queue up: one per frame while frames fit one
/// buffer (see docs/qemu.md, "An exact take-back").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct VirtQueueStatus {
    /// The queue's index.
    pub queue_index: u16,
    /// Buffers popped by the device and not yet returned to the guest.
    pub inuse: u32,
    /// The device's next available-ring entry (absent for a vhost queue).
    #[serde(default)]
    pub last_avail_idx: Option<u16>,
    /// The guest's available index as the device last read it (absent for a vhost queue).
    #[serde(default)]
    pub shadow_avail_idx: Option<u16>,
    /// The used-ring index: buffers handed back to the guest.
    pub used_idx: u16,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn enums_round_trip_and_keep_unknown_values() {
        for s in [
            "setup",
            "active",
            "pre-switchover",
            "completed",
            "wait-unplug",
        ] {
            let v: MigrationStatus = serde_json::from_value(json!(s)).expect("status");
            assert_eq!(serde_json::to_value(&v).expect("ser"), json!(s));
            assert!(!matches!(v, MigrationStatus::Unknown(_)), "{s}");
        }
        let v: MigrationStatus = serde_json::from_value(json!("teleporting")).expect("status");
        assert_eq!(v, MigrationStatus::Unknown("teleporting".into()));
        assert_eq!(v.to_string(), "teleporting");
        let r: RunState = serde_json::from_value(json!("postmigrate")).expect("runstate");
        assert_eq!(r, RunState::Postmigrate);
        assert!(serde_json::from_value::<RunState>(json!(3)).is_err());
    }

    #[test]
    fn final_states() {
        assert!(MigrationStatus::Completed.is_final());
        assert!(MigrationStatus::Failed.is_final());
        assert!(MigrationStatus::Cancelled.is_final());
        assert!(!MigrationStatus::Active.is_final());
        assert!(!MigrationStatus::PreSwitchover.is_final());
    }

    /// A `query-migrate` reply of a completed migration, as QEMU 7.2 sends it.
    const COMPLETED: &str = r#"{"expected-downtime": 300, "status": "completed", "setup-time": 1, "total-time": 521, "ram": {"total": 134750208, "postcopy-requests": 0, "dirty-sync-count": 3, "multifd-bytes": 0, "pages-per-second": 33036, "downtime-bytes": 251802, "page-size": 4096, "remaining": 0, "postcopy-bytes": 0, "mbps": 1083.86, "transferred": 72170316, "dirty-sync-missed-zero-copy": 0, "precopy-bytes": 71918514, "duplicate": 15453, "dirty-pages-rate": 135, "skipped": 0, "normal-bytes": 71581696, "normal": 17476}, "downtime": 19}"#;

    #[test]
    fn parses_query_migrate() {
        let info: MigrationInfo = serde_json::from_str(COMPLETED).expect("info");
        assert_eq!(info.status, Some(MigrationStatus::Completed));
        assert_eq!(info.total_time, Some(521));
        assert_eq!(info.downtime, Some(19));
        assert_eq!(info.setup_time, Some(1));
        let ram = info.ram.as_ref().expect("ram");
        assert_eq!(ram.transferred, 72_170_316);
        assert_eq!(ram.total, 134_750_208);
        assert_eq!(ram.dirty_sync_count, 3);
        assert_eq!(ram.downtime_bytes, 251_802);
        assert!(info.is_settled());

        // The window in which QEMU 7.2 says completed but has not filled in the times yet.
        let early: MigrationInfo =
            serde_json::from_value(json!({"status": "completed", "total-time": 0, "downtime": 0}))
                .expect("info");
        assert!(!early.is_settled());
        let empty: MigrationInfo = serde_json::from_value(json!({})).expect("info");
        assert_eq!(empty.status, None);
        assert!(!empty.is_settled());
        let failed: MigrationInfo = serde_json::from_value(
            json!({"status": "failed", "error-desc": "Unable to write to socket: Broken pipe"}),
        )
        .expect("info");
        assert!(failed.is_settled());
        assert_eq!(
            failed.error_desc.as_deref(),
            Some("Unable to write to socket: Broken pipe")
        );
    }

    #[test]
    fn parameters_send_only_what_is_set() {
        let p = MigrationParameters {
            max_bandwidth: Some(10_000_000_000),
            downtime_limit: Some(30),
            ..MigrationParameters::default()
        };
        assert_eq!(
            serde_json::to_value(&p).expect("ser"),
            json!({"max-bandwidth": 10_000_000_000u64, "downtime-limit": 30})
        );
    }

    #[test]
    fn virtio_queries() {
        // As QEMU 7.2 answers them for the lab's guest (TCG, one virtio-net NIC).
        let list: Vec<VirtioInfo> = serde_json::from_value(json!([
            {"path": "/machine/peripheral-anon/device[0]/virtio-backend", "name": "virtio-net"}
        ]))
        .expect("x-query-virtio");
        assert_eq!(list[0].name, "virtio-net");
        let q: VirtQueueStatus = serde_json::from_value(json!({
            "signalled-used": 857, "inuse": 0, "name": "virtio-net",
            "vring-align": 4096, "vring-desc": 69632, "signalled-used-valid": true,
            "vring-num-default": 256, "vring-avail": 73728, "queue-index": 0,
            "last-avail-idx": 857, "vring-used": 74368, "used-idx": 857,
            "shadow-avail-idx": 1080, "vring-num": 256
        }))
        .expect("x-query-virtio-queue-status");
        assert_eq!(
            q,
            VirtQueueStatus {
                queue_index: 0,
                inuse: 0,
                last_avail_idx: Some(857),
                shadow_avail_idx: Some(1080),
                used_idx: 857
            }
        );
    }

    #[test]
    fn status_info() {
        let s: StatusInfo = serde_json::from_value(
            json!({"status": "inmigrate", "singlestep": false, "running": false}),
        )
        .expect("status");
        assert_eq!(
            s,
            StatusInfo {
                running: false,
                status: RunState::Inmigrate
            }
        );
    }
}
