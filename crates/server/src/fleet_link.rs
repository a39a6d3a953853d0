//! One API for the whole fleet: a request about a container another node runs (or one of its
//! execs) is passed to that node and its answer passed back, streams and hijacked connections
//! (attach, exec) included, so a client may talk to any node.
//!
//! Nodes talk over the fleet's network to each other's fleet listener: TLS with a certificate
//! the fleet's CA (DATA/tls, which every node has) made for the node's address, and each
//! request signed with the key every node derives from the shared sealing key
//! ([`crate::seal::Sealer::fleet_key`]). The signature names the tenant the request acts for;
//! the client's own credentials stay with the node it talked to.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use hyper_util::rt::TokioIo;
use node::fleet::{NodeRecord, NodeState, NodeStatus};
use ring::hmac;
use store::Store;

use crate::error::ApiError;
use crate::transport::{Peer, TenantId};
use crate::AppState;

/// `NODE UNIX-SECONDS TENANT HEX-HMAC`: who passed the request on, when, for whom.
pub const HEADER: &str = "x-hyper-fleet";
/// How far apart two nodes' clocks and a request's trip may be.
const MAX_SKEW_SECS: i64 = 120;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The port of a node's fleet listener unless `--node-port` says otherwise.
pub const DEFAULT_PORT: u16 = 2377;

pub struct FleetLink {
    node: String,
    key: hmac::Key,
    tls: Arc<rustls::ClientConfig>,
    /// Where connections to other nodes start (the node's network namespace).
    netns: Option<PathBuf>,
    store: Arc<dyn Store>,
}

impl FleetLink {
    pub fn new(
        node: String,
        key: hmac::Key,
        tls: Arc<rustls::ClientConfig>,
        netns: Option<PathBuf>,
        store: Arc<dyn Store>,
    ) -> Self {
        Self {
            node,
            key,
            tls,
            netns,
            store,
        }
    }

    fn sign(&self, tenant: &str, method: &Method, target: &str) -> HeaderValue {
        let at = chrono::Utc::now().timestamp();
        HeaderValue::from_str(&signature(
            &self.key, &self.node, at, tenant, method, target,
        ))
        .expect("node and tenant names are header-safe")
    }

    /// The tenant a request from another node acts for, or why it is refused.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        method: &Method,
        target: &str,
    ) -> Result<String, String> {
        let value = headers
            .get(HEADER)
            .ok_or("the fleet listener serves other nodes only: no node signature")?
            .to_str()
            .map_err(|_| "unreadable node signature")?;
        check(
            &self.key,
            value,
            method,
            target,
            chrono::Utc::now().timestamp(),
        )
    }

    /// Nodes other than this one that are up and reachable.
    fn others(&self) -> Vec<NodeStatus> {
        node::fleet::list(self.store.as_ref())
            .unwrap_or_default()
            .into_iter()
            .filter(|n| n.record.name != self.node && n.state == NodeState::Ready)
            .filter(|n| n.record.address.is_some() && n.record.api_port.is_some())
            .collect()
    }

    async fn connect(
        &self,
        record: &NodeRecord,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
        let (Some(ip), Some(port)) = (record.address, record.api_port) else {
            return Err(format!(
                "node {} has no address on the fleet's network",
                record.name
            ));
        };
        let addr = SocketAddr::from((ip, port));
        let netns = self.netns.clone();
        let tcp = tokio::task::spawn_blocking(move || {
            node::network::in_netns_of(netns.as_deref(), || {
                std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            })
        })
        .await
        .map_err(|e| e.to_string())?
        .and_then(|s| {
            s.set_nonblocking(true)?;
            s.set_nodelay(true)?;
            tokio::net::TcpStream::from_std(s)
        })
        .map_err(|e| format!("connect to node {} at {addr}: {e}", record.name))?;
        let name = rustls::pki_types::ServerName::IpAddress(ip.into());
        // A node whose hyperd is frozen still accepts connections (its kernel does): the
        // handshake is where it shows.
        let handshake = tokio_rustls::TlsConnector::from(self.tls.clone()).connect(name, tcp);
        tokio::time::timeout(CONNECT_TIMEOUT, handshake)
            .await
            .map_err(|_| format!("node {} at {addr} does not answer", record.name))?
            .map_err(|e| format!("TLS to node {} at {addr}: {e}", record.name))
    }

    /// Sends `req` to `record`'s node for `tenant` and answers with its response; a 101
    /// joins the client's connection to that node's.
    async fn send(
        &self,
        record: &NodeRecord,
        tenant: &str,
        mut req: Request,
    ) -> Result<Response, String> {
        let stream = self.connect(record).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("node {}: {e}", record.name))?;
        tokio::spawn(conn.with_upgrades());
        let client_side = req
            .headers()
            .contains_key(header::UPGRADE)
            .then(|| hyper::upgrade::on(&mut req));
        let target = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let signature = self.sign(tenant, req.method(), &target);
        let headers = req.headers_mut();
        // The client's credentials stay here; the node signature speaks for the tenant.
        headers.remove(header::AUTHORIZATION);
        headers.remove("x-hyper-token");
        headers.insert(HEADER, signature);
        *req.uri_mut() = target.parse().map_err(|e| format!("{target}: {e}"))?;
        let mut resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("node {}: {e}", record.name))?;
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let node_side = hyper::upgrade::on(&mut resp);
            if let Some(client_side) = client_side {
                tokio::spawn(async move {
                    if let (Ok(client), Ok(node)) = tokio::join!(client_side, node_side) {
                        let _ = tokio::io::copy_bidirectional(
                            &mut TokioIo::new(client),
                            &mut TokioIo::new(node),
                        )
                        .await;
                    }
                });
            }
        }
        Ok(resp.map(Body::new))
    }

    /// Places a new container of `size` (the create request `target` with `body`) on the
    /// node with the most memory free for it: `None` when that is this node (or when no other
    /// node took it: this node's own check then has the last word), else that node's answer.
    /// A node that has filled up meanwhile, or lacks the image, passes it on to the next.
    pub async fn place_elsewhere(
        &self,
        app: &AppState,
        tenant: &str,
        (size, image): (&str, &str),
        target: &str,
        body: &bytes::Bytes,
    ) -> Result<Option<Response>, ApiError> {
        let nodes = node::fleet::list(self.store.as_ref())?;
        let booked = app.runtime.booked_by_node()?;
        let order = node::placement::order(&nodes, &booked, size, &self.node);
        if order.is_empty() {
            let why = node::placement::no_room(&nodes, &booked, size);
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, why));
        }
        for name in order {
            if name == self.node {
                return Ok(None);
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
                    ) => {}
                Ok(resp) => return Ok(Some(resp)),
                Err(why) => tracing::warn!("placing a container on node {name}: {why}"),
            }
        }
        Ok(None)
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

    /// Copies the tenant's `image` to `record`'s node when it lacks it and this node has it
    /// (this node's `docker save` of it into that node's `load`), so a container placed there
    /// runs the same image. Failing that, the node's create says the image is missing and
    /// placement moves on.
    async fn bring_image(&self, app: &AppState, record: &NodeRecord, tenant: &str, image: &str) {
        let path = format!("/images/{}/json", escape(image));
        let probe = Request::get(path)
            .body(Body::empty())
            .expect("a valid request");
        match self.send(record, tenant, probe).await {
            Ok(resp) if resp.status() == StatusCode::NOT_FOUND => {}
            _ => return,
        }
        if app.runtime.images.resolve(tenant, image).is_err() {
            return;
        }
        let Ok(uri) = format!("/images/get?names={}", escape(image)).parse() else {
            return;
        };
        let saved = match crate::routes::image_save::save_many(app, tenant, &uri).await {
            Ok(saved) => saved,
            Err(e) => {
                tracing::warn!("saving {image} for node {}: {}", record.name, e.message);
                return;
            }
        };
        let load = Request::post("/images/load?quiet=1")
            .header(header::CONTENT_TYPE, "application/x-tar")
            .body(saved.into_body())
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

    /// The tenant's events on every other node up, as asked by `query` (Docker's `since`,
    /// `until` and `filters`), into `tx` until it closes or their streams end.
    pub fn events_from_others(
        self: &Arc<Self>,
        tenant: &str,
        query: &str,
        tx: tokio::sync::mpsc::Sender<node::events::Event>,
    ) {
        for node in self.others() {
            let (link, tenant, tx) = (self.clone(), tenant.to_string(), tx.clone());
            let path = format!("/events?{query}");
            tokio::spawn(async move {
                let req = Request::get(path)
                    .body(Body::empty())
                    .expect("a valid request");
                let resp = match link.send(&node.record, &tenant, req).await {
                    Ok(resp) if resp.status().is_success() => resp,
                    Ok(resp) => {
                        return tracing::debug!(
                            "events of node {}: {}",
                            node.record.name,
                            resp.status()
                        )
                    }
                    Err(why) => {
                        return tracing::warn!("events of node {}: {why}", node.record.name)
                    }
                };
                let mut stream = resp.into_body().into_data_stream();
                let mut pending = Vec::new();
                loop {
                    let chunk = tokio::select! {
                        chunk = futures_util::StreamExt::next(&mut stream) => chunk,
                        _ = tx.closed() => return,
                    };
                    let Some(Ok(chunk)) = chunk else { return };
                    pending.extend_from_slice(&chunk);
                    while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=end).collect();
                        match serde_json::from_slice(&line) {
                            Ok(event) => {
                                if tx.send(event).await.is_err() {
                                    return;
                                }
                            }
                            Err(e) => tracing::warn!("an event of node {}: {e}", node.record.name),
                        }
                    }
                }
            });
        }
    }

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

/// `text` for a URL path segment or query value.
fn escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn signed_text(from: &str, at: i64, tenant: &str, method: &Method, target: &str) -> String {
    format!("{from}\n{at}\n{tenant}\n{method}\n{target}")
}

/// The value of [`HEADER`] for a request `from` this node at `at` (Unix seconds).
fn signature(
    key: &hmac::Key,
    from: &str,
    at: i64,
    tenant: &str,
    method: &Method,
    target: &str,
) -> String {
    let text = signed_text(from, at, tenant, method, target);
    let mac = hex::encode(hmac::sign(key, text.as_bytes()));
    format!("{from} {at} {tenant} {mac}")
}

/// Checks a [`HEADER`] value against the request at time `now`: the tenant, or why not.
fn check(
    key: &hmac::Key,
    value: &str,
    method: &Method,
    target: &str,
    now: i64,
) -> Result<String, String> {
    let [from, at, tenant, mac] = value.split(' ').collect::<Vec<_>>()[..] else {
        return Err("malformed node signature".into());
    };
    let at: i64 = at.parse().map_err(|_| "malformed node signature")?;
    if (now - at).abs() > MAX_SKEW_SECS {
        return Err(format!(
            "node signature of {from} is more than {MAX_SKEW_SECS} s off this node's clock"
        ));
    }
    let mac = hex::decode(mac).map_err(|_| "malformed node signature")?;
    let text = signed_text(from, at, tenant, method, target);
    hmac::verify(key, text.as_bytes(), &mac).map_err(|_| {
        format!("node signature of {from} does not verify (a node of another fleet?)")
    })?;
    Ok(tenant.to_string())
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
        Ok(_) if record.as_ref().is_some_and(|c| c.lost.is_some()) => {
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
    fn signatures_hold_only_for_the_request_and_key_they_were_made_for() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"fleet one");
        let other = hmac::Key::new(hmac::HMAC_SHA256, b"fleet two");
        let target = "/containers/web/json";
        let value = signature(&key, "n1", 1000, "acme", &Method::GET, target);
        assert_eq!(
            check(&key, &value, &Method::GET, target, 1010),
            Ok("acme".into())
        );
        let refused = |v: &str, method: &Method, target: &str, now: i64, why: &str| {
            let e = check(&key, v, method, target, now).unwrap_err();
            assert!(e.contains(why), "{e}");
        };
        refused(&value, &Method::DELETE, target, 1000, "does not verify");
        refused(
            &value,
            &Method::GET,
            "/containers/db/json",
            1000,
            "does not verify",
        );
        refused(
            &value.replace("acme", "other"),
            &Method::GET,
            target,
            1000,
            "does not verify",
        );
        refused(
            &value,
            &Method::GET,
            target,
            1000 + 121,
            "off this node's clock",
        );
        refused("n1 1000 acme", &Method::GET, target, 1000, "malformed");
        let foreign = signature(&other, "n1", 1000, "acme", &Method::GET, target);
        refused(&foreign, &Method::GET, target, 1000, "does not verify");
    }

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
