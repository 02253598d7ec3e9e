//! The traffic generator: prebuilt frames, blasted from a thread inside the `gen` namespace
//! pinned to the generator CPU, with AF_PACKET + `sendmmsg` (what the reference's `gen.c`
//! does).
//!
//! - One frame per flow (`--flows`), sent round-robin: message j of the k-th `sendmmsg` of a
//!   batch of B carries flow `(k * B + j) mod N`, so every batch spreads over the flows and,
//!   over time, each flow gets the same share. With one flow every message is the same frame.
//! - The socket has protocol 0, so it never receives and is not a packet tap on g0;
//!   `PACKET_QDISC_BYPASS` skips the qdisc layer.
//! - It keeps the default send buffer: a veth keeps a sent skb charged to the socket until it
//!   is freed, so with a few hundred frames in flight `sendmmsg` blocks. A DUT slower than the
//!   generator therefore throttles it (the kernel DUT forwards without loss at its capacity)
//!   rather than overflowing the DUT CPU's backlog; srmigd, whose AF_PACKET receive copies the
//!   frame and frees the skb at once, is offered more than it can take and drops in its
//!   receive ring.
//! - With a rate, batches are paced against the clock: one every `batch / rate` seconds
//!   (sleeping, then spinning for the last 200 us). A batch that is late is sent at once but
//!   the ones owed before it are not: a stall of the generator never becomes a burst at full
//!   speed. The burst would be throttled only by the socket's send buffer, about 280 small
//!   frames in flight, more than the 256-frame ring of a veth with XDP, so srmigd's fast path
//!   lost frames in paced trials at a tenth of its capacity while the kernel's 1000-frame
//!   backlog absorbed them. The offered rate is what the counters measure, either way.
//!
//! The only `unsafe` of this crate lives here: the packet socket and `sendmmsg`, which neither
//! std nor nix wrap for AF_PACKET.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::sched::{sched_setaffinity, CpuSet};
use nix::unistd::Pid;
use srmig_lab::Netns;

use super::ForwardError;

/// Frames per `sendmmsg` at full speed.
const BATCH: usize = 64;
/// Frames per `sendmmsg` when paced (finer pacing).
const PACED_BATCH: usize = 16;
/// `sendmmsg` calls between two clock reads at full speed.
const CALLS_PER_CLOCK_READ: usize = 16;

/// One blast.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Blast<'a> {
    /// The frames (one per flow, at least one), sent round-robin again and again.
    pub frames: &'a [Vec<u8>],
    /// How long.
    pub duration: Duration,
    /// Frames per second, or `None` for as fast as possible.
    pub rate_pps: Option<f64>,
}

/// What the generator saw.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sent {
    /// Frames `sendmmsg` accepted.
    pub packets: u64,
    /// From the first send to the end of the last one.
    pub elapsed: Duration,
}

/// Runs `blast` on interface `ifname` of `ns` from a thread pinned to `cpu`.
pub(crate) fn blast(
    ns: &Netns,
    ifname: &str,
    cpu: usize,
    blast: Blast<'_>,
) -> Result<Sent, ForwardError> {
    let io_error = |what: &'static str| {
        let ifname = ifname.to_owned();
        move |source| ForwardError::Generator {
            what,
            ifname,
            source,
        }
    };
    ns.run(|| -> Result<Sent, ForwardError> {
        let mut set = CpuSet::new();
        set.set(cpu)
            .and_then(|()| sched_setaffinity(Pid::from_raw(0), &set))
            .map_err(|e| io_error("pinning the generator thread")(io::Error::from(e)))?;
        let socket = PacketSocket::open(ifname).map_err(io_error("opening an AF_PACKET socket"))?;
        run(&socket, blast).map_err(io_error("sendmmsg"))
    })?
}

fn run(socket: &PacketSocket, blast: Blast<'_>) -> io::Result<Sent> {
    let batch = if blast.rate_pps.is_some() {
        PACED_BATCH
    } else {
        BATCH
    };
    // The kernel only reads the iovecs and the frames; neither moves while `msgs` points at
    // them (both live until the end of this function).
    let mut iovs: Vec<libc::iovec> = blast
        .frames
        .iter()
        .map(|f| libc::iovec {
            iov_base: f.as_ptr().cast_mut().cast(),
            iov_len: f.len(),
        })
        .collect();
    if iovs.is_empty() {
        return Err(io::Error::other("no frame to send"));
    }
    let flows = iovs.len();
    let iov_base = iovs.as_mut_ptr();
    // SAFETY: mmsghdr is plain data; all-zero is a valid "no address, no control" message.
    let mut msgs: Vec<libc::mmsghdr> = (0..batch)
        .map(|_| unsafe { std::mem::zeroed::<libc::mmsghdr>() })
        .collect();
    for (j, m) in msgs.iter_mut().enumerate() {
        m.msg_hdr.msg_iov = iov_base.wrapping_add(j % flows);
        m.msg_hdr.msg_iovlen = 1;
    }
    // When the flows do not divide the batch, each call starts where the last one stopped.
    let rotate = batch % flows != 0;
    let mut next_flow = 0;
    let mut packets = 0u64;
    let start = Instant::now();
    let end = start + blast.duration;
    let mut now = start;
    // Paced: when the next batch is due, and how far apart batches are.
    let interval = blast
        .rate_pps
        .map(|pps| Duration::from_secs_f64(batch as f64 / pps));
    let mut due = start;
    while now < end {
        let calls = match interval {
            Some(interval) => {
                wait_until(due);
                // A stall of the generator (a preempted or descheduled vCPU) is not made up
                // with a burst: the trial offers a steady rate, which the counters measure.
                due = (due + interval).max(Instant::now().checked_sub(interval).unwrap_or(due));
                1
            }
            None => CALLS_PER_CLOCK_READ,
        };
        for _ in 0..calls {
            if rotate {
                for m in &mut msgs {
                    m.msg_hdr.msg_iov = iov_base.wrapping_add(next_flow);
                    next_flow = if next_flow + 1 == flows {
                        0
                    } else {
                        next_flow + 1
                    };
                }
            }
            match socket.send(&mut msgs) {
                Ok(n) => packets += n as u64,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOBUFS | libc::EAGAIN | libc::EINTR)
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        now = Instant::now();
    }
    Ok(Sent {
        packets,
        elapsed: now - start,
    })
}

fn wait_until(due: Instant) {
    const SPIN: Duration = Duration::from_micros(200);
    let now = Instant::now();
    if due > now + SPIN {
        std::thread::sleep(due - now - SPIN);
    }
    while Instant::now() < due {
        std::hint::spin_loop();
    }
}

/// A transmit-only AF_PACKET socket bound to one interface.
#[derive(Debug)]
struct PacketSocket(OwnedFd);

impl PacketSocket {
    fn open(ifname: &str) -> io::Result<PacketSocket> {
        let name = std::ffi::CString::new(ifname).map_err(io::Error::other)?;
        // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: plain system call without pointers.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
        let socket = PacketSocket(unsafe { OwnedFd::from_raw_fd(fd) });
        let one: libc::c_int = 1;
        // SAFETY: the option value points to a live c_int and its size is passed. Failure is
        // tolerated (older kernels): the qdisc then only costs a little.
        let _ = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                std::ptr::from_ref(&one).cast(),
                socklen::<libc::c_int>(),
            )
        };
        // SAFETY: sockaddr_ll is plain data; zero is valid for every field.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as libc::c_ushort;
        sll.sll_protocol = 0; // transmit only
        sll.sll_ifindex = i32::try_from(ifindex).map_err(io::Error::other)?;
        // SAFETY: `sll` is a live sockaddr_ll and its exact size is passed.
        let rc = unsafe {
            libc::bind(
                fd,
                std::ptr::from_ref(&sll).cast(),
                socklen::<libc::sockaddr_ll>(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(socket)
    }

    /// One `sendmmsg` of all of `msgs`; the number of messages sent.
    fn send(&self, msgs: &mut [libc::mmsghdr]) -> io::Result<usize> {
        let n = libc::c_uint::try_from(msgs.len()).map_err(io::Error::other)?;
        // SAFETY: `msgs` is a live array of `n` headers, each pointing to one live iovec that
        // points to a live frame, all outliving the call; the kernel only writes `msg_len`
        // of each.
        let rc = unsafe { libc::sendmmsg(self.0.as_raw_fd(), msgs.as_mut_ptr(), n, 0) };
        usize::try_from(rc).map_err(|_| io::Error::last_os_error())
    }
}

fn socklen<T>() -> libc::socklen_t {
    libc::socklen_t::try_from(std::mem::size_of::<T>()).unwrap_or(libc::socklen_t::MAX)
}
