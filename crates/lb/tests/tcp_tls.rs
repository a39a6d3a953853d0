//! tcp, https (TLS passthrough) and httpsTerm services through the real `hyper-lb`.

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use support::*;

fn service(listen: SocketAddr, protocol: &str, backends: &[&TestBackend], extra: Value) -> Value {
    let mut service = json!({
        "name": "svc", "listen": listen.to_string(), "protocol": protocol,
        "health": fast_health(),
        "backends": backends.iter().map(|b| b.config()).collect::<Vec<_>>() });
    service
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    json!({ "services": [service] })
}

/// Sends `message` through an echo backend; returns "ID:message".
async fn echo_round_trip<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    message: &str,
) -> String {
    stream.write_all(message.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 256];
    while !received.ends_with(message.as_bytes()) {
        let n = stream.read(&mut buffer).await.unwrap();
        assert!(
            n > 0,
            "closed after {:?}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&buffer[..n]);
    }
    String::from_utf8(received).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_copies_bytes_both_ways_and_spreads_connections() {
    let backends = [TestBackend::echo("a").await, TestBackend::echo("b").await];
    let listen = free_address();
    let lb = Lb::start(&service(listen, "tcp", &backends.each_ref(), json!({}))).await;
    lb.wait_health("svc", &["a", "b"], true).await;

    let mut seen = HashSet::new();
    for round in 0..4 {
        let stream = tokio::net::TcpStream::connect(listen).await.unwrap();
        let message = format!("hello {round} ").repeat(1000);
        let echoed = echo_round_trip(stream, &message).await;
        let (id, rest) = echoed.split_once(':').unwrap();
        assert_eq!(rest, message);
        seen.insert(id.to_owned());
    }
    assert_eq!(seen, HashSet::from(["a".to_owned(), "b".to_owned()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_with_no_healthy_backend_closes_the_connection() {
    let backend = TestBackend::echo("a").await;
    let listen = free_address();
    let lb = Lb::start(&service(listen, "tcp", &[&backend], json!({}))).await;
    lb.wait_health("svc", &["a"], true).await;
    backend.kill();
    lb.wait_health("svc", &["a"], false).await;

    let mut stream = tokio::net::TcpStream::connect(listen).await.unwrap();
    let mut buffer = [0u8; 16];
    let read = stream.read(&mut buffer).await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_passes_tls_through_to_the_backend() {
    let cert = TestCert::new();
    let backend = TestBackend::tls_echo("a", &cert).await;
    let listen = free_address();
    let lb = Lb::start(&service(listen, "https", &[&backend], json!({}))).await;
    lb.wait_health("svc", &["a"], true).await;

    // The client verifies the backend's own certificate: the balancer has none.
    let tls = cert.connect(listen).await.unwrap();
    assert_eq!(echo_round_trip(tls, "secret").await, "a:secret");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_term_terminates_tls_and_forwards_plain_http() {
    let cert = TestCert::new();
    let backends = [TestBackend::http("a").await, TestBackend::http("b").await];
    let listen = free_address();
    let scratch = Scratch::new();
    let pem = scratch.path("web.pem");
    cert.write_pem(&pem);
    let config = service(
        listen,
        "httpsTerm",
        &backends.each_ref(),
        json!({ "tls_cert": pem }),
    );
    let lb = Lb::start(&config).await;
    lb.wait_health("svc", &["a", "b"], true).await;

    let mut client = HttpClient::over(cert.connect(listen).await.unwrap())
        .await
        .unwrap();
    let mut ids = HashSet::new();
    for _ in 0..4 {
        let answer = client.get("/").await.unwrap();
        assert_eq!(answer.headers["x-seen-proto"], "https");
        assert_eq!(answer.headers["x-seen-for"], "127.0.0.1");
        ids.insert(answer.body);
    }
    assert_eq!(
        ids.len(),
        2,
        "one kept-alive TLS client reaches both backends"
    );

    // A certificate that no longer loads on reload keeps the previous one in use.
    std::fs::write(&pem, "garbage").unwrap();
    lb.reload(&config);
    wait_until(
        "the reload",
        || lb.log().contains("keeping the previous settings"),
        &lb,
    )
    .await;
    let mut client = HttpClient::over(cert.connect(listen).await.unwrap())
        .await
        .unwrap();
    assert_eq!(client.get("/").await.unwrap().status, 200);
    assert!(backends
        .iter()
        .all(|b| b.served.load(Ordering::SeqCst) >= 2));
}
