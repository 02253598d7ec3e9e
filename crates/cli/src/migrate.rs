//! `srmig migrate`: arguments, rendering and exit codes. The procedure itself (request,
//! follow, heartbeat, time limit, cancel) is `srmig_controller::follow`; this file only turns
//! its events into lines or a progress bar, and its end into a message and an exit code.

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use srmig_api::{
    ApiErrorCode, HostId, MigrateRequest, MigrationPhase, MigrationStatus, Strategy, VmId,
};
use srmig_controller::follow::{
    self, EventKind, FollowEnd, FollowError, FollowEvent, FollowOptions, TimeoutCancel,
};
use srmig_controller::http::{HttpError, PeerHttpError};

use crate::connect::{ConnectError, ControllerFlags, EXIT_USAGE};

/// The migration completed.
pub(crate) const EXIT_COMPLETED: u8 = 0;
/// An error: the controller is unreachable, refused the request, or stopped answering.
pub(crate) const EXIT_ERROR: u8 = 1;
// 2 is clap's: invalid arguments.
/// The migration failed or was cancelled, and rolled back to the source.
pub(crate) const EXIT_ROLLED_BACK: u8 = 3;
/// `--timeout` was reached before the migration ended.
pub(crate) const EXIT_TIMED_OUT: u8 = 4;

/// Shown by `srmig migrate --help`.
pub(crate) const AFTER_HELP: &str = "\
Progress: every phase as it is entered, what the migration waits for, and the hypervisor's
figures (RAM transferred, remaining, ETA) when its driver reports them; a heartbeat line
whenever nothing else happened for --heartbeat. A progress bar when stdout is a terminal,
timestamped lines otherwise (scripts, CI logs). Ctrl-C stops following; the migration goes on.

Exit status:
  0  the migration completed: the VM runs on the destination (with --no-wait: accepted)
  1  error: the controller is unreachable, refused the request (its error code and message
     are printed), or stopped answering for 30 s while the migration was followed; or this
     CLI's certificate (--tls-dir) could not be loaded
  2  invalid arguments (also: https:// without --tls-dir, --tls-dir with a socket)
  3  the migration failed or was cancelled and rolled back: the VM stays on the source
     (the reason is printed)
  4  --timeout reached before the migration ended: it goes on, unless --cancel-on-timeout
     asked the controller to cancel it (the message says which)";

/// `srmig migrate VM --to HOST ...`.
#[derive(Debug, clap::Args)]
pub(crate) struct MigrateArgs {
    /// The VM to move.
    vm: VmId,
    /// The destination host.
    #[arg(long)]
    to: HostId,
    /// traditional, sr-drop or sr-buffer.
    #[arg(long, default_value = "sr-buffer", value_parser = parse_strategy)]
    strategy: Strategy,
    #[command(flatten)]
    connect: ControllerFlags,
    /// Stop waiting after DURATION (e.g. 90s, 10m, 1h30m) and exit with 4. Default: no limit
    /// here, only the controller's own phase timeouts (`srmig controller --ack-timeout-ms`,
    /// 5 s: hosts that do not acknowledge roll the migration back; `--hypervisor-timeout-ms`,
    /// 10 min: the controller then asks the hypervisor to cancel).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, conflicts_with = "no_wait")]
    timeout: Option<Duration>,
    /// When --timeout is reached, ask the controller to cancel the migration: before the
    /// switchover it rolls back to the source; after it, the controller only stops waiting for
    /// hosts that have not acknowledged. Without it the migration goes on.
    #[arg(long, requires = "timeout")]
    cancel_on_timeout: bool,
    /// Follow the migration until it ends (the default).
    #[arg(long, overrides_with = "no_wait")]
    wait: bool,
    /// Print the migration's id and status once the controller accepted it, and exit 0.
    #[arg(long, overrides_with = "wait")]
    no_wait: bool,
    /// While nothing else happens, say where the migration stands this often.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    heartbeat: Duration,
}

pub(crate) fn parse_strategy(text: &str) -> Result<Strategy, String> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| format!("{text:?}: expected traditional, sr-drop or sr-buffer"))
}

/// `90s`, `10m`, `1h30m`, `500ms`, `2h`: a whole number and a unit (`ms`, `s`, `m`, `h`), one
/// or more times.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration: use e.g. 90s, 10m, 1h30m or 500ms");
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| {
            format!("{text:?} has no unit: say {text}s for seconds (or ms, m, h)")
        })?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" | "min" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            _ => return Err(bad()),
        };
        total = total.saturating_add(part);
        rest = &rest[unit_len..];
    }
    if total.is_zero() {
        return Err(format!("{text:?}: the duration must be above zero"));
    }
    Ok(total)
}

/// How events are shown.
enum View {
    /// One timestamped line per event (stdout is not a terminal).
    Lines,
    /// A spinner, then a bar of the memory sent; phase lines printed above it.
    Bar(Option<Box<Bar>>),
}

struct Bar {
    pb: ProgressBar,
    bytes: bool,
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_spinner())
}

impl View {
    fn show(&mut self, e: &FollowEvent<'_>) {
        match self {
            View::Lines => {
                // Every figure change is for progress bars; lines only for the notable ones.
                if !matches!(e.kind, EventKind::Progress { notable: false, .. }) {
                    out(&e.line());
                }
            }
            View::Bar(bar) => {
                let bar = bar.get_or_insert_with(|| {
                    let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout());
                    pb.set_style(style("{spinner} {elapsed:>4} {wide_msg}"));
                    pb.enable_steady_tick(Duration::from_millis(120));
                    Box::new(Bar { pb, bytes: false })
                });
                bar.show(e);
            }
        }
    }

    fn finish(&mut self) {
        if let View::Bar(Some(bar)) = self {
            bar.pb.finish_and_clear();
        }
    }
}

impl Bar {
    fn show(&mut self, e: &FollowEvent<'_>) {
        match e.kind {
            EventKind::Accepted { .. } | EventKind::ControllerSilent { .. } => {
                self.pb.println(e.line());
            }
            EventKind::Phase(r) => {
                self.pb.println(e.line());
                if !self.bytes {
                    self.pb.set_message(r.phase.to_string());
                }
            }
            EventKind::WaitingForHypervisor(w) => {
                self.pb.println(e.line());
                if !self.bytes {
                    self.pb.set_message(match &w.driver {
                        Some(d) => format!("waiting for the hypervisor (driver {d})"),
                        None => "waiting for the hypervisor".to_owned(),
                    });
                }
            }
            EventKind::Progress { progress, notable } => {
                if let (Some(total), Some(sent)) = (progress.ram_total, progress.ram_transferred) {
                    if !self.bytes {
                        self.bytes = true;
                        self.pb.set_style(style(
                            "{spinner} {elapsed:>4} [{bar:30}] {decimal_bytes}/{decimal_total_bytes} {wide_msg}",
                        ));
                    }
                    self.pb.set_length(total);
                    self.pb.set_position(sent.min(total));
                }
                let mut msg = progress.status.clone();
                if let Some(p) = progress.passes {
                    msg.push_str(&format!(", pass {p}"));
                }
                if let Some(r) = progress.ram_remaining {
                    msg.push_str(&format!(", {:.1} MB remaining", r as f64 / 1e6));
                }
                if let Some(eta) = follow::eta(progress) {
                    msg.push_str(&format!(", ETA {}", follow::human_duration(eta)));
                }
                self.pb.set_message(msg);
                if notable && progress.downtime_ms.is_some() {
                    self.pb.println(e.line());
                }
            }
            EventKind::Heartbeat(h) => {
                if !self.bytes {
                    self.pb.set_message(h.text());
                }
            }
        }
    }
}

/// Runs `srmig migrate` and returns its exit code (see [`AFTER_HELP`]).
pub(crate) fn run(args: MigrateArgs) -> ExitCode {
    let req = MigrateRequest {
        vm: args.vm,
        to: args.to,
        strategy: args.strategy,
    };
    let options = FollowOptions {
        wait: !args.no_wait,
        timeout: args.timeout,
        cancel_on_timeout: args.cancel_on_timeout,
        heartbeat: args.heartbeat,
        ..FollowOptions::default()
    };
    let mut view = if std::io::stdout().is_terminal() {
        View::Bar(None)
    } else {
        View::Lines
    };
    let client = match args.connect.client() {
        Ok(client) => client,
        Err(ConnectError::Usage(message)) => {
            err(&format!("error: {message}"));
            return ExitCode::from(EXIT_USAGE);
        }
        Err(ConnectError::Client(e)) => {
            err(&format!("error: {}", chain(&e)));
            err(&format!("  {}", args.connect.certificate_hint()));
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let end = follow::migrate_and_follow(&client, &req, &options, |e| view.show(e));
    view.finish();
    match end {
        Ok(end) => ExitCode::from(report(&end)),
        Err(e) => {
            err(&format!("error: {}", chain(&e)));
            if let Some(hint) = hint(&e, &args.connect) {
                err(&format!("  {hint}"));
            }
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Prints a line on stdout. A closed stdout (`srmig migrate ... | head -1`) is no reason to
/// stop following, nor to panic.
fn out(line: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// Prints a line on stderr (see [`out`]).
fn err(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// How long the migration has run, by the controller's records.
fn took(s: &MigrationStatus) -> String {
    let ms = s
        .phases
        .last()
        .map_or(0, |r| r.at_ms.millis_since(s.started_at_ms));
    format!("{ms} ms")
}

/// Prints how it ended; returns the exit code.
fn report(end: &FollowEnd) -> u8 {
    match end {
        FollowEnd::Accepted(s) => {
            out(&format!(
                "{} is {}; not waiting for it to end (GET /v1/migrations/{} shows its progress)",
                s.id, s.phase, s.id.0
            ));
            EXIT_COMPLETED
        }
        FollowEnd::Completed(s) => {
            out(&format!(
                "{} completed in {}: {} now runs on {}",
                s.id,
                took(s),
                s.vm,
                s.to
            ));
            EXIT_COMPLETED
        }
        FollowEnd::RolledBack(s) => {
            let why = match (&s.error, s.phase) {
                (Some(e), _) => e.clone(),
                (None, MigrationPhase::Cancelled) => "cancelled".to_owned(),
                (None, _) => "no reason given".to_owned(),
            };
            err(&format!(
                "{} {} after {}: {why}; {} stays on {}",
                s.id,
                s.phase,
                took(s),
                s.vm,
                s.from
            ));
            EXIT_ROLLED_BACK
        }
        FollowEnd::TimedOut {
            status,
            after,
            cancel,
        } => {
            let head = format!(
                "timed out after {} (--timeout): {} is still {}",
                follow::human_duration(*after),
                status.id,
                status.phase
            );
            match cancel {
                TimeoutCancel::NotRequested => err(&format!(
                    "{head}; it was NOT cancelled and goes on (cancel it with POST \
                     /v1/migrations/{}/cancel, or use --cancel-on-timeout)",
                    status.id.0
                )),
                TimeoutCancel::Requested(now)
                    if now.phase == MigrationPhase::ExpectHypervisorDone =>
                {
                    err(&format!(
                        "{head}; cancel requested (--cancel-on-timeout): the controller asked the \
                         hypervisor to cancel, and {} rolls back to {} once it confirms",
                        now.id, now.from
                    ))
                }
                TimeoutCancel::Requested(now) if follow::switched_over(now) => err(&format!(
                    "{head}; cancel requested (--cancel-on-timeout): past the switchover, so the \
                     controller only stops waiting for hosts that have not acknowledged (left \
                     behind) and {} completes on {} (now {})",
                    now.id, now.to, now.phase
                )),
                TimeoutCancel::Requested(now) => err(&format!(
                    "{head}; cancel requested (--cancel-on-timeout): {} rolls back to {} (now {})",
                    now.id, now.from, now.phase
                )),
                TimeoutCancel::Failed(e) => err(&format!(
                    "{head}; the cancel (--cancel-on-timeout) failed, so it goes on: {}",
                    match e.api_error() {
                        Some(api) => format!("{}: {}", api.code, api.message),
                        None => chain(e),
                    }
                )),
            }
            EXIT_TIMED_OUT
        }
    }
}

/// An error and its sources, joined by ": ".
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// What the operator can do about an error.
fn hint(e: &FollowError, connect: &ControllerFlags) -> Option<String> {
    match e {
        FollowError::Unreachable {
            source:
                PeerHttpError::Unix(HttpError::Timeout { .. })
                | PeerHttpError::Tls(srmig_tls::ClientError::Timeout { .. }),
            ..
        } => Some(
            "the controller is running but did not answer in time; the migration may have \
             been accepted: check GET /v1/migrations before retrying"
                .to_owned(),
        ),
        FollowError::Unreachable { source, .. } => connect.unreachable_hint(source),
        FollowError::Refused { error, .. } if error.code == ApiErrorCode::Forbidden => Some(
            "this certificate may not migrate: the controller lets `client` certificates \
             (srmig pki issue --role client) do what its local admins do, and a host's only \
             report about its own VMs"
                .to_owned(),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        let ok = |t: &str| parse_duration(t).expect(t);
        assert_eq!(ok("90s"), Duration::from_secs(90));
        assert_eq!(ok("10m"), Duration::from_secs(600));
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok(" 2h "), Duration::from_secs(7200));
        for bad in ["", "90", "s", "1.5s", "-3s", "10 m", "5d", "0s", "ms10"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert!(parse_duration("90").expect_err("no unit").contains("90s"));
    }

    #[test]
    fn exit_codes_do_not_collide_with_clap() {
        let codes = [EXIT_COMPLETED, EXIT_ERROR, EXIT_ROLLED_BACK, EXIT_TIMED_OUT];
        assert!(!codes.contains(&2), "2 is clap's usage error");
        let mut sorted = codes.to_vec();
        sorted.dedup();
        assert_eq!(sorted.len(), codes.len());
    }
}
