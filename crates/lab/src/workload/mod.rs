//! Workloads measured from inside the namespaces: the 1 ms [`probe`], HTTP-style session
//! opening ([`http`]) and TCP bulk throughput ([`tcp`]).
//!
//! Every workload is blocking std sockets on plain threads (one thread per role, entered into
//! its namespace with [`Netns::spawn`](crate::Netns::spawn)); timing uses
//! [`std::time::Instant`] (CLOCK_MONOTONIC, the same host clock in every namespace). Servers
//! run until stopped through their handle; clients run for a configured duration and return
//! their raw samples plus the summary that goes into the [`report`](crate::report).

pub mod http;
pub mod probe;
pub mod tcp;
mod tcp_info;

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::LabError;
use crate::netns::NetnsThread;

pub use tcp_info::{tcp_info, TcpInfoSample};

/// How often blocking server loops wake up to check their stop flag.
pub(crate) const POLL: Duration = Duration::from_millis(50);

/// Errors of the workloads.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// Entering a namespace or spawning a thread failed.
    #[error(transparent)]
    Lab(#[from] LabError),
    /// A socket operation failed.
    #[error("{context} failed")]
    Io {
        /// What was being done ("binding the probe responder to [fd00::2]:7").
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The configuration cannot work.
    #[error("invalid workload configuration: {0}")]
    Config(String),
    /// A workload thread panicked.
    #[error("workload thread {0} panicked")]
    Panicked(&'static str),
}

impl WorkloadError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> WorkloadError {
        let context = context.into();
        move |source| WorkloadError::Io { context, source }
    }
}

/// A server loop running in a namespace until [`stop`](Server::stop) is called.
#[derive(Debug)]
pub(crate) struct Server<T> {
    stop: Arc<AtomicBool>,
    thread: NetnsThread<Result<T, WorkloadError>>,
    name: &'static str,
}

impl<T> Server<T> {
    pub(crate) fn new(
        stop: Arc<AtomicBool>,
        thread: NetnsThread<Result<T, WorkloadError>>,
        name: &'static str,
    ) -> Server<T> {
        Server { stop, thread, name }
    }

    /// Asks the loop to stop and waits for its result.
    pub(crate) fn stop(self) -> Result<T, WorkloadError> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| WorkloadError::Panicked(self.name))?
    }
}

/// Milliseconds between `t0` and `t` as f64 (0 if `t` is earlier).
pub(crate) fn ms_since(t0: Instant, t: Instant) -> f64 {
    t.saturating_duration_since(t0).as_secs_f64() * 1e3
}

/// Sleeps until `deadline` (absolute, so a loop of deadlines does not drift).
pub(crate) fn sleep_until(deadline: Instant) {
    let now = Instant::now();
    if deadline > now {
        std::thread::sleep(deadline - now);
    }
}

/// Realtime priority of the probe's sender thread ([`realtime_sender`]).
const SENDER_RT_PRIORITY: i32 = 60;

/// Puts the calling thread (a probe's sender) under `SCHED_FIFO`, so that it sends on its
/// deadlines while the lab's own orchestration (`ip` processes at a pause) and the hosts'
/// daemons share the CPU (docs/order.md, session 36): a late
/// sender would show as a gap in the deliveries to the VM, counted as network downtime.
/// It sleeps between probes, so it takes little. Best effort (needs root); the thread's
/// scheduling goes back to what it was when the guard drops.
pub(crate) fn realtime_sender() -> RealtimeGuard {
    RealtimeGuard::enter(SENDER_RT_PRIORITY)
}

/// The calling thread's scheduling before [`realtime_sender`], put back on drop.
#[derive(Debug)]
pub(crate) struct RealtimeGuard {
    /// `(policy, priority)` to restore; `None`: nothing was changed.
    before: Option<(i32, i32)>,
}

#[allow(unsafe_code)]
impl RealtimeGuard {
    fn enter(priority: i32) -> RealtimeGuard {
        let mut old = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread; `old` is a valid sched_param to fill.
        let policy = unsafe { libc::sched_getscheduler(0) };
        // SAFETY: as above.
        if policy < 0 || unsafe { libc::sched_getparam(0, &mut old) } != 0 {
            return RealtimeGuard { before: None };
        }
        let param = libc::sched_param {
            sched_priority: priority,
        };
        // SAFETY: `param` is a valid sched_param; pid 0 is the calling thread.
        let set = unsafe {
            libc::sched_setscheduler(0, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, &param)
        };
        RealtimeGuard {
            before: (set == 0).then_some((policy, old.sched_priority)),
        }
    }

    /// Whether the thread runs at realtime priority because of this guard.
    #[cfg(test)]
    fn took(&self) -> bool {
        self.before.is_some()
    }
}

#[allow(unsafe_code)]
impl Drop for RealtimeGuard {
    fn drop(&mut self) {
        if let Some((policy, priority)) = self.before {
            let param = libc::sched_param {
                sched_priority: priority,
            };
            // SAFETY: as in `enter`; the policy (a reset-on-fork flag included, as
            // sched_getscheduler returned it) and priority are the thread's own earlier ones.
            unsafe { libc::sched_setscheduler(0, policy, &param) };
        }
    }
}

/// Lowers this thread's timer slack to 1 µs so `sleep` wakes close to its deadline
/// (the default 50 µs slack would be 5 % of a 1 ms probe interval). Best effort.
pub(crate) fn precise_timers() {
    let _ = nix::sys::prctl::set_timerslack(1_000);
}

/// Nearest-rank percentile (`q` in 0..=1) of an ascending slice; `None` if empty.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len() - 1))
        .copied()
}

/// Median of unsorted values (mean of the middle two for even counts); `None` if empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

#[cfg(test)]
mod tests {

    #[test]
    #[allow(unsafe_code)]
    fn a_realtime_sender_gets_its_old_scheduling_back() {
        // SAFETY: pid 0 is the calling thread.
        let policy = || unsafe { libc::sched_getscheduler(0) };
        let before = policy();
        {
            let guard = realtime_sender();
            if guard.took() {
                assert_eq!(policy(), libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK);
            } else {
                assert_eq!(policy(), before, "a refused change changes nothing");
            }
        }
        assert_eq!(policy(), before);
    }
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&v, 1.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
    }

    #[test]
    fn median_handles_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn sleep_until_past_deadline_returns_at_once() {
        let t = Instant::now();
        sleep_until(t);
        assert!(t.elapsed() < Duration::from_millis(50));
    }
}
