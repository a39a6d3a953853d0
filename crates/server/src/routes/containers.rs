//! `/containers/...`: create, list, inspect, lifecycle, logs, attach, top, stats.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::Utc;
use node::logs::LogReader;
use node::model::{Container, ContainerConfig, HostConfig, RestartPolicy};
use node::WaitCondition;
use serde_json::{json, Value};

use super::{flag, int, Params};
use crate::docker_json;
use crate::error::{ApiError, ApiResult};
use crate::fleet_link::Placed;
use crate::streams;
use crate::transport::{Peer, TenantId};
use crate::AppState;

#[cfg(test)]
mod fuzz;

/// Docker's `--memory` and `--cpus` (compose's `mem_limit`, `cpus`) choose the smallest Hyper
/// size that holds them, recorded as the size label (inspect shows it). Beside an explicit
/// size they would be ambiguous: refused.
fn size_from_resources(hc: &Value, config: &mut ContainerConfig) -> ApiResult<()> {
    let memory = hc["Memory"].as_u64().unwrap_or(0);
    let nano_cpus = hc["NanoCpus"].as_u64().unwrap_or(0);
    if memory == 0 && nano_cpus == 0 {
        return Ok(());
    }
    if config.labels.contains_key(node::sizes::SIZE_LABEL) {
        return Err(ApiError::bad_request(
            "give either a size (--size) or --memory/--cpus, not both",
        ));
    }
    let size = node::sizes::smallest_holding(memory, nano_cpus)?;
    config
        .labels
        .insert(node::sizes::SIZE_LABEL.into(), size.name.into());
    Ok(())
}

/// `NetworkingConfig.EndpointsConfig` (what compose sends): the network to join, when
/// `NetworkMode` does not name it already, and the container's aliases on it. One network per
/// container: each VM has one network interface.
fn endpoint_request(body: &Value, hc: &mut HostConfig) -> ApiResult<Vec<String>> {
    let Some(endpoints) = body["NetworkingConfig"]["EndpointsConfig"].as_object() else {
        return Ok(Vec::new());
    };
    if endpoints.len() > 1 {
        return Err(ApiError::not_implemented(
            "hyper connects a container to one network: each VM has one network interface",
        ));
    }
    let Some((name, config)) = endpoints.iter().next() else {
        return Ok(Vec::new());
    };
    if matches!(hc.network_mode.as_str(), "" | "default") {
        hc.network_mode = name.clone();
    }
    // Links given per network (compose sends them so) are the container's links; the Docker
    // CLI sends each in both places.
    for link in config["Links"].as_array().into_iter().flatten() {
        if let Some(link) = link.as_str().filter(|l| !hc.links.iter().any(|h| h == l)) {
            hc.links.push(link.to_string());
        }
    }
    Ok(config["Aliases"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default())
}

/// A create's body as the runtime takes it: config, host config and network aliases; what
/// hyper does not do refused first (501), then what does not parse (400).
pub(crate) fn create_request(body: &[u8]) -> ApiResult<(ContainerConfig, HostConfig, Vec<String>)> {
    let raw: Value = super::json_body(body, "JSON body")?;
    super::unsupported::refuse_unsupported(&raw)?;
    let mut config: ContainerConfig = serde_json::from_value(raw.clone())
        .map_err(|e| ApiError::bad_request(format!("invalid container config: {e}")))?;
    if config.image.is_empty() {
        return Err(ApiError::bad_request("no image given"));
    }
    let mut host_config: HostConfig = match &raw["HostConfig"] {
        Value::Null => HostConfig::default(),
        hc => serde_json::from_value(hc.clone())
            .map_err(|e| ApiError::bad_request(format!("invalid HostConfig: {e}")))?,
    };
    let aliases = endpoint_request(&raw, &mut host_config)?;
    size_from_resources(&raw["HostConfig"], &mut config)?;
    Ok((config, host_config, aliases))
}

pub async fn create(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Extension(peer): Extension<Peer>,
    uri: axum::http::Uri,
    Query(q): Query<Params>,
    body: Bytes,
) -> ApiResult<Response> {
    let (config, host_config, aliases) = create_request(&body)?;
    // In a fleet, the container goes where there is room (a node passing on a create has
    // placed it here already); one with volumes goes where they are: a local volume's node,
    // or the node asked when they are shared (rbd).
    let mut placing_here = None;
    if let (Some(link), Peer::Tcp | Peer::Unix) = (&app.fleet, peer) {
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        let with_volumes = !host_config.binds.is_empty()
            || !host_config.mounts.is_empty()
            || !host_config.volumes_from.is_empty();
        let placed = match volumes_home(&app, &tenant, &host_config) {
            Some(node) => {
                link.create_on(&app, &tenant, &node, &config.image, target, &body)
                    .await?
            }
            None if with_volumes => None,
            None => {
                let size = config
                    .labels
                    .get(node::sizes::SIZE_LABEL)
                    .map_or(node::sizes::DEFAULT_SIZE, String::as_str);
                let at = (size, config.image.as_str());
                match link
                    .place_elsewhere(&app, &tenant, at, target, &body)
                    .await?
                {
                    Placed::There(answer) => Some(answer),
                    // Held until the create below has booked it.
                    Placed::Here(pending) => {
                        placing_here = Some(pending);
                        None
                    }
                }
            }
        };
        if let Some(placed) = placed {
            return Ok(placed);
        }
        // Here, then: with the image, if another node has it.
        link.bring_image_here(&app, &tenant, &config.image).await;
    }
    let c = app
        .runtime
        .create(
            &tenant,
            q.get("name").map(String::as_str),
            config,
            host_config,
            aliases,
        )
        .await?;
    // Its record books its memory now.
    drop(placing_here);
    Ok((
        StatusCode::CREATED,
        Json(json!({"Id": c.id, "Warnings": []})),
    )
        .into_response())
}

/// The node a new container must run on for its volumes: that of a local volume it mounts
/// (named in `-v NAME:/path` or a volume mount), or of the container it takes volumes from.
fn volumes_home(app: &AppState, tenant: &str, hc: &HostConfig) -> Option<String> {
    let named = hc
        .binds
        .iter()
        .filter_map(|b| b.split(':').next())
        .chain(
            hc.mounts
                .iter()
                .filter(|m| m.kind == "volume")
                .map(|m| m.source.as_str()),
        )
        .filter(|name| !name.is_empty() && !name.starts_with('/'));
    let of_volumes = named
        .filter_map(|name| app.runtime.volumes.get(tenant, name).ok())
        .map(|v| v.node)
        .find(|node| !node.is_empty());
    of_volumes.or_else(|| {
        hc.volumes_from.iter().find_map(|from| {
            let reference = from.split(':').next().unwrap_or(from);
            app.runtime
                .home_elsewhere(tenant, reference)
                .ok()
                .flatten()
                .map(|c| c.node)
        })
    })
}

/// Docker's `filters` query: `{"status":["running"],"name":["web"],...}`.
fn matches_filters(c: &Container, filters: &serde_json::Map<String, Value>) -> ApiResult<bool> {
    for (key, values) in filters {
        let values: Vec<String> = match values {
            Value::Array(a) => a
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            Value::Object(o) => o.keys().cloned().collect(),
            _ => vec![],
        };
        let any = |f: &dyn Fn(&str) -> bool| values.iter().any(|v| f(v));
        let ok = match key.as_str() {
            "status" => any(&|v| v == c.docker_state()),
            "name" => any(&|v| c.name.contains(v.trim_start_matches('/'))),
            "id" => any(&|v| c.id.starts_with(v)),
            "ancestor" => any(&|v| {
                c.image == v
                    || c.image_id.contains(v)
                    || node::images::normalize(v) == node::images::normalize(&c.image)
            }),
            "exited" => any(&|v| {
                c.state.status == node::model::Status::Exited && v.parse() == Ok(c.state.exit_code)
            }),
            "label" => values.iter().all(|v| match v.split_once('=') {
                Some((k, val)) => c.config.labels.get(k).map(String::as_str) == Some(val),
                None => c.config.labels.contains_key(v),
            }),
            other => return Err(ApiError::bad_request(format!("invalid filter '{other}'"))),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

pub async fn list(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Query(q): Query<Params>,
) -> ApiResult<Json<Value>> {
    let filters: serde_json::Map<String, Value> = match q.get("filters").filter(|f| !f.is_empty()) {
        Some(f) => serde_json::from_str(f)
            .map_err(|e| ApiError::bad_request(format!("invalid filters: {e}")))?,
        None => Default::default(),
    };
    let all = flag(&q, "all", false);
    let limit = int(&q, "limit")?.filter(|l| *l > 0);
    let now = Utc::now();
    let mut out = Vec::new();
    let containers = app.runtime.list_fleet(&tenant)?;
    let link_names = docker_json::link_names(&containers);
    for c in containers {
        if (!all && limit.is_none() && !c.is_running() && !filters.contains_key("status"))
            || !matches_filters(&c, &filters)?
        {
            continue;
        }
        let mut item = docker_json::list_item(&c, now);
        if let (Some(names), Some(extra)) = (item["Names"].as_array_mut(), link_names.get(&c.id)) {
            names.extend(extra.iter().map(|n| json!(n)));
        }
        out.push(item);
        if limit.is_some_and(|l| out.len() as i64 >= l) {
            break;
        }
    }
    Ok(Json(Value::Array(out)))
}

pub async fn inspect(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let c = app.runtime.get_current(&tenant, &id).await?;
    let mut v = docker_json::inspect(&c);
    // A VM paused by a full host disk (`shim::disk_full`) says so.
    if let Some(why) = app
        .runtime
        .paused_for_disk(&c.id)
        .filter(|_| c.is_running())
    {
        v["State"]["Status"] = json!("paused");
        v["State"]["Paused"] = json!(true);
        v["State"]["Error"] = json!(why);
    }
    Ok(Json(v))
}

pub async fn start(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    app.runtime.start(&tenant, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn stop(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(id): Path<String>,
    Query(q): Query<Params>,
) -> ApiResult<StatusCode> {
    app.runtime
        .stop(
            &tenant,
            &id,
            int(&q, "t")?,
            q.get("signal")
                .map(String::as_str)
                .filter(|s| !s.is_empty()),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn restart(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(id): Path<String>,
    Query(q): Query<Params>,
) -> ApiResult<StatusCode> {
    app.runtime.restart(&tenant, &id, int(&q, "t")?).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn pause(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    app.runtime.pause(&tenant, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn unpause(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    app.runtime.unpause(&tenant, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn kill(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(id): Path<String>,
    Query(q): Query<Params>,
) -> ApiResult<StatusCode> {
    app.runtime
        .kill(
            &tenant,
            &id,
            q.get("signal")
                .map(String::as_str)
                .filter(|s| !s.is_empty()),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn rename(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(id): Path<String>,
    Query(q): Query<Params>,
) -> ApiResult<StatusCode> {
    let name = q
        .get("name")
        .ok_or_else(|| ApiError::bad_request("missing the new name (?name=)"))?;
    app.runtime.rename(&tenant, &id, name).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn update(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let raw: Value = super::json_body(&body, "JSON body")?;
    let mut unsupported: Vec<&String> = Vec::new();
    if let Some(fields) = raw.as_object() {
        for (k, v) in fields {
            let zero = matches!(v, Value::Null)
                || v.as_i64() == Some(0)
                || v.as_array().is_some_and(|a| a.is_empty())
                || v.as_str() == Some("");
            if !matches!(
                k.as_str(),
                "RestartPolicy" | "Protection" | "SecurityGroups"
            ) && !zero
            {
                unsupported.push(k);
            }
        }
    }
    if let Some(field) = unsupported.first() {
        return Err(ApiError::not_implemented(format!(
            "hyper cannot update {field} of a container; choose a --size at create"
        )));
    }
    let policy: Option<RestartPolicy> = match &raw["RestartPolicy"] {
        Value::Null => None,
        v => Some(
            serde_json::from_value(v.clone())
                .map_err(|e| ApiError::bad_request(format!("invalid RestartPolicy: {e}")))?,
        ),
    };
    let protection = match &raw["Protection"] {
        Value::Null => None,
        v => Some(
            v.as_bool()
                .ok_or_else(|| ApiError::bad_request("Protection must be true or false"))?,
        ),
    };
    let groups = |field: &str| -> Vec<String> {
        raw["SecurityGroups"][field]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (sg_add, sg_rm) = (groups("Add"), groups("Remove"));
    app.runtime
        .update_config(&tenant, &id, policy, protection)?;
    if !sg_add.is_empty() || !sg_rm.is_empty() {
        app.runtime
            .update_security_groups(&tenant, &id, sg_add, sg_rm)
            .await?;
    }
    Ok(Json(json!({"Warnings": []})))
}

/// Answers at once with the headers (the Docker CLI waits for them before it starts the
/// container) and sends the body when the condition is met.
pub async fn wait(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(id): Path<String>,
    Query(q): Query<Params>,
) -> ApiResult<Response> {
    let condition = match q
        .get("condition")
        .map(String::as_str)
        .unwrap_or("not-running")
    {
        "" | "not-running" => WaitCondition::NotRunning,
        "next-exit" => WaitCondition::NextExit,
        "removed" => WaitCondition::Removed,
        other => {
            return Err(ApiError::bad_request(format!(
                "invalid condition: {other:?}"
            )))
        }
    };
    let waiting = app.runtime.wait(&tenant, &id, condition)?;
    let body = futures_util::stream::once(async move {
        let c = waiting.await;
        // `Error` is for a wait that failed; why a start failed is the start request's answer.
        let status = json!({"StatusCode": c.state.exit_code, "Error": null});
        Ok::<_, std::convert::Infallible>(Bytes::from(status.to_string() + "\n"))
    });
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        Body::from_stream(body),
    )
        .into_response())
}

pub async fn remove(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(id): Path<String>,
    Query(q): Query<Params>,
) -> ApiResult<StatusCode> {
    if flag(&q, "link", false) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "Conflict, cannot remove the default link name of the container",
        ));
    }
    app.runtime
        .remove(&tenant, &id, flag(&q, "force", false), flag(&q, "v", false))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /containers/PARENT/ALIAS?link=1`: removes a legacy link; without `link` the path
/// names no container.
pub async fn remove_link(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path((parent, alias)): Path<(String, String)>,
    Query(q): Query<Params>,
) -> ApiResult<StatusCode> {
    if !flag(&q, "link", false) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("No such container: {parent}/{alias}"),
        ));
    }
    app.runtime.remove_link(&tenant, &parent, &alias).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn logs(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(id): Path<String>,
    Query(q): Query<Params>,
) -> ApiResult<Response> {
    let c = app.runtime.get(&tenant, &id)?;
    let (stdout, stderr) = (flag(&q, "stdout", false), flag(&q, "stderr", false));
    if !stdout && !stderr {
        return Err(ApiError::bad_request(
            "Bad parameters: you must choose at least one stream",
        ));
    }
    let follow = flag(&q, "follow", false);
    let timestamps = flag(&q, "timestamps", false);
    let since = super::time_param(&q, "since")?;
    let until = super::time_param(&q, "until")?;
    let tail: Option<usize> = match q.get("tail").map(String::as_str) {
        None | Some("") | Some("all") => None,
        Some(n) => Some(
            n.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid tail value {n:?}")))?,
        ),
    };
    let tty = c.config.tty;
    let dir = app.runtime.dir(&c.id);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let runtime = app.runtime.clone();
    tokio::spawn(async move {
        let wanted = |l: &node::logs::LogLine| {
            ((l.stream == 1 && stdout) || (l.stream == 2 && stderr))
                && since.is_none_or(|s| l.time > s)
                && until.is_none_or(|u| l.time <= u)
        };
        let render = |l: &node::logs::LogLine| {
            let mut payload = Vec::new();
            if timestamps {
                payload.extend_from_slice(docker_json::time(Some(l.time)).as_bytes());
                payload.push(b' ');
            }
            payload.extend_from_slice(&l.text);
            Bytes::from(if tty {
                payload
            } else {
                streams::frame(l.stream, &payload)
            })
        };
        let mut reader = LogReader::new(&dir);
        let mut lines: Vec<_> = reader
            .read_all()
            .into_iter()
            .filter(|l| wanted(l))
            .collect();
        if let Some(n) = tail {
            lines = lines.split_off(lines.len().saturating_sub(n));
        }
        for l in &lines {
            if tx.send(Ok(render(l))).await.is_err() {
                return;
            }
        }
        if !follow {
            return;
        }
        loop {
            let running = runtime
                .get(&tenant, &id)
                .map(|c| c.is_running())
                .unwrap_or(false);
            for l in reader.read_new().into_iter().filter(|l| wanted(l)) {
                if tx.send(Ok(render(&l))).await.is_err() {
                    return;
                }
            }
            if !running || until.is_some_and(|u| Utc::now() > u) {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = tx.closed() => return,
            }
        }
    });
    let content_type = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    let body = Body::from_stream(tokio_stream_from(rx));
    Ok(([(axum::http::header::CONTENT_TYPE, content_type)], body).into_response())
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

pub async fn attach(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(id): Path<String>,
    Query(q): Query<Params>,
    mut req: Request,
) -> ApiResult<Response> {
    let c = app.runtime.get(&tenant, &id)?;
    let (stdin, stdout, stderr) = (
        flag(&q, "stdin", false),
        flag(&q, "stdout", false),
        flag(&q, "stderr", false),
    );
    let (logs, stream) = (flag(&q, "logs", false), flag(&q, "stream", false));
    if !stream && !logs {
        return Err(ApiError::bad_request("attach needs stream=1 or logs=1"));
    }
    let detach = (c.config.tty && stdin)
        .then(|| crate::detach_keys::parse(q.get("detachKeys").map_or("", String::as_str)))
        .transpose()?
        .map(crate::detach_keys::Escape::new);
    // The log so far, as the stream would have carried it.
    let past: Vec<u8> = match logs {
        false => Vec::new(),
        true => LogReader::new(&app.runtime.dir(&c.id))
            .read_all()
            .into_iter()
            .filter(|l| (l.stream == 1 && stdout) || (l.stream == 2 && stderr))
            .flat_map(|l| match c.config.tty {
                true => l.text,
                false => streams::frame(l.stream, &l.text),
            })
            .collect(),
    };
    // Placed before the 101 goes out: the client starts the container right after it.
    let shim = match stream {
        true => Some(app.runtime.attach(&tenant, &id, stdin, stdout, stderr)?),
        false => None,
    };
    let (response, upgrade) = streams::hijack(&mut req)?;
    tokio::spawn(async move {
        let Some((upgraded, _slot)) = upgrade.await else {
            return;
        };
        if !past.is_empty() {
            // The log goes out a moment later, as dockerd's does once it has read the log
            // file (see `streams::AFTER_101`).
            tokio::time::sleep(streams::AFTER_101).await;
        }
        let Some(shim) = shim else {
            streams::send_and_close(upgraded, &past).await;
            return;
        };
        let shim = shim.await;
        // When the container failed to start, the start request reports why; the attached
        // stream just ends.
        if let Ok(shim) = shim {
            let session = streams::Session {
                tty: c.config.tty,
                stdin,
                detach,
                replay: past,
                wait_for_exit: false,
            };
            streams::pump(upgraded, shim, session, |_| {}).await;
        }
    });
    Ok(response)
}

pub async fn resize(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(id): Path<String>,
    Query(q): Query<Params>,
) -> ApiResult<StatusCode> {
    let (width, height) = super::terminal_size(&q)?;
    app.runtime
        .resize(&tenant, &id, None, width, height)
        .await?;
    Ok(StatusCode::OK)
}

pub async fn top(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(id): Path<String>,
    Query(q): Query<Params>,
) -> ApiResult<Json<Value>> {
    let ps_args = q.get("ps_args").cloned().unwrap_or_default();
    let c = app.runtime.get(&tenant, &id)?;
    if c.is_paused() {
        // The guest's process table is frozen with the rest of the VM.
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "Container {} is paused, unpause the container before top",
                c.id
            ),
        ));
    }
    let reply = app
        .runtime
        .query(&tenant, &id, json!({"op": "top", "ps_args": ps_args}))
        .await?;
    Ok(Json(
        json!({"Titles": reply["titles"], "Processes": reply["processes"]}),
    ))
}
