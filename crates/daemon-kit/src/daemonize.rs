//! `--daemon`: leave the spawning hyperd behind, telling it once the daemon serves (or failed).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};

use anyhow::Context;
use nix::sys::wait::waitpid;
use nix::unistd::{dup2, fork, pipe, setsid, ForkResult};

/// The daemon's end of the pipe its parent waits on; sending it lets the parent exit 0.
pub struct ReadyNotice(OwnedFd);

impl ReadyNotice {
    pub fn send(self) -> std::io::Result<()> {
        File::from(self.0).write_all(&[1])
    }
}

/// Forks; only the child returns. The parent exits 0 once the child sends its `ReadyNotice`,
/// or 1 after the child has died without sending it (the reason is in the child's log). The
/// child starts a new session (no signal aimed at hyperd's process group or terminal reaches
/// it), moves to `/` and points stdin and stdout at /dev/null. Must be called while the
/// process has one thread.
pub fn daemonize() -> anyhow::Result<ReadyNotice> {
    let (ready_reader, ready_writer) = pipe().context("pipe")?;
    // SAFETY: the caller guarantees no other thread exists yet (the tokio runtime is built
    // after this), so the child is a consistent copy of the whole process.
    match unsafe { fork() }.context("fork")? {
        ForkResult::Parent { child } => {
            drop(ready_writer);
            let mut byte = [0u8];
            if matches!(File::from(ready_reader).read(&mut byte), Ok(1)) {
                std::process::exit(0);
            }
            // The child is failing: let it finish logging why, and reap it, before we report.
            let _ = waitpid(child, None);
            std::process::exit(1);
        }
        ForkResult::Child => {
            drop(ready_reader);
            setsid().context("setsid")?;
            std::env::set_current_dir("/").context("chdir /")?;
            let null = File::options().read(true).write(true).open("/dev/null")?;
            dup2(null.as_raw_fd(), 0).context("stdin to /dev/null")?;
            dup2(null.as_raw_fd(), 1).context("stdout to /dev/null")?;
            Ok(ReadyNotice(ready_writer))
        }
    }
}
