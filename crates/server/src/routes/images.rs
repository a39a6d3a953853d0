//! `/images/...`: list, inspect, history, tag, remove, load. Image names may contain slashes
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
use crate::transport::TenantId;
use crate::AppState;

fn created_unix(v: &ImageView) -> i64 {
    v.info
        .created
        .as_deref()
        .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
        .map(|t| t.timestamp())
        .unwrap_or(0)
}

fn summary(v: &ImageView) -> Value {
    json!({
        "Id": v.info.id,
        "ParentId": "",
        "RepoTags": v.tenant.tags,
        "RepoDigests": [],
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
        "RepoDigests": [],
        "Parent": "",
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
            let body: Vec<Value> = report.into_iter().map(|(k, v)| json!({ k: v })).collect();
            Ok(Json(Value::Array(body)).into_response())
        }
        (_, "push") => Err(ApiError::not_implemented("image push is not supported")),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("page not found: {rest}"),
        )),
    }
}

/// `POST /images/load`: a `docker save` or OCI archive as the body.
pub async fn load(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Query(q): Query<Params>,
    body: Body,
) -> ApiResult<Response> {
    let spool = tempfile::NamedTempFile::new_in(app.runtime.config().data_root.join("tmp"))
        .map_err(|e| ApiError::from(node::RuntimeError::io("spool the archive")(e)))?;
    let mut file = spool
        .reopen()
        .map_err(|e| ApiError::from(node::RuntimeError::io("spool the archive")(e)))?;
    let mut stream = body.into_data_stream();
    let mut first: Option<Bytes> = None;
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::bad_request(format!("reading the archive: {e}")))?;
        if first.is_none() {
            first = Some(chunk.clone());
        }
        file.write_all(&chunk)
            .map_err(|e| ApiError::from(node::RuntimeError::io("spool the archive")(e)))?;
    }
    if first.as_ref().is_some_and(|b| b.first() == Some(&b'{')) {
        return Err(ApiError::not_implemented(
            "loading from a URL (fromSrc) is not supported yet: send the archive as the body",
        ));
    }
    let lines = app
        .runtime
        .images
        .load(&tenant, spool.path().to_path_buf())
        .await?;
    let quiet = flag(&q, "quiet", false);
    let body: String = lines
        .iter()
        .map(|l| {
            if quiet {
                json!({"stream": ""})
            } else {
                json!({"stream": format!("{l}\n")})
            }
            .to_string()
                + "\n"
        })
        .collect();
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

pub async fn create(Query(q): Query<Params>) -> ApiResult<Response> {
    let image = q.get("fromImage").cloned().unwrap_or_default();
    Err(ApiError::not_implemented(format!(
        "pulling from a registry ({image}) is not supported yet: load the image with `hyper load -i FILE`"
    )))
}
