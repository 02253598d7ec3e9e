//! srmig labs on this machine: network namespaces joined by veth pairs, with guaranteed
//! teardown, and the workloads the paper measures (1 ms probe, HTTP session opening, TCP
//! bulk), measured from inside the namespaces with the real kernel stack.
//!
//! - [`Lab`] creates namespaces `srmig-<runid>-<name>`, veths, addresses, routes, sysctls,
//!   moves link ends between namespaces and starts child processes; it tears all of it down on
//!   drop, on SIGINT/SIGTERM, and [`cleanup_stale`] removes leftovers of dead runs.
//! - [`Netns::run`] / [`Netns::spawn`] run Rust code on a thread inside a namespace.
//! - [`workload`] holds the probe, HTTP and TCP workloads; [`report`] the JSON report types.

mod cmd;
pub mod error;
pub mod netns;
pub mod registry;
pub mod report;
pub mod topology;
pub mod workload;

pub use error::LabError;
pub use netns::{Netns, NetnsThread};
pub use registry::{cleanup_stale, cleanup_stale_in, StaleCleanup};
pub use topology::{Lab, LabOptions, LinkEnd, MacAddr, Route, RunId, Veth};
