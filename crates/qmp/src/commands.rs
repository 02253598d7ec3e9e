//! Typed helpers for the commands srmig drives a migration with.
//!
//! A live migration between two QEMUs, as srmig runs it (`src`, `dst` are two [`Client`]s):
//!
//! ```text
//! dst: qemu ... -incoming defer
//! dst: migrate_set_capabilities([events])     (MIGRATION events need it on both sides)
//! dst: migrate_incoming("tcp:[::1]:4441")     -> dst MIGRATION setup
//! src: migrate_set_capabilities([events, (pause-before-switchover)])
//! src: migrate_set_parameters(...)            (optional: bandwidth, downtime limit)
//! src: migrate("tcp:[::1]:4441")              -> src MIGRATION setup, active, MIGRATION_PASS n
//!                                             -> src STOP           (pause begins)
//!      (pause-before-switchover only: src MIGRATION pre-switchover; migrate_continue)
//!                                             -> src MIGRATION completed
//!                                             -> dst RESUME         (pause ends)
//!                                             -> dst MIGRATION completed
//! src: wait_migration(...)                    (query-migrate until settled)
//! src: quit()                                 (the source waits in 'postmigrate' until told)
//! ```

use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::client::Client;
use crate::error::QmpError;
use crate::types::{
    MigrationCapability, MigrationInfo, MigrationParameters, MigrationStatus, StatusInfo,
    VirtQueueStatus, VirtioInfo,
};

impl Client {
    /// `query-status`: the VM's run state.
    pub async fn query_status(&self) -> Result<StatusInfo, QmpError> {
        self.execute_as::<Value, _>("query-status", None).await
    }

    /// `stop`: pause the vCPUs.
    pub async fn stop(&self) -> Result<(), QmpError> {
        self.execute("stop", None).await.map(drop)
    }

    /// `cont`: resume the vCPUs.
    pub async fn cont(&self) -> Result<(), QmpError> {
        self.execute("cont", None).await.map(drop)
    }

    /// `migrate-set-capabilities`.
    pub async fn migrate_set_capabilities(
        &self,
        capabilities: &[(MigrationCapability, bool)],
    ) -> Result<(), QmpError> {
        let list: Vec<Value> = capabilities
            .iter()
            .map(|(cap, state)| json!({"capability": cap.as_str(), "state": state}))
            .collect();
        self.execute(
            "migrate-set-capabilities",
            Some(json!({ "capabilities": list })),
        )
        .await
        .map(drop)
    }

    /// `query-migrate-capabilities`: every capability and whether it is on.
    pub async fn query_migrate_capabilities(
        &self,
    ) -> Result<Vec<(MigrationCapability, bool)>, QmpError> {
        #[derive(serde::Deserialize)]
        struct Cap {
            capability: MigrationCapability,
            state: bool,
        }
        let caps: Vec<Cap> = self
            .execute_as::<Value, _>("query-migrate-capabilities", None)
            .await?;
        Ok(caps.into_iter().map(|c| (c.capability, c.state)).collect())
    }

    /// `x-query-virtio` (unstable in QEMU 7.2): the virtio devices and their QOM paths.
    pub async fn x_query_virtio(&self) -> Result<Vec<VirtioInfo>, QmpError> {
        self.execute_as::<Value, _>("x-query-virtio", None).await
    }

    /// `x-query-virtio-queue-status` (unstable in QEMU 7.2) of queue `queue` of the device at
    /// `path`.
    pub async fn x_query_virtio_queue_status(
        &self,
        path: &str,
        queue: u16,
    ) -> Result<VirtQueueStatus, QmpError> {
        self.execute_as(
            "x-query-virtio-queue-status",
            Some(&json!({ "path": path, "queue": queue })),
        )
        .await
    }

    /// `migrate-set-parameters` (only the `Some` members are sent).
    pub async fn migrate_set_parameters(
        &self,
        parameters: &MigrationParameters,
    ) -> Result<(), QmpError> {
        self.execute_as::<_, Value>("migrate-set-parameters", Some(parameters))
            .await
            .map(drop)
    }

    /// `migrate-incoming`: on a QEMU started with `-incoming defer`, start listening.
    pub async fn migrate_incoming(&self, uri: &str) -> Result<(), QmpError> {
        self.execute("migrate-incoming", Some(json!({ "uri": uri })))
            .await
            .map(drop)
    }

    /// `migrate`: start migrating to `uri`; returns at once (progress via
    /// [`query_migrate`](Client::query_migrate) and events).
    pub async fn migrate(&self, uri: &str) -> Result<(), QmpError> {
        self.execute("migrate", Some(json!({ "uri": uri })))
            .await
            .map(drop)
    }

    /// `query-migrate`.
    pub async fn query_migrate(&self) -> Result<MigrationInfo, QmpError> {
        self.execute_as::<Value, _>("query-migrate", None).await
    }

    /// `migrate_cancel` (QEMU spells this one with an underscore).
    pub async fn migrate_cancel(&self) -> Result<(), QmpError> {
        self.execute("migrate_cancel", None).await.map(drop)
    }

    /// `migrate-continue`: leave the pause state `state` (`pre-switchover` with the
    /// `pause-before-switchover` capability).
    pub async fn migrate_continue(&self, state: &MigrationStatus) -> Result<(), QmpError> {
        self.execute("migrate-continue", Some(json!({ "state": state.as_str() })))
            .await
            .map(drop)
    }

    /// `quit`: QEMU exits. QEMU answers and closes the socket, and may close it before the
    /// answer is read: both count as success.
    pub async fn quit(&self) -> Result<(), QmpError> {
        match self.execute("quit", None).await {
            Ok(_) | Err(QmpError::Closed) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Polls `query-migrate` every `poll` until the migration settles (completed with its
    /// figures filled in, failed, or cancelled) and returns that last answer; the caller
    /// checks its status. Also fails if no migration is running at all.
    pub async fn wait_migration(
        &self,
        poll: Duration,
        within: Duration,
    ) -> Result<MigrationInfo, QmpError> {
        let deadline = Instant::now() + within;
        loop {
            let info = self.query_migrate().await?;
            if info.is_settled() {
                return Ok(info);
            }
            if matches!(info.status, None | Some(MigrationStatus::None)) {
                return Err(QmpError::protocol("query-migrate: no migration is running"));
            }
            if Instant::now() + poll > deadline {
                return Err(QmpError::timeout(
                    format!(
                        "migration (last status {})",
                        info.status.as_ref().map_or("none", MigrationStatus::as_str)
                    ),
                    within,
                ));
            }
            tokio::time::sleep(poll).await;
        }
    }
}

#[cfg(test)]
mod tests {
    //! Transcript tests: the sequences of `shared/reference/qemu-probe/README.md`, played by a
    //! scripted QEMU over an in-memory duplex stream.
    use super::*;
    use crate::client::ClientConfig;
    use crate::event::{EventKind, Timestamp};
    use crate::testutil::FakeQemu;
    use crate::types::RunState;

    async fn connected(config: ClientConfig) -> (Client, FakeQemu) {
        let (stream, mut qemu) = FakeQemu::pair();
        let server = tokio::spawn(async move {
            qemu.negotiate().await;
            qemu
        });
        let client = Client::handshake(stream, config).await.expect("handshake");
        (client, server.await.expect("server"))
    }

    #[tokio::test]
    async fn destination_setup_sequence() {
        let (client, mut qemu) = connected(ClientConfig::default()).await;
        let mut events = client.subscribe();
        let server = tokio::spawn(async move {
            let (id, msg) = qemu.expect("migrate-set-capabilities").await;
            assert_eq!(
                msg["arguments"],
                json!({"capabilities": [{"capability": "events", "state": true}]})
            );
            qemu.reply(&id, json!({})).await;
            let (id, msg) = qemu.expect("migrate-incoming").await;
            assert_eq!(msg["arguments"], json!({"uri": "tcp:[::1]:4441"}));
            // QEMU emits the event while handling the command, before the reply.
            qemu.event(
                "MIGRATION",
                Some(json!({"status": "setup"})),
                1_763_900_000,
                10,
            )
            .await;
            qemu.reply(&id, json!({})).await;
            let (id, _) = qemu.expect("query-status").await;
            qemu.reply(
                &id,
                json!({"status": "inmigrate", "singlestep": false, "running": false}),
            )
            .await;
            qemu
        });
        client
            .migrate_set_capabilities(&[(MigrationCapability::Events, true)])
            .await
            .expect("caps");
        client
            .migrate_incoming("tcp:[::1]:4441")
            .await
            .expect("incoming");
        let status = client.query_status().await.expect("status");
        assert_eq!(status.status, RunState::Inmigrate);
        assert!(!status.running);
        let ev = events.next().await.expect("event");
        assert_eq!(
            ev.kind,
            EventKind::Migration {
                status: MigrationStatus::Setup
            }
        );
        assert_eq!(
            ev.timestamp,
            Timestamp {
                seconds: 1_763_900_000,
                microseconds: 10
            }
        );
        server.await.expect("server");
    }

    #[tokio::test]
    async fn source_migration_with_interleaved_events() {
        let (client, mut qemu) = connected(ClientConfig::default()).await;
        let mut events = client.subscribe();
        let server = tokio::spawn(async move {
            let (id, msg) = qemu.expect("migrate-set-parameters").await;
            assert_eq!(
                msg["arguments"],
                json!({"max-bandwidth": 10_000_000_000u64, "downtime-limit": 30})
            );
            qemu.reply(&id, json!({})).await;
            let (id, _) = qemu.expect("migrate").await;
            qemu.event("MIGRATION", Some(json!({"status": "setup"})), 100, 0)
                .await;
            qemu.reply(&id, json!({})).await;
            qemu.event("MIGRATION", Some(json!({"status": "active"})), 100, 1_000)
                .await;
            qemu.event("MIGRATION_PASS", Some(json!({"pass": 1})), 100, 1_100)
                .await;
            // The first poll lands mid-migration; events arrive between command and reply.
            let (id, _) = qemu.expect("query-migrate").await;
            qemu.event("MIGRATION_PASS", Some(json!({"pass": 2})), 100, 400_000)
                .await;
            qemu.reply(&id, json!({"status": "active", "total-time": 300, "expected-downtime": 300, "setup-time": 1, "ram": {"transferred": 40000000, "remaining": 30000000, "total": 134750208}}))
                .await;
            qemu.event("STOP", None, 100, 500_000).await;
            qemu.event(
                "MIGRATION",
                Some(json!({"status": "completed"})),
                100,
                506_100,
            )
            .await;
            // QEMU 7.2: status first, figures a moment later.
            let (id, _) = qemu.expect("query-migrate").await;
            qemu.reply(
                &id,
                json!({"status": "completed", "total-time": 0, "downtime": 0}),
            )
            .await;
            let (id, _) = qemu.expect("query-migrate").await;
            qemu.reply(&id, json!({"status": "completed", "total-time": 506, "downtime": 6, "setup-time": 1, "ram": {"transferred": 72170316, "remaining": 0, "total": 134750208}}))
                .await;
            let (id, _) = qemu.expect("quit").await;
            qemu.reply(&id, json!({})).await;
            qemu.event(
                "SHUTDOWN",
                Some(json!({"guest": false, "reason": "host-qmp-quit"})),
                101,
                0,
            )
            .await;
            qemu.close().await;
        });
        client
            .migrate_set_parameters(&MigrationParameters {
                max_bandwidth: Some(10_000_000_000),
                downtime_limit: Some(30),
                ..MigrationParameters::default()
            })
            .await
            .expect("params");
        client.migrate("tcp:[::1]:4441").await.expect("migrate");
        let info = client
            .wait_migration(Duration::from_millis(1), Duration::from_secs(5))
            .await
            .expect("settled");
        assert_eq!(info.status, Some(MigrationStatus::Completed));
        assert_eq!(info.total_time, Some(506));
        assert_eq!(info.downtime, Some(6));
        assert_eq!(info.ram.as_ref().map(|r| r.transferred), Some(72_170_316));
        client.quit().await.expect("quit");
        server.await.expect("server");

        let mut seen = Vec::new();
        while let Some(ev) = events.next().await {
            seen.push((ev.kind, ev.timestamp.as_micros()));
        }
        let mig = |status| EventKind::Migration { status };
        assert_eq!(
            seen,
            vec![
                (mig(MigrationStatus::Setup), 100_000_000),
                (mig(MigrationStatus::Active), 100_001_000),
                (EventKind::MigrationPass { pass: 1 }, 100_001_100),
                (EventKind::MigrationPass { pass: 2 }, 100_400_000),
                (EventKind::Stop, 100_500_000),
                (mig(MigrationStatus::Completed), 100_506_100),
                (
                    EventKind::Shutdown {
                        guest: false,
                        reason: "host-qmp-quit".into()
                    },
                    101_000_000
                ),
            ]
        );
        assert_eq!(events.lagged(), 0);
        assert!(client.is_closed());
    }

    #[tokio::test]
    async fn error_reply_becomes_command_error() {
        let (client, mut qemu) = connected(ClientConfig::default()).await;
        let server = tokio::spawn(async move {
            let (id, _) = qemu.expect("migrate").await;
            qemu.error(
                &id,
                "GenericError",
                "There's a migration process in progress",
            )
            .await;
            let (id, _) = qemu.expect("query-status").await;
            qemu.reply(
                &id,
                json!({"status": "running", "singlestep": false, "running": true}),
            )
            .await;
        });
        let err = client.migrate("tcp:[::1]:1").await.expect_err("error");
        match &err {
            QmpError::Command {
                command,
                class,
                desc,
            } => {
                assert_eq!(command, "migrate");
                assert_eq!(class, "GenericError");
                assert_eq!(desc, "There's a migration process in progress");
            }
            other => panic!("unexpected {other:?}"),
        }
        // The connection stays usable after an error reply.
        assert!(client.query_status().await.expect("status").running);
        server.await.expect("server");
    }

    #[tokio::test]
    async fn eof_mid_command_fails_it_and_every_later_one() {
        let (client, mut qemu) = connected(ClientConfig::default()).await;
        let mut events = client.subscribe();
        let server = tokio::spawn(async move {
            let (_id, _) = qemu.expect("query-migrate").await;
            qemu.event("STOP", None, 5, 0).await;
            // QEMU dies: no reply, and half a message on the wire.
            qemu.send_raw(br#"{"return": {"status": "act"#).await;
            qemu.close().await;
        });
        let err = client.query_migrate().await.expect_err("closed");
        assert!(matches!(err, QmpError::Closed), "{err:?}");
        server.await.expect("server");
        assert!(client.is_closed());
        let err = client.query_status().await.expect_err("closed");
        assert!(matches!(err, QmpError::Closed), "{err:?}");
        // The event sent before the end is still delivered, then the stream ends.
        assert_eq!(events.next().await.map(|e| e.kind), Some(EventKind::Stop));
        assert!(events.next().await.is_none());
        // quit on a dead connection is not an error: QEMU is gone either way.
        client.quit().await.expect("quit after close");
    }

    #[tokio::test]
    async fn invalid_json_ends_the_connection_with_a_protocol_error() {
        let (client, mut qemu) = connected(ClientConfig::default()).await;
        let server = tokio::spawn(async move {
            let (_id, _) = qemu.expect("query-status").await;
            qemu.send_raw(b"this is not json\r\n").await;
            qemu
        });
        let err = client.query_status().await.expect_err("protocol");
        assert!(matches!(err, QmpError::Protocol(_)), "{err:?}");
        let err = client.stop().await.expect_err("still broken");
        assert!(matches!(err, QmpError::Protocol(_)), "{err:?}");
        drop(server.await.expect("server"));
    }

    #[tokio::test]
    async fn concurrent_commands_are_matched_by_id() {
        let (client, mut qemu) = connected(ClientConfig::default()).await;
        let server = tokio::spawn(async move {
            let (id_a, a) = qemu.expect("query-status").await;
            let (id_b, b) = qemu.expect("query-migrate").await;
            assert_ne!(id_a, id_b);
            assert_eq!(a["execute"], "query-status");
            assert_eq!(b["execute"], "query-migrate");
            // Answer in the opposite order, with an unrelated reply in between.
            qemu.reply(&id_b, json!({"status": "active"})).await;
            qemu.reply(&json!(999_999), json!({})).await;
            qemu.reply(
                &id_a,
                json!({"status": "paused", "singlestep": false, "running": false}),
            )
            .await;
        });
        let status = client.query_status();
        let migrate = async {
            // Let query-status go first so the expected order above holds.
            tokio::task::yield_now().await;
            client.query_migrate().await
        };
        let (status, migrate) = tokio::join!(status, migrate);
        assert_eq!(status.expect("status").status, RunState::Paused);
        assert_eq!(
            migrate.expect("migrate").status,
            Some(MigrationStatus::Active)
        );
        server.await.expect("server");
    }

    #[tokio::test]
    async fn reply_without_id_goes_to_the_only_waiting_command() {
        let (client, mut qemu) = connected(ClientConfig::default()).await;
        let server = tokio::spawn(async move {
            let (_id, _) = qemu.expect("stop").await;
            qemu.send_raw(br#"{"error": {"class": "GenericError", "desc": "JSON parse error, expecting value"}}"#)
                .await;
            qemu.send_raw(b"\r\n").await;
        });
        let err = client.stop().await.expect_err("error");
        assert!(
            matches!(&err, QmpError::Command { command, .. } if command == "stop"),
            "{err:?}"
        );
        server.await.expect("server");
    }

    #[tokio::test]
    async fn timeout_then_late_reply_is_ignored() {
        let config = ClientConfig {
            command_timeout: Duration::from_millis(50),
            ..ClientConfig::default()
        };
        let (client, mut qemu) = connected(config).await;
        let (result, (id, _)) = tokio::join!(client.query_status(), qemu.expect("query-status"));
        let err = result.expect_err("timeout");
        assert!(matches!(err, QmpError::Timeout { .. }), "{err:?}");
        // The command's answer arrives too late: dropped, and the next command still works.
        let server = tokio::spawn(async move {
            qemu.reply(
                &id,
                json!({"status": "running", "singlestep": false, "running": true}),
            )
            .await;
            let (id, _) = qemu.expect("cont").await;
            qemu.reply(&id, json!({})).await;
            qemu
        });
        client.cont().await.expect("cont");
        drop(server.await.expect("server"));
    }

    #[tokio::test]
    async fn waits_for_events_and_handles_pre_switchover() {
        let (client, mut qemu) = connected(ClientConfig::default()).await;
        let mut events = client.subscribe();
        let server = tokio::spawn(async move {
            let (id, msg) = qemu.expect("migrate-set-capabilities").await;
            assert_eq!(
                msg["arguments"]["capabilities"][1],
                json!({"capability": "pause-before-switchover", "state": true})
            );
            qemu.reply(&id, json!({})).await;
            qemu.event("STOP", None, 7, 0).await;
            qemu.event(
                "MIGRATION",
                Some(json!({"status": "pre-switchover"})),
                7,
                900,
            )
            .await;
            let (id, msg) = qemu.expect("migrate-continue").await;
            assert_eq!(msg["arguments"], json!({"state": "pre-switchover"}));
            qemu.reply(&id, json!({})).await;
            let (id, _) = qemu.expect("migrate_cancel").await;
            qemu.reply(&id, json!({})).await;
            qemu
        });
        client
            .migrate_set_capabilities(&[
                (MigrationCapability::Events, true),
                (MigrationCapability::PauseBeforeSwitchover, true),
            ])
            .await
            .expect("caps");
        let ev = events
            .wait_for(Duration::from_secs(5), "pre-switchover", |e| {
                e.kind
                    == EventKind::Migration {
                        status: MigrationStatus::PreSwitchover,
                    }
            })
            .await
            .expect("pre-switchover");
        assert_eq!(ev.timestamp.as_micros(), 7_000_900);
        client
            .migrate_continue(&MigrationStatus::PreSwitchover)
            .await
            .expect("continue");
        client.migrate_cancel().await.expect("cancel");
        let err = events
            .wait_for(Duration::from_millis(30), "never", |_| true)
            .await
            .expect_err("no more events");
        assert!(matches!(err, QmpError::Timeout { .. }), "{err:?}");
        drop(server.await.expect("server"));
    }

    #[tokio::test]
    async fn wait_migration_reports_failure_and_absence() {
        let (client, mut qemu) = connected(ClientConfig::default()).await;
        let server = tokio::spawn(async move {
            let (id, _) = qemu.expect("query-migrate").await;
            qemu.reply(&id, json!({})).await;
            let (id, _) = qemu.expect("query-migrate").await;
            qemu.reply(
                &id,
                json!({"status": "failed", "error-desc": "Connection refused"}),
            )
            .await;
            qemu
        });
        let err = client
            .wait_migration(Duration::from_millis(1), Duration::from_secs(1))
            .await
            .expect_err("nothing running");
        assert!(matches!(err, QmpError::Protocol(_)), "{err:?}");
        let info = client
            .wait_migration(Duration::from_millis(1), Duration::from_secs(1))
            .await
            .expect("settled");
        assert_eq!(info.status, Some(MigrationStatus::Failed));
        assert_eq!(info.error_desc.as_deref(), Some("Connection refused"));
        drop(server.await.expect("server"));
    }

    const RECORDED_SRC: &str = include_str!("testdata/migration-7.2-src.txt");
    const RECORDED_DST: &str = include_str!("testdata/migration-7.2-dst.txt");

    /// The source side of a real migration, recorded from QEMU 7.2 on this machine.
    #[tokio::test]
    async fn replays_recorded_source_side() {
        let (stream, qemu) = FakeQemu::pair();
        let server = tokio::spawn(qemu.replay(RECORDED_SRC));
        let client = Client::handshake(stream, ClientConfig::default())
            .await
            .expect("handshake");
        let mut events = client.subscribe();
        client
            .migrate_set_capabilities(&[(MigrationCapability::Events, true)])
            .await
            .expect("caps");
        // Before any migration QEMU answers an empty object.
        assert_eq!(
            client.query_migrate().await.expect("idle"),
            MigrationInfo::default()
        );
        client.migrate("tcp:[::1]:4555").await.expect("migrate");
        let info = client
            .wait_migration(Duration::from_millis(1), Duration::from_secs(5))
            .await
            .expect("settled");
        assert_eq!(info.status, Some(MigrationStatus::Completed));
        assert_eq!(
            (info.total_time, info.downtime, info.setup_time),
            (Some(333), Some(21), Some(1))
        );
        let ram = info.ram.expect("ram stats");
        assert_eq!(
            (ram.transferred, ram.remaining, ram.total),
            (61_893_294, 0, 134_750_208)
        );
        assert_eq!(ram.downtime_bytes, 18_718_351);
        // A real error reply.
        let err = client.execute("migrate", None).await.expect_err("no uri");
        assert!(
            matches!(&err, QmpError::Command { class, desc, .. } if class == "GenericError" && desc == "Parameter 'uri' is missing"),
            "{err:?}"
        );
        assert_eq!(
            client.query_status().await.expect("status").status,
            RunState::Postmigrate
        );
        client.quit().await.expect("quit");
        server.await.expect("replay");

        let mut seen = Vec::new();
        while let Some(ev) = events.next().await {
            seen.push((ev.name.clone(), ev.kind, ev.timestamp.microseconds));
        }
        let mig = |status| EventKind::Migration { status };
        assert_eq!(
            seen,
            vec![
                ("MIGRATION".into(), mig(MigrationStatus::Setup), 18_188),
                (
                    "MIGRATION_PASS".into(),
                    EventKind::MigrationPass { pass: 1 },
                    19_740
                ),
                ("MIGRATION".into(), mig(MigrationStatus::Active), 20_040),
                (
                    "MIGRATION_PASS".into(),
                    EventKind::MigrationPass { pass: 2 },
                    330_068
                ),
                ("STOP".into(), EventKind::Stop, 330_150),
                (
                    "MIGRATION_PASS".into(),
                    EventKind::MigrationPass { pass: 3 },
                    330_245
                ),
                ("MIGRATION".into(), mig(MigrationStatus::Completed), 351_043),
                (
                    "SHUTDOWN".into(),
                    EventKind::Shutdown {
                        guest: false,
                        reason: "host-qmp-quit".into()
                    },
                    407_628
                ),
            ]
        );
    }

    /// The destination side of the same migration; with the source's STOP it gives the pause.
    #[tokio::test]
    async fn replays_recorded_destination_side() {
        let (stream, qemu) = FakeQemu::pair();
        let server = tokio::spawn(qemu.replay(RECORDED_DST));
        let client = Client::handshake(stream, ClientConfig::default())
            .await
            .expect("handshake");
        let mut events = client.subscribe();
        client
            .migrate_set_capabilities(&[(MigrationCapability::Events, true)])
            .await
            .expect("caps");
        client
            .migrate_incoming("tcp:[::1]:4555")
            .await
            .expect("incoming");
        assert_eq!(
            client.query_status().await.expect("status").status,
            RunState::Inmigrate
        );
        let status = client.query_status().await.expect("status");
        assert!(
            status.running && status.status == RunState::Running,
            "{status:?}"
        );
        let resume = events
            .wait_for(Duration::from_secs(5), "RESUME", |e| {
                e.kind == EventKind::Resume
            })
            .await
            .expect("resume");
        client.quit().await.expect("quit");
        server.await.expect("replay");
        // Source STOP at .330150 (recorded on the source side): a 22.662 ms pause.
        let stop = crate::event::Timestamp {
            seconds: 1_795_548_461,
            microseconds: 330_150,
        };
        assert!((resume.timestamp.millis_since(&stop) - 22.662).abs() < 1e-9);
        let rest: Vec<EventKind> =
            std::iter::from_fn(|| events.try_next().map(|e| e.kind)).collect();
        assert_eq!(
            rest,
            vec![
                EventKind::Migration {
                    status: MigrationStatus::Completed
                },
                EventKind::Shutdown {
                    guest: false,
                    reason: "host-qmp-quit".into()
                },
            ]
        );
    }
}
