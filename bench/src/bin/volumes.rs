//! Volumes: I/O inside a container on a volume beside the same load on the host, and what a
//! volume adds to a container's start. Prints ratios against peers measured in the same run.
//!
//! 1. **local volumes**: `volio` (this crate's std-only I/O tool, compiled static with rustc
//!    and uploaded into a volume `tools` with `hyper volume init`) runs sequential 1 MiB and
//!    random 4 KiB writes and reads with O_DIRECT in `hyper run --rm -v tools:/t:ro -v
//!    data:/data busybox /t/volio ...`; the peer is the same binary with the same arguments on a
//!    file in a temp dir of the host's file system. Runs interleave container and host.
//! 2. **start latency**: `hyper run --rm -v lat:/data busybox true` interleaved with `hyper run
//!    --rm busybox true` on a hyperd with templates on and its default standby pool, each timed
//!    once the pool is full again; each run's shim.log says whether it claimed a standby.
//! 3. **rbd volumes** (`--ceph`): a cluster from `scripts/ceph-cluster start`, a second hyperd
//!    with `--ceph-conf`, the same loads on a volume made with `-d rbd`, beside `rbd bench` on
//!    the host against an image of the same size.
//!
//! Everything runs in a network namespace of its own (the Ceph cluster's veth too). What it
//! starts (containers, hyperds, their data roots and volumes, temp dirs, the cluster) is removed
//! on exit, on a panic and on SIGINT/SIGTERM/SIGHUP: `bench::e2e_cleanup`, then the cluster.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bench::{e2e_cleanup, median, min};
use e2e::{Cmd, Daemon, DaemonOpts};

/// What a start with a volume may cost beyond one without, when it claims a standby VM.
const START_AIM_MS: f64 = 50.0;
/// Deadline of one I/O run, seconds (the guest's I/O is emulated, TCG, on two cores).
const IO_TIMEOUT: f64 = 900.0;
/// The shim's line when a start claimed a standby VM.
const CLAIMED: &str = "standby: claimed by container";

#[derive(clap::Parser)]
struct Args {
    /// MiB written, then read, sequentially in 1 MiB blocks; the random ops fall in this span.
    #[arg(long, default_value_t = 256)]
    seq_mib: u64,
    /// 4 KiB random writes, then as many random reads, per run.
    #[arg(long, default_value_t = 3000)]
    rand_ops: u64,
    /// Runs of each load on each side (medians reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Timed starts with a volume, and as many without.
    #[arg(long, default_value_t = 10)]
    starts: usize,
    /// Also measure rbd volumes, on a Ceph cluster started with scripts/ceph-cluster.
    #[arg(long)]
    ceph: bool,
}

// ---- clean-up ----

/// The Ceph cluster's directory, once `scripts/ceph-cluster start` was called on it.
static CEPH_DIR: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Containers, hyperds, data roots and temp dirs first (no QEMU may still use the cluster),
/// then the cluster. Idempotent.
fn cleanup() {
    e2e_cleanup::run();
    let dir = CEPH_DIR.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(dir) = dir {
        let st = Command::new(ceph_script()).arg("stop").arg(&dir).status();
        if !st.is_ok_and(|s| s.success()) {
            eprintln!(
                "clean-up: scripts/ceph-cluster stop {} failed",
                dir.display()
            );
        }
    }
}

/// Runs [`cleanup`] at the end of `main` and while a panic unwinds.
struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("panicked: cleaning up");
        }
        cleanup();
    }
}

fn ceph_script() -> PathBuf {
    e2e::workspace_root().join("scripts/ceph-cluster")
}

// ---- the loads ----

#[derive(Clone, Copy, PartialEq)]
enum Load {
    SeqWrite,
    SeqRead,
    RandWrite,
    RandRead,
}

/// In this order: the reads find what the writes left, the random ones a file already whole.
const LOADS: [Load; 4] = [
    Load::SeqWrite,
    Load::SeqRead,
    Load::RandWrite,
    Load::RandRead,
];

impl Load {
    fn mode(self) -> &'static str {
        match self {
            Load::SeqWrite => "seq-write",
            Load::SeqRead => "seq-read",
            Load::RandWrite => "rand-write",
            Load::RandRead => "rand-read",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Load::SeqWrite => "seq write 1 MiB, O_DIRECT, fsync at end",
            Load::SeqRead => "seq read 1 MiB, O_DIRECT",
            Load::RandWrite => "rand write 4 KiB, O_DIRECT|O_DSYNC",
            Load::RandRead => "rand read 4 KiB, O_DIRECT",
        }
    }

    fn sequential(self) -> bool {
        matches!(self, Load::SeqWrite | Load::SeqRead)
    }

    fn reads(self) -> bool {
        matches!(self, Load::SeqRead | Load::RandRead)
    }

    /// MiB/s for the sequential loads, IOPS for the random ones.
    fn unit(self) -> &'static str {
        if self.sequential() {
            "MiB/s"
        } else {
            "IOPS"
        }
    }

    /// `rbd bench`'s arguments for the same load, one request at a time as volio does.
    fn rbd_bench_args(self, a: &Args) -> Vec<String> {
        let (size, total) = if self.sequential() {
            ("1M".to_string(), format!("{}M", a.seq_mib))
        } else {
            ("4K".to_string(), format!("{}K", a.rand_ops * 4))
        };
        let kind = if self.reads() { "read" } else { "write" };
        let pattern = if self.sequential() { "seq" } else { "rand" };
        [
            "--io-type",
            kind,
            "--io-size",
            &size,
            "--io-pattern",
            pattern,
            "--io-total",
            &total,
            "--io-threads",
            "1",
        ]
        .map(String::from)
        .to_vec()
    }
}

/// volio's command line for `load` on `file` (the op count is ignored by the sequential loads).
fn volio_argv(load: Load, file: &str, a: &Args) -> Vec<String> {
    let sizes = [a.seq_mib.to_string(), a.rand_ops.to_string()];
    [load.mode().to_string(), file.to_string()]
        .into_iter()
        .chain(sizes)
        .collect()
}

/// The figure of `load` (its unit) from volio's JSON line.
fn volio_figure(load: Load, stdout: &str) -> f64 {
    let line = stdout.lines().rev().find(|l| l.starts_with('{'));
    let v: serde_json::Value = line
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON from volio in {stdout:?}"));
    let key = if load.sequential() { "mib_s" } else { "iops" };
    v[key].as_f64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

/// The figure of `load` from `rbd bench`'s last line, `elapsed: 3  ops: 256  ops/sec: 80.1
/// bytes/sec: 80 MiB/s`: ops/sec is IOPS, and MiB/s for 1 MiB ops.
fn rbd_bench_figure(stdout: &str) -> f64 {
    stdout
        .lines()
        .rev()
        .find_map(|l| {
            let (_, r) = l.split_once("ops/sec:")?;
            r.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no ops/sec in rbd bench's output {stdout:?}"))
}

/// Compiles volio static for the guest into `dir` (std alone: seconds with rustc, where cargo
/// would build the bench crate's whole dependency tree for the static target first).
fn build_volio(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bin/volio.rs");
    let out = dir.join("volio");
    // `cargo run` names its own binary; rustc sits beside it in the toolchain.
    let rustc = std::env::var_os("CARGO")
        .map(|c| Path::new(&c).with_file_name("rustc"))
        .filter(|r| r.is_file())
        .unwrap_or_else(|| "rustc".into());
    let args = [
        "--edition=2021",
        "-Copt-level=2",
        "-Cstrip=symbols",
        "-Ctarget-feature=+crt-static",
        "--target=x86_64-unknown-linux-gnu",
        "-o",
        out.to_str().unwrap(),
        src.to_str().unwrap(),
    ];
    Cmd::new(&rustc, &args).timeout(300.0).run().ok();
    out
}

// ---- hyperd ----

fn hyper(d: &Daemon, argv: &[&str]) -> e2e::Out {
    d.hyper(argv).timeout(300.0).run().ok()
}

/// Until hyperd's standby pool is full again (at most 10 s + 3 s a standby), so that no refill
/// (a restore and a rehearsal) competes with the next measurement, ours or a peer's. Returns
/// how many standbys are ready.
fn wait_standby_full(d: &Daemon) -> usize {
    let mut end = None;
    loop {
        let o = hyper(
            d,
            &[
                "info",
                "--format",
                "{{.StandbyVMsReady}} {{.StandbyVMsTarget}}",
            ],
        );
        let n: Vec<usize> = o
            .stdout
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        let [ready, target] = n[..] else { return 0 };
        let end = *end.get_or_insert(Instant::now() + Duration::from_secs(10 + 3 * target as u64));
        if ready >= target || Instant::now() > end {
            return ready;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// hyperd.log's report of its ahead-of-time VM template (ready, or why not), without colours.
fn wait_template(d: &Daemon) -> String {
    let found = e2e::wait_for("hyperd's VM template", e2e::secs(300.0), || {
        let log = fs::read_to_string(&d.log).unwrap_or_default();
        log.lines()
            .find(|l| l.contains("VM template ready") || l.contains("VM template not built"))
            .map(str::to_string)
            .ok_or_else(|| "no template line yet".to_string())
    });
    let plain: String = found
        .split('\x1b')
        .enumerate()
        .map(|(i, s)| {
            if i == 0 {
                s
            } else {
                s.split_once('m').map_or("", |p| p.1)
            }
        })
        .collect();
    plain
        .split_once("VM template")
        .map_or(plain.clone(), |(_, r)| format!("VM template{r}"))
}

/// Until no QEMU of a container of `d` is left: hyperd answers `--rm` while the shim powers the
/// VM off, and the next run's QEMU may not open the same volume before this one let it go. A
/// claimed standby's QEMU names its standby dir; its root moved with that dir into `DATA/c/`.
fn settle(d: &Daemon) {
    let mark = format!("{}/c/", d.data.display());
    let busy = || {
        fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                let cmdline = fs::read(e.path().join("cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline);
                cmdline.contains("qemu")
                    && (cmdline.contains(&mark)
                        || fs::read_link(e.path().join("root"))
                            .is_ok_and(|r| r.to_string_lossy().starts_with(&mark)))
            })
    };
    e2e::wait_for("the containers' QEMUs to exit", e2e::secs(60.0), || {
        if busy() {
            Err("a QEMU is left".into())
        } else {
            Ok(())
        }
    });
}

/// Drops the host's page cache of every local volume file. QEMU opens them through that cache
/// (`cache.direct=off`), so a guest's O_DIRECT read of what it just wrote would come from host
/// memory, while the host peer's O_DIRECT reads go to the disk: each read run starts cold.
fn evict_local_volumes(d: &Daemon) {
    for e in fs::read_dir(d.data.join("volumes/local"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(f) = fs::File::open(e.path()) {
            // SAFETY: posix_fadvise(2) on a descriptor we own; advice only, no memory touched.
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        }
    }
}

/// Volume `tools` holding volio, from a directory uploaded by the CLI.
fn tools_volume(d: &Daemon, tools: &Path) {
    hyper(d, &["volume", "create", "--name", "tools"]);
    hyper(
        d,
        &["volume", "init", &format!("{}:tools", tools.display())],
    );
}

/// One volio run in a container, volume `data` at /data.
fn in_container(d: &Daemon, data: &str, load: Load, a: &Args) -> f64 {
    let data = format!("{data}:/data");
    let mut argv = vec![
        "run",
        "--rm",
        "-v",
        "tools:/t:ro",
        "-v",
        &data,
        "busybox",
        "/t/volio",
    ];
    let volio = volio_argv(load, "/data/f", a);
    argv.extend(volio.iter().map(String::as_str));
    let o = d.hyper(&argv).timeout(IO_TIMEOUT).run().ok();
    settle(d);
    volio_figure(load, &o.stdout)
}

fn on_host(volio: &Path, file: &Path, load: Load, a: &Args) -> f64 {
    let argv = volio_argv(load, file.to_str().unwrap(), a);
    let o = Cmd::new(volio, &argv.iter().map(String::as_str).collect::<Vec<_>>())
        .timeout(IO_TIMEOUT)
        .run()
        .ok();
    volio_figure(load, &o.stdout)
}

// ---- the I/O passes ----

/// One load's figures, each run, in the container and at its peer.
struct Row {
    load: Load,
    guest: Vec<f64>,
    peer: Vec<f64>,
}

/// `runs` rounds of every load, container then peer, each once the standby pool is full.
fn io_pass(
    d: &Daemon,
    a: &Args,
    guest: impl Fn(Load) -> f64,
    peer: impl Fn(Load) -> f64,
) -> Vec<Row> {
    let mut rows: Vec<Row> = LOADS
        .iter()
        .map(|&load| Row {
            load,
            guest: Vec::new(),
            peer: Vec::new(),
        })
        .collect();
    for run in 1..=a.runs {
        for row in &mut rows {
            wait_standby_full(d);
            let g = guest(row.load);
            wait_standby_full(d);
            let p = peer(row.load);
            eprintln!(
                "run {run} {}: container {g:.1}, peer {p:.1} {}",
                row.load.mode(),
                row.load.unit()
            );
            row.guest.push(g);
            row.peer.push(p);
        }
    }
    rows
}

fn print_io(title: &str, peer: &str, rows: &[Row]) {
    println!("-- {title} --");
    println!(
        "{:<40}{:>6}{:>11}{:>11}{:>9}   (each run, container/{peer})",
        "load",
        "unit",
        "container",
        peer,
        format!("÷ {peer}")
    );
    for r in rows {
        let (g, p) = (
            median(&r.guest).unwrap_or(f64::NAN),
            median(&r.peer).unwrap_or(f64::NAN),
        );
        let each: Vec<String> = r
            .guest
            .iter()
            .zip(&r.peer)
            .map(|(g, p)| format!("{g:.0}/{p:.0}"))
            .collect();
        println!(
            "{:<40}{:>6}{g:>11.1}{p:>11.1}{:>9.3}   ({})",
            r.load.label(),
            r.load.unit(),
            g / p,
            each.join(", ")
        );
    }
}

// ---- start latency ----

struct Start {
    secs: f64,
    /// "claimed" (a standby VM), "restore", "cold boot", or "not seen".
    how: String,
}

/// How the shim brought the container's VM up, from its shim.log.
fn boot_kind(shim_log: &str) -> Option<String> {
    if shim_log.contains(CLAIMED) {
        return Some("claimed".into());
    }
    let l = shim_log.lines().find(|l| l.contains("qemu pid"))?;
    let how = l.rsplit_once('(')?.1.trim_end_matches(')');
    (how != "standby").then(|| how.to_string())
}

/// Reads the shim.log of the container that appears in `cdir` (every 5 ms) until its boot
/// kind is known or `done` is set; `--rm` removes the directory, so it is read while it runs.
fn watch_boot(cdir: &Path, before: &HashSet<OsString>, done: &AtomicBool) -> Option<String> {
    let mut dir: Option<PathBuf> = None;
    while !done.load(Ordering::Relaxed) {
        if dir.is_none() {
            dir = fs::read_dir(cdir)
                .into_iter()
                .flatten()
                .flatten()
                .find(|e| !before.contains(&e.file_name()))
                .map(|e| e.path());
        }
        let log = dir
            .as_ref()
            .and_then(|d| fs::read_to_string(d.join("shim.log")).ok());
        if let Some(kind) = log.as_deref().and_then(boot_kind) {
            return Some(kind);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// One `hyper run --rm [-v VOLUME] busybox true`, timed around the CLI (spawned and waited for
/// directly: no polling in the timed path), its boot kind read beside it.
fn timed_start(d: &Daemon, volume: Option<&str>) -> Start {
    let cdir = d.data.join("c");
    let before: HashSet<OsString> = fs::read_dir(&cdir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let host = d.unix_host();
    let mut argv = vec!["-H", &host, "run", "--rm"];
    if let Some(v) = volume {
        argv.extend(["-v", v]);
    }
    argv.extend(["busybox", "true"]);
    let done = AtomicBool::new(false);
    let (secs, out, how) = std::thread::scope(|s| {
        let watcher = s.spawn(|| watch_boot(&cdir, &before, &done));
        let t = Instant::now();
        let out = Command::new(e2e::hyper_bin())
            .args(&argv)
            .env("HYPER_CONFIG", d.data.join("noconfig"))
            .env_remove("HYPER_HOST")
            .stdin(Stdio::null())
            .output()
            .expect("spawn hyper");
        let secs = t.elapsed().as_secs_f64();
        done.store(true, Ordering::Relaxed);
        (secs, out, watcher.join().expect("shim.log watcher"))
    });
    assert!(
        out.status.success(),
        "hyper {}: {}: {}",
        argv.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    settle(d);
    Start {
        secs,
        how: how.unwrap_or_else(|| "not seen".into()),
    }
}

/// One warm-up of each, then `n` starts with the volume interleaved with `n` without, each once
/// the standby pool is full again.
fn start_pass(d: &Daemon, n: usize) -> (Vec<Start>, Vec<Start>) {
    const VOLUME: &str = "lat:/data";
    hyper(d, &["volume", "create", "--name", "lat", "-d", "local"]);
    for v in [Some(VOLUME), None] {
        wait_standby_full(d);
        timed_start(d, v);
    }
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for i in 1..=n {
        wait_standby_full(d);
        let w = timed_start(d, Some(VOLUME));
        wait_standby_full(d);
        let o = timed_start(d, None);
        eprintln!(
            "start {i}: with a volume {:.3}s ({}), without {:.3}s ({})",
            w.secs, w.how, o.secs, o.how
        );
        with.push(w);
        without.push(o);
    }
    (with, without)
}

fn print_starts(with: &[Start], without: &[Start]) {
    let secs = |v: &[Start], claimed: bool| -> Vec<f64> {
        v.iter()
            .filter(|s| !claimed || s.how == "claimed")
            .map(|s| s.secs)
            .collect()
    };
    let row = |name: &str, v: &[Start]| {
        let kinds: Vec<&str> = v.iter().map(|s| s.how.as_str()).collect();
        let claimed = kinds.iter().filter(|k| **k == "claimed").count();
        println!(
            "{name:<40}{:>9.3}{:>9.3}{:>6}   claimed {claimed} of {} ({})",
            median(&secs(v, false)).unwrap_or(f64::NAN),
            min(&secs(v, false)).unwrap_or(f64::NAN),
            v.len(),
            v.len(),
            kinds.join(", ")
        );
    };
    println!("-- start latency (templates on, hyperd's default standby pool), seconds --");
    println!("{:<40}{:>9}{:>9}{:>6}", "run", "median", "min", "runs");
    row("hyper run --rm -v lat:/data busybox true", with);
    row("hyper run --rm busybox true", without);
    let diff =
        |claimed| Some((median(&secs(with, claimed))? - median(&secs(without, claimed))?) * 1e3);
    match diff(true) {
        Some(ms) => println!(
            "a volume adds {ms:+.0} ms to a start that claims a standby (medians of the claimed runs; aim: under {START_AIM_MS:.0} ms): {}; all runs: {:+.0} ms",
            if ms < START_AIM_MS { "met" } else { "not met" },
            diff(false).unwrap_or(f64::NAN)
        ),
        None => println!(
            "no run of one kind claimed a standby: the aim (under {START_AIM_MS:.0} ms more when a standby is claimed) is not measured; all runs: {:+.0} ms",
            diff(false).unwrap_or(f64::NAN)
        ),
    }
}

// ---- rbd ----

/// The cluster, a hyperd with `--ceph-conf`, and the same loads on an rbd volume beside `rbd
/// bench` on the host. Err: why the part was skipped.
fn rbd_pass(a: &Args, tools: &Path) -> Result<Vec<Row>, String> {
    let script = ceph_script();
    if !script.is_file() {
        return Err(format!("{} is not there", script.display()));
    }
    if Command::new("rbd").arg("--version").output().is_err() {
        return Err("no `rbd` command (Debian's ceph-common)".into());
    }
    // Outside this process's e2e paths (/tmp/hy-<pid>b...), which e2e_cleanup removes before
    // the cluster is stopped.
    let dir = PathBuf::from(format!("/tmp/hbv{}-ceph", std::process::id()));
    *CEPH_DIR.lock().unwrap_or_else(|e| e.into_inner()) = Some(dir.clone());
    let o = Cmd::new(&script, &["start", dir.to_str().unwrap()])
        .timeout(900.0)
        .run();
    if o.code != 0 {
        return Err(format!("scripts/ceph-cluster start failed: {o}"));
    }
    println!("{}", o.stdout.trim().lines().last().unwrap_or(""));
    let conf = dir.join("ceph.conf");
    let conf = conf.to_str().unwrap();
    let d = e2e_cleanup::daemon(Daemon::start(
        "bvr",
        DaemonOpts {
            extra_args: vec!["--ceph-conf".into(), conf.into()],
            ..DaemonOpts::default()
        },
    ));
    tools_volume(&d, tools);
    hyper(&d, &["volume", "create", "--name", "data", "-d", "rbd"]);
    let rbd = |args: &[&str]| {
        let mut argv = vec!["-c", conf, "--id", "hyper"];
        argv.extend_from_slice(args);
        Cmd::new("rbd", &argv).timeout(IO_TIMEOUT).run().ok()
    };
    let image = "rbd/hyper-bench";
    rbd(&["create", "--size", &format!("{}M", a.seq_mib), image]);
    let rows = io_pass(
        &d,
        a,
        |load| in_container(&d, "data", load, a),
        |load| {
            let mut argv = vec!["bench"];
            let extra = load.rbd_bench_args(a);
            argv.extend(extra.iter().map(String::as_str));
            argv.push(image);
            rbd_bench_figure(&rbd(&argv).stdout)
        },
    );
    rbd(&["rm", "--no-progress", image]);
    Ok(rows)
}

// ---- main ----

/// `model name, N cpus; /tmp on FSTYPE DEVICE`: what the host peer's figures come from.
fn host_line() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|p| p.1.trim().to_string())
        })
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    let tmp = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && "/tmp/".starts_with(&format!("{}/", f[1].trim_end_matches('/'))))
                .then(|| (f[1].len(), format!("{} {}", f[2], f[0])))
        })
        .max()
        .map_or_else(String::new, |p| p.1);
    format!("{model}, {cpus} cpus; /tmp on {tmp}")
}

fn main() {
    let a = <Args as clap::Parser>::parse();
    assert!(
        a.runs >= 1 && a.starts >= 1,
        "--runs and --starts must be at least 1"
    );
    e2e::enter_private_network_namespace();
    bench::on_termination_signal(cleanup);
    let _guard = Guard;
    let t_all = Instant::now();

    let tools = e2e_cleanup::path(e2e::short_tmp("bvt"));
    fs::create_dir_all(&tools).unwrap();
    let volio = build_volio(&tools);
    let host_dir = e2e_cleanup::path(e2e::short_tmp("bvh"));
    fs::create_dir_all(&host_dir).unwrap();
    let host_file = host_dir.join("f");

    let d: Arc<Daemon> = e2e_cleanup::daemon(Daemon::start(
        "bv",
        DaemonOpts {
            extra_args: vec!["--templates".into(), "on".into()],
            env_remove: vec![
                "HYPERD_TEMPLATES",
                "HYPERD_STANDBY_VMS",
                "HYPERD_STANDBY_VMS_MAX",
            ],
            ..DaemonOpts::default()
        },
    ));
    let template = wait_template(&d);
    let pool = wait_standby_full(&d);
    tools_volume(&d, &tools);
    hyper(&d, &["volume", "create", "--name", "data", "-d", "local"]);

    println!(
        "== volumes: {} MiB sequential, {} random 4 KiB ops, one request at a time; median of {} runs ==",
        a.seq_mib, a.rand_ops, a.runs
    );
    println!("host: {}", host_line());
    println!("hyperd: {template}; {pool} standby VMs ready");
    let rows = io_pass(
        &d,
        &a,
        |load| {
            if load.reads() {
                evict_local_volumes(&d);
            }
            in_container(&d, "data", load, &a)
        },
        |load| on_host(&volio, &host_file, load, &a),
    );
    print_io(
        "local volume (sparse file on the host's /tmp file system) vs volio on a file in /tmp",
        "host",
        &rows,
    );
    let (with, without) = start_pass(&d, a.starts);
    print_starts(&with, &without);
    d.stop();

    if !a.ceph {
        println!("-- rbd: skipped (no --ceph) --");
    } else {
        let rbd = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rbd_pass(&a, &tools)));
        match rbd {
            Ok(Ok(rows)) => print_io(
                "rbd volume (Ceph: 1 mon, 3 OSDs, size 3, on this host) vs `rbd bench --io-threads 1` on the host",
                "rbd",
                &rows,
            ),
            Ok(Err(why)) => println!("-- rbd: skipped: {why} --"),
            Err(_) => println!("-- rbd: failed (the panic above) --"),
        }
    }
    println!("({:.0}s in all)", t_all.elapsed().as_secs_f64());
}
