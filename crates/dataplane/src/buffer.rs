//! End.SBUF buffers: per-VM FIFOs of held packets in preallocated storage.
//!
//! Storage is an arena of [`CHUNK_SIZE`]-byte chunks allocated once at configuration; a held
//! (L3) packet is copied into a chain of chunks (one for a packet up to 512 bytes, 19 for a
//! 9216-byte jumbo), and copied out into the output buffer on release. Each VM has a ring of
//! held-packet records with capacity `per_vm_packets` (allocated once, never grown); a stack
//! holds the free chunks. No allocation per packet.
//!
//! The fast path is a packet of at most one chunk: one bounded `memcpy` of its bytes each way
//! (never the chunk or the buffer), no chain link written or read. Its 16-byte record keeps
//! what hold already knew (length, EtherType, arrival), so release rebuilds the Ethernet
//! header without looking at the packet. Only longer packets walk a chain.
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

use srmig_wire::ethernet::EtherType;

use crate::batch::{PacketBuf, BUF_CAPACITY, BUF_SIZE, HEADROOM};
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

// A held packet's length fits the record's `u16`, and a released one fits the output buffer.
const _: () = assert!(SLOT_SIZE <= u16::MAX as usize && RELEASE_L3 + SLOT_SIZE <= BUF_SIZE);

/// One held packet (16 bytes).
#[derive(Debug, Clone, Copy)]
struct HeldPkt {
    /// First chunk of its chain (the only one for a packet of up to [`CHUNK_SIZE`] bytes).
    first: u32,
    /// L3 length.
    len: u16,
    /// Its EtherType, known when it was held (the Ethernet header is rebuilt on release).
    ethertype: EtherType,
    arrived: Instant,
}

/// A packet moved out of a buffer: its arrival time, its EtherType and where it lies in the
/// buffer it was copied into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Released {
    pub(crate) arrived: Instant,
    pub(crate) ethertype: EtherType,
    pub(crate) l3: usize,
    pub(crate) end: usize,
}

/// A VM's FIFO: a fixed ring of `per_vm_packets` records (never grown).
#[derive(Debug, Clone)]
struct VmQueue {
    /// The ring's records, each a [`HeldPkt`] packed into two words (see [`VmQueue::pack`]).
    /// Packed, a ring is an array of integers, which `vec!` allocates zeroed: a large ring's
    /// pages stay untouched until records are written into them. A store is built when a
    /// fence is first armed, in the dataplane thread, at a migration's commit; filling 64
    /// rings of 2,048 records there cost a 2 MiB memset.
    ring: Box<[[u64; 2]]>,
    /// Index of the oldest record.
    head: usize,
    /// Records held.
    len: usize,
    bytes: u64,
}

impl VmQueue {
    fn new(capacity: usize) -> VmQueue {
        VmQueue {
            ring: vec![[0u64; 2]; capacity].into_boxed_slice(),
            head: 0,
            len: 0,
            bytes: 0,
        }
    }

    #[inline]
    fn pack(h: HeldPkt) -> [u64; 2] {
        [
            u64::from(h.first) | u64::from(h.len) << 32 | u64::from(h.ethertype.0) << 48,
            h.arrived.0,
        ]
    }

    #[inline]
    fn unpack([a, t]: [u64; 2]) -> HeldPkt {
        HeldPkt {
            first: a as u32,
            len: (a >> 32) as u16,
            ethertype: EtherType((a >> 48) as u16),
            arrived: Instant(t),
        }
    }

    /// Appends `h`; the caller has checked `len < ring.len()`.
    #[inline]
    fn push_back(&mut self, h: HeldPkt) {
        let mut i = self.head + self.len;
        if i >= self.ring.len() {
            i -= self.ring.len();
        }
        if let Some(slot) = self.ring.get_mut(i) {
            *slot = Self::pack(h);
            self.len += 1;
        }
    }

    #[inline]
    fn front(&self) -> Option<HeldPkt> {
        if self.len == 0 {
            return None;
        }
        self.ring.get(self.head).map(|r| Self::unpack(*r))
    }

    #[inline]
    fn pop_front(&mut self) -> Option<HeldPkt> {
        let h = self.front()?;
        self.head += 1;
        if self.head == self.ring.len() {
            self.head = 0;
        }
        self.len -= 1;
        self.bytes -= u64::from(h.len);
        Some(h)
    }
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
#[derive(Debug, Clone)]
pub(crate) struct SbufStore {
    cfg: BufferConfig,
    max_age_ns: u64,
    /// The chunks.
    arena: Arena,
    /// The chunk after each chunk in its packet's chain ([`NO_CHUNK`] at the end); only
    /// written and read for packets longer than one chunk (every link is written before it is
    /// read, so it starts as a zeroed allocation the kernel maps lazily).
    next: Box<[u32]>,
    /// The chunks not holding a packet.
    free: FreeChunks,
    queues: Vec<VmQueue>,
    total: Occupancy,
}

/// The chunks not holding a packet: a stack of freed chunks (recently freed chunks are reused
/// first, still in cache), then the chunks never used, in order. The stack's capacity holds
/// every chunk, so a free never allocates; only freed chunks are ever written, so building a
/// store writes none of it (a stack of every chunk was written at every build: 20 KB for the
/// smallest stores a simulated data center's hosts have, 200 KB for the default).
#[derive(Debug, Clone)]
struct FreeChunks {
    freed: Vec<u32>,
    /// Chunks `fresh..total` have never been used.
    fresh: u32,
    total: u32,
}

impl FreeChunks {
    fn new(chunks: usize) -> FreeChunks {
        FreeChunks {
            freed: Vec::with_capacity(chunks),
            fresh: 0,
            total: u32::try_from(chunks).unwrap_or(u32::MAX),
        }
    }

    #[inline]
    fn len(&self) -> usize {
        self.freed.len() + (self.total - self.fresh) as usize
    }

    #[inline]
    fn pop(&mut self) -> Option<u32> {
        if let Some(c) = self.freed.pop() {
            return Some(c);
        }
        let c = self.fresh;
        (c < self.total).then(|| {
            self.fresh += 1;
            c
        })
    }

    #[inline]
    fn push(&mut self, c: u32) {
        self.freed.push(c);
    }
}

/// The chunks, as one zeroed byte allocation: `vec![0u8; n]` is a zeroed allocation the
/// kernel maps lazily, where `vec![[0u8; CHUNK_SIZE]; n]` wrote every byte (arrays above 16
/// elements are not known to be zero), so building an engine cost a memset of the whole
/// arena, for every scratch engine a host config is validated on too, and all of it was
/// resident at once.
#[derive(Clone)]
struct Arena(Box<[u8]>);

impl Arena {
    fn zeroed(chunks: usize) -> Arena {
        Arena(vec![0u8; chunks.saturating_mul(CHUNK_SIZE)].into_boxed_slice())
    }

    /// Chunks.
    fn len(&self) -> usize {
        self.0.len() / CHUNK_SIZE
    }

    #[inline]
    fn get(&self, c: usize) -> Option<&[u8; CHUNK_SIZE]> {
        let at = c.checked_mul(CHUNK_SIZE)?;
        self.0.get(at..at + CHUNK_SIZE)?.try_into().ok()
    }

    #[inline]
    fn get_mut(&mut self, c: usize) -> Option<&mut [u8; CHUNK_SIZE]> {
        let at = c.checked_mul(CHUNK_SIZE)?;
        self.0.get_mut(at..at + CHUNK_SIZE)?.try_into().ok()
    }
}

impl std::fmt::Debug for Arena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Arena({} chunks)", self.len())
    }
}

impl SbufStore {
    /// Validates `cfg` and preallocates storage for `vms` VMs.
    pub(crate) fn new(cfg: BufferConfig, vms: usize) -> Result<SbufStore, ConfigError> {
        Self::build(cfg, vms, true)
    }

    /// Validates `cfg` like [`SbufStore::new`] but allocates no storage: a store that holds
    /// nothing, for an engine built only to validate a configuration
    /// ([`crate::Dataplane::validate`]).
    pub(crate) fn unallocated(cfg: BufferConfig, vms: usize) -> Result<SbufStore, ConfigError> {
        Self::build(cfg, vms, false)
    }

    fn build(cfg: BufferConfig, vms: usize, allocate: bool) -> Result<SbufStore, ConfigError> {
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
        let (chunks, per_vm) = if allocate {
            (Self::chunks_for(&cfg), cfg.per_vm_packets as usize)
        } else {
            (0, 0)
        };
        Ok(SbufStore {
            cfg,
            max_age_ns: cfg.max_age_ms.saturating_mul(1_000_000),
            arena: Arena::zeroed(chunks),
            next: vec![0; chunks].into_boxed_slice(),
            free: FreeChunks::new(chunks),
            queues: (0..vms).map(|_| VmQueue::new(per_vm)).collect(),
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
        self.arena.len() * CHUNK_SIZE
    }

    /// Appends a copy of the L3 packet `pkt.buf[l3..pkt.end]`, of type `ethertype`, to `vm`'s
    /// FIFO (`pkt` is left as it was).
    #[inline]
    pub(crate) fn push(
        &mut self,
        vm: VmId,
        now: Instant,
        pkt: &PacketBuf,
        l3: usize,
        ethertype: EtherType,
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
        if q.len >= q.ring.len()
            || self.total.packets >= u64::from(self.cfg.global_packets)
            || q.bytes + len64 > self.cfg.per_vm_bytes
            || self.total.bytes + len64 > self.cfg.global_bytes
            || self.free.len() < len.div_ceil(CHUNK_SIZE).max(1)
        {
            return Err(DropReason::BufferFull);
        }
        let first = if len <= CHUNK_SIZE {
            // The common case: one chunk, one copy, no chain (an empty packet takes a chunk too,
            // so every record owns one).
            let Some(c) = self.free.pop() else {
                return Err(DropReason::BufferFull);
            };
            let Some(chunk) = self.arena.get_mut(c as usize) else {
                return Err(DropReason::BufferFull);
            };
            chunk[..len].copy_from_slice(data);
            c
        } else {
            // Copy chunk by chunk, linking the chain from the end so each chunk is taken once.
            let mut first = NO_CHUNK;
            for part in data.chunks(CHUNK_SIZE).rev() {
                let Some(c) = self.free.pop() else {
                    return Err(DropReason::BufferFull);
                };
                let (Some(chunk), Some(next)) = (
                    self.arena.get_mut(c as usize),
                    self.next.get_mut(c as usize),
                ) else {
                    return Err(DropReason::BufferFull);
                };
                chunk[..part.len()].copy_from_slice(part);
                *next = first;
                first = c;
            }
            first
        };
        q.push_back(HeldPkt {
            first,
            len: len as u16,
            ethertype,
            arrived: now,
        });
        q.bytes += len64;
        self.total.packets += 1;
        self.total.bytes += len64;
        Ok(())
    }

    /// Copies the packet of `h` to `out` (which starts at [`RELEASE_L3`]) and frees its
    /// chunks.
    #[inline]
    fn copy_out(&mut self, h: HeldPkt, out: &mut [u8]) {
        let len = usize::from(h.len);
        if len <= CHUNK_SIZE {
            if let (Some(dst), Some(src)) = (out.get_mut(..len), self.arena.get(h.first as usize)) {
                dst.copy_from_slice(&src[..len]);
            }
            self.free.push(h.first);
            return;
        }
        let mut c = h.first;
        let n = len.min(out.len());
        for dst in out[..n].chunks_mut(CHUNK_SIZE) {
            let Some(src) = self.arena.get(c as usize) else {
                return;
            };
            let k = dst.len();
            dst.copy_from_slice(&src[..k]);
            self.free.push(c);
            c = self.next.get(c as usize).copied().unwrap_or(NO_CHUNK);
        }
    }

    /// Frees the chunks of `h` without copying them.
    fn free_chunks(&mut self, h: HeldPkt) {
        let mut c = h.first;
        self.free.push(c);
        for _ in 1..usize::from(h.len).div_ceil(CHUNK_SIZE) {
            c = self.next.get(c as usize).copied().unwrap_or(NO_CHUNK);
            self.free.push(c);
        }
    }

    fn released(h: HeldPkt) -> Released {
        Released {
            arrived: h.arrived,
            ethertype: h.ethertype,
            l3: RELEASE_L3,
            end: RELEASE_L3 + usize::from(h.len),
        }
    }

    /// Removes the head of `vm`'s FIFO; with `out`, the packet is copied into it (it is then
    /// `out.buf[l3..end]` of the returned [`Released`], with room for an Ethernet header in
    /// front).
    pub(crate) fn pop(&mut self, vm: VmId, out: Option<&mut PacketBuf>) -> Option<Released> {
        let q = self.queues.get_mut(vm.index())?;
        let h = q.pop_front()?;
        self.total.packets -= 1;
        self.total.bytes -= u64::from(h.len);
        match out {
            Some(out) => self.copy_out(h, out.buf.get_mut(RELEASE_L3..).unwrap_or_default()),
            None => self.free_chunks(h),
        }
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
        let h = q.pop_front()?;
        self.total.packets -= 1;
        self.total.bytes -= u64::from(h.len);
        if now.as_nanos().saturating_sub(h.arrived.as_nanos()) >= self.max_age_ns {
            self.free_chunks(h);
            return Some(Err(h.arrived));
        }
        self.copy_out(h, out.buf.get_mut(RELEASE_L3..).unwrap_or_default());
        Some(Ok(Self::released(h)))
    }

    /// Arrival time of the head of `vm`'s FIFO.
    #[inline]
    pub(crate) fn oldest(&self, vm: VmId) -> Option<Instant> {
        self.queues.get(vm.index())?.front().map(|h| h.arrived)
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
        self.queues.get(vm.index()).is_none_or(|q| q.len == 0)
    }

    /// Occupancy of `vm`'s FIFO.
    pub(crate) fn occupancy(&self, vm: VmId) -> Occupancy {
        self.queues
            .get(vm.index())
            .map_or(Occupancy::default(), |q| Occupancy {
                packets: q.len as u64,
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
        b.push(vm, t, &buf(bytes), HEADROOM, EtherType::IPV6)
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
            b.push(a, Instant::ZERO, &big, HEADROOM, EtherType::IPV6),
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
    fn ring_wraps_and_chains_return_every_chunk() {
        let c = BufferConfig {
            per_vm_packets: 3,
            per_vm_bytes: 1 << 20,
            global_packets: 3,
            global_bytes: 1 << 20,
            max_age_ms: 10,
        };
        let mut b = SbufStore::new(c, 1).unwrap();
        let all = b.free.len();
        let v = VmId(0);
        let mut out = PacketBuf::new();
        // Sizes around the chunk boundary, through the ring several times.
        let sizes = [1usize, 512, 513, 1024, 1025, 0, 3000, 511, 2049];
        let mut t = 0;
        for round in sizes.chunks(3) {
            for (i, &n) in round.iter().enumerate() {
                let bytes: Vec<u8> = (0..n).map(|k| (k * 7 + i) as u8).collect();
                push(&mut b, v, Instant::from_millis(t), &bytes).unwrap();
                t += 1;
            }
            for (i, &n) in round.iter().enumerate() {
                let want: Vec<u8> = (0..n).map(|k| (k * 7 + i) as u8).collect();
                let r = b.pop(v, Some(&mut out)).unwrap();
                assert_eq!(r.ethertype, EtherType::IPV6);
                assert_eq!(&out.buf[r.l3..r.end], &want[..], "{n} bytes");
            }
            assert_eq!(b.free.len(), all);
        }
        // Expired and discarded chains are freed whole too.
        push(&mut b, v, Instant::ZERO, &[1; 3000]).unwrap();
        push(&mut b, v, Instant::ZERO, &[2; 600]).unwrap();
        push(&mut b, v, Instant::from_millis(20), &[3; 1500]).unwrap();
        assert_eq!(b.expire(v, Instant::from_millis(15)), 2);
        assert_eq!(
            b.occupancy(v),
            Occupancy {
                packets: 1,
                bytes: 1500
            }
        );
        assert_eq!(b.discard(v), 1);
        assert_eq!(b.free.len(), all);
        assert_eq!(b.total(), Occupancy::default());
    }

    /// The ring keeps FIFO order through every mix of pushes and pops, full and wrapping (a
    /// `VecDeque` as the model), and a record comes back as it went in.
    #[test]
    fn ring_grows_in_use_in_fifo_order() {
        let c = BufferConfig {
            per_vm_packets: 5,
            per_vm_bytes: 1 << 20,
            global_packets: 5,
            global_bytes: 1 << 20,
            max_age_ms: 10,
        };
        for h in [
            HeldPkt {
                first: u32::MAX,
                len: u16::MAX,
                ethertype: EtherType(0xffff),
                arrived: Instant(u64::MAX),
            },
            HeldPkt {
                first: 7,
                len: 1500,
                ethertype: EtherType::IPV6,
                arrived: Instant(1 << 40),
            },
        ] {
            let r = VmQueue::unpack(VmQueue::pack(h));
            assert_eq!(
                (r.first, r.len, r.ethertype, r.arrived),
                (h.first, h.len, h.ethertype, h.arrived)
            );
        }
        let mut b = SbufStore::new(c, 1).unwrap();
        let v = VmId(0);
        let mut out = PacketBuf::new();
        let mut model = std::collections::VecDeque::new();
        let mut next = 0u8;
        // 1 = push, 0 = pop: the ring fills, refuses, drains and wraps.
        let ops = [
            1, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1,
        ];
        for (k, &op) in ops.iter().enumerate() {
            if op == 1 {
                let r = push(&mut b, v, Instant::from_millis(1), &[next; 40]);
                if model.len() < 5 {
                    r.unwrap();
                    model.push_back(next);
                } else {
                    assert_eq!(r, Err(DropReason::BufferFull), "op {k}");
                }
                next += 1;
            } else {
                let want = model.pop_front();
                let got = b.pop(v, Some(&mut out)).map(|r| out.buf[r.l3]);
                assert_eq!(got, want, "op {k}");
            }
        }
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
