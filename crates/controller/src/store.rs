//! The controller's store: hosts, VMs (whose `host` is the mapping), every migration's
//! persisted state, and the per-host generations, in one of two backends:
//!
//! - **embedded** (the default, one machine): a redb file;
//! - **etcd** (`--store etcd`, feature `etcd`): keys under a prefix in an etcd cluster, so that
//!   several controller replicas can share the state (see [`etcd`](crate::store_etcd)).
//!
//! Both hold the same rows (values are JSON):
//!
//! | table | key | value |
//! |---|---|---|
//! | `hosts` | host name | [`HostRegistration`] |
//! | `vms` | VM name | [`VmInfo`] (its `host` is the current mapping) |
//! | `migrations` | migration id | the core's [`Migration`] (state, history, waits) |
//! | `meta` | `format`, `next_id`, `generations`, `epoch` | format version, next id, host -> generation, store epoch (absent in older stores: restored as a new epoch) |
//!
//! [`Store::save`] is called after every input the core accepted and *before* any action it
//! produced is carried out (write-ahead): a host never sees a generation the store does not
//! know, and an API caller is answered only once the change is durable. It writes only the rows
//! that changed since the last save, in one transaction (redb) or one etcd `Txn`.
//!
//! The backends are behind [`Backend`], a small synchronous interface (load every row; apply
//! puts and deletes atomically): the engine calls [`Store::save`] between inputs, as it always
//! did with redb, and the etcd backend runs its async client on its own thread.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use srmig_api::{HostId, MigrationId, VmInfo};
use srmig_control::{
    ControllerSnapshot, Migration, Model, ModelError, SnapshotError, SnapshotView, Unsaved,
};

use crate::types::HostRegistration;

const HOSTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("hosts");
const VMS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("vms");
const MIGRATIONS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("migrations");
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");

/// The store layout version written in `meta/format`.
pub const FORMAT: u64 = 1;

/// Why the store could not be opened, read or written. `store` names it (`redb PATH` or
/// `etcd ENDPOINTS PREFIX`).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory holding an embedded store could not be created.
    #[error("cannot create the directory of {path}")]
    CreateDir {
        /// The store path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The backend failed (open, lock, connect, transaction, I/O, timeout).
    #[error("store {store} failed")]
    Db {
        /// The store.
        store: String,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A write was refused because this controller no longer holds the store (etcd: another
    /// replica leads; the write did not happen).
    #[error("store {store}: {why}")]
    Fenced {
        /// The store.
        store: String,
        /// Why.
        why: String,
    },
    /// A key in the store's tables that the controller never writes (etcd: `migrations/7`
    /// for `migrations/00000000000000000007`, a name left empty, an id that is not one).
    #[error("store {store}: key {key} is not a row the controller writes ({why}); remove it or restore the store from a backup")]
    StrayKey {
        /// The store.
        store: String,
        /// The key as found.
        key: String,
        /// What is wrong with it.
        why: String,
    },
    /// A row does not decode.
    #[error("store {store}: row {table}/{key} is corrupt")]
    Corrupt {
        /// The store.
        store: String,
        /// The table.
        table: &'static str,
        /// The row key.
        key: String,
        /// The decode error.
        #[source]
        source: serde_json::Error,
    },
    /// The rows are individually valid but inconsistent with each other.
    #[error("store {store}: the saved hosts and VMs are inconsistent")]
    Inconsistent {
        /// The store.
        store: String,
        /// What the model refused.
        #[source]
        source: ModelError,
    },
    /// A row's key is not the name or id its value holds (a damaged or hand-edited store).
    #[error("store {store}: row {table}/{key} holds {holds}")]
    Misfiled {
        /// The store.
        store: String,
        /// The table.
        table: &'static str,
        /// The row key.
        key: String,
        /// What the value holds instead (`host h2`, `migration m3`).
        holds: String,
    },
    /// The migrations in progress do not fit the saved hosts and VMs.
    #[error("store {store}: the saved migrations do not fit the saved hosts and VMs")]
    Migrations {
        /// The store.
        store: String,
        /// What does not fit.
        #[source]
        source: SnapshotError,
    },
    /// The store was written by an incompatible version.
    #[error("store {store} has format {found}, this controller reads format {FORMAT}")]
    Format {
        /// The store.
        store: String,
        /// The format found.
        found: u64,
    },
    /// A value could not be encoded (never expected for these types).
    #[error("cannot encode {what}")]
    Encode {
        /// What was being encoded.
        what: String,
        /// The encode error.
        #[source]
        source: serde_json::Error,
    },
}

/// What a store held when opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// Registered hosts with their srmigd sockets.
    pub hosts: Vec<HostRegistration>,
    /// The core's snapshot (model rebuilt from the saved hosts and VMs).
    pub snapshot: ControllerSnapshot,
}

/// Every row of a store, encoded (also: the bytes last written per row, to write only what
/// changed).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rows {
    /// `hosts`.
    pub hosts: BTreeMap<String, Vec<u8>>,
    /// `vms`.
    pub vms: BTreeMap<String, Vec<u8>>,
    /// `migrations`.
    pub migrations: BTreeMap<u64, Vec<u8>>,
    /// `meta`.
    pub meta: BTreeMap<String, Vec<u8>>,
}

/// The key of one row.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum RowKey {
    /// `hosts/<name>`.
    Host(String),
    /// `vms/<name>`.
    Vm(String),
    /// `migrations/<id>`.
    Migration(u64),
    /// `meta/<name>`.
    Meta(String),
}

impl RowKey {
    /// The table's name.
    pub fn table(&self) -> &'static str {
        match self {
            RowKey::Host(_) => "hosts",
            RowKey::Vm(_) => "vms",
            RowKey::Migration(_) => "migrations",
            RowKey::Meta(_) => "meta",
        }
    }
}

impl Rows {
    /// Inserts `value` at `key`.
    /// Removes the row at `key`, if any.
    pub fn remove(&mut self, key: &RowKey) {
        match key {
            RowKey::Host(k) => {
                self.hosts.remove(k);
            }
            RowKey::Vm(k) => {
                self.vms.remove(k);
            }
            RowKey::Migration(k) => {
                self.migrations.remove(k);
            }
            RowKey::Meta(k) => {
                self.meta.remove(k);
            }
        }
    }

    pub fn insert(&mut self, key: RowKey, value: Vec<u8>) {
        match key {
            RowKey::Host(k) => self.hosts.insert(k, value),
            RowKey::Vm(k) => self.vms.insert(k, value),
            RowKey::Migration(k) => self.migrations.insert(k, value),
            RowKey::Meta(k) => self.meta.insert(k, value),
        };
    }

    /// Every row, by key.
    pub fn iter(&self) -> impl Iterator<Item = (RowKey, &[u8])> {
        let hosts = self
            .hosts
            .iter()
            .map(|(k, v)| (RowKey::Host(k.clone()), v.as_slice()));
        let vms = self
            .vms
            .iter()
            .map(|(k, v)| (RowKey::Vm(k.clone()), v.as_slice()));
        let migrations = self
            .migrations
            .iter()
            .map(|(k, v)| (RowKey::Migration(*k), v.as_slice()));
        let meta = self
            .meta
            .iter()
            .map(|(k, v)| (RowKey::Meta(k.clone()), v.as_slice()));
        hosts.chain(vms).chain(migrations).chain(meta)
    }
}

/// Where the rows live. Implemented by the embedded (redb) and the etcd backends; the
/// contract tests (`tests/store_contract.rs`) run against both.
pub trait Backend: Send + fmt::Debug {
    /// `redb PATH` or `etcd ENDPOINTS PREFIX`, for logs and errors.
    fn describe(&self) -> String;
    /// Every row the store holds.
    fn load(&mut self) -> Result<Rows, StoreError>;
    /// Puts and deletes, all or nothing, durable when this returns `Ok`.
    fn apply(&mut self, puts: &[(RowKey, &[u8])], deletes: &[RowKey]) -> Result<(), StoreError>;
    /// For a replica that leads through this store: a flag set once the leadership is lost
    /// (the controller must then stop). `None`: no election (a single controller).
    fn leadership_lost(&self) -> Option<std::sync::Arc<std::sync::atomic::AtomicBool>> {
        None
    }
}

/// Which store to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// The embedded redb file at this path.
    Embedded(PathBuf),
    /// An etcd cluster (feature `etcd`).
    Etcd(crate::store_etcd::EtcdOptions),
}

impl StoreSpec {
    /// `redb PATH` or `etcd ENDPOINTS PREFIX`.
    pub fn describe(&self) -> String {
        match self {
            StoreSpec::Embedded(p) => format!("redb {}", p.display()),
            StoreSpec::Etcd(o) => o.describe(),
        }
    }
}

/// The controller's store. See the module docs.
#[derive(Debug)]
pub struct Store {
    backend: Box<dyn Backend>,
    written: Rows,
    /// The values whose encoding is in `written`, for the rows saved since the store was
    /// opened: a save encodes only what differs from them (a comparison, not a JSON
    /// encoding, per unchanged row).
    saved: Saved,
}

/// The typed values behind [`Store::written`]'s rows (a row missing here is compared by its
/// bytes).
#[derive(Debug, Default)]
struct Saved {
    hosts: std::collections::HashMap<String, HostRegistration>,
    vms: std::collections::HashMap<String, VmInfo>,
    migrations: std::collections::HashMap<u64, Migration>,
}

/// The rows one save writes and removes, and the typed values that go into [`Saved`] once
/// it succeeded.
#[derive(Default)]
struct Diff<'a> {
    puts: Vec<(RowKey, Vec<u8>)>,
    deletes: Vec<RowKey>,
    hosts: Vec<&'a HostRegistration>,
    vms: Vec<&'a VmInfo>,
    migrations: Vec<&'a Migration>,
}

/// What one [`Store::save`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SaveStats {
    /// Rows inserted or replaced.
    pub written: usize,
    /// Rows removed.
    pub removed: usize,
}

impl Store {
    /// Opens (creating if needed) the embedded store at `path`, and loads what it holds
    /// (`None` if it is new or empty). Fails if another process (or this one) holds it open.
    pub fn open(path: &Path) -> Result<(Store, Option<Loaded>), StoreError> {
        Store::with_backend(Box::new(Embedded::open(path)?))
    }

    /// Opens the store `spec` names and loads what it holds.
    pub fn open_spec(spec: &StoreSpec) -> Result<(Store, Option<Loaded>), StoreError> {
        match spec {
            StoreSpec::Embedded(path) => Store::open(path),
            StoreSpec::Etcd(options) => {
                let mut etcd = crate::store_etcd::Etcd::connect(options)?;
                etcd.lead()?;
                Store::with_backend(Box::new(etcd))
            }
        }
    }

    /// A store over `backend`, and what it holds.
    pub fn with_backend(
        mut backend: Box<dyn Backend>,
    ) -> Result<(Store, Option<Loaded>), StoreError> {
        let rows = backend.load()?;
        let loaded = decode(&backend.describe(), &rows)?;
        Ok((
            Store {
                backend,
                written: rows,
                saved: Saved::default(),
            },
            loaded,
        ))
    }

    /// `redb PATH` or `etcd ENDPOINTS PREFIX`.
    pub fn describe(&self) -> String {
        self.backend.describe()
    }

    /// See [`Backend::leadership_lost`].
    pub fn leadership_lost(&self) -> Option<std::sync::Arc<std::sync::atomic::AtomicBool>> {
        self.backend.leadership_lost()
    }

    /// Writes the controller's state: every row that differs from the last save, in one
    /// durable transaction (nothing at all if nothing changed).
    pub fn save(
        &mut self,
        hosts: &[HostRegistration],
        snapshot: &ControllerSnapshot,
    ) -> Result<SaveStats, StoreError> {
        let hosts: Vec<&HostRegistration> = hosts.iter().collect();
        self.save_view(&hosts, &snapshot.view(), &Unsaved::everything())
    }

    /// [`Store::save`] from borrowed state (what the daemon calls at every commit), comparing
    /// only the rows `changed` lists ([`Controller::take_unsaved`]) plus the migrations in
    /// progress and the meta rows; [`Unsaved::everything`] compares every row. The cost is
    /// a comparison per row compared and an encoding per changed row, so a commit that
    /// changes a few rows of a large state stays cheap.
    ///
    /// Debug builds check after every partial save that a full comparison finds nothing
    /// more to write.
    ///
    /// [`Controller::take_unsaved`]: srmig_control::Controller::take_unsaved
    pub fn save_view(
        &mut self,
        hosts: &[&HostRegistration],
        snapshot: &SnapshotView<'_>,
        changed: &Unsaved,
    ) -> Result<SaveStats, StoreError> {
        let stats = self.save_rows(hosts, snapshot, changed)?;
        #[cfg(debug_assertions)]
        if !changed.all {
            let missed = self.diff(hosts, snapshot, &Unsaved::everything())?;
            assert!(
                missed.puts.is_empty() && missed.deletes.is_empty(),
                "a save of the listed changes {changed:?} missed rows: put {:?}, delete {:?}",
                missed.puts.iter().map(|(k, _)| k).collect::<Vec<_>>(),
                missed.deletes
            );
        }
        Ok(stats)
    }

    /// What differs from the last save, among the rows `changed` lets through.
    fn diff<'a>(
        &self,
        hosts: &[&'a HostRegistration],
        snapshot: &SnapshotView<'a>,
        changed: &Unsaved,
    ) -> Result<Diff<'a>, StoreError> {
        let mut d = Diff::default();

        // Hosts.
        let host = |d: &mut Diff<'a>, h: &'a HostRegistration| -> Result<(), StoreError> {
            let name = h.info.name.as_str();
            if self.saved.hosts.get(name) == Some(h) {
                return Ok(());
            }
            let bytes = json(|| format!("host {name}"), h)?;
            if self.written.hosts.get(name) != Some(&bytes) {
                d.puts.push((RowKey::Host(name.to_owned()), bytes));
            }
            d.hosts.push(h);
            Ok(())
        };
        if changed.all {
            let mut present = 0;
            for h in hosts {
                present += usize::from(self.written.hosts.contains_key(h.info.name.as_str()));
                host(&mut d, h)?;
            }
            if present != self.written.hosts.len() {
                let live: std::collections::HashSet<&str> =
                    hosts.iter().map(|h| h.info.name.as_str()).collect();
                d.deletes.extend(
                    self.written
                        .hosts
                        .keys()
                        .filter(|k| !live.contains(k.as_str()))
                        .map(|k| RowKey::Host(k.clone())),
                );
            }
        } else if !changed.hosts.is_empty() {
            for name in &changed.hosts {
                match hosts.iter().find(|h| &h.info.name == name) {
                    Some(h) => host(&mut d, h)?,
                    None if self.written.hosts.contains_key(name.as_str()) => {
                        d.deletes.push(RowKey::Host(name.to_string()));
                    }
                    None => {}
                }
            }
        }

        // VMs.
        let vm = |d: &mut Diff<'a>, vm: &'a VmInfo| -> Result<(), StoreError> {
            let name = vm.name.as_str();
            if self.saved.vms.get(name) == Some(vm) {
                return Ok(());
            }
            let bytes = json(|| format!("VM {name}"), vm)?;
            if self.written.vms.get(name) != Some(&bytes) {
                d.puts.push((RowKey::Vm(name.to_owned()), bytes));
            }
            d.vms.push(vm);
            Ok(())
        };
        if changed.all {
            let mut present = 0;
            for v in snapshot.model.vms() {
                present += usize::from(self.written.vms.contains_key(v.name.as_str()));
                vm(&mut d, v)?;
            }
            if present != self.written.vms.len() {
                let live: std::collections::HashSet<&str> =
                    snapshot.model.vms().map(|v| v.name.as_str()).collect();
                d.deletes.extend(
                    self.written
                        .vms
                        .keys()
                        .filter(|k| !live.contains(k.as_str()))
                        .map(|k| RowKey::Vm(k.clone())),
                );
            }
        } else {
            for name in &changed.vms {
                match snapshot.model.vm(name) {
                    Some(v) => vm(&mut d, v)?,
                    None if self.written.vms.contains_key(name.as_str()) => {
                        d.deletes.push(RowKey::Vm(name.to_string()));
                    }
                    None => {}
                }
            }
        }

        // Migrations: those in progress always; finished ones when listed.
        let migration = |d: &mut Diff<'a>, m: &'a Migration| -> Result<(), StoreError> {
            let id: MigrationId = m.core().id;
            if self.saved.migrations.get(&id.0) == Some(m) {
                return Ok(());
            }
            let bytes = json(|| format!("migration {id}"), m)?;
            if self.written.migrations.get(&id.0) != Some(&bytes) {
                d.puts.push((RowKey::Migration(id.0), bytes));
            }
            d.migrations.push(m);
            Ok(())
        };
        if changed.all {
            let mut present = 0;
            for m in &snapshot.migrations {
                present += usize::from(self.written.migrations.contains_key(&m.core().id.0));
                migration(&mut d, m)?;
            }
            if present != self.written.migrations.len() {
                let live: std::collections::HashSet<u64> =
                    snapshot.migrations.iter().map(|m| m.core().id.0).collect();
                d.deletes.extend(
                    self.written
                        .migrations
                        .keys()
                        .filter(|k| !live.contains(k))
                        .map(|k| RowKey::Migration(*k)),
                );
            }
        } else {
            let active = snapshot.active.min(snapshot.migrations.len());
            for m in &snapshot.migrations[..active] {
                migration(&mut d, m)?;
            }
            for id in &changed.finished {
                match snapshot.migrations[active..]
                    .iter()
                    .find(|m| m.core().id == *id)
                {
                    Some(m) => migration(&mut d, m)?,
                    None if snapshot.migrations[..active]
                        .iter()
                        .any(|m| m.core().id == *id) => {}
                    None if self.written.migrations.contains_key(&id.0) => {
                        d.deletes.push(RowKey::Migration(id.0));
                    }
                    None => {}
                }
            }
        }

        let meta = [
            ("format", json(|| "format".into(), &FORMAT)?),
            ("next_id", json(|| "next_id".into(), &snapshot.next_id)?),
            ("epoch", json(|| "epoch".into(), &snapshot.epoch)?),
            (
                "generations",
                json(|| "generations".into(), &snapshot.generations)?,
            ),
        ];
        for (key, bytes) in meta {
            if self.written.meta.get(key) != Some(&bytes) {
                d.puts.push((RowKey::Meta(key.to_owned()), bytes));
            }
        }
        d.deletes.extend(
            self.written
                .meta
                .keys()
                .filter(|k| !["format", "next_id", "epoch", "generations"].contains(&k.as_str()))
                .map(|k| RowKey::Meta(k.clone())),
        );
        Ok(d)
    }

    /// Writes what [`Store::diff`] finds, then updates the caches.
    fn save_rows(
        &mut self,
        hosts: &[&HostRegistration],
        snapshot: &SnapshotView<'_>,
        changed: &Unsaved,
    ) -> Result<SaveStats, StoreError> {
        let Diff {
            puts,
            deletes,
            hosts: new_hosts,
            vms: new_vms,
            migrations: new_migrations,
        } = self.diff(hosts, snapshot, changed)?;
        if !puts.is_empty() || !deletes.is_empty() {
            let borrowed: Vec<(RowKey, &[u8])> = puts
                .iter()
                .map(|(k, v)| (k.clone(), v.as_slice()))
                .collect();
            self.backend.apply(&borrowed, &deletes)?;
        }
        // Written: the caches follow.
        let stats = SaveStats {
            written: puts.len(),
            removed: deletes.len(),
        };
        for key in deletes {
            match &key {
                RowKey::Host(k) => {
                    self.saved.hosts.remove(k);
                }
                RowKey::Vm(k) => {
                    self.saved.vms.remove(k);
                }
                RowKey::Migration(k) => {
                    self.saved.migrations.remove(k);
                }
                RowKey::Meta(_) => {}
            }
            self.written.remove(&key);
        }
        for (key, bytes) in puts {
            self.written.insert(key, bytes);
        }
        for h in new_hosts {
            self.saved.hosts.insert(h.info.name.to_string(), h.clone());
        }
        for vm in new_vms {
            self.saved.vms.insert(vm.name.to_string(), vm.clone());
        }
        for m in new_migrations {
            self.saved.migrations.insert(m.core().id.0, m.clone());
        }
        Ok(stats)
    }
}

/// The embedded backend: one redb file, one write transaction per save.
#[derive(Debug)]
pub struct Embedded {
    path: PathBuf,
    db: Database,
}

impl Embedded {
    /// Opens (creating if needed) the redb file at `path`.
    pub fn open(path: &Path) -> Result<Embedded, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: path.to_owned(),
                source,
            })?;
        }
        let db = Database::create(path).map_err(|e| db_err(path, e))?;
        let store = Embedded {
            path: path.to_owned(),
            db,
        };
        store.create_tables()?;
        Ok(store)
    }

    fn create_tables(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| db_err(&self.path, e))?;
        txn.open_table(HOSTS).map_err(|e| db_err(&self.path, e))?;
        txn.open_table(VMS).map_err(|e| db_err(&self.path, e))?;
        txn.open_table(MIGRATIONS)
            .map_err(|e| db_err(&self.path, e))?;
        txn.open_table(META).map_err(|e| db_err(&self.path, e))?;
        txn.commit().map_err(|e| db_err(&self.path, e))
    }
}

impl Backend for Embedded {
    fn describe(&self) -> String {
        format!("redb {}", self.path.display())
    }

    fn load(&mut self) -> Result<Rows, StoreError> {
        let txn = self.db.begin_read().map_err(|e| db_err(&self.path, e))?;
        let mut rows = Rows::default();
        let read_str_table =
            |def: TableDefinition<'_, &str, &[u8]>| -> Result<BTreeMap<String, Vec<u8>>, StoreError> {
                let t = txn.open_table(def).map_err(|e| db_err(&self.path, e))?;
                let mut out = BTreeMap::new();
                for entry in t.iter().map_err(|e| db_err(&self.path, e))? {
                    let (k, v) = entry.map_err(|e| db_err(&self.path, e))?;
                    out.insert(k.value().to_owned(), v.value().to_vec());
                }
                Ok(out)
            };
        rows.hosts = read_str_table(HOSTS)?;
        rows.vms = read_str_table(VMS)?;
        rows.meta = read_str_table(META)?;
        let t = txn
            .open_table(MIGRATIONS)
            .map_err(|e| db_err(&self.path, e))?;
        for entry in t.iter().map_err(|e| db_err(&self.path, e))? {
            let (k, v) = entry.map_err(|e| db_err(&self.path, e))?;
            rows.migrations.insert(k.value(), v.value().to_vec());
        }
        Ok(rows)
    }

    fn apply(&mut self, puts: &[(RowKey, &[u8])], deletes: &[RowKey]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let txn = self.db.begin_write().map_err(|e| db_err(&path, e))?;
        {
            let open = |def| txn.open_table(def).map_err(|e| db_err(&path, e));
            let mut hosts = open(HOSTS)?;
            let mut vms = open(VMS)?;
            let mut migrations = txn.open_table(MIGRATIONS).map_err(|e| db_err(&path, e))?;
            let mut meta = open(META)?;
            for (k, v) in puts {
                match k {
                    RowKey::Host(k) => hosts.insert(k.as_str(), *v).map(drop),
                    RowKey::Vm(k) => vms.insert(k.as_str(), *v).map(drop),
                    RowKey::Migration(k) => migrations.insert(*k, *v).map(drop),
                    RowKey::Meta(k) => meta.insert(k.as_str(), *v).map(drop),
                }
                .map_err(|e| db_err(&path, e))?;
            }
            for k in deletes {
                match k {
                    RowKey::Host(k) => hosts.remove(k.as_str()).map(drop),
                    RowKey::Vm(k) => vms.remove(k.as_str()).map(drop),
                    RowKey::Migration(k) => migrations.remove(*k).map(drop),
                    RowKey::Meta(k) => meta.remove(k.as_str()).map(drop),
                }
                .map_err(|e| db_err(&path, e))?;
            }
        }
        txn.commit().map_err(|e| db_err(&path, e))
    }
}

/// Rebuilds the controller's state from the rows (`None` if there are none).
pub fn decode(store: &str, rows: &Rows) -> Result<Option<Loaded>, StoreError> {
    if rows == &Rows::default() {
        return Ok(None);
    }
    let corrupt = |table: &'static str, key: String| {
        move |source| StoreError::Corrupt {
            store: store.to_owned(),
            table,
            key,
            source,
        }
    };
    let format: u64 = match rows.meta.get("format") {
        Some(v) => serde_json::from_slice(v).map_err(corrupt("meta", "format".into()))?,
        None => FORMAT,
    };
    if format != FORMAT {
        return Err(StoreError::Format {
            store: store.to_owned(),
            found: format,
        });
    }
    let next_id: u64 = match rows.meta.get("next_id") {
        Some(v) => serde_json::from_slice(v).map_err(corrupt("meta", "next_id".into()))?,
        None => 1,
    };
    let epoch: u64 = match rows.meta.get("epoch") {
        Some(v) => serde_json::from_slice(v).map_err(corrupt("meta", "epoch".into()))?,
        None => 0,
    };
    let generations: BTreeMap<HostId, u64> = match rows.meta.get("generations") {
        Some(v) => serde_json::from_slice(v).map_err(corrupt("meta", "generations".into()))?,
        None => BTreeMap::new(),
    };
    let misfiled = |table: &'static str, key: String, holds: String| StoreError::Misfiled {
        store: store.to_owned(),
        table,
        key,
        holds,
    };
    let mut hosts = Vec::with_capacity(rows.hosts.len());
    for (k, v) in &rows.hosts {
        let reg: HostRegistration =
            serde_json::from_slice(v).map_err(corrupt("hosts", k.clone()))?;
        if reg.info.name.as_str() != k {
            return Err(misfiled(
                "hosts",
                k.clone(),
                format!("host {}", reg.info.name),
            ));
        }
        hosts.push(reg);
    }
    let mut vms = Vec::with_capacity(rows.vms.len());
    for (k, v) in &rows.vms {
        let vm: VmInfo = serde_json::from_slice(v).map_err(corrupt("vms", k.clone()))?;
        if vm.name.as_str() != k {
            return Err(misfiled("vms", k.clone(), format!("VM {}", vm.name)));
        }
        vms.push(vm);
    }
    let mut model = Model::new();
    let inconsistent = |source| StoreError::Inconsistent {
        store: store.to_owned(),
        source,
    };
    for h in &hosts {
        model.add_host(h.info.clone()).map_err(inconsistent)?;
    }
    for vm in vms {
        model.add_vm(vm).map_err(inconsistent)?;
    }
    let mut migrations = Vec::new();
    let mut finished = Vec::new();
    for (k, v) in &rows.migrations {
        let m: Migration =
            serde_json::from_slice(v).map_err(corrupt("migrations", k.to_string()))?;
        if m.core().id.0 != *k {
            return Err(misfiled(
                "migrations",
                k.to_string(),
                format!("migration {}", m.core().id),
            ));
        }
        if matches!(m, Migration::Done(_)) {
            finished.push(m);
        } else {
            migrations.push(m);
        }
    }
    // (rows come by id; the controller keeps its history in finish order)
    finished.sort_by_key(Migration::finish_order);
    let snapshot = ControllerSnapshot {
        model,
        generations,
        migrations,
        finished,
        next_id,
        epoch,
    };
    snapshot.check().map_err(|source| StoreError::Migrations {
        store: store.to_owned(),
        source,
    })?;
    Ok(Some(Loaded { hosts, snapshot }))
}

fn db_err(path: &Path, e: impl Into<redb::Error>) -> StoreError {
    StoreError::Db {
        store: format!("redb {}", path.display()),
        source: Box::new(e.into()),
    }
}

fn json<T: serde::Serialize>(what: impl FnOnce() -> String, v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|source| StoreError::Encode {
        what: what(),
        source,
    })
}

/// The contract every backend meets (round trip, changes only, deletes, a crash between
/// write and action, large saves) is `tests/store_contract.rs`; these are the embedded
/// backend's own cases.
#[cfg(test)]
mod tests {
    use super::*;
    use srmig_api::{Timestamp, VmId};
    use srmig_control::{Controller, ControllerConfig};

    /// Rows in memory; `fail` makes the next `apply` fail.
    #[derive(Debug, Default)]
    struct Memory {
        rows: std::sync::Arc<std::sync::Mutex<Rows>>,
        fail: std::sync::Arc<std::sync::atomic::AtomicBool>,
    }

    impl Backend for Memory {
        fn describe(&self) -> String {
            "memory".into()
        }
        fn load(&mut self) -> Result<Rows, StoreError> {
            Ok(self.rows.lock().expect("lock").clone())
        }
        fn apply(
            &mut self,
            puts: &[(RowKey, &[u8])],
            deletes: &[RowKey],
        ) -> Result<(), StoreError> {
            if self.fail.swap(false, std::sync::atomic::Ordering::SeqCst) {
                return Err(StoreError::Fenced {
                    store: "memory".into(),
                    why: "told to fail".into(),
                });
            }
            let mut rows = self.rows.lock().expect("lock");
            for (k, v) in puts {
                rows.insert(k.clone(), v.to_vec());
            }
            for k in deletes {
                rows.remove(k);
            }
            Ok(())
        }
    }

    fn reg(i: u16) -> HostRegistration {
        let json = format!(
            r#"{{"name":"h{i}","locator":"fc00:{i:x}::/48","sid_end_s":"fc00:{i:x}::e5","sid_end_sbuf":"fc00:{i:x}::eb","sid_dt6":"fc00:{i:x}::d6","underlay":"2001:db8:ff::{i:x}","api_socket":"/tmp/h{i}.sock"}}"#
        );
        serde_json::from_str(&json).expect("registration")
    }

    fn vm(name: &str, host: &str, last: u8) -> VmInfo {
        serde_json::from_str(&format!(
            r#"{{"name":"{name}","addresses":["2001:db8:a::{last:x}"],"mac":"52:54:00:00:00:{last:02x}","host":"{host}"}}"#
        ))
        .expect("vm")
    }

    fn world() -> (Controller, Vec<HostRegistration>) {
        let mut c = Controller::with_epoch(ControllerConfig::default(), 1_700_000_000_000);
        let hosts: Vec<_> = (1..=3).map(reg).collect();
        for h in &hosts {
            c.add_host(h.info.clone()).expect("host");
        }
        c.add_vm(vm("a", "h1", 1)).expect("vm");
        c.add_vm(vm("b", "h2", 2)).expect("vm");
        (c, hosts)
    }

    fn save(store: &mut Store, c: &Controller, hosts: &[HostRegistration]) -> SaveStats {
        let hosts: Vec<&HostRegistration> = hosts.iter().collect();
        store
            .save_view(&hosts, &c.snapshot_view(), &Unsaved::everything())
            .expect("save")
    }

    /// Every row an encoding of the whole state would hold, and nothing else.
    fn assert_holds_exactly(memory: &Memory, c: &Controller, hosts: &[HostRegistration]) {
        let (mut fresh, _) = Store::with_backend(Box::new(Memory::default())).expect("store");
        save(&mut fresh, c, hosts);
        assert_eq!(*memory.rows.lock().expect("lock"), fresh.written);
    }

    #[test]
    fn a_save_writes_the_changed_rows_and_deletes_the_removed_ones() {
        let memory = Memory::default();
        let (rows, fail) = (memory.rows.clone(), memory.fail.clone());
        let (mut store, _) = Store::with_backend(Box::new(memory)).expect("store");
        let view = Memory {
            rows,
            fail: fail.clone(),
        };
        let (mut c, mut hosts) = world();
        assert_eq!(save(&mut store, &c, &hosts).written, 3 + 2 + 4);
        assert_eq!(save(&mut store, &c, &hosts), SaveStats::default());
        // One VM moves: its row and the meta rows that changed (generations), nothing else.
        c.remove_vm(&VmId::new("b").expect("name"))
            .expect("removed");
        c.add_vm(vm("c", "h3", 3)).expect("vm");
        let stats = save(&mut store, &c, &hosts);
        assert_eq!(stats.removed, 1, "{stats:?}");
        assert!(stats.written >= 1, "{stats:?}");
        assert_holds_exactly(&view, &c, &hosts);
        // A host goes away.
        hosts.pop();
        c.remove_vm(&VmId::new("c").expect("name"))
            .expect("removed");
        save(&mut store, &c, &hosts);
        assert_holds_exactly(&view, &c, &hosts);
        assert_eq!(save(&mut store, &c, &hosts), SaveStats::default());
    }

    #[test]
    fn a_failed_save_is_written_in_full_by_the_next_one() {
        let memory = Memory::default();
        let view = Memory {
            rows: memory.rows.clone(),
            fail: memory.fail.clone(),
        };
        let (mut store, _) = Store::with_backend(Box::new(memory)).expect("store");
        let (mut c, hosts) = world();
        save(&mut store, &c, &hosts);
        c.add_vm(vm("c", "h3", 3)).expect("vm");
        view.fail.store(true, std::sync::atomic::Ordering::SeqCst);
        let refs: Vec<&HostRegistration> = hosts.iter().collect();
        assert!(store
            .save_view(&refs, &c.snapshot_view(), &Unsaved::everything())
            .is_err());
        let stats = save(&mut store, &c, &hosts);
        assert!(stats.written >= 1, "the VM's row again: {stats:?}");
        assert_holds_exactly(&view, &c, &hosts);
    }

    /// VM `a` of `world()` starts migrating to h2.
    fn migrate_a_to_h2(c: &mut Controller) {
        c.request_migration(
            Timestamp(5),
            srmig_api::MigrateRequest {
                vm: VmId::new("a").expect("name"),
                to: HostId::new("h2").expect("name"),
                strategy: srmig_api::Strategy::SrBuffer,
            },
        )
        .expect("accepted");
    }

    #[test]
    fn a_reopened_store_writes_nothing_for_the_state_it_holds() {
        let memory = Memory::default();
        let (rows, fail) = (memory.rows.clone(), memory.fail.clone());
        let (mut store, _) = Store::with_backend(Box::new(memory)).expect("store");
        let (mut c, hosts) = world();
        migrate_a_to_h2(&mut c);
        save(&mut store, &c, &hosts);
        drop(store);
        let (mut store, loaded) =
            Store::with_backend(Box::new(Memory { rows, fail })).expect("store");
        assert!(loaded.is_some());
        assert_eq!(save(&mut store, &c, &hosts), SaveStats::default());
    }

    /// The rows of `world()` with VM `a` migrating from h1 to h2.
    fn rows_mid_migration() -> Rows {
        let memory = Memory::default();
        let rows = memory.rows.clone();
        let (mut store, _) = Store::with_backend(Box::new(memory)).expect("store");
        let (mut c, hosts) = world();
        migrate_a_to_h2(&mut c);
        save(&mut store, &c, &hosts);
        let rows = rows.lock().expect("lock").clone();
        assert!(decode("memory", &rows).is_ok(), "the saved rows load");
        rows
    }

    /// The migration row `row` with the JSON value at `pointer` in its state replaced.
    fn set_in_state(row: &mut Vec<u8>, pointer: &str, value: serde_json::Value) {
        let mut m: serde_json::Value = serde_json::from_slice(row).expect("json");
        let state = m
            .as_object()
            .and_then(|o| o.keys().next().cloned())
            .expect("a state");
        *m.pointer_mut(&format!("/{state}{pointer}"))
            .expect("the field") = value;
        *row = serde_json::to_vec(&m).expect("json");
    }

    /// `rows` with the JSON value at `pointer` in migration 1's state replaced by `value`.
    fn edit_migration(rows: &mut Rows, pointer: &str, value: serde_json::Value) {
        set_in_state(
            rows.migrations.get_mut(&1).expect("migration 1"),
            pointer,
            value,
        );
    }

    fn refusal(rows: &Rows) -> String {
        match decode("memory", rows) {
            Ok(_) => panic!("the damaged rows were loaded"),
            Err(e) => crate::push::error_chain(&e),
        }
    }

    #[test]
    fn a_row_filed_under_another_key_is_refused() {
        let mut rows = rows_mid_migration();
        let h1 = rows.hosts.remove("h1").expect("h1");
        rows.hosts.insert("h9".into(), h1);
        assert_eq!(refusal(&rows), "store memory: row hosts/h9 holds host h1");

        let mut rows = rows_mid_migration();
        let a = rows.vms.get("a").expect("a").clone();
        rows.vms.insert("z".into(), a);
        assert_eq!(refusal(&rows), "store memory: row vms/z holds VM a");

        // A copy of a migration under another id: two rows, one migration.
        let mut rows = rows_mid_migration();
        let m = rows.migrations.get(&1).expect("m1").clone();
        rows.migrations.insert(7, m);
        assert_eq!(
            refusal(&rows),
            "store memory: row migrations/7 holds migration m1"
        );
    }

    #[test]
    fn migrations_that_do_not_fit_the_hosts_and_vms_are_refused() {
        let prefix = "store memory: the saved migrations do not fit the saved hosts and VMs: ";
        // Its VM's row is gone: the VM's reports would be refused, the migration never ends.
        let mut rows = rows_mid_migration();
        rows.vms.remove("a");
        assert_eq!(
            refusal(&rows),
            format!("{prefix}m1 moves VM a, which is not registered")
        );
        let mut rows = rows_mid_migration();
        edit_migration(&mut rows, "/core/to", "h7".into());
        assert_eq!(
            refusal(&rows),
            format!("{prefix}m1 names host h7, which is not registered")
        );
        let mut rows = rows_mid_migration();
        edit_migration(&mut rows, "/core/to", "h1".into());
        assert_eq!(
            refusal(&rows),
            format!("{prefix}m1 moves its VM from host h1 to itself")
        );
        let mut rows = rows_mid_migration();
        edit_migration(&mut rows, "/core/from", "h3".into());
        assert_eq!(
            refusal(&rows),
            format!(
                "{prefix}m1 moves VM a, which is on host h1, neither its source nor its destination"
            )
        );
        // A second migration of the same VM, under its own id.
        let mut rows = rows_mid_migration();
        let mut m2 = rows.migrations.get(&1).expect("m1").clone();
        set_in_state(&mut m2, "/core/id", 2.into());
        rows.migrations.insert(2, m2);
        assert_eq!(
            refusal(&rows),
            format!("{prefix}VM a has two migrations in progress, m1 and m2")
        );
    }

    #[test]
    fn second_open_is_refused_while_held() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.redb");
        let (_store, _) = Store::open(&path).expect("open");
        let err = Store::open(&path).expect_err("already open");
        assert!(matches!(err, StoreError::Db { .. }), "{err:?}");
    }

    #[test]
    fn corrupt_rows_are_reported_with_their_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.redb");
        {
            let store = Embedded::open(&path).expect("open");
            let txn = store.db.begin_write().expect("txn");
            {
                let mut t = txn.open_table(VMS).expect("table");
                t.insert("web1", b"{not json".as_slice()).expect("insert");
            }
            txn.commit().expect("commit");
        }
        let err = Store::open(&path).expect_err("corrupt");
        match err {
            StoreError::Corrupt { table, key, .. } => {
                assert_eq!((table, key.as_str()), ("vms", "web1"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
