//! The cron scheduler: one task in hyperd that, a few times a second, finishes the runs whose
//! container exited and fires the runs that fell due, by the cron clock.
//!
//! Restart safety: a run is recorded (with the cron's cursor, in one compare-and-swap) before
//! its container is made, so a due time is never run twice; runs still open when hyperd
//! stopped are taken up again from their records (their VMs kept running under their
//! supervisors); due times that passed while hyperd was down are handled by the cron's
//! missed-run policy.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use store::{Compare, Op, Txn};
use tokio::sync::watch;

use super::clock::{self, Clock};
use super::record::{self, CronRecord, RunRecord, CRON_LABEL, HISTORY_LIMIT, LOG_LIMIT, RUN_LABEL};
use super::{Concurrency, Missed, Schedule};
use crate::{Result, Runtime, RuntimeError};

/// Whether an access key still works (not revoked, not expired): given by hyperd, which knows
/// the accounts.
pub type KeyCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// How often the scheduler looks, in real time.
const TICK: Duration = Duration::from_millis(250);

struct Scheduler {
    rt: Arc<Runtime>,
    clock: Clock,
    key_active: KeyCheck,
    /// The cron clock when this hyperd's scheduler started: due times before it were missed.
    boot: DateTime<Utc>,
    /// Run records not finished yet (store keys).
    open: Mutex<HashSet<String>>,
    /// Runs whose container is being made by a task of ours.
    starting: Mutex<HashSet<String>>,
}

/// Runs the scheduler until `shutdown` turns true.
pub async fn run_forever(
    rt: Arc<Runtime>,
    key_active: KeyCheck,
    mut shutdown: watch::Receiver<bool>,
) {
    let clock = clock::get();
    let s = Arc::new(Scheduler {
        rt,
        clock,
        key_active,
        boot: clock.now(),
        open: Mutex::default(),
        starting: Mutex::default(),
    });
    match s.rt.store().range("/cron-runs/") {
        Ok(kvs) => {
            let mut open = s.open.lock().expect("poisoned");
            for kv in kvs {
                if serde_json::from_slice::<RunRecord>(&kv.value).is_ok_and(|r| r.is_open())
                    && s.runs_here(&kv.key)
                {
                    open.insert(kv.key);
                }
            }
            if !open.is_empty() {
                tracing::info!("crons: taking up {} runs of an earlier hyperd", open.len());
            }
        }
        Err(e) => tracing::error!("crons: reading open runs: {e}"),
    }
    if !clock.is_real() {
        tracing::warn!(now = %s.boot, "crons run by a test clock");
    }
    loop {
        if let Err(e) = s.clone().tick().await {
            tracing::warn!("crons: {}", crate::error_chain(&e));
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

/// `tenant`, `name` and due time (Unix seconds) of a run key.
fn parse_run_key(key: &str) -> Option<(String, String, i64)> {
    let mut parts = key.strip_prefix("/cron-runs/")?.split('/');
    let (tenant, name, due) = (parts.next()?, parts.next()?, parts.next()?);
    Some((tenant.into(), name.into(), due.parse().ok()?))
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| RuntimeError::Internal(format!("bad cron record: {e}")))
}

/// The container name of a run: the cron's `ContainerName`, or the cron's name and due time.
fn container_name(cron: &CronRecord, due: DateTime<Utc>) -> String {
    if cron.container_name.is_empty() {
        format!("{}-{}", cron.name, due.format("%Y%m%d%H%M"))
    } else {
        cron.container_name.clone()
    }
}

/// The last `LOG_LIMIT` bytes of a container's output, and its last non-empty line.
fn output(rt: &Runtime, id: &str) -> (String, String) {
    let mut text = Vec::new();
    for line in crate::logs::LogReader::new(&rt.dir(id)).read_all() {
        text.extend_from_slice(&line.text);
        if text.len() > 2 * LOG_LIMIT {
            text.drain(..text.len() - LOG_LIMIT);
        }
    }
    if text.len() > LOG_LIMIT {
        text.drain(..text.len() - LOG_LIMIT);
    }
    let text = String::from_utf8_lossy(&text).into_owned();
    let last = text
        .lines()
        .map(|l| l.trim())
        .rfind(|l| !l.is_empty())
        .unwrap_or("")
        .chars()
        .take(120)
        .collect();
    (text, last)
}

impl Scheduler {
    async fn tick(self: Arc<Self>) -> Result<()> {
        let open: Vec<String> = self
            .open
            .lock()
            .expect("poisoned")
            .iter()
            .cloned()
            .collect();
        for key in open {
            if let Err(e) = self.check_run(&key).await {
                tracing::warn!("crons: run {key}: {}", crate::error_chain(&e));
            }
        }
        let now = self.clock.now();
        for kv in self.rt.store().range("/crons/")? {
            let cron: CronRecord = match decode(&kv.value) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("crons: {}: {e}", kv.key);
                    continue;
                }
            };
            if cron.disabled || !self.is_local(&cron) {
                continue;
            }
            if let Err(e) = self.clone().fire_due(&cron, kv.mod_revision, now).await {
                tracing::warn!(
                    "crons: cron {} of {}: {}",
                    cron.name,
                    cron.tenant,
                    crate::error_chain(&e)
                );
            }
        }
        Ok(())
    }

    /// Whether this node's scheduler fires the cron (another node's fires its own).
    fn is_local(&self, cron: &CronRecord) -> bool {
        crate::fleet::runs_here(&cron.node, &self.rt.config().node_name)
    }

    /// Whether the run under `key` is of a cron this node fires (a run whose cron is gone is
    /// anyone's to clean up).
    fn runs_here(&self, key: &str) -> bool {
        let Some((tenant, name, _)) = parse_run_key(key) else {
            return true;
        };
        match self.rt.store().get(&record::key(&tenant, &name)) {
            Ok(Some(kv)) => decode::<CronRecord>(&kv.value).is_ok_and(|c| self.is_local(&c)),
            _ => true,
        }
    }

    fn open_runs_of(&self, cron: &CronRecord) -> Vec<String> {
        let prefix = record::runs_prefix(&cron.tenant, &cron.name);
        self.open
            .lock()
            .expect("poisoned")
            .iter()
            .filter(|k| k.starts_with(&prefix))
            .cloned()
            .collect()
    }

    async fn fire_due(
        self: Arc<Self>,
        cron: &CronRecord,
        rev: u64,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let schedule: Schedule = cron
            .schedule
            .parse()
            .map_err(|e| RuntimeError::Internal(format!("stored schedule: {e}")))?;
        let Some(next) = schedule.next_after(cron.cursor) else {
            return Ok(());
        };
        if next > now {
            return Ok(());
        }
        // The latest due time that passed, and how many did.
        let (mut latest, mut count) = (next, 1u64);
        while let Some(n) = schedule.next_after(latest) {
            if n > now || count >= 1_000_000 {
                break;
            }
            (latest, count) = (n, count + 1);
        }
        let missed = latest < self.boot;
        let mut note = String::new();
        if missed {
            if cron.missed == Missed::Skip {
                let msg = format!(
                    "skipped: {count} due time(s) up to {} passed while hyperd was down \
                     (missed-run policy skip)",
                    latest.format("%Y-%m-%d %H:%M")
                );
                return self.record_skipped(cron, rev, latest, now, msg);
            }
            note = format!(" (run once for {count} due time(s) missed while hyperd was down)");
        } else if count > 1 {
            note = format!(" ({} earlier due time(s) passed meanwhile)", count - 1);
        }

        let running = self.open_runs_of(cron);
        if !running.is_empty() {
            match cron.concurrency {
                Concurrency::Forbid => {
                    let msg = format!(
                        "skipped: the previous run is still running (concurrency policy forbid){note}"
                    );
                    return self.record_skipped(cron, rev, latest, now, msg);
                }
                Concurrency::Replace => {
                    // The next tick starts the new run, once the old ones are finished.
                    for key in running {
                        let why = format!(
                            "killed: replaced by the run due at {} (concurrency policy replace)",
                            latest.format("%Y-%m-%d %H:%M")
                        );
                        self.kill_run(&key, &why).await?;
                    }
                    return Ok(());
                }
                Concurrency::Allow => {}
            }
        }

        let run = RunRecord {
            scheduled: latest,
            started_at: now,
            finished_at: None,
            status: "starting".into(),
            container: container_name(cron, latest),
            container_id: String::new(),
            exit_code: None,
            message: note
                .trim()
                .trim_start_matches('(')
                .trim_end_matches(')')
                .to_string(),
            logs: String::new(),
        };
        let Some(key) = self.record_run(cron, rev, &run)? else {
            return Ok(());
        };
        tracing::info!(tenant = %cron.tenant, cron = %cron.name, due = %latest, "cron run due");
        self.open.lock().expect("poisoned").insert(key.clone());
        self.starting.lock().expect("poisoned").insert(key.clone());
        let (s, cron) = (self.clone(), cron.clone());
        tokio::spawn(async move {
            if let Err(e) = s.start_run(&cron, &key, latest).await {
                let msg = crate::error_chain(&e);
                tracing::info!("cron {} run {latest}: {msg}", cron.name);
                if let Err(e) = s.finish(&key, |r| {
                    r.status = "error".into();
                    r.message = msg.clone();
                }) {
                    tracing::warn!("crons: {key}: {e}");
                }
            }
            s.starting.lock().expect("poisoned").remove(&key);
        });
        Ok(())
    }

    fn record_skipped(
        &self,
        cron: &CronRecord,
        rev: u64,
        due: DateTime<Utc>,
        now: DateTime<Utc>,
        message: String,
    ) -> Result<()> {
        tracing::info!(tenant = %cron.tenant, cron = %cron.name, due = %due, "{message}");
        let run = RunRecord {
            scheduled: due,
            started_at: now,
            finished_at: Some(now),
            status: "skipped".into(),
            container: String::new(),
            container_id: String::new(),
            exit_code: None,
            message,
            logs: String::new(),
        };
        self.record_run(cron, rev, &run).map(|_| ())
    }

    /// Records a run of `cron` and moves its cursor to the run's due time, if neither the cron
    /// (revision `rev`) nor that due time's record changed meanwhile. The run's key, or `None`
    /// when someone was first (the next tick looks again).
    fn record_run(&self, cron: &CronRecord, rev: u64, run: &RunRecord) -> Result<Option<String>> {
        let ck = record::key(&cron.tenant, &cron.name);
        let rk = record::run_key(&cron.tenant, &cron.name, run.scheduled);
        let mut moved = cron.clone();
        moved.cursor = run.scheduled;
        let done = self.rt.store().txn(
            Txn::new()
                .when(Compare::ModRevision(ck.clone(), rev))
                .when(Compare::Absent(rk.clone()))
                .then(Op::Put(rk.clone(), serde_json::to_vec(run).expect("json")))
                .then(Op::Put(ck, serde_json::to_vec(&moved).expect("json"))),
        )?;
        if !done.succeeded {
            return Ok(None);
        }
        self.prune(cron)?;
        Ok(Some(rk))
    }

    /// Keeps the last [`HISTORY_LIMIT`] runs of a cron (open ones always).
    fn prune(&self, cron: &CronRecord) -> Result<()> {
        let runs = self
            .rt
            .store()
            .range(&record::runs_prefix(&cron.tenant, &cron.name))?;
        let excess = runs.len().saturating_sub(HISTORY_LIMIT);
        let open = self.open.lock().expect("poisoned").clone();
        let mut txn = Txn::new();
        for kv in runs
            .iter()
            .filter(|kv| !open.contains(&kv.key))
            .take(excess)
        {
            txn = txn.then(Op::Delete(kv.key.clone()));
        }
        if excess > 0 {
            self.rt.store().txn(txn)?;
        }
        Ok(())
    }

    /// Makes and starts the run's container.
    async fn start_run(&self, cron: &CronRecord, key: &str, due: DateTime<Utc>) -> Result<()> {
        if !cron.access_key.is_empty() && !(self.key_active)(&cron.access_key) {
            return Err(RuntimeError::Invalid(format!(
                "not run: the cron's access key {} is revoked or expired; recreate the cron \
                 with a valid key",
                cron.access_key
            )));
        }
        let tenant = &cron.tenant;
        let name = container_name(cron, due);
        if !cron.container_name.is_empty() {
            // The previous run's container, kept under the name: it makes room.
            if let Ok(old) = self.rt.get(tenant, &name) {
                if old.config.labels.get(CRON_LABEL) != Some(&cron.name) {
                    return Err(RuntimeError::Conflict(format!(
                        "the container name {name} is taken by a container that is not a run \
                         of this cron"
                    )));
                }
                self.rt.remove(tenant, &old.id, true, true).await?;
            }
        }
        let mut config = cron.config.clone();
        config.labels.insert(CRON_LABEL.into(), cron.name.clone());
        config
            .labels
            .insert(RUN_LABEL.into(), due.timestamp().to_string());
        let c = self
            .rt
            .create(
                tenant,
                Some(&name),
                config,
                cron.host_config.clone(),
                cron.aliases.clone(),
            )
            .await?;
        // Removed meanwhile (the cron is gone): so is the run.
        if self.rt.store().get(key)?.is_none() {
            self.rt.remove(tenant, &c.id, true, true).await?;
            return Ok(());
        }
        let id = c.id.clone();
        self.update(key, |r| {
            r.container_id = id.clone();
        })?;
        if let Err(e) = self.rt.start(tenant, &c.id).await {
            let (logs, _) = output(&self.rt, &c.id);
            let _ = self.rt.remove(tenant, &c.id, true, true).await;
            self.finish(key, |r| {
                r.logs = logs.clone();
            })?;
            return Err(e);
        }
        self.update(key, |r| r.status = "running".into())?;
        Ok(())
    }

    /// Looks at an open run: finished when its container exited (or went).
    async fn check_run(&self, key: &str) -> Result<()> {
        if self.starting.lock().expect("poisoned").contains(key) {
            return Ok(());
        }
        let Some((tenant, name, due)) = parse_run_key(key) else {
            self.open.lock().expect("poisoned").remove(key);
            return Ok(());
        };
        let Some(kv) = self.rt.store().get(key)? else {
            // The cron was removed: so are its runs' containers.
            super::remove_run_containers(&self.rt, &tenant, &name, Some(due)).await;
            self.open.lock().expect("poisoned").remove(key);
            return Ok(());
        };
        let run: RunRecord = decode(&kv.value)?;
        if !run.is_open() {
            self.open.lock().expect("poisoned").remove(key);
            return Ok(());
        }
        let found = if run.container_id.is_empty() {
            // hyperd stopped while making the container: it may exist, under the run's name.
            self.rt.get(&tenant, &run.container).ok().filter(|c| {
                c.config.labels.get(RUN_LABEL) == Some(&due.to_string())
                    && c.config.labels.get(CRON_LABEL) == Some(&name)
            })
        } else {
            self.rt.get(&tenant, &run.container_id).ok()
        };
        let Some(c) = found else {
            let why = if run.container_id.is_empty() {
                "hyperd stopped before the run's container was made"
            } else {
                "the run's container was removed before it ended"
            };
            return self.finish(key, |r| {
                r.status = "error".into();
                r.message = why.into();
            });
        };
        if c.is_running() {
            if run.status != "running" || run.container_id != c.id {
                let id = c.id.clone();
                self.update(key, |r| {
                    r.status = "running".into();
                    r.container_id = id.clone();
                })?;
            }
            return Ok(());
        }
        if run.status == "starting" && c.state.started_at.is_none() {
            // Made but never started (hyperd stopped in between): not run.
            let _ = self.rt.remove(&tenant, &c.id, true, true).await;
            return self.finish(key, |r| {
                r.status = "error".into();
                r.message = "hyperd stopped before the run's container started".into();
            });
        }
        self.finish_exited(key, &c).await
    }

    /// A run whose container ended: its exit code and output recorded, the container removed
    /// (kept when the cron names its container).
    async fn finish_exited(&self, key: &str, c: &crate::model::Container) -> Result<()> {
        let (logs, last) = output(&self.rt, &c.id);
        let code = c.state.exit_code;
        let mut message = format!("exit code {code}");
        if c.state.oom_killed {
            message.push_str(" (out of memory)");
        }
        if !last.is_empty() {
            message.push_str(": ");
            message.push_str(&last);
        }
        let (_, name, _) = parse_run_key(key).unwrap_or_default();
        let keep = super::get(&self.rt, &c.tenant, &name)
            .map(|cron| !cron.container_name.is_empty())
            .unwrap_or(false);
        self.finish(key, |r| {
            r.status = if code == 0 { "success" } else { "error" }.into();
            r.exit_code = Some(code);
            r.logs = logs.clone();
            // A note from when it was fired (missed runs) stays after the exit code.
            r.message = if r.message.is_empty() {
                message.clone()
            } else {
                format!("{message} ({})", r.message)
            };
            r.container_id = c.id.clone();
        })?;
        if !keep {
            self.rt.remove(&c.tenant, &c.id, true, true).await?;
        }
        Ok(())
    }

    /// Kills an open run (concurrency policy replace): output kept, container removed.
    async fn kill_run(&self, key: &str, why: &str) -> Result<()> {
        let Some(kv) = self.rt.store().get(key)? else {
            self.open.lock().expect("poisoned").remove(key);
            return Ok(());
        };
        let run: RunRecord = decode(&kv.value)?;
        if self.starting.lock().expect("poisoned").contains(key) {
            // Still being made: looked at again on the next tick.
            return Ok(());
        }
        let Some((tenant, _, _)) = parse_run_key(key) else {
            return Ok(());
        };
        let mut logs = String::new();
        if let Ok(c) = self.rt.get(&tenant, &run.container_id) {
            logs = output(&self.rt, &c.id).0;
            self.rt.remove(&tenant, &c.id, true, true).await?;
        }
        tracing::info!("crons: {key}: {why}");
        self.finish(key, |r| {
            r.status = "error".into();
            r.message = why.into();
            r.logs = logs.clone();
        })
    }

    /// Read-modify-write of an open run record (a removed one is left alone).
    fn update(&self, key: &str, change: impl Fn(&mut RunRecord)) -> Result<Option<RunRecord>> {
        loop {
            let Some(kv) = self.rt.store().get(key)? else {
                return Ok(None);
            };
            let mut r: RunRecord = decode(&kv.value)?;
            change(&mut r);
            let done = self.rt.store().txn(
                Txn::new()
                    .when(Compare::ModRevision(key.into(), kv.mod_revision))
                    .then(Op::Put(key.into(), serde_json::to_vec(&r).expect("json"))),
            )?;
            if done.succeeded {
                return Ok(Some(r));
            }
        }
    }

    /// Closes a run (`change` sets its status and message; `error` unless it says otherwise)
    /// and counts it on its cron.
    fn finish(&self, key: &str, change: impl Fn(&mut RunRecord)) -> Result<()> {
        let now = self.clock.now();
        let done = self.update(key, |r| {
            r.status = "error".into();
            change(r);
            r.finished_at = Some(now);
        })?;
        self.open.lock().expect("poisoned").remove(key);
        let (Some(run), Some((tenant, name, _))) = (done, parse_run_key(key)) else {
            return Ok(());
        };
        let ck = record::key(&tenant, &name);
        loop {
            let Some(kv) = self.rt.store().get(&ck)? else {
                return Ok(());
            };
            let mut cron: CronRecord = decode(&kv.value)?;
            if run.status == "success" {
                cron.success_count += 1;
            } else {
                cron.error_count += 1;
            }
            cron.last_run = Some(
                cron.last_run
                    .map_or(run.started_at, |t| t.max(run.started_at)),
            );
            let done = self.rt.store().txn(
                Txn::new()
                    .when(Compare::ModRevision(ck.clone(), kv.mod_revision))
                    .then(Op::Put(
                        ck.clone(),
                        serde_json::to_vec(&cron).expect("json"),
                    )),
            )?;
            if done.succeeded {
                tracing::info!(tenant, cron = name, due = %run.scheduled, status = %run.status, "{}", run.message);
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_keys_round_trip() {
        let due = DateTime::from_timestamp(1_893_456_000, 0).unwrap();
        let k = record::run_key("t1", "backup", due);
        assert_eq!(k, "/cron-runs/t1/backup/001893456000");
        assert_eq!(
            parse_run_key(&k),
            Some(("t1".into(), "backup".into(), 1_893_456_000))
        );
        assert_eq!(parse_run_key("/crons/t1/backup"), None);
    }
}
