//! The pidfile hyperd finds the server by (to send SIGHUP, or to tell it is running).

use std::path::{Path, PathBuf};

pub struct Pidfile {
    path: PathBuf,
}

impl Pidfile {
    /// Written whole or not at all (temp file + rename), so a reader never sees a partial pid.
    pub fn write(path: &Path) -> std::io::Result<Self> {
        let pid = std::process::id();
        let temp = PathBuf::from(format!("{}.tmp.{pid}", path.display()));
        std::fs::write(&temp, format!("{pid}\n"))?;
        std::fs::rename(&temp, path)?;
        Ok(Self {
            path: path.to_owned(),
        })
    }
}

impl Drop for Pidfile {
    /// Removed on a clean stop, unless a newer instance has taken the path over since.
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.path)
            .is_ok_and(|text| text.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
