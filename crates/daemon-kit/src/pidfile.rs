//! The pidfile hyperd finds a daemon by (to send SIGHUP or SIGTERM, or to tell it runs).

use std::path::{Path, PathBuf};

pub struct Pidfile(PathBuf);

impl Pidfile {
    /// Written whole or not at all (temp file + rename), so a reader never sees a partial pid.
    pub fn write(path: &Path) -> std::io::Result<Self> {
        let pid = std::process::id();
        let temp = PathBuf::from(format!("{}.tmp.{pid}", path.display()));
        std::fs::write(&temp, format!("{pid}\n"))?;
        std::fs::rename(&temp, path)?;
        Ok(Self(path.to_owned()))
    }
}

impl Drop for Pidfile {
    /// Removed on a clean stop, unless a newer instance has written its own pid there since.
    fn drop(&mut self) {
        let still_ours = std::fs::read_to_string(&self.0)
            .is_ok_and(|text| text.trim() == std::process::id().to_string());
        if still_ours {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}
