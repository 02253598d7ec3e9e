//! The `control_ops` fuzz target: the control core's operation-sequence test
//! (`crates/control/tests/operation_sequences.rs`) with libFuzzer choosing the sequence.
//!
//! The world model, its operations and the invariant checker are the test's own
//! ([`model`], `crates/control/tests/ops_model/mod.rs`, included here by path): a real sans-IO
//! `Controller` with 4 hosts and 3 VMs, hosts that apply pushed configs in order (acks may be
//! lost), a hypervisor per migrating VM (progress, notifications in any order, failures),
//! operator cancels and virtual time. The routing invariants are checked after every
//! operation, then the world is left to settle and every accepted migration must finish; a
//! violation panics with the failing check and the operations.
//!
//! Input: [`FuzzOp`] values decoded with `arbitrary` until the input ends or [`MAX_OPS`] are
//! read, each mapped onto the test's [`model::Op`] (VM and host numbers modulo the world's
//! sizes, `Advance` by 1 to 1200 ms). With arbitrary 1.x a [`FuzzOp`] is a little-endian
//! `u32` `x` selecting variant `(x * 7) >> 32`, then its fields in order (`u8` a byte, `u16`
//! little-endian, `bool` `byte & 1`); [`encode`] writes exactly that (for the seed corpus,
//! `cargo run --example control_ops_seeds`).

use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};

#[path = "../../crates/control/tests/ops_model/mod.rs"]
pub mod model;

use model::{Op, HOSTS, VMS};

/// The longest sequence decoded from one input (the rest of the input is ignored).
pub const MAX_OPS: usize = 64;

/// Advances are 1 to `MAX_ADVANCE_MS` ms (the timeouts are 50 ms to 1 s).
pub const MAX_ADVANCE_MS: u64 = 1_200;

/// One operation as the fuzzer writes it; [`FuzzOp::to_op`] maps it into the model's domain.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FuzzOp {
    /// Migrate VM `vm % 3` to host `to % 4` (`strategy % 3`: traditional, SR drop, SR buffer).
    Request { vm: u8, to: u8, strategy: u8 },
    /// Host `host % 4` applies its next queued config; the ack is lost if `lose_ack`.
    Deliver { host: u8, lose_ack: bool },
    /// The hypervisor of VM `vm % 3` makes progress (`order` picks the notification order).
    HypStep { vm: u8, order: u8 },
    /// The hypervisor of VM `vm % 3` delivers its next notification.
    HypNotify { vm: u8 },
    /// The migration of VM `vm % 3` fails on the hypervisor (if it has not moved the VM yet).
    HypFail { vm: u8 },
    /// The operator cancels the migration of VM `vm % 3`.
    Cancel { vm: u8 },
    /// `1 + ms % 1200` ms of virtual time pass.
    Advance { ms: u16 },
}

const VARIANTS: usize = 7;

impl FuzzOp {
    /// The model's operation.
    pub fn to_op(self) -> Op {
        let vm = |v: u8| u16::from(v) % VMS;
        let host = |h: u8| u16::from(h) % HOSTS;
        match self {
            FuzzOp::Request {
                vm: v,
                to,
                strategy,
            } => Op::Request {
                vm: vm(v),
                to: host(to),
                strategy: strategy % 3,
            },
            FuzzOp::Deliver { host: h, lose_ack } => Op::Deliver {
                host: host(h),
                lose_ack,
            },
            FuzzOp::HypStep { vm: v, order } => Op::HypStep { vm: vm(v), order },
            FuzzOp::HypNotify { vm: v } => Op::HypNotify { vm: vm(v) },
            FuzzOp::HypFail { vm: v } => Op::HypFail { vm: vm(v) },
            FuzzOp::Cancel { vm: v } => Op::Cancel { vm: vm(v) },
            FuzzOp::Advance { ms } => Op::Advance {
                ms: 1 + u64::from(ms) % MAX_ADVANCE_MS,
            },
        }
    }

    /// Appends the bytes `arbitrary` decodes as `self`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut variant = |i: usize| {
            // The smallest x with (x * VARIANTS) >> 32 == i.
            let x = ((i as u64) << 32).div_ceil(VARIANTS as u64) as u32;
            out.extend_from_slice(&x.to_le_bytes());
        };
        match *self {
            FuzzOp::Request { vm, to, strategy } => {
                variant(0);
                out.extend_from_slice(&[vm, to, strategy]);
            }
            FuzzOp::Deliver { host, lose_ack } => {
                variant(1);
                out.extend_from_slice(&[host, u8::from(lose_ack)]);
            }
            FuzzOp::HypStep { vm, order } => {
                variant(2);
                out.extend_from_slice(&[vm, order]);
            }
            FuzzOp::HypNotify { vm } => {
                variant(3);
                out.push(vm);
            }
            FuzzOp::HypFail { vm } => {
                variant(4);
                out.push(vm);
            }
            FuzzOp::Cancel { vm } => {
                variant(5);
                out.push(vm);
            }
            FuzzOp::Advance { ms } => {
                variant(6);
                out.extend_from_slice(&ms.to_le_bytes());
            }
        }
    }
}

/// Decodes `data` into at most [`MAX_OPS`] operations (what the fuzz target runs).
pub fn decode(data: &[u8]) -> Vec<FuzzOp> {
    let mut u = Unstructured::new(data);
    let mut ops = Vec::new();
    while !u.is_empty() && ops.len() < MAX_OPS {
        match FuzzOp::arbitrary(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    ops
}

/// Encodes `ops` as the bytes [`decode`] turns back into them.
pub fn encode(ops: &[FuzzOp]) -> Vec<u8> {
    let mut out = Vec::new();
    for op in ops {
        op.encode(&mut out);
    }
    out
}

/// Runs `ops` through the model ([`model::run`]): invariants after every operation, then
/// settling. Returns the world for inspection, or the violated invariant. Every run starts
/// from a copy of one world built (and checked) once, exactly as [`model::World::new`] makes
/// it: building it was a tenth of a run.
pub fn run_ops(ops: &[FuzzOp]) -> Result<model::World, model::Fail> {
    static START: OnceLock<Result<model::World, model::Fail>> = OnceLock::new();
    let ops: Vec<Op> = ops.iter().map(|op| op.to_op()).collect();
    let start = START.get_or_init(model::World::new).clone()?;
    model::run_on(start, &ops)
}

/// The fuzz target's body: decode, run, panic on a violated invariant.
pub fn run(data: &[u8]) {
    let ops = decode(data);
    if let Err(e) = run_ops(&ops) {
        let ops: Vec<Op> = ops.iter().map(|op| op.to_op()).collect();
        panic!("control_ops: invariant violated: {e}\noperations: {ops:?}");
    }
}
