//! Operator endpoints, served only on the root-only unix socket: `hyperd tenant ...` uses them
//! while hyperd runs (the store is then held by the daemon).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::transport::Peer;
use crate::AppState;

fn operator_only(peer: Peer) -> ApiResult<()> {
    match peer {
        Peer::Unix => Ok(()),
        Peer::Tcp => Err(ApiError::new(StatusCode::NOT_FOUND, "page not found")),
    }
}

pub async fn create_tenant(
    State(app): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    operator_only(peer)?;
    let (access, secret) = app.accounts.create_tenant(&name).map_err(|e| match e {
        crate::accounts::AccountError::InvalidName(_) => ApiError::bad_request(e.to_string()),
        crate::accounts::AccountError::Store(s) => ApiError::from(s),
    })?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"Tenant": name, "AccessKey": access, "SecretKey": secret})),
    ))
}

pub async fn set_quota(
    State(app): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
    Json(change): Json<Value>,
) -> ApiResult<Json<node::quota::Quotas>> {
    operator_only(peer)?;
    if !app
        .accounts
        .tenant_exists(&name)
        .map_err(|e| ApiError::bad_request(e.to_string()))?
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no tenant {name:?}"),
        ));
    }
    let store = app.runtime.store();
    let mut quotas = node::quota::load(store.as_ref(), &name)?;
    let field = |key: &str, current: u64| -> ApiResult<u64> {
        match &change[key] {
            Value::Null => Ok(current),
            v => v.as_u64().ok_or_else(|| {
                ApiError::bad_request(format!("{key} must be a non-negative integer"))
            }),
        }
    };
    quotas.containers = field("containers", quotas.containers)?;
    quotas.fips = field("fips", quotas.fips)?;
    quotas.services = field("services", quotas.services)?;
    store.put(
        &node::quota::quotas_key(&name),
        serde_json::to_vec(&quotas).expect("json"),
    )?;
    Ok(Json(quotas))
}
