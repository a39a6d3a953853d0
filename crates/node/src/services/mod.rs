//! Services (issue 6): N replicas of one container spec behind a stable IP, a name and a load
//! balancer, kept at N by a reconciler.
//!
//! The store holds each service's record; replicas are ordinary containers carrying the
//! `sh_hyper_service` label. The reconciler ([`reconcile_forever`]) compares the record with the
//! replicas and the balancer's health report every second and acts: replace a replica that
//! exited, crashed, lost its VM or stays unhealthy (heal), add or remove replicas (scale), and
//! replace replicas of an older generation one at a time, the new one healthy before the old
//! one is drained and goes (rolling update). It works from the store only, so it resumes where
//! it was after a hyperd restart; the balancer and its health checks are a process of their
//! own and keep serving meanwhile.

mod record;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use store::{Compare, Op, Txn};

use crate::events::Event;
use crate::model::{Container, ContainerConfig, HostConfig};
use crate::quota::{self, Counter};
use crate::{Result, Runtime, RuntimeError};
pub use record::{ServiceRecord, ServiceSpec, GENERATION_LABEL, SERVICE_LABEL};

fn decode(bytes: &[u8]) -> Result<ServiceRecord> {
    serde_json::from_slice(bytes)
        .map_err(|e| RuntimeError::Internal(format!("bad service record: {e}")))
}

pub fn list(rt: &Runtime, tenant: &str) -> Result<Vec<ServiceRecord>> {
    rt.store()
        .range(&format!("/services/{tenant}/"))?
        .iter()
        .map(|kv| decode(&kv.value))
        .collect()
}

pub fn get(rt: &Runtime, tenant: &str, name: &str) -> Result<ServiceRecord> {
    let kv = rt
        .store()
        .get(&record::key(tenant, name))?
        .ok_or_else(|| RuntimeError::NotFound(format!("service {name} not found")))?;
    decode(&kv.value)
}

/// Read-modify-write of a service record, retried when someone else (the API, the reconciler)
/// changed it meanwhile, so neither overwrites the other's change with a stale copy.
fn modify(
    rt: &Runtime,
    tenant: &str,
    name: &str,
    change: impl Fn(&mut ServiceRecord) -> Result<()>,
) -> Result<ServiceRecord> {
    let key = record::key(tenant, name);
    loop {
        let kv = rt
            .store()
            .get(&key)?
            .ok_or_else(|| RuntimeError::NotFound(format!("service {name} not found")))?;
        let mut r = decode(&kv.value)?;
        change(&mut r)?;
        let done = rt.store().txn(
            Txn::new()
                .when(Compare::ModRevision(key.clone(), kv.mod_revision))
                .then(Op::Put(key.clone(), serde_json::to_vec(&r).expect("json"))),
        )?;
        if done.succeeded {
            return Ok(r);
        }
    }
}

/// The service's replicas on every node, oldest first.
pub fn replicas(rt: &Runtime, tenant: &str, name: &str) -> Result<Vec<Container>> {
    let mut v: Vec<Container> = rt
        .list_fleet(tenant)?
        .into_iter()
        .filter(|c| c.config.labels.get(SERVICE_LABEL).map(String::as_str) == Some(name))
        .collect();
    v.sort_by_key(|c| c.created);
    Ok(v)
}

/// `POST /services/create`: records the service (within the quota, its name unique), claims
/// its IP, and lets the reconciler start the replicas.
pub async fn create(
    rt: &Arc<Runtime>,
    tenant: &str,
    mut spec: ServiceSpec,
) -> Result<ServiceRecord> {
    record::validate(&mut spec)?;
    rt.images
        .resolve(tenant, &spec.image)
        .map_err(|e| RuntimeError::Invalid(format!("image {}: {e}; pull it first", spec.image)))?;
    for g in &spec.security_groups {
        crate::network::sg::get(rt.store().as_ref(), tenant, g)?;
    }
    let limit = quota::load(rt.store().as_ref(), tenant)?.services;
    let (t, name) = (tenant.to_string(), spec.name.clone());
    let (network, ip) = rt
        .with_networks(move |n| n.claim_service_ip(&t, &name))
        .await?;
    let record = ServiceRecord {
        tenant: tenant.into(),
        spec,
        ip,
        network_id: network.id.clone(),
        generation: 1,
        created: Utc::now(),
        status: "starting".into(),
        message: String::new(),
        draining: Vec::new(),
        node: rt.config().node_name.clone(),
    };
    let key = record::key(tenant, &record.spec.name);
    let claimed = loop {
        let counter = Counter::read(rt.store().as_ref(), tenant, "services")?;
        if counter.value() >= limit {
            break Err(quota::exceeded("services", limit));
        }
        let r = rt.store().txn(
            Txn::new()
                .when(counter.unchanged())
                .when(Compare::Absent(key.clone()))
                .then(counter.set(counter.value() + 1))
                .then(Op::Put(
                    key.clone(),
                    serde_json::to_vec(&record).expect("json"),
                )),
        )?;
        if r.succeeded {
            break Ok(());
        }
        if rt.store().get(&key)?.is_some() {
            break Err(RuntimeError::Conflict(format!(
                "a service named {} already exists",
                record.spec.name
            )));
        }
    };
    if let Err(e) = claimed {
        let (t, nid) = (tenant.to_string(), network.id.clone());
        rt.with_networks(move |n| n.release_service_ip(&t, &nid, ip))
            .await?;
        return Err(e);
    }
    let t = tenant.to_string();
    rt.with_networks(move |n| n.sync_tenant(&t, &[])).await?;
    rt.events.emit(
        tenant,
        Event::service(&record.spec.name, &record.spec.image, "create", &[]),
    );
    Ok(record)
}

/// `POST /services/{name}/update`: replicas, image (a rolling update) and floating IP.
pub async fn update(
    rt: &Arc<Runtime>,
    tenant: &str,
    name: &str,
    replicas: Option<u32>,
    image: Option<String>,
    fip: Option<String>,
) -> Result<ServiceRecord> {
    if let Some(n) = replicas {
        if n > 50 {
            return Err(RuntimeError::Invalid(
                "at most 50 replicas per service".into(),
            ));
        }
        // Scaling down must not take a protected replica.
        let current = self::replicas(rt, tenant, name)?;
        let removable = current
            .iter()
            .filter(|c| !crate::runtime::is_protected(c))
            .count();
        let excess = current.len().saturating_sub(n as usize);
        if excess > removable {
            return Err(RuntimeError::Conflict(format!(
                "cannot scale {name} to {n}: its protected replicas cannot be removed; lift their protection first"
            )));
        }
    }
    if let Some(image) = &image {
        rt.images
            .resolve(tenant, image)
            .map_err(|e| RuntimeError::Invalid(format!("image {image}: {e}; pull it first")))?;
    }
    let r = modify(rt, tenant, name, |r| {
        if let Some(n) = replicas {
            r.spec.replicas = n;
        }
        if let Some(image) = image.as_ref().filter(|i| **i != r.spec.image) {
            r.spec.image = image.clone();
            r.generation += 1;
        }
        Ok(())
    })?;
    if let Some(fip) = fip {
        let (t, svc) = (tenant.to_string(), name.to_string());
        if fip.is_empty() {
            rt.with_networks(move |n| n.fip_detach_service(&t, &svc))
                .await?;
        } else {
            rt.with_networks(move |n| n.fip_attach_service(&t, &fip, &svc))
                .await?;
        }
    }
    Ok(r)
}

fn replicas_of(rt: &Runtime, r: &ServiceRecord) -> Result<Vec<Container>> {
    replicas(rt, &r.tenant, &r.spec.name)
}

/// `DELETE /services/{name}`: the balancer stops serving it; its replicas go too unless `keep`.
pub async fn remove(rt: &Arc<Runtime>, tenant: &str, name: &str, keep: bool) -> Result<()> {
    let r = get(rt, tenant, name)?;
    let members = replicas_of(rt, &r)?;
    if !keep {
        if let Some(p) = members.iter().find(|c| crate::runtime::is_protected(c)) {
            return Err(RuntimeError::Conflict(format!(
                "replica {} of {name} is protected; lift its protection or remove the service with --keep",
                p.name
            )));
        }
    }
    loop {
        let counter = Counter::read(rt.store().as_ref(), tenant, "services")?;
        let done = rt.store().txn(
            Txn::new()
                .when(counter.unchanged())
                .then(counter.set(counter.value().saturating_sub(1)))
                .then(Op::Delete(record::key(tenant, name))),
        )?;
        if done.succeeded {
            break;
        }
    }
    let (t, svc, nid, ip) = (
        tenant.to_string(),
        name.to_string(),
        r.network_id.clone(),
        r.ip,
    );
    rt.with_networks(move |n| {
        n.fip_detach_service(&t, &svc)?;
        n.release_service_ip(&t, &nid, ip)?;
        n.sync_tenant(&t, &[])
    })
    .await?;
    if !keep {
        for c in members {
            remove_replica(rt, &c).await?;
        }
    }
    rt.events
        .emit(tenant, Event::service(name, &r.spec.image, "destroy", &[]));
    Ok(())
}

/// The replica a service's record asks for, generation `r.generation`.
fn replica_config(r: &ServiceRecord) -> (ContainerConfig, HostConfig) {
    let s = &r.spec;
    let mut labels = s.labels.clone();
    labels.insert(SERVICE_LABEL.into(), s.name.clone());
    labels.insert(GENERATION_LABEL.into(), r.generation.to_string());
    if !s.container_size.is_empty() {
        labels.insert(crate::sizes::SIZE_LABEL.into(), s.container_size.clone());
    }
    for g in &s.security_groups {
        labels.insert(
            format!("{}{g}", crate::network::sg::LABEL_PREFIX),
            "yes".into(),
        );
    }
    let mut exposed = std::collections::BTreeMap::new();
    exposed.insert(format!("{}/tcp", s.container_port), serde_json::json!({}));
    let config = ContainerConfig {
        image: s.image.clone(),
        env: s.env.clone(),
        cmd: s.cmd.clone(),
        entrypoint: s.entrypoint.clone(),
        working_dir: s.working_dir.clone(),
        labels,
        tty: s.tty,
        open_stdin: s.stdin,
        stop_signal: (!s.stop_signal.is_empty()).then(|| s.stop_signal.clone()),
        exposed_ports: exposed,
        ..ContainerConfig::default()
    };
    (config, HostConfig::default())
}

/// The service JSON of Hyper's API (spec fields plus IP, FIP, Status, Message, Containers).
pub fn to_json(
    rt: &Runtime,
    r: &ServiceRecord,
    fip: Option<std::net::Ipv4Addr>,
) -> Result<serde_json::Value> {
    let mut v = serde_json::to_value(&r.spec).expect("json");
    v["SSLCert"] = serde_json::json!(if r.spec.ssl_cert.is_empty() {
        ""
    } else {
        "(set)"
    });
    v["IP"] = serde_json::json!(r.ip);
    v["FIP"] = serde_json::json!(fip.map(|f| f.to_string()).unwrap_or_default());
    v["Status"] = serde_json::json!(r.status);
    v["Message"] = serde_json::json!(r.message);
    v["Containers"] = serde_json::json!(replicas_of(rt, r)?
        .iter()
        .map(|c| serde_json::json!({"Id": c.id, "Name": c.name, "State": c.state.status.as_str(), "Generation": c.config.labels.get(GENERATION_LABEL), "Node": c.node}))
        .collect::<Vec<_>>());
    Ok(v)
}

/// Runs [`reconcile_once`] every second for as long as hyperd runs.
pub async fn reconcile_forever(rt: Arc<Runtime>) {
    loop {
        let tenants: std::collections::BTreeSet<String> = rt
            .store()
            .range("/services/")
            .unwrap_or_default()
            .iter()
            .filter_map(|kv| kv.key.split('/').nth(2).map(String::from))
            .collect();
        for tenant in tenants {
            let services = list(&rt, &tenant).unwrap_or_default();
            let node = &rt.config().node_name;
            // Another node's reconciler keeps its own services.
            for r in services
                .into_iter()
                .filter(|r| crate::fleet::runs_here(&r.node, node))
            {
                if let Err(e) = reconcile_once(&rt, r).await {
                    tracing::warn!("reconciling a service of {tenant}: {e}");
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// How long a new replica may take to pass its first health checks before it counts as failed.
fn startup_grace(r: &ServiceRecord) -> chrono::TimeDelta {
    let s = &r.spec;
    chrono::TimeDelta::seconds(
        30 + i64::from(s.health_check_interval * (s.health_check_rise + s.health_check_fall)),
    )
}

/// One step towards the record: at most one start or one removal of a healthy replica per call,
/// so a rolling update or a scale-down goes one replica at a time.
pub async fn reconcile_once(rt: &Arc<Runtime>, mut r: ServiceRecord) -> Result<()> {
    let name = r.spec.name.clone();
    let tenant = r.tenant.clone();
    let t = tenant.clone();
    let status = rt.with_networks(move |n| n.lb_status(&t)).await?;
    let health = status.services.get(&name);
    let healthy = |c: &Container| {
        health
            .and_then(|h| h.backends.get(c.short_id()))
            .is_some_and(|b| b.healthy)
    };
    let now = Utc::now();
    let members = replicas_of(rt, &r)?;

    // Heal: replicas that stopped (exit, crash, VM killed) or stay unhealthy past the grace.
    let mut live = Vec::new();
    for c in members {
        let started = c.state.started_at.unwrap_or(c.created);
        let fall_window = chrono::TimeDelta::seconds(i64::from(
            r.spec.health_check_interval * r.spec.health_check_fall,
        ));
        let dead = !c.is_running();
        // A replica gets a grace period to boot and pass its first checks; after it, one that
        // is not healthy (or has been unhealthy for a whole fall window) is replaced.
        let failing = c.is_running()
            && now - started > startup_grace(&r)
            && match health.and_then(|h| h.backends.get(c.short_id())) {
                None => true,
                Some(b) => !b.healthy && now - b.since > fall_window,
            };
        if (dead || failing) && !r.draining.contains(&c.id) {
            let why = if dead {
                "exited"
            } else {
                "failed its health checks"
            };
            tracing::info!("service {name}: replacing replica {} ({why})", c.name);
            if let Err(e) = remove_replica(rt, &c).await {
                // A protected replica stays for its owner to look at; a dead one no longer
                // counts, so its replacement starts anyway.
                tracing::warn!("service {name}: keeping replica {}: {e}", c.name);
                if !dead {
                    live.push(c);
                }
                continue;
            }
            rt.events.emit(
                &tenant,
                Event::service(
                    &name,
                    &r.spec.image,
                    "heal",
                    &[("container", c.id.clone()), ("reason", why.into())],
                ),
            );
            continue;
        }
        live.push(c);
    }

    // Finish drains: a draining replica with no active connection (or after 10 s) goes.
    if let Some(id) = r.draining.first().cloned() {
        let c = live.iter().find(|c| c.id == id).cloned();
        let idle = c.as_ref().is_none_or(|c| {
            health
                .and_then(|h| h.backends.get(c.short_id()))
                .is_none_or(|b| b.active == 0)
        });
        let since = c.as_ref().and_then(|c| c.state.started_at).unwrap_or(now);
        if idle || now - since > chrono::TimeDelta::hours(24) {
            if let Some(c) = &c {
                remove_replica(rt, c).await?;
            }
            modify(rt, &tenant, &name, |r| {
                r.draining.retain(|d| d != &id);
                Ok(())
            })?;
        }
        return Ok(());
    }
    let live: Vec<Container> = live
        .into_iter()
        .filter(|c| !r.draining.contains(&c.id))
        .collect();
    let current_gen = r.generation.to_string();
    let is_current = |c: &Container| c.config.labels.get(GENERATION_LABEL) == Some(&current_gen);
    let want = r.spec.replicas as usize;
    let current: Vec<&Container> = live.iter().filter(|c| is_current(c)).collect();
    let old: Vec<&Container> = live.iter().filter(|c| !is_current(c)).collect();
    let all_healthy = live.iter().all(&healthy);

    let image = r.spec.image.clone();
    let announce = |action: &str| {
        let replicas = [("replicas", want.to_string())];
        rt.events
            .emit(&tenant, Event::service(&name, &image, action, &replicas));
    };
    let (status_text, message) = if !old.is_empty() {
        // Rolling update: one extra replica of the new generation at a time; once every new
        // one is healthy, an old one is drained.
        if live.len() > want || current.len() >= want {
            if !current.is_empty() && current.iter().all(|c| healthy(c)) {
                drain(rt, &mut r, old[0]).await?;
                (
                    "updating",
                    format!("replacing {} old replica(s)", old.len()),
                )
            } else {
                (
                    "updating",
                    "waiting for the new replica to become healthy".to_string(),
                )
            }
        } else if all_healthy {
            start_replica(rt, &r, &live).await?;
            announce("update");
            (
                "updating",
                format!(
                    "starting a replica of the new image ({} of {want})",
                    current.len() + 1
                ),
            )
        } else {
            (
                "updating",
                "waiting for replicas to become healthy".to_string(),
            )
        }
    } else if current.len() < want {
        start_replica(rt, &r, &live).await?;
        announce("scale");
        (
            "updating",
            format!("starting a replica ({} of {want})", current.len() + 1),
        )
    } else if live.len() > want && all_healthy {
        // Scale down: drain the newest unprotected replica.
        match live.iter().rev().find(|c| !crate::runtime::is_protected(c)) {
            Some(c) => {
                drain(rt, &mut r, c).await?;
                announce("scale");
                (
                    "updating",
                    format!("removing a replica ({} to {want})", live.len()),
                )
            }
            None => (
                "degraded",
                "the replicas left to remove are protected".to_string(),
            ),
        }
    } else if live.iter().filter(|c| healthy(c)).count() >= want {
        ("running", String::new())
    } else {
        (
            "updating",
            "waiting for replicas to become healthy".to_string(),
        )
    };
    if r.status != status_text || r.message != message {
        modify(rt, &tenant, &name, |r| {
            r.status = status_text.into();
            r.message = message.clone();
            Ok(())
        })?;
    }
    Ok(())
}

/// Takes a replica out of the balancer; the next rounds remove it once it is idle.
async fn drain(rt: &Arc<Runtime>, r: &mut ServiceRecord, c: &Container) -> Result<()> {
    *r = modify(rt, &r.tenant, &r.spec.name, |r| {
        if !r.draining.contains(&c.id) {
            r.draining.push(c.id.clone());
        }
        Ok(())
    })?;
    let t = r.tenant.clone();
    rt.with_networks(move |n| n.sync_tenant(&t, &[])).await
}

/// Starts a replica on the node with room that runs the fewest of the service's `live` ones
/// (this one on one machine).
async fn start_replica(rt: &Arc<Runtime>, r: &ServiceRecord, live: &[Container]) -> Result<()> {
    let (config, hc) = replica_config(r);
    let suffix: String = hex::encode(rand::random::<[u8; 3]>());
    let name = format!("{}-{suffix}", r.spec.name);
    let me = &rt.config().node_name;
    let target = match rt.other_nodes() {
        Some(other_nodes) => replica_node(rt, r, live)?
            .filter(|node| node != me)
            .map(|node| (other_nodes, node)),
        None => None,
    };
    match target {
        Some((other_nodes, node)) => {
            tracing::info!(
                "service {}: starting replica {name} on node {node}",
                r.spec.name
            );
            other_nodes.run(&node, &r.tenant, &name, config, hc).await?
        }
        None => {
            // Its start adds it to this node's balancers.
            let c = rt
                .create(&r.tenant, Some(&name), config, hc, Vec::new())
                .await?;
            rt.start(&r.tenant, &c.id).await?;
        }
    }
    Ok(())
}

/// Where the service's next replica goes ([`crate::placement::spread`]).
fn replica_node(rt: &Runtime, r: &ServiceRecord, live: &[Container]) -> Result<Option<String>> {
    let size = match r.spec.container_size.as_str() {
        "" => crate::sizes::DEFAULT_SIZE,
        size => size,
    };
    let me = &rt.config().node_name;
    let nodes = crate::fleet::list(rt.store().as_ref())?;
    let order = crate::placement::order(&nodes, &rt.booked_by_node()?, size, me);
    let mut running = std::collections::HashMap::new();
    for c in live {
        let node = if c.node.is_empty() { me } else { &c.node };
        *running.entry(node.clone()).or_insert(0) += 1;
    }
    Ok(crate::placement::spread(&order, &running))
}

/// Removes a replica wherever it is: here, on its node, or (its node lost) its record.
async fn remove_replica(rt: &Arc<Runtime>, c: &Container) -> Result<()> {
    if crate::fleet::runs_here(&c.node, &rt.config().node_name) {
        return rt.remove(&c.tenant, &c.id, true, true).await;
    }
    if c.lost.is_some() {
        return rt.remove_lost(&c.tenant, &c.id);
    }
    match rt.other_nodes() {
        Some(other_nodes) => other_nodes.remove(&c.node, &c.tenant, &c.id).await,
        None => Err(RuntimeError::Internal(format!(
            "replica {} runs on node {}, which this node cannot reach",
            c.name, c.node
        ))),
    }
}
