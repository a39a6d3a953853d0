//! `Rehearse` (standby VMs only): run the steps of a `Start` once on the standby's scratch disk
//! and leave nothing behind. Under TCG every first run of a piece of guest code (the kernel's
//! mount, namespace, fork and exec paths, the agent's own) pays for its translation, which is
//! most of a cold `Start`; a VM that has rehearsed has that behind it when a container claims
//! it. Nothing of the scratch disk survives: it is unmounted here, its cached blocks are dropped
//! at `Start`, and the scratch process ran in PID and mount namespaces that died with it.

use std::time::Instant;

use agent_proto::{GuestMsg, StartSpec};
use tokio::sync::mpsc;

use crate::process::{self, Target};
use crate::session::{self, Credit};
use crate::{network, rootfs};

/// The stream number the rehearsal's process gets: never a container's (those count up from 0
/// on the host's side), and its frames never leave the guest.
const REHEARSAL_STREAM: u32 = u32::MAX;

/// Run the rehearsal of `spec` (its identity already applied); the time it took, or what
/// failed.
pub async fn run(spec: StartSpec) -> Result<u64, String> {
    let t0 = Instant::now();
    let oom_before = process::oom_kills();
    let device = spec.root_device.clone();
    let spawned = tokio::task::spawn_blocking(move || prepare_and_spawn(spec))
        .await
        .map_err(|e| e.to_string())??;
    let result = relay_until_exit(spawned, oom_before).await;
    if let Err(e) = nix::mount::umount(rootfs::ROOTFS) {
        return Err(format!("unmounting the scratch root: {e}"));
    }
    result?;
    // The host swaps the disk behind the slot next (a claim, a preparation).
    tokio::task::spawn_blocking(move || rootfs::wait_released(&device))
        .await
        .map_err(|e| e.to_string())??;
    Ok(t0.elapsed().as_millis() as u64)
}

/// Network, root and spawn, as a `Start` does them.
fn prepare_and_spawn(spec: StartSpec) -> Result<process::Spawned, String> {
    if !spec.volumes.is_empty() || !spec.tmpfs.is_empty() || spec.root_mounted {
        return Err("a rehearsal mounts nothing but a fresh scratch root".into());
    }
    // eth0 as a container's (its tap is in a namespace of its own until the VM is claimed),
    // then without its address again.
    network::setup(spec.network.as_ref()).map_err(|e| format!("network: {e}"))?;
    network::reset_nic().map_err(|e| format!("network: {e}"))?;
    // The root as a container's, /etc files written and all; the hostname is the VM's again
    // afterwards. Mounted read-only first and then remounted read-write: the way of a claim of
    // a standby prepared for its image (most claims in a burst), and most of a fresh mount's.
    let hostname = nix::unistd::gethostname().map_err(|e| format!("gethostname: {e}"))?;
    rootfs::mount_read_only(&spec.root_device).map_err(|e| format!("root: {e}"))?;
    let prepared = rootfs::prepare(&rootfs::Target {
        device: spec.root_device,
        hostname: spec.hostname,
        machine_id: spec.machine_id,
        network: spec.network,
        root_mounted: true,
    });
    let _ = nix::unistd::sethostname(&hostname);
    prepared.map_err(|e| format!("root: {e}"))?;
    process::spawn(&spec.process, Target::Main).map_err(|e| format!("spawn: {e}"))
}

/// The process's session as a container's (its output pumped, its exit awaited), into a sink
/// instead of the host; its exit code must be 0.
async fn relay_until_exit(spawned: process::Spawned, oom_before: u64) -> Result<(), String> {
    let exited = process::register(spawned.pid);
    let (sink, mut frames) = mpsc::unbounded_channel();
    let (_stdin, stdin_rx) = mpsc::unbounded_channel();
    let exit = session::Exit {
        code: exited,
        oom_before,
    };
    session::run(
        REHEARSAL_STREAM,
        spawned,
        None,
        exit,
        stdin_rx,
        Credit::new(),
        sink,
    )
    .await;
    let mut exit_code = None;
    while let Ok(frame) = frames.try_recv() {
        if let Ok(GuestMsg::Exited { exit_code: c, .. }) = frame.guest_msg() {
            exit_code = Some(c);
        }
    }
    match exit_code {
        Some(0) => Ok(()),
        Some(c) => Err(format!("the scratch process exited with {c}")),
        None => Err("the scratch process was never reaped".into()),
    }
}
