//! Hyper's state store: revisioned keys, prefix ranges, compare-and-swap transactions and
//! watches, shaped like etcd's v3 API so the fleet can swap the embedded backend for etcd.
//!
//! Every write bumps one store-wide revision; each key remembers the revision of its creation
//! and of its last change, which is what `Compare` tests against.

mod redb_store;

pub use redb_store::RedbStore;
use tokio::sync::broadcast;

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
    Delete(String),
    DeletePrefix(String),
}

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
    /// Changes from now on under `prefix`.
    fn watch(&self, prefix: &str) -> Watch;

    fn put(&self, key: &str, value: Vec<u8>) -> Result<u64> {
        Ok(self
            .txn(Txn::new().then(Op::Put(key.into(), value)))?
            .revision)
    }
    fn delete(&self, key: &str) -> Result<u64> {
        Ok(self.txn(Txn::new().then(Op::Delete(key.into())))?.revision)
    }
}

/// A stream of events under one prefix.
pub struct Watch {
    prefix: String,
    rx: broadcast::Receiver<Event>,
}

impl Watch {
    /// The next event under the prefix; `None` when the store is gone. A watcher that fell
    /// behind by more than the channel holds skips ahead, like an etcd watch that was compacted.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            match self.rx.recv().await {
                Ok(event) => {
                    let key = match &event {
                        Event::Put(kv) => &kv.key,
                        Event::Delete { key, .. } => key,
                    };
                    if key.starts_with(&self.prefix) {
                        return Some(event);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
