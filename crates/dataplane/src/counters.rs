//! Counters: plain arrays indexed by ids (single-threaded engine: no locks, no atomics).

use crate::buffer::{Occupancy, SbufStore};
use crate::drop::DropReason;
use crate::fence::{FenceCounters, Fences};
use crate::policy::PolicyId;
use crate::port::PortId;
use crate::sid::SidId;
use crate::vm::VmId;

/// Packets and bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PacketBytes {
    /// Packets.
    pub packets: u64,
    /// Bytes (frame bytes as received).
    pub bytes: u64,
}

impl PacketBytes {
    #[inline]
    pub(crate) fn add(&mut self, bytes: usize) {
        self.packets += 1;
        self.bytes += bytes as u64;
    }
}

/// Per-port counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PortCounters {
    /// Frames received.
    pub rx: PacketBytes,
    /// Frames sent (including generated and released packets).
    pub tx: PacketBytes,
}

/// Per-VM counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VmCounters {
    /// Packets received from the VM.
    pub rx: PacketBytes,
    /// Packets delivered to the VM (directly or released from its buffer).
    pub tx: PacketBytes,
    /// Packets put into its End.SBUF buffer.
    pub held: u64,
    /// Packets released from its buffer to it.
    pub released: u64,
    /// Packets that expired in its buffer.
    pub expired: u64,
    /// Packets for it that were dropped (buffer full, drop mode, not running, discarded).
    pub dropped: u64,
    /// Direct packets for it held by the commit fence (see [`crate::fence`]).
    pub fenced: u64,
}

/// Upper bounds, in seconds, of the buckets of [`HoldHistogram`] (a VM's pause lasts tens
/// of milliseconds to seconds); a last, open bucket counts what is above them all.
pub const HOLD_BUCKETS_S: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How long the oldest packet of each End.SBUF release had been held when the release
/// started: one observation per resume of a VM with packets held for it. It is the longest
/// any packet to that VM waited at this host, which is the network downtime its inbound
/// traffic saw here (the blackout plus what the hold added).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HoldHistogram {
    /// Observations per bucket of [`HOLD_BUCKETS_S`] (not cumulative); the last one counts
    /// those above every bound.
    pub buckets: [u64; HOLD_BUCKETS_S.len() + 1],
    /// Observations.
    pub count: u64,
    /// Their sum, in nanoseconds.
    pub sum_ns: u64,
}

impl HoldHistogram {
    pub(crate) fn observe(&mut self, ns: u64) {
        let s = ns as f64 / 1e9;
        let i = HOLD_BUCKETS_S
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(HOLD_BUCKETS_S.len());
        if let Some(b) = self.buckets.get_mut(i) {
            *b += 1;
        }
        self.count += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }
}

/// ICMPv6 and NDP generation counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IcmpCounters {
    /// ICMPv6 errors queued for transmission.
    pub errors_sent: u64,
    /// Errors suppressed by the rate limiter.
    pub rate_limited: u64,
    /// Errors or NDP answers lost because the generated-packet queue was full.
    pub queue_full: u64,
    /// Errors not sent because the RFC forbids it (in response to an error, multicast, ...).
    pub suppressed: u64,
    /// Neighbor advertisements sent.
    pub ndp_answered: u64,
    /// Packet Too Big errors queued (also counted in `errors_sent`).
    pub packet_too_big_sent: u64,
    /// Errors not sent because no port leads back to their destination (no VM, no route).
    pub no_route: u64,
    /// Echo requests to this node's addresses (or the gateway) answered.
    pub echo_replies: u64,
    /// ARP requests answered (the gateway on VM ports, a port's IPv4 address on uplinks).
    pub arp_answered: u64,
}

/// All counters of a dataplane.
#[derive(Debug, Clone)]
pub struct Counters {
    pub(crate) drops: [u64; DropReason::COUNT],
    pub(crate) sids: Vec<PacketBytes>,
    pub(crate) vms: Vec<VmCounters>,
    pub(crate) policies: Vec<PacketBytes>,
    pub(crate) ports: Vec<PortCounters>,
    pub(crate) icmp: IcmpCounters,
    pub(crate) holds: HoldHistogram,
}

impl Counters {
    pub(crate) fn new(ports: usize, vms: usize) -> Counters {
        Counters {
            drops: [0; DropReason::COUNT],
            sids: Vec::new(),
            vms: vec![VmCounters::default(); vms],
            policies: Vec::new(),
            ports: vec![PortCounters::default(); ports],
            icmp: IcmpCounters::default(),
            holds: HoldHistogram::default(),
        }
    }

    #[inline]
    pub(crate) fn drop(&mut self, r: DropReason) {
        self.drops[r.index()] += 1;
    }

    #[inline]
    pub(crate) fn vm_mut(&mut self, vm: VmId) -> Option<&mut VmCounters> {
        self.vms.get_mut(vm.index())
    }
}

/// A read-only view of the counters and buffer occupancy.
#[derive(Debug, Clone, Copy)]
pub struct CountersView<'a> {
    pub(crate) c: &'a Counters,
    pub(crate) buffers: &'a SbufStore,
    pub(crate) fences: &'a Fences,
}

impl CountersView<'_> {
    /// Packets dropped for `r`.
    pub fn drops(&self, r: DropReason) -> u64 {
        self.c.drops[r.index()]
    }

    /// Every drop reason with its count.
    pub fn drop_counts(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(|r| (*r, self.c.drops[r.index()]))
    }

    /// [`CountersView::drop_counts`] sorted by reason name ([`DropReason::by_name`]).
    pub fn drop_counts_by_name(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::by_name()
            .iter()
            .map(|r| (*r, self.c.drops[r.index()]))
    }

    /// Sum of all drops.
    pub fn total_drops(&self) -> u64 {
        self.c.drops.iter().sum()
    }

    /// Packets and bytes that matched SID `id`.
    pub fn sid(&self, id: SidId) -> PacketBytes {
        self.c.sids.get(id.index()).copied().unwrap_or_default()
    }

    /// Counters of VM `id`.
    pub fn vm(&self, id: VmId) -> VmCounters {
        self.c.vms.get(id.index()).copied().unwrap_or_default()
    }

    /// Packets and bytes steered into policy `id` (H.Encaps/H.Insert at ingress, End.B6.Encaps).
    pub fn policy(&self, id: PolicyId) -> PacketBytes {
        self.c.policies.get(id.index()).copied().unwrap_or_default()
    }

    /// Counters of port `id`.
    pub fn port(&self, id: PortId) -> PortCounters {
        self.c.ports.get(id.index()).copied().unwrap_or_default()
    }

    /// ICMPv6 / NDP generation counters.
    pub fn icmp(&self) -> IcmpCounters {
        self.c.icmp
    }

    /// How long the oldest packet of each End.SBUF release had waited ([`HoldHistogram`]).
    pub fn holds(&self) -> HoldHistogram {
        self.c.holds
    }

    /// Packets and bytes held in VM `id`'s buffer now.
    pub fn buffer_occupancy(&self, id: VmId) -> Occupancy {
        self.buffers.occupancy(id)
    }

    /// Packets and bytes held in all buffers now.
    pub fn buffer_total(&self) -> Occupancy {
        self.buffers.total()
    }

    /// Commit-fence counters ([`crate::fence`]).
    pub fn fence(&self) -> FenceCounters {
        self.fences.counters
    }

    /// Packets held by commit fences now, and the (VM, ingress) pairs they are kept for.
    pub fn fence_now(&self) -> (u64, usize) {
        (self.fences.held_now(), self.fences.pairs())
    }
}
