//! Criterion benches of the dataplane: one per behavior (testkit scenarios, batches of 256
//! packets of ~100-byte inner packets), a refill-only baseline, the LPM comparison that
//! justifies `fib::Lpm` over `prefix-trie`, and policy removal (`Dataplane::remove_policies`
//! against `remove_policy` name by name, on a host with 10,000 policies and mappings, and a
//! call with nothing to remove).
//!
//! Run: `cargo bench -p srmig-dataplane --features testkit` (the `testkit` feature is required).

use std::hint::black_box;
use std::net::Ipv6Addr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ipnet::Ipv6Net;
use srmig_dataplane::fib::Lpm;
use srmig_dataplane::testkit::{bench_scenarios, canon, host_config};
use srmig_dataplane::{
    Batch, Dataplane, FlowLabelMode, Headend, Instant, PacketBuf, PolicyConfig, Steering, VmState,
};

const BATCH: usize = 256;

fn behaviors(c: &mut Criterion) {
    let mut g = c.benchmark_group("dataplane");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
    let mut batch = Batch::new(BATCH);
    let mut out = PacketBuf::new();
    let scenarios = bench_scenarios();
    // Baseline: copying the prototype frame into the 256 buffers, without processing.
    if let Some(s) = scenarios.first() {
        g.bench_function("refill only", |b| {
            b.iter(|| {
                s.fill(&mut batch);
                black_box(batch.len())
            })
        });
    }
    for mut s in scenarios {
        let mut now = 1_000_000_000u64;
        g.bench_function(s.name, |b| {
            b.iter(|| {
                now += 1_000;
                black_box(s.run(Instant(now), &mut batch, &mut out))
            })
        });
    }
    g.finish();
}

/// Deterministic pseudo-random u128s (SplitMix64 pairs).
fn rand_iter(mut seed: u64) -> impl FnMut() -> u128 {
    move || {
        let mut next = || {
            seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        (u128::from(next()) << 64) | u128::from(next())
    }
}

fn lpm(c: &mut Criterion) {
    let mut g = c.benchmark_group("lpm");
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
    for n in [100usize, 10_000, 100_000] {
        // A hypervisor-like table: /48 locators, /64 subnets, /128 VM routes, a default.
        let mut r = rand_iter(n as u64);
        let mut ours: Lpm<u32, 128> = Lpm::new();
        let mut trie: prefix_trie::PrefixMap<Ipv6Net, u32> = prefix_trie::PrefixMap::new();
        let mut keys = Vec::new();
        ours.insert(0, 0, 0);
        trie.insert(
            Ipv6Net::new(Ipv6Addr::UNSPECIFIED, 0).unwrap_or_default(),
            0,
        );
        for i in 0..n {
            let a = (r() & !(0xffffu128 << 112)) | (0x2001u128 << 112);
            let len = [48u8, 64, 128][i % 3];
            ours.insert(a, len, i as u32);
            if let Ok(p) = Ipv6Net::new(Ipv6Addr::from(a), len) {
                trie.insert(p.trunc(), i as u32);
            }
            keys.push(if len == 128 { a } else { a | 1 });
        }
        let mut i = 0usize;
        g.bench_function(format!("hash-per-length {n}"), |b| {
            b.iter(|| {
                i = (i + 1) % keys.len();
                black_box(ours.lookup(keys[i]))
            })
        });
        let mut i = 0usize;
        g.bench_function(format!("prefix-trie {n}"), |b| {
            b.iter(|| {
                i = (i + 1) % keys.len();
                let k = Ipv6Net::new(Ipv6Addr::from(keys[i]), 128).unwrap_or_default();
                black_box(trie.get_lpm(&k).map(|(_, v)| *v))
            })
        });
    }
    g.finish();
}

/// Removing 1,000 unused policies from a host with 10,000 policies and 10,000 mappings into
/// the other 9,000: what a host config that stops encapsulating a thousand VMs asks of
/// srmigd. Name by name, every removal looks at every mapping; at once, one look serves all.
fn policy_removal(c: &mut Criterion) {
    const POLICIES: usize = 10_000;
    const REMOVED: usize = 1_000;
    let mut g = c.benchmark_group("policy removal");
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(3));
    let Ok(mut dp) = Dataplane::new(host_config(1, VmState::Running)) else {
        return;
    };
    let mut ids = Vec::new();
    for i in 0..POLICIES {
        let installed = dp.install_policy(PolicyConfig {
            name: format!("p{i}"),
            headend: Headend::HEncaps,
            segments: vec![canon::sid(2, 1)],
            hop_limit: None,
            flow_label: FlowLabelMode::Copy,
            hmac_key: None,
        });
        ids.extend(installed);
    }
    for i in 0..POLICIES {
        let to = ids[REMOVED + i % (POLICIES - REMOVED)];
        let prefix = Ipv6Net::new(
            Ipv6Addr::new(0x2001, 0xdb8, 0x77, 0, 0, 0, 0, i as u16),
            128,
        );
        if let Ok(p) = prefix {
            let _ = dp.set_mapping(p.into(), Steering::Policy(to));
        }
    }
    let names: Vec<String> = (0..REMOVED).map(|i| format!("p{i}")).collect();
    g.bench_function("1000 of 10000 name by name", |b| {
        b.iter_batched(
            || dp.clone(),
            |mut dp| {
                for n in &names {
                    black_box(dp.remove_policy(n).is_ok());
                }
                dp
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("1000 of 10000 at once", |b| {
        b.iter_batched(
            || dp.clone(),
            |mut dp| {
                black_box(dp.remove_policies(names.iter().map(String::as_str)).len());
                dp
            },
            BatchSize::LargeInput,
        )
    });
    // What srmigd asks on most config pushes: the plan retires nothing.
    g.bench_function("none of 10000", |b| {
        b.iter(|| black_box(dp.remove_policies(std::iter::empty()).len()))
    });
    g.finish();
}

criterion_group!(benches, behaviors, lpm, policy_removal);
criterion_main!(benches);
