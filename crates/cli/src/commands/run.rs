//! `run` and `create`: Docker's container flags turned into a `POST /containers/create` body
//! (every flag the user gave is sent, so the server refuses what it does not support), the
//! pull-on-404 retry, and `run`'s attach -> wait -> start -> exit-code flow.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{ArgAction, Args};
use http_body_util::BodyExt;
use serde_json::{json, Map, Value};

use super::Ctx;
use crate::commands::health::HealthFlags;
use crate::commands::images::{pull_image, registry_auth_header};
use crate::commands::mounts::{bind_sources, parse_mount, volume_flags};
use crate::commands::volume_init::remove_volumes;
use crate::stream::{self, RawTerminal};
use crate::transport::{ApiError, ApiRequest, Client};
use crate::CliError;

/// Flags shared by `run` and `create`.
#[derive(Args, Debug, Clone, Default)]
pub struct ContainerOptions {
    /// Keep STDIN open even if not attached
    #[arg(short = 'i', long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, default_value_t = false)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, default_value_t = false)]
    pub tty: bool,
    /// Automatically remove the container when it exits
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, default_value_t = false)]
    pub rm: bool,
    /// Assign a name to the container
    #[arg(long)]
    pub name: Option<String>,
    /// Set environment variables
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long = "env-file")]
    pub env_file: Vec<PathBuf>,
    /// Working directory inside the container
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Container host name
    #[arg(short = 'h', long)]
    pub hostname: Option<String>,
    /// Set meta data on a container
    #[arg(short = 'l', long = "label")]
    pub labels: Vec<String>,
    /// Restart policy to apply when a container exits (no, always, unless-stopped, on-failure[:N])
    #[arg(long)]
    pub restart: Option<String>,
    /// Signal to stop the container
    #[arg(long = "stop-signal")]
    pub stop_signal: Option<String>,
    /// Timeout (in seconds) to stop a container
    #[arg(long = "stop-timeout")]
    pub stop_timeout: Option<i64>,
    /// Container size (s1..s4, m1..m3, l1..l3)
    #[arg(long)]
    pub size: Option<String>,
    /// Protect the container from removal
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub protection: Option<bool>,
    /// Security group to join (repeatable)
    #[arg(long = "sg")]
    pub sg: Vec<String>,
    /// Do not create volumes for the image's VOLUMEs
    #[arg(long = "noauto-volume", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, default_value_t = false)]
    pub noauto_volume: bool,
    /// Publish a container's port(s) to the host
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Publish all exposed ports to random ports
    #[arg(short = 'P', long = "publish-all", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, default_value_t = false)]
    pub publish_all: bool,
    /// Expose a port or a range of ports
    #[arg(long)]
    pub expose: Vec<String>,
    /// Bind mount a volume (NAME:/path[:ro]), or copy a local path or URL into a new one (SRC:/path)
    #[arg(short = 'v', long = "volume")]
    pub volumes: Vec<String>,
    /// Attach a filesystem mount to the container (type=volume,source=NAME,target=/path[,readonly])
    #[arg(long = "mount")]
    pub mounts: Vec<String>,
    /// Mount volumes from the specified container(s) (CONTAINER[:ro|rw])
    #[arg(long = "volumes-from")]
    pub volumes_from: Vec<String>,
    /// Add link to another container
    #[arg(long = "link")]
    pub links: Vec<String>,
    /// Give extended privileges to this container
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, default_value_t = false)]
    pub privileged: bool,
    /// Connect a container to a network (none, bridge or a network's name)
    #[arg(long = "network", alias = "net")]
    pub network: Option<String>,
    /// Add a network-scoped alias for the container
    #[arg(long = "network-alias", alias = "net-alias")]
    pub network_aliases: Vec<String>,
    /// Set custom DNS servers
    #[arg(long = "dns")]
    pub dns: Vec<String>,
    /// Set custom DNS search domains
    #[arg(long = "dns-search")]
    pub dns_search: Vec<String>,
    /// Set DNS options
    #[arg(long = "dns-option", alias = "dns-opt")]
    pub dns_options: Vec<String>,
    /// Add a custom host-to-IP mapping (host:ip)
    #[arg(long = "add-host")]
    pub add_hosts: Vec<String>,
    /// Mount a tmpfs directory (/path[:size=64m,mode=1770,exec,...]), in the VM's memory
    #[arg(long = "tmpfs")]
    pub tmpfs: Vec<String>,
    /// Add a host device to the container
    #[arg(long = "device")]
    pub devices: Vec<String>,
    #[command(flatten)]
    pub health: HealthFlags,
    /// Print help
    #[arg(long, action = ArgAction::Help)]
    pub help: Option<bool>,
    /// The image to run
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// Command and arguments
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Run container in background and print container ID
    #[arg(short = 'd', long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, default_value_t = false)]
    pub detach: bool,
    /// Proxy received signals to the process
    #[arg(long = "sig-proxy", default_value_t = true, action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub sig_proxy: bool,
    /// Override the key sequence for detaching a container
    #[arg(long = "detach-keys")]
    pub detach_keys: Option<String>,
    #[command(flatten)]
    pub opts: ContainerOptions,
}

#[derive(Args, Debug, Clone)]
pub struct CreateArgs {
    #[command(flatten)]
    pub opts: ContainerOptions,
}

/// Docker's `-e VAR` without a value takes it from our environment when set.
pub(crate) fn env_entry(e: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    if e.contains('=') {
        return e.to_owned();
    }
    match lookup(e) {
        Some(v) => format!("{e}={v}"),
        None => e.to_owned(),
    }
}

pub(crate) fn parse_env_file(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    text.lines()
        .map(str::trim_start)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| env_entry(l, lookup))
        .collect()
}

/// `-e` and `--env-file` flags to `Env`: the files first, then the flags, as docker does.
pub(crate) fn env_list(
    env: &[String],
    env_files: &[PathBuf],
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for f in env_files {
        let text = std::fs::read_to_string(f).map_err(|e| format!("open {}: {e}", f.display()))?;
        out.extend(parse_env_file(&text, lookup));
    }
    out.extend(env.iter().map(|e| env_entry(e, lookup)));
    Ok(out)
}

/// `-l key=value` flags to a `Labels` map (`-l key` is an empty value).
pub(crate) fn label_map(labels: &[String]) -> Map<String, Value> {
    labels
        .iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            (k.to_owned(), Value::String(v.to_owned()))
        })
        .collect()
}

/// `--dns`: an IP address, as docker checks.
fn parse_dns(s: &str) -> Result<String, String> {
    s.trim()
        .parse::<std::net::IpAddr>()
        .map(|ip| ip.to_string())
        .map_err(|_| format!("invalid argument {s:?} for \"--dns\" flag: IP address is not correctly formatted: {s}"))
}

/// `--add-host host:ip` (or `host=ip`, `host:[v6]`) to the API's `host:ip`; `host-gateway` passes.
fn parse_extra_host(s: &str) -> Result<String, String> {
    let bad = || {
        format!("invalid argument {s:?} for \"--add-host\" flag: bad format for add-host: {s:?}")
    };
    let (host, ip) = s
        .split_once('=')
        .or_else(|| s.split_once(':'))
        .ok_or_else(bad)?;
    if host.is_empty() {
        return Err(bad());
    }
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    if ip != "host-gateway" && ip.parse::<std::net::IpAddr>().is_err() {
        return Err(format!(
            "invalid argument {s:?} for \"--add-host\" flag: invalid IP address in add-host: {ip:?}"
        ));
    }
    Ok(format!("{host}:{ip}"))
}

fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("invalid port {s:?}");
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
            if a > b {
                return Err(bad());
            }
            Ok((a, b))
        }
        None => {
            let p = s.parse().map_err(|_| bad())?;
            Ok((p, p))
        }
    }
}

/// One `-p` spec (`[ip:][hostPort:]containerPort[/proto]`) as (container port key, binding).
fn parse_publish(spec: &str) -> Result<Vec<(String, Value)>, String> {
    let (addr, proto) = match spec.rsplit_once('/') {
        Some((a, p)) => (a, p.to_lowercase()),
        None => (spec, "tcp".to_owned()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    let parts: Vec<&str> = addr.rsplitn(3, ':').collect();
    let (container, host, ip) = match parts.as_slice() {
        [c] => (*c, "", ""),
        [c, h] => (*c, *h, ""),
        [c, h, ip] => (*c, *h, *ip),
        _ => return Err(format!("invalid publish opts format {spec:?}")),
    };
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    let (c0, c1) =
        parse_range(container).map_err(|_| format!("invalid containerPort: {container}"))?;
    let host_range = if host.is_empty() {
        None
    } else {
        Some(parse_range(host).map_err(|_| format!("invalid hostPort: {host}"))?)
    };
    let mut out = Vec::new();
    for (i, cport) in (c0..=c1).enumerate() {
        let host_port = match host_range {
            None => String::new(),
            Some((h0, h1)) if h1 - h0 == c1 - c0 => (h0 + i as u16).to_string(),
            Some((h0, h1)) if c0 == c1 => {
                if h0 == h1 {
                    h0.to_string()
                } else {
                    format!("{h0}-{h1}")
                }
            }
            Some(_) => {
                return Err(format!(
                    "invalid ranges specified for container and host Ports: {container} and {host}"
                ))
            }
        };
        out.push((
            format!("{cport}/{proto}"),
            json!({"HostIp": ip, "HostPort": host_port}),
        ));
    }
    Ok(out)
}

/// `--restart` to a RestartPolicy.
fn parse_restart(s: &str) -> Result<Value, String> {
    let (name, count) = match s.split_once(':') {
        Some((n, c)) => (
            n,
            c.parse::<i64>()
                .map_err(|_| format!("invalid restart policy format: {s}"))?,
        ),
        None => (s, 0),
    };
    match name {
        "" | "no" | "always" | "unless-stopped" if count == 0 => {
            Ok(json!({"Name": if name.is_empty() { "no" } else { name }, "MaximumRetryCount": 0}))
        }
        "on-failure" => Ok(json!({"Name": name, "MaximumRetryCount": count})),
        "no" | "always" | "unless-stopped" => Err(format!(
            "maximum retry count cannot be used with restart policy '{name}'"
        )),
        _ => Err(format!("invalid restart policy '{name}'")),
    }
}

fn parse_device(s: &str) -> Result<Value, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let (src, dst, perm) = match parts.as_slice() {
        [src] => (*src, *src, "rwm"),
        [src, x] if x.chars().all(|c| "rwm".contains(c)) => (*src, *src, *x),
        [src, dst] => (*src, *dst, "rwm"),
        [src, dst, perm] => (*src, *dst, *perm),
        _ => return Err(format!("invalid device specification: {s}")),
    };
    Ok(json!({"PathOnHost": src, "PathInContainer": dst, "CgroupPermissions": perm}))
}

/// The `POST /containers/create` body for these flags (the name goes in the query).
pub fn create_body(
    o: &ContainerOptions,
    attach: bool,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Value, String> {
    let env = env_list(&o.env, &o.env_file, lookup)?;
    let mut labels = label_map(&o.labels);
    if let Some(size) = &o.size {
        labels.insert("sh_hyper_instancetype".into(), json!(size));
    }
    if let Some(p) = o.protection {
        labels.insert("sh_hyper_container_protection".into(), json!(p.to_string()));
    }
    for sg in &o.sg {
        labels.insert(format!("sh_hyper_sg_{sg}"), json!("yes"));
    }
    if o.noauto_volume {
        labels.insert("sh_hyper_noauto_volume".into(), json!("true"));
    }

    let mut exposed = Map::new();
    let mut bindings = Map::new();
    for spec in &o.publish {
        for (port, binding) in parse_publish(spec)? {
            exposed.insert(port.clone(), json!({}));
            let list = bindings.entry(port).or_insert_with(|| json!([]));
            list.as_array_mut().expect("array").push(binding);
        }
    }
    for e in &o.expose {
        let (ports, proto) = e.split_once('/').unwrap_or((e, "tcp"));
        let (a, b) = parse_range(ports)?;
        for p in a..=b {
            exposed.insert(format!("{p}/{proto}"), json!({}));
        }
    }

    let (binds, volumes) = volume_flags(&o.volumes, &std::env::current_dir().unwrap_or_default())?;
    let mounts = o
        .mounts
        .iter()
        .map(|m| parse_mount(m))
        .collect::<Result<Vec<_>, _>>()?;
    let links: Vec<String> = o
        .links
        .iter()
        .map(|l| {
            if l.contains(':') {
                l.clone()
            } else {
                format!("{l}:{l}")
            }
        })
        .collect();
    let devices = o
        .devices
        .iter()
        .map(|d| parse_device(d))
        .collect::<Result<Vec<_>, _>>()?;
    let dns = o
        .dns
        .iter()
        .map(|d| parse_dns(d))
        .collect::<Result<Vec<_>, _>>()?;
    let extra_hosts = o
        .add_hosts
        .iter()
        .map(|h| parse_extra_host(h))
        .collect::<Result<Vec<_>, _>>()?;
    let restart = o.restart.as_deref().map(parse_restart).transpose()?;
    if o.rm && restart.as_ref().is_some_and(|r| r["Name"] != "no") {
        return Err("Conflicting options: --restart and --rm".into());
    }

    let mut host = json!({
        "AutoRemove": o.rm,
        "Privileged": o.privileged,
        "PublishAllPorts": o.publish_all,
    });
    let h = host.as_object_mut().expect("object");
    if !binds.is_empty() {
        h.insert("Binds".into(), json!(binds));
    }
    if !mounts.is_empty() {
        h.insert("Mounts".into(), json!(mounts));
    }
    if !o.volumes_from.is_empty() {
        h.insert("VolumesFrom".into(), json!(o.volumes_from));
    }
    if !o.tmpfs.is_empty() {
        // As the Docker CLI sends it: path -> options.
        let tmpfs: serde_json::Map<String, Value> = o
            .tmpfs
            .iter()
            .map(|t| {
                let (path, options) = t.split_once(':').unwrap_or((t, ""));
                (path.to_string(), json!(options))
            })
            .collect();
        h.insert("Tmpfs".into(), Value::Object(tmpfs));
    }
    if !bindings.is_empty() {
        h.insert("PortBindings".into(), Value::Object(bindings));
    }
    if !links.is_empty() {
        h.insert("Links".into(), json!(links));
    }
    if !devices.is_empty() {
        h.insert("Devices".into(), json!(devices));
    }
    if let Some(n) = &o.network {
        h.insert("NetworkMode".into(), json!(n));
    }
    for (key, list) in [
        ("Dns", dns),
        ("DnsSearch", o.dns_search.clone()),
        ("DnsOptions", o.dns_options.clone()),
        ("ExtraHosts", extra_hosts),
    ] {
        if !list.is_empty() {
            h.insert(key.into(), json!(list));
        }
    }
    if let Some(r) = restart {
        h.insert("RestartPolicy".into(), r);
    }

    let mut body = json!({
        "Image": o.image,
        "Hostname": o.hostname.clone().unwrap_or_default(),
        "User": o.user.clone().unwrap_or_default(),
        "WorkingDir": o.workdir.clone().unwrap_or_default(),
        "Env": env,
        "Labels": labels,
        "Tty": o.tty,
        "OpenStdin": o.interactive,
        "StdinOnce": o.interactive && attach,
        "AttachStdin": o.interactive && attach,
        "AttachStdout": attach,
        "AttachStderr": attach,
        "HostConfig": host,
    });
    let b = body.as_object_mut().expect("object");
    if !o.command.is_empty() {
        b.insert("Cmd".into(), json!(o.command));
    }
    match o.entrypoint.as_deref() {
        Some("") => {
            b.insert("Entrypoint".into(), json!([""]));
        }
        Some(e) => {
            b.insert("Entrypoint".into(), json!([e]));
        }
        None => {}
    }
    if !exposed.is_empty() {
        b.insert("ExposedPorts".into(), Value::Object(exposed));
    }
    if !volumes.is_empty() {
        b.insert("Volumes".into(), Value::Object(volumes));
    }
    if !o.network_aliases.is_empty() {
        // Docker sends aliases in the endpoint config of the network the container joins.
        let net = o.network.clone().unwrap_or_else(|| "bridge".into());
        b.insert(
            "NetworkingConfig".into(),
            json!({"EndpointsConfig": {net: {"Aliases": o.network_aliases}}}),
        );
    }
    if let Some(s) = &o.stop_signal {
        b.insert("StopSignal".into(), json!(s));
    }
    if let Some(t) = o.stop_timeout {
        b.insert("StopTimeout".into(), json!(t));
    }
    if let Some(check) = o.health.healthcheck()? {
        b.insert("Healthcheck".into(), check);
    }
    Ok(body)
}

/// `busybox` -> `busybox:latest`; references with a tag or digest are kept.
pub fn with_default_tag(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || last.contains(':') {
        image.to_owned()
    } else {
        format!("{image}:latest")
    }
}

/// Creates the container, first filling the volumes that `-v SRC:/path` asks for (deleted
/// again if the container is not created).
async fn create_container(
    ctx: &Ctx,
    client: &Client,
    o: &ContainerOptions,
    mut body: Value,
) -> Result<String, CliError> {
    let made = bind_sources(client, &mut body).await?;
    let result = create_or_pull(ctx, client, o, &body).await;
    if result.is_err() {
        remove_volumes(client, &made).await;
    }
    result
}

/// `POST /containers/create`, pulling the image first if the daemon does not have it.
async fn create_or_pull(
    ctx: &Ctx,
    client: &Client,
    o: &ContainerOptions,
    body: &Value,
) -> Result<String, CliError> {
    let req = ApiRequest::post("/containers/create")
        .query_opt("name", o.name.as_ref())
        .json(body);
    let resp: Result<Value, ApiError> = client.json(req.clone()).await;
    let resp = match resp {
        Err(e) if e.is_not_found() => {
            let image = with_default_tag(&o.image);
            eprintln!("Unable to find image '{image}' locally");
            let auth = registry_auth_header(ctx, &image);
            pull_image(client, &image, auth, true).await?;
            client.json(req).await?
        }
        other => other?,
    };
    for w in resp["Warnings"].as_array().into_iter().flatten() {
        if let Some(w) = w.as_str().filter(|w| !w.is_empty()) {
            eprintln!("WARNING: {w}");
        }
    }
    resp["Id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| CliError::Msg("the daemon returned no container ID".into()))
}

fn refused(e: CliError) -> CliError {
    CliError::Run {
        code: 125,
        source: Box::new(e),
    }
}

fn build_body(o: &ContainerOptions, attach: bool) -> Result<Value, CliError> {
    create_body(o, attach, &|k| std::env::var(k).ok()).map_err(|m| refused(CliError::Msg(m)))
}

pub async fn create(ctx: &Ctx, args: CreateArgs) -> Result<i32, CliError> {
    let body = build_body(&args.opts, false)?;
    let client = ctx.client().map_err(refused)?;
    let id = create_container(ctx, &client, &args.opts, body)
        .await
        .map_err(refused)?;
    println!("{id}");
    Ok(0)
}

/// Docker's mapping of start failures to exit codes: 127 not found, 126 not executable.
pub fn start_error_code(message: &str) -> i32 {
    if message.contains("executable file not found")
        || message.contains("no such file or directory")
        || message.contains("system cannot find the file specified")
    {
        127
    } else if message.contains("permission denied") || message.contains("is a directory") {
        126
    } else {
        125
    }
}

/// Sends `POST /containers/{id}/wait` and returns a task yielding the exit status (125 when
/// waiting failed, as docker does). The request is registered before returning.
pub async fn wait_exit(
    client: &Arc<Client>,
    id: &str,
    condition: &str,
) -> tokio::task::JoinHandle<i32> {
    let resp = client
        .send(ApiRequest::post(format!("/containers/{id}/wait")).query("condition", condition))
        .await;
    tokio::spawn(async move {
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                eprintln!("Error waiting for container: {}", crate::error_chain(&e));
                return 125;
            }
        };
        let body = match resp.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                eprintln!("Error waiting for container: {e}");
                return 125;
            }
        };
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if let Some(msg) = v["Error"]["Message"].as_str().filter(|m| !m.is_empty()) {
            eprintln!("Error waiting for container: {msg}");
            return 125;
        }
        v["StatusCode"].as_i64().map_or(125, |c| c as i32)
    })
}

/// Forwards the usual termination signals to the container (`--sig-proxy`).
fn proxy_signals(client: Arc<Client>, id: String) -> tokio::task::JoinHandle<()> {
    use tokio::signal::unix::{signal, SignalKind};
    tokio::spawn(async move {
        let kinds = [
            (SignalKind::interrupt(), "SIGINT"),
            (SignalKind::terminate(), "SIGTERM"),
            (SignalKind::hangup(), "SIGHUP"),
            (SignalKind::quit(), "SIGQUIT"),
            (SignalKind::user_defined1(), "SIGUSR1"),
            (SignalKind::user_defined2(), "SIGUSR2"),
        ];
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
        for (kind, name) in kinds {
            let Ok(mut s) = signal(kind) else { continue };
            let tx = tx.clone();
            tokio::spawn(async move {
                while s.recv().await.is_some() {
                    if tx.send(name).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        while let Some(name) = rx.recv().await {
            let req = ApiRequest::post(format!("/containers/{id}/kill")).query("signal", name);
            if let Err(e) = client.call(req).await {
                eprintln!("error forwarding {name}: {}", crate::error_chain(&e));
            }
        }
    })
}

pub async fn run(ctx: &Ctx, args: RunArgs) -> Result<i32, CliError> {
    let o = &args.opts;
    let attach = !args.detach;
    let body = build_body(o, attach)?;
    let client = ctx.client().map_err(refused)?;
    let id = create_container(ctx, &client, o, body)
        .await
        .map_err(refused)?;

    if args.detach {
        if let Err(e) = client
            .call(ApiRequest::post(format!("/containers/{id}/start")))
            .await
        {
            return Err(start_failed(e));
        }
        println!("{id}");
        return Ok(0);
    }

    let keys =
        crate::detach::keys(args.detach_keys.as_deref(), &ctx.file).map_err(CliError::Msg)?;
    let attach_req = ApiRequest::post(format!("/containers/{id}/attach"))
        .flag("stream", true)
        .flag("stdin", o.interactive)
        .flag("stdout", true)
        .flag("stderr", true)
        .query("detachKeys", &keys);
    let conn = client
        .hijack(attach_req)
        .await
        .map_err(|e| refused(e.into()))?;
    let raw = if o.tty && o.interactive {
        RawTerminal::enable()?
    } else {
        None
    };
    let detach =
        (o.tty && o.interactive).then(|| crate::detach::sequence(&keys).unwrap_or_default());
    let io_task = tokio::spawn(stream::pump(conn, o.tty, o.interactive, detach));

    let condition = if o.rm { "removed" } else { "next-exit" };
    let status = wait_exit(&client, &id, condition).await;

    if let Err(e) = client
        .call(ApiRequest::post(format!("/containers/{id}/start")))
        .await
    {
        io_task.abort();
        drop(raw);
        if o.rm {
            // The daemon should remove an AutoRemove container whose start failed (docker's
            // does, and its CLI waits for that); remove it ourselves too so that a daemon
            // which does not cannot leave us waiting forever.
            let del = ApiRequest::delete(format!("/containers/{id}")).flag("force", true);
            let _ = client.call(del).await;
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), status).await;
        }
        return Err(start_failed(e));
    }
    let resize = (o.tty && std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .then(|| stream::monitor_tty_size(client.clone(), format!("/containers/{id}/resize")));
    let proxy = (args.sig_proxy && !o.tty).then(|| proxy_signals(client.clone(), id.clone()));

    let io_result = io_task.await;
    if let Ok(Ok(stream::Ended::Detached)) = io_result {
        drop(raw);
        for t in [resize, proxy].into_iter().flatten() {
            t.abort();
        }
        return Ok(0);
    }
    let code = status.await.unwrap_or(125);
    drop(raw);
    for t in [resize, proxy].into_iter().flatten() {
        t.abort();
    }
    match io_result {
        Ok(Err(e)) => eprintln!("{}", crate::error_chain(&e)),
        Err(e) if !e.is_cancelled() => eprintln!("attach: {e}"),
        _ => {}
    }
    Ok(code)
}

fn start_failed(e: ApiError) -> CliError {
    let msg = match &e {
        ApiError::Daemon { message, .. } => message.clone(),
        other => other.to_string(),
    };
    CliError::Run {
        code: start_error_code(&msg),
        source: Box::new(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    #[command(disable_help_flag = true)]
    struct T {
        #[command(flatten)]
        run: RunArgs,
    }

    fn parse(args: &[&str]) -> RunArgs {
        T::try_parse_from(std::iter::once("run").chain(args.iter().copied()))
            .unwrap()
            .run
    }

    fn body(args: &[&str]) -> Value {
        let r = parse(args);
        create_body(&r.opts, !r.detach, &|k| {
            (k == "HOME").then(|| "/root".to_owned())
        })
        .unwrap()
    }

    #[test]
    fn command_after_image_is_literal() {
        let r = parse(&["-d", "--name", "x", "busybox", "ls", "-l", "-d"]);
        assert!(r.detach);
        assert_eq!(r.opts.image, "busybox");
        assert_eq!(r.opts.command, ["ls", "-l", "-d"]);
        let r = parse(&["-h", "host1", "busybox"]);
        assert_eq!(r.opts.hostname.as_deref(), Some("host1"));
        assert!(r.sig_proxy);
        assert!(!parse(&["--sig-proxy=false", "busybox"]).sig_proxy);
        let r = parse(&["--protection", "--rm=false", "-d=true", "busybox", "sh"]);
        assert_eq!(
            (r.opts.protection, r.opts.rm, r.detach),
            (Some(true), false, true)
        );
        assert_eq!(r.opts.command, ["sh"]);
    }

    #[test]
    fn hyper_flags_become_labels() {
        let b = body(&[
            "--size",
            "m1",
            "--protection",
            "--sg",
            "web",
            "--sg",
            "db",
            "--noauto-volume",
            "-l",
            "a=b",
            "-l",
            "c",
            "busybox",
        ]);
        assert_eq!(
            b["Labels"],
            json!({"a": "b", "c": "", "sh_hyper_instancetype": "m1", "sh_hyper_container_protection": "true",
                   "sh_hyper_sg_web": "yes", "sh_hyper_sg_db": "yes", "sh_hyper_noauto_volume": "true"})
        );
        assert_eq!(
            body(&["--protection=false", "busybox"])["Labels"]["sh_hyper_container_protection"],
            "false"
        );
    }

    #[test]
    fn every_host_flag_is_sent() {
        let b = body(&[
            "-p",
            "8080:80",
            "-p",
            "127.0.0.1::53/udp",
            "-v",
            "/data",
            "-v",
            "vol:/srv",
            "-v",
            "/host/dir:/h:ro",
            "--mount",
            "type=volume,source=data,target=/m,readonly",
            "--volumes-from",
            "db:ro",
            "--link",
            "db",
            "--link",
            "x:y",
            "--privileged",
            "--network",
            "host",
            "--device",
            "/dev/kvm",
            "--restart",
            "on-failure:3",
            "--rm=false",
            "busybox",
        ]);
        let h = &b["HostConfig"];
        assert_eq!(
            h["PortBindings"]["80/tcp"],
            json!([{"HostIp": "", "HostPort": "8080"}])
        );
        assert_eq!(
            h["PortBindings"]["53/udp"],
            json!([{"HostIp": "127.0.0.1", "HostPort": ""}])
        );
        assert_eq!(b["ExposedPorts"], json!({"80/tcp": {}, "53/udp": {}}));
        assert_eq!(h["Binds"], json!(["vol:/srv", "/host/dir:/h:ro"]));
        assert_eq!(
            h["Mounts"],
            json!([{"Type": "volume", "Source": "data", "Target": "/m", "ReadOnly": true}])
        );
        assert_eq!(h["VolumesFrom"], json!(["db:ro"]));
        assert_eq!(b["Volumes"], json!({"/data": {}}));
        assert_eq!(h["Links"], json!(["db:db", "x:y"]));
        assert_eq!(h["Privileged"], true);
        assert_eq!(h["NetworkMode"], "host");
        assert_eq!(
            h["Devices"],
            json!([{"PathOnHost": "/dev/kvm", "PathInContainer": "/dev/kvm", "CgroupPermissions": "rwm"}])
        );
        assert_eq!(
            h["RestartPolicy"],
            json!({"Name": "on-failure", "MaximumRetryCount": 3})
        );
    }

    #[test]
    fn dns_and_extra_hosts() {
        let b = body(&[
            "--net",
            "mynet",
            "--dns",
            "8.8.8.8",
            "--dns",
            "2001:4860:4860::8888",
            "--dns-search",
            "example.com",
            "--dns-option",
            "ndots:2",
            "--dns-opt",
            "timeout:1",
            "--add-host",
            "db:10.0.0.5",
            "--add-host",
            "v6=[::1]",
            "--add-host",
            "gw:host-gateway",
            "busybox",
        ]);
        let h = &b["HostConfig"];
        assert_eq!(h["NetworkMode"], "mynet");
        assert_eq!(h["Dns"], json!(["8.8.8.8", "2001:4860:4860::8888"]));
        assert_eq!(h["DnsSearch"], json!(["example.com"]));
        assert_eq!(h["DnsOptions"], json!(["ndots:2", "timeout:1"]));
        assert_eq!(
            h["ExtraHosts"],
            json!(["db:10.0.0.5", "v6:::1", "gw:host-gateway"])
        );
        let plain = body(&["busybox"]);
        for key in [
            "Dns",
            "DnsSearch",
            "DnsOptions",
            "ExtraHosts",
            "NetworkMode",
        ] {
            assert!(plain["HostConfig"].get(key).is_none(), "{key}");
        }
        for (flag, value, want) in [
            ("--dns", "8.8.8", "IP address is not correctly formatted"),
            ("--add-host", "nohost", "bad format for add-host"),
            ("--add-host", ":1.2.3.4", "bad format for add-host"),
            ("--add-host", "db:notanip", "invalid IP address in add-host"),
        ] {
            let r = parse(&[flag, value, "busybox"]);
            let err = create_body(&r.opts, true, &|_| None).unwrap_err();
            assert!(err.contains(want), "{flag} {value}: {err}");
        }
    }

    #[test]
    fn config_fields() {
        let b = body(&[
            "-it",
            "--rm",
            "-e",
            "A=1",
            "-e",
            "HOME",
            "-e",
            "NOPE",
            "-w",
            "/w",
            "-u",
            "1000",
            "--entrypoint",
            "sh",
            "--stop-signal",
            "SIGINT",
            "--stop-timeout",
            "5",
            "busybox",
            "-c",
            "echo hi",
        ]);
        assert_eq!(b["Env"], json!(["A=1", "HOME=/root", "NOPE"]));
        assert_eq!(b["Entrypoint"], json!(["sh"]));
        assert_eq!(b["Cmd"], json!(["-c", "echo hi"]));
        assert_eq!(
            (
                b["Tty"].clone(),
                b["OpenStdin"].clone(),
                b["AttachStdin"].clone(),
                b["StdinOnce"].clone()
            ),
            (json!(true), json!(true), json!(true), json!(true))
        );
        assert_eq!(b["HostConfig"]["AutoRemove"], true);
        assert_eq!(
            (b["WorkingDir"].as_str(), b["User"].as_str()),
            (Some("/w"), Some("1000"))
        );
        assert_eq!(
            (b["StopSignal"].as_str(), b["StopTimeout"].as_i64()),
            (Some("SIGINT"), Some(5))
        );
        assert_eq!(
            body(&["--entrypoint", "", "busybox"])["Entrypoint"],
            json!([""])
        );
        assert_eq!(body(&["-d", "-i", "busybox"])["AttachStdin"], false);
    }

    #[test]
    fn bad_flags_are_refused_locally() {
        let r = parse(&["--rm", "--restart", "always", "busybox"]);
        assert!(create_body(&r.opts, true, &|_| None)
            .unwrap_err()
            .contains("Conflicting options"));
        for (i, p) in ["80:8o", "1:2:3:4/xyz", "9-8:1"].iter().enumerate() {
            let r = parse(&["-p", p, "busybox"]);
            assert!(create_body(&r.opts, true, &|_| None).is_err(), "test[{i}]");
        }
        for (i, (flag, value)) in [("-v", "https://h/r.git"), ("--mount", "source=v")]
            .iter()
            .enumerate()
        {
            let r = parse(&[flag, value, "busybox"]);
            assert!(create_body(&r.opts, true, &|_| None).is_err(), "test[{i}]");
        }
    }

    #[test]
    fn port_ranges_and_env_file() {
        let got = parse_publish("8000-8001:80-81").unwrap();
        assert_eq!(
            got[1],
            (
                "81/tcp".to_owned(),
                json!({"HostIp": "", "HostPort": "8001"})
            )
        );
        assert_eq!(
            parse_env_file("# c\n\nA=1\n  B\n", &|_| Some("2".into())),
            ["A=1", "B=2"]
        );
        assert_eq!(with_default_tag("busybox"), "busybox:latest");
        assert_eq!(with_default_tag("reg:5000/a/b"), "reg:5000/a/b:latest");
        assert_eq!(with_default_tag("a/b:1"), "a/b:1");
        assert_eq!(
            start_error_code("exec: \"nope\": executable file not found in $PATH"),
            127
        );
        assert_eq!(start_error_code("permission denied"), 126);
        assert_eq!(start_error_code("boom"), 125);
    }
}
