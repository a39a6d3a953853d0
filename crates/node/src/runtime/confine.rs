//! Hooks of the VM lifecycle into the node's cgroups (`crate::cgroups`): a VM joins its
//! container's group once it is up (a claimed standby was booted before anyone owned it) and
//! the group goes once the VM has exited.

use std::path::Path;

use serde_json::json;

use super::{processes_in, wait_for_supervisor_exit, Runtime};
use crate::model::Container;
use crate::{shim_link, sizes, Result, RuntimeError};

impl Runtime {
    /// Puts every process of the VM in `dir` in `c`'s group. A VM that cannot be confined is
    /// shut down: it would run beyond what its size allows.
    pub(super) async fn confine_vm(&self, c: &Container, dir: &Path) -> Result<()> {
        let Some(cgroups) = &self.cfg.cgroups else {
            return Ok(());
        };
        let size = sizes::lookup(&c.size)?;
        let pids = processes_in(dir);
        let Err(e) = cgroups.confine(&c.tenant, &c.id, &size, &pids) else {
            return Ok(());
        };
        let _ = shim_link::request(dir, json!({"op": "shutdown"})).await;
        wait_for_supervisor_exit(dir).await;
        self.release_cgroup(c);
        Err(RuntimeError::Internal(format!(
            "putting the VM in its cgroup: {e}"
        )))
    }

    /// After the VM of `c` has exited.
    pub(super) fn release_cgroup(&self, c: &Container) {
        if let Some(cgroups) = &self.cfg.cgroups {
            cgroups.release(&c.tenant, &c.id);
        }
    }
}
