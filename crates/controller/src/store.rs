//! The embedded store (redb): hosts, VMs (whose `host` is the mapping), every migration's
//! persisted state, and the per-host generations.
//!
//! | table | key | value (JSON) |
//! |---|---|---|
//! | `hosts` | host name | [`HostRegistration`] |
//! | `vms` | VM name | [`VmInfo`] (its `host` is the current mapping) |
//! | `migrations` | migration id | the core's [`Migration`] (state, history, waits) |
//! | `meta` | `format`, `next_id`, `generations`, `epoch` | format version, next id, host -> generation, store epoch (absent in older stores: restored as a new epoch) |
//!
//! [`Store::save`] is called after every input the core accepted and *before* any action it
//! produced is carried out (write-ahead): a host never sees a generation the store does not
//! know, and an API caller is answered only once the change is durable. It writes only the rows
//! that changed since the last save, in one transaction.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use srmig_api::{HostId, MigrationId, VmInfo};
use srmig_control::{ControllerSnapshot, Migration, Model, ModelError};

use crate::types::HostRegistration;

const HOSTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("hosts");
const VMS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("vms");
const MIGRATIONS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("migrations");
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");

/// The store layout version written in `meta/format`.
pub const FORMAT: u64 = 1;

/// Why the store could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory holding the store could not be created.
    #[error("cannot create the directory of {path}")]
    CreateDir {
        /// The store path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The database failed (open, lock, transaction, I/O).
    #[error("store {path} failed")]
    Db {
        /// The store path.
        path: PathBuf,
        /// The redb error.
        #[source]
        source: Box<redb::Error>,
    },
    /// A row does not decode.
    #[error("store {path}: row {table}/{key} is corrupt")]
    Corrupt {
        /// The store path.
        path: PathBuf,
        /// The table.
        table: &'static str,
        /// The row key.
        key: String,
        /// The decode error.
        #[source]
        source: serde_json::Error,
    },
    /// The rows are individually valid but inconsistent with each other.
    #[error("store {path}: the saved hosts and VMs are inconsistent")]
    Inconsistent {
        /// The store path.
        path: PathBuf,
        /// What the model refused.
        #[source]
        source: ModelError,
    },
    /// The store was written by an incompatible version.
    #[error("store {path} has format {found}, this controller reads format {FORMAT}")]
    Format {
        /// The store path.
        path: PathBuf,
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

/// Bytes last written per row, to write only what changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Rows {
    hosts: BTreeMap<String, Vec<u8>>,
    vms: BTreeMap<String, Vec<u8>>,
    migrations: BTreeMap<u64, Vec<u8>>,
    meta: BTreeMap<String, Vec<u8>>,
}

/// The controller's embedded store. See the module docs.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    db: Database,
    written: Rows,
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
    /// Opens (creating if needed) the store at `path`, and loads what it holds (`None` if it
    /// is new or empty). Fails if another process (or this one) holds it open.
    pub fn open(path: &Path) -> Result<(Store, Option<Loaded>), StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: path.to_owned(),
                source,
            })?;
        }
        let db = Database::create(path).map_err(|e| db_err(path, e))?;
        let mut store = Store {
            path: path.to_owned(),
            db,
            written: Rows::default(),
        };
        store.create_tables()?;
        let rows = store.read_rows()?;
        let loaded = store.decode(&rows)?;
        store.written = rows;
        Ok((store, loaded))
    }

    /// The store's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the controller's state: every row that differs from the last save, in one
    /// durable transaction (nothing at all if nothing changed).
    pub fn save(
        &mut self,
        hosts: &[HostRegistration],
        snapshot: &ControllerSnapshot,
    ) -> Result<SaveStats, StoreError> {
        let rows = encode(hosts, snapshot)?;
        if rows == self.written {
            return Ok(SaveStats::default());
        }
        let mut stats = SaveStats::default();
        let txn = self.db.begin_write().map_err(|e| db_err(&self.path, e))?;
        {
            let mut t = txn.open_table(HOSTS).map_err(|e| db_err(&self.path, e))?;
            for (k, v) in &rows.hosts {
                if self.written.hosts.get(k) != Some(v) {
                    t.insert(k.as_str(), v.as_slice())
                        .map_err(|e| db_err(&self.path, e))?;
                    stats.written += 1;
                }
            }
            for k in self
                .written
                .hosts
                .keys()
                .filter(|k| !rows.hosts.contains_key(*k))
            {
                t.remove(k.as_str()).map_err(|e| db_err(&self.path, e))?;
                stats.removed += 1;
            }
            let mut t = txn.open_table(VMS).map_err(|e| db_err(&self.path, e))?;
            for (k, v) in &rows.vms {
                if self.written.vms.get(k) != Some(v) {
                    t.insert(k.as_str(), v.as_slice())
                        .map_err(|e| db_err(&self.path, e))?;
                    stats.written += 1;
                }
            }
            for k in self
                .written
                .vms
                .keys()
                .filter(|k| !rows.vms.contains_key(*k))
            {
                t.remove(k.as_str()).map_err(|e| db_err(&self.path, e))?;
                stats.removed += 1;
            }
            let mut t = txn
                .open_table(MIGRATIONS)
                .map_err(|e| db_err(&self.path, e))?;
            for (k, v) in &rows.migrations {
                if self.written.migrations.get(k) != Some(v) {
                    t.insert(*k, v.as_slice())
                        .map_err(|e| db_err(&self.path, e))?;
                    stats.written += 1;
                }
            }
            for k in self
                .written
                .migrations
                .keys()
                .filter(|k| !rows.migrations.contains_key(*k))
            {
                t.remove(*k).map_err(|e| db_err(&self.path, e))?;
                stats.removed += 1;
            }
            let mut t = txn.open_table(META).map_err(|e| db_err(&self.path, e))?;
            for (k, v) in &rows.meta {
                if self.written.meta.get(k) != Some(v) {
                    t.insert(k.as_str(), v.as_slice())
                        .map_err(|e| db_err(&self.path, e))?;
                    stats.written += 1;
                }
            }
        }
        txn.commit().map_err(|e| db_err(&self.path, e))?;
        self.written = rows;
        Ok(stats)
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

    fn read_rows(&self) -> Result<Rows, StoreError> {
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

    fn decode(&self, rows: &Rows) -> Result<Option<Loaded>, StoreError> {
        if rows == &Rows::default() {
            return Ok(None);
        }
        let path = &self.path;
        let corrupt = |table: &'static str, key: String| {
            move |source| StoreError::Corrupt {
                path: path.clone(),
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
                path: path.clone(),
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
        let mut hosts = Vec::with_capacity(rows.hosts.len());
        for (k, v) in &rows.hosts {
            let reg: HostRegistration =
                serde_json::from_slice(v).map_err(corrupt("hosts", k.clone()))?;
            hosts.push(reg);
        }
        let mut vms = Vec::with_capacity(rows.vms.len());
        for (k, v) in &rows.vms {
            let vm: VmInfo = serde_json::from_slice(v).map_err(corrupt("vms", k.clone()))?;
            vms.push(vm);
        }
        let mut model = Model::new();
        let inconsistent = |source| StoreError::Inconsistent {
            path: path.clone(),
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
            if matches!(m, Migration::Done(_)) {
                finished.push(m);
            } else {
                migrations.push(m);
            }
        }
        Ok(Some(Loaded {
            hosts,
            snapshot: ControllerSnapshot {
                model,
                generations,
                migrations,
                finished,
                next_id,
                epoch,
            },
        }))
    }
}

fn db_err(path: &Path, e: impl Into<redb::Error>) -> StoreError {
    StoreError::Db {
        path: path.to_owned(),
        source: Box::new(e.into()),
    }
}

fn json<T: serde::Serialize>(what: impl FnOnce() -> String, v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|source| StoreError::Encode {
        what: what(),
        source,
    })
}

fn encode(hosts: &[HostRegistration], s: &ControllerSnapshot) -> Result<Rows, StoreError> {
    let mut rows = Rows::default();
    for h in hosts {
        rows.hosts.insert(
            h.info.name.to_string(),
            json(|| format!("host {}", h.info.name), h)?,
        );
    }
    for vm in s.model.vms() {
        rows.vms
            .insert(vm.name.to_string(), json(|| format!("VM {}", vm.name), vm)?);
    }
    for m in s.migrations.iter().chain(s.finished.iter()) {
        let id: MigrationId = m.core().id;
        rows.migrations
            .insert(id.0, json(|| format!("migration {id}"), m)?);
    }
    rows.meta
        .insert("format".into(), json(|| "format".into(), &FORMAT)?);
    rows.meta
        .insert("next_id".into(), json(|| "next_id".into(), &s.next_id)?);
    rows.meta
        .insert("epoch".into(), json(|| "epoch".into(), &s.epoch)?);
    rows.meta.insert(
        "generations".into(),
        json(|| "generations".into(), &s.generations)?,
    );
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use srmig_api::{MigrateRequest, Strategy, Timestamp, VmId};
    use srmig_control::{Controller, ControllerConfig};

    fn reg(i: u16) -> HostRegistration {
        let json = format!(
            r#"{{"name":"h{i}","locator":"fc00:{i}::/48","sid_end_s":"fc00:{i}::e5","sid_end_sbuf":"fc00:{i}::eb","sid_dt6":"fc00:{i}::d6","underlay":"2001:db8:ff::{i}","api_socket":"/tmp/h{i}.sock"}}"#
        );
        serde_json::from_str(&json).expect("registration")
    }

    fn vm() -> VmInfo {
        serde_json::from_str(
            r#"{"name":"web1","addresses":["2001:db8:a::10"],"mac":"52:54:00:00:00:10","host":"h1"}"#,
        )
        .expect("vm")
    }

    fn controller() -> (Controller, Vec<HostRegistration>) {
        let mut c = Controller::with_epoch(ControllerConfig::default(), 1_700_000_000_000);
        let hosts = vec![reg(1), reg(2)];
        for h in &hosts {
            c.add_host(h.info.clone()).expect("host");
        }
        c.add_vm(vm()).expect("vm");
        (c, hosts)
    }

    #[test]
    fn empty_store_loads_nothing_and_round_trips_a_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/dir/c.redb");
        let (mut store, loaded) = Store::open(&path).expect("open");
        assert!(loaded.is_none());
        let (mut c, hosts) = controller();
        c.request_migration(
            Timestamp(5),
            MigrateRequest {
                vm: VmId::new("web1").expect("name"),
                to: HostId::new("h2").expect("name"),
                strategy: Strategy::SrBuffer,
            },
        )
        .expect("accepted");
        let snap = c.snapshot();
        let stats = store.save(&hosts, &snap).expect("save");
        assert_eq!(stats.written, 2 + 1 + 1 + 4);
        // Unchanged state writes nothing.
        assert_eq!(
            store.save(&hosts, &snap).expect("save"),
            SaveStats::default()
        );
        drop(store);
        let (_store, loaded) = Store::open(&path).expect("reopen");
        let loaded = loaded.expect("something saved");
        assert_eq!(loaded.hosts, hosts);
        assert_eq!(loaded.snapshot, snap);
    }

    #[test]
    fn only_changed_rows_are_written_and_evicted_rows_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.redb");
        let (mut store, _) = Store::open(&path).expect("open");
        let (c, hosts) = controller();
        let mut snap = c.snapshot();
        store.save(&hosts, &snap).expect("save");
        snap.next_id = 9;
        assert_eq!(
            store.save(&hosts, &snap).expect("save"),
            SaveStats {
                written: 1,
                removed: 0
            }
        );
        assert_eq!(
            store.save(&hosts[..1], &snap).expect("save"),
            SaveStats {
                written: 0,
                removed: 1
            }
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
            let (store, _) = Store::open(&path).expect("open");
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
