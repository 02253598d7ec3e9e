//! The dataplane thread's mailbox: what the control API, the QMP watch and `main` ask of it
//! ([`Command`]), each request with its [`Reply`] channel. The thread answers from its
//! [`srmig_agent::Agent`] between two batches (see [`crate::dataplane_loop`]).

use std::net::Ipv6Addr;

use srmig_agent::AgentError;
use srmig_api::{Ack, HostConfig, HostConfigDelta, HostStatus, SidStatus, VmStatus};
use srmig_dataplane::SidConfig;
use tokio::sync::oneshot;

/// A reply channel to the API.
pub type Reply<T> = oneshot::Sender<T>;

/// A request to the dataplane thread.
#[derive(Debug)]
pub enum Command {
    /// `PUT /v1/config`.
    ApplyConfig(Box<HostConfig>, Reply<Result<Ack, AgentError>>),
    /// `PATCH /v1/config`.
    ApplyDelta(Box<HostConfigDelta>, Reply<Result<Ack, AgentError>>),
    /// `PUT /v1/vms/{name}/state`.
    SetVmState(
        String,
        srmig_api::VmState,
        Reply<Result<VmStatus, AgentError>>,
    ),
    /// `POST /v1/sids`.
    InstallSid(Box<SidConfig>, Reply<Result<SidStatus, AgentError>>),
    /// `DELETE /v1/sids/{sid}`.
    RemoveSid(Ipv6Addr, Reply<Result<(), AgentError>>),
    /// `GET /v1/status` and `GET /metrics`.
    Status(Reply<HostStatus>),
    /// A QEMU's run state changed ([`crate::qmpwatch`]); handled by the dataplane loop, which
    /// owns the port's stream (frame recovery at a STOP).
    Hypervisor(crate::qmpwatch::HypervisorUpdate),
    /// Hold the writes to QEMU port `.0` and answer, once QEMU has read everything written,
    /// with the number of frames written since the stream connected (`None` if that does
    /// not happen within [`crate::dataplane_loop::QUIESCE_WAIT`]: the hold is released). The
    /// QMP watch then reads the guest's `used-idx` and sends [`Command::QemuBase`].
    QemuQuiesce(String, Reply<Option<u64>>),
    /// Release the hold of [`Command::QemuQuiesce`]; with `(frames written, used-idx)`, the
    /// base of an exact take-back at the port's next `pre-switchover` ([`crate::port::qemu`]).
    QemuBase(String, Option<(u64, u16)>),
    /// The source QEMU of a migration waits in `pre-switchover`: the VM stops running here,
    /// what the guest did not get is taken back (exactly, with the guest's `used-idx`) and
    /// re-steered, then the reply lets the QMP watch send `migrate-continue`.
    QemuSwitchover(
        crate::qmpwatch::HypervisorUpdate,
        Option<u16>,
        Reply<crate::qmpwatch::TakeBack>,
    ),
    /// Another worker received a commit-fence marker (`--workers N`): this worker processes
    /// what it has received, then opens its own (VM, ingress) pair
    /// ([`srmig_agent::Agent::fence_marker_relayed`]).
    FenceRelay(Box<srmig_api::FenceReport>),
    /// Stop the dataplane loop.
    Shutdown,
}

impl Command {
    /// Whether the command may change what the engine does with a VM's packets (its
    /// mappings, SIDs, VM states): the VM ports' TC programs are turned off before it is
    /// served (`crate::port::PortIo::park_vm_fast`).
    pub fn changes_config(&self) -> bool {
        matches!(
            self,
            Command::ApplyConfig(..)
                | Command::ApplyDelta(..)
                | Command::SetVmState(..)
                | Command::InstallSid(..)
                | Command::RemoveSid(..)
        )
    }
}
