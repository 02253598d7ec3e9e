//! `srmigd --workers N`: N independent dataplane loops, the kernel spreading flows over them.
//!
//! ```text
//!                      API thread (tokio)                      controller
//!                      Workers::call: the same command          ▲ VM state reports
//!                      to every worker, in the same order;      │ (worker 0's only)
//!                      replies merged (first error wins,        │
//!                      status counters summed)                  │
//!                 ┌───────────────┬────────────────┐            │
//!                 ▼               ▼                ▼            │
//!   srmig-dp0: DataplaneLoop  srmig-dp1: …     srmig-dp(N-1) ───┘ (dp0)
//!     own Node (engine built from node.toml, End.SBUF and ICMPv6 bounds / N)
//!     own netlink LinkWatch (learns link and VM state itself)
//!     own AF_PACKET socket on every port ──┐
//!                                          │ PACKET_FANOUT_HASH, one group per port
//!   interface up0 / vma0 / … ──────────────┘ (and per ifindex): the kernel hands each
//!                                             frame to one worker by its flow hash
//! ```
//!
//! # Why this model
//!
//! The engine is a sans-IO state machine owned by one thread; sharing it between threads
//! would put a lock (or atomics) on every packet of the fast path. Instead each worker owns a
//! whole engine and the kernel splits the traffic: with `PACKET_FANOUT_HASH` every frame of a
//! flow (same addresses, ports, flow label: the kernel's flow hash) reaches the same socket,
//! so the same worker, so **per-flow order is kept** end to end as with one worker. Nothing is
//! shared on the fast path; the workers talk to each other only to relay a commit-fence marker
//! (below).
//!
//! The control state stays identical on every worker because every API command is applied by
//! every worker, in the same order (the API thread sends a command to all workers before it
//! awaits anything), and every worker learns link state from its own netlink socket, so VM
//! state changes (End.S forwards, End.SBUF holds and releases) happen on each worker from the
//! same kernel events. Migration semantics are those of one worker, per flow:
//!
//! - **End.SBUF** holds a VM's packets in each worker's own buffer; each buffer keeps its
//!   arrival order and is released in that order when *that worker* sees the VM running
//!   again. A flow is held and released by one worker, so it arrives in order; two flows held
//!   by two workers may interleave differently than they arrived (as with any multi-queue
//!   router). The bounds stay per VM and global: each worker's engine gets
//!   `buffer.per_vm_*` and `buffer.global_*` divided by N (rounded down, at least 1), so the
//!   workers together never hold more than node.toml allows (unless a bound is smaller than
//!   N: then each worker still holds 1). `max_age_ms` is unchanged.
//! - **End.S**, VM state changes and [`srmig_agent::Agent::reinject_for_vm`] work per worker
//!   exactly as with one worker; a send that fails because a VM's interface just went away
//!   is re-steered by the worker that sent it (see [`crate::dataplane_loop`]).
//! - **VM state reports** to the controller: only worker 0 sends them; the other workers'
//!   VM states follow the same link events and API commands. **Fence reports** (a commit-fence
//!   marker arrived) come from whichever worker the marker hashed to.
//! - **The commit fence**: each worker fences the direct packets of its own flows, but a
//!   marker reaches one worker. That worker relays it to the others (the one message workers
//!   exchange, off the fast path: `Command::FenceRelay`); each first processes the frames it
//!   has received, which include the old path's packets of its flows, then opens its pair
//!   (`DataplaneLoop::set_peers`, `srmig_dataplane::Dataplane::fence_marker_relayed`).
//! - **ICMPv6 errors**: each worker's rate limit is `icmp.rate_per_sec / N` and `icmp.burst / N`
//!   (at least 1), so together they stay within node.toml's limit.
//!
//! # What N > 1 refuses or changes
//!
//! - `[[qemu]]` ports: a QEMU stream is one connection that cannot be shared; startup fails
//!   with a clear error.
//! - AF_XDP (`[io] mode = "xdp"`, for any port): one AF_XDP socket owns a queue; startup fails.
//!   `auto` uses AF_PACKET on every port (logged once at startup).
//! - Status and metrics: every counter is the sum over the workers ([`HostStatus::merge`]); a
//!   port is `attached` only while every worker has a socket on it; `io.attachments` counts
//!   the sockets all workers opened.
//!
//! # Limits
//!
//! - A flow hashes to one worker only while the group's membership is stable: when a port's
//!   interface comes up, the workers open their sockets one after the other (each on its own
//!   link event), and until the last one joined, the frames of a flow may go to another
//!   worker than afterwards; packets of one flow *received* on that port in those
//!   microseconds can be reordered. A socket that joins a group with members receives, between
//!   its `bind` and its fanout join (two system calls), a copy of every frame of the interface
//!   (the kernel's packet(7) API allows no other order): such a frame can be forwarded twice.
//!   Both happen only when a port attaches.
//! - The bench's generator sends one flow: all of it goes to one worker.
//!
//! [`HostStatus::merge`]: crate::status::HostStatus::merge

use srmig_dataplane::{NodeConfig, PortId};
use tracing::warn;

use crate::config::DaemonConfig;
use crate::dataplane_loop::{DataplaneHandle, Unavailable};
use crate::mailbox::{Command, Reply};
use crate::port::IoMode;

/// Why `--workers` (or `--cpus`) does not fit the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkersError {
    /// `--workers 0`.
    #[error("--workers must be at least 1")]
    Zero,
    /// QEMU stream ports with more than one worker.
    #[error("--workers {workers}: QEMU stream ports ([[qemu]] port \"{port}\") need a single worker (one stream cannot be shared); use --workers 1")]
    Qemu {
        /// The `--workers` value.
        workers: usize,
        /// The first `[[qemu]]` port.
        port: String,
    },
    /// AF_XDP insisted on with more than one worker.
    #[error("--workers {workers}: [io] {field} = \"xdp\" needs a single worker (several workers share a port through AF_PACKET fanout); use \"auto\" or \"packet\", or --workers 1")]
    Xdp {
        /// The `--workers` value.
        workers: usize,
        /// `mode` or `ports.<name>`.
        field: String,
    },
    /// A malformed `--cpus` list.
    #[error("--cpus {list:?}: {reason}")]
    Cpus {
        /// The list as given.
        list: String,
        /// What is wrong.
        reason: String,
    },
}

/// Checks that `workers` workers can run the daemon configuration `cfg`.
pub fn check(workers: usize, cfg: &DaemonConfig) -> Result<(), WorkersError> {
    if workers == 0 {
        return Err(WorkersError::Zero);
    }
    if workers == 1 {
        return Ok(());
    }
    if let Some(q) = cfg.qemu.first() {
        return Err(WorkersError::Qemu {
            workers,
            port: q.port.clone(),
        });
    }
    if cfg.io.mode == IoMode::Xdp {
        return Err(WorkersError::Xdp {
            workers,
            field: "mode".into(),
        });
    }
    if let Some((name, _)) = cfg.io.ports.iter().find(|(_, m)| **m == IoMode::Xdp) {
        return Err(WorkersError::Xdp {
            workers,
            field: format!("ports.{name}"),
        });
    }
    Ok(())
}

/// `v / n` rounded down, at least 1 (0 stays 0: a bound of 0 means nothing either way).
fn share<T>(v: T, n: usize) -> T
where
    T: Copy + PartialEq + From<u8> + TryFrom<usize> + std::ops::Div<Output = T> + Ord,
{
    let zero = T::from(0);
    if v == zero || n <= 1 {
        return v;
    }
    let Ok(n) = T::try_from(n) else {
        return T::from(1);
    };
    (v / n).max(T::from(1))
}

/// The node configuration of one of `workers` workers: `base` with the End.SBUF bounds and
/// the ICMPv6 error rate limit divided by `workers` (rounded down, at least 1; see the
/// module docs). One worker: `base` unchanged.
pub fn worker_node_config(base: &NodeConfig, workers: usize) -> NodeConfig {
    let mut c = base.clone();
    if workers <= 1 {
        return c;
    }
    let b = &mut c.buffer;
    b.per_vm_packets = share(b.per_vm_packets, workers);
    b.per_vm_bytes = share(b.per_vm_bytes, workers);
    b.global_packets = share(b.global_packets, workers);
    b.global_bytes = share(b.global_bytes, workers);
    c.icmp.rate_per_sec = share(c.icmp.rate_per_sec, workers);
    c.icmp.burst = share(c.icmp.burst, workers);
    c
}

/// This process's salt for its `PACKET_FANOUT` group ids (fanout groups are shared by the
/// whole network namespace: another srmigd there must not pick the same ids).
pub fn fanout_salt() -> u16 {
    // The low bits of the pid, moved above the bits the port index and ifindex use most.
    let pid = std::process::id();
    ((pid << 11) ^ (pid >> 5)) as u16
}

/// The `PACKET_FANOUT` group of port `port` on interface `ifindex`: the same for every
/// worker, distinct for each port of the process (port ids below 64) and for a new ifindex
/// of the same port (a recreated interface must not meet the group of the old one, whose
/// sockets may still be closing).
pub fn fanout_group(salt: u16, port: PortId, ifindex: u32) -> u16 {
    salt ^ ((ifindex as u16) << 6) ^ port.0
}

/// Where the dataplane workers run (`--cpus`).
///
/// Every worker is pinned to one CPU unless the operator says `any`. A worker hands the
/// frames it sends to a veth (a netns VM's or container's port, an uplink to a Linux
/// router) to the kernel's input backlog *of the CPU it runs on*, which the receiving side
/// drains in that CPU's softirq. If the scheduler moved the worker to another CPU while the
/// old CPU's backlog still held frames (its softirq deferred to `ksoftirqd` under load), the
/// frames sent after the move would be delivered first: a flow reordered by srmigd itself
/// (seen in the lab as a block of ~50 TCP segments overtaken, about one run in three, under
/// load). A worker that stays on one CPU keeps every flow in order, as the kernel's own
/// forwarding does (it runs on the receiving CPU).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuPlacement {
    /// No `--cpus`: one worker stays on the CPU it starts on; with several, worker k takes
    /// the k-th CPU (modulo) of the CPUs the process may use.
    Default,
    /// `--cpus LIST`: worker k on the k-th CPU of LIST, modulo its length.
    List(Vec<usize>),
    /// `--cpus any`: not pinned; the scheduler may move workers (flows may be reordered).
    Any,
}

impl CpuPlacement {
    /// Parses `--cpus` (`None`: not given).
    pub fn parse(arg: Option<&str>) -> Result<CpuPlacement, WorkersError> {
        match arg.map(str::trim) {
            None => Ok(CpuPlacement::Default),
            Some("any") => Ok(CpuPlacement::Any),
            Some(list) => parse_cpus(list).map(CpuPlacement::List),
        }
    }

    /// The CPU for worker `k` of `workers`, given the CPUs the process may use (`allowed`,
    /// ascending) and the one the worker runs on now (`current`); `None`: not pinned.
    pub fn cpu_for(
        &self,
        k: usize,
        workers: usize,
        allowed: &[usize],
        current: Option<usize>,
    ) -> Option<usize> {
        match self {
            CpuPlacement::Any => None,
            CpuPlacement::List(cpus) => cpus.get(k % cpus.len().max(1)).copied(),
            CpuPlacement::Default if workers <= 1 => current.or(allowed.first().copied()),
            CpuPlacement::Default => allowed.get(k % allowed.len().max(1)).copied(),
        }
    }
}

/// The CPUs the calling thread may run on, ascending (empty if the kernel does not say).
#[allow(unsafe_code)]
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is a plain bit array; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the calling thread.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return Vec::new();
    }
    // SAFETY: CPU_ISSET reads a bit of `set`, bounded by CPU_SETSIZE.
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// The CPU the calling thread runs on now.
#[allow(unsafe_code)]
pub fn current_cpu() -> Option<usize> {
    // SAFETY: sched_getcpu takes no arguments and only returns a number.
    let c = unsafe { libc::sched_getcpu() };
    usize::try_from(c).ok()
}

/// Parses `--cpus`: CPU numbers and ranges, comma separated (`1`, `0,1`, `0-3,6`).
pub fn parse_cpus(list: &str) -> Result<Vec<usize>, WorkersError> {
    let bad = |reason: String| WorkersError::Cpus {
        list: list.to_owned(),
        reason,
    };
    let num = |s: &str| {
        s.trim()
            .parse::<usize>()
            .map_err(|_| bad(format!("\"{s}\" is not a CPU number")))
    };
    let mut cpus = Vec::new();
    for part in list.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(bad(format!("range \"{part}\" is empty")));
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(num(part)?),
        }
    }
    if let Some(&c) = cpus.iter().find(|&&c| c >= libc::CPU_SETSIZE as usize) {
        return Err(bad(format!("CPU {c} is beyond CPU_SETSIZE")));
    }
    Ok(cpus)
}

/// Pins the calling thread to `cpu`.
#[allow(unsafe_code)]
pub fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is a plain bit array; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` < CPU_SETSIZE (checked by parse_cpus; CPU_SET also bounds-checks).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the calling thread.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The API side of every worker: a [`DataplaneHandle`] each, worker 0 first.
#[derive(Debug, Clone)]
pub struct Workers {
    handles: Vec<DataplaneHandle>,
}

impl From<DataplaneHandle> for Workers {
    fn from(h: DataplaneHandle) -> Workers {
        Workers { handles: vec![h] }
    }
}

impl Workers {
    /// The workers behind `handles` (worker 0 first; at least one).
    pub fn new(handles: Vec<DataplaneHandle>) -> Workers {
        assert!(!handles.is_empty(), "at least one worker");
        Workers { handles }
    }

    /// How many workers.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Never: there is always a worker 0.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Worker 0's handle.
    pub fn first(&self) -> &DataplaneHandle {
        &self.handles[0]
    }

    /// Sends `make()` to every worker; fails if any worker is gone (the others got it).
    pub fn send_all(&self, make: impl Fn() -> Command) -> Result<(), Unavailable> {
        let mut r = Ok(());
        for h in &self.handles {
            if let Err(e) = h.send(make()) {
                r = Err(e);
            }
        }
        r
    }

    /// Sends a command built around a reply channel to every worker (all sent before any
    /// reply is awaited, so concurrent calls reach every worker in the same order) and
    /// returns the replies, worker 0's first.
    pub async fn call<T>(&self, make: impl Fn(Reply<T>) -> Command) -> Result<Vec<T>, Unavailable> {
        let mut pending = Vec::with_capacity(self.handles.len());
        for h in &self.handles {
            let (tx, rx) = tokio::sync::oneshot::channel();
            h.send(make(tx))?;
            pending.push(rx);
        }
        let mut replies = Vec::with_capacity(pending.len());
        for rx in pending {
            replies.push(rx.await.map_err(|_| Unavailable)?);
        }
        Ok(replies)
    }
}

/// The reply of a command applied by every worker: the first error, else the successes
/// merged by `merge` (worker 0's first). The workers apply the same commands to the same
/// state, so their replies agree; a disagreement is a bug, logged.
pub fn merge_replies<T, E: std::fmt::Display>(
    what: &str,
    replies: Vec<Result<T, E>>,
    merge: impl Fn(&mut T, T),
) -> Option<Result<T, E>> {
    let errors = replies.iter().filter(|r| r.is_err()).count();
    if errors != 0 && errors != replies.len() {
        warn!(
            command = what,
            errors,
            workers = replies.len(),
            "workers disagree on a command"
        );
    }
    let mut acc: Option<T> = None;
    for r in replies {
        let v = match r {
            Ok(v) => v,
            Err(e) => return Some(Err(e)),
        };
        match &mut acc {
            None => acc = Some(v),
            Some(a) => merge(a, v),
        }
    }
    acc.map(Ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::qemu::QemuPortConfig;
    use crate::port::IoConfig;
    use srmig_agent::testkit::base;

    fn daemon(qemu: Vec<QemuPortConfig>, io: IoConfig) -> DaemonConfig {
        DaemonConfig {
            node: base(),
            qemu,
            io,
            notes: Vec::new(),
        }
    }

    #[test]
    fn bounds_are_divided_and_never_exceed_the_configured_ones() {
        let mut cfg = base();
        cfg.buffer.per_vm_packets = 2048;
        cfg.buffer.per_vm_bytes = (2 << 20) + 1;
        cfg.buffer.global_packets = 8191;
        cfg.buffer.global_bytes = 8 << 20;
        cfg.icmp.rate_per_sec = 100;
        cfg.icmp.burst = 1;
        assert_eq!(worker_node_config(&cfg, 1), cfg);
        for n in 2..=5usize {
            let w = worker_node_config(&cfg, n);
            let b = w.buffer;
            assert!(b.per_vm_packets as usize * n <= cfg.buffer.per_vm_packets as usize);
            assert!(b.per_vm_bytes * n as u64 <= cfg.buffer.per_vm_bytes);
            assert!(b.global_packets as usize * n <= cfg.buffer.global_packets as usize);
            assert!(b.global_bytes * n as u64 <= cfg.buffer.global_bytes);
            assert!(b.per_vm_packets <= b.global_packets);
            assert!(b.per_vm_bytes <= b.global_bytes);
            assert_eq!(b.max_age_ms, cfg.buffer.max_age_ms);
            assert_eq!(w.icmp.rate_per_sec, 100 / n as u32);
            // Smaller than N: at least 1 each.
            assert_eq!(w.icmp.burst, 1);
            // The engine accepts what each worker gets.
            srmig_dataplane::Dataplane::new(w).expect("worker config valid");
        }
        let w = worker_node_config(&cfg, 2);
        assert_eq!(w.buffer.per_vm_packets, 1024);
        assert_eq!(w.buffer.per_vm_bytes, 1 << 20);
        assert_eq!(w.buffer.global_packets, 4095);
        assert_eq!(w.buffer.global_bytes, 4 << 20);
        // 0 stays 0.
        assert_eq!(share(0u32, 4), 0);
        assert_eq!(share(3u64, 4), 1);
    }

    #[test]
    fn qemu_ports_and_xdp_refuse_several_workers() {
        let q = QemuPortConfig {
            port: "vm1p".into(),
            socket: "/run/srmig/vm1.net".into(),
            qmp: None,
            migrate_continue: false,
        };
        assert_eq!(
            check(1, &daemon(vec![q.clone()], IoConfig::default())),
            Ok(())
        );
        let e = check(2, &daemon(vec![q], IoConfig::default())).expect_err("qemu");
        assert!(matches!(e, WorkersError::Qemu { .. }), "{e}");
        assert!(e.to_string().contains("[[qemu]] port \"vm1p\""), "{e}");

        let xdp = IoConfig {
            mode: IoMode::Xdp,
            ..IoConfig::default()
        };
        assert_eq!(check(1, &daemon(vec![], xdp.clone())), Ok(()));
        let e = check(2, &daemon(vec![], xdp)).expect_err("xdp");
        assert!(e.to_string().contains("[io] mode = \"xdp\""), "{e}");
        let mut per_port = IoConfig::default();
        per_port.ports.insert("up0".into(), IoMode::Xdp);
        let e = check(3, &daemon(vec![], per_port)).expect_err("xdp port");
        assert!(e.to_string().contains("ports.up0"), "{e}");

        assert_eq!(
            check(0, &daemon(vec![], IoConfig::default())),
            Err(WorkersError::Zero)
        );
        let auto = IoConfig::default();
        assert_eq!(check(2, &daemon(vec![], auto)), Ok(()));
    }

    #[test]
    fn fanout_groups_differ_per_port_and_ifindex() {
        let salt = fanout_salt();
        let mut seen = std::collections::BTreeSet::new();
        for port in 0..8u16 {
            for ifindex in [2u32, 3, 17, 1000] {
                assert!(seen.insert(fanout_group(salt, PortId(port), ifindex)));
            }
        }
        assert_eq!(
            fanout_group(salt, PortId(1), 7),
            fanout_group(salt, PortId(1), 7)
        );
    }

    /// Every worker gets one CPU unless `any`: a single one stays where it starts, several
    /// spread over the CPUs the process may use, a list is taken modulo its length.
    #[test]
    fn workers_are_pinned_unless_any() {
        let allowed = [2, 3, 5];
        let d = CpuPlacement::Default;
        assert_eq!(d.cpu_for(0, 1, &allowed, Some(3)), Some(3));
        assert_eq!(d.cpu_for(0, 1, &allowed, None), Some(2));
        let spread: Vec<_> = (0..4).map(|k| d.cpu_for(k, 4, &allowed, Some(5))).collect();
        assert_eq!(spread, [Some(2), Some(3), Some(5), Some(2)]);
        assert_eq!(d.cpu_for(1, 2, &[], None), None);
        let l = CpuPlacement::List(vec![1, 0]);
        assert_eq!(l.cpu_for(0, 1, &allowed, Some(3)), Some(1));
        assert_eq!(l.cpu_for(3, 4, &allowed, Some(3)), Some(0));
        assert_eq!(CpuPlacement::Any.cpu_for(0, 1, &allowed, Some(3)), None);
        // The calling thread's own view.
        let mine = allowed_cpus();
        assert!(!mine.is_empty());
        assert!(current_cpu().is_some_and(|c| mine.contains(&c)));
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(
            CpuPlacement::parse(Some("0-1")),
            Ok(CpuPlacement::List(vec![0, 1]))
        );
        assert_eq!(CpuPlacement::parse(Some("any")), Ok(CpuPlacement::Any));
        assert_eq!(CpuPlacement::parse(None), Ok(CpuPlacement::Default));
        assert!(CpuPlacement::parse(Some("some")).is_err());
        assert_eq!(parse_cpus("1"), Ok(vec![1]));
        assert_eq!(parse_cpus("0,1"), Ok(vec![0, 1]));
        assert_eq!(parse_cpus("0-2,5"), Ok(vec![0, 1, 2, 5]));
        assert!(parse_cpus("x").is_err());
        assert!(parse_cpus("3-1").is_err());
        assert!(parse_cpus("").is_err());
    }

    #[test]
    fn replies_first_error_wins_else_merged() {
        let sum = |a: &mut u32, b: u32| *a += b;
        assert_eq!(
            merge_replies::<u32, String>("t", vec![Ok(1), Ok(2)], sum),
            Some(Ok(3))
        );
        assert_eq!(
            merge_replies(
                "t",
                vec![Ok(1), Err("b".to_owned()), Err("c".to_owned())],
                sum
            ),
            Some(Err("b".to_owned()))
        );
        assert_eq!(merge_replies::<u32, String>("t", vec![], sum), None);
    }
}
