//! `hyper-lb --daemon` and its life cycle: pidfile, exit status, and listeners that could not
//! be bound at first.

mod support;

use std::net::SocketAddr;

use nix::sys::signal::kill;
use serde_json::json;

use support::*;

fn one_http_service(name: &str, listen: SocketAddr, backend: &TestBackend) -> serde_json::Value {
    json!({ "name": name, "listen": listen.to_string(), "protocol": "http",
            "health": fast_health(), "backends": [backend.config()] })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_exits_0_once_serving_and_writes_its_pidfile() {
    let backend = TestBackend::http("a").await;
    let listen = free_address();
    let config = json!({ "services": [one_http_service("web", listen, &backend)] });
    let (status, lb) = tokio::task::spawn_blocking(move || Lb::start_daemon(&config))
        .await
        .unwrap();
    assert!(status.success(), "{status}; log:\n{}", lb.log());
    let pid = lb.pid();
    assert_ne!(pid.as_raw() as u32, std::process::id());
    kill(pid, None).expect("the daemon runs");
    assert!(lb.log().contains("serving"));
    lb.wait_health("web", &["a"], true).await;
    assert_eq!(id_of(listen, "/").await, "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_exits_1_with_the_reason_in_the_log_when_the_config_is_bad() {
    let config = json!({ "services": [ { "name": "web" } ] });
    let (status, lb) = tokio::task::spawn_blocking(move || Lb::start_daemon(&config))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(1));
    assert!(lb.log().contains("parse"), "log:\n{}", lb.log());
    assert!(!lb.scratch.path("pid").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_that_cannot_be_bound_is_retried_on_reload_while_others_serve() {
    let backend = TestBackend::http("a").await;
    let (free, taken) = (free_address(), free_address());
    // Stands in for an address hyperd has not put on the bridge yet.
    let occupant = std::net::TcpListener::bind(taken).unwrap();
    let config = json!({ "services": [
        one_http_service("up", free, &backend), one_http_service("late", taken, &backend) ] });
    let lb = Lb::start(&config).await;
    lb.wait_health("up", &["a"], true).await;
    assert_eq!(id_of(free, "/").await, "a");
    assert!(lb.log().contains("will try again on the next reload"));
    assert!(lb.status()["services"]["late"].is_null());

    drop(occupant);
    lb.reload(&config);
    lb.wait_health("late", &["a"], true).await;
    assert_eq!(id_of(taken, "/").await, "a");
}
