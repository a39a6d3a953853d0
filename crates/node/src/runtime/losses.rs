//! A lost node's containers (`crate::losses` declares the loss): stopped for good in the
//! store, billed no further, stopped on that node when it comes back, and removable through
//! any node while it is away.

use std::sync::Arc;

use chrono::Utc;
use store::{Compare, Op, Txn};

use super::{container_key, kill_processes_in, processes_in, Runtime};
use crate::events::Event;
use crate::metering::Kind;
use crate::model::{Container, Status};
use crate::{Result, RuntimeError};

impl Runtime {
    /// Marks what ran on `node` as stopped by its loss: each running container's record says
    /// so (exited, 137, the reason), and its run is billed no further. Returns them.
    pub fn declare_lost(&self, node: &str) -> Result<Vec<Container>> {
        let now = Utc::now();
        let mut declared = Vec::new();
        for kv in self.store.range("/containers/")? {
            let Ok(mut c) = serde_json::from_slice::<Container>(&kv.value) else {
                continue;
            };
            let active = matches!(c.state.status, Status::Running | Status::Restarting);
            if c.node != node || c.lost.is_some() || !active {
                continue;
            }
            c.lost = Some(now);
            c.state.status = Status::Exited;
            c.state.exit_code = 137;
            c.state.error = format!("node {node} was lost");
            c.state.finished_at = Some(now);
            c.state.paused = false;
            c.state.health = None;
            // Only if its node has not written it since: a node that is back answers for it.
            let txn = Txn::new()
                .when(Compare::ModRevision(kv.key.clone(), kv.mod_revision))
                .then(Op::Put(
                    kv.key.clone(),
                    serde_json::to_vec(&c).expect("json"),
                ));
            if !self.store.txn(txn)?.succeeded {
                continue;
            }
            self.meter
                .close_segments_of_kind(&c.tenant, &c.id, Kind::Container, now)?;
            self.events.emit(
                &c.tenant,
                Event::container(&c, "die", &[("reason", c.state.error.clone())]),
            );
            self.free_volumes_of_lost(&c);
            // A service's replica is replaced by whoever keeps the service now: it goes.
            if c.config.labels.contains_key(crate::services::SERVICE_LABEL) {
                self.remove_lost(&c.tenant, &c.id)?;
            }
            declared.push(c);
        }
        // The node learns of it when it is back, and stops its copies.
        self.store
            .put(&crate::fleet::lost_key(node), now.to_rfc3339().into_bytes())?;
        Ok(declared)
    }

    /// Starts a lost container again on this node when its restart policy asks for it and
    /// nothing of it is bound to the lost node (its volumes, if any, are named shared ones,
    /// which the declaration fenced and freed): a new container under the same name,
    /// configuration, aliases, floating IP and volumes. `None` when it stays lost (no policy, a
    /// local, anonymous or still held volume, a service's replica, or no room or image here).
    pub async fn start_lost_here(self: &Arc<Self>, lost: &Container) -> Result<Option<Container>> {
        let wanted = super::restart::wanted(&Container {
            lost: None,
            ..lost.clone()
        });
        let replica = lost
            .config
            .labels
            .contains_key(crate::services::SERVICE_LABEL);
        if !wanted || replica {
            return Ok(None);
        }
        let Some(volumes) = self.movable_volumes(lost) else {
            return Ok(None);
        };
        // What would fail the create is checked before the lost record goes.
        if self
            .images
            .resolve(&lost.tenant, &lost.config.image)
            .is_err()
            || self.hold_room(&lost.size, None).is_err()
        {
            tracing::warn!(container = %lost.id, "a lost container stays lost: no image or no room for it here");
            return Ok(None);
        }
        // The declaration fenced them from the lost node and freed them; one held still (its
        // fence failed, or another container took it since) stays with its holder.
        for v in &volumes {
            if let Some(h) = self.volumes.holder(&lost.tenant, &v.name)? {
                tracing::warn!(container = %lost.id, "a lost container stays lost: its volume {} is held by container {} on node {}", v.name, h.container, h.node);
                return Ok(None);
            }
        }
        // Its floating IP follows it (the removal of the lost record detaches it).
        let (tenant, id) = (lost.tenant.clone(), lost.id.clone());
        let fip = self
            .with_networks(move |n| {
                Ok(n.fip_list(&tenant)?
                    .into_iter()
                    .find(|f| f.container == id)
                    .map(|f| f.ip))
            })
            .await?;
        self.remove_lost(&lost.tenant, &lost.id)?;
        let aliases = lost
            .endpoint
            .as_ref()
            .map(|e| e.aliases.clone())
            .unwrap_or_default();
        let c = self
            .create(
                &lost.tenant,
                Some(&lost.name),
                lost.config.clone(),
                lost.host_config.clone(),
                aliases,
            )
            .await?;
        if let Some(ip) = fip {
            let new = c.clone();
            self.with_networks(move |n| n.fip_attach(&new, &ip.to_string()))
                .await?;
        }
        self.start(&lost.tenant, &c.id).await?;
        Ok(Some(c))
    }

    /// The volumes a declared container held are free for the fleet once its node can no
    /// longer write to them: one on shared storage is fenced from that node first (a fence
    /// that fails keeps the hold: better a volume kept than one written from two VMs).
    fn free_volumes_of_lost(&self, c: &Container) {
        for m in &c.mounts {
            let Ok(v) = self.volumes.get(&c.tenant, &m.volume) else {
                continue;
            };
            if v.on_shared_storage() {
                if let Err(e) = self.volumes.fence(&v) {
                    tracing::error!(container = %c.id, "volume {} stays held: fencing it from node {}: {e}", v.name, c.node);
                    continue;
                }
                tracing::info!(container = %c.id, "volume {} fenced from node {}", v.name, c.node);
            }
            self.volumes
                .release_held_by(&c.tenant, &c.node, &c.id, std::slice::from_ref(&v.name));
        }
    }

    /// Stops this node's copies of what the fleet declared lost ([`Self::stop_lost_copies`]),
    /// then takes back the declaration's mark (unless a newer declaration came meanwhile).
    pub async fn answer_own_loss(&self) -> Result<()> {
        let key = crate::fleet::lost_key(&self.cfg.node_name);
        let Some(mark) = self.store.get(&key)? else {
            return Ok(());
        };
        self.stop_lost_copies().await?;
        self.store.txn(
            Txn::new()
                .when(Compare::ModRevision(key.clone(), mark.mod_revision))
                .then(Op::Delete(key)),
        )?;
        Ok(())
    }

    /// The volumes of `lost`, when every one of them can follow it to this node: a named
    /// volume on shared storage (not a local one, which stays with its node's disk; not an
    /// anonymous one, which a new container would not get back).
    fn movable_volumes(&self, lost: &Container) -> Option<Vec<crate::volumes::Volume>> {
        lost.mounts
            .iter()
            .map(|m| self.volumes.get(&lost.tenant, &m.volume).ok())
            .map(|v| v.filter(|v| v.on_shared_storage() && !v.anonymous))
            .collect()
    }

    /// Stops this node's copies of containers the fleet declared lost while this node was
    /// away (frozen, or cut off): their records say so, and win.
    pub async fn stop_lost_copies(&self) -> Result<()> {
        let entries: Vec<_> = self
            .entries
            .lock()
            .expect("poisoned")
            .values()
            .cloned()
            .collect();
        for entry in entries {
            let mine = entry.snapshot();
            if mine.lost.is_some() || !mine.is_running() {
                continue;
            }
            let recorded = match self.store.get(&container_key(&mine.tenant, &mine.id))? {
                Some(kv) => match serde_json::from_slice::<Container>(&kv.value) {
                    Ok(c) if c.lost.is_some() => Some(c),
                    _ => continue,
                },
                // Removed through another node once declared lost, while this one was away
                // (a removal here takes the entry first).
                None if mine.node == self.cfg.node_name => None,
                None => continue,
            };
            tracing::warn!(
                container = %mine.id,
                "the fleet declared this node lost while it was away: stopping its copy"
            );
            // The record as the fleet left it, then the VM gone: the exit the monitor sees
            // keeps the loss (and no restart policy brings it back); a removed one stays gone.
            let gone = recorded.is_none();
            *entry.record.lock().expect("poisoned") = recorded.unwrap_or_else(|| Container {
                lost: Some(Utc::now()),
                ..mine.clone()
            });
            let dir = self.dir(&mine.id);
            kill_processes_in(&dir);
            if gone {
                // Nothing of it is left to keep: its entry, its limits, then its disk once
                // its processes are gone.
                self.entries.lock().expect("poisoned").remove(&mine.id);
                self.release_volumes(&mine);
                self.release_cgroup(&mine).await;
                for _ in 0..50 {
                    if processes_in(&dir).is_empty() {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    tracing::warn!("removing {}: {e}", dir.display());
                }
            }
        }
        Ok(())
    }

    /// Removes the record of a lost container whose node is away (its disk goes with that
    /// node): its name, address and place in the quota are free again.
    pub fn remove_lost(&self, tenant: &str, id: &str) -> Result<()> {
        let Some(kv) = self.store.get(&container_key(tenant, id))? else {
            return Err(RuntimeError::NotFound(format!("No such container: {id}")));
        };
        let c: Container = serde_json::from_slice(&kv.value)
            .map_err(|e| RuntimeError::Internal(format!("container record: {e}")))?;
        if c.lost.is_none() {
            return Err(RuntimeError::Conflict(format!(
                "container {} runs on node {}, which is down: it can be removed once the fleet declares that node lost",
                c.name, c.node
            )));
        }
        let _ = self.networks.release_endpoint(&c);
        self.release_records(&c)?;
        self.events
            .emit(tenant, Event::container(&c, "destroy", &[]));
        Ok(())
    }
}
