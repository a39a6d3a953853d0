//! The layer that passes a request about another node's container (or exec) to that node.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};
use node::fleet::{NodeRecord, NodeState, NodeStatus};

use super::FleetLink;
use crate::error::ApiError;
use crate::transport::{Peer, TenantId};
use crate::AppState;

impl FleetLink {
    /// The node holding the tenant's exec `id`, asked of every other node.
    async fn find_exec(&self, tenant: &str, id: &str) -> Option<NodeRecord> {
        for node in self.others() {
            let probe = Request::get(format!("/exec/{id}/json"))
                .body(Body::empty())
                .expect("a valid request");
            if let Ok(resp) = self.send(&node.record, tenant, probe).await {
                if resp.status().is_success() {
                    return Some(node.record);
                }
            }
        }
        None
    }
}

/// What a request is about, when that decides the node that answers it.
enum About<'a> {
    Container(&'a str),
    Exec(&'a str),
}

fn about(path: &str) -> Option<About<'_>> {
    if let Some(rest) = path.strip_prefix("/containers/") {
        let (reference, action) = rest.split_once('/').unwrap_or((rest, ""));
        let collection = matches!(reference, "json" | "create" | "prune") && action.is_empty();
        return (!reference.is_empty() && !collection).then_some(About::Container(reference));
    }
    let id = path.strip_prefix("/exec/")?.split('/').next()?;
    (!id.is_empty()).then_some(About::Exec(id))
}

/// The layer that passes a request to the node that runs what it is about.
pub async fn to_home_node(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let Some(link) = app.fleet.clone() else {
        return next.run(req).await;
    };
    // A request another node passed on is answered here, never passed on again.
    if req.extensions().get::<Peer>() == Some(&Peer::Node) {
        return next.run(req).await;
    }
    let Some(TenantId(tenant)) = req.extensions().get::<TenantId>().cloned() else {
        return next.run(req).await;
    };
    let mut record = None;
    let home = match about(req.uri().path()) {
        Some(About::Container(reference)) => match app.runtime.home_elsewhere(&tenant, reference) {
            Ok(Some(c)) => {
                let home = node::fleet::get(link.store.as_ref(), &c.node);
                record = Some(c);
                home.map_err(|e| e.to_string())
            }
            _ => return next.run(req).await,
        },
        Some(About::Exec(id)) if !app.runtime.has_exec(&tenant, id) => {
            match link.find_exec(&tenant, id).await {
                Some(record) => Ok(NodeStatus {
                    record,
                    state: NodeState::Ready,
                }),
                None => return next.run(req).await,
            }
        }
        _ => return next.run(req).await,
    };
    let node = match home {
        Ok(node) if node.state == NodeState::Ready => node,
        // Down, or removed from the fleet by the operator since.
        _ if record.as_ref().is_some_and(|c| c.lost.is_some()) => {
            let lost = record.expect("checked");
            return answer_for_lost(&app, &tenant, &lost, &req);
        }
        Ok(node) => {
            let message = format!(
                "the container runs on node {}, which is down: try again when it is back",
                node.record.name
            );
            return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message).into_response();
        }
        Err(why) => return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    };
    match link.send(&node.record, &tenant, req).await {
        Ok(resp) => resp,
        Err(why) => {
            tracing::warn!("passing a request to node {}: {why}", node.record.name);
            ApiError::new(StatusCode::BAD_GATEWAY, why).into_response()
        }
    }
}

/// What a node answers for a container of a lost node that is still away: its inspect and
/// its removal (both from its record); anything else waits for that node.
fn answer_for_lost(
    app: &AppState,
    tenant: &str,
    c: &node::model::Container,
    req: &Request,
) -> Response {
    let action = req.uri().path().splitn(4, '/').nth(3);
    match (req.method(), action) {
        (&Method::GET, Some("json")) => axum::Json(crate::docker_json::inspect(c)).into_response(),
        (&Method::DELETE, None) => match app.runtime.remove_lost(tenant, &c.id) {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(e) => ApiError::from(e).into_response(),
        },
        _ => {
            let message = format!(
                "container {} is stopped: its node {} was lost ({}); inspect or remove it",
                c.name, c.node, c.state.error
            );
            ApiError::new(StatusCode::CONFLICT, message).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_about_one_container_or_exec_are_told_apart() {
        let container = |p| matches!(about(p), Some(About::Container(_)));
        assert!(container("/containers/web/json"));
        assert!(container("/containers/web"));
        assert!(container("/containers/3f2a/attach"));
        assert!(container("/containers/json/json"), "a container named json");
        assert!(!container("/containers/json"));
        assert!(!container("/containers/create"));
        assert!(!container("/containers/prune"));
        assert!(matches!(
            about("/exec/ab12/start"),
            Some(About::Exec("ab12"))
        ));
        assert!(about("/images/json").is_none());
        assert!(about("/exec/").is_none());
    }
}
