//! `srmig bench forward` end to end, as a smoke test (root): one case, one short repetition,
//! both DUTs (srmigd next to the test binary, as `cargo test --workspace` builds it).
//!
//! Checks that the report has every documented field with finite positive numbers, and that
//! no namespace of the run is left afterwards. No performance assertion.

mod common;

use std::time::Duration;

use srmig_bench::forward::{self, Case, Options};

#[test]
fn bench_forward_end_smoke() {
    let srmigd = forward::default_srmigd();
    let missing = common::missing_root("network namespaces, veth pairs, AF_PACKET").or_else(|| {
        (!srmigd.is_file()).then(|| {
            format!(
                "srmigd not built at {} (cargo build -p srmig-hostd)",
                srmigd.display()
            )
        })
    });
    if common::skip("bench_forward_end_smoke", missing) {
        return;
    }
    let options = Options {
        cases: vec![Case::End],
        reps: 1,
        duration: Duration::from_millis(300),
        srmigd: Some(srmigd),
        ..Options::default()
    };
    let mut log = Vec::new();
    let report = forward::run(&options, &mut |l| log.push(l.to_owned())).unwrap_or_else(|e| {
        panic!(
            "bench failed: {}\nprogress:\n{}",
            srmig_lab::orchestrate::error_chain(&e),
            log.join("\n")
        )
    });
    let json = serde_json::to_value(&report).expect("serialises");
    let end = &json["cases"]["end"];
    for key in [
        "srmigd_mpps",
        "linux_mpps",
        "ratio",
        "srmigd_zero_loss_mpps",
        "linux_zero_loss_mpps",
        "srmigd_offered_mpps",
        "linux_offered_mpps",
    ] {
        let v = end[key].as_f64().unwrap_or(f64::NAN);
        assert!(
            v.is_finite() && v > 0.0,
            "cases.end.{key} = {}: {json:#}",
            end[key]
        );
    }
    for key in ["srmigd_mpps_min_median_max", "linux_mpps_min_median_max"] {
        let v = end[key].as_array().expect(key);
        assert_eq!(v.len(), 3, "{key}");
    }
    assert!(end.get("srmigd_gbps").is_none(), "no Gb/s for small frames");
    let ceiling = json["generator_ceiling_mpps"].as_f64().unwrap_or(f64::NAN);
    assert!(ceiling.is_finite() && ceiling > 0.0, "{json:#}");
    assert_eq!(json["frame_bytes"], forward::MIN_FRAME_BYTES);
    assert_eq!(json["cases"]["end"]["frame_bytes"], 194);
    assert_eq!(json["workers"], 1);
    assert_eq!(json["flows"], 1);
    assert!(json["kernel"].as_str().is_some_and(|k| !k.is_empty()));
    assert!(json["cpu"]["generator"].is_u64() && json["cpu"]["dut"].is_u64());
    // `auto` puts the bench's veths (uplinks) on AF_XDP, and d0's NAPI on the DUT CPU.
    assert_eq!(json["srmigd_receive"], "napi-thread", "{json:#}");
    let prefix = report.netns_prefix.clone();
    assert!(!prefix.is_empty());
    let left = srmig_lab::list_namespaces_with_prefix(&prefix).expect("ip netns list");
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}
