//! HTTP-style session opening: every request is a new TCP connection (connect, `GET /`, read
//! the whole response, close), as in the paper's HTTP latency measurement, so a lost SYN shows
//! up as the 1 s SYN-retransmission mode.
//!
//! The client schedules requests at `rate_per_s` on absolute deadlines; a pool of `workers`
//! threads executes them, so one stalled connection does not delay the others (as long as
//! fewer than `workers` are stalled at once; `max_start_delay_ms` shows when that happened).
//! Latency is measured from the moment a worker starts `connect` to the last response byte.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, Socket, Type};

use super::{ms_since, percentile, precise_timers, sleep_until, Server, WorkloadError, POLL};
use crate::netns::Netns;
use crate::report::HttpReport;

/// Response body served for every request.
const BODY: &[u8] = b"srmig lab says hello\n";
/// Largest request the server reads.
const MAX_REQUEST: usize = 8192;
/// How long the server waits for a request on an accepted connection.
const SERVER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests at least this slow count in `slow_ge_900ms`.
const SLOW_MS: f64 = 900.0;

/// A tiny HTTP/1.0 server in the VM namespace.
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    server: Server<u64>,
}

impl HttpServer {
    /// Listens on `bind` inside `ns`; each connection is served on its own thread.
    pub fn spawn(ns: &Netns, bind: SocketAddr) -> Result<HttpServer, WorkloadError> {
        let listener = ns.run(|| listen(bind))??;
        let addr = listener
            .local_addr()
            .map_err(WorkloadError::io("reading the HTTP server address"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = ns.spawn("http-server", move || accept_loop(&listener, &flag))?;
        Ok(HttpServer {
            addr,
            server: Server::new(stop, thread, "http-server"),
        })
    }

    /// The listening address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, waits for connections in progress; returns how many were served.
    pub fn stop(self) -> Result<u64, WorkloadError> {
        self.server.stop()
    }
}

/// A listening TCP socket whose `accept` times out after [`POLL`] (SO_RCVTIMEO applies to
/// `accept` on Linux), so accept loops can poll a stop flag.
pub(crate) fn listen(bind: SocketAddr) -> Result<TcpListener, WorkloadError> {
    let socket = Socket::new(Domain::for_address(bind), Type::STREAM, Some(Protocol::TCP))
        .map_err(WorkloadError::io("creating a TCP socket"))?;
    socket
        .set_reuse_address(true)
        .map_err(WorkloadError::io("setting SO_REUSEADDR"))?;
    socket
        .bind(&bind.into())
        .map_err(WorkloadError::io(format!("binding TCP {bind}")))?;
    socket
        .listen(1024)
        .map_err(WorkloadError::io(format!("listening on {bind}")))?;
    socket
        .set_read_timeout(Some(POLL))
        .map_err(WorkloadError::io("setting the accept timeout"))?;
    Ok(socket.into())
}

fn accept_loop(listener: &TcpListener, stop: &AtomicBool) -> Result<u64, WorkloadError> {
    let mut served = 0;
    let mut handlers: Vec<JoinHandle<bool>> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let Ok((stream, _)) = listener.accept() else {
            continue;
        };
        // Threads spawned from here inherit this thread's network namespace.
        if let Ok(handle) = thread::Builder::new()
            .name("http-conn".into())
            .spawn(move || serve(stream))
        {
            handlers.push(handle);
        }
        served += reap(&mut handlers, false);
    }
    served += reap(&mut handlers, true);
    Ok(served)
}

/// Joins finished handlers (all of them if `all`); returns how many served a response.
fn reap(handlers: &mut Vec<JoinHandle<bool>>, all: bool) -> u64 {
    let mut served = 0;
    let mut pending = Vec::with_capacity(handlers.len());
    for handle in handlers.drain(..) {
        if all || handle.is_finished() {
            served += u64::from(handle.join().unwrap_or(false));
        } else {
            pending.push(handle);
        }
    }
    *handlers = pending;
    served
}

/// Reads one request head and writes the response; true if a response was written.
fn serve(mut stream: TcpStream) -> bool {
    let _ = stream.set_read_timeout(Some(SERVER_READ_TIMEOUT));
    let _ = stream.set_write_timeout(Some(SERVER_READ_TIMEOUT));
    let _ = stream.set_nodelay(true);
    let mut request = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
        if request.len() > MAX_REQUEST {
            return false;
        }
    }
    let head = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        BODY.len()
    );
    let mut response = head.into_bytes();
    response.extend_from_slice(BODY);
    stream.write_all(&response).is_ok()
}

/// Configuration of the HTTP client.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// The server's address.
    pub target: SocketAddr,
    /// New connections per second.
    pub rate_per_s: u32,
    /// How long to keep starting requests.
    pub duration: Duration,
    /// Worker threads executing requests concurrently.
    pub workers: usize,
    /// Per-request limit (connect + response); a request over it fails.
    pub timeout: Duration,
}

impl HttpConfig {
    /// 100 requests/s for `duration`, 64 workers, 5 s timeout (room for two SYN retries).
    pub fn new(target: SocketAddr, duration: Duration) -> HttpConfig {
        HttpConfig {
            target,
            rate_per_s: 100,
            duration,
            workers: 64,
            timeout: Duration::from_secs(5),
        }
    }

    fn validate(&self) -> Result<(), WorkloadError> {
        if self.rate_per_s == 0 || self.workers == 0 || self.timeout.is_zero() {
            return Err(WorkloadError::Config(
                "http rate_per_s, workers and timeout must be > 0".into(),
            ));
        }
        Ok(())
    }
}

/// One request in the raw series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpSample {
    /// Scheduled start, ms since the client started.
    pub scheduled_ms: f64,
    /// Actual start (worker began `connect`), ms since the client started.
    pub start_ms: f64,
    /// Connect to last response byte, ms; `None` if the request failed.
    pub latency_ms: Option<f64>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// Summary and raw series of one HTTP run.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpResult {
    /// Summary for the report.
    pub report: HttpReport,
    /// One sample per request, in scheduled order.
    pub samples: Vec<HttpSample>,
}

/// Runs the HTTP client inside `ns` and returns when every request finished.
pub fn run_http(ns: &Netns, config: &HttpConfig) -> Result<HttpResult, WorkloadError> {
    config.validate()?;
    let config = config.clone();
    ns.run(move || client(&config))?
}

fn client(config: &HttpConfig) -> Result<HttpResult, WorkloadError> {
    let start = Instant::now();
    let (jobs_tx, jobs_rx) = mpsc::channel::<(usize, Instant)>();
    let jobs_rx = Mutex::new(jobs_rx);
    let interval = Duration::from_secs(1) / config.rate_per_s;
    let total = (config.duration.as_secs_f64() * f64::from(config.rate_per_s)).round() as usize;
    let results = thread::scope(|scope| {
        let workers: Vec<_> = (0..config.workers)
            .map(|_| scope.spawn(|| worker(&jobs_rx, config, start)))
            .collect();
        precise_timers();
        for i in 0..total {
            let deadline = start + interval * u32::try_from(i).unwrap_or(u32::MAX);
            sleep_until(deadline);
            // Workers only stop once the sender is dropped, so the channel is open.
            let _ = jobs_tx.send((i, deadline));
        }
        drop(jobs_tx);
        let mut samples = Vec::with_capacity(total);
        for handle in workers {
            samples.extend(
                handle
                    .join()
                    .map_err(|_| WorkloadError::Panicked("http-worker"))?,
            );
        }
        Ok::<_, WorkloadError>(samples)
    })?;
    let mut results = results;
    results.sort_by_key(|(i, _)| *i);
    let samples: Vec<HttpSample> = results.into_iter().map(|(_, s)| s).collect();
    Ok(HttpResult {
        report: summarize(&samples),
        samples,
    })
}

/// Takes jobs until the channel closes; returns (index, sample) pairs.
fn worker(
    jobs: &Mutex<mpsc::Receiver<(usize, Instant)>>,
    config: &HttpConfig,
    start: Instant,
) -> Vec<(usize, HttpSample)> {
    let mut out = Vec::new();
    loop {
        let job = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok((index, scheduled)) = job else {
            return out;
        };
        let began = Instant::now();
        let outcome = request(config.target, config.timeout);
        let done = Instant::now();
        let (latency_ms, error) = match outcome {
            Ok(()) => (Some(ms_since(began, done)), None),
            Err(err) => (None, Some(err)),
        };
        out.push((
            index,
            HttpSample {
                scheduled_ms: ms_since(start, scheduled),
                start_ms: ms_since(start, began),
                latency_ms,
                error,
            },
        ));
    }
}

/// One session: connect, `GET /`, read to EOF, check the status line.
fn request(target: SocketAddr, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut stream =
        TcpStream::connect_timeout(&target, timeout).map_err(|e| format!("connect: {e}"))?;
    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return Err("timeout after connect".into());
    }
    stream
        .set_read_timeout(Some(remaining))
        .and_then(|()| stream.set_write_timeout(Some(remaining)))
        .and_then(|()| stream.set_nodelay(true))
        .map_err(|e| format!("socket options: {e}"))?;
    stream
        .write_all(format!("GET / HTTP/1.0\r\nHost: {target}\r\n\r\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut response = Vec::with_capacity(256);
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    if !response.starts_with(b"HTTP/1.0 200") && !response.starts_with(b"HTTP/1.1 200") {
        return Err(format!("bad response ({} bytes)", response.len()));
    }
    if !response.ends_with(BODY) {
        return Err("truncated response".into());
    }
    Ok(())
}

/// Summary of a set of samples; percentiles over successful requests only.
pub fn summarize(samples: &[HttpSample]) -> HttpReport {
    let mut ok: Vec<f64> = samples.iter().filter_map(|s| s.latency_ms).collect();
    ok.sort_by(f64::total_cmp);
    let max_start_delay_ms = samples
        .iter()
        .map(|s| s.start_ms - s.scheduled_ms)
        .fold(0.0, f64::max);
    HttpReport {
        requests: samples.len() as u64,
        failed: (samples.len() - ok.len()) as u64,
        p50_ms: percentile(&ok, 0.50).unwrap_or(0.0),
        p99_ms: percentile(&ok, 0.99).unwrap_or(0.0),
        max_ms: ok.last().copied().unwrap_or(0.0),
        slow_ge_900ms: ok.iter().filter(|&&l| l >= SLOW_MS).count() as u64,
        max_start_delay_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(latency_ms: Option<f64>) -> HttpSample {
        HttpSample {
            scheduled_ms: 0.0,
            start_ms: 0.5,
            latency_ms,
            error: latency_ms.is_none().then(|| "x".to_owned()),
        }
    }

    #[test]
    fn summary_counts_failures_and_slow_requests() {
        let mut samples: Vec<HttpSample> = (1..=99).map(|i| sample(Some(f64::from(i)))).collect();
        samples.push(sample(Some(1003.0)));
        samples.push(sample(None));
        let r = summarize(&samples);
        assert_eq!(r.requests, 101);
        assert_eq!(r.failed, 1);
        assert_eq!(r.slow_ge_900ms, 1);
        assert_eq!(r.max_ms, 1003.0);
        assert_eq!(r.p50_ms, 50.0);
        assert_eq!(r.p99_ms, 99.0);
        assert!((r.max_start_delay_ms - 0.5).abs() < 1e-9);
    }

    #[test]
    fn empty_run_summarizes_to_zeros() {
        let r = summarize(&[]);
        assert_eq!((r.requests, r.failed, r.slow_ge_900ms), (0, 0, 0));
    }

    #[test]
    fn client_and_server_over_loopback() {
        let listener = listen("127.0.0.1:0".parse().expect("literal")).expect("listen");
        let addr = listener.local_addr().expect("addr");
        let stop = AtomicBool::new(false);
        let config = HttpConfig {
            rate_per_s: 200,
            workers: 8,
            ..HttpConfig::new(addr, Duration::from_millis(250))
        };
        let (result, served) = thread::scope(|scope| {
            let server = scope.spawn(|| accept_loop(&listener, &stop));
            let result = client(&config).expect("client");
            stop.store(true, Ordering::Relaxed);
            (result, server.join().expect("join").expect("server"))
        });
        assert_eq!(result.report.requests, 50);
        assert_eq!(result.report.failed, 0, "{:?}", result.samples);
        assert_eq!(served, 50);
        assert!(result.report.p50_ms < 100.0, "{:?}", result.report);
    }

    #[test]
    fn refused_connection_is_a_failure() {
        // Bind then drop to get a port with (very likely) no listener.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind");
        let err = request(port, Duration::from_secs(1)).expect_err("must fail");
        assert!(err.starts_with("connect"), "{err}");
    }
}
