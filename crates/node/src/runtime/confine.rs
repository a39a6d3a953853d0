//! Hooks of the VM lifecycle into the node's cgroups (`crate::cgroups`): a new supervisor
//! enters its container's group before it starts QEMU, a claimed standby (booted before anyone
//! owned it) is moved there once claimed, and the group goes once the VM has exited.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::{vm_processes, wait_for_supervisor_exit, Runtime};
use crate::cgroups::Cgroups;
use crate::model::Container;
use crate::{shim_link, sizes, Result, RuntimeError};

impl Runtime {
    /// Puts the VM in `dir` (its supervisor and QEMU, by the pids they recorded) in `c`'s group.
    /// A VM that cannot be confined is shut down: it would run beyond what its size allows.
    /// Looking the two up by their pids, not among every process of the host, matters in a
    /// burst: with 100 VMs and a full pool that walk was a third of hyperd's CPU.
    pub(super) async fn confine_vm(&self, c: &Container, dir: &Path) -> Result<()> {
        let Some(cgroups) = &self.cfg.cgroups else {
            return Ok(());
        };
        let size = sizes::lookup(&c.size)?;
        let pids = vm_processes(dir);
        let confined = match pids.len() {
            // The supervisor and QEMU: one not found would run outside the group.
            2 => cgroups
                .confine(&c.tenant, &c.id, &size, &pids)
                .map_err(|e| e.to_string()),
            _ => Err("its supervisor's or QEMU's process was not found".to_string()),
        };
        let Err(e) = confined else {
            return Ok(());
        };
        let _ = shim_link::request(dir, json!({"op": "shutdown"})).await;
        wait_for_supervisor_exit(dir).await;
        self.release_cgroup(c).await;
        Err(RuntimeError::Internal(format!(
            "putting the VM in its cgroup: {e}"
        )))
    }

    /// The `cgroup.procs` files of `c`'s group, opened for a new supervisor to write itself
    /// into before it starts its VM (see [`super::launch_supervisor`]).
    pub(super) fn cgroup_entries(&self, c: &Container) -> Result<Vec<File>> {
        let Some(cgroups) = &self.cfg.cgroups else {
            return Ok(Vec::new());
        };
        let size = sizes::lookup(&c.size)?;
        let open = |dir: PathBuf| {
            let procs = dir.join("cgroup.procs");
            OpenOptions::new()
                .write(true)
                .open(&procs)
                .map_err(|e| format!("{}: {e}", procs.display()))
        };
        cgroups
            .prepare(&c.tenant, &c.id, &size)
            .map_err(|e| e.to_string())
            .and_then(|dirs| dirs.into_iter().map(open).collect())
            .map_err(|e| RuntimeError::Internal(format!("making the VM's cgroup: {e}")))
    }

    /// At recovery, for a running `c`: its VM is in its group already, unless an earlier
    /// hyperd ran without cgroups; then it joins now. A failure leaves it running, with a
    /// warning.
    pub(super) fn adopt_cgroup(&self, c: &Container) {
        let Some(cgroups) = &self.cfg.cgroups else {
            return;
        };
        let confined = sizes::lookup(&c.size)
            .map_err(|e| e.to_string())
            .and_then(|size| {
                let pids = vm_processes(&self.dir(&c.id));
                cgroups
                    .confine(&c.tenant, &c.id, &size, &pids)
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = confined {
            tracing::warn!("the VM of {} runs outside its cgroup: {e}", c.id);
        }
    }

    /// After the VM of `c` has exited (or at recovery, for a VM that is not running: a crash
    /// may have left its group).
    pub(super) async fn release_cgroup(&self, c: &Container) {
        if let Some(cgroups) = &self.cfg.cgroups {
            release_group(cgroups, &c.tenant, &c.id).await;
        }
    }
}

/// Removes the group of container `id` of `tenant`. A VM just killed (its supervisor died)
/// leaves its group once the kernel has torn it down.
pub(super) async fn release_group(cgroups: &Cgroups, tenant: &str, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match cgroups.release(tenant, id) {
            Err(e) if e.kind() == io::ErrorKind::ResourceBusy && Instant::now() < deadline => {
                tracing::debug!("{e}; trying again");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return tracing::warn!("{e}"),
            Ok(()) => return,
        }
    }
}
