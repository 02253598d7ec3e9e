//! The controller engine's mailbox: what the API handlers, the push tasks, the hypervisor
//! driver and the resync polls send to the engine task ([`Command`]), each request with its
//! [`Reply`] channel, and the API failure a reply may carry ([`Failure`]).

use hyper::StatusCode;
use srmig_api::{
    ApiError, ApiErrorCode, HypervisorReport, MigrateRequest, MigrationId, MigrationStatus, VmInfo,
    VmStateReport,
};
use tokio::sync::oneshot;

use crate::push::PushOutcome;
use crate::resync::Observed;
use crate::types::{HostRegistration, HostView, HypervisorPost, VmView};

/// An API failure: HTTP status plus the JSON error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body.
    pub error: ApiError,
}

impl Failure {
    /// Builds a failure.
    pub fn new(status: StatusCode, code: ApiErrorCode, message: impl Into<String>) -> Self {
        Failure {
            status,
            error: ApiError::new(code, message),
        }
    }
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T, Failure>>;

/// Inputs of the engine.
#[derive(Debug)]
pub(crate) enum Command {
    AddHost(HostRegistration, Reply<HostView>),
    AddVm(VmInfo, Reply<VmView>),
    RemoveHost(srmig_api::HostId, Reply<()>),
    RemoveVm(srmig_api::VmId, Reply<()>),
    Hosts(Reply<Vec<HostView>>),
    Vms(Reply<Vec<VmView>>),
    VmState(VmStateReport, Reply<()>),
    Fence(srmig_api::FenceReport, Reply<()>),
    Release(srmig_api::ReleaseReport, Reply<()>),
    Migrate(MigrateRequest, Reply<MigrationStatus>),
    Migration(MigrationId, Reply<MigrationStatus>),
    Migrations(Reply<Vec<MigrationStatus>>),
    Hypervisor(MigrationId, HypervisorPost, Reply<MigrationStatus>),
    Cancel(MigrationId, Reply<MigrationStatus>),
    HypervisorReport(HypervisorReport),
    /// The driver's view of a running migration (shown in its status, not persisted).
    HypervisorProgress(MigrationId, srmig_api::HypervisorProgress),
    Push(PushOutcome),
    Observed(Observed),
    Shutdown,
}
