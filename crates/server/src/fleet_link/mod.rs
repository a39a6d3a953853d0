//! One API for the whole fleet: a request about a container another node runs (or one of its
//! execs) is passed to that node and its answer passed back, streams and hijacked connections
//! (attach, exec) included, so a client may talk to any node.
//!
//! Nodes talk over the fleet's network to each other's fleet listener: TLS with a certificate
//! the fleet's CA (DATA/tls, which every node has) made for the node's address, and each
//! request signed with the key every node derives from the shared sealing key
//! ([`crate::seal::Sealer::fleet_key`]). The signature names the tenant the request acts for;
//! the client's own credentials stay with the node it talked to.

mod events;
mod forward;
mod placement;
pub use placement::Placed;
mod replicas;
mod signature;

pub use forward::to_home_node;
pub use replicas::reach_other_nodes;
use signature::{check, signature};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use hyper_util::rt::TokioIo;
use node::fleet::{NodeRecord, NodeState, NodeStatus};
use ring::hmac;
use store::Store;

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
    /// Memory placements gave nodes that their records do not book yet
    /// ([`placement::Pending`]).
    pending: Arc<std::sync::Mutex<std::collections::HashMap<String, u64>>>,
    /// One copy at a time of an image to a node (`placement::bring_image`), by node, tenant
    /// and image: a burst placed on a node that lacks the image copies it once.
    copies: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
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
            pending: Arc::default(),
            copies: std::sync::Mutex::default(),
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
}
