//! Which frames written to a QEMU stream socket has QEMU not read yet?
//!
//! A paused QEMU stops reading its `-netdev stream` backend, so every frame srmigd wrote after
//! the source's STOP (and any written just before it that QEMU had not read) sits in the
//! socket. Those frames must reach the VM at its destination instead; this module finds them.
//!
//! # What the kernel tells the sender
//!
//! On an `AF_UNIX` stream socket `ioctl(SIOCOUTQ)` returns the socket's `sk_wmem_alloc`: the
//! *truesize* (data plus `sk_buff` overhead, e.g. 768 bytes for a 100-byte write, 2304 for
//! 1500 bytes on 6.x) of every skb the sender queued that the receiver has not consumed
//! *completely*. Each `sendmsg` of at most `SKB_MAX_HEAD` (~3.7 KiB) bytes becomes exactly one
//! linear skb, a partly read skb stays charged until its last byte is read, and skbs are
//! consumed in order. So, walking the writes from the newest back, the writes whose truesizes
//! add up to SIOCOUTQ are exactly the ones not fully read.
//!
//! The truesize of a write of `n` bytes depends only on `n` (the kernel's allocation size
//! classes). [`TruesizeProbe`] measures it on a private socketpair (write `n` bytes with no
//! reader, read SIOCOUTQ, drain) and caches the answer, so nothing here assumes a kernel's
//! internal constants.
//!
//! # The ring
//!
//! [`SentRing`] keeps copies of the last frames written (fixed slots; a slot's buffer grows at
//! most twice, to [`SMALL_SLOT`] and then to [`BUF_CAPACITY`], so the ring costs what the
//! frames written need, not the jumbo maximum for every slot) with the byte count of each write that carried part of the frame's record
//! (4-byte length + frame; one write per record unless the socket was nearly full). srmigd
//! writes one record per `sendmsg`, never two records in one write, so every skb belongs to one
//! frame and "skb not consumed" means "frame not (completely) read": QEMU either has the frame
//! or has not got it, and the ones it has not got are recovered whole (a partly read frame's
//! head, left in QEMU's reassembly buffer, dies with the source QEMU).
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use srmig_dataplane::BUF_CAPACITY;

/// Writes (skbs) recorded per frame; a record needing more is marked inexact.
const MAX_CHUNKS: usize = 4;
/// A slot's buffer for frames up to this size (an MTU-sized frame fits); a longer frame grows
/// it to [`BUF_CAPACITY`] for good.
pub const SMALL_SLOT: usize = 2048;

/// Unread bytes (skb truesize sum) the kernel still charges to `fd`: `ioctl(SIOCOUTQ)`.
pub fn outq(fd: &impl AsRawFd) -> io::Result<usize> {
    let mut v: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (== TIOCOUTQ) writes one c_int through the pointer, which points at a
    // live, exclusively borrowed c_int.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCOUTQ, &mut v as *mut libc::c_int) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(v).unwrap_or(0))
}

/// Measures (once per size) the truesize the kernel charges for one stream write of `n` bytes.
#[derive(Debug)]
pub struct TruesizeProbe {
    tx: UnixStream,
    rx: UnixStream,
    cache: HashMap<usize, usize>,
    scratch: Vec<u8>,
}

impl TruesizeProbe {
    /// A private socketpair for measurements.
    pub fn new() -> io::Result<TruesizeProbe> {
        let (tx, rx) = UnixStream::pair()?;
        tx.set_nonblocking(true)?;
        rx.set_nonblocking(true)?;
        Ok(TruesizeProbe {
            tx,
            rx,
            cache: HashMap::new(),
            scratch: Vec::new(),
        })
    }

    /// The truesize of one write of `n` bytes (`n` ≤ 64 KiB; larger writes are split by the
    /// kernel and are not measured here: returns `None`).
    pub fn truesize(&mut self, n: usize) -> io::Result<Option<usize>> {
        if n == 0 {
            return Ok(Some(0));
        }
        if n > 64 * 1024 {
            return Ok(None);
        }
        if let Some(&t) = self.cache.get(&n) {
            return Ok(Some(t));
        }
        self.scratch.resize(n.max(self.scratch.len()), 0);
        let before = outq(&self.tx)?;
        let sent = send_nonblocking(&self.tx, &self.scratch[..n])?;
        let after = outq(&self.tx)?;
        // Drain, so the next measurement starts from an empty pipe.
        let mut left = sent;
        while left > 0 {
            let k = recv_nonblocking(&self.rx, &mut self.scratch[..left])?;
            if k == 0 {
                break;
            }
            left -= k;
        }
        if sent != n || after <= before {
            return Ok(None);
        }
        let t = after - before;
        self.cache.insert(n, t);
        Ok(Some(t))
    }
}

fn send_nonblocking(s: &UnixStream, b: &[u8]) -> io::Result<usize> {
    // SAFETY: `b` is a live slice; the kernel reads at most `b.len()` bytes from it.
    let r = unsafe {
        libc::send(
            s.as_raw_fd(),
            b.as_ptr().cast(),
            b.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

fn recv_nonblocking(s: &UnixStream, b: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `b` is a live, exclusively borrowed slice; the kernel writes at most `b.len()`.
    let r = unsafe {
        libc::recv(
            s.as_raw_fd(),
            b.as_mut_ptr().cast(),
            b.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(r as usize)
}

/// One frame written (or being written) to the socket.
#[derive(Debug, Clone)]
struct Slot {
    /// Empty until the slot's first frame, then [`SMALL_SLOT`] or [`BUF_CAPACITY`] bytes.
    data: Vec<u8>,
    len: usize,
    /// When its record's first byte was written (wall clock, µs since the Unix epoch).
    written_at_us: i64,
    /// When it was first seen completely read (wall clock, µs), if it has been: QEMU read it
    /// at that instant or before.
    seen_read_at_us: Option<i64>,
    /// Bytes of each write that carried part of this frame's record, oldest first.
    chunks: [u32; MAX_CHUNKS],
    n_chunks: u8,
    /// More writes than `MAX_CHUNKS` carried this record (accounting is approximate).
    overflow: bool,
}

/// Where the unread part of the stream begins, as far as the ring can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unread {
    /// How many of the newest frames in the ring are not completely read.
    pub frames: usize,
    /// The truesizes of those frames' writes add up to SIOCOUTQ exactly (otherwise the walk
    /// stopped at the first frame that reached or passed it, or ran out of ring).
    pub exact: bool,
    /// SIOCOUTQ is larger than everything the ring remembers: older unread frames fell off
    /// the ring and cannot be recovered.
    pub beyond_ring: bool,
}

/// The last frames written to one QEMU socket, with the writes that carried them.
#[derive(Debug)]
pub struct SentRing {
    slots: Vec<Slot>,
    /// Index of the oldest frame.
    head: usize,
    /// Frames held.
    count: usize,
    /// How many of the newest frames are not known to be read yet.
    pending: usize,
}

impl SentRing {
    /// A ring of `capacity` frames of up to [`BUF_CAPACITY`] bytes (a slot's buffer is
    /// allocated when a frame first needs it: see the module doc).
    pub fn new(capacity: usize) -> SentRing {
        let capacity = capacity.max(1);
        let slot = Slot {
            data: Vec::new(),
            len: 0,
            written_at_us: 0,
            seen_read_at_us: None,
            chunks: [0; MAX_CHUNKS],
            n_chunks: 0,
            overflow: false,
        };
        SentRing {
            slots: vec![slot; capacity],
            head: 0,
            count: 0,
            pending: 0,
        }
    }

    /// Frames held.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the ring is empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Forgets every frame.
    pub fn clear(&mut self) {
        self.head = 0;
        self.count = 0;
        self.pending = 0;
    }

    /// How many of the newest frames are not known to be completely read.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// When the oldest frame not known to be read was written.
    pub fn oldest_pending_written_at(&self) -> Option<i64> {
        (self.pending > 0).then(|| self.slot(self.pending - 1).written_at_us)
    }

    /// Records an observation made at `now_us` (taken after SIOCOUTQ was read): the newest
    /// `unread` frames are not completely read, every older one is.
    pub fn observe(&mut self, unread: usize, now_us: i64) {
        let cap = self.slots.len();
        for age in unread..self.pending.min(self.count) {
            let idx = (self.head + self.count - 1 - age) % cap;
            let s = &mut self.slots[idx];
            s.seen_read_at_us.get_or_insert(now_us);
        }
        self.pending = self.pending.min(unread);
    }

    /// How many of the newest frames were not seen completely read before `at_us`: unread
    /// now, or first seen read at or after `at_us`. Only a frame seen read before `at_us` is
    /// known to have been read before then; for the others the read may have come later,
    /// however long ago they were last seen unread (srmigd samples late when it is not
    /// scheduled).
    pub fn not_read_before(&self, at_us: i64) -> usize {
        (0..self.count)
            .take_while(|&age| self.slot(age).seen_read_at_us.is_none_or(|t| t >= at_us))
            .count()
    }

    /// Records a frame whose record's first write carried `first_write` bytes, written at
    /// `written_at_us` (wall clock, µs). The oldest frame is overwritten when the ring is full.
    /// Frames longer than [`BUF_CAPACITY`] are truncated in the copy (the engine never
    /// produces them).
    pub fn push(&mut self, frame: &[u8], first_write: usize, written_at_us: i64) {
        let cap = self.slots.len();
        let idx = if self.count == cap {
            let i = self.head;
            self.head = (self.head + 1) % cap;
            i
        } else {
            let i = (self.head + self.count) % cap;
            self.count += 1;
            i
        };
        let s = &mut self.slots[idx];
        let n = frame.len().min(BUF_CAPACITY);
        if s.data.len() < n {
            s.data.resize(
                if n <= SMALL_SLOT {
                    SMALL_SLOT
                } else {
                    BUF_CAPACITY
                },
                0,
            );
        }
        s.data[..n].copy_from_slice(&frame[..n]);
        s.len = n;
        s.written_at_us = written_at_us;
        s.seen_read_at_us = None;
        self.pending = (self.pending + 1).min(cap);
        s.chunks = [0; MAX_CHUNKS];
        s.chunks[0] = first_write as u32;
        s.n_chunks = 1;
        s.overflow = false;
    }

    /// Another write carried `n` more bytes of the newest frame's record.
    pub fn add_write(&mut self, n: usize) {
        if self.count == 0 {
            return;
        }
        let idx = (self.head + self.count - 1) % self.slots.len();
        let s = &mut self.slots[idx];
        let k = usize::from(s.n_chunks);
        if k < MAX_CHUNKS {
            s.chunks[k] = n as u32;
            s.n_chunks += 1;
        } else {
            // Fold into the last write: the truesize walk becomes approximate.
            s.chunks[MAX_CHUNKS - 1] = s.chunks[MAX_CHUNKS - 1].saturating_add(n as u32);
            s.overflow = true;
        }
    }

    fn slot(&self, age_from_newest: usize) -> &Slot {
        let cap = self.slots.len();
        &self.slots[(self.head + self.count - 1 - age_from_newest) % cap]
    }

    /// Finds the frames not completely read, given the socket's SIOCOUTQ and the truesize of
    /// a write of each size. A truesize that cannot be measured counts as the write's length
    /// plus the smallest overhead seen (approximate: `exact` is false then).
    pub fn unread(&self, outq: usize, mut truesize: impl FnMut(usize) -> Option<usize>) -> Unread {
        if outq == 0 {
            return Unread {
                frames: 0,
                exact: true,
                beyond_ring: false,
            };
        }
        let mut acc = 0usize;
        let mut exact = true;
        for age in 0..self.count {
            let s = self.slot(age);
            if s.overflow {
                exact = false;
            }
            for &c in s.chunks[..usize::from(s.n_chunks)].iter().rev() {
                match truesize(c as usize) {
                    Some(t) => acc += t,
                    None => {
                        exact = false;
                        acc += c as usize;
                    }
                }
            }
            if acc >= outq {
                return Unread {
                    frames: age + 1,
                    exact: exact && acc == outq,
                    beyond_ring: false,
                };
            }
        }
        Unread {
            frames: self.count,
            exact: false,
            beyond_ring: true,
        }
    }

    /// How many of the newest frames were written at or after `at_us` (wall clock, µs).
    pub fn written_since(&self, at_us: i64) -> usize {
        (0..self.count)
            .take_while(|&age| self.slot(age).written_at_us >= at_us)
            .count()
    }

    /// (written at, first seen read at) of the frame `age` places behind the newest (wall
    /// clock, µs), if the ring holds it (age 0 is the newest).
    pub fn times_at(&self, age: usize) -> Option<(i64, Option<i64>)> {
        (age < self.count).then(|| {
            let s = self.slot(age);
            (s.written_at_us, s.seen_read_at_us)
        })
    }

    /// (written at, first seen read at) of the newest `n` frames, oldest first (logs).
    pub fn tail_times(&self, n: usize) -> Vec<(i64, Option<i64>)> {
        let n = n.min(self.count);
        (0..n)
            .rev()
            .map(|age| {
                let s = self.slot(age);
                (s.written_at_us, s.seen_read_at_us)
            })
            .collect()
    }

    /// The newest `n` frames, oldest first.
    pub fn newest(&self, n: usize) -> impl Iterator<Item = &[u8]> {
        let n = n.min(self.count);
        (0..n).rev().map(move |age| {
            let s = self.slot(age);
            &s.data[..s.len]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn frame(i: u32, len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len];
        f[..4].copy_from_slice(&i.to_be_bytes());
        f
    }

    fn record(f: &[u8]) -> Vec<u8> {
        let mut r = (f.len() as u32).to_be_bytes().to_vec();
        r.extend_from_slice(f);
        r
    }

    #[test]
    fn probe_measures_and_caches() {
        let mut p = TruesizeProbe::new().expect("probe");
        let a = p.truesize(100).expect("measure").expect("size");
        let b = p.truesize(1504).expect("measure").expect("size");
        assert!(a > 100 && b > 1504 && b >= a, "{a} {b}");
        assert_eq!(p.truesize(100).expect("cached"), Some(a));
        assert_eq!(p.truesize(0).expect("zero"), Some(0));
        assert_eq!(p.truesize(1 << 20).expect("big"), None);
    }

    #[test]
    fn ring_overwrites_oldest_and_lists_newest_in_order() {
        let mut r = SentRing::new(3);
        for i in 0..5u32 {
            r.push(&frame(i, 64), 68, i64::from(i));
        }
        assert_eq!(r.len(), 3);
        let got: Vec<u32> = r
            .newest(2)
            .map(|f| u32::from_be_bytes([f[0], f[1], f[2], f[3]]))
            .collect();
        assert_eq!(got, vec![3, 4]);
        let all: Vec<u32> = r
            .newest(10)
            .map(|f| u32::from_be_bytes([f[0], f[1], f[2], f[3]]))
            .collect();
        assert_eq!(all, vec![2, 3, 4]);
        // Written at 2, 3, 4 (µs): since 3 are the newest two.
        assert_eq!(r.written_since(3), 2);
        assert_eq!(r.written_since(0), 3);
        assert_eq!(r.written_since(5), 0);
    }

    #[test]
    fn a_frame_is_read_before_an_instant_only_if_seen_read_before_it() {
        let mut r = SentRing::new(8);
        for i in 0..4u32 {
            r.push(&frame(i, 64), 68, 100 + i64::from(i));
        }
        assert_eq!(r.pending(), 4);
        assert_eq!(r.oldest_pending_written_at(), Some(100));
        // At 200 the newest two are still unread; the older two are read.
        r.observe(2, 200);
        assert_eq!(r.pending(), 2);
        assert_eq!(r.oldest_pending_written_at(), Some(102));
        assert_eq!(r.not_read_before(201), 2);
        assert_eq!(
            r.not_read_before(200),
            4,
            "seen read at 200 is not before 200"
        );
        // srmigd is not scheduled for a while: at 5000 everything is read. Frames 2 and 3 were
        // last seen unread at 200 but may have been read at any time up to 5000.
        r.observe(0, 5000);
        assert_eq!(r.pending(), 0);
        assert_eq!(r.not_read_before(201), 2);
        assert_eq!(r.not_read_before(5000), 2);
        assert_eq!(r.not_read_before(5001), 0);
        // Later observations do not move the first sighting.
        r.observe(0, 6000);
        assert_eq!(r.not_read_before(5001), 0);
        r.push(&frame(9, 64), 68, 7000);
        assert_eq!(r.not_read_before(5001), 1, "an unread frame always counts");
        assert_eq!(r.not_read_before(0), 5);
        let times = r.tail_times(2);
        assert_eq!(times, vec![(103, Some(5000)), (7000, None)]);
    }

    #[test]
    fn unread_walk_with_synthetic_truesizes() {
        let mut r = SentRing::new(8);
        // truesize = len + 1000, for the walk's arithmetic.
        let ts = |n: usize| Some(n + 1000);
        for i in 0..4u32 {
            r.push(&frame(i, 96), 100, 0);
        }
        assert_eq!(r.unread(0, ts).frames, 0);
        let u = r.unread(2200, ts);
        assert_eq!(
            u,
            Unread {
                frames: 2,
                exact: true,
                beyond_ring: false
            }
        );
        // Between two frames' sums: the partly charged one counts as unread, inexactly.
        assert_eq!(r.unread(2000, ts).frames, 2);
        assert!(!r.unread(2000, ts).exact);
        // More than the ring remembers.
        let u = r.unread(100_000, ts);
        assert!(u.beyond_ring && u.frames == 4);
        // A frame written in two parts: both writes count.
        r.push(&frame(9, 96), 60, 0);
        r.add_write(40);
        assert_eq!(r.unread(1060 + 1040, ts).frames, 1);
        assert!(r.unread(1060 + 1040, ts).exact);
    }

    /// The real thing: frames written one record per write to a unix stream socketpair, a
    /// reader that consumes some of them (one in part) and then stops; SIOCOUTQ on the writer
    /// plus the ring find exactly the frames the reader has not completely read.
    #[test]
    fn recovers_exactly_the_frames_a_stopped_reader_did_not_read() {
        let (mut w, mut rd) = UnixStream::pair().expect("pair");
        let mut probe = TruesizeProbe::new().expect("probe");
        let mut ring = SentRing::new(64);
        let lens = [60usize, 1514, 98, 590, 1200, 74, 1514, 300, 66, 1000];
        let mut total_read = 0usize;
        for (read_after, label) in [(3usize, "partial"), (5, "boundary"), (0, "none")] {
            ring.clear();
            // Drain leftovers of the previous round.
            let pending = crate::port::qemu_ring::tests::fionread(&rd);
            let mut sink = vec![0u8; pending];
            rd.read_exact(&mut sink).expect("drain");
            let mut records = Vec::new();
            for (i, &len) in lens.iter().enumerate() {
                let f = frame(i as u32, len);
                let rec = record(&f);
                w.write_all(&rec).expect("write");
                ring.push(&f, rec.len(), 0);
                records.push(rec);
            }
            // The reader takes `read_after` whole records, then half of the next one
            // (except in the "boundary" and "none" rounds).
            let mut want: usize = records[..read_after].iter().map(Vec::len).sum();
            if label == "partial" {
                want += records[read_after].len() / 2;
            }
            let mut buf = vec![0u8; want];
            rd.read_exact(&mut buf).expect("read");
            total_read += want;
            let q = outq(&w).expect("outq");
            let u = ring.unread(q, |n| probe.truesize(n).ok().flatten());
            assert!(u.exact, "{label}: {u:?}");
            assert!(!u.beyond_ring, "{label}");
            assert_eq!(u.frames, lens.len() - read_after, "{label}");
            let first: Vec<u8> = ring.newest(u.frames).next().expect("frame").to_vec();
            assert_eq!(
                u32::from_be_bytes([first[0], first[1], first[2], first[3]]),
                read_after as u32,
                "{label}"
            );
        }
        assert!(total_read > 0);
    }

    pub(crate) fn fionread(s: &UnixStream) -> usize {
        let mut v: libc::c_int = 0;
        // SAFETY: FIONREAD writes one c_int through a pointer to a live c_int.
        let r = unsafe { libc::ioctl(s.as_raw_fd(), libc::FIONREAD, &mut v as *mut libc::c_int) };
        assert!(r >= 0, "FIONREAD failed");
        v as usize
    }
}
