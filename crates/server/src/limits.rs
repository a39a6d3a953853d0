//! Per-tenant API limits: a token bucket on requests (`--api-rate` per second, `--api-burst`
//! at once) and a cap on open streams (`--max-streams`: attach, exec, `logs -f`, events,
//! streamed stats). Over a limit: 429 with Docker's `{"message"}` and `Retry-After`.
//!
//! The unix socket is the operator's (root only, like docker.sock) and is not limited: it is
//! how the node is run and repaired, and a tenant cannot reach it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use http::{Method, StatusCode};

use crate::error::ApiError;
use crate::transport::{Peer, TenantId};

/// The operator's settings.
#[derive(Debug, Clone, Copy)]
pub struct ApiLimits {
    /// Requests per second a tenant's bucket refills with.
    pub rate: f64,
    /// The bucket's size: requests a tenant may make at once.
    pub burst: u32,
    /// Streams a tenant may hold open at once.
    pub max_streams: usize,
}

/// A tenant's request bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Taken from `bucket` at `now`: `Ok` or how long until a token is there.
fn take(bucket: &mut Bucket, limits: &ApiLimits, now: Instant) -> Result<(), Duration> {
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    bucket.tokens = (bucket.tokens + elapsed * limits.rate).min(f64::from(limits.burst));
    bucket.at = now;
    if bucket.tokens >= 1.0 {
        bucket.tokens -= 1.0;
        Ok(())
    } else {
        Err(Duration::from_secs_f64((1.0 - bucket.tokens) / limits.rate))
    }
}

pub struct Limiter {
    limits: ApiLimits,
    buckets: Mutex<HashMap<String, Bucket>>,
    streams: Arc<Mutex<HashMap<String, usize>>>,
}

/// One open stream of a tenant; its slot frees when the last clone goes.
#[derive(Clone)]
pub struct StreamSlot {
    _guard: Arc<SlotGuard>,
}

struct SlotGuard {
    tenant: String,
    streams: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut streams = self.streams.lock().expect("poisoned");
        if let Some(n) = streams.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                streams.remove(&self.tenant);
            }
        }
    }
}

impl Limiter {
    pub fn new(limits: ApiLimits) -> Self {
        Self {
            limits,
            buckets: Mutex::default(),
            streams: Arc::default(),
        }
    }

    fn admit(&self, tenant: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("poisoned");
        let bucket = buckets.entry(tenant.to_string()).or_insert(Bucket {
            tokens: f64::from(self.limits.burst),
            at: now,
        });
        take(bucket, &self.limits, now)
    }

    fn open_stream(&self, tenant: &str) -> Option<StreamSlot> {
        let mut streams = self.streams.lock().expect("poisoned");
        let n = streams.entry(tenant.to_string()).or_insert(0);
        if *n >= self.limits.max_streams {
            return None;
        }
        *n += 1;
        Some(StreamSlot {
            _guard: Arc::new(SlotGuard {
                tenant: tenant.to_string(),
                streams: self.streams.clone(),
            }),
        })
    }
}

/// Whether a request opens a stream that stays open for as long as the client wants.
fn is_stream(method: &Method, path: &str, query: &str) -> bool {
    let yes = |k: &str| {
        query.split('&').any(|kv| {
            kv.split_once('=')
                .is_some_and(|(key, v)| key == k && matches!(v, "1" | "true" | "True"))
        })
    };
    let no = |k: &str| {
        query.split('&').any(|kv| {
            kv.split_once('=')
                .is_some_and(|(key, v)| key == k && matches!(v, "0" | "false" | "False"))
        })
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::POST, ["containers", _, "attach"]) => true,
        (&Method::POST, ["exec", _, "start"]) => true,
        (&Method::GET, ["containers", _, "logs"]) => yes("follow"),
        (&Method::GET, ["containers", _, "stats"]) => !no("stream"),
        (&Method::GET, ["events"] | ["events", "ws"]) => true,
        _ => false,
    }
}

fn too_many(message: String, retry: Duration) -> Response {
    let seconds = retry.as_secs_f64().ceil().max(1.0) as u64;
    let mut response = ApiError::new(StatusCode::TOO_MANY_REQUESTS, message).into_response();
    response
        .headers_mut()
        .insert(http::header::RETRY_AFTER, http::HeaderValue::from(seconds));
    response
}

/// The middleware: runs after authentication has named the tenant.
pub async fn limit(State(limiter): State<Arc<Limiter>>, mut req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<Peer>().copied().unwrap_or(Peer::Tcp);
    let Some(TenantId(tenant)) = req.extensions().get::<TenantId>().cloned() else {
        return next.run(req).await;
    };
    // Unix: the operator's; Node: counted by the node the client talked to.
    if peer != Peer::Tcp {
        return next.run(req).await;
    }
    let limits = limiter.limits;
    if let Err(retry) = limiter.admit(&tenant) {
        let message = format!(
            "too many requests: this tenant may make {} per second ({} at once); retry in {:.1}s",
            limits.rate,
            limits.burst,
            retry.as_secs_f64()
        );
        return too_many(message, retry);
    }
    let query = req.uri().query().unwrap_or_default().to_string();
    if !is_stream(req.method(), req.uri().path(), &query) {
        return next.run(req).await;
    }
    let Some(slot) = limiter.open_stream(&tenant) else {
        let message = format!(
            "too many streams: this tenant may keep {} attach, exec, logs, events and stats \
             streams open at once; close one and retry",
            limits.max_streams
        );
        return too_many(message, Duration::from_secs(1));
    };
    // A hijacked stream (attach, exec) takes its own clone from here; a streamed body holds
    // the slot until the client has it all or goes.
    req.extensions_mut().insert(slot.clone());
    let response = next.run(req).await;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        return response;
    }
    let (parts, body) = response.into_parts();
    let held = body.into_data_stream().map(move |chunk| {
        let _ = &slot;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(held))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let limits = ApiLimits {
            rate: 2.0,
            burst: 3,
            max_streams: 1,
        };
        let t0 = Instant::now();
        let mut b = Bucket {
            tokens: 3.0,
            at: t0,
        };
        for i in 0..3 {
            assert!(take(&mut b, &limits, t0).is_ok(), "test[{i}]");
        }
        let wait = take(&mut b, &limits, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(take(&mut b, &limits, t0 + Duration::from_millis(500)).is_ok());
        assert!(take(&mut b, &limits, t0 + Duration::from_millis(600)).is_err());
        // Idle for long: back to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        for i in 0..3 {
            assert!(take(&mut b, &limits, later).is_ok(), "test[{i}]");
        }
        assert!(take(&mut b, &limits, later).is_err());
    }

    #[test]
    fn streams_are_told_apart() {
        let cases = [
            (Method::POST, "/containers/x/attach", "stream=1", true),
            (Method::POST, "/exec/x/start", "", true),
            (Method::GET, "/containers/x/logs", "follow=1&stdout=1", true),
            (Method::GET, "/containers/x/logs", "stdout=1", false),
            (Method::GET, "/containers/x/stats", "", true),
            (Method::GET, "/containers/x/stats", "stream=0", false),
            (Method::GET, "/events", "", true),
            (Method::GET, "/containers/json", "", false),
            (Method::POST, "/containers/x/start", "", false),
        ];
        for (i, (m, path, q, want)) in cases.iter().enumerate() {
            assert_eq!(is_stream(m, path, q), *want, "test[{i}]");
        }
    }

    #[test]
    fn a_stream_slot_frees_with_its_last_clone() {
        let l = Limiter::new(ApiLimits {
            rate: 1.0,
            burst: 1,
            max_streams: 1,
        });
        let slot = l.open_stream("a").unwrap();
        assert!(l.open_stream("a").is_none());
        assert!(
            l.open_stream("b").is_some(),
            "another tenant's streams count apart"
        );
        let clone = slot.clone();
        drop(slot);
        assert!(l.open_stream("a").is_none());
        drop(clone);
        assert!(l.open_stream("a").is_some());
    }
}
