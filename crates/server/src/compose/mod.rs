//! Compose kept in the cloud (Hyper's `/compose/*`): the client posts the parsed project,
//! hyperd creates and keeps it. The project lives in the store ([`record`]), its containers
//! carry libcompose's labels (so `compose ps` over `GET /containers/json` finds them), and
//! every later operation (`start`, `stop`, `down`...) works from the store, from any client.
//!
//! - Containers are created through the ordinary create (the same checks and errors), named
//!   `<project>-<service>-<n>` or `container_name`, on the project's network
//!   `<project>_default` with the service's name as alias (so names and links resolve).
//! - `up` recreates only services whose config hash changed (or all with `forcerecreate`,
//!   none with `norecreate`); a recreated container keeps its volumes (named ones by name,
//!   anonymous ones handed over) and its floating IP (re-attached). An unchanged project's
//!   `up` creates nothing.
//! - `auths` credentials serve this request's pulls only; they are never stored.

mod body;
mod ops;
pub mod record;
pub mod spec;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use node::model::Container;
use node::RuntimeError;
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedSender;

use crate::error::ApiError;
use crate::transport::Peer;
use crate::AppState;
use body::Placement;
use record::{ProjectRecord, ServiceRecord};
use spec::{Project, Service};

/// The jsonmessage stream of one request.
#[derive(Clone)]
pub struct Out(pub UnboundedSender<Value>);

impl Out {
    pub fn line(&self, id: &str, status: &str) {
        let _ = self.0.send(json!({"id": id, "status": status}));
    }
    pub fn note(&self, status: &str) {
        let _ = self.0.send(json!({"status": status}));
    }
    pub fn error(&self, msg: &str) {
        let _ = self
            .0
            .send(json!({"errorDetail": {"message": msg}, "error": msg}));
    }
}

/// What an operation needs: the daemon, whose project it is, and how the request came in
/// (a pull from the unix socket may reach what a tenant's may not).
pub struct Scope {
    pub app: AppState,
    pub tenant: String,
    pub peer: Peer,
    pub project: String,
}

type Failure = String;

fn msg(e: impl Into<ApiError>) -> Failure {
    e.into().message
}

/// One operation per project at a time.
fn project_lock(tenant: &str, project: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: Mutex<Option<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> = Mutex::new(None);
    let mut g = LOCKS.lock().expect("poisoned");
    g.get_or_insert_with(HashMap::new)
        .entry(format!("{tenant}/{project}"))
        .or_default()
        .clone()
}

fn label<'a>(c: &'a Container, k: &str) -> &'a str {
    c.config.labels.get(k).map(String::as_str).unwrap_or("")
}

fn number(c: &Container) -> u32 {
    label(c, spec::NUMBER_LABEL).parse().unwrap_or(0)
}

/// The project's containers (one-off `run` containers included when `oneoff`), by number.
pub fn containers(app: &AppState, tenant: &str, project: &str, oneoff: bool) -> Vec<Container> {
    let mut v: Vec<Container> = app
        .runtime
        .list(tenant)
        .into_iter()
        .filter(|c| label(c, spec::PROJECT_LABEL) == project)
        .filter(|c| oneoff || !label(c, spec::ONEOFF_LABEL).eq_ignore_ascii_case("true"))
        .collect();
    v.sort_by_key(|c| (label(c, spec::SERVICE_LABEL).to_string(), number(c)));
    v
}

fn of_service<'a>(all: &'a [Container], service: &str) -> Vec<&'a Container> {
    all.iter()
        .filter(|c| label(c, spec::SERVICE_LABEL) == service)
        .collect()
}

impl Scope {
    fn network_name(&self) -> String {
        format!("{}_default", self.project)
    }

    pub fn record(&self) -> Result<Option<ProjectRecord>, ApiError> {
        record::load(
            self.app.runtime.store().as_ref(),
            &self.tenant,
            &self.project,
        )
    }

    async fn ensure_network(&self, out: &Out) -> Result<String, Failure> {
        let name = self.network_name();
        let (t, n) = (self.tenant.clone(), name.clone());
        let found = self
            .app
            .runtime
            .with_networks(move |nets| nets.find_network(&t, &n))
            .await;
        match found {
            Ok(_) => {}
            Err(RuntimeError::NotFound(_)) => {
                let (t, n) = (self.tenant.clone(), name.clone());
                let labels = [(spec::PROJECT_LABEL.to_string(), self.project.clone())].into();
                self.app
                    .runtime
                    .with_networks(move |nets| nets.create_network(&t, &n, None, labels))
                    .await
                    .map_err(msg)?;
                out.line(&name, "Network created");
            }
            Err(e) => return Err(msg(e)),
        }
        Ok(name)
    }

    async fn ensure_volumes(
        &self,
        p: &Project,
        rec: &mut ProjectRecord,
        out: &Out,
    ) -> Result<BTreeMap<String, String>, Failure> {
        let mut names = BTreeMap::new();
        for (name, v) in &p.volumes {
            if v.external {
                self.app
                    .runtime
                    .volumes
                    .get(&self.tenant, name)
                    .map_err(|_| format!("external volume {name} does not exist: create it first (hyper volume create --name {name})"))?;
                names.insert(name.clone(), name.clone());
                if !rec.external_volumes.contains(name) {
                    rec.external_volumes.push(name.clone());
                }
                continue;
            }
            let real = format!("{}_{name}", self.project);
            if self.app.runtime.volumes.get(&self.tenant, &real).is_err() {
                let req = node::volumes::CreateRequest {
                    name: real.clone(),
                    driver: "hyper".into(),
                    options: v.driver_opts.clone(),
                    labels: [(spec::PROJECT_LABEL.to_string(), self.project.clone())].into(),
                    anonymous: false,
                };
                self.app
                    .runtime
                    .create_volume(&self.tenant, req)
                    .await
                    .map_err(msg)?;
                out.line(&real, "Volume created");
            }
            rec.volumes.insert(name.clone(), real.clone());
            names.insert(name.clone(), real);
        }
        Ok(names)
    }

    /// Pulls the images the tenant lacks, with the project's credentials for their registry.
    async fn ensure_images(&self, p: &Project, order: &[String], out: &Out) -> Result<(), Failure> {
        let mut seen = Vec::new();
        for s in order {
            let image = &p.services[s].image;
            if seen.contains(image) {
                continue;
            }
            seen.push(image.clone());
            if self.app.runtime.images.resolve(&self.tenant, image).is_ok() {
                continue;
            }
            out.line(image, "Pulling");
            let reference = image::pull::parse_reference(image, None)
                .map_err(|e| crate::routes::images::pull_error(e).message)?;
            let creds = p
                .auth_for(reference.registry())
                .map(|(u, pw)| image::pull::Credentials {
                    username: u.clone(),
                    password: pw.clone(),
                });
            let resolved = self
                .app
                .runtime
                .images
                .puller()
                .resolve(
                    reference,
                    creds.as_ref(),
                    &crate::routes::images::reach(&self.app, self.peer),
                )
                .await
                .map_err(|e| crate::routes::images::pull_error(e).message)?;
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
            let r = self
                .app
                .runtime
                .images
                .pull(&self.tenant, &resolved, &tx)
                .await;
            drop(tx);
            let _ = drain.await;
            let status =
                r.map_err(|e| format!("pulling {image}: {}", crate::error::error_chain(&e)))?;
            out.line(image, &status);
        }
        Ok(())
    }

    async fn create_container(
        &self,
        svc: &Service,
        name: &str,
        at: &Placement<'_>,
    ) -> Result<Container, Failure> {
        let body = svc.create_body(at);
        let (config, host_config, aliases) =
            crate::routes::containers::create_request(body.to_string().as_bytes())
                .map_err(|e| e.message)?;
        self.app
            .runtime
            .create(&self.tenant, Some(name), config, host_config, aliases)
            .await
            .map_err(|e| format!("creating {name}: {}", msg(e)))
    }

    async fn fip_holder(&self, ip: &str) -> Result<Option<String>, Failure> {
        let t = self.tenant.clone();
        let fips = self
            .app
            .runtime
            .with_networks(move |n| n.fip_list(&t))
            .await
            .map_err(msg)?;
        Ok(fips
            .into_iter()
            .find(|f| f.ip.to_string() == ip)
            .map(|f| f.container))
    }

    async fn detach_fip(&self, c: &Container) {
        let c = c.clone();
        let _ = self
            .app
            .runtime
            .with_networks(move |n| n.fip_detach(&c))
            .await;
    }

    async fn attach_fip(&self, c: &Container, ip: &str, out: &Out) -> Result<(), Failure> {
        if self.fip_holder(ip).await?.as_deref() == Some(c.id.as_str()) {
            return Ok(());
        }
        let (c2, ip2) = (c.clone(), ip.to_string());
        self.app
            .runtime
            .with_networks(move |n| n.fip_attach(&c2, &ip2))
            .await
            .map_err(|e| format!("attaching {ip} to {}: {}", c.name, msg(e)))?;
        out.line(&c.name, &format!("Floating IP {ip} attached"));
        Ok(())
    }

    /// Replaces `old` by a container of the service's current config, under the same name,
    /// with the old one's volumes and floating IP. The service's config was checked before
    /// (the request's 4xx), so what can still fail here is what the ordinary create refuses
    /// at that moment (a host port another container took meanwhile, a quota); the old
    /// container is gone then, its volumes and floating IP stay the tenant's.
    async fn recreate(
        &self,
        svc: &Service,
        old: &Container,
        at: &Placement<'_>,
        prev_fip: Option<&str>,
        out: &Out,
    ) -> Result<Container, Failure> {
        let rt = &self.app.runtime;
        out.line(&old.name, "Recreating");
        let was_running = old.is_running();
        if was_running {
            match rt.stop(&self.tenant, &old.id, None, None).await {
                Ok(()) | Err(RuntimeError::NotModified(_)) => {}
                Err(e) => return Err(format!("stopping {}: {}", old.name, msg(e))),
            }
        }
        let held = self.fip_holder_of(old).await?;
        if held.is_some() {
            self.detach_fip(old).await;
        }
        // The floating IP goes to the successor when the service still names it, or when the
        // user attached it by hand (the project never named it); one the file no longer
        // names stays the tenant's, detached.
        let fip = held.filter(|ip| match svc.fip {
            Some(want) => want.to_string() == *ip,
            None => prev_fip != Some(ip.as_str()),
        });
        // The anonymous volumes (`-v /path`, the image's VOLUMEs) go to the new container.
        let kept: Vec<(String, String)> = old
            .mounts
            .iter()
            .filter(|m| {
                rt.volumes
                    .get(&self.tenant, &m.volume)
                    .is_ok_and(|v| v.anonymous)
            })
            .map(|m| (m.volume.clone(), m.destination.clone()))
            .collect();
        // The old container goes first: it holds the name and the published host ports
        // even while stopped. Its volumes stay (named ones by name, anonymous ones handed
        // over below).
        rt.remove(&self.tenant, &old.id, true, false)
            .await
            .map_err(|e| format!("removing {}: {}", old.name, msg(e)))?;
        let at = Placement {
            kept_volumes: &kept,
            ..*at
        };
        let new = self.create_container(svc, &old.name, &at).await?;
        if let Some(ip) = &fip {
            self.attach_fip(&new, ip, out).await?;
        }
        out.line(&new.name, "Recreated");
        Ok(new)
    }

    async fn fip_holder_of(&self, c: &Container) -> Result<Option<String>, Failure> {
        let t = self.tenant.clone();
        let fips = self
            .app
            .runtime
            .with_networks(move |n| n.fip_list(&t))
            .await
            .map_err(msg)?;
        Ok(fips
            .into_iter()
            .find(|f| f.container == c.id)
            .map(|f| f.ip.to_string()))
    }

    /// Waits until every container of `dep` is healthy (`condition: service_healthy`).
    async fn wait_healthy(&self, dep: &str, out: &Out) -> Result<(), Failure> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        out.line(dep, "Waiting to be healthy");
        loop {
            let all = containers(&self.app, &self.tenant, &self.project, false);
            let mine = of_service(&all, dep);
            let mut healthy = !mine.is_empty();
            for c in mine {
                let c = self
                    .app
                    .runtime
                    .get_current(&self.tenant, &c.id)
                    .await
                    .map_err(msg)?;
                if !c.is_running() {
                    return Err(format!("service {dep}: {} is not running", c.name));
                }
                match c.state.health.as_ref().map(|h| h.status.as_str()) {
                    Some("healthy") => {}
                    Some("unhealthy") => {
                        return Err(format!("service {dep}: {} is unhealthy", c.name))
                    }
                    None => {
                        return Err(format!(
                            "service {dep} has no health check, so it cannot become healthy (condition: service_healthy)"
                        ))
                    }
                    _ => healthy = false,
                }
            }
            if healthy {
                out.line(dep, "Healthy");
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("service {dep} did not become healthy"));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// `/compose/up` (`start`) and `/compose/create`.
    pub async fn up(
        &self,
        p: Project,
        wanted: &[String],
        force: bool,
        no_recreate: bool,
        start: bool,
        out: &Out,
    ) -> Result<(), Failure> {
        let lock = project_lock(&self.tenant, &self.project);
        let _g = lock.lock().await;
        let all_names: Vec<String> = p.services.keys().cloned().collect();
        let order = spec::start_order(
            &p.services,
            if wanted.is_empty() {
                &all_names
            } else {
                wanted
            },
        )
        .map_err(|e| e.message)?;
        let full_order = spec::start_order(&p.services, &all_names).map_err(|e| e.message)?;
        let mut rec = self
            .record()
            .map_err(|e| e.message)?
            .unwrap_or_else(|| ProjectRecord {
                name: self.project.clone(),
                tenant: self.tenant.clone(),
                created: Some(chrono::Utc::now()),
                ..ProjectRecord::default()
            });
        let network = self.ensure_network(out).await?;
        rec.network = network.clone();
        let volume_names = self.ensure_volumes(&p, &mut rec, out).await?;
        rec.order = full_order;
        let prev_fips: BTreeMap<String, Option<String>> = rec
            .services
            .iter()
            .map(|(k, v)| (k.clone(), v.fip.clone()))
            .collect();
        for name in &order {
            let s = &p.services[name];
            rec.services.insert(
                name.clone(),
                ServiceRecord {
                    config: s.config.clone(),
                    hash: s.hash.clone(),
                    fip: s.fip.map(|f| f.to_string()),
                    security_groups: s.security_groups.clone(),
                },
            );
        }
        rec.updated = Some(chrono::Utc::now());
        self.save_record(&mut rec)?;
        self.ensure_images(&p, &order, out).await?;

        let existing = containers(&self.app, &self.tenant, &self.project, false);
        let link_targets: BTreeMap<String, String> = p
            .services
            .values()
            .map(|s| {
                let first = of_service(&existing, &s.name)
                    .first()
                    .map(|c| c.name.clone())
                    .unwrap_or_else(|| s.container_name(&self.project, 1));
                (s.name.clone(), first)
            })
            .collect();
        for name in &order {
            let svc = &p.services[name];
            let mine: Vec<Container> = of_service(&existing, name).into_iter().cloned().collect();
            let mut current = Vec::new();
            if mine.is_empty() {
                let at = Placement {
                    project: &self.project,
                    network: &network,
                    number: 1,
                    volume_names: &volume_names,
                    link_targets: &link_targets,
                    kept_volumes: &[],
                };
                let cname = svc.container_name(&self.project, 1);
                out.line(&cname, "Creating");
                let c = self.create_container(svc, &cname, &at).await?;
                out.line(&cname, "Created");
                current.push(c);
            } else {
                for old in mine {
                    let changed = label(&old, spec::HASH_LABEL) != svc.hash;
                    // Forced for the services named (all when none); what they depend
                    // on follows its config hash.
                    let forced = force && (wanted.is_empty() || wanted.contains(name));
                    if forced || (changed && !no_recreate) {
                        let at = Placement {
                            project: &self.project,
                            network: &network,
                            number: number(&old).max(1),
                            volume_names: &volume_names,
                            link_targets: &link_targets,
                            kept_volumes: &[],
                        };
                        let prev = prev_fips.get(name).cloned().flatten();
                        current.push(self.recreate(svc, &old, &at, prev.as_deref(), out).await?);
                    } else {
                        out.line(&old.name, "Up-to-date");
                        current.push(old);
                    }
                }
            }
            if start {
                for (dep, cond) in &svc.depends_on {
                    if cond == "service_healthy" {
                        self.wait_healthy(dep, out).await?;
                    }
                }
                for c in &current {
                    let now = self.app.runtime.get(&self.tenant, &c.id).map_err(msg)?;
                    if !now.is_running() {
                        out.line(&c.name, "Starting");
                        self.app
                            .runtime
                            .start(&self.tenant, &c.id)
                            .await
                            .map_err(|e| format!("starting {}: {}", c.name, msg(e)))?;
                        out.line(&c.name, "Started");
                    }
                }
            }
            if let (Some(ip), Some(first)) = (svc.fip, current.first()) {
                self.attach_fip(first, &ip.to_string(), out).await?;
            }
        }
        let orphans: Vec<String> = existing
            .iter()
            .filter(|c| !p.services.contains_key(label(c, spec::SERVICE_LABEL)))
            .map(|c| c.name.clone())
            .collect();
        if !orphans.is_empty() {
            out.note(&format!(
                "Found orphan containers ({}) for this project. If you removed or renamed this service in your compose file, you can run this command with the --remove-orphans flag to clean it up.",
                orphans.join(", ")
            ));
        }
        self.save_record(&mut rec)?;
        Ok(())
    }

    fn save_record(&self, rec: &mut ProjectRecord) -> Result<(), Failure> {
        rec.containers = containers(&self.app, &self.tenant, &self.project, true)
            .into_iter()
            .map(|c| (c.name, c.id))
            .collect();
        record::save(self.app.runtime.store().as_ref(), rec).map_err(|e| e.message)
    }
}
