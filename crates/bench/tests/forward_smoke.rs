//! `srmig bench forward` end to end, as a smoke test (root): one case, one short repetition,
//! both DUTs (srmigd next to the test binary, as `cargo test --workspace` builds it).
//!
//! Checks that the report has every documented field with finite positive numbers, that the
//! XDP fast path forwarded frames (End at 194 bytes, then IPv6 at 9000 bytes: multi-buffer
//! frames beside AF_PACKET sockets), and that no namespace of the run is left afterwards. No
//! performance assertion.

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
    // The End case compares with Linux's seg6local; on a kernel without SRv6 routes srmigd is
    // measured alone (loudly: the reference is absent, not srmig's prerequisite) and the
    // report must say why Linux's figures are missing.
    let no_srv6 = srmig_lab::kernel::missing_srv6_lwtunnel();
    if let Some(why) = &no_srv6 {
        let _ = std::io::Write::write_fmt(
            &mut std::io::stderr(),
            format_args!("\n!!!!!!!! SKIPPED (kernel): Linux on the End case: {why} !!!!!!!!\n"),
        );
    }
    end_case(&options, no_srv6.as_deref());
    jumbo_case(&options);
}

/// End at 194 bytes, srmigd beside Linux's seg6local (or alone, `no_srv6` saying why): the
/// report's fields, the fast path.
fn end_case(options: &Options, no_srv6: Option<&str>) {
    let options = options.clone();
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
    let linux_keys = ["linux_mpps", "ratio", "linux_offered_mpps"];
    let mut keys = vec!["srmigd_mpps", "srmigd_offered_mpps"];
    match no_srv6 {
        None => keys.extend(linux_keys),
        Some(why) => {
            for key in linux_keys {
                assert!(end[key].is_null(), "cases.end.{key} without SRv6: {json:#}");
            }
            assert_eq!(end["linux_skipped"], why, "{json:#}");
            assert!(
                json["warnings"].as_array().is_some_and(|w| w
                    .iter()
                    .any(|w| w.as_str().is_some_and(|w| w.contains(why)))),
                "{json:#}"
            );
        }
    }
    for key in keys {
        let v = end[key].as_f64().unwrap_or(f64::NAN);
        assert!(
            v.is_finite() && v > 0.0,
            "cases.end.{key} = {}: {json:#}",
            end[key]
        );
    }
    // A zero-loss rate is a measurement on a shared machine (no timed assertion): 0 is what
    // the report says when no trial of the search was lossless.
    let zero_loss_keys: &[&str] = match no_srv6 {
        None => &["srmigd_zero_loss_mpps", "linux_zero_loss_mpps"],
        Some(_) => &["srmigd_zero_loss_mpps"],
    };
    for key in zero_loss_keys {
        let v = end[key].as_f64().unwrap_or(f64::NAN);
        assert!(
            v.is_finite() && v >= 0.0,
            "cases.end.{key} = {}: {json:#}",
            end[key]
        );
    }
    let spreads: &[&str] = match no_srv6 {
        None => &["srmigd_mpps_min_median_max", "linux_mpps_min_median_max"],
        Some(_) => &["srmigd_mpps_min_median_max"],
    };
    for key in spreads {
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
    // The XDP fast path is on by default and forwarded End frames itself.
    assert_eq!(json["fast_path"], true, "{json:#}");
    assert_eq!(end["srmigd_fast_path"], true, "{json:#}");
    let fast = end["srmigd_fast_path_frames"].as_u64().unwrap_or(0);
    assert!(
        fast > 1000,
        "the fast path forwarded {fast} frames: {json:#}"
    );
    let prefix = report.netns_prefix.clone();
    assert!(!prefix.is_empty());
    let left = srmig_lab::list_namespaces_with_prefix(&prefix).expect("ip netns list");
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}

/// Jumbo frames: d0 and d1 on AF_PACKET (MTU 9050), the fast path's program attached beside
/// them (generic mode on a veth), and forwarding them.
fn jumbo_case(options: &Options) {
    let options = Options {
        cases: vec![Case::Ipv6],
        frame_bytes: 9000,
        linux_zero_loss: false,
        ..options.clone()
    };
    let mut log = Vec::new();
    let report = forward::run(&options, &mut |l| log.push(l.to_owned())).unwrap_or_else(|e| {
        panic!(
            "jumbo bench failed: {}\nprogress:\n{}",
            srmig_lab::orchestrate::error_chain(&e),
            log.join("\n")
        )
    });
    let json = serde_json::to_value(&report).expect("serialises");
    let ipv6 = &json["cases"]["ipv6"];
    assert_eq!(ipv6["frame_bytes"], 9000, "{json:#}");
    assert!(
        ipv6["srmigd_gbps"].as_f64().is_some_and(|g| g > 0.0),
        "{json:#}"
    );
    assert_eq!(ipv6["srmigd_fast_path"], true, "{json:#}");
    let fast = ipv6["srmigd_fast_path_frames"].as_u64().unwrap_or(0);
    assert!(
        fast > 100,
        "the fast path forwarded {fast} jumbo frames: {json:#}"
    );
    // On a veth, srmigd runs the program beside AF_PACKET in generic mode
    // (srmig_hostd::port::fastpath::FastAttachment::attach): d0 has no NAPI, and its receive
    // work goes where rps_cpus sends it, as for the kernel.
    assert_eq!(json["srmigd_receive"], "rps", "{json:#}");
}
