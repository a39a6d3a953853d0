//! `docker cp`: `GET`, `HEAD` and `PUT /containers/{id}/archive` (the work is
//! `node::Runtime::archive`'s).

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use base64::Engine;
use chrono::DateTime;
use futures_util::StreamExt;
use node::{Archive, ArchiveOp, ArchiveRequest, PathStat};
use serde_json::json;

use super::{flag, Params};
use crate::error::{ApiError, ApiResult};
use crate::transport::TenantId;
use crate::AppState;

const STAT_HEADER: &str = "X-Docker-Container-Path-Stat";

/// Go's `os.FileMode` for a `st_mode`: what Docker's stat header carries (clients test it
/// with `IsDir()`).
fn go_file_mode(mode: u32) -> u32 {
    const DIR: u32 = 1 << 31;
    const SYMLINK: u32 = 1 << 27;
    const DEVICE: u32 = 1 << 26;
    const NAMED_PIPE: u32 = 1 << 25;
    const SOCKET: u32 = 1 << 24;
    const SETUID: u32 = 1 << 23;
    const SETGID: u32 = 1 << 22;
    const CHAR_DEVICE: u32 = 1 << 21;
    const STICKY: u32 = 1 << 20;
    let mut m = mode & 0o777;
    m |= match mode & libc_s::IFMT {
        libc_s::IFDIR => DIR,
        libc_s::IFLNK => SYMLINK,
        libc_s::IFBLK => DEVICE,
        libc_s::IFCHR => DEVICE | CHAR_DEVICE,
        libc_s::IFIFO => NAMED_PIPE,
        libc_s::IFSOCK => SOCKET,
        _ => 0,
    };
    for (bit, go) in [(0o4000, SETUID), (0o2000, SETGID), (0o1000, STICKY)] {
        if mode & bit != 0 {
            m |= go;
        }
    }
    m
}

/// The `S_IF*` values (the same on every Linux).
mod libc_s {
    pub const IFMT: u32 = 0o170000;
    pub const IFDIR: u32 = 0o040000;
    pub const IFLNK: u32 = 0o120000;
    pub const IFBLK: u32 = 0o060000;
    pub const IFCHR: u32 = 0o020000;
    pub const IFIFO: u32 = 0o010000;
    pub const IFSOCK: u32 = 0o140000;
}

/// Docker's `X-Docker-Container-Path-Stat`: base64 of `{name,size,mode,mtime,linkTarget}`.
fn stat_header(s: &PathStat) -> HeaderValue {
    let mtime = DateTime::from_timestamp(s.mtime_secs, s.mtime_nsecs).unwrap_or_default();
    let body = json!({
        "name": s.name,
        "size": s.size,
        "mode": go_file_mode(s.mode),
        "mtime": mtime.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        "linkTarget": s.link_target,
    });
    let encoded = base64::engine::general_purpose::STANDARD.encode(body.to_string());
    HeaderValue::from_str(&encoded).expect("base64 is a valid header value")
}

fn path_param(q: &Params) -> ApiResult<String> {
    match q.get("path").filter(|p| !p.is_empty()) {
        Some(p) if p.contains('\0') => Err(ApiError::bad_request("path contains a NUL byte")),
        Some(p) => Ok(p.clone()),
        None => Err(ApiError::bad_request("path is required (?path=...)")),
    }
}

async fn open(
    app: &AppState,
    tenant: &str,
    id: &str,
    request: ArchiveRequest,
) -> ApiResult<Archive> {
    Ok(app.runtime.archive(tenant, id, request).await?)
}

fn request(op: ArchiveOp, path: String) -> ArchiveRequest {
    ArchiveRequest {
        op,
        path,
        no_overwrite_dir_non_dir: false,
        chown_user: String::new(),
        freeze: false,
    }
}

/// `HEAD`: only the stat header.
pub async fn head(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(id): Path<String>,
    Query(q): Query<Params>,
) -> ApiResult<Response> {
    let path = path_param(&q)?;
    let mut a = open(&app, &tenant, &id, request(ArchiveOp::Stat, path)).await?;
    a.close().await;
    Ok((StatusCode::OK, [(STAT_HEADER, stat_header(&a.stat))]).into_response())
}

/// `GET`: the stat header and a tar of the path, streamed as the guest writes it.
pub async fn get(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(id): Path<String>,
    Query(q): Query<Params>,
) -> ApiResult<Response> {
    let path = path_param(&q)?;
    let a = open(&app, &tenant, &id, request(ArchiveOp::Get, path)).await?;
    let stat = stat_header(&a.stat);
    Ok((
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-tar"),
            ),
            (
                header::HeaderName::from_static("x-docker-container-path-stat"),
                stat,
            ),
        ],
        tar_body(a),
    )
        .into_response())
}

/// `GET /containers/{id}/export`: the container's root file system as a tar (volumes left
/// out, as Docker does).
pub async fn export(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let a = open(&app, &tenant, &id, request(ArchiveOp::Export, "/".into())).await?;
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-tar"),
        )],
        tar_body(a),
    )
        .into_response())
}

/// `GET /containers/{id}/changes`: Docker's `[{Path, Kind}]` against the image (0 modified,
/// 1 added, 2 deleted).
pub async fn changes(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    let changes = app.runtime.changes(&tenant, &id, false).await?;
    let list: Vec<_> = changes
        .into_iter()
        .map(|(path, kind)| json!({"Path": path, "Kind": kind}))
        .collect();
    Ok(axum::Json(serde_json::Value::Array(list)))
}

/// The rest of an archive stream as a response body. An error after the first byte cuts the
/// body short: the client sees a broken transfer, never a complete-looking archive.
fn tar_body(a: Archive) -> Body {
    let chunks = futures_util::stream::unfold(Some(a), |a| async move {
        let mut a = a?;
        match a.next_chunk().await {
            Ok(Some(data)) => Some((Ok(bytes::Bytes::from(data)), Some(a))),
            Ok(None) => None,
            Err(e) => {
                tracing::info!("a copy out of a container broke off: {e}");
                Some((Err(std::io::Error::other(e.to_string())), None))
            }
        }
    });
    Body::from_stream(chunks)
}

/// `PUT`: extract the request's tar into the directory `path`.
pub async fn put(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(id): Path<String>,
    Query(q): Query<Params>,
    req: Request,
) -> ApiResult<StatusCode> {
    let mut body = req
        .into_body()
        .into_data_stream()
        .map(|r| r.map(|b| b.to_vec()));
    let r = put_body(&app, &tenant, &id, &q, &mut body).await;
    if r.is_err() {
        // Read what the client still sends before answering, or it sees a reset instead of the
        // reason (bounded: a bigger rest is its loss).
        let mut left = DRAIN_LIMIT;
        while let Some(Ok(chunk)) = body.next().await {
            left = left.saturating_sub(chunk.len());
            if left == 0 {
                break;
            }
        }
    }
    r
}

/// Unread request bodies read before an error answer, at most.
const DRAIN_LIMIT: usize = 16 << 20;

async fn put_body<S, E>(
    app: &AppState,
    tenant: &str,
    id: &str,
    q: &Params,
    body: &mut S,
) -> ApiResult<StatusCode>
where
    S: futures_util::Stream<Item = Result<Vec<u8>, E>> + Unpin,
    E: std::fmt::Display,
{
    let path = path_param(q)?;
    let c = app.runtime.get(tenant, id)?;
    let chown_user = if flag(q, "copyUIDGID", false) {
        // Docker's -a: the container's user owns what is copied in (the tar's owners are kept
        // when it has none).
        c.config.user.clone()
    } else {
        String::new()
    };
    let archive = ArchiveRequest {
        op: ArchiveOp::Put,
        path,
        no_overwrite_dir_non_dir: flag(q, "noOverwriteDirNonDir", false),
        chown_user,
        freeze: false,
    };
    let a = open(app, tenant, id, archive).await?;
    a.upload(body).await?;
    Ok(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_go_file_modes() {
        let cases = [
            (0o040755, (1u32 << 31) | 0o755),
            (0o100644, 0o644),
            (0o120777, (1 << 27) | 0o777),
            (0o104755, (1 << 23) | 0o755),
            (0o041777, (1 << 31) | (1 << 20) | 0o777),
        ];
        for (i, (mode, want)) in cases.iter().enumerate() {
            assert_eq!(go_file_mode(*mode), *want, "test[{i}]");
        }
    }
}
