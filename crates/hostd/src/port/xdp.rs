//! An AF_XDP socket on queue 0 of one interface: an alternative to [`super::packet`] for a
//! dataplane port, in copy mode.
//!
//! ## Why our own layer over `libc`
//! Debian bookworm ships libbpf 1.1 and libxdp 1.3; linking them (directly or through the
//! xsk-rs wrappers) adds a C build to the workspace, and libxdp attaches through its
//! multi-program dispatcher, which srmigd has no use for: it owns its interfaces. xdpilone
//! is pure Rust but EUPL-licensed. What srmigd needs is small: one UMEM, four rings, an
//! `XSKMAP` and a six-instruction program ([`super::bpf::xsk_program`]), so it is written
//! here against the kernel's uapi (`linux/if_xdp.h`, `linux/bpf.h`). The `libc` crate has the
//! AF_XDP structs and constants (`sockaddr_xdp`, `xdp_umem_reg`, `xdp_mmap_offsets`,
//! `xdp_desc`, `xdp_statistics`, `XDP_*`, `SOL_XDP`, `AF_XDP`); the `bpf(2)` attributes and
//! the rtnetlink `IFLA_XDP` attributes are defined in [`super::bpf`].
//!
//! ## Layout
//! - UMEM: one anonymous mapping of `frames` frames of [`FRAME_SIZE`] bytes
//!   (`MADV_DONTFORK`: a child started by srmigd never shares it). The first
//!   `min(frames / 2, ring_size)` frames receive: they are all in the fill ring or the RX
//!   ring or being copied by [`XdpSocket::recv_batch`], which puts each back into the fill
//!   ring right after copying it (so the fill ring always has room). The rest transmit: a
//!   free list, taken by [`XdpSocket::send`], given back by the completion ring.
//! - Rings: fill, completion, RX, TX of `ring_size` entries each, mapped at the offsets of
//!   `XDP_MMAP_OFFSETS`. Producer and consumer indices are read with `Acquire` and published
//!   with `Release` (as libxdp's `xsk.h` does); each side keeps a cached copy of the other's.
//! - Frames are at most [`XdpSocket::max_frame`] = 4096 - 256 = 3840 bytes (an MTU of 3826)
//!   either way: copy mode needs no multi-buffer (`XDP_USE_SG`) handling, and larger MTUs
//!   (jumbo frames) stay on AF_PACKET; the kernel drops and counts longer received frames.
//! - Bound with `XDP_COPY | XDP_USE_NEED_WAKEUP` to queue 0. Interfaces with more than one
//!   receive queue are refused ([`XdpError::MultiQueue`]): frames on other queues would go up
//!   the host's stack, not to srmigd.
//!
//! ## Attachment, and nothing left behind
//! The program is attached with a BPF link (`BPF_LINK_CREATE`), native mode first, generic
//! mode if the driver refuses. The kernel detaches a link's program when the link's last fd
//! closes, and every fd closes when the process dies, SIGKILL included: an exited srmigd
//! leaves no program on the interface. Dropping [`XdpSocket`] closes the link first, then
//! the socket, then unmaps the UMEM.
//!
//! Before attaching, the interface's XDP programs are read (rtnetlink `IFLA_XDP`): a program
//! named [`PROG_NAME`] attached without a link (by an older srmigd that attached through
//! netlink) is detached and logged; a program of any other name is someone else's and is
//! never touched ([`XdpError::ForeignProgram`]); one of ours held by a live link (another
//! srmigd) is [`XdpError::InUse`]. The caller falls back to AF_PACKET on these errors.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;
use std::sync::atomic::{AtomicU32, Ordering};

use srmig_dataplane::{Batch, PortId, BUF_CAPACITY};

use super::bpf::{self, XdpMode, PROG_NAME};
use super::fastpath::FastPath;
use super::RecvStats;

pub use super::bpf::attached_xdp_prog;

/// Size of one UMEM frame.
pub const FRAME_SIZE: usize = 4096;
/// `XDP_PACKET_HEADROOM`: where a received frame starts in its UMEM frame (copy mode).
pub const XDP_PACKET_HEADROOM: usize = 256;
/// How many times [`XdpSocket::flush`] kicks the kernel at most (copy mode sends at most 32
/// frames per kick).
const MAX_KICKS: usize = 128;

/// Sizes of the socket's UMEM and rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XdpOptions {
    /// Entries of each of the four rings (a power of two).
    pub ring_size: u32,
    /// UMEM frames of [`FRAME_SIZE`] bytes (half receive, at most `ring_size`; the rest send).
    pub frames: u32,
    /// Load the fast path's program ([`super::fastpath`]) instead of the plain one. If it
    /// cannot be loaded, the plain one is, with a warning.
    pub fast_path: bool,
}

impl Default for XdpOptions {
    /// 4096-entry rings, 8192 frames (32 MiB): 4096 frames (~13 ms at 0.3 Mpps) absorb a
    /// scheduling gap of srmigd's thread before the kernel drops (node.toml's
    /// `[io] xdp_ring_size` sets other sizes, with twice as many frames).
    fn default() -> XdpOptions {
        XdpOptions {
            ring_size: super::IoConfig::DEFAULT_XDP_RING_SIZE,
            frames: 2 * super::IoConfig::DEFAULT_XDP_RING_SIZE,
            fast_path: false,
        }
    }
}

/// Why an AF_XDP socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// The interface has several receive queues; only queue 0 would reach srmigd.
    #[error(
        "interface {ifname} has {queues} receive queues; the AF_XDP port binds queue 0 only \
         (use AF_PACKET, or reduce the queues to one with ethtool -L)"
    )]
    MultiQueue {
        /// Interface name.
        ifname: String,
        /// Receive queues found.
        queues: u32,
    },
    /// Another XDP program is attached to the interface; it is left in place.
    #[error("interface {ifname} already has XDP program {prog_id} named {name:?}, not srmigd's")]
    ForeignProgram {
        /// Interface name.
        ifname: String,
        /// The program's id.
        prog_id: u32,
        /// The program's name.
        name: String,
    },
    /// srmigd's program is attached through a BPF link of a running process.
    #[error(
        "interface {ifname} has srmigd's XDP program {prog_id} attached by a running process \
         (another srmigd?)"
    )]
    InUse {
        /// Interface name.
        ifname: String,
        /// The program's id.
        prog_id: u32,
    },
    /// The kernel or the interface does not support AF_XDP or BPF links.
    #[error("AF_XDP is not supported here")]
    Unsupported(#[source] io::Error),
    /// The kernel refused the program.
    #[error(transparent)]
    Load(#[from] bpf::ProgLoadError),
    /// Invalid [`XdpOptions`].
    #[error("invalid AF_XDP options: {0}")]
    Options(&'static str),
    /// A system call failed.
    #[error("{what} failed")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> XdpError {
    move |source| match source.raw_os_error() {
        Some(libc::EAFNOSUPPORT | libc::EOPNOTSUPP | libc::ENOSYS | libc::EPROTONOSUPPORT) => {
            XdpError::Unsupported(source)
        }
        _ => XdpError::Io { what, source },
    }
}

/// Why [`XdpSocket::send`] did not queue a frame (the caller counts a drop).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum XdpTxError {
    /// No transmit frame or TX ring slot is free, even after reaping completions.
    #[error("no free AF_XDP transmit frame")]
    Full,
    /// The frame is longer than [`XdpSocket::max_frame`].
    #[error("frame of {len} bytes is longer than the AF_XDP limit of {max} bytes")]
    TooLong {
        /// Length of the frame.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// The socket's `XDP_STATISTICS`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpStats {
    /// Frames dropped for other reasons than a full RX ring or an empty fill ring.
    pub rx_dropped: u64,
    /// Invalid descriptors in the fill ring.
    pub rx_invalid_descs: u64,
    /// Invalid descriptors in the TX ring.
    pub tx_invalid_descs: u64,
    /// Frames dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Frames dropped because the fill ring was empty.
    pub rx_fill_ring_empty_descs: u64,
    /// Kicks that found the TX ring empty.
    pub tx_ring_empty_descs: u64,
}

// ------------------------------------------------------------------------------------------
// Ring index arithmetic (pure)

/// Free entries of a producer ring of `size` entries with indices `prod` and `cons`
/// (free-running `u32` counters).
fn producer_free(size: u32, prod: u32, cons: u32) -> u32 {
    size.wrapping_sub(prod.wrapping_sub(cons))
}

/// Filled entries of a consumer ring with indices `prod` and `cons`.
fn consumer_avail(prod: u32, cons: u32) -> u32 {
    prod.wrapping_sub(cons)
}

// ------------------------------------------------------------------------------------------
// Mappings and rings

/// A memory mapping, unmapped on drop.
#[derive(Debug)]
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    /// `mmap(NULL, len, READ|WRITE, flags, fd, offset)`.
    fn new(len: usize, flags: libc::c_int, fd: RawFd, offset: libc::off_t) -> io::Result<Mapping> {
        // SAFETY: a fresh mapping at an address of the kernel's choosing; nothing aliases it.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                offset,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { ptr: p.cast(), len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` is a mapping this struct created and owns; nothing borrows it
        // past the struct's life.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// One of the four rings, as mapped from the socket.
#[derive(Debug)]
struct Ring {
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    descs: *mut u8,
    size: u32,
    mask: u32,
    /// Our index (producer of fill/TX, consumer of RX/completion); a new ring's indices are 0.
    local: u32,
    /// The kernel's index as last read (consumer of fill/TX, producer of RX/completion).
    cached: u32,
    _map: Mapping,
}

impl Ring {
    /// Maps ring `pgoff` of `fd` with `size` entries of `entry` bytes at offsets `off`.
    fn map(
        fd: RawFd,
        pgoff: libc::off_t,
        off: &libc::xdp_ring_offset,
        size: u32,
        entry: usize,
    ) -> io::Result<Ring> {
        let len = usize::try_from(off.desc).map_err(io::Error::other)? + size as usize * entry;
        let map = Mapping::new(len, libc::MAP_SHARED | libc::MAP_POPULATE, fd, pgoff)?;
        let at = |o: u64| -> io::Result<*mut u8> {
            let o = usize::try_from(o).map_err(io::Error::other)?;
            if o >= len {
                return Err(io::Error::other("ring offset outside the mapping"));
            }
            // SAFETY: `o` is inside the mapping just checked.
            Ok(unsafe { map.ptr.add(o) })
        };
        let producer = at(off.producer)?.cast::<AtomicU32>();
        let consumer = at(off.consumer)?.cast::<AtomicU32>();
        let flags = at(off.flags)?.cast::<AtomicU32>();
        let descs = at(off.desc)?;
        Ok(Ring {
            producer,
            consumer,
            flags,
            descs,
            size,
            mask: size - 1,
            local: 0,
            cached: 0,
            _map: map,
        })
    }

    fn kernel_consumer(&self) -> u32 {
        // SAFETY: `consumer` points into the live mapping (see `map`).
        unsafe { (*self.consumer).load(Ordering::Acquire) }
    }

    fn kernel_producer(&self) -> u32 {
        // SAFETY: `producer` points into the live mapping (see `map`).
        unsafe { (*self.producer).load(Ordering::Acquire) }
    }

    fn needs_wakeup(&self) -> bool {
        // SAFETY: `flags` points into the live mapping (see `map`).
        unsafe { (*self.flags).load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0 }
    }

    // Producer side (fill, TX): `local` = our producer, `cached` = kernel consumer.

    /// Free slots, refreshing the kernel's consumer if fewer than `want` seem free.
    fn prod_free(&mut self, want: u32) -> u32 {
        let free = producer_free(self.size, self.local, self.cached);
        if free >= want {
            return free;
        }
        self.cached = self.kernel_consumer();
        producer_free(self.size, self.local, self.cached)
    }

    /// Publishes everything written up to `local`.
    fn prod_submit(&self) {
        // SAFETY: `producer` points into the live mapping; Release orders the descriptor
        // writes before the index the kernel reads.
        unsafe { (*self.producer).store(self.local, Ordering::Release) }
    }

    /// Whether the kernel has consumed everything produced.
    fn prod_drained(&mut self) -> bool {
        self.cached = self.kernel_consumer();
        self.cached == self.local
    }

    // Consumer side (RX, completion): `local` = our consumer, `cached` = kernel producer.

    fn cons_avail(&mut self) -> u32 {
        let n = consumer_avail(self.cached, self.local);
        if n > 0 {
            return n;
        }
        self.cached = self.kernel_producer();
        consumer_avail(self.cached, self.local)
    }

    fn cons_release(&self) {
        // SAFETY: `consumer` points into the live mapping; Release orders our reads of the
        // descriptors before the kernel may overwrite them.
        unsafe { (*self.consumer).store(self.local, Ordering::Release) }
    }

    /// Address-ring entry `idx` (fill, completion).
    fn addr_slot(&self, idx: u32) -> *mut u64 {
        // SAFETY: `idx & mask` < size, and the mapping holds `size` u64 entries at `descs`.
        unsafe { self.descs.cast::<u64>().add((idx & self.mask) as usize) }
    }

    /// Descriptor-ring entry `idx` (RX, TX).
    fn desc_slot(&self, idx: u32) -> *mut libc::xdp_desc {
        // SAFETY: `idx & mask` < size, and the mapping holds `size` xdp_desc at `descs`.
        unsafe {
            self.descs
                .cast::<libc::xdp_desc>()
                .add((idx & self.mask) as usize)
        }
    }
}

// ------------------------------------------------------------------------------------------
// The socket

/// An AF_XDP socket bound to queue 0 of an interface, with its UMEM, rings, and the XDP
/// program that feeds it (attached by a BPF link: dropping the socket detaches it).
#[derive(Debug)]
pub struct XdpSocket {
    // Field order is drop order: the link (program detached) first, then the program and the
    // map, the rings, the socket, the UMEM last.
    _link: OwnedFd,
    _prog: Option<OwnedFd>,
    /// The fast path's program and maps, when it runs ([`XdpOptions::fast_path`]).
    fast: Option<FastPath>,
    _map: OwnedFd,
    rx: Ring,
    tx: Ring,
    fill: Ring,
    comp: Ring,
    fd: OwnedFd,
    /// An AF_INET datagram socket for interface ioctls (AF_XDP sockets refuse them).
    ctl: OwnedFd,
    umem: Mapping,
    /// Free transmit frames (UMEM offsets).
    tx_free: Vec<u64>,
    ifindex: u32,
    mode: XdpMode,
    /// Whether received TCP/UDP checksums may be partial and are completed
    /// ([`XdpSocket::set_complete_partial`]).
    complete_partial: bool,
    /// Kernel receive drops already reported by [`XdpSocket::take_ring_drops`].
    drops_seen: Cell<u64>,
}

// SAFETY: the raw pointers point into mappings owned by the socket and reached only through
// `&mut self` (or `&self` for atomic loads); moving the whole socket to another thread moves
// sole access with it.
unsafe impl Send for XdpSocket {}

fn ring_setsockopt(fd: RawFd, name: libc::c_int, size: u32) -> io::Result<()> {
    // SAFETY: `size` is a u32 that lives across the call and its exact size is passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            name,
            (&size as *const u32).cast(),
            mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn new_socket(domain: libc::c_int, kind: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new socket that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl XdpSocket {
    /// Opens an AF_XDP socket on queue 0 of `ifindex` (`ifname` is for the queue count and
    /// the messages) and attaches srmigd's XDP program to the interface.
    pub fn open(ifindex: u32, ifname: &str, opts: &XdpOptions) -> Result<XdpSocket, XdpError> {
        if !opts.ring_size.is_power_of_two() || opts.ring_size < 64 {
            return Err(XdpError::Options(
                "ring_size must be a power of two, at least 64",
            ));
        }
        if opts.frames < 4 || opts.frames > (1 << 20) {
            return Err(XdpError::Options("frames must be between 4 and 1048576"));
        }
        let ctl = new_socket(libc::AF_INET, libc::SOCK_DGRAM).map_err(io_err("socket(AF_INET)"))?;
        if let Some(queues) = rx_queues(&ctl, ifindex, ifname).filter(|&q| q > 1) {
            return Err(XdpError::MultiQueue {
                ifname: ifname.to_owned(),
                queues,
            });
        }
        remove_stale_program(ifindex, ifname)?;

        let rx_frames = (opts.frames / 2).min(opts.ring_size);
        let tx_frames = opts.frames - rx_frames;
        let umem_len = opts.frames as usize * FRAME_SIZE;
        let umem = Mapping::new(
            umem_len,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
            -1,
            0,
        )
        .map_err(io_err("mmap of the UMEM"))?;
        // SAFETY: the UMEM mapping is ours; MADV_DONTFORK only changes what a fork inherits.
        unsafe {
            libc::madvise(umem.ptr.cast(), umem.len, libc::MADV_DONTFORK);
        }
        let fd = new_socket(libc::AF_XDP, libc::SOCK_RAW).map_err(io_err("socket(AF_XDP)"))?;
        let raw = fd.as_raw_fd();
        let reg = libc::xdp_umem_reg {
            addr: umem.ptr as u64,
            len: umem_len as u64,
            chunk_size: FRAME_SIZE as u32,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        // SAFETY: `reg` describes the UMEM mapping, which outlives the socket (dropped after
        // it); `reg` lives across the call and its exact size is passed.
        let r = unsafe {
            libc::setsockopt(
                raw,
                libc::SOL_XDP,
                libc::XDP_UMEM_REG,
                (&reg as *const libc::xdp_umem_reg).cast(),
                mem::size_of::<libc::xdp_umem_reg>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io_err("XDP_UMEM_REG")(io::Error::last_os_error()));
        }
        for name in [
            libc::XDP_UMEM_FILL_RING,
            libc::XDP_UMEM_COMPLETION_RING,
            libc::XDP_RX_RING,
            libc::XDP_TX_RING,
        ] {
            ring_setsockopt(raw, name, opts.ring_size).map_err(io_err("setting a ring size"))?;
        }
        // SAFETY: xdp_mmap_offsets is plain integers; all-zero is valid.
        let mut off: libc::xdp_mmap_offsets = unsafe { mem::zeroed() };
        let mut len = mem::size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
        // SAFETY: `off` and `len` are writable for the sizes given.
        let r = unsafe {
            libc::getsockopt(
                raw,
                libc::SOL_XDP,
                libc::XDP_MMAP_OFFSETS,
                (&mut off as *mut libc::xdp_mmap_offsets).cast(),
                &mut len,
            )
        };
        if r < 0 {
            return Err(io_err("XDP_MMAP_OFFSETS")(io::Error::last_os_error()));
        }
        if len as usize != mem::size_of::<libc::xdp_mmap_offsets>() {
            return Err(XdpError::Unsupported(io::Error::other(
                "kernel without ring flags (XDP_MMAP_OFFSETS v1)",
            )));
        }
        let n = opts.ring_size;
        let desc = mem::size_of::<libc::xdp_desc>();
        let rx = Ring::map(raw, libc::XDP_PGOFF_RX_RING, &off.rx, n, desc)
            .map_err(io_err("mmap of the RX ring"))?;
        let tx = Ring::map(raw, libc::XDP_PGOFF_TX_RING, &off.tx, n, desc)
            .map_err(io_err("mmap of the TX ring"))?;
        let fill = Ring::map(
            raw,
            libc::XDP_UMEM_PGOFF_FILL_RING as libc::off_t,
            &off.fr,
            n,
            8,
        )
        .map_err(io_err("mmap of the fill ring"))?;
        let comp = Ring::map(
            raw,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING as libc::off_t,
            &off.cr,
            n,
            8,
        )
        .map_err(io_err("mmap of the completion ring"))?;

        // SAFETY: sockaddr_xdp is plain integers; all-zero is valid.
        let mut sa: libc::sockaddr_xdp = unsafe { mem::zeroed() };
        sa.sxdp_family = libc::AF_XDP as u16;
        sa.sxdp_flags = libc::XDP_COPY | libc::XDP_USE_NEED_WAKEUP;
        sa.sxdp_ifindex = ifindex;
        sa.sxdp_queue_id = 0;
        // SAFETY: `sa` is a valid sockaddr_xdp and its exact size is passed.
        let r = unsafe {
            libc::bind(
                raw,
                (&sa as *const libc::sockaddr_xdp).cast(),
                mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io_err("bind(AF_XDP)")(io::Error::last_os_error()));
        }

        let map = bpf::create_xskmap(1).map_err(io_err("creating the XSKMAP"))?;
        let fd_value = u32::try_from(raw).map_err(|_| XdpError::Io {
            what: "socket fd",
            source: io::Error::from_raw_os_error(libc::EBADF),
        })?;
        bpf::map_update_u32(&map, 0, fd_value)
            .map_err(io_err("adding the socket to the XSKMAP"))?;
        let (prog, fast) = if opts.fast_path {
            match FastPath::load(&map, PROG_NAME, false) {
                Ok(f) => (None, Some(f)),
                Err(e) => {
                    tracing::warn!(interface = ifname, error = %e, "the XDP fast path could not be loaded; every frame goes through srmigd");
                    (Some(bpf::load_xsk_program(PROG_NAME, &map)?), None)
                }
            }
        } else {
            (Some(bpf::load_xsk_program(PROG_NAME, &map)?), None)
        };

        // Every receive frame goes to the fill ring before frames can arrive.
        let mut fill = fill;
        let free = fill.prod_free(rx_frames);
        debug_assert!(free >= rx_frames);
        for i in 0..rx_frames {
            let idx = fill.local.wrapping_add(i);
            // SAFETY: slot `idx` is free (rx_frames <= ring_size entries outstanding) and
            // ours to write until the producer index is published.
            unsafe { fill.addr_slot(idx).write(u64::from(i) * FRAME_SIZE as u64) };
        }
        fill.local = fill.local.wrapping_add(rx_frames);
        fill.prod_submit();

        let attached = match (&fast, &prog) {
            (Some(f), _) => f.prog(),
            (None, Some(p)) => p,
            (None, None) => return Err(XdpError::Options("no XDP program was loaded")),
        };
        let (link, mode) = attach(attached, ifindex, ifname)?;
        Ok(XdpSocket {
            _link: link,
            _prog: prog,
            fast,
            _map: map,
            rx,
            tx,
            fill,
            comp,
            fd,
            ctl,
            umem,
            tx_free: (rx_frames..rx_frames + tx_frames)
                .map(|i| u64::from(i) * FRAME_SIZE as u64)
                .collect(),
            ifindex,
            mode,
            complete_partial: false,
            drops_seen: Cell::new(0),
        })
    }

    /// The fast path, when it is loaded on this socket's interface.
    pub fn fast_path(&self) -> Option<&FastPath> {
        self.fast.as_ref()
    }

    /// The fast path, when it is loaded on this socket's interface.
    pub fn fast_path_mut(&mut self) -> Option<&mut FastPath> {
        self.fast.as_mut()
    }

    /// The interface index the socket is bound to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The socket's fd: poll it for `POLLIN`.
    pub fn rx_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Whether the program runs in the driver (native) or in the generic receive path.
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// Completes partial TCP/UDP checksums of received frames
    /// ([`srmig_wire::checksum::complete_partial`], counted as `csum_completed`). For an
    /// interface whose peer is a local kernel stack (a veth): such a stack leaves the checksum
    /// to "the hardware" (CHECKSUM_PARTIAL), and AF_XDP, unlike AF_PACKET's
    /// `virtio_net_hdr`, does not say so.
    pub fn set_complete_partial(&mut self, on: bool) {
        self.complete_partial = on;
    }

    /// The largest frame the socket carries either way: a UMEM frame minus
    /// `XDP_PACKET_HEADROOM` (3840 bytes, an MTU of 3826). The kernel drops longer received
    /// frames (counted in [`XdpStats::rx_dropped`]); [`send`](Self::send) refuses them.
    pub fn max_frame(&self) -> usize {
        FRAME_SIZE - XDP_PACKET_HEADROOM
    }

    /// Clears `batch` and copies up to `batch.capacity()` received frames into its slots
    /// (ingress `port`). A descriptor outside the UMEM or longer than [`BUF_CAPACITY`]
    /// (neither happens: frames are at most [`max_frame`](Self::max_frame)) is counted as
    /// truncated and dropped. Every frame goes back to the fill ring at once; the kernel is
    /// woken only if it asked (`need_wakeup`). No system call otherwise.
    pub fn recv_batch(&mut self, port: PortId, batch: &mut Batch) -> io::Result<RecvStats> {
        batch.clear();
        let slots = batch.slots_mut();
        let want = u32::try_from(slots.len()).unwrap_or(u32::MAX);
        let n = self.rx.cons_avail().min(want);
        let mut stats = RecvStats::default();
        let mut kept = 0;
        if n > 0 {
            // The fill ring has room for every receive frame (see the module doc).
            let fill_free = self.fill.prod_free(n);
            let n = n.min(fill_free);
            for i in 0..n {
                let idx = self.rx.local.wrapping_add(i);
                // SAFETY: entries between our consumer and the kernel's producer (read with
                // Acquire) are written by the kernel and ours until released.
                let d = unsafe { self.rx.desc_slot(idx).read() };
                let len = d.len as usize;
                let addr = d.addr as usize;
                if addr
                    .checked_add(len)
                    .is_some_and(|end| end <= self.umem.len)
                {
                    if len > BUF_CAPACITY {
                        stats.truncated += 1;
                    } else {
                        let slot = &mut slots[kept];
                        // SAFETY: `addr..addr+len` is inside the UMEM (checked) and the frame
                        // is ours until it goes back to the fill ring below.
                        let src =
                            unsafe { std::slice::from_raw_parts(self.umem.ptr.add(addr), len) };
                        slot.receive_area()[..len].copy_from_slice(src);
                        if slot.set_received_len(len).is_ok() {
                            slot.ingress = port;
                            if self.complete_partial && complete_partial_frame(slot.data_mut()) {
                                stats.csum_completed += 1;
                            }
                            kept += 1;
                        } else {
                            stats.truncated += 1;
                        }
                    }
                } else {
                    stats.truncated += 1;
                }
                let fidx = self.fill.local.wrapping_add(i);
                let frame = d.addr & !(FRAME_SIZE as u64 - 1);
                // SAFETY: the fill ring has at least `n` free slots (checked above).
                unsafe { self.fill.addr_slot(fidx).write(frame) };
            }
            self.rx.local = self.rx.local.wrapping_add(n);
            self.rx.cons_release();
            self.fill.local = self.fill.local.wrapping_add(n);
            self.fill.prod_submit();
        }
        if self.fill.needs_wakeup() {
            // SAFETY: a zero-length receive with a null buffer only wakes the kernel's fill
            // processing; nothing is written.
            let r = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    ptr::null_mut(),
                    0,
                    libc::MSG_DONTWAIT,
                    ptr::null_mut(),
                    ptr::null_mut(),
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if !matches!(
                    e.raw_os_error(),
                    Some(libc::EAGAIN | libc::EINTR | libc::EBUSY | libc::ENOBUFS)
                ) && kept == 0
                {
                    // (With frames in hand the batch is returned; the error recurs.)
                    return Err(e);
                }
            }
        }
        batch.set_len(kept);
        stats.frames = kept;
        Ok(stats)
    }

    /// Takes back transmit frames the kernel is done with.
    fn reap_completions(&mut self) {
        let n = self.comp.cons_avail();
        for i in 0..n {
            let idx = self.comp.local.wrapping_add(i);
            // SAFETY: entries up to the kernel's producer (read with Acquire) are ours.
            let addr = unsafe { self.comp.addr_slot(idx).read() };
            self.tx_free.push(addr & !(FRAME_SIZE as u64 - 1));
        }
        if n > 0 {
            self.comp.local = self.comp.local.wrapping_add(n);
            self.comp.cons_release();
        }
    }

    /// Copies `frame` into a free transmit frame and queues it on the TX ring (no system
    /// call; [`flush`](Self::flush) sends).
    pub fn send(&mut self, frame: &[u8]) -> Result<(), XdpTxError> {
        if frame.len() > self.max_frame() {
            return Err(XdpTxError::TooLong {
                len: frame.len(),
                max: self.max_frame(),
            });
        }
        if self.tx_free.is_empty() || self.tx.prod_free(1) == 0 {
            self.reap_completions();
        }
        if self.tx.prod_free(1) == 0 {
            return Err(XdpTxError::Full);
        }
        let Some(addr) = self.tx_free.pop() else {
            return Err(XdpTxError::Full);
        };
        let at = addr as usize;
        // SAFETY: `addr` is a transmit frame from the free list: inside the UMEM, FRAME_SIZE
        // bytes long (≥ frame.len()), and not in the kernel's hands.
        unsafe {
            ptr::copy_nonoverlapping(frame.as_ptr(), self.umem.ptr.add(at), frame.len());
        }
        let idx = self.tx.local;
        // SAFETY: the TX ring has a free slot at our producer index (checked above).
        unsafe {
            self.tx.desc_slot(idx).write(libc::xdp_desc {
                addr,
                len: frame.len() as u32,
                options: 0,
            })
        };
        self.tx.local = idx.wrapping_add(1);
        self.tx.prod_submit();
        Ok(())
    }

    /// Kicks the kernel to transmit what [`send`](Self::send) queued, then reaps
    /// completions. Copy mode sends at most 32 frames per kick: kicks until the TX ring is
    /// drained, at most [`MAX_KICKS`] times; `EAGAIN`, `EBUSY` and `ENOBUFS` are tolerated.
    pub fn flush(&mut self) -> io::Result<()> {
        let mut result = Ok(());
        for _ in 0..MAX_KICKS {
            if self.tx.prod_drained() || !self.tx.needs_wakeup() {
                break;
            }
            // SAFETY: a zero-length send with a null buffer only makes the kernel process the
            // TX ring; nothing is read from the buffer.
            let r = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    ptr::null(),
                    0,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::EINTR) => {}
                    _ => {
                        result = Err(e);
                        break;
                    }
                }
            }
        }
        self.reap_completions();
        result
    }

    /// The socket's `XDP_STATISTICS`.
    pub fn stats(&self) -> io::Result<XdpStats> {
        // SAFETY: xdp_statistics is plain integers; all-zero is valid.
        let mut s: libc::xdp_statistics = unsafe { mem::zeroed() };
        let mut len = mem::size_of::<libc::xdp_statistics>() as libc::socklen_t;
        // SAFETY: `s` and `len` are writable for the sizes given.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_XDP,
                libc::XDP_STATISTICS,
                (&mut s as *mut libc::xdp_statistics).cast(),
                &mut len,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(XdpStats {
            rx_dropped: s.rx_dropped,
            rx_invalid_descs: s.rx_invalid_descs,
            tx_invalid_descs: s.tx_invalid_descs,
            rx_ring_full: s.rx_ring_full,
            rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs,
            tx_ring_empty_descs: s.tx_ring_empty_descs,
        })
    }

    /// Frames queued by [`send`](Self::send) that the kernel has not taken from the TX ring
    /// yet (a [`flush`](Self::flush) is due while this is not zero).
    pub fn tx_pending(&self) -> usize {
        self.tx.local.wrapping_sub(self.tx.kernel_consumer()) as usize
    }

    /// Receive drops the kernel counted since the last call (`rx_dropped`, `rx_ring_full`,
    /// `rx_fill_ring_empty_descs` of [`stats`](Self::stats)): frames that never reached
    /// srmigd because it fell behind. A system call: for status and metrics.
    pub fn take_ring_drops(&self) -> io::Result<u64> {
        let s = self.stats()?;
        let total = s.rx_dropped + s.rx_ring_full + s.rx_fill_ring_empty_descs;
        let new = total.saturating_sub(self.drops_seen.get());
        self.drops_seen.set(total);
        Ok(new)
    }

    /// Whether the interface is still here, up and running (`IFF_UP` and `IFF_RUNNING`), as
    /// [`super::PacketSocket::link_running`] answers it: `SIOCGIFNAME` by index, then
    /// `SIOCGIFFLAGS`, both under RCU (no RTNL). `Ok(false)` if the ifindex is gone.
    pub fn link_running(&self) -> io::Result<bool> {
        super::packet::link_running(self.ctl.as_raw_fd(), self.ifindex)
    }
}

/// An `ifreq` holding the current name of `ifindex`, `None` if there is no such interface.
fn ifname_of(ctl: &OwnedFd, ifindex: u32) -> io::Result<Option<libc::ifreq>> {
    let index = libc::c_int::try_from(ifindex)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ifindex out of range"))?;
    // SAFETY: ifreq is a plain C struct; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { mem::zeroed() };
    ifr.ifr_ifru.ifru_ifindex = index;
    // SAFETY: SIOCGIFNAME reads the ifindex from and writes the name into `ifr`, a valid
    // ifreq that lives across the call.
    if unsafe { libc::ioctl(ctl.as_raw_fd(), libc::SIOCGIFNAME, &mut ifr) } < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENODEV) => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(ifr))
}

/// `struct ethtool_channels`.
#[repr(C)]
#[derive(Default)]
struct EthtoolChannels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx_count: u32,
    tx_count: u32,
    other_count: u32,
    combined_count: u32,
}

const ETHTOOL_GDRVINFO: u32 = 0x03;

/// `struct ethtool_drvinfo` (linux/ethtool.h).
#[repr(C)]
struct EthtoolDrvinfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

/// The driver of interface `ifindex` (`ETHTOOL_GDRVINFO`: `veth`, `tun`, `virtio_net`, ...),
/// in the calling thread's namespace; `None` if the interface or the driver does not say.
pub fn driver_name(ifindex: u32) -> Option<String> {
    let ctl = new_socket(libc::AF_INET, libc::SOCK_DGRAM).ok()?;
    let mut ifr = ifname_of(&ctl, ifindex).ok()??;
    let mut info = EthtoolDrvinfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        version: [0; 32],
        fw_version: [0; 32],
        bus_info: [0; 32],
        erom_version: [0; 32],
        reserved2: [0; 12],
        n_priv_flags: 0,
        n_stats: 0,
        testinfo_len: 0,
        eedump_len: 0,
        regdump_len: 0,
    };
    ifr.ifr_ifru.ifru_data = (&mut info as *mut EthtoolDrvinfo).cast();
    // SAFETY: SIOCETHTOOL reads the name from `ifr` and the command from `info`, and writes at
    // most an ethtool_drvinfo into `info`; both live across the call.
    if unsafe { libc::ioctl(ctl.as_raw_fd(), libc::SIOCETHTOOL, &mut ifr) } != 0 {
        return None;
    }
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(32);
    Some(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

const ETHTOOL_GCHANNELS: u32 = 0x3c;
const ETHTOOL_GTXCSUM: u32 = 0x16;
const ETHTOOL_STXCSUM: u32 = 0x17;

/// `struct ethtool_value`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// Sets interface `ifindex`'s transmit checksum offload (`ethtool -K IF tx on|off`, the legacy
/// `ETHTOOL_STXCSUM`); returns whether it was on before (`None`: nothing changed, it already
/// was as asked). Turning it off also turns off what depends on it (TSO): the kernel then
/// segments and checksums in software at this interface's transmit.
pub fn set_tx_checksum(ifindex: u32, on: bool) -> io::Result<Option<bool>> {
    let ctl = new_socket(libc::AF_INET, libc::SOCK_DGRAM)?;
    let Some(mut ifr) = ifname_of(&ctl, ifindex)? else {
        return Err(io::Error::from_raw_os_error(libc::ENODEV));
    };
    let mut v = EthtoolValue {
        cmd: ETHTOOL_GTXCSUM,
        data: 0,
    };
    ifr.ifr_ifru.ifru_data = (&mut v as *mut EthtoolValue).cast();
    // SAFETY: SIOCETHTOOL reads the name from `ifr` and the command from `v`, and writes at
    // most an ethtool_value into `v`; both live across the call.
    if unsafe { libc::ioctl(ctl.as_raw_fd(), libc::SIOCETHTOOL, &mut ifr) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let was = v.data != 0;
    if was == on {
        return Ok(None);
    }
    v = EthtoolValue {
        cmd: ETHTOOL_STXCSUM,
        data: u32::from(on),
    };
    ifr.ifr_ifru.ifru_data = (&mut v as *mut EthtoolValue).cast();
    // SAFETY: as above; ETHTOOL_STXCSUM only reads `v`.
    if unsafe { libc::ioctl(ctl.as_raw_fd(), libc::SIOCETHTOOL, &mut ifr) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Some(was))
}

/// The interface's receive queues: `ETHTOOL_GCHANNELS` (rx + combined, answered in the
/// socket's namespace), else the `queues/rx-*` entries in sysfs if `/sys/class/net/<ifname>`
/// is this very interface (sysfs shows the namespace it was mounted in). `None` if neither
/// says: the driver is then taken to be single-queue.
fn rx_queues(ctl: &OwnedFd, ifindex: u32, ifname: &str) -> Option<u32> {
    if let Ok(Some(mut ifr)) = ifname_of(ctl, ifindex) {
        let mut ch = EthtoolChannels {
            cmd: ETHTOOL_GCHANNELS,
            ..EthtoolChannels::default()
        };
        ifr.ifr_ifru.ifru_data = (&mut ch as *mut EthtoolChannels).cast();
        // SAFETY: SIOCETHTOOL reads the name from `ifr` and the command from `ch`, and writes
        // at most an ethtool_channels into `ch`; both live across the call.
        if unsafe { libc::ioctl(ctl.as_raw_fd(), libc::SIOCETHTOOL, &mut ifr) } == 0 {
            return Some((ch.rx_count + ch.combined_count).max(1));
        }
    }
    let dir = format!("/sys/class/net/{ifname}");
    let same = std::fs::read_to_string(format!("{dir}/ifindex"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        == Some(ifindex);
    if !same {
        return None;
    }
    let count = std::fs::read_dir(format!("{dir}/queues"))
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count();
    u32::try_from(count).ok().filter(|&c| c > 0)
}

/// Detaches srmigd's program if it was left attached without a link; refuses anyone else's.
fn remove_stale_program(ifindex: u32, ifname: &str) -> Result<(), XdpError> {
    let progs =
        bpf::xdp_programs(ifindex).map_err(io_err("reading the interface's XDP programs"))?;
    for (mode, id) in progs {
        let prog = match bpf::prog_fd_by_id(id) {
            Ok(p) => p,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(io_err("opening an attached XDP program")(e)),
        };
        let name = bpf::prog_name(&prog).map_err(io_err("reading an XDP program's name"))?;
        if name != PROG_NAME {
            return Err(XdpError::ForeignProgram {
                ifname: ifname.to_owned(),
                prog_id: id,
                name,
            });
        }
        match bpf::netlink_set_xdp(ifindex, None, mode, Some(&prog)) {
            Ok(()) => tracing::warn!(
                ifname,
                prog_id = id,
                ?mode,
                "detached a stale {PROG_NAME} XDP program left by an earlier srmigd"
            ),
            // Replaced or detached meanwhile.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                return Err(XdpError::InUse {
                    ifname: ifname.to_owned(),
                    prog_id: id,
                })
            }
            Err(e) => return Err(io_err("detaching a stale XDP program")(e)),
        }
    }
    Ok(())
}

/// Attaches `prog` (named [`PROG_NAME`]) to `ifindex` with a BPF link, native mode first
/// (generic first with `generic_first`); a stale `srmig_xsk` attached without a link is
/// replaced, a foreign program refused.
pub(crate) fn attach_program(
    prog: &OwnedFd,
    ifindex: u32,
    ifname: &str,
    generic_first: bool,
) -> Result<(OwnedFd, XdpMode), XdpError> {
    remove_stale_program(ifindex, ifname)?;
    let order = if generic_first {
        [XdpMode::Generic, XdpMode::Native]
    } else {
        [XdpMode::Native, XdpMode::Generic]
    };
    attach_in(prog, ifindex, ifname, order)
}

fn attach(prog: &OwnedFd, ifindex: u32, ifname: &str) -> Result<(OwnedFd, XdpMode), XdpError> {
    attach_in(prog, ifindex, ifname, [XdpMode::Native, XdpMode::Generic])
}

fn attach_in(
    prog: &OwnedFd,
    ifindex: u32,
    ifname: &str,
    order: [XdpMode; 2],
) -> Result<(OwnedFd, XdpMode), XdpError> {
    let mut last = None;
    for mode in order {
        match bpf::link_create_xdp(prog, ifindex, mode.flag()) {
            Ok(link) => return Ok((link, mode)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EEXIST)) => {
                return Err(classify_busy(ifindex, ifname, e));
            }
            Err(e) => {
                tracing::debug!(ifname, ?mode, error = %e, "XDP link attach refused");
                last = Some(e);
            }
        }
    }
    let e = last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EINVAL));
    Err(match e.raw_os_error() {
        // EINVAL: no BPF_LINK_CREATE for XDP (kernel before 5.9).
        Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS) => XdpError::Unsupported(e),
        _ => XdpError::Io {
            what: "attaching the XDP program",
            source: e,
        },
    })
}

/// What an `EBUSY`/`EEXIST` on attach means: whose program holds the interface.
fn classify_busy(ifindex: u32, ifname: &str, e: io::Error) -> XdpError {
    match bpf::attached_xdp_prog(ifindex) {
        Ok(Some((prog_id, name))) if name == PROG_NAME => XdpError::InUse {
            ifname: ifname.to_owned(),
            prog_id,
        },
        Ok(Some((prog_id, name))) => XdpError::ForeignProgram {
            ifname: ifname.to_owned(),
            prog_id,
            name,
        },
        _ => XdpError::Io {
            what: "attaching the XDP program",
            source: e,
        },
    }
}

/// Completes a partial TCP/UDP checksum in an Ethernet frame (IPv6 or IPv4, one 802.1Q tag
/// at most); whether it did.
fn complete_partial_frame(frame: &mut [u8]) -> bool {
    use srmig_wire::checksum::{complete_partial, PartialChecksum};
    let mut at = 12;
    let ethertype =
        |f: &[u8], at: usize| f.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let mut t = ethertype(frame, at);
    if t == Some(0x8100) {
        at += 4;
        t = ethertype(frame, at);
    }
    if !matches!(t, Some(0x86dd | 0x0800)) {
        return false;
    }
    frame
        .get_mut(at + 2..)
        .is_some_and(|ip| complete_partial(ip) == PartialChecksum::Completed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_free_counts_with_wraparound() {
        assert_eq!(producer_free(2048, 0, 0), 2048);
        assert_eq!(producer_free(2048, 2048, 0), 0);
        assert_eq!(producer_free(2048, 100, 60), 2008);
        // Indices run freely past u32::MAX.
        assert_eq!(producer_free(2048, 5, u32::MAX - 10), 2048 - 16);
        assert_eq!(producer_free(2048, u32::MAX, u32::MAX), 2048);
    }

    #[test]
    fn consumer_avail_counts_with_wraparound() {
        assert_eq!(consumer_avail(0, 0), 0);
        assert_eq!(consumer_avail(10, 3), 7);
        assert_eq!(consumer_avail(2, u32::MAX - 1), 4);
    }

    #[test]
    fn default_options_split_the_umem() {
        let o = XdpOptions::default();
        assert!(o.ring_size.is_power_of_two());
        assert_eq!(o.frames as usize * FRAME_SIZE, 32 << 20);
        // Every receive frame fits the fill ring at once.
        assert!(o.frames / 2 <= o.ring_size);
    }

    #[test]
    fn options_are_validated_before_any_syscall() {
        let bad = XdpOptions {
            ring_size: 1000,
            frames: 4096,
            ..XdpOptions::default()
        };
        assert!(matches!(
            XdpSocket::open(1, "lo", &bad),
            Err(XdpError::Options(_))
        ));
    }
}
