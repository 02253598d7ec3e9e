//! `GET /metrics`: the controller's counters, gauges and histograms as OpenMetrics text
//! (`application/openmetrics-text; version=1.0.0`), encoded by `prometheus-client`. Counter
//! families are named without `_total`, their samples with it; the body ends in `# EOF`.
//!
//! | family | type | labels | what |
//! |---|---|---|---|
//! | `srmig_controller_migrations` | counter | `outcome` (`completed`, `failed`, `cancelled`) | migrations finished |
//! | `srmig_controller_migration_duration_seconds` | histogram | `outcome` | request to end, per finished migration |
//! | `srmig_controller_migration_path_armed_seconds` | histogram | | request to the SR path acknowledged by every ingress, per finished migration that got there |
//! | `srmig_controller_migration_blackout_seconds` | histogram | | the source reporting the VM paused to the destination reporting it running (the blackout as the controller saw it) |
//! | `srmig_controller_migration_committed_seconds` | histogram | | request to the commit acknowledged by every host |
//! | `srmig_controller_migration_fence_seconds` | histogram | | the commit to the destination holding every host's commit-fence marker (how long packets still travelled the old SR path) |
//! | `srmig_controller_migration_fence_incomplete` | counter | | migrations cleaned up without every host's marker (`fence_wait_ms` ran out) |
//! | `srmig_controller_migration_release_latency_seconds` | histogram | | the destination's srmigd seeing the VM resume to its first frame to the VM (`POST /v1/release`) |
//! | `srmig_controller_migration_network_downtime_seconds` | histogram | | the source's last frame to the VM before its pause to the destination's first after the resume (two hosts' clocks) |
//! | `srmig_controller_migration_phase_duration_seconds` | histogram | `phase` | time spent in each state (`expect-path-acks`, `expect-hypervisor-done`, ...) of finished migrations, from their phase records; observations (`source-paused`, `retried`, ...) are not states |
//! | `srmig_controller_config_pushes` | counter | | configs the core produced for a host (`PushConfig`), handed to the host's push task (several queued for one host may go out as one `PUT`) |
//! | `srmig_controller_push_failures` | counter | `kind` (`transient`: retried; `refused`: srmigd answered 4xx) | failed `PUT /v1/config` attempts |
//! | `srmig_controller_acks` | counter | | acknowledgements received from srmigd |
//! | `srmig_controller_host_polls` | counter | | `GET /v1/status` polls of hosts completed (heartbeat, VM states) |
//! | `srmig_controller_host_poll_failures` | counter | | of those, the ones that failed (no answer, bad body) |
//! | `srmig_controller_hosts_left_behind` | counter | | hosts that finished migrations stopped waiting for (`left_behind`: no acknowledgement within the unreachable timeout, or a cancel) |
//! | `srmig_controller_epoch_advances` | counter | | hosts found holding a version this controller never pushed (the controller moved to a newer epoch and pushed every host again) |
//! | `srmig_controller_store_save_failures` | counter | | store writes that failed (actions held until a save succeeds) |
//! | `srmig_controller_active_migrations` | gauge | | migrations in progress |
//! | `srmig_controller_hosts` | gauge | | hosts registered |
//! | `srmig_controller_epoch` | gauge | | the store epoch carried by every config |
//!
//! The engine calls the small `record`-style methods below as things happen (each is a few
//! atomic operations, never a wait); the API handler renders on demand without asking the
//! engine, so a scrape never queues behind a busy engine.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use srmig_api::{MigrationOutcome, MigrationPhase, MigrationStatus};

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Bucket bounds of the duration histograms, in seconds: acknowledgements take milliseconds,
/// a hypervisor minutes.
const SECONDS_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

fn seconds_histogram() -> Histogram {
    Histogram::new(SECONDS_BUCKETS)
}

/// Buckets of the delivery figures (release latency, network downtime), from 100 us: the
/// release goal is 1 ms after the resume.
const DELIVERY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
];

fn delivery_histogram() -> Histogram {
    Histogram::new(DELIVERY_BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// The controller's metrics (see the module docs). Shared between the engine, which records,
/// and the API, which renders.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    migrations: Family<OutcomeLabels, Counter>,
    migration_seconds: Histograms<OutcomeLabels>,
    phase_seconds: Histograms<PhaseLabels>,
    armed_seconds: Histogram,
    blackout_seconds: Histogram,
    committed_seconds: Histogram,
    fence_seconds: Histogram,
    fence_incomplete: Counter,
    release_latency_seconds: Histogram,
    network_downtime_seconds: Histogram,
    config_pushes: Counter,
    push_failures: Family<KindLabels, Counter>,
    acks: Counter,
    host_polls: Counter,
    host_poll_failures: Counter,
    hosts_left_behind: Counter,
    epoch_advances: Counter,
    store_save_failures: Counter,
    active_migrations: Gauge,
    hosts: Gauge,
    epoch: Gauge,
}

const OUTCOMES: [&str; 3] = ["completed", "failed", "cancelled"];

fn outcome_label(outcome: &MigrationOutcome) -> &'static str {
    match outcome {
        MigrationOutcome::Completed => "completed",
        MigrationOutcome::Failed(_) => "failed",
        MigrationOutcome::Cancelled => "cancelled",
    }
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let m = Metrics {
            registry: Registry::with_prefix("srmig_controller"),
            migrations: Family::default(),
            migration_seconds: Family::new_with_constructor(seconds_histogram as fn() -> _),
            phase_seconds: Family::new_with_constructor(seconds_histogram as fn() -> _),
            armed_seconds: seconds_histogram(),
            blackout_seconds: seconds_histogram(),
            committed_seconds: seconds_histogram(),
            fence_seconds: seconds_histogram(),
            fence_incomplete: Counter::default(),
            release_latency_seconds: delivery_histogram(),
            network_downtime_seconds: delivery_histogram(),
            config_pushes: Counter::default(),
            push_failures: Family::default(),
            acks: Counter::default(),
            host_polls: Counter::default(),
            host_poll_failures: Counter::default(),
            hosts_left_behind: Counter::default(),
            epoch_advances: Counter::default(),
            store_save_failures: Counter::default(),
            active_migrations: Gauge::default(),
            hosts: Gauge::default(),
            epoch: Gauge::default(),
        };
        // Every outcome and failure kind shows from the start (0), so rates work at once.
        for outcome in OUTCOMES {
            let _ = m.migrations.get_or_create(&OutcomeLabels { outcome });
        }
        for kind in ["transient", "refused"] {
            let _ = m.push_failures.get_or_create(&KindLabels { kind });
        }
        m.register()
    }

    /// Registers every family (help texts without a final period: the encoder adds one).
    fn register(mut self) -> Self {
        let r = &mut self.registry;
        r.register(
            "migrations",
            "Migrations finished, by outcome",
            self.migrations.clone(),
        );
        r.register_with_unit(
            "migration_duration",
            "Time from a migration's request to its end, by outcome",
            Unit::Seconds,
            self.migration_seconds.clone(),
        );
        r.register_with_unit(
            "migration_path_armed",
            "Time from a migration's request to its SR path acknowledged by every ingress",
            Unit::Seconds,
            self.armed_seconds.clone(),
        );
        r.register_with_unit(
            "migration_blackout",
            "Time from the source reporting the VM paused to the destination reporting it running, as the controller saw it",
            Unit::Seconds,
            self.blackout_seconds.clone(),
        );
        r.register_with_unit(
            "migration_committed",
            "Time from a migration's request to its commit acknowledged by every host",
            Unit::Seconds,
            self.committed_seconds.clone(),
        );
        r.register_with_unit(
            "migration_fence",
            "Time from a migration's commit to the destination holding every host's commit-fence marker (packets still on the old SR path until then)",
            Unit::Seconds,
            self.fence_seconds.clone(),
        );
        r.register(
            "migration_fence_incomplete",
            "Migrations cleaned up without every host's commit-fence marker (fence_wait_ms ran out)",
            self.fence_incomplete.clone(),
        );
        r.register_with_unit(
            "migration_release_latency",
            "Time from the destination's srmigd seeing the VM resume to its first frame to the VM",
            Unit::Seconds,
            self.release_latency_seconds.clone(),
        );
        r.register_with_unit(
            "migration_network_downtime",
            "Time from the source's last frame to the VM before its pause to the destination's first after the resume (two hosts' clocks)",
            Unit::Seconds,
            self.network_downtime_seconds.clone(),
        );
        r.register_with_unit(
            "migration_phase_duration",
            "Time finished migrations spent in each state, from their phase records",
            Unit::Seconds,
            self.phase_seconds.clone(),
        );
        r.register(
            "config_pushes",
            "Host configs produced by the core and handed to the host's push task",
            self.config_pushes.clone(),
        );
        r.register(
            "push_failures",
            "Failed PUT /v1/config attempts: transient (retried) or refused by srmigd (4xx)",
            self.push_failures.clone(),
        );
        r.register(
            "acks",
            "Config acknowledgements received from srmigd",
            self.acks.clone(),
        );
        r.register(
            "host_polls",
            "GET /v1/status polls of hosts completed (heartbeat and VM states)",
            self.host_polls.clone(),
        );
        r.register(
            "host_poll_failures",
            "GET /v1/status polls of hosts that failed",
            self.host_poll_failures.clone(),
        );
        r.register(
            "hosts_left_behind",
            "Hosts finished migrations stopped waiting for (no acknowledgement within the unreachable timeout, or a cancel)",
            self.hosts_left_behind.clone(),
        );
        r.register(
            "epoch_advances",
            "Hosts found holding a config version this controller never pushed (epoch moved on, every host pushed again)",
            self.epoch_advances.clone(),
        );
        r.register(
            "store_save_failures",
            "Store writes that failed (actions held until a save succeeds)",
            self.store_save_failures.clone(),
        );
        r.register(
            "active_migrations",
            "Migrations in progress",
            self.active_migrations.clone(),
        );
        r.register("hosts", "Hosts registered.", self.hosts.clone());
        r.register(
            "epoch",
            "The store epoch carried by every config pushed",
            self.epoch.clone(),
        );
        self
    }

    /// A `PushConfig` was handed to a host's push task.
    pub(crate) fn config_pushed(&self) {
        self.config_pushes.inc();
    }

    /// A push attempt failed; `retrying`: transient (it will be retried), else refused.
    pub(crate) fn push_failed(&self, retrying: bool) {
        let kind = if retrying { "transient" } else { "refused" };
        self.push_failures.get_or_create(&KindLabels { kind }).inc();
    }

    /// srmigd acknowledged a config.
    pub(crate) fn acked(&self) {
        self.acks.inc();
    }

    /// A host poll completed, `ok` or not.
    pub(crate) fn polled(&self, ok: bool) {
        self.host_polls.inc();
        if !ok {
            self.host_poll_failures.inc();
        }
    }

    /// The controller moved to a newer epoch.
    pub(crate) fn epoch_advanced(&self) {
        self.epoch_advances.inc();
    }

    /// A store save failed.
    pub(crate) fn save_failed(&self) {
        self.store_save_failures.inc();
    }

    /// A migration ended; `status` (when the core still has it) gives its phase records.
    pub(crate) fn migration_finished(
        &self,
        outcome: &MigrationOutcome,
        status: Option<&MigrationStatus>,
    ) {
        let labels = OutcomeLabels {
            outcome: outcome_label(outcome),
        };
        self.migrations.get_or_create(&labels).inc();
        let Some(status) = status else {
            return;
        };
        self.hosts_left_behind
            .inc_by(u64::try_from(status.left_behind.len()).unwrap_or(u64::MAX));
        if let Some(end) = status.phases.last() {
            let ms = end.at_ms.millis_since(status.started_at_ms);
            self.migration_seconds
                .get_or_create(&labels)
                .observe(ms as f64 / 1000.0);
        }
        let figures = status.figures();
        for (h, ms) in [
            (&self.armed_seconds, figures.path_armed_ms),
            (&self.blackout_seconds, figures.blackout_ms),
            (&self.committed_seconds, figures.committed_ms),
            (&self.fence_seconds, figures.fence_ms),
        ] {
            if let Some(ms) = ms {
                h.observe(ms as f64 / 1000.0);
            }
        }
        for (h, us) in [
            (&self.release_latency_seconds, figures.release_latency_us),
            (&self.network_downtime_seconds, figures.network_downtime_us),
        ] {
            if let Some(us) = us {
                h.observe(us as f64 / 1e6);
            }
        }
        if status
            .phases
            .iter()
            .any(|r| r.phase == MigrationPhase::FenceIncomplete)
        {
            self.fence_incomplete.inc();
        }
        for (phase, ms) in state_durations(status) {
            self.phase_seconds
                .get_or_create(&PhaseLabels {
                    phase: phase.to_string(),
                })
                .observe(ms as f64 / 1000.0);
        }
    }

    /// The engine's state after a commit.
    pub(crate) fn set_state(&self, active_migrations: usize, hosts: usize, epoch: u64) {
        let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.active_migrations
            .set(int(u64::try_from(active_migrations).unwrap_or(u64::MAX)));
        self.hosts
            .set(int(u64::try_from(hosts).unwrap_or(u64::MAX)));
        self.epoch.set(int(epoch));
    }

    /// The OpenMetrics text, ending in `# EOF`.
    pub(crate) fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(8 << 10);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Observations are entries of the history that are not states (see [`MigrationPhase`]).
/// Exhaustive on purpose: a new phase must be classified here.
fn is_observation(phase: MigrationPhase) -> bool {
    match phase {
        MigrationPhase::SourcePaused
        | MigrationPhase::HypervisorCompleted
        | MigrationPhase::CancelRequested
        | MigrationPhase::Retried
        | MigrationPhase::HostsLeftBehind
        | MigrationPhase::FenceComplete
        | MigrationPhase::FenceIncomplete => true,
        MigrationPhase::Requested
        | MigrationPhase::ExpectEndpointAcks
        | MigrationPhase::ExpectPathAcks
        | MigrationPhase::ExpectHypervisorDone
        | MigrationPhase::ExpectCommitAcks
        | MigrationPhase::ExpectRollbackAcks
        | MigrationPhase::ExpectCleanupAcks
        | MigrationPhase::Completed
        | MigrationPhase::Failed
        | MigrationPhase::Cancelled => false,
    }
}

/// How long the migration stayed in each state it left, in milliseconds, in order: a state
/// lasts from its record to the next state's record (observations in between do not end it).
/// The terminal state has no duration.
pub(crate) fn state_durations(status: &MigrationStatus) -> Vec<(MigrationPhase, u64)> {
    let mut out = Vec::new();
    let mut current: Option<(MigrationPhase, srmig_api::Timestamp)> = None;
    for record in status.phases.iter().filter(|r| !is_observation(r.phase)) {
        if let Some((phase, since)) = current {
            out.push((phase, record.at_ms.millis_since(since)));
        }
        current = Some((record.phase, record.at_ms));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use srmig_api::{HostId, MigrationId, PhaseRecord, Strategy, Timestamp, VmId};

    fn status(records: &[(MigrationPhase, u64)]) -> MigrationStatus {
        MigrationStatus {
            id: MigrationId(1),
            vm: VmId::new("v").expect("name"),
            from: HostId::new("a").expect("name"),
            to: HostId::new("b").expect("name"),
            strategy: Strategy::SrBuffer,
            phase: records.last().map_or(MigrationPhase::Requested, |r| r.0),
            started_at_ms: Timestamp(1000),
            phases: records
                .iter()
                .map(|&(phase, at)| PhaseRecord {
                    phase,
                    at_ms: Timestamp(at),
                })
                .collect(),
            error: None,
            hypervisor: None,
            left_behind: vec![],
            delivery: Default::default(),
        }
    }

    fn completed() -> MigrationStatus {
        use MigrationPhase as P;
        status(&[
            (P::Requested, 1000),
            (P::ExpectEndpointAcks, 1001),
            (P::ExpectPathAcks, 1005),
            (P::ExpectHypervisorDone, 1010),
            (P::SourcePaused, 1500),
            (P::ExpectCommitAcks, 1700),
            (P::HostsLeftBehind, 1710),
            (P::ExpectCleanupAcks, 1720),
            (P::Completed, 1780),
        ])
    }

    #[test]
    fn state_durations_skip_observations() {
        use MigrationPhase as P;
        assert_eq!(
            state_durations(&completed()),
            vec![
                (P::Requested, 1),
                (P::ExpectEndpointAcks, 4),
                (P::ExpectPathAcks, 5),
                (P::ExpectHypervisorDone, 690),
                (P::ExpectCommitAcks, 20),
                (P::ExpectCleanupAcks, 60),
            ]
        );
        assert!(state_durations(&status(&[])).is_empty());
        assert!(state_durations(&status(&[(P::Requested, 5)])).is_empty());
    }

    /// The checks a scraper makes: one `# TYPE` per family, before its samples; every sample
    /// belongs to the family declared above it (counters as `_total`, histograms as
    /// `_bucket`/`_sum`/`_count`, `_created` allowed); values are numbers; `# EOF` once, last.
    fn assert_well_formed(text: &str, families_expected: &[&str]) {
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1);
        let mut families = std::collections::BTreeSet::new();
        let (mut current, mut current_type) = (String::new(), String::new());
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, ty) = rest.split_once(' ').expect("type line");
                assert!(families.insert(name.to_owned()), "family {name} twice");
                current = name.to_owned();
                current_type = ty.to_owned();
                continue;
            }
            if let Some(rest) = line
                .strip_prefix("# HELP ")
                .or(line.strip_prefix("# UNIT "))
            {
                let name = rest.split(' ').next().expect("name");
                assert!(name.starts_with("srmig_controller_"), "{line}");
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            value.parse::<f64>().expect("numeric value");
            let metric = series.split('{').next().expect("name");
            let suffixes: &[&str] = match current_type.as_str() {
                "counter" => &["_total", "_created"],
                "histogram" => &["_bucket", "_sum", "_count", "_created"],
                _ => &[""],
            };
            assert!(
                suffixes.iter().any(|s| metric == format!("{current}{s}")),
                "{metric} outside its family {current} ({current_type})"
            );
        }
        for family in families_expected {
            assert!(families.contains(*family), "{family} missing:\n{text}");
        }
    }

    /// Families present from the start (histograms appear with their first observation).
    const ALWAYS: [&str; 12] = [
        "srmig_controller_migrations",
        "srmig_controller_config_pushes",
        "srmig_controller_push_failures",
        "srmig_controller_acks",
        "srmig_controller_host_polls",
        "srmig_controller_host_poll_failures",
        "srmig_controller_hosts_left_behind",
        "srmig_controller_epoch_advances",
        "srmig_controller_store_save_failures",
        "srmig_controller_active_migrations",
        "srmig_controller_hosts",
        "srmig_controller_epoch",
    ];

    #[test]
    fn well_formed_openmetrics_before_and_after_activity() {
        let m = Metrics::new();
        let empty = m.render().expect("render");
        assert_well_formed(&empty, &ALWAYS);
        assert!(empty.contains("srmig_controller_migrations_total{outcome=\"completed\"} 0\n"));
        assert!(empty.contains("srmig_controller_push_failures_total{kind=\"refused\"} 0\n"));

        m.config_pushed();
        m.config_pushed();
        m.acked();
        m.push_failed(true);
        m.polled(true);
        m.polled(false);
        m.epoch_advanced();
        m.save_failed();
        m.set_state(1, 3, 1_700_000_000_123);
        let mut left = completed();
        left.left_behind = vec![HostId::new("h3").expect("name")];
        left.delivery = srmig_api::DeliveryRecord {
            source_last_delivery_us: Some(1_499_900_000),
            release: Some(srmig_api::ReleaseFigures {
                resumed_at_us: 1_699_800_000,
                first_delivery_us: 1_699_800_400,
                ..Default::default()
            }),
        };
        m.migration_finished(&MigrationOutcome::Completed, Some(&left));
        m.migration_finished(&MigrationOutcome::Failed("x".into()), None);
        let text = m.render().expect("render");
        assert_well_formed(&text, &ALWAYS);
        assert_well_formed(
            &text,
            &[
                "srmig_controller_migration_duration_seconds",
                "srmig_controller_migration_phase_duration_seconds",
                "srmig_controller_migration_blackout_seconds",
            ],
        );
        assert!(text.contains("# UNIT srmig_controller_migration_duration_seconds seconds\n"));
        for line in [
            "srmig_controller_migrations_total{outcome=\"completed\"} 1",
            "srmig_controller_migrations_total{outcome=\"failed\"} 1",
            "srmig_controller_migrations_total{outcome=\"cancelled\"} 0",
            "srmig_controller_config_pushes_total 2",
            "srmig_controller_acks_total 1",
            "srmig_controller_push_failures_total{kind=\"transient\"} 1",
            "srmig_controller_host_polls_total 2",
            "srmig_controller_host_poll_failures_total 1",
            "srmig_controller_epoch_advances_total 1",
            "srmig_controller_hosts_left_behind_total 1",
            "srmig_controller_store_save_failures_total 1",
            "srmig_controller_active_migrations 1",
            "srmig_controller_hosts 3",
            "srmig_controller_epoch 1700000000123",
            "srmig_controller_migration_duration_seconds_count{outcome=\"completed\"} 1",
            "srmig_controller_migration_duration_seconds_sum{outcome=\"completed\"} 0.78",
            "srmig_controller_migration_phase_duration_seconds_count{phase=\"expect-hypervisor-done\"} 1",
            "srmig_controller_migration_phase_duration_seconds_bucket{le=\"0.5\",phase=\"expect-hypervisor-done\"} 0",
            "srmig_controller_migration_phase_duration_seconds_bucket{le=\"1.0\",phase=\"expect-hypervisor-done\"} 1",
            // Source paused at 1500, the destination running (commit) at 1700.
            "srmig_controller_migration_blackout_seconds_count 1",
            "srmig_controller_migration_blackout_seconds_sum 0.2",
            "srmig_controller_migration_path_armed_seconds_sum 0.01",
            "srmig_controller_migration_committed_seconds_count 1",
            "srmig_controller_migration_release_latency_seconds_count 1",
            "srmig_controller_migration_release_latency_seconds_bucket{le=\"0.00025\"} 0",
            "srmig_controller_migration_release_latency_seconds_bucket{le=\"0.0005\"} 1",
            "srmig_controller_migration_network_downtime_seconds_count 1",
            "srmig_controller_migration_network_downtime_seconds_sum 199.9004",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in\n{text}"
            );
        }
        // A failed migration the core no longer remembers: counted, no durations.
        assert!(
            !text.contains("outcome=\"failed\"} 0.")
                && !text.contains("_count{outcome=\"failed\"}")
        );
    }
}
