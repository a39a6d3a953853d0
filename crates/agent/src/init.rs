//! What the agent does as the guest's PID 1 before it talks to anyone: the API filesystems, the
//! console file descriptors, the virtio modules, subreaper, and at the end power-off.
//!
//! The Debian cloud kernel builds virtio as modules and the initramfs carries them as plain .ko
//! files without modules.dep, so the order is fixed here: dependencies first.

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

macro_rules! log {
    ($($arg:tt)*) => {{
        eprintln!("hyper-agent: {}", format_args!($($arg)*));
    }};
}
pub(crate) use log;

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
            if let Ok(f) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/console") {
                // SAFETY: dup2 onto a closed descriptor number; f stays valid for the call.
                unsafe { libc::dup2(f.as_raw_fd(), fd) };
            }
        }
    }
}

/// The PID-1 setup: filesystems, console, modules, subreaper.
pub fn init_pid1() {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_fs("devtmpfs", "/dev", "devtmpfs", MsFlags::MS_NOSUID, Some("mode=0755"));
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
    load_modules(Path::new(MODULE_DIR));
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        log!("PR_SET_CHILD_SUBREAPER: {}", std::io::Error::last_os_error());
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
        let all: Vec<String> = MODULE_ORDER.iter().rev().map(|m| format!("{m}.ko")).collect();
        let want: Vec<String> = MODULE_ORDER.iter().map(|m| format!("{m}.ko")).collect();
        assert_eq!(module_load_order(&all), want);
    }
}
