//! The body of srmigd's `GET /v1/status`: everything srmigd knows about its node, with
//! counters (srmigd renders `/metrics` from the same snapshot; the controller reads the VM
//! states and the epoch from it).

use std::net::{IpAddr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::DropCounts;

/// Packets and bytes held in End.SBUF buffers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BufferStatus {
    /// `packets` held now.
    pub packets: u64,
    /// `bytes` held now (L3 bytes).
    pub bytes: u64,
}

/// Packet and byte counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    /// `packets`.
    pub packets: u64,
    /// `bytes`.
    pub bytes: u64,
}

/// I/O counters of one port, kept by srmigd (the engine counts what it forwards).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortIoStats {
    /// `rx_frames`: frames received and handed to the engine (GSO segments included).
    pub rx_frames: u64,
    /// `rx_truncated`: frames that arrived cut short or longer than a packet buffer, dropped.
    pub rx_truncated: u64,
    /// `rx_gso`: GSO super-frames (TSO/USO on the peer) received and segmented in software.
    pub rx_gso: u64,
    /// `rx_gso_segments`: segments made from GSO super-frames.
    #[serde(default)]
    pub rx_gso_segments: u64,
    /// `rx_gso_bad`: GSO super-frames that could not be segmented (bad metadata or headers,
    /// or more segments than a batch holds), dropped.
    #[serde(default)]
    pub rx_gso_bad: u64,
    /// `rx_bad_csum_meta`: frames with out-of-bounds checksum offload metadata, dropped.
    pub rx_bad_csum_meta: u64,
    /// `rx_csum_completed`: frames whose offloaded checksum srmigd completed.
    pub rx_csum_completed: u64,
    /// `rx_errors`: receive calls that failed.
    pub rx_errors: u64,
    /// `rx_ring_drops`: frames the kernel dropped because srmigd's receive ring was full
    /// (srmigd behind: overload), before they cost more than the drop.
    #[serde(default)]
    pub rx_ring_drops: u64,
    /// `tx_errors`: frames the socket refused (queue full, interface gone, too big).
    pub tx_errors: u64,
    /// `tx_no_link`: frames for this port while it was detached (dropped).
    pub tx_no_link: u64,
    /// `attachments`: how many times a socket was opened on the port.
    pub attachments: u64,
    /// `prepared_attaches`: attachments that took a socket opened ahead while the
    /// interface was down (a VM port coming up at the VM's resume attaches at once).
    #[serde(default)]
    pub prepared_attaches: u64,
    /// `fast_forced_enables` (VM ports with the TC fast path): table changes after which
    /// the program was turned on before srmigd had caught up with what it passed (a steady
    /// flood leaves no quiet moment; frames of a destination that moved to the program may
    /// then have been reordered).
    #[serde(default)]
    pub fast_forced_enables: u64,
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
    /// `rx_resets` (QEMU ports): streams QEMU reset (`ECONNRESET`): it closed its end with
    /// frames srmigd had written still unread, as a source QEMU does when it exits after
    /// its VM left (the frames it had not read were taken back at the stop). Not a loss by
    /// itself; the stream is closed and opened again like at an end of file. Counted under
    /// `rx_errors` before 2026-12-05.
    #[serde(default)]
    pub rx_resets: u64,
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
    /// `recovery_counted` (QEMU ports): take-backs decided by the guest's own count of the
    /// receive buffers it got (`pause-before-switchover`): exact, no frame sent twice.
    #[serde(default)]
    pub recovery_counted: u64,
    /// `recovery_count_refused` (QEMU ports): take-backs where that count was asked for but
    /// could not be used (no base, a query failed, frames longer than one receive buffer, an
    /// inconsistent count); the older rules decided (a frame may have been duplicated).
    #[serde(default)]
    pub recovery_count_refused: u64,
    /// `resteered` (VM ports): frames the VM never got because its attachment had just gone
    /// (the send failed on the vanished interface, or found the port detached), re-steered
    /// where the VM's packets go now (End.S forwards them to the destination).
    #[serde(default)]
    pub resteered: u64,
}

/// One port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStatus {
    /// `name`: the interface name.
    pub name: String,
    /// `kind`: `uplink` or `vm`.
    pub kind: String,
    /// `ifindex`: the interface's index, `null` while no interface of that name exists.
    pub ifindex: Option<u32>,
    /// `attached`: the interface is up with carrier and srmigd has a socket on it.
    pub attached: bool,
    /// `rx`: frames the engine received on the port.
    pub rx: Traffic,
    /// `tx`: frames the engine sent on the port.
    pub tx: Traffic,
    /// `io`: socket-level counters.
    pub io: PortIoStats,
    /// `socket`: `xdp` (AF_XDP) or `packet` (AF_PACKET ring) while attached, `null` otherwise
    /// (and for QEMU stream ports).
    #[serde(default)]
    pub socket: Option<String>,
    /// `fast_path`: whether the port's XDP program forwards transit IPv6 and End itself
    /// (node.toml `[io] fast_path`; only while the socket is `xdp`).
    #[serde(default)]
    pub fast_path: bool,
    /// `fast_path_hook`: how the port's fast path program is attached while it is: `xdp` (an
    /// uplink's), `tcx` or `clsact` (a VM port's TC program); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fast_path_hook: Option<String>,
    /// `mtu`: the MTU the engine checks egress packets against (node.toml's, or the
    /// interface's as read at attach), `null` if none is known.
    #[serde(default)]
    pub mtu: Option<u16>,
}

/// One VM known to this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmStatus {
    /// `name`.
    pub name: String,
    /// `state`: `absent`, `running` or `paused`.
    pub state: crate::VmState,
    /// `port`: the VM port it attaches to.
    pub port: String,
    /// `local`: whether the last host config lists it in `local_vms` (`null` before the
    /// first host config).
    pub local: Option<bool>,
    /// `addresses`.
    pub addresses: Vec<IpAddr>,
    /// `buffer`: what its End.SBUF buffer holds now.
    pub buffer: BufferStatus,
    /// `rx`: packets received from it.
    pub rx: Traffic,
    /// `tx`: packets delivered to it.
    pub tx: Traffic,
    /// `held`: packets put in its buffer.
    pub held: u64,
    /// `released`: packets released from its buffer.
    pub released: u64,
    /// `expired`: packets that expired in its buffer.
    pub expired: u64,
    /// `dropped`: packets for it that were dropped.
    pub dropped: u64,
    /// `fenced`: direct packets for it held by the commit fence (absent from older srmigd).
    #[serde(default)]
    pub fenced: u64,
    /// `state_since_us`: when this srmigd applied the VM's current `state` (wall clock,
    /// microseconds since the Unix epoch; with several workers, the last of them). Absent
    /// until the state first changes here. For a pause, nothing is delivered to the VM at
    /// this host after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_since_us: Option<u64>,
}

/// `fence`: the commit fence of this node (`srmig_dataplane::fence`), all VMs together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FenceStatus {
    /// `markers_sent`: markers this node sent down an old SR path at a commit.
    pub markers_sent: u64,
    /// `markers_unsent`: markers that could not be sent (queue full, no route).
    pub markers_unsent: u64,
    /// `markers_received`: markers that opened a (VM, ingress) pair here.
    pub markers_received: u64,
    /// `markers_duplicate`: markers for a pair already opened by one.
    pub markers_duplicate: u64,
    /// `markers_late`: markers for a pair its timeout had opened.
    pub markers_late: u64,
    /// `markers_unarmed`: markers for a VM not fenced here.
    pub markers_unarmed: u64,
    /// `held`: direct packets held until their ingress's marker.
    pub held: u64,
    /// `released`: held packets delivered.
    pub released: u64,
    /// `timeouts`: pairs opened by the timeout instead of a marker.
    pub timeouts: u64,
    /// `bypassed`: direct packets delivered at once because a bound was reached.
    pub bypassed: u64,
    /// `dropped`: held packets dropped on release (VM gone, too big).
    pub dropped: u64,
    /// `holding`: packets held now.
    pub holding: u64,
    /// `pairs`: (VM, ingress) pairs known now.
    pub pairs: u64,
    /// `arrivals_dropped`: marker arrivals not reported to the controller (more than 256
    /// waiting; absent from older srmigd).
    #[serde(default)]
    pub arrivals_dropped: u64,
    /// `markers_relayed`: markers another worker of this srmigd received and passed on, that
    /// opened a pair of this worker (`--workers N`; absent from older srmigd).
    #[serde(default)]
    pub markers_relayed: u64,
}

impl FenceStatus {
    fn add(&mut self, o: &FenceStatus) {
        let FenceStatus {
            markers_sent,
            markers_unsent,
            markers_received,
            markers_duplicate,
            markers_late,
            markers_unarmed,
            held,
            released,
            timeouts,
            bypassed,
            dropped,
            holding,
            pairs,
            arrivals_dropped,
            markers_relayed,
        } = *o;
        self.markers_sent += markers_sent;
        self.markers_unsent += markers_unsent;
        self.markers_received += markers_received;
        self.markers_duplicate += markers_duplicate;
        self.markers_late += markers_late;
        self.markers_unarmed += markers_unarmed;
        self.held += held;
        self.released += released;
        self.timeouts += timeouts;
        self.bypassed += bypassed;
        self.dropped += dropped;
        self.holding += holding;
        self.pairs += pairs;
        self.arrivals_dropped += arrivals_dropped;
        self.markers_relayed += markers_relayed;
    }
}

/// One installed local SID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SidStatus {
    /// `sid`.
    pub sid: Ipv6Addr,
    /// `behavior`: RFC spelling.
    pub behavior: String,
    /// `vm`: the VM parameter (End.S, End.SBUF), if any.
    pub vm: Option<String>,
    /// `traffic`: packets and bytes that matched it.
    pub traffic: Traffic,
}

/// One SR policy (ingress steering).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyStatus {
    /// `name`: `vm:<VM>` for policies from the host config.
    pub name: String,
    /// `headend`: RFC spelling.
    pub headend: String,
    /// `segments`.
    pub segments: Vec<Ipv6Addr>,
    /// `traffic`: packets and bytes steered into it.
    pub traffic: Traffic,
}

/// ICMPv6 and NDP generation counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IcmpStatus {
    /// `errors_sent`.
    pub errors_sent: u64,
    /// `rate_limited`.
    pub rate_limited: u64,
    /// `queue_full`.
    pub queue_full: u64,
    /// `suppressed`.
    pub suppressed: u64,
    /// `ndp_answered`.
    pub ndp_answered: u64,
    /// `echo_replies`: echo requests to the node's addresses or the gateway answered.
    #[serde(default)]
    pub echo_replies: u64,
    /// `arp_answered`: ARP requests answered (gateway, uplink IPv4 addresses).
    #[serde(default)]
    pub arp_answered: u64,
}

/// How long the oldest packet of each End.SBUF release had been held when its VM resumed
/// here (one observation per resume with packets held: the network downtime the VM's
/// inbound traffic saw at this host), as a histogram.
///
/// Golden JSON: `{"le_ms":[1,5,10],"counts":[0,1,0,0],"count":1,"sum_ns":4200000}`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldStatus {
    /// `le_ms`: upper bounds of the buckets, in milliseconds, ascending.
    pub le_ms: Vec<u64>,
    /// `counts`: observations per bucket, not cumulative, one more than `le_ms` (the last
    /// counts those above every bound).
    pub counts: Vec<u64>,
    /// `count`: observations.
    pub count: u64,
    /// `sum_ns`: their sum, in nanoseconds.
    pub sum_ns: u64,
}

impl HoldStatus {
    fn add(&mut self, o: &HoldStatus) {
        if self.le_ms.is_empty() {
            *self = o.clone();
            return;
        }
        if self.le_ms == o.le_ms && self.counts.len() == o.counts.len() {
            for (a, b) in self.counts.iter_mut().zip(&o.counts) {
                *a += b;
            }
        }
        self.count += o.count;
        self.sum_ns = self.sum_ns.saturating_add(o.sum_ns);
    }
}

/// From a VM's resume here (its port attached, or QEMU's `RESUME`) to the first frame srmigd
/// handed to the VM's port in the same round (packets released from End.SBUF or a commit
/// fence): one observation per resume with frames waiting, as a histogram.
///
/// Golden JSON: `{"le_us":[250,1000],"counts":[1,0,0],"count":1,"sum_ns":120000}`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseLatencyStatus {
    /// `le_us`: upper bounds of the buckets, in microseconds, ascending.
    pub le_us: Vec<u64>,
    /// `counts`: observations per bucket, not cumulative, one more than `le_us` (the last
    /// counts those above every bound).
    pub counts: Vec<u64>,
    /// `count`: observations.
    pub count: u64,
    /// `sum_ns`: their sum, in nanoseconds.
    pub sum_ns: u64,
}

impl ReleaseLatencyStatus {
    /// The bucket bounds srmigd uses, in microseconds.
    pub const BOUNDS_US: [u64; 9] = [50, 100, 250, 500, 1_000, 2_000, 5_000, 10_000, 50_000];

    /// An empty histogram with [`Self::BOUNDS_US`].
    pub fn new() -> ReleaseLatencyStatus {
        ReleaseLatencyStatus {
            le_us: Self::BOUNDS_US.to_vec(),
            counts: vec![0; Self::BOUNDS_US.len() + 1],
            count: 0,
            sum_ns: 0,
        }
    }

    /// Adds one observation of `ns` nanoseconds.
    pub fn observe(&mut self, ns: u64) {
        if self.counts.len() != self.le_us.len() + 1 {
            *self = ReleaseLatencyStatus::new();
        }
        let us = ns / 1_000;
        let i = self
            .le_us
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(self.le_us.len());
        self.counts[i] += 1;
        self.count += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }

    fn add(&mut self, o: &ReleaseLatencyStatus) {
        if self.le_us.is_empty() {
            *self = o.clone();
            return;
        }
        if self.le_us == o.le_us && self.counts.len() == o.counts.len() {
            for (a, b) in self.counts.iter_mut().zip(&o.counts) {
                *a += b;
            }
        }
        self.count += o.count;
        self.sum_ns = self.sum_ns.saturating_add(o.sum_ns);
    }
}

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStatus {
    /// `name`: the host name.
    pub name: String,
    /// `boot_epoch`: srmigd's boot epoch, new at every start (0 if absent).
    #[serde(default)]
    pub boot_epoch: u64,
    /// `epoch`: the epoch of the host config in force, `null` before the first one.
    #[serde(default)]
    pub epoch: Option<u64>,
    /// `generation`: the host config generation in force, `null` before the first one.
    pub generation: Option<u64>,
    /// `ports`, in port id order.
    pub ports: Vec<PortStatus>,
    /// `vms`, in configuration order.
    pub vms: Vec<VmStatus>,
    /// `sids`: installed local SIDs.
    pub sids: Vec<SidStatus>,
    /// `policies`: installed SR policies.
    pub policies: Vec<PolicyStatus>,
    /// `buffer`: all End.SBUF buffers together.
    pub buffer: BufferStatus,
    /// `drops`: every drop reason with its count (an object of counts by reason).
    pub drops: DropCounts,
    /// `icmp`.
    pub icmp: IcmpStatus,
    /// `holds`: End.SBUF hold times at release (absent from older srmigd).
    #[serde(default)]
    pub holds: HoldStatus,
    /// `fence`: the commit fence (absent from older srmigd).
    #[serde(default)]
    pub fence: FenceStatus,
    /// `release_latency`: from each VM resume to the first frame to the VM (absent from older
    /// srmigd).
    #[serde(default)]
    pub release_latency: ReleaseLatencyStatus,
}

// ------------------------------------------------------------------------------------------
// Several workers (`srmigd --workers N`): one status from N

impl Traffic {
    fn add(&mut self, o: Traffic) {
        self.packets += o.packets;
        self.bytes += o.bytes;
    }
}

impl BufferStatus {
    fn add(&mut self, o: BufferStatus) {
        self.packets += o.packets;
        self.bytes += o.bytes;
    }
}

/// Adds every counter of `o` to `a` (destructured: a new counter must be merged here too).
fn add_io(a: &mut PortIoStats, o: &PortIoStats) {
    let PortIoStats {
        rx_frames,
        rx_truncated,
        rx_gso,
        rx_gso_segments,
        rx_gso_bad,
        rx_bad_csum_meta,
        rx_csum_completed,
        rx_errors,
        rx_ring_drops,
        tx_errors,
        tx_no_link,
        attachments,
        prepared_attaches,
        fast_forced_enables,
        tx_queued,
        tx_queue_full,
        rx_bad_records,
        rx_resets,
        recovered,
        recovery_inexact,
        recovery_lost,
        recovery_counted,
        recovery_count_refused,
        resteered,
    } = *o;
    a.rx_frames += rx_frames;
    a.rx_truncated += rx_truncated;
    a.rx_gso += rx_gso;
    a.rx_gso_segments += rx_gso_segments;
    a.rx_gso_bad += rx_gso_bad;
    a.rx_bad_csum_meta += rx_bad_csum_meta;
    a.rx_csum_completed += rx_csum_completed;
    a.rx_errors += rx_errors;
    a.rx_ring_drops += rx_ring_drops;
    a.tx_errors += tx_errors;
    a.tx_no_link += tx_no_link;
    a.attachments += attachments;
    a.prepared_attaches += prepared_attaches;
    a.fast_forced_enables += fast_forced_enables;
    a.tx_queued += tx_queued;
    a.tx_queue_full += tx_queue_full;
    a.rx_bad_records += rx_bad_records;
    a.rx_resets += rx_resets;
    a.recovered += recovered;
    a.recovery_inexact += recovery_inexact;
    a.recovery_lost += recovery_lost;
    a.recovery_counted += recovery_counted;
    a.recovery_count_refused += recovery_count_refused;
    a.resteered += resteered;
}

impl PortStatus {
    /// Adds another worker's view of the same port: counters summed; attached only while
    /// both are; ifindex, socket and MTU are this one's (both read the same interface).
    pub fn merge(&mut self, o: &PortStatus) {
        self.attached &= o.attached;
        self.rx.add(o.rx);
        self.tx.add(o.tx);
        add_io(&mut self.io, &o.io);
    }
}

impl VmStatus {
    /// Adds another worker's view of the same VM: counters and buffer summed; state, port,
    /// `local` and addresses are this one's (every worker applies the same changes).
    pub fn merge(&mut self, o: &VmStatus) {
        self.buffer.add(o.buffer);
        self.rx.add(o.rx);
        self.tx.add(o.tx);
        self.held += o.held;
        self.released += o.released;
        self.expired += o.expired;
        self.dropped += o.dropped;
        self.fenced += o.fenced;
        self.state_since_us = self.state_since_us.max(o.state_since_us);
    }
}

impl HostStatus {
    /// Adds another worker's status (`srmigd --workers N`): every counter summed, per port,
    /// VM, SID (by address), policy (by name) and drop reason; the rest (name, generation,
    /// states, configuration) is this one's. Entries only `o` has are added.
    pub fn merge(&mut self, o: &HostStatus) {
        for (i, p) in o.ports.iter().enumerate() {
            match self.ports.get_mut(i).filter(|m| m.name == p.name) {
                Some(m) => m.merge(p),
                None => match self.ports.iter_mut().find(|m| m.name == p.name) {
                    Some(m) => m.merge(p),
                    None => self.ports.push(p.clone()),
                },
            }
        }
        for v in &o.vms {
            match self.vms.iter_mut().find(|m| m.name == v.name) {
                Some(m) => m.merge(v),
                None => self.vms.push(v.clone()),
            }
        }
        for s in &o.sids {
            match self.sids.iter_mut().find(|m| m.sid == s.sid) {
                Some(m) => m.traffic.add(s.traffic),
                None => self.sids.push(s.clone()),
            }
        }
        for p in &o.policies {
            match self.policies.iter_mut().find(|m| m.name == p.name) {
                Some(m) => m.traffic.add(p.traffic),
                None => self.policies.push(p.clone()),
            }
        }
        self.buffer.add(o.buffer);
        self.holds.add(&o.holds);
        self.release_latency.add(&o.release_latency);
        self.fence.add(&o.fence);
        self.drops.add_all(&o.drops);
        let IcmpStatus {
            errors_sent,
            rate_limited,
            queue_full,
            suppressed,
            ndp_answered,
            echo_replies,
            arp_answered,
        } = o.icmp;
        self.icmp.errors_sent += errors_sent;
        self.icmp.rate_limited += rate_limited;
        self.icmp.queue_full += queue_full;
        self.icmp.suppressed += suppressed;
        self.icmp.ndp_answered += ndp_answered;
        self.icmp.echo_replies += echo_replies;
        self.icmp.arp_answered += arp_answered;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(packets: u64, bytes: u64) -> Traffic {
        Traffic { packets, bytes }
    }

    fn status(k: u64, attached: bool) -> HostStatus {
        let io = PortIoStats {
            rx_frames: 10 * k,
            tx_errors: k,
            attachments: 1,
            resteered: k,
            ..PortIoStats::default()
        };
        HostStatus {
            name: "h1".into(),
            boot_epoch: 9,
            epoch: Some(1),
            generation: Some(3),
            ports: vec![PortStatus {
                name: "up0".into(),
                kind: "uplink".into(),
                ifindex: Some(2),
                attached,
                rx: t(10 * k, 1000 * k),
                tx: t(k, 100 * k),
                io,
                socket: Some("packet".into()),
                fast_path: false,
                fast_path_hook: None,
                mtu: Some(1500),
            }],
            vms: vec![VmStatus {
                name: "web1".into(),
                state: crate::VmState::Running,
                port: "vm0".into(),
                local: Some(true),
                addresses: vec!["2001:db8:a::10".parse().expect("addr")],
                buffer: BufferStatus {
                    packets: k,
                    bytes: 100 * k,
                },
                rx: t(k, k),
                tx: t(2 * k, 2 * k),
                held: 3 * k,
                released: 2 * k,
                expired: k,
                dropped: k,
                fenced: 4 * k,
                state_since_us: None,
            }],
            sids: vec![SidStatus {
                sid: "fc00:0:1::d6".parse().expect("sid"),
                behavior: "End.DT6".into(),
                vm: None,
                traffic: t(5 * k, 500 * k),
            }],
            policies: vec![PolicyStatus {
                name: "vm:web2".into(),
                headend: "H.Encaps".into(),
                segments: vec!["fc00:0:2::d6".parse().expect("seg")],
                traffic: t(7 * k, 700 * k),
            }],
            buffer: BufferStatus {
                packets: k,
                bytes: 100 * k,
            },
            drops: [("BufferFull", k), ("NoRoute", 2 * k)]
                .into_iter()
                .collect(),
            icmp: IcmpStatus {
                errors_sent: k,
                rate_limited: 2 * k,
                queue_full: 0,
                suppressed: k,
                ndp_answered: 4 * k,
                echo_replies: 5 * k,
                arp_answered: 6 * k,
            },
            holds: HoldStatus {
                le_ms: vec![1, 5],
                counts: vec![0, k, 2 * k],
                count: 3 * k,
                sum_ns: 1000 * k,
            },
            fence: FenceStatus {
                markers_sent: k,
                markers_unsent: 2 * k,
                markers_received: 3 * k,
                markers_duplicate: 4 * k,
                markers_late: 5 * k,
                markers_unarmed: 6 * k,
                held: 7 * k,
                released: 8 * k,
                timeouts: 9 * k,
                bypassed: 10 * k,
                dropped: 11 * k,
                holding: 12 * k,
                pairs: 13 * k,
                arrivals_dropped: 14 * k,
                markers_relayed: 15 * k,
            },
            release_latency: ReleaseLatencyStatus {
                le_us: vec![250, 1_000],
                counts: vec![k, 0, 2 * k],
                count: 3 * k,
                sum_ns: 5_000 * k,
            },
        }
    }

    #[test]
    fn release_latency_golden_json_and_buckets() {
        let golden = r#"{"le_us":[250,1000],"counts":[1,0,0],"count":1,"sum_ns":120000}"#;
        let h = ReleaseLatencyStatus {
            le_us: vec![250, 1_000],
            counts: vec![1, 0, 0],
            count: 1,
            sum_ns: 120_000,
        };
        assert_eq!(serde_json::to_string(&h).expect("serialize"), golden);
        assert_eq!(
            serde_json::from_str::<ReleaseLatencyStatus>(golden).expect("deserialize"),
            h
        );
        let mut h = ReleaseLatencyStatus::default();
        for ns in [40_000, 50_000, 50_999, 999_000, 1_001_000, 60_000_000] {
            h.observe(ns);
        }
        // <= 50 us (three: bounds are inclusive, sub-microseconds ignored), <= 1 ms, <= 2 ms,
        // above every bound.
        assert_eq!(h.counts, vec![3, 0, 0, 0, 1, 1, 0, 0, 0, 1]);
        assert_eq!(h.count, 6);
    }

    #[test]
    fn merged_status_sums_every_counter() {
        let mut m = status(1, true);
        m.merge(&status(2, true));
        assert_eq!(m, {
            // What the counters of status(3) are, with two attachments.
            let mut want = status(3, true);
            want.ports[0].io.attachments = 2;
            want
        });
        // A port one worker has no socket on is not attached.
        let mut m = status(1, true);
        m.merge(&status(1, false));
        assert!(!m.ports[0].attached);
        // Merging one status is the identity.
        let mut one = status(1, true);
        let before = one.clone();
        one.merge(&HostStatus {
            ports: vec![],
            vms: vec![],
            sids: vec![],
            policies: vec![],
            drops: DropCounts::new(),
            buffer: BufferStatus::default(),
            icmp: IcmpStatus::default(),
            holds: HoldStatus::default(),
            fence: FenceStatus::default(),
            release_latency: ReleaseLatencyStatus::default(),
            ..before.clone()
        });
        assert_eq!(one, before);
    }

    /// A VM's state is in force once the last worker applied it.
    #[test]
    fn merged_vm_state_since_is_the_last_workers() {
        let vm = |since| VmStatus {
            state_since_us: since,
            ..status(1, true).vms[0].clone()
        };
        for (a, b, want) in [
            (Some(5), Some(9), Some(9)),
            (Some(9), Some(5), Some(9)),
            (None, Some(5), Some(5)),
            (Some(5), None, Some(5)),
            (None, None, None),
        ] {
            let mut m = vm(a);
            m.merge(&vm(b));
            assert_eq!(m.state_since_us, want, "{a:?} + {b:?}");
        }
    }
}
