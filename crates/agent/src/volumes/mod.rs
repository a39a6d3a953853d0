//! Volumes: further virtio-blk disks of the VM, each holding an ext4 file system the host made,
//! mounted into the container's root at `Start` (after the root disk, before the process, so
//! that the process's mount namespace, copied from the agent's, has them).
//!
//! A volume's disk is found by its virtio serial ([`agent_proto::volume_serial`]), never by its
//! name: `vdb`, `vdc`... follow probe order. Every VM has the same slots, so a VM restored from
//! a template probed a placeholder in each at boot; the host attaches the real disk behind the
//! slot and triggers a config-change interrupt, from which the guest learns the new capacity.
//! The agent waits for that capacity before it touches the disk, then drops whatever the block
//! layer cached of the placeholder (as `rootfs` does for the root disk).
//!
//! Copy-up ([`copy`]) mounts the volume at a staging point of the agent's first and moves the
//! mount onto its target when the copy is done. `Freeze` and `Thaw` are [`freeze`]'s.

mod copy;
mod freeze;
pub mod target;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agent_proto::{volume_serial, VolumeMount};
use nix::mount::{mount, MsFlags};

pub use self::freeze::Freezer;
use self::freeze::Mounted;
use self::target::TargetError;
use crate::init::log;
use crate::rootfs;

/// Where the kernel lists block devices.
const SYS_BLOCK: &str = "/sys/block";

/// How long a volume's disk has to show up with its capacity (as long as the root disk gets).
const DISK_PATIENCE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("volume target {target:?}")]
    Target {
        target: String,
        #[source]
        source: TargetError,
    },
    #[error("volume {target}: no disk with serial {serial} appeared")]
    NoDisk { target: String, serial: String },
    #[error("volume {target}: disk {disk} (serial {serial}) has {have} bytes, not {want}")]
    Capacity {
        target: String,
        disk: String,
        serial: String,
        have: u64,
        want: u64,
    },
    #[error("volume {target}: device node {device}")]
    Node {
        target: String,
        device: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("volume {target}: dropping the cached blocks of {device}")]
    Flush {
        target: String,
        device: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mount {device} on volume target {target}")]
    Mount {
        target: String,
        device: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("volume {target}: copying the image's files into it")]
    CopyUp {
        target: String,
        #[source]
        source: copy::CopyError,
    },
    #[error("volume {target}: opening its root")]
    Open {
        target: String,
        #[source]
        source: std::io::Error,
    },
}

/// Mount `volumes`, in order, under `root` (the container's root in the agent's namespace);
/// what was mounted, for the [`Freezer`]. Blocking: waits for the disks, may copy files.
pub fn mount_all(root: &Path, volumes: &[VolumeMount]) -> Result<Vec<Mounted>, VolumeError> {
    volumes.iter().map(|v| mount_one(root, v)).collect()
}

fn mount_one(root: &Path, v: &VolumeMount) -> Result<Mounted, VolumeError> {
    let t0 = Instant::now();
    let bad_target = |source| VolumeError::Target {
        target: v.target.clone(),
        source,
    };
    let target = target::normalize(&v.target).map_err(bad_target)?;
    let serial = volume_serial(v.slot);
    let disk = wait_for_disk(Path::new(SYS_BLOCK), &serial, v.size_bytes, DISK_PATIENCE)
        .map_err(|e| e.for_target(&target, &serial, v.size_bytes))?;
    let device = device_node(&disk).map_err(|source| VolumeError::Node {
        target: target.clone(),
        device: dev_path(&disk),
        source,
    })?;
    rootfs::forget_cached_blocks(&device).map_err(|source| VolumeError::Flush {
        target: target.clone(),
        device: device.clone(),
        source,
    })?;
    let dir = target::resolve(root, &target).map_err(bad_target)?;
    if v.copy_up && !v.read_only {
        mount_copied_up(&device, &dir, v.slot, &target)?;
    } else {
        mount_ext4(&device, &dir, v.read_only).map_err(|source| VolumeError::Mount {
            target: target.clone(),
            device: device.clone(),
            source,
        })?;
    }
    if !v.read_only {
        if let Err(e) = rootfs::grow(&device.to_string_lossy(), &dir) {
            log!("volume {target}: growing to the disk: {e} (carrying on)");
        }
    }
    let root = std::fs::File::open(&dir).map_err(|source| VolumeError::Open {
        target: target.clone(),
        source,
    })?;
    log!(
        "volume {target}: {} mounted{} in {} ms",
        device.display(),
        if v.read_only { " read-only" } else { "" },
        t0.elapsed().as_millis()
    );
    Ok(Mounted { target, root })
}

/// Mount the volume at a staging point of the agent's, copy the image's directory `dir` into
/// it when it is empty ([`copy::up`]), then move the mount onto `dir`.
fn mount_copied_up(device: &Path, dir: &Path, slot: u8, target: &str) -> Result<(), VolumeError> {
    let mount_error = |source| VolumeError::Mount {
        target: target.to_string(),
        device: device.to_path_buf(),
        source,
    };
    let staging = PathBuf::from(format!("/run/vol-{slot}"));
    let _ = std::fs::create_dir_all(&staging);
    mount_ext4(device, &staging, false).map_err(mount_error)?;
    let result = match copy::up(dir, &staging) {
        Ok(copied) => {
            if copied {
                log!("volume {target}: copied the image's files into it");
            }
            mount(
                Some(&staging),
                dir,
                None::<&str>,
                MsFlags::MS_MOVE,
                None::<&str>,
            )
            .map_err(mount_error)
        }
        Err(source) => Err(VolumeError::CopyUp {
            target: target.to_string(),
            source,
        }),
    };
    if result.is_err() {
        let _ = nix::mount::umount2(&staging, nix::mount::MntFlags::MNT_DETACH);
    }
    let _ = std::fs::remove_dir(&staging);
    result
}

/// The root disk's mount flags, read-only when asked.
fn mount_ext4(device: &Path, at: &Path, read_only: bool) -> nix::Result<()> {
    let flags = if read_only {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    mount(
        Some(device),
        at,
        Some("ext4"),
        flags,
        Some(crate::rootfs::EXT4_OPTIONS),
    )
}

/// Why [`wait_for_disk`] gave up.
#[derive(Debug, PartialEq, Eq)]
enum DiskWait {
    NotFound,
    /// The disk (by name) and the capacity it had at the end.
    WrongCapacity(String, u64),
}

impl DiskWait {
    fn for_target(self, target: &str, serial: &str, want: u64) -> VolumeError {
        let (target, serial) = (target.to_string(), serial.to_string());
        match self {
            DiskWait::NotFound => VolumeError::NoDisk { target, serial },
            DiskWait::WrongCapacity(disk, have) => VolumeError::Capacity {
                target,
                disk,
                serial,
                have,
                want,
            },
        }
    }
}

/// The name (`vdb`...) of the disk with this serial, once it reports `bytes` of capacity (0:
/// any), polling for up to `patience` (see the module docs).
fn wait_for_disk(
    sys_block: &Path,
    serial: &str,
    bytes: u64,
    patience: Duration,
) -> Result<String, DiskWait> {
    let deadline = Instant::now() + patience;
    loop {
        let found = find_disk(sys_block, serial);
        let have = found.as_deref().and_then(|d| capacity(sys_block, d));
        match (found, have) {
            (Some(disk), Some(have)) if bytes == 0 || have == bytes => return Ok(disk),
            (None, _) if Instant::now() >= deadline => return Err(DiskWait::NotFound),
            (Some(disk), have) if Instant::now() >= deadline => {
                return Err(DiskWait::WrongCapacity(disk, have.unwrap_or(0)))
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The virtio disk (`<sys_block>/vd*`) whose `serial` reads `serial`.
fn find_disk(sys_block: &Path, serial: &str) -> Option<String> {
    std::fs::read_dir(sys_block)
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("vd"))
        .find(|name| {
            std::fs::read_to_string(sys_block.join(name).join("serial"))
                .is_ok_and(|s| s.trim() == serial)
        })
}

/// A disk's capacity in bytes (`size` counts 512-byte sectors whatever the block size).
fn capacity(sys_block: &Path, disk: &str) -> Option<u64> {
    let sectors = std::fs::read_to_string(sys_block.join(disk).join("size")).ok()?;
    sectors.trim().parse::<u64>().ok()?.checked_mul(512)
}

fn dev_path(disk: &str) -> PathBuf {
    Path::new("/dev").join(disk)
}

/// `/dev/<disk>`, made from the numbers in sysfs when devtmpfs has not made it already.
fn device_node(disk: &str) -> std::io::Result<PathBuf> {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    let path = dev_path(disk);
    if path.exists() {
        return Ok(path);
    }
    let numbers = std::fs::read_to_string(Path::new(SYS_BLOCK).join(disk).join("dev"))?;
    let (major, minor) = parse_dev_numbers(&numbers).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("device numbers {numbers:?} in sysfs"),
        )
    })?;
    mknod(
        &path,
        SFlag::S_IFBLK,
        Mode::from_bits_truncate(0o600),
        makedev(major, minor),
    )?;
    Ok(path)
}

/// "254:16\n" -> (254, 16), as sysfs writes a device's `dev`.
fn parse_dev_numbers(s: &str) -> Option<(u64, u64)> {
    let (major, minor) = s.trim().split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake /sys/block: (name, serial, sectors); serial `None` has no serial file.
    fn sys_block(name: &str, disks: &[(&str, Option<&str>, u64)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "hyper-agent-sysblock-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        for (disk, serial, sectors) in disks {
            let d = dir.join(disk);
            std::fs::create_dir_all(&d).unwrap();
            if let Some(s) = serial {
                std::fs::write(d.join("serial"), format!("{s}\n")).unwrap();
            }
            std::fs::write(d.join("size"), format!("{sectors}\n")).unwrap();
        }
        dir
    }

    #[test]
    fn disk_by_serial() {
        let sys = sys_block(
            "serial",
            &[
                ("vda", None, 20_971_520),
                ("loop0", Some("hyper-vol0"), 8),
                ("vdb", Some("hyper-vol1"), 2048),
                ("vdc", Some("hyper-vol0"), 4096),
            ],
        );
        let cases: [(&str, Option<&str>); 3] = [
            ("hyper-vol0", Some("vdc")),
            ("hyper-vol1", Some("vdb")),
            ("hyper-vol2", None),
        ];
        for (i, (serial, want)) in cases.into_iter().enumerate() {
            assert_eq!(find_disk(&sys, serial).as_deref(), want, "test[{i}]");
        }
        assert_eq!(capacity(&sys, "vdc"), Some(4096 * 512));
        assert_eq!(capacity(&sys, "vdz"), None);
        std::fs::remove_dir_all(&sys).unwrap();
    }

    #[test]
    fn waits_for_the_capacity() {
        let sys = sys_block("wait", &[("vdb", Some("hyper-vol0"), 8)]);
        let patience = Duration::from_millis(100);
        let wait = |bytes| wait_for_disk(&sys, "hyper-vol0", bytes, patience);
        assert_eq!(wait(4096), Ok("vdb".to_string()));
        assert_eq!(wait(0), Ok("vdb".to_string()));
        assert_eq!(wait(8192), Err(DiskWait::WrongCapacity("vdb".into(), 4096)));
        assert_eq!(
            wait_for_disk(&sys, "hyper-vol3", 0, patience),
            Err(DiskWait::NotFound)
        );
        // The capacity changes while the agent waits (the config-change interrupt).
        let size = sys.join("vdb/size");
        let grow = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            std::fs::write(size, "16\n").unwrap();
        });
        let r = wait_for_disk(&sys, "hyper-vol0", 8192, Duration::from_secs(5));
        grow.join().unwrap();
        assert_eq!(r, Ok("vdb".to_string()));
        std::fs::remove_dir_all(&sys).unwrap();
    }

    #[test]
    fn dev_numbers() {
        assert_eq!(parse_dev_numbers("254:16\n"), Some((254, 16)));
        assert_eq!(parse_dev_numbers("254"), None);
        assert_eq!(parse_dev_numbers("a:1"), None);
    }

    #[test]
    fn error_messages_name_the_volume() {
        let e = DiskWait::WrongCapacity("vdb".into(), 4096).for_target("/data", "hyper-vol0", 8192);
        assert_eq!(
            e.to_string(),
            "volume /data: disk vdb (serial hyper-vol0) has 4096 bytes, not 8192"
        );
        let e = VolumeError::Target {
            target: "/a/../b".into(),
            source: TargetError::DotDot,
        };
        assert_eq!(
            crate::error_chain(&e),
            "volume target \"/a/../b\": '..' is not allowed"
        );
    }
}
