//! `/funcs`: managing Hyper's serverless functions (signed, per tenant). The calls themselves go
//! to the function endpoint's paths (`func_endpoint`), where the function's UUID is the
//! credential.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use node::funcs::record;
use serde_json::Value;

use super::Params;
use crate::error::{ApiError, ApiResult};
use crate::transport::TenantId;
use crate::AppState;

pub async fn create(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let raw: Value = super::json_body(&body, "function")?;
    let req = record::parse_create(&raw)?;
    let r = app.funcs.create(&tenant, req)?;
    Ok((StatusCode::CREATED, Json(record::to_json(&r))))
}

pub async fn update(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let raw: Value = super::json_body(&body, "function update")?;
    let req = record::parse_update(&name, &raw)?;
    let r = app.funcs.update(&tenant, &name, req)?;
    Ok(Json(record::to_json(&r)))
}

pub async fn remove(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    app.funcs.remove(&tenant, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn inspect(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(record::to_json(&app.funcs.get(&tenant, &name)?)))
}

/// `GET /funcs/call/{id}`: the function a call belongs to (Hyper's client asks before it
/// fetches a call's output).
pub async fn by_call(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(call): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(record::to_json(&app.funcs.by_call(&tenant, &call)?)))
}

/// `GET /funcs?filters=`: a bare array. Filters: `name` (part of the name), `image`.
pub async fn list(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Query(q): Query<Params>,
) -> ApiResult<Json<Value>> {
    let filters = q.get("filters");
    if let Some(raw) = filters.filter(|f| !f.is_empty()) {
        let parsed: Value = serde_json::from_str(raw)
            .map_err(|e| ApiError::bad_request(format!("invalid filters: {e}")))?;
        if let Some(m) = parsed.as_object() {
            if let Some(k) = m.keys().find(|k| !matches!(k.as_str(), "name" | "image")) {
                return Err(ApiError::bad_request(format!(
                    "invalid filter '{k}': functions filter by name and image"
                )));
            }
        }
    }
    let names = super::filter_values(filters, "name")?;
    let images = super::filter_values(filters, "image")?;
    let out: Vec<Value> = app
        .funcs
        .list(&tenant)?
        .iter()
        .filter(|f| {
            names
                .as_ref()
                .is_none_or(|n| n.iter().any(|n| f.name.contains(n.as_str())))
        })
        .filter(|f| images.as_ref().is_none_or(|i| i.contains(&f.spec.image)))
        .map(record::to_json)
        .collect();
    Ok(Json(Value::Array(out)))
}
