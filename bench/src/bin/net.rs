//! Network throughput (issue 4): one TCP transfer of the same size over three paths, each
//! beside the floor measured in the same run, a veth pair between two namespaces:
//! - container to container on the tenant's bridge (VM -> tap -> bridge -> tap -> VM);
//! - a client "on the internet" to a container through a floating IP (client namespace -> node
//!   -> tenant namespace NAT -> tap -> VM).
//!
//! Each transfer is one HTTP download of a file of zeros, busybox `httpd` serving and busybox
//! `wget` fetching (the host's busybox for the floor and the client, the image's in the VMs), so
//! the tools are the same everywhere. Everything runs inside a network namespace
//! this process makes at start (hyperd, its tenant namespaces, the client namespace): nothing
//! reaches the machine's own networks.

use std::process::Command;
use std::time::Instant;

use e2e::{Cmd, Daemon, DaemonOpts, Netns};

const FIP_POOL: &str = "198.51.100.0/30";

#[derive(clap::Parser)]
struct Args {
    /// MB sent per transfer.
    #[arg(long, default_value_t = 256)]
    mb: u32,
    /// Transfers per path (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// `busybox wget` of `url` to /dev/null with `prefix` (e.g. `ip netns exec NS`), timed from
/// outside.
fn timed_fetch(prefix: &[&str], url: &str) -> f64 {
    let mut argv: Vec<&str> = prefix.to_vec();
    argv.extend_from_slice(&["busybox", "wget", "-q", "-O", "/dev/null", url]);
    let t = Instant::now();
    let st = Command::new(argv[0]).args(&argv[1..]).status().expect("spawn");
    assert!(st.success(), "fetching {url} failed");
    t.elapsed().as_secs_f64()
}

/// Seconds from `time -p`'s `real 1.23`.
fn real_seconds(stderr: &str) -> Option<f64> {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("real "))?
        .trim()
        .parse()
        .ok()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    e2e::enter_private_network_namespace();
    let mb = args.mb;
    let mbps = |secs: f64| f64::from(mb) / secs;

    // Floor: a veth pair between two namespaces.
    let a = Netns::new("bfa");
    let b = Netns::new("bfb");
    Cmd::new("ip", &["-n", &a.name, "link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns", &b.name])
        .run()
        .ok();
    a.ip(&["addr", "add", "10.99.0.1/24", "dev", "v0"]);
    a.ip(&["link", "set", "v0", "up"]);
    b.ip(&["addr", "add", "10.99.0.2/24", "dev", "v1"]);
    b.ip(&["link", "set", "v1", "up"]);
    let www = e2e::short_tmp("bnw");
    std::fs::create_dir_all(&www).unwrap();
    let big = std::fs::File::create(www.join("big")).unwrap();
    big.set_len(u64::from(mb) << 20).unwrap();
    let mut floor_server = Command::new("ip")
        .args(["netns", "exec", &b.name, "busybox", "httpd", "-f", "-p", "5001", "-h"])
        .arg(&www)
        .spawn()
        .expect("spawn httpd");

    let d = Daemon::start("bn", DaemonOpts {
        extra_args: vec!["--fip-pool".into(), FIP_POOL.into()],
        ..DaemonOpts::default()
    });
    let hyper = |argv: &[&str]| d.hyper(argv).timeout(300.0).run().ok();
    let serve = format!("mkdir -p /srv && dd if=/dev/zero of=/srv/big bs=1M count={mb} && httpd -f -p 5001 -h /srv");
    hyper(&["run", "-d", "--name", "sink", "-p", "5001:5001", "busybox", "sh", "-c", &serve]);
    hyper(&["run", "-d", "--name", "src", "busybox", "sleep", "100000"]);
    e2e::wait_for("the container's file server", e2e::secs(300.0), || {
        let o = d.hyper(&["exec", "src", "wget", "-q", "-s", "http://sink:5001/big"]).run();
        if o.code == 0 { Ok(()) } else { Err(o.to_string()) }
    });
    let fip = hyper(&["fip", "allocate", "1"]).out();
    hyper(&["fip", "attach", &fip, "sink"]);

    // The internet: a client namespace routed to the FIP pool through the node.
    let inet = Netns::new("binet");
    Cmd::new("ip", &["link", "add", "hb-inet0", "type", "veth", "peer", "name", "eth0", "netns", &inet.name]).run().ok();
    Cmd::new("ip", &["addr", "add", "203.0.113.1/24", "dev", "hb-inet0"]).run().ok();
    Cmd::new("ip", &["link", "set", "hb-inet0", "up"]).run().ok();
    inet.ip(&["addr", "add", "203.0.113.2/24", "dev", "eth0"]);
    inet.ip(&["link", "set", "eth0", "up"]);
    inet.ip(&["route", "add", FIP_POOL, "via", "203.0.113.1"]);

    let (mut floor, mut c2c, mut via_fip) = (Vec::new(), Vec::new(), Vec::new());
    let fip_url = format!("http://{fip}:5001/big");
    for run in 0..=args.runs {
        let f = timed_fetch(&["ip", "netns", "exec", &a.name], "http://10.99.0.2:5001/big");
        let o = d
            .hyper(&["exec", "src", "sh", "-c", "time -p wget -q -O /dev/null http://sink:5001/big"])
            .timeout(600.0)
            .run()
            .ok();
        let c = real_seconds(&o.stderr).unwrap_or_else(|| panic!("no timing in {o}"));
        let v = timed_fetch(&["ip", "netns", "exec", &inet.name], &fip_url);
        if run > 0 {
            // Run 0 warms caches and TCG's translation of the paths.
            floor.push(f);
            c2c.push(c);
            via_fip.push(v);
        }
    }
    let floor = mbps(median(floor));
    let c2c = mbps(median(c2c));
    let via_fip = mbps(median(via_fip));
    println!("TCP throughput, one {mb} MB HTTP download per transfer, median of {} (MB/s):", args.runs);
    println!("  floor: veth between two namespaces      {floor:>9.1}");
    println!("  container -> container (tenant bridge)  {c2c:>9.1}   {:.3}x the floor", c2c / floor);
    println!("  internet -> container via floating IP   {via_fip:>9.1}   {:.3}x the floor", via_fip / floor);

    let _ = floor_server.kill();
    let _ = floor_server.wait();
    let _ = std::fs::remove_dir_all(&www);
    hyper(&["fip", "release", &fip]);
    hyper(&["rm", "-f", "sink", "src"]);
    d.stop();
    let _ = std::fs::remove_dir_all(&d.data);
}
