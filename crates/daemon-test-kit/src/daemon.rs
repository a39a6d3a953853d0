//! The real binary, started on a scratch directory and killed on drop.

use std::path::Path;
use std::process::{Child, Command, ExitStatus};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::Scratch;

/// A running daemon: `--config`, `--pidfile` and `--log` point at `config.json`, `pid` and
/// `log` in its scratch directory.
pub struct Daemon {
    pub scratch: Scratch,
    child: Option<Child>,
    /// For `--daemon`, where the process is not our child to wait on.
    daemon_pid: Option<Pid>,
}

impl Daemon {
    /// In the foreground; returns at once, before the daemon serves (see `is_serving`).
    /// `extra_args` may name more files in `scratch`.
    pub fn spawn(binary: &str, scratch: Scratch, config: &Value, extra_args: &[String]) -> Self {
        let child = command(binary, &scratch, config, extra_args)
            .spawn()
            .unwrap();
        Self {
            scratch,
            child: Some(child),
            daemon_pid: None,
        }
    }

    /// With `--daemon`; returns once the launcher has exited, with its exit status. The daemon
    /// is killed on drop if the launcher reported it serving.
    pub fn launch(
        binary: &str,
        scratch: Scratch,
        config: &Value,
        extra_args: &[String],
    ) -> (ExitStatus, Self) {
        let status = command(binary, &scratch, config, extra_args)
            .arg("--daemon")
            .status()
            .unwrap();
        let mut daemon = Self {
            scratch,
            child: None,
            daemon_pid: None,
        };
        if status.success() {
            daemon.daemon_pid = Some(daemon.pid());
        }
        (status, daemon)
    }

    /// Whether the pidfile is written, which the daemon does once its listeners are bound.
    pub fn is_serving(&self) -> bool {
        self.scratch.path("pid").exists()
    }

    pub fn pid(&self) -> Pid {
        let text = std::fs::read_to_string(self.scratch.path("pid")).unwrap();
        Pid::from_raw(text.trim().parse().unwrap())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.scratch.path("log")).unwrap_or_default()
    }

    /// Replaces the config the way hyperd does (temp + rename) and sends SIGHUP.
    pub fn reload(&self, config: &Value) {
        write_json(&self.scratch.path("config.json"), config);
        kill(self.pid(), Signal::SIGHUP).unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(pid) = self.daemon_pid {
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
}

fn command(binary: &str, scratch: &Scratch, config: &Value, extra_args: &[String]) -> Command {
    write_json(&scratch.path("config.json"), config);
    let mut command = Command::new(binary);
    command
        .arg("--config")
        .arg(scratch.path("config.json"))
        .arg("--pidfile")
        .arg(scratch.path("pid"))
        .arg("--log")
        .arg(scratch.path("log"))
        .args(extra_args);
    command
}

/// Written whole (temp + rename), as hyperd writes configs.
fn write_json(path: &Path, value: &Value) {
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, value.to_string()).unwrap();
    std::fs::rename(&temp, path).unwrap();
}
