//! End.SBUF buffers: per-VM FIFOs of held packets in preallocated storage.
//!
//! Storage is an arena of [`CHUNK_SIZE`]-byte chunks allocated once at configuration; a held
//! (L3) packet is copied into a chain of chunks (one for a packet up to 512 bytes, 19 for a
//! 9216-byte jumbo), and copied out into the output buffer on release. Each VM has a ring of
//! held-packet records with capacity `per_vm_packets` (allocated once, never grown); a stack
//! holds the free chunks. No allocation per packet.
//!
//! Why copy rather than exchange buffers: with jumbo frames a packet buffer is 9742 bytes
//! ([`crate::batch::BUF_SIZE`]). Taking the received buffer on hold (as this store once did)
//! needs a full-size spare for every packet it can hold: 80 MB for the default 8192 packets,
//! 1.3 GB at [`MAX_GLOBAL_PACKETS`]. Chunks make the arena follow the byte bound instead:
//! `global_bytes / CHUNK_SIZE + global_packets` chunks are enough for any mix of sizes within
//! both bounds (each packet wastes less than one chunk), capped at what `global_packets`
//! maximum-size packets would need. The default configuration takes 12 MiB. The copy costs
//! about as much as the buffer exchange it replaces for the usual short packets.
//!
//! Bounds: per VM and global, in packets and bytes; and by age (`max_age_ms`): a packet held
//! since `t` is expired at `now >= t + max_age` and is dropped (`BufferExpired`) instead of being
//! released. The FIFO preserves arrival order; since arrivals are in time order, the head of
//! each queue is its oldest packet.

use std::collections::VecDeque;

use crate::batch::{PacketBuf, BUF_CAPACITY, HEADROOM};
use crate::config::{BufferConfig, ConfigError};
use crate::drop::DropReason;
use crate::time::Instant;
use crate::vm::VmId;

/// The largest held (decapsulated, L3) packet: a frame of the buffer capacity minus its
/// Ethernet header.
pub const SLOT_SIZE: usize = BUF_CAPACITY - ETH;

/// Bytes per storage chunk.
pub const CHUNK_SIZE: usize = 512;

/// Upper bound on `global_packets`.
pub const MAX_GLOBAL_PACKETS: u32 = 1 << 17;

const ETH: usize = 14;
const NO_CHUNK: u32 = u32::MAX;
/// Where a released packet's L3 header is put in the output buffer (its Ethernet header goes
/// in front, the rest of the headroom stays free).
const RELEASE_L3: usize = HEADROOM + ETH;

/// One held packet.
#[derive(Debug, Clone, Copy)]
struct HeldPkt {
    /// First chunk of its chain.
    first: u32,
    /// L3 length.
    len: u32,
    arrived: Instant,
}

/// A packet moved out of a buffer: its arrival time and where it lies in the buffer it was
/// copied into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Released {
    pub(crate) arrived: Instant,
    pub(crate) l3: usize,
    pub(crate) end: usize,
}

#[derive(Debug)]
struct VmQueue {
    ring: VecDeque<HeldPkt>,
    bytes: u64,
}

/// Buffer occupancy: packets and bytes held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Occupancy {
    /// Packets held.
    pub packets: u64,
    /// Bytes held (L3 packet bytes).
    pub bytes: u64,
}

/// All End.SBUF buffers of the node.
#[derive(Debug)]
pub(crate) struct SbufStore {
    cfg: BufferConfig,
    max_age_ns: u64,
    /// `next.len()` chunks of [`CHUNK_SIZE`] bytes.
    arena: Box<[u8]>,
    /// The chunk after each chunk in its packet's chain ([`NO_CHUNK`] at the end).
    next: Vec<u32>,
    /// Free chunks (a stack: recently freed chunks are reused first, still in cache).
    free: Vec<u32>,
    queues: Vec<VmQueue>,
    total: Occupancy,
}

impl SbufStore {
    /// Validates `cfg` and preallocates storage for `vms` VMs.
    pub(crate) fn new(cfg: BufferConfig, vms: usize) -> Result<SbufStore, ConfigError> {
        if cfg.global_packets > MAX_GLOBAL_PACKETS {
            return Err(ConfigError::invalid(
                "buffer.global_packets",
                format!(
                    "{} exceeds the maximum {MAX_GLOBAL_PACKETS}",
                    cfg.global_packets
                ),
            ));
        }
        if cfg.per_vm_packets > cfg.global_packets {
            return Err(ConfigError::invalid(
                "buffer.per_vm_packets",
                "must not exceed buffer.global_packets",
            ));
        }
        if cfg.per_vm_bytes > cfg.global_bytes {
            return Err(ConfigError::invalid(
                "buffer.per_vm_bytes",
                "must not exceed buffer.global_bytes",
            ));
        }
        let chunks = Self::chunks_for(&cfg);
        Ok(SbufStore {
            cfg,
            max_age_ns: cfg.max_age_ms.saturating_mul(1_000_000),
            arena: vec![0u8; chunks * CHUNK_SIZE].into_boxed_slice(),
            next: vec![NO_CHUNK; chunks],
            free: (0..chunks as u32).rev().collect(),
            queues: (0..vms)
                .map(|_| VmQueue {
                    ring: VecDeque::with_capacity(cfg.per_vm_packets as usize),
                    bytes: 0,
                })
                .collect(),
            total: Occupancy::default(),
        })
    }

    /// Chunks that hold any mix of packets within both global bounds.
    fn chunks_for(cfg: &BufferConfig) -> usize {
        let packets = cfg.global_packets as usize;
        let by_bytes = usize::try_from(cfg.global_bytes.div_ceil(CHUNK_SIZE as u64))
            .unwrap_or(usize::MAX)
            .saturating_add(packets);
        by_bytes.min(packets * SLOT_SIZE.div_ceil(CHUNK_SIZE))
    }

    /// Bytes of packet storage preallocated (the arena).
    pub(crate) fn storage_bytes(&self) -> usize {
        self.arena.len()
    }

    /// Appends a copy of the L3 packet `pkt.buf[l3..pkt.end]` to `vm`'s FIFO (`pkt` is left
    /// as it was).
    #[inline]
    pub(crate) fn push(
        &mut self,
        vm: VmId,
        now: Instant,
        pkt: &PacketBuf,
        l3: usize,
    ) -> Result<(), DropReason> {
        let Some(data) = pkt.buf.get(l3..pkt.end) else {
            return Err(DropReason::Truncated);
        };
        let len = data.len();
        if len > SLOT_SIZE {
            return Err(DropReason::BufferPacketTooLarge);
        }
        let Some(q) = self.queues.get_mut(vm.index()) else {
            return Err(DropReason::BufferFull);
        };
        let len64 = len as u64;
        let need = len.div_ceil(CHUNK_SIZE).max(1);
        if q.ring.len() >= self.cfg.per_vm_packets as usize
            || self.total.packets >= u64::from(self.cfg.global_packets)
            || q.bytes + len64 > self.cfg.per_vm_bytes
            || self.total.bytes + len64 > self.cfg.global_bytes
            || self.free.len() < need
        {
            return Err(DropReason::BufferFull);
        }
        if len <= CHUNK_SIZE {
            // The common case: one chunk, one copy (an empty packet takes a chunk too, so every
            // record owns one).
            let Some(c) = self.free.pop() else {
                return Err(DropReason::BufferFull);
            };
            let at = c as usize * CHUNK_SIZE;
            self.arena[at..at + len].copy_from_slice(data);
            self.next[c as usize] = NO_CHUNK;
            q.ring.push_back(HeldPkt {
                first: c,
                len: len as u32,
                arrived: now,
            });
            q.bytes += len64;
            self.total.packets += 1;
            self.total.bytes += len64;
            return Ok(());
        }
        // Copy chunk by chunk, linking the chain from the end so each chunk is taken once.
        let mut first = NO_CHUNK;
        for part in data.chunks(CHUNK_SIZE).rev() {
            let Some(c) = self.free.pop() else {
                return Err(DropReason::BufferFull);
            };
            let at = c as usize * CHUNK_SIZE;
            self.arena[at..at + part.len()].copy_from_slice(part);
            self.next[c as usize] = first;
            first = c;
        }
        q.ring.push_back(HeldPkt {
            first,
            len: len as u32,
            arrived: now,
        });
        q.bytes += len64;
        self.total.packets += 1;
        self.total.bytes += len64;
        Ok(())
    }

    /// Frees the chunks of `h`, copying them first to `out` at [`RELEASE_L3`] if given.
    #[inline]
    fn take(&mut self, h: HeldPkt, mut out: Option<&mut PacketBuf>) {
        let mut c = h.first;
        let mut left = h.len as usize;
        let mut at = RELEASE_L3;
        loop {
            let n = left.min(CHUNK_SIZE);
            let i = c as usize;
            if let Some(out) = out.as_deref_mut() {
                let src = i * CHUNK_SIZE;
                out.buf[at..at + n].copy_from_slice(&self.arena[src..src + n]);
            }
            at += n;
            left -= n;
            self.free.push(c);
            c = self.next[i];
            if c == NO_CHUNK || left == 0 {
                break;
            }
        }
    }

    /// Removes `h` (the head just popped from `q`) from the totals.
    #[inline]
    fn account_pop(total: &mut Occupancy, q: &mut VmQueue, h: HeldPkt) {
        q.bytes -= u64::from(h.len);
        total.packets -= 1;
        total.bytes -= u64::from(h.len);
    }

    fn released(h: HeldPkt) -> Released {
        Released {
            arrived: h.arrived,
            l3: RELEASE_L3,
            end: RELEASE_L3 + h.len as usize,
        }
    }

    /// Removes the head of `vm`'s FIFO; with `out`, the packet is copied into it (it is then
    /// `out.buf[l3..end]` of the returned [`Released`], with room for an Ethernet header in
    /// front).
    #[inline]
    pub(crate) fn pop(&mut self, vm: VmId, out: Option<&mut PacketBuf>) -> Option<Released> {
        let q = self.queues.get_mut(vm.index())?;
        let h = q.ring.pop_front()?;
        Self::account_pop(&mut self.total, q, h);
        self.take(h, out);
        Some(Self::released(h))
    }

    /// Releases the head of `vm`'s FIFO into `out` (see [`SbufStore::pop`]) unless it is
    /// expired at `now`, in which case it is dropped; `None` when empty. One queue access for
    /// what `oldest`, `is_expired` and `pop` do together.
    #[inline]
    pub(crate) fn pop_fresh(
        &mut self,
        vm: VmId,
        now: Instant,
        out: &mut PacketBuf,
    ) -> Option<Result<Released, Instant>> {
        let q = self.queues.get_mut(vm.index())?;
        let h = q.ring.pop_front()?;
        Self::account_pop(&mut self.total, q, h);
        if now.as_nanos().saturating_sub(h.arrived.as_nanos()) >= self.max_age_ns {
            self.take(h, None);
            return Some(Err(h.arrived));
        }
        self.take(h, Some(out));
        Some(Ok(Self::released(h)))
    }

    /// Arrival time of the head of `vm`'s FIFO.
    #[inline]
    pub(crate) fn oldest(&self, vm: VmId) -> Option<Instant> {
        let q = self.queues.get(vm.index())?;
        q.ring.front().map(|h| h.arrived)
    }
    /// Whether a packet that arrived at `arrived` is expired at `now`.
    #[inline]
    pub(crate) fn is_expired(&self, arrived: Instant, now: Instant) -> bool {
        now.as_nanos().saturating_sub(arrived.as_nanos()) >= self.max_age_ns
    }

    /// When the head of `vm`'s FIFO expires.
    pub(crate) fn deadline(&self, vm: VmId) -> Option<Instant> {
        self.oldest(vm)
            .map(|t| Instant(t.as_nanos().saturating_add(self.max_age_ns)))
    }

    /// Drops expired packets from the head of `vm`'s FIFO; returns how many.
    pub(crate) fn expire(&mut self, vm: VmId, now: Instant) -> u64 {
        let mut n = 0;
        while let Some(t) = self.oldest(vm) {
            if !self.is_expired(t, now) {
                break;
            }
            self.pop(vm, None);
            n += 1;
        }
        n
    }

    /// Drops everything held for `vm`; returns how many packets.
    pub(crate) fn discard(&mut self, vm: VmId) -> u64 {
        let mut n = 0;
        while self.pop(vm, None).is_some() {
            n += 1;
        }
        n
    }

    #[inline]
    pub(crate) fn is_empty(&self, vm: VmId) -> bool {
        self.queues
            .get(vm.index())
            .is_none_or(|q| q.ring.is_empty())
    }

    /// Occupancy of `vm`'s FIFO.
    pub(crate) fn occupancy(&self, vm: VmId) -> Occupancy {
        self.queues
            .get(vm.index())
            .map_or(Occupancy::default(), |q| Occupancy {
                packets: q.ring.len() as u64,
                bytes: q.bytes,
            })
    }

    /// Occupancy of all FIFOs together.
    pub(crate) fn total(&self) -> Occupancy {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::HEADROOM;

    /// A packet buffer holding `bytes` as its L3 packet (after a 14-byte Ethernet header).
    fn buf(bytes: &[u8]) -> PacketBuf {
        let mut p = PacketBuf::new();
        p.buf[HEADROOM..HEADROOM + bytes.len()].copy_from_slice(bytes);
        p.start = HEADROOM - 14;
        p.end = HEADROOM + bytes.len();
        p
    }

    fn push(b: &mut SbufStore, vm: VmId, t: Instant, bytes: &[u8]) -> Result<(), DropReason> {
        b.push(vm, t, &mut buf(bytes), HEADROOM)
    }

    fn cfg() -> BufferConfig {
        BufferConfig {
            per_vm_packets: 3,
            per_vm_bytes: 250,
            global_packets: 4,
            global_bytes: 400,
            max_age_ms: 10,
        }
    }

    #[test]
    fn fifo_order_and_bounds() {
        let mut b = SbufStore::new(cfg(), 2).unwrap();
        let (a, c) = (VmId(0), VmId(1));
        for i in 0..3u8 {
            push(&mut b, a, Instant::from_millis(u64::from(i)), &[i; 50]).unwrap();
        }
        // per-VM packet bound
        assert_eq!(
            push(&mut b, a, Instant::ZERO, &[9; 10]),
            Err(DropReason::BufferFull)
        );
        assert_eq!(
            b.occupancy(a),
            Occupancy {
                packets: 3,
                bytes: 150
            }
        );
        // per-VM byte bound (150 + 101 > 250), global packets (3 + 1 == 4 ok, then full)
        push(&mut b, c, Instant::ZERO, &[7; 100]).unwrap();
        assert_eq!(
            push(&mut b, c, Instant::ZERO, &[7; 10]),
            Err(DropReason::BufferFull)
        );
        assert_eq!(
            b.total(),
            Occupancy {
                packets: 4,
                bytes: 250
            }
        );
        let mut out = PacketBuf::new();
        for i in 0..3u8 {
            let r = b.pop(a, Some(&mut out)).unwrap();
            assert_eq!(
                (r.arrived, r.l3, r.end),
                (
                    Instant::from_millis(u64::from(i)),
                    RELEASE_L3,
                    RELEASE_L3 + 50
                )
            );
            assert_eq!(&out.buf[r.l3..r.end], &[i; 50]);
        }
        assert!(b.pop(a, None).is_none());
        assert!(b.is_empty(a));
        let mut big = PacketBuf::new();
        big.end = HEADROOM + SLOT_SIZE + 1;
        assert_eq!(
            b.push(a, Instant::ZERO, &mut big, HEADROOM),
            Err(DropReason::BufferPacketTooLarge)
        );
    }

    #[test]
    fn byte_bounds() {
        let mut b = SbufStore::new(cfg(), 2).unwrap();
        push(&mut b, VmId(0), Instant::ZERO, &[0; 200]).unwrap();
        assert_eq!(
            push(&mut b, VmId(0), Instant::ZERO, &[0; 51]),
            Err(DropReason::BufferFull)
        );
        push(&mut b, VmId(1), Instant::ZERO, &[0; 200]).unwrap();
        // global bytes: 400 reached
        assert_eq!(
            push(&mut b, VmId(1), Instant::ZERO, &[0; 1]),
            Err(DropReason::BufferFull)
        );
    }

    #[test]
    fn pop_fresh_drops_expired_heads() {
        let mut b = SbufStore::new(cfg(), 1).unwrap();
        let v = VmId(0);
        push(&mut b, v, Instant::from_millis(0), &[1; 20]).unwrap();
        push(&mut b, v, Instant::from_millis(5), &[2; 30]).unwrap();
        let mut out = PacketBuf::new();
        let now = Instant::from_millis(12);
        assert_eq!(
            b.pop_fresh(v, now, &mut out),
            Some(Err(Instant::from_millis(0)))
        );
        let r = b.pop_fresh(v, now, &mut out).unwrap().unwrap();
        assert_eq!(&out.buf[r.l3..r.end], &[2; 30]);
        assert_eq!(b.pop_fresh(v, now, &mut out), None);
        assert_eq!(b.total(), Occupancy::default());
        assert_eq!(b.free.len(), SbufStore::chunks_for(&cfg()));
    }

    #[test]
    fn expiry_and_discard() {
        let mut b = SbufStore::new(cfg(), 1).unwrap();
        let v = VmId(0);
        push(&mut b, v, Instant::from_millis(0), &[1]).unwrap();
        push(&mut b, v, Instant::from_millis(5), &[2]).unwrap();
        assert_eq!(b.deadline(v), Some(Instant::from_millis(10)));
        assert_eq!(b.expire(v, Instant::from_millis(9)), 0);
        assert_eq!(b.expire(v, Instant::from_millis(10)), 1);
        assert_eq!(b.deadline(v), Some(Instant::from_millis(15)));
        assert_eq!(b.discard(v), 1);
        assert_eq!(b.total(), Occupancy::default());
        assert_eq!(b.deadline(v), None);
    }

    #[test]
    fn storage_follows_the_byte_bound() {
        // Default: 8 MiB / 512 + 8192 chunks = 12 MiB (full jumbo buffers would be 80 MB).
        let b = SbufStore::new(BufferConfig::default(), 1).unwrap();
        assert_eq!(b.storage_bytes(), 12 << 20);
        // A byte bound beyond what the packets can use is capped by the packet bound.
        let c = BufferConfig {
            global_bytes: u64::MAX,
            per_vm_bytes: 1,
            ..cfg()
        };
        assert_eq!(
            SbufStore::chunks_for(&c),
            4 * SLOT_SIZE.div_ceil(CHUNK_SIZE)
        );
        // Jumbo packets are held and come out whole; the chunks return to the free list.
        let mut big = SbufStore::new(BufferConfig::default(), 1).unwrap();
        let jumbo: Vec<u8> = (0..9216u32).map(|i| i as u8).collect();
        push(&mut big, VmId(0), Instant::ZERO, &jumbo).unwrap();
        push(&mut big, VmId(0), Instant::ZERO, &[]).unwrap();
        let free = big.free.len();
        let mut out = PacketBuf::new();
        let r = big.pop(VmId(0), Some(&mut out)).unwrap();
        assert_eq!(&out.buf[r.l3..r.end], &jumbo[..]);
        assert_eq!(big.free.len(), free + 18);
        assert_eq!(
            big.pop(VmId(0), Some(&mut out)).map(|r| r.end - r.l3),
            Some(0)
        );
        assert_eq!(
            big.free.len(),
            SbufStore::chunks_for(&BufferConfig::default())
        );
    }

    #[test]
    fn config_validation() {
        let mut c = cfg();
        c.per_vm_packets = 5;
        assert_eq!(
            SbufStore::new(c, 1).unwrap_err().path(),
            "buffer.per_vm_packets"
        );
        let mut c = cfg();
        c.global_packets = MAX_GLOBAL_PACKETS + 1;
        assert_eq!(
            SbufStore::new(c, 1).unwrap_err().path(),
            "buffer.global_packets"
        );
    }
}
