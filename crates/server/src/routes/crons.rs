//! `/crons`: Hyper's cron jobs, as Hyper's client (hypercli's `cron` commands) speaks them.
//!
//! The create body is Hyper's `Cron` struct, every key always sent: the name is in the `name`
//! query; `Config`, `HostConfig` and `NetConfig` go through the same checks as a container
//! create (what hyperd does not honour is refused with a 501 naming it); the mail keys are
//! refused unless they ask for no mail (there is no mail here); `AccessKey`/`SecretKey`, when
//! given, must be a working key pair of the signing tenant, of which only the access key is
//! kept; `SuccessCount`, `ErrorCount`, `LastRun`, `Created` and an empty `Owner` are the
//! server's to fill and ignored. Our extensions: `ConcurrencyPolicy` (allow, forbid, replace)
//! and `MissedRunPolicy` (run-once, skip), also accepted as the labels
//! `sh_hyper_cron_concurrency` / `sh_hyper_cron_missed` so that Hyper's own CLI can set them
//! with `-l`.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, TimeDelta, Utc};
use node::crons::{self, Concurrency, CronRecord, CronSpec, Missed};
use serde_json::{json, Map, Value};

use super::Params;
use crate::error::{ApiError, ApiResult};
use crate::transport::TenantId;
use crate::AppState;

/// The keys of Hyper's `Cron` struct, and ours.
const KNOWN_KEYS: &[&str] = &[
    "Name",
    "Schedule",
    "AccessKey",
    "SecretKey",
    "ContainerName",
    "Config",
    "HostConfig",
    "NetConfig",
    "Owner",
    "OwnerEmail",
    "MailPolicy",
    "SuccessCount",
    "ErrorCount",
    "LastRun",
    "Created",
    "Disabled",
    "Tags",
    "ConcurrencyPolicy",
    "MissedRunPolicy",
];

fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, message)
}

fn text<'a>(body: &'a Map<String, Value>, key: &str) -> ApiResult<&'a str> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(""),
        Some(Value::String(s)) => Ok(s),
        Some(v) => Err(ApiError::bad_request(format!(
            "invalid cron: {key} must be a string, not {v}"
        ))),
    }
}

/// No mail is ever sent: a body that asks for some is refused, one that asks for none (Hyper's
/// client's default: `MailPolicy` "on-failure" and no address) is taken.
fn check_mail(body: &Map<String, Value>) -> ApiResult<String> {
    let email = text(body, "OwnerEmail")?;
    if !email.is_empty() {
        return Err(ApiError::not_implemented(format!(
            "mail notifications are not supported (OwnerEmail {email:?}, --mailto): hyperd \
             sends no mail; leave it empty and read the runs with `hyper cron history`"
        )));
    }
    let policy = text(body, "MailPolicy")?;
    if !matches!(policy, "" | "on-failure" | "never") {
        return Err(ApiError::not_implemented(format!(
            "mail policy {policy:?} (--mail) is not supported: hyperd sends no mail; leave it \
             at its default"
        )));
    }
    Ok(policy.to_string())
}

/// `AccessKey`/`SecretKey`: both or neither; given, a working pair of the signing tenant.
/// Only the access key is kept.
fn check_keys(app: &AppState, tenant: &str, body: &Map<String, Value>) -> ApiResult<String> {
    let (access, secret) = (text(body, "AccessKey")?, text(body, "SecretKey")?);
    match (access.is_empty(), secret.is_empty()) {
        (true, true) => return Ok(String::new()),
        (false, false) => {}
        _ => {
            return Err(ApiError::bad_request(
                "give both AccessKey and SecretKey (--access-key, --secret-key), or neither",
            ))
        }
    }
    let not_yours = || {
        forbidden(format!(
            "AccessKey {access} is not a key of your account: a cron runs with its owner's own \
             keys"
        ))
    };
    let key = app.accounts.key(access).ok_or_else(not_yours)?;
    if key.tenant != tenant {
        return Err(not_yours());
    }
    let stored = app.accounts.secret(access).ok_or_else(not_yours)?;
    use sha2::Digest;
    if sha2::Sha256::digest(stored.as_bytes()) != sha2::Sha256::digest(secret.as_bytes()) {
        return Err(forbidden(format!(
            "SecretKey does not match AccessKey {access}"
        )));
    }
    if let Some(why) = app.accounts.key_refusal(access, &key) {
        return Err(forbidden(why));
    }
    Ok(access.to_string())
}

/// A policy from its body key or its label (they must agree when both are given).
fn policy<T>(
    body: &Map<String, Value>,
    key: &str,
    config: &Value,
    label: &str,
    parse: fn(&str) -> Option<T>,
    choices: &str,
) -> ApiResult<Option<T>> {
    let from_body = text(body, key)?;
    let from_label = config["Labels"][label].as_str().unwrap_or("");
    let chosen = match (from_body, from_label) {
        ("", "") => return Ok(None),
        (b, "") => b,
        ("", l) => l,
        (b, l) if b == l => b,
        (b, l) => {
            return Err(ApiError::bad_request(format!(
                "{key} {b:?} and label {label}={l:?} disagree"
            )))
        }
    };
    parse(chosen)
        .map(Some)
        .ok_or_else(|| ApiError::bad_request(format!("invalid {key} {chosen:?}: use {choices}")))
}

fn spec_from(app: &AppState, tenant: &str, name: &str, raw: &Value) -> ApiResult<CronSpec> {
    let body = raw
        .as_object()
        .ok_or_else(|| ApiError::bad_request("invalid cron: the body must be a JSON object"))?;
    if let Some(k) = body.keys().find(|k| !KNOWN_KEYS.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "invalid cron: unknown key {k:?}"
        )));
    }
    let body_name = text(body, "Name")?;
    let name = match (name, body_name) {
        ("", b) => b,
        (q, "") => q,
        (q, b) if q == b => q,
        (q, b) => {
            return Err(ApiError::bad_request(format!(
                "the name query ({q:?}) and the body's Name ({b:?}) differ"
            )))
        }
    };
    let owner = text(body, "Owner")?;
    if !owner.is_empty() && owner != tenant {
        return Err(ApiError::bad_request(
            "Owner is set by the server: leave it empty",
        ));
    }
    match body.get("Tags") {
        None | Some(Value::Null) => {}
        Some(Value::Object(o)) if o.is_empty() => {}
        Some(_) => {
            return Err(ApiError::not_implemented(
                "Tags (servers to run the job on) are not supported: runs go where hyperd \
                 places containers",
            ))
        }
    }
    let mail_policy = check_mail(body)?;
    let access_key = check_keys(app, tenant, body)?;
    let disabled = match body.get("Disabled") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "invalid cron: Disabled must be true or false, not {v}"
            )))
        }
    };
    let raw_config = match body.get("Config") {
        Some(c @ Value::Object(_)) => c.clone(),
        _ => return Err(ApiError::bad_request("a cron needs a Config with an Image")),
    };
    let object_or_null = |key: &str| match body.get(key) {
        None | Some(Value::Null) => Ok(Value::Null),
        Some(v @ Value::Object(_)) => Ok(v.clone()),
        Some(v) => Err(ApiError::bad_request(format!(
            "invalid cron: {key} must be an object, not {v}"
        ))),
    };
    let (raw_host_config, raw_net_config) =
        (object_or_null("HostConfig")?, object_or_null("NetConfig")?);
    // A container create's body, through the create's own checks.
    let mut create = raw_config.clone();
    create["HostConfig"] = raw_host_config.clone();
    create["NetworkingConfig"] = raw_net_config.clone();
    let (config, host_config, aliases) =
        super::containers::create_request(&serde_json::to_vec(&create).expect("json"))?;
    let concurrency = policy(
        body,
        "ConcurrencyPolicy",
        &raw_config,
        crons::CONCURRENCY_LABEL,
        Concurrency::parse,
        "allow, forbid or replace",
    )?
    .unwrap_or_default();
    let missed = policy(
        body,
        "MissedRunPolicy",
        &raw_config,
        crons::MISSED_LABEL,
        Missed::parse,
        "run-once or skip",
    )?
    .unwrap_or_default();
    Ok(CronSpec {
        name: name.to_string(),
        schedule: text(body, "Schedule")?.to_string(),
        access_key,
        container_name: text(body, "ContainerName")?.to_string(),
        mail_policy,
        disabled,
        concurrency,
        missed,
        raw_config,
        raw_host_config,
        raw_net_config,
        config,
        host_config,
        aliases,
    })
}

fn cron_json(r: &CronRecord) -> Value {
    crons::to_json(r, crons::next_run(r))
}

pub async fn create(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Query(q): Query<Params>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let raw: Value = super::json_body(&body, "cron")?;
    let name = q.get("name").map(String::as_str).unwrap_or("");
    let spec = spec_from(&app, &tenant, name, &raw)?;
    let r = crons::create(&app.runtime, &tenant, spec)?;
    Ok((StatusCode::CREATED, Json(cron_json(&r))))
}

/// `filters`: `name` (part of the name), `image`, `container-name`.
fn matches(r: &CronRecord, filters: &Map<String, Value>) -> ApiResult<bool> {
    for (key, values) in filters {
        let values: Vec<String> = match values {
            Value::Array(a) => a
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            Value::Object(o) => o.keys().cloned().collect(),
            _ => vec![],
        };
        let ok = match key.as_str() {
            "name" => values.iter().any(|v| r.name.contains(v.as_str())),
            "image" => values
                .iter()
                .any(|v| node::images::normalize(v) == node::images::normalize(&r.config.image)),
            "container-name" => values.contains(&r.container_name),
            other => {
                return Err(ApiError::bad_request(format!(
                    "invalid filter '{other}': use name, image or container-name"
                )))
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

pub async fn list(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Query(q): Query<Params>,
) -> ApiResult<Json<Value>> {
    let filters: Map<String, Value> = match q.get("filters").filter(|f| !f.is_empty()) {
        Some(f) => serde_json::from_str(f)
            .map_err(|e| ApiError::bad_request(format!("invalid filters: {e}")))?,
        None => Map::new(),
    };
    let mut out = Vec::new();
    for r in crons::list(&app.runtime, &tenant)? {
        if matches(&r, &filters)? {
            out.push(cron_json(&r));
        }
    }
    Ok(Json(Value::Array(out)))
}

pub async fn inspect(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(cron_json(&crons::get(&app.runtime, &tenant, &name)?)))
}

pub async fn remove(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    crons::remove(&app.runtime, &tenant, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A Go duration (`90s`, `10m`, `1h30m`, `1.5h`).
fn go_duration(s: &str) -> Option<TimeDelta> {
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&n| n > 0)?;
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return None,
        };
        total += value * unit;
        rest = &rest[u..];
    }
    Some(TimeDelta::milliseconds((total * 1000.0) as i64))
}

/// `--since`: Unix seconds, RFC 3339, or a duration back from now (`10m`), by the cron clock.
fn since_param(v: &str) -> ApiResult<Option<DateTime<Utc>>> {
    if v.is_empty() {
        return Ok(None);
    }
    if let Ok(secs) = v.parse::<f64>() {
        return Ok(DateTime::from_timestamp(secs as i64, 0));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    // Docker's forms without a zone (Hyper's client passes `--since` as typed): UTC here.
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(v, format) {
            return Ok(Some(t.and_utc()));
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).map(|t| t.and_utc()));
    }
    if let Some(d) = go_duration(v) {
        return Ok(Some(crons::clock::get().now() - d));
    }
    Err(ApiError::bad_request(format!(
        "invalid since {v:?}: give Unix seconds, an RFC 3339 time or a duration such as 10m"
    )))
}

pub async fn history(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(name): Path<String>,
    Query(q): Query<Params>,
) -> ApiResult<Json<Value>> {
    let since = since_param(q.get("since").map(String::as_str).unwrap_or(""))?;
    let tail =
        match q.get("tail").map(String::as_str).unwrap_or("all") {
            "" | "all" => None,
            t => Some(t.parse::<usize>().map_err(|_| {
                ApiError::bad_request(format!("invalid tail {t:?}: a number or all"))
            })?),
        };
    let runs: Vec<_> = crons::history(&app.runtime, &tenant, &name)?
        .into_iter()
        .filter(|r| since.is_none_or(|s| r.started_at >= s))
        .collect();
    let skip = tail.map_or(0, |n| runs.len().saturating_sub(n));
    Ok(Json(json!(runs[skip..]
        .iter()
        .map(|r| crons::run_json(&name, r))
        .collect::<Vec<_>>())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_since() {
        assert_eq!(go_duration("10m"), Some(TimeDelta::minutes(10)));
        assert_eq!(go_duration("1h30m"), Some(TimeDelta::minutes(90)));
        assert_eq!(go_duration("1.5h"), Some(TimeDelta::minutes(90)));
        for bad in ["", "m", "10", "10x", "h1"] {
            assert_eq!(go_duration(bad), None, "{bad}");
        }
        assert_eq!(
            since_param("1893456000").unwrap(),
            DateTime::from_timestamp(1_893_456_000, 0)
        );
        assert!(since_param("2030-01-01T00:00:00Z").unwrap().is_some());
        assert!(since_param("yesterday").is_err());
        // As Hyper's client sends it (tests/fixtures/hypercli/cron-history-2.json).
        assert_eq!(
            since_param("2026-12-04T00:00:00").unwrap(),
            DateTime::from_timestamp(1_796_342_400, 0)
        );
        assert_eq!(
            since_param("2026-12-04").unwrap(),
            DateTime::from_timestamp(1_796_342_400, 0)
        );
    }

    /// The `Config`/`HostConfig`/`NetConfig` Hyper's client sends pass the container create's
    /// checks as they are (every key, zero values included).
    #[test]
    fn hypers_container_config_passes_the_create_checks() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/hypercli");
        for name in [
            "cron-create-2.json",
            "cron-create-4.json",
            "cron-create-6.json",
        ] {
            let f: Value =
                serde_json::from_slice(&std::fs::read(format!("{dir}/{name}")).unwrap()).unwrap();
            let body = &f["body"];
            let mut create = body["Config"].clone();
            create["HostConfig"] = body["HostConfig"].clone();
            create["NetworkingConfig"] = body["NetConfig"].clone();
            let (config, hc, aliases) =
                super::super::containers::create_request(&serde_json::to_vec(&create).unwrap())
                    .unwrap_or_else(|e| panic!("{name}: {}", e.message));
            assert!(config.tty, "{name}");
            assert_eq!(config.image, "busybox", "{name}");
            assert_eq!(hc.network_mode, "bridge", "{name}");
            assert!(aliases.is_empty(), "{name}");
        }
    }
}
