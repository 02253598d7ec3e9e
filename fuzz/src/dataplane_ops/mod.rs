//! The `dataplane_ops` harness: a world of three dataplanes (hosts S, D and a correspondent C,
//! see [`world`]) driven by a sequence of [`ops::Op`], with a model of every End.SBUF buffer and
//! the engine's counters checked against what the harness saw after every operation.
//!
//! Frames that leave a host's uplink toward another host's locator (or uplink address) are
//! carried to that host's uplink (the underlay, up to [`MAX_HOPS`] hops per operation), so a
//! client VM on C reaches vm1 through C's H.Encaps, S's End.S and D's End.SBUF.
//!
//! Invariants (per host, after every operation; see [`Host::check`]):
//! - frames received per port = frames the harness gave it;
//! - frames sent per port = `Tx` verdicts + frames `poll_transmit` returned for it;
//! - drops per reason = `Drop` verdicts, except the drops that happen outside a packet's
//!   processing, which the model predicts exactly: `BufferExpired` (at `handle_timeout` or on
//!   release), `BufferDiscarded` (`discard_buffer`), `PacketTooBig` on release to a VM port
//!   whose MTU is below the held packet;
//! - per VM: held = `Held` verdicts = released + expired + discarded + too big on release +
//!   held now; released and expired as the model predicts;
//! - `Consumed` verdicts = NDP answers queued + NDP answers lost to a full generated-packet
//!   queue (each `Consumed` verdict moves exactly one of the two counters);
//! - frames out of `poll_transmit` = released + generated, and once nothing is pending,
//!   generated = ICMP errors queued + NDP answers queued;
//! - buffer occupancy per VM = the model's FIFO (packets and bytes), within the per-VM and
//!   global bounds; only a `Held` verdict grows it, by exactly that packet;
//! - every released packet is the model's oldest non-expired packet for that VM, byte for
//!   byte (arrival order), sent to the VM's MAC from the gateway MAC;
//! - `poll_timeout` is the model's earliest deadline;
//! - once `poll_transmit` returns `None`, no running VM has anything held.
//!
//! What the counters do not allow to check exactly: `VmCounters::dropped` and `rx`/`tx` per VM
//! mix packets the verdict does not attribute to a VM (it is only checked that it moves by
//! exactly the packets too big on release during `poll_transmit`).

pub mod frames;
pub mod ops;
pub mod world;

use std::collections::VecDeque;

use srmig_dataplane::testkit::canon;
use srmig_dataplane::{
    Batch, Behavior, Dataplane, DropReason, Headend, IcmpCounters, Instant, NodeConfig, PacketBuf,
    PolicyConfig, PolicyId, PortId, SbufMode, SidConfig, Steering, Verdict, VmCounters, VmId,
    VmState,
};

use ops::{CatalogSid, HeadendSel, Mtu, Op, PolicyName, SegList};
use world::{BUFFER, PORTS, VMS};

/// Underlay hops a frame may take within one operation.
pub const MAX_HOPS: usize = 6;

const MAX_AGE_NS: u64 = BUFFER.max_age_ms * 1_000_000;

/// FNV-1a, to compare released packets with held ones.
fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// A packet the model expects in a buffer.
#[derive(Debug, Clone, Copy)]
struct HeldPkt {
    arrived: u64,
    len: usize,
    hash: u64,
}

/// What the harness saw on one host.
#[derive(Debug, Default)]
struct Model {
    frames_in: [u64; PORTS],
    verdict_tx: [u64; PORTS],
    out_tx: [u64; PORTS],
    out_gen: u64,
    verdict_drops: Vec<u64>,
    consumed: u64,
    ndp_lost: u64,
    held: [u64; VMS],
    released: [u64; VMS],
    expired: [u64; VMS],
    discarded: [u64; VMS],
    release_too_big: [u64; VMS],
    queues: [VecDeque<HeldPkt>; VMS],
    /// IP MTU of each VM's port (`set_port_mtu`), by VM id.
    vm_port_mtu: [Option<u16>; VMS],
}

impl Model {
    fn queue_bytes(&self, v: usize) -> u64 {
        self.queues[v].iter().map(|p| p.len as u64).sum()
    }

    fn too_big(&self, v: usize, len: usize) -> bool {
        self.vm_port_mtu[v].is_some_and(|m| len > usize::from(m))
    }
}

/// End.SBUF and End.S paths the coverage report counts (see [`Stats`]).
pub const PATHS: &[&str] = &[
    "End.SBUF deliver (VM running, buffer empty)",
    "End.SBUF hold (VM not running)",
    "End.SBUF hold behind a releasing buffer (VM running)",
    "End.SBUF release in arrival order",
    "End.SBUF expire at handle_timeout",
    "End.SBUF expire on release",
    "End.SBUF drop mode",
    "End.SBUF full: per-VM packets",
    "End.SBUF full: per-VM bytes",
    "End.SBUF full: global packets",
    "End.SBUF full: global bytes",
    "End.SBUF release: Packet Too Big (VM port MTU)",
    "End.SBUF discard_buffer",
    "End.S deliver (VM running)",
    "End.S forward (VM not here, Segments Left > 0)",
    "End.S drop (VM not running, last segment)",
];

/// What one input reached (filled only when the harness runs with statistics, for the
/// coverage report).
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Behaviors (with flavors) whose SID counter moved, e.g. `End (PSP)`.
    pub behaviors: std::collections::BTreeSet<String>,
    /// Headends whose policy counter moved, e.g. `H.Encaps.Red`.
    pub headends: std::collections::BTreeSet<&'static str>,
    /// Drop reasons counted.
    pub drops: std::collections::BTreeSet<&'static str>,
    /// Indexes into [`PATHS`].
    pub paths: std::collections::BTreeSet<usize>,
}

/// The counters when the current input started (a reused engine keeps counting).
#[derive(Debug, Clone)]
struct Base {
    rx: [u64; PORTS],
    tx: [u64; PORTS],
    drops: Vec<u64>,
    vms: [VmCounters; VMS],
    icmp: IcmpCounters,
}

impl Base {
    fn of(dp: &Dataplane) -> Base {
        let c = dp.counters();
        Base {
            rx: [0, 1, 2, 3].map(|p| c.port(PortId(p)).rx.packets),
            tx: [0, 1, 2, 3].map(|p| c.port(PortId(p)).tx.packets),
            drops: c.drop_counts().map(|(_, n)| n).collect(),
            vms: [0, 1, 2].map(|v| c.vm(VmId(v))),
            icmp: c.icmp(),
        }
    }
}

/// One host: its engine and the model of it.
struct Host {
    h: u16,
    dp: Dataplane,
    m: Model,
    base: Base,
    /// The world's configuration of this host (to restore or rebuild it).
    cfg: NodeConfig,
    /// Catalog SIDs (bits by `CatalogSid` index), policies (by `PolicyName` index) and
    /// mapping prefixes (by `world::prefix` index) the current input changed.
    touched_sids: u32,
    touched_policies: u8,
    touched_mappings: u16,
    /// A change that is not undone exactly (a new policy, a removed one): rebuilt before the
    /// next input.
    dirty: bool,
}

/// The id of an operation's port (`Bogus` is one past the last).
fn port_id(p: ops::Port) -> PortId {
    PortId(p as u16)
}

fn port_of_vm(v: usize) -> PortId {
    PortId(v as u16 + 1)
}

fn vm_of_port(p: PortId) -> Option<usize> {
    (1..=VMS)
        .contains(&usize::from(p.0))
        .then(|| usize::from(p.0) - 1)
}

impl Host {
    fn new(h: u16) -> Host {
        Host::with_config(h, world::config(h))
    }

    fn with_config(h: u16, cfg: NodeConfig) -> Host {
        let dp = Dataplane::new(cfg.clone()).expect("the fuzz world's config is valid");
        let base = Base::of(&dp);
        Host {
            h,
            dp,
            m: Model {
                verdict_drops: vec![0; DropReason::COUNT],
                ..Model::default()
            },
            base,
            cfg,
            touched_sids: 0,
            touched_policies: 0,
            touched_mappings: 0,
            dirty: false,
        }
    }

    /// Undoes the input's changes to SIDs, policies and mappings: the SIDs the input touched
    /// are removed first (an End.B6.Encaps SID it added may hold a policy it turned into an
    /// encapsulation, which then cannot become H.Insert again), the policies restored, then
    /// the original SIDs installed again (a SID bound to a policy needs the policy as
    /// configured), then the mappings.
    fn restore_tables(&mut self) {
        let touched_sids: Vec<std::net::Ipv6Addr> = CatalogSid::ALL
            .iter()
            .enumerate()
            .filter(|(i, _)| self.touched_sids & (1 << i) != 0)
            .map(|(_, sid)| catalog(self.h, *sid).sid)
            .collect();
        for addr in &touched_sids {
            self.dp.remove_sid(*addr);
        }
        for (i, name) in PolicyName::ALL.iter().enumerate() {
            if self.touched_policies & (1 << i) != 0 {
                let orig = self
                    .cfg
                    .policies
                    .iter()
                    .find(|p| p.name == policy_name(*name));
                if let Some(p) = orig {
                    self.dp
                        .install_policy(p.clone())
                        .expect("the original policy");
                }
            }
        }
        for addr in &touched_sids {
            if let Some(orig) = self.cfg.sids.iter().find(|s| s.sid == *addr) {
                self.dp.install_sid(orig.clone()).expect("the original SID");
            }
        }
        for i in 0..world::PREFIXES {
            if self.touched_mappings & (1 << i) != 0 {
                let prefix = world::prefix(i);
                let orig = self
                    .cfg
                    .mappings
                    .iter()
                    .find(|m| m.vm_address.trunc() == prefix);
                match orig {
                    Some(m) => {
                        let s = match m.policy.as_str() {
                            "native" => Steering::Native,
                            name => Steering::Policy(
                                self.dp.policy_id(name).expect("original policies stay"),
                            ),
                        };
                        self.dp
                            .set_mapping(prefix, s)
                            .expect("the original mapping");
                    }
                    None => {
                        self.dp.remove_mapping(prefix);
                    }
                }
            }
        }
        self.touched_sids = 0;
        self.touched_policies = 0;
        self.touched_mappings = 0;
    }

    /// Brings a drained engine back to the world's initial state without rebuilding it: empty
    /// buffers, initial VM states, no port MTU; the model starts from the counters as they are.
    /// SIDs, policies and mappings the input changed are restored (a host with a new policy,
    /// which cannot be removed, is rebuilt instead).
    fn reset(&mut self, now: Instant) {
        assert!(!self.dp.has_pending_transmit(), "reset before draining");
        self.restore_tables();
        for v in 0..VMS {
            let id = VmId(v as u32);
            self.dp.discard_buffer(id);
            let state = if v == 1 || self.h == canon::S {
                VmState::Running
            } else {
                VmState::Absent
            };
            self.dp
                .handle_vm_state(now, id, state)
                .expect("world VMs exist");
        }
        for p in 0..PORTS {
            self.dp
                .set_port_mtu(PortId(p as u16), None)
                .expect("world ports exist");
        }
        self.m = Model {
            verdict_drops: vec![0; DropReason::COUNT],
            ..Model::default()
        };
        self.base = Base::of(&self.dp);
    }

    fn vm_counters(&self) -> [VmCounters; VMS] {
        let c = self.dp.counters();
        [0, 1, 2].map(|v| c.vm(VmId(v)))
    }

    /// Sum of the packet counters of this host's SIDs with behavior `b`.
    fn sid_hits(&self, b: Behavior) -> u64 {
        let c = self.dp.counters();
        self.dp
            .sids()
            .filter(|(_, beh, _)| *beh == b)
            .map(|(id, _, _)| c.sid(id).packets)
            .sum()
    }

    fn check(&self) {
        let c = self.dp.counters();
        let (m, b) = (&self.m, &self.base);
        for p in 0..PORTS {
            let pc = c.port(PortId(p as u16));
            assert_eq!(pc.rx.packets - b.rx[p], m.frames_in[p], "rx of port {p}");
            assert_eq!(
                pc.tx.packets - b.tx[p],
                m.verdict_tx[p] + m.out_tx[p],
                "tx of port {p}: Tx verdicts + poll_transmit"
            );
        }
        let sum = |a: &[u64; VMS]| a.iter().sum::<u64>();
        for (r, n) in c.drop_counts() {
            let outside = match r {
                DropReason::BufferExpired => sum(&m.expired),
                DropReason::BufferDiscarded => sum(&m.discarded),
                DropReason::PacketTooBig => sum(&m.release_too_big),
                _ => 0,
            };
            assert_eq!(
                n - b.drops[r.index()],
                m.verdict_drops[r.index()] + outside,
                "drops {}",
                r.as_str()
            );
        }
        let (mut packets, mut bytes) = (0, 0);
        for v in 0..VMS {
            let (vc, vb) = (c.vm(VmId(v as u32)), b.vms[v]);
            let vc = VmCounters {
                held: vc.held - vb.held,
                released: vc.released - vb.released,
                expired: vc.expired - vb.expired,
                ..vc
            };
            let occ = c.buffer_occupancy(VmId(v as u32));
            let q = m.queues[v].len() as u64;
            assert_eq!(vc.held, m.held[v], "vm {v}: held = Held verdicts");
            assert_eq!(vc.released, m.released[v], "vm {v}: released");
            assert_eq!(vc.expired, m.expired[v], "vm {v}: expired");
            assert_eq!(occ.packets, q, "vm {v}: occupancy (packets) = model");
            assert_eq!(
                occ.bytes,
                m.queue_bytes(v),
                "vm {v}: occupancy (bytes) = model"
            );
            assert_eq!(
                vc.held,
                vc.released + vc.expired + m.discarded[v] + m.release_too_big[v] + q,
                "vm {v}: held = released + expired + discarded + too big + held now"
            );
            assert!(occ.packets <= u64::from(BUFFER.per_vm_packets));
            assert!(occ.bytes <= BUFFER.per_vm_bytes);
            packets += occ.packets;
            bytes += occ.bytes;
        }
        let total = c.buffer_total();
        assert_eq!(
            (total.packets, total.bytes),
            (packets, bytes),
            "global occupancy"
        );
        assert!(total.packets <= u64::from(BUFFER.global_packets));
        assert!(total.bytes <= BUFFER.global_bytes);
        let icmp = c.icmp();
        let ndp_answered = icmp.ndp_answered - b.icmp.ndp_answered;
        assert_eq!(
            m.consumed,
            ndp_answered + m.ndp_lost,
            "Consumed = NDP answers"
        );
        let expected_deadline = m
            .queues
            .iter()
            .filter_map(|q| q.front())
            .map(|p| p.arrived + MAX_AGE_NS)
            .min();
        assert_eq!(
            self.dp.poll_timeout().map(|t| t.as_nanos()),
            expected_deadline,
            "poll_timeout = oldest held packet + max age"
        );
        let generated = icmp.errors_sent - b.icmp.errors_sent + ndp_answered;
        assert!(
            m.out_gen <= generated,
            "more generated frames out than queued"
        );
        if !self.dp.has_pending_transmit() {
            assert_eq!(m.out_gen, generated, "every generated frame came out");
        }
    }
}

/// The harness: the world, reusable buffers and the clock.
pub struct Harness {
    hosts: [Host; 3],
    batch: Batch,
    out: PacketBuf,
    now: u64,
    seq: u32,
    wire: VecDeque<(usize, Vec<u8>)>,
    stats: Option<Stats>,
    trace: bool,
    /// A hash of every verdict and transmitted frame of the current input.
    digest: u64,
}

impl Default for Harness {
    fn default() -> Self {
        Harness::new()
    }
}

fn host_index(h: ops::Host) -> usize {
    match h {
        ops::Host::S => 0,
        ops::Host::D => 1,
        ops::Host::C => 2,
    }
}

/// The host (index) whose locator, uSID or uplink address `dst` is in.
fn host_of(dst: &[u8]) -> Option<usize> {
    if dst.len() != 16 {
        return None;
    }
    let word = |i: usize| u16::from_be_bytes([dst[2 * i], dst[2 * i + 1]]);
    let h = match (word(0), word(1)) {
        (0xfc00, 0) => word(2),
        (0xfc00, 0xffff) if dst[4..14].iter().all(|&b| b == 0) => word(7),
        (b0, b1) if [b0, b1] == world::USID_BLOCK => word(2),
        _ => return None,
    };
    world::HOSTS.iter().position(|&x| x == h)
}

impl Harness {
    /// A fresh world at time 0.
    pub fn new() -> Harness {
        Harness {
            hosts: world::HOSTS.map(Host::new),
            batch: Batch::new(1),
            out: PacketBuf::new(),
            now: 0,
            seq: 0,
            wire: VecDeque::new(),
            stats: None,
            trace: false,
            digest: 0,
        }
    }

    /// Prints every operation and every verdict to stderr (to read a crash or a seed).
    pub fn with_trace(mut self) -> Harness {
        self.trace = true;
        self
    }

    /// Collects [`Stats`] from now on (slower: counters are compared around every frame).
    pub fn with_stats(mut self) -> Harness {
        self.stats = Some(Stats::default());
        self
    }

    /// A hash of the verdicts and transmitted frames of the last input (the same on a fresh
    /// and on a reused world: see the `reuse_is_deterministic` test).
    pub fn digest(&self) -> u64 {
        self.digest
    }

    fn note(&mut self, words: [u64; 3]) {
        for w in words {
            self.digest = (self.digest ^ w).wrapping_mul(0x100_0000_01b3);
        }
    }

    /// Runs `data` as operations, checking the invariants after each.
    pub fn run(&mut self, data: &[u8]) {
        self.digest = 0xcbf2_9ce4_8422_2325;
        let mut u = arbitrary::Unstructured::new(data);
        while !u.is_empty() {
            let Ok(op) = <Op as arbitrary::Arbitrary>::arbitrary(&mut u) else {
                break;
            };
            if self.trace {
                eprintln!("t={}ms {op:?}", self.now / 1_000_000);
            }
            self.apply(&op);
            for h in &self.hosts {
                h.check();
            }
        }
        self.drain_all();
        for h in &self.hosts {
            h.check();
            assert!(
                !h.dp.has_pending_transmit(),
                "poll_transmit answered None with frames pending"
            );
        }
        self.collect_stats();
    }

    /// Runs `data` on the world as the previous input left it, reset ([`Host::reset`]: tables
    /// restored, buffers emptied, VM states and MTUs as configured; a host with a new policy is
    /// rebuilt) and
    /// time jumps 10 s ahead (the ICMPv6 rate limiter is full again). What an input does is
    /// then the same as on a fresh world: the fuzz target's fast path.
    pub fn run_reused(&mut self, data: &[u8]) {
        self.now += 10_000_000_000;
        self.seq = 0;
        self.wire.clear();
        let now = Instant(self.now);
        for h in &mut self.hosts {
            if h.dirty {
                *h = Host::with_config(h.h, h.cfg.clone());
            } else {
                h.reset(now);
            }
        }
        self.run(data);
    }

    /// The statistics collected (with [`Harness::with_stats`]).
    pub fn stats(&self) -> Option<&Stats> {
        self.stats.as_ref()
    }

    fn apply(&mut self, op: &Op) {
        let now = Instant(self.now);
        match *op {
            Op::Uplink {
                host,
                sid,
                segs,
                next,
                src,
                inner,
                size,
                hmac,
                mutations,
            } => {
                let i = host_index(host);
                self.seq += 1;
                let (mut f, l) = frames::uplink(
                    world::HOSTS[i],
                    sid,
                    segs,
                    next,
                    src,
                    inner,
                    size,
                    hmac,
                    self.seq,
                );
                let mut port = canon::UPLINK;
                for m in mutations {
                    if let Some(p) = frames::mutate(&mut f, &l, m) {
                        port = port_id(p);
                    }
                }
                self.send(i, port, &f);
            }
            Op::FromVm {
                host,
                vm,
                dst,
                size,
                mutations,
            } => {
                let i = host_index(host);
                self.seq += 1;
                let v = vm as usize;
                let (mut f, l) = frames::from_vm(world::HOSTS[i], v, dst, size, self.seq);
                let mut port = port_of_vm(v);
                for m in mutations {
                    if let Some(p) = frames::mutate(&mut f, &l, m) {
                        port = port_id(p);
                    }
                }
                self.send(i, port, &f);
            }
            Op::VmState { host, vm, state } => {
                let st = match state {
                    ops::State::Absent => VmState::Absent,
                    ops::State::Paused => VmState::Paused,
                    ops::State::Running => VmState::Running,
                };
                let h = &mut self.hosts[host_index(host)];
                h.dp.handle_vm_state(now, VmId(vm as u32), st)
                    .expect("world VMs exist");
            }
            Op::Switchover { vm, back } => {
                let (from, to) = if back { (1, 0) } else { (0, 1) };
                let v = VmId(vm as u32);
                self.hosts[from]
                    .dp
                    .handle_vm_state(now, v, VmState::Paused)
                    .expect("world VMs exist");
                self.hosts[to]
                    .dp
                    .handle_vm_state(now, v, VmState::Running)
                    .expect("world VMs exist");
            }
            Op::InstallSid { host, sid } => {
                self.collect_stats();
                let h = &mut self.hosts[host_index(host)];
                h.touched_sids |= 1 << sid as u32;
                let cfg = catalog(h.h, sid);
                // B6Insert binds to "to-d-insert", an H.Insert policy in the world (or none on
                // that host); an input may have replaced it with an encapsulation, which makes
                // the SID valid.
                let insert_or_none = cfg
                    .policy
                    .as_deref()
                    .and_then(|name| h.dp.policy_id(name))
                    .and_then(|id| h.dp.policy(id))
                    .is_none_or(|(headend, _)| headend == Headend::HInsert);
                let refused = match sid {
                    CatalogSid::BadVm | CatalogSid::BadPort | CatalogSid::OutsideLocator => true,
                    CatalogSid::B6Insert => insert_or_none,
                    _ => false,
                };
                let installed = h.dp.sid_id(cfg.sid).is_some();
                let r = h.dp.install_sid(cfg);
                if refused && !installed {
                    assert!(r.is_err(), "invalid SID {sid:?} installed");
                }
            }
            Op::RemoveSid { host, sid } => {
                self.collect_stats();
                let h = &mut self.hosts[host_index(host)];
                h.touched_sids |= 1 << sid as u32;
                let addr = catalog(h.h, sid).sid;
                let had = h.dp.sid_id(addr).is_some();
                assert_eq!(h.dp.remove_sid(addr).is_some(), had);
                assert!(h.dp.sid_id(addr).is_none());
            }
            Op::InstallPolicy {
                host,
                name,
                headend,
                segs,
            } => {
                let h = &mut self.hosts[host_index(host)];
                h.touched_policies |= 1 << name as u8;
                h.dirty |= name == PolicyName::New;
                let cfg = policy(name, headend, segs);
                let bad = matches!(segs, SegList::Empty | SegList::TooMany | SegList::Multicast);
                let r = h.dp.install_policy(cfg);
                if bad {
                    assert!(r.is_err(), "invalid policy installed");
                }
            }
            Op::RemovePolicy { host, name } => {
                let h = &mut self.hosts[host_index(host)];
                let before = h.dp.policy_id(policy_name(name));
                match h.dp.remove_policy(policy_name(name)) {
                    Ok(removed) => {
                        assert_eq!(removed, before, "removed another policy");
                        if let Some(id) = removed {
                            assert!(h.dp.policy_id(policy_name(name)).is_none());
                            assert!(h.dp.policy(id).is_none());
                            // Nothing steered into it, so no lookup can lead there now.
                            for i in 0..world::PREFIXES {
                                let addr = world::prefix(i).addr();
                                assert_ne!(h.dp.mapping(addr), Some(Steering::Policy(id)));
                            }
                            assert!(!h
                                .dp
                                .sids()
                                .any(|(_, _, c)| c.policy.as_deref() == Some(policy_name(name))));
                            h.touched_policies |= 1 << name as u8;
                            // Restored policies could come back under each other's ids: the
                            // host is rebuilt, so that every input starts from the same world.
                            h.dirty = true;
                        }
                    }
                    Err(e) => {
                        assert!(e.to_string().ends_with("uses it"), "{e}");
                        assert_eq!(
                            h.dp.policy_id(policy_name(name)),
                            before,
                            "refused, changed"
                        );
                    }
                }
            }
            Op::SetMapping {
                host,
                prefix,
                policy,
            } => {
                let h = &mut self.hosts[host_index(host)];
                h.touched_mappings |= 1 << (usize::from(prefix) % world::PREFIXES);
                let steering = match policy {
                    None => Some(Steering::Native),
                    Some(p) => h.dp.policy_id(policy_name(p)).map(Steering::Policy),
                };
                let prefix = world::prefix(usize::from(prefix));
                match steering {
                    Some(s) => {
                        h.dp.set_mapping(prefix, s)
                            .expect("mapping to an installed policy");
                    }
                    None => {
                        let bogus = Steering::Policy(PolicyId(1000));
                        assert!(h.dp.set_mapping(prefix, bogus).is_err());
                    }
                }
            }
            Op::RemoveMapping { host, prefix } => {
                let h = &mut self.hosts[host_index(host)];
                h.touched_mappings |= 1 << (usize::from(prefix) % world::PREFIXES);
                h.dp.remove_mapping(world::prefix(usize::from(prefix)));
            }
            Op::SetMtu { host, port, mtu } => {
                let h = &mut self.hosts[host_index(host)];
                let mtu = match mtu {
                    Mtu::None => None,
                    Mtu::Min => Some(1280),
                    Mtu::Ethernet => Some(1500),
                    Mtu::Jumbo => Some(9000),
                    Mtu::TooSmall => Some(1000),
                };
                let p = port_id(port);
                let r = h.dp.set_port_mtu(p, mtu);
                if mtu == Some(1000) || usize::from(p.0) >= PORTS {
                    assert!(r.is_err(), "MTU below 1280 accepted");
                } else {
                    r.expect("valid MTU");
                    if let Some(v) = vm_of_port(p) {
                        h.m.vm_port_mtu[v] = mtu;
                    }
                }
            }
            Op::Advance { ms, timeout } => {
                self.now += u64::from(ms) * 1_000_000;
                if timeout {
                    for i in 0..3 {
                        self.timeout(i);
                    }
                }
            }
            Op::Discard { host, vm } => {
                let h = &mut self.hosts[host_index(host)];
                let v = vm as usize;
                let n = h.dp.discard_buffer(VmId(v as u32));
                assert_eq!(n, h.m.queues[v].len() as u64, "discard_buffer count");
                h.m.queues[v].clear();
                h.m.discarded[v] += n;
                if n > 0 {
                    self.path(12);
                }
            }
            Op::PollOne { host } => {
                self.poll(host_index(host));
                self.carry();
            }
            Op::Drain => self.drain_all(),
        }
    }

    fn path(&mut self, i: usize) {
        if let Some(s) = &mut self.stats {
            s.paths.insert(i);
        }
    }

    fn timeout(&mut self, i: usize) {
        let now = self.now;
        let h = &mut self.hosts[i];
        let before = h.vm_counters();
        h.dp.handle_timeout(Instant(now));
        let after = h.vm_counters();
        let mut any = false;
        for v in 0..VMS {
            let mut n = 0;
            while h.m.queues[v]
                .front()
                .is_some_and(|p| now.saturating_sub(p.arrived) >= MAX_AGE_NS)
            {
                h.m.queues[v].pop_front();
                n += 1;
            }
            assert_eq!(
                after[v].expired - before[v].expired,
                n,
                "expired at timeout"
            );
            h.m.expired[v] += n;
            any |= n > 0;
        }
        if any {
            self.path(4);
        }
    }

    /// One `poll_transmit` on host `i`; returns whether it produced a frame.
    fn poll(&mut self, i: usize) -> bool {
        let now = self.now;
        let h = &mut self.hosts[i];
        let before = h.vm_counters();
        let r = h.dp.poll_transmit(Instant(now), &mut self.out);
        let after = h.vm_counters();
        let mut released_vm = None;
        let mut paths = [false; 3];
        for v in 0..VMS {
            let d_exp = after[v].expired - before[v].expired;
            let d_rel = after[v].released - before[v].released;
            let d_big = after[v].dropped - before[v].dropped;
            let (mut exp, mut big, mut rel) = (0, 0, 0);
            for _ in 0..d_exp + d_rel + d_big {
                let p = h.m.queues[v]
                    .pop_front()
                    .expect("the engine released more than the model holds");
                if now.saturating_sub(p.arrived) >= MAX_AGE_NS {
                    exp += 1;
                } else if h.m.too_big(v, p.len) {
                    big += 1;
                } else {
                    assert_eq!(rel, 0, "two packets released by one poll_transmit");
                    rel += 1;
                    let d = self.out.data();
                    assert_eq!(d.len(), p.len + 14, "released length");
                    assert_eq!(&d[..6], &world::VM_MACS[v], "released to the VM's MAC");
                    assert_eq!(&d[6..12], &canon::GATEWAY_MAC, "released from the gateway");
                    assert_eq!(fnv(&d[14..]), p.hash, "released out of arrival order");
                    assert_eq!(r, Some(port_of_vm(v)), "released on the VM's port");
                }
            }
            assert_eq!(
                (exp, big, rel),
                (d_exp, d_big, d_rel),
                "vm {v}: expired / too big / released on poll_transmit"
            );
            if d_exp + d_rel + d_big > 0 {
                assert_eq!(
                    h.dp.vm_state(VmId(v as u32)),
                    Some(VmState::Running),
                    "released for a VM that does not run"
                );
            }
            h.m.expired[v] += exp;
            h.m.release_too_big[v] += big;
            h.m.released[v] += rel;
            paths[0] |= exp > 0;
            paths[1] |= big > 0;
            paths[2] |= rel > 0;
            if rel > 0 {
                released_vm = Some(v);
            }
        }
        let out = r.map_or(0xffff, |p| u64::from(p.0) | (self.out.len() as u64) << 16);
        self.digest = (self.digest ^ (i as u64) << 48 ^ out).wrapping_mul(0x100_0000_01b3);
        match r {
            Some(p) => {
                h.m.out_tx[usize::from(p.0)] += 1;
                if released_vm.is_none() {
                    h.m.out_gen += 1;
                }
                if p == canon::UPLINK {
                    let d = self.out.data();
                    if d.len() >= 54 && d[12..14] == [0x86, 0xdd] {
                        if let Some(to) = host_of(&d[38..54]) {
                            self.wire.push_back((to, d.to_vec()));
                        }
                    }
                }
            }
            None => {
                for v in 0..VMS {
                    if h.dp.vm_state(VmId(v as u32)) == Some(VmState::Running) {
                        assert!(
                            h.m.queues[v].is_empty(),
                            "vm {v} runs but still has packets held after poll_transmit drained"
                        );
                    }
                }
            }
        }
        for (k, hit) in paths.into_iter().enumerate() {
            if hit {
                self.path([5, 11, 3][k]);
            }
        }
        r.is_some()
    }

    fn drain_all(&mut self) {
        loop {
            for i in 0..3 {
                let mut n = 0;
                while self.poll(i) {
                    n += 1;
                    assert!(n <= 10_000, "poll_transmit does not drain");
                }
            }
            if self.wire.is_empty() {
                break;
            }
            self.carry();
        }
    }

    /// Carries frames on the underlay to the host they are addressed to.
    fn carry(&mut self) {
        let mut hops = 0;
        while let Some((to, mut f)) = self.wire.pop_front() {
            hops += 1;
            if hops > MAX_HOPS {
                self.wire.clear();
                break;
            }
            let h = world::HOSTS[to];
            f[..6].copy_from_slice(&canon::uplink_mac(h));
            f[6..12].copy_from_slice(&canon::router_mac(h));
            self.receive(to, canon::UPLINK, &f);
        }
    }

    /// A frame received by host `i` on `port`, then what it sends on the underlay.
    fn send(&mut self, i: usize, port: PortId, f: &[u8]) {
        self.receive(i, port, f);
        self.carry();
    }

    fn receive(&mut self, i: usize, port: PortId, f: &[u8]) {
        let now = Instant(self.now);
        let h = &mut self.hosts[i];
        let p = usize::from(port.0);
        if p >= PORTS {
            self.batch.clear();
            if self.batch.push(port, f).is_ok() {
                h.dp.process_batch(now, &mut self.batch);
                let v = self.batch.packets()[0].verdict;
                assert_eq!(v, Verdict::Drop(DropReason::UnknownPort));
                h.m.verdict_drops[DropReason::UnknownPort.index()] += 1;
            }
            return;
        }
        let c = h.dp.counters();
        let occ_before = [0, 1, 2].map(|v| c.buffer_occupancy(VmId(v)));
        let icmp_before = c.icmp();
        let stats = self.stats.is_some();
        let before_vm = h.vm_counters();
        let (sbuf0, s0) = if stats {
            (h.sid_hits(Behavior::EndSbuf), h.sid_hits(Behavior::EndS))
        } else {
            (0, 0)
        };
        self.batch.clear();
        h.m.frames_in[p] += 1;
        let verdict = match self.batch.push(port, f) {
            Ok(_) => {
                h.dp.process_batch(now, &mut self.batch);
                self.batch.packets()[0].verdict
            }
            Err(_) => h.dp.drop_frame_too_large(port, f.len()),
        };
        if self.trace {
            eprintln!("    host {} port {}: {verdict:?}", h.h, port.0);
        }
        let code = match verdict {
            Verdict::Tx(p) => u64::from(p.0),
            Verdict::Drop(r) => 0x100 + r.index() as u64,
            Verdict::Held(v) => 0x200 + u64::from(v.0),
            Verdict::Consumed => 0x300,
        };
        let len = self.batch.packets().first().map_or(0, |p| p.len() as u64);
        let hi = i as u64;
        self.note([hi, code, len]);
        let h = &mut self.hosts[i];
        let c = h.dp.counters();
        let occ_after = [0, 1, 2].map(|v| c.buffer_occupancy(VmId(v)));
        let mut paths: Vec<usize> = Vec::new();
        match verdict {
            Verdict::Tx(out) => {
                h.m.verdict_tx[usize::from(out.0)] += 1;
                if out == canon::UPLINK {
                    let d = self.batch.packets()[0].data();
                    if d.len() >= 54 && d[12..14] == [0x86, 0xdd] {
                        if let Some(to) = host_of(&d[38..54]) {
                            self.wire.push_back((to, d.to_vec()));
                        }
                    }
                }
            }
            Verdict::Drop(r) => h.m.verdict_drops[r.index()] += 1,
            Verdict::Consumed => {
                h.m.consumed += 1;
                let icmp = c.icmp();
                let answered = icmp.ndp_answered - icmp_before.ndp_answered;
                let lost = icmp.queue_full - icmp_before.queue_full;
                assert_eq!(
                    answered + lost,
                    1,
                    "Consumed: one NDP answer queued or lost"
                );
                h.m.ndp_lost += lost;
            }
            Verdict::Held(vm) => {
                let v = vm.0 as usize;
                assert!(v < VMS, "held for a VM that does not exist");
                h.m.held[v] += 1;
                let len = (occ_after[v].bytes - occ_before[v].bytes) as usize;
                assert_eq!(
                    occ_after[v].packets,
                    occ_before[v].packets + 1,
                    "held one packet"
                );
                let d = self.batch.packets()[0].data();
                assert!(len <= d.len(), "held more than the frame");
                h.m.queues[v].push_back(HeldPkt {
                    arrived: now.as_nanos(),
                    len,
                    hash: fnv(&d[d.len() - len..]),
                });
                let running = h.dp.vm_state(vm) == Some(VmState::Running);
                paths.push(if running { 2 } else { 1 });
            }
        }
        if !matches!(verdict, Verdict::Held(_)) {
            assert_eq!(
                occ_before, occ_after,
                "only a Held verdict changes a buffer"
            );
        }
        if stats {
            let sbuf = h.sid_hits(Behavior::EndSbuf) > sbuf0;
            let s = h.sid_hits(Behavior::EndS) > s0;
            let to_vm = matches!(verdict, Verdict::Tx(p) if vm_of_port(p).is_some());
            if sbuf {
                match verdict {
                    _ if to_vm => paths.push(0),
                    Verdict::Drop(DropReason::SbufDropMode) => paths.push(6),
                    Verdict::Drop(DropReason::BufferFull) => {
                        paths.push(full_bound(&occ_before, &before_vm, &h.vm_counters(), f));
                    }
                    _ => {}
                }
            }
            if s {
                match verdict {
                    _ if to_vm => paths.push(13),
                    Verdict::Tx(p) if p == canon::UPLINK => paths.push(14),
                    Verdict::Drop(DropReason::VmNotRunning) => paths.push(15),
                    _ => {}
                }
            }
        }
        for p in paths {
            self.path(p);
        }
    }

    /// Adds what the engines' counters show now to the statistics.
    fn collect_stats(&mut self) {
        let Some(s) = &mut self.stats else {
            return;
        };
        for h in &self.hosts {
            let c = h.dp.counters();
            for (id, b, cfg) in h.dp.sids() {
                if c.sid(id).packets > 0 {
                    let mut name = b.name().to_owned();
                    if !cfg.flavors.is_empty() {
                        let f: Vec<&str> = cfg.flavors.iter().map(|f| f.name()).collect();
                        name = format!("{name} ({})", f.join(", "));
                    }
                    if b == Behavior::EndSbuf && cfg.mode == Some(SbufMode::Drop) {
                        name.push_str(" (drop mode)");
                    }
                    s.behaviors.insert(name);
                }
            }
            for i in 0..64 {
                let id = PolicyId(i);
                if let Some((he, _)) = h.dp.policy(id) {
                    if c.policy(id).packets > 0 {
                        s.headends.insert(he.name());
                    }
                }
            }
            for (r, n) in c.drop_counts() {
                if n > 0 {
                    s.drops.insert(r.as_str());
                }
            }
        }
    }
}

/// Which End.SBUF bound a `BufferFull` drop hit (an index into [`PATHS`]), from the
/// occupancy before the packet, the VM whose drop counter moved and the held length (the
/// frame without its outer IPv6 header and SRH).
fn full_bound(
    occ: &[srmig_dataplane::Occupancy; VMS],
    before: &[VmCounters; VMS],
    after: &[VmCounters; VMS],
    f: &[u8],
) -> usize {
    let Some(v) = (0..VMS).find(|&v| after[v].dropped > before[v].dropped) else {
        return 7;
    };
    let srh = if f.len() > 55 && f[20] == 43 {
        (usize::from(f[55]) + 1) * 8
    } else {
        0
    };
    let len = f.len().saturating_sub(54 + srh) as u64;
    let (packets, bytes) = occ
        .iter()
        .fold((0, 0), |a, o| (a.0 + o.packets, a.1 + o.bytes));
    if occ[v].packets >= u64::from(BUFFER.per_vm_packets) {
        7
    } else if packets >= u64::from(BUFFER.global_packets) {
        9
    } else if occ[v].bytes + len > BUFFER.per_vm_bytes {
        8
    } else if bytes + len > BUFFER.global_bytes {
        10
    } else {
        7
    }
}

fn policy_name(p: PolicyName) -> &'static str {
    match p {
        PolicyName::ViaSToD => "via-s-to-d",
        PolicyName::ToD => "to-d",
        PolicyName::ToDRed => "to-d-red",
        PolicyName::ToDInsert => "to-d-insert",
        PolicyName::OnS => "on-s",
        PolicyName::New => "fuzz-new",
    }
}

fn policy(name: PolicyName, headend: HeadendSel, segs: SegList) -> PolicyConfig {
    use canon::*;
    let segments = match segs {
        SegList::Empty => Vec::new(),
        SegList::One => vec![sid(D, END_DT6)],
        SegList::Migration => vec![sid(S, END_S), sid(D, END_SBUF)],
        SegList::Three => vec![sid(D, END), sid(S, END), sid(D, END_SBUF)],
        SegList::TooMany => (0..13).map(|i| sid(D, 0x100 + i)).collect(),
        SegList::Multicast => vec![
            sid(D, END),
            "ff02::1".parse().unwrap_or_else(|_| unreachable!()),
        ],
    };
    PolicyConfig {
        name: policy_name(name).into(),
        headend: match headend {
            HeadendSel::Encaps => Headend::HEncaps,
            HeadendSel::EncapsRed => Headend::HEncapsRed,
            HeadendSel::Insert => Headend::HInsert,
        },
        segments,
        hop_limit: None,
        flow_label: Default::default(),
        hmac_key: None,
    }
}

/// The SIDs operations install and remove on host `h`.
pub fn catalog(h: u16, s: CatalogSid) -> SidConfig {
    use canon::*;
    let base = |f, b| SidConfig::new(sid(h, f), b);
    match s {
        CatalogSid::End => base(END, Behavior::End),
        CatalogSid::EndPsp => SidConfig {
            flavors: vec![srmig_dataplane::Flavor::Psp],
            ..base(END_PSP, Behavior::End)
        },
        CatalogSid::EndX => SidConfig {
            nexthop: Some("fe80::ff".parse().unwrap_or_else(|_| unreachable!())),
            port: Some("up0".into()),
            ..base(END_X, Behavior::EndX)
        },
        CatalogSid::EndDx6 => SidConfig {
            port: Some("vm1".into()),
            ..base(END_DX6, Behavior::EndDx6)
        },
        CatalogSid::EndDt46 => base(END_DT46, Behavior::EndDt46),
        CatalogSid::EndB6 => SidConfig {
            policy: Some("to-d".into()),
            ..base(END_B6, Behavior::EndB6Encaps)
        },
        CatalogSid::EndS => base(END_S, Behavior::EndS),
        CatalogSid::EndSbuf => SidConfig {
            mode: Some(SbufMode::Buffer),
            ..base(END_SBUF, Behavior::EndSbuf)
        },
        CatalogSid::EndSbufDrop => SidConfig {
            mode: Some(SbufMode::Drop),
            ..base(END_SBUF_DROP, Behavior::EndSbuf)
        },
        CatalogSid::EndSbufVm2 => world::extra_sids(h).swap_remove(2),
        CatalogSid::NextCSid => world::next_c_sid(h),
        CatalogSid::BadVm => SidConfig {
            vm: Some("ghost".into()),
            ..base(0x5b9, Behavior::EndSbuf)
        },
        CatalogSid::BadPort => SidConfig {
            nexthop: Some("fe80::ff".parse().unwrap_or_else(|_| unreachable!())),
            port: Some("nope".into()),
            ..base(0xe19, Behavior::EndX)
        },
        CatalogSid::B6Insert => SidConfig {
            policy: Some("to-d-insert".into()),
            ..base(0xb69, Behavior::EndB6Encaps)
        },
        CatalogSid::OutsideLocator => SidConfig::new(
            std::net::Ipv6Addr::new(0xfc00, 0xaaaa, h, 0, 0, 0, 0, 0xe),
            Behavior::End,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeds() -> Vec<Vec<u8>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/dataplane_ops");
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("seed-")
            })
            .collect();
        v.sort();
        v.into_iter().map(|p| std::fs::read(p).unwrap()).collect()
    }

    /// An input does the same on a reused world, whatever ran before, as on a fresh one.
    #[test]
    fn reuse_is_deterministic() {
        let seeds = seeds();
        assert!(seeds.len() >= 10);
        let fresh: Vec<u64> = seeds
            .iter()
            .map(|s| {
                let mut h = Harness::new();
                h.run(s);
                h.digest()
            })
            .collect();
        let mut w = Harness::new();
        for round in 0..3 {
            for (i, s) in seeds.iter().enumerate() {
                let k = (i * 7 + round * 3) % seeds.len();
                w.run_reused(&seeds[k]);
                w.run_reused(s);
                assert_eq!(w.digest(), fresh[i], "seed {i} after seed {k}");
            }
        }
    }
}
