//! The tenant's events of the other nodes, merged into a node's event stream.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;

use super::FleetLink;

impl FleetLink {
    /// The tenant's events on every other node up, as asked by `query` (Docker's `since`,
    /// `until` and `filters`), into `tx` until it closes or their streams end.
    pub fn events_from_others(
        self: &Arc<Self>,
        tenant: &str,
        query: &str,
        tx: tokio::sync::mpsc::Sender<node::events::Event>,
    ) {
        for node in self.others() {
            let (link, tenant, tx) = (self.clone(), tenant.to_string(), tx.clone());
            let path = format!("/events?{query}");
            tokio::spawn(async move {
                let req = Request::get(path)
                    .body(Body::empty())
                    .expect("a valid request");
                let resp = match link.send(&node.record, &tenant, req).await {
                    Ok(resp) if resp.status().is_success() => resp,
                    Ok(resp) => {
                        return tracing::debug!(
                            "events of node {}: {}",
                            node.record.name,
                            resp.status()
                        )
                    }
                    Err(why) => {
                        return tracing::warn!("events of node {}: {why}", node.record.name)
                    }
                };
                let mut stream = resp.into_body().into_data_stream();
                let mut pending = Vec::new();
                loop {
                    let chunk = tokio::select! {
                        chunk = futures_util::StreamExt::next(&mut stream) => chunk,
                        _ = tx.closed() => return,
                    };
                    let Some(Ok(chunk)) = chunk else { return };
                    pending.extend_from_slice(&chunk);
                    while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=end).collect();
                        match serde_json::from_slice(&line) {
                            Ok(event) => {
                                if tx.send(event).await.is_err() {
                                    return;
                                }
                            }
                            Err(e) => tracing::warn!("an event of node {}: {e}", node.record.name),
                        }
                    }
                }
            });
        }
    }
}
