//! Reading the JSON config file hyperd writes.

use std::path::Path;

use anyhow::Context;
use serde::de::DeserializeOwned;

/// The file at `path`, parsed; errors name the path and whether reading or parsing failed.
pub fn read<T: DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
}
