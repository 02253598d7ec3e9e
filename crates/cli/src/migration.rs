//! `srmig migration show ID` and `srmig migration list`: a migration's timeline as the
//! controller recorded it (every phase entered and every observation, with its time since the
//! request), and the figures derived from it: how long the SR path took to be armed on every
//! ingress, the blackout the controller saw (source paused to the destination running, i.e.
//! the commit starting), the commit fence, the whole migration, and what the hosts reported of
//! the VM's traffic: the network downtime (the source's last frame to the VM before the pause
//! to the destination's first after the resume) and the release latency.

use std::fmt::Write as _;
use std::process::ExitCode;

use srmig_api::{MigrationFigures, MigrationId, MigrationPhase, MigrationStatus};

use crate::connect::{ConnectError, ControllerFlags, EXIT_USAGE};
use crate::migrate::{chain, EXIT_ERROR};

/// `srmig migration ...`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum MigrationCommand {
    /// One migration's timeline: phases with their times since the request, what it waits
    /// for, and the derived figures (path armed, blackout seen by the controller, total).
    Show {
        /// The migration's id (as `srmig migrate` printed it: `3` or `m3`).
        id: String,
        #[command(flatten)]
        connect: ControllerFlags,
        /// Print the controller's JSON (MigrationStatus) plus the derived figures.
        #[arg(long)]
        json: bool,
    },
    /// Every migration the controller remembers, one line each.
    List {
        #[command(flatten)]
        connect: ControllerFlags,
    },
}

/// Figures derived from a migration's timeline, in ms (see [`MigrationFigures`]).
pub(crate) type Derived = MigrationFigures;

/// The derived figures of `s`.
pub(crate) fn derive(s: &MigrationStatus) -> Derived {
    s.figures()
}

/// The timeline as text.
pub(crate) fn render(s: &MigrationStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "migration m{}: {} from {} to {} ({}), {}",
        s.id.0, s.vm, s.from, s.to, s.strategy, s.phase
    );
    let start = s.started_at_ms.0;
    for r in &s.phases {
        let _ = writeln!(
            out,
            "  +{:>7} ms  {}",
            r.at_ms.0.saturating_sub(start),
            r.phase
        );
    }
    let d = derive(s);
    let ms = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v} ms"));
    let _ = writeln!(
        out,
        "  path armed on every ingress {}, blackout seen by the controller {}, committed {}, total {}",
        ms(d.path_armed_ms),
        ms(d.blackout_ms),
        ms(d.committed_ms),
        ms(d.total_ms)
    );
    let incomplete = s
        .phases
        .iter()
        .any(|r| r.phase == MigrationPhase::FenceIncomplete);
    if d.fence_ms.is_some() || incomplete {
        let _ = writeln!(
            out,
            "  commit fence: {}",
            match d.fence_ms {
                Some(f) =>
                    format!("every host's marker reached the destination {f} ms after the commit"),
                None => "cleaned up without every host's marker (fence_wait_ms ran out)".to_owned(),
            }
        );
    }
    if let Some(r) = &s.delivery.release {
        let downtime = d.network_downtime_us.map_or_else(
            || "- (no delivery time from the source)".to_owned(),
            |us| format!("{:.3} ms", us as f64 / 1000.0),
        );
        let _ = writeln!(
            out,
            "  delivery: network downtime {downtime} (the source's last frame to the VM to the destination's first), release {:.3} ms after the resume",
            r.latency_us() as f64 / 1000.0
        );
        let _ = writeln!(
            out,
            "  at the destination: held {}, released {}, fenced {}, dropped {}",
            r.held, r.released, r.fenced, r.dropped
        );
    }
    if let Some(e) = &s.error {
        let _ = writeln!(out, "  error: {e}");
    }
    if !s.left_behind.is_empty() {
        let hosts: Vec<String> = s.left_behind.iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "  left behind: {}", hosts.join(", "));
    }
    out
}

fn parse_id(text: &str) -> Option<MigrationId> {
    text.trim_start_matches('m').parse().ok().map(MigrationId)
}

/// Runs `srmig migration ...`.
pub(crate) fn run(cmd: MigrationCommand) -> ExitCode {
    let (MigrationCommand::Show { connect, .. } | MigrationCommand::List { connect }) = &cmd;
    let client = match connect.client() {
        Ok(c) => c,
        Err(ConnectError::Usage(m)) => {
            eprintln!("error: {m}");
            return ExitCode::from(EXIT_USAGE);
        }
        Err(ConnectError::Client(e)) => {
            eprintln!("error: {}", chain(&e));
            eprintln!("  {}", connect.certificate_hint());
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match &cmd {
        MigrationCommand::Show { id, json, .. } => {
            let Some(id) = parse_id(id) else {
                eprintln!("error: {id:?} is not a migration id (e.g. 3 or m3)");
                return ExitCode::from(EXIT_USAGE);
            };
            match runtime.block_on(client.migration(id)) {
                Ok(s) if *json => {
                    let mut v = serde_json::to_value(&s).unwrap_or_default();
                    if let Some(o) = v.as_object_mut() {
                        o.insert(
                            "derived".into(),
                            serde_json::to_value(derive(&s)).unwrap_or_default(),
                        );
                    }
                    println!("{v}");
                    ExitCode::SUCCESS
                }
                Ok(s) => {
                    print!("{}", render(&s));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: GET /v1/migrations/{}: {}", id.0, chain(&e));
                    ExitCode::from(EXIT_ERROR)
                }
            }
        }
        MigrationCommand::List { .. } => match runtime.block_on(client.migrations()) {
            Ok(list) => {
                for s in &list {
                    let d = derive(s);
                    println!(
                        "m{}  {}  {} -> {}  {}  {}  total {}",
                        s.id.0,
                        s.vm,
                        s.from,
                        s.to,
                        s.strategy,
                        s.phase,
                        d.total_ms
                            .map_or_else(|| "-".to_owned(), |v| format!("{v} ms"))
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: GET /v1/migrations: {}", chain(&e));
                ExitCode::from(EXIT_ERROR)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_fence_figure_is_shown() {
        let with = |fence: &str| -> MigrationStatus {
            serde_json::from_str(&format!(
                r#"{{"id":4,"vm":"web1","from":"h1","to":"h2","strategy":"sr-buffer",
                    "phase":"completed","started_at_ms":1000,
                    "phases":[{{"phase":"requested","at_ms":1000}},
                              {{"phase":"expect-commit-acks","at_ms":1680}},
                              {{"phase":"{fence}","at_ms":1712}},
                              {{"phase":"expect-cleanup-acks","at_ms":1712}},
                              {{"phase":"completed","at_ms":1750}}],
                    "error":null}}"#
            ))
            .expect("status")
        };
        let s = with("fence-complete");
        assert_eq!(derive(&s).fence_ms, Some(32));
        let text = render(&s);
        assert!(
            text.contains("every host's marker reached the destination 32 ms after the commit"),
            "{text}"
        );
        let s = with("fence-incomplete");
        assert_eq!(derive(&s).fence_ms, None);
        assert!(render(&s).contains("without every host's marker"));
    }

    #[test]
    fn derived_figures_come_from_the_timeline() {
        let s: MigrationStatus = serde_json::from_str(
            r#"{"id":3,"vm":"web1","from":"h1","to":"h2","strategy":"sr-buffer",
                "phase":"completed","started_at_ms":1000,
                "phases":[{"phase":"requested","at_ms":1000},
                          {"phase":"expect-endpoint-acks","at_ms":1000},
                          {"phase":"expect-path-acks","at_ms":1004},
                          {"phase":"expect-hypervisor-done","at_ms":1009},
                          {"phase":"source-paused","at_ms":1500},
                          {"phase":"expect-commit-acks","at_ms":1680},
                          {"phase":"expect-cleanup-acks","at_ms":1690},
                          {"phase":"completed","at_ms":1750}],
                "error":null}"#,
        )
        .expect("status");
        let d = derive(&s);
        assert_eq!(
            d,
            Derived {
                path_armed_ms: Some(9),
                blackout_ms: Some(180),
                committed_ms: Some(690),
                fence_ms: None,
                total_ms: Some(750),
                release_latency_us: None,
                network_downtime_us: None,
            }
        );
        assert!(!render(&s).contains("delivery:"));
        let mut s = s;
        s.delivery = serde_json::from_str(
            r#"{"source_last_delivery_us":1700000001499800,
                "release":{"resumed_at_us":1700000001680000,"first_delivery_us":1700000001680250,
                           "held":1800,"released":1800,"fenced":4,"dropped":0}}"#,
        )
        .expect("delivery");
        let d = derive(&s);
        assert_eq!(d.release_latency_us, Some(250));
        assert_eq!(d.network_downtime_us, Some(180_450));
        let text = render(&s);
        assert!(
            text.contains("network downtime 180.450 ms")
                && text.contains("release 0.250 ms after the resume"),
            "{text}"
        );
        assert!(
            text.contains("held 1800, released 1800, fenced 4, dropped 0"),
            "{text}"
        );
        let text = render(&s);
        assert!(text.contains("+    500 ms  source-paused"), "{text}");
        assert!(
            text.contains("blackout seen by the controller 180 ms"),
            "{text}"
        );
        assert_eq!(parse_id("m3"), Some(MigrationId(3)));
        assert_eq!(parse_id("x"), None);
    }
}
