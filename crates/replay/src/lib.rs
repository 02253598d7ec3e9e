//! srmig-replay: run packet captures through the srmig dataplane offline.
//!
//! `srmig replay` reads a node configuration (the same TOML srmigd reads, plus optional
//! mid-stream `[[events]]`, see [`config`]) and one Ethernet pcap per ingress port, runs the
//! frames through [`srmig_dataplane::Dataplane::process_batch`] in capture-time order, and writes
//! one pcap per egress port and a JSON [`Summary`] with the counters and, for every input packet,
//! its verdict, egress port or drop reason.
#![forbid(unsafe_code)]

pub mod config;
pub mod demo;
pub mod describe;
pub mod pcap;
pub mod run;
pub mod stream;
pub mod summary;

pub use config::{Event, EventTime, LoadError, ReplayConfig};
pub use run::{replay, replay_into, Input, RecordSink, ReplayError, Summary, Totals};
pub use stream::SummaryWriter;
