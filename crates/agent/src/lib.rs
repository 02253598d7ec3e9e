//! srmig-agent: the host side of srmig's control protocol, sans-IO.
//!
//! An [`Agent`] owns one host's forwarding engine ([`srmig_dataplane::Dataplane`]) and the
//! control state around it: the node config it was built from, the controller's host config
//! in force, SIDs added through the API, the VM states and the reports they make. It never
//! reads a clock, a socket or a file: time comes in as `now` (the engine's monotonic clock; a
//! [`WallClock`] maps it to Unix time for reports), requests come in through method calls,
//! and what must go out (VM state reports) is taken with [`Agent::poll_report`]. srmigd
//! (crate `srmig-hostd`) drives it from its dataplane thread and does all the I/O; the
//! simulator and the tests drive the same code in virtual time.
//!
//! ```text
//!  controller ── PUT /v1/config ──> srmigd ── Agent::apply_host_config(hc) ──> plan + install
//!  link / QMP events ─────────────> srmigd ── Agent::port_attachment(now, port, up)
//!                                              └─ VM state changed ── poll_report() ──> controller
//!  GET /v1/status ────────────────> srmigd ── Agent::status(ports) ──> srmig_api::HostStatus
//! ```
//!
//! [`apply`] translates a host config into the engine's tables (validated on a scratch engine
//! before anything live changes).
#![forbid(unsafe_code)]

mod agent;
pub mod apply;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

pub use agent::{Agent, AgentError, PortInfo, StateSource, WallClock};
pub use apply::{plan, Plan, PlanError, POLICY_PREFIX};
