//! The status file hyperd's reconciler reads: every backend's health and load.

use std::path::{Path, PathBuf};

use chrono::SecondsFormat;
use serde_json::{json, Map, Value};

use crate::services::Services;

/// `{"services": {NAME: {"backends": {ID: {"healthy", "active", "since"}}}}}` for the
/// services listening now; draining ones are left out.
pub fn render(services: &Services) -> Value {
    let mut by_name = Map::new();
    for service in services.iter() {
        let mut backends = Map::new();
        for backend in service.pool.backends() {
            let snapshot = backend.snapshot();
            backends.insert(
                backend.id.clone(),
                json!({
                    "healthy": snapshot.healthy,
                    "active": snapshot.active,
                    "since": snapshot.since.to_rfc3339_opts(SecondsFormat::Millis, true),
                }),
            );
        }
        by_name.insert(service.name.clone(), json!({ "backends": backends }));
    }
    json!({ "services": by_name })
}

/// Written whole or not at all (temp file + rename).
pub fn write(path: &Path, status: &Value) -> std::io::Result<()> {
    let temp = PathBuf::from(format!("{}.tmp.{}", path.display(), std::process::id()));
    std::fs::write(&temp, format!("{status:#}\n"))?;
    std::fs::rename(&temp, path)
}
