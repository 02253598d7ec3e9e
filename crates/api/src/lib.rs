//! srmig-api: the JSON types shared by the controller, the srmigd host daemon and the CLI.
//!
//! These types are an external contract: every field is documented with its JSON name, and
//! each file's tests pin the JSON with golden strings. Requests (everything a peer sends in)
//! refuse unknown fields, so a typo is an error rather than a silently ignored setting.
//!
//! | message | direction | type |
//! |---|---|---|
//! | host registration | srmigd -> controller | [`HostInfo`] |
//! | VM registration | CLI -> controller | [`VmInfo`] |
//! | VM state change | srmigd -> controller | [`VmStateReport`] |
//! | commit-fence marker arrived | srmigd -> controller | [`FenceReport`] |
//! | first delivery after a resume | srmigd -> controller | [`ReleaseReport`] |
//! | desired forwarding state | controller -> srmigd | [`HostConfig`] |
//! | acknowledgement | srmigd -> controller | [`Ack`] |
//! | migration request | CLI -> controller | [`MigrateRequest`] |
//! | hypervisor event | hypervisor driver -> controller | [`HypervisorReport`] |
//! | migration progress | controller -> CLI | [`MigrationStatus`] |
//! | host status and counters | srmigd -> controller, CLI | [`HostStatus`] |
//! | error | any server -> client | [`ApiError`] |
#![forbid(unsafe_code)]

pub mod config;
pub mod delta;
pub mod drops;
pub mod error;
pub mod host;
pub mod ids;
pub mod migration;
pub mod status;
pub mod vm;

pub use config::{
    Ack, Encaps, Headend, HostConfig, HostConfigError, LocalVm, Mapping, SbufMode, SidEntry,
    Steering, MAX_EPOCH,
};
pub use delta::{DeltaError, HostConfigDelta};
pub use drops::DropCounts;
pub use error::{ApiError, ApiErrorCode};
pub use host::{HostInfo, HostInfoError};
pub use ids::{HostId, MacAddr, MacAddrError, MigrationId, NameError, NetworkId, Timestamp, VmId};
pub use migration::{
    DeliveryRecord, HypervisorEvent, HypervisorProgress, HypervisorReport, MigrateRequest,
    MigrationFigures, MigrationOutcome, MigrationPhase, MigrationStatus, PhaseRecord,
    ReleaseFigures, Strategy,
};
pub use status::{
    BufferStatus, FenceStatus, HoldStatus, HostStatus, IcmpStatus, PolicyStatus, PortIoStats,
    PortStatus, ReleaseLatencyStatus, SidStatus, Traffic, VmStatus,
};
pub use vm::{FenceReport, ReleaseReport, VmInfo, VmState, VmStateReport};
