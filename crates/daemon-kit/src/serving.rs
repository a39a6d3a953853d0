//! The moment a daemon starts serving, in the order hyperd relies on.

use std::path::Path;

use anyhow::Context;

use crate::{Pidfile, ReadyNotice};

/// Call once the listeners are bound: writes the pidfile, logs "serving" (first, so the log
/// says so by the time hyperd sees the parent exit) and lets a `--daemon` parent exit 0.
/// Keep the `Pidfile` until the daemon stops.
pub fn serving(pidfile: &Path, ready: Option<ReadyNotice>) -> anyhow::Result<Pidfile> {
    let pidfile =
        Pidfile::write(pidfile).with_context(|| format!("write {}", pidfile.display()))?;
    tracing::info!(pid = std::process::id(), "serving");
    if let Some(ready) = ready {
        ready.send().context("tell the parent we are ready")?;
    }
    Ok(pidfile)
}
