//! Running things inside a network namespace: external commands (setns between fork and exec)
//! and closures (on a short-lived thread that joins the namespace; namespaces are per thread).

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use nix::sched::{setns, CloneFlags};

use crate::error::NetError;

fn open_netns(path: &Path) -> Result<File, NetError> {
    File::open(path)
        .map_err(|e| NetError::io(format!("open network namespace {}", path.display()), e))
}

/// Makes `cmd` start inside the namespace at `path`. The caller spawns it (e.g. the DNS daemon).
pub fn command_in_netns<'a>(
    path: &Path,
    cmd: &'a mut Command,
) -> Result<&'a mut Command, NetError> {
    let netns = open_netns(path)?; // close-on-exec: the program never sees it
                                   // SAFETY: the closure only calls setns(2), which is async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            setns(netns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
        });
    }
    Ok(cmd)
}

/// Runs `cmd` inside the namespace at `path` to completion; its stdout, or its stderr in the error.
pub fn run_in_netns(path: &Path, cmd: &mut Command) -> Result<String, NetError> {
    let what = format!("run in {}", path.display());
    run(&what, command_in_netns(path, cmd)?, None)
}

/// Runs `f` on a thread that has joined the namespace at `path` (the caller's thread stays put).
pub fn in_netns<R: Send>(path: &Path, f: impl FnOnce() -> R + Send) -> Result<R, NetError> {
    let netns = open_netns(path)?;
    std::thread::scope(|scope| {
        let worker = scope.spawn(move || {
            setns(netns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|source| {
                NetError::Namespace {
                    what: "enter network namespace",
                    path: path.into(),
                    source,
                }
            })?;
            Ok(f())
        });
        worker
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Runs `cmd` (in the caller's namespace unless set up otherwise), feeding it `stdin` if given;
/// `what` says which step this is in the error.
pub(crate) fn run(what: &str, cmd: &mut Command, stdin: Option<&str>) -> Result<String, NetError> {
    let command = describe(cmd);
    let spawn_error = |e| NetError::io(format!("run `{command}`"), e);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(spawn_error)?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(input.as_bytes()).map_err(spawn_error)?;
    }
    let output = child.wait_with_output().map_err(spawn_error)?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    Err(NetError::Command {
        what: what.to_string(),
        command,
        status: output.status.to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
    })
}

fn describe(cmd: &Command) -> String {
    let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
    words.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    words.join(" ")
}
