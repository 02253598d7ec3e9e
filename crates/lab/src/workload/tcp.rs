//! TCP bulk throughput towards the VM (the VM receives, as in the paper).
//!
//! The receiver in the VM accepts one connection and counts bytes in fixed bins (100 ms by
//! default) from the moment it accepted; only full bins are reported. The sender in the client
//! writes for `duration`, then half-closes and waits for the receiver's EOF. A sampler thread
//! reads the sender's `TCP_INFO` on its own clock meanwhile (every 10 ms) to report
//! `tcpi_total_retrans`, whether a retransmission timeout happened (`tcpi_total_rto`, or
//! `tcpi_backoff`/`tcpi_retransmits`/`TCP_CA_Loss` seen in a sample on kernels older than 6.7),
//! and the bytes the peer **acknowledged** per bin (`tcpi_bytes_acked`, Linux >= 4.1).
//!
//! The acknowledged bins are the measurement when the receiver cannot report (the C sink in a
//! QEMU guest): [`tcp_report_from_sender`]. They start when `connect` returns; each sample's
//! increase goes to the bin of the sample's time, so bytes acknowledged in the gap before a
//! sample that falls just past a boundary are counted in the next bin. Totals are exact; a bin
//! boundary is off by at most the gap between two samples: 10 ms plus the sampler's wake-up
//! latency, which [`SenderStats::max_sample_gap`] reports per run (10-20 ms on a busy 2-core
//! host, so up to 10-20 % of a 100 ms bin's bytes can move into its neighbour). Sampling does
//! not depend on `write` or `read` returning: the sampler does not share their loop.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::http::listen;
use super::tcp_info::{tcp_info, TcpInfoSample};
use super::{median, precise_timers, Server, WorkloadError, POLL};
use crate::netns::Netns;
use crate::report::TcpReport;

/// `tcpi_ca_state` value of `TCP_CA_Loss` (recovering from an RTO).
const TCP_CA_LOSS: u8 = 4;
/// Interval between `TCP_INFO` samples on the sender.
const INFO_EVERY: Duration = Duration::from_millis(10);
/// Write timeout of the sender: how far a stalled connection can overrun `duration`.
const WRITE_TIMEOUT: Duration = Duration::from_millis(10);
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
#[derive(Debug, Clone, PartialEq)]
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
    /// Payload bytes newly acknowledged by the peer per full bin, from the connection's
    /// establishment (empty when the kernel does not report `tcpi_bytes_acked`).
    pub acked_bins_bytes: Vec<u64>,
    /// Width of `acked_bins_bytes` bins.
    pub bin: Duration,
    /// Payload bytes acknowledged at the end: the final `tcpi_bytes_acked` minus the SYN and
    /// the FIN (0 when the kernel does not report the field).
    pub acked_bytes: u64,
    /// Largest interval between two `TCP_INFO` samples: how far a bin boundary can be off.
    pub max_sample_gap: Duration,
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
                });
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
    /// Width of the acknowledged-bytes bins (at least the 10 ms `TCP_INFO` sampling interval).
    pub bin: Duration,
}

impl TcpSenderConfig {
    /// Writes 128 KiB chunks to `target` for `duration`, binning acknowledged bytes by 100 ms.
    pub fn new(target: SocketAddr, duration: Duration) -> TcpSenderConfig {
        TcpSenderConfig {
            target,
            duration,
            chunk: 128 * 1024,
            bin: Duration::from_millis(100),
        }
    }

    fn validate(&self) -> Result<(), WorkloadError> {
        if self.chunk == 0 {
            return Err(WorkloadError::Config("tcp chunk must be > 0".into()));
        }
        if self.bin < INFO_EVERY {
            return Err(WorkloadError::Config(format!(
                "tcp bin ({:?}) must be at least the {INFO_EVERY:?} TCP_INFO sampling interval",
                self.bin
            )));
        }
        Ok(())
    }
}

/// Runs the bulk sender inside `ns` until `duration` elapsed and the receiver closed.
pub fn run_tcp_sender(ns: &Netns, config: &TcpSenderConfig) -> Result<SenderStats, WorkloadError> {
    config.validate()?;
    let config = config.clone();
    ns.run(move || send(&config))?
}

/// Connects, writes for `duration` while a sampler thread reads `TCP_INFO` on its own clock,
/// drains, and folds the samples into [`SenderStats`].
fn send(config: &TcpSenderConfig) -> Result<SenderStats, WorkloadError> {
    config.validate()?;
    let stream = TcpStream::connect_timeout(&config.target, Duration::from_secs(5)).map_err(
        WorkloadError::io(format!("connecting to {}", config.target)),
    )?;
    // The bins start here; the baseline sample (SYN acknowledged, no data yet) is taken before
    // the first write so no payload acknowledgement can precede it.
    let t0 = Instant::now();
    let mut sampling = Sampling::default();
    sampling.take(&stream, t0);
    // Short write timeout: a stalled connection must not overrun `duration` by more than this.
    stream
        .set_write_timeout(Some(WRITE_TIMEOUT))
        .map_err(WorkloadError::io("setting the sender write timeout"))?;
    let done = AtomicBool::new(false);
    let (written, sampling) = thread::scope(|scope| {
        let sampler = scope.spawn(|| sample_until(&stream, t0, sampling, &done));
        let written = write_for(&stream, config.chunk, config.duration)
            .and_then(|bytes| drain(&stream).map(|()| bytes));
        done.store(true, Ordering::Release);
        sampler.thread().unpark();
        let sampling = sampler
            .join()
            .map_err(|_| WorkloadError::Panicked("tcp-sampler"));
        (written, sampling)
    });
    let bytes_sent = written?;
    Ok(sampling?.into_stats(bytes_sent, config.bin))
}

/// Writes `chunk`-sized buffers until `duration` elapsed; returns the bytes written.
fn write_for(stream: &TcpStream, chunk: usize, duration: Duration) -> Result<u64, WorkloadError> {
    let payload = vec![0x5au8; chunk];
    let mut writer = stream;
    let mut sent = 0u64;
    let start = Instant::now();
    while start.elapsed() < duration {
        match writer.write(&payload) {
            Ok(n) => sent += n as u64,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(source) => {
                return Err(WorkloadError::Io {
                    context: "sending bulk data".into(),
                    source,
                });
            }
        }
    }
    Ok(sent)
}

/// Half-closes and waits for the receiver's EOF (all data acknowledged).
fn drain(stream: &TcpStream) -> Result<(), WorkloadError> {
    stream
        .shutdown(std::net::Shutdown::Write)
        .map_err(WorkloadError::io("half-closing the bulk connection"))?;
    stream
        .set_read_timeout(Some(POLL))
        .map_err(WorkloadError::io("setting the sender read timeout"))?;
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let mut reader = stream;
    let mut buf = [0u8; 64];
    loop {
        match reader.read(&mut buf) {
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
    }
    Ok(())
}

/// The sampler thread: one `TCP_INFO` sample every [`INFO_EVERY`] on absolute deadlines from
/// `t0`, independent of how long `write`/`read` block, and a last one once `done` is set (after
/// the receiver's EOF, so the final acknowledgements are in it).
fn sample_until(
    stream: &TcpStream,
    t0: Instant,
    mut sampling: Sampling,
    done: &AtomicBool,
) -> Sampling {
    precise_timers();
    let mut next = t0 + INFO_EVERY;
    loop {
        // `park_timeout` may wake early or spuriously; only the deadline or `done` count.
        while !done.load(Ordering::Acquire) {
            let now = Instant::now();
            if now >= next {
                break;
            }
            thread::park_timeout(next - now);
        }
        let last = done.load(Ordering::Acquire);
        sampling.take(stream, t0);
        if last {
            return sampling;
        }
        next += INFO_EVERY;
        // Fell behind (descheduled): skip the missed ticks rather than sample in a burst.
        let now = Instant::now();
        if next < now {
            next = now + INFO_EVERY;
        }
    }
}

/// What the samples taken so far say.
#[derive(Debug, Default)]
struct Sampling {
    last: TcpInfoSample,
    max_backoff: u8,
    max_retransmits: u8,
    saw_loss_state: bool,
    /// `(time since establishment, tcpi_bytes_acked)` of every sample that had the field.
    acked: Vec<(Duration, u64)>,
    /// Time of the previous successful sample, for `max_gap`.
    last_at: Option<Duration>,
    max_gap: Duration,
}

impl Sampling {
    fn take(&mut self, stream: &TcpStream, t0: Instant) {
        let Ok(info) = tcp_info(stream) else {
            return;
        };
        let at = t0.elapsed();
        if let Some(previous) = self.last_at {
            self.max_gap = self.max_gap.max(at.saturating_sub(previous));
        }
        self.last_at = Some(at);
        self.max_backoff = self.max_backoff.max(info.backoff);
        self.max_retransmits = self.max_retransmits.max(info.retransmits);
        self.saw_loss_state |= info.ca_state == TCP_CA_LOSS;
        if let Some(acked) = info.bytes_acked {
            self.acked.push((at, acked));
        }
        self.last = info;
    }

    /// Folds the samples into the stats. The first sample is the baseline (the SYN); payload
    /// acknowledged never exceeds what was written, which removes the FIN.
    fn into_stats(self, bytes_sent: u64, bin: Duration) -> SenderStats {
        let baseline = self.acked.first().map_or(0, |&(_, acked)| acked);
        let payload: Vec<(Duration, u64)> = self
            .acked
            .iter()
            .map(|&(at, acked)| (at, acked.saturating_sub(baseline).min(bytes_sent)))
            .collect();
        SenderStats {
            bytes_sent,
            last: self.last,
            max_backoff: self.max_backoff,
            max_retransmits: self.max_retransmits,
            saw_loss_state: self.saw_loss_state,
            acked_bins_bytes: bin_acked(&payload, bin),
            bin,
            acked_bytes: payload.last().map_or(0, |&(_, acked)| acked),
            max_sample_gap: self.max_gap,
        }
    }
}

/// Bytes newly acknowledged per full bin, from `(time since establishment, cumulative bytes
/// acknowledged since establishment)` samples in time order. Each sample's increase over the
/// largest earlier value goes to the bin of the sample's time; the measurement ends at the last
/// sample, and the bin it falls in (cut short) is not reported.
fn bin_acked(samples: &[(Duration, u64)], bin: Duration) -> Vec<u64> {
    let Some(&(end, _)) = samples.last() else {
        return Vec::new();
    };
    let full = bin_index(end, bin);
    let mut bins = vec![0u64; full];
    let mut previous = 0u64;
    for &(at, acked) in samples {
        let delta = acked.saturating_sub(previous);
        previous = previous.max(acked);
        if let Some(slot) = bins.get_mut(bin_index(at, bin)) {
            *slot += delta;
        }
    }
    bins
}

/// Combines both sides into the report: the receiver's bins and byte count.
pub fn tcp_report(receiver: &ReceiverStats, sender: &SenderStats) -> TcpReport {
    report_from_bins(
        &receiver.bins_bytes,
        receiver.bin,
        receiver.total_bytes,
        sender,
    )
}

/// The report from the sender alone, for receivers that cannot report bins (the C sink in a
/// QEMU guest): bins of bytes acknowledged by the peer, and the payload bytes acknowledged.
/// Bin boundaries are as precise as [`SenderStats::max_sample_gap`].
pub fn tcp_report_from_sender(sender: &SenderStats) -> TcpReport {
    report_from_bins(
        &sender.acked_bins_bytes,
        sender.bin,
        sender.acked_bytes,
        sender,
    )
}

fn report_from_bins(bins: &[u64], bin: Duration, bytes: u64, sender: &SenderStats) -> TcpReport {
    let secs = bin.as_secs_f64();
    let bins_mbps: Vec<f64> = bins.iter().map(|&b| b as f64 * 8.0 / secs / 1e6).collect();
    TcpReport {
        median_mbps: median(&bins_mbps).unwrap_or(0.0),
        worst_bin_mbps: bins_mbps.iter().copied().reduce(f64::min).unwrap_or(0.0),
        bins_mbps,
        retransmits: u64::from(sender.last.total_retrans),
        bin_ms: secs * 1e3,
        bytes,
        rto_seen: sender.rto_seen(),
        total_rto: sender.last.total_rto.map(u64::from),
        spurious_retransmits: sender.last.dsack_dups.map(u64::from),
        reordering_seen: sender.last.reord_seen.map(u64::from),
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

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn sender_stats() -> SenderStats {
        SenderStats {
            bytes_sent: 0,
            last: TcpInfoSample::default(),
            max_backoff: 0,
            max_retransmits: 0,
            saw_loss_state: false,
            acked_bins_bytes: Vec::new(),
            bin: ms(100),
            acked_bytes: 0,
            max_sample_gap: Duration::ZERO,
        }
    }

    #[test]
    fn acked_deltas_go_to_the_bin_of_the_sample_time() {
        let samples = [
            (ms(0), 0),
            (ms(10), 100),
            (ms(95), 300),
            // Acknowledged between 95 and 105 ms, counted at 105: the next bin.
            (ms(105), 350),
            (ms(199), 400),
            // Nothing sampled in 200..300 ms: a zero bin, not a missing one.
            (ms(310), 1_000),
            // In the bin cut short by the end: dropped, as the receiver drops it.
            (ms(350), 1_200),
        ];
        assert_eq!(bin_acked(&samples, ms(100)), vec![300, 100, 0]);
    }

    #[test]
    fn acked_bins_of_degenerate_series() {
        assert!(bin_acked(&[], ms(100)).is_empty());
        assert!(bin_acked(&[(ms(0), 0)], ms(100)).is_empty());
        assert!(bin_acked(&[(ms(0), 0), (ms(99), 500)], ms(100)).is_empty());
        // A counter that went backwards is not counted twice when it comes back.
        let samples = [(ms(10), 100), (ms(20), 90), (ms(30), 120), (ms(100), 120)];
        assert_eq!(bin_acked(&samples, ms(100)), vec![120]);
    }

    #[test]
    fn samples_drop_the_syn_and_the_fin() {
        let sampling = Sampling {
            // 1 = the SYN at establishment; 1002 = 1000 payload bytes + the FIN.
            acked: vec![
                (ms(0), 1),
                (ms(50), 501),
                (ms(150), 1_001),
                (ms(210), 1_002),
            ],
            ..Sampling::default()
        };
        let stats = sampling.into_stats(1_000, ms(100));
        assert_eq!(stats.acked_bins_bytes, vec![500, 500]);
        assert_eq!(stats.acked_bytes, 1_000);
        assert_eq!(stats.bin, ms(100));
        let none = Sampling::default().into_stats(1_000, ms(100));
        assert!(none.acked_bins_bytes.is_empty(), "old kernel: no bins");
        assert_eq!(none.acked_bytes, 0);
    }

    #[test]
    fn config_rejects_bins_finer_than_the_sampling() {
        let target: SocketAddr = "127.0.0.1:5001".parse().expect("literal");
        let mut config = TcpSenderConfig::new(target, ms(100));
        assert!(config.validate().is_ok());
        config.bin = ms(5);
        assert!(matches!(config.validate(), Err(WorkloadError::Config(_))));
        config.bin = ms(10);
        config.chunk = 0;
        assert!(matches!(config.validate(), Err(WorkloadError::Config(_))));
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
            acked_bins_bytes: vec![625_000, 625_000],
            bin: ms(50),
            acked_bytes: 1_300_000,
            ..sender_stats()
        };
        let r = tcp_report(&receiver, &sender);
        assert_eq!(r.bins_mbps, vec![100.0, 0.0, 200.0]);
        assert_eq!(r.median_mbps, 100.0);
        assert_eq!(r.worst_bin_mbps, 0.0);
        assert_eq!(r.retransmits, 7);
        assert_eq!(r.bytes, 3_750_000);
        assert_eq!(r.bin_ms, 100.0);
        assert!(r.rto_seen);

        let s = tcp_report_from_sender(&sender);
        assert_eq!(s.bins_mbps, vec![100.0, 100.0]);
        assert_eq!(s.bin_ms, 50.0);
        assert_eq!(s.bytes, 1_300_000);
        assert_eq!((s.retransmits, s.rto_seen), (7, true));
    }

    #[test]
    fn rto_detection_falls_back_to_samples_on_old_kernels() {
        let mut s = sender_stats();
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

        // The sender's own view: bytes the receiver acknowledged, binned from establishment.
        assert_eq!(sent.acked_bytes, recv.total_bytes, "{sent:?}");
        // Bin attribution is as precise as the sampling (a starved sampler thread on a busy
        // machine shifts bytes by up to its gap): allow one bin plus one per gap's worth.
        let shift_bins = 1 + (sent.max_sample_gap.as_nanos() / sent.bin.as_nanos()) as u64;
        let acked_sum: u64 = sent.acked_bins_bytes.iter().sum();
        let received_sum: u64 = recv.bins_bytes.iter().sum();
        let one_bin = recv
            .bins_bytes
            .iter()
            .chain(&sent.acked_bins_bytes)
            .copied()
            .max()
            .unwrap_or(0);
        assert!(
            acked_sum.abs_diff(received_sum) <= one_bin * shift_bins
                && recv.total_bytes - acked_sum <= one_bin * shift_bins,
            "acked {:?} vs received {:?} (total {})",
            sent.acked_bins_bytes,
            recv.bins_bytes,
            recv.total_bytes
        );
        assert!(
            sent.acked_bins_bytes.len().abs_diff(recv.bins_bytes.len()) <= 1,
            "acked {:?} vs received {:?}",
            sent.acked_bins_bytes,
            recv.bins_bytes
        );
        let from_sender = tcp_report_from_sender(&sent);
        // Not the worst bin: a sampler starved past a whole bin leaves that bin empty.
        assert!(from_sender.median_mbps > 1.0, "{from_sender:?}");
        assert_eq!(from_sender.bytes, recv.total_bytes);
        eprintln!(
            "receiver {:?}\nsender   {:?} (max sample gap {:?})",
            report.bins_mbps, from_sender.bins_mbps, sent.max_sample_gap
        );
    }
}
