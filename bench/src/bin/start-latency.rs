//! `start-latency`: how long `hyper run --rm busybox true` takes, beside the floor measured in the
//! same run (QEMU booting the same kernel, with the same flags, and an initramfs whose init powers
//! off at once), with a breakdown by step and a second, 100 MB larger image to show which steps
//! grow with the image. Then the start restored from a VM template (hyperd --templates on) beside
//! the cold boot and dockerd, P containers started and removed at once beside dockerd, and the
//! host memory (RSS, PSS) per idle VM. Prints ratios; it is a benchmark, not a test. See
//! bench/README.md.
//!
//! Everything it starts (hyperd on a temp data root, the floor VMs, containers, dockerd if it
//! started one) is ended on exit, on error and on SIGINT/SIGTERM/SIGHUP.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bench::docker_peer::Engine;
use bench::{median, min, now, parse_rfc3339, which, Tail};
use clap::Parser;
use sha2::{Digest, Sha256};
use vm::{Accel, Hypervisor, Qemu, VmConfig};

#[derive(Parser, Debug)]
#[command(
    name = "start-latency",
    about = "Start latency of `hyper run --rm busybox true` against a QEMU floor"
)]
struct Args {
    /// Timed runs per path (the medians are over these; each image's first, disk-building run
    /// is reported on its own).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Size in MB of the random file layer of the second image.
    #[arg(long, default_value_t = 100)]
    big_mb: usize,
    /// kvm, tcg or auto, for hyperd and the floor alike.
    #[arg(long, default_value = "auto")]
    accel: String,
    /// Directory holding vmlinuz and modules/ (default: /var/lib/hyper/kernel when present,
    /// else /var/tmp/hyper-bench-kernel, fetched there once with scripts/fetch-kernel).
    #[arg(long)]
    kernel_dir: Option<PathBuf>,
    /// Skip scripts/build (the binaries must already be in target/).
    #[arg(long)]
    no_build: bool,
    /// Skip the docker comparison.
    #[arg(long)]
    no_docker: bool,
    /// Keep the temp data root (logs, console output) instead of removing it.
    #[arg(long)]
    keep: bool,
    /// Timed `hyper run --rm busybox true` runs restored from a VM template (and as many
    /// `docker run --rm` runs beside them).
    #[arg(long, default_value_t = 10)]
    template_runs: usize,
    /// Containers started at once with `run -d busybox sleep 600`, then removed at once with
    /// `rm -f`, for hyper (templates) and docker; 0 skips it.
    #[arg(long, default_value_t = 20)]
    parallel: usize,
    /// Seconds over which the host CPU of the first burst's idle VMs (QEMU and supervisor) is
    /// measured; 0 skips it.
    #[arg(long, default_value_t = 60)]
    idle_secs: u64,
}

/// Appended to the guest kernel command line in the breakdown pass: the few kernel messages a
/// quiet boot prints carry their guest-clock timestamps. Not `loglevel=7`: the kernel's hundreds
/// of boot messages would go out through the emulated UART (a VM exit per byte under TCG) and
/// lag their timestamps by half a second, which no split of the boot could tell from work.
const BREAKDOWN_CMDLINE: &str = "printk.time=1";

/// The agent's first console line, written as the kernel hands `/init` over to it.
const AGENT_INIT_LINE: &str = "started as PID 1";

/// The floor's `/init` prints nothing: the kernel's power-down line, printed however quiet the
/// boot (the init's reboot(2) follows its exec within milliseconds), marks it.
const FLOOR_POWER_DOWN_LINE: &str = "reboot: Power down";

const FLOOR_INIT_C: &str = r#"
#include <sys/reboot.h>
#include <unistd.h>
/* The floor's /init: power the VM off at once. */
int main(void) { reboot(RB_POWER_OFF); for (;;) pause(); }
"#;

// ---------------------------------------------------------------------------------------------
// Clean-up: one registry of what we started, emptied on exit, on error and on a signal.

#[derive(Default)]
struct Started {
    hyperd: Option<Child>,
    dockerd: Option<Child>,
    floor_qemu: Option<u32>,
    data: Option<PathBuf>,
    hyper_cli: Vec<String>,
    docker_images: Vec<(Vec<String>, String)>,
    docker_containers: Vec<(Vec<String>, String)>,
    keep: bool,
}

static STARTED: Mutex<Option<Started>> = Mutex::new(None);

fn started<R>(f: impl FnOnce(&mut Started) -> R) -> R {
    let mut g = STARTED.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(Started::default))
}

fn is_qemu(pid: u32) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("qemu"))
        .unwrap_or(false)
}

fn kill(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid we recorded ourselves.
    unsafe { libc::kill(pid as i32, sig) };
}

fn stop_child(child: &mut Child, secs: u64) {
    kill(child.id(), libc::SIGTERM);
    for _ in 0..secs * 20 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn cleanup() {
    let Some(mut s) = STARTED.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return;
    };
    if let Some(pid) = s.floor_qemu.take() {
        if is_qemu(pid) {
            kill(pid, libc::SIGKILL);
        }
    }
    if let Some(data) = &s.data {
        // Containers left by a failed run: through the API first.
        if s.hyperd.is_some() && !s.hyper_cli.is_empty() {
            let ids = Command::new(&s.hyper_cli[0])
                .args(&s.hyper_cli[1..])
                .args(["ps", "-aq"])
                .output();
            if let Ok(out) = ids {
                for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new(&s.hyper_cli[0])
                        .args(&s.hyper_cli[1..])
                        .args(["rm", "-f", id])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
        // Then by hand, once hyperd has stopped, with the standby VMs it leaves for its next
        // start.
        if let Some(mut h) = s.hyperd.take() {
            stop_child(&mut h, 10);
        }
        let dirs = ["c", "standby"]
            .iter()
            .flat_map(|sub| fs::read_dir(data.join(sub)).into_iter().flatten().flatten());
        for e in dirs {
            let d = e.path();
            if let Ok(st) = fs::read(d.join("state.json")) {
                let v: serde_json::Value = serde_json::from_slice(&st).unwrap_or_default();
                if let Some(q) = v["qemu_pid"].as_u64() {
                    if is_qemu(q as u32) {
                        kill(q as u32, libc::SIGKILL);
                    }
                }
            }
            if let Some(p) = fs::read_to_string(d.join("shim.pid"))
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
            {
                let cmd = fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmd).contains("hyper-shim") {
                    kill(p, libc::SIGKILL);
                }
            }
        }
        // And the tenant namespaces it leaves: their DNS servers and balancers, their mounts.
        for e in fs::read_dir(data.join("net"))
            .into_iter()
            .flatten()
            .flatten()
        {
            for daemon in ["dns", "lb"] {
                if let Some(p) = fs::read_to_string(e.path().join(format!("{daemon}.pid")))
                    .ok()
                    .and_then(|s| s.trim().parse::<u32>().ok())
                {
                    let cmd = fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                    if String::from_utf8_lossy(&cmd).contains(&format!("hyper-{daemon}")) {
                        kill(p, libc::SIGKILL);
                    }
                }
            }
            if let Ok(path) =
                std::ffi::CString::new(e.path().join("netns").into_os_string().into_vec())
            {
                // SAFETY: umount2 with a NUL-terminated path; a path not mounted is refused.
                unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
    if let Some(mut h) = s.hyperd.take() {
        stop_child(&mut h, 10);
    }
    for (docker, id) in s.docker_containers.drain(..) {
        let _ = Command::new(&docker[0])
            .args(&docker[1..])
            .args(["rm", "-f", &id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    for (docker, image) in s.docker_images.drain(..) {
        let _ = Command::new(&docker[0])
            .args(&docker[1..])
            .args(["rmi", "-f", &image])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    if let Some(mut d) = s.dockerd.take() {
        stop_child(&mut d, 20);
    }
    if let Some(data) = &s.data {
        if s.keep {
            eprintln!("kept {}", data.display());
        } else {
            let _ = fs::remove_dir_all(data);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Small process helpers.

fn run_ok(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn poll_every(
    what: &str,
    secs: u64,
    interval: Duration,
    mut f: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = now() + secs as f64;
    while now() < deadline {
        if f()? {
            return Ok(());
        }
        std::thread::sleep(interval);
    }
    bail!("timed out after {secs}s waiting for {what}")
}

fn sha256_file(p: &Path) -> Result<String> {
    let mut h = Sha256::new();
    let mut f = fs::File::open(p)?;
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

// ---------------------------------------------------------------------------------------------
// The environment: binaries, data root, hyperd.

struct Env {
    repo: PathBuf,
    data: PathBuf,
    sock: String,
    hyperd_bin: PathBuf,
    hyper_bin: PathBuf,
    agent_bin: PathBuf,
    qemu: PathBuf,
    accel: Accel,
    accel_arg: String,
    vcpus: u32,
    memory_mib: u64,
    floor_initrd: PathBuf,
}

impl Env {
    fn hyper(&self) -> Command {
        let mut c = Command::new(&self.hyper_bin);
        c.args(["-H", &self.sock]);
        c
    }

    /// Start hyperd on the data root; `templates` is its `--templates` (always passed, so an
    /// HYPERD_TEMPLATES in the environment cannot change what a pass measures).
    /// hyperd's standby pool is its default (under TCG its ceiling, with KVM 2 growing with
    /// bursts up to the ceiling).
    fn start_hyperd(&self, extra: &str, templates: &str) -> Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.join("hyperd.log"))?;
        let child = Command::new(&self.hyperd_bin)
            .arg("--data-root")
            .arg(&self.data)
            .args(["-H", &self.sock])
            .arg("--agent")
            .arg(&self.agent_bin)
            .arg("--client-config-dir")
            .arg(self.data.join("client"))
            .args(["--accel", &self.accel_arg, "--kernel-cmdline-extra", extra])
            .args(["--templates", templates])
            // A burst of 100 books 100 VMs' whole memory, more than this host has; under TCG
            // a guest touches little of it, and start latency is what is measured here.
            .args(["--node-memory", "64G"])
            .env_remove("HYPERD_TEMPLATES")
            .env_remove("HYPERD_STANDBY_VMS")
            .env_remove("HYPERD_STANDBY_VMS_MAX")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("start hyperd")?;
        started(|s| s.hyperd = Some(child));
        // Every 10 ms: the first-start pass times from the spawn to the socket's answer.
        poll_every("hyperd to answer", 120, Duration::from_millis(10), || {
            let alive = started(|s| {
                s.hyperd
                    .as_mut()
                    .map(|h| matches!(h.try_wait(), Ok(None)))
                    .unwrap_or(false)
            });
            if !alive {
                let log = fs::read_to_string(self.data.join("hyperd.log")).unwrap_or_default();
                bail!("hyperd exited:\n{log}");
            }
            Ok(self
                .hyper()
                .arg("version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?
                .success())
        })
    }

    fn stop_hyperd(&self) {
        if let Some(mut h) = started(|s| s.hyperd.take()) {
            stop_child(&mut h, 10);
        }
    }
}

fn setup(args: &Args) -> Result<Env> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("repo root")?
        .to_path_buf();
    if !args.no_build {
        eprintln!("building (scripts/build)...");
        run_ok(
            Command::new(repo.join("scripts/build")).current_dir(&repo),
            "scripts/build",
        )?;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target"));
    let hyperd_bin = target.join("debug/hyperd");
    let hyper_bin = target.join("debug/hyper");
    let agent_bin = target.join("x86_64-unknown-linux-gnu/debug/hyper-agent");
    for b in [
        &hyperd_bin,
        &hyper_bin,
        &target.join("debug/hyper-shim"),
        &agent_bin,
    ] {
        if !b.is_file() {
            bail!("{} missing: run scripts/build", b.display());
        }
    }
    let qemu = which("qemu-system-x86_64")
        .context("qemu-system-x86_64 not found (apt-get install qemu-system-x86)")?;
    let accel =
        Accel::resolve(Some(args.accel.as_str())).map_err(|e| anyhow::anyhow!("--accel: {e}"))?;

    // Short data root: unix sockets live below it.
    let data = PathBuf::from(format!("/tmp/hb{}", std::process::id()));
    let _ = fs::remove_dir_all(&data);
    fs::create_dir_all(&data)?;
    started(|s| {
        s.data = Some(data.clone());
        s.keep = args.keep;
    });
    let sock = format!("unix://{}/api.sock", data.display());
    started(|s| {
        s.hyper_cli = vec![
            hyper_bin.to_string_lossy().into_owned(),
            "-H".into(),
            sock.clone(),
        ]
    });

    // Guest kernel: DATA/kernel/{vmlinuz,modules} link to a shared copy; hyperd writes its
    // initramfs next to them, in our data root.
    let kdir = match &args.kernel_dir {
        Some(d) => d.clone(),
        None if Path::new("/var/lib/hyper/kernel/vmlinuz").is_file() => {
            "/var/lib/hyper/kernel".into()
        }
        None => {
            let d = PathBuf::from("/var/tmp/hyper-bench-kernel");
            eprintln!("guest kernel: scripts/fetch-kernel {}", d.display());
            run_ok(
                Command::new(repo.join("scripts/fetch-kernel")).arg(&d),
                "scripts/fetch-kernel",
            )?;
            d
        }
    };
    let kdir = fs::canonicalize(&kdir).with_context(|| format!("kernel dir {}", kdir.display()))?;
    fs::create_dir_all(data.join("kernel"))?;
    for f in ["vmlinuz", "modules", "version"] {
        if kdir.join(f).exists() {
            std::os::unix::fs::symlink(kdir.join(f), data.join("kernel").join(f))?;
        }
    }

    // The floor's initramfs: the same modules as the agent's (so the kernel unpacks the same
    // amount), with a static /init that powers off at once.
    let src = data.join("floor-init.c");
    fs::write(&src, FLOOR_INIT_C)?;
    let init = data.join("floor-init");
    run_ok(
        Command::new("gcc")
            .args(["-static", "-O2", "-o"])
            .arg(&init)
            .arg(&src),
        "gcc -static (floor init)",
    )?;
    let floor_initrd = data.join("floor-initramfs.img");
    vm::build_initramfs(&init, &data.join("kernel/modules"), &floor_initrd)
        .context("build the floor initramfs")?;

    let size =
        node::sizes::lookup(node::sizes::DEFAULT_SIZE).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Env {
        repo,
        data,
        sock,
        hyperd_bin,
        hyper_bin,
        agent_bin,
        qemu,
        accel,
        accel_arg: args.accel.clone(),
        vcpus: size.vcpus,
        memory_mib: size.vm_memory_mib(),
        floor_initrd,
    })
}

// ---------------------------------------------------------------------------------------------
// Images.

/// The busybox archive plus one layer holding `mb` MB of random bytes, tagged `tag`.
fn make_big_image(small: &Path, out: &Path, tag: &str, mb: usize, work: &Path) -> Result<()> {
    let x = work.join("x");
    fs::create_dir_all(&x)?;
    run_ok(
        Command::new("tar").arg("-xf").arg(small).arg("-C").arg(&x),
        "tar -x",
    )?;
    let manifest: serde_json::Value = serde_json::from_slice(&fs::read(x.join("manifest.json"))?)?;
    let old_cfg = manifest[0]["Config"]
        .as_str()
        .context("manifest Config")?
        .to_string();
    let mut layers: Vec<String> = manifest[0]["Layers"]
        .as_array()
        .context("manifest Layers")?
        .iter()
        .filter_map(|l| l.as_str().map(String::from))
        .collect();

    let root = work.join("root");
    fs::create_dir_all(&root)?;
    {
        let mut f = fs::File::create(root.join("big.bin"))?;
        let mut rnd = fs::File::open("/dev/urandom")?;
        std::io::copy(
            &mut std::io::Read::take(&mut rnd, (mb as u64) << 20),
            &mut f,
        )?;
    }
    let layer = work.join("layer.tar");
    run_ok(
        Command::new("tar")
            .args([
                "--format=gnu",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "--mtime=@0",
                "-C",
            ])
            .arg(&root)
            .arg("-cf")
            .arg(&layer)
            .arg("big.bin"),
        "tar -c (layer)",
    )?;
    let lid = sha256_file(&layer)?;
    fs::create_dir_all(x.join(&lid))?;
    fs::rename(&layer, x.join(&lid).join("layer.tar"))?;
    fs::write(x.join(&lid).join("VERSION"), "1.0")?;
    fs::write(
        x.join(&lid).join("json"),
        format!(r#"{{"id":"{lid}","os":"linux"}}"#),
    )?;
    layers.push(format!("{lid}/layer.tar"));

    let mut cfg: serde_json::Value = serde_json::from_slice(&fs::read(x.join(&old_cfg))?)?;
    cfg["rootfs"]["diff_ids"]
        .as_array_mut()
        .context("diff_ids")?
        .push(format!("sha256:{lid}").into());
    if let Some(h) = cfg["history"].as_array_mut() {
        h.push(serde_json::json!({"created": "1970-01-01T00:00:00Z", "created_by": "start-latency: random file layer"}));
    }
    let cfg_bytes = serde_json::to_vec(&cfg)?;
    let cfg_id = hex::encode(Sha256::digest(&cfg_bytes));
    fs::remove_file(x.join(&old_cfg))?;
    fs::write(x.join(format!("{cfg_id}.json")), &cfg_bytes)?;
    let (repo, tagname) = tag.rsplit_once(':').unwrap_or((tag, "latest"));
    fs::write(
        x.join("manifest.json"),
        serde_json::to_vec(
            &serde_json::json!([{"Config": format!("{cfg_id}.json"), "RepoTags": [tag], "Layers": layers}]),
        )?,
    )?;
    fs::write(
        x.join("repositories"),
        serde_json::to_vec(&serde_json::json!({repo: {tagname: lid}}))?,
    )?;
    let names: Vec<OsString> = fs::read_dir(&x)?.flatten().map(|e| e.file_name()).collect();
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&x)
            .arg("-cf")
            .arg(out)
            .args(&names),
        "tar -c (image)",
    )?;
    fs::remove_dir_all(work)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// One `hyper run --rm IMAGE true`, optionally watched.

#[derive(Default)]
struct HyperRun {
    t0: f64,
    t_end: f64,
    /// DATA/c/<id12> appeared (create reached the runtime).
    t_dir: Option<f64>,
    /// root.qcow2 appeared (ext4 disk ensured, overlay created).
    t_qcow: Option<f64>,
    /// spec.json appeared (start reached the runtime).
    t_spec: Option<f64>,
    /// Shim's log: QEMU spawned; agent Ready.
    t_qemu: Option<f64>,
    t_ready: Option<f64>,
    /// state.json: the main process started / finished.
    started: Option<f64>,
    finished: Option<f64>,
    /// DATA/c/<id12> gone (--rm done).
    t_rm: Option<f64>,
    /// The VM's QEMU gone (after the CLI returned).
    t_settled: f64,
    console: Option<Tail>,
    dir: Option<PathBuf>,
    qemu_args: Option<Vec<String>>,
}

fn hyper_run(env: &Env, image: &str, watch: bool) -> Result<HyperRun> {
    let cdir = env.data.join("c");
    let before: HashSet<OsString> = fs::read_dir(&cdir)?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let mut r = HyperRun::default();
    let mut cmd = env.hyper();
    cmd.args(["run", "--rm", image, "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    r.t0 = now();
    let mut child = cmd.spawn().context("run hyper")?;
    if !watch {
        let out = child.wait_with_output()?;
        r.t_end = now();
        r.t_settled = settle(env);
        if !out.status.success() {
            bail!(
                "hyper run --rm {image} true: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        return Ok(r);
    }
    let mut shim: Option<Tail> = None;
    let mut state_seen = false;
    loop {
        let exited = child.try_wait()?.is_some();
        let t = now();
        if r.dir.is_none() {
            if let Some(e) = fs::read_dir(&cdir)?
                .flatten()
                .find(|e| !before.contains(&e.file_name()))
            {
                let d = e.path();
                r.t_dir = Some(t);
                shim = Some(Tail::new(d.join("shim.log")));
                r.console = Some(Tail::new(d.join("console.log")));
                r.dir = Some(d);
            }
        }
        if let Some(d) = r.dir.clone() {
            if r.t_rm.is_none() {
                if !d.exists() {
                    r.t_rm = Some(t);
                } else {
                    if r.t_qcow.is_none() && d.join("root.qcow2").exists() {
                        r.t_qcow = Some(t);
                    }
                    if r.t_spec.is_none() && d.join("spec.json").exists() {
                        r.t_spec = Some(t);
                    }
                    shim.as_mut().unwrap().poll(t);
                    r.console.as_mut().unwrap().poll(t);
                    if let Ok(b) = fs::read(d.join("state.json")) {
                        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&b) {
                            state_seen = true;
                            r.started = r
                                .started
                                .or_else(|| parse_rfc3339(v["started_at"].as_str()?));
                            r.finished = r
                                .finished
                                .or_else(|| parse_rfc3339(v["finished_at"].as_str()?));
                            if r.qemu_args.is_none() {
                                if let Some(pid) = v["qemu_pid"].as_u64() {
                                    if let Ok(c) = fs::read(format!("/proc/{pid}/cmdline")) {
                                        let a: Vec<String> = c
                                            .split(|&b| b == 0)
                                            .filter(|s| !s.is_empty())
                                            .map(|s| String::from_utf8_lossy(s).into_owned())
                                            .collect();
                                        if a.first().is_some_and(|x| x.contains("qemu")) {
                                            r.qemu_args = Some(a[1..].to_vec());
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        if exited {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let out = child.wait_with_output()?;
    r.t_end = now();
    r.t_settled = settle(env);
    if !out.status.success() {
        let console = r.console.as_ref().map(|c| {
            c.lines
                .iter()
                .rev()
                .take(20)
                .rev()
                .map(|(_, l)| l.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        });
        bail!(
            "hyper run --rm {image} true: {}: {}\nguest console (last lines):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            console.unwrap_or_default()
        );
    }
    if let Some(s) = &shim {
        let stamp = |needle: &str| {
            s.line(needle)
                .and_then(|l| parse_rfc3339(l.split_whitespace().next()?))
        };
        r.t_qemu = stamp("qemu pid");
        r.t_ready = stamp("agent ready");
    }
    if !state_seen {
        eprintln!("  (state.json never observed: the container came and went between two polls)");
    }
    Ok(r)
}

/// QEMU processes on this host that this bench did not start (another hyperd, other VMs): they
/// compete for the same cores and make every figure of this run noisier.
fn foreign_qemus(env: &Env) -> usize {
    let ours = format!("{}/", env.data.display());
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            fs::read(e.path().join("cmdline"))
                .map(|c| {
                    let c = String::from_utf8_lossy(&c);
                    c.starts_with("qemu-system") || c.contains("/qemu-system") && !c.contains(&ours)
                })
                .unwrap_or(false)
        })
        .filter(|e| {
            !fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&ours))
                .unwrap_or(true)
        })
        .count()
}

/// Wait until no QEMU of a container of ours is left (hyperd answers `--rm` while the shim is
/// still powering the VM off) and return when the last one went. Keeps runs from overlapping.
fn settle(env: &Env) -> f64 {
    let mark = format!("{}/c/", env.data.display());
    let deadline = now() + 30.0;
    loop {
        let busy = fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .bytes()
                    .all(|b| b.is_ascii_digit())
                    && fs::read(e.path().join("cmdline"))
                        .map(|c| {
                            let c = String::from_utf8_lossy(&c);
                            // A claimed standby's QEMU names its standby dir; its chroot moved
                            // with that dir into DATA/c/.
                            c.contains("qemu")
                                && (c.contains(&mark)
                                    || fs::read_link(e.path().join("root"))
                                        .is_ok_and(|r| r.to_string_lossy().starts_with(&mark)))
                        })
                        .unwrap_or(false)
            });
        if !busy || now() > deadline {
            return now();
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

// ---------------------------------------------------------------------------------------------
// One floor VM.

struct FloorRun {
    t0: f64,
    t_end: f64,
    console: Tail,
    args: Vec<String>,
    dir: PathBuf,
}

fn floor_cfg(env: &Env, extra: &str, dir: &Path) -> VmConfig {
    VmConfig {
        binary: env.qemu.clone(),
        accel: env.accel,
        kernel: env.data.join("kernel/vmlinuz"),
        initrd: env.floor_initrd.clone(),
        kernel_cmdline_extra: extra.to_string(),
        vcpus: env.vcpus,
        memory_mib: env.memory_mib,
        root_disk: dir.join("root.qcow2"),
        dir: dir.to_path_buf(),
        run_as: Some("hyper-vm".into()),
        tsc_khz: None,
        nic: None,
    }
}

fn floor_run(env: &Env, extra: &str, watch: bool) -> Result<FloorRun> {
    let dir = env.data.join("f");
    fs::create_dir_all(&dir)?;
    if !dir.join("root.qcow2").exists() {
        // Same device set as a container: an (empty) qcow2 root disk.
        run_ok(
            Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2"])
                .arg(dir.join("root.qcow2"))
                .arg("10G"),
            "qemu-img create",
        )?;
    }
    let _ = fs::remove_file(dir.join("console.log"));
    let cfg = floor_cfg(env, extra, &dir);
    let args = Qemu.args(&cfg)?;
    let mut cmd = Qemu.command(&cfg)?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(env.data.join("floor-qemu.err"))?)
        .process_group(0);
    let mut console = Tail::new(dir.join("console.log"));
    let t0 = now();
    let mut child = cmd.spawn().context("start the floor QEMU")?;
    started(|s| s.floor_qemu = Some(child.id()));
    let deadline = t0 + 120.0;
    let status = loop {
        if watch {
            if let Some(st) = child.try_wait()? {
                break st;
            }
            console.poll(now());
            if now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("floor VM did not power off in 120 s");
            }
            std::thread::sleep(Duration::from_millis(1));
        } else {
            break child.wait()?;
        }
    };
    let t_end = now();
    started(|s| s.floor_qemu = None);
    console.poll(t_end);
    if !status.success() || console.seen("reboot: Power down").is_none() {
        let err = fs::read_to_string(env.data.join("floor-qemu.err")).unwrap_or_default();
        let tail: Vec<&str> = console
            .lines
            .iter()
            .rev()
            .take(20)
            .rev()
            .map(|(_, l)| l.as_str())
            .collect();
        bail!(
            "floor VM did not power off cleanly ({status}): {err}\nconsole:\n{}",
            tail.join("\n")
        );
    }
    Ok(FloorRun {
        t0,
        t_end,
        console,
        args,
        dir,
    })
}

/// Compare the floor's QEMU arguments with the ones hyper's shim used (paths aside).
fn compare_flags(hyper: &[String], hyper_dir: &Path, floor: &FloorRun) -> String {
    let initrd = |a: &[String]| {
        a.windows(2)
            .find(|w| w[0] == "-initrd")
            .map(|w| w[1].clone())
            .unwrap_or_default()
    };
    let norm = |a: &[String], dir: &Path| -> Vec<String> {
        let (d, i) = (dir.to_string_lossy().into_owned(), initrd(a));
        a.iter()
            .map(|x| x.replace(&i, "INITRD").replace(&d, "DIR"))
            .collect()
    };
    // The floor has no NIC (it would need a tap): hyper's NIC slot, the last device, is left
    // out of the comparison.
    let mut h = norm(hyper, hyper_dir);
    if let Some(i) = h.iter().position(|a| a == "-netdev") {
        h.drain(i..(i + 4).min(h.len()));
    }
    let f = norm(&floor.args, &floor.dir);
    if h == f {
        return "the floor's QEMU arguments equal hyper's (paths of the VM dir and initrd, and hyper's NIC, aside)"
            .into();
    }
    let only_h: Vec<&String> = h.iter().filter(|x| !f.contains(x)).collect();
    let only_f: Vec<&String> = f.iter().filter(|x| !h.contains(x)).collect();
    format!("WARNING: the floor's QEMU arguments differ from hyper's: hyper only {only_h:?}, floor only {only_f:?}")
}

// ---------------------------------------------------------------------------------------------
// Breakdown.

/// Step names, in order; each run yields one value per step (or none when unobservable).
const STEPS: &[&str] = &[
    "API: CLI + create/attach/start requests",
    "disk: ext4 of the image + qcow2 overlay",
    "QEMU spawn: shim launch, QEMU forked",
    "QEMU spawn: to guest clock zero",
    "kernel boot: clock zero to /init",
    "agent: /init to Ready (modules, port)",
    "process: start request to running",
    "process: running to exited",
    "teardown 1: exit recorded to --rm done",
    "teardown 2: CLI sees removal | QEMU exits",
    "total",
    "after the CLI returned: VM still powering off",
];

fn hyper_steps(r: &HyperRun) -> Vec<Option<f64>> {
    let c = r.console.as_ref();
    let k0 = c.and_then(|c| c.guest_zero());
    let g_init = c.and_then(|c| c.guest_time(AGENT_INIT_LINE));
    let init_host = k0.zip(g_init).map(|(a, b)| a + b);
    let d = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
    vec![
        d(Some(r.t0), r.t_dir)
            .zip(d(r.t_qcow, r.t_spec))
            .map(|(a, b)| a + b),
        d(r.t_dir, r.t_qcow),
        d(r.t_spec, r.t_qemu),
        d(r.t_qemu, k0),
        g_init,
        d(init_host, r.t_ready),
        d(r.t_ready, r.started),
        d(r.started, r.finished),
        d(r.finished, r.t_rm),
        d(r.t_rm, Some(r.t_end)),
        Some(r.t_end - r.t0),
        Some(r.t_settled - r.t_end),
    ]
}

fn floor_steps(f: &FloorRun) -> Vec<Option<f64>> {
    let k0 = f.console.guest_zero();
    let g_init = f.console.guest_time(FLOOR_POWER_DOWN_LINE);
    vec![
        None,
        None,
        None,
        k0.map(|k| k - f.t0),
        g_init,
        None,
        None,
        None,
        None,
        f.console.seen(FLOOR_POWER_DOWN_LINE).map(|p| f.t_end - p),
        Some(f.t_end - f.t0),
        None,
    ]
}

fn column(runs: &[Vec<Option<f64>>], step: usize) -> Option<f64> {
    let xs: Vec<f64> = runs.iter().filter_map(|r| r[step]).collect();
    if xs.len() < runs.len().div_ceil(2) {
        return None; // observed in too few runs to call it a median
    }
    median(&xs)
}

fn fmt(x: Option<f64>) -> String {
    match x {
        Some(v) => format!("{:>8.3}", v),
        None => format!("{:>8}", "-"),
    }
}

// ---------------------------------------------------------------------------------------------
// docker.

/// The peer engine, its own dockerd (if it started one) handed to the clean-up registry.
fn docker_setup(env: &Env) -> Result<Engine, String> {
    let mut engine = bench::docker_peer::start(&env.repo, &env.data)?;
    started(|s| {
        s.dockerd = engine.dockerd.take();
        s.docker_images
            .push((engine.cli.clone(), engine.image.clone()));
    });
    Ok(engine)
}

fn docker_run(d: &Engine) -> Result<f64> {
    let t0 = now();
    let out = d.run("--rm", &["true"]).stdin(Stdio::null()).output()?;
    let t = now() - t0;
    if !out.status.success() {
        bail!(
            "docker run: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(t)
}

// ---------------------------------------------------------------------------------------------
// Templates: runs restored from a VM template, many containers at once, memory per VM.

/// Wait until the hyperd started last reports its ahead-of-time template (built or not); `from`
/// is hyperd.log's length before that start. Returns the log line.
fn wait_template(env: &Env, from: usize) -> String {
    let deadline = now() + 300.0;
    while now() < deadline {
        let log = fs::read(env.data.join("hyperd.log")).unwrap_or_default();
        let tail = String::from_utf8_lossy(log.get(from..).unwrap_or_default()).into_owned();
        if let Some(l) = tail
            .lines()
            .find(|l| l.contains("VM template ready") || l.contains("VM template not built"))
        {
            // Without the log's colours and its timestamp/level/target prefix.
            let mut plain = String::new();
            let mut esc = false;
            for c in l.chars() {
                match (esc, c) {
                    (_, '\x1b') => esc = true,
                    (true, 'm') => esc = false,
                    (true, _) => {}
                    (false, c) => plain.push(c),
                }
            }
            return plain
                .split_once("VM template")
                .map_or(plain.trim().to_string(), |(_, r)| format!("VM template{r}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    "no template report from hyperd within 300 s".into()
}

/// How the shim brought the VM up, from its `qemu pid N accel A (how)` line.
/// Until hyperd's standby pool is full again (at most 2 s a standby), so that no refill (a
/// restore and a rehearsal in the background) runs during the next timed run, ours or docker's.
/// Returns how many standbys are ready (0 with the pool off).
fn wait_standby_full(env: &Env) -> usize {
    let pool = || -> Option<(usize, usize)> {
        let o = env
            .hyper()
            .args([
                "info",
                "--format",
                "{{.StandbyVMsReady}} {{.StandbyVMsTarget}}",
            ])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        let mut words = text.split_whitespace().map(|w| w.parse::<usize>().ok());
        Some((words.next()??, words.next()??))
    };
    let mut deadline = None;
    loop {
        // No numbers: the pool is off.
        let Some((ready, target)) = pool() else {
            return 0;
        };
        let deadline = *deadline.get_or_insert(now() + 5.0 + 2.0 * target as f64);
        if ready >= target || now() > deadline {
            return ready;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A VM restored from the template: claimed from the standby pool, or restored at its start.
fn from_template(kind: &str) -> bool {
    matches!(kind, "restore" | "standby")
}

fn boot_kind(shim_log: &str) -> Option<String> {
    let l = shim_log.lines().find(|l| l.contains("qemu pid"))?;
    let how = l.rsplit_once('(')?.1.trim_end_matches(')');
    Some(how.to_string())
}

/// One `hyper run --rm IMAGE true`, watched lightly (every 5 ms: the new container dir and its
/// shim.log) to learn whether the VM was restored or booted cold. Returns (CLI wall time, time
/// until its QEMU exited, boot kind).
fn hyper_run_kind(env: &Env, image: &str) -> Result<(f64, f64, Option<String>)> {
    let cdir = env.data.join("c");
    let before: HashSet<OsString> = fs::read_dir(&cdir)?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let t0 = now();
    let mut child = env
        .hyper()
        .args(["run", "--rm", image, "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("run hyper")?;
    let mut dir: Option<PathBuf> = None;
    let mut kind = None;
    while child.try_wait()?.is_none() {
        if dir.is_none() {
            dir = fs::read_dir(&cdir)?
                .flatten()
                .find(|e| !before.contains(&e.file_name()))
                .map(|e| e.path());
        }
        if let (Some(d), None) = (&dir, &kind) {
            kind = boot_kind(&fs::read_to_string(d.join("shim.log")).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output()?;
    let t_end = now();
    let settled = settle(env);
    if !out.status.success() {
        bail!(
            "hyper run --rm {image} true: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((t_end - t0, settled - t0, kind))
}

/// A start right after hyperd's own: hyperd started again on the data root that holds its
/// template (the standby VMs and tenant namespaces its predecessor left taken over), then `hyper
/// run --rm busybox true` as soon as the socket answers. Returns (seconds from hyperd's spawn until its socket
/// answered, until that run returned, the run's boot kind).
fn first_start_after_spawn(env: &Env) -> Result<(f64, f64, Option<String>)> {
    let t0 = now();
    env.start_hyperd("", "on")?;
    let socket = now() - t0;
    let (run, _, kind) = hyper_run_kind(env, "busybox")?;
    Ok((socket, socket + run, kind))
}

/// The same for our own dockerd: stopped, started again, `docker run --rm busybox true` as soon
/// as it answers (polled every 10 ms). Returns (seconds from dockerd's spawn until it
/// answered, until that run returned).
fn docker_first_start_after_spawn(d: &Engine) -> Result<(f64, f64)> {
    if let Some(mut old) = started(|s| s.dockerd.take()) {
        stop_child(&mut old, 20);
    }
    let t0 = now();
    let child = d
        .start_again()
        .context("not our own dockerd")?
        .map_err(|e| anyhow::anyhow!(e))?;
    started(|s| s.dockerd = Some(child));
    d.wait_until_it_answers(Duration::from_millis(10))
        .map_err(|e| anyhow::anyhow!(e))?;
    let socket = now() - t0;
    let run = docker_run(d)?;
    Ok((socket, socket + run))
}

/// Run all the commands at once; the time until the last one returned, and each one's stdout.
/// `each` sees every successful output as soon as it is known (for the clean-up registry).
fn all_at_once(
    cmds: Vec<Command>,
    what: &str,
    mut each: impl FnMut(&str),
) -> Result<(f64, Vec<String>)> {
    let t0 = now();
    let mut children = Vec::new();
    for mut c in cmds {
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        children.push(c.spawn().with_context(|| format!("spawn {what}")));
    }
    let mut outs = Vec::new();
    let mut errs = Vec::new();
    for c in children {
        match c.and_then(|c| Ok(c.wait_with_output()?)) {
            Ok(o) if o.status.success() => {
                let s = String::from_utf8_lossy(&o.stdout).trim().to_string();
                each(&s);
                outs.push(s);
            }
            Ok(o) => errs.push(format!(
                "{}: {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => errs.push(format!("{e:#}")),
        }
    }
    let t = now() - t0;
    if !errs.is_empty() {
        let n = errs.len();
        errs.dedup();
        bail!(
            "{what}: {n} of {} failed: {}",
            n + outs.len(),
            errs.join(" | ")
        );
    }
    Ok((t, outs))
}

/// Remove every container of the running hyperd (after a failed parallel pass).
fn hyper_rm_all(env: &Env) {
    let ids = env.hyper().args(["ps", "-aq"]).output();
    let ids = ids.map_or(String::new(), |o| {
        String::from_utf8_lossy(&o.stdout).into_owned()
    });
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if !ids.is_empty() {
        let _ = env
            .hyper()
            .args(["rm", "-f"])
            .args(&ids)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    settle(env);
}

/// (Rss, Pss) in KiB from /proc/<pid>/smaps_rollup.
fn rollup(pid: u32) -> Option<(f64, f64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| -> Option<f64> {
        s.lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((field("Rss:")?, field("Pss:")?))
}

#[derive(Default)]
struct Parallel {
    start: f64,
    rm: f64,
    /// hyper: from the start of the rm until every QEMU of ours had exited.
    rm_settled: Option<f64>,
    /// hyper: boot kinds of the started VMs ("restore", "cold boot").
    kinds: Vec<String>,
    /// hyper: per VM (QEMU Rss, QEMU Pss, shim Rss, shim Pss) in KiB.
    mem: Vec<(f64, f64, f64, f64)>,
    /// hyper: per idle VM, the host CPU its QEMU and supervisor took, in % of one core.
    idle_cpu: Vec<f64>,
}

/// CPU time (user + system) a process has taken, in clock ticks, from /proc/<pid>/stat.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is the 3rd field, utime
    // and stime the 14th and 15th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Per VM (its QEMU and supervisor pids), the share of one core they took over `secs`.
fn idle_cpu(vms: &[Vec<u32>], secs: u64) -> Vec<f64> {
    let ticks = |pids: &Vec<u32>| pids.iter().filter_map(|&p| cpu_ticks(p)).sum::<u64>();
    let before: Vec<u64> = vms.iter().map(ticks).collect();
    std::thread::sleep(Duration::from_secs(secs));
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    vms.iter()
        .zip(before)
        .map(|(pids, b)| (ticks(pids).saturating_sub(b)) as f64 / hz / secs as f64 * 100.0)
        .collect()
}

/// `idle_secs`: how long to measure the idle VMs' CPU (0: not).
fn hyper_parallel(env: &Env, n: usize, idle_secs: u64) -> Result<Parallel> {
    let cmds = (0..n)
        .map(|_| {
            let mut c = env.hyper();
            c.args(["run", "-d", "busybox", "sleep", "600"]);
            c
        })
        .collect();
    let (start, ids) = all_at_once(cmds, "hyper run -d", |_| {})?;
    // Idle: let the guests settle after their start before reading memory.
    std::thread::sleep(Duration::from_secs(3));
    let mut p = Parallel {
        start,
        ..Default::default()
    };
    let mut vm_pids = Vec::new();
    for id in &ids {
        let d = env.data.join("c").join(id.get(..12).unwrap_or(id));
        p.kinds.push(
            boot_kind(&fs::read_to_string(d.join("shim.log")).unwrap_or_default())
                .unwrap_or_else(|| "?".into()),
        );
        let st: serde_json::Value =
            serde_json::from_slice(&fs::read(d.join("state.json")).unwrap_or_default())
                .unwrap_or_default();
        let q = st["qemu_pid"].as_u64().map(|x| x as u32);
        let shim = fs::read_to_string(d.join("shim.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        if let Some((qr, qp)) = q.filter(|&q| is_qemu(q)).and_then(rollup) {
            let (sr, sp) = shim.and_then(rollup).unwrap_or((f64::NAN, f64::NAN));
            p.mem.push((qr, qp, sr, sp));
            vm_pids.push(q.into_iter().chain(shim).collect::<Vec<u32>>());
        }
    }
    if idle_secs > 0 {
        p.idle_cpu = idle_cpu(&vm_pids, idle_secs);
    }
    let cmds = ids
        .iter()
        .map(|id| {
            let mut c = env.hyper();
            c.args(["rm", "-f", id]);
            c
        })
        .collect();
    let t0 = now();
    let (rm, _) = all_at_once(cmds, "hyper rm -f", |_| {})?;
    p.rm = rm;
    p.rm_settled = Some(settle(env) - t0);
    Ok(p)
}

fn docker_parallel(d: &Engine, n: usize) -> Result<Parallel> {
    let cmds = (0..n).map(|_| d.run("-d", &["sleep", "600"])).collect();
    let (start, ids) = all_at_once(cmds, "docker run -d", |id| {
        started(|s| s.docker_containers.push((d.cli.clone(), id.to_string())))
    })?;
    let cmds = ids.iter().map(|id| d.command(&["rm", "-f", id])).collect();
    let (rm, _) = all_at_once(cmds, "docker rm -f", |_| {})?;
    started(|s| s.docker_containers.retain(|(_, id)| !ids.contains(id)));
    Ok(Parallel {
        start,
        rm,
        ..Default::default()
    })
}

// ---------------------------------------------------------------------------------------------

fn progress(msg: &str) {
    eprint!("{msg}");
    let _ = std::io::stderr().flush();
}

fn main() {
    let args = Args::parse();
    // hyperd makes tenant namespaces, transit links and nftables rules for every container:
    // all of it stays inside a network namespace of this process's own.
    e2e::enter_private_network_namespace();
    bench::on_termination_signal(cleanup);
    let result = run(&args);
    cleanup();
    if let Err(e) = result {
        eprintln!("start-latency: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let n = args.runs;
    let env = setup(args)?;

    eprintln!(
        "images: busybox, busybox-big (+{} MB random layer)",
        args.big_mb
    );
    let small_tar = env.data.join("busybox.tar");
    run_ok(
        Command::new(env.repo.join("scripts/make-busybox-image"))
            .arg(&small_tar)
            .arg("busybox:latest"),
        "make-busybox-image",
    )?;
    let big_tar = env.data.join("big.tar");
    make_big_image(
        &small_tar,
        &big_tar,
        "busybox-big:latest",
        args.big_mb,
        &env.data.join("bigwork"),
    )?;

    // Pass 1: breakdown, a quiet boot whose few console lines carry guest-clock stamps.
    env.start_hyperd(BREAKDOWN_CMDLINE, "off")?;
    for t in [&small_tar, &big_tar] {
        run_ok(env.hyper().arg("load").arg("-i").arg(t), "hyper load")?;
    }
    let mut flag_check = String::new();
    let mut hyper_initrd = None;
    let mut foreign = foreign_qemus(&env);
    let mut floor_v = Vec::new();
    type Steps = Vec<Option<f64>>;
    let mut per_image: Vec<(&str, Steps, Vec<Steps>)> = Vec::new();
    for image in ["busybox", "busybox-big"] {
        progress(&format!(
            "breakdown {image}: first run (builds the image's disk)"
        ));
        let first = hyper_run(&env, image, true)?;
        let first_steps = hyper_steps(&first);
        let mut warm = Vec::new();
        for i in 0..n {
            progress(&format!(", {}", i + 1));
            if image == "busybox" {
                let f = floor_run(&env, BREAKDOWN_CMDLINE, true)?;
                if i == 0 {
                    if let (Some(a), Some(d)) = (&first.qemu_args, &first.dir) {
                        flag_check = compare_flags(a, d, &f);
                        hyper_initrd = a
                            .windows(2)
                            .find(|w| w[0] == "-initrd")
                            .map(|w| PathBuf::from(&w[1]));
                    }
                }
                foreign = foreign.max(foreign_qemus(&env));
                floor_v.push(floor_steps(&f));
            }
            warm.push(hyper_steps(&hyper_run(&env, image, true)?));
        }
        eprintln!();
        per_image.push((image, first_steps, warm));
    }
    env.stop_hyperd();

    // Pass 2: the headline, on the default kernel command line, floor and hyper interleaved.
    env.start_hyperd("", "off")?;
    let (mut floor_t, mut floor_boot_t, mut hyper_t, mut hyper_settled_t) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    progress("headline");
    for i in 0..n {
        progress(&format!(" {}", i + 1));
        foreign = foreign.max(foreign_qemus(&env));
        let f = floor_run(&env, "", true)?;
        floor_t.push(f.t_end - f.t0);
        floor_boot_t.push(
            f.console
                .seen("reboot: Power down")
                .map_or(f64::NAN, |p| p - f.t0),
        );
        let h = hyper_run(&env, "busybox", false)?;
        hyper_t.push(h.t_end - h.t0);
        hyper_settled_t.push(h.t_settled - h.t0);
    }
    eprintln!();
    env.stop_hyperd();

    // docker: set up now, so its runs interleave with the template runs below.
    let mut docker_t = Vec::new();
    let (docker, mut docker_note) = if args.no_docker {
        (None, "skipped (--no-docker)".to_string())
    } else {
        match docker_setup(&env) {
            Ok(d) => {
                progress("docker warm-up");
                // The first container of an engine pays its own set-up.
                let note = match docker_run(&d) {
                    Ok(_) => format!("{} run --rm {} true", d.cli.join(" "), d.image),
                    Err(e) => format!("warm-up failed: {e:#}"),
                };
                eprintln!();
                (Some(d), note)
            }
            Err(e) => (None, format!("skipped: {e}")),
        }
    };
    if !docker_note.contains(" run --rm ") {
        eprintln!("docker: {docker_note}");
    }
    let mut docker = docker.filter(|_| docker_note.contains(" run --rm "));

    // Pass 3: hyperd with templates on; template runs interleaved with docker runs.
    let log_len = fs::metadata(env.data.join("hyperd.log")).map_or(0, |m| m.len() as usize);
    env.start_hyperd("", "on")?;
    if args.parallel > 0 {
        // The default tenant may hold 10 containers; the parallel pass needs more.
        let q = (args.parallel + 5).to_string();
        run_ok(
            Command::new(&env.hyperd_bin)
                .arg("--data-root")
                .arg(&env.data)
                .arg("tenant")
                .arg("--socket")
                .arg(env.data.join("api.sock"))
                .args(["quota", "default", "--containers", &q]),
            "hyperd tenant quota default --containers",
        )?;
    }
    progress("templates: waiting for hyperd's template");
    let template_note = wait_template(&env, log_len);
    eprintln!(": {template_note}");
    // Warm-up: the first restore maps the template's files for the first time.
    // Only hyper's starts drain the pool: waiting after each keeps every timed run clear of a
    // refill.
    wait_standby_full(&env);
    let _ = hyper_run_kind(&env, "busybox")?;
    wait_standby_full(&env);
    let (mut tmpl_t, mut tmpl_settled_t, mut tmpl_kinds) = (Vec::new(), Vec::new(), Vec::new());
    progress("template runs");
    for i in 0..args.template_runs {
        progress(&format!(" {}", i + 1));
        let (t, st, kind) = hyper_run_kind(&env, "busybox")?;
        tmpl_t.push(t);
        tmpl_settled_t.push(st);
        tmpl_kinds.push(kind.unwrap_or_else(|| "?".into()));
        wait_standby_full(&env);
        if let Some(d) = &docker {
            match docker_run(d) {
                Ok(t) => docker_t.push(t),
                Err(e) => {
                    docker_note = format!("failed during the runs: {e:#}");
                    docker_t.clear();
                    docker = None;
                }
            }
        }
    }
    eprintln!();
    let mut hyper_par = None;
    let mut hyper_par_pool = None;
    let mut docker_par = None;
    let mut par_note = String::new();
    // Standbys ready as each burst began.
    let (mut pool_first, mut pool_again) = (0, 0);
    if args.parallel > 0 {
        progress(&format!("{} at once: hyper", args.parallel));
        pool_first = wait_standby_full(&env);
        match hyper_parallel(&env, args.parallel, args.idle_secs) {
            Ok(p) => hyper_par = Some(p),
            Err(e) => {
                par_note += &format!("hyper: {e:#}. ");
                hyper_rm_all(&env);
            }
        }
        // Again on the same hyperd, once its pool refilled (a burst grows a pool below its
        // ceiling to the burst's size).
        progress(", hyper again once its pool refilled");
        pool_again = wait_standby_full(&env);
        match hyper_parallel(&env, args.parallel, 0) {
            Ok(p) => hyper_par_pool = Some(p),
            Err(e) => {
                par_note += &format!("hyper, second burst: {e:#}. ");
                hyper_rm_all(&env);
            }
        }
    }
    env.stop_hyperd();
    // Pass 4: the first start after each of `runs` restarts of hyperd, its template on disk.
    progress("first start after hyperd's own");
    let mut first_starts = Vec::new();
    for i in 0..n {
        progress(&format!(" {}", i + 1));
        first_starts.push(first_start_after_spawn(&env)?);
        env.stop_hyperd();
    }
    // The same for our own dockerd, when the bench started one.
    let mut docker_first_starts = Vec::new();
    if let Some(d) = docker.as_ref().filter(|d| d.is_own()) {
        progress(", dockerd's own");
        for i in 0..n {
            progress(&format!(" {}", i + 1));
            match docker_first_start_after_spawn(d) {
                Ok(r) => docker_first_starts.push(r),
                Err(e) => {
                    eprintln!("\ndockerd restarted: {e:#}");
                    docker_first_starts.clear();
                    break;
                }
            }
        }
    }
    eprintln!();
    if args.parallel > 0 {
        if let Some(d) = &docker {
            progress(", docker");
            match docker_parallel(d, args.parallel) {
                Ok(p) => docker_par = Some(p),
                Err(e) => par_note += &format!("docker: {e:#}. "),
            }
        }
        eprintln!();
    }

    // ---- report ----
    let kernel = fs::read_to_string(env.data.join("kernel/version")).unwrap_or_default();
    let qemu_v =
        run_ok(Command::new(&env.qemu).arg("--version"), "qemu --version").unwrap_or_default();
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':').map(|x| x.1.trim().to_string()))
        .unwrap_or_default();
    println!("\n== start-latency: {n} runs per path ==");
    println!(
        "host: {cpu}, {} cpus; accel {}; {}; guest kernel {}",
        std::thread::available_parallelism().map_or(0, |x| x.get()),
        env.accel,
        qemu_v.lines().next().unwrap_or("?"),
        kernel.trim()
    );
    println!(
        "VM: {} vCPU, {} MiB (default size {}); {}",
        env.vcpus,
        env.memory_mib,
        node::sizes::DEFAULT_SIZE,
        flag_check
    );
    let size = |p: Option<&Path>| {
        p.and_then(|p| fs::metadata(p).ok())
            .map_or("?".into(), |m| format!("{:.1} MB", m.len() as f64 / 1e6))
    };
    println!(
        "initramfs: hyper's (agent + modules) {}, the floor's (static poweroff init + the same modules) {}",
        size(hyper_initrd.as_deref()),
        size(Some(&env.floor_initrd))
    );
    if foreign > 0 {
        println!("WARNING: up to {foreign} QEMU processes this bench did not start were running during the measurement: all figures are contended (2 cores).");
    }
    println!();
    println!("-- headline (default guest command line), seconds --");
    let fm = median(&floor_t).unwrap_or(f64::NAN);
    println!(
        "{:<52} {:>8} {:>8} {:>9}",
        "path", "median", "min", "÷ floor"
    );
    let row = |name: &str, xs: &[f64]| {
        let m = median(xs).unwrap_or(f64::NAN);
        println!(
            "{:<52} {} {} {:>9.2}",
            name,
            fmt(Some(m)),
            fmt(min(xs)),
            m / fm
        );
    };
    row("floor: QEMU, same kernel+flags, /init powers off", &floor_t);
    row(
        "  floor's boot alone: spawn to 'reboot: Power down'",
        &floor_boot_t,
    );
    row("hyper run --rm busybox true", &hyper_t);
    row(
        "  the same, until its VM's QEMU has exited",
        &hyper_settled_t,
    );
    if docker_t.is_empty() {
        println!("{:<52} {docker_note}", "docker run --rm busybox true");
    } else {
        row("docker run --rm busybox true", &docker_t);
        println!("  (docker: {docker_note})");
    }
    let hm = median(&hyper_t).unwrap_or(f64::NAN);
    println!(
        "hyper's overhead over the floor: {:+.3} s = {:+.0}% of the floor (aim: under 10%)",
        hm - fm,
        (hm - fm) / fm * 100.0
    );
    let fb = median(&floor_boot_t).unwrap_or(f64::NAN);
    println!(
        "  against the floor's boot alone (hyper's CLI returns before its VM has powered off): {:+.3} s = {:+.0}%",
        hm - fb,
        (hm - fb) / fb * 100.0
    );

    println!();
    let tn = args.template_runs;
    println!("-- start from a VM template (hyperd --templates on) beside the cold boot and docker, seconds --");
    println!("template: {template_note}");
    let restored = tmpl_kinds.iter().filter(|k| from_template(k)).count();
    let standby = tmpl_kinds.iter().filter(|k| *k == "standby").count();
    println!(
        "template runs restored: {restored} of {tn}, {standby} of them claimed from the standby pool (boot kinds seen: {})",
        tmpl_kinds.join(", ")
    );
    let dm = median(&docker_t).unwrap_or(f64::NAN);
    let tm = median(&tmpl_t).unwrap_or(f64::NAN);
    println!(
        "{:<52} {:>8} {:>8} {:>5} {:>9} {:>9}",
        "path", "median", "min", "runs", "÷ docker", "÷ cold"
    );
    let row3 = |name: &str, xs: &[f64]| {
        let m = median(xs).unwrap_or(f64::NAN);
        println!(
            "{:<52} {} {} {:>5} {:>9.2} {:>9.2}",
            name,
            fmt(Some(m)),
            fmt(min(xs)),
            xs.len(),
            m / dm,
            m / hm
        );
    };
    row3("hyper run --rm busybox true, from template", &tmpl_t);
    row3(
        "  the same, until its VM's QEMU has exited",
        &tmpl_settled_t,
    );
    row3(
        "hyper run --rm busybox true, cold boot (headline)",
        &hyper_t,
    );
    if docker_t.is_empty() {
        println!("{:<52} {docker_note}", "docker run --rm busybox true");
    } else {
        row3("docker run --rm busybox true", &docker_t);
        println!("  (docker: {docker_note}; runs interleaved with the template runs)");
    }
    println!(
        "template start ÷ docker = {:.2} (aim: at or below 1); template ÷ cold boot = {:.2}; template ÷ floor = {:.2}",
        tm / dm,
        tm / hm,
        tm / fm
    );

    println!();
    println!("-- the first start after hyperd's own (hyperd started again, its template on disk, the standbys and tenant namespaces its predecessor left taken over), seconds from hyperd's spawn --");
    let column_of = |f: fn(&(f64, f64, Option<String>)) -> f64| -> Vec<f64> {
        first_starts.iter().map(f).collect()
    };
    let (sockets, done) = (column_of(|r| r.0), column_of(|r| r.1));
    let runs_alone: Vec<f64> = first_starts.iter().map(|r| r.1 - r.0).collect();
    println!(
        "{:<52} {:>8} {:>8} {:>5} {:>9}",
        "", "median", "min", "runs", "÷ docker"
    );
    for (name, xs) in [
        ("hyperd's socket answers", &sockets),
        ("run --rm busybox true issued then returned", &done),
        ("  the run alone", &runs_alone),
    ] {
        let m = median(xs).unwrap_or(f64::NAN);
        println!(
            "{:<52} {} {} {:>5} {:>9.2}",
            name,
            fmt(Some(m)),
            fmt(min(xs)),
            xs.len(),
            m / dm
        );
    }
    if !docker_first_starts.is_empty() {
        let docker_done: Vec<f64> = docker_first_starts.iter().map(|r| r.1).collect();
        let dd = median(&docker_done).unwrap_or(f64::NAN);
        for (name, xs) in [
            (
                "dockerd's socket answers (its own restarted)",
                docker_first_starts
                    .iter()
                    .map(|r| r.0)
                    .collect::<Vec<f64>>(),
            ),
            (
                "docker run --rm busybox true issued then returned",
                docker_done,
            ),
        ] {
            let m = median(&xs).unwrap_or(f64::NAN);
            println!(
                "{:<52} {} {} {:>5} {:>9.2}",
                name,
                fmt(Some(m)),
                fmt(min(&xs)),
                xs.len(),
                m / dm
            );
        }
        println!(
            "hyper's first start ÷ dockerd's, both from their daemon's spawn: {:.2}",
            median(&done).unwrap_or(f64::NAN) / dd
        );
    }
    let kinds: Vec<&str> = first_starts
        .iter()
        .map(|r| r.2.as_deref().unwrap_or("?"))
        .collect();
    println!(
        "boot kinds of those runs: {} (aim: from hyperd's spawn to the run's return at or below docker's run, {})",
        kinds.join(", "),
        fmt(Some(dm))
    );

    if args.parallel > 0 {
        let np = args.parallel;
        println!();
        println!("-- {np} containers at once: `run -d busybox sleep 600` x{np}, then `rm -f` x{np} (each its own CLI, all spawned together), seconds --");
        println!(
            "{:<52} {:>8} {:>8} {:>14}",
            "", "hyper", "docker", "hyper ÷ docker"
        );
        let h = hyper_par.as_ref();
        let d = docker_par.as_ref();
        let r = |name: &str, a: Option<f64>, b: Option<f64>| {
            println!(
                "{:<52} {} {} {:>14}",
                name,
                fmt(a),
                fmt(b),
                a.zip(b)
                    .map_or("-".into(), |(a, b)| format!("{:.2}", a / b))
            );
        };
        r(
            &format!("{np} x run -d, until the last CLI returned"),
            h.map(|p| p.start),
            d.map(|p| p.start),
        );
        r(
            &format!("{np} x rm -f, until the last CLI returned"),
            h.map(|p| p.rm),
            d.map(|p| p.rm),
        );
        r(
            "  hyper: until the last QEMU had exited",
            h.and_then(|p| p.rm_settled),
            None,
        );
        let hp = hyper_par_pool.as_ref();
        r(
            &format!("{np} x run -d again, once the pool refilled"),
            hp.map(|p| p.start),
            d.map(|p| p.start),
        );
        if let Some(p) = hp {
            let standby = p.kinds.iter().filter(|k| *k == "standby").count();
            println!(
                "  (hyperd's pool had {pool_again} standbys ready: {standby} of {} starts of this burst were claims)",
                p.kinds.len()
            );
        }
        if let Some(p) = h {
            println!(
                "  per container: hyper {:.2} s start, docker {}",
                p.start / np as f64,
                d.map_or("-".into(), |d| format!("{:.2} s", d.start / np as f64))
            );
            let restored = p.kinds.iter().filter(|k| from_template(k)).count();
            let standby = p.kinds.iter().filter(|k| *k == "standby").count();
            println!(
                "  hyper VMs restored from the template: {restored} of {}, {standby} of them claimed from the standby pool ({pool_first} ready as the burst began)",
                p.kinds.len()
            );
        }
        if docker_par.is_none() && !par_note.contains("docker:") {
            println!("  docker: {docker_note}");
        }
        if !par_note.is_empty() {
            println!("  failed: {par_note}");
        }
        if let Some(p) = h.filter(|p| !p.mem.is_empty()) {
            let col = |f: fn(&(f64, f64, f64, f64)) -> f64| -> Vec<f64> {
                p.mem.iter().map(f).map(|k| k / 1024.0).collect()
            };
            let (qr, qp, sr, sp) = (col(|m| m.0), col(|m| m.1), col(|m| m.2), col(|m| m.3));
            let mx = |xs: &[f64]| xs.iter().copied().fold(f64::NAN, f64::max);
            println!();
            println!(
                "-- host memory per idle busybox VM: /proc/<pid>/smaps_rollup of the {} running VMs, MiB (VM: {} MiB guest RAM) --",
                p.mem.len(),
                env.memory_mib
            );
            println!(
                "{:<40} {:>8} {:>8} {:>8} {:>12}",
                "", "median", "min", "max", "median ÷ 64"
            );
            let mrow = |name: &str, xs: &[f64]| {
                let m = median(xs).unwrap_or(f64::NAN);
                println!(
                    "{:<40} {} {} {} {:>12.2}",
                    name,
                    fmt(Some(m)),
                    fmt(min(xs)),
                    fmt(Some(mx(xs))),
                    m / 64.0
                );
            };
            mrow("QEMU RSS", &qr);
            mrow("QEMU PSS (shared pages split)", &qp);
            mrow("hyper-shim RSS", &sr);
            mrow("hyper-shim PSS", &sp);
            let per: Vec<f64> = qp.iter().zip(&sp).map(|(a, b)| a + b).collect();
            mrow("QEMU + shim PSS", &per);
            println!("  aim: under 64 MiB per idle VM; PSS charges each VM its share of pages it shares (the template's RAM file, QEMU's code)");
            if !p.idle_cpu.is_empty() {
                let cpu = &p.idle_cpu;
                println!(
                    "host CPU per idle VM over {} s (QEMU + shim), % of a core: median {:.3}, min {:.3}, max {:.3}; aim at most 0.2 (median ÷ 0.2 = {:.2})",
                    args.idle_secs,
                    median(cpu).unwrap_or(f64::NAN),
                    min(cpu).unwrap_or(f64::NAN),
                    cpu.iter().copied().fold(f64::NAN, f64::max),
                    median(cpu).unwrap_or(f64::NAN) / 0.2
                );
            }
        }
    }

    println!();
    println!("-- breakdown (guest command line + \"{BREAKDOWN_CMDLINE}\"), seconds, medians of {n} warm runs --");
    let (_, s_first, s_warm) = &per_image[0];
    let (_, b_first, b_warm) = &per_image[1];
    println!(
        "{:<42} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "step", "floor", "busybox", "1st", "big", "1st", "big-bb"
    );
    for (i, step) in STEPS.iter().enumerate() {
        let (s, b) = (column(s_warm, i), column(b_warm, i));
        println!(
            "{:<42} {} {} {} {} {} {}",
            step,
            fmt(column(&floor_v, i)),
            fmt(s),
            fmt(s_first[i]),
            fmt(b),
            fmt(b_first[i]),
            fmt(s.zip(b).map(|(s, b)| b - s)),
        );
    }
    println!();
    println!("How the steps are observed (1 ms polling of DATA/c/<id12>; shim and state timestamps are exact):");
    println!("  API = CLI start -> container dir exists, plus qcow2 exists -> spec.json written (create reply, attach, start request).");
    println!("  disk = container dir -> root.qcow2 exists (ensure_disk, qemu-img create); '1st' includes building the ext4 disk.");
    println!("  QEMU spawn = spec.json -> shim logs 'qemu pid', then -> guest clock zero (estimated as min(seen - stamp) over");
    println!("    stamped console lines; valid because under TCG with tsc_early_khz the guest clock runs at host speed).");
    println!("  kernel boot = guest stamp of the agent's first line ('hyper-agent: [t] {AGENT_INIT_LINE}'); the floor's init prints nothing, so");
    println!("    its power-down line's stamp stands for it (its reboot(2) follows the exec). agent = that instant -> 'agent ready'.");
    println!("  process = 'agent ready' -> state.json started_at -> finished_at. teardown = finished_at -> container dir removed -> CLI exit.");
    println!("  floor teardown 2 = '{FLOOR_POWER_DOWN_LINE}' printed -> QEMU exited. '-': not on that path, or not observable.");
    println!("  Not separable from outside: the API's share inside the shim launch, hyperd's exit bookkeeping vs the VM's power-off");
    println!("  (QEMU's exit time is not logged by the shim), and time the poll loop itself adds (<= 1 ms per boundary).");
    Ok(())
}
