//! Reading a container's log, which its supervisor writes in Docker's json-file format
//! (`ctr.log`, rotated to `ctr.log.1`, `ctr.log.2`...), so it survives hyperd restarts.

use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    /// 1 stdout, 2 stderr: Docker's stream numbers.
    pub stream: u8,
    pub text: Vec<u8>,
    pub time: DateTime<Utc>,
}

#[derive(Deserialize)]
struct Raw {
    log: String,
    stream: String,
    time: DateTime<Utc>,
}

fn parse(line: &str) -> Option<LogLine> {
    let raw: Raw = serde_json::from_str(line).ok()?;
    Some(LogLine {
        stream: if raw.stream == "stderr" { 2 } else { 1 },
        text: raw.log.into_bytes(),
        time: raw.time,
    })
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut rotated: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let n = name.strip_prefix("ctr.log.")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut out: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    out.push(dir.join("ctr.log"));
    out
}

/// Reads what is logged so far and remembers where it stopped, so `follow` can continue.
pub struct LogReader {
    dir: PathBuf,
    inode: u64,
    offset: u64,
}

impl LogReader {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            inode: 0,
            offset: 0,
        }
    }

    /// Everything in the log, oldest first.
    pub fn read_all(&mut self) -> Vec<LogLine> {
        let mut out = Vec::new();
        for path in files(&self.dir) {
            if let Ok(file) = std::fs::File::open(&path) {
                let meta = file.metadata().ok();
                let mut reader = BufReader::new(file);
                let mut read = 0u64;
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 {
                    if !line.ends_with('\n') {
                        break; // being written: picked up by the next read
                    }
                    read += line.len() as u64;
                    out.extend(parse(&line));
                    line.clear();
                }
                if path.ends_with("ctr.log") {
                    self.inode = meta.map(|m| m.ino()).unwrap_or(0);
                    self.offset = read;
                }
            }
        }
        out
    }

    /// Lines appended since the last read. After a rotation the new file is read from its start.
    pub fn read_new(&mut self) -> Vec<LogLine> {
        let path = self.dir.join("ctr.log");
        let Ok(mut file) = std::fs::File::open(&path) else {
            return Vec::new();
        };
        let inode = file.metadata().map(|m| m.ino()).unwrap_or(0);
        if inode != self.inode {
            self.inode = inode;
            self.offset = 0;
        }
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut reader = BufReader::new(file);
        let mut out = Vec::new();
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            if !line.ends_with('\n') {
                break;
            }
            self.offset += line.len() as u64;
            out.extend(parse(&line));
            line.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_rotated_files_in_order_then_follows() {
        let dir = tempfile::tempdir().unwrap();
        let line = |text: &str, stream: &str| {
            format!("{{\"log\":\"{text}\\n\",\"stream\":\"{stream}\",\"time\":\"2026-11-22T01:00:00.000000001Z\"}}\n")
        };
        std::fs::write(dir.path().join("ctr.log.2"), line("one", "stdout")).unwrap();
        std::fs::write(dir.path().join("ctr.log.1"), line("two", "stderr")).unwrap();
        std::fs::write(
            dir.path().join("ctr.log"),
            line("three", "stdout") + "{\"partial",
        )
        .unwrap();
        let mut reader = LogReader::new(dir.path());
        let all = reader.read_all();
        let texts: Vec<_> = all
            .iter()
            .map(|l| String::from_utf8_lossy(&l.text).to_string())
            .collect();
        assert_eq!(texts, ["one\n", "two\n", "three\n"]);
        assert_eq!(all[1].stream, 2);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("ctr.log"))
            .unwrap();
        f.write_all(b"\n").unwrap();
        f.write_all(line("four", "stdout").as_bytes()).unwrap();
        let new: Vec<_> = reader.read_new().into_iter().map(|l| l.text).collect();
        assert_eq!(new, [b"four\n".to_vec()]);
    }
}
