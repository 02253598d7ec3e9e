//! Structure-aware fuzzing of the dataplane: sequences of operations on a world of hosts S, D
//! and C (frames built valid for the host, port and VM they target, then mutated; VM state
//! changes and switchovers; runtime install and removal of SIDs, policies, mappings and port
//! MTUs; time; `discard_buffer`; `poll_transmit`), with the engine's counters and every
//! End.SBUF buffer checked against a model after every operation.
//!
//! Input: `srmig_fuzz::dataplane_ops::ops::Op` values decoded with `arbitrary` until the input
//! ends. The world is reused between inputs (`Harness::run_reused`). The world, its invariants and the underlay that carries frames between hosts are
//! documented in `fuzz/src/dataplane_ops/`. Seeds: `fuzz/corpus/dataplane_ops/seed-*`, written
//! by `cargo run --example dataplane_ops_seeds` (in `fuzz/`).
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use srmig_fuzz::dataplane_ops::Harness;

thread_local! {
    // Reused between inputs (reset, or rebuilt per host when its tables changed): building
    // the three engines costs more than most inputs.
    static WORLD: RefCell<Harness> = RefCell::new(Harness::new());
}

fuzz_target!(|data: &[u8]| {
    WORLD.with(|w| w.borrow_mut().run_reused(data));
});
