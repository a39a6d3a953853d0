//! Generators shared by the node's fuzz targets (`runtime/fuzz.rs`, `network/fuzz.rs`): what a
//! tenant can put in a create request, as Docker's JSON. Each field mostly has its own type
//! with contents from a vocabulary of valid, almost valid and hostile values, and sometimes a
//! value of another JSON type, so that cases get past deserialisation to the checks.

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use crate::model::{ContainerConfig, HostConfig};

/// Text from the values these fields take, and what is near them.
pub fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "", "busybox", "web", "db", "a", "/x", "data", "data:/srv", "data:/srv:ro",
            "data:/srv:rw,nocopy", "data:/:z", "/host:/srv", "./d:/d", "~/d:/d", "v:/a/../b",
            "v:rel", "80", "80/tcp", "53/udp", "0/tcp", "65536/tcp", "8080", "0.0.0.0", "127.0.0.1",
            "::1", "1.2.3.4", "host:1.2.3.4", "host=::1", ":1.2.3.4", "h:notip", "SIGTERM", "KILL",
            "RTMIN+3", "rtmin+31", "0", "65", "-1", "always", "on-failure", "unless-stopped", "no",
            "none", "host", "container:x", "default", "bridge", "KEY=value", "KEY", "=v", "K EY=v",
            "A=\u{0}", "CMD", "CMD-SHELL", "NONE", "s1", "m1", "xl", "true", "false", "volume", "bind",
            "tmpfs", "ctr:ro", "ctr:rw", "ctr:xx", "db:alias", "/db:/me/alias", "10.0.0.0/8",
            "172.16.0.0/33", "tcp", "udp", "icmp", "ingress", "egress",
        ])
        .prop_map(String::from),
        1 => ".{0,12}",
        1 => "[a-z0-9/:.=,+-]{0,16}",
    ]
}

/// Mostly one of `valid`, sometimes any [`word`].
fn one_of(valid: &'static [&'static str]) -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop::sample::select(valid).prop_map(|s| json!(s)),
        1 => word().prop_map(Value::String),
    ]
}

fn words() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(word(), 0..4)
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        12 => prop::sample::select(vec![0i64, 1, -1, 3, 5, 1_000_000, 999_999, 1 << 30, 1 << 33, i64::MAX, i64::MIN])
            .prop_map(|n| json!(n)),
        4 => any::<i64>().prop_map(|n| json!(n)),
        1 => any::<u64>().prop_map(|n| json!(n)),
        1 => any::<f64>().prop_map(|n| json!(n)),
    ]
}

/// Any JSON, for a field given the wrong type.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        word().prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map(word(), inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A field's value: its own type mostly, now and then anything.
/// Boxed: the value trees of a whole body are deep enough to overflow a test thread's stack
/// in a debug build when they are not.
fn field(typed: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Option<Value>> {
    prop_oneof![
        8 => Just(None),
        24 => typed.prop_map(Some),
        1 => any_json().prop_map(Some),
    ]
    .boxed()
}

fn string() -> impl Strategy<Value = Value> {
    word().prop_map(Value::String)
}

fn list() -> impl Strategy<Value = Value> {
    prop_oneof![4 => words().prop_map(|w| json!(w)), 1 => Just(Value::Null)]
}

/// `Cmd` and `Entrypoint` take a string too.
fn list_or_string() -> impl Strategy<Value = Value> {
    prop_oneof![list(), string()]
}

fn int() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec![
            0i64,
            1,
            -1,
            3,
            1_000_000,
            999_999,
            1 << 33,
            i64::MAX,
            i64::MIN
        ]),
        any::<i64>(),
    ]
    .prop_map(|n| json!(n))
}

fn string_map() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(word(), word(), 0..3).prop_map(|m| json!(m))
}

fn key_set() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(word(), Just(json!({})), 0..3).prop_map(|m| json!(m))
}

fn port_bindings() -> impl Strategy<Value = Value> {
    let binding = (word(), word()).prop_map(|(ip, port)| json!({"HostIp": ip, "HostPort": port}));
    let bindings = prop_oneof![
        Just(Value::Null),
        prop::collection::vec(binding, 0..3).prop_map(Value::Array),
    ];
    prop::collection::btree_map(word(), bindings, 0..3).prop_map(|m| json!(m))
}

fn restart_policy() -> impl Strategy<Value = Value> {
    (
        one_of(&["", "no", "always", "on-failure", "unless-stopped"]),
        int(),
    )
        .prop_map(|(n, c)| json!({"Name": n, "MaximumRetryCount": c}))
}

fn healthcheck() -> impl Strategy<Value = Value> {
    (words(), int(), int(), int(), int(), int()).prop_map(|(t, i, to, sp, si, r)| {
        json!({"Test": t, "Interval": i, "Timeout": to, "StartPeriod": sp, "StartInterval": si, "Retries": r})
    })
}

fn mounts() -> impl Strategy<Value = Value> {
    let mount = (word(), word(), word(), any::<bool>(), prop::option::of((any::<bool>(), word(), string_map())))
        .prop_map(|(kind, source, target, ro, opts)| {
            let mut m = json!({"Type": kind, "Source": source, "Target": target, "ReadOnly": ro});
            if let Some((no_copy, driver, options)) = opts {
                m["VolumeOptions"] = json!({"NoCopy": no_copy, "DriverConfig": {"Name": driver, "Options": options}});
            }
            m
        });
    prop::collection::vec(mount, 0..3).prop_map(Value::Array)
}

fn object(fields: Vec<(&'static str, Option<Value>)>) -> Value {
    let mut m = Map::new();
    for (k, v) in fields {
        if let Some(v) = v {
            m.insert(k.to_string(), v);
        }
    }
    Value::Object(m)
}

/// A `HostConfig` object.
pub fn host_config_json() -> BoxedStrategy<Value> {
    (
        (
            field(list()),
            field(port_bindings()),
            field(restart_policy()),
            field(string()),
            field(list()),
            field(list()),
            field(list()),
        ),
        (
            field(any::<bool>().prop_map(Value::Bool)),
            field(mounts()),
            field(list()),
            field(list()),
            field(number()),
            field(number()),
            field(list()),
        ),
    )
        .prop_map(
            |((binds, pb, rp, nm, dns, eh, links), (pap, mounts, vf, ds, mem, cpus, dopt))| {
                object(vec![
                    ("Binds", binds),
                    ("PortBindings", pb),
                    ("RestartPolicy", rp),
                    ("NetworkMode", nm),
                    ("Dns", dns),
                    ("ExtraHosts", eh),
                    ("Links", links),
                    ("PublishAllPorts", pap),
                    ("Mounts", mounts),
                    ("VolumesFrom", vf),
                    ("DnsSearch", ds),
                    ("Memory", mem),
                    ("NanoCpus", cpus),
                    ("DnsOptions", dopt),
                ])
            },
        )
        .boxed()
}

/// A create request's body: `Config` fields and its `HostConfig`.
pub fn create_body() -> BoxedStrategy<Value> {
    (
        (
            field(string()),
            field(list_or_string()),
            field(list_or_string()),
            field(
                prop::collection::vec(one_of(&["A=1", "PATH=/bin", "X", "B=", "C=d=e"]), 0..3)
                    .prop_map(Value::Array),
            ),
            field(string_map()),
            field(one_of(&["SIGTERM", "KILL", "9", "RTMIN+2", "sigusr1"])),
            field(healthcheck()),
        ),
        (
            field(key_set()),
            field(key_set()),
            field(string()),
            field(string()),
            field(string()),
            field(string()),
            field(host_config_json()),
        ),
    )
        .prop_map(
            |((image, cmd, ep, env, labels, sig, hc), (ports, vols, wd, user, hn, dn, host))| {
                object(vec![
                    ("Image", image),
                    ("Cmd", cmd),
                    ("Entrypoint", ep),
                    ("Env", env),
                    ("Labels", labels),
                    ("StopSignal", sig),
                    ("Healthcheck", hc),
                    ("ExposedPorts", ports),
                    ("Volumes", vols),
                    ("WorkingDir", wd),
                    ("User", user),
                    ("Hostname", hn),
                    ("Domainname", dn),
                    ("HostConfig", host),
                ])
            },
        )
        .boxed()
}

/// What the server makes of a body before it calls the runtime (see the server's
/// `containers::create_request`), or `None` where it answers 400 already.
pub fn parsed(body: &Value) -> Option<(ContainerConfig, HostConfig)> {
    let config = serde_json::from_value(body.clone()).ok()?;
    let host_config = match &body["HostConfig"] {
        Value::Null => HostConfig::default(),
        hc => serde_json::from_value(hc.clone()).ok()?,
    };
    Some((config, host_config))
}
