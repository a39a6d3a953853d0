//! Operator endpoints for the fleet's nodes (`hyperd node ...`), on the root-only unix socket
//! like the other admin endpoints: a tenant never sees a node.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use node::fleet::{self, Availability, NodeStatus};

use crate::error::ApiResult;
use crate::routes::admin::operator_only;
use crate::transport::Peer;
use crate::AppState;

pub async fn list(
    State(app): State<AppState>,
    Extension(peer): Extension<Peer>,
) -> ApiResult<Json<Vec<NodeStatus>>> {
    operator_only(peer)?;
    Ok(Json(fleet::list(&**app.runtime.store())?))
}

pub async fn inspect(
    State(app): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
) -> ApiResult<Json<NodeStatus>> {
    operator_only(peer)?;
    Ok(Json(fleet::get(&**app.runtime.store(), &name)?))
}

pub async fn drain(
    state: State<AppState>,
    peer: Extension<Peer>,
    name: Path<String>,
) -> ApiResult<Json<NodeStatus>> {
    set_availability(state, peer, name, Availability::Drain)
}

pub async fn activate(
    state: State<AppState>,
    peer: Extension<Peer>,
    name: Path<String>,
) -> ApiResult<Json<NodeStatus>> {
    set_availability(state, peer, name, Availability::Active)
}

fn set_availability(
    State(app): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
    availability: Availability,
) -> ApiResult<Json<NodeStatus>> {
    operator_only(peer)?;
    let store = app.runtime.store();
    Ok(Json(fleet::set_availability(
        &**store,
        &name,
        availability,
    )?))
}

pub async fn remove(
    State(app): State<AppState>,
    Extension(peer): Extension<Peer>,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    operator_only(peer)?;
    fleet::remove(&**app.runtime.store(), &name)?;
    Ok((StatusCode::OK, Json(serde_json::json!({"Name": name}))))
}
