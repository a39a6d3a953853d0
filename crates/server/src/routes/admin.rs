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
    let (access, secret) = app.accounts.create_tenant(&name).map_err(account_error)?;
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
    let change: node::quota::QuotaChange = serde_json::from_value(change)
        .map_err(|e| ApiError::bad_request(format!("invalid quota change: {e}")))?;
    let store = app.runtime.store();
    let mut quotas = node::quota::load(store.as_ref(), &name)?;
    change.apply(&mut quotas);
    store.put(
        &node::quota::quotas_key(&name),
        serde_json::to_vec(&quotas).expect("json"),
    )?;
    Ok(Json(quotas))
}

/// A client certificate for the stock Docker CLI (`docker --tlsverify`): CA, cert and key PEMs.
pub async fn issue_cert(
    State(app): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    operator_only(peer)?;
    known_tenant(&app, &name)?;
    let authority = app.tls.as_ref().ok_or_else(|| {
        ApiError::bad_request(
            "hyperd serves plain HTTP (--insecure-http): no certificates to issue",
        )
    })?;
    let (cert, key, fingerprint) = authority
        .issue_client_cert(&name)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    app.accounts
        .record_cert(&name, &fingerprint)
        .map_err(account_error)?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({"Tenant": name, "CA": authority.ca_pem(), "Cert": cert, "Key": key, "Fingerprint": fingerprint}),
        ),
    ))
}

/// A bearer token for clients that cannot sign (docker-py, the Docker CLI's HttpHeaders).
pub async fn issue_token(
    State(app): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    operator_only(peer)?;
    known_tenant(&app, &name)?;
    let token = app.accounts.create_token(&name).map_err(account_error)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"Tenant": name, "Token": token})),
    ))
}

pub async fn list_keys(
    State(app): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    operator_only(peer)?;
    known_tenant(&app, &name)?;
    Ok(Json(
        json!({"Tenant": name, "AccessKeys": app.accounts.keys_of(&name).map_err(account_error)?}),
    ))
}

pub async fn revoke_key(
    State(app): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path(access): Path<String>,
) -> ApiResult<StatusCode> {
    operator_only(peer)?;
    match app.accounts.revoke_key(&access).map_err(account_error)? {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no access key {access}"),
        )),
    }
}

fn known_tenant(app: &AppState, name: &str) -> ApiResult<()> {
    match app.accounts.tenant_exists(name).map_err(account_error)? {
        true => Ok(()),
        false => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no tenant {name:?}"),
        )),
    }
}

fn account_error(e: crate::accounts::AccountError) -> ApiError {
    match e {
        crate::accounts::AccountError::InvalidName(_) => ApiError::bad_request(e.to_string()),
        crate::accounts::AccountError::Store(s) => ApiError::from(s),
    }
}
