//! The runtime's side of volumes: which volumes a container gets at create, holding them
//! while it runs, handing them to its VM, freezing them for a snapshot, and removing the ones
//! that go with it. The volumes themselves (records, quotas, blocks) are `crate::volumes`'.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{Entry, Runtime};
use crate::model::{Container, ContainerConfig, HostConfig};
use crate::volumes::request::{self, Wanted};
use crate::volumes::{CreateRequest, Mount, Snapshot, Volume, GB};
use crate::{shim_link, Result, RuntimeError};

/// Docker's anonymous volume names: 64 hex digits.
fn anonymous_name() -> String {
    super::random_id()
}

impl Runtime {
    /// The volumes a create asks for, as mounts of existing volumes: named ones that do not
    /// exist yet and anonymous ones are made now (returned too, so a create that fails later
    /// can remove them).
    pub(super) async fn plan_mounts(
        &self,
        tenant: &str,
        config: &ContainerConfig,
        host_config: &HostConfig,
        image_config: &Value,
        tmpfs: &[agent_proto::TmpfsMount],
    ) -> Result<(Vec<Mount>, Vec<Volume>)> {
        let noauto = config
            .labels
            .get(request::NOAUTO_LABEL)
            .is_some_and(|v| v == "true");
        let mut from_others = Vec::new();
        for spec in &host_config.volumes_from {
            from_others.extend(self.volumes_from(tenant, spec)?);
        }
        let keys = |v: &Value| -> Vec<String> {
            v.as_object()
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default()
        };
        // A tmpfs takes its path from the image's VOLUMEs; any other mount there is a duplicate.
        let is_tmpfs = |path: &str| tmpfs.iter().any(|t| t.target == path);
        let not_tmpfs = |paths: Vec<String>| -> Vec<String> {
            paths
                .into_iter()
                .filter(|p| request::check_destination(p).map_or(true, |p| !is_tmpfs(&p)))
                .collect()
        };
        let volume_mounts: Vec<_> = host_config
            .mounts
            .iter()
            .filter(|m| m.kind != "tmpfs")
            .cloned()
            .collect();
        let wanted = request::collect(
            &host_config.binds,
            &volume_mounts,
            from_others,
            &config.volumes.keys().cloned().collect::<Vec<_>>(),
            &not_tmpfs(keys(&image_config["Volumes"])),
            noauto,
        )?;
        if let Some(w) = wanted.iter().find(|w| is_tmpfs(&w.destination)) {
            return Err(crate::RuntimeError::Invalid(format!(
                "Duplicate mount point: {}",
                w.destination
            )));
        }
        let mut mounts = Vec::new();
        let mut made = Vec::new();
        for mut w in wanted {
            if w.driver.is_empty() {
                w.driver = host_config.volume_driver.clone();
            }
            match self.volume_for(tenant, &w).await {
                Ok((volume, new)) => {
                    mounts.push(Mount {
                        volume: volume.name.clone(),
                        destination: w.destination,
                        read_only: w.read_only,
                        no_copy: w.no_copy,
                    });
                    if new {
                        made.push(volume);
                    }
                }
                Err(e) => {
                    self.remove_volumes_quietly(&made);
                    return Err(e);
                }
            }
        }
        // Parents before children (`/data` before `/data/logs`): the agent mounts in order.
        mounts.sort_by_key(|m: &Mount| m.destination.matches('/').count());
        Ok((mounts, made))
    }

    /// The volume `w` names (made when missing, as Docker does), or a new anonymous one.
    async fn volume_for(&self, tenant: &str, w: &Wanted) -> Result<(Volume, bool)> {
        if let Some(name) = &w.name {
            if let Ok(v) = self.volumes.get(tenant, name) {
                return Ok((v, false));
            }
        }
        let req = CreateRequest {
            name: w.name.clone().unwrap_or_else(anonymous_name),
            driver: w.driver.clone(),
            options: w.options.clone(),
            labels: BTreeMap::new(),
            anonymous: w.name.is_none(),
        };
        self.create_volume(tenant, req).await
    }

    /// `--volumes-from ctr[:ro|rw]`: that container's mounts. A running one holds its volumes,
    /// and a volume is one running container's at a time: refused.
    fn volumes_from(&self, tenant: &str, spec: &str) -> Result<Vec<Wanted>> {
        let (reference, read_only) = request::parse_volumes_from(spec)?;
        let other = self.get(tenant, &reference)?;
        if other.is_running() {
            if let Some(m) = other.mounts.first() {
                return Err(crate::volumes::in_use(&m.volume, &other.id));
            }
        }
        Ok(other
            .mounts
            .iter()
            .map(|m| Wanted {
                name: Some(m.volume.clone()),
                destination: m.destination.clone(),
                read_only: read_only.unwrap_or(m.read_only),
                no_copy: m.no_copy,
                driver: String::new(),
                options: BTreeMap::new(),
            })
            .collect())
    }

    pub async fn create_volume(&self, tenant: &str, req: CreateRequest) -> Result<(Volume, bool)> {
        // A create of a volume that exists returns it, taking no more space.
        if req.name.is_empty() || self.volumes.get(tenant, &req.name).is_err() {
            self.check_storage(tenant).await?;
        }
        let volumes = self.volumes.clone();
        let t = tenant.to_string();
        let (volume, new) = tokio::task::spawn_blocking(move || volumes.create(&t, req, None))
            .await
            .map_err(super::internal)??;
        if new {
            self.events.emit(tenant, volume_event(&volume, "create"));
        }
        Ok((volume, new))
    }

    pub(super) fn remove_volumes_quietly(&self, volumes: &[Volume]) {
        for v in volumes {
            if let Err(e) = self.volumes.remove(v) {
                tracing::warn!("removing volume {}: {e}", v.name);
            }
        }
    }

    /// The containers (any state) whose mounts name the volume.
    pub fn volume_users(&self, tenant: &str, name: &str) -> Vec<Container> {
        self.list(tenant)
            .into_iter()
            .filter(|c| c.mounts.iter().any(|m| m.volume == name))
            .collect()
    }

    /// `DELETE /volumes/{name}`: refused while a container (running or not) uses it, as
    /// Docker's is; `force` only makes a missing volume no error.
    pub async fn remove_volume(&self, tenant: &str, name: &str, force: bool) -> Result<()> {
        let v = match self.volumes.get(tenant, name) {
            Ok(v) => v,
            Err(RuntimeError::NotFound(_)) if force => return Ok(()),
            Err(e) => return Err(e),
        };
        let users = self.volume_users(tenant, name);
        if !users.is_empty() {
            let ids: Vec<&str> = users.iter().map(|c| c.short_id()).collect();
            return Err(RuntimeError::Conflict(format!(
                "remove {name}: volume is in use - [{}]",
                ids.join(", ")
            )));
        }
        self.drop_volume(v).await
    }

    async fn drop_volume(&self, v: Volume) -> Result<()> {
        let volumes = self.volumes.clone();
        let gone = v.clone();
        tokio::task::spawn_blocking(move || volumes.remove(&gone))
            .await
            .map_err(super::internal)??;
        self.events.emit(&v.tenant, volume_event(&v, "destroy"));
        Ok(())
    }

    /// `POST /volumes/prune`: the tenant's volumes no container uses (only anonymous ones
    /// unless `all`, as Docker 23+ does), filtered by labels. Returns (names, bytes freed).
    pub async fn prune_volumes(
        &self,
        tenant: &str,
        all: bool,
        keep: impl Fn(&Volume) -> bool,
    ) -> Result<(Vec<String>, u64)> {
        let mut removed = Vec::new();
        let mut freed = 0;
        for v in self.volumes.list(tenant)? {
            if (!all && !v.anonymous) || keep(&v) || !self.volume_users(tenant, &v.name).is_empty()
            {
                continue;
            }
            let used = self.volumes.backend(&v)?.used_bytes(&v.id);
            let name = v.name.clone();
            self.drop_volume(v).await?;
            removed.push(name);
            freed += used;
        }
        Ok((removed, freed))
    }

    /// Holds the container's volumes for its run (409 when another running container holds
    /// one) and says how its VM reaches them.
    pub(super) fn hold_volumes(&self, c: &Container) -> Result<Vec<shim::VolumeSpec>> {
        if c.mounts.is_empty() {
            return Ok(Vec::new());
        }
        let mut specs = Vec::new();
        for (slot, m) in c.mounts.iter().enumerate() {
            let v = self.volumes.get(&c.tenant, &m.volume).map_err(|_| {
                RuntimeError::NotFound(format!(
                    "volume {} of container {} no longer exists",
                    m.volume, c.name
                ))
            })?;
            specs.push(shim::VolumeSpec {
                disk: self.volumes.backend(&v)?.disk(&v.id),
                mount: agent_proto::VolumeMount {
                    slot: slot as u8,
                    target: m.destination.clone(),
                    read_only: m.read_only,
                    copy_up: !m.no_copy && !m.read_only,
                    size_bytes: v.size_gb * GB,
                },
            });
        }
        self.volumes.hold(&c.tenant, &c.id, &volume_names(c))?;
        Ok(specs)
    }

    pub(super) fn release_volumes(&self, c: &Container) {
        self.volumes.release(&c.tenant, &c.id, &volume_names(c));
    }

    /// After the container's records are gone: the volumes that go with it (`autoremove`
    /// ones always; anonymous ones with `rm -v` and `--rm`).
    pub(super) async fn remove_container_volumes(&self, c: &Container, anonymous_too: bool) {
        for m in &c.mounts {
            let Ok(v) = self.volumes.get(&c.tenant, &m.volume) else {
                continue;
            };
            let goes = v
                .labels
                .get(crate::volumes::AUTOREMOVE_LABEL)
                .is_some_and(|l| l == "true")
                || (anonymous_too && v.anonymous);
            if !goes || !self.volume_users(&c.tenant, &v.name).is_empty() {
                continue;
            }
            if let Err(e) = self.drop_volume(v).await {
                tracing::warn!("removing volume {} of {}: {e}", m.volume, c.id);
            }
        }
    }

    /// `POST /snapshots/create`. A volume a running container holds needs `force`: its guest
    /// file system is frozen for the copy (so the snapshot is consistent), then thawed.
    pub async fn create_snapshot(
        &self,
        tenant: &str,
        volume: &str,
        name: &str,
        force: bool,
    ) -> Result<Snapshot> {
        let v = self.volumes.get(tenant, volume)?;
        let holder = self.volumes.holder(tenant, volume)?;
        let frozen = match &holder {
            None => None,
            Some(h) if !force => {
                return Err(RuntimeError::Conflict(format!(
                    "volume {volume} is in use by container {}: snapshot it with --force (its file system is frozen for the copy)",
                    &h.container[..h.container.len().min(12)]
                )))
            }
            Some(h) if h.node != self.cfg.node_name => {
                return Err(RuntimeError::Conflict(format!(
                    "volume {volume} is in use by container {} on node {}: stop it to snapshot the volume",
                    &h.container[..h.container.len().min(12)],
                    h.node
                )))
            }
            Some(h) => {
                let c = self.get(tenant, &h.container)?;
                let targets: Vec<String> = c
                    .mounts
                    .iter()
                    .filter(|m| m.volume == volume)
                    .map(|m| m.destination.clone())
                    .collect();
                shim_link::request(&self.dir(&c.id), json!({"op": "freeze", "targets": targets}))
                    .await
                    .map_err(|e| {
                        RuntimeError::Conflict(format!(
                            "freezing volume {volume} in container {}: {e}",
                            c.name
                        ))
                    })?;
                Some((c, targets))
            }
        };
        let volumes = self.volumes.clone();
        let (vv, n) = (v.clone(), name.to_string());
        let taken = tokio::task::spawn_blocking(move || volumes.take_snapshot(&vv, &n))
            .await
            .map_err(super::internal);
        if let Some((c, targets)) = frozen {
            if let Err(e) =
                shim_link::request(&self.dir(&c.id), json!({"op": "thaw", "targets": targets}))
                    .await
            {
                tracing::error!("thawing volume {volume} in {}: {e}", c.id);
            }
        }
        taken?
    }

    pub async fn remove_snapshot(&self, tenant: &str, reference: &str) -> Result<()> {
        let s = self.volumes.snapshot(tenant, reference)?;
        let volumes = self.volumes.clone();
        tokio::task::spawn_blocking(move || volumes.remove_snapshot(&s))
            .await
            .map_err(super::internal)?
    }

    /// The volume's attachment for `Labels.container` (Hyper's client reads it there).
    pub fn volume_holder(&self, tenant: &str, name: &str) -> Result<Option<String>> {
        Ok(self.volumes.holder(tenant, name)?.map(|h| h.container))
    }

    /// After hyperd restarts, running containers hold their volumes again.
    pub(super) fn rehold_volumes(&self, entry: &Entry) {
        let c = entry.snapshot();
        if let Err(e) = self.volumes.hold(&c.tenant, &c.id, &volume_names(&c)) {
            tracing::error!("container {} runs with a volume another holds: {e}", c.id);
        }
    }
}

fn volume_names(c: &Container) -> Vec<String> {
    c.mounts.iter().map(|m| m.volume.clone()).collect()
}

fn volume_event(v: &Volume, action: &str) -> crate::events::Event {
    crate::events::Event::volume(&v.name, &v.driver, action)
}
