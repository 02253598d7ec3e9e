//! srmig-controller: the controller daemon around the sans-IO [`srmig_control::Controller`].
//!
//! - [`api`]: the HTTP/JSON API on a unix socket (axum), documented in `docs/controller-api.md`;
//! - `engine`: the single task owning the core, the store and the outputs; `mailbox`: its
//!   commands and replies;
//! - [`push`]: per-host delivery of configs to srmigd (`PUT /v1/config`, acks fed back);
//! - [`resync`]: polling srmigd's `GET /v1/status` for VM states (after a restart, and while a
//!   migration waits for its hypervisor);
//! - [`store`]: the embedded redb store, written ahead of every action;
//! - [`driver`]: the [`HypervisorDriver`] trait and its [`External`] implementation;
//! - [`qmp_driver`]: the QMP driver for QEMU ([`Qmp`], with a [`QemuLauncher`] for destinations,
//!   per-host [`QmpEndpoints`]); [`qemu_hook`]: [`CommandLauncher`], a launcher running an
//!   operator's hook program;
//! - `metrics`: the counters, gauges and histograms of `GET /metrics`;
//! - [`client`]: a typed client; [`follow`]: the `srmig migrate` procedure (request, follow,
//!   heartbeat, time limit);
//! - [`http`]: HTTP/1.1 over unix sockets.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use srmig_controller::{Daemon, Options};
//! let daemon = Daemon::start(Options::new("/run/srmig/controller.sock", "/tmp/c.redb")).await?;
//! // ... register hosts and VMs, migrate ...
//! daemon.shutdown().await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod api;
pub mod client;
pub mod daemon;
pub mod driver;
mod engine;
pub mod follow;
pub mod http;
pub mod libvirt_hook;
mod mailbox;
mod metrics;
pub mod push;
pub mod qemu_hook;
pub mod qmp_driver;
pub mod resync;
pub mod store;
pub mod store_etcd;
pub mod types;

pub use client::{
    hypervisor_line, migrate_blocking, migrate_blocking_with_progress, progress_line,
    progress_moved, ClientError, ControllerClient,
};
pub use daemon::{
    run_blocking, ControllerTls, Daemon, DaemonError, Options, DEFAULT_SOCKET, DEFAULT_STORE,
};
pub use driver::{External, HypervisorDriver, MigrationOrder, ReportSink};
pub use mailbox::Failure;
pub use push::PushSettings;
pub use qemu_hook::{CommandLauncher, HookError, DEFAULT_HOOK_TIMEOUT};
pub use qmp_driver::{EndpointError, QemuInstance, QemuLauncher, Qmp, QmpEndpoints, QmpSettings};
pub use store::{Backend, Store, StoreError, StoreSpec};
pub use store_etcd::{EtcdOptions, EtcdTls};
pub use types::{
    ControllerInfo, HostApi, HostRegistration, HostView, HypervisorEventKind, HypervisorPost,
    VmView,
};
