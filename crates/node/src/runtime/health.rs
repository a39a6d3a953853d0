//! Health checks (`HEALTHCHECK` in the image, `--health-cmd` and friends), by Docker's rules:
//! a probe every interval (every start interval during the start period), `healthy` after a
//! success, `unhealthy` after `retries` failures in a row (failures during the start period
//! do not count until one probe passed), the last five probes kept with their output.
//!
//! hyperd keeps the schedule and the verdict; each probe runs as an exec in the container's
//! VM, so what the guest controls is its own container's health and nothing else. Probes
//! come at least a second apart: each one is a process in a VM.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, BufReader};
use tokio::net::UnixStream;

use super::{effective_workdir, random_id, Entry, Runtime};
use crate::events::Event;
use crate::model::{Container, Health, HealthConfig, HealthProbe, Status};
use crate::{shim_link, Result, RuntimeError};

const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_RETRIES: u64 = 3;
const MIN_INTERVAL_NS: i64 = 1_000_000_000;
const MIN_DURATION_NS: i64 = 1_000_000;
/// Docker's limits: output kept per probe, and probes kept.
const MAX_OUTPUT: usize = 4096;
const KEPT_PROBES: usize = 5;
/// The supervisor's last exec frame, which carries `{"exit_code": N}`.
const EXIT_FRAME: u8 = 255;
/// Larger frames than the supervisor ever sends mean a broken stream.
const MAX_FRAME: usize = 1 << 20;

/// Refuses a health check Docker would refuse, and intervals too short for a VM.
pub(crate) fn validate(h: &HealthConfig) -> Result<()> {
    let invalid = |why: String| Err(RuntimeError::Invalid(why));
    match h.test.first().map(String::as_str) {
        None | Some("NONE") => {}
        Some("CMD") if h.test.len() > 1 => {}
        Some("CMD-SHELL") if h.test.len() == 2 => {}
        Some(kind @ ("CMD" | "CMD-SHELL")) => {
            return invalid(format!(
                "invalid Healthcheck.Test: {kind} needs {}",
                if kind == "CMD" {
                    "a command"
                } else {
                    "exactly one shell line"
                }
            ))
        }
        Some(other) => {
            return invalid(format!(
                "invalid Healthcheck.Test {other:?}: use NONE, CMD or CMD-SHELL"
            ))
        }
    }
    for (name, ns, min, shown) in [
        ("Interval", h.interval, MIN_INTERVAL_NS, "1s"),
        ("StartInterval", h.start_interval, MIN_INTERVAL_NS, "1s"),
        ("Timeout", h.timeout, MIN_DURATION_NS, "1ms"),
        ("StartPeriod", h.start_period, MIN_DURATION_NS, "1ms"),
    ] {
        if ns != 0 && ns < min {
            return invalid(format!("{name} in Healthcheck cannot be less than {shown}"));
        }
    }
    if h.retries < 0 {
        return invalid("Retries in Healthcheck cannot be negative".into());
    }
    Ok(())
}

/// The request's health check over the image's, field by field (Docker's merge).
pub(super) fn merge(request: Option<HealthConfig>, image: &Value) -> Option<HealthConfig> {
    let image: Option<HealthConfig> = serde_json::from_value(image["Healthcheck"].clone()).ok();
    match (request, image) {
        (None, image) => image,
        (Some(r), None) => Some(r),
        (Some(mut r), Some(i)) => {
            if r.test.is_empty() {
                r.test = i.test;
            }
            let or = |mine: &mut i64, theirs: i64| {
                if *mine == 0 {
                    *mine = theirs
                }
            };
            or(&mut r.interval, i.interval);
            or(&mut r.timeout, i.timeout);
            or(&mut r.start_period, i.start_period);
            or(&mut r.start_interval, i.start_interval);
            or(&mut r.retries, i.retries);
            Some(r)
        }
    }
}

/// What a probe runs, or `None` when the container has no health check.
fn probe_command(h: &HealthConfig) -> Option<Vec<String>> {
    match h.test.first().map(String::as_str) {
        Some("CMD") => Some(h.test[1..].to_vec()),
        Some("CMD-SHELL") => Some(vec!["/bin/sh".into(), "-c".into(), h.test[1..].join(" ")]),
        _ => None,
    }
}

/// A new run's health: `starting` if it has a check.
pub(super) fn initial(c: &Container) -> Option<Health> {
    c.config
        .healthcheck
        .as_ref()
        .and_then(probe_command)
        .map(|_| Health {
            status: "starting".into(),
            ..Health::default()
        })
}

fn duration(ns: i64, default: Duration) -> Duration {
    match ns {
        0 => default,
        ns => Duration::from_nanos(ns as u64),
    }
}

/// Go's spelling of a timeout in Docker's message.
fn shown(d: Duration) -> String {
    match d.subsec_millis() {
        0 => format!("{}s", d.as_secs()),
        _ => format!("{}ms", d.as_millis()),
    }
}

/// Docker's verdict on one probe. Returns the new status when it changed.
fn record(
    health: &mut Health,
    probe: HealthProbe,
    retries: u64,
    in_start_period: bool,
) -> Option<String> {
    let before = health.status.clone();
    if probe.exit_code == 0 {
        health.failing_streak = 0;
        health.status = "healthy".into();
    } else if !(health.status == "starting" && in_start_period) {
        health.failing_streak += 1;
        if health.failing_streak >= retries {
            health.status = "unhealthy".into();
        }
    }
    health.log.push(probe);
    let excess = health.log.len().saturating_sub(KEPT_PROBES);
    health.log.drain(..excess);
    (health.status != before).then(|| health.status.clone())
}

/// Reads an exec's frames to its exit code, keeping the first `MAX_OUTPUT` bytes of output.
async fn output_and_exit(mut stream: BufReader<UnixStream>) -> std::io::Result<(i64, String)> {
    let mut output = Vec::new();
    let mut header = [0u8; 8];
    loop {
        stream.read_exact(&mut header).await?;
        let len = u32::from_be_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
        if len > MAX_FRAME {
            return Err(std::io::Error::other("oversized frame"));
        }
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).await?;
        if header[0] == EXIT_FRAME {
            let code = serde_json::from_slice::<Value>(&payload)
                .ok()
                .and_then(|v| v["exit_code"].as_i64())
                .unwrap_or(-1);
            return Ok((code, String::from_utf8_lossy(&output).into_owned()));
        }
        let room = MAX_OUTPUT - output.len();
        output.extend_from_slice(&payload[..len.min(room)]);
    }
}

impl Runtime {
    /// Runs the container's health checks for as long as this run of it lasts.
    pub(super) fn spawn_health_checks(self: &Arc<Self>, entry: &Arc<Entry>) {
        let c = entry.snapshot();
        let Some(check) = c.config.healthcheck.clone() else {
            return;
        };
        let Some(command) = probe_command(&check) else {
            return;
        };
        let rt = self.clone();
        let entry = entry.clone();
        tokio::spawn(async move { rt.health_checks(entry, check, command).await });
    }

    async fn health_checks(
        self: Arc<Self>,
        entry: Arc<Entry>,
        check: HealthConfig,
        command: Vec<String>,
    ) {
        let interval = duration(check.interval, DEFAULT_INTERVAL);
        let start_interval = duration(check.start_interval, DEFAULT_START_INTERVAL);
        let start_period = chrono::TimeDelta::nanoseconds(check.start_period);
        let timeout = duration(check.timeout, DEFAULT_TIMEOUT);
        let retries = match check.retries {
            0 => DEFAULT_RETRIES,
            n => n as u64,
        };
        let mut lifecycle = entry.lifecycle.subscribe();
        let this_run = lifecycle.borrow().exits;
        loop {
            let c = entry.snapshot();
            let started = c.state.started_at.unwrap_or_else(Utc::now);
            let in_start_period = Utc::now() - started < start_period;
            let wait = if in_start_period {
                start_interval
            } else {
                interval
            };
            let ended = lifecycle.wait_for(|l| l.exits != this_run || l.removed);
            if tokio::time::timeout(wait, ended).await.is_ok() {
                return;
            }
            // A paused VM answers nothing: no probe, no verdict, until it runs again.
            if entry.snapshot().state.paused {
                continue;
            }
            let probe = self.probe(&c, &command, timeout).await;
            let in_start_period = probe.start - started < start_period;
            // The run may have ended while the probe ran: its verdict is not this run's.
            if lifecycle.borrow().exits != this_run
                || entry.snapshot().state.status != Status::Running
            {
                return;
            }
            let mut changed = None;
            let updated = self.update(&entry, |c| {
                let health = c.state.health.get_or_insert_with(Health::default);
                changed = record(health, probe, retries, in_start_period);
            });
            let Ok(c) = updated else { return };
            if let Some(status) = changed {
                tracing::info!(container = %c.id, "health: {status}");
                let action = format!("health_status: {status}");
                self.events
                    .emit(&c.tenant, Event::container(&c, &action, &[]));
            }
        }
    }

    /// One probe, as an exec in the VM; killed when it outlives `timeout`.
    async fn probe(&self, c: &Container, command: &[String], timeout: Duration) -> HealthProbe {
        let start = Utc::now();
        let dir = self.dir(&c.id);
        let exec_id = format!("health-{}", &random_id()[..16]);
        let request = json!({
            "op": "exec", "exec_id": exec_id, "args": command, "env": c.config.env,
            "cwd": effective_workdir(c), "user": c.config.user,
            "tty": false, "stdin": false, "tty_width": 0, "tty_height": 0,
        });
        let run = async {
            let (_, stream) = shim_link::call(&dir, request).await?;
            output_and_exit(stream)
                .await
                .map_err(RuntimeError::ShimGone)
        };
        let (exit_code, output) = match tokio::time::timeout(timeout, run).await {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => (-1, format!("the health check could not run: {e}")),
            Err(_) => {
                let kill = json!({"op": "signal", "signal": libc::SIGKILL, "exec_id": exec_id});
                let _ = shim_link::request(&dir, kill).await;
                (
                    -1,
                    format!("Health check exceeded timeout ({})", shown(timeout)),
                )
            }
        };
        HealthProbe {
            start,
            end: Utc::now(),
            exit_code,
            output,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(exit_code: i64) -> HealthProbe {
        HealthProbe {
            start: Utc::now(),
            end: Utc::now(),
            exit_code,
            output: String::new(),
        }
    }

    fn starting() -> Health {
        Health {
            status: "starting".into(),
            ..Health::default()
        }
    }

    #[test]
    fn verdicts_follow_docker() {
        let mut h = starting();
        assert_eq!(record(&mut h, probe(1), 2, true), None, "start period");
        assert_eq!(h.failing_streak, 0);
        assert_eq!(record(&mut h, probe(1), 2, false), None);
        assert_eq!(
            record(&mut h, probe(1), 2, false).as_deref(),
            Some("unhealthy")
        );
        assert_eq!(
            record(&mut h, probe(0), 2, false).as_deref(),
            Some("healthy")
        );
        assert_eq!(h.failing_streak, 0);
        // Once healthy, the start period no longer shields failures.
        assert_eq!(
            record(&mut h, probe(1), 1, true).as_deref(),
            Some("unhealthy")
        );
        for _ in 0..10 {
            record(&mut h, probe(0), 1, false);
        }
        assert_eq!(h.log.len(), KEPT_PROBES);
    }

    #[test]
    fn image_checks_merge_under_the_request() {
        let image = json!({"Healthcheck": {"Test": ["CMD", "true"], "Interval": 5_000_000_000i64, "Retries": 4}});
        let merged = merge(None, &image).unwrap();
        assert_eq!(merged.test, ["CMD", "true"]);
        let mine = HealthConfig {
            interval: 2_000_000_000,
            ..HealthConfig::default()
        };
        let merged = merge(Some(mine), &image).unwrap();
        assert_eq!((merged.interval, merged.retries), (2_000_000_000, 4));
        assert_eq!(merged.test, ["CMD", "true"]);
        let off = HealthConfig {
            test: vec!["NONE".into()],
            ..HealthConfig::default()
        };
        assert_eq!(probe_command(&merge(Some(off), &image).unwrap()), None);
    }

    #[test]
    fn bad_checks_are_refused() {
        let check = |test: &[&str], interval: i64, retries: i64| {
            validate(&HealthConfig {
                test: test.iter().map(|s| s.to_string()).collect(),
                interval,
                retries,
                ..HealthConfig::default()
            })
        };
        assert!(check(&["CMD-SHELL", "true"], 0, 0).is_ok());
        assert!(check(&["CMD", "true"], 1_000_000_000, 3).is_ok());
        assert!(check(&["CMD"], 0, 0).is_err());
        assert!(check(&["SHELL", "x"], 0, 0).is_err());
        assert!(
            check(&["CMD", "true"], 500_000_000, 0).is_err(),
            "under a second"
        );
        assert!(check(&["CMD", "true"], 0, -1).is_err());
        assert_eq!(shown(Duration::from_secs(2)), "2s");
        assert_eq!(shown(Duration::from_millis(1500)), "1500ms");
    }
}
