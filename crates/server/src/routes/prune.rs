//! Docker's prune endpoints for what hyper keeps per tenant: stopped containers, networks no
//! container uses, and the build cache (hyper builds nothing, so there is none to free).
//! Volumes have theirs in `volumes.rs`. Filters: `until` and `label` (`label!` to keep).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::{filter_values, Params};
use crate::error::{ApiError, ApiResult};
use crate::transport::TenantId;
use crate::AppState;

/// `until` and `label` filters as one predicate on (created, labels).
struct Filters {
    until: Option<DateTime<Utc>>,
    labels: Vec<String>,
    not_labels: Vec<String>,
}

impl Filters {
    fn parse(q: &Params) -> ApiResult<Filters> {
        let f = q.get("filters");
        let until = match filter_values(f, "until")?.as_deref() {
            None | Some([]) => None,
            Some([t]) => {
                let mut one = Params::new();
                one.insert("until".into(), t.clone());
                super::time_param(&one, "until")?
            }
            Some(_) => return Err(ApiError::bad_request("give one value for the until filter")),
        };
        Ok(Filters {
            until,
            labels: filter_values(f, "label")?.unwrap_or_default(),
            not_labels: filter_values(f, "label!")?.unwrap_or_default(),
        })
    }

    fn matches(
        &self,
        created: DateTime<Utc>,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> bool {
        let has = |want: &String| match want.split_once('=') {
            Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
            None => labels.contains_key(want),
        };
        self.until.is_none_or(|u| created < u)
            && self.labels.iter().all(has)
            && !self.not_labels.iter().any(has)
    }
}

/// Bytes a file takes on its file system (holes excluded).
fn allocated(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map_or(0, |m| m.blocks() * 512)
}

/// `POST /containers/prune`: every stopped container of the tenant the filters select, except
/// protected ones (termination protection guards against this too).
pub async fn containers(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Query(q): Query<Params>,
) -> ApiResult<Json<Value>> {
    let filters = Filters::parse(&q)?;
    let mut deleted = Vec::new();
    let mut freed = 0;
    for c in app.runtime.list(&tenant) {
        if c.is_running() || !filters.matches(c.created, &c.config.labels) {
            continue;
        }
        let size = allocated(&app.runtime.dir(&c.id).join("root.qcow2"));
        match app.runtime.remove(&tenant, &c.id, false, false).await {
            Ok(()) => {
                deleted.push(c.id);
                freed += size;
            }
            // Protected, or started meanwhile: not pruned.
            Err(e) => tracing::info!("prune leaves container {}: {e}", c.short_id()),
        }
    }
    Ok(Json(
        json!({"ContainersDeleted": deleted, "SpaceReclaimed": freed}),
    ))
}

/// `POST /networks/prune`: the tenant's networks no container is on (the default network
/// stays: it is pre-defined).
pub async fn networks(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Query(q): Query<Params>,
) -> ApiResult<Json<Value>> {
    let filters = Filters::parse(&q)?;
    let mut in_use: HashMap<String, usize> = HashMap::new();
    for c in app.runtime.list(&tenant) {
        if let Some(ep) = &c.endpoint {
            *in_use.entry(ep.network_id.clone()).or_default() += 1;
        }
    }
    let t = tenant.clone();
    let networks = app
        .runtime
        .with_networks(move |n| n.list_networks(&t))
        .await?;
    let mut deleted = Vec::new();
    for n in networks {
        if n.name == node::network::DEFAULT_NETWORK
            || in_use.contains_key(&n.id)
            || !filters.matches(n.created, &n.labels)
        {
            continue;
        }
        let (t, id) = (tenant.clone(), n.id.clone());
        match app
            .runtime
            .with_networks(move |nets| nets.remove_network(&t, &id))
            .await
        {
            Ok(()) => deleted.push(n.name),
            Err(e) => tracing::info!("prune leaves network {}: {e}", n.name),
        }
    }
    Ok(Json(json!({"NetworksDeleted": deleted})))
}

/// `POST /build/prune`: hyper builds no images, so it holds no build cache.
pub async fn build_cache() -> Json<Value> {
    Json(json!({"CachesDeleted": [], "SpaceReclaimed": 0}))
}
