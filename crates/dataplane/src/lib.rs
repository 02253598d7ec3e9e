//! srmig-dataplane: a sans-IO SRv6 forwarding engine.
//!
//! The engine implements RFC 8754 SRH processing, the RFC 8986 endpoint and headend behaviors,
//! NEXT-C-SID compression, and srmig's migration behaviors End.S and End.SBUF (Desmouceaux et
//! al., CNSM 2018). It does no I/O and reads no clock: drivers (srmigd, the simulator, benches,
//! fuzzers) feed [`Batch`]es into [`Dataplane::process_batch`] with the current [`Instant`],
//! act on each packet's [`Verdict`], and drain generated packets with
//! [`Dataplane::poll_transmit`].
//!
//! One concept per module: [`config`] (serde configuration), [`behavior`] (the behavior
//! table), [`sid`] (local SIDs), [`fib`] (LPM FIB), [`vm`] (VMs and states), [`policy`]
//! (SR policies and ingress mapping), [`buffer`] (End.SBUF buffers), [`fence`] (the commit
//! fence), [`counters`], [`drop`]
//! (drop reasons), [`batch`] (packet buffers), [`engine`] (the pipeline), [`icmp`] (ICMPv6
//! errors and NDP answers), `hmac` (HMAC TLV keys, verification and signing), [`time`];
//! [`node_file`] is node.toml as a whole (the engine's configuration plus the tables of
//! srmigd and `srmig replay`).
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod batch;
pub mod behavior;
pub mod buffer;
mod chain;
pub mod config;
pub mod counters;
pub mod drop;
pub mod engine;
pub mod fence;
pub mod fib;
pub mod hash;
mod hmac;
pub mod icmp;
pub mod node_file;
pub mod policy;
pub mod port;
pub mod sid;
pub mod time;
pub mod vm;

#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
#[cfg(test)]
mod tshark_tests;

pub use batch::{Batch, FrameTooLarge, PacketBuf, Verdict, BUF_CAPACITY, HEADROOM, MAX_MTU};
pub use behavior::{Behavior, Flavor, Headend, SbufMode, BEHAVIORS};
pub use buffer::Occupancy;
pub use config::{
    BufferConfig, ConfigError, FenceConfig, FlowLabelMode, GatewayConfig, HmacAlgorithm,
    HmacKeyConfig, HmacMode, HmacSecret, IcmpConfig, MacAddr, MappingConfig, NodeConfig,
    PolicyConfig, PortConfig, PortKind, RouteConfig, SidConfig, SteeringConfig, VmConfig,
};
pub use counters::{
    CountersView, HoldHistogram, IcmpCounters, PacketBytes, PortCounters, VmCounters,
    HOLD_BUCKETS_S,
};
pub use drop::DropReason;
pub use engine::fastpath::{
    self, CounterSlot, FastAction, FastEncap, FastKind, FastNexthop, FastOutcome, FastRoute,
    FastTable,
};
pub use engine::Dataplane;
pub use fence::{FenceCounters, MarkerArrival};
pub use policy::{PolicyId, Steering};
pub use port::PortId;
pub use sid::SidId;
pub use time::Instant;
pub use vm::{VmId, VmState};
