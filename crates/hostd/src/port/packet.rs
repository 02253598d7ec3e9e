//! An AF_PACKET socket on one interface with a memory-mapped receive ring and batched sends:
//! srmigd's port I/O wherever AF_XDP does not fit (VM ports, jumbo MTUs, multi-queue
//! interfaces, interfaces with another XDP program; see [`super::xdp`] and the port's `io`
//! mode in `super::IoMode`).
//!
//! Why AF_PACKET (and not a TAP or the kernel's own forwarding): srmigd attaches to the host
//! side of a veth (netns VMs, uplinks to the Linux underlay) or to a TAP that QEMU already
//! holds, and in both cases an AF_PACKET socket bound to the interface sees every frame the
//! peer sends and injects frames the peer receives, without the host kernel routing anything.
//! The operator (or the lab) sets `net.ipv6.conf.<if>.disable_ipv6=1` on those interfaces so
//! the kernel of srmigd's namespace stays out of the way: no link-local address, no NDP, no
//! router solicitations of its own on the wire.
//!
//! # Receive: a TPACKET_V2 ring, with the socket queue for frames larger than a ring slot
//!
//! The kernel writes each frame into the next slot of a ring shared with srmigd
//! (`PACKET_RX_RING`) and flips the slot's status to `TP_STATUS_USER`; srmigd copies the
//! frame into a [`Batch`] buffer and hands the slot back (`TP_STATUS_KERNEL`). No system call
//! per frame, none at all while frames keep coming (poll(2) is only needed when the ring is
//! empty). When the ring is full the kernel drops the frame before it is queued anywhere and
//! counts it (`PACKET_STATISTICS`, shown as `rx_ring_drops`): srmigd keeps its CPU for the
//! frames it has.
//!
//! Why V2 and not V3: a V3 ring hands blocks to user space, not frames, and a block that is not
//! full is handed over only when its retire timer fires (1 ms at the least): every frame of a
//! quiet VM would wait up to a millisecond, which a router on the migration's critical path
//! cannot afford. V2 slots are fixed-size (2 KiB, or large enough for the interface's MTU:
//! [`RingGeometry`]); a frame that does not fit a
//! slot (jumbo frames, GSO super-frames from a VM) is marked `TP_STATUS_COPY` in its slot and
//! queued whole on the socket (`PACKET_COPY_THRESH`), where srmigd reads it with one
//! `recvmsg`, in ring order. Most frames take the ring; only frames over ~1.9 KiB cost a call.
//!
//! # Send: one `sendmmsg(2)` per batch
//!
//! [`PacketSocket::queue`] copies a frame into the socket's transmit arena (preallocated);
//! [`PacketSocket::flush`] hands everything queued to the kernel with `sendmmsg`, which says
//! exactly which frame failed and why. The dataplane loop needs that: a frame refused because
//! a VM's interface just went away is re-steered, not lost (`crate::dataplane_loop`). A TX ring
//! (`PACKET_TX_RING`) would save the copy into the socket but reports failures per ring, not
//! per frame.
//!
//! # Offloads
//!
//! `PACKET_VNET_HDR`: each frame comes with a `virtio_net_hdr` ([`super::vnet`]). A VM stack
//! on a veth hands its TCP/UDP packets over with the checksum left to "hardware"
//! (CHECKSUM_PARTIAL); the header says where the checksum goes, and
//! [`complete_checksum`] fills it in before the frame is encapsulated (otherwise the remote
//! receiver would drop it). A GSO super-frame (TSO/USO on in the guest, the default of every
//! real guest) is cut into MSS-sized packets in software ([`super::gso`]) as it is received,
//! so the engine only ever sees packets that fit the path.
//!
//! Socket options, in the order they are set:
//! - `SOCK_RAW`, protocol 0 at creation (no frame is queued before `bind`).
//! - `PACKET_VERSION` = `TPACKET_V2`, `PACKET_VNET_HDR`, `PACKET_COPY_THRESH` (all must come
//!   before the ring), `PACKET_RX_RING`, then the `mmap` of the ring.
//! - `PACKET_IGNORE_OUTGOING`: frames we send are not looped back to us.
//! - `PACKET_QDISC_BYPASS`: frames go straight to the driver. A veth's qdisc is only activated
//!   by the kernel's linkwatch work, up to a second after the link comes up; bypassing it lets
//!   End.SBUF release its buffer the moment the attachment is up.
//! - `SO_RCVBUFFORCE` / `SO_SNDBUFFORCE` (root; falls back to the non-forcing options): the
//!   receive buffer holds the frames that do not fit a slot.
//! - `bind` with `ETH_P_ALL` and the ifindex: only this interface, every EtherType.
//! - `PACKET_FANOUT` (`PACKET_FANOUT_HASH`, only with `srmigd --workers N`, N > 1): the
//!   workers' sockets on one interface share its frames, one flow per socket
//!   ([`PacketSocket::open_with`], `crate::workers`).
//! - `PACKET_ADD_MEMBERSHIP` / `PACKET_MR_PROMISC`: frames to the anycast gateway MAC (and
//!   to any other MAC) are received.
#![allow(unsafe_code)]

use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

use srmig_dataplane::{Batch, PacketBuf, PortId, BUF_CAPACITY};

use super::gso;
pub use super::vnet::complete_checksum;
use super::vnet::{VnetHdr, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, VNET_HDR_LEN};

/// Maximum frames received per batch.
pub const MAX_RECV_BATCH: usize = 256;

/// Smallest receive ring slot (header, `sockaddr_ll`, `virtio_net_hdr` and the frame): frames
/// up to ~1.9 KiB (every 1500-byte MTU frame) stay in the ring. Ports with a larger MTU get
/// larger slots ([`RingGeometry::for_mtu`]), so their full-size frames stay in the ring too.
pub const RING_FRAME_SIZE: usize = 2048;
/// What a slot holds besides the frame: `tpacket2_hdr`, `sockaddr_ll`, alignment, the
/// `virtio_net_hdr`, the Ethernet header and a VLAN tag, with room to spare.
const RING_SLOT_OVERHEAD: usize = 160;
/// Smallest ring block (the kernel allocates the ring in blocks of contiguous pages).
const RING_BLOCK_SIZE: usize = 1 << 16;
/// Bytes of a ring with the smallest slots: 8 MiB, 4096 slots.
const RING_BYTES: usize = 8 << 20;
/// Fewest slots of a ring with larger slots (16 KiB slots: 16 MiB).
const RING_MIN_SLOTS: usize = 1024;

/// The shape of a receive ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingGeometry {
    /// Bytes per slot (a power of two).
    pub frame_size: usize,
    /// Bytes per block (a multiple of the slot size and of the page size).
    pub block_size: usize,
    /// Number of blocks.
    pub blocks: usize,
}

impl RingGeometry {
    /// Slots that hold a whole frame of an interface with this IP MTU (2 KiB at least; the
    /// largest MTU srmigd carries, 9216, gets 16 KiB slots); `None`: 2 KiB slots.
    pub fn for_mtu(mtu: Option<u32>) -> RingGeometry {
        let need = mtu.map_or(0, |m| (m as usize).min(9216) + RING_SLOT_OVERHEAD);
        let frame_size = need.next_power_of_two().max(RING_FRAME_SIZE);
        let block_size = frame_size.max(RING_BLOCK_SIZE);
        let slots = (RING_BYTES / frame_size).max(RING_MIN_SLOTS);
        RingGeometry {
            frame_size,
            block_size,
            blocks: slots * frame_size / block_size,
        }
    }

    fn len(&self) -> usize {
        self.block_size * self.blocks
    }
}
/// Largest frame read from the socket queue (a GSO super-frame of 64 KiB plus headers).
const COPY_BUF_BYTES: usize = 65536 + 512;

/// Bytes of the transmit arena (frames queued between two flushes).
const TX_ARENA_BYTES: usize = 1 << 20;
/// Frames queued between two flushes, at most.
const TX_MAX_FRAMES: usize = 1024;
/// Frames per `sendmmsg` call.
const SEND_CHUNK: usize = 128;

/// Requested send buffer size.
const SOCKET_BUFFER_BYTES: libc::c_int = 4 << 20;
/// Which frames a socket receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocols {
    /// Every EtherType (`ETH_P_ALL`): a tap, served before the interface's TC ingress.
    All,
    /// IPv6 only (`ETH_P_IPV6`): served after TC ingress, so a VM port's TC program
    /// ([`super::fastpath`]) decides which IPv6 frames reach srmigd.
    Ipv6,
    /// Every EtherType but IPv6 (`ETH_P_ALL` with a classic BPF filter on the frame's
    /// protocol): the VM port's second socket, beside an [`Protocols::Ipv6`] one.
    AllButIpv6,
}

/// Attaches to socket `fd` a classic BPF filter that drops IPv6 frames and keeps the rest
/// (`SO_ATTACH_FILTER`; `skb->protocol`, as the kernel matches an `ETH_P_IPV6` binding).
fn attach_not_ipv6_filter(fd: RawFd) -> io::Result<()> {
    // ld #proto (SKF_AD_OFF + SKF_AD_PROTOCOL); jeq #0x86dd, drop, keep; drop: ret #0;
    // keep: ret #-1.
    let mut prog = [
        libc::sock_filter {
            code: 0x28,
            jt: 0,
            jf: 0,
            k: 0xffff_f000,
        },
        libc::sock_filter {
            code: 0x15,
            jt: 0,
            jf: 1,
            k: 0x86dd,
        },
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: u32::MAX,
        },
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    setsockopt_raw(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)
}

/// Requested receive buffer size: it holds the frames that do not fit a ring slot (jumbo
/// frames, GSO super-frames of up to 64 KiB) until srmigd reads them: ~2000 jumbo frames.
const RECV_BUFFER_BYTES: libc::c_int = 32 << 20;

/// Per-call receive outcome counters (added to the port's I/O counters by the caller).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecvStats {
    /// Frames handed to the batch (GSO segments included).
    pub frames: usize,
    /// Frames that arrived cut short (the kernel could not queue the whole frame), dropped.
    pub truncated: u64,
    /// GSO super-frames received and cut into segments.
    pub gso: u64,
    /// Segments produced from GSO super-frames.
    pub gso_segments: u64,
    /// GSO super-frames whose metadata or headers could not be segmented (dropped).
    pub gso_bad: u64,
    /// Frames whose checksum-offload metadata was out of bounds (dropped).
    pub bad_csum_meta: u64,
    /// Frames whose partial checksum was completed in software.
    pub csum_completed: u64,
}

impl RecvStats {
    /// Adds `o`'s counts to these.
    pub fn add(&mut self, o: &RecvStats) {
        self.frames += o.frames;
        self.truncated += o.truncated;
        self.gso += o.gso;
        self.gso_segments += o.gso_segments;
        self.gso_bad += o.gso_bad;
        self.bad_csum_meta += o.bad_csum_meta;
        self.csum_completed += o.csum_completed;
    }
}

/// The receive ring: its blocks mapped once, read slot by slot.
#[derive(Debug)]
struct RxRing {
    base: *mut u8,
    len: usize,
    frame_size: usize,
    slots: usize,
    head: usize,
}

// SAFETY: the mapping belongs to this ring alone (and to the kernel, which synchronises through
// each slot's status word); nothing else holds the pointer, so moving the ring to another thread
// (the socket is closed off-thread) is sound.
unsafe impl Send for RxRing {}

impl RxRing {
    /// The status word of slot `i`.
    fn status(&self, i: usize) -> &AtomicU32 {
        debug_assert!(i < self.slots);
        // SAFETY: slot `i` lies inside the mapping (i < slots, slots * frame_size <= len);
        // its first 4 bytes are `tp_status`, a naturally aligned u32 (slots are 2048-aligned
        // at least within a page-aligned mapping) that the kernel also accesses atomically.
        unsafe { &*(self.base.add(i * self.frame_size).cast::<AtomicU32>()) }
    }

    /// Slot `i`'s bytes (valid to read only while its status says `TP_STATUS_USER`).
    fn slot(&self, i: usize) -> &[u8] {
        // SAFETY: slot `i` is inside the mapping (see `status`); the caller reads it only after
        // an Acquire load saw TP_STATUS_USER, so the kernel has finished writing it and will not
        // touch it until the status is handed back.
        unsafe { std::slice::from_raw_parts(self.base.add(i * self.frame_size), self.frame_size) }
    }

    /// Hands slot `i` back to the kernel.
    fn release(&self, i: usize) {
        self.status(i)
            .store(libc::TP_STATUS_KERNEL, Ordering::Release);
    }
}

impl Drop for RxRing {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly the mapping made in `PacketSocket::open`, unmapped
        // once here; no slice into it outlives the ring (slices are borrowed from `&self`).
        unsafe {
            libc::munmap(self.base.cast(), self.len);
        }
    }
}

/// Frames queued for one `sendmmsg` batch.
#[derive(Debug)]
struct TxQueue {
    arena: Box<[u8]>,
    used: usize,
    /// (offset, length) in the arena, in queue order.
    frames: Vec<(usize, usize)>,
    /// Index of the first frame not yet handed to the kernel.
    next: usize,
}

impl TxQueue {
    fn new() -> TxQueue {
        TxQueue {
            arena: vec![0u8; TX_ARENA_BYTES].into_boxed_slice(),
            used: 0,
            frames: Vec::with_capacity(TX_MAX_FRAMES),
            next: 0,
        }
    }

    fn has_room(&self, len: usize) -> bool {
        self.frames.len() < TX_MAX_FRAMES && self.used + len <= self.arena.len()
    }

    fn push(&mut self, frame: &[u8]) -> bool {
        if !self.has_room(frame.len()) {
            return false;
        }
        let off = self.used;
        self.arena[off..off + frame.len()].copy_from_slice(frame);
        // Keep frames 64-byte aligned in the arena (cache lines).
        self.used = (off + frame.len() + 63) & !63;
        self.frames.push((off, frame.len()));
        true
    }

    fn pending(&self) -> usize {
        self.frames.len() - self.next
    }

    fn frame(&self, i: usize) -> &[u8] {
        let (off, len) = self.frames[i];
        &self.arena[off..off + len]
    }

    fn reset_if_done(&mut self) {
        if self.next == self.frames.len() {
            self.frames.clear();
            self.next = 0;
            self.used = 0;
        }
    }
}

/// Why a queued frame was not sent: the frame (copied into the caller's buffer) failed with
/// this error; the frames queued after it are still queued.
#[derive(Debug)]
pub struct SendFailure(pub io::Error);

/// A non-blocking AF_PACKET socket bound to one interface, with its receive ring and its
/// transmit queue.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: u32,
    ring: Option<RxRing>,
    tx: TxQueue,
    /// Receives frames that did not fit a ring slot: `virtio_net_hdr` then the frame.
    copy_buf: Box<[u8]>,
    /// A VM port with a TC program ([`PacketSocket::open_vm_pair`]): this socket takes IPv6
    /// frames, `side` every other EtherType. Received together; sends go through this one.
    side: Option<Box<PacketSocket>>,
    /// Which of a pair is read first in the next [`PacketSocket::recv_batch`].
    side_first: bool,
    /// Frames that reached the socket, from `PACKET_STATISTICS` ([`PacketSocket::landed`]).
    landed: std::cell::Cell<u64>,
    /// Ring drops read from the kernel and not yet taken by [`PacketSocket::take_ring_drops`].
    unreported_drops: std::cell::Cell<u64>,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn setsockopt_raw<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `fd` is an open socket owned by the caller; the option value is a plain C value
    // that lives for the duration of the call and its exact size is passed.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (v as *const T).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    setsockopt_raw(fd, level, name, &v)
}

/// Adds `what` to an error's message (which option or call failed).
fn ctx(what: &'static str) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

impl PacketSocket {
    /// Opens a socket on interface `ifindex` with the options described in the module docs.
    pub fn open(ifindex: u32) -> io::Result<PacketSocket> {
        Self::open_with(ifindex, None, None)
    }

    /// [`PacketSocket::open`], and with `fanout = Some(group)` the socket joins `PACKET_FANOUT`
    /// group `group` of type `PACKET_FANOUT_HASH` right after `bind` (srmigd's workers, see
    /// `crate::workers`): the kernel hands each frame to one socket of the group, chosen by
    /// the frame's flow hash, so one flow always reaches the same socket. Every socket of a
    /// group must be bound to the same interface. `mtu` (the interface's) sizes the receive
    /// ring's slots ([`RingGeometry::for_mtu`]).
    pub fn open_with(
        ifindex: u32,
        fanout: Option<u16>,
        mtu: Option<u32>,
    ) -> io::Result<PacketSocket> {
        Self::open_for(ifindex, fanout, mtu, Protocols::All)
    }

    /// The sockets of a VM port whose IPv6 frames first meet a TC program (the VM port's
    /// fast path, [`super::fastpath`]): an `ETH_P_ALL` socket would see every frame before
    /// the program (the kernel serves taps before TC ingress), so IPv6 frames reach srmigd
    /// through an [`Protocols::Ipv6`] socket (after TC: only what the program passes) and
    /// every other EtherType through a second, [`Protocols::AllButIpv6`], socket, read in
    /// the same [`PacketSocket::recv_batch`].
    pub fn open_vm_pair(ifindex: u32, mtu: Option<u32>) -> io::Result<PacketSocket> {
        let side = Self::open_for(ifindex, None, mtu, Protocols::AllButIpv6)?;
        let mut s = Self::open_for(ifindex, None, mtu, Protocols::Ipv6)?;
        s.side = Some(Box::new(side));
        Ok(s)
    }

    /// The second socket of a pair ([`PacketSocket::open_vm_pair`]), to poll.
    pub fn side_fd(&self) -> Option<RawFd> {
        self.side.as_ref().map(|s| s.fd.as_raw_fd())
    }

    /// [`PacketSocket::open_with`] for some EtherTypes only (`protocols`).
    pub fn open_for(
        ifindex: u32,
        fanout: Option<u16>,
        mtu: Option<u32>,
        protocols: Protocols,
    ) -> io::Result<PacketSocket> {
        // SAFETY: plain socket(2) call; the returned descriptor is checked and owned at once.
        let raw = cvt(unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        })?;
        // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let r = fd.as_raw_fd();
        setsockopt_int(
            r,
            libc::SOL_PACKET,
            libc::PACKET_VERSION,
            libc::tpacket_versions::TPACKET_V2 as libc::c_int,
        )
        .map_err(ctx("PACKET_VERSION"))?;
        setsockopt_int(r, libc::SOL_PACKET, libc::PACKET_VNET_HDR, 1)
            .map_err(ctx("PACKET_VNET_HDR"))?;
        setsockopt_int(r, libc::SOL_PACKET, libc::PACKET_COPY_THRESH, 1)
            .map_err(ctx("PACKET_COPY_THRESH"))?;
        let g = RingGeometry::for_mtu(mtu);
        let len = g.len();
        let req = libc::tpacket_req {
            tp_block_size: g.block_size as u32,
            tp_block_nr: g.blocks as u32,
            tp_frame_size: g.frame_size as u32,
            tp_frame_nr: (len / g.frame_size) as u32,
        };
        setsockopt_raw(r, libc::SOL_PACKET, libc::PACKET_RX_RING, &req)
            .map_err(ctx("PACKET_RX_RING"))?;
        // SAFETY: maps the ring the kernel just allocated for this socket, shared and readable
        // and writable as the packet(7) ring protocol requires; the result is checked.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                r,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(ctx("mmap of the receive ring")(io::Error::last_os_error()));
        }
        let ring = RxRing {
            base: base.cast(),
            len,
            frame_size: g.frame_size,
            slots: len / g.frame_size,
            head: 0,
        };
        let s = PacketSocket {
            fd,
            ifindex,
            ring: Some(ring),
            tx: TxQueue::new(),
            copy_buf: vec![0u8; VNET_HDR_LEN + COPY_BUF_BYTES].into_boxed_slice(),
            side: None,
            side_first: false,
            landed: std::cell::Cell::new(0),
            unreported_drops: std::cell::Cell::new(0),
        };
        setsockopt_int(r, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1)
            .map_err(ctx("PACKET_IGNORE_OUTGOING"))?;
        setsockopt_int(r, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1)
            .map_err(ctx("PACKET_QDISC_BYPASS"))?;
        for (force, plain, bytes) in [
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, RECV_BUFFER_BYTES),
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, SOCKET_BUFFER_BYTES),
        ] {
            if setsockopt_int(r, libc::SOL_SOCKET, force, bytes).is_err() {
                setsockopt_int(r, libc::SOL_SOCKET, plain, bytes)
                    .map_err(ctx("socket buffer size"))?;
            }
        }
        let ifindex_c = libc::c_int::try_from(ifindex)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ifindex out of range"))?;
        // SAFETY: sockaddr_ll is a plain C struct; all-zero is valid and the fields that
        // matter are set below.
        let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        let proto = match protocols {
            Protocols::Ipv6 => libc::ETH_P_IPV6,
            Protocols::All | Protocols::AllButIpv6 => libc::ETH_P_ALL,
        };
        sll.sll_protocol = (proto as u16).to_be();
        if protocols == Protocols::AllButIpv6 {
            attach_not_ipv6_filter(r).map_err(ctx("SO_ATTACH_FILTER"))?;
        }
        sll.sll_ifindex = ifindex_c;
        // SAFETY: `sll` is a valid sockaddr_ll for AF_PACKET and its exact size is passed.
        cvt(unsafe {
            libc::bind(
                r,
                (&sll as *const libc::sockaddr_ll).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })
        .map_err(ctx("bind"))?;
        if let Some(group) = fanout {
            // The group id in the low 16 bits, the type in the high ones (packet(7)).
            let arg = libc::c_int::from(group) | ((libc::PACKET_FANOUT_HASH as libc::c_int) << 16);
            setsockopt_int(r, libc::SOL_PACKET, libc::PACKET_FANOUT, arg)
                .map_err(ctx("PACKET_FANOUT"))?;
        }
        // SAFETY: packet_mreq is a plain C struct; all-zero is valid.
        let mut mreq: libc::packet_mreq = unsafe { mem::zeroed() };
        mreq.mr_ifindex = ifindex_c;
        mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
        setsockopt_raw(r, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq)
            .map_err(ctx("PACKET_ADD_MEMBERSHIP"))?;
        Ok(s)
    }

    /// The interface index the socket is bound to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Receives up to `batch.capacity()` frames into `batch`, which is cleared first; every
    /// frame gets ingress `port`. GSO super-frames become their segments (several slots);
    /// frames that cannot be forwarded (cut short, bad offload metadata) are left out and
    /// counted. A frame that needs more slots than the batch has left stays in the ring for
    /// the next call. Returns `Ok` with zero frames when nothing is waiting.
    pub fn recv_batch(&mut self, port: PortId, batch: &mut Batch) -> io::Result<RecvStats> {
        batch.clear();
        let Some(mut side) = self.side.take() else {
            return self.recv_append(port, batch);
        };
        // A pair: each socket goes first every other call, so that a GSO frame that needs
        // more of the batch than the other left waits one call at most.
        self.side_first = !self.side_first;
        let r = if self.side_first {
            side.recv_append(port, batch).and_then(|mut st| {
                st.add(&self.recv_append(port, batch)?);
                Ok(st)
            })
        } else {
            self.recv_append(port, batch).and_then(|mut st| {
                st.add(&side.recv_append(port, batch)?);
                Ok(st)
            })
        };
        self.side = Some(side);
        r
    }

    /// [`PacketSocket::recv_batch`] into what is left of `batch`, after the frames already in
    /// it (a VM port's second socket, [`Protocols`]).
    pub fn recv_append(&mut self, port: PortId, batch: &mut Batch) -> io::Result<RecvStats> {
        let mut stats = RecvStats::default();
        let start = batch.len();
        let Some(ring) = self.ring.as_mut() else {
            return Ok(stats);
        };
        let fd = self.fd.as_raw_fd();
        let slots = batch.slots_mut();
        let cap = slots.len().min(MAX_RECV_BATCH);
        let mut n = start;
        while n < cap {
            let i = ring.head;
            let status = ring.status(i).load(Ordering::Acquire);
            if status & libc::TP_STATUS_USER == 0 {
                break;
            }
            let slot = ring.slot(i);
            // SAFETY: the slot starts with a tpacket2_hdr (the ring was set up as TPACKET_V2)
            // and is at least RING_FRAME_SIZE bytes; read_unaligned copies it out.
            let slot_size = ring.frame_size;
            let h: libc::tpacket2_hdr = unsafe { std::ptr::read_unaligned(slot.as_ptr().cast()) };
            let mac = usize::from(h.tp_mac);
            let snap = h.tp_snaplen as usize;
            let wire_len = h.tp_len as usize;
            let in_slot = mac >= VNET_HDR_LEN && mac + snap <= slot_size;
            if status & libc::TP_STATUS_COPY != 0 {
                // The whole frame waits on the socket queue, in ring order.
                if in_slot && n > 0 {
                    let mut vb = [0u8; VNET_HDR_LEN];
                    vb.copy_from_slice(&slot[mac - VNET_HDR_LEN..mac]);
                    let need = slots_needed(&VnetHdr::parse(&vb), wire_len);
                    if need > cap - n {
                        break; // next call, with an empty batch
                    }
                }
                match recv_copy(fd, &mut self.copy_buf) {
                    Ok(Some(len)) => {
                        let mut vb = [0u8; VNET_HDR_LEN];
                        vb.copy_from_slice(&self.copy_buf[..VNET_HDR_LEN]);
                        let hdr = VnetHdr::parse(&vb);
                        let frame = &self.copy_buf[VNET_HDR_LEN..VNET_HDR_LEN + len];
                        n += deliver(frame, &hdr, port, &mut slots[n..cap], &mut stats);
                    }
                    Ok(None) => stats.truncated += 1,
                    Err(e) => {
                        ring.release(i);
                        ring.head = (i + 1) % ring.slots;
                        batch.set_len(n);
                        return Err(e);
                    }
                }
            } else if !in_slot || snap < wire_len {
                stats.truncated += 1;
            } else {
                let mut vb = [0u8; VNET_HDR_LEN];
                vb.copy_from_slice(&slot[mac - VNET_HDR_LEN..mac]);
                let hdr = VnetHdr::parse(&vb);
                if slots_needed(&hdr, wire_len) > cap - n && n > 0 {
                    break;
                }
                n += deliver(
                    &slot[mac..mac + snap],
                    &hdr,
                    port,
                    &mut slots[n..cap],
                    &mut stats,
                );
            }
            ring.release(i);
            ring.head = (i + 1) % ring.slots;
        }
        batch.set_len(n);
        stats.frames = n - start;
        Ok(stats)
    }

    /// Whether the receive ring holds no frame now (no system call: the next slot's status).
    pub fn rx_empty(&self) -> bool {
        self.ring.as_ref().is_none_or(|ring| {
            ring.status(ring.head).load(Ordering::Acquire) & libc::TP_STATUS_USER == 0
        })
    }

    /// Whether a frame of `len` bytes fits the transmit queue now (otherwise flush first).
    pub fn has_tx_room(&self, len: usize) -> bool {
        self.tx.has_room(len)
    }

    /// Frames queued and not yet handed to the kernel.
    pub fn tx_pending(&self) -> usize {
        self.tx.pending()
    }

    /// Queues one Ethernet frame for the next [`flush`](Self::flush) (a copy; no system call).
    /// `false` if the queue is full (flush first).
    #[inline]
    pub fn queue(&mut self, frame: &[u8]) -> bool {
        self.tx.push(frame)
    }

    /// Sends everything queued, `SEND_CHUNK` frames per `sendmmsg`. On the first frame the
    /// kernel refuses, copies it into `failed`, takes it off the queue and returns why; the
    /// frames after it stay queued for the next call. `Ok(())` once the queue is empty.
    pub fn flush(&mut self, failed: &mut PacketBuf) -> Result<(), SendFailure> {
        static ZERO_HDR: [u8; VNET_HDR_LEN] = [0u8; VNET_HDR_LEN];
        while self.tx.pending() > 0 {
            let first = self.tx.next;
            let n = self.tx.pending().min(SEND_CHUNK);
            // SAFETY: iovec and mmsghdr are plain C structs; all-zero is valid and every
            // entry used below is filled in first.
            let mut iovs: [libc::iovec; 2 * SEND_CHUNK] = unsafe { mem::zeroed() };
            // SAFETY: as above.
            let mut msgs: [libc::mmsghdr; SEND_CHUNK] = unsafe { mem::zeroed() };
            for k in 0..n {
                let f = self.tx.frame(first + k);
                iovs[2 * k] = libc::iovec {
                    iov_base: ZERO_HDR.as_ptr() as *mut libc::c_void,
                    iov_len: VNET_HDR_LEN,
                };
                iovs[2 * k + 1] = libc::iovec {
                    iov_base: f.as_ptr() as *mut libc::c_void,
                    iov_len: f.len(),
                };
                msgs[k].msg_hdr.msg_iov = &mut iovs[2 * k];
                msgs[k].msg_hdr.msg_iovlen = 2;
            }
            // SAFETY: `msgs[..n]` point at `iovs[..2n]`, which point at the zero header and at
            // frames in the arena; all live across the call and the kernel only reads them.
            let r = unsafe {
                libc::sendmmsg(
                    self.fd.as_raw_fd(),
                    msgs.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // The first frame of the chunk failed.
                let _ = failed.set_data(self.tx.frame(first));
                self.tx.next += 1;
                self.tx.reset_if_done();
                return Err(SendFailure(e));
            }
            self.tx.next += r as usize;
            if r == 0 {
                // Nothing sent and no error: treat as a refusal of the first frame.
                let _ = failed.set_data(self.tx.frame(first));
                self.tx.next += 1;
                self.tx.reset_if_done();
                return Err(SendFailure(io::Error::from_raw_os_error(libc::ENOBUFS)));
            }
        }
        self.tx.reset_if_done();
        Ok(())
    }

    /// The frames queued and not yet handed to the kernel, oldest first.
    pub fn queued_frames(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (self.tx.next..self.tx.frames.len()).map(|i| self.tx.frame(i))
    }

    /// Drops everything queued (the port is detached); returns how many frames that was.
    pub fn discard_queued(&mut self) -> usize {
        let n = self.tx.pending();
        self.tx.next = self.tx.frames.len();
        self.tx.reset_if_done();
        n
    }

    /// Reads `PACKET_STATISTICS` (which resets on read) into the socket's running counts.
    fn read_kernel_stats(&self) -> io::Result<()> {
        // SAFETY: tpacket_stats is a plain C struct of two u32; all-zero is valid.
        let mut st: libc::tpacket_stats = unsafe { mem::zeroed() };
        let mut len = mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `st` is a valid tpacket_stats and `len` its exact size; the kernel writes at
        // most `len` bytes.
        cvt(unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        })?;
        // tp_packets includes the drops.
        self.landed
            .set(self.landed.get() + u64::from(st.tp_packets));
        self.unreported_drops
            .set(self.unreported_drops.get() + u64::from(st.tp_drops));
        Ok(())
    }

    /// Frames the kernel dropped because the receive ring was full since the last call.
    pub fn take_ring_drops(&self) -> io::Result<u64> {
        self.read_kernel_stats()?;
        let own = self.unreported_drops.replace(0);
        let side = match &self.side {
            Some(s) => s.take_ring_drops()?,
            None => 0,
        };
        Ok(own + side)
    }

    /// Every frame that reached this socket since it was opened (into the ring, the socket
    /// queue, or dropped for a full ring); not the second socket of a pair's.
    pub fn landed(&self) -> io::Result<u64> {
        self.read_kernel_stats()?;
        Ok(self.landed.get())
    }

    /// The interface's MTU (`SIOCGIFMTU`), if it still exists.
    pub fn interface_mtu(&self) -> io::Result<u32> {
        interface_mtu(self.fd.as_raw_fd(), self.ifindex)
    }

    /// Whether the interface the socket is bound to is still here, up and running
    /// (`IFF_UP` and `IFF_RUNNING`): what a failed send asks before it blames the link.
    /// `Ok(false)` if no interface has that ifindex in this namespace any more.
    ///
    /// Two ioctls the kernel answers under RCU (`SIOCGIFNAME` by index, then `SIOCGIFFLAGS`
    /// by that name): no RTNL, so no wait behind the link change that made the send fail
    /// (a netns move holds RTNL for tens of milliseconds).
    pub fn link_running(&self) -> io::Result<bool> {
        link_running(self.fd.as_raw_fd(), self.ifindex)
    }

    /// Takes (and clears) the pending socket error, e.g. `ENETDOWN` after the interface went
    /// away.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        let mut v: libc::c_int = 0;
        let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `v` and `len` are valid for writes of the sizes given.
        cvt(unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        })?;
        Ok((v != 0).then(|| io::Error::from_raw_os_error(v)))
    }
}

/// Ring slots a frame will take in the batch: its GSO segment count (an upper bound from the
/// lengths; the segmenter validates), 1 for a plain frame.
fn slots_needed(hdr: &VnetHdr, wire_len: usize) -> usize {
    if hdr.gso_type == VIRTIO_NET_HDR_GSO_NONE || hdr.gso_size == 0 {
        return 1;
    }
    let payload = wire_len.saturating_sub(usize::from(hdr.hdr_len));
    payload.div_ceil(usize::from(hdr.gso_size)).max(1)
}

/// Reads the next frame of the socket queue (one that did not fit a ring slot) into `buf`:
/// `virtio_net_hdr` then the frame. `Ok(Some(frame length))`; `Ok(None)` if none was queued
/// (the kernel could not keep the copy) or it was longer than `buf`.
fn recv_copy(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        // SAFETY: `buf` is a live, exclusively borrowed buffer of the length passed; the
        // kernel writes at most that many bytes (MSG_TRUNC only changes the return value).
        let r = unsafe {
            libc::recv(
                fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => Ok(None),
                _ => Err(e),
            };
        }
        let total = r as usize;
        if total > buf.len() || total < VNET_HDR_LEN {
            return Ok(None);
        }
        return Ok(Some(total - VNET_HDR_LEN));
    }
}

/// Puts one received frame into `slots` (a GSO super-frame as its segments, several slots);
/// returns how many slots it took (0: dropped and counted).
fn deliver(
    frame: &[u8],
    hdr: &VnetHdr,
    port: PortId,
    slots: &mut [PacketBuf],
    stats: &mut RecvStats,
) -> usize {
    if hdr.gso_type != VIRTIO_NET_HDR_GSO_NONE {
        // Each segment is written straight into its batch slot.
        let mut seg = match gso::Segmenter::new(frame, hdr) {
            Ok(s) if s.segment_count() <= slots.len() => s,
            _ => {
                stats.gso_bad += 1;
                return 0;
            }
        };
        let mut used = 0usize;
        while let Some(slot) = slots.get_mut(used) {
            match seg.write_next(slot.receive_area()) {
                Ok(Some(len)) if slot.set_received_len(len).is_ok() => {
                    slot.ingress = port;
                    used += 1;
                }
                Ok(None) => break,
                _ => {
                    stats.gso_bad += 1;
                    return 0;
                }
            }
        }
        stats.gso += 1;
        stats.gso_segments += used as u64;
        return used;
    }
    let Some(slot) = slots.first_mut() else {
        return 0;
    };
    if frame.len() > BUF_CAPACITY || slot.set_data(frame).is_err() {
        stats.truncated += 1;
        return 0;
    }
    if hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
        if !complete_checksum(
            slot.data_mut(),
            usize::from(hdr.csum_start),
            usize::from(hdr.csum_offset),
        ) {
            stats.bad_csum_meta += 1;
            return 0;
        }
        stats.csum_completed += 1;
    }
    slot.ingress = port;
    1
}

/// Whether interface `ifindex` is here, up and running (`IFF_UP` and `IFF_RUNNING`), asked
/// through any socket `fd` of its namespace: `SIOCGIFNAME` by index, then `SIOCGIFFLAGS`, both
/// under RCU (no RTNL). `Ok(false)` if no interface has that ifindex.
pub fn link_running(fd: RawFd, ifindex: u32) -> io::Result<bool> {
    let index = libc::c_int::try_from(ifindex)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ifindex out of range"))?;
    // SAFETY: ifreq is a plain C struct (name array and a union of integers, arrays and
    // pointers); all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { mem::zeroed() };
    ifr.ifr_ifru.ifru_ifindex = index;
    // SAFETY: SIOCGIFNAME reads the ifindex from and writes the name into `ifr`, a valid
    // ifreq that lives across the call.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFNAME, &mut ifr) } < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENODEV) => Ok(false),
            _ => Err(e),
        };
    }
    // The name just read stays in `ifr_name` (it existed a moment ago; a name from the
    // config that no longer exists could make the kernel try to load a module for it).
    // SAFETY: SIOCGIFFLAGS reads the name from and writes the flags into `ifr`, a valid
    // ifreq that lives across the call.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr) } < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            // Renamed or removed between the two calls.
            Some(libc::ENODEV) => Ok(false),
            _ => Err(e),
        };
    }
    // SAFETY: SIOCGIFFLAGS succeeded, so the union holds the flags.
    let flags = libc::c_int::from(unsafe { ifr.ifr_ifru.ifru_flags });
    let want = libc::IFF_UP | libc::IFF_RUNNING;
    Ok(flags & want == want)
}

/// The MTU of interface `ifindex` in the calling thread's namespace, through a short-lived
/// datagram socket (for sockets that do not answer interface ioctls, such as AF_XDP).
pub fn interface_mtu_by_index(ifindex: u32) -> io::Result<u32> {
    // SAFETY: plain socket(2) call; the descriptor is checked and owned at once.
    let raw =
        cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    interface_mtu(fd.as_raw_fd(), ifindex)
}

/// The MTU of interface `ifindex` (`SIOCGIFNAME`, then `SIOCGIFMTU`), asked through `fd`.
pub fn interface_mtu(fd: RawFd, ifindex: u32) -> io::Result<u32> {
    let index = libc::c_int::try_from(ifindex)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ifindex out of range"))?;
    // SAFETY: ifreq is a plain C struct (a name and a union of integers); all-zero is valid.
    let mut ifr: libc::ifreq = unsafe { mem::zeroed() };
    ifr.ifr_ifru.ifru_ifindex = index;
    // SAFETY: SIOCGIFNAME reads the index and writes the name into `ifr`, which outlives the
    // call.
    cvt(unsafe { libc::ioctl(fd, libc::SIOCGIFNAME, &mut ifr) })?;
    // SAFETY: SIOCGIFMTU reads the name and writes the MTU into `ifr`.
    cvt(unsafe { libc::ioctl(fd, libc::SIOCGIFMTU, &mut ifr) })?;
    // SAFETY: SIOCGIFMTU filled the union's mtu member.
    let mtu = unsafe { ifr.ifr_ifru.ifru_mtu };
    Ok(u32::try_from(mtu).unwrap_or(0))
}

impl AsFd for PacketSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::time::{Duration, Instant};

    use super::*;

    /// A packet socket on `lo`, or `None` without CAP_NET_RAW (nothing to test then).
    fn on_lo() -> Option<PacketSocket> {
        match PacketSocket::open(1) {
            Ok(s) => Some(s),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => None,
            Err(e) => panic!("AF_PACKET socket on lo: {e}"),
        }
    }

    /// Receives until `want` frames containing `marker` arrived (or 5 s passed); returns the
    /// lengths of the frames that carry it, in order.
    fn collect(s: &mut PacketSocket, marker: &[u8], want: usize) -> Vec<usize> {
        let mut batch = Batch::new(MAX_RECV_BATCH);
        let mut got = Vec::new();
        let t0 = Instant::now();
        while got.len() < want && t0.elapsed() < Duration::from_secs(5) {
            let st = s.recv_batch(PortId(3), &mut batch).expect("recv");
            assert_eq!(st.frames, batch.len());
            for p in batch.packets() {
                assert_eq!(p.ingress, PortId(3));
                if p.data().windows(marker.len()).any(|w| w == marker) {
                    got.push(p.len());
                }
            }
            if batch.is_empty() {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        got
    }

    #[test]
    fn ring_and_socket_queue_keep_the_order() {
        let Some(mut s) = on_lo() else { return };
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let dst = rx.local_addr().expect("addr");
        let marker = b"srmig-ring-test-";
        // Small frames stay in the ring; every fourth is 5000 bytes (lo's MTU is 64 KiB) and
        // takes the socket queue.
        let mut sizes = Vec::new();
        for k in 0..600usize {
            let size = if k % 4 == 3 { 5000 } else { 100 };
            let mut payload = vec![0u8; size];
            payload[..marker.len()].copy_from_slice(marker);
            payload[marker.len()..marker.len() + 8].copy_from_slice(&(k as u64).to_be_bytes());
            tx.send_to(&payload, dst).expect("send");
            sizes.push(size + 14 + 20 + 8);
        }
        let got = collect(&mut s, marker, sizes.len());
        assert_eq!(got, sizes, "every frame once, in order, big ones whole");
    }

    #[test]
    fn queued_frames_leave_in_one_flush() {
        let Some(mut s) = on_lo() else { return };
        let marker = b"srmig-flush-test";
        let mut failed = PacketBuf::new();
        let mut want = Vec::new();
        for k in 0..300usize {
            // An Ethernet frame to a made-up EtherType: lo carries it back to us as received.
            let len = 60 + (k % 7) * 200;
            let mut f = vec![0u8; len];
            f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
            f[14..14 + marker.len()].copy_from_slice(marker);
            assert!(s.has_tx_room(f.len()));
            assert!(s.queue(&f));
            want.push(len);
        }
        assert_eq!(s.tx_pending(), 300);
        s.flush(&mut failed).expect("flush");
        assert_eq!(s.tx_pending(), 0);
        let got = collect(&mut s, marker, want.len());
        assert_eq!(got, want);
        assert_eq!(s.take_ring_drops().expect("stats"), 0);
        assert_eq!(s.interface_mtu().expect("mtu"), 65536);
    }

    #[test]
    fn a_refused_frame_is_handed_back_and_the_rest_stay_queued() {
        let Some(mut s) = on_lo() else { return };
        let mut failed = PacketBuf::new();
        let ok = vec![0u8; 60];
        // Shorter than an Ethernet header: the kernel refuses it (EINVAL).
        let runt = vec![0xeeu8; 4];
        assert!(s.queue(&ok));
        assert!(s.queue(&runt));
        assert!(s.queue(&ok));
        let e = s.flush(&mut failed).expect_err("the runt is refused");
        assert_eq!(failed.data(), &runt[..], "the refused frame is handed back");
        assert!(e.0.raw_os_error().is_some(), "{:?}", e.0);
        assert_eq!(s.tx_pending(), 1, "the frame after it is still queued");
        s.flush(&mut failed).expect("the rest goes");
        assert_eq!(s.discard_queued(), 0);
    }

    #[test]
    fn ring_slots_hold_a_whole_frame_of_the_mtu() {
        let small = RingGeometry::for_mtu(None);
        assert_eq!((small.frame_size, small.len()), (2048, 8 << 20));
        assert_eq!(RingGeometry::for_mtu(Some(1500)), small);
        for mtu in [1500u32, 4000, 9000, 9216, 65536] {
            let g = RingGeometry::for_mtu(Some(mtu));
            assert!(g.frame_size.is_power_of_two() && g.frame_size >= 2048);
            assert!(
                g.frame_size >= (mtu.min(9216) as usize) + RING_SLOT_OVERHEAD,
                "{mtu}"
            );
            assert_eq!(g.block_size % g.frame_size, 0);
            assert_eq!(g.block_size % 4096, 0);
            assert!(g.len() / g.frame_size >= RING_MIN_SLOTS);
            assert!(g.len() <= 16 << 20, "{mtu}: {g:?}");
        }
        assert_eq!(RingGeometry::for_mtu(Some(9216)).frame_size, 16384);
    }

    #[test]
    fn slot_estimate_for_gso_frames() {
        let mut h = VnetHdr {
            flags: 0,
            gso_type: VIRTIO_NET_HDR_GSO_NONE,
            hdr_len: 0,
            gso_size: 0,
            csum_start: 0,
            csum_offset: 0,
        };
        assert_eq!(slots_needed(&h, 9000), 1);
        h.gso_type = 4;
        h.hdr_len = 74;
        h.gso_size = 1448;
        assert_eq!(slots_needed(&h, 74 + 3 * 1448 + 100), 4);
        assert_eq!(slots_needed(&h, 74), 1);
        h.gso_size = 0;
        assert_eq!(slots_needed(&h, 60_000), 1);
    }

    #[test]
    fn loopback_is_running_and_a_missing_ifindex_is_not() {
        let Some(lo) = on_lo() else { return };
        assert!(lo.link_running().expect("lo flags"));
        // A socket whose ifindex names no interface (only the ioctls run).
        let gone = PacketSocket {
            fd: lo.fd.try_clone().expect("dup"),
            ifindex: 0x7fff_fff0,
            ring: None,
            tx: TxQueue::new(),
            copy_buf: Vec::new().into_boxed_slice(),
            side: None,
            side_first: false,
            landed: std::cell::Cell::new(0),
            unreported_drops: std::cell::Cell::new(0),
        };
        assert!(!gone.link_running().expect("missing ifindex"));
    }

    #[test]
    fn a_vm_socket_pair_takes_each_frame_once() {
        let Some(mut tx) = on_lo() else { return };
        let mut pair = PacketSocket::open_vm_pair(1, None).expect("socket pair on lo");
        assert!(pair.side_fd().is_some());
        let marker = b"srmig-pair-test-7";
        let frame = |ethertype: u16| {
            let mut f = vec![0u8; 12];
            f.extend_from_slice(&ethertype.to_be_bytes());
            f.extend_from_slice(&[0x60, 0, 0, 0, 0, 20, 59, 64]);
            f.extend_from_slice(&[0u8; 32]);
            f.extend_from_slice(marker);
            f
        };
        // IPv6 (the first socket) and a local experimental EtherType (the second).
        assert!(tx.queue(&frame(0x86dd)));
        assert!(tx.queue(&frame(0x88b5)));
        let mut failed = PacketBuf::new();
        tx.flush(&mut failed).expect("send on lo");
        let got = collect(&mut pair, marker, 2);
        assert_eq!(got.len(), 2, "both frames, each once: {got:?}");
        std::thread::sleep(Duration::from_millis(20));
        assert!(collect(&mut pair, marker, 1).is_empty(), "no copy");
        assert!(pair.rx_empty());
    }
}
