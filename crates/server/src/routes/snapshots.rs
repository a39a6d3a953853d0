//! `/snapshots`: Hyper's volume snapshots (create, list, inspect, remove). A volume is made
//! from one with `POST /volumes/create` and `DriverOpts.snapshot`.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use node::volumes::Snapshot;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{filter_values, flag, Params};
use crate::error::{ApiError, ApiResult};
use crate::transport::TenantId;
use crate::AppState;

/// Hyper's `Snapshot` object (`Size` in GB), with its creation time.
fn snapshot_json(s: &Snapshot) -> Value {
    json!({
        "ID": s.id,
        "Name": s.name,
        "Volume": s.volume,
        "Size": s.size_gb,
        "Driver": s.driver,
        "CreatedAt": s.created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

pub async fn list(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Query(q): Query<Params>,
) -> ApiResult<Json<Value>> {
    let f = q.get("filters");
    let names = filter_values(f, "name")?;
    let volumes = filter_values(f, "volume")?;
    let out: Vec<Value> = app
        .runtime
        .volumes
        .snapshots(&tenant)?
        .iter()
        .filter(|s| {
            names
                .as_ref()
                .is_none_or(|n| n.iter().any(|n| s.name.contains(n.as_str())))
        })
        .filter(|s| volumes.as_ref().is_none_or(|v| v.contains(&s.volume)))
        .map(snapshot_json)
        .collect();
    Ok(Json(json!({"Snapshots": out, "Warnings": []})))
}

/// Hyper's client sends the parameters twice: in the query and as this body.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    name: String,
    volume: String,
    force: bool,
}

pub async fn create(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Query(q): Query<Params>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let body: CreateBody = if body.is_empty() {
        CreateBody::default()
    } else {
        super::json_body(&body, "snapshot create request")?
    };
    let volume = q
        .get("volume")
        .filter(|v| !v.is_empty())
        .cloned()
        .unwrap_or(body.volume);
    if volume.is_empty() {
        return Err(ApiError::bad_request(
            "missing volume: say which volume to snapshot",
        ));
    }
    let name = q
        .get("name")
        .filter(|v| !v.is_empty())
        .cloned()
        .unwrap_or(body.name);
    let force = flag(&q, "force", false) || body.force;
    let s = app
        .runtime
        .create_snapshot(&tenant, &volume, &name, force)
        .await?;
    Ok((StatusCode::CREATED, Json(snapshot_json(&s))))
}

pub async fn inspect(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(reference): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(snapshot_json(
        &app.runtime.volumes.snapshot(&tenant, &reference)?,
    )))
}

pub async fn remove(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(reference): Path<String>,
) -> ApiResult<StatusCode> {
    app.runtime.remove_snapshot(&tenant, &reference).await?;
    Ok(StatusCode::NO_CONTENT)
}
