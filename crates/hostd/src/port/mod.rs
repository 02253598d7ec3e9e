//! Dataplane ports on real interfaces: which interface each [`PortId`] uses, its socket while
//! the interface is attached, and the I/O counters the engine cannot see (send errors, cut
//! frames, GSO super-frames, checksums completed in software, ring drops).
//!
//! A port is *attached* while an interface with the port's name exists in srmigd's namespace
//! and is administratively up with carrier (`IFF_UP` and `IFF_LOWER_UP`). Attachment changes
//! come from [`crate::linkwatch`]; every transition to attached opens a fresh socket on the
//! interface's current ifindex (the lab moves and recreates veths, so the ifindex of a name
//! changes), every transition to detached closes it (on another thread: a close can wait tens of
//! milliseconds for the kernel, see [`close_in_background`]).
//!
//! # Which socket: the port's I/O mode
//!
//! node.toml's `[io]` table ([`IoConfig`]) picks, per port, between
//! - **AF_XDP** ([`xdp`]): an XDP program srmigd loads itself steers every frame of the
//!   interface into a shared memory ring before the kernel builds a socket buffer for it; when
//!   srmigd falls behind, the excess is dropped right there, counted, for almost no CPU. The
//!   default (`auto`) for uplinks; a VM port on a veth takes it with `xdp` (below). A veth's
//!   peer is a local kernel stack, which hands frames over with the TCP/UDP checksum still
//!   partial (CHECKSUM_PARTIAL, e.g. a Linux router forwarding what its own host sent, or a
//!   VM's own TCP); AF_XDP passes the bytes without saying so, so on a veth srmigd recognises
//!   such checksums by their value and completes them
//!   ([`srmig_wire::checksum::complete_partial`], counted in `rx_csum_completed`).
//! - **AF_PACKET** ([`packet`]): a memory-mapped receive ring and batched sends. The default
//!   for VM ports: only AF_PACKET carries the `virtio_net_hdr` with each frame, that is the
//!   VM's checksum and segmentation offloads. Also where AF_XDP cannot work: interfaces with
//!   several receive queues, MTUs larger than one AF_XDP frame, another XDP program attached,
//!   kernels without AF_XDP, `srmigd --workers N` (fanout). `auto` falls back to it with a
//!   warning; `xdp` insists (the port stays detached, with an error, if AF_XDP does not work).
//!
//! ## A VM port on AF_XDP (`[io] ports.NAME = "xdp"`): possible, not for migrating VMs
//!
//! A veth VM port (a netns VM, a container) whose MTU fits one AF_XDP frame can be put on
//! AF_XDP; its rings then have `[io] vm_xdp_ring_size` entries (default 1024: 8 MiB of frames,
//! as an AF_PACKET ring), not an uplink's `xdp_ring_size`. The kernel turns TSO/USO off on the
//! VM's side of a veth while an XDP program is attached to the other side, so the VM's own
//! kernel segments in software; checksum offload stays (completed by value, above). It is not
//! the default, and not for a VM that migrates (docs/perf.md, 2026-12-05):
//! - a copy-mode AF_XDP send reports no per-frame failure: a frame sent as the VM's interface
//!   leaves the namespace is lost without a trace, where AF_PACKET's refusal lets the loop
//!   re-steer it (`forwarding_netns` lost datagram 46 of 300 in 3 of 8 runs that way);
//! - a socket cannot be opened ahead on an interface that is down in place (`bind` fails),
//!   and the End.SBUF release sent right after the ~25 ms attach at link up lost frames in
//!   `forwarding_netns` (5 of 6 runs);
//! - in the 10-VM lab a 1024-entry ring (plus the veth's 256-frame XDP queue) lost 0.5-1.4 %
//!   of the client VM's probes while srmigd delivered a burst of released answers, where
//!   AF_PACKET's 4096-slot ring and 1000-frame backlog lost none.
//!
//! What it gains: where the VM's transmit work runs on srmigd's CPU (as `srmig bench forward`
//! steers it), AF_XDP forwarded 3x what AF_PACKET did under a flood from the VM, whose receive
//! path AF_PACKET pays in full even for the frames its full ring refuses; without that
//! steering a veth charges that work to the VM's CPU with either socket.
//!
//! Either way frames are received in batches straight into the engine's [`Batch`] and sent in
//! batches: [`PortIo::queue`] during a batch, [`PortIo::flush`] once after it. No system call
//! per frame on either side.
//!
//! A send on a VM port can fail because its interface went down or left the namespace
//! before srmigd read the link event that says so (see [`Undelivered`]); the dataplane loop
//! then catches up with the kernel's link state and re-steers the frame the VM never got.
//!
//! A VM port may instead be backed by a QEMU `-netdev stream` socket ([`qemu`], configured in
//! node.toml's `[[qemu]]` tables): it is attached while srmigd's stream to QEMU is connected,
//! and link events do not concern it.

pub mod bpf;
pub mod clsact;
pub mod fastpath;
pub mod gso;
pub mod packet;
pub mod qemu;
pub mod qemu_frame;
pub mod qemu_ring;
pub mod steer;
pub mod vnet;
pub mod xdp;

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};

use srmig_agent::PortInfo;
use srmig_api::PortIoStats;
use srmig_dataplane::{Batch, PacketBuf, PortId, PortKind};
use tracing::{debug, info, warn};

use crate::linkwatch::LinkEvent;
pub use packet::{complete_checksum, PacketSocket, RecvStats, MAX_RECV_BATCH};

// node.toml's `[io]` table: defined with the rest of the file's schema in
// `srmig_dataplane::node_file`, which srmig replay shares.
pub use srmig_dataplane::node_file::{IoConfig, IoMode, VmTcHook};

/// Why a port did not send a frame.
#[derive(Debug)]
pub enum Undelivered {
    /// The port has no socket (detached).
    NoLink,
    /// The socket refused the frame.
    Refused(io::Error),
    /// The transmit queue is full: flush the port, then queue again.
    QueueFull,
}

impl Undelivered {
    /// Whether the failure can mean that the interface just went down or left the namespace
    /// (the link event saying so may still be unread): `ENETDOWN` (not up), `ENXIO` and
    /// `ENODEV` (gone), `ENOBUFS` (a device that is stopping or lost its carrier drops what
    /// it is handed; also a full veth ring, hence "can"). `EAGAIN` (socket buffer full) and
    /// the rest cannot.
    pub fn may_be_link_loss(&self) -> bool {
        match self {
            Undelivered::NoLink | Undelivered::QueueFull => false,
            Undelivered::Refused(e) => matches!(
                e.raw_os_error(),
                Some(libc::ENETDOWN | libc::ENXIO | libc::ENODEV | libc::ENOBUFS)
            ),
        }
    }
}

/// What to do with a port's socket after a link event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkAction {
    /// Open (or reopen) the socket on this ifindex: the port becomes attached.
    Attach(u32),
    /// A VM port's interface is present but down: open its socket now, so that attaching it
    /// when the link comes up (the VM resumes) costs nothing (see [`PortIo::prepare`]).
    Prepare(u32),
    /// Close the socket: the port becomes detached.
    Detach,
}

/// The socket of an attached port.
#[derive(Debug)]
pub enum PortSocket {
    /// AF_PACKET with a receive ring.
    Packet(PacketSocket),
    /// AF_XDP.
    Xdp(Box<xdp::XdpSocket>),
}

impl PortSocket {
    /// The interface index the socket is bound to.
    pub fn ifindex(&self) -> u32 {
        match self {
            PortSocket::Packet(s) => s.ifindex(),
            PortSocket::Xdp(s) => s.ifindex(),
        }
    }

    /// The descriptor to poll for received frames.
    pub fn poll_fd(&self) -> RawFd {
        match self {
            PortSocket::Packet(s) => s.as_fd().as_raw_fd(),
            PortSocket::Xdp(s) => s.rx_fd(),
        }
    }

    /// A second descriptor to poll (a VM port's socket pair: [`PacketSocket::open_vm_pair`]).
    pub fn side_poll_fd(&self) -> Option<RawFd> {
        match self {
            PortSocket::Packet(s) => s.side_fd(),
            PortSocket::Xdp(_) => None,
        }
    }

    /// `xdp` or `packet`.
    pub fn kind(&self) -> &'static str {
        match self {
            PortSocket::Packet(_) => "packet",
            PortSocket::Xdp(_) => "xdp",
        }
    }

    /// Whether the interface is still here, up and running (see [`PacketSocket::link_running`]).
    pub fn link_running(&self) -> io::Result<bool> {
        match self {
            PortSocket::Packet(s) => s.link_running(),
            PortSocket::Xdp(s) => s.link_running(),
        }
    }

    /// The pending socket error, if any (AF_PACKET; AF_XDP reports none).
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            PortSocket::Packet(s) => s.take_error(),
            PortSocket::Xdp(_) => Ok(None),
        }
    }
}

/// One dataplane port and its interface.
#[derive(Debug)]
pub struct PortIo {
    /// The engine's port id.
    pub id: PortId,
    /// Interface name (the NodeConfig port name).
    pub ifname: String,
    /// Uplink or VM port.
    pub kind: PortKind,
    /// How the port reaches its interface.
    pub mode: IoMode,
    /// The interface's ifindex, while an interface of that name exists.
    pub ifindex: Option<u32>,
    /// The interface's MTU, read when the socket was opened.
    pub mtu: Option<u32>,
    /// The socket, while attached.
    pub socket: Option<PortSocket>,
    /// A socket opened ahead on the interface while it is down, and the MTU then (VM ports;
    /// taken by [`attach`](Self::attach) when the link comes up).
    pub prepared: Option<(PortSocket, Option<u32>)>,
    /// The QEMU stream, for a QEMU-backed port (then `socket` stays `None`).
    pub qemu: Option<Box<qemu::QemuPort>>,
    /// I/O counters.
    pub stats: PortIoStats,
    /// Whether the "GSO frame dropped" warning was logged already.
    pub warned_gso: bool,
    /// With several workers (`srmigd --workers N`): the salt of the port's `PACKET_FANOUT`
    /// groups ([`crate::workers::fanout_group`]); the port then always uses AF_PACKET.
    /// `None` (one worker): no fanout.
    pub fanout: Option<u16>,
    /// Whether the port has srmigd's fast path ([`fastpath`]; `IoConfig::fast_path_of`): an
    /// uplink listed in `[io] fast_path` gets the XDP program, a VM port listed there (or
    /// every one with `[io] vm_fast_path = true`) the TC program.
    pub fast_path: bool,
    /// A VM port's written fast table waiting to be turned on ([`PortIo::try_enable_fast`]).
    pub fast_wait: Option<FastWait>,
    /// An uplink of a node whose VM ports have the TC fast path: if its interface is a veth,
    /// srmigd turns its transmit checksum offload off while attached (see
    /// [`PortIo::attach_with_mtu`]).
    pub tx_csum_off: bool,
    /// The interface whose transmit checksum offload srmigd turned off, to turn back on.
    restore_tx_csum: Option<u32>,
    /// A VM port's TC program, loaded and parked while the port is detached (loading takes
    /// milliseconds that must not delay the attachment a VM's End.SBUF release waits for).
    vm_fast_spare: Option<fastpath::FastPath>,
    /// Entries of each AF_XDP ring (node.toml's `[io] xdp_ring_size`).
    pub xdp_ring_size: u32,
    /// How a VM port's TC program is attached (node.toml's `[io] vm_tc_hook`).
    pub vm_tc_hook: VmTcHook,
    /// The CPU the port's dataplane worker is pinned to, once it runs
    /// ([`PortIo::steer_receive`]); `None` while unknown or not pinned.
    pub steer_cpu: Option<usize>,
    /// The VM port's receive steering to `steer_cpu` ([`steer`]), written back when its TC
    /// program leaves.
    steered: Option<steer::Steered>,
    /// The fast path of an uplink on AF_PACKET (a jumbo MTU), or a VM port's TC program,
    /// while attached.
    pub fast_alone: Option<Box<fastpath::FastAttachment>>,
    /// A VM port's TC program attached with the socket [`PortIo::prepare`] opened (attaching
    /// waits for an RCU grace period: milliseconds, not at the VM's resume).
    prepared_fast: Option<Box<fastpath::FastAttachment>>,
    /// The program's passed count when it was attached ahead (the link down: nothing in
    /// flight), for the exact catch-up check of [`PortIo::try_enable_fast`].
    prepared_fast_base: Option<CountBase>,
    /// The same, for the attachment in use (`None`: attached while up, no exact count yet).
    fast_base: Option<CountBase>,
}

impl Drop for PortIo {
    fn drop(&mut self) {
        self.restore_tx_checksum();
        self.unsteer();
    }
}

/// A VM port's fast table is written armed: the program passes everything on to srmigd and
/// turns itself on once srmigd has handled every frame it passed. Otherwise a destination the
/// table moves from srmigd to the program could see its newest frames forwarded by the program
/// while older ones still wait in srmigd's ring (reordered).
///
/// srmigd tells the program how many of the frames it passed srmigd has read *and sent*
/// (`FastPath::set_handled`), at the end of a round (after its sends), when its receive ring
/// is empty and nothing waits in any port's transmit queue: the frames that reached the socket
/// (`PACKET_STATISTICS`, read before the ring is looked at), in the program's count. The
/// program compares the two counts at each frame; when they are equal, every frame it passed
/// has been handed to the kernel ahead of the one in hand, and it turns itself on
/// (compare-and-swap from armed to on) and forwards that frame. Deciding in the program leaves
/// no window between srmigd's check and the table going on. srmigd's sends and the program's
/// redirect meet in one FIFO queue because the port's receive is steered to srmigd's CPU
/// ([`steer`]); without the steering, frames of other CPUs may still overtake.
///
/// The offset between the two counts is known exactly where the program and the IPv6 socket
/// were both set up while the link was down (a VM arriving: [`PortIo::prepare`]): both start
/// from nothing. Otherwise (attached while up) it is found at the first quiet moment: the ring
/// found empty at two checks (loop rounds) between which the program passed no frame (a frame
/// takes well under a microsecond from the program to the ring, one softirq call chain; a
/// round is at least a poll(2)). Until then nothing is written and the program stays armed.
///
/// Once the count is written and the program has passed nothing since, srmigd stops waiting:
/// the program's next IPv6 frame turns it on. Under a steady flood srmigd may never catch up:
/// the table is then turned on after [`FAST_WAIT_MAX`] and [`FAST_WAIT_CHECKS`] rounds anyway,
/// and counted (`fast_forced_enables`); frames still in srmigd's ring may then be overtaken.
#[derive(Debug, Clone, Copy)]
pub struct FastWait {
    /// When the table was written.
    pub since: std::time::Instant,
    /// The program's passed count at the last check that found the ring empty.
    pub quiet_at: Option<u64>,
    /// The handled count last written to the program.
    pub handled: Option<u64>,
    /// Loop rounds that checked.
    pub checks: u32,
}

/// The program's passed count and the socket's landed count at one moment when every frame
/// the program had passed had landed and no other frame was on its way ([`FastWait`]). From
/// then on each frame the program passes lands once, so the frames srmigd has handled, in the
/// program's count, are `passed + (landed now - landed)`. The socket may have landed frames
/// the program never counted (it takes frames from the moment it is bound, the program only
/// from its attachment: a VM's router solicitation in between), so `landed` may exceed
/// `passed`: the two are kept apart, not as one unsigned difference (a difference clamped at 0
/// made every count written one too high, and the program turned on with a frame still in
/// srmigd's ring, which its next frames overtook).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountBase {
    /// The program's count of frames passed, at that moment.
    pub passed: u64,
    /// The socket's count of frames landed, at that moment.
    pub landed: u64,
}

impl CountBase {
    /// The program's count of the frames srmigd has handled once `landed` frames (in the
    /// socket's count) have landed and been read and sent.
    pub fn handled(self, landed: u64) -> u64 {
        self.passed
            .saturating_add(landed.saturating_sub(self.landed))
    }
}

/// How long a written VM port table waits for srmigd to catch up before it is turned on
/// anyway ([`FastWait`]). Measured in the netns lab (release, probes every 200 us and a
/// 1.4 Gb/s TCP stream per family, 60 migrations): the client's port caught up 251 times,
/// after 2.3 ms (median), 5.2 ms (p90) and up to 79 ms; with 100 ms one run in three forced
/// an enable, and 245 segments reached the VM out of order. Waiting longer costs nothing but
/// srmigd's CPU: its socket carries the VM's traffic meanwhile.
pub const FAST_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(1);
/// How many rounds of srmigd's must have found it behind, too: a slow round (a debug build
/// segmenting GSO frames) must not use up the wait alone. While a table waits, the program
/// passes the VM's whole traffic to srmigd, which may then be too busy for a quiet round: in
/// the netns lab with 5,000 probes/s per family beside a 1.1 Gb/s TCP stream, 20 ms and 16
/// rounds forced one enable in 20 migrations (742 segments out of order at the VM); 100 ms
/// and 64 rounds none in 80 (probes every 200 and 100 us).
pub const FAST_WAIT_CHECKS: u32 = 64;
impl PortIo {
    /// A detached port.
    pub fn new(id: PortId, ifname: String, kind: PortKind) -> PortIo {
        PortIo {
            id,
            ifname,
            kind,
            mode: IoMode::Auto,
            ifindex: None,
            mtu: None,
            socket: None,
            prepared: None,
            qemu: None,
            stats: PortIoStats::default(),
            warned_gso: false,
            fanout: None,
            fast_path: false,
            fast_wait: None,
            tx_csum_off: false,
            restore_tx_csum: None,
            steer_cpu: None,
            steered: None,
            vm_fast_spare: None,
            xdp_ring_size: xdp::XdpOptions::default().ring_size,
            vm_tc_hook: VmTcHook::Auto,
            fast_alone: None,
            prepared_fast: None,
            prepared_fast_base: None,
            fast_base: None,
        }
    }

    /// A QEMU-backed port (disconnected until the loop connects it).
    pub fn new_qemu(id: PortId, name: String, kind: PortKind, q: qemu::QemuPort) -> PortIo {
        let mut p = PortIo::new(id, name, kind);
        p.qemu = Some(Box::new(q));
        p
    }

    /// Whether the port has a socket (AF_XDP or AF_PACKET) or a connected QEMU stream.
    pub fn attached(&self) -> bool {
        self.socket.is_some() || self.qemu.as_ref().is_some_and(|q| q.connected())
    }

    /// Decides what a link event means for this port (no I/O); updates `ifindex`. QEMU ports
    /// have no interface: always `None`.
    pub fn on_link_event(&mut self, ev: &LinkEvent) -> Option<LinkAction> {
        if self.qemu.is_some() {
            return None;
        }
        let ours_by_index = self.ifindex == Some(ev.ifindex);
        let ours_by_name = ev.name.as_deref() == Some(self.ifname.as_str());
        if ev.removed {
            if !ours_by_index {
                return None;
            }
            self.ifindex = None;
            self.drop_prepared();
            return self.attached().then_some(LinkAction::Detach);
        }
        if ours_by_name {
            self.ifindex = Some(ev.ifindex);
            let same_socket = self
                .socket
                .as_ref()
                .is_some_and(|s| s.ifindex() == ev.ifindex);
            let prepared = self
                .prepared
                .as_ref()
                .is_some_and(|(s, _)| s.ifindex() == ev.ifindex);
            return match (ev.up, same_socket) {
                (true, true) => None,
                (true, false) => Some(LinkAction::Attach(ev.ifindex)),
                (false, _) if self.attached() => Some(LinkAction::Detach),
                (false, _) if self.kind == PortKind::Vm && !prepared => {
                    Some(LinkAction::Prepare(ev.ifindex))
                }
                (false, _) => None,
            };
        }
        if ours_by_index && ev.name.is_some() {
            // Renamed away: the name is no longer ours.
            self.ifindex = None;
            self.drop_prepared();
            return self.attached().then_some(LinkAction::Detach);
        }
        None
    }

    /// Opens the socket of a VM port whose interface is present but down (it moved into
    /// this host at the VM's pause, and comes up when the VM resumes): opening an AF_PACKET
    /// socket with its receive ring takes milliseconds (the ring's allocation and
    /// `MAP_POPULATE`), which would otherwise delay the release of the packets End.SBUF held
    /// for the VM. The socket is bound to the interface but receives nothing until the link
    /// is up; [`attach`](Self::attach) takes it then, unless the interface or its MTU
    /// changed meanwhile.
    pub fn prepare(&mut self, ifindex: u32) -> io::Result<&'static str> {
        self.drop_prepared();
        self.preload_fast_path();
        let (s, mtu) = self.open(ifindex)?;
        let kind = s.kind();
        if s.side_poll_fd().is_some() {
            match fastpath::FastAttachment::attach_vm(
                ifindex,
                self.vm_fast_spare.take(),
                self.vm_tc_hook,
            ) {
                Ok(f) => {
                    // The socket was opened with the link down: it has landed nothing yet.
                    self.prepared_fast_base = Some(CountBase {
                        passed: f.fast().passed(),
                        landed: 0,
                    });
                    self.prepared_fast = Some(Box::new(f));
                    self.steer_receive();
                }
                Err(e) => {
                    debug!(port = %self.ifname, error = %e, "the VM port's TC program could not be attached ahead");
                }
            }
        }
        self.prepared = Some((s, mtu));
        Ok(kind)
    }

    fn drop_prepared(&mut self) {
        if let Some((s, _)) = self.prepared.take() {
            close_in_background(s);
        }
        if let Some(f) = self.prepared_fast.take() {
            self.retire(*f);
        }
        self.prepared_fast_base = None;
    }

    /// Takes a BPF program off its interface. A VM port's is turned off first (inert while
    /// still attached), kept for the next attachment, and its link closed on another thread:
    /// detaching waits for an RCU grace period, and the dataplane thread must not.
    fn retire(&mut self, f: fastpath::FastAttachment) {
        if !f.fast().is_vm() {
            return drop(f);
        }
        if self
            .steered
            .as_ref()
            .is_some_and(|s| s.ifindex() == f.ifindex)
        {
            self.unsteer();
        }
        let (link, mut fast) = f.into_parts();
        if link.is_clsact() {
            // The filter is deleted on the closing thread, maybe after the port's next
            // attachment: the same program in a second filter would run twice per frame
            // (each counting it as passed). The next attachment loads its own.
            let _ = std::thread::Builder::new()
                .name("srmigd-close".to_owned())
                .spawn(move || drop((link, fast)));
            return;
        }
        match fast.park() {
            Ok(()) => self.vm_fast_spare = Some(fast),
            Err(e) => {
                warn!(port = %self.ifname, error = %e, "cannot turn the VM port's TC program off; it is loaded again at the next attachment");
            }
        }
        let _ = std::thread::Builder::new()
            .name("srmigd-close".to_owned())
            .spawn(move || drop(link));
    }

    /// Opens a socket on `ifindex` as the port's mode says, replacing any previous one (or
    /// takes the one [`prepare`](Self::prepare) opened). Returns which kind it is (`xdp` or
    /// `packet`).
    pub fn attach(&mut self, ifindex: u32) -> io::Result<&'static str> {
        self.attach_with_mtu(ifindex, None)
    }

    /// [`attach`](Self::attach), with the interface's MTU when the caller knows it (from the
    /// link event that says it is up: no system call to read it again).
    pub fn attach_with_mtu(&mut self, ifindex: u32, mtu: Option<u32>) -> io::Result<&'static str> {
        self.detach();
        let mtu_now = match mtu {
            Some(m) => Some(m),
            None => packet::interface_mtu_by_index(ifindex).ok(),
        };
        let base = self.prepared_fast_base.take();
        let mut prepared_socket = false;
        let s = match self.prepared.take() {
            Some((s, mtu)) if s.ifindex() == ifindex && mtu == mtu_now => {
                // Bound while the link was down: clear the ENETDOWN that left behind.
                if let PortSocket::Packet(p) = &s {
                    let _ = p.take_error();
                }
                self.stats.prepared_attaches += 1;
                prepared_socket = true;
                (s, mtu)
            }
            other => {
                if let Some((s, _)) = other {
                    close_in_background(s);
                }
                self.open(ifindex)?
            }
        };
        let (s, mtu) = s;
        let kind = s.kind();
        if self.fast_path && self.kind == PortKind::Uplink && matches!(s, PortSocket::Packet(_)) {
            // No AF_XDP socket to carry the program (the MTU): attach it alone.
            match fastpath::FastAttachment::attach(ifindex, &self.ifname) {
                Ok(f) => {
                    tracing::info!(port = %self.ifname, mode = ?f.mode, "XDP fast path attached beside the AF_PACKET socket");
                    self.fast_alone = Some(Box::new(f));
                }
                Err(e) => {
                    warn!(port = %self.ifname, error = %e, "the XDP fast path could not be attached; every frame goes through srmigd");
                }
            }
        }
        if self.kind == PortKind::Vm && s.side_poll_fd().is_some() {
            // The socket pair is there for this program ([`PacketSocket::open_vm_pair`]);
            // without it, both sockets together still take every frame.
            let attached = match self.prepared_fast.take() {
                Some(f) if f.ifindex == ifindex => {
                    // Socket and program both set up while the link was down: every IPv6
                    // frame the program passes from now on reaches this socket, and only those.
                    self.fast_base = base.filter(|_| prepared_socket);
                    Ok(*f)
                }
                other => {
                    if let Some(f) = other {
                        self.retire(*f);
                    }
                    fastpath::FastAttachment::attach_vm(
                        ifindex,
                        self.vm_fast_spare.take(),
                        self.vm_tc_hook,
                    )
                }
            };
            match attached {
                Ok(f) => {
                    tracing::info!(port = %self.ifname, "TC fast path attached to the VM port");
                    self.fast_alone = Some(Box::new(f));
                    self.steer_receive();
                }
                Err(e) if fastpath::vm_program_refused().is_some() => {
                    debug!(port = %self.ifname, error = %e, "no TC program for the VM port");
                }
                Err(e) => {
                    warn!(port = %self.ifname, error = %e, "the VM port's TC fast path could not be attached; every frame goes through srmigd");
                }
            }
        }
        if self.tx_csum_off && xdp::driver_name(ifindex).as_deref() == Some("veth") {
            // The VM ports' TC program redirects a VM's frames here as the VM's stack made
            // them: TCP and UDP checksums left to "hardware" (CHECKSUM_PARTIAL), GSO frames
            // whole. A veth passes both on as they are, and a receiver that drops the skb's
            // metadata (AF_XDP on the peer, native XDP) would get wrong checksums: with the
            // offload off, the kernel completes checksums (and segments) at this transmit,
            // as a NIC would in hardware. Turned back on at detach.
            match xdp::set_tx_checksum(ifindex, false) {
                Ok(Some(true)) => {
                    tracing::info!(port = %self.ifname, "transmit checksum offload turned off on the veth uplink (VM ports' TC fast path)");
                    self.restore_tx_csum = Some(ifindex);
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(port = %self.ifname, error = %e, "cannot turn off the veth uplink's transmit checksum offload: frames the VM ports' TC program sends may reach an AF_XDP receiver with partial checksums");
                }
            }
        }
        self.mtu = mtu;
        self.socket = Some(s);
        self.ifindex = Some(ifindex);
        self.stats.attachments += 1;
        Ok(kind)
    }

    /// Detaches the port's BPF program attached beside its socket (an uplink's XDP fast path
    /// on AF_PACKET, a VM port's TC program) and forgets what waited for it; turns a veth
    /// uplink's transmit checksum offload back on.
    pub fn drop_fast_path(&mut self) {
        if let Some(f) = self.fast_alone.take() {
            self.retire(*f);
        }
        self.fast_wait = None;
        self.fast_base = None;
        self.restore_tx_checksum();
    }

    /// Turns a VM port's TC program off (every frame to srmigd) ahead of a change of the
    /// engine's configuration: the packets the change concerns must all take srmigd's path
    /// from the moment the change is made. Otherwise the commit's fence marker, which
    /// srmigd sends when the commit is applied, could be overtaken on the old path by a
    /// packet the program sent there with the old table. The next table write (or, unchanged,
    /// the catch-up check) turns it on again.
    pub fn park_vm_fast(&mut self) {
        let Some(f) = self.fast_alone.as_mut().map(|f| f.fast_mut()) else {
            return;
        };
        if !f.is_vm() {
            return;
        }
        if let Err(e) = f.park() {
            warn!(port = %self.ifname, error = %e, "cannot turn the VM port's TC program off before a configuration change");
        }
    }

    /// Loads a VM port's TC program ahead of its attachment, if the port has the fast path and
    /// none is loaded (at startup and while its interface is down: off the critical path).
    pub fn preload_fast_path(&mut self) {
        if !self.fast_path
            || self.kind != PortKind::Vm
            || self.qemu.is_some()
            || self.fast_alone.is_some()
            || self.prepared_fast.is_some()
            || self.vm_fast_spare.is_some()
        {
            return;
        }
        match fastpath::FastPath::load_vm_once() {
            Ok(f) => self.vm_fast_spare = Some(f),
            // Said once for the process (fastpath::vm_program_refused).
            Err(e) => debug!(port = %self.ifname, error = %e, "no TC program for the VM port"),
        }
    }

    /// Steers the receive queues of the VM port's interface to the worker's CPU while its TC
    /// program is attached (prepared or attached), so the VM's frames keep their order when
    /// they change hands between the program and srmigd ([`steer`]). Nothing until the
    /// worker's CPU is known; once per interface.
    pub fn steer_receive(&mut self) {
        let Some(cpu) = self.steer_cpu else {
            return;
        };
        let ifindex = match (&self.fast_alone, &self.prepared_fast) {
            (Some(f), _) if f.fast().is_vm() => f.ifindex,
            (_, Some(f)) => f.ifindex,
            _ => return,
        };
        if self
            .steered
            .as_ref()
            .is_some_and(|s| s.ifindex() == ifindex)
        {
            return;
        }
        self.unsteer();
        match steer::steer_to(ifindex, &self.ifname, cpu) {
            Ok(s) => {
                debug!(port = %self.ifname, cpu, "VM port's receive steered to the worker's CPU");
                self.steered = Some(s);
            }
            Err(e) if !steer::say_refusal(&e) => {
                debug!(port = %self.ifname, cpu, error = %e, "receive not steered (said before)");
            }
            Err(e) => {
                warn!(port = %self.ifname, cpu, error = %e, "cannot steer the VM port's receive to srmigd's CPU: its packets may be reordered when the TC program is turned off or on");
            }
        }
    }

    /// Writes back the receive steering [`steer_receive`](Self::steer_receive) changed, if
    /// the interface is still here.
    fn unsteer(&mut self) {
        if let Some(s) = self.steered.take() {
            if let Err(e) = s.restore() {
                debug!(port = %self.ifname, error = %e, "receive steering not written back");
            }
        }
    }

    /// Turns the transmit checksum offload srmigd turned off back on.
    fn restore_tx_checksum(&mut self) {
        if let Some(ifindex) = self.restore_tx_csum.take() {
            // The interface may be gone (an error then says so, and there is nothing to do).
            let _ = xdp::set_tx_checksum(ifindex, true);
        }
    }

    /// Tells a VM port's armed program what srmigd has handled, or turns its table on where
    /// the program cannot be told ([`FastWait`]); `tx_idle`: no port has frames waiting in its
    /// transmit queue. `true` when the table is on (or nothing waits).
    pub fn try_enable_fast(&mut self, now: std::time::Instant, tx_idle: bool) -> bool {
        let Some(mut w) = self.fast_wait else {
            return true;
        };
        // Frames that reached the socket, read before the ring is looked at: if the ring is
        // empty after, srmigd has read them all (and sent them: this runs after the round's
        // sends).
        let landed = match &self.socket {
            Some(PortSocket::Packet(s)) => s.landed().ok(),
            _ => None,
        };
        let Some(f) = self.fast_alone.as_mut().map(|f| f.fast_mut()) else {
            self.fast_wait = None;
            return true;
        };
        if !f.enable_pending() {
            // Nothing written, or the program turned itself on.
            debug!(port = %self.ifname, waited_us = now.saturating_duration_since(w.since).as_micros() as u64, rounds = w.checks, handled = ?w.handled, passed = f.passed(), ?landed, "the VM port's program turned itself on");
            self.fast_wait = None;
            return true;
        }
        let passed = f.passed();
        let empty = tx_idle
            && match &self.socket {
                Some(PortSocket::Packet(s)) => s.rx_empty(),
                _ => true,
            };
        if empty && self.fast_base.is_none() && w.quiet_at == Some(passed) {
            // A quiet moment: everything passed has been read. From here on each frame the
            // program passes reaches the socket, so the counts stay in step.
            match landed {
                Some(t) => self.fast_base = Some(CountBase { passed, landed: t }),
                None => {
                    // No count of the socket's to tell the program: turned on from here.
                    if let Err(e) = f.enable() {
                        warn!(port = %self.ifname, error = %e, "turning the VM port's fast path on failed; it stays off");
                    }
                    self.fast_wait = None;
                    return true;
                }
            }
        }
        if let (true, Some(t), Some(base)) = (empty, landed, self.fast_base) {
            let handled = base.handled(t);
            if w.handled != Some(handled) {
                debug!(port = %self.ifname, handled, passed, landed = t, "telling the VM port's program what srmigd handled");
                match f.set_handled(handled) {
                    Ok(()) => w.handled = Some(handled),
                    Err(e) => {
                        debug!(port = %self.ifname, error = %e, "cannot tell the VM port's program what srmigd handled")
                    }
                }
            }
        }
        if w.handled.is_some_and(|h| h == f.passed()) {
            // Nothing passed since srmigd's count: the program turns itself on at its next
            // IPv6 frame (it cannot pass one first), which is the same as on now.
            debug!(port = %self.ifname, waited_us = now.saturating_duration_since(w.since).as_micros() as u64, rounds = w.checks, "srmigd caught up with the VM port's program");
            f.caught_up();
            self.fast_wait = None;
            return true;
        }
        w.checks = w.checks.saturating_add(1);
        if now.saturating_duration_since(w.since) >= FAST_WAIT_MAX && w.checks >= FAST_WAIT_CHECKS {
            info!(port = %self.ifname, passed, ?landed, base = ?self.fast_base, empty, tx_idle, handled = ?w.handled, "srmigd did not catch up with the VM port's program: turned on anyway");
            if let Err(e) = f.enable() {
                warn!(port = %self.ifname, error = %e, "turning the VM port's fast path on failed; it stays off");
            }
            self.stats.fast_forced_enables += 1;
            self.fast_wait = None;
            return true;
        }
        w.quiet_at = empty.then_some(passed);
        self.fast_wait = Some(w);
        false
    }

    /// Opens a socket on `ifindex` as the port's mode says; returns it and the interface's
    /// MTU.
    fn open(&mut self, ifindex: u32) -> io::Result<(PortSocket, Option<u32>)> {
        let driver = xdp::driver_name(ifindex);
        let veth = driver.as_deref() == Some("veth");
        let want_xdp = match self.mode {
            // Several workers share the interface through PACKET_FANOUT (AF_PACKET only).
            _ if self.fanout.is_some() => false,
            IoMode::Packet => false,
            IoMode::Xdp => true,
            // Uplinks; VM ports keep AF_PACKET and the VM's offloads (see the module doc).
            IoMode::Auto => self.kind == PortKind::Uplink,
        };
        // A veth's peer is a local kernel stack, which hands frames over with the TCP/UDP
        // checksum left partial (CHECKSUM_PARTIAL): AF_PACKET says so in the virtio_net_hdr,
        // AF_XDP passes bare bytes, so srmigd recognises and completes such checksums.
        let veth = want_xdp && veth;
        let mut socket = None;
        let mtu = packet::interface_mtu_by_index(ifindex).ok();
        if want_xdp {
            let opts = xdp::XdpOptions {
                fast_path: self.fast_path,
                ring_size: self.xdp_ring_size,
                frames: self.xdp_ring_size.saturating_mul(2),
            };
            let opened = xdp::XdpSocket::open(ifindex, &self.ifname, &opts)
                .map_err(|e| e.to_string())
                .and_then(|s| {
                    // One AF_XDP frame per packet: a larger MTU needs AF_PACKET.
                    let need = mtu.map_or(0, |m| m as usize + 14);
                    if need > s.max_frame() {
                        Err(format!(
                            "interface MTU {} needs {need}-byte frames, AF_XDP carries {}",
                            mtu.unwrap_or(0),
                            s.max_frame()
                        ))
                    } else {
                        Ok(s)
                    }
                });
            match opened {
                Ok(mut s) => {
                    s.set_complete_partial(veth);
                    socket = Some(PortSocket::Xdp(Box::new(s)));
                }
                Err(e) if self.mode == IoMode::Xdp => {
                    return Err(io::Error::other(format!("AF_XDP: {e}")));
                }
                Err(e) => {
                    warn!(port = %self.ifname, error = %e, "AF_XDP not used on this interface, using AF_PACKET");
                }
            }
        }
        let vm_fast = self.fast_path
            && self.kind == PortKind::Vm
            && self.fanout.is_none()
            && self.mode != IoMode::Xdp;
        let s = match socket {
            Some(s) => s,
            None if vm_fast => PortSocket::Packet(PacketSocket::open_vm_pair(ifindex, mtu)?),
            None => match self.fanout {
                Some(salt) => PortSocket::Packet(PacketSocket::open_with(
                    ifindex,
                    Some(crate::workers::fanout_group(salt, self.id, ifindex)),
                    mtu,
                )?),
                None => PortSocket::Packet(PacketSocket::open_with(ifindex, None, mtu)?),
            },
        };
        Ok((s, mtu))
    }

    /// Closes the socket, on another thread ([`close_in_background`]). Frames still queued
    /// for it are dropped and counted as sent without a link.
    pub fn detach(&mut self) {
        self.drop_fast_path();
        if let Some(mut s) = self.socket.take() {
            if let PortSocket::Packet(p) = &mut s {
                self.stats.tx_no_link += p.discard_queued() as u64;
            }
            close_in_background(s);
        }
    }

    /// Receives a batch (the batch is cleared first). Nothing for a port without a socket.
    pub fn recv_batch(&mut self, batch: &mut Batch) -> io::Result<RecvStats> {
        match &mut self.socket {
            Some(PortSocket::Packet(s)) => s.recv_batch(self.id, batch),
            Some(PortSocket::Xdp(s)) => s.recv_batch(self.id, batch),
            None => {
                batch.clear();
                Ok(RecvStats::default())
            }
        }
    }

    /// Queues a frame for the next [`flush`](Self::flush) (a QEMU port sends or queues on its
    /// own). Says why it was not queued, without counting the failure (the caller decides:
    /// [`count_undelivered`](Self::count_undelivered), a re-steer, or a flush and a retry for
    /// [`Undelivered::QueueFull`]).
    #[inline]
    pub fn queue(&mut self, frame: &[u8]) -> Result<(), Undelivered> {
        if let Some(q) = &mut self.qemu {
            q.send(frame, &mut self.stats);
            return Ok(());
        }
        match &mut self.socket {
            Some(PortSocket::Packet(s)) => {
                if s.queue(frame) {
                    Ok(())
                } else {
                    Err(Undelivered::QueueFull)
                }
            }
            Some(PortSocket::Xdp(s)) => match s.send(frame) {
                Ok(()) => Ok(()),
                Err(xdp::XdpTxError::Full) => Err(Undelivered::QueueFull),
                Err(e) => Err(Undelivered::Refused(io::Error::other(e.to_string()))),
            },
            None => Err(Undelivered::NoLink),
        }
    }

    /// Queues a frame, counting a failure as a drop (used off the fast path: a re-steered or
    /// recovered frame). A full queue is flushed once first (its failures counted too).
    pub fn send(&mut self, frame: &[u8], scratch: &mut PacketBuf) {
        match self.queue(frame) {
            Ok(()) => {}
            Err(Undelivered::QueueFull) => {
                while let Some(u) = self.flush(scratch) {
                    self.count_undelivered(&u);
                }
                if let Err(u) = self.queue(frame) {
                    self.count_undelivered(&u);
                }
            }
            Err(u) => self.count_undelivered(&u),
        }
    }

    /// Whether frames wait in the transmit queue.
    pub fn tx_pending(&self) -> bool {
        match &self.socket {
            Some(PortSocket::Packet(s)) => s.tx_pending() > 0,
            Some(PortSocket::Xdp(s)) => s.tx_pending() > 0,
            None => false,
        }
    }

    /// Hands what is queued to the kernel. AF_PACKET: on the first frame refused, copies it
    /// into `failed` and returns why (the frames after it stay queued: call again). AF_XDP
    /// counts its own failures. `None` once everything is handed over.
    pub fn flush(&mut self, failed: &mut PacketBuf) -> Option<Undelivered> {
        match &mut self.socket {
            Some(PortSocket::Packet(s)) => s.flush(failed).err().map(|e| Undelivered::Refused(e.0)),
            Some(PortSocket::Xdp(s)) => {
                if s.flush().is_err() {
                    self.stats.tx_errors += 1;
                }
                None
            }
            None => None,
        }
    }

    /// Counts a frame that was not sent and is dropped.
    pub fn count_undelivered(&mut self, u: &Undelivered) {
        match u {
            Undelivered::NoLink => self.stats.tx_no_link += 1,
            Undelivered::Refused(_) | Undelivered::QueueFull => self.stats.tx_errors += 1,
        }
    }

    /// Adds one receive call's outcome to the counters.
    pub fn count_recv(&mut self, r: &RecvStats) {
        self.stats.rx_frames += r.frames as u64;
        self.stats.rx_truncated += r.truncated;
        self.stats.rx_gso += r.gso;
        self.stats.rx_gso_segments += r.gso_segments;
        self.stats.rx_gso_bad += r.gso_bad;
        self.stats.rx_bad_csum_meta += r.bad_csum_meta;
        self.stats.rx_csum_completed += r.csum_completed;
    }

    /// Reads the kernel's drop counters of the socket into the port's counters (a system
    /// call: for status and metrics, not per batch).
    pub fn refresh_kernel_stats(&mut self) {
        match &self.socket {
            Some(PortSocket::Packet(s)) => {
                if let Ok(d) = s.take_ring_drops() {
                    self.stats.rx_ring_drops += d;
                }
            }
            Some(PortSocket::Xdp(s)) => {
                if let Ok(d) = s.take_ring_drops() {
                    self.stats.rx_ring_drops += d;
                }
            }
            None => {}
        }
    }

    /// The fast path, when it is loaded on the port's interface.
    pub fn fast_path(&self) -> Option<&fastpath::FastPath> {
        match &self.socket {
            Some(PortSocket::Xdp(s)) => s.fast_path(),
            _ => self.fast_alone.as_ref().map(|f| f.fast()),
        }
    }

    /// The fast path, when it is loaded on the port's interface.
    pub fn fast_path_mut(&mut self) -> Option<&mut fastpath::FastPath> {
        match &mut self.socket {
            Some(PortSocket::Xdp(s)) => s.fast_path_mut(),
            _ => self.fast_alone.as_mut().map(|f| f.fast_mut()),
        }
    }

    /// A plain copy of the port's state for status and metrics.
    pub fn info(&self) -> PortInfo {
        PortInfo {
            ifindex: self.ifindex,
            attached: self.attached(),
            io: self.stats,
            socket: self.socket.as_ref().map(PortSocket::kind),
            fast_path: self.fast_path().is_some_and(|f| f.enabled()),
            fast_path_hook: self
                .fast_alone
                .as_ref()
                .map(|f| f.hook())
                .or_else(|| self.fast_path().is_some().then_some("xdp")),
            mtu: self.mtu,
        }
    }
}

/// Closes `s` on a short-lived thread of its own (inline if no thread can be started).
///
/// Closing an AF_PACKET socket waits for an RCU grace period and, because of its promiscuous
/// membership, for the RTNL lock, which a link change such as a netns move holds: measured
/// 10-16 ms after `ip link set down`, 20-43 ms during `ip link set netns`. On the dataplane
/// thread that stalled every port of the host each time a VM left. Nothing refers to the
/// socket any more; it only has to go away.
pub fn close_in_background(s: PortSocket) {
    // A failed spawn drops the closure, and the socket with it, right here.
    let _ = std::thread::Builder::new()
        .name("srmigd-close".to_owned())
        .spawn(move || drop(s));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ifindex: u32, name: &str, up: bool) -> LinkEvent {
        LinkEvent {
            ifindex,
            name: Some(name.to_owned()),
            up,
            removed: false,
            mtu: None,
        }
    }

    #[test]
    fn handled_count_follows_the_frames_landed_since_the_base() {
        // As measured in the lab: one frame had landed before the program was attached.
        let base = CountBase {
            passed: 0,
            landed: 1,
        };
        assert_eq!(
            base.handled(1),
            0,
            "nothing the program passed has landed yet"
        );
        // 92 frames passed since; 91 landed and were handled: the 92nd is still on its
        // way, so the count must not reach the program's 92 (it would turn on early).
        assert_eq!(base.handled(92), 91);
        assert_eq!(base.handled(93), 92);
        // A socket opened with the link down (nothing landed) beside a program that has
        // passed 5 frames elsewhere before.
        let prepared = CountBase {
            passed: 5,
            landed: 0,
        };
        assert_eq!(prepared.handled(3), 8);
        // A landed count below the base's (a new socket) never wraps.
        assert_eq!(base.handled(0), 0);
    }

    #[test]
    fn attach_on_up_by_name_only() {
        let mut p = PortIo::new(PortId(1), "vm0".into(), PortKind::Vm);
        assert_eq!(p.on_link_event(&ev(7, "other", true)), None);
        assert_eq!(p.ifindex, None);
        // Present but down: remember the ifindex; a VM port opens its socket ahead.
        assert_eq!(
            p.on_link_event(&ev(7, "vm0", false)),
            Some(LinkAction::Prepare(7))
        );
        assert_eq!(p.ifindex, Some(7));
        let mut up = PortIo::new(PortId(0), "up0".into(), PortKind::Uplink);
        assert_eq!(up.on_link_event(&ev(3, "up0", false)), None);
        assert_eq!(
            p.on_link_event(&ev(7, "vm0", true)),
            Some(LinkAction::Attach(7))
        );
    }

    #[test]
    fn removal_only_concerns_the_known_ifindex() {
        let mut p = PortIo::new(PortId(1), "vm0".into(), PortKind::Vm);
        p.ifindex = Some(7);
        let gone_other = LinkEvent {
            ifindex: 9,
            name: Some("vm0".into()),
            up: false,
            removed: true,
            mtu: None,
        };
        assert_eq!(p.on_link_event(&gone_other), None);
        assert_eq!(p.ifindex, Some(7));
        let gone = LinkEvent {
            ifindex: 7,
            name: None,
            up: false,
            removed: true,
            mtu: None,
        };
        // Not attached (no socket): nothing to close, but the ifindex is forgotten.
        assert_eq!(p.on_link_event(&gone), None);
        assert_eq!(p.ifindex, None);
        // A new interface with the same name and a new ifindex attaches.
        assert_eq!(
            p.on_link_event(&ev(12, "vm0", true)),
            Some(LinkAction::Attach(12))
        );
    }

    #[test]
    fn rename_away_forgets_the_ifindex() {
        let mut p = PortIo::new(PortId(0), "up0".into(), PortKind::Uplink);
        p.ifindex = Some(3);
        assert_eq!(p.on_link_event(&ev(3, "renamed", true)), None);
        assert_eq!(p.ifindex, None);
    }

    #[test]
    fn send_without_socket_is_counted() {
        let mut p = PortIo::new(PortId(0), "up0".into(), PortKind::Uplink);
        let mut scratch = PacketBuf::new();
        p.send(&[0u8; 60], &mut scratch);
        p.send(&[0u8; 60], &mut scratch);
        assert_eq!(p.stats.tx_no_link, 2);
        assert_eq!(p.stats.tx_errors, 0);
        assert!(!p.info().attached);
        // queue reports without counting.
        assert!(matches!(p.queue(&[0u8; 60]), Err(Undelivered::NoLink)));
        assert_eq!(p.stats.tx_no_link, 2);
        p.count_undelivered(&Undelivered::Refused(io::Error::from_raw_os_error(
            libc::EAGAIN,
        )));
        assert_eq!(p.stats.tx_errors, 1);
    }

    #[test]
    fn detach_and_reattach_on_loopback() {
        let mut p = PortIo::new(PortId(1), "lo".into(), PortKind::Vm);
        match p.attach(1) {
            Ok(_) => {}
            // AF_PACKET needs CAP_NET_RAW: without it there is nothing to test here.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => return,
            Err(e) => panic!("attach to lo: {e}"),
        }
        assert!(p.attached());
        p.detach();
        assert!(!p.attached());
        assert!(p.socket.is_none());
        // Detaching twice is harmless; attaching again opens a fresh socket.
        p.detach();
        p.attach(1).expect("attach again");
        assert!(p.attached());
        assert_eq!(p.stats.attachments, 2);
    }

    #[test]
    fn which_send_errors_can_mean_link_loss() {
        let refused = |errno| Undelivered::Refused(io::Error::from_raw_os_error(errno));
        for errno in [libc::ENETDOWN, libc::ENXIO, libc::ENODEV, libc::ENOBUFS] {
            assert!(refused(errno).may_be_link_loss(), "errno {errno}");
        }
        for errno in [libc::EAGAIN, libc::EMSGSIZE, libc::EINVAL, libc::EPERM] {
            assert!(!refused(errno).may_be_link_loss(), "errno {errno}");
        }
        assert!(!Undelivered::NoLink.may_be_link_loss());
        assert!(!Undelivered::Refused(io::Error::other("no errno")).may_be_link_loss());
    }
}
