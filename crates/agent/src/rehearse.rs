//! `Rehearse` (standby VMs only): run the steps of a `Start` once on the standby's scratch disk
//! and leave nothing behind. Under TCG every first run of a piece of guest code (the kernel's
//! mount, namespace, fork and exec paths, the agent's own) pays for its translation, which is
//! most of a cold `Start`; a VM that has rehearsed has that behind it when a container claims
//! it. The rehearsal goes through the very functions a `Start` does (`start_stream`, `set_up`),
//! so the agent's code a claim runs is translated already, the async runtime's included; only
//! its frames go to a sink instead of the host. Nothing of the scratch disk survives: it is
//! unmounted here, its cached blocks are dropped at `Start`, and the scratch process ran in PID
//! and mount namespaces that died with it.

use std::collections::HashMap;
use std::time::Instant;

use agent_proto::{Frame, GuestMsg, StartSpec};
use tokio::sync::mpsc;

use crate::process::{self, SpawnError, Target};
use crate::volumes::Freezer;
use crate::{network, rootfs, Event, Handle, Setup};

/// The stream number the rehearsal's process gets: never a container's (those count up from 0
/// on the host's side), and its frames never leave the guest.
const REHEARSAL_STREAM: u32 = u32::MAX;

/// Start the rehearsal of `spec` (its identity already applied) as a `Start` starts a
/// container's process; `Rehearsed` goes to `out` once it is over: the time it took, or what
/// failed.
pub fn start(
    spec: StartSpec,
    freezer: &Freezer,
    out: &mpsc::UnboundedSender<Frame>,
    ev: &mpsc::UnboundedSender<Event>,
    streams: &mut HashMap<u32, Handle>,
) {
    let t0 = Instant::now();
    let rehearsed = |r: Result<u64, String>| {
        let msg = match r {
            Ok(millis) => GuestMsg::Rehearsed {
                millis,
                error: String::new(),
            },
            Err(error) => GuestMsg::Rehearsed { millis: 0, error },
        };
        Frame::guest(&msg)
    };
    if !spec.volumes.is_empty() || !spec.tmpfs.is_empty() || spec.root_mounted {
        let refused = "a rehearsal mounts nothing but a fresh scratch root";
        let _ = out.send(rehearsed(Err(refused.into())));
        return;
    }
    if streams.contains_key(&REHEARSAL_STREAM) {
        let _ = out.send(rehearsed(Err("a rehearsal is running".into())));
        return;
    }
    let device = spec.root_device.clone();
    // The root as a container's, /etc files written and all, mounted read-only first and then
    // remounted read-write: the way of a claim of a standby prepared for its image (most claims
    // in a burst), and most of a fresh mount's.
    let setup = Setup {
        root: rootfs::Target {
            device: spec.root_device,
            hostname: spec.hostname,
            machine_id: spec.machine_id,
            network: spec.network,
            root_mounted: true,
        },
        volumes: Vec::new(),
        tmpfs: Vec::new(),
        freezer: freezer.clone(),
    };
    let process = spec.process;
    let (sink, frames) = mpsc::unbounded_channel();
    crate::start_stream(
        REHEARSAL_STREAM,
        Box::new(move || set_up_and_spawn(&setup, &process)),
        &sink,
        ev,
        streams,
    );
    let out = out.clone();
    tokio::spawn(async move {
        let r = finish(frames, device).await;
        let _ = out.send(rehearsed(r.map(|()| t0.elapsed().as_millis() as u64)));
    });
}

/// `Start`'s set-up and spawn; the hostname and eth0 are the VM's again before the process
/// runs (its tap is in a namespace of its own until the VM is claimed).
fn set_up_and_spawn(
    setup: &Setup,
    process: &agent_proto::ProcessSpec,
) -> Result<process::Spawned, SpawnError> {
    let failed = |message: String| SpawnError {
        message,
        exit_code: 126,
    };
    let hostname = nix::unistd::gethostname().map_err(|e| failed(format!("gethostname: {e}")))?;
    rootfs::mount_read_only(&setup.root.device).map_err(|e| failed(format!("root: {e}")))?;
    let set_up = crate::set_up(setup);
    let _ = nix::unistd::sethostname(&hostname);
    set_up?;
    network::reset_nic().map_err(|e| failed(format!("network: {e}")))?;
    process::spawn(process, Target::Main)
}

/// Wait for the rehearsal's process to end, unmount the scratch root, then check that the
/// process exited with 0 and wait until the kernel has let go of the disk, which the host
/// swaps next (a claim, a preparation).
async fn finish(mut frames: mpsc::UnboundedReceiver<Frame>, device: String) -> Result<(), String> {
    let exit_code = loop {
        let Some(frame) = frames.recv().await else {
            return Err("the scratch process was never reaped".into());
        };
        match frame.guest_msg() {
            Ok(GuestMsg::Exited { exit_code, .. }) => break exit_code,
            Ok(GuestMsg::StartFailed { error, .. }) => return Err(error),
            _ => {}
        }
    };
    if let Err(e) = nix::mount::umount(rootfs::ROOTFS) {
        return Err(format!("unmounting the scratch root: {e}"));
    }
    if exit_code != 0 {
        return Err(format!("the scratch process exited with {exit_code}"));
    }
    tokio::task::spawn_blocking(move || rootfs::wait_released(&device))
        .await
        .map_err(|e| e.to_string())?
}
