//! `GET /events`: Docker's event stream for the tenant, with `since` (replayed from the retained
//! window), `until`, and filters by container, image, event, label and type.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use chrono::Utc;
use node::events::Event;

use super::{filter_values, time_param, Params};
use crate::error::ApiResult;
use crate::transport::{Peer, TenantId};
use crate::AppState;

/// Docker's event filters; every given key must match, any of its values.
#[derive(Default)]
struct Filters {
    container: Option<Vec<String>>,
    image: Option<Vec<String>>,
    event: Option<Vec<String>>,
    label: Option<Vec<String>>,
    kind: Option<Vec<String>>,
}

impl Filters {
    fn parse(q: &Params) -> ApiResult<Self> {
        let raw = q.get("filters");
        Ok(Self {
            container: filter_values(raw, "container")?,
            image: filter_values(raw, "image")?,
            event: filter_values(raw, "event")?,
            label: filter_values(raw, "label")?,
            kind: filter_values(raw, "type")?,
        })
    }

    fn matches(&self, e: &Event) -> bool {
        let attr = |k: &str| e.actor.attributes.get(k).map(String::as_str).unwrap_or("");
        let any = |values: &Option<Vec<String>>, f: &dyn Fn(&str) -> bool| {
            values.as_ref().is_none_or(|v| v.iter().any(|x| f(x)))
        };
        any(&self.container, &|v| e.actor.id.starts_with(v) || attr("name") == v.trim_start_matches('/'))
            && any(&self.image, &|v| e.from == v || node::images::normalize(v) == node::images::normalize(&e.from))
            // `exec_create: ls` is the `exec_create` event.
            && any(&self.event, &|v| e.action == v || e.action.split(':').next() == Some(v))
            && self.label.as_ref().is_none_or(|labels| {
                labels.iter().all(|l| match l.split_once('=') {
                    Some((k, v)) => attr(k) == v,
                    None => e.actor.attributes.contains_key(l),
                })
            })
            && any(&self.kind, &|v| e.kind == v)
    }
}

/// The tenant's events as asked: replayed from `since`, then live until `until` or until the
/// receiver goes away.
fn feed(
    app: &AppState,
    (tenant, peer): (String, Peer),
    (q, query): (&Params, Option<&str>),
) -> ApiResult<tokio::sync::mpsc::Receiver<Event>> {
    // Docker reads `since=0` as the epoch (replay all that is retained), not as "no since".
    let since = match q.get("since").map(String::as_str) {
        Some("0") => chrono::DateTime::from_timestamp(0, 0),
        _ => time_param(q, "since")?,
    };
    let until = time_param(q, "until")?;
    let filters = Filters::parse(q)?;
    let (kept, mut live) = app.runtime.events.subscribe(&tenant);
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    // In a fleet, the other nodes' events of the tenant too (a node passing on a stream
    // answers with its own only).
    if let (Some(link), Peer::Tcp | Peer::Unix) = (&app.fleet, peer) {
        link.events_from_others(&tenant, query.unwrap_or(""), tx.clone());
    }
    tokio::spawn(async move {
        let in_window = |e: &Event| {
            since.is_none_or(|s| e.time_nano >= s.timestamp_nanos_opt().unwrap_or(0))
                && until.is_none_or(|u| e.time_nano <= u.timestamp_nanos_opt().unwrap_or(i64::MAX))
        };
        if since.is_some() {
            for e in kept
                .into_iter()
                .filter(|e| in_window(e) && filters.matches(e))
            {
                if tx.send(e).await.is_err() {
                    return;
                }
            }
        }
        if until.is_some_and(|u| u <= Utc::now()) {
            return;
        }
        loop {
            let wait = until.map_or(Duration::from_secs(3600), |u| {
                (u - Utc::now()).to_std().unwrap_or_default()
            });
            tokio::select! {
                got = live.recv() => match got {
                    Ok((owner, e)) if owner == tenant && filters.matches(&e) => {
                        if tx.send(e).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = tokio::time::sleep(wait) => if until.is_some() { return },
                _ = tx.closed() => return,
            }
        }
    });
    Ok(rx)
}

/// Docker's `GET /events`: one JSON object a line.
pub async fn events(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Extension(peer): Extension<Peer>,
    uri: axum::http::Uri,
    Query(q): Query<Params>,
) -> ApiResult<Response> {
    let rx = feed(&app, (tenant, peer), (&q, uri.query()))?;
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let e = rx.recv().await?;
        let line = Bytes::from(serde_json::to_string(&e).expect("json") + "\n");
        Some((Ok::<_, std::io::Error>(line), rx))
    });
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Hyper's `GET /events/ws`: the same events as websocket text messages; the handshake is
/// signed like any request, and the filters use Hyper's object form
/// (`{"container":{"ID":true},"event":{"start":true}}`), which `filters` also reads.
pub async fn events_ws(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Extension(peer): Extension<Peer>,
    uri: axum::http::Uri,
    Query(q): Query<Params>,
    slot: Option<Extension<crate::limits::StreamSlot>>,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    let mut rx = feed(&app, (tenant, peer), (&q, uri.query()))?;
    Ok(ws.on_upgrade(move |mut socket| async move {
        // The tenant's stream slot, held while the socket is open.
        let _slot = slot;
        loop {
            tokio::select! {
                event = rx.recv() => match event {
                    Some(e) => {
                        let text = serde_json::to_string(&e).expect("json");
                        if socket.send(Message::Text(text.into())).await.is_err() {
                            return;
                        }
                    }
                    None => {
                        let _ = socket.send(Message::Close(None)).await;
                        return;
                    }
                },
                incoming = socket.recv() => match incoming {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => {}
                },
            }
        }
    }))
}
