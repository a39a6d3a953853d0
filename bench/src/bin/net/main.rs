//! Network throughput (issues 4 and 19): one TCP transfer of the same size over each of hyper's
//! paths, beside two floors measured in the same run:
//! - **the VM floor**, the ratios' base: two plain QEMU VMs built like hyper's (same kernel,
//!   virtio-net, accelerator, size and `vm` crate command line) with their taps on a bare Linux
//!   bridge (`vm_floor`), so that a ratio shows what hyper's own network costs;
//! - the veth floor, for context: a veth pair between two namespaces, host processes only;
//! - for context too, a host process fetching from the VM floor's server on its bare bridge: the
//!   like-for-like floor of a host process fetching through a floating IP (context as well).
//!
//! Hyper's paths, each aimed at [`AIM`] of the VM floor or more:
//! - container to container on the tenant's bridge (VM -> tap -> bridge -> tap -> VM);
//! - a client VM "on the internet" (the floor's client, booted alone) to a container through a
//!   floating IP (VM -> tap -> bridge -> internet namespace -> node -> tenant namespace NAT ->
//!   tap -> VM);
//! - container to a service by its name, one replica, `--protocol tcp` (VM -> tap -> bridge ->
//!   the tenant namespace's DNAT, kept by its balancer hyper-lb -> bridge -> tap -> VM).
//!
//! Each transfer is one HTTP download of a file of zeros, busybox `httpd` serving and busybox
//! `wget` fetching (the host's busybox for the veth floor, the internet client and in the floor
//! VMs, the image's in the containers: the same Debian busybox-static), so the tools are the
//! same everywhere. A download by a VM is timed inside it with `time -p`, the others from the
//! host. Everything runs inside a network namespace this process makes at start (hyperd, its
//! tenant namespaces, the client's and the floors' namespaces): nothing reaches the machine's
//! own networks.
//!
//! Everything it starts (the service, containers, hyperd and its helpers, the floors' httpd and
//! QEMUs, namespaces, the data root) is removed on exit, when it panics and on
//! SIGINT/SIGTERM/SIGHUP (`bench::e2e_cleanup`). busybox `wget -T` crashes in this busybox
//! build: deadlines are `timeout N wget ...`.

mod vm_floor;

use std::process::Command;
use std::time::{Duration, Instant};

use bench::e2e_cleanup;
use e2e::{Cmd, Daemon, DaemonOpts, Netns};
use vm_floor::ClientVm;

const FIP_POOL: &str = "198.51.100.0/30";
/// Deadline of one transfer, seconds.
const FETCH_TIMEOUT: u32 = 600;
/// The share of the VM floor each of hyper's paths should reach (issue 19).
const AIM: f64 = 0.9;
/// A host process on the internet through a floating IP (context), and its like-for-like floor:
/// the floor's server VM fetched from by a host process in its namespace.
const FIP_HOST_ROUTE: &str = "context: internet host -> container, FIP";
const HOST_CLIENT_FLOOR: &str = "context: host client -> floor VM, bare bridge";

#[derive(clap::Parser)]
struct Args {
    /// MB sent per transfer.
    #[arg(long, default_value_t = 256)]
    mb: u32,
    /// Timed transfers per path (the median is reported), after one untimed warm-up.
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

/// What a path is to the others.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The ratios' base: two plain VMs on a bare bridge.
    VmFloor,
    /// One of hyper's paths, aimed at [`AIM`] of the VM floor.
    Hyper,
    /// Context, with no aim: the veth pair, and a host client of the VM floor's server.
    Context,
}

/// One way to a file server: its byte count checked once, then one timed download a round.
struct Route<'a> {
    name: &'static str,
    kind: Kind,
    /// Bytes one download of the big file delivers.
    count: Box<dyn Fn() -> u64 + 'a>,
    /// Seconds of one download of the big file.
    time: Box<dyn Fn() -> f64 + 'a>,
    /// Seconds of the timed runs.
    runs: Vec<f64>,
}

/// `busybox wget` of `url` to /dev/null in the namespace `ns`, timed from outside.
fn timed_fetch(ns: &str, url: &str) -> f64 {
    let deadline = FETCH_TIMEOUT.to_string();
    let t = Instant::now();
    let st = Command::new("ip")
        .args(["netns", "exec", ns, "timeout", "-s", "KILL", &deadline])
        .args(["busybox", "wget", "-q", "-O", "/dev/null", url])
        .status()
        .expect("spawn");
    let took = t.elapsed().as_secs_f64();
    assert!(
        st.success(),
        "fetching {url} failed ({st}) after {took:.1}s"
    );
    took
}

/// A shell command printing the bytes one download of `url` delivers.
fn count_command(url: &str) -> String {
    format!("timeout -s KILL {FETCH_TIMEOUT} wget -qO- {url} | wc -c")
}

/// Runs `cmd` (a [`count_command`]) and reads its count.
fn bytes_counted(cmd: Cmd) -> u64 {
    let o = cmd.timeout(f64::from(FETCH_TIMEOUT) + 60.0).run().ok();
    o.out()
        .parse()
        .unwrap_or_else(|_| panic!("no byte count in {o}"))
}

/// Downloads of `url` by the host's busybox in the namespace `ns`, timed from outside.
fn from_namespace(name: &'static str, kind: Kind, ns: String, url: String) -> Route<'static> {
    let count = count_command(&url);
    let count_ns = ns.clone();
    Route {
        name,
        kind,
        count: Box::new(move || {
            bytes_counted(Cmd::new(
                "ip",
                &["netns", "exec", &count_ns, "busybox", "sh", "-c", &count],
            ))
        }),
        time: Box::new(move || timed_fetch(&ns, &url)),
        runs: Vec::new(),
    }
}

/// Downloads of `url` in the container `client` (the image's busybox), timed inside its VM with
/// `time -p` (so `hyper exec`'s own cost is not in it).
fn from_container<'a>(name: &'static str, d: &'a Daemon, client: &'a str, url: &str) -> Route<'a> {
    let count = count_command(url);
    let timed = format!("time -p timeout -s KILL {FETCH_TIMEOUT} wget -q -O /dev/null {url}");
    Route {
        name,
        kind: Kind::Hyper,
        count: Box::new(move || bytes_counted(d.hyper(&["exec", client, "sh", "-c", &count]))),
        time: Box::new(move || {
            let o = d
                .hyper(&["exec", client, "sh", "-c", &timed])
                .timeout(f64::from(FETCH_TIMEOUT) + 60.0)
                .run()
                .ok();
            bench::real_seconds(&o.stderr).unwrap_or_else(|| panic!("no timing in {o}"))
        }),
        runs: Vec::new(),
    }
}

/// Downloads by a client VM (the floor's, or the internet's), timed inside it with `time -p`.
fn from_client_vm<'a>(name: &'static str, kind: Kind, client: &'a ClientVm) -> Route<'a> {
    Route {
        name,
        kind,
        count: Box::new(|| client.count()),
        time: Box::new(|| client.seconds()),
        runs: Vec::new(),
    }
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

/// `busybox wget -qO- url` in the namespace `ns`, with a short deadline.
fn get_in(ns: &str, url: &str) -> e2e::Out {
    Cmd::new(
        "ip",
        &[
            "netns", "exec", ns, "timeout", "-s", "KILL", "10", "busybox", "wget", "-qO-", url,
        ],
    )
    .timeout(30.0)
    .run()
}

/// The veth floor: the host's busybox httpd serving an `mb` MiB file in one namespace of a veth
/// pair; returns the other namespace, the client's.
fn start_veth_floor(mb: u32) -> String {
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
    let server = Command::new("ip")
        .args([
            "netns", "exec", &b, "busybox", "httpd", "-f", "-p", "5001", "-h",
        ])
        .arg(&www)
        .spawn()
        .expect("spawn httpd");
    e2e_cleanup::child(server);
    wait_ready("the veth floor's file server", || {
        get_in(&a, "http://10.99.0.2:5001/ready")
    });
    a
}

/// Hyper's file servers, each serving an `mb` MiB file on port 5001: the container `sink`
/// (published, for the floating IP) and the one replica of the service `web`; and the client
/// container `src`.
fn start_containers(d: &Daemon, mb: u32) {
    let hyper = |argv: &[&str]| d.hyper(argv).timeout(300.0).run().ok();
    // The ready file is written after the big one, so serving it means the big one is complete.
    let serve = format!(
        "mkdir -p /srv && dd if=/dev/zero of=/srv/big bs=1M count={mb} 2>/dev/null && echo ready > /srv/ready && httpd -f -p 5001 -h /srv"
    );
    let sink = ["run", "-d", "--name", "sink", "-p", "5001:5001", "busybox"];
    hyper(&[&sink[..], &["sh", "-c", &serve]].concat());
    hyper(&["run", "-d", "--name", "src", "busybox", "sleep", "100000"]);
    let service = [
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "1",
        "--service-port",
        "5001",
        "--protocol",
        "tcp",
        "busybox",
    ];
    hyper(&[&service[..], &["sh", "-c", &serve]].concat());
}

/// Waits until `src` reads the ready file of `sink` and, through the balancer, of the service.
fn wait_containers_ready(d: &Daemon) {
    for (what, url) in [
        ("the container's file server", "http://sink:5001/ready"),
        (
            "the service's file server through the balancer",
            "http://web:5001/ready",
        ),
    ] {
        wait_ready(what, || {
            d.hyper(&[
                "exec", "src", "timeout", "-s", "KILL", "10", "wget", "-qO-", url,
            ])
            .timeout(60.0)
            .run()
        });
    }
}

/// Checks once that each route delivers the whole file.
fn check_counts(routes: &[Route], mb: u32) {
    for r in routes {
        assert_eq!(
            (r.count)(),
            u64::from(mb) << 20,
            "{}: bytes received",
            r.name
        );
    }
}

/// One untimed warm-up round (caches, TCG's translation of the paths), then `runs` timed ones;
/// each round downloads once over every route, in order.
fn time_rounds(routes: &mut [Route], runs: usize) {
    for run in 0..=runs {
        let secs: Vec<f64> = routes.iter().map(|r| (r.time)()).collect();
        let each: Vec<String> = routes
            .iter()
            .zip(&secs)
            .map(|(r, s)| format!("{} {s:.2}s", r.name))
            .collect();
        let warm_up = if run == 0 {
            " (warm-up, not counted)"
        } else {
            ""
        };
        eprintln!("run {run}{warm_up}: {}", each.join("; "));
        if run > 0 {
            for (r, s) in routes.iter_mut().zip(secs) {
                r.runs.push(s);
            }
        }
    }
}

/// Whether hyper's path at `ratio` of the VM floor meets [`AIM`], and by how much it misses.
fn aim_verdict(ratio: f64) -> String {
    if ratio >= AIM {
        "met".into()
    } else {
        format!("missed by {:.3}", AIM - ratio)
    }
}

fn print_table(routes: &[Route], mb: u32, runs: usize, took: Duration) {
    let mbps = |secs: f64| f64::from(mb) / secs;
    let median_mbps = |r: &Route| mbps(median(&r.runs));
    let floor = routes
        .iter()
        .find(|r| r.kind == Kind::VmFloor)
        .map(median_mbps)
        .expect("the VM floor is measured");
    println!(
        "TCP throughput, one {mb} MB HTTP download per transfer (busybox httpd -> busybox wget), median of {runs} after 1 warm-up:"
    );
    println!(
        "{:<44}{:>9}{:>13}   {:<20}(each run, MB/s)",
        "path",
        "MB/s",
        "÷ VM floor",
        format!("aim ≥ {AIM}")
    );
    let mut verdicts = Vec::new();
    for r in routes {
        let m = median_mbps(r);
        let ratio = m / floor;
        let aim = if r.kind == Kind::Hyper {
            verdicts.push(ratio >= AIM);
            aim_verdict(ratio)
        } else {
            String::new()
        };
        let each: Vec<String> = r.runs.iter().map(|s| format!("{:.1}", mbps(*s))).collect();
        println!(
            "{:<44}{m:>9.1}{ratio:>13.3}   {aim:<20}({})",
            r.name,
            each.join(", ")
        );
    }
    // A host client through the floating IP against a host client of the floor: like for like.
    let by_name = |name: &str| routes.iter().find(|r| r.name == name).map(median_mbps);
    if let (Some(fip), Some(host_floor)) = (by_name(FIP_HOST_ROUTE), by_name(HOST_CLIENT_FLOOR)) {
        println!(
            "{FIP_HOST_ROUTE} ÷ {HOST_CLIENT_FLOOR} (both a host client): {:.3}",
            fip / host_floor
        );
    }
    let met = verdicts.iter().filter(|m| **m).count();
    println!(
        "aim (each of hyper's paths at least {AIM} of the VM floor): met by {met} of {}",
        verdicts.len()
    );
    println!("(MB = 2^20 bytes; each path's byte count checked once before the runs; downloads by a VM (the VM floor, the internet VM, container -> container, container -> service) are timed inside the client VM with `time -p`, the others from the host around `ip netns exec`; {:.0}s in all)", took.as_secs_f64());
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    assert!(args.runs >= 1, "--runs must be at least 1");
    e2e::enter_private_network_namespace();
    let _guard = e2e_cleanup::install();
    let mb = args.mb;
    let t_all = Instant::now();

    let veth_client = start_veth_floor(mb);
    let d = e2e_cleanup::daemon(Daemon::start(
        "bn",
        DaemonOpts {
            extra_args: vec!["--fip-pool".into(), FIP_POOL.into()],
            ..DaemonOpts::default()
        },
    ));
    let hyper = |argv: &[&str]| d.hyper(argv).timeout(300.0).run().ok();
    // After hyperd's start, which creates the user the QEMUs run as.
    let floor = ClientVm::floor(mb, FETCH_TIMEOUT);
    start_containers(&d, mb);
    let fip = hyper(&["fip", "allocate", "1"]).out();
    hyper(&["fip", "attach", &fip, "sink"]);
    // The internet: a client namespace routed to the FIP pool through the node, with a client
    // VM of its own.
    let inet = Netns::internet("binet", &d.node, "hb-inet0", FIP_POOL);
    let fip_client = ClientVm::internet(&inet, &d.node, &fip, FETCH_TIMEOUT);
    let inet = e2e_cleanup::netns(inet);
    floor.wait_ready();
    wait_containers_ready(&d);
    wait_ready(
        "the container's file server through the floating IP",
        || get_in(&inet, &format!("http://{fip}:5001/ready")),
    );
    fip_client.wait_ready();

    let mut routes = vec![
        from_client_vm(
            "VM floor: two plain QEMU VMs, bare bridge",
            Kind::VmFloor,
            &floor,
        ),
        from_container(
            "container -> container (tenant bridge)",
            &d,
            "src",
            "http://sink:5001/big",
        ),
        from_client_vm(
            "internet VM -> container via floating IP",
            Kind::Hyper,
            &fip_client,
        ),
        from_container(
            "container -> service (tcp, kernel-balanced)",
            &d,
            "src",
            "http://web:5001/big",
        ),
        from_namespace(
            FIP_HOST_ROUTE,
            Kind::Context,
            inet,
            format!("http://{fip}:5001/big"),
        ),
        from_namespace(
            HOST_CLIENT_FLOOR,
            Kind::Context,
            floor.netns().to_string(),
            ClientVm::floor_server_url(),
        ),
        from_namespace(
            "context: veth between two namespaces",
            Kind::Context,
            veth_client,
            "http://10.99.0.2:5001/big".into(),
        ),
    ];
    check_counts(&routes, mb);
    time_rounds(&mut routes, args.runs);
    print_table(&routes, mb, args.runs, t_all.elapsed());

    hyper(&["fip", "detach", "sink"]);
    hyper(&["fip", "release", &fip]);
    // The rest (the service, containers, hyperd, the floors' servers and VMs, namespaces, temp
    // dirs) goes with the guard at the end of main.
}
