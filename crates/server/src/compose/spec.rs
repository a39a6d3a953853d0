//! The project as Hyper's client posts it to `/compose/up` and `/compose/create`, read and
//! checked before anything is created: the wrapper (`ServiceConfigs.M`, `VolumeConfigs`,
//! `NetworkConfigs`, `auths`), each service's keys (snake_case, as libcompose marshals them),
//! and what each container of a service is created with (a Docker create body, so the
//! ordinary create's checks apply to compose too).
//!
//! Every key a service may carry is either honoured or refused by name: Hyper's own server was
//! free to drop what it did not do, a user is better served by an error.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// The labels Hyper's client (libcompose) puts on a project's containers.
pub const PROJECT_LABEL: &str = "sh.hyper.compose.project";
pub const SERVICE_LABEL: &str = "sh.hyper.compose.service";
pub const HASH_LABEL: &str = "sh.hyper.compose.config-hash";
pub const ONEOFF_LABEL: &str = "sh.hyper.compose.oneoff";
pub const NUMBER_LABEL: &str = "sh.hyper.compose.container-number";
pub const VERSION_LABEL: &str = "sh.hyper.compose.version";
/// libcompose's `ComposeVersion` in hypercli 1.10.17.
pub const COMPOSE_VERSION: &str = "1.5.0";

/// Keys of a service object that hyperd honours.
const HONOURED: &[&str] = &[
    "image",
    "command",
    "entrypoint",
    "environment",
    "links",
    "depends_on",
    "ports",
    "expose",
    "volumes",
    "container_name",
    "restart",
    "labels",
    "working_dir",
    "tty",
    "stdin_open",
    "hostname",
    "domainname",
    "healthcheck",
    "size",
    "fip",
    "security_groups",
    "noauto_volume",
];

/// A service as checked: what its containers are created with.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Service {
    pub name: String,
    pub image: String,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub environment: Vec<String>,
    /// `(service, alias)`
    pub links: Vec<(String, String)>,
    /// `(service, condition)`: `service_started` or `service_healthy`.
    pub depends_on: Vec<(String, String)>,
    pub ports: Vec<PortSpec>,
    pub expose: Vec<String>,
    /// `(project volume or tenant volume, destination, read-only)`
    pub named_volumes: Vec<(String, String, bool)>,
    pub anonymous_volumes: Vec<String>,
    pub container_name: Option<String>,
    pub restart: Option<Value>,
    pub labels: BTreeMap<String, String>,
    pub working_dir: String,
    pub tty: bool,
    pub stdin_open: bool,
    pub hostname: String,
    pub domainname: String,
    pub healthcheck: Option<Value>,
    pub size: Option<String>,
    pub fip: Option<std::net::Ipv4Addr>,
    pub security_groups: Vec<String>,
    pub noauto_volume: bool,
    /// `sha256(name, canonical config)`: changes exactly when the service's config does.
    pub hash: String,
    /// The config as posted (canonical: nulls and empties left out), kept in the store.
    pub config: Value,
}

/// One `ports` entry: host IP, host port (None: any), container port, protocol.
#[derive(Debug, Clone, PartialEq)]
pub struct PortSpec {
    pub host_ip: String,
    pub host_port: Option<u16>,
    pub container_port: u16,
    pub proto: String,
}

/// A top-level `volumes` entry.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VolumeSpec {
    pub external: bool,
    pub driver_opts: BTreeMap<String, String>,
}

/// The whole posted project.
#[derive(Debug, Default)]
pub struct Project {
    pub services: BTreeMap<String, Service>,
    pub volumes: BTreeMap<String, VolumeSpec>,
    /// `registry host -> (username, password)`, from `auths`; used for pulls, never stored.
    pub auths: BTreeMap<String, (String, String)>,
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg.into())
}

/// The project name as hyperd uses it: Hyper's client sends the directory's base name as it
/// is, so it is normalised here the way libcompose normalises it for labels (lower case,
/// letters and digits), keeping `-` and `_` inside it.
pub fn project_name(raw: &str) -> Result<String, ApiError> {
    let name: String = raw
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    let name = name.trim_matches(|c| c == '-' || c == '_').to_string();
    if name.is_empty() {
        return Err(bad(format!(
            "invalid project name {raw:?}: give -p NAME with letters or digits"
        )));
    }
    if name.len() > 60 {
        return Err(bad(format!("project name {raw:?} is too long")));
    }
    Ok(name)
}

/// `services=a}{b` of a request: the services named, none meaning all.
pub fn service_list(raw: Option<&String>) -> Vec<String> {
    raw.map(|s| {
        s.split("}{")
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    })
    .unwrap_or_default()
}

/// Leaves out nulls, empty strings, lists and objects, and `false`, recursively: what
/// omitempty would have left out, so the hash does not depend on how a client spells absence.
fn canonical(v: &Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::Bool(false) => None,
        Value::String(s) if s.is_empty() => None,
        Value::Array(a) => {
            let a: Vec<Value> = a.iter().filter_map(canonical).collect();
            (!a.is_empty()).then_some(Value::Array(a))
        }
        Value::Object(o) => {
            let o: Map<String, Value> = o
                .iter()
                .filter_map(|(k, v)| canonical(v).map(|v| (k.clone(), v)))
                .collect();
            (!o.is_empty()).then_some(Value::Object(o))
        }
        v => Some(v.clone()),
    }
}

/// The config hash of a service: sha256 over its name and its canonical config (object keys
/// sorted, as serde_json's map keeps them).
pub fn config_hash(name: &str, config: &Value) -> String {
    let canon = canonical(config).unwrap_or(Value::Null);
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update(canon.to_string().as_bytes());
    hex::encode(h.finalize())
}

fn string(svc: &str, key: &str, v: &Value) -> Result<String, ApiError> {
    match v {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(bad(format!(
            "service {svc}: {key} must be a string, not {v}"
        ))),
    }
}

fn boolean(svc: &str, key: &str, v: &Value) -> Result<bool, ApiError> {
    match v {
        Value::Null => Ok(false),
        Value::Bool(b) => Ok(*b),
        _ => Err(bad(format!(
            "service {svc}: {key} must be true or false, not {v}"
        ))),
    }
}

fn strings(svc: &str, key: &str, v: &Value) -> Result<Vec<String>, ApiError> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(a) => a
            .iter()
            .map(|x| match x {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                _ => Err(bad(format!(
                    "service {svc}: {key} must be a list of strings, not {v}"
                ))),
            })
            .collect(),
        _ => Err(bad(format!(
            "service {svc}: {key} must be a list of strings, not {v}"
        ))),
    }
}

/// `environment` and `labels`: a list of `K=V` or an object.
fn key_values(svc: &str, key: &str, v: &Value) -> Result<Vec<(String, String)>, ApiError> {
    match v {
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| Ok((k.clone(), string(svc, key, v)?)))
            .collect(),
        _ => Ok(strings(svc, key, v)?
            .into_iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (kv, String::new()),
            })
            .collect()),
    }
}

fn port_number(svc: &str, s: &str, what: &str) -> Result<u16, ApiError> {
    s.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| bad(format!("service {svc}: invalid {what} port {s:?}")))
}

fn port_range(svc: &str, s: &str, what: &str) -> Result<(u16, u16), ApiError> {
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (port_number(svc, a, what)?, port_number(svc, b, what)?);
            if b < a {
                return Err(bad(format!(
                    "service {svc}: invalid {what} port range {s:?}"
                )));
            }
            Ok((a, b))
        }
        None => {
            let p = port_number(svc, s, what)?;
            Ok((p, p))
        }
    }
}

/// `ports` entries as compose writes them: `C`, `H:C`, `IP:H:C`, `IP::C`, each side a port
/// or a range, `/tcp` or `/udp` after.
pub fn parse_port(svc: &str, spec: &str) -> Result<Vec<PortSpec>, ApiError> {
    let (body, proto) = match spec.rsplit_once('/') {
        Some((b, p)) if matches!(p, "tcp" | "udp") => (b, p),
        Some(_) => {
            return Err(bad(format!(
                "service {svc}: invalid port {spec:?}: protocol must be tcp or udp"
            )))
        }
        None => (spec, "tcp"),
    };
    let parts: Vec<&str> = body.rsplitn(3, ':').collect();
    let (ip, host, container) = match parts.as_slice() {
        [c] => ("", "", *c),
        [c, h] => ("", *h, *c),
        [c, h, ip] => (*ip, *h, *c),
        _ => return Err(bad(format!("service {svc}: invalid port {spec:?}"))),
    };
    if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
        return Err(bad(format!(
            "service {svc}: invalid port {spec:?}: {ip:?} is not an IP address"
        )));
    }
    let (c0, c1) = port_range(svc, container, "container")?;
    let host = if host.is_empty() {
        None
    } else {
        Some(port_range(svc, host, "host")?)
    };
    if let Some((h0, h1)) = host {
        if h1 - h0 != c1 - c0 {
            return Err(bad(format!(
                "service {svc}: invalid port {spec:?}: the host and container ranges differ in size"
            )));
        }
    }
    Ok((c0..=c1)
        .enumerate()
        .map(|(i, c)| PortSpec {
            host_ip: ip.to_string(),
            host_port: host.map(|(h0, _)| h0 + i as u16),
            container_port: c,
            proto: proto.to_string(),
        })
        .collect())
}

fn restart_policy(svc: &str, s: &str) -> Result<Option<Value>, ApiError> {
    let (name, count) = match s.split_once(':') {
        Some((n, c)) => (
            n,
            c.parse::<i64>()
                .map_err(|_| bad(format!("service {svc}: invalid restart policy {s:?}")))?,
        ),
        None => (s, 0),
    };
    match name {
        "" | "no" => Ok(None),
        "always" | "unless-stopped" | "on-failure" => {
            Ok(Some(json!({"Name": name, "MaximumRetryCount": count})))
        }
        _ => Err(bad(format!(
            "service {svc}: invalid restart policy {s:?}: use no, always, unless-stopped or on-failure[:N]"
        ))),
    }
}

/// A compose duration (`1m30s`, `500ms`, `10s`, a number of seconds) in nanoseconds.
fn duration_ns(svc: &str, key: &str, v: &Value) -> Result<i64, ApiError> {
    let err = || {
        bad(format!(
            "service {svc}: healthcheck {key}: invalid duration {v}"
        ))
    };
    let s = match v {
        Value::Null => return Ok(0),
        Value::Number(n) => return n.as_f64().map(|f| (f * 1e9) as i64).ok_or_else(err),
        Value::String(s) => s.as_str(),
        _ => return Err(err()),
    };
    let mut total = 0f64;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while let Some(&n) = chars.peek() {
            if n.is_ascii_alphabetic() {
                unit.push(n);
                chars.next();
            } else {
                break;
            }
        }
        let n: f64 = num.parse().map_err(|_| err())?;
        num.clear();
        total += n * match unit.as_str() {
            "ns" => 1.0,
            "us" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(err()),
        };
    }
    if !num.is_empty() {
        total += num.parse::<f64>().map_err(|_| err())? * 1e9;
    }
    Ok(total as i64)
}

fn healthcheck(svc: &str, v: &Value) -> Result<Option<Value>, ApiError> {
    let Some(o) = v.as_object() else {
        return match v {
            Value::Null => Ok(None),
            _ => Err(bad(format!("service {svc}: healthcheck must be an object"))),
        };
    };
    for k in o.keys() {
        if !matches!(
            k.as_str(),
            "test" | "interval" | "timeout" | "retries" | "start_period" | "disable"
        ) {
            return Err(bad(format!(
                "service {svc}: healthcheck key {k:?} is not supported"
            )));
        }
    }
    if boolean(
        svc,
        "healthcheck.disable",
        o.get("disable").unwrap_or(&Value::Null),
    )? {
        return Ok(Some(json!({"Test": ["NONE"]})));
    }
    let test = match o.get("test").unwrap_or(&Value::Null) {
        Value::String(s) => vec!["CMD-SHELL".to_string(), s.clone()],
        v => strings(svc, "healthcheck.test", v)?,
    };
    let retries = match o.get("retries") {
        None | Some(Value::Null) => 0,
        Some(v) => v.as_i64().ok_or_else(|| {
            bad(format!(
                "service {svc}: healthcheck retries must be a number"
            ))
        })?,
    };
    Ok(Some(json!({
        "Test": test,
        "Interval": duration_ns(svc, "interval", o.get("interval").unwrap_or(&Value::Null))?,
        "Timeout": duration_ns(svc, "timeout", o.get("timeout").unwrap_or(&Value::Null))?,
        "StartPeriod": duration_ns(svc, "start_period", o.get("start_period").unwrap_or(&Value::Null))?,
        "Retries": retries,
    })))
}

fn depends_on(svc: &str, v: &Value) -> Result<Vec<(String, String)>, ApiError> {
    match v {
        Value::Object(o) => o
            .iter()
            .map(|(name, cond)| {
                let c = match &cond["condition"] {
                    Value::Null => "service_started".to_string(),
                    Value::String(s)
                        if matches!(s.as_str(), "service_started" | "service_healthy") =>
                    {
                        s.clone()
                    }
                    other => {
                        return Err(bad(format!(
                            "service {svc}: depends_on {name}: condition {other} is not supported (service_started, service_healthy)"
                        )))
                    }
                };
                Ok((name.clone(), c))
            })
            .collect(),
        _ => Ok(strings(svc, "depends_on", v)?
            .into_iter()
            .map(|s| (s, "service_started".to_string()))
            .collect()),
    }
}

/// One service object of `ServiceConfigs.M`.
pub fn parse_service(name: &str, raw: &Value) -> Result<Service, ApiError> {
    let Some(o) = raw.as_object() else {
        return Err(bad(format!("service {name}: must be an object")));
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        return Err(bad(format!(
            "invalid service name {name:?}: only [a-zA-Z0-9._-] are allowed"
        )));
    }
    let mut s = Service {
        name: name.to_string(),
        ..Service::default()
    };
    let get = |k: &str| o.get(k).unwrap_or(&Value::Null);
    // Keys the client resolves (or should have) before posting.
    for (k, v) in o {
        if HONOURED.contains(&k.as_str()) || canonical(v).is_none() {
            continue;
        }
        let why = match k.as_str() {
            "extends" => continue, // libcompose merged it into the service already
            "env_file" => "the client reads env files and sends their variables in environment",
            "external_links" => {
                "a project's containers are on the project's network only (one network per VM)"
            }
            "build" => "hyper builds no images: push the image to a registry and name it in image",
            "networks" | "network_mode" => {
                "a project's containers share one network, the project's (one network per VM)"
            }
            _ => "hyperd does not honour it",
        };
        return Err(bad(format!(
            "service {name}: key {k:?} is not supported: {why}"
        )));
    }
    s.image = string(name, "image", get("image"))?;
    if s.image.is_empty() {
        return Err(bad(format!("service {name}: image is required")));
    }
    if !get("command").is_null() {
        s.command = Some(strings(name, "command", get("command"))?);
    }
    if !get("entrypoint").is_null() {
        s.entrypoint = Some(strings(name, "entrypoint", get("entrypoint"))?);
    }
    s.environment = key_values(name, "environment", get("environment"))?
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for l in strings(name, "links", get("links"))? {
        let (svc, alias) = l.split_once(':').unwrap_or((&l, &l));
        s.links.push((svc.to_string(), alias.to_string()));
    }
    s.depends_on = depends_on(name, get("depends_on"))?;
    for p in strings(name, "ports", get("ports"))? {
        s.ports.extend(parse_port(name, &p)?);
    }
    for e in strings(name, "expose", get("expose"))? {
        let (port, proto) = e.split_once('/').unwrap_or((&e, "tcp"));
        let (a, b) = port_range(name, port, "exposed")?;
        if !matches!(proto, "tcp" | "udp") {
            return Err(bad(format!("service {name}: invalid expose {e:?}")));
        }
        s.expose.extend((a..=b).map(|p| format!("{p}/{proto}")));
    }
    for v in strings(name, "volumes", get("volumes"))? {
        if !v.contains(':') {
            node::volumes::request::parse_bind(&format!("anonymous:{v}"))
                .map_err(|e| bad(format!("service {name}: {e}")))?;
            s.anonymous_volumes.push(v);
            continue;
        }
        // Host paths get the ordinary create's refusal, word for word.
        let wanted = node::volumes::request::parse_bind(&v).map_err(ApiError::from)?;
        let vol = wanted.name.unwrap_or_default();
        s.named_volumes
            .push((vol, wanted.destination, wanted.read_only));
    }
    let cn = string(name, "container_name", get("container_name"))?;
    if !cn.is_empty() {
        s.container_name = Some(node::validate::container_name(&cn).map_err(ApiError::from)?);
    }
    s.restart = restart_policy(name, &string(name, "restart", get("restart"))?)?;
    s.labels = key_values(name, "labels", get("labels"))?
        .into_iter()
        .collect();
    if let Some(k) = s.labels.keys().find(|k| k.starts_with("sh.hyper.compose.")) {
        return Err(bad(format!(
            "service {name}: label {k} is hyperd's own (it marks the project's containers)"
        )));
    }
    s.working_dir = string(name, "working_dir", get("working_dir"))?;
    s.tty = boolean(name, "tty", get("tty"))?;
    s.stdin_open = boolean(name, "stdin_open", get("stdin_open"))?;
    s.hostname = string(name, "hostname", get("hostname"))?;
    s.domainname = string(name, "domainname", get("domainname"))?;
    s.healthcheck = healthcheck(name, get("healthcheck"))?;
    let size = string(name, "size", get("size"))?;
    if !size.is_empty() {
        node::sizes::lookup(&size).map_err(ApiError::from)?;
        s.size = Some(size);
    }
    let fip = string(name, "fip", get("fip"))?;
    if fip == "auto" {
        return Err(bad(format!(
            "service {name}: fip \"auto\" is resolved by the client before it posts the project; give an allocated floating IP (hyper fip allocate 1)"
        )));
    }
    if !fip.is_empty() {
        s.fip = Some(fip.parse().map_err(|_| {
            bad(format!(
                "service {name}: fip {fip:?} is not an IPv4 address"
            ))
        })?);
    }
    s.security_groups = strings(name, "security_groups", get("security_groups"))?;
    s.noauto_volume = boolean(name, "noauto_volume", get("noauto_volume"))?;
    s.config = canonical(raw).unwrap_or(Value::Null);
    s.hash = config_hash(name, raw);
    Ok(s)
}

fn registry_host(key: &str) -> String {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let k = k.split('/').next().unwrap_or(k);
    match k {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".into()
        }
        k => k.to_string(),
    }
}

/// `auths` as Hyper's client sends it: its whole credential map, `username`/`password` in
/// clear or `auth` as base64 of `user:password`.
fn parse_auths(v: &Value) -> Result<BTreeMap<String, (String, String)>, ApiError> {
    let mut out = BTreeMap::new();
    let Some(o) = v.as_object() else {
        return match v {
            Value::Null => Ok(out),
            _ => Err(bad("auths must be an object")),
        };
    };
    for (key, a) in o {
        let field = |k: &str| a[k].as_str().unwrap_or("").to_string();
        let (mut user, mut pass) = (field("username"), field("password"));
        if user.is_empty() {
            use base64::Engine;
            if let Some(decoded) = base64::engine::general_purpose::STANDARD
                .decode(field("auth"))
                .ok()
                .and_then(|d| String::from_utf8(d).ok())
            {
                if let Some((u, p)) = decoded.split_once(':') {
                    (user, pass) = (u.to_string(), p.to_string());
                }
            }
        }
        if !user.is_empty() {
            let host = if field("serveraddress").is_empty() {
                key.clone()
            } else {
                field("serveraddress")
            };
            out.insert(registry_host(&host), (user, pass));
        }
    }
    Ok(out)
}

impl Project {
    /// The credentials for an image's registry (`docker.io` for bare names).
    pub fn auth_for(&self, registry: &str) -> Option<&(String, String)> {
        self.auths.get(&registry_host(registry))
    }
}

/// The wrapper body of `/compose/up` and `/compose/create`.
pub fn parse_project(body: &[u8]) -> Result<Project, ApiError> {
    let raw: Value = crate::routes::json_body(body, "compose project")?;
    let Some(o) = raw.as_object() else {
        return Err(bad("the compose project must be a JSON object"));
    };
    for k in o.keys() {
        if !matches!(
            k.as_str(),
            "ServiceConfigs" | "VolumeConfigs" | "NetworkConfigs" | "auths"
        ) {
            return Err(bad(format!("compose project: unknown key {k:?}")));
        }
    }
    let mut p = Project {
        auths: parse_auths(&raw["auths"])?,
        ..Project::default()
    };
    let services = match &raw["ServiceConfigs"]["M"] {
        Value::Object(m) => m,
        _ => return Err(bad("ServiceConfigs.M must hold the project's services")),
    };
    if services.is_empty() {
        return Err(bad("the project has no services"));
    }
    for (name, svc) in services {
        p.services.insert(name.clone(), parse_service(name, svc)?);
    }
    if let Some(vols) = raw["VolumeConfigs"].as_object() {
        for (name, v) in vols {
            let mut spec = VolumeSpec::default();
            if let Some(o) = v.as_object() {
                for (k, val) in o {
                    match k.as_str() {
                        "Driver" => {
                            let d = val.as_str().unwrap_or("");
                            if !matches!(d, "" | "hyper" | "local") {
                                return Err(bad(format!(
                                    "volume {name}: driver {d:?} is not supported (hyper)"
                                )));
                            }
                        }
                        "DriverOpts" => {
                            spec.driver_opts = serde_json::from_value(val.clone())
                                .ok()
                                .flatten()
                                .unwrap_or_default();
                        }
                        "External" => spec.external = val.as_bool().unwrap_or(false),
                        other => {
                            return Err(bad(format!(
                                "volume {name}: key {other:?} is not supported"
                            )))
                        }
                    }
                }
            }
            p.volumes.insert(name.clone(), spec);
        }
    }
    if let Some(nets) = raw["NetworkConfigs"].as_object() {
        if let Some(n) = nets.keys().next() {
            return Err(bad(format!(
                "network {n}: a project's containers share one network, which hyperd makes (PROJECT_default); top-level networks are not supported (one network per VM)"
            )));
        }
    }
    // Links and dependencies name services of the project; the order has no cycle.
    for s in p.services.values() {
        for (dep, _) in s.links.iter().chain(s.depends_on.iter()) {
            if !p.services.contains_key(dep) {
                return Err(bad(format!(
                    "service {} depends on {dep}, which is not a service of the project",
                    s.name
                )));
            }
        }
    }
    start_order(&p.services, &p.services.keys().cloned().collect::<Vec<_>>())?;
    Ok(p)
}

/// The services to act on (`wanted`, or all) with what they depend on, dependencies first.
pub fn start_order(
    services: &BTreeMap<String, Service>,
    wanted: &[String],
) -> Result<Vec<String>, ApiError> {
    fn visit(
        name: &str,
        services: &BTreeMap<String, Service>,
        done: &mut Vec<String>,
        path: &mut BTreeSet<String>,
    ) -> Result<(), ApiError> {
        if done.iter().any(|d| d == name) {
            return Ok(());
        }
        if !path.insert(name.to_string()) {
            return Err(bad(format!(
                "circular dependency between services involving {name}"
            )));
        }
        let s = services
            .get(name)
            .ok_or_else(|| bad(format!("no such service: {name}")))?;
        for (dep, _) in s.depends_on.iter().chain(s.links.iter()) {
            visit(dep, services, done, path)?;
        }
        path.remove(name);
        done.push(name.to_string());
        Ok(())
    }
    let mut done = Vec::new();
    for w in wanted {
        visit(w, services, &mut done, &mut BTreeSet::new())?;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::super::body::Placement;
    use super::*;

    fn svc(v: Value) -> Result<Service, ApiError> {
        parse_service("web", &v)
    }

    #[test]
    fn hyper_clients_wrapper_parses() {
        let body = json!({
            "ServiceConfigs": {"M": {
                "db": {"image": "busybox", "command": ["httpd", "-f"], "external_links": null,
                       "expose": ["80"], "size": "s1", "noauto_volume": true},
                "web": {"image": "busybox", "links": ["db:data"], "depends_on": ["db"],
                        "ports": ["8080:80"], "volumes": ["data:/data", "/srv/cache"], "external_links": null,
                        "environment": ["A=1"], "fip": "198.51.100.2", "security_groups": ["web"],
                        "restart": "on-failure:3", "labels": {"x": "y"}}
            }},
            "VolumeConfigs": {"data": {"Driver": "", "DriverOpts": {"size": "1"}, "External": false}},
            "NetworkConfigs": null,
            "auths": {"https://index.docker.io/v1/": {"username": "u", "password": "p", "email": "", "serveraddress": "https://index.docker.io/v1/"}}
        });
        let p = parse_project(body.to_string().as_bytes()).unwrap();
        assert_eq!(p.services.len(), 2);
        assert_eq!(p.volumes["data"].driver_opts["size"], "1");
        assert_eq!(p.auth_for("docker.io"), Some(&("u".into(), "p".into())));
        let web = &p.services["web"];
        assert_eq!(web.links, vec![("db".into(), "data".into())]);
        assert_eq!(web.fip, Some("198.51.100.2".parse().unwrap()));
        assert_eq!(
            start_order(&p.services, &["web".into()]).unwrap(),
            vec!["db", "web"]
        );
        let names: BTreeMap<String, String> = [("data".into(), "shop_data".into())].into();
        let targets: BTreeMap<String, String> = [("db".into(), "shop-db-1".into())].into();
        let b = web.create_body(&Placement {
            project: "shop",
            network: "shop_default",
            number: 1,
            volume_names: &names,
            link_targets: &targets,
            kept_volumes: &[],
        });
        assert_eq!(b["HostConfig"]["Binds"], json!(["shop_data:/data"]));
        assert_eq!(b["Volumes"], json!({"/srv/cache": {}}));
        assert_eq!(b["HostConfig"]["Links"], json!(["shop-db-1:data"]));
        assert_eq!(
            b["HostConfig"]["PortBindings"]["80/tcp"],
            json!([{"HostIp": "", "HostPort": "8080"}])
        );
        assert_eq!(b["Labels"][PROJECT_LABEL], "shop");
        assert_eq!(b["Labels"]["sh_hyper_sg_web"], "yes");
        assert_eq!(b["HostConfig"]["RestartPolicy"]["MaximumRetryCount"], 3);
        let db = p.services["db"].create_body(&Placement {
            project: "shop",
            network: "shop_default",
            number: 2,
            volume_names: &names,
            link_targets: &targets,
            kept_volumes: &[],
        });
        assert_eq!(db["Labels"]["sh_hyper_instancetype"], "s1");
        assert_eq!(db["Labels"]["sh_hyper_noauto_volume"], "true");
        assert_eq!(db["Labels"][NUMBER_LABEL], "2");
        assert_eq!(db["Cmd"], json!(["httpd", "-f"]));
    }

    #[test]
    fn unhonoured_keys_are_named() {
        for (i, (key, v)) in [
            ("cap_add", json!(["NET_ADMIN"])),
            ("build", json!(".")),
            ("env_file", json!(["a.env"])),
            ("external_links", json!(["other"])),
            ("networks", json!(["x"])),
            ("user", json!("nobody")),
        ]
        .into_iter()
        .enumerate()
        {
            let mut o = json!({"image": "busybox"});
            o[key] = v;
            let e = svc(o).unwrap_err();
            assert!(
                e.message.contains(&format!("{key:?}")),
                "test[{i}]: {}",
                e.message
            );
        }
        // Absent in all but name: what Hyper's client always sends.
        svc(json!({"image": "busybox", "external_links": null, "env_file": []})).unwrap();
    }

    #[test]
    fn refusals() {
        let e = svc(json!({"image": "busybox", "fip": "auto"})).unwrap_err();
        assert!(e.message.contains("auto"), "{}", e.message);
        let e = svc(json!({"image": "busybox", "volumes": ["/srv:/data"]})).unwrap_err();
        assert!(
            e.message.contains("host bind mounts are not supported"),
            "{}",
            e.message
        );
        assert_eq!(e.status, axum::http::StatusCode::NOT_IMPLEMENTED);
        let e = svc(json!({"image": "busybox", "volumes": ["./x:/data"]})).unwrap_err();
        assert!(e.message.contains("host bind mounts"), "{}", e.message);
        svc(json!({"command": ["x"]})).unwrap_err();
        svc(json!({"image": "busybox", "size": "zz9"})).unwrap_err();
        svc(json!({"image": "busybox", "restart": "sometimes"})).unwrap_err();
        let cyc = json!({"ServiceConfigs": {"M": {
            "a": {"image": "busybox", "depends_on": ["b"]},
            "b": {"image": "busybox", "links": ["a"]}}}});
        let e = parse_project(cyc.to_string().as_bytes()).unwrap_err();
        assert!(e.message.contains("circular"), "{}", e.message);
        let nets = json!({"ServiceConfigs": {"M": {"a": {"image": "busybox"}}},
                          "NetworkConfigs": {"front": {"Driver": ""}}});
        let e = parse_project(nets.to_string().as_bytes()).unwrap_err();
        assert!(e.message.contains("front"), "{}", e.message);
    }

    #[test]
    fn hash_follows_the_config_not_its_spelling() {
        let a = json!({"image": "busybox", "command": ["a"], "external_links": null});
        let b = json!({"command": ["a"], "image": "busybox", "tty": false, "labels": {}});
        let c = json!({"image": "busybox", "command": ["b"]});
        assert_eq!(config_hash("s", &a), config_hash("s", &b));
        assert_ne!(config_hash("s", &a), config_hash("s", &c));
        assert_ne!(config_hash("s", &a), config_hash("t", &a));
    }

    #[test]
    fn ports() {
        let p = parse_port("s", "127.0.0.1:8000-8001:80-81/udp").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].host_port, Some(8001));
        assert_eq!(p[1].container_port, 81);
        assert_eq!(p[1].proto, "udp");
        assert_eq!(parse_port("s", "80").unwrap()[0].host_port, None);
        parse_port("s", "80/sctp").unwrap_err();
        parse_port("s", "8000-8002:80").unwrap_err();
    }

    #[test]
    fn durations() {
        assert_eq!(
            duration_ns("s", "k", &json!("1m30s")).unwrap(),
            90_000_000_000
        );
        assert_eq!(duration_ns("s", "k", &json!("500ms")).unwrap(), 500_000_000);
        assert_eq!(duration_ns("s", "k", &json!(2)).unwrap(), 2_000_000_000);
        duration_ns("s", "k", &json!("5x")).unwrap_err();
    }

    #[test]
    fn project_names() {
        assert_eq!(project_name("My App").unwrap(), "myapp");
        assert_eq!(project_name("shop").unwrap(), "shop");
        project_name("...").unwrap_err();
        assert_eq!(service_list(Some(&"a}{b".to_string())), vec!["a", "b"]);
    }
}
