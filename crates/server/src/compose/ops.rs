//! The operations on an existing project (`/compose/start`, `stop`, `kill`, `rm`, `down`):
//! they work from the store and the containers' labels, not from a file.

use node::model::Container;
use node::RuntimeError;

use super::{containers, label, msg, of_service, project_lock, record, spec, Failure, Out, Scope};
use crate::error::ApiError;

impl Scope {
    /// The containers an operation on `wanted` (none: all) acts on, in start order.
    pub fn targets(&self, wanted: &[String]) -> Result<Vec<Container>, ApiError> {
        let rec = self.record()?;
        let all = containers(&self.app, &self.tenant, &self.project, false);
        if rec.is_none() && all.is_empty() {
            return Err(ApiError::new(
                http::StatusCode::NOT_FOUND,
                format!("no such project: {}", self.project),
            ));
        }
        let mut order: Vec<String> = rec.map(|r| r.order).unwrap_or_default();
        for c in &all {
            let s = label(c, spec::SERVICE_LABEL).to_string();
            if !order.contains(&s) {
                order.push(s);
            }
        }
        for w in wanted {
            if !order.contains(w) {
                return Err(ApiError::bad_request(format!("no such service: {w}")));
            }
        }
        Ok(order
            .iter()
            .filter(|s| wanted.is_empty() || wanted.contains(s))
            .flat_map(|s| of_service(&all, s).into_iter().cloned())
            .collect())
    }

    pub async fn start(&self, targets: Vec<Container>, out: &Out) -> Result<(), Failure> {
        let lock = project_lock(&self.tenant, &self.project);
        let _g = lock.lock().await;
        for c in targets {
            let now = self.app.runtime.get(&self.tenant, &c.id).map_err(msg)?;
            if now.is_running() {
                continue;
            }
            out.line(&c.name, "Starting");
            self.app
                .runtime
                .start(&self.tenant, &c.id)
                .await
                .map_err(|e| format!("starting {}: {}", c.name, msg(e)))?;
            out.line(&c.name, "Started");
        }
        Ok(())
    }

    pub async fn stop(
        &self,
        targets: Vec<Container>,
        seconds: Option<i64>,
        signal: Option<&str>,
        out: &Out,
    ) -> Result<(), Failure> {
        let lock = project_lock(&self.tenant, &self.project);
        let _g = lock.lock().await;
        let (doing, done) = if signal.is_some() {
            ("Killing", "Killed")
        } else {
            ("Stopping", "Stopped")
        };
        for c in targets.into_iter().rev() {
            let now = self.app.runtime.get(&self.tenant, &c.id).map_err(msg)?;
            if !now.is_running() {
                continue;
            }
            out.line(&c.name, doing);
            let r = match signal {
                Some(sig) => self.app.runtime.kill(&self.tenant, &c.id, Some(sig)).await,
                None => {
                    self.app
                        .runtime
                        .stop(&self.tenant, &c.id, seconds, None)
                        .await
                }
            };
            match r {
                Ok(()) | Err(RuntimeError::NotModified(_)) => out.line(&c.name, done),
                Err(e) => return Err(format!("{} {}: {}", doing.to_lowercase(), c.name, msg(e))),
            }
        }
        Ok(())
    }

    /// `/compose/rm`: the stopped containers of the services (running ones are left, as
    /// docker-compose leaves them); `rmvol` takes their anonymous volumes too.
    pub async fn rm(&self, targets: Vec<Container>, rmvol: bool, out: &Out) -> Result<(), Failure> {
        let lock = project_lock(&self.tenant, &self.project);
        let _g = lock.lock().await;
        let mut removed = 0;
        for c in targets {
            let now = self.app.runtime.get(&self.tenant, &c.id).map_err(msg)?;
            if now.is_running() {
                out.line(&c.name, "Running: not removed (stop it first)");
                continue;
            }
            out.line(&c.name, "Removing");
            self.app
                .runtime
                .remove(&self.tenant, &c.id, false, rmvol)
                .await
                .map_err(|e| format!("removing {}: {}", c.name, msg(e)))?;
            out.line(&c.name, "Removed");
            removed += 1;
        }
        if removed == 0 {
            out.note("No stopped containers");
        }
        if let Some(mut rec) = self.record().map_err(|e| e.message)? {
            self.save_record(&mut rec)?;
        }
        Ok(())
    }

    /// `/compose/down`: stops and removes the project's containers (orphans too with
    /// `rmorphans`), its network, with `rmvol` its volumes, with `rmi=all` its images, and
    /// forgets the project. Floating IPs stay the tenant's, detached.
    pub async fn down(
        &self,
        rmi: Option<&str>,
        rmvol: bool,
        rmorphans: bool,
        out: &Out,
    ) -> Result<(), Failure> {
        let lock = project_lock(&self.tenant, &self.project);
        let _g = lock.lock().await;
        let rec = self.record().map_err(|e| e.message)?;
        let all = containers(&self.app, &self.tenant, &self.project, true);
        let known = |c: &Container| {
            rec.as_ref()
                .is_none_or(|r| r.services.contains_key(label(c, spec::SERVICE_LABEL)))
        };
        let orphans: Vec<&Container> = all.iter().filter(|c| !known(c)).collect();
        if !orphans.is_empty() && !rmorphans {
            out.note(&format!(
                "Found orphan containers ({}) for this project. If you removed or renamed this service in your compose file, you can run this command with the --remove-orphans flag to clean it up.",
                orphans.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
        let mut order: Vec<&Container> = all.iter().filter(|c| rmorphans || known(c)).collect();
        if let Some(r) = &rec {
            order.sort_by_key(|c| {
                std::cmp::Reverse(
                    r.order
                        .iter()
                        .position(|s| s == label(c, spec::SERVICE_LABEL))
                        .unwrap_or(usize::MAX),
                )
            });
        }
        let mut images = Vec::new();
        for c in order {
            if c.is_running() {
                out.line(&c.name, "Stopping");
                match self.app.runtime.stop(&self.tenant, &c.id, None, None).await {
                    Ok(()) | Err(RuntimeError::NotModified(_)) => out.line(&c.name, "Stopped"),
                    Err(e) => return Err(format!("stopping {}: {}", c.name, msg(e))),
                }
            }
            out.line(&c.name, "Removing");
            self.app
                .runtime
                .remove(&self.tenant, &c.id, true, rmvol)
                .await
                .map_err(|e| format!("removing {}: {}", c.name, msg(e)))?;
            out.line(&c.name, "Removed");
            if !images.contains(&c.image) {
                images.push(c.image.clone());
            }
        }
        let net = self.network_name();
        let (t, n) = (self.tenant.clone(), net.clone());
        match self
            .app
            .runtime
            .with_networks(move |nets| nets.remove_network(&t, &n))
            .await
        {
            Ok(()) => out.line(&net, "Network removed"),
            Err(RuntimeError::NotFound(_)) => {}
            Err(e) => return Err(format!("removing network {net}: {}", msg(e))),
        }
        if rmvol {
            // The project's volumes: from its record, and by label (a `down` without `-v`
            // has forgotten the record, not the volumes).
            let mut vols: Vec<String> = rec
                .iter()
                .flat_map(|r| r.volumes.values().cloned())
                .collect();
            for v in self
                .app
                .runtime
                .volumes
                .list(&self.tenant)
                .unwrap_or_default()
            {
                if v.labels.get(spec::PROJECT_LABEL) == Some(&self.project)
                    && !vols.contains(&v.name)
                {
                    vols.push(v.name);
                }
            }
            for real in &vols {
                match self
                    .app
                    .runtime
                    .remove_volume(&self.tenant, real, true)
                    .await
                {
                    Ok(()) => out.line(real, "Volume removed"),
                    Err(e) => return Err(format!("removing volume {real}: {}", msg(e))),
                }
            }
        }
        if rmi == Some("all") {
            if let Some(r) = &rec {
                for s in r.services.values() {
                    if let Some(i) = s.config["image"].as_str() {
                        if !images.iter().any(|x| x == i) {
                            images.push(i.to_string());
                        }
                    }
                }
            }
            for image in images {
                let Ok(view) = self.app.runtime.images.resolve(&self.tenant, &image) else {
                    continue;
                };
                let in_use = self.app.runtime.image_in_use(&self.tenant, &view.info.id);
                match self
                    .app
                    .runtime
                    .images
                    .remove(&self.tenant, &image, false, in_use)
                {
                    Ok(_) => out.line(&image, "Image removed"),
                    Err(e) => out.line(&image, &format!("Image not removed: {}", msg(e))),
                }
            }
        }
        record::delete(
            self.app.runtime.store().as_ref(),
            &self.tenant,
            &self.project,
        )
        .map_err(|e| e.message)?;
        Ok(())
    }
}
