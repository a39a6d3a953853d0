//! `/services`: Hyper's load-balanced, self-healing services.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use node::services::{self, ServiceSpec};
use serde_json::Value;

use super::{flag, Params};
use crate::error::{ApiError, ApiResult};
use crate::transport::TenantId;
use crate::AppState;

async fn service_json(
    app: &AppState,
    tenant: &str,
    r: &services::ServiceRecord,
) -> ApiResult<Value> {
    let (t, name) = (tenant.to_string(), r.spec.name.clone());
    let fip = app
        .runtime
        .with_networks(move |n| {
            Ok(n.fip_list(&t)?
                .into_iter()
                .find(|f| f.service == name)
                .map(|f| f.ip))
        })
        .await?;
    Ok(services::to_json(&app.runtime, r, fip)?)
}

pub async fn create(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let spec: ServiceSpec = super::json_body(&body, "service")?;
    let r = services::create(&app.runtime, &tenant, spec).await?;
    Ok((
        StatusCode::CREATED,
        Json(service_json(&app, &tenant, &r).await?),
    ))
}

pub async fn list(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
) -> ApiResult<Json<Value>> {
    let mut out = Vec::new();
    for r in services::list(&app.runtime, &tenant)? {
        out.push(service_json(&app, &tenant, &r).await?);
    }
    Ok(Json(Value::Array(out)))
}

pub async fn inspect(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let r = services::get(&app.runtime, &tenant, &name)?;
    Ok(Json(service_json(&app, &tenant, &r).await?))
}

pub async fn update(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let raw: Value = super::json_body(&body, "service update")?;
    let replicas = match &raw["Replicas"] {
        Value::Null => None,
        v => Some(
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| ApiError::bad_request("Replicas must be a number"))?,
        ),
    };
    let image = raw["Image"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(String::from);
    let fip = raw["FIP"].as_str().map(String::from);
    let r = services::update(&app.runtime, &tenant, &name, replicas, image, fip).await?;
    Ok(Json(service_json(&app, &tenant, &r).await?))
}

pub async fn remove(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(name): Path<String>,
    Query(q): Query<Params>,
) -> ApiResult<StatusCode> {
    services::remove(&app.runtime, &tenant, &name, flag(&q, "keep", false)).await?;
    Ok(StatusCode::NO_CONTENT)
}
