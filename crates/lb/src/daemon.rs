//! `--daemon`: detach from hyperd, which waits only until the balancer serves (or failed).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use anyhow::Context;
use nix::sys::wait::waitpid;
use nix::unistd::{dup2, fork, pipe, setsid, ForkResult};

/// The daemon's end of the pipe its parent waits on; sent once every listener is bound and
/// the pidfile written.
pub struct Ready(OwnedFd);

impl Ready {
    pub fn send(self) -> std::io::Result<()> {
        File::from(self.0).write_all(b"1")
    }
}

/// Forks; only the child returns. The parent exits 0 when the child says it is ready, 1 when
/// the child ends first (its log says why). The child gets its own session (hyperd's process
/// group signals and terminal hang-ups don't reach it), `/` as working directory and
/// /dev/null as stdin and stdout. Call it before any thread exists.
pub fn daemonize() -> anyhow::Result<Ready> {
    let (reader, writer) = pipe().context("pipe")?;
    // SAFETY: called before the tokio runtime (or any other thread) starts, so the child is a
    // complete copy of a single-threaded process.
    match unsafe { fork() }.context("fork")? {
        ForkResult::Parent { child } => {
            drop(writer);
            let mut byte = [0u8];
            let ready = matches!(File::from(reader).read(&mut byte), Ok(1));
            if !ready {
                // Reaped so that its last log lines are written before hyperd looks.
                let _ = waitpid(child, None);
            }
            std::process::exit(if ready { 0 } else { 1 });
        }
        ForkResult::Child => {
            drop(reader);
            setsid().context("setsid")?;
            std::env::set_current_dir("/").context("chdir /")?;
            let null = File::options().read(true).write(true).open("/dev/null")?;
            for fd in [0, 1] {
                dup2(null.as_raw_fd(), fd).context("point stdin/stdout at /dev/null")?;
            }
            Ok(Ready(writer))
        }
    }
}

/// `--log`: stderr (logs, panics) appended to `path`.
pub fn log_to(path: &Path) -> anyhow::Result<()> {
    let log = File::options()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("open log {}", path.display()))?;
    dup2(log.as_raw_fd(), 2).context("stderr to the log")?;
    Ok(())
}
