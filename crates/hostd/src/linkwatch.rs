//! Link state from the kernel: a NETLINK_ROUTE socket subscribed to `RTMGRP_LINK`.
//!
//! The dataplane loop polls this socket with the ports. Every `RTM_NEWLINK` / `RTM_DELLINK`
//! becomes a [`LinkEvent`]; [`crate::port::PortIo::on_link_event`] turns it into an attach or
//! detach of a port, and a VM port's attachment is its VM's state (up: `running`; down or gone:
//! `paused`), as the paper learns it from the vhost-user link.
//!
//! Startup and overruns use a dump (`RTM_GETLINK` + `NLM_F_DUMP`) whose answers are ordinary
//! `RTM_NEWLINK` messages: the socket subscribes *before* dumping, so no change is missed.
//! If the kernel reports `ENOBUFS` (our receive queue overflowed and events were lost), a new
//! dump is requested.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{
    bind, recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};

const NLMSG_HDR_LEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const IFLA_IFNAME: u16 = 3;
/// `IFLA_MTU` (u32).
const IFLA_MTU: u16 = 4;
/// `IFLA_OPERSTATE` (RFC 2863 operational state, one byte).
const IFLA_OPERSTATE: u16 = 16;
/// `IF_OPER_UNKNOWN`, `IF_OPER_UP`.
const IF_OPER_UNKNOWN: u8 = 0;
const IF_OPER_UP: u8 = 6;
const NLA_TYPE_MASK: u16 = 0x3fff;
const RTMGRP_LINK: u32 = 1;
const IFF_UP: u32 = 0x1;
const IFF_LOWER_UP: u32 = 0x10000;

/// One interface's state as reported by the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkEvent {
    /// Interface index.
    pub ifindex: u32,
    /// Interface name (absent only in malformed messages).
    pub name: Option<String>,
    /// Administratively up with carrier (`IFF_UP` and `IFF_LOWER_UP`).
    pub up: bool,
    /// The interface left the namespace (deleted or moved away).
    pub removed: bool,
    /// Its MTU (`IFLA_MTU`), when the message carries it: a port attaching takes it from
    /// here instead of asking the kernel again (two system calls less before a resumed VM's
    /// first frame).
    pub mtu: Option<u32>,
}

/// What one read of the socket produced besides events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadOutcome {
    /// A dump finished (`NLMSG_DONE`).
    pub dump_done: bool,
    /// Events were lost (`ENOBUFS`): request a dump.
    pub overrun: bool,
    /// The kernel answered a request with an error (errno).
    pub error: Option<i32>,
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_ne_bytes([*b.get(o)?, *b.get(o + 1)?]))
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_ne_bytes([
        *b.get(o)?,
        *b.get(o + 1)?,
        *b.get(o + 2)?,
        *b.get(o + 3)?,
    ]))
}

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Parses a buffer of netlink messages; link messages are appended to `out`. Malformed
/// messages end the parse (the rest of the datagram is ignored), never panic.
pub fn parse_messages(buf: &[u8], out: &mut Vec<LinkEvent>) -> ReadOutcome {
    let mut outcome = ReadOutcome::default();
    let mut off = 0;
    while off + NLMSG_HDR_LEN <= buf.len() {
        let Some(len) = u32_at(buf, off).map(|l| l as usize) else {
            break;
        };
        let Some(ty) = u16_at(buf, off + 4) else {
            break;
        };
        if len < NLMSG_HDR_LEN || off + len > buf.len() {
            break;
        }
        let msg = &buf[off..off + len];
        match ty {
            NLMSG_DONE => outcome.dump_done = true,
            NLMSG_ERROR => {
                let errno = u32_at(msg, NLMSG_HDR_LEN).map_or(0, |e| e as i32);
                if errno != 0 {
                    outcome.error = Some(-errno);
                }
            }
            NLMSG_NOOP => {}
            RTM_NEWLINK | RTM_DELLINK => {
                if let Some(ev) = parse_link(msg, ty == RTM_DELLINK) {
                    out.push(ev);
                }
            }
            _ => {}
        }
        off += align4(len);
    }
    outcome
}

fn parse_link(msg: &[u8], removed: bool) -> Option<LinkEvent> {
    let body = NLMSG_HDR_LEN;
    let ifindex = u32_at(msg, body + 4)?;
    let flags = u32_at(msg, body + 8)?;
    let mut name = None;
    let mut operstate = None;
    let mut mtu = None;
    let mut a = body + IFINFOMSG_LEN;
    while a + 4 <= msg.len() {
        let alen = usize::from(u16_at(msg, a)?);
        let aty = u16_at(msg, a + 2)? & NLA_TYPE_MASK;
        if alen < 4 || a + alen > msg.len() {
            break;
        }
        if aty == IFLA_IFNAME {
            let v = &msg[a + 4..a + alen];
            let v = v.split(|&c| c == 0).next().unwrap_or(v);
            name = std::str::from_utf8(v).ok().map(str::to_owned);
        }
        if aty == IFLA_OPERSTATE && alen > 4 {
            operstate = Some(msg[a + 4]);
        }
        if aty == IFLA_MTU && alen >= 8 {
            mtu = u32_at(msg, a + 4).filter(|&m| m > 0);
        }
        a += align4(alen);
    }
    Some(LinkEvent {
        ifindex,
        name,
        // Up once the kernel has finished bringing the link up: administratively up, with
        // carrier, and operationally up (the kernel's link watch sets the operational state
        // after it has activated the device and told the protocols, a few hundred
        // microseconds after the carrier; a veth's peer gets its carrier at the same time).
        // Interfaces that do not track it say UNKNOWN, and a message without the attribute
        // does not hold the port back.
        up: !removed
            && flags & IFF_UP != 0
            && flags & IFF_LOWER_UP != 0
            && operstate.is_none_or(|o| o == IF_OPER_UP || o == IF_OPER_UNKNOWN),
        removed,
        mtu,
    })
}

/// The netlink socket.
#[derive(Debug)]
pub struct LinkWatch {
    fd: OwnedFd,
    buf: Vec<u8>,
    seq: u32,
    dumping: bool,
    dump_wanted: bool,
}

impl LinkWatch {
    /// Opens a non-blocking socket subscribed to link events.
    pub fn open() -> io::Result<LinkWatch> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )?;
        if setsockopt(&fd, sockopt::RcvBufForce, &(1 << 20)).is_err() {
            setsockopt(&fd, sockopt::RcvBuf, &(1 << 20))?;
        }
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, RTMGRP_LINK))?;
        Ok(LinkWatch {
            fd,
            buf: vec![0u8; 64 << 10],
            seq: 0,
            dumping: false,
            dump_wanted: false,
        })
    }

    /// Requests a dump of every link (answered as `RTM_NEWLINK` messages, then `NLMSG_DONE`).
    /// If a dump is in progress, another one is requested when it finishes.
    pub fn request_dump(&mut self) -> io::Result<()> {
        if self.dumping {
            self.dump_wanted = true;
            return Ok(());
        }
        self.seq = self.seq.wrapping_add(1);
        let mut req = [0u8; NLMSG_HDR_LEN + IFINFOMSG_LEN];
        let len = req.len() as u32;
        req[0..4].copy_from_slice(&len.to_ne_bytes());
        req[4..6].copy_from_slice(&RTM_GETLINK.to_ne_bytes());
        req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        req[8..12].copy_from_slice(&self.seq.to_ne_bytes());
        // ifinfomsg: family AF_UNSPEC, everything else zero.
        send(self.fd.as_raw_fd(), &req, MsgFlags::empty())?;
        self.dumping = true;
        Ok(())
    }

    /// Whether a dump is in progress.
    pub fn dumping(&self) -> bool {
        self.dumping
    }

    /// Reads every pending message; link events are appended to `out`.
    pub fn read_events(&mut self, out: &mut Vec<LinkEvent>) -> io::Result<ReadOutcome> {
        let mut total = ReadOutcome::default();
        loop {
            match recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => break,
                Ok(n) => {
                    let o = parse_messages(&self.buf[..n], out);
                    if o.dump_done {
                        total.dump_done = true;
                        self.dumping = false;
                    }
                    if o.error.is_some() {
                        total.error = o.error;
                        self.dumping = false;
                    }
                }
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(Errno::ENOBUFS) => {
                    total.overrun = true;
                    self.dump_wanted = true;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if self.dump_wanted && !self.dumping {
            self.dump_wanted = false;
            self.request_dump()?;
        }
        Ok(total)
    }

    /// Dumps every link and waits (up to `timeout`) for the answer: the startup snapshot.
    pub fn dump_now(&mut self, timeout: Duration) -> io::Result<Vec<LinkEvent>> {
        let mut out = Vec::new();
        self.request_dump()?;
        let deadline = Instant::now() + timeout;
        while self.dumping {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no answer to the netlink link dump",
                ));
            }
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let mut fds = [nix::poll::PollFd::new(
                self.fd.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms))?;
            let o = self.read_events(&mut out)?;
            if let Some(e) = o.error {
                return Err(io::Error::from_raw_os_error(e));
            }
        }
        Ok(out)
    }
}

impl AsFd for LinkWatch {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, v: &[u8]) -> Vec<u8> {
        let len = 4 + v.len();
        let mut a = Vec::new();
        a.extend_from_slice(&(len as u16).to_ne_bytes());
        a.extend_from_slice(&ty.to_ne_bytes());
        a.extend_from_slice(v);
        while a.len() % 4 != 0 {
            a.push(0);
        }
        a
    }

    fn link_msg(ty: u16, ifindex: u32, flags: u32, name: Option<&str>) -> Vec<u8> {
        let mut body = vec![0u8; IFINFOMSG_LEN];
        body[4..8].copy_from_slice(&ifindex.to_ne_bytes());
        body[8..12].copy_from_slice(&flags.to_ne_bytes());
        body.extend(attr(IFLA_MTU, &1500u32.to_ne_bytes()));
        if let Some(n) = name {
            let mut v = n.as_bytes().to_vec();
            v.push(0);
            body.extend(attr(IFLA_IFNAME, &v));
        }
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDR_LEN + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&[0u8; 10]);
        m.extend(body);
        m
    }

    #[test]
    fn a_link_is_up_once_operationally_up() {
        let with_oper = |oper: u8| {
            let mut m = link_msg(RTM_NEWLINK, 5, IFF_UP | IFF_LOWER_UP, Some("vm0"));
            m.extend(attr(IFLA_OPERSTATE, &[oper, 0, 0, 0]));
            let len = m.len() as u32;
            m[0..4].copy_from_slice(&len.to_ne_bytes());
            let mut out = Vec::new();
            parse_messages(&m, &mut out);
            out[0].up
        };
        assert!(!with_oper(2), "LOWERLAYERDOWN");
        assert!(!with_oper(5), "DORMANT");
        assert!(with_oper(IF_OPER_UP));
        assert!(with_oper(IF_OPER_UNKNOWN), "tun/tap and others");
    }

    #[test]
    fn parses_new_and_del_link() {
        let mut buf = link_msg(RTM_NEWLINK, 5, IFF_UP | IFF_LOWER_UP, Some("vm0"));
        buf.extend(link_msg(RTM_NEWLINK, 6, IFF_UP, Some("vm1")));
        buf.extend(link_msg(RTM_DELLINK, 5, IFF_UP | IFF_LOWER_UP, Some("vm0")));
        let mut done = vec![0u8; NLMSG_HDR_LEN + 4];
        done[0..4].copy_from_slice(&((NLMSG_HDR_LEN + 4) as u32).to_ne_bytes());
        done[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        buf.extend(done);
        let mut out = Vec::new();
        let o = parse_messages(&buf, &mut out);
        assert!(o.dump_done);
        assert_eq!(o.error, None);
        assert_eq!(
            out,
            vec![
                LinkEvent {
                    ifindex: 5,
                    name: Some("vm0".into()),
                    up: true,
                    removed: false,
                    mtu: Some(1500)
                },
                // Admin up without carrier is not attached.
                LinkEvent {
                    ifindex: 6,
                    name: Some("vm1".into()),
                    up: false,
                    removed: false,
                    mtu: Some(1500)
                },
                LinkEvent {
                    ifindex: 5,
                    name: Some("vm0".into()),
                    up: false,
                    removed: true,
                    mtu: Some(1500)
                },
            ]
        );
    }

    #[test]
    fn error_message_and_garbage() {
        let mut m = vec![0u8; NLMSG_HDR_LEN + 4];
        m[0..4].copy_from_slice(&((NLMSG_HDR_LEN + 4) as u32).to_ne_bytes());
        m[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        m[16..20].copy_from_slice(&(-16i32).to_ne_bytes());
        let mut out = Vec::new();
        assert_eq!(parse_messages(&m, &mut out).error, Some(16));
        // Truncated and oversized lengths, short attributes: no panic, no event.
        for bad in [
            vec![0xffu8; 7],
            {
                let mut b = link_msg(RTM_NEWLINK, 1, 0, Some("x"));
                b[0] = 0xff;
                b
            },
            {
                let mut b = link_msg(RTM_NEWLINK, 1, 0, Some("x"));
                b.truncate(NLMSG_HDR_LEN + 8);
                b[0..4].copy_from_slice(&((NLMSG_HDR_LEN + 8) as u32).to_ne_bytes());
                b
            },
        ] {
            let mut out = Vec::new();
            parse_messages(&bad, &mut out);
            assert!(out.is_empty(), "{bad:?}");
        }
    }

    #[test]
    fn parser_never_panics_on_random_bytes() {
        let mut x: u64 = 0x1234_5678_9abc_def1;
        for len in 0..400 {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let mut out = Vec::new();
            parse_messages(&buf, &mut out);
        }
    }

    #[test]
    fn dump_sees_loopback() {
        // Unprivileged: NETLINK_ROUTE dumps are allowed to everyone.
        let mut w = LinkWatch::open().expect("netlink socket");
        let links = w.dump_now(Duration::from_secs(2)).expect("dump");
        assert!(
            links.iter().any(|l| l.name.as_deref() == Some("lo")),
            "{links:?}"
        );
    }
}
