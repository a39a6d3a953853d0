//! Listening sockets and the per-request plumbing in front of the router: Docker's `/v1.xx`
//! prefix, who the peer is, and HYPER-HMAC-SHA256 for TCP peers.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use http::{StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tower::ServiceExt;

use crate::accounts::{Accounts, DEFAULT_TENANT};
use crate::credentials::Admission;
use crate::error::ApiError;
use crate::revocation::Admitted;

/// How the request reached us. The unix socket is root-only, like docker.sock, and acts as the
/// default tenant; TCP peers prove who they are with a signature; another node of the fleet
/// passes on a tenant's request, signed with the fleet's key (`crate::fleet_link`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Unix,
    Tcp,
    Node,
}

/// The tenant a request acts for.
#[derive(Debug, Clone)]
pub struct TenantId(pub String);

/// The client certificate a TLS peer presented: the SHA-256 of one our CA issued, or why it
/// was not accepted.
#[derive(Debug, Clone)]
pub struct PeerCert(pub Result<String, String>);

/// The URI as the client sent it, before the version prefix was taken off (signatures cover it).
#[derive(Debug, Clone)]
pub struct SentUri(pub Uri);

pub enum Listener {
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
    Tls(TcpListener, crate::tls::TlsSetup),
    /// The fleet listener: other nodes only.
    Node(
        TcpListener,
        crate::tls::TlsSetup,
        Arc<crate::fleet_link::FleetLink>,
    ),
}

impl Listener {
    /// `unix:///path` or `tcp://host:port` (dockerd's `-H` forms). TCP speaks TLS when
    /// `tls` is given.
    pub async fn bind(addr: &str, tls: Option<crate::tls::TlsSetup>) -> anyhow::Result<Self> {
        if let Some(path) = addr.strip_prefix("unix://") {
            let path = PathBuf::from(path);
            if path.exists() {
                std::fs::remove_file(&path)?;
            }
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let listener = UnixListener::bind(&path)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            Ok(Listener::Unix(listener, path))
        } else if let Some(hostport) = addr.strip_prefix("tcp://") {
            let listener = TcpListener::bind(hostport).await?;
            Ok(match tls {
                Some(setup) => Listener::Tls(listener, setup),
                None => Listener::Tcp(listener),
            })
        } else {
            anyhow::bail!(
                "unsupported listen address {addr:?}: use unix:///path or tcp://host:port"
            )
        }
    }
}

/// `/v1.44/containers/json` -> `/containers/json`, as dockerd accepts any version prefix.
fn strip_version(uri: &Uri) -> Option<Uri> {
    let path = uri.path();
    let rest = path.strip_prefix("/v")?;
    let end = rest.find('/')?;
    let version = &rest[..end];
    if version.is_empty() || !version.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    let mut new = rest[end..].to_string();
    if let Some(q) = uri.query() {
        new.push('?');
        new.push_str(q);
    }
    new.parse().ok()
}

/// Serves one listener until `shutdown` flips. Each connection gets HTTP/1.1 with upgrades
/// (the hijacked streams of attach and exec); a TCP one is cut by `guards` when a credential
/// that admitted its requests stops working.
pub async fn serve(
    listener: Listener,
    app: Router,
    guards: crate::revocation::Guards,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = accept(&listener) => match accepted {
                Ok(pair) => pair,
                Err(e) => { tracing::warn!("accept: {e}"); continue; }
            },
        };
        let app = app.clone();
        let guards = guards.clone();
        let tls = match &listener {
            Listener::Tls(_, setup) | Listener::Node(_, setup, _) => Some(setup.clone()),
            _ => None,
        };
        let fleet = match &listener {
            Listener::Node(_, _, link) => Some(link.clone()),
            _ => None,
        };
        tokio::spawn(async move {
            let (io, peer) = accepted;
            let (io, cert): (Box<dyn Io>, Option<PeerCert>) = match tls {
                None => (io, None),
                Some(setup) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(setup.config.clone());
                    let handshake = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(io),
                    );
                    match handshake.await {
                        Ok(Ok(stream)) => {
                            let cert = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .map(|chain| PeerCert(setup.check_client(chain)));
                            (Box::new(stream), cert)
                        }
                        Ok(Err(e)) => {
                            tracing::debug!("TLS handshake: {e}");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            let (io, admitted): (Box<dyn Io>, _) = match peer {
                Peer::Unix | Peer::Node => (io, None),
                Peer::Tcp => {
                    let (io, admitted) = guards.guard(io);
                    (Box::new(io), Some(admitted))
                }
            };
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let app = app.clone();
                let cert = cert.clone();
                let admitted = admitted.clone();
                let fleet = fleet.clone();
                async move {
                    let mut req = req.map(Body::new);
                    if let Some(link) = fleet {
                        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
                        match link.verify(req.headers(), req.method(), target) {
                            Ok(tenant) => req.extensions_mut().insert(TenantId(tenant)),
                            Err(why) => {
                                let refusal = ApiError::new(StatusCode::UNAUTHORIZED, why);
                                return Ok(closing(refusal));
                            }
                        };
                    }
                    let sent = req.uri().clone();
                    if let Some(stripped) = strip_version(&sent) {
                        *req.uri_mut() = stripped;
                    }
                    req.extensions_mut().insert(SentUri(sent));
                    req.extensions_mut().insert(peer);
                    if let Some(cert) = cert {
                        req.extensions_mut().insert(cert);
                    }
                    if let Some(admitted) = admitted {
                        req.extensions_mut().insert(admitted);
                    }
                    Ok::<_, Infallible>(app.oneshot(req).await.unwrap_or_else(|e| match e {}))
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!("connection: {e}");
            }
        });
    }
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

async fn accept(listener: &Listener) -> std::io::Result<(Box<dyn Io>, Peer)> {
    Ok(match listener {
        Listener::Unix(l, _) => (Box::new(l.accept().await?.0), Peer::Unix),
        Listener::Tcp(l) | Listener::Tls(l, _) => {
            let (s, _) = l.accept().await?;
            s.set_nodelay(true)?;
            (Box::new(s), Peer::Tcp)
        }
        Listener::Node(l, _, _) => {
            let (s, _) = l.accept().await?;
            s.set_nodelay(true)?;
            (Box::new(s), Peer::Node)
        }
    })
}

/// Largest signed body we buffer to check its hash (image archives are the big ones).
const MAX_SIGNED_BODY: usize = 4 << 30;

/// Decides the tenant: the default one on the unix socket, the key's owner on TCP.
pub async fn authenticate(State(accounts): State<Accounts>, req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<Peer>().copied().unwrap_or(Peer::Tcp);
    if peer == Peer::Unix {
        let mut req = req;
        req.extensions_mut().insert(TenantId(DEFAULT_TENANT.into()));
        return next.run(req).await;
    }
    // The fleet listener let it in on a node signature, which named the tenant.
    if peer == Peer::Node && req.extensions().get::<TenantId>().is_some() {
        return next.run(req).await;
    }
    // The stock Docker CLI and docker-py cannot sign: a client certificate of our CA, or a
    // tenant token in X-Hyper-Token (set through the Docker client's HttpHeaders), let them in.
    // Both are looked up in the store on every request, not once per connection, so a
    // revoked or expired one is refused at once on a kept-alive connection too.
    let by_cert = match req.extensions().get::<PeerCert>() {
        Some(PeerCert(Err(why))) => {
            let message =
                format!("client certificate refused: not issued by this cloud's CA ({why})");
            return closing(ApiError::new(StatusCode::UNAUTHORIZED, message));
        }
        Some(PeerCert(Ok(fingerprint))) => match accounts.check_cert(fingerprint) {
            Ok(admission) => Some(admission),
            Err(why) => {
                let message = format!(
                    "client certificate refused: {}",
                    why.as_deref().unwrap_or("unknown to this cloud")
                );
                return closing(ApiError::new(StatusCode::UNAUTHORIZED, message));
            }
        },
        None => None,
    };
    let token = req
        .headers()
        .get("x-hyper-token")
        .map(|t| t.to_str().unwrap_or_default().to_string());
    let by_token = match (&by_cert, token) {
        (None, Some(token)) => match accounts.check_token(&token) {
            Ok(admission) => Some(admission),
            Err(why) => {
                let message = why.unwrap_or_else(|| "unknown token".into());
                return ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
            }
        },
        _ => None,
    };
    if let Some(admission) = by_cert.or(by_token) {
        return admit(req, admission, next).await;
    }
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_SIGNED_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return ApiError::bad_request(format!("reading request body: {e}")).into_response()
        }
    };
    let sent = parts
        .extensions
        .get::<SentUri>()
        .map(|s| s.0.clone())
        .unwrap_or_else(|| parts.uri.clone());
    let verdict = auth::verify(
        &parts.method,
        &sent,
        &parts.headers,
        &body,
        chrono::Utc::now(),
        |ak| accounts.secret(ak),
    );
    match verdict {
        Ok(access) => {
            let Some(key) = accounts.key(&access) else {
                return ApiError::new(StatusCode::UNAUTHORIZED, "unknown access key")
                    .into_response();
            };
            if let Some(why) = accounts.key_refusal(&access, &key) {
                return ApiError::new(StatusCode::UNAUTHORIZED, why).into_response();
            }
            let admission = Admission {
                tenant: key.tenant,
                store_key: format!("/keys/{access}"),
                expires: key.life.expires,
            };
            admit(
                Request::from_parts(parts, Body::from(body)),
                admission,
                next,
            )
            .await
        }
        Err(e) => {
            tracing::info!("refused a request to {}: {e}", parts.uri.path());
            ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()).into_response()
        }
    }
}

/// Runs a request its credential let in, and has the connection watch that credential.
async fn admit(mut req: Request, admission: Admission, next: Next) -> Response {
    if let Some(admitted) = req.extensions().get::<Admitted>() {
        if !admitted.admit(&admission.store_key, admission.expires) {
            let message = "this connection has used too many credentials: open a new one";
            return closing(ApiError::bad_request(message));
        }
    }
    req.extensions_mut().insert(TenantId(admission.tenant));
    next.run(req).await
}

/// A refusal that also ends the connection: retrying on it cannot succeed (its certificate
/// stays the same).
fn closing(error: ApiError) -> Response {
    let mut response = error.into_response();
    response.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_prefix_is_removed() {
        let cases = [
            (
                "/v1.44/containers/json?all=1",
                Some("/containers/json?all=1"),
            ),
            ("/v1.23/info", Some("/info")),
            ("/containers/json", None),
            ("/volumes/x", None),
            ("/vx/info", None),
        ];
        for (i, (input, want)) in cases.iter().enumerate() {
            let got = strip_version(&input.parse().unwrap()).map(|u| u.to_string());
            assert_eq!(got.as_deref(), *want, "test[{i}]");
        }
    }
}
