//! `/fips`: Hyper's floating IPs (allocate, attach, detach, name, release, list).

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde_json::{json, Value};

use super::Params;
use crate::error::{ApiError, ApiResult};
use crate::transport::TenantId;
use crate::AppState;

fn param<'a>(q: &'a Params, name: &str) -> ApiResult<&'a str> {
    q.get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("missing ?{name}=")))
}

pub async fn allocate(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Query(q): Query<Params>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let count: u64 = match q.get("count").filter(|v| !v.is_empty()) {
        None => 1,
        Some(v) => v
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid count {v:?}: give a number")))?,
    };
    let ips = app.runtime.fip_allocate(&tenant, count).await?;
    Ok((StatusCode::CREATED, Json(json!(ips))))
}

pub async fn release(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Query(q): Query<Params>,
) -> ApiResult<StatusCode> {
    app.runtime.fip_release(&tenant, param(&q, "ip")?).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn attach(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Query(q): Query<Params>,
) -> ApiResult<StatusCode> {
    let ip = param(&q, "ip")?.to_string();
    // Another node's container too: the store says which FIP it holds, and its node (which
    // follows the FIP records) forwards it, the others route it there.
    let c = app.runtime.get_anywhere(&tenant, param(&q, "container")?)?;
    app.runtime
        .with_networks(move |n| n.fip_attach(&c, &ip))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn detach(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Query(q): Query<Params>,
) -> ApiResult<Json<Value>> {
    let c = app.runtime.get_anywhere(&tenant, param(&q, "container")?)?;
    let ip = app.runtime.with_networks(move |n| n.fip_detach(&c)).await?;
    Ok(Json(json!(ip)))
}

pub async fn name(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Query(q): Query<Params>,
) -> ApiResult<StatusCode> {
    let ip = param(&q, "ip")?.to_string();
    let name = q.get("name").cloned().unwrap_or_default();
    app.runtime
        .with_networks(move |n| n.fip_rename(&tenant, &ip, &name))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
) -> ApiResult<Json<Value>> {
    let t = tenant.clone();
    let fips = app.runtime.with_networks(move |n| n.fip_list(&t)).await?;
    let containers = app.runtime.list(&tenant);
    Ok(Json(Value::Array(
        fips.iter()
            .map(|f| {
                let container = containers
                    .iter()
                    .find(|c| c.id == f.container)
                    .map(|c| c.name.clone())
                    .unwrap_or_default();
                json!({"fip": f.ip, "name": f.name, "container": container, "service": f.service})
            })
            .collect(),
    )))
}
