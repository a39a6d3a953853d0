//! Hyper's state store: revisioned keys, prefix ranges, compare-and-swap transactions and
//! watches, shaped like etcd's v3 API so the fleet can swap the embedded backend for etcd.
//!
//! Every write bumps one store-wide revision; each key remembers the revision of its creation
//! and of its last change, which is what `Compare` tests against.
//!
//! What every backend guarantees (`conformance.rs` checks both against the same tests):
//! - A transaction that changes something (a put, or a delete of a key that exists) moves the
//!   revision forward, and every key it writes gets that revision as its `mod_revision`; one
//!   that changes nothing (a failed compare without `otherwise` ops, deletes of absent keys)
//!   leaves it where it was and reports the current one.
//! - Revisions only grow, but callers must not count on their values: redb's start at 1 and
//!   have no gaps; etcd's are the cluster's (a fresh etcd is already at 1, and every other
//!   writer of that etcd, in another namespace too, moves them). Compare them, store them,
//!   watch from them; never do arithmetic on them.
//! - A watch delivers every change under its prefix in revision order, and within one
//!   transaction in the order of its ops (a prefix delete: its keys in key order).
//!
//! Backends: [`RedbStore`] (embedded, one file) and, with the `etcd` feature, `EtcdStore`.

#[cfg(test)]
mod conformance;
pub mod etcd_server;
#[cfg(feature = "etcd")]
mod etcd_store;
mod redb_store;

use std::collections::VecDeque;

#[cfg(feature = "etcd")]
pub use etcd_store::EtcdStore;
pub use redb_store::RedbStore;
use tokio::sync::broadcast;
#[cfg(feature = "etcd")]
use tokio::sync::mpsc;

/// A key and its value, with etcd's revision bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: u64,
    pub mod_revision: u64,
}

/// A condition a transaction checks before it applies its writes.
#[derive(Debug, Clone)]
pub enum Compare {
    /// The key does not exist.
    Absent(String),
    /// The key exists and was last changed at this revision.
    ModRevision(String, u64),
    /// The key holds exactly this value.
    Value(String, Vec<u8>),
}

/// A write inside a transaction.
#[derive(Debug, Clone)]
pub enum Op {
    Put(String, Vec<u8>),
    /// A put whose key lives as long as the lease: deleted (a delete event) when the lease
    /// expires or is revoked. A later plain `Put` of the key detaches it from the lease.
    PutLeased(String, Vec<u8>, LeaseId),
    Delete(String),
    DeletePrefix(String),
}

/// A lease (etcd's): keys put under it ([`Op::PutLeased`]) go when its holder stops renewing it
/// within its time to live, or revokes it. How a node says it is alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseId(pub i64);

/// All-or-nothing: when every compare holds, `success` is applied, else `failure`.
#[derive(Debug, Clone, Default)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn when(mut self, compare: Compare) -> Self {
        self.compares.push(compare);
        self
    }
    pub fn then(mut self, op: Op) -> Self {
        self.success.push(op);
        self
    }
    pub fn otherwise(mut self, op: Op) -> Self {
        self.failure.push(op);
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResult {
    pub succeeded: bool,
    pub revision: u64,
}

/// A change seen by a watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Put(KeyValue),
    Delete { key: String, revision: u64 },
}

impl Event {
    pub fn key(&self) -> &str {
        match self {
            Event::Put(kv) => &kv.key,
            Event::Delete { key, .. } => key,
        }
    }

    /// The revision of the transaction that made this change.
    pub fn revision(&self) -> u64 {
        match self {
            Event::Put(kv) => kv.mod_revision,
            Event::Delete { revision, .. } => *revision,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store backend failed: {0}")]
    Backend(String),
    #[error("cannot open store at {path}")]
    Open {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The store every hyperd role uses. Calls are short and synchronous (redb commits in
/// microseconds to milliseconds); callers on the async runtime batch writes into one `txn`.
pub trait Store: Send + Sync {
    fn get(&self, key: &str) -> Result<Option<KeyValue>>;
    /// Every key starting with `prefix`, in key order.
    fn range(&self, prefix: &str) -> Result<Vec<KeyValue>>;
    fn txn(&self, txn: Txn) -> Result<TxnResult>;
    /// The revision of the last write.
    fn revision(&self) -> Result<u64>;
    /// Changes from now on under `prefix`: every write that returns after this call is seen.
    fn watch(&self, prefix: &str) -> Watch;
    /// Changes under `prefix` from `revision` on (inclusive), those already made first, in
    /// order, then live ones: a reader lists at revision R, then watches from R + 1, and misses
    /// nothing. History is kept for a while only (redb: the last [`REDB_HISTORY`] revisions;
    /// etcd: until the operator compacts it): a watch from before what is left starts at the
    /// oldest change still known, as one that fell behind does.
    fn watch_from(&self, prefix: &str, revision: u64) -> Result<Watch>;

    /// A new lease that lives `ttl` (whole seconds, at least 2: etcd's floor) unless renewed.
    fn lease_grant(&self, ttl: std::time::Duration) -> Result<LeaseId>;
    /// Renews the lease for its whole time to live again. `false`: it has expired or was
    /// revoked, and its keys are gone.
    fn lease_keep_alive(&self, lease: LeaseId) -> Result<bool>;
    /// Ends the lease now, deleting its keys; an unknown or expired lease is no error.
    fn lease_revoke(&self, lease: LeaseId) -> Result<()>;

    fn put(&self, key: &str, value: Vec<u8>) -> Result<u64> {
        Ok(self
            .txn(Txn::new().then(Op::Put(key.into(), value)))?
            .revision)
    }
    fn delete(&self, key: &str) -> Result<u64> {
        Ok(self.txn(Txn::new().then(Op::Delete(key.into())))?.revision)
    }
}

pub use redb_store::HISTORY as REDB_HISTORY;

/// A stream of events under one prefix.
pub struct Watch {
    prefix: String,
    /// Changes made before the watch began (a watch from a revision), delivered first.
    backlog: VecDeque<Event>,
    source: Source,
}

enum Source {
    /// The embedded store's in-process fan-out of every change.
    Broadcast(broadcast::Receiver<Event>),
    /// A backend's own task feeding this watch (etcd's watch stream).
    #[cfg(feature = "etcd")]
    Channel(mpsc::Receiver<Event>),
}

impl Watch {
    fn broadcast(prefix: &str, backlog: VecDeque<Event>, rx: broadcast::Receiver<Event>) -> Self {
        Self {
            prefix: prefix.to_string(),
            backlog,
            source: Source::Broadcast(rx),
        }
    }

    #[cfg(feature = "etcd")]
    fn channel(prefix: &str, rx: mpsc::Receiver<Event>) -> Self {
        Self {
            prefix: prefix.to_string(),
            backlog: VecDeque::new(),
            source: Source::Channel(rx),
        }
    }

    /// The next event under the prefix; `None` when the store is gone. A watcher that fell
    /// behind by more than the backend keeps (redb: 4096 events in memory; etcd: its history
    /// until compacted) skips ahead: re-read what it needs with `range` then.
    pub async fn next(&mut self) -> Option<Event> {
        if let Some(event) = self.backlog.pop_front() {
            return Some(event);
        }
        loop {
            let event = match &mut self.source {
                Source::Broadcast(rx) => match rx.recv().await {
                    Ok(event) => event,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                #[cfg(feature = "etcd")]
                Source::Channel(rx) => rx.recv().await?,
            };
            if event.key().starts_with(&self.prefix) {
                return Some(event);
            }
        }
    }
}
