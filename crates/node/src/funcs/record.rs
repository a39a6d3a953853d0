//! A function's record and its wire form: Hyper's `Func` object (hyper-api `types.Func`), read
//! field by field so that anything we do not act on is refused by name, never dropped.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::{sizes, validate, Result, RuntimeError};

/// Hyper's default call timeout (`hyper func create --timeout`), in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 300;
/// The longest a call may run.
pub const MAX_TIMEOUT_SECS: u64 = 3600;
/// Our extension: how many calls of a function may run at once (each in its own VM).
pub const CONCURRENCY_FIELD: &str = "MaxConcurrency";
pub const DEFAULT_CONCURRENCY: u32 = 4;
pub const MAX_CONCURRENCY: u32 = 50;
/// Hyper's limit on a function name.
const MAX_NAME: usize = 255;

/// The container settings of a function (Hyper's `FuncConfig` and `FuncHostConfig`, the
/// fields we honour).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FuncSpec {
    pub image: String,
    pub cmd: Vec<String>,
    pub entrypoint: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub tty: bool,
    pub labels: BTreeMap<String, String>,
    pub exposed_ports: BTreeMap<String, Value>,
    pub stop_signal: String,
    pub links: Vec<String>,
    pub size: String,
}

/// What the store keeps for a function: `/funcs/{tenant}/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FuncRecord {
    pub tenant: String,
    pub name: String,
    /// The call URL's secret: whoever knows it may call the function.
    pub uuid: String,
    pub created: DateTime<Utc>,
    pub timeout_secs: u64,
    pub max_concurrency: u32,
    pub spec: FuncSpec,
}

pub fn key(tenant: &str, name: &str) -> String {
    format!("/funcs/{tenant}/{name}")
}

pub fn prefix(tenant: &str) -> String {
    format!("/funcs/{tenant}/")
}

/// A fresh call URL secret: 122 random bits in the UUID v4 text form Hyper's URLs carry.
pub fn new_uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Compares two secrets in time that depends on their lengths only.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Hyper's rule: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 255 characters.
pub fn check_name(name: &str) -> Result<()> {
    let b = name.as_bytes();
    let inner = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let ok = !b.is_empty()
        && b.len() <= MAX_NAME
        && inner(&b[0])
        && inner(&b[b.len() - 1])
        && b.iter().all(|c| inner(c) || *c == b'-');
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::Invalid(format!(
            "invalid function name {name:?}: use lower-case letters, digits and '-' ([a-z0-9]([-a-z0-9]*[a-z0-9])?), at most {MAX_NAME} characters"
        )))
    }
}

/// A random name in Hyper's form (`clever-euler42`).
pub fn random_name() -> String {
    validate::random_name().replace('_', "-")
}

/// What a create asks for, read from Hyper's `Func` body.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateRequest {
    pub name: String,
    pub timeout_secs: u64,
    pub max_concurrency: u32,
    pub spec: FuncSpec,
}

/// What an update asks for (Hyper's client sends only what changes).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpdateRequest {
    pub size: Option<String>,
    pub timeout_secs: Option<u64>,
    pub env: Option<Vec<String>>,
    pub max_concurrency: Option<u32>,
    pub refresh: bool,
}

fn object<'a>(v: &'a Value, what: &str) -> Result<Option<&'a Map<String, Value>>> {
    match v {
        Value::Null => Ok(None),
        Value::Object(m) => Ok(Some(m)),
        _ => Err(RuntimeError::Invalid(format!("{what} must be an object"))),
    }
}

/// Refuses keys that are not in `known` (501: we do not do them), naming each.
fn only_known(m: &Map<String, Value>, known: &[&str], what: &str) -> Result<()> {
    let unknown: Vec<String> = m
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .map(|k| format!("{what}{k}"))
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(RuntimeError::Unsupported(format!(
            "functions do not support {}: leave it unset",
            unknown.join(", ")
        )))
    }
}

fn string(v: &Value, what: &str) -> Result<String> {
    match v {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        _ => Err(RuntimeError::Invalid(format!("{what} must be a string"))),
    }
}

/// Docker's StrSlice: a string or a list of strings.
fn strings(v: &Value, what: &str) -> Result<Vec<String>> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(String::from)
                    .ok_or_else(|| RuntimeError::Invalid(format!("{what} must hold strings")))
            })
            .collect(),
        _ => Err(RuntimeError::Invalid(format!(
            "{what} must be a list of strings"
        ))),
    }
}

fn boolean(v: &Value, what: &str) -> Result<bool> {
    match v {
        Value::Null => Ok(false),
        Value::Bool(b) => Ok(*b),
        _ => Err(RuntimeError::Invalid(format!(
            "{what} must be true or false"
        ))),
    }
}

fn timeout(v: &Value) -> Result<Option<u64>> {
    match v {
        Value::Null => Ok(None),
        // Hyper's client sends 0 for "unchanged" (update) and its default 300 otherwise.
        v if v.as_i64() == Some(0) => Ok(None),
        v => match v.as_i64() {
            Some(n) if n >= 1 && n as u64 <= MAX_TIMEOUT_SECS => Ok(Some(n as u64)),
            _ => Err(RuntimeError::Invalid(format!(
                "invalid Timeout {v}: give seconds from 1 to {MAX_TIMEOUT_SECS}"
            ))),
        },
    }
}

fn concurrency(v: &Value) -> Result<Option<u32>> {
    match v {
        Value::Null => Ok(None),
        v => match v.as_u64() {
            Some(n) if n >= 1 && n <= u64::from(MAX_CONCURRENCY) => Ok(Some(n as u32)),
            _ => Err(RuntimeError::Invalid(format!(
                "invalid {CONCURRENCY_FIELD} {v}: give how many calls may run at once, 1 to {MAX_CONCURRENCY}"
            ))),
        },
    }
}

fn size(v: &Value) -> Result<Option<String>> {
    let s = string(v, "ContainerSize")?;
    if s.is_empty() {
        return Ok(None);
    }
    sizes::lookup(&s)?;
    Ok(Some(s))
}

const TOP: &[&str] = &[
    "Name",
    "ContainerSize",
    "Timeout",
    "UUID",
    "Created",
    "Refresh",
    "Config",
    "HostConfig",
    "NetworkingConfig",
    CONCURRENCY_FIELD,
];
const CONFIG: &[&str] = &[
    "Tty",
    "Env",
    "ExposedPorts",
    "Cmd",
    "Image",
    "Entrypoint",
    "WorkingDir",
    "Labels",
    "StopSignal",
];

/// The top-level fields only the server sets: sent empty (or as Go's zero time) by Hyper's
/// client, refused when a client tries to choose them.
fn server_fields(m: &Map<String, Value>) -> Result<()> {
    if !string(m.get("UUID").unwrap_or(&Value::Null), "UUID")?.is_empty() {
        return Err(RuntimeError::Invalid(
            "UUID is chosen by the server: leave it unset (update with Refresh:true for a new one)"
                .into(),
        ));
    }
    let created = string(m.get("Created").unwrap_or(&Value::Null), "Created")?;
    if !created.is_empty() && !created.starts_with("0001-01-01") {
        return Err(RuntimeError::Invalid(
            "Created is set by the server: leave it unset".into(),
        ));
    }
    Ok(())
}

/// Reads a create body (`POST /funcs/create`).
pub fn parse_create(body: &Value) -> Result<CreateRequest> {
    let m = object(body, "the function")?
        .ok_or_else(|| RuntimeError::Invalid("the function must be a JSON object".into()))?;
    only_known(m, TOP, "")?;
    let get = |k: &str| m.get(k).cloned().unwrap_or(Value::Null);
    server_fields(m)?;
    let name = string(&get("Name"), "Name")?;
    let name = if name.is_empty() { random_name() } else { name };
    check_name(&name)?;
    let empty = Map::new();
    let config = object(m.get("Config").unwrap_or(&Value::Null), "Config")?.unwrap_or(&empty);
    only_known(config, CONFIG, "Config.")?;
    let c = |k: &str| config.get(k).cloned().unwrap_or(Value::Null);
    let image = string(&c("Image"), "Config.Image")?;
    if image.is_empty() {
        return Err(RuntimeError::Invalid(
            "a function needs an image (Config.Image)".into(),
        ));
    }
    let env = strings(&c("Env"), "Config.Env")?;
    validate::env(&env)?;
    let labels: BTreeMap<String, String> = match c("Labels") {
        Value::Null => BTreeMap::new(),
        v => serde_json::from_value(v)
            .map_err(|_| RuntimeError::Invalid("Config.Labels must map names to strings".into()))?,
    };
    let exposed_ports: BTreeMap<String, Value> = match c("ExposedPorts") {
        Value::Null => BTreeMap::new(),
        v => serde_json::from_value(v).map_err(|_| {
            RuntimeError::Invalid("Config.ExposedPorts must be an object of ports".into())
        })?,
    };
    let stop_signal = string(&c("StopSignal"), "Config.StopSignal")?;
    if !stop_signal.is_empty() {
        validate::signal(&stop_signal)?;
    }
    let links = host_config(m.get("HostConfig").unwrap_or(&Value::Null))?;
    networking_config(m.get("NetworkingConfig").unwrap_or(&Value::Null))?;
    let spec = FuncSpec {
        image,
        cmd: strings(&c("Cmd"), "Config.Cmd")?,
        entrypoint: strings(&c("Entrypoint"), "Config.Entrypoint")?,
        env,
        working_dir: string(&c("WorkingDir"), "Config.WorkingDir")?,
        tty: boolean(&c("Tty"), "Config.Tty")?,
        labels,
        exposed_ports,
        stop_signal,
        links,
        size: size(&get("ContainerSize"))?.unwrap_or_else(|| sizes::DEFAULT_SIZE.into()),
    };
    Ok(CreateRequest {
        name,
        timeout_secs: timeout(&get("Timeout"))?.unwrap_or(DEFAULT_TIMEOUT_SECS),
        max_concurrency: concurrency(&get(CONCURRENCY_FIELD))?.unwrap_or(DEFAULT_CONCURRENCY),
        spec,
    })
}

/// `HostConfig`: links are honoured; the rest would need one VM's resources shared by calls
/// that run at once, or a network other than the tenant's default.
fn host_config(v: &Value) -> Result<Vec<String>> {
    let Some(m) = object(v, "HostConfig")? else {
        return Ok(Vec::new());
    };
    let mut refused = Vec::new();
    for (k, v) in m {
        let set = match v {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
            Value::String(s) => !s.is_empty(),
            _ => true,
        };
        match k.as_str() {
            "Links" => {}
            "NetworkMode" => {
                let mode = v.as_str().unwrap_or("");
                if !matches!(mode, "" | "bridge" | "default") {
                    refused.push(format!(
                        "HostConfig.NetworkMode {mode:?} (calls run on the tenant's default network)"
                    ));
                }
            }
            "PortBindings" | "PublishAllPorts" if set => refused.push(format!(
                "HostConfig.{k} (calls run at once in VMs of their own: they cannot share a published port)"
            )),
            "VolumesFrom" if set => refused.push(
                "HostConfig.VolumesFrom (a volume is attached to one running VM at a time, and calls run at once)"
                    .to_string(),
            ),
            "PortBindings" | "PublishAllPorts" | "VolumesFrom" => {}
            _ => refused.push(format!("HostConfig.{k}")),
        }
    }
    if !refused.is_empty() {
        return Err(RuntimeError::Unsupported(format!(
            "functions do not support {}",
            refused.join(", ")
        )));
    }
    strings(m.get("Links").unwrap_or(&Value::Null), "HostConfig.Links")
}

/// `NetworkingConfig`: Hyper's client sends `{"EndpointsConfig":{}}`; endpoint settings are not
/// honoured.
fn networking_config(v: &Value) -> Result<()> {
    let Some(m) = object(v, "NetworkingConfig")? else {
        return Ok(());
    };
    only_known(m, &["EndpointsConfig"], "NetworkingConfig.")?;
    match m.get("EndpointsConfig") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(o)) if o.is_empty() => Ok(()),
        Some(_) => Err(RuntimeError::Unsupported(
            "functions do not support NetworkingConfig.EndpointsConfig (calls run on the tenant's default network)"
                .into(),
        )),
    }
}

/// Reads an update body (`PUT /funcs/{name}`): Hyper's client sends `Name`, and only what
/// changes: `ContainerSize`, `Timeout` (0: unchanged), `Config.Env` (`[]` clears it),
/// `Refresh`.
pub fn parse_update(name: &str, body: &Value) -> Result<UpdateRequest> {
    let m = object(body, "the function")?
        .ok_or_else(|| RuntimeError::Invalid("the update must be a JSON object".into()))?;
    only_known(m, TOP, "")?;
    server_fields(m)?;
    let get = |k: &str| m.get(k).cloned().unwrap_or(Value::Null);
    let sent_name = string(&get("Name"), "Name")?;
    if !sent_name.is_empty() && sent_name != name {
        return Err(RuntimeError::Invalid(format!(
            "a function cannot be renamed ({name} to {sent_name}): create a new one"
        )));
    }
    let mut env = None;
    if let Some(config) = object(m.get("Config").unwrap_or(&Value::Null), "Config")? {
        // Go's client always sends `Config`, empty when only other fields change.
        only_known(config, &["Env"], "an update's Config.")?;
        if let Some(v) = config.get("Env") {
            let vars = strings(v, "Config.Env")?;
            validate::env(&vars)?;
            env = Some(vars);
        }
    }
    for k in ["HostConfig", "NetworkingConfig"] {
        match m.get(k) {
            None | Some(Value::Null) => {}
            Some(Value::Object(o)) if o.is_empty() || o.values().all(Value::is_null) => {}
            Some(_) => {
                return Err(RuntimeError::Unsupported(format!(
                    "an update cannot change {k}: remove the function and create it again"
                )))
            }
        }
    }
    Ok(UpdateRequest {
        size: size(&get("ContainerSize"))?,
        timeout_secs: timeout(&get("Timeout"))?,
        env,
        max_concurrency: concurrency(&get(CONCURRENCY_FIELD))?,
        refresh: boolean(&get("Refresh"), "Refresh")?,
    })
}

/// Hyper's `Func` object, with our extension field beside it.
pub fn to_json(r: &FuncRecord) -> Value {
    let s = &r.spec;
    let mut config = json!({"Image": s.image, "Env": s.env, "Cmd": s.cmd, "Tty": s.tty});
    if !s.entrypoint.is_empty() {
        config["Entrypoint"] = json!(s.entrypoint);
    }
    if !s.working_dir.is_empty() {
        config["WorkingDir"] = json!(s.working_dir);
    }
    if !s.labels.is_empty() {
        config["Labels"] = json!(s.labels);
    }
    if !s.exposed_ports.is_empty() {
        config["ExposedPorts"] = json!(s.exposed_ports);
    }
    if !s.stop_signal.is_empty() {
        config["StopSignal"] = json!(s.stop_signal);
    }
    let mut host = json!({"NetworkMode": "bridge"});
    if !s.links.is_empty() {
        host["Links"] = json!(s.links);
    }
    json!({
        "Name": r.name,
        "ContainerSize": s.size,
        "Timeout": r.timeout_secs,
        "UUID": r.uuid,
        "Created": r.created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "Config": config,
        "HostConfig": host,
        "NetworkingConfig": {"EndpointsConfig": {}},
        CONCURRENCY_FIELD: r.max_concurrency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Hyper's client 1.10.17 sends for `hyper func create --name echo busybox cat`.
    fn hyper_create() -> Value {
        json!({"Name":"echo","ContainerSize":"s4","Timeout":300,"Created":"0001-01-01T00:00:00Z",
            "Config":{"Env":[],"Cmd":["cat"],"Image":"busybox","StopSignal":"SIGTERM"},
            "HostConfig":{"NetworkMode":"bridge"},"NetworkingConfig":{"EndpointsConfig":{}}})
    }

    #[test]
    fn hyper_clients_create_is_read() {
        let r = parse_create(&hyper_create()).unwrap();
        assert_eq!(r.name, "echo");
        assert_eq!(r.timeout_secs, 300);
        assert_eq!(r.max_concurrency, DEFAULT_CONCURRENCY);
        assert_eq!(r.spec.cmd, ["cat"]);
        assert_eq!(r.spec.size, "s4");
        assert_eq!(r.spec.stop_signal, "SIGTERM");
    }

    #[test]
    fn refusals_name_the_field() {
        let cases: &[(&str, Value, &str)] = &[
            ("/Name", json!("Bad_Name"), "invalid function name"),
            ("/Name", json!("-x"), "invalid function name"),
            ("/Timeout", json!(0x7fff_ffff), "invalid Timeout"),
            ("/Timeout", json!(-1), "invalid Timeout"),
            ("/ContainerSize", json!("xl9"), "size"),
            ("/MaxConcurrency", json!(0), "invalid MaxConcurrency"),
            ("/Config/Image", json!(""), "needs an image"),
            ("/Config/User", json!("root"), "Config.User"),
            (
                "/HostConfig/PortBindings",
                json!({"80/tcp":[{"HostPort":"80"}]}),
                "PortBindings",
            ),
            ("/HostConfig/VolumesFrom", json!(["c"]), "VolumesFrom"),
            ("/HostConfig/NetworkMode", json!("host"), "NetworkMode"),
            (
                "/HostConfig/Privileged",
                json!(true),
                "HostConfig.Privileged",
            ),
            (
                "/NetworkingConfig/EndpointsConfig",
                json!({"n":{}}),
                "EndpointsConfig",
            ),
            ("/UUID", json!("x"), "UUID is chosen by the server"),
            ("/Bogus", json!(1), "Bogus"),
        ];
        for (i, (ptr, v, want)) in cases.iter().enumerate() {
            let mut body = hyper_create();
            let (parent, key) = ptr.rsplit_once('/').unwrap();
            let target = if parent.is_empty() {
                &mut body
            } else {
                body.pointer_mut(parent).unwrap()
            };
            target[key] = v.clone();
            let e = parse_create(&body).unwrap_err().to_string();
            assert!(e.contains(want), "test[{i}] {ptr}: {e}");
        }
    }

    #[test]
    fn an_update_is_partial() {
        let u = parse_update(
            "f",
            &json!({"Name":"f","Timeout":0,"Created":"0001-01-01T00:00:00Z","Config":{},"HostConfig":{},"NetworkingConfig":{"EndpointsConfig":null}}),
        )
        .unwrap();
        assert_eq!(u, UpdateRequest::default());
        let u = parse_update(
            "f",
            &json!({"Name":"f","ContainerSize":"s2","Timeout":5,"Refresh":true,"Config":{"Env":[]},"MaxConcurrency":1}),
        )
        .unwrap();
        assert_eq!(u.size.as_deref(), Some("s2"));
        assert_eq!(u.timeout_secs, Some(5));
        assert_eq!(u.env, Some(vec![]));
        assert_eq!(u.max_concurrency, Some(1));
        assert!(u.refresh);
        assert!(parse_update("f", &json!({"Name":"g"})).is_err());
        assert!(parse_update("f", &json!({"Config":{"Cmd":["x"]}}))
            .unwrap_err()
            .to_string()
            .contains("Config.Cmd"));
    }

    #[test]
    fn secrets() {
        let u = new_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, new_uuid());
        assert!(same_secret(&u, &u.clone()));
        assert!(!same_secret(&u, &new_uuid()));
        assert!(!same_secret(&u, &u[1..]));
        assert!(random_name().chars().all(|c| c != '_'));
        check_name(&random_name()).unwrap();
    }
}
