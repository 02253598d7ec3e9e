//! One contract for both store backends: the embedded redb file and a real etcd (Debian's
//! `etcd-server`, started by the test on loopback ports with its own data directory, removed
//! after). Every `contract_*` case runs against both; the etcd-only cases cover what only a
//! shared store has: leadership and fencing, a restarted etcd, an endpoint that does not answer.

#![cfg(feature = "etcd")]

mod common;

use std::time::{Duration, Instant};

use common::etcd::{etcd_binary, EtcdServer};
use srmig_api::{HostId, MigrateRequest, Strategy, Timestamp, VmId, VmInfo};
use srmig_control::{Controller, ControllerConfig};
use srmig_controller::store::{Loaded, SaveStats};
use srmig_controller::store_etcd::Etcd;
use srmig_controller::{EtcdOptions, HostRegistration, Store, StoreError};

fn reg(i: u16) -> HostRegistration {
    let json = format!(
        r#"{{"name":"h{i}","locator":"fc00:{i:x}::/48","sid_end_s":"fc00:{i:x}::e5","sid_end_sbuf":"fc00:{i:x}::eb","sid_dt6":"fc00:{i:x}::d6","underlay":"2001:db8:ff::{i:x}","api_socket":"/tmp/h{i}.sock"}}"#
    );
    serde_json::from_str(&json).expect("registration")
}

fn vm() -> VmInfo {
    serde_json::from_str(
        r#"{"name":"web1","addresses":["2001:db8:a::10","10.1.0.10"],"mac":"52:54:00:00:00:10","host":"h1"}"#,
    )
    .expect("vm")
}

fn controller(hosts: u16) -> (Controller, Vec<HostRegistration>) {
    let mut c = Controller::with_epoch(ControllerConfig::default(), 1_700_000_000_000);
    let hosts: Vec<_> = (1..=hosts).map(reg).collect();
    for h in &hosts {
        c.add_host(h.info.clone()).expect("host");
    }
    c.add_vm(vm()).expect("vm");
    (c, hosts)
}

/// Opens a fresh handle on the same store each time it is called.
type Opener<'a> = &'a mut dyn FnMut() -> (Store, Option<Loaded>);

/// Empty store -> None; a saved state with a migration in flight (its actions not carried
/// out: the crash between write and action) loads back equal, and a controller restored from
/// it carries the migration on (it has actions to perform).
fn contract_round_trip_and_crash_between_write_and_action(open: Opener<'_>) {
    let (mut store, loaded) = open();
    assert!(loaded.is_none(), "a new store holds nothing");
    let (mut c, hosts) = controller(2);
    c.request_migration(
        Timestamp(5),
        MigrateRequest {
            vm: VmId::new("web1").expect("name"),
            to: HostId::new("h2").expect("name"),
            strategy: Strategy::SrBuffer,
        },
    )
    .expect("accepted");
    let snap = c.snapshot();
    let stats = store.save(&hosts, &snap).expect("save");
    assert_eq!(stats.written, 2 + 1 + 1 + 4, "{stats:?}");
    assert_eq!(
        store.save(&hosts, &snap).expect("save"),
        SaveStats::default(),
        "unchanged state writes nothing"
    );
    // The "crash": the actions were never executed; the store handle goes away.
    drop(store);
    let (_store, loaded) = open();
    let loaded = loaded.expect("the saved state");
    assert_eq!(loaded.hosts, hosts);
    // The hosts an acknowledgement wait still awaits are not stored: a restored controller
    // pushes every host again and waits for those pushes.
    let mut expected = snap.clone();
    for m in &mut expected.migrations {
        if let Some(w) = m.wait_mut() {
            assert!(!w.abandon().is_empty(), "the migration awaited hosts");
        }
    }
    assert_eq!(loaded.snapshot, expected);
    let mut restored =
        Controller::restore(Timestamp(10), ControllerConfig::default(), loaded.snapshot);
    assert_eq!(restored.active_migrations(), 1);
    assert!(
        restored.poll_action().is_some(),
        "the restored controller resumes the migration"
    );
}

/// Only changed rows are written; rows of removed items are deleted.
fn contract_writes_only_changes_and_deletes(open: Opener<'_>) {
    let (mut store, _) = open();
    let (c, hosts) = controller(3);
    let mut snap = c.snapshot();
    store.save(&hosts, &snap).expect("save");
    snap.next_id = 9;
    assert_eq!(
        store.save(&hosts, &snap).expect("save"),
        SaveStats {
            written: 1,
            removed: 0
        }
    );
    assert_eq!(
        store.save(&hosts[..2], &snap).expect("save"),
        SaveStats {
            written: 0,
            removed: 1
        }
    );
    drop(store);
    let (_store, loaded) = open();
    let loaded = loaded.expect("state");
    assert_eq!(loaded.hosts.len(), 2);
    assert_eq!(loaded.snapshot.next_id, 9);
}

/// A save larger than one etcd transaction (300 hosts at once) loads back whole.
fn contract_large_save(open: Opener<'_>) {
    let (mut store, _) = open();
    let (c, hosts) = controller(300);
    let snap = c.snapshot();
    let stats = store.save(&hosts, &snap).expect("save");
    assert_eq!(stats.written, 300 + 1 + 4);
    drop(store);
    let (_store, loaded) = open();
    let loaded = loaded.expect("state");
    let mut want = hosts;
    want.sort_by(|a, b| a.info.name.cmp(&b.info.name));
    assert!(loaded.hosts == want, "the hosts differ after loading");
    assert!(
        loaded.snapshot == snap,
        "the snapshot differs after loading"
    );
}

/// One contract case.
type Case = fn(Opener<'_>);

fn contracts() -> Vec<(&'static str, Case)> {
    vec![
        (
            "round trip, crash between write and action",
            contract_round_trip_and_crash_between_write_and_action,
        ),
        (
            "writes only changes, deletes",
            contract_writes_only_changes_and_deletes,
        ),
        ("large save", contract_large_save),
    ]
}

#[test]
fn embedded_backend_meets_the_contract() {
    for (name, case) in contracts() {
        eprintln!("embedded: {name}");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("controller.redb");
        case(&mut || Store::open(&path).expect("open"));
    }
}

fn etcd_options(server: &EtcdServer, prefix: &str) -> EtcdOptions {
    let mut o = EtcdOptions::new(vec![server.url.clone()]);
    o.prefix = prefix.to_owned();
    o.timeout = Duration::from_secs(3);
    o
}

fn open_etcd(options: &EtcdOptions) -> (Store, Option<Loaded>) {
    Store::with_backend(Box::new(Etcd::connect(options).expect("connect"))).expect("load")
}

#[test]
fn etcd_backend_meets_the_contract_and_fences_a_deposed_leader() {
    let Some(bin) = etcd_binary() else { return };
    let mut server = EtcdServer::start(&bin);
    for (i, (name, case)) in contracts().into_iter().enumerate() {
        eprintln!("etcd: {name}");
        let options = etcd_options(&server, &format!("/srmig-test/{i}/"));
        case(&mut || open_etcd(&options));
    }

    // Leadership: one replica leads, the other cannot; writes carry the leadership.
    let options = etcd_options(&server, "/srmig-test/ha/");
    let mut a = Etcd::connect(&options).expect("a");
    let mut b = Etcd::connect(&options).expect("b");
    assert!(a.campaign("a", Duration::from_secs(2)).expect("campaign a"));
    assert!(!b.campaign("b", Duration::from_secs(2)).expect("campaign b"));
    assert_eq!(b.leader().expect("leader").as_deref(), Some("a"));
    let lost_a = a.lost_flag();
    let (mut store_a, _) = Store::with_backend(Box::new(a)).expect("load a");
    let (c, hosts) = controller(2);
    let mut snap = c.snapshot();
    store_a.save(&hosts, &snap).expect("the leader writes");
    // The lease is kept alive beyond its TTL.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(!lost_a.load(std::sync::atomic::Ordering::Acquire));
    snap.next_id = 77;
    store_a.save(&hosts, &snap).expect("still the leader");

    // Depose a: its lease is revoked behind its back (as when it expires), b takes over.
    let mut admin = Etcd::connect(&options).expect("admin");
    assert_eq!(admin.leader().expect("leader").as_deref(), Some("a"));
    revoke_leader_lease(&server, &options);
    let start = Instant::now();
    while !b.campaign("b", Duration::from_secs(2)).expect("campaign b") {
        assert!(start.elapsed() < Duration::from_secs(5), "b never won");
        std::thread::sleep(Duration::from_millis(100));
    }
    // a's keep-alive notices, and a's writes are refused: nothing reaches the store.
    let start = Instant::now();
    while !lost_a.load(std::sync::atomic::Ordering::Acquire) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "a never noticed the loss of its lease"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    snap.next_id = 99;
    let err = store_a
        .save(&hosts, &snap)
        .expect_err("a deposed leader cannot write");
    assert!(matches!(err, StoreError::Fenced { .. }), "{err:?}");
    let (_, loaded) = Store::with_backend(Box::new(b)).expect("load b");
    assert_eq!(loaded.expect("state").snapshot.next_id, 77);

    // A key in the store's tables that the controller never writes (a hand edit): loading
    // refuses it, naming it, instead of merging it with migration 7's row or dropping it.
    let options = etcd_options(&server, "/srmig-test/stray/");
    let (mut store, _) = open_etcd(&options);
    store.save(&hosts, &snap).expect("save");
    let stray = format!("{}migrations/7", options.prefix);
    http_post(
        &server,
        "/v3/kv/put",
        &format!(
            r#"{{"key":"{}","value":"{}"}}"#,
            base64_encode(stray.as_bytes()),
            base64_encode(b"{}")
        ),
    );
    let err = Store::with_backend(Box::new(Etcd::connect(&options).expect("connect")))
        .map(|_| ())
        .expect_err("a stray key is refused");
    assert!(
        matches!(&err, StoreError::StrayKey { key, .. } if *key == stray),
        "{err:?}"
    );
    assert!(err.to_string().contains("20 digits"), "{err}");

    // A restarted etcd: a save fails while it is down (a clear error within the timeout),
    // and works again once it is back, on the same handle.
    let options = etcd_options(&server, "/srmig-test/restart/");
    let (mut store, _) = open_etcd(&options);
    store.save(&hosts, &snap).expect("save");
    server.kill();
    snap.next_id = 100;
    let start = Instant::now();
    let err = store.save(&hosts, &snap).expect_err("etcd is down");
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "{:?}",
        start.elapsed()
    );
    assert!(err.to_string().contains("etcd"), "{err}");
    server.restart(&bin);
    let start = Instant::now();
    loop {
        match store.save(&hosts, &snap) {
            Ok(_) => break,
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_secs(15),
                    "no save after etcd came back: {e}"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    let (_, loaded) = open_etcd(&options);
    assert_eq!(loaded.expect("state").snapshot.next_id, 100);
}

/// Revokes the lease of the current leader key (what its expiry does), through etcd's HTTP
/// gateway (`/v3/kv/range` for the lease id, `/v3/lease/revoke`).
fn revoke_leader_lease(server: &EtcdServer, options: &EtcdOptions) {
    let key = base64_encode(options.leader_key().as_bytes());
    let body = format!(r#"{{"key":"{key}"}}"#);
    let out = http_post(server, "/v3/kv/range", &body);
    let v: serde_json::Value = serde_json::from_str(&out).expect("range JSON");
    let lease = v["kvs"][0]["lease"]
        .as_str()
        .expect("a lease on the leader key")
        .to_owned();
    http_post(
        server,
        "/v3/lease/revoke",
        &format!(r#"{{"ID":"{lease}"}}"#),
    );
}

fn http_post(server: &EtcdServer, path: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let addr = server.url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}\n{body}"
    );
    body.to_owned()
}

fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn an_etcd_that_does_not_answer_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let mut o = EtcdOptions::new(vec![format!("http://127.0.0.1:{port}")]);
    o.timeout = Duration::from_secs(1);
    let start = Instant::now();
    let err = Etcd::connect(&o).expect_err("nothing listens there");
    assert!(start.elapsed() < Duration::from_secs(5));
    let text = format!(
        "{err}: {}",
        std::error::Error::source(&err)
            .map(|s| s.to_string())
            .unwrap_or_default()
    );
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
}
