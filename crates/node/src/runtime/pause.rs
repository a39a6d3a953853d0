//! `docker pause` / `unpause`: the whole VM stops (QMP `stop`/`cont`, done by the supervisor,
//! which reads QEMU's run state back on every `state` request). The record's `paused` mirrors
//! the supervisor's: it is read again before each pause or unpause, at recovery and on
//! inspect, so a VM resumed behind hyperd's back is reported as it is.
//!
//! Billing is untouched: a paused container holds its memory and disk, and its run segment
//! stays open as Docker's paused container stays "Up".

use std::time::Duration;

use serde_json::json;

use super::{Entry, Runtime};
use crate::events::Event;
use crate::model::Container;
use crate::{shim_link, Result, RuntimeError};

/// How long an inspect waits for the supervisor's view before it answers with the record's.
const ASK_SUPERVISOR: Duration = Duration::from_secs(3);

impl Runtime {
    pub async fn pause(&self, tenant: &str, reference: &str) -> Result<()> {
        self.set_paused(tenant, reference, true).await
    }

    pub async fn unpause(&self, tenant: &str, reference: &str) -> Result<()> {
        self.set_paused(tenant, reference, false).await
    }

    async fn set_paused(&self, tenant: &str, reference: &str, paused: bool) -> Result<()> {
        let entry = self.entry(tenant, reference)?;
        let _op = entry.ops.lock().await;
        let c = entry.snapshot();
        if !c.is_running() {
            return Err(RuntimeError::Conflict(format!(
                "Container {} is not running",
                c.id
            )));
        }
        let now_paused = self.sync_paused(&entry).await;
        if paused && now_paused {
            return Err(RuntimeError::Conflict(format!(
                "Container {} is already paused",
                c.id
            )));
        }
        if !paused && !now_paused {
            return Err(RuntimeError::Conflict(format!(
                "Container {} is not paused",
                c.id
            )));
        }
        let op = if paused { "pause" } else { "resume" };
        shim_link::request(&self.dir(&c.id), json!({ "op": op })).await?;
        let c = self.update(&entry, |c| c.state.paused = paused)?;
        let action = if paused { "pause" } else { "unpause" };
        self.events.emit(tenant, Event::container(&c, action, &[]));
        Ok(())
    }

    /// The container with `paused` as its VM is now (the record as it is when the supervisor
    /// does not answer in time).
    pub async fn get_current(&self, tenant: &str, reference: &str) -> Result<Container> {
        let entry = self.entry(tenant, reference)?;
        if entry.snapshot().is_running() {
            self.sync_paused(&entry).await;
        }
        Ok(entry.snapshot())
    }

    /// Brings the record's `paused` in line with the supervisor's and returns it.
    pub(super) async fn sync_paused(&self, entry: &Entry) -> bool {
        let c = entry.snapshot();
        if !c.is_running() {
            return false;
        }
        let dir = self.dir(&c.id);
        let asked = shim_link::request(&dir, json!({"op": "state"}));
        let paused = match tokio::time::timeout(ASK_SUPERVISOR, asked).await {
            Ok(Ok(reply)) if reply["state"]["status"] == "running" => {
                reply["state"]["paused"].as_bool().unwrap_or(false)
            }
            _ => return c.state.paused,
        };
        if paused != c.state.paused {
            tracing::info!(container = %c.id, paused, "the VM's run state changed outside hyperd");
            if let Err(e) = self.update(entry, |c| c.state.paused = paused) {
                tracing::warn!("recording the run state of {}: {e}", c.id);
            }
        }
        paused
    }

    /// Docker's stop signal and SIGKILL (any signal when the container names no stop signal)
    /// resume a paused container so it is delivered.
    pub(super) fn signal_resumes(c: &Container, signal: i32) -> bool {
        if !c.is_paused() {
            return false;
        }
        match c.config.stop_signal.as_deref().filter(|s| !s.is_empty()) {
            None => true,
            Some(stop) => {
                signal == libc::SIGKILL || crate::validate::signal(stop).ok() == Some(signal)
            }
        }
    }

    /// Refused while paused, as Docker refuses it (`what`: "exec", "attach").
    pub(super) fn not_paused(c: &Container, what: &str) -> Result<()> {
        if c.is_paused() {
            return Err(RuntimeError::Conflict(format!(
                "Container {} is paused, unpause the container before {what}",
                c.id
            )));
        }
        Ok(())
    }
}
