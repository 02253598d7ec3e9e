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
//! ## The exact take-back (`pause-before-switchover`)
//! When the source QEMU of a migration has the `pause-before-switchover` capability (the
//! controller's QMP driver sets it), the watch makes the take-back at the stop exact: no frame
//! lost, none the guest already got sent again (docs/qemu.md, "An exact take-back"):
//!
//! ```text
//!  QEMU S                         watch task                      dataplane thread
//!  MIGRATION setup ─────────────► caps? pause-before-switchover
//!                                 QemuQuiesce ──────────────────► hold writes; QEMU reads all
//!                                 ◄─────────────────────────────── frames written n
//!  x-query-virtio-queue-status ◄─ used-idx u0 (rx queue 0)
//!                                 QemuBase(n, u0) ───────────────► base; writes go on
//!  STOP ────────────────────────► deferred: the VM stays "running" for srmigd, frames keep
//!                                 going into the stopped QEMU's socket, unread
//!  MIGRATION pre-switchover ────► used-idx u1 (QEMU waits; the destination cannot resume)
//!                                 QemuSwitchover(u1) ────────────► paused; take back every
//!                                                                  frame after the first
//!                                                                  u1 - u0 written since the
//!                                 ◄─────────────────────────────── base; re-steer (End.S → D)
//!  ◄── migrate-continue ─────────
//! ```
//!
//! Without the capability, or when a step fails (no single virtio-net device, QEMU did not
//! read everything within [`crate::dataplane_loop::QUIESCE_WAIT`], the guest's receive queue
//! not idle, its receive filter changed during the migration), the STOP is reported at once
//! and the older rules decide (counted `recovery_count_refused` where a count was wanted).
//! With `migrate_continue = true` (`[[qemu]]`, for srmig's own QMP driver) the watch then
//! sends `migrate-continue`, in every case; the driver continues by itself after a timeout if
//! no srmigd does. Without it srmigd leaves that to whoever paused the source: libvirt sets
//! `pause-before-switchover` itself and fails the migration if someone else continued first.
//! It may continue before srmigd's take-back is done; the count stays exact (the stopped
//! source keeps its device state until it exits), and the re-steered frames still reach D's
//! End.SBUF long before libvirt resumes the destination.
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
use srmig_qmp::{Client, ClientConfig, EventKind, MigrationCapability, MigrationStatus};
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

/// What the dataplane took back at a `pre-switchover` ([`crate::mailbox::Command::QemuSwitchover`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TakeBack {
    /// Frames taken back and re-steered.
    pub frames: usize,
    /// The guest's count decided: this many frames it did not get.
    pub counted: Option<usize>,
    /// Why the count was not used.
    pub count_refused: Option<&'static str>,
}

/// The exact take-back's progress through one migration of the watched QEMU.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Switchover {
    /// Bases tried for the migration in progress.
    tries: u8,
    /// The base is set: the STOP waits for `pre-switchover`.
    armed: bool,
    /// The guest's receive filter changed since the base (a driver reset moves `used-idx`).
    spoiled: bool,
    /// A deferred STOP.
    stop: Option<DeferredStop>,
}

/// A STOP held back until `pre-switchover`: its timestamp and the last PASS before it.
type DeferredStop = (Option<i64>, Option<i64>);

impl Switchover {
    /// A migration started (`setup`/`active`): whether to try a base now.
    fn on_migration_start(&mut self) -> bool {
        let first = self.tries == 0;
        if first {
            self.tries = 1;
        }
        first
    }

    /// A pre-copy pass ended: whether to try a base again (the migration's first try failed,
    /// e.g. a guest too busy to keep free receive buffers, and no STOP came yet).
    fn on_pass(&mut self) -> bool {
        let again = (1..MAX_BASE_TRIES).contains(&self.tries) && !self.armed && self.stop.is_none();
        if again {
            self.tries += 1;
        }
        again
    }

    fn on_base(&mut self, set: bool) {
        self.armed = set;
        self.spoiled = false;
    }

    fn on_rx_filter_changed(&mut self) {
        self.spoiled = true;
    }

    /// A STOP: `true` if it waits for `pre-switchover` (the VM stays running for srmigd).
    fn on_stop(&mut self, at: Option<i64>, pass: Option<i64>) -> bool {
        if self.armed {
            self.stop = Some((at, pass));
        }
        self.armed
    }

    /// At `pre-switchover`: whether the count may be used, and the deferred STOP (its
    /// timestamp and PASS), if any. The migration's state is reset: it ends next.
    fn at_switchover(&mut self) -> (bool, Option<DeferredStop>) {
        let r = (self.armed && !self.spoiled, self.stop);
        *self = Switchover {
            tries: MAX_BASE_TRIES,
            ..Switchover::default()
        };
        r
    }

    /// The migration ended (completed, failed, cancelled): a deferred STOP, if any, is
    /// reported by the `query-status` that follows.
    fn on_migration_end(&mut self) {
        *self = Switchover::default();
    }
}

/// Bases tried per migration: at its start, then at each pre-copy pass until one is set.
const MAX_BASE_TRIES: u8 = 8;

/// How long the watch waits for the dataplane's take-back at `pre-switchover` before it lets
/// QEMU continue anyway.
const SWITCHOVER_WAIT: Duration = Duration::from_secs(1);

/// Reads the state of the receive queue (queue 0) of the QEMU's only virtio-net device.
async fn rx_queue(
    client: &Client,
    path: &mut Option<String>,
) -> Result<srmig_qmp::VirtQueueStatus, String> {
    if path.is_none() {
        let devices = client
            .x_query_virtio()
            .await
            .map_err(|e| format!("x-query-virtio: {e}"))?;
        let mut nets = devices.into_iter().filter(|d| d.name == "virtio-net");
        let first = nets.next().ok_or("no virtio-net device")?;
        if nets.next().is_some() {
            return Err("several virtio-net devices: which one is srmigd's is not known".into());
        }
        *path = Some(first.path);
    }
    let p = path.as_deref().unwrap_or_default();
    client
        .x_query_virtio_queue_status(p, 0)
        .await
        .map_err(|e| format!("x-query-virtio-queue-status: {e}"))
}

/// Tries the base of an exact take-back for the migration in progress ([`take_base`]) and
/// logs the outcome.
async fn try_base(
    client: &Client,
    port: &str,
    handle: &DataplaneHandle,
    path: &mut Option<String>,
    switchover: &mut Switchover,
) {
    let t = std::time::Instant::now();
    let r = take_base(client, port, handle, path).await;
    switchover.on_base(r.is_ok());
    let tries = switchover.tries;
    match r {
        Ok((pushed, used_idx)) => {
            info!(%port, pushed, used_idx, took_us = t.elapsed().as_micros() as u64, tries, "exact take-back armed");
        }
        Err(why) if tries < MAX_BASE_TRIES => {
            info!(%port, %why, tries, "no exact take-back yet (tried again at the next pass)")
        }
        Err(why) => info!(%port, %why, tries, "no exact take-back for this migration"),
    }
}

/// The base of an exact take-back: holds the port's writes until QEMU has read everything,
/// then reads the guest's `used-idx`; `Err` (why) if it cannot be had. The hold is released
/// either way.
async fn take_base(
    client: &Client,
    port: &str,
    handle: &DataplaneHandle,
    path: &mut Option<String>,
) -> Result<(u64, u16), String> {
    let caps = client
        .query_migrate_capabilities()
        .await
        .map_err(|e| format!("query-migrate-capabilities: {e}"))?;
    if !caps
        .iter()
        .any(|(c, on)| *c == MigrationCapability::PauseBeforeSwitchover && *on)
    {
        return Err("pause-before-switchover is off".into());
    }
    let pushed = handle
        .call(|tx| Command::QemuQuiesce(port.to_owned(), tx))
        .await
        .map_err(|_| "dataplane gone".to_owned())?;
    let r = async {
        let pushed = pushed.ok_or("QEMU did not read everything written in time")?;
        let q = rx_queue(client, path).await?;
        // Frames QEMU read but could not hand to a guest without a free buffer wait in QEMU's
        // queue: then everything read is not everything delivered.
        if q.inuse != 0 || q.last_avail_idx.is_none() || q.last_avail_idx == q.shadow_avail_idx {
            return Err(format!(
                "the guest's receive queue is not idle (inuse {}, avail {:?}/{:?})",
                q.inuse, q.last_avail_idx, q.shadow_avail_idx
            ));
        }
        Ok((pushed, q.used_idx))
    }
    .await;
    let _ = handle.send(Command::QemuBase(port.to_owned(), r.as_ref().ok().copied()));
    r
}

/// How long to wait between connection attempts once `connect_retry` gave up.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Follows the QEMU behind `qmp` for `port` until the dataplane is gone. With
/// `migrate_continue`, srmigd continues a source waiting in `pre-switchover` once its take-back
/// is done (srmig's QMP driver waits for that); without, whoever paused it continues it.
pub async fn run(port: String, qmp: PathBuf, migrate_continue: bool, handle: DataplaneHandle) {
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
        let mut switchover = Switchover::default();
        let mut virtio_path: Option<String> = None;
        let mut current = run;
        while let Some(ev) = events.next().await {
            let at = Some(ev.timestamp.as_micros());
            let mut pass = None;
            let update = match &ev.kind {
                EventKind::MigrationPass { .. } => {
                    last_pass.on_pass(at);
                    if current == RunState::Running && switchover.on_pass() {
                        try_base(&client, &port, &handle, &mut virtio_path, &mut switchover).await;
                    }
                    None
                }
                EventKind::Migration {
                    status: MigrationStatus::Setup | MigrationStatus::Active,
                } if current == RunState::Running && switchover.on_migration_start() => {
                    try_base(&client, &port, &handle, &mut virtio_path, &mut switchover).await;
                    None
                }
                EventKind::Other if ev.name == "NIC_RX_FILTER_CHANGED" => {
                    switchover.on_rx_filter_changed();
                    None
                }
                EventKind::Stop => {
                    pass = last_pass.for_stop(at);
                    if switchover.on_stop(at, pass) {
                        debug!(%port, "STOP: the VM stays running for srmigd until pre-switchover");
                        None
                    } else {
                        Some((RunState::Stopped, "STOP"))
                    }
                }
                EventKind::Migration {
                    status: MigrationStatus::PreSwitchover,
                } => {
                    let (count, stop) = switchover.at_switchover();
                    let used_idx = if count {
                        match rx_queue(&client, &mut virtio_path).await {
                            Ok(q) => Some(q.used_idx),
                            Err(why) => {
                                warn!(%port, %why, "used-idx at pre-switchover unknown");
                                None
                            }
                        }
                    } else {
                        None
                    };
                    let (stop_at, stop_pass) = stop.unwrap_or((at, last_pass.for_stop(at)));
                    current = RunState::Stopped;
                    let update = HypervisorUpdate {
                        port: port.clone(),
                        run: RunState::Stopped,
                        cause: "pre-switchover",
                        qemu_at_us: stop_at,
                        last_pass_us: stop_pass,
                    };
                    let took = tokio::time::timeout(
                        SWITCHOVER_WAIT,
                        handle.call(|tx| Command::QemuSwitchover(update, used_idx, tx)),
                    )
                    .await;
                    match took {
                        Ok(Ok(r)) => {
                            info!(%port, frames = r.frames, counted = ?r.counted, refused = ?r.count_refused, "pre-switchover: take-back done")
                        }
                        Ok(Err(_)) => return,
                        Err(_) => {
                            warn!(%port, "pre-switchover: the dataplane did not answer in time; continuing")
                        }
                    }
                    if migrate_continue {
                        if let Err(e) = client
                            .migrate_continue(&MigrationStatus::PreSwitchover)
                            .await
                        {
                            // The controller's driver may have continued first (its timeout).
                            debug!(%port, error = %e, "migrate-continue");
                        }
                    }
                    None
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
                    switchover.on_migration_end();
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
                current = run;
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
    fn a_stop_waits_for_pre_switchover_only_with_a_base() {
        let mut s = Switchover::default();
        assert!(!s.on_pass(), "no migration, no base");
        assert!(s.on_migration_start());
        assert!(!s.on_migration_start(), "one start per migration");
        s.on_base(false);
        // The first base failed: each pass tries again, up to MAX_BASE_TRIES in all.
        for _ in 1..MAX_BASE_TRIES {
            assert!(s.on_pass());
            s.on_base(false);
        }
        assert!(!s.on_pass(), "at most MAX_BASE_TRIES bases");
        assert!(
            !s.on_stop(Some(5), None),
            "no base: the STOP is reported at once"
        );
        assert_eq!(s.at_switchover(), (false, None));
        s.on_migration_end();

        assert!(s.on_migration_start());
        s.on_base(false);
        assert!(s.on_pass(), "a second try at the next pass");
        s.on_base(true);
        assert!(!s.on_pass(), "armed: no more tries");
        assert!(s.on_stop(Some(9), Some(7)));
        assert_eq!(s.at_switchover(), (true, Some((Some(9), Some(7)))));
        assert!(!s.on_migration_start(), "still the same migration");
        s.on_migration_end();

        // The guest's receive filter changed (a driver reset?): the count is not used.
        assert!(s.on_migration_start());
        s.on_base(true);
        s.on_rx_filter_changed();
        assert!(s.on_stop(Some(3), None));
        assert_eq!(s.at_switchover(), (false, Some((Some(3), None))));

        // The migration failed before pre-switchover: the deferred STOP is forgotten (the
        // query-status after the MIGRATION event reports the state).
        s.on_migration_end();
        assert!(s.on_migration_start());
        s.on_base(true);
        assert!(s.on_stop(Some(1), None));
        s.on_migration_end();
        assert_eq!(s, Switchover::default());
    }

    /// A QEMU on an in-memory stream that answers each command with `answer(name)`.
    async fn fake_qemu(answer: fn(&str) -> serde_json::Value) -> Client {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let (client, server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let (r, mut w) = tokio::io::split(server);
            let mut lines = tokio::io::BufReader::new(r).lines();
            let greeting = r#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": ""}, "capabilities": []}}"#;
            w.write_all(format!("{greeting}\r\n").as_bytes())
                .await
                .expect("greet");
            while let Ok(Some(line)) = lines.next_line().await {
                let msg: serde_json::Value = serde_json::from_str(&line).expect("command");
                let name = msg["execute"].as_str().unwrap_or_default().to_owned();
                let ret = if name == "qmp_capabilities" {
                    serde_json::json!({})
                } else {
                    answer(&name)
                };
                let reply = serde_json::json!({"return": ret, "id": msg["id"]});
                w.write_all(format!("{reply}\r\n").as_bytes())
                    .await
                    .expect("reply");
            }
        });
        Client::handshake(client, ClientConfig::default())
            .await
            .expect("handshake")
    }

    /// A dataplane that answers a quiesce with `quiet` and records the base it is sent.
    fn fake_dataplane(
        quiet: Option<u64>,
    ) -> (
        DataplaneHandle,
        std::sync::mpsc::Receiver<Option<(u64, u16)>>,
    ) {
        let (handle, rx, _wake) = DataplaneHandle::new().expect("handle");
        let (tx, bases) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            while let Ok(cmd) = rx.recv() {
                match cmd {
                    Command::QemuQuiesce(port, reply) => {
                        assert_eq!(port, "vm0");
                        let _ = reply.send(quiet);
                    }
                    Command::QemuBase(_, base) => {
                        let _ = tx.send(base);
                    }
                    _ => {}
                }
            }
        });
        (handle, bases)
    }

    fn caps(on: bool) -> serde_json::Value {
        serde_json::json!([
            {"capability": "events", "state": true},
            {"capability": "pause-before-switchover", "state": on}
        ])
    }

    fn virtio() -> serde_json::Value {
        serde_json::json!([
            {"path": "/machine/peripheral-anon/device[1]/virtio-backend", "name": "virtio-blk"},
            {"path": "/machine/peripheral-anon/device[0]/virtio-backend", "name": "virtio-net"}
        ])
    }

    fn queue(inuse: u32, last_avail: u16, shadow_avail: u16) -> serde_json::Value {
        serde_json::json!({"queue-index": 0, "inuse": inuse, "last-avail-idx": last_avail,
            "shadow-avail-idx": shadow_avail, "used-idx": last_avail, "name": "virtio-net",
            "vring-num": 256})
    }

    #[tokio::test]
    async fn a_base_is_the_frames_written_and_the_guests_used_idx_of_an_idle_queue() {
        let client = fake_qemu(|name| match name {
            "query-migrate-capabilities" => caps(true),
            "x-query-virtio" => virtio(),
            "x-query-virtio-queue-status" => queue(0, 857, 1080),
            other => panic!("unexpected {other}"),
        })
        .await;
        let (handle, bases) = fake_dataplane(Some(42));
        let mut path = None;
        let r = take_base(&client, "vm0", &handle, &mut path).await;
        assert_eq!(r, Ok((42, 857)));
        assert_eq!(
            path.as_deref(),
            Some("/machine/peripheral-anon/device[0]/virtio-backend")
        );
        assert_eq!(bases.recv().expect("base sent"), Some((42, 857)));
    }

    #[tokio::test]
    async fn no_base_without_the_capability_a_quiet_port_or_an_idle_queue() {
        // The capability is off: the port is not even held.
        let client = fake_qemu(|name| match name {
            "query-migrate-capabilities" => caps(false),
            other => panic!("unexpected {other}"),
        })
        .await;
        let (handle, bases) = fake_dataplane(Some(1));
        let r = take_base(&client, "vm0", &handle, &mut None).await;
        assert_eq!(r, Err("pause-before-switchover is off".to_owned()));
        assert!(
            bases.try_recv().is_err(),
            "nothing held, nothing to release"
        );

        // QEMU did not read everything in time: the hold is released without a base.
        let client = fake_qemu(|name| match name {
            "query-migrate-capabilities" => caps(true),
            other => panic!("unexpected {other}"),
        })
        .await;
        let (handle, bases) = fake_dataplane(None);
        let r = take_base(&client, "vm0", &handle, &mut None).await;
        assert!(r.is_err());
        assert_eq!(bases.recv().expect("release"), None);

        // Frames wait in QEMU's queue (no free buffer): read is not delivered.
        let client = fake_qemu(|name| match name {
            "query-migrate-capabilities" => caps(true),
            "x-query-virtio" => virtio(),
            "x-query-virtio-queue-status" => queue(0, 1080, 1080),
            other => panic!("unexpected {other}"),
        })
        .await;
        let (handle, bases) = fake_dataplane(Some(5));
        let r = take_base(&client, "vm0", &handle, &mut None).await;
        assert!(r.expect_err("not idle").contains("not idle"));
        assert_eq!(bases.recv().expect("release"), None);
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
