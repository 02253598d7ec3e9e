//! srmig-sim: a deterministic discrete-event simulator of a data center running srmig's real
//! cores in virtual time.
//!
//! Every host is a real [`srmig_agent::Agent`] with its real [`srmig_dataplane::Dataplane`];
//! the controller is the real [`srmig_control::Controller`]. Nothing of theirs is changed or
//! stubbed: the simulator feeds them frames, messages, port events and `now`, and carries out
//! what they poll out, exactly as srmigd and srmig-controller do. Only the world around them
//! is modelled ([`world`]): a leaf-spine fabric, the control network (delay, loss as TCP
//! retransmission timeouts, partitions), QEMU's live migration timing ([`hypervisor`]), host
//! crashes, and the VMs' ends of the workloads ([`workload`]).
//!
//! One seeded generator ([`rng`]), one virtual clock and one event queue ([`queue`]); no
//! threads and no wall clock, so a seed replays a run event for event.
//!
//! - [`scenario`]: what to simulate (also `srmig sim run SCENARIO.toml`);
//! - [`world`]: the simulation, its invariants and its [`world::Outcome`];
//! - [`paper`]: `srmig sim paper`, the paper's experiment as `srmig lab paper` runs it;
//! - [`scale`]: `srmig sim scale`, many hosts, VMs and migrations.
#![forbid(unsafe_code)]

pub mod frame;
pub mod hypervisor;
pub mod paper;
pub mod queue;
pub mod rng;
pub mod scale;
pub mod scenario;
pub mod workload;
pub mod world;

pub use scenario::{Scenario, ScenarioError, SimStrategy};
pub use world::{run, MigrationRecord, Outcome, SimError, Stats, World};
