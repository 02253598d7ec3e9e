//! The paper's table and plots from lab [`Report`]s: pure functions, no lab I/O apart from
//! writing the plot files.
//!
//! `srmig lab paper` runs the four configurations of the paper (no migration, traditional,
//! SR with End.SBUF dropping, SR with End.SBUF buffering) and hands the reports here, in the
//! order the rows and series should appear:
//!
//! - [`paper_table`] / [`paper_markdown`]: one row per configuration with the paper's columns
//!   (probes lost of sent, extra delay of held probes, HTTP requests >= 0.9 s and p99, TCP
//!   worst bin against the median, retransmits);
//! - [`write_plots`]: `probe_received_vs_sent.svg` (RTT of every answered probe over its send
//!   time, one panel per configuration, lost probes as shaded gaps), `http_latency_cdf.svg`
//!   (latency CDF on a log axis, one line per configuration) and `tcp_throughput.svg`
//!   (throughput per bin over time, one line per configuration); each with a PNG of it beside
//!   it (rendered from the SVG by resvg, text in a system font).
//!
//! ```
//! use srmig_lab::paper::{configuration_name, paper_table};
//! use srmig_lab::report::{Family, Report, Strategy, VmKind};
//!
//! let report = Report {
//!     strategy: Strategy::None,
//!     vm_kind: VmKind::Netns,
//!     migrations: vec![],
//!     probe: None,
//!     http: None,
//!     tcp: None,
//!     family: Family::Ipv6,
//!     probe_v4: None,
//!     http_v4: None,
//!     tcp_v4: None,
//!     raw: None,
//! };
//! let table = paper_table(&[(configuration_name(report.strategy), &report)]);
//! assert!(table.lines().nth(2).is_some_and(|row| row.starts_with("no migration")));
//! ```
//!
//! [`Report`]: crate::report::Report

mod plots;
mod table;

use std::io;
use std::path::PathBuf;

pub use plots::{write_plots, HTTP_PLOT, PROBE_PLOT, TCP_PLOT};
pub use table::{
    configuration_name, loss_gaps, paper_markdown, paper_rows, paper_table, LossGaps, PaperRow,
};

/// Errors while writing the plots.
#[derive(Debug, thiserror::Error)]
pub enum PaperError {
    /// Creating the output directory or writing a file failed.
    #[error("could not write {path}")]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The plotting library refused to draw.
    #[error("could not draw {path}: {message}")]
    Plot {
        /// The plot file being drawn.
        path: PathBuf,
        /// What plotters reported.
        message: String,
    },
}

/// Synthetic reports shaped like the paper's measurements, shared by the tests of the table
/// and the plots.
#[cfg(test)]
pub(crate) mod tests {
    use crate::report::{
        HttpReport, MigrationReport, ProbeReport, RawSeries, Report, Strategy, TcpReport, VmKind,
    };
    use crate::workload::http::HttpSample;
    use crate::workload::probe::ProbeSample;

    const PROBES: u64 = 10_000;
    const MIGRATION_AT: u64 = 3_000;
    const RTT: f64 = 0.1;

    fn probe_report(lost: u64, max_extra: f64, delayed: u64) -> ProbeReport {
        ProbeReport {
            sent: PROBES,
            received: PROBES - lost,
            lost,
            duplicated: 0,
            reordered: 0,
            max_extra_delay_ms: max_extra,
            baseline_rtt_ms: RTT,
            median_rtt_ms: RTT,
            delayed_gt_10ms: delayed,
            send_errors: 0,
            ..ProbeReport::default()
        }
    }

    /// 1 ms probes; `lost` consecutive ones lost from `MIGRATION_AT`, then `held` answered
    /// together `held` ms later (the buffer release).
    fn probes(lost: u64, held: u64) -> Vec<ProbeSample> {
        (0..PROBES)
            .map(|seq| {
                let sent = seq as f64;
                let received = if (MIGRATION_AT..MIGRATION_AT + lost).contains(&seq) {
                    None
                } else if (MIGRATION_AT..MIGRATION_AT + held).contains(&seq) {
                    Some((MIGRATION_AT + held) as f64 + RTT)
                } else {
                    Some(sent + RTT)
                };
                ProbeSample {
                    seq,
                    sent_ms: sent,
                    received_ms: received,
                }
            })
            .collect()
    }

    /// 1000 requests: `slow` of them at `slow_ms`, `failed` failed, the rest at 1.2 ms.
    fn http(slow: u64, slow_ms: f64, failed: u64, p99: f64) -> (HttpReport, Vec<HttpSample>) {
        let samples: Vec<HttpSample> = (0..1000u64)
            .map(|i| {
                let latency = if i < failed {
                    None
                } else if i < failed + slow {
                    Some(slow_ms)
                } else {
                    Some(1.2 + (i % 7) as f64 * 0.01)
                };
                HttpSample {
                    scheduled_ms: i as f64 * 10.0,
                    start_ms: i as f64 * 10.0,
                    latency_ms: latency,
                    error: latency.is_none().then(|| "timeout".to_owned()),
                }
            })
            .collect();
        let report = HttpReport {
            requests: 1000,
            failed,
            p50_ms: 1.2,
            p99_ms: p99,
            max_ms: if slow > 0 { slow_ms } else { 1.26 },
            slow_ge_900ms: if slow_ms >= 900.0 { slow } else { 0 },
            max_start_delay_ms: 0.0,
        };
        (report, samples)
    }

    fn tcp(worst: f64, retransmits: u64, rto: bool) -> TcpReport {
        let mut bins = vec![2900.0; 100];
        bins[30] = worst;
        TcpReport {
            median_mbps: 2900.0,
            worst_bin_mbps: worst,
            bins_mbps: bins,
            retransmits,
            bin_ms: 100.0,
            bytes: 1,
            rto_seen: rto,
            total_rto: Some(u64::from(rto)),
            spurious_retransmits: None,
            reordering_seen: None,
        }
    }

    fn report(
        strategy: Strategy,
        lost: u64,
        held: u64,
        http: (HttpReport, Vec<HttpSample>),
        tcp: TcpReport,
    ) -> Report {
        let max_extra = if held > 0 { held as f64 } else { 0.2 };
        Report {
            strategy,
            vm_kind: VmKind::Netns,
            migrations: if strategy == Strategy::None {
                vec![]
            } else {
                vec![MigrationReport {
                    pause_ms: 175.0,
                    total_ms: 1200.0,
                    ..MigrationReport::default()
                }]
            },
            probe: Some(probe_report(lost, max_extra, held)),
            http: Some(http.0),
            tcp: Some(tcp),
            family: crate::report::Family::Ipv6,
            probe_v4: None,
            http_v4: None,
            tcp_v4: None,
            raw: Some(RawSeries {
                probe: probes(lost, held),
                http: http.1,
                ..RawSeries::default()
            }),
        }
    }

    pub(crate) fn baseline() -> Report {
        report(
            Strategy::None,
            0,
            0,
            http(0, 0.0, 0, 1.2),
            tcp(2800.0, 0, false),
        )
    }

    pub(crate) fn traditional() -> Report {
        report(
            Strategy::Traditional,
            722,
            0,
            http(191, 1006.0, 0, 1006.0),
            tcp(0.0, 57, true),
        )
    }

    pub(crate) fn sr_drop() -> Report {
        report(
            Strategy::SrDrop,
            174,
            0,
            http(33, 1003.0, 0, 1003.0),
            tcp(1600.0, 12, false),
        )
    }

    pub(crate) fn sr_buffer() -> Report {
        report(
            Strategy::SrBuffer,
            0,
            176,
            http(0, 0.0, 2, 142.0),
            tcp(1600.0, 0, false),
        )
    }

    #[test]
    fn fixtures_are_consistent_with_their_summaries() {
        for r in [baseline(), traditional(), sr_drop(), sr_buffer()] {
            let raw = r.raw.as_ref().expect("raw");
            let probe = r.probe.as_ref().expect("probe");
            let lost = raw.probe.iter().filter(|s| s.received_ms.is_none()).count() as u64;
            assert_eq!(lost, probe.lost, "{:?}", r.strategy);
            let http = r.http.as_ref().expect("http");
            let summary = crate::workload::http::summarize(&raw.http);
            assert_eq!(summary.failed, http.failed);
            assert_eq!(summary.slow_ge_900ms, http.slow_ge_900ms);
        }
    }
}
