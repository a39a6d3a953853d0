//! Operator endpoints, served only on the root-only unix socket: `hyperd tenant ...` uses them
//! while hyperd runs (the store is then held by the daemon).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::TimeDelta;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::transport::Peer;
use crate::AppState;

pub(crate) fn operator_only(peer: Peer) -> ApiResult<()> {
    match peer {
        Peer::Unix => Ok(()),
        Peer::Tcp | Peer::Node => Err(ApiError::new(StatusCode::NOT_FOUND, "page not found")),
    }
}

pub async fn create_tenant(
    State(app): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    operator_only(peer)?;
    let ttl = requested_ttl(&body)?;
    let (access, secret) = app
        .accounts
        .create_tenant(&name, ttl)
        .map_err(account_error)?;
    let key = app.accounts.key(&access);
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "Tenant": name, "AccessKey": access, "SecretKey": secret,
            "Expires": key.and_then(|k| k.life.expires),
        })),
    ))
}

/// The lifetime asked for in an issuing request's body, `{"Expires": "24h"}`; none: the
/// default.
fn requested_ttl(body: &[u8]) -> ApiResult<Option<TimeDelta>> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase", deny_unknown_fields)]
    struct Issue {
        expires: Option<String>,
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let issue: Issue = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
    issue
        .expires
        .map(|text| crate::credentials::parse_ttl(&text))
        .transpose()
        .map_err(ApiError::bad_request)
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
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    operator_only(peer)?;
    known_tenant(&app, &name)?;
    let life = app.accounts.cert_lifetime(requested_ttl(&body)?);
    let authority = app.tls.as_ref().ok_or_else(|| {
        ApiError::bad_request(
            "hyperd serves plain HTTP (--insecure-http): no certificates to issue",
        )
    })?;
    let (cert, key, fingerprint) = authority
        .issue_client_cert(&name, &life)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let id = app
        .accounts
        .record_cert(&name, &fingerprint, life.clone())
        .map_err(account_error)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "Tenant": name, "CA": authority.ca_pem(), "Cert": cert, "Key": key,
            "Fingerprint": fingerprint, "Id": id, "Expires": life.expires,
        })),
    ))
}

/// A bearer token for clients that cannot sign (docker-py, the Docker CLI's HttpHeaders).
pub async fn issue_token(
    State(app): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    operator_only(peer)?;
    known_tenant(&app, &name)?;
    let ttl = requested_ttl(&body)?;
    let (token, id, record) = app
        .accounts
        .create_token(&name, ttl)
        .map_err(account_error)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"Tenant": name, "Token": token, "Id": id, "Expires": record.life.expires})),
    ))
}

/// Every credential of a tenant (keys, tokens, certificates): id, times, state; no secret.
pub async fn list_credentials(
    State(app): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    operator_only(peer)?;
    known_tenant(&app, &name)?;
    let all = app.accounts.credentials_of(&name).map_err(account_error)?;
    Ok(Json(json!({"Tenant": name, "Credentials": all})))
}

/// Revokes one credential by id, whatever its kind; it stops working at once.
pub async fn revoke(
    State(app): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    operator_only(peer)?;
    let tenant = app.accounts.revoke(&id).map_err(account_error)?;
    Ok(Json(json!({"Id": id, "Tenant": tenant})))
}

/// A new key pair for the tenant; every other key, token and certificate of it is revoked.
pub async fn rotate(
    State(app): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    operator_only(peer)?;
    let ttl = requested_ttl(&body)?;
    let (access, secret, revoked) = app.accounts.rotate(&name, ttl).map_err(account_error)?;
    Ok(Json(json!({
        "Tenant": name, "AccessKey": access, "SecretKey": secret, "Revoked": revoked,
    })))
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
    use crate::accounts::AccountError::*;
    match e {
        InvalidName(_) | InvalidId(_) => ApiError::bad_request(e.to_string()),
        NoSuchTenant(_) | NoSuchCredential(_) => {
            ApiError::new(StatusCode::NOT_FOUND, e.to_string())
        }
        Store(s) => ApiError::from(s),
    }
}
