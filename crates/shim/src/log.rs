//! `ctr.log`: Docker's json-file format, one object per line, rotated to `ctr.log.1`... at
//! `max_bytes`, keeping `max_files` files in all. Lines are split like Docker does: one entry per
//! '\n'-terminated line; a partial line is held back until its newline, 16 KiB, or [`LogWriter::flush`].

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;

use chrono::{SecondsFormat, Utc};
use serde::Serialize;

const MAX_PARTIAL: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

#[derive(Serialize)]
struct Entry<'a> {
    log: &'a str,
    stream: &'a str,
    time: String,
}

pub struct LogWriter {
    path: PathBuf,
    max_bytes: u64,
    max_files: u32,
    file: File,
    size: u64,
    pending: [Vec<u8>; 2],
}

impl LogWriter {
    pub fn open(path: PathBuf, max_bytes: u64, max_files: u32) -> io::Result<LogWriter> {
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path,
            max_bytes,
            max_files: max_files.max(1),
            file,
            size,
            pending: [Vec::new(), Vec::new()],
        })
    }

    pub fn write(&mut self, stream: Stream, mut data: &[u8]) -> io::Result<()> {
        let idx = stream as usize;
        while let Some(pos) = data.iter().position(|&b| b == b'\n') {
            let mut line = std::mem::take(&mut self.pending[idx]);
            line.extend_from_slice(&data[..=pos]);
            self.entry(stream, &line)?;
            data = &data[pos + 1..];
        }
        self.pending[idx].extend_from_slice(data);
        if self.pending[idx].len() >= MAX_PARTIAL {
            let line = std::mem::take(&mut self.pending[idx]);
            self.entry(stream, &line)?;
        }
        Ok(())
    }

    /// Write out partial lines (at exit).
    pub fn flush(&mut self) -> io::Result<()> {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let line = std::mem::take(&mut self.pending[stream as usize]);
            if !line.is_empty() {
                self.entry(stream, &line)?;
            }
        }
        self.file.sync_data()
    }

    fn entry(&mut self, stream: Stream, bytes: &[u8]) -> io::Result<()> {
        let text = String::from_utf8_lossy(bytes);
        let e = Entry {
            log: &text,
            stream: stream.name(),
            time: Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true),
        };
        let mut line = serde_json::to_vec(&e).expect("entry serializes");
        line.push(b'\n');
        if self.max_bytes > 0 && self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(&line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let name = |i: u32| -> PathBuf {
            if i == 0 {
                self.path.clone()
            } else {
                PathBuf::from(format!("{}.{i}", self.path.display()))
            }
        };
        if self.max_files > 1 {
            let _ = std::fs::remove_file(name(self.max_files - 1));
            for i in (0..self.max_files - 1).rev() {
                let _ = std::fs::rename(name(i), name(i + 1));
            }
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
        } else {
            self.file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&self.path)?;
        }
        self.size = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_rotation() {
        let dir = std::env::temp_dir().join(format!("shim-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ctr.log");
        let mut w = LogWriter::open(path.clone(), 300, 3).unwrap();
        w.write(Stream::Stdout, b"hel").unwrap();
        w.write(Stream::Stderr, b"oops\n").unwrap();
        w.write(Stream::Stdout, b"lo\nwor").unwrap();
        w.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["log"], "oops\n");
        assert_eq!(lines[0]["stream"], "stderr");
        assert_eq!(lines[1]["log"], "hello\n");
        assert_eq!(lines[2]["log"], "wor");
        assert!(lines[1]["time"].as_str().unwrap().ends_with('Z'));
        for _ in 0..20 {
            w.write(Stream::Stdout, b"0123456789\n").unwrap();
        }
        assert!(dir.join("ctr.log.1").exists());
        assert!(dir.join("ctr.log.2").exists());
        assert!(!dir.join("ctr.log.3").exists());
        assert!(std::fs::metadata(&path).unwrap().len() <= 300);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
