//! Smoke test of `srmig bench control` (no timed assertion): 20 hosts, 2 migrations one after
//! another and one batch of 2 concurrent ones, with the embedded store and with a real etcd
//! (Debian's `etcd-server`, started by the bench on loopback ports and removed after). Without
//! `etcd` on the PATH the etcd half is skipped loudly, and fails when `CI` is set.

use srmig_bench::control::{run, ControlReport, Options, StoreKind};

fn smoke(store: StoreKind) -> ControlReport {
    let options = Options {
        hosts: 20,
        store,
        migrations: 2,
        concurrent: 2,
        batches: 1,
        ..Options::default()
    };
    let report = run(&options, &mut |line| eprintln!("# {line}")).expect("bench control runs");
    assert_eq!(report.hosts, 20);
    assert_eq!(report.store, store.as_str());
    let s = &report.sequential;
    assert_eq!(s.migrations, 2);
    // The SR path is armed before the commit, on every host: endpoint acks from S and D, then
    // the path on all 20, the commit on all 20, the cleanup on S and D.
    assert!(s.armed_ms.max <= s.committed_ms.max, "{report:?}");
    assert!(s.endpoint_acks_ms.p50 <= s.armed_ms.p50, "{report:?}");
    assert!(s.config_pushes_per_migration >= 44.0, "{report:?}");
    assert_eq!(s.configs_refused, 0);
    assert_eq!(s.failed, 0, "{:?}", s.failures);
    let c = report.concurrent.as_ref().expect("a concurrent batch");
    assert_eq!(c.migrations, 2);
    assert_eq!(report.push_failures, Some(0));
    let json = serde_json::to_value(&report).expect("json");
    for key in ["armed_ms", "committed_ms"] {
        for p in ["p50", "p99", "max"] {
            assert!(json[key][p].is_number(), "{key}.{p} in {json}");
        }
    }
    report
}

#[test]
fn embedded_store() {
    let r = smoke(StoreKind::Embedded);
    assert_eq!(r.sequential.etcd_requests_per_migration, None);
}

fn etcd_on_path() -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("etcd").is_file()));
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set: etcd (Debian package etcd-server) must be installed"
        );
        eprintln!("SKIPPED: etcd not found (apt-get install etcd-server)");
    }
    found
}

#[test]
fn etcd_store() {
    if !etcd_on_path() {
        return;
    }
    let r = smoke(StoreKind::Etcd);
    let per = r
        .sequential
        .etcd_requests_per_migration
        .expect("etcd requests counted");
    assert!(per >= 1.0, "{r:?}");
    assert!(r.etcd_rss_mb.is_some());
}
