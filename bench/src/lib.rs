//! Helpers shared by Hyper's benchmarks: wall-clock time, order statistics, a file tail that
//! stamps every line with the host time it first appeared, and installing a peer's package.
//!
//! Benchmarks here print ratios against a floor measured in the same run (DESIGN, "Testing on
//! these machines"); they never pass or fail on an absolute time.

pub mod docker_peer;

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
/// Seconds from `time -p`'s `real 1.23`.
pub fn real_seconds(stderr: &str) -> Option<f64> {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("real "))?
        .trim()
        .parse()
        .ok()
}

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

/// The `p`th percentile (nearest rank) of the present values: of 100, the 99th is the
/// second largest.
pub fn percentile(xs: &[f64], p: f64) -> Option<f64> {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

pub fn min(xs: &[f64]) -> Option<f64> {
    xs.iter()
        .copied()
        .filter(|x| x.is_finite())
        .min_by(|a, b| a.total_cmp(b))
}

/// The guest-clock timestamp of a console line: the kernel's `[    1.234567] text` (its
/// `local_clock`) or the agent's `hyper-agent: [1.234] text` (CLOCK_MONOTONIC). Both count
/// from about the same instant (the TSC's start in the guest kernel), within milliseconds.
pub fn guest_stamp(line: &str) -> Option<f64> {
    let line = line.trim_start();
    let line = line.strip_prefix("hyper-agent: ").unwrap_or(line);
    let rest = line.strip_prefix('[')?;
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

    /// Host time at which the guest's clock read zero: every timestamped line is written at or
    /// after its timestamp, so the smallest (seen - stamp) is the tightest estimate. Good only
    /// when the guest clock runs at host speed (TSC-based under TCG with `tsc_early_khz`) and
    /// some line reaches the console without a backlog before it (a quiet boot's do).
    pub fn guest_zero(&self) -> Option<f64> {
        min(&self
            .lines
            .iter()
            .filter_map(|(t, l)| Some(t - guest_stamp(l)?))
            .collect::<Vec<_>>())
    }

    /// Guest-clock time of the first line containing `needle`.
    pub fn guest_time(&self, needle: &str) -> Option<f64> {
        guest_stamp(self.line(needle)?)
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
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&hundred, 50.0), Some(50.0));
        assert_eq!(percentile(&hundred, 99.0), Some(99.0));
        assert_eq!(percentile(&[2.0, 1.0], 99.0), Some(2.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn guest_timestamps() {
        assert_eq!(
            guest_stamp("[    1.234567] Run /init as init process"),
            Some(1.234567)
        );
        assert_eq!(
            guest_stamp("hyper-agent: [0.883] started as PID 1"),
            Some(0.883)
        );
        assert_eq!(guest_stamp("hyper-agent: ready"), None);
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

/// The write end of the pipe [`on_termination_signal`]'s handler writes the signal number to.
static SIGNAL_PIPE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn note_signal(sig: libc::c_int) {
    let b = sig as u8;
    // SAFETY: write(2) is async-signal-safe; one byte to a pipe we own.
    unsafe {
        libc::write(
            SIGNAL_PIPE.load(std::sync::atomic::Ordering::Relaxed),
            std::ptr::addr_of!(b).cast(),
            1,
        )
    };
}

/// Catches SIGINT, SIGTERM and SIGHUP (a handler that writes to a pipe) and runs `cleanup` on a
/// dedicated thread when one arrives, then exits with 128 + the signal.
///
/// The signals are caught, not blocked: a blocked signal stays blocked in every child (std's
/// `Command` keeps the parent's signal mask across exec), so hyperd and the hyper-lb and
/// hyper-dns it starts could then neither reload on SIGHUP nor stop on SIGTERM. A caught
/// signal's handler is reset to the default by exec.
pub fn on_termination_signal(cleanup: fn()) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 into a local array; sigaction with a handler that only calls write(2).
    unsafe {
        assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), 0, "pipe2");
        SIGNAL_PIPE.store(fds[1], std::sync::atomic::Ordering::Relaxed);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = note_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = libc::SA_RESTART;
            libc::sigaction(s, &sa, std::ptr::null_mut());
        }
    }
    std::thread::spawn(move || {
        let mut b = [0u8; 1];
        loop {
            // SAFETY: read(2) into a local buffer from the pipe's read end, which we own.
            let n = unsafe { libc::read(fds[0], b.as_mut_ptr().cast(), 1) };
            if n == 1 {
                break;
            }
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        let sig = i32::from(b[0]);
        eprintln!("\nsignal {sig}: cleaning up");
        cleanup();
        std::process::exit(128 + sig);
    });
}

/// Clean-up for the benchmarks that run hyperd through the end-to-end harness (`net`,
/// `services`, `volumes`): one registry of what they started, undone by [`e2e_cleanup::run`] on
/// a normal exit, when a panic unwinds through a [`e2e_cleanup::Guard`], and on
/// SIGINT/SIGTERM/SIGHUP (through [`on_termination_signal`]).
pub mod e2e_cleanup {
    use std::path::PathBuf;
    use std::process::Child;
    use std::sync::{Arc, Mutex};

    use e2e::{Daemon, Netns};

    #[derive(Default)]
    struct Started {
        daemons: Vec<Arc<Daemon>>,
        children: Vec<Child>,
        netns: Vec<Netns>,
        dirs: Vec<PathBuf>,
    }

    static STARTED: Mutex<Option<Started>> = Mutex::new(None);

    fn with<R>(f: impl FnOnce(&mut Started) -> R) -> R {
        let mut g = STARTED.lock().unwrap_or_else(|e| e.into_inner());
        f(g.get_or_insert_with(Started::default))
    }

    /// Installs the signal handler; call first in `main`. Returns the guard that cleans up when
    /// dropped (at the end of `main`, or while a panic unwinds).
    #[must_use]
    pub fn install() -> Guard {
        crate::on_termination_signal(run);
        Guard
    }

    pub struct Guard;
    impl Drop for Guard {
        fn drop(&mut self) {
            if std::thread::panicking() {
                eprintln!("panicked: cleaning up");
            }
            run();
        }
    }

    /// A hyperd whose containers and services are removed, then stopped, at clean-up.
    pub fn daemon(d: Arc<Daemon>) -> Arc<Daemon> {
        with(|s| s.daemons.push(d.clone()));
        d
    }

    /// A helper process killed (SIGKILL) and reaped at clean-up; returns its pid.
    pub fn child(c: Child) -> u32 {
        let pid = c.id();
        with(|s| s.children.push(c));
        pid
    }

    /// A namespace deleted at clean-up (its `Drop` runs then); returns its name.
    pub fn netns(n: Netns) -> String {
        let name = n.name.clone();
        with(|s| s.netns.push(n));
        name
    }

    /// A file or directory removed at clean-up.
    pub fn path(p: PathBuf) -> PathBuf {
        with(|s| s.dirs.push(p.clone()));
        p
    }

    /// Runs `f`, turning a panic (a command's deadline, a failed command) into a message: the
    /// clean-up carries on with the next step.
    fn attempt(what: &str, f: impl FnOnce()) {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
            eprintln!("clean-up: {what} failed; carrying on");
        }
    }

    /// Undoes everything registered, then sweeps anything left under this process's e2e data
    /// roots (`/tmp/hy-<pid>*`: a hyperd whose start panicked before it was registered, QEMUs
    /// and shims whose removal failed, tenant namespace mounts). Idempotent.
    pub fn run() {
        let s = with(std::mem::take);
        for d in &s.daemons {
            if d.pid().is_none() {
                continue;
            }
            // Services first: their reconciler would replace removed replicas.
            attempt("service rm", || {
                let o = d.hyper(&["service", "ls", "-q"]).timeout(30.0).run();
                for name in o.stdout.split_whitespace() {
                    attempt("service rm", || {
                        d.hyper(&["service", "rm", name]).timeout(120.0).run();
                    });
                }
            });
            attempt("rm -f", || {
                let o = d.hyper(&["ps", "-aq", "--no-trunc"]).timeout(30.0).run();
                for id in o.stdout.split_whitespace() {
                    attempt("rm -f", || {
                        d.hyper(&["rm", "-f", id]).timeout(60.0).run();
                    });
                }
            });
            attempt("stopping hyperd", || d.stop());
            let left = e2e::leftovers(&d.data);
            if !left.is_empty() {
                eprintln!(
                    "clean-up: left after removing every container and stopping hyperd on {} \
                     (removed below):\n  {}\n--- hyperd.log (tail)\n{}",
                    d.data.display(),
                    left.join("\n  "),
                    d.log_tail(25)
                );
            }
        }
        for mut c in s.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        kill_children();
        drop(s.netns);
        sweep();
        for p in &s.dirs {
            let _ = std::fs::remove_dir_all(p).or_else(|_| std::fs::remove_file(p));
        }
        sweep_netns();
        if std::env::var("HYPER_TEST_KEEP").is_ok_and(|v| v == "1") {
            for d in &s.daemons {
                eprintln!("clean-up: kept {} (HYPER_TEST_KEEP=1)", d.data.display());
            }
            return;
        }
        for d in &s.daemons {
            let _ = std::fs::remove_dir_all(&d.data);
        }
        sweep_dirs();
    }

    /// This process's e2e paths: data roots `/tmp/hy-<pid><tag>-N` (the benchmarks' tags start
    /// with `b`) and the busybox image `/tmp/hy-<pid>-busybox.tar`; never another pid's.
    fn ours(p: &str) -> bool {
        let pid = std::process::id();
        p.contains(&format!("/tmp/hy-{pid}b")) || p.contains(&format!("/tmp/hy-{pid}-"))
    }

    /// Kills this process's remaining children: after a signal, a command the main thread was
    /// running (e.g. the load generator) would otherwise outlive us.
    fn kill_children() {
        let me = std::process::id().to_string();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().nth(1));
            if ppid == Some(me.as_str()) {
                // SAFETY: kill(2) on a child of ours; waitpid reaps it.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
            }
        }
    }

    /// Kills what is left of this process's data roots and unmounts their mounts.
    fn sweep() {
        for p in e2e::processes_mentioning(&format!("/tmp/hy-{}", std::process::id())) {
            let is_ours = [
                "qemu-system",
                "hyper-shim",
                "hyperd",
                "hyper-dns",
                "hyper-lb",
            ]
            .iter()
            .any(|b| p.contains(b));
            let Some(pid) = p
                .split_whitespace()
                .next()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            if is_ours && ours(&p) {
                eprintln!("clean-up: killing a leftover: {p}");
                // SAFETY: kill(2) on a process of our own data root, read from /proc.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut left: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| ours(m))
            .collect();
        left.reverse();
        for m in left {
            eprintln!("clean-up: unmounting a leftover: {m}");
            let _ = std::process::Command::new("umount")
                .args(["-l", m])
                .status();
        }
    }

    /// Namespaces made by e2e's `Netns` for this process (`hy-<tag>-<pid>`), e.g. a daemon's
    /// node namespace.
    fn sweep_netns() {
        let suffix = format!("-{}", std::process::id());
        let Ok(o) = std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
        else {
            return;
        };
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if name.starts_with("hy-") && name.ends_with(&suffix) {
                let _ = std::process::Command::new("ip")
                    .args(["netns", "del", name])
                    .status();
            }
        }
    }

    fn sweep_dirs() {
        for e in std::fs::read_dir("/tmp").into_iter().flatten().flatten() {
            let p = e.path();
            if ours(&p.to_string_lossy()) {
                let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
            }
        }
    }
}

/// The first `name` on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Waits until `d`'s standby pool is full (ready = target, up to 20 minutes, asking every
/// second: `hyper info` measures the pool's memory); returns how many are ready.
pub fn standby_pool_full(d: &e2e::Daemon) -> u64 {
    let mut ready = None;
    e2e::wait_for("the standby pool to fill", e2e::secs(1200.0), || {
        let v = d
            .hyper(&["info", "--format", "{{json .}}"])
            .run()
            .ok()
            .json();
        let (r, target) = (&v["StandbyVMsReady"], &v["StandbyVMsTarget"]);
        match r.as_u64() {
            Some(n) if r == target => {
                ready = Some(n);
                Ok(())
            }
            _ => {
                std::thread::sleep(std::time::Duration::from_millis(900));
                Err(format!("{r} of {target} ready"))
            }
        }
    });
    ready.unwrap_or_default()
}

/// Installs Debian's `package` with apt-get unless `probe` (a command and its arguments) runs:
/// the peers a benchmark measures against are not the project's dependencies.
pub fn ensure_package(probe: &[&str], package: &str) -> anyhow::Result<()> {
    use std::process::{Command, Stdio};
    let runs = Command::new(probe[0])
        .args(&probe[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if runs {
        return Ok(());
    }
    eprintln!("{} is missing: apt-get install -y {package}", probe[0]);
    let st = Command::new("apt-get")
        .args(["install", "-y", package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()?;
    anyhow::ensure!(st.success(), "apt-get install {package} failed");
    Ok(())
}

/// An exited busybox container's record as hyperd stores it, for benches that fill a store;
/// its node is left empty, so the hyperd that recovers it adopts it.
pub fn exited_container(id: String, tenant: &str, name: String) -> node::model::Container {
    use node::model::{Container, State, Status};
    Container {
        id,
        tenant: tenant.into(),
        name,
        created: chrono::Utc::now(),
        image: "busybox".into(),
        image_id: "sha256:0".into(),
        path: "true".into(),
        args: vec![],
        config: Default::default(),
        host_config: Default::default(),
        size: "s4".into(),
        state: State {
            status: Status::Exited,
            ..State::default()
        },
        restart_count: 0,
        endpoint: None,
        mounts: Vec::new(),
        node: String::new(),
        lost: None,
    }
}
