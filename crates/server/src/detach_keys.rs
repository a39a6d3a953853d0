//! Detach keys: on a TTY session with stdin (attach, exec), the key sequence (Docker's
//! `detachKeys`, `ctrl-p,ctrl-q` unless the client names one) ends the session and leaves
//! the process running. Bytes that begin the sequence are held back until it is either
//! complete (they are dropped) or broken (they are passed on).

use crate::error::ApiError;

/// ctrl-p, ctrl-q.
const DEFAULT: [u8; 2] = [0x10, 0x11];

/// Docker's spelling (`ctrl-p,ctrl-q`, `a,b`, `ctrl-@`...`ctrl-_`, `DEL`) to bytes; empty
/// means the default.
pub fn parse(keys: &str) -> Result<Vec<u8>, ApiError> {
    if keys.is_empty() {
        return Ok(DEFAULT.to_vec());
    }
    let invalid = || ApiError::bad_request(format!("Invalid detach keys ({keys}) provided"));
    keys.split(',')
        .map(|key| match key.as_bytes() {
            [single] => Ok(*single),
            _ if key == "DEL" => Ok(127),
            _ => {
                let name = key.strip_prefix("ctrl-").ok_or_else(invalid)?;
                match name.as_bytes() {
                    [c @ b'a'..=b'z'] => Ok(c - b'a' + 1),
                    [c @ (b'@' | b'[' | b'\\' | b']' | b'^' | b'_')] => Ok(c & 0x1f),
                    _ => Err(invalid()),
                }
            }
        })
        .collect()
}

/// Watches a session's input for the sequence.
pub struct Escape {
    keys: Vec<u8>,
    matched: usize,
}

impl Escape {
    pub fn new(keys: Vec<u8>) -> Self {
        Self { keys, matched: 0 }
    }

    /// What of `input` goes on to the process, and whether the sequence is now complete (the
    /// rest of `input` is then dropped with it).
    pub fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            if b != self.keys[self.matched] {
                out.extend_from_slice(&self.keys[..self.matched]);
                self.matched = 0;
            }
            if b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    return (out, true);
                }
            } else {
                out.push(b);
            }
        }
        (out, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_as_docker_spells_them() {
        assert_eq!(parse("").unwrap(), [0x10, 0x11]);
        assert_eq!(parse("ctrl-a,x").unwrap(), [1, b'x']);
        assert_eq!(parse("ctrl-@,ctrl-_,DEL").unwrap(), [0, 0x1f, 127]);
        assert!(parse("ctrl-1").is_err());
        assert!(parse("alt-x").is_err());
        assert!(parse("a,,b").is_err());
    }

    #[test]
    fn the_sequence_detaches_and_broken_prefixes_pass() {
        let mut e = Escape::new(parse("").unwrap());
        assert_eq!(e.feed(b"ls\x10"), (b"ls".to_vec(), false), "held back");
        assert_eq!(
            e.feed(b"x"),
            (b"\x10x".to_vec(), false),
            "broken: passed on"
        );
        assert_eq!(e.feed(b"a\x10"), (b"a".to_vec(), false));
        assert_eq!(e.feed(b"\x11after"), (Vec::new(), true));
        let mut e = Escape::new(parse("").unwrap());
        assert_eq!(
            e.feed(b"\x10\x10\x11"),
            (b"\x10".to_vec(), true),
            "restarts on its first key"
        );
    }
}
