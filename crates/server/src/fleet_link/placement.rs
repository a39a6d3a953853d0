//! Where a new container is created: the node with the most room for it, or the one that
//! holds its local volumes; the image goes along when that node lacks it.

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http::{header, StatusCode};
use node::fleet::{NodeRecord, NodeState};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::FleetLink;
use crate::error::ApiError;
use crate::AppState;

/// How long a placement that finds no room waits for the placements in flight to be booked.
const IN_FLIGHT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Where [`FleetLink::place_elsewhere`] put a container.
pub enum Placed {
    /// Here: create it, holding this until its record books its memory.
    Here(Pending),
    /// On another node, whose answer this is.
    There(Response),
}

/// Memory a placement gave a node that its records do not book yet (the create is on its
/// way): the placements that follow count it, so a burst through one node spreads over the
/// fleet instead of piling onto the node that looked emptiest when it began. Given back when
/// dropped.
pub struct Pending {
    pending: Arc<Mutex<HashMap<String, u64>>>,
    node: String,
    bytes: u64,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut pending = self.pending.lock().expect("poisoned");
        if let Some(left) = pending.get_mut(&self.node) {
            *left = left.saturating_sub(self.bytes);
            if *left == 0 {
                pending.remove(&self.node);
            }
        }
    }
}

impl FleetLink {
    /// Holds `bytes` of `node`'s memory for a placement on its way, in `pending` (the map,
    /// locked by the caller).
    fn pend_in(&self, pending: &mut HashMap<String, u64>, node: &str, bytes: u64) -> Pending {
        *pending.entry(node.to_string()).or_default() += bytes;
        Pending {
            pending: self.pending.clone(),
            node: node.to_string(),
            bytes,
        }
    }

    /// [`Self::pend_in`] with the lock taken and given back here: a [`Pending`] replaced by the
    /// result is dropped (and takes the lock) after.
    fn pend(&self, node: &str, bytes: u64) -> Pending {
        let mut pending = self.pending.lock().expect("poisoned");
        self.pend_in(&mut pending, node, bytes)
    }

    /// The nodes that may take a container of `size`, best first, counting what placements
    /// in flight gave them; the first one's share held at once, in the same look. The records
    /// are read under the lock too: a placement's share is given back only after its record
    /// books it, so none is missed between the two (one may count twice, briefly).
    fn choose(
        &self,
        app: &AppState,
        nodes: &[node::fleet::NodeStatus],
        size: &str,
    ) -> Result<(Vec<String>, Pending), ApiError> {
        let mut pending = self.pending.lock().expect("poisoned");
        let mut booked = app.runtime.booked_by_node()?;
        for (node, bytes) in pending.iter() {
            *booked.entry(node.clone()).or_default() += bytes;
        }
        let order = node::placement::order(nodes, &booked, size, &self.node);
        let Some(first) = order.first() else {
            let why = node::placement::no_room(nodes, &booked, size);
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, why));
        };
        let held = self.pend_in(&mut pending, first, node::placement::memory_of(size));
        Ok((order, held))
    }

    /// Places a new container of `size` (the create request `target` with `body`) on the
    /// node with the most memory free for it: [`Placed::Here`] when that is this node (or when
    /// no other node took it: this node's own check then has the last word), else that node's
    /// answer. A node that has filled up meanwhile, or lacks the image, passes it on to the
    /// next.
    pub async fn place_elsewhere(
        &self,
        app: &AppState,
        tenant: &str,
        (size, image): (&str, &str),
        target: &str,
        body: &bytes::Bytes,
    ) -> Result<Placed, ApiError> {
        let nodes = node::fleet::list(self.store.as_ref())?;
        // Until the placements in flight are booked by their records, a node can look fuller
        // than it is (one may count twice): a refusal waits for them first.
        let deadline = tokio::time::Instant::now() + IN_FLIGHT_WAIT;
        let (order, mut held) = loop {
            match self.choose(app, &nodes, size) {
                Err(full)
                    if full.status == StatusCode::SERVICE_UNAVAILABLE
                        && !self.pending.lock().expect("poisoned").is_empty()
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                chosen => break chosen?,
            }
        };
        let bytes = node::placement::memory_of(size);
        for (i, name) in order.into_iter().enumerate() {
            if i > 0 {
                held = self.pend(&name, bytes);
            }
            if name == self.node {
                return Ok(Placed::Here(held));
            }
            let Some(node) = nodes.iter().find(|n| n.record.name == name) else {
                continue;
            };
            self.bring_image(app, &node.record, tenant, image).await;
            let req = Request::post(target)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.clone()))
                .expect("a valid request");
            match self.send(&node.record, tenant, req).await {
                Ok(resp)
                    if matches!(
                        resp.status(),
                        StatusCode::SERVICE_UNAVAILABLE | StatusCode::NOT_FOUND
                    ) =>
                {
                    tracing::info!("node {name} passed on a placement ({})", resp.status());
                }
                Ok(resp) => return Ok(Placed::There(resp)),
                Err(why) => tracing::warn!("placing a container on node {name}: {why}"),
            }
        }
        drop(held);
        Ok(Placed::Here(self.pend(&self.node, bytes)))
    }

    /// Sends a create (`target`, `body`) to the node `name` that holds what the container
    /// needs (its local volumes): that node's answer, or `None` when it is this one.
    pub async fn create_on(
        &self,
        app: &AppState,
        tenant: &str,
        name: &str,
        image: &str,
        target: &str,
        body: &bytes::Bytes,
    ) -> Result<Option<Response>, ApiError> {
        if name == self.node {
            return Ok(None);
        }
        let node = node::fleet::get(self.store.as_ref(), name)?;
        if node.state != NodeState::Ready {
            let why = format!(
                "the container's volumes are on node {name}, which is down: try again when it is back"
            );
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, why));
        }
        self.bring_image(app, &node.record, tenant, image).await;
        let req = Request::post(target)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.clone()))
            .expect("a valid request");
        self.send(&node.record, tenant, req)
            .await
            .map(Some)
            .map_err(|why| ApiError::new(StatusCode::BAD_GATEWAY, why))
    }

    /// Copies the tenant's `image` to `record`'s node (this one included) when it lacks it:
    /// a `docker save` of it from this node, or else from another node that has it, into
    /// that node's `load`, so a container placed there runs the same image. Failing that,
    /// the node's create says the image is missing (and placement moves on). One copy at a
    /// time per node and image: the creates placed there meanwhile wait for it, and find it.
    pub(super) async fn bring_image(
        &self,
        app: &AppState,
        record: &NodeRecord,
        tenant: &str,
        image: &str,
    ) {
        let key = format!("{}/{tenant}/{image}", record.name);
        let gate = self
            .copies
            .lock()
            .expect("poisoned")
            .entry(key)
            .or_default()
            .clone();
        let copying = gate.lock().await;
        self.copy_image(app, record, tenant, image).await;
        drop(copying);
        drop(gate);
        // Gates nobody waits on go.
        self.copies
            .lock()
            .expect("poisoned")
            .retain(|_, gate| Arc::strong_count(gate) > 1);
    }

    /// [`Self::bring_image`], one copy at a time.
    async fn copy_image(&self, app: &AppState, record: &NodeRecord, tenant: &str, image: &str) {
        if self.has_image(record, tenant, image).await {
            return;
        }
        let saved = match self.saved_image(app, record, tenant, image).await {
            Some(body) => body,
            None => return,
        };
        let load = Request::post("/images/load?quiet=1")
            .header(header::CONTENT_TYPE, "application/x-tar")
            .body(saved)
            .expect("a valid request");
        let loaded = match self.send(record, tenant, load).await {
            // The load ends with its answer's body.
            Ok(resp) => http_body_util::BodyExt::collect(resp.into_body())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(why) => Err(why),
        };
        match loaded {
            Ok(()) => tracing::info!("copied image {image} of {tenant} to node {}", record.name),
            Err(why) => tracing::warn!("copying image {image} to node {}: {why}", record.name),
        }
    }

    /// [`Self::bring_image`] to this node, when it lacks the image.
    pub async fn bring_image_here(&self, app: &AppState, tenant: &str, image: &str) {
        if app.runtime.images.resolve(tenant, image).is_ok() {
            return;
        }
        if let Ok(me) = node::fleet::get(self.store.as_ref(), &self.node) {
            self.bring_image(app, &me.record, tenant, image).await;
        }
    }

    /// Whether `record`'s node has the tenant's `image` (a failed probe counts as yes: the
    /// create there says what is wrong).
    async fn has_image(&self, record: &NodeRecord, tenant: &str, image: &str) -> bool {
        let path = format!("/images/{}/json", escape(image));
        let probe = Request::get(path)
            .body(Body::empty())
            .expect("a valid request");
        !matches!(
            self.send(record, tenant, probe).await,
            Ok(resp) if resp.status() == StatusCode::NOT_FOUND
        )
    }

    /// A `docker save` stream of the tenant's `image` from this node if it has it, else from
    /// another node (not `to`) that does.
    async fn saved_image(
        &self,
        app: &AppState,
        to: &NodeRecord,
        tenant: &str,
        image: &str,
    ) -> Option<Body> {
        let target = format!("/images/get?names={}", escape(image));
        if to.name != self.node && app.runtime.images.resolve(tenant, image).is_ok() {
            let uri = target.parse().ok()?;
            return match crate::routes::image_save::save_many(app, tenant, &uri).await {
                Ok(saved) => Some(saved.into_body()),
                Err(e) => {
                    tracing::warn!("saving {image} for node {}: {}", to.name, e.message);
                    None
                }
            };
        }
        for node in self.others() {
            if node.record.name == to.name || !self.has_image(&node.record, tenant, image).await {
                continue;
            }
            let req = Request::get(&target)
                .body(Body::empty())
                .expect("a valid request");
            match self.send(&node.record, tenant, req).await {
                Ok(resp) if resp.status().is_success() => return Some(resp.into_body()),
                Ok(resp) => tracing::warn!(
                    "saving {image} on node {}: {}",
                    node.record.name,
                    resp.status()
                ),
                Err(why) => tracing::warn!("saving {image} on node {}: {why}", node.record.name),
            }
        }
        None
    }
}

/// Everything but RFC 3986's unreserved characters is escaped: `text` is safe in a path
/// segment or a query value.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub(super) fn escape(text: &str) -> String {
    utf8_percent_encode(text, COMPONENT).to_string()
}
