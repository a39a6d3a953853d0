//! The tenant namespace's helper daemons (`hyper-dns`, `hyper-lb`): each is a process of its
//! own inside the namespace, so it keeps serving while hyperd is stopped. hyperd writes its
//! config (`DIR/<name>.json`, temp + rename) and signals it (SIGHUP) to reload; when it is not
//! running (first use, a crash, a reboot) hyperd starts it with `--daemon`, which returns once
//! it serves (or failed, with the reason in `DIR/<name>.log`), leaving it in a session of its
//! own.

use std::path::{Path, PathBuf};

use crate::{Result, RuntimeError};

pub struct TenantDaemon<'a> {
    pub binary: &'a Path,
    /// "dns" or "lb": the file names' stem.
    pub name: &'static str,
    /// The tenant's state directory (`DATA/net/tN`).
    pub dir: &'a Path,
}

impl TenantDaemon<'_> {
    fn file(&self, ext: &str) -> PathBuf {
        self.dir.join(format!("{}.{ext}", self.name))
    }

    pub fn status_path(&self) -> PathBuf {
        self.file("status.json")
    }

    /// The pid in the daemon's pidfile: it writes it once it serves and removes it on a clean
    /// stop, so one left without its process means a crash, a kill or a reboot.
    fn recorded_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.file("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn running_pid(&self) -> Option<i32> {
        let pid = self.recorded_pid()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let binary = self.binary.file_name()?.to_string_lossy().into_owned();
        String::from_utf8_lossy(&cmdline)
            .contains(&binary)
            .then_some(pid)
    }

    pub fn is_running(&self) -> bool {
        self.running_pid().is_some()
    }

    /// Writes the config and makes the daemon serve it.
    pub fn sync(&self, config: &serde_json::Value, netns: &Path) -> Result<()> {
        let path = self.file("json");
        let tmp = self.file("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(config).expect("json"))
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(RuntimeError::io(format!("write {}", path.display())))?;
        if let Some(pid) = self.running_pid() {
            // SAFETY: kill with a pid read from our pidfile and checked to be our daemon.
            unsafe { libc::kill(pid, libc::SIGHUP) };
            return Ok(());
        }
        if let Some(pid) = self.recorded_pid() {
            tracing::warn!(
                "the {} server in {} (pid {pid}) is not running; starting it",
                self.name,
                self.dir.display()
            );
        }
        let mut cmd = std::process::Command::new(self.binary);
        cmd.arg("--daemon")
            .arg("--config")
            .arg(&path)
            .arg("--pidfile")
            .arg(self.file("pid"))
            .arg("--log")
            .arg(self.file("log"));
        if self.name == "lb" {
            cmd.arg("--status").arg(self.status_path());
        }
        net::command_in_netns(netns, &mut cmd)
            .map_err(|e| RuntimeError::Internal(format!("networking: {e}")))?;
        let status = cmd
            .status()
            .map_err(RuntimeError::io(format!("run {}", self.binary.display())))?;
        if !status.success() {
            let log = std::fs::read_to_string(self.file("log")).unwrap_or_default();
            let last = log.lines().last().unwrap_or("").to_string();
            return Err(RuntimeError::Internal(format!(
                "the tenant's {} server did not start: {last}",
                self.name
            )));
        }
        Ok(())
    }

    /// Stops the daemon (its namespace is going away, or it has nothing left to serve) and
    /// waits for it to be gone, so that a `sync` right after starts a new one instead of
    /// signalling the one still exiting. One that outstays `STOP_GRACE` is killed.
    pub fn stop(&self) {
        let Some(pid) = self.running_pid() else {
            return;
        };
        // SAFETY: kill with a pid read from our pidfile and checked to be our daemon.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        if wait_gone(pid, STOP_GRACE) {
            return;
        }
        tracing::warn!(
            "the {} server in {} (pid {pid}) did not stop within {STOP_GRACE:?}; killing it",
            self.name,
            self.dir.display()
        );
        // SAFETY: as above; the pid is still the daemon's (it has not exited).
        unsafe { libc::kill(pid, libc::SIGKILL) };
        wait_gone(pid, STOP_GRACE);
    }
}

/// How long a daemon has to exit after SIGTERM (it stops at once; this bounds a stuck one).
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether `pid` has exited within `limit` (a zombie counts as gone: the daemon is not our
/// child, and it no longer serves or holds a port).
fn wait_gone(pid: i32, limit: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if !crate::runtime::process_running(pid) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A daemon that takes a while to exit after SIGTERM is gone when `stop` returns.
    #[test]
    fn stop_waits_for_the_daemon_to_exit() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg("trap 'sleep 0.3; exit 0' TERM; while :; do sleep 0.05; done")
            .spawn()
            .unwrap();
        std::fs::write(dir.path().join("lb.pid"), child.id().to_string()).unwrap();
        // Let the shell set its trap before the signal comes.
        std::thread::sleep(std::time::Duration::from_millis(100));
        let daemon = TenantDaemon {
            binary: Path::new("/bin/sh"),
            name: "lb",
            dir: dir.path(),
        };
        daemon.stop();
        let status = child.try_wait().unwrap();
        assert!(
            status.is_some(),
            "the daemon still runs after stop returned"
        );
    }
}
