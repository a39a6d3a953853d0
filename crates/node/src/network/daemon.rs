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

    /// Stops the daemon (its namespace is going away, or it has nothing left to serve).
    pub fn stop(&self) {
        if let Some(pid) = self.running_pid() {
            // SAFETY: kill with a pid read from our pidfile and checked to be our daemon.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
}
