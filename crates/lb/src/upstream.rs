//! HTTP/1.1 connections to backends: kept alive between requests, and sending that says
//! whether a failed request may be sent elsewhere.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::backend::Backend;
use crate::proxy_body::ProxyBody;

/// Backends close idle keep-alive connections after a few seconds (5 s in Node, for one);
/// reusing one that old risks a request sent as it closes, so it is dropped instead.
const IDLE_REUSE_LIMIT: Duration = Duration::from_secs(2);
/// Idle connections kept per backend.
const IDLE_MAX: usize = 64;

pub type Sender = SendRequest<ProxyBody>;

/// Idle kept-alive connections to one backend.
#[derive(Default)]
pub struct IdleConnections(Mutex<Vec<(Sender, Instant)>>);

impl IdleConnections {
    /// Offers a connection whose last response has been read in full.
    pub fn put(&self, sender: Sender) {
        let mut idle = self.0.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|(s, since)| !s.is_closed() && since.elapsed() < IDLE_REUSE_LIMIT);
        if idle.len() < IDLE_MAX {
            idle.push((sender, Instant::now()));
        }
    }

    fn take(&self) -> Option<Sender> {
        let mut idle = self.0.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((sender, since)) = idle.pop() {
            if !sender.is_closed() && since.elapsed() < IDLE_REUSE_LIMIT {
                return Some(sender);
            }
        }
        None
    }
}

pub enum SendError {
    /// Nothing of the request reached the backend: it may go to another one.
    Unsent(Box<Request<ProxyBody>>, String),
    /// The backend may have seen (part of) the request.
    Failed(String),
}

/// Sends `request` to `backend` on an idle connection, or a new one. Also returns the
/// connection, to be put back once the response body has been read.
pub async fn send(
    backend: &Backend,
    mut request: Request<ProxyBody>,
) -> Result<(Response<Incoming>, Sender), SendError> {
    while let Some(sender) = backend.idle.take() {
        match try_send(sender, request).await {
            Err(SendError::Unsent(unsent, _)) => request = *unsent,
            other => return other,
        }
    }
    let stream = match backend.connect().await {
        Ok(stream) => stream,
        Err(err) => {
            return Err(SendError::Unsent(
                Box::new(request),
                format!("connect: {err}"),
            ))
        }
    };
    let (sender, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
            Ok(pair) => pair,
            Err(err) => {
                return Err(SendError::Unsent(
                    Box::new(request),
                    format!("handshake: {err}"),
                ))
            }
        };
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!("backend connection: {err}");
        }
    });
    try_send(sender, request).await
}

async fn try_send(
    mut sender: Sender,
    request: Request<ProxyBody>,
) -> Result<(Response<Incoming>, Sender), SendError> {
    if let Err(err) = sender.ready().await {
        return Err(SendError::Unsent(Box::new(request), err.to_string()));
    }
    match sender.try_send_request(request).await {
        Ok(response) => Ok((response, sender)),
        Err(mut err) => match err.take_message() {
            Some(request) => Err(SendError::Unsent(
                Box::new(request),
                err.into_error().to_string(),
            )),
            None => Err(SendError::Failed(err.into_error().to_string())),
        },
    }
}
