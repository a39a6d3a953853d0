//! Preparing the container's root filesystem when `Start` arrives (never before: a VM restored
//! from a template has the container's disk behind the slot only from then on): drop what the
//! block layer cached of the device, mount the ext4 root disk, grow it to the device if it is
//! smaller, set the hostname and the files that carry it and the network (`/etc/hosts`,
//! `/etc/resolv.conf`). A standby prepared for an image ([`mount_read_only`], `PrepareRoot`)
//! has the root mounted read-only already: `Start` remounts it read-write.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::mount::{mount, MsFlags};

use agent_proto::NetConfig;

use crate::etc;
use crate::init::log;

/// Where the container's root disk is mounted in the agent's namespace.
pub const ROOTFS: &str = "/run/rootfs";

/// The ext4 options of the root and the volumes. Since Linux 5.9 a read-write mount has a
/// kernel thread read every block group's bitmap ahead (80 for a 10 GiB disk) for the
/// allocator: under TCG, I/O and CPU that a container's first seconds pay for (a claim of a
/// standby translated about 150 blocks of the kernel fewer without it), when its allocator
/// reads the few it needs anyway.
pub const EXT4_OPTIONS: &str = "no_prefetch_block_bitmaps";

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("root device {0} did not appear")]
    NoDevice(String),
    #[error("mount {0} on {ROOTFS}")]
    Mount(String, #[source] nix::Error),
    #[error("dropping the cached blocks of {0}")]
    Flush(String, #[source] std::io::Error),
    #[error("remounting {ROOTFS} read-write")]
    Remount(#[source] nix::Error),
    #[error("unmounting the root prepared before")]
    Unmount(#[source] nix::Error),
}

/// Whether [`mount_read_only`] left a root mounted at [`ROOTFS`] that no `Start` has taken yet.
static MOUNTED_READ_ONLY: AtomicBool = AtomicBool::new(false);

// EXT4_IOC_RESIZE_FS = _IOW('f', 16, __u64); BLKGETSIZE64 = _IOR(0x12, 114, size_t).
nix::ioctl_write_ptr!(ext4_resize_fs, b'f', 16, u64);
nix::ioctl_read!(blk_getsize64, 0x12, 114, u64);
// BLKFLSBUF = _IO(0x12, 97): write back and drop the device's buffer cache.
nix::ioctl_none!(blk_flsbuf, 0x12, 97);

/// What `Start` says about the container's root.
pub struct Target {
    pub device: String,
    pub hostname: String,
    pub machine_id: String,
    /// For `/etc/hosts` and `/etc/resolv.conf` (the interfaces are `network`'s job).
    pub network: Option<NetConfig>,
    /// The host kept the disk [`mount_read_only`] mounted behind the slot.
    pub root_mounted: bool,
}

pub fn prepare(t: &Target) -> Result<(), RootfsError> {
    let hostname = t.hostname.as_str();
    let t0 = Instant::now();
    let (t_device, t_mount) = mount_or_remount(t)?;
    let device = device_or_default(&t.device);
    if let Err(e) = grow(device, Path::new(ROOTFS)) {
        log!("growing {device}: {e} (carrying on)");
    }
    let t_grow = t0.elapsed();
    let mid = Path::new(ROOTFS).join("etc/machine-id");
    if !t.machine_id.is_empty() && mid.is_file() {
        let _ = std::fs::write(&mid, format!("{}\n", t.machine_id));
    }
    let root = Path::new(ROOTFS);
    if !hostname.is_empty() {
        if let Err(e) = nix::unistd::sethostname(hostname) {
            log!("sethostname: {e}");
        }
        let _ = etc::write(&root.join("etc/hostname"), &format!("{hostname}\n"));
    }
    write_network_files(root, hostname, t.network.as_ref());
    log!(
        "root ready in {} ms: device {} ms, mount {} ms, grow {} ms",
        t0.elapsed().as_millis(),
        t_device.as_millis(),
        (t_mount - t_device).as_millis(),
        (t_grow - t_mount).as_millis()
    );
    Ok(())
}

/// Only mount the root disk at [`ROOTFS`], changing nothing on it (a helper VM that serves a
/// stopped container's archive streams).
pub fn mount_root(device: &str) -> Result<(), RootfsError> {
    mount_device(device, MsFlags::empty()).map(|_| ())
}

/// Mount the root disk at [`ROOTFS`] read-only, ahead of `Start` (a standby prepared for an
/// image): nothing on it changes until `Start` remounts it read-write.
pub fn mount_read_only(device: &str) -> Result<(), RootfsError> {
    mount_device(device, MsFlags::MS_RDONLY)?;
    MOUNTED_READ_ONLY.store(true, Ordering::SeqCst);
    Ok(())
}

/// Whether [`mount_read_only`] left a root mounted that no `Start` has taken yet.
pub fn mounted_read_only() -> bool {
    MOUNTED_READ_ONLY.load(Ordering::SeqCst)
}

/// Wait (at most 5 s) until no ext4 file system of `device` is alive any more: one unmounted in
/// the agent's namespace may live on a moment in a dying process's, and its last writes must
/// not reach whatever disk goes behind the slot next.
pub fn wait_released(device: &str) -> Result<(), String> {
    let name = Path::new(device_or_default(device))
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let alive = Path::new("/sys/fs/ext4").join(name);
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive.exists() {
        if Instant::now() > deadline {
            return Err(format!(
                "{} still in use 5 s after its unmount",
                alive.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// `Start`'s root: the one [`mount_read_only`] mounted, remounted read-write, when the host
/// kept that disk; otherwise a fresh mount (whatever was mounted before unmounted first). The
/// times at which the device was ready and mounted.
fn mount_or_remount(t: &Target) -> Result<(Duration, Duration), RootfsError> {
    if MOUNTED_READ_ONLY.swap(false, Ordering::SeqCst) {
        if t.root_mounted {
            let t0 = Instant::now();
            mount(
                None::<&str>,
                ROOTFS,
                None::<&str>,
                MsFlags::MS_REMOUNT,
                Some(EXT4_OPTIONS),
            )
            .map_err(RootfsError::Remount)?;
            return Ok((Duration::ZERO, t0.elapsed()));
        }
        nix::mount::umount(ROOTFS).map_err(RootfsError::Unmount)?;
    }
    mount_device(&t.device, MsFlags::empty())
}

fn device_or_default(device: &str) -> &str {
    if device.is_empty() {
        "/dev/vda"
    } else {
        device
    }
}

/// Wait for the device, forget its cached blocks and mount it with `flags`: the times at which
/// the device was ready and mounted.
fn mount_device(device: &str, flags: MsFlags) -> Result<(Duration, Duration), RootfsError> {
    let device = device_or_default(device);
    let t0 = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !Path::new(device).exists() {
        if Instant::now() > deadline {
            return Err(RootfsError::NoDevice(device.to_string()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // A guest restored from a template probed the template's placeholder (zeros, same size)
    // at boot, and a standby rehearsed on its scratch disk: whatever the block layer read of
    // those is still cached and must not be taken for the container's blocks.
    forget_cached_blocks(Path::new(device))
        .map_err(|e| RootfsError::Flush(device.to_string(), e))?;
    let t_device = t0.elapsed();
    let _ = std::fs::create_dir_all(ROOTFS);
    mount(
        Some(device),
        ROOTFS,
        Some("ext4"),
        flags,
        Some(EXT4_OPTIONS),
    )
    .map_err(|e| RootfsError::Mount(device.to_string(), e))?;
    Ok((t_device, t0.elapsed()))
}

/// `/etc/hosts` and `/etc/resolv.conf` for the container's network (`None`: no network, the
/// image's hosts file with the hostname added).
fn write_network_files(root: &Path, hostname: &str, net: Option<&NetConfig>) {
    let hosts = root.join("etc/hosts");
    // A bad address has already failed the network set-up.
    let ip = net.and_then(|n| crate::network::parse_cidr(&n.ip).ok());
    let content = match (net, ip) {
        (Some(n), Some((ip, _))) => etc::networked_hosts_file(hostname, ip, &n.hosts),
        _ if hostname.is_empty() => return,
        _ => {
            let current = std::fs::read_to_string(&hosts).unwrap_or_default();
            etc::hosts_file(&current, hostname)
        }
    };
    if let Err(e) = etc::write(&hosts, &content) {
        log!("writing /etc/hosts: {e}");
    }
    if let Some(resolv) = net
        .map(|n| n.resolv_conf.as_str())
        .filter(|r| !r.is_empty())
    {
        if let Err(e) = etc::write(&root.join("etc/resolv.conf"), resolv) {
            log!("writing /etc/resolv.conf: {e}");
        }
    }
}

/// Write back and drop what the block layer cached of `device`: blocks read from whatever was
/// behind the slot before (a template's placeholder, a standby's scratch disk).
pub fn forget_cached_blocks(device: &Path) -> std::io::Result<()> {
    let dev = std::fs::File::open(device)?;
    // SAFETY: BLKFLSBUF takes no argument.
    unsafe { blk_flsbuf(dev.as_raw_fd()) }?;
    Ok(())
}

/// Grows the ext4 file system on `device`, mounted at `mount_point`, to the device's size
/// when it is smaller (a root disk made for a smaller image, a volume made from a smaller
/// snapshot). Online: ext4 grows while mounted.
pub fn grow(device: &str, mount_point: &Path) -> std::io::Result<()> {
    let dev = std::fs::File::open(device)?;
    let mut bytes: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer.
    unsafe { blk_getsize64(dev.as_raw_fd(), &mut bytes) }?;
    let mut sb = [0u8; 1024];
    std::os::unix::fs::FileExt::read_exact_at(&dev, &mut sb, 1024)?;
    let (current, bsize) = ext4_blocks(&sb);
    let blocks: u64 = bytes / bsize;
    if blocks <= current {
        return Ok(());
    }
    let dir = std::fs::File::open(mount_point)?;
    // SAFETY: EXT4_IOC_RESIZE_FS reads one u64 through the pointer.
    unsafe { ext4_resize_fs(dir.as_raw_fd(), &blocks) }?;
    log!("{device}: file system grown from {current} to {blocks} blocks of {bsize}");
    Ok(())
}

/// Block count and block size from an ext4 superblock (the 1024 bytes at offset 1024).
fn ext4_blocks(sb: &[u8; 1024]) -> (u64, u64) {
    let u32_at = |o: usize| u32::from_le_bytes(sb[o..o + 4].try_into().expect("4 bytes"));
    const INCOMPAT_64BIT: u32 = 0x80;
    let hi = if u32_at(0x60) & INCOMPAT_64BIT != 0 {
        u64::from(u32_at(0x150))
    } else {
        0
    };
    let bsize = 1024u64 << u32_at(0x18).min(6);
    (hi << 32 | u64::from(u32_at(0x4)), bsize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superblock_block_count() {
        let mut sb = [0u8; 1024];
        sb[0x4..0x8].copy_from_slice(&2_621_440u32.to_le_bytes());
        sb[0x18..0x1c].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(ext4_blocks(&sb), (2_621_440, 4096));
        sb[0x60..0x64].copy_from_slice(&0x80u32.to_le_bytes());
        sb[0x150..0x154].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(ext4_blocks(&sb), ((1 << 32) + 2_621_440, 4096));
    }
}
