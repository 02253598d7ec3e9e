//! srmig-control: the sans-IO controller core.
//!
//! Like quinn-proto, this crate does no I/O and reads no clock: the daemon passes `now` in,
//! feeds host acknowledgements, VM state reports and hypervisor events through `handle_*`,
//! and carries out the [`Action`]s it polls (push a config to a host, start or cancel a
//! migration on the hypervisor, record a finished migration).
//!
//! - [`model`]: hosts, VMs, the VM -> host mapping, and each host's desired [`HostConfig`];
//! - [`migration`]: one migration as a typestate machine, with the protocol diagram;
//! - [`controller`]: the [`Controller`] tying them together.
//!
//! [`HostConfig`]: srmig_api::HostConfig
#![forbid(unsafe_code)]

pub mod controller;
pub mod migration;
pub mod model;

pub use controller::{
    Action, CancelError, Controller, ControllerConfig, ControllerSnapshot, HostObservation,
    InputError, RefuseReason, RemoveError, SnapshotError, SnapshotView, Unsaved,
};
pub use migration::{Migration, Timeouts};
pub use model::{Footprint, Model, ModelError};
