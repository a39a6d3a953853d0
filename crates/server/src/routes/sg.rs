//! `/sg`: security groups, written as YAML rule files (Neutron semantics).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use node::network::sg::{self, SecurityGroup};
use serde_json::{json, Value};

use crate::error::ApiResult;
use crate::transport::TenantId;
use crate::AppState;

fn group_json(g: &SecurityGroup, members: Vec<String>) -> Value {
    json!({"Name": g.name, "Description": g.description, "Rules": g.rules, "Containers": members})
}

pub async fn list(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
) -> ApiResult<Json<Value>> {
    let out = app
        .runtime
        .with_networks(move |n| {
            sg::list(n.store_handle(), &tenant)?
                .iter()
                .map(|g| Ok(group_json(g, n.sg_members(&tenant, &g.name)?)))
                .collect::<node::Result<Vec<Value>>>()
        })
        .await?;
    Ok(Json(Value::Array(out)))
}

pub async fn inspect(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let out = app
        .runtime
        .with_networks(move |n| {
            let g = sg::get(n.store_handle(), &tenant, &name)?;
            Ok(group_json(&g, n.sg_members(&tenant, &name)?))
        })
        .await?;
    Ok(Json(out))
}

pub async fn create(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    sg::validate_name(&name)?;
    let g = sg::parse(&body, &name)?;
    app.runtime
        .with_networks(move |n| sg::create(n.store_handle(), &tenant, &g))
        .await?;
    Ok(StatusCode::CREATED)
}

/// Replaces a group's rules and applies them at once to every member, open connections
/// included.
pub async fn update(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let g = sg::parse(&body, &name)?;
    app.runtime
        .with_networks(move |n| {
            sg::update(n.store_handle(), &tenant, &g)?;
            n.sg_changed(&tenant, &g.name)
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn remove(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    app.runtime
        .with_networks(move |n| {
            let members = n.sg_members(&tenant, &name)?;
            sg::delete(n.store_handle(), &tenant, &name, &members)
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
