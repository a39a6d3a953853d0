//! `/volumes`: Docker's volume API (list, create, inspect, remove, prune) with Hyper's
//! extensions (`DriverOpts.size` in GB, `DriverOpts.snapshot`, the driver name `hyper`).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use node::volumes::{CreateRequest, Volume};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{filter_values, flag, Params};
use crate::error::{ApiError, ApiResult};
use crate::transport::{SentUri, TenantId};
use crate::AppState;

/// Hyper's own client speaks API 1.23 and reads a volume's size and container from its
/// labels; Docker's clients get the labels they set, nothing more (compose compares them).
fn hyper_client(sent: &SentUri) -> bool {
    let path = sent.0.path();
    let Some(version) = path.strip_prefix("/v").and_then(|p| p.split('/').next()) else {
        return false;
    };
    let Some((major, minor)) = version.split_once('.') else {
        return false;
    };
    match (major.parse::<u32>(), minor.parse::<u32>()) {
        (Ok(major), Ok(minor)) => (major, minor) <= (1, 23),
        _ => false,
    }
}

/// Docker's `Volume` object.
pub fn volume_json(v: &Volume, holder: Option<&str>, hyper_labels: bool) -> Value {
    let mut labels = v.labels.clone();
    if hyper_labels {
        labels.insert("size".into(), v.size_gb.to_string());
        labels.insert("container".into(), holder.unwrap_or("").to_string());
    }
    json!({
        "Name": v.name,
        "Driver": v.driver,
        "Mountpoint": "",
        "CreatedAt": v.created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "Status": {"Size": format!("{} GB", v.size_gb), "Container": holder.unwrap_or("")},
        "Labels": labels,
        "Scope": "local",
        "Options": v.options,
    })
}

fn present(app: &AppState, v: &Volume, sent: &SentUri) -> ApiResult<Value> {
    let holder = app.runtime.volume_holder(&v.tenant, &v.name)?;
    Ok(volume_json(v, holder.as_deref(), hyper_client(sent)))
}

/// `label` filter values: `key` or `key=value`.
fn has_labels(v: &Volume, wanted: &[String]) -> bool {
    wanted.iter().all(|w| match w.split_once('=') {
        Some((k, val)) => v.labels.get(k).is_some_and(|x| x == val),
        None => v.labels.contains_key(w),
    })
}

pub async fn list(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Extension(sent): Extension<SentUri>,
    Query(q): Query<Params>,
) -> ApiResult<Json<Value>> {
    let f = q.get("filters");
    if let Some(raw) = f.filter(|f| !f.is_empty()) {
        let parsed: Value = serde_json::from_str(raw)
            .map_err(|e| ApiError::bad_request(format!("invalid filters: {e}")))?;
        if let Some(unknown) = parsed.as_object().and_then(|o| {
            o.keys()
                .find(|k| !matches!(k.as_str(), "name" | "label" | "dangling" | "driver"))
        }) {
            return Err(ApiError::bad_request(format!(
                "invalid filter '{unknown}': the volume filters are name, label, dangling and driver"
            )));
        }
    }
    let names = filter_values(f, "name")?;
    let labels = filter_values(f, "label")?.unwrap_or_default();
    let drivers = filter_values(f, "driver")?;
    let dangling = match filter_values(f, "dangling")?.as_deref() {
        None | Some([]) => None,
        Some([v]) => Some(matches!(v.as_str(), "true" | "1")),
        Some(_) => {
            return Err(ApiError::bad_request(
                "give one value for the dangling filter",
            ))
        }
    };
    let mut out = Vec::new();
    for v in app.runtime.volumes.list(&tenant)? {
        if names
            .as_ref()
            .is_some_and(|n| !n.iter().any(|n| v.name.contains(n.as_str())))
            || drivers
                .as_ref()
                .is_some_and(|d| !d.iter().any(|d| *d == v.driver || d == "hyper"))
            || !has_labels(&v, &labels)
            || dangling.is_some_and(|d| d != app.runtime.volume_users(&tenant, &v.name).is_empty())
        {
            continue;
        }
        out.push(present(&app, &v, &sent)?);
    }
    Ok(Json(json!({"Volumes": out, "Warnings": []})))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    name: String,
    driver: String,
    #[serde(deserialize_with = "null_as_empty")]
    driver_opts: BTreeMap<String, String>,
    #[serde(deserialize_with = "null_as_empty")]
    labels: BTreeMap<String, String>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    Ok(Option::<BTreeMap<String, String>>::deserialize(d)?.unwrap_or_default())
}

pub async fn create(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Extension(sent): Extension<SentUri>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let body: CreateBody = if body.is_empty() {
        CreateBody::default()
    } else {
        super::json_body(&body, "volume create request")?
    };
    let req = CreateRequest {
        name: body.name,
        driver: body.driver,
        options: body.driver_opts,
        labels: body.labels,
        anonymous: false,
    };
    let (v, _) = app.runtime.create_volume(&tenant, req).await?;
    Ok((StatusCode::CREATED, Json(present(&app, &v, &sent)?)))
}

pub async fn inspect(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Extension(sent): Extension<SentUri>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let v = app.runtime.volumes.get(&tenant, &name)?;
    Ok(Json(present(&app, &v, &sent)?))
}

pub async fn remove(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(name): Path<String>,
    Query(q): Query<Params>,
) -> ApiResult<StatusCode> {
    app.runtime
        .remove_volume(&tenant, &name, flag(&q, "force", false))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn prune(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Query(q): Query<Params>,
) -> ApiResult<Json<Value>> {
    let f = q.get("filters");
    let all = filter_values(f, "all")?
        .is_some_and(|v| v.iter().any(|v| matches!(v.as_str(), "true" | "1")));
    let labels = filter_values(f, "label")?.unwrap_or_default();
    let not_labels = filter_values(f, "label!")?.unwrap_or_default();
    let (removed, freed) = app
        .runtime
        .prune_volumes(&tenant, all, |v| {
            !has_labels(v, &labels) || (!not_labels.is_empty() && has_labels(v, &not_labels))
        })
        .await?;
    Ok(Json(
        json!({"VolumesDeleted": removed, "SpaceReclaimed": freed}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyper_clients_are_told_by_their_api_version() {
        for (i, (uri, want)) in [
            ("/v1.23/volumes", true),
            ("/v1.19/volumes", true),
            ("/v1.41/volumes", false),
            ("/volumes", false),
        ]
        .iter()
        .enumerate()
        {
            let sent = SentUri(uri.parse().unwrap());
            assert_eq!(hyper_client(&sent), *want, "test[{i}] {uri}");
        }
    }
}
