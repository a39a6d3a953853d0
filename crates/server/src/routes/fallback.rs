//! What answers a path hyper does not serve: Docker's JSON error with Docker's status, after
//! the request's body is read (a server that closes the connection on an unread body makes
//! clients report a "broken pipe" instead of the reason).

use axum::body::Body;
use axum::http::{StatusCode, Uri};

use crate::error::ApiError;

/// Reads (and drops) at most this much of an unserved or refused request's body.
const DRAIN_LIMIT: usize = 64 << 20;

/// Reads and drops a request's body before it is refused, so that the client, still sending
/// it, reads the refusal instead of a broken pipe.
pub async fn drain(body: Body) {
    let _ = axum::body::to_bytes(body, DRAIN_LIMIT).await;
}

/// Swarm mode's endpoints: a Docker engine outside a swarm answers them with 503.
const SWARM_PREFIXES: &[&str] = &["/swarm", "/nodes", "/tasks", "/secrets", "/configs"];

pub async fn not_served(uri: Uri, body: Body) -> ApiError {
    drain(body).await;
    let path = uri.path();
    let under = |prefix: &&str| path == *prefix || path.starts_with(&format!("{prefix}/"));
    if SWARM_PREFIXES.iter().any(under) {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "This node is not a swarm manager. hyper runs no swarm: use hyper's services (`hyper service create`) for replicated, load-balanced containers.",
        );
    }
    if under(&"/build") {
        return ApiError::not_implemented(
            "hyper does not build images: build with docker elsewhere and push to a registry you then pull from, or `hyper load -i` the archive `docker save` writes",
        );
    }
    if under(&"/plugins") {
        return ApiError::not_implemented(
            "hyper does not support Docker plugins: volumes, networks and logs are built in",
        );
    }
    ApiError::new(StatusCode::NOT_FOUND, "page not found")
}
