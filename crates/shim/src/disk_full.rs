//! A VM paused by a full host disk, and resumed when there is room again.
//!
//! Every disk device pauses its VM when a write fails with ENOSPC on the host
//! ([`vm::ON_WRITE_ERROR`]): QEMU stops the VM (run state `io-error`) and keeps the failed
//! requests, which it submits again on `cont`. The guest never sees the error, so its file
//! system stays consistent: what it was told was written is written, and what was not yet
//! acknowledged is retried. [`watch`] polls QEMU's run state and reports each change (so that
//! `state.json`, hence `docker inspect`, says why the container is paused), and resumes the VM
//! once each file system holding its disks (its root disk, its local volumes: [`disk_files`])
//! has [`RESUME_FREE_BYTES`] free; a VM still short of room just pauses again.
//!
//! QEMU is asked only when it said its run state changed, on its events monitor
//! ([`vm::QMP_EVENTS_SOCK`]), and every [`POLL`] while the VM waits for room: each question
//! wakes QEMU's monitor, which under TCG cost an idle VM a third of its host CPU when it was
//! asked every two seconds (issue 19).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::watch;
use vm::Qmp;

/// What `State.Error` says while the VM waits for room.
pub const MESSAGE: &str =
    "the node ran out of disk space: the container is paused until space is freed";

/// Free space on the VM's file system before a paused VM is resumed.
pub const RESUME_FREE_BYTES: u64 = 64 << 20;

/// How often QEMU's run state is read while the VM waits for room (or when its events
/// monitor is lost).
const POLL: Duration = Duration::from_secs(2);

/// The files of `spec`'s disks on the host: its root disk and its local volumes.
pub fn disk_files(spec: &crate::Spec) -> Vec<PathBuf> {
    let volumes = spec.volumes.iter().filter_map(|v| match &v.disk {
        crate::VolumeDisk::Local { path } => Some(path.clone()),
        crate::VolumeDisk::Rbd { .. } => None,
    });
    std::iter::once(spec.root_disk.clone())
        .chain(volumes)
        .collect()
}

/// Watch the VM whose QMP sockets are in `dir`, with its disks in `files`, until `gone` says
/// QEMU exited: `on_change(true)` when QEMU paused it for a failed write, `on_change(false)` when
/// it runs again. `log` gets a line when the events monitor cannot be had.
pub async fn watch(
    dir: PathBuf,
    files: Vec<PathBuf>,
    mut gone: watch::Receiver<Option<String>>,
    on_change: impl Fn(bool) + Send + 'static,
    log: impl Fn(String) + Send + 'static,
) {
    let sock = dir.join(vm::QMP_EVENTS_SOCK);
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, RunStateEvents::connect(&sock)).await;
    let mut events = match connected
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no greeting within {CONNECT_TIMEOUT:?}")))
    {
        Ok(events) => Some(events),
        Err(e) => {
            log(format!(
                "no QMP events ({e:#}): polling the VM's run state instead"
            ));
            None
        }
    };
    let mut paused = false;
    loop {
        let (d, f) = (dir.clone(), files.clone());
        if let Ok(Ok(now_paused)) = tokio::task::spawn_blocking(move || check(&d, &f)).await {
            if now_paused != paused {
                paused = now_paused;
                on_change(paused);
            }
        }
        match events.as_mut().filter(|_| !paused) {
            Some(stream) => tokio::select! {
                changed = stream.next_change() => {
                    if let Err(e) = changed {
                        log(format!("QMP events ended ({e:#}): polling the VM's run state instead"));
                        events = None;
                    }
                }
                _ = gone.wait_for(|g| g.is_some()) => return,
            },
            None => tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = gone.wait_for(|g| g.is_some()) => return,
            },
        }
    }
}

/// QEMU's run-state events on a monitor of their own: held open for the VM's life, read only
/// when QEMU writes.
struct RunStateEvents {
    reader: BufReader<UnixStream>,
}

/// How long QEMU may take to greet on its events monitor and take the capabilities.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest line taken from QEMU's monitor (its events are a few hundred bytes).
const MAX_LINE: u64 = 64 << 10;

impl RunStateEvents {
    /// Connects and negotiates capabilities, after which QEMU sends its events.
    async fn connect(sock: &Path) -> anyhow::Result<RunStateEvents> {
        let stream = UnixStream::connect(sock)
            .await
            .with_context(|| format!("connect to {}", sock.display()))?;
        let mut events = RunStateEvents {
            reader: BufReader::new(stream),
        };
        let greeting = events.next_message().await?;
        anyhow::ensure!(
            greeting.get("QMP").is_some(),
            "not a QMP greeting: {greeting}"
        );
        let stream = events.reader.get_mut();
        stream
            .write_all(b"{\"execute\": \"qmp_capabilities\"}\n")
            .await?;
        loop {
            let reply = events.next_message().await?;
            if reply.get("return").is_some() {
                return Ok(events);
            }
            anyhow::ensure!(
                reply.get("event").is_some(),
                "capabilities refused: {reply}"
            );
        }
    }

    /// Waits until QEMU stops or resumes the VM, or reports a failed write.
    async fn next_change(&mut self) -> anyhow::Result<()> {
        loop {
            let message = self.next_message().await?;
            let event = message.get("event").and_then(|e| e.as_str());
            if matches!(event, Some("STOP" | "RESUME" | "BLOCK_IO_ERROR")) {
                return Ok(());
            }
        }
    }

    async fn next_message(&mut self) -> anyhow::Result<serde_json::Value> {
        let mut line = String::new();
        let n = (&mut self.reader)
            .take(MAX_LINE)
            .read_line(&mut line)
            .await?;
        anyhow::ensure!(n > 0, "QEMU closed its events monitor");
        anyhow::ensure!(line.ends_with('\n'), "a monitor line over {MAX_LINE} bytes");
        serde_json::from_str(&line).context("QEMU's monitor sent something that is not JSON")
    }
}

/// Whether the VM is paused for a failed write (`io-error`); if it is and there is room again
/// for each of its disk `files`, resume it (and report it still paused: the next poll sees
/// whether it stayed running).
fn check(dir: &Path, files: &[PathBuf]) -> anyhow::Result<bool> {
    let mut qmp = Qmp::connect(&dir.join(vm::QMP_SOCK), Duration::from_secs(2))?;
    if qmp.status()? != "io-error" {
        return Ok(false);
    }
    let room = |f: &PathBuf| {
        let on = f.parent().unwrap_or(f);
        space(on).is_ok_and(|(free, _)| free >= RESUME_FREE_BYTES)
    };
    if files.iter().all(room) {
        qmp.execute("cont", json!({}))?;
    }
    Ok(true)
}

/// (bytes an unprivileged writer may still use, total bytes) of the file system holding `path`.
pub fn space(path: &Path) -> std::io::Result<(u64, u64)> {
    let s = nix::sys::statvfs::statvfs(path)?;
    let unit = s.fragment_size() as u64;
    Ok((s.blocks_available() as u64 * unit, s.blocks() as u64 * unit))
}
