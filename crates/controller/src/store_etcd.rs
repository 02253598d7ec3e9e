//! The etcd store backend (`srmig controller --store etcd --etcd-endpoints URL[,URL...]`).
//!
//! The rows of [`crate::store`] live under one key prefix (default `/srmig/`):
//!
//! | key | value |
//! |---|---|
//! | `<prefix>hosts/<name>` | a host's registration (JSON) |
//! | `<prefix>vms/<name>` | a VM (JSON) |
//! | `<prefix>migrations/<id, 20 digits>` | a migration's persisted state (JSON) |
//! | `<prefix>meta/<name>` | `format`, `next_id`, `generations`, `epoch` |
//!
//! A save is one etcd `Txn` of puts and deletes, so it is atomic and durable (etcd commits it
//! through Raft to a quorum's WAL) before the controller acts on it. etcd limits the operations
//! of one transaction (`--max-txn-ops`, 128 by default); a larger save (a first save of a big
//! model, e.g. importing 1,000 hosts at once) is split into transactions of at most
//! [`MAX_TXN_OPS`] operations with the `meta` rows in the last one, so a crash in between
//! leaves rows the next controller reads, with the previous generations and ids.
//!
//! **Leadership.** Controller replicas sharing one prefix elect a leader through etcd:
//! [`Etcd::campaign`] creates `<prefix>leader` (holding the replica's id) bound to a lease of
//! `ttl`, only if the key does not exist, and keeps the lease alive from the client thread
//! (every `ttl / 3`). A standby reads the key every [`STANDBY_POLL`] and campaigns once it is
//! gone (the leader's lease expired or was revoked); the leader that cannot keep its
//! lease alive (etcd unreachable, lease expired) sees [`Etcd::leadership_lost`] and must stop
//! acting (the daemon exits; a supervisor restarts it as a standby).
//!
//! **Fencing.** A write may carry a guard: the key and create revision of the writer's
//! leadership (an election key bound to its lease). The transaction then only applies if that
//! key still exists with that revision; otherwise nothing is written and the save fails with
//! [`StoreError::Fenced`]: a deposed controller can never write (and therefore never push a
//! config, since pushes follow saves).
//!
//! The client (`etcd-client`, gRPC over tonic) is async; the controller's engine saves
//! synchronously between inputs. The backend therefore runs the client on its own thread with a
//! current-thread tokio runtime and hands it requests over a channel; a request waits at most
//! the configured timeout.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
#[cfg(feature = "etcd")]
use std::sync::atomic::Ordering;
#[cfg(feature = "etcd")]
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use crate::store::{Backend, RowKey, Rows, StoreError};

/// The most operations put into one etcd transaction (etcd's default `--max-txn-ops`).
pub const MAX_TXN_OPS: usize = 128;

/// How often a standby replica reads the leadership key: a dead leader's lease expires
/// within its TTL (plus up to 0.5 s, etcd's expiry check), and a standby takes over at most
/// this much later.
pub const STANDBY_POLL: Duration = Duration::from_millis(100);

/// How to reach the etcd cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdOptions {
    /// Client URLs (`http://127.0.0.1:2379`, `https://...` with TLS).
    pub endpoints: Vec<String>,
    /// Key prefix of this controller cluster's rows (default `/srmig/`).
    pub prefix: String,
    /// TLS to etcd: the CA that signed the servers' certificates, and optionally a client
    /// certificate and key (etcd `--client-cert-auth`).
    pub tls: Option<EtcdTls>,
    /// Connect and per-request timeout.
    pub timeout: Duration,
    /// Run as one of several controller replicas: campaign for the leadership as this
    /// replica id with a lease of this TTL before loading, and stop when it is lost. `None`:
    /// a single controller (no election, unguarded writes).
    pub replica: Option<(String, Duration)>,
}

/// TLS files for etcd (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    /// CA certificate(s) trusted for the etcd servers.
    pub ca: PathBuf,
    /// Client certificate and key, if etcd requires client certificates.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl EtcdOptions {
    /// `endpoints` with the default prefix `/srmig/`, no TLS, a 5 s timeout.
    pub fn new(endpoints: Vec<String>) -> EtcdOptions {
        EtcdOptions {
            endpoints,
            prefix: "/srmig/".into(),
            tls: None,
            timeout: Duration::from_secs(5),
            replica: None,
        }
    }

    /// `etcd ENDPOINTS PREFIX`.
    pub fn describe(&self) -> String {
        format!("etcd {} {}", self.endpoints.join(","), self.prefix)
    }

    /// The etcd key of a row.
    pub fn key(&self, row: &RowKey) -> String {
        match row {
            RowKey::Host(k) => format!("{}hosts/{k}", self.prefix),
            RowKey::Vm(k) => format!("{}vms/{k}", self.prefix),
            RowKey::Migration(id) => format!("{}migrations/{id:020}", self.prefix),
            RowKey::Meta(k) => format!("{}meta/{k}", self.prefix),
        }
    }

    /// The leader election key, `<prefix>leader`.
    pub fn leader_key(&self) -> String {
        format!("{}leader", self.prefix)
    }

    /// The row of an etcd key under the prefix: `Ok(None)` for a key outside the store's
    /// tables (the election's, another program's), `Err(why)` for a key inside one that
    /// [`key`](Self::key) never writes (`migrations/7`, `migrations/x`, `hosts/`): loading
    /// it would merge it with a row or drop it unseen, so the store refuses it.
    pub fn row(&self, key: &str) -> Result<Option<RowKey>, String> {
        let Some((table, name)) = key
            .strip_prefix(&self.prefix)
            .and_then(|rest| rest.split_once('/'))
        else {
            return Ok(None);
        };
        if !matches!(table, "hosts" | "vms" | "migrations" | "meta") {
            return Ok(None);
        }
        if name.is_empty() {
            return Err(format!("a {table} key without a name"));
        }
        let row = match table {
            "hosts" => RowKey::Host(name.to_owned()),
            "vms" => RowKey::Vm(name.to_owned()),
            "migrations" => match name.parse() {
                Ok(id) => RowKey::Migration(id),
                Err(_) => return Err("a migration key that is not an id".into()),
            },
            _ => RowKey::Meta(name.to_owned()),
        };
        if self.key(&row) != key {
            return Err(format!(
                "migration ids are written as 20 digits: {}",
                self.key(&row)
            ));
        }
        Ok(Some(row))
    }
}

/// A write's guard: apply only while `key` exists with this create revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    /// The leadership key.
    pub key: String,
    /// Its create revision when this writer became leader.
    pub create_revision: i64,
}

#[cfg(feature = "etcd")]
mod client {
    use super::*;
    use etcd_client::{
        Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, PutOptions,
        TlsOptions, Txn, TxnOp,
    };

    /// Keys and values read under the prefix.
    pub(super) type Kvs = Vec<(String, Vec<u8>)>;

    /// One request to the client thread.
    pub(super) enum Request {
        Load(mpsc::Sender<Result<Kvs, String>>),
        /// Read `<prefix>leader` alone (a standby's poll).
        Leader(mpsc::Sender<Result<Option<Vec<u8>>, String>>),
        Apply {
            ops: Vec<(String, Option<Vec<u8>>)>,
            guard: Option<Guard>,
            reply: mpsc::Sender<Result<bool, String>>,
        },
        /// Create `<prefix>leader` = `id` with a lease of `ttl` if absent; keep the lease
        /// alive, setting `lost` when that fails. Replies the guard, or `None` (someone leads).
        Campaign {
            id: String,
            ttl: Duration,
            lost: Arc<AtomicBool>,
            reply: mpsc::Sender<Result<Option<(Guard, i64)>, String>>,
        },
        /// Revoke the lease (the leader key goes with it).
        Resign {
            lease: i64,
            reply: mpsc::Sender<Result<(), String>>,
        },
    }

    /// Starts the client thread; returns once it is connected (or failed to).
    pub(super) fn spawn(options: &EtcdOptions) -> Result<mpsc::Sender<Request>, String> {
        let options = options.clone();
        let (tx, rx) = mpsc::channel::<Request>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        std::thread::Builder::new()
            .name("srmig-etcd".into())
            .spawn(move || {
                // One worker: the lease keep-alive runs there between requests.
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("srmig-etcd-rt")
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("tokio runtime: {e}")));
                        return;
                    }
                };
                let client = runtime.block_on(connect(&options));
                let mut client = match client {
                    Ok(c) => {
                        let _ = ready_tx.send(Ok(()));
                        c
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                while let Ok(request) = rx.recv() {
                    runtime.block_on(serve(&mut client, &options, request));
                }
            })
            .map_err(|e| format!("cannot start the etcd client thread: {e}"))?;
        ready_rx
            .recv()
            .map_err(|_| "the etcd client thread ended".to_owned())??;
        Ok(tx)
    }

    async fn connect(o: &EtcdOptions) -> Result<Client, String> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(o.timeout)
            .with_timeout(o.timeout);
        if let Some(tls) = &o.tls {
            let read = |p: &PathBuf| {
                std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
            };
            let mut t = TlsOptions::new().ca_certificate(Certificate::from_pem(read(&tls.ca)?));
            if let Some((cert, key)) = &tls.identity {
                t = t.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            opts = opts.with_tls(t);
        }
        let mut client = Client::connect(o.endpoints.clone(), Some(opts))
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", o.endpoints.join(",")))?;
        // Connecting is lazy in tonic: ask once, so a wrong endpoint fails here.
        tokio::time::timeout(o.timeout, client.status())
            .await
            .map_err(|_| {
                format!(
                    "no answer from {} within {:?}",
                    o.endpoints.join(","),
                    o.timeout
                )
            })?
            .map_err(|e| format!("{} does not answer: {e}", o.endpoints.join(",")))?;
        Ok(client)
    }

    async fn serve(client: &mut Client, o: &EtcdOptions, request: Request) {
        match request {
            Request::Load(reply) => {
                let r = tokio::time::timeout(
                    o.timeout,
                    client.get(o.prefix.as_str(), Some(GetOptions::new().with_prefix())),
                )
                .await;
                let r = match r {
                    Err(_) => Err(format!("range read timed out after {:?}", o.timeout)),
                    Ok(Err(e)) => Err(e.to_string()),
                    Ok(Ok(resp)) => Ok(resp
                        .kvs()
                        .iter()
                        .map(|kv| {
                            (
                                String::from_utf8_lossy(kv.key()).into_owned(),
                                kv.value().to_vec(),
                            )
                        })
                        .collect()),
                };
                let _ = reply.send(r);
            }
            Request::Leader(reply) => {
                let r = tokio::time::timeout(o.timeout, client.get(o.leader_key(), None)).await;
                let _ = reply.send(match r {
                    Err(_) => Err(format!("leader read timed out after {:?}", o.timeout)),
                    Ok(Err(e)) => Err(e.to_string()),
                    Ok(Ok(resp)) => Ok(resp.kvs().first().map(|kv| kv.value().to_vec())),
                });
            }
            Request::Apply { ops, guard, reply } => {
                let ops: Vec<TxnOp> = ops
                    .into_iter()
                    .map(|(k, v)| match v {
                        Some(v) => TxnOp::put(k, v, None),
                        None => TxnOp::delete(k, None),
                    })
                    .collect();
                let mut txn = Txn::new();
                if let Some(g) = guard {
                    txn = txn.when([Compare::create_revision(
                        g.key,
                        CompareOp::Equal,
                        g.create_revision,
                    )]);
                }
                let txn = txn.and_then(ops);
                let r = match tokio::time::timeout(o.timeout, client.txn(txn)).await {
                    Err(_) => Err(format!("transaction timed out after {:?}", o.timeout)),
                    Ok(Err(e)) => Err(e.to_string()),
                    Ok(Ok(resp)) => Ok(resp.succeeded()),
                };
                let _ = reply.send(r);
            }
            Request::Campaign {
                id,
                ttl,
                lost,
                reply,
            } => {
                let r = tokio::time::timeout(o.timeout, campaign(client, o, id, ttl, lost)).await;
                let _ =
                    reply.send(r.unwrap_or_else(|_| {
                        Err(format!("campaign timed out after {:?}", o.timeout))
                    }));
            }
            Request::Resign { lease, reply } => {
                let r = tokio::time::timeout(o.timeout, client.lease_revoke(lease)).await;
                let _ = reply.send(match r {
                    Err(_) => Err(format!("lease revoke timed out after {:?}", o.timeout)),
                    Ok(r) => r.map(drop).map_err(|e| e.to_string()),
                });
            }
        }
    }

    async fn campaign(
        client: &mut Client,
        o: &EtcdOptions,
        id: String,
        ttl: Duration,
        lost: Arc<AtomicBool>,
    ) -> Result<Option<(Guard, i64)>, String> {
        let ttl_s = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let grant = client
            .lease_grant(ttl_s, None)
            .await
            .map_err(|e| format!("lease grant: {e}"))?;
        if grant.ttl() > ttl_s {
            tracing::warn!(
                asked_s = ttl_s,
                granted_s = grant.ttl(),
                "etcd granted a longer leadership lease than asked (its minimum is 1.5 x its \
                 --election-timeout, in whole seconds); a dead leader is replaced that much later"
            );
        }
        let lease = grant.id();
        let key = o.leader_key();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                id,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let resp = client
            .txn(txn)
            .await
            .map_err(|e| format!("campaign: {e}"))?;
        if !resp.succeeded() {
            let _ = client.lease_revoke(lease).await;
            return Ok(None);
        }
        // The key was created by this transaction: its create revision is the txn's.
        let create_revision = resp.header().map_or(0, |h| h.revision());
        let (mut keeper, mut stream) = client
            .lease_keep_alive(lease)
            .await
            .map_err(|e| format!("lease keep-alive: {e}"))?;
        tokio::spawn(async move {
            // A renewal every TTL/3. One slow answer is not a lost lease: the leadership is
            // given up when etcd says the lease is gone, when the stream ends, or when no
            // renewal succeeded for a whole TTL (the lease may have expired; writes are fenced
            // in any case).
            let period = (ttl / 3).max(Duration::from_millis(100));
            let mut renewed = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(period).await;
                let sent = tokio::time::Instant::now();
                if keeper.keep_alive().await.is_err() {
                    break;
                }
                match tokio::time::timeout(period, stream.message()).await {
                    Ok(Ok(Some(r))) if r.ttl() > 0 => renewed = sent,
                    Ok(Ok(Some(_)) | Ok(None)) => break,
                    Ok(Err(_)) | Err(_) if renewed.elapsed() >= ttl => break,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "leadership lease renewal failed; retrying")
                    }
                    Err(_) => tracing::warn!(
                        waited_ms = period.as_millis(),
                        "leadership lease renewal unanswered; retrying"
                    ),
                }
            }
            lost.store(true, Ordering::Release);
        });
        Ok(Some((
            Guard {
                key,
                create_revision,
            },
            lease,
        )))
    }
}

/// The etcd backend. See the module docs.
#[derive(Debug)]
pub struct Etcd {
    options: EtcdOptions,
    #[cfg(feature = "etcd")]
    requests: mpsc::Sender<client::Request>,
    guard: Option<Guard>,
    /// The lease of this replica's leadership, while it leads.
    lease: Option<i64>,
    /// Set by the keep-alive when the leadership is lost.
    lost: Arc<AtomicBool>,
    /// etcd requests made (reads and transactions), for `srmig bench control`.
    requests_made: u64,
}

impl Etcd {
    /// Connects to the cluster (fails if no endpoint answers within the timeout).
    pub fn connect(options: &EtcdOptions) -> Result<Etcd, StoreError> {
        #[cfg(feature = "etcd")]
        {
            let requests = client::spawn(options).map_err(|e| err(options, e))?;
            Ok(Etcd {
                options: options.clone(),
                requests,
                guard: None,
                lease: None,
                lost: Arc::new(AtomicBool::new(false)),
                requests_made: 0,
            })
        }
        #[cfg(not(feature = "etcd"))]
        {
            Err(err(
                options,
                "this controller was built without the `etcd` feature".to_owned(),
            ))
        }
    }

    /// From now on, writes apply only while `guard` holds (see the module docs).
    pub fn set_guard(&mut self, guard: Option<Guard>) {
        self.guard = guard;
    }

    /// etcd requests made so far.
    pub fn requests_made(&self) -> u64 {
        self.requests_made
    }

    /// Tries once to become the leader as `id` with a lease of `ttl` (see the module docs).
    /// On success every later write is guarded by the leadership; `false`: another replica
    /// leads.
    #[cfg(feature = "etcd")]
    pub fn campaign(&mut self, id: &str, ttl: Duration) -> Result<bool, StoreError> {
        let lost = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        self.requests_made += 1;
        self.send(client::Request::Campaign {
            id: id.to_owned(),
            ttl,
            lost: lost.clone(),
            reply: tx,
        })?;
        let won = self.wait(&rx)?;
        Ok(match won {
            Some((guard, lease)) => {
                self.guard = Some(guard);
                self.lease = Some(lease);
                self.lost = lost;
                true
            }
            None => false,
        })
    }

    /// The replica id holding the leadership now, if any (one read of one key).
    #[cfg(feature = "etcd")]
    pub fn leader(&mut self) -> Result<Option<String>, StoreError> {
        let (tx, rx) = mpsc::channel();
        self.requests_made += 1;
        self.send(client::Request::Leader(tx))?;
        Ok(self
            .wait(&rx)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Gives the leadership up (revokes its lease; the key goes with it).
    #[cfg(feature = "etcd")]
    pub fn resign(&mut self) -> Result<(), StoreError> {
        let Some(lease) = self.lease.take() else {
            return Ok(());
        };
        let (tx, rx) = mpsc::channel();
        self.requests_made += 1;
        self.send(client::Request::Resign { lease, reply: tx })?;
        self.wait(&rx)
    }

    /// A flag the keep-alive sets once this replica's leadership is lost (never set while
    /// it does not lead).
    pub fn lost_flag(&self) -> Arc<AtomicBool> {
        self.lost.clone()
    }

    /// Campaigns until this replica leads (`options.replica`), logging who leads meanwhile;
    /// a single controller (`replica` unset) returns at once.
    #[cfg(feature = "etcd")]
    pub fn lead(&mut self) -> Result<(), StoreError> {
        let Some((id, ttl)) = self.options.replica.clone() else {
            return Ok(());
        };
        let mut last_leader = None;
        loop {
            // One key read per poll; a campaign (three requests) only once nobody leads.
            let leader = self.leader()?;
            if leader.is_none() {
                if self.campaign(&id, ttl)? {
                    tracing::info!(replica = %id, store = %self.describe(), "leading");
                    return Ok(());
                }
                continue;
            }
            if leader != last_leader {
                tracing::info!(
                    replica = %id,
                    leader = leader.as_deref().unwrap_or("none"),
                    "standby: another replica leads"
                );
                last_leader = leader;
            }
            std::thread::sleep(STANDBY_POLL);
        }
    }

    /// Without the `etcd` feature there is nothing to lead.
    #[cfg(not(feature = "etcd"))]
    pub fn lead(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    #[cfg(feature = "etcd")]
    fn send(&self, request: client::Request) -> Result<(), StoreError> {
        self.requests
            .send(request)
            .map_err(|_| err(&self.options, "the etcd client thread ended".into()))
    }

    #[cfg(feature = "etcd")]
    fn wait<T>(&self, rx: &mpsc::Receiver<Result<T, String>>) -> Result<T, StoreError> {
        rx.recv()
            .map_err(|_| err(&self.options, "the etcd client thread ended".into()))?
            .map_err(|e| err(&self.options, e))
    }

    #[cfg(feature = "etcd")]
    fn load_raw(&mut self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let (tx, rx) = mpsc::channel();
        self.requests_made += 1;
        self.send(client::Request::Load(tx))?;
        self.wait(&rx)
    }
}

fn err(options: &EtcdOptions, message: String) -> StoreError {
    StoreError::Db {
        store: options.describe(),
        source: message.into(),
    }
}

impl Backend for Etcd {
    fn describe(&self) -> String {
        self.options.describe()
    }

    fn leadership_lost(&self) -> Option<Arc<AtomicBool>> {
        self.lease.map(|_| self.lost.clone())
    }

    #[cfg(feature = "etcd")]
    fn load(&mut self) -> Result<Rows, StoreError> {
        let kvs = self.load_raw()?;
        let mut rows = Rows::default();
        for (key, value) in kvs {
            // Keys under the prefix outside the tables (e.g. the election's) are not ours.
            match self.options.row(&key) {
                Ok(Some(row)) => {
                    rows.insert(row, value);
                }
                Ok(None) => {}
                Err(why) => {
                    return Err(StoreError::StrayKey {
                        store: self.options.describe(),
                        key,
                        why,
                    })
                }
            }
        }
        Ok(rows)
    }

    #[cfg(not(feature = "etcd"))]
    fn load(&mut self) -> Result<Rows, StoreError> {
        Err(err(
            &self.options,
            "built without the `etcd` feature".into(),
        ))
    }

    #[cfg(feature = "etcd")]
    fn apply(&mut self, puts: &[(RowKey, &[u8])], deletes: &[RowKey]) -> Result<(), StoreError> {
        // Meta rows last, so a split save publishes its new ids and generations last.
        let mut ops: Vec<(RowKey, Option<Vec<u8>>)> = puts
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.to_vec())))
            .chain(deletes.iter().map(|k| (k.clone(), None)))
            .collect();
        ops.sort_by_key(|(k, _)| matches!(k, RowKey::Meta(_)));
        for chunk in ops.chunks(MAX_TXN_OPS) {
            let (tx, rx) = mpsc::channel();
            self.requests_made += 1;
            let request = client::Request::Apply {
                ops: chunk
                    .iter()
                    .map(|(k, v)| (self.options.key(k), v.clone()))
                    .collect(),
                guard: self.guard.clone(),
                reply: tx,
            };
            self.send(request)?;
            let applied = self.wait(&rx)?;
            if !applied {
                return Err(StoreError::Fenced {
                    store: self.options.describe(),
                    why: "this controller's leadership key is gone or was taken over: \
                          nothing was written"
                        .into(),
                });
            }
        }
        Ok(())
    }

    #[cfg(not(feature = "etcd"))]
    fn apply(&mut self, _: &[(RowKey, &[u8])], _: &[RowKey]) -> Result<(), StoreError> {
        Err(err(
            &self.options,
            "built without the `etcd` feature".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_foreign_keys_are_ignored() {
        let o = EtcdOptions::new(vec!["http://127.0.0.1:2379".into()]);
        for row in [
            RowKey::Host("h1".into()),
            RowKey::Vm("web-1".into()),
            RowKey::Migration(42),
            RowKey::Meta("next_id".into()),
        ] {
            let key = o.key(&row);
            assert!(key.starts_with("/srmig/"), "{key}");
            assert_eq!(o.row(&key), Ok(Some(row)));
        }
        assert_eq!(
            o.key(&RowKey::Migration(7)),
            "/srmig/migrations/00000000000000000007"
        );
        for foreign in [
            "/srmig/leader/1234",
            "/srmig/leader",
            "/other/hosts/h1",
            "/srmig/hosts",
        ] {
            assert_eq!(o.row(foreign), Ok(None), "{foreign}");
        }
        // Inside the tables, a key the store never writes is refused, not merged or dropped.
        for (stray, why) in [
            ("/srmig/hosts/", "a hosts key without a name"),
            ("/srmig/migrations/x", "a migration key that is not an id"),
            (
                "/srmig/migrations/7",
                "migration ids are written as 20 digits: /srmig/migrations/00000000000000000007",
            ),
            (
                "/srmig/migrations/+7",
                "migration ids are written as 20 digits: /srmig/migrations/00000000000000000007",
            ),
        ] {
            assert_eq!(o.row(stray), Err(why.to_owned()), "{stray}");
        }
    }
}
