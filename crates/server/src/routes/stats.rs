//! `GET /containers/{id}/stats`: Docker's stats from the guest agent's figures.
//!
//! Clients compute CPU % as Docker's CLI does: `Δcpu_usage.total_usage / Δsystem_cpu_usage *
//! online_cpus * 100`, both in nanoseconds, `precpu_stats` being a sample taken a second
//! earlier. Here the whole VM is the container: `total_usage` is the guest's busy CPU time,
//! `system_cpu_usage` all CPU time of its vCPUs (idle included), from its /proc/stat.
//!
//! The guest is hostile and these figures are display only (nothing here is billed): each is
//! bounded by what the VM can have (busy time within total time, CPUs within the size's vCPUs,
//! memory within its size), and a pair of samples whose counters went backwards or busy time
//! outran total time is shown as 0 %, never as a negative or absurd figure.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use node::model::Container;
use serde_json::{json, Value};

use super::{flag, Params};
use crate::docker_json;
use crate::error::ApiResult;
use crate::transport::TenantId;
use crate::AppState;

/// Between the two samples of a `stream=false` answer, and between lines of a stream: Docker's
/// collection interval.
const INTERVAL: Duration = Duration::from_secs(1);

/// At most this many processes are reported (the guest's pid_max ceiling).
const MAX_PIDS: u64 = 1 << 22;

/// One validated sample of the guest's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Sample {
    read: Option<DateTime<Utc>>,
    cpu_ns: u64,
    system_ns: u64,
    online_cpus: u64,
    memory_usage: u64,
    memory_limit: u64,
    pids: u64,
}

impl Sample {
    /// The agent's reply (`cpu_total_ns`, `system_cpu_ns`, ...) bounded by the VM's size.
    fn from_guest(v: &Value, vcpus: u64, memory_bytes: u64, read: DateTime<Utc>) -> Sample {
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        let system_ns = n("system_cpu_ns");
        let memory_limit = match n("memory_limit") {
            0 => memory_bytes,
            l => l.min(memory_bytes),
        };
        Sample {
            read: Some(read),
            cpu_ns: n("cpu_total_ns").min(system_ns),
            system_ns,
            online_cpus: n("online_cpus").clamp(1, vcpus.max(1)),
            memory_usage: n("memory_usage").min(memory_limit),
            memory_limit,
            pids: n("pids").min(MAX_PIDS),
        }
    }

    /// What to show as `precpu_stats` beside `self`: `pre` when its counters lead to `self`
    /// without going backwards and with busy time within total time, else `self` itself (0 %).
    fn precpu<'a>(&'a self, pre: &'a Sample) -> &'a Sample {
        let forward = self.system_ns >= pre.system_ns && self.cpu_ns >= pre.cpu_ns;
        if forward && self.cpu_ns - pre.cpu_ns <= self.system_ns - pre.system_ns {
            pre
        } else {
            self
        }
    }

    fn cpu_json(&self) -> Value {
        json!({
            "cpu_usage": {"total_usage": self.cpu_ns, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
            "system_cpu_usage": self.system_ns,
            "online_cpus": self.online_cpus,
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
        })
    }
}

/// Docker's stats object for `cur`, with `pre` (when given and sound) as `precpu_stats`.
fn stats_json(c: &Container, cur: &Sample, pre: Option<&Sample>) -> Value {
    let pre = pre.map(|p| cur.precpu(p));
    json!({
        "read": docker_json::time(cur.read),
        "preread": docker_json::time(pre.and_then(|p| p.read)),
        "name": format!("/{}", c.name),
        "id": c.id,
        "pids_stats": {"current": cur.pids},
        "num_procs": 0,
        "cpu_stats": cur.cpu_json(),
        "precpu_stats": pre.copied().unwrap_or_default().cpu_json(),
        "memory_stats": {"usage": cur.memory_usage, "limit": cur.memory_limit, "stats": {}},
        "blkio_stats": {},
        "networks": {},
    })
}

/// Takes validated samples of one container's VM.
#[derive(Clone)]
struct Sampler {
    runtime: Arc<node::Runtime>,
    tenant: String,
    id: String,
    vcpus: u64,
    memory_bytes: u64,
}

impl Sampler {
    async fn sample(&self) -> ApiResult<Sample> {
        let reply = self
            .runtime
            .query(&self.tenant, &self.id, json!({"op": "stats"}))
            .await?;
        Ok(Sample::from_guest(
            &reply["stats"],
            self.vcpus,
            self.memory_bytes,
            Utc::now(),
        ))
    }
}

pub async fn stats(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(id): Path<String>,
    Query(q): Query<Params>,
) -> ApiResult<Response> {
    let c = app.runtime.get(&tenant, &id)?;
    let stream = flag(&q, "stream", true);
    let one_shot = flag(&q, "one-shot", false);
    let size = node::sizes::lookup(&c.size)?;
    let sampler = Sampler {
        runtime: app.runtime.clone(),
        tenant,
        id,
        vcpus: u64::from(size.vcpus),
        memory_bytes: size.memory_mib * 1024 * 1024,
    };
    // A container that does not run has zeros, as Docker's has.
    let first = if c.is_running() {
        Some(sampler.sample().await?)
    } else {
        None
    };
    if !stream {
        let cur = match first {
            Some(first) if !one_shot => {
                tokio::time::sleep(INTERVAL).await;
                let second = sampler.sample().await.unwrap_or(first);
                return Ok(Json(stats_json(&c, &second, Some(&first))).into_response());
            }
            other => other.unwrap_or_default(),
        };
        return Ok(Json(stats_json(&c, &cur, None)).into_response());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        // Every line has a sample of a second before as its precpu.
        let Some(mut pre) = first else {
            let line = stats_json(&c, &Sample::default(), None).to_string() + "\n";
            let _ = tx.send(Ok(Bytes::from(line))).await;
            return;
        };
        loop {
            tokio::select! {
                _ = tokio::time::sleep(INTERVAL) => {}
                _ = tx.closed() => return,
            }
            let Ok(cur) = sampler.sample().await else {
                return;
            };
            let line = stats_json(&c, &cur, Some(&pre)).to_string() + "\n";
            if tx.send(Ok(Bytes::from(line))).await.is_err() {
                return;
            }
            pre = cur;
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        Body::from_stream(body),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest(cpu: u64, system: u64, cpus: u64) -> Value {
        json!({"cpu_total_ns": cpu, "system_cpu_ns": system, "online_cpus": cpus,
               "memory_usage": u64::MAX, "memory_limit": u64::MAX, "pids": u64::MAX})
    }

    /// Docker's CLI formula on what `stats_json` would send.
    fn percent(cur: &Sample, pre: &Sample) -> f64 {
        let p = cur.precpu(pre);
        let (dc, ds) = (
            cur.cpu_ns as f64 - p.cpu_ns as f64,
            cur.system_ns as f64 - p.system_ns as f64,
        );
        if dc > 0.0 && ds > 0.0 {
            dc / ds * cur.online_cpus as f64 * 100.0
        } else {
            0.0
        }
    }

    #[test]
    fn guest_figures_are_bounded_and_deltas_sane() {
        let t = Utc::now();
        let s = |cpu, system, cpus| Sample::from_guest(&guest(cpu, system, cpus), 2, 1 << 30, t);
        let cur = s(u64::MAX, 100, 1000);
        assert_eq!(
            (cur.cpu_ns, cur.online_cpus),
            (100, 2),
            "busy within total, cpus within the size"
        );
        assert_eq!(
            (cur.memory_usage, cur.memory_limit, cur.pids),
            (1 << 30, 1 << 30, MAX_PIDS)
        );
        let cases = [
            // (pre, cur, expected %): half of one of 2 CPUs' worth of time busy.
            ((100, 1000), (600, 2000), 100.0),
            ((100, 1000), (100, 2000), 0.0),
            // Counters that went backwards, or busy time that outran total time: 0 %.
            ((500, 1000), (400, 2000), 0.0),
            ((100, 1000), (900, 500), 0.0),
            ((100, 1000), (1900, 1500), 0.0),
        ];
        for (i, ((pc, ps), (cc, cs), want)) in cases.into_iter().enumerate() {
            let got = percent(&s(cc, cs, 2), &s(pc, ps, 2));
            assert_eq!(got, want, "test[{i}]");
        }
    }

    #[test]
    fn json_has_dockers_fields() {
        let c: Container = serde_json::from_value(json!({
            "id": "c1", "tenant": "t", "name": "web", "created": "2026-11-22T00:00:00Z", "image": "busybox",
            "image_id": "sha256:x", "path": "sh", "args": [], "config": {}, "host_config": {}, "size": "s4",
            "state": {"status": "running", "exit_code": 0, "error": "", "oom_killed": false,
                      "started_at": null, "finished_at": null, "stopped_by_user": false},
            "restart_count": 0
        }))
        .unwrap();
        let t = Utc::now();
        let (pre, cur) = (
            Sample::from_guest(&guest(10, 100, 1), 1, 1 << 20, t),
            Sample::from_guest(&guest(20, 200, 1), 1, 1 << 20, t),
        );
        let v = stats_json(&c, &cur, Some(&pre));
        assert_eq!(v["cpu_stats"]["cpu_usage"]["total_usage"], 20);
        assert_eq!(v["precpu_stats"]["system_cpu_usage"], 100);
        assert_eq!(v["cpu_stats"]["online_cpus"], 1);
        let v = stats_json(&c, &cur, None);
        assert_eq!(v["precpu_stats"]["system_cpu_usage"], 0);
        assert_eq!(v["preread"], "0001-01-01T00:00:00Z");
    }
}
