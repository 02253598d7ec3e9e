//! `process_batch` on arbitrary input arriving on every kind of port (uplink, VM port of a
//! running VM, VM port of a client VM), with VM state changes and the passage of time mixed in,
//! on the canonical two-host configuration (host S with End.S, host D with End.SBUF). Nothing
//! may panic, every packet gets a verdict naming a real port or VM, and `poll_transmit` drains.
//!
//! Both hosts have an HMAC key and a keyed policy (`testkit::with_hmac`); D's uplink requires
//! HMAC, S's verifies when present.
//!
//! Input: a sequence of records `[op] [len] [bytes...]`. `op % 5`: 0 = raw frame, 1 = a
//! realistic frame (by `op >> 5`: an SRv6 frame, the same signed with an HMAC TLV, or a client
//! frame steered into the keyed policy) with fuzzer bytes XORed over it (reaches deep paths
//! quickly),
//! 2 = VM state change, 3 = time passes (+ handle_timeout), 4 = process the batch now.
#![no_main]

use libfuzzer_sys::fuzz_target;
use srmig_dataplane::testkit::{
    a6, canon, client_frame, host_config, inner_to_vm1, sign_frame, uplink_frame, with_hmac,
    HMAC_KEY_ID, HMAC_SECRET,
};
use srmig_dataplane::{
    Batch, Dataplane, HmacMode, Instant, PacketBuf, PortId, Verdict, VmId, VmState,
};

const PORTS: [PortId; 3] = [canon::UPLINK, canon::VM1_PORT, canon::CLIENT_PORT];

struct Node {
    dp: Dataplane,
    ports: usize,
    vms: usize,
}

fn flush(node: &mut Node, now: Instant, batch: &mut Batch, out: &mut PacketBuf) {
    node.dp.process_batch(now, batch);
    for p in batch.iter() {
        match p.verdict {
            Verdict::Tx(port) => {
                assert!(
                    (port.0 as usize) < node.ports,
                    "Tx to a port that does not exist"
                );
                assert!(p.len() >= 14, "Tx of a frame shorter than Ethernet");
            }
            Verdict::Held(vm) => assert!((vm.0 as usize) < node.vms),
            Verdict::Drop(_) | Verdict::Consumed => {}
        }
    }
    batch.clear();
    // Bounded: generated packets and buffers are bounded by configuration.
    let mut n = 0;
    while node.dp.poll_transmit(now, out).is_some() {
        n += 1;
        assert!(n <= 100_000, "poll_transmit does not drain");
    }
}

fuzz_target!(|data: &[u8]| {
    let mk = |h, state| {
        let mut cfg = host_config(h, state);
        with_hmac(&mut cfg);
        if h == canon::D {
            cfg.ports[0].hmac = Some(HmacMode::Require);
        }
        // Small buffers: fast to set up per input, and full buffers are reached easily.
        cfg.buffer.per_vm_packets = 48;
        cfg.buffer.global_packets = 64;
        cfg.buffer.per_vm_bytes = 48 * 1500;
        cfg.buffer.global_bytes = 64 * 1500;
        let ports = cfg.ports.len();
        let vms = cfg.vms.len();
        Node {
            dp: Dataplane::new(cfg).expect("canonical config is valid"),
            ports,
            vms,
        }
    };
    let mut nodes = [
        mk(canon::S, VmState::Running),
        mk(canon::D, VmState::Absent),
    ];
    let template = uplink_frame(
        canon::S,
        &[
            canon::sid(canon::S, canon::END_S),
            canon::sid(canon::D, canon::END_SBUF),
        ],
        1,
        &inner_to_vm1(),
    );
    let mut signed = template.clone();
    sign_frame(&mut signed, HMAC_KEY_ID, HMAC_SECRET, false);
    let to_keyed = client_frame(a6("2001:db8:901::1"), 120);
    let templates = [&template, &signed, &to_keyed];
    let mut batch = Batch::new(64);
    let mut out = PacketBuf::new();
    let mut now = Instant(0);
    let mut rest = data;
    while let [op, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (bytes, next) = tail.split_at(len);
        rest = next;
        let node = &mut nodes[usize::from(*op >> 7)];
        let port = PORTS[usize::from(*op >> 3) % PORTS.len()];
        match op % 5 {
            0 => {
                if batch.push(port, bytes).is_ok() && batch.is_full() {
                    flush(node, now, &mut batch, &mut out);
                }
            }
            1 => {
                let mut f = templates[usize::from(*op >> 5) % templates.len()].clone();
                for (i, b) in bytes.iter().enumerate() {
                    let at = (usize::from(*b) * 7 + i) % f.len();
                    f[at] ^= bytes.get(i + 1).copied().unwrap_or(0xff);
                }
                if batch.push(port, &f).is_ok() && batch.is_full() {
                    flush(node, now, &mut batch, &mut out);
                }
            }
            2 => {
                let state = match bytes.first().copied().unwrap_or(0) % 3 {
                    0 => VmState::Absent,
                    1 => VmState::Paused,
                    _ => VmState::Running,
                };
                let _ = node.dp.handle_vm_state(now, VmId(0), state);
            }
            3 => {
                let ms = u64::from(bytes.first().copied().unwrap_or(1));
                now = Instant(now.0 + ms * 1_000_000);
                node.dp.handle_timeout(now);
            }
            _ => flush(node, now, &mut batch, &mut out),
        }
    }
    let node = &mut nodes[0];
    flush(node, now, &mut batch, &mut out);
});
