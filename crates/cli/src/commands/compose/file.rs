//! The compose file, read the way Hyper's client (libcompose) reads it and turned into the
//! project it posts to `/compose/up`: versions 1, 2 and 3, `${VAR}` interpolation from the
//! environment, `env_file` merged into `environment`, service keys in libcompose's
//! snake_case. Unlike Hyper's client, a key hyperd cannot honour is an error naming it,
//! never dropped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::CliError;

/// Service keys posted as they are (after normalisation).
const SERVICE_KEYS: &[&str] = &[
    "image",
    "command",
    "entrypoint",
    "environment",
    "env_file",
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

/// Why a key hyperd cannot honour is refused.
fn why_not(key: &str) -> &'static str {
    match key {
        "build" => "hyper builds no images: push the image to a registry and name it in image",
        "networks" | "network_mode" | "external_links" => {
            "a project's containers share one network, the project's (each VM has one network interface)"
        }
        "extends" => "extends is not supported: write the service out in full",
        "deploy" => "use hyper compose scale and size instead of deploy",
        "mem_limit" | "cpus" | "cpu_shares" | "cpu_quota" | "cpuset" | "memswap_limit" => {
            "a container's resources come from its size (size: s1 ... l3)"
        }
        "privileged" | "cap_add" | "cap_drop" | "devices" | "security_opt" | "pid" | "ipc"
        | "userns_mode" | "cgroup_parent" => "each container is a VM of its own: host-level options do not apply",
        _ => "hyper compose does not honour it",
    }
}

/// A parsed project: what is posted, and what the client-side commands need.
#[derive(Debug, Clone)]
pub struct ComposeFile {
    pub path: PathBuf,
    /// `ServiceConfigs.M`: service name -> wire object.
    pub services: BTreeMap<String, Value>,
    /// `VolumeConfigs`
    pub volumes: BTreeMap<String, Value>,
    /// Variables that were not set (docker-compose warns about them).
    pub unset: Vec<String>,
}

fn err(msg: impl Into<String>) -> CliError {
    CliError::Msg(msg.into())
}

/// `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?err}`, `$VAR`, `$$`.
pub fn interpolate(
    s: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    unset: &mut Vec<String>,
) -> Result<String, CliError> {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('$') => {
                chars.next();
                out.push('$');
            }
            Some('{') => {
                chars.next();
                let mut inner = String::new();
                let mut closed = false;
                for c in chars.by_ref() {
                    if c == '}' {
                        closed = true;
                        break;
                    }
                    inner.push(c);
                }
                if !closed {
                    return Err(err(format!("invalid interpolation format in {s:?}")));
                }
                let (name, op, arg) = if let Some(i) = inner.find([':', '-', '?']) {
                    let (n, rest) = inner.split_at(i);
                    let (op, arg) = if let Some(r) = rest.strip_prefix(":-") {
                        (":-", r)
                    } else if let Some(r) = rest.strip_prefix(":?") {
                        (":?", r)
                    } else if let Some(r) = rest.strip_prefix('-') {
                        ("-", r)
                    } else if let Some(r) = rest.strip_prefix('?') {
                        ("?", r)
                    } else {
                        return Err(err(format!("invalid interpolation format in {s:?}")));
                    };
                    (n.to_string(), op, arg.to_string())
                } else {
                    (inner.clone(), "", String::new())
                };
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(err(format!("invalid interpolation format in {s:?}")));
                }
                let v = lookup(&name);
                let value = match (op, v) {
                    (":-", Some(v)) if !v.is_empty() => v,
                    (":-", _) => arg,
                    ("-", Some(v)) => v,
                    ("-", None) => arg,
                    (":?", Some(v)) if !v.is_empty() => v,
                    ("?", Some(v)) => v,
                    (":?" | "?", _) => {
                        return Err(err(format!(
                            "required variable {name} is missing a value: {arg}"
                        )))
                    }
                    (_, Some(v)) => v,
                    (_, None) => {
                        unset.push(name);
                        String::new()
                    }
                };
                out.push_str(&value);
            }
            Some(c) if c.is_ascii_alphabetic() || *c == '_' => {
                let mut name = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        name.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                match lookup(&name) {
                    Some(v) => out.push_str(&v),
                    None => unset.push(name),
                }
            }
            _ => return Err(err(format!("invalid interpolation format in {s:?}"))),
        }
    }
    Ok(out)
}

fn interpolate_all(
    v: &mut Value,
    lookup: &dyn Fn(&str) -> Option<String>,
    unset: &mut Vec<String>,
) -> Result<(), CliError> {
    match v {
        Value::String(s) => *s = interpolate(s, lookup, unset)?,
        Value::Array(a) => {
            for x in a {
                interpolate_all(x, lookup, unset)?;
            }
        }
        Value::Object(o) => {
            for x in o.values_mut() {
                interpolate_all(x, lookup, unset)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// An env file: `KEY=VALUE` lines, `#` comments, blank lines; `KEY` alone takes the value
/// from the environment (as docker-compose does).
pub fn parse_env_file(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Vec<(String, Option<String>)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let l = l.strip_prefix("export ").unwrap_or(l);
            match l.split_once('=') {
                Some((k, v)) => {
                    let v = v.trim();
                    let v = v
                        .strip_prefix('"')
                        .and_then(|x| x.strip_suffix('"'))
                        .or_else(|| v.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')))
                        .unwrap_or(v);
                    (k.trim().to_string(), Some(v.to_string()))
                }
                None => (l.to_string(), lookup(l)),
            }
        })
        .collect()
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn string_list(svc: &str, key: &str, v: &Value) -> Result<Vec<String>, CliError> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(a) => a
            .iter()
            .map(|x| {
                scalar(x)
                    .ok_or_else(|| err(format!("service {svc}: {key} must be a list of strings")))
            })
            .collect(),
        v => scalar(v)
            .map(|s| vec![s])
            .ok_or_else(|| err(format!("service {svc}: {key} must be a string or a list"))),
    }
}

/// `command` / `entrypoint`: a list as it is, a string split the way a shell would.
fn command(svc: &str, key: &str, v: &Value) -> Result<Value, CliError> {
    match v {
        Value::String(s) => shlex::split(s)
            .map(|w| json!(w))
            .ok_or_else(|| err(format!("service {svc}: {key}: unbalanced quotes in {s:?}"))),
        _ => Ok(json!(string_list(svc, key, v)?)),
    }
}

/// A map or a `K=V` list, as `K=V` pairs in order; `K` alone (list) or `K:` (map) takes the
/// value from the environment, or is left out when unset.
fn env_pairs(
    svc: &str,
    key: &str,
    v: &Value,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, Option<String>)>, CliError> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Object(o) => Ok(o
            .iter()
            .map(|(k, v)| match v {
                Value::Null => (k.clone(), lookup(k)),
                v => (k.clone(), scalar(v)),
            })
            .collect()),
        Value::Array(_) => Ok(string_list(svc, key, v)?
            .into_iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => {
                    let val = lookup(&kv);
                    (kv, val)
                }
            })
            .collect()),
        _ => Err(err(format!("service {svc}: {key} must be a map or a list"))),
    }
}

fn long_port(svc: &str, v: &Value) -> Result<String, CliError> {
    let o = v
        .as_object()
        .ok_or_else(|| err(format!("service {svc}: invalid ports entry {v}")))?;
    for k in o.keys() {
        if !matches!(
            k.as_str(),
            "target" | "published" | "protocol" | "mode" | "host_ip"
        ) {
            return Err(err(format!(
                "service {svc}: ports: key {k:?} is not supported"
            )));
        }
    }
    let target = o
        .get("target")
        .and_then(scalar)
        .ok_or_else(|| err(format!("service {svc}: ports: target is required")))?;
    let mut s = String::new();
    if let Some(ip) = o.get("host_ip").and_then(scalar) {
        s.push_str(&ip);
        s.push(':');
    }
    if let Some(p) = o.get("published").and_then(scalar) {
        s.push_str(&p);
        s.push(':');
    } else if !s.is_empty() {
        s.push(':');
    }
    s.push_str(&target);
    if let Some(proto) = o.get("protocol").and_then(scalar) {
        s.push('/');
        s.push_str(&proto);
    }
    Ok(s)
}

fn long_volume(svc: &str, v: &Value) -> Result<String, CliError> {
    let o = v
        .as_object()
        .ok_or_else(|| err(format!("service {svc}: invalid volumes entry {v}")))?;
    for k in o.keys() {
        if !matches!(k.as_str(), "type" | "source" | "target" | "read_only") {
            return Err(err(format!(
                "service {svc}: volumes: key {k:?} is not supported"
            )));
        }
    }
    let target = o
        .get("target")
        .and_then(scalar)
        .ok_or_else(|| err(format!("service {svc}: volumes: target is required")))?;
    let ro = if o.get("read_only").and_then(Value::as_bool) == Some(true) {
        ":ro"
    } else {
        ""
    };
    match (
        o.get("type").and_then(Value::as_str),
        o.get("source").and_then(scalar),
    ) {
        (Some("tmpfs"), _) => Err(err(format!(
            "service {svc}: volumes: tmpfs is not supported"
        ))),
        (_, Some(src)) if !src.is_empty() => Ok(format!("{src}:{target}{ro}")),
        _ => Ok(target),
    }
}

/// One service of the file, normalised into libcompose's wire form.
fn service(
    name: &str,
    raw: &Value,
    dir: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Value, CliError> {
    let o = raw
        .as_object()
        .ok_or_else(|| err(format!("service {name} must be a mapping")))?;
    for k in o.keys() {
        if !SERVICE_KEYS.contains(&k.as_str()) && !k.starts_with("x-") {
            return Err(err(format!(
                "service {name}: key {k:?} is not supported: {}",
                why_not(k)
            )));
        }
    }
    let mut out = Map::new();
    let get = |k: &str| o.get(k).unwrap_or(&Value::Null);
    if get("image").is_null() {
        return Err(err(format!("service {name}: image is required")));
    }
    // env_file first, environment over it.
    let mut env: Vec<(String, Option<String>)> = Vec::new();
    for f in string_list(name, "env_file", get("env_file"))? {
        let p = dir.join(&f);
        let text = std::fs::read_to_string(&p)
            .map_err(|e| err(format!("service {name}: env_file {}: {e}", p.display())))?;
        env.extend(parse_env_file(&text, lookup));
    }
    env.extend(env_pairs(name, "environment", get("environment"), lookup)?);
    let mut merged: Vec<(String, String)> = Vec::new();
    for (k, v) in env {
        merged.retain(|(x, _)| x != &k);
        if let Some(v) = v {
            merged.push((k, v));
        }
    }
    if !merged.is_empty() {
        out.insert(
            "environment".into(),
            json!(merged
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()),
        );
    }
    for (k, v) in o {
        let v = match k.as_str() {
            "environment" | "env_file" => continue,
            _ if k.starts_with("x-") => continue,
            "command" | "entrypoint" => command(name, k, v)?,
            "links" | "expose" | "security_groups" => json!(string_list(name, k, v)?),
            "depends_on" => match v {
                Value::Object(m) => {
                    for (dep, cond) in m {
                        if let Some(c) = cond.as_object() {
                            if let Some(k) = c.keys().find(|k| *k != "condition") {
                                return Err(err(format!(
                                    "service {name}: depends_on {dep}: key {k:?} is not supported"
                                )));
                            }
                        }
                    }
                    // Hyper's client sends a list; the conditions only matter when one is
                    // service_healthy, which hyperd honours in the map form.
                    if m.values()
                        .all(|c| c["condition"].is_null() || c["condition"] == "service_started")
                    {
                        json!(m.keys().collect::<Vec<_>>())
                    } else {
                        v.clone()
                    }
                }
                _ => json!(string_list(name, k, v)?),
            },
            "ports" => json!(v
                .as_array()
                .map(|a| a
                    .iter()
                    .map(|p| match scalar(p) {
                        Some(s) => Ok(s),
                        None => long_port(name, p),
                    })
                    .collect::<Result<Vec<_>, _>>())
                .transpose()?
                .unwrap_or_default()),
            "volumes" => json!(v
                .as_array()
                .map(|a| a
                    .iter()
                    .map(|p| match p {
                        Value::String(s) => Ok(s.clone()),
                        _ => long_volume(name, p),
                    })
                    .collect::<Result<Vec<_>, _>>())
                .transpose()?
                .unwrap_or_default()),
            "labels" => {
                let pairs = env_pairs(name, k, v, &|_| None)?;
                Value::Object(
                    pairs
                        .into_iter()
                        .map(|(k, v)| (k, json!(v.unwrap_or_default())))
                        .collect(),
                )
            }
            "tty" | "stdin_open" | "noauto_volume" => match v {
                Value::Bool(_) | Value::Null => v.clone(),
                Value::String(s) if matches!(s.as_str(), "true" | "false") => json!(s == "true"),
                _ => return Err(err(format!("service {name}: {k} must be true or false"))),
            },
            "restart" => match v {
                Value::Bool(false) => json!("no"),
                v => json!(scalar(v).unwrap_or_default()),
            },
            "healthcheck" => v.clone(),
            _ => match scalar(v) {
                Some(s) => json!(s),
                None if v.is_null() => continue,
                None => return Err(err(format!("service {name}: {k} must be a string"))),
            },
        };
        out.insert(k.clone(), v);
    }
    Ok(Value::Object(out))
}

impl ComposeFile {
    /// The file to read: `-f`, or docker-compose.yml / .yaml (and the compose.* names) in
    /// the current directory.
    pub fn locate(given: Option<&Path>) -> Result<PathBuf, CliError> {
        if let Some(p) = given {
            return Ok(p.to_path_buf());
        }
        for n in [
            "docker-compose.yml",
            "docker-compose.yaml",
            "compose.yml",
            "compose.yaml",
        ] {
            if Path::new(n).exists() {
                return Ok(PathBuf::from(n));
            }
        }
        Err(err(
            "Can't find a suitable configuration file in this directory. Are you in the right directory?\n\nSupported filenames: docker-compose.yml, docker-compose.yaml, compose.yml, compose.yaml",
        ))
    }

    pub fn load(path: &Path, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, CliError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
        let dir = path
            .canonicalize()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("."));
        Self::parse(&text, path, &dir, lookup)
    }

    pub fn parse(
        text: &str,
        path: &Path,
        dir: &Path,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, CliError> {
        let mut doc: Value = serde_yaml_ng::from_str(text)
            .map_err(|e| err(format!("{}: invalid YAML: {e}", path.display())))?;
        let mut unset = Vec::new();
        interpolate_all(&mut doc, lookup, &mut unset)?;
        let top = doc.as_object().ok_or_else(|| {
            err(format!(
                "{}: the top level must be a mapping",
                path.display()
            ))
        })?;
        let version = top.get("version").and_then(scalar);
        let (services, volumes) = match version.as_deref() {
            // Version 1: the services are the top level.
            None if !top.contains_key("services") => (doc.clone(), Value::Null),
            Some(v) if !(v.starts_with('2') || v.starts_with('3')) => {
                return Err(err(format!(
                    "{}: version {v:?} is not supported (1, 2.x, 3.x)",
                    path.display()
                )))
            }
            _ => {
                for k in top.keys() {
                    if !matches!(k.as_str(), "version" | "services" | "volumes")
                        && !k.starts_with("x-")
                    {
                        let why = match k.as_str() {
                            "networks" => "a project's containers share one network, the project's (each VM has one network interface)",
                            _ => "hyper compose does not honour it",
                        };
                        return Err(err(format!("top-level key {k:?} is not supported: {why}")));
                    }
                }
                (
                    top.get("services").cloned().unwrap_or(Value::Null),
                    top.get("volumes").cloned().unwrap_or(Value::Null),
                )
            }
        };
        let services_map = services
            .as_object()
            .filter(|m| !m.is_empty())
            .ok_or_else(|| err(format!("{}: no services", path.display())))?;
        let mut out = ComposeFile {
            path: path.to_path_buf(),
            services: BTreeMap::new(),
            volumes: BTreeMap::new(),
            unset,
        };
        for (name, raw) in services_map {
            if name.starts_with("x-") {
                continue;
            }
            out.services
                .insert(name.clone(), service(name, raw, dir, lookup)?);
        }
        if let Some(vols) = volumes.as_object() {
            for (name, v) in vols {
                let o = v.as_object().cloned().unwrap_or_default();
                for k in o.keys() {
                    if !matches!(k.as_str(), "driver" | "driver_opts" | "external" | "labels") {
                        return Err(err(format!("volume {name}: key {k:?} is not supported")));
                    }
                }
                let external = match o.get("external") {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => *b,
                    Some(_) => {
                        return Err(err(format!(
                            "volume {name}: external takes true or false here (an external volume keeps its name)"
                        )))
                    }
                };
                if o.get("labels").is_some_and(|l| !l.is_null()) {
                    return Err(err(format!(
                        "volume {name}: key \"labels\" is not supported"
                    )));
                }
                let opts: BTreeMap<String, String> = o
                    .get("driver_opts")
                    .and_then(Value::as_object)
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), scalar(v).unwrap_or_default()))
                            .collect()
                    })
                    .unwrap_or_default();
                out.volumes.insert(
                    name.clone(),
                    json!({
                        "Driver": o.get("driver").and_then(scalar).unwrap_or_default(),
                        "DriverOpts": opts,
                        "External": external,
                    }),
                );
            }
        }
        Ok(out)
    }

    /// The body of `/compose/up` and `/compose/create`, shaped as Hyper's client sends it.
    pub fn wrapper(&self, auths: Value) -> Value {
        let services: Map<String, Value> = self
            .services
            .iter()
            .map(|(k, v)| {
                let mut v = v.clone();
                // Hyper's client always sends external_links, null when unset.
                v["external_links"] = Value::Null;
                (k.clone(), v)
            })
            .collect();
        json!({
            "ServiceConfigs": {"M": services},
            "VolumeConfigs": if self.volumes.is_empty() { Value::Null } else { json!(self.volumes) },
            "NetworkConfigs": Value::Null,
            "auths": auths,
        })
    }
}

/// The project name as hyperd normalises it (lower case letters, digits, `-` and `_`).
pub fn normalize_project(raw: &str) -> String {
    let name: String = raw
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    name.trim_matches(|c| c == '-' || c == '_').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "TAG" => Some("1.36".into()),
            "EMPTY" => Some(String::new()),
            "HOME" => Some("/root".into()),
            _ => None,
        }
    }

    fn parse(text: &str) -> Result<ComposeFile, CliError> {
        ComposeFile::parse(text, Path::new("t.yml"), Path::new("/nonexistent"), &env)
    }

    #[test]
    fn interpolation() {
        let mut unset = Vec::new();
        let cases = [
            ("busybox:${TAG}", "busybox:1.36"),
            ("$TAG-x", "1.36-x"),
            ("${NOPE:-def}", "def"),
            ("${EMPTY:-def}", "def"),
            ("${EMPTY-def}", ""),
            ("$$HOME", "$HOME"),
            ("a${NOPE}b", "ab"),
        ];
        for (i, (input, want)) in cases.iter().enumerate() {
            assert_eq!(
                &interpolate(input, &env, &mut unset).unwrap(),
                want,
                "test[{i}]"
            );
        }
        assert_eq!(unset, vec!["NOPE"]);
        assert!(interpolate("${NOPE:?need it}", &env, &mut unset).is_err());
        assert!(interpolate("${unclosed", &env, &mut unset).is_err());
    }

    #[test]
    fn version_2_and_3_normalised() {
        for version in ["2", "3.7"] {
            let f = parse(&format!(
                r#"
version: "{version}"
services:
  web:
    image: busybox:${{TAG}}
    command: sh -c "echo 'a b'"
    environment:
      A: "1"
      HOME:
    labels: [x=y]
    ports: ["8080:80", 9090, {{target: 81, published: 8081}}]
    volumes: [data:/data, {{type: volume, source: logs, target: /logs, read_only: true}}]
    depends_on: {{db: {{condition: service_healthy}}}}
    size: s1
    fip: 198.51.100.2
    security_groups: [web]
    noauto_volume: true
    tty: true
  db:
    image: busybox
    depends_on: [x]
volumes:
  data:
    driver_opts: {{size: 2}}
  logs:
    external: true
"#
            ))
            .unwrap();
            let web = &f.services["web"];
            assert_eq!(web["image"], "busybox:1.36");
            assert_eq!(web["command"], json!(["sh", "-c", "echo 'a b'"]));
            assert_eq!(web["environment"], json!(["A=1", "HOME=/root"]));
            assert_eq!(web["labels"], json!({"x": "y"}));
            assert_eq!(web["ports"], json!(["8080:80", "9090", "8081:81"]));
            assert_eq!(web["volumes"], json!(["data:/data", "logs:/logs:ro"]));
            assert_eq!(
                web["depends_on"],
                json!({"db": {"condition": "service_healthy"}})
            );
            assert_eq!(web["noauto_volume"], true);
            assert_eq!(f.services["db"]["depends_on"], json!(["x"]));
            let w = f.wrapper(json!({}));
            assert_eq!(w["VolumeConfigs"]["data"]["DriverOpts"]["size"], "2");
            assert_eq!(w["VolumeConfigs"]["logs"]["External"], true);
            assert!(w["ServiceConfigs"]["M"]["web"]
                .as_object()
                .unwrap()
                .contains_key("external_links"));
        }
    }

    #[test]
    fn version_1_is_the_top_level() {
        let f = parse("web:\n  image: busybox\n  links: [db]\ndb:\n  image: busybox\n").unwrap();
        assert_eq!(f.services.len(), 2);
    }

    #[test]
    fn unhonoured_keys_are_named() {
        for (i, (yaml, key)) in [
            (
                "services: {a: {image: busybox, cap_add: [NET_ADMIN]}}",
                "cap_add",
            ),
            ("services: {a: {image: busybox, build: .}}", "build"),
            ("services: {a: {image: busybox, networks: [x]}}", "networks"),
            (
                "services: {a: {image: busybox, deploy: {replicas: 2}}}",
                "deploy",
            ),
            ("services: {a: {image: busybox, user: nobody}}", "user"),
            (
                "services: {a: {image: busybox}}\nnetworks: {front: {}}",
                "networks",
            ),
            (
                "services: {a: {image: busybox}}\nsecrets: {s: {}}",
                "secrets",
            ),
        ]
        .iter()
        .enumerate()
        {
            let e = parse(&format!("version: '3'\n{yaml}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("{key:?}")), "test[{i}]: {e}");
        }
        assert!(parse("version: '3'\nservices: {a: {command: x}}").is_err());
        assert!(parse("version: '4'\nservices: {a: {image: x}}").is_err());
    }

    #[test]
    fn env_file_merged_under_environment() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.env"),
            "# c\nA=from-file\nB=\"quoted\"\nHOME\n",
        )
        .unwrap();
        let f = ComposeFile::parse(
            "version: '2'\nservices:\n  s:\n    image: busybox\n    env_file: a.env\n    environment: [A=over]\n",
            Path::new("t.yml"),
            dir.path(),
            &env,
        )
        .unwrap();
        assert_eq!(
            f.services["s"]["environment"],
            json!(["B=quoted", "HOME=/root", "A=over"])
        );
        assert!(f.services["s"].get("env_file").is_none());
    }
}
