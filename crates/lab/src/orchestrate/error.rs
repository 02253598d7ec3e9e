//! Errors of the lab orchestration (`srmig lab migrate`, `srmig demo`).

use std::path::PathBuf;
use std::time::Duration;

use srmig_controller::ClientError;

use crate::error::LabError;
use crate::workload::WorkloadError;

/// Why a lab run could not be built, run or reported.
#[derive(Debug, thiserror::Error)]
pub enum OrchestrateError {
    /// Not running as root (network namespaces, veths and AF_PACKET need it).
    #[error(
        "the netns lab needs root (it creates network namespaces and veth pairs, and srmigd \
         opens AF_PACKET sockets); run it with sudo, or try `srmig demo --offline`, the replay \
         demo that needs neither"
    )]
    NeedsRoot,
    /// A tool the lab runs is not installed.
    #[error(
        "`{tool}` is needed by the lab ({why}) but was not found; install it (Debian: {package})"
    )]
    MissingTool {
        /// The program.
        tool: &'static str,
        /// What it is used for.
        why: &'static str,
        /// The Debian package providing it.
        package: &'static str,
    },
    /// A binary that should sit next to the running executable is missing.
    #[error(
        "{name} was not found (looked in {}); build the workspace first: \
         `cargo build --release --workspace`",
        .searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    BinaryNotFound {
        /// The binary's file name.
        name: &'static str,
        /// Directories searched.
        searched: Vec<PathBuf>,
    },
    /// A QEMU guest could not be built, started, booted or asked something.
    #[error("QEMU: {0}")]
    Qemu(String),
    /// The guest's boot id changed across the run: it rebooted instead of migrating.
    #[error("the guest rebooted during the run (boot id {before} before, {after} after)")]
    GuestRebooted {
        /// Boot id at the start of the run.
        before: String,
        /// Boot id at the end.
        after: String,
    },
    /// The options cannot work.
    #[error("invalid lab options: {0}")]
    Options(String),
    /// Building or tearing down the topology failed.
    #[error(transparent)]
    Lab(#[from] LabError),
    /// A workload failed.
    #[error("the {workload} workload failed")]
    Workload {
        /// Which workload.
        workload: &'static str,
        /// Why.
        #[source]
        source: WorkloadError,
    },
    /// A workload thread panicked.
    #[error("the {0} workload thread panicked")]
    WorkloadPanicked(&'static str),
    /// The controller refused or did not answer a request.
    #[error("controller request `{request}` failed")]
    Controller {
        /// What was asked.
        request: String,
        /// Why.
        #[source]
        source: ClientError,
    },
    /// The in-process controller could not start.
    #[error("the controller could not start")]
    ControllerStart(#[source] srmig_controller::DaemonError),
    /// The controller process (`srmig controller`) exited or never answered.
    #[error("{0}")]
    ControllerProcess(String),
    /// A srmigd process exited or never answered.
    #[error("srmigd on host {host} {what}; its log ({log}) ends with:\n{tail}")]
    Srmigd {
        /// The host.
        host: String,
        /// What went wrong ("exited", "did not come up within 10 s").
        what: String,
        /// Its log file.
        log: PathBuf,
        /// The last lines of that log.
        tail: String,
    },
    /// A migration did not complete.
    #[error("{0}")]
    MigrationFailed(Box<MigrationFailure>),
    /// Something did not happen in time.
    #[error("{what} did not happen within {waited:?}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        waited: Duration,
    },
    /// The VM is not reachable from the client after setup.
    #[error("the client VM cannot reach {target} after setup ({detail})")]
    NoConnectivity {
        /// The address probed.
        target: String,
        /// What was observed.
        detail: String,
    },
    /// A file could not be written or read.
    #[error("{action} {path} failed")]
    File {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A run failed; its work directory (configurations, srmigd logs) was kept.
    #[error(
        "{}; configurations and srmigd logs are kept in {}",
        super::control::error_chain(inner),
        dir.display()
    )]
    LogsKept {
        /// The kept directory.
        dir: PathBuf,
        /// What failed (its causes are part of this error's message).
        inner: Box<OrchestrateError>,
    },
    /// The table or plots could not be written.
    #[error(transparent)]
    Paper(#[from] crate::paper::PaperError),
    /// The async runtime hosting the controller could not be built.
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
}

impl OrchestrateError {
    pub(crate) fn workload(
        workload: &'static str,
    ) -> impl FnOnce(WorkloadError) -> OrchestrateError {
        move |source| OrchestrateError::Workload { workload, source }
    }

    pub(crate) fn controller(request: impl Into<String>) -> impl FnOnce(ClientError) -> Self {
        let request = request.into();
        move |source| OrchestrateError::Controller { request, source }
    }
}

/// A migration that ended other than `completed`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("migration {id} of {vm} from {from} to {to} ended {phase}: {reason}")]
pub struct MigrationFailure {
    /// Migration id (display form).
    pub id: String,
    /// The VM.
    pub vm: String,
    /// Source host.
    pub from: String,
    /// Destination host.
    pub to: String,
    /// The terminal phase reached.
    pub phase: String,
    /// The controller's reason.
    pub reason: String,
}

impl MigrationFailure {
    pub(crate) fn of(status: &srmig_api::MigrationStatus) -> OrchestrateError {
        OrchestrateError::MigrationFailed(Box::new(MigrationFailure {
            id: format!("m{}", status.id.0),
            vm: status.vm.to_string(),
            from: status.from.to_string(),
            to: status.to.to_string(),
            phase: status.phase.to_string(),
            reason: status
                .error
                .clone()
                .unwrap_or_else(|| "no reason given".into()),
        }))
    }
}
