//! The pidfile hyperd signals the balancer through (SIGHUP to reload, SIGTERM to stop).

use std::path::{Path, PathBuf};

pub struct Pidfile(PathBuf);

impl Pidfile {
    /// Temp file + rename: a reader sees the whole pid or no file.
    pub fn write(path: &Path) -> std::io::Result<Self> {
        let pid = std::process::id();
        let temp = PathBuf::from(format!("{}.tmp.{pid}", path.display()));
        std::fs::write(&temp, format!("{pid}\n"))?;
        std::fs::rename(&temp, path)?;
        Ok(Self(path.to_owned()))
    }
}

impl Drop for Pidfile {
    /// Removed on a clean stop, unless another instance has written its own pid there since.
    fn drop(&mut self) {
        let still_ours = std::fs::read_to_string(&self.0)
            .is_ok_and(|text| text.trim() == std::process::id().to_string());
        if still_ours {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}
