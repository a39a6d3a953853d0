//! The HTTP API, one file per group of Docker endpoints.

pub mod containers;
pub mod exec;
pub mod images;
pub mod system;

use std::collections::HashMap;

use crate::error::ApiError;

pub type Params = HashMap<String, String>;

/// Docker's boolean query values: `1`, `true`, `True`... are true; absent is `default`.
pub fn flag(q: &Params, name: &str, default: bool) -> bool {
    match q.get(name).map(|v| v.to_ascii_lowercase()) {
        None => default,
        Some(v) => matches!(v.as_str(), "1" | "true" | "yes"),
    }
}

pub fn int(q: &Params, name: &str) -> Result<Option<i64>, ApiError> {
    match q.get(name).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid value for {name}: {v:?}"))),
    }
}

/// The values of one key of Docker's `filters` JSON, which clients send either as
/// `{"key": ["a"]}` or as `{"key": {"a": true}}`.
pub fn filter_values(filters: Option<&String>, key: &str) -> Result<Option<Vec<String>>, ApiError> {
    let Some(raw) = filters.filter(|f| !f.is_empty()) else {
        return Ok(None);
    };
    let parsed: serde_json::Value = serde_json::from_str(raw)
        .map_err(|e| ApiError::bad_request(format!("invalid filters: {e}")))?;
    Ok(match &parsed[key] {
        serde_json::Value::Array(a) => Some(
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
        ),
        serde_json::Value::Object(o) => Some(o.keys().cloned().collect()),
        _ => None,
    })
}
