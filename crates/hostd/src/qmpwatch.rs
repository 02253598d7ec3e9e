//! VM state from QEMU itself: one task per QEMU port with a `qmp` socket follows the QEMU's
//! run state over QMP and tells the dataplane thread at once.
//!
//! ```text
//!  QEMU ──QMP event socket──► watch task (tokio, API thread)
//!   greeting, qmp_capabilities, query-status ─► HypervisorUpdate(port, run state)
//!   STOP ─► Stopped     RESUME ─► Running     SHUTDOWN / EOF ─► Gone
//!   MIGRATION completed|failed|cancelled ─► query-status (source: postmigrate ─► Gone)
//!        │ Command::Hypervisor + eventfd wake (no await on the dataplane)
//!        ▼
//!  dataplane thread: VM state = f(stream connected, run state) ([`vm_state_for`]);
//!  Running → not Running while connected: recover unread frames (port::qemu) and re-steer
//! ```
//!
//! The task reconnects forever (every QEMU of a VM on this host uses the same socket paths: a
//! VM that migrates away and back gets a new QEMU at the same place). QEMU timestamps travel
//! with each update so the loop can log how long after the STOP it learned of it.
//!
//! A QMP socket serves one client, so srmigd needs its own `-qmp` socket; the controller's
//! QMP driver uses another one (see docs/qemu.md).

use std::path::PathBuf;
use std::time::Duration;

use srmig_dataplane::VmState;
use srmig_qmp::{Client, ClientConfig, EventKind, MigrationStatus};
use tracing::{debug, info, warn};

use crate::dataplane_loop::DataplaneHandle;
use crate::mailbox::Command;

/// QEMU's run state, as far as srmigd cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// The vCPUs run.
    Running,
    /// Stopped but still the VM's home (`STOP`, stop-and-copy, `paused`, errors).
    Stopped,
    /// Waiting for an incoming migration (`inmigrate`, `prelaunch`): not here yet.
    Incoming,
    /// Gone: migrated away (`postmigrate`), shut down, or the QEMU exited.
    Gone,
}

impl RunState {
    /// From QEMU's `query-status`.
    pub fn from_qemu(s: &srmig_qmp::RunState) -> RunState {
        use srmig_qmp::RunState as Q;
        match s {
            Q::Running => RunState::Running,
            Q::Inmigrate | Q::Prelaunch => RunState::Incoming,
            Q::Postmigrate | Q::Shutdown => RunState::Gone,
            _ => RunState::Stopped,
        }
    }
}

/// What the watch of one QEMU port learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HypervisorUpdate {
    /// The node-config port of the QEMU.
    pub port: String,
    /// Its run state now.
    pub run: RunState,
    /// What told us (`STOP`, `RESUME`, `query-status`, `disconnected`, ...).
    pub cause: &'static str,
    /// QEMU's timestamp of the event (µs since the Unix epoch), if it was an event.
    pub qemu_at_us: Option<i64>,
    /// For a STOP that ends a migration's pre-copy: the timestamp of the `MIGRATION_PASS`
    /// event just before it, an instant QEMU still ran. QEMU leaves the running state (and
    /// refuses frames for the guest) after that pass and before it emits STOP (0.1–3 ms
    /// later under TCG, 12.5 ms seen on a loaded machine).
    pub last_pass_us: Option<i64>,
}

/// The last `MIGRATION_PASS` of the migration in progress. QEMU ends every pre-copy with a
/// dirty-bitmap sync (a PASS) and stops the VM after it, so any PASS of the migration marks an
/// instant the VM still ran, however long a starved migration thread takes to reach the STOP
/// (an earlier one only takes back more frames). A PASS of a migration that ended says
/// nothing about a later STOP.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct LastPass(Option<i64>);

impl LastPass {
    fn on_pass(&mut self, at_us: Option<i64>) {
        self.0 = at_us;
    }

    fn on_migration_end(&mut self) {
        self.0 = None;
    }

    /// The PASS to use for a STOP at `stop_us`.
    fn for_stop(&self, stop_us: Option<i64>) -> Option<i64> {
        self.0.filter(|p| stop_us.is_some_and(|s| s >= *p))
    }
}

/// The VM state of a QEMU port's VMs with a QMP watch: QEMU's run state decides, the stream
/// attachment is needed to deliver. `run` is `None` until the watch has connected once.
pub fn vm_state_for(connected: bool, run: Option<RunState>) -> VmState {
    match run {
        Some(RunState::Running) if connected => VmState::Running,
        Some(RunState::Running) | Some(RunState::Stopped) => VmState::Paused,
        Some(RunState::Incoming) | Some(RunState::Gone) | None => VmState::Absent,
    }
}

/// How long to wait between connection attempts once `connect_retry` gave up.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Follows the QEMU behind `qmp` for `port` until the dataplane is gone.
pub async fn run(port: String, qmp: PathBuf, handle: DataplaneHandle) {
    let send =
        |run: RunState, cause: &'static str, qemu_at_us: Option<i64>, last_pass_us: Option<i64>| {
            handle
                .send(Command::Hypervisor(HypervisorUpdate {
                    port: port.clone(),
                    run,
                    cause,
                    qemu_at_us,
                    last_pass_us,
                }))
                .is_ok()
        };
    let config = ClientConfig {
        greeting_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(10),
        event_capacity: 256,
    };
    let mut logged_wait = false;
    loop {
        let client = match Client::connect_retry(&qmp, Duration::from_secs(3600), config.clone())
            .await
        {
            Ok(c) => c,
            Err(e) => {
                if !logged_wait {
                    warn!(%port, qmp = %qmp.display(), error = %e, "cannot connect to QEMU's QMP socket; retrying");
                    logged_wait = true;
                }
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        logged_wait = false;
        let mut events = client.subscribe();
        let run = match client.query_status().await {
            Ok(s) => RunState::from_qemu(&s.status),
            Err(e) => {
                warn!(%port, error = %e, "query-status failed; reconnecting");
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        info!(%port, qmp = %qmp.display(), version = %client.greeting().version, ?run, "QMP watch connected");
        if !send(run, "query-status", None, None) {
            return;
        }
        let mut last_pass = LastPass::default();
        while let Some(ev) = events.next().await {
            let at = Some(ev.timestamp.as_micros());
            let mut pass = None;
            let update = match &ev.kind {
                EventKind::MigrationPass { .. } => {
                    last_pass.on_pass(at);
                    None
                }
                EventKind::Stop => {
                    pass = last_pass.for_stop(at);
                    Some((RunState::Stopped, "STOP"))
                }
                EventKind::Resume => Some((RunState::Running, "RESUME")),
                EventKind::Shutdown { .. } => Some((RunState::Gone, "SHUTDOWN")),
                EventKind::Migration {
                    status:
                        MigrationStatus::Completed
                        | MigrationStatus::Failed
                        | MigrationStatus::Cancelled,
                } => {
                    last_pass.on_migration_end();
                    match client.query_status().await {
                        Ok(s) => Some((RunState::from_qemu(&s.status), "MIGRATION")),
                        Err(e) => {
                            debug!(%port, error = %e, "query-status after MIGRATION failed");
                            None
                        }
                    }
                }
                _ => None,
            };
            if let Some((run, cause)) = update {
                if !send(run, cause, at, pass) {
                    return;
                }
            }
        }
        info!(%port, "QMP connection closed (QEMU exited?)");
        if !send(RunState::Gone, "disconnected", None, None) {
            return;
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_state_from_qemu() {
        use srmig_qmp::RunState as Q;
        assert_eq!(RunState::from_qemu(&Q::Running), RunState::Running);
        assert_eq!(RunState::from_qemu(&Q::Inmigrate), RunState::Incoming);
        assert_eq!(RunState::from_qemu(&Q::Postmigrate), RunState::Gone);
        assert_eq!(RunState::from_qemu(&Q::FinishMigrate), RunState::Stopped);
        assert_eq!(RunState::from_qemu(&Q::Paused), RunState::Stopped);
        assert_eq!(
            RunState::from_qemu(&Q::Unknown("new-state".into())),
            RunState::Stopped
        );
    }

    #[test]
    fn the_last_pass_of_the_migration_in_progress_is_used_however_old() {
        let mut p = LastPass::default();
        assert_eq!(p.for_stop(Some(1_000)), None);
        p.on_pass(Some(1_000));
        p.on_pass(Some(2_000));
        assert_eq!(p.for_stop(Some(2_300)), Some(2_000));
        // A migration thread starved for 80 ms between the last pass and the stop.
        assert_eq!(p.for_stop(Some(82_000)), Some(2_000));
        assert_eq!(p.for_stop(Some(1_500)), None, "a PASS after the STOP");
        // The migration failed; a later STOP (a `stop` command) has no PASS.
        p.on_migration_end();
        assert_eq!(p.for_stop(Some(90_000)), None);
    }

    #[test]
    fn vm_state_needs_both_qemu_running_and_the_stream() {
        assert_eq!(
            vm_state_for(true, Some(RunState::Running)),
            VmState::Running
        );
        assert_eq!(
            vm_state_for(false, Some(RunState::Running)),
            VmState::Paused
        );
        assert_eq!(vm_state_for(true, Some(RunState::Stopped)), VmState::Paused);
        // The destination QEMU is connected long before it resumes: not here yet.
        assert_eq!(
            vm_state_for(true, Some(RunState::Incoming)),
            VmState::Absent
        );
        assert_eq!(vm_state_for(true, Some(RunState::Gone)), VmState::Absent);
        // Never trust the stream alone when QMP is configured.
        assert_eq!(vm_state_for(true, None), VmState::Absent);
    }
}
