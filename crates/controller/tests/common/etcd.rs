//! A real etcd for tests: Debian's `etcd-server` (3.4) started on free loopback ports with
//! its own data directory, killed and removed when dropped (also when the test panics).
//! Without the `etcd` binary the test is skipped, unless `CI` is set.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running single-member etcd cluster.
pub struct EtcdServer {
    child: Option<Child>,
    /// Its client URL (`http://127.0.0.1:PORT`).
    pub url: String,
    client_addr: SocketAddr,
    peer_port: u16,
    dir: tempfile::TempDir,
}

/// The etcd binary, or `None` (skip; a failure under `CI`).
pub fn etcd_binary() -> Option<PathBuf> {
    let found = Command::new("sh")
        .args(["-c", "command -v etcd"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set: etcd (Debian package etcd-server) must be installed"
        );
        eprintln!("SKIPPED: etcd not found (apt-get install etcd-server)");
    }
    found
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl EtcdServer {
    /// Starts etcd and waits until its client port answers.
    pub fn start(bin: &PathBuf) -> EtcdServer {
        let dir = tempfile::tempdir().expect("etcd data dir");
        let client_port = free_port();
        let peer_port = free_port();
        let mut server = EtcdServer {
            child: None,
            url: format!("http://127.0.0.1:{client_port}"),
            client_addr: SocketAddr::from(([127, 0, 0, 1], client_port)),
            peer_port,
            dir,
        };
        server.spawn(bin);
        server
    }

    fn spawn(&mut self, bin: &PathBuf) {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.dir.path().join("etcd.log")).expect("etcd log");
        let child = Command::new(bin)
            .arg("--name=srmig-test")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={}", self.url))
            .arg(format!("--advertise-client-urls={}", self.url))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=srmig-test={peer}"))
            // Leases of 1 s are granted as asked (the minimum is 1.5 x this, in seconds).
            .arg("--heartbeat-interval=100")
            .arg("--election-timeout=500")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
        let start = Instant::now();
        while TcpStream::connect_timeout(&self.client_addr, Duration::from_millis(100)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "etcd did not listen on {} within 20 s: {}",
                self.url,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills etcd (SIGKILL) and waits for it; its data stays.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same ports and data.
    #[allow(dead_code)] // not every test file that includes this module restarts etcd
    pub fn restart(&mut self, bin: &PathBuf) {
        self.kill();
        self.spawn(bin);
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}
