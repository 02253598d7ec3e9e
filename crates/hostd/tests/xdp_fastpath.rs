//! The fast path's XDP program (`bpf/fastpath.c`) against its Rust model
//! (`srmig_dataplane::FastTable::process`, itself property-tested against the engine):
//! the program is loaded into the kernel with the maps srmigd writes, and run on the same
//! frames as the model with `BPF_PROG_TEST_RUN`. A frame the model forwards must come back
//! `XDP_REDIRECT` with the model's bytes; any other frame `XDP_PASS` (no AF_XDP socket in the
//! map) untouched. The counters the program kept must be what the engine is credited.
//!
//! Also: the checked-in `bpf/fastpath.o` is what `bpf/fastpath.c` compiles to (clang).
//!
//! Needs root (and clang for the object check). Without them it prints `SKIPPED` and passes,
//! unless `CI` is set.

use std::net::Ipv6Addr;
use std::process::Command;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use srmig_dataplane::testkit::canon::*;
use srmig_dataplane::testkit::*;
use srmig_dataplane::{
    Behavior, CounterSlot, Dataplane, FastKind, FastOutcome, FastTable, NodeConfig, RouteConfig,
    SidConfig, SteeringConfig, VmState,
};
use srmig_hostd::port::bpf;
use srmig_hostd::port::fastpath::{FastPath, OBJECT};

mod common;
use common::{missing_root, missing_tool, skip};

const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

fn config() -> NodeConfig {
    let mut cfg = host_config(S, VmState::Running);
    cfg.routes.push(RouteConfig {
        prefix: "2001:db8:55::/48".parse().expect("test setup"),
        port: "up0".into(),
        table: 0,
    });
    // End.DX6 to a router behind the uplink.
    cfg.sids.push(SidConfig {
        port: Some("up0".into()),
        nexthop: Some("fc00:ffff::99".parse().expect("test setup")),
        ..SidConfig::new(dx6_sid(), Behavior::EndDx6)
    });
    // Transit H.Encaps (policy to-d: 2 segments, flow label hashed).
    cfg.steering.push(SteeringConfig {
        prefix: "2001:db8:77::/48".parse().expect("test setup"),
        policy: "to-d".into(),
        table: 0,
    });
    cfg
}

/// The End.DX6 SID toward the uplink.
fn dx6_sid() -> Ipv6Addr {
    sid(S, 0xd60)
}

fn table() -> FastTable {
    let dp = Dataplane::new(config()).expect("test setup");
    dp.fast_table(UPLINK, &|p| p == UPLINK).expect("test setup")
}

fn loaded(t: &FastTable) -> FastPath {
    let xsks = bpf::create_xskmap(1).expect("XSKMAP");
    let mut fp = FastPath::load(&xsks, "srmig_xsk", true).expect("load the fast path");
    // lo (ifindex 1) stands for the egress: BPF_PROG_TEST_RUN sends nothing.
    fp.write(Some(t.clone()), &|_| Some(1), &mut |_, _, _| {})
        .expect("write the table");
    assert!(fp.enabled());
    fp
}

/// An SRH's Segments Left, next segment, one byte overwritten (offset, value), and whether
/// it has a TLV.
type SrhFields = (u8, Ipv6Addr, Option<(usize, u8)>, bool);

fn frame(src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8, srh_fields: Option<SrhFields>) -> Vec<u8> {
    let body = match srh_fields {
        Some((sl, next, field, tlv)) => {
            let segs = [next, "2001:db8:55::7".parse().expect("test setup"), dst];
            let tlvs: &[u8] = if tlv { &[4, 6, 0, 0, 0, 0, 0, 0] } else { &[] };
            let mut h = srh(17, sl, &segs, tlvs);
            if let Some((at, v)) = field {
                h[at] = v;
            }
            h.extend_from_slice(&udp6(client(), vm1(), 1, 2, b"inner"));
            ipv6(src, dst, 43, hop_limit, &h)
        }
        None => ipv6(src, dst, 17, hop_limit, &udp6(src, dst, 1, 2, b"x")),
    };
    eth(uplink_mac(S), router_mac(S), 0x86dd, &body)
}

/// Runs `f` through the program and the model; returns the model's outcome.
fn compare(fp: &FastPath, t: &FastTable, f: &[u8]) -> FastOutcome {
    let mut model = f.to_vec();
    let outcome = t.process(&mut model);
    let (ret, out) = bpf::prog_test_run(fp.prog(), f).expect("BPF_PROG_TEST_RUN");
    match outcome {
        FastOutcome::Punt => {
            assert_eq!(
                ret, XDP_PASS,
                "program forwarded what the model punts: {f:02x?}"
            );
            assert_eq!(out, f, "a punted frame is untouched");
        }
        FastOutcome::Redirect { .. } => {
            assert_eq!(
                ret, XDP_REDIRECT,
                "program punted what the model forwards: {f:02x?}"
            );
            assert_eq!(out, model, "program and model write different bytes");
        }
    }
    outcome
}

#[test]
fn the_program_does_what_the_model_does() {
    if skip(
        "the_program_does_what_the_model_does",
        missing_root("loading XDP programs"),
    ) {
        return;
    }
    let t = table();
    let mut fp = loaded(&t);
    let routes: Vec<u128> = t.routes.iter().map(|r| r.addr).collect();
    let addr = (
        0..routes.len() + 1,
        any::<u128>(),
        prop_oneof![Just(0u32), Just(0), 1u32..128],
    )
        .prop_map(move |(i, r, bits)| match routes.get(i) {
            Some(&a) => Ipv6Addr::from(a ^ (r & ((1u128 << bits) - 1))),
            None => Ipv6Addr::from(r),
        });
    let end_dst = Just(sid(S, END));
    let steered = any::<u64>()
        .prop_map(|h| Ipv6Addr::from((0x2001_0db8_0077_0002u128 << 64) | u128::from(h)));
    let strategy = (
        prop_oneof![
            Just(sid(C, 1)),
            Just(outsider()),
            Just("fe80::1".parse().expect("test setup")),
            Just(Ipv6Addr::UNSPECIFIED)
        ],
        prop_oneof![addr.clone(), end_dst, steered],
        prop_oneof![Just(1u8), Just(2), Just(64)],
        proptest::option::weighted(
            0.7,
            (
                0u8..4,
                addr,
                proptest::option::weighted(0.3, (1usize..6, any::<u8>())),
                prop::bool::weighted(0.2),
            ),
        ),
        proptest::option::weighted(0.2, (0usize..120, any::<u8>())),
    );
    let mut runner = TestRunner::new(Config {
        cases: 10_000,
        failure_persistence: None,
        ..Config::default()
    });
    let counts = std::cell::RefCell::new((0u64, 0u64, 0u64, 0u64));
    runner
        .run(&strategy, |(src, dst, hl, srh_fields, mutate)| {
            let mut f = frame(src, dst, hl, srh_fields);
            if let Some((at, v)) = mutate {
                if at < f.len() {
                    f[at] = v;
                }
            }
            if let FastOutcome::Redirect { kind, .. } = compare(&fp, &t, &f) {
                let mut c = counts.borrow_mut();
                c.0 += 1;
                c.1 += u64::from(matches!(kind, FastKind::End(_)));
                c.2 += f.len() as u64;
                c.3 += u64::from(matches!(kind, FastKind::Encap(_)));
            }
            Ok(())
        })
        .expect("test setup");
    let (forwarded, ends, expected_rx_bytes, encaps) = counts.into_inner();
    eprintln!(
        "{forwarded} of 10000 frames forwarded by both, {ends} at End, {encaps} encapsulated"
    );
    assert!(
        forwarded >= 100 && ends >= 40 && encaps >= 40,
        "too few forwarded frames to compare: {forwarded}/{ends}/{encaps}"
    );

    // End.DX6: with and without an SRH, inner packets varied.
    let dx6 = (
        any::<bool>(),
        prop_oneof![Just(0u8), Just(0), Just(1)],
        prop_oneof![
            Just(client()),
            Just(Ipv6Addr::from(0xfe80u128 << 112)),
            Just(Ipv6Addr::UNSPECIFIED)
        ],
        prop_oneof![Just(1u8), Just(2), Just(64)],
        0usize..1500,
        proptest::option::weighted(0.3, (40usize..100, any::<u8>())),
    );
    let dx6_count = std::cell::Cell::new(0u64);
    let dx6_bytes = std::cell::Cell::new(0u64);
    // A new runner: one that has run its cases runs no more.
    TestRunner::new(Config {
        cases: 10_000,
        failure_persistence: None,
        ..Config::default()
    })
    .run(&dx6, |(with_srh, sl, inner_src, hl, payload, field)| {
        let inner = ipv6(inner_src, vm1(), 17, hl, &vec![7u8; payload]);
        let mut outer = if with_srh {
            let h = [srh(41, sl, &[dx6_sid(), sid(D, END)], &[]), inner].concat();
            ipv6(sid(C, 1), dx6_sid(), 43, 64, &h)
        } else {
            ipv6(sid(C, 1), dx6_sid(), 41, 64, &inner)
        };
        if let Some((at, v)) = field {
            if at < outer.len() {
                outer[at] = v;
            }
        }
        let f = eth(uplink_mac(S), router_mac(S), 0x86dd, &outer);
        if let FastOutcome::Redirect {
            kind: FastKind::Dx6(_),
            ..
        } = compare(&fp, &t, &f)
        {
            dx6_count.set(dx6_count.get() + 1);
            dx6_bytes.set(dx6_bytes.get() + f.len() as u64);
        }
        Ok(())
    })
    .expect("End.DX6 frames agree");
    let dx6_count = dx6_count.get();
    eprintln!("{dx6_count} of 10000 End.DX6 frames decapsulated by both");
    assert!(
        dx6_count >= 100,
        "too few End.DX6 frames to compare: {dx6_count}"
    );

    // What the program counted is what the engine gets.
    let mut credited = Vec::new();
    fp.collect(&mut |slot, p, b| credited.push((slot, p, b)));
    let rx = credited
        .iter()
        .find(|c| c.0 == CounterSlot::Rx(UPLINK))
        .expect("rx credited");
    // The runner may run a failing case again while shrinking; a passing run runs each once.
    assert_eq!(
        (rx.1, rx.2),
        (forwarded + dx6_count, expected_rx_bytes + dx6_bytes.get())
    );
    let tx = credited
        .iter()
        .find(|c| c.0 == CounterSlot::Tx(UPLINK))
        .expect("tx credited");
    assert_eq!(tx.1, forwarded + dx6_count);
    let end_id = Dataplane::new(config())
        .expect("test setup")
        .sid_id(sid(S, END))
        .expect("test setup");
    let end = credited
        .iter()
        .find(|c| c.0 == CounterSlot::Sid(end_id))
        .expect("End credited");
    assert_eq!(end.1, ends);
    let to_d = Dataplane::new(config())
        .expect("test setup")
        .policy_id("to-d")
        .expect("to-d");
    let dx6_id = Dataplane::new(config())
        .expect("test setup")
        .sid_id(dx6_sid())
        .expect("DX6");
    let d = credited
        .iter()
        .find(|c| c.0 == CounterSlot::Sid(dx6_id))
        .expect("End.DX6 credited");
    assert_eq!(d.1, dx6_count);
    let pol = credited
        .iter()
        .find(|c| c.0 == CounterSlot::Policy(to_d))
        .expect("policy credited");
    assert_eq!(pol.1, encaps);
    // Credited once.
    let mut again = Vec::new();
    fp.collect(&mut |slot, p, b| again.push((slot, p, b)));
    assert!(again.is_empty(), "{again:?}");

    // Turned off, it forwards nothing; a new table is written in place of the old.
    fp.write(None, &|_| Some(1), &mut |_, _, _| {})
        .expect("test setup");
    let f = frame(
        outsider(),
        "2001:db8:55::1".parse().expect("test setup"),
        64,
        None,
    );
    assert_eq!(
        bpf::prog_test_run(fp.prog(), &f).expect("test setup").0,
        XDP_PASS
    );
    fp.write(Some(t.clone()), &|_| Some(1), &mut |_, _, _| {})
        .expect("test setup");
    assert_eq!(
        bpf::prog_test_run(fp.prog(), &f).expect("test setup").0,
        XDP_REDIRECT
    );
    // A nexthop without an egress interface punts.
    fp.write(Some(t.clone()), &|_| None, &mut |_, _, _| {})
        .expect("test setup");
    assert_eq!(
        bpf::prog_test_run(fp.prog(), &f).expect("test setup").0,
        XDP_PASS
    );
}

#[test]
fn the_checked_in_object_is_what_the_source_compiles_to() {
    if skip(
        "the_checked_in_object_is_what_the_source_compiles_to",
        missing_tool(&["clang"]),
    ) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("srmig-bpf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("test setup");
    let out = dir.join("fastpath.o");
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/bpf/fastpath.c");
    let st = Command::new("clang")
        .args(["-O2", "-target", "bpf", "-mcpu=v3", "-c", src, "-o"])
        .arg(&out)
        .status()
        .expect("clang");
    let built = std::fs::read(&out);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(st.success(), "clang failed on {src}");
    assert!(
        built.expect("test setup") == OBJECT,
        "crates/hostd/bpf/fastpath.o is stale: run `bash scripts/build-bpf.sh` and commit it"
    );
}
