//! The control core's operation sequences (`crates/control/tests/operation_sequences.rs`) as a
//! fuzz target: migration requests, config deliveries with lost acks, hypervisor progress,
//! notification orders, failures, cancels and virtual time on the real sans-IO `Controller`,
//! with the test's routing invariants asserted after every operation and after settling (a
//! violation panics).
//!
//! Input: `srmig_fuzz::control_ops::FuzzOp` values decoded with `arbitrary` until the input
//! ends, at most 64 (`fuzz/src/control_ops.rs` documents the format and the mapping onto the
//! test's operations). Seeds: `fuzz/corpus/control_ops/seed-*`, written by
//! `cargo run --example control_ops_seeds` (in `fuzz/`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    srmig_fuzz::control_ops::run(data);
});
