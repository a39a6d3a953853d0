//! Preparing the container's root filesystem when `Start` arrives (never before: VM templates
//! boot without a disk of their own): mount the ext4 root disk, grow it to the device, set the
//! hostname and the files that carry it and the network (`/etc/hosts`, `/etc/resolv.conf`).

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::mount::{mount, MsFlags};

use agent_proto::NetConfig;

use crate::etc;
use crate::init::log;

/// Where the container's root disk is mounted in the agent's namespace.
pub const ROOTFS: &str = "/run/rootfs";

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("root device {0} did not appear")]
    NoDevice(String),
    #[error("mount {0} on {ROOTFS}")]
    Mount(String, #[source] nix::Error),
}

// EXT4_IOC_RESIZE_FS = _IOW('f', 16, __u64); BLKGETSIZE64 = _IOR(0x12, 114, size_t).
nix::ioctl_write_ptr!(ext4_resize_fs, b'f', 16, u64);
nix::ioctl_read!(blk_getsize64, 0x12, 114, u64);

/// What `Start` says about the container's root.
pub struct Target {
    pub device: String,
    pub hostname: String,
    pub machine_id: String,
    /// For `/etc/hosts` and `/etc/resolv.conf` (the interfaces are `network`'s job).
    pub network: Option<NetConfig>,
}

pub fn prepare(t: &Target) -> Result<(), RootfsError> {
    let device = if t.device.is_empty() {
        "/dev/vda"
    } else {
        t.device.as_str()
    };
    let hostname = t.hostname.as_str();
    let t0 = Instant::now();
    // The block driver binds only now, to the disk that is this container's (see
    // `init::DEFERRED_MODULES`).
    crate::init::load_deferred_modules();
    let t_driver = t0.elapsed();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !Path::new(device).exists() {
        if Instant::now() > deadline {
            return Err(RootfsError::NoDevice(device.to_string()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::create_dir_all(ROOTFS);
    mount(
        Some(device),
        ROOTFS,
        Some("ext4"),
        MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| RootfsError::Mount(device.to_string(), e))?;
    let t_mount = t0.elapsed();
    if let Err(e) = grow(device) {
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
        "root ready in {} ms: driver {} ms, device+mount {} ms, grow {} ms",
        t0.elapsed().as_millis(),
        t_driver.as_millis(),
        (t_mount - t_driver).as_millis(),
        (t_grow - t_mount).as_millis()
    );
    Ok(())
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

/// Grow the mounted ext4 filesystem to fill its device (online resize).
fn grow(device: &str) -> std::io::Result<()> {
    let dev = std::fs::File::open(device)?;
    let mut bytes: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer.
    unsafe { blk_getsize64(dev.as_raw_fd(), &mut bytes) }?;
    let st = nix::sys::statvfs::statvfs(ROOTFS)?;
    let bsize = st.block_size().max(1024);
    let blocks: u64 = bytes / bsize;
    let dir = std::fs::File::open(ROOTFS)?;
    // SAFETY: EXT4_IOC_RESIZE_FS reads one u64 through the pointer.
    unsafe { ext4_resize_fs(dir.as_raw_fd(), &blocks) }?;
    log!("root filesystem {device}: {blocks} blocks of {bsize}");
    Ok(())
}
