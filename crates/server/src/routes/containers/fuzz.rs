//! Fuzz targets for what the API parses before the runtime sees anything: a create's JSON
//! body ([`create_request`]) and query strings (`Params`, flags, numbers, times, terminal
//! sizes, `filters`), proptest on stable (see `scripts/fuzz`). The runtime's own checks of a
//! create are fuzzed in node's `runtime/fuzz.rs`.

use axum::extract::Query;
use axum::http::{StatusCode, Uri};
use chrono::Utc;
use node::model::{Container, ContainerConfig, HostConfig, State};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::super::unsupported::refuse_unsupported;
use super::super::{filter_values, flag, int, terminal_size, time_param, Params};
use super::{create_request, matches_filters};
use crate::error::ApiError;

/// Docker's field names at each level (handled, refused with a reason, and unknown ones).
const CONFIG_FIELDS: &[&str] = &[
    "Image",
    "Cmd",
    "Entrypoint",
    "Env",
    "Labels",
    "User",
    "WorkingDir",
    "Tty",
    "OpenStdin",
    "StopSignal",
    "StopTimeout",
    "ExposedPorts",
    "Volumes",
    "Healthcheck",
    "Hostname",
    "Domainname",
    "MacAddress",
    "NetworkDisabled",
    "OnBuild",
    "Shell",
    "ArgsEscaped",
    "NewField",
];
const HOST_FIELDS: &[&str] = &[
    "Binds",
    "NetworkMode",
    "PortBindings",
    "RestartPolicy",
    "AutoRemove",
    "Mounts",
    "Dns",
    "ExtraHosts",
    "Links",
    "PublishAllPorts",
    "Memory",
    "NanoCpus",
    "LogConfig",
    "PidMode",
    "IpcMode",
    "UTSMode",
    "UsernsMode",
    "CgroupnsMode",
    "ConsoleSize",
    "Privileged",
    "CapAdd",
    "Devices",
    "CpuShares",
    "MemorySwap",
    "MemorySwappiness",
    "PidsLimit",
    "ShmSize",
    "Isolation",
    "OomKillDisable",
    "Sysctls",
    "Tmpfs",
    "Init",
    "ReadonlyRootfs",
    "StorageOpt",
    "NewThing",
];
const ENDPOINT_FIELDS: &[&str] = &["Aliases", "Links", "NetworkID", "IPAMConfig", "MacAddress"];

/// JSON of any type, with values these fields take (and are refused for).
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop::sample::select(vec![
            0i64,
            -1,
            1,
            1 << 20,
            1 << 30,
            4 << 30,
            2_000_000_000,
            i64::MAX
        ])
        .prop_map(|n| json!(n)),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        prop::sample::select(vec![
            "",
            "busybox",
            "host",
            "private",
            "shareable",
            "json-file",
            "syslog",
            "default",
            "always",
            "80/tcp",
            "data:/srv",
            "A=1",
            "sh_hyper_instancetype",
            "m1",
            "s4",
            "xxl",
        ])
        .prop_map(|s| json!(s)),
        ".{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec!["Type", "Config", "Name", "a", "80/tcp", "max-size"])
                    .prop_map(String::from),
                inner,
                0..3,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn object(names: &'static [&'static str], max: usize) -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec((prop::sample::select(names), value()), 0..max)
        .prop_map(|kv| kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// A create body: Config fields, a HostConfig, NetworkingConfig endpoints; or raw text.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let endpoints = prop::collection::btree_map("[a-z]{1,4}", object(ENDPOINT_FIELDS, 3), 0..3);
    let structured = (
        object(CONFIG_FIELDS, 6),
        prop::option::of(object(HOST_FIELDS, 6)),
        prop::option::of(endpoints),
        prop::option::of(prop::sample::select(vec!["busybox", ""])),
    )
        .prop_map(|(mut config, host, endpoints, image)| {
            if let Some(image) = image {
                config.insert("Image".into(), json!(image));
            }
            if let Some(h) = host {
                config.insert("HostConfig".into(), Value::Object(h));
            }
            if let Some(e) = endpoints {
                config.insert("NetworkingConfig".into(), json!({ "EndpointsConfig": e }));
            }
            serde_json::to_vec(&config).unwrap()
        });
    prop_oneof![
        8 => structured,
        1 => prop::collection::vec(any::<u8>(), 0..32),
        1 => Just(b"[1,2]".to_vec()),
    ]
}

/// A refusal a Docker client can act on: 400 (bad request) or 501 (not supported), with
/// Docker's message.
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

fn container() -> Container {
    Container {
        id: "0123456789abcdef0123456789abcdef".into(),
        tenant: "t".into(),
        name: "web".into(),
        created: Utc::now(),
        image: "busybox".into(),
        image_id: "sha256:00".into(),
        path: "sh".into(),
        args: vec![],
        config: ContainerConfig::default(),
        host_config: HostConfig::default(),
        size: "s4".into(),
        state: State::default(),
        restart_count: 0,
        endpoint: None,
        mounts: vec![],
        node: String::new(),
        lost: None,
    }
}

/// Query text: the parameters routes read, with values of every shape, percent escapes
/// (some broken) and `filters` JSON.
fn query() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "all", "limit", "since", "until", "h", "w", "filters", "name", "t", "signal", "force",
        "a%20b", "%zz", "",
    ]);
    let val = prop_oneof![
        prop::sample::select(vec![
            "1",
            "true",
            "True",
            "0",
            "",
            "-5",
            "99999999999999999999",
            "1.5",
            "NaN",
            "inf",
            "-1e300",
            "1e30",
            "2024-01-01T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "%7B%7D",
            "%7B%22status%22%3A%5B%22running%22%5D%7D",
            "%7B%22label%22%3A%7B%22a%3Db%22%3Atrue%7D%7D",
            "%7B%22bogus%22%3A%5B%5D%7D",
            "%7B%22exited%22%3A%5B%220%22%5D%7D",
            "%ZZ",
            "%",
            "a+b",
        ])
        .prop_map(String::from),
        "[a-zA-Z0-9%+.-]{0,10}",
    ];
    prop::collection::vec((key, val), 0..6).prop_map(|kv| {
        kv.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    })
}

proptest! {
    /// Every create body is taken, or refused with 400 or 501 and a message; one that is taken
    /// leaves no field hyper does not act on set (never accepted and ignored), and names an
    /// image.
    #[test]
    fn fuzz_create_body(body in body()) {
        match create_request(&body) {
            Err(e) => client_error(&e)?,
            Ok((config, _, _)) => {
                let raw: Value = serde_json::from_slice(&body).unwrap();
                prop_assert!(refuse_unsupported(&raw).is_ok());
                prop_assert!(!config.image.is_empty());
                let endpoints = raw["NetworkingConfig"]["EndpointsConfig"].as_object().map_or(0, Map::len);
                prop_assert!(endpoints <= 1, "{endpoints} networks accepted for one NIC");
            }
        }
    }

    /// Query strings: what axum cannot parse is a 400; the rest gives each helper a value or a
    /// 400 with a message; `filters` with a key containers do not have is refused.
    #[test]
    fn fuzz_query(q in query()) {
        let uri: Uri = match format!("/containers/json?{q}").parse() {
            Ok(u) => u,
            Err(_) => return Ok(()),
        };
        let params: Params = match Query::<Params>::try_from_uri(&uri) {
            Ok(Query(p)) => p,
            Err(rejection) => {
                prop_assert_eq!(axum::response::IntoResponse::into_response(rejection).status(), StatusCode::BAD_REQUEST);
                return Ok(());
            }
        };
        let _ = flag(&params, "all", false);
        for name in ["limit", "signal"] {
            if let Err(e) = int(&params, name) {
                client_error(&e)?;
            }
        }
        for name in ["since", "until"] {
            if let Err(e) = time_param(&params, name) {
                client_error(&e)?;
            }
        }
        if let Err(e) = terminal_size(&params) {
            client_error(&e)?;
        }
        if let Err(e) = filter_values(params.get("filters"), "status") {
            client_error(&e)?;
        }
        if let Some(Ok(filters)) = params
            .get("filters")
            .filter(|f| !f.is_empty())
            .map(|f| serde_json::from_str::<Map<String, Value>>(f))
        {
            match matches_filters(&container(), &filters) {
                Ok(_) => prop_assert!(filters.keys().all(|k| ["status", "name", "id", "ancestor", "exited", "label"].contains(&k.as_str()))),
                Err(e) => client_error(&e)?,
            }
        }
    }
}
