//! dockerd as the peer a benchmark measures against: the host's engine if one answers at
//! `/var/run/docker.sock`, else Debian's dockerd (installed if missing) started on a directory
//! of the benchmark's, with no bridge and no iptables so that it touches no host network. The
//! very busybox hyperd runs is loaded into it under a tag of our own, so that an engine's own
//! images are left alone.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use crate::which;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Engine {
    /// The docker CLI, with `-H` when the engine is our own.
    pub cli: Vec<String>,
    /// The busybox image's tag.
    pub image: String,
    /// `run` flags this engine needs (`--network none` on our own, which has no bridge).
    pub extra_run: Vec<String>,
    /// Our own dockerd, if one was started: the caller stops it once the image is removed.
    pub dockerd: Option<Child>,
    /// Our own dockerd's directory, if one was started ([`Engine::start_again`]).
    own_dir: Option<PathBuf>,
}

impl Engine {
    /// `docker ARGS` against this engine.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.cli[0]);
        c.args(&self.cli[1..]).args(args);
        c
    }

    /// Whether the bench started this engine (and may restart it).
    pub fn is_own(&self) -> bool {
        self.own_dir.is_some()
    }

    /// Our own dockerd started again on its directory (the caller stopped the one before);
    /// `None` for the host's engine, which is not ours to restart.
    pub fn start_again(&self) -> Option<Result<Child, String>> {
        self.own_dir.as_deref().map(spawn_own)
    }

    /// Asks the engine for its version every `interval` until it answers (60 s at most).
    pub fn wait_until_it_answers(&self, interval: Duration) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !answers(&self.cli) {
            if Instant::now() > deadline {
                let log = self
                    .own_dir
                    .as_ref()
                    .and_then(|d| fs::read_to_string(d.join("dockerd.log")).ok())
                    .unwrap_or_default();
                let last: Vec<&str> = log.lines().rev().take(5).collect();
                return Err(format!(
                    "dockerd did not answer within 60 s: {}",
                    last.join(" | ")
                ));
            }
            std::thread::sleep(interval);
        }
        Ok(())
    }

    /// `docker run -d|--rm ...` with this engine's `run` flags and image, then `cmd`.
    pub fn run(&self, mode: &str, cmd: &[&str]) -> Command {
        let mut c = self.command(&["run", mode]);
        c.args(&self.extra_run).arg(&self.image).args(cmd);
        c
    }
}

fn answers(cli: &[String]) -> bool {
    Command::new(&cli[0])
        .args(&cli[1..])
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The engine, ready, with the busybox image made by `repo`'s `scripts/make-busybox-image`;
/// our own dockerd keeps its data, sockets and log under `dir`.
pub fn start(repo: &Path, dir: &Path) -> Result<Engine, String> {
    let docker = which("docker").ok_or("no docker CLI")?;
    let docker = docker.to_string_lossy().into_owned();
    let mut engine = Engine {
        cli: vec![docker.clone()],
        image: "hyper-bench-busybox:latest".into(),
        extra_run: Vec::new(),
        dockerd: None,
        own_dir: None,
    };
    if !(Path::new("/var/run/docker.sock").exists() && answers(&engine.cli)) {
        crate::ensure_package(&["dockerd", "--version"], "docker.io")
            .map_err(|e| format!("{e:#}"))?;
        let d = dir.join("d");
        let sock = format!("unix://{}/docker.sock", d.display());
        let child = spawn_own(&d)?;
        engine.dockerd = Some(child);
        engine.cli = vec![docker, "-H".into(), sock];
        engine.extra_run = vec!["--network".into(), "none".into()];
        engine.own_dir = Some(d);
        engine.wait_until_it_answers(Duration::from_millis(100))?;
    }
    let tar = dir.join("busybox-docker.tar");
    let made = Command::new(repo.join("scripts/make-busybox-image"))
        .arg(&tar)
        .arg(&engine.image)
        .output()
        .map_err(|e| format!("make-busybox-image: {e}"))?;
    let loaded = engine
        .command(&["load", "-i"])
        .arg(&tar)
        .output()
        .map_err(|e| format!("docker load: {e}"))?;
    for (what, out) in [("make-busybox-image", made), ("docker load", loaded)] {
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
            stop(&mut engine);
            return Err(format!("{what}: {}: {err}", out.status));
        }
    }
    Ok(engine)
}

/// Debian's dockerd on `d` (its data, sockets and log): no bridge, no iptables.
fn spawn_own(d: &Path) -> Result<Child, String> {
    let dockerd = which("dockerd").ok_or(
        "dockerd is not installed (Debian's docker.io) and no engine answers at /var/run/docker.sock",
    )?;
    fs::create_dir_all(d).map_err(|e| e.to_string())?;
    let sock = format!("unix://{}/docker.sock", d.display());
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(d.join("dockerd.log"))
        .map_err(|e| e.to_string())?;
    Command::new(dockerd)
        .args([
            "--host",
            &sock,
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
        ])
        .arg("--data-root")
        .arg(d.join("root"))
        .arg("--exec-root")
        .arg(d.join("exec"))
        .arg("--pidfile")
        .arg(d.join("dockerd.pid"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        // A ^C to the benchmark reaches its clean-up, which stops the engine in order.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("start dockerd: {e}"))
}

/// Removes the image and stops our own dockerd, if one was started (SIGTERM, then SIGKILL
/// after 20 s).
pub fn stop(engine: &mut Engine) {
    let _ = engine
        .command(&["rmi", "-f", &engine.image])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if let Some(mut d) = engine.dockerd.take() {
        // SAFETY: kill(2) on a child we spawned and have not reaped.
        unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = d.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = d.kill();
        let _ = d.wait();
    }
}
