//! The AF_XDP port ([`srmig_hostd::port::xdp`]) on a veth pair between two namespaces:
//!
//! ```text
//!  [x ns] xdp0 (XdpSocket, IPv6 off) ══ peer0 [p ns] (AF_PACKET socket, EtherType 0x88b5)
//! ```
//!
//! - frames from the peer arrive in a `Batch` byte for byte, and frames sent through
//!   `XdpSocket::send` + `flush` reach the peer byte for byte, up to `max_frame()` (MTU 1500:
//!   native XDP on the veth; MTU 4000: generic mode, and a longer frame is dropped by the
//!   kernel and counted);
//! - `srmig_xsk` is attached while the socket is open and nothing after it is dropped, and
//!   nothing after the process holding it is SIGKILLed (this test binary run as a child): the
//!   plain program, the fast path's with its socket, and the fast path's alone on a veth with
//!   a jumbo MTU (beside AF_PACKET);
//! - a `srmig_xsk` left attached through netlink (no link) is replaced at open; a foreign
//!   program yields `ForeignProgram` and stays; a second socket on the same interface yields
//!   `InUse`.
//!
//! Needs root. Without root it prints `SKIPPED: needs root` and passes, unless `CI` is set.
#![allow(unsafe_code)]

use std::io::{BufRead, BufReader};
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use srmig_dataplane::{Batch, PortId, BUF_CAPACITY};
use srmig_hostd::port::bpf::{self, XdpMode};
use srmig_hostd::port::fastpath::FastAttachment;
use srmig_hostd::port::xdp::{attached_xdp_prog, XdpError, XdpOptions, XdpSocket, XdpTxError};
use srmig_lab::{Lab, LinkEnd, MacAddr, Netns};

mod common;
use common::{bring_up, disable_ipv6, missing_root, set_mtu, skip, veth, wait_until};

/// IEEE local experimental EtherType: only the test's frames carry it.
const ETHERTYPE: u16 = 0x88b5;
const X_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0xaa, 1]);
const P_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0xaa, 2]);
/// Env var telling [`sigkill_child_helper`] which interface to open (it runs in that
/// interface's namespace).
const CHILD_ENV: &str = "SRMIG_XDP_CHILD_IFNAME";
/// What the child attaches: `plain` (an AF_XDP socket), `fast` (one with the fast path's
/// program), `fast-alone` (the fast path's program without a socket).
const CHILD_MODE_ENV: &str = "SRMIG_XDP_CHILD_MODE";

struct Pair {
    x: Netns,
    p: Netns,
    xi: u32,
    pi: u32,
}

fn ifindex(ns: &Netns, name: &str) -> u32 {
    let name = std::ffi::CString::new(name).expect("name");
    // SAFETY: `name` is a valid NUL-terminated string for the call.
    let i = ns
        .run(|| unsafe { libc::if_nametoindex(name.as_ptr()) })
        .expect("enter netns");
    assert_ne!(i, 0, "no interface {name:?} in {ns}");
    i
}

/// Namespaces x and p, veth xdp0 (x) -- peer0 (p), IPv6 off on both, up; `mtu` on both ends
/// if given.
fn pair(lab: &Lab, mtu: Option<u16>) -> Pair {
    let x = lab.add_netns("x").expect("ns");
    let p = lab.add_netns("p").expect("ns");
    let (xe, pe): (LinkEnd, LinkEnd) = veth(lab, (&x, "xdp0", X_MAC), (&p, "peer0", P_MAC));
    disable_ipv6(&[&xe, &pe]);
    if let Some(mtu) = mtu {
        set_mtu(&[&xe, &pe], mtu);
    }
    bring_up(lab, &[&xe, &pe]);
    let xi = ifindex(&x, "xdp0");
    let pi = ifindex(&p, "peer0");
    Pair { x, p, xi, pi }
}

fn attached(ns: &Netns, ifindex: u32) -> Option<(u32, String)> {
    ns.run(|| attached_xdp_prog(ifindex))
        .expect("enter netns")
        .expect("query XDP program")
}

fn open_in(ns: &Netns, ifindex: u32, ifname: &str) -> Result<XdpSocket, XdpError> {
    ns.run(|| XdpSocket::open(ifindex, ifname, &XdpOptions::default()))
        .expect("enter netns")
}

/// An AF_PACKET socket on `ifindex` for [`ETHERTYPE`], ignoring its own frames, with a
/// receive timeout, created in `ns` (a socket stays in the namespace it was created in).
fn peer_socket(ns: &Netns, ifindex: u32) -> OwnedFd {
    ns.run(|| {
        let proto = ETHERTYPE.to_be();
        // SAFETY: plain socket(2) call, checked below.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::c_int::from(proto),
            )
        };
        assert!(fd >= 0, "AF_PACKET: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` is a new socket nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain integers; all-zero is valid.
        let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a valid sockaddr_ll of the size passed.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
        let one: libc::c_int = 1;
        // SAFETY: the option value is a c_int of the size passed.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_IGNORE_OUTGOING,
                (&one as *const libc::c_int).cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        let rcvbuf: libc::c_int = 16 << 20;
        // SAFETY: the option value is a c_int of the size passed.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&rcvbuf as *const libc::c_int).cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        // SAFETY: the option value is a timeval of the size passed.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        fd
    })
    .expect("enter netns")
}

fn peer_send(fd: &OwnedFd, frame: &[u8]) {
    // SAFETY: `frame` is live and readable for its length.
    let r = unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
    assert_eq!(
        r,
        frame.len() as isize,
        "peer send of {} bytes: {}",
        frame.len(),
        std::io::Error::last_os_error()
    );
}

/// The next frame the peer receives, `None` after `timeout`.
fn peer_recv(fd: &OwnedFd, timeout: Duration) -> Option<Vec<u8>> {
    let start = Instant::now();
    let mut buf = vec![0u8; 9000];
    while start.elapsed() < timeout {
        // SAFETY: `buf` is live and writable for its length.
        let r = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if r > 0 {
            buf.truncate(r as usize);
            return Some(buf);
        }
    }
    None
}

/// An Ethernet frame of `len` bytes from `src` to `dst` with [`ETHERTYPE`], `tag` and a
/// pattern.
fn frame(dst: MacAddr, src: MacAddr, len: usize, tag: u8) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ETHERTYPE.to_be_bytes());
    f.push(tag);
    f.extend((0..len.saturating_sub(f.len())).map(|i| (i % 251) as u8 ^ tag));
    f.truncate(len);
    f
}

/// Receives into `batch` until a frame with [`ETHERTYPE`] arrives; returns it (and the
/// truncated count seen meanwhile).
fn xdp_recv_one(s: &mut XdpSocket, batch: &mut Batch, timeout: Duration) -> (Option<Vec<u8>>, u64) {
    let start = Instant::now();
    let mut truncated = 0;
    while start.elapsed() < timeout {
        let mut pfd = libc::pollfd {
            fd: s.rx_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, 50) };
        let st = s.recv_batch(PortId(3), batch).expect("recv_batch");
        truncated += st.truncated;
        assert_eq!(st.frames, batch.len());
        if let Some(p) = batch
            .packets()
            .iter()
            .find(|p| p.data().get(12..14) == Some(&ETHERTYPE.to_be_bytes()[..]))
        {
            assert_eq!(p.ingress, PortId(3));
            return (Some(p.data().to_vec()), truncated);
        }
        if truncated > 0 {
            return (None, truncated);
        }
    }
    (None, truncated)
}

/// Both directions byte for byte over a veth with `mtu`; returns the socket's mode.
fn exchange(test: &str, mtu: Option<u16>) -> Option<XdpMode> {
    if skip(test, missing_root("network namespaces, XDP and AF_XDP")) {
        return None;
    }
    let lab = Lab::new().expect("lab");
    let pr = pair(&lab, mtu);
    assert_eq!(attached(&pr.x, pr.xi), None);
    let mut s = open_in(&pr.x, pr.xi, "xdp0").expect("open AF_XDP socket");
    let mode = s.mode();
    let (_, name) = attached(&pr.x, pr.xi).expect("a program while open");
    assert_eq!(name, "srmig_xsk");
    assert!(s.link_running().expect("link state"));
    let peer = peer_socket(&pr.p, pr.pi);
    let max = s.max_frame();
    assert_eq!(max, 3840);
    let wire_max = mtu.map_or(1514, |m| usize::from(m) + 14);
    let mut batch = Batch::new(64);

    // Peer -> XdpSocket: every size up to max_frame() (and the MTU).
    let rx_sizes: Vec<usize> = [60, 64, 128, 1000, 1514, 2048, max - 1, max]
        .into_iter()
        .filter(|&l| l <= wire_max)
        .collect();
    for (i, &len) in rx_sizes.iter().enumerate() {
        let f = frame(X_MAC, P_MAC, len, i as u8);
        peer_send(&peer, &f);
        let (got, truncated) = xdp_recv_one(&mut s, &mut batch, Duration::from_secs(5));
        assert_eq!(truncated, 0, "frame of {len} bytes");
        assert_eq!(got.as_deref(), Some(&f[..]), "frame of {len} bytes");
    }
    // A burst, received in batches, in order.
    let burst: Vec<Vec<u8>> = (0..200)
        .map(|i| frame(X_MAC, P_MAC, 60 + i % 900, (i % 256) as u8))
        .collect();
    for f in &burst {
        peer_send(&peer, f);
    }
    let mut got = Vec::new();
    let start = Instant::now();
    while got.len() < burst.len() && start.elapsed() < Duration::from_secs(5) {
        s.recv_batch(PortId(3), &mut batch).expect("recv_batch");
        got.extend(batch.packets().iter().map(|p| p.data().to_vec()));
    }
    assert_eq!(got.len(), burst.len(), "burst frames received");
    assert!(got == burst, "burst frames differ");
    // Longer than an AF_XDP frame: dropped by the kernel, counted as rx_dropped.
    if wire_max > max {
        let before = s.stats().expect("stats").rx_dropped;
        peer_send(&peer, &frame(X_MAC, P_MAC, wire_max, 0xee));
        let (got, _) = xdp_recv_one(&mut s, &mut batch, Duration::from_millis(500));
        assert_eq!(got, None);
        assert_eq!(s.stats().expect("stats").rx_dropped, before + 1);
        assert!(s.take_ring_drops().expect("drops") >= 1);
    }
    assert!(max < BUF_CAPACITY);

    // XdpSocket -> peer: up to max_frame() (and the MTU).
    let tx_sizes: Vec<usize> = [60, 61, 1000, 1514, BUF_CAPACITY, 3000, max]
        .into_iter()
        .filter(|&l| l <= wire_max)
        .collect();
    for (i, &len) in tx_sizes.iter().enumerate() {
        let f = frame(P_MAC, X_MAC, len, 0x80 | i as u8);
        s.send(&f).expect("send");
        s.flush().expect("flush");
        assert_eq!(
            peer_recv(&peer, Duration::from_secs(5)).as_deref(),
            Some(&f[..]),
            "frame of {len} bytes"
        );
    }
    assert_eq!(
        s.send(&vec![0u8; max + 1]),
        Err(XdpTxError::TooLong { len: max + 1, max })
    );
    // A burst larger than one kick (copy mode sends 32 per kick), one flush.
    let burst: Vec<Vec<u8>> = (0..300)
        .map(|i| frame(P_MAC, X_MAC, 60 + i % 500, (i % 256) as u8))
        .collect();
    for f in &burst {
        s.send(f).expect("send");
    }
    s.flush().expect("flush");
    let mut got = Vec::new();
    while got.len() < burst.len() {
        match peer_recv(&peer, Duration::from_secs(2)) {
            Some(f) => got.push(f),
            None => break,
        }
    }
    assert_eq!(got.len(), burst.len(), "burst frames at the peer");
    assert!(got == burst, "burst frames differ at the peer");
    assert_eq!(s.tx_pending(), 0);
    let st = s.stats().expect("stats");
    assert_eq!(st.rx_invalid_descs + st.tx_invalid_descs, 0, "{st:?}");

    drop(s);
    wait_until(
        "no XDP program after the socket is dropped",
        Duration::from_secs(5),
        Duration::from_millis(20),
        || match attached(&pr.x, pr.xi) {
            None => Ok(()),
            Some(p) => Err(p),
        },
        |p| format!("still attached: {p:?}"),
    );
    Some(mode)
}

#[test]
fn frames_both_ways_native_mode() {
    let mode = exchange("frames_both_ways_native_mode", None);
    // A veth runs XDP natively at the default MTU.
    if let Some(mode) = mode {
        assert_eq!(mode, XdpMode::Native);
    }
}

#[test]
fn frames_up_to_max_frame_generic_mode() {
    // MTU 4000: frames up to max_frame() (3840) both ways, a longer one dropped by the
    // kernel; too large an MTU for native XDP on a veth, so the program runs in generic mode.
    let mode = exchange("frames_up_to_max_frame_generic_mode", Some(4000));
    if let Some(mode) = mode {
        assert_eq!(mode, XdpMode::Generic);
    }
}

/// Kills the child on drop (a failing test leaves no process behind).
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn nothing_attached_after_sigkill() {
    if skip(
        "nothing_attached_after_sigkill",
        missing_root("network namespaces, XDP and AF_XDP"),
    ) {
        return;
    }
    let lab = Lab::new().expect("lab");
    let pr = pair(&lab, None);
    sigkill_leaves_nothing(&pr, "plain");
    // The fast path's program, with its AF_XDP socket and alone beside AF_PACKET (a jumbo
    // MTU): gone the same way. Fresh interfaces: the killed child's socket may hold queue 0
    // a little longer than its program stays attached.
    let lab = Lab::new().expect("lab");
    sigkill_leaves_nothing(&pair(&lab, None), "fast");
    let lab = Lab::new().expect("lab");
    sigkill_leaves_nothing(&pair(&lab, Some(9000)), "fast-alone");
}

/// Runs [`sigkill_child_helper`] in `pr.x` attaching `mode`'s program to xdp0, checks it is
/// attached, SIGKILLs the child and waits for the interface to have no XDP program.
fn sigkill_leaves_nothing(pr: &Pair, mode: &str) {
    let exe = std::env::current_exe().expect("test binary");
    let child = Command::new("ip")
        .args(["netns", "exec", pr.x.name()])
        .arg(exe)
        .args([
            "--exact",
            "sigkill_child_helper",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_ENV, "xdp0")
        .env(CHILD_MODE_ENV, mode)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let mut child = ChildGuard(child);
    let out = child.0.stdout.take().expect("stdout");
    let mut ready = false;
    for line in BufReader::new(out).lines() {
        let line = line.expect("child output");
        if line.trim() == "ready" {
            ready = true;
            break;
        }
    }
    assert!(ready, "the child ({mode}) exited before attaching");
    let (_, name) = attached(&pr.x, pr.xi).expect("the child's program");
    assert_eq!(name, "srmig_xsk");
    child.0.kill().expect("SIGKILL");
    child.0.wait().expect("reap");
    wait_until(
        &format!("no XDP program after the child ({mode}) was SIGKILLed"),
        Duration::from_secs(5),
        Duration::from_millis(20),
        || match attached(&pr.x, pr.xi) {
            None => Ok(()),
            Some(p) => Err(p),
        },
        |p| format!("still attached: {p:?}"),
    );
}

/// The child of [`nothing_attached_after_sigkill`]: opens an AF_XDP socket on the interface
/// named by [`CHILD_ENV`] (in its namespace), says `ready`, and waits to be killed. Does
/// nothing when run without the variable.
#[test]
#[ignore = "run by nothing_attached_after_sigkill as its child"]
#[allow(clippy::print_stdout)]
fn sigkill_child_helper() {
    let Ok(ifname) = std::env::var(CHILD_ENV) else {
        return;
    };
    let c = std::ffi::CString::new(ifname.clone()).expect("name");
    // SAFETY: `c` is a valid NUL-terminated string for the call.
    let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
    let mode = std::env::var(CHILD_MODE_ENV).unwrap_or_default();
    let opts = XdpOptions {
        fast_path: mode == "fast",
        ..XdpOptions::default()
    };
    let _held: Box<dyn std::any::Any> = if mode == "fast-alone" {
        Box::new(FastAttachment::attach(ifindex, &ifname).expect("attach the fast path"))
    } else {
        let s = XdpSocket::open(ifindex, &ifname, &opts).expect("open");
        assert_eq!(s.fast_path().is_some(), mode == "fast", "fast path loaded");
        Box::new(s)
    };
    println!("ready");
    std::thread::sleep(Duration::from_secs(60));
}

/// Loads the redirect program under `name` and attaches it through netlink in generic mode
/// (no link: it stays after the fds are closed, as an old srmigd's would).
fn netlink_attach(ns: &Netns, ifindex: u32, name: &str) {
    ns.run(|| {
        let map = bpf::create_xskmap(1).expect("map");
        let prog = bpf::load_xsk_program(name, &map).expect("load");
        bpf::netlink_set_xdp(ifindex, Some(&prog), XdpMode::Generic, None).expect("attach");
    })
    .expect("enter netns");
}

#[test]
fn stale_own_program_is_replaced_foreign_one_is_kept() {
    if skip(
        "stale_own_program_is_replaced_foreign_one_is_kept",
        missing_root("network namespaces, XDP and AF_XDP"),
    ) {
        return;
    }
    let lab = Lab::new().expect("lab");
    let pr = pair(&lab, None);

    // A srmig_xsk left through netlink: replaced.
    netlink_attach(&pr.x, pr.xi, "srmig_xsk");
    let (stale_id, name) = attached(&pr.x, pr.xi).expect("stale program");
    assert_eq!(name, "srmig_xsk");
    let s = open_in(&pr.x, pr.xi, "xdp0").expect("open over a stale program");
    let (id, name) = attached(&pr.x, pr.xi).expect("our program");
    assert_eq!(name, "srmig_xsk");
    assert_ne!(id, stale_id);

    // A second socket while the first holds its link: InUse, and the first stays.
    match open_in(&pr.x, pr.xi, "xdp0") {
        Err(XdpError::InUse { prog_id, .. }) => assert_eq!(prog_id, id),
        other => panic!("second open: {other:?}"),
    }
    assert_eq!(attached(&pr.x, pr.xi).map(|p| p.0), Some(id));
    drop(s);
    wait_until(
        "no XDP program after the socket is dropped",
        Duration::from_secs(5),
        Duration::from_millis(20),
        || match attached(&pr.x, pr.xi) {
            None => Ok(()),
            Some(p) => Err(p),
        },
        |p| format!("still attached: {p:?}"),
    );

    // Someone else's program: refused, left in place.
    netlink_attach(&pr.x, pr.xi, "foreign_prog");
    let (foreign_id, _) = attached(&pr.x, pr.xi).expect("foreign program");
    match open_in(&pr.x, pr.xi, "xdp0") {
        Err(XdpError::ForeignProgram { prog_id, name, .. }) => {
            assert_eq!((prog_id, name.as_str()), (foreign_id, "foreign_prog"));
        }
        other => panic!("open over a foreign program: {other:?}"),
    }
    assert_eq!(
        attached(&pr.x, pr.xi),
        Some((foreign_id, "foreign_prog".to_owned()))
    );
    // Remove it (the namespace's deletion would too).
    pr.x.run(|| bpf::netlink_set_xdp(pr.xi, None, XdpMode::Generic, None))
        .expect("enter netns")
        .expect("detach the foreign program");
    assert_eq!(attached(&pr.x, pr.xi), None);
    let _ = &pr.p;
}
