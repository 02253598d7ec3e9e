//! The paper's table: one row per configuration, the columns the paper reports (probe loss,
//! extra delay of held probes, HTTP requests at the 1 s SYN-retry mode and the HTTP tail, TCP
//! worst bin against its median, retransmissions), as aligned text or Markdown.
//!
//! Every cell is derived from a [`Report`] alone; a workload that did not run shows `-`.

use std::fmt::Write as _;

use crate::report::{Family, HttpReport, ProbeReport, Report, Strategy, TcpReport};

/// The configuration names used in the paper's table, by strategy.
pub fn configuration_name(strategy: Strategy) -> &'static str {
    match strategy {
        Strategy::None => "no migration",
        Strategy::Traditional => "traditional",
        Strategy::SrDrop => "SR, drop",
        Strategy::SrBuffer => "SR, buffer",
    }
}

/// Loss runs of the probe stream, from the raw series: maximal runs of consecutive lost probes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossGaps {
    /// How many separate runs of lost probes.
    pub count: usize,
    /// Send-time span of the longest run, in milliseconds: from the first lost probe to the
    /// first probe answered after it (to the last lost one plus one interval if none was).
    pub longest_ms: f64,
}

/// The loss runs of a raw probe series (samples in sequence order); `None` without samples.
pub fn loss_gaps(samples: &[crate::workload::probe::ProbeSample]) -> Option<LossGaps> {
    if samples.is_empty() {
        return None;
    }
    // One probe interval, for a run that reaches the end of the series.
    let interval = samples
        .windows(2)
        .map(|w| w[1].sent_ms - w[0].sent_ms)
        .find(|d| *d > 0.0)
        .unwrap_or(0.0);
    let mut gaps = LossGaps {
        count: 0,
        longest_ms: 0.0,
    };
    let mut run_start: Option<f64> = None;
    for (i, s) in samples.iter().enumerate() {
        match (s.received_ms.is_some(), run_start) {
            (false, None) => {
                run_start = Some(s.sent_ms);
                gaps.count += 1;
            }
            (true, Some(start)) => {
                gaps.longest_ms = gaps.longest_ms.max(s.sent_ms - start);
                run_start = None;
            }
            _ => {}
        }
        if i + 1 == samples.len() {
            if let Some(start) = run_start {
                gaps.longest_ms = gaps.longest_ms.max(s.sent_ms + interval - start);
            }
        }
    }
    Some(gaps)
}

/// One row of the table, already formatted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaperRow {
    /// The configuration name given by the caller.
    pub configuration: String,
    /// Number of migrations and their mean pause, e.g. `3 (pause 175 ms)`.
    pub migrations: String,
    /// Probes lost of sent, with the loss runs when the raw series is present,
    /// e.g. `174 of 10000 (1 gap, 175 ms)`.
    pub probes_lost: String,
    /// Largest extra delay over the baseline RTT and how many answers were delayed by more
    /// than 10 ms, e.g. `176 ms (176 delayed)`.
    pub max_extra_delay: String,
    /// Requests at the 1 s SYN-retry mode (>= 0.9 s), count and percentage of requests
    /// started, plus failed requests if any, e.g. `12 (0.64 %)`.
    pub http_slow: String,
    /// 99th percentile latency of successful requests.
    pub http_p99: String,
    /// Worst TCP bin against the median bin, e.g. `1612 / 2903 Mb/s (56 %)`.
    pub tcp_worst: String,
    /// Sender retransmissions, `(RTO)` when a retransmission timeout was seen.
    pub retransmits: String,
}

/// Column headers, in row order.
const HEADERS: [&str; 8] = [
    "configuration",
    "migrations",
    "probes lost",
    "max extra delay",
    "HTTP >= 0.9 s",
    "HTTP p99",
    "TCP worst bin / median",
    "TCP retrans.",
];

/// Shown when a workload did not run.
const NONE: &str = "-";

impl PaperRow {
    /// Formats the row of one configuration (its IPv6 workloads: `probe`, `http`, `tcp`).
    pub fn new(configuration: &str, report: &Report) -> PaperRow {
        PaperRow::of_family(configuration, report, false)
    }

    /// Formats the row of one configuration's IPv6 workloads, or its IPv4 ones if `v4`
    /// (`probe_v4`, `http_v4`, `tcp_v4`).
    pub fn of_family(configuration: &str, report: &Report, v4: bool) -> PaperRow {
        let (probe, http, tcp) = if v4 {
            (&report.probe_v4, &report.http_v4, &report.tcp_v4)
        } else {
            (&report.probe, &report.http, &report.tcp)
        };
        let gaps = report
            .raw
            .as_ref()
            .and_then(|raw| loss_gaps(if v4 { &raw.probe_v4 } else { &raw.probe }));
        PaperRow {
            configuration: configuration.to_owned(),
            migrations: migrations_cell(report),
            probes_lost: probe
                .as_ref()
                .map_or_else(|| NONE.to_owned(), |p| probes_lost_cell(p, gaps)),
            max_extra_delay: probe
                .as_ref()
                .map_or_else(|| NONE.to_owned(), extra_delay_cell),
            http_slow: http
                .as_ref()
                .map_or_else(|| NONE.to_owned(), http_slow_cell),
            http_p99: http.as_ref().map_or_else(
                || NONE.to_owned(),
                |h| {
                    if h.requests > h.failed {
                        format!("{} ms", fmt_ms(h.p99_ms))
                    } else {
                        NONE.to_owned()
                    }
                },
            ),
            tcp_worst: tcp.as_ref().map_or_else(|| NONE.to_owned(), tcp_worst_cell),
            retransmits: tcp
                .as_ref()
                .map_or_else(|| NONE.to_owned(), retransmits_cell),
        }
    }

    /// The rows of one run: one per address family it measured. A dual-stack run gives
    /// `NAME (IPv6)` and `NAME (IPv4)`, an IPv4-only run `NAME (IPv4)`, an IPv6-only run
    /// (or a report from before families) `NAME`.
    pub fn rows(configuration: &str, report: &Report) -> Vec<PaperRow> {
        let has_v4 =
            report.probe_v4.is_some() || report.http_v4.is_some() || report.tcp_v4.is_some();
        match (report.family, has_v4) {
            (Family::Dual, true) => vec![
                PaperRow::of_family(&format!("{configuration} (IPv6)"), report, false),
                PaperRow::of_family(&format!("{configuration} (IPv4)"), report, true),
            ],
            (Family::Ipv4, true) => vec![PaperRow::of_family(
                &format!("{configuration} (IPv4)"),
                report,
                true,
            )],
            _ => vec![PaperRow::new(configuration, report)],
        }
    }

    fn cells(&self) -> [&str; 8] {
        [
            &self.configuration,
            &self.migrations,
            &self.probes_lost,
            &self.max_extra_delay,
            &self.http_slow,
            &self.http_p99,
            &self.tcp_worst,
            &self.retransmits,
        ]
    }
}

fn migrations_cell(report: &Report) -> String {
    let n = report.migrations.len();
    if n == 0 {
        return "0".to_owned();
    }
    let mean_pause = report.migrations.iter().map(|m| m.pause_ms).sum::<f64>() / n as f64;
    format!("{n} (pause {} ms)", fmt_ms(mean_pause))
}

fn probes_lost_cell(p: &ProbeReport, gaps: Option<LossGaps>) -> String {
    let mut cell = format!("{} of {}", p.lost, p.sent);
    match gaps {
        Some(g) if g.count == 1 => {
            let _ = write!(cell, " (1 gap, {} ms)", fmt_ms(g.longest_ms));
        }
        Some(g) if g.count > 1 => {
            let _ = write!(
                cell,
                " ({} gaps, longest {} ms)",
                g.count,
                fmt_ms(g.longest_ms)
            );
        }
        _ => {}
    }
    if p.duplicated > 0 || p.reordered > 0 {
        let _ = write!(cell, ", {} dup, {} reord", p.duplicated, p.reordered);
    }
    cell
}

fn extra_delay_cell(p: &ProbeReport) -> String {
    if p.received == 0 {
        return NONE.to_owned();
    }
    format!(
        "{} ms ({} delayed)",
        fmt_ms(p.max_extra_delay_ms),
        p.delayed_gt_10ms
    )
}

fn http_slow_cell(h: &HttpReport) -> String {
    if h.requests == 0 {
        return NONE.to_owned();
    }
    let mut cell = format!(
        "{} ({})",
        h.slow_ge_900ms,
        fmt_percent(h.slow_ge_900ms as f64 / h.requests as f64)
    );
    if h.failed > 0 {
        let _ = write!(cell, ", {} failed", h.failed);
    }
    cell
}

fn tcp_worst_cell(t: &TcpReport) -> String {
    if t.bins_mbps.is_empty() {
        return NONE.to_owned();
    }
    let ratio = if t.median_mbps > 0.0 {
        format!(" ({:.0} %)", 100.0 * t.worst_bin_mbps / t.median_mbps)
    } else {
        String::new()
    };
    format!("{:.0} / {:.0} Mb/s{ratio}", t.worst_bin_mbps, t.median_mbps)
}

fn retransmits_cell(t: &TcpReport) -> String {
    if t.rto_seen {
        format!("{} (RTO)", t.retransmits)
    } else {
        t.retransmits.to_string()
    }
}

/// Milliseconds with a precision that suits the magnitude (`0.12`, `3.4`, `176`).
pub(crate) fn fmt_ms(ms: f64) -> String {
    if !ms.is_finite() {
        return NONE.to_owned();
    }
    let a = ms.abs();
    if a < 10.0 {
        format!("{ms:.2}")
    } else if a < 100.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

/// A fraction as a percentage (`0.0064` -> `0.64 %`).
fn fmt_percent(fraction: f64) -> String {
    format!("{:.2} %", 100.0 * fraction)
}

/// The rows of a set of runs, in the given order (one per run and family, see
/// [`PaperRow::rows`]).
pub fn paper_rows<S: AsRef<str>>(runs: &[(S, &Report)]) -> Vec<PaperRow> {
    runs.iter()
        .flat_map(|(name, report)| PaperRow::rows(name.as_ref(), report))
        .collect()
}

/// The TCP bin width shared by the runs, if they agree (for the header).
fn common_bin_ms<S>(runs: &[(S, &Report)]) -> Option<f64> {
    let mut widths = runs
        .iter()
        .flat_map(|(_, r)| [r.tcp.as_ref(), r.tcp_v4.as_ref()])
        .flatten()
        .map(|t| t.bin_ms);
    let first = widths.next()?;
    widths.all(|w| (w - first).abs() < 1e-9).then_some(first)
}

fn headers<S>(runs: &[(S, &Report)]) -> [String; 8] {
    let mut h = HEADERS.map(str::to_owned);
    if let Some(bin) = common_bin_ms(runs) {
        h[6] = format!("TCP worst {bin:.0} ms / median");
    }
    h
}

/// The table as aligned plain text: a header, a rule, one row per run, in the given order.
/// The first column is left-aligned, the others right-aligned.
pub fn paper_table<S: AsRef<str>>(runs: &[(S, &Report)]) -> String {
    let headers = headers(runs);
    let rows = paper_rows(runs);
    let mut widths = headers.clone().map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row.cells()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 8]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i == 0 {
                let _ = write!(out, "{cell:<w$}");
            } else {
                let _ = write!(out, "  {cell:>w$}");
            }
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    };
    let mut out = line(headers.each_ref().map(String::as_str));
    let rule_len = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
    out.push_str(&"-".repeat(rule_len));
    out.push('\n');
    for row in &rows {
        out.push_str(&line(row.cells()));
    }
    out
}

/// The table as Markdown (for a file next to the plots), followed by a short legend.
pub fn paper_markdown<S: AsRef<str>>(runs: &[(S, &Report)]) -> String {
    let headers = headers(runs);
    let escape = |s: &str| s.replace('|', "\\|");
    let mut out = String::new();
    out.push('|');
    for h in &headers {
        let _ = write!(out, " {} |", escape(h));
    }
    out.push_str("\n|---|");
    out.push_str(&"---:|".repeat(headers.len() - 1));
    out.push('\n');
    for row in paper_rows(runs) {
        out.push('|');
        for cell in row.cells() {
            let _ = write!(out, " {} |", escape(cell));
        }
        out.push('\n');
    }
    out.push_str(
        "\n- *probes lost*: probes without an answer, of probes sent (1 ms stream); a gap is a \
         run of consecutive lost probes, measured in send time.\n\
         - *max extra delay*: the largest RTT above the baseline RTT; *delayed*: answers more \
         than 10 ms above it (probes held during the pause).\n\
         - *HTTP >= 0.9 s*: new connection + request + response taking at least \
         0.9 s (the 1 s SYN-retransmission mode), of requests started; p99 over successful \
         requests.\n\
         - *TCP*: throughput towards the VM per bin; the worst bin against the median bin; \
         retransmits of the sender, `(RTO)` if a retransmission timeout occurred.\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paper::tests::{baseline, sr_buffer, traditional};
    use crate::workload::probe::ProbeSample;

    fn sample(seq: u64, received: bool) -> ProbeSample {
        ProbeSample {
            seq,
            sent_ms: seq as f64,
            received_ms: received.then_some(seq as f64 + 0.1),
        }
    }

    #[test]
    fn loss_gaps_measure_runs_in_send_time() {
        // Lost: 2..5 (3 probes), 7, and 9 at the end.
        let samples: Vec<ProbeSample> = (0..10)
            .map(|i| sample(i, !matches!(i, 2..=4 | 7 | 9)))
            .collect();
        let gaps = loss_gaps(&samples).expect("samples");
        assert_eq!(gaps.count, 3);
        assert!((gaps.longest_ms - 3.0).abs() < 1e-9, "{gaps:?}");
        assert_eq!(loss_gaps(&[]), None);
        let clean: Vec<ProbeSample> = (0..5).map(|i| sample(i, true)).collect();
        assert_eq!(
            loss_gaps(&clean),
            Some(LossGaps {
                count: 0,
                longest_ms: 0.0
            })
        );
        // A run reaching the end counts one interval for its last probe.
        let tail: Vec<ProbeSample> = (0..5).map(|i| sample(i, i < 2)).collect();
        assert_eq!(
            loss_gaps(&tail).map(|g| (g.count, g.longest_ms)),
            Some((1, 3.0))
        );
    }

    #[test]
    fn rows_carry_the_papers_numbers() {
        let trad = traditional();
        let row = PaperRow::new("traditional", &trad);
        assert_eq!(row.migrations, "1 (pause 175 ms)");
        assert_eq!(row.probes_lost, "722 of 10000 (1 gap, 722 ms)");
        assert_eq!(row.max_extra_delay, "0.20 ms (0 delayed)");
        assert_eq!(row.http_slow, "191 (19.10 %)");
        assert_eq!(row.http_p99, "1006 ms");
        assert_eq!(row.tcp_worst, "0 / 2900 Mb/s (0 %)");
        assert_eq!(row.retransmits, "57 (RTO)");

        let buf = sr_buffer();
        let row = PaperRow::new("SR, buffer", &buf);
        assert_eq!(row.probes_lost, "0 of 10000");
        assert_eq!(row.max_extra_delay, "176 ms (176 delayed)");
        assert_eq!(row.http_slow, "0 (0.00 %), 2 failed");
        assert_eq!(row.http_p99, "142 ms");
        assert_eq!(row.tcp_worst, "1600 / 2900 Mb/s (55 %)");
        assert_eq!(row.retransmits, "0");
    }

    #[test]
    fn a_dual_stack_run_has_a_row_per_family() {
        let mut buf = sr_buffer();
        assert_eq!(PaperRow::rows("SR, buffer", &buf).len(), 1);
        buf.family = Family::Dual;
        buf.probe_v4 = traditional().probe;
        if let Some(raw) = buf.raw.as_mut() {
            raw.probe_v4 = traditional().raw.expect("raw").probe;
        }
        let rows = PaperRow::rows("SR, buffer", &buf);
        let names: Vec<&str> = rows.iter().map(|r| r.configuration.as_str()).collect();
        assert_eq!(names, ["SR, buffer (IPv6)", "SR, buffer (IPv4)"]);
        assert_eq!(rows[0].probes_lost, "0 of 10000");
        assert_eq!(rows[1].probes_lost, "722 of 10000 (1 gap, 722 ms)");
        // The IPv4 row shows only what ran over IPv4.
        assert_eq!(rows[1].http_slow, NONE);
        buf.family = Family::Ipv4;
        let rows = PaperRow::rows("SR, buffer", &buf);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].configuration, "SR, buffer (IPv4)");
    }

    #[test]
    fn missing_workloads_show_a_dash() {
        let mut r = baseline();
        r.http = None;
        r.tcp = None;
        r.raw = None;
        let row = PaperRow::new("no migration", &r);
        assert_eq!(row.migrations, "0");
        assert_eq!(row.probes_lost, "0 of 10000");
        assert_eq!(
            (row.http_slow.as_str(), row.http_p99.as_str()),
            (NONE, NONE)
        );
        assert_eq!(
            (row.tcp_worst.as_str(), row.retransmits.as_str()),
            (NONE, NONE)
        );
    }

    #[test]
    fn text_table_is_aligned_and_ordered() {
        let (base, trad, buf) = (baseline(), traditional(), sr_buffer());
        let runs = [
            ("no migration", &base),
            ("traditional", &trad),
            ("SR, buffer", &buf),
        ];
        let table = paper_table(&runs);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5, "{table}");
        assert!(lines[0].starts_with("configuration"));
        assert!(lines[0].contains("TCP worst 100 ms / median"), "{table}");
        assert!(lines[1].chars().all(|c| c == '-'));
        for (line, name) in lines[2..]
            .iter()
            .zip(["no migration", "traditional", "SR, buffer"])
        {
            assert!(line.starts_with(name), "{line}");
        }
        // Right-aligned columns: every row ends at the same column as the rule, since the
        // last column is right-aligned and at least one cell fills it.
        let width = lines[1].chars().count();
        for line in &lines[2..] {
            assert_eq!(line.chars().count(), width, "{table}");
        }
        assert!(lines[3].contains("722 of 10000 (1 gap, 722 ms)"));
        assert!(lines[3].contains("191 (19.10 %)"));
        assert!(lines[4].contains("176 ms (176 delayed)"));
        // Cells right-align with their header: "1006 ms" ends where "HTTP p99" ends.
        let p99_end = lines[0].find("HTTP p99").expect("header") + "HTTP p99".len();
        let cell_end = lines[3].find("1006 ms").expect("cell") + "1006 ms".len();
        assert_eq!(cell_end, p99_end, "{table}");
        assert_eq!(
            lines[2].find("1.20 ms").map(|i| i + "1.20 ms".len()),
            Some(cell_end)
        );
    }

    #[test]
    fn markdown_has_one_row_per_run_and_escapes_pipes() {
        let (base, buf) = (baseline(), sr_buffer());
        let md = paper_markdown(&[("no|migration", &base), ("SR, buffer", &buf)]);
        let rows: Vec<&str> = md.lines().filter(|l| l.starts_with('|')).collect();
        assert_eq!(rows.len(), 4, "{md}");
        assert_eq!(rows[1], "|---|---:|---:|---:|---:|---:|---:|---:|");
        assert!(
            rows[2].starts_with("| no\\|migration | 0 | 0 of 10000 |"),
            "{md}"
        );
        assert!(rows[3].contains("| 176 ms (176 delayed) |"), "{md}");
        assert!(md.contains("*probes lost*"));
    }

    #[test]
    fn names_follow_the_paper() {
        assert_eq!(configuration_name(Strategy::None), "no migration");
        assert_eq!(configuration_name(Strategy::SrDrop), "SR, drop");
        assert_eq!(fmt_ms(0.123), "0.12");
        assert_eq!(fmt_ms(34.56), "34.6");
        assert_eq!(fmt_ms(175.6), "176");
        assert_eq!(fmt_ms(f64::NAN), NONE);
    }
}
