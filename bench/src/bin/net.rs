//! Network throughput (issue 4): one TCP transfer of the same size over three paths, each
//! beside the floor measured in the same run, a veth pair between two namespaces:
//! - container to container on the tenant's bridge (VM -> tap -> bridge -> tap -> VM);
//! - a client "on the internet" to a container through a floating IP (client namespace -> node
//!   -> tenant namespace NAT -> tap -> VM).
//!
//! Each transfer is one HTTP download of a file of zeros, busybox `httpd` serving and busybox
//! `wget` fetching (the host's busybox for the floor and the client, the image's in the VMs: the
//! same Debian busybox-static), so the tools are the same everywhere. Everything runs inside a
//! network namespace this process makes at start (hyperd, its tenant namespaces, the client
//! namespace): nothing reaches the machine's own networks.
//!
//! Everything it starts (containers, hyperd and its helpers, the floor's httpd, namespaces, the
//! data root) is removed on exit, when it panics and on SIGINT/SIGTERM/SIGHUP
//! (`bench::e2e_cleanup`). busybox `wget -T` crashes in this busybox build: deadlines are
//! `timeout N wget ...`.

use std::process::Command;
use std::time::{Duration, Instant};

use bench::e2e_cleanup;
use e2e::{Cmd, Daemon, DaemonOpts, Netns};

const FIP_POOL: &str = "198.51.100.0/30";
/// Deadline of one transfer, seconds.
const FETCH_TIMEOUT: u32 = 600;

#[derive(clap::Parser)]
struct Args {
    /// MB sent per transfer.
    #[arg(long, default_value_t = 256)]
    mb: u32,
    /// Timed transfers per path (the median is reported), after one untimed warm-up.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// `busybox wget` of `url` to /dev/null with `prefix` (e.g. `ip netns exec NS`), timed from
/// outside.
fn timed_fetch(prefix: &[&str], url: &str) -> f64 {
    let deadline = FETCH_TIMEOUT.to_string();
    let mut argv: Vec<&str> = prefix.to_vec();
    argv.extend_from_slice(&[
        "timeout",
        "-s",
        "KILL",
        &deadline,
        "busybox",
        "wget",
        "-q",
        "-O",
        "/dev/null",
        url,
    ]);
    let t = Instant::now();
    let st = Command::new(argv[0])
        .args(&argv[1..])
        .status()
        .expect("spawn");
    let took = t.elapsed().as_secs_f64();
    assert!(
        st.success(),
        "fetching {url} failed ({st}) after {took:.1}s"
    );
    took
}

fn median(xs: &[f64]) -> f64 {
    bench::median(xs).expect("at least one run")
}

/// Polls `ready` (a small file the server's side writes after the big one) until it is served.
fn wait_ready(what: &str, mut fetch: impl FnMut() -> e2e::Out) {
    e2e::wait_for(what, e2e::secs(300.0), || {
        let o = fetch();
        if o.code == 0 && o.stdout.trim() == "ready" {
            Ok(())
        } else {
            std::thread::sleep(Duration::from_millis(400));
            Err(o.to_string())
        }
    });
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    assert!(args.runs >= 1, "--runs must be at least 1");
    e2e::enter_private_network_namespace();
    let _guard = e2e_cleanup::install();
    let mb = args.mb;
    let mbps = |secs: f64| f64::from(mb) / secs;
    let t_all = Instant::now();

    // Floor: a veth pair between two namespaces.
    let a = e2e_cleanup::netns(Netns::new("bfa"));
    let b = e2e_cleanup::netns(Netns::new("bfb"));
    let link = [
        "-n", &a, "link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns", &b,
    ];
    Cmd::new("ip", &link).run().ok();
    for (ns, dev, addr) in [(&a, "v0", "10.99.0.1/24"), (&b, "v1", "10.99.0.2/24")] {
        Cmd::new("ip", &["-n", ns, "addr", "add", addr, "dev", dev])
            .run()
            .ok();
        Cmd::new("ip", &["-n", ns, "link", "set", dev, "up"])
            .run()
            .ok();
    }
    let www = e2e_cleanup::path(e2e::short_tmp("bnw"));
    std::fs::create_dir_all(&www).unwrap();
    let big = std::fs::File::create(www.join("big")).unwrap();
    big.set_len(u64::from(mb) << 20).unwrap();
    std::fs::write(www.join("ready"), "ready\n").unwrap();
    let floor_server = Command::new("ip")
        .args([
            "netns", "exec", &b, "busybox", "httpd", "-f", "-p", "5001", "-h",
        ])
        .arg(&www)
        .spawn()
        .expect("spawn httpd");
    e2e_cleanup::child(floor_server);
    wait_ready("the floor's file server", || {
        Cmd::new(
            "ip",
            &[
                "netns",
                "exec",
                &a,
                "timeout",
                "-s",
                "KILL",
                "10",
                "busybox",
                "wget",
                "-qO-",
                "http://10.99.0.2:5001/ready",
            ],
        )
        .timeout(30.0)
        .run()
    });

    let d = e2e_cleanup::daemon(Daemon::start(
        "bn",
        DaemonOpts {
            extra_args: vec!["--fip-pool".into(), FIP_POOL.into()],
            ..DaemonOpts::default()
        },
    ));
    let hyper = |argv: &[&str]| d.hyper(argv).timeout(300.0).run().ok();
    // The ready file is written after the big one, so serving it means the big one is complete.
    let serve = format!(
        "mkdir -p /srv && dd if=/dev/zero of=/srv/big bs=1M count={mb} 2>/dev/null && echo ready > /srv/ready && httpd -f -p 5001 -h /srv"
    );
    hyper(&[
        "run",
        "-d",
        "--name",
        "sink",
        "-p",
        "5001:5001",
        "busybox",
        "sh",
        "-c",
        &serve,
    ]);
    hyper(&["run", "-d", "--name", "src", "busybox", "sleep", "100000"]);
    wait_ready("the container's file server", || {
        d.hyper(&[
            "exec",
            "src",
            "timeout",
            "-s",
            "KILL",
            "10",
            "wget",
            "-qO-",
            "http://sink:5001/ready",
        ])
        .timeout(60.0)
        .run()
    });
    let fip = hyper(&["fip", "allocate", "1"]).out();
    hyper(&["fip", "attach", &fip, "sink"]);

    // The internet: a client namespace routed to the FIP pool through the node.
    let inet = e2e_cleanup::netns(Netns::internet("binet", &d.node, "hb-inet0", FIP_POOL));
    let fip_ready = format!("http://{fip}:5001/ready");
    wait_ready(
        "the container's file server through the floating IP",
        || {
            Cmd::new(
                "ip",
                &[
                    "netns", "exec", &inet, "timeout", "-s", "KILL", "10", "busybox", "wget",
                    "-qO-", &fip_ready,
                ],
            )
            .timeout(30.0)
            .run()
        },
    );

    // Each path delivers the whole file (counted once, untimed).
    let fip_url = format!("http://{fip}:5001/big");
    let want = (u64::from(mb) << 20).to_string();
    let count = |url: &str| format!("timeout -s KILL {FETCH_TIMEOUT} wget -qO- {url} | wc -c");
    for (path, o) in [
        (
            "floor",
            Cmd::new(
                "ip",
                &[
                    "netns",
                    "exec",
                    &a,
                    "busybox",
                    "sh",
                    "-c",
                    &count("http://10.99.0.2:5001/big"),
                ],
            ),
        ),
        (
            "container -> container",
            d.hyper(&["exec", "src", "sh", "-c", &count("http://sink:5001/big")]),
        ),
        (
            "via floating IP",
            Cmd::new(
                "ip",
                &[
                    "netns",
                    "exec",
                    &inet,
                    "busybox",
                    "sh",
                    "-c",
                    &count(&fip_url),
                ],
            ),
        ),
    ] {
        let o = o.timeout(f64::from(FETCH_TIMEOUT) + 60.0).run().ok();
        assert_eq!(o.out(), want, "{path}: bytes received");
    }

    let (mut floor, mut c2c, mut via_fip) = (Vec::new(), Vec::new(), Vec::new());
    let in_vm = format!(
        "time -p timeout -s KILL {FETCH_TIMEOUT} wget -q -O /dev/null http://sink:5001/big"
    );
    for run in 0..=args.runs {
        let f = timed_fetch(&["ip", "netns", "exec", &a], "http://10.99.0.2:5001/big");
        let o = d
            .hyper(&["exec", "src", "sh", "-c", &in_vm])
            .timeout(f64::from(FETCH_TIMEOUT) + 60.0)
            .run()
            .ok();
        let c = bench::real_seconds(&o.stderr).unwrap_or_else(|| panic!("no timing in {o}"));
        let v = timed_fetch(&["ip", "netns", "exec", &inet], &fip_url);
        eprintln!(
            "run {run}{}: floor {f:.2}s, container->container {c:.2}s, via floating IP {v:.2}s",
            if run == 0 {
                " (warm-up, not counted)"
            } else {
                ""
            }
        );
        if run > 0 {
            // Run 0 warms caches and TCG's translation of the paths.
            floor.push(f);
            c2c.push(c);
            via_fip.push(v);
        }
    }
    let row = |name: &str, xs: &[f64], floor_mbps: Option<f64>| {
        let m = mbps(median(xs));
        let each: Vec<String> = xs.iter().map(|s| format!("{:.1}", mbps(*s))).collect();
        let ratio = floor_mbps.map_or("      1.000".to_string(), |fl| format!("{:>11.3}", m / fl));
        println!("{name:<42}{m:>9.1}{ratio}   ({})", each.join(", "));
        m
    };
    println!(
        "TCP throughput, one {mb} MB HTTP download per transfer (busybox httpd -> busybox wget), median of {} after 1 warm-up:",
        args.runs
    );
    println!(
        "{:<42}{:>9}{:>11}   (each run, MB/s)",
        "path", "MB/s", "÷ floor"
    );
    let fl = row("floor: veth between two namespaces", &floor, None);
    row("container -> container (tenant bridge)", &c2c, Some(fl));
    row("internet -> container via floating IP", &via_fip, Some(fl));
    println!("(MB = 2^20 bytes; each path's byte count checked once before the runs; container -> container is timed inside the client VM with `time -p`, the others from the host around `ip netns exec`; {:.0}s in all)", t_all.elapsed().as_secs_f64());

    hyper(&["fip", "detach", "sink"]);
    hyper(&["fip", "release", &fip]);
    // The rest (containers, hyperd, the floor's server, namespaces, temp dirs) goes with the
    // guard at the end of main.
}
