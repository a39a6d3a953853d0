//! Tenant networks end to end (issue 4): real VMs on the tenant's bridge, the tenant's DNS, the
//! node's nftables. Everything happens inside the network namespace the harness moved this
//! process into, plus a "client" namespace standing for the internet; no traffic leaves them.

use std::sync::{Arc, OnceLock};

use e2e::*;

#[path = "network/node_firewall.rs"]
mod node_firewall;

fn main() {
    let tests: &[(&'static str, TestFn)] = &[
        ("names_links_and_ports", names_links_and_ports),
        ("floating_ips", floating_ips),
        ("security_groups", security_groups),
        ("tenant_isolation", tenant_isolation),
        ("data_path_outlives_hyperd", data_path_outlives_hyperd),
        ("compose_project", compose_project),
        ("unknown_names_are_nxdomain", unknown_names_are_nxdomain),
        (
            "guard_outlives_hyperds_tables",
            node_firewall::guard_outlives_hyperds_tables,
        ),
        (
            "drifted_links_are_repaired",
            node_firewall::drifted_links_are_repaired,
        ),
        (
            "idle_network_outlives_hyperd",
            node_firewall::idle_network_outlives_hyperd,
        ),
    ];
    std::process::exit(run_tests(tests));
}

/// The floating IP pool of the shared daemon (TEST-NET-2: never routed anywhere real).
const FIP_POOL: &str = "198.51.100.0/29";

fn daemon() -> &'static Daemon {
    static D: OnceLock<Arc<Daemon>> = OnceLock::new();
    D.get_or_init(|| {
        Daemon::start(
            "n",
            DaemonOpts {
                extra_args: vec!["--fip-pool".into(), FIP_POOL.into()],
                ..DaemonOpts::default()
            },
        )
    })
}

/// `busybox httpd` serving /etc (so `GET /hostname` says which container answered).
fn web(d: &Daemon, extra: &[&str]) -> String {
    let mut args = vec!["run", "-d"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["busybox", "httpd", "-f", "-p", "80", "-h", "/etc"]);
    let id = d.hyper(&args).timeout(120.0).run().ok().out();
    id[..12].to_string()
}

/// Runs a shell script in a throwaway container; its output.
fn sh(d: &Daemon, extra: &[&str], script: &str) -> Out {
    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["busybox", "sh", "-c", script]);
    d.hyper(&args).timeout(120.0).run()
}

/// Containers reach each other by name and by link alias, get Docker's link variables, their
/// hosts and resolv.conf as asked, no IPv6 on eth0, keep their IP across stop/start; a published
/// port answers on the node; names are scoped per network.
fn names_links_and_ports() {
    let d = daemon();
    let db = web(d, &["--name", "db", "--expose", "80"]);
    let v = d.inspect("db");
    let ns = &v["NetworkSettings"];
    let ip = ns["IPAddress"].as_str().unwrap().to_string();
    assert!(ip.starts_with("172.16."), "{ns}");
    assert_eq!(ns["Gateway"], "172.16.0.1");
    assert!(
        ns["MacAddress"]
            .as_str()
            .unwrap()
            .starts_with("02:42:ac:10:"),
        "{ns}"
    );
    assert_eq!(ns["Networks"]["bridge"]["IPAddress"], ip.as_str());

    let o = sh(
        d,
        &["--name", "client1", "--link", "db:data", "--hostname", "h1", "--add-host", "extra.example:10.1.2.3", "--dns", "10.9.9.9"],
        "wget -qO- http://db/hostname; wget -qO- http://data/hostname; echo \"$DATA_NAME $DATA_PORT_80_TCP_ADDR\"; hostname; grep extra.example /etc/hosts; cat /etc/resolv.conf; echo eth0-ipv6=$(ip -o -6 addr show dev eth0 | wc -l)",
    )
    .ok();
    // The tenant network is IPv4: eth0 has no IPv6 address, not even a link-local one.
    assert!(o.stdout.contains("eth0-ipv6=0"), "{o}");
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines[0], db, "by name: {o}");
    assert_eq!(lines[1], db, "by link alias: {o}");
    assert_eq!(
        lines[2],
        format!("/client1/data {ip}"),
        "link variables: {o}"
    );
    assert_eq!(lines[3], "h1", "{o}");
    assert!(
        lines[4].starts_with("10.1.2.3") && lines[4].ends_with("extra.example"),
        "{o}"
    );
    assert!(
        o.stdout
            .contains("nameserver 172.16.0.1\nnameserver 10.9.9.9"),
        "{o}"
    );

    // --network none: only loopback, nothing published.
    let o = sh(
        d,
        &["--network", "none"],
        "ip -o -4 addr; ping -c1 -W2 172.16.0.1 >/dev/null 2>&1 && echo reached; true",
    )
    .ok();
    assert!(
        o.stdout.contains("127.0.0.1")
            && !o.stdout.contains("172.16.")
            && !o.stdout.contains("reached"),
        "{o}"
    );
    let o = d
        .hyper(&[
            "create",
            "--network",
            "none",
            "-p",
            "80:80",
            "busybox",
            "true",
        ])
        .run();
    assert_ne!(o.code, 0, "{o}");

    // The IP is the container's for life.
    d.hyper(&["stop", "-t", "1", "db"]).timeout(60.0).run().ok();
    d.hyper(&["start", "db"]).timeout(120.0).run().ok();
    assert_eq!(d.inspect("db")["NetworkSettings"]["IPAddress"], ip.as_str());

    // Published ports, from the node: a fixed one and a random one (-P of an exposed port).
    let w = web(
        d,
        &["--name", "pub", "-p", "18080:80", "--expose", "81", "-P"],
    );
    let o = d.hyper(&["port", "pub", "80"]).run().ok();
    assert_eq!(o.out(), "0.0.0.0:18080");
    let body = wait_for("the published port to answer", secs(30.0), || {
        d.node.run(|| http_get("127.0.0.1:18080", "/hostname"))
    });
    assert_eq!(body.trim(), w);
    let o = d.hyper(&["port", "pub"]).run().ok();
    assert!(o.stdout.contains("81/tcp -> 0.0.0.0:"), "{o}");
    let ps = d.hyper(&["ps", "--filter", "name=pub"]).run().ok();
    assert!(ps.stdout.contains("0.0.0.0:18080->80/tcp"), "{ps}");
    // A host port is the container's alone.
    let o = d
        .hyper(&["run", "-d", "-p", "18080:80", "busybox", "true"])
        .run()
        .code(125);
    assert!(o.stderr.contains("port is already allocated"), "{o}");
    let o = d
        .hyper(&["run", "-d", "-p", "99999:80", "busybox", "true"])
        .run();
    assert_ne!(o.code, 0, "{o}");

    // A user network (what compose makes): aliases resolve inside it, not from outside it.
    let o = d
        .hyper(&["network", "create", "--subnet", "172.16.5.0/24", "clash"])
        .run();
    assert!(o.code != 0 && o.stderr.contains("overlaps"), "{o}");
    let o = d
        .hyper(&["network", "create", "--subnet", "10.5.0.7/24", "sloppy"])
        .run();
    assert!(o.code != 0 && o.stderr.contains("10.5.0.0/24"), "{o}");
    d.docker(&["network", "create", "proj"]).run().ok();
    let api = web(
        d,
        &[
            "--name",
            "api1",
            "--network",
            "proj",
            "--network-alias",
            "api",
        ],
    )
    .to_string();
    let o = sh(d, &["--network", "proj"], "wget -qO- http://api/hostname").ok();
    assert_eq!(o.out(), api);
    let o = sh(
        d,
        &[],
        "nslookup api1 172.16.0.1 >/dev/null 2>&1 && echo found || echo missing",
    )
    .ok();
    assert_eq!(
        o.out(),
        "missing",
        "a name of another network resolved: {o}"
    );
    let o = d.docker(&["network", "rm", "proj"]).run();
    assert_ne!(o.code, 0, "a network in use was removed: {o}");
    d.hyper(&["rm", "-f", "api1"]).timeout(60.0).run().ok();
    d.docker(&["network", "rm", "proj"]).run().ok();

    for c in ["db", "pub"] {
        d.hyper(&["rm", "-f", c]).timeout(60.0).run().ok();
    }
    // The host port is free again.
    let o = d
        .hyper(&[
            "create", "--name", "pub2", "-p", "18080:80", "busybox", "true",
        ])
        .run()
        .ok();
    assert!(!o.out().is_empty());
    d.hyper(&["rm", "pub2"]).run().ok();
}

/// A floating IP forwards the container's published ports from the internet, carries its
/// outbound traffic, and forwards nothing once detached or released.
fn floating_ips() {
    let d = daemon();
    let inet = Netns::internet("inet", &d.node, "hy-inet0", FIP_POOL);
    let w = web(d, &["--name", "fweb", "-p", "8081:80"]);
    let fip = d.hyper(&["fip", "allocate", "1"]).run().ok().out();
    assert!(fip.starts_with("198.51.100."), "{fip}");
    d.hyper(&["fip", "attach", &fip, "fweb"]).run().ok();
    let ls = d.hyper(&["fip", "ls"]).run().ok();
    assert!(
        ls.stdout.contains(&fip) && ls.stdout.contains("fweb"),
        "{ls}"
    );
    let from_internet = |path: &str| inet.run(|| http_get(&format!("{fip}:8081"), path));
    let body = wait_for("the FIP to answer", secs(30.0), || {
        from_internet("/hostname")
    });
    assert_eq!(body.trim(), w);
    // A container of the same network reaches it through the FIP too (hairpin).
    let o = sh(
        d,
        &[],
        &format!("timeout 10 wget -qO- http://{fip}:8081/hostname"),
    );
    assert_eq!(o.ok().out(), w);
    // An unpublished port is not reachable through the FIP.
    assert!(inet
        .run(|| http_get(&format!("{fip}:80"), "/hostname"))
        .is_err());

    // Outbound from the holder leaves from the FIP.
    let listener = inet.run(|| std::net::TcpListener::bind("203.0.113.2:9000").unwrap());
    let accepted =
        std::thread::spawn(move || listener.accept().map(|(_, peer)| peer.ip().to_string()));
    d.hyper(&["exec", "fweb", "sh", "-c", "echo hi | nc 203.0.113.2 9000"])
        .timeout(60.0)
        .run();
    assert_eq!(accepted.join().unwrap().unwrap(), fip);

    // One FIP per container; a FIP of nobody's is not found; the quota holds.
    let second = d.hyper(&["fip", "allocate", "1"]).run().ok().out();
    let o = d.hyper(&["fip", "attach", &second, "fweb"]).run();
    assert!(
        o.code != 0 && o.stderr.contains("already has floating IP"),
        "{o}"
    );
    let o = d.hyper(&["fip", "attach", "198.51.100.6", "fweb"]).run();
    assert!(o.code != 0 && o.stderr.contains("not found"), "{o}");
    let o = d.hyper(&["fip", "allocate", "1"]).run();
    assert!(o.code != 0 && o.stderr.contains("quota"), "{o}");
    d.hyper(&["fip", "release", &second]).run().ok();

    // Detached: nothing; attached again (stop/start keeps it): answers; released: nothing.
    let o = d.hyper(&["fip", "detach", "fweb"]).run().ok();
    assert_eq!(o.out(), fip);
    assert!(
        from_internet("/hostname").is_err(),
        "a detached FIP still forwards"
    );
    d.hyper(&["fip", "associate", &fip, "fweb"]).run().ok();
    d.hyper(&["stop", "-t", "1", "fweb"])
        .timeout(60.0)
        .run()
        .ok();
    d.hyper(&["start", "fweb"]).timeout(120.0).run().ok();
    wait_for("the FIP to answer again", secs(30.0), || {
        from_internet("/hostname")
    });
    d.hyper(&["fip", "release", &fip]).run().ok();
    assert!(
        from_internet("/hostname").is_err(),
        "a released FIP still forwards"
    );
    d.hyper(&["rm", "-f", "fweb"]).timeout(60.0).run().ok();
}

/// Rules allow and deny what they say, a live update applies without a restart, a group in
/// use cannot be removed.
fn security_groups() {
    let d = daemon();
    let dir = short_tmp("sg");
    std::fs::create_dir_all(&dir).unwrap();
    let rules = dir.join("web.yaml");
    let write = |ports: &str| {
        std::fs::write(
            &rules,
            format!("name: websg\ndescription: web\nrules:\n{ports}"),
        )
        .unwrap()
    };
    write("- direction: ingress\n  protocol: tcp\n  port_range_min: 80\n  port_range_max: 80\n  remote_ip_prefix: 0.0.0.0/0\n");
    let o = d
        .hyper(&["sg", "create", "-f", rules.to_str().unwrap(), "other"])
        .run();
    assert_ne!(o.code, 0, "a file naming another group was accepted: {o}");
    d.hyper(&["sg", "create", "-f", rules.to_str().unwrap(), "websg"])
        .run()
        .ok();
    let o = d
        .hyper(&["run", "-d", "--sg", "nosuch", "busybox", "true"])
        .run();
    assert!(o.code != 0 && o.stderr.contains("nosuch"), "{o}");

    let id = d
        .hyper(&[
            "run",
            "-d",
            "--name",
            "guarded",
            "--sg",
            "websg",
            "busybox",
            "sh",
            "-c",
            "httpd -p 80 -h /etc; httpd -p 81 -h /etc; sleep 100000",
        ])
        .timeout(120.0)
        .run()
        .ok()
        .out();
    let probe = |port: u16| {
        sh(
            d,
            &[],
            &format!("timeout 5 wget -qO- http://guarded:{port}/hostname || echo blocked"),
        )
        .ok()
        .out()
    };
    assert_eq!(probe(80), id[..12], "port 80 is allowed");
    assert_eq!(probe(81), "blocked", "port 81 is not");
    // No egress rule: no outbound (names still resolve: the gateway's DNS is always open).
    let peer = web(d, &["--name", "sgpeer"]);
    let o = d
        .hyper(&[
            "exec",
            "guarded",
            "sh",
            "-c",
            "timeout 5 wget -qO- http://sgpeer/hostname || echo no-out",
        ])
        .timeout(60.0)
        .run();
    assert!(
        o.stdout.contains("no-out") && !o.stdout.contains(&peer),
        "{o}"
    );
    d.hyper(&["rm", "-f", "sgpeer"]).timeout(60.0).run().ok();

    write("- direction: ingress\n  protocol: tcp\n  port_range_min: 80\n  port_range_max: 81\n");
    d.hyper(&["sg", "update", "-f", rules.to_str().unwrap(), "websg"])
        .run()
        .ok();
    assert_eq!(
        probe(81),
        id[..12],
        "the update applies to a running member"
    );

    let o = d.hyper(&["sg", "rm", "websg"]).run();
    assert!(o.code != 0 && o.stderr.contains("in use"), "{o}");
    let o = d
        .hyper(&["sg", "inspect", "websg", "-o", "json"])
        .run()
        .ok();
    assert!(o.stdout.contains("port_range_max"), "{o}");
    d.hyper(&["update", "--sg-rm", "websg", "guarded"])
        .run()
        .ok();
    assert_eq!(probe(82).trim(), "blocked"); // nothing listens on 82: refused, not hanging
    d.hyper(&["sg", "rm", "websg"]).run().ok();
    d.hyper(&["rm", "-f", "guarded"]).timeout(60.0).run().ok();
    let _ = std::fs::remove_dir_all(dir);
}

/// Two tenants on the same subnet, and on different ones, cannot reach each other at all.
fn tenant_isolation() {
    let d = daemon();
    let (b, _) = d.new_tenant("tb");
    d.hyper_tcp(&b, &["load", "-i", busybox_tar().to_str().unwrap()])
        .timeout(120.0)
        .run()
        .ok();
    let b_web = |extra: &[&str]| {
        let mut args = vec!["run", "-d", "--hostname", "tenant-b-web"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["busybox", "httpd", "-f", "-p", "80", "-h", "/etc"]);
        let id = d.hyper_tcp(&b, &args).timeout(120.0).run().ok().out();
        let v = d.hyper_tcp(&b, &["inspect", &id]).run().ok().json();
        v[0]["NetworkSettings"]["IPAddress"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let same_subnet = b_web(&["--name", "bweb1"]);
    assert!(same_subnet.starts_with("172.16."));
    d.hyper_tcp(
        &b,
        &["network", "create", "--subnet", "10.77.0.0/24", "bnet"],
    )
    .run()
    .ok();
    let other_subnet = b_web(&["--name", "bweb2", "--network", "bnet"]);
    assert!(other_subnet.starts_with("10.77.0."), "{other_subnet}");
    // B's own containers reach it (the servers are up).
    let o = d
        .hyper_tcp(
            &b,
            &[
                "run",
                "--rm",
                "busybox",
                "wget",
                "-qO-",
                &format!("http://{same_subnet}/hostname"),
            ],
        )
        .timeout(120.0)
        .run()
        .ok();
    assert_eq!(o.out(), "tenant-b-web");
    // Tenant A sees nothing of them: not by TCP, not by ping (the other subnet is routed
    // towards the node, which drops it).
    let o = sh(
        d,
        &[],
        &format!(
            "timeout 5 wget -qO- http://{same_subnet}/hostname; timeout 5 wget -qO- http://{other_subnet}/hostname; ping -c1 -W2 {other_subnet} >/dev/null && echo reached; echo done"
        ),
    )
    .ok();
    assert!(
        !o.stdout.contains("tenant-b-web") && !o.stdout.contains("reached"),
        "{o}"
    );
    assert!(o.stdout.contains("done"), "{o}");
    // Nor can a container reach the node itself: a service listening on all the node's
    // addresses (its transit ends included) stays out of reach.
    let node_service = d
        .node
        .run(|| std::net::TcpListener::bind("0.0.0.0:0").unwrap());
    let port = node_service.local_addr().unwrap().port();
    let o = sh(
        d,
        &[],
        &format!("for n in 100.127.0.0 100.127.0.2 172.16.0.1; do timeout 5 nc $n {port} </dev/null && echo reached; done; echo done"),
    )
    .ok();
    assert!(
        !o.stdout.contains("reached") && o.stdout.contains("done"),
        "{o}"
    );
    drop(node_service);
    // Tenant B's things go with it (the harness only sees the default tenant's).
    d.hyper_tcp(&b, &["rm", "-f", "bweb1", "bweb2"])
        .timeout(60.0)
        .run()
        .ok();
    d.hyper_tcp(&b, &["network", "rm", "bnet"]).run().ok();
}

/// Names, container-to-container traffic and published ports keep working while hyperd is
/// down (nothing on the data path lives in its process), and a restarted hyperd rebuilds the
/// same state from its store.
fn data_path_outlives_hyperd() {
    let dd = Daemon::start("r", DaemonOpts::default());
    let d: &Daemon = &dd;
    let db = web(d, &["--name", "db", "-p", "18090:80"]);
    let prober = d
        .hyper(&[
            "run",
            "-d",
            "--name",
            "prober",
            "busybox",
            "sh",
            "-c",
            "while true; do wget -qO- http://db/hostname || echo FAIL; sleep 0.5; done",
        ])
        .timeout(120.0)
        .run()
        .ok()
        .out();
    wait_for("the prober to reach db", secs(30.0), || {
        let o = d.hyper(&["logs", "prober"]).run().ok();
        if o.stdout.contains(&db) {
            Ok(())
        } else {
            Err(o.stdout)
        }
    });
    d.kill9();
    let dns = processes_mentioning(&format!("{}/net/", d.data.display()));
    assert!(
        dns.iter().any(|p| p.contains("hyper-dns")),
        "the tenant DNS died with hyperd: {dns:?}"
    );
    for _ in 0..4 {
        let body = d.node.run(|| http_get("127.0.0.1:18090", "/hostname"));
        assert_eq!(body.unwrap().trim(), db);
        std::thread::sleep(secs(1.0));
    }
    d.restart();
    let o = d.hyper(&["logs", "prober"]).run().ok();
    assert!(
        !o.stdout.contains("FAIL"),
        "the prober failed while hyperd was away: {o}"
    );
    assert!(o.stdout.matches(db.as_str()).count() >= 6, "{o}");
    // Rebuilt, not duplicated: new containers join the same network and names.
    let o = sh(d, &[], "wget -qO- http://db/hostname").ok();
    assert_eq!(o.out(), db);
    let body = d.node.run(|| http_get("127.0.0.1:18090", "/hostname"));
    assert_eq!(body.unwrap().trim(), db);
    d.hyper(&["rm", "-f", "db", &prober])
        .timeout(60.0)
        .run()
        .ok();
}

/// docker-compose (Debian's, v1) brings a two-service project up on hyperd: it creates the
/// project network, the services find each other by service name, ports are published, and
/// `down` removes containers and network.
fn compose_project() {
    let d = daemon();
    let dir = short_tmp("cmp");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("docker-compose.yml"),
        "version: \"3\"\nservices:\n  db:\n    image: busybox\n    command: httpd -f -p 80 -h /etc\n  web:\n    image: busybox\n    command: sh -c \"until wget -qO- http://db/hostname; do sleep 1; done; sleep 1000\"\n    ports:\n      - \"18089:80\"\n    depends_on: [db]\n",
    )
    .unwrap();
    let compose = |args: &[&str]| {
        let mut a = vec!["--project-directory", dir.to_str().unwrap(), "-p", "shop"];
        a.extend_from_slice(args);
        Cmd::new("docker-compose", &a)
            .env("DOCKER_HOST", d.unix_host())
            .timeout(180.0)
            .run()
    };
    compose(&[
        "-f",
        dir.join("docker-compose.yml").to_str().unwrap(),
        "up",
        "-d",
    ])
    .ok();
    let o = d
        .docker(&["network", "ls", "--format", "{{.Name}}"])
        .run()
        .ok();
    assert!(o.stdout.contains("shop_default"), "{o}");
    let db = d.id_of("shop_db_1")[..12].to_string();
    wait_for("web to reach db by its service name", secs(60.0), || {
        let o = d.hyper(&["logs", "shop_web_1"]).run().ok();
        if o.stdout.contains(&db) {
            Ok(())
        } else {
            Err(o.to_string())
        }
    });
    assert_eq!(
        d.hyper(&["port", "shop_web_1", "80"]).run().ok().out(),
        "0.0.0.0:18089"
    );
    compose(&[
        "-f",
        dir.join("docker-compose.yml").to_str().unwrap(),
        "down",
    ])
    .ok();
    let o = d
        .docker(&["network", "ls", "--format", "{{.Name}}"])
        .run()
        .ok();
    assert!(!o.stdout.contains("shop_default"), "{o}");
    let _ = std::fs::remove_dir_all(dir);
}

/// A name the tenant's DNS does not have, of the tenant's own kind (one label, where container
/// and service names live), gets NXDOMAIN at once from the tenant's DNS instead of going to
/// the node's resolvers (unreachable from these tests' namespace: the client used to time out).
fn unknown_names_are_nxdomain() {
    let d = daemon();
    let o = d
        .hyper(&["run", "--rm", "busybox", "nslookup", "nosuchname"])
        .timeout(120.0)
        .run();
    let all = format!("{}{}", o.stdout, o.stderr);
    assert!(
        all.contains("server can't find nosuchname") && all.contains("NXDOMAIN"),
        "{o}"
    );
    assert!(!all.contains("timed out"), "{o}");
    assert_eq!(o.code, 1, "{o}");
}
