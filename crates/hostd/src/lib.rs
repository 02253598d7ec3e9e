//! srmigd, the per-host daemon of srmig: it runs the sans-IO SRv6 engine
//! ([`srmig_dataplane::Dataplane`]) on real interfaces of its network namespace.
//!
//! ```text
//!  main thread ── parses the CLI, loads node.toml, starts:
//!   ├─ dataplane thread  (dataplane_loop): owns the Agent (engine + control state, crate
//!   │    srmig-agent);
//!   │    poll(eventfd, netlink, AF_PACKET sockets) → batches → verdicts → sends
//!   └─ runtime thread    (tokio): the control API on a unix socket (api), the controller
//!        reporter (report), signals; talks to the dataplane thread through commands + eventfd
//! ```
//!
//! One concern per module: [`port`] (AF_PACKET ports, [`port::packet`] the socket; QEMU
//! stream ports, [`port::qemu`]), [`qmpwatch`] (VM state from QEMU's QMP events),
//! [`linkwatch`] (netlink link events), [`dataplane_loop`] (the thread), [`mailbox`] (its
//! commands and replies), [`api`] (HTTP routes), [`metrics`] (OpenMetrics), [`workers`]
//! (`--workers N`: the model, command fan-out), [`report`] (controller reports), [`client`] (unix-socket HTTP
//! client), [`config`] (node.toml).

pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod dataplane_loop;
pub mod linkwatch;
pub mod mailbox;
pub mod metrics;
pub mod port;
pub mod qmpwatch;
pub mod report;
mod sys;
pub mod workers;
