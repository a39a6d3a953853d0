//! `burst`: N containers started at once on one hyperd, and removed at once (issue 19), beside
//! dockerd doing the same in the same run. Prints figures and ratios, never pass/fail.
//!
//! One hyperd on its embedded store, its standby pool as on a fresh node of this host (the
//! floor `--first-pool`, by default what hyperd keeps here by itself) and allowed to grow to the
//! burst (its ceiling N + 10).
//! 1. The first burst: N `hyper run -d busybox` CLIs spawned together; the figure is the wall
//!    time until every CLI returned, with the p50 and p99 of the single starts. Another tenant's
//!    one `run -d` is issued while the burst is on, and timed beside the same start on a quiet
//!    node. Then every container is checked up from inside its VM (the marker its process
//!    wrote), and the N are removed with N `rm -f` CLIs at once.
//! 2. The same again once the pool has grown to the burst and refilled; what the pool's
//!    standbys take of the host's memory (PSS, as hyperd measures it) is printed.
//! 3. dockerd: the same burst, check and removal.
//!
//! Runs in a network namespace of its own; everything it starts is removed on exit
//! (`bench::e2e_cleanup`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bench::docker_peer::{self, Engine};
use bench::{e2e_cleanup, percentile};
use e2e::{Cmd, Daemon, DaemonOpts};

#[derive(clap::Parser)]
struct Args {
    /// Containers per burst.
    #[arg(long, default_value_t = 100)]
    n: usize,
    /// Standby VMs ready for the first burst (hyperd's `--standby-vms`); by default what hyperd
    /// keeps on this host by itself (its default ceiling, under TCG also its floor).
    #[arg(long)]
    first_pool: Option<usize>,
    /// Seconds after the burst's start that the other tenant's `run` is issued.
    #[arg(long, default_value_t = 1.0)]
    other_after: f64,
    /// Skip dockerd.
    #[arg(long)]
    no_docker: bool,
    /// One more argument for hyperd (repeatable), e.g.
    /// `--hyperd-arg=--kernel-cmdline-extra=init_on_alloc=0`, to compare a variant.
    #[arg(long = "hyperd-arg", allow_hyphen_values = true)]
    hyperd_args: Vec<String>,
}

/// What each container runs: the marker is how the bench knows its process ran in the VM.
const UP: &str = "echo up > /up; exec sleep 100000";

/// A burst books every VM's whole memory, more than this host has; under TCG a guest touches
/// little of it.
const NODE_MEMORY: u64 = 66 << 30;

/// One burst's figures.
struct Burst {
    /// Until the last CLI returned.
    all: f64,
    /// Each CLI's time from the burst's start until it returned.
    each: Vec<f64>,
    /// The other tenant's `run -d`, issued during the burst.
    other: Option<f64>,
    /// Standbys ready as the burst began.
    pool: String,
    /// Containers whose marker was there at the first asking, after the figure was taken.
    up_at_once: usize,
    /// The `rm -f` CLIs, all at once: until the last returned.
    rm: f64,
}

/// Runs `cmds` together; each one's seconds from the common start until it returned, or the
/// errors of those that failed.
fn together(cmds: Vec<Cmd>) -> (Vec<f64>, Vec<String>) {
    let t0 = Instant::now();
    let runs: Vec<_> = cmds
        .into_iter()
        .map(|cmd| {
            std::thread::spawn(move || {
                let o = cmd.timeout(900.0).run();
                (t0.elapsed().as_secs_f64(), o)
            })
        })
        .collect();
    let (mut each, mut failed) = (Vec::new(), Vec::new());
    for run in runs {
        let (t, o) = run.join().expect("a CLI thread");
        each.push(t);
        if o.code != 0 {
            failed.push(o.stderr.trim().to_string());
        }
    }
    (each, failed)
}

/// Checks inside every container (four at a time) that its process wrote the marker, asking
/// again for up to a minute: `run -d` returns once the process is started, and under load its
/// first line may not have run yet. Returns how many had it at the first asking.
fn check_up(names: &[String], exec: impl Fn(&str) -> Cmd + Sync) -> usize {
    let next = AtomicUsize::new(0);
    let at_once = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(name) = names.get(i) else { break };
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut first = true;
                loop {
                    let o = exec(name).timeout(120.0).run();
                    if o.out() == "up" {
                        if first {
                            at_once.fetch_add(1, Ordering::SeqCst);
                        }
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{name} is not up after a minute: {}",
                        o.stderr
                    );
                    first = false;
                    std::thread::sleep(Duration::from_millis(200));
                }
            });
        }
    });
    at_once.into_inner()
}

fn must_all_succeed(what: &str, n: usize, failed: &[String]) {
    assert!(
        failed.is_empty(),
        "{what}: {} of {n} failed: {failed:#?}",
        failed.len()
    );
}

/// One `run -d` as tenant `other`, timed.
fn other_run(d: &Daemon, other: &std::path::Path, name: &str) -> f64 {
    let t0 = Instant::now();
    d.hyper_tcp(
        other,
        &["run", "-d", "--name", name, "busybox", "sh", "-c", UP],
    )
    .timeout(900.0)
    .run()
    .ok();
    t0.elapsed().as_secs_f64()
}

fn hyper_burst(
    d: &Arc<Daemon>,
    n: usize,
    tag: &str,
    other: &std::path::Path,
    other_after: f64,
) -> Burst {
    let ready = bench::standby_pool_full(d);
    let mib = d
        .info_field("StandbyVMsMemory")
        .parse::<f64>()
        .map_or(f64::NAN, |b| b / f64::from(1 << 20));
    // Of the ready ones, those prepared for this tenant's busybox (see the README's standbys).
    let prepared = d.info_field("StandbyVMsPrepared");
    let pool = format!("{ready} ({mib:.0} MiB, {prepared} prepared)");
    let names: Vec<String> = (0..n).map(|i| format!("{tag}{i}")).collect();
    let cmds = names
        .iter()
        .map(|name| d.hyper(&["run", "-d", "--name", name, "busybox", "sh", "-c", UP]))
        .collect();
    let t0 = Instant::now();
    let (d2, other2, other_name) = (d.clone(), other.to_path_buf(), format!("{tag}other"));
    let other_thread = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs_f64(other_after));
        other_run(&d2, &other2, &other_name)
    });
    let (each, failed) = together(cmds);
    let all = t0.elapsed().as_secs_f64();
    must_all_succeed("hyper run -d", n, &failed);
    let other_t = other_thread.join().expect("the other tenant's run");
    d.hyper_tcp(other, &["rm", "-f", &format!("{tag}other")])
        .run()
        .ok();
    let up_at_once = check_up(&names, |name| d.hyper(&["exec", name, "cat", "/up"]));
    let (rm, failed) = together(names.iter().map(|n| d.hyper(&["rm", "-f", n])).collect());
    must_all_succeed("hyper rm -f", n, &failed);
    eprintln!(
        "  {all:.2} s; the other tenant's {other_t:.2} s; rm -f {:.2} s",
        rm.iter().copied().fold(0.0, f64::max)
    );
    Burst {
        all,
        each,
        other: Some(other_t),
        pool,
        up_at_once,
        rm: rm.into_iter().fold(0.0, f64::max),
    }
}

/// `docker ARGS` against `engine`, as a command with a deadline.
fn docker(engine: &Engine, args: &[&str]) -> Cmd {
    let mut argv: Vec<&str> = engine.cli[1..].iter().map(String::as_str).collect();
    argv.extend_from_slice(args);
    Cmd::new(&engine.cli[0], &argv)
}

fn docker_burst(engine: &Engine, n: usize) -> Burst {
    let names: Vec<String> = (0..n).map(|i| format!("hyper-bench-burst{i}")).collect();
    let run = |name: &str| {
        let mut argv = vec!["run", "-d", "--name", name];
        argv.extend(engine.extra_run.iter().map(String::as_str));
        argv.extend([engine.image.as_str(), "sh", "-c", UP]);
        docker(engine, &argv)
    };
    let t0 = Instant::now();
    let (each, failed) = together(names.iter().map(|n| run(n)).collect());
    let all = t0.elapsed().as_secs_f64();
    must_all_succeed("docker run -d", n, &failed);
    let up_at_once = check_up(&names, |name| docker(engine, &["exec", name, "cat", "/up"]));
    let (rm, failed) = together(
        names
            .iter()
            .map(|n| docker(engine, &["rm", "-f", n]))
            .collect(),
    );
    must_all_succeed("docker rm -f", n, &failed);
    Burst {
        all,
        each,
        other: None,
        pool: "-".into(),
        up_at_once,
        rm: rm.into_iter().fold(0.0, f64::max),
    }
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    e2e::enter_private_network_namespace();
    let _guard = e2e_cleanup::install();
    let t_all = Instant::now();
    let n = args.n;
    let first_pool = args.first_pool.unwrap_or_else(|| {
        let ceiling = node::standby::default_ceiling(node::host::memory_bytes(), NODE_MEMORY);
        node::standby::default_floor(vm::Accel::detect() == vm::Accel::Kvm, ceiling)
    });

    // Room for the burst, the other tenant's start and the standbys a pool holds for other
    // tenants while one bursts.
    let (floor, ceiling) = (first_pool.to_string(), (n + 10).max(first_pool).to_string());
    let d = e2e_cleanup::daemon(Daemon::start(
        "bburst",
        DaemonOpts {
            extra_args: [
                "--standby-vms",
                &floor,
                "--standby-vms-max",
                &ceiling,
                "--node-memory",
                &format!("{}G", NODE_MEMORY >> 30),
            ]
            .map(String::from)
            .into_iter()
            .chain(args.hyperd_args.iter().cloned())
            .collect(),
            ..DaemonOpts::default()
        },
    ));
    d.tenant_admin(&["quota", "default", "--containers", &(n + 10).to_string()]);
    let (other, _) = d.new_tenant("other");
    d.hyper_tcp(
        &other,
        &["load", "-i", &e2e::busybox_tar().to_string_lossy()],
    )
    .timeout(120.0)
    .run()
    .ok();

    eprintln!("the other tenant's run on a quiet node");
    bench::standby_pool_full(&d);
    let quiet = other_run(&d, &other, "quiet");
    d.hyper_tcp(&other, &["rm", "-f", "quiet"]).run().ok();

    eprintln!("first burst of {n}");
    let first = hyper_burst(&d, n, "a", &other, args.other_after);
    eprintln!("waiting for the pool to grow to {n} and fill");
    let again = hyper_burst(&d, n, "b", &other, args.other_after);

    let docker = if args.no_docker {
        Err("skipped (--no-docker)".to_string())
    } else {
        eprintln!("dockerd: the same burst");
        let dir = e2e_cleanup::path(e2e::short_tmp("bdocker"));
        docker_peer::start(&e2e::workspace_root(), &dir).map(|mut engine| {
            let b = docker_burst(&engine, n);
            docker_peer::stop(&mut engine);
            b
        })
    };

    println!("{n} containers started at once (`run -d busybox sh -c '{UP}'`), each checked up in its VM afterwards, then removed with {n} `rm -f` at once:");
    println!(
        "{:<40}{:>10}{:>8}{:>8}{:>8}{:>10}{:>16}{:>10}",
        "", "all up s", "p50", "p99", "up", "rm -f s", "pool", "÷ docker"
    );
    let docker_all = docker.as_ref().ok().map(|b| b.all);
    let row = |label: &str, b: &Burst| {
        let ratio = docker_all.map_or("-".into(), |d| format!("{:.3}", b.all / d));
        println!(
            "{label:<40}{:>10.2}{:>8.2}{:>8.2}{:>8}{:>10.2}{:>16}{ratio:>10}",
            b.all,
            percentile(&b.each, 50.0).unwrap_or(f64::NAN),
            percentile(&b.each, 99.0).unwrap_or(f64::NAN),
            b.up_at_once,
            b.rm,
            b.pool,
        );
    };
    row("hyper, first burst", &first);
    row("hyper, again (pool grown and refilled)", &again);
    match &docker {
        Ok(b) => row("dockerd", b),
        Err(e) => println!("{:<40}{e}", "dockerd"),
    }
    println!(
        "another tenant's `run -d` during the burst: {:.2} s (first), {:.2} s (again); on a quiet node {quiet:.2} s",
        first.other.unwrap_or(f64::NAN),
        again.other.unwrap_or(f64::NAN),
    );
    println!(
        "up: markers there at the first asking, after the figure (the rest came within a minute); pool: standbys ready as the burst began, and the host memory they took (PSS); {:.0} s in all",
        t_all.elapsed().as_secs_f64()
    );
}
