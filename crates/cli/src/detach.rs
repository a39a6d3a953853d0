//! Detach keys on the client's side. They are sent on as typed: the daemon ends the session
//! when it reads them and the process runs on. The CLI watches for them too, to tell a
//! session it left from one that finished (then it does not wait for the container's exit).

use crate::config::ConfigFile;

/// The keys for a session: the flag's, else the config file's `detachKeys`, else Docker's
/// default. Checked here so a typo fails before anything starts.
pub fn keys(flag: Option<&str>, file: &ConfigFile) -> Result<String, String> {
    let keys = flag
        .or_else(|| file.other.get("detachKeys").and_then(|v| v.as_str()))
        .unwrap_or("ctrl-p,ctrl-q")
        .to_string();
    sequence(&keys)?;
    Ok(keys)
}

/// Docker's spelling (`ctrl-p,ctrl-q`, `a`, `ctrl-@`...`ctrl-_`, `DEL`) as bytes.
pub fn sequence(keys: &str) -> Result<Vec<u8>, String> {
    let invalid = || {
        format!("invalid detach keys {keys:?}: use a comma-separated list such as ctrl-p,ctrl-q")
    };
    keys.split(',')
        .map(
            |key| match (key.as_bytes(), key.strip_prefix("ctrl-").map(str::as_bytes)) {
                ([single], _) => Ok(*single),
                (_, Some([c @ b'a'..=b'z'])) => Ok(c - b'a' + 1),
                (_, Some([c @ (b'@' | b'[' | b'\\' | b']' | b'^' | b'_')])) => Ok(c & 0x1f),
                _ if key == "DEL" => Ok(127),
                _ => Err(invalid()),
            },
        )
        .collect()
}

/// Notices the sequence in what the user types.
pub struct Watch {
    keys: Vec<u8>,
    matched: usize,
}

impl Watch {
    pub fn new(keys: Vec<u8>) -> Self {
        Self { keys, matched: 0 }
    }

    /// Whether `typed` completes the sequence.
    pub fn seen_in(&mut self, typed: &[u8]) -> bool {
        for &b in typed {
            if b != self.keys[self.matched] {
                self.matched = usize::from(b == self.keys[0]);
            } else {
                self.matched += 1;
            }
            if self.matched == self.keys.len() {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_the_flag_the_file_or_the_default() {
        let mut file = ConfigFile::default();
        assert_eq!(keys(None, &file).unwrap(), "ctrl-p,ctrl-q");
        file.other.insert("detachKeys".into(), "ctrl-a,x".into());
        assert_eq!(keys(None, &file).unwrap(), "ctrl-a,x");
        assert_eq!(keys(Some("ctrl-e"), &file).unwrap(), "ctrl-e");
        assert!(keys(Some("ctrl-é"), &file).is_err());
        assert_eq!(sequence("ctrl-a,x,DEL,ctrl-@").unwrap(), [1, b'x', 127, 0]);
    }

    #[test]
    fn the_watch_sees_the_sequence_across_reads() {
        let mut w = Watch::new(sequence("ctrl-p,ctrl-q").unwrap());
        assert!(!w.seen_in(b"ls\x10"));
        assert!(!w.seen_in(b"x\x10"));
        assert!(w.seen_in(b"\x11"));
        let mut w = Watch::new(sequence("ctrl-p,ctrl-q").unwrap());
        assert!(w.seen_in(b"\x10\x10\x11"));
    }
}
