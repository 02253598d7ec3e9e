//! srmig labs on this machine: network namespaces joined by veth pairs, with guaranteed
//! teardown, and the workloads the paper measures (1 ms probe, HTTP session opening, TCP
//! bulk), measured from inside the namespaces with the real kernel stack.
//!
//! - [`Lab`] creates namespaces `srmig-<runid>-<name>`, veths, addresses, routes, sysctls,
//!   moves link ends between namespaces and starts child processes; it tears all of it down on
//!   drop, on SIGINT/SIGTERM, and [`cleanup_stale`] removes leftovers of dead runs.
//! - [`Netns::run`] / [`Netns::spawn`] run Rust code on a thread inside a namespace.
//! - [`workload`] holds the probe, HTTP and TCP workloads; [`report`] the JSON report types.
//! - [`orchestrate`] is the netns lab behind `srmig lab migrate` and `srmig demo`: router,
//!   hosts running srmigd, the controller, VMs, emulated migrations, workloads and reports.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use srmig_lab::workload::probe::{run_probe, ProbeConfig, ProbeResponder};
//! use srmig_lab::{Lab, Route};
//!
//! let lab = Lab::new()?; // torn down when dropped, even on panic or SIGINT
//! let client = lab.add_netns("client")?;
//! let vm = lab.add_netns("vm")?;
//! let link = lab.add_veth(&client, "eth0", &vm, "eth0")?;
//! lab.add_addr(&link.a, "fd00::1/64".parse()?)?;
//! lab.add_addr(&link.b, "fd00::2/64".parse()?)?;
//! for end in [&link.a, &link.b] {
//!     lab.set_up(end)?;
//!     lab.wait_up(end, Duration::from_secs(5))?;
//! }
//! lab.add_route(&vm, &Route::default_v6("fd00::1".parse()?, Some("eth0")))?;
//! let responder = ProbeResponder::spawn(&vm, "[fd00::2]:7000".parse()?)?;
//! let probe = run_probe(&client, &ProbeConfig::new(responder.local_addr(), 1000))?;
//! assert_eq!(probe.report.lost, 0);
//! # Ok(())
//! # }
//! ```

mod clock;
mod cmd;
pub mod error;
pub mod ifup;
pub mod kernel;
pub mod netns;
pub mod orchestrate;
pub mod paper;
pub mod registry;
pub mod report;
pub mod topology;
pub mod workload;

pub use error::LabError;
pub use netns::{Netns, NetnsThread};
pub use registry::{cleanup_stale, cleanup_stale_in, StaleCleanup};
pub use topology::{
    list_namespaces_with_prefix, Lab, LabHandle, LabOptions, LinkEnd, MacAddr, Route, RunId, Veth,
};
