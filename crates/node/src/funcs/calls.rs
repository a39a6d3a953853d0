//! The calls of functions in the store: one record per call (`/funccalls/{tenant}/{func}/{id}`),
//! its output (`/funcout/...`, at most [`MAX_OUTPUT`] bytes), and each function's counters
//! (`/funcstats/...`). The last [`KEEP_CALLS`] ended calls of a function are kept, so results
//! survive a hyperd restart; everything goes with the function.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use store::{Compare, Op, Store, Txn};

use crate::{Result, RuntimeError};

/// The largest payload (request body, the call's stdin).
pub const MAX_PAYLOAD: usize = 1 << 20;
/// The most a call's stdout may hold; a call that writes more fails.
pub const MAX_OUTPUT: usize = 1 << 20;
/// Ended calls kept per function (their outputs with them); older ones are forgotten.
pub const KEEP_CALLS: usize = 100;
/// How much of stdin, stdout and stderr the logs show.
const SHORT: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallStatus {
    Pending,
    Running,
    Finished,
    Failed,
}

impl CallStatus {
    pub fn ended(self) -> bool {
        matches!(self, Self::Finished | Self::Failed)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Finished => "finished",
            Self::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CallRecord {
    pub id: String,
    pub func: String,
    pub status: CallStatus,
    pub created: DateTime<Utc>,
    pub started: Option<DateTime<Utc>>,
    pub finished: Option<DateTime<Utc>>,
    pub short_stdin: String,
    pub short_stdout: String,
    pub short_stderr: String,
    /// Why it failed.
    pub message: String,
    pub exit_code: Option<i64>,
    /// Its container while it runs.
    pub container: String,
    pub timed_out: bool,
}

impl CallRecord {
    pub fn new(func: &str, payload: &[u8]) -> Self {
        Self {
            id: super::record::new_uuid(),
            func: func.into(),
            status: CallStatus::Pending,
            created: Utc::now(),
            started: None,
            finished: None,
            short_stdin: short(payload),
            short_stdout: String::new(),
            short_stderr: String::new(),
            message: String::new(),
            exit_code: None,
            container: String::new(),
            timed_out: false,
        }
    }
}

/// The first bytes of a stream as text, for the logs.
pub fn short(data: &[u8]) -> String {
    let mut end = data.len().min(SHORT);
    while end > 0 && std::str::from_utf8(&data[..end]).is_err() && data.len() - end < 4 {
        end -= 1;
    }
    String::from_utf8_lossy(&data[..end]).into_owned()
}

pub fn key(tenant: &str, func: &str, id: &str) -> String {
    format!("/funccalls/{tenant}/{func}/{id}")
}
fn output_key(tenant: &str, func: &str, id: &str) -> String {
    format!("/funcout/{tenant}/{func}/{id}")
}
fn stats_key(tenant: &str, func: &str) -> String {
    format!("/funcstats/{tenant}/{func}")
}

fn decode(bytes: &[u8]) -> Result<CallRecord> {
    serde_json::from_slice(bytes)
        .map_err(|e| RuntimeError::Internal(format!("bad call record: {e}")))
}

pub fn save(store: &dyn Store, tenant: &str, c: &CallRecord) -> Result<()> {
    store.put(
        &key(tenant, &c.func, &c.id),
        serde_json::to_vec(c).expect("json"),
    )?;
    Ok(())
}

pub fn get(store: &dyn Store, tenant: &str, func: &str, id: &str) -> Result<Option<CallRecord>> {
    store
        .get(&key(tenant, func, id))?
        .map(|kv| decode(&kv.value))
        .transpose()
}

/// A function's calls, oldest first.
pub fn list(store: &dyn Store, tenant: &str, func: &str) -> Result<Vec<CallRecord>> {
    let mut v: Vec<CallRecord> = store
        .range(&format!("/funccalls/{tenant}/{func}/"))?
        .iter()
        .map(|kv| decode(&kv.value))
        .collect::<Result<_>>()?;
    v.sort_by_key(|c| c.created);
    Ok(v)
}

/// Every call of every function (of every tenant: `tenant` None), with its tenant.
pub fn all(store: &dyn Store, tenant: Option<&str>) -> Result<Vec<(String, CallRecord)>> {
    let prefix = match tenant {
        Some(t) => format!("/funccalls/{t}/"),
        None => "/funccalls/".into(),
    };
    store
        .range(&prefix)?
        .iter()
        .map(|kv| {
            let tenant = kv.key.split('/').nth(2).unwrap_or_default().to_string();
            Ok((tenant, decode(&kv.value)?))
        })
        .collect()
}

/// Records how a call ended, its output and the function's counters, in one transaction; then
/// forgets the oldest ended calls past [`KEEP_CALLS`].
pub fn finish(store: &dyn Store, tenant: &str, c: &CallRecord, output: &[u8]) -> Result<()> {
    let skey = stats_key(tenant, &c.func);
    loop {
        let current = store.get(&skey)?;
        let mut stats: Value = current
            .as_ref()
            .and_then(|kv| serde_json::from_slice(&kv.value).ok())
            .unwrap_or_else(|| json!({"total": 0, "finished": 0, "failed": 0}));
        let bump = |v: &mut Value, k: &str| v[k] = json!(v[k].as_u64().unwrap_or(0) + 1);
        bump(&mut stats, "total");
        bump(
            &mut stats,
            if c.status == CallStatus::Finished {
                "finished"
            } else {
                "failed"
            },
        );
        let guard = match &current {
            Some(kv) => Compare::ModRevision(skey.clone(), kv.mod_revision),
            None => Compare::Absent(skey.clone()),
        };
        // A function removed meanwhile takes its calls with it: nothing is written back.
        let fkey = super::record::key(tenant, &c.func);
        let Some(func) = store.get(&fkey)? else {
            return Ok(());
        };
        let done = store.txn(
            Txn::new()
                .when(guard)
                .when(Compare::ModRevision(fkey, func.mod_revision))
                .then(Op::Put(
                    skey.clone(),
                    serde_json::to_vec(&stats).expect("json"),
                ))
                .then(Op::Put(
                    key(tenant, &c.func, &c.id),
                    serde_json::to_vec(c).expect("json"),
                ))
                .then(Op::Put(output_key(tenant, &c.func, &c.id), output.to_vec())),
        )?;
        if done.succeeded {
            break;
        }
    }
    prune(store, tenant, &c.func)
}

fn prune(store: &dyn Store, tenant: &str, func: &str) -> Result<()> {
    let ended: Vec<CallRecord> = list(store, tenant, func)?
        .into_iter()
        .filter(|c| c.status.ended())
        .collect();
    if ended.len() <= KEEP_CALLS {
        return Ok(());
    }
    let mut txn = Txn::new();
    for c in &ended[..ended.len() - KEEP_CALLS] {
        txn = txn
            .then(Op::Delete(key(tenant, func, &c.id)))
            .then(Op::Delete(output_key(tenant, func, &c.id)));
    }
    store.txn(txn)?;
    Ok(())
}

pub fn output(store: &dyn Store, tenant: &str, func: &str, id: &str) -> Result<Vec<u8>> {
    Ok(store
        .get(&output_key(tenant, func, id))?
        .map(|kv| kv.value)
        .unwrap_or_default())
}

/// Everything a function leaves in the store besides its record.
pub fn forget_all(tenant: &str, func: &str) -> Vec<Op> {
    vec![
        Op::DeletePrefix(format!("/funccalls/{tenant}/{func}/")),
        Op::DeletePrefix(format!("/funcout/{tenant}/{func}/")),
        Op::Delete(stats_key(tenant, func)),
    ]
}

/// `GET /status/...`: Hyper's `{Total, Pending, Running, Finished, Failed}`. Ended calls are
/// counted since the function was created; pending and running ones are those now.
pub fn status(store: &dyn Store, tenant: &str, func: &str) -> Result<Value> {
    let stats: Value = store
        .get(&stats_key(tenant, func))?
        .and_then(|kv| serde_json::from_slice(&kv.value).ok())
        .unwrap_or_else(|| json!({}));
    let calls = list(store, tenant, func)?;
    let count = |s: CallStatus| calls.iter().filter(|c| c.status == s).count() as u64;
    let (pending, running) = (count(CallStatus::Pending), count(CallStatus::Running));
    let n = |k: &str| stats[k].as_u64().unwrap_or(0);
    Ok(json!({
        "Total": n("total") + pending + running,
        "Pending": pending,
        "Running": running,
        "Finished": n("finished"),
        "Failed": n("failed"),
    }))
}

/// One line of `GET /logs/...`: Hyper's `FuncLogsResponse`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEvent {
    pub time: DateTime<Utc>,
    pub event: &'static str,
    pub call: String,
    pub order: u8,
}

/// The events a call has gone through so far: CALL, START, then FINISHED or FAILED.
pub fn events(c: &CallRecord) -> Vec<LogEvent> {
    let mut v = vec![LogEvent {
        time: c.created,
        event: "CALL",
        call: c.id.clone(),
        order: 0,
    }];
    if let Some(t) = c.started {
        v.push(LogEvent {
            time: t,
            event: "START",
            call: c.id.clone(),
            order: 1,
        });
    }
    if c.status.ended() {
        v.push(LogEvent {
            time: c.finished.unwrap_or(c.created),
            event: if c.status == CallStatus::Finished {
                "FINISHED"
            } else {
                "FAILED"
            },
            call: c.id.clone(),
            order: 2,
        });
    }
    v
}

/// An event as Hyper's client reads it.
pub fn event_json(e: &LogEvent, c: &CallRecord) -> Value {
    let (stdin, stdout, stderr, message) = match e.event {
        "CALL" => (c.short_stdin.as_str(), "", "", ""),
        "FINISHED" => ("", c.short_stdout.as_str(), c.short_stderr.as_str(), ""),
        "FAILED" => (
            "",
            c.short_stdout.as_str(),
            c.short_stderr.as_str(),
            c.message.as_str(),
        ),
        _ => ("", "", "", ""),
    };
    json!({
        "Time": e.time.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        "Event": e.event,
        "CallId": e.call,
        "ShortStdin": stdin,
        "ShortStdout": stdout,
        "ShortStderr": stderr,
        "Message": message,
    })
}

/// A function's log so far, oldest first: every event of its kept calls (of one call with
/// `call`), the last `tail` of them.
pub fn log(
    store: &dyn Store,
    tenant: &str,
    func: &str,
    call: Option<&str>,
    tail: Option<usize>,
) -> Result<Vec<(LogEvent, CallRecord)>> {
    let mut out: Vec<(LogEvent, CallRecord)> = list(store, tenant, func)?
        .into_iter()
        .filter(|c| call.is_none_or(|id| c.id == id))
        .flat_map(|c| events(&c).into_iter().map(move |e| (e, c.clone())))
        .collect();
    out.sort_by_key(|a| (a.0.time, a.0.order));
    if let Some(n) = tail {
        let skip = out.len().saturating_sub(n);
        out.drain(..skip);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_keeps_whole_characters() {
        assert_eq!(short(b"hello"), "hello");
        let long = "é".repeat(200);
        let s = short(long.as_bytes());
        assert!(s.chars().all(|c| c == 'é'), "{s}");
        assert_eq!(s.len(), 256);
    }

    #[test]
    fn ended_calls_are_kept_counted_and_forgotten_with_their_function() {
        let dir = tempfile::tempdir().unwrap();
        let store = store::RedbStore::open(&dir.path().join("db")).unwrap();
        let f = super::super::record::FuncRecord {
            tenant: "t".into(),
            name: "f".into(),
            uuid: "u".into(),
            created: Utc::now(),
            timeout_secs: 1,
            max_concurrency: 1,
            spec: Default::default(),
        };
        store
            .put(
                &super::super::record::key("t", "f"),
                serde_json::to_vec(&f).unwrap(),
            )
            .unwrap();
        let mut first = None;
        for i in 0..KEEP_CALLS + 3 {
            let mut c = CallRecord::new("f", b"in");
            c.status = if i % 2 == 0 {
                CallStatus::Finished
            } else {
                CallStatus::Failed
            };
            save(&store, "t", &c).unwrap();
            finish(&store, "t", &c, format!("out{i}").as_bytes()).unwrap();
            first.get_or_insert(c.id.clone());
        }
        let pending = CallRecord::new("f", b"later");
        save(&store, "t", &pending).unwrap();
        let kept = list(&store, "t", "f").unwrap();
        // The oldest ended calls went, outputs with them; the pending one stays.
        assert_eq!(kept.len(), KEEP_CALLS + 1);
        let first = first.unwrap();
        assert!(kept.iter().all(|c| c.id != first));
        assert!(output(&store, "t", "f", &first).unwrap().is_empty());
        let last = &kept[KEEP_CALLS - 1];
        assert_eq!(
            output(&store, "t", "f", &last.id).unwrap(),
            format!("out{}", KEEP_CALLS + 2).as_bytes()
        );
        let st = status(&store, "t", "f").unwrap();
        assert_eq!(st["Total"], KEEP_CALLS as u64 + 4);
        assert_eq!(st["Pending"], 1);
        assert_eq!(st["Finished"], 52);
        assert_eq!(st["Failed"], 51);
        let mut txn = store::Txn::new();
        for op in forget_all("t", "f") {
            txn = txn.then(op);
        }
        store.txn(txn).unwrap();
        assert!(list(&store, "t", "f").unwrap().is_empty());
        assert_eq!(status(&store, "t", "f").unwrap()["Total"], 0);
    }

    #[test]
    fn events_follow_the_call() {
        let mut c = CallRecord::new("f", b"in");
        assert_eq!(events(&c).len(), 1);
        c.started = Some(Utc::now());
        c.status = CallStatus::Failed;
        c.message = "timed out".into();
        let e = events(&c);
        assert_eq!(
            e.iter().map(|e| e.event).collect::<Vec<_>>(),
            ["CALL", "START", "FAILED"]
        );
        let j = event_json(&e[2], &c);
        assert_eq!(j["Message"], "timed out");
        assert_eq!(event_json(&e[0], &c)["ShortStdin"], "in");
    }
}
