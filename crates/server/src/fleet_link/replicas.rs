//! What the services reconciler asks of other nodes ([`node::other_nodes::OtherNodes`]): a
//! replica created and started on a node with room, with the image brought there first, or a
//! replica removed on the node that runs it. Each is the request a client would send that
//! node, signed as the fleet's.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use http::{header, Method, StatusCode};
use node::model::{ContainerConfig, HostConfig};
use node::other_nodes::{Done, OtherNodes};
use node::RuntimeError;

use super::placement::escape;
use crate::AppState;

/// The fleet link as the runtime's way to other nodes.
struct Replicas {
    app: AppState,
}

/// Lets the runtime (its services reconciler) act on the fleet's other nodes; nothing on one
/// machine.
pub fn reach_other_nodes(app: &AppState) {
    if app.fleet.is_some() {
        let replicas = Replicas { app: app.clone() };
        app.runtime.set_other_nodes(Arc::new(replicas));
    }
}

impl Replicas {
    /// Sends `method target` with a JSON `body` to `node` for `tenant`; the answer's JSON
    /// when its status is one of `ok`, else the node's refusal as the runtime words it.
    async fn call(
        &self,
        node: &str,
        tenant: &str,
        (method, target): (Method, String),
        body: Option<serde_json::Value>,
        ok: &[StatusCode],
    ) -> node::Result<serde_json::Value> {
        let link = self
            .app
            .fleet
            .as_ref()
            .ok_or_else(|| RuntimeError::Internal("not in a fleet".into()))?;
        let record = node::fleet::get(link.store.as_ref(), node)?.record;
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        let req = Request::builder()
            .method(method)
            .uri(&target)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .expect("a valid request");
        let resp = link
            .send(&record, tenant, req)
            .await
            .map_err(|why| RuntimeError::Internal(format!("node {node}: {why}")))?;
        let status = resp.status();
        let bytes = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .map_err(|e| RuntimeError::Internal(format!("node {node}: {e}")))?
            .to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        if ok.contains(&status) {
            return Ok(json);
        }
        let message = format!(
            "node {node}: {}",
            json["message"].as_str().unwrap_or(status.as_str())
        );
        Err(match status {
            StatusCode::NOT_FOUND => RuntimeError::NotFound(message),
            StatusCode::CONFLICT => RuntimeError::Conflict(message),
            StatusCode::BAD_REQUEST => RuntimeError::Invalid(message),
            StatusCode::FORBIDDEN => RuntimeError::Quota(message),
            StatusCode::SERVICE_UNAVAILABLE => RuntimeError::NoRoom(message),
            _ => RuntimeError::Internal(message),
        })
    }
}

impl OtherNodes for Replicas {
    fn run<'a>(
        &'a self,
        node: &'a str,
        tenant: &'a str,
        name: &'a str,
        config: ContainerConfig,
        host: HostConfig,
    ) -> Done<'a> {
        Box::pin(async move {
            if let Some(link) = &self.app.fleet {
                let record = node::fleet::get(link.store.as_ref(), node)?.record;
                link.bring_image(&self.app, &record, tenant, &config.image)
                    .await;
            }
            let mut body = serde_json::to_value(&config).expect("json");
            body["HostConfig"] = serde_json::to_value(&host).expect("json");
            let create = (
                Method::POST,
                format!("/containers/create?name={}", escape(name)),
            );
            let created = self
                .call(node, tenant, create, Some(body), &[StatusCode::CREATED])
                .await?;
            let id = created["Id"].as_str().unwrap_or_default();
            let start = (Method::POST, format!("/containers/{}/start", escape(id)));
            let started = [StatusCode::NO_CONTENT, StatusCode::NOT_MODIFIED];
            self.call(node, tenant, start, None, &started).await?;
            Ok(())
        })
    }

    fn remove<'a>(&'a self, node: &'a str, tenant: &'a str, id: &'a str) -> Done<'a> {
        Box::pin(async move {
            let target = format!("/containers/{}?force=1&v=1", escape(id));
            let gone = [StatusCode::NO_CONTENT, StatusCode::NOT_FOUND];
            self.call(node, tenant, (Method::DELETE, target), None, &gone)
                .await?;
            Ok(())
        })
    }
}
