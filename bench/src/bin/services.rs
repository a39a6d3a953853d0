//! Services (issue 6): what the tenant's balancer costs, and how fast a service heals.
//!
//! 1. **Requests per second** through a service's IP (3 replicas, `--protocol http`, each a
//!    busybox `httpd` serving a small file) beside the same load sent straight to one replica's
//!    IP, in the same run, rounds interleaved. The load generator is `wrk` (Debian's package,
//!    installed by `scripts/deps`), run inside the tenant's network namespace (hyperd keeps it at
//!    `DATA/net/t0/netns` for the first tenant) with `nsenter --net=...`: the vantage point is a
//!    client on the tenant's own network, as another container would be, without a VM's cost.
//! 2. **Healing**: SIGKILL one replica's QEMU, then every 50 ms check until the service has 3
//!    running replicas again AND a request through the service IP was answered by the new one
//!    (each replica serves its hostname, its short id). Repeated; the median and each run are
//!    printed, beside the cold time of one plain `hyper run -d` on the same daemon (until the
//!    CLI returned, and until its httpd answered at its IP).
//!
//! Everything runs inside a network namespace this process makes at start; everything it starts
//! (services, containers, hyperd and its helpers, the data root) is removed on exit, on a panic
//! and on SIGINT/SIGTERM/SIGHUP (`bench::e2e_cleanup`).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bench::e2e_cleanup;
use e2e::{Cmd, Daemon, DaemonOpts};
use serde_json::Value;

/// Each replica serves its own hostname (its short id) over HTTP on port 80.
const SERVE: &str = "mkdir -p /w && hostname > /w/index.html && httpd -f -p 80 -h /w";
const REPLICAS: usize = 3;
const POLL: Duration = Duration::from_millis(50);

#[derive(clap::Parser)]
struct Args {
    /// Concurrent connections of the load generator.
    #[arg(long, default_value_t = 16)]
    connections: u32,
    /// Seconds per load measurement.
    #[arg(long, default_value_t = 10)]
    duration: u32,
    /// Load rounds (each: direct, then through the service; the median is reported), after a
    /// short warm-up of each.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Replica kills timed.
    #[arg(long, default_value_t = 3)]
    heals: usize,
}

// ---- reaching the tenant's network ----

/// Runs `f` on a thread inside the network namespace at `ns`.
fn in_netns<R: Send>(ns: &Path, f: impl FnOnce() -> R + Send) -> R {
    let file = std::fs::File::open(ns).unwrap_or_else(|e| panic!("open {}: {e}", ns.display()));
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns(2) on an open namespace file; it changes only this thread.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("thread in the tenant's namespace")
    })
}

/// One HTTP/1.0 GET / with short deadlines: the body of a 200, or why not.
fn get(addr: &str) -> Result<String, String> {
    let sa: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut s =
        TcpStream::connect_timeout(&sa, Duration::from_secs(1)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    write!(s, "GET / HTTP/1.0\r\nHost: web\r\n\r\n").map_err(|e| e.to_string())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).map_err(|e| e.to_string())?;
    match resp.split_once("\r\n\r\n") {
        Some((head, body))
            if head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200") =>
        {
            Ok(body.trim().to_string())
        }
        _ => Err(format!("unexpected response: {resp:?}")),
    }
}

// ---- the service ----

fn inspect_service(d: &Daemon) -> Value {
    d.hyper(&["service", "inspect", "web"]).run().ok().json()[0].clone()
}

/// Short ids (= hostnames) of the running replicas, and the number of replicas in all.
fn running(v: &Value) -> (Vec<String>, usize) {
    let all = v["Containers"].as_array().cloned().unwrap_or_default();
    let run = all
        .iter()
        .filter(|c| c["State"] == "running")
        .filter_map(|c| c["Id"].as_str())
        .map(|id| id[..12.min(id.len())].to_string())
        .collect();
    (run, all.len())
}

fn wait_settled(d: &Daemon) -> Value {
    e2e::wait_for("the service to run 3 replicas", e2e::secs(300.0), || {
        let v = inspect_service(d);
        let (run, all) = running(&v);
        if v["Status"] == "running" && run.len() == REPLICAS && all == REPLICAS {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    })
}

// ---- load ----

#[derive(Debug, Default, Clone)]
struct Load {
    requests: u64,
    rps: f64,
    non_2xx: u64,
    socket_errors: u64,
    p50: String,
    p99: String,
}

fn parse_wrk(out: &str) -> Option<Load> {
    let mut l = Load::default();
    for line in out.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            l.rps = v.trim().parse().ok()?;
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            l.non_2xx = v.trim().parse().ok()?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 1, write 0, timeout 2"
            l.socket_errors = v
                .split(',')
                .filter_map(|kv| kv.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
        } else if line.contains(" requests in ") {
            l.requests = line.split_whitespace().next()?.parse().ok()?;
        } else if let Some(v) = line.strip_prefix("50%") {
            l.p50 = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("99%") {
            l.p99 = v.trim().to_string();
        }
    }
    (l.rps > 0.0 || l.requests > 0).then_some(l)
}

/// `wrk` from inside the tenant's namespace against `http://ADDR/`.
fn wrk(netns: &Path, addr: &str, connections: u32, duration: u32) -> Load {
    let net = format!("--net={}", netns.display());
    let (c, d) = (connections.to_string(), format!("{duration}s"));
    let url = format!("http://{addr}/");
    let o = Cmd::new(
        "nsenter",
        &[&net, "wrk", "-t1", "-c", &c, "-d", &d, "--latency", &url],
    )
    .timeout(f64::from(duration) + 60.0)
    .run()
    .ok();
    parse_wrk(&o.stdout).unwrap_or_else(|| panic!("cannot read wrk's output: {o}"))
}

fn wrk_installed() -> bool {
    Cmd::new("sh", &["-c", "command -v wrk"]).run().code == 0
}

// ---- healing ----

struct Heal {
    /// SIGKILL until the service had 3 running replicas again.
    replicas_back: f64,
    /// SIGKILL until the new replica answered through the service IP.
    serving: f64,
    /// Short ids of the killed replica and of its replacement.
    victim: String,
    replacement: String,
    /// Probes through the service IP that failed once the replicas were back.
    failed_requests: usize,
}

/// Hostnames answering through the service IP, by asking until all `REPLICAS` were seen.
fn answering(netns: &Path, vip: &str) -> BTreeSet<String> {
    in_netns(netns, || {
        let mut seen = BTreeSet::new();
        for _ in 0..60 {
            if let Ok(h) = get(vip) {
                seen.insert(h);
            }
            if seen.len() == REPLICAS {
                break;
            }
        }
        seen
    })
}

fn heal_once(d: &Daemon, netns: &Path, vip: &str) -> Heal {
    let v = wait_settled(d);
    let (old, _) = running(&v);
    let old: BTreeSet<String> = old.into_iter().collect();
    let seen = answering(netns, vip);
    assert_eq!(
        seen, old,
        "before the kill, the service's answers should come from its replicas"
    );
    let victim = old.iter().next().unwrap().clone();
    let qemus: Vec<i32> = e2e::container_processes(d, &victim)
        .iter()
        .filter(|p| p.contains("qemu-system"))
        .filter_map(|p| p.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(!qemus.is_empty(), "no QEMU found for replica {victim}");
    let t0 = Instant::now();
    for pid in qemus {
        // SAFETY: kill(2) on the QEMU of one of this bench's replicas.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let mut replicas_back = None;
    let mut failed_requests = 0;
    let deadline = t0 + e2e::secs(300.0);
    loop {
        let tick = Instant::now();
        assert!(tick < deadline, "the service did not heal within 300 s");
        if replicas_back.is_none() {
            let (run, all) = running(&inspect_service(d));
            if run.len() == REPLICAS && all == REPLICAS && !run.contains(&victim) {
                replicas_back = Some(t0.elapsed().as_secs_f64());
            }
        }
        if let Some(back) = replicas_back {
            // Round robin over 3 replicas: 3 requests reach each one once.
            let answers: Vec<Result<String, String>> =
                in_netns(netns, || (0..REPLICAS).map(|_| get(vip)).collect());
            failed_requests += answers.iter().filter(|a| a.is_err()).count();
            if let Some(new) = answers.into_iter().flatten().find(|h| !old.contains(h)) {
                return Heal {
                    replicas_back: back,
                    serving: t0.elapsed().as_secs_f64(),
                    victim,
                    replacement: new,
                    failed_requests,
                };
            }
        }
        std::thread::sleep(POLL.saturating_sub(tick.elapsed()));
    }
}

fn median(xs: &[f64]) -> f64 {
    bench::median(xs).unwrap_or(f64::NAN)
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    e2e::enter_private_network_namespace();
    let _guard = e2e_cleanup::install();
    let t_all = Instant::now();
    let have_wrk = wrk_installed();
    if !have_wrk {
        eprintln!("services: `wrk` is missing (scripts/deps installs it; `apt-get install wrk`): the requests-per-second part is skipped");
    }

    let d = e2e_cleanup::daemon(Daemon::start("bs", DaemonOpts::default()));
    let hyper = |argv: &[&str]| d.hyper(argv).timeout(300.0).run().ok();
    d.http_service("web", 3, SERVE).timeout(300.0).run().ok();
    let v = wait_settled(&d);
    let vip = format!("{}:80", v["IP"].as_str().expect("service IP"));
    let netns: PathBuf = d.data.join("net/t0/netns");
    let (replicas, _) = running(&v);
    let direct_ip = d.inspect(&replicas[0])["NetworkSettings"]["IPAddress"]
        .as_str()
        .expect("replica IP")
        .to_string();
    let direct = format!("{direct_ip}:80");
    let seen = answering(&netns, &vip);
    eprintln!(
        "service web at {vip}: replicas {replicas:?}, answering {seen:?}; direct target {direct}"
    );

    // 1. Requests per second.
    let mut load: Option<(Vec<Load>, Vec<Load>)> = None;
    if have_wrk {
        for addr in [&direct, &vip] {
            let w = wrk(&netns, addr, args.connections, 3);
            eprintln!("warm-up {addr}: {:.1} rps", w.rps);
        }
        let (mut dl, mut sl) = (Vec::new(), Vec::new());
        for round in 1..=args.rounds {
            let a = wrk(&netns, &direct, args.connections, args.duration);
            let b = wrk(&netns, &vip, args.connections, args.duration);
            eprintln!(
                "round {round}: direct {:.1} rps, service {:.1} rps",
                a.rps, b.rps
            );
            dl.push(a);
            sl.push(b);
        }
        load = Some((dl, sl));
    }

    // 2. Healing, and a plain container's cold start for reference.
    let mut heals = Vec::new();
    for i in 1..=args.heals {
        let h = heal_once(&d, &netns, &vip);
        eprintln!(
            "heal {i}: killed {}, replicas back {:.2}s, {} serving {:.2}s, {} failed probes",
            h.victim, h.replicas_back, h.replacement, h.serving, h.failed_requests
        );
        heals.push(h);
    }
    wait_settled(&d);
    let t = Instant::now();
    let id = hyper(&["run", "-d", "busybox", "sh", "-c", SERVE]).out();
    let cold_cli = t.elapsed().as_secs_f64();
    let ip = d.inspect(&id)["NetworkSettings"]["IPAddress"]
        .as_str()
        .expect("IP")
        .to_string();
    let addr = format!("{ip}:80");
    let short = id[..12].to_string();
    e2e::wait_for("the plain container's httpd", e2e::secs(120.0), || {
        let r = in_netns(&netns, || get(&addr));
        match r {
            Ok(h) if h == short => Ok(()),
            other => {
                std::thread::sleep(POLL);
                Err(format!("{other:?}"))
            }
        }
    });
    let cold_serving = t.elapsed().as_secs_f64();
    hyper(&["rm", "-f", &id]);

    // Report.
    println!("== services: balancer throughput and healing (3 replicas, busybox httpd, protocol http) ==");
    if let Some((dl, sl)) = &load {
        let row = |name: &str, ls: &[Load]| {
            let rps: Vec<f64> = ls.iter().map(|l| l.rps).collect();
            let each: Vec<String> = rps.iter().map(|r| format!("{r:.1}")).collect();
            let last = ls.last().unwrap();
            let ok: u64 = ls
                .iter()
                .map(|l| l.requests.saturating_sub(l.non_2xx))
                .sum();
            let non: u64 = ls.iter().map(|l| l.non_2xx).sum();
            let sock: u64 = ls.iter().map(|l| l.socket_errors).sum();
            println!(
                "{name:<40}{:>9.1}{ok:>9}{non:>9}{sock:>9}   p50 {} p99 {} (last round); rps each round: {}",
                median(&rps),
                last.p50,
                last.p99,
                each.join(", ")
            );
            median(&rps)
        };
        println!(
            "-- requests per second: wrk -t1 -c {} -d {}s GET / (a 13-byte file), from the tenant's namespace; median of {} rounds --",
            args.connections, args.duration, args.rounds
        );
        println!(
            "{:<40}{:>9}{:>9}{:>9}{:>9}",
            "path", "rps", "2xx", "non-2xx", "sock err"
        );
        let a = row(&format!("direct to one replica ({direct})"), dl);
        let b = row(&format!("through the service IP ({vip})"), sl);
        let per_round: Vec<String> = dl
            .iter()
            .zip(sl)
            .map(|(x, y)| format!("{:.3}", y.rps / x.rps))
            .collect();
        println!(
            "service ÷ direct = {:.3} (medians; each round: {}); the service spreads over 3 replicas, direct loads one",
            b / a,
            per_round.join(", ")
        );
    } else {
        println!(
            "-- requests per second: skipped, `wrk` is not installed (scripts/deps installs it) --"
        );
    }
    println!("-- healing: SIGKILL one replica's QEMU until ... (polled every 50 ms), seconds --");
    let back: Vec<f64> = heals.iter().map(|h| h.replicas_back).collect();
    let serving: Vec<f64> = heals.iter().map(|h| h.serving).collect();
    let fmt = |xs: &[f64]| {
        xs.iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("{:<58}{:>8}   each run", "", "median");
    println!(
        "{:<58}{:>8.2}   {}",
        "the service has 3 running replicas again",
        median(&back),
        fmt(&back)
    );
    println!(
        "{:<58}{:>8.2}   {}",
        "the new replica answered through the service IP",
        median(&serving),
        fmt(&serving)
    );
    let failed: usize = heals.iter().map(|h| h.failed_requests).sum();
    println!("  probes through the service IP that failed after the replicas were back: {failed}");
    println!("-- reference: one plain container on the same daemon, seconds --");
    println!(
        "{:<58}{:>8.2}",
        "plain hyper run -d (same image, same httpd): CLI returned", cold_cli
    );
    println!(
        "{:<58}{:>8.2}",
        "  until its httpd answered at its IP", cold_serving
    );
    println!(
        "heal (new replica serving) ÷ plain run until serving = {:.2}; {:.0}s in all",
        median(&serving) / cold_serving,
        t_all.elapsed().as_secs_f64()
    );
    // The service, hyperd, the data root go with the guard at the end of main.
}
