//! Active health checks: one task per backend, checking right away and then every interval.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;

use crate::backend::{Backend, Health};
use crate::service::Service;

/// A check slower than this fails, even with a longer interval.
const MAX_CHECK_TIME: Duration = Duration::from_secs(5);

/// Runs until aborted (backend removed) or until the service is gone.
pub fn spawn(backend: Arc<Backend>, service: Weak<Service>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Some(settings) = service.upgrade().map(|s| s.settings()) else {
                return;
            };
            let http_path = settings
                .protocol
                .is_http()
                .then_some(&settings.health.http_path);
            let limit = settings.health.interval().min(MAX_CHECK_TIME);
            let passed = tokio::time::timeout(limit, check(&backend, http_path))
                .await
                .unwrap_or_else(|_| Err("timed out".into()));
            if let Some(state) = backend.record_check(passed.is_ok(), &settings.health) {
                let Some(service) = service.upgrade() else {
                    return;
                };
                match (&state, &passed) {
                    (Health::Down, Err(reason)) => tracing::warn!(
                        service = %service.name, id = %backend.id, addr = %backend.addr,
                        %reason, "backend down"
                    ),
                    _ => tracing::info!(
                        service = %service.name, id = %backend.id, addr = %backend.addr,
                        ?state, "backend health changed"
                    ),
                }
                service.health_changed.notify_one();
            }
            tokio::time::sleep(settings.health.interval()).await;
        }
    })
}

/// A TCP connect, or with `http_path` an HTTP GET answered 2xx or 3xx.
async fn check(backend: &Backend, http_path: Option<&String>) -> Result<(), String> {
    let stream = backend.connect().await.map_err(|e| e.to_string())?;
    let Some(path) = http_path else {
        return Ok(());
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = http::Request::get(path.as_str())
        .header(http::header::HOST, backend.addr.to_string())
        .header(http::header::CONNECTION, "close")
        .header(http::header::USER_AGENT, "hyper-lb health check")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    if status.is_success() || status.is_redirection() {
        Ok(())
    } else {
        Err(format!("health check answered {status}"))
    }
}
