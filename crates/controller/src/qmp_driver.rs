//! The QMP hypervisor driver: live-migrates QEMU guests for the controller.
//!
//! ```text
//!  controller core            Qmp driver (task per migration)         QEMU on S        QEMU on D
//!   StartMigration ─────────► connect S's QMP, query-status=running ──►│                 │
//!   (SR path already armed)   launcher.start_destination(vm, D) ──────────────────────► -incoming defer
//!                             D: qmp_capabilities, migrate-set-capabilities events,     │
//!                                migrate-incoming <uri> ──────────────────────────────►│ (listening)
//!                             S: migrate-set-capabilities events [+ parameters],        │
//!                                migrate <uri> ────────────────────►│ pre-copy ───────►│
//!                             every `poll`: S query-migrate ───────►│                   │
//!   status.hypervisor ◄────── progress (status, RAM, passes)        │ STOP              │
//!                             STOP (S) and RESUME (D) timestamps ◄──┘ ─────────────────►│ RESUME
//!   VmState(D running) ◄───────────────── srmigd on D (its own QMP watch) ◄─────────────┘
//!   Hypervisor: completed ◄── completed: report, then S `quit`, launcher.stop(S); D is the VM's QEMU
//!                             failed/cancelled: S `cont` if it stopped, D `quit` + stop; report
//! ```
//!
//! The controller core arms the SR path before `StartMigration` and commits after the
//! destination srmigd reports the VM running (it learns that from its own QMP socket, see
//! `srmigd`'s `qmpwatch`); the driver reports `completed` as an observation and owns every QEMU
//! process it starts: on failure or cancel the destination QEMU is told to quit and stopped
//! through the launcher, and the source keeps (or is put back to) running.
//!
//! Who starts QEMU: the initial QEMU of a VM is started by whoever deploys the VM. The driver
//! finds it registered with [`Qmp::register`] (the lab, in process) or, failing that, at the
//! source host's QMP endpoint ([`QmpEndpoints`]: a path template per host, `srmig controller
//! --qmp-endpoint HOST=PATH`). Destination QEMUs are started by the driver through a
//! [`QemuLauncher`]: the lab's (it knows namespaces, disks and command lines) or
//! [`CommandLauncher`](crate::qemu_hook::CommandLauncher), an operator's hook program. The
//! driver remembers which QEMU currently runs each VM, so S -> D -> S just works.
//!
//! One QMP socket serves one client: the driver needs its own socket on every QEMU (srmigd
//! watches another one). QMP sockets are unix sockets on the controller's machine: a QEMU on
//! another machine is reached through a forwarded socket (see [`QmpEndpoints`]).
//!
//! ## After a controller restart
//!
//! The driver's state is in memory. [`HypervisorDriver::resume`] re-attaches to a migration the
//! restored core still waits for: it connects to the source QEMU (registered, or at the source
//! host's endpoint) and to the destination's endpoint, and decides from the source's
//! `query-migrate` and `query-status`:
//!
//! | source QEMU | destination QEMU | what the driver does |
//! |---|---|---|
//! | migration in progress (`setup`, `active`, `device`, post-copy, ...) | any | follows it as after `migrate` (progress, cancel, timeout), then as below |
//! | `completed`, `postmigrate` | running | final figures (no STOP/RESUME times), `completed`; D is the VM's QEMU; S `quit` + stop |
//! | `completed`, `postmigrate` | not running | S `cont`, D `quit` + stop; `failed` |
//! | anything else (`failed`, `cancelled`, `none`; or running) | any | S `cont` if stopped, D `quit` + stop; `failed` saying so |
//! | QMP socket gone | running | `completed` (S quit after completing, before the restart) |
//! | QMP socket gone | not running | D `quit` + stop; `failed` |
//! | QMP socket gone | gone | `failed` naming both sockets |
//!
//! A destination that cannot be reached while the source still migrates is not trusted to
//! finish: the driver cancels the migration (the VM stays on the source) and reports `failed`.
//! If the source completed and the destination cannot be checked, neither QEMU is touched (the
//! destination may run the VM: resuming the source would run it twice) and `failed` says so.
//! QEMUs re-attached to carry the launcher handle 0 (unknown).

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use srmig_api::{
    HostId, HypervisorEvent, HypervisorProgress, HypervisorReport, MigrationId, NameError, VmId,
};
use srmig_qmp::{
    Client, ClientConfig, EventKind, Events, MigrationCapability, MigrationInfo,
    MigrationParameters, MigrationStatus, RunState,
};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::driver::{HypervisorDriver, MigrationOrder, ReportSink};
use crate::push::error_chain as chain;

/// One QEMU process running (or ready to receive) a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuInstance {
    /// The host it runs on.
    pub host: HostId,
    /// The QMP socket reserved for the driver (`-qmp unix:PATH,server=on,wait=off`).
    pub qmp: PathBuf,
    /// Where a destination QEMU receives the migration stream (`tcp:[addr]:port`); the
    /// source connects there. `None` for a QEMU that is not a destination.
    pub incoming: Option<String>,
    /// The launcher's handle for the process (e.g. its pid); opaque to the driver. 0 when
    /// unknown: a QEMU found at its host's endpoint rather than started by the launcher.
    pub handle: u64,
}

/// Starts and stops QEMU processes on the hosts (the lab's side of the driver, or an
/// operator's hook program through [`CommandLauncher`](crate::qemu_hook::CommandLauncher)).
pub trait QemuLauncher: fmt::Debug + Send + Sync + 'static {
    /// Starts the destination QEMU for `vm` on `host`: the same machine, memory, devices and
    /// MAC as the source, `-incoming defer`, its `-netdev stream` socket where that host's
    /// srmigd expects it, a QMP socket for srmigd and one for the driver. Returns once QEMU
    /// runs (its QMP socket may appear a moment later: the driver retries). Called from a
    /// blocking thread.
    fn start_destination(&self, vm: &VmId, host: &HostId) -> Result<QemuInstance, String>;

    /// Stops `instance` for good (kill if still alive, reap, remove its files). Called from a
    /// blocking thread, after the driver has asked QEMU to quit; must be idempotent. The
    /// handle is 0 when the driver does not know it (after a controller restart).
    fn stop(&self, vm: &VmId, instance: &QemuInstance);
}

/// Driver settings.
#[derive(Debug, Clone)]
pub struct QmpSettings {
    /// How often `query-migrate` is polled (progress, completion).
    pub poll: Duration,
    /// How long a QMP socket may take to appear and answer.
    pub connect_timeout: Duration,
    /// QMP command timeout.
    pub command_timeout: Duration,
    /// The longest a migration may run before the driver cancels it (counted again from a
    /// re-attach after a controller restart).
    pub migration_timeout: Duration,
    /// How long to wait after the destination QEMU started before `migrate`, so the
    /// destination srmigd attaches its stream socket (it retries every 50 ms).
    pub attach_grace: Duration,
    /// Migration parameters set on the source before `migrate` (none: QEMU's defaults).
    pub parameters: Option<MigrationParameters>,
    /// `Some(wait)`: the source gets the `pause-before-switchover` capability, so that the
    /// source host's srmigd takes back exactly what the guest did not get while the source
    /// waits in `pre-switchover`; srmigd then sends `migrate-continue`. If the source is
    /// still waiting `wait` after the driver first saw it there (a host without srmigd's
    /// QMP watch), the driver continues it. `None`: no pause (srmigd's older, inexact rule).
    pub switchover_wait: Option<Duration>,
}

impl Default for QmpSettings {
    fn default() -> Self {
        QmpSettings {
            poll: Duration::from_millis(50),
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(10),
            migration_timeout: Duration::from_secs(300),
            attach_grace: Duration::from_millis(150),
            parameters: None,
            switchover_wait: Some(Duration::from_millis(500)),
        }
    }
}

/// How long a re-attach waits for a QMP socket to answer (a running QEMU's socket exists).
const REATTACH_CONNECT: Duration = Duration::from_secs(2);

/// Where the driver finds the QMP socket of a VM's QEMU on each host: a path template per
/// host, `{vm}` standing for the VM's name (`/run/srmig/qemu/{vm}.qmp`). VM names hold only
/// `[A-Za-z0-9._-]` and do not start with `.`, so the name cannot leave the directory.
///
/// The paths are unix sockets on the controller's machine (`srmig_qmp` speaks QMP over unix
/// sockets only). A QEMU on another machine is reached through its socket forwarded to the
/// controller's machine at the endpoint's path (`ssh -L LOCAL.qmp:REMOTE.qmp`, socat); a
/// [`CommandLauncher`](crate::qemu_hook::CommandLauncher) hook may set up that forward for a
/// destination and name its local end in its answer's `qmp`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QmpEndpoints {
    templates: HashMap<HostId, String>,
}

/// A refused QMP endpoint, or a host without one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// The argument is not `HOST=PATH`.
    #[error("`{arg}`: expected HOST=PATH, e.g. h1=/run/srmig/qemu/{{vm}}.qmp")]
    NotHostEqualsPath {
        /// The refused argument.
        arg: String,
    },
    /// The host name is not a valid name.
    #[error("`{arg}`: bad host name: {error}")]
    BadHost {
        /// The refused argument.
        arg: String,
        /// Why the name was refused.
        error: NameError,
    },
    /// The template is not an absolute path.
    #[error("host {host}: QMP endpoint `{template}` is not an absolute path")]
    NotAbsolute {
        /// The host.
        host: HostId,
        /// The refused template.
        template: String,
    },
    /// The template has braces other than `{vm}`.
    #[error("host {host}: QMP endpoint `{template}`: only {{vm}} may stand in braces")]
    BadPlaceholder {
        /// The host.
        host: HostId,
        /// The refused template.
        template: String,
    },
    /// The host was given twice.
    #[error("host {host} is given two QMP endpoints: `{first}` and `{second}`")]
    Duplicate {
        /// The host.
        host: HostId,
        /// The endpoint given first.
        first: String,
        /// The endpoint given again.
        second: String,
    },
    /// No endpoint for the host.
    #[error("host {host} has no QMP endpoint (srmig controller --qmp-endpoint {host}=PATH)")]
    NoEndpoint {
        /// The host.
        host: HostId,
    },
}

impl QmpEndpoints {
    /// No endpoints.
    pub fn new() -> QmpEndpoints {
        QmpEndpoints::default()
    }

    /// Parses `HOST=PATH` (the argument of `--qmp-endpoint`), without validating the path
    /// ([`insert`](Self::insert) does).
    pub fn parse_arg(arg: &str) -> Result<(HostId, String), EndpointError> {
        let Some((host, path)) = arg.split_once('=') else {
            return Err(EndpointError::NotHostEqualsPath {
                arg: arg.to_owned(),
            });
        };
        if path.is_empty() {
            return Err(EndpointError::NotHostEqualsPath {
                arg: arg.to_owned(),
            });
        }
        let host = HostId::new(host).map_err(|error| EndpointError::BadHost {
            arg: arg.to_owned(),
            error,
        })?;
        Ok((host, path.to_owned()))
    }

    /// Sets `host`'s endpoint: an absolute path, `{vm}` its only placeholder; each host once.
    pub fn insert(
        &mut self,
        host: HostId,
        template: impl Into<String>,
    ) -> Result<(), EndpointError> {
        let template = template.into();
        if !template.starts_with('/') {
            return Err(EndpointError::NotAbsolute { host, template });
        }
        if template.replace("{vm}", "").contains(['{', '}']) {
            return Err(EndpointError::BadPlaceholder { host, template });
        }
        if let Some(first) = self.templates.get(&host) {
            return Err(EndpointError::Duplicate {
                first: first.clone(),
                host,
                second: template,
            });
        }
        self.templates.insert(host, template);
        Ok(())
    }

    /// True if no host has an endpoint.
    pub fn is_empty(&self) -> bool {
        self.templates.is_empty()
    }

    /// The driver's QMP socket of `vm`'s QEMU on `host`.
    pub fn endpoint(&self, host: &HostId, vm: &VmId) -> Result<PathBuf, EndpointError> {
        self.templates
            .get(host)
            .map(|t| PathBuf::from(t.replace("{vm}", vm.as_str())))
            .ok_or_else(|| EndpointError::NoEndpoint { host: host.clone() })
    }
}

#[derive(Debug, Default)]
struct State {
    /// The QEMU that runs each VM now.
    vms: HashMap<VmId, QemuInstance>,
    /// Cancel switches of the migrations in flight.
    active: HashMap<MigrationId, watch::Sender<bool>>,
}

/// The QMP driver (see the module docs). Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct Qmp {
    launcher: Arc<dyn QemuLauncher>,
    settings: QmpSettings,
    endpoints: Arc<QmpEndpoints>,
    state: Arc<Mutex<State>>,
}

/// How a migration task begins.
#[derive(Debug, Clone, Copy)]
enum Attach {
    /// `StartMigration`: start the destination, `migrate`.
    Start,
    /// After a controller restart: find the migration where QEMU has it.
    Resume,
}

impl Qmp {
    /// A driver starting destination QEMUs through `launcher`, with no QMP endpoints (every
    /// VM's first QEMU must be [registered](Self::register)).
    pub fn new(launcher: Arc<dyn QemuLauncher>, settings: QmpSettings) -> Qmp {
        Qmp {
            launcher,
            settings,
            endpoints: Arc::new(QmpEndpoints::new()),
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    /// Finds the QEMUs of VMs that are not registered at their host's endpoint.
    pub fn with_endpoints(mut self, endpoints: QmpEndpoints) -> Qmp {
        self.endpoints = Arc::new(endpoints);
        self
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every critical section is a single map operation: a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers the QEMU that runs `vm` now (the first one, started by whoever deployed it).
    pub fn register(&self, vm: VmId, instance: QemuInstance) {
        self.state().vms.insert(vm, instance);
    }

    /// The driver's settings.
    pub fn settings(&self) -> &QmpSettings {
        &self.settings
    }

    /// The driver's QMP endpoints.
    pub fn endpoints(&self) -> &QmpEndpoints {
        &self.endpoints
    }

    /// The QEMU that runs `vm` now, as far as the driver knows (registered, or recorded at the
    /// end of a migration).
    pub fn instance(&self, vm: &VmId) -> Option<QemuInstance> {
        self.state().vms.get(vm).cloned()
    }

    /// Forgets `vm` (its QEMU is the caller's again) and returns its instance.
    pub fn forget(&self, vm: &VmId) -> Option<QemuInstance> {
        self.state().vms.remove(vm)
    }

    /// Whether a migration is in flight.
    pub fn busy(&self) -> bool {
        !self.state().active.is_empty()
    }

    /// The QEMU that runs `order.vm` on the source: the one the driver knows, else the one at
    /// the source host's endpoint.
    fn source_instance(&self, order: &MigrationOrder) -> Result<QemuInstance, String> {
        let vm = &order.vm;
        if let Some(i) = self.instance(vm) {
            if i.host != order.from {
                return Err(format!(
                    "VM {vm}'s QEMU runs on {}, not on the source {}",
                    i.host, order.from
                ));
            }
            return Ok(i);
        }
        let qmp = self
            .endpoints
            .endpoint(&order.from, vm)
            .map_err(|e| format!("no QEMU is registered for VM {vm} and {e}"))?;
        Ok(QemuInstance {
            host: order.from.clone(),
            qmp,
            incoming: None,
            handle: 0,
        })
    }

    fn client_config(&self) -> ClientConfig {
        ClientConfig {
            greeting_timeout: self.settings.connect_timeout,
            command_timeout: self.settings.command_timeout,
            event_capacity: 1024,
        }
    }

    /// A QEMU of `vm` answering at `host`'s endpoint before a migration to `host` starts is a
    /// leftover: the source of an earlier migration that a controller crash kept from being
    /// retired (the retire runs after the completion is reported, and is not persisted). It is
    /// told to quit and stopped, so the destination QEMU started next is the one the driver
    /// talks to (both would use the same socket path).
    async fn retire_leftover(&self, vm: &VmId, host: &HostId) {
        let Ok(path) = self.endpoints.endpoint(host, vm) else {
            return;
        };
        let Ok(client) = Client::connect_with(&path, self.client_config()).await else {
            return;
        };
        tracing::warn!(%vm, %host, qmp = %path.display(), "a QEMU of the VM is still at the destination (left by a controller restart); retiring it");
        if let Err(e) = client.quit().await {
            tracing::debug!(%vm, error = %chain(&e), "leftover quit failed; stopping it");
        }
        let leftover = QemuInstance {
            host: host.clone(),
            qmp: path,
            incoming: None,
            handle: 0,
        };
        self.stop_instance(vm, &leftover).await;
    }

    async fn stop_instance(&self, vm: &VmId, instance: &QemuInstance) {
        let launcher = Arc::clone(&self.launcher);
        let (vm, instance) = (vm.clone(), instance.clone());
        let _ = tokio::task::spawn_blocking(move || launcher.stop(&vm, &instance)).await;
    }

    fn spawn(&self, order: MigrationOrder, reports: ReportSink, attach: Attach) {
        let (tx, rx) = watch::channel(false);
        self.state().active.insert(order.id, tx);
        tokio::spawn(self.clone().run(order, reports, rx, attach));
    }

    /// Runs one migration to its end and reports the outcome.
    async fn run(
        self,
        order: MigrationOrder,
        sink: ReportSink,
        cancel: watch::Receiver<bool>,
        attach: Attach,
    ) {
        let result = match attach {
            Attach::Start => self.migrate(&order, &sink, cancel).await,
            Attach::Resume => self.reattach(&order, &sink, cancel).await,
        };
        let event = result.unwrap_or_else(HypervisorEvent::Failed);
        tracing::info!(migration = %order.id, vm = %order.vm, ?attach, outcome = ?event, "QMP migration finished");
        self.state().active.remove(&order.id);
        sink.report(HypervisorReport {
            vm: order.vm.clone(),
            migration: order.id,
            event,
        })
        .await;
    }

    /// The migration proper. `Err` is a failure before anything was started on the
    /// destination, or after it was cleaned up.
    async fn migrate(
        &self,
        order: &MigrationOrder,
        sink: &ReportSink,
        mut cancel: watch::Receiver<bool>,
    ) -> Result<HypervisorEvent, String> {
        let vm = &order.vm;
        let src = self.source_instance(order)?;
        let cfg = self.client_config();
        let sq = Client::connect_retry(&src.qmp, self.settings.connect_timeout, cfg.clone())
            .await
            .map_err(|e| {
                format!(
                    "source QEMU's QMP socket {} does not answer: {}",
                    src.qmp.display(),
                    chain(&e)
                )
            })?;
        let st = sq
            .query_status()
            .await
            .map_err(|e| format!("source query-status failed: {}", chain(&e)))?;
        if st.status != RunState::Running {
            return Err(format!(
                "the source QEMU is {}, not running; nothing started",
                st.status
            ));
        }
        self.retire_leftover(vm, &order.to).await;
        let launcher = Arc::clone(&self.launcher);
        let (lvm, lhost) = (vm.clone(), order.to.clone());
        let dst = tokio::task::spawn_blocking(move || launcher.start_destination(&lvm, &lhost))
            .await
            .map_err(|e| format!("the destination launcher panicked: {e}"))?
            .map_err(|e| format!("cannot start the destination QEMU on {}: {e}", order.to))?;
        tracing::info!(migration = %order.id, %vm, host = %dst.host, qmp = %dst.qmp.display(), "destination QEMU started");
        let dq = match Client::connect_retry(&dst.qmp, self.settings.connect_timeout, cfg).await {
            Ok(c) => c,
            Err(e) => {
                self.stop_instance(vm, &dst).await;
                return Err(format!(
                    "destination QEMU's QMP socket {} does not answer: {}",
                    dst.qmp.display(),
                    chain(&e)
                ));
            }
        };
        let outcome = self.switch(order, sink, &sq, &dst, &dq, &mut cancel).await;
        self.conclude(vm, outcome, src, sq, dst, Some(&dq)).await
    }

    /// Re-attaches to `order` after a controller restart (see the module docs' table).
    async fn reattach(
        &self,
        order: &MigrationOrder,
        sink: &ReportSink,
        mut cancel: watch::Receiver<bool>,
    ) -> Result<HypervisorEvent, String> {
        const RESTARTED: &str = "the controller restarted during the migration";
        let vm = &order.vm;
        let src = self.source_instance(order);
        let sq = match &src {
            Ok(s) => self.connect_now("source", &s.qmp).await,
            Err(e) => Err(e.clone()),
        };
        let endpoint = self.endpoints.endpoint(&order.to, vm);
        let dst = QemuInstance {
            host: order.to.clone(),
            qmp: endpoint.clone().unwrap_or_default(),
            incoming: None,
            handle: 0,
        };
        let dq = match endpoint {
            Ok(path) => self.connect_now("destination", &path).await,
            Err(e) => Err(e.to_string()),
        };
        tracing::info!(
            migration = %order.id, %vm, source = ?sq.as_ref().map(|_| "answers"),
            destination = ?dq.as_ref().map(|_| "answers"), "re-attaching after a restart"
        );
        let (src, sq) = match (src, sq) {
            (Ok(src), Ok(sq)) => (src, sq),
            (src, Err(s_why)) => {
                let dq = match dq {
                    Ok(dq) => dq,
                    Err(d_why) => {
                        return Err(format!(
                            "{RESTARTED} and reaches neither QEMU: {s_why}; {d_why}"
                        ))
                    }
                };
                return match dq.query_status().await {
                    Ok(st) if st.status == RunState::Running => {
                        // The source completed and was retired before the restart.
                        tracing::info!(migration = %order.id, %vm, "the source QEMU is gone and the destination runs: completed");
                        self.state().vms.insert(vm.clone(), dst);
                        if let Ok(src) = src {
                            self.retire(vm, src, None);
                        }
                        Ok(HypervisorEvent::Completed)
                    }
                    st => {
                        let d_is = match st {
                            Ok(st) => st.status.to_string(),
                            Err(e) => format!("not answering ({})", chain(&e)),
                        };
                        self.rollback(vm, None, Some(&dq), &dst).await;
                        Err(format!(
                            "{RESTARTED}: {s_why}, and the destination QEMU is {d_is}: removed it"
                        ))
                    }
                };
            }
            (Err(e), Ok(_)) => return Err(e),
        };
        let info = sq
            .query_migrate()
            .await
            .map_err(|e| format!("{RESTARTED}; source query-migrate failed: {}", chain(&e)))?;
        let st = sq
            .query_status()
            .await
            .map_err(|e| format!("{RESTARTED}; source query-status failed: {}", chain(&e)))?;
        let status = info.status.clone().unwrap_or(MigrationStatus::None);
        tracing::info!(migration = %order.id, %vm, migration_status = %status, source = %st.status, "source QEMU at re-attach");
        let dq = dq.map_err(|why| {
            tracing::warn!(migration = %order.id, %vm, %why, "the destination QEMU does not answer");
            why
        });
        if !status.is_final() && status != MigrationStatus::None {
            let pre_copy = matches!(status, MigrationStatus::Setup | MigrationStatus::Active);
            let watched = Watched {
                sq: &sq,
                dq: dq.as_ref().ok(),
                src_events: sq.subscribe(),
                dst_events: dq.as_ref().ok().map(Client::subscribe),
                sees_switchover: pre_copy,
            };
            if let Err(why) = &dq {
                // Nothing can check the destination: keep the VM on the source.
                tracing::warn!(migration = %order.id, %vm, "migrate_cancel: the destination cannot be checked");
                if let Err(e) = sq.migrate_cancel().await {
                    tracing::warn!(error = %chain(&e), "migrate_cancel failed");
                }
                let outcome = self.follow(order, sink, watched, &mut cancel).await;
                return match self.conclude(vm, outcome, src, sq, dst, None).await? {
                    HypervisorEvent::Cancelled => Err(format!(
                        "{RESTARTED} and the destination does not answer ({why}): migration cancelled, the VM stays on {}",
                        order.from
                    )),
                    other => Ok(other),
                };
            }
            let outcome = self.follow(order, sink, watched, &mut cancel).await;
            let dq = dq.as_ref().ok();
            return self.conclude(vm, outcome, src, sq, dst, dq).await;
        }
        if status == MigrationStatus::Completed && st.status == RunState::Postmigrate {
            let dq = dq.as_ref().ok();
            let outcome = self.settle(order, sink, &sq, dq, &Stamps::default()).await;
            return self.conclude(vm, outcome, src, sq, dst, dq).await;
        }
        let said = match &info.error_desc {
            Some(desc) => format!("{status} ({desc})"),
            None => status.to_string(),
        };
        self.rollback(vm, Some(&sq), dq.as_ref().ok(), &dst).await;
        Err(format!(
            "{RESTARTED}; the source QEMU is {} and its migration is {said}: rolled back",
            st.status
        ))
    }

    /// Connects to a QMP socket that should exist now (a re-attach), retrying briefly.
    async fn connect_now(&self, which: &str, path: &std::path::Path) -> Result<Client, String> {
        let within = self.settings.connect_timeout.min(REATTACH_CONNECT);
        Client::connect_retry(path, within, self.client_config())
            .await
            .map_err(|e| {
                format!(
                    "{which} QEMU's QMP socket {} does not answer: {}",
                    path.display(),
                    chain(&e)
                )
            })
    }

    /// Acts on how the switchover ended: on completion the destination becomes the VM's QEMU
    /// and the source is retired; on failure or cancel the source is put back to running and
    /// the destination removed.
    async fn conclude(
        &self,
        vm: &VmId,
        outcome: Result<Switch, String>,
        src: QemuInstance,
        sq: Client,
        dst: QemuInstance,
        dq: Option<&Client>,
    ) -> Result<HypervisorEvent, String> {
        match outcome {
            Ok(Switch::Completed) => {
                tracing::info!(%vm, host = %dst.host, "migration completed; retiring the source QEMU");
                self.state().vms.insert(vm.clone(), dst);
                self.retire(vm, src, Some(sq));
                Ok(HypervisorEvent::Completed)
            }
            Ok(Switch::RolledBack(event)) => {
                self.rollback(vm, Some(&sq), dq, &dst).await;
                Ok(event)
            }
            Ok(Switch::Unchecked(reason)) => {
                tracing::error!(%vm, %reason, "both QEMUs left as they are");
                Err(reason)
            }
            Err(reason) => {
                self.rollback(vm, Some(&sq), dq, &dst).await;
                Err(reason)
            }
        }
    }

    /// Retires the source QEMU of a completed migration in the background (the report, and
    /// so the commit, does not wait for it): `quit` (it sits in `postmigrate` until told),
    /// then the launcher's `stop`.
    fn retire(&self, vm: &VmId, src: QemuInstance, sq: Option<Client>) {
        let this = self.clone();
        let vm = vm.clone();
        tokio::spawn(async move {
            if let Some(sq) = sq {
                if let Err(e) = sq.quit().await {
                    tracing::warn!(%vm, error = %chain(&e), "source QEMU quit failed; stopping it");
                }
            }
            this.stop_instance(&vm, &src).await;
        });
    }

    /// Puts the source back to running (if it is still there and stopped) and removes the
    /// destination QEMU.
    async fn rollback(
        &self,
        vm: &VmId,
        sq: Option<&Client>,
        dq: Option<&Client>,
        dst: &QemuInstance,
    ) {
        if let Some(sq) = sq {
            match sq.query_status().await {
                Ok(st) if st.status != RunState::Running => {
                    tracing::warn!(%vm, status = %st.status, "source QEMU stopped after a failed migration; cont");
                    if let Err(e) = sq.cont().await {
                        tracing::error!(%vm, error = %chain(&e), "cannot resume the source QEMU");
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(%vm, error = %chain(&e), "source QEMU unreachable after a failed migration")
                }
            }
        }
        // Ask the destination to quit (it may already be gone), then make sure.
        if let Some(dq) = dq {
            if let Err(e) = dq.quit().await {
                tracing::debug!(%vm, error = %chain(&e), "destination quit failed; stopping it");
            }
        }
        self.stop_instance(vm, dst).await;
    }

    /// Starts the migration (`migrate-incoming` on the destination, `migrate` on the source)
    /// and follows it.
    async fn switch(
        &self,
        order: &MigrationOrder,
        sink: &ReportSink,
        sq: &Client,
        dst: &QemuInstance,
        dq: &Client,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<Switch, String> {
        let uri = dst
            .incoming
            .clone()
            .ok_or_else(|| "the launcher gave the destination QEMU no incoming URI".to_owned())?;
        let dst_events = dq.subscribe();
        let events_on = [(MigrationCapability::Events, true)];
        dq.migrate_set_capabilities(&events_on)
            .await
            .map_err(|e| format!("destination migrate-set-capabilities: {}", chain(&e)))?;
        dq.migrate_incoming(&uri)
            .await
            .map_err(|e| format!("destination migrate-incoming {uri}: {}", chain(&e)))?;
        tokio::time::sleep(self.settings.attach_grace).await;
        let src_events = sq.subscribe();
        let src_caps = [
            (MigrationCapability::Events, true),
            (
                MigrationCapability::PauseBeforeSwitchover,
                self.settings.switchover_wait.is_some(),
            ),
        ];
        sq.migrate_set_capabilities(&src_caps)
            .await
            .map_err(|e| format!("source migrate-set-capabilities: {}", chain(&e)))?;
        if let Some(p) = &self.settings.parameters {
            sq.migrate_set_parameters(p)
                .await
                .map_err(|e| format!("source migrate-set-parameters: {}", chain(&e)))?;
        }
        sq.migrate(&uri)
            .await
            .map_err(|e| format!("source migrate {uri}: {}", chain(&e)))?;
        tracing::info!(migration = %order.id, vm = %order.vm, from = %order.from, to = %dst.host, %uri, "migrate issued");
        let watched = Watched {
            sq,
            dq: Some(dq),
            src_events,
            dst_events: Some(dst_events),
            sees_switchover: true,
        };
        self.follow(order, sink, watched, cancel).await
    }

    /// Follows the source's migration (issued by [`switch`](Self::switch), or found running
    /// at a re-attach) to its end: progress every `poll`, `migrate_cancel` on cancel or after
    /// `migration_timeout`, then on completion [`settle`](Self::settle).
    async fn follow(
        &self,
        order: &MigrationOrder,
        sink: &ReportSink,
        mut w: Watched<'_>,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<Switch, String> {
        let sq = w.sq;
        let deadline = Instant::now() + self.settings.migration_timeout;
        let mut stamps = Stamps::default();
        let mut cancel_sent = false;
        let mut timed_out = false;
        let mut paused_since: Option<Instant> = None;
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.settings.poll) => {}
                r = cancel.changed() => {
                    if r.is_ok() && *cancel.borrow() && !cancel_sent {
                        tracing::info!(migration = %order.id, "migrate_cancel");
                        cancel_sent = true;
                        if let Err(e) = sq.migrate_cancel().await {
                            tracing::warn!(error = %chain(&e), "migrate_cancel failed");
                        }
                    }
                }
            }
            stamps.collect(&mut w);
            let info = sq.query_migrate().await.map_err(|e| {
                format!(
                    "the source QEMU stopped answering during the migration: {}",
                    chain(&e)
                )
            })?;
            sink.progress(order.id, progress(&info, stamps.stop, stamps.resume));
            if info.status == Some(MigrationStatus::PreSwitchover) {
                // srmigd continues it once it took back what the guest did not get; a host
                // without srmigd's QMP watch never does.
                let since = *paused_since.get_or_insert_with(Instant::now);
                let wait = self.settings.switchover_wait.unwrap_or(Duration::ZERO);
                if since.elapsed() >= wait {
                    tracing::warn!(migration = %order.id, ?wait, "source still in pre-switchover: no srmigd continued it (is `migrate_continue = true` set in the source host's [[qemu]] table?); migrate-continue");
                    if let Err(e) = sq.migrate_continue(&MigrationStatus::PreSwitchover).await {
                        tracing::debug!(error = %chain(&e), "migrate-continue");
                    }
                    paused_since = None;
                }
            } else {
                paused_since = None;
            }
            match info.status {
                Some(MigrationStatus::Completed) if info.is_settled() => break,
                Some(MigrationStatus::Failed) => {
                    let why = info
                        .error_desc
                        .unwrap_or_else(|| "QEMU reported failed".to_owned());
                    if timed_out {
                        return Ok(Switch::RolledBack(HypervisorEvent::Failed(format!(
                            "timed out after {:?} ({why})",
                            self.settings.migration_timeout
                        ))));
                    }
                    return Ok(Switch::RolledBack(HypervisorEvent::Failed(why)));
                }
                Some(MigrationStatus::Cancelled) => {
                    if timed_out {
                        return Ok(Switch::RolledBack(HypervisorEvent::Failed(format!(
                            "timed out after {:?}; cancelled",
                            self.settings.migration_timeout
                        ))));
                    }
                    return Ok(Switch::RolledBack(HypervisorEvent::Cancelled));
                }
                _ => {}
            }
            if !cancel_sent && Instant::now() >= deadline {
                tracing::warn!(migration = %order.id, "migration timed out; migrate_cancel");
                timed_out = true;
                cancel_sent = true;
                if let Err(e) = sq.migrate_cancel().await {
                    tracing::warn!(error = %chain(&e), "migrate_cancel failed");
                }
            }
        }
        // Completed on the source: the destination resumes a moment later. Wait (briefly)
        // for its RESUME so the true pause is known, if the switchover was watched.
        stamps.collect(&mut w);
        if w.sees_switchover && w.dst_events.is_some() {
            let wait_until = Instant::now() + Duration::from_secs(5);
            while stamps.resume.is_none() && Instant::now() < wait_until {
                tokio::time::sleep(Duration::from_millis(2)).await;
                stamps.collect(&mut w);
            }
        }
        self.settle(order, sink, sq, w.dq, &stamps).await
    }

    /// QEMU says the source completed: hands over the final figures and checks that the
    /// destination runs.
    async fn settle(
        &self,
        order: &MigrationOrder,
        sink: &ReportSink,
        sq: &Client,
        dq: Option<&Client>,
        stamps: &Stamps,
    ) -> Result<Switch, String> {
        let info = sq.query_migrate().await.unwrap_or_default();
        let p = progress(&info, stamps.stop, stamps.resume);
        tracing::info!(migration = %order.id, hypervisor = %p, "QEMU migration completed");
        sink.final_progress(order.id, p).await;
        let Some(dq) = dq else {
            return Ok(Switch::Unchecked(format!(
                "the source QEMU completed the migration but the destination's QMP socket \
                 does not answer: the source is left in postmigrate (not resumed: the \
                 destination may run the VM); check the destination on {}",
                order.to
            )));
        };
        match dq.query_status().await {
            Ok(st) if st.status == RunState::Running => Ok(Switch::Completed),
            Ok(st) => Err(format!(
                "QEMU completed the migration but the destination is {}, not running",
                st.status
            )),
            Err(e) => Err(format!(
                "QEMU completed the migration but the destination does not answer: {}",
                chain(&e)
            )),
        }
    }
}

/// The two QEMUs of a migration as [`Qmp::follow`] watches them.
struct Watched<'a> {
    sq: &'a Client,
    /// `None`: the destination could not be reached (a re-attach).
    dq: Option<&'a Client>,
    src_events: Events,
    dst_events: Option<Events>,
    /// Subscribed before the switchover: the STOP and RESUME will be seen.
    sees_switchover: bool,
}

/// How the switchover ended.
#[derive(Debug)]
enum Switch {
    /// The VM runs on the destination.
    Completed,
    /// QEMU failed or cancelled the migration; the source keeps the VM.
    RolledBack(HypervisorEvent),
    /// The source completed but the destination cannot be checked: neither is touched.
    Unchecked(String),
}

/// QEMU timestamps of the source's STOP and the destination's RESUME (µs, wall clock).
#[derive(Debug, Default)]
struct Stamps {
    stop: Option<i64>,
    resume: Option<i64>,
}

impl Stamps {
    fn collect(&mut self, w: &mut Watched<'_>) {
        while let Some(e) = w.src_events.try_next() {
            if e.kind == EventKind::Stop {
                self.stop = Some(e.timestamp.as_micros());
            }
        }
        while let Some(e) = w.dst_events.as_mut().and_then(Events::try_next) {
            if e.kind == EventKind::Resume {
                self.resume = Some(e.timestamp.as_micros());
            }
        }
    }
}

/// The API view of a `query-migrate` answer.
/// `stop_us` and `resume_us` are the STOP / RESUME event timestamps (µs since the epoch).
pub fn progress(
    info: &MigrationInfo,
    stop_us: Option<i64>,
    resume_us: Option<i64>,
) -> HypervisorProgress {
    let pause_us = match (stop_us, resume_us) {
        (Some(s), Some(r)) => u64::try_from(r - s).ok(),
        _ => None,
    };
    let ram = info.ram.as_ref();
    HypervisorProgress {
        status: info
            .status
            .as_ref()
            .map_or_else(|| "none".to_owned(), |s| s.as_str().to_owned()),
        total_time_ms: info.total_time,
        ram_transferred: ram.map(|r| r.transferred),
        ram_remaining: ram.map(|r| r.remaining),
        ram_total: ram.map(|r| r.total),
        passes: ram.map(|r| r.dirty_sync_count),
        downtime_ms: info.downtime,
        pause_us,
        stopped_at_us: stop_us,
        resumed_at_us: resume_us,
    }
}

impl HypervisorDriver for Qmp {
    fn name(&self) -> &'static str {
        "qmp"
    }

    fn waits_for(&self) -> &'static str {
        "QEMU to live-migrate the VM over QMP (pre-copy, then stop-and-copy) and the \
         destination's srmigd to report it running"
    }

    fn start(&self, order: MigrationOrder, reports: ReportSink) {
        self.spawn(order, reports, Attach::Start);
    }

    fn cancel(&self, order: MigrationOrder, reports: ReportSink) {
        let sent = self
            .state()
            .active
            .get(&order.id)
            .is_some_and(|tx| tx.send(true).is_ok());
        if sent {
            return;
        }
        // Nothing of ours is migrating this VM (finished already, or never started here):
        // the running task, if any, has reported or will report the outcome; otherwise say
        // where the VM is.
        let at_dest = self.instance(&order.vm).is_some_and(|i| i.host == order.to);
        tokio::spawn(async move {
            reports
                .report(HypervisorReport {
                    vm: order.vm,
                    migration: order.id,
                    event: if at_dest {
                        HypervisorEvent::Completed
                    } else {
                        HypervisorEvent::Cancelled
                    },
                })
                .await;
        });
    }

    fn resume(&self, order: MigrationOrder, reports: ReportSink) {
        tracing::info!(migration = %order.id, vm = %order.vm, from = %order.from, to = %order.to, "re-attaching to the QEMU migration");
        self.spawn(order, reports, Attach::Resume);
    }
}

#[cfg(test)]
mod tests {
    //! The driver against scripted QEMUs on real unix sockets, replaying the QMP transcripts
    //! recorded from QEMU 7.2 here (`crates/qmp/src/testdata`): each command is answered with
    //! the next recorded reply to a command of that name, preceded by the events recorded
    //! before it; the destination's switchover events are released when the source's
    //! `query-migrate` says `completed`, as the real pair does.
    use super::*;
    use crate::mailbox::Command;
    use serde_json::{json, Value};
    use std::collections::VecDeque;
    use std::path::Path;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::UnixListener;
    use tokio::sync::{mpsc, Notify};

    const SRC: &str = include_str!("../../qmp/src/testdata/migration-7.2-src.txt");
    const DST: &str = include_str!("../../qmp/src/testdata/migration-7.2-dst.txt");

    #[derive(Debug, Clone)]
    struct Exchange {
        events: Vec<Value>,
        reply: Value,
    }

    /// Per command name, the recorded exchanges in order.
    #[derive(Debug, Clone, Default)]
    struct Script {
        by_name: HashMap<String, VecDeque<Exchange>>,
        /// Events recorded after the last reply (e.g. SHUTDOWN after quit).
        tail: Vec<Value>,
    }

    impl Script {
        fn parse(text: &str) -> Script {
            let mut s = Script::default();
            let mut current: Option<String> = None;
            let mut events = Vec::new();
            for line in text.lines() {
                if let Some(cmd) = line.strip_prefix("-> ") {
                    let v: Value = serde_json::from_str(cmd).expect("command json");
                    current = v["execute"].as_str().map(str::to_owned);
                } else if let Some(msg) = line.strip_prefix("<- ") {
                    let v: Value = serde_json::from_str(msg).expect("reply json");
                    if v.get("QMP").is_some() {
                        continue;
                    }
                    if v.get("event").is_some() {
                        events.push(v);
                        continue;
                    }
                    if let Some(name) = current.take() {
                        s.by_name.entry(name).or_default().push_back(Exchange {
                            events: std::mem::take(&mut events),
                            reply: v,
                        });
                    }
                }
            }
            s.tail = events;
            s
        }

        fn queue(&mut self, name: &str) -> &mut VecDeque<Exchange> {
            self.by_name.entry(name.to_owned()).or_default()
        }

        /// Answers `name` with `ret` first.
        fn prepend(&mut self, name: &str, ret: Value) {
            self.queue(name).push_front(Exchange {
                events: vec![],
                reply: json!({ "return": ret }),
            });
        }

        fn drop_first(&mut self, name: &str) {
            self.queue(name).pop_front();
        }
    }

    /// What a fake QEMU saw.
    #[derive(Debug, Default)]
    struct Seen {
        commands: Vec<String>,
    }

    struct FakeQemu {
        seen: Arc<Mutex<Seen>>,
    }

    const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}"#;

    impl FakeQemu {
        /// Serves `script` to one client at `path`. `completed` is notified when a reply with
        /// status `completed` is sent; `release` (if any) makes the fake send the events
        /// recorded before its next `query-status` reply at once. `die_after` closes the
        /// connection after that many `query-migrate` replies.
        fn spawn(
            path: &Path,
            mut script: Script,
            completed: Option<Arc<Notify>>,
            release: Option<Arc<Notify>>,
            die_after: Option<usize>,
        ) -> FakeQemu {
            let listener = UnixListener::bind(path).expect("bind fake qmp");
            let seen = Arc::new(Mutex::new(Seen::default()));
            let seen2 = Arc::clone(&seen);
            tokio::spawn(async move {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (r, mut w) = stream.into_split();
                let mut lines = BufReader::new(r).lines();
                let send = |v: &Value| {
                    let mut b = serde_json::to_vec(v).expect("json");
                    b.extend_from_slice(b"\r\n");
                    b
                };
                if w.write_all(format!("{GREETING}\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
                let mut migrates = 0usize;
                let mut last: HashMap<String, Exchange> = HashMap::new();
                loop {
                    let line = tokio::select! {
                        l = lines.next_line() => l,
                        () = async {
                            match &release { Some(n) => n.notified().await, None => std::future::pending().await }
                        } => {
                            if let Some(ex) = script.queue("query-status").front_mut() {
                                for e in std::mem::take(&mut ex.events) {
                                    let _ = w.write_all(&send(&e)).await;
                                }
                            }
                            continue;
                        }
                    };
                    let Ok(Some(line)) = line else {
                        return;
                    };
                    let cmd: Value = serde_json::from_str(&line).expect("client json");
                    let name = cmd["execute"].as_str().unwrap_or("").to_owned();
                    seen2.lock().expect("seen").commands.push(name.clone());
                    let id = cmd["id"].clone();
                    let ex = match name.as_str() {
                        "qmp_capabilities" => Exchange {
                            events: vec![],
                            reply: json!({"return": {}}),
                        },
                        _ => match script.queue(&name).pop_front() {
                            Some(ex) => {
                                last.insert(name.clone(), ex.clone());
                                ex
                            }
                            None => last.get(&name).cloned().map_or_else(
                                || Exchange {
                                    events: vec![],
                                    reply: json!({"return": {}}),
                                },
                                |mut ex| {
                                    ex.events.clear();
                                    ex
                                },
                            ),
                        },
                    };
                    for e in &ex.events {
                        if w.write_all(&send(e)).await.is_err() {
                            return;
                        }
                    }
                    let mut reply = ex.reply.clone();
                    reply["id"] = id;
                    if w.write_all(&send(&reply)).await.is_err() {
                        return;
                    }
                    if reply["return"]["status"] == "completed" {
                        if let Some(n) = &completed {
                            n.notify_one();
                        }
                    }
                    if name == "migrate_cancel" {
                        // As QEMU: the migration ends up cancelled.
                        let q = script.queue("query-migrate");
                        q.clear();
                        q.push_back(Exchange {
                            events: vec![],
                            reply: json!({"return": {"status": "cancelled"}}),
                        });
                        last.remove("query-migrate");
                    }
                    if name == "query-migrate" {
                        migrates += 1;
                        if die_after == Some(migrates) {
                            return;
                        }
                    }
                    if name == "quit" {
                        for e in &script.tail {
                            let _ = w.write_all(&send(e)).await;
                        }
                        return;
                    }
                }
            });
            FakeQemu { seen }
        }

        fn commands(&self) -> Vec<String> {
            self.seen.lock().expect("seen").commands.clone()
        }
    }

    #[derive(Debug, Default)]
    struct FakeLauncher {
        dst_qmp: Mutex<Option<PathBuf>>,
        fail: Option<String>,
        started: Mutex<Vec<(VmId, HostId)>>,
        stopped: Mutex<Vec<QemuInstance>>,
    }

    impl QemuLauncher for FakeLauncher {
        fn start_destination(&self, vm: &VmId, host: &HostId) -> Result<QemuInstance, String> {
            self.started
                .lock()
                .expect("lock")
                .push((vm.clone(), host.clone()));
            if let Some(e) = &self.fail {
                return Err(e.clone());
            }
            let qmp = self
                .dst_qmp
                .lock()
                .expect("lock")
                .clone()
                .expect("dst path");
            Ok(QemuInstance {
                host: host.clone(),
                qmp,
                incoming: Some("tcp:[::1]:4555".into()),
                handle: 2,
            })
        }

        fn stop(&self, _vm: &VmId, instance: &QemuInstance) {
            self.stopped.lock().expect("lock").push(instance.clone());
        }
    }

    fn vm() -> VmId {
        VmId::new("vm1").expect("name")
    }
    fn host(n: &str) -> HostId {
        HostId::new(n).expect("name")
    }

    fn order(id: u64) -> MigrationOrder {
        MigrationOrder {
            id: MigrationId(id),
            vm: vm(),
            from: host("s"),
            to: host("d"),
            strategy: Some(srmig_api::Strategy::SrBuffer),
        }
    }

    fn settings() -> QmpSettings {
        QmpSettings {
            poll: Duration::from_millis(5),
            connect_timeout: Duration::from_millis(500),
            command_timeout: Duration::from_secs(2),
            migration_timeout: Duration::from_secs(10),
            attach_grace: Duration::ZERO,
            parameters: None,
            switchover_wait: None,
        }
    }

    struct Rig {
        _dir: tempfile::TempDir,
        driver: Qmp,
        launcher: Arc<FakeLauncher>,
        src_qmp: PathBuf,
        dst_qmp: PathBuf,
        rx: mpsc::Receiver<Command>,
        sink: ReportSink,
    }

    fn rig(fail_launch: Option<&str>) -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        let src_qmp = dir.path().join("src.qmp");
        let dst_qmp = dir.path().join("dst.qmp");
        let launcher = Arc::new(FakeLauncher {
            fail: fail_launch.map(str::to_owned),
            ..FakeLauncher::default()
        });
        *launcher.dst_qmp.lock().expect("lock") = Some(dst_qmp.clone());
        let driver = Qmp::new(launcher.clone(), settings());
        driver.register(
            vm(),
            QemuInstance {
                host: host("s"),
                qmp: src_qmp.clone(),
                incoming: None,
                handle: 1,
            },
        );
        let (tx, rx) = mpsc::channel(1024);
        Rig {
            _dir: dir,
            driver,
            launcher,
            src_qmp,
            dst_qmp,
            rx,
            sink: ReportSink::new(tx),
        }
    }

    /// The source script: running at first, then the recording.
    fn src_script() -> Script {
        let mut s = Script::parse(SRC);
        s.prepend(
            "query-status",
            json!({"status": "running", "singlestep": false, "running": true}),
        );
        // The recording asked query-migrate once before migrate (empty answer).
        s.drop_first("query-migrate");
        s
    }

    fn dst_script() -> Script {
        let mut s = Script::parse(DST);
        // The recording polled query-status once while incoming.
        s.drop_first("query-status");
        s
    }

    /// Waits for the outcome, collecting progress on the way.
    async fn outcome(
        rx: &mut mpsc::Receiver<Command>,
    ) -> (HypervisorReport, Vec<HypervisorProgress>) {
        let mut progress = Vec::new();
        loop {
            let c = tokio::time::timeout(Duration::from_secs(20), rx.recv())
                .await
                .expect("outcome in time")
                .expect("sink open");
            match c {
                Command::HypervisorReport(r) => return (r, progress),
                Command::HypervisorProgress(id, p) => {
                    assert_eq!(id, MigrationId(7));
                    progress.push(p);
                }
                _ => panic!("unexpected command"),
            }
        }
    }

    async fn wait_stopped(l: &FakeLauncher, n: usize) -> Vec<QemuInstance> {
        for _ in 0..400 {
            let s = l.stopped.lock().expect("lock").clone();
            if s.len() >= n {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        l.stopped.lock().expect("lock").clone()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replayed_migration_completes_with_progress_and_pause() {
        let mut r = rig(None);
        let done = Arc::new(Notify::new());
        let src = FakeQemu::spawn(&r.src_qmp, src_script(), Some(done.clone()), None, None);
        let dst = FakeQemu::spawn(&r.dst_qmp, dst_script(), None, Some(done), None);
        r.driver.start(order(7), r.sink.clone());
        let (report, progress) = outcome(&mut r.rx).await;
        assert_eq!(report.event, HypervisorEvent::Completed);
        assert_eq!(report.migration, MigrationId(7));
        // Progress went through pre-copy to completion, with the true pause from the
        // recorded timestamps: src STOP 330150 us, dst RESUME 352812 us.
        assert!(progress
            .iter()
            .any(|p| p.status == "active" && p.ram_transferred.is_some_and(|t| t > 0)));
        let last = progress.last().expect("progress");
        assert_eq!(last.status, "completed");
        assert_eq!(last.downtime_ms, Some(21));
        assert_eq!(last.pause_us, Some(352_812 - 330_150));
        assert!(last.to_string().contains("pause 22.7 ms"), "{last}");
        // The destination was started on D, is now the VM's QEMU; the source was told to
        // quit and stopped.
        assert_eq!(
            r.launcher.started.lock().expect("lock").clone(),
            vec![(vm(), host("d"))]
        );
        assert_eq!(r.driver.instance(&vm()).map(|i| i.host), Some(host("d")));
        let stopped = wait_stopped(&r.launcher, 1).await;
        assert_eq!(stopped.len(), 1);
        assert_eq!(stopped[0].host, host("s"));
        let sc = src.commands();
        assert_eq!(
            sc.iter()
                .filter(|c| c.as_str() != "query-migrate")
                .cloned()
                .collect::<Vec<_>>(),
            [
                "qmp_capabilities",
                "query-status",
                "migrate-set-capabilities",
                "migrate",
                "quit"
            ]
        );
        assert_eq!(
            dst.commands(),
            [
                "qmp_capabilities",
                "migrate-set-capabilities",
                "migrate-incoming",
                "query-status"
            ]
        );
        assert!(!r.driver.busy());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn qemu_failure_rolls_back_to_a_running_source() {
        let mut r = rig(None);
        let mut s = src_script();
        // Fail on the third poll; the source shows stopped afterwards (it had entered
        // stop-and-copy), so the driver must `cont` it.
        let failed = json!({"return": {"status": "failed", "error-desc": "Unable to write to socket: Broken pipe"}});
        let q = s.queue("query-migrate");
        q.truncate(2);
        q.push_back(Exchange {
            events: vec![],
            reply: failed,
        });
        s.drop_first("query-status");
        s.prepend(
            "query-status",
            json!({"status": "paused", "singlestep": false, "running": false}),
        );
        s.prepend(
            "query-status",
            json!({"status": "running", "singlestep": false, "running": true}),
        );
        let src = FakeQemu::spawn(&r.src_qmp, s, None, None, None);
        let dst = FakeQemu::spawn(&r.dst_qmp, dst_script(), None, None, None);
        r.driver.start(order(7), r.sink.clone());
        let (report, _) = outcome(&mut r.rx).await;
        assert_eq!(
            report.event,
            HypervisorEvent::Failed("Unable to write to socket: Broken pipe".into())
        );
        assert!(
            src.commands().contains(&"cont".to_owned()),
            "{:?}",
            src.commands()
        );
        assert!(!src.commands().contains(&"quit".to_owned()));
        // The destination was asked to quit and stopped; the VM stays on S.
        assert!(
            dst.commands().contains(&"quit".to_owned()),
            "{:?}",
            dst.commands()
        );
        let stopped = wait_stopped(&r.launcher, 1).await;
        assert_eq!(stopped.len(), 1);
        assert_eq!(stopped[0].host, host("d"));
        assert_eq!(r.driver.instance(&vm()).map(|i| i.host), Some(host("s")));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancel_sends_migrate_cancel_and_reports_cancelled() {
        let mut r = rig(None);
        let mut s = src_script();
        let active = s.queue("query-migrate")[0].clone();
        let q = s.queue("query-migrate");
        q.clear();
        q.push_back(active);
        s.queue("migrate_cancel").push_back(Exchange {
            events: vec![],
            reply: json!({"return": {}}),
        });
        let src = FakeQemu::spawn(&r.src_qmp, s, None, None, None);
        let dst = FakeQemu::spawn(&r.dst_qmp, dst_script(), None, None, None);
        r.driver.start(order(7), r.sink.clone());
        // Let it reach pre-copy, then cancel.
        loop {
            match r.rx.recv().await.expect("open") {
                Command::HypervisorProgress(_, p) if p.status == "active" => break,
                Command::HypervisorProgress(..) => {}
                _ => panic!("reported before the cancel"),
            }
        }
        r.driver.cancel(order(7), r.sink.clone());
        let (report, _) = outcome(&mut r.rx).await;
        assert_eq!(report.event, HypervisorEvent::Cancelled);
        assert!(src.commands().contains(&"migrate_cancel".to_owned()));
        let stopped = wait_stopped(&r.launcher, 1).await;
        assert_eq!(stopped.len(), 1);
        assert_eq!(stopped[0].host, host("d"));
        assert!(dst.commands().contains(&"quit".to_owned()));
        assert_eq!(r.driver.instance(&vm()).map(|i| i.host), Some(host("s")));
        // A cancel for a migration the driver no longer runs says where the VM is.
        r.driver.cancel(order(7), r.sink.clone());
        let (report, _) = outcome(&mut r.rx).await;
        assert_eq!(report.event, HypervisorEvent::Cancelled);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_launch_touches_nothing() {
        let mut r = rig(Some("qemu-system-x86_64: cannot allocate memory"));
        let src = FakeQemu::spawn(&r.src_qmp, src_script(), None, None, None);
        r.driver.start(order(7), r.sink.clone());
        let (report, _) = outcome(&mut r.rx).await;
        match report.event {
            HypervisorEvent::Failed(why) => {
                assert!(
                    why.contains("cannot start the destination QEMU on d"),
                    "{why}"
                );
                assert!(why.contains("cannot allocate memory"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(src.commands(), ["qmp_capabilities", "query-status"]);
        assert!(r.launcher.stopped.lock().expect("lock").is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unreachable_source_and_unknown_vm_fail_clearly() {
        let mut r = rig(None);
        // No fake at the source path.
        r.driver.start(order(7), r.sink.clone());
        let (report, _) = outcome(&mut r.rx).await;
        match report.event {
            HypervisorEvent::Failed(why) => assert!(why.contains("does not answer"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(r.launcher.started.lock().expect("lock").is_empty());
        r.driver.forget(&vm());
        r.driver.start(order(7), r.sink.clone());
        let (report, _) = outcome(&mut r.rx).await;
        assert_eq!(
            report.event,
            HypervisorEvent::Failed(
                "no QEMU is registered for VM vm1 and host s has no QMP endpoint \
                 (srmig controller --qmp-endpoint s=PATH)"
                    .into()
            )
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn source_dying_mid_migration_fails_and_removes_the_destination() {
        let mut r = rig(None);
        let _src = FakeQemu::spawn(&r.src_qmp, src_script(), None, None, Some(2));
        let dst = FakeQemu::spawn(&r.dst_qmp, dst_script(), None, None, None);
        r.driver.start(order(7), r.sink.clone());
        let (report, _) = outcome(&mut r.rx).await;
        match report.event {
            HypervisorEvent::Failed(why) => {
                assert!(why.contains("stopped answering"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        let stopped = wait_stopped(&r.launcher, 1).await;
        assert_eq!(stopped.len(), 1);
        assert_eq!(stopped[0].host, host("d"));
        assert!(dst.commands().contains(&"quit".to_owned()));
    }

    #[test]
    fn endpoints_fill_in_the_vm_and_check_their_templates() {
        let mut e = QmpEndpoints::new();
        assert!(e.is_empty());
        e.insert(host("h1"), "/run/srmig/{vm}/{vm}.qmp")
            .expect("h1");
        e.insert(host("h2"), "/run/srmig/h2.qmp").expect("h2");
        assert_eq!(
            e.endpoint(&host("h1"), &vm()),
            Ok(PathBuf::from("/run/srmig/vm1/vm1.qmp"))
        );
        assert_eq!(
            e.endpoint(&host("h2"), &vm()),
            Ok(PathBuf::from("/run/srmig/h2.qmp"))
        );
        let none = e.endpoint(&host("h3"), &vm()).expect_err("h3");
        assert_eq!(
            none.to_string(),
            "host h3 has no QMP endpoint (srmig controller --qmp-endpoint h3=PATH)"
        );
        for (t, want) in [
            (
                "run/{vm}.qmp",
                "host h4: QMP endpoint `run/{vm}.qmp` is not an absolute path",
            ),
            (
                "/run/{id}.qmp",
                "host h4: QMP endpoint `/run/{id}.qmp`: only {vm} may stand in braces",
            ),
            (
                "/run/{vm.qmp",
                "host h4: QMP endpoint `/run/{vm.qmp`: only {vm} may stand in braces",
            ),
        ] {
            let err = e.insert(host("h4"), t).expect_err(t);
            assert_eq!(err.to_string(), want);
        }
        let err = e.insert(host("h1"), "/other").expect_err("twice");
        assert_eq!(
            err.to_string(),
            "host h1 is given two QMP endpoints: `/run/srmig/{vm}/{vm}.qmp` and `/other`"
        );
    }

    #[test]
    fn host_equals_path_arguments() {
        assert_eq!(
            QmpEndpoints::parse_arg("h1=/run/{vm}.qmp"),
            Ok((host("h1"), "/run/{vm}.qmp".to_owned()))
        );
        // Only the first '=' splits.
        assert_eq!(
            QmpEndpoints::parse_arg("h1=/a=b"),
            Ok((host("h1"), "/a=b".to_owned()))
        );
        for (arg, want) in [
            (
                "h1",
                "`h1`: expected HOST=PATH, e.g. h1=/run/srmig/qemu/{vm}.qmp",
            ),
            (
                "h1=",
                "`h1=`: expected HOST=PATH, e.g. h1=/run/srmig/qemu/{vm}.qmp",
            ),
            ("=/q", "`=/q`: bad host name: name is empty"),
            (
                "-h=/q",
                "`-h=/q`: bad host name: name must not start with '.' or '-'",
            ),
        ] {
            let err = QmpEndpoints::parse_arg(arg).expect_err(arg);
            assert_eq!(err.to_string(), want);
        }
    }

    /// A rig without registered QEMUs: both found at their hosts' endpoints.
    fn endpoint_rig() -> Rig {
        let mut r = rig(None);
        r.driver.forget(&vm());
        let dir = r._dir.path();
        let mut e = QmpEndpoints::new();
        e.insert(host("s"), format!("{}/s-{{vm}}.qmp", dir.display()))
            .expect("s");
        e.insert(host("d"), format!("{}/d-{{vm}}.qmp", dir.display()))
            .expect("d");
        r.driver = r.driver.clone().with_endpoints(e);
        r.src_qmp = dir.join("s-vm1.qmp");
        r.dst_qmp = dir.join("d-vm1.qmp");
        r
    }

    fn answers(pairs: &[(&str, Value)]) -> Script {
        let mut s = Script::default();
        for (name, ret) in pairs.iter().rev() {
            s.prepend(name, ret.clone());
        }
        s
    }

    impl FakeQemu {
        /// Answers each named command with its value (the last one again when asked again).
        fn answering(path: &Path, pairs: &[(&str, Value)]) -> FakeQemu {
            FakeQemu::spawn(path, answers(pairs), None, None, None)
        }
    }

    fn status(s: &str) -> Value {
        json!({"status": s, "singlestep": false, "running": s == "running"})
    }

    fn failed_with(event: &HypervisorEvent) -> &str {
        match event {
            HypervisorEvent::Failed(why) => why,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn start_finds_the_source_at_its_endpoint() {
        let mut r = endpoint_rig();
        let src = FakeQemu::answering(&r.src_qmp, &[("query-status", status("paused"))]);
        r.driver.start(order(7), r.sink.clone());
        let (report, _) = outcome(&mut r.rx).await;
        assert_eq!(
            report.event,
            HypervisorEvent::Failed(
                "the source QEMU is paused, not running; nothing started".into()
            )
        );
        assert_eq!(src.commands(), ["qmp_capabilities", "query-status"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn resume_finds_a_completed_migration_and_retires_the_source() {
        let mut r = endpoint_rig();
        let done = json!({"status": "completed", "total-time": 333, "downtime": 21});
        let src = FakeQemu::answering(
            &r.src_qmp,
            &[
                ("query-migrate", done),
                ("query-status", status("postmigrate")),
            ],
        );
        let dst = FakeQemu::answering(&r.dst_qmp, &[("query-status", status("running"))]);
        r.driver.resume(order(7), r.sink.clone());
        let (report, progress) = outcome(&mut r.rx).await;
        assert_eq!(report.event, HypervisorEvent::Completed);
        let last = progress.last().expect("final figures");
        assert_eq!(last.status, "completed");
        assert_eq!(
            (last.total_time_ms, last.downtime_ms),
            (Some(333), Some(21))
        );
        assert_eq!(
            (last.stopped_at_us, last.resumed_at_us, last.pause_us),
            (None, None, None)
        );
        assert_eq!(
            r.driver.instance(&vm()),
            Some(QemuInstance {
                host: host("d"),
                qmp: r.dst_qmp.clone(),
                incoming: None,
                handle: 0
            })
        );
        let stopped = wait_stopped(&r.launcher, 1).await;
        assert_eq!(
            stopped,
            [QemuInstance {
                host: host("s"),
                qmp: r.src_qmp.clone(),
                incoming: None,
                handle: 0
            }]
        );
        assert!(
            src.commands().contains(&"quit".to_owned()),
            "{:?}",
            src.commands()
        );
        assert!(!dst.commands().contains(&"quit".to_owned()));
        assert!(r.launcher.started.lock().expect("lock").is_empty());
        assert!(!r.driver.busy());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn resume_rolls_back_a_failed_migration() {
        let mut r = endpoint_rig();
        let failed =
            json!({"status": "failed", "error-desc": "Unable to write to socket: Broken pipe"});
        let src = FakeQemu::answering(
            &r.src_qmp,
            &[
                ("query-migrate", failed),
                ("query-status", status("paused")),
            ],
        );
        let dst = FakeQemu::answering(&r.dst_qmp, &[("query-status", status("inmigrate"))]);
        r.driver.resume(order(7), r.sink.clone());
        let (report, _) = outcome(&mut r.rx).await;
        assert_eq!(
            failed_with(&report.event),
            "the controller restarted during the migration; the source QEMU is paused and its \
             migration is failed (Unable to write to socket: Broken pipe): rolled back"
        );
        assert!(
            src.commands().contains(&"cont".to_owned()),
            "{:?}",
            src.commands()
        );
        assert!(!src.commands().contains(&"quit".to_owned()));
        assert!(
            dst.commands().contains(&"quit".to_owned()),
            "{:?}",
            dst.commands()
        );
        let stopped = wait_stopped(&r.launcher, 1).await;
        assert_eq!(stopped.len(), 1);
        assert_eq!((stopped[0].host.clone(), stopped[0].handle), (host("d"), 0));
        assert_eq!(r.driver.instance(&vm()), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn resume_of_a_source_that_never_migrated_out_rolls_back() {
        // A QEMU that was itself a destination answers `completed` (its incoming migration)
        // while running: the controller died before `migrate`.
        let mut r = endpoint_rig();
        let src = FakeQemu::answering(
            &r.src_qmp,
            &[
                ("query-migrate", json!({"status": "completed"})),
                ("query-status", status("running")),
            ],
        );
        let dst = FakeQemu::answering(&r.dst_qmp, &[("query-status", status("inmigrate"))]);
        r.driver.resume(order(7), r.sink.clone());
        let (report, _) = outcome(&mut r.rx).await;
        assert!(failed_with(&report.event)
            .contains("the source QEMU is running and its migration is completed: rolled back"));
        assert!(!src.commands().contains(&"cont".to_owned()));
        assert!(dst.commands().contains(&"quit".to_owned()));
        assert_eq!(wait_stopped(&r.launcher, 1).await.len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn resume_follows_an_active_migration_and_a_later_cancel() {
        let mut r = endpoint_rig();
        let active = json!({"status": "active", "total-time": 100});
        let src = FakeQemu::answering(
            &r.src_qmp,
            &[
                ("query-migrate", active),
                ("query-status", status("running")),
                ("migrate_cancel", json!({})),
            ],
        );
        let dst = FakeQemu::answering(&r.dst_qmp, &[("query-status", status("inmigrate"))]);
        r.driver.resume(order(7), r.sink.clone());
        loop {
            match r.rx.recv().await.expect("open") {
                Command::HypervisorProgress(_, p) if p.status == "active" => break,
                Command::HypervisorProgress(..) => {}
                _ => panic!("reported before the cancel"),
            }
        }
        assert!(r.driver.busy());
        r.driver.cancel(order(7), r.sink.clone());
        let (report, _) = outcome(&mut r.rx).await;
        assert_eq!(report.event, HypervisorEvent::Cancelled);
        assert!(src.commands().contains(&"migrate_cancel".to_owned()));
        assert!(dst.commands().contains(&"quit".to_owned()));
        assert_eq!(wait_stopped(&r.launcher, 1).await[0].host, host("d"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn resume_follows_an_active_migration_to_completion() {
        let mut r = endpoint_rig();
        let mut s = answers(&[("query-status", status("running"))]);
        for ret in [
            json!({"status": "active", "total-time": 100}),
            json!({"status": "active", "total-time": 150}),
            json!({"status": "completed", "total-time": 200, "downtime": 12}),
        ] {
            s.queue("query-migrate").push_back(Exchange {
                events: vec![],
                reply: json!({"return": ret}),
            });
        }
        let src = FakeQemu::spawn(&r.src_qmp, s, None, None, None);
        let _dst = FakeQemu::answering(&r.dst_qmp, &[("query-status", status("running"))]);
        r.driver.resume(order(7), r.sink.clone());
        let (report, progress) = outcome(&mut r.rx).await;
        assert_eq!(report.event, HypervisorEvent::Completed);
        assert!(progress.iter().any(|p| p.status == "active"));
        assert_eq!(progress.last().map(|p| p.downtime_ms), Some(Some(12)));
        assert_eq!(r.driver.instance(&vm()).map(|i| i.host), Some(host("d")));
        wait_stopped(&r.launcher, 1).await;
        assert!(src.commands().contains(&"quit".to_owned()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn resume_cancels_when_the_destination_cannot_be_reached() {
        let mut r = endpoint_rig();
        let src = FakeQemu::answering(
            &r.src_qmp,
            &[
                ("query-migrate", json!({"status": "active"})),
                ("query-status", status("running")),
                ("migrate_cancel", json!({})),
            ],
        );
        r.driver.resume(order(7), r.sink.clone());
        let (report, _) = outcome(&mut r.rx).await;
        let why = failed_with(&report.event);
        assert!(
            why.contains("the destination does not answer (destination QEMU's QMP socket"),
            "{why}"
        );
        assert!(
            why.ends_with("migration cancelled, the VM stays on s"),
            "{why}"
        );
        assert!(src.commands().contains(&"migrate_cancel".to_owned()));
        assert!(!src.commands().contains(&"cont".to_owned()));
        assert_eq!(wait_stopped(&r.launcher, 1).await[0].host, host("d"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn resume_with_the_source_gone() {
        // The destination runs: the source was retired before the restart.
        let mut r = endpoint_rig();
        let dst = FakeQemu::answering(&r.dst_qmp, &[("query-status", status("running"))]);
        r.driver.resume(order(7), r.sink.clone());
        let (report, _) = outcome(&mut r.rx).await;
        assert_eq!(report.event, HypervisorEvent::Completed);
        assert_eq!(
            r.driver.instance(&vm()).map(|i| (i.host, i.handle)),
            Some((host("d"), 0))
        );
        assert_eq!(wait_stopped(&r.launcher, 1).await[0].host, host("s"));
        assert!(!dst.commands().contains(&"quit".to_owned()));

        // Neither answers.
        let mut r = endpoint_rig();
        r.driver.resume(order(7), r.sink.clone());
        let (report, _) = outcome(&mut r.rx).await;
        let why = failed_with(&report.event);
        assert!(why.starts_with("the controller restarted during the migration and reaches neither QEMU: source QEMU's QMP socket"), "{why}");
        assert!(why.contains(&r.src_qmp.display().to_string()), "{why}");
        assert!(why.contains(&r.dst_qmp.display().to_string()), "{why}");
        assert_eq!(r.driver.instance(&vm()), None);
    }

    /// Real QEMU (TCG, no guest), a driver-level controller restart: the first driver starts
    /// the migration through a [`CommandLauncher`](crate::qemu_hook::CommandLauncher) hook and
    /// its runtime is dropped mid-migration (every QMP connection closes, as when the
    /// controller dies); a second driver re-attaches and finishes it. Needs
    /// `qemu-system-x86_64`: `cargo test -p srmig-controller -- --ignored real_qemu`.
    #[test]
    #[ignore = "needs qemu-system-x86_64"]
    fn real_qemu_migration_survives_a_driver_restart() {
        use crate::qemu_hook::CommandLauncher;
        use std::os::unix::fs::PermissionsExt;
        if std::process::Command::new("qemu-system-x86_64")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!(
                "SKIPPED real_qemu_migration_survives_a_driver_restart: no qemu-system-x86_64"
            );
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display().to_string();
        let qemu = "qemu-system-x86_64 -nodefaults -display none -accel tcg -m 64 -daemonize";
        let port = 47_000 + std::process::id() % 1000;
        let hook = dir.path().join("hook");
        std::fs::write(
            &hook,
            format!(
                "#!/bin/sh\nset -e\ncase $1 in\n\
                 start) {qemu} -qmp unix:{d}/$3-$2.qmp,server=on,wait=off -incoming defer \
                 -pidfile {d}/$3.pid >{d}/$3.log 2>&1\n\
                 echo \"{{\\\"incoming\\\":\\\"tcp:[::1]:{port}\\\",\\\"handle\\\":$(cat {d}/$3.pid)}}\" ;;\n\
                 stop) echo \"stop $*\" >> {d}/stops; kill $(cat {d}/$3.pid) 2>/dev/null || true ;;\n\
                 esac\n"
            ),
        )
        .expect("hook");
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let st = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{qemu} -qmp unix:{d}/s-vm1.qmp,server=on,wait=off -pidfile {d}/s.pid"
            ))
            .status()
            .expect("source qemu");
        assert!(st.success());
        let kill_all = || {
            for h in ["s", "d"] {
                if let Ok(pid) = std::fs::read_to_string(dir.path().join(format!("{h}.pid"))) {
                    let _ = std::process::Command::new("kill").arg(pid.trim()).status();
                }
            }
        };
        let mut e = QmpEndpoints::new();
        e.insert(host("s"), format!("{d}/s-{{vm}}.qmp")).expect("s");
        e.insert(host("d"), format!("{d}/d-{{vm}}.qmp")).expect("d");
        let driver = || {
            let launcher = CommandLauncher::new(&hook, e.clone());
            let mut s = settings();
            s.migration_timeout = Duration::from_secs(60);
            // A little over 1 MB (zero pages, firmware): several seconds at 200 KB/s.
            s.parameters = Some(MigrationParameters {
                max_bandwidth: Some(200_000),
                ..MigrationParameters::default()
            });
            Qmp::new(Arc::new(launcher), s).with_endpoints(e.clone())
        };
        let (tx, mut rx) = mpsc::channel(1024);
        let sink = ReportSink::new(tx);
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let first = rt.block_on(async {
            driver().start(order(7), sink.clone());
            loop {
                match tokio::time::timeout(Duration::from_secs(20), rx.recv()).await {
                    Ok(Some(Command::HypervisorProgress(_, p))) if p.status == "active" => {
                        break Ok(p)
                    }
                    Ok(Some(Command::HypervisorProgress(..))) => {}
                    other => break Err(format!("{:?}", other.map(|c| c.map(|_| ())))),
                }
            }
        });
        drop(rt); // the "controller" dies mid-migration
        let Ok(first) = first else {
            kill_all();
            panic!("no active progress: {first:?}");
        };
        eprintln!("before the restart: {first}");
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let second = driver();
        let result = rt.block_on(async {
            second.resume(order(7), sink.clone());
            outcome(&mut rx).await
        });
        eprintln!(
            "after: {:?} {}",
            result.0.event,
            result.1.last().map(|p| p.to_string()).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
        let stops = std::fs::read_to_string(dir.path().join("stops")).unwrap_or_default();
        let dst_alive = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("kill -0 $(cat {d}/d.pid)"))
            .status()
            .is_ok_and(|s| s.success());
        kill_all();
        assert_eq!(result.0.event, HypervisorEvent::Completed);
        assert_eq!(
            second.instance(&vm()).map(|i| (i.host, i.handle)),
            Some((host("d"), 0))
        );
        assert_eq!(stops, "stop stop vm1 s 0\n");
        assert!(dst_alive);
    }
}
