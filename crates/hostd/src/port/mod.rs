//! Dataplane ports on real interfaces: which interface each [`PortId`] uses, its AF_PACKET
//! socket while the interface is attached, and the I/O counters the engine cannot see
//! (send errors, truncated or GSO frames, checksums completed in software).
//!
//! A port is *attached* while an interface with the port's name exists in srmigd's namespace
//! and is administratively up with carrier (`IFF_UP` and `IFF_LOWER_UP`). Attachment changes
//! come from [`crate::linkwatch`]; every transition to attached opens a fresh socket on the
//! interface's current ifindex (the lab moves and recreates veths, so the ifindex of a name
//! changes), every transition to detached closes it (on another thread: a close can wait tens of
//! milliseconds for the kernel, see [`close_in_background`]).
//!
//! A send on a VM port can fail because its interface went down or left the namespace
//! before srmigd read the link event that says so (see [`Undelivered`]); the dataplane loop
//! then catches up with the kernel's link state and re-steers the frame the VM never got.
//!
//! A VM port may instead be backed by a QEMU `-netdev stream` socket ([`qemu`], configured in
//! node.toml's `[[qemu]]` tables): it is attached while srmigd's stream to QEMU is connected,
//! and link events do not concern it.

pub mod bpf;
pub mod gso;
pub mod packet;
pub mod qemu;
pub mod qemu_frame;
pub mod qemu_ring;
pub mod vnet;
pub mod xdp;

use std::io;

use serde::{Deserialize, Serialize};
use srmig_dataplane::{PortId, PortKind};

use crate::linkwatch::LinkEvent;
pub use packet::{complete_checksum, PacketSocket, RecvScratch, RecvStats, MAX_RECV_BATCH};

/// I/O counters of one port, kept by srmigd (the engine counts what it forwards).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortIoStats {
    /// `rx_frames`: frames received from the socket and handed to the engine.
    pub rx_frames: u64,
    /// `rx_truncated`: frames longer than a packet buffer, dropped.
    pub rx_truncated: u64,
    /// `rx_gso`: GSO super-frames (TSO/GSO on the peer), dropped.
    pub rx_gso: u64,
    /// `rx_bad_csum_meta`: frames with out-of-bounds checksum offload metadata, dropped.
    pub rx_bad_csum_meta: u64,
    /// `rx_csum_completed`: frames whose offloaded checksum srmigd completed.
    pub rx_csum_completed: u64,
    /// `rx_errors`: receive calls that failed.
    pub rx_errors: u64,
    /// `tx_errors`: frames the socket refused (buffer full, interface gone, too big).
    pub tx_errors: u64,
    /// `tx_no_link`: frames for this port while it was detached (dropped).
    pub tx_no_link: u64,
    /// `attachments`: how many times a socket was opened on the port.
    pub attachments: u64,
    /// `tx_queued` (QEMU ports): frames that waited for room in the socket.
    #[serde(default)]
    pub tx_queued: u64,
    /// `tx_queue_full` (QEMU ports): frames dropped because the wait queue was full (QEMU
    /// not reading).
    #[serde(default)]
    pub tx_queue_full: u64,
    /// `rx_bad_records` (QEMU ports): record lengths no QEMU sends (stream reset).
    #[serde(default)]
    pub rx_bad_records: u64,
    /// `recovered` (QEMU ports): frames QEMU had not read when the VM stopped, re-steered.
    #[serde(default)]
    pub recovered: u64,
    /// `recovery_inexact` (QEMU ports): recoveries whose accounting did not match SIOCOUTQ
    /// exactly (a frame may have been duplicated).
    #[serde(default)]
    pub recovery_inexact: u64,
    /// `recovery_lost` (QEMU ports): recoveries where unread frames had left the ring (lost).
    #[serde(default)]
    pub recovery_lost: u64,
    /// `resteered` (VM ports): frames the VM never got because its attachment had just gone
    /// (the send failed on the vanished interface, or found the port detached), re-steered
    /// where the VM's packets go now (End.S forwards them to the destination).
    #[serde(default)]
    pub resteered: u64,
}

/// Why a port did not send a frame.
#[derive(Debug)]
pub enum Undelivered {
    /// The port has no socket (detached).
    NoLink,
    /// The socket refused the frame.
    Refused(io::Error),
}

impl Undelivered {
    /// Whether the failure can mean that the interface just went down or left the namespace
    /// (the link event saying so may still be unread): `ENETDOWN` (not up), `ENXIO` and
    /// `ENODEV` (gone), `ENOBUFS` (a device that is stopping or lost its carrier drops what
    /// it is handed; also a full veth ring, hence "can"). `EAGAIN` (socket buffer full) and
    /// the rest cannot.
    pub fn may_be_link_loss(&self) -> bool {
        match self {
            Undelivered::NoLink => false,
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
    /// Close the socket: the port becomes detached.
    Detach,
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
    /// The interface's ifindex, while an interface of that name exists.
    pub ifindex: Option<u32>,
    /// The socket, while attached.
    pub socket: Option<PacketSocket>,
    /// The QEMU stream, for a QEMU-backed port (then `socket` stays `None`).
    pub qemu: Option<Box<qemu::QemuPort>>,
    /// I/O counters.
    pub stats: PortIoStats,
    /// Whether the "GSO frame received" warning was logged already.
    pub warned_gso: bool,
}

impl PortIo {
    /// A detached port.
    pub fn new(id: PortId, ifname: String, kind: PortKind) -> PortIo {
        PortIo {
            id,
            ifname,
            kind,
            ifindex: None,
            socket: None,
            qemu: None,
            stats: PortIoStats::default(),
            warned_gso: false,
        }
    }

    /// A QEMU-backed port (disconnected until the loop connects it).
    pub fn new_qemu(id: PortId, name: String, kind: PortKind, q: qemu::QemuPort) -> PortIo {
        let mut p = PortIo::new(id, name, kind);
        p.qemu = Some(Box::new(q));
        p
    }

    /// Whether the port has a socket (AF_PACKET) or a connected QEMU stream.
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
            return self.attached().then_some(LinkAction::Detach);
        }
        if ours_by_name {
            self.ifindex = Some(ev.ifindex);
            let same_socket = self
                .socket
                .as_ref()
                .is_some_and(|s| s.ifindex() == ev.ifindex);
            return match (ev.up, same_socket) {
                (true, true) => None,
                (true, false) => Some(LinkAction::Attach(ev.ifindex)),
                (false, _) => self.attached().then_some(LinkAction::Detach),
            };
        }
        if ours_by_index && ev.name.is_some() {
            // Renamed away: the name is no longer ours.
            self.ifindex = None;
            return self.attached().then_some(LinkAction::Detach);
        }
        None
    }

    /// Opens a socket on `ifindex`, replacing any previous one.
    pub fn attach(&mut self, ifindex: u32) -> io::Result<()> {
        self.detach();
        let s = PacketSocket::open(ifindex)?;
        self.socket = Some(s);
        self.ifindex = Some(ifindex);
        self.stats.attachments += 1;
        Ok(())
    }

    /// Closes the socket, on another thread ([`close_in_background`]).
    pub fn detach(&mut self) {
        if let Some(s) = self.socket.take() {
            close_in_background(s);
        }
    }

    /// Sends a frame; failures are counted, never fatal.
    #[inline]
    pub fn send(&mut self, frame: &[u8]) {
        if let Err(u) = self.try_send(frame) {
            self.count_undelivered(&u);
        }
    }

    /// Sends a frame and says why it was not sent, without counting the failure (the caller
    /// decides: [`count_undelivered`](Self::count_undelivered) or a re-steer). A QEMU port
    /// queues or counts on its own and always returns `Ok`.
    #[inline]
    pub fn try_send(&mut self, frame: &[u8]) -> Result<(), Undelivered> {
        if let Some(q) = &mut self.qemu {
            q.send(frame, &mut self.stats);
            return Ok(());
        }
        match &self.socket {
            Some(s) => s.send(frame).map_err(Undelivered::Refused),
            None => Err(Undelivered::NoLink),
        }
    }

    /// Counts a frame that was not sent and is dropped.
    pub fn count_undelivered(&mut self, u: &Undelivered) {
        match u {
            Undelivered::NoLink => self.stats.tx_no_link += 1,
            Undelivered::Refused(_) => self.stats.tx_errors += 1,
        }
    }

    /// Adds one receive call's outcome to the counters.
    pub fn count_recv(&mut self, r: &RecvStats) {
        self.stats.rx_frames += r.frames as u64;
        self.stats.rx_truncated += r.truncated;
        self.stats.rx_gso += r.gso;
        self.stats.rx_bad_csum_meta += r.bad_csum_meta;
        self.stats.rx_csum_completed += r.csum_completed;
    }

    /// A plain copy of the port's state for status and metrics.
    pub fn info(&self) -> PortInfo {
        PortInfo {
            ifindex: self.ifindex,
            attached: self.attached(),
            io: self.stats,
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
pub fn close_in_background(s: PacketSocket) {
    // A failed spawn drops the closure, and the socket with it, right here.
    let _ = std::thread::Builder::new()
        .name("srmigd-close".to_owned())
        .spawn(move || drop(s));
}

/// The I/O side of a port, as shown in status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortInfo {
    /// Current ifindex of the interface, if it exists.
    pub ifindex: Option<u32>,
    /// Whether a socket is open on it.
    pub attached: bool,
    /// I/O counters.
    pub io: PortIoStats,
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
        }
    }

    #[test]
    fn attach_on_up_by_name_only() {
        let mut p = PortIo::new(PortId(1), "vm0".into(), PortKind::Vm);
        assert_eq!(p.on_link_event(&ev(7, "other", true)), None);
        assert_eq!(p.ifindex, None);
        // Present but down: remember the ifindex, nothing to do.
        assert_eq!(p.on_link_event(&ev(7, "vm0", false)), None);
        assert_eq!(p.ifindex, Some(7));
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
        };
        assert_eq!(p.on_link_event(&gone_other), None);
        assert_eq!(p.ifindex, Some(7));
        let gone = LinkEvent {
            ifindex: 7,
            name: None,
            up: false,
            removed: true,
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
        p.send(&[0u8; 60]);
        p.send(&[0u8; 60]);
        assert_eq!(p.stats.tx_no_link, 2);
        assert_eq!(p.stats.tx_errors, 0);
        assert!(!p.info().attached);
        // try_send reports without counting.
        assert!(matches!(p.try_send(&[0u8; 60]), Err(Undelivered::NoLink)));
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
            Ok(()) => {}
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
