//! The embedded backend: one redb file. Values are stored with their revisions prefixed
//! (create, mod: 16 bytes little-endian) so a single table serves get, range and compare.
//! A second table keeps the changes of the last [`HISTORY`] revisions for watches from a
//! revision; live watchers get changes from an in-process broadcast.
//!
//! Leases live in this process only: they end with it. Leased keys are also listed in a table
//! of their own, so that the next open deletes those an earlier process left (its leases
//! ended with it). A sweeper thread ends expired leases.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use redb::{Database, ReadableTable, TableDefinition};
use tokio::sync::broadcast;

use crate::{
    Compare, Event, KeyValue, LeaseId, Op, Result, Store, StoreError, Txn, TxnResult, Watch,
};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// Leased keys and their lease.
const LEASED: TableDefinition<&str, i64> = TableDefinition::new("leased");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The changes of each revision (see `encode_events`).
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const REVISION: &str = "revision";
/// Revisions whose changes are kept for `watch_from`.
pub const HISTORY: u64 = 10_000;

/// The shortest lease, as etcd's.
const MIN_LEASE_TTL: Duration = Duration::from_secs(2);
/// How often the sweeper looks for expired leases.
const SWEEP_EVERY: Duration = Duration::from_millis(200);

pub struct RedbStore {
    shared: Arc<Shared>,
}

struct Shared {
    db: Database,
    events: broadcast::Sender<Event>,
    /// Held by a writer from its start until its events are sent, so that watchers get
    /// revisions in order and `watch_from` joins the history to the live changes seamlessly.
    writing: Mutex<()>,
    leases: Mutex<Leases>,
}

#[derive(Default)]
struct Leases {
    last_id: i64,
    live: HashMap<i64, Lease>,
    /// Each leased key's lease.
    owner: HashMap<String, i64>,
}

struct Lease {
    ttl: Duration,
    deadline: Instant,
}

fn backend<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn encode(create: u64, modrev: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + value.len());
    out.extend_from_slice(&create.to_le_bytes());
    out.extend_from_slice(&modrev.to_le_bytes());
    out.extend_from_slice(value);
    out
}

fn decode(key: &str, raw: &[u8]) -> KeyValue {
    let create = u64::from_le_bytes(raw[0..8].try_into().expect("8 bytes"));
    let modrev = u64::from_le_bytes(raw[8..16].try_into().expect("8 bytes"));
    KeyValue {
        key: key.to_string(),
        value: raw[16..].to_vec(),
        create_revision: create,
        mod_revision: modrev,
    }
}

/// One revision's changes: per event a tag (0 put, 1 delete), the key's length (u32 LE) and
/// the key, and for a put its create revision (u64 LE), the value's length and the value.
fn encode_events(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::new();
    for event in events {
        let key = event.key().as_bytes();
        out.push(u8::from(matches!(event, Event::Delete { .. })));
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        if let Event::Put(kv) = event {
            out.extend_from_slice(&kv.create_revision.to_le_bytes());
            out.extend_from_slice(&(kv.value.len() as u32).to_le_bytes());
            out.extend_from_slice(&kv.value);
        }
    }
    out
}

fn decode_events(revision: u64, mut raw: &[u8]) -> Option<Vec<Event>> {
    fn take<'a>(raw: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (raw.get(..n)?, raw.get(n..)?);
        *raw = rest;
        Some(head)
    }
    fn u32_at(raw: &mut &[u8]) -> Option<u32> {
        Some(u32::from_le_bytes(take(raw, 4)?.try_into().ok()?))
    }
    let mut events = Vec::new();
    while let Some(tag) = take(&mut raw, 1) {
        let len = u32_at(&mut raw)? as usize;
        let key = String::from_utf8(take(&mut raw, len)?.to_vec()).ok()?;
        events.push(if tag[0] == 0 {
            let create = u64::from_le_bytes(take(&mut raw, 8)?.try_into().ok()?);
            let len = u32_at(&mut raw)? as usize;
            Event::Put(KeyValue {
                key,
                value: take(&mut raw, len)?.to_vec(),
                create_revision: create,
                mod_revision: revision,
            })
        } else {
            Event::Delete { key, revision }
        });
    }
    Some(events)
}

impl RedbStore {
    pub fn open(path: &Path) -> Result<Self> {
        let db = Database::create(path).map_err(|e| StoreError::Open {
            path: path.display().to_string(),
            source: Box::new(e),
        })?;
        let write = db.begin_write().map_err(backend)?;
        {
            write.open_table(KV).map_err(backend)?;
            write.open_table(META).map_err(backend)?;
            write.open_table(LOG).map_err(backend)?;
            write.open_table(LEASED).map_err(backend)?;
        }
        write.commit().map_err(backend)?;
        let (events, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            db,
            events,
            writing: Mutex::new(()),
            leases: Mutex::default(),
        });
        // The leases of an earlier process ended with it.
        let left: Vec<Op> = {
            let read = shared.db.begin_read().map_err(backend)?;
            let leased = read.open_table(LEASED).map_err(backend)?;
            let mut keys = Vec::new();
            for entry in leased.iter().map_err(backend)? {
                keys.push(Op::Delete(entry.map_err(backend)?.0.value().to_string()));
            }
            keys
        };
        if !left.is_empty() {
            let writing = shared.writing();
            shared.txn_locked(
                &writing,
                Txn {
                    success: left,
                    ..Txn::default()
                },
            )?;
        }
        let weak = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("redb-leases".into())
            .spawn(move || sweep(weak))
            .map_err(backend)?;
        Ok(Self { shared })
    }
}

/// Ends expired leases until the store is dropped.
fn sweep(shared: Weak<Shared>) {
    loop {
        std::thread::sleep(SWEEP_EVERY);
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let expired: Vec<i64> = {
            let leases = shared.leases();
            let now = Instant::now();
            leases
                .live
                .iter()
                .filter(|(_, l)| l.deadline <= now)
                .map(|(id, _)| *id)
                .collect()
        };
        for id in expired {
            if let Err(e) = shared.end_lease(id) {
                tracing::warn!("ending expired lease {id}: {e}");
            }
        }
    }
}

impl Shared {
    fn writing(&self) -> MutexGuard<'_, ()> {
        self.writing.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn leases(&self) -> MutexGuard<'_, Leases> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets the lease and deletes its keys, in one transaction.
    fn end_lease(&self, id: i64) -> Result<()> {
        let writing = self.writing();
        let keys: Vec<Op> = {
            let mut leases = self.leases();
            if leases.live.remove(&id).is_none() {
                return Ok(());
            }
            leases
                .owner
                .iter()
                .filter(|(_, lease)| **lease == id)
                .map(|(key, _)| Op::Delete(key.clone()))
                .collect()
        };
        self.txn_locked(
            &writing,
            Txn {
                success: keys,
                ..Txn::default()
            },
        )?;
        Ok(())
    }
}

impl Store for RedbStore {
    fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.shared.get(key)
    }

    fn range(&self, prefix: &str) -> Result<Vec<KeyValue>> {
        self.shared.range(prefix)
    }

    fn txn(&self, txn: Txn) -> Result<TxnResult> {
        let writing = self.shared.writing();
        self.shared.txn_locked(&writing, txn)
    }

    fn revision(&self) -> Result<u64> {
        self.shared.revision()
    }

    fn watch(&self, prefix: &str) -> Watch {
        Watch::broadcast(prefix, VecDeque::new(), self.shared.events.subscribe())
    }

    fn watch_from(&self, prefix: &str, revision: u64) -> Result<Watch> {
        self.shared.watch_from(prefix, revision)
    }

    fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        let mut leases = self.shared.leases();
        leases.last_id += 1;
        let id = leases.last_id;
        let ttl = Duration::from_secs(ttl.max(MIN_LEASE_TTL).as_secs());
        let deadline = Instant::now() + ttl;
        leases.live.insert(id, Lease { ttl, deadline });
        Ok(LeaseId(id))
    }

    fn lease_keep_alive(&self, lease: LeaseId) -> Result<bool> {
        let mut leases = self.shared.leases();
        let now = Instant::now();
        match leases.live.get_mut(&lease.0) {
            Some(l) if l.deadline > now => {
                l.deadline = now + l.ttl;
                Ok(true)
            }
            // Expired and not swept yet: gone all the same.
            _ => Ok(false),
        }
    }

    fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        self.shared.end_lease(lease.0)
    }
}

impl Shared {
    fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let read = self.db.begin_read().map_err(backend)?;
        let table = read.open_table(KV).map_err(backend)?;
        let value = table.get(key).map_err(backend)?;
        Ok(value.map(|v| decode(key, v.value())))
    }

    fn range(&self, prefix: &str) -> Result<Vec<KeyValue>> {
        let read = self.db.begin_read().map_err(backend)?;
        let table = read.open_table(KV).map_err(backend)?;
        let mut out = Vec::new();
        for entry in table.range(prefix..).map_err(backend)? {
            let (k, v) = entry.map_err(backend)?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push(decode(k.value(), v.value()));
        }
        Ok(out)
    }

    /// A transaction, under the writers' lock (`_writing`).
    fn txn_locked(&self, _writing: &MutexGuard<'_, ()>, txn: Txn) -> Result<TxnResult> {
        let write = self.db.begin_write().map_err(backend)?;
        // Leased keys written (with their lease) and keys no longer leased, for `leases`
        // once committed.
        let mut leased: Vec<(String, i64)> = Vec::new();
        let mut unleased: Vec<String> = Vec::new();
        let mut events = Vec::new();
        let (succeeded, revision) = {
            let mut table = write.open_table(KV).map_err(backend)?;
            let mut meta = write.open_table(META).map_err(backend)?;
            let current = meta
                .get(REVISION)
                .map_err(backend)?
                .map(|v| v.value())
                .unwrap_or(0);
            let mut succeeded = true;
            for compare in &txn.compares {
                let holds = match compare {
                    Compare::Absent(key) => table.get(key.as_str()).map_err(backend)?.is_none(),
                    Compare::ModRevision(key, rev) => table
                        .get(key.as_str())
                        .map_err(backend)?
                        .is_some_and(|v| decode(key, v.value()).mod_revision == *rev),
                    Compare::Value(key, want) => table
                        .get(key.as_str())
                        .map_err(backend)?
                        .is_some_and(|v| &v.value()[16..] == want.as_slice()),
                };
                if !holds {
                    succeeded = false;
                    break;
                }
            }
            let ops = if succeeded {
                &txn.success
            } else {
                &txn.failure
            };
            // The revision the writes get; it becomes the store's only if something changed.
            let revision = current + 1;
            let mut leased_table = write.open_table(LEASED).map_err(backend)?;
            for op in ops {
                match op {
                    Op::Put(key, value) | Op::PutLeased(key, value, _) => {
                        let create = table
                            .get(key.as_str())
                            .map_err(backend)?
                            .map(|v| decode(key, v.value()).create_revision)
                            .unwrap_or(revision);
                        table
                            .insert(key.as_str(), encode(create, revision, value).as_slice())
                            .map_err(backend)?;
                        if let Op::PutLeased(_, _, lease) = op {
                            if !self.leases().live.contains_key(&lease.0) {
                                // Dropping `write` aborts it: nothing of this transaction stays.
                                return Err(StoreError::Backend(format!(
                                    "lease {} not found (expired or revoked)",
                                    lease.0
                                )));
                            }
                            leased_table
                                .insert(key.as_str(), lease.0)
                                .map_err(backend)?;
                            leased.push((key.clone(), lease.0));
                        } else if leased_table
                            .remove(key.as_str())
                            .map_err(backend)?
                            .is_some()
                        {
                            unleased.push(key.clone());
                        }
                        events.push(Event::Put(KeyValue {
                            key: key.clone(),
                            value: value.clone(),
                            create_revision: create,
                            mod_revision: revision,
                        }));
                    }
                    Op::Delete(key) => {
                        if table.remove(key.as_str()).map_err(backend)?.is_some() {
                            if leased_table
                                .remove(key.as_str())
                                .map_err(backend)?
                                .is_some()
                            {
                                unleased.push(key.clone());
                            }
                            events.push(Event::Delete {
                                key: key.clone(),
                                revision,
                            });
                        }
                    }
                    Op::DeletePrefix(prefix) => {
                        let keys: Vec<String> = table
                            .range(prefix.as_str()..)
                            .map_err(backend)?
                            .map_while(|e| e.ok().map(|(k, _)| k.value().to_string()))
                            .take_while(|k| k.starts_with(prefix.as_str()))
                            .collect();
                        for key in keys {
                            table.remove(key.as_str()).map_err(backend)?;
                            if leased_table
                                .remove(key.as_str())
                                .map_err(backend)?
                                .is_some()
                            {
                                unleased.push(key.clone());
                            }
                            events.push(Event::Delete { key, revision });
                        }
                    }
                }
            }
            if events.is_empty() {
                (succeeded, current)
            } else {
                meta.insert(REVISION, revision).map_err(backend)?;
                let mut log = write.open_table(LOG).map_err(backend)?;
                log.insert(revision, encode_events(&events).as_slice())
                    .map_err(backend)?;
                // One revision in, the oldest one out: the log keeps HISTORY revisions.
                if let Some(old) = revision.checked_sub(HISTORY) {
                    log.remove(old).map_err(backend)?;
                }
                (succeeded, revision)
            }
        };
        if events.is_empty() {
            write.abort().map_err(backend)?;
        } else {
            write.commit().map_err(backend)?;
            let mut leases = self.leases();
            for key in unleased {
                leases.owner.remove(&key);
            }
            leases.owner.extend(leased);
        }
        for event in events {
            // Nobody listening is fine.
            let _ = self.events.send(event);
        }
        Ok(TxnResult {
            succeeded,
            revision,
        })
    }

    fn revision(&self) -> Result<u64> {
        let read = self.db.begin_read().map_err(backend)?;
        let meta = read.open_table(META).map_err(backend)?;
        Ok(meta
            .get(REVISION)
            .map_err(backend)?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    fn watch_from(&self, prefix: &str, revision: u64) -> Result<Watch> {
        // No write in between: what the log holds now and what the broadcast sends from now
        // on meet exactly.
        let _writing = self.writing();
        let rx = self.events.subscribe();
        let read = self.db.begin_read().map_err(backend)?;
        let log = read.open_table(LOG).map_err(backend)?;
        let mut backlog = VecDeque::new();
        for entry in log.range(revision..).map_err(backend)? {
            let (rev, raw) = entry.map_err(backend)?;
            let events = decode_events(rev.value(), raw.value()).ok_or_else(|| {
                StoreError::Backend(format!("revision {} in the log is unreadable", rev.value()))
            })?;
            backlog.extend(events.into_iter().filter(|e| e.key().starts_with(prefix)));
        }
        Ok(Watch::broadcast(prefix, backlog, rx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, RedbStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("db")).unwrap();
        (dir, store)
    }

    #[test]
    fn put_get_range_and_revisions() {
        let (_d, s) = store();
        let r1 = s.put("/a/1", b"x".to_vec()).unwrap();
        let r2 = s.put("/a/2", b"y".to_vec()).unwrap();
        s.put("/b/1", b"z".to_vec()).unwrap();
        assert_eq!((r1, r2), (1, 2));
        let kv = s.get("/a/1").unwrap().unwrap();
        assert_eq!(kv.value, b"x");
        let keys: Vec<_> = s.range("/a/").unwrap().into_iter().map(|k| k.key).collect();
        assert_eq!(keys, ["/a/1", "/a/2"]);
        s.put("/a/1", b"x2".to_vec()).unwrap();
        let kv = s.get("/a/1").unwrap().unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision), (1, 4));
    }

    #[test]
    fn txn_compare_and_swap() {
        let (_d, s) = store();
        let create = |v: &[u8]| {
            s.txn(
                Txn::new()
                    .when(Compare::Absent("/n".into()))
                    .then(Op::Put("/n".into(), v.to_vec())),
            )
            .unwrap()
        };
        assert!(create(b"first").succeeded);
        assert!(!create(b"second").succeeded);
        assert_eq!(s.get("/n").unwrap().unwrap().value, b"first");
        let rev = s.get("/n").unwrap().unwrap().mod_revision;
        let stale = s
            .txn(
                Txn::new()
                    .when(Compare::ModRevision("/n".into(), rev + 5))
                    .then(Op::Delete("/n".into())),
            )
            .unwrap();
        assert!(!stale.succeeded);
        let fresh = s
            .txn(
                Txn::new()
                    .when(Compare::ModRevision("/n".into(), rev))
                    .then(Op::Delete("/n".into())),
            )
            .unwrap();
        assert!(fresh.succeeded);
        assert!(s.get("/n").unwrap().is_none());
    }

    #[test]
    fn delete_prefix_and_reopen_keeps_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let s = RedbStore::open(&path).unwrap();
            s.put("/t/1", vec![1]).unwrap();
            s.put("/t/2", vec![2]).unwrap();
            s.put("/u/1", vec![3]).unwrap();
            s.txn(Txn::new().then(Op::DeletePrefix("/t/".into())))
                .unwrap();
        }
        let s = RedbStore::open(&path).unwrap();
        assert!(s.range("/t/").unwrap().is_empty());
        assert_eq!(s.range("/u/").unwrap().len(), 1);
        assert_eq!(s.revision().unwrap(), 4);
    }

    #[tokio::test]
    async fn watch_sees_changes_under_prefix_only() {
        let (_d, s) = store();
        let mut w = s.watch("/w/");
        s.put("/x/1", vec![0]).unwrap();
        s.put("/w/1", vec![1]).unwrap();
        s.delete("/w/1").unwrap();
        match w.next().await.unwrap() {
            Event::Put(kv) => assert_eq!(kv.key, "/w/1"),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            w.next().await.unwrap(),
            Event::Delete {
                key: "/w/1".into(),
                revision: 3
            }
        );
    }

    #[tokio::test]
    async fn watch_from_before_the_log_starts_at_its_oldest_revision() {
        let (_d, s) = store();
        s.put("/k/1", vec![1]).unwrap();
        let r2 = s.put("/k/2", vec![2]).unwrap();
        // Revision 1 falls out of the log, as it does HISTORY revisions later.
        let write = s.shared.db.begin_write().unwrap();
        write.open_table(LOG).unwrap().remove(1).unwrap();
        write.commit().unwrap();
        let mut w = s.watch_from("/k/", 1).unwrap();
        assert_eq!(w.next().await.unwrap().revision(), r2);
    }
}
