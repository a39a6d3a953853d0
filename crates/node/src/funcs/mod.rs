//! Serverless functions (issue 16, Hyper's `hyper func`): a function is a stored container
//! spec with a secret UUID; each call runs it once, in a microVM of its own, with the call's
//! payload as stdin, and keeps its stdout as the result.
//!
//! - `record`: the function's record and Hyper's `Func` wire object.
//! - `calls`: call records, outputs, counters and logs in the store.
//! - `run`: one call in one VM.
//! - here: the manager. It owns each function's queue (at most `MaxConcurrency` calls run, the
//!   next ones wait in order, at most [`MAX_PENDING`] of them), the calls in flight (so a sync
//!   call, an `/output/.../wait` or a followed log sees a call end) and what happens at a
//!   restart: a call that was pending or running when hyperd went is recorded as failed, and
//!   its container (if any) removed, VM and all.

pub mod calls;
pub mod record;
pub mod run;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use store::{Compare, Op, Txn};
use tokio::sync::{broadcast, oneshot, watch};

pub use calls::{CallRecord, CallStatus};
pub use record::{CreateRequest, FuncRecord, UpdateRequest};

use crate::{Result, Runtime, RuntimeError};

/// Why a call in flight was cancelled when its function went.
const REMOVED: &str = "its function was removed";

/// Calls of one function that may wait for a slot; one more is refused (429).
pub const MAX_PENDING: usize = 64;

/// Why a call was not taken.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// 429: the function's queue is full.
    #[error("{0}")]
    Busy(String),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// A call that has ended: its record and its whole stdout.
pub type Ended = Arc<(CallRecord, Vec<u8>)>;

#[derive(Default)]
struct Queue {
    running: usize,
    limit: usize,
    waiting: VecDeque<oneshot::Sender<()>>,
}

impl Queue {
    /// Lets waiting calls run while there is room.
    fn dispatch(&mut self) {
        while self.running < self.limit {
            let Some(next) = self.waiting.pop_front() else {
                return;
            };
            // A waiter that went away (cancelled) gives its turn to the next.
            if next.send(()).is_ok() {
                self.running += 1;
            }
        }
    }
}

/// A function's queue and calls are its own, not those of another of the same name made after
/// it was removed: keyed on tenant, name and creation time.
type QKey = (String, String, i64);

fn qkey(f: &FuncRecord) -> QKey {
    (
        f.tenant.clone(),
        f.name.clone(),
        f.created.timestamp_nanos_opt().unwrap_or_default(),
    )
}

struct Live {
    qkey: QKey,
    cancel: watch::Sender<Option<&'static str>>,
    done: watch::Receiver<Option<Ended>>,
}

/// A change to one of a function's calls, for followers of its log.
#[derive(Debug, Clone)]
pub struct CallChange {
    pub tenant: String,
    pub func: String,
    pub call: String,
}

pub struct Funcs {
    rt: Arc<Runtime>,
    queues: Mutex<HashMap<QKey, Queue>>,
    live: Mutex<HashMap<String, Live>>,
    changes: broadcast::Sender<CallChange>,
}

fn decode(bytes: &[u8]) -> Result<FuncRecord> {
    serde_json::from_slice(bytes)
        .map_err(|e| RuntimeError::Internal(format!("bad function record: {e}")))
}

fn not_found(name: &str) -> RuntimeError {
    RuntimeError::NotFound(format!("No such function: {name}"))
}

impl Funcs {
    pub fn new(rt: Arc<Runtime>) -> Arc<Self> {
        Arc::new(Self {
            rt,
            queues: Mutex::default(),
            live: Mutex::default(),
            changes: broadcast::channel(1024).0,
        })
    }

    fn store(&self) -> &dyn store::Store {
        self.rt.store().as_ref()
    }

    // ---- management (signed, per tenant) ----

    pub fn list(&self, tenant: &str) -> Result<Vec<FuncRecord>> {
        self.store()
            .range(&record::prefix(tenant))?
            .iter()
            .map(|kv| decode(&kv.value))
            .collect()
    }

    pub fn get(&self, tenant: &str, name: &str) -> Result<FuncRecord> {
        let kv = self
            .store()
            .get(&record::key(tenant, name))?
            .ok_or_else(|| not_found(name))?;
        decode(&kv.value)
    }

    /// The function a call of the tenant belongs to (`GET /funcs/call/{id}`).
    pub fn by_call(&self, tenant: &str, call: &str) -> Result<FuncRecord> {
        let found = calls::all(self.store(), Some(tenant))?
            .into_iter()
            .find(|(_, c)| c.id == call)
            .ok_or_else(|| RuntimeError::NotFound(format!("call {call} not found")))?;
        self.get(tenant, &found.1.func)
    }

    /// Checks what a function needs from the tenant: its image, security groups, sizes.
    fn check_spec(&self, tenant: &str, spec: &record::FuncSpec) -> Result<()> {
        self.rt.images.resolve(tenant, &spec.image).map_err(|e| {
            RuntimeError::Invalid(format!(
                "image {}: {}; pull it first",
                spec.image,
                crate::error_chain(&e)
            ))
        })?;
        for (k, v) in &spec.labels {
            if k == run::FUNC_LABEL || k == run::CALL_LABEL || k == crate::sizes::SIZE_LABEL {
                return Err(RuntimeError::Invalid(format!(
                    "label {k} is set by hyper: leave it out (the size is ContainerSize)"
                )));
            }
            if k == crate::runtime::PROTECTION_LABEL {
                return Err(RuntimeError::Unsupported(format!(
                    "functions do not support {k}: a call's VM goes when the call ends"
                )));
            }
            if let Some(group) = k.strip_prefix(crate::network::sg::LABEL_PREFIX) {
                if v != "no" && v != "false" {
                    crate::network::sg::get(self.store(), tenant, group)?;
                }
            }
        }
        Ok(())
    }

    /// `POST /funcs/create`.
    pub fn create(&self, tenant: &str, req: CreateRequest) -> Result<FuncRecord> {
        self.check_spec(tenant, &req.spec)?;
        let r = FuncRecord {
            tenant: tenant.into(),
            name: req.name,
            uuid: record::new_uuid(),
            created: Utc::now(),
            timeout_secs: req.timeout_secs,
            max_concurrency: req.max_concurrency,
            spec: req.spec,
        };
        let key = record::key(tenant, &r.name);
        let mut txn = Txn::new()
            .when(Compare::Absent(key.clone()))
            .then(Op::Put(key, serde_json::to_vec(&r).expect("json")));
        // Leftovers of an earlier function of that name (a crash between its removal's steps).
        for op in calls::forget_all(tenant, &r.name) {
            txn = txn.then(op);
        }
        if !self.store().txn(txn)?.succeeded {
            return Err(RuntimeError::Conflict(format!(
                "a function named {} already exists",
                r.name
            )));
        }
        Ok(r)
    }

    /// `PUT /funcs/{name}`: what the request changes; `refresh` gives the function a new UUID,
    /// which ends the old call URL at once.
    pub fn update(&self, tenant: &str, name: &str, req: UpdateRequest) -> Result<FuncRecord> {
        let key = record::key(tenant, name);
        loop {
            let kv = self.store().get(&key)?.ok_or_else(|| not_found(name))?;
            let mut r = decode(&kv.value)?;
            if let Some(size) = &req.size {
                r.spec.size = size.clone();
            }
            if let Some(t) = req.timeout_secs {
                r.timeout_secs = t;
            }
            if let Some(env) = &req.env {
                r.spec.env = env.clone();
            }
            if let Some(n) = req.max_concurrency {
                r.max_concurrency = n;
            }
            if req.refresh {
                r.uuid = record::new_uuid();
            }
            let done = self.store().txn(
                Txn::new()
                    .when(Compare::ModRevision(key.clone(), kv.mod_revision))
                    .then(Op::Put(key.clone(), serde_json::to_vec(&r).expect("json"))),
            )?;
            if done.succeeded {
                let mut queues = self.queues.lock().expect("poisoned");
                if let Some(q) = queues.get_mut(&qkey(&r)) {
                    q.limit = r.max_concurrency as usize;
                    q.dispatch();
                }
                return Ok(r);
            }
        }
    }

    /// `DELETE /funcs/{name}`: the function, its calls and their results; calls still pending
    /// or running are cancelled and their VMs go before this returns.
    pub async fn remove(&self, tenant: &str, name: &str) -> Result<()> {
        let key = record::key(tenant, name);
        let kv = self.store().get(&key)?.ok_or_else(|| not_found(name))?;
        let r = decode(&kv.value)?;
        let mut txn = Txn::new()
            .when(Compare::ModRevision(key.clone(), kv.mod_revision))
            .then(Op::Delete(key));
        for op in calls::forget_all(tenant, name) {
            txn = txn.then(op);
        }
        if !self.store().txn(txn)?.succeeded {
            return Err(RuntimeError::Conflict(format!(
                "function {name} changed while it was being removed: try again"
            )));
        }
        let waits: Vec<watch::Receiver<Option<Ended>>> = {
            let live = self.live.lock().expect("poisoned");
            live.values()
                .filter(|l| l.qkey == qkey(&r))
                .map(|l| {
                    l.cancel.send_replace(Some(REMOVED));
                    l.done.clone()
                })
                .collect()
        };
        for mut done in waits {
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(60),
                done.wait_for(Option::is_some),
            )
            .await;
        }
        // Whatever container a call of it still has (none, unless a call was cut short).
        for c in self.rt.list(tenant) {
            if c.config.labels.get(run::FUNC_LABEL).map(String::as_str) == Some(name) {
                run::remove(&self.rt, tenant, &c.id).await;
            }
        }
        self.queues.lock().expect("poisoned").remove(&qkey(&r));
        Ok(())
    }

    // ---- the function endpoint (the UUID is the credential) ----

    /// The function `name` whose UUID is `uuid`, of whichever tenant: one answer for a wrong
    /// name and a wrong UUID, so a caller learns nothing about which was wrong.
    pub fn authorize(&self, name: &str, uuid: &str) -> Result<FuncRecord> {
        let refused = || RuntimeError::NotFound("no such function, or a wrong call URL".into());
        if record::check_name(name).is_err() {
            return Err(refused());
        }
        let mut found = None;
        for kv in self.store().range("/funcs/")? {
            if kv.key.rsplit('/').next() != Some(name) {
                continue;
            }
            let r = decode(&kv.value)?;
            // Every candidate is compared: no early exit tells how many there were.
            if record::same_secret(&r.uuid, uuid) && found.is_none() {
                found = Some(r);
            }
        }
        found.ok_or_else(refused)
    }

    /// Takes a call: recorded as pending, run when the function has a free slot. Returns the
    /// record and a receiver that holds the call's end once it has ended.
    pub fn call(
        self: &Arc<Self>,
        f: &FuncRecord,
        payload: Vec<u8>,
    ) -> std::result::Result<(CallRecord, watch::Receiver<Option<Ended>>), CallError> {
        let key = qkey(f);
        let call = CallRecord::new(&f.name, &payload);
        // The queue is decided first: a refused call leaves no record.
        let turn = {
            let mut queues = self.queues.lock().expect("poisoned");
            let q = queues.entry(key.clone()).or_default();
            q.limit = f.max_concurrency as usize;
            if q.running < q.limit {
                q.running += 1;
                None
            } else if q.waiting.len() >= MAX_PENDING {
                return Err(CallError::Busy(format!(
                    "function {} has {} calls running and {MAX_PENDING} waiting: try again later, or raise its {}",
                    f.name, q.running, record::CONCURRENCY_FIELD
                )));
            } else {
                let (tx, rx) = oneshot::channel();
                q.waiting.push_back(tx);
                Some(rx)
            }
        };
        if let Err(e) = calls::save(self.store(), &f.tenant, &call) {
            self.release(&key, turn.is_none());
            return Err(e.into());
        }
        let (cancel_tx, cancel_rx) = watch::channel(None);
        let (done_tx, done_rx) = watch::channel(None);
        self.live.lock().expect("poisoned").insert(
            call.id.clone(),
            Live {
                qkey: key,
                cancel: cancel_tx,
                done: done_rx.clone(),
            },
        );
        self.changed(&f.tenant, &f.name, &call.id);
        let this = self.clone();
        let (f, pending) = (f.clone(), call.clone());
        tokio::spawn(async move {
            let (ended, container) = this.carry_out(&f, pending, payload, turn, cancel_rx).await;
            let id = ended.0.id.clone();
            // The answer first; then the VM goes, and only then may the next call have the
            // slot (a call holds its resources until its VM is gone).
            let _ = done_tx.send(Some(ended));
            if let Some(container) = container {
                run::remove(&this.rt, &f.tenant, &container).await;
                this.release(&qkey(&f), true);
            }
            this.live.lock().expect("poisoned").remove(&id);
        });
        Ok((call, done_rx))
    }

    fn release(&self, key: &QKey, had_slot: bool) {
        let mut queues = self.queues.lock().expect("poisoned");
        if let Some(q) = queues.get_mut(key) {
            if had_slot {
                q.running = q.running.saturating_sub(1);
            }
            q.dispatch();
        }
    }

    fn changed(&self, tenant: &str, func: &str, call: &str) {
        let _ = self.changes.send(CallChange {
            tenant: tenant.into(),
            func: func.into(),
            call: call.into(),
        });
    }

    /// Waits for the call's turn, runs it, records how it ended.
    async fn carry_out(
        &self,
        f: &FuncRecord,
        mut call: CallRecord,
        payload: Vec<u8>,
        turn: Option<oneshot::Receiver<()>>,
        mut cancel: watch::Receiver<Option<&'static str>>,
    ) -> (Ended, Option<String>) {
        let key = qkey(f);
        if let Some(turn) = turn {
            let got = tokio::select! {
                t = turn => t.is_ok(),
                _ = cancel.wait_for(Option::is_some) => false,
            };
            if !got {
                // Our turn may have been given as we were cancelled: pass it on.
                self.release(&key, false);
                call.status = CallStatus::Failed;
                call.finished = Some(Utc::now());
                let why = (*cancel.borrow()).unwrap_or(REMOVED);
                call.message = format!("the call was cancelled: {why}");
                self.record_end(f, &call, &[]);
                return (Arc::new((call, Vec::new())), None);
            }
        }
        call.status = CallStatus::Running;
        call.started = Some(Utc::now());
        if let Err(e) = calls::save(self.store(), &f.tenant, &call) {
            tracing::warn!("recording call {} as running: {e}", call.id);
        }
        self.changed(&f.tenant, &f.name, &call.id);
        // The record's latest settings (an update since the call came in applies to it).
        let current = self
            .get(&f.tenant, &f.name)
            .ok()
            .filter(|r| r.created == f.created)
            .unwrap_or_else(|| f.clone());
        let store = self.rt.store().clone();
        let (tenant, running) = (f.tenant.clone(), call.clone());
        let outcome = run::run(&self.rt, &current, &call.id, &payload, cancel, |id| {
            let mut c = running;
            c.container = id.to_string();
            let _ = calls::save(store.as_ref(), &tenant, &c);
        })
        .await;
        call.finished = Some(Utc::now());
        call.container.clear();
        call.exit_code = outcome.exit_code;
        call.timed_out = outcome.timed_out;
        call.short_stdout = calls::short(&outcome.stdout);
        call.short_stderr = calls::short(&outcome.stderr);
        call.status = if outcome.error.is_empty() {
            CallStatus::Finished
        } else {
            CallStatus::Failed
        };
        call.message = outcome.error;
        self.record_end(f, &call, &outcome.stdout);
        match outcome.container {
            Some(c) => (Arc::new((call, outcome.stdout)), Some(c)),
            None => {
                // No VM to wait for: the slot is free now.
                self.release(&key, true);
                (Arc::new((call, outcome.stdout)), None)
            }
        }
    }

    fn record_end(&self, f: &FuncRecord, call: &CallRecord, output: &[u8]) {
        // Only into the function it was made for (not a new one of the same name).
        let same = self
            .get(&f.tenant, &f.name)
            .is_ok_and(|r| r.created == f.created);
        if same {
            if let Err(e) = calls::finish(self.store(), &f.tenant, call, output) {
                tracing::error!("recording the end of call {}: {e}", call.id);
            }
        }
        self.changed(&f.tenant, &f.name, &call.id);
    }

    /// The end of a call: at once if it has ended, else (with `wait`) when it does. `None`:
    /// no such call of this function.
    pub async fn ended(&self, f: &FuncRecord, call: &str, wait: bool) -> Result<Option<Ended>> {
        let live = {
            let live = self.live.lock().expect("poisoned");
            live.get(call)
                .filter(|l| l.qkey == qkey(f))
                .map(|l| l.done.clone())
        };
        if let (Some(mut done), true) = (live, wait) {
            let _ = done.wait_for(Option::is_some).await;
            if let Some(ended) = done.borrow().clone() {
                return Ok(Some(ended));
            }
        }
        let Some(record) = calls::get(self.store(), &f.tenant, &f.name, call)? else {
            return Ok(None);
        };
        let output = match record.status.ended() {
            true => calls::output(self.store(), &f.tenant, &f.name, call)?,
            false => Vec::new(),
        };
        Ok(Some(Arc::new((record, output))))
    }

    /// Changes to calls, for followers of a log.
    pub fn subscribe(&self) -> broadcast::Receiver<CallChange> {
        self.changes.subscribe()
    }

    pub fn store_ref(&self) -> &dyn store::Store {
        self.store()
    }

    /// After hyperd starts: calls that were pending or running when it went are recorded as
    /// failed (their payloads are gone with it), and every call container left is removed.
    pub async fn recover(&self) -> Result<()> {
        let mut tenants = std::collections::BTreeSet::new();
        for (tenant, mut c) in calls::all(self.store(), None)? {
            tenants.insert(tenant.clone());
            if c.status.ended() {
                continue;
            }
            c.message = format!(
                "hyperd restarted while the call was {}; it did not finish",
                c.status.as_str()
            );
            c.status = CallStatus::Failed;
            c.finished = Some(Utc::now());
            c.container.clear();
            calls::finish(self.store(), &tenant, &c, &[])?;
            tracing::info!(call = %c.id, "a call cut short by a restart is recorded as failed");
        }
        for kv in self.store().range("/funcs/")? {
            if let Some(t) = kv.key.split('/').nth(2) {
                tenants.insert(t.to_string());
            }
        }
        for tenant in tenants {
            for c in self.rt.list(&tenant) {
                if c.config.labels.contains_key(run::CALL_LABEL) {
                    tracing::info!(container = %c.id, "removing the container of a call cut short by a restart");
                    run::remove(&self.rt, &tenant, &c.id).await;
                }
            }
        }
        Ok(())
    }

    /// As hyperd stops: every call in flight ends now (marked failed by the next start's
    /// recovery if it cannot record its end first) and its VM goes.
    pub async fn close(&self) {
        for l in self.live.lock().expect("poisoned").values() {
            l.cancel.send_replace(Some("hyperd stopped"));
        }
        // A call leaves the live set once its VM is gone.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !self.live.lock().expect("poisoned").is_empty()
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_lets_calls_run_in_order_up_to_the_limit() {
        let mut q = Queue {
            limit: 1,
            running: 1,
            ..Queue::default()
        };
        let (a_tx, mut a) = oneshot::channel();
        let (b_tx, b) = oneshot::channel();
        let (c_tx, mut c) = oneshot::channel();
        q.waiting.extend([a_tx, b_tx, c_tx]);
        q.dispatch();
        assert!(a.try_recv().is_err(), "no room yet");
        // The first ends: the next in line runs, not the others.
        q.running -= 1;
        q.dispatch();
        assert!(a.try_recv().is_ok());
        assert_eq!((q.running, q.waiting.len()), (1, 2));
        // A waiter that went away passes its turn on.
        drop(b);
        q.running -= 1;
        q.dispatch();
        assert!(c.try_recv().is_ok());
        assert_eq!((q.running, q.waiting.len()), (1, 0));
        // A higher limit lets more run at once.
        let (d_tx, mut d) = oneshot::channel();
        q.waiting.push_back(d_tx);
        q.limit = 2;
        q.dispatch();
        assert!(d.try_recv().is_ok());
        assert_eq!(q.running, 2);
    }
}
