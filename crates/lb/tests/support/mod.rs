//! The real `hyper-lb` on loopback, real backends (small tokio servers that answer with their
//! id) and real clients. Everything started here is stopped on drop, also when a test panics.

#![allow(dead_code)] // each test file uses its own part of the kit

use std::net::{IpAddr, SocketAddr};
use std::ops::Deref;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use daemon_test_kit::Daemon;
pub use daemon_test_kit::Scratch;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinSet;

pub const WAIT: Duration = Duration::from_secs(10);

/// A running `hyper-lb` (config, pidfile, log and `--status` file in its scratch directory),
/// killed on drop.
pub struct Lb(Daemon);

impl Lb {
    /// Foreground; returns once the pidfile is written (listeners bound).
    pub async fn start(config: &Value) -> Self {
        let scratch = Scratch::new();
        let status_args = status_flag(&scratch);
        let lb = Self(Daemon::spawn(BINARY, scratch, config, &status_args));
        wait_until("the pidfile", || lb.is_serving(), &lb).await;
        lb
    }

    /// `--daemon`; returns the launcher's exit status, and the balancer if it succeeded.
    pub fn start_daemon(config: &Value) -> (std::process::ExitStatus, Self) {
        let scratch = Scratch::new();
        let status_args = status_flag(&scratch);
        let (status, daemon) = Daemon::launch(BINARY, scratch, config, &status_args);
        (status, Self(daemon))
    }

    pub fn status(&self) -> Value {
        std::fs::read_to_string(self.scratch.path("status.json"))
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or(Value::Null)
    }

    pub fn backend_status(&self, service: &str, id: &str) -> Value {
        self.status()["services"][service]["backends"][id].clone()
    }

    /// Waits until the status file says each of `ids` in `service` is healthy (or not).
    pub async fn wait_health(&self, service: &str, ids: &[&str], healthy: bool) {
        wait_until(
            &format!("{ids:?} in {service} healthy={healthy}"),
            || {
                ids.iter()
                    .all(|id| self.backend_status(service, id)["healthy"] == healthy)
            },
            self,
        )
        .await;
    }
}

/// The pidfile, log, scratch directory and reload of the process.
impl Deref for Lb {
    type Target = Daemon;

    fn deref(&self) -> &Daemon {
        &self.0
    }
}

pub async fn wait_until(what: &str, mut done: impl FnMut() -> bool, lb: &Lb) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; status: {}\nlog:\n{}",
            lb.status(),
            lb.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const BINARY: &str = env!("CARGO_BIN_EXE_hyper-lb");

fn status_flag(scratch: &Scratch) -> [String; 2] {
    let path = scratch.path("status.json").display().to_string();
    ["--status".into(), path]
}

/// A free port on 127.0.0.1 for the balancer to listen on.
pub fn free_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Fast health checks so tests see changes within a second.
pub fn fast_health() -> Value {
    serde_json::json!({ "interval_secs": 0.2, "fall": 2, "rise": 2, "http_path": "/health" })
}

/// A backend server: its tasks (listener and connections) are aborted by `kill` or drop, which
/// closes every socket as the death of the replica's process would.
pub struct TestBackend {
    pub id: String,
    pub addr: SocketAddr,
    pub healthy: Arc<AtomicBool>,
    /// Requests served (health checks excluded).
    pub served: Arc<AtomicUsize>,
    tasks: Arc<Mutex<JoinSet<()>>>,
}

impl TestBackend {
    /// HTTP/1.1 with keep-alive. `/health` answers 200 or, once `healthy` is false, 500;
    /// `/slow` answers after 1.5 s; anything else at once. The body is the backend's id; the
    /// request's X-Forwarded-For and X-Forwarded-Proto come back as x-seen-for / x-seen-proto.
    pub async fn http(id: &str) -> Self {
        Self::spawn(id, |backend, stream| {
            Box::pin(serve_http(
                backend.id.clone(),
                backend.healthy.clone(),
                backend.served.clone(),
                stream,
            ))
        })
        .await
    }

    /// Raw TCP: writes "ID:" and then echoes every byte.
    pub async fn echo(id: &str) -> Self {
        Self::spawn(id, |backend, stream| {
            let id = backend.id.clone();
            Box::pin(async move { echo(id, stream).await })
        })
        .await
    }

    /// TLS with `identity`, then like `echo`.
    pub async fn tls_echo(id: &str, identity: &TestCert) -> Self {
        let acceptor = identity.acceptor();
        Self::spawn(id, move |backend, stream| {
            let id = backend.id.clone();
            let acceptor = acceptor.clone();
            Box::pin(async move {
                if let Ok(tls) = acceptor.accept(stream).await {
                    echo(id, tls).await;
                }
            })
        })
        .await
    }

    async fn spawn(
        id: &str,
        serve: impl Fn(&Self, TcpStream) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
            + Send
            + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = Self {
            id: id.to_owned(),
            addr: listener.local_addr().unwrap(),
            healthy: Arc::new(AtomicBool::new(true)),
            served: Arc::new(AtomicUsize::new(0)),
            tasks: Arc::new(Mutex::new(JoinSet::new())),
        };
        let handle = Self {
            id: backend.id.clone(),
            addr: backend.addr,
            healthy: backend.healthy.clone(),
            served: backend.served.clone(),
            tasks: backend.tasks.clone(),
        };
        let tasks = backend.tasks.clone();
        backend.tasks.lock().unwrap().spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let connection = serve(&handle, stream);
                tasks.lock().unwrap().spawn(connection);
            }
        });
        backend
    }

    pub fn config(&self) -> Value {
        serde_json::json!({ "id": self.id, "addr": self.addr.to_string() })
    }

    /// Every socket closes at once, as when the replica's process is killed.
    pub fn kill(&self) {
        self.tasks.lock().unwrap().abort_all();
    }

    /// [`Self::kill`], then waits until every task has ended: a request a connection task was
    /// serving on another thread as it was aborted is counted (or not) by then.
    pub async fn kill_and_wait(&self) {
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap());
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn serve_http(
    id: String,
    healthy: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
    stream: TcpStream,
) {
    let handler = service_fn(move |request: Request<Incoming>| {
        let (id, healthy, served) = (id.clone(), healthy.clone(), served.clone());
        async move {
            let seen = |name: &str| {
                request
                    .headers()
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default()
            };
            let (seen_for, seen_proto) = (seen("x-forwarded-for"), seen("x-forwarded-proto"));
            let status = match request.uri().path() {
                "/health" if healthy.load(Ordering::SeqCst) => StatusCode::OK,
                "/health" => StatusCode::INTERNAL_SERVER_ERROR,
                path => {
                    if path == "/slow" {
                        tokio::time::sleep(Duration::from_millis(1500)).await;
                    }
                    served.fetch_add(1, Ordering::SeqCst);
                    StatusCode::OK
                }
            };
            let body = request
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let mut response = Response::new(Full::new(Bytes::from(format!(
                "{id}{}",
                String::from_utf8_lossy(&body)
            ))));
            *response.status_mut() = status;
            response
                .headers_mut()
                .insert("x-seen-for", seen_for.parse().unwrap());
            response
                .headers_mut()
                .insert("x-seen-proto", seen_proto.parse().unwrap());
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), handler)
        .await;
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(id: String, mut stream: S) {
    if stream.write_all(format!("{id}:").as_bytes()).await.is_err() {
        return;
    }
    let mut buffer = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buffer).await {
        if n == 0 || stream.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// What a client got back.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: String,
    pub headers: http::HeaderMap,
}

/// A TCP connection to `to`, from the loopback address `from` (source hashing tests).
pub async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// An HTTP/1.1 client connection, kept alive across requests.
pub struct HttpClient(SendRequest<Full<Bytes>>);

impl HttpClient {
    pub async fn connect(to: SocketAddr) -> Result<Self, String> {
        Self::over(TcpStream::connect(to).await.map_err(|e| e.to_string())?).await
    }

    pub async fn over<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
        io: S,
    ) -> Result<Self, String> {
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        Ok(Self(sender))
    }

    pub async fn get(&mut self, path: &str) -> Result<Answer, String> {
        self.send("GET", path, "").await
    }

    pub async fn send(&mut self, method: &str, path: &str, body: &str) -> Result<Answer, String> {
        self.0.ready().await.map_err(|e| e.to_string())?;
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "service.test")
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        let response = self
            .0
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Answer {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
            headers,
        })
    }
}

/// One request on a new connection.
pub async fn get(to: SocketAddr, path: &str) -> Result<Answer, String> {
    HttpClient::connect(to).await?.get(path).await
}

/// One request on a new connection from the loopback address `from`.
pub async fn get_from(from: IpAddr, to: SocketAddr, path: &str) -> Result<Answer, String> {
    let stream = connect_from(from, to).await.map_err(|e| e.to_string())?;
    HttpClient::over(stream).await?.get(path).await
}

/// A successful answer's body (the backend's id), or a panic saying what went wrong.
pub async fn id_of(to: SocketAddr, path: &str) -> String {
    let answer = get(to, path).await.unwrap();
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    answer.body
}

/// A self-signed certificate for "localhost", made at test time with rcgen.
pub struct TestCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCert {
    pub fn new() -> Self {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        Self {
            cert_pem: certified.cert.pem(),
            key_pem: certified.key_pair.serialize_pem(),
        }
    }

    /// The chain and key in one file, as hyperd gives them.
    pub fn write_pem(&self, path: &Path) {
        std::fs::write(path, format!("{}{}", self.cert_pem, self.key_pem)).unwrap();
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        use rustls::pki_types::pem::PemObject;
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }

    /// A TLS client that trusts only this certificate, connected to `to` as "localhost".
    pub async fn connect(
        &self,
        to: SocketAddr,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(self.cert_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let stream = TcpStream::connect(to).await?;
        connector
            .connect("localhost".try_into().unwrap(), stream)
            .await
    }
}
