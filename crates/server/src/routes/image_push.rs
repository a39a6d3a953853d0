//! `POST /images/{name}/push?tag=TAG` (`docker push`): uploads the tenant's `name:tag` (every
//! tag of the repository when `tag` is empty, `docker push --all-tags`) with the caller's
//! `X-Registry-Auth` credentials, and streams Docker's JSON progress. Before streaming, an
//! image the tenant does not have is a 404 ("An image does not exist locally with the tag"),
//! and a registry the tenant may not reach (the address policy of pulls), cannot reach, or
//! whose token server refuses is an error status; afterwards failures (the registry refusing
//! the credentials on upload...) arrive in the stream as `{"errorDetail": {..}, "error": ..}`.

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::images::{progress_json, pull_error, reach};
use super::Params;
use crate::error::{ApiError, ApiResult};
use crate::transport::Peer;
use crate::AppState;

pub(crate) async fn push(
    app: &AppState,
    tenant: &str,
    peer: Peer,
    name: &str,
    q: &Params,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let tag = q.get("tag").map(String::as_str).unwrap_or("");
    if tag.contains(['@', ':', '/']) {
        return Err(ApiError::bad_request(format!(
            "invalid tag {tag:?}: push a tag name, not a digest or reference"
        )));
    }
    let images = &app.runtime.images;
    let targets = images.push_targets(tenant, name, tag)?;
    let creds = headers
        .get("x-registry-auth")
        .and_then(|h| h.to_str().ok())
        .and_then(image::pull::decode_registry_auth);
    // The tenant's tags are familiar names (`busybox:latest`); the registry needs the full one.
    let repository = image::pull::parse_reference(name, None).map_err(pull_error)?;
    let repository = format!("{}/{}", repository.registry(), repository.repository());
    let session = images
        .puller()
        .push_session(&repository, creds.as_ref(), &reach(app, peer))
        .await
        .map_err(pull_error)?;

    let (line_tx, line_rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let app = app.clone();
    tokio::spawn(async move {
        let _ = line_tx.send(json!({
            "status": format!("The push refers to repository [{}]", session.name)
        }));
        for (reference, id) in targets {
            let tag = reference.rsplit_once(':').map_or("latest", |(_, t)| t);
            // Progress is forwarded while the push runs, and drained before its closing
            // line, so the stream keeps Docker's order.
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let pushing = app.runtime.images.puller().push(&session, tag, &id, &tx);
            tokio::pin!(pushing);
            let result = loop {
                tokio::select! {
                    Some(p) = rx.recv() => { let _ = line_tx.send(progress_json(p)); }
                    r = &mut pushing => break r,
                }
            };
            while let Ok(p) = rx.try_recv() {
                let _ = line_tx.send(progress_json(p));
            }
            match result {
                Ok(p) => {
                    let _ = line_tx.send(json!({
                        "status": format!("{}: digest: {} size: {}", p.tag, p.digest, p.size)
                    }));
                    let _ = line_tx.send(json!({
                        "progressDetail": {},
                        "aux": {"Tag": p.tag, "Digest": p.digest, "Size": p.size},
                    }));
                }
                Err(e) => {
                    let msg = crate::error::error_chain(&e);
                    tracing::warn!(image = %reference, "push failed: {msg}");
                    let _ = line_tx.send(json!({"errorDetail": {"message": msg}, "error": msg}));
                    break;
                }
            }
        }
    });
    let stream = futures_util::stream::unfold(line_rx, |mut rx| async move {
        let v = rx.recv().await?;
        Some((
            Ok::<_, std::convert::Infallible>(Bytes::from(v.to_string() + "\r\n")),
            rx,
        ))
    });
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response())
}
