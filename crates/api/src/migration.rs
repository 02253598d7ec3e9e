//! Migration requests, hypervisor reports and migration progress.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{HostId, MigrationId, Timestamp, VmId};

/// How a VM is migrated (the paper's three configurations).
///
/// JSON: `"traditional"`, `"sr-drop"` or `"sr-buffer"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// The mapping changes only when the destination reports the VM running; packets sent to
    /// the source meanwhile are lost (the baseline).
    Traditional,
    /// SR path `S::End.S -> D::End.SBUF` with End.SBUF dropping while the VM is not running
    /// at the destination.
    SrDrop,
    /// SR path with End.SBUF buffering until the VM resumes at the destination (zero loss).
    SrBuffer,
}

impl Strategy {
    /// True for the two segment-routing strategies.
    pub fn is_sr(self) -> bool {
        !matches!(self, Strategy::Traditional)
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strategy::Traditional => "traditional",
            Strategy::SrDrop => "sr-drop",
            Strategy::SrBuffer => "sr-buffer",
        })
    }
}

/// A request to migrate a VM.
///
/// Golden JSON: `{"vm":"web1","to":"h2","strategy":"sr-buffer"}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrateRequest {
    /// `vm`: the VM to move.
    pub vm: VmId,
    /// `to`: the destination host (the source is where the VM's mapping points now).
    pub to: HostId,
    /// `strategy`: how to move it.
    pub strategy: Strategy,
}

/// A phase of a migration: a state of the controller's state machine (named for what it
/// waits for), a terminal outcome, or an observation recorded on the way.
///
/// JSON: the kebab-case names below (`"expect-path-acks"`, `"completed"`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MigrationPhase {
    /// Accepted, nothing pushed yet.
    Requested,
    /// End.S on the source and End.SBUF on the destination pushed; waiting for those two
    /// hosts to acknowledge (SR strategies).
    ExpectEndpointAcks,
    /// SR path pushed to every ingress; waiting for every host to acknowledge.
    ExpectPathAcks,
    /// Migration started on the hypervisor; waiting for the VM to run at the destination
    /// (or for the hypervisor to report failure or cancellation).
    ExpectHypervisorDone,
    /// Observation: the source reported the VM paused (stop-and-copy began).
    SourcePaused,
    /// Observation: the hypervisor reported the migration complete.
    HypervisorCompleted,
    /// Observation: a cancel was requested (and, if the hypervisor was involved, sent to it).
    CancelRequested,
    /// Observation: a phase timed out and the pushes to the hosts that had not acknowledged
    /// were repeated (phases that cannot be abandoned: commit, rollback, cleanup), or the
    /// controller keeps waiting for the destination after the hypervisor completed.
    Retried,
    /// Observation: hosts that did not acknowledge a phase that cannot be abandoned (commit,
    /// rollback, cleanup) within the unreachable timeout, or when the operator cancelled it,
    /// were left behind (listed in `left_behind`); they get the current config when they
    /// answer again.
    HostsLeftBehind,
    /// Observation: after the commit, the destination received the commit-fence marker of
    /// every host ([`crate::FenceReport`]): nothing is left on the old SR path, the cleanup
    /// may remove End.S and End.SBUF.
    FenceComplete,
    /// Observation: the cleanup went ahead without the commit-fence markers of some hosts
    /// (the controller's `fence_wait_ms` ran out; markers lost, or a host without them).
    FenceIncomplete,
    /// Mapping "VM on the destination" pushed; waiting for every host to acknowledge.
    ExpectCommitAcks,
    /// Mapping "VM on the source" pushed after a failure or cancel; waiting for every host.
    ExpectRollbackAcks,
    /// End.S, End.SBUF and the leaving host's attachment removed; waiting for those hosts.
    ExpectCleanupAcks,
    /// Terminal: the VM runs on the destination, mapped there, nothing left to clean.
    Completed,
    /// Terminal: the migration failed; the VM stays mapped to the source.
    Failed,
    /// Terminal: the migration was cancelled; the VM stays mapped to the source.
    Cancelled,
}

impl MigrationPhase {
    /// True for `completed`, `failed` and `cancelled`.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            MigrationPhase::Completed | MigrationPhase::Failed | MigrationPhase::Cancelled
        )
    }
}

impl fmt::Display for MigrationPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MigrationPhase::Requested => "requested",
            MigrationPhase::ExpectEndpointAcks => "expect-endpoint-acks",
            MigrationPhase::ExpectPathAcks => "expect-path-acks",
            MigrationPhase::ExpectHypervisorDone => "expect-hypervisor-done",
            MigrationPhase::SourcePaused => "source-paused",
            MigrationPhase::HypervisorCompleted => "hypervisor-completed",
            MigrationPhase::CancelRequested => "cancel-requested",
            MigrationPhase::Retried => "retried",
            MigrationPhase::HostsLeftBehind => "hosts-left-behind",
            MigrationPhase::FenceComplete => "fence-complete",
            MigrationPhase::FenceIncomplete => "fence-incomplete",
            MigrationPhase::ExpectCommitAcks => "expect-commit-acks",
            MigrationPhase::ExpectRollbackAcks => "expect-rollback-acks",
            MigrationPhase::ExpectCleanupAcks => "expect-cleanup-acks",
            MigrationPhase::Completed => "completed",
            MigrationPhase::Failed => "failed",
            MigrationPhase::Cancelled => "cancelled",
        })
    }
}

/// One timestamped entry of a migration's history.
///
/// Golden JSON: `{"phase":"expect-path-acks","at_ms":1700000000012}`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseRecord {
    /// `phase`: the phase entered or the observation made.
    pub phase: MigrationPhase,
    /// `at_ms`: when, on the controller's clock (milliseconds).
    pub at_ms: Timestamp,
}

/// A migration's progress, as shown by the CLI and persisted by the controller.
///
/// Golden JSON (pretty-printed):
/// ```json
/// {"id":3,"vm":"web1","from":"h1","to":"h2","strategy":"sr-buffer",
///  "phase":"expect-hypervisor-done","started_at_ms":1000,
///  "phases":[{"phase":"requested","at_ms":1000},{"phase":"expect-endpoint-acks","at_ms":1000},
///            {"phase":"expect-path-acks","at_ms":1004},{"phase":"expect-hypervisor-done","at_ms":1009}],
///  "error":null}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationStatus {
    /// `id`: the migration's id.
    pub id: MigrationId,
    /// `vm`: the VM being moved.
    pub vm: VmId,
    /// `from`: the source host.
    pub from: HostId,
    /// `to`: the destination host.
    pub to: HostId,
    /// `strategy`: the strategy requested.
    pub strategy: Strategy,
    /// `phase`: the current state (never an observation).
    pub phase: MigrationPhase,
    /// `started_at_ms`: when the request was accepted (controller clock, milliseconds).
    pub started_at_ms: Timestamp,
    /// `phases`: history, oldest first: every state entered and every observation made.
    pub phases: Vec<PhaseRecord>,
    /// `error`: why the migration failed or is being rolled back, or why it is stalled;
    /// `null` otherwise.
    pub error: Option<String>,
    /// `hypervisor`: the hypervisor's own progress, when its driver reports one (QMP:
    /// `query-migrate`); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hypervisor: Option<HypervisorProgress>,
    /// `left_behind`: hosts that never acknowledged a phase that cannot be abandoned and were
    /// left behind (see `hosts-left-behind`); absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_behind: Vec<HostId>,
    /// `delivery`: how the hosts delivered the VM's traffic around the move (the source's last
    /// frame to the VM before its pause, the destination's release); absent until a host
    /// reported any of it.
    #[serde(default, skip_serializing_if = "DeliveryRecord::is_empty")]
    pub delivery: DeliveryRecord,
}

/// What the VM's hosts measured of its traffic around a migration, wall clocks in
/// microseconds since the Unix epoch (each host's own clock: the network downtime compares
/// two hosts' clocks, so it is as good as their synchronisation).
///
/// Golden JSON:
/// ```json
/// {"source_last_delivery_us":1700000000500100,
///  "release":{"resumed_at_us":1700000000680200,"first_delivery_us":1700000000680500,
///             "held":180,"released":180,"fenced":3,"dropped":0}}
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryRecord {
    /// `source_last_delivery_us`: when the source's srmigd handed the VM its last frame before
    /// it saw the VM pause (from the source's `paused` [`crate::VmStateReport`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_last_delivery_us: Option<u64>,
    /// `release`: the destination's first delivery after the resume
    /// ([`crate::ReleaseReport`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseFigures>,
}

impl DeliveryRecord {
    /// Nothing reported yet.
    pub fn is_empty(&self) -> bool {
        self.source_last_delivery_us.is_none() && self.release.is_none()
    }

    /// The destination's resume to its first frame to the VM, in microseconds.
    pub fn release_latency_us(&self) -> Option<u64> {
        self.release.map(|r| r.latency_us())
    }

    /// The source's last frame to the VM before the pause to the destination's first after
    /// the resume, in microseconds (two hosts' clocks).
    pub fn network_downtime_us(&self) -> Option<u64> {
        self.release
            .zip(self.source_last_delivery_us)
            .map(|(r, last)| r.first_delivery_us.saturating_sub(last))
    }
}

/// A VM's first delivery on a host after it resumed there, and what its buffers did since
/// its previous resume on that host (a migration's destination: End.SBUF and the commit
/// fence).
///
/// Golden JSON: `{"resumed_at_us":1700000000680200,"first_delivery_us":1700000000680500,
/// "held":180,"released":180,"fenced":3,"dropped":0}`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseFigures {
    /// `resumed_at_us`: when srmigd saw the VM resume (link up, QMP `RESUME`), wall clock,
    /// microseconds since the Unix epoch.
    pub resumed_at_us: u64,
    /// `first_delivery_us`: when srmigd handed the VM's port its first frame after that
    /// (normally the head of the End.SBUF release), same clock.
    pub first_delivery_us: u64,
    /// `held`: packets End.SBUF held for the VM since its previous resume here.
    pub held: u64,
    /// `released`: packets released from End.SBUF to the VM, same span.
    pub released: u64,
    /// `fenced`: direct packets the commit fence held for the VM, same span.
    pub fenced: u64,
    /// `dropped`: packets for the VM dropped here (buffer full, drop mode, not running), same
    /// span.
    pub dropped: u64,
}

impl ReleaseFigures {
    /// Resume to the first frame handed to the VM's port.
    pub fn latency_us(&self) -> u64 {
        self.first_delivery_us.saturating_sub(self.resumed_at_us)
    }
}

/// Figures derived from a migration's phase records, in milliseconds (`None` where a step
/// did not happen): what `srmig migration show` prints and the controller's `/metrics`
/// histograms observe.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MigrationFigures {
    /// Request to the SR path acknowledged by every ingress (the hypervisor may start).
    pub path_armed_ms: Option<u64>,
    /// The source reporting the VM paused to the destination reporting it running (the
    /// commit starts then): the blackout as the controller saw it.
    pub blackout_ms: Option<u64>,
    /// Request to the commit acknowledged by every host.
    pub committed_ms: Option<u64>,
    /// The commit (`expect-commit-acks`) to the destination holding every host's commit-fence
    /// marker (`fence-complete`): how long packets still travelled the old SR path after the
    /// switch. `None` without `fence-complete` (traditional, or `fence-incomplete`).
    pub fence_ms: Option<u64>,
    /// Request to the end (completed, failed or cancelled).
    pub total_ms: Option<u64>,
    /// The destination's resume to its first frame to the VM, in microseconds
    /// ([`ReleaseFigures::latency_us`]).
    pub release_latency_us: Option<u64>,
    /// The network downtime the VM saw, in microseconds: the source's last frame to it before
    /// the pause to the destination's first frame after the resume (two hosts' clocks).
    pub network_downtime_us: Option<u64>,
}

impl MigrationStatus {
    /// The figures its phase records give.
    pub fn figures(&self) -> MigrationFigures {
        let start = self.started_at_ms.0;
        let first =
            |p: MigrationPhase| self.phases.iter().find(|r| r.phase == p).map(|r| r.at_ms.0);
        let since = |t: Option<u64>| t.map(|t| t.saturating_sub(start));
        let paused = first(MigrationPhase::SourcePaused);
        let commit = first(MigrationPhase::ExpectCommitAcks);
        let after_commit = self
            .phases
            .iter()
            .skip_while(|r| r.phase != MigrationPhase::ExpectCommitAcks)
            .nth(1)
            .map(|r| r.at_ms.0);
        MigrationFigures {
            path_armed_ms: since(first(MigrationPhase::ExpectHypervisorDone)),
            blackout_ms: paused.zip(commit).map(|(p, c)| c.saturating_sub(p)),
            committed_ms: since(after_commit),
            fence_ms: commit
                .zip(first(MigrationPhase::FenceComplete))
                .map(|(c, f)| f.saturating_sub(c)),
            total_ms: self
                .phases
                .iter()
                .rev()
                .find(|r| r.phase.is_terminal())
                .map(|r| r.at_ms.0.saturating_sub(start)),
            release_latency_us: self.delivery.release_latency_us(),
            network_downtime_us: self.delivery.network_downtime_us(),
        }
    }
}

/// A hypervisor's view of a running migration (the QMP driver fills it from `query-migrate`
/// and QEMU's event timestamps).
///
/// Golden JSON: `{"status":"active","total_time_ms":212,"ram_transferred":41000000,
/// "ram_remaining":90000000,"ram_total":134750208,"passes":1}`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HypervisorProgress {
    /// `status`: the hypervisor's migration status (QEMU: `setup`, `active`, `completed`, ...).
    pub status: String,
    /// `total_time_ms`: time since the hypervisor started migrating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_time_ms: Option<u64>,
    /// `ram_transferred`: bytes of guest memory sent so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram_transferred: Option<u64>,
    /// `ram_remaining`: bytes still to send (dirty pages included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram_remaining: Option<u64>,
    /// `ram_total`: guest memory size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram_total: Option<u64>,
    /// `passes`: pre-copy passes so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passes: Option<u64>,
    /// `downtime_ms`: the hypervisor's downtime figure once completed (QEMU: source side only,
    /// STOP until the last byte sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<u64>,
    /// `pause_us`: the true pause, source STOP to destination RESUME, from the hypervisors'
    /// event timestamps (microseconds), once both were seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_us: Option<u64>,
    /// `stopped_at_us`: when the source stopped the VM (its STOP event), wall clock,
    /// microseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at_us: Option<i64>,
    /// `resumed_at_us`: when the destination resumed the VM (its RESUME event), wall clock,
    /// microseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_at_us: Option<i64>,
}

impl fmt::Display for HypervisorProgress {
    /// `active 31% (41.0/134.8 MB, pass 1) 212 ms`, `completed 530 ms, downtime 19 ms, pause 25.3 ms`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.status)?;
        if let (Some(done), Some(total)) = (self.ram_transferred, self.ram_total) {
            if total > 0 && self.downtime_ms.is_none() {
                let pct = (done.min(total) * 100) / total;
                write!(
                    f,
                    " {pct}% ({:.1}/{:.1} MB",
                    done as f64 / 1e6,
                    total as f64 / 1e6
                )?;
                if let Some(p) = self.passes {
                    write!(f, ", pass {p}")?;
                }
                f.write_str(")")?;
            }
        }
        if let Some(t) = self.total_time_ms {
            write!(f, " {t} ms")?;
        }
        if let Some(d) = self.downtime_ms {
            write!(f, ", downtime {d} ms")?;
        }
        if let Some(p) = self.pause_us {
            write!(f, ", pause {:.1} ms", p as f64 / 1000.0)?;
        }
        Ok(())
    }
}

/// How a migration ended.
///
/// JSON: `"completed"`, `{"failed":"reason"}` or `"cancelled"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MigrationOutcome {
    /// The VM runs on the destination and is mapped there.
    Completed,
    /// The migration failed for the given reason; the VM stays mapped to the source.
    Failed(String),
    /// The migration was cancelled; the VM stays mapped to the source.
    Cancelled,
}

impl MigrationOutcome {
    /// The terminal phase matching this outcome.
    pub fn phase(&self) -> MigrationPhase {
        match self {
            MigrationOutcome::Completed => MigrationPhase::Completed,
            MigrationOutcome::Failed(_) => MigrationPhase::Failed,
            MigrationOutcome::Cancelled => MigrationPhase::Cancelled,
        }
    }
}

impl fmt::Display for MigrationOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MigrationOutcome::Completed => f.write_str("completed"),
            MigrationOutcome::Failed(reason) => write!(f, "failed: {reason}"),
            MigrationOutcome::Cancelled => f.write_str("cancelled"),
        }
    }
}

/// What the hypervisor driver reports about a migration it was asked to run.
///
/// JSON: `"completed"`, `{"failed":"reason"}` or `"cancelled"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HypervisorEvent {
    /// The hypervisor finished the migration (QMP: status `completed`); the VM resumes, or
    /// has resumed, on the destination.
    Completed,
    /// The migration failed (QMP: status `failed`); the VM keeps running on the source.
    Failed(String),
    /// The migration was cancelled (QMP: status `cancelled`); the VM keeps running on the source.
    Cancelled,
}

/// A hypervisor event for one migration, as sent to the controller.
///
/// Golden JSON: `{"vm":"web1","migration":3,"event":{"failed":"connection reset"}}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HypervisorReport {
    /// `vm`: the VM whose migration the event is about.
    pub vm: VmId,
    /// `migration`: the migration the driver was asked to run (from `StartMigration`); an
    /// event for another migration of the same VM is stale and ignored.
    pub migration: MigrationId,
    /// `event`: what happened.
    pub event: HypervisorEvent,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(s: &str) -> VmId {
        VmId::new(s).expect("name")
    }
    fn host(s: &str) -> HostId {
        HostId::new(s).expect("name")
    }

    #[test]
    fn migrate_request_golden_json() {
        let golden = r#"{"vm":"web1","to":"h2","strategy":"sr-buffer"}"#;
        let req = MigrateRequest {
            vm: vm("web1"),
            to: host("h2"),
            strategy: Strategy::SrBuffer,
        };
        assert_eq!(serde_json::to_string(&req).expect("serialize"), golden);
        assert_eq!(
            serde_json::from_str::<MigrateRequest>(golden).expect("deserialize"),
            req
        );
        assert!(serde_json::from_str::<MigrateRequest>(
            r#"{"vm":"web1","to":"h2","strategy":"sr-buffer","from":"h1"}"#
        )
        .is_err());
        assert!(serde_json::from_str::<MigrateRequest>(
            r#"{"vm":"web1","to":"h2","strategy":"sr_buffer"}"#
        )
        .is_err());
    }

    #[test]
    fn strategies_spelled_as_documented() {
        for (s, text) in [
            (Strategy::Traditional, "traditional"),
            (Strategy::SrDrop, "sr-drop"),
            (Strategy::SrBuffer, "sr-buffer"),
        ] {
            assert_eq!(
                serde_json::to_string(&s).expect("serialize"),
                format!("\"{text}\"")
            );
            assert_eq!(s.to_string(), text);
        }
        assert!(!Strategy::Traditional.is_sr());
        assert!(Strategy::SrDrop.is_sr() && Strategy::SrBuffer.is_sr());
    }

    #[test]
    fn phase_display_matches_json() {
        use MigrationPhase::*;
        for p in [
            Requested,
            ExpectEndpointAcks,
            ExpectPathAcks,
            ExpectHypervisorDone,
            SourcePaused,
            HypervisorCompleted,
            CancelRequested,
            Retried,
            ExpectCommitAcks,
            ExpectRollbackAcks,
            ExpectCleanupAcks,
            Completed,
            Failed,
            Cancelled,
        ] {
            let json = serde_json::to_string(&p).expect("serialize");
            assert_eq!(json, format!("\"{p}\""));
            assert_eq!(
                serde_json::from_str::<MigrationPhase>(&json).expect("deserialize"),
                p
            );
            assert_eq!(p.is_terminal(), matches!(p, Completed | Failed | Cancelled));
        }
    }

    #[test]
    fn status_golden_json() {
        let golden = concat!(
            r#"{"id":3,"vm":"web1","from":"h1","to":"h2","strategy":"sr-buffer","#,
            r#""phase":"expect-hypervisor-done","started_at_ms":1000,"#,
            r#""phases":[{"phase":"requested","at_ms":1000},{"phase":"expect-endpoint-acks","at_ms":1000},"#,
            r#"{"phase":"expect-path-acks","at_ms":1004},{"phase":"expect-hypervisor-done","at_ms":1009}],"#,
            r#""error":null}"#
        );
        let rec = |phase, at| PhaseRecord {
            phase,
            at_ms: Timestamp(at),
        };
        let status = MigrationStatus {
            id: MigrationId(3),
            vm: vm("web1"),
            from: host("h1"),
            to: host("h2"),
            strategy: Strategy::SrBuffer,
            phase: MigrationPhase::ExpectHypervisorDone,
            started_at_ms: Timestamp(1000),
            phases: vec![
                rec(MigrationPhase::Requested, 1000),
                rec(MigrationPhase::ExpectEndpointAcks, 1000),
                rec(MigrationPhase::ExpectPathAcks, 1004),
                rec(MigrationPhase::ExpectHypervisorDone, 1009),
            ],
            error: None,
            hypervisor: None,
            left_behind: vec![],
            delivery: DeliveryRecord::default(),
        };
        assert_eq!(serde_json::to_string(&status).expect("serialize"), golden);
        assert_eq!(
            serde_json::from_str::<MigrationStatus>(golden).expect("deserialize"),
            status
        );
    }

    #[test]
    fn delivery_golden_json_and_figures() {
        let golden = concat!(
            r#"{"source_last_delivery_us":1700000000500100,"#,
            r#""release":{"resumed_at_us":1700000000680200,"first_delivery_us":1700000000680500,"#,
            r#""held":180,"released":180,"fenced":3,"dropped":0}}"#
        );
        let d = DeliveryRecord {
            source_last_delivery_us: Some(1_700_000_000_500_100),
            release: Some(ReleaseFigures {
                resumed_at_us: 1_700_000_000_680_200,
                first_delivery_us: 1_700_000_000_680_500,
                held: 180,
                released: 180,
                fenced: 3,
                dropped: 0,
            }),
        };
        assert_eq!(serde_json::to_string(&d).expect("serialize"), golden);
        assert_eq!(
            serde_json::from_str::<DeliveryRecord>(golden).expect("deserialize"),
            d
        );
        assert!(serde_json::from_str::<DeliveryRecord>(r#"{"x":1}"#).is_err());
        let mut status: MigrationStatus = serde_json::from_str(
            r#"{"id":3,"vm":"web1","from":"h1","to":"h2","strategy":"sr-buffer",
                "phase":"completed","started_at_ms":1000,"phases":[],"error":null}"#,
        )
        .expect("status");
        assert!(status.delivery.is_empty());
        assert_eq!(status.figures().release_latency_us, None);
        status.delivery = d;
        let f = status.figures();
        assert_eq!(f.release_latency_us, Some(300));
        assert_eq!(f.network_downtime_us, Some(180_400));
        // Only the release known (the source's srmigd did not say): no downtime.
        status.delivery.source_last_delivery_us = None;
        assert_eq!(status.figures().network_downtime_us, None);
        assert!(serde_json::to_string(&status)
            .expect("serialize")
            .contains(r#""delivery":{"release":"#));
    }

    #[test]
    fn hypervisor_progress_golden_json_and_display() {
        let golden = concat!(
            r#"{"status":"active","total_time_ms":212,"ram_transferred":41000000,"#,
            r#""ram_remaining":90000000,"ram_total":134750208,"passes":1}"#
        );
        let p = HypervisorProgress {
            status: "active".into(),
            total_time_ms: Some(212),
            ram_transferred: Some(41_000_000),
            ram_remaining: Some(90_000_000),
            ram_total: Some(134_750_208),
            passes: Some(1),
            downtime_ms: None,
            pause_us: None,
            stopped_at_us: None,
            resumed_at_us: None,
        };
        assert_eq!(serde_json::to_string(&p).expect("serialize"), golden);
        assert_eq!(
            serde_json::from_str::<HypervisorProgress>(golden).expect("deserialize"),
            p
        );
        assert_eq!(p.to_string(), "active 30% (41.0/134.8 MB, pass 1) 212 ms");
        let done = HypervisorProgress {
            status: "completed".into(),
            total_time_ms: Some(530),
            downtime_ms: Some(19),
            pause_us: Some(25_300),
            stopped_at_us: Some(1_700_000_000_000_000),
            resumed_at_us: Some(1_700_000_000_025_300),
            ..p
        };
        let json = serde_json::to_string(&done).expect("serialize");
        assert!(
            json.contains(r#""stopped_at_us":1700000000000000,"resumed_at_us":1700000000025300"#),
            "{json}"
        );
        assert_eq!(
            done.to_string(),
            "completed 530 ms, downtime 19 ms, pause 25.3 ms"
        );
    }

    #[test]
    fn outcomes_and_hypervisor_events_golden_json() {
        let cases: [(MigrationOutcome, &str); 3] = [
            (MigrationOutcome::Completed, r#""completed""#),
            (
                MigrationOutcome::Failed("host h3 did not acknowledge".into()),
                r#"{"failed":"host h3 did not acknowledge"}"#,
            ),
            (MigrationOutcome::Cancelled, r#""cancelled""#),
        ];
        for (o, golden) in cases {
            assert_eq!(serde_json::to_string(&o).expect("serialize"), golden);
            assert_eq!(
                serde_json::from_str::<MigrationOutcome>(golden).expect("deserialize"),
                o
            );
        }
        let report = HypervisorReport {
            vm: vm("web1"),
            migration: MigrationId(3),
            event: HypervisorEvent::Failed("connection reset".into()),
        };
        let golden = r#"{"vm":"web1","migration":3,"event":{"failed":"connection reset"}}"#;
        assert_eq!(serde_json::to_string(&report).expect("serialize"), golden);
        assert_eq!(
            serde_json::from_str::<HypervisorReport>(golden).expect("deserialize"),
            report
        );
        assert_eq!(
            serde_json::from_str::<HypervisorEvent>(r#""cancelled""#).expect("deserialize"),
            HypervisorEvent::Cancelled
        );
    }
}
