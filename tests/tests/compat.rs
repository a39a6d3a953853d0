//! Docker compatibility (issue 15): behaviour the stock Docker CLI and docker-py rely on.

use std::sync::{Arc, OnceLock};

use e2e::*;

fn main() {
    let tests: &[(&'static str, TestFn)] = &[
        ("kill_returns_once_stopped", kill_returns_once_stopped),
        ("prune_endpoints", prune_endpoints),
        ("sizes_from_resource_flags", sizes_from_resource_flags),
        ("unserved_routes_answer", unserved_routes_answer),
    ];
    std::process::exit(run_tests(tests));
}

fn daemon() -> &'static Daemon {
    static D: OnceLock<Arc<Daemon>> = OnceLock::new();
    D.get_or_init(|| Daemon::start("k", DaemonOpts::default()))
}

/// `kill` with SIGKILL returns once the container has stopped, as Docker's does: an `inspect`
/// right after says exited and `rm` goes through. Another signal returns at once.
fn kill_returns_once_stopped() {
    let d = daemon();
    for client in ["hyper", "docker"] {
        let run = |args: &[&str]| match client {
            "hyper" => d.hyper(args).run(),
            _ => d.docker(args).run(),
        };
        let id = run(&["run", "-d", "busybox", "sleep", "600"]).ok().out();
        run(&["kill", &id]).ok();
        let state = run(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.ExitCode}}",
            &id,
        ])
        .ok()
        .out();
        assert_eq!(state, "exited 137", "{client}");
        run(&["rm", &id]).ok();
    }
    // SIGTERM to a shell that traps it: kill answers at once, the container keeps running.
    let id = d
        .hyper(&[
            "run",
            "-d",
            "busybox",
            "sh",
            "-c",
            "trap '' TERM; echo up; sleep 600",
        ])
        .run()
        .ok()
        .out();
    wait_for("the trap to be set", secs(60.0), || {
        let o = d.hyper(&["logs", &id]).run();
        if o.stdout.contains("up") {
            Ok(())
        } else {
            Err(o.to_string())
        }
    });
    d.hyper(&["kill", "-s", "TERM", &id]).run().ok();
    assert_eq!(d.inspect(&id)["State"]["Status"], "running");
    d.hyper(&["rm", "-f", &id]).run().ok();
}

/// `container prune`, `network prune` and `builder prune` through the stock Docker CLI: what is
/// stopped or unused goes, what runs or is used stays, protected containers stay.
fn prune_endpoints() {
    let d = daemon();
    let stopped = d
        .hyper(&["run", "-d", "--label", "p=1", "busybox", "true"])
        .run()
        .ok()
        .out();
    let kept = d
        .hyper(&["run", "-d", "--label", "p=2", "busybox", "true"])
        .run()
        .ok()
        .out();
    let running = d
        .hyper(&["run", "-d", "busybox", "sleep", "600"])
        .run()
        .ok()
        .out();
    let protected = d
        .hyper(&["create", "--protection=true", "busybox", "true"])
        .run()
        .ok()
        .out();
    d.wait_status(&stopped, "exited", 60.0);
    d.wait_status(&kept, "exited", 60.0);
    let o = d
        .docker(&["container", "prune", "-f", "--filter", "label!=p=2"])
        .run()
        .ok()
        .stdout;
    assert!(o.contains(&stopped), "{o}");
    let ids = d.hyper(&["ps", "-aq", "--no-trunc"]).run().ok().stdout;
    assert!(!ids.contains(&stopped), "{ids}");
    for (id, why) in [
        (&kept, "filtered out"),
        (&running, "running"),
        (&protected, "protected"),
    ] {
        assert!(ids.contains(id.as_str()), "{why} container pruned: {ids}");
    }

    d.hyper(&["network", "create", "unused-net"]).run().ok();
    d.hyper(&["network", "create", "used-net"]).run().ok();
    let on_net = d
        .hyper(&["create", "--network", "used-net", "busybox", "true"])
        .run()
        .ok()
        .out();
    let o = d.docker(&["network", "prune", "-f"]).run().ok().stdout;
    let lines: Vec<&str> = o.lines().collect();
    assert!(
        lines.contains(&"unused-net") && !lines.contains(&"used-net"),
        "{o}"
    );
    let nets = d
        .docker(&["network", "ls", "--format", "{{.Name}}"])
        .run()
        .ok()
        .stdout;
    let nets: Vec<&str> = nets.lines().collect();
    assert!(
        !nets.contains(&"unused-net") && nets.contains(&"used-net"),
        "{nets:?}"
    );
    assert!(
        nets.contains(&"bridge"),
        "the default network stays: {nets:?}"
    );

    let o = d.docker(&["builder", "prune", "-f"]).run().ok().stdout;
    assert!(o.contains("Total reclaimed space: 0B"), "{o}");

    d.hyper(&["update", "--protection=false", &protected])
        .run()
        .ok();
    for id in [&kept, &running, &protected, &on_net] {
        d.hyper(&["rm", "-f", id]).run().ok();
    }
    d.hyper(&["network", "rm", "used-net"]).run().ok();
}

/// Docker's `--memory` and `--cpus` choose the smallest size that holds them (inspect shows
/// it, the guest has its memory); beyond the largest size, or beside `--size`, a 400.
fn sizes_from_resource_flags() {
    let d = daemon();
    for (i, (flags, size)) in [
        (&["-m", "1g"][..], "m1"),
        (&["--cpus", "2"], "m2"),
        (&["-m", "3g", "--cpus", "3"], "l1"),
        (&["-m", "100m"], "s2"),
    ]
    .iter()
    .enumerate()
    {
        let mut args = vec!["create"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["busybox", "true"]);
        let id = d.docker(&args).run().ok().out();
        let c = d.inspect(&id);
        assert_eq!(c["HyperSize"], *size, "test[{i}] {flags:?}");
        assert_eq!(
            c["Config"]["Labels"]["sh_hyper_instancetype"], *size,
            "test[{i}]"
        );
        d.hyper(&["rm", &id]).run().ok();
    }
    let mem = d
        .docker(&[
            "run",
            "--rm",
            "-m",
            "1g",
            "busybox",
            "grep",
            "MemTotal",
            "/proc/meminfo",
        ])
        .run()
        .ok()
        .stdout;
    let kb: u64 = mem.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(kb > 900 * 1024 && kb < 1100 * 1024, "{mem}");
    let o = d.docker(&["create", "-m", "64g", "busybox", "true"]).run();
    assert!(o.code != 0 && o.stderr.contains("the largest, l3"), "{o}");
    let o = d
        .docker(&[
            "create",
            "-m",
            "1g",
            "--label",
            "sh_hyper_instancetype=s1",
            "busybox",
            "true",
        ])
        .run();
    assert!(o.code != 0 && o.stderr.contains("not both"), "{o}");
}

/// Paths hyper does not serve get Docker's JSON error and status after their body is read:
/// swarm's 503 (as a Docker engine outside a swarm), plugins' 501, anything else 404.
fn unserved_routes_answer() {
    let d = daemon();
    // A body of 1 MiB: it must be read before the answer, or curl sees a reset.
    let file = short_tmp("body");
    std::fs::write(&file, "x".repeat(1 << 20)).unwrap();
    let body = format!("@{}", file.display());
    for (i, (method, path, status, words)) in [
        ("POST", "/v1.44/swarm/init", "503", "not a swarm manager"),
        ("GET", "/v1.44/nodes", "503", "not a swarm manager"),
        ("GET", "/v1.44/plugins", "501", "plugins"),
        ("POST", "/v1.44/no/such/thing", "404", "page not found"),
    ]
    .iter()
    .enumerate()
    {
        let o = d.api(
            method,
            path,
            &["-H", "Content-Type: application/json", "-d", &body],
        );
        let (json, code) = o.stdout.rsplit_once('\n').unwrap();
        assert_eq!(code, *status, "test[{i}] {path}: {o}");
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert!(
            v["message"].as_str().unwrap().contains(words),
            "test[{i}]: {v}"
        );
    }
    let o = d.docker(&["node", "ls"]).run();
    assert!(
        o.code != 0 && o.stderr.contains("not a swarm manager"),
        "{o}"
    );
}
