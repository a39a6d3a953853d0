//! Hyper's volume initialisation: `POST /volumes/initialize` (URL sources fetched by hyperd,
//! local ones answered with an upload session), `POST /volumes/upload/{session}/{volume}` (the
//! client's tar, authenticated by the session's cookie: Hyper's client posts it unsigned) and
//! `PUT /volumes/uploadfinish?session=` (the volumes are built from what was uploaded).

use std::collections::BTreeMap;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use super::Params;
use crate::error::{ApiError, ApiResult};
use crate::transport::TenantId;
use crate::AppState;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InitItem {
    name: String,
    #[serde(default)]
    source: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InitBody {
    #[serde(default)]
    reload: bool,
    #[serde(default)]
    volume: Vec<InitItem>,
}

pub async fn initialize(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let body: InitBody = super::json_body(&body, "volume initialize request")?;
    if body.reload {
        return Err(ApiError::not_implemented(
            "Reload is not supported: remove the volume and create it again with its source",
        ));
    }
    if body.volume.is_empty() {
        return Err(ApiError::bad_request("no volume to initialise"));
    }
    let items: Vec<(String, String)> = body
        .volume
        .into_iter()
        .map(|v| (v.name, v.source))
        .collect();
    let answer = app.runtime.initialize_volumes(&tenant, &items).await?;
    // Hyper's client posts to the URL as given: make it absolute, on the host it asked.
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let scheme = if app.tls.is_some() { "https" } else { "http" };
    let uploaders: BTreeMap<String, String> = answer
        .uploads
        .into_iter()
        .map(|(name, path)| (name, format!("{scheme}://{host}{path}")))
        .collect();
    Ok(Json(json!({
        "Session": answer.session,
        "Cookie": answer.cookie,
        "Uploaders": uploaders,
    })))
}

/// The tar of one volume's source, streamed to disk and cut off past the volume's size.
pub async fn upload(
    State(app): State<AppState>,
    Path((session, volume)): Path<(String, String)>,
    Query(q): Query<Params>,
    body: Body,
) -> ApiResult<StatusCode> {
    let cookie = q.get("cookie").map(String::as_str);
    let (tenant, path) = app
        .runtime
        .volumes
        .uploads
        .upload_target(&session, &volume, cookie)?;
    let limit = app.runtime.volumes.get(&tenant, &volume)?.bytes();
    let mut file = tokio::fs::File::create(&path).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("storing the upload: {e}"),
        )
    })?;
    let mut stream = body.into_data_stream();
    let mut written: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading the upload: {e}")))?;
        written += chunk.len() as u64;
        if written > limit {
            drop(file);
            let _ = tokio::fs::remove_file(&path).await;
            return Err(ApiError::bad_request(format!(
                "the upload for volume {volume} is bigger than the volume ({} GB)",
                limit >> 30
            )));
        }
        file.write_all(&chunk).await.map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("storing the upload: {e}"),
            )
        })?;
    }
    file.flush().await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("storing the upload: {e}"),
        )
    })?;
    Ok(StatusCode::OK)
}

pub async fn finish(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Query(q): Query<Params>,
) -> ApiResult<StatusCode> {
    let session = q
        .get("session")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("missing ?session="))?;
    app.runtime.finish_uploads(&tenant, session).await?;
    Ok(StatusCode::NO_CONTENT)
}
