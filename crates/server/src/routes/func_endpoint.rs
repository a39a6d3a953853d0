//! The function endpoint (Hyper's `https://<region>.hyperfunc.io`): unsigned paths where the
//! function's name and UUID are the credential, served on every listener beside the API.
//!
//! - `POST /call/{name}/{uuid}` -> `{"CallId"}` (202); `.../sync` -> the call's stdout.
//! - `GET /output/{name}/{uuid}/{call}[/wait]` -> a call's stdout.
//! - `GET /logs/{name}/{uuid}/?callid=&follow=true&tail=` -> Hyper's log objects, one after
//!   the other; with `follow` over a hijacked connection (`Upgrade: tcp`, 101) as Hyper's
//!   client reads it.
//! - `GET /status/{name}/{uuid}` -> `{Total, Pending, Running, Finished, Failed}`.
//!
//! A wrong name and a wrong UUID get the same 404. Errors are plain text (Hyper's client
//! prints the body as it is). A call that failed answers 502 (504 when it timed out) with the
//! reason; one still running answers 409 unless asked to wait.

use std::collections::HashSet;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use node::funcs::{calls, CallError, CallStatus, Ended, FuncRecord};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::Params;
use crate::error::ApiError;
use crate::AppState;

/// The response header naming the call a response is about.
const CALL_HEADER: &str = "x-hyper-func-call";

/// A refusal in plain text.
fn text(status: StatusCode, message: impl Into<String>) -> Response {
    let mut body = message.into();
    body.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn refuse(e: impl Into<ApiError>) -> Response {
    let e = e.into();
    text(e.status, e.message)
}

fn authorize(app: &AppState, name: &str, uuid: &str) -> Result<FuncRecord, ApiError> {
    Ok(app.funcs.authorize(name, uuid)?)
}

/// A call's result as the endpoint answers it.
fn result(ended: &Ended) -> Response {
    let (call, output) = (&ended.0, &ended.1);
    let mut response = match call.status {
        CallStatus::Finished => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/octet-stream")],
            output.clone(),
        )
            .into_response(),
        CallStatus::Failed => {
            let status = match call.timed_out {
                true => StatusCode::GATEWAY_TIMEOUT,
                false => StatusCode::BAD_GATEWAY,
            };
            text(status, format!("call {} failed: {}", call.id, call.message))
        }
        s => text(
            StatusCode::CONFLICT,
            format!(
                "call {} is {}: ask for its output with /wait (hyper func get --wait) to wait for it",
                call.id,
                s.as_str()
            ),
        ),
    };
    if let Ok(v) = HeaderValue::from_str(&call.id) {
        response.headers_mut().insert(CALL_HEADER, v);
    }
    response
}

async fn take_call(app: &AppState, name: &str, uuid: &str, req: Request, sync: bool) -> Response {
    let f = match authorize(app, name, uuid) {
        Ok(f) => f,
        Err(e) => return refuse(e),
    };
    let payload = match axum::body::to_bytes(req.into_body(), calls::MAX_PAYLOAD).await {
        Ok(b) => b.to_vec(),
        Err(_) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the payload is larger than {} bytes", calls::MAX_PAYLOAD),
            )
        }
    };
    let (call, mut done) = match app.funcs.call(&f, payload) {
        Ok(pair) => pair,
        Err(CallError::Busy(why)) => return text(StatusCode::TOO_MANY_REQUESTS, why),
        Err(CallError::Runtime(e)) => return refuse(e),
    };
    if !sync {
        let mut r = (
            StatusCode::ACCEPTED,
            axum::Json(json!({ "CallId": call.id })),
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&call.id) {
            r.headers_mut().insert(CALL_HEADER, v);
        }
        return r;
    }
    let _ = done.wait_for(Option::is_some).await;
    let ended = done.borrow().clone();
    match ended {
        Some(ended) => result(&ended),
        None => text(StatusCode::INTERNAL_SERVER_ERROR, "the call was lost"),
    }
}

pub async fn call(
    State(app): State<AppState>,
    Path((name, uuid)): Path<(String, String)>,
    req: Request,
) -> Response {
    take_call(&app, &name, &uuid, req, false).await
}

pub async fn call_sync(
    State(app): State<AppState>,
    Path((name, uuid)): Path<(String, String)>,
    req: Request,
) -> Response {
    take_call(&app, &name, &uuid, req, true).await
}

async fn output_of(app: &AppState, name: &str, uuid: &str, call: &str, wait: bool) -> Response {
    let f = match authorize(app, name, uuid) {
        Ok(f) => f,
        Err(e) => return refuse(e),
    };
    match app.funcs.ended(&f, call, wait).await {
        Ok(Some(ended)) => result(&ended),
        Ok(None) => text(
            StatusCode::NOT_FOUND,
            format!(
                "call {call} of function {name} not found (only its last {} calls are kept)",
                calls::KEEP_CALLS
            ),
        ),
        Err(e) => refuse(e),
    }
}

pub async fn output(
    State(app): State<AppState>,
    Path((name, uuid, call)): Path<(String, String, String)>,
) -> Response {
    output_of(&app, &name, &uuid, &call, false).await
}

pub async fn output_wait(
    State(app): State<AppState>,
    Path((name, uuid, call)): Path<(String, String, String)>,
) -> Response {
    output_of(&app, &name, &uuid, &call, true).await
}

pub async fn status(
    State(app): State<AppState>,
    Path((name, uuid)): Path<(String, String)>,
    Query(q): Query<Params>,
) -> Response {
    let f = match authorize(&app, &name, &uuid) {
        Ok(f) => f,
        Err(e) => return refuse(e),
    };
    if super::flag(&q, "list", false) {
        return text(
            StatusCode::NOT_IMPLEMENTED,
            "status with list=true is not supported: use the logs for each call",
        );
    }
    match calls::status(app.funcs.store_ref(), &f.tenant, &f.name) {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => refuse(e),
    }
}

/// `tail`: a count or `all`.
fn tail(q: &Params) -> Result<Option<usize>, ApiError> {
    match q.get("tail").map(String::as_str) {
        None | Some("") | Some("all") => Ok(None),
        Some(n) => n.parse().map(Some).map_err(|_| {
            ApiError::bad_request(format!("invalid tail {n:?}: give a number of lines or all"))
        }),
    }
}

pub async fn logs(
    State(app): State<AppState>,
    Path((name, uuid)): Path<(String, String)>,
    Query(q): Query<Params>,
    mut req: Request,
) -> Response {
    let f = match authorize(&app, &name, &uuid) {
        Ok(f) => f,
        Err(e) => return refuse(e),
    };
    let tail = match tail(&q) {
        Ok(t) => t,
        Err(e) => return refuse(e),
    };
    let call = q.get("callid").filter(|c| !c.is_empty()).cloned();
    let follow = super::flag(&q, "follow", false);
    // Subscribed before the log is read: nothing that happens in between is missed.
    let changes = app.funcs.subscribe();
    let whole = match calls::log(
        app.funcs.store_ref(),
        &f.tenant,
        &f.name,
        call.as_deref(),
        None,
    ) {
        Ok(p) => p,
        Err(e) => return refuse(e),
    };
    // What is left out by `tail` counts as sent too: a follower sees what comes next.
    let sent: HashSet<(String, &'static str)> = whole
        .iter()
        .map(|(e, _)| (e.call.clone(), e.event))
        .collect();
    let skip = tail.map_or(0, |n| whole.len().saturating_sub(n));
    let first: Vec<u8> = whole[skip..].iter().flat_map(|(e, c)| line(e, c)).collect();
    if !follow {
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            first,
        )
            .into_response();
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    let _ = tx.send(first).await;
    let funcs = app.funcs.clone();
    tokio::spawn(follow_log(funcs, f, call, changes, sent, tx));
    if req.headers().get(header::UPGRADE).is_some() {
        let (response, upgrade) = match crate::streams::hijack(&mut req) {
            Ok(pair) => pair,
            Err(e) => return refuse(e),
        };
        tokio::spawn(async move {
            let Some((upgraded, _slot)) = upgrade.await else {
                return;
            };
            // Hyper's client reads the 101 through a buffered reader it then drops (Go's
            // `httputil.ClientConn.Hijack`): what arrives with the 101 would be lost to it.
            tokio::time::sleep(crate::streams::AFTER_101).await;
            let mut io = TokioIo::new(upgraded);
            let mut rx = rx;
            while let Some(chunk) = rx.recv().await {
                if io.write_all(&chunk).await.is_err() || io.flush().await.is_err() {
                    return;
                }
            }
            let _ = io.shutdown().await;
        });
        return response;
    }
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::io::Error>(axum::body::Bytes::from(chunk)), rx))
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}

fn line(e: &calls::LogEvent, c: &calls::CallRecord) -> Vec<u8> {
    let mut v = serde_json::to_vec(&calls::event_json(e, c)).expect("json");
    v.push(b'\n');
    v
}

/// Sends the events of the function's calls as they happen, until the client goes, the
/// function goes, or (with `call`) that call has ended.
async fn follow_log(
    funcs: std::sync::Arc<node::funcs::Funcs>,
    f: FuncRecord,
    call: Option<String>,
    mut changes: tokio::sync::broadcast::Receiver<node::funcs::CallChange>,
    mut sent: HashSet<(String, &'static str)>,
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
) {
    let done_with = |sent: &HashSet<(String, &'static str)>| {
        call.as_ref().is_some_and(|id| {
            sent.contains(&(id.clone(), "FINISHED")) || sent.contains(&(id.clone(), "FAILED"))
        })
    };
    if done_with(&sent) {
        return;
    }
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        let change = tokio::select! {
            c = changes.recv() => Some(c),
            _ = tx.closed() => return,
            // Now and then, whether the function is still there.
            _ = tick.tick() => None,
        };
        let ids: Vec<String> = match change {
            None => Vec::new(),
            Some(Ok(c)) if c.tenant == f.tenant && c.func == f.name => vec![c.call],
            Some(Ok(_)) => continue,
            // Fell behind: look at every call again.
            Some(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {
                match calls::list(funcs.store_ref(), &f.tenant, &f.name) {
                    Ok(all) => all.into_iter().map(|c| c.id).collect(),
                    Err(_) => return,
                }
            }
            Some(Err(_)) => return,
        };
        // The function is gone (or is another of the same name): the log ends.
        if funcs
            .get(&f.tenant, &f.name)
            .map_or(true, |r| r.created != f.created)
        {
            return;
        }
        for id in ids {
            if call.as_ref().is_some_and(|c| *c != id) {
                continue;
            }
            let Ok(Some(c)) = calls::get(funcs.store_ref(), &f.tenant, &f.name, &id) else {
                continue;
            };
            for e in calls::events(&c) {
                if sent.insert((e.call.clone(), e.event)) && tx.send(line(&e, &c)).await.is_err() {
                    return;
                }
            }
        }
        if done_with(&sent) {
            return;
        }
    }
}
