//! The commit fence at the destination (`crates/dataplane/src/fence.rs`): one engine, host D of
//! the testkit's canonical world with small fence bounds (2 packets per pair, 4 in all, 20 ms)
//! and End.SBUF bounds (6 packets, 3000 bytes, 50 ms), driven by operations from three
//! ingresses (C, S and a fourth host). Each input builds the engine anew (small bounds: a few
//! kilobytes to allocate).
//!
//! Input: 2 bytes per operation, `[op, arg]`; `i = arg % 3` picks the ingress:
//!
//! | `op % 10` | operation |
//! |---|---|
//! | 0 | an old-path packet from ingress `i` at D's End.SBUF (`S::End.S -> D::End.SBUF`, outer source the ingress) |
//! | 1 | a direct packet from ingress `i` (End.DT6) |
//! | 2 | ingress `i`'s marker at End.SBUF |
//! | 3 | arm (`arg` odd) or disarm the fence of vm1 |
//! | 4 | vm1 running, paused or absent (`arg % 3`) |
//! | 5 | time passes (`arg` ms), then `handle_timeout` |
//! | 6 | one `poll_transmit` |
//! | 7 | `poll_transmit` until `None` |
//! | 8 | a direct packet as 1, `1 + arg / 4` octets longer |
//! | 9 | ingress `i`'s marker relayed by another worker of D (`fence_marker_relayed`) |
//!
//! Each packet carries `[class, ingress, seq]` in its UDP payload. At the end vm1 runs, the
//! engine drains, time passes beyond the fence timeout, and it drains again. Invariants:
//!
//! - nothing panics; a marker never reaches the VM, and every frame the VM port gets is one
//!   of the harness's packets, delivered at most once;
//! - old-path packets reach the VM in arrival order (End.SBUF), and so do each ingress's direct
//!   packets unless a fence bound was reached (`bypassed`, counted as out of order);
//! - the fence's promise: unless a pair opened by its timeout, a bound was reached or the
//!   fence was disarmed before the marker, every old-path packet of an ingress that arrived
//!   before its marker reaches the VM before every direct packet of that ingress that arrived
//!   while the fence was armed;
//! - counters: fence `held` = `released` + `dropped` + held now; every `Held` verdict is
//!   End.SBUF's or the fence's; markers are `Consumed`;
//! - at the end nothing is held, by End.SBUF or a fence, and nothing is pending.
#![no_main]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use srmig_dataplane::testkit::canon::{
    client, router_mac, sid, uplink_mac, vm1, D, END_DT6, END_S, END_SBUF, S, VM1_PORT,
};
use srmig_dataplane::testkit::{eth, host_config, srv6, udp6};
use srmig_dataplane::{
    fence, Batch, BufferConfig, Dataplane, FenceConfig, Instant, PacketBuf, PortId, Verdict, VmId,
    VmState,
};

const VM: VmId = VmId(0);
/// Hosts whose encapsulation source (`sid(h, 1)`) is an ingress.
const INGRESSES: [u16; 3] = [3, S, 4];
const OLD: u8 = 0;
const DIRECT: u8 = 1;
const TIMEOUT_MS: u64 = 20;

/// A packet's identity, from its payload.
type Tag = (u8, u8, u16);

fn ingress(i: u8) -> Ipv6Addr {
    sid(INGRESSES[usize::from(i)], 1)
}

fn frame(l3: &[u8]) -> Vec<u8> {
    eth(uplink_mac(D), router_mac(D), 0x86dd, l3)
}

fn inner(tag: Tag, extra: usize) -> Vec<u8> {
    let mut data = vec![tag.0, tag.1];
    data.extend_from_slice(&tag.2.to_be_bytes());
    data.resize(4 + extra, 0xa5);
    udp6(client(), vm1(), 1000, 2000, &data)
}

/// The tag of a frame the VM port got.
fn tag_of(f: &[u8]) -> Tag {
    assert!(f.len() >= 14 + 40 + 8 + 4, "a short frame reached the VM");
    assert_eq!(f[14 + 6], 17, "not the harness's UDP: {f:02x?}");
    let p = &f[14 + 48..];
    assert!(p[0] <= DIRECT && p[1] < 3, "not a harness packet: {f:02x?}");
    (p[0], p[1], u16::from_be_bytes([p[2], p[3]]))
}

#[derive(Default)]
struct World {
    now: u64,
    step: u64,
    seq: u16,
    /// Arrival step of every packet sent.
    arrived: HashMap<Tag, u64>,
    /// Whether a direct packet arrived while the fence was armed (and in which armed span).
    direct_armed: HashMap<Tag, u64>,
    /// Delivery order.
    delivered: Vec<Tag>,
    /// Per ingress: the armed span and step of the marker that opened its pair, or `None`
    /// once excluded (disarmed before its marker).
    opened: [Vec<(u64, u64)>; 3],
    armed_span: Option<u64>,
    spans: u64,
    /// Held verdicts seen.
    held: u64,
}

impl World {
    fn deliver(&mut self, f: &[u8]) {
        let t = tag_of(f);
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
            Verdict::Tx(port) if port == VM1_PORT => self.deliver(p.data()),
            Verdict::Held(vm) => {
                assert_eq!(vm, VM);
                self.held += 1;
            }
            _ => {}
        }
        p.verdict
    }

    fn poll(&mut self, dp: &mut Dataplane, out: &mut PacketBuf) -> bool {
        match dp.poll_transmit(Instant(self.now), out) {
            Some(port) => {
                if port == VM1_PORT {
                    self.deliver(out.data());
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

    fn send(&mut self, dp: &mut Dataplane, class: u8, i: u8, extra: usize) {
        self.seq = self.seq.wrapping_add(1);
        let tag = (class, i, self.seq);
        self.arrived.insert(tag, self.step);
        let l3 = if class == OLD {
            srv6(
                ingress(i),
                &[sid(S, END_S), sid(D, END_SBUF)],
                0,
                &inner(tag, extra),
            )
        } else {
            if let Some(span) = self.armed_span {
                self.direct_armed.insert(tag, span);
            }
            srv6(ingress(i), &[sid(D, END_DT6)], 0, &inner(tag, extra))
        };
        self.process(dp, &frame(&l3));
    }

    fn marker(&mut self, dp: &mut Dataplane, i: u8) {
        let m = fence::build_marker(ingress(i), &[sid(D, END_SBUF)], IpAddr::V6(vm1()))
            .expect("a marker");
        let before = dp.counters().fence().markers_received;
        let v = self.process(dp, &frame(&m));
        assert_eq!(v, Verdict::Consumed, "a marker was not consumed");
        if dp.counters().fence().markers_received > before {
            if let Some(span) = self.armed_span {
                self.opened[usize::from(i)].push((span, self.step));
            }
        }
    }

    /// Another worker received the marker: this engine opens the pair as the marker would.
    fn relayed(&mut self, dp: &mut Dataplane, i: u8) {
        if dp.fence_marker_relayed(Instant(self.now), VM, ingress(i)) {
            if let Some(span) = self.armed_span {
                self.opened[usize::from(i)].push((span, self.step));
            }
        }
    }

    fn check(&self, dp: &Dataplane) {
        let f = dp.counters().fence();
        let (now, _) = dp.counters().fence_now();
        assert_eq!(f.held, f.released + f.dropped + now, "fence held: {f:?}");
        let sbuf = dp.counters().vm(VM).held;
        assert_eq!(self.held, sbuf + f.held, "Held verdicts = End.SBUF + fence");
    }

    /// Order: per class (and per ingress for direct packets, unless bypassed), and the
    /// fence's promise (see the module doc).
    fn check_order(&self, bypassed: bool, timed_out: bool) {
        let pos: HashMap<Tag, usize> = self
            .delivered
            .iter()
            .enumerate()
            .map(|(k, t)| (*t, k))
            .collect();
        let mut last: HashMap<(u8, u8), u16> = HashMap::new();
        for t in &self.delivered {
            let key = if t.0 == OLD { (OLD, 0) } else { (DIRECT, t.1) };
            if t.0 == DIRECT && bypassed {
                continue;
            }
            if let Some(prev) = last.insert(key, t.2) {
                assert!(prev < t.2, "{t:?} delivered after {prev} of its class");
            }
        }
        if bypassed || timed_out {
            return;
        }
        for (i, opened) in self.opened.iter().enumerate() {
            for &(span, marker_step) in opened {
                let last_old = self
                    .delivered
                    .iter()
                    .filter(|t| {
                        t.0 == OLD && usize::from(t.1) == i && self.arrived[t] < marker_step
                    })
                    .filter_map(|t| pos.get(t).map(|p| (*p, *t)))
                    .max();
                let Some((last_old, old)) = last_old else {
                    continue;
                };
                for (t, s) in &self.direct_armed {
                    if *s == span && usize::from(t.1) == i {
                        if let Some(&p) = pos.get(t) {
                            assert!(
                                p > last_old,
                                "direct {t:?} (armed span {span}, arrived at step {}, \
                                 delivered {p}th) delivered before the old-path {old:?} \
                                 (arrived at step {}, delivered {last_old}th) of ingress {i}, \
                                 which came before its marker (step {marker_step})",
                                self.arrived[t],
                                self.arrived[&old],
                            );
                        }
                    }
                }
            }
        }
    }
}

fn world() -> Dataplane {
    let mut cfg = host_config(D, VmState::Running);
    // Small End.SBUF storage: nothing large to zero per input, and its bounds are reachable.
    cfg.buffer = BufferConfig {
        per_vm_packets: 6,
        per_vm_bytes: 3000,
        global_packets: 6,
        global_bytes: 3000,
        max_age_ms: 50,
    };
    cfg.fence = FenceConfig {
        timeout_ms: TIMEOUT_MS,
        per_ingress_packets: 2,
        global_packets: 4,
        ..cfg.fence
    };
    Dataplane::new(cfg).expect("the canonical D with small fence bounds")
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
        let i = arg % 3;
        match code {
            0 => w.send(&mut dp, OLD, i, 0),
            1 => w.send(&mut dp, DIRECT, i, 0),
            8 => w.send(&mut dp, DIRECT, i, 1 + usize::from(arg >> 2)),
            2 => w.marker(&mut dp, i),
            9 => w.relayed(&mut dp, i),
            3 => {
                let armed = arg % 2 == 1;
                if dp.set_fence_armed(VM, armed).is_ok() {
                    match (armed, w.armed_span) {
                        (true, None) => {
                            w.spans += 1;
                            w.armed_span = Some(w.spans);
                        }
                        (false, Some(_)) => w.armed_span = None,
                        _ => {}
                    }
                }
            }
            4 => {
                let state = [VmState::Running, VmState::Paused, VmState::Absent][usize::from(i)];
                dp.handle_vm_state(Instant(w.now), VM, state)
                    .expect("vm1 exists");
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
    // vm1 runs: End.SBUF releases everything; the fence waits for markers or its timeout.
    dp.handle_vm_state(Instant(w.now), VM, VmState::Running)
        .expect("vm1 exists");
    w.drain(&mut dp, &mut out);
    w.check(&dp);
    let f = dp.counters().fence();
    w.check_order(f.bypassed > 0, f.timeouts > 0);
    // Disarmed and past the timeout: nothing may stay held.
    let _ = dp.set_fence_armed(VM, false);
    w.now += (TIMEOUT_MS + 1) * 1_000_000;
    dp.handle_timeout(Instant(w.now));
    w.drain(&mut dp, &mut out);
    w.check(&dp);
    assert_eq!(
        dp.counters().fence_now().0,
        0,
        "the fence still holds packets"
    );
    assert_eq!(
        dp.counters().buffer_occupancy(VM).packets,
        0,
        "End.SBUF still holds packets for a running VM"
    );
});
