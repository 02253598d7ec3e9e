//! Deterministic driver for instruction counting (not a timing bench).
//!
//! Runs every bench scenario (or those whose name equals the filter) for exactly `N` batches.
//! Under `valgrind --tool=callgrind`, the difference of the total instruction counts of two runs
//! with different `N` divided by the extra packets is the instruction count per packet, free
//! of setup costs:
//!
//! ```text
//! cargo bench -p srmig-dataplane --features testkit --bench ir --no-run
//! valgrind --tool=callgrind target/release/deps/ir-* 10  "H.Encaps"
//! valgrind --tool=callgrind target/release/deps/ir-* 110 "H.Encaps"
//! ```
//!
//! `docs/perf.md` shows the loop used for its tables.
#![allow(clippy::print_stdout)] // a command-line driver: its output is the point

use srmig_dataplane::testkit::bench_scenarios;
use srmig_dataplane::{Batch, Instant, PacketBuf};

const BATCH: usize = 256;

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let filter = args.next();
    let mut batch = Batch::new(BATCH);
    let mut out = PacketBuf::new();
    for mut sc in bench_scenarios() {
        if filter.as_deref().is_some_and(|f| f != sc.name) {
            continue;
        }
        let mut ok = 0usize;
        for i in 0..n {
            ok += sc.run(Instant(i as u64 * 1000), &mut batch, &mut out);
        }
        assert_eq!(ok, n * BATCH, "{}: unexpected verdicts", sc.name);
        println!("{}: {} packets", sc.name, n * BATCH);
    }
}
