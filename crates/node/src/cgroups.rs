//! Control groups for VMs: each container's QEMU (and its supervisor) runs in a group of its
//! own, with a CPU quota and a memory limit from its size, inside a group per tenant whose CPU
//! and I/O weights are all equal, so a tenant with many busy VMs gets no more of the node than
//! one with a single VM when both want it. A VM's disk I/O (its root disk and volumes, files
//! under the data root) is capped too, in bytes and operations per second from its size, on
//! the block device that holds the data root: `io.max` on cgroup v2, the `blkio.throttle.*`
//! files on v1. The kernel throttles I/O where it meets that device, so the cap holds what
//! reaches the disk: reads the page cache does not answer, and writes as they are written back
//! (on v1 only what QEMU writes back itself, on a guest's flush: v1 charges the flusher
//! threads' write-back to the root group). A data root on a filesystem with no block device
//! under it (tmpfs, overlayfs, btrfs's anonymous devices, a network filesystem) leaves nothing
//! to throttle: VMs get CPU and memory limits only, and [`Cgroups::describe`] says why.
//!
//! The tree, below hyperd's own group in each hierarchy (as a daemon given a delegated
//! subtree does): `hyper-<node>/tenant-<name>/<container id>`, `<node>` from the node's id so
//! that hyperds of several data roots on one machine (tests) keep apart. cgroup v2 is used when its
//! hierarchy has the cpu and memory controllers; else the v1 `cpu` and `memory` hierarchies
//! (and `blkio`, for its throttle files and, with CFQ or BFQ, its weights). Groups outlive hyperd (a restarted hyperd finds its
//! running VMs in them) and go when their VM has exited.

use std::io;
use std::path::{Path, PathBuf};

use crate::sizes::{Size, KERNEL_RESERVE_MIB};

/// CFS period, in microseconds, of every VM's quota.
const PERIOD_US: u64 = 100_000;
/// What a VM may use beyond its vCPUs, in hundredths of a CPU: TCG translates code and QEMU
/// runs its I/O on threads of their own.
const CPU_MARGIN_PERCENT: u64 = 25;
/// QEMU's own memory beyond the guest's (its code, TCG's translation cache, buffers), with room
/// to spare: the limit is against a runaway, not a tight fit.
const QEMU_OVERHEAD_MIB: u64 = 256;
/// Disk bandwidth per vCPU, each way: a single-vCPU VM can still boot and unpack an image at a
/// disk's pace without one tenant's `dd` taking the whole device.
const IO_BPS_PER_VCPU: u64 = 64 << 20;
/// Disk operations per second per vCPU, each way.
const IO_IOPS_PER_VCPU: u64 = 2_000;

const NO_BLKIO_WEIGHT: &str = "; no per-tenant I/O weights (the blkio hierarchy has no \
                               blkio.weight with this kernel's I/O scheduler)";

/// What a VM of a size may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmLimits {
    /// CPU time per period, in microseconds.
    pub cpu_quota_us: u64,
    pub cpu_period_us: u64,
    pub memory_bytes: u64,
    /// Disk bytes per second, read and write each.
    pub io_bps: u64,
    /// Disk operations per second, read and write each.
    pub io_iops: u64,
}

impl VmLimits {
    pub fn for_size(size: &Size) -> Self {
        let percent = u64::from(size.vcpus) * 100 + CPU_MARGIN_PERCENT;
        Self {
            cpu_quota_us: PERIOD_US * percent / 100,
            cpu_period_us: PERIOD_US,
            memory_bytes: (size.memory_mib + KERNEL_RESERVE_MIB + QEMU_OVERHEAD_MIB) << 20,
            io_bps: u64::from(size.vcpus) * IO_BPS_PER_VCPU,
            io_iops: u64::from(size.vcpus) * IO_IOPS_PER_VCPU,
        }
    }
}

/// `--vm-cgroups`: whether VMs are put in groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// When the node has usable cgroups; else VMs run unconfined, with a warning at startup.
    Auto,
    /// Refuse to start without usable cgroups.
    On,
    Off,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Mode::Auto),
            "on" => Ok(Mode::On),
            "off" => Ok(Mode::Off),
            _ => Err(format!("{s:?}: use auto, on or off")),
        }
    }
}

#[derive(Debug, Clone)]
enum Layout {
    /// The base group in the unified hierarchy; `io` when its io controller is there.
    V2 { base: PathBuf, io: bool },
    /// The base group in each v1 hierarchy; `blkio` when that hierarchy is mounted.
    V1 {
        cpu: PathBuf,
        memory: PathBuf,
        blkio: Option<Blkio>,
    },
}

#[derive(Debug, Clone)]
struct Blkio {
    base: PathBuf,
    /// `blkio.weight` is there (CFQ or BFQ kernels; not with blk-mq's other schedulers).
    weight: bool,
    /// The `blkio.throttle.*` files are there.
    throttle: bool,
}

/// The node's VM groups, as found at startup.
#[derive(Debug, Clone)]
pub struct Cgroups {
    layout: Layout,
    /// The whole disk (`major:minor`) that holds the data root, or why there is none.
    disk: Result<String, String>,
}

impl Cgroups {
    /// Finds the hierarchies this process is in and makes the base group of node `node` in
    /// them, and the disk under `data_root` (VMs' disks are files there); why not when that
    /// cannot be done.
    pub fn detect(node: &str, data_root: &Path) -> Result<Self, String> {
        let disk = disk_of(data_root, Path::new("/sys/dev/block"));
        let base_name = format!("hyper-{}", &node[..node.len().min(12)]);
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("reading /proc/self/cgroup: {e}"))?;
        let mounts = parse_mounts(&mounts);
        let own = parse_own(&own);
        if let Some(layout) = v2(&mounts, &own, &base_name)? {
            return Ok(Self { layout, disk });
        }
        let base_in = |controller: &str| -> Option<PathBuf> {
            let mount = mounts
                .iter()
                .find(|m| m.v1_controllers.iter().any(|c| c == controller))?;
            let path = own
                .iter()
                .find(|(controllers, _)| controllers.iter().any(|c| c == controller))
                .map_or("/", |(_, p)| p.as_str());
            Some(join(&mount.path, path).join(&base_name))
        };
        let (Some(cpu), Some(memory)) = (base_in("cpu"), base_in("memory")) else {
            return Err(
                "the node has neither cgroup v2 with the cpu and memory controllers nor the \
                 cgroup v1 cpu and memory hierarchies"
                    .into(),
            );
        };
        let blkio = base_in("blkio").map(|base| {
            let parent = base.parent().unwrap_or(&base);
            Blkio {
                weight: parent.join("blkio.weight").exists(),
                throttle: parent.join("blkio.throttle.read_bps_device").exists(),
                base,
            }
        });
        for dir in [Some(&cpu), Some(&memory), blkio.as_ref().map(|b| &b.base)]
            .into_iter()
            .flatten()
        {
            std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        Ok(Self {
            layout: Layout::V1 { cpu, memory, blkio },
            disk,
        })
    }

    /// One line for the log: which hierarchy and where, and whether and why not disk I/O is
    /// limited.
    pub fn describe(&self) -> String {
        let io = match (&self.layout, &self.disk) {
            (_, Err(why)) => format!("no disk I/O limits: {why}"),
            (Layout::V2 { io: false, .. }, _) => {
                "no disk I/O limits: the io controller is not in the unified hierarchy".into()
            }
            (Layout::V1 { blkio: None, .. }, _) => {
                "no disk I/O limits: no v1 blkio hierarchy".into()
            }
            (Layout::V1 { blkio: Some(b), .. }, _) if !b.throttle => {
                "no disk I/O limits: the v1 blkio hierarchy has no throttle files".into()
            }
            (Layout::V2 { .. }, Ok(disk)) => format!("disk I/O limits on {disk} (io.max)"),
            (Layout::V1 { .. }, Ok(disk)) => format!(
                "disk I/O limits on {disk} (blkio.throttle; v1 leaves the flusher threads' \
                 write-back of QEMU's buffered writes unthrottled)"
            ),
        };
        match &self.layout {
            Layout::V2 { base, .. } => format!("cgroup v2 at {}; {io}", base.display()),
            Layout::V1 { cpu, memory, blkio } => format!(
                "cgroup v1 at {} and {}{}; {io}{}",
                cpu.display(),
                memory.display(),
                match blkio {
                    Some(b) => format!(" and {}", b.base.display()),
                    None => String::new(),
                },
                match blkio {
                    Some(b) if !b.weight => NO_BLKIO_WEIGHT,
                    _ => "",
                }
            ),
        }
    }

    /// The disk whose I/O the VMs' groups limit (`major:minor`), if any.
    pub fn io_disk(&self) -> Option<&str> {
        self.disk.as_deref().ok()
    }

    /// Puts `pids` (a VM's supervisor and QEMU) in the group of container `id` of `tenant`,
    /// made with the limits of `size` if it is not there yet.
    pub fn confine(&self, tenant: &str, id: &str, size: &Size, pids: &[i32]) -> io::Result<()> {
        self.prepare(tenant, id, size)?
            .iter()
            .try_for_each(|dir| move_into(dir, pids))
    }

    /// The group of container `id` of `tenant` with the limits of `size`, made if missing: its
    /// directory in each hierarchy.
    pub fn prepare(&self, tenant: &str, id: &str, size: &Size) -> io::Result<Vec<PathBuf>> {
        let limits = VmLimits::for_size(size);
        let cpu_max = format!("{} {}", limits.cpu_quota_us, limits.cpu_period_us);
        match &self.layout {
            Layout::V2 { base, io } => {
                let controllers = if *io {
                    "+cpu +memory +io"
                } else {
                    "+cpu +memory"
                };
                // Another hyperd's stop may have removed an empty base.
                make_group(base)?;
                write(base, "cgroup.subtree_control", controllers)?;
                let tenant_dir = base.join(tenant_group(tenant));
                make_group(&tenant_dir)?;
                write(&tenant_dir, "cpu.weight", "100")?;
                if *io {
                    // io.weight is there with the iocost controller only.
                    write(&tenant_dir, "io.weight", "default 100").or_else(ignore_missing)?;
                }
                write(&tenant_dir, "cgroup.subtree_control", controllers)?;
                let dir = tenant_dir.join(id);
                make_group(&dir)?;
                write(&dir, "cpu.max", &cpu_max)?;
                write(&dir, "memory.max", &limits.memory_bytes.to_string())?;
                write(&dir, "memory.swap.max", "0").or_else(ignore_missing)?;
                if let (true, Ok(disk)) = (io, &self.disk) {
                    let (bps, iops) = (limits.io_bps, limits.io_iops);
                    let max = format!("{disk} rbps={bps} wbps={bps} riops={iops} wiops={iops}");
                    warn_io(id, write(&dir, "io.max", &max));
                }
                Ok(vec![dir])
            }
            Layout::V1 { cpu, memory, blkio } => {
                let group = |base: &Path| {
                    // Another hyperd's stop may have removed an empty base.
                    make_group(base)?;
                    let tenant_dir = base.join(tenant_group(tenant));
                    make_group(&tenant_dir)?;
                    let dir = tenant_dir.join(id);
                    make_group(&dir)?;
                    Ok::<_, io::Error>((tenant_dir, dir))
                };
                let (tenant_cpu, cpu_dir) = group(cpu)?;
                write(&tenant_cpu, "cpu.shares", "1024")?;
                write(&cpu_dir, "cpu.cfs_period_us", &PERIOD_US.to_string())?;
                write(
                    &cpu_dir,
                    "cpu.cfs_quota_us",
                    &limits.cpu_quota_us.to_string(),
                )?;
                let (_, memory_dir) = group(memory)?;
                write(
                    &memory_dir,
                    "memory.limit_in_bytes",
                    &limits.memory_bytes.to_string(),
                )?;
                let mut dirs = vec![cpu_dir, memory_dir];
                if let Some(blkio) = blkio {
                    let (tenant_blkio, blkio_dir) = group(&blkio.base)?;
                    if blkio.weight {
                        write(&tenant_blkio, "blkio.weight", "500")?;
                    }
                    if let (true, Ok(disk)) = (blkio.throttle, &self.disk) {
                        let bps = format!("{disk} {}", limits.io_bps);
                        let iops = format!("{disk} {}", limits.io_iops);
                        let throttle = ["read", "write"].into_iter().try_for_each(|way| {
                            let file = |what| format!("blkio.throttle.{way}_{what}_device");
                            write(&blkio_dir, &file("bps"), &bps)?;
                            write(&blkio_dir, &file("iops"), &iops)
                        });
                        warn_io(id, throttle);
                    }
                    dirs.push(blkio_dir);
                }
                Ok(dirs)
            }
        }
    }

    /// Puts the group of container `id` of `tenant` at idle priority (`cpu.idle`, Linux 5.15+):
    /// a killed VM's exit then takes only CPU nothing else wants. SCHED_IDLE on its threads
    /// alone does not do it: the group keeps its full weight against its siblings and hyperd.
    /// Best effort: an older kernel, or a group already gone, has nothing to change.
    pub fn background(&self, tenant: &str, id: &str) {
        let cpu = match &self.layout {
            Layout::V2 { base, .. } => base,
            Layout::V1 { cpu, .. } => cpu,
        };
        let dir = cpu.join(tenant_group(tenant)).join(id);
        let _ = write(&dir, "cpu.idle", "1");
    }

    /// Removes the group of container `id` (its VM has exited), and its tenant's when that was
    /// the last. Busy (`EBUSY`) while a process is still in it: a VM killed a moment ago
    /// takes a while to exit, so the caller tries again.
    pub fn release(&self, tenant: &str, id: &str) -> io::Result<()> {
        for base in self.bases() {
            let tenant_dir = base.join(tenant_group(tenant));
            let dir = tenant_dir.join(id);
            match std::fs::remove_dir(&dir) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("removing the cgroup {}: {e}", dir.display()),
                    ))
                }
                Ok(()) => {}
            }
            // Another VM of the tenant keeps it busy: fine.
            let _ = std::fs::remove_dir(&tenant_dir);
        }
        Ok(())
    }

    /// Removes the groups of containers that `claimed` does not know (and their tenants' when
    /// that leaves them empty); one with a process still in it stays.
    pub fn remove_unclaimed(&self, claimed: impl Fn(&str) -> bool) {
        for base in self.bases() {
            let Ok(tenants) = std::fs::read_dir(base) else {
                continue;
            };
            let tenant_groups = tenants.flatten().filter(|t| {
                t.path().is_dir() && t.file_name().to_string_lossy().starts_with(TENANT_PREFIX)
            });
            for tenant in tenant_groups {
                let Ok(groups) = std::fs::read_dir(tenant.path()) else {
                    continue;
                };
                for group in groups.flatten().filter(|g| g.path().is_dir()) {
                    let id = group.file_name().to_string_lossy().to_string();
                    if !claimed(&id) {
                        match std::fs::remove_dir(group.path()) {
                            Ok(()) => tracing::info!("removed leftover VM group {id}"),
                            Err(e) => tracing::warn!("leftover VM group {id}: {e}"),
                        }
                    }
                }
                let _ = std::fs::remove_dir(tenant.path());
            }
        }
    }

    /// At hyperd's stop: the base group goes when no VM is left in it (they carry on across a
    /// restart, and keep it then).
    pub fn close(&self) {
        for base in self.bases() {
            let _ = std::fs::remove_dir(base);
        }
    }

    fn bases(&self) -> Vec<&Path> {
        match &self.layout {
            Layout::V2 { base, .. } => vec![base],
            Layout::V1 { cpu, memory, blkio } => {
                [Some(cpu), Some(memory), blkio.as_ref().map(|b| &b.base)]
                    .into_iter()
                    .flatten()
                    .map(PathBuf::as_path)
                    .collect()
            }
        }
    }
}

const TENANT_PREFIX: &str = "tenant-";

fn tenant_group(tenant: &str) -> String {
    // Tenant names are lowercase letters, digits and dashes: a safe path component.
    format!("{TENANT_PREFIX}{tenant}")
}

/// The unified hierarchy when it has the cpu and memory controllers, with the base group made
/// and those controllers enabled down to it.
fn v2(
    mounts: &[Mount],
    own: &[(Vec<String>, String)],
    base_name: &str,
) -> Result<Option<Layout>, String> {
    let Some(mount) = mounts.iter().find(|m| m.v2) else {
        return Ok(None);
    };
    let controllers =
        std::fs::read_to_string(mount.path.join("cgroup.controllers")).unwrap_or_default();
    let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
    if !has("cpu") || !has("memory") {
        return Ok(None);
    }
    let io = has("io");
    let path = own
        .iter()
        .find(|(controllers, _)| controllers.is_empty())
        .map_or("/", |(_, p)| p.as_str());
    let own_dir = join(&mount.path, path);
    let base = own_dir.join(base_name);
    let enable = if io {
        "+cpu +memory +io"
    } else {
        "+cpu +memory"
    };
    // cgroup v2 lets a group with processes of its own (hyperd's, unless it is the root)
    // hand no controller down: hyperd needs a group delegated to it, such as a systemd unit's
    // with Delegate=yes and hyperd moved to a leaf of it.
    write(&own_dir, "cgroup.subtree_control", enable).map_err(|e| {
        format!(
            "enabling the cpu and memory controllers below hyperd's cgroup {}: {e} (run \
             hyperd in a cgroup delegated to it, without other processes)",
            own_dir.display()
        )
    })?;
    make_group(&base).map_err(|e| format!("creating {}: {e}", base.display()))?;
    write(&base, "cgroup.subtree_control", enable)
        .map_err(|e| format!("enabling controllers in {}: {e}", base.display()))?;
    Ok(Some(Layout::V2 { base, io }))
}

/// The whole disk (`major:minor`) under the filesystem of `path`, looked up in `sys_block`
/// (/sys/dev/block): the kernel throttles whole disks only, so a partition gives its disk. Why
/// not when the filesystem has no block device.
fn disk_of(path: &Path, sys_block: &Path) -> Result<String, String> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let no_disk = || {
        format!(
            "{} is on device {major}:{minor}, which is no block device (tmpfs, overlayfs, \
             btrfs, a network filesystem?)",
            path.display()
        )
    };
    if major == 0 {
        return Err(no_disk());
    }
    let sys = sys_block.join(format!("{major}:{minor}"));
    if !sys.exists() {
        return Err(no_disk());
    }
    if !sys.join("partition").exists() {
        return Ok(format!("{major}:{minor}"));
    }
    // /sys/dev/block/M:m links to .../block/DISK/PART: the disk is the parent.
    let part = std::fs::canonicalize(&sys).map_err(|e| format!("{}: {e}", sys.display()))?;
    let disk = part.parent().map(|d| d.join("dev")).unwrap_or_default();
    std::fs::read_to_string(&disk)
        .map(|s| s.trim().to_string())
        .map_err(|e| {
            format!(
                "the disk of partition {major}:{minor}: {}: {e}",
                disk.display()
            )
        })
}

struct Mount {
    path: PathBuf,
    v2: bool,
    v1_controllers: Vec<String>,
}

/// cgroup mounts of /proc/self/mountinfo: `ID PARENT MAJ:MIN ROOT POINT OPTS... - TYPE SRC SUPER`.
fn parse_mounts(mountinfo: &str) -> Vec<Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let point = left.split(' ').nth(4)?;
            let mut right = right.split(' ');
            let fstype = right.next()?;
            let options = right.nth(1).unwrap_or_default();
            let path = PathBuf::from(point);
            match fstype {
                "cgroup2" => Some(Mount {
                    path,
                    v2: true,
                    v1_controllers: Vec::new(),
                }),
                "cgroup" => Some(Mount {
                    path,
                    v2: false,
                    v1_controllers: options.split(',').map(str::to_string).collect(),
                }),
                _ => None,
            }
        })
        .collect()
}

/// /proc/self/cgroup: `N:controllers:path`, controllers empty for the unified hierarchy.
fn parse_own(cgroup: &str) -> Vec<(Vec<String>, String)> {
    cgroup
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            let controllers = controllers
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
            Some((controllers, path.to_string()))
        })
        .collect()
}

fn join(mount: &Path, path: &str) -> PathBuf {
    mount.join(path.trim_start_matches('/'))
}

fn make_group(dir: &Path) -> io::Result<()> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

fn write(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    std::fs::write(dir.join(file), value)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.join(file).display())))
}

/// A disk the kernel will not throttle (some virtual devices) costs the VM its I/O limit, not
/// its start.
fn warn_io(id: &str, written: io::Result<()>) {
    if let Err(e) = written {
        tracing::warn!("the VM of {id} runs without disk I/O limits: {e}");
    }
}

fn ignore_missing(e: io::Error) -> io::Result<()> {
    match e.kind() {
        io::ErrorKind::NotFound => Ok(()),
        _ => Err(e),
    }
}

fn move_into(dir: &Path, pids: &[i32]) -> io::Result<()> {
    for pid in pids {
        match write(dir, "cgroup.procs", &pid.to_string()) {
            // It exited meanwhile: nothing to confine.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            other => other?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_the_size() {
        let cases = [
            ("s4", 125_000, (512 + 40 + 256) << 20, 1),
            ("m2", 225_000, (2048 + 40 + 256) << 20, 2),
            ("l3", 825_000, (16384 + 40 + 256) << 20, 8),
        ];
        for (i, (size, quota, memory, vcpus)) in cases.into_iter().enumerate() {
            let l = VmLimits::for_size(&crate::sizes::lookup(size).unwrap());
            assert_eq!(l.cpu_quota_us, quota, "test[{i}]");
            assert_eq!(l.cpu_period_us, 100_000, "test[{i}]");
            assert_eq!(l.memory_bytes, memory, "test[{i}]");
            assert_eq!(l.io_bps, vcpus * (64 << 20), "test[{i}]");
            assert_eq!(l.io_iops, vcpus * 2000, "test[{i}]");
        }
    }

    /// A fake /sys/dev/block with disk 8:0 and its partition 8:1, and a file standing for the
    /// data root on each.
    #[test]
    fn the_disk_under_a_path_is_found() {
        use std::os::unix::fs::MetadataExt;
        let tmp = std::env::temp_dir().join(format!("hyper-cg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        // The real device of the temp directory, as a disk or as a partition of disk 8:0.
        let dev = std::fs::metadata(std::env::temp_dir()).unwrap().dev();
        let (major, minor) = (libc::major(dev), libc::minor(dev));
        let sys = tmp.join("sys");
        let block = tmp.join("block/sda");
        std::fs::create_dir_all(&sys).unwrap();
        std::fs::create_dir_all(block.join("sda1")).unwrap();
        std::fs::write(block.join("dev"), "8:0\n").unwrap();
        let here = format!("{major}:{minor}");
        if major == 0 {
            let why = disk_of(&tmp, &sys).unwrap_err();
            assert!(why.contains("no block device"), "{why}");
        } else {
            // Not in the table: no block device known to the kernel.
            assert!(disk_of(&tmp, &sys).unwrap_err().contains("no block device"));
            std::os::unix::fs::symlink(&block, sys.join(&here)).unwrap();
            assert_eq!(disk_of(&tmp, &sys).unwrap(), here);
            std::fs::remove_file(sys.join(&here)).unwrap();
            std::fs::write(block.join("sda1/partition"), "1\n").unwrap();
            std::os::unix::fs::symlink(block.join("sda1"), sys.join(&here)).unwrap();
            assert_eq!(disk_of(&tmp, &sys).unwrap(), "8:0");
        }
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn mounts_and_own_groups_are_parsed() {
        let mountinfo = "\
30 25 0:26 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
31 25 0:27 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
32 25 0:28 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
33 25 0:29 / /proc rw - proc proc rw";
        let m = parse_mounts(mountinfo);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].path, Path::new("/sys/fs/cgroup/cpu"));
        assert!(m[0].v1_controllers.contains(&"cpu".to_string()));
        assert!(m[2].v2);
        let own = parse_own("4:memory:/process_api/ab\n1:cpu,cpuacct:/\n0::/\n");
        assert_eq!(
            own[0],
            (vec!["memory".to_string()], "/process_api/ab".into())
        );
        assert_eq!(own[1].0, vec!["cpu".to_string(), "cpuacct".to_string()]);
        assert_eq!(own[2], (vec![], "/".into()));
        assert_eq!(
            join(Path::new("/sys/fs/cgroup/memory"), "/process_api/ab"),
            Path::new("/sys/fs/cgroup/memory/process_api/ab")
        );
    }
}
