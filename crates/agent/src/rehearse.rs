//! `Rehearse` (standby VMs only): run the steps of a `Start` once on the standby's scratch disk
//! and leave nothing behind. Under TCG every first run of a piece of guest code (the kernel's
//! mount, namespace, fork and exec paths, the agent's own) pays for its translation, which is
//! most of a cold `Start`; a VM that has rehearsed has that behind it when a container claims
//! it. Nothing of the scratch disk survives: it is unmounted here, its cached blocks are dropped
//! at `Start`, and the scratch process ran in PID and mount namespaces that died with it.

use std::time::Instant;

use agent_proto::{NetConfig, ProcessSpec};

use crate::process::{self, Target};
use crate::{network, rootfs};

/// The MAC eth0 has in a template (QEMU's NIC of every template VM): set again, not changed.
const SCRATCH_MAC: &str = "02:00:00:00:00:01";

/// Run the rehearsal; the time it took, or what failed.
pub fn run(spec: &ProcessSpec, device: &str) -> Result<u64, String> {
    let t0 = Instant::now();
    let _ = process::oom_kills();
    // eth0 as a container's, with a link-local address (its tap is in a namespace of its own
    // until the VM is claimed), then as it was.
    let scratch_net = NetConfig {
        mac: SCRATCH_MAC.into(),
        ip: "169.254.0.2/16".into(),
        gateway: "169.254.0.1".into(),
        mtu: 1500,
        resolv_conf: "nameserver 169.254.0.1\n".into(),
        hosts: Vec::new(),
    };
    network::setup(Some(&scratch_net)).map_err(|e| format!("network: {e}"))?;
    network::reset_nic().map_err(|e| format!("network: {e}"))?;
    // The root as a container's, /etc files written and all; the hostname is the VM's again
    // afterwards.
    let hostname = nix::unistd::gethostname().map_err(|e| format!("gethostname: {e}"))?;
    let prepared = rootfs::prepare(&rootfs::Target {
        device: device.to_string(),
        hostname: "scratch".into(),
        machine_id: "0".repeat(32),
        network: Some(scratch_net),
    });
    let _ = nix::unistd::sethostname(&hostname);
    prepared.map_err(|e| format!("root: {e}"))?;
    let result = spawn_and_wait(spec);
    if let Err(e) = nix::mount::umount(rootfs::ROOTFS) {
        return Err(format!("unmounting the scratch root: {e}"));
    }
    result?;
    Ok(t0.elapsed().as_millis() as u64)
}

fn spawn_and_wait(spec: &ProcessSpec) -> Result<(), String> {
    let spawned = process::spawn(spec, Target::Main).map_err(|e| format!("spawn: {e}"))?;
    let exited = process::register(spawned.pid);
    let code = exited
        .blocking_recv()
        .map_err(|_| "the scratch process was never reaped".to_string())?;
    drop(spawned);
    if code != 0 {
        return Err(format!("the scratch process exited with {code}"));
    }
    Ok(())
}
