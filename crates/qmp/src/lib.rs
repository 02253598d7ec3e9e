//! srmig-qmp: a thin typed client for QMP, the QEMU Machine Protocol.
//!
//! srmig drives live migrations through QMP: it starts the destination with `-incoming
//! defer`, sets the migration capabilities and parameters, issues `migrate`, follows progress
//! with `query-migrate`, and watches `STOP`, `RESUME` and `MIGRATION` events, whose QEMU
//! timestamps give the true pause (source `STOP` to destination `RESUME`).
//!
//! Written by hand on purpose: the typed QMP crates on crates.io are either generated from
//! the schema of another QEMU release (stale against the 7.2 we run) or single-release
//! projects, and we need only a dozen commands and events. This crate is small enough to own.
//!
//! - [`protocol`]: the wire format without I/O (greeting, command encoding, replies, events);
//! - [`client`]: the async [`Client`] over a tokio stream (one connection per socket; replies
//!   matched to commands by id, events interleaved with them fanned out to [`Events`]
//!   subscribers with QEMU's timestamps preserved);
//! - [`commands`]: typed helpers (`query_status`, `migrate`, `query_migrate`, ...) and the
//!   migration sequence diagram;
//! - [`event`], [`types`]: typed events and command arguments/results;
//! - [`QmpError`], in [`error`], is the one error type.
//!
//! Operational facts (QEMU 7.2 on this project's machines): a QMP unix socket serves one
//! client at a time (a second connect is refused), so give each QEMU one `-qmp` socket per
//! long-lived client; `MIGRATION` events are sent only with the `events` capability, on each
//! side; `query-migrate` reports `completed` a moment before `total-time`/`downtime` are set
//! ([`MigrationInfo::is_settled`] waits for them).
//!
//! ```no_run
//! # async fn demo() -> Result<(), srmig_qmp::QmpError> {
//! use srmig_qmp::{Client, MigrationCapability};
//! let qmp = Client::connect("/run/vm1.qmp").await?;
//! let mut events = qmp.subscribe();
//! qmp.migrate_set_capabilities(&[(MigrationCapability::Events, true)]).await?;
//! qmp.migrate("tcp:[::1]:4441").await?;
//! let info = qmp
//!     .wait_migration(std::time::Duration::from_millis(20), std::time::Duration::from_secs(60))
//!     .await?;
//! println!("{:?} after {:?} ms", info.status, info.total_time);
//! while let Some(event) = events.next().await {
//!     println!("{} {} {}", event.timestamp.as_micros(), event.name, event.data);
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod client;
pub mod commands;
pub mod error;
pub mod event;
pub mod protocol;
pub mod types;

#[cfg(test)]
mod testutil;

pub use client::{Client, ClientConfig, Events};
pub use error::QmpError;
pub use event::{Event, EventKind, Timestamp};
pub use protocol::{Greeting, QemuVersion};
pub use types::{
    MigrationCapability, MigrationInfo, MigrationParameters, MigrationStatus, RamStats, RunState,
    StatusInfo, VirtQueueStatus, VirtioInfo,
};
