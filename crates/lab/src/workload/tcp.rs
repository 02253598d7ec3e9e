//! TCP bulk throughput towards the VM (the VM receives, as in the paper).
//!
//! The receiver in the VM accepts one connection and counts bytes in fixed bins (100 ms by
//! default) from the moment it accepted; only full bins are reported. The sender in the client
//! writes for `duration`, then half-closes and waits for the receiver's EOF, sampling its own
//! `TCP_INFO` on the way (every ~10 ms) to report `tcpi_total_retrans` and whether a
//! retransmission timeout happened (`tcpi_total_rto`, or `tcpi_backoff`/`tcpi_retransmits`/
//! `TCP_CA_Loss` seen in a sample on kernels older than 6.7).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::http::listen;
use super::tcp_info::{tcp_info, TcpInfoSample};
use super::{median, Server, WorkloadError, POLL};
use crate::netns::Netns;
use crate::report::TcpReport;

/// `tcpi_ca_state` value of `TCP_CA_Loss` (recovering from an RTO).
const TCP_CA_LOSS: u8 = 4;
/// Interval between `TCP_INFO` samples on the sender.
const INFO_EVERY: Duration = Duration::from_millis(10);
/// How long the sender waits for the receiver's EOF after half-closing.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What the receiver measured.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceiverStats {
    /// Bytes per full bin.
    pub bins_bytes: Vec<u64>,
    /// Bin width.
    pub bin: Duration,
    /// All bytes received.
    pub total_bytes: u64,
}

/// What the sender measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SenderStats {
    /// Bytes written.
    pub bytes_sent: u64,
    /// Last `TCP_INFO` sample (end of the connection).
    pub last: TcpInfoSample,
    /// Largest `tcpi_backoff` sampled.
    pub max_backoff: u8,
    /// Largest `tcpi_retransmits` sampled.
    pub max_retransmits: u8,
    /// Whether `TCP_CA_Loss` was sampled.
    pub saw_loss_state: bool,
}

impl SenderStats {
    /// Whether at least one retransmission timeout happened.
    pub fn rto_seen(&self) -> bool {
        match self.last.total_rto {
            Some(n) => n > 0,
            None => self.max_backoff > 0 || self.max_retransmits > 0 || self.saw_loss_state,
        }
    }
}

/// The bulk receiver in the VM namespace.
#[derive(Debug)]
pub struct TcpReceiver {
    addr: SocketAddr,
    server: Server<ReceiverStats>,
}

impl TcpReceiver {
    /// Listens on `bind` inside `ns` and receives one connection, binning by `bin`.
    pub fn spawn(
        ns: &Netns,
        bind: SocketAddr,
        bin: Duration,
    ) -> Result<TcpReceiver, WorkloadError> {
        if bin.is_zero() {
            return Err(WorkloadError::Config("tcp bin must be > 0".into()));
        }
        let listener = ns.run(|| listen(bind))??;
        let addr = listener
            .local_addr()
            .map_err(WorkloadError::io("reading the TCP receiver address"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = ns.spawn("tcp-receiver", move || receive(&listener, bin, &flag))?;
        Ok(TcpReceiver {
            addr,
            server: Server::new(stop, thread, "tcp-receiver"),
        })
    }

    /// The listening address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits for the connection to end (or stops waiting for one) and returns the bins.
    pub fn finish(self) -> Result<ReceiverStats, WorkloadError> {
        self.server.stop()
    }
}

fn receive(
    listener: &TcpListener,
    bin: Duration,
    stop: &AtomicBool,
) -> Result<ReceiverStats, WorkloadError> {
    let mut empty = ReceiverStats {
        bins_bytes: Vec::new(),
        bin,
        total_bytes: 0,
    };
    let mut stream = loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(empty);
        }
        if let Ok((stream, _)) = listener.accept() {
            break stream;
        }
    };
    let t0 = Instant::now();
    stream
        .set_read_timeout(Some(POLL))
        .map_err(WorkloadError::io("setting the receiver read timeout"))?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut bins: Vec<u64> = Vec::new();
    let mut stopped_at: Option<Instant> = None;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let index = bin_index(t0.elapsed(), bin);
                if bins.len() <= index {
                    bins.resize(index + 1, 0);
                }
                bins[index] += n as u64;
                empty.total_bytes += n as u64;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                // Asked to finish but the sender never closes (e.g. the path stays cut).
                if stop.load(Ordering::Relaxed) {
                    let since = *stopped_at.get_or_insert_with(Instant::now);
                    if since.elapsed() >= DRAIN_TIMEOUT {
                        break;
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(WorkloadError::Io {
                    context: "receiving bulk data".into(),
                    source,
                })
            }
        }
    }
    // Only full bins: the last one is cut by the end of the connection.
    let full = bin_index(t0.elapsed(), bin);
    bins.resize(full, 0);
    empty.bins_bytes = bins;
    Ok(empty)
}

fn bin_index(elapsed: Duration, bin: Duration) -> usize {
    usize::try_from(elapsed.as_nanos() / bin.as_nanos()).unwrap_or(usize::MAX)
}

/// Configuration of the bulk sender.
#[derive(Debug, Clone)]
pub struct TcpSenderConfig {
    /// The receiver's address.
    pub target: SocketAddr,
    /// How long to keep writing.
    pub duration: Duration,
    /// Bytes per `write` call.
    pub chunk: usize,
}

impl TcpSenderConfig {
    /// Writes 128 KiB chunks to `target` for `duration`.
    pub fn new(target: SocketAddr, duration: Duration) -> TcpSenderConfig {
        TcpSenderConfig {
            target,
            duration,
            chunk: 128 * 1024,
        }
    }
}

/// Runs the bulk sender inside `ns` until `duration` elapsed and the receiver closed.
pub fn run_tcp_sender(ns: &Netns, config: &TcpSenderConfig) -> Result<SenderStats, WorkloadError> {
    if config.chunk == 0 {
        return Err(WorkloadError::Config("tcp chunk must be > 0".into()));
    }
    let config = config.clone();
    ns.run(move || send(&config))?
}

fn send(config: &TcpSenderConfig) -> Result<SenderStats, WorkloadError> {
    let mut stream = TcpStream::connect_timeout(&config.target, Duration::from_secs(5)).map_err(
        WorkloadError::io(format!("connecting to {}", config.target)),
    )?;
    // Short write timeout: a stalled connection must not overrun `duration`.
    stream
        .set_write_timeout(Some(POLL))
        .map_err(WorkloadError::io("setting the sender write timeout"))?;
    let payload = vec![0x5au8; config.chunk];
    let mut stats = SenderStats {
        bytes_sent: 0,
        last: TcpInfoSample::default(),
        max_backoff: 0,
        max_retransmits: 0,
        saw_loss_state: false,
    };
    let start = Instant::now();
    let mut next_sample = start;
    while start.elapsed() < config.duration {
        match stream.write(&payload) {
            Ok(n) => stats.bytes_sent += n as u64,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(source) => {
                return Err(WorkloadError::Io {
                    context: "sending bulk data".into(),
                    source,
                })
            }
        }
        if Instant::now() >= next_sample {
            sample(&stream, &mut stats);
            next_sample += INFO_EVERY;
        }
    }
    drain(&mut stream, &mut stats)?;
    Ok(stats)
}

/// Half-closes, waits for the receiver's EOF (all data acknowledged), takes the final sample.
fn drain(stream: &mut TcpStream, stats: &mut SenderStats) -> Result<(), WorkloadError> {
    stream
        .shutdown(std::net::Shutdown::Write)
        .map_err(WorkloadError::io("half-closing the bulk connection"))?;
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let mut buf = [0u8; 64];
    loop {
        sample(stream, stats);
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            // Reset after our FIN was handled: the data got there; nothing more to read.
            Err(_) => break,
        }
        if Instant::now() >= deadline {
            break;
        }
        // The read timeout is set only here so the write loop kept its own.
        let _ = stream.set_read_timeout(Some(POLL));
    }
    Ok(())
}

fn sample(stream: &TcpStream, stats: &mut SenderStats) {
    if let Ok(info) = tcp_info(stream) {
        stats.max_backoff = stats.max_backoff.max(info.backoff);
        stats.max_retransmits = stats.max_retransmits.max(info.retransmits);
        stats.saw_loss_state |= info.ca_state == TCP_CA_LOSS;
        stats.last = info;
    }
}

/// Combines both sides into the report.
pub fn tcp_report(receiver: &ReceiverStats, sender: &SenderStats) -> TcpReport {
    let secs = receiver.bin.as_secs_f64();
    let bins_mbps: Vec<f64> = receiver
        .bins_bytes
        .iter()
        .map(|&b| b as f64 * 8.0 / secs / 1e6)
        .collect();
    TcpReport {
        median_mbps: median(&bins_mbps).unwrap_or(0.0),
        worst_bin_mbps: bins_mbps.iter().copied().reduce(f64::min).unwrap_or(0.0),
        bins_mbps,
        retransmits: u64::from(sender.last.total_retrans),
        bin_ms: secs * 1e3,
        bytes: receiver.total_bytes,
        rto_seen: sender.rto_seen(),
        total_rto: sender.last.total_rto.map(u64::from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn bins_index_by_elapsed_time() {
        let bin = Duration::from_millis(100);
        assert_eq!(bin_index(Duration::from_millis(0), bin), 0);
        assert_eq!(bin_index(Duration::from_millis(99), bin), 0);
        assert_eq!(bin_index(Duration::from_millis(100), bin), 1);
        assert_eq!(bin_index(Duration::from_millis(1050), bin), 10);
    }

    #[test]
    fn report_converts_bins_to_mbps() {
        let receiver = ReceiverStats {
            bins_bytes: vec![1_250_000, 0, 2_500_000],
            bin: Duration::from_millis(100),
            total_bytes: 3_750_000,
        };
        let sender = SenderStats {
            bytes_sent: 3_750_000,
            last: TcpInfoSample {
                total_retrans: 7,
                total_rto: Some(1),
                ..TcpInfoSample::default()
            },
            max_backoff: 0,
            max_retransmits: 0,
            saw_loss_state: false,
        };
        let r = tcp_report(&receiver, &sender);
        assert_eq!(r.bins_mbps, vec![100.0, 0.0, 200.0]);
        assert_eq!(r.median_mbps, 100.0);
        assert_eq!(r.worst_bin_mbps, 0.0);
        assert_eq!(r.retransmits, 7);
        assert!(r.rto_seen);
    }

    #[test]
    fn rto_detection_falls_back_to_samples_on_old_kernels() {
        let mut s = SenderStats {
            bytes_sent: 0,
            last: TcpInfoSample::default(),
            max_backoff: 0,
            max_retransmits: 0,
            saw_loss_state: false,
        };
        assert!(!s.rto_seen());
        s.max_backoff = 1;
        assert!(s.rto_seen());
        s.last.total_rto = Some(0);
        assert!(!s.rto_seen(), "an exact kernel counter wins");
    }

    #[test]
    fn bulk_over_loopback_fills_every_bin() {
        let listener = listen("127.0.0.1:0".parse().expect("literal")).expect("listen");
        let addr = listener.local_addr().expect("addr");
        let stop = AtomicBool::new(false);
        let config = TcpSenderConfig::new(addr, Duration::from_millis(500));
        let (recv, sent) = thread::scope(|scope| {
            let receiver = scope.spawn(|| receive(&listener, Duration::from_millis(100), &stop));
            let sent = send(&config).expect("send");
            stop.store(true, Ordering::Relaxed);
            (receiver.join().expect("join").expect("receive"), sent)
        });
        assert_eq!(recv.total_bytes, sent.bytes_sent);
        assert!(
            (4..=6).contains(&recv.bins_bytes.len()),
            "{:?}",
            recv.bins_bytes
        );
        let report = tcp_report(&recv, &sent);
        assert!(report.worst_bin_mbps > 1.0, "{report:?}");
        assert_eq!(report.retransmits, u64::from(sent.last.total_retrans));
        assert!(sent.last.snd_cwnd > 0, "final TCP_INFO sample was taken");
    }
}
