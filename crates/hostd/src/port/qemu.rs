//! A VM port backed by a QEMU `-netdev stream` unix socket, QEMU being the server.
//!
//! ```text
//!  QEMU  -netdev stream,id=n0,server=on,addr.type=unix,addr.path=/run/srmig/vm1.net
//!          ▲ srmigd connects (and reconnects every RECONNECT_INTERVAL while it cannot)
//!          │ records: 4-byte big-endian length + Ethernet frame, both directions
//!  srmigd  QemuPort: non-blocking socket, RxFramer (partial reads), bounded TxQueue
//!          (partial writes, socket full), SentRing (copies of the last frames written)
//! ```
//!
//! Why QEMU is the server (`server=on`) and srmigd the client, and not the other way round:
//! QEMU 7.2's stream client (`server=off`) never reconnects, so a srmigd restart, or a QEMU
//! started a moment before srmigd listens, leaves the VM's NIC dead for good. With QEMU
//! listening, srmigd connects whenever it (re)starts and whenever the socket appears (the
//! destination QEMU of a migration, started with `-incoming defer`, creates it at startup, long
//! before the switchover), and QEMU accepts a new connection after the previous one closed.
//! Frames the guest sends while nobody is connected are lost, which only matters before
//! srmigd's first connect.
//!
//! Writes never block the dataplane thread: one record per `sendmsg` (so every kernel skb
//! carries part of exactly one frame, see [`super::qemu_ring`]), `MSG_DONTWAIT`; when the socket
//! is full the record waits in a bounded queue (drained on `POLLOUT`, in order, a partly
//! written record first), and when the queue is full the frame is dropped and counted
//! (`tx_queue_full`). A stopped QEMU therefore costs at most the queue.
//!
//! [`QemuPort::take_unread`] is the zero-loss hook: at the source's STOP it returns, oldest
//! first, every frame QEMU has not completely read (from SIOCOUTQ and the ring) and every frame
//! still queued, for the dataplane loop to re-steer to the VM's new location.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use srmig_dataplane::{Batch, PortId};

use super::qemu_frame::{record_header, Next, RxFramer, RECORD_HEADER_LEN};
use super::qemu_ring::{outq, SentRing, TruesizeProbe};
use super::PortIoStats;

/// How often srmigd retries connecting to a QEMU socket that is missing or refuses.
pub const RECONNECT_INTERVAL: Duration = Duration::from_millis(50);
/// Records waiting for room in the socket, at most: room for a whole End.SBUF release (the
/// engine's default per-VM bound is 2048 packets) and what keeps arriving while the guest,
/// just resumed, reads its first frames slowly.
pub const TX_QUEUE_RECORDS: usize = 4096;
/// Bytes waiting for room in the socket, at most (twice End.SBUF's default per-VM bound of
/// 2 MiB): what a stopped or slow QEMU can cost in memory.
pub const TX_QUEUE_BYTES: usize = 4 << 20;
/// Record buffers kept for reuse.
const POOL_RECORDS: usize = 256;
/// Frames remembered for recovery. They must cover the socket buffer (`SEND_BUFFER_BYTES`:
/// about 170 small frames) *and* what QEMU read but could not hand to a guest that stopped
/// taking frames: one read of QEMU's is up to 69,632 bytes, about 1,088 records of the
/// smallest frame, which QEMU queues whole. The guest's count of used buffers (the exact
/// take-back) finds those too, and with 256 the oldest were lost: in a libvirt lab run (TCG)
/// the guest stopped taking frames about 150 ms before its pause, the take-back counted 358
/// undelivered and recovered 256, and 51 probes per family were lost. A slot holds what its
/// frames need (`qemu_ring::SMALL_SLOT`, 2 KiB, for MTU-sized frames): about 4 MiB per port.
pub const RING_FRAMES: usize = 2048;
/// Requested `SO_SNDBUF` (the kernel doubles it): bounds how much QEMU can leave unread, so
/// the ring (at least 768 bytes of truesize per frame) covers all of it.
pub const SEND_BUFFER_BYTES: libc::c_int = 64 * 1024;
/// While a frame written less than `SAMPLE_FOR` ago is not known to be read, SIOCOUTQ is
/// sampled every `SAMPLE_EVERY`, so that when the VM stops the frames QEMU read while it still
/// ran are known as such (see [`QemuPort::take_unread`]): the sooner a read is seen, the fewer
/// frames the guest already got are taken back and sent again.
pub const SAMPLE_EVERY: Duration = Duration::from_micros(100);
/// See [`SAMPLE_EVERY`].
pub const SAMPLE_FOR: Duration = Duration::from_millis(5);
/// Reads per receive call at most (each up to the framer's free space).
const MAX_READS_PER_CALL: usize = 8;

// `[[qemu]]` in node.toml: defined with the rest of the file's schema in
// `srmig_dataplane::node_file`, which srmig replay shares.
pub use srmig_dataplane::node_file::QemuPortConfig;

/// What a receive call saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QemuRecv {
    /// Frames put in the batch.
    pub frames: usize,
    /// The peer closed the stream, or it is out of step: disconnect.
    pub closed: bool,
}

/// Frames recovered by [`QemuPort::take_unread`].
#[derive(Debug, Default)]
pub struct Recovered {
    /// The frames, oldest first.
    pub frames: Vec<Vec<u8>>,
    /// Of which written to the socket and not completely read by QEMU.
    pub from_socket: usize,
    /// Of which not seen completely read while QEMU still ran (read later or not: a stopped
    /// QEMU drops them).
    pub after_stop: usize,
    /// Of which still waiting in the queue (never written).
    pub from_queue: usize,
    /// SIOCOUTQ at the time.
    pub outq: usize,
    /// The ring's accounting matched SIOCOUTQ exactly.
    pub exact: bool,
    /// Unread frames older than the ring were lost.
    pub beyond_ring: bool,
    /// With a count of the guest's receive buffers ([`QemuPort::take_unread`]'s `used_idx`):
    /// the frames written since the base that the guest did not get, when the count could
    /// be used (then exactly these are taken back).
    pub counted: Option<usize>,
    /// Why a count was given but not used (the rules above decided instead).
    pub count_refused: Option<&'static str>,
    /// When QEMU took the newest frame left with it (not taken back), wall clock, µs: the
    /// last the VM was handed. When it was first seen read, but not after the stop
    /// reference (the sample may come later), and not before it was written (a backlog in
    /// the socket is read after the write). `None` if the ring no longer holds it.
    pub kept_delivered_us: Option<i64>,
}

/// The longest frame that surely fills one receive buffer of a virtio-net guest: Linux's
/// mergeable buffers hold at least `GOOD_PACKET_LEN` (1518 bytes) after the virtio header, and
/// big-packet or non-mergeable buffers hold a whole frame. A longer frame may take several,
/// which the count of used buffers cannot tell from several frames.
pub const ONE_BUFFER_FRAME: usize = 1518;

/// The reference of an exact take-back: at a moment when QEMU had delivered every frame
/// written to it, how many frames srmigd had written and the guest's receive queue's
/// `used-idx` (see [`QemuPort::set_base`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Base {
    pushed: u64,
    used_idx: u16,
    /// The longest frame written since.
    max_len: usize,
}

#[derive(Debug)]
struct Queued {
    record: Vec<u8>,
    written: usize,
}

/// One QEMU stream port.
#[derive(Debug)]
pub struct QemuPort {
    path: PathBuf,
    conn: Option<UnixStream>,
    rx: RxFramer,
    queue: VecDeque<Queued>,
    /// Bytes of the records in `queue` (bounded by [`TX_QUEUE_BYTES`]).
    queued_bytes: usize,
    pool: Vec<Vec<u8>>,
    ring: SentRing,
    probe: Option<TruesizeProbe>,
    next_connect: Instant,
    /// The last connect error, logged once per change.
    last_error: Option<io::ErrorKind>,
    /// Frames whose record was (at least partly) written to the socket since the connect.
    pushed: u64,
    /// Writes are held (every frame queued) while a base is taken.
    hold: bool,
    base: Option<Base>,
}

impl QemuPort {
    /// A disconnected port for the socket at `path` (connect with [`QemuPort::try_connect`]).
    pub fn new(path: impl Into<PathBuf>) -> QemuPort {
        QemuPort {
            path: path.into(),
            conn: None,
            rx: RxFramer::new(),
            queue: VecDeque::with_capacity(POOL_RECORDS),
            queued_bytes: 0,
            pool: Vec::new(),
            ring: SentRing::new(RING_FRAMES),
            probe: TruesizeProbe::new().ok(),
            next_connect: Instant::now(),
            last_error: None,
            pushed: 0,
            hold: false,
            base: None,
        }
    }

    /// Holds every write (frames wait in the queue, a partly written record is completed)
    /// or lets them go again. While held, [`QemuPort::quiet`] tells when QEMU has read
    /// everything written.
    pub fn hold_writes(&mut self, on: bool) {
        self.hold = on;
    }

    /// Whether writes are held.
    pub fn holding(&self) -> bool {
        self.hold
    }

    /// While writes are held: the number of frames written since the connect, once QEMU has
    /// read every byte written (SIOCOUTQ 0, no record partly written). Taken together with
    /// the guest's `used-idx` at that moment, it is a base for an exact take-back
    /// ([`QemuPort::set_base`]).
    pub fn quiet(&mut self) -> Option<u64> {
        if !self.hold || self.queue.front().is_some_and(|q| q.written > 0) {
            return None;
        }
        let conn = self.conn.as_ref()?;
        (outq(conn).ok()? == 0).then_some(self.pushed)
    }

    /// Records the base of an exact take-back: `pushed` frames written (as
    /// [`QemuPort::quiet`] said, with writes held since) when the guest's receive queue had
    /// `used-idx` `used_idx`. Refused (`false`) if a frame was written since, or the stream
    /// was reconnected.
    pub fn set_base(&mut self, pushed: u64, used_idx: u16) -> bool {
        if self.conn.is_none() || pushed != self.pushed {
            self.base = None;
            return false;
        }
        self.base = Some(Base {
            pushed,
            used_idx,
            max_len: 0,
        });
        true
    }

    /// Forgets the base (the migration it was taken for ended).
    pub fn clear_base(&mut self) {
        self.base = None;
    }

    /// Whether a base is set.
    pub fn has_base(&self) -> bool {
        self.base.is_some()
    }

    /// A frame's first bytes went into the socket: remember it.
    fn pushed_frame(&mut self, frame: &[u8], n: usize) {
        note_push(&mut self.ring, &mut self.pushed, &mut self.base, frame, n);
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the stream is connected.
    pub fn connected(&self) -> bool {
        self.conn.is_some()
    }

    /// The socket's fd while connected.
    pub fn fd(&self) -> Option<RawFd> {
        self.conn.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Whether records wait for room in the socket (poll for `POLLOUT`).
    pub fn wants_write(&self) -> bool {
        match self.queue.front() {
            Some(q) => !self.hold || q.written > 0,
            None => false,
        }
    }

    /// Whether a complete record is buffered (the previous receive stopped at a full batch):
    /// receive again without waiting for the socket.
    pub fn rx_pending(&self) -> bool {
        self.conn.is_some() && self.rx.has_record()
    }

    /// Samples SIOCOUTQ and records which written frames QEMU has read by now.
    pub fn sample(&mut self) {
        if self.ring.pending() == 0 {
            return;
        }
        let Some(conn) = &self.conn else {
            return;
        };
        let Ok(q) = outq(conn) else {
            return;
        };
        let probe = &mut self.probe;
        let u = self.ring.unread(q, |n| {
            probe.as_mut().and_then(|p| p.truesize(n).ok().flatten())
        });
        self.ring.observe(u.frames, wall_us());
    }

    /// When to sample next: soon while a recent frame is not known to be read.
    pub fn next_sample(&self, now: Instant) -> Option<Instant> {
        let oldest = self.ring.oldest_pending_written_at()?;
        let age_us = wall_us().saturating_sub(oldest);
        (age_us < SAMPLE_FOR.as_micros() as i64).then(|| now + SAMPLE_EVERY)
    }

    /// (written at, first seen read at) of the newest `n` frames (for logs).
    pub fn tail_times(&self, n: usize) -> Vec<(i64, Option<i64>)> {
        self.ring.tail_times(n)
    }

    /// When to try connecting next (while disconnected).
    pub fn next_connect(&self) -> Option<Instant> {
        self.conn.is_none().then_some(self.next_connect)
    }

    /// Connects if disconnected and the retry time has come. Returns `Ok(true)` when a new
    /// connection was made; `Err` carries a connect error seen for the first time (repeated
    /// identical errors are `Ok(false)`, to keep the log quiet while QEMU is not there).
    pub fn try_connect(&mut self, now: Instant) -> io::Result<bool> {
        if self.conn.is_some() || now < self.next_connect {
            return Ok(false);
        }
        self.next_connect = now + RECONNECT_INTERVAL;
        match connect(&self.path) {
            Ok(s) => {
                self.conn = Some(s);
                self.rx.reset();
                self.clear_queue();
                self.ring.clear();
                self.pushed = 0;
                self.base = None;
                self.hold = false;
                self.last_error = None;
                Ok(true)
            }
            Err(e) => {
                if self.last_error == Some(e.kind()) {
                    return Ok(false);
                }
                self.last_error = Some(e.kind());
                Err(e)
            }
        }
    }

    /// Closes the stream (retrying later); queued records are dropped and counted.
    pub fn disconnect(&mut self, stats: &mut PortIoStats) {
        if self.conn.take().is_some() {
            stats.tx_no_link += self.queue.len() as u64;
        }
        self.clear_queue();
        self.ring.clear();
        self.rx.reset();
        self.base = None;
        self.hold = false;
        self.next_connect = Instant::now() + RECONNECT_INTERVAL;
    }

    /// The oldest queued record, out of the queue and its byte count.
    fn pop_queued(&mut self) -> Option<Queued> {
        let q = self.queue.pop_front()?;
        self.queued_bytes = self.queued_bytes.saturating_sub(q.record.len());
        Some(q)
    }

    fn clear_queue(&mut self) {
        while let Some(q) = self.pop_queued() {
            self.recycle(q.record);
        }
    }

    fn recycle(&mut self, mut v: Vec<u8>) {
        if self.pool.len() < POOL_RECORDS {
            v.clear();
            self.pool.push(v);
        }
    }

    /// Receives frames into `batch` (cleared first), each with ingress `port`. Frames longer
    /// than a packet buffer are dropped and counted (`rx_truncated`); a record length no QEMU
    /// sends closes the stream (`rx_bad_records`).
    pub fn recv_batch(
        &mut self,
        port: PortId,
        batch: &mut Batch,
        stats: &mut PortIoStats,
    ) -> QemuRecv {
        batch.clear();
        let mut out = QemuRecv::default();
        let Some(conn) = &self.conn else {
            return out;
        };
        let fd = conn.as_raw_fd();
        let mut reads = 0;
        loop {
            // Hand out what is buffered.
            while !batch.is_full() {
                match self.rx.next_record() {
                    Next::Frame(f) => match batch.push(port, f) {
                        Ok(true) => out.frames += 1,
                        Ok(false) => break,
                        Err(_) => stats.rx_truncated += 1,
                    },
                    Next::Empty => stats.rx_truncated += 1,
                    Next::NeedMore => break,
                    Next::Bad(_) => {
                        stats.rx_bad_records += 1;
                        out.closed = true;
                        return out;
                    }
                }
            }
            if batch.is_full() || reads >= MAX_READS_PER_CALL {
                break;
            }
            reads += 1;
            match self.rx.fill(|buf| recv_dontwait(fd, buf)) {
                Ok(0) => {
                    out.closed = true;
                    break;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    // QEMU closed with frames of ours unread (rx_resets' doc).
                    stats.rx_resets += 1;
                    out.closed = true;
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "reading the QEMU stream failed");
                    stats.rx_errors += 1;
                    out.closed = true;
                    break;
                }
            }
        }
        stats.rx_frames += out.frames as u64;
        out
    }

    /// Sends one frame: written at once if the queue is empty and the socket has room,
    /// queued otherwise (dropped and counted when the queue is full). Never blocks.
    pub fn send(&mut self, frame: &[u8], stats: &mut PortIoStats) {
        if self.conn.is_none() {
            stats.tx_no_link += 1;
            return;
        }
        if self.queue.is_empty() && !self.hold {
            self.sample();
            let Some(conn) = &self.conn else {
                return;
            };
            let hdr = record_header(frame.len());
            match sendmsg2(conn.as_raw_fd(), &hdr, frame) {
                Ok(n) if n == RECORD_HEADER_LEN + frame.len() => {
                    self.pushed_frame(frame, n);
                    return;
                }
                Ok(n) => {
                    // Partly written: the rest goes first when the socket has room.
                    if n > 0 {
                        self.pushed_frame(frame, n);
                    }
                    self.enqueue(&hdr, frame, n, stats);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    // EPIPE/ECONNRESET: the POLLHUP that follows closes the stream.
                    stats.tx_errors += 1;
                    return;
                }
            }
        }
        if self.queue.len() >= TX_QUEUE_RECORDS
            || self.queued_bytes + frame.len() + RECORD_HEADER_LEN > TX_QUEUE_BYTES
        {
            stats.tx_queue_full += 1;
            return;
        }
        let hdr = record_header(frame.len());
        self.enqueue(&hdr, frame, 0, stats);
    }

    fn enqueue(&mut self, hdr: &[u8], frame: &[u8], written: usize, stats: &mut PortIoStats) {
        let mut v = self.pool.pop().unwrap_or_default();
        v.clear();
        v.extend_from_slice(hdr);
        v.extend_from_slice(frame);
        self.queued_bytes += v.len();
        self.queue.push_back(Queued { record: v, written });
        stats.tx_queued += 1;
    }

    /// Writes queued records while the socket has room (on `POLLOUT`).
    pub fn flush(&mut self, stats: &mut PortIoStats) {
        let Some(conn) = &self.conn else {
            return;
        };
        let fd = conn.as_raw_fd();
        while let Some(q) = self.queue.front_mut() {
            if self.hold && q.written == 0 {
                break;
            }
            let rest = &q.record[q.written..];
            match sendmsg2(fd, rest, &[]) {
                Ok(0) => break,
                Ok(n) => {
                    let first = q.written == 0;
                    q.written += n;
                    let done = q.written >= q.record.len();
                    if first {
                        note_push(
                            &mut self.ring,
                            &mut self.pushed,
                            &mut self.base,
                            &q.record[RECORD_HEADER_LEN..],
                            n,
                        );
                    } else {
                        self.ring.add_write(n);
                    }
                    if !done {
                        break;
                    }
                    if let Some(done) = self.pop_queued() {
                        self.recycle(done.record);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    stats.tx_errors += 1;
                    break;
                }
            }
        }
    }

    /// Takes every frame the stopped VM did not get, oldest first: the written ones that
    /// SIOCOUTQ says are unread (see [`super::qemu_ring`]) and, given `running_at_us`, an
    /// instant at which QEMU still ran (the last `MIGRATION_PASS` before the STOP), every one
    /// not seen completely read before that instant; then the queued ones that were never
    /// written (removed from the queue; a partly written record stays queued so the stream
    /// stays in step, and is among the unread ones). The ring is cleared.
    ///
    /// Why "seen read before `running_at_us`" is the only evidence that counts: QEMU leaves
    /// the running state at an instant srmigd cannot observe, somewhere after the PASS and
    /// before the STOP, and a frame it reads after that dies in its queue. Nothing else bounds
    /// that instant: a frame from the guest may arrive after it (at the stop QEMU flushes the
    /// guest's transmissions it had queued: lab probe 19752, read 902 µs after the PASS, lost
    /// although the guest's answer to 19751 arrived at 1940 µs), and a frame last seen unread
    /// before the PASS may have been read after it when srmigd was not scheduled in between.
    /// The cost is a duplicate for a frame QEMU read between the PASS and the change.
    ///
    /// With `used_idx`, the guest's receive queue's `used-idx` read while QEMU is stopped in
    /// `pre-switchover`, and a base ([`QemuPort::set_base`]), the count decides instead: the
    /// guest got the oldest `used_idx - base` of the frames written since the base, in write
    /// order (srmigd is the only writer, and each frame fills one buffer), so every later
    /// one is taken back, read by QEMU or not, and no frame the guest got is sent twice. The
    /// count is refused (and the rules above decide) when it cannot be trusted: no base, a
    /// frame longer than [`ONE_BUFFER_FRAME`] since the base, more buffers used than frames
    /// written (a driver reset), or fewer frames left than SIOCOUTQ says are unread.
    pub fn take_unread(
        &mut self,
        running_at_us: Option<i64>,
        used_idx: Option<u16>,
        stats: &mut PortIoStats,
    ) -> Recovered {
        self.sample();
        let mut r = Recovered {
            exact: true,
            ..Recovered::default()
        };
        if let Some(conn) = &self.conn {
            match outq(conn) {
                Ok(q) => {
                    r.outq = q;
                    let probe = &mut self.probe;
                    let u = self.ring.unread(q, |n| {
                        probe.as_mut().and_then(|p| p.truesize(n).ok().flatten())
                    });
                    r.exact = u.exact && self.probe.is_some();
                    r.beyond_ring = u.beyond_ring;
                    r.from_socket = u.frames;
                }
                Err(_) => r.exact = false,
            }
        }
        if let Some(at) = running_at_us {
            r.after_stop = self.ring.not_read_before(at);
        }
        let mut n = r.from_socket.max(r.after_stop);
        if let Some(used) = used_idx {
            match self.undelivered(used, r.from_socket) {
                Ok(k) => {
                    r.counted = Some(k);
                    n = k;
                    if k > self.ring.len() {
                        r.beyond_ring = true;
                    }
                    stats.recovery_counted += 1;
                }
                Err(why) => {
                    r.count_refused = Some(why);
                    stats.recovery_count_refused += 1;
                }
            }
        }
        self.base = None;
        r.kept_delivered_us = self.ring.times_at(n).map(|(written, read)| {
            read.unwrap_or(written)
                .min(running_at_us.unwrap_or(i64::MAX))
                .max(written)
        });
        r.frames.extend(self.ring.newest(n).map(<[u8]>::to_vec));
        self.ring.clear();
        let mut keep = VecDeque::new();
        while let Some(q) = self.pop_queued() {
            if q.written == 0 {
                r.frames.push(q.record[RECORD_HEADER_LEN..].to_vec());
                r.from_queue += 1;
                self.recycle(q.record);
            } else {
                keep.push_back(q);
            }
        }
        self.queue = keep;
        self.queued_bytes = self.queue.iter().map(|q| q.record.len()).sum();
        stats.recovered += r.frames.len() as u64;
        if !r.exact {
            stats.recovery_inexact += 1;
        }
        if r.beyond_ring {
            stats.recovery_lost += 1;
        }
        r
    }
}

impl QemuPort {
    /// Frames written since the base that the guest did not get, from its receive queue's
    /// `used-idx` now; or why that count cannot be trusted.
    fn undelivered(&self, used_idx: u16, unread: usize) -> Result<usize, &'static str> {
        let b = self.base.ok_or("no base")?;
        if b.max_len > ONE_BUFFER_FRAME {
            return Err("a frame longer than one receive buffer since the base");
        }
        let written = self.pushed - b.pushed;
        let got = u64::from(used_idx.wrapping_sub(b.used_idx));
        if got > written {
            return Err("more buffers used than frames written (driver reset?)");
        }
        let left = usize::try_from(written - got).unwrap_or(usize::MAX);
        if left < unread {
            return Err("fewer frames left than the socket holds unread");
        }
        Ok(left)
    }
}

/// A frame's first `n` bytes went into the socket: the ring keeps a copy, the count and the
/// base (if any) note it.
fn note_push(
    ring: &mut SentRing,
    pushed: &mut u64,
    base: &mut Option<Base>,
    frame: &[u8],
    n: usize,
) {
    ring.push(frame, n, wall_us());
    *pushed += 1;
    if let Some(b) = base {
        b.max_len = b.max_len.max(frame.len());
    }
}

/// Wall clock in µs since the Unix epoch (QMP timestamps use the same clock).
fn wall_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

fn connect(path: &Path) -> io::Result<UnixStream> {
    let s = UnixStream::connect(path)?;
    s.set_nonblocking(true)?;
    let v = SEND_BUFFER_BYTES;
    // SAFETY: `s` is an open socket; the option value is a c_int living across the call and
    // its exact size is passed.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(s)
}

fn recv_dontwait(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a live, exclusively borrowed slice; the kernel writes at most its length.
    let r = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// One `sendmsg` of `a` then `b` (non-blocking, no SIGPIPE); returns the bytes written.
fn sendmsg2(fd: RawFd, a: &[u8], b: &[u8]) -> io::Result<usize> {
    let iov = [
        libc::iovec {
            iov_base: a.as_ptr() as *mut libc::c_void,
            iov_len: a.len(),
        },
        libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        },
    ];
    // SAFETY: msghdr is a plain C struct; all-zero is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = if b.is_empty() { 1 } else { 2 };
    // SAFETY: `msg` points at `iov`, which points at `a` and `b`; all outlive the call and
    // the kernel only reads them.
    let r = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixListener;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!(
            "srmig-qemu-port-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        Dir(d)
    }

    fn frame(i: u32, len: usize) -> Vec<u8> {
        let mut f = vec![0xab; len];
        f[..4].copy_from_slice(&i.to_be_bytes());
        f
    }

    fn id_of(f: &[u8]) -> u32 {
        u32::from_be_bytes([f[0], f[1], f[2], f[3]])
    }

    /// Reads `n` records from a blocking stream.
    fn read_records(s: &mut UnixStream, n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|_| {
                let mut h = [0u8; 4];
                s.read_exact(&mut h).expect("header");
                let mut f = vec![0u8; u32::from_be_bytes(h) as usize];
                s.read_exact(&mut f).expect("frame");
                f
            })
            .collect()
    }

    #[test]
    fn connects_when_the_socket_appears_and_retries_quietly() {
        let d = dir("connect");
        let path = d.0.join("vm.net");
        let mut p = QemuPort::new(&path);
        let mut stats = PortIoStats::default();
        let t0 = Instant::now();
        assert!(p.try_connect(t0).is_err(), "first failure is reported");
        // Same error again, after the retry interval: quiet.
        assert!(!p
            .try_connect(t0 + RECONNECT_INTERVAL)
            .expect("quiet repeat"));
        let l = UnixListener::bind(&path).expect("bind");
        // Not yet time to retry.
        assert!(!p.try_connect(t0 + RECONNECT_INTERVAL).expect("too early"));
        assert!(p.try_connect(t0 + 2 * RECONNECT_INTERVAL).expect("connect"));
        assert!(p.connected() && p.next_connect().is_none());
        let (mut peer, _) = l.accept().expect("accept");
        p.send(&frame(1, 100), &mut stats);
        assert_eq!(read_records(&mut peer, 1)[0], frame(1, 100));
        p.disconnect(&mut stats);
        assert!(!p.connected() && p.next_connect().is_some());
        p.send(&frame(2, 100), &mut stats);
        assert_eq!(stats.tx_no_link, 1);
    }

    #[test]
    fn receives_records_split_over_many_writes() {
        let d = dir("rx");
        let path = d.0.join("vm.net");
        let l = UnixListener::bind(&path).expect("bind");
        let mut p = QemuPort::new(&path);
        p.try_connect(Instant::now()).expect("connect");
        let (mut peer, _) = l.accept().expect("accept");
        let mut stream = Vec::new();
        let frames: Vec<Vec<u8>> = (0..40).map(|i| frame(i, 60 + i as usize * 31)).collect();
        for f in &frames {
            stream.extend_from_slice(&record_header(f.len()));
            stream.extend_from_slice(f);
        }
        // An oversized frame in the middle is dropped and counted.
        let big = srmig_dataplane::BUF_CAPACITY + 1000;
        let mut oversized = record_header(big).to_vec();
        oversized.extend_from_slice(&vec![0u8; big]);
        let mut stats = PortIoStats::default();
        let mut batch = Batch::new(16);
        let mut got = Vec::new();
        let chunks: Vec<&[u8]> = stream.chunks(7).collect();
        for (k, c) in chunks.iter().enumerate() {
            std::io::Write::write_all(&mut peer, c).expect("write");
            if k == chunks.len() / 2 {
                std::io::Write::write_all(&mut peer, &[]).expect("noop");
            }
            let r = p.recv_batch(PortId(3), &mut batch, &mut stats);
            assert!(!r.closed);
            got.extend(batch.packets().iter().map(|b| {
                assert_eq!(b.ingress, PortId(3));
                b.data().to_vec()
            }));
        }
        std::io::Write::write_all(&mut peer, &oversized).expect("write");
        while p.recv_batch(PortId(3), &mut batch, &mut stats).frames > 0 || p.rx_pending() {}
        assert_eq!(got, frames);
        assert_eq!(stats.rx_frames, 40);
        assert_eq!(stats.rx_truncated, 1);
        // A length no QEMU sends: out of step.
        std::io::Write::write_all(&mut peer, &0x7fff_ffffu32.to_be_bytes()).expect("write");
        let r = p.recv_batch(PortId(3), &mut batch, &mut stats);
        assert!(r.closed);
        assert_eq!(stats.rx_bad_records, 1);
        // EOF.
        let mut p2 = QemuPort::new(&path);
        p2.try_connect(Instant::now()).expect("connect");
        let (peer2, _) = l.accept().expect("accept");
        drop(peer2);
        assert!(p2.recv_batch(PortId(3), &mut batch, &mut stats).closed);
    }

    #[test]
    fn full_batch_leaves_records_pending() {
        let d = dir("pending");
        let path = d.0.join("vm.net");
        let l = UnixListener::bind(&path).expect("bind");
        let mut p = QemuPort::new(&path);
        p.try_connect(Instant::now()).expect("connect");
        let (mut peer, _) = l.accept().expect("accept");
        for i in 0..10 {
            let f = frame(i, 80);
            std::io::Write::write_all(&mut peer, &record_header(80)).expect("w");
            std::io::Write::write_all(&mut peer, &f).expect("w");
        }
        let mut stats = PortIoStats::default();
        let mut batch = Batch::new(4);
        assert_eq!(p.recv_batch(PortId(0), &mut batch, &mut stats).frames, 4);
        assert!(p.rx_pending());
        assert_eq!(p.recv_batch(PortId(0), &mut batch, &mut stats).frames, 4);
        assert_eq!(p.recv_batch(PortId(0), &mut batch, &mut stats).frames, 2);
        assert!(!p.rx_pending());
    }

    /// A QEMU that stops reading: the socket fills, records queue (bounded, drops counted),
    /// the loop never blocks; `take_unread` returns exactly the frames the reader did not get,
    /// in order, and the reader then sees a stream still in step.
    #[test]
    fn stopped_reader_fills_queue_and_unread_frames_are_recovered() {
        let d = dir("stop");
        let path = d.0.join("vm.net");
        let l = UnixListener::bind(&path).expect("bind");
        let mut p = QemuPort::new(&path);
        p.try_connect(Instant::now()).expect("connect");
        let (mut peer, _) = l.accept().expect("accept");
        let mut stats = PortIoStats::default();
        // The reader consumes the first 5 frames, then stops.
        for i in 0..5 {
            p.send(&frame(i, 1000), &mut stats);
        }
        let first = read_records(&mut peer, 5);
        assert_eq!(
            first.iter().map(|f| id_of(f)).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4]
        );
        // Now a stopped QEMU: keep sending far more than the socket and the queue hold (the
        // queue's byte bound, 4 MiB, is reached first with these frames).
        let total = 5000u32;
        let t = Instant::now();
        for i in 5..total {
            p.send(&frame(i, 1000), &mut stats);
        }
        assert!(t.elapsed() < Duration::from_secs(1), "send blocked");
        assert!(stats.tx_queued > 0, "{stats:?}");
        assert!(stats.tx_queue_full > 0, "{stats:?}");
        let dropped = stats.tx_queue_full as u32;
        let r = p.take_unread(None, None, &mut stats);
        assert!(r.exact, "{r:?}");
        assert!(!r.beyond_ring);
        assert!(r.from_socket > 0 && r.from_queue > 0, "{r:?}");
        let ids: Vec<u32> = r.frames.iter().map(|f| id_of(f)).collect();
        // Every frame after the 5 read ones, except the dropped ones (the newest), in order.
        let expect: Vec<u32> = (5..total - dropped).collect();
        assert_eq!(ids, expect);
        assert!(!p.wants_write());
        // Nothing more is recovered twice.
        assert!(p.take_unread(None, None, &mut stats).frames.is_empty());
    }

    /// The reader stops in the middle of a record: that frame counts as unread.
    #[test]
    fn a_partly_read_frame_is_recovered() {
        let d = dir("partial");
        let path = d.0.join("vm.net");
        let l = UnixListener::bind(&path).expect("bind");
        let mut p = QemuPort::new(&path);
        p.try_connect(Instant::now()).expect("connect");
        let (mut peer, _) = l.accept().expect("accept");
        let mut stats = PortIoStats::default();
        for i in 0..6 {
            p.send(&frame(i, 300 + i as usize), &mut stats);
        }
        read_records(&mut peer, 2);
        let mut half = vec![0u8; 100];
        peer.read_exact(&mut half).expect("half of frame 2");
        let r = p.take_unread(None, None, &mut stats);
        assert!(r.exact, "{r:?}");
        let ids: Vec<u32> = r.frames.iter().map(|f| id_of(f)).collect();
        assert_eq!(ids, vec![2, 3, 4, 5]);
        assert_eq!(r.frames[0], frame(2, 302));
        assert_eq!(stats.recovered, 4);
    }

    /// QEMU closing its end with frames of ours unread resets the stream: counted as a reset,
    /// not as a receive error, and the stream is closed like at an end of file.
    #[test]
    fn a_qemu_closing_with_frames_unread_is_a_reset() {
        let d = dir("reset");
        let (mut p, peer) = connected_port(&d);
        let mut stats = PortIoStats::default();
        p.send(&frame(1, 200), &mut stats);
        drop(peer);
        let mut batch = Batch::new(4);
        assert!(p.recv_batch(PortId(0), &mut batch, &mut stats).closed);
        assert_eq!((stats.rx_resets, stats.rx_errors), (1, 0));
    }

    /// Connects a port to a fresh listener; returns the port and QEMU's end of the stream.
    fn connected_port(d: &Dir) -> (QemuPort, UnixStream) {
        let path = d.0.join("vm.net");
        let l = UnixListener::bind(&path).expect("bind");
        let mut p = QemuPort::new(&path);
        p.try_connect(Instant::now()).expect("connect");
        let (peer, _) = l.accept().expect("accept");
        (p, peer)
    }

    /// Holding writes: frames wait in the queue (no POLLOUT wanted), `quiet` answers once the
    /// reader has everything written, and a base can be set only if nothing was written since.
    #[test]
    fn held_writes_wait_until_quiet_and_the_base_is_taken() {
        let d = dir("hold");
        let (mut p, mut peer) = connected_port(&d);
        let mut stats = PortIoStats::default();
        for i in 0..3 {
            p.send(&frame(i, 200), &mut stats);
        }
        p.hold_writes(true);
        p.send(&frame(3, 200), &mut stats);
        assert!(!p.wants_write(), "held records must not ask for POLLOUT");
        assert_eq!(p.quiet(), None, "three frames are unread");
        read_records(&mut peer, 3);
        assert_eq!(p.quiet(), Some(3));
        p.flush(&mut stats);
        assert_eq!(p.quiet(), Some(3), "flush writes nothing while held");
        assert!(p.set_base(3, 1000));
        p.hold_writes(false);
        p.flush(&mut stats);
        assert_eq!(id_of(&read_records(&mut peer, 1)[0]), 3);
        assert!(!p.set_base(3, 1000), "a frame was written since");
        assert!(!p.has_base());
    }

    /// The exact take-back: the guest's used-idx says how many of the frames written since
    /// the base it got; every later frame comes back (read by QEMU or not), none it got.
    #[test]
    fn a_whole_read_queued_in_qemu_comes_back() {
        // The guest stopped taking frames while QEMU kept reading: one read of QEMU's holds
        // up to 69,632 bytes, about a thousand small records, all queued in QEMU. The guest's
        // count finds them, and the ring still has every one (with 256 slots, the oldest were
        // lost: a libvirt lab run lost 51 probes per family this way).
        let d = dir("queued-read");
        let (mut p, mut peer) = connected_port(&d);
        let mut stats = PortIoStats::default();
        p.hold_writes(true);
        let pushed = p.quiet().expect("quiet");
        assert!(p.set_base(pushed, 100));
        p.hold_writes(false);
        let n: u32 = 1000;
        for i in 0..n {
            p.send(&frame(i, 60), &mut stats);
            // QEMU reads as fast as srmigd writes (nothing stays in the socket).
            read_records(&mut peer, 1);
        }
        // The guest took the first 10.
        let r = p.take_unread(None, Some(110), &mut stats);
        assert_eq!(r.counted, Some(n as usize - 10), "{r:?}");
        assert!(!r.beyond_ring, "{r:?}");
        let ids: Vec<u32> = r.frames.iter().map(|f| id_of(f)).collect();
        assert_eq!(ids, (10..n).collect::<Vec<_>>());
        assert_eq!(stats.recovery_lost, 0);
    }

    #[test]
    fn the_guests_count_decides_which_frames_come_back() {
        let d = dir("counted");
        let (mut p, mut peer) = connected_port(&d);
        let mut stats = PortIoStats::default();
        // Before the base: 10 frames, delivered.
        for i in 0..10 {
            p.send(&frame(i, 100), &mut stats);
        }
        read_records(&mut peer, 10);
        p.hold_writes(true);
        let pushed = p.quiet().expect("quiet");
        // The guest's used-idx wraps around during the migration.
        assert!(p.set_base(pushed, 65_530));
        p.hold_writes(false);
        for i in 10..30 {
            p.send(&frame(i, 100), &mut stats);
        }
        // QEMU read 15 of the 20 (10..25): the guest got 12 (10..22), 3 died in QEMU's queue,
        // 5 are unread.
        read_records(&mut peer, 15);
        let used = 65_530u16.wrapping_add(12);
        let r = p.take_unread(None, Some(used), &mut stats);
        assert_eq!(r.counted, Some(8), "{r:?}");
        assert_eq!(r.from_socket, 5);
        let ids: Vec<u32> = r.frames.iter().map(|f| id_of(f)).collect();
        assert_eq!(ids, (22..30).collect::<Vec<_>>());
        assert_eq!(stats.recovery_counted, 1);
        assert_eq!(stats.recovery_count_refused, 0);
        assert!(!p.has_base(), "a base serves one take-back");
    }

    /// The count is refused when it cannot be trusted; the older rules decide then.
    #[test]
    fn an_untrustworthy_count_is_refused() {
        let d = dir("refused");
        let (mut p, mut peer) = connected_port(&d);
        let mut stats = PortIoStats::default();
        // No base.
        p.send(&frame(0, 100), &mut stats);
        let r = p.take_unread(None, Some(7), &mut stats);
        assert_eq!(r.count_refused, Some("no base"));
        assert_eq!(r.frames.len(), 1, "the unread frame still comes back");
        read_records(&mut peer, 1);
        let base = |p: &mut QemuPort| {
            p.hold_writes(true);
            let n = p.quiet().expect("quiet");
            assert!(p.set_base(n, 100));
            p.hold_writes(false);
        };
        // A jumbo frame since the base: it may have filled several buffers.
        base(&mut p);
        p.send(&frame(1, 100), &mut stats);
        p.send(&frame(2, 4000), &mut stats);
        read_records(&mut peer, 2);
        let r = p.take_unread(None, Some(102), &mut stats);
        assert_eq!(
            r.count_refused,
            Some("a frame longer than one receive buffer since the base")
        );
        // More buffers used than frames written.
        base(&mut p);
        p.send(&frame(3, 100), &mut stats);
        read_records(&mut peer, 1);
        let r = p.take_unread(None, Some(105), &mut stats);
        assert_eq!(
            r.count_refused,
            Some("more buffers used than frames written (driver reset?)")
        );
        // Fewer left than unread in the socket.
        base(&mut p);
        p.send(&frame(4, 100), &mut stats);
        p.send(&frame(5, 100), &mut stats);
        let r = p.take_unread(None, Some(101), &mut stats);
        assert_eq!(
            r.count_refused,
            Some("fewer frames left than the socket holds unread")
        );
        assert_eq!(r.frames.len(), 2, "SIOCOUTQ decides: both unread");
        assert_eq!(stats.recovery_count_refused, 4);
        assert_eq!(stats.recovery_counted, 0);
    }

    /// A stopped QEMU may still read: frames written before the instant QEMU was known to run
    /// but not seen read by then are taken back even though the socket is empty by now; those
    /// seen read before it are not.
    #[test]
    fn frames_not_seen_read_while_qemu_ran_are_taken_back_even_if_read_later() {
        let d = dir("afterstop");
        let (mut p, mut peer) = connected_port(&d);
        let mut stats = PortIoStats::default();
        let t0 = wall_us();
        for i in 0..3 {
            p.send(&frame(i, 200), &mut stats);
        }
        // QEMU reads these while running; srmigd samples (as its loop does).
        read_records(&mut peer, 3);
        p.sample();
        let sampled = wall_us();
        std::thread::sleep(Duration::from_millis(2));
        // Frame 3 goes out just before the PASS, frame 4 after it.
        p.send(&frame(3, 200), &mut stats);
        std::thread::sleep(Duration::from_millis(1));
        let pass = wall_us();
        std::thread::sleep(Duration::from_millis(1));
        p.send(&frame(4, 200), &mut stats);
        // The stopping QEMU reads both (into its queue, where the guest never sees them).
        read_records(&mut peer, 2);
        let r = p.take_unread(Some(pass), None, &mut stats);
        assert_eq!((r.from_socket, r.after_stop), (0, 2));
        let ids: Vec<u32> = r.frames.iter().map(|f| id_of(f)).collect();
        assert_eq!(ids, vec![3, 4]);
        // The VM's last frame is frame 2, seen read at the sample.
        let kept = r.kept_delivered_us.expect("frame 2 is in the ring");
        assert!(t0 <= kept && kept <= sampled, "{t0} <= {kept} <= {sampled}");
    }

    /// What the lab lost (probe 19752 of a D -> S migration): a frame written after the PASS
    /// and read by the stopping QEMU, then a frame from the guest (QEMU flushes the guest's
    /// queued transmissions when it stops). The guest's frame proves nothing about when QEMU
    /// stopped running: the frame is still taken back.
    #[test]
    fn a_frame_from_the_guest_after_the_pass_does_not_vouch_for_earlier_reads() {
        let d = dir("rxevidence");
        let (mut p, mut peer) = connected_port(&d);
        let mut stats = PortIoStats::default();
        for i in 0..3 {
            p.send(&frame(i, 200), &mut stats);
        }
        read_records(&mut peer, 3);
        p.sample();
        std::thread::sleep(Duration::from_millis(1));
        let pass = wall_us();
        std::thread::sleep(Duration::from_millis(1));
        p.send(&frame(3, 200), &mut stats);
        read_records(&mut peer, 1);
        p.sample();
        std::thread::sleep(Duration::from_millis(1));
        let answer = frame(100, 90);
        std::io::Write::write_all(&mut peer, &record_header(answer.len())).expect("w");
        std::io::Write::write_all(&mut peer, &answer).expect("w");
        let mut batch = Batch::new(4);
        let mut got = 0;
        while got == 0 {
            got = p.recv_batch(PortId(0), &mut batch, &mut stats).frames;
        }
        std::thread::sleep(Duration::from_millis(1));
        let r = p.take_unread(Some(pass), None, &mut stats);
        let ids: Vec<u32> = r.frames.iter().map(|f| id_of(f)).collect();
        assert_eq!(ids, vec![3]);
    }

    /// srmigd last saw a frame unread well before the PASS, then was not scheduled until after
    /// QEMU read it: when QEMU read it is unknown, so it is taken back.
    #[test]
    fn a_frame_last_seen_unread_long_before_the_pass_but_read_after_is_taken_back() {
        let d = dir("stale");
        let (mut p, mut peer) = connected_port(&d);
        let mut stats = PortIoStats::default();
        for i in 0..3 {
            p.send(&frame(i, 200), &mut stats);
        }
        read_records(&mut peer, 3);
        p.sample();
        p.send(&frame(3, 200), &mut stats);
        p.sample();
        std::thread::sleep(Duration::from_millis(2));
        let pass = wall_us();
        std::thread::sleep(Duration::from_millis(1));
        read_records(&mut peer, 1);
        let r = p.take_unread(Some(pass), None, &mut stats);
        assert_eq!((r.from_socket, r.after_stop), (0, 1));
        let ids: Vec<u32> = r.frames.iter().map(|f| id_of(f)).collect();
        assert_eq!(ids, vec![3]);
    }
}
