//! Archive streams (`docker cp`): a tar of a path out of the container's root, or a tar
//! extracted into one of its directories.
//!
//! The work is done by a helper process, the agent binary run again under the name
//! [`HELPER_ARG0`] (`/proc/self/exe` stays executable though the initramfs is gone), which
//! chroots into the container's root as the agent has it mounted (`rootfs::ROOTFS`, the
//! volumes mounted below it) before it touches a path. So the kernel resolves every `..` and
//! every symlink inside that root, as Docker's symlink-scoped resolution does, with no window
//! for a container that swaps a directory for a symlink meanwhile. Its stdio is bridged like an
//! exec session's (stdout: a stat line, then the tar; stdin: the tar to extract; stderr: an
//! error), so the protocol's flow control covers it.

mod helper;
mod walk;

use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use agent_proto::{ArchiveOp, ArchiveRequest};

use crate::process::{SpawnError, Spawned, SPAWN_LOCK};

/// `argv[0]` of the helper process.
pub const HELPER_ARG0: &str = "hyper-archive";

pub use helper::main as helper_main;

fn failed(what: &str, e: impl std::fmt::Display) -> SpawnError {
    SpawnError {
        message: format!("{what}: {e}"),
        exit_code: 126,
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SpawnError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| failed("pipe", e))
}

/// Start the helper for `req`. Blocking (forks): call from a blocking thread.
pub fn spawn(req: &ArchiveRequest) -> Result<Spawned, SpawnError> {
    let arg = serde_json::to_string(req).map_err(|e| failed("encoding the request", e))?;
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0(HELPER_ARG0).arg(arg).env_clear().current_dir("/");
    let mut out = Spawned {
        pid: 0,
        stdin: None,
        stdout: None,
        stderr: None,
        master: None,
    };
    if req.op == ArchiveOp::Put {
        let (r, w) = pipe()?;
        cmd.stdin(Stdio::from(r));
        out.stdin = Some(w);
    } else {
        cmd.stdin(Stdio::null());
    }
    let (r, w) = pipe()?;
    cmd.stdout(Stdio::from(w));
    out.stdout = Some(r);
    let (r, w) = pipe()?;
    cmd.stderr(Stdio::from(w));
    out.stderr = Some(r);
    let _spawning = SPAWN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let child = cmd
        .spawn()
        .map_err(|e| failed("starting the archive helper", e))?;
    // The reaper collects it; `process::register` hands its exit code to the session.
    out.pid = child.id() as i32;
    Ok(out)
}
