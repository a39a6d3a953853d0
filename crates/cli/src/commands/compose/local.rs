//! The compose commands Hyper's client ran on its own side, over the ordinary API: `ps`
//! (containers by libcompose's labels), `logs`, `scale` (a new replica is a copy of the
//! service's first container, numbered on), `run` (a one-off container of the service, as
//! `hyper run` makes it), `pull`, `config`, and following a project after a foreground `up`.

use std::io::Write;

use http_body_util::BodyExt;
use serde_json::{json, Value};

use super::file::ComposeFile;
use super::{ConfigArgs, LogsArgs, Project, RunArgs};
use crate::commands::Ctx;
use crate::transport::{ApiRequest, Client};
use crate::CliError;

const PROJECT: &str = "sh.hyper.compose.project";
const SERVICE: &str = "sh.hyper.compose.service";
const NUMBER: &str = "sh.hyper.compose.container-number";
const ONEOFF: &str = "sh.hyper.compose.oneoff";

/// The project's containers (all states), as `GET /containers/json` lists them, by service
/// and number; one-off containers only with `oneoff`.
pub async fn project_containers(
    client: &Client,
    project: &str,
    services: &[String],
    oneoff: bool,
) -> Result<Vec<Value>, CliError> {
    let filters = json!({"label": {format!("{PROJECT}={project}"): true}});
    let list: Value = client
        .json(
            ApiRequest::get("/containers/json")
                .query("all", 1)
                .query("filters", filters.to_string()),
        )
        .await?;
    let label = |c: &Value, k: &str| c["Labels"][k].as_str().unwrap_or("").to_string();
    let mut v: Vec<Value> = list
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| services.is_empty() || services.contains(&label(c, SERVICE)))
        .filter(|c| oneoff || !label(c, ONEOFF).eq_ignore_ascii_case("true"))
        .collect();
    v.sort_by_key(|c| {
        (
            label(c, SERVICE),
            label(c, NUMBER).parse::<u32>().unwrap_or(0),
        )
    });
    Ok(v)
}

fn name_of(c: &Value) -> String {
    c["Names"][0]
        .as_str()
        .unwrap_or("")
        .trim_start_matches('/')
        .to_string()
}

/// docker-compose's State column: `Up`, `Up (healthy)`, `Exit 0`, `Paused`, `Created`.
fn state_column(c: &Value) -> String {
    let status = c["Status"].as_str().unwrap_or("");
    match c["State"].as_str().unwrap_or("") {
        "running" => {
            let mut s = "Up".to_string();
            for h in ["(healthy)", "(unhealthy)", "(health: starting)", "(Paused)"] {
                if status.contains(h) {
                    s = format!("Up {h}");
                }
            }
            s
        }
        "paused" => "Paused".into(),
        "exited" => {
            let code = status
                .split_once('(')
                .and_then(|(_, r)| r.split_once(')'))
                .map(|(c, _)| c.to_string())
                .unwrap_or_else(|| "0".into());
            format!("Exit {code}")
        }
        "restarting" => "Restarting".into(),
        other => {
            let mut s = other.to_string();
            if let Some(f) = s.get_mut(..1) {
                f.make_ascii_uppercase();
            }
            s
        }
    }
}

fn ports_column(c: &Value) -> String {
    let mut out: Vec<String> = c["Ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let private = p["PrivatePort"].as_u64().unwrap_or(0);
            let proto = p["Type"].as_str().unwrap_or("tcp");
            match p["PublicPort"].as_u64() {
                Some(public) if public > 0 => format!(
                    "{}:{public}->{private}/{proto}",
                    p["IP"]
                        .as_str()
                        .filter(|i| !i.is_empty())
                        .unwrap_or("0.0.0.0")
                ),
                _ => format!("{private}/{proto}"),
            }
        })
        .collect();
    out.dedup();
    out.join(", ")
}

/// `compose ps`: docker-compose's table (Name, Command, State, Ports), or the IDs.
pub async fn ps(
    ctx: &Ctx,
    project: &str,
    services: &[String],
    quiet: bool,
) -> Result<i32, CliError> {
    let client = ctx.client()?;
    let list = project_containers(&client, project, services, true).await?;
    let mut out = std::io::stdout().lock();
    if quiet {
        for c in &list {
            writeln!(out, "{}", c["Id"].as_str().unwrap_or(""))?;
        }
        return Ok(0);
    }
    let rows: Vec<[String; 4]> = list
        .iter()
        .map(|c| {
            [
                name_of(c),
                c["Command"].as_str().unwrap_or("").to_string(),
                state_column(c),
                ports_column(c),
            ]
        })
        .collect();
    let header = ["Name", "Command", "State", "Ports"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (i, cell) in r.iter().enumerate() {
            widths[i] = widths[i].max(cell.len());
        }
    }
    let line = |r: &[String; 4]| {
        format!(
            "{:<w0$}   {:<w1$}   {:<w2$}   {}",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        )
        .trim_end()
        .to_string()
    };
    writeln!(out, "{}", line(&header))?;
    let total = widths.iter().sum::<usize>() + 9;
    writeln!(out, "{}", "-".repeat(total))?;
    for r in &rows {
        writeln!(out, "{}", line(r))?;
    }
    Ok(0)
}

/// `compose pull`: every image of the file (or of the services named), one after another.
pub async fn pull(ctx: &Ctx, f: &ComposeFile, services: &[String]) -> Result<i32, CliError> {
    let client = ctx.client()?;
    let mut seen: Vec<String> = Vec::new();
    for (name, s) in &f.services {
        if !services.is_empty() && !services.contains(name) {
            continue;
        }
        let Some(image) = s["image"].as_str() else {
            continue;
        };
        if seen.iter().any(|i| i == image) {
            continue;
        }
        seen.push(image.to_string());
        eprintln!("Pulling {name} ({image})...");
        let auth = crate::commands::images::registry_auth_header(ctx, image);
        crate::commands::images::pull_image(&client, image, auth, true).await?;
    }
    Ok(0)
}

/// Prints one container's log lines as `name | line`; follows while `follow`.
async fn prefixed_logs(
    client: std::sync::Arc<Client>,
    id: String,
    prefix: String,
    tty: bool,
    follow: bool,
    timestamps: bool,
    tail: Option<String>,
) -> Result<(), CliError> {
    let req = ApiRequest::get(format!("/containers/{id}/logs"))
        .flag("stdout", true)
        .flag("stderr", true)
        .flag("follow", follow)
        .flag("timestamps", timestamps)
        .query_opt("tail", tail);
    let resp = client.send(req).await?;
    let mut body = resp.into_body();
    let mut demux = crate::stream::Demuxer::default();
    let mut pending: Vec<u8> = Vec::new();
    let emit = |pending: &mut Vec<u8>, last: bool| {
        let mut out = std::io::stdout().lock();
        while let Some(i) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=i).collect();
            let _ = writeln!(
                out,
                "{prefix}| {}",
                String::from_utf8_lossy(&line).trim_end_matches(['\n', '\r'])
            );
        }
        if last && !pending.is_empty() {
            let _ = writeln!(out, "{prefix}| {}", String::from_utf8_lossy(pending));
            pending.clear();
        }
    };
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(crate::transport::ApiError::from)?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        if tty {
            pending.extend_from_slice(data);
        } else {
            demux.push(data);
            while let Some((_, payload)) = demux.next_frame() {
                pending.extend_from_slice(&payload);
            }
        }
        emit(&mut pending, false);
    }
    emit(&mut pending, true);
    Ok(())
}

async fn follow_logs(
    ctx: &Ctx,
    containers: &[Value],
    follow: bool,
    timestamps: bool,
    tail: Option<String>,
) -> Result<(), CliError> {
    let client = ctx.client()?;
    let width = containers
        .iter()
        .map(|c| name_of(c).len())
        .max()
        .unwrap_or(0);
    let mut tasks = Vec::new();
    for c in containers {
        let id = c["Id"].as_str().unwrap_or("").to_string();
        let info: Value = client
            .json(ApiRequest::get(format!("/containers/{id}/json")))
            .await?;
        let tty = info["Config"]["Tty"].as_bool().unwrap_or(false);
        let prefix = format!("{:<width$} ", name_of(c));
        tasks.push(tokio::spawn(prefixed_logs(
            client.clone(),
            id,
            prefix,
            tty,
            follow,
            timestamps,
            tail.clone(),
        )));
    }
    for t in tasks {
        if let Ok(Err(e)) = t.await {
            eprintln!("{}", crate::error_chain(&e));
        }
    }
    Ok(())
}

/// `compose logs [-f]`: every container of the project (or of the services named).
pub async fn logs(ctx: &Ctx, project: &str, a: &LogsArgs) -> Result<i32, CliError> {
    let client = ctx.client()?;
    let list = project_containers(&client, project, &a.services, false).await?;
    follow_logs(ctx, &list, a.follow, a.timestamps, a.tail.clone()).await?;
    Ok(0)
}

/// After a foreground `up`: the containers' output until they all end or Ctrl-C, which
/// stops the project (as docker-compose does).
pub async fn attach_to_project(
    ctx: &Ctx,
    project: &str,
    services: &[String],
) -> Result<i32, CliError> {
    let client = ctx.client()?;
    let list = project_containers(&client, project, services, false).await?;
    let names: Vec<String> = list.iter().map(name_of).collect();
    eprintln!("Attaching to {}", names.join(", "));
    tokio::select! {
        r = follow_logs(ctx, &list, true, false, None) => { r?; Ok(0) }
        _ = tokio::signal::ctrl_c() => {
            eprintln!("Gracefully stopping... (press Ctrl+C again to force)");
            let req = super::request("stop", project, services).query("seconds", 10);
            tokio::select! {
                r = super::post_and_follow(ctx, req) => { r?; Ok(0) }
                _ = tokio::signal::ctrl_c() => Ok(130),
            }
        }
    }
}

/// `compose rm` without `-f`: lists the stopped containers and asks, as docker-compose does.
pub async fn confirm_rm(ctx: &Ctx, project: &str, services: &[String]) -> Result<bool, CliError> {
    let client = ctx.client()?;
    let stopped: Vec<String> = project_containers(&client, project, services, false)
        .await?
        .iter()
        .filter(|c| c["State"] != "running" && c["State"] != "paused")
        .map(name_of)
        .collect();
    if stopped.is_empty() {
        eprintln!("No stopped containers");
        return Ok(false);
    }
    eprintln!("Going to remove {}", stopped.join(", "));
    eprint!("Are you sure? [yN] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// A create body copying `info` (a container of the service) as replica `number`.
fn replica_body(info: &Value, service: &str, number: u32) -> Value {
    let cfg = &info["Config"];
    let hc = &info["HostConfig"];
    let mut labels = cfg["Labels"].clone();
    labels[NUMBER] = json!(number.to_string());
    let id = info["Id"].as_str().unwrap_or("");
    let network = hc["NetworkMode"].as_str().unwrap_or("default").to_string();
    let links = info["NetworkSettings"]["Networks"][&network]["Links"].clone();
    let mut body = json!({
        "Image": cfg["Image"],
        "Env": cfg["Env"],
        "Cmd": cfg["Cmd"],
        "Entrypoint": cfg["Entrypoint"],
        "Labels": labels,
        "WorkingDir": cfg["WorkingDir"],
        "Tty": cfg["Tty"],
        "OpenStdin": cfg["OpenStdin"],
        "Domainname": cfg["Domainname"],
        "ExposedPorts": cfg["ExposedPorts"],
        "Volumes": cfg["Volumes"],
        "HostConfig": {
            "Binds": hc["Binds"],
            "Links": links,
            "PortBindings": hc["PortBindings"],
            "RestartPolicy": hc["RestartPolicy"],
            "NetworkMode": network,
        },
        "NetworkingConfig": {"EndpointsConfig": {network.clone(): {"Aliases": [service]}}},
    });
    if !cfg["Healthcheck"].is_null() {
        body["Healthcheck"] = cfg["Healthcheck"].clone();
    }
    let hostname = cfg["Hostname"].as_str().unwrap_or("");
    if !hostname.is_empty() && !id.starts_with(hostname) {
        body["Hostname"] = json!(hostname);
    }
    body
}

/// `compose scale SVC=N...`: new replicas are copies of the service's first container
/// (numbered on, started); extra ones, the highest numbers first, are stopped and removed.
pub async fn scale(
    ctx: &Ctx,
    project: &str,
    scales: &[String],
    timeout: i64,
) -> Result<i32, CliError> {
    let client = ctx.client()?;
    for s in scales {
        let (service, n) = s
            .split_once('=')
            .and_then(|(svc, n)| Some((svc.to_string(), n.parse::<u32>().ok()?)))
            .ok_or_else(|| CliError::Msg(format!("Invalid scale {s:?}: use SERVICE=NUM")))?;
        let current =
            project_containers(&client, project, std::slice::from_ref(&service), false).await?;
        let Some(first) = current.first() else {
            return Err(CliError::Msg(format!(
                "ERROR: service {service} of project {project} has no container: run hyper compose up first"
            )));
        };
        let number = |c: &Value| {
            c["Labels"][NUMBER]
                .as_str()
                .and_then(|n| n.parse::<u32>().ok())
                .unwrap_or(0)
        };
        let first_id = first["Id"].as_str().unwrap_or("").to_string();
        let info: Value = client
            .json(ApiRequest::get(format!("/containers/{first_id}/json")))
            .await?;
        // A service with a fixed container_name has one container.
        if n > 1 && !name_of(first).starts_with(&format!("{project}-{service}-")) {
            return Err(CliError::Msg(format!(
                "ERROR: service {service} has a fixed container_name and cannot be scaled"
            )));
        }
        let mut next = current.iter().map(number).max().unwrap_or(0) + 1;
        let mut count = current.len() as u32;
        while count < n {
            let name = format!("{project}-{service}-{next}");
            eprintln!("Creating {name} ...");
            let created: Value = client
                .json(
                    ApiRequest::post("/containers/create")
                        .query("name", &name)
                        .json(&replica_body(&info, &service, next)),
                )
                .await?;
            let id = created["Id"].as_str().unwrap_or("").to_string();
            client
                .call(ApiRequest::post(format!("/containers/{id}/start")))
                .await?;
            eprintln!("Creating {name} ... done");
            next += 1;
            count += 1;
        }
        let mut extra: Vec<&Value> = current.iter().collect();
        extra.sort_by_key(|c| std::cmp::Reverse(number(c)));
        for c in extra.into_iter().take(count.saturating_sub(n) as usize) {
            let id = c["Id"].as_str().unwrap_or("");
            let name = name_of(c);
            eprintln!("Stopping and removing {name} ...");
            client
                .call(ApiRequest::post(format!("/containers/{id}/stop")).query("t", timeout))
                .await?;
            client
                .call(
                    ApiRequest::delete(format!("/containers/{id}"))
                        .query("v", 1)
                        .query("force", 1),
                )
                .await?;
            eprintln!("Stopping and removing {name} ... done");
        }
    }
    Ok(0)
}

#[derive(clap::Parser)]
#[command(name = "run", disable_help_flag = true)]
struct RunWrap {
    #[command(flatten)]
    a: crate::commands::run::RunArgs,
}

/// `compose run SVC [CMD...]`: a one-off container of the service (labelled `oneoff=True`,
/// named `<project>-<service>-run-<n>`) on the project's network, run as `hyper run` runs one.
pub async fn run(ctx: &Ctx, p: &Project, a: RunArgs) -> Result<i32, CliError> {
    use clap::Parser;
    let f = p.file();
    let svc = f
        .services
        .get(&a.service)
        .ok_or_else(|| CliError::Msg(format!("ERROR: No such service: {}", a.service)))?;
    let client = ctx.client()?;
    let existing = project_containers(&client, &p.name, &[], true).await?;
    if !a.no_deps {
        let mut deps: Vec<String> = Vec::new();
        for l in svc["links"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            deps.push(l.split(':').next().unwrap_or(l).to_string());
        }
        match &svc["depends_on"] {
            Value::Array(d) => deps.extend(d.iter().filter_map(Value::as_str).map(String::from)),
            Value::Object(o) => deps.extend(o.keys().cloned()),
            _ => {}
        }
        if !deps.is_empty() {
            let body = f.wrapper(super::auths(ctx));
            let req = super::request("up", &p.name, &deps).json(&body);
            super::post_and_follow(ctx, req).await?;
        }
    }
    let n = existing
        .iter()
        .filter(|c| {
            c["Labels"][ONEOFF]
                .as_str()
                .is_some_and(|o| o.eq_ignore_ascii_case("true"))
        })
        .count()
        + 1;
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{}-run-{n}", p.name, a.service));
    let mut args: Vec<String> = vec!["run".into(), "--name".into(), name];
    let push = |args: &mut Vec<String>, flag: &str, v: &str| {
        args.push(flag.into());
        args.push(v.into());
    };
    if a.detach {
        args.push("-d".into());
    } else {
        args.push("-i".into());
        if !a.no_tty && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            args.push("-t".into());
        }
    }
    if a.rm {
        args.push("--rm".into());
    }
    push(&mut args, "--network", &format!("{}_default", p.name));
    push(&mut args, "--network-alias", &a.service);
    for (k, v) in [
        (PROJECT, p.name.as_str()),
        (SERVICE, a.service.as_str()),
        (ONEOFF, "True"),
        (NUMBER, &n.to_string()),
    ] {
        push(&mut args, "-l", &format!("{k}={v}"));
    }
    if let Some(labels) = svc["labels"].as_object() {
        for (k, v) in labels {
            push(
                &mut args,
                "-l",
                &format!("{k}={}", v.as_str().unwrap_or("")),
            );
        }
    }
    for e in svc["environment"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        push(&mut args, "-e", e);
    }
    for e in &a.env {
        push(&mut args, "-e", e);
    }
    let str_of = |k: &str| svc[k].as_str().filter(|s| !s.is_empty());
    if let Some(w) = str_of("working_dir") {
        push(&mut args, "-w", w);
    }
    if let Some(h) = str_of("hostname") {
        push(&mut args, "--hostname", h);
    }
    if let Some(s) = str_of("size") {
        push(&mut args, "--size", s);
    }
    for g in svc["security_groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        push(&mut args, "--sg", g);
    }
    if svc["noauto_volume"] == true {
        args.push("--noauto-volume".into());
    }
    for v in svc["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let v = match v.split_once(':') {
            Some((src, rest))
                if f.volumes.contains_key(src) && f.volumes[src]["External"] != true =>
            {
                format!("{}_{src}:{rest}", p.name)
            }
            _ => v.to_string(),
        };
        push(&mut args, "-v", &v);
    }
    for l in svc["links"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let (target, alias) = l.split_once(':').unwrap_or((l, l));
        let container = existing
            .iter()
            .find(|c| c["Labels"][SERVICE] == target && c["Labels"][ONEOFF] != "True")
            .map(name_of)
            .unwrap_or_else(|| format!("{}-{target}-1", p.name));
        push(&mut args, "--link", &format!("{container}:{alias}"));
    }
    let strings = |k: &str| -> Vec<String> {
        svc[k]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect()
    };
    let mut cmd: Vec<String> = if a.command.is_empty() {
        strings("command")
    } else {
        a.command.clone()
    };
    let entry = strings("entrypoint");
    if let Some((first, rest)) = entry.split_first() {
        push(&mut args, "--entrypoint", first);
        let mut c = rest.to_vec();
        c.extend(cmd);
        cmd = c;
    }
    args.push(svc["image"].as_str().unwrap_or("").to_string());
    args.extend(cmd);
    let wrap = RunWrap::try_parse_from(&args).map_err(|e| CliError::Msg(e.to_string()))?;
    crate::commands::run::run(ctx, wrap.a).await
}

/// `compose config`: the project as it will be posted (YAML), or only names.
pub fn config(f: &ComposeFile, a: &ConfigArgs) -> Result<i32, CliError> {
    if a.quiet {
        return Ok(0);
    }
    if a.services {
        for s in f.services.keys() {
            println!("{s}");
        }
        return Ok(0);
    }
    if a.volumes {
        for v in f.volumes.keys() {
            println!("{v}");
        }
        return Ok(0);
    }
    let mut volumes = serde_json::Map::new();
    for (name, v) in &f.volumes {
        let mut o = serde_json::Map::new();
        if v["Driver"].as_str().is_some_and(|d| !d.is_empty()) {
            o.insert("driver".into(), v["Driver"].clone());
        }
        if v["DriverOpts"].as_object().is_some_and(|m| !m.is_empty()) {
            o.insert("driver_opts".into(), v["DriverOpts"].clone());
        }
        if v["External"] == true {
            o.insert("external".into(), json!(true));
        }
        volumes.insert(name.clone(), Value::Object(o));
    }
    let mut doc = json!({"version": "2", "services": f.services});
    if !volumes.is_empty() {
        doc["volumes"] = Value::Object(volumes);
    }
    let text = serde_yaml_ng::to_string(&doc).map_err(|e| CliError::Msg(e.to_string()))?;
    print!("{text}");
    Ok(0)
}
