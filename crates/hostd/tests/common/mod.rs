//! What srmigd's end-to-end tests share: the skip rules, a temp dir removed on every exit, a
//! waiting loop, the veth/underlay plumbing of the network-namespace labs, a srmigd process
//! driven over its API socket, and sequence-numbered UDP datagrams.
//!
//! Each test binary compiles this module on its own and uses a different part of it.
#![allow(dead_code)]

use std::fmt::Display;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use ipnet::IpNet;
use srmig_api::{HostStatus, PortStatus, VmStatus};
use srmig_hostd::client::{blocking_request, error_chain};
use srmig_lab::{Lab, LinkEnd, MacAddr, Netns, NetnsThread, Route};

// ------------------------------------------------------------------------------------------
// Skip rules

/// The effective uid of this process (from `/proc/self/status`), if it can be read.
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    // `Uid:	real	effective	saved	fs`
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Why this process cannot run a root-only test (`needs` says what root is for), if it cannot.
pub fn missing_root(needs: &str) -> Option<String> {
    match effective_uid() {
        Some(0) => None,
        Some(uid) => Some(format!("needs root ({needs}; effective uid {uid})")),
        None => Some(format!("needs root ({needs}; effective uid unknown)")),
    }
}

/// The first of `tools` that is not on the `PATH`, if any.
pub fn missing_tool(tools: &[&str]) -> Option<String> {
    tools.iter().find_map(|tool| {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        (!found).then(|| format!("{tool} not found"))
    })
}

/// Whether `test` must be skipped because of `missing`: prints a loud `SKIPPED: ...` line and
/// returns `true` then, so that the test returns and passes. Panics instead when `CI` is set:
/// CI runs these tests for real and fails if they were skipped.
pub fn skip(test: &str, missing: Option<String>) -> bool {
    let Some(why) = missing else {
        return false;
    };
    let msg = format!("SKIPPED: {why} [{test}]");
    // Straight to the process's stderr: `eprintln!` would be captured, and a passing test's
    // capture is never shown.
    let _ = writeln!(std::io::stderr(), "\n!!!!!!!! {msg} !!!!!!!!\n");
    assert!(
        std::env::var_os("CI").is_none(),
        "{msg}: CI is set, srmigd's end-to-end tests must not be skipped"
    );
    true
}

// ------------------------------------------------------------------------------------------
// Literals, files, waiting

/// An address literal of the test.
pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("address literal")
}

/// A prefix literal of the test.
pub fn net(s: &str) -> IpNet {
    s.parse().expect("prefix literal")
}

/// `[addr]:port`.
pub fn sock_addr(addr: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip(addr), port)
}

/// A directory `<system temp dir>/<prefix>-<pid>`, emptied of a previous run's leftovers when
/// created and removed when dropped, also when the test fails. Declare it before the [`Lab`]:
/// it is then dropped after the lab, once the processes writing into it are gone.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Calls `attempt` every `every` until it returns `Ok`, and returns that value. Panics with
/// `explain` of the last `Err` once `timeout` has passed (`attempt` may panic itself on a
/// condition that no waiting can fix).
pub fn wait_until<T, E>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut attempt: impl FnMut() -> Result<T, E>,
    explain: impl FnOnce(E) -> String,
) -> T {
    let start = Instant::now();
    loop {
        match attempt() {
            Ok(value) => return value,
            Err(last) if start.elapsed() >= timeout => {
                panic!(
                    "timed out after {timeout:?} waiting for {what}: {}",
                    explain(last)
                )
            }
            Err(_) => std::thread::sleep(every),
        }
    }
}

// ------------------------------------------------------------------------------------------
// Links and the underlay

/// A veth pair `a_if` (in `a`, MAC `a_mac`) -- `b_if` (in `b`, MAC `b_mac`).
pub fn veth(
    lab: &Lab,
    (a, a_if, a_mac): (&Netns, &str, MacAddr),
    (b, b_if, b_mac): (&Netns, &str, MacAddr),
) -> (LinkEnd, LinkEnd) {
    let v = lab.add_veth(a, a_if, b, b_if).expect("veth");
    lab.set_mac(&v.a, a_mac).expect("mac");
    lab.set_mac(&v.b, b_mac).expect("mac");
    (v.a, v.b)
}

/// Keeps the kernel off srmigd's interfaces: no IPv6 on them (no address, no NDP, no MLD).
pub fn disable_ipv6(ends: &[&LinkEnd]) {
    for end in ends {
        end.netns
            .set_sysctl(&format!("net/ipv6/conf/{}/disable_ipv6", end.ifname), "1")
            .expect("disable_ipv6");
    }
}

/// Sets the MTU of `ends` (a VM's side of a link: room for srmigd's encapsulation).
pub fn set_mtu(ends: &[&LinkEnd], mtu: u16) {
    for end in ends {
        end.netns
            .ip(&["link", "set", "dev", &end.ifname, "mtu", &mtu.to_string()])
            .expect("mtu");
    }
}

/// Sets `ends` up and waits until each of them is.
pub fn bring_up(lab: &Lab, ends: &[&LinkEnd]) {
    for end in ends {
        lab.set_up(end).expect("up");
    }
    for end in ends {
        lab.wait_up(end, Duration::from_secs(5)).expect("wait up");
    }
}

/// A VM's default route: srmigd's anycast gateway `fe80::1` on `eth0`.
pub fn route_via_gateway(lab: &Lab, vm: &Netns) {
    lab.add_route(vm, &Route::default_v6(ip("fe80::1"), Some("eth0")))
        .expect("default route via the anycast gateway");
}

/// Two srmigd hosts behind a Linux IPv6 router, links up and routed:
///
/// ```text
///  [s ns: srmigd S] ─up0══rs0─ [r ns: Linux router] ─rd0══up0─ [d ns: srmigd D]
///  locator fc00:0:1::/48       2001:db8:ff:1::1/64             locator fc00:0:2::/48
///  uplink 2001:db8:ff:1::2     2001:db8:ff:2::1/64             uplink 2001:db8:ff:2::2
/// ```
///
/// Host `n`'s uplink has MAC `02:00:00:00:0n:00`, the router's end `02:00:00:00:0n:ff`
/// (as [`node_toml`] declares them); the kernel stays off the srmigd ends.
#[derive(Debug)]
pub struct Underlay {
    pub r: Netns,
    pub s: Netns,
    pub d: Netns,
    pub rs0: LinkEnd,
    pub s_up: LinkEnd,
    pub rd0: LinkEnd,
    pub d_up: LinkEnd,
}

impl Underlay {
    pub fn new(lab: &Lab) -> Underlay {
        let r = lab.add_netns("r").expect("ns");
        let s = lab.add_netns("s").expect("ns");
        let d = lab.add_netns("d").expect("ns");
        let (rs0, s_up) = veth(
            lab,
            (&r, "rs0", MacAddr([2, 0, 0, 0, 1, 0xff])),
            (&s, "up0", MacAddr([2, 0, 0, 0, 1, 0])),
        );
        let (rd0, d_up) = veth(
            lab,
            (&r, "rd0", MacAddr([2, 0, 0, 0, 2, 0xff])),
            (&d, "up0", MacAddr([2, 0, 0, 0, 2, 0])),
        );
        disable_ipv6(&[&s_up, &d_up]);
        lab.add_addr(&rs0, net("2001:db8:ff:1::1/64"))
            .expect("addr");
        lab.add_addr(&rd0, net("2001:db8:ff:2::1/64"))
            .expect("addr");
        lab.enable_forwarding(&r).expect("forwarding");
        bring_up(lab, &[&rs0, &s_up, &rd0, &d_up]);
        lab.add_route(&r, &Route::to(net("fc00:0:1::/48"), ip("2001:db8:ff:1::2")))
            .expect("route");
        lab.add_route(&r, &Route::to(net("fc00:0:2::/48"), ip("2001:db8:ff:2::2")))
            .expect("route");
        Underlay {
            r,
            s,
            d,
            rs0,
            s_up,
            rd0,
            d_up,
        }
    }
}

/// The start of srmigd's node config for host `n` (1 = S, 2 = D): locator `fc00:0:n::/48`,
/// the anycast gateway, and its uplink `up0` (`2001:db8:ff:n::2`, MAC `02:00:00:00:0n:00`, peer
/// `02:00:00:00:0n:ff`) as the [`Underlay`] wires it; no routes, no VMs.
pub fn uplink_toml(n: u8) -> String {
    format!(
        r#"
locator = "fc00:0:{n}::/48"
source_address = "2001:db8:ff:{n}::2"
infrastructure_prefixes = ["2001:db8:ff::/48", "fc00::/16"]
gateway = {{ address = "fe80::1", mac = "02:00:00:00:00:01" }}

[[ports]]
name = "up0"
kind = "uplink"
mac = "02:00:00:00:0{n}:00"
peer_mac = "02:00:00:00:0{n}:ff"
address = "2001:db8:ff:{n}::2"
"#
    )
}

/// srmigd's node config for host `n` of the [`Underlay`]: [`uplink_toml`] and a default route
/// up; VMs are added with [`vm_toml`].
pub fn node_toml(n: u8) -> String {
    uplink_toml(n)
        + r#"
[[routes]]
prefix = "::/0"
port = "up0"
"#
}

/// A VM port `port` of host `n` (MAC `02:00:00:00:0n:0k`) and the VM `vm` behind it.
pub fn vm_toml(n: u8, k: u8, port: &str, vm: &str, addr: &str, mac: impl Display) -> String {
    format!(
        r#"
[[ports]]
name = "{port}"
kind = "vm"
mac = "02:00:00:00:0{n}:0{k}"

[[vms]]
name = "{vm}"
addresses = ["{addr}"]
mac = "{mac}"
port = "{port}"
"#
    )
}

// ------------------------------------------------------------------------------------------
// srmigd

/// A srmigd process of the lab and its API socket.
#[derive(Debug)]
pub struct Daemon {
    pub name: String,
    pub pid: u32,
    pub sock: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    /// Writes `toml` to `dir/<name>.toml`, starts srmigd in `ns` with its API on
    /// `dir/<name>.sock` and its log in `dir/<name>.log`, and waits until the API answers.
    pub fn start(lab: &Lab, ns: &Netns, dir: &Path, name: &str, toml: &str) -> Daemon {
        Daemon::start_with(lab, ns, dir, name, toml, &[])
    }

    /// [`Daemon::start`] with `extra` arguments for srmigd (e.g. `["--workers", "2"]`).
    pub fn start_with(
        lab: &Lab,
        ns: &Netns,
        dir: &Path,
        name: &str,
        toml: &str,
        extra: &[&str],
    ) -> Daemon {
        let cfg = dir.join(format!("{name}.toml"));
        std::fs::write(&cfg, toml).expect("write node config");
        let sock = dir.join(format!("{name}.sock"));
        let log = dir.join(format!("{name}.log"));
        let mut argv = vec![
            env!("CARGO_BIN_EXE_srmigd"),
            "--config",
            cfg.to_str().expect("utf8 path"),
            "--api",
            sock.to_str().expect("utf8 path"),
        ];
        argv.extend_from_slice(extra);
        let pid = lab.spawn(ns, &argv, Some(&log)).expect("spawn srmigd");
        let d = Daemon {
            name: name.to_owned(),
            pid,
            sock,
            log,
        };
        wait_until(
            &format!("srmigd {name} to come up"),
            Duration::from_secs(10),
            Duration::from_millis(20),
            || {
                if d.sock.exists()
                    && blocking_request(&d.sock, Method::GET, "/v1/status", None)
                        .is_ok_and(|(s, _)| s == StatusCode::OK)
                {
                    return Ok(());
                }
                assert!(
                    lab.child_running(pid),
                    "srmigd {name} exited:\n{}",
                    d.logs()
                );
                Err(())
            },
            |()| d.logs(),
        );
        d
    }

    /// Its log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One API request; a transport error fails the test with srmigd's log.
    pub fn request(&self, method: Method, path: &str, body: Option<&str>) -> (StatusCode, String) {
        let (s, b) = blocking_request(
            &self.sock,
            method.clone(),
            path,
            body.map(|b| b.as_bytes().to_vec()),
        )
        .unwrap_or_else(|e| {
            panic!(
                "srmigd {}: {method} {path}: {}\n{}",
                self.name,
                error_chain(&e),
                self.logs()
            )
        });
        (s, String::from_utf8_lossy(&b).into_owned())
    }

    pub fn get(&self, path: &str) -> (StatusCode, String) {
        self.request(Method::GET, path, None)
    }

    /// GET `path`, which must answer 200; its body.
    pub fn get_ok(&self, path: &str) -> String {
        let (s, body) = self.get(path);
        assert_eq!(
            s,
            StatusCode::OK,
            "srmigd {}: GET {path}: {body}",
            self.name
        );
        body
    }

    pub fn put(&self, path: &str, body: &str) -> (StatusCode, String) {
        self.request(Method::PUT, path, Some(body))
    }

    /// `/v1/status`.
    pub fn status(&self) -> HostStatus {
        serde_json::from_str(&self.get_ok("/v1/status")).expect("status JSON")
    }

    /// The value of one `/metrics` series (`name{labels}`), if srmigd exports it.
    pub fn metric(&self, series: &str) -> Option<u64> {
        self.get_ok("/metrics")
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// The status of VM `name`, which srmigd must know.
    pub fn vm(&self, name: &str) -> VmStatus {
        self.status()
            .vms
            .into_iter()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("srmigd {} has no VM {name}", self.name))
    }

    /// The status of port `name`, which srmigd must have.
    pub fn port(&self, name: &str) -> PortStatus {
        self.status()
            .ports
            .into_iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("srmigd {} has no port {name}", self.name))
    }

    /// Polls `/v1/status` every 5 ms until `ok` holds; fails with the last status and the log
    /// after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut ok: impl FnMut(&HostStatus) -> bool) {
        wait_until(
            &format!("{what} (srmigd {})", self.name),
            timeout,
            Duration::from_millis(5),
            || {
                let st = self.status();
                if ok(&st) {
                    Ok(())
                } else {
                    Err(Box::new(st))
                }
            },
            |st| format!("{st:#?}\n{}", self.logs()),
        );
    }

    /// SIGTERM: srmigd stops cleanly, says so and removes its socket.
    pub fn stop(&self, lab: &Lab) {
        lab.stop_child(self.pid).expect("stop srmigd");
        assert!(!self.sock.exists(), "socket left behind:\n{}", self.logs());
        assert!(self.logs().contains("srmigd stopped"), "{}", self.logs());
    }
}

// ------------------------------------------------------------------------------------------
// Sequence-numbered UDP datagrams

/// A UDP socket bound to `addr` inside `ns` (it keeps sending from there).
pub fn udp_socket(ns: &Netns, addr: SocketAddr) -> UdpSocket {
    ns.run(move || UdpSocket::bind(addr))
        .expect("enter namespace")
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"))
}

/// Sends datagrams carrying the sequence numbers `seqs` (big endian) to `dst`, 1 ms apart.
pub fn send_seqs(sock: &UdpSocket, dst: SocketAddr, seqs: Range<u32>) {
    for i in seqs {
        sock.send_to(&i.to_be_bytes(), dst).expect("send");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A sequence-numbered stream that another thread can follow and hold back: how many
/// datagrams were sent, and gates (`at`, flag) before which the sender waits for the flag.
///
/// A test that changes the network while the stream runs (a link cut, a resume) must not
/// depend on both threads getting the CPU in time: on a loaded machine a fixed sleep lets the
/// stream end before the change, or the change happen before the stream. With `sent` the
/// test acts at a point of the stream, and a gate keeps the rest of the stream for after its
/// change (the stream still runs freely through the change in the normal case).
#[derive(Debug, Clone, Default)]
pub struct StreamControl {
    sent: Arc<AtomicU32>,
    gates: Vec<(u32, Arc<AtomicBool>)>,
}

/// How long a gated sender waits for its gate before it goes on anyway (the test then fails
/// on what it checks).
const GATE_TIMEOUT: Duration = Duration::from_secs(20);

impl StreamControl {
    /// The sender will wait, before sending sequence number `at`, until the returned flag is
    /// set (with [`StreamControl::open`]).
    pub fn gate(&mut self, at: u32) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        self.gates.push((at, Arc::clone(&flag)));
        flag
    }

    /// Opens a gate returned by [`StreamControl::gate`].
    pub fn open(gate: &AtomicBool) {
        gate.store(true, Ordering::Release);
    }

    /// How many datagrams were sent so far.
    pub fn sent(&self) -> u32 {
        self.sent.load(Ordering::Acquire)
    }

    /// Waits until at least `n` datagrams were sent (fails the test after `timeout`).
    pub fn wait_sent(&self, n: u32, timeout: Duration) {
        wait_until(
            &format!("{n} datagrams sent"),
            timeout,
            Duration::from_micros(200),
            || {
                if self.sent() >= n {
                    Ok(())
                } else {
                    Err(self.sent())
                }
            },
            |sent| format!("{sent} sent"),
        );
    }
}

/// [`send_seqs`] under a [`StreamControl`]: counts what it sent, waits at the gates.
pub fn send_seqs_controlled(
    sock: &UdpSocket,
    dst: SocketAddr,
    seqs: Range<u32>,
    c: &StreamControl,
) {
    for i in seqs {
        for (_, gate) in c.gates.iter().filter(|(at, _)| *at == i) {
            let start = Instant::now();
            while !gate.load(Ordering::Acquire) && start.elapsed() < GATE_TIMEOUT {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        sock.send_to(&i.to_be_bytes(), dst).expect("send");
        c.sent.fetch_add(1, Ordering::AcqRel);
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Sends `seqs` from a fresh socket on `src` (any port) inside `ns` to `dst`, 1 ms apart.
pub fn send_from(ns: &Netns, src: &str, dst: SocketAddr, seqs: Range<u32>) {
    send_seqs(&udp_socket(ns, sock_addr(src, 0)), dst, seqs);
}

/// Receives sequence-numbered datagrams on `bind` (inside `ns`) until `n` arrived or `timeout`
/// passed, on a thread; join it for the sequence numbers in arrival order. The socket is bound
/// before this returns, so nothing sent afterwards is missed.
pub fn receiver(
    ns: &Netns,
    bind: SocketAddr,
    n: usize,
    timeout: Duration,
) -> NetnsThread<Vec<u32>> {
    let sock = udp_socket(ns, bind);
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    // Room for a whole burst while this thread waits for the CPU on a loaded machine: the
    // default 208 KiB holds about 200 small datagrams, and a test that sends 400 at once then
    // loses its last ones in the receiving kernel, not in srmigd.
    nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::RcvBuf, &(4 << 20))
        .expect("SO_RCVBUF");
    ns.spawn("udp-rx", move || {
        let mut got = Vec::new();
        let start = Instant::now();
        let mut buf = [0u8; 64];
        while got.len() < n && start.elapsed() < timeout {
            if let Ok(len) = sock.recv(&mut buf) {
                if let Some(seq) = buf.get(..4).filter(|_| len >= 4) {
                    got.push(u32::from_be_bytes([seq[0], seq[1], seq[2], seq[3]]));
                }
            }
        }
        got
    })
    .expect("receiver thread")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_until_returns_the_first_success() {
        let mut calls = 0;
        let got = wait_until(
            "the third call",
            Duration::from_secs(5),
            Duration::from_millis(1),
            || {
                calls += 1;
                if calls == 3 {
                    Ok(calls)
                } else {
                    Err(calls)
                }
            },
            |last| format!("last call {last}"),
        );
        assert_eq!(got, 3);
    }

    #[test]
    #[should_panic(expected = "waiting for nothing: last call")]
    fn wait_until_fails_after_the_timeout_with_the_last_error() {
        wait_until(
            "nothing",
            Duration::from_millis(20),
            Duration::from_millis(1),
            || Err::<(), _>(()),
            |()| "last call".to_owned(),
        );
    }

    #[test]
    fn temp_dir_is_removed_on_drop_even_when_not_empty() {
        let tmp = TempDir::new("srmig-hostd-common-selftest");
        let path = tmp.path().to_owned();
        std::fs::write(path.join("f"), b"x").expect("write");
        drop(tmp);
        assert!(!path.exists());
    }

    #[test]
    fn a_controlled_stream_waits_at_its_gates() {
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        rx.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let dst = rx.local_addr().expect("addr");
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let mut c = StreamControl::default();
        let gate = c.gate(3);
        let c2 = c.clone();
        let sender = std::thread::spawn(move || send_seqs_controlled(&tx, dst, 0..5, &c2));
        c.wait_sent(3, Duration::from_secs(5));
        // Held at the gate: nothing beyond 3 datagrams.
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(c.sent(), 3);
        StreamControl::open(&gate);
        sender.join().expect("sender");
        assert_eq!(c.sent(), 5);
        let mut buf = [0u8; 8];
        let got: Vec<usize> = (0..5).map(|_| rx.recv(&mut buf).expect("recv")).collect();
        assert_eq!(got, vec![4; 5]);
    }

    #[test]
    fn nothing_missing_is_no_skip() {
        assert!(!skip("common::tests", None));
    }
}
