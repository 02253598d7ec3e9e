//! `srmig bench dataplane`: million packets per second per behavior on one core;
//! [`forward`], `srmig bench forward`: forwarding through veth, srmigd beside the Linux kernel;
//! and [`control`], `srmig bench control`: the controller arming and committing migrations on
//! N hosts (real agents, embedded store or etcd).
//!
//! # `srmig bench dataplane`
//!
//! Each behavior runs the dataplane's own bench scenario (`srmig_dataplane::testkit`): a batch
//! of [`BATCH`] copies of a realistic frame (about 100-byte inner packets) is refilled and
//! processed again and again for a fixed time. Refilling the batch (one `memcpy` per packet, as
//! a driver's receive would) is inside the measured time. A scenario whose packets do not all
//! get the expected verdict is an error, so a drop path can never be measured by accident.
//! `End.SBUF release` measures a full cycle per packet: held while the VM is absent, then
//! released through `poll_transmit` when it runs.
//!
//! This reads the clock (it is a benchmark driver, not a core crate). Use a release build.
//!
//! `unsafe` is denied except in `forward/generator.rs` (the AF_PACKET socket and `sendmmsg`).
#![deny(unsafe_code)]

pub mod control;
pub mod forward;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use srmig_dataplane::testkit::bench_scenarios;
use srmig_dataplane::{Batch, PacketBuf};

/// Packets per batch.
pub const BATCH: usize = 256;

/// Result for one behavior.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BehaviorResult {
    /// Million packets per second.
    pub mpps: f64,
    /// Nanoseconds per packet.
    pub ns_per_packet: f64,
}

/// The whole report; serialises as `{"behaviors": {"End.S deliver": {...}, ...}, ...}`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub behaviors: BTreeMap<&'static str, BehaviorResult>,
    pub batch_size: usize,
    pub frame_bytes: BTreeMap<&'static str, usize>,
    pub measure_ms_per_behavior: u64,
    /// `false` for a debug build, whose numbers mean nothing.
    pub optimized: bool,
}

/// A scenario did not do what it should.
#[derive(Debug, thiserror::Error)]
#[error("bench scenario {name}: only {ok} of {expected} packets got the expected verdict; refusing to measure a different path")]
pub struct BenchError {
    pub name: &'static str,
    pub ok: usize,
    pub expected: usize,
}

/// Runs every scenario (or those whose name contains `filter`) for `measure` each, after a
/// short warm-up, taking the best of three rounds.
pub fn run_dataplane(measure: Duration, filter: Option<&str>) -> Result<Report, BenchError> {
    let mut batch = Batch::new(BATCH);
    let mut out = PacketBuf::new();
    let mut behaviors = BTreeMap::new();
    let mut frame_bytes = BTreeMap::new();
    let epoch = Instant::now();
    for mut sc in bench_scenarios() {
        if filter.is_some_and(|f| !sc.name.contains(f)) {
            continue;
        }
        frame_bytes.insert(sc.name, sc.frame.len());
        let now = |e: Instant| srmig_dataplane::Instant(e.elapsed().as_nanos() as u64);
        // Warm-up, and the verdict check.
        let ok = sc.run(now(epoch), &mut batch, &mut out);
        if ok != BATCH {
            return Err(BenchError {
                name: sc.name,
                ok,
                expected: BATCH,
            });
        }
        let warm_until = Instant::now() + measure / 5;
        while Instant::now() < warm_until {
            sc.run(now(epoch), &mut batch, &mut out);
        }
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            let start = Instant::now();
            let mut packets = 0u64;
            let mut bad = 0usize;
            while start.elapsed() < measure / 3 {
                // Several batches between clock reads keep the clock out of the measurement.
                for _ in 0..16 {
                    let ok = sc.run(now(epoch), &mut batch, &mut out);
                    bad += BATCH - ok.min(BATCH);
                    packets += BATCH as u64;
                }
            }
            if bad > 0 {
                return Err(BenchError {
                    name: sc.name,
                    ok: BATCH - bad.min(BATCH),
                    expected: BATCH,
                });
            }
            let ns = start.elapsed().as_nanos() as f64 / packets as f64;
            best = best.min(ns);
        }
        behaviors.insert(
            sc.name,
            BehaviorResult {
                mpps: round2(1000.0 / best),
                ns_per_packet: round2(best),
            },
        );
    }
    Ok(Report {
        behaviors,
        batch_size: BATCH,
        frame_bytes,
        measure_ms_per_behavior: measure.as_millis() as u64,
        optimized: !cfg!(debug_assertions),
    })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_runs_its_intended_path() {
        let report = run_dataplane(Duration::from_millis(15), None).expect("scenarios valid");
        for name in [
            "End",
            "End.X",
            "End.DX6",
            "End.DT6",
            "End.S deliver",
            "End.S forward",
            "End.SBUF deliver",
            "End.SBUF hold",
            "End.SBUF release",
            "H.Encaps",
            "H.Encaps.Red",
            "H.Insert",
        ] {
            let r = report
                .behaviors
                .get(name)
                .unwrap_or_else(|| panic!("{name} missing"));
            assert!(r.mpps > 0.0 && r.ns_per_packet > 0.0, "{name}: {r:?}");
        }
    }
}
