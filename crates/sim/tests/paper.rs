//! `srmig sim paper --seed 1`: a golden snapshot of the table (regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p srmig-sim --test paper`), and the paper's qualitative
//! result checked on the reports, with the OVN-like baseline beside it.

use srmig_lab::report::Strategy;
use srmig_sim::paper::{self, Configuration, PaperParams};

#[test]
fn sim_paper_seed_1_matches_its_golden_table_and_the_paper() {
    let p = PaperParams {
        seed: 1,
        migrations: 2,
        // 100 Mb/s keeps the TCP workload's segments few enough for a debug build.
        tcp_mbps: 100.0,
        ..PaperParams::default()
    };
    let runs = paper::run(&p).expect("runs");
    let rows: Vec<_> = runs.iter().map(|(s, _, r)| (s.name(), r)).collect();
    let table = srmig_lab::paper::paper_table(&rows);
    let golden = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/paper-seed1.txt");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(golden, &table).expect("write golden");
    }
    let want = std::fs::read_to_string(golden).expect("golden file");
    assert_eq!(
        table, want,
        "sim paper --seed 1 changed; if intended, UPDATE_GOLDEN=1"
    );

    let by = |s: Strategy| {
        runs.iter()
            .find(|(x, _, _)| *x == Configuration::Paper(s))
            .and_then(|(_, _, r)| r.probe.clone())
            .expect("probe report")
    };
    // No migration and SR buffering lose nothing; traditional and SR dropping lose about a
    // pause's worth of probes per migration, traditional more (the mapping update).
    assert_eq!(by(Strategy::None).lost, 0);
    assert_eq!(by(Strategy::SrBuffer).lost, 0);
    let drop = by(Strategy::SrDrop).lost;
    let trad = by(Strategy::Traditional).lost;
    assert!((2 * 150..=2 * 200).contains(&drop), "SR drop lost {drop}");
    assert!(trad > drop, "traditional lost {trad}, SR drop {drop}");
    let buffered = by(Strategy::SrBuffer);
    assert!(buffered.max_extra_delay_ms > 150.0 && buffered.max_extra_delay_ms < 200.0);
    assert_eq!(buffered.reordered, 0);
    assert_eq!(buffered.duplicated, 0);
    // OVN-like (cloned to both chassis, the destination's activated 1 ms after the resume)
    // loses the pause like SR dropping, not traditional's mapping update, and never delivers
    // a probe twice.
    let ovn = runs
        .iter()
        .find(|(x, _, _)| *x == Configuration::OvnLike)
        .and_then(|(_, _, r)| r.probe.clone())
        .expect("OVN-like probe report");
    assert!(
        ovn.lost.abs_diff(drop) * 10 <= drop && ovn.lost < trad,
        "OVN-like lost {}, SR drop {drop}, traditional {trad}",
        ovn.lost
    );
    assert_eq!(ovn.duplicated, 0);
    // TCP: traditional and SR dropping stall into retransmission timeouts; SR buffering
    // does not time out (the pause is shorter than the 200 ms minimum RTO).
    let tcp = |s: Strategy| {
        runs.iter()
            .find(|(x, _, _)| *x == Configuration::Paper(s))
            .and_then(|(_, _, r)| r.tcp.clone())
            .expect("tcp report")
    };
    assert!(tcp(Strategy::Traditional).rto_seen);
    assert!(tcp(Strategy::SrDrop).rto_seen);
    assert!(!tcp(Strategy::SrBuffer).rto_seen);
    assert_eq!(tcp(Strategy::None).retransmits, 0);
}
