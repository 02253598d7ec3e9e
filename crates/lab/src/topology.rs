//! The [`Lab`] guard: namespaces, veth pairs, addresses, routes, sysctls, link moves and
//! child processes, with guaranteed teardown.
//!
//! # Why the `ip` command rather than rtnetlink
//! Links, addresses and routes are configured with iproute2 (`ip -n NS ...`) through
//! `std::process`, not with `rtnetlink` + tokio. The lab is not a fast path (a topology is a few
//! dozen commands, ~2 ms each), and `ip` gives us for free: the `/run/netns` naming and
//! bind-mount convention, creation of each veth end directly in its namespace, seg6 route
//! syntax identical to the docs, and error messages we forward verbatim together with the exact
//! command line, so a failure can be reproduced by pasting it in a shell. It also keeps an async
//! runtime out of a crate whose workloads are deliberately blocking threads. Anything not
//! wrapped here is one [`Netns::ip`] call away.
//!
//! # Teardown is guaranteed
//! - [`Lab`]'s `Drop` (also during a panic unwind) kills tracked children, deletes tracked
//!   links and every namespace (deleting a namespace destroys the veths in it), and removes the
//!   registry file.
//! - A SIGINT/SIGTERM/SIGHUP handler (installed once per process) tears down every live lab,
//!   then lets the signal take its default effect.
//! - `/run/srmig-lab/<runid>.json` lists what the run created; [`crate::cleanup_stale`] removes
//!   leftovers of runs whose owner died without running either of the above (SIGKILL, abort).

use std::collections::BTreeMap;
use std::fmt;
use std::fs::OpenOptions;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cmd;
use crate::error::LabError;
use crate::netns::Netns;
use crate::registry::{self, LinkRecord, ProcessId, RunRecord, REGISTRY_DIR};

/// Maximum interface name length (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;
/// How long a child gets between SIGTERM and SIGKILL at teardown.
const CHILD_GRACE: Duration = Duration::from_millis(500);

/// Identifier of one lab run; namespaces are named `srmig-<runid>-<name>`.
///
/// Lowercase ASCII letters and digits only, so it never contains the `-` separator.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId(String);

impl RunId {
    /// A fresh id: pid, a per-process counter and the low bits of the wall clock, in hex.
    pub fn generate() -> RunId {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        RunId(format!(
            "{:x}{:x}{:03x}",
            std::process::id(),
            n,
            nanos >> 20
        ))
    }

    /// Validates a caller-chosen id.
    pub fn new(id: &str) -> Result<RunId, LabError> {
        let bad = |reason| LabError::InvalidName {
            what: "run id",
            name: id.to_owned(),
            reason,
        };
        if id.is_empty() || id.len() > 24 {
            return Err(bad("must be 1 to 24 characters"));
        }
        if !id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(bad("only lowercase letters and digits are allowed"));
        }
        Ok(RunId(id.to_owned()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The namespace name prefix of this run, `srmig-<runid>-`.
    pub fn prefix(&self) -> String {
        format!("srmig-{}-", self.0)
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An Ethernet MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// One end of a link: interface `ifname` in namespace `netns`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LinkEnd {
    /// Where the interface currently lives.
    pub netns: Netns,
    /// Its name there.
    pub ifname: String,
}

/// A veth pair created by [`Lab::add_veth`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Veth {
    /// First end.
    pub a: LinkEnd,
    /// Second end.
    pub b: LinkEnd,
}

/// A route for [`Lab::add_route`]; `ip route replace` semantics (idempotent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination prefix; `None` is the default route of `family_v6`'s family.
    pub dst: Option<IpNet>,
    /// Next hop.
    pub via: Option<IpAddr>,
    /// Output interface.
    pub dev: Option<String>,
    /// Address family when `dst` is `None` (true: IPv6).
    pub family_v6: bool,
}

impl Route {
    /// IPv6 default route via `gw` (optionally pinned to `dev`).
    pub fn default_v6(gw: IpAddr, dev: Option<&str>) -> Route {
        Route {
            dst: None,
            via: Some(gw),
            dev: dev.map(str::to_owned),
            family_v6: true,
        }
    }

    /// Route to `dst` via `gw`.
    pub fn to(dst: IpNet, gw: IpAddr) -> Route {
        Route {
            dst: Some(dst),
            via: Some(gw),
            dev: None,
            family_v6: matches!(dst, IpNet::V6(_)),
        }
    }

    /// The `ip` arguments after `-n NS`.
    fn args(&self) -> Vec<String> {
        let v6 = self
            .dst
            .map_or(self.family_v6, |d| matches!(d, IpNet::V6(_)));
        let mut args = vec![
            if v6 { "-6" } else { "-4" }.to_owned(),
            "route".into(),
            "replace".into(),
            self.dst
                .map_or_else(|| "default".to_owned(), |d| d.to_string()),
        ];
        if let Some(via) = self.via {
            args.extend(["via".to_owned(), via.to_string()]);
        }
        if let Some(dev) = &self.dev {
            args.extend(["dev".to_owned(), dev.clone()]);
        }
        args
    }
}

/// Mutable state of one lab, shared with the signal handler.
#[derive(Debug)]
struct LabState {
    record: RunRecord,
    children: Vec<Child>,
    registry_dir: PathBuf,
    torn_down: bool,
}

type SharedState = Arc<Mutex<LabState>>;

/// Labs alive in this process, for the signal handler.
fn active() -> MutexGuard<'static, BTreeMap<String, SharedState>> {
    static ACTIVE: OnceLock<Mutex<BTreeMap<String, SharedState>>> = OnceLock::new();
    ACTIVE
        .get_or_init(|| Mutex::new(BTreeMap::new()))
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

fn lock(state: &SharedState) -> MutexGuard<'_, LabState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Options for [`Lab::with_options`].
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// Run id; generated when `None`.
    pub run_id: Option<RunId>,
    /// Registry directory (default [`REGISTRY_DIR`]).
    pub registry_dir: PathBuf,
    /// Install the SIGINT/SIGTERM/SIGHUP teardown handler (default true).
    pub signal_handler: bool,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            run_id: None,
            registry_dir: PathBuf::from(REGISTRY_DIR),
            signal_handler: true,
        }
    }
}

/// A lab run: owns namespaces, links and child processes, and destroys them when dropped.
#[derive(Debug)]
pub struct Lab {
    run_id: RunId,
    state: SharedState,
}

impl Lab {
    /// A new, empty lab with a generated run id, the default registry and the signal handler.
    pub fn new() -> Result<Lab, LabError> {
        Lab::with_options(LabOptions::default())
    }

    /// A new, empty lab.
    pub fn with_options(options: LabOptions) -> Result<Lab, LabError> {
        if options.signal_handler {
            install_signal_handler()?;
        }
        let run_id = options.run_id.unwrap_or_else(RunId::generate);
        let record = RunRecord::new(run_id.as_str());
        record.store(&options.registry_dir)?;
        let state = Arc::new(Mutex::new(LabState {
            record,
            children: Vec::new(),
            registry_dir: options.registry_dir,
            torn_down: false,
        }));
        active().insert(run_id.0.clone(), Arc::clone(&state));
        Ok(Lab { run_id, state })
    }

    /// This run's id.
    pub fn run_id(&self) -> &RunId {
        &self.run_id
    }

    /// Creates namespace `srmig-<runid>-<name>`, brings `lo` up, and sets `accept_dad=0` and
    /// `keep_addr_on_down=1` (all and default) so addresses are usable at once and survive a
    /// link being cut.
    pub fn add_netns(&self, name: &str) -> Result<Netns, LabError> {
        validate_short_name(name)?;
        let ns = Netns::from_name(format!("{}{name}", self.run_id.prefix()));
        if ns.exists() {
            // Never adopt (and later delete) a namespace this run did not create.
            return Err(LabError::InvalidName {
                what: "namespace",
                name: ns.name().to_owned(),
                reason: "already exists",
            });
        }
        self.mutate(|state| {
            // Record first: if `ip netns add` half-succeeds, teardown still tries to delete it.
            state.record.namespaces.push(ns.name().to_owned());
            store(state)?;
            cmd::ip(&["netns", "add", ns.name()]).map(drop)
        })?;
        ns.ip(&["link", "set", "dev", "lo", "up"])?;
        for scope in ["all", "default"] {
            ns.set_sysctl(&format!("net/ipv6/conf/{scope}/accept_dad"), "0")?;
            ns.set_sysctl(&format!("net/ipv6/conf/{scope}/keep_addr_on_down"), "1")?;
        }
        Ok(ns)
    }

    /// Creates a veth pair with end `a_if` in `a` and end `b_if` in `b` (both down).
    pub fn add_veth(&self, a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<Veth, LabError> {
        validate_ifname(a_if)?;
        validate_ifname(b_if)?;
        self.check_owned(a)?;
        self.check_owned(b)?;
        self.mutate(|state| {
            a.ip(&[
                "link",
                "add",
                "name",
                a_if,
                "type",
                "veth",
                "peer",
                "name",
                b_if,
                "netns",
                b.name(),
            ])?;
            state.record.links.push(LinkRecord {
                netns: a.name().to_owned(),
                ifname: a_if.to_owned(),
            });
            store(state)
        })?;
        Ok(Veth {
            a: LinkEnd {
                netns: a.clone(),
                ifname: a_if.to_owned(),
            },
            b: LinkEnd {
                netns: b.clone(),
                ifname: b_if.to_owned(),
            },
        })
    }

    /// Sets the MAC address of a link end.
    pub fn set_mac(&self, end: &LinkEnd, mac: MacAddr) -> Result<(), LabError> {
        let mac = mac.to_string();
        end.netns
            .ip(&["link", "set", "dev", &end.ifname, "address", &mac])
            .map(drop)
    }

    /// Adds an address; IPv6 addresses get `nodad` so they are usable immediately.
    pub fn add_addr(&self, end: &LinkEnd, addr: IpNet) -> Result<(), LabError> {
        let addr = addr.to_string();
        let mut args = vec!["addr", "add", addr.as_str(), "dev", end.ifname.as_str()];
        if addr.contains(':') {
            args.push("nodad");
        }
        end.netns.ip(&args).map(drop)
    }

    /// Adds (replaces) a route in `ns`.
    pub fn add_route(&self, ns: &Netns, route: &Route) -> Result<(), LabError> {
        let args = route.args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ns.ip(&args).map(drop)
    }

    /// Installs a permanent neighbor entry (`ip neigh replace ... nud permanent`), so traffic
    /// over `end` never waits for neighbor discovery. Permanent entries survive the peer's
    /// carrier loss but not an admin-down of `end` itself; reinstall them after `set_up`.
    pub fn add_neighbor(&self, end: &LinkEnd, addr: IpAddr, mac: MacAddr) -> Result<(), LabError> {
        let (addr, mac) = (addr.to_string(), mac.to_string());
        end.netns
            .ip(&[
                "neigh",
                "replace",
                &addr,
                "lladdr",
                &mac,
                "dev",
                &end.ifname,
                "nud",
                "permanent",
            ])
            .map(drop)
    }

    /// Enables IPv4 and IPv6 forwarding in `ns`.
    pub fn enable_forwarding(&self, ns: &Netns) -> Result<(), LabError> {
        ns.set_sysctl("net/ipv6/conf/all/forwarding", "1")?;
        ns.set_sysctl("net/ipv4/ip_forward", "1")
    }

    /// Enables SRv6 processing (`seg6_enabled`) on `all` and on `ifname` in `ns`.
    pub fn enable_seg6(&self, ns: &Netns, ifname: &str) -> Result<(), LabError> {
        ns.set_sysctl("net/ipv6/conf/all/seg6_enabled", "1")?;
        ns.set_sysctl(&format!("net/ipv6/conf/{ifname}/seg6_enabled"), "1")
    }

    /// Brings a link end administratively up.
    pub fn set_up(&self, end: &LinkEnd) -> Result<(), LabError> {
        end.netns
            .ip(&["link", "set", "dev", &end.ifname, "up"])
            .map(drop)
    }

    /// Brings a link end up with one system call ([`crate::ifup`]) and returns the instant
    /// just before it: the moment the link can have come up at the earliest.
    pub fn set_up_timed(&self, end: &LinkEnd) -> Result<Instant, LabError> {
        end.netns
            .run(|| crate::ifup::set_up_now(&end.ifname))?
            .map_err(|source| LabError::LinkUp {
                ifname: end.ifname.clone(),
                netns: end.netns.name().to_owned(),
                source,
            })
    }

    /// Brings a link end administratively down (its peer loses carrier).
    pub fn set_down(&self, end: &LinkEnd) -> Result<(), LabError> {
        end.netns
            .ip(&["link", "set", "dev", &end.ifname, "down"])
            .map(drop)
    }

    /// Waits until a link end is operationally up and returns how long that took.
    ///
    /// After `ip link set up` the kernel activates the device's qdisc and sets `state UP` from
    /// its linkwatch work, which for veths can lag by up to about a second; packets sent in
    /// between are silently dropped. Call this before starting a workload.
    pub fn wait_up(&self, end: &LinkEnd, timeout: Duration) -> Result<Duration, LabError> {
        let start = Instant::now();
        loop {
            let out = end.netns.ip(&["-o", "link", "show", "dev", &end.ifname])?;
            if out.contains(" state UP ") {
                return Ok(start.elapsed());
            }
            if start.elapsed() >= timeout {
                return Err(LabError::Timeout {
                    what: format!("state UP of {} in {}", end.ifname, end.netns),
                    waited: timeout,
                });
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Moves a link end into namespace `to` and returns its new location.
    ///
    /// This is how a netns VM "migrates": its host-side end is cut at S and attached at D.
    /// The kernel brings a moved interface down and drops its addresses and routes; configure
    /// and [`set_up`](Self::set_up) it again on arrival.
    pub fn move_link(&self, end: &LinkEnd, to: &Netns) -> Result<LinkEnd, LabError> {
        self.check_owned(to)?;
        self.mutate(|state| {
            end.netns
                .ip(&["link", "set", "dev", &end.ifname, "netns", to.name()])?;
            for link in &mut state.record.links {
                if link.netns == end.netns.name() && link.ifname == end.ifname {
                    link.netns = to.name().to_owned();
                }
            }
            store(state)
        })?;
        Ok(LinkEnd {
            netns: to.clone(),
            ifname: end.ifname.clone(),
        })
    }

    /// Starts `argv` inside `ns` (`ip netns exec`), stdin closed, stdout and stderr appended
    /// to `log` (or discarded). Returns the pid; the child is killed at teardown.
    pub fn spawn(&self, ns: &Netns, argv: &[&str], log: Option<&Path>) -> Result<u32, LabError> {
        self.handle().spawn(ns, argv, log)
    }

    /// Whether child `pid` (from [`spawn`](Self::spawn)) is still running.
    pub fn child_running(&self, pid: u32) -> bool {
        self.handle().child_running(pid)
    }

    /// Stops child `pid` (SIGTERM, then SIGKILL after a grace period) and reaps it.
    pub fn stop_child(&self, pid: u32) -> Result<(), LabError> {
        self.handle().stop_child(pid)
    }

    /// Kills child `pid` with SIGKILL at once (a crash, for fault injection) and reaps it.
    pub fn kill_child(&self, pid: u32) -> Result<(), LabError> {
        self.handle().kill_child(pid)
    }

    /// A handle that starts and stops this lab's child processes from other threads (e.g. a
    /// hypervisor driver starting QEMU). It does not own the lab: once the lab is torn down,
    /// its calls fail with [`LabError::TornDown`].
    pub fn handle(&self) -> LabHandle {
        LabHandle {
            run_id: self.run_id.clone(),
            state: Arc::clone(&self.state),
        }
    }

    /// Names of this run's namespaces that currently exist, from `ip netns list`.
    pub fn live_namespaces(&self) -> Result<Vec<String>, LabError> {
        list_namespaces_with_prefix(&self.run_id.prefix())
    }

    /// Tears everything down now (idempotent). Errors are collected; the first is returned
    /// after every step was attempted.
    pub fn teardown(&self) -> Result<(), LabError> {
        active().remove(&self.run_id.0);
        teardown_state(&mut lock(&self.state))
    }

    fn check_owned(&self, ns: &Netns) -> Result<(), LabError> {
        self.handle().check_owned(ns)
    }

    fn mutate<R>(
        &self,
        f: impl FnOnce(&mut LabState) -> Result<R, LabError>,
    ) -> Result<R, LabError> {
        self.handle().mutate(f)
    }
}

/// Starts, watches and stops a [`Lab`]'s child processes from any thread (see
/// [`Lab::handle`]). Cheap to clone; children stay tracked by the lab and die at its teardown.
#[derive(Debug, Clone)]
pub struct LabHandle {
    run_id: RunId,
    state: SharedState,
}

impl LabHandle {
    /// Starts `argv` inside `ns` (`ip netns exec`), stdin closed, stdout and stderr appended
    /// to `log` (or discarded). Returns the pid; the child is killed at teardown.
    pub fn spawn(&self, ns: &Netns, argv: &[&str], log: Option<&Path>) -> Result<u32, LabError> {
        self.check_owned(ns)?;
        let Some((program, args)) = argv.split_first() else {
            return Err(LabError::InvalidName {
                what: "command",
                name: String::new(),
                reason: "argv is empty",
            });
        };
        let mut full = vec!["netns", "exec", ns.name(), program];
        full.extend_from_slice(args);
        let command_line = cmd::render("ip", &full);
        let (stdout, stderr) = match log {
            Some(path) => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| LabError::File {
                        action: "opening log",
                        path: path.to_owned(),
                        source,
                    })?;
                let copy = file.try_clone().map_err(|source| LabError::File {
                    action: "duplicating log",
                    path: path.to_owned(),
                    source,
                })?;
                (Stdio::from(file), Stdio::from(copy))
            }
            None => (Stdio::null(), Stdio::null()),
        };
        self.mutate(|state| {
            let child = Command::new("ip")
                .args(&full)
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr)
                .spawn()
                .map_err(|source| LabError::Spawn {
                    command: command_line,
                    source,
                })?;
            let pid = child.id();
            state.record.children.push(ProcessId::of(pid));
            state.children.push(child);
            store(state)?;
            Ok(pid)
        })
    }

    /// Whether child `pid` (from [`spawn`](Self::spawn)) is still running.
    pub fn child_running(&self, pid: u32) -> bool {
        let mut state = lock(&self.state);
        state
            .children
            .iter_mut()
            .find(|c| c.id() == pid)
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops child `pid` (SIGTERM, then SIGKILL after a grace period) and reaps it.
    pub fn stop_child(&self, pid: u32) -> Result<(), LabError> {
        self.end_child(pid, stop)
    }

    /// Kills child `pid` with SIGKILL at once and reaps it.
    pub fn kill_child(&self, pid: u32) -> Result<(), LabError> {
        self.end_child(pid, |child| {
            let _ = child.kill();
            let _ = child.wait();
            Ok(())
        })
    }

    /// Takes child `pid` off the lab's records and ends it with `end`.
    fn end_child(
        &self,
        pid: u32,
        end: impl FnOnce(&mut Child) -> Result<(), LabError>,
    ) -> Result<(), LabError> {
        let run_id = self.run_id.0.clone();
        self.mutate(|state| {
            let Some(index) = state.children.iter().position(|c| c.id() == pid) else {
                return Err(LabError::NotOwned {
                    what: "child process",
                    name: pid.to_string(),
                    run_id,
                });
            };
            let mut child = state.children.swap_remove(index);
            state.record.children.retain(|c| c.pid != pid);
            let ended = end(&mut child);
            store(state)?;
            ended
        })
    }

    fn check_owned(&self, ns: &Netns) -> Result<(), LabError> {
        let state = lock(&self.state);
        if state.torn_down {
            return Err(LabError::TornDown(self.run_id.0.clone()));
        }
        if state.record.namespaces.iter().any(|n| n == ns.name()) {
            return Ok(());
        }
        Err(LabError::NotOwned {
            what: "namespace",
            name: ns.name().to_owned(),
            run_id: self.run_id.0.clone(),
        })
    }

    fn mutate<R>(
        &self,
        f: impl FnOnce(&mut LabState) -> Result<R, LabError>,
    ) -> Result<R, LabError> {
        let mut state = lock(&self.state);
        if state.torn_down {
            return Err(LabError::TornDown(self.run_id.0.clone()));
        }
        f(&mut state)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(err) = self.teardown() {
            tracing::error!(run_id = %self.run_id, error = %err, "lab teardown failed");
            eprintln!("srmig-lab: teardown of run {} failed: {err}", self.run_id);
        }
    }
}

fn store(state: &LabState) -> Result<(), LabError> {
    state.record.store(&state.registry_dir)
}

/// Kills children, deletes links and namespaces, removes the registry file.
fn teardown_state(state: &mut LabState) -> Result<(), LabError> {
    if state.torn_down {
        return Ok(());
    }
    state.torn_down = true;
    let mut errors = Vec::new();
    for mut child in state.children.drain(..) {
        if let Err(err) = stop(&mut child) {
            errors.push(err);
        }
    }
    state.record.children.clear();
    registry::destroy(&state.record, &mut errors);
    if errors.is_empty() {
        if let Err(err) = registry::remove(&state.registry_dir, &state.record.run_id) {
            errors.push(err);
        }
    } else if let Err(err) = store(state) {
        // Keep the record (minus reaped children) for `cleanup_stale`.
        errors.push(err);
    }
    match errors.into_iter().next() {
        Some(first) => Err(first),
        None => Ok(()),
    }
}

/// SIGTERM, wait up to [`CHILD_GRACE`], then SIGKILL; always reaps.
fn stop(child: &mut Child) -> Result<(), LabError> {
    let pid = child.id();
    let wrap = |source| LabError::Child { pid, source };
    if child.try_wait().map_err(wrap)?.is_some() {
        return Ok(());
    }
    if let Ok(raw) = i32::try_from(pid) {
        // The child may exit between try_wait and kill; ESRCH is harmless then.
        let _ = kill(Pid::from_raw(raw), Signal::SIGTERM);
    }
    let deadline = Instant::now() + CHILD_GRACE;
    while Instant::now() < deadline {
        if child.try_wait().map_err(wrap)?.is_some() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(10));
    }
    // `kill` fails only if the child was already reaped, which `wait` then reports.
    let _ = child.kill();
    child.wait().map(drop).map_err(wrap)
}

/// Names from `ip netns list` that start with `prefix`.
pub fn list_namespaces_with_prefix(prefix: &str) -> Result<Vec<String>, LabError> {
    let out = cmd::ip(&["netns", "list"])?;
    Ok(out
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with(prefix))
        .map(str::to_owned)
        .collect())
}

/// Installs (once) a thread that, on SIGINT/SIGTERM/SIGHUP, tears down every live lab and
/// then re-raises the signal with its default disposition.
fn install_signal_handler() -> Result<(), LabError> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    let result = INSTALLED.get_or_init(|| {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
            .map_err(|e| e.to_string())?;
        thread::Builder::new()
            .name("srmig-lab-signals".into())
            .spawn(move || {
                if let Some(signal) = signals.forever().next() {
                    teardown_all();
                    // Default action of these signals terminates the process.
                    let _ = signal_hook::low_level::emulate_default_handler(signal);
                    std::process::exit(128 + signal);
                }
            })
            .map(drop)
            .map_err(|e| e.to_string())
    });
    result
        .clone()
        .map_err(|msg| LabError::SignalHandler(std::io::Error::other(msg)))
}

/// Tears down every live lab of this process (signal path).
fn teardown_all() {
    let labs: Vec<SharedState> = std::mem::take(&mut *active()).into_values().collect();
    for state in labs {
        let mut state = lock(&state);
        if let Err(err) = teardown_state(&mut state) {
            eprintln!(
                "srmig-lab: teardown of run {} failed: {err}",
                state.record.run_id
            );
        }
    }
}

fn validate_short_name(name: &str) -> Result<(), LabError> {
    let bad = |reason| LabError::InvalidName {
        what: "namespace",
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() || name.len() > 32 {
        return Err(bad("must be 1 to 32 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(bad("only letters, digits, '-' and '_' are allowed"));
    }
    Ok(())
}

fn validate_ifname(name: &str) -> Result<(), LabError> {
    let bad = |reason| LabError::InvalidName {
        what: "interface",
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() || name.len() > IFNAME_MAX {
        return Err(bad("must be 1 to 15 bytes"));
    }
    if name == "." || name == ".." || name.bytes().any(|b| b == b'/' || b == b':' || b <= b' ') {
        return Err(bad(
            "must not be '.', '..' or contain '/', ':' or whitespace",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_run_ids_are_valid_and_distinct() {
        let a = RunId::generate();
        let b = RunId::generate();
        assert_ne!(a, b);
        assert!(RunId::new(a.as_str()).is_ok(), "{a}");
        assert_eq!(a.prefix(), format!("srmig-{a}-"));
    }

    #[test]
    fn run_ids_and_names_are_validated() {
        assert!(RunId::new("ab12").is_ok());
        assert!(RunId::new("a-b").is_err());
        assert!(RunId::new("").is_err());
        assert!(validate_short_name("vm_1-x").is_ok());
        assert!(validate_short_name("a/b").is_err());
        assert!(validate_ifname("eth0.100").is_ok());
        assert!(validate_ifname("sixteen-chars-xx").is_err());
        assert!(validate_ifname("a b").is_err());
    }

    #[test]
    fn mac_displays_like_iproute2() {
        assert_eq!(
            MacAddr([0x02, 0, 0, 0xab, 0x0c, 0xff]).to_string(),
            "02:00:00:ab:0c:ff"
        );
    }

    #[test]
    fn route_arguments() {
        let gw: IpAddr = "fd00::1".parse().expect("literal");
        assert_eq!(
            Route::default_v6(gw, Some("eth0")).args(),
            ["-6", "route", "replace", "default", "via", "fd00::1", "dev", "eth0"]
        );
        let dst: IpNet = "10.0.0.0/8".parse().expect("literal");
        let gw4: IpAddr = "10.0.0.1".parse().expect("literal");
        assert_eq!(
            Route::to(dst, gw4).args(),
            ["-4", "route", "replace", "10.0.0.0/8", "via", "10.0.0.1"]
        );
    }
}
