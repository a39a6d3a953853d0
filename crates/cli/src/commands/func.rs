//! `func create|ls|inspect|update|rm|call|get|logs|status`: Hyper's serverless functions.
//! Management goes to `/funcs` (signed); calls, outputs, logs and status go to the function
//! endpoint's paths (`/call/NAME/UUID`...), unsigned, as Hyper's client sends them: the UUID,
//! learnt from a signed `GET /funcs/NAME`, is the credential. They go to the daemon's
//! endpoint, or to `https://$HYPER_FUNC_ENDPOINT` (port 443 unless given) when it is set.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};
use http_body_util::BodyExt;
use serde_json::{json, Map, Value};
use tokio::io::AsyncBufReadExt;

use super::{for_each, inspect_each, Ctx};
use crate::commands::run::{env_list, label_map};
use crate::transport::{ApiRequest, Client};
use crate::CliError;

/// Our extension field: how many calls may run at once.
const CONCURRENCY_FIELD: &str = "MaxConcurrency";

#[derive(Subcommand, Debug)]
pub enum FuncCmd {
    /// Create a new function
    Create(Box<FuncCreateArgs>),
    /// Update a function
    Update(FuncUpdateArgs),
    /// Lists all functions
    #[command(alias = "list")]
    Ls(FuncLsArgs),
    /// Remove one or more functions
    #[command(alias = "remove")]
    Rm(FuncNamesArgs),
    /// Display detailed information on the given function
    Inspect(FuncInspectArgs),
    /// Call a function (stdin, when it is not a terminal, is the payload)
    Call(FuncCallArgs),
    /// Get the return of a function call
    Get(FuncGetArgs),
    /// Retrieve the logs of a function
    Logs(FuncLogsArgs),
    /// Retrieve the status of a function
    Status(FuncNameArg),
}

#[derive(Args, Debug)]
pub struct FuncCreateArgs {
    /// Function name (default: a random one)
    #[arg(long)]
    pub name: Option<String>,
    /// The size of the function's containers (s1..s4, m1..m3, l1..l3)
    #[arg(long, default_value = "s4")]
    pub size: String,
    /// The longest a call may run, in seconds
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// How many calls may run at once (each in its own VM; more wait their turn)
    #[arg(long = "max-concurrency")]
    pub max_concurrency: Option<u32>,
    /// Set environment variables
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long = "env-file")]
    pub env_file: Vec<PathBuf>,
    /// Set meta data on the function's containers
    #[arg(short = 'l', long = "label")]
    pub labels: Vec<String>,
    /// Security group for each call's container (repeatable)
    #[arg(long = "sg")]
    pub sg: Vec<String>,
    /// Do not create volumes specified in the image
    #[arg(long = "noauto-volume")]
    pub noauto_volume: bool,
    /// Expose a port
    #[arg(long)]
    pub expose: Vec<String>,
    /// Overwrite the default ENTRYPOINT of the image
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Add link to another container
    #[arg(long)]
    pub link: Vec<String>,
    /// Signal to stop a call's container
    #[arg(long = "stop-signal", default_value = "SIGTERM")]
    pub stop_signal: String,
    #[arg(value_name = "IMAGE")]
    pub image: String,
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct FuncUpdateArgs {
    /// The size of the function's containers
    #[arg(long)]
    pub size: Option<String>,
    /// The longest a call may run, in seconds
    #[arg(long)]
    pub timeout: Option<u64>,
    /// How many calls may run at once
    #[arg(long = "max-concurrency")]
    pub max_concurrency: Option<u32>,
    /// Set environment variables (replaces them all; -e "" clears them)
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long = "env-file")]
    pub env_file: Vec<PathBuf>,
    /// Give the function a new UUID: its old call URL stops working
    #[arg(long)]
    pub refresh: bool,
    #[arg(value_name = "NAME")]
    pub name: String,
}

#[derive(Args, Debug)]
pub struct FuncLsArgs {
    /// Filter output based on conditions provided (name=, image=)
    #[arg(short = 'f', long = "filter")]
    pub filter: Vec<String>,
    /// Only display names
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct FuncNamesArgs {
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct FuncInspectArgs {
    /// Format the output using the given go template
    #[arg(short = 'f', long)]
    pub format: Option<String>,
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct FuncCallArgs {
    /// Block until the call is completed and print its output
    #[arg(long)]
    pub sync: bool,
    #[arg(value_name = "NAME")]
    pub name: String,
}

#[derive(Args, Debug)]
pub struct FuncGetArgs {
    /// Block until the call is completed
    #[arg(long)]
    pub wait: bool,
    #[arg(value_name = "CALL_ID")]
    pub call: String,
}

#[derive(Args, Debug)]
pub struct FuncLogsArgs {
    /// Follow log output
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Number of lines to show from the end of the logs
    #[arg(long, default_value = "all")]
    pub tail: String,
    /// Only retrieve the logs of this call
    #[arg(long = "callid")]
    pub call: Option<String>,
    #[arg(value_name = "NAME")]
    pub name: String,
}

#[derive(Args, Debug)]
pub struct FuncNameArg {
    #[arg(value_name = "NAME")]
    pub name: String,
}

/// Names as Hyper's client sends them: without any `/`.
fn clean(name: &str) -> String {
    name.replace('/', "")
}

/// The `POST /funcs/create` body, shaped as Hyper's client sends it.
pub fn create_body(
    a: &FuncCreateArgs,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Value, String> {
    let env = env_list(&a.env, &a.env_file, lookup)?;
    let mut labels = label_map(&a.labels);
    for sg in a.sg.iter().filter(|s| !s.is_empty()) {
        labels.insert(format!("sh_hyper_sg_{sg}"), json!("yes"));
    }
    if a.noauto_volume {
        labels.insert("sh_hyper_noauto_volume".into(), json!("true"));
    }
    let mut ports = Map::new();
    for e in &a.expose {
        if e.contains(':') {
            return Err(format!("Invalid port format for --expose: {e}"));
        }
        let p = if e.contains('/') {
            e.clone()
        } else {
            format!("{e}/tcp")
        };
        ports.insert(p, json!({}));
    }
    let mut config = json!({"Env": env, "Image": a.image, "StopSignal": a.stop_signal});
    if a.tty {
        config["Tty"] = json!(true);
    }
    if !a.command.is_empty() {
        config["Cmd"] = json!(a.command);
    }
    if let Some(e) = &a.entrypoint {
        config["Entrypoint"] = json!([e]);
    }
    if let Some(w) = &a.workdir {
        config["WorkingDir"] = json!(w);
    }
    if !labels.is_empty() {
        config["Labels"] = Value::Object(labels);
    }
    if !ports.is_empty() {
        config["ExposedPorts"] = Value::Object(ports);
    }
    let mut host = json!({"NetworkMode": "bridge"});
    if !a.link.is_empty() {
        host["Links"] = json!(a.link);
    }
    let mut body = json!({
        "Name": a.name.as_deref().map(clean).unwrap_or_default(),
        "ContainerSize": a.size,
        "Timeout": a.timeout,
        "Created": "0001-01-01T00:00:00Z",
        "Config": config,
        "HostConfig": host,
        "NetworkingConfig": {"EndpointsConfig": {}},
    });
    if let Some(n) = a.max_concurrency {
        body[CONCURRENCY_FIELD] = json!(n);
    }
    Ok(body)
}

/// The `PUT /funcs/NAME` body: only what changes.
pub fn update_body(
    a: &FuncUpdateArgs,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Value, String> {
    let mut config = json!({});
    if !a.env.is_empty() || !a.env_file.is_empty() {
        let mut env = env_list(&a.env, &a.env_file, lookup)?;
        if env.iter().any(String::is_empty) {
            env.clear();
        }
        config["Env"] = json!(env);
    }
    let mut body = json!({"Name": clean(&a.name), "Created": "0001-01-01T00:00:00Z",
        "Config": config, "HostConfig": {}, "NetworkingConfig": {"EndpointsConfig": null}});
    if let Some(s) = a.size.as_deref().filter(|s| !s.is_empty()) {
        body["ContainerSize"] = json!(s);
    }
    if let Some(t) = a.timeout.filter(|t| *t != 0) {
        body["Timeout"] = json!(t);
    }
    if a.refresh {
        body["Refresh"] = json!(true);
    }
    if let Some(n) = a.max_concurrency {
        body[CONCURRENCY_FIELD] = json!(n);
    }
    Ok(body)
}

/// Where the function endpoint's requests go: `$HYPER_FUNC_ENDPOINT` (TLS, port 443 unless
/// given) or the daemon's own endpoint.
fn endpoint_client(ctx: &Ctx) -> Result<Arc<Client>, CliError> {
    match std::env::var("HYPER_FUNC_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
    {
        None => ctx.client(),
        Some(host) => {
            let host = host
                .trim_start_matches("https://")
                .trim_end_matches('/')
                .to_string();
            let with_port = match host.rsplit_once(':') {
                Some((_, p)) if p.parse::<u16>().is_ok() => host,
                _ => format!("{host}:443"),
            };
            let ca = std::env::var_os("HYPER_TLSCACERT").map(PathBuf::from);
            Ok(Arc::new(Client::new(
                &format!("https://{with_port}"),
                None,
                ca.as_deref(),
            )?))
        }
    }
}

/// The call URL `create` prints.
fn call_url(ctx: &Ctx, name: &str, uuid: &str) -> String {
    let path = format!("/call/{name}/{uuid}");
    if let Some(host) = std::env::var("HYPER_FUNC_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
    {
        return format!("https://{}{path}", host.trim_start_matches("https://"));
    }
    match crate::transport::Endpoint::parse(&ctx.endpoint) {
        Ok(crate::transport::Endpoint::Tcp { host, port, tls }) => {
            let scheme = if tls { "https" } else { "http" };
            format!("{scheme}://{host}:{port}{path}")
        }
        _ => format!("{path} on {}", ctx.endpoint),
    }
}

/// A function's UUID, learnt as Hyper's client does (signed `GET /funcs/NAME`).
async fn uuid_of(ctx: &Ctx, name: &str) -> Result<String, CliError> {
    let f: Value = ctx
        .client()?
        .json(ApiRequest::get(format!("/funcs/{name}")))
        .await?;
    Ok(f["UUID"].as_str().unwrap_or_default().to_string())
}

/// A request on the function endpoint: unsigned, no version prefix.
fn endpoint_request(method: http::Method, path: String) -> ApiRequest {
    ApiRequest::new(method, path).unversioned().unsigned()
}

fn read_payload() -> Result<Vec<u8>, CliError> {
    let mut stdin = std::io::stdin();
    let mut payload = Vec::new();
    if !stdin.is_terminal() {
        stdin.read_to_end(&mut payload)?;
    }
    Ok(payload)
}

/// One line of `func logs`, as Hyper's client prints it.
pub fn log_line(v: &Value) -> Option<String> {
    let event = v["Event"].as_str().filter(|e| !e.is_empty())?;
    let time = v["Time"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string()
        })
        .unwrap_or_default();
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    let call = s("CallId");
    Some(match event {
        "CALL" => format!(
            "{time} [{event}] CallId: {call}, ShortStdin: {}",
            s("ShortStdin")
        ),
        "FINISHED" => format!(
            "{time} [{event}] CallId: {call}, ShortStdout: {}, ShortStderr: {}",
            s("ShortStdout"),
            s("ShortStderr")
        ),
        "FAILED" => format!("{time} [{event}] CallId: {call}, Message: {}", s("Message")),
        _ => format!("{time} [{event}] CallId: {call}"),
    })
}

fn print_log_objects(body: &[u8]) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    for v in serde_json::Deserializer::from_slice(body).into_iter::<Value>() {
        let v = v.map_err(|e| CliError::Msg(format!("reading the logs: {e}")))?;
        if let Some(line) = log_line(&v) {
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}

pub async fn func_cmd(ctx: &Ctx, c: FuncCmd) -> Result<i32, CliError> {
    match c {
        FuncCmd::Create(a) => {
            let body = create_body(&a, &|k| std::env::var(k).ok()).map_err(CliError::Msg)?;
            let f: Value = ctx
                .client()?
                .json(ApiRequest::post("/funcs/create").json(&body))
                .await?;
            let name = f["Name"].as_str().unwrap_or_default();
            let uuid = f["UUID"].as_str().unwrap_or_default();
            println!(
                "{name} is created with the address of {}",
                call_url(ctx, name, uuid)
            );
            Ok(0)
        }
        FuncCmd::Update(a) => {
            let body = update_body(&a, &|k| std::env::var(k).ok()).map_err(CliError::Msg)?;
            let name = clean(&a.name);
            let f: Value = ctx
                .client()?
                .json(ApiRequest::put(format!("/funcs/{name}")).json(&body))
                .await?;
            println!("{}", f["Name"].as_str().unwrap_or(&name));
            Ok(0)
        }
        FuncCmd::Rm(a) => {
            let client = ctx.client()?;
            for_each(&a.names, |name| {
                let client = client.clone();
                async move {
                    let name = clean(&name);
                    client
                        .call(ApiRequest::delete(format!("/funcs/{name}")))
                        .await?;
                    Ok(Some(name))
                }
            })
            .await
        }
        FuncCmd::Ls(a) => ls(ctx, a).await,
        FuncCmd::Inspect(a) => {
            let names: Vec<String> = a.names.iter().map(|n| clean(n)).collect();
            inspect_each(ctx, a.format.as_deref(), &names, |n| format!("/funcs/{n}")).await
        }
        FuncCmd::Call(a) => {
            let name = clean(&a.name);
            let uuid = uuid_of(ctx, &name).await?;
            let payload = read_payload()?;
            let path = match a.sync {
                true => format!("/call/{name}/{uuid}/sync"),
                false => format!("/call/{name}/{uuid}"),
            };
            let req = endpoint_request(http::Method::POST, path)
                .body(payload.into(), "application/octet-stream");
            let body = endpoint_client(ctx)?.call(req).await?;
            if a.sync {
                std::io::stdout().lock().write_all(&body)?;
            } else {
                let v: Value =
                    serde_json::from_slice(&body).map_err(crate::transport::ApiError::Decode)?;
                println!("CallId: {}", v["CallId"].as_str().unwrap_or_default());
            }
            Ok(0)
        }
        FuncCmd::Get(a) => {
            let f: Value = ctx
                .client()?
                .json(ApiRequest::get(format!("/funcs/call/{}", a.call)))
                .await?;
            let (name, uuid) = (
                f["Name"].as_str().unwrap_or_default(),
                f["UUID"].as_str().unwrap_or_default(),
            );
            let mut path = format!("/output/{name}/{uuid}/{}", a.call);
            if a.wait {
                path.push_str("/wait");
            }
            let body = endpoint_client(ctx)?
                .call(endpoint_request(http::Method::GET, path))
                .await?;
            std::io::stdout().lock().write_all(&body)?;
            Ok(0)
        }
        FuncCmd::Logs(a) => logs(ctx, a).await,
        FuncCmd::Status(a) => {
            let name = clean(&a.name);
            let uuid = uuid_of(ctx, &name).await?;
            let req = endpoint_request(http::Method::GET, format!("/status/{name}/{uuid}"))
                .query("list", "false");
            let v: Value = endpoint_client(ctx)?.json(req).await?;
            let mut tw = crate::table::TabWriter::new();
            tw.line("TOTAL\tPENDING\tRUNNING\tFINISHED\tFAILED");
            let n = |k: &str| v[k].as_u64().unwrap_or(0);
            tw.line(&format!(
                "{}\t{}\t{}\t{}\t{}",
                n("Total"),
                n("Pending"),
                n("Running"),
                n("Finished"),
                n("Failed")
            ));
            tw.flush()?;
            Ok(0)
        }
    }
}

async fn ls(ctx: &Ctx, a: FuncLsArgs) -> Result<i32, CliError> {
    let mut filters: Map<String, Value> = Map::new();
    for f in &a.filter {
        let (k, v) = f.split_once('=').ok_or_else(|| {
            CliError::Msg(format!("Bad format of filter (expected name=value): {f}"))
        })?;
        let entry = filters.entry(k.to_string()).or_insert_with(|| json!({}));
        entry[v] = json!(true);
    }
    let mut req = ApiRequest::get("/funcs");
    if !filters.is_empty() {
        req = req.query("filters", Value::Object(filters));
    }
    let list: Vec<Value> = ctx.client()?.json(req).await?;
    if a.quiet {
        for f in &list {
            println!("{}", f["Name"].as_str().unwrap_or_default());
        }
        return Ok(0);
    }
    let now = chrono::Utc::now();
    let mut tw = crate::table::TabWriter::new();
    tw.line("NAME\tSIZE\tIMAGE\tCOMMAND\tCREATED\tUUID");
    for f in &list {
        let s = |k: &str| f[k].as_str().unwrap_or_default().to_string();
        let cmd: Vec<&str> = f["Config"]["Cmd"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let created = chrono::DateTime::parse_from_rfc3339(&s("Created"))
            .map(|t| crate::table::ago(t.timestamp(), now))
            .unwrap_or_default();
        tw.line(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            s("Name"),
            s("ContainerSize"),
            f["Config"]["Image"].as_str().unwrap_or_default(),
            cmd.join(" "),
            created,
            s("UUID")
        ));
    }
    tw.flush()?;
    Ok(0)
}

async fn logs(ctx: &Ctx, a: FuncLogsArgs) -> Result<i32, CliError> {
    let name = clean(&a.name);
    let uuid = uuid_of(ctx, &name).await?;
    let mut req = endpoint_request(http::Method::GET, format!("/logs/{name}/{uuid}/"));
    if let Some(c) = &a.call {
        req = req.query("callid", c);
    }
    if a.follow {
        req = req.query("follow", "true");
    }
    req = req.query("tail", &a.tail);
    let client = endpoint_client(ctx)?;
    if !a.follow {
        let resp = client.send(req).await?;
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(crate::transport::ApiError::Http)?
            .to_bytes();
        print_log_objects(&body)?;
        return Ok(0);
    }
    let io = client.hijack(req).await?;
    let mut lines = tokio::io::BufReader::new(io).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&line)
            .map_err(|e| CliError::Msg(format!("reading the logs: {e}")))?;
        if let Some(l) = log_line(&v) {
            println!("{l}");
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct T {
        #[command(subcommand)]
        c: FuncCmd,
    }

    #[test]
    fn create_sends_what_hypers_client_sends() {
        let t = T::parse_from([
            "t",
            "create",
            "--name",
            "my/fn",
            "-e",
            "A=1",
            "--sg",
            "web",
            "--max-concurrency",
            "2",
            "busybox",
            "sh",
            "-c",
            "tr a-z A-Z",
        ]);
        let FuncCmd::Create(a) = t.c else { panic!() };
        let b = create_body(&a, &|_| None).unwrap();
        assert_eq!(b["Name"], "myfn");
        assert_eq!(b["ContainerSize"], "s4");
        assert_eq!(b["Timeout"], 300);
        assert_eq!(b["Config"]["Cmd"], json!(["sh", "-c", "tr a-z A-Z"]));
        assert_eq!(b["Config"]["Env"], json!(["A=1"]));
        assert_eq!(b["Config"]["Labels"]["sh_hyper_sg_web"], "yes");
        assert_eq!(b["Config"]["StopSignal"], "SIGTERM");
        assert_eq!(b["HostConfig"]["NetworkMode"], "bridge");
        assert_eq!(b["MaxConcurrency"], 2);
    }

    #[test]
    fn update_sends_only_changes() {
        let t = T::parse_from(["t", "update", "--refresh", "f"]);
        let FuncCmd::Update(a) = t.c else { panic!() };
        let b = update_body(&a, &|_| None).unwrap();
        assert_eq!(b["Refresh"], true);
        assert!(b.get("Timeout").is_none() && b["Config"].get("Env").is_none());
        let t = T::parse_from(["t", "update", "-e", "", "--timeout", "9", "f"]);
        let FuncCmd::Update(a) = t.c else { panic!() };
        let b = update_body(&a, &|_| None).unwrap();
        assert_eq!(b["Config"]["Env"], json!([]));
        assert_eq!(b["Timeout"], 9);
    }

    #[test]
    fn log_lines_read_as_hypers() {
        let v =
            json!({"Time":"2026-01-02T03:04:05.123Z","Event":"FAILED","CallId":"c","Message":"m"});
        assert_eq!(
            log_line(&v).unwrap(),
            "2026-01-02T03:04:05Z [FAILED] CallId: c, Message: m"
        );
        assert!(log_line(&json!({"Event": ""})).is_none());
    }
}
