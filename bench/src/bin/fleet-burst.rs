//! A burst of containers placed and started across three nodes, against the same burst on one
//! node, in the same run (issue 18). Prints the ratio (fleet / one node), never pass/fail.
//!
//! N `hyper run -d busybox` CLIs are spawned together against one node of a fleet of three
//! (a real etcd; each hyperd in a network namespace of its own, joined by a bridge standing
//! for the datacenter), which places each on the node with the most room; then the same N
//! against a hyperd alone on its embedded store. Both sides get the same standby VMs in all
//! (a third each on the fleet's nodes), full before their burst. The figure is the wall time
//! until every CLI returned; then each container is checked up from inside its VM (the marker
//! its process wrote), and the fleet's placement is printed. Runs in a network namespace of
//! its own; everything it starts is removed on exit (`bench::e2e_cleanup`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bench::e2e_cleanup;
use e2e::{Daemon, DaemonOpts, Netns};
use store::etcd_server::EtcdServer;

/// What each side offers: a burst books every VM's whole memory, more than this host has (100
/// of the default size take 54 GiB); under TCG a guest touches little of it.
const NODE_MEMORY: &str = "22G";
const ALONE_MEMORY: &str = "66G";

#[derive(clap::Parser)]
struct Args {
    /// Containers per burst.
    #[arg(long, default_value_t = 100)]
    n: usize,
    /// Standby VMs in all, on each side (the fleet's nodes share them out).
    #[arg(long, default_value_t = 24)]
    standbys: usize,
}

/// A hyperd keeping `standbys` standby VMs, with `more` flags.
fn daemon(name: &str, standbys: usize, more: &[&str], first: Option<&Daemon>) -> Arc<Daemon> {
    let mut extra_args: Vec<String> = more.iter().map(|s| s.to_string()).collect();
    let standbys = standbys.to_string();
    extra_args
        .extend(["--standby-vms", &standbys, "--standby-vms-max", &standbys].map(String::from));
    e2e_cleanup::daemon(Daemon::start(
        name,
        DaemonOpts {
            extra_args,
            secrets_from: first.map(|d| d.data.clone()),
            ..DaemonOpts::default()
        },
    ))
}

/// `n` `run -d` at once through `d`: the seconds until all returned, and how many went to
/// each node. Each is checked up inside its VM after the figure is taken.
fn burst(d: &Arc<Daemon>, n: usize, tag: &str) -> (f64, BTreeMap<String, usize>) {
    let t0 = Instant::now();
    let runs: Vec<_> = (0..n)
        .map(|i| {
            let cmd = d.hyper(&[
                "run",
                "-d",
                "--name",
                &format!("{tag}{i}"),
                "busybox",
                "sh",
                "-c",
                "echo up > /up; exec sleep 100000",
            ]);
            std::thread::spawn(move || cmd.timeout(900.0).run())
        })
        .collect();
    let refused: Vec<String> = runs
        .into_iter()
        .map(|run| run.join().expect("a CLI thread"))
        .filter(|o| o.code != 0)
        .map(|o| o.stderr)
        .collect();
    assert!(
        refused.is_empty(),
        "{} of {n} refused: {refused:#?}",
        refused.len()
    );
    let took = t0.elapsed().as_secs_f64();
    let mut placed = BTreeMap::new();
    for i in 0..n {
        let name = format!("{tag}{i}");
        let o = d
            .hyper(&["exec", &name, "cat", "/up"])
            .timeout(120.0)
            .run()
            .ok();
        assert_eq!(o.out(), "up", "{name} is not up");
        let node = d.inspect(&name)["Node"]["Name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        *placed.entry(node).or_default() += 1;
    }
    (took, placed)
}

fn remove_all(d: &Daemon) {
    let ids = d.hyper(&["ps", "-aq"]).run().ok().out();
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if !ids.is_empty() {
        let mut argv = vec!["rm", "-f"];
        argv.extend(ids);
        d.hyper(&argv).timeout(600.0).run().ok();
    }
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    e2e::enter_private_network_namespace();
    let _guard = e2e_cleanup::install();
    let t_all = Instant::now();
    let n = args.n;
    let quota = (n + 10).to_string();

    // The fleet.
    let etcd = EtcdServer::start();
    let url = format!("etcd://{}/bench-burst", etcd.endpoint());
    let addresses = ["198.51.100.71", "198.51.100.72", "198.51.100.73"];
    let share = args.standbys.div_ceil(3);
    let node = |i: usize, first: Option<&Daemon>| {
        let name = format!("b{}", i + 1);
        let fleet = [
            "--cluster",
            &url,
            "--node-name",
            &name,
            "--node-address",
            addresses[i],
            "--node-memory",
            NODE_MEMORY,
        ];
        daemon(&name, share, &fleet, first)
    };
    let b1 = node(0, None);
    let (b2, b3) = (node(1, Some(&b1)), node(2, Some(&b1)));
    let dc = Netns::datacenter(
        "bdc",
        &[
            (&b1.node, addresses[0]),
            (&b2.node, addresses[1]),
            (&b3.node, addresses[2]),
        ],
    );
    b1.tenant_admin(&["quota", "default", "--containers", &quota]);
    for d in [&b1, &b2, &b3] {
        bench::standby_pool_full(d);
    }
    let (fleet, placed) = burst(&b1, n, "f");
    eprintln!("fleet: {n} started in {fleet:.1}s, placed {placed:?}");
    remove_all(&b1);

    // One node alone.
    let one = daemon("b0", args.standbys, &["--node-memory", ALONE_MEMORY], None);
    one.tenant_admin(&["quota", "default", "--containers", &quota]);
    bench::standby_pool_full(&one);
    let (alone, _) = burst(&one, n, "o");
    eprintln!("one node: {n} started in {alone:.1}s");
    remove_all(&one);

    println!(
        "{n} `hyper run -d busybox` at once, every container checked up in its VM afterwards; {} standby VMs in all on each side:",
        args.standbys
    );
    println!("{:<48}{:>10}{:>14}", "", "seconds", "÷ one node");
    println!(
        "{:<48}{alone:>10.1}{:>14}",
        "one node (embedded store)", "1.000"
    );
    let spread = placed
        .iter()
        .map(|(node, count)| format!("{node} {count}"))
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "{:<48}{fleet:>10.1}{:>14.3}   (placed: {spread})",
        "three nodes on etcd, all asked through one",
        fleet / alone
    );
    println!(
        "(all three nodes share this machine's cores: the fleet's figure carries their placement and forwarding, not more CPU; {:.0}s in all)",
        t_all.elapsed().as_secs_f64()
    );
    // The nodes go first: removing their containers needs the store, and their network.
    e2e_cleanup::run();
    drop(dc);
    drop(etcd);
}
