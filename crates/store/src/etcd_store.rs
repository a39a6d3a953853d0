//! The fleet's backend: etcd (v3 API, through `etcd-client`).
//!
//! - **Keys** live under a namespace (`/hyper` unless told otherwise), so one etcd can serve
//!   several things: the store's key `/quotas/t1` is etcd's `/hyper/quotas/t1`. Store keys
//!   begin with `/` (all of Hyper's do; others are refused), a prefix that does not matches
//!   nothing, and the empty prefix is `NAMESPACE/`: nothing outside the namespace (not even
//!   `/hyper2/...`) is ever read, written or watched.
//! - **Revisions** are etcd's own, passed through: etcd has one revision for the whole cluster,
//!   so they only grow, as redb's do, but start above 1 and have gaps where other namespaces
//!   wrote. A transaction that changes nothing keeps the revision (as redb's do).
//! - **Transactions** map one to one (etcd's `Txn` is what ours copied). etcd refuses a
//!   transaction that writes one key twice or puts a key under a prefix it deletes; redb
//!   applies ops in order, so each branch is reduced to its net effect first (the last op on a
//!   key wins). A put after a prefix delete that covers it cannot be reduced without a read:
//!   it is refused with a clear error (no caller does that). etcd's default limit of 128 ops
//!   per transaction (`--max-txn-ops`) applies.
//! - **Sync over async**: the `Store` trait is synchronous and hyperd calls it from its tokio
//!   workers. The client lives on a runtime of its own (one thread, `etcd` in `ps`); a call
//!   hands its future to that runtime and waits for the answer on a plain channel, inside
//!   `block_in_place` on a multi-threaded runtime so the caller's worker hands its other tasks
//!   on while it waits. Each request has a deadline ([`REQUEST_TIMEOUT`]): a lost etcd turns
//!   into an error naming it, never a hang. The gRPC channel reconnects by itself.
//! - **Watches** are etcd watches run by a task on that runtime, which forwards events into
//!   the `Watch`'s channel. When the stream breaks (etcd restarted, connection lost) the task
//!   watches again from the revision after the last event it forwarded, so nothing is lost;
//!   when that revision has been compacted away it goes on from the oldest one etcd still has
//!   (logged), as a redb watch that fell behind does.

use std::future::Future;
use std::time::Duration;

use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, ConnectOptions, DeleteOptions, EventType,
    GetOptions, PutOptions, Txn as EtcdTxn, TxnOp, WatchOptions,
};
use tokio::sync::mpsc;

use crate::{
    Compare, Event, KeyValue, LeaseId, Op, Result, Store, StoreError, Txn, TxnResult, Watch,
};

/// How long one request may take before it fails.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer taken (a range over many keys): etcd-client's default is 4 MiB.
const MAX_MESSAGE: usize = 256 << 20;
/// Events a watch holds for a reader that has not caught up; past it etcd waits for us.
const WATCH_BUFFER: usize = 1024;
pub const DEFAULT_NAMESPACE: &str = "/hyper";

pub struct EtcdStore {
    client: Client,
    namespace: String,
    /// `HOST:PORT,...`, for messages.
    endpoints: String,
    runtime: ClientRuntime,
}

/// The client's runtime. Dropping a tokio runtime blocks until its tasks end, which panics
/// inside another runtime (hyperd opens and drops stores from async code): this one is let go
/// in the background.
struct ClientRuntime(Option<tokio::runtime::Runtime>);

impl Drop for ClientRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// `etcd://HOST:PORT[,HOST:PORT...][/NAMESPACE]`: the endpoints and the namespace.
pub fn parse_url(url: &str) -> std::result::Result<(Vec<String>, String), String> {
    let rest = url.strip_prefix("etcd://").ok_or_else(|| {
        format!("{url:?}: an etcd store is etcd://HOST:PORT[,HOST:PORT...][/NAMESPACE]")
    })?;
    let (hosts, namespace) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, DEFAULT_NAMESPACE),
    };
    let endpoints: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .collect();
    if endpoints.is_empty() || endpoints.iter().any(|h| h.rsplit_once(':').is_none()) {
        return Err(format!(
            "{url:?}: give etcd's client endpoints as HOST:PORT, comma separated"
        ));
    }
    if namespace.is_empty() {
        return Err(format!(
            "{url:?}: an empty namespace would share etcd's whole key space; give one (e.g. {DEFAULT_NAMESPACE})"
        ));
    }
    Ok((endpoints, namespace.to_string()))
}

impl EtcdStore {
    /// Connects to `etcd://HOST:PORT[,HOST:PORT...][/NAMESPACE]` and checks that etcd answers.
    pub fn open(url: &str) -> Result<Self> {
        let (endpoints, namespace) = parse_url(url).map_err(StoreError::Backend)?;
        Self::connect(&endpoints, &namespace)
    }

    /// Connects to etcd's client endpoints (`HOST:PORT`), keys under `namespace` (`/name`).
    pub fn connect(endpoints: &[String], namespace: &str) -> Result<Self> {
        let joined = endpoints.join(",");
        let open_error = |e: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
            path: format!("etcd://{joined}{namespace}"),
            source: e,
        };
        if !namespace.starts_with('/') {
            return Err(open_error(
                format!("the namespace {namespace:?} does not begin with '/'").into(),
            ));
        }
        let runtime = ClientRuntime(Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("etcd")
                .enable_all()
                .build()
                .map_err(|e| open_error(Box::new(e)))?,
        ));
        let urls: Vec<String> = endpoints.iter().map(|e| format!("http://{e}")).collect();
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_require_leader(true);
        let connected = run_on(runtime.0.as_ref().expect("just built"), async move {
            let mut client = Client::connect(urls, Some(options)).await?;
            // Connecting is lazy: one request tells whether etcd is there.
            client.status().await?;
            Ok::<_, etcd_client::Error>(client)
        })
        .ok_or_else(|| open_error("the client's runtime stopped".into()))?
        .map_err(|e| open_error(Box::new(e)))?;
        Ok(Self {
            client: connected,
            namespace: namespace.to_string(),
            endpoints: joined,
            runtime,
        })
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime
            .0
            .as_ref()
            .expect("the runtime lives as long as the store")
    }

    /// Runs `fut` on the client's runtime and waits for it.
    fn call<T, F>(&self, what: &str, fut: F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = std::result::Result<T, etcd_client::Error>> + Send + 'static,
    {
        match run_on(self.runtime(), fut) {
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) => Err(self.error(what, e)),
            None => Err(StoreError::Backend(format!(
                "etcd at {}: {what}: the client's runtime stopped",
                self.endpoints
            ))),
        }
    }

    fn error(&self, what: &str, e: etcd_client::Error) -> StoreError {
        use etcd_client::Error as E;
        let unreachable = match &e {
            E::TransportError(_) | E::IoError(_) => true,
            E::GRpcStatus(s) => matches!(
                s.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            ),
            _ => false,
        };
        if unreachable {
            StoreError::Backend(format!(
                "etcd at {} is unreachable ({what}): {e}",
                self.endpoints
            ))
        } else {
            StoreError::Backend(format!("etcd at {}: {what}: {e}", self.endpoints))
        }
    }

    /// etcd's key for a store key.
    fn key(&self, key: &str) -> Result<String> {
        if !key.starts_with('/') {
            return Err(StoreError::Backend(format!(
                "store key {key:?} does not begin with '/'"
            )));
        }
        Ok(format!("{}{key}", self.namespace))
    }

    /// etcd's prefix for a store prefix; `None` when no store key can match it.
    fn prefix(&self, prefix: &str) -> Option<String> {
        match prefix {
            "" => Some(format!("{}/", self.namespace)),
            p if p.starts_with('/') => Some(format!("{}{p}", self.namespace)),
            _ => None,
        }
    }

    fn kv(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue> {
        to_kv(&self.namespace, kv)
            .map_err(|e| StoreError::Backend(format!("etcd at {}: {e}", self.endpoints)))
    }

    fn compares(&self, compares: &[Compare]) -> Result<Vec<EtcdCompare>> {
        let mut out = Vec::new();
        for c in compares {
            match c {
                Compare::Absent(k) => {
                    out.push(EtcdCompare::version(self.key(k)?, CompareOp::Equal, 0))
                }
                Compare::ModRevision(k, rev) => {
                    let key = self.key(k)?;
                    // etcd reads an absent key's mod revision as 0; ours says "exists".
                    out.push(EtcdCompare::version(key.clone(), CompareOp::Greater, 0));
                    out.push(EtcdCompare::mod_revision(
                        key,
                        CompareOp::Equal,
                        to_i64(*rev),
                    ));
                }
                Compare::Value(k, v) => out.push(EtcdCompare::value(
                    self.key(k)?,
                    CompareOp::Equal,
                    v.clone(),
                )),
            }
        }
        Ok(out)
    }

    /// One branch's ops as etcd takes them: see the module's doc.
    fn ops(&self, ops: &[Op]) -> Result<Vec<TxnOp>> {
        enum Net {
            Put(String, Vec<u8>, Option<i64>),
            Delete(String),
            DeletePrefix(String),
        }
        let mut net: Vec<Net> = Vec::new();
        for op in ops {
            match op {
                Op::Put(k, _) | Op::PutLeased(k, _, _) | Op::Delete(k) => {
                    let key = self.key(k)?;
                    if !matches!(op, Op::Delete(..)) {
                        if let Some(Net::DeletePrefix(p)) = net.iter().find(
                            |n| matches!(n, Net::DeletePrefix(p) if key.starts_with(p.as_str())),
                        ) {
                            return Err(StoreError::Backend(format!(
                                "etcd refuses a transaction that puts {k:?} under a prefix it also deletes ({:?})",
                                &p[self.namespace.len()..]
                            )));
                        }
                    }
                    net.retain(|n| !matches!(n, Net::Put(x, ..) | Net::Delete(x) if *x == key));
                    net.push(match op {
                        Op::Put(_, v) => Net::Put(key, v.clone(), None),
                        Op::PutLeased(_, v, lease) => Net::Put(key, v.clone(), Some(lease.0)),
                        _ => Net::Delete(key),
                    });
                }
                Op::DeletePrefix(p) => {
                    let Some(prefix) = self.prefix(p) else {
                        continue;
                    };
                    // An earlier put it covers ends deleted anyway.
                    net.retain(|n| !matches!(n, Net::Put(x, ..) if x.starts_with(prefix.as_str())));
                    net.push(Net::DeletePrefix(prefix));
                }
            }
        }
        Ok(net
            .into_iter()
            .map(|n| match n {
                Net::Put(k, v, lease) => {
                    TxnOp::put(k, v, lease.map(|id| PutOptions::new().with_lease(id)))
                }
                Net::Delete(k) => TxnOp::delete(k, None),
                Net::DeletePrefix(p) => TxnOp::delete(p, Some(DeleteOptions::new().with_prefix())),
            })
            .collect())
    }

    /// A watch under `prefix` fed by an etcd watch from `start` (or from now).
    fn spawn_watch(&self, prefix: &str, start: Option<i64>) -> Watch {
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        match self.prefix(prefix) {
            Some(key) => {
                let pump = Pump {
                    client: self.client.clone(),
                    namespace: self.namespace.clone(),
                    key,
                    next: start,
                    tx,
                };
                self.runtime().spawn(pump.run());
            }
            // Nothing can ever match: a watch that only ends with the store.
            None => {
                self.runtime().spawn(async move { tx.closed().await });
            }
        }
        Watch::channel(prefix, rx)
    }
}

/// Runs `fut` on `runtime` and waits for its output from synchronous code, wherever that
/// runs; `None` when the runtime is shutting down.
fn run_on<T, F>(runtime: &tokio::runtime::Runtime, fut: F) -> Option<T>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = tx.send(fut.await);
    });
    let recv = move || rx.recv().ok();
    match tokio::runtime::Handle::try_current() {
        // On a worker of the caller's runtime: let its other tasks move on meanwhile.
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(recv)
        }
        _ => recv(),
    }
}

fn to_i64(rev: u64) -> i64 {
    i64::try_from(rev).unwrap_or(i64::MAX)
}

fn to_u64(rev: i64) -> u64 {
    u64::try_from(rev).unwrap_or(0)
}

/// A store key-value from etcd's, its key taken out of the namespace.
fn to_kv(namespace: &str, kv: &etcd_client::KeyValue) -> std::result::Result<KeyValue, String> {
    let key = std::str::from_utf8(kv.key())
        .ok()
        .and_then(|k| k.strip_prefix(namespace))
        .ok_or_else(|| {
            format!(
                "key {:?} is not under {namespace}",
                String::from_utf8_lossy(kv.key())
            )
        })?;
    Ok(KeyValue {
        key: key.to_string(),
        value: kv.value().to_vec(),
        create_revision: to_u64(kv.create_revision()),
        mod_revision: to_u64(kv.mod_revision()),
    })
}

fn revision_of(header: Option<&etcd_client::ResponseHeader>) -> u64 {
    header.map_or(0, |h| to_u64(h.revision()))
}

impl Store for EtcdStore {
    fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let (mut kv, key) = (self.client.kv_client(), self.key(key)?);
        let resp = self.call("get", async move { kv.get(key, None).await })?;
        resp.kvs().first().map(|kv| self.kv(kv)).transpose()
    }

    fn range(&self, prefix: &str) -> Result<Vec<KeyValue>> {
        let Some(prefix) = self.prefix(prefix) else {
            return Ok(Vec::new());
        };
        let mut kv = self
            .client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE);
        // etcd answers a range in key order.
        let resp = self.call("range", async move {
            kv.get(prefix, Some(GetOptions::new().with_prefix())).await
        })?;
        resp.kvs().iter().map(|kv| self.kv(kv)).collect()
    }

    fn txn(&self, txn: Txn) -> Result<TxnResult> {
        let request = EtcdTxn::new()
            .when(self.compares(&txn.compares)?)
            .and_then(self.ops(&txn.success)?)
            .or_else(self.ops(&txn.failure)?);
        let mut kv = self.client.kv_client();
        let resp = self.call("transaction", async move { kv.txn(request).await })?;
        Ok(TxnResult {
            succeeded: resp.succeeded(),
            revision: revision_of(resp.header()),
        })
    }

    fn revision(&self) -> Result<u64> {
        // Any read carries the cluster's revision; this key is never written.
        let (mut kv, key) = (self.client.kv_client(), self.namespace.clone());
        let resp = self.call("revision", async move {
            kv.get(key, Some(GetOptions::new().with_count_only())).await
        })?;
        Ok(revision_of(resp.header()))
    }

    fn watch(&self, prefix: &str) -> Watch {
        // From the revision after the current one: every write that returns after this call
        // comes after it. Without etcd, from whenever the watch gets through.
        let start = match self.revision() {
            Ok(rev) => Some(to_i64(rev) + 1),
            Err(e) => {
                tracing::warn!("watch {prefix}: {e}; watching from when etcd answers again");
                None
            }
        };
        self.spawn_watch(prefix, start)
    }

    fn watch_from(&self, prefix: &str, revision: u64) -> Result<Watch> {
        // etcd reads 0 as "from now"; ours means "from the beginning".
        Ok(self.spawn_watch(prefix, Some(to_i64(revision.max(1)))))
    }

    fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        let mut lease = self.client.lease_client();
        let ttl = ttl.as_secs().max(2) as i64;
        let resp = self.call("lease grant", async move { lease.grant(ttl, None).await })?;
        Ok(LeaseId(resp.id()))
    }

    fn lease_keep_alive(&self, id: LeaseId) -> Result<bool> {
        let mut lease = self.client.lease_client();
        // Opening a keep-alive stream sends one renewal and reads its answer: that is all.
        self.call("lease keep-alive", async move {
            match lease.keep_alive(id.0).await {
                Ok(_) => Ok(true),
                // etcd-client's words for a TTL of 0: etcd no longer has the lease.
                Err(etcd_client::Error::LeaseKeepAliveError(e)) if e == "lease not found" => {
                    Ok(false)
                }
                Err(e) => Err(e),
            }
        })
    }

    fn lease_revoke(&self, id: LeaseId) -> Result<()> {
        let mut lease = self.client.lease_client();
        match run_on(self.runtime(), async move { lease.revoke(id.0).await }) {
            Some(Ok(_)) => Ok(()),
            // Already gone: what revoking wanted.
            Some(Err(etcd_client::Error::GRpcStatus(s))) if s.code() == tonic::Code::NotFound => {
                Ok(())
            }
            Some(Err(e)) => Err(self.error("lease revoke", e)),
            None => Err(StoreError::Backend(format!(
                "etcd at {}: lease revoke: the client's runtime stopped",
                self.endpoints
            ))),
        }
    }
}

/// The task behind one etcd `Watch`: forwards events, and watches again after a break.
struct Pump {
    client: Client,
    namespace: String,
    /// etcd's prefix watched.
    key: String,
    /// The revision to watch from when (re)starting; `None`: from now.
    next: Option<i64>,
    tx: mpsc::Sender<Event>,
}

impl Pump {
    async fn run(mut self) {
        const FIRST: Duration = Duration::from_millis(100);
        let mut backoff = FIRST;
        loop {
            let from = self.next;
            match self.stream().await {
                // The reader is gone.
                None => return,
                Some(why) => tracing::warn!("etcd watch on {}: {why}; watching again", self.key),
            }
            tokio::select! {
                _ = self.tx.closed() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            // A stream that got somewhere before it broke starts the back-off over.
            backoff = if self.next != from {
                FIRST
            } else {
                (backoff * 2).min(Duration::from_secs(5))
            };
        }
    }

    /// Follows one etcd watch stream until it breaks (`Some(why)`) or the reader goes (`None`).
    async fn stream(&mut self) -> Option<String> {
        let mut options = WatchOptions::new().with_prefix();
        if let Some(rev) = self.next {
            options = options.with_start_revision(rev);
        }
        let mut watch = self
            .client
            .watch_client()
            .max_decoding_message_size(MAX_MESSAGE);
        let mut stream = tokio::select! {
            _ = self.tx.closed() => return None,
            s = watch.watch(self.key.clone(), Some(options)) => match s {
                Ok(s) => s,
                Err(e) => return Some(e.to_string()),
            },
        };
        loop {
            let message = tokio::select! {
                _ = self.tx.closed() => return None,
                m = stream.message() => m,
            };
            let resp = match message {
                Ok(Some(resp)) => resp,
                Ok(None) => return Some("the stream ended".into()),
                Err(e) => return Some(e.to_string()),
            };
            if resp.created() && self.next.is_none() {
                self.next = Some(to_i64(revision_of(resp.header())) + 1);
            }
            if resp.canceled() {
                if resp.compact_revision() > 0 {
                    tracing::warn!(
                        "etcd watch on {}: revisions before {} were compacted; changes before it are skipped",
                        self.key,
                        resp.compact_revision()
                    );
                    self.next = Some(resp.compact_revision());
                }
                return Some(format!("canceled: {}", resp.cancel_reason()));
            }
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                let kv = match to_kv(&self.namespace, kv) {
                    Ok(kv) => kv,
                    Err(e) => return Some(e),
                };
                let revision = kv.mod_revision;
                let event = match event.event_type() {
                    EventType::Put => Event::Put(kv),
                    EventType::Delete => Event::Delete {
                        key: kv.key,
                        revision,
                    },
                };
                if self.tx.send(event).await.is_err() {
                    return None;
                }
                self.next = Some(to_i64(revision) + 1);
            }
        }
    }
}
