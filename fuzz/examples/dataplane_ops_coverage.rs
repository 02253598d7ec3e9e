//! Replays inputs of the `dataplane_ops` fuzz target (files, or every file of directories;
//! default `corpus/dataplane_ops`) through the harness with statistics and prints, per
//! behavior, headend, drop reason and End.SBUF / End.S path, how many inputs reach it.
//! Exits with status 1 if a behavior, a headend or an End.SBUF path is not reached.
//!
//! `--trace` first prints every operation and verdict to stderr.
//!
//! `scripts/fuzz-coverage.sh` runs it (`cargo run --example dataplane_ops_coverage`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use srmig_dataplane::{Behavior, DropReason, Flavor, SbufMode, BEHAVIORS};
use srmig_fuzz::dataplane_ops::{world, Harness, PATHS};

/// Why a drop reason cannot be reached by this harness, and where it is reached instead (the
/// rest are reachable; the report lists those its inputs did not reach).
fn unreachable_because(r: DropReason) -> Option<&'static str> {
    Some(match r {
        DropReason::BufferPacketTooLarge => {
            "a held packet is at most a buffer's capacity minus its Ethernet header, which is the \
             slot size: a defensive check"
        }
        DropReason::LocalSidLoop => {
            "needs six of a host's own SIDs in a row, more than the two segments of a frame here \
             and the short policies it can be steered into reach (unit test \
             a_segment_list_that_stays_on_this_host_is_cut_after_five_local_sids)"
        }
        DropReason::NoHeadroom => {
            "needs two encapsulations in one pass with more than 256 bytes of headers, i.e. a \
             policy whose first segment is an End.B6.Encaps SID of the same host; no policy here \
             starts with one (unit test \
             two_local_encapsulations_that_outgrow_the_headroom_are_dropped)"
        }
        DropReason::TooManyExtensionHeaders => {
            "needs nine chained extension headers; a frame here has at most a routing header and \
             two one-byte mutations (unit tests in chain.rs and engine_tests.rs)"
        }
        _ => return None,
    })
}

fn inputs(args: &[String]) -> Vec<PathBuf> {
    let roots: Vec<PathBuf> = if args.is_empty() {
        vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus/dataplane_ops")]
    } else {
        args.iter().map(PathBuf::from).collect()
    };
    let mut files = Vec::new();
    for r in roots {
        if r.is_dir() {
            let mut d: Vec<PathBuf> = std::fs::read_dir(&r)
                .unwrap_or_else(|e| panic!("{}: {e}", r.display()))
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            d.sort();
            files.extend(d);
        } else {
            files.push(r);
        }
    }
    files
}

/// Names the stats use for every behavior and flavor installed in the world.
fn expected_behaviors() -> Vec<String> {
    let mut names = Vec::new();
    for &h in &world::HOSTS {
        for s in world::config(h).sids {
            let mut n = s.behavior.name().to_owned();
            if !s.flavors.is_empty() {
                let f: Vec<&str> = s.flavors.iter().map(|f: &Flavor| f.name()).collect();
                n = format!("{n} ({})", f.join(", "));
            }
            if s.behavior == Behavior::EndSbuf && s.mode == Some(SbufMode::Drop) {
                n.push_str(" (drop mode)");
            }
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    // Every behavior of the table is installed somewhere.
    for b in BEHAVIORS {
        assert!(
            names.iter().any(|n| n.split(' ').next() == Some(b.name)),
            "{} is not installed in the fuzz world",
            b.name
        );
    }
    names
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let trace = args.first().is_some_and(|a| a == "--trace");
    if trace {
        args.remove(0);
    }
    let files = inputs(&args);
    let mut behaviors: BTreeMap<String, usize> =
        expected_behaviors().into_iter().map(|n| (n, 0)).collect();
    let mut headends: BTreeMap<&str, usize> = ["H.Encaps", "H.Encaps.Red", "H.Insert"]
        .into_iter()
        .map(|n| (n, 0))
        .collect();
    let mut drops: BTreeMap<&str, usize> =
        DropReason::ALL.iter().map(|r| (r.as_str(), 0)).collect();
    let mut paths = vec![0usize; PATHS.len()];
    for f in &files {
        let data = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let mut h = Harness::new().with_stats();
        if trace {
            eprintln!("== {}", f.display());
            h = h.with_trace();
        }
        h.run(&data);
        let s = h.stats().cloned().unwrap_or_default();
        for b in s.behaviors {
            *behaviors.entry(b).or_default() += 1;
        }
        for x in s.headends {
            *headends.entry(x).or_default() += 1;
        }
        for d in s.drops {
            *drops.entry(d).or_default() += 1;
        }
        for p in s.paths {
            paths[p] += 1;
        }
    }
    println!("dataplane_ops coverage: {} inputs", files.len());
    let mut missing = Vec::new();
    println!("\n{:<48} inputs", "behavior (flavors)");
    for (b, n) in &behaviors {
        println!("{b:<48} {n}");
        if *n == 0 {
            missing.push(b.clone());
        }
    }
    println!("\n{:<48} inputs", "headend (VM egress)");
    for (b, n) in &headends {
        println!("{b:<48} {n}");
        if *n == 0 {
            missing.push((*b).to_owned());
        }
    }
    println!("\n{:<48} inputs", "End.SBUF / End.S path");
    for (p, n) in PATHS.iter().zip(&paths) {
        println!("{p:<48} {n}");
        if *n == 0 && p.starts_with("End.SBUF") {
            missing.push((*p).to_owned());
        }
    }
    println!("\n{:<48} inputs", "drop reason");
    let mut unreached = Vec::new();
    for (d, n) in &drops {
        println!("{d:<48} {n}");
        if *n == 0 {
            unreached.push(*d);
        }
    }
    println!("\ndrop reasons not reached ({}):", unreached.len());
    for d in unreached {
        let r = DropReason::ALL.iter().find(|r| r.as_str() == d).copied();
        let why = r
            .and_then(unreachable_because)
            .unwrap_or("not reached by these inputs");
        println!("  {d}: {why}");
    }
    if !missing.is_empty() {
        println!("\nNOT REACHED (must be): {}", missing.join(", "));
        std::process::exit(1);
    }
}
