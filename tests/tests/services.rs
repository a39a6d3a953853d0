//! Services end to end (issue 6): replicas behind the tenant's balancer, healed when their VM
//! is killed or their health checks fail, scaled, rolled to a new image while a client that
//! never retries keeps getting answers, and TLS terminated with the service's certificate.

use std::collections::BTreeMap;

use e2e::*;
use serde_json::Value;

fn main() {
    let tests: &[(&'static str, TestFn)] = &[
        (
            "http_service_heals_scales_and_rolls",
            http_service_heals_scales_and_rolls,
        ),
        (
            "https_termination_through_a_fip",
            https_termination_through_a_fip,
        ),
        (
            "service_on_a_removed_containers_address",
            service_on_a_removed_containers_address,
        ),
        (
            "tcp_service_balanced_by_the_kernel",
            tcp_service_balanced_by_the_kernel,
        ),
    ];
    std::process::exit(run_tests(tests));
}

const FIP_POOL: &str = "198.51.100.8/29";

fn daemon() -> &'static Daemon {
    static D: std::sync::OnceLock<std::sync::Arc<Daemon>> = std::sync::OnceLock::new();
    D.get_or_init(|| {
        Daemon::start(
            "s",
            DaemonOpts {
                extra_args: vec!["--fip-pool".into(), FIP_POOL.into()],
                ..DaemonOpts::default()
            },
        )
    })
}

/// Each replica serves its own hostname (its short id) over HTTP on port 80, and
/// `/cgi-bin/slow?N` answers "N hostname" (on a replica given /w/slow, only after noting N in
/// /w/started and sleeping 10 minutes).
const SERVE: &str = r#"mkdir -p /w/cgi-bin && hostname > /w/index.html && printf '%s\n' '#!/bin/sh' 'if [ -e /w/slow ]; then echo "$QUERY_STRING" > /w/started; sleep 600; fi' 'printf "Content-Type: text/plain\r\n\r\n%s %s\n" "$QUERY_STRING" "$(hostname)"' > /w/cgi-bin/slow && chmod +x /w/cgi-bin/slow && httpd -f -p 80 -h /w"#;

fn inspect_service(d: &Daemon, name: &str) -> Value {
    d.hyper(&["service", "inspect", name]).run().ok().json()[0].clone()
}

/// Running replicas (names) of the service.
fn running_replicas(d: &Daemon, name: &str) -> Vec<String> {
    inspect_service(d, name)["Containers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["State"] == "running")
        .map(|c| c["Name"].as_str().unwrap().to_string())
        .collect()
}

/// Waits until the service is `running` with `n` replicas.
fn wait_settled(d: &Daemon, name: &str, n: usize) {
    wait_for(&format!("{name} to run {n} replicas"), secs(180.0), || {
        let v = inspect_service(d, name);
        let running = running_replicas(d, name).len();
        if v["Status"] == "running"
            && running == n
            && v["Containers"].as_array().unwrap().len() == n
        {
            Ok(())
        } else {
            Err(format!("{} {running}: {}", v["Status"], v["Message"]))
        }
    });
}

/// The client's verdicts so far: OK and FAIL counts.
fn client_counts(d: &Daemon) -> BTreeMap<String, usize> {
    let o = d.hyper(&["logs", "client"]).run().ok();
    let mut m = BTreeMap::new();
    for l in o.stdout.lines() {
        *m.entry(l.split_whitespace().next().unwrap_or("").to_string())
            .or_default() += 1;
    }
    m
}

fn http_service_heals_scales_and_rolls() {
    // Its own daemon: this test kills it.
    let dd = Daemon::start("h", DaemonOpts::default());
    let d: &Daemon = &dd;
    d.http_service("web", 3, SERVE).run().ok();
    wait_settled(d, "web", 3);
    let v = inspect_service(d, "web");
    assert!(v["IP"].as_str().unwrap().starts_with("172.16."), "{v}");

    // Requests by the service's name spread over the three replicas.
    let o = d
        .hyper(&[
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8 9; do wget -qO- http://web/; done",
        ])
        .timeout(120.0)
        .run()
        .ok();
    let seen: std::collections::BTreeSet<&str> = o.stdout.lines().collect();
    assert_eq!(
        seen.len(),
        3,
        "requests did not spread over 3 replicas: {o}"
    );

    // A client that never retries, for the rest of the test.
    d.hyper(&[
        "run", "-d", "--name", "client", "busybox", "sh", "-c",
        "while true; do if wget -qO- http://web/ >/dev/null 2>&1; then echo OK; else echo FAIL; fi; sleep 0.2; done",
    ])
    .timeout(120.0)
    .run()
    .ok();

    // A replica's VM killed from outside hyperd while requests wait for its answers (its tap
    // goes with it, so nothing ever resets their connections): each is answered by another
    // replica, and the killed one is replaced.
    let victim = running_replicas(d, "web")[0].clone();
    let id = d.id_of(&victim);
    d.hyper(&["exec", &victim, "touch", "/w/slow"]).run().ok();
    d.hyper(&[
        "run", "-d", "--name", "slowclient", "busybox", "sh", "-c",
        "i=0; while true; do i=$((i+1)); (wget -qO- http://web/cgi-bin/slow?$i || echo FAIL $i) & sleep 0.3; done",
    ])
    .timeout(120.0)
    .run()
    .ok();
    let hung = wait_for("a request to wait on the replica", secs(60.0), || {
        let o = d.hyper(&["exec", &victim, "cat", "/w/started"]).run();
        match o.stdout.trim() {
            n if o.code == 0 && !n.is_empty() => Ok(n.to_string()),
            _ => Err(o.to_string()),
        }
    });
    for p in container_processes(d, &id)
        .iter()
        .filter(|p| p.contains("qemu-system"))
    {
        let pid: i32 = p.split_whitespace().next().unwrap().parse().unwrap();
        // SAFETY: kill(2) on a QEMU of this test's daemon.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let answer = wait_for(
        &format!("request {hung}, waiting on the killed replica, to be answered"),
        secs(90.0),
        || {
            let o = d.hyper(&["logs", "slowclient"]).run().ok();
            let answer = o
                .stdout
                .lines()
                .find(|l| l.split_whitespace().find(|w| *w != "FAIL") == Some(hung.as_str()));
            answer.map(str::to_string).ok_or_else(|| o.to_string())
        },
    );
    assert!(
        !answer.starts_with("FAIL") && !answer.ends_with(&id[..12]),
        "request {hung} was not answered by another replica: {answer}"
    );
    d.hyper(&["rm", "-f", "slowclient"])
        .timeout(60.0)
        .run()
        .ok();
    wait_for("the killed replica to be replaced", secs(120.0), || {
        let r = running_replicas(d, "web");
        if r.len() == 3 && !r.contains(&victim) {
            Ok(())
        } else {
            Err(format!("{r:?}"))
        }
    });
    wait_settled(d, "web", 3);

    // hyperd killed: the balancer and its health checks carry on; a replica whose VM dies
    // meanwhile is replaced once hyperd is back (the reconciler works from the store).
    let victim = running_replicas(d, "web")[0].clone();
    let id = d.id_of(&victim);
    assert_service_events(d, &["create", "heal"]);
    d.kill9();
    for p in container_processes(d, &id)
        .iter()
        .filter(|p| p.contains("qemu-system"))
    {
        let pid: i32 = p.split_whitespace().next().unwrap().parse().unwrap();
        // SAFETY: kill(2) on a QEMU of this test's daemon.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    std::thread::sleep(secs(5.0));
    d.restart();
    wait_for(
        "the replica killed while hyperd was down to be replaced",
        secs(120.0),
        || {
            let r = running_replicas(d, "web");
            if r.len() == 3 && !r.contains(&victim) {
                Ok(())
            } else {
                Err(format!("{r:?}"))
            }
        },
    );
    wait_settled(d, "web", 3);
    let fails = client_counts(d).get("FAIL").copied().unwrap_or(0);
    assert_eq!(
        fails, 0,
        "requests failed around hyperd's restart or a dead replica"
    );

    // Replicas protected through the service: a scale-down that would remove one is refused.
    // (Labels reach every new replica; here the running ones are marked directly.)
    for r in running_replicas(d, "web") {
        d.hyper(&["update", "--protection=true", &r]).run().ok();
    }
    let o = d.hyper(&["service", "scale", "web=1"]).run();
    assert!(o.code != 0 && o.stderr.contains("protected"), "{o}");
    for r in running_replicas(d, "web") {
        d.hyper(&["update", "--protection=false", &r]).run().ok();
    }

    // A replica failing its health checks stops getting requests, then is replaced.
    let sick = running_replicas(d, "web")[0].clone();
    d.hyper(&["exec", &sick, "rm", "/w/index.html"]).run().ok();
    wait_for("the unhealthy replica to be replaced", secs(120.0), || {
        let r = running_replicas(d, "web");
        if !r.contains(&sick) {
            Ok(())
        } else {
            Err(format!("{r:?}"))
        }
    });
    wait_settled(d, "web", 3);
    let before = client_counts(d);

    // Scale 3 -> 5 -> 1, then a rolling update to another image, the client running.
    d.hyper(&["service", "scale", "web=5"]).run().ok();
    wait_settled(d, "web", 5);
    d.hyper(&["service", "scale", "web=1"]).run().ok();
    wait_settled(d, "web", 1);
    d.hyper(&["service", "scale", "web=2"]).run().ok();
    wait_settled(d, "web", 2);
    d.hyper(&["tag", "busybox", "busybox:v2"]).run().ok();
    d.hyper(&["service", "rolling-update", "--image", "busybox:v2", "web"])
        .run()
        .ok();
    wait_for("the rolling update", secs(180.0), || {
        let v = inspect_service(d, "web");
        let all_new = v["Containers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["Generation"] == "2");
        if all_new && v["Status"] == "running" {
            Ok(())
        } else {
            Err(v.to_string())
        }
    });
    // Enough requests to tell: the phase may be over before the client made many (starts are
    // quick), so count on until it has, still without a failure.
    let since = |after: &BTreeMap<String, usize>, k: &str| {
        after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0)
    };
    let after = wait_for(
        "20 client requests since the scaling began",
        secs(120.0),
        || {
            let after = client_counts(d);
            if since(&after, "OK") > 20 || since(&after, "FAIL") > 0 {
                Ok(after)
            } else {
                Err(format!("{after:?}"))
            }
        },
    );
    assert_eq!(
        since(&after, "FAIL"),
        0,
        "requests failed during scaling and the rolling update: {after:?}"
    );

    // Service events came from the reconciler (since hyperd's restart: the window is in memory).
    assert_service_events(d, &["heal", "scale", "update"]);

    // Gone with its replicas.
    d.hyper(&["service", "rm", "web"]).timeout(120.0).run().ok();
    let o = d.hyper(&["ps", "-a", "--format", "{{.Names}}"]).run().ok();
    assert!(!o.stdout.contains("web-"), "{o}");
    d.hyper(&["rm", "-f", "client"]).timeout(60.0).run().ok();
}

fn assert_service_events(d: &Daemon, actions: &[&str]) {
    // `until` is whole seconds: one second ahead keeps this second's events in.
    let until = (chrono::Utc::now().timestamp() + 1).to_string();
    let o = d
        .hyper(&[
            "events",
            "--since",
            "1",
            "--until",
            &until,
            "--filter",
            "type=service",
        ])
        .run()
        .ok();
    for action in actions {
        assert!(
            o.stdout.contains(&format!("service {action} web")),
            "no {action} event: {o}"
        );
    }
}

fn https_termination_through_a_fip() {
    let d = daemon();
    let dir = short_tmp("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
    Cmd::new(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=shop.test",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ],
    )
    .run()
    .ok();
    let pem = dir.join("both.pem");
    let both = std::fs::read_to_string(&cert).unwrap() + &std::fs::read_to_string(&key).unwrap();
    std::fs::write(&pem, both).unwrap();
    d.hyper(&[
        "service",
        "create",
        "--name",
        "shop",
        "--replicas",
        "1",
        "--service-port",
        "443",
        "--container-port",
        "80",
        "--protocol",
        "httpsTerm",
        "--ssl-cert",
        pem.to_str().unwrap(),
        "--health-check-interval",
        "1",
        "busybox",
        "sh",
        "-c",
        SERVE,
    ])
    .run()
    .ok();
    wait_settled(d, "shop", 1);
    let replica = running_replicas(d, "shop")[0].clone();
    let short = d.id_of(&replica)[..12].to_string();

    let inet = Netns::internet("sinet", &d.node, "hy-sinet0", FIP_POOL);
    let fip = d.hyper(&["fip", "allocate", "1"]).run().ok().out();
    d.hyper(&["service", "attach-fip", "--fip", &fip, "shop"])
        .run()
        .ok();
    assert_eq!(inspect_service(d, "shop")["FIP"], fip.as_str());

    // From the internet: TLS with the service's certificate, answered by the replica.
    let curl = |extra: &[&str]| {
        let mut a = vec![
            "netns",
            "exec",
            &inet.name,
            "curl",
            "-s",
            "--max-time",
            "10",
        ];
        a.extend_from_slice(extra);
        Cmd::new("ip", &a).run()
    };
    let url = "https://shop.test/".to_string();
    let resolve = format!("shop.test:443:{fip}");
    let o = wait_for("the service's FIP to answer over TLS", secs(60.0), || {
        let o = curl(&[
            "--cacert",
            cert.to_str().unwrap(),
            "--resolve",
            &resolve,
            &url,
        ]);
        if o.code == 0 {
            Ok(o)
        } else {
            Err(o.to_string())
        }
    });
    assert_eq!(o.out(), short, "{o}");
    d.hyper(&["service", "detach-fip", "shop"]).run().ok();
    let o = curl(&["-k", "--resolve", &resolve, &url]);
    assert_ne!(o.code, 0, "a detached FIP still forwards: {o}");
    d.hyper(&["fip", "release", &fip]).run().ok();
    d.hyper(&["service", "rm", "shop"])
        .timeout(120.0)
        .run()
        .ok();
    let _ = std::fs::remove_dir_all(dir);
}

/// A service created right after a container was removed takes the container's address for its
/// VIP while the tenant's namespace is up all along: the VIP goes on the bridge, the balancer
/// binds it and the service comes up (it used to wait for its replicas forever, the balancer
/// failing with "Cannot assign requested address"). Removed, the service takes its VIP off the
/// bridge, and the next container on that address is reached. Its own tenant, so that the
/// namespace and its addresses are this test's alone.
fn service_on_a_removed_containers_address() {
    let d = daemon();
    let (cfg, _) = d.new_tenant("vipreuse");
    let h = |args: &[&str]| d.hyper_tcp(&cfg, args).timeout(120.0).run();
    h(&["load", "-i", busybox_tar().to_str().unwrap()]).ok();
    let ip_of = |name: &str| {
        h(&["inspect", name]).ok().json()[0]["NetworkSettings"]["IPAddress"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let id = h(&["run", "-d", "busybox", "sleep", "600"]).ok().out();
    let ip = ip_of(&id);
    h(&["rm", "-f", &id]).ok();

    let args = service_create_args("reuse", 1, "http", &[], SERVE);
    h(&args.iter().map(String::as_str).collect::<Vec<_>>()).ok();
    let inspect = || h(&["service", "inspect", "reuse"]).ok().json()[0].clone();
    assert_eq!(
        inspect()["IP"],
        ip.as_str(),
        "the VIP is not the removed container's address"
    );
    wait_for("the service to come up", secs(180.0), || {
        let v = inspect();
        if v["Status"] == "running" {
            Ok(())
        } else {
            Err(format!("{} {}", v["Status"], v["Message"]))
        }
    });
    let hostname = |name: &str| {
        h(&["inspect", name]).ok().json()[0]["Config"]["Hostname"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let replica = inspect()["Containers"][0]["Name"]
        .as_str()
        .unwrap()
        .to_string();
    let o = h(&["run", "--rm", "busybox", "wget", "-qO-", "http://reuse/"]).ok();
    assert_eq!(
        o.out(),
        hostname(&replica),
        "the service did not answer: {o}"
    );

    // The VIP goes with the service: a container on that address again is reached there.
    h(&["service", "rm", "reuse"]).ok();
    h(&[
        "run", "-d", "--name", "back", "busybox", "httpd", "-f", "-p", "80", "-h", "/etc",
    ])
    .ok();
    assert_eq!(
        ip_of("back"),
        ip,
        "the address was not given to the next container"
    );
    let o = h(&[
        "run",
        "--rm",
        "busybox",
        "wget",
        "-qO-",
        &format!("http://{ip}/hostname"),
    ])
    .ok();
    assert_eq!(o.out(), hostname("back"), "{o}");
    h(&["rm", "-f", "back"]).ok();
}

/// A `tcp` service balanced round robin is balanced by the kernel in the tenant's namespace
/// (the balancer's table holds a DNAT to each healthy replica): connections from a container
/// reach both replicas, also when the replicas' security group admits nothing (no group
/// filters a service's connections, copied or DNATed), and a replica taken out is out of the
/// table. Its own tenant, so that the namespace is this test's alone.
fn tcp_service_balanced_by_the_kernel() {
    let d = daemon();
    let (cfg, _) = d.new_tenant("kernlb");
    let h = |args: &[&str]| d.hyper_tcp(&cfg, args).timeout(120.0).run();
    h(&["load", "-i", busybox_tar().to_str().unwrap()]).ok();
    let dir = short_tmp("klb");
    std::fs::create_dir_all(&dir).unwrap();
    let closed = dir.join("closed.yaml");
    std::fs::write(
        &closed,
        "name: closed\ndescription: admits nothing\nrules: []\n",
    )
    .unwrap();
    h(&["sg", "create", "-f", closed.to_str().unwrap(), "closed"]).ok();
    std::fs::remove_dir_all(&dir).unwrap();
    let args = service_create_args("kern", 2, "tcp", &["--sg", "closed"], SERVE);
    h(&args.iter().map(String::as_str).collect::<Vec<_>>()).ok();
    let inspect = || h(&["service", "inspect", "kern"]).ok().json()[0].clone();
    // The replicas' addresses (one being replaced meanwhile may not be there yet: left out).
    let replica_ips = || -> Vec<String> {
        let v = inspect();
        v["Containers"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| {
                let o = h(&["inspect", c["Name"].as_str()?]);
                if o.code != 0 {
                    return None;
                }
                let ip = o.json()[0]["NetworkSettings"]["IPAddress"]
                    .as_str()?
                    .to_string();
                (!ip.is_empty()).then_some(ip)
            })
            .collect()
    };
    // The tenant's namespace: the one whose balancer config names this service.
    let ns = std::fs::read_dir(d.data.join("net"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| std::fs::read_to_string(p.join("lb.json")).is_ok_and(|c| c.contains("\"kern\"")))
        .expect("the tenant's namespace")
        .join("netns");
    let table = || {
        let net = format!("--net={}", ns.display());
        Cmd::new("nsenter", &[&net, "nft", "list", "table", "ip", "hyper-lb"])
            .run()
            .stdout
    };
    wait_for("both replicas in the kernel's table", secs(180.0), || {
        let (t, ips) = (table(), replica_ips());
        if ips.len() == 2 && ips.iter().all(|ip| t.contains(&format!("{ip} . 80"))) {
            Ok(())
        } else {
            Err(format!("{ips:?}\n{t}"))
        }
    });
    let o = h(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6; do wget -qO- http://kern/; done",
    ])
    .ok();
    let answered: std::collections::BTreeSet<&str> = o.stdout.lines().collect();
    assert_eq!(answered.len(), 2, "not both replicas answered: {o}");

    // Down to one replica: the other is out of the table, and still answers alone.
    h(&["service", "scale", "kern=1"]).ok();
    wait_for(
        "one replica left in the kernel's table",
        secs(120.0),
        || {
            let (t, ips) = (table(), replica_ips());
            let rules = t.matches(" . 80").count();
            if ips.len() == 1 && rules == 1 && t.contains(&format!("{} . 80", ips[0])) {
                Ok(())
            } else {
                Err(format!("{ips:?}\n{t}"))
            }
        },
    );
    let o = h(&["run", "--rm", "busybox", "wget", "-qO-", "http://kern/"]).ok();
    assert!(!o.out().is_empty(), "{o}");
    h(&["service", "rm", "kern"]).ok();
    h(&["sg", "rm", "closed"]).ok();
}
