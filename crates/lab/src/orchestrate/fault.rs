//! Fault injection in lab runs: `srmig lab migrate --fault WHAT:PHASE` (repeatable).
//!
//! WHAT is `kill-controller`, `kill-srmigd-s|d|c`, `restart-controller` or
//! `restart-srmigd-s|d|c`; PHASE is where in *each* migration of the run the fault fires:
//!
//! | PHASE        | fires                                                                  |
//! |--------------|------------------------------------------------------------------------|
//! | `prepare`    | right after the migration was requested (SR path being armed)          |
//! | `migrating`  | when the hypervisor phase began (pre-copy; QEMU: migration active)     |
//! | `switchover` | when the VM was paused at the source (stop-and-copy)                   |
//! | `commit`     | when the controller pushes the commit (phase `expect-commit-acks`)     |
//! | `cleanup`    | when the controller pushes the cleanup (phase `expect-cleanup-acks`)   |
//! | `steady`     | between migrations: the migration is requested once all is back        |
//!
//! A fault on a process that an earlier fault left down waits until it was started again.
//! `kill-*` sends SIGKILL and leaves the process down for [`FaultPlan::down`] (1 s by
//! default) before starting it again, as a service manager would; `restart-*` sends SIGKILL
//! and starts it again at once. Either way the migration goes on around it: the lab's
//! emulated hypervisor (netns) or QEMU keeps moving the VM, and the lab's calls to a process
//! that is down are retried until it is back.
//!
//! Each fault gives one [`FaultRecord`] in the report's `faults`: the migration it hit, how
//! that migration ended (`completed` or `rolled_back`), and `recovered_ms`, the time from the
//! SIGKILL until the component was back *and in sync*: for the controller, it answers and
//! every host has acknowledged the configuration it pushed; for srmigd, the controller has
//! given it its host configuration back (new boot epoch seen, config pushed and
//! acknowledged).
//!
//! What a fault may cost: a controller fault loses no packet (the data path does not need
//! the controller; a migration in flight waits for it). A srmigd fault loses the packets that
//! arrive at that host while it is down and the packets it held in memory at the SIGKILL
//! (End.SBUF's buffer on the destination during a switchover).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

use super::error::OrchestrateError;
use super::plan::HostRole;

/// What is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// The controller process.
    Controller,
    /// Whichever controller replica leads (`--controllers N`).
    Leader,
    /// The srmigd of a host.
    Srmigd(HostRole),
}

/// Whether the process stays down for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// SIGKILL; started again after [`FaultPlan::down`].
    Kill,
    /// SIGKILL; started again at once.
    Restart,
}

/// Where in a migration a fault fires (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultPhase {
    /// Just before the migration is requested.
    Steady,
    /// Right after the request.
    Prepare,
    /// The hypervisor phase began.
    Migrating,
    /// The VM was paused at the source.
    Switchover,
    /// The commit is being pushed.
    Commit,
    /// The cleanup is being pushed.
    Cleanup,
}

impl FaultPhase {
    /// Every phase, in the order they come in a migration.
    pub const ALL: [FaultPhase; 6] = [
        FaultPhase::Steady,
        FaultPhase::Prepare,
        FaultPhase::Migrating,
        FaultPhase::Switchover,
        FaultPhase::Commit,
        FaultPhase::Cleanup,
    ];

    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultPhase::Steady => "steady",
            FaultPhase::Prepare => "prepare",
            FaultPhase::Migrating => "migrating",
            FaultPhase::Switchover => "switchover",
            FaultPhase::Commit => "commit",
            FaultPhase::Cleanup => "cleanup",
        }
    }
}

/// One `--fault WHAT:PHASE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// Kill (down for a while) or restart (at once).
    pub kind: FaultKind,
    /// What.
    pub target: Component,
    /// When.
    pub phase: FaultPhase,
}

impl Fault {
    /// `kill-controller`, `restart-srmigd-d`, ...
    pub fn what(&self) -> String {
        let kind = match self.kind {
            FaultKind::Kill => "kill",
            FaultKind::Restart => "restart",
        };
        let target = match self.target {
            Component::Controller => "controller",
            Component::Leader => "leader",
            Component::Srmigd(HostRole::Source) => "srmigd-s",
            Component::Srmigd(HostRole::Destination) => "srmigd-d",
            Component::Srmigd(HostRole::Client) => "srmigd-c",
            // Not parsed from `--fault` (faults target C, S and D only).
            Component::Srmigd(HostRole::Other(_)) => "srmigd-other",
        };
        format!("{kind}-{target}")
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.what(), self.phase.name())
    }
}

const WHATS: &str = "kill-controller, kill-leader, kill-srmigd-s, kill-srmigd-d, kill-srmigd-c, \
                     restart-controller, restart-leader, restart-srmigd-s, restart-srmigd-d, restart-srmigd-c";

impl FromStr for Fault {
    type Err = OrchestrateError;

    fn from_str(text: &str) -> Result<Fault, OrchestrateError> {
        let bad = |why: String| {
            OrchestrateError::Options(format!("--fault {text:?}: {why} (expected WHAT:PHASE)"))
        };
        let (what, phase) = text
            .split_once(':')
            .ok_or_else(|| bad("no ':' between WHAT and PHASE".into()))?;
        let (kind, target) = if let Some(rest) = what.strip_prefix("kill-") {
            (FaultKind::Kill, rest)
        } else if let Some(rest) = what.strip_prefix("restart-") {
            (FaultKind::Restart, rest)
        } else {
            return Err(bad(format!("unknown WHAT {what:?}; one of {WHATS}")));
        };
        let target = match target {
            "controller" => Component::Controller,
            "leader" => Component::Leader,
            "srmigd-s" => Component::Srmigd(HostRole::Source),
            "srmigd-d" => Component::Srmigd(HostRole::Destination),
            "srmigd-c" => Component::Srmigd(HostRole::Client),
            _ => return Err(bad(format!("unknown WHAT {what:?}; one of {WHATS}"))),
        };
        let phase = FaultPhase::ALL
            .into_iter()
            .find(|p| p.name() == phase)
            .ok_or_else(|| {
                let names: Vec<&str> = FaultPhase::ALL.iter().map(|p| p.name()).collect();
                bad(format!(
                    "unknown PHASE {phase:?}; one of {}",
                    names.join(", ")
                ))
            })?;
        Ok(Fault {
            kind,
            target,
            phase,
        })
    }
}

/// The faults of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultPlan {
    /// Every `--fault`, each applied to every migration.
    pub faults: Vec<Fault>,
    /// How long a `kill-*` leaves the process down.
    pub down: Duration,
}

impl Default for FaultPlan {
    fn default() -> Self {
        FaultPlan {
            faults: Vec::new(),
            down: Duration::from_secs(1),
        }
    }
}

impl FaultPlan {
    /// The faults that fire at `phase`.
    pub fn at(&self, phase: FaultPhase) -> impl Iterator<Item = Fault> + '_ {
        self.faults
            .iter()
            .copied()
            .filter(move |f| f.phase == phase)
    }

    /// Time to add to each migration's slot: a fault's down time plus its recovery (a
    /// restarted srmigd gets its config back within the controller's 2 s host poll).
    pub fn allowance(&self) -> Duration {
        self.faults
            .iter()
            .map(|f| match f.kind {
                FaultKind::Kill => self.down + Duration::from_millis(2500),
                FaultKind::Restart => Duration::from_millis(2500),
            })
            .sum()
    }
}

/// One fault as it happened (the report's `faults[]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultRecord {
    /// WHAT (`kill-controller`, ...).
    pub fault: String,
    /// PHASE as asked.
    pub phase: &'static str,
    /// The migration it hit: its number in the run, from 1.
    pub migration: u32,
    /// The controller's id of that migration (`m3`).
    pub id: String,
    /// `completed` or `rolled_back`.
    pub outcome: &'static str,
    /// SIGKILL to back and in sync (see the module docs), ms.
    pub recovered_ms: f64,
    /// How long the process was down (SIGKILL to started again and answering), ms.
    pub down_ms: f64,
    /// The controller's phase of the migration when the fault fired (`null` when the
    /// controller could not be asked, or between migrations).
    pub controller_phase: Option<String>,
    /// Controller replicas (`kill-leader`): the replica killed (`c0`...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub killed_replica: Option<String>,
    /// Controller replicas: the replica that led when the migration ended (the one that
    /// finished it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_by: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_and_print() {
        for text in [
            "kill-controller:migrating",
            "restart-srmigd-d:switchover",
            "kill-srmigd-c:steady",
            "restart-controller:cleanup",
            "kill-srmigd-s:prepare",
            "restart-srmigd-s:commit",
        ] {
            let f: Fault = text.parse().expect(text);
            assert_eq!(f.to_string(), text);
        }
        let f: Fault = "restart-srmigd-d:switchover".parse().expect("parse");
        assert_eq!(f.kind, FaultKind::Restart);
        assert_eq!(f.target, Component::Srmigd(HostRole::Destination));
        assert_eq!(f.phase, FaultPhase::Switchover);
    }

    #[test]
    fn bad_faults_say_what_is_expected() {
        for (text, needle) in [
            ("kill-controller", "no ':'"),
            ("stop-controller:commit", "unknown WHAT"),
            ("kill-srmigd-x:commit", "kill-srmigd-c"),
            ("kill-controller:later", "steady"),
        ] {
            let e = text.parse::<Fault>().expect_err(text).to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn allowance_counts_down_time_for_kills_only() {
        let plan = FaultPlan {
            faults: vec![
                "kill-controller:commit".parse().expect("kill"),
                "restart-srmigd-d:commit".parse().expect("restart"),
            ],
            down: Duration::from_secs(2),
        };
        assert_eq!(plan.allowance(), Duration::from_millis(2000 + 2500 + 2500));
        assert_eq!(plan.at(FaultPhase::Commit).count(), 2);
        assert_eq!(plan.at(FaultPhase::Steady).count(), 0);
    }
}
