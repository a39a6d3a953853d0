//! A cron as stored (`/crons/{tenant}/{name}`), its runs (`/cron-runs/{tenant}/{name}/{due}`),
//! and both as Hyper's API speaks them (`Cron` and the history's `Event`, PascalCase).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::model::{ContainerConfig, HostConfig};

/// The label that makes a container a cron's run (its value: the cron's name).
pub const CRON_LABEL: &str = "sh_hyper_cron";
/// The label holding the run's due time (Unix seconds of the cron clock).
pub const RUN_LABEL: &str = "sh_hyper_cron_run";
/// Labels a cron's `Config.Labels` may carry instead of the extension fields, so that Hyper's
/// own CLI (which has no flag for them) can set the policies with `-l`.
pub const CONCURRENCY_LABEL: &str = "sh_hyper_cron_concurrency";
pub const MISSED_LABEL: &str = "sh_hyper_cron_missed";

/// What happens when a run is due while an earlier one still runs (our extension: Hyper's
/// body has no such key; `ConcurrencyPolicy` in the body or the label above).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Concurrency {
    /// Both run.
    Allow,
    /// The new run is skipped (recorded as `skipped`). The default: a job that hangs does not
    /// pile up billed VMs.
    #[default]
    Forbid,
    /// The running one is killed, then the new one starts.
    Replace,
}

/// What happens to runs that fell due while hyperd was down (extension `MissedRunPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Missed {
    /// The latest missed run runs once when hyperd is back (the default, as anacron and
    /// Kubernetes' CronJob do: a missed backup matters more than a late one).
    #[default]
    RunOnce,
    /// They are recorded as skipped; the next run is the next due time.
    Skip,
}

impl Concurrency {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "allow" => Some(Self::Allow),
            "forbid" => Some(Self::Forbid),
            "replace" => Some(Self::Replace),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Forbid => "forbid",
            Self::Replace => "replace",
        }
    }
}

impl Missed {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "run-once" => Some(Self::RunOnce),
            "skip" => Some(Self::Skip),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RunOnce => "run-once",
            Self::Skip => "skip",
        }
    }
}

/// What a create asks for, checked by the API layer's container validation already.
#[derive(Debug, Clone)]
pub struct CronSpec {
    pub name: String,
    pub schedule: String,
    /// The access key the runs are made with (its secret is never kept), if the body gave one.
    pub access_key: String,
    pub container_name: String,
    pub mail_policy: String,
    pub disabled: bool,
    pub concurrency: Concurrency,
    pub missed: Missed,
    /// `Config`, `HostConfig` and `NetConfig` as received (inspect gives them back).
    pub raw_config: Value,
    pub raw_host_config: Value,
    pub raw_net_config: Value,
    pub config: ContainerConfig,
    pub host_config: HostConfig,
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CronRecord {
    pub tenant: String,
    pub name: String,
    pub schedule: String,
    pub access_key: String,
    pub container_name: String,
    pub mail_policy: String,
    pub disabled: bool,
    pub concurrency: Concurrency,
    pub missed: Missed,
    pub raw_config: Value,
    pub raw_host_config: Value,
    pub raw_net_config: Value,
    pub config: ContainerConfig,
    pub host_config: HostConfig,
    pub aliases: Vec<String>,
    /// Cron clock.
    pub created: DateTime<Utc>,
    /// The last due time dealt with (run, skipped or missed): runs are due after it. Moved in
    /// the same transaction that records a run, so a run is never started twice.
    pub cursor: DateTime<Utc>,
    pub success_count: u64,
    pub error_count: u64,
    pub last_run: Option<DateTime<Utc>>,
    /// The fleet node whose scheduler fires it (and runs its containers); empty in records
    /// from before the fleet, fired by any node.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
}

/// One due time of a cron and what became of it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunRecord {
    pub scheduled: DateTime<Utc>,
    /// Cron clock, like every time here.
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// starting | running | success | error | skipped
    pub status: String,
    pub container: String,
    pub container_id: String,
    pub exit_code: Option<i64>,
    pub message: String,
    /// The run's output (stdout and stderr as logged), its last [`LOG_LIMIT`] bytes.
    pub logs: String,
}

/// How much of a run's output its history entry keeps.
pub const LOG_LIMIT: usize = 16 << 10;
/// How many runs a cron's history keeps (Hyper's CLI says it shows the last 100).
pub const HISTORY_LIMIT: usize = 100;

impl RunRecord {
    pub fn is_open(&self) -> bool {
        self.finished_at.is_none()
    }
}

pub fn key(tenant: &str, name: &str) -> String {
    format!("/crons/{tenant}/{name}")
}

pub fn runs_prefix(tenant: &str, name: &str) -> String {
    format!("/cron-runs/{tenant}/{name}/")
}

pub fn run_key(tenant: &str, name: &str, due: DateTime<Utc>) -> String {
    format!("{}{:012}", runs_prefix(tenant, name), due.timestamp())
}

/// Go's zero `time.Time`, which Hyper's client decodes for a time that never was.
fn go_time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".into())
}

/// The `Cron` object of Hyper's API (every key of Hyper's struct, plus ours: the policies and
/// the next due time). The secret key is never given back.
pub fn to_json(r: &CronRecord, next_run: Option<DateTime<Utc>>) -> Value {
    json!({
        "Name": r.name,
        "Schedule": r.schedule,
        "AccessKey": r.access_key,
        "SecretKey": "",
        "ContainerName": r.container_name,
        "Config": r.raw_config,
        "HostConfig": r.raw_host_config,
        "NetConfig": r.raw_net_config,
        "Owner": r.tenant,
        "OwnerEmail": "",
        "MailPolicy": r.mail_policy,
        "SuccessCount": r.success_count,
        "ErrorCount": r.error_count,
        "LastRun": go_time(r.last_run),
        "Created": go_time(Some(r.created)),
        "Disabled": r.disabled,
        "Tags": null,
        "ConcurrencyPolicy": r.concurrency.as_str(),
        "MissedRunPolicy": r.missed.as_str(),
        "NextRun": go_time(next_run.filter(|_| !r.disabled)),
    })
}

/// One history `Event` of Hyper's API (`StartedAt`/`FinishedAt` Unix seconds, 0 while it
/// runs), plus ours: the due time, exit code, output and container ID.
pub fn run_json(job: &str, r: &RunRecord) -> Value {
    let status = match r.status.as_str() {
        "starting" => "running",
        s => s,
    };
    json!({
        "StartedAt": r.started_at.timestamp(),
        "FinishedAt": r.finished_at.map(|t| t.timestamp()).unwrap_or(0),
        "Status": status,
        "Job": job,
        "Container": r.container,
        "Message": r.message,
        "Scheduled": r.scheduled.timestamp(),
        "ExitCode": r.exit_code,
        "Logs": r.logs,
        "ContainerId": r.container_id,
    })
}
