//! Bodies the HTTP proxy sends: relayed backend responses and its own short answers.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use crate::backend::{Active, Backend};
use crate::upstream::Sender;

pub type ProxyBody = UnsyncBoxBody<Bytes, hyper::Error>;

pub fn text(text: &'static str) -> ProxyBody {
    Full::new(Bytes::from_static(text.as_bytes()))
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A backend's response body on its way to the client. The request counts as active until
/// the body is done or dropped; once read in full, the backend connection is kept for reuse.
pub struct BackendBody {
    inner: Incoming,
    _active: Active,
    reusable: Option<(Sender, Arc<Backend>)>,
}

impl BackendBody {
    pub fn new(inner: Incoming, active: Active, sender: Sender, backend: Arc<Backend>) -> Self {
        let mut body = Self {
            inner,
            _active: active,
            reusable: Some((sender, backend)),
        };
        // An empty body (204, HEAD) is never polled.
        body.release_if_done();
        body
    }

    fn release_if_done(&mut self) {
        if self.inner.is_end_stream() {
            if let Some((sender, backend)) = self.reusable.take() {
                backend.idle.put(sender);
            }
        }
    }
}

impl Body for BackendBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some((sender, backend)) = this.reusable.take() {
                    backend.idle.put(sender);
                }
            }
            Poll::Ready(Some(Ok(_))) => this.release_if_done(),
            // A broken body leaves the connection in an unknown state: not reused.
            Poll::Ready(Some(Err(_))) => this.reusable = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
