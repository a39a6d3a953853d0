//! `/containers/{id}/exec` and `/exec/{id}/...`.

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use node::ExecConfig;
use serde::Deserialize;
use serde_json::{json, Value};

use super::Params;
use crate::error::{ApiError, ApiResult};
use crate::streams;
use crate::transport::TenantId;
use crate::AppState;

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct ExecCreate {
    cmd: Vec<String>,
    env: Option<Vec<String>>,
    user: String,
    working_dir: String,
    tty: bool,
    attach_stdin: bool,
    attach_stdout: bool,
    attach_stderr: bool,
    privileged: bool,
    /// dockerd decodes JSON case-blind, and docker-py sends this key as `detachKeys`.
    #[serde(alias = "detachKeys")]
    detach_keys: String,
}

pub async fn create(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let req: ExecCreate = super::json_body(&body, "exec config")?;
    if req.privileged {
        return Err(ApiError::not_implemented(
            "hyper does not support privileged exec",
        ));
    }
    crate::detach_keys::parse(&req.detach_keys)?;
    let config = ExecConfig {
        cmd: req.cmd,
        env: req.env.unwrap_or_default(),
        user: req.user,
        working_dir: req.working_dir,
        tty: req.tty,
        attach_stdin: req.attach_stdin,
        attach_stdout: req.attach_stdout,
        attach_stderr: req.attach_stderr,
        detach_keys: req.detach_keys,
    };
    let exec_id = app.runtime.exec_create(&tenant, &id, config)?;
    Ok((StatusCode::CREATED, Json(json!({"Id": exec_id}))))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct ExecStart {
    detach: bool,
    tty: Option<bool>,
}

pub async fn start(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(id): Path<String>,
    mut req: Request,
) -> ApiResult<Response> {
    let loses_bytes_after_101 = streams::loses_bytes_after_101(req.headers());
    let hijacked = match req.headers().contains_key(axum::http::header::UPGRADE) {
        true => Some(streams::hijack(&mut req)?),
        false => None,
    };
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let start: ExecStart = if body.is_empty() {
        ExecStart::default()
    } else {
        super::json_body(&body, "exec start")?
    };
    let info = app.runtime.exec_inspect(&tenant, &id)?;
    let tty = start.tty.unwrap_or(info.config.tty);
    let (response, upgrade) = match hijacked {
        Some(pair) if !start.detach => pair,
        _ if start.detach => {
            let shim = app.runtime.exec_start(&tenant, &id).await?;
            let runtime = app.runtime.clone();
            // Nobody reads the output: drain it to the exit frame so the exit code is recorded.
            tokio::spawn(async move {
                let code = drain_for_exit(shim).await;
                runtime.exec_finished(&id, code.unwrap_or(-1));
            });
            return Ok(StatusCode::OK.into_response());
        }
        _ => {
            return Err(ApiError::bad_request(
                "exec start needs a hijacked connection (Upgrade: tcp) unless Detach is set",
            ))
        }
    };
    let shim = app.runtime.exec_start(&tenant, &id).await?;
    let runtime = app.runtime.clone();
    let detach = (info.config.tty && info.config.attach_stdin)
        .then(|| crate::detach_keys::parse(&info.config.detach_keys))
        .transpose()?
        .map(crate::detach_keys::Escape::new);
    tokio::spawn(async move {
        let Some((upgraded, _slot)) = upgrade.await else {
            return;
        };
        if loses_bytes_after_101 {
            // What the process printed at once would arrive with the 101 and be lost.
            tokio::time::sleep(streams::AFTER_101).await;
        }
        let session = streams::Session {
            tty,
            stdin: info.config.attach_stdin,
            detach,
            replay: Vec::new(),
            wait_for_exit: true,
        };
        streams::pump(upgraded, shim, session, move |code| {
            runtime.exec_finished(&id, code.unwrap_or(-1))
        })
        .await;
    });
    Ok(response)
}

async fn drain_for_exit(mut shim: tokio::io::BufReader<tokio::net::UnixStream>) -> Option<i64> {
    use tokio::io::AsyncReadExt;
    let mut header = [0u8; 8];
    loop {
        shim.read_exact(&mut header).await.ok()?;
        let len = u32::from_be_bytes(header[4..8].try_into().ok()?) as usize;
        let mut payload = vec![0u8; len];
        shim.read_exact(&mut payload).await.ok()?;
        if header[0] == 255 {
            return serde_json::from_slice::<Value>(&payload).ok()?["exit_code"].as_i64();
        }
    }
}

pub async fn inspect(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let e = app.runtime.exec_inspect(&tenant, &id)?;
    Ok(Json(json!({
        "ID": e.id,
        "Running": e.running,
        "ExitCode": e.exit_code,
        "ProcessConfig": {
            "tty": e.config.tty,
            "entrypoint": e.config.cmd.first(),
            "arguments": e.config.cmd.get(1..).unwrap_or_default(),
            "privileged": false,
            "user": e.config.user,
        },
        "OpenStdin": e.config.attach_stdin,
        "OpenStderr": e.config.attach_stderr,
        "OpenStdout": e.config.attach_stdout,
        "CanRemove": false,
        "ContainerID": e.container_id,
        "DetachKeys": e.config.detach_keys,
        "Pid": e.pid,
    })))
}

pub async fn resize(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(id): Path<String>,
    Query(q): Query<Params>,
) -> ApiResult<StatusCode> {
    let (width, height) = super::terminal_size(&q)?;
    app.runtime
        .resize(&tenant, "", Some(&id), width, height)
        .await?;
    Ok(StatusCode::OK)
}
