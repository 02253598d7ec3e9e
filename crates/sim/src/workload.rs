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

/// TCP segment payload (a 1500-byte MTU).
pub const MSS: usize = 1448;
/// The receiver's window, in segments (2 MiB, Linux's order of magnitude for a bulk flow).
pub const RWND: u64 = 2 * 1024 * 1024 / MSS as u64;

/// A TCP bulk transfer from a client VM to a target VM, Reno congestion control: slow start,
/// congestion avoidance, fast retransmit and recovery on three duplicate ACKs, and a
/// retransmission timeout (Linux's: 200 ms minimum, `srtt + 4 rttvar`, doubling) that
/// restarts from one segment. Sequence numbers count segments; the receiver acknowledges
/// every segment cumulatively and keeps what arrives out of order. The sender is paced at
/// the VM's NIC rate.
#[derive(Debug, Clone)]
pub struct TcpFlow {
    /// Sending VM.
    pub client: u32,
    /// Receiving VM.
    pub target: u32,
    /// Time per segment at the NIC rate.
    pub pacing: Nanos,
    /// Stop sending new data at this time.
    pub stop: Option<Nanos>,
    /// Started at.
    pub started: Nanos,
    /// Congestion window, segments (fractional in congestion avoidance).
    pub cwnd: f64,
    /// Slow-start threshold, segments.
    pub ssthresh: f64,
    /// Oldest unacknowledged segment.
    pub una: u64,
    /// Next segment to send.
    pub nxt: u64,
    /// Highest segment ever sent + 1.
    pub high: u64,
    /// Duplicate ACKs in a row.
    pub dupacks: u32,
    /// In fast recovery until this segment is acknowledged.
    pub recover: Option<u64>,
    /// Smoothed RTT and variance, ns.
    pub srtt: Option<f64>,
    /// RTT variance, ns.
    pub rttvar: f64,
    /// Consecutive timeouts (backoff).
    pub backoff: u32,
    /// The armed timer's generation (older timer events are stale).
    pub timer_gen: u64,
    /// When the armed timer fires.
    pub timer_at: Option<Nanos>,
    /// A pacing tick is scheduled.
    pub tick_armed: bool,
    /// The VM's NIC is busy until then (segments leave at most at its rate).
    pub nic_free_at: Nanos,
    /// Send time of each segment's last transmission (for RTT samples; Karn: none after a
    /// retransmission).
    pub sent_at: hashbrown::HashMap<u64, (Nanos, bool)>,
    /// Receiver: next expected segment.
    pub rcv_nxt: u64,
    /// Receiver: segments above `rcv_nxt` already here.
    pub ooo: std::collections::BTreeSet<u64>,
    /// Receiver: in-order segments delivered per 100 ms bin since `started`.
    pub bins: Vec<u64>,
    /// Retransmitted segments.
    pub retransmits: u64,
    /// Retransmission timeouts.
    pub rtos: u64,
    /// Receiver: segments that arrived above a hole (reordered or after a loss).
    pub ooo_arrivals: u64,
    /// Receiver: segments that arrived again.
    pub dup_arrivals: u64,
}

/// Width of a throughput bin.
pub const BIN_NS: Nanos = 100_000_000;

impl TcpFlow {
    /// A flow that has sent nothing yet.
    pub fn new(client: u32, target: u32, rate_mbps: f64, now: Nanos) -> TcpFlow {
        let bits = ((crate::frame::HEADER_LEN.max(MSS) + 62) * 8) as f64;
        TcpFlow {
            client,
            target,
            pacing: (bits / rate_mbps.max(1.0) * 1000.0) as Nanos,
            stop: None,
            started: now,
            cwnd: 10.0,
            ssthresh: f64::INFINITY,
            una: 0,
            nxt: 0,
            high: 0,
            dupacks: 0,
            recover: None,
            srtt: None,
            rttvar: 0.0,
            backoff: 0,
            timer_gen: 0,
            timer_at: None,
            tick_armed: false,
            nic_free_at: 0,
            sent_at: hashbrown::HashMap::new(),
            rcv_nxt: 0,
            ooo: std::collections::BTreeSet::new(),
            bins: Vec::new(),
            retransmits: 0,
            rtos: 0,
            ooo_arrivals: 0,
            dup_arrivals: 0,
        }
    }

    /// The retransmission timeout now.
    pub fn rto(&self) -> Nanos {
        let base = match self.srtt {
            Some(s) => (s + 4.0 * self.rttvar) as Nanos,
            None => SYN_RTO_NS,
        };
        (base.max(MIN_RTO_NS) << self.backoff.min(6)).min(60 * SYN_RTO_NS)
    }

    /// Whether the window allows sending segment `nxt`.
    pub fn can_send(&self, now: Nanos) -> bool {
        let window = (self.cwnd.floor() as u64).clamp(1, RWND);
        let fresh = self.nxt >= self.high;
        if fresh && self.stop.is_some_and(|s| now >= s) {
            return false;
        }
        self.nxt < self.una + window
    }

    /// Takes the next segment to send; `true` if it is a retransmission.
    pub fn take_segment(&mut self, now: Nanos) -> (u64, bool) {
        let seq = self.nxt;
        let retx = seq < self.high;
        if retx {
            self.retransmits += 1;
        }
        self.sent_at.insert(seq, (now, retx));
        self.nic_free_at = now + self.pacing;
        self.nxt += 1;
        self.high = self.high.max(self.nxt);
        (seq, retx)
    }

    /// Records a retransmission of the oldest unacknowledged segment (fast retransmit or a
    /// partial ACK in recovery); returns it.
    pub fn take_retransmission(&mut self, now: Nanos) -> u64 {
        self.retransmits += 1;
        self.sent_at.insert(self.una, (now, true));
        self.nic_free_at = now.max(self.nic_free_at) + self.pacing;
        self.una
    }

    /// The receiver got segment `seq`; returns the cumulative ACK to send.
    pub fn receive(&mut self, seq: u64, now: Nanos) -> u64 {
        let before = self.rcv_nxt;
        if seq == self.rcv_nxt {
            self.rcv_nxt += 1;
            while self.ooo.remove(&self.rcv_nxt) {
                self.rcv_nxt += 1;
            }
        } else if seq > self.rcv_nxt {
            self.ooo_arrivals += 1;
            if !self.ooo.insert(seq) {
                self.dup_arrivals += 1;
            }
        } else {
            self.dup_arrivals += 1;
        }
        let delivered = self.rcv_nxt - before;
        if delivered > 0 {
            let bin = (now.saturating_sub(self.started) / BIN_NS) as usize;
            if self.bins.len() <= bin {
                self.bins.resize(bin + 1, 0);
            }
            self.bins[bin] += delivered;
        }
        self.rcv_nxt
    }

    /// The sender got a cumulative ACK for everything below `ack`. Returns true if the oldest
    /// unacknowledged segment must be retransmitted now (fast retransmit).
    pub fn on_ack(&mut self, ack: u64, now: Nanos) -> bool {
        if ack > self.una {
            let newly = (ack - self.una) as f64;
            if let Some((t, false)) = self.sent_at.get(&(ack - 1)).copied() {
                let r = now.saturating_sub(t) as f64;
                match self.srtt {
                    None => {
                        self.srtt = Some(r);
                        self.rttvar = r / 2.0;
                    }
                    Some(s) => {
                        self.rttvar = 0.75 * self.rttvar + 0.25 * (s - r).abs();
                        self.srtt = Some(0.875 * s + 0.125 * r);
                    }
                }
            }
            for s in self.una..ack {
                self.sent_at.remove(&s);
            }
            self.una = ack;
            self.nxt = self.nxt.max(ack);
            self.dupacks = 0;
            self.backoff = 0;
            match self.recover {
                Some(r) if ack < r => {
                    // Partial ACK (NewReno): the next hole is lost too.
                    return true;
                }
                Some(_) => {
                    self.recover = None;
                    self.cwnd = self.ssthresh;
                }
                None if self.cwnd < self.ssthresh => self.cwnd += newly,
                None => self.cwnd += newly / self.cwnd,
            }
            return false;
        }
        if ack == self.una && self.nxt > self.una && self.recover.is_none() {
            self.dupacks += 1;
            if self.dupacks == 3 {
                let flight = (self.nxt - self.una) as f64;
                self.ssthresh = (flight / 2.0).max(2.0);
                self.cwnd = self.ssthresh;
                self.recover = Some(self.high);
                return true;
            }
        }
        false
    }

    /// The retransmission timer fired: back to one segment from the oldest unacknowledged.
    pub fn on_timeout(&mut self) {
        self.rtos += 1;
        let flight = (self.nxt.saturating_sub(self.una)) as f64;
        self.ssthresh = (flight / 2.0).max(2.0);
        self.cwnd = 1.0;
        self.nxt = self.una;
        self.recover = None;
        self.dupacks = 0;
        self.backoff += 1;
    }

    /// Goodput per bin, Mb/s.
    pub fn bins_mbps(&self) -> Vec<f64> {
        self.bins
            .iter()
            .map(|n| (*n as f64) * (MSS as f64) * 8.0 / (BIN_NS as f64 / 1e9) / 1e6)
            .collect()
    }
}
