//! The workloads' state and figures: probe streams and HTTP session openings between a client
//! VM and a target VM. Their packets are real frames through the real dataplanes; this module
//! only keeps what each end saw.
//!
//! - **Probe** (the paper's 1 ms ping): the client sends a datagram with a sequence number
//!   every interval, the VM answers each. Counted at the VM (one-way: received, duplicated,
//!   reordered, and the times of arrival, whose largest gap during a migration is the
//!   network downtime the VM saw) and at the client (answered, round-trip times).
//! - **HTTP** session opening (the paper's HTTP latency): SYN, SYN-ACK, request, response.
//!   The client retransmits the SYN after 1 s, then 2 s, 4 s (Linux's initial SYN RTO), and
//!   the request after 200 ms, doubling (Linux's minimum RTO); a session's latency is from
//!   its first SYN to the response, so a lost SYN shows as the 1 s mode the paper measured.

use crate::queue::Nanos;

/// Linux's initial SYN retransmission timeout.
pub const SYN_RTO_NS: Nanos = 1_000_000_000;
/// Linux's minimum retransmission timeout (the request).
pub const MIN_RTO_NS: Nanos = 200_000_000;
/// Retransmissions before a session is given up.
pub const MAX_TRIES: u32 = 6;

/// One probe stream from a client VM to a target VM.
#[derive(Debug, Clone)]
pub struct ProbeFlow {
    /// Sending VM (index).
    pub client: u32,
    /// Probed VM (index).
    pub target: u32,
    /// Interval between probes.
    pub interval: Nanos,
    /// Stop sending at this time (`None`: not decided yet).
    pub stop: Option<Nanos>,
    /// Send time of each probe, by sequence number.
    pub sent: Vec<Nanos>,
    /// Arrival of each probe's first answer at the client.
    pub answered: Vec<Option<Nanos>>,
    /// Copies of each probe the VM received.
    pub at_vm: Vec<u16>,
    /// Arrival times at the VM, in arrival order.
    pub vm_arrivals: Vec<Nanos>,
    /// Highest sequence number the VM received.
    pub vm_highest: Option<u64>,
    /// Probes the VM received after a higher-numbered one.
    pub vm_reordered: u64,
    /// Duplicate probes the VM received.
    pub vm_duplicated: u64,
    /// Answers the client received twice.
    pub echo_duplicated: u64,
    /// Answers the client received after a higher-numbered one.
    pub echo_reordered: u64,
    echo_highest: Option<u64>,
}

impl ProbeFlow {
    /// A stream that has sent nothing yet.
    pub fn new(client: u32, target: u32, interval: Nanos) -> ProbeFlow {
        ProbeFlow {
            client,
            target,
            interval,
            stop: None,
            sent: Vec::new(),
            answered: Vec::new(),
            at_vm: Vec::new(),
            vm_arrivals: Vec::new(),
            vm_highest: None,
            vm_reordered: 0,
            vm_duplicated: 0,
            echo_duplicated: 0,
            echo_reordered: 0,
            echo_highest: None,
        }
    }

    /// Records a send; returns its sequence number.
    pub fn record_send(&mut self, now: Nanos) -> u64 {
        self.sent.push(now);
        self.answered.push(None);
        self.at_vm.push(0);
        (self.sent.len() - 1) as u64
    }

    /// The VM received probe `seq`: what it was ([`Arrival`]), `None` for a sequence number
    /// never sent.
    pub fn record_at_vm(&mut self, seq: u64, now: Nanos) -> Option<Arrival> {
        let n = self.at_vm.get_mut(usize::try_from(seq).ok()?)?;
        *n = n.saturating_add(1);
        self.vm_arrivals.push(now);
        if *n > 1 {
            self.vm_duplicated += 1;
            return Some(Arrival::Duplicate);
        }
        match self.vm_highest {
            Some(h) if seq < h => {
                self.vm_reordered += 1;
                Some(Arrival::Reordered { after: h })
            }
            _ => {
                self.vm_highest = Some(seq);
                Some(Arrival::InOrder)
            }
        }
    }

    /// The client received the answer to probe `seq`.
    pub fn record_answer(&mut self, seq: u64, now: Nanos) {
        let Some(slot) = usize::try_from(seq)
            .ok()
            .and_then(|i| self.answered.get_mut(i))
        else {
            return;
        };
        if slot.is_some() {
            self.echo_duplicated += 1;
            return;
        }
        *slot = Some(now);
        match self.echo_highest {
            Some(h) if seq < h => self.echo_reordered += 1,
            _ => self.echo_highest = Some(seq),
        }
    }

    /// Probes the VM never received.
    pub fn lost_at_vm(&self) -> u64 {
        self.at_vm.iter().filter(|n| **n == 0).count() as u64
    }

    /// The longest time without an arrival at the VM within `[from, to]` (counting from
    /// `from` and up to `to`), ms.
    pub fn longest_gap_ms(&self, from: Nanos, to: Nanos) -> f64 {
        let mut last = from;
        let mut gap = 0;
        for &t in &self.vm_arrivals {
            if t < from {
                continue;
            }
            if t > to {
                break;
            }
            gap = gap.max(t - last);
            last = t;
        }
        gap = gap.max(to.saturating_sub(last));
        gap as f64 / 1e6
    }
}

/// How a probe reached the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// First copy, no higher sequence number seen before.
    InOrder,
    /// First copy, after a higher sequence number.
    Reordered {
        /// The highest sequence number seen before.
        after: u64,
    },
    /// A second copy.
    Duplicate,
}

/// One HTTP session (connection opening and one request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    /// First SYN.
    pub started: Nanos,
    /// SYNs sent.
    pub syns: u32,
    /// SYN-ACK received.
    pub established: Option<Nanos>,
    /// Requests sent.
    pub requests: u32,
    /// Response received.
    pub done: Option<Nanos>,
}

/// HTTP sessions opened from a client VM to a target VM.
#[derive(Debug, Clone)]
pub struct HttpFlow {
    /// Client VM.
    pub client: u32,
    /// Server VM.
    pub target: u32,
    /// Between two session openings.
    pub spacing: Nanos,
    /// Stop opening sessions at this time.
    pub stop: Option<Nanos>,
    /// Every session, by number.
    pub sessions: Vec<Session>,
    /// Round-trip estimate from the SYN exchanges (for the request's RTO).
    pub srtt: Option<Nanos>,
}

impl HttpFlow {
    /// A flow that has opened nothing yet.
    pub fn new(client: u32, target: u32, spacing: Nanos) -> HttpFlow {
        HttpFlow {
            client,
            target,
            spacing,
            stop: None,
            sessions: Vec::new(),
            srtt: None,
        }
    }

    /// The request's retransmission timeout after `tries` sends.
    pub fn request_rto(&self, tries: u32) -> Nanos {
        let base = self.srtt.map_or(MIN_RTO_NS, |s| (3 * s).max(MIN_RTO_NS));
        base << tries.saturating_sub(1).min(10)
    }
}

/// Nearest-rank percentile of `values` (sorted here), `p` in 0..=100.
pub fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vm_side_counts_duplicates_and_reordering() {
        let mut f = ProbeFlow::new(0, 1, 1_000_000);
        for t in 0..4 {
            f.record_send(t);
        }
        assert_eq!(f.record_at_vm(0, 10), Some(Arrival::InOrder));
        assert_eq!(f.record_at_vm(2, 11), Some(Arrival::InOrder));
        assert_eq!(f.record_at_vm(1, 12), Some(Arrival::Reordered { after: 2 }));
        assert_eq!(f.record_at_vm(1, 13), Some(Arrival::Duplicate));
        assert_eq!(f.record_at_vm(9, 14), None);
        assert_eq!((f.vm_reordered, f.vm_duplicated, f.lost_at_vm()), (1, 1, 1));
    }

    #[test]
    fn the_longest_gap_includes_the_window_edges() {
        let mut f = ProbeFlow::new(0, 1, 1);
        f.vm_arrivals = vec![1_000_000, 2_000_000, 9_000_000];
        assert!((f.longest_gap_ms(0, 10_000_000) - 7.0).abs() < 1e-9);
        assert!((f.longest_gap_ms(0, 30_000_000) - 21.0).abs() < 1e-9);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v = vec![5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(percentile(&mut v, 50.0), 3.0);
        assert_eq!(percentile(&mut v, 99.0), 5.0);
        assert_eq!(percentile(&mut [], 50.0), 0.0);
    }
}
