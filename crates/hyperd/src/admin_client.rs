//! `hyperd tenant ...` while the daemon runs: the store is the daemon's, so the command asks it
//! over the root-only unix socket instead of opening the store.

use std::path::Path;

use anyhow::{bail, Context};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// POSTs to the running daemon; `Ok(None)` when no daemon listens on `socket`.
pub async fn post(
    socket: &Path,
    path: &str,
    body: serde_json::Value,
) -> anyhow::Result<Option<serde_json::Value>> {
    call(socket, hyper::Method::POST, path, body).await
}

/// For operations that need the daemon (it holds the CA): an error when it is not running.
pub async fn require(
    socket: &Path,
    method: hyper::Method,
    path: &str,
    body: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    call(socket, method, path, body).await?.with_context(|| {
        format!(
            "hyperd is not running (nothing answers on {})",
            socket.display()
        )
    })
}

async fn call(
    socket: &Path,
    method: hyper::Method,
    path: &str,
    body: serde_json::Value,
) -> anyhow::Result<Option<serde_json::Value>> {
    let stream = match tokio::net::UnixStream::connect(socket).await {
        Ok(s) => s,
        Err(_) => return Ok(None),
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "hyperd")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))?;
    let response = sender
        .send_request(request)
        .await
        .context("ask the running hyperd")?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if !status.is_success() {
        bail!("{}", value["message"].as_str().unwrap_or(status.as_str()));
    }
    Ok(Some(value))
}
