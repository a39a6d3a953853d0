//! The HTTP API, one file per group of Docker endpoints.

pub mod admin;
pub mod archive;
pub mod commit;
pub mod compose;
pub mod containers;
pub mod crons;
pub mod df;
pub mod events;
pub mod exec;
pub mod fallback;
pub mod fips;
pub mod func_endpoint;
pub mod funcs;
pub mod image_push;
pub mod image_save;
pub mod images;
pub mod import;
pub mod networks;
pub mod nodes;
pub mod prune;
pub mod services;
pub mod sg;
pub mod snapshots;
pub mod stats;
pub mod system;
pub mod unsupported;
pub mod usage;
pub mod volume_init;
pub mod volumes;

use std::collections::HashMap;

use chrono::{DateTime, Utc};

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

/// A time in a query: Unix seconds (fractions allowed) or RFC 3339; absent, empty or 0 is none.
pub fn time_param(q: &Params, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    let v = q.get(name).map(String::as_str).unwrap_or("");
    if v.is_empty() || v == "0" {
        return Ok(None);
    }
    if let Ok(secs) = v.parse::<f64>() {
        let nanos = (secs.fract() * 1e9) as u32;
        return Ok(DateTime::from_timestamp(secs.trunc() as i64, nanos));
    }
    DateTime::parse_from_rfc3339(v)
        .map(|t| Some(t.with_timezone(&Utc)))
        .map_err(|_| ApiError::bad_request(format!("invalid time for {name}: {v:?}")))
}

/// `?h=&w=` of a resize request, clamped to what a terminal can be.
pub fn terminal_size(q: &Params) -> Result<(u16, u16), ApiError> {
    let clamp = |v: Option<i64>| v.unwrap_or(0).clamp(0, i64::from(u16::MAX)) as u16;
    Ok((clamp(int(q, "w")?), clamp(int(q, "h")?)))
}

/// A request body as JSON, or a 400 saying which body and why (`invalid exec config: ...`).
pub fn json_body<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid {what}: {e}")))
}
