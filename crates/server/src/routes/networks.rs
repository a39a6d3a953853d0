//! `/networks`: Docker's network API over the tenant's networks (enough for `docker network`
//! and for compose's project network). Each container has one network, chosen at create.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use ipnet::Ipv4Net;
use node::network::NetworkRecord;
use serde_json::{json, Value};

use super::{filter_values, Params};
use crate::error::{ApiError, ApiResult};
use crate::transport::TenantId;
use crate::AppState;

#[cfg(test)]
mod fuzz;

fn network_json(n: &NetworkRecord, containers: &[node::model::Container]) -> Value {
    let members: serde_json::Map<String, Value> = containers
        .iter()
        .filter_map(|c| Some((c, c.endpoint.as_ref()?)))
        .filter(|(_, ep)| ep.network_id == n.id)
        .map(|(c, ep)| {
            (
                c.id.clone(),
                json!({
                    "Name": c.name,
                    "EndpointID": c.id,
                    "MacAddress": ep.mac,
                    "IPv4Address": format!("{}/{}", ep.ip, ep.prefix_len),
                    "IPv6Address": "",
                }),
            )
        })
        .collect();
    json!({
        "Name": n.name,
        "Id": n.id,
        "Created": n.created.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        "Scope": "local",
        "Driver": "bridge",
        "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": {}, "Config": [
            {"Subnet": n.subnet.to_string(), "Gateway": n.gateway.to_string()}
        ]},
        "Internal": false,
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": members,
        "Options": {"com.docker.network.driver.mtu": "1450"},
        "Labels": n.labels,
    })
}

pub async fn list(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Query(q): Query<Params>,
) -> ApiResult<Json<Value>> {
    let names = filter_values(q.get("filters"), "name")?;
    let ids = filter_values(q.get("filters"), "id")?;
    let t = tenant.clone();
    let networks = app
        .runtime
        .with_networks(move |n| n.list_networks(&t))
        .await?;
    let containers = app.runtime.list(&tenant);
    Ok(Json(Value::Array(
        networks
            .iter()
            .filter(|n| {
                names
                    .as_ref()
                    .is_none_or(|v| v.iter().any(|x| n.name.contains(x.as_str())))
            })
            .filter(|n| {
                ids.as_ref()
                    .is_none_or(|v| v.iter().any(|x| n.id.starts_with(x.as_str())))
            })
            .map(|n| network_json(n, &containers))
            .collect(),
    )))
}

pub async fn inspect(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let t = tenant.clone();
    let n = app
        .runtime
        .with_networks(move |n| n.find_network(&t, &id))
        .await?;
    Ok(Json(network_json(&n, &app.runtime.list(&tenant))))
}

/// What `network create` may ask for that a tenant network does not do, named in a 501.
fn refuse_unsupported_network_options(raw: &Value) -> ApiResult<()> {
    let set = |v: &Value| match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::String(s) => !s.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Number(_) => true,
    };
    for (field, what) in [
        ("Internal", "--internal: a tenant network always reaches out through its gateway; use security groups to restrict traffic"),
        ("Options", "driver options (--opt)"),
        ("Ingress", "--ingress (swarm)"),
        ("ConfigOnly", "--config-only"),
        ("ConfigFrom", "--config-from"),
    ] {
        if set(&raw[field]) {
            return Err(ApiError::not_implemented(format!(
                "hyper does not support {what} (NetworkCreateRequest.{field})"
            )));
        }
    }
    if set(&raw["IPAM"]["Options"])
        || raw["IPAM"]["Driver"]
            .as_str()
            .is_some_and(|d| d != "default" && !d.is_empty())
    {
        return Err(ApiError::not_implemented(
            "hyper does not support IPAM drivers or their options: a network takes --subnet only",
        ));
    }
    for config in raw["IPAM"]["Config"].as_array().into_iter().flatten() {
        for field in ["IPRange", "AuxiliaryAddresses"] {
            if set(&config[field]) {
                return Err(ApiError::not_implemented(format!(
                    "hyper does not support IPAM.Config.{field}: a network takes --subnet only"
                )));
            }
        }
    }
    Ok(())
}

/// What a `network create` asks for, once checked: nothing else in its body is acted on.
#[derive(Debug)]
pub(crate) struct NetworkRequest {
    pub name: String,
    pub subnet: Option<Ipv4Net>,
    pub labels: BTreeMap<String, String>,
}

/// A field of the wrong JSON type is refused (Docker's JSON decoding refuses it too), never
/// read as absent: a `Subnet` of 10 or `Labels` of numbers would otherwise be dropped unseen.
fn typed<'a, T>(
    raw: &'a Value,
    field: &str,
    what: &str,
    get: impl Fn(&'a Value) -> Option<T>,
) -> ApiResult<Option<T>> {
    match raw {
        Value::Null => Ok(None),
        v => get(v)
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("{field} must be {what}, not {v}"))),
    }
}

/// The checks a network create's body goes through before the runtime sees it.
pub(crate) fn create_request(body: &[u8]) -> ApiResult<NetworkRequest> {
    let raw: Value = super::json_body(body, "network config")?;
    if !raw.is_object() {
        return Err(ApiError::bad_request(
            "the network config must be a JSON object",
        ));
    }
    let name = typed(&raw["Name"], "Name", "a string", Value::as_str)?.unwrap_or("");
    if name.is_empty() {
        return Err(ApiError::bad_request("the network needs a name"));
    }
    let driver = typed(&raw["Driver"], "Driver", "a string", Value::as_str)?.unwrap_or("");
    if !matches!(driver, "" | "bridge") {
        return Err(ApiError::not_implemented(format!(
            "hyper does not support the network driver {driver:?}; tenant networks are bridges"
        )));
    }
    if typed(
        &raw["EnableIPv6"],
        "EnableIPv6",
        "a boolean",
        Value::as_bool,
    )? == Some(true)
    {
        return Err(ApiError::not_implemented("hyper networks are IPv4 only"));
    }
    refuse_unsupported_network_options(&raw)?;
    let configs = typed(&raw["IPAM"], "IPAM", "an object", Value::as_object)?
        .map(|ipam| {
            typed(
                ipam.get("Config").unwrap_or(&Value::Null),
                "IPAM.Config",
                "an array",
                Value::as_array,
            )
        })
        .transpose()?
        .flatten()
        .cloned()
        .unwrap_or_default();
    if configs.len() > 1 {
        return Err(ApiError::not_implemented("a network has one subnet"));
    }
    let config = configs.first().unwrap_or(&Value::Null);
    typed(config, "IPAM.Config[0]", "an object", Value::as_object)?;
    let subnet = match typed(
        &config["Subnet"],
        "IPAM.Config[0].Subnet",
        "a string",
        Value::as_str,
    )? {
        Some(s) => Some(node::network::ipam::parse_subnet(s).map_err(ApiError::bad_request)?),
        None => None,
    };
    if let Some(gw) = typed(
        &config["Gateway"],
        "IPAM.Config[0].Gateway",
        "a string",
        Value::as_str,
    )? {
        let expected = subnet.map(node::network::ipam::gateway_of);
        if expected.map(|e| e.to_string()) != Some(gw.to_string()) {
            return Err(ApiError::bad_request(format!(
                "gateway {gw} is not supported: a network's gateway is the first address of its subnet, given with --subnet"
            )));
        }
    }
    let labels = match &raw["Labels"] {
        Value::Null => BTreeMap::new(),
        l => serde_json::from_value(l.clone()).map_err(|_| {
            ApiError::bad_request(format!("Labels must be an object of strings, not {l}"))
        })?,
    };
    Ok(NetworkRequest {
        name: name.to_string(),
        subnet,
        labels,
    })
}

pub async fn create(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let NetworkRequest {
        name,
        subnet,
        labels,
    } = create_request(&body)?;
    let n = app
        .runtime
        .with_networks(move |n| n.create_network(&tenant, &name, subnet, labels))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"Id": n.id, "Warning": ""})),
    ))
}

pub async fn remove(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    app.runtime
        .with_networks(move |n| n.remove_network(&tenant, &id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The container a connect or disconnect request names, the network it names, and whether the
/// container is on that network.
async fn membership(
    app: &AppState,
    tenant: &str,
    network: String,
    body: &[u8],
    what: &str,
) -> ApiResult<(node::model::Container, NetworkRecord, bool)> {
    let raw: Value = super::json_body(body, what)?;
    let c = app
        .runtime
        .get(tenant, raw["Container"].as_str().unwrap_or(""))?;
    let t = tenant.to_string();
    let n = app
        .runtime
        .with_networks(move |n| n.find_network(&t, &network))
        .await?;
    let on_it = c.endpoint.as_ref().is_some_and(|ep| ep.network_id == n.id);
    Ok((c, n, on_it))
}

/// A container's one interface is fixed once its VM has started: connecting it to the network
/// it is on is refused as Docker refuses a duplicate endpoint; a container that has never
/// started and has no network joins this one (see `Runtime::connect_created`).
pub async fn connect(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let (c, n, on_it) = membership(&app, &tenant, id, &body, "connect request").await?;
    if on_it {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "endpoint with name {} already exists in network {}",
                c.name, n.name
            ),
        ));
    }
    let raw: Value = super::json_body(&body, "connect request")?;
    let config = &raw["EndpointConfig"];
    super::unsupported::refuse_unsupported_endpoint(config)?;
    let strings = |key: &str| -> Vec<String> {
        config[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(String::from))
            .collect()
    };
    app.runtime
        .connect_created(
            &tenant,
            &c.id,
            &n.name,
            strings("Aliases"),
            strings("Links"),
        )
        .await?;
    Ok(StatusCode::OK)
}

pub async fn disconnect(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let (c, n, on_it) = membership(&app, &tenant, id, &body, "disconnect request").await?;
    if on_it {
        app.runtime.disconnect_created(&tenant, &c.id).await?;
        return Ok(StatusCode::OK);
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        format!(
            "container {} is not connected to network {}",
            c.name, n.name
        ),
    ))
}
