//! The real `hyper-dns` binary on loopback addresses (127.0.0.53.. stand in for tenant
//! networks' gateways), on a free high port, asked with real DNS messages over UDP and TCP.

mod support;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use nix::sys::signal::{kill, Signal};
use serde_json::json;

use support::*;

fn two_networks() -> serde_json::Value {
    json!({ "networks": [
        { "listen": "127.0.0.53",
          "records": { "web": ["10.1.0.2"], "3f2a9c1b7e4d": ["10.1.0.2"],
                       "pool": ["10.1.0.5", "10.1.0.6", "10.1.0.7"] } },
        { "listen": "127.0.0.54", "records": { "db": ["10.2.0.3"] } } ] })
}

#[test]
fn each_network_answers_its_own_names_only() {
    let server = Server::start(&two_networks(), free_port());
    let (a, b) = (server.at("127.0.0.53"), server.at("127.0.0.54"));

    assert_eq!(
        addresses(&ask_udp(a, "web", RecordType::A)),
        [ip("10.1.0.2")]
    );
    assert_eq!(
        addresses(&ask_udp(a, "3f2a9c1b7e4d.", RecordType::A)),
        [ip("10.1.0.2")]
    );
    assert_eq!(
        addresses(&ask_udp(b, "db.", RecordType::A)),
        [ip("10.2.0.3")]
    );
    // A name of the other network is not this one's: NXDOMAIN, at once.
    for (i, (at, name)) in [(b, "web."), (a, "db.")].into_iter().enumerate() {
        let reply = ask_udp(at, name, RecordType::A);
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NXDomain,
            "test[{i}]"
        );
        assert!(reply.metadata.authoritative, "test[{i}]");
    }
}

#[test]
fn a_link_alias_resolves_for_its_own_client_only() {
    let config = json!({ "networks": [
        { "listen": "127.0.0.53", "records": { "web": ["10.1.0.2"], "upstream": ["10.1.0.7"] },
          "links": { "127.0.0.1": { "bar": ["10.1.0.7"], "web": ["10.1.0.7"] } } } ] });
    let server = Server::start(&config, free_port());
    let a = server.at("127.0.0.53");
    let from = |source: &str, name: &str| {
        try_udp_from(source.parse().unwrap(), a, name, RecordType::A).expect("a reply")
    };
    assert_eq!(addresses(&from("127.0.0.1", "bar.")), [ip("10.1.0.7")]);
    // A client's own name comes before the network's.
    assert_eq!(addresses(&from("127.0.0.1", "web.")), [ip("10.1.0.7")]);
    // Another client has no such name, and sees the network's.
    let other = from("127.0.0.9", "bar.");
    assert_eq!(other.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(addresses(&from("127.0.0.9", "web.")), [ip("10.1.0.2")]);
    let tcp = ask_tcp(a, "bar.", RecordType::A);
    assert_eq!(addresses(&tcp), [ip("10.1.0.7")]);
}

#[test]
fn names_match_exactly_in_any_case() {
    let server = Server::start(&two_networks(), free_port());
    let a = server.at("127.0.0.53");

    let reply = ask_udp(a, "WeB.", RecordType::A);
    assert!(reply.metadata.authoritative);
    assert_eq!(reply.answers[0].ttl, 10);
    assert_eq!(addresses(&reply), [ip("10.1.0.2")]);
    let suffixed = ask_udp(a, "web.example.", RecordType::A);
    assert_eq!(suffixed.metadata.response_code, ResponseCode::ServFail);
}

#[test]
fn several_addresses_all_come_back_in_rotating_order() {
    let server = Server::start(&two_networks(), free_port());
    let a = server.at("127.0.0.53");

    let first = addresses(&ask_udp(a, "pool.", RecordType::A));
    let second = addresses(&ask_udp(a, "pool.", RecordType::A));
    assert_eq!(first.len(), 3);
    assert_ne!(first[0], second[0]);
    let mut sorted = second.clone();
    sorted.sort();
    assert_eq!(sorted, [ip("10.1.0.5"), ip("10.1.0.6"), ip("10.1.0.7")]);
}

#[test]
fn aaaa_of_a_known_name_is_empty_and_ptr_names_the_address() {
    let server = Server::start(&two_networks(), free_port());
    let a = server.at("127.0.0.53");

    let aaaa = ask_udp(a, "web.", RecordType::AAAA);
    assert_eq!(aaaa.metadata.response_code, ResponseCode::NoError);
    assert!(aaaa.answers.is_empty());

    let ptr = ask_udp(a, "2.0.1.10.in-addr.arpa.", RecordType::PTR);
    let names: Vec<String> = ptr
        .answers
        .iter()
        .map(|record| match &record.data {
            RData::PTR(target) => target.0.to_ascii(),
            other => panic!("not a PTR: {other:?}"),
        })
        .collect();
    assert_eq!(names, ["3f2a9c1b7e4d.", "web."]);
}

#[test]
fn tcp_queries_are_answered() {
    let server = Server::start(&two_networks(), free_port());
    assert_eq!(
        addresses(&ask_tcp(server.at("127.0.0.53"), "web.", RecordType::A)),
        [ip("10.1.0.2")]
    );
    assert_eq!(
        addresses(&ask_tcp(server.at("127.0.0.54"), "db.", RecordType::A)),
        [ip("10.2.0.3")]
    );
}

#[test]
fn unknown_names_are_forwarded_upstream_and_the_reply_relayed() {
    let port = free_port();
    // The "upstream": a second hyper-dns on another loopback address.
    let upstream = Server::start(
        &json!({ "networks": [ { "listen": "127.0.0.55",
                                 "records": { "outside.example": ["192.0.2.7"], "bare": ["192.0.2.8"] } } ] }),
        port,
    );
    let server = Server::start(
        &json!({ "networks": [ { "listen": "127.0.0.53", "records": { "web": ["10.1.0.2"] } } ],
                 "upstream": [upstream.at("127.0.0.55").to_string()] }),
        port,
    );
    let a = server.at("127.0.0.53");

    assert_eq!(
        addresses(&ask_udp(a, "outside.example.", RecordType::A)),
        [ip("192.0.2.7")]
    );
    assert_eq!(
        addresses(&ask_tcp(a, "outside.example.", RecordType::A)),
        [ip("192.0.2.7")]
    );
    // Local names are still answered locally.
    assert_eq!(
        addresses(&ask_udp(a, "web.", RecordType::A)),
        [ip("10.1.0.2")]
    );
    // The upstream's own SERVFAIL (it has no upstream) comes back as is.
    let unknown = ask_udp(a, "nowhere.example.", RecordType::A);
    assert_eq!(unknown.metadata.response_code, ResponseCode::ServFail);
    // A name of a single label it does not have is the tenant's: NXDOMAIN here, over UDP and
    // TCP, never asked upstream (which would know `bare`); a top-level domain's apex still is.
    for reply in [
        ask_udp(a, "bare.", RecordType::A),
        ask_tcp(a, "nosuchname.", RecordType::AAAA),
    ] {
        assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
        assert!(reply.answers.is_empty());
    }
    assert_eq!(
        ask_udp(a, "example.", RecordType::NS)
            .metadata
            .response_code,
        ResponseCode::ServFail,
        "the apex of a top-level domain was not asked upstream"
    );
}

#[test]
fn an_upstream_that_does_not_answer_gives_servfail() {
    let port = free_port();
    // Nothing listens there: loopback refuses at once, so no waiting on the timeout.
    let server = Server::start(
        &json!({ "networks": [ { "listen": "127.0.0.53", "records": {} } ],
                 "upstream": [format!("127.0.0.57:{port}")] }),
        port,
    );
    let reply = ask_udp(server.at("127.0.0.53"), "anything.example.", RecordType::A);
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
}

#[test]
fn sighup_applies_a_new_config_without_restarting() {
    let server = Server::start(
        &json!({ "networks": [ { "listen": "127.0.0.53", "records": { "web": ["10.1.0.2"] } },
                               { "listen": "127.0.0.54", "records": { "db": ["10.2.0.3"] } } ] }),
        free_port(),
    );
    let (a, b, c) = (
        server.at("127.0.0.53"),
        server.at("127.0.0.54"),
        server.at("127.0.0.56"),
    );
    let pid = server.pid();

    server.reload(&json!({ "networks": [
        { "listen": "127.0.0.53", "records": { "api": ["10.1.0.9"] } },
        { "listen": "127.0.0.56", "records": { "cache": ["10.3.0.4"] } } ] }));

    eventually("the new name resolves", || {
        ask_udp(a, "api.", RecordType::A).metadata.response_code == ResponseCode::NoError
    });
    assert_eq!(
        addresses(&ask_udp(a, "api.", RecordType::A)),
        [ip("10.1.0.9")]
    );
    assert_eq!(
        ask_udp(a, "web.", RecordType::A).metadata.response_code,
        ResponseCode::NXDomain
    );
    assert_eq!(
        addresses(&ask_tcp(c, "cache.", RecordType::A)),
        [ip("10.3.0.4")]
    );
    assert!(
        !listens_tcp(b),
        "the removed network's listener is still open"
    );
    assert_eq!(server.pid(), pid);
}

#[test]
fn a_bad_config_on_reload_keeps_the_previous_one() {
    let server = Server::start(&two_networks(), free_port());
    std::fs::write(server.scratch.path("config.json"), "{ not json").unwrap();
    kill(server.pid(), Signal::SIGHUP).unwrap();
    eventually("the failed reload is logged", || {
        server.log().contains("keeping the previous config")
    });
    assert_eq!(
        addresses(&ask_udp(server.at("127.0.0.53"), "web.", RecordType::A)),
        [ip("10.1.0.2")]
    );
}

#[test]
fn an_address_that_cannot_be_bound_is_retried_on_reload() {
    let port = free_port();
    let squatter = std::net::UdpSocket::bind(("127.0.0.58", port)).unwrap();
    let config = json!({ "networks": [
        { "listen": "127.0.0.53", "records": { "web": ["10.1.0.2"] } },
        { "listen": "127.0.0.58", "records": { "db": ["10.2.0.3"] } } ] });
    let server = Server::start(&config, port);

    assert!(
        server.log().contains("cannot listen"),
        "log:\n{}",
        server.log()
    );
    assert_eq!(
        addresses(&ask_udp(server.at("127.0.0.53"), "web.", RecordType::A)),
        [ip("10.1.0.2")]
    );

    drop(squatter);
    server.reload(&config);
    eventually("the freed address serves", || {
        try_udp(server.at("127.0.0.58"), "db.", RecordType::A)
            .is_some_and(|reply| reply.metadata.response_code == ResponseCode::NoError)
    });
}

#[test]
fn daemon_mode_detaches_into_its_own_session_and_sigterm_removes_the_pidfile() {
    let server = Server::start_daemon(&two_networks(), free_port());
    let pid = server.pid();

    assert_eq!(
        nix::unistd::getsid(Some(pid)).unwrap(),
        pid,
        "not a session leader"
    );
    assert_eq!(
        addresses(&ask_udp(server.at("127.0.0.53"), "web.", RecordType::A)),
        [ip("10.1.0.2")]
    );

    kill(pid, Signal::SIGTERM).unwrap();
    eventually("the pidfile is removed", || {
        !server.scratch.path("pid").exists()
    });
}

#[test]
fn daemon_mode_exits_nonzero_when_the_config_is_unreadable() {
    let scratch = Scratch::new();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_hyper-dns"))
        .args(["--daemon", "--port", "1053", "--config"])
        .arg(scratch.path("missing.json"))
        .arg("--pidfile")
        .arg(scratch.path("pid"))
        .arg("--log")
        .arg(scratch.path("log"))
        .status()
        .unwrap();
    assert!(!status.success());
    assert!(std::fs::read_to_string(scratch.path("log"))
        .unwrap()
        .contains("missing.json"));
    assert!(!scratch.path("pid").exists());
}
