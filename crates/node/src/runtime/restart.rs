//! Restart policies as Docker applies them (`no`, `on-failure[:N]`, `always`,
//! `unless-stopped`). After every exit the policy decides; a restart waits a back-off that
//! starts at 100 ms, doubles with every quick exit up to a minute, and falls back to 100 ms
//! once a run lasted ten seconds, so a crash loop cannot keep the node busy booting VMs.
//! While it waits the container is `restarting`; `stop`, `kill` and `rm -f` cancel it.
//!
//! A stop by the user always sticks, `always` included: a hyperd restart is invisible to
//! tenants (their VMs carry on), so unlike dockerd's own restart it brings nothing back.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;

use super::{Entry, Runtime};
use crate::model::{Container, HostConfig, Status};
use crate::{Result, RuntimeError};

const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(60);
/// A run at least this long resets the back-off.
const STEADY_RUN: TimeDelta = TimeDelta::seconds(10);

/// The wait before the next restart, given the previous one (zero before the first).
pub(super) fn next_delay(previous: Duration, ran: TimeDelta) -> Duration {
    if previous.is_zero() || ran >= STEADY_RUN {
        FIRST_DELAY
    } else {
        (previous * 2).min(MAX_DELAY)
    }
}

/// Whether the policy brings the container back after the exit recorded in it.
pub(super) fn wanted(c: &Container) -> bool {
    let p = &c.host_config.restart_policy;
    if c.state.stopped_by_user || c.host_config.auto_remove || c.lost.is_some() {
        return false;
    }
    match p.name.as_str() {
        "always" | "unless-stopped" => true,
        "on-failure" => {
            c.state.exit_code != 0
                && (p.maximum_retry_count == 0 || (c.restart_count as i64) < p.maximum_retry_count)
        }
        _ => false,
    }
}

/// Refuses a policy Docker would refuse, with Docker's words.
pub(super) fn check_policy(hc: &HostConfig) -> Result<()> {
    let p = &hc.restart_policy;
    let invalid = |why: &str| {
        Err(RuntimeError::Invalid(format!(
            "invalid restart policy: {why}"
        )))
    };
    match p.name.as_str() {
        "" | "no" | "always" | "unless-stopped" if p.maximum_retry_count == 0 => {}
        "on-failure" if p.maximum_retry_count >= 0 => {}
        "on-failure" => return invalid("maximum retry count cannot be negative"),
        "" | "no" | "always" | "unless-stopped" => {
            return invalid("maximum retry count can only be used with 'on-failure'")
        }
        other => {
            return invalid(&format!(
            "unknown policy '{other}'; use one of 'no', 'always', 'on-failure' or 'unless-stopped'"
        ))
        }
    }
    if hc.auto_remove && !matches!(p.name.as_str(), "" | "no") {
        return Err(RuntimeError::Invalid(
            "conflicting options: cannot specify both --restart and --rm".into(),
        ));
    }
    Ok(())
}

impl Runtime {
    /// Waits out the back-off after an exit that left `entry` restarting, then starts it again
    /// unless, meanwhile, it was stopped, started or removed. A restart that fails (no room for
    /// its VM, say) counts as another exit: the policy decides again after a longer wait.
    pub(super) async fn restart_after_backoff(self: Arc<Self>, entry: Arc<Entry>, ran: TimeDelta) {
        let mut ran = ran;
        loop {
            let delay = {
                let mut backoff = entry.restart_backoff.lock().expect("poisoned");
                *backoff = next_delay(*backoff, ran);
                *backoff
            };
            let exits = entry.lifecycle.borrow().exits;
            tokio::time::sleep(delay).await;
            let _op = entry.ops.lock().await;
            let c = entry.snapshot();
            let lifecycle = *entry.lifecycle.borrow();
            if c.state.status != Status::Restarting || lifecycle.exits != exits || lifecycle.removed
            {
                return;
            }
            if self.update(&entry, |c| c.restart_count += 1).is_err() {
                return;
            }
            let Err(e) = self.start_locked(&entry).await else {
                return;
            };
            tracing::warn!(container = %c.id, "restart by policy failed: {e}");
            let again = self.update(&entry, |c| {
                if wanted(c) {
                    c.state.status = Status::Restarting;
                }
            });
            if !again.is_ok_and(|c| c.state.status == Status::Restarting) {
                return;
            }
            ran = TimeDelta::zero();
        }
    }

    /// A start or restart by the user begins the policy afresh: Docker resets the count.
    pub(super) fn reset_restart_policy(&self, entry: &Entry) -> Result<()> {
        *entry.restart_backoff.lock().expect("poisoned") = Duration::ZERO;
        self.update(entry, |c| c.restart_count = 0).map(drop)
    }

    /// `stop` or `kill` of a container waiting to restart: nothing runs, so cancelling the
    /// restart is the whole stop.
    pub(super) fn cancel_restart(&self, entry: &Entry) -> Result<Container> {
        self.update(entry, |c| {
            c.state.status = Status::Exited;
            c.state.stopped_by_user = true;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RestartPolicy;

    fn exited(policy: &str, max: i64, exit_code: i64) -> Container {
        let mut c: Container = serde_json::from_value(serde_json::json!({
            "id": "c", "tenant": "t", "name": "n", "created": "2026-11-22T00:00:00Z",
            "image": "busybox", "image_id": "sha256:x", "path": "sh", "args": [],
            "config": {}, "host_config": {}, "size": "s4",
            "state": {"status": "exited", "exit_code": 0, "error": "", "oom_killed": false,
                      "started_at": null, "finished_at": null, "stopped_by_user": false},
            "restart_count": 0
        }))
        .unwrap();
        c.host_config.restart_policy = RestartPolicy {
            name: policy.into(),
            maximum_retry_count: max,
        };
        c.state.exit_code = exit_code;
        c
    }

    #[test]
    fn backoff_doubles_on_quick_exits_and_resets_after_a_steady_run() {
        let quick = TimeDelta::seconds(1);
        let mut d = Duration::ZERO;
        let mut seen = vec![];
        for _ in 0..12 {
            d = next_delay(d, quick);
            seen.push(d.as_millis());
        }
        assert_eq!(&seen[..4], &[100, 200, 400, 800]);
        assert_eq!(*seen.last().unwrap(), 60_000, "capped at a minute");
        assert_eq!(next_delay(d, TimeDelta::seconds(10)), FIRST_DELAY);
    }

    #[test]
    fn policies_decide_as_docker_does() {
        assert!(!wanted(&exited("no", 0, 1)));
        assert!(!wanted(&exited("", 0, 1)));
        assert!(wanted(&exited("always", 0, 0)));
        assert!(wanted(&exited("unless-stopped", 0, 0)));
        assert!(
            !wanted(&exited("on-failure", 0, 0)),
            "success ends on-failure"
        );
        assert!(wanted(&exited("on-failure", 0, 3)), "no limit");
        let mut c = exited("on-failure", 2, 3);
        assert!(wanted(&c));
        c.restart_count = 2;
        assert!(!wanted(&c), "retries used up");
        let mut c = exited("always", 0, 0);
        c.state.stopped_by_user = true;
        assert!(!wanted(&c), "a stop by the user sticks");
    }

    #[test]
    fn bad_policies_are_refused() {
        let mut hc = HostConfig::default();
        hc.restart_policy.name = "sometimes".into();
        assert!(check_policy(&hc).is_err());
        hc.restart_policy = RestartPolicy {
            name: "always".into(),
            maximum_retry_count: 3,
        };
        assert!(check_policy(&hc).is_err());
        hc.restart_policy.name = "on-failure".into();
        assert!(check_policy(&hc).is_ok());
        hc.auto_remove = true;
        assert!(check_policy(&hc).is_err());
    }
}
