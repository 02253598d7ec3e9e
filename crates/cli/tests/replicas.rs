//! Controller replicas on one etcd (`srmig controller --store etcd --replica-id ID`), as
//! processes: one leads and serves; the other waits as a standby (no API socket); when the
//! leader is killed (SIGKILL) the standby takes over within the lease TTL and serves the state
//! the leader wrote; the restarted old leader waits as a standby. Real etcd (Debian's
//! `etcd-server`), started on loopback ports by the test and removed after.

#[path = "../../controller/tests/common/etcd.rs"]
mod etcd;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd::{etcd_binary, EtcdServer};
use srmig_controller::{ControllerClient, HostRegistration};

/// A `srmig controller` process, killed when dropped.
struct Replica {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Replica {
    fn start(dir: &Path, id: &str, etcd: &EtcdServer) -> Replica {
        let socket = dir.join(format!("{id}.sock"));
        let log = dir.join(format!("{id}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_srmig"))
            .args(["controller", "--socket"])
            .arg(&socket)
            .args(["--store", "etcd", "--etcd-endpoints", &etcd.url])
            .args(["--etcd-prefix", "/srmig-replicas/", "--replica-id", id])
            .args(["--leader-ttl-s", "1", "--host-poll-ms", "60000"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start srmig controller");
        Replica { child, socket, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until the replica's API answers; returns how long that took.
fn wait_serving(rt: &tokio::runtime::Runtime, r: &Replica, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if r.socket.exists() && rt.block_on(ControllerClient::new(&r.socket).info()).is_ok() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{} did not serve within {limit:?}:\n{}",
            r.socket.display(),
            r.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn reg(i: u16, dir: &Path) -> HostRegistration {
    let json = format!(
        r#"{{"name":"h{i}","locator":"fc00:{i}::/48","sid_end_s":"fc00:{i}::e5","sid_end_sbuf":"fc00:{i}::eb","sid_dt6":"fc00:{i}::d6","underlay":"2001:db8:ff::{i}","api_socket":"{}"}}"#,
        dir.join(format!("h{i}.sock")).display()
    );
    serde_json::from_str(&json).expect("registration")
}

#[test]
fn a_standby_replica_takes_over_when_the_leader_dies() {
    let Some(bin) = etcd_binary() else { return };
    let server = EtcdServer::start(&bin);
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");

    let mut a = Replica::start(dir.path(), "a", &server);
    wait_serving(&rt, &a, Duration::from_secs(15));
    let b = Replica::start(dir.path(), "b", &server);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!b.socket.exists(), "the standby serves:\n{}", b.log());
    assert!(b.log().contains("standby"), "{}", b.log());

    // State written through the leader.
    let client = ControllerClient::new(&a.socket);
    for i in 1..=2 {
        rt.block_on(client.add_host(&reg(i, dir.path())))
            .expect("add host");
    }
    let vm = serde_json::from_str(
        r#"{"name":"web1","addresses":["2001:db8:a::10","10.1.0.10"],"mac":"52:54:00:00:00:10","host":"h1"}"#,
    )
    .expect("vm");
    rt.block_on(client.add_vm(&vm)).expect("add vm");

    // The leader dies; the standby leads within the lease TTL (plus etcd's 0.5 s expiry
    // check and the standby's poll) and has the state.
    a.kill();
    let took = wait_serving(&rt, &b, Duration::from_secs(10));
    eprintln!("standby serving {took:?} after the leader's SIGKILL");
    assert!(b.log().contains("leading"), "{}", b.log());
    assert!(
        !a.log().contains("longer leadership lease")
            && !b.log().contains("longer leadership lease"),
        "etcd did not grant the 1 s lease:\n{}",
        b.log()
    );
    let vms = rt
        .block_on(ControllerClient::new(&b.socket).vms())
        .expect("vms from the new leader");
    assert_eq!(vms.len(), 1);
    assert_eq!(vms[0].info.addresses.len(), 2);
    let hosts = rt
        .block_on(ControllerClient::new(&b.socket).hosts())
        .expect("hosts");
    assert_eq!(hosts.len(), 2);

    // The old leader, started again, is a standby now.
    let _ = std::fs::remove_file(&a.socket);
    let a2 = Replica::start(dir.path(), "a", &server);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!a2.socket.exists(), "two replicas serve:\n{}", a2.log());
}
