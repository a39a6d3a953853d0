//! hyperd on etcd (`--store etcd://`, issue 18's first brick): a real etcd (Debian's
//! etcd-server) on loopback, started here and stopped after the daemon; containers run, the
//! state lives in etcd and survives a hyperd restart, and an etcd outage is a clear error that
//! ends when etcd is back, without restarting hyperd. Nodes join a fleet on etcd under a lease
//! (issue 18's membership): listed up or down, drained, removed, one name per node.

use std::collections::BTreeSet;
use std::sync::{Mutex, OnceLock};

use e2e::*;
use store::etcd_server::EtcdServer;

/// The fleet tests' floating IPs (TEST-NET-1).
const FIP_POOL: &str = "192.0.2.0/29";

fn main() {
    let tests: &[(&'static str, TestFn)] = &[
        ("hyperd_runs_on_etcd", hyperd_runs_on_etcd),
        (
            "nodes_join_the_fleet_under_a_lease",
            nodes_join_the_fleet_under_a_lease,
        ),
        (
            "nodes_share_a_namespace_each_running_its_own",
            nodes_share_a_namespace_each_running_its_own,
        ),
        ("a_tenant_network_spans_nodes", a_tenant_network_spans_nodes),
        (
            "placement_fills_the_fleet_and_refuses_past_it",
            placement_fills_the_fleet_and_refuses_past_it,
        ),
        (
            "a_lost_nodes_containers_stop_for_good",
            a_lost_nodes_containers_stop_for_good,
        ),
        (
            "an_rbd_writer_moves_off_a_lost_node_once_fenced",
            an_rbd_writer_moves_off_a_lost_node_once_fenced,
        ),
        (
            "a_service_heals_over_three_nodes",
            a_service_heals_over_three_nodes,
        ),
    ];
    std::process::exit(run_tests(tests));
}

/// The test's etcd, stopped at teardown once the daemon (which needs it to remove its
/// containers) is gone.
fn etcd() -> &'static Mutex<Option<EtcdServer>> {
    static E: OnceLock<Mutex<Option<EtcdServer>>> = OnceLock::new();
    E.get_or_init(|| {
        // Fails loudly, with how to install it, on a machine without etcd.
        let server = EtcdServer::start();
        at_teardown(|| drop(etcd().lock().unwrap().take()));
        Mutex::new(Some(server))
    })
}

fn endpoint() -> String {
    etcd().lock().unwrap().as_ref().unwrap().endpoint()
}

fn hyperd_runs_on_etcd() {
    let url = format!("etcd://{}/hyper", endpoint());
    let d = Daemon::start(
        "etcd",
        DaemonOpts {
            extra_args: vec!["--store".into(), url.clone()],
            ..Default::default()
        },
    );
    assert!(
        d.log_tail(200).contains(&format!("state store: {url}")),
        "{}",
        d.log_tail(40)
    );
    assert!(
        !d.data.join("store.redb").exists(),
        "the state went to etcd, not to the embedded store"
    );

    let o = d
        .hyper(&["run", "--rm", "busybox", "echo", "hi"])
        .timeout(180.0)
        .run()
        .ok();
    assert_eq!(o.out(), "hi");

    // State in etcd outlives hyperd: a running container, the image, the default tenant.
    let id = d
        .hyper(&["run", "-d", "--name", "kept", "busybox", "sleep", "600"])
        .timeout(180.0)
        .run()
        .ok()
        .out();
    d.restart();
    let ps = d
        .hyper(&["ps", "--format", "{{.Names}} {{.Status}}"])
        .run()
        .ok()
        .out();
    assert!(
        ps.lines()
            .any(|l| l.starts_with("kept ") && l.contains("Up")),
        "{ps}"
    );
    assert_eq!(d.inspect("kept")["Id"], id.as_str());
    let o = d
        .hyper(&["exec", "kept", "echo", "adopted"])
        .timeout(60.0)
        .run()
        .ok();
    assert_eq!(o.out(), "adopted");
    let images = d
        .hyper(&["images", "--format", "{{.Repository}}"])
        .run()
        .ok()
        .out();
    assert!(images.lines().any(|l| l == "busybox"), "{images}");

    // etcd down: requests that need the store fail, saying so, instead of hanging.
    etcd().lock().unwrap().as_mut().unwrap().kill();
    // Whatever happens below, the daemon's teardown needs etcd back.
    struct Revive;
    impl Drop for Revive {
        fn drop(&mut self) {
            if let Some(e) = etcd().lock().unwrap().as_mut() {
                if !e.is_running() {
                    e.restart();
                }
            }
        }
    }
    let _revive = Revive;
    // (`ps` answers from hyperd's memory; creating a volume counts it against the quota in
    // the store.)
    let o = d.hyper(&["volume", "create", "v1"]).timeout(60.0).run();
    assert_ne!(o.code, 0, "{o}");
    assert!(o.stderr.contains("etcd"), "the error names etcd: {o}");
    // Back: the same hyperd serves again.
    etcd().lock().unwrap().as_mut().unwrap().restart();
    wait_for("hyperd to reach etcd again", secs(60.0), || {
        let o = d.hyper(&["volume", "create", "v1"]).run();
        (o.code == 0).then_some(()).ok_or(o.to_string())
    });
    let volumes = d.hyper(&["volume", "ls", "-q"]).run().ok().out();
    assert_eq!(volumes, "v1");
    d.hyper(&["rm", "-f", "kept"]).timeout(60.0).run().ok();
    d.hyper(&["volume", "rm", "v1"]).run().ok();
}

/// An etcd of this test's own (the first test takes its etcd down on purpose), stopped once
/// the daemons are: the URL of `namespace` in it.
fn own_etcd(namespace: &str) -> String {
    let etcd = EtcdServer::start();
    let url = format!("etcd://{}/{namespace}", etcd.endpoint());
    at_teardown(move || drop(etcd));
    url
}

/// A node of a fleet on `url`, with a short lease (5 s, renewed every 1.7 s: margin for a
/// loaded machine) and no templates (cold boots: no template build competing for the cores);
/// with `address`, on the fleet's network; with `first`, sharing that node's fleet secrets;
/// `more` flags.
fn fleet_node(
    url: &str,
    name: &str,
    address: Option<&str>,
    first: Option<&Daemon>,
    more: &[&str],
) -> std::sync::Arc<Daemon> {
    let mut extra_args: Vec<String> = [
        "--cluster",
        url,
        "--node-name",
        name,
        "--node-lease",
        "5",
        "--templates",
        "off",
    ]
    .map(String::from)
    .to_vec();
    if let Some(a) = address {
        extra_args.extend(["--node-address".to_string(), a.to_string()]);
    }
    extra_args.extend(more.iter().map(|s| s.to_string()));
    Daemon::start(
        name,
        DaemonOpts {
            extra_args,
            secrets_from: first.map(|d| d.data.clone()),
            ..Default::default()
        },
    )
}

/// Containers of one tenant on two nodes are on one L2 network through VXLAN between the
/// nodes (joined by a veth standing for the datacenter): each reaches the other by address
/// and by name, and another tenant's container neither reaches nor spoofs them; a security
/// group holds across nodes; a node down (its hyperd killed, its lease run out) is out of the
/// overlay until it is back; removed, a container is no longer reached.
fn a_tenant_network_spans_nodes() {
    let url = own_etcd("overlay");
    let n1 = fleet_node(&url, "o1", Some("198.51.100.1"), None, &[]);
    let n2 = fleet_node(&url, "o2", Some("198.51.100.2"), Some(&n1), &[]);
    Netns::datacenter_link(&n1.node, "198.51.100.1", &n2.node, "198.51.100.2");
    let run = |d: &Daemon, name: &str| {
        let script = format!("echo {name} starts; exec sleep 600");
        d.hyper(&["run", "-d", "--name", name, "busybox", "sh", "-c", &script])
            .timeout(180.0)
            .run()
            .ok();
    };
    run(&n1, "oa");
    run(&n2, "ob");
    let ip = |d: &Daemon, name: &str| {
        d.inspect(name)["NetworkSettings"]["IPAddress"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (ip_a, ip_b) = (ip(&n1, "oa"), ip(&n2, "ob"));
    let reaches = |d: &Daemon, from: &str, to: &str| {
        d.hyper(&["exec", from, "ping", "-c", "1", "-W", "2", to])
            .timeout(60.0)
            .run()
    };
    for (d, from, to) in [
        (&n1, "oa", ip_b.as_str()),
        (&n2, "ob", ip_a.as_str()),
        (&n1, "oa", "ob"),
    ] {
        wait_for(
            &format!("{from} to reach {to} on the other node"),
            secs(60.0),
            || {
                let o = reaches(d, from, to);
                (o.code == 0).then_some(()).ok_or(o.to_string())
            },
        );
    }
    let o = n1
        .hyper(&["exec", "oa", "nslookup", "ob"])
        .timeout(60.0)
        .run()
        .ok();
    assert!(o.stdout.contains(&ip_b), "{o}");
    // Tenants stay off the fleet's nodes: the node's guard drops what they send to another
    // node's address (which the node's masquerade would otherwise carry there).
    let o = n1
        .hyper(&["exec", "oa", "ping", "-c", "1", "-W", "2", "198.51.100.2"])
        .timeout(60.0)
        .run();
    assert_ne!(o.code, 0, "a container reached another node: {o}");
    another_tenant_cannot_reach_or_spoof(&n1, "oa", "ob", &ip_a, &ip_b);
    // Security groups hold across nodes: ob, in a group that lets in TCP 80 alone, is out of
    // oa's pings, and back in reach once out of it.
    let rules = n1.data.join("only80.yaml");
    std::fs::write(
        &rules,
        "name: only80\ndescription: web\nrules:\n- direction: ingress\n  protocol: tcp\n  port_range_min: 80\n  port_range_max: 80\n",
    )
    .unwrap();
    n1.hyper(&["sg", "create", "-f", rules.to_str().unwrap(), "only80"])
        .run()
        .ok();
    for (change, reached) in [("--sg-add", false), ("--sg-rm", true)] {
        n1.hyper(&["update", change, "only80", "ob"])
            .timeout(60.0)
            .run()
            .ok();
        wait_for(
            &format!("oa's pings to ob after {change}: reached {reached}"),
            secs(60.0),
            || {
                let o = reaches(&n1, "oa", &ip_b);
                ((o.code == 0) == reached)
                    .then_some(())
                    .ok_or(o.to_string())
            },
        );
    }
    n1.hyper(&["sg", "rm", "only80"]).run().ok();

    // One API: either node answers for both containers; what the other runs goes to it,
    // hijacked streams (exec) included.
    let ps = |d: &Daemon| {
        let out = d.hyper(&["ps", "--format", "{{.Names}}"]).run().ok().out();
        let mut names: Vec<String> = out.lines().map(String::from).collect();
        names.sort();
        names
    };
    assert_eq!(ps(&n1), ["oa", "ob"]);
    assert_eq!(ps(&n2), ["oa", "ob"]);
    let counts = |d: &Daemon| {
        let v = d
            .hyper(&["info", "--format", "{{json .}}"])
            .run()
            .ok()
            .json();
        (v["Containers"].clone(), v["ContainersRunning"].clone())
    };
    assert_eq!(counts(&n1), (2.into(), 2.into()), "info counts the fleet's");
    assert_eq!(counts(&n2), counts(&n1));
    assert_eq!(n1.inspect("ob")["Id"], n2.inspect("ob")["Id"]);
    // Events are the fleet's: o1's stream has ob's start on o2.
    let o = n1
        .hyper(&[
            "events",
            "--since",
            "10m",
            "--until",
            "0s",
            "--filter",
            "container=ob",
            "--format",
            "{{.Action}}",
        ])
        .timeout(60.0)
        .run()
        .ok();
    assert!(o.stdout.lines().any(|l| l == "start"), "{o}");
    let o = n1
        .hyper(&["exec", "-i", "ob", "sh", "-c", "cat; hostname"])
        .stdin(b"through o1\n")
        .timeout(60.0)
        .run()
        .ok();
    let hostname = n2.inspect("ob")["Config"]["Hostname"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(o.out(), format!("through o1\n{hostname}"));
    let o = n1.hyper(&["logs", "ob"]).timeout(60.0).run().ok();
    assert_eq!(o.out(), "ob starts");
    let o = n1
        .hyper(&["exec", "ob", "sh", "-c", "exit 3"])
        .timeout(60.0)
        .run();
    assert_eq!(
        o.code, 3,
        "an exec's exit code comes back through the other node: {o}"
    );

    // An image only o1 has (committed there) runs through o2, which takes it there first.
    n1.hyper(&["commit", "oa", "onlyon1:v1"])
        .timeout(120.0)
        .run()
        .ok();
    let o = n2
        .hyper(&["run", "--rm", "onlyon1:v1", "echo", "from-o1"])
        .timeout(180.0)
        .run()
        .ok();
    assert_eq!(o.out(), "from-o1");
    let here = n2
        .hyper(&["images", "--format", "{{.Repository}}"])
        .run()
        .ok()
        .out();
    assert!(
        here.lines().any(|l| l == "onlyon1"),
        "o2 has it now: {here}"
    );

    // A local volume lives on the node that made it: a container using it runs there,
    // whichever node is asked.
    n1.hyper(&["volume", "create", "data1"]).run().ok();
    n1.hyper(&[
        "run",
        "--rm",
        "-v",
        "data1:/d",
        "busybox",
        "sh",
        "-c",
        "echo kept > /d/f",
    ])
    .timeout(180.0)
    .run()
    .ok();
    let o = n2
        .hyper(&["run", "--rm", "-v", "data1:/d", "busybox", "cat", "/d/f"])
        .timeout(180.0)
        .run()
        .ok();
    assert_eq!(o.out(), "kept");
    n1.hyper(&["volume", "rm", "data1"]).run().ok();

    // The fleet listener takes nothing but another node's signed requests.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    for (header, why) in [
        (String::new(), "no node signature"),
        (
            format!("x-hyper-fleet: o1 {now} default 00ff"),
            "does not verify",
        ),
    ] {
        let mut args = vec![
            "netns",
            "exec",
            &n1.node.name,
            "curl",
            "-sk",
            "-w",
            " %{http_code}",
        ];
        if !header.is_empty() {
            args.extend(["-H", &header]);
        }
        args.push("https://198.51.100.2:2377/containers/json");
        let o = Cmd::new("ip", &args).timeout(30.0).run().ok();
        assert!(o.stdout.ends_with(" 401") && o.stdout.contains(why), "{o}");
    }

    // n2's hyperd killed: its VM runs on, but once n2 is down for the fleet, n1 sends nothing
    // there; n2 back, the overlay is too.
    n2.kill9();
    wait_for("the down node to leave the overlay", secs(60.0), || {
        let o = reaches(&n1, "oa", &ip_b);
        (o.code != 0).then_some(()).ok_or(o.to_string())
    });
    let o = n1.hyper(&["logs", "ob"]).timeout(60.0).run();
    assert!(
        o.code != 0 && o.stderr.contains("node o2, which is down"),
        "{o}"
    );
    n2.restart();
    wait_for("the node back in the overlay", secs(60.0), || {
        let o = reaches(&n1, "oa", &ip_b);
        (o.code == 0).then_some(()).ok_or(o.to_string())
    });
    n2.hyper(&["rm", "-f", "ob"]).timeout(60.0).run().ok();
    wait_for(
        "the removed container to be out of reach",
        secs(60.0),
        || {
            let o = reaches(&n1, "oa", &ip_b);
            (o.code != 0).then_some(()).ok_or(o.to_string())
        },
    );
    n1.hyper(&["rm", "-f", "oa"]).timeout(60.0).run().ok();

    // A burst through one node spreads: each placement counts those still on their way.
    let names = ["ob1", "ob2", "ob3", "ob4"];
    let runs: Vec<_> = names
        .iter()
        .map(|name| {
            let cmd = n1.hyper(&["run", "-d", "--name", name, "busybox", "sleep", "600"]);
            std::thread::spawn(move || cmd.timeout(180.0).run())
        })
        .collect();
    for run in runs {
        run.join().unwrap().ok();
    }
    let on: BTreeSet<String> = names
        .iter()
        .map(|name| {
            n1.inspect(name)["Node"]["Name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(on, BTreeSet::from(["o1".to_string(), "o2".to_string()]));
    let mut rm = vec!["rm", "-f"];
    rm.extend(names);
    n1.hyper(&rm).timeout(120.0).run().ok();
}

/// Another tenant on the same nodes, root in its guest (which is all its own), gets nothing to
/// `to` (one of `d`'s tenant's containers, on another node than `from`): not by its address,
/// not with `from`'s address and MAC taken as its own. Counted where it would land: `to`'s
/// kernel's echo requests, which `from`'s own pings do raise.
fn another_tenant_cannot_reach_or_spoof(
    d: &Daemon,
    from: &str,
    to: &str,
    from_ip: &str,
    to_ip: &str,
) {
    let echoes = || -> u64 {
        let count = "awk '/^Icmp:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == \"InEchos\") c = i; h = 1 } else print $c }' /proc/net/snmp";
        let o = d
            .hyper(&["exec", to, "sh", "-c", count])
            .timeout(60.0)
            .run()
            .ok();
        o.out()
            .parse()
            .unwrap_or_else(|_| panic!("no echo count: {o}"))
    };
    let ping_from_owner = |n: &str| {
        d.hyper(&["exec", from, "ping", "-c", n, "-W", "2", to_ip])
            .timeout(60.0)
            .run()
            .ok();
    };
    let before = echoes();
    ping_from_owner("3");
    assert!(echoes() >= before + 3, "the count sees the owner's pings");

    let (other, _) = d.new_tenant("spoofer");
    d.hyper_tcp(&other, &["load", "-i", busybox_tar().to_str().unwrap()])
        .timeout(120.0)
        .run()
        .ok();
    // A local volume made through `d` keeps the spoofer on `d`'s node, where `from` runs.
    d.hyper_tcp(&other, &["volume", "create", "spoofpin"])
        .run()
        .ok();
    let from_mac = d.inspect(from)["NetworkSettings"]["MacAddress"]
        .as_str()
        .unwrap()
        .to_string();
    let attempts = format!(
        "ping -c 2 -W 1 {to_ip}; \
         ip addr add {from_ip}/32 dev eth0; ping -I {from_ip} -c 2 -W 1 {to_ip}; \
         ip link set eth0 down; ip link set eth0 address {from_mac}; ip link set eth0 up; \
         ping -I {from_ip} -c 2 -W 1 {to_ip}; ip link show eth0; echo tried"
    );
    let before = echoes();
    let o = d
        .hyper_tcp(
            &other,
            &[
                "run",
                "--rm",
                "-v",
                "spoofpin:/p",
                "busybox",
                "sh",
                "-c",
                &attempts,
            ],
        )
        .timeout(180.0)
        .run()
        .ok();
    assert!(
        o.stdout.contains("tried") && o.stdout.contains(&from_mac),
        "the spoofer's guest took the address and MAC: {o}"
    );
    let after = echoes();
    assert_eq!(after, before, "another tenant's packets reached {to}: {o}");
    // And the owner's own traffic is undisturbed by the spoofer's claims.
    ping_from_owner("2");
    assert!(echoes() >= after + 2, "{from} still reaches {to}");
    d.hyper_tcp(&other, &["volume", "rm", "spoofpin"])
        .run()
        .ok();
}

/// Containers go where memory is free: two nodes that each hold two s1 containers take four
/// created through one of them, two each; a fifth is refused with a clear error, and leaves
/// nothing behind; room made on one node is used again, and a restart needs room as a start
/// does.
fn placement_fills_the_fleet_and_refuses_past_it() {
    let url = own_etcd("placement");
    // Two s1 VMs' memory (64 MiB and the kernel's 40 each).
    let memory = ["--node-memory", "208M"];
    let n1 = fleet_node(&url, "p1", Some("198.51.100.11"), None, &memory);
    let n2 = fleet_node(&url, "p2", Some("198.51.100.12"), Some(&n1), &memory);
    Netns::datacenter_link(&n1.node, "198.51.100.11", &n2.node, "198.51.100.12");
    let run = |name: &str| {
        n1.hyper(&[
            "run", "-d", "--size", "s1", "--name", name, "busybox", "sleep", "600",
        ])
        .timeout(180.0)
        .run()
    };
    let node_of = |name: &str| {
        n1.inspect(name)["Node"]["Name"]
            .as_str()
            .unwrap()
            .to_string()
    };
    run("w1").ok();
    // p2 has more room now: a foreground run through p1 goes there, its output and exit
    // code back through p1.
    let o = n1
        .hyper(&[
            "run",
            "--rm",
            "--size",
            "s1",
            "busybox",
            "sh",
            "-c",
            "echo across; exit 4",
        ])
        .timeout(180.0)
        .run();
    assert_eq!((o.code, o.stdout.trim()), (4, "across"), "{o}");
    for name in ["w2", "w3", "w4"] {
        run(name).ok();
    }
    let mut placed: Vec<String> = ["w1", "w2", "w3", "w4"].map(node_of).to_vec();
    placed.sort();
    assert_eq!(placed, ["p1", "p1", "p2", "p2"]);
    let o = run("w5");
    assert!(
        o.code != 0 && o.stderr.contains("no room for a s1 container"),
        "{o}"
    );
    let o = n1
        .hyper(&[
            "run", "-d", "--size", "m1", "--name", "big", "busybox", "true",
        ])
        .run();
    assert!(
        o.code != 0 && o.stderr.contains("no room for a m1 container"),
        "{o}"
    );
    let all = n2
        .hyper(&["ps", "-a", "--format", "{{.Names}}"])
        .run()
        .ok()
        .out();
    assert_eq!(
        all.lines().count(),
        4,
        "nothing left of the refused ones: {all}"
    );
    let info = n2.hyper(&["info"]).run().ok().stdout;
    assert!(
        info.contains("Fleet: 2 of 2 nodes ready: ") && info.contains("(0B free)"),
        "{info}"
    );
    // Room made on p2 (removed through p1) takes the next one there, of an image only p1
    // had (committed there): p1 copies it to p2.
    let on = |node: &str| {
        ["w1", "w2", "w3", "w4"]
            .into_iter()
            .find(|n| node_of(n) == node)
            .unwrap()
    };
    n1.hyper(&["exec", on("p1"), "sh", "-c", "echo made-on-p1 > /marker"])
        .timeout(60.0)
        .run()
        .ok();
    n1.hyper(&["commit", on("p1"), "mine:v1"])
        .timeout(120.0)
        .run()
        .ok();
    n1.hyper(&["rm", "-f", on("p2")]).timeout(60.0).run().ok();
    n1.hyper(&[
        "run", "-d", "--size", "s1", "--name", "w5", "mine:v1", "sleep", "600",
    ])
    .timeout(180.0)
    .run()
    .ok();
    assert_eq!(node_of("w5"), "p2");
    let o = n1
        .hyper(&["exec", "w5", "cat", "/marker"])
        .timeout(60.0)
        .run()
        .ok();
    assert_eq!(o.out(), "made-on-p1");
    // A stopped container's room goes to whoever asks first: a restart then finds none, and
    // says so, as a start would.
    n1.hyper(&["stop", "-t", "1", "w5"])
        .timeout(60.0)
        .run()
        .ok();
    run("w6").ok();
    assert_eq!(node_of("w6"), "p2");
    let o = n1.hyper(&["restart", "w5"]).timeout(60.0).run();
    assert!(
        o.code != 0 && o.stderr.contains("no room on node p2 for a s1 container"),
        "{o}"
    );
    assert_eq!(n1.inspect("w5")["State"]["Status"], "exited");
    for name in ["w1", "w2", "w3", "w4", "w5", "w6"] {
        n1.hyper(&["rm", "-f", name]).timeout(60.0).run();
    }
}

/// `d`'s hyperd stopped (SIGSTOP; its VMs run on) until the guard is dropped.
fn freeze(d: &Daemon) -> Thaw {
    Thaw::stop(vec![d.pid().unwrap() as i32])
}

/// The whole node stopped (SIGSTOP on its hyperd, shims and QEMUs) until the guard is dropped.
fn freeze_whole_node(d: &Daemon) -> Thaw {
    let mut pids = vec![d.pid().unwrap() as i32];
    pids.extend(node_processes(d));
    Thaw::stop(pids)
}

/// The whole node killed: its hyperd, shims and QEMUs with SIGKILL.
fn kill_whole_node(d: &Daemon) {
    d.kill9();
    for pid in node_processes(d) {
        // SAFETY: kill(2) of a process of this test's own node.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// The processes a node started (its shims and QEMUs name its data root).
fn node_processes(d: &Daemon) -> Vec<i32> {
    processes_mentioning(&d.data.to_string_lossy())
        .iter()
        .filter_map(|p| p.split_whitespace().next()?.parse().ok())
        .collect()
}

struct Thaw(Vec<i32>);

impl Thaw {
    fn stop(pids: Vec<i32>) -> Thaw {
        for &pid in &pids {
            // SAFETY: kill(2) of a process of this test's own node.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
        }
        Thaw(pids)
    }
}

impl Drop for Thaw {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: as above; the node must run again for the teardown.
            unsafe { libc::kill(pid, libc::SIGCONT) };
        }
    }
}

/// A node frozen past its lease and `--node-lost-after` is declared lost: its running
/// containers are stopped for good in the store (any node shows why, and will not start one),
/// their runs billed no further; one with a restart policy starts again on the other node
/// under its name, and the lost node's service is taken over there (its replicas, first spread
/// over both nodes and each reached through either node's balancer, all run there now); when
/// the node resumes it stops its copies, which their restart policies do not bring back.
fn a_lost_nodes_containers_stop_for_good() {
    let url = own_etcd("loss");
    // l1 offers less memory than l2: what is created goes to l2.
    let n1 = fleet_node(
        &url,
        "l1",
        Some("198.51.100.31"),
        None,
        &[
            "--node-lost-after",
            "3",
            "--node-memory",
            "4G",
            "--fip-pool",
            FIP_POOL,
        ],
    );
    let n2 = fleet_node(
        &url,
        "l2",
        Some("198.51.100.32"),
        Some(&n1),
        &["--node-lost-after", "3", "--fip-pool", FIP_POOL],
    );
    Netns::datacenter_link(&n1.node, "198.51.100.31", &n2.node, "198.51.100.32");
    // The internet reaches the fleet through l1: its router sends the FIP pool there, and the
    // datacenter's route back goes through l1 too.
    let inet = Netns::internet("linet", &n1.node, "hy-inet0", FIP_POOL);
    n2.node
        .ip(&["route", "add", "203.0.113.0/24", "via", "198.51.100.31"]);
    let run = |more: &[&str]| {
        let mut argv = vec!["run", "-d"];
        argv.extend_from_slice(more);
        argv.extend(["busybox", "sleep", "600"]);
        n2.hyper(&argv).timeout(180.0).run().ok().out()
    };
    let copies = [
        run(&["--name", "lx"]),
        run(&["--name", "lr", "--restart", "always"]),
    ]
    .map(|id| format!("{}/c/{}", n2.data.display(), &id[..12]));
    // A FIP on a container with a restart policy, which l2 runs: l1 routes it on to l2.
    let serve_fip = "mkdir -p /w && echo fip-ok > /w/index.html && exec httpd -f -p 80 -h /w";
    n2.hyper(&[
        "run",
        "-d",
        "--name",
        "lf",
        "--restart",
        "always",
        "-p",
        "8080:80",
        "busybox",
        "sh",
        "-c",
        serve_fip,
    ])
    .timeout(180.0)
    .run()
    .ok();
    let fip = n1.hyper(&["fip", "allocate", "1"]).run().ok().out();
    n1.hyper(&["fip", "attach", &fip, "lf"]).run().ok();
    let through_fip = || {
        inet.run(|| http_get(&format!("{fip}:8080"), "/"))
            .and_then(|body| (body == "fip-ok\n").then_some(()).ok_or(body))
    };
    wait_for("lf through its FIP, by way of l1", secs(60.0), through_fip);
    for name in ["lx", "lr", "lf"] {
        assert_eq!(n1.inspect(name)["Node"]["Name"], "l2");
    }
    // A service kept by l2.
    let serve = "mkdir -p /w && hostname > /w/index.html && httpd -f -p 80 -h /w";
    n2.http_service("web", 2, serve).run().ok();
    let running_replicas = |d: &Daemon| {
        let v = d.hyper(&["service", "inspect", "web"]).run().ok().json()[0].clone();
        let running = v["Containers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["State"] == "running")
            .count();
        (v["Status"] == "running" && running == 2)
            .then_some(())
            .ok_or(v.to_string())
    };
    wait_for("web to run 2 replicas", secs(180.0), || {
        running_replicas(&n2)
    });
    // They are spread, one on each node, and each node's balancer reaches both: a client on
    // either node (pinned there by a local volume made through it) is answered by both.
    let replicas = n1.hyper(&["service", "inspect", "web"]).run().ok().json()[0]["Containers"]
        .as_array()
        .unwrap()
        .clone();
    let on: BTreeSet<&str> = replicas
        .iter()
        .map(|c| c["Node"].as_str().unwrap())
        .collect();
    assert_eq!(on, BTreeSet::from(["l1", "l2"]), "{replicas:?}");
    let hostnames: BTreeSet<String> = replicas
        .iter()
        .map(|c| {
            let id = c["Id"].as_str().unwrap();
            n1.inspect(id)["Config"]["Hostname"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for (d, volume) in [(&n1, "pin-l1"), (&n2, "pin-l2")] {
        d.hyper(&["volume", "create", volume]).run().ok();
        let mount = format!("{volume}:/pin");
        let asks = "for i in 1 2 3 4 5 6; do wget -qO- http://web/; done";
        let o = d
            .hyper(&["run", "--rm", "-v", &mount, "busybox", "sh", "-c", asks])
            .timeout(180.0)
            .run()
            .ok();
        let answers: BTreeSet<String> = o.stdout.lines().map(String::from).collect();
        assert_eq!(answers, hostnames, "through {volume}'s node: {o}");
        d.hyper(&["volume", "rm", volume]).run().ok();
    }

    // l2's hyperd frozen (its VMs run on): past its lease and 3 s more, l1 declares it lost.
    let thaw = freeze(&n2);
    // (Until then l1 passes requests on to l2, which does not answer.)
    let status = "{{.State.Status}} {{.State.Error}} {{.Node.Name}}";
    wait_for("l1 to declare l2 lost", secs(90.0), || {
        let o = n1
            .hyper(&["inspect", "-f", status, "lx"])
            .timeout(30.0)
            .run();
        (o.out() == "exited node l2 was lost l2")
            .then_some(())
            .ok_or(o.to_string())
    });
    let o = n1
        .hyper(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"])
        .run()
        .ok();
    assert!(o.stdout.contains("lx Exited (137)"), "{o}");
    let o = n1.hyper(&["start", "lx"]).timeout(60.0).run();
    assert!(
        o.code != 0 && o.stderr.contains("its node l2 was lost"),
        "{o}"
    );
    // lr's restart policy brings it back on l1, under its name.
    wait_for("lr to run on l1", secs(180.0), || {
        let o = n1
            .hyper(&["inspect", "-f", status, "lr"])
            .timeout(30.0)
            .run();
        (o.out() == "running  l1")
            .then_some(())
            .ok_or(o.to_string())
    });
    // lf moved to l1, and its FIP with it.
    wait_for("lf to run on l1", secs(180.0), || {
        let o = n1
            .hyper(&["inspect", "-f", status, "lf"])
            .timeout(30.0)
            .run();
        (o.out() == "running  l1")
            .then_some(())
            .ok_or(o.to_string())
    });
    wait_for("lf through its FIP on l1", secs(60.0), through_fip);
    // l1 took the service over: its replicas run there now, and it answers.
    wait_for("web to run 2 replicas on l1", secs(180.0), || {
        running_replicas(&n1)
    });
    let o = n1
        .hyper(&["run", "--rm", "busybox", "wget", "-qO-", "http://web/"])
        .timeout(180.0)
        .run()
        .ok();
    assert!(!o.out().is_empty(), "{o}");

    // l2 resumes: it stops its copies for good.
    drop(thaw);
    for copy in &copies {
        wait_for("l2 to stop its lost copies", secs(60.0), || {
            let left = processes_mentioning(copy);
            left.is_empty().then_some(()).ok_or(left.join("\n"))
        });
    }
    std::thread::sleep(std::time::Duration::from_secs(3));
    for copy in &copies {
        assert!(
            processes_mentioning(copy).is_empty(),
            "a restart policy brought {copy} back"
        );
    }
    assert_eq!(n2.inspect("lx")["State"]["Running"], false);
    n1.hyper(&["rm", "lx"]).timeout(60.0).run().ok();
    let o = n2.hyper(&["ps", "-aq", "--filter", "name=lx"]).run().ok();
    assert_eq!(o.out(), "", "removed everywhere");
}

/// A container with a restart policy writing to an rbd volume on a node frozen past its lease
/// (its hyperd stopped; its VM writes on) starts again on the other node with its volume, but
/// only once the lost node's client is fenced from the storage (blocklisted); when the node
/// resumes it stops its copy; and every line the writer wrote, through either node, holds its
/// checksum, in order.
fn an_rbd_writer_moves_off_a_lost_node_once_fenced() {
    let ceph = Ceph::get();
    let url = own_etcd("fence");
    let conf = ceph.conf().to_string_lossy().into_owned();
    let rbd = [
        "--ceph-conf",
        &conf,
        "--volume-driver",
        "rbd",
        "--node-lost-after",
        "3",
    ];
    // f1 offers less memory than f2: the writer goes to f2.
    let mut small = rbd.to_vec();
    small.extend(["--node-memory", "4G"]);
    let n1 = fleet_node(&url, "f1", Some("198.51.100.51"), None, &small);
    let n2 = fleet_node(&url, "f2", Some("198.51.100.52"), Some(&n1), &rbd);
    Netns::datacenter_link(&n1.node, "198.51.100.51", &n2.node, "198.51.100.52");
    n2.hyper(&["volume", "create", "fdata"]).run().ok();
    // Each line: its number and that number's md5, counting on from the volume's last line.
    let writer = "touch /d/log; n=$(wc -l < /d/log); \
        while :; do n=$((n+1)); echo \"$n $(echo $n | md5sum | cut -c1-32)\" >> /d/log; sync; usleep 200000; done";
    let id = n2
        .hyper(&[
            "run",
            "-d",
            "--name",
            "fw",
            "--restart",
            "always",
            "-v",
            "fdata:/d",
            "busybox",
            "sh",
            "-c",
            writer,
        ])
        .timeout(180.0)
        .run()
        .ok()
        .out();
    assert_eq!(n1.inspect("fw")["Node"]["Name"], "f2");
    let lines = |d: &Daemon| {
        let o = d
            .hyper(&["exec", "fw", "wc", "-l", "/d/log"])
            .timeout(60.0)
            .run();
        o.stdout
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
    };
    wait_for("the writer's first lines", secs(120.0), || {
        lines(&n2)
            .filter(|n| *n >= 5)
            .map(|_| ())
            .ok_or("fewer than 5".to_string())
    });
    let copy = format!("{}/c/{}", n2.data.display(), &id[..12]);
    // The volume is the writer's across the fleet: a container on the other node cannot
    // attach it too (two VMs mounting one file system would corrupt it).
    let o = n1
        .hyper(&[
            "run", "-d", "--name", "fdup", "-v", "fdata:/d", "busybox", "true",
        ])
        .timeout(180.0)
        .run();
    assert!(
        o.code != 0 && o.stderr.contains("volume fdata is in use by container"),
        "{o}"
    );
    assert_eq!(n2.inspect("fdup")["Node"]["Name"], "f1");
    n1.hyper(&["rm", "-f", "fdup"]).timeout(60.0).run().ok();

    let thaw = freeze(&n2);
    let status = "{{.State.Status}} {{.Node.Name}}";
    wait_for("the writer to run on f1", secs(180.0), || {
        let o = n1
            .hyper(&["inspect", "-f", status, "fw"])
            .timeout(30.0)
            .run();
        (o.out() == "running f1").then_some(()).ok_or(o.to_string())
    });
    // f2's VM, which still runs, was fenced first.
    let o = Cmd::new(
        "ceph",
        &["-c", &conf, "--id", "admin", "osd", "blocklist", "ls"],
    )
    .timeout(60.0)
    .run()
    .ok();
    assert!(o.to_string().contains("listed"), "{o}");
    assert!(
        !processes_mentioning(&copy).is_empty(),
        "f2's copy runs on, fenced"
    );
    let moved = lines(&n1).unwrap_or(0);
    wait_for("the writer to go on through f1", secs(120.0), || {
        lines(&n1)
            .filter(|n| *n >= moved + 5)
            .map(|_| ())
            .ok_or("no new lines".to_string())
    });

    // f2 resumes: it stops its copy.
    drop(thaw);
    wait_for("f2 to stop its copy", secs(60.0), || {
        let left = processes_mentioning(&copy);
        left.is_empty().then_some(()).ok_or(left.join("\n"))
    });
    n1.hyper(&["rm", "-f", "fw"]).timeout(60.0).run().ok();
    let check = "i=0; while read n sum; do i=$((i+1)); \
        [ \"$n\" = \"$i\" ] || { echo \"line $i says $n\"; exit 1; }; \
        [ \"$sum\" = \"$(echo $n | md5sum | cut -c1-32)\" ] || { echo \"bad sum on line $n\"; exit 1; }; \
        done < /d/log; echo $i";
    let o = n1
        .hyper(&[
            "run", "--rm", "-v", "fdata:/d", "busybox", "sh", "-c", check,
        ])
        .timeout(300.0)
        .run()
        .ok();
    let checked: u64 = o.out().parse().unwrap_or_else(|_| panic!("{o}"));
    assert!(
        checked >= moved + 5,
        "{checked} lines, {moved} when it moved: {o}"
    );
    n1.hyper(&["volume", "rm", "fdata"])
        .timeout(120.0)
        .run()
        .ok();
}

/// A service of 4 replicas on three nodes (joined by a bridge standing for the datacenter)
/// spreads over all three; a client on one node keeps being answered through the service while
/// another whole node is lost (killed or frozen: hyperd, shims and QEMUs at once), failing only
/// between the loss and the heal; the service is back to 4 replicas on the nodes left, and the
/// node, back, runs none of them. `HYPER_FLEET_ROUNDS` (scripts/fleet-chaos) repeats the loss.
fn a_service_heals_over_three_nodes() {
    let url = own_etcd("heal");
    let addrs = ["198.51.100.61", "198.51.100.62", "198.51.100.63"];
    let lost = ["--node-lost-after", "3"];
    let n1 = fleet_node(&url, "h1", Some(addrs[0]), None, &lost);
    let n2 = fleet_node(&url, "h2", Some(addrs[1]), Some(&n1), &lost);
    let n3 = fleet_node(&url, "h3", Some(addrs[2]), Some(&n1), &lost);
    let dc = Netns::datacenter(
        "hdc",
        &[
            (&n1.node, addrs[0]),
            (&n2.node, addrs[1]),
            (&n3.node, addrs[2]),
        ],
    );
    // The nodes need it until they are gone.
    at_teardown(move || drop(dc));
    let serve = "mkdir -p /w && hostname > /w/index.html && exec httpd -f -p 80 -h /w";
    n1.http_service("web", 4, serve).run().ok();
    // (running, on which nodes) of the service's replicas.
    let replicas = || {
        let v = n1.hyper(&["service", "inspect", "web"]).run().ok().json()[0].clone();
        let mut on: Vec<String> = v["Containers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["State"] == "running")
            .map(|c| c["Node"].as_str().unwrap().to_string())
            .collect();
        on.sort();
        (v["Status"] == "running", on)
    };
    let spread = wait_for("web to run 4 replicas", secs(240.0), || match replicas() {
        (true, on) if on.len() == 4 => Ok(on),
        other => Err(format!("{other:?}")),
    });
    let spread_over: BTreeSet<&str> = spread.iter().map(String::as_str).collect();
    assert_eq!(
        spread_over,
        BTreeSet::from(["h1", "h2", "h3"]),
        "{spread:?}"
    );

    // A client on h1 (pinned by a local volume made there) asks four times a second.
    n1.hyper(&["volume", "create", "pin-h1"]).run().ok();
    let ask = "while :; do if timeout 3 wget -qO- http://web/ >/dev/null; \
        then echo \"$(date +%s) ok\"; else echo \"$(date +%s) fail\"; fi; usleep 250000; done";
    n1.hyper(&[
        "run",
        "-d",
        "--name",
        "client",
        "-v",
        "pin-h1:/p",
        "busybox",
        "sh",
        "-c",
        ask,
    ])
    .timeout(180.0)
    .run()
    .ok();
    let answers = || -> Vec<(i64, bool)> {
        let o = n1.hyper(&["logs", "client"]).timeout(60.0).run().ok();
        o.stdout
            .lines()
            .filter_map(|l| {
                let (t, what) = l.split_once(' ')?;
                Some((t.parse().ok()?, what == "ok"))
            })
            .collect()
    };
    wait_for("the client's first answers", secs(120.0), || {
        let ok = answers().iter().filter(|(_, ok)| *ok).count();
        let o = n1
            .hyper(&["logs", "--tail", "5", "client"])
            .timeout(60.0)
            .run();
        (ok >= 8).then_some(()).ok_or(format!("{ok} answers: {o}"))
    });
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };

    // Each round loses a whole node, h3 and h2 in turn (h1 holds the client): killed (hyperd,
    // shims and QEMUs with SIGKILL), or, every second round, frozen (SIGSTOP on all of them)
    // past its lease. The service heals on the two left; the node comes back (restarted, or
    // resumed, when it stops the copies the fleet gave up) before the next round.
    let rounds: usize =
        match std::env::var("HYPER_FLEET_ROUNDS") {
            Ok(n) => n.parse().ok().filter(|n| *n >= 1).unwrap_or_else(|| {
                panic!("HYPER_FLEET_ROUNDS={n:?}: give a whole number, 1 or more")
            }),
            Err(_) => 1,
        };
    let mut windows = Vec::new();
    for round in 1..=rounds {
        let (victim, name) = if round % 2 == 1 {
            (&n3, "h3")
        } else {
            (&n2, "h2")
        };
        let freezing = round % 4 == 0 || round % 4 == 3;
        let fault = if freezing { "frozen" } else { "killed" };
        let lost_at = now();
        let frozen = if freezing {
            Some(freeze_whole_node(victim))
        } else {
            kill_whole_node(victim);
            None
        };
        let healed = wait_for(
            &format!("web back to 4 replicas without {name}"),
            secs(240.0),
            || match replicas() {
                (true, on) if on.len() == 4 && !on.iter().any(|n| n == name) => Ok(on),
                other => Err(format!("{other:?}")),
            },
        );
        let healed_at = now();
        eprintln!(
            "round {round}: {name} {fault}, heal window {} s, replicas on {healed:?}",
            healed_at - lost_at
        );
        windows.push((lost_at, healed_at));
        wait_for("the client's answers after the heal", secs(60.0), || {
            let after = answers()
                .iter()
                .filter(|(t, ok)| *ok && *t > healed_at + 2)
                .count();
            (after >= 8).then_some(()).ok_or(format!("{after} answers"))
        });
        match frozen {
            Some(thaw) => drop(thaw),
            None => victim.restart(),
        }
        wait_for(&format!("{name} ready again"), secs(120.0), || {
            let rows = nodes(&n1);
            rows.iter()
                .any(|(n, status, _)| n == name && status == "ready")
                .then_some(())
                .ok_or(format!("{rows:?}"))
        });
        // Back, the node runs none of the replicas the fleet replaced.
        wait_for(
            &format!("{name} to run no stale replica"),
            secs(120.0),
            || {
                let stale = processes_mentioning(&victim.data.to_string_lossy())
                    .into_iter()
                    .filter(|p| p.contains("qemu"))
                    .count();
                (stale == 0).then_some(()).ok_or(format!("{stale} VMs"))
            },
        );
    }
    // Guest clocks are read from the RTC: a second of slack either side.
    let all = answers();
    let outside: Vec<&(i64, bool)> = all
        .iter()
        .filter(|(t, ok)| {
            !ok && !windows
                .iter()
                .any(|(from, to)| *t >= from - 1 && *t <= to + 1)
        })
        .collect();
    assert!(
        outside.is_empty(),
        "failures outside the heal windows {windows:?}: {outside:?}"
    );
    n1.hyper(&["rm", "-f", "client"]).timeout(60.0).run().ok();
    n1.hyper(&["volume", "rm", "pin-h1"]).run().ok();
    n1.hyper(&["service", "rm", "web"])
        .timeout(120.0)
        .run()
        .ok();
}

/// Two nodes on one namespace of etcd, off the fleet's network: a name is the tenant's on
/// every node, either node lists both containers, a request about the other's container says
/// where it runs, and a node restarted adopts its own containers and leaves the other node's
/// alone.
fn nodes_share_a_namespace_each_running_its_own() {
    let url = own_etcd("shared");
    let n1 = fleet_node(&url, "s1", None, None, &[]);
    let n2 = fleet_node(&url, "s2", None, None, &[]);
    let run = |d: &Daemon, name: &str| {
        d.hyper(&["run", "-d", "--name", name, "busybox", "sleep", "600"])
            .timeout(180.0)
            .run()
    };
    let a = run(&n1, "ca").ok().out();
    let b = run(&n2, "cb").ok().out();
    // A name is the tenant's, whichever node was asked.
    let o = run(&n2, "ca");
    assert!(o.code != 0 && o.stderr.contains("already in use"), "{o}");
    // Either node lists both: the fleet's containers are one list.
    let ps = |d: &Daemon| {
        let out = d.hyper(&["ps", "-q", "--no-trunc"]).run().ok().out();
        let mut ids: Vec<String> = out.lines().map(String::from).collect();
        ids.sort();
        ids
    };
    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    assert_eq!(ps(&n1), both);
    assert_eq!(ps(&n2), both);
    let o = n1.hyper(&["logs", "cb"]).run();
    assert!(
        o.code != 0 && o.stderr.contains("runs on another node"),
        "{o}"
    );
    let ip = |d: &Daemon, name: &str| {
        d.inspect(name)["NetworkSettings"]["IPAddress"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (ip_a, ip_b) = (ip(&n1, "ca"), ip(&n2, "cb"));
    assert!(!ip_a.is_empty() && ip_a != ip_b, "{ip_a} {ip_b}");

    // n1 killed and started again: its container adopted, n2's untouched.
    n1.restart();
    assert_eq!(ps(&n1), both);
    let running = |d: &Daemon, name: &str| d.inspect(name)["State"]["Running"] == true;
    assert!(running(&n1, "ca") && running(&n2, "cb"));
    let o = n2
        .hyper(&["exec", "cb", "echo", "still here"])
        .timeout(60.0)
        .run()
        .ok();
    assert_eq!(o.out(), "still here");
    n1.hyper(&["rm", "-f", "ca"]).timeout(60.0).run().ok();
    n2.hyper(&["rm", "-f", "cb"]).timeout(60.0).run().ok();

    // Two nodes racing to create past the tenant's quota leave exactly the quota.
    n1.tenant_admin(&["quota", "default", "--containers", "3"]);
    let node = |i: usize| if i.is_multiple_of(2) { &n1 } else { &n2 };
    let creates: Vec<Out> = std::thread::scope(|s| {
        let racers: Vec<_> = (0..6)
            .map(|i| {
                let d = node(i);
                s.spawn(move || d.hyper(&["create", "busybox", "true"]).timeout(120.0).run())
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let made = creates.iter().filter(|o| o.code == 0).count();
    assert_eq!(made, 3, "{creates:?}");
    for o in creates.iter().filter(|o| o.code != 0) {
        assert!(o.stderr.contains("quota"), "{o}");
    }
    let all = n2.hyper(&["ps", "-aq"]).run().ok().out();
    assert_eq!(all.lines().count(), 3, "{all}");
    for (i, o) in creates.iter().enumerate().filter(|(_, o)| o.code == 0) {
        node(i).hyper(&["rm", o.stdout.trim()]).run().ok();
    }
}

/// `hyperd node ARGS` against a daemon's socket.
fn node_cmd(d: &Daemon, args: &[&str]) -> Out {
    let sock = d.sock.to_str().unwrap();
    let mut a = vec!["node", "--socket", sock];
    a.extend_from_slice(args);
    Cmd::new(hyperd_bin(), &a).timeout(30.0).run()
}

/// `hyperd node ls` as name -> (status, availability).
fn nodes(d: &Daemon) -> Vec<(String, String, String)> {
    let o = node_cmd(d, &["ls"]).ok();
    let mut lines = o.stdout.lines();
    let header = lines.next().unwrap_or_default();
    assert!(
        header.starts_with("NAME") && header.contains("AVAILABILITY"),
        "{o}"
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[1].to_string(), f[2].to_string())
        })
        .collect()
}

fn row(name: &str, status: &str, availability: &str) -> (String, String, String) {
    (name.into(), status.into(), availability.into())
}

/// Two hyperds join one fleet on their own etcd: each lists both, `hyper info` adds them up;
/// a name is one node's (another hyperd taking it is refused, the node itself restarted
/// takes it back); a node that stops is down at once, one killed is down once its lease runs
/// out; drain and activate; an up node is not removed, a down one is.
fn nodes_join_the_fleet_under_a_lease() {
    let url = own_etcd("fleet");
    let node = |name: &str, address: &str| {
        Daemon::start(
            name,
            DaemonOpts {
                extra_args: [
                    "--cluster",
                    &url,
                    "--node-name",
                    name,
                    "--node-address",
                    address,
                    "--node-lease",
                    "5",
                    "--templates",
                    "off",
                ]
                .map(String::from)
                .to_vec(),
                ..Default::default()
            },
        )
    };
    let n1 = node("n1", "192.0.2.1");
    let n2 = node("n2", "192.0.2.2");
    let both = [row("n1", "ready", "active"), row("n2", "ready", "active")];
    assert_eq!(nodes(&n1), both);
    assert_eq!(nodes(&n2), both, "every node answers the same");
    let inspect = node_cmd(&n1, &["inspect", "n2"]).ok();
    let inspect: serde_json::Value = serde_json::from_str(&inspect.stdout).unwrap();
    assert_eq!(inspect[0]["Address"], "192.0.2.2");
    assert!(inspect[0]["Cpus"].as_u64().unwrap() >= 1);
    let fleet = |d: &Daemon| -> serde_json::Value {
        let o = d.hyper(&["info", "--format", "{{json .Fleet}}"]).run().ok();
        serde_json::from_str(&o.stdout).unwrap()
    };
    let f = fleet(&n1);
    assert_eq!(
        (f["Nodes"].as_u64(), f["NodesReady"].as_u64()),
        (Some(2), Some(2))
    );
    let one_node_cpus = inspect[0]["Cpus"].as_u64().unwrap();
    assert_eq!(f["Cpus"].as_u64(), Some(2 * one_node_cpus));
    let text = n1.hyper(&["info"]).run().ok().stdout;
    assert!(text.contains("Fleet: 2 of 2 nodes ready"), "{text}");

    // Stopped, n2 is down at once. A hyperd on another data root asking for n1's name (up)
    // or n2's (down, but still n2's) is refused before it does anything; so is n2's data root
    // asked to be another node (its containers carry its name).
    n2.stop();
    assert_eq!(
        nodes(&n1),
        [row("n1", "ready", "active"), row("n2", "down", "active")]
    );
    let other = short_tmp("n3");
    let kernel = other.join("kernel");
    std::fs::create_dir_all(&kernel).unwrap();
    for f in ["vmlinuz", "modules", "version"] {
        std::os::unix::fs::symlink(kernel_dir().join(f).canonicalize().unwrap(), kernel.join(f))
            .unwrap();
    }
    let hyperd_as = |data: &std::path::Path, name: &str| {
        let data = data.to_str().unwrap();
        let sock = format!("unix://{data}/other.sock");
        Cmd::new(
            hyperd_bin(),
            &[
                "--data-root",
                data,
                "-H",
                &sock,
                "--agent",
                agent_bin().to_str().unwrap(),
                "--node-netns",
                n2.node.path().to_str().unwrap(),
                "--templates",
                "off",
                "--cluster",
                &url,
                "--node-name",
                name,
            ],
        )
        .timeout(60.0)
        .run()
    };
    for (data, name, why) in [
        (
            other.as_path(),
            "n1",
            "node name n1 is in use by another hyperd",
        ),
        (
            other.as_path(),
            "n2",
            "node name n2 belongs to another node",
        ),
        (n2.data.as_path(), "n1", "this data root is node n2"),
    ] {
        let o = hyperd_as(data, name);
        assert_eq!(o.code, 1, "{o}");
        assert!(o.stderr.contains(why), "{o}");
    }
    std::fs::remove_dir_all(&other).unwrap();
    // n2 back on its data root: its name again.
    n2.restart();
    assert_eq!(nodes(&n1), both);

    // Killed, n2 stays up for the fleet until its lease (5 s) runs out.
    n2.kill9();
    wait_for("the killed node's lease to run out", secs(60.0), || {
        let now = nodes(&n1);
        (now[1].1 == "down").then_some(()).ok_or(format!("{now:?}"))
    });
    let f = fleet(&n1);
    assert_eq!(
        (f["Nodes"].as_u64(), f["NodesReady"].as_u64()),
        (Some(2), Some(1))
    );

    // Drained: still up, out of the capacity; then back.
    node_cmd(&n1, &["drain", "n1"]).ok();
    assert_eq!(nodes(&n1)[0], row("n1", "ready", "drain"));
    let f = fleet(&n1);
    assert_eq!(
        (f["NodesDraining"].as_u64(), f["Cpus"].as_u64()),
        (Some(1), Some(0))
    );
    node_cmd(&n1, &["activate", "n1"]).ok();
    assert_eq!(nodes(&n1)[0], row("n1", "ready", "active"));

    // An up node is not removed; a down one is; an unknown one is not found.
    let o = node_cmd(&n1, &["rm", "n1"]);
    assert!(o.code != 0 && o.stderr.contains("node n1 is up"), "{o}");
    node_cmd(&n1, &["rm", "n2"]).ok();
    assert_eq!(nodes(&n1), [row("n1", "ready", "active")]);
    let o = node_cmd(&n1, &["inspect", "n2"]);
    assert!(o.code != 0 && o.stderr.contains("No such node: n2"), "{o}");

    // Killed and started again before its lease ran out, n1 takes its own name back at once.
    n1.restart();
    assert_eq!(nodes(&n1), [row("n1", "ready", "active")]);
    n1.stop();
    // A killed hyperd leaves its cgroups for its next start to adopt: start and stop n2 so
    // that it takes them down.
    n2.restart();
    n2.stop();
}
