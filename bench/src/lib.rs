//! Helpers shared by Hyper's benchmarks: wall-clock time, order statistics, and a file tail
//! that stamps every line with the host time it first appeared.
//!
//! Benchmarks here print ratios against a floor measured in the same run (DESIGN, "Testing on
//! these machines"); they never pass or fail on an absolute time.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock seconds since the epoch. Wall clock (not `Instant`) because the shim's logs and
/// `state.json` carry wall-clock timestamps that we put on the same axis.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// RFC 3339 timestamp (as the shim writes them) to epoch seconds.
pub fn parse_rfc3339(s: &str) -> Option<f64> {
    let t = chrono::DateTime::parse_from_rfc3339(s.trim()).ok()?;
    Some(t.timestamp() as f64 + f64::from(t.timestamp_subsec_nanos()) * 1e-9)
}

/// Median (mean of the middle two for an even count) of the present values.
pub fn median(xs: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

pub fn min(xs: &[f64]) -> Option<f64> {
    xs.iter()
        .copied()
        .filter(|x| x.is_finite())
        .min_by(|a, b| a.total_cmp(b))
}

/// The guest-clock timestamp of a kernel console line, `[    1.234567] text`.
pub fn kernel_time(line: &str) -> Option<f64> {
    let rest = line.trim_start().strip_prefix('[')?;
    let (ts, _) = rest.split_once(']')?;
    ts.trim().parse().ok()
}

/// A file read incrementally while another process writes it; every complete line gets the host
/// time at which it was first seen (so the time resolution is the polling interval).
#[derive(Debug)]
pub struct Tail {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    pub lines: Vec<(f64, String)>,
}

impl Tail {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            offset: 0,
            partial: Vec::new(),
            lines: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read what was appended since the last call. A missing file is not an error (not yet
    /// created, or already removed).
    pub fn poll(&mut self, at: f64) {
        let Ok(mut f) = File::open(&self.path) else {
            return;
        };
        let Ok(meta) = f.metadata() else { return };
        if meta.len() <= self.offset {
            return;
        }
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_err() {
            return;
        }
        self.offset += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        while let Some(nl) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=nl).collect();
            let text = String::from_utf8_lossy(&line)
                .trim_end_matches(['\r', '\n'])
                .to_string();
            self.lines.push((at, text));
        }
    }

    /// Host time of the first line containing `needle`.
    pub fn seen(&self, needle: &str) -> Option<f64> {
        self.lines
            .iter()
            .find(|(_, l)| l.contains(needle))
            .map(|(t, _)| *t)
    }

    /// The first line containing `needle`.
    pub fn line(&self, needle: &str) -> Option<&str> {
        self.lines
            .iter()
            .find(|(_, l)| l.contains(needle))
            .map(|(_, l)| l.as_str())
    }

    /// Host time at which the guest's kernel clock read zero: every timestamped line is written
    /// at or after its timestamp, so the smallest (seen - stamp) is the tightest estimate. Good
    /// only when the guest clock runs at host speed (TSC-based under TCG with `tsc_early_khz`).
    pub fn guest_zero(&self) -> Option<f64> {
        min(&self
            .lines
            .iter()
            .filter_map(|(t, l)| Some(t - kernel_time(l)?))
            .collect::<Vec<_>>())
    }

    /// Guest-clock time of the first line containing `needle`.
    pub fn guest_time(&self, needle: &str) -> Option<f64> {
        kernel_time(self.line(needle)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_statistics() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN]), None);
        assert_eq!(min(&[3.0, f64::NAN, 1.5]), Some(1.5));
    }

    #[test]
    fn kernel_timestamps() {
        assert_eq!(
            kernel_time("[    1.234567] Run /init as init process"),
            Some(1.234567)
        );
        assert_eq!(kernel_time("hyper-agent: ready"), None);
    }

    #[test]
    fn rfc3339() {
        let t = parse_rfc3339("1970-01-01T00:00:01.500000000Z").unwrap();
        assert!((t - 1.5).abs() < 1e-9);
    }

    #[test]
    fn tail_stamps_lines_and_guest_zero() {
        let dir = std::env::temp_dir().join(format!("bench-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.log");
        let mut t = Tail::new(&p);
        t.poll(1.0);
        std::fs::write(&p, "[    0.500000] a\n[    1.000000] b\npart").unwrap();
        t.poll(10.8);
        std::fs::write(&p, "[    0.500000] a\n[    1.000000] b\npartial line\n").unwrap();
        t.poll(11.0);
        assert_eq!(t.lines.len(), 3);
        assert_eq!(t.lines[2], (11.0, "partial line".to_string()));
        assert!((t.guest_zero().unwrap() - 9.8).abs() < 1e-9);
        assert_eq!(t.guest_time("] b"), Some(1.0));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// Blocks SIGINT, SIGTERM and SIGHUP in every thread and runs `cleanup` from a dedicated one
/// when one arrives, then exits with 128 + the signal. Call it first in `main`, before any
/// other thread exists. (Children get an empty signal mask back: std resets it before exec.)
pub fn on_termination_signal(cleanup: fn()) {
    // SAFETY: sigset manipulation on a local set, then pthread_sigmask on the calling (main)
    // thread before any other thread exists, so every thread inherits the mask.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    std::thread::spawn(move || {
        let mut sig = 0;
        // SAFETY: sigwait on the set blocked in every thread above.
        unsafe { libc::sigwait(&set, &mut sig) };
        eprintln!("\nsignal {sig}: cleaning up");
        cleanup();
        std::process::exit(128 + sig);
    });
}
