//! The dataplane thread: one thread owns the [`Agent`] (and so the engine) and does all packet
//! I/O with poll(2).
//!
//! ```text
//!  poll(wake eventfd, netlink, port sockets…; timeout = engine's next deadline, ≤ 1 s,
//!       0 while the engine has frames to send)
//!   ├─ wake:     drain the command channel, one command at a time, between batches
//!   ├─ netlink:  link events → attach/detach ports (reopen sockets) → VM running/paused
//!   ├─ port p:   ≤ 256 frames from its ring (AF_XDP or AF_PACKET) into the batch →
//!   │            process_batch(now) → queue each Tx on its port → flush every port once;
//!   │            while batches come back full, up to HOT_BATCHES in a row without poll(2)
//!   │            (a VM port whose interface just went away: catch up with the link state,
//!   │            re-steer the frame; see "Link loss ahead of its event" below)
//!   ├─ QEMU port: stream reads → records → batch (same path); POLLOUT drains its queue;
//!   │            EOF closes it; reconnect every 50 ms while it is down
//!   ├─ hypervisor updates (commands from qmpwatch): VM state = f(run state, stream); at
//!   │            Running → stopped: unread frames taken back from the stream and re-steered
//!   └─ always:   handle_timeout(now) when due; drain poll_transmit after every batch,
//!                command and VM state change, at most 256 frames a round (a long
//!                End.SBUF release goes on next round, after the ports are read); send VM
//!                state reports to the reporter
//! ```
//!
//! With `srmigd --workers N` there are N such threads, each with its own [`Agent`], netlink
//! socket and sockets (AF_PACKET in a `PACKET_FANOUT_HASH` group per port, so a flow always
//! reaches the same thread); this loop does not know about the others ([`crate::workers`]).
//!
//! `now` comes from the monotonic clock (nanoseconds since the loop's epoch). Nothing here
//! allocates per packet; a bad frame is the engine's business (a counted drop), and a failed
//! send is counted on its port.
//!
//! # Link loss ahead of its event
//!
//! A VM port's attachment is its VM's state, learned from netlink link events. The kernel
//! takes an interface down (or moves it to another namespace) first and queues the event
//! after; srmigd reads events after the ports of each poll round, and a loaded host may not
//! run it at once. Until srmigd has read the event, End.S still sees the VM running and
//! delivers to the port, and the send fails (`ENETDOWN` once the interface is down, `ENXIO` once it left, `ENOBUFS`
//! while it stops). Such a frame never reached the VM, and dropping it would lose a packet
//! at the very moment the paper's mechanism exists for:
//!
//! ```text
//!  kernel: vm0 stops / leaves ─┐                    ┌─ RTM_NEWLINK (down), RTM_DELLINK
//!  srmigd: End.S → vm0 ────────┴─ send fails        │   (read later: no-ops by then)
//!          vm0 still up and running? (ioctls, no RTNL wait)  ── yes: a counted tx error
//!          no: read the link events already queued (all older), detach vm0, VM paused
//!          reinject_for_vm(frame): mapping → S::End.S (VM paused: next segment) → D::End.SBUF
//! ```
//!
//! Later frames for the port in the same batch (decided while the VM still looked running)
//! find it detached and are re-steered the same way, in order. Detaching ahead of the event
//! is safe: every event the kernel sent before the failure is read first, and the events
//! sent after it describe the interface as it is from then on (down or gone, or up again,
//! which attaches it again).

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::eventfd::{EfdFlags, EventFd};
use srmig_dataplane::{Batch, Instant, PacketBuf, PortId, PortKind, Verdict, VmState};
use tracing::{debug, error, info, warn};

use crate::linkwatch::{LinkEvent, LinkWatch};
use crate::mailbox::Command;
use crate::port::qemu::{QemuPort, QemuPortConfig};
use crate::port::{
    close_in_background, IoConfig, LinkAction, PortIo, PortSocket, Undelivered, MAX_RECV_BATCH,
};
use crate::qmpwatch::{vm_state_for, HypervisorUpdate, RunState, TakeBack};
use srmig_agent::{Agent, PortInfo, StateSource, WallClock};

/// Full batches taken from one port in a row before the loop polls again.
const HOT_BATCHES: usize = 8;

/// Longest poll timeout (housekeeping: retrying failed socket opens).
const MAX_POLL: Duration = Duration::from_secs(1);

/// Frames the loop takes from the engine's `poll_transmit` per round
/// ([`DataplaneLoop::drain_transmit`]). An End.SBUF release is as long as the pause was
/// (thousands of frames at a few thousand packets per second), and the VM answers it as it
/// arrives: taken whole, the answers piled up in the VM port's receive ring until it
/// overflowed (a 1.2 s pause at 20,000 probes/s: 36,824 answers lost as `rx_ring_drops`).
/// Taken a chunk per round, the loop reads every port between two chunks (with a zero poll
/// timeout while frames are pending), so a VM never has more than a chunk to answer at once.
/// Order is kept by the engine, which pulls: what arrives for a VM whose release is under way
/// joins the end of its buffer (or of its commit fence's queue).
const TRANSMIT_CHUNK: usize = MAX_RECV_BATCH;

/// The API side of the dataplane thread: a command channel and the eventfd that wakes it.
#[derive(Debug, Clone)]
pub struct DataplaneHandle {
    tx: mpsc::Sender<Command>,
    wake: Arc<EventFd>,
}

/// The dataplane thread is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the dataplane thread is not running")]
pub struct Unavailable;

impl DataplaneHandle {
    /// A handle and the receiving end for the thread.
    pub fn new() -> io::Result<(DataplaneHandle, mpsc::Receiver<Command>, Arc<EventFd>)> {
        let wake = Arc::new(EventFd::from_flags(
            EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC,
        )?);
        let (tx, rx) = mpsc::channel();
        Ok((
            DataplaneHandle {
                tx,
                wake: Arc::clone(&wake),
            },
            rx,
            wake,
        ))
    }

    /// Sends a command and wakes the thread.
    pub fn send(&self, cmd: Command) -> Result<(), Unavailable> {
        self.tx.send(cmd).map_err(|_| Unavailable)?;
        // The counter only saturates after 2^64-2 unread wakes; a failure is harmless.
        let _ = self.wake.write(1);
        Ok(())
    }

    /// Sends a command built around a reply channel and awaits the reply.
    pub async fn call<T>(
        &self,
        make: impl FnOnce(tokio::sync::oneshot::Sender<T>) -> Command,
    ) -> Result<T, Unavailable> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(make(tx))?;
        rx.await.map_err(|_| Unavailable)
    }
}

/// How long a [`Command::QemuQuiesce`] waits for QEMU to read everything written to it (a
/// running guest reads within microseconds; one whose receive ring is full does not).
pub const QUIESCE_WAIT: Duration = Duration::from_millis(30);
/// The longest writes to a QEMU port stay held for a base (the QMP query included), whatever
/// the QMP watch does.
pub const HOLD_MAX: Duration = Duration::from_millis(100);

/// The hypervisor side of a QEMU port.
#[derive(Debug, Clone, Copy)]
struct QemuVm {
    /// A QMP watch runs for it (otherwise the stream alone decides).
    qmp: bool,
    /// The last run state the watch reported.
    run: Option<RunState>,
}

/// Everything the thread owns.
#[derive(Debug)]
pub struct DataplaneLoop {
    agent: Agent,
    ports: Vec<PortIo>,
    /// Per port: the hypervisor state of a QEMU port (`None` for AF_PACKET ports).
    qemu: Vec<Option<QemuVm>>,
    link: LinkWatch,
    wake: Arc<EventFd>,
    commands: mpsc::Receiver<Command>,
    reports: Option<crate::report::Reporter>,
    epoch: std::time::Instant,
    link_events: Vec<LinkEvent>,
    infos: Vec<PortInfo>,
    out: PacketBuf,
    /// A frame a port did not send, while [`Self::undelivered`] decides its fate.
    failed: PacketBuf,
    /// The re-steered version of `failed`.
    resteered: PacketBuf,
    /// Scratch for flushes off the fast path.
    scratch: PacketBuf,
    /// Poll rounds, counted: a failed send checks its port's link at most once per round.
    round: u64,
    /// Frames `drain_transmit` may still take this round ([`TRANSMIT_CHUNK`] at its start).
    transmit_budget: usize,
    /// The last `drain_transmit` spent the budget before the engine ran out of frames: the
    /// next round polls with a zero timeout and takes the next chunk.
    transmit_left: bool,
    /// Per port: the round of its last link check after a failed send.
    checked_in: Vec<Option<u64>>,
    /// Per VM port: when its VM resumed, until the flush of that round (release latency).
    resumed_at: Vec<Option<Instant>>,
    /// Per QEMU port: a [`Command::QemuQuiesce`] waiting for QEMU to read everything, and
    /// until when.
    quiesce: Vec<Option<(crate::mailbox::Reply<Option<u64>>, std::time::Instant)>>,
    /// Per QEMU port: writes are held until [`Command::QemuBase`], or this instant at most.
    hold_until: Vec<Option<std::time::Instant>>,
    /// Per VM port: a frame for it left the engine since `resumed_at`.
    sent_since_resume: Vec<bool>,
    /// Per port: a frame was handed to it since the last [`Self::flush_ports`] (VM ports: the
    /// agent notes the time for the VM's pause report).
    delivered: Vec<bool>,
    /// The other workers of this srmigd (`--workers N`): a commit-fence marker this worker
    /// received is relayed to them ([`Self::set_peers`]).
    peers: Vec<DataplaneHandle>,
    /// A link event changed the ports: the fast tables are written at the end of the round.
    fast_refresh_due: bool,
}

impl DataplaneLoop {
    /// Prepares the loop: opens the netlink socket, takes the startup link snapshot and
    /// attaches every port whose interface is up (VM ports: their VMs become `running`;
    /// VMs configured `running` on a port that is down become `paused`). Ports listed in
    /// `qemu` are QEMU stream ports instead (connected here if QEMU listens already).
    /// `fanout` (one of several workers, see [`crate::workers`]): every port's socket is an
    /// AF_PACKET socket in the port's `PACKET_FANOUT` group, salted with this value.
    pub fn new(
        mut agent: Agent,
        commands: mpsc::Receiver<Command>,
        wake: Arc<EventFd>,
        reports: Option<crate::report::Reporter>,
        qemu: &[QemuPortConfig],
        io_config: &IoConfig,
        fanout: Option<u16>,
    ) -> io::Result<DataplaneLoop> {
        let mut link = LinkWatch::open()?;
        let mut hv = Vec::new();
        let vm_fast = agent.base().ports.iter().any(|q| {
            q.kind == PortKind::Vm
                && fanout.is_none()
                && !qemu.iter().any(|x| x.port == q.name)
                && io_config.fast_path_of(&q.name, q.kind)
        });
        let ports: Vec<PortIo> = agent
            .base()
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let id = PortId(i as u16);
                match qemu.iter().find(|q| q.port == p.name) {
                    Some(q) => {
                        hv.push(Some(QemuVm {
                            qmp: q.qmp.is_some(),
                            run: None,
                        }));
                        PortIo::new_qemu(id, p.name.clone(), p.kind, QemuPort::new(&q.socket))
                    }
                    None => {
                        hv.push(None);
                        let mut port = PortIo::new(id, p.name.clone(), p.kind);
                        port.mode = io_config.mode_of(&p.name);
                        port.fanout = fanout;
                        port.fast_path = io_config.fast_path_of(&p.name, p.kind);
                        // A VM port's TC program hands the uplinks frames whose checksum
                        // may still be partial: a veth uplink must complete them.
                        port.tx_csum_off = p.kind == PortKind::Uplink && vm_fast;
                        port.xdp_ring_size = match p.kind {
                            PortKind::Uplink => io_config.xdp_ring_size(),
                            PortKind::Vm => io_config.vm_xdp_ring_size(),
                        };
                        port.vm_tc_hook = io_config.vm_tc_hook;
                        port
                    }
                }
            })
            .collect();
        let mut ports = ports;
        for p in &mut ports {
            p.preload_fast_path();
        }
        let snapshot = link.dump_now(Duration::from_secs(5))?;
        // A srmigd killed before it could delete its clsact filters left them on its VM
        // ports' interfaces, forwarding by its last tables (tcx links leave with the process).
        for p in ports
            .iter()
            .filter(|p| p.kind == PortKind::Vm && p.qemu.is_none())
        {
            let Some(ev) = snapshot
                .iter()
                .find(|e| !e.removed && e.name.as_deref() == Some(p.ifname.as_str()))
            else {
                continue;
            };
            match crate::port::clsact::remove_stale(ev.ifindex) {
                Ok(0) => {}
                Ok(n) => {
                    info!(port = %p.ifname, filters = n, "removed a previous srmigd's clsact filter from the VM port")
                }
                Err(e) => {
                    warn!(port = %p.ifname, error = %e, "cannot look for a previous srmigd's clsact filter on the VM port")
                }
            }
        }
        let n_ports = ports.len();
        let (epoch, unix_us_at_zero) = clock_pair();
        agent.set_clock(WallClock { unix_us_at_zero });
        let mut lp = DataplaneLoop {
            agent,
            ports,
            qemu: hv,
            link,
            wake,
            commands,
            reports,
            epoch,
            link_events: Vec::with_capacity(64),
            infos: Vec::new(),
            out: PacketBuf::new(),
            failed: PacketBuf::new(),
            resteered: PacketBuf::new(),
            scratch: PacketBuf::new(),
            round: 0,
            transmit_budget: TRANSMIT_CHUNK,
            transmit_left: false,
            checked_in: vec![None; n_ports],
            resumed_at: vec![None; n_ports],
            quiesce: (0..n_ports).map(|_| None).collect(),
            hold_until: vec![None; n_ports],
            sent_since_resume: vec![false; n_ports],
            delivered: vec![false; n_ports],
            peers: Vec::new(),
            fast_refresh_due: false,
        };
        let now = lp.now();
        lp.link_events = snapshot;
        lp.apply_link_events(now);
        for i in 0..lp.ports.len() {
            let p = &lp.ports[i];
            if p.qemu.is_some() {
                lp.reconnect(i, now);
                lp.update_qemu_vm(i, now, "startup", None, None);
                continue;
            }
            if !p.attached() {
                warn!(port = %p.ifname, present = p.ifindex.is_some(), "port not attached at startup (interface missing, down or without carrier)");
                if p.kind == PortKind::Vm {
                    lp.agent.port_attachment(now, p.id, false);
                }
            }
        }
        lp.refresh_fast_paths();
        lp.flush(now);
        Ok(lp)
    }

    /// Writes the engine's fast table of every port with a fast path
    /// ([`crate::port::fastpath`]): an uplink's XDP program, a VM port's TC program; after any
    /// change of the engine or of the ports. An uplink's program redirects only to uplinks
    /// that have the XDP fast path too (a `DEVMAP` needs XDP on the egress); a VM port's
    /// program to any attached uplink (`bpf_redirect` transmits through the kernel's stack).
    /// A table that did not change is not written again. A VM port's new table waits to be
    /// turned on ([`crate::port::FastWait`]).
    fn refresh_fast_paths(&mut self) {
        let fast: Vec<(PortId, u32)> = self
            .ports
            .iter()
            .filter(|p| p.fast_path().is_some_and(|f| !f.is_vm()))
            .filter_map(|p| Some((p.id, p.socket.as_ref()?.ifindex())))
            .collect();
        let uplinks: Vec<(PortId, u32)> = self
            .ports
            .iter()
            .filter(|p| p.kind == PortKind::Uplink)
            .filter_map(|p| Some((p.id, p.socket.as_ref()?.ifindex())))
            .collect();
        let now = std::time::Instant::now();
        for port in &mut self.ports {
            let (id, name) = (port.id, port.ifname.clone());
            let Some(f) = port.fast_path_mut() else {
                continue;
            };
            let to = if f.is_vm() { &uplinks } else { &fast };
            let egress_ok = |id: PortId| to.iter().any(|(p, _)| *p == id);
            let ifindex_of = |id: PortId| to.iter().find(|(p, _)| *p == id).map(|(_, i)| *i);
            let dp = self.agent.dataplane();
            let table = dp.fast_table(id, &egress_ok);
            if table.is_none() {
                debug!(port = %name, "no fast table for this port: every frame goes through srmigd");
            }
            if let Some(t) = &table {
                debug!(port = %name, routes = ?t.routes, encaps = ?t.encaps.iter().map(|e| (e.policy, e.rewrite.len())).collect::<Vec<_>>(), "fast table");
            }
            let mut credit = |slot, p, b| dp.credit_fast_path(slot, p, b);
            if let Err(e) = f.write(table, &ifindex_of, &mut credit) {
                // The program stays off (every frame to srmigd) until a write succeeds.
                warn!(port = %name, error = %e, "writing the fast path failed; it is off");
            }
            if f.enable_pending() {
                if port.fast_wait.is_none() {
                    port.fast_wait = Some(crate::port::FastWait {
                        since: now,
                        quiet_at: None,
                        handled: None,
                        checks: 0,
                    });
                }
            } else {
                port.fast_wait = None;
            }
        }
    }

    /// Writes the fast tables if a link event asked for it, then turns on the VM port tables
    /// that wait for srmigd to catch up, where it has.
    fn service_fast_waits(&mut self) {
        if std::mem::take(&mut self.fast_refresh_due) {
            self.refresh_fast_paths();
        }
        let now = std::time::Instant::now();
        if self.ports.iter().all(|p| p.fast_wait.is_none()) {
            return;
        }
        let tx_idle = !self.ports.iter().any(PortIo::tx_pending);
        for p in &mut self.ports {
            if p.fast_wait.is_some() {
                p.try_enable_fast(now, tx_idle);
            }
        }
    }

    /// Adds what the fast paths forwarded since the last call to the engine's counters.
    fn collect_fast_paths(&mut self) {
        for port in &mut self.ports {
            if let Some(f) = port.fast_path_mut() {
                let dp = self.agent.dataplane();
                f.collect(&mut |slot, p, b| dp.credit_fast_path(slot, p, b));
            }
        }
    }

    fn now(&self) -> Instant {
        Instant::from_nanos(u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    fn apply_link_events(&mut self, now: Instant) {
        self.apply_link_events_failing(now, None);
    }

    /// Applies the link events read. `failed`: port `i` refused the frame in `self.failed`
    /// (why) and events are read to find out whether its link went away; if an event detaches
    /// that port, the frame is re-steered first (it is older than the frames queued after it,
    /// which are re-steered next). Returns whether it was.
    fn apply_link_events_failing(
        &mut self,
        now: Instant,
        mut failed: Option<(usize, &Undelivered)>,
    ) -> bool {
        let mut resteered_failed = false;
        let events = std::mem::take(&mut self.link_events);
        for ev in &events {
            for i in 0..self.ports.len() {
                let action = self.ports[i].on_link_event(ev);
                let p = &mut self.ports[i];
                match action {
                    None => {
                        // Any change of an attached interface may be its MTU (`ip link set
                        // mtu`): read it again.
                        if p.socket.as_ref().is_none_or(|s| s.ifindex() != ev.ifindex) {
                            continue;
                        }
                        let mtu = match ev.mtu {
                            Some(m) => Some(m),
                            None => crate::port::packet::interface_mtu_by_index(ev.ifindex).ok(),
                        };
                        if mtu.is_some() && mtu != p.mtu {
                            info!(port = %p.ifname, old = ?p.mtu, new = ?mtu, "interface MTU changed");
                            p.mtu = mtu;
                            let id = p.id;
                            self.sync_mtu(id, mtu);
                        }
                    }
                    Some(LinkAction::Attach(ifindex)) => {
                        match timed(|| p.attach_with_mtu(ifindex, ev.mtu)) {
                            (Ok(socket), took) => {
                                info!(port = %p.ifname, ifindex, socket, mtu = ?p.mtu, attach_us = took.as_micros() as u64, "port attached");
                                let (id, mtu, vm) = (p.id, p.mtu, p.kind == PortKind::Vm);
                                self.sync_mtu(id, mtu);
                                if vm {
                                    self.agent.port_attachment(now, id, true);
                                    self.resumed_at[i] = Some(now);
                                }
                            }
                            (Err(e), _) => {
                                error!(port = %p.ifname, ifindex, mode = p.mode.as_str(), error = %e, "cannot open a socket on the interface");
                            }
                        }
                    }
                    Some(LinkAction::Prepare(ifindex)) => match p.prepare(ifindex) {
                        Ok(socket) => {
                            info!(port = %p.ifname, ifindex, socket, "interface present but down: socket opened ahead of the link coming up");
                        }
                        // A VM leaving: its interface went down here, then moved to the
                        // destination's namespace before the socket could be bound.
                        Err(e) if crate::port::packet::interface_mtu_by_index(ifindex).is_err() => {
                            debug!(port = %p.ifname, ifindex, error = %e, "the interface left before a socket could be opened ahead");
                        }
                        Err(e) => {
                            warn!(port = %p.ifname, ifindex, error = %e, "cannot open a socket ahead on the interface (it will be opened when the link comes up)");
                        }
                    },
                    Some(LinkAction::Detach) => {
                        info!(port = %p.ifname, "port detached");
                        let first = failed.take_if(|(f, _)| *f == i).map(|(_, u)| u);
                        resteered_failed |= first.is_some();
                        self.detach_port(now, i, first);
                    }
                }
            }
        }
        if !events.is_empty() {
            // At the end of this round ([`Self::service_fast_waits`]): after the flush that
            // sends what End.SBUF released for a VM that just came up (the new port's program
            // passes everything meanwhile).
            self.fast_refresh_due = true;
        }
        self.link_events = events;
        self.link_events.clear();
        resteered_failed
    }

    /// Detaches port `i` (its VM, if any, is no longer running here). On a VM port the frames
    /// still queued for it never reached the VM: they are re-steered where the VM's packets go
    /// now, in order, after the refused frame in `self.failed` if `failed` says one is
    /// (`Undelivered`: why it was refused). Elsewhere they are counted as `tx_no_link`.
    fn detach_port(&mut self, now: Instant, i: usize, failed: Option<&Undelivered>) {
        let p = &mut self.ports[i];
        // The BPF program first: a VM port's TC program must not outlive the attachment (the
        // interface may be moving to another host's namespace with the VM, where that
        // host's srmigd attaches its own).
        p.drop_fast_path();
        let Some(mut sock) = p.socket.take() else {
            if let Some(u) = failed {
                self.resteer_failed(now, i, u);
            }
            return;
        };
        let (id, vm) = (p.id, p.kind == PortKind::Vm && p.qemu.is_none());
        if p.kind == PortKind::Vm {
            self.agent.port_attachment(now, id, false);
        }
        if let Some(u) = failed {
            self.resteer_failed(now, i, u);
        }
        if let PortSocket::Packet(ps) = &mut sock {
            if vm {
                for f in ps.queued_frames() {
                    resteer(
                        &mut self.agent,
                        &mut self.ports,
                        now,
                        i,
                        f,
                        &mut self.resteered,
                        &mut self.scratch,
                        &Undelivered::NoLink,
                    );
                }
                ps.discard_queued();
            } else {
                self.ports[i].stats.tx_no_link += ps.discard_queued() as u64;
            }
        }
        close_in_background(sock);
    }

    /// Sends everything the engine generated or released, and the pending VM state, fence and
    /// release reports.
    fn flush(&mut self, now: Instant) {
        self.drain_transmit(now);
        while let Some(r) = self.agent.poll_report() {
            if let Some(tx) = &self.reports {
                tx.send(crate::report::Report::VmState(r));
            }
        }
        while let Some(r) = self.agent.poll_fence_report() {
            for peer in &self.peers {
                // A peer that is gone is stopping with the process: nothing to fence there.
                let _ = peer.send(Command::FenceRelay(Box::new(r.clone())));
            }
            if let Some(tx) = &self.reports {
                tx.send(crate::report::Report::Fence(r));
            }
        }
        while let Some(r) = self.agent.poll_release_report() {
            if let Some(tx) = &self.reports {
                tx.send(crate::report::Report::Release(r));
            }
        }
    }

    /// The other workers of this srmigd (`--workers N`, see [`crate::workers`]). The kernel
    /// hands a commit-fence marker to one worker only (the flow hash of the marker), but every
    /// worker fences the direct packets of its own flows: the worker that receives a marker
    /// passes it on to these ([`Command::FenceRelay`]), so no worker's pair waits for the
    /// fence's timeout.
    pub fn set_peers(&mut self, peers: Vec<DataplaneHandle>) {
        self.peers = peers;
    }

    /// Runs until a [`Command::Shutdown`] arrives or the command channel closes.
    pub fn run(mut self) -> io::Result<()> {
        let mut batch = Batch::new(MAX_RECV_BATCH);
        let mut pfds: Vec<libc::pollfd> = Vec::with_capacity(self.ports.len() + 2);
        // Which port each pollfd after the first two belongs to.
        let mut pfd_ports: Vec<usize> = Vec::with_capacity(self.ports.len());
        info!(ports = self.ports.len(), "dataplane loop running");
        // The worker is pinned by now (or not at all): the VM ports with a TC program steer
        // their receive to this CPU (crate::port::steer).
        let pinned = crate::workers::allowed_cpus();
        let cpu = match pinned.as_slice() {
            [only] => Some(*only),
            _ => None,
        };
        for p in &mut self.ports {
            p.steer_cpu = cpu;
            p.steer_receive();
        }
        loop {
            self.round = self.round.wrapping_add(1);
            self.transmit_budget = TRANSMIT_CHUNK;
            let now = self.now();
            let mut timeout = match self.agent.dataplane().poll_timeout() {
                Some(t) => t.saturating_duration_since(now).min(MAX_POLL),
                None => MAX_POLL,
            };
            if self.transmit_left {
                // The rest of a release (TRANSMIT_CHUNK): look at the ports, then go on.
                timeout = Duration::ZERO;
            }
            let wall = std::time::Instant::now();
            for p in &self.ports {
                if let Some(q) = &p.qemu {
                    if q.rx_pending() {
                        timeout = Duration::ZERO;
                    } else if let Some(t) = q.next_connect() {
                        timeout = timeout.min(t.saturating_duration_since(wall));
                    }
                    if let Some(t) = q.next_sample(wall) {
                        timeout = timeout.min(t.saturating_duration_since(wall));
                    }
                }
            }
            if self.quiesce.iter().any(Option::is_some) {
                timeout = timeout.min(crate::port::qemu::SAMPLE_EVERY);
            }
            for t in self.hold_until.iter().flatten() {
                timeout = timeout.min(t.saturating_duration_since(wall));
            }
            pfds.clear();
            pfd_ports.clear();
            let ev = libc::POLLIN;
            pfds.push(pollfd(self.wake.as_fd().as_raw_fd(), ev));
            pfds.push(pollfd(self.link.as_fd().as_raw_fd(), ev));
            if self.ports.iter().any(|p| p.fast_wait.is_some()) {
                timeout = timeout.min(Duration::from_micros(200));
            }
            for (i, p) in self.ports.iter().enumerate() {
                if let Some(s) = &p.socket {
                    pfds.push(pollfd(s.poll_fd(), ev));
                    pfd_ports.push(i);
                    if let Some(fd) = s.side_poll_fd() {
                        pfds.push(pollfd(fd, ev));
                        pfd_ports.push(i);
                    }
                } else if let Some(fd) = p.qemu.as_ref().and_then(|q| q.fd()) {
                    let out = p.qemu.as_ref().is_some_and(|q| q.wants_write());
                    pfds.push(pollfd(fd, if out { ev | libc::POLLOUT } else { ev }));
                    pfd_ports.push(i);
                }
            }
            if let Err(e) = crate::sys::poll_for(&mut pfds, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
                continue;
            }
            let now = self.now();
            // Which frames the QEMUs have read by now (for the take-back at a stop).
            for p in &mut self.ports {
                if let Some(q) = p.qemu.as_mut() {
                    q.sample();
                }
            }
            self.service_holds();
            // Ports first: packets that were waiting see the state from before any command
            // or link change processed in this round.
            for (k, &i) in pfd_ports.iter().enumerate() {
                let re = pfds[k + 2].revents;
                if self.ports[i].qemu.is_some() {
                    self.qemu_io(i, re, now, &mut batch);
                    continue;
                }
                if re == 0 {
                    continue;
                }
                if re & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                    let p = &mut self.ports[i];
                    if let Some(s) = &p.socket {
                        match s.take_error() {
                            Ok(Some(e)) => debug!(port = %p.ifname, error = %e, "socket error"),
                            Ok(None) => {}
                            Err(e) => debug!(port = %p.ifname, error = %e, "SO_ERROR failed"),
                        }
                    }
                    if re & libc::POLLNVAL != 0 {
                        p.detach();
                    }
                }
                if re & libc::POLLIN != 0 {
                    self.receive(i, now, &mut batch);
                }
            }
            if pfds[1].revents != 0 {
                match self.link.read_events(&mut self.link_events) {
                    Ok(o) => {
                        if o.overrun {
                            warn!("netlink overrun: link events lost, resynchronizing");
                        }
                    }
                    Err(e) => error!(error = %e, "reading link events failed"),
                }
                self.apply_link_events(now);
                self.flush(now);
            }
            if pfds[0].revents != 0 {
                // Commands take effect now, after this round's frames (a VM's pause is in
                // force from here: `state_since_us`).
                let now = self.now();
                // Reset the eventfd counter, then drain the channel.
                let _ = self.wake.read();
                loop {
                    match self.commands.try_recv() {
                        Ok(Command::Hypervisor(u)) => {
                            self.on_hypervisor(now, u, None);
                        }
                        Ok(Command::QemuQuiesce(port, reply)) => {
                            self.on_quiesce(&port, reply);
                        }
                        Ok(Command::QemuBase(port, base)) => {
                            self.on_base(&port, base);
                        }
                        Ok(Command::QemuSwitchover(u, used_idx, reply)) => {
                            let r = self.on_hypervisor(now, u, used_idx);
                            let _ = reply.send(r);
                        }
                        Ok(Command::FenceRelay(r)) => {
                            self.on_fence_relay(&r, &mut batch);
                        }
                        Ok(cmd) => {
                            if cmd.changes_config() {
                                for p in &mut self.ports {
                                    p.park_vm_fast();
                                }
                            }
                            for p in &mut self.ports {
                                p.refresh_kernel_stats();
                            }
                            self.collect_fast_paths();
                            self.infos.clear();
                            self.infos.extend(self.ports.iter().map(PortIo::info));
                            let go_on = serve(&mut self.agent, now, cmd, &self.infos);
                            self.refresh_fast_paths();
                            // A new configuration may have replaced the engine's ports.
                            for i in 0..self.ports.len() {
                                let (id, mtu) = (self.ports[i].id, self.ports[i].mtu);
                                if self.ports[i].socket.is_some() {
                                    self.sync_mtu(id, mtu);
                                }
                            }
                            self.flush(now);
                            if !go_on {
                                // What the engine still has to send leaves before the loop.
                                loop {
                                    self.transmit_budget = TRANSMIT_CHUNK;
                                    if self.drain_transmit(now) == 0 {
                                        break;
                                    }
                                }
                                info!("dataplane loop stopping");
                                self.log_worker_totals();
                                return Ok(());
                            }
                        }
                        Err(mpsc::TryRecvError::Empty) => break,
                        Err(mpsc::TryRecvError::Disconnected) => {
                            info!("command channel closed: dataplane loop stopping");
                            self.log_worker_totals();
                            return Ok(());
                        }
                    }
                }
            }
            let now = self.now();
            for i in 0..self.ports.len() {
                if self.ports[i]
                    .qemu
                    .as_ref()
                    .is_some_and(|q| q.next_connect().is_some())
                {
                    self.reconnect(i, now);
                }
            }
            if self
                .agent
                .dataplane()
                .poll_timeout()
                .is_some_and(|t| t <= now)
            {
                self.agent.dataplane().handle_timeout(now);
                self.flush(now);
            }
            if self.transmit_left && self.transmit_budget > 0 {
                // A round without a flush: the next chunk.
                self.flush(now);
            }
            self.service_fast_waits();
        }
    }

    /// One of several workers: logs what this one received and sent (the status only shows
    /// the workers' sums).
    fn log_worker_totals(&self) {
        if self.ports.iter().all(|p| p.fanout.is_none()) {
            return;
        }
        let rx_frames: u64 = self.ports.iter().map(|p| p.stats.rx_frames).sum();
        info!(
            worker = std::thread::current().name().unwrap_or("?"),
            rx_frames, "dataplane worker totals"
        );
    }

    /// I/O on QEMU port `i` after poll (`re`: its revents, 0 if only records are pending).
    fn qemu_io(&mut self, i: usize, re: libc::c_short, now: Instant, batch: &mut Batch) {
        let p = &mut self.ports[i];
        let Some(q) = p.qemu.as_mut() else {
            return;
        };
        if re & libc::POLLOUT != 0 {
            q.flush(&mut p.stats);
        }
        let readable = re & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0;
        if !readable && !q.rx_pending() {
            return;
        }
        let r = q.recv_batch(p.id, batch, &mut p.stats);
        if !batch.is_empty() {
            self.process(now, batch);
        }
        if r.closed || re & libc::POLLNVAL != 0 {
            self.qemu_disconnect(i, now);
        }
    }

    /// Closes QEMU port `i`'s stream (EOF, error or out of step) and updates its VMs.
    fn qemu_disconnect(&mut self, i: usize, now: Instant) {
        let p = &mut self.ports[i];
        if let Some(q) = p.qemu.as_mut() {
            if q.connected() {
                info!(port = %p.ifname, socket = %q.path().display(), "QEMU stream closed");
            }
            q.disconnect(&mut p.stats);
        }
        self.update_qemu_vm(i, now, "stream closed", None, None);
    }

    /// Connects QEMU port `i` if it is down and its retry time has come.
    fn reconnect(&mut self, i: usize, now: Instant) {
        let p = &mut self.ports[i];
        let Some(q) = p.qemu.as_mut() else {
            return;
        };
        match q.try_connect(std::time::Instant::now()) {
            Ok(true) => {
                p.stats.attachments += 1;
                info!(port = %p.ifname, socket = %q.path().display(), "QEMU stream connected");
                self.update_qemu_vm(i, now, "stream connected", None, None);
            }
            Ok(false) => {}
            Err(e) => {
                debug!(port = %p.ifname, socket = %q.path().display(), error = %e, "cannot connect to QEMU (retrying)");
            }
        }
    }

    /// The QEMU port named `port`, if it is one.
    fn qemu_port(&self, port: &str) -> Option<usize> {
        let i = self.ports.iter().position(|p| p.ifname == port)?;
        self.ports[i].qemu.is_some().then_some(i)
    }

    /// [`Command::QemuQuiesce`]: hold the port's writes until QEMU has read all of them.
    fn on_quiesce(&mut self, port: &str, reply: crate::mailbox::Reply<Option<u64>>) {
        let Some(i) = self.qemu_port(port) else {
            let _ = reply.send(None);
            return;
        };
        let Some(q) = self.ports[i].qemu.as_mut().filter(|q| q.connected()) else {
            let _ = reply.send(None);
            return;
        };
        q.hold_writes(true);
        let t = std::time::Instant::now();
        self.quiesce[i] = Some((reply, t + QUIESCE_WAIT));
        self.hold_until[i] = Some(t + HOLD_MAX);
    }

    /// [`Command::QemuBase`]: set the base (if any) and release the hold.
    fn on_base(&mut self, port: &str, base: Option<(u64, u16)>) {
        let Some(i) = self.qemu_port(port) else {
            return;
        };
        let p = &mut self.ports[i];
        let Some(q) = p.qemu.as_mut() else {
            return;
        };
        if let Some((pushed, used_idx)) = base {
            if q.holding() && q.set_base(pushed, used_idx) {
                debug!(port = %p.ifname, pushed, used_idx, "base of an exact take-back set");
            } else {
                warn!(port = %p.ifname, "base of an exact take-back refused: frames were written since");
            }
        }
        self.end_hold(i);
    }

    /// Releases port `i`'s hold for a base (if any) and writes what waited.
    fn end_hold(&mut self, i: usize) {
        self.hold_until[i] = None;
        self.quiesce[i] = None;
        let p = &mut self.ports[i];
        if let Some(q) = p.qemu.as_mut() {
            q.hold_writes(false);
            q.flush(&mut p.stats);
        }
    }

    /// Answers the quiesce requests whose QEMU has read everything, and releases holds that
    /// waited too long (a QMP watch that never sent its base).
    fn service_holds(&mut self) {
        let t = std::time::Instant::now();
        for i in 0..self.ports.len() {
            let Some(q) = self.ports[i].qemu.as_mut() else {
                continue;
            };
            if let Some((_, until)) = &self.quiesce[i] {
                let answer = match q.quiet() {
                    Some(n) => Some(Some(n)),
                    None if t >= *until => Some(None),
                    None => None,
                };
                if let Some(answer) = answer {
                    if let Some((reply, _)) = self.quiesce[i].take() {
                        let _ = reply.send(answer);
                    }
                    if answer.is_none() {
                        debug!(port = %self.ports[i].ifname, "QEMU did not read everything in time: no base");
                        self.end_hold(i);
                        continue;
                    }
                }
            }
            if self.hold_until[i].is_some_and(|until| t >= until) {
                self.end_hold(i);
            }
        }
    }

    /// A QMP watch reported a run state; with `used_idx` (a source in `pre-switchover`), the
    /// guest's count decides what is taken back.
    fn on_hypervisor(
        &mut self,
        now: Instant,
        u: HypervisorUpdate,
        used_idx: Option<u16>,
    ) -> TakeBack {
        let Some(i) = self.ports.iter().position(|p| p.ifname == u.port) else {
            warn!(port = %u.port, "hypervisor update for an unknown port");
            return TakeBack::default();
        };
        let Some(Some(hv)) = self.qemu.get_mut(i) else {
            warn!(port = %u.port, "hypervisor update for a port that is not a QEMU port");
            return TakeBack::default();
        };
        hv.run = Some(u.run);
        let lag_us = u.qemu_at_us.map(|at| {
            let wall = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as i64);
            wall - at
        });
        let pass_before_us = u.last_pass_us.zip(u.qemu_at_us).map(|(p, s)| s - p);
        info!(port = %u.port, cause = u.cause, run = ?u.run, lag_us = ?lag_us, ?pass_before_us, "hypervisor run state");
        // For a STOP, an instant QEMU still ran: the migration's last PASS (the STOP's own
        // timestamp, without one, comes after QEMU left the running state). SHUTDOWN and the
        // rest come after the vCPUs stopped anyway; SIOCOUTQ decides for them.
        let stopped_at = if u.run == RunState::Stopped {
            u.last_pass_us.or(u.qemu_at_us)
        } else {
            None
        };
        self.update_qemu_vm(i, now, u.cause, stopped_at, used_idx)
    }

    /// Recomputes the state of the VMs on QEMU port `i`. When they stop running while the
    /// stream is still connected, the frames QEMU has not read are taken back and re-steered
    /// (after the state change, so they follow the VM: End.S forwards them).
    fn update_qemu_vm(
        &mut self,
        i: usize,
        now: Instant,
        cause: &'static str,
        stopped_at_us: Option<i64>,
        used_idx: Option<u16>,
    ) -> TakeBack {
        let Some(Some(hv)) = self.qemu.get(i).copied() else {
            return TakeBack::default();
        };
        let p = &self.ports[i];
        let id = p.id;
        let connected = p.attached();
        let cur = self.agent.port_vm_state(id);
        let target = if hv.qmp {
            vm_state_for(connected, hv.run)
        } else if connected {
            VmState::Running
        } else if cur == Some(VmState::Running) {
            VmState::Paused
        } else {
            return TakeBack::default();
        };
        if cur == Some(target) {
            return TakeBack::default();
        }
        self.agent
            .set_port_vm_state(now, id, target, StateSource::Hypervisor);
        if target == VmState::Running {
            self.resumed_at[i] = Some(now);
        }
        let mut r = TakeBack::default();
        if cur == Some(VmState::Running) && connected {
            r = self.recover(i, now, cause, stopped_at_us, used_idx);
        }
        self.flush(now);
        r
    }

    /// Takes back what QEMU port `i` did not deliver and re-steers it.
    fn recover(
        &mut self,
        i: usize,
        now: Instant,
        cause: &'static str,
        stopped_at_us: Option<i64>,
        used_idx: Option<u16>,
    ) -> TakeBack {
        // A hold for a base ends here: what waits in the queue is taken back below.
        self.quiesce[i] = None;
        self.hold_until[i] = None;
        let p = &mut self.ports[i];
        let Some(q) = p.qemu.as_mut() else {
            return TakeBack::default();
        };
        q.hold_writes(false);
        q.sample();
        if let Some(at) = stopped_at_us {
            let tail: Vec<(i64, Option<i64>)> = q
                .tail_times(6)
                .into_iter()
                .map(|(w, read)| (w - at, read.map(|r| r - at)))
                .collect();
            debug!(port = %p.ifname, ?tail, "last frames (written, first seen read), µs relative to the stop reference");
        }
        let r = q.take_unread(stopped_at_us, used_idx, &mut p.stats);
        let name = p.ifname.clone();
        let id = p.id;
        if r.frames.len() > r.from_queue {
            // Written, then taken back: the VM's last delivery is the newest frame QEMU kept.
            let kept = r.kept_delivered_us.and_then(|t| u64::try_from(t).ok());
            self.agent.amend_last_delivery(id, kept);
        }
        let mut sent = 0usize;
        let mut dropped = 0usize;
        for f in &r.frames {
            let vm = self.agent.vm_for_frame(id, f);
            match vm.and_then(|vm| self.agent.reinject_for_vm(now, vm, f, &mut self.out)) {
                Some(Verdict::Tx(port)) => {
                    if let Some(p) = self.ports.get_mut(port.index()) {
                        p.send(self.out.data(), &mut self.scratch);
                    }
                    sent += 1;
                }
                Some(Verdict::Held(_)) | Some(Verdict::Consumed) => sent += 1,
                Some(Verdict::Drop(reason)) => {
                    dropped += 1;
                    debug!(port = %name, reason = reason.as_str(), "re-steered frame dropped");
                }
                None => dropped += 1,
            }
        }
        if !r.frames.is_empty() || !r.exact || r.beyond_ring || used_idx.is_some() {
            info!(
                port = %name,
                cause,
                frames = r.frames.len(),
                from_socket = r.from_socket,
                after_stop = r.after_stop,
                from_queue = r.from_queue,
                outq = r.outq,
                exact = r.exact,
                beyond_ring = r.beyond_ring,
                counted = ?r.counted,
                count_refused = ?r.count_refused,
                sent,
                dropped,
                "frames QEMU had not read taken back and re-steered"
            );
        }
        TakeBack {
            frames: r.frames.len(),
            counted: r.counted,
            count_refused: r.count_refused,
        }
    }

    /// Processes a received batch, queues its verdicts on their ports and flushes them.
    fn process(&mut self, now: Instant, batch: &mut Batch) {
        self.agent.dataplane().process_batch(now, batch);
        for pkt in batch.packets() {
            if let Verdict::Tx(out) = pkt.verdict {
                let i = out.index();
                if i >= self.ports.len() {
                    continue;
                }
                let mut r = self.ports[i].queue(pkt.data());
                if matches!(r, Err(Undelivered::QueueFull)) {
                    self.flush_port(now, i);
                    r = self.ports[i].queue(pkt.data());
                }
                if let Err(u) = r {
                    if self.failed.set_data(pkt.data()).is_ok() {
                        self.undelivered(now, i, u);
                    } else {
                        self.ports[i].count_undelivered(&u);
                    }
                } else {
                    self.delivered[i] = true;
                }
            }
        }
        self.flush_ports(now);
        // A link loss found by a failed send changed VM states: their reports go out too.
        self.flush(now);
    }

    /// Queues what `poll_transmit` has (generated packets and released buffers) within this
    /// round's budget ([`TRANSMIT_CHUNK`]), then flushes the ports; returns how many frames
    /// it took.
    fn drain_transmit(&mut self, now: Instant) -> usize {
        let (mut taken, mut drained) = (0, false);
        while taken < self.transmit_budget {
            let Some(port) = self.agent.dataplane().poll_transmit(now, &mut self.out) else {
                drained = true;
                break;
            };
            taken += 1;
            let i = port.index();
            if i >= self.ports.len() {
                continue;
            }
            let mut r = self.ports[i].queue(self.out.data());
            if matches!(r, Err(Undelivered::QueueFull)) {
                self.flush_port(now, i);
                r = self.ports[i].queue(self.out.data());
            }
            if let Err(u) = r {
                if self.failed.set_data(self.out.data()).is_ok() {
                    self.undelivered(now, i, u);
                } else {
                    self.ports[i].count_undelivered(&u);
                }
                continue;
            }
            self.delivered[i] = true;
            if self.resumed_at[i].is_some() && !self.sent_since_resume[i] {
                // The first frame to a VM that just resumed (its End.SBUF release comes
                // first in `poll_transmit`) goes to the kernel at once, before the rest of
                // the release is even built.
                self.flush_port(now, i);
                self.sent_since_resume[i] = true;
                self.observe_release_latency(i);
            }
        }
        self.flush_ports(now);
        if drained {
            // Resumes without a frame to send are not release latencies. (With the budget
            // spent first, a resume's first frame leaves next round, and is measured then.)
            self.resumed_at.fill(None);
            self.sent_since_resume.fill(false);
        }
        self.transmit_budget -= taken;
        self.transmit_left = !drained;
        taken
    }

    /// The first frame to port `i`'s VM since it resumed was just handed to the kernel: how
    /// long since the start of the round (the poll that saw the resume), for the histogram
    /// and the controller's release report.
    fn observe_release_latency(&mut self, i: usize) {
        let Some(at) = self.resumed_at[i] else {
            return;
        };
        let now = self.now();
        let us = now.saturating_duration_since(at).as_micros();
        debug!(port = %self.ports[i].ifname, release_us = us, "first frame to a resumed VM handed to the kernel");
        self.agent.observe_release(self.ports[i].id, at, now);
    }

    /// Hands port `i`'s queue to the kernel; each refused frame goes through
    /// [`Self::undelivered`].
    fn flush_port(&mut self, now: Instant, i: usize) {
        while let Some(u) = self.ports[i].flush(&mut self.failed) {
            self.undelivered(now, i, u);
        }
    }

    /// Flushes every port with frames queued. A refused frame may be re-steered onto another
    /// port's queue, hence the passes (each one empties at least the queues it starts with).
    /// The VM ports handed frames are noted with the agent (their VMs' last delivery, for a
    /// pause report), whatever the port's kind of socket (a QEMU port writes at once).
    fn flush_ports(&mut self, now: Instant) {
        self.flush_ports_only(now);
        if self.delivered.iter().any(|d| *d) {
            let t = self.now();
            for i in 0..self.ports.len() {
                if std::mem::take(&mut self.delivered[i]) && self.ports[i].kind == PortKind::Vm {
                    self.agent.note_delivered(self.ports[i].id, t);
                }
            }
        }
    }

    fn flush_ports_only(&mut self, now: Instant) {
        for _ in 0..4 {
            for i in 0..self.ports.len() {
                if self.ports[i].tx_pending() {
                    self.flush_port(now, i);
                }
            }
            if !self.ports.iter().any(PortIo::tx_pending) {
                return;
            }
        }
        // Re-steers that keep re-steering: count what is left rather than loop.
        for p in &mut self.ports {
            while let Some(u) = p.flush(&mut self.scratch) {
                p.count_undelivered(&u);
            }
        }
    }

    /// Tells the engine port `id`'s MTU as read from its interface, unless node.toml sets it
    /// (clamped to what IPv6 and the engine's buffers allow).
    fn sync_mtu(&mut self, id: PortId, mtu: Option<u32>) {
        let configured = self
            .agent
            .base()
            .ports
            .get(id.index())
            .is_some_and(|p| p.mtu.is_some());
        let Some(mtu) = mtu.filter(|_| !configured) else {
            return;
        };
        let mtu = u16::try_from(mtu.clamp(1280, 9216)).unwrap_or(9216);
        if let Err(e) = self.agent.dataplane().set_port_mtu(id, Some(mtu)) {
            warn!(port = id.0, mtu, error = %e, "cannot set the port's MTU in the engine");
        }
    }

    /// Port `i` did not send the frame in `self.failed` (`u` says why). On an AF_PACKET VM
    /// port this can mean the VM's attachment just went away, ahead of the link event (see
    /// the module docs): if the interface is no longer up and running, the port is detached
    /// and the frame is re-steered where the VM's packets go now; a frame for a port that was
    /// already detached is re-steered too. Everything else is counted as a failed send.
    fn undelivered(&mut self, now: Instant, i: usize, u: Undelivered) {
        let p = &self.ports[i];
        if p.kind != PortKind::Vm || p.qemu.is_some() || matches!(u, Undelivered::QueueFull) {
            self.ports[i].count_undelivered(&u);
            return;
        }
        if let Undelivered::Refused(e) = &u {
            let checked = self.checked_in.get(i).copied().flatten() == Some(self.round);
            let Some(s) = p
                .socket
                .as_ref()
                .filter(|_| !checked && u.may_be_link_loss())
            else {
                self.ports[i].count_undelivered(&u);
                return;
            };
            if let Some(r) = self.checked_in.get_mut(i) {
                *r = Some(self.round);
            }
            match s.link_running() {
                Ok(false) => {}
                Ok(true) => {
                    debug!(port = %p.ifname, error = %e, "send failed, interface up and running");
                    self.ports[i].count_undelivered(&u);
                    return;
                }
                Err(check) => {
                    warn!(port = %p.ifname, error = %e, %check, "send failed and the interface state could not be read");
                    self.ports[i].count_undelivered(&u);
                    return;
                }
            }
            let ifindex = s.ifindex();
            // The events the kernel sent before the failure first: they are older.
            match self.link.read_events(&mut self.link_events) {
                Ok(o) if o.overrun => {
                    warn!("netlink overrun: link events lost, resynchronizing");
                }
                Ok(_) => {}
                Err(err) => error!(error = %err, "reading link events failed"),
            }
            if self.apply_link_events_failing(now, Some((i, &u))) {
                // An event detached the port: the frame and those queued after it went.
                info!(port = %self.ports[i].ifname, ifindex, error = %e, "send failed: the interface stopped or left before its link event was read; port detached by the event, frames re-steered");
                return;
            }
            let p = &self.ports[i];
            if p.socket.as_ref().is_some_and(|s| s.ifindex() == ifindex) {
                // The kernel's own event will find the port detached already.
                info!(port = %p.ifname, ifindex, error = %e, "send failed: the interface stopped or left before its link event was read; port detached, frames re-steered");
                // The failed frame first (it is the oldest), then the ones queued after it.
                self.detach_port(now, i, Some(&u));
                return;
            }
            info!(port = %self.ports[i].ifname, ifindex, error = %e, "send failed: the interface stopped or left before its link event was read; frame re-steered");
        }
        self.resteer_failed(now, i, &u);
    }

    /// Re-steers the frame in `self.failed` that port `i` did not send (`u`: why).
    fn resteer_failed(&mut self, now: Instant, i: usize, u: &Undelivered) {
        resteer(
            &mut self.agent,
            &mut self.ports,
            now,
            i,
            self.failed.data(),
            &mut self.resteered,
            &mut self.scratch,
            u,
        );
    }
}

/// Re-steers `frame`, which port `i` did not send (`u`: why), where its VM's packets go now
/// (End.S towards the destination while the VM is paused here); counted as undelivered if it
/// cannot be.
#[allow(clippy::too_many_arguments)]
fn resteer(
    agent: &mut Agent,
    ports: &mut [PortIo],
    now: Instant,
    i: usize,
    frame: &[u8],
    out_buf: &mut PacketBuf,
    scratch: &mut PacketBuf,
    u: &Undelivered,
) {
    let id = ports[i].id;
    let vm = agent.vm_for_frame(id, frame);
    let verdict = vm.and_then(|vm| agent.reinject_for_vm(now, vm, frame, out_buf));
    match verdict {
        Some(Verdict::Tx(out)) => {
            // Back to the same port only if the VM still runs here as far as the engine
            // knows (a state set through the API): one more try, counted if it fails.
            if out != id {
                ports[i].stats.resteered += 1;
            }
            if let Some(p) = ports.get_mut(out.index()) {
                p.send(out_buf.data(), scratch);
            }
        }
        Some(Verdict::Held(_) | Verdict::Consumed) => ports[i].stats.resteered += 1,
        None => ports[i].count_undelivered(u),
        Some(Verdict::Drop(reason)) => {
            debug!(port = %ports[i].ifname, reason = reason.as_str(), "undelivered frame not re-steered");
            ports[i].count_undelivered(u);
        }
    }
}

/// Answers one command from the agent (`ports`: the I/O side of each port, for the status);
/// `false` for [`Command::Shutdown`]. [`Command::Hypervisor`] is the loop's own business (it
/// owns the QEMU streams) and is ignored here. A dropped reply receiver (client gone) is not
/// an error.
pub fn serve(agent: &mut Agent, now: Instant, cmd: Command, ports: &[PortInfo]) -> bool {
    match cmd {
        Command::ApplyConfig(hc, reply) => {
            let _ = reply.send(agent.apply_host_config(*hc));
        }
        Command::ApplyDelta(delta, reply) => {
            let _ = reply.send(agent.apply_host_config_delta(&delta));
        }
        Command::SetVmState(name, state, reply) => {
            let _ = reply.send(agent.set_vm_state(now, &name, state));
        }
        Command::InstallSid(cfg, reply) => {
            let _ = reply.send(agent.install_sid(*cfg));
        }
        Command::RemoveSid(sid, reply) => {
            let _ = reply.send(agent.remove_sid(sid));
        }
        Command::Status(reply) => {
            let _ = reply.send(agent.status(ports));
        }
        Command::Hypervisor(u) => {
            tracing::debug!(port = %u.port, "hypervisor update outside the dataplane loop ignored");
        }
        Command::FenceRelay(r) => {
            tracing::debug!(vm = %r.vm, "fence relay outside the dataplane loop ignored");
        }
        Command::QemuQuiesce(_, reply) => {
            let _ = reply.send(None);
        }
        Command::QemuBase(..) => {}
        Command::QemuSwitchover(_, _, reply) => {
            let _ = reply.send(TakeBack::default());
        }
        Command::Shutdown => return false,
    }
    true
}

impl DataplaneLoop {
    /// Another worker received the commit-fence marker `r` ([`Self::set_peers`]). The old
    /// path's packets of this worker's flows came before the marker, so they are in this
    /// worker's rings by now: they are processed first (up to `HOT_BATCHES` full batches per
    /// port), then this worker's (VM, ingress) pair opens and what it held leaves after them.
    fn on_fence_relay(&mut self, r: &srmig_api::FenceReport, batch: &mut Batch) {
        let now = self.now();
        for i in 0..self.ports.len() {
            if self.ports[i].socket.is_some() {
                self.receive(i, now, batch);
            }
        }
        let now = self.now();
        if self.agent.fence_marker_relayed(now, r) {
            debug!(vm = %r.vm, ingress = %r.ingress, "fence marker relayed by another worker");
        }
        self.flush(now);
    }

    /// One batch from port `i`: receive, process, send, drain generated packets.
    fn receive(&mut self, i: usize, mut now: Instant, batch: &mut Batch) {
        // Under load a port's ring refills while a batch is processed: keep taking full
        // batches from it (no poll(2) in between) up to HOT_BATCHES, then let the other ports,
        // commands and link events have their turn.
        for round in 0..HOT_BATCHES {
            if round > 0 {
                now = self.now();
            }
            let p = &mut self.ports[i];
            let r = p.recv_batch(batch);
            match r {
                Ok(stats) => {
                    p.count_recv(&stats);
                    if stats.gso_bad > 0 && !p.warned_gso {
                        p.warned_gso = true;
                        warn!(port = %p.ifname, "GSO super-frames that cannot be segmented were dropped (counter rx_gso_bad)");
                    }
                }
                Err(e) => {
                    p.stats.rx_errors += 1;
                    debug!(port = %p.ifname, error = %e, "receive failed");
                    return;
                }
            }
            if batch.is_empty() {
                return;
            }
            let full = batch.len() == batch.capacity();
            // The engine may also generate packets (NDP answers, ICMPv6 errors): sent here.
            self.process(now, batch);
            if !full {
                return;
            }
        }
    }
}

fn pollfd(fd: i32, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// `f()` and how long it took.
fn timed<T>(f: impl FnOnce() -> T) -> (T, std::time::Duration) {
    let t = std::time::Instant::now();
    let v = f();
    (v, t.elapsed())
}

/// The loop's monotonic epoch and the wall clock at that instant (microseconds since the Unix
/// epoch), which every timestamp srmigd reports is worked out from. The wall clock is read
/// between two readings of the monotonic clock, three times, and the tightest try is kept
/// (the wall clock taken at the middle of it): a thread preempted between its two clocks
/// would otherwise shift every timestamp by the time it was away.
fn clock_pair() -> (std::time::Instant, u64) {
    let read = || {
        let before = std::time::Instant::now();
        let wall = std::time::SystemTime::now();
        (before, before.elapsed(), wall)
    };
    let mut best = read();
    for _ in 0..2 {
        let t = read();
        if t.1 < best.1 {
            best = t;
        }
    }
    let (epoch, width, wall) = best;
    let unix_us = wall
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    let half_us = u64::try_from((width / 2).as_micros()).unwrap_or(0);
    (epoch, unix_us.saturating_sub(half_us))
}

#[cfg(test)]
mod clock_tests {
    use super::clock_pair;

    /// The pair maps the monotonic clock onto the wall clock: read later, both have moved on
    /// by the same time (within what the machine can be trusted to keep, on a busy host).
    #[test]
    fn the_clock_pair_maps_monotonic_time_to_wall_time() {
        let (epoch, unix_us_at_zero) = clock_pair();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let wall_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_micros();
        let mapped_us = u128::from(unix_us_at_zero) + epoch.elapsed().as_micros();
        let off_us = wall_us.abs_diff(mapped_us);
        assert!(
            off_us < 50_000,
            "the mapped time is {off_us} us off the wall clock"
        );
        assert!(epoch.elapsed() >= std::time::Duration::from_millis(20));
    }
}
