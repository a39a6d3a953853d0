//! HTTP to the daemon: one HTTP/1.1 connection per request (a CLI makes few), over a pluggable
//! [`Connector`] (unix socket or TCP now, TLS later), every TCP request signed with
//! HYPER-HMAC-SHA256. Streaming endpoints are hijacked with hyper's upgrade machinery.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE, HOST, UPGRADE, USER_AGENT};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS, NON_ALPHANUMERIC};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};

pub const API_PREFIX: &str = "/v1.44";
const USER_AGENT_VALUE: &str = concat!("Hyper-Client/", env!("CARGO_PKG_VERSION"), " (linux)");

/// Query values: everything but unreserved characters is escaped (spaces as `%20`).
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
/// Path segments keep `/` and `:` (image references) readable.
const PATH: &AsciiSet = &CONTROLS.add(b' ').add(b'?').add(b'#').add(b'%').add(b'"');

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid endpoint {0:?}: use unix:///path or tcp://host:port")]
    Endpoint(String),
    #[error("cannot set up TLS")]
    Tls(#[source] io::Error),
    #[error("Cannot connect to the Hyper daemon at {endpoint}. Is the daemon running?")]
    Connect {
        endpoint: String,
        #[source]
        source: io::Error,
    },
    #[error("Error response from daemon: {message}")]
    Daemon { status: StatusCode, message: String },
    #[error("error talking to the daemon")]
    Http(#[from] hyper::Error),
    #[error("invalid request")]
    Request(#[from] http::Error),
    #[error("unexpected response from the daemon")]
    Decode(#[source] serde_json::Error),
    #[error("the daemon did not upgrade the connection (status {0})")]
    NotUpgraded(StatusCode),
}

impl ApiError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Daemon { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status() == Some(StatusCode::NOT_FOUND)
    }
}

/// Where the daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    /// `tls`: `tcp://` and `https://` speak TLS (as Hyper's CLI always did), `http://` does not.
    Tcp {
        host: String,
        port: u16,
        tls: bool,
    },
}

/// Port assumed for `tcp://host` without one (the port `hyperd` listens on by default).
pub const DEFAULT_TCP_PORT: u16 = 6443;

impl Endpoint {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let bad = || ApiError::Endpoint(s.to_owned());
        if let Some(path) = s.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(bad());
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        if s.starts_with('/') {
            return Ok(Self::Unix(PathBuf::from(s)));
        }
        let tls = !s.starts_with("http://");
        let rest = s
            .strip_prefix("tcp://")
            .or_else(|| s.strip_prefix("http://"))
            .or_else(|| s.strip_prefix("https://"))
            .unwrap_or(s)
            .trim_end_matches('/');
        if rest.is_empty() || rest.contains('/') || rest.contains("://") {
            return Err(bad());
        }
        // `[v6]:port`, `host:port` or `host`.
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && (!h.contains(':') || h.ends_with(']')) => {
                (h, p.parse().map_err(|_| bad())?)
            }
            _ => (rest, DEFAULT_TCP_PORT),
        };
        Ok(Self::Tcp {
            host: host.to_owned(),
            port,
            tls,
        })
    }

    /// The `Host` header: `host:port` for TCP (signed), a fixed name for a socket.
    pub fn host_header(&self) -> String {
        match self {
            Self::Unix(_) => "localhost".to_owned(),
            Self::Tcp { host, port, .. } => format!("{host}:{port}"),
        }
    }

    /// The connector for this endpoint; TLS wraps the TCP one, checking the server against
    /// `ca` when given.
    pub fn connector(&self, ca: Option<&std::path::Path>) -> Result<Arc<dyn Connector>, ApiError> {
        Ok(match self {
            Self::Unix(path) => Arc::new(UnixConnector(path.clone())),
            Self::Tcp { host, port, tls } => {
                let host = host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned();
                let tcp = TcpConnector { host, port: *port };
                if *tls {
                    let config = crate::tls::client_config(ca).map_err(ApiError::Tls)?;
                    Arc::new(crate::tls::TlsConnector { tcp, config })
                } else {
                    Arc::new(tcp)
                }
            }
        })
    }
}

/// A byte stream to the daemon.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

pub type BoxIo = Box<dyn Io>;
pub type ConnectFuture<'a> = Pin<Box<dyn Future<Output = io::Result<BoxIo>> + Send + 'a>>;

/// Opens a fresh byte stream to the daemon. TLS is another implementation wrapping TCP.
pub trait Connector: Send + Sync {
    fn connect(&self) -> ConnectFuture<'_>;
}

pub struct UnixConnector(pub PathBuf);

impl Connector for UnixConnector {
    fn connect(&self) -> ConnectFuture<'_> {
        Box::pin(async move {
            let s = tokio::net::UnixStream::connect(&self.0).await?;
            Ok(Box::new(s) as BoxIo)
        })
    }
}

pub struct TcpConnector {
    pub host: String,
    pub port: u16,
}

impl TcpConnector {
    pub async fn connect_tcp(&self) -> io::Result<tokio::net::TcpStream> {
        let s = tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await?;
        s.set_nodelay(true)?;
        Ok(s)
    }
}

impl Connector for TcpConnector {
    fn connect(&self) -> ConnectFuture<'_> {
        Box::pin(async move { Ok(Box::new(self.connect_tcp().await?) as BoxIo) })
    }
}

/// One API call: path below the version prefix, query, body and extra headers.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub body: Bytes,
    pub headers: HeaderMap,
    /// Whether the version prefix goes in front of `path` (not for URLs the daemon hands out).
    pub versioned: bool,
    /// Whether a TCP request is signed (not on the function endpoint, whose URL is the secret).
    pub signed: bool,
}

impl ApiRequest {
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            query: Vec::new(),
            body: Bytes::new(),
            headers: HeaderMap::new(),
            versioned: true,
            signed: true,
        }
    }
    pub fn get(path: impl Into<String>) -> Self {
        Self::new(Method::GET, path)
    }
    pub fn post(path: impl Into<String>) -> Self {
        Self::new(Method::POST, path)
    }
    pub fn put(path: impl Into<String>) -> Self {
        Self::new(Method::PUT, path)
    }
    pub fn delete(path: impl Into<String>) -> Self {
        Self::new(Method::DELETE, path)
    }
    pub fn query(mut self, key: &str, value: impl ToString) -> Self {
        self.query.push((key.to_owned(), value.to_string()));
        self
    }
    /// Adds `key=1` when `on`.
    pub fn flag(self, key: &str, on: bool) -> Self {
        if on {
            self.query(key, "1")
        } else {
            self
        }
    }
    pub fn query_opt(self, key: &str, value: Option<impl ToString>) -> Self {
        match value {
            Some(v) => self.query(key, v),
            None => self,
        }
    }
    pub fn json(mut self, body: &serde_json::Value) -> Self {
        self.body = Bytes::from(serde_json::to_vec(body).expect("JSON value serializes"));
        self
    }
    pub fn body(mut self, body: Bytes, content_type: &'static str) -> Self {
        self.body = body;
        self.headers
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        self
    }
    pub fn header(mut self, name: &'static str, value: HeaderValue) -> Self {
        self.headers.insert(HeaderName::from_static(name), value);
        self
    }
    /// `path` is a whole path the daemon gave us (an upload URL's), sent without our prefix.
    pub fn unversioned(mut self) -> Self {
        self.versioned = false;
        self
    }

    /// Sent without a signature (the function endpoint's paths).
    pub fn unsigned(mut self) -> Self {
        self.signed = false;
        self
    }

    /// `/v1.44/path?k=v`, escaped.
    pub fn path_and_query(&self) -> String {
        self.path_and_query_with(API_PREFIX)
    }

    /// The same below another version prefix (`/v1.23`).
    pub fn path_and_query_with(&self, prefix: &str) -> String {
        let prefix = if self.versioned { prefix } else { "" };
        let mut s = format!("{prefix}{}", utf8_percent_encode(&self.path, PATH));
        for (i, (k, v)) in self.query.iter().enumerate() {
            s.push(if i == 0 { '?' } else { '&' });
            s.extend(utf8_percent_encode(k, QUERY));
            s.push('=');
            s.extend(utf8_percent_encode(v, QUERY));
        }
        s
    }
}

/// A client for one endpoint.
pub struct Client {
    endpoint: Endpoint,
    display: String,
    connector: Arc<dyn Connector>,
    creds: Option<auth::Credentials>,
    prefix: String,
}

impl Client {
    /// `tls_ca`: the CA to check a TLS endpoint's certificate against (none: not checked).
    pub fn new(
        endpoint_str: &str,
        creds: Option<auth::Credentials>,
        tls_ca: Option<&std::path::Path>,
    ) -> Result<Self, ApiError> {
        let endpoint = Endpoint::parse(endpoint_str)?;
        let connector = endpoint.connector(tls_ca)?;
        Ok(Self {
            endpoint,
            display: endpoint_str.to_owned(),
            connector,
            creds,
            prefix: API_PREFIX.to_owned(),
        })
    }

    /// Talks API version `version` (`1.23`) instead of the default (`HYPER_API_VERSION`).
    pub fn with_api_version(mut self, version: &str) -> Self {
        self.prefix = format!("/v{}", version.trim_start_matches('v'));
        self
    }

    pub fn endpoint(&self) -> &str {
        &self.display
    }

    fn build(&self, req: ApiRequest) -> Result<Request<Full<Bytes>>, ApiError> {
        let uri: Uri = req
            .path_and_query_with(&self.prefix)
            .parse()
            .map_err(http::Error::from)?;
        let mut headers = req.headers;
        headers.insert(
            HOST,
            HeaderValue::from_str(&self.endpoint.host_header()).map_err(http::Error::from)?,
        );
        headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        if !headers.contains_key(CONTENT_TYPE) {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        // Unix sockets are local and trusted; everything over the network is signed.
        if let (Endpoint::Tcp { .. }, Some(creds), true) = (&self.endpoint, &self.creds, req.signed)
        {
            auth::sign(
                creds,
                &req.method,
                &uri,
                &mut headers,
                &req.body,
                chrono::Utc::now(),
            );
        }
        let mut builder = Request::builder().method(req.method).uri(uri);
        if let Some(h) = builder.headers_mut() {
            *h = headers;
        }
        Ok(builder.body(Full::new(req.body))?)
    }

    /// Sends a request on a fresh connection and returns the response whatever its status.
    pub async fn send_raw(&self, req: ApiRequest) -> Result<Response<Incoming>, ApiError> {
        let request = self.build(req)?;
        let io = self
            .connector
            .connect()
            .await
            .map_err(|source| ApiError::Connect {
                endpoint: self.display.clone(),
                source,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(sender.send_request(request).await?)
    }

    /// Sends a request; a non-2xx status becomes [`ApiError::Daemon`] with the daemon's message.
    pub async fn send(&self, req: ApiRequest) -> Result<Response<Incoming>, ApiError> {
        let resp = self.send_raw(req).await?;
        check(resp).await
    }

    /// Sends a request and returns the whole body.
    pub async fn call(&self, req: ApiRequest) -> Result<Bytes, ApiError> {
        let resp = self.send(req).await?;
        Ok(resp.into_body().collect().await?.to_bytes())
    }

    pub async fn json<T: DeserializeOwned>(&self, req: ApiRequest) -> Result<T, ApiError> {
        let body = self.call(req).await?;
        serde_json::from_slice(&body).map_err(ApiError::Decode)
    }

    /// Sends a streaming request with `Upgrade: tcp` and returns the raw connection after the
    /// daemon's `101 Switching Protocols`.
    pub async fn hijack(&self, req: ApiRequest) -> Result<TokioIo<Upgraded>, ApiError> {
        let req = req
            .header("connection", HeaderValue::from_static("Upgrade"))
            .header("upgrade", HeaderValue::from_static("tcp"));
        debug_assert!(req.headers.contains_key(CONNECTION) && req.headers.contains_key(UPGRADE));
        let resp = self.send_raw(req).await?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            let status = resp.status();
            check(resp).await?;
            return Err(ApiError::NotUpgraded(status));
        }
        Ok(TokioIo::new(hyper::upgrade::on(resp).await?))
    }
}

/// Turns an error status into [`ApiError::Daemon`], reading Docker's `{"message": ".."}` body.
async fn check(resp: Response<Incoming>) -> Result<Response<Incoming>, ApiError> {
    let status = resp.status();
    // 304: already started / already stopped, which docker treats as success.
    if status.is_success() || status.is_informational() || status == StatusCode::NOT_MODIFIED {
        return Ok(resp);
    }
    let body = resp.into_body().collect().await?.to_bytes();
    Err(ApiError::Daemon {
        status,
        message: error_message(status, &body),
    })
}

pub fn error_message(status: StatusCode, body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Msg {
        message: String,
    }
    match serde_json::from_slice::<Msg>(body) {
        Ok(m) => m.message,
        Err(_) => {
            let text = String::from_utf8_lossy(body).trim().to_owned();
            if text.is_empty() {
                status
                    .canonical_reason()
                    .unwrap_or("unknown error")
                    .to_owned()
            } else {
                text
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let cases: [(&str, Option<Endpoint>); 8] = [
            (
                "unix:///var/run/hyper.sock",
                Some(Endpoint::Unix("/var/run/hyper.sock".into())),
            ),
            ("/tmp/h.sock", Some(Endpoint::Unix("/tmp/h.sock".into()))),
            (
                "tcp://127.0.0.1:6443",
                Some(Endpoint::Tcp {
                    host: "127.0.0.1".into(),
                    port: 6443,
                    tls: true,
                }),
            ),
            (
                "http://example.com:80/",
                Some(Endpoint::Tcp {
                    host: "example.com".into(),
                    port: 80,
                    tls: false,
                }),
            ),
            (
                "tcp://h",
                Some(Endpoint::Tcp {
                    host: "h".into(),
                    port: DEFAULT_TCP_PORT,
                    tls: true,
                }),
            ),
            (
                "tcp://[::1]:9",
                Some(Endpoint::Tcp {
                    host: "[::1]".into(),
                    port: 9,
                    tls: true,
                }),
            ),
            ("unix://relative", None),
            ("tcp://h:notaport", None),
        ];
        for (i, (s, want)) in cases.into_iter().enumerate() {
            assert_eq!(Endpoint::parse(s).ok(), want, "test[{i}] {s}");
        }
        assert!(matches!(
            Endpoint::parse("https://h:1"),
            Ok(Endpoint::Tcp { tls: true, .. })
        ));
        assert_eq!(Endpoint::parse("tcp://h:1").unwrap().host_header(), "h:1");
    }

    #[test]
    fn path_and_query_escaping() {
        let r = ApiRequest::get("/containers/json")
            .query("filters", r#"{"a b":1}"#)
            .flag("all", true);
        assert_eq!(
            r.path_and_query(),
            "/v1.44/containers/json?filters=%7B%22a%20b%22%3A1%7D&all=1"
        );
        assert_eq!(
            ApiRequest::get("/images/reg.io:5000/a/b:1/json").path_and_query(),
            "/v1.44/images/reg.io:5000/a/b:1/json"
        );
        assert_eq!(
            ApiRequest::post("/v1.44/volumes/upload/v1")
                .unversioned()
                .query("cookie", "c")
                .path_and_query(),
            "/v1.44/volumes/upload/v1?cookie=c"
        );
    }

    #[test]
    fn signs_tcp_requests_only() {
        let creds = auth::Credentials {
            access_key: "ak".into(),
            secret_key: "sk".into(),
            region: "r".into(),
        };
        let c = Client::new("tcp://127.0.0.1:6443", Some(creds.clone()), None).unwrap();
        let r = c.build(ApiRequest::get("/containers/json")).unwrap();
        assert_eq!(r.headers()["host"], "127.0.0.1:6443");
        assert!(r.headers()["authorization"]
            .to_str()
            .unwrap()
            .starts_with("HYPER-HMAC-SHA256 Credential=ak/"));
        // The server's verifier accepts what we send, query and body included.
        let req = ApiRequest::post("/containers/create")
            .query("name", "a b")
            .json(&serde_json::json!({"Image": "busybox"}));
        let body = req.body.clone();
        let r = c.build(req).unwrap();
        let who = auth::verify(
            r.method(),
            r.uri(),
            r.headers(),
            &body,
            chrono::Utc::now(),
            |ak| (ak == "ak").then(|| "sk".to_owned()),
        );
        assert!(who.is_ok(), "{who:?}");
        let c = Client::new("unix:///x.sock", Some(creds), None)
            .unwrap()
            .with_api_version("1.23");
        assert_eq!(
            c.build(ApiRequest::get("/info")).unwrap().uri(),
            "/v1.23/info"
        );
        let r = c.build(ApiRequest::get("/containers/json")).unwrap();
        assert!(!r.headers().contains_key("authorization"));
    }

    #[test]
    fn daemon_messages() {
        assert_eq!(
            error_message(
                StatusCode::NOT_FOUND,
                br#"{"message":"No such container: x"}"#
            ),
            "No such container: x"
        );
        assert_eq!(error_message(StatusCode::BAD_GATEWAY, b""), "Bad Gateway");
        assert_eq!(error_message(StatusCode::BAD_REQUEST, b"plain\n"), "plain");
    }
}
