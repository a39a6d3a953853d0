//! http and httpsTerm: an HTTP/1.1 reverse proxy. The client side keeps connections alive;
//! each request picks its own backend, so kept-alive clients spread over replicas and leave a
//! removed one at their next request. A request that never reached its backend is retried on
//! another one, as is a bodyless idempotent request whose backend failed before answering.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::proxy_body::{text, BackendBody, ProxyBody};
use crate::service::Service;
use crate::upstream::{self, SendError};

/// Also bounds how long an idle kept-alive client connection stays open.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves one client connection (plain, or already TLS-terminated) until the client leaves
/// or, after the service is removed, until its current request is answered.
pub async fn serve<I>(io: I, peer: SocketAddr, service: Arc<Service>, scheme: &'static str)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut stopping = service.stopping();
    let handler = {
        let service = service.clone();
        service_fn(move |request| handle(request, peer.ip(), service.clone(), scheme))
    };
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(io), handler);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        // The guard `wait_for` returns is not Send: dropped inside.
        () = async { let _ = stopping.wait_for(|stopping| *stopping).await; } => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = result {
        tracing::debug!(service = %service.name, %peer, "client connection: {err}");
    }
}

async fn handle(
    request: Request<Incoming>,
    client: IpAddr,
    service: Arc<Service>,
    scheme: &'static str,
) -> Result<Response<ProxyBody>, Infallible> {
    let (mut parts, body) = request.into_parts();
    prepare_request(&mut parts, client, scheme);
    let replayable = body.is_end_stream() && is_idempotent(&parts.method);
    let mut pending = Some(Request::from_parts(parts.clone(), body.boxed_unsync()));
    let mut tried = Vec::new();
    loop {
        let Some(backend) = service.pick(client, &tried) else {
            let reason = if tried.is_empty() {
                "no healthy backend\n"
            } else {
                "no backend reachable\n"
            };
            return Ok(answer(StatusCode::SERVICE_UNAVAILABLE, reason));
        };
        tried.push(backend.clone());
        let request = pending
            .take()
            .unwrap_or_else(|| Request::from_parts(parts.clone(), text("")));
        let active = backend.track();
        match upstream::send(&backend, request).await {
            Ok((response, sender)) => {
                let (mut head, body) = response.into_parts();
                remove_hop_by_hop(&mut head.headers);
                let body = BackendBody::new(body, active, sender, backend).boxed_unsync();
                return Ok(Response::from_parts(head, body));
            }
            Err(SendError::Unsent(request, reason)) => {
                tracing::info!(service = %service.name, id = %backend.id, %reason, "backend unreachable; trying another");
                pending = Some(*request);
            }
            Err(SendError::Failed(reason)) if replayable => {
                tracing::info!(service = %service.name, id = %backend.id, %reason, "backend failed; resending the request to another");
            }
            Err(SendError::Failed(reason)) => {
                tracing::warn!(service = %service.name, id = %backend.id, %reason, "backend failed");
                return Ok(answer(StatusCode::BAD_GATEWAY, "backend failed\n"));
            }
        }
    }
}

/// Origin-form target, end-to-end headers only, and who the client was.
fn prepare_request(parts: &mut http::request::Parts, client: IpAddr, scheme: &'static str) {
    if parts.uri.scheme().is_some() {
        if let Some(authority) = parts.uri.authority() {
            if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                parts.headers.entry(header::HOST).or_insert(host);
            }
        }
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        parts.uri = target
            .parse()
            .expect("a path and query is a valid origin-form target");
    }
    parts.version = http::Version::HTTP_11;
    remove_hop_by_hop(&mut parts.headers);
    let forwarded_for = match parts
        .headers
        .get(X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
    {
        Some(earlier) => format!("{earlier}, {client}"),
        None => client.to_string(),
    };
    parts.headers.remove(X_FORWARDED_FOR);
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        parts.headers.insert(X_FORWARDED_FOR, value);
    }
    parts
        .headers
        .insert(X_FORWARDED_PROTO, HeaderValue::from_static(scheme));
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Headers about one hop's connection, which must not be relayed (RFC 9110 7.6.1).
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

fn answer(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(text(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(request: Request<()>) -> http::request::Parts {
        request.into_parts().0
    }

    #[test]
    fn forwarded_for_is_appended_and_hop_by_hop_headers_dropped() {
        let mut head = parts(
            Request::get("http://example.com/a?b=1")
                .header("x-forwarded-for", "192.0.2.1")
                .header("connection", "keep-alive, x-secret")
                .header("x-secret", "1")
                .header("keep-alive", "timeout=5")
                .header("x-kept", "1")
                .body(())
                .unwrap(),
        );
        prepare_request(&mut head, "10.0.0.7".parse().unwrap(), "https");
        assert_eq!(head.uri, "/a?b=1");
        assert_eq!(head.headers["host"], "example.com");
        assert_eq!(head.headers["x-forwarded-for"], "192.0.2.1, 10.0.0.7");
        assert_eq!(head.headers["x-forwarded-proto"], "https");
        assert_eq!(head.headers["x-kept"], "1");
        for gone in ["connection", "x-secret", "keep-alive"] {
            assert!(!head.headers.contains_key(gone), "{gone}");
        }
    }
}
