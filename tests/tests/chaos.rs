//! The chaos run (issue 17): a workload, random faults, and what must hold afterwards.
//!
//! Not part of the default test command: it runs only when `HYPER_CHAOS_SECS` is set
//! (`scripts/chaos [SECONDS]`; `scripts/test` runs a short form). One hyperd of its own, in the
//! harness's private network namespace, carries:
//! - a service `web` of 2 replicas behind the tenant's balancer, with a floating IP, polled from
//!   an "internet" namespace by a client that never retries and records every failure;
//! - a churn of containers started, stopped, started again and removed;
//! - a writer on a volume (`--restart always`) that writes blocks, syncs them, records each
//!   block's checksum and then acknowledges it on its stdout.
//!
//! Every 6 to 14 s a fault from: `kill -9` of hyperd (started again on the same data root, as
//! an operator's supervisor would), of a random `hyper-shim`, of a random QEMU, of the tenant's
//! `hyper-lb` or `hyper-dns`, and `nft flush table` of one of hyperd's tables (in the node's or
//! the tenant's namespace, both inside the test's own). After each fault the run waits until
//! the system is healthy again (see [`health`]) and records the healing window.
//!
//! At the end it asserts: every fault healed, each within 30 s, the windows covering under 20% of
//! the run; client and API errors only inside the windows; then, with everything removed and
//! hyperd stopped, no VM, supervisor, balancer, DNS, namespace, tap, mount, container directory
//! or volume file left; every acknowledged block read back with its checksum; and the billing
//! records in the store continuous: every segment closed, none overlapping another of the same
//! resource, and every moment a container was seen running (while the store agreed with the
//! processes) covered by one of its run segments. It prints the figures.
//!
//! `HYPER_CHAOS_SEED` replays a run's choice of faults and gaps (printed at the start).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use e2e::*;
use serde_json::Value;
use store::Store;

fn main() {
    if std::env::var("HYPER_CHAOS_SECS").is_err() {
        println!("chaos: HYPER_CHAOS_SECS is not set, nothing to do (scripts/chaos runs it)");
        return;
    }
    let tests: &[(&'static str, TestFn)] = &[("chaos", chaos)];
    std::process::exit(run_tests(tests));
}

const FIP_POOL: &str = "198.51.100.16/29";

/// Each replica serves its own hostname over HTTP on port 80.
const SERVE: &str = "mkdir -p /w && hostname > /w/index.html && httpd -f -p 80 -h /w";

/// Writes 64 KiB blocks `bN` to /data, each synced, then its checksum `sN` (written aside and
/// renamed, synced), then prints `ack N`. A restart carries on after the last checksum.
const WRITER: &str = "cd /data; i=0; for f in s*; do [ -e \"$f\" ] || continue; k=${f#s}; \
     [ \"$k\" -gt \"$i\" ] && i=$k; done; \
     while true; do i=$((i+1)); dd if=/dev/urandom of=b$i bs=4k count=16 2>/dev/null; sync; \
     md5sum b$i > t$i; sync; mv t$i s$i; sync; echo ack $i; sleep 0.5; done";

/// The longest a heal may take, and the share of the run the healing windows may cover.
const HEAL_BOUND_SECS: f64 = 30.0;
const WINDOW_SHARE_BOUND: f64 = 0.20;

/// A small deterministic generator (xorshift64*), seeded per run and printed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn secs(&mut self, lo: f64, hi: f64) -> Duration {
        Duration::from_secs_f64(lo + (hi - lo) * (self.next() % 1000) as f64 / 1000.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum FaultKind {
    Hyperd,
    Shim,
    Qemu,
    Lb,
    Dns,
    NftFlush,
}

const KINDS: [FaultKind; 6] = [
    FaultKind::Hyperd,
    FaultKind::Shim,
    FaultKind::Qemu,
    FaultKind::Lb,
    FaultKind::Dns,
    FaultKind::NftFlush,
];

struct Fault {
    kind: FaultKind,
    target: String,
    injected: DateTime<Utc>,
    healed: Option<DateTime<Utc>>,
    /// What the last health check said before it passed (or when it gave up).
    last_symptom: String,
}

impl Fault {
    fn heal_secs(&self) -> f64 {
        self.healed
            .map_or(f64::INFINITY, |h| secs_between(self.injected, h))
    }
}

fn secs_between(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    (b - a).num_milliseconds() as f64 / 1000.0
}

/// One request or API call: when it started and ended, and whether it failed (and why).
#[derive(Clone)]
struct Attempt {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    error: Option<String>,
}

/// A container seen running: its id, from, until.
type Sighting = (String, DateTime<Utc>, DateTime<Utc>);

/// Usage segments by (kind, resource): (start, end).
type Segments = BTreeMap<(String, String), Vec<(DateTime<Utc>, Option<DateTime<Utc>>)>>;

/// The run's shared context.
struct Chaos {
    d: Arc<Daemon>,
    /// The "internet" namespace the FIP is reached from.
    inet: Netns,
    fip: String,
    /// Tenant daemons (net dir, "lb"/"dns") and nftables tables (namespace path, table) that
    /// were there when the run began: each must be back after a fault.
    daemons: Vec<(PathBuf, &'static str)>,
    tables: Vec<(PathBuf, String)>,
    /// (container id, seen from, seen until): running while the store agreed with the
    /// processes.
    seen_running: Mutex<Vec<Sighting>>,
    /// The name of the container an API call of the churn is changing, and the names of the
    /// containers seen so far by short id.
    busy: Mutex<Option<String>>,
    names: Mutex<BTreeMap<String, String>>,
}

/// A process of a container: pid, binary ("qemu", "shim" or other), the container's short id.
struct CProc {
    pid: i32,
    kind: &'static str,
    id12: String,
}

/// QEMU and shim processes whose command line, root or working directory is under `DATA/c/`.
fn container_procs(data: &Path) -> Vec<CProc> {
    let needle = format!("{}/c/", data.display());
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(pid) = name.parse::<i32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        let kind = if cmd.contains("qemu-system") {
            "qemu"
        } else if cmd.contains("hyper-shim") {
            "shim"
        } else {
            continue;
        };
        // Zombies hold nothing.
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        if stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'))
        {
            continue;
        }
        let mut places = vec![cmd.clone()];
        for link in ["root", "cwd"] {
            if let Ok(p) = std::fs::read_link(e.path().join(link)) {
                places.push(format!("{}/", p.display()));
            }
        }
        let id12 = places.iter().find_map(|p| {
            let i = p.find(&needle)?;
            let rest = &p[i + needle.len()..];
            let id: String = rest.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
            (id.len() == 12).then_some(id)
        });
        if let Some(id12) = id12 {
            out.push(CProc { pid, kind, id12 });
        }
    }
    out
}

fn pid_alive_as(pid_file: &Path, binary: &str) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let zombie = stat
        .rsplit_once(") ")
        .is_some_and(|(_, rest)| rest.starts_with('Z'));
    (String::from_utf8_lossy(&cmd).contains(binary) && !zombie).then_some(pid)
}

/// `nft ARGS` inside the namespace at `ns`.
fn nft_in(ns: &Path, args: &[&str]) -> Out {
    let net = format!("--net={}", ns.display());
    let mut a = vec![net.as_str(), "nft"];
    a.extend_from_slice(args);
    Cmd::new("nsenter", &a).timeout(20.0).run()
}

/// Rules (lines that are neither table, chain, set, hook nor brace lines) of a table.
fn rule_count(listing: &str) -> usize {
    listing
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with("table ")
                && !l.starts_with("chain ")
                && !l.starts_with("set ")
                && !l.starts_with("map ")
                && !l.starts_with("type ")
                && !l.starts_with("flags ")
                && !l.starts_with("elements ")
                && !l.starts_with("policy ")
                && !l.starts_with('}')
        })
        .count()
}

/// Our tables (`inet hyper*`) in a namespace that hold at least one rule.
fn hyper_tables(ns: &Path) -> Vec<String> {
    let o = nft_in(ns, &["list", "tables"]);
    o.stdout
        .lines()
        .filter_map(|l| l.strip_prefix("table inet "))
        .filter(|t| t.starts_with("hyper"))
        .filter(|t| rule_count(&nft_in(ns, &["list", "table", "inet", t]).stdout) > 0)
        .map(str::to_string)
        .collect()
}

/// The tenant namespaces' directories (`DATA/net/tN`).
fn tenant_dirs(data: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data.join("net"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

/// The tenant namespace itself: a bind mount in its directory, or the directory.
fn tenant_ns(dir: &Path) -> PathBuf {
    for f in ["netns", "ns", "net"] {
        if dir.join(f).exists() {
            return dir.join(f);
        }
    }
    dir.to_path_buf()
}

/// Every container as the API lists it: (full id, state, name).
fn api_containers(d: &Daemon) -> Result<Vec<(String, String, String)>, String> {
    let sock = d.sock.to_string_lossy().into_owned();
    let o = Cmd::new(
        "curl",
        &[
            "-sf",
            "--max-time",
            "10",
            "--unix-socket",
            &sock,
            "http://hyper/v1.44/containers/json?all=1",
        ],
    )
    .timeout(30.0)
    .run();
    if o.code != 0 {
        return Err(format!("hyperd does not answer (curl {})", o.code));
    }
    let v: Value = serde_json::from_str(&o.stdout).map_err(|e| format!("{e}: {}", o.stdout))?;
    Ok(v.as_array()
        .ok_or("not a list")?
        .iter()
        .map(|c| {
            (
                c["Id"].as_str().unwrap_or("").to_string(),
                c["State"].as_str().unwrap_or("").to_string(),
                c["Names"][0]
                    .as_str()
                    .unwrap_or("")
                    .trim_start_matches('/')
                    .to_string(),
            )
        })
        .collect())
}

impl Chaos {
    /// Waits, at most `limit`, until no process or directory is left of the containers that
    /// were called `name`. Unlike `Daemon::wait_torn_down` it does not fail: a teardown the
    /// chaos delays is the reconciler's to finish, and the run's checks judge it.
    fn wait_name_torn_down(&self, name: &str, limit: Duration) {
        let ids: Vec<String> = {
            let names = self.names.lock().unwrap();
            names
                .iter()
                .filter(|(_, n)| n.as_str() == name)
                .map(|(id, _)| id.clone())
                .collect()
        };
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if ids.iter().all(|id| self.d.teardown_left(id).is_empty()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Healthy: hyperd answers; every container the store calls running has its QEMU and shim,
    /// and every QEMU or shim and container directory belongs to a container the store holds
    /// and does not call exited (the container a call of the churn is changing aside: it is in
    /// between until the call returns); the tenant's balancer and DNS run; our nftables tables
    /// hold rules again; and four requests in a row through the service's FIP are answered.
    /// The containers seen running are recorded for the billing check.
    fn health(&self) -> Result<(), String> {
        self.health_with(false)
    }

    /// [`Chaos::health`]; `settled` when no operation is in flight (the end of the run): then
    /// only a running or paused container may have processes, not one being created or started.
    fn health_with(&self, settled: bool) -> Result<(), String> {
        let d = &self.d;
        let before = Utc::now();
        let list = api_containers(d)?;
        let procs = container_procs(&d.data);
        let after = Utc::now();
        let by12: BTreeMap<&str, &str> = list
            .iter()
            .map(|(id, st, _)| (&id[..12.min(id.len())], st.as_str()))
            .collect();
        // The container an API call of the churn is changing right now is in between.
        let busy = {
            let mut names = self.names.lock().unwrap();
            for (id, _, name) in &list {
                names.insert(id[..12.min(id.len())].to_string(), name.clone());
            }
            let busy = self.busy.lock().unwrap().clone();
            names
                .iter()
                .filter(|(_, n)| Some(*n) == busy.as_ref())
                .map(|(id, _)| id.clone())
                .collect::<BTreeSet<String>>()
        };
        for (id, st, _) in &list {
            if st == "running" && !busy.contains(&id[..12]) {
                let id12 = &id[..12];
                for kind in ["qemu", "shim"] {
                    if !procs.iter().any(|p| p.id12 == id12 && p.kind == kind) {
                        return Err(format!("{id12} is running in the store without its {kind}"));
                    }
                }
            }
        }
        for p in procs.iter().filter(|p| !busy.contains(&p.id12)) {
            match by12.get(p.id12.as_str()) {
                None => {
                    return Err(format!(
                        "{} {} of {} which the store does not hold",
                        p.kind, p.pid, p.id12
                    ))
                }
                Some(&st)
                    if st == "exited"
                        || st == "dead"
                        || (settled && !matches!(st, "running" | "paused")) =>
                {
                    return Err(format!("{} {} of {} which is {st}", p.kind, p.pid, p.id12))
                }
                _ => {}
            }
        }
        for e in std::fs::read_dir(d.data.join("c"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let n = e.file_name().to_string_lossy().into_owned();
            if !by12.contains_key(n.as_str()) && !busy.contains(&n) {
                return Err(format!("container directory {n} of no container"));
            }
        }
        for (dir, name) in &self.daemons {
            let bin = format!("hyper-{name}");
            if pid_alive_as(&dir.join(format!("{name}.pid")), &bin).is_none() {
                return Err(format!("{bin} of {} is not running", dir.display()));
            }
        }
        for (ns, table) in &self.tables {
            let o = nft_in(ns, &["list", "table", "inet", table]);
            if rule_count(&o.stdout) == 0 {
                return Err(format!("table inet {table} in {} is empty", ns.display()));
            }
        }
        let addr = format!("{}:80", self.fip);
        self.inet.run(|| {
            for i in 0..4 {
                http_get(&addr, "/").map_err(|e| format!("request {i} through the FIP: {e}"))?;
            }
            Ok::<(), String>(())
        })?;
        let mut seen = self.seen_running.lock().unwrap();
        for (id, st, _) in &list {
            if st == "running" {
                seen.push((id.clone(), before, after));
            }
        }
        Ok(())
    }

    /// Polls [`Chaos::health`] until it passes: the time it did, or None and the symptom after
    /// `give_up`.
    fn wait_healthy(&self, give_up: Duration) -> (Option<DateTime<Utc>>, String) {
        let end = Instant::now() + give_up;
        let mut last = String::new();
        loop {
            match self.health() {
                Ok(()) => return (Some(Utc::now()), last),
                Err(e) => last = e,
            }
            if Instant::now() >= end {
                return (None, last);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Injects one fault of `kind`; what it hit, or None when there was nothing to hit.
    fn inject(&self, kind: FaultKind, rng: &mut Rng) -> Option<String> {
        let d = &self.d;
        let kill = |pid: i32| {
            // SAFETY: kill(2) on a process of this run's own data root.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        };
        match kind {
            FaultKind::Hyperd => {
                let pid = d.pid()?;
                d.kill9();
                // Down for a moment, as when a supervisor brings it back.
                std::thread::sleep(rng.secs(0.0, 2.0));
                d.restart();
                Some(format!("hyperd {pid}"))
            }
            FaultKind::Shim | FaultKind::Qemu => {
                let want = if kind == FaultKind::Shim {
                    "shim"
                } else {
                    "qemu"
                };
                let procs: Vec<CProc> = container_procs(&d.data)
                    .into_iter()
                    .filter(|p| p.kind == want)
                    .collect();
                if procs.is_empty() {
                    return None;
                }
                let p = &procs[rng.below(procs.len())];
                kill(p.pid);
                Some(format!("{want} {} of {}", p.pid, p.id12))
            }
            FaultKind::Lb | FaultKind::Dns => {
                let name = if kind == FaultKind::Lb { "lb" } else { "dns" };
                let bin = format!("hyper-{name}");
                let pids: Vec<i32> = self
                    .daemons
                    .iter()
                    .filter(|(_, n)| *n == name)
                    .filter_map(|(dir, _)| pid_alive_as(&dir.join(format!("{name}.pid")), &bin))
                    .collect();
                if pids.is_empty() {
                    return None;
                }
                let pid = pids[rng.below(pids.len())];
                kill(pid);
                Some(format!("{bin} {pid}"))
            }
            FaultKind::NftFlush => {
                let (ns, table) = &self.tables[rng.below(self.tables.len())];
                nft_in(ns, &["flush", "table", "inet", table]).ok();
                Some(format!("table inet {table} in {}", ns.display()))
            }
        }
    }
}

/// Runs an API call of the workload, turning a panic (a timeout) into an error.
fn attempt(log: &Mutex<Vec<Attempt>>, what: &str, f: impl FnOnce() -> Out) -> Option<Out> {
    let start = Utc::now();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    let end = Utc::now();
    let (ok, error) = match r {
        Ok(o) if o.code == 0 => (Some(o), None),
        Ok(o) => (None, Some(format!("{what}: {}", o.stderr.trim()))),
        Err(_) => (None, Some(format!("{what}: timed out"))),
    };
    log.lock().unwrap().push(Attempt { start, end, error });
    ok
}

fn chaos() {
    let run_for = Duration::from_secs(
        std::env::var("HYPER_CHAOS_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(180),
    );
    let seed = std::env::var("HYPER_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| Utc::now().timestamp_nanos_opt().unwrap_or(1) as u64 | 1);
    println!("chaos: {} s, seed {seed}", run_for.as_secs());
    let mut rng = Rng(seed);

    let d = Daemon::start(
        "x",
        DaemonOpts {
            // Drift (a flushed table) is repaired within the reconciler's interval: 2 s
            // instead of the default 10 s, so that faults every few seconds leave most of the
            // run healthy.
            extra_args: vec![
                "--fip-pool".into(),
                FIP_POOL.into(),
                "--net-reconcile-interval".into(),
                "2".into(),
            ],
            ..DaemonOpts::default()
        },
    );

    // The workload: the service and its FIP, the volume writer.
    d.http_service("web", 2, SERVE).run().ok();
    let inet = Netns::internet("xinet", &d.node, "hy-xinet0", FIP_POOL);
    let fip = d.hyper(&["fip", "allocate", "1"]).run().ok().out();
    d.hyper(&["service", "attach-fip", "--fip", &fip, "web"])
        .run()
        .ok();
    d.hyper(&["volume", "create", "--name", "chaosvol"])
        .run()
        .ok();
    d.hyper(&[
        "run",
        "-d",
        "--name",
        "writer",
        "--restart",
        "always",
        "-v",
        "chaosvol:/data",
        "busybox",
        "sh",
        "-c",
        WRITER,
    ])
    .timeout(120.0)
    .run()
    .ok();

    // What must come back after each fault: the tenant daemons and tables present now.
    let mut cx = Chaos {
        d: d.clone(),
        inet,
        fip,
        daemons: Vec::new(),
        tables: Vec::new(),
        seen_running: Mutex::default(),
        busy: Mutex::default(),
        names: Mutex::default(),
    };
    wait_for("the service to answer through its FIP", secs(180.0), || {
        let addr = format!("{}:80", cx.fip);
        cx.inet.run(|| http_get(&addr, "/")).map(|_| ())
    });
    for dir in tenant_dirs(&d.data) {
        for name in ["lb", "dns"] {
            if pid_alive_as(&dir.join(format!("{name}.pid")), &format!("hyper-{name}")).is_some() {
                cx.daemons.push((dir.clone(), name));
            }
        }
        let ns = tenant_ns(&dir);
        for t in hyper_tables(&ns) {
            cx.tables.push((ns.clone(), t));
        }
    }
    for t in hyper_tables(&d.node.path()) {
        cx.tables.push((d.node.path(), t));
    }
    println!(
        "chaos: tenant daemons {:?}; tables {:?}",
        cx.daemons, cx.tables
    );
    assert!(
        cx.daemons.iter().any(|(_, n)| *n == "lb"),
        "no hyper-lb runs for the service"
    );
    assert!(!cx.tables.is_empty(), "no nftables table of hyperd's found");
    let (ok, why) = cx.wait_healthy(secs(180.0));
    assert!(ok.is_some(), "not healthy before any fault: {why}");
    let cx = Arc::new(cx);

    let stop = Arc::new(AtomicBool::new(false));
    // The client: one GET every 200 ms through the FIP, never retried.
    let client_log: Arc<Mutex<Vec<Attempt>>> = Arc::default();
    let client = {
        let (stop, log, cx) = (stop.clone(), client_log.clone(), cx.clone());
        std::thread::spawn(move || {
            let addr = format!("{}:80", cx.fip);
            let file = std::fs::File::open(cx.inet.path()).expect("open netns");
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            while !stop.load(Ordering::Relaxed) {
                let start = Utc::now();
                let r = http_get(&addr, "/");
                log.lock().unwrap().push(Attempt {
                    start,
                    end: Utc::now(),
                    error: r.err(),
                });
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    // The churn: run, stop, start, remove, one container at a time.
    let api_log: Arc<Mutex<Vec<Attempt>>> = Arc::default();
    let churned = Arc::new(Mutex::new(0usize));
    let churn = {
        let (stop, log, cx, churned) = (stop.clone(), api_log.clone(), cx.clone(), churned.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let name = format!("churn{n}");
                let op = |what: &str, args: &[&str]| {
                    *cx.busy.lock().unwrap() = Some(name.clone());
                    let r = attempt(&log, what, || cx.d.hyper(args).timeout(90.0).run());
                    if what == "rm" && r.is_some() {
                        // `rm -f` answers once the VM is killed; QEMU's exit, the supervisor's
                        // and the directory's removal follow: in between until they are done.
                        // (After a failed `rm` the container is still there, nothing to wait for.)
                        cx.wait_name_torn_down(&name, secs(30.0));
                    }
                    *cx.busy.lock().unwrap() = None;
                    r
                };
                if op(
                    "run",
                    &["run", "-d", "--name", &name, "busybox", "sleep", "3600"],
                )
                .is_some()
                {
                    std::thread::sleep(Duration::from_secs(2));
                    op("stop", &["stop", "-t", "1", &name]);
                    op("start", &["start", &name]);
                    std::thread::sleep(Duration::from_secs(2));
                }
                if op("rm", &["rm", "-f", &name]).is_some() {
                    *churned.lock().unwrap() += 1;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };

    // The faults.
    let run_start = Utc::now();
    println!("chaos: faults from {run_start}");
    let started = Instant::now();
    let mut faults: Vec<Fault> = Vec::new();
    // Kinds in rounds, each round shuffled: a short run still sees most of them.
    let mut round: Vec<FaultKind> = Vec::new();
    while started.elapsed() < run_for {
        // The gap: containers seen running now count for the billing check too.
        let gap_end = Instant::now() + rng.secs(6.0, 14.0);
        while Instant::now() < gap_end {
            let _ = cx.health();
            std::thread::sleep(
                Duration::from_secs(1).min(gap_end.saturating_duration_since(Instant::now())),
            );
        }
        if started.elapsed() >= run_for {
            break;
        }
        if round.is_empty() {
            round = KINDS.to_vec();
            for i in (1..round.len()).rev() {
                round.swap(i, rng.below(i + 1));
            }
        }
        let kind = round.pop().expect("a kind");
        let injected = Utc::now();
        let Some(target) = cx.inject(kind, &mut rng) else {
            continue;
        };
        let (healed, last_symptom) = cx.wait_healthy(secs(120.0));
        let f = Fault {
            kind,
            target,
            injected,
            healed,
            last_symptom,
        };
        println!(
            "chaos: +{:>6.1}s {:?} {}: {}",
            secs_between(run_start, injected),
            f.kind,
            f.target,
            match f.healed {
                Some(_) => format!(
                    "healed in {:.1} s (last symptom: {})",
                    f.heal_secs(),
                    f.last_symptom
                ),
                None => format!("NOT HEALED after 120 s: {}", f.last_symptom),
            }
        );
        let unhealed = f.healed.is_none();
        faults.push(f);
        if unhealed {
            break;
        }
    }
    let run_end = Utc::now();
    stop.store(true, Ordering::Relaxed);
    client.join().expect("client thread");
    churn.join().expect("churn thread");

    // The figures.
    let run_secs = secs_between(run_start, run_end);
    let windows: Vec<(DateTime<Utc>, DateTime<Utc>)> = faults
        .iter()
        .map(|f| (f.injected, f.healed.unwrap_or(run_end)))
        .collect();
    let covered: f64 = windows.iter().map(|(a, b)| secs_between(*a, *b)).sum();
    let inside = |a: &Attempt| windows.iter().any(|(s, e)| a.start <= *e && a.end >= *s);
    let client_log = client_log.lock().unwrap().clone();
    let api_log = api_log.lock().unwrap().clone();
    let client_errors: Vec<&Attempt> = client_log.iter().filter(|a| a.error.is_some()).collect();
    let api_errors: Vec<&Attempt> = api_log.iter().filter(|a| a.error.is_some()).collect();
    let survived = faults
        .iter()
        .filter(|f| f.heal_secs() < secs(HEAL_BOUND_SECS).as_secs_f64())
        .count();
    let longest = faults
        .iter()
        .max_by(|a, b| a.heal_secs().total_cmp(&b.heal_secs()));
    let mut by_kind: BTreeMap<FaultKind, (usize, f64)> = BTreeMap::new();
    for f in &faults {
        let e = by_kind.entry(f.kind).or_default();
        e.0 += 1;
        e.1 = e.1.max(f.heal_secs());
    }
    println!("chaos: ===== figures (seed {seed}) =====");
    println!("chaos: run                {run_secs:.1} s");
    println!("chaos: faults injected    {}", faults.len());
    println!("chaos: faults survived    {survived} (healed within {HEAL_BOUND_SECS} s)");
    for (k, (n, worst)) in &by_kind {
        println!("chaos:   {k:?}: {n}, longest heal {worst:.1} s");
    }
    if let Some(f) = longest {
        println!(
            "chaos: longest heal       {:.1} s ({:?} {})",
            f.heal_secs(),
            f.kind,
            f.target
        );
    }
    println!(
        "chaos: healing windows    {covered:.1} s, {:.1}% of the run",
        100.0 * covered / run_secs
    );
    println!(
        "chaos: client requests    {} ({} failed, {} outside a healing window)",
        client_log.len(),
        client_errors.len(),
        client_errors.iter().filter(|a| !inside(a)).count()
    );
    println!(
        "chaos: API calls          {} ({} failed, {} outside a healing window); {} containers churned",
        api_log.len(),
        api_errors.len(),
        api_errors.iter().filter(|a| !inside(a)).count(),
        churned.lock().unwrap()
    );
    println!(
        "chaos: errors seen        {}",
        client_errors.len() + api_errors.len()
    );
    for a in client_errors.iter().chain(&api_errors) {
        println!(
            "chaos:   +{:.1}s..+{:.1}s {}{}",
            secs_between(run_start, a.start),
            secs_between(run_start, a.end),
            a.error.as_deref().unwrap_or(""),
            if inside(a) {
                ""
            } else {
                "  (OUTSIDE any healing window)"
            }
        );
    }

    // The bounds.
    for f in &faults {
        assert!(
            f.healed.is_some(),
            "{:?} {} did not heal: {}",
            f.kind,
            f.target,
            f.last_symptom
        );
    }
    assert!(faults.len() >= 2, "too few faults for a chaos run");
    assert_eq!(
        survived,
        faults.len(),
        "heals over {HEAL_BOUND_SECS} s (longest above)"
    );
    assert!(
        covered / run_secs < WINDOW_SHARE_BOUND,
        "healing windows cover {:.1}% of the run",
        100.0 * covered / run_secs
    );
    assert!(
        client_log.iter().any(|a| a.error.is_none()),
        "the client never got an answer"
    );
    let outside: Vec<String> = client_errors
        .iter()
        .chain(&api_errors)
        .filter(|a| !inside(a))
        .map(|a| a.error.clone().unwrap_or_default())
        .collect();
    assert!(
        outside.is_empty(),
        "errors outside the healing windows: {outside:?}"
    );

    // Converged: both replicas back, and the store agrees with what runs.
    wait_for("the service to run its 2 replicas", secs(180.0), || {
        let v = d.hyper(&["service", "inspect", "web"]).run().ok().json()[0].clone();
        let running = v["Containers"]
            .as_array()
            .map_or(0, |c| c.iter().filter(|c| c["State"] == "running").count());
        if running == 2 {
            Ok(())
        } else {
            Err(v.to_string())
        }
    });
    let (ok, why) = cx.wait_healthy(secs(60.0));
    assert!(ok.is_some(), "not healthy at the end: {why}");
    wait_for("the store to agree with what runs", secs(60.0), || {
        cx.health_with(true)
    });

    // No volume block lost: every acknowledged block is there with its checksum.
    let acked: BTreeSet<u64> = d
        .hyper(&["logs", "writer"])
        .run()
        .ok()
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ack ")?.trim().parse().ok())
        .collect();
    d.hyper(&["rm", "-f", "writer"]).timeout(60.0).run().ok();
    let check = d
        .hyper(&[
            "run",
            "--rm",
            "-v",
            "chaosvol:/data",
            "busybox",
            "sh",
            "-c",
            "cd /data; for s in s*; do md5sum -c $s 2>&1; done",
        ])
        .timeout(120.0)
        .run()
        .ok()
        .stdout;
    let mut good = BTreeSet::new();
    let mut bad = Vec::new();
    for l in check.lines() {
        match l.split_once(": ") {
            Some((b, "OK")) => {
                good.insert(b.trim_start_matches('b').parse::<u64>().unwrap_or(0));
            }
            _ => bad.push(l.to_string()),
        }
    }
    let lost: Vec<&u64> = acked.iter().filter(|n| !good.contains(n)).collect();
    println!(
        "chaos: volume blocks      {} acknowledged, {} read back good, {} bad, {} lost",
        acked.len(),
        good.len(),
        bad.len(),
        lost.len()
    );
    assert!(!acked.is_empty(), "the writer acknowledged no block");
    assert!(bad.is_empty(), "blocks that fail their checksum: {bad:?}");
    assert!(lost.is_empty(), "acknowledged blocks lost: {lost:?}");

    // Everything removed, hyperd stopped: nothing left behind.
    d.hyper(&["service", "rm", "web"]).timeout(120.0).run().ok();
    for id in d
        .hyper(&["ps", "-aq", "--no-trunc"])
        .run()
        .ok()
        .stdout
        .split_whitespace()
    {
        d.hyper(&["rm", "-f", id]).timeout(60.0).run().ok();
    }
    d.hyper(&["volume", "rm", "chaosvol"]).run().ok();
    d.hyper(&["fip", "release", &cx.fip]).run().ok();
    d.stop();
    let mut left = leftovers(&d.data);
    for (ns, what) in [
        (None, "the test's namespace"),
        (Some(d.node.path()), "the node's"),
    ] {
        let o = match &ns {
            None => Cmd::new("ip", &["-o", "link", "show", "type", "tun"]).run(),
            Some(p) => {
                let net = format!("--net={}", p.display());
                Cmd::new(
                    "nsenter",
                    &[&net, "ip", "-o", "link", "show", "type", "tun"],
                )
                .run()
            }
        };
        if !o.out().is_empty() {
            left.push(format!("taps in {what}: {}", o.out()));
        }
    }
    let vols = d.data.join("volumes/local");
    for e in std::fs::read_dir(&vols).into_iter().flatten().flatten() {
        left.push(format!("volume file left: {}", e.path().display()));
    }
    assert!(left.is_empty(), "left behind: {left:#?}");

    // Billing continuous, from the store itself.
    check_billing(&d.data, &cx.seen_running.lock().unwrap());
}

/// Every usage segment but the images' (the busybox image is still held) is closed; no two of
/// a resource overlap; every time a container was seen running lies in one of its run
/// segments; every container seen has exactly one root disk segment.
fn check_billing(data: &Path, seen: &[Sighting]) {
    let st = store::RedbStore::open(&data.join("store.redb")).expect("open the store");
    let mut segs = Segments::new();
    for kv in st.range("/usage/").expect("range /usage/") {
        let v: Value = serde_json::from_slice(&kv.value).expect("segment JSON");
        let kind = v["kind"].as_str().unwrap_or("container").to_string();
        let resource = v["container"].as_str().unwrap_or("").to_string();
        let start: DateTime<Utc> = serde_json::from_value(v["start"].clone()).expect("start");
        let end: Option<DateTime<Utc>> = serde_json::from_value(v["end"].clone()).expect("end");
        segs.entry((kind, resource)).or_default().push((start, end));
    }
    let mut problems = Vec::new();
    for ((kind, res), list) in &mut segs {
        list.sort();
        if kind != "image" {
            for (s, e) in list.iter() {
                if e.is_none() {
                    problems.push(format!("{kind} {res}: segment from {s} still open"));
                }
            }
        }
        for w in list.windows(2) {
            if let (Some(e), s) = (w[0].1, w[1].0) {
                if e > s {
                    problems.push(format!(
                        "{kind} {res}: segments overlap ({} to {e}, then from {s})",
                        w[0].0
                    ));
                }
            }
        }
    }
    let find = |kind: &str, id: &str| {
        segs.iter()
            .filter(|((k, r), _)| k == kind && (r.starts_with(id) || id.starts_with(r.as_str())))
            .flat_map(|(_, l)| l.iter())
            .collect::<Vec<_>>()
    };
    let mut containers = BTreeSet::new();
    for (id, from, until) in seen {
        containers.insert(id.clone());
        // The store says running until hyperd has recorded an exit that the supervisor
        // timestamped a moment earlier (a stop in the churn): a segment may end that much
        // before a sighting. A lost segment leaves a far longer gap.
        let lag = chrono::TimeDelta::seconds(3);
        let covered = find("container", id)
            .iter()
            .any(|(s, e)| *s <= *until && e.is_none_or(|e| e + lag >= *from));
        if !covered {
            problems.push(format!(
                "container {id} seen running between {from} and {until}, billed by no run \
                 segment; its run segments: {:?}",
                find("container", id)
            ));
        }
    }
    for id in &containers {
        let n = find("rootfs", id).len();
        if n != 1 {
            problems.push(format!("container {id}: {n} root disk segments"));
        }
    }
    println!(
        "chaos: billing            {} segments of {} resources; {} sightings of {} containers checked; {} problems",
        segs.values().map(Vec::len).sum::<usize>(),
        segs.len(),
        seen.len(),
        containers.len(),
        problems.len()
    );
    assert!(problems.is_empty(), "billing: {problems:#?}");
}
