//! `rbd`: volumes as Ceph RBD images, replicated by Ceph (the pool's size and min_size are the
//! operator's: 3 and 2 as DESIGN.md has it), which QEMU opens itself with its `rbd` driver. A
//! volume is the image `vol-ID`, a snapshot the image `snap-ID`: a full, independent copy taken
//! from an RBD snapshot of the volume at one instant (so a snapshot outlives its volume, as
//! `local` ones do). hyperd drives the cluster with the `rbd` and `qemu-img` commands of
//! Debian's `ceph-common` and `qemu-utils`/`qemu-block-extra`, as the operator's Ceph user.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shim::VolumeDisk;

use super::backend::{Backend, BackendError, BackendResult};

/// How long one `rbd` command may take before it is killed (a cluster that lost its monitors
/// would otherwise hang every volume call).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

const VOLUME_PREFIX: &str = "vol-";
const SNAPSHOT_PREFIX: &str = "snap-";

/// The operator's cluster: `--ceph-conf`, `--ceph-pool`, `--ceph-user`, `--ceph-keyring`.
#[derive(Debug, Clone)]
pub struct RbdConfig {
    pub conf: PathBuf,
    pub pool: String,
    pub user: String,
    pub keyring: PathBuf,
}

pub struct Rbd {
    cfg: RbdConfig,
    /// The user's cephx key (base64) and the monitors (`host:port`), for QEMU, which reads no
    /// ceph.conf (it is chrooted).
    key: String,
    monitors: Vec<String>,
    /// Where volumes are formatted before they are imported (`DATA/volumes/rbd-tmp`).
    scratch: PathBuf,
}

impl Rbd {
    /// Reads the key and the monitors, and checks that the pool answers.
    pub fn new(cfg: RbdConfig, data_root: &Path) -> BackendResult<Self> {
        let conf = std::fs::read_to_string(&cfg.conf)
            .map_err(|e| BackendError(format!("reading {}: {e}", cfg.conf.display())))?;
        let monitors = monitors_of(&conf).ok_or_else(|| {
            BackendError(format!(
                "{} names no monitor (`mon host`)",
                cfg.conf.display()
            ))
        })?;
        let keyring = std::fs::read_to_string(&cfg.keyring)
            .map_err(|e| BackendError(format!("reading {}: {e}", cfg.keyring.display())))?;
        let key = key_of(&keyring, &cfg.user).ok_or_else(|| {
            BackendError(format!(
                "{} has no key for client.{}",
                cfg.keyring.display(),
                cfg.user
            ))
        })?;
        let scratch = data_root.join("volumes/rbd-tmp");
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch)
            .map_err(|e| BackendError(format!("creating {}: {e}", scratch.display())))?;
        let rbd = Self {
            cfg,
            key,
            monitors,
            scratch,
        };
        rbd.rbd(&["ls", "--format", "json", &rbd.cfg.pool])?;
        Ok(rbd)
    }

    fn spec(&self, image: &str) -> String {
        format!("{}/{image}", self.cfg.pool)
    }

    /// `rbd ARGS` as the operator's user; its stdout, or what it said when it failed.
    fn rbd(&self, args: &[&str]) -> BackendResult<String> {
        let mut cmd = Command::new("rbd");
        cmd.arg("-c")
            .arg(&self.cfg.conf)
            .args(["--id", &self.cfg.user, "--keyring"])
            .arg(&self.cfg.keyring)
            .args(args);
        run(cmd, &format!("rbd {}", args.join(" ")))
    }

    /// Imports the raw file `file` as the new image `image` (holes are not written: qemu-img
    /// skips what reads as zeros).
    fn import(&self, file: &Path, image: &str) -> BackendResult<()> {
        let target = format!(
            "rbd:{}:id={}:conf={}:keyring={}",
            self.spec(image),
            self.cfg.user,
            self.cfg.conf.display(),
            self.cfg.keyring.display()
        );
        let mut cmd = Command::new("qemu-img");
        cmd.args(["convert", "-q", "-f", "raw", "-O", "raw"])
            .arg(file)
            .arg(target);
        run(cmd, "qemu-img convert").map(|_| ())
    }

    /// An ext4 file system of `bytes` holding `tree` (or nothing) as the new image `image`.
    fn make(&self, image: &str, bytes: u64, tree: Option<&Path>) -> BackendResult<()> {
        let file = self.scratch.join(format!("{image}.img"));
        let _ = std::fs::remove_file(&file);
        let made =
            super::backend::make_ext4(&file, bytes, tree).and_then(|()| self.import(&file, image));
        let _ = std::fs::remove_file(&file);
        made
    }

    /// The size of `pool/image` in bytes.
    fn size_of(&self, image_spec: &str) -> BackendResult<u64> {
        let out = self.rbd(&["info", "--format", "json", image_spec])?;
        serde_json::from_str::<serde_json::Value>(&out)
            .ok()
            .and_then(|v| v["size"].as_u64())
            .ok_or_else(|| BackendError(format!("rbd info {image_spec}: no size in {out:?}")))
    }

    /// Removes `image`. hyperd removes a volume only when none of its VMs has it, so a
    /// watcher still on the image is a client that died (a QEMU killed with the node): it is
    /// fenced (blocklisted, which `profile rbd` allows) instead of waited for (30 s).
    fn remove_image(&self, image: &str) -> BackendResult<()> {
        let rm = || match self.rbd(&["rm", "--no-progress", &self.spec(image)]) {
            Err(e) if e.0.contains("No such file") || e.0.contains("(2)") => Ok(()),
            other => other.map(|_| ()),
        };
        match rm() {
            Err(e) if e.0.contains("has watchers") => {
                self.fence_watchers(image)?;
                rm()
            }
            other => other,
        }
    }

    /// Blocklists every client watching `image`: dead ones (see [`Rbd::remove_image`]), or a
    /// lost node's, whose exclusive lock on the image then passes to the next client.
    fn fence_watchers(&self, image: &str) -> BackendResult<()> {
        let out = self.rbd(&["status", "--format", "json", &self.spec(image)])?;
        let status: serde_json::Value = serde_json::from_str(&out)
            .map_err(|e| BackendError(format!("rbd status {image}: {e}")))?;
        for w in status["watchers"].as_array().into_iter().flatten() {
            let Some(addr) = w["address"].as_str() else {
                continue;
            };
            tracing::warn!("fencing {addr}, a dead client still watching rbd image {image}");
            let mut cmd = Command::new("ceph");
            cmd.arg("-c")
                .arg(&self.cfg.conf)
                .args(["--id", &self.cfg.user, "--keyring"])
                .arg(&self.cfg.keyring)
                .args(["osd", "blocklist", "add", addr, "3600"]);
            run(cmd, "ceph osd blocklist add")?;
        }
        Ok(())
    }
}

/// Runs `cmd`, killing it after [`COMMAND_TIMEOUT`].
fn run(mut cmd: Command, what: &str) -> BackendResult<String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| BackendError(format!("running {what}: {e}")))?;
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(BackendError(format!(
                    "{what}: no answer from the Ceph cluster within {} s",
                    COMMAND_TIMEOUT.as_secs()
                )));
            }
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| BackendError(format!("running {what}: {e}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(BackendError(format!(
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// `mon host` of a ceph.conf as `host:port` of each monitor's msgr2 address (port 3300 when
/// the conf gives a bare address).
fn monitors_of(conf: &str) -> Option<Vec<String>> {
    let line = conf.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        matches!(k.trim().replace('_', " ").as_str(), "mon host").then(|| v.trim().to_string())
    })?;
    let mut out = Vec::new();
    for entry in line.split([',', ' ', ';']).filter(|e| !e.is_empty()) {
        let entry = entry.trim_matches(|c| c == '[' || c == ']');
        let addr = match entry.split_once(':') {
            Some(("v2", a)) => a.to_string(),
            Some(("v1", _)) => continue,
            _ => entry.to_string(),
        };
        let addr = addr.split('/').next().unwrap_or("").to_string();
        let with_port = if addr.contains(':') {
            addr
        } else {
            format!("{addr}:3300")
        };
        if !out.contains(&with_port) {
            out.push(with_port);
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The `key = ...` of `[client.USER]` in a keyring.
fn key_of(keyring: &str, user: &str) -> Option<String> {
    let section = format!("[client.{user}]");
    let mut inside = false;
    for line in keyring.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == section;
        } else if inside {
            if let Some((k, v)) = line.split_once('=') {
                if k.trim() == "key" {
                    return Some(v.trim().to_string());
                }
            }
        }
    }
    None
}

impl Backend for Rbd {
    fn name(&self) -> &'static str {
        "rbd"
    }

    fn create(&self, id: &str, bytes: u64, tree: Option<&Path>) -> BackendResult<()> {
        self.make(&format!("{VOLUME_PREFIX}{id}"), bytes, tree)
    }

    fn replace(&self, id: &str, bytes: u64, tree: &Path) -> BackendResult<()> {
        let image = format!("{VOLUME_PREFIX}{id}");
        let new = format!("{image}-new");
        let _ = self.remove_image(&new);
        self.make(&new, bytes, Some(tree))?;
        self.remove_image(&image)?;
        self.rbd(&["rename", &self.spec(&new), &self.spec(&image)])
            .map(|_| ())
    }

    fn create_from_snapshot(&self, id: &str, snapshot: &str, bytes: u64) -> BackendResult<()> {
        let image = self.spec(&format!("{VOLUME_PREFIX}{id}"));
        self.rbd(&[
            "cp",
            "--no-progress",
            &self.spec(&format!("{SNAPSHOT_PREFIX}{snapshot}")),
            &image,
        ])?;
        let grown = self.size_of(&image).and_then(|current| {
            if bytes <= current {
                return Ok(());
            }
            let size = format!("{}M", bytes >> 20);
            self.rbd(&["resize", "--no-progress", "--size", &size, &image])
                .map(|_| ())
        });
        if grown.is_err() {
            let _ = self.rbd(&["rm", "--no-progress", &image]);
        }
        grown
    }

    fn snapshot(&self, id: &str, snapshot: &str) -> BackendResult<()> {
        let volume = self.spec(&format!("{VOLUME_PREFIX}{id}"));
        let instant = format!("{volume}@{SNAPSHOT_PREFIX}{snapshot}");
        self.rbd(&["snap", "create", "--no-progress", &instant])?;
        let copied = self.rbd(&[
            "cp",
            "--no-progress",
            &instant,
            &self.spec(&format!("{SNAPSHOT_PREFIX}{snapshot}")),
        ]);
        let dropped = self.rbd(&["snap", "rm", "--no-progress", &instant]);
        copied?;
        dropped.map(|_| ())
    }

    fn remove(&self, id: &str) -> BackendResult<()> {
        self.remove_image(&format!("{VOLUME_PREFIX}{id}"))
    }

    fn fence(&self, id: &str) -> BackendResult<()> {
        self.fence_watchers(&format!("{VOLUME_PREFIX}{id}"))
    }

    fn remove_snapshot(&self, snapshot: &str) -> BackendResult<()> {
        self.remove_image(&format!("{SNAPSHOT_PREFIX}{snapshot}"))
    }

    fn disk(&self, id: &str) -> VolumeDisk {
        VolumeDisk::Rbd {
            pool: self.cfg.pool.clone(),
            image: format!("{VOLUME_PREFIX}{id}"),
            user: self.cfg.user.clone(),
            key: self.key.clone(),
            monitors: self.monitors.clone(),
        }
    }

    fn used_bytes(&self, id: &str) -> u64 {
        let out = self.rbd(&[
            "du",
            "--format",
            "json",
            &self.spec(&format!("{VOLUME_PREFIX}{id}")),
        ]);
        out.ok()
            .and_then(|o| serde_json::from_str::<serde_json::Value>(&o).ok())
            .and_then(|v| v["total_used_size"].as_u64())
            .unwrap_or(0)
    }

    fn list(&self) -> BackendResult<(Vec<String>, Vec<String>)> {
        let out = self.rbd(&["ls", "--format", "json", &self.cfg.pool])?;
        let names: Vec<String> =
            serde_json::from_str(&out).map_err(|e| BackendError(format!("rbd ls: {e}")))?;
        let ids = |prefix: &str| -> Vec<String> {
            names
                .iter()
                .filter_map(|n| n.strip_prefix(prefix))
                .filter(|id| !id.ends_with("-new"))
                .map(String::from)
                .collect()
        };
        Ok((ids(VOLUME_PREFIX), ids(SNAPSHOT_PREFIX)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitors_from_the_forms_of_mon_host() {
        let cases = [
            (
                "mon host = [v2:192.0.2.2:3300,v1:192.0.2.2:6789]",
                vec!["192.0.2.2:3300"],
            ),
            (
                "mon_host = 10.0.0.1, 10.0.0.2:3301",
                vec!["10.0.0.1:3300", "10.0.0.2:3301"],
            ),
            (
                "[global]\n\tmon host = [v2:1.2.3.4:3300/0,v1:1.2.3.4:6789/0] [v2:1.2.3.5:3300]\n",
                vec!["1.2.3.4:3300", "1.2.3.5:3300"],
            ),
        ];
        for (i, (conf, want)) in cases.iter().enumerate() {
            assert_eq!(monitors_of(conf).unwrap(), *want, "test[{i}]");
        }
        assert!(monitors_of("[global]\nfsid = x\n").is_none());
    }

    #[test]
    fn the_users_key_from_a_keyring() {
        let ring = "[client.admin]\n\tkey = ADMINKEY==\n[client.hyper]\n\tkey = HYPERKEY==\n\tcaps mon = \"profile rbd\"\n";
        assert_eq!(key_of(ring, "hyper").as_deref(), Some("HYPERKEY=="));
        assert_eq!(key_of(ring, "admin").as_deref(), Some("ADMINKEY=="));
        assert!(key_of(ring, "other").is_none());
    }
}
