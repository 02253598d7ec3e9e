//! End.SBUF buffers: per-VM FIFOs of held packets in preallocated storage.
//!
//! Storage is a pool of `global_packets` packet buffers (the size of a [`PacketBuf`]'s) allocated
//! once at configuration; each VM has a ring of slot indices with capacity `per_vm_packets`
//! (allocated once, never grown), and a free list holds unused slots. Holding a packet
//! exchanges the received [`PacketBuf`]'s storage with a free pool buffer, releasing it
//! exchanges the pool buffer with the output's: no copy of the packet and no allocation.
//!
//! Bounds: per VM and global, in packets and bytes; and by age (`max_age_ms`): a packet held
//! since `t` is expired at `now >= t + max_age` and is dropped (`BufferExpired`) instead of being
//! released. The FIFO preserves arrival order; since arrivals are in time order, the head of
//! each queue is its oldest packet.

use std::collections::VecDeque;

use crate::batch::{PacketBuf, BUF_SIZE};
use crate::config::{BufferConfig, ConfigError};
use crate::drop::DropReason;
use crate::time::Instant;
use crate::vm::VmId;

/// The largest held (decapsulated, L3) packet.
pub const SLOT_SIZE: usize = 2048;

/// Upper bound on `global_packets` (the pool is `global_packets` buffers of
/// [`crate::batch::BUF_SIZE`] bytes).
pub const MAX_GLOBAL_PACKETS: u32 = 1 << 17;

#[derive(Debug, Clone, Copy, Default)]
struct SlotMeta {
    /// Where the held L3 packet starts and ends in the slot's buffer.
    l3: u16,
    end: u16,
    arrived: Instant,
}

impl SlotMeta {
    fn len(self) -> u64 {
        u64::from(self.end - self.l3)
    }
}

/// A packet moved out of a buffer: its arrival time and where it lies in the buffer it was
/// moved into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Released {
    pub(crate) arrived: Instant,
    pub(crate) l3: usize,
    pub(crate) end: usize,
}

#[derive(Debug)]
struct VmQueue {
    ring: VecDeque<u32>,
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
    pool: Vec<Box<[u8]>>,
    meta: Vec<SlotMeta>,
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
        let n = cfg.global_packets as usize;
        Ok(SbufStore {
            cfg,
            max_age_ns: cfg.max_age_ms.saturating_mul(1_000_000),
            pool: (0..n)
                .map(|_| vec![0u8; BUF_SIZE].into_boxed_slice())
                .collect(),
            meta: vec![SlotMeta::default(); n],
            free: (0..cfg.global_packets).rev().collect(),
            queues: (0..vms)
                .map(|_| VmQueue {
                    ring: VecDeque::with_capacity(cfg.per_vm_packets as usize),
                    bytes: 0,
                })
                .collect(),
            total: Occupancy::default(),
        })
    }

    /// Appends the L3 packet `pkt.buf[l3..pkt.end]` to `vm`'s FIFO by taking `pkt`'s storage
    /// (a free pool buffer takes its place; `pkt`'s bytes are then unspecified).
    #[inline]
    pub(crate) fn push(
        &mut self,
        vm: VmId,
        now: Instant,
        pkt: &mut PacketBuf,
        l3: usize,
    ) -> Result<(), DropReason> {
        let len = pkt.end.saturating_sub(l3);
        // `pkt.end <= pkt.buf.len()`: a full-size buffer also keeps the pool uniform.
        if len > SLOT_SIZE || pkt.buf.len() != BUF_SIZE {
            return Err(DropReason::BufferPacketTooLarge);
        }
        let Some(q) = self.queues.get_mut(vm.index()) else {
            return Err(DropReason::BufferFull);
        };
        let len64 = len as u64;
        if q.ring.len() >= self.cfg.per_vm_packets as usize
            || q.bytes + len64 > self.cfg.per_vm_bytes
            || self.total.bytes + len64 > self.cfg.global_bytes
        {
            return Err(DropReason::BufferFull);
        }
        let Some(slot) = self.free.pop() else {
            return Err(DropReason::BufferFull);
        };
        let s = slot as usize;
        core::mem::swap(&mut self.pool[s], &mut pkt.buf);
        // Both fit in u16: end <= BUF_SIZE.
        self.meta[s] = SlotMeta {
            l3: l3 as u16,
            end: pkt.end as u16,
            arrived: now,
        };
        q.ring.push_back(slot);
        q.bytes += len64;
        self.total.packets += 1;
        self.total.bytes += len64;
        Ok(())
    }

    /// Removes the head of `vm`'s FIFO; with `out`, its storage is exchanged with `out`'s
    /// (the packet is then `out.buf[l3..end]` of the returned [`Released`]).
    #[inline]
    pub(crate) fn pop(&mut self, vm: VmId, out: Option<&mut PacketBuf>) -> Option<Released> {
        let q = self.queues.get_mut(vm.index())?;
        let slot = q.ring.pop_front()?;
        let s = slot as usize;
        let m = self.meta[s];
        q.bytes -= m.len();
        self.total.packets -= 1;
        self.total.bytes -= m.len();
        if let Some(out) = out {
            core::mem::swap(&mut self.pool[s], &mut out.buf);
        }
        self.free.push(slot);
        Some(Released {
            arrived: m.arrived,
            l3: usize::from(m.l3),
            end: usize::from(m.end),
        })
    }

    /// Releases the head of `vm`'s FIFO into `out` (exchanging storage, see [`SbufStore::pop`])
    /// unless it is expired at `now`, in which case it is dropped; `None` when empty. One
    /// queue access for what `oldest`, `is_expired` and `pop` do together.
    #[inline]
    pub(crate) fn pop_fresh(
        &mut self,
        vm: VmId,
        now: Instant,
        out: &mut PacketBuf,
    ) -> Option<Result<Released, Instant>> {
        let q = self.queues.get_mut(vm.index())?;
        let slot = q.ring.pop_front()?;
        let s = slot as usize;
        let m = self.meta[s];
        q.bytes -= m.len();
        self.total.packets -= 1;
        self.total.bytes -= m.len();
        self.free.push(slot);
        if now.as_nanos().saturating_sub(m.arrived.as_nanos()) >= self.max_age_ns {
            return Some(Err(m.arrived));
        }
        core::mem::swap(&mut self.pool[s], &mut out.buf);
        Some(Ok(Released {
            arrived: m.arrived,
            l3: usize::from(m.l3),
            end: usize::from(m.end),
        }))
    }

    /// Arrival time of the head of `vm`'s FIFO.
    #[inline]
    pub(crate) fn oldest(&self, vm: VmId) -> Option<Instant> {
        let q = self.queues.get(vm.index())?;
        q.ring.front().map(|&s| self.meta[s as usize].arrived)
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
                (Instant::from_millis(u64::from(i)), HEADROOM, HEADROOM + 50)
            );
            // The held storage came out without a copy.
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
        assert_eq!(b.free.len(), 4);
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
