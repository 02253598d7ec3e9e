//! Hypervisor drivers: what carries out the core's `StartMigration` and `CancelMigration`.
//!
//! A driver reports back through its [`ReportSink`] with [`HypervisorReport`]s (tagged with the
//! migration id, so a late event of an older migration is recognised as stale by the core).
//!
//! - [`External`]: the hypervisor is outside the controller. For the netns lab, the lab owns the
//!   namespaces: it polls `GET /v1/migrations/{id}` until the phase is
//!   `expect-hypervisor-done`, moves the VM (pause at S, downtime, resume at D) and posts the
//!   outcome to `POST /v1/migrations/{id}/hypervisor`. A cancel shows in the migration's history
//!   as `cancel-requested`; the lab answers it with `cancelled` (or `completed` if too late).
//! - [`crate::qmp_driver::Qmp`]: QEMU over QMP. `start` has the destination QEMU started
//!   (`-incoming defer`, by a [`crate::qmp_driver::QemuLauncher`]), issues `migrate-incoming` and
//!   `migrate`, follows `query-migrate` (progress in the migration's status) and reports the
//!   outcome; `cancel` issues `migrate_cancel`; `resume` re-attaches to a migration QEMU is
//!   still running after a controller restart and finishes it or rolls it back. See
//!   `docs/qemu.md`.

use std::fmt;

use srmig_api::{HostId, HypervisorProgress, HypervisorReport, MigrationId, Strategy, VmId};
use tokio::sync::mpsc;

use crate::mailbox::Command;

/// One migration, as handed to a driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationOrder {
    /// The migration.
    pub id: MigrationId,
    /// The VM.
    pub vm: VmId,
    /// The source host.
    pub from: HostId,
    /// The destination host.
    pub to: HostId,
    /// The strategy (`None` for a cancel order, where it does not matter).
    pub strategy: Option<Strategy>,
}

/// Where a driver sends what the hypervisor did. Cheap to clone; keep one per migration.
#[derive(Debug, Clone)]
pub struct ReportSink {
    tx: mpsc::Sender<Command>,
}

impl ReportSink {
    pub(crate) fn new(tx: mpsc::Sender<Command>) -> Self {
        ReportSink { tx }
    }

    /// Hands a report to the controller. Returns false if the controller has shut down.
    pub async fn report(&self, report: HypervisorReport) -> bool {
        self.tx
            .send(Command::HypervisorReport(report))
            .await
            .is_ok()
    }

    /// Hands the hypervisor's progress of migration `id` to the controller (shown in the
    /// migration's status as `hypervisor`). Never waits: dropped if the controller is busy.
    pub fn progress(&self, id: MigrationId, progress: HypervisorProgress) {
        let _ = self.tx.try_send(Command::HypervisorProgress(id, progress));
    }

    /// Hands the hypervisor's final figures of migration `id` (completion, pause, downtime)
    /// to the controller, waiting for room: unlike [`progress`](Self::progress), never
    /// dropped. Send it before the [`report`](Self::report) that ends the migration, so the
    /// status that shows the end also shows the figures. `false` if the controller is gone.
    pub async fn final_progress(&self, id: MigrationId, progress: HypervisorProgress) -> bool {
        self.tx
            .send(Command::HypervisorProgress(id, progress))
            .await
            .is_ok()
    }
}

/// Runs migrations on a hypervisor. Methods must not block: a driver that talks to a
/// hypervisor spawns a task and reports through the sink.
pub trait HypervisorDriver: fmt::Debug + Send + Sync + 'static {
    /// A short name for logs (`external`, `qmp`).
    fn name(&self) -> &'static str;

    /// What a migration waiting for this driver waits for, as a sentence fragment that
    /// follows "waiting for" (shown by `srmig migrate` and `GET /v1/info`); `{id}` stands for
    /// the migration's number.
    fn waits_for(&self) -> &'static str {
        "the hypervisor driver to move the VM and report the outcome"
    }

    /// Start migrating `order.vm` from `order.from` to `order.to`.
    fn start(&self, order: MigrationOrder, reports: ReportSink);

    /// Cancel the migration (answer with `cancelled`, or `completed` if it was too late).
    fn cancel(&self, order: MigrationOrder, reports: ReportSink);

    /// The controller restarted while `order` was running on the hypervisor: re-attach to it
    /// and report its outcome (again) when known. The default does nothing.
    fn resume(&self, order: MigrationOrder, reports: ReportSink) {
        let _ = (order, reports);
    }
}

/// The hypervisor is driven from outside (the netns lab, or an operator); see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct External;

impl HypervisorDriver for External {
    fn name(&self) -> &'static str {
        "external"
    }

    fn waits_for(&self) -> &'static str {
        "an outside party (the lab, or an operator) to move the VM and post the outcome to \
         POST /v1/migrations/{id}/hypervisor, or the destination's srmigd to report the VM running"
    }

    fn start(&self, order: MigrationOrder, _reports: ReportSink) {
        tracing::info!(
            migration = %order.id, vm = %order.vm, from = %order.from, to = %order.to,
            "waiting for the external hypervisor to move the VM and post its outcome"
        );
    }

    fn cancel(&self, order: MigrationOrder, _reports: ReportSink) {
        tracing::info!(
            migration = %order.id, vm = %order.vm,
            "cancel requested; waiting for the external hypervisor to post its outcome"
        );
    }
}
