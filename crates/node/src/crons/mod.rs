//! Crons (Hyper's `hyper cron`): a container spec run on a 5-field schedule, each run an
//! ordinary container of the tenant (billed as such, labelled `sh_hyper_cron`), its start, end,
//! exit code and output kept in the cron's history.
//!
//! The store is the truth. A cron is `/crons/{tenant}/{name}`; each due time that was dealt
//! with is a run record `/cron-runs/{tenant}/{name}/{due}`, written in one transaction with the
//! cron's cursor (the last due time handled) before the run's container is made, on the
//! condition that neither changed meanwhile: a due time is run at most once, across hyperd
//! restarts too. The scheduler ([`scheduler::run_forever`]) fires due runs, applies the
//! overlap policy (allow, forbid, replace) and the missed-run policy (run-once, skip), and
//! finishes runs whose container exited: output captured (bounded), container removed (or,
//! with `ContainerName`, kept under that name until the next run). Times are those of the cron
//! clock ([`clock`]), which tests speed up.

pub mod clock;
mod record;
pub mod schedule;
pub mod scheduler;

use std::sync::Arc;

use store::{Compare, Op, Txn};

use crate::{Result, Runtime, RuntimeError};
pub use record::{
    key, run_json, runs_prefix, to_json, Concurrency, CronRecord, CronSpec, Missed, RunRecord,
    CONCURRENCY_LABEL, CRON_LABEL, HISTORY_LIMIT, LOG_LIMIT, MISSED_LABEL, RUN_LABEL,
};
pub use schedule::Schedule;

/// How many crons a tenant may keep.
pub const MAX_CRONS: usize = 100;

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| RuntimeError::Internal(format!("bad cron record: {e}")))
}

fn not_found(name: &str) -> RuntimeError {
    RuntimeError::NotFound(format!("No such cron: {name}"))
}

pub fn list(rt: &Runtime, tenant: &str) -> Result<Vec<CronRecord>> {
    rt.store()
        .range(&format!("/crons/{tenant}/"))?
        .iter()
        .map(|kv| decode(&kv.value))
        .collect()
}

pub fn get(rt: &Runtime, tenant: &str, name: &str) -> Result<CronRecord> {
    let kv = rt
        .store()
        .get(&key(tenant, name))?
        .ok_or_else(|| not_found(name))?;
    decode(&kv.value)
}

/// The next due time of a cron, by the cron clock.
pub fn next_run(r: &CronRecord) -> Option<chrono::DateTime<chrono::Utc>> {
    let s: Schedule = r.schedule.parse().ok()?;
    s.next_after(r.cursor.max(clock::get().now()))
}

/// Checks what the API layer cannot: name, schedule, the combination of policies and names,
/// and what a run's container must not ask for; then the container spec through the same
/// checks as a container create.
fn validate(rt: &Runtime, tenant: &str, spec: &CronSpec) -> Result<()> {
    let bad = |m: String| Err(RuntimeError::Invalid(m));
    if spec.name.is_empty() {
        return bad("a cron needs a name (--name)".into());
    }
    crate::validate::container_name(&spec.name).map_err(|_| {
        RuntimeError::Invalid(format!(
            "invalid cron name {:?}: use [a-zA-Z0-9][a-zA-Z0-9_.-], 2 to 48 characters",
            spec.name
        ))
    })?;
    if spec.name.len() > 48 {
        return bad("a cron name has at most 48 characters".into());
    }
    spec.schedule
        .parse::<Schedule>()
        .map_err(|e| RuntimeError::Invalid(format!("invalid schedule {:?}: {e}", spec.schedule)))?;
    if !spec.container_name.is_empty() {
        crate::validate::container_name(&spec.container_name)?;
        if spec.concurrency == Concurrency::Allow {
            return bad(format!(
                "ContainerName {:?} names every run's container, so two runs cannot overlap: \
                 use ConcurrencyPolicy forbid or replace, or no container name",
                spec.container_name
            ));
        }
    }
    let hc = &spec.host_config;
    if hc.auto_remove {
        return bad(
            "AutoRemove: a cron run's container is removed by the scheduler once its output is \
             kept in the history"
                .into(),
        );
    }
    if matches!(hc.restart_policy.name.as_str(), "always" | "unless-stopped") {
        return bad(format!(
            "restart policy {}: a cron run must end; use no or on-failure[:N]",
            hc.restart_policy.name
        ));
    }
    if spec
        .config
        .labels
        .get(crate::runtime::PROTECTION_LABEL)
        .is_some_and(|v| v == "true")
    {
        return bad(
            "termination protection on a cron run: its container is removed when the run ends"
                .into(),
        );
    }
    if spec.config.open_stdin || spec.config.attach_stdin {
        return bad("a cron run has no stdin to attach (OpenStdin)".into());
    }
    rt.check_create(tenant, &spec.config, hc)
}

/// `POST /crons/create`: records the cron (its name unique in the tenant); the scheduler fires
/// its first run at its first due time after now.
pub fn create(rt: &Arc<Runtime>, tenant: &str, spec: CronSpec) -> Result<CronRecord> {
    validate(rt, tenant, &spec)?;
    if list(rt, tenant)?.len() >= MAX_CRONS {
        return Err(RuntimeError::Quota(format!(
            "a tenant may keep at most {MAX_CRONS} crons"
        )));
    }
    let now = clock::get().now();
    let record = CronRecord {
        tenant: tenant.into(),
        name: spec.name,
        schedule: spec
            .schedule
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
        access_key: spec.access_key,
        container_name: spec.container_name,
        mail_policy: spec.mail_policy,
        disabled: spec.disabled,
        concurrency: spec.concurrency,
        missed: spec.missed,
        raw_config: spec.raw_config,
        raw_host_config: spec.raw_host_config,
        raw_net_config: spec.raw_net_config,
        config: spec.config,
        host_config: spec.host_config,
        aliases: spec.aliases,
        created: now,
        cursor: now,
        success_count: 0,
        error_count: 0,
        last_run: None,
        node: rt.config().node_name.clone(),
    };
    let k = key(tenant, &record.name);
    let done = rt.store().txn(
        Txn::new()
            .when(Compare::Absent(k.clone()))
            .then(Op::Put(k, serde_json::to_vec(&record).expect("json"))),
    )?;
    if !done.succeeded {
        return Err(RuntimeError::Conflict(format!(
            "a cron named {} already exists",
            record.name
        )));
    }
    tracing::info!(tenant, cron = %record.name, schedule = %record.schedule, "cron created");
    Ok(record)
}

/// `DELETE /crons/{name}`: the cron and its history go, and so do its runs' containers
/// (running or kept).
pub async fn remove(rt: &Arc<Runtime>, tenant: &str, name: &str) -> Result<()> {
    let k = key(tenant, name);
    let kv = rt.store().get(&k)?.ok_or_else(|| not_found(name))?;
    let done = rt.store().txn(
        Txn::new()
            .when(Compare::ModRevision(k.clone(), kv.mod_revision))
            .then(Op::Delete(k))
            .then(Op::DeletePrefix(runs_prefix(tenant, name))),
    )?;
    if !done.succeeded {
        // Changed meanwhile (a run recorded): still there, try once more on fresh data.
        rt.store().txn(
            Txn::new()
                .then(Op::Delete(key(tenant, name)))
                .then(Op::DeletePrefix(runs_prefix(tenant, name))),
        )?;
    }
    remove_run_containers(rt, tenant, name, None).await;
    tracing::info!(tenant, cron = name, "cron removed");
    Ok(())
}

/// Removes (by force) the containers of a cron's runs: all, or those of one due time.
pub(crate) async fn remove_run_containers(
    rt: &Arc<Runtime>,
    tenant: &str,
    name: &str,
    due: Option<i64>,
) {
    for c in rt.list(tenant) {
        let of_cron = c.config.labels.get(CRON_LABEL).map(String::as_str) == Some(name);
        let of_run = due.is_none_or(|d| {
            c.config.labels.get(RUN_LABEL).map(String::as_str) == Some(&d.to_string())
        });
        if of_cron && of_run {
            if let Err(e) = rt.remove(tenant, &c.id, true, true).await {
                tracing::warn!("cron {name}: removing run container {}: {e}", c.name);
            }
        }
    }
}

/// The cron's runs, oldest due time first.
pub fn history(rt: &Runtime, tenant: &str, name: &str) -> Result<Vec<RunRecord>> {
    get(rt, tenant, name)?;
    rt.store()
        .range(&runs_prefix(tenant, name))?
        .iter()
        .map(|kv| decode(&kv.value))
        .collect()
}
