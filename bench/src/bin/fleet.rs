//! Cross-node throughput (issue 18): container to container over the fleet's VXLAN overlay,
//! against container to container on one node, measured in the same run (aim: at least 0.8).
//!
//! A real etcd and two hyperd nodes, each in a network namespace of its own, joined by a veth
//! standing for the datacenter network. One tenant runs a file server on node f1, a client on
//! f1 beside it and a client on f2; each client downloads the same file of zeros from the
//! server by name (busybox `wget` from busybox `httpd`), timed inside its VM with `time -p`.
//! Everything runs inside a network namespace this process makes at start, and everything it
//! starts is removed on exit, when it panics and on SIGINT/SIGTERM/SIGHUP
//! (`bench::e2e_cleanup`).

use std::time::Instant;

use bench::e2e_cleanup;
use e2e::{Daemon, DaemonOpts, Netns};
use store::etcd_server::EtcdServer;

/// Deadline of one transfer, seconds.
const FETCH_TIMEOUT: u32 = 600;

#[derive(clap::Parser)]
struct Args {
    /// MB sent per transfer.
    #[arg(long, default_value_t = 128)]
    mb: u32,
    /// Timed transfers per path (the median is reported), after one untimed warm-up.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// A node of the benchmark's fleet at `address`, sharing `first`'s fleet secrets.
fn node(url: &str, name: &str, address: &str, first: Option<&Daemon>) -> std::sync::Arc<Daemon> {
    let extra_args = [
        "--cluster",
        url,
        "--node-name",
        name,
        "--node-address",
        address,
    ]
    .map(String::from)
    .to_vec();
    e2e_cleanup::daemon(Daemon::start(
        name,
        DaemonOpts {
            extra_args,
            secrets_from: first.map(|d| d.data.clone()),
            ..DaemonOpts::default()
        },
    ))
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    assert!(args.runs >= 1, "--runs must be at least 1");
    e2e::enter_private_network_namespace();
    let _guard = e2e_cleanup::install();
    let t_all = Instant::now();
    let mb = args.mb;

    let etcd = EtcdServer::start();
    let url = format!("etcd://{}/bench-fleet", etcd.endpoint());
    let f1 = node(&url, "f1", "198.51.100.21", None);
    let f2 = node(&url, "f2", "198.51.100.22", Some(&f1));
    Netns::datacenter_link(&f1.node, "198.51.100.21", &f2.node, "198.51.100.22");

    // Placement puts each where there is the most room, this node first among equals: the
    // server through f1 (both empty), the far client through f2 (f2 has more room), the near
    // client through f1 (equal again).
    let serve = format!(
        "mkdir -p /srv && dd if=/dev/zero of=/srv/big bs=1M count={mb} 2>/dev/null && echo ready > /srv/ready && httpd -f -p 5001 -h /srv"
    );
    let run = |d: &Daemon, name: &str, cmd: &[&str]| {
        let mut argv = vec!["run", "-d", "--name", name, "busybox"];
        argv.extend_from_slice(cmd);
        d.hyper(&argv).timeout(300.0).run().ok();
    };
    run(&f1, "sink", &["sh", "-c", &serve]);
    run(&f2, "far", &["sleep", "100000"]);
    run(&f1, "near", &["sleep", "100000"]);
    for (name, want) in [("sink", "f1"), ("far", "f2"), ("near", "f1")] {
        let at = f1.inspect(name)["Node"]["Name"].clone();
        assert_eq!(at, want, "{name} was placed on {at}, not {want}");
    }
    for client in ["near", "far"] {
        e2e::wait_for(
            &format!("{client} to see the server"),
            e2e::secs(300.0),
            || {
                let o = f1
                    .hyper(&["exec", client, "wget", "-qO-", "http://sink:5001/ready"])
                    .timeout(60.0)
                    .run();
                (o.code == 0 && o.stdout.trim() == "ready")
                    .then_some(())
                    .ok_or(o.to_string())
            },
        );
    }

    let in_vm = format!(
        "time -p timeout -s KILL {FETCH_TIMEOUT} wget -q -O /dev/null http://sink:5001/big"
    );
    let timed = |client: &str| {
        let o = f1
            .hyper(&["exec", client, "sh", "-c", &in_vm])
            .timeout(f64::from(FETCH_TIMEOUT) + 60.0)
            .run()
            .ok();
        bench::real_seconds(&o.stderr).unwrap_or_else(|| panic!("no timing in {o}"))
    };
    let count = "wget -qO- http://sink:5001/big | wc -c";
    for client in ["near", "far"] {
        let o = f1
            .hyper(&["exec", client, "sh", "-c", count])
            .timeout(f64::from(FETCH_TIMEOUT) + 60.0)
            .run()
            .ok();
        assert_eq!(
            o.out(),
            (u64::from(mb) << 20).to_string(),
            "{client}: bytes received"
        );
    }
    let (mut near, mut far) = (Vec::new(), Vec::new());
    for run in 0..=args.runs {
        let (n, f) = (timed("near"), timed("far"));
        let note = if run == 0 {
            " (warm-up, not counted)"
        } else {
            ""
        };
        eprintln!("run {run}{note}: same node {n:.2}s, across nodes {f:.2}s");
        if run > 0 {
            near.push(n);
            far.push(f);
        }
    }
    let mbps = |xs: &[f64]| f64::from(mb) / bench::median(xs).expect("at least one run");
    let each = |xs: &[f64]| {
        xs.iter()
            .map(|s| format!("{:.1}", f64::from(mb) / s))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (same, across) = (mbps(&near), mbps(&far));
    println!(
        "TCP throughput between two containers of one tenant, one {mb} MB HTTP download per transfer (busybox httpd -> busybox wget, timed in the client VM), median of {} after 1 warm-up:",
        args.runs
    );
    println!(
        "{:<44}{:>9}{:>13}   (each run, MB/s)",
        "path", "MB/s", "÷ same node"
    );
    println!(
        "{:<44}{same:>9.1}{:>13}   ({})",
        "same node (tenant bridge)",
        "1.000",
        each(&near)
    );
    println!(
        "{:<44}{across:>9.1}{:>13.3}   ({})",
        "across nodes (VXLAN over the datacenter veth)",
        across / same,
        each(&far)
    );
    println!(
        "aim: across nodes at least 0.8 of same node: {} ({:.0}s in all)",
        if across / same >= 0.8 {
            "met"
        } else {
            "missed"
        },
        t_all.elapsed().as_secs_f64()
    );
    // The nodes go first: removing their containers needs the store.
    e2e_cleanup::run();
    drop(etcd);
}
