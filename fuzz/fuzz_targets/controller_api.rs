//! The controller's request bodies, parsed as its handlers parse them
//! (`crates/controller/src/api.rs`, `serde_json::from_slice`), fed to the real sans-IO
//! [`Controller`] as a sequence of operations, together with what srmigd and the hypervisor
//! driver send it (acks, VM state reports, host status polls, hypervisor reports), the passage
//! of time and controller restarts (snapshot, JSON as the store writes it, restore).
//! Invariants checked on every action polled:
//!
//! - nothing panics;
//! - every config pushed validates (`HostConfig::validate`) and goes to a registered host;
//! - per host, the (`epoch`, `generation`) versions pushed strictly increase, across restarts;
//! - a controller that finds a host ahead moves to an epoch above the host's;
//! - `StartMigration` is for a migration waiting for its hypervisor, `MigrationFinished` for
//!   one that is no longer in progress;
//!
//! and after every operation: every VM maps to a registered host, the migration of each VM is
//! about that VM, statuses serialize, and the snapshot survives its JSON (what the store keeps).
//!
//! Input: operations separated by NUL bytes (JSON never contains one). The first byte of an
//! operation selects it (`(byte - b'0') % 16`: the seeds use `0`..`9` and `:` `;` `<` `=` `>` `?`),
//! the rest is its body:
//!
//! | kind | operation | rest of the record |
//! |---|---|---|
//! | 0 | `POST /v1/hosts` | `HostRegistration` JSON |
//! | 1 | `POST /v1/vms` | `VmInfo` JSON |
//! | 2 | `POST /v1/migrations` | `MigrateRequest` JSON |
//! | 3 | `POST /v1/vm-state` | `VmStateReport` JSON |
//! | 4 | a push's reply | `Ack` JSON |
//! | 5 | `POST /v1/migrations/{id}/hypervisor` | `{id}`, a space, `HypervisorPost` JSON |
//! | 6 | the hypervisor driver's report | `HypervisorReport` JSON |
//! | 7 | `POST /v1/migrations/{id}/cancel` | `{id}` |
//! | 8 | time passes, then `handle_timeout` | `ms` in decimal (empty: to `poll_timeout`) |
//! | 9 | host `i` acks its `k`-th latest push | `i k boot_epoch` in decimal |
//! | 10 | host `i`'s status is polled | `i boot_epoch [epoch generation]` (default: latest push) |
//! | 11 | the controller restarts from its snapshot | (nothing) |
//! | 12 | `DELETE /v1/hosts/{name}` | `{name}` |
//! | 13 | `DELETE /v1/vms/{name}` | `{name}` |
//! | 14 | `POST /v1/fence` | `FenceReport` JSON |
//! | 15 | `POST /v1/release` | `ReleaseReport` JSON |
//!
//! Kinds 9 and 10 answer with the versions the controller actually pushed, so migrations get
//! past their acknowledgement waits without the fuzzer guessing generations.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use srmig_api::{
    Ack, FenceReport, HostConfig, HostId, HypervisorReport, MigrateRequest, MigrationId,
    ReleaseReport, Timestamp, VmId, VmInfo, VmStateReport,
};
use srmig_control::{
    Action, Controller, ControllerConfig, ControllerSnapshot, HostObservation, Migration, Timeouts,
};
use srmig_controller::{HostRegistration, HypervisorPost};

const EPOCH: u64 = 1_700_000_000_000;
const CONFIG: ControllerConfig = ControllerConfig {
    timeouts: Timeouts {
        ack_ms: 100,
        hypervisor_ms: 1_000,
        cancel_grace_ms: 50,
        drain_ms: 20,
        fence_wait_ms: 200,
        unreachable_ms: 400,
    },
    finished_history: 4,
};
/// Pushes remembered per host for kind 9.
const KEEP: usize = 8;

/// As the handlers parse a body.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Option<T> {
    serde_json::from_slice(body).ok()
}

/// Decimal numbers separated by whitespace; `None` where missing or malformed.
fn numbers<const N: usize>(body: &[u8]) -> [Option<u64>; N] {
    let mut out = [None; N];
    let text = String::from_utf8_lossy(body);
    for (slot, word) in out.iter_mut().zip(text.split_ascii_whitespace()) {
        *slot = word.trim().parse().ok();
    }
    out
}

/// A migration id as in a path (`3` or `m3`), as the API's `parse_id` reads it.
fn migration_id(text: &[u8]) -> Option<MigrationId> {
    let text = std::str::from_utf8(text.trim_ascii()).ok()?;
    text.strip_prefix('m')
        .unwrap_or(text)
        .parse()
        .ok()
        .map(MigrationId)
}

/// A name from a path segment.
fn name(text: &[u8]) -> Option<&str> {
    std::str::from_utf8(text.trim_ascii()).ok()
}

struct World {
    c: Controller,
    now: Timestamp,
    /// Every version pushed to each host, ever (survives restarts).
    last_version: BTreeMap<HostId, (u64, u64)>,
    /// The latest configs pushed to each host, newest last.
    pushes: BTreeMap<HostId, Vec<HostConfig>>,
}

impl World {
    fn host(&self, i: Option<u64>) -> Option<HostId> {
        let hosts: Vec<&HostId> = self.c.model().hosts().map(|h| &h.name).collect();
        let i = usize::try_from(i.unwrap_or(0)).unwrap_or(0);
        hosts.get(i % hosts.len().max(1)).map(|h| (*h).clone())
    }

    /// Checks a config the controller pushed (whole, or a delta applied to the previous push)
    /// and keeps it for acknowledgements.
    fn record(&mut self, host: HostId, config: HostConfig) {
        assert!(
            self.c.model().host(&host).is_some(),
            "push to unregistered {host}"
        );
        if let Err(e) = config.validate() {
            panic!("pushed an invalid config to {host}: {e}\n{config:?}");
        }
        assert!(config.epoch <= self.c.epoch(), "pushed a future epoch");
        let v = config.version();
        if let Some(old) = self.last_version.insert(host.clone(), v) {
            assert!(v > old, "{host}: pushed version {v:?} after {old:?}");
        }
        let list = self.pushes.entry(host).or_default();
        list.push(config);
        if list.len() > KEEP {
            list.remove(0);
        }
    }

    fn drain(&mut self) {
        while let Some(action) = self.c.poll_action() {
            match action {
                Action::PushConfig { host, config } => self.record(host, config),
                Action::PushDelta { host, delta } => {
                    let Some(mut config) = self.pushes.get(&host).and_then(|l| l.last()).cloned()
                    else {
                        panic!(
                            "{host}: a delta {:?} with no config pushed before",
                            delta.version()
                        );
                    };
                    if let Err(e) = config.apply_delta(&delta) {
                        panic!(
                            "{host}: the delta does not apply to the previous push: {e}\n{delta:?}"
                        );
                    }
                    self.record(host, config);
                }
                Action::EpochAdvanced {
                    host,
                    theirs,
                    epoch,
                } => {
                    assert_eq!(epoch, self.c.epoch());
                    // At epoch u64::MAX there is no epoch above: a host holding a version
                    // of that epoch (pushed by hand) cannot be overtaken. A known limit,
                    // left out so that the fuzzer looks for other failures.
                    assert!(
                        epoch > theirs.0 || theirs.0 == u64::MAX,
                        "{host} holds {theirs:?}: the controller moved to epoch {epoch}, not above"
                    );
                }
                Action::StartMigration {
                    id, vm, from, to, ..
                } => {
                    assert_ne!(from, to);
                    match self.c.migration(id) {
                        Some(Migration::ExpectHypervisorDone(s)) => assert_eq!(s.core.vm, vm),
                        other => panic!("StartMigration {id} in state {other:?}"),
                    }
                }
                Action::CancelMigration { id, vm, .. } => {
                    if let Some(m) = self.c.migration(id) {
                        assert_eq!(m.core().vm, vm);
                    }
                }
                Action::MigrationFinished { id, vm, .. } => {
                    assert_ne!(
                        self.c.migration_of(&vm),
                        Some(id),
                        "{id} finished, still active"
                    );
                }
            }
        }
    }

    fn check(&self) {
        for vm in self.c.model().vms() {
            assert!(
                self.c.model().host(&vm.host).is_some(),
                "{} maps nowhere",
                vm.name
            );
            if let Some(id) = self.c.migration_of(&vm.name) {
                let m = self.c.migration(id).expect("an active migration is known");
                assert_eq!(m.core().vm, vm.name);
            }
        }
        serde_json::to_vec(&self.c.statuses()).expect("statuses serialize");
    }

    fn restart(&mut self) {
        let snapshot = self.c.snapshot();
        let json = serde_json::to_vec(&snapshot).expect("the snapshot serializes");
        let back: ControllerSnapshot =
            serde_json::from_slice(&json).expect("the snapshot parses back");
        // What the store keeps round-trips (fields not persisted, such as the commit-fence
        // markers seen so far, are absent from both sides).
        let again = serde_json::to_vec(&back).expect("the snapshot serializes again");
        assert_eq!(again, json, "the snapshot survives its JSON");
        self.c = Controller::restore(self.now, CONFIG, back);
    }

    fn op(&mut self, kind: u8, body: &[u8]) {
        let now = self.now;
        match kind.wrapping_sub(b'0') % 16 {
            0 => {
                // The daemon also checks that it can make a client for the host's API.
                if let Some(reg) = parse::<HostRegistration>(body) {
                    let _ = self.c.add_host(reg.info);
                }
            }
            1 => {
                if let Some(vm) = parse::<VmInfo>(body) {
                    let _ = self.c.add_vm(vm);
                }
            }
            2 => {
                if let Some(req) = parse::<MigrateRequest>(body) {
                    let vm = req.vm.clone();
                    if let Ok(id) = self.c.request_migration(now, req) {
                        assert_eq!(self.c.migration_of(&vm), Some(id));
                    }
                }
            }
            3 => {
                if let Some(report) = parse::<VmStateReport>(body) {
                    let _ = self.c.handle_vm_state(now, report);
                }
            }
            4 => {
                if let Some(ack) = parse::<Ack>(body) {
                    let _ = self.c.handle_ack(now, ack);
                }
            }
            5 => {
                let body = body.trim_ascii_start();
                let split = body.iter().position(|b| *b == b' ').unwrap_or(body.len());
                let (id, json) = body.split_at(split);
                let (Some(id), Some(post)) = (
                    migration_id(id),
                    parse::<HypervisorPost>(json.get(1..).unwrap_or_default()),
                ) else {
                    return;
                };
                // The API passes the event on only to a migration waiting for its hypervisor.
                if let Some(Migration::ExpectHypervisorDone(s)) = self.c.migration(id) {
                    let report = HypervisorReport {
                        vm: s.core.vm.clone(),
                        migration: id,
                        event: post.to_event(),
                    };
                    self.c
                        .handle_hypervisor(now, report)
                        .expect("the VM of a migration is registered");
                }
            }
            6 => {
                if let Some(report) = parse::<HypervisorReport>(body) {
                    let _ = self.c.handle_hypervisor(now, report);
                }
            }
            7 => {
                if let Some(id) = migration_id(body) {
                    let _ = self.c.cancel_migration(now, id);
                }
            }
            8 => {
                let [ms] = numbers(body);
                self.now = match ms {
                    Some(ms) => now.plus_ms(ms),
                    None => self.c.poll_timeout().unwrap_or(now).max(now),
                };
                self.c.handle_timeout(self.now);
            }
            9 => {
                let [i, k, boot] = numbers(body);
                let Some(host) = self.host(i) else {
                    return;
                };
                let Some(list) = self.pushes.get(&host) else {
                    return;
                };
                let k = usize::try_from(k.unwrap_or(0)).unwrap_or(0) % list.len();
                let config = &list[list.len() - 1 - k];
                let ack = Ack {
                    host,
                    epoch: config.epoch,
                    generation: config.generation,
                    boot_epoch: boot.unwrap_or(0),
                };
                self.c
                    .handle_ack(now, ack)
                    .expect("an ack of a registered host is taken");
            }
            10 => {
                let [i, boot, epoch, generation] = numbers(body);
                let Some(host) = self.host(i) else {
                    return;
                };
                let in_force = match (epoch, generation) {
                    (Some(e), Some(g)) => Some((e, g)),
                    _ => self
                        .pushes
                        .get(&host)
                        .and_then(|l| l.last())
                        .map(HostConfig::version),
                };
                let seen = HostObservation {
                    boot_epoch: boot.unwrap_or(0),
                    in_force,
                };
                self.c
                    .handle_host_status(now, &host, seen)
                    .expect("a registered host's status is taken");
            }
            11 => self.restart(),
            14 => {
                if let Some(report) = parse::<FenceReport>(body) {
                    let _ = self.c.handle_fence_report(now, report);
                }
            }
            15 => {
                if let Some(report) = parse::<ReleaseReport>(body) {
                    let _ = self.c.handle_release_report(now, report);
                }
            }
            12 => {
                if let Some(host) = name(body).and_then(|n| HostId::new(n).ok()) {
                    if self.c.remove_host(now, &host).is_ok() {
                        assert!(self.c.model().host(&host).is_none());
                        assert!(self.c.model().vms().all(|v| v.host != host));
                    }
                }
            }
            _ => {
                if let Some(vm) = name(body).and_then(|n| VmId::new(n).ok()) {
                    if self.c.remove_vm(&vm).is_ok() {
                        assert!(self.c.model().vm(&vm).is_none());
                    }
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut w = World {
        c: Controller::with_epoch(CONFIG, EPOCH),
        now: Timestamp(EPOCH),
        last_version: BTreeMap::new(),
        pushes: BTreeMap::new(),
    };
    for record in data.split(|b| *b == 0) {
        let Some((&kind, body)) = record.split_first() else {
            continue;
        };
        w.now = w.now.plus_ms(1);
        w.op(kind, body);
        w.drain();
        w.check();
    }
});
