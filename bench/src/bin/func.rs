//! Functions (issue 16): what a synchronous `hyper func call` costs beside a plain
//! `hyper run --rm` of the same image and command, in the same run, on the same hyperd.
//!
//! 1. **One at a time**: N rounds, each a `hyper func call --sync echo` (its function:
//!    `busybox echo hi`) and a `hyper run --rm busybox echo hi`, in alternating order (so drift
//!    of the machine hits both alike); before each timed command the standby pool is full again
//!    (`hyper info`: `StandbyVMsReady` = `StandbyVMsTarget`), so no refill overlaps it. Both are
//!    the CLI's wall time, the figure a user sees; the call's includes the `GET /funcs/NAME` the
//!    client makes first to learn the UUID, as Hyper's client does.
//! 2. **P at once**: P synchronous calls spawned together (the function allows P at once),
//!    timed until the last CLI returned; then P `hyper run --rm` spawned together.
//!
//! The aim is a call at or below the plain run. Everything runs inside a network namespace
//! this process makes; hyperd, its VMs and its data root are removed at the end, on a panic and
//! on SIGINT/SIGTERM/SIGHUP (`bench::e2e_cleanup`).

use std::process::{Command, Stdio};
use std::time::Instant;

use bench::{e2e_cleanup, median, min};
use e2e::{Daemon, DaemonOpts};

#[derive(clap::Parser)]
struct Args {
    /// Timed rounds (each: one call, one run).
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Calls (and runs) started at once.
    #[arg(long, default_value_t = 20)]
    parallel: usize,
}

fn wait_pool_full(d: &Daemon) {
    e2e::wait_for("the standby pool to be full", e2e::secs(300.0), || {
        let ready = d.info_field("StandbyVMsReady");
        let target = d.info_field("StandbyVMsTarget");
        if ready == target {
            Ok(())
        } else {
            Err(format!("{ready} of {target}"))
        }
    });
}

/// Runs `argv` through the `hyper` CLI on the daemon's socket: its wall time; its stdout must
/// be `hi`.
fn timed(d: &Daemon, argv: &[&str]) -> f64 {
    let t = Instant::now();
    let o = d.hyper(argv).timeout(300.0).run().ok();
    let took = t.elapsed().as_secs_f64();
    assert_eq!(o.out(), "hi", "{o}");
    took
}

/// `n` copies of `argv` spawned together: the time until the last returned.
fn at_once(d: &Daemon, n: usize, argv: &[&str]) -> f64 {
    let host = d.unix_host();
    let t = Instant::now();
    let children: Vec<_> = (0..n)
        .map(|_| {
            Command::new(e2e::hyper_bin())
                .arg("-H")
                .arg(&host)
                .args(argv)
                .env("HYPER_CONFIG", d.data.join("noconfig"))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn hyper")
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().expect("wait for hyper");
        assert!(
            o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "hi",
            "{argv:?}: {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    t.elapsed().as_secs_f64()
}

fn row(what: &str, xs: &[f64], base: Option<f64>) {
    let m = median(xs).unwrap_or(f64::NAN);
    let ratio = base.map(|b| format!("  x{:.2}", m / b)).unwrap_or_default();
    println!(
        "  {what:<44} median {m:>6.3}s  min {:>6.3}s{ratio}",
        min(xs).unwrap_or(f64::NAN)
    );
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    e2e::enter_private_network_namespace();
    let _guard = e2e_cleanup::install();
    let d = e2e_cleanup::daemon(Daemon::start("bf", DaemonOpts::default()));
    let p = args.parallel.to_string();
    // Room for P calls and P runs at once.
    let quota = (args.parallel + 2).to_string();
    d.tenant_admin(&["quota", "default", "--containers", &quota]);
    d.hyper(&[
        "func",
        "create",
        "--name",
        "echo",
        "--max-concurrency",
        &p,
        "busybox",
        "echo",
        "hi",
    ])
    .run()
    .ok();
    let call: &[&str] = &["func", "call", "--sync", "echo"];
    let run: &[&str] = &["run", "--rm", "busybox", "echo", "hi"];
    // Warm-up: the image's disk, the tenant's network, the template.
    wait_pool_full(&d);
    timed(&d, run);
    wait_pool_full(&d);
    timed(&d, call);

    let (mut calls, mut runs) = (Vec::new(), Vec::new());
    for i in 0..args.runs {
        let order: [(&[&str], &mut Vec<f64>); 2] = if i % 2 == 0 {
            [(call, &mut calls), (run, &mut runs)]
        } else {
            [(run, &mut runs), (call, &mut calls)]
        };
        for (argv, into) in order {
            wait_pool_full(&d);
            into.push(timed(&d, argv));
        }
        eprintln!(
            "round {}: call {:.3}s, run {:.3}s",
            i + 1,
            calls[i],
            runs[i]
        );
    }

    let mut burst = None;
    if args.parallel > 0 {
        wait_pool_full(&d);
        let c = at_once(&d, args.parallel, call);
        wait_pool_full(&d);
        let r = at_once(&d, args.parallel, run);
        burst = Some((c, r));
    }
    let status = d.hyper(&["func", "status", "echo"]).run().ok().stdout;

    println!("\nfunc: {} rounds, one at a time", args.runs);
    let base = median(&runs);
    row("hyper run --rm busybox echo hi", &runs, None);
    row("hyper func call --sync (busybox echo hi)", &calls, base);
    if let Some((c, r)) = burst {
        println!("\n{} at once, until the last returned", args.parallel);
        println!("  {:<44} {r:>6.3}s", "hyper run --rm busybox echo hi");
        println!(
            "  {:<44} {c:>6.3}s  x{:.2}",
            "hyper func call --sync",
            c / r
        );
    }
    println!("\nhyper func status echo:\n{status}");
    let left = e2e::leftovers(&d.data)
        .into_iter()
        .filter(|l| l.contains("container dir"))
        .count();
    println!("container directories left after the calls: {left}");
    let _ = d.hyper(&["func", "rm", "echo"]).run();
}
