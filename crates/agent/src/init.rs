//! What the agent does as the guest's PID 1 before it talks to anyone: the API filesystems, the
//! console file descriptors, the virtio modules, subreaper, and at the end power-off.
//!
//! The Debian cloud kernel builds virtio as modules and the initramfs carries them as plain .ko
//! files without modules.dep, so the order is fixed here: dependencies first.
//!
//! # Leaving the initramfs (switch_root)
//!
//! The kernel unpacks the initramfs into `rootfs`, the first mount of the first mount namespace.
//! rootfs can never be unmounted or moved, so pivot_root(2) refuses to run while it is the
//! current root (EINVAL): a container started from there could only be entered with MS_MOVE +
//! chroot, and a root process in it could walk back out of a chroot into the agent's files.
//! So before anything else (single-threaded, no tokio yet) PID 1 does what `switch_root` does:
//! load the modules from the initramfs, mount a small tmpfs, delete everything else on rootfs
//! (this also frees its memory; the running binary stays mapped), move the tmpfs over `/` and
//! chroot into it. From then on the agent's root is a real mount with a parent, so each
//! container's mount namespace can pivot_root(2) onto its disk and detach the agent's tree
//! entirely (see `process`). What is left on rootfs is one empty directory.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};

/// Module load order (dependencies first).
pub const MODULE_ORDER: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_mmio",
    "virtio_blk",
    "virtio_console",
    "failover",
    "net_failover",
    "virtio_net",
];

/// Where the initramfs keeps the modules.
pub const MODULE_DIR: &str = "/lib/modules";

/// One line on the console, stamped with the guest's monotonic clock (seconds, like printk's),
/// so the steps of a start can be timed from the console.
macro_rules! log {
    ($($arg:tt)*) => {{
        eprintln!("hyper-agent: [{}] {}", $crate::init::Uptime::now(), format_args!($($arg)*));
    }};
}
pub(crate) use log;

/// CLOCK_MONOTONIC, shown as seconds with milliseconds ("12.345"). Integers only: formatting a
/// float runs the standard library's exact (Dragon4) fallback for some values, code that under
/// TCG costs a translation the first time each of its branches runs, on a start's path.
pub struct Uptime {
    secs: u64,
    millis: u32,
}

impl Uptime {
    pub fn now() -> Uptime {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec through a valid pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
        Uptime {
            secs: t.tv_sec.max(0) as u64,
            millis: (t.tv_nsec.max(0) / 1_000_000) as u32,
        }
    }
}

impl std::fmt::Display for Uptime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:03}", self.secs, self.millis)
    }
}

/// Order the .ko files found in the module dir: the known ones in [`MODULE_ORDER`], then any
/// others by name (so the initramfs can carry extra modules without an agent change).
pub fn module_load_order(found: &[String]) -> Vec<String> {
    let stem = |f: &str| f.trim_end_matches(".ko").to_string();
    let mut out: Vec<String> = MODULE_ORDER
        .iter()
        .filter_map(|m| found.iter().find(|f| stem(f) == *m).cloned())
        .collect();
    let mut rest: Vec<String> = found
        .iter()
        .filter(|f| f.ends_with(".ko") && !MODULE_ORDER.contains(&stem(f).as_str()))
        .cloned()
        .collect();
    rest.sort();
    out.extend(rest);
    out
}

fn mount_fs(src: &str, target: &str, fstype: &str, flags: MsFlags, data: Option<&str>) {
    let _ = std::fs::create_dir_all(target);
    if let Err(e) = mount(Some(src), target, Some(fstype), flags, data) {
        if e != nix::errno::Errno::EBUSY {
            log!("mount {fstype} on {target}: {e}");
        }
    }
}

/// Make sure fds 0, 1 and 2 exist (an initramfs without /dev/console starts init without them),
/// so that our own pipes never land on them and stderr reaches the console.
fn fix_console_fds() {
    for fd in 0..3 {
        // SAFETY: F_GETFD on a small integer has no side effects.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            if let Ok(f) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/console")
            {
                // SAFETY: dup2 onto a closed descriptor number; f stays valid for the call.
                unsafe { libc::dup2(f.as_raw_fd(), fd) };
            }
        }
    }
}

static LEFT_ROOTFS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Did [`leave_rootfs`] succeed at boot?
pub fn left_rootfs() -> bool {
    LEFT_ROOTFS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Where the agent's own tmpfs is mounted before it is moved over `/`.
const NEW_ROOT: &str = "/.agent-root";

#[derive(Debug, thiserror::Error)]
pub enum SwitchRootError {
    #[error("/ is not the initramfs (filesystem type {0:#x})")]
    NotRootfs(i64),
    #[error("{0}")]
    Sys(&'static str, #[source] nix::Error),
}

fn sys<T>(what: &'static str, r: nix::Result<T>) -> Result<T, SwitchRootError> {
    r.map_err(|e| SwitchRootError::Sys(what, e))
}

/// Remove everything below `dir` that is on device `dev`, not crossing into other mounts and
/// not touching `keep` (a name directly below `dir`).
fn remove_tree(dir: &Path, dev: u64, keep: Option<&str>) {
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        if keep.is_some_and(|k| e.file_name() == k) {
            continue;
        }
        let p = e.path();
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if md.dev() != dev {
            continue;
        }
        if md.is_dir() {
            remove_tree(&p, dev, None);
            let _ = std::fs::remove_dir(&p);
        } else {
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// Move PID 1 off the initramfs onto a tmpfs of its own (see the module docs). Must run before
/// any thread exists and before anything is mounted below `/`.
pub fn leave_rootfs() -> Result<(), SwitchRootError> {
    use std::os::unix::fs::MetadataExt;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let st = sys("statfs /", nix::sys::statfs::statfs("/"))?;
    let ftype = st.filesystem_type().0 as i64;
    if ftype != RAMFS_MAGIC && ftype != TMPFS_MAGIC {
        return Err(SwitchRootError::NotRootfs(ftype));
    }
    let root_dev = std::fs::symlink_metadata("/").map(|m| m.dev()).unwrap_or(0);
    let _ = std::fs::create_dir(NEW_ROOT);
    sys(
        "mount tmpfs for the agent's root",
        mount(
            Some("tmpfs"),
            NEW_ROOT,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755,size=1m"),
        ),
    )?;
    remove_tree(
        Path::new("/"),
        root_dev,
        Some(NEW_ROOT.trim_start_matches('/')),
    );
    sys("chdir to the agent's root", nix::unistd::chdir(NEW_ROOT))?;
    sys(
        "move the agent's root over /",
        mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>),
    )?;
    sys("chroot", nix::unistd::chroot("."))?;
    sys("chdir /", nix::unistd::chdir("/"))?;
    for d in ["dev", "proc", "sys", "run", "tmp"] {
        let _ = std::fs::create_dir(Path::new("/").join(d));
    }
    LEFT_ROOTFS.store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// The PID-1 setup: console, modules, leaving the initramfs, filesystems, subreaper.
pub fn init_pid1() {
    fix_console_fds();
    // The first line of the agent's own: when the kernel handed over (the start bench's mark).
    log!("started as PID 1; loading the virtio modules");
    load_modules(Path::new(MODULE_DIR));
    match leave_rootfs() {
        Ok(()) => log!("left the initramfs: the agent's root is its own tmpfs"),
        Err(e) => log!(
            "leaving the initramfs: {}; containers will not start",
            crate::error_chain(&e)
        ),
    }
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_fs(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    );
    fix_console_fds();
    mount_fs("proc", "/proc", "proc", nosuid, None);
    mount_fs("sysfs", "/sys", "sysfs", nosuid, None);
    mount_fs(
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    );
    mount_fs(
        "tmpfs",
        "/run",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    );
    mount_fs("tmpfs", "/dev/shm", "tmpfs", nosuid, Some("mode=1777"));
    if !Path::new("/dev/ptmx").exists() {
        let _ = std::os::unix::fs::symlink("pts/ptmx", "/dev/ptmx");
    }
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        log!(
            "PR_SET_CHILD_SUBREAPER: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn finit_module(name: &str, f: &std::fs::File) {
    let params = c"";
    // SAFETY: finit_module with a valid fd and a NUL-terminated empty parameter string.
    let r = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), params.as_ptr(), 0) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            log!("finit_module {name}: {e}");
        }
    }
}

/// Load every module in `dir` in [`module_load_order`] with finit_module; EEXIST is fine.
pub fn load_modules(dir: &Path) {
    let found: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) => {
            log!("no modules in {}: {e}", dir.display());
            return;
        }
    };
    for name in module_load_order(&found) {
        let path: PathBuf = dir.join(&name);
        let f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                log!("open {}: {e}", path.display());
                continue;
            }
        };
        finit_module(&name, &f);
    }
}

/// Kernel release (uname -r).
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// sync() and power off; when not PID 1 (development runs), just exit.
pub fn power_off() -> ! {
    nix::unistd::sync();
    if std::process::id() == 1 {
        log!("powering off");
        let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
        // reboot only returns on failure; PID 1 must not exit.
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    std::process::exit(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_order() {
        let found: Vec<String> = [
            "virtio_net.ko",
            "extra.ko",
            "virtio.ko",
            "virtio_ring.ko",
            "README",
            "failover.ko",
            "a.ko",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            module_load_order(&found),
            vec![
                "virtio_ring.ko",
                "virtio.ko",
                "failover.ko",
                "virtio_net.ko",
                "a.ko",
                "extra.ko"
            ]
        );
        let all: Vec<String> = MODULE_ORDER
            .iter()
            .rev()
            .map(|m| format!("{m}.ko"))
            .collect();
        let want: Vec<String> = MODULE_ORDER.iter().map(|m| format!("{m}.ko")).collect();
        assert_eq!(module_load_order(&all), want);
    }
}
