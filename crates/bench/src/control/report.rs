//! The report of `srmig bench control`: JSON (`--json`) and a table.

use std::fmt::Write as _;

use serde::Serialize;

/// p50, p99 and max of a set of times, in milliseconds (nearest rank: p99 of fewer than 100
/// values is their maximum).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

/// `x` rounded to two decimals.
pub(crate) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

impl Percentiles {
    /// Of `values` (0 for none).
    pub fn of(values: &[f64]) -> Percentiles {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Percentiles::default();
        }
        v.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let r = (p * v.len() as f64).ceil() as usize;
            v[r.clamp(1, v.len()) - 1]
        };
        Percentiles {
            p50: round2(rank(0.50)),
            p99: round2(rank(0.99)),
            max: round2(v[v.len() - 1]),
        }
    }
}

/// The figures of one set of migrations (one after another, or the concurrent batches).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Section {
    /// Migrations started.
    pub migrations: usize,
    /// Of which did not complete (failed or cancelled: a rollback, e.g. after the ack
    /// timeout); the times are over the completed ones.
    pub failed: usize,
    /// Why they did not complete (distinct reasons).
    pub failures: Vec<String>,
    /// `migrate` to the SR path acknowledged on every host.
    pub armed_ms: Percentiles,
    /// `migrate` to the commit acknowledged on every host.
    pub committed_ms: Percentiles,
    /// The switchover (destination reports the VM running) to the commit acknowledged on
    /// every host.
    pub commit_ms: Percentiles,
    /// `migrate` to End.S / End.SBUF acknowledged by the source and the destination (the
    /// first part of `armed_ms`).
    pub endpoint_acks_ms: Percentiles,
    /// etcd requests (unary gRPC calls etcd handled) per migration; `null` for the embedded
    /// store.
    pub etcd_requests_per_migration: Option<f64>,
    /// `PUT /v1/config` received by the hosts per migration (all phases).
    pub config_pushes_per_migration: f64,
    /// Their body bytes per migration.
    pub config_bytes_per_migration: f64,
    /// CPU time the agents spent parsing and applying those configs, per migration, in ms
    /// (on N machines this is spread over N hosts; here it shares this machine's cores).
    pub agent_apply_ms_per_migration: f64,
    /// Configs the agents refused (should be 0).
    pub configs_refused: u64,
    /// The controller's heartbeat `GET /v1/status` polls answered meanwhile, and their bytes.
    pub status_polls: u64,
    /// See `status_polls`.
    pub status_bytes: u64,
    /// Wall time of the whole section, in seconds.
    pub wall_s: f64,
}

/// Resident memory of this process (controller, hosts and driver), MiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Rss {
    /// Before anything started.
    pub start: f64,
    /// After the N agents were built and their sockets bound (no config yet).
    pub hosts_started: f64,
    /// After the setup (every host holds its full config).
    pub setup_done: f64,
    /// At the end.
    pub end: f64,
    /// Peak (VmHWM).
    pub peak: f64,
}

/// The whole report. JSON: `{"hosts":N,"store":"embedded|etcd","armed_ms":{"p50":..,"p99":..,
/// "max":..},"committed_ms":{..},"etcd_requests_per_migration":..,...}`: the sequential
/// section's fields at the top level, the concurrent batches under `concurrent`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ControlReport {
    /// Hosts.
    pub hosts: usize,
    /// VMs (one at home on each host).
    pub vms: usize,
    /// `embedded` or `etcd`.
    pub store: &'static str,
    /// Migrations one after another.
    #[serde(flatten)]
    pub sequential: Section,
    /// Migrations per concurrent batch.
    pub concurrent_migrations: usize,
    /// The concurrent batches, if any.
    pub concurrent: Option<Section>,
    /// How the hosts and VMs were registered: `api` or `store`.
    pub setup: &'static str,
    /// The controller's heartbeat period (`GET /v1/status` of every host), ms.
    pub host_poll_ms: u64,
    /// Registration and first configs, seconds.
    pub setup_s: f64,
    /// This process's memory.
    pub rss_mb: Rss,
    /// Memory per host before any config: (RSS after the agents started - RSS at start) / N,
    /// KiB.
    pub host_kb: f64,
    /// Peak RSS of the etcd this bench started, MiB.
    pub etcd_rss_mb: Option<f64>,
    /// The controller's `srmig_controller_push_failures_total` at the end (all kinds).
    pub push_failures: Option<u64>,
    /// `false` for a debug build, whose numbers mean little.
    pub optimized: bool,
}

fn row(out: &mut String, name: &str, p: &Percentiles) {
    let _ = writeln!(
        out,
        "  {name:<28} {:>10.1} {:>10.1} {:>10.1}",
        p.p50, p.p99, p.max
    );
}

fn section(out: &mut String, title: &str, s: &Section) {
    let _ = writeln!(
        out,
        "{title}: {} migrations in {:.1} s{}",
        s.migrations,
        s.wall_s,
        if s.failed > 0 {
            format!(", {} did NOT complete: {}", s.failed, s.failures.join("; "))
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        out,
        "  {:<28} {:>10} {:>10} {:>10}",
        "ms", "p50", "p99", "max"
    );
    row(out, "armed (path acked on all)", &s.armed_ms);
    row(out, "  of which endpoint acks", &s.endpoint_acks_ms);
    row(out, "committed (from migrate)", &s.committed_ms);
    row(out, "commit (from switchover)", &s.commit_ms);
    let _ = writeln!(
        out,
        "  per migration: {:.0} config pushes, {:.1} MB of configs, {:.0} ms agent CPU{}",
        s.config_pushes_per_migration,
        s.config_bytes_per_migration / 1e6,
        s.agent_apply_ms_per_migration,
        match s.etcd_requests_per_migration {
            Some(r) => format!(", {r:.1} etcd requests"),
            None => String::new(),
        }
    );
}

/// The report as a few lines of text.
pub fn render_table(r: &ControlReport) -> String {
    let mut out = String::new();
    if !r.optimized {
        out.push_str("warning: debug build; use --release for meaningful numbers\n");
    }
    let _ = writeln!(
        out,
        "{} hosts, {} VMs, store {}; setup ({}) {:.1} s; heartbeat every {} ms",
        r.hosts, r.vms, r.store, r.setup, r.setup_s, r.host_poll_ms
    );
    section(&mut out, "one after another", &r.sequential);
    if let Some(c) = &r.concurrent {
        section(
            &mut out,
            &format!("batches of {} concurrent", r.concurrent_migrations),
            c,
        );
    }
    let _ = writeln!(
        out,
        "RSS {:.0} MiB at the end (peak {:.0}; {:.0} KiB per host before configs){}; push failures {}",
        r.rss_mb.end,
        r.rss_mb.peak,
        r.host_kb,
        match r.etcd_rss_mb {
            Some(m) => format!("; etcd peak {m:.0} MiB"),
            None => String::new(),
        },
        r.push_failures
            .map_or_else(|| "unknown".to_owned(), |n| n.to_string())
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        let p = Percentiles::of(&v);
        assert_eq!((p.p50, p.p99, p.max), (100.0, 198.0, 200.0));
        let p = Percentiles::of(&[3.0, 1.0, 2.0]);
        assert_eq!((p.p50, p.p99, p.max), (2.0, 3.0, 3.0));
        assert_eq!(Percentiles::of(&[]), Percentiles::default());
    }

    #[test]
    fn json_has_the_issue_shape() {
        let r = ControlReport {
            hosts: 10,
            vms: 10,
            store: "etcd",
            sequential: Section {
                etcd_requests_per_migration: Some(7.0),
                ..Section::default()
            },
            concurrent_migrations: 0,
            concurrent: None,
            setup: "api",
            host_poll_ms: 2000,
            setup_s: 0.0,
            rss_mb: Rss::default(),
            host_kb: 0.0,
            etcd_rss_mb: None,
            push_failures: Some(0),
            optimized: true,
        };
        let v = serde_json::to_value(&r).expect("json");
        assert_eq!(v["hosts"], 10);
        assert_eq!(v["store"], "etcd");
        assert!(v["armed_ms"]["p99"].is_number());
        assert!(v["committed_ms"]["max"].is_number());
        assert_eq!(v["etcd_requests_per_migration"], 7.0);
    }
}
