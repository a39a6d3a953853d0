//! http services through the real `hyper-lb`: balancing, health, failures and reloads, with
//! real backends and clients on loopback.

mod support;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::{json, Value};

use support::*;

fn http_service(
    listen: SocketAddr,
    algorithm: &str,
    affinity: bool,
    backends: &[&TestBackend],
) -> Value {
    json!({ "services": [ {
        "name": "web", "listen": listen.to_string(), "protocol": "http",
        "algorithm": algorithm, "session_affinity": affinity, "health": fast_health(),
        "backends": backends.iter().map(|b| b.config()).collect::<Vec<_>>() } ] })
}

async fn three_backends() -> [TestBackend; 3] {
    [
        TestBackend::http("a").await,
        TestBackend::http("b").await,
        TestBackend::http("c").await,
    ]
}

fn counts(ids: &[String]) -> HashMap<&str, usize> {
    let mut counts = HashMap::new();
    for id in ids {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roundrobin_spreads_new_and_kept_alive_connections_over_three_backends() {
    let backends = three_backends().await;
    let listen = free_address();
    let lb = Lb::start(&http_service(
        listen,
        "roundrobin",
        false,
        &backends.each_ref(),
    ))
    .await;
    lb.wait_health("web", &["a", "b", "c"], true).await;

    let mut fresh = Vec::new();
    for _ in 0..30 {
        fresh.push(id_of(listen, "/").await);
    }
    assert_eq!(
        counts(&fresh),
        HashMap::from([("a", 10), ("b", 10), ("c", 10)])
    );

    let mut client = HttpClient::connect(listen).await.unwrap();
    let mut kept = Vec::new();
    for _ in 0..9 {
        let answer = client.get("/").await.unwrap();
        assert_eq!(answer.headers["x-seen-for"], "127.0.0.1");
        assert_eq!(answer.headers["x-seen-proto"], "http");
        kept.push(answer.body);
    }
    assert_eq!(counts(&kept), HashMap::from([("a", 3), ("b", 3), ("c", 3)]));

    // Request bodies are relayed.
    let answer = client.send("POST", "/echo", "hello").await.unwrap();
    assert!(answer.body.ends_with("hello"), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leastconn_sends_new_requests_away_from_a_busy_backend() {
    let backends = [TestBackend::http("a").await, TestBackend::http("b").await];
    let listen = free_address();
    let lb = Lb::start(&http_service(
        listen,
        "leastconn",
        false,
        &backends.each_ref(),
    ))
    .await;
    lb.wait_health("web", &["a", "b"], true).await;

    let slow = tokio::spawn(async move { id_of(listen, "/slow").await });
    let lb_status = || lb.status()["services"]["web"]["backends"].clone();
    wait_until(
        "the slow request to count as active",
        || ["a", "b"].iter().any(|id| lb_status()[id]["active"] == 1),
        &lb,
    )
    .await;
    let mut quick = Vec::new();
    for _ in 0..6 {
        quick.push(id_of(listen, "/").await);
    }
    let busy = slow.await.unwrap();
    assert!(
        quick.iter().all(|id| *id != busy),
        "{busy} busy, yet got {quick:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_hashing_and_session_affinity_keep_each_client_on_one_backend() {
    let backends = three_backends().await;
    for (algorithm, affinity) in [("source", false), ("roundrobin", true)] {
        let listen = free_address();
        let lb = Lb::start(&http_service(
            listen,
            algorithm,
            affinity,
            &backends.each_ref(),
        ))
        .await;
        lb.wait_health("web", &["a", "b", "c"], true).await;
        let mut used = Vec::new();
        for last in 2..=13u8 {
            let client = IpAddr::from([127, 0, 0, last]);
            let mut seen = Vec::new();
            for _ in 0..4 {
                let answer = get_from(client, listen, "/").await.unwrap();
                seen.push(answer.body);
            }
            assert!(
                seen.iter().all(|id| *id == seen[0]),
                "{algorithm}: {client} went to {seen:?}"
            );
            used.push(seen[0].clone());
        }
        assert!(
            counts(&used).len() > 1,
            "{algorithm}: every client on one backend: {used:?}"
        );
    }
}

/// A client issuing requests back to back, on new connections or on one kept-alive
/// connection; returns the answers' ids and the errors it saw.
async fn hammer(
    listen: SocketAddr,
    keep_alive: bool,
    for_how_long: Duration,
) -> (Vec<String>, Vec<String>) {
    let (mut ids, mut errors) = (Vec::new(), Vec::new());
    let mut kept = None;
    let end = Instant::now() + for_how_long;
    while Instant::now() < end {
        let answer = if keep_alive {
            if kept.is_none() {
                kept = Some(HttpClient::connect(listen).await.unwrap());
            }
            kept.as_mut().unwrap().get("/").await
        } else {
            get(listen, "/").await
        };
        match answer {
            Ok(answer) if answer.status == StatusCode::OK => ids.push(answer.body),
            Ok(answer) => errors.push(format!("{answer:?}")),
            Err(err) => {
                errors.push(err);
                kept = None;
            }
        }
    }
    (ids, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_mid_run_costs_no_request() {
    let backends = three_backends().await;
    let listen = free_address();
    let lb = Lb::start(&http_service(
        listen,
        "roundrobin",
        false,
        &backends.each_ref(),
    ))
    .await;
    lb.wait_health("web", &["a", "b", "c"], true).await;

    let fresh = tokio::spawn(hammer(listen, false, Duration::from_secs(3)));
    let kept = tokio::spawn(hammer(listen, true, Duration::from_secs(3)));
    tokio::time::sleep(Duration::from_millis(800)).await;
    backends[1].kill_and_wait().await;
    let served_at_kill = backends[1].served.load(Ordering::SeqCst);
    lb.wait_health("web", &["b"], false).await;

    for (what, run) in [("new connections", fresh), ("kept-alive connection", kept)] {
        let (ids, errors) = run.await.unwrap();
        assert!(
            errors.is_empty(),
            "{what}: {} errors: {errors:?}",
            errors.len()
        );
        assert!(ids.len() > 50, "{what}: only {} requests", ids.len());
        let after_kill = &ids[ids.len() * 2 / 3..];
        assert!(
            after_kill.iter().all(|id| id != "b"),
            "{what}: b answered after its death"
        );
    }
    assert_eq!(backends[1].served.load(Ordering::SeqCst), served_at_kill);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_health_check_pulls_a_backend_and_passing_ones_bring_it_back() {
    let backends = [TestBackend::http("a").await, TestBackend::http("b").await];
    let listen = free_address();
    let lb = Lb::start(&http_service(
        listen,
        "roundrobin",
        false,
        &backends.each_ref(),
    ))
    .await;
    lb.wait_health("web", &["a", "b"], true).await;
    let since_up = lb.backend_status("web", "b")["since"].clone();

    backends[1].healthy.store(false, Ordering::SeqCst);
    lb.wait_health("web", &["b"], false).await;
    let status = lb.backend_status("web", "b");
    assert_ne!(status["since"], since_up);
    assert_eq!(status["active"], 0);
    assert_eq!(lb.backend_status("web", "a")["healthy"], true);
    for _ in 0..6 {
        assert_eq!(id_of(listen, "/").await, "a");
    }

    backends[1].healthy.store(true, Ordering::SeqCst);
    lb.wait_health("web", &["b"], true).await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(id_of(listen, "/").await);
    }
    assert_eq!(counts(&ids), HashMap::from([("a", 3), ("b", 3)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_healthy_backend_http_answers_503() {
    let backend = TestBackend::http("a").await;
    backend.healthy.store(false, Ordering::SeqCst);
    let listen = free_address();
    let lb = Lb::start(&http_service(listen, "roundrobin", false, &[&backend])).await;
    lb.wait_health("web", &["a"], false).await;
    let answer = get(listen, "/").await.unwrap();
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!answer.body.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_backends_and_drains_removed_ones_without_an_error() {
    let backends = three_backends().await;
    let [a, b, c] = &backends;
    let listen = free_address();
    let lb = Lb::start(&http_service(listen, "roundrobin", false, &[a])).await;
    lb.wait_health("web", &["a"], true).await;
    let clients = [
        tokio::spawn(hammer(listen, false, Duration::from_secs(4))),
        tokio::spawn(hammer(listen, true, Duration::from_secs(4))),
    ];

    // A rolling update as hyperd does it: add the new replicas, wait for them, remove the old.
    lb.reload(&http_service(listen, "roundrobin", false, &[a, b, c]));
    lb.wait_health("web", &["b", "c"], true).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    lb.reload(&http_service(listen, "roundrobin", false, &[b, c]));
    wait_until(
        "a to leave the status",
        || lb.backend_status("web", "a").is_null(),
        &lb,
    )
    .await;

    // Let requests that picked a just before the reload finish.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let served_by_a = a.served.load(Ordering::SeqCst);
    for _ in 0..10 {
        assert_ne!(id_of(listen, "/").await, "a");
    }
    assert_eq!(
        a.served.load(Ordering::SeqCst),
        served_by_a,
        "a got a request after removal"
    );
    for client in clients {
        let (ids, errors) = client.await.unwrap();
        assert!(errors.is_empty(), "{} errors: {errors:?}", errors.len());
        assert!(ids.iter().any(|id| id == "a") && ids.iter().any(|id| id == "b"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_backend_finishes_its_long_request() {
    let backends = [TestBackend::http("a").await, TestBackend::http("b").await];
    let [a, b] = &backends;
    let listen = free_address();
    let lb = Lb::start(&http_service(listen, "roundrobin", false, &[a])).await;
    lb.wait_health("web", &["a"], true).await;

    let long = tokio::spawn(async move { get(listen, "/slow").await });
    wait_until(
        "the long request",
        || lb.backend_status("web", "a")["active"] == 1,
        &lb,
    )
    .await;
    lb.reload(&http_service(listen, "roundrobin", false, &[b]));
    lb.wait_health("web", &["b"], true).await;
    assert_eq!(id_of(listen, "/").await, "b");
    let answer = long.await.unwrap().unwrap();
    assert_eq!((answer.status, answer.body.as_str()), (StatusCode::OK, "a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_service_stops_accepting_and_drains() {
    let backend = TestBackend::http("a").await;
    let listen = free_address();
    let lb = Lb::start(&http_service(listen, "roundrobin", false, &[&backend])).await;
    lb.wait_health("web", &["a"], true).await;

    let mut kept = HttpClient::connect(listen).await.unwrap();
    let long = tokio::spawn(async move {
        let answer = kept.get("/slow").await;
        // Closed by the balancer once its request was answered.
        let after = kept.get("/").await;
        (answer, after)
    });
    wait_until(
        "the long request",
        || lb.backend_status("web", "a")["active"] == 1,
        &lb,
    )
    .await;
    lb.reload(&json!({ "services": [] }));
    wait_until(
        "web to leave the status",
        || lb.status()["services"]["web"].is_null(),
        &lb,
    )
    .await;
    assert!(tokio::net::TcpStream::connect(listen).await.is_err());
    let (answer, after) = long.await.unwrap();
    assert_eq!(answer.unwrap().body, "a");
    assert!(after.is_err(), "{after:?}");
}
