//! `POST /images/create?fromSrc=-|URL` (`docker import`): a root file system tar as a new
//! one-layer image. The tar comes in the body (`-`) or from a URL fetched under the tenant's
//! address policy, as `load`'s.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::json;
use std::io::Write;

use super::commit::{instructions, new_image_name, one};
use super::images::{fetch_error, reach, MAX_REMOTE_ARCHIVE};
use crate::error::{ApiError, ApiResult};
use crate::transport::Peer;
use crate::AppState;

pub async fn import(
    app: AppState,
    tenant: String,
    peer: Peer,
    q: Vec<(String, String)>,
    body: Body,
) -> ApiResult<Response> {
    let refused = match new_image_name(&q) {
        Ok(tag) => app
            .runtime
            .check_storage(&tenant)
            .await
            .map(|()| tag)
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    let tag = match refused {
        Ok(tag) => tag,
        Err(e) => {
            super::fallback::drain(body).await;
            return Err(e);
        }
    };
    let spool_err = |e| ApiError::from(node::RuntimeError::io("spool the import")(e));
    let spool = tempfile::NamedTempFile::new_in(app.runtime.config().data_root.join("tmp"))
        .map_err(spool_err)?;
    match one(&q, "fromSrc") {
        "-" => {
            let mut file = spool.reopen().map_err(spool_err)?;
            let mut stream = body.into_data_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk
                    .map_err(|e| ApiError::bad_request(format!("reading the archive: {e}")))?;
                file.write_all(&chunk).map_err(spool_err)?;
            }
        }
        url => {
            image::fetch::download(url, spool.path(), MAX_REMOTE_ARCHIVE, &reach(&app, peer))
                .await
                .map_err(fetch_error)?;
        }
    }
    let id = app
        .runtime
        .import_image(
            &tenant,
            spool.path().to_path_buf(),
            tag,
            instructions(&q),
            one(&q, "message").to_string(),
        )
        .await?;
    // Docker's progress stream: its last message is the new image's ID.
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        format!("{}\n", json!({"status": id})),
    )
        .into_response())
}
