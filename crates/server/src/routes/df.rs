//! `GET /system/df`: what the tenant's images, containers and volumes take (`docker system
//! df`). Containers' writable layers are qcow2 overlays whose size is not tracked per write, so
//! `SizeRw` is what the overlay file holds on the node.

use axum::extract::State;
use axum::{Extension, Json};
use chrono::Utc;
use serde_json::{json, Value};

use crate::docker_json;
use crate::error::ApiResult;
use crate::routes::images::summary;
use crate::routes::volumes::volume_json;
use crate::transport::TenantId;
use crate::AppState;

/// Bytes a file takes on its file system (holes excluded).
fn allocated(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map_or(0, |m| m.blocks() * 512)
}

pub async fn df(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
) -> ApiResult<Json<Value>> {
    let containers = app.runtime.list(&tenant);
    let images: Vec<Value> = app
        .runtime
        .images
        .list(&tenant)?
        .iter()
        .map(|v| {
            let mut s = summary(v);
            let users = containers
                .iter()
                .filter(|c| c.image_id == v.info.id)
                .count();
            s["Containers"] = json!(users);
            s
        })
        .collect();
    let layers: i64 = images.iter().filter_map(|i| i["Size"].as_i64()).sum();
    let now = Utc::now();
    let container_rows: Vec<Value> = containers
        .iter()
        .map(|c| {
            let mut row = docker_json::list_item(c, now);
            row["SizeRw"] = json!(allocated(&app.runtime.dir(&c.id).join("root.qcow2")));
            row["SizeRootFs"] = json!(node::metering::ROOT_DISK_BYTES);
            row
        })
        .collect();
    let mut volumes = Vec::new();
    for v in app.runtime.volumes.list(&tenant)? {
        let holder = app.runtime.volume_holder(&tenant, &v.name)?;
        let mut j = volume_json(&v, holder.as_deref(), false);
        j["UsageData"] = json!({
            "Size": app.runtime.volumes.backend(&v)?.used_bytes(&v.id),
            "RefCount": app.runtime.volume_users(&tenant, &v.name).len(),
        });
        volumes.push(j);
    }
    Ok(Json(json!({
        "LayersSize": layers,
        "Images": images,
        "Containers": container_rows,
        "Volumes": volumes,
        "BuildCache": [],
    })))
}
