//! `/compose/{up,create,start,stop,kill,rm,down}`: Hyper's compose kept in the cloud (the
//! work is in [`crate::compose`]). Bad input is a 4xx before the stream starts; after that
//! every answer is a 200 with Docker's jsonmessage stream, a failure its last line as
//! `errorDetail`.

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde_json::Value;

use super::{flag, int, Params};
use crate::compose::{spec, Out, Scope};
use crate::error::{ApiError, ApiResult};
use crate::transport::{Peer, TenantId};
use crate::AppState;

fn scope(app: AppState, tenant: String, peer: Peer, q: &Params) -> ApiResult<Scope> {
    let raw = q
        .get("project")
        .filter(|p| !p.is_empty())
        .ok_or_else(|| ApiError::bad_request("missing ?project="))?;
    Ok(Scope {
        app,
        tenant,
        peer,
        project: spec::project_name(raw)?,
    })
}

/// Runs `work` with the stream's sender and answers the stream.
fn stream<F, Fut>(work: F) -> Response
where
    F: FnOnce(Out) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let out = Out(tx);
    tokio::spawn(async move {
        let errors = out.clone();
        if let Err(e) = work(out).await {
            tracing::info!("compose: {e}");
            errors.error(&e);
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        let v = rx.recv().await?;
        Some((
            Ok::<_, std::convert::Infallible>(Bytes::from(v.to_string() + "\r\n")),
            rx,
        ))
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        Body::from_stream(body),
    )
        .into_response()
}

async fn up_or_create(
    app: AppState,
    tenant: String,
    peer: Peer,
    q: Params,
    body: Bytes,
    start: bool,
) -> ApiResult<Response> {
    let s = scope(app, tenant, peer, &q)?;
    let project = spec::parse_project(&body)?;
    let wanted = spec::service_list(q.get("services"));
    for w in &wanted {
        if !project.services.contains_key(w) {
            return Err(ApiError::bad_request(format!("no such service: {w}")));
        }
    }
    let (force, no_recreate) = (
        flag(&q, "forcerecreate", false),
        flag(&q, "norecreate", false),
    );
    if force && no_recreate {
        return Err(ApiError::bad_request(
            "forcerecreate and norecreate cannot be combined",
        ));
    }
    // A floating IP must be one of the tenant's, free or already the project's.
    let t = s.tenant.clone();
    let fips = s.app.runtime.with_networks(move |n| n.fip_list(&t)).await?;
    let ours: Vec<String> = super::super::compose::containers(&s.app, &s.tenant, &s.project, true)
        .into_iter()
        .map(|c| c.id)
        .collect();
    for svc in project.services.values() {
        let Some(ip) = svc.fip else { continue };
        match fips.iter().find(|f| f.ip == ip) {
            None => {
                return Err(ApiError::bad_request(format!(
                    "service {}: floating IP {ip} is not allocated to you (hyper fip allocate 1)",
                    svc.name
                )))
            }
            Some(f)
                if !f.service.is_empty()
                    || (!f.container.is_empty() && !ours.contains(&f.container)) =>
            {
                return Err(ApiError::new(
                    http::StatusCode::CONFLICT,
                    format!(
                        "service {}: floating IP {ip} is in use by another container or service",
                        svc.name
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    // Security groups must exist, and volume sizes be ones a volume can have: refused now,
    // before anything is made, rather than half-way through the stream.
    let store = s.app.runtime.store().clone();
    for svc in project.services.values() {
        for g in &svc.security_groups {
            node::network::sg::get(store.as_ref(), &s.tenant, g).map_err(|e| {
                ApiError::bad_request(format!(
                    "service {}: {e}: create it with hyper sg create",
                    svc.name
                ))
            })?;
        }
    }
    for (name, v) in &project.volumes {
        if !v.external && !v.driver_opts.contains_key("snapshot") {
            s.app
                .runtime
                .volumes
                .requested_size(&v.driver_opts, None)
                .map_err(|e| ApiError::bad_request(format!("volume {name}: {e}")))?;
        }
    }
    Ok(stream(move |out| async move {
        s.up(project, &wanted, force, no_recreate, start, &out)
            .await
    }))
}

pub async fn up(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Extension(peer): Extension<Peer>,
    Query(q): Query<Params>,
    body: Bytes,
) -> ApiResult<Response> {
    up_or_create(app, tenant, peer, q, body, true).await
}

pub async fn create(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Extension(peer): Extension<Peer>,
    Query(q): Query<Params>,
    body: Bytes,
) -> ApiResult<Response> {
    up_or_create(app, tenant, peer, q, body, false).await
}

pub async fn start(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Extension(peer): Extension<Peer>,
    Query(q): Query<Params>,
) -> ApiResult<Response> {
    let s = scope(app, tenant, peer, &q)?;
    let targets = s.targets(&spec::service_list(q.get("services")))?;
    Ok(stream(
        move |out| async move { s.start(targets, &out).await },
    ))
}

pub async fn stop(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Extension(peer): Extension<Peer>,
    Query(q): Query<Params>,
) -> ApiResult<Response> {
    let s = scope(app, tenant, peer, &q)?;
    let seconds = int(&q, "seconds")?;
    let targets = s.targets(&spec::service_list(q.get("services")))?;
    Ok(stream(move |out| async move {
        s.stop(targets, seconds, None, &out).await
    }))
}

pub async fn kill(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Extension(peer): Extension<Peer>,
    Query(q): Query<Params>,
) -> ApiResult<Response> {
    let s = scope(app, tenant, peer, &q)?;
    let signal = q
        .get("signal")
        .filter(|v| !v.is_empty())
        .cloned()
        .unwrap_or_else(|| "KILL".into());
    node::validate::signal(&signal)?;
    let targets = s.targets(&spec::service_list(q.get("services")))?;
    Ok(stream(move |out| async move {
        s.stop(targets, None, Some(&signal), &out).await
    }))
}

pub async fn rm(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Extension(peer): Extension<Peer>,
    Query(q): Query<Params>,
) -> ApiResult<Response> {
    let s = scope(app, tenant, peer, &q)?;
    let rmvol = flag(&q, "rmvol", false);
    let targets = s.targets(&spec::service_list(q.get("services")))?;
    Ok(stream(move |out| async move {
        s.rm(targets, rmvol, &out).await
    }))
}

pub async fn down(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Extension(peer): Extension<Peer>,
    Query(q): Query<Params>,
) -> ApiResult<Response> {
    let s = scope(app, tenant, peer, &q)?;
    let rmi = q.get("rmi").filter(|v| !v.is_empty()).cloned();
    if let Some(r) = &rmi {
        if !matches!(r.as_str(), "all" | "local") {
            return Err(ApiError::bad_request(format!(
                "rmi with {r} is not valid: use all or local"
            )));
        }
    }
    if !spec::service_list(q.get("services")).is_empty() {
        return Err(ApiError::bad_request(
            "down acts on the whole project: it takes no services",
        ));
    }
    let (rmvol, rmorphans) = (flag(&q, "rmvol", false), flag(&q, "rmorphans", false));
    Ok(stream(move |out| async move {
        s.down(rmi.as_deref(), rmvol, rmorphans, &out).await
    }))
}
