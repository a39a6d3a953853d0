//! What the supervisor's VM tests share: the kernel and agent under test, timeouts, commands.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::process::Command;

pub mod boots;

pub fn scale() -> f64 {
    std::env::var("HYPER_TEST_TIMEOUT_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

/// The scratch directory `/tmp/{name}-{pid}` of a fixture that a test binary's tests share
/// (a static, never dropped): made now, removed as the binary exits.
pub fn shared_scratch(name: &str) -> PathBuf {
    static DIRS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    static AT_EXIT: std::sync::Once = std::sync::Once::new();
    extern "C" fn remove_dirs() {
        for dir in DIRS.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    let dir = PathBuf::from(format!("/tmp/{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    DIRS.lock().unwrap().push(dir.clone());
    // SAFETY: `remove_dirs` is a plain function that stays valid for the process's life.
    AT_EXIT.call_once(|| assert_eq!(unsafe { libc::atexit(remove_dirs) }, 0));
    dir
}

pub fn kernel_and_modules(kdir: &Path) -> (PathBuf, PathBuf) {
    if kdir.join("vmlinuz").exists() {
        return (kdir.join("vmlinuz"), kdir.join("modules"));
    }
    let boot = std::fs::read_dir(kdir.join("boot")).expect("KERNEL_DIR/boot");
    let k = boot
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("vmlinuz")
        })
        .expect("a vmlinuz in KERNEL_DIR/boot");
    (k, kdir.join("lib/modules"))
}

pub fn agent_binary() -> PathBuf {
    if let Ok(p) = std::env::var("HYPER_TEST_AGENT") {
        return p.into();
    }
    let root = workspace_root();
    let st = Command::new(env!("CARGO"))
        .args([
            "build",
            "-p",
            "agent",
            "--target",
            "x86_64-unknown-linux-gnu",
        ])
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .current_dir(&root)
        .status()
        .expect("cargo build agent");
    assert!(st.success(), "building the agent failed");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or(root.join("target"));
    target.join("x86_64-unknown-linux-gnu/debug/hyper-agent")
}

pub fn sh(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A minimal root filesystem at `dir`: busybox with `applets` linked in /bin, the usual
/// directories, root in /etc/passwd and /etc/group. Callers add their own files, then
/// [`ext4_image`] it.
pub fn busybox_rootfs(dir: &Path, applets: &[&str]) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    for d in ["proc", "sys", "dev", "tmp", "etc", "root", "run"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).expect("busybox-static installed");
    for app in applets {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(app)).unwrap();
    }
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(dir.join("etc/group"), "root:x:0:\n").unwrap();
}

/// `mkfs.ext4 -d ROOTFS OUT SIZE`, as hyperd builds an image's disk.
pub fn ext4_image(rootfs: &Path, out: &Path, size: &str) {
    sh(Command::new("mkfs.ext4")
        .args(["-q", "-b", "4096", "-d"])
        .arg(rootfs)
        .arg(out)
        .arg(size));
}

/// The unprivileged user QEMU runs as when the machine has it (scripts/setup makes it), else
/// root ("").
pub fn qemu_user() -> String {
    let exists = Command::new("id")
        .arg("hyper-vm")
        .output()
        .is_ok_and(|o| o.status.success());
    if exists { "hyper-vm" } else { "" }.into()
}

/// A container's root disk at `root`: a qcow2 overlay of the raw `base`, of the root slot's
/// size (as hyperd makes them, so a template restore fits).
pub fn overlay(base: &Path, root: &Path) {
    sh(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-b"])
        .arg(base)
        .args(["-F", "raw"])
        .arg(root)
        .arg(vm::ROOT_DISK_BYTES.to_string()));
}

/// Runs `sh -c SCRIPT` in the container as an exec session `exec_id` (PATH=/bin) and reads the
/// session to its end within `limit`: its multiplexed output, then the exit frame.
pub async fn exec_sh(
    c: &shim::ShimClient,
    exec_id: &str,
    script: &str,
    limit: std::time::Duration,
) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let (resp, mut s) = c
        .stream(&shim::Request::Exec {
            exec_id: exec_id.into(),
            args: vec!["sh".into(), "-c".into(), script.into()],
            env: vec!["PATH=/bin".into()],
            cwd: String::new(),
            user: String::new(),
            tty: false,
            stdin: false,
            tty_width: 0,
            tty_height: 0,
        })
        .await
        .unwrap();
    assert!(resp.ok, "{resp:?}");
    let mut got = Vec::new();
    tokio::time::timeout(limit, s.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    got
}

/// `stop` with SIGTERM and a 20 s timeout, the disk not kept: the state in its reply.
pub async fn stop(c: &shim::ShimClient) -> shim::State {
    let resp = c
        .request(&shim::Request::Stop {
            signal: 15,
            timeout_secs: 20,
            keep_disk: false,
        })
        .await
        .unwrap();
    resp.state.expect("state in the stop reply")
}
