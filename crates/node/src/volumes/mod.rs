//! Persistent volumes and their snapshots: the records (in the store, per tenant, counted
//! against quotas in the same transactions), the backends that hold the blocks, and which
//! running container holds each volume. A volume is a further disk of its container's VM
//! (ext4 inside, mounted by the guest agent); one running container holds it at a time.
//! Container-side logic (which volumes a create asks for, mounting at start, `rm -v`) is the
//! runtime's (`runtime/volume_ops.rs`); this module knows nothing of containers but their ids.

pub mod backend;
pub mod holds;
pub mod init;
pub mod model;
pub mod rbd;
pub mod request;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use store::{Compare, Op, Store, Txn};

pub use backend::{Backend, Local};
pub use model::{Mount, Snapshot, Volume, AUTOREMOVE_LABEL, GB};

use crate::metering::{Kind, Meter, Segment};
use crate::quota::{self, Counter};
use crate::{Result, RuntimeError};

/// Sizes a volume may have, in GB (Hyper's 10 to 50 by default; an operator setting).
#[derive(Debug, Clone, Copy)]
pub struct SizeRange {
    pub min: u64,
    pub max: u64,
}

impl Default for SizeRange {
    fn default() -> Self {
        Self { min: 10, max: 50 }
    }
}

/// What `POST /volumes/create` asks.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    pub name: String,
    pub driver: String,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub anonymous: bool,
}

fn volume_key(tenant: &str, name: &str) -> String {
    format!("/volumes/{tenant}/{name}")
}
fn snapshot_key(tenant: &str, id: &str) -> String {
    format!("/snapshots/{tenant}/{id}")
}
fn snapshot_name_key(tenant: &str, name: &str) -> String {
    format!("/snapshot-names/{tenant}/{name}")
}

fn internal<E: std::fmt::Display>(e: E) -> RuntimeError {
    RuntimeError::Internal(e.to_string())
}

pub struct Volumes {
    store: Arc<dyn Store>,
    meter: Meter,
    backends: Vec<Arc<dyn Backend>>,
    /// The backend behind the driver name `hyper` (what Hyper's client always sends) and an
    /// empty driver.
    default_driver: &'static str,
    pub sizes: SizeRange,
    /// Upload sessions of volumes populated from a client's directory.
    pub uploads: init::Uploads,
    /// Where URL sources may be fetched from (the operator's allow list).
    pub fetch_policy: image::policy::AddressPolicy,
    /// This node's name: the home of the local volumes made here.
    node: String,
}

impl Volumes {
    pub fn new(
        store: Arc<dyn Store>,
        backends: Vec<Arc<dyn Backend>>,
        default_driver: &str,
        sizes: SizeRange,
        uploads: init::Uploads,
        fetch_policy: image::policy::AddressPolicy,
    ) -> Result<Self> {
        let default_driver = backends
            .iter()
            .find(|b| b.name() == default_driver)
            .map(|b| b.name())
            .ok_or_else(|| {
                RuntimeError::Invalid(format!("no volume backend named {default_driver:?}"))
            })?;
        Ok(Self {
            meter: Meter::new(store.clone()),
            store,
            backends,
            default_driver,
            sizes,
            uploads,
            fetch_policy,
            node: String::new(),
        })
    }

    /// Local volumes made here are known to live on `node`.
    pub fn on_node(mut self, node: &str) -> Self {
        self.node = node.to_string();
        self
    }

    fn drivers(&self) -> String {
        let mut names: Vec<&str> = vec!["hyper"];
        names.extend(self.backends.iter().map(|b| b.name()));
        names.join(", ")
    }

    /// The backend a driver name means ("" and "hyper": the operator's default).
    fn backend_for(&self, driver: &str) -> Result<&Arc<dyn Backend>> {
        let name = match driver {
            "" | "hyper" => self.default_driver,
            d => d,
        };
        self.backends
            .iter()
            .find(|b| b.name() == name)
            .ok_or_else(|| {
                RuntimeError::Invalid(format!(
                    "volume driver {driver:?} is not available here; the drivers are: {}",
                    self.drivers()
                ))
            })
    }

    pub fn backend(&self, v: &Volume) -> Result<&Arc<dyn Backend>> {
        self.backend_for(&v.driver)
    }

    // ---- records ----

    pub fn get(&self, tenant: &str, name: &str) -> Result<Volume> {
        match self.store.get(&volume_key(tenant, name))? {
            Some(kv) => serde_json::from_slice(&kv.value).map_err(internal),
            None => Err(RuntimeError::NotFound(format!("No such volume: {name}"))),
        }
    }

    pub fn list(&self, tenant: &str) -> Result<Vec<Volume>> {
        self.store
            .range(&volume_key(tenant, ""))?
            .iter()
            .map(|kv| serde_json::from_slice(&kv.value).map_err(internal))
            .collect()
    }

    /// The size a create asks for, checked against the operator's range.
    pub fn requested_size(
        &self,
        opts: &BTreeMap<String, String>,
        from: Option<&Snapshot>,
    ) -> Result<u64> {
        let raw = opts.get("size").map(|s| s.trim()).unwrap_or("");
        let raw = raw
            .strip_suffix("GB")
            .or_else(|| raw.strip_suffix('G'))
            .unwrap_or(raw);
        let size = match (raw, from) {
            ("", Some(s)) => return Ok(s.size_gb),
            ("", None) => self.sizes.min,
            (n, _) => n.parse::<u64>().map_err(|_| {
                RuntimeError::Invalid(format!(
                    "invalid volume size {n:?}: give a whole number of GB ({} to {})",
                    self.sizes.min, self.sizes.max
                ))
            })?,
        };
        if size < self.sizes.min || size > self.sizes.max {
            return Err(RuntimeError::Invalid(format!(
                "volume size {size} GB is out of range: {} to {} GB",
                self.sizes.min, self.sizes.max
            )));
        }
        if let Some(s) = from {
            if size < s.size_gb {
                return Err(RuntimeError::Invalid(format!(
                    "volume size {size} GB is smaller than snapshot {}'s {} GB",
                    s.name, s.size_gb
                )));
            }
        }
        Ok(size)
    }

    /// A new volume: its blocks first (under a temporary name), then its record and the
    /// tenant's counts in one transaction; the blocks go again if the record cannot be made.
    /// An existing volume of that name is returned as it is (Docker's create is idempotent).
    /// `tree`: content to put in it.
    pub fn create(
        &self,
        tenant: &str,
        req: CreateRequest,
        tree: Option<&Path>,
    ) -> Result<(Volume, bool)> {
        let name = if req.name.is_empty() {
            crate::runtime::random_id()
        } else {
            request::check_name(&req.name)?;
            req.name.clone()
        };
        if let Ok(existing) = self.get(tenant, &name) {
            let asked = self.backend_for(&req.driver)?.name();
            if asked != existing.driver {
                return Err(RuntimeError::Conflict(format!(
                    "volume {name} already exists with driver {}; remove it first to use driver {asked}",
                    existing.driver
                )));
            }
            return Ok((existing, false));
        }
        for key in req.options.keys() {
            if !matches!(key.as_str(), "size" | "snapshot") {
                return Err(RuntimeError::Invalid(format!(
                    "unknown volume option {key:?}: the options are size (GB) and snapshot"
                )));
            }
        }
        let backend = self.backend_for(&req.driver)?.clone();
        let from = match req.options.get("snapshot").filter(|s| !s.is_empty()) {
            Some(s) => Some(self.snapshot(tenant, s)?),
            None => None,
        };
        if let Some(s) = &from {
            if s.driver != backend.name() {
                return Err(RuntimeError::Invalid(format!(
                    "snapshot {} is on driver {}; a volume from it must use that driver",
                    s.name, s.driver
                )));
            }
        }
        let size_gb = self.requested_size(&req.options, from.as_ref())?;
        self.check_quota(tenant, size_gb)?;
        let volume = Volume {
            id: crate::runtime::random_id(),
            tenant: tenant.into(),
            name,
            driver: backend.name().into(),
            size_gb,
            labels: req.labels,
            options: req.options,
            created: Utc::now(),
            // Docker's rule: a volume created without a name is anonymous (`prune` takes it).
            anonymous: req.anonymous || req.name.is_empty(),
            node: match backend.name() {
                "local" => self.node.clone(),
                _ => String::new(),
            },
        };
        let made = match &from {
            Some(s) => backend.create_from_snapshot(&volume.id, &s.id, volume.bytes()),
            None => backend.create(&volume.id, volume.bytes(), tree),
        };
        made.map_err(|e| RuntimeError::Internal(format!("creating volume {}: {e}", volume.name)))?;
        match self.insert_record(&volume) {
            Ok(true) => {}
            Ok(false) => {
                let _ = backend.remove(&volume.id);
                // Another create of the same name won the race: Docker's answer is that volume.
                return self.get(tenant, &volume.name).map(|v| (v, false));
            }
            Err(e) => {
                let _ = backend.remove(&volume.id);
                return Err(e);
            }
        }
        let seg = Segment::storage(
            Kind::Volume,
            &volume.id,
            &volume.name,
            volume.size_gb * model::BILLED_GB,
            volume.created,
        );
        if let Err(e) = self.meter.open_segment(tenant, &seg) {
            tracing::error!("metering volume {}: {e}", volume.name);
        }
        Ok((volume, true))
    }

    fn check_quota(&self, tenant: &str, size_gb: u64) -> Result<()> {
        let q = quota::load(self.store.as_ref(), tenant)?;
        let count = Counter::read(self.store.as_ref(), tenant, "volumes")?;
        let gb = Counter::read(self.store.as_ref(), tenant, "volume_gb")?;
        if count.value() >= q.volumes {
            return Err(quota::exceeded("volumes", q.volumes));
        }
        if gb.value() + size_gb > q.volume_gb {
            return Err(quota::exceeded("GB of volumes", q.volume_gb));
        }
        Ok(())
    }

    /// The record and the counts, atomically; `false` when the name was taken meanwhile.
    fn insert_record(&self, v: &Volume) -> Result<bool> {
        loop {
            let q = quota::load(self.store.as_ref(), &v.tenant)?;
            let count = Counter::read(self.store.as_ref(), &v.tenant, "volumes")?;
            let gb = Counter::read(self.store.as_ref(), &v.tenant, "volume_gb")?;
            if count.value() >= q.volumes {
                return Err(quota::exceeded("volumes", q.volumes));
            }
            if gb.value() + v.size_gb > q.volume_gb {
                return Err(quota::exceeded("GB of volumes", q.volume_gb));
            }
            let key = volume_key(&v.tenant, &v.name);
            let done = self.store.txn(
                Txn::new()
                    .when(count.unchanged())
                    .when(gb.unchanged())
                    .when(Compare::Absent(key.clone()))
                    .then(count.set(count.value() + 1))
                    .then(gb.set(gb.value() + v.size_gb))
                    .then(Op::Put(key.clone(), serde_json::to_vec(v).expect("json"))),
            )?;
            if done.succeeded {
                return Ok(true);
            }
            if self.store.get(&key)?.is_some() {
                return Ok(false);
            }
        }
    }

    /// Removes the volume's record, counts and blocks. The caller has checked that no
    /// container uses it.
    pub fn remove(&self, v: &Volume) -> Result<()> {
        loop {
            let count = Counter::read(self.store.as_ref(), &v.tenant, "volumes")?;
            let gb = Counter::read(self.store.as_ref(), &v.tenant, "volume_gb")?;
            // Not while a container of any node holds it (checked again in the transaction).
            if let Some(holder) = self.holder(&v.tenant, &v.name)? {
                return Err(in_use(&v.name, &holder.container));
            }
            let done = self.store.txn(
                Txn::new()
                    .when(count.unchanged())
                    .when(gb.unchanged())
                    .when(Compare::Absent(holds::key(&v.tenant, &v.name)))
                    .then(count.set(count.value().saturating_sub(1)))
                    .then(gb.set(gb.value().saturating_sub(v.size_gb)))
                    .then(Op::Delete(volume_key(&v.tenant, &v.name))),
            )?;
            if done.succeeded {
                break;
            }
        }
        if let Err(e) = self.meter.close_segment(&v.tenant, &v.id, Utc::now()) {
            tracing::error!("metering the removal of volume {}: {e}", v.name);
        }
        self.backend(v)?
            .remove(&v.id)
            .map_err(|e| RuntimeError::Internal(format!("removing volume {}: {e}", v.name)))
    }

    /// Takes `v` from the clients that still have it open (a lost node's VM): from then on
    /// the storage refuses their writes, and this node may attach it.
    pub fn fence(&self, v: &Volume) -> Result<()> {
        self.backend(v)?
            .fence(&v.id)
            .map_err(|e| RuntimeError::Internal(format!("fencing volume {}: {e}", v.name)))
    }

    // ---- snapshots ----

    pub fn snapshot(&self, tenant: &str, reference: &str) -> Result<Snapshot> {
        let id = match self.store.get(&snapshot_name_key(tenant, reference))? {
            Some(kv) => String::from_utf8_lossy(&kv.value).into_owned(),
            None => reference.to_string(),
        };
        match self.store.get(&snapshot_key(tenant, &id))? {
            Some(kv) => serde_json::from_slice(&kv.value).map_err(internal),
            None => Err(RuntimeError::NotFound(format!(
                "No such snapshot: {reference}"
            ))),
        }
    }

    pub fn snapshots(&self, tenant: &str) -> Result<Vec<Snapshot>> {
        self.store
            .range(&snapshot_key(tenant, ""))?
            .iter()
            .map(|kv| serde_json::from_slice(&kv.value).map_err(internal))
            .collect()
    }

    /// A snapshot of `v`'s blocks as they are now; `consistent` is the caller's: the volume
    /// is attached to no VM, or its guest file system is frozen for the call.
    pub fn take_snapshot(&self, v: &Volume, name: &str) -> Result<Snapshot> {
        let id = crate::runtime::random_id();
        let name = if name.is_empty() {
            id[..12].to_string()
        } else {
            name.to_string()
        };
        request::check_name(&name)
            .map_err(|_| RuntimeError::Invalid(format!("invalid snapshot name {name:?}: names are 2 or more of [a-zA-Z0-9_.-], starting with a letter or digit")))?;
        let snap = Snapshot {
            id,
            tenant: v.tenant.clone(),
            name,
            volume: v.name.clone(),
            driver: v.driver.clone(),
            size_gb: v.size_gb,
            created: Utc::now(),
        };
        let name_key = snapshot_name_key(&snap.tenant, &snap.name);
        if self.store.get(&name_key)?.is_some() {
            return Err(RuntimeError::Conflict(format!(
                "a snapshot named {} already exists",
                snap.name
            )));
        }
        let q = quota::load(self.store.as_ref(), &v.tenant)?;
        let count = Counter::read(self.store.as_ref(), &v.tenant, "snapshots")?;
        if count.value() >= q.snapshots {
            return Err(quota::exceeded("snapshots", q.snapshots));
        }
        let backend = self.backend(v)?;
        backend
            .snapshot(&v.id, &snap.id)
            .map_err(|e| RuntimeError::Internal(format!("snapshotting volume {}: {e}", v.name)))?;
        let done = self.store.txn(
            Txn::new()
                .when(count.unchanged())
                .when(Compare::Absent(name_key.clone()))
                .then(count.set(count.value() + 1))
                .then(Op::Put(name_key, snap.id.as_bytes().to_vec()))
                .then(Op::Put(
                    snapshot_key(&snap.tenant, &snap.id),
                    serde_json::to_vec(&snap).expect("json"),
                )),
        )?;
        if !done.succeeded {
            let _ = backend.remove_snapshot(&snap.id);
            return Err(RuntimeError::Conflict(format!(
                "another snapshot was made at the same time (name {} or the snapshot quota); try again",
                snap.name
            )));
        }
        let seg = Segment::storage(
            Kind::Snapshot,
            &snap.id,
            &snap.name,
            snap.size_gb * model::BILLED_GB,
            snap.created,
        );
        if let Err(e) = self.meter.open_segment(&snap.tenant, &seg) {
            tracing::error!("metering snapshot {}: {e}", snap.name);
        }
        Ok(snap)
    }

    pub fn remove_snapshot(&self, s: &Snapshot) -> Result<()> {
        loop {
            let count = Counter::read(self.store.as_ref(), &s.tenant, "snapshots")?;
            let done = self.store.txn(
                Txn::new()
                    .when(count.unchanged())
                    .then(count.set(count.value().saturating_sub(1)))
                    .then(Op::Delete(snapshot_name_key(&s.tenant, &s.name)))
                    .then(Op::Delete(snapshot_key(&s.tenant, &s.id))),
            )?;
            if done.succeeded {
                break;
            }
        }
        if let Err(e) = self.meter.close_segment(&s.tenant, &s.id, Utc::now()) {
            tracing::error!("metering the removal of snapshot {}: {e}", s.name);
        }
        self.backend_for(&s.driver)?
            .remove_snapshot(&s.id)
            .map_err(|e| RuntimeError::Internal(format!("removing snapshot {}: {e}", s.name)))
    }

    /// After a crash: blocks that no record names (a create or rm cut short) are removed.
    pub fn remove_orphans(&self) -> Result<()> {
        let mut volumes = std::collections::HashSet::new();
        for kv in self.store.range("/volumes/")? {
            let v: Volume = serde_json::from_slice(&kv.value).map_err(internal)?;
            volumes.insert(v.id);
        }
        let mut snapshots = std::collections::HashSet::new();
        for kv in self.store.range("/snapshots/")? {
            let s: Snapshot = serde_json::from_slice(&kv.value).map_err(internal)?;
            snapshots.insert(s.id);
        }
        for b in &self.backends {
            let (vols, snaps) = b.list().map_err(internal)?;
            for id in vols.iter().filter(|id| !volumes.contains(*id)) {
                tracing::info!("removing volume blocks {id} that no record names");
                let _ = b.remove(id);
            }
            for id in snaps.iter().filter(|id| !snapshots.contains(*id)) {
                tracing::info!("removing snapshot blocks {id} that no record names");
                let _ = b.remove_snapshot(id);
            }
        }
        Ok(())
    }
}

pub fn in_use(volume: &str, container: &str) -> RuntimeError {
    RuntimeError::Conflict(format!(
        "volume {volume} is in use by container {}: a volume is attached to one running container at a time",
        &container[..container.len().min(12)]
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Volumes of node `node` (local backend) on `store`, or on a new store of their own;
    /// the temp dir holds both.
    pub(crate) fn volumes_on(
        node: &str,
        store: Option<Arc<dyn Store>>,
    ) -> (tempfile::TempDir, Arc<dyn Store>, Volumes) {
        let dir = tempfile::tempdir().unwrap();
        let store = store.unwrap_or_else(|| {
            Arc::new(store::RedbStore::open(&dir.path().join("store.redb")).unwrap())
        });
        let local: Arc<dyn Backend> = Arc::new(Local::new(dir.path()).unwrap());
        let volumes = Volumes::new(
            store.clone(),
            vec![local],
            "local",
            SizeRange::default(),
            init::Uploads::new(dir.path()),
            image::policy::AddressPolicy::new(vec![]),
        )
        .unwrap()
        .on_node(node);
        (dir, store, volumes)
    }
}
