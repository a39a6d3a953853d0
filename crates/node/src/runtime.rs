//! The container lifecycle on this node: create, start, stop, kill, remove, attach, exec,
//! and the monitor that turns a VM's exit into the container's state.
//!
//! Each container has one `Entry`: its record (mirrored to the store), a lock that serialises
//! lifecycle operations on it, and a watch channel that counts its exits, which `wait` and
//! `stop` block on. Records are the truth across restarts; the supervisors' `state.json`
//! files are the truth about what a VM did while hyperd was away.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};
use store::{Compare, Op, Store, Txn};
use tokio::io::BufReader;
use tokio::net::UnixStream;
use tokio::sync::{oneshot, watch};

use crate::events::{Event, EventBus};
use crate::images::Images;
use crate::metering::{Kind, Meter, Segment, ROOT_DISK_BYTES};
use crate::model::{Container, ContainerConfig, HostConfig, State, Status};
use crate::network::{NetConfig, Networks};
use crate::pidfd::Pidfd;
use crate::quota::{self, Counter};
use crate::shim_link::{self, ProcessSpec, ShimSpec, ShimStatus};
use crate::standby::StandbyPool;
use crate::volumes::Volumes;
use crate::{sizes, validate, Result, RuntimeError};

mod archive;
mod commit;
mod confine;
mod exec_events;
#[cfg(test)]
mod fuzz;
mod health;
mod losses;
mod network_ops;
mod pause;
mod precheck;
mod restart;
pub use archive::{Archive, ArchiveOp, ArchiveRequest, PathStat};
pub use commit::CommitRequest;
mod storage;
mod teardown;
pub use storage::{parse_size, StorageUsage};
mod volume_init;
mod volume_ops;

pub use volume_init::InitAnswer;

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// This node's name in the fleet: it runs the containers whose records carry it.
    pub node_name: String,
    pub data_root: PathBuf,
    pub qemu: PathBuf,
    pub accel: String,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub kernel_cmdline_extra: String,
    pub shim_binary: PathBuf,
    pub run_as: String,
    pub boot_timeout_secs: u64,
    pub log_max_bytes: u64,
    pub log_max_files: u32,
    /// VM templates (issue 7): `Some(DATA/templates)` starts containers by restoring a template
    /// (the shim builds one when missing and boots cold when it cannot restore); `None` always
    /// boots cold.
    pub template_dir: Option<PathBuf>,
    /// Standby VMs of the default size to keep restored ahead of time (with templates only; a
    /// floor of 0: none).
    pub standby: crate::standby::Sizing,
    pub net: NetConfig,
    /// Free space kept on the data root (`storage`).
    pub disk_reserve: crate::Reserve,
    /// Memory this node's containers may book together (`crate::placement`), in bytes.
    pub memory_capacity: u64,
    /// Where VMs get their CPU and memory limits (`None`: they run unconfined).
    pub cgroups: Option<crate::cgroups::Cgroups>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitCondition {
    NotRunning,
    NextExit,
    Removed,
}

#[derive(Debug, Clone, Copy, Default)]
struct Lifecycle {
    exits: u64,
    /// A forced removal killed the VM and does not wait for its end: the exit is not recorded
    /// (the record is going), and the VM's teardown is the removal's ([`teardown`]).
    removing: bool,
    removed: bool,
    /// A `restart` is stopping the container: that exit does not remove a `--rm` one (as
    /// Docker's restart keeps it).
    restarting: bool,
}

type AttachSlot = (Value, oneshot::Sender<Result<BufReader<UnixStream>>>);

/// Decides, under one lock, whether an attach goes straight to the VM or waits for `start`
/// (`docker run` attaches first, then starts), so none falls between the two.
#[derive(Default)]
struct AttachGate {
    vm_up: bool,
    pending: Vec<AttachSlot>,
}

struct Entry {
    record: Mutex<Container>,
    ops: tokio::sync::Mutex<()>,
    /// Held by a helper VM that has the stopped container's disk (`archive`).
    disk: Arc<tokio::sync::Mutex<()>>,
    lifecycle: watch::Sender<Lifecycle>,
    attach_gate: Mutex<AttachGate>,
    /// The last back-off of its restart policy (zero until it restarts).
    restart_backoff: Mutex<Duration>,
}

impl Entry {
    fn new(c: Container) -> Arc<Self> {
        Arc::new(Self {
            record: Mutex::new(c),
            ops: tokio::sync::Mutex::new(()),
            disk: Arc::new(tokio::sync::Mutex::new(())),
            lifecycle: watch::channel(Lifecycle::default()).0,
            attach_gate: Mutex::new(AttachGate::default()),
            restart_backoff: Mutex::new(Duration::ZERO),
        })
    }
    fn snapshot(&self) -> Container {
        self.record.lock().expect("poisoned").clone()
    }
}

/// What `docker exec` asks for.
#[derive(Debug, Clone, Default)]
pub struct ExecConfig {
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub user: String,
    pub working_dir: String,
    pub tty: bool,
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
    /// Docker's spelling, checked by the API; empty for the default.
    pub detach_keys: String,
}

#[derive(Debug, Clone)]
pub struct ExecInfo {
    pub id: String,
    pub container_id: String,
    pub tenant: String,
    pub config: ExecConfig,
    pub running: bool,
    pub exit_code: Option<i64>,
    pub pid: i64,
}

pub struct Runtime {
    cfg: RuntimeConfig,
    store: Arc<dyn Store>,
    pub images: Images,
    pub meter: Meter,
    pub events: EventBus,
    pub networks: Arc<Networks>,
    pub standby: Option<Arc<StandbyPool>>,
    pub volumes: Arc<Volumes>,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    execs: Mutex<HashMap<String, ExecInfo>>,
    /// Memory held by creates and starts in flight, on top of what containers book.
    room: Arc<Mutex<u64>>,
    /// The fleet's other nodes, as the server reaches them (unset on one machine).
    other_nodes: std::sync::OnceLock<Arc<dyn crate::other_nodes::OtherNodes>>,
    /// Removed containers' VMs still being torn down (see `teardown`).
    teardowns: teardown::Teardowns,
    /// Starts bringing their VMs up now, and those waiting their turn.
    start_turns: crate::start_turns::StartTurns,
}

/// Memory a create or start holds until its container books it (or it fails).
struct RoomHold {
    room: Arc<Mutex<u64>>,
    bytes: u64,
}

impl Drop for RoomHold {
    fn drop(&mut self) {
        *self.room.lock().expect("poisoned") -= self.bytes;
    }
}

fn container_key(tenant: &str, id: &str) -> String {
    format!("/containers/{tenant}/{id}")
}
fn name_key(tenant: &str, name: &str) -> String {
    format!("/names/{tenant}/{name}")
}
pub(crate) fn random_id() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}
fn internal<E: std::fmt::Display>(e: E) -> RuntimeError {
    RuntimeError::Internal(e.to_string())
}

impl Runtime {
    pub fn new(
        cfg: RuntimeConfig,
        store: Arc<dyn Store>,
        images: Images,
        volumes: Volumes,
    ) -> Arc<Self> {
        let meter = Meter::new(store.clone());
        let networks = Arc::new(Networks::new(store.clone(), cfg.net.clone()));
        let standby = (cfg.template_dir.is_some() && cfg.standby.floor > 0).then(|| {
            let size = sizes::lookup(sizes::DEFAULT_SIZE).expect("the default size exists");
            Arc::new(StandbyPool::new(
                &cfg.data_root,
                cfg.shim_binary.clone(),
                vm_spec(&cfg, size),
                &cfg.standby,
            ))
        });
        Arc::new(Self {
            cfg,
            networks,
            standby,
            volumes: Arc::new(volumes),
            store,
            images,
            meter,
            events: EventBus::new(1000),
            entries: Mutex::default(),
            execs: Mutex::default(),
            room: Arc::default(),
            other_nodes: std::sync::OnceLock::new(),
            teardowns: teardown::Teardowns::default(),
            start_turns: crate::start_turns::StartTurns::for_host(),
        })
    }

    /// How this node reaches the fleet's other nodes (set once, by the server).
    pub fn set_other_nodes(&self, link: Arc<dyn crate::other_nodes::OtherNodes>) {
        let _ = self.other_nodes.set(link);
    }

    pub fn other_nodes(&self) -> Option<&Arc<dyn crate::other_nodes::OtherNodes>> {
        self.other_nodes.get()
    }

    /// Take down tenant namespaces that stayed unused for `network::LINGER`, forever.
    pub async fn reap_idle_networks_forever(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_secs(15)).await;
            if let Err(e) = self.with_networks(|n| n.reap_idle()).await {
                tracing::warn!("taking down idle tenant networks: {e}");
            }
        }
    }

    /// As hyperd stops: tenant namespaces stay up, and what they were built from goes to the
    /// next hyperd (`Networks::hand_over`).
    pub async fn hand_over_networks(&self) {
        if let Err(e) = self.with_networks(|n| n.hand_over()).await {
            tracing::warn!("handing tenant networks over to the next hyperd: {e}");
        }
    }

    /// Fill the standby pool in the background and keep it at its target until hyperd stops
    /// (a no-op without one).
    pub fn keep_standby(&self) {
        if let Some(pool) = &self.standby {
            pool.fill();
            tokio::spawn(pool.clone().keep());
        }
    }

    /// The standby VMs an earlier hyperd left: adopted into the pool when they fit it, else
    /// stopped (they may come from other inputs; without a pool, all are).
    pub async fn adopt_standby(&self) {
        let Some(pool) = &self.standby else {
            return crate::standby::drain(&self.cfg.data_root).await;
        };
        let (adopted, stopped) = pool.adopt().await;
        if adopted + stopped > 0 {
            tracing::info!(
                "standby VMs of an earlier hyperd: {adopted} adopted, {stopped} stopped (not fitting this pool)"
            );
        }
    }

    /// As hyperd stops: lets the teardowns of removed containers' VMs finish (a second or so
    /// each, at most 15 s in all; the next hyperd's recovery removes what is left).
    pub async fn finish_teardowns(&self) {
        if let Err(left) = self.teardowns.finish(Duration::from_secs(15)).await {
            tracing::warn!(
                "{left} removed containers' VMs still being torn down; the next start finishes them"
            );
        }
    }

    /// As hyperd stops: launch no more standby VMs, and let the ready ones be (the next hyperd
    /// adopts them).
    pub async fn close_standby(&self) {
        if let Some(pool) = &self.standby {
            pool.close().await;
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Runs a network operation (it spawns `ip`/`nft` and waits) off the async threads.
    pub async fn with_networks<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Networks) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let networks = self.networks.clone();
        tokio::task::spawn_blocking(move || f(&networks))
            .await
            .map_err(internal)?
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.cfg
    }

    /// Where a container's files live: `DATA/c/<id12>`.
    pub fn dir(&self, id: &str) -> PathBuf {
        self.cfg.data_root.join("c").join(&id[..12])
    }

    fn save(&self, c: &Container) -> Result<()> {
        let key = container_key(&c.tenant, &c.id);
        let value = serde_json::to_vec(c).expect("json");
        if c.lost.is_some() {
            // A lost container's record may have been removed through another node while
            // this one was away: its copy's last writes must not bring it back.
            let txn = Txn::new()
                .when(Compare::Absent(key.clone()))
                .otherwise(Op::Put(key, value));
            self.store.txn(txn)?;
        } else {
            self.store.put(&key, value)?;
        }
        Ok(())
    }

    fn update(&self, entry: &Entry, change: impl FnOnce(&mut Container)) -> Result<Container> {
        let snapshot = {
            let mut c = entry.record.lock().expect("poisoned");
            change(&mut c);
            c.clone()
        };
        self.save(&snapshot)?;
        Ok(snapshot)
    }

    /// [`Runtime::update`] of an exit, unless a forced removal took the exit over (see
    /// [`Runtime::end_unrecorded`]): `None` then, and the record is left to the removal. Saved
    /// under the record's lock, so that the removal's delete cannot come between the check
    /// and the save (which would bring the record back).
    fn update_exit(
        &self,
        entry: &Entry,
        change: impl FnOnce(&mut Container),
    ) -> Result<Option<Container>> {
        let mut c = entry.record.lock().expect("poisoned");
        if entry.lifecycle.borrow().removing {
            return Ok(None);
        }
        change(&mut c);
        self.save(&c)?;
        Ok(Some(c.clone()))
    }

    /// A forced removal has had the VM of `c` killed and answers without waiting for its end:
    /// the monitor records no exit (the record is going), so the `die` that Docker reports
    /// before `destroy` is said here.
    fn end_unrecorded(&self, entry: &Entry, c: &Container) {
        {
            let _record = entry.record.lock().expect("poisoned");
            entry.lifecycle.send_modify(|l| l.removing = true);
        }
        self.events.emit(
            &c.tenant,
            Event::container(c, "die", &[("exitCode", "137".to_string())]),
        );
    }

    /// The VM of `c` (QEMU `qemu` and its supervisor) at idle priority: its exit takes only CPU
    /// nothing else wants. SCHED_IDLE on its threads is not enough in a VM group: the group
    /// keeps its weight against hyperd and other VMs unless it is idle too.
    fn background(&self, c: &Container, dir: &Path, qemu: i32) {
        crate::priority::set(qemu as u32, true);
        if let Some(pid) = supervisor_pid(dir).filter(|&p| runs_in(p as i32, dir)) {
            crate::priority::set(pid, true);
        }
        if let Some(cgroups) = &self.cfg.cgroups {
            cgroups.background(&c.tenant, &c.id);
        }
    }

    fn entry(&self, tenant: &str, reference: &str) -> Result<Arc<Entry>> {
        let not_found = || RuntimeError::NotFound(format!("No such container: {reference}"));
        let bare = reference.strip_prefix('/').unwrap_or(reference);
        let entries = self.entries.lock().expect("poisoned");
        if let Some(kv) = self.store.get(&name_key(tenant, bare))? {
            let id = String::from_utf8_lossy(&kv.value).to_string();
            if let Some(e) = entries.get(&id) {
                return Ok(e.clone());
            }
            if self.store.get(&container_key(tenant, &id))?.is_some() {
                return Err(RuntimeError::NotFound(format!(
                    "No such container on this node: {reference} (it runs on another node of the fleet; ask that node's API)"
                )));
            }
        }
        if reference.is_empty() || !reference.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(not_found());
        }
        let matches: Vec<_> = entries
            .iter()
            .filter(|(id, e)| {
                id.starts_with(reference) && e.record.lock().expect("poisoned").tenant == tenant
            })
            .map(|(_, e)| e.clone())
            .collect();
        match matches.len() {
            1 => Ok(matches[0].clone()),
            0 => Err(not_found()),
            _ => Err(RuntimeError::Invalid(format!(
                "multiple IDs found with provided prefix: {reference}"
            ))),
        }
    }

    pub fn get(&self, tenant: &str, reference: &str) -> Result<Container> {
        Ok(self.entry(tenant, reference)?.snapshot())
    }

    /// The tenant's container `reference` wherever it runs: this node's, or another node's as
    /// its record says.
    pub fn get_anywhere(&self, tenant: &str, reference: &str) -> Result<Container> {
        match self.get(tenant, reference) {
            Err(RuntimeError::NotFound(why)) => self
                .home_elsewhere(tenant, reference)?
                .ok_or(RuntimeError::NotFound(why)),
            found => found,
        }
    }

    pub fn list(&self, tenant: &str) -> Vec<Container> {
        let mut out: Vec<Container> = self
            .entries
            .lock()
            .expect("poisoned")
            .values()
            .filter_map(|e| {
                // Other tenants' records are only looked at, never copied.
                let c = e.record.lock().expect("poisoned");
                (c.tenant == tenant).then(|| c.clone())
            })
            .collect();
        out.sort_by_key(|c| std::cmp::Reverse(c.created));
        out
    }

    /// The tenant's containers on every node of the fleet: this node's from memory, the
    /// others' as their nodes last recorded them in the store.
    pub fn list_fleet(&self, tenant: &str) -> Result<Vec<Container>> {
        let mut out = self.list(tenant);
        // One node alone answers from memory: the store is off `ps`'s path.
        let alone = crate::fleet::list(self.store.as_ref())?
            .iter()
            .all(|n| n.record.name == self.cfg.node_name);
        if alone {
            return Ok(out);
        }
        for kv in self.store.range(&container_key(tenant, ""))? {
            let Ok(c) = serde_json::from_slice::<Container>(&kv.value) else {
                continue;
            };
            if c.tenant == tenant && !crate::fleet::runs_here(&c.node, &self.cfg.node_name) {
                out.push(c);
            }
        }
        out.sort_by_key(|c| std::cmp::Reverse(c.created));
        Ok(out)
    }

    /// The record of the tenant's container `reference` (by name, full id or unique id
    /// prefix) when another node runs it; `None` when it runs here or is nobody's.
    pub fn home_elsewhere(&self, tenant: &str, reference: &str) -> Result<Option<Container>> {
        match self.entry(tenant, reference) {
            Err(RuntimeError::NotFound(_)) => {}
            _ => return Ok(None),
        }
        let bare = reference.strip_prefix('/').unwrap_or(reference);
        let records = match self.store.get(&name_key(tenant, bare))? {
            Some(kv) => {
                let id = String::from_utf8_lossy(&kv.value).to_string();
                self.store
                    .get(&container_key(tenant, &id))?
                    .into_iter()
                    .collect()
            }
            None if !bare.is_empty() && bare.chars().all(|c| c.is_ascii_hexdigit()) => {
                self.store.range(&container_key(tenant, bare))?
            }
            None => Vec::new(),
        };
        let [kv] = records.as_slice() else {
            return Ok(None);
        };
        let c: Container = serde_json::from_slice(&kv.value)
            .map_err(|e| RuntimeError::Internal(format!("container record: {e}")))?;
        Ok((!crate::fleet::runs_here(&c.node, &self.cfg.node_name)).then_some(c))
    }

    /// Whether this node holds the tenant's exec `id`.
    pub fn has_exec(&self, tenant: &str, id: &str) -> bool {
        self.exec_inspect(tenant, id).is_ok()
    }

    pub fn image_in_use(&self, tenant: &str, image_id: &str) -> bool {
        self.list(tenant).iter().any(|c| c.image_id == image_id)
    }

    /// Holds the memory of a container of `size` (`except`: the one starting, whose own
    /// booking does not count), or refuses: this node never books more than its capacity.
    fn hold_room(&self, size: &str, except: Option<&str>) -> Result<RoomHold> {
        let need = crate::placement::memory_of(size);
        let mut held = self.room.lock().expect("poisoned");
        let booked: u64 = self
            .entries
            .lock()
            .expect("poisoned")
            .iter()
            .filter(|(id, _)| Some(id.as_str()) != except)
            .map(|(_, e)| {
                let c = e.record.lock().expect("poisoned");
                if crate::placement::books_memory(&c) {
                    crate::placement::memory_of(&c.size)
                } else {
                    0
                }
            })
            .sum();
        let capacity = self.cfg.memory_capacity;
        if booked + *held + need > capacity {
            return Err(RuntimeError::NoRoom(format!(
                "no room on node {} for a {size} container ({} MiB of memory): its containers hold {} of its {} MiB; stop or remove some, or choose a smaller size",
                self.cfg.node_name,
                need >> 20,
                (booked + *held) >> 20,
                capacity >> 20
            )));
        }
        *held += need;
        Ok(RoomHold {
            room: self.room.clone(),
            bytes: need,
        })
    }

    /// Memory booked on each node of the fleet, from the store's records of every tenant.
    pub fn booked_by_node(&self) -> Result<HashMap<String, u64>> {
        let records: Vec<Container> = self
            .store
            .range("/containers/")?
            .iter()
            .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
            .collect();
        Ok(crate::placement::booked_by_node(&records))
    }

    // ---- create ----

    pub async fn create(
        &self,
        tenant: &str,
        name: Option<&str>,
        mut config: ContainerConfig,
        host_config: HostConfig,
        aliases: Vec<String>,
    ) -> Result<Container> {
        let given = name.filter(|n| !n.is_empty());
        let name = match given {
            Some(n) => validate::container_name(n)?,
            None => validate::random_name(),
        };
        validate::env(&config.env)?;
        self.check_storage(tenant).await?;
        if let Some(v) = config.labels.get(PROTECTION_LABEL) {
            if !matches!(v.as_str(), "true" | "false") {
                return Err(RuntimeError::Invalid(format!(
                    "invalid {PROTECTION_LABEL}={v:?}: use true or false"
                )));
            }
        }
        let size = config
            .labels
            .get(sizes::SIZE_LABEL)
            .cloned()
            .unwrap_or_else(|| sizes::DEFAULT_SIZE.to_string());
        let tmpfs = crate::tmpfs::plan(&host_config, sizes::lookup(&size)?.vm_memory_mib())?;
        let _room = self.hold_room(&size, None)?;
        crate::log_options::limits(&host_config.log_config, self.log_limits())?;
        if let Some(g) = host_config
            .group_add
            .iter()
            .find(|g| g.is_empty() || g.contains([':', '\0', '\n', ' ']))
        {
            return Err(RuntimeError::Invalid(format!(
                "invalid --group-add {g:?}: give a group name or number"
            )));
        }
        restart::check_policy(&host_config)?;
        if let Some(sig) = &config.stop_signal {
            validate::signal(sig)?;
        }

        let view = self.images.resolve(tenant, &config.image)?;
        let image_config = view
            .info
            .config
            .get("config")
            .cloned()
            .unwrap_or(Value::Null);
        let (path, args) = command(&config, &image_config)?;
        merge_image_defaults(&mut config, &image_config);
        if let Some(check) = &config.healthcheck {
            health::validate(check)?;
        }
        let argv: Vec<String> = std::iter::once(path.clone())
            .chain(args.iter().cloned())
            .collect();
        validate::process(
            &argv,
            &config.env,
            &config.working_dir,
            &config.user,
            &[
                ("hostname", &config.hostname),
                ("domain name", &config.domainname),
            ],
        )?;

        let (mounts, new_volumes) = self
            .plan_mounts(tenant, &config, &host_config, &image_config, &tmpfs)
            .await?;
        let id = random_id();
        if config.hostname.is_empty() {
            config.hostname = id[..12].to_string();
        }
        let mut container = Container {
            id: id.clone(),
            tenant: tenant.into(),
            name: name.clone(),
            created: Utc::now(),
            image: config.image.clone(),
            image_id: view.info.id.clone(),
            path,
            args,
            config,
            host_config,
            size,
            state: State::default(),
            restart_count: 0,
            endpoint: None,
            mounts,
            node: self.cfg.node_name.clone(),
            lost: None,
        };
        let recorded = self.networks.check_groups(&container).and_then(|()| {
            let first = container.name.clone();
            claim_some_name(first, given.is_none(), validate::random_name, |name| {
                container.name = name.to_string();
                self.claim_name_within_quota(&container)
            })
        });
        if let Err(e) = recorded {
            self.remove_volumes_quietly(&new_volumes);
            return Err(e);
        }
        let planned = {
            let c = container.clone();
            self.with_networks(move |n| {
                let ep = n.plan_endpoint(&c, aliases)?;
                let c = Container {
                    endpoint: ep.clone(),
                    ..c
                };
                if let Err(e) = n.check_links(&c) {
                    n.release_endpoint(&c)?;
                    return Err(e);
                }
                Ok(ep)
            })
            .await
        };
        match planned {
            Ok(ep) => container.endpoint = ep,
            Err(e) => {
                let _ = self.release_records(&container);
                self.remove_volumes_quietly(&new_volumes);
                return Err(e);
            }
        }
        if let Err(e) = self.save(&container) {
            let _ = self.networks.release_endpoint(&container);
            let _ = self.release_records(&container);
            self.remove_volumes_quietly(&new_volumes);
            return Err(e);
        }
        if let Err(e) = self.prepare_root_disk(&container).await {
            let _ = self.networks.release_endpoint(&container);
            let _ = self.release_records(&container);
            self.remove_volumes_quietly(&new_volumes);
            let _ = std::fs::remove_dir_all(self.dir(&id));
            return Err(e);
        }
        let disk = Segment::storage(
            Kind::Rootfs,
            &id,
            &container.name,
            ROOT_DISK_BYTES,
            container.created,
        );
        if let Err(e) = self.meter.open_segment(tenant, &disk) {
            tracing::error!("metering the root disk of {id}: {e}");
        }
        self.entries
            .lock()
            .expect("poisoned")
            .insert(id, Entry::new(container.clone()));
        self.events
            .emit(tenant, Event::container(&container, "create", &[]));
        Ok(container)
    }

    /// Records the container and its name, and counts it against the tenant's quota, all in
    /// one transaction; retried when another create changed the count meanwhile.
    fn claim_name_within_quota(&self, c: &Container) -> Result<()> {
        let limit = quota::load(self.store.as_ref(), &c.tenant)?.containers;
        loop {
            let counter = Counter::read(self.store.as_ref(), &c.tenant, "containers")?;
            if counter.value() >= limit {
                return Err(quota::exceeded("containers", limit));
            }
            let claimed = self.store.txn(
                Txn::new()
                    .when(counter.unchanged())
                    .when(Compare::Absent(name_key(&c.tenant, &c.name)))
                    .then(counter.set(counter.value() + 1))
                    .then(Op::Put(
                        name_key(&c.tenant, &c.name),
                        c.id.as_bytes().to_vec(),
                    ))
                    .then(Op::Put(
                        container_key(&c.tenant, &c.id),
                        serde_json::to_vec(c).expect("json"),
                    )),
            )?;
            if claimed.succeeded {
                return Ok(());
            }
            if let Some(holder) = self.store.get(&name_key(&c.tenant, &c.name))? {
                return Err(RuntimeError::Conflict(format!(
                    "Conflict. The container name \"/{}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
                    c.name,
                    String::from_utf8_lossy(&holder.value)
                )));
            }
        }
    }

    /// Deletes the container's records and gives its quota back, in one transaction.
    fn release_records(&self, c: &Container) -> Result<()> {
        loop {
            let counter = Counter::read(self.store.as_ref(), &c.tenant, "containers")?;
            let mut txn = Txn::new()
                .when(counter.unchanged())
                .then(counter.set(counter.value().saturating_sub(1)))
                .then(Op::Delete(container_key(&c.tenant, &c.id)));
            let name = name_key(&c.tenant, &c.name);
            // The name may belong to another container by now (a rename raced with us).
            if self
                .store
                .get(&name)?
                .is_some_and(|kv| kv.value == c.id.as_bytes())
            {
                txn = txn
                    .when(Compare::Value(name.clone(), c.id.as_bytes().to_vec()))
                    .then(Op::Delete(name));
            }
            if self.store.txn(txn)?.succeeded {
                return Ok(());
            }
        }
    }

    /// The image's ext4 disk (built once per image) under a thin qcow2 overlay: 10 GB sparse,
    /// the writable root the container keeps across stop and start.
    async fn prepare_root_disk(&self, c: &Container) -> Result<()> {
        let dir = self.dir(&c.id);
        std::fs::create_dir_all(&dir)
            .map_err(RuntimeError::io(format!("create {}", dir.display())))?;
        let content = self.images.content().clone();
        let image_id = c.image_id.clone();
        let (disk, template) = tokio::task::spawn_blocking(move || {
            Ok::<_, image::ImageError>((
                content.ensure_disk(&image_id)?,
                content.overlay_template(&image_id)?,
            ))
        })
        .await
        .map_err(internal)??;
        // Every container of an image starts from the same empty overlay: made once with
        // qemu-img, then copied (a few hundred KiB; a copy costs less than spawning qemu-img).
        if !template.exists() {
            let tmp = template.with_extension(format!("tmp{}", random_id()));
            let made = create_overlay(&disk, &tmp).await;
            if let Err(e) = made.and_then(|()| {
                std::fs::rename(&tmp, &template).map_err(RuntimeError::io("publish the overlay"))
            }) {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        }
        std::fs::copy(&template, dir.join("root.qcow2"))
            .map_err(RuntimeError::io("copy the root disk's overlay"))?;
        Ok(())
    }

    // ---- start ----

    pub async fn start(self: &Arc<Self>, tenant: &str, reference: &str) -> Result<Container> {
        let entry = self.entry(tenant, reference)?;
        let started = {
            let _op = entry.ops.lock().await;
            let c = entry.snapshot();
            if c.is_running() {
                return Err(RuntimeError::NotModified(format!(
                    "container {} is already started",
                    c.name
                )));
            }
            // A created container books its memory already: only one that stopped needs room
            // again (and a hold of it beside its booking would count it twice for the other
            // starts of a burst).
            let _room = match crate::placement::books_memory(&c) {
                true => None,
                false => Some(self.hold_room(&c.size, Some(&c.id))?),
            };
            self.reset_restart_policy(&entry)?;
            self.start_locked(&entry).await
        };
        if let Ok(c) = &started {
            if c.config.labels.contains_key(crate::services::SERVICE_LABEL) {
                // This node's balancers take a replica once it runs, one another node's
                // reconciler started here included.
                let t = tenant.to_string();
                if let Err(e) = self.with_networks(move |n| n.sync_tenant(&t, &[])).await {
                    tracing::warn!("adding replica {} to the balancers: {e}", c.name);
                }
            }
        }
        if let Err(e) = &started {
            let c = entry.snapshot();
            // `--rm` covers a container that never ran, as Docker's does.
            if c.host_config.auto_remove && !matches!(e, RuntimeError::NotModified(_)) {
                if let Err(e) = self.remove_any(tenant, &c.id, true, true).await {
                    tracing::warn!("auto-removing {} after its failed start: {e}", c.id);
                }
            }
        }
        started
    }

    async fn start_locked(self: &Arc<Self>, entry: &Arc<Entry>) -> Result<Container> {
        // No standby refill while this start is in flight (see `standby::QUIET`).
        let arrived = std::time::Instant::now();
        let tenant = entry.snapshot().tenant;
        let _starting = self.standby.as_ref().map(|pool| pool.starting(&tenant));
        let _disk = archive::disk_for_start(entry).await?;
        let c = entry.snapshot();
        if c.state.status == Status::Running {
            return Err(RuntimeError::NotModified(format!(
                "container {} is already started",
                c.name
            )));
        }
        let dir = self.dir(&c.id);
        for stale in [
            "state.json",
            "shim.sock",
            "agent.sock",
            "shim.pid",
            "launch.err",
        ] {
            let _ = std::fs::remove_file(dir.join(stale));
        }
        let size = sizes::lookup(&c.size)?;
        let (network, link_env) = {
            let c = c.clone();
            self.with_networks(move |n| Ok((n.start_spec(&c)?, n.link_env(&c)?)))
                .await?
        };
        // From here the VM's QEMU works flat out until the process runs: a few at a time. The
        // turn is waited for before the volumes are held, which a start dropped while it waits
        // (its client gone) would leave held.
        let turn = self.start_turns.take(&c.tenant).await;
        let mut process = process_spec(&c);
        merge_env(&mut process.env, &link_env);
        let tmpfs = crate::tmpfs::plan(&c.host_config, size.vm_memory_mib())?;
        let volumes = self.hold_volumes(&c)?;
        let logs = crate::log_options::limits(&c.host_config.log_config, self.log_limits())?;
        let spec = ShimSpec {
            id: c.id.clone(),
            root_disk: dir.join("root.qcow2"),
            hostname: c.config.hostname.clone(),
            process,
            network,
            disposable: c.host_config.auto_remove,
            volumes,
            tmpfs,
            log_max_bytes: logs.max_bytes,
            log_max_files: logs.max_files,
            ..vm_spec(&self.cfg, size)
        };
        if let Err(e) = write_private(
            &dir.join("spec.json"),
            &serde_json::to_vec_pretty(&spec).expect("json"),
        ) {
            self.release_volumes(&c);
            return Err(RuntimeError::io("write spec.json")(e));
        }

        let up = match self.bring_up_vm(&c, &spec, &dir, arrived).await {
            Ok(()) => self.confine_vm(&c, &dir).await,
            Err(e) => Err(e),
        };
        if let Err(e) = up {
            drop(turn);
            self.release_volumes(&c);
            self.record_start_failure(entry, &e.to_string(), 128);
            self.fail_pending_attaches(entry, &e.to_string());
            return Err(e);
        }
        self.connect_pending_attaches(entry, &dir).await;
        let started = shim_link::request(&dir, json!({"op": "start"})).await;
        drop(turn);
        if let Err(e) = started {
            let code = shim_link::read_state(&dir)
                .and_then(|s| s.exit_code)
                .map_or(128, i64::from);
            let _ = shim_link::request(&dir, json!({"op": "shutdown"})).await;
            wait_for_supervisor_exit(&dir).await;
            self.release_cgroup(&c).await;
            self.release_volumes(&c);
            self.record_start_failure(entry, &e.to_string(), code);
            self.fail_pending_attaches(entry, &e.to_string());
            return Err(e);
        }
        let started_at = shim_link::read_state(&dir)
            .and_then(|s| shim_link::parse_time(&s.started_at))
            .unwrap_or_else(Utc::now);
        let c = self.update(entry, |c| {
            c.state = State {
                status: Status::Running,
                started_at: Some(started_at),
                health: health::initial(c),
                ..State::default()
            };
        })?;
        let segment = Segment::run(&c.id, &c.name, &c.size, started_at);
        if let Err(e) = self.meter.open_segment(&c.tenant, &segment) {
            tracing::error!("metering the start of {}: {e}", c.id);
        }
        self.spawn_monitor(entry.clone());
        self.spawn_health_checks(entry);
        self.events
            .emit(&c.tenant, Event::container(&c, "start", &[]));
        Ok(c)
    }

    /// A supervisor and its VM for the container in `dir`: a standby claimed when one fits,
    /// else a new one (restored from the template or booted cold).
    /// The start `arrived` then (before it waited for its turn): the pool sizes itself to
    /// bursts of starts as they come.
    async fn bring_up_vm(
        &self,
        c: &Container,
        spec: &ShimSpec,
        dir: &Path,
        arrived: std::time::Instant,
    ) -> Result<()> {
        let Some(pool) = &self.standby else {
            return self.launch_shim(c, dir).await;
        };
        let pristine = self.pristine_preparation(c, spec, dir).await;
        let claimed = match pool.take(spec, &c.tenant, pristine.as_ref(), arrived) {
            Some(standby) => pool.claim(&standby, dir).await.is_ok(),
            None => false,
        };
        let up = if claimed {
            Ok(())
        } else {
            self.launch_shim(c, dir).await
        };
        pool.fill();
        up
    }

    /// What a standby prepared for `c`'s image is prepared with, if `c`'s root disk (in `dir`)
    /// is still the image's empty overlay: a container that never ran, into which nothing was
    /// copied. Only the program's name, its look-up's `PATH`, the working directory and the
    /// user are kept of its process (the standby's spec holds no other environment).
    async fn pristine_preparation(
        &self,
        c: &Container,
        spec: &ShimSpec,
        dir: &Path,
    ) -> Option<shim::PrepareSpec> {
        if c.state.started_at.is_some() {
            return None;
        }
        let overlay_template = self.images.content().overlay_template(&c.image_id).ok()?;
        let (template, disk) = (overlay_template.clone(), dir.join("root.qcow2"));
        let pristine = tokio::task::spawn_blocking(move || {
            shim::standby::same_bytes(&template, &disk).unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        if !pristine {
            return None;
        }
        let p = &spec.process;
        Some(shim::PrepareSpec {
            tenant: c.tenant.clone(),
            image_id: c.image_id.clone(),
            overlay_template,
            process: ProcessSpec {
                args: p.args.iter().take(1).cloned().collect(),
                env: p
                    .env
                    .iter()
                    .filter(|e| e.starts_with("PATH="))
                    .cloned()
                    .collect(),
                cwd: p.cwd.clone(),
                user: p.user.clone(),
                group_add: p.group_add.clone(),
                ..ProcessSpec::default()
            },
            preread_max: crate::standby::PREREAD_MAX,
        })
    }

    async fn launch_shim(&self, c: &Container, dir: &Path) -> Result<()> {
        let cgroup = self.cgroup_entries(c)?;
        launch_supervisor(&self.cfg.shim_binary, dir, &cgroup).await
    }

    fn record_start_failure(&self, entry: &Entry, error: &str, exit_code: i64) {
        let result = self.update(entry, |c| {
            c.state.status = if c.state.started_at.is_some() {
                Status::Exited
            } else {
                Status::Created
            };
            c.state.error = error.to_string();
            c.state.exit_code = exit_code;
        });
        if let Err(e) = result {
            tracing::warn!("recording a failed start: {e}");
        }
        entry.lifecycle.send_modify(|l| l.exits += 1);
    }

    async fn connect_pending_attaches(&self, entry: &Entry, dir: &Path) {
        let pending = {
            let mut gate = entry.attach_gate.lock().expect("poisoned");
            gate.vm_up = true;
            std::mem::take(&mut gate.pending)
        };
        for (request, reply) in pending {
            let stream = shim_link::call(dir, request).await.map(|(_, s)| s);
            let _ = reply.send(stream);
        }
    }

    fn fail_pending_attaches(&self, entry: &Entry, error: &str) {
        let pending = {
            let mut gate = entry.attach_gate.lock().expect("poisoned");
            gate.vm_up = false;
            std::mem::take(&mut gate.pending)
        };
        for (_, reply) in pending {
            let _ = reply.send(Err(RuntimeError::Shim(error.to_string())));
        }
    }

    // ---- the monitor ----

    fn spawn_monitor(self: &Arc<Self>, entry: Arc<Entry>) {
        let rt = self.clone();
        tokio::spawn(async move { rt.monitor(entry).await });
    }

    /// Waits for the VM's main process to exit, records it, then applies --rm or the restart
    /// policy. Runs once per start, and again for every running container after a restart.
    async fn monitor(self: Arc<Self>, entry: Arc<Entry>) {
        let id = entry.snapshot().id;
        let dir = self.dir(&id);
        let waited = shim_link::request(&dir, json!({"op": "wait"})).await;
        // New attaches wait for the next start from now on.
        entry.attach_gate.lock().expect("poisoned").vm_up = false;
        // The exit counts once the VM is gone too: a `start` right after `stop` must not find
        // the old QEMU still holding the disk.
        wait_for_supervisor_exit(&dir).await;
        self.release_cgroup(&entry.snapshot()).await;
        self.release_volumes(&entry.snapshot());
        let mut state = shim_link::read_state(&dir).unwrap_or_default();
        if state.status != ShimStatus::Exited {
            if let Ok(reply) = &waited {
                if let Ok(s) = serde_json::from_value(reply["state"].clone()) {
                    state = s;
                }
            }
        }
        if state.status != ShimStatus::Exited {
            // The supervisor died without recording an exit: the VM went with it.
            state.exit_code = Some(137);
            state.error = "the VM supervisor died; the VM was killed".into();
        }
        let finished_at = shim_link::parse_time(&state.finished_at).unwrap_or_else(Utc::now);
        let c = match self.update_exit(&entry, |c| {
            c.state.status = Status::Exited;
            c.state.exit_code = state.exit_code.map_or(137, i64::from);
            c.state.finished_at = Some(finished_at);
            c.state.oom_killed = state.oom_killed;
            c.state.error = state.error.clone();
            if restart::wanted(c) {
                c.state.status = Status::Restarting;
            }
            c.state.paused = false;
        }) {
            Ok(Some(c)) => c,
            // A forced removal took the exit over.
            Ok(None) => return,
            Err(e) => {
                tracing::error!("recording the exit of {id}: {e}");
                return;
            }
        };
        if let Err(e) = self.meter.close_segment(&c.tenant, &c.id, finished_at) {
            tracing::error!("metering the exit of {id}: {e}");
        }
        // Read with the count that wakes a restart: once woken, it clears the mark.
        let mut restarting = false;
        entry.lifecycle.send_modify(|l| {
            l.exits += 1;
            restarting = l.restarting;
        });
        tracing::info!(container = %id, exit_code = c.state.exit_code, "container exited");
        self.events.emit(
            &c.tenant,
            Event::container(&c, "die", &[("exitCode", c.state.exit_code.to_string())]),
        );
        if c.state.oom_killed {
            self.events
                .emit(&c.tenant, Event::container(&c, "oom", &[]));
        }

        if c.host_config.auto_remove && !restarting {
            if let Err(e) = self.remove_any(&c.tenant, &c.id, true, true).await {
                tracing::warn!("auto-removing {id}: {e}");
            }
            return;
        }
        if c.state.status == Status::Restarting {
            let ran = c
                .state
                .started_at
                .map_or(chrono::TimeDelta::zero(), |s| finished_at - s);
            self.restart_after_backoff(entry, ran).await;
        }
    }

    /// After hyperd starts: loads every record, re-attaches to the VMs that kept running, and
    /// records what happened to the ones that exited while hyperd was away.
    pub async fn recover(self: &Arc<Self>) -> Result<()> {
        let mut known = std::collections::HashSet::new();
        let mut running = Vec::new();
        let mut restarting = Vec::new();
        let mut ended_rm = Vec::new();
        for kv in self.store.range("/containers/")? {
            let mut c: Container = serde_json::from_slice(&kv.value).map_err(internal)?;
            // Whoever runs it, its directory here (if any) is not a leftover.
            known.insert(c.id[..12].to_string());
            if c.node.is_empty() {
                c.node = self.cfg.node_name.clone();
                self.save(&c)?;
            } else if c.node != self.cfg.node_name {
                // Another node's: it runs it and answers for it.
                continue;
            }
            let entry = Entry::new(c.clone());
            self.entries
                .lock()
                .expect("poisoned")
                .insert(c.id.clone(), entry.clone());
            archive::remove_leftover(&archive::helper_dir(&self.dir(&c.id))).await;
            if c.state.status != Status::Running {
                // A start (or a restart by policy) cut short by hyperd's death leaves a
                // supervisor and its VM that no record counts as running: unbilled, holding
                // the container's disk, and in the way of its next start. The start failed
                // for its client; end what it left, before its group goes below (which waits up
                // to 10 s for the group to be empty).
                let killed = kill_processes_in(&self.dir(&c.id));
                if killed > 0 {
                    tracing::warn!(
                        container = %c.id,
                        status = c.state.status.as_str(),
                        "killed {killed} processes of a start that hyperd's restart cut short"
                    );
                }
            }
            match c.state.status {
                Status::Running => {
                    // A removal that froze the VM and died with hyperd before the record went
                    // (see `teardown`): the VM ends, and its monitor records the exit.
                    kill_if_frozen(&self.dir(&c.id));
                    self.rehold_volumes(&entry);
                    self.adopt_cgroup(&c);
                    entry.attach_gate.lock().expect("poisoned").vm_up = true;
                    // Paused or not, as the VM is now.
                    self.sync_paused(&entry).await;
                    running.push(entry);
                }
                Status::Restarting => {
                    self.release_cgroup(&c).await;
                    restarting.push(entry)
                }
                Status::Exited if c.host_config.auto_remove => {
                    // Its end was recorded and hyperd died before removing it.
                    self.release_cgroup(&c).await;
                    ended_rm.push(c);
                }
                _ => self.release_cgroup(&c).await,
            }
        }
        // Holds of containers that stopped while hyperd was away (or of volumes it was
        // initialising) end.
        let held: std::collections::HashSet<String> =
            running.iter().map(|e| e.snapshot().id).collect();
        let ended = self.volumes.end_holds_of_node(&self.cfg.node_name, &held)?;
        if ended > 0 {
            tracing::info!(
                "{ended} volumes held by containers that stopped meanwhile are free again"
            );
        }
        // Directories no record claims are leftovers of a crash during create or rm.
        if let Ok(dirs) = std::fs::read_dir(self.cfg.data_root.join("c")) {
            for dir in dirs.flatten() {
                let name = dir.file_name().to_string_lossy().to_string();
                if !known.contains(&name) {
                    let _ = shim_link::request(&dir.path(), json!({"op": "shutdown"})).await;
                    // A VM a removal froze, killed only now: its group below empties once its
                    // supervisor has seen it go.
                    wait_for_supervisor_exit(&dir.path()).await;
                    let _ = std::fs::remove_dir_all(dir.path());
                    tracing::info!("removed leftover container directory {name}");
                }
            }
        }
        // So are the VM groups no record claims (a VM killed with its node, whose record the
        // fleet removed meanwhile): empty by now, they go.
        if let Some(cgroups) = &self.cfg.cgroups {
            cgroups.remove_unclaimed(|id| known.contains(id.get(..12).unwrap_or(id)));
        }
        if let Err(e) = self.with_networks(|n| n.recover()).await {
            tracing::error!("rebuilding networks: {e}");
        }
        // With the networks back: `--rm` containers that ended go, as dockerd's do at its start.
        for c in ended_rm {
            if let Err(e) = self.remove_any(&c.tenant, &c.id, true, true).await {
                tracing::warn!(
                    "auto-removing {}, left ended by hyperd's previous run: {e}",
                    c.id
                );
            }
        }
        // Only now, with the networks back, may an exit lead to a restart by policy.
        for entry in running {
            // The monitor reads state.json if the shim is gone, so it covers both cases.
            self.spawn_monitor(entry.clone());
            self.spawn_health_checks(&entry);
        }
        for entry in restarting {
            tokio::spawn(
                self.clone()
                    .restart_after_backoff(entry, chrono::TimeDelta::zero()),
            );
        }
        Ok(())
    }

    // ---- stop, kill, restart, remove ----

    pub async fn stop(
        &self,
        tenant: &str,
        reference: &str,
        timeout: Option<i64>,
        signal: Option<&str>,
    ) -> Result<()> {
        let entry = self.entry(tenant, reference)?;
        unprotected(&entry.snapshot())?;
        let _op = entry.ops.lock().await;
        self.stop_locked(&entry, timeout, signal, false).await?;
        self.events
            .emit(tenant, Event::container(&entry.snapshot(), "stop", &[]));
        Ok(())
    }

    /// `keep_disk`: a start follows, so the guest syncs the disk even of a `--rm` container.
    /// Whether the disk was kept: false when such a container's process ended on its own just
    /// before the stop reached its supervisor, whose disk then went without the guest's sync.
    async fn stop_locked(
        &self,
        entry: &Entry,
        timeout: Option<i64>,
        signal: Option<&str>,
        keep_disk: bool,
    ) -> Result<bool> {
        // Counted before the state is read: an exit recorded after the read is counted after
        // this, and the wait below sees it.
        let mut lifecycle = entry.lifecycle.subscribe();
        let seen = lifecycle.borrow().exits;
        let c = entry.snapshot();
        if !c.is_running() {
            return Err(RuntimeError::NotModified(format!(
                "container {} is already stopped",
                c.name
            )));
        }
        if c.state.status == Status::Restarting {
            self.cancel_restart(entry)?;
            return Ok(true);
        }
        let signal = validate::signal(
            signal
                .or(c.config.stop_signal.as_deref())
                .unwrap_or("SIGTERM"),
        )?;
        let timeout = timeout.or(c.config.stop_timeout).unwrap_or(10).max(0);
        self.update(entry, |c| c.state.stopped_by_user = true)?;
        let dir = self.dir(&c.id);
        let stop = shim_link::request(
            &dir,
            json!({"op": "stop", "signal": signal, "timeout_secs": timeout, "keep_disk": keep_disk}),
        );
        // A supervisor already gone had decided alone: a disposable disk went with it. One
        // built before the reply said (a running container's, across an upgrade of hyperd)
        // kept it when asked, or, older still, did not know to: taken as kept.
        let disk_kept = match stop.await {
            Ok(reply) => Some(reply["disk_kept"].as_bool().unwrap_or(true)),
            Err(RuntimeError::ShimGone(_)) => None,
            Err(e) => return Err(e),
        };
        let exited = lifecycle.wait_for(|l| l.exits > seen);
        tokio::time::timeout(Duration::from_secs(30), exited)
            .await
            .map_err(|_| RuntimeError::Internal(format!("container {} did not stop", c.name)))?
            .map_err(internal)?;
        let disposable = c.host_config.auto_remove && c.mounts.is_empty();
        Ok(disk_kept.unwrap_or(!disposable))
    }

    pub async fn kill(&self, tenant: &str, reference: &str, signal: Option<&str>) -> Result<()> {
        let entry = self.entry(tenant, reference)?;
        let signal = validate::signal(signal.unwrap_or("SIGKILL"))?;
        let c = entry.snapshot();
        unprotected(&c)?;
        if !c.is_running() {
            return Err(RuntimeError::Conflict(format!(
                "Container {} is not running",
                c.id
            )));
        }
        if c.state.status == Status::Restarting {
            // Nothing runs: the kill ends the wait for the restart, as Docker's does.
            let _op = entry.ops.lock().await;
            if entry.snapshot().state.status == Status::Restarting {
                let c = self.cancel_restart(&entry)?;
                self.events.emit(
                    tenant,
                    Event::container(&c, "kill", &[("signal", signal.to_string())]),
                );
                return Ok(());
            }
        }
        if signal == libc::SIGKILL {
            self.update(&entry, |c| c.state.stopped_by_user = true)?;
        }
        let mut lifecycle = entry.lifecycle.subscribe();
        let seen = lifecycle.borrow().exits;
        let resume = Self::signal_resumes(&c, signal);
        shim_link::request(
            &self.dir(&c.id),
            json!({"op": "signal", "signal": signal, "resume": resume}),
        )
        .await?;
        if resume {
            self.update(&entry, |c| c.state.paused = false)?;
        }
        self.events.emit(
            tenant,
            Event::container(&c, "kill", &[("signal", signal.to_string())]),
        );
        // Docker's kill with SIGKILL returns once the container has stopped, so an `inspect` or
        // `rm` right after it finds it exited; other signals return at once.
        if signal == libc::SIGKILL {
            let exited = lifecycle.wait_for(|l| l.exits > seen);
            tokio::time::timeout(Duration::from_secs(30), exited)
                .await
                .map_err(|_| RuntimeError::Internal(format!("container {} did not stop", c.name)))?
                .map_err(internal)?;
        }
        Ok(())
    }

    pub async fn restart(
        self: &Arc<Self>,
        tenant: &str,
        reference: &str,
        timeout: Option<i64>,
    ) -> Result<Container> {
        let entry = self.entry(tenant, reference)?;
        unprotected(&entry.snapshot())?;
        // In a task of its own: a client that goes away must not leave the container stopped
        // halfway, marked as restarting, or (`--rm`) neither started again nor removed.
        let rt = self.clone();
        tokio::spawn(async move {
            let restarted = rt.restart_entry(&entry, timeout).await;
            // A `--rm` container stopped and not started again goes, as after a failed start.
            let c = entry.snapshot();
            let gone = entry.lifecycle.borrow().removed;
            if restarted.is_err() && c.host_config.auto_remove && !c.is_running() && !gone {
                if let Err(e) = rt.remove_any(&c.tenant, &c.id, true, true).await {
                    tracing::warn!("auto-removing {} after its failed restart: {e}", c.id);
                }
            }
            restarted
        })
        .await
        .map_err(internal)?
    }

    async fn restart_entry(
        self: &Arc<Self>,
        entry: &Arc<Entry>,
        timeout: Option<i64>,
    ) -> Result<Container> {
        let _op = entry.ops.lock().await;
        let c = entry.snapshot();
        let gone = || RuntimeError::NotFound(format!("No such container: {}", c.name));
        // A `--rm` container that ended on its own is on its way out (its disk may have gone
        // unsynced with its VM): gone, as Docker's would be.
        let auto_remove = c.host_config.auto_remove;
        if entry.lifecycle.borrow().removed || (auto_remove && c.state.status == Status::Exited) {
            return Err(gone());
        }
        // Its memory stays held through the stop (a node with no room for it refuses while it
        // still runs); a stopped one needs room again, as for a start.
        let _room = match c.is_running() || !crate::placement::books_memory(&c) {
            true => Some(self.hold_room(&c.size, Some(&c.id))?),
            false => None,
        };
        entry.lifecycle.send_modify(|l| l.restarting = true);
        let stopped = self.stop_locked(entry, timeout, None, true).await;
        entry.lifecycle.send_modify(|l| l.restarting = false);
        let kept = match stopped {
            Ok(kept) => kept,
            // Not running when the stop came: it ended on its own meanwhile unless it never ran.
            Err(RuntimeError::NotModified(_)) => entry.snapshot().state.status != Status::Exited,
            Err(e) => return Err(e),
        };
        if auto_remove && !kept {
            return Err(gone());
        }
        self.reset_restart_policy(entry)?;
        self.start_locked(entry).await
    }

    /// `rm` as the user asks it: refused while the container is protected.
    /// `volumes`: also its anonymous volumes (`rm -v`).
    pub async fn remove(
        &self,
        tenant: &str,
        reference: &str,
        force: bool,
        volumes: bool,
    ) -> Result<()> {
        unprotected(&self.get(tenant, reference)?)?;
        self.remove_any(tenant, reference, force, volumes).await
    }

    /// Removal after the container is done with (`--rm`, a failed start): protection guards
    /// against users, not against the container's own end.
    async fn remove_any(
        &self,
        tenant: &str,
        reference: &str,
        force: bool,
        volumes: bool,
    ) -> Result<()> {
        let entry = self.entry(tenant, reference)?;
        let _removing = self.standby.as_ref().map(|pool| pool.removing());
        let _removal = self.teardowns.removal();
        let _op = entry.ops.lock().await;
        let _disk = archive::disk_for_start(&entry).await?;
        let c = entry.snapshot();
        if entry.lifecycle.borrow().removed {
            return Ok(());
        }
        if c.is_running() && !force {
            return Err(RuntimeError::Conflict(format!(
                "You cannot remove a {} container {}. Stop the container before attempting removal or force remove",
                c.state.status.as_str(),
                c.id
            )));
        }
        let mut frozen = None;
        if c.state.status == Status::Restarting {
            self.cancel_restart(&entry)?;
        } else if c.is_running() {
            let mut lifecycle = entry.lifecycle.subscribe();
            let seen = lifecycle.borrow().exits;
            let _ = self.update(&entry, |c| c.state.stopped_by_user = true);
            let dir = self.dir(&c.id);
            // Without volumes (which another container may want once QEMU has closed them)
            // nothing needs the VM's end: it is frozen now and killed after the answer.
            let unhurried = c.mounts.is_empty();
            frozen = qemu_of(&dir).filter(|_| unhurried);
            if let Some(qemu) = &frozen {
                // Before the freeze: the monitor must not take the VM's end for a crash.
                self.end_unrecorded(&entry, &c);
                qemu.freeze();
                self.background(&c, &dir, qemu.pid());
            } else {
                let _ = shim_link::request(&dir, json!({"op": "shutdown"})).await;
                let _ = tokio::time::timeout(
                    Duration::from_secs(30),
                    lifecycle.wait_for(|l| l.exits > seen),
                )
                .await;
            }
        }
        self.release_records(&c)?;
        let gone = c.clone();
        let released = self
            .with_networks(move |n| {
                n.release_endpoint(&gone)?;
                n.sync_tenant(&gone.tenant, &[])
            })
            .await;
        if let Err(e) = released {
            tracing::error!("releasing the network of {}: {e}", c.id);
        }
        if let Err(e) = self.meter.close_segment(tenant, &c.id, Utc::now()) {
            tracing::error!("metering the removal of {}: {e}", c.id);
        }
        let teardown = teardown::teardown(
            self.dir(&c.id),
            self.cfg.cgroups.clone(),
            c.tenant.clone(),
            c.id.clone(),
        );
        match frozen {
            Some(qemu) => {
                let kill = self.teardowns.kill_when_quiet(qemu);
                self.teardowns.spawn(async move {
                    kill.await;
                    teardown.await;
                });
            }
            None => teardown.await,
        }
        self.entries.lock().expect("poisoned").remove(&c.id);
        self.execs
            .lock()
            .expect("poisoned")
            .retain(|_, e| e.container_id != c.id);
        entry.lifecycle.send_modify(|l| l.removed = true);
        self.release_volumes(&c);
        self.remove_container_volumes(&c, volumes).await;
        self.events
            .emit(tenant, Event::container(&c, "destroy", &[]));
        Ok(())
    }

    pub async fn rename(&self, tenant: &str, reference: &str, new_name: &str) -> Result<()> {
        let entry = self.entry(tenant, reference)?;
        let new_name = validate::container_name(new_name)?;
        let c = entry.snapshot();
        if c.name == new_name {
            return Err(RuntimeError::Invalid(
                "Renaming a container with the same name as its current name".to_string(),
            ));
        }
        let mut renamed = c.clone();
        renamed.name = new_name.clone();
        let done = self.store.txn(
            Txn::new()
                .when(Compare::Absent(name_key(tenant, &new_name)))
                .then(Op::Put(
                    name_key(tenant, &new_name),
                    c.id.as_bytes().to_vec(),
                ))
                .then(Op::Delete(name_key(tenant, &c.name)))
                .then(Op::Put(
                    container_key(tenant, &c.id),
                    serde_json::to_vec(&renamed).expect("json"),
                )),
        )?;
        if !done.succeeded {
            return Err(RuntimeError::Conflict(format!(
                "Error when allocating new name: Conflict. The container name \"/{new_name}\" is already in use"
            )));
        }
        entry.record.lock().expect("poisoned").name = new_name;
        let renamed = entry.snapshot();
        self.events.emit(
            tenant,
            Event::container(&renamed, "rename", &[("oldName", format!("/{}", c.name))]),
        );
        Ok(())
    }

    /// What the operator lets one container's logs take.
    fn log_limits(&self) -> crate::log_options::Limits {
        crate::log_options::Limits {
            max_bytes: self.cfg.log_max_bytes,
            max_files: self.cfg.log_max_files,
        }
    }

    /// Docker's legacy link removal (`DELETE /containers/PARENT/ALIAS?link=1`): `parent` no
    /// longer links anything under `alias`. Its /etc/hosts, written at start, keeps the line
    /// until the next start, as with dockerd; the network's DNS drops the alias at once.
    pub async fn remove_link(&self, tenant: &str, parent: &str, alias: &str) -> Result<()> {
        let entry = self.entry(tenant, parent)?;
        let c = entry.snapshot();
        let is_alias = |l: &String| crate::network::parse_link(l).1 == alias;
        if !c.host_config.links.iter().any(is_alias) {
            return Err(RuntimeError::NotFound(format!(
                "container {} has no link named {alias}",
                c.name
            )));
        }
        self.update(&entry, |c| c.host_config.links.retain(|l| !is_alias(l)))?;
        let tenant = tenant.to_string();
        self.with_networks(move |n| n.sync_tenant(&tenant, &[]))
            .await
    }

    /// `docker update`: the restart policy, and Hyper's protection label.
    pub fn update_config(
        &self,
        tenant: &str,
        reference: &str,
        restart: Option<crate::model::RestartPolicy>,
        protection: Option<bool>,
    ) -> Result<()> {
        let entry = self.entry(tenant, reference)?;
        if let Some(on) = protection {
            self.update(&entry, |c| {
                c.config
                    .labels
                    .insert(PROTECTION_LABEL.into(), on.to_string());
            })?;
        }
        if let Some(policy) = restart {
            let mut hc = entry.snapshot().host_config;
            hc.restart_policy = policy;
            if hc.auto_remove && !matches!(hc.restart_policy.name.as_str(), "" | "no") {
                return Err(RuntimeError::Invalid("Restart policy cannot be updated because AutoRemove is enabled for the container".into()));
            }
            restart::check_policy(&hc)?;
            self.update(&entry, |c| c.host_config = hc)?;
        }
        Ok(())
    }

    /// Allocates floating IPs and starts billing each (a started calendar month costs whole).
    pub async fn fip_allocate(&self, tenant: &str, count: u64) -> Result<Vec<std::net::Ipv4Addr>> {
        let t = tenant.to_string();
        let ips = self
            .with_networks(move |n| n.fip_allocate(&t, count))
            .await?;
        for ip in &ips {
            let seg = Segment::fip(&ip.to_string(), Utc::now());
            if let Err(e) = self.meter.open_segment(tenant, &seg) {
                tracing::error!("metering floating IP {ip}: {e}");
            }
        }
        Ok(ips)
    }

    /// Releases a floating IP (detaching it first) and stops billing it.
    pub async fn fip_release(&self, tenant: &str, ip: &str) -> Result<()> {
        let (t, addr) = (tenant.to_string(), ip.to_string());
        self.with_networks(move |n| n.fip_release(&t, &addr))
            .await?;
        if let Err(e) = self.meter.close_segment(tenant, ip, Utc::now()) {
            tracing::error!("metering the release of floating IP {ip}: {e}");
        }
        Ok(())
    }

    /// `hyper update --sg-add/--sg-rm`: changes the container's groups and applies them at
    /// once, to its open connections too.
    pub async fn update_security_groups(
        &self,
        tenant: &str,
        reference: &str,
        add: Vec<String>,
        remove: Vec<String>,
    ) -> Result<()> {
        let entry = self.entry(tenant, reference)?;
        let before = entry.snapshot();
        if before.endpoint.is_none() && !add.is_empty() {
            return Err(RuntimeError::Invalid(format!(
                "container {} has no network (--network none)",
                before.name
            )));
        }
        for g in &add {
            crate::network::sg::get(self.store.as_ref(), tenant, g)?;
        }
        for g in &remove {
            if !crate::network::sg::groups_of(&before).contains(g) {
                return Err(RuntimeError::Invalid(format!(
                    "container {} is not in security group {g}",
                    before.name
                )));
            }
        }
        let c = self.update(&entry, |c| {
            for g in &remove {
                c.config
                    .labels
                    .remove(&format!("{}{g}", crate::network::sg::LABEL_PREFIX));
            }
            for g in &add {
                c.config.labels.insert(
                    format!("{}{g}", crate::network::sg::LABEL_PREFIX),
                    "yes".into(),
                );
            }
        })?;
        let flush: Vec<_> = c.endpoint.iter().map(|e| e.ip).collect();
        let tenant = tenant.to_string();
        self.with_networks(move |n| n.sync_tenant(&tenant, &flush))
            .await
    }

    /// Registers a waiter now and returns the future that completes when `condition` holds,
    /// so a caller can answer before the container is even started.
    pub fn wait(
        &self,
        tenant: &str,
        reference: &str,
        condition: WaitCondition,
    ) -> Result<impl std::future::Future<Output = Container> + Send + 'static> {
        let entry = self.entry(tenant, reference)?;
        let mut lifecycle = entry.lifecycle.subscribe();
        let seen = lifecycle.borrow().exits;
        let running = entry.snapshot().is_running();
        Ok(async move {
            let _ = lifecycle
                .wait_for(|l| match condition {
                    WaitCondition::NotRunning => !running || l.exits > seen || l.removed,
                    WaitCondition::NextExit => l.exits > seen || l.removed,
                    WaitCondition::Removed => l.removed,
                })
                .await;
            entry.snapshot()
        })
    }

    // ---- streams ----

    /// Connects to the main process's stdio. The request is placed at once (before the VM
    /// exists it waits for `start`), so a caller may answer its client before awaiting it.
    pub fn attach(
        self: &Arc<Self>,
        tenant: &str,
        reference: &str,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    ) -> Result<impl std::future::Future<Output = Result<BufReader<UnixStream>>> + Send + 'static>
    {
        let entry = self.entry(tenant, reference)?;
        let c = entry.snapshot();
        Self::not_paused(&c, "attach")?;
        let request = json!({"op": "attach", "stdin": stdin, "stdout": stdout, "stderr": stderr});
        let (tx, rx) = oneshot::channel();
        let direct = {
            let mut gate = entry.attach_gate.lock().expect("poisoned");
            if gate.vm_up {
                Some((request, tx))
            } else {
                gate.pending.push((request, tx));
                None
            }
        };
        let dir = self.dir(&c.id);
        Ok(async move {
            if let Some((request, tx)) = direct {
                let _ = tx.send(shim_link::call(&dir, request).await.map(|(_, s)| s));
            }
            rx.await
                .map_err(|_| RuntimeError::Conflict(format!("container {} was removed", c.name)))?
        })
    }

    pub fn exec_create(&self, tenant: &str, reference: &str, config: ExecConfig) -> Result<String> {
        let c = self.get(tenant, reference)?;
        require_running(&c)?;
        Self::not_paused(&c, "exec")?;
        if config.cmd.is_empty() {
            return Err(RuntimeError::Invalid("No exec command specified".into()));
        }
        validate::process(
            &config.cmd,
            &config.env,
            &config.working_dir,
            &config.user,
            &[],
        )?;
        let id = random_id();
        let info = ExecInfo {
            id: id.clone(),
            container_id: c.id.clone(),
            tenant: tenant.into(),
            config,
            running: false,
            exit_code: None,
            pid: 0,
        };
        self.emit_exec_event(&c, &info, "exec_create");
        self.execs
            .lock()
            .expect("poisoned")
            .insert(id.clone(), info);
        Ok(id)
    }

    pub fn exec_inspect(&self, tenant: &str, id: &str) -> Result<ExecInfo> {
        self.execs
            .lock()
            .expect("poisoned")
            .get(id)
            .filter(|e| e.tenant == tenant)
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound(format!("No such exec instance: {id}")))
    }

    /// Starts an exec session; the stream carries its output frames, the last of which (stream
    /// byte 255) holds the exit code, to be passed to `exec_finished`. A terminal is the exec
    /// create's choice, as Docker's: a start only says how the client streams.
    pub async fn exec_start(&self, tenant: &str, id: &str) -> Result<BufReader<UnixStream>> {
        let info = self.exec_inspect(tenant, id)?;
        if info.running || info.exit_code.is_some() {
            return Err(RuntimeError::Conflict(format!(
                "exec {id} has already been started"
            )));
        }
        let c = self.get(tenant, &info.container_id)?;
        require_running(&c)?;
        Self::not_paused(&c, "exec")?;
        let cfg = &info.config;
        let mut env = c.config.env.clone();
        merge_env(&mut env, &cfg.env);
        let tty = cfg.tty;
        let request = json!({
            "op": "exec", "exec_id": id, "args": cfg.cmd, "env": env,
            "cwd": if cfg.working_dir.is_empty() { effective_workdir(&c) } else { cfg.working_dir.clone() },
            "user": if cfg.user.is_empty() { c.config.user.clone() } else { cfg.user.clone() },
            "tty": tty, "stdin": cfg.attach_stdin, "tty_width": 0, "tty_height": 0,
        });
        let (reply, stream) = shim_link::call(&self.dir(&c.id), request).await?;
        if let Some(e) = self.execs.lock().expect("poisoned").get_mut(id) {
            e.running = true;
            e.pid = reply["pid"].as_i64().unwrap_or(0);
        }
        self.emit_exec_event(&c, &info, "exec_start");
        Ok(stream)
    }

    pub fn exec_finished(&self, id: &str, exit_code: i64) {
        let info = {
            let mut execs = self.execs.lock().expect("poisoned");
            let Some(e) = execs.get_mut(id) else { return };
            e.running = false;
            e.exit_code = Some(exit_code);
            e.clone()
        };
        self.emit_exec_die(&info, exit_code);
    }

    pub async fn resize(
        &self,
        tenant: &str,
        reference: &str,
        exec_id: Option<&str>,
        width: u16,
        height: u16,
    ) -> Result<()> {
        let c = match exec_id {
            Some(id) => {
                let info = self.exec_inspect(tenant, id)?;
                self.get(tenant, &info.container_id)?
            }
            None => self.get(tenant, reference)?,
        };
        require_running(&c)?;
        shim_link::request(
            &self.dir(&c.id),
            json!({"op": "resize", "width": width, "height": height, "exec_id": exec_id}),
        )
        .await?;
        Ok(())
    }

    /// Ask the running VM: `top` and `stats` go to the guest agent.
    pub async fn query(&self, tenant: &str, reference: &str, request: Value) -> Result<Value> {
        let c = self.get(tenant, reference)?;
        require_running(&c)?;
        shim_link::request(&self.dir(&c.id), request).await
    }
}

/// The pid the supervisor of `dir` wrote.
fn supervisor_pid(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join("shim.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

async fn wait_for_supervisor_exit(dir: &Path) {
    let Some(pid) = supervisor_pid(dir).map(|p| p as i32) else {
        kill_orphaned_vm(dir);
        return;
    };
    let alive = || process_running(pid);
    // What the supervisor takes at most by itself (the guest's sync, QEMU's end), and a margin.
    let limit = shim::daemon::END_LIMIT + Duration::from_secs(2);
    if alive() {
        let exited = match process_exit(pid) {
            Some(exit) => tokio::time::timeout(limit, exit).await.is_ok(),
            None => false,
        };
        // Without a pidfd (old kernels, or the pid is gone already): poll.
        let deadline = tokio::time::Instant::now() + limit;
        while !exited && alive() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    if alive() && runs_in(pid, dir) {
        tracing::warn!("the VM supervisor {pid} did not exit; killing it and its VM");
        // SAFETY: plain kill(2) of a process we checked is this container's supervisor.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    kill_orphaned_vm(dir);
}

/// `hyper-shim --dir DIR`: returns once the VM of `dir`'s spec is up under its supervisor.
/// The supervisor (and so its QEMU) first enters the cgroups whose open `cgroup.procs` files
/// are in `cgroup`.
pub(crate) async fn launch_supervisor(
    shim_binary: &Path,
    dir: &Path,
    cgroup: &[std::fs::File],
) -> Result<()> {
    use std::os::fd::AsRawFd;
    // The shim daemonizes: its stderr goes to a file so no pipe outlives the launcher.
    let err_path = dir.join("launch.err");
    let err_file =
        std::fs::File::create(&err_path).map_err(RuntimeError::io("create launch.err"))?;
    let mut command = tokio::process::Command::new(shim_binary);
    command
        .arg("--dir")
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(err_file);
    let procs: Vec<i32> = cgroup.iter().map(AsRawFd::as_raw_fd).collect();
    // SAFETY: between fork and exec the child only calls write(2), which is async-signal-safe,
    // on descriptors the parent keeps open until the child has been spawned.
    unsafe {
        command.pre_exec(move || {
            for &fd in &procs {
                // "0": the writing process itself.
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let status = command
        .status()
        .await
        .map_err(RuntimeError::io(format!("run {}", shim_binary.display())))?;
    let message = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(&err_path);
    if status.success() {
        Ok(())
    } else {
        Err(RuntimeError::Shim(format!(
            "the VM did not start: {}",
            message.trim()
        )))
    }
}

/// Resolves when process `pid` exits (a pidfd turns readable then, zombie or not), or `None`
/// when no pidfd can be had for it.
fn process_exit(pid: i32) -> Option<impl std::future::Future<Output = ()>> {
    let fd = Pidfd::open(pid)?.into_fd();
    // SAFETY: the AsyncFd owns the OwnedFd, which stays open and the same until it is dropped.
    let fd = unsafe { tokio::io::unix::AsyncFd::register(fd) }.ok()?;
    Some(async move {
        let _ = fd.readable().await;
    })
}

/// An empty qcow2 overlay at `overlay` over the raw image disk `disk`, of the root slot's size.
async fn create_overlay(disk: &Path, overlay: &Path) -> Result<()> {
    let out = tokio::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(disk)
        .arg(overlay)
        .arg(vm::ROOT_DISK_BYTES.to_string())
        .output()
        .await
        .map_err(RuntimeError::io("run qemu-img (install qemu-utils)"))?;
    if !out.status.success() {
        return Err(RuntimeError::Internal(format!(
            "qemu-img create failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Writes `data` to `path` readable by root alone: a spec may hold a volume's Ceph key, and
/// the directory is the chroot of a QEMU that runs unprivileged.
pub(crate) fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // An older spec may have been made with wider permissions.
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    f.write_all(data)
}

/// The VM part of a container's supervisor spec for `size` (no disk, process or network).
fn vm_spec(cfg: &RuntimeConfig, size: sizes::Size) -> ShimSpec {
    ShimSpec {
        id: String::new(),
        qemu: cfg.qemu.clone(),
        accel: cfg.accel.clone(),
        kernel: cfg.kernel.clone(),
        initrd: cfg.initrd.clone(),
        kernel_cmdline_extra: cfg.kernel_cmdline_extra.clone(),
        vcpus: size.vcpus,
        memory_mib: size.vm_memory_mib(),
        root_disk: PathBuf::new(),
        run_as: cfg.run_as.clone(),
        boot_timeout_secs: cfg.boot_timeout_secs,
        log_max_bytes: cfg.log_max_bytes,
        log_max_files: cfg.log_max_files,
        hostname: String::new(),
        process: ProcessSpec::default(),
        template_dir: cfg.template_dir.clone(),
        network: None,
        standby: false,
        prepared_for: None,
        helper: false,
        disposable: false,
        volumes: Vec::new(),
        tmpfs: Vec::new(),
    }
}

/// How many names a create without one draws before it gives up: one of the 25,600 is taken by
/// another container of the tenant now and then (a burst of 100 unnamed creates meets one about
/// one time in six), and Docker draws again too.
const NAME_DRAWS: usize = 8;

/// Runs `claim` with the name `first`; a name that was `drawn` (the user gave none) and is
/// taken makes way for another `draw`, up to [`NAME_DRAWS`] in all. A name the user gave stays
/// theirs: its conflict is the answer.
fn claim_some_name(
    first: String,
    drawn: bool,
    mut draw: impl FnMut() -> String,
    mut claim: impl FnMut(&str) -> Result<()>,
) -> Result<()> {
    let (mut name, mut draws) = (first, 1);
    loop {
        match claim(&name) {
            Err(RuntimeError::Conflict(_)) if drawn && draws < NAME_DRAWS => {
                name = draw();
                draws += 1;
            }
            done => return done,
        }
    }
}

/// Whether `pid` exists and has not exited. A daemonized supervisor is re-parented to init, and
/// an init that reaps lazily leaves it a zombie for a second or more after it is done: a zombie
/// counts as exited (it holds no VM, no disk and no socket).
pub(crate) fn process_running(pid: i32) -> bool {
    process_state(pid).is_some_and(|state| !matches!(state, 'Z' | 'X'))
}

/// The state letter of `pid` in `/proc/PID/stat` (`R`, `S`, `T`, `Z` ...), if it exists.
fn process_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state follows the command name, which is in parentheses and may contain any byte.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
}

/// QEMU outlives a supervisor killed with SIGKILL: its parent-death signal is cleared when it
/// drops to the unprivileged user. Find it by the pid the supervisor recorded, and kill it.
fn kill_orphaned_vm(dir: &Path) {
    let Some(pid) = shim_link::read_state(dir).and_then(|s| s.qemu_pid) else {
        return;
    };
    let pid = pid as i32;
    if runs_in(pid, dir) {
        tracing::warn!("killing the VM {pid} its supervisor left behind");
        // SAFETY: plain kill(2) of a process whose command line names this container's directory.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// The live QEMU of the VM in `dir`, by the pid its supervisor recorded there.
fn qemu_of(dir: &Path) -> Option<Pidfd> {
    let pid = shim_link::read_state(dir)?.qemu_pid?;
    Pidfd::open(pid as i32).filter(|qemu| runs_in(qemu.pid(), dir))
}

/// Kills the QEMU of `dir` if it is frozen (stopped by SIGSTOP, which only a removal sends).
fn kill_if_frozen(dir: &Path) {
    let Some(qemu) = qemu_of(dir) else {
        return;
    };
    if process_state(qemu.pid()) == Some('T') {
        tracing::warn!(
            "killing the VM {} a removal cut short by hyperd's end left frozen",
            qemu.pid()
        );
        qemu.kill();
    }
}

/// The supervisor and QEMU of `dir`, in that order, by the pids they recorded there, if they
/// still run in it: two stats where [`processes_in`] reads every process of the host.
pub(crate) fn vm_processes(dir: &Path) -> Vec<i32> {
    let supervisor = std::fs::read_to_string(dir.join("shim.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok());
    let qemu = shim_link::read_state(dir)
        .and_then(|s| s.qemu_pid)
        .and_then(|p| i32::try_from(p).ok());
    [supervisor, qemu]
        .into_iter()
        .flatten()
        .filter(|&pid| process_running(pid) && runs_in(pid, dir))
        .collect()
}

/// Every live process of `dir` (see [`runs_in`]).
pub(crate) fn processes_in(dir: &Path) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&pid| process_running(pid) && runs_in(pid, dir))
        .collect()
}

/// SIGKILL every live process of `dir` (see [`runs_in`]); how many were found.
pub(crate) fn kill_processes_in(dir: &Path) -> usize {
    let pids = processes_in(dir);
    for &pid in &pids {
        // SAFETY: plain kill(2) of a process whose command line, root or cwd is `dir`.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    pids.len()
}

/// Whether `pid` is a live process of the container in `dir` (guards against pid reuse): its
/// command line names `dir`, or its root (QEMU's chroot) or working directory (the
/// supervisor's) is `dir`. A VM that started as a standby names its standby directory on its
/// command line, but its root and cwd moved with that directory to `dir`.
fn runs_in(pid: i32, dir: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let needle = dir.as_os_str().as_encoded_bytes();
    if cmdline.is_empty() {
        return false;
    }
    cmdline.windows(needle.len()).any(|w| w == needle)
        || ["root", "cwd"]
            .iter()
            .any(|link| std::fs::read_link(format!("/proc/{pid}/{link}")).is_ok_and(|p| p == dir))
}

/// Hyper's termination protection: while this label is `true`, stop, kill, restart and rm are
/// refused.
pub const PROTECTION_LABEL: &str = "sh_hyper_container_protection";

/// Whether termination protection is on for `c`.
pub(crate) fn is_protected(c: &Container) -> bool {
    c.config.labels.get(PROTECTION_LABEL).map(String::as_str) == Some("true")
}

fn unprotected(c: &Container) -> Result<()> {
    match c.config.labels.get(PROTECTION_LABEL).map(String::as_str) {
        Some("true") => Err(RuntimeError::Conflict(format!(
            "container {} is protected from termination: lift it first with `hyper update --protection=false {}`",
            c.name, c.name
        ))),
        _ => Ok(()),
    }
}

/// What talks to the VM (exec, resize, top, stats) needs it up, with Docker's 409s otherwise.
fn require_running(c: &Container) -> Result<()> {
    match c.state.status {
        Status::Running => Ok(()),
        Status::Restarting => Err(RuntimeError::Conflict(format!(
            "Container {} is restarting, wait until the container is running",
            c.id
        ))),
        _ => Err(RuntimeError::Conflict(format!(
            "Container {} is not running",
            c.id
        ))),
    }
}

/// Docker's rule: the request's entrypoint replaces the image's and then drops the image's cmd.
fn command(config: &ContainerConfig, image: &Value) -> Result<(String, Vec<String>)> {
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (entrypoint, cmd) = if !config.entrypoint.is_empty() {
        (config.entrypoint.clone(), config.cmd.clone())
    } else if !config.cmd.is_empty() {
        (list(&image["Entrypoint"]), config.cmd.clone())
    } else {
        (list(&image["Entrypoint"]), list(&image["Cmd"]))
    };
    let mut all = entrypoint.into_iter().chain(cmd);
    let path = all
        .next()
        .ok_or_else(|| RuntimeError::Invalid("No command specified".into()))?;
    Ok((path, all.collect()))
}

/// Fills what the request left empty from the image's config, as Docker does at create.
fn merge_image_defaults(config: &mut ContainerConfig, image: &Value) {
    let text = |key: &str| image[key].as_str().unwrap_or_default().to_string();
    // Docker's merge at create: the request's entries, then the image's whose name it does not
    // give. An entry without `=` stays as asked; it unsets the variable when the process starts.
    let name = |e: &str| e.split('=').next().unwrap_or_default().to_string();
    let asked: std::collections::HashSet<String> = config.env.iter().map(|e| name(e)).collect();
    for e in image["Env"].as_array().into_iter().flatten() {
        if let Some(e) = e.as_str().filter(|e| !asked.contains(&name(e))) {
            config.env.push(e.to_string());
        }
    }
    if config.working_dir.is_empty() {
        config.working_dir = text("WorkingDir");
    }
    if config.user.is_empty() {
        config.user = text("User");
    }
    config.healthcheck = health::merge(config.healthcheck.take(), image);
    if config.stop_signal.is_none() && !text("StopSignal").is_empty() {
        config.stop_signal = Some(text("StopSignal"));
    }
    if let Some(labels) = image["Labels"].as_object() {
        for (k, v) in labels {
            config
                .labels
                .entry(k.clone())
                .or_insert_with(|| v.as_str().unwrap_or_default().to_string());
        }
    }
}

/// Later entries override earlier ones with the same key; `KEY` without `=` removes it.
fn merge_env(base: &mut Vec<String>, overrides: &[String]) {
    for var in overrides {
        let key = var.split('=').next().unwrap_or_default();
        base.retain(|e| e.split('=').next() != Some(key));
        if var.contains('=') {
            base.push(var.clone());
        }
    }
}

fn effective_workdir(c: &Container) -> String {
    if c.config.working_dir.is_empty() {
        "/".into()
    } else {
        c.config.working_dir.clone()
    }
}

fn process_spec(c: &Container) -> ProcessSpec {
    let mut env = vec![
        format!("PATH={}", agent_proto::DEFAULT_PATH),
        format!("HOSTNAME={}", c.config.hostname),
    ];
    if c.config.tty {
        env.push("TERM=xterm".into());
    }
    merge_env(&mut env, &c.config.env);
    ProcessSpec {
        args: std::iter::once(c.path.clone())
            .chain(c.args.iter().cloned())
            .collect(),
        env,
        cwd: effective_workdir(c),
        user: c.config.user.clone(),
        tty: c.config.tty,
        open_stdin: c.config.open_stdin,
        stdin_once: c.config.stdin_once,
        tty_width: 0,
        tty_height: 0,
        group_add: c.host_config.group_add.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_exit_of_a_process_is_seen_without_polling() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .unwrap();
        let exit = process_exit(child.id() as i32).expect("a pidfd");
        tokio::time::timeout(Duration::from_secs(10), exit)
            .await
            .expect("the exit was not seen");
        assert!(!process_running(child.id() as i32));
        child.wait().unwrap();
    }

    #[test]
    fn a_zombie_is_not_running() {
        let mut child = std::process::Command::new("sleep")
            .arg("0")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        // Not reaped yet: once it has exited it stays a zombie until `wait`.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while process_running(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            !process_running(pid),
            "an exited, unreaped child counts as exited"
        );
        assert!(
            std::fs::metadata(format!("/proc/{pid}")).is_ok(),
            "it is still a zombie"
        );
        child.wait().unwrap();
        assert!(process_running(std::process::id() as i32));
        assert!(!process_running(i32::MAX));
    }

    #[test]
    fn command_merging_follows_docker() {
        let image = json!({"Entrypoint": ["/entry"], "Cmd": ["default"]});
        let cfg = |ep: &[&str], cmd: &[&str]| ContainerConfig {
            entrypoint: ep.iter().map(|s| s.to_string()).collect(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let cases = [
            (cfg(&[], &[]), ("/entry", vec!["default"])),
            (cfg(&[], &["x"]), ("/entry", vec!["x"])),
            (cfg(&["sh"], &[]), ("sh", vec![])),
            (cfg(&["sh"], &["-c", "true"]), ("sh", vec!["-c", "true"])),
        ];
        for (i, (config, (path, args))) in cases.iter().enumerate() {
            let (p, a) = command(config, &image).unwrap();
            assert_eq!(
                (p.as_str(), a),
                (
                    *path,
                    args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
                ),
                "test[{i}]"
            );
        }
        assert!(command(&cfg(&[], &[]), &json!({})).is_err());
    }

    #[test]
    fn a_drawn_name_that_is_taken_is_drawn_again() {
        let taken = |name: &str| match name.starts_with("taken") {
            true => Err(RuntimeError::Conflict(format!("{name} is in use"))),
            false => Ok(()),
        };
        let draws = |names: &'static [&'static str]| {
            let mut names = names.iter();
            move || names.next().expect("a draw too many").to_string()
        };
        let mut claimed = Vec::new();
        let mut claim = |name: &str| {
            claimed.push(name.to_string());
            taken(name)
        };
        claim_some_name(
            "taken0".into(),
            true,
            draws(&["taken1", "free"]),
            &mut claim,
        )
        .unwrap();
        assert_eq!(claimed, ["taken0", "taken1", "free"]);
        // A name the user gave is not replaced.
        let given = claim_some_name("taken0".into(), false, draws(&[]), taken);
        assert!(matches!(given, Err(RuntimeError::Conflict(_))), "{given:?}");
        // Nor drawn forever.
        const ALL_TAKEN: [&str; NAME_DRAWS] = ["taken"; NAME_DRAWS];
        let drawn = claim_some_name("taken".into(), true, draws(&ALL_TAKEN), taken);
        assert!(matches!(drawn, Err(RuntimeError::Conflict(_))), "{drawn:?}");
    }

    #[test]
    fn env_overrides_by_key() {
        let mut env = vec!["PATH=/bin".to_string(), "A=1".to_string()];
        merge_env(&mut env, &["A=2".into(), "B=3".into(), "PATH".into()]);
        assert_eq!(env, ["A=2", "B=3"]);
    }
}
