//! The netns lab: a Linux IPv6 fabric router, hosts C, S and D each running a real srmigd,
//! a client VM on C and a VM that migrates between S and D, the controller, the paper's
//! workloads from the client to the migrating VM, and the report.
//!
//! - [`plan`]: names, addresses, MACs and srmigd node configurations (with the picture);
//! - [`Testbed`]: builds all of it under a [`Lab`](crate::Lab) guard (torn down on drop,
//!   error, panic or Ctrl-C) and emulates a netns VM migration through the controller;
//! - [`run`](run()) / [`run_migrate`]: workloads during N consecutive migrations and the
//!   [`LabRun`] (report JSON + summary) behind `srmig lab migrate`;
//! - [`demo`]: the short all-strategies run behind `srmig demo`.
//!
//! Needs root, `ip`, `ethtool`, and the srmigd binary next to the running executable (or in
//! [`TestbedOptions::bin_dir`]).

pub mod control;
pub mod demo;
mod error;
pub mod fault;
pub mod hook;
pub mod libvirt;
pub mod plan;
mod preflight;
pub mod progress;
pub mod qemu;
mod run;
mod srmigd;
mod testbed;

pub use control::error_chain;
pub use error::{MigrationFailure, OrchestrateError};
pub use preflight::{binary_dirs, check_environment, find_binary, is_root};
pub use progress::{Progress, ProgressLine};
pub use run::{
    parse_strategy, parse_vm_kind, run, run_migrate, LabRun, MigrateOptions, RunDetails, RunParams,
    RunPlan, WorkloadKind, WorkloadMigration,
};
pub use srmigd::{log_tail, Srmigd};
pub use testbed::{MigrationRecord, MigrationTiming, Testbed, TestbedOptions};
