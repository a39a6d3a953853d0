//! `GET /images/{name}/get` and `GET /images/get?names=a&names=b`: the tenant's images as a
//! `docker save` tarball (see `image::save` for the layout), streamed as it is written: a
//! blocking task writes the tar into a small bounded channel the response body reads, so a
//! large image is never held in memory and a client that stops reading stops the writer.
//! Every name is resolved before the answer starts, so an unknown image (or another
//! tenant's) is a plain 404.

use std::io::{self, Write};

use axum::body::{Body, Bytes};
use axum::extract::Query;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// Chunks in flight between the writer and the connection (64 KiB each).
const CHANNEL_CHUNKS: usize = 8;
const CHUNK: usize = 64 << 10;

/// A `Write` that hands what it is given to the response body.
struct ToBody(tokio::sync::mpsc::Sender<io::Result<Bytes>>);

impl Write for ToBody {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `GET /images/get?names=..` (repeated).
pub(crate) async fn save_many(
    app: &AppState,
    tenant: &str,
    uri: &axum::http::Uri,
) -> ApiResult<Response> {
    let Query(q) = Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
    let names: Vec<String> = q
        .into_iter()
        .filter(|(k, _)| k == "names")
        .map(|(_, v)| v)
        .collect();
    if names.is_empty() {
        return Err(ApiError::bad_request(
            "names is required: GET /images/get?names=IMAGE[&names=IMAGE...]",
        ));
    }
    save(app, tenant, &names).await
}

/// The archive of `names` for `tenant`.
pub(crate) async fn save(app: &AppState, tenant: &str, names: &[String]) -> ApiResult<Response> {
    let items = app.runtime.images.save_items(tenant, names)?;
    let content = app.runtime.images.content().clone();
    let (tx, rx) = tokio::sync::mpsc::channel(CHANNEL_CHUNKS);
    tokio::task::spawn_blocking(move || {
        let out = io::BufWriter::with_capacity(CHUNK, ToBody(tx.clone()));
        if let Err(e) = content.save(&items, out) {
            let msg = crate::error::error_chain(&e);
            tracing::warn!("image save failed: {msg}");
            // Breaks the response off: the client sees a truncated archive, not a valid one.
            let _ = tx.blocking_send(Err(io::Error::other(msg)));
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((chunk, rx))
    });
    Ok((
        [(CONTENT_TYPE, "application/x-tar")],
        Body::from_stream(stream),
    )
        .into_response())
}
