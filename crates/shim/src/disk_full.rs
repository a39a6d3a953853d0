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

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;
use vm::Qmp;

/// What `State.Error` says while the VM waits for room.
pub const MESSAGE: &str =
    "the node ran out of disk space: the container is paused until space is freed";

/// Free space on the VM's file system before a paused VM is resumed.
pub const RESUME_FREE_BYTES: u64 = 64 << 20;

/// How often QEMU's run state is read.
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

/// Watch the VM whose QMP socket is in `dir`, with its disks in `files`, until `gone` says QEMU
/// exited: `on_change(true)` when QEMU paused it for a failed write, `on_change(false)` when it
/// runs again.
pub async fn watch(
    dir: PathBuf,
    files: Vec<PathBuf>,
    mut gone: watch::Receiver<Option<String>>,
    on_change: impl Fn(bool) + Send + 'static,
) {
    let mut paused = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = gone.wait_for(|g| g.is_some()) => return,
        }
        let (d, f) = (dir.clone(), files.clone());
        let Ok(Ok(now_paused)) = tokio::task::spawn_blocking(move || check(&d, &f)).await else {
            continue;
        };
        if now_paused != paused {
            paused = now_paused;
            on_change(paused);
        }
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
