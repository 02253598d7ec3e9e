//! The 1 ms probe: UDP probes with a sequence number, echoed by a responder in the VM.
//!
//! Payload (big-endian), padded with zeros to `payload_len`:
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                     magic "SRMP" (0x53524d50)                 |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                  run token (random per client run)            |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       sequence number (64)                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |               send time, ns since client start (64)           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The client sends probe `i` at `start + i * interval` (absolute deadlines: a late wake-up
//! does not shift the following probes), records its send time, and a second thread records
//! every answer's arrival time. [`analyze`] turns both into the summary and the raw series.
//! The responder echoes any datagram unchanged; the client ignores answers whose magic or token
//! does not match (strays from earlier runs).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, Socket, Type};

use super::{median, ms_since, precise_timers, sleep_until, Server, WorkloadError, POLL};
use crate::clock::WallAnchor;
use crate::netns::Netns;
use crate::report::{OneWayReport, ProbeReport, Reordered, WorstEcho, MAX_REORDERS_LISTED};

/// Payload magic, "SRMP".
const MAGIC: u32 = 0x5352_4d50;
/// Bytes of the header above.
pub const HEADER_LEN: usize = 24;
/// An answer later than baseline + this counts in `delayed_gt_10ms`.
const DELAYED_MS: f64 = 10.0;

/// How the baseline RTT (for `max_extra_delay_ms`) is obtained.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Baseline {
    /// Median RTT of the first `n` answered probes of this run.
    FirstProbes(usize),
    /// A fixed value, e.g. the median RTT of a separate no-migration run.
    FixedMs(f64),
}

/// Configuration of a probe client run.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// The responder's address.
    pub target: SocketAddr,
    /// Interval between probes (1 ms in the paper).
    pub interval: Duration,
    /// Number of probes to send.
    pub count: u64,
    /// Baseline RTT for the extra-delay figure.
    pub baseline: Baseline,
    /// How long to keep listening for answers after the last probe, and after the last
    /// answer while answers still arrive (a loaded machine delays them; up to
    /// [`MAX_LINGER_EXTENSION`] more): a late answer counts as delayed, not lost.
    pub linger: Duration,
    /// UDP payload size (at least [`HEADER_LEN`]).
    pub payload_len: usize,
}

impl ProbeConfig {
    /// 1 ms probes to `target` for `count` probes, baseline from the first 100 answers,
    /// 500 ms linger, 64-byte payload.
    pub fn new(target: SocketAddr, count: u64) -> ProbeConfig {
        ProbeConfig {
            target,
            interval: Duration::from_millis(1),
            count,
            baseline: Baseline::FirstProbes(100),
            linger: Duration::from_millis(500),
            payload_len: 64,
        }
    }

    fn validate(&self) -> Result<(), WorkloadError> {
        if self.payload_len < HEADER_LEN || self.payload_len > 65_000 {
            return Err(WorkloadError::Config(format!(
                "probe payload_len {} must be within {HEADER_LEN}..=65000",
                self.payload_len
            )));
        }
        if self.interval.is_zero() {
            return Err(WorkloadError::Config("probe interval must be > 0".into()));
        }
        Ok(())
    }
}

/// One probe in the raw series (received-vs-sent plots).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProbeSample {
    /// Sequence number.
    pub seq: u64,
    /// Send time, ms since the client started.
    pub sent_ms: f64,
    /// First answer's arrival time, ms since the client started; `None` if lost.
    pub received_ms: Option<f64>,
}

/// Summary and raw series of one probe run.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeResult {
    /// Summary for the report.
    pub report: ProbeReport,
    /// One sample per probe, in sequence order.
    pub samples: Vec<ProbeSample>,
    /// The run's token (in every probe: the responder's log tells the runs apart).
    pub token: u32,
    /// The client's start: the origin of `sent_ms` / `received_ms`.
    pub start: Instant,
}

/// An answer as seen by the receiving thread.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    /// Sequence number carried by the answer.
    pub seq: u64,
    /// Arrival time, ms since the client started.
    pub at_ms: f64,
}

/// Echo server for probes, running in the VM namespace.
#[derive(Debug)]
pub struct ProbeResponder {
    addr: SocketAddr,
    server: Server<ResponderLog>,
}

/// A probe that reached the VM.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VmArrival {
    /// The probe run's token.
    pub token: u32,
    /// Its sequence number.
    pub seq: u64,
    /// The kernel's receive timestamp of the datagram in the VM's network stack
    /// (`SO_TIMESTAMPNS`): the network delivered it then, however late the responder thread
    /// was scheduled to read it (on a loaded machine, milliseconds later). Where the kernel
    /// gives no timestamp, the time the responder read it.
    pub at: Instant,
    /// How long after `at` the responder read it, and echoed it at once: the lab's own
    /// share of the answer's round trip, not the network's.
    pub lag: Duration,
}

/// What the responder saw: the one-way view, at the VM.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResponderLog {
    /// Datagrams echoed.
    pub echoed: u64,
    /// Every probe that reached the VM, in arrival order.
    pub arrivals: Vec<VmArrival>,
    /// Datagrams whose arrival is the read time (no kernel timestamp).
    pub unstamped: u64,
}

impl ResponderLog {
    /// The one-way figures of the probe run `result` (its token), and each probe's arrival
    /// at the VM as an `Instant`, in arrival order (its own token only). The times of
    /// reordered probes are given since `origin`.
    pub fn one_way(
        &self,
        result: &ProbeResult,
        origin: Instant,
    ) -> (OneWayReport, Vec<(u64, Instant)>) {
        let mine: Vec<&VmArrival> = self
            .arrivals
            .iter()
            .filter(|a| a.token == result.token)
            .collect();
        let sent = result.report.sent;
        let mut seen = vec![false; usize::try_from(sent).unwrap_or(0)];
        let mut w = OneWayReport::default();
        let mut highest: Option<u64> = None;
        let mut worst: Option<WorstEcho> = None;
        for &&VmArrival { seq, at, lag, .. } in &mine {
            let Some(flag) = usize::try_from(seq).ok().and_then(|i| seen.get_mut(i)) else {
                continue;
            };
            if *flag {
                w.duplicated += 1;
                continue;
            }
            *flag = true;
            w.received += 1;
            let lag_ms = lag.as_secs_f64() * 1e3;
            w.max_responder_lag_ms = w.max_responder_lag_ms.max(lag_ms);
            // The echo of this first copy is the probe's first answer (the responder
            // answers copies in the order it reads them).
            let answered = usize::try_from(seq)
                .ok()
                .and_then(|i| result.samples.get(i))
                .and_then(|s| Some((s.sent_ms, s.received_ms?)));
            if let Some((sent_ms, received_ms)) = answered {
                let extra =
                    (received_ms - sent_ms - lag_ms - result.report.baseline_rtt_ms).max(0.0);
                if worst.as_ref().is_none_or(|w| extra > w.extra_ms) {
                    let at_ms = signed_ms(result.start, at);
                    worst = Some(WorstEcho {
                        seq,
                        extra_ms: extra,
                        to_vm_ms: at_ms - sent_ms,
                        responder_ms: lag_ms,
                        back_ms: received_ms - at_ms - lag_ms,
                        queue_behind_ms: 0.0,
                    });
                }
            }
            if let Some(after) = highest.filter(|&h| seq < h) {
                w.reordered += 1;
                if w.reorders.len() < MAX_REORDERS_LISTED {
                    w.reorders.push(Reordered {
                        seq,
                        after,
                        at_ms: at.saturating_duration_since(origin).as_secs_f64() * 1e3,
                    });
                }
            }
            highest = highest.max(Some(seq));
        }
        w.lost = sent - w.received;
        if let Some(worst) = &mut worst {
            // What reached the VM after it although sent before it arrived there: the rest of
            // a release (or of a queue) that the VM's kernel took in after it.
            let at_ms = worst.to_vm_ms
                + result
                    .samples
                    .get(usize::try_from(worst.seq).unwrap_or(usize::MAX))
                    .map_or(0.0, |s| s.sent_ms);
            let last = mine
                .iter()
                .filter(|a| {
                    usize::try_from(a.seq)
                        .ok()
                        .and_then(|i| result.samples.get(i))
                        .is_some_and(|s| s.sent_ms < at_ms)
                })
                .map(|a| signed_ms(result.start, a.at))
                .fold(at_ms, f64::max);
            worst.queue_behind_ms = last - at_ms;
        }
        w.max_extra_delay_ms = worst.as_ref().map(|w| w.extra_ms);
        w.worst_echo = worst;
        (w, mine.iter().map(|a| (a.seq, a.at)).collect())
    }
}

impl ProbeResponder {
    /// Binds `bind` inside `ns` and echoes every datagram back to its sender.
    pub fn spawn(ns: &Netns, bind: SocketAddr) -> Result<ProbeResponder, WorkloadError> {
        let socket = ns.run(|| bind_udp(bind))??;
        receive_timestamps(&socket, "the responder")?;
        let addr = socket
            .local_addr()
            .map_err(WorkloadError::io("reading the responder address"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = ns.spawn("probe-responder", move || echo_loop(&socket, &flag))?;
        Ok(ProbeResponder {
            addr,
            server: Server::new(stop, thread, "probe-responder"),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the responder; returns what it saw.
    pub fn stop(self) -> Result<ResponderLog, WorkloadError> {
        self.server.stop()
    }
}

/// Asks the kernel for each datagram's receive time (`SO_TIMESTAMPNS`, read by
/// [`recv_stamped`]).
fn receive_timestamps(socket: &UdpSocket, whose: &str) -> Result<(), WorkloadError> {
    nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::ReceiveTimestampns, &true)
        .map_err(|e| {
            WorkloadError::io(format!("enabling receive timestamps on {whose}"))(
                std::io::Error::from(e),
            )
        })
}

fn bind_udp(bind: SocketAddr) -> Result<UdpSocket, WorkloadError> {
    let socket = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))
        .map_err(WorkloadError::io("creating a UDP socket"))?;
    // Large buffers: a 200 ms burst of answers must not overflow them. Best effort.
    let _ = socket.set_recv_buffer_size(4 << 20);
    let _ = socket.set_send_buffer_size(4 << 20);
    socket
        .bind(&bind.into())
        .map_err(WorkloadError::io(format!("binding UDP {bind}")))?;
    socket
        .set_read_timeout(Some(POLL))
        .map_err(WorkloadError::io("setting the UDP read timeout"))?;
    Ok(socket.into())
}

fn echo_loop(socket: &UdpSocket, stop: &AtomicBool) -> Result<ResponderLog, WorkloadError> {
    precise_timers();
    let mut buf = vec![0u8; 65_536];
    let mut log = ResponderLog::default();
    let anchor = WallAnchor::now();
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, peer, stamp)) = recv_stamped(socket, &anchor, &mut buf) else {
            // Timeout (poll the stop flag) or a transient error reported by ICMP.
            continue;
        };
        let read = Instant::now();
        let at = stamp.unwrap_or_else(|| {
            log.unstamped += 1;
            read
        });
        if let Some((token, seq)) = decode_any(&buf[..n]) {
            log.arrivals.push(VmArrival {
                token,
                seq,
                at,
                lag: read.saturating_duration_since(at),
            });
        }
        if socket.send_to(&buf[..n], peer).is_ok() {
            log.echoed += 1;
        }
    }
    Ok(log)
}

/// `at` in milliseconds since `start`, negative before it.
fn signed_ms(start: Instant, at: Instant) -> f64 {
    if at >= start {
        at.duration_since(start).as_secs_f64() * 1e3
    } else {
        -(start.duration_since(at).as_secs_f64() * 1e3)
    }
}

/// Receives one datagram with its kernel receive timestamp (`SO_TIMESTAMPNS`, wall clock)
/// moved onto the monotonic clock through `anchor`.
fn recv_stamped(
    socket: &UdpSocket,
    anchor: &WallAnchor,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr, Option<Instant>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrLike, SockaddrStorage};
    use std::os::fd::AsRawFd;
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!(nix::sys::time::TimeSpec);
    let msg = recvmsg::<SockaddrStorage>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .map_err(std::io::Error::from)?;
    let n = msg.bytes;
    let mut stamp = None;
    for c in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmTimestampns(ts) = c {
            let at_wall = std::time::UNIX_EPOCH
                + Duration::new(
                    u64::try_from(ts.tv_sec()).unwrap_or(0),
                    u32::try_from(ts.tv_nsec()).unwrap_or(0),
                );
            stamp = anchor.instant(at_wall);
        }
    }
    let peer = msg
        .address
        .and_then(|a| match a.family() {
            Some(nix::sys::socket::AddressFamily::Inet6) => a
                .as_sockaddr_in6()
                .map(|s| SocketAddr::V6(std::net::SocketAddrV6::from(*s))),
            Some(nix::sys::socket::AddressFamily::Inet) => a
                .as_sockaddr_in()
                .map(|s| SocketAddr::V4(std::net::SocketAddrV4::from(*s))),
            _ => None,
        })
        .ok_or_else(|| std::io::Error::other("a datagram without a sender address"))?;
    Ok((n, peer, stamp))
}

/// Runs a probe client inside `ns` and returns once the last probe's linger has passed
/// (or every probe was answered).
pub fn run_probe(ns: &Netns, config: &ProbeConfig) -> Result<ProbeResult, WorkloadError> {
    config.validate()?;
    let config = config.clone();
    let bind: SocketAddr = match config.target {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    };
    ns.run(move || {
        let socket = bind_udp(bind)?;
        socket
            .connect(config.target)
            .map_err(WorkloadError::io(format!(
                "connecting UDP to {}",
                config.target
            )))?;
        client(&socket, &config)
    })?
}

/// How much longer than `linger` after the last probe the receiver waits for answers that
/// are still arriving.
pub const MAX_LINGER_EXTENSION: Duration = Duration::from_secs(5);

/// Sender on this thread, receiver on a scoped thread; then analysis.
fn client(socket: &UdpSocket, config: &ProbeConfig) -> Result<ProbeResult, WorkloadError> {
    receive_timestamps(socket, "the probe client")?;
    let token = run_token();
    let start = Instant::now();
    // ns since start after which the receiver stops; u64::MAX while sending.
    let stop_at = AtomicU64::new(u64::MAX);
    let (sent, send_errors, arrivals) = thread::scope(|scope| {
        let receiver =
            scope.spawn(|| receive(socket, token, start, config.count, config.linger, &stop_at));
        let (sent, errors) = send(socket, token, start, config);
        let end = start.elapsed() + config.linger;
        stop_at.store(
            u64::try_from(end.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let arrivals = receiver
            .join()
            .map_err(|_| WorkloadError::Panicked("probe-receiver"));
        arrivals.map(|a| (sent, errors, a))
    })?;
    let mut result = analyze(&sent, &arrivals, config.baseline);
    result.report.send_errors = send_errors;
    result.token = token;
    result.start = start;
    Ok(result)
}

/// Sends `config.count` probes on absolute deadlines; returns each send time (ms) and the
/// number of failed sends.
fn send(socket: &UdpSocket, token: u32, start: Instant, config: &ProbeConfig) -> (Vec<f64>, u64) {
    precise_timers();
    let _realtime = super::realtime_sender();
    let mut payload = vec![0u8; config.payload_len];
    let capacity = usize::try_from(config.count).unwrap_or(0);
    let mut sent = Vec::with_capacity(capacity);
    let mut errors = 0;
    let mut deadline = start;
    for seq in 0..config.count {
        sleep_until(deadline);
        let now = Instant::now();
        let ns = u64::try_from(now.duration_since(start).as_nanos()).unwrap_or(u64::MAX);
        encode(&mut payload, token, seq, ns);
        if socket.send(&payload).is_err() {
            // EHOSTUNREACH & co. from an earlier ICMP error, or no route: the probe is lost.
            errors += 1;
        }
        sent.push(ms_since(start, now));
        deadline += config.interval;
    }
    (sent, errors)
}

/// Collects answers until `stop_at` (ns since start) or until all `count` probes answered.
fn receive(
    socket: &UdpSocket,
    token: u32,
    start: Instant,
    count: u64,
    linger: Duration,
    stop_at: &AtomicU64,
) -> Vec<Arrival> {
    precise_timers();
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let (linger, extension) = (nanos(linger), nanos(MAX_LINGER_EXTENSION));
    let mut buf = [0u8; 2048];
    let mut arrivals = Vec::new();
    let mut seen = vec![false; usize::try_from(count).unwrap_or(0)];
    let anchor = WallAnchor::now();
    let mut distinct = 0u64;
    let mut last_answer = 0u64;
    loop {
        let elapsed = nanos(start.elapsed());
        let stop = stop_at.load(Ordering::Relaxed);
        // Past the linger, stop once answers have stopped coming for a linger too.
        let quiet = elapsed.saturating_sub(last_answer) >= linger;
        if (elapsed >= stop && (quiet || elapsed >= stop.saturating_add(extension)))
            || (count > 0 && distinct == count)
        {
            return arrivals;
        }
        // The kernel's receive time, not the time this thread got to read the answer: a
        // busy lab machine does not count as network delay.
        let Ok((n, _, stamp)) = recv_stamped(socket, &anchor, &mut buf) else {
            continue;
        };
        let at = stamp.unwrap_or_else(Instant::now);
        let Some(seq) = decode(&buf[..n.min(buf.len())], token) else {
            continue;
        };
        last_answer = nanos(at.saturating_duration_since(start));
        if let Some(flag) = usize::try_from(seq).ok().and_then(|i| seen.get_mut(i)) {
            if !*flag {
                *flag = true;
                distinct += 1;
            }
        }
        arrivals.push(Arrival {
            seq,
            at_ms: ms_since(start, at),
        });
    }
}

fn encode(buf: &mut [u8], token: u32, seq: u64, sent_ns: u64) {
    buf[0..4].copy_from_slice(&MAGIC.to_be_bytes());
    buf[4..8].copy_from_slice(&token.to_be_bytes());
    buf[8..16].copy_from_slice(&seq.to_be_bytes());
    buf[16..24].copy_from_slice(&sent_ns.to_be_bytes());
}

/// The sequence number of a valid answer of this run, or `None`.
fn decode(buf: &[u8], token: u32) -> Option<u64> {
    decode_any(buf).and_then(|(got, seq)| (got == token).then_some(seq))
}

/// The token and sequence number of a probe of any run, or `None`.
fn decode_any(buf: &[u8]) -> Option<(u32, u64)> {
    let field = |range: std::ops::Range<usize>| buf.get(range);
    let magic = u32::from_be_bytes(field(0..4)?.try_into().ok()?);
    if magic != MAGIC {
        return None;
    }
    let token = u32::from_be_bytes(field(4..8)?.try_into().ok()?);
    Some((token, u64::from_be_bytes(field(8..16)?.try_into().ok()?)))
}

/// A per-run token so answers to another run's probes are ignored.
fn run_token() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos ^ std::process::id().rotate_left(16)
}

/// Computes the summary and raw series from send times (index = seq) and arrivals (in
/// arrival order). Arrivals for unknown sequence numbers are ignored.
pub fn analyze(sent_ms: &[f64], arrivals: &[Arrival], baseline: Baseline) -> ProbeResult {
    let mut samples: Vec<ProbeSample> = sent_ms
        .iter()
        .enumerate()
        .map(|(i, &sent)| ProbeSample {
            seq: i as u64,
            sent_ms: sent,
            received_ms: None,
        })
        .collect();
    let (mut duplicated, mut reordered, mut received) = (0u64, 0u64, 0u64);
    let mut highest: Option<u64> = None;
    let mut rtts = Vec::with_capacity(arrivals.len());
    for arrival in arrivals {
        let Some(sample) = usize::try_from(arrival.seq)
            .ok()
            .and_then(|i| samples.get_mut(i))
        else {
            continue;
        };
        if sample.received_ms.is_some() {
            duplicated += 1;
            continue;
        }
        sample.received_ms = Some(arrival.at_ms);
        received += 1;
        rtts.push(arrival.at_ms - sample.sent_ms);
        if highest.is_some_and(|h| arrival.seq < h) {
            reordered += 1;
        }
        highest = highest.max(Some(arrival.seq));
    }
    let baseline_ms = match baseline {
        Baseline::FixedMs(ms) => ms,
        // `rtts` is in arrival order, which is send order apart from reordering.
        Baseline::FirstProbes(n) => median(&rtts[..n.min(rtts.len())]).unwrap_or(0.0),
    };
    let max_rtt = rtts.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sent = sent_ms.len() as u64;
    let report = ProbeReport {
        sent,
        received,
        lost: sent - received,
        duplicated,
        reordered,
        max_extra_delay_ms: if rtts.is_empty() {
            0.0
        } else {
            (max_rtt - baseline_ms).max(0.0)
        },
        baseline_rtt_ms: baseline_ms,
        median_rtt_ms: median(&rtts).unwrap_or(0.0),
        delayed_gt_10ms: rtts
            .iter()
            .filter(|&&r| r - baseline_ms > DELAYED_MS)
            .count() as u64,
        send_errors: 0,
        at_vm: None,
        echo: None,
    };
    ProbeResult {
        report,
        samples,
        token: 0,
        start: Instant::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrival(seq: u64, at_ms: f64) -> Arrival {
        Arrival { seq, at_ms }
    }

    #[test]
    fn payload_round_trips_and_rejects_strays() {
        let mut buf = [0u8; HEADER_LEN];
        encode(&mut buf, 77, 12_345, 999);
        assert_eq!(decode(&buf, 77), Some(12_345));
        assert_eq!(decode(&buf, 78), None, "other run's token");
        assert_eq!(decode(&buf[..10], 77), None, "truncated");
        buf[0] ^= 1;
        assert_eq!(decode(&buf, 77), None, "bad magic");
    }

    #[test]
    fn clean_run_has_no_loss_and_no_extra_delay() {
        let sent: Vec<f64> = (0..10).map(f64::from).collect();
        let arrivals: Vec<Arrival> = (0..10).map(|i| arrival(i, i as f64 + 0.1)).collect();
        let r = analyze(&sent, &arrivals, Baseline::FirstProbes(5));
        assert_eq!(
            (r.report.sent, r.report.received, r.report.lost),
            (10, 10, 0)
        );
        assert_eq!((r.report.duplicated, r.report.reordered), (0, 0));
        assert!(r.report.max_extra_delay_ms < 1e-9);
        assert!((r.report.baseline_rtt_ms - 0.1).abs() < 1e-9);
        assert_eq!(r.samples[3].received_ms, Some(3.1));
    }

    #[test]
    fn loss_duplicates_reordering_and_delay_are_counted() {
        let sent: Vec<f64> = (0..6).map(f64::from).collect();
        // 2 lost; 4 arrives before 3 (3 is reordered); 1 duplicated; 5 delayed by 20 ms.
        let arrivals = [
            arrival(0, 0.5),
            arrival(1, 1.5),
            arrival(1, 1.6),
            arrival(4, 4.5),
            arrival(3, 4.6),
            arrival(5, 25.5),
            arrival(99, 30.0),
        ];
        let r = analyze(&sent, &arrivals, Baseline::FixedMs(0.5));
        assert_eq!(r.report.received, 5);
        assert_eq!(r.report.lost, 1);
        assert_eq!(r.report.duplicated, 1);
        assert_eq!(r.report.reordered, 1);
        assert!((r.report.max_extra_delay_ms - 20.0).abs() < 1e-9);
        assert_eq!(r.report.delayed_gt_10ms, 1);
        assert_eq!(r.samples[2].received_ms, None);
    }

    #[test]
    fn one_way_lists_each_reordered_probe_with_its_time() {
        let origin = Instant::now();
        let at = |ms: u64| origin + Duration::from_millis(ms);
        let mut result = analyze(&[0.0; 40], &[], Baseline::FixedMs(0.5));
        result.token = 7;
        let token = result.token;
        // 0, 2, 1 (after 2), 3, then 39 and 4..=20 after it: 1 + 17 reordered, 16 listed.
        let mut order = vec![0u64, 2, 1, 3, 39];
        order.extend(4..=20);
        let log = ResponderLog {
            echoed: order.len() as u64,
            arrivals: order
                .iter()
                .enumerate()
                .map(|(i, &seq)| VmArrival {
                    token,
                    seq,
                    at: at(10 * i as u64),
                    lag: Duration::ZERO,
                })
                .chain([VmArrival {
                    token: token.wrapping_add(1),
                    seq: 5,
                    at: at(1),
                    lag: Duration::ZERO,
                }])
                .collect(),
            unstamped: 0,
        };
        let (w, mine) = log.one_way(&result, origin);
        assert_eq!(
            mine.len(),
            order.len(),
            "another run's token is not counted"
        );
        assert_eq!((w.received, w.lost, w.reordered), (22, 18, 18));
        assert_eq!(w.reorders.len(), MAX_REORDERS_LISTED);
        assert_eq!(
            w.reorders[0],
            Reordered {
                seq: 1,
                after: 2,
                at_ms: 20.0
            }
        );
        assert_eq!((w.reorders[1].seq, w.reorders[1].after), (4, 39));
        assert!((w.reorders[1].at_ms - 50.0).abs() < 1e-6);
    }

    #[test]
    fn the_worst_echo_is_taken_apart_without_the_responders_lag() {
        // Probe 0 held 100 ms, then 1 to 3 behind it; the responder read probe 0 0.2 ms late.
        let sent = [0.0, 1.0, 2.0, 3.0];
        let answers = [(0, 110.0), (1, 110.5), (2, 111.0), (3, 103.6)];
        let arrivals: Vec<Arrival> = answers.iter().map(|&(s, at)| arrival(s, at)).collect();
        let mut result = analyze(&sent, &arrivals, Baseline::FixedMs(0.5));
        result.token = 9;
        let at = |ms: f64| result.start + Duration::from_secs_f64(ms / 1e3);
        let log = ResponderLog {
            echoed: 4,
            arrivals: [
                (0, 100.0, 0.2),
                (1, 100.5, 0.0),
                (2, 101.0, 0.0),
                (3, 103.0, 0.0),
            ]
            .iter()
            .map(|&(seq, ms, lag)| VmArrival {
                token: 9,
                seq,
                at: at(ms),
                lag: Duration::from_secs_f64(lag / 1e3),
            })
            .collect(),
            unstamped: 0,
        };
        let (w, _) = log.one_way(&result, result.start);
        let e = w.worst_echo.expect("a worst echo");
        let near = |a: f64, b: f64| (a - b).abs() < 1e-6;
        assert_eq!(e.seq, 0);
        assert!(near(e.extra_ms, 110.0 - 0.2 - 0.5), "{e:?}");
        assert!(
            near(e.to_vm_ms, 100.0) && near(e.responder_ms, 0.2),
            "{e:?}"
        );
        assert!(near(e.back_ms, 9.8), "{e:?}");
        // Probes 1 to 3 were sent before probe 0 reached the VM and arrived after it.
        assert!(near(e.queue_behind_ms, 3.0), "{e:?}");
        assert_eq!(w.max_extra_delay_ms, Some(e.extra_ms));
        assert!(near(w.max_responder_lag_ms, 0.2));
        // The echo's own figure keeps the lag.
        assert!(near(result.report.max_extra_delay_ms, 109.5));
    }

    #[test]
    fn nothing_received_reports_everything_lost() {
        let r = analyze(&[0.0, 1.0], &[], Baseline::FirstProbes(10));
        assert_eq!(r.report.lost, 2);
        assert_eq!(r.report.max_extra_delay_ms, 0.0);
    }

    #[test]
    fn probe_over_loopback_sees_every_answer() {
        // Runs in the current namespace through a fake Netns-free path: the client pieces.
        let responder_socket = bind_udp("127.0.0.1:0".parse().expect("literal")).expect("bind");
        let addr = responder_socket.local_addr().expect("addr");
        let stop = AtomicBool::new(false);
        let config = ProbeConfig {
            linger: Duration::from_millis(100),
            ..ProbeConfig::new(addr, 200)
        };
        let result = thread::scope(|scope| {
            let echo = scope.spawn(|| echo_loop(&responder_socket, &stop));
            let client_socket = bind_udp("127.0.0.1:0".parse().expect("literal")).expect("bind");
            client_socket.connect(addr).expect("connect");
            let result = client(&client_socket, &config).expect("client");
            stop.store(true, Ordering::Relaxed);
            let log = echo.join().expect("join").expect("echo");
            assert_eq!(log.echoed, 200);
            (result, log)
        });
        let (result, log) = result;
        // The one-way view at the responder: every probe once, in order.
        let (one_way, delivered) = log.one_way(&result, Instant::now());
        assert_eq!(
            (
                one_way.received,
                one_way.lost,
                one_way.duplicated,
                one_way.reordered
            ),
            (200, 0, 0, 0)
        );
        assert!(one_way.reorders.is_empty());
        // Kernel timestamps at both ends: the responder's lag is measured, and taking it
        // out of the echo leaves no more than the echo's own extra delay.
        let without_lag = one_way.max_extra_delay_ms.expect("answers");
        assert!(
            without_lag <= result.report.max_extra_delay_ms + 1e-9,
            "{without_lag} > {}",
            result.report.max_extra_delay_ms
        );
        assert!(one_way.max_responder_lag_ms >= 0.0);
        assert_eq!(delivered.len(), 200);
        let report = result.report.clone().with_one_way(OneWayReport {
            duplicated: 1,
            reordered: 3,
            ..one_way
        });
        assert_eq!(
            (report.duplicated, report.reordered),
            (1, 3),
            "the worse direction"
        );
        assert_eq!(
            report.echo.as_ref().map(|e| (e.duplicated, e.reordered)),
            Some((0, 0))
        );
        assert_eq!(result.report.lost, 0, "{:?}", result.report);
        assert_eq!(result.samples.len(), 200);
        // Absolute deadlines: the 200th probe leaves ~199 ms after the first, not later.
        let last = result.samples[199].sent_ms;
        assert!(
            (195.0..260.0).contains(&last),
            "last probe sent at {last} ms"
        );
    }
}
