//! Fuzz target for a `network create` body ([`create_request`]): what `docker network create`
//! and compose's project network send, with every field sometimes of another JSON type
//! (proptest on stable, see `scripts/fuzz`). Subnet parsing itself is fuzzed in node's
//! `network/fuzz.rs`.

use axum::http::StatusCode;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::create_request;
use crate::error::ApiError;

fn client_error(e: &ApiError) -> Result<(), TestCaseError> {
    prop_assert!(
        matches!(
            e.status,
            StatusCode::BAD_REQUEST | StatusCode::NOT_IMPLEMENTED
        ),
        "{} for {:?}",
        e.status,
        e.message
    );
    prop_assert!(!e.message.is_empty());
    Ok(())
}

/// A value of some other JSON type than the field wants.
fn other() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        Just(json!(1)),
        Just(json!(true)),
        Just(json!("x")),
        Just(json!([])),
        Just(json!({})),
        Just(json!(["10.9.0.0/24"])),
        Just(json!({"a": 1})),
    ]
    .boxed()
}

fn text(words: &'static [&'static str]) -> BoxedStrategy<Value> {
    prop_oneof![
        4 => prop::sample::select(words).prop_map(Value::from),
        1 => "\\PC{0,12}".prop_map(Value::from),
        1 => other(),
    ]
    .boxed()
}

fn labels() -> BoxedStrategy<Value> {
    let value = prop_oneof![
        4 => "[a-z0-9.]{0,8}".prop_map(Value::from),
        1 => other(),
    ];
    prop_oneof![
        3 => prop::collection::btree_map("[a-z.]{1,8}", value, 0..3)
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        1 => other(),
    ]
    .boxed()
}

fn ipam_config() -> BoxedStrategy<Value> {
    let subnet = text(&[
        "10.9.0.0/24",
        "10.9.0.1/24",
        "172.30.0.0/16",
        "192.168.7.0/29",
        "10.0.0.0/30",
        "10.0.0.0/7",
        "fd00::/64",
        "10.9.0.0",
        "",
    ]);
    let gateway = text(&["10.9.0.1", "10.9.0.254", "172.30.0.1", "192.168.7.1", ""]);
    let range = text(&["", "10.9.0.128/25"]);
    prop_oneof![
        4 => (
            prop::option::of(subnet),
            prop::option::of(gateway),
            prop::option::of(range),
        )
            .prop_map(|(s, g, r)| {
                let mut m = Map::new();
                for (k, v) in [("Subnet", s), ("Gateway", g), ("IPRange", r)] {
                    if let Some(v) = v {
                        m.insert(k.into(), v);
                    }
                }
                Value::Object(m)
            }),
        1 => other(),
    ]
    .boxed()
}

fn ipam() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => (
            prop::option::of(text(&["default", "", "dhcp"])),
            prop::option::of(prop_oneof![Just(json!({})), other()]),
            prop::option::of(prop_oneof![
                3 => prop::collection::vec(ipam_config(), 0..3).prop_map(Value::from),
                1 => other(),
            ]),
        )
            .prop_map(|(d, o, c)| {
                let mut m = Map::new();
                for (k, v) in [("Driver", d), ("Options", o), ("Config", c)] {
                    if let Some(v) = v {
                        m.insert(k.into(), v);
                    }
                }
                Value::Object(m)
            }),
        1 => other(),
    ]
    .boxed()
}

/// A body: each field present or not, mostly of its own type.
fn body() -> BoxedStrategy<Vec<u8>> {
    let flag = || prop_oneof![4 => any::<bool>().prop_map(Value::from), 1 => other()].boxed();
    let fields = (
        prop::option::of(text(&[
            "web",
            "proj_default",
            "a",
            "bridge",
            "host",
            "none",
            "",
        ])),
        prop::option::of(text(&["bridge", "", "overlay", "macvlan"])),
        prop::option::of(flag()),
        prop::option::of(flag()),
        prop::option::of(prop_oneof![Just(json!({})), other()]),
        prop::option::of(labels()),
        prop::option::of(ipam()),
        prop::option::of(flag()),
        prop::option::of(text(&["", "local"])),
    );
    prop_oneof![
        8 => fields.prop_map(|(name, driver, ipv6, internal, options, labels, ipam, dup, scope)| {
            let mut m = Map::new();
            for (k, v) in [
                ("Name", name),
                ("Driver", driver),
                ("EnableIPv6", ipv6),
                ("Internal", internal),
                ("Options", options),
                ("Labels", labels),
                ("IPAM", ipam),
                ("CheckDuplicate", dup),
                ("Scope", scope),
            ] {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
            serde_json::to_vec(&Value::Object(m)).unwrap()
        }),
        1 => other().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => prop::collection::vec(any::<u8>(), 0..40),
    ]
    .boxed()
}

proptest! {
    /// Every body is taken, or refused with 400 or 501 and a message. One that is taken is
    /// acted on in full: its name, its subnet and gateway, its labels are what the request
    /// holds, and nothing it sets (another driver, IPv6, a field of the wrong type) is dropped.
    #[test]
    fn fuzz_network_create(body in body()) {
        let req = match create_request(&body) {
            Err(e) => return client_error(&e),
            Ok(req) => req,
        };
        let raw: Value = serde_json::from_slice(&body).unwrap();
        prop_assert_eq!(raw["Name"].as_str(), Some(req.name.as_str()));
        prop_assert!(matches!(raw["Driver"].as_str(), Some("" | "bridge")) || raw["Driver"].is_null());
        prop_assert!(matches!(raw["EnableIPv6"], Value::Null | Value::Bool(false)));
        let labels = match &raw["Labels"] {
            Value::Null => json!({}),
            l => l.clone(),
        };
        prop_assert_eq!(labels, serde_json::to_value(&req.labels).unwrap());
        let configs = match &raw["IPAM"]["Config"] {
            Value::Null => vec![],
            Value::Array(a) => a.clone(),
            c => return Err(TestCaseError::fail(format!("IPAM.Config {c} taken"))),
        };
        prop_assert!(configs.len() <= 1);
        let config = configs.first().cloned().unwrap_or(Value::Null);
        match &config["Subnet"] {
            Value::Null => prop_assert!(req.subnet.is_none()),
            Value::String(s) => prop_assert_eq!(Some(s.parse().unwrap()), req.subnet),
            s => return Err(TestCaseError::fail(format!("Subnet {s} taken"))),
        }
        match &config["Gateway"] {
            Value::Null => {}
            Value::String(g) => prop_assert_eq!(
                Some(g.as_str().parse().unwrap()),
                req.subnet.map(node::network::ipam::gateway_of)
            ),
            g => return Err(TestCaseError::fail(format!("Gateway {g} taken"))),
        }
    }
}

/// What the Docker CLI sends for `docker network create --subnet 10.9.0.0/24 -l a=b web`.
#[test]
fn docker_cli_body_is_taken() {
    let body = json!({
        "Name": "web", "CheckDuplicate": true, "Driver": "bridge", "Scope": "",
        "EnableIPv6": false, "Internal": false, "Attachable": false, "Ingress": false,
        "ConfigOnly": false, "ConfigFrom": null, "Options": {},
        "IPAM": {"Driver": "default", "Options": {}, "Config": [{"Subnet": "10.9.0.0/24"}]},
        "Labels": {"a": "b"},
    });
    let req = create_request(&serde_json::to_vec(&body).unwrap()).unwrap();
    assert_eq!(req.name, "web");
    assert_eq!(req.subnet, Some("10.9.0.0/24".parse().unwrap()));
    assert_eq!(req.labels.get("a").map(String::as_str), Some("b"));
}

/// Regression inputs: fields of the wrong type were read as absent, and the network was made
/// without them (labels dropped, a default subnet instead of the one asked for).
#[test]
fn fields_of_the_wrong_type_are_refused() {
    for (i, body) in [
        json!({"Name": "web", "Labels": {"a": 1}}),
        json!({"Name": "web", "Labels": ["a=b"]}),
        json!({"Name": "web", "IPAM": {"Config": [{"Subnet": 10}]}}),
        json!({"Name": "web", "IPAM": {"Config": {"Subnet": "10.9.0.0/24"}}}),
        json!({"Name": "web", "IPAM": {"Config": ["10.9.0.0/24"]}}),
        json!({"Name": "web", "EnableIPv6": "true"}),
        json!({"Name": "web", "Driver": 1}),
        json!(["web"]),
    ]
    .iter()
    .enumerate()
    {
        let e =
            create_request(&serde_json::to_vec(body).unwrap()).expect_err(&format!("test[{i}]"));
        assert_eq!(
            e.status,
            StatusCode::BAD_REQUEST,
            "test[{i}]: {}",
            e.message
        );
    }
}
