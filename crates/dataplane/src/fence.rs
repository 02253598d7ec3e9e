//! The commit fence: a VM's packets in order across the switch from the SR path to the direct
//! path.
//!
//! During a migration of VM `v` from S to D, every ingress steers `v`'s packets through
//! `S::End.S -> D::End.SBUF`. At the commit the controller tells every ingress to send them
//! straight to D (`D::End.DT6`, or natively on D itself). Packets still on the detour through
//! S then reach D *after* newer packets that took the direct path: reordering, which costs TCP
//! fast retransmits and window cuts. The fence puts them back in order, per ingress and per VM:
//!
//! ```text
//!  ingress C                    S (End.S)                D (End.SBUF, End.DT6)        VM v at D
//!     │ p1 via [S::End.S, D::End.SBUF]                      │ fence armed for v         │
//!     ├────────────────────────►├──────────── p1 ──────────►│ (v has an End.SBUF entry) │
//!     │ commit config applied:  │  (p1 still in flight)      │                           │
//!     │ marker(v) down the old path                          │                           │
//!     ├────────────────────────►│                            │                           │
//!     │ p2 via [D::End.DT6] (direct) ───────────────────────►│ (v, C) has no marker yet: │
//!     │                         │                            │ hold p2 in the fence      │
//!     │                         ├──────────── p1 ───────────►│ End.SBUF delivers p1 ────►│
//!     │                         ├──────── marker(v) ────────►│ marker from C: release    │
//!     │                         │                            │ p2, then pass (v, C) ────►│
//!     │ p3 via [D::End.DT6] ────────────────────────────────►│ (v, C) open: deliver ────►│
//! ```
//!
//! - **The marker** is an IPv6 packet from the ingress's encapsulation source along the old
//!   segment list, whose SRH has Next Header 59 (no payload: nothing a decapsulating behavior
//!   could ever hand to a VM) and a TLV of type [`srh::TLV_FENCE`] (124, RFC 8754's range for
//!   experimentation) carrying the VM's address. End.S forwards it towards D whatever the VM's
//!   state; D's End.SBUF consumes it (`Consumed`), and any other behavior drops it as it drops
//!   a packet without an upper-layer header. D accepts a marker only at an End.SBUF SID, so
//!   only from inside the SR domain: every packet for a local SID must come from
//!   `infrastructure_prefixes` (RFC 8754 5.1, else `SrhFromOutsideDomain`) and pass the HMAC
//!   check of its ingress port, before any behavior runs. VM ports never reach a SID. A node
//!   with `migration_hmac_key` signs its markers (an HMAC TLV after the fence TLV), so they
//!   pass uplinks that require HMAC and a marker with a changed source or path fails there.
//! - **Armed**: D fences VM `v` while `v` has an End.SBUF entry here
//!   ([`crate::Dataplane::set_fence_armed`], which srmigd's agent sets from the host config).
//!   Only then can a direct packet for `v` meet the detour: before the commit no ingress sends
//!   `v`'s packets straight to D. Other VMs are never touched: one branch on a per-VM flag.
//! - **Per (VM, ingress)**: the ingress is the outer source of a decapsulated packet (End.DT6,
//!   End.DT4, End.DT46), or this node's own encapsulation source for packets from this node's
//!   VM ports. A direct packet of a pair without a marker yet is held in the pair's FIFO; the
//!   marker opens the pair, and its FIFO is released through `poll_transmit` ahead of any later
//!   packet of the pair (which queues behind while the FIFO is not empty). Packets released from
//!   the VM's End.SBUF buffer go before fenced ones.
//! - **Bounded like End.SBUF**: at most [`FenceConfig::timeout_ms`] per pair (500 ms by
//!   default; then the pair opens anyway: `fence.timeouts`; the migration's cleanup, which
//!   removes the End.SBUF entry and so disarms the fence, usually comes first). The timeout
//!   must exceed how long the detour can lag the direct path: under overload the old path
//!   queued 300 ms in the 10-VM lab, and a 100 ms timeout let direct packets overtake it),
//!   `per_ingress_packets` per pair, `global_packets` and
//!   `global_bytes` together, [`MAX_FENCE_SLOTS`] pairs. A packet beyond a bound is delivered at
//!   once, out of order but not lost (`fence.bypassed`). Disarming (the End.SBUF entry removed
//!   at the cleanup) releases everything still held.
//! - **Late, lost and duplicated markers**: a marker after its pair timed out is counted
//!   `fence.markers_late`; one for an open pair `fence.markers_duplicate`; one for a VM not
//!   fenced here `fence.markers_unarmed`. A lost marker costs its pair the timeout (or the wait
//!   until the cleanup disarms the fence), nothing else.
//! - **Reported**: every marker that reaches an armed VM's End.SBUF is also queued as a
//!   [`MarkerArrival`] ([`crate::Dataplane::poll_fence_arrival`]); srmigd reports it to the
//!   controller (`POST /v1/fence`), whose cleanup waits, after the drain, until the marker of
//!   every host came (bounded by its `fence_wait_ms`). A marker is the last packet its ingress
//!   sent along the old path, so once D has every host's, nothing is left on the detour: End.S
//!   can go without a straggler meeting `NoSid` at S, and disarming the fence (End.SBUF gone)
//!   releases nothing ahead of a straggler.
//!
//! Several engines on one host (srmigd `--workers N`): a marker reaches the one engine its
//! flow hash picks; the host passes its [`MarkerArrival`] on to the others, which open their
//! own pair with [`crate::Dataplane::fence_marker_relayed`] once they have processed what
//! they received before it (no arrival reported, counted as `markers_relayed`).
//!
//! Sending: [`crate::Dataplane::send_fence_marker`] queues the marker; the next
//! `poll_transmit` builds it, runs it through this node's own SIDs (S's End.S when S is the
//! ingress) and the FIB, and returns it before anything else queued. The engine stores held
//! packets in a second [`SbufStore`] (allocated the first time a fence is armed), whose queues
//! are indexed by pair slot instead of by VM.

use std::net::{IpAddr, Ipv6Addr};

use srmig_wire::srh::{self, Srh, SrhRepr, Tlv, TlvRepr};
use srmig_wire::{ipv6, IpProtocol};

use crate::buffer::{SbufStore, MAX_GLOBAL_PACKETS};
use crate::config::{BufferConfig, ConfigError, FenceConfig};
use crate::hmac::HmacKey;
use crate::time::Instant;
use crate::vm::VmId;

/// Pairs (VM, ingress) fenced at once.
pub const MAX_FENCE_SLOTS: usize = 64;

/// Markers queued by [`crate::Dataplane::send_fence_marker`] and not yet sent, at most.
pub const MAX_PENDING_MARKERS: usize = 256;

/// Marker arrivals not yet taken by [`crate::Dataplane::poll_fence_arrival`], at most (beyond,
/// the oldest is forgotten: counted `fence.arrivals_dropped`).
pub const MAX_PENDING_ARRIVALS: usize = 256;

/// A marker reached this node's End.SBUF for a fenced VM: the ingress that sent it has
/// switched the VM to the direct path and has nothing left on the old one. srmigd reports it
/// to the controller, whose cleanup waits for every ingress's marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkerArrival {
    /// The VM.
    pub vm: VmId,
    /// The marker's source: the ingress's encapsulation source.
    pub ingress: Ipv6Addr,
    /// When it arrived.
    pub at: Instant,
}

/// Version octet of the marker TLV.
pub const MARKER_VERSION: u8 = 1;

/// Data octets of the marker TLV: version, reserved, the VM's address (IPv4 as IPv4-mapped
/// IPv6), 4 reserved octets (the TLV is 24 octets, the SRH stays a multiple of 8).
pub const MARKER_TLV_DATA_LEN: usize = 22;

/// The fence TLV of a marker for `vm`.
pub fn marker_tlv(vm: IpAddr) -> TlvRepr {
    let mut data = vec![0u8; MARKER_TLV_DATA_LEN];
    data[0] = MARKER_VERSION;
    let a = match vm {
        IpAddr::V6(a) => a,
        IpAddr::V4(a) => a.to_ipv6_mapped(),
    };
    data[2..18].copy_from_slice(&a.octets());
    TlvRepr::Unknown {
        tlv_type: srh::TLV_FENCE,
        data,
    }
}

/// The marker for `vm` from `src` along `path` (first segment first), as an IPv6 packet
/// (hop limit 64). `None` if the path is empty or too long for an SRH.
pub fn build_marker(src: Ipv6Addr, path: &[Ipv6Addr], vm: IpAddr) -> Option<Vec<u8>> {
    build_signed_marker(src, path, vm, None)
}

/// [`build_marker`], its SRH signed with `key` (an HMAC TLV after the fence TLV; RFC 8754
/// 2.1.2, `crate::hmac`) if there is one.
pub(crate) fn build_signed_marker(
    src: Ipv6Addr,
    path: &[Ipv6Addr],
    vm: IpAddr,
    key: Option<&HmacKey>,
) -> Option<Vec<u8>> {
    let mut repr = SrhRepr::from_path(IpProtocol::NO_NEXT_HEADER, path).ok()?;
    repr.tlvs.push(marker_tlv(vm));
    let srh_len = repr.buffer_len();
    let mut out = vec![0u8; ipv6::HEADER_LEN + srh_len];
    let payload = u16::try_from(srh_len).ok()?;
    out[0] = 0x60;
    out[4..6].copy_from_slice(&payload.to_be_bytes());
    out[6] = IpProtocol::ROUTING.0;
    out[7] = 64;
    out[8..24].copy_from_slice(&src.octets());
    out[24..40].copy_from_slice(&path.first()?.octets());
    let mut view = Srh::new_unchecked(&mut out[ipv6::HEADER_LEN..]);
    repr.emit(&mut view).ok()?;
    if let Some(k) = key {
        // The whole path is in the list (the DA is Segment List[SL]): D flag clear.
        crate::hmac::sign_rewrite(&mut out, ipv6::HEADER_LEN, k, false);
        let payload = u16::try_from(out.len() - ipv6::HEADER_LEN).ok()?;
        out[4..6].copy_from_slice(&payload.to_be_bytes());
    }
    Some(out)
}

/// The VM address a marker's SRH (`srh_bytes`, the whole header) carries, if it has a fence
/// TLV of a known version.
pub fn marker_vm(srh_bytes: &[u8]) -> Option<IpAddr> {
    let h = Srh::new_checked(srh_bytes).ok()?;
    for t in h.tlvs() {
        let Ok(Tlv::Unknown { tlv_type, data }) = t else {
            continue;
        };
        if tlv_type != srh::TLV_FENCE || data.len() != MARKER_TLV_DATA_LEN {
            continue;
        }
        if data[0] != MARKER_VERSION {
            return None;
        }
        let mut a = [0u8; 16];
        a.copy_from_slice(&data[2..18]);
        let a = Ipv6Addr::from(a);
        return Some(match a.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(a),
        });
    }
    None
}

/// Fence counters (all pairs together).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FenceCounters {
    /// Markers this node sent (queued and routed).
    pub markers_sent: u64,
    /// Markers that could not be sent (queue full, no route, unusable path).
    pub markers_unsent: u64,
    /// Markers received that opened a pair (or opened it before any direct packet came).
    pub markers_received: u64,
    /// Markers for a pair already opened by an earlier marker.
    pub markers_duplicate: u64,
    /// Markers for a pair its timeout had already opened.
    pub markers_late: u64,
    /// Markers for a VM not fenced here (no End.SBUF entry), ignored.
    pub markers_unarmed: u64,
    /// Direct packets held by a fence.
    pub held: u64,
    /// Held packets released to their VM.
    pub released: u64,
    /// Pairs opened by their timeout instead of a marker.
    pub timeouts: u64,
    /// Direct packets delivered at once because a fence bound was reached (out of order, not
    /// lost).
    pub bypassed: u64,
    /// Held packets dropped on release (the VM no longer runs here, or too big for its port).
    pub dropped: u64,
    /// Marker arrivals forgotten because nobody took them in time
    /// ([`MAX_PENDING_ARRIVALS`]).
    pub arrivals_dropped: u64,
    /// Markers another worker of this host received and relayed here
    /// ([`crate::Dataplane::fence_marker_relayed`]) that opened a pair.
    pub markers_relayed: u64,
}

/// What a direct packet for an armed VM does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Deliver it now.
    Pass,
    /// Append it to this slot's FIFO.
    Hold(usize),
}

/// What a received marker did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MarkerOutcome {
    /// It opened its pair (or pre-opened it).
    Opened,
    /// Its pair was already open by a marker.
    Duplicate,
    /// Its pair had been opened by the timeout.
    Late,
    /// Its VM is not fenced here.
    Unarmed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    /// No marker yet: direct packets wait (until `deadline`).
    Holding,
    /// Marker received: packets pass (after the FIFO drained).
    Open,
    /// Opened by the timeout: packets pass; a late marker is counted as such.
    TimedOut,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    vm: VmId,
    ingress: u128,
    state: SlotState,
    deadline: Instant,
}

/// Every fence of the node.
#[derive(Debug, Clone)]
pub(crate) struct Fences {
    cfg: FenceConfig,
    /// Per VM: fenced here.
    armed: Vec<bool>,
    /// Whether any VM is armed (the per-packet test when none is).
    any_armed: bool,
    slots: [Option<Slot>; MAX_FENCE_SLOTS],
    /// Held packets, queue `i` for slot `i` (created at the first arm).
    store: Option<SbufStore>,
    /// Open slots with packets still held, in the order they opened.
    pub(crate) releasing: Vec<usize>,
    /// Markers to send: the VM's address and the old path.
    pub(crate) markers: Vec<(IpAddr, Vec<Ipv6Addr>)>,
    /// Markers received for armed VMs, to report.
    pub(crate) arrivals: std::collections::VecDeque<MarkerArrival>,
    pub(crate) counters: FenceCounters,
}

impl Fences {
    /// Validates `cfg`; nothing is allocated until a fence is armed.
    pub(crate) fn new(cfg: FenceConfig, vms: usize) -> Result<Fences, ConfigError> {
        if cfg.timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "fence.timeout_ms",
                "must be at least 1",
            ));
        }
        if cfg.per_ingress_packets == 0 || cfg.global_packets == 0 || cfg.global_bytes == 0 {
            return Err(ConfigError::invalid(
                "fence",
                "per_ingress_packets, global_packets and global_bytes must be at least 1",
            ));
        }
        if cfg.per_ingress_packets > cfg.global_packets {
            return Err(ConfigError::invalid(
                "fence.per_ingress_packets",
                "must not exceed fence.global_packets",
            ));
        }
        if cfg.global_packets > MAX_GLOBAL_PACKETS {
            return Err(ConfigError::invalid(
                "fence.global_packets",
                format!(
                    "{} exceeds the maximum {MAX_GLOBAL_PACKETS}",
                    cfg.global_packets
                ),
            ));
        }
        Ok(Fences {
            cfg,
            armed: vec![false; vms],
            any_armed: false,
            slots: [None; MAX_FENCE_SLOTS],
            store: None,
            releasing: Vec::with_capacity(MAX_FENCE_SLOTS),
            markers: Vec::new(),
            arrivals: std::collections::VecDeque::new(),
            counters: FenceCounters::default(),
        })
    }

    fn store_config(cfg: &FenceConfig) -> BufferConfig {
        BufferConfig {
            per_vm_packets: cfg.per_ingress_packets,
            per_vm_bytes: cfg.global_bytes,
            global_packets: cfg.global_packets,
            global_bytes: cfg.global_bytes,
            // Fenced packets leave by the pair's timeout, never by age.
            max_age_ms: u64::MAX / 2_000_000,
        }
    }

    /// Whether `vm` is fenced here.
    #[inline]
    pub(crate) fn is_armed(&self, vm: VmId) -> bool {
        self.any_armed && self.armed.get(vm.index()).copied().unwrap_or(false)
    }

    /// Whether an open pair (its marker came, its deadline passed, or its fence was disarmed)
    /// still has packets to release.
    pub(crate) fn is_releasing(&self) -> bool {
        !self.releasing.is_empty()
    }

    /// Arms (`true`) or disarms `vm`'s fence. Disarming opens every pair of `vm`: what they
    /// hold is released by `poll_transmit`, and the pairs are forgotten once empty.
    pub(crate) fn set_armed(&mut self, vm: VmId, armed: bool) -> Result<(), ConfigError> {
        let Some(a) = self.armed.get_mut(vm.index()) else {
            return Err(ConfigError::invalid(format!("vm {}", vm.0), "no such VM"));
        };
        if armed && self.store.is_none() {
            let store = SbufStore::new(Self::store_config(&self.cfg), MAX_FENCE_SLOTS)
                .map_err(|e| fence_error(&e))?;
            self.store = Some(store);
        }
        *a = armed;
        self.any_armed = self.armed.iter().any(|a| *a);
        if !armed {
            for i in 0..MAX_FENCE_SLOTS {
                let Some(s) = self.slots[i].as_mut().filter(|s| s.vm == vm) else {
                    continue;
                };
                s.state = SlotState::Open;
                if self.is_empty(i) {
                    // Forgotten, and out of the release list too: an empty pair may still be in
                    // it (its last packet left, the release has not yet seen the end). Left
                    // there, the slot's next pair (another ingress, another VM) would be
                    // released as soon as it holds something, before its marker.
                    self.slots[i] = None;
                    self.releasing.retain(|r| *r != i);
                } else if !self.releasing.contains(&i) {
                    self.releasing.push(i);
                }
            }
        }
        Ok(())
    }

    fn find(&self, vm: VmId, ingress: u128) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.is_some_and(|s| s.vm == vm && s.ingress == ingress))
    }

    fn claim(&mut self, slot: Slot) -> Option<usize> {
        let i = self.slots.iter().position(Option::is_none)?;
        self.slots[i] = Some(slot);
        Some(i)
    }

    pub(crate) fn is_empty(&self, slot: usize) -> bool {
        self.store
            .as_ref()
            .is_none_or(|s| s.is_empty(VmId(slot as u32)))
    }

    /// What a direct packet for armed `vm` from `ingress` does at `now`.
    pub(crate) fn gate(&mut self, now: Instant, vm: VmId, ingress: u128) -> Gate {
        if !self.is_armed(vm) {
            // Disarmed while a pair of `vm` still queues what it held (its packets leave over
            // several `poll_transmit` rounds: srmigd takes a chunk per round): that pair's
            // new packets go behind them, never past them.
            return match self.find(vm, ingress) {
                Some(i) if !self.is_empty(i) => Gate::Hold(i),
                _ => Gate::Pass,
            };
        }
        match self.find(vm, ingress) {
            Some(i) => match self.slots[i].map(|s| s.state) {
                Some(SlotState::Holding) => Gate::Hold(i),
                _ if !self.is_empty(i) => Gate::Hold(i),
                _ => Gate::Pass,
            },
            None => {
                let deadline = Instant(
                    now.as_nanos()
                        .saturating_add(self.cfg.timeout_ms.saturating_mul(1_000_000)),
                );
                let slot = Slot {
                    vm,
                    ingress,
                    state: SlotState::Holding,
                    deadline,
                };
                match self.claim(slot) {
                    Some(i) => Gate::Hold(i),
                    None => {
                        self.counters.bypassed += 1;
                        Gate::Pass
                    }
                }
            }
        }
    }

    /// The store, for holding into slot queues (armed fences have one).
    pub(crate) fn store_mut(&mut self) -> Option<&mut SbufStore> {
        self.store.as_mut()
    }

    /// A marker for `vm` from `ingress` arrived at `now`.
    pub(crate) fn on_marker(&mut self, now: Instant, vm: VmId, ingress: u128) -> MarkerOutcome {
        if !self.is_armed(vm) {
            self.counters.markers_unarmed += 1;
            return MarkerOutcome::Unarmed;
        }
        if self.arrivals.len() >= MAX_PENDING_ARRIVALS {
            self.arrivals.pop_front();
            self.counters.arrivals_dropped += 1;
        }
        self.arrivals.push_back(MarkerArrival {
            vm,
            ingress: Ipv6Addr::from(ingress),
            at: now,
        });
        self.open_pair(now, vm, ingress, false)
    }

    /// Another worker of this host received the marker for `vm` from `ingress` (srmigd
    /// `--workers N`: the kernel hands the marker to one worker only). Opens the pair like
    /// the marker would, without reporting an arrival (the receiving worker did).
    pub(crate) fn on_relayed_marker(
        &mut self,
        now: Instant,
        vm: VmId,
        ingress: u128,
    ) -> MarkerOutcome {
        if !self.is_armed(vm) {
            self.counters.markers_unarmed += 1;
            return MarkerOutcome::Unarmed;
        }
        self.open_pair(now, vm, ingress, true)
    }

    /// Opens the (vm, ingress) pair for a marker (received here or `relayed`).
    fn open_pair(&mut self, now: Instant, vm: VmId, ingress: u128, relayed: bool) -> MarkerOutcome {
        let Some(i) = self.find(vm, ingress) else {
            // Before any direct packet: open the pair now, so those pass.
            let slot = Slot {
                vm,
                ingress,
                state: SlotState::Open,
                deadline: now,
            };
            // Without room, later packets of the pair bypass the fence anyway.
            let _ = self.claim(slot);
            self.count_opened(relayed);
            return MarkerOutcome::Opened;
        };
        let Some(s) = self.slots[i].as_mut() else {
            return MarkerOutcome::Unarmed;
        };
        match s.state {
            SlotState::Holding => {
                s.state = SlotState::Open;
                self.count_opened(relayed);
                if !self.is_empty(i) && !self.releasing.contains(&i) {
                    self.releasing.push(i);
                }
                MarkerOutcome::Opened
            }
            SlotState::Open => {
                self.counters.markers_duplicate += 1;
                MarkerOutcome::Duplicate
            }
            SlotState::TimedOut => {
                s.state = SlotState::Open;
                self.counters.markers_late += 1;
                MarkerOutcome::Late
            }
        }
    }

    fn count_opened(&mut self, relayed: bool) {
        if relayed {
            self.counters.markers_relayed += 1;
        } else {
            self.counters.markers_received += 1;
        }
    }

    /// The earliest deadline of a pair still waiting for its marker.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.slots
            .iter()
            .flatten()
            .filter(|s| s.state == SlotState::Holding)
            .map(|s| s.deadline)
            .min()
    }

    /// Opens the pairs whose marker did not come by their deadline.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        for i in 0..MAX_FENCE_SLOTS {
            let Some(s) = self.slots[i].as_mut() else {
                continue;
            };
            if s.state != SlotState::Holding || now < s.deadline {
                continue;
            }
            s.state = SlotState::TimedOut;
            self.counters.timeouts += 1;
            if !self.is_empty(i) && !self.releasing.contains(&i) {
                self.releasing.push(i);
            }
        }
    }

    /// The VM of slot `i`.
    pub(crate) fn slot_vm(&self, i: usize) -> Option<VmId> {
        self.slots.get(i).copied().flatten().map(|s| s.vm)
    }

    /// Slot `i` drained: it leaves the release list, and is forgotten if its VM is no longer
    /// fenced.
    pub(crate) fn drained(&mut self, i: usize) {
        self.releasing.retain(|s| *s != i);
        if let Some(s) = self.slots.get(i).copied().flatten() {
            if !self.is_armed(s.vm) {
                self.slots[i] = None;
            }
        }
    }

    /// Pairs currently known (holding or open), for status.
    pub(crate) fn pairs(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    /// Packets held by every fence now.
    pub(crate) fn held_now(&self) -> u64 {
        self.store.as_ref().map_or(0, |s| s.total().packets)
    }
}

fn fence_error(e: &ConfigError) -> ConfigError {
    ConfigError::invalid("fence", e.to_string().replace("buffer.", "fence."))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Instant {
        Instant(ms * 1_000_000)
    }

    fn armed() -> Fences {
        let mut f = Fences::new(FenceConfig::default(), 2).unwrap();
        f.set_armed(VmId(0), true).unwrap();
        f
    }

    #[test]
    fn marker_round_trip() {
        let src: Ipv6Addr = "fc00:0:3::1".parse().unwrap();
        let path: Vec<Ipv6Addr> = vec![
            "fc00:0:1::e5".parse().unwrap(),
            "fc00:0:2::5b".parse().unwrap(),
        ];
        for vm in [
            "2001:db8::10".parse::<IpAddr>().unwrap(),
            "10.0.0.7".parse().unwrap(),
        ] {
            let m = build_marker(src, &path, vm).unwrap();
            assert_eq!(m.len(), 40 + 8 + 32 + 24);
            assert_eq!(&m[24..40], &path[0].octets());
            let h = Srh::new_checked(&m[40..]).unwrap();
            assert_eq!(h.next_header(), IpProtocol::NO_NEXT_HEADER);
            assert_eq!((h.segments_left(), h.last_entry()), (1, 1));
            assert_eq!(marker_vm(&m[40..]), Some(vm));
        }
        assert!(build_marker(src, &[], "2001:db8::10".parse().unwrap()).is_none());
        // An SRH without the TLV, or with another version, is no marker.
        let plain = SrhRepr::from_path(IpProtocol::NO_NEXT_HEADER, &path).unwrap();
        let mut b = vec![0u8; plain.buffer_len()];
        plain.emit(&mut Srh::new_unchecked(&mut b[..])).unwrap();
        assert_eq!(marker_vm(&b), None);
        let mut m = build_marker(src, &path, "2001:db8::10".parse().unwrap()).unwrap();
        let at = 40 + 8 + 32 + 2;
        m[at] = 9;
        assert_eq!(marker_vm(&m[40..]), None);
    }

    #[test]
    fn pairs_hold_until_their_marker_and_only_their_own() {
        let mut f = armed();
        assert_eq!(f.gate(t(0), VmId(1), 7), Gate::Pass, "VM 1 is not fenced");
        assert_eq!(f.gate(t(0), VmId(0), 7), Gate::Hold(0));
        assert_eq!(f.gate(t(0), VmId(0), 8), Gate::Hold(1));
        assert_eq!(f.on_marker(t(1), VmId(0), 7), MarkerOutcome::Opened);
        // Empty FIFO: the pair passes at once; ingress 8 still holds.
        assert_eq!(f.gate(t(1), VmId(0), 7), Gate::Pass);
        assert_eq!(f.gate(t(1), VmId(0), 8), Gate::Hold(1));
        assert_eq!(f.on_marker(t(2), VmId(0), 7), MarkerOutcome::Duplicate);
        assert_eq!(f.on_marker(t(2), VmId(1), 7), MarkerOutcome::Unarmed);
        assert_eq!(f.counters.markers_duplicate, 1);
        assert_eq!(f.counters.markers_unarmed, 1);
    }

    #[test]
    fn a_relayed_marker_opens_the_pair_without_an_arrival() {
        let mut f = armed();
        assert_eq!(f.gate(t(0), VmId(0), 7), Gate::Hold(0));
        assert_eq!(f.on_relayed_marker(t(1), VmId(0), 7), MarkerOutcome::Opened);
        assert!(
            f.arrivals.is_empty(),
            "the receiving worker reports the arrival"
        );
        assert_eq!(f.counters.markers_relayed, 1);
        assert_eq!(f.counters.markers_received, 0);
        // The relay may come before any direct packet, or twice (two workers of the ingress).
        assert_eq!(f.on_relayed_marker(t(2), VmId(0), 8), MarkerOutcome::Opened);
        assert_eq!(f.gate(t(2), VmId(0), 8), Gate::Pass);
        assert_eq!(
            f.on_relayed_marker(t(3), VmId(0), 8),
            MarkerOutcome::Duplicate
        );
        assert_eq!(
            f.on_relayed_marker(t(3), VmId(1), 8),
            MarkerOutcome::Unarmed
        );
        assert_eq!(f.poll_timeout(), None, "no pair waits for its timeout");
        // The marker itself, arriving here too, is reported and counted as a duplicate.
        assert_eq!(f.on_marker(t(4), VmId(0), 7), MarkerOutcome::Duplicate);
        assert_eq!(f.arrivals.len(), 1);
    }

    #[test]
    fn a_marker_before_any_packet_opens_the_pair() {
        let mut f = armed();
        assert_eq!(f.on_marker(t(0), VmId(0), 7), MarkerOutcome::Opened);
        assert_eq!(f.gate(t(1), VmId(0), 7), Gate::Pass);
        assert_eq!(f.poll_timeout(), None);
    }

    #[test]
    fn a_lost_marker_costs_the_timeout_and_a_late_one_is_counted() {
        let mut f = armed();
        assert_eq!(f.gate(t(10), VmId(0), 7), Gate::Hold(0));
        assert_eq!(f.poll_timeout(), Some(t(510)));
        f.handle_timeout(t(509));
        assert_eq!(f.gate(t(509), VmId(0), 7), Gate::Hold(0));
        f.handle_timeout(t(510));
        assert_eq!(f.counters.timeouts, 1);
        assert_eq!(f.poll_timeout(), None);
        assert_eq!(f.gate(t(511), VmId(0), 7), Gate::Pass);
        assert_eq!(f.on_marker(t(520), VmId(0), 7), MarkerOutcome::Late);
        assert_eq!(f.counters.markers_late, 1);
    }

    #[test]
    fn disarm_forgets_empty_pairs_and_slots_are_bounded() {
        let mut f = armed();
        for k in 0..MAX_FENCE_SLOTS as u128 {
            assert_eq!(f.gate(t(0), VmId(0), k), Gate::Hold(k as usize));
        }
        assert_eq!(
            f.gate(t(0), VmId(0), 999),
            Gate::Pass,
            "no slot left: bypass"
        );
        assert_eq!(f.counters.bypassed, 1);
        f.set_armed(VmId(0), false).unwrap();
        assert_eq!(f.pairs(), 0);
        assert!(!f.is_armed(VmId(0)));
        assert!(f.set_armed(VmId(5), true).is_err());
    }

    #[test]
    fn config_is_validated() {
        let bad = FenceConfig {
            timeout_ms: 0,
            ..FenceConfig::default()
        };
        assert!(Fences::new(bad, 1).is_err());
        let bad = FenceConfig {
            global_packets: 10,
            per_ingress_packets: 20,
            ..FenceConfig::default()
        };
        let e = Fences::new(bad, 1).unwrap_err().to_string();
        assert!(e.contains("fence"), "{e}");
    }
}
