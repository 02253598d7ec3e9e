//! The JSON report of a lab run. Field names are a contract with external scripts:
//!
//! ```json
//! {"strategy":"sr-buffer","vm_kind":"netns","migrations":[{"pause_ms":..,"total_ms":..}],
//!  "probe":{"sent":N,"received":N,"lost":N,"duplicated":N,"reordered":N,"max_extra_delay_ms":X},
//!  "http":{"requests":N,"failed":N,"p50_ms":X,"p99_ms":X,"max_ms":X,"slow_ge_900ms":N},
//!  "tcp":{"bins_mbps":[..],"median_mbps":X,"worst_bin_mbps":X,"retransmits":N}}
//! ```
//!
//! Extra fields are allowed and present (e.g. `baseline_rtt_ms`); raw series live under the
//! separate top-level key `raw`. A workload that was not run is `null`.
//!
//! Per migration, beside `pause_ms` and `total_ms`: `blackout_ms` (the VM's pause),
//! `network_downtime_ms` (the longest gap between two probes delivered to the VM around the
//! migration, one way), `release_latency_ms` (the VM's resume at the destination to the first
//! probe delivered there; on netns VMs the resume is the instant before the system call that
//! brings the VM's attachment up, [`crate::ifup`], and "delivered" is the kernel's receive
//! timestamp of the probe in the VM's network stack, not the later instant the lab's
//! responder thread got to read it), End.SBUF's `held` / `released` and
//! `hold_ms` (how long the oldest held packet had waited when the VM resumed, as the
//! destination srmigd measured it: its `srmig_buffer_hold_seconds`); the two network figures
//! need
//! the lab's own responder in a netns VM. `probe.at_vm` is the probe seen one way at such a
//! VM (`received`, `lost`, `duplicated`, `reordered`; `max_responder_lag_ms`, the longest the
//! responder thread took to read a probe, and `max_extra_delay_ms`, the echo's worst extra
//! delay without that lag); `probe.duplicated` / `reordered` are
//! then the worse of both directions and `probe.echo` keeps the echo's own figures.
//! `raw.migrations[].vm_gap` says where that longest gap was (`seq_before`/`before_ms`,
//! `seq_after`/`after_ms`: the probes on both sides and their arrivals at the VM; their send
//! times are in `raw.probe`), to tell a late sender or a late release from the pause itself.
//!
//! Address families (`srmig lab migrate --family ipv6|ipv4|dual`): `probe`, `http` and `tcp`
//! are always the workloads over **IPv6**; the same workloads over **IPv4** are `probe_v4`,
//! `http_v4` and `tcp_v4` (same fields; absent when IPv4 did not run), and their raw series
//! `raw.probe_v4` / `raw.http_v4`. The top-level `family` says what ran (`"ipv6"`, `"ipv4"`
//! or `"dual"`; reports without it are IPv6). With `dual` both families run at the same time,
//! during the same migrations, from the same client VM to the same dual-stack VM.

use serde::{Deserialize, Serialize};

/// How the VM's traffic is steered during a migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// No migration (baseline run).
    None,
    /// Mapping updated only after the VM runs at the destination.
    Traditional,
    /// SR path with End.SBUF dropping.
    SrDrop,
    /// SR path with End.SBUF buffering.
    SrBuffer,
}

/// The address families a lab run's workloads used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// IPv6 only (`probe`, `http`, `tcp`).
    #[default]
    Ipv6,
    /// IPv4 only (`probe_v4`, `http_v4`, `tcp_v4`).
    Ipv4,
    /// Both, concurrently.
    Dual,
}

impl Family {
    /// Parses `ipv6`, `ipv4` or `dual`.
    pub fn parse(text: &str) -> Option<Family> {
        match text {
            "ipv6" => Some(Family::Ipv6),
            "ipv4" => Some(Family::Ipv4),
            "dual" => Some(Family::Dual),
            _ => None,
        }
    }

    /// Its name on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Family::Ipv6 => "ipv6",
            Family::Ipv4 => "ipv4",
            Family::Dual => "dual",
        }
    }

    /// The families run, as "is IPv4" flags: IPv6 first.
    pub fn v4_flags(self) -> &'static [bool] {
        match self {
            Family::Ipv6 => &[false],
            Family::Ipv4 => &[true],
            Family::Dual => &[false, true],
        }
    }
}

/// What kind of VM the lab migrated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VmKind {
    /// A network namespace with the kernel stack.
    Netns,
    /// A QEMU/KVM guest.
    Qemu,
    /// A QEMU guest run by libvirt, migrated with `virsh migrate --live`.
    Libvirt,
    /// The simulator (`srmig sim`): a VM like the netns one, in virtual time, on srmig's
    /// real cores.
    Sim,
}

/// One migration of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MigrationReport {
    /// The VM moved, in runs with several migrating VMs (`--vms`, `--chain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<String>,
    /// VM pause (stop-and-copy) in milliseconds.
    pub pause_ms: f64,
    /// Whole migration, start to completion, in milliseconds.
    pub total_ms: f64,
    /// The VM's blackout: its pause, as the hypervisor measured it (= `pause_ms`).
    #[serde(default)]
    pub blackout_ms: f64,
    /// The network's downtime for the VM: the longest gap between two probes delivered to
    /// the VM around the migration (one way, seen at the VM; netns VMs, probe workload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_downtime_ms: Option<f64>,
    /// From the VM's resume at the destination to the first probe delivered to it there
    /// (netns VMs, probe workload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_latency_ms: Option<f64>,
    /// The network downtime as the hosts' srmigd reported it to the controller (the source's
    /// last frame to the VM before its pause to the destination's first after the resume;
    /// `srmig migration show`), beside the VM's own view above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_network_downtime_ms: Option<f64>,
    /// The release latency as the destination's srmigd reported it to the controller (its
    /// seeing the resume to its first frame to the VM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_release_latency_ms: Option<f64>,
    /// Packets End.SBUF held for the VM at the destination, and released.
    #[serde(default)]
    pub held: u64,
    /// Packets released.
    #[serde(default)]
    pub released: u64,
    /// Direct packets the destination's commit fence held until their ingress's marker
    /// came down the old SR path (or its timeout), so that they reached the VM after
    /// everything older.
    #[serde(default)]
    pub fenced: u64,
    /// How long the oldest packet the destination held had waited when the VM resumed, as
    /// srmigd there measured it (its `srmig_buffer_hold_seconds`); absent without a release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_ms: Option<f64>,
}

/// The probe as seen by the VM, one way (client to VM), from the lab's responder in a netns
/// VM (absent for QEMU guests: see `raw.guest_counters`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OneWayReport {
    /// Distinct probes that reached the VM.
    pub received: u64,
    /// Probes sent that never reached it.
    pub lost: u64,
    /// Extra copies that reached it.
    pub duplicated: u64,
    /// Probes that reached it after a later one.
    pub reordered: u64,
    /// The first [`MAX_REORDERS_LISTED`] of those, in arrival order (omitted when none): which
    /// probe, after which, and when, to place each against the migrations' phases.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reorders: Vec<Reordered>,
    /// The longest the lab's responder took to read (and echo) a probe after the VM's kernel
    /// received it: its thread's scheduling on the lab machine, part of every echo's RTT.
    #[serde(default)]
    pub max_responder_lag_ms: f64,
    /// The echo's largest extra delay (as `probe.max_extra_delay_ms`, over the same baseline)
    /// once each answer's responder lag is taken out: what the network, srmig included,
    /// added to a round trip. Absent when no probe was answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_extra_delay_ms: Option<f64>,
    /// Where that worst answer's time went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worst_echo: Option<WorstEcho>,
}

/// The probe whose echo was latest once the responder's lag is taken out, its round trip
/// in three parts (kernel receive timestamps at the VM and at the client).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorstEcho {
    /// Its sequence number.
    pub seq: u64,
    /// Its extra delay without the responder's lag (`at_vm.max_extra_delay_ms`).
    pub extra_ms: f64,
    /// From its send to the VM's kernel receiving it (held packets: the hold).
    pub to_vm_ms: f64,
    /// The lab's responder reading and echoing it.
    pub responder_ms: f64,
    /// From the echo to the client's kernel receiving the answer.
    pub back_ms: f64,
    /// How long after it the VM's kernel went on receiving probes sent before it reached the
    /// VM: the rest of an End.SBUF release, which the VM's stack takes in around the echo.
    #[serde(default)]
    pub queue_behind_ms: f64,
}

/// How many reordered probes [`OneWayReport::reorders`] lists, at most.
pub const MAX_REORDERS_LISTED: usize = 16;

/// A probe that reached the VM after a later one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reordered {
    /// Its sequence number.
    pub seq: u64,
    /// The highest sequence number that had reached the VM before it.
    pub after: u64,
    /// When it reached the VM, in milliseconds since the run's origin (the migrations'
    /// `requested_at_ms`, `cut_at_ms`, ... share it).
    pub at_ms: f64,
}

/// The echo (round-trip) figures when `duplicated` / `reordered` are the worst of both
/// directions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EchoFigures {
    /// Extra copies of answers.
    pub duplicated: u64,
    /// Answers that arrived after the answer to a later probe.
    pub reordered: u64,
}

/// Summary of the 1 ms probe.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// Probes sent (including those whose `send` failed).
    pub sent: u64,
    /// Distinct probes answered.
    pub received: u64,
    /// `sent - received`.
    pub lost: u64,
    /// Extra copies of already-answered probes.
    pub duplicated: u64,
    /// Answers arriving after an answer to a later probe.
    pub reordered: u64,
    /// Largest RTT minus the baseline RTT, in milliseconds (0 if nothing exceeded it).
    pub max_extra_delay_ms: f64,
    /// Baseline RTT used for `max_extra_delay_ms`.
    pub baseline_rtt_ms: f64,
    /// Median RTT of the answered probes.
    pub median_rtt_ms: f64,
    /// Answers delayed more than 10 ms beyond the baseline (the paper's "delayed replies").
    pub delayed_gt_10ms: u64,
    /// `send` calls that failed (the probe still counts as sent and lost).
    pub send_errors: u64,
    /// One way, at the VM (netns VMs). When present, `duplicated` and `reordered` above are
    /// the worse of this and the echo's figures (`echo`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_vm: Option<OneWayReport>,
    /// The echo's own `duplicated` / `reordered`, when `at_vm` is present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo: Option<EchoFigures>,
}

impl ProbeReport {
    /// Adds the one-way view: `duplicated` / `reordered` become the worse of both
    /// directions, the echo's own figures move to `echo`.
    pub fn with_one_way(mut self, w: OneWayReport) -> ProbeReport {
        self.echo = Some(EchoFigures {
            duplicated: self.duplicated,
            reordered: self.reordered,
        });
        self.duplicated = self.duplicated.max(w.duplicated);
        self.reordered = self.reordered.max(w.reordered);
        self.at_vm = Some(w);
        self
    }

    /// The probes of several VMs as one (`--vms N`): counts are summed, `max_extra_delay_ms`
    /// is the largest, `baseline_rtt_ms` and `median_rtt_ms` are the largest of the VMs'
    /// (their own reports are under `raw.probe_per_vm`). `None` if `reports` is empty.
    pub fn merge(reports: &[ProbeReport]) -> Option<ProbeReport> {
        let first = reports.first()?;
        let mut all = first.clone();
        for r in &reports[1..] {
            all.sent += r.sent;
            all.received += r.received;
            all.lost += r.lost;
            all.duplicated += r.duplicated;
            all.reordered += r.reordered;
            all.max_extra_delay_ms = all.max_extra_delay_ms.max(r.max_extra_delay_ms);
            all.baseline_rtt_ms = all.baseline_rtt_ms.max(r.baseline_rtt_ms);
            all.median_rtt_ms = all.median_rtt_ms.max(r.median_rtt_ms);
            all.delayed_gt_10ms += r.delayed_gt_10ms;
            all.send_errors += r.send_errors;
            all.at_vm = match (all.at_vm.take(), &r.at_vm) {
                (Some(a), Some(b)) => Some(OneWayReport {
                    received: a.received + b.received,
                    lost: a.lost + b.lost,
                    duplicated: a.duplicated + b.duplicated,
                    reordered: a.reordered + b.reordered,
                    reorders: a
                        .reorders
                        .iter()
                        .chain(&b.reorders)
                        .take(MAX_REORDERS_LISTED)
                        .cloned()
                        .collect(),
                    max_responder_lag_ms: a.max_responder_lag_ms.max(b.max_responder_lag_ms),
                    max_extra_delay_ms: match (a.max_extra_delay_ms, b.max_extra_delay_ms) {
                        (Some(x), Some(y)) => Some(x.max(y)),
                        (x, y) => x.or(y),
                    },
                    worst_echo: match (a.worst_echo, &b.worst_echo) {
                        (Some(x), Some(y)) if y.extra_ms > x.extra_ms => Some(y.clone()),
                        (x, y) => x.or_else(|| y.clone()),
                    },
                }),
                _ => None,
            };
            all.echo = match (all.echo.take(), &r.echo) {
                (Some(a), Some(b)) => Some(EchoFigures {
                    duplicated: a.duplicated + b.duplicated,
                    reordered: a.reordered + b.reordered,
                }),
                _ => None,
            };
        }
        Some(all)
    }
}

impl TcpReport {
    /// The transfers to several VMs as one (`--vms N`): bins summed (up to the shortest
    /// series), median and worst bin of the sums, bytes and retransmissions summed, an RTO
    /// seen if any saw one. `None` if `reports` is empty.
    pub fn merge(reports: &[TcpReport]) -> Option<TcpReport> {
        let first = reports.first()?;
        if reports.len() == 1 {
            return Some(first.clone());
        }
        let n = reports.iter().map(|r| r.bins_mbps.len()).min().unwrap_or(0);
        let bins_mbps: Vec<f64> = (0..n)
            .map(|i| reports.iter().map(|r| r.bins_mbps[i]).sum())
            .collect();
        Some(TcpReport {
            median_mbps: crate::workload::median(&bins_mbps).unwrap_or(0.0),
            worst_bin_mbps: bins_mbps.iter().copied().reduce(f64::min).unwrap_or(0.0),
            bins_mbps,
            retransmits: reports.iter().map(|r| r.retransmits).sum(),
            bin_ms: first.bin_ms,
            bytes: reports.iter().map(|r| r.bytes).sum(),
            rto_seen: reports.iter().any(|r| r.rto_seen),
            total_rto: reports.iter().map(|r| r.total_rto).sum(),
            spurious_retransmits: reports.iter().map(|r| r.spurious_retransmits).sum(),
            reordering_seen: reports.iter().map(|r| r.reordering_seen).sum(),
        })
    }
}

/// One VM's probe in a run with several migrating VMs (`raw.probe_per_vm`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmProbeReport {
    /// The VM.
    pub vm: String,
    /// `ipv6` or `ipv4`.
    pub family: String,
    /// Its probe's summary.
    pub probe: ProbeReport,
}

/// Summary of HTTP session opening.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpReport {
    /// Requests started.
    pub requests: u64,
    /// Requests that failed (connect, timeout, bad response).
    pub failed: u64,
    /// Median latency of successful requests (connect to full response).
    pub p50_ms: f64,
    /// 99th percentile latency of successful requests.
    pub p99_ms: f64,
    /// Maximum latency of successful requests.
    pub max_ms: f64,
    /// Successful requests that took at least 900 ms (the 1 s SYN-retransmission mode).
    pub slow_ge_900ms: u64,
    /// Largest delay between a request's scheduled and actual start (worker pool saturation).
    pub max_start_delay_ms: f64,
}

/// Summary of TCP bulk throughput towards the VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TcpReport {
    /// Throughput of each full bin, in Mb/s (10^6 bit/s).
    pub bins_mbps: Vec<f64>,
    /// Median of `bins_mbps`.
    pub median_mbps: f64,
    /// Minimum of `bins_mbps`.
    pub worst_bin_mbps: f64,
    /// `tcpi_total_retrans` of the sender at the end.
    pub retransmits: u64,
    /// Bin width in milliseconds.
    pub bin_ms: f64,
    /// Bytes received by the VM.
    pub bytes: u64,
    /// Whether the sender went through at least one retransmission timeout.
    pub rto_seen: bool,
    /// `tcpi_total_rto` at the end, when the kernel reports it.
    pub total_rto: Option<u64>,
    /// `tcpi_dsack_dups` of the sender at the end: retransmissions the receiver reported as
    /// duplicates (D-SACK), i.e. spurious (the original was not lost), when the kernel reports it.
    #[serde(default)]
    pub spurious_retransmits: Option<u64>,
    /// `tcpi_reord_seen` of the sender at the end: reordering events it detected, when the
    /// kernel reports it.
    #[serde(default)]
    pub reordering_seen: Option<u64>,
}

/// Raw series for plots, under the top-level `raw` key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RawSeries {
    /// One entry per probe.
    pub probe: Vec<crate::workload::probe::ProbeSample>,
    /// One entry per HTTP request.
    pub http: Vec<crate::workload::http::HttpSample>,
    /// One entry per IPv4 probe (omitted when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probe_v4: Vec<crate::workload::probe::ProbeSample>,
    /// One entry per IPv4 HTTP request (omitted when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_v4: Vec<crate::workload::http::HttpSample>,
    /// With several migrating VMs: each VM's probe (`probe` / `probe_v4` are their sum;
    /// the samples above are the first VM's). Omitted with one VM.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probe_per_vm: Vec<VmProbeReport>,
}

/// The whole report of one lab run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Steering strategy.
    pub strategy: Strategy,
    /// VM kind.
    pub vm_kind: VmKind,
    /// Migrations performed during the run.
    pub migrations: Vec<MigrationReport>,
    /// Probe summary, `null` if the probe did not run.
    pub probe: Option<ProbeReport>,
    /// HTTP summary, `null` if the HTTP workload did not run.
    pub http: Option<HttpReport>,
    /// TCP summary, `null` if the TCP workload did not run.
    pub tcp: Option<TcpReport>,
    /// The families the workloads used (`probe` etc. are IPv6, `probe_v4` etc. IPv4).
    #[serde(default)]
    pub family: Family,
    /// Probe summary over IPv4, absent if it did not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_v4: Option<ProbeReport>,
    /// HTTP summary over IPv4, absent if it did not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_v4: Option<HttpReport>,
    /// TCP summary over IPv4, absent if it did not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_v4: Option<TcpReport>,
    /// Raw series, omitted when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<RawSeries>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn keys(v: &Value) -> Vec<&str> {
        v.as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }

    fn sample() -> Report {
        Report {
            strategy: Strategy::SrBuffer,
            vm_kind: VmKind::Netns,
            migrations: vec![MigrationReport {
                pause_ms: 175.0,
                total_ms: 900.0,
                ..MigrationReport::default()
            }],
            probe: Some(ProbeReport {
                sent: 10,
                received: 9,
                lost: 1,
                duplicated: 0,
                reordered: 2,
                max_extra_delay_ms: 3.5,
                baseline_rtt_ms: 0.1,
                median_rtt_ms: 0.1,
                delayed_gt_10ms: 0,
                send_errors: 0,
                ..ProbeReport::default()
            }),
            http: Some(HttpReport {
                requests: 5,
                failed: 0,
                p50_ms: 1.0,
                p99_ms: 2.0,
                max_ms: 2.0,
                slow_ge_900ms: 0,
                max_start_delay_ms: 0.1,
            }),
            tcp: Some(TcpReport {
                bins_mbps: vec![1.0, 2.0],
                median_mbps: 1.5,
                worst_bin_mbps: 1.0,
                retransmits: 0,
                bin_ms: 100.0,
                bytes: 100,
                rto_seen: false,
                total_rto: Some(0),
                spurious_retransmits: Some(0),
                reordering_seen: Some(0),
            }),
            family: Family::Ipv6,
            probe_v4: None,
            http_v4: None,
            tcp_v4: None,
            raw: None,
        }
    }

    #[test]
    fn several_vms_merge_into_one_probe_and_one_tcp_report() {
        let probe = |sent, lost, reordered, delay, one_way_lost| ProbeReport {
            sent,
            received: sent - lost,
            lost,
            reordered,
            max_extra_delay_ms: delay,
            at_vm: Some(OneWayReport {
                received: sent - one_way_lost,
                lost: one_way_lost,
                duplicated: 0,
                reordered: 0,
                reorders: Vec::new(),
                max_responder_lag_ms: delay / 10.0,
                max_extra_delay_ms: Some(delay - 1.0),
                worst_echo: None,
            }),
            echo: Some(EchoFigures::default()),
            ..ProbeReport::default()
        };
        let all = ProbeReport::merge(&[probe(100, 2, 1, 5.0, 1), probe(50, 0, 3, 9.0, 0)])
            .expect("merged");
        assert_eq!(
            (all.sent, all.received, all.lost, all.reordered),
            (150, 148, 2, 4)
        );
        assert_eq!(all.max_extra_delay_ms, 9.0);
        assert_eq!(
            all.at_vm.map(|w| (
                w.received,
                w.lost,
                w.max_responder_lag_ms,
                w.max_extra_delay_ms
            )),
            Some((149, 1, 0.9, Some(8.0)))
        );
        assert!(ProbeReport::merge(&[]).is_none());

        let tcp = |bins: Vec<f64>, rto| TcpReport {
            median_mbps: 0.0,
            worst_bin_mbps: 0.0,
            bins_mbps: bins,
            retransmits: 2,
            bin_ms: 100.0,
            bytes: 1000,
            rto_seen: rto,
            total_rto: Some(u64::from(rto)),
            spurious_retransmits: Some(1),
            reordering_seen: Some(0),
        };
        let all = TcpReport::merge(&[tcp(vec![10.0, 0.0, 30.0], false), tcp(vec![5.0, 5.0], true)])
            .expect("merged");
        assert_eq!(all.bins_mbps, [15.0, 5.0]);
        assert_eq!((all.worst_bin_mbps, all.median_mbps), (5.0, 10.0));
        assert_eq!((all.retransmits, all.bytes, all.rto_seen), (4, 2000, true));
        assert_eq!(all.total_rto, Some(1));
        assert_eq!(all.spurious_retransmits, Some(2));
        assert_eq!(all.reordering_seen, Some(0));
    }

    #[test]
    fn ipv4_workloads_have_their_own_keys() {
        let mut r = sample();
        let v = serde_json::to_value(&r).expect("serialize");
        assert_eq!(v["family"], "ipv6");
        assert!(!keys(&v).contains(&"probe_v4"));
        r.family = Family::Dual;
        r.probe_v4 = r.probe.clone();
        r.tcp_v4 = r.tcp.clone();
        let v = serde_json::to_value(&r).expect("serialize");
        assert_eq!(v["family"], "dual");
        assert_eq!(v["probe_v4"]["lost"], 1);
        assert_eq!(v["tcp_v4"]["median_mbps"], 1.5);
        assert!(!keys(&v).contains(&"http_v4"));
        let back: Report = serde_json::from_value(v).expect("deserialize");
        assert_eq!(back, r);
        // A report from before families existed reads as IPv6.
        let mut old = serde_json::to_value(sample()).expect("serialize");
        old.as_object_mut().expect("object").remove("family");
        let old: Report = serde_json::from_value(old).expect("old report");
        assert_eq!(old.family, Family::Ipv6);
        for f in [Family::Ipv6, Family::Ipv4, Family::Dual] {
            assert_eq!(Family::parse(f.name()), Some(f));
        }
        assert_eq!(Family::parse("ipv5"), None);
    }

    #[test]
    fn json_uses_the_contracted_names() {
        let v = serde_json::to_value(sample()).expect("serialize");
        for key in ["strategy", "vm_kind", "migrations", "probe", "http", "tcp"] {
            assert!(keys(&v).contains(&key), "missing {key}");
        }
        assert_eq!(v["strategy"], "sr-buffer");
        assert_eq!(v["vm_kind"], "netns");
        assert_eq!(v["migrations"][0]["pause_ms"], 175.0);
        assert_eq!(v["migrations"][0]["total_ms"], 900.0);
        for key in [
            "sent",
            "received",
            "lost",
            "duplicated",
            "reordered",
            "max_extra_delay_ms",
        ] {
            assert!(keys(&v["probe"]).contains(&key), "probe.{key}");
        }
        for key in [
            "requests",
            "failed",
            "p50_ms",
            "p99_ms",
            "max_ms",
            "slow_ge_900ms",
        ] {
            assert!(keys(&v["http"]).contains(&key), "http.{key}");
        }
        for key in ["bins_mbps", "median_mbps", "worst_bin_mbps", "retransmits"] {
            assert!(keys(&v["tcp"]).contains(&key), "tcp.{key}");
        }
        assert!(v.get("raw").is_none());
        assert_eq!(v["probe"]["sent"], 10);
    }

    #[test]
    fn report_round_trips_and_strategies_are_kebab_case() {
        let report = sample();
        let text = serde_json::to_string(&report).expect("serialize");
        let back: Report = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, report);
        for (s, name) in [
            (Strategy::None, "\"none\""),
            (Strategy::Traditional, "\"traditional\""),
            (Strategy::SrDrop, "\"sr-drop\""),
        ] {
            assert_eq!(serde_json::to_string(&s).expect("serialize"), name);
        }
    }
}
