//! Containers in every boot through the `hyper-shim` binary, as hyperd starts them: a
//! container's directory (its overlay and `spec.json`), a cold boot or a restore from its
//! template (`launch`), a standby VM and its claim, a start run to its end.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use shim::{Request, ShimClient, Spec};

use super::*;

pub struct Fixture {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub work: PathBuf,
    pub run_as: String,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

pub fn fixture() -> Option<Fixture> {
    let kdir = std::env::var("HYPER_TEST_KERNEL_DIR").ok()?;
    let (kernel, modules) = kernel_and_modules(Path::new(&kdir));
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let work = PathBuf::from(format!("/tmp/ht-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let initrd = work.join("initrd.img");
    vm::build_initramfs(&agent_binary(), &modules, &initrd).expect("initramfs");
    Some(Fixture {
        kernel,
        initrd,
        work,
        run_as: qemu_user(),
    })
}

/// An ext4 image with busybox and `/marker` holding `marker`.
pub fn base_disk(f: &Fixture, marker: &str) -> PathBuf {
    base_disk_with(f, marker, &[])
}

/// [`base_disk`] with `applets` besides its own.
pub fn base_disk_with(f: &Fixture, marker: &str, applets: &[&str]) -> PathBuf {
    let rootfs = f.work.join(format!("rootfs-{marker}"));
    let mut all = vec![
        "sh", "echo", "cat", "head", "od", "tr", "date", "hostname", "true", "sleep",
    ];
    let more: Vec<&str> = applets
        .iter()
        .filter(|a| !all.contains(a))
        .copied()
        .collect();
    all.extend(more);
    busybox_rootfs(&rootfs, &all);
    std::fs::write(rootfs.join("etc/machine-id"), "").unwrap();
    std::fs::write(rootfs.join("marker"), marker).unwrap();
    let img = f.work.join(format!("base-{marker}.ext4"));
    ext4_image(&rootfs, &img, "32M");
    img
}

pub fn spec(f: &Fixture, name: &str, root_disk: &Path, env: &str, script: &str) -> Spec {
    serde_json::from_value(serde_json::json!({
        "id": format!("{name:0<64}"), "accel": std::env::var("HYPER_TEST_ACCEL").unwrap_or_default(),
        "kernel": f.kernel, "initrd": f.initrd, "root_disk": root_disk, "run_as": f.run_as,
        "vcpus": 1, "memory_mib": 256, "boot_timeout_secs": (60.0 * scale()) as u64,
        "log_max_bytes": 1048576, "log_max_files": 2, "hostname": name,
        "template_dir": f.work.join("templates"),
        "process": { "args": ["sh", "-c", script], "env": ["PATH=/bin", env], "cwd": "/", "user": "root" }
    }))
    .unwrap()
}

pub struct Run {
    pub dir: PathBuf,
    pub output: String,
    pub shim_log: String,
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("shim.pid")) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::SIGTERM,
                );
            }
        }
    }
}

/// A container directory `name` as hyperd makes one: an overlay of `base` and `spec.json`.
pub fn container_dir(f: &Fixture, name: &str, base: &Path, mut spec: Spec) -> PathBuf {
    let dir = f.work.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let root = dir.join("root.qcow2");
    overlay(base, &root);
    spec.root_disk = root;
    std::fs::write(dir.join("spec.json"), serde_json::to_vec(&spec).unwrap()).unwrap();
    dir
}

/// `hyper-shim --dir DIR`, which must come up.
pub fn launch(dir: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_hyper-shim"))
        .arg("--dir")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "hyper-shim failed: {}\nshim.log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(dir.join("shim.log")).unwrap_or_default()
    );
}

/// Start a container with `spec` (disk: an overlay of `base`), run it to its end, and
/// return its output.
pub fn run(f: &Fixture, name: &str, base: &Path, spec: Spec) -> Run {
    let dir = container_dir(f, name, base, spec);
    launch(&dir);
    finish(dir)
}

/// A standby VM for containers of `like`'s size, up and waiting in `name`.
pub fn standby(f: &Fixture, name: &str, like: &Spec) -> PathBuf {
    let dir = f.work.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut spec = like.clone();
    spec.standby = true;
    spec.id = name.to_string();
    spec.root_disk = dir.join("placeholder");
    std::fs::write(dir.join("spec.json"), serde_json::to_vec(&spec).unwrap()).unwrap();
    launch(&dir);
    dir
}

/// Wait until the standby in `dir` has paused its VM, as a waiting standby does.
pub fn wait_paused(dir: &Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(dir.join("shim.log"))
        .unwrap()
        .contains("standby: paused")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "a standby was not paused"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One request to the supervisor in `dir`.
pub fn ask(dir: &Path, req: Request) -> shim::Response {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        ShimClient::connect(dir)
            .unwrap()
            .request(&req)
            .await
            .unwrap()
    })
}

/// Ask the standby in `standby` to take the container in `dir`.
pub fn claim(standby: &Path, dir: &Path) -> shim::Response {
    ask(standby, Request::Claim { dir: dir.into() })
}

/// Like [`run`], the VM claimed from the standby in `standby`.
pub fn run_claimed(f: &Fixture, name: &str, base: &Path, spec: Spec, standby: &Path) -> Run {
    let dir = container_dir(f, name, base, spec);
    let resp = claim(standby, &dir);
    assert!(resp.ok, "claim: {resp:?}");
    finish(dir)
}

/// Start the container in `dir` (its supervisor is up), wait for its end, collect its output.
pub fn finish(dir: PathBuf) -> Run {
    let shim_log = || std::fs::read_to_string(dir.join("shim.log")).unwrap_or_default();
    let mut r = Run {
        dir: dir.clone(),
        output: String::new(),
        shim_log: String::new(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = ShimClient::connect(&dir).unwrap();
        let resp = c.request(&Request::Start).await.unwrap();
        assert!(resp.ok, "{resp:?}\n{}", shim_log());
        let resp = tokio::time::timeout(
            Duration::from_secs_f64(60.0 * scale()),
            c.request(&Request::Wait),
        )
        .await
        .expect("the container did not exit")
        .unwrap();
        assert_eq!(resp.state.unwrap().exit_code, Some(0), "{}", shim_log());
    });
    wait_shim_gone(&dir);
    r.output = ctr_output(&dir);
    r.shim_log = shim_log();
    r
}

/// Wait (a while) until the supervisor in `dir` has exited.
pub fn wait_shim_gone(dir: &Path) {
    let end = Instant::now() + Duration::from_secs_f64(20.0 * scale());
    while dir.join("shim.sock").exists() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The container's output so far (`ctr.log`).
pub fn ctr_output(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("ctr.log")).unwrap_or_default();
    log.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            v["log"].as_str().unwrap().to_string()
        })
        .collect()
}

pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(&format!(": {c}"));
        cur = c.source();
    }
    s
}

/// `key=value` lines of a container's output.
pub fn fields(out: &str) -> std::collections::HashMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}
