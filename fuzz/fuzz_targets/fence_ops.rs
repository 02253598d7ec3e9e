//! The commit fence at the destination (`crates/dataplane/src/fence.rs`): one engine, host D of
//! the testkit's canonical world with small fence bounds (2 packets per pair, 4 packets and
//! 300 bytes in all, 20 ms; every bound reachable) and End.SBUF bounds (6 packets, 3000
//! bytes, 50 ms), driven by operations from three
//! ingresses (C, S and a fourth host) for two VMs (`vm1` and `client`, which share the fence's
//! pair slots). Each input starts from a copy of one engine built at the start (small bounds: a
//! few kilobytes to copy).
//!
//! Input: 2 bytes per operation, `[op, arg]`; `i = arg % 3` picks the ingress and
//! `v = (arg / 3) % 2` the VM:
//!
//! | `op % 10` | operation |
//! |---|---|
//! | 0 | an old-path packet for `v` from ingress `i` at D's End.SBUF (`S::End.S -> D::End.SBUF`, outer source the ingress) |
//! | 1 | a direct packet for `v` from ingress `i` (End.DT6) |
//! | 2 | ingress `i`'s marker for `v` at End.SBUF |
//! | 3 | arm (`arg` odd) or disarm the fence of VM `(arg / 2) % 2` |
//! | 4 | `v` running, paused or absent (`i`) |
//! | 5 | time passes (`arg` ms), then `handle_timeout` |
//! | 6 | one `poll_transmit` |
//! | 7 | `poll_transmit` until `None` |
//! | 8 | a direct packet as 1, `1 + arg / 4` octets longer |
//! | 9 | ingress `i`'s marker for `v` relayed by another worker of D (`fence_marker_relayed`) |
//!
//! Each packet carries `[class, ingress, vm, seq]` in its UDP payload. At the end both VMs
//! run, the engine drains, time passes beyond the fence timeout, and it drains again.
//! Invariants:
//!
//! - nothing panics; a marker never reaches a VM, and every frame a VM port gets is one of the
//!   harness's packets for that VM, delivered at most once;
//! - per VM, old-path packets arrive in arrival order (End.SBUF), and so do each ingress's
//!   direct packets unless a fence bound was reached (`bypassed`, counted as out of order);
//! - the fence's promise: unless a pair opened by its timeout, a bound was reached or the
//!   fence was disarmed before the marker, every old-path packet of an ingress for a VM that
//!   arrived before its marker reaches the VM before every direct packet of that ingress for
//!   that VM that arrived while the fence was armed;
//! - counters: fence `held` = `released` + `dropped` + held now; every `Held` verdict is
//!   End.SBUF's or the fence's; markers are `Consumed`;
//! - at the end nothing is held, by End.SBUF or a fence, and nothing is pending.
#![no_main]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use srmig_dataplane::testkit::canon::{
    client, remote, router_mac, sid, uplink_mac, vm1, CLIENT_PORT, D, END_DT6, END_S, END_SBUF, S,
    VM1_PORT,
};
use srmig_dataplane::testkit::{eth, host_config, srv6, udp6};
use srmig_dataplane::{
    fence, Batch, BufferConfig, Dataplane, FenceConfig, Instant, PacketBuf, PortId, Verdict, VmId,
    VmState,
};

/// The two VMs of D: id, port.
const VMS: [(VmId, PortId); 2] = [(VmId(0), VM1_PORT), (VmId(1), CLIENT_PORT)];
/// Hosts whose encapsulation source (`sid(h, 1)`) is an ingress.
const INGRESSES: [u16; 3] = [3, S, 4];
const OLD: u8 = 0;
const DIRECT: u8 = 1;
const TIMEOUT_MS: u64 = 20;

/// A packet's identity, from its payload: class, ingress, VM, sequence number.
type Tag = (u8, u8, u8, u16);

fn ingress(i: u8) -> Ipv6Addr {
    sid(INGRESSES[usize::from(i)], 1)
}

fn vm_addr(v: u8) -> Ipv6Addr {
    if v == 0 {
        vm1()
    } else {
        client()
    }
}

fn frame(l3: &[u8]) -> Vec<u8> {
    eth(uplink_mac(D), router_mac(D), 0x86dd, l3)
}

fn inner(tag: Tag, extra: usize) -> Vec<u8> {
    let mut data = vec![tag.0, tag.1, tag.2];
    data.extend_from_slice(&tag.3.to_be_bytes());
    data.resize(5 + extra, 0xa5);
    udp6(remote(), vm_addr(tag.2), 1000, 2000, &data)
}

/// The tag of a frame VM port `port` got.
fn tag_of(f: &[u8], port: PortId) -> Tag {
    assert!(f.len() >= 14 + 40 + 8 + 5, "a short frame reached a VM");
    assert_eq!(f[14 + 6], 17, "not the harness's UDP: {f:02x?}");
    let p = &f[14 + 48..];
    assert!(
        p[0] <= DIRECT && p[1] < 3 && p[2] < 2,
        "not a harness packet: {f:02x?}"
    );
    assert_eq!(
        VMS[usize::from(p[2])].1,
        port,
        "delivered to another VM's port"
    );
    (p[0], p[1], p[2], u16::from_be_bytes([p[3], p[4]]))
}

#[derive(Default)]
struct World {
    now: u64,
    step: u64,
    seq: u16,
    /// Arrival step of every packet sent.
    arrived: HashMap<Tag, u64>,
    /// The armed span a direct packet arrived in.
    direct_armed: HashMap<Tag, u64>,
    /// Delivery order.
    delivered: Vec<Tag>,
    /// Per (VM, ingress): the armed span and step of each marker that opened its pair.
    opened: HashMap<(u8, u8), Vec<(u64, u64)>>,
    /// Per VM, its current armed span.
    armed_span: [Option<u64>; 2],
    spans: u64,
    /// Held verdicts seen.
    held: u64,
}

impl World {
    fn deliver(&mut self, f: &[u8], port: PortId) {
        let t = tag_of(f, port);
        if std::env::var_os("FENCE_OPS_TRACE").is_some() {
            eprintln!("step {}: delivered {t:?}", self.step);
        }
        assert!(!self.delivered.contains(&t), "{t:?} delivered twice");
        assert!(self.arrived.contains_key(&t), "{t:?} never sent");
        self.delivered.push(t);
    }

    fn process(&mut self, dp: &mut Dataplane, f: &[u8]) -> Verdict {
        let mut b = Batch::new(1);
        b.push(PortId(0), f).expect("a frame fits");
        dp.process_batch(Instant(self.now), &mut b);
        let p = &b.packets()[0];
        match p.verdict {
            Verdict::Tx(port) if VMS.iter().any(|(_, vp)| *vp == port) => {
                self.deliver(p.data(), port);
            }
            Verdict::Held(_) => self.held += 1,
            _ => {}
        }
        p.verdict
    }

    fn poll(&mut self, dp: &mut Dataplane, out: &mut PacketBuf) -> bool {
        match dp.poll_transmit(Instant(self.now), out) {
            Some(port) => {
                if VMS.iter().any(|(_, vp)| *vp == port) {
                    self.deliver(out.data(), port);
                }
                true
            }
            None => false,
        }
    }

    fn drain(&mut self, dp: &mut Dataplane, out: &mut PacketBuf) {
        let mut n = 0;
        while self.poll(dp, out) {
            n += 1;
            assert!(n < 100_000, "poll_transmit never ends");
        }
        assert!(!dp.has_pending_transmit(), "None with frames pending");
    }

    fn send(&mut self, dp: &mut Dataplane, class: u8, i: u8, v: u8, extra: usize) {
        self.seq = self.seq.wrapping_add(1);
        let tag = (class, i, v, self.seq);
        self.arrived.insert(tag, self.step);
        let l3 = if class == OLD {
            srv6(
                ingress(i),
                &[sid(S, END_S), sid(D, END_SBUF)],
                0,
                &inner(tag, extra),
            )
        } else {
            if let Some(span) = self.armed_span[usize::from(v)] {
                self.direct_armed.insert(tag, span);
            }
            srv6(ingress(i), &[sid(D, END_DT6)], 0, &inner(tag, extra))
        };
        self.process(dp, &frame(&l3));
    }

    fn opened(&mut self, i: u8, v: u8) {
        if let Some(span) = self.armed_span[usize::from(v)] {
            self.opened
                .entry((v, i))
                .or_default()
                .push((span, self.step));
        }
    }

    fn marker(&mut self, dp: &mut Dataplane, i: u8, v: u8) {
        let m = fence::build_marker(ingress(i), &[sid(D, END_SBUF)], IpAddr::V6(vm_addr(v)))
            .expect("a marker");
        let before = dp.counters().fence().markers_received;
        let verdict = self.process(dp, &frame(&m));
        assert_eq!(verdict, Verdict::Consumed, "a marker was not consumed");
        if dp.counters().fence().markers_received > before {
            self.opened(i, v);
        }
    }

    /// Another worker received the marker: this engine opens the pair as the marker would.
    fn relayed(&mut self, dp: &mut Dataplane, i: u8, v: u8) {
        let vm = VMS[usize::from(v)].0;
        if dp.fence_marker_relayed(Instant(self.now), vm, ingress(i)) {
            self.opened(i, v);
        }
    }

    fn check(&self, dp: &Dataplane) {
        let c = dp.counters();
        let f = c.fence();
        let (now, _) = c.fence_now();
        assert_eq!(f.held, f.released + f.dropped + now, "fence held: {f:?}");
        let sbuf: u64 = VMS.iter().map(|(vm, _)| c.vm(*vm).held).sum();
        assert_eq!(self.held, sbuf + f.held, "Held verdicts = End.SBUF + fence");
    }

    /// Order: per VM and class (and per ingress for direct packets, unless bypassed), and the
    /// fence's promise (see the module doc).
    fn check_order(&self, bypassed: bool, timed_out: bool) {
        let pos: HashMap<Tag, usize> = self
            .delivered
            .iter()
            .enumerate()
            .map(|(k, t)| (*t, k))
            .collect();
        let mut last: HashMap<(u8, u8, u8), u16> = HashMap::new();
        for t in &self.delivered {
            if t.0 == DIRECT && bypassed {
                continue;
            }
            let key = if t.0 == OLD {
                (OLD, 0, t.2)
            } else {
                (DIRECT, t.1, t.2)
            };
            if let Some(prev) = last.insert(key, t.3) {
                assert!(prev < t.3, "{t:?} delivered after {prev} of its kind");
            }
        }
        if bypassed || timed_out {
            return;
        }
        for (&(v, i), opened) in &self.opened {
            for &(span, marker_step) in opened {
                let last_old = self
                    .delivered
                    .iter()
                    .filter(|t| t.0 == OLD && t.1 == i && t.2 == v && self.arrived[t] < marker_step)
                    .filter_map(|t| pos.get(t).map(|p| (*p, *t)))
                    .max();
                let Some((last_old, old)) = last_old else {
                    continue;
                };
                for (t, s) in &self.direct_armed {
                    if *s != span || t.1 != i || t.2 != v {
                        continue;
                    }
                    if let Some(&p) = pos.get(t) {
                        assert!(
                            p > last_old,
                            "direct {t:?} (armed span {span}, arrived at step {}, delivered \
                             {p}th) delivered before the old-path {old:?} (arrived at step {}, \
                             delivered {last_old}th), which came before its marker (step \
                             {marker_step})",
                            self.arrived[t],
                            self.arrived[&old],
                        );
                    }
                }
            }
        }
    }
}

/// The engine every input starts from: built once, copied per input (an exact copy; building it
/// was a tenth of a run).
fn world() -> Dataplane {
    static WORLD: OnceLock<Dataplane> = OnceLock::new();
    WORLD.get_or_init(build_world).clone()
}

fn build_world() -> Dataplane {
    let mut cfg = host_config(D, VmState::Running);
    // Small End.SBUF storage: nothing large to zero per input, and its bounds are reachable.
    cfg.buffer = BufferConfig {
        per_vm_packets: 6,
        per_vm_bytes: 3000,
        global_packets: 8,
        global_bytes: 4000,
        max_age_ms: 50,
    };
    cfg.fence = FenceConfig {
        timeout_ms: TIMEOUT_MS,
        per_ingress_packets: 2,
        global_packets: 4,
        global_bytes: 300,
    };
    Dataplane::new(cfg).expect("the canonical D with small bounds")
}

fuzz_target!(|data: &[u8]| {
    let mut dp = world();
    let mut w = World {
        now: 1_000_000_000,
        ..World::default()
    };
    let mut out = PacketBuf::new();
    for op in data.chunks_exact(2).take(256) {
        w.step += 1;
        let (code, arg) = (op[0] % 10, op[1]);
        let (i, v) = (arg % 3, (arg / 3) % 2);
        match code {
            0 => w.send(&mut dp, OLD, i, v, 0),
            1 => w.send(&mut dp, DIRECT, i, v, 0),
            8 => w.send(&mut dp, DIRECT, i, v, 1 + usize::from(arg >> 2)),
            2 => w.marker(&mut dp, i, v),
            9 => w.relayed(&mut dp, i, v),
            3 => {
                let armed = arg % 2 == 1;
                let v = usize::from((arg / 2) % 2);
                if dp.set_fence_armed(VMS[v].0, armed).is_ok() {
                    match (armed, w.armed_span[v]) {
                        (true, None) => {
                            w.spans += 1;
                            w.armed_span[v] = Some(w.spans);
                        }
                        (false, Some(_)) => w.armed_span[v] = None,
                        _ => {}
                    }
                }
            }
            4 => {
                let state = [VmState::Running, VmState::Paused, VmState::Absent][usize::from(i)];
                dp.handle_vm_state(Instant(w.now), VMS[usize::from(v)].0, state)
                    .expect("the VM exists");
            }
            5 => {
                w.now += u64::from(arg) * 1_000_000;
                dp.handle_timeout(Instant(w.now));
            }
            6 => {
                w.poll(&mut dp, &mut out);
            }
            _ => w.drain(&mut dp, &mut out),
        }
        w.check(&dp);
    }
    // Both VMs run: End.SBUF releases everything; the fences wait for markers or timeouts.
    for (vm, _) in VMS {
        dp.handle_vm_state(Instant(w.now), vm, VmState::Running)
            .expect("the VM exists");
    }
    w.drain(&mut dp, &mut out);
    w.check(&dp);
    let f = dp.counters().fence();
    w.check_order(f.bypassed > 0, f.timeouts > 0);
    // Disarmed and past the timeout: nothing may stay held.
    for (vm, _) in VMS {
        let _ = dp.set_fence_armed(vm, false);
    }
    w.now += (TIMEOUT_MS + 1) * 1_000_000;
    dp.handle_timeout(Instant(w.now));
    w.drain(&mut dp, &mut out);
    w.check(&dp);
    assert_eq!(
        dp.counters().fence_now().0,
        0,
        "a fence still holds packets"
    );
    for (vm, _) in VMS {
        assert_eq!(
            dp.counters().buffer_occupancy(vm).packets,
            0,
            "End.SBUF still holds packets for a running VM"
        );
    }
});
