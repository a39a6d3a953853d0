//! Standby VMs (issue 7): a few VMs of the default size restored from the template ahead of
//! time, each under its own supervisor in `DATA/standby/<n>/`, so that a container's start is a
//! claim (the supervisor puts the container's disk and tap behind the VM's slots and takes over
//! its directory, see `shim::standby`) instead of a QEMU spawn and a restore. A standby has run
//! nothing but its agent and belongs to no tenant; each is claimed once.
//!
//! The pool keeps at least its floor (`--standby-vms`) and grows, up to its ceiling, to the
//! largest burst of starts seen lately ([`demand`]); once that burst is forgotten, the surplus
//! is stopped. It refills in the background once no start or removal is in flight (on a small
//! host a refill competes with the start it would speed up). Ready standbys outlive hyperd, as
//! containers do: the next hyperd on the data root adopts those that fit its pool exactly (the
//! same spec, a supervisor running the same binary) and stops the others, so that its first
//! starts are claims instead of restores competing with the pool's fill.
//!
//! Some standbys are prepared for one tenant's containers of one image (`shim::PrepareSpec`):
//! up to that pair's largest recent burst of first starts ([`demand::Wanted`]), each with
//! its own copy of the image's empty overlay mounted read-only and the program read ahead. A
//! container of that tenant and image whose disk is still that empty overlay (a first start,
//! nothing copied in) claims one and skips the mount and the reads; any other start takes a
//! generic standby. A prepared standby never goes to another tenant, nor to another image.

mod demand;

pub use demand::DEFAULT_HOLD;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use shim::Spec as ShimSpec;

use crate::shim_link;
use demand::{Demand, Key, Wanted};

pub struct StandbyPool {
    dir: PathBuf,
    shim_binary: PathBuf,
    /// What every standby boots with (the default size's spec, `standby` set).
    spec: ShimSpec,
    /// Standbys kept however quiet the node is.
    floor: usize,
    /// The most the pool grows to for bursts.
    ceiling: usize,
    /// The most memory the ready standbys may take (see [`Sizing::memory_max`]).
    memory_max: Option<u64>,
    /// The host's memory kept available, in bytes ([`Sizing::host_reserve`]).
    host_reserve: u64,
    /// Starts that fit the pool, for its size.
    demand: Mutex<Demand>,
    /// Pristine starts by (tenant, image), for the standbys prepared for them.
    wanted: Mutex<Wanted>,
    /// How often the pool is brought to its target when no start asks.
    upkeep: Duration,
    ready: Mutex<VecDeque<Ready>>,
    filling: AtomicBool,
    next: AtomicU64,
    /// Starts and removals in flight: the pool refills only when this has been zero for
    /// [`QUIET`].
    starting: Arc<AtomicUsize>,
    /// Starts in flight per tenant, for [`Self::take`]'s fair share.
    starting_by_tenant: Mutex<HashMap<String, usize>>,
    /// When the last start or removal ended.
    last_start: Mutex<Instant>,
    /// The directory of the standby being launched, if one is: its restore yields the cores to
    /// starts and removals in flight ([`Self::yield_launch`]).
    launching: Arc<Mutex<Option<Launch>>>,
    /// Set as hyperd stops: no more standbys are launched.
    closed: AtomicBool,
}

/// How long no start must have been in flight before the pool refills: a refill (a restore and
/// a rehearsal, a few hundred ms of CPU under TCG) would otherwise slow the container that
/// just started, and the next start of a quick succession.
const QUIET: Duration = Duration::from_millis(500);

/// How often, at most, the pool is brought to its target when no start asks.
const UPKEEP: Duration = Duration::from_secs(30);

/// How often the pool checks the host's available memory against its reserve.
const MEMORY_CHECK: Duration = Duration::from_secs(5);

/// How many ready standbys [`StandbyPool::memory`] measures: they are alike (one template,
/// one rehearsal, paused), and each measure walks a QEMU's page tables.
const MEMORY_SAMPLE: usize = 8;

/// How many standbys a pool keeps.
#[derive(Debug, Clone)]
pub struct Sizing {
    /// Kept however quiet the node is (`--standby-vms`).
    pub floor: usize,
    /// The most it grows to for a burst (`--standby-vms-max`).
    pub ceiling: usize,
    /// The most host memory (PSS of the standbys' QEMUs and supervisors, as measured) the
    /// ready standbys may take (`--standby-memory-max`); `None`: no bound but the ceiling.
    pub memory_max: Option<u64>,
    /// The host's memory the pool leaves available (`--standby-memory-reserve`): it launches
    /// a standby only while a quarter more is available, and stops ready ones within
    /// [`MEMORY_CHECK`] of the host's other work taking it below.
    pub host_reserve: crate::Reserve,
    /// How long it stays sized for a burst (`--standby-vms-hold`).
    pub hold: Duration,
}

/// A ready standby.
struct Ready {
    dir: PathBuf,
    /// The (tenant, image) it is prepared for; `None`: any container may claim it.
    prepared: Option<Key>,
}

/// The most a prepared standby reads ahead of its image's program and interpreter.
pub const PREREAD_MAX: u64 = 16 << 20;

/// The standby being launched.
struct Launch {
    dir: PathBuf,
    /// Its processes were put at SCHED_IDLE: they go back once it is ready.
    yielded: bool,
}

/// Counts a start (of a tenant's) or a removal as in flight while it lives.
pub struct Starting<'a> {
    pool: &'a StandbyPool,
    tenant: Option<String>,
}

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        let pool = self.pool;
        *pool.last_start.lock().expect("poisoned") = Instant::now();
        if pool.starting.fetch_sub(1, Ordering::SeqCst) == 1 {
            pool.yield_launch();
        }
        let Some(tenant) = &self.tenant else {
            return;
        };
        let mut by_tenant = pool.starting_by_tenant.lock().expect("poisoned");
        if let Some(n) = by_tenant.get_mut(tenant) {
            *n -= 1;
            if *n == 0 {
                by_tenant.remove(tenant);
            }
        }
    }
}

/// How many standbys a tenant with other starts in flight leaves to the starts of tenants with
/// none, out of a pool that keeps `target`: a burst of one tenant's (a compose file, a CI
/// fan-out) must not take the whole pool from another tenant's single start that comes while
/// it runs, which would then restore a VM of its own, on cores the burst keeps busy. None out
/// of a pool too small to share (with hardware virtualisation a restore is quick anyway).
fn held_for_others(target: usize) -> usize {
    (target / 8).min(2)
}

/// How many of `ready` are generic (prepared for no image).
fn generic_count(ready: &VecDeque<Ready>) -> usize {
    ready.iter().filter(|r| r.prepared.is_none()).count()
}

/// How many generic standbys a pool of `floor` that keeps `target` keeps however many are
/// wanted prepared: a quarter of its floor (a quiet node's starts of other images and tenants),
/// those held for other tenants during a burst, and at least one. (Half the floor, as it was,
/// left a large pool under TCG 64 generic standbys of 128: a burst of 100 repeated found 63
/// prepared for it, each claim of the others ~20% dearer.)
fn generic_min(floor: usize, target: usize) -> usize {
    (floor / 4).max(held_for_others(target)).max(1).min(target)
}

impl StandbyPool {
    /// `spec`: the default size's shim spec with its `template_dir`; `sizing`: how many to keep.
    pub fn new(
        data_root: &Path,
        shim_binary: PathBuf,
        mut spec: ShimSpec,
        sizing: &Sizing,
    ) -> Self {
        spec.standby = true;
        spec.network = None;
        spec.hostname.clear();
        Self {
            dir: data_root.join("standby"),
            shim_binary,
            spec,
            floor: sizing.floor,
            ceiling: sizing.ceiling.max(sizing.floor),
            memory_max: sizing.memory_max,
            host_reserve: sizing.host_reserve.bytes(crate::host::memory_bytes()),
            demand: Mutex::new(Demand::new(sizing.hold)),
            wanted: Mutex::new(Wanted::new(sizing.hold)),
            upkeep: UPKEEP.min(sizing.hold / 4).max(Duration::from_secs(1)),
            ready: Mutex::default(),
            filling: AtomicBool::new(false),
            next: AtomicU64::new(0),
            starting: Arc::default(),
            starting_by_tenant: Mutex::default(),
            last_start: Mutex::new(Instant::now()),
            launching: Arc::default(),
            closed: AtomicBool::new(false),
        }
    }

    /// How many standbys are ready now.
    pub fn ready_count(&self) -> usize {
        self.ready.lock().expect("poisoned").len()
    }

    /// How many ready standbys are prepared for `tenant`'s images.
    pub fn prepared_for(&self, tenant: &str) -> usize {
        self.ready
            .lock()
            .expect("poisoned")
            .iter()
            .filter(|r| r.prepared.as_ref().is_some_and(|(t, _)| t == tenant))
            .count()
    }

    /// How many standbys the pool keeps now: the largest recent burst and the standbys held
    /// for other tenants during one ([`held_for_others`]), within floor and ceiling.
    pub fn target(&self) -> usize {
        let peak = self.demand.lock().expect("poisoned").peak(Instant::now());
        (peak + held_for_others(peak)).clamp(self.floor, self.ceiling)
    }

    /// The most standbys the pool grows to.
    pub fn ceiling(&self) -> usize {
        self.ceiling
    }

    /// What the ready standbys take of the host's memory now: the PSS of their processes
    /// (QEMU and supervisor; pages shared with the template and each other are split), of at
    /// most [`MEMORY_SAMPLE`] of them, scaled to them all.
    pub fn memory(&self) -> u64 {
        let (sample, count): (Vec<PathBuf>, usize) = {
            let ready = self.ready.lock().expect("poisoned");
            let sample = ready.iter().take(MEMORY_SAMPLE).map(|r| r.dir.clone());
            (sample.collect(), ready.len())
        };
        let measured: u64 = sample
            .iter()
            .flat_map(|dir| crate::runtime::vm_processes(dir))
            .filter_map(crate::host::pss_bytes)
            .sum();
        measured
            .checked_div(sample.len() as u64)
            .map_or(0, |each| each * count as u64)
    }

    /// The operator's bound on [`Self::memory`], if any.
    pub fn memory_max(&self) -> Option<u64> {
        self.memory_max
    }

    /// How many standbys the host's memory allows now, `ready` of them ready, keeping
    /// `reserve` bytes of it available ([`host_allows`]).
    fn host_memory_allows(&self, ready: usize, reserve: u64) -> usize {
        crate::host::memory_available().map_or(usize::MAX, |available| {
            host_allows(ready, available, reserve)
        })
    }

    /// What a launch leaves available of the host's memory: a quarter over the reserve, so
    /// that a host whose memory hovers at the reserve does not see standbys stopped and
    /// launched again at every check.
    fn launch_reserve(&self) -> u64 {
        self.host_reserve + self.host_reserve / 4
    }

    /// Whether the host's memory leaves room for one more launch beside `ready` standbys.
    fn host_has_room_for_one_more(&self, ready: usize) -> bool {
        self.host_memory_allows(ready, self.launch_reserve()) > ready
    }

    /// Whether the host's memory holds the pool back: fewer ready than its target, and no
    /// launch allowed by its reserve.
    pub fn held_back_by_host_memory(&self) -> bool {
        let ready = self.ready_count();
        ready < self.target() && !self.host_has_room_for_one_more(ready)
    }

    /// Whether one more standby leaves the host its reserve and fits the operator's bound,
    /// reckoned at the average of the ready ones (or [`STANDBY_FOOTPRINT`] before there is
    /// one).
    fn has_memory_for_one_more(&self) -> bool {
        let ready = self.ready_count();
        if !self.host_has_room_for_one_more(ready) {
            return false;
        }
        let Some(max) = self.memory_max else {
            return true;
        };
        let used = self.memory();
        let each = used.checked_div(ready as u64).unwrap_or(STANDBY_FOOTPRINT);
        used + each <= max
    }

    /// Marks a start of `tenant`'s in flight until the guard is dropped.
    pub fn starting(&self, tenant: &str) -> Starting<'_> {
        if self.starting.fetch_add(1, Ordering::SeqCst) == 0 {
            self.yield_launch();
        }
        *self
            .starting_by_tenant
            .lock()
            .expect("poisoned")
            .entry(tenant.to_string())
            .or_default() += 1;
        Starting {
            pool: self,
            tenant: Some(tenant.to_string()),
        }
    }

    /// Marks a removal in flight until the guard is dropped: the pool refills after it, as
    /// after a start (a burst of `rm -f` would otherwise share the cores with a refill).
    pub fn removing(&self) -> Starting<'_> {
        if self.starting.fetch_add(1, Ordering::SeqCst) == 0 {
            self.yield_launch();
        }
        Starting {
            pool: self,
            tenant: None,
        }
    }

    /// A ready standby for `tenant`'s container whose VM is `spec`, taken out of the pool: one
    /// prepared for its image if its disk is `pristine` (the preparation its image's standbys
    /// take) and one is ready, else a generic one; no generic one for a tenant with other
    /// starts in flight once only the standbys held for other tenants are left
    /// ([`held_for_others`]). Only the size is compared here; the supervisor checks the whole
    /// template key, and a prepared standby the disk, when claimed. The start counts towards
    /// the bursts the pool follows as of when it `arrived`: VMs come up a few at a time
    /// (`crate::start_turns`), and a burst of 100 taken over 15 s is still one burst.
    pub fn take(
        &self,
        spec: &ShimSpec,
        tenant: &str,
        pristine: Option<&shim::PrepareSpec>,
        arrived: Instant,
    ) -> Option<PathBuf> {
        if spec.vcpus != self.spec.vcpus
            || spec.memory_mib != self.spec.memory_mib
            || spec.template_dir != self.spec.template_dir
        {
            return None;
        }
        self.demand.lock().expect("poisoned").record(arrived);
        let key = pristine.map(|p| {
            debug_assert_eq!(p.tenant, tenant, "a preparation of the starting tenant's");
            self.wanted
                .lock()
                .expect("poisoned")
                .record(p.key(), p.clone(), arrived);
            p.key()
        });
        if let Some(key) = key {
            let mut ready = self.ready.lock().expect("poisoned");
            if let Some(i) = ready.iter().position(|r| r.prepared.as_ref() == Some(&key)) {
                return ready.remove(i).map(|r| r.dir);
            }
        }
        let bursting = self
            .starting_by_tenant
            .lock()
            .expect("poisoned")
            .get(tenant)
            .is_some_and(|n| *n > 1);
        let held = if bursting {
            held_for_others(self.target())
        } else {
            0
        };
        let mut ready = self.ready.lock().expect("poisoned");
        if generic_count(&ready) <= held {
            return None;
        }
        let i = ready.iter().position(|r| r.prepared.is_none())?;
        ready.remove(i).map(|r| r.dir)
    }

    /// What the next standby launched is prepared for: the most recently started pair with
    /// fewer ready than its burst, once the generic ones [`generic_min`] keeps are ready and
    /// while the pool's target leaves room; `None`: a generic one.
    fn next_preparation(&self) -> Option<shim::PrepareSpec> {
        let target = self.target();
        let wanted = self.wanted.lock().expect("poisoned").now(Instant::now());
        let ready = self.ready.lock().expect("poisoned");
        if generic_count(&ready) < generic_min(self.floor, target) || ready.len() >= target {
            return None;
        }
        wanted.into_iter().find_map(|(key, spec, peak)| {
            let have = ready
                .iter()
                .filter(|r| r.prepared.as_ref() == Some(&key))
                .count();
            (have < peak).then_some(spec)
        })
    }

    /// No more standbys prepared for `tenant`'s image `image_id` (the tenant removed it): the
    /// ready ones are stopped, and with them the image's disk they hold open.
    pub fn forget(&self, tenant: &str, image_id: &str) {
        let key = (tenant.to_string(), image_id.to_string());
        self.wanted.lock().expect("poisoned").forget(&key);
        let gone: Vec<PathBuf> = {
            let mut ready = self.ready.lock().expect("poisoned");
            let (gone, kept) = std::mem::take(&mut *ready)
                .into_iter()
                .partition(|r| r.prepared.as_ref() == Some(&key));
            *ready = kept;
            gone.into_iter().map(|r: Ready| r.dir).collect()
        };
        // Off the caller's path (`rmi` answers at once): each may take seconds to stop.
        for dir in gone {
            tokio::spawn(async move { discard(&dir).await });
        }
    }

    /// Hand the standby in `standby` to the container in `container_dir`. On error the standby
    /// is gone (killed, its directory removed) and the container's directory is as it was.
    pub async fn claim(&self, standby: &Path, container_dir: &Path) -> crate::Result<()> {
        let claimed =
            shim_link::request(standby, json!({"op": "claim", "dir": container_dir})).await;
        if let Err(e) = &claimed {
            tracing::warn!("claiming standby VM {}: {e}", standby.display());
            discard(standby).await;
            // A supervisor that died after moving in leaves its VM in the container's directory.
            stop_processes_in(container_dir).await;
        }
        claimed.map(|_| ())
    }

    /// Start refilling the pool in the background (no-op while a refill runs).
    pub fn fill(self: &Arc<Self>) {
        if self.filling.swap(true, Ordering::SeqCst) {
            return;
        }
        let pool = self.clone();
        tokio::spawn(async move {
            while pool.ready_count() < pool.target()
                && !pool.closed.load(Ordering::SeqCst)
                && pool.has_memory_for_one_more()
            {
                // Let starts in flight finish first, and the machine settle.
                if pool.starting.load(Ordering::SeqCst) > 0
                    || pool.last_start.lock().expect("poisoned").elapsed() < QUIET
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                let preparation = pool.next_preparation();
                let key = preparation.as_ref().map(shim::PrepareSpec::key);
                if let Err(e) = pool.launch_one(preparation).await {
                    tracing::warn!("no standby VM: {e}");
                    match key {
                        // Generic ones instead (its image may be gone).
                        Some(key) => pool.wanted.lock().expect("poisoned").forget(&key),
                        None => break,
                    }
                }
            }
            pool.filling.store(false, Ordering::SeqCst);
        });
    }

    async fn launch_one(&self, preparation: Option<shim::PrepareSpec>) -> anyhow::Result<()> {
        use anyhow::Context;
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let dir = self.dir.join(n.to_string());
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let mut spec = self.spec.clone();
        spec.id = format!("standby-{n}");
        spec.root_disk = dir.join("placeholder");
        let prepared = preparation.as_ref().map(shim::PrepareSpec::key);
        spec.prepared_for = preparation;
        // Private: a prepared standby's names its tenant, program and user.
        crate::runtime::write_private(
            &dir.join(shim::paths::SPEC),
            &serde_json::to_vec_pretty(&spec)?,
        )?;
        *self.launching.lock().expect("poisoned") = Some(Launch {
            dir: dir.clone(),
            yielded: false,
        });
        let launched = crate::runtime::launch_supervisor(&self.shim_binary, &dir, &[]).await;
        let launch = self.launching.lock().expect("poisoned").take();
        if let Err(e) = launched {
            discard(&dir).await;
            anyhow::bail!("a standby VM: {e}");
        }
        // Ready and idle: at the normal priority for whoever claims it.
        if launch.is_some_and(|l| l.yielded) {
            set_priority(&dir, false);
        }
        // Its image removed while it was prepared (`forget` did not see it yet).
        if prepared
            .as_ref()
            .is_some_and(|key| !self.wanted.lock().expect("poisoned").has(key))
        {
            discard(&dir).await;
            return Ok(());
        }
        self.ready
            .lock()
            .expect("poisoned")
            .push_back(Ready { dir, prepared });
        Ok(())
    }

    /// As the first start or removal begins, or the last one ends: the standby being launched
    /// (a restore and a rehearsal, a few hundred ms of CPU under TCG) goes to SCHED_IDLE while
    /// any is in flight, and back when none is, so that a burst never shares the cores with
    /// the pool's refill. Off the caller's path (finding the launch's processes reads /proc).
    /// Each change reads the count as it runs, under the lock the launch's end takes: the last
    /// one leaves the right policy, and none comes after the launch's own reset.
    fn yield_launch(&self) {
        if self.launching.lock().expect("poisoned").is_none() {
            return;
        }
        let (launching, starting) = (self.launching.clone(), self.starting.clone());
        let apply = move || {
            let mut launch = launching.lock().expect("poisoned");
            if let Some(launch) = launch.as_mut() {
                let background = starting.load(Ordering::SeqCst) > 0;
                set_priority(&launch.dir, background);
                launch.yielded |= background;
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(apply)),
            Err(_) => apply(),
        }
    }

    /// Every [`UPKEEP`] (or a quarter of the hold, if shorter) until the pool closes: stop the
    /// standbys a forgotten burst left beyond the target (prepared ones beyond their pair's
    /// burst first), and refill (after a failed launch, say). Every [`MEMORY_CHECK`] in
    /// between, the same stops if the host's memory is under the reserve.
    pub async fn keep(self: Arc<Self>) {
        let mut last_upkeep = Instant::now();
        while !self.closed.load(Ordering::SeqCst) {
            tokio::time::sleep(self.upkeep.min(MEMORY_CHECK)).await;
            let upkeep = last_upkeep.elapsed() >= self.upkeep;
            let ready = self.ready_count();
            if !upkeep && self.host_memory_allows(ready, self.host_reserve) >= ready {
                continue;
            }
            let stops: Vec<_> = self
                .surplus()
                .into_iter()
                .map(|dir| tokio::spawn(async move { discard(&dir).await }))
                .collect();
            for stop in stops {
                let _ = stop.await;
            }
            if upkeep {
                last_upkeep = Instant::now();
                self.fill();
            }
        }
    }

    /// The ready standbys the pool keeps no more, taken out of it: those prepared for a pair
    /// beyond its recent burst, then, beyond the target (or what the host's memory allows, if
    /// fewer), generic ones over [`generic_min`], then prepared ones, then generic ones again,
    /// newest first.
    fn surplus(&self) -> Vec<PathBuf> {
        let target = self.target();
        let wanted = self.wanted.lock().expect("poisoned").now(Instant::now());
        let mut ready = self.ready.lock().expect("poisoned");
        let allowed = self.host_memory_allows(ready.len(), self.host_reserve);
        let target = target.min(allowed);
        let mut kept: HashMap<Key, usize> = HashMap::new();
        let mut surplus = Vec::new();
        ready.retain(|r| {
            let Some(key) = &r.prepared else {
                return true;
            };
            let peak = wanted
                .iter()
                .find(|(k, _, _)| k == key)
                .map_or(0, |(_, _, n)| *n);
            let n = kept.entry(key.clone()).or_default();
            *n += 1;
            if *n > peak {
                surplus.push(r.dir.clone());
            }
            *n <= peak
        });
        while ready.len() > target {
            // The newest generic one while more are kept than the minimum, else the newest
            // prepared one (the newest of all once none is prepared).
            let generic_over = generic_count(&ready) > generic_min(self.floor, target);
            let i = ready
                .iter()
                .rposition(|r| r.prepared.is_none() == generic_over)
                .unwrap_or(ready.len() - 1);
            surplus.extend(ready.remove(i).map(|r| r.dir));
        }
        if allowed < ready.len() + surplus.len() {
            tracing::warn!(
                "the host's available memory is under the standby pool's reserve ({} MiB): {} standby VMs stop",
                self.host_reserve >> 20,
                surplus.len()
            );
        }
        surplus
    }

    /// Take over the standbys an earlier hyperd left in this pool's directory when they fit
    /// ([`Self::matches`] and [`answers`]), up to the ceiling; stop the others. Returns how many
    /// were adopted and stopped.
    pub async fn adopt(&self) -> (usize, usize) {
        let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| {
                let n = e.file_name().to_str().and_then(|n| n.parse().ok());
                (n.unwrap_or(u64::MAX), e.path())
            })
            .collect();
        found.sort();
        // Every supervisor that passes the cheap checks is asked at once: one after another,
        // 23 took hyperd's start ~45 ms before it served.
        let mut asked = tokio::task::JoinSet::new();
        for (i, (n, dir)) in found.iter().enumerate() {
            if *n == u64::MAX {
                continue;
            }
            self.next.fetch_max(n + 1, Ordering::SeqCst);
            if let Some(prepared) = self.matches(dir) {
                let dir = dir.clone();
                asked.spawn(async move { (i, answers(&dir).await.then_some(prepared)) });
            }
        }
        let mut fits = vec![None; found.len()];
        // A task that failed leaves its standby unfit; the others' answers still count.
        while let Some(joined) = asked.join_next().await {
            if let Ok((i, answered)) = joined {
                fits[i] = answered;
            }
        }
        let (mut adopted, mut stopped) = (0, 0);
        for ((_, dir), fits) in found.into_iter().zip(fits) {
            if let Some(prepared) = fits.filter(|_| self.ready_count() < self.ceiling) {
                // Wanted as if just started: kept for the hold unless the tenant removes it.
                let key = prepared.as_ref().map(|p| {
                    let key = p.key();
                    self.wanted.lock().expect("poisoned").record(
                        key.clone(),
                        p.clone(),
                        Instant::now(),
                    );
                    key
                });
                self.ready
                    .lock()
                    .expect("poisoned")
                    .push_back(Ready { dir, prepared: key });
                adopted += 1;
            } else {
                discard(&dir).await;
                stopped += 1;
            }
        }
        (adopted, stopped)
    }

    /// Whether the standby in `dir` is one this pool would launch now (it fits if it also
    /// [`answers`]), and what it is prepared for: its spec is the pool's (but for its name,
    /// placeholder disk and preparation), its supervisor and QEMU run in `dir`, the supervisor
    /// is this hyperd's binary (not one replaced since), in this hyperd's mount namespace.
    /// Whether its VM still fits the template is checked at its claim, as for any standby.
    fn matches(&self, dir: &Path) -> Option<Option<shim::PrepareSpec>> {
        let spec = std::fs::read(dir.join(shim::paths::SPEC))
            .ok()
            .and_then(|raw| serde_json::from_slice::<ShimSpec>(&raw).ok());
        let mut spec = spec?;
        spec.id.clone_from(&self.spec.id);
        spec.root_disk.clone_from(&self.spec.root_disk);
        let prepared = spec.prepared_for.take();
        if spec != self.spec {
            return None;
        }
        // Both running in `dir`: the supervisor first.
        let [supervisor, _qemu] = crate::runtime::vm_processes(dir)[..] else {
            return None;
        };
        let exe = std::fs::read_link(format!("/proc/{supervisor}/exe")).ok();
        let same_binary = exe.is_some() && exe == std::fs::canonicalize(&self.shim_binary).ok();
        // A claim moves the standby's tap into a tenant namespace by its path under the data
        // root: a supervisor in another mount namespace (an earlier hyperd started in one of
        // its own) does not see the namespaces this hyperd mounts there.
        let mounts = std::fs::read_link(format!("/proc/{supervisor}/ns/mnt")).ok();
        let same_mounts =
            mounts.is_some() && mounts == std::fs::read_link("/proc/self/ns/mnt").ok();
        (same_binary && same_mounts).then_some(prepared)
    }

    /// Launch no more standbys, wait for a launch in progress, and forget the ready ones: they
    /// stay up for the next hyperd ([`Self::adopt`]).
    pub async fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        while self.filling.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.ready.lock().expect("poisoned").clear();
    }
}

/// Whether the supervisor of the standby in `dir` answers `state` within 2 s.
async fn answers(dir: &Path) -> bool {
    let state = shim_link::request(dir, json!({"op": "state"}));
    matches!(
        tokio::time::timeout(Duration::from_secs(2), state).await,
        Ok(Ok(_))
    )
}

/// What a standby is reckoned to cost the host (QEMU and its supervisor, idle; ~53 MiB of PSS
/// measured under TCG).
const STANDBY_FOOTPRINT: u64 = 64 << 20;

/// The default ceiling on a host of `host_memory` bytes that offers containers `node_memory`:
/// a standby for each container of the default size the node has room for, within a third
/// of the host's memory; at least 2, at most 128. On a 24 GiB host: 48 when the node offers
/// all of it (512 MiB a container), 128 when it offers 64 GiB or more (an overcommitted
/// node). Idle standbys cost memory and no CPU, and the pool gives them back as the host's
/// own work needs the memory ([`Sizing::host_reserve`]).
pub fn default_ceiling(host_memory: u64, node_memory: u64) -> usize {
    let size = crate::sizes::lookup(crate::sizes::DEFAULT_SIZE).expect("the default size exists");
    let containers = node_memory / (size.memory_mib << 20);
    (host_memory / 3 / STANDBY_FOOTPRINT)
        .min(containers)
        .clamp(2, 128) as usize
}

/// How many standbys the host's memory allows, `ready` of them ready, `available` bytes of it
/// available and `reserve` to be kept so, each reckoned at [`STANDBY_FOOTPRINT`]: more while
/// what is available exceeds the reserve, fewer once it is short of it.
fn host_allows(ready: usize, available: u64, reserve: u64) -> usize {
    if available >= reserve {
        ready.saturating_add(((available - reserve) / STANDBY_FOOTPRINT) as usize)
    } else {
        ready.saturating_sub((reserve - available).div_ceil(STANDBY_FOOTPRINT) as usize)
    }
}

/// The default floor: with hardware virtualisation a VM restored at its start is quick, and a
/// couple kept ready cover the next starts while bursts grow the pool. Under TCG a fresh QEMU
/// translates the guest's whole start path (mount, namespaces, exec: ~4 times the CPU of a
/// claim, whose standby did that in its rehearsal), so a burst of fresh restores is
/// CPU-bound: the pool keeps its ceiling ready (paused, they cost memory and no CPU).
pub fn default_floor(hardware_accelerated: bool, ceiling: usize) -> usize {
    if hardware_accelerated {
        2.min(ceiling)
    } else {
        ceiling
    }
}

/// Stop every standby under `data_root`, ready or left by an earlier hyperd (also one that ran
/// with other settings), and remove their directories.
pub async fn drain(data_root: &Path) {
    let dirs: Vec<PathBuf> = std::fs::read_dir(data_root.join("standby"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    for dir in dirs {
        discard(&dir).await;
    }
}

/// Every process of the standby in `dir` at SCHED_IDLE (`background`) or back.
fn set_priority(dir: &Path, background: bool) {
    for pid in crate::runtime::processes_in(dir) {
        crate::priority::set(pid as u32, background);
    }
}

/// Stop the standby in `dir` and remove the directory. A standby has run nothing of anyone's
/// (one prepared for an image has read it, for that image's tenant): one that does not answer
/// (still booting, or left by a crashed hyperd) is killed.
async fn discard(dir: &Path) {
    if dir.join(shim::paths::SHIM_SOCK).exists() {
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            shim_link::request(dir, json!({"op": "shutdown"})),
        )
        .await;
    }
    stop_processes_in(dir).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// SIGKILL every process of `dir` until none is left (at most 5 s).
async fn stop_processes_in(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while crate::runtime::kill_processes_in(dir) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    #[test]
    fn the_default_ceiling_is_the_containers_the_node_holds_within_a_third_of_the_host() {
        // 24 GiB offered: 48 containers of 512 MiB; 66 GiB: 132, more than a third of the host.
        assert_eq!(super::default_ceiling(24 << 30, 24 << 30), 48);
        assert_eq!(super::default_ceiling(24 << 30, 66 << 30), 128);
        assert_eq!(super::default_ceiling(12 << 30, 66 << 30), 64);
        assert_eq!(super::default_ceiling(1 << 30, 1 << 30), 2);
        assert_eq!(super::default_ceiling(1 << 40, 1 << 40), 128);
    }

    #[test]
    fn the_host_allows_standbys_while_its_available_memory_exceeds_the_reserve() {
        const GIB: u64 = 1 << 30;
        // 1 GiB over the reserve: 16 more at 64 MiB; exactly at it: none more.
        assert_eq!(super::host_allows(10, 4 * GIB, 3 * GIB), 26);
        assert_eq!(super::host_allows(10, 3 * GIB, 3 * GIB), 10);
        // Short of it by 100 MiB: two fewer; by more than the pool holds: none.
        assert_eq!(super::host_allows(10, 3 * GIB - (100 << 20), 3 * GIB), 8);
        assert_eq!(super::host_allows(10, 0, 3 * GIB), 0);
        assert_eq!(super::host_allows(usize::MAX, 4 * GIB, 3 * GIB), usize::MAX);
    }

    /// A pool of `floor` (its ceiling too) holding `generic` generic standbys and one prepared
    /// for each of `prepared`, and the spec its VMs have.
    fn pool_with(
        floor: usize,
        generic: usize,
        prepared: &[(&str, &str)],
    ) -> (super::StandbyPool, shim::Spec) {
        use super::{Ready, Sizing, StandbyPool};
        use std::path::{Path, PathBuf};
        let mut spec: shim::Spec = serde_json::from_value(serde_json::json!({
            "id": "", "kernel": "k", "initrd": "i", "root_disk": "r",
            "process": serde_json::to_value(shim::ProcessSpec::default()).unwrap(),
        }))
        .unwrap();
        spec.template_dir = Some("/templates".into());
        let sizing = Sizing {
            floor,
            ceiling: floor,
            memory_max: None,
            host_reserve: crate::Reserve::Bytes(0),
            hold: std::time::Duration::from_secs(60),
        };
        let pool = StandbyPool::new(Path::new("/nowhere"), "shim".into(), spec.clone(), &sizing);
        let generic = (0..generic).map(|i| Ready {
            dir: PathBuf::from(format!("/nowhere/{i}")),
            prepared: None,
        });
        let prepared = prepared.iter().map(|(tenant, image)| Ready {
            dir: PathBuf::from(format!("/nowhere/{tenant}-{image}")),
            prepared: Some((tenant.to_string(), image.to_string())),
        });
        pool.ready.lock().unwrap().extend(generic.chain(prepared));
        (pool, spec)
    }

    /// What a pristine start of `tenant`'s `image` is prepared with.
    fn pristine(tenant: &str, image: &str) -> shim::PrepareSpec {
        shim::PrepareSpec {
            tenant: tenant.into(),
            image_id: image.into(),
            overlay_template: "/o".into(),
            process: shim::ProcessSpec::default(),
            preread_max: 1,
        }
    }

    #[test]
    fn a_bursting_tenant_leaves_the_last_standbys_to_another_tenants_single_start() {
        let (pool, spec) = pool_with(24, 3, &[]);
        let a = [pool.starting("a"), pool.starting("a")];
        assert!(
            pool.take(&spec, "a", None, Instant::now()).is_some(),
            "3 ready, 2 held for others"
        );
        assert!(
            pool.take(&spec, "a", None, Instant::now()).is_none(),
            "the last 2 are held"
        );
        let _b = pool.starting("b");
        assert!(
            pool.take(&spec, "b", None, Instant::now()).is_some(),
            "b's single start"
        );
        drop(a);
        let _a = pool.starting("a");
        assert!(
            pool.take(&spec, "a", None, Instant::now()).is_some(),
            "a's single start now"
        );
        assert!(
            pool.take(&spec, "a", None, Instant::now()).is_none(),
            "empty"
        );
    }

    #[test]
    fn a_prepared_standby_goes_only_to_a_pristine_start_of_its_tenant_and_image() {
        let (pool, spec) = pool_with(4, 1, &[("a", "img")]);
        let path = |p: Option<std::path::PathBuf>| p.map(|p| p.display().to_string());
        // Another tenant's start of the same image, a start of another image, a start whose
        // disk is not pristine: the generic one, then none.
        let _b = pool.starting("b");
        assert_eq!(
            path(pool.take(&spec, "b", Some(&pristine("b", "img")), Instant::now())).as_deref(),
            Some("/nowhere/0")
        );
        assert_eq!(
            pool.take(&spec, "b", Some(&pristine("b", "img")), Instant::now()),
            None
        );
        assert_eq!(
            pool.take(&spec, "a", Some(&pristine("a", "other")), Instant::now()),
            None
        );
        assert_eq!(pool.take(&spec, "a", None, Instant::now()), None);
        assert_eq!(pool.prepared_for("a"), 1);
        assert_eq!(pool.prepared_for("b"), 0);
        // Its own, even in a burst that leaves the generic ones to others.
        let _a = [pool.starting("a"), pool.starting("a")];
        assert_eq!(
            path(pool.take(&spec, "a", Some(&pristine("a", "img")), Instant::now())).as_deref(),
            Some("/nowhere/a-img")
        );
    }

    #[test]
    fn standbys_are_prepared_as_wanted_after_the_generic_minimum_and_forgotten_beyond_it() {
        let (pool, spec) = pool_with(4, 0, &[]);
        let _a = pool.starting("a");
        for _ in 0..3 {
            pool.take(&spec, "a", Some(&pristine("a", "img")), Instant::now());
        }
        let push = |dir: &str, prepared: bool| push_ready(&pool, dir, prepared);
        // A quarter of the floor generic first (at least one), then for `img` as many as its
        // burst within the target.
        assert!(pool.next_preparation().is_none());
        push("/g0", false);
        for p in ["/p0", "/p1", "/p2"] {
            let prep = pool.next_preparation().expect("one for img");
            assert_eq!(prep.key(), ("a".into(), "img".into()));
            push(p, true);
        }
        assert!(pool.next_preparation().is_none(), "the pool is full");
        assert!(pool.surplus().is_empty());
        // The image removed: its standbys go, generic ones come instead.
        let key = ("a".to_string(), "img".to_string());
        pool.wanted.lock().unwrap().forget(&key);
        let gone: Vec<std::path::PathBuf> = ["/p0", "/p1", "/p2"].map(Into::into).into();
        assert_eq!(pool.surplus(), gone, "no longer wanted");
        assert_eq!(pool.ready_count(), 1);
        assert!(pool.next_preparation().is_none());
    }

    /// A standby ready in `pool`, generic or prepared for tenant a's `img`.
    fn push_ready(pool: &super::StandbyPool, dir: &str, prepared: bool) {
        pool.ready.lock().unwrap().push_back(super::Ready {
            dir: dir.into(),
            prepared: prepared.then(|| ("a".into(), "img".into())),
        })
    }

    #[test]
    fn beyond_the_target_prepared_standbys_go_before_the_generic_minimum() {
        let (pool, spec) = pool_with(8, 0, &[]);
        let _a = pool.starting("a");
        for _ in 0..7 {
            pool.take(&spec, "a", Some(&pristine("a", "img")), Instant::now());
        }
        push_ready(&pool, "/g0", false);
        for p in 0..7 {
            push_ready(&pool, &format!("/p{p}"), true);
        }
        push_ready(&pool, "/g1", false);
        // One over the target of 8, at the 2 generic ones the pool keeps: the newest prepared
        // one goes, not the newest standby.
        let gone: Vec<std::path::PathBuf> = vec!["/p6".into()];
        assert_eq!(pool.surplus(), gone);
        assert_eq!(super::generic_count(&pool.ready.lock().unwrap()), 2);
    }

    #[test]
    fn a_start_counts_towards_bursts_as_of_its_arrival() {
        use std::time::Duration;
        let (pool, spec) = pool_with(2, 0, &[]);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // Taken now, one after the other, but arrived 11 s apart: no burst.
        for s in [0, 11, 22] {
            pool.take(&spec, "a", None, at(s));
        }
        assert_eq!(pool.demand.lock().unwrap().peak(at(22)), 1);
        // Three that arrived together are one, however late they are taken.
        for _ in 0..3 {
            pool.take(&spec, "a", None, at(40));
        }
        assert_eq!(pool.demand.lock().unwrap().peak(at(45)), 3);
    }

    #[test]
    fn the_default_floor_is_the_ceiling_only_under_tcg() {
        assert_eq!(super::default_floor(false, 24), 24);
        assert_eq!(super::default_floor(true, 24), 2);
        assert_eq!(super::default_floor(true, 1), 1);
    }
}
