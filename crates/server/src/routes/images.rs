//! `/images/...`: list, inspect, history, tag, remove, load (save and push have their own
//! files). Image names may contain slashes
//! (`localhost:5000/team/app:v1`), so the per-image routes share one wildcard and are told
//! apart by their last segment.

use std::io::Write;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::StreamExt;
use node::images::ImageView;
use serde_json::{json, Value};

use super::{flag, Params};
use crate::error::{ApiError, ApiResult};
use crate::transport::{Peer, TenantId};
use crate::AppState;

/// Where hyperd may connect on behalf of this request: registries of a pull or login, their
/// token servers and blob storage, and the URL of an archive to load (DESIGN, Decided 12).
///
/// The decision: a request over TCP comes from a tenant (signed, or with a tenant's
/// certificate or token), so it gets the tenant policy: public addresses plus the operator's
/// `--allow-fetch`, never loopback, link-local, private ranges or the node's own addresses
/// otherwise, checked after resolution and at every redirect. A request on the unix socket
/// comes from the operator (root on the node, like docker.sock; it acts as the default
/// tenant), who could connect anywhere anyway: it keeps reaching loopback registries as
/// before (setup scripts, the e2e harness). `--insecure-registry` only means plain HTTP; it
/// exempts nothing from the policy.
pub(crate) fn reach(app: &AppState, peer: Peer) -> image::fetch::Reach {
    match peer {
        Peer::Unix => image::fetch::Reach::Operator,
        Peer::Tcp | Peer::Node => app.runtime.images.tenant_reach(),
    }
}

fn created_unix(v: &ImageView) -> i64 {
    v.info
        .created
        .as_deref()
        .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
        .map(|t| t.timestamp())
        .unwrap_or(0)
}

pub(crate) fn summary(v: &ImageView) -> Value {
    json!({
        "Id": v.info.id,
        "ParentId": v.info.parent,
        "RepoTags": v.tenant.tags,
        "RepoDigests": v.tenant.digests,
        "Created": created_unix(v),
        "Size": v.info.size,
        "SharedSize": -1,
        "VirtualSize": v.info.size,
        "Labels": v.info.config["config"]["Labels"],
        "Containers": -1,
    })
}

fn inspect_json(v: &ImageView) -> Value {
    let cfg = &v.info.config;
    json!({
        "Id": v.info.id,
        "RepoTags": v.tenant.tags,
        "RepoDigests": v.tenant.digests,
        "Parent": v.info.parent,
        "Comment": cfg["comment"].as_str().unwrap_or(""),
        "Created": v.info.created.clone().unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
        "DockerVersion": cfg["docker_version"].as_str().unwrap_or(""),
        "Author": cfg["author"].as_str().unwrap_or(""),
        "Config": cfg["config"],
        "Architecture": cfg["architecture"].as_str().unwrap_or("amd64"),
        "Os": cfg["os"].as_str().unwrap_or("linux"),
        "Size": v.info.size,
        "VirtualSize": v.info.size,
        "GraphDriver": {"Name": "ext4", "Data": null},
        "RootFS": {"Type": "layers", "Layers": v.info.layers},
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
    })
}

pub async fn list(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Query(q): Query<Params>,
) -> ApiResult<Json<Value>> {
    let references = super::filter_values(q.get("filters"), "reference")?;
    let mut images: Vec<Value> = app
        .runtime
        .images
        .list(&tenant)?
        .iter()
        .filter(|v| {
            references.as_ref().is_none_or(|refs| {
                refs.iter().any(|r| {
                    let want = node::images::normalize(r);
                    v.tenant.tags.iter().any(|t| {
                        t == &want || t.rsplit_once(':').map(|(n, _)| n) == Some(r.as_str())
                    })
                })
            })
        })
        .map(summary)
        .collect();
    images.sort_by_key(|i| std::cmp::Reverse(i["Created"].as_i64()));
    Ok(Json(Value::Array(images)))
}

/// Routes `GET {name}/json`, `GET {name}/history`, `POST {name}/tag`, `DELETE {name}`.
pub async fn by_name(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(rest): Path<String>,
    Query(q): Query<Params>,
    req: Request,
) -> ApiResult<Response> {
    let images = &app.runtime.images;
    let method = req.method().clone();
    let (name, action) = match rest.rsplit_once('/') {
        Some((n, a)) if matches!(a, "json" | "history" | "tag" | "push" | "get") => {
            (n.to_string(), a)
        }
        _ => (rest.clone(), ""),
    };
    match (method, action) {
        (Method::GET, "json") => {
            Ok(Json(inspect_json(&images.resolve(&tenant, &name)?)).into_response())
        }
        (Method::GET, "history") => {
            let v = images.resolve(&tenant, &name)?;
            let history: Vec<Value> = v.info.config["history"]
                .as_array()
                .map(|h| {
                    h.iter()
                        .rev()
                        .map(|e| {
                            json!({
                                "Id": "<missing>",
                                "Created": e["created"].as_str().and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok()).map(|t| t.timestamp()).unwrap_or(0),
                                "CreatedBy": e["created_by"].as_str().unwrap_or(""),
                                "Tags": null, "Size": 0, "Comment": e["comment"].as_str().unwrap_or(""),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            Ok(Json(Value::Array(history)).into_response())
        }
        (Method::POST, "tag") => {
            let repo = q
                .get("repo")
                .filter(|r| !r.is_empty())
                .ok_or_else(|| ApiError::bad_request("missing repo"))?;
            let target = match q.get("tag").filter(|t| !t.is_empty()) {
                Some(tag) => format!("{repo}:{tag}"),
                None => repo.clone(),
            };
            images.tag(&tenant, &name, &target)?;
            Ok(StatusCode::CREATED.into_response())
        }
        (Method::DELETE, "") => {
            let view = images.resolve(&tenant, &name)?;
            let in_use = app.runtime.image_in_use(&tenant, &view.info.id);
            let report = images.remove(&tenant, &name, flag(&q, "force", false), in_use)?;
            let deleted = report.iter().any(|(k, _)| k == "Deleted");
            if let Some(pool) = app.runtime.standby.as_ref().filter(|_| deleted) {
                pool.forget(&tenant, &view.info.id);
            }
            let body: Vec<Value> = report.into_iter().map(|(k, v)| json!({ k: v })).collect();
            Ok(Json(Value::Array(body)).into_response())
        }
        (Method::GET, "get") => super::image_save::save(&app, &tenant, &[name]).await,
        // `GET /images/get?names=..`: here rather than a route of its own, so `DELETE
        // /images/get` still removes an image named `get`.
        (Method::GET, "") if name == "get" => {
            super::image_save::save_many(&app, &tenant, req.uri()).await
        }
        (Method::POST, "push") => {
            let peer = req.extensions().get::<Peer>().copied().unwrap_or(Peer::Tcp);
            super::image_push::push(&app, &tenant, peer, &name, &q, req.headers()).await
        }
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("page not found: {rest}"),
        )),
    }
}

/// Largest archive `POST /images/load {"fromSrc": URL}` downloads.
pub(crate) const MAX_REMOTE_ARCHIVE: u64 = 16 << 30;

/// `POST /images/load`: a `docker save` or OCI archive as the body, or Hyper's
/// `{"fromSrc": "http(s)://...", "quiet": bool}` naming one to download (the first byte tells:
/// a tar never starts with `{`).
pub async fn load(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Extension(peer): Extension<Peer>,
    Query(_): Query<Params>,
    body: Body,
) -> ApiResult<Response> {
    if let Err(e) = app.runtime.check_storage(&tenant).await {
        super::fallback::drain(body).await;
        return Err(e.into());
    }
    let spool_err = |e| ApiError::from(node::RuntimeError::io("spool the archive")(e));
    let spool = tempfile::NamedTempFile::new_in(app.runtime.config().data_root.join("tmp"))
        .map_err(spool_err)?;
    let mut file = spool.reopen().map_err(spool_err)?;
    let mut stream = body.into_data_stream();
    let mut json_body: Option<Vec<u8>> = None;
    let mut first = true;
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::bad_request(format!("reading the archive: {e}")))?;
        if first && !chunk.is_empty() {
            first = false;
            if chunk.first() == Some(&b'{') {
                json_body = Some(Vec::new());
            }
        }
        match json_body.as_mut() {
            Some(j) if j.len() + chunk.len() > 64 << 10 => {
                return Err(ApiError::bad_request("load request body too large"))
            }
            Some(j) => j.extend_from_slice(&chunk),
            None => file.write_all(&chunk).map_err(spool_err)?,
        }
    }
    // `quiet` only hides progress, which a load here has none of: the "Loaded image" lines go
    // out either way, as dockerd's do.
    if let Some(raw) = json_body {
        let req: Value = serde_json::from_slice(&raw)
            .map_err(|e| ApiError::bad_request(format!("invalid load request: {e}")))?;
        let url = req["fromSrc"]
            .as_str()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| ApiError::bad_request("a JSON load request needs fromSrc (a URL)"))?;
        image::fetch::download(url, spool.path(), MAX_REMOTE_ARCHIVE, &reach(&app, peer))
            .await
            .map_err(fetch_error)?;
    }
    // As dockerd's: once the archive is read, the answer is a 200 stream and what went wrong
    // with the archive is its error message (docker-py raises ImageLoadError from it).
    let messages: Vec<Value> = match app
        .runtime
        .images
        .load(&tenant, spool.path().to_path_buf())
        .await
    {
        Ok(lines) => lines
            .into_iter()
            .map(|l| json!({"stream": format!("{l}\n")}))
            .collect(),
        Err(e) => {
            let message = ApiError::from(e).message;
            vec![json!({"errorDetail": {"message": message}, "error": message})]
        }
    };
    // A stream, so chunked as dockerd's: clients (docker-py) read a response of known length
    // as a single JSON document.
    let messages = messages
        .into_iter()
        .map(|m| Ok::<_, std::convert::Infallible>(m.to_string() + "\n"));
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        Body::from_stream(futures_util::stream::iter(messages)),
    )
        .into_response())
}

/// A failed download of a `fromSrc` archive: the URL is the caller's (400), our disk is ours.
pub(crate) fn fetch_error(e: image::fetch::FetchError) -> ApiError {
    use image::fetch::FetchError as F;
    let status = match &e {
        F::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        F::Refused { .. } => StatusCode::FORBIDDEN,
        F::InvalidUrl { .. }
        | F::Status { .. }
        | F::TooLarge { .. }
        | F::Truncated { .. }
        | F::NotTar { .. }
        | F::Http { .. } => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, crate::error::error_chain(&e))
}

/// `POST /auth` (`docker login`): checks `{"username","password","serveraddress"}` against the
/// registry (see `image::login`) and answers Docker's `{"Status":"Login Succeeded"}`, or 401.
/// Nothing is stored here: the client keeps the credentials and sends them with each pull.
pub async fn auth(
    State(app): State<AppState>,
    Extension(peer): Extension<Peer>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let v: Value = super::json_body(&body, "auth request")?;
    let field = |k: &str| v[k].as_str().unwrap_or("").to_string();
    let server = match field("serveraddress") {
        s if s.is_empty() => "https://index.docker.io/v1/".to_string(),
        s => s,
    };
    let creds = image::pull::Credentials {
        username: field("username"),
        password: field("password"),
    };
    if creds.username.is_empty() || creds.password.is_empty() {
        return Err(ApiError::bad_request("username and password are required"));
    }
    app.runtime
        .images
        .puller()
        .login(&server, &creds, &reach(&app, peer))
        .await
        .map_err(pull_error)?;
    Ok(Json(
        json!({"Status": "Login Succeeded", "IdentityToken": ""}),
    ))
}

/// `POST /images/create?fromImage=NAME&tag=TAG`: pulls from the registry with the caller's
/// `X-Registry-Auth` credentials and streams Docker's JSON progress messages. Before streaming,
/// an unknown repository or tag is a 404 with the registry's reason and refused credentials a
/// 401; later failures arrive in the stream as `{"errorDetail":{"message":..},"error":..}`.
pub async fn create(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Extension(peer): Extension<Peer>,
    Query(q): Query<Params>,
    Query(all): Query<Vec<(String, String)>>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    if let Some(p) = q.get("platform").filter(|p| !p.is_empty()) {
        if !matches!(p.as_str(), "linux/amd64" | "amd64" | "linux") {
            super::fallback::drain(body).await;
            return Err(ApiError::bad_request(format!(
                "platform {p} is not supported: hyper runs linux/amd64"
            )));
        }
    }
    if q.get("fromSrc").is_some_and(|s| !s.is_empty()) {
        return super::import::import(app, tenant, peer, all, body).await;
    }
    app.runtime.check_storage(&tenant).await?;
    let image = q
        .get("fromImage")
        .filter(|i| !i.is_empty())
        .ok_or_else(|| ApiError::bad_request("fromImage is required"))?;
    let reference = image::pull::parse_reference(image, q.get("tag").map(String::as_str))
        .map_err(pull_error)?;
    let creds = headers
        .get("x-registry-auth")
        .and_then(|h| h.to_str().ok())
        .and_then(image::pull::decode_registry_auth);
    let resolved = app
        .runtime
        .images
        .puller()
        .resolve(reference, creds.as_ref(), &reach(&app, peer))
        .await
        .map_err(pull_error)?;

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<image::pull::Progress>();
    let (line_tx, line_rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let forward = line_tx.clone();
    tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            let _ = forward.send(progress_json(p));
        }
    });
    tokio::spawn(async move {
        let images = &app.runtime.images;
        let result = images.pull(&tenant, &resolved, &tx).await;
        drop(tx);
        match result {
            Ok(status) => {
                let _ = line_tx
                    .send(json!({"status": format!("Digest: {}", resolved.manifest_digest)}));
                let _ = line_tx.send(json!({"status": status}));
            }
            Err(e) => {
                let msg = server_error_chain(&e);
                tracing::warn!(image = %resolved.name, "pull failed: {msg}");
                let _ = line_tx.send(json!({"errorDetail": {"message": msg}, "error": msg}));
            }
        }
    });
    // Progress lines go out in order; the closing lines wait for the progress forwarder to
    // drain (both senders must be gone before the stream ends).
    let stream = futures_util::stream::unfold(line_rx, |mut rx| async move {
        let v = rx.recv().await?;
        Some((
            Ok::<_, std::convert::Infallible>(Bytes::from(v.to_string() + "\r\n")),
            rx,
        ))
    });
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// One progress event as Docker's JSON message.
pub(crate) fn progress_json(p: image::pull::Progress) -> Value {
    let mut v = json!({"status": p.status});
    if let Some(id) = p.id {
        v["id"] = json!(id);
    }
    if let Some(current) = p.current {
        v["progressDetail"] = json!({"current": current, "total": p.total});
        v["progress"] = json!(progress_bar(current, p.total));
    } else {
        v["progressDetail"] = json!({});
    }
    v
}

fn server_error_chain(e: &dyn std::error::Error) -> String {
    crate::error::error_chain(e)
}

/// Docker's text progress bar, for clients that print `progress`.
fn progress_bar(current: u64, total: Option<u64>) -> String {
    let human = |b: u64| {
        let b = b as f64;
        if b >= 1e9 {
            format!("{:.2}GB", b / 1e9)
        } else if b >= 1e6 {
            format!("{:.2}MB", b / 1e6)
        } else if b >= 1e3 {
            format!("{:.2}kB", b / 1e3)
        } else {
            format!("{b}B")
        }
    };
    match total.filter(|t| *t > 0) {
        Some(t) => {
            let filled = ((current.min(t) * 50) / t) as usize;
            let bar = if filled >= 50 {
                "=".repeat(50)
            } else {
                format!("{}>{}", "=".repeat(filled), " ".repeat(49 - filled))
            };
            format!("[{bar}] {}/{}", human(current), human(t))
        }
        None => human(current),
    }
}

/// Where a failed pull lands on the wire: the caller's mistakes are 400/401/404.
pub(crate) fn pull_error(e: image::pull::PullError) -> ApiError {
    use image::pull::PullError as P;
    let status = match &e {
        P::InvalidReference(_) => StatusCode::BAD_REQUEST,
        P::NotFound(_) => StatusCode::NOT_FOUND,
        P::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        P::Unsupported(_) => StatusCode::BAD_REQUEST,
        P::Refused(_) => StatusCode::FORBIDDEN,
        P::Registry(_) | P::Http(_) => StatusCode::INTERNAL_SERVER_ERROR,
        P::Image(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, crate::error::error_chain(&e))
}
