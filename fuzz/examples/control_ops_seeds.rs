//! Writes the seed corpus of the `control_ops` fuzz target to `corpus/control_ops/seed-*`
//! (run from `fuzz/`: `cargo run --example control_ops_seeds`): the proptest test's scripted
//! SR migration (each strategy, several notification orders), its recorded regressions
//! (`operation_sequences.proptest-regressions`), and runs that end failed, cancelled, on a
//! hypervisor timeout, after lost acks and with two migrations at once. Every seed is checked
//! to decode back to the operations it was written from, to pass the invariants and to end
//! the way its name says.

use srmig_api::MigrationOutcome;
use srmig_fuzz::control_ops::{decode, encode, run_ops, FuzzOp};

use FuzzOp::{Advance, Cancel, Deliver, HypFail, HypNotify, HypStep, Request};

const fn ms(ms: u16) -> FuzzOp {
    // `Advance { ms }` waits 1 + ms % 1200 ms.
    Advance { ms: ms - 1 }
}

const fn ack(host: u8) -> FuzzOp {
    Deliver {
        host,
        lose_ack: false,
    }
}

/// Every host applies its next config, acknowledged.
fn round() -> Vec<FuzzOp> {
    (0..4).map(ack).collect()
}

/// The test's scripted migration of vm1 to h3: two config rounds, then the hypervisor.
fn scripted(strategy: u8, order: u8) -> Vec<FuzzOp> {
    let mut ops = vec![Request {
        vm: 1,
        to: 3,
        strategy,
    }];
    ops.extend(round());
    ops.extend(round());
    for _ in 0..3 {
        ops.push(HypStep { vm: 1, order });
        ops.push(HypNotify { vm: 1 });
    }
    ops.push(HypNotify { vm: 1 });
    ops.push(HypNotify { vm: 1 });
    ops
}

type Expect = &'static [&'static str];

fn seeds() -> Vec<(&'static str, Vec<FuzzOp>, Expect)> {
    let mut lost = vec![Request {
        vm: 0,
        to: 2,
        strategy: 2,
    }];
    lost.extend((0..4).map(|host| Deliver {
        host,
        lose_ack: true,
    }));
    lost.push(ms(150));
    lost.extend(round());
    lost.extend(round());
    lost.extend([HypStep { vm: 0, order: 1 }, HypNotify { vm: 0 }, ms(120)]);

    let mut cancel = vec![Request {
        vm: 2,
        to: 0,
        strategy: 2,
    }];
    cancel.extend(round());
    cancel.extend(round());
    cancel.extend([
        HypStep { vm: 2, order: 0 },
        HypNotify { vm: 2 },
        Cancel { vm: 2 },
    ]);
    cancel.extend(round());

    let mut fail = vec![Request {
        vm: 1,
        to: 0,
        strategy: 1,
    }];
    fail.extend(round());
    fail.extend(round());
    fail.extend([
        HypStep { vm: 1, order: 0 },
        HypNotify { vm: 1 },
        HypFail { vm: 1 },
        HypNotify { vm: 1 },
    ]);
    fail.extend(round());

    let mut timeout = vec![Request {
        vm: 0,
        to: 1,
        strategy: 2,
    }];
    timeout.extend(round());
    timeout.extend(round());
    timeout.extend([ms(1000), ms(60)]);

    let mut two = vec![
        Request {
            vm: 0,
            to: 3,
            strategy: 2,
        },
        Request {
            vm: 2,
            to: 1,
            strategy: 1,
        },
    ];
    for _ in 0..3 {
        two.extend(round());
    }
    for order in [4, 5, 4] {
        two.extend([
            HypStep { vm: 0, order },
            HypStep { vm: 2, order },
            HypNotify { vm: 0 },
            HypNotify { vm: 2 },
        ]);
    }
    two.extend(round());

    vec![
        ("sr-buffer-order0", scripted(2, 0), &["completed"][..]),
        ("sr-buffer-order3", scripted(2, 3), &["completed"]),
        ("sr-drop-order5", scripted(1, 5), &["completed"]),
        ("traditional-order2", scripted(0, 2), &["completed"]),
        ("lost-acks-then-ack-timeout", lost, &["failed"]),
        ("cancel-paused", cancel, &["cancelled"]),
        ("hypervisor-fails", fail, &["failed"]),
        ("hypervisor-timeout", timeout, &["failed"]),
        ("two-migrations", two, &["completed", "completed"]),
        // operation_sequences.proptest-regressions, in order.
        (
            "regression-1",
            vec![
                Request {
                    vm: 2,
                    to: 3,
                    strategy: 1,
                },
                ms(100),
                ack(2),
                ack(3),
                Cancel { vm: 2 },
            ],
            &[],
        ),
        (
            "regression-2",
            vec![
                Request {
                    vm: 2,
                    to: 2,
                    strategy: 0,
                },
                Request {
                    vm: 0,
                    to: 3,
                    strategy: 0,
                },
                Request {
                    vm: 1,
                    to: 0,
                    strategy: 1,
                },
                ack(0),
                ack(1),
                Request {
                    vm: 0,
                    to: 0,
                    strategy: 0,
                },
                ack(1),
                Request {
                    vm: 0,
                    to: 0,
                    strategy: 0,
                },
                ack(3),
                ack(0),
                ack(3),
                ack(2),
                HypStep { vm: 1, order: 0 },
                HypStep { vm: 1, order: 116 },
                Request {
                    vm: 1,
                    to: 0,
                    strategy: 0,
                },
                ms(1000),
            ],
            &[],
        ),
        (
            "regression-3",
            vec![
                Request {
                    vm: 2,
                    to: 0,
                    strategy: 0,
                },
                HypStep { vm: 2, order: 0 },
                HypNotify { vm: 2 },
                HypStep { vm: 2, order: 104 },
                HypNotify { vm: 2 },
                ms(1000),
            ],
            &[],
        ),
    ]
}

fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/control_ops");
    std::fs::create_dir_all(&dir).expect("create the corpus directory");
    for (name, ops, expect) in seeds() {
        let bytes = encode(&ops);
        assert_eq!(decode(&bytes), ops, "seed {name} does not decode back");
        let w = run_ops(&ops).unwrap_or_else(|e| panic!("seed {name}: {e}"));
        let outcomes: Vec<&str> = w
            .finished
            .iter()
            .map(|(_, o)| match o {
                MigrationOutcome::Completed => "completed",
                MigrationOutcome::Failed(r) => {
                    eprintln!("{name}: failed: {r}");
                    "failed"
                }
                MigrationOutcome::Cancelled => "cancelled",
            })
            .collect();
        if !expect.is_empty() {
            assert_eq!(outcomes, expect, "seed {name} ends otherwise");
        }
        let path = dir.join(format!("seed-{name}"));
        std::fs::write(&path, &bytes).expect("write a seed");
        println!(
            "{} ({} operations, {} bytes): {outcomes:?}",
            path.display(),
            ops.len(),
            bytes.len()
        );
    }
}
