//! Container lifecycle and inspection commands: start, stop, restart, kill, rm, ps, inspect,
//! logs, attach, wait, rename, update, top, stats, port.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use clap::{ArgAction, Args};
use serde_json::{json, Value};

use super::{for_each, pretty_json, print_rows, Ctx};
use crate::commands::run::wait_exit;
use crate::format::{display, Template};
use crate::stream::{self, RawTerminal};
use crate::table::{
    ago, bytes_size, ellipsis, human_duration, human_size, natural_cmp, short_id, TabWriter,
};
use crate::transport::{ApiRequest, Client};
use crate::CliError;

#[derive(Args, Debug)]
pub struct NamesArgs {
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct StartArgs {
    /// Attach STDOUT/STDERR and forward signals
    #[arg(short = 'a', long)]
    pub attach: bool,
    /// Attach container's STDIN
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Override the key sequence for detaching a container
    #[arg(long = "detach-keys")]
    pub detach_keys: Option<String>,
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait before killing the container
    #[arg(short = 't', long = "time", alias = "timeout")]
    pub time: Option<i64>,
    /// Signal to send to the container
    #[arg(short = 's', long)]
    pub signal: Option<String>,
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct KillArgs {
    /// Signal to send to the container
    #[arg(short = 's', long)]
    pub signal: Option<String>,
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

/// `pause` and `unpause`.
#[derive(Args, Debug)]
pub struct PauseArgs {
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Force the removal of a running container (uses SIGKILL)
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Remove anonymous volumes associated with the container
    #[arg(short = 'v', long)]
    pub volumes: bool,
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PsArgs {
    /// Show all containers (default shows just running)
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only display container IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Show n last created containers (includes all states)
    #[arg(short = 'n', long = "last")]
    pub last: Option<i64>,
    /// Show the latest created container (includes all states)
    #[arg(short = 'l', long)]
    pub latest: bool,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Display total file sizes
    #[arg(short = 's', long)]
    pub size: bool,
    /// Filter output based on conditions provided (key=value)
    #[arg(short = 'f', long = "filter")]
    pub filter: Vec<String>,
    /// Format output using a Go template
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Format output using a Go template
    #[arg(short = 'f', long)]
    pub format: Option<String>,
    /// Return JSON for specified type (container or image)
    #[arg(long = "type")]
    pub kind: Option<String>,
    /// Display total file sizes if the type is container
    #[arg(short = 's', long)]
    pub size: bool,
    #[arg(required = true, value_name = "NAME|ID")]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Follow log output
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Show timestamps
    #[arg(short = 't', long)]
    pub timestamps: bool,
    /// Number of lines to show from the end of the logs
    #[arg(short = 'n', long)]
    pub tail: Option<String>,
    /// Show logs since timestamp or relative (e.g. 42m)
    #[arg(long)]
    pub since: Option<String>,
    /// Show logs before a timestamp or relative (e.g. 42m)
    #[arg(long)]
    pub until: Option<String>,
    /// Show extra details provided to logs
    #[arg(long)]
    pub details: bool,
    pub container: String,
}

#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Do not attach STDIN
    #[arg(long = "no-stdin")]
    pub no_stdin: bool,
    /// Proxy all received signals to the process
    #[arg(long = "sig-proxy", default_value_t = true, action = ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub sig_proxy: bool,
    /// Override the key sequence for detaching a container
    #[arg(long = "detach-keys")]
    pub detach_keys: Option<String>,
    pub container: String,
}

#[derive(Args, Debug)]
pub struct RenameArgs {
    pub container: String,
    pub new_name: String,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// Restart policy to apply when a container exits
    #[arg(long)]
    pub restart: Option<String>,
    /// Protect the container from removal
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub protection: Option<bool>,
    /// Add a security group
    #[arg(long = "sg-add")]
    pub sg_add: Vec<String>,
    /// Remove a security group
    #[arg(long = "sg-rm")]
    pub sg_rm: Vec<String>,
    #[arg(required = true, value_name = "CONTAINER")]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct TopArgs {
    pub container: String,
    /// ps options
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Show all containers (default shows just running)
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Disable streaming stats and only pull the first result
    #[arg(long = "no-stream")]
    pub no_stream: bool,
    /// Do not truncate output
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PortArgs {
    pub container: String,
    /// PRIVATE_PORT[/PROTO]
    pub port: Option<String>,
}

fn cpath(name: &str, rest: &str) -> String {
    format!("/containers/{name}{rest}")
}

pub async fn inspect_container(client: &Client, name: &str) -> Result<Value, CliError> {
    Ok(client.json(ApiRequest::get(cpath(name, "/json"))).await?)
}

pub async fn start(ctx: &Ctx, a: StartArgs) -> Result<i32, CliError> {
    let client = ctx.client()?;
    if !(a.attach || a.interactive) {
        return for_each(&a.containers, |name| {
            let client = client.clone();
            async move {
                client
                    .call(ApiRequest::post(cpath(&name, "/start")))
                    .await?;
                Ok(Some(name))
            }
        })
        .await;
    }
    if a.containers.len() > 1 {
        return Err(CliError::Msg(
            "you cannot start and attach multiple containers at once".into(),
        ));
    }
    let name = &a.containers[0];
    let info = inspect_container(&client, name).await?;
    let tty = info["Config"]["Tty"].as_bool().unwrap_or(false);
    let stdin = a.interactive && info["Config"]["OpenStdin"].as_bool().unwrap_or(false);
    let keys = crate::detach::keys(a.detach_keys.as_deref(), &ctx.file).map_err(CliError::Msg)?;
    let req = ApiRequest::post(cpath(name, "/attach"))
        .flag("stream", true)
        .flag("stdin", stdin)
        .flag("stdout", true)
        .flag("stderr", true)
        .query("detachKeys", &keys);
    let conn = client.hijack(req).await?;
    let raw = if tty && stdin {
        RawTerminal::enable()?
    } else {
        None
    };
    let detach = (tty && stdin).then(|| crate::detach::sequence(&keys).unwrap_or_default());
    let io = tokio::spawn(stream::pump(conn, tty, stdin, detach));
    let status = wait_exit(&client, name, "next-exit").await;
    if let Err(e) = client.call(ApiRequest::post(cpath(name, "/start"))).await {
        io.abort();
        return Err(e.into());
    }
    let resize = (tty && std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .then(|| stream::monitor_tty_size(client.clone(), cpath(name, "/resize")));
    let io_result = io.await;
    if let Ok(Ok(stream::Ended::Detached)) = io_result {
        return Ok(0);
    }
    let code = status.await.unwrap_or(125);
    drop(raw);
    if let Some(r) = resize {
        r.abort();
    }
    if let Ok(Err(e)) = io_result {
        eprintln!("{}", crate::error_chain(&e));
    }
    Ok(code)
}

/// Sends one request per container, printing each name that succeeded (docker's way for
/// stop, kill and rm).
async fn call_each(
    ctx: &Ctx,
    containers: &[String],
    request: impl Fn(&str) -> ApiRequest,
) -> Result<i32, CliError> {
    let client = ctx.client()?;
    for_each(containers, |name| {
        let client = client.clone();
        let req = request(&name);
        async move {
            client.call(req).await?;
            Ok(Some(name))
        }
    })
    .await
}

/// `stop` and `restart`, which take the same flags.
pub async fn stop(ctx: &Ctx, a: StopArgs, action: &'static str) -> Result<i32, CliError> {
    call_each(ctx, &a.containers, |name| {
        ApiRequest::post(cpath(name, &format!("/{action}")))
            .query_opt("t", a.time)
            .query_opt("signal", a.signal.as_ref())
    })
    .await
}

pub async fn kill(ctx: &Ctx, a: KillArgs) -> Result<i32, CliError> {
    call_each(ctx, &a.containers, |name| {
        ApiRequest::post(cpath(name, "/kill")).query_opt("signal", a.signal.as_ref())
    })
    .await
}

/// `pause` or `unpause` (`action`) each container: its whole VM stops or runs again.
pub async fn pause(ctx: &Ctx, a: PauseArgs, action: &str) -> Result<i32, CliError> {
    call_each(ctx, &a.containers, |name| {
        ApiRequest::post(cpath(name, &format!("/{action}")))
    })
    .await
}

pub async fn rm(ctx: &Ctx, a: RmArgs) -> Result<i32, CliError> {
    call_each(ctx, &a.containers, |name| {
        ApiRequest::delete(cpath(name, ""))
            .flag("force", a.force)
            .flag("v", a.volumes)
    })
    .await
}

/// `-f key=value` flags to the API's `{"key": ["value", ...]}`.
pub fn filters_json(filters: &[String]) -> Result<Option<String>, CliError> {
    if filters.is_empty() {
        return Ok(None);
    }
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in filters {
        let (k, v) = f.split_once('=').ok_or_else(|| {
            CliError::Msg(format!("bad format of filter (expected name=value): {f}"))
        })?;
        map.entry(k.trim().to_lowercase())
            .or_default()
            .push(v.to_owned());
    }
    Ok(Some(
        serde_json::to_string(&map).expect("filters serialize"),
    ))
}

fn join_host_port(ip: &str, port: impl std::fmt::Display) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// The PORTS column: `0.0.0.0:8080->80/tcp, 443/tcp`.
pub fn display_ports(ports: &Value) -> String {
    let mut out: Vec<String> = ports
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let private = p["PrivatePort"].as_i64().unwrap_or(0);
            let proto = p["Type"].as_str().unwrap_or("tcp");
            match p["PublicPort"].as_i64().filter(|&n| n != 0) {
                Some(public) => {
                    let ip = p["IP"].as_str().unwrap_or("");
                    format!("{}->{private}/{proto}", join_host_port(ip, public))
                }
                None => format!("{private}/{proto}"),
            }
        })
        .collect();
    out.sort();
    out.dedup();
    out.join(", ")
}

/// One `docker ps` row with docker's field names.
pub fn ps_row(c: &Value, trunc: bool, now: DateTime<Utc>) -> Value {
    let id = c["Id"].as_str().unwrap_or("");
    let mut image = c["Image"].as_str().unwrap_or("").to_owned();
    if trunc && image.starts_with("sha256:") {
        image = short_id(&image);
    }
    let command = c["Command"].as_str().unwrap_or("");
    let command = if trunc {
        ellipsis(command, 20)
    } else {
        command.to_owned()
    };
    let names: Vec<&str> = c["Names"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|n| n.strip_prefix('/').unwrap_or(n))
        .filter(|n| !trunc || !n.contains('/'))
        .collect();
    let created = c["Created"].as_i64().unwrap_or(0);
    let labels: Vec<String> = c["Labels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    let networks: Vec<&String> = c["NetworkSettings"]["Networks"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.keys())
        .collect();
    let mounts: Vec<String> = c["Mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            m["Name"]
                .as_str()
                .filter(|n| !n.is_empty())
                .or(m["Source"].as_str())
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    let size = match (c["SizeRw"].as_i64(), c["SizeRootFs"].as_i64()) {
        (Some(rw), Some(root)) => format!(
            "{} (virtual {})",
            human_size(rw as f64),
            human_size(root as f64)
        ),
        (Some(rw), None) => human_size(rw as f64),
        _ => String::new(),
    };
    json!({
        "ID": if trunc { short_id(id) } else { id.to_owned() },
        "Image": image,
        "Command": format!("{command:?}"),
        "CreatedAt": Utc.timestamp_opt(created, 0).single().map(|t| t.format("%Y-%m-%d %H:%M:%S +0000 UTC").to_string()).unwrap_or_default(),
        "RunningFor": ago(created, now),
        "Ports": display_ports(&c["Ports"]),
        "State": c["State"].as_str().unwrap_or(""),
        "Status": c["Status"].as_str().unwrap_or(""),
        "Size": size,
        "Names": names.join(","),
        "Labels": labels.join(","),
        "Mounts": mounts.join(","),
        "Networks": networks.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(","),
        "LocalVolumes": mounts.len().to_string(),
    })
}

pub fn ps_header() -> Value {
    json!({
        "ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "CreatedAt": "CREATED AT",
        "RunningFor": "CREATED", "Ports": "PORTS", "State": "STATE", "Status": "STATUS", "Size": "SIZE",
        "Names": "NAMES", "Labels": "LABELS", "Mounts": "MOUNTS", "Networks": "NETWORKS",
        "LocalVolumes": "LOCAL VOLUMES",
    })
}

pub async fn ps(ctx: &Ctx, a: PsArgs) -> Result<i32, CliError> {
    let client = ctx.client()?;
    let limit = if a.latest {
        Some(1)
    } else {
        a.last.filter(|&n| n > 0)
    };
    let req = ApiRequest::get("/containers/json")
        .flag("all", a.all || limit.is_some())
        .query_opt("limit", limit)
        .flag("size", a.size)
        .query_opt("filters", filters_json(&a.filter)?);
    let list: Vec<Value> = client.json(req).await?;
    let now = Utc::now();
    let rows: Vec<Value> = list.iter().map(|c| ps_row(c, !a.no_trunc, now)).collect();
    let template = match (&a.format, a.quiet) {
        (_, true) => "{{.ID}}".to_owned(),
        (Some(f), _) => f.clone(),
        (None, _) if a.size => {
            "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}\t{{.Size}}".into()
        }
        (None, _) => "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}".into(),
    };
    print_rows(&template, &ps_header(), &rows)?;
    Ok(0)
}

/// `inspect`: containers first, then images, unless `--type` says which.
pub async fn inspect(ctx: &Ctx, a: InspectArgs) -> Result<i32, CliError> {
    let client = ctx.client()?;
    let template = a.format.as_deref().map(Template::parse).transpose()?;
    let kind = a.kind.as_deref().unwrap_or("");
    if !matches!(kind, "" | "container" | "image") {
        return Err(CliError::Msg(format!(
            "\"{kind}\" is not a valid value for --type"
        )));
    }
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for name in &a.names {
        let mut result = None;
        if kind != "image" {
            let req = ApiRequest::get(cpath(name, "/json")).flag("size", a.size);
            match client.json::<Value>(req).await {
                Ok(v) => result = Some(v),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        if result.is_none() && kind != "container" {
            match client
                .json::<Value>(ApiRequest::get(format!("/images/{name}/json")))
                .await
            {
                Ok(v) => result = Some(v),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        match result {
            Some(v) => found.push(v),
            None => errors.push(match kind {
                "container" => format!("Error: No such container: {name}"),
                "image" => format!("Error: No such image: {name}"),
                _ => format!("Error: No such object: {name}"),
            }),
        }
    }
    print_inspect(&found, template.as_ref())?;
    for e in &errors {
        eprintln!("{e}");
    }
    Ok(if errors.is_empty() { 0 } else { 1 })
}

pub fn print_inspect(found: &[Value], template: Option<&Template>) -> Result<(), CliError> {
    match template {
        Some(t) => {
            for v in found {
                println!("{}", t.render(v)?);
            }
        }
        None => println!("{}", pretty_json(&Value::Array(found.to_vec()))),
    }
    Ok(())
}

/// `--since`/`--until`: relative durations ("42m", "1h30m", "10s") become unix seconds before
/// `now` (with nanoseconds, as Docker's CLI sends them: `--until 0s` is now, not the start of
/// this second); RFC 3339 times become unix seconds; anything else (unix seconds) is passed
/// through.
pub fn parse_time_arg(s: &str, now: DateTime<Utc>) -> String {
    if let Some(d) = parse_go_duration(s) {
        let t = now - d;
        return match t.timestamp_subsec_nanos() {
            0 => t.timestamp().to_string(),
            n => format!("{}.{n:09}", t.timestamp()),
        };
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return t.timestamp().to_string();
    }
    if let Ok(t) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return t
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp().to_string())
            .unwrap_or_default();
    }
    s.to_owned()
}

fn parse_go_duration(s: &str) -> Option<chrono::Duration> {
    let mut total = 0f64;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if c == 'm' && chars.peek() == Some(&'s') {
            unit.push(chars.next()?);
        }
        let n: f64 = num.parse().ok()?;
        num.clear();
        total += n * match unit.as_str() {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return None,
        };
        any = true;
    }
    (any && num.is_empty()).then(|| chrono::Duration::milliseconds((total * 1000.0) as i64))
}

pub async fn logs(ctx: &Ctx, a: LogsArgs) -> Result<i32, CliError> {
    let client = ctx.client()?;
    let info = inspect_container(&client, &a.container).await?;
    let tty = info["Config"]["Tty"].as_bool().unwrap_or(false);
    let now = Utc::now();
    let req = ApiRequest::get(cpath(&a.container, "/logs"))
        .flag("stdout", true)
        .flag("stderr", true)
        .flag("follow", a.follow)
        .flag("timestamps", a.timestamps)
        .flag("details", a.details)
        .query_opt("tail", a.tail.as_ref())
        .query_opt("since", a.since.as_deref().map(|s| parse_time_arg(s, now)))
        .query_opt("until", a.until.as_deref().map(|s| parse_time_arg(s, now)));
    let resp = client.send(req).await?;
    stream::copy_body(resp.into_body(), tty).await?;
    Ok(0)
}

pub async fn attach(ctx: &Ctx, a: AttachArgs) -> Result<i32, CliError> {
    let client = ctx.client()?;
    let info = inspect_container(&client, &a.container).await?;
    if !info["State"]["Running"].as_bool().unwrap_or(false) {
        return Err(CliError::Msg(
            "You cannot attach to a stopped container, start it first".into(),
        ));
    }
    let tty = info["Config"]["Tty"].as_bool().unwrap_or(false);
    let stdin = !a.no_stdin && info["Config"]["OpenStdin"].as_bool().unwrap_or(false);
    let keys = crate::detach::keys(a.detach_keys.as_deref(), &ctx.file).map_err(CliError::Msg)?;
    let req = ApiRequest::post(cpath(&a.container, "/attach"))
        .flag("stream", true)
        .flag("stdin", stdin)
        .flag("stdout", true)
        .flag("stderr", true)
        .query("detachKeys", &keys);
    let conn = client.hijack(req).await?;
    let raw = if tty && stdin {
        RawTerminal::enable()?
    } else {
        None
    };
    let resize = (tty && std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .then(|| stream::monitor_tty_size(client.clone(), cpath(&a.container, "/resize")));
    let detach = (tty && stdin).then(|| crate::detach::sequence(&keys).unwrap_or_default());
    let result = stream::pump(conn, tty, stdin, detach).await;
    drop(raw);
    if let Some(r) = resize {
        r.abort();
    }
    if result? == stream::Ended::Detached {
        return Ok(0);
    }
    // The session ended: report the container's exit code, as docker does.
    let status = wait_exit(&client, &a.container, "not-running").await;
    Ok(status.await.unwrap_or(0))
}

pub async fn wait(ctx: &Ctx, a: NamesArgs) -> Result<i32, CliError> {
    let client = ctx.client()?;
    for_each(&a.containers, |name| {
        let client = client.clone();
        async move {
            let v: Value = client.json(ApiRequest::post(cpath(&name, "/wait"))).await?;
            if let Some(m) = v["Error"]["Message"].as_str().filter(|m| !m.is_empty()) {
                return Err(CliError::Msg(m.to_owned()));
            }
            Ok(Some(v["StatusCode"].as_i64().unwrap_or(-1).to_string()))
        }
    })
    .await
}

pub async fn rename(ctx: &Ctx, a: RenameArgs) -> Result<i32, CliError> {
    let client = ctx.client()?;
    if a.new_name.trim().is_empty() {
        return Err(CliError::Msg(
            "Error: neither old nor new names may be empty".into(),
        ));
    }
    client
        .call(ApiRequest::post(cpath(&a.container, "/rename")).query("name", &a.new_name))
        .await?;
    Ok(0)
}

/// The `POST /containers/{id}/update` body. Hyper's extensions ride next to Docker's fields:
/// `Protection` (bool) and `SecurityGroups: {"Add": [..], "Remove": [..]}`.
pub fn update_body(a: &UpdateArgs) -> Result<Value, CliError> {
    let mut body = serde_json::Map::new();
    if let Some(r) = &a.restart {
        let (name, count) = match r.split_once(':') {
            Some((n, c)) => (
                n,
                c.parse::<i64>()
                    .map_err(|_| CliError::Msg(format!("invalid restart policy format: {r}")))?,
            ),
            None => (r.as_str(), 0),
        };
        body.insert(
            "RestartPolicy".into(),
            json!({"Name": name, "MaximumRetryCount": count}),
        );
    }
    if let Some(p) = a.protection {
        body.insert("Protection".into(), json!(p));
    }
    if !a.sg_add.is_empty() || !a.sg_rm.is_empty() {
        body.insert(
            "SecurityGroups".into(),
            json!({"Add": a.sg_add, "Remove": a.sg_rm}),
        );
    }
    if body.is_empty() {
        return Err(CliError::Msg(
            "you must provide one or more flags when using this command".into(),
        ));
    }
    Ok(Value::Object(body))
}

pub async fn update(ctx: &Ctx, a: UpdateArgs) -> Result<i32, CliError> {
    let body = update_body(&a)?;
    let client = ctx.client()?;
    for_each(&a.containers, |name| {
        let client = client.clone();
        let req = ApiRequest::post(cpath(&name, "/update")).json(&body);
        async move {
            let v: Value = client.json(req).await?;
            for w in v["Warnings"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                eprintln!("WARNING: {w}");
            }
            Ok(Some(name))
        }
    })
    .await
}

pub async fn top(ctx: &Ctx, a: TopArgs) -> Result<i32, CliError> {
    let client = ctx.client()?;
    let req = ApiRequest::get(cpath(&a.container, "/top")).query_opt(
        "ps_args",
        (!a.ps_args.is_empty()).then(|| a.ps_args.join(" ")),
    );
    let v: Value = client.json(req).await?;
    let mut tw = TabWriter::new();
    let cells = |row: &Value| {
        row.as_array()
            .into_iter()
            .flatten()
            .map(display)
            .collect::<Vec<_>>()
            .join("\t")
    };
    tw.line(&cells(&v["Titles"]));
    for p in v["Processes"].as_array().into_iter().flatten() {
        tw.line(&cells(p));
    }
    tw.flush()?;
    Ok(0)
}

/// One `docker stats` row from a `GET /containers/{id}/stats?stream=false` sample.
pub fn stats_row(id: &str, name: &str, s: &Value) -> Vec<String> {
    let cpu = &s["cpu_stats"];
    let pre = &s["precpu_stats"];
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    let cpu_delta = f(&cpu["cpu_usage"]["total_usage"]) - f(&pre["cpu_usage"]["total_usage"]);
    let sys_delta = f(&cpu["system_cpu_usage"]) - f(&pre["system_cpu_usage"]);
    let ncpu = cpu["online_cpus"]
        .as_f64()
        .filter(|&n| n > 0.0)
        .unwrap_or_else(|| {
            cpu["cpu_usage"]["percpu_usage"]
                .as_array()
                .map_or(1.0, |a| a.len().max(1) as f64)
        });
    // Docker's formula; a busy share above 1 of the total (counters from a hostile guest, or
    // from another VM) is no figure to show.
    let cpu_pct = if cpu_delta > 0.0 && sys_delta > 0.0 && cpu_delta <= sys_delta {
        cpu_delta / sys_delta * ncpu * 100.0
    } else {
        0.0
    };
    let mem = &s["memory_stats"];
    let cache = mem["stats"]["inactive_file"]
        .as_f64()
        .or(mem["stats"]["total_inactive_file"].as_f64())
        .unwrap_or(0.0);
    let used = (f(&mem["usage"]) - cache).max(0.0);
    let limit = f(&mem["limit"]);
    let mem_pct = if limit > 0.0 {
        used / limit * 100.0
    } else {
        0.0
    };
    let (mut rx, mut tx) = (0.0, 0.0);
    for n in s["networks"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
    {
        rx += f(&n["rx_bytes"]);
        tx += f(&n["tx_bytes"]);
    }
    let (mut rd, mut wr) = (0.0, 0.0);
    for e in s["blkio_stats"]["io_service_bytes_recursive"]
        .as_array()
        .into_iter()
        .flatten()
    {
        match e["op"].as_str().map(str::to_lowercase).as_deref() {
            Some("read") => rd += f(&e["value"]),
            Some("write") => wr += f(&e["value"]),
            _ => {}
        }
    }
    vec![
        id.to_owned(),
        name.trim_start_matches('/').to_owned(),
        format!("{cpu_pct:.2}%"),
        format!("{} / {}", bytes_size(used), bytes_size(limit)),
        format!("{mem_pct:.2}%"),
        format!("{} / {}", human_size(rx), human_size(tx)),
        format!("{} / {}", human_size(rd), human_size(wr)),
        s["pids_stats"]["current"].as_u64().unwrap_or(0).to_string(),
    ]
}

pub async fn stats(ctx: &Ctx, a: StatsArgs) -> Result<i32, CliError> {
    let client = ctx.client()?;
    let explicit = !a.containers.is_empty();
    loop {
        let next = tokio::time::Instant::now() + Duration::from_secs(1);
        let names: Vec<String> = if explicit {
            a.containers.clone()
        } else {
            let list: Vec<Value> = client
                .json(ApiRequest::get("/containers/json").flag("all", a.all))
                .await?;
            list.iter()
                .filter_map(|c| c["Id"].as_str().map(str::to_owned))
                .collect()
        };
        let mut tw = TabWriter::new();
        tw.line("CONTAINER ID\tNAME\tCPU %\tMEM USAGE / LIMIT\tMEM %\tNET I/O\tBLOCK I/O\tPIDS");
        let mut failed = false;
        // All at once: each answer takes a second (two samples, a second apart).
        let asked: Vec<_> = names
            .iter()
            .map(|name| {
                let client = client.clone();
                let req = ApiRequest::get(cpath(name, "/stats")).query("stream", "false");
                tokio::spawn(async move { client.json::<Value>(req).await })
            })
            .collect();
        for (name, asked) in names.iter().zip(asked) {
            let answer = asked
                .await
                .map_err(|e| CliError::Msg(format!("stats of {name}: {e}")))?;
            match answer {
                Ok(s) => {
                    let id = s["id"].as_str().unwrap_or(name);
                    let id = if a.no_trunc {
                        id.to_owned()
                    } else {
                        short_id(id)
                    };
                    tw.line(&stats_row(&id, s["name"].as_str().unwrap_or(""), &s).join("\t"));
                }
                Err(e) if explicit => {
                    eprintln!("{}", crate::error_chain(&e));
                    failed = true;
                }
                Err(_) => {}
            }
        }
        if a.no_stream {
            tw.flush()?;
            return Ok(i32::from(failed));
        }
        print!("\x1b[2J\x1b[H");
        tw.flush()?;
        tokio::time::sleep_until(next).await;
    }
}

pub async fn port(ctx: &Ctx, a: PortArgs) -> Result<i32, CliError> {
    let client = ctx.client()?;
    let info = inspect_container(&client, &a.container).await?;
    let lines = port_lines(
        &info["NetworkSettings"]["Ports"],
        &a.container,
        a.port.as_deref(),
    )
    .map_err(CliError::Msg)?;
    for l in lines {
        println!("{l}");
    }
    Ok(0)
}

/// `docker port`'s output from inspect's `NetworkSettings.Ports`: every mapping as
/// `80/tcp -> 0.0.0.0:32768`, or for one PRIVATE_PORT[/PROTO] just its addresses; naturally
/// sorted. A port that is not in the map, or exposed but not published, is docker's error.
pub fn port_lines(
    ports: &Value,
    container: &str,
    want: Option<&str>,
) -> Result<Vec<String>, String> {
    let frontend = |b: &Value| {
        // Docker's daemon always fills HostIp; print its wildcard when a server leaves it empty.
        let ip = b["HostIp"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("0.0.0.0");
        join_host_port(ip, b["HostPort"].as_str().unwrap_or(""))
    };
    let bindings = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let mut lines: Vec<String> = match want {
        Some(spec) => {
            let (num, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
            if num.parse::<u16>().is_err() {
                return Err(format!("Error: invalid port ({num})"));
            }
            match ports.get(format!("{num}/{proto}")).filter(|v| !v.is_null()) {
                Some(list) => bindings(list).iter().map(frontend).collect(),
                None => {
                    return Err(format!(
                        "Error: No public port '{spec}' published for {container}"
                    ))
                }
            }
        }
        None => ports
            .as_object()
            .into_iter()
            .flatten()
            .flat_map(|(key, list)| {
                bindings(list)
                    .iter()
                    .map(|b| format!("{key} -> {}", frontend(b)))
                    .collect::<Vec<_>>()
            })
            .collect(),
    };
    lines.sort_by(|a, b| natural_cmp(a, b));
    Ok(lines)
}

/// "Up 3 seconds" style status from an inspect `State` (the list API gives `Status` ready-made).
pub fn state_status(state: &Value, now: DateTime<Utc>) -> String {
    let since = |k: &str| {
        state[k]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| human_duration(now - t.with_timezone(&Utc)))
    };
    if state["Running"].as_bool().unwrap_or(false) {
        return format!("Up {}", since("StartedAt").unwrap_or_default());
    }
    match since("FinishedAt") {
        Some(d)
            if !state["FinishedAt"]
                .as_str()
                .unwrap_or("")
                .starts_with("0001") =>
        {
            format!(
                "Exited ({}) {d} ago",
                state["ExitCode"].as_i64().unwrap_or(0)
            )
        }
        _ => "Created".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_rows_like_docker() {
        let now = Utc.timestamp_opt(1_000_000, 0).unwrap();
        let c = json!({
            "Id": "0123456789abcdef0123", "Names": ["/web", "/other/alias"], "Image": "nginx",
            "Command": "nginx -g 'daemon off;' --long-arg", "Created": 1_000_000 - 180,
            "Ports": [{"PrivatePort": 80, "PublicPort": 8080, "IP": "0.0.0.0", "Type": "tcp"},
                      {"PrivatePort": 443, "Type": "tcp"}, {"PrivatePort": 80, "PublicPort": 8080, "IP": "::", "Type": "tcp"}],
            "State": "running", "Status": "Up 3 seconds", "Labels": {"a": "b"},
        });
        let r = ps_row(&c, true, now);
        assert_eq!(r["ID"], "0123456789ab");
        assert_eq!(r["Names"], "web");
        assert_eq!(r["Command"], "\"nginx -g 'daemon of…\"");
        assert_eq!(r["RunningFor"], "3 minutes ago");
        assert_eq!(
            r["Ports"],
            "0.0.0.0:8080->80/tcp, 443/tcp, [::]:8080->80/tcp"
        );
        assert_eq!(r["Labels"], "a=b");
        let full = ps_row(&c, false, now);
        assert_eq!(full["ID"], "0123456789abcdef0123");
        assert_eq!(full["Names"], "web,other/alias");

        let t = Template::parse("table {{.ID}}\t{{.Names}}").unwrap();
        let mut tw = TabWriter::new();
        tw.line(&t.render(&ps_header()).unwrap());
        tw.line(&t.render(&r).unwrap());
        assert_eq!(tw.render(), "CONTAINER ID   NAMES\n0123456789ab   web\n");
    }

    #[test]
    fn filters() {
        let f = filters_json(&[
            "status=exited".into(),
            "label=a=b".into(),
            "status=created".into(),
        ])
        .unwrap();
        assert_eq!(
            f.as_deref(),
            Some(r#"{"label":["a=b"],"status":["exited","created"]}"#)
        );
        assert!(filters_json(&["nope".into()]).is_err());
        assert_eq!(filters_json(&[]).unwrap(), None);
    }

    #[test]
    fn time_args() {
        let now = Utc.timestamp_opt(10_000, 0).unwrap();
        let cases = [
            ("10m", "9400"),
            ("1h30m", "4600"),
            ("1.5s", "9998.500000000"),
            ("0s", "10000"),
            ("1970-01-01T00:00:10Z", "10"),
            ("1234", "1234"),
        ];
        for (i, (s, want)) in cases.iter().enumerate() {
            assert_eq!(parse_time_arg(s, now), *want, "test[{i}]");
        }
    }

    #[test]
    fn update_bodies() {
        let a = UpdateArgs {
            restart: Some("on-failure:2".into()),
            protection: Some(true),
            sg_add: vec!["web".into()],
            sg_rm: vec![],
            containers: vec!["c".into()],
        };
        assert_eq!(
            update_body(&a).unwrap(),
            json!({"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 2}, "Protection": true,
                   "SecurityGroups": {"Add": ["web"], "Remove": []}})
        );
        let empty = UpdateArgs {
            restart: None,
            protection: None,
            sg_add: vec![],
            sg_rm: vec![],
            containers: vec![],
        };
        assert!(update_body(&empty).is_err());
    }

    #[test]
    fn stats_math() {
        let s = json!({
            "cpu_stats": {"cpu_usage": {"total_usage": 200}, "system_cpu_usage": 2000, "online_cpus": 2},
            "precpu_stats": {"cpu_usage": {"total_usage": 100}, "system_cpu_usage": 1000},
            "memory_stats": {"usage": 1048576 * 2, "limit": 1048576 * 8, "stats": {"inactive_file": 1048576}},
            "networks": {"eth0": {"rx_bytes": 1000, "tx_bytes": 2000}},
            "pids_stats": {"current": 3},
        });
        let r = stats_row("abc", "/web", &s);
        assert_eq!(
            r,
            [
                "abc",
                "web",
                "20.00%",
                "1MiB / 8MiB",
                "12.50%",
                "1kB / 2kB",
                "0B / 0B",
                "3"
            ]
        );
    }

    #[test]
    fn port_output_like_docker() {
        let ports = json!({
            "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "32768"}, {"HostIp": "::", "HostPort": "32768"}],
            "10000/tcp": [{"HostIp": "", "HostPort": "40000"}],
            "9000/tcp": [{"HostIp": "0.0.0.0", "HostPort": "9000"}],
            "443/tcp": null,
        });
        assert_eq!(
            port_lines(&ports, "web", None).unwrap(),
            [
                "80/tcp -> 0.0.0.0:32768",
                "80/tcp -> [::]:32768",
                "9000/tcp -> 0.0.0.0:9000",
                "10000/tcp -> 0.0.0.0:40000"
            ]
        );
        assert_eq!(
            port_lines(&ports, "web", Some("80")).unwrap(),
            ["0.0.0.0:32768", "[::]:32768"]
        );
        assert_eq!(
            port_lines(&ports, "web", Some("9000/tcp")).unwrap(),
            ["0.0.0.0:9000"]
        );
        for (spec, want) in [
            ("81/tcp", "Error: No public port '81/tcp' published for web"),
            ("443", "Error: No public port '443' published for web"),
            ("80/udp", "Error: No public port '80/udp' published for web"),
            ("http", "Error: invalid port (http)"),
        ] {
            assert_eq!(port_lines(&ports, "web", Some(spec)).unwrap_err(), want);
        }
        assert!(port_lines(&Value::Null, "web", None).unwrap().is_empty());
    }

    #[test]
    fn status_from_state() {
        let now = DateTime::parse_from_rfc3339("2024-01-01T00:02:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let st = json!({"Running": false, "ExitCode": 3, "FinishedAt": "2024-01-01T00:00:00Z"});
        assert_eq!(state_status(&st, now), "Exited (3) 2 minutes ago");
        let st = json!({"Running": true, "StartedAt": "2024-01-01T00:01:57Z"});
        assert_eq!(state_status(&st, now), "Up 3 seconds");
    }
}
