//! `docker cp`, `export` and `diff` (the comparison is `changes`'s): archive streams into and out of a container's file
//! system (`GET`/`HEAD`/`PUT /containers/{id}/archive`, `/export`, `/changes`).
//!
//! The guest agent does the work in the container's root (`agent::archive`); the shim relays
//! it as an exec-like stream (stdout: a stat line, then the tar; stdin: the tar; stderr: the
//! error; the exit frame), so memory stays bounded end to end by the protocol's windows and
//! the sockets' buffers. A running container serves it from its own VM. A stopped container's
//! disk is never mounted in the host's kernel (a tenant-written ext4 is hostile input): a
//! short-lived helper VM (`HelperVm`) gets the container's root overlay and volumes, its agent
//! mounts them and serves the stream, and the VM is shut down (the guest syncs first) when the
//! stream ends. While a helper holds the disk, `start` and `rm` wait for it (a bounded time,
//! then 409): two VMs must never write one disk.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use agent_proto::{ArchiveOp, ArchiveRequest, FileMeta, PathStat};
use agent_proto::{ARCHIVE_INVALID, ARCHIVE_NOT_A_DIRECTORY, ARCHIVE_NOT_FOUND, MAX_STAT_LINE};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use tokio::net::UnixStream;
use tokio::sync::OwnedMutexGuard;

use super::{
    kill_processes_in, launch_supervisor, vm_spec, wait_for_supervisor_exit, write_private, Runtime,
};
use crate::model::Container;
use crate::{shim_link, sizes, Result, RuntimeError};

pub(super) mod changes;

/// How long `start` or `rm` waits for a copy that holds a stopped container's disk.
pub(super) const DISK_WAIT: Duration = Duration::from_secs(60);
/// Guest-chosen error text kept for a reply.
const MAX_ERROR: usize = 1024;
/// Largest frame the shim relays (a guest frame's payload at most).
const MAX_FRAME: usize = agent_proto::MAX_PAYLOAD;

/// One relayed frame that matters.
enum Chunk {
    Out(Vec<u8>),
    Exit(i32),
}

/// The read side of the shim's relay: Docker multiplexed frames (stdout, stderr, exit).
struct Relay {
    read: ReadHalf<BufReader<UnixStream>>,
    /// The first [`MAX_ERROR`] bytes of stderr: the agent's error text.
    stderr: Vec<u8>,
}

impl Relay {
    async fn next(&mut self) -> Result<Chunk> {
        loop {
            let mut h = [0u8; 8];
            self.read
                .read_exact(&mut h)
                .await
                .map_err(RuntimeError::ShimGone)?;
            let len = u32::from_be_bytes(h[4..8].try_into().expect("4 bytes")) as usize;
            if len > MAX_FRAME {
                return Err(RuntimeError::Internal(
                    "the VM supervisor sent an oversized frame".into(),
                ));
            }
            let mut payload = vec![0u8; len];
            self.read
                .read_exact(&mut payload)
                .await
                .map_err(RuntimeError::ShimGone)?;
            match h[0] {
                1 => return Ok(Chunk::Out(payload)),
                2 => {
                    let room = MAX_ERROR.saturating_sub(self.stderr.len());
                    self.stderr
                        .extend_from_slice(&payload[..room.min(payload.len())]);
                }
                shim::EXIT_FRAME => {
                    let v: serde_json::Value = serde_json::from_slice(&payload).unwrap_or_default();
                    return Ok(Chunk::Exit(v["exit_code"].as_i64().unwrap_or(1) as i32));
                }
                _ => {}
            }
        }
    }

    /// Skip output up to the exit frame.
    async fn exit_code(&mut self) -> Result<i32> {
        loop {
            if let Chunk::Exit(code) = self.next().await? {
                return Ok(code);
            }
        }
    }
}

/// An open archive stream: its path's stat, then (for `Get`) the tar, or (for `Put`) the
/// upload of one.
pub struct Archive {
    pub stat: PathStat,
    relay: Relay,
    write: WriteHalf<BufReader<UnixStream>>,
    /// Tar bytes read with the stat line.
    pending: Vec<u8>,
    done: bool,
    what: Subject,
    helper: Option<HelperVm>,
}

/// For error messages: the path and the container as the user named them.
#[derive(Clone)]
struct Subject {
    path: String,
    container: String,
}

impl Subject {
    fn error(&self, code: i32, stderr: &[u8]) -> RuntimeError {
        let text: String = String::from_utf8_lossy(stderr)
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let text = text.trim();
        match code {
            ARCHIVE_NOT_FOUND => RuntimeError::NotFound(format!(
                "Could not find the file {} in container {}",
                self.path, self.container
            )),
            ARCHIVE_NOT_A_DIRECTORY => {
                RuntimeError::Invalid("extraction point is not a directory".into())
            }
            ARCHIVE_INVALID => RuntimeError::Invalid(text.to_string()),
            _ => RuntimeError::Internal(format!(
                "copying {} in container {}: {}",
                self.path,
                self.container,
                if text.is_empty() { "failed" } else { text }
            )),
        }
    }
}

fn busy(c: &Container) -> RuntimeError {
    RuntimeError::Conflict(format!(
        "container {} is busy: a copy (docker cp) is using its stopped file system; try again when it ends",
        c.name
    ))
}

impl Runtime {
    /// Open an archive stream on `path` of the container: answered once the agent has
    /// resolved the path (404 when missing; for `Put`, 400 when not a directory).
    pub async fn archive(
        self: &Arc<Self>,
        tenant: &str,
        reference: &str,
        request: ArchiveRequest,
    ) -> Result<Archive> {
        let entry = self.entry(tenant, reference)?;
        // The order `start` and `rm` take them in: ops, then disk.
        let (c, disk) = {
            let _op = entry.ops.lock().await;
            (entry.snapshot(), disk_for_start(&entry).await?)
        };
        let what = Subject {
            path: request.path.clone(),
            container: reference.to_string(),
        };
        let (dir, mut helper) = if c.is_running() {
            drop(disk);
            (self.dir(&c.id), None)
        } else {
            let helper = HelperVm::boot(self, &c, disk).await?;
            (helper.dir.clone(), Some(helper))
        };
        let call = shim_link::call(&dir, json!({"op": "archive", "request": request})).await;
        let stream = match call {
            Ok((_, s)) => s,
            Err(e) => {
                if let Some(h) = helper.take() {
                    h.shut_down().await;
                }
                return Err(match e {
                    RuntimeError::Shim(m) => RuntimeError::Conflict(format!(
                        "Container {} cannot serve the copy: {m}",
                        c.name
                    )),
                    e => e,
                });
            }
        };
        let (read, write) = tokio::io::split(stream);
        let mut a = Archive {
            stat: PathStat::default(),
            relay: Relay {
                read,
                stderr: Vec::new(),
            },
            write,
            pending: Vec::new(),
            done: false,
            what,
            helper,
        };
        if let Err(e) = a.read_stat().await {
            a.close().await;
            return Err(e);
        }
        Ok(a)
    }
}

impl Archive {
    /// Read up to the end of the stat line (or the error that came instead).
    async fn read_stat(&mut self) -> Result<()> {
        let mut line = Vec::new();
        loop {
            match self.relay.next().await? {
                Chunk::Out(data) => {
                    line.extend_from_slice(&data);
                    if let Some(nl) = line.iter().position(|&b| b == b'\n') {
                        self.pending = line.split_off(nl + 1);
                        line.truncate(nl);
                        break;
                    }
                    if line.len() > MAX_STAT_LINE {
                        return Err(RuntimeError::Internal(
                            "the guest agent sent an oversized stat".into(),
                        ));
                    }
                }
                Chunk::Exit(code) => {
                    self.done = true;
                    let code = if code == 0 { 1 } else { code };
                    return Err(self.what.error(code, &self.relay.stderr));
                }
            }
        }
        self.stat = serde_json::from_slice(&line)
            .map_err(|e| RuntimeError::Internal(format!("the guest agent sent a bad stat: {e}")))?;
        Ok(())
    }

    /// The next piece of the tar (`Get`); `None` at its end. An error after the start means
    /// the archive is cut short: the caller must not present it as complete.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>> {
        if !self.pending.is_empty() {
            return Ok(Some(std::mem::take(&mut self.pending)));
        }
        if self.done {
            return Ok(None);
        }
        let r = match self.relay.next().await {
            Ok(Chunk::Out(data)) => return Ok(Some(data)),
            Ok(Chunk::Exit(0)) => Ok(None),
            Ok(Chunk::Exit(code)) => Err(self.what.error(code, &self.relay.stderr)),
            Err(e) => Err(e),
        };
        self.done = true;
        self.close().await;
        r
    }

    /// Send `body` (a tar) to be extracted (`Put`) and wait for the agent's verdict. Sending
    /// stops as soon as the agent has ended (it failed: its error is the answer).
    pub async fn upload<S, E>(mut self, mut body: S) -> Result<()>
    where
        S: futures_core::Stream<Item = std::result::Result<Vec<u8>, E>> + Unpin,
        E: std::fmt::Display,
    {
        use std::future::poll_fn;
        let outcome: Result<i32> = {
            let (relay, write) = (&mut self.relay, &mut self.write);
            let mut relay_end = std::pin::pin!(relay.exit_code());
            let mut ended = None;
            let mut failed = None;
            loop {
                tokio::select! {
                    r = &mut relay_end => {
                        ended = Some(r);
                        break;
                    }
                    item = poll_fn(|cx| std::pin::Pin::new(&mut body).poll_next(cx)) => match item {
                        Some(Ok(chunk)) => {
                            if write.write_all(&chunk).await.is_err() {
                                break;
                            }
                        }
                        Some(Err(e)) => {
                            failed = Some(e.to_string());
                            break;
                        }
                        None => break,
                    },
                }
            }
            let _ = write.shutdown().await;
            match (failed, ended) {
                (Some(e), _) => Err(RuntimeError::Invalid(format!("reading the archive: {e}"))),
                (None, Some(r)) => r,
                (None, None) => relay_end.await,
            }
        };
        self.done = true;
        self.close().await;
        match outcome? {
            0 => Ok(()),
            code => Err(self.what.error(code, &self.relay.stderr)),
        }
    }

    /// Shut the helper VM down (if any) and wait until it is gone.
    pub async fn close(&mut self) {
        if let Some(h) = self.helper.take() {
            h.shut_down().await;
        }
    }
}

/// A short-lived VM over a stopped container's disks (see the module docs): booted with the
/// container's root overlay and volumes, no network and no process. The disk guard is held
/// until the VM is gone.
struct HelperVm {
    dir: PathBuf,
    runtime: Arc<Runtime>,
    container: Container,
    disk: Option<OwnedMutexGuard<()>>,
}

/// Where a container's helper VM lives: a directory of its own, so its state file, sockets
/// and console never mix with the container's.
pub(super) fn helper_dir(container_dir: &Path) -> PathBuf {
    container_dir.join("cp")
}

impl HelperVm {
    async fn boot(
        runtime: &Arc<Runtime>,
        c: &Container,
        disk: OwnedMutexGuard<()>,
    ) -> Result<HelperVm> {
        let container_dir = runtime.dir(&c.id);
        let dir = helper_dir(&container_dir);
        remove_leftover(&dir).await;
        let size = sizes::lookup(&c.size)?;
        let volumes = runtime.hold_volumes(c)?;
        if let Err(e) = std::fs::create_dir_all(&dir) {
            runtime.release_volumes(c);
            return Err(RuntimeError::io(format!("create {}", dir.display()))(e));
        }
        let vm = HelperVm {
            dir: dir.clone(),
            runtime: runtime.clone(),
            container: c.clone(),
            disk: Some(disk),
        };
        let spec = shim_link::ShimSpec {
            id: c.id.clone(),
            root_disk: container_dir.join("root.qcow2"),
            volumes,
            helper: true,
            ..vm_spec(&runtime.cfg, size)
        };
        let booted = async {
            write_private(
                &dir.join("spec.json"),
                &serde_json::to_vec_pretty(&spec).expect("json"),
            )
            .map_err(RuntimeError::io("write spec.json"))?;
            // The container's own group: a helper VM is no way around the tenant's limits.
            let cgroup = runtime.cgroup_entries(c)?;
            launch_supervisor(&runtime.cfg.shim_binary, &dir, &cgroup).await?;
            shim_link::request(&dir, json!({"op": "mount"})).await?;
            Ok::<_, RuntimeError>(())
        }
        .await;
        match booted {
            Ok(()) => Ok(vm),
            Err(e) => {
                vm.shut_down().await;
                Err(RuntimeError::Internal(format!(
                    "the helper VM for container {} did not come up: {e}",
                    c.name
                )))
            }
        }
    }

    /// The guest syncs, QEMU and the supervisor exit, the directory goes, the volumes and the
    /// disk are free again.
    async fn shut_down(mut self) {
        let disk = self.disk.take();
        stop(&self.dir).await;
        self.runtime.release_volumes(&self.container);
        self.runtime.release_cgroup(&self.container).await;
        drop(disk);
    }
}

impl Drop for HelperVm {
    /// A stream dropped half way (the client went away): shut the VM down in the background.
    fn drop(&mut self) {
        let Some(disk) = self.disk.take() else {
            return;
        };
        let (dir, runtime, c) = (
            self.dir.clone(),
            self.runtime.clone(),
            self.container.clone(),
        );
        let done = async move {
            stop(&dir).await;
            runtime.release_volumes(&c);
            runtime.release_cgroup(&c).await;
            drop(disk);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(done);
            }
            Err(_) => {
                kill_processes_in(&self.dir);
            }
        }
    }
}

async fn stop(dir: &Path) {
    if dir.join("shim.sock").exists() {
        let _ = shim_link::request(dir, json!({"op": "shutdown"})).await;
    }
    wait_for_supervisor_exit(dir).await;
    kill_processes_in(dir);
    let _ = std::fs::remove_dir_all(dir);
}

/// A helper VM a crash left behind (hyperd died during a copy): stop it and remove it.
pub(super) async fn remove_leftover(dir: &Path) {
    if dir.exists() {
        stop(dir).await;
    }
}

/// For `start`, `rm` and a copy (under the container's ops lock): wait until no helper VM has the
/// disk (bounded: then 409).
pub(super) async fn disk_for_start(entry: &super::Entry) -> Result<OwnedMutexGuard<()>> {
    tokio::time::timeout(DISK_WAIT, entry.disk.clone().lock_owned())
        .await
        .map_err(|_| busy(&entry.snapshot()))
}

/// Most entries a guest's manifest may list.
pub(super) const MAX_MANIFEST_ENTRIES: u64 = 4_000_000;

impl Runtime {
    /// Docker's `changes`: the container's root file system against its image's, by path
    /// (0 modified, 1 added, 2 deleted).
    pub async fn changes(
        self: &Arc<Self>,
        tenant: &str,
        reference: &str,
        freeze: bool,
    ) -> Result<Vec<(String, changes::Kind)>> {
        let c = self.get(tenant, reference)?;
        let content = self.images.content().clone();
        let image_id = c.image_id.clone();
        let manifest = tokio::task::spawn_blocking(move || {
            let path = content.manifest(&image_id)?;
            std::fs::read(&path)
                .map_err(|e| RuntimeError::io(format!("read {}", path.display()))(e))
        })
        .await
        .map_err(|e| RuntimeError::Internal(e.to_string()))??;
        let mut differ = changes::Differ::new(
            manifest
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .filter_map(|l| serde_json::from_slice::<FileMeta>(l).ok()),
        );
        let request = ArchiveRequest {
            op: ArchiveOp::Manifest,
            path: "/".into(),
            no_overwrite_dir_non_dir: false,
            chown_user: String::new(),
            freeze,
        };
        let mut a = self.archive(tenant, reference, request).await?;
        let (mut buf, mut entries) = (Vec::new(), 0u64);
        while let Some(chunk) = a.next_chunk().await? {
            buf.extend_from_slice(&chunk);
            let mut start = 0;
            while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
                let line = &buf[start..start + nl];
                start += nl + 1;
                entries += 1;
                if entries > MAX_MANIFEST_ENTRIES {
                    return Err(RuntimeError::Invalid(format!(
                        "the container's file system has more than {MAX_MANIFEST_ENTRIES} entries"
                    )));
                }
                let meta: FileMeta = serde_json::from_slice(line).map_err(|e| {
                    RuntimeError::Internal(format!("the guest agent sent a bad manifest line: {e}"))
                })?;
                differ.see(meta);
            }
            buf.drain(..start);
            if buf.len() > MAX_STAT_LINE {
                return Err(RuntimeError::Internal(
                    "the guest agent sent an oversized manifest line".into(),
                ));
            }
        }
        Ok(differ.finish())
    }
}
