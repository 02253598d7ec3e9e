//! The replay file (`srmig replay --config`), which is also srmigd's node.toml: the text is
//! parsed by both programs' entry points (`srmig_replay::ReplayConfig::parse` and
//! `srmig_hostd::config::parse_daemon`, both over `srmig_dataplane::node_file`), and what
//! parses is replayed (no input captures, so every `[[events]]` entry is applied at the end).
//! Invariants:
//!
//! - nothing panics, whatever the text or the numbers in it (issue 10: `at_ms = 1e300`);
//! - srmigd and the replay accept the same files and refuse the others with the same message;
//! - an accepted event time is finite and in `0..=MAX_AT_MS`;
//! - a replay of an accepted file that the engine accepts completes, with one record per event.
//!
//! Two kinds of input. Text (valid UTF-8) is the file itself. An input starting with `0xff` is
//! `[[events]]` appended to `examples/migration/dest.toml` (which has a VM `vm1`): every
//! following 11 bytes are one event, `[kind, vm, state, value (8 bytes)]`, where `kind % 5`
//! picks `after_packet` (the value as an i64), `at_ms` as a float (the value's f64 bits: NaN,
//! infinities, 1e300, negatives, subnormals), `at_ms` as an integer, both fields, or neither.
//! Numbers are written as TOML writes them, so the parser sees every float TOML can spell.
#![no_main]

use std::fmt::Write as _;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use srmig_dataplane::node_file::{EventTime, MAX_AT_MS};
use srmig_hostd::config::parse_daemon;
use srmig_replay::{replay, ReplayConfig};

/// The base of the event inputs: a replay example with a VM named `vm1`.
const BASE: &str = include_str!("../../examples/migration/dest.toml");

/// Largest End.SBUF storage built per input (the engine preallocates what the file asks for).
const MAX_BUFFER_BYTES: u64 = 64 << 20;

const VMS: [&str; 3] = ["vm1", "vm2", ""];
const STATES: [&str; 4] = ["running", "paused", "absent", "sleeping"];

/// A float as TOML spells it.
fn toml_float(x: f64) -> String {
    if x.is_nan() {
        "nan".to_owned()
    } else if x.is_infinite() {
        if x > 0.0 { "inf" } else { "-inf" }.to_owned()
    } else {
        // `{:?}` always has a `.` or an exponent: a TOML float.
        format!("{x:?}")
    }
}

/// `BASE` plus the events the bytes describe.
fn events_file(data: &[u8]) -> String {
    let mut text = BASE.to_owned();
    for e in data.chunks_exact(11) {
        let value: [u8; 8] = e[3..11].try_into().expect("8 bytes");
        let int = i64::from_le_bytes(value);
        let float = f64::from_le_bytes(value);
        let time = match e[0] % 5 {
            0 => format!("after_packet = {int}"),
            1 => format!("at_ms = {}", toml_float(float)),
            2 => format!("at_ms = {int}"),
            3 => format!("after_packet = {}\nat_ms = {}", int, toml_float(float)),
            _ => String::new(),
        };
        let _ = write!(
            text,
            "\n[[events]]\n{time}\nvm = \"{}\"\nstate = \"{}\"\n",
            VMS[usize::from(e[1]) % VMS.len()],
            STATES[usize::from(e[2]) % STATES.len()],
        );
    }
    text
}

/// Removed at exit (and if an earlier run left one behind).
fn out_dir() -> &'static Path {
    srmig_fuzz::scratch_dir("srmig-fuzz-replay")
}

fn check(text: &str) {
    let replay_cfg = ReplayConfig::parse(text);
    let daemon = parse_daemon(text, Path::new("node.toml"));
    match (&replay_cfg, &daemon) {
        (Ok(_), Ok(_)) => {}
        (Err(r), Err(d)) => {
            let d = std::error::Error::source(d).map(ToString::to_string);
            assert_eq!(
                Some(r.to_string()),
                d,
                "srmigd and replay refuse differently"
            );
        }
        (r, d) => panic!(
            "srmigd and replay disagree: replay {:?}, srmigd {:?}",
            r.as_ref().err().map(ToString::to_string),
            d.as_ref().err().map(ToString::to_string)
        ),
    }
    let Ok(cfg) = replay_cfg else {
        return;
    };
    for e in &cfg.events {
        if let EventTime::AtMs(ms) = e.time {
            assert!(
                ms.is_finite() && (0.0..=MAX_AT_MS).contains(&ms),
                "accepted at_ms {ms}"
            );
        }
    }
    let b = &cfg.node.buffer;
    let storage = b
        .global_bytes
        .saturating_add(u64::from(b.global_packets) * 512)
        .saturating_add(
            u64::from(b.per_vm_packets)
                .saturating_mul(16)
                .saturating_mul(cfg.node.vms.len() as u64),
        );
    if storage > MAX_BUFFER_BYTES {
        return;
    }
    match replay(&cfg, &[], out_dir()) {
        Ok(summary) => assert_eq!(summary.events.len(), cfg.events.len()),
        // The engine refuses the node config: an error, not a panic.
        Err(srmig_replay::ReplayError::Config(_)) => {}
        Err(e) => panic!("a replay without captures failed: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((0xff, events)) => check(&events_file(events)),
        _ => {
            if let Ok(text) = std::str::from_utf8(data) {
                check(text);
            }
        }
    }
});
