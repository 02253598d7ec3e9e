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
//! about that VM, no two migrations (in progress or finished) share an id, statuses
//! serialize, and the snapshot survives its JSON.
//!
//! The state is saved after every operation as the daemon saves it at every commit: the real
//! [`Store`] (only the rows that changed, `Controller::take_unsaved`) over a backend that keeps
//! the rows in memory. A restart (kind 11) reopens that store: what it loads must be the
//! snapshot the controller had, and the controller is restored from it. Kind 16 edits a row
//! first, as a damaged store, an older release or an operator's hand would: the store must then
//! either refuse to open with an error naming the problem (the daemon does not start; the rows
//! are put back), or load something the restored controller runs on under every check above
//! (after an edit of the `meta` table the versions a host is pushed may go back: its srmigd
//! refuses those, and the check of increasing versions starts again).
//!
//! Input: operations separated by NUL bytes (JSON never contains one). The first byte of an
//! operation selects it (`(byte - b'0') % 17`: the seeds use `0`..`9` and `:` `;` `<` `=` `>`
//! `?` `@`), the rest is its body:
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
//! | 16 | a row of the store is edited, then the controller restarts from the store | `verb table row rest` (below) |
//!
//! Kind 16: `table` is `0` hosts, `1` vms, `2` migrations, `3` meta (its first byte, modulo
//! 4); `row` is an index into the table's rows in key order (modulo their number); `verb` (any
//! byte but these four stands for one of them, by its value modulo 4): `d` deletes the row, `c`
//! copies its value to the key `rest`, `s` sets its value to the bytes `rest`, `p` sets the
//! JSON value at the pointer that starts `rest`
//! (up to a space) to the JSON after it (a pointer starting `/*` names the row's only
//! top-level key, the state of a migration: `p 2 0 /*/core/to "h1"`).
//!
//! Kinds 9 and 10 answer with the versions the controller actually pushed, so migrations get
//! past their acknowledgement waits without the fuzzer guessing generations.
#![no_main]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use srmig_api::{
    Ack, FenceReport, HostConfig, HostId, HypervisorReport, MigrateRequest, MigrationId,
    ReleaseReport, Timestamp, VmId, VmInfo, VmStateReport,
};
use srmig_control::{
    Action, Controller, ControllerConfig, ControllerSnapshot, HostObservation, Migration, Timeouts,
};
use srmig_controller::store::{decode, Loaded, RowKey, Rows};
use srmig_controller::{Backend, HostRegistration, HypervisorPost, Store, StoreError};

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

/// `CONTROLLER_API_TRACE=1`: prints every operation with the migrations after it, and what the
/// store made of each edit (kind 16), for writing seeds.
fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("CONTROLLER_API_TRACE").is_some())
}

/// The store's rows, in memory: the [`Backend`] the world's [`Store`] writes to, shared with
/// the world so that it can read and edit them.
#[derive(Debug, Clone, Default)]
struct Memory(Arc<Mutex<Rows>>);

impl Memory {
    fn rows(&self) -> MutexGuard<'_, Rows> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Backend for Memory {
    fn describe(&self) -> String {
        "memory".to_owned()
    }

    fn load(&mut self) -> Result<Rows, StoreError> {
        Ok(self.rows().clone())
    }

    fn apply(&mut self, puts: &[(RowKey, &[u8])], deletes: &[RowKey]) -> Result<(), StoreError> {
        let mut rows = self.rows();
        for (key, value) in puts {
            rows.insert(key.clone(), value.to_vec());
        }
        for key in deletes {
            rows.remove(key);
        }
        Ok(())
    }
}

/// The key of row `index` (modulo their number) of `table` (`0`..`3`), if it has rows.
fn nth_key(rows: &Rows, table: u8, index: usize) -> Option<RowKey> {
    fn nth<K: Clone>(keys: Vec<&K>, index: usize) -> Option<K> {
        keys.get(index % keys.len().max(1)).map(|k| (*k).clone())
    }
    match table % 4 {
        0 => nth(rows.hosts.keys().collect(), index).map(RowKey::Host),
        1 => nth(rows.vms.keys().collect(), index).map(RowKey::Vm),
        2 => nth(rows.migrations.keys().collect(), index).map(RowKey::Migration),
        _ => nth(rows.meta.keys().collect(), index).map(RowKey::Meta),
    }
}

/// The value at `key`.
fn value<'a>(rows: &'a Rows, key: &RowKey) -> Option<&'a Vec<u8>> {
    match key {
        RowKey::Host(k) => rows.hosts.get(k),
        RowKey::Vm(k) => rows.vms.get(k),
        RowKey::Migration(k) => rows.migrations.get(k),
        RowKey::Meta(k) => rows.meta.get(k),
    }
}

/// `key` with its name replaced by `name` (same table); `None` if a migration's is not a number.
fn renamed(key: &RowKey, name: &str) -> Option<RowKey> {
    Some(match key {
        RowKey::Host(_) => RowKey::Host(name.to_owned()),
        RowKey::Vm(_) => RowKey::Vm(name.to_owned()),
        RowKey::Migration(_) => RowKey::Migration(name.parse().ok()?),
        RowKey::Meta(_) => RowKey::Meta(name.to_owned()),
    })
}

/// Kind 16's edit of `rows` (see the module docs); `None` if the body names no row or no
/// change.
fn edit(rows: &Rows, body: &[u8]) -> Option<(Rows, RowKey)> {
    let mut words = body.splitn(4, |b| *b == b' ');
    let verb = words.next()?.first().copied().unwrap_or(b'd');
    let table = words
        .next()?
        .first()
        .copied()
        .unwrap_or(b'0')
        .wrapping_sub(b'0');
    let index = name(words.next().unwrap_or_default())
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let rest = words.next().unwrap_or_default();
    let key = nth_key(rows, table, index)?;
    let mut edited = rows.clone();
    // (any other byte: one of the four, by its value modulo 4)
    let verb = match verb {
        b'd' | b'c' | b's' | b'p' => verb,
        other => b"dcsp"[usize::from(other % 4)],
    };
    match verb {
        b'd' => edited.remove(&key),
        b'c' => {
            let to = renamed(&key, name(rest)?)?;
            edited.insert(to, value(rows, &key)?.clone());
        }
        b's' => edited.insert(key.clone(), rest.to_vec()),
        _ => {
            let split = rest.iter().position(|b| *b == b' ').unwrap_or(rest.len());
            let (pointer, json) = rest.split_at(split);
            let pointer = std::str::from_utf8(pointer).ok()?;
            let new: serde_json::Value = parse(json.get(1..).unwrap_or_default())?;
            let mut v: serde_json::Value = serde_json::from_slice(value(rows, &key)?).ok()?;
            let pointer = match pointer.strip_prefix("/*") {
                Some(tail) => {
                    let state = v.as_object()?.keys().next()?.clone();
                    format!("/{state}{tail}")
                }
                None => pointer.to_owned(),
            };
            *v.pointer_mut(&pointer)? = new;
            edited.insert(key.clone(), serde_json::to_vec(&v).ok()?);
        }
    }
    Some((edited, key))
}

struct World {
    c: Controller,
    /// The store the state is saved to after every operation, and its rows.
    store: Store,
    rows: Memory,
    /// The registrations the daemon would keep (and save) for the controller's hosts.
    regs: BTreeMap<HostId, HostRegistration>,
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
        let statuses = self.c.statuses();
        let mut ids: Vec<MigrationId> = statuses.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        let n = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), n, "two migrations share an id: {statuses:?}");
        serde_json::to_vec(&statuses).expect("statuses serialize");
    }

    /// Saves the state as the daemon does at every commit: the rows the core lists as changed.
    fn save(&mut self) {
        let regs: Vec<&HostRegistration> = self.regs.values().collect();
        let unsaved = self.c.take_unsaved();
        if let Err(e) = self
            .store
            .save_view(&regs, &self.c.snapshot_view(), &unsaved)
        {
            panic!("the memory store cannot save: {e}");
        }
    }

    fn restart(&mut self) {
        let snapshot = self.c.snapshot();
        let json = serde_json::to_vec(&snapshot).expect("the snapshot serializes");
        let back: ControllerSnapshot =
            serde_json::from_slice(&json).expect("the snapshot parses back");
        // The snapshot round-trips (fields not persisted, such as the commit-fence markers
        // seen so far, are absent from both sides).
        let again = serde_json::to_vec(&back).expect("the snapshot serializes again");
        assert_eq!(again, json, "the snapshot survives its JSON");
        // What the daemon restarts from: the store's rows.
        let (store, loaded) = match Store::with_backend(Box::new(self.rows.clone())) {
            Ok(opened) => opened,
            Err(e) => panic!("the rows the store wrote do not load: {e}"),
        };
        if let Some(l) = &loaded {
            let stored = serde_json::to_vec(&l.snapshot).expect("the snapshot serializes");
            if stored != json {
                // Where they part (the whole snapshots are long).
                let at = stored
                    .iter()
                    .zip(&json)
                    .position(|(a, b)| a != b)
                    .unwrap_or(stored.len().min(json.len()));
                let around = |b: &[u8]| {
                    String::from_utf8_lossy(&b[at.saturating_sub(200)..(at + 200).min(b.len())])
                        .into_owned()
                };
                panic!(
                    "the store loads another snapshot than it saved, from byte {at}:\n loaded: {}\n saved:  {}",
                    around(&stored),
                    around(&json)
                );
            }
            let regs: Vec<&HostRegistration> = self.regs.values().collect();
            assert_eq!(
                l.hosts.iter().collect::<Vec<_>>(),
                regs,
                "the store loads the registrations it saved"
            );
        }
        self.start(store, loaded);
    }

    /// The controller starts on `store`, as the daemon does with what it loaded (`None`: a
    /// new store).
    fn start(&mut self, store: Store, loaded: Option<Loaded>) {
        self.store = store;
        match loaded {
            Some(l) => {
                self.regs = l
                    .hosts
                    .into_iter()
                    .map(|r| (r.info.name.clone(), r))
                    .collect();
                self.c = Controller::restore(self.now, CONFIG, l.snapshot);
            }
            None => {
                self.regs.clear();
                self.c = Controller::with_epoch(CONFIG, self.now.0);
            }
        }
    }

    /// Kind 16: a row edited, then a restart.
    fn edit_and_restart(&mut self, body: &[u8]) {
        let rows = self.rows.rows().clone();
        let Some((edited, key)) = edit(&rows, body) else {
            return;
        };
        let decoded = decode("memory", &edited);
        if trace() {
            eprintln!(
                "edit {:?} of {key:?}: {}",
                String::from_utf8_lossy(body),
                match &decoded {
                    Ok(_) => "the store opens".to_owned(),
                    Err(e) => format!(
                        "{e}: {}",
                        std::error::Error::source(e)
                            .map(|s| s.to_string())
                            .unwrap_or_default()
                    ),
                }
            );
        }
        if let Err(e) = decoded {
            // The daemon refuses to start, naming the problem; the rows are put back (this
            // controller goes on as if restarted from them).
            assert!(
                matches!(
                    e,
                    StoreError::Corrupt { .. }
                        | StoreError::Inconsistent { .. }
                        | StoreError::Misfiled { .. }
                        | StoreError::Migrations { .. }
                        | StoreError::Format { .. }
                ),
                "an edited store fails to open with {e:?}"
            );
            return;
        }
        *self.rows.rows() = edited;
        let (store, loaded) = match Store::with_backend(Box::new(self.rows.clone())) {
            Ok(opened) => opened,
            Err(e) => panic!("rows that decode do not open: {e}"),
        };
        if matches!(key, RowKey::Meta(_)) || loaded.is_none() {
            // The versions pushed may go back (see the module docs).
            self.last_version.clear();
        }
        self.start(store, loaded);
    }

    fn op(&mut self, kind: u8, body: &[u8]) {
        let now = self.now;
        match kind.wrapping_sub(b'0') % 17 {
            0 => {
                // The daemon also checks that it can make a client for the host's API.
                if let Some(reg) = parse::<HostRegistration>(body) {
                    if self.c.add_host(reg.info.clone()).is_ok() {
                        self.regs.insert(reg.info.name.clone(), reg);
                    }
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
            16 => self.edit_and_restart(body),
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
                        self.regs.remove(&host);
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
    let rows = Memory::default();
    let (store, _) = match Store::with_backend(Box::new(rows.clone())) {
        Ok(opened) => opened,
        Err(e) => panic!("an empty memory store does not open: {e}"),
    };
    let mut w = World {
        c: Controller::with_epoch(CONFIG, EPOCH),
        store,
        rows,
        regs: BTreeMap::new(),
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
        w.save();
        w.check();
        if trace() {
            let ids: Vec<String> =
                w.c.statuses()
                    .iter()
                    .map(|m| format!("{}:{:?}", m.id, m.phase))
                    .collect();
            eprintln!("{:?}: migrations {ids:?}", String::from_utf8_lossy(record));
        }
    }
});
