//! Docker compatibility (issue 15): behaviour the stock Docker CLI and docker-py rely on.

use std::sync::{Arc, OnceLock};

use e2e::*;

fn main() {
    let tests: &[(&'static str, TestFn)] = &[
        ("kill_returns_once_stopped", kill_returns_once_stopped),
        ("pause_stops_the_whole_vm", pause_stops_the_whole_vm),
        ("stats_cpu_figures", stats_cpu_figures),
        ("exec_events_replay", exec_events_replay),
        ("prune_endpoints", prune_endpoints),
        ("sizes_from_resource_flags", sizes_from_resource_flags),
        ("unserved_routes_answer", unserved_routes_answer),
        ("restart_policies", restart_policies),
        (
            "restart_policy_backoff_and_stop",
            restart_policy_backoff_and_stop,
        ),
        (
            "restart_policies_across_hyperd_restarts",
            restart_policies_across_hyperd_restarts,
        ),
        ("health_checks", health_checks),
        ("compose_waits_for_healthy", compose_waits_for_healthy),
        ("compose_exec_on_a_terminal", compose_exec_on_a_terminal),
        (
            "detach_keys_leave_processes_running",
            detach_keys_leave_processes_running,
        ),
        (
            "attach_logs_and_exec_terminals",
            attach_logs_and_exec_terminals,
        ),
        ("nothing_silently_ignored", nothing_silently_ignored),
        ("links_as_dockerd_keeps_them", links_as_dockerd_keeps_them),
        ("tmpfs_in_the_vms_memory", tmpfs_in_the_vms_memory),
        ("log_options_rotate_logs", log_options_rotate_logs),
        ("group_add_for_every_process", group_add_for_every_process),
        ("network_connect_before_start", network_connect_before_start),
        (
            "a_broken_load_errs_in_its_stream",
            a_broken_load_errs_in_its_stream,
        ),
        (
            "inspect_info_version_match_dockerd",
            inspect_info_version_match_dockerd,
        ),
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
    std::fs::remove_file(&file).unwrap();
    let o = d.docker(&["node", "ls"]).run();
    assert!(
        o.code != 0 && o.stderr.contains("not a swarm manager"),
        "{o}"
    );
}

/// `State.Status` and `RestartCount` of a container, through the Docker CLI.
fn status_and_count(d: &Daemon, id: &str) -> (String, u64) {
    let out = d
        .docker(&["inspect", "-f", "{{.State.Status}} {{.RestartCount}}", id])
        .run()
        .ok()
        .out();
    let (status, count) = out.split_once(' ').unwrap();
    (status.to_string(), count.parse().unwrap())
}

/// `on-failure:N` restarts a failing container N times and then leaves it exited; a start by
/// the user resets the count (each run appends to a file of the container's own disk, which
/// outlives its restarts). An `always` container that exits at once is being restarted when
/// `docker wait` returns, so `rm` is refused as Docker refuses it (docker-py's test).
fn restart_policies() {
    let d = daemon();
    let script =
        "echo run; echo run >> /runs; [ $(wc -l < /runs) -ge 5 ] && exec sleep 600; exit 3";
    let id = d
        .docker(&[
            "run",
            "-d",
            "--restart",
            "on-failure:2",
            "busybox",
            "sh",
            "-c",
            script,
        ])
        .run()
        .ok()
        .out();
    wait_for(
        "on-failure:2 to give up",
        secs(120.0),
        || match status_and_count(d, &id) {
            (s, 2) if s == "exited" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    let v = d.inspect(&id);
    assert_eq!(v["State"]["ExitCode"], 3, "{v}");
    assert_eq!(
        v["HostConfig"]["RestartPolicy"]["MaximumRetryCount"], 2,
        "{v}"
    );
    // Three runs, the first and two restarts, in one log.
    let runs = d.docker(&["logs", &id]).run().ok().out();
    assert_eq!(runs.lines().count(), 3, "{runs}");
    // A start by the user resets the count: run 4 fails and is retried, run 5 stays up.
    d.docker(&["start", &id]).run().ok();
    wait_for(
        "the fifth run to stay up",
        secs(120.0),
        || match status_and_count(d, &id) {
            (s, 1) if s == "running" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    d.docker(&["rm", "-f", &id]).run().ok();

    // docker-py's test_create_with_restart_policy.
    let id = d
        .docker(&["run", "-d", "--restart", "always", "busybox", "sleep", "2"])
        .run()
        .ok()
        .out();
    d.docker(&["wait", &id]).timeout(60.0).run().ok();
    let o = d.docker(&["rm", &id]).run();
    assert_ne!(o.code, 0, "{o}");
    assert!(
        o.stderr
            .to_lowercase()
            .contains("stop the container before"),
        "{o}"
    );
    d.docker(&["rm", "-f", &id]).run().ok();
}

/// A container that keeps failing is restarted with a growing back-off, shown as
/// `restarting` (`Restarting (1) ...` in ps) between runs; exec then gets Docker's 409, and a
/// stop ends the restarts for good.
fn restart_policy_backoff_and_stop() {
    let d = daemon();
    let id = d
        .hyper(&[
            "run",
            "-d",
            "--restart",
            "always",
            "busybox",
            "sh",
            "-c",
            "exit 1",
        ])
        .run()
        .ok()
        .out();
    // The back-off doubles from 100 ms: after a few quick exits the waits outlast a boot.
    let seen =
        wait_for(
            "the container to wait for a restart",
            secs(180.0),
            || match status_and_count(d, &id) {
                (s, n) if s == "restarting" && n >= 3 => Ok(n),
                other => Err(format!("{other:?}")),
            },
        );
    let ps = d
        .docker(&[
            "ps",
            "-a",
            "--filter",
            &format!("id={id}"),
            "--format",
            "{{.Status}}",
        ])
        .run()
        .ok()
        .out();
    assert!(
        ps.starts_with("Restarting (1)") || ps.starts_with("Up"),
        "{ps}"
    );
    let o = d.docker(&["exec", &id, "true"]).run();
    assert_ne!(o.code, 0, "{o}");
    d.docker(&["stop", &id]).run().ok();
    let (status, count) = status_and_count(d, &id);
    assert_eq!(status, "exited");
    assert!(count >= seen, "{count} < {seen}");
    // Longer than the back-off reached so far (it doubles from 100 ms per restart): a
    // cancelled restart would have come back by now.
    std::thread::sleep(std::time::Duration::from_millis(100 << count.min(7)) * 2);
    assert_eq!(status_and_count(d, &id), ("exited".to_string(), count));
    d.hyper(&["rm", &id]).run().ok();
}

/// Across a kill -9 of hyperd: a VM that died meanwhile comes back by its policy once hyperd
/// returns (`RestartCount` 1), and a container the user stopped stays stopped.
fn restart_policies_across_hyperd_restarts() {
    let dd = Daemon::start("rp", DaemonOpts::default());
    let d: &Daemon = &dd;
    let always = d
        .hyper(&[
            "run",
            "-d",
            "--restart",
            "always",
            "busybox",
            "sleep",
            "600",
        ])
        .run()
        .ok()
        .out();
    let stopped = d
        .hyper(&[
            "run",
            "-d",
            "--restart",
            "unless-stopped",
            "busybox",
            "sleep",
            "600",
        ])
        .run()
        .ok()
        .out();
    d.hyper(&["stop", "-t", "0", &stopped]).run().ok();
    d.kill9();
    for p in container_processes(d, &always) {
        if p.contains("qemu-system") {
            let pid = p.split(' ').next().unwrap();
            Cmd::new("kill", &["-9", pid]).run().ok();
        }
    }
    wait_for("the VM and its supervisor to go", secs(30.0), || {
        let p = container_processes(d, &always);
        if p.is_empty() {
            Ok(())
        } else {
            Err(format!("{p:?}"))
        }
    });
    d.restart();
    wait_for(
        "the always container to be back",
        secs(120.0),
        || match status_and_count(d, &always) {
            (s, 1) if s == "running" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    d.hyper(&["exec", &always, "true"]).run().ok();
    assert_eq!(
        status_and_count(d, &stopped),
        ("exited".to_string(), 0),
        "a stop by the user sticks"
    );
}

fn health_status(d: &Daemon, id: &str) -> String {
    d.docker(&["inspect", "-f", "{{.State.Health.Status}}", id])
        .run()
        .ok()
        .out()
}

/// The container's events between `since` (Unix seconds) and now, as `docker events` shows them.
fn actions_since(d: &Daemon, id: &str, since: i64) -> Vec<String> {
    let until = (chrono::Utc::now().timestamp() + 1).to_string();
    d.docker(&[
        "events",
        "--since",
        &since.to_string(),
        "--until",
        &until,
        "--filter",
        &format!("container={id}"),
        "--format",
        "{{.Action}}",
    ])
    .run()
    .ok()
    .out()
    .lines()
    .map(String::from)
    .collect()
}

/// `--health-cmd` and friends: `starting`, then `unhealthy` after the retries, `healthy` once
/// the probe passes, shown in inspect (with the probes' output), in `ps` and as events; the
/// probe runs inside the VM. Bad settings get Docker's 400s.
fn health_checks() {
    let d = daemon();
    let since = chrono::Utc::now().timestamp() - 1;
    let id = d
        .docker(&[
            "run",
            "-d",
            "--health-cmd",
            "cat /ready",
            "--health-interval",
            "1s",
            "--health-retries",
            "2",
            "busybox",
            "sleep",
            "600",
        ])
        .run()
        .ok()
        .out();
    let v = d.inspect(&id);
    assert_eq!(
        v["Config"]["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "cat /ready"]),
        "{v}"
    );
    wait_for("unhealthy", secs(60.0), || {
        match health_status(d, &id).as_str() {
            "unhealthy" => Ok(()),
            other => Err(other.to_string()),
        }
    });
    let v = d.inspect(&id);
    let health = &v["State"]["Health"];
    assert!(health["FailingStreak"].as_u64().unwrap() >= 2, "{v}");
    let last = health["Log"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["ExitCode"], 1, "{last}");
    assert!(
        last["Output"].as_str().unwrap().contains("/ready"),
        "{last}"
    );
    d.docker(&["exec", &id, "sh", "-c", "echo ok > /ready"])
        .run()
        .ok();
    wait_for("healthy", secs(60.0), || {
        match health_status(d, &id).as_str() {
            "healthy" => Ok(()),
            other => Err(other.to_string()),
        }
    });
    let ps = d
        .docker(&[
            "ps",
            "--filter",
            &format!("id={id}"),
            "--format",
            "{{.Status}}",
        ])
        .run()
        .ok()
        .out();
    assert!(ps.ends_with("(healthy)"), "{ps}");
    let actions = actions_since(d, &id, since);
    let unhealthy = actions.iter().position(|a| a == "health_status: unhealthy");
    let healthy = actions.iter().position(|a| a == "health_status: healthy");
    assert!(
        matches!((unhealthy, healthy), (Some(u), Some(h)) if u < h),
        "{actions:?}"
    );
    d.docker(&["rm", "-f", &id]).run().ok();

    // docker-py's start period: failures inside it do not count, the third probe passes.
    let id = d
        .hyper(&[
            "run",
            "-d",
            "--health-cmd",
            "echo x >> /n; test $(wc -l < /n) -ge 3",
            "--health-interval",
            "1s",
            "--health-retries",
            "1",
            "--health-start-period",
            "1m",
            "--health-start-interval",
            "1s",
            "busybox",
            "sleep",
            "600",
        ])
        .run()
        .ok()
        .out();
    wait_for(
        "healthy after the start period's failures",
        secs(60.0),
        || match health_status(d, &id).as_str() {
            "healthy" => Ok(()),
            other => Err(other.to_string()),
        },
    );
    assert!(!actions_since(d, &id, since).contains(&"health_status: unhealthy".to_string()));
    d.hyper(&["rm", "-f", &id]).run().ok();

    for (flags, words) in [
        (
            &["--health-cmd", "true", "--health-interval", "10ms"][..],
            "cannot be less than 1s",
        ),
        (
            &["--health-cmd", "true", "--no-healthcheck"][..],
            "conflicts",
        ),
    ] {
        let mut args = vec!["run", "-d"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["busybox", "true"]);
        let o = d.hyper(&args).run();
        assert!(o.code != 0 && o.stderr.contains(words), "{o}");
    }
}

/// `docker-compose -p PROJECT -f FILE ARGS...` against the daemon.
fn compose(d: &Daemon, project: &str, file: &std::path::Path, args: &[&str]) -> Cmd {
    let mut a = vec!["-p", project, "-f", file.to_str().unwrap()];
    a.extend_from_slice(args);
    Cmd::new("docker-compose", &a)
        .env("DOCKER_HOST", d.unix_host())
        .timeout(180.0)
}

/// docker-compose's `depends_on: condition: service_healthy` starts the dependent service only
/// once the other's health check passed.
fn compose_waits_for_healthy() {
    let d = daemon();
    let dir = short_tmp("ch");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("docker-compose.yml");
    std::fs::write(
        &file,
        r#"version: "2.4"
services:
  db:
    image: busybox
    command: sh -c "sleep 3; touch /ready; exec sleep 600"
    healthcheck:
      test: ["CMD", "test", "-e", "/ready"]
      interval: 1s
      retries: 60
  web:
    image: busybox
    command: sleep 600
    depends_on:
      db:
        condition: service_healthy
"#,
    )
    .unwrap();
    let since = chrono::Utc::now().timestamp() - 1;
    compose(d, "hp", &file, &["up", "-d"]).run().ok();
    let until = (chrono::Utc::now().timestamp() + 1).to_string();
    let events = d
        .docker(&[
            "events",
            "--since",
            &since.to_string(),
            "--until",
            &until,
            "--format",
            "{{.Actor.Attributes.name}} {{.Action}}",
        ])
        .run()
        .ok()
        .out();
    let at = |line: &str| events.lines().position(|l| l == line);
    let (healthy, web) = (at("hp_db_1 health_status: healthy"), at("hp_web_1 start"));
    assert!(
        matches!((healthy, web), (Some(h), Some(w)) if h < w),
        "{events}"
    );
    compose(d, "hp", &file, &["down"]).run().ok();
    let _ = std::fs::remove_dir_all(dir);
}

/// `docker-compose exec` on a terminal: a shell that answers what is typed, and nothing typed
/// that was not (no NUL reaching the terminal's input, which the shell would echo as `^@`).
fn compose_exec_on_a_terminal() {
    let d = daemon();
    let dir = short_tmp("cx");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("docker-compose.yml");
    std::fs::write(
        &file,
        "version: \"2.4\"\nservices:\n  box:\n    image: busybox\n    command: sleep 600\n",
    )
    .unwrap();
    compose(d, "cx", &file, &["up", "-d"]).run().ok();
    let mut cmd = std::process::Command::new("docker-compose");
    cmd.args([
        "-p",
        "cx",
        "-f",
        file.to_str().unwrap(),
        "exec",
        "box",
        "sh",
    ])
    .env("DOCKER_HOST", d.unix_host())
    .env("DOCKER_CONFIG", d.data.join("noconfig"))
    .env("TERM", "xterm");
    let t = e2e::pty::run_on_pty_steps(
        cmd,
        &[("#", "echo hi-$((40+2))\r"), ("hi-42", "exit\r")],
        secs(120.0),
    );
    assert_eq!(t.code, 0, "terminal:\n{}", t.output);
    assert!(
        !t.output.contains("^@") && !t.output.contains('\0'),
        "a stray byte reached the terminal:\n{:?}",
        t.output
    );
    compose(d, "cx", &file, &["down"]).run().ok();
    let _ = std::fs::remove_dir_all(dir);
}

/// Options hyper does not honour are refused with a 501 naming them, through the Docker CLI;
/// an `Env` entry without a value is kept in `Config.Env` as Docker keeps it (and unsets the
/// variable), and links show in inspect as Docker shows them.
fn nothing_silently_ignored() {
    let d = daemon();
    d.docker(&["network", "create", "--subnet", "10.77.0.0/24", "quiet"])
        .run()
        .ok();
    for (flags, named) in [
        (
            &["--sysctl", "net.ipv4.ip_forward=1"][..],
            "HostConfig.Sysctls",
        ),
        (&["--mac-address", "02:42:ac:11:00:09"][..], "MacAddress"),
        (
            &["--network", "quiet", "--ip", "10.77.0.9"][..],
            "IPAMConfig",
        ),
        (
            &["--log-opt", "compress=true"][..],
            "log option \"compress\"",
        ),
        (&["--read-only"][..], "HostConfig.ReadonlyRootfs"),
        (&["--shm-size", "128m"][..], "HostConfig.ShmSize"),
    ] {
        let mut args = vec!["create"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["busybox", "true"]);
        let o = d.docker(&args).run();
        assert!(o.code != 0 && o.stderr.contains(named), "{flags:?}: {o}");
        assert!(o.stderr.contains("does not support"), "{o}");
    }
    let o = d
        .docker(&["network", "create", "--internal", "inside"])
        .run();
    assert!(o.code != 0 && o.stderr.contains("--internal"), "{o}");
    d.docker(&["network", "rm", "quiet"]).run().ok();
    let id = d
        .docker(&["create", "-e", "HYPER_UNSET_HERE", "busybox", "env"])
        .run()
        .ok()
        .out();
    let v = d.inspect(&id);
    let env = v["Config"]["Env"].as_array().unwrap();
    assert!(env.iter().any(|e| e == "HYPER_UNSET_HERE"), "{v}");
    d.docker(&["start", "-a", &id]).run().ok();
    let out = d.docker(&["logs", &id]).run().ok().out();
    assert!(
        !out.contains("HYPER_UNSET_HERE") && out.contains("PATH="),
        "{out}"
    );
    d.docker(&["rm", &id]).run().ok();

    d.docker(&["run", "-d", "--name", "linkdb", "busybox", "sleep", "600"])
        .run()
        .ok();
    d.docker(&[
        "create",
        "--name",
        "linkweb",
        "--link",
        "linkdb:data",
        "busybox",
        "true",
    ])
    .run()
    .ok();
    let v = d.inspect("linkweb");
    assert_eq!(
        v["HostConfig"]["Links"],
        serde_json::json!(["/linkdb:/linkweb/data"]),
        "{v}"
    );
    d.docker(&["rm", "-f", "linkweb", "linkdb"]).run().ok();
}

/// Maps whose keys are the user's or the host's data (labels, network names, ports,
/// runtimes...): their values are compared with each other, not their keys.
const DATA_KEYED: &[&str] = &[
    "Labels",
    "Networks",
    "Ports",
    "ExposedPorts",
    "Volumes",
    "PortBindings",
    "Options",
    "Runtimes",
    "IndexConfigs",
    "Details",
    "DriverOpts",
    "Config.Volumes",
    "Annotations",
];

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "bool",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// Every key Docker's answer has that ours lacks, and every value whose type differs (a null
/// on either side says nothing about the type).
fn differences(
    path: &str,
    docker: &serde_json::Value,
    ours: &serde_json::Value,
    out: &mut Vec<String>,
) {
    use serde_json::Value::*;
    match (docker, ours) {
        (Null, _) | (_, Null) => {}
        (Object(d), Object(o)) if DATA_KEYED.iter().any(|k| path.ends_with(k)) => {
            if let (Some(dv), Some(ov)) = (d.values().next(), o.values().next()) {
                differences(&format!("{path}.*"), dv, ov, out);
            }
        }
        (Object(d), Object(o)) => {
            for (k, dv) in d {
                match o.get(k) {
                    None => out.push(format!("{path}.{k} is missing")),
                    Some(ov) => differences(&format!("{path}.{k}"), dv, ov, out),
                }
            }
        }
        (Array(d), Array(o)) => {
            if let (Some(dv), Some(ov)) = (d.first(), o.first()) {
                differences(&format!("{path}[0]"), dv, ov, out);
            }
        }
        (d, o) if kind(d) != kind(o) => out.push(format!(
            "{path} is a {} in Docker, a {} here",
            kind(d),
            kind(o)
        )),
        _ => {}
    }
}

/// The same container created on hyperd as on a real dockerd (its answers recorded by
/// `scripts/capture-dockerd`, as CI machines have no Docker engine): inspect has every key
/// Docker's has, with the same types, and so do `info` and `version`. No host path of the node
/// shows.
fn inspect_info_version_match_dockerd() {
    let d = daemon();
    let fixtures = workspace_root().join("tests/fixtures/dockerd");
    let recorded = |name: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(fixtures.join(name)).unwrap();
        serde_json::from_str(&text).unwrap()
    };
    let args = std::fs::read_to_string(fixtures.join("create-args")).unwrap();
    let args: Vec<&str> = args.lines().collect();
    let ours = d.docker(&args).run().ok().out();
    d.docker(&["start", &ours]).run().ok();
    let mut problems = Vec::new();
    let ours_json = |path: &str| {
        let o = d.api("GET", path, &[]);
        let (body, _) = o.stdout.rsplit_once('\n').unwrap();
        serde_json::from_str::<serde_json::Value>(body).unwrap()
    };
    let inspect = ours_json(&format!("/containers/{ours}/json"));
    for (what, recording, path) in [
        (
            "inspect",
            "inspect.json",
            format!("/containers/{ours}/json"),
        ),
        ("info", "info.json", "/info".to_string()),
        ("version", "version.json", "/version".to_string()),
    ] {
        differences(what, &recorded(recording), &ours_json(&path), &mut problems);
    }
    d.docker(&["rm", "-f", &ours]).run().ok();
    assert!(
        problems.is_empty(),
        "{} differences:\n{}",
        problems.len(),
        problems.join("\n")
    );
    let text = inspect.to_string();
    for host_path in ["/tmp/hy-", "/var/lib/hyper", "/run/hyper"] {
        assert!(
            !text.contains(host_path),
            "inspect shows a node path: {text}"
        );
    }
    assert!(inspect["Config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "UNSET"));
}

/// `pause` stops the whole VM (issue 15): inspect and ps say paused, a counter inside stops
/// counting, exec and attach are refused, it stays paused across a hyperd restart, inspect
/// follows the VM when it is resumed behind hyperd's back, the guest's clock is right after an
/// unpause, stop, kill and rm -f work, and the events say pause and unpause.
fn pause_stops_the_whole_vm() {
    // Its own hyperd: the test restarts it, which the shared one's other tests must not see.
    let dd = Daemon::start("pz", DaemonOpts::default());
    let d: &Daemon = &dd;
    let counter = "i=0; while true; do i=$((i+1)); echo $i; sleep 0.2; done";
    // Protected: termination protection does not cover pause.
    let run = [
        "run",
        "-d",
        "--protection=true",
        "busybox",
        "sh",
        "-c",
        counter,
    ];
    let id = d.hyper(&run).run().ok().out();
    let lines = || d.docker(&["logs", &id]).run().ok().stdout.lines().count();
    // What `docker events` replays of pause and unpause (hyperd keeps its events in memory).
    let pause_events = || {
        let until = format!("{:.3}", chrono::Utc::now().timestamp_micros() as f64 / 1e6);
        let filter = format!("container={id}");
        let format = ["--format", "{{.Action}}"];
        let args = [
            "events", "--since", "0", "--until", &until, "--filter", &filter,
        ];
        let o = d.docker(&[&args[..], &format].concat()).run().ok();
        o.stdout
            .lines()
            .filter(|a| a.contains("pause"))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let grown = |from: usize| {
        wait_for("the counter to count", secs(60.0), || match lines() {
            n if n > from + 2 => Ok(n),
            n => Err(format!("{n} lines")),
        })
    };
    grown(0);
    for (client, cmd) in [
        ("docker", "pause"),
        ("hyper", "unpause"),
        ("hyper", "pause"),
    ] {
        let o = match client {
            "hyper" => d.hyper(&[cmd, &id]).run(),
            _ => d.docker(&[cmd, &id]).run(),
        };
        assert_eq!(o.ok().out(), id, "{client} {cmd}");
    }
    let state = |c: &serde_json::Value| {
        let s = &c["State"];
        format!("{} {} {}", s["Status"], s["Running"], s["Paused"])
    };
    assert_eq!(state(&d.inspect(&id)), r#""paused" true true"#);
    let filter = format!("id={id}");
    let ps = [
        "ps",
        "--filter",
        &filter,
        "--format",
        "{{.Status}} {{.State}}",
    ];
    for ps in [d.docker(&ps), d.hyper(&ps)] {
        let o = ps.run().ok().out();
        assert!(o.ends_with("(Paused) paused"), "{o}");
    }
    let before = lines();
    for exec in [
        d.docker(&["exec", &id, "true"]),
        d.hyper(&["exec", &id, "true"]),
    ] {
        let o = exec.run();
        assert!(
            o.code != 0
                && o.stderr.contains(&format!(
                    "Container {id} is paused, unpause the container before exec"
                )),
            "{o}"
        );
    }
    let o = d.docker(&["attach", &id]).run();
    assert!(o.code != 0 && o.stderr.contains("paused"), "{o}");
    // Stats still answer: a frozen VM uses no CPU.
    let o = d.docker(&["stats", "--no-stream", "--format", "{{.CPUPerc}}", &id]);
    assert_eq!(o.run().ok().out(), "0.00%");
    let o = d.api("POST", &format!("/v1.44/containers/{id}/pause"), &[]);
    assert!(
        o.stdout.ends_with("409") && o.stdout.contains("is already paused"),
        "{o}"
    );
    assert_eq!(pause_events(), ["pause", "unpause", "pause"]);
    d.restart();
    assert_eq!(
        state(&d.inspect(&id)),
        r#""paused" true true"#,
        "after a restart"
    );
    assert_eq!(lines(), before, "the counter went on while paused");

    // Resumed behind hyperd's back (QEMU's own monitor): inspect tells the truth.
    qmp_cont(&d.cdir(&id).join("qmp.sock"));
    assert_eq!(state(&d.inspect(&id)), r#""running" true false"#);
    let o = d.docker(&["unpause", &id]).run();
    assert!(o.code != 0 && o.stderr.contains("is not paused"), "{o}");
    grown(before);

    // A paused container stops (Docker unpauses it to deliver the signal).
    d.hyper(&["update", "--protection=false", &id]).run().ok();
    d.docker(&["pause", &id]).run().ok();
    d.docker(&["stop", "-t", "5", &id]).run().ok();
    assert_eq!(state(&d.inspect(&id)), r#""exited" false false"#);
    let o = d.docker(&["pause", &id]).run();
    assert!(o.code != 0 && o.stderr.contains("is not running"), "{o}");
    assert_eq!(pause_events(), ["pause"], "since the restart");
    // After an unpause the guest's clock is the host's again (it stood still while paused).
    d.docker(&["start", &id]).run().ok();
    d.hyper(&["pause", &id]).run().ok();
    std::thread::sleep(secs(5.0));
    d.hyper(&["unpause", &id]).run().ok();
    let host = || chrono::Utc::now().timestamp();
    let (before, guest, after) = (
        host(),
        d.docker(&["exec", &id, "date", "+%s"]).run().ok().out(),
        host(),
    );
    let guest: i64 = guest.parse().unwrap();
    assert!(
        guest >= before - 1 && guest <= after + 1,
        "{before} {guest} {after}"
    );
    // Kill and rm -f of a paused container work too.
    d.hyper(&["pause", &id]).run().ok();
    d.docker(&["kill", &id]).run().ok();
    assert_eq!(state(&d.inspect(&id)), r#""exited" false false"#);
    d.docker(&["start", &id]).run().ok();
    d.hyper(&["pause", &id]).run().ok();
    d.docker(&["rm", "-f", &id]).run().ok();
}

/// `cont` on QEMU's monitor socket, as an operator might.
fn qmp_cont(sock: &std::path::Path) {
    use std::io::{BufRead, BufReader, Write};
    let s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    for cmd in ["qmp_capabilities", "cont"] {
        writeln!(w, r#"{{"execute":"{cmd}"}}"#).unwrap();
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            if line.contains("return") || line.contains("error") {
                break;
            }
        }
        assert!(line.contains("return"), "{cmd}: {line}");
    }
}

/// `docker stats --no-stream` and `hyper stats --no-stream` show a busy loop at half a CPU or
/// more and an idle container at 5 % or less.
fn stats_cpu_figures() {
    let d = daemon();
    let busy = d
        .docker(&["run", "-d", "busybox", "sh", "-c", "while :; do :; done"])
        .run()
        .ok()
        .out();
    let idle = d
        .docker(&["run", "-d", "busybox", "sleep", "600"])
        .run()
        .ok()
        .out();
    let cpu = |id: &str| -> Vec<f64> {
        let docker = d
            .docker(&["stats", "--no-stream", "--format", "{{.CPUPerc}}", id])
            .run()
            .ok()
            .out();
        let hyper = d.hyper(&["stats", "--no-stream", id]).run().ok().out();
        let hyper = hyper
            .lines()
            .nth(1)
            .and_then(|l| l.split_whitespace().nth(2));
        [Some(docker.as_str()), hyper]
            .iter()
            .map(|p| {
                let p = p.unwrap_or_default();
                p.trim_end_matches('%')
                    .parse()
                    .unwrap_or_else(|_| panic!("{p:?}"))
            })
            .collect()
    };
    wait_for("the busy loop to show", secs(60.0), || match cpu(&busy) {
        p if p.iter().all(|p| *p >= 50.0) => Ok(()),
        p => Err(format!("{p:?}")),
    });
    wait_for("the idle one to settle", secs(60.0), || match cpu(&idle) {
        p if p.iter().all(|p| *p <= 5.0) => Ok(()),
        p => Err(format!("{p:?}")),
    });
    // A stream's first line already has a sample of a second before as its precpu (not zeros,
    // which would show the VM's whole life, boot included).
    let sock = d.sock.to_string_lossy().into_owned();
    let url = format!("http://hyper/v1.44/containers/{idle}/stats");
    let o = Cmd::new(
        "curl",
        &["-sN", "--max-time", "10", "--unix-socket", &sock, &url],
    )
    .run();
    let first: serde_json::Value = serde_json::from_str(o.stdout.lines().next().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {o}"));
    let n = |s: &str, k: &str| first[s][k].as_f64().unwrap_or(0.0);
    let busy_ns = |s: &str| first[s]["cpu_usage"]["total_usage"].as_f64().unwrap_or(0.0);
    let system = n("cpu_stats", "system_cpu_usage") - n("precpu_stats", "system_cpu_usage");
    let percent = (busy_ns("cpu_stats") - busy_ns("precpu_stats")) / system * 100.0;
    assert!(
        n("precpu_stats", "system_cpu_usage") > 0.0 && percent <= 5.0,
        "{first}"
    );
    d.docker(&["rm", "-f", &busy, &idle]).run().ok();
}

/// Docker's exec events (`exec_create: CMD`, `exec_start: CMD`, `exec_die` with its exit code)
/// are replayed by `docker events --since 0 --until NOW`, and `hyper events` takes relative
/// times.
fn exec_events_replay() {
    let d = daemon();
    let id = d
        .hyper(&["run", "-d", "busybox", "sleep", "600"])
        .run()
        .ok()
        .out();
    d.docker(&["exec", &id, "sh", "-c", "exit 3"]).run().code(3);
    let until = format!("{:.3}", chrono::Utc::now().timestamp_micros() as f64 / 1e6);
    let filter = format!("container={id}");
    let replays = |extra: &[&str]| {
        let args = |when: [&'static str; 4]| {
            let mut a = vec!["events", "--filter", filter.as_str()];
            a.extend_from_slice(&when);
            a.extend_from_slice(extra);
            a
        };
        let until: &'static str = until.clone().leak();
        [
            d.docker(&args(["--since", "0", "--until", until]))
                .run()
                .ok(),
            d.hyper(&args(["--since", "1h", "--until", "0s"]))
                .run()
                .ok(),
        ]
    };
    for o in replays(&["--format", "{{.Action}}"]) {
        let got: Vec<&str> = o.stdout.lines().filter(|l| l.starts_with("exec")).collect();
        let want = [
            "exec_create: sh -c exit 3",
            "exec_start: sh -c exit 3",
            "exec_die",
        ];
        assert_eq!(got, want, "{o}");
    }
    let exit_code = [
        "--filter",
        "event=exec_die",
        "--format",
        "{{.Actor.Attributes.exitCode}}",
    ];
    for o in replays(&exit_code) {
        assert_eq!(o.out(), "3", "{o}");
    }
    d.hyper(&["rm", "-f", &id]).run().ok();
}

/// A client CLI on a terminal: the stock Docker CLI or ours, on the test daemon.
fn on_terminal(d: &Daemon, client: &str, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(match client {
        "docker" => docker_bin(),
        _ => hyper_bin(),
    });
    cmd.args(["-H", &d.unix_host()])
        .args(args)
        .env("HYPER_CONFIG", d.data.join("noconfig"))
        .env("DOCKER_CONFIG", d.data.join("noconfig"))
        .env("TERM", "xterm");
    cmd
}

/// The detach keys (ctrl-p,ctrl-q by default, `--detach-keys` else) end an attach or an exec
/// session on a terminal while the process runs on, with both CLIs: what was typed before
/// them ran, and the shell left behind is still there.
fn detach_keys_leave_processes_running() {
    let d = daemon();
    // A shell on a terminal, and beside it a loop saying "ready" every second: an attached
    // client sees it once its terminal is raw (in cooked mode ctrl-q is flow control).
    let id = d
        .docker(&[
            "run",
            "-dit",
            "busybox",
            "sh",
            "-c",
            "while sleep 1; do echo ready; done & exec sh",
        ])
        .run()
        .ok()
        .out();
    let shells = || {
        d.docker(&["exec", &id, "pidof", "sh"])
            .run()
            .ok()
            .stdout
            .split_whitespace()
            .count()
    };
    for client in ["docker", "hyper"] {
        let t = e2e::pty::run_on_pty(
            on_terminal(d, client, &["attach", &id]),
            "ready",
            &format!("touch /attached-{client}\r\x10\x11"),
            secs(60.0),
        );
        // Docker's CLI says it read the escape sequence and exits 1 (it does so with dockerd).
        let docker_detached = client == "docker" && t.output.contains("read escape sequence");
        assert!(
            t.code == 0 || docker_detached,
            "{client} attach; terminal:\n{}",
            t.output
        );
        wait_for("the command typed before detaching", secs(20.0), || {
            let o = d
                .docker(&["exec", &id, "ls", &format!("/attached-{client}")])
                .run();
            if o.code == 0 {
                Ok(())
            } else {
                Err(o.to_string())
            }
        });
        assert_eq!(d.inspect(&id)["State"]["Running"], true, "{client}");
    }
    for (client, keys, typed) in [("docker", "ctrl-a,x", "\x01x"), ("hyper", "ctrl-e", "\x05")] {
        let before = shells();
        let t = e2e::pty::run_on_pty(
            on_terminal(
                d,
                client,
                &["exec", "-it", "--detach-keys", keys, &id, "sh"],
            ),
            "#",
            &format!("touch /by-{client}\r{typed}"),
            secs(60.0),
        );
        let docker_detached = client == "docker" && t.output.contains("read escape sequence");
        assert!(
            t.code == 0 || docker_detached,
            "{client} exec; terminal:\n{}",
            t.output
        );
        wait_for("the command typed before detaching", secs(20.0), || {
            let o = d
                .docker(&["exec", &id, "ls", &format!("/by-{client}")])
                .run();
            if o.code == 0 {
                Ok(())
            } else {
                Err(o.to_string())
            }
        });
        assert_eq!(shells(), before + 1, "{client}: the detached shell runs on");
    }
    let o = d
        .hyper(&["exec", "-it", "--detach-keys", "ctrl-é", &id, "true"])
        .run();
    assert!(o.code != 0 && o.stderr.contains("detach keys"), "{o}");
    d.docker(&["rm", "-f", &id]).run().ok();
}

/// docker-py: `attach(logs=True, stream=False)` returns the log so far and ends; an exec
/// created with a terminal has one even when started without (the start's `Tty` only says
/// how to stream), as Docker's.
fn attach_logs_and_exec_terminals() {
    let d = daemon();
    let id = d
        .docker(&[
            "run",
            "-d",
            "busybox",
            "sh",
            "-c",
            "echo one; echo two >&2; exec sleep 600",
        ])
        .run()
        .ok()
        .out();
    wait_for("the log", secs(30.0), || {
        let o = d.docker(&["logs", &id]).run().ok();
        if o.stderr.contains("two") {
            Ok(())
        } else {
            Err(o.to_string())
        }
    });
    let script = format!(
        r#"
import docker
c = docker.APIClient(base_url="{host}", version="1.44")
print(repr(c.attach("{id}", stdout=True, stderr=True, stream=False, logs=True)))
e = c.exec_create("{id}", ["tty"], tty=True)
print(c.exec_start(e["Id"], tty=False).decode().strip())
for tty in [True, False] * 3:
    e = c.exec_create("{id}", ["echo", "at once"], tty=tty)
    print(repr(c.exec_start(e["Id"])))
# A terminal's lines arrive whole, as dockerd's reads give them.
e = c.exec_create("{id}", ["sh", "-c", "echo hello out; sleep 1; echo hello err >&2"], tty=True)
print(repr(list(c.exec_start(e["Id"], stream=True))))
# The config file's detach keys (docker-py sends them as `detachKeys` in the exec's body).
c._general_configs["detachKeys"] = "ctrl-p"
e = c.exec_create("{id}", "cat", stdin=True, tty=True, stdout=True)
s = c.exec_start(e["Id"], tty=True, socket=True)._sock
s.sendall(b"\x10")
s.settimeout(20)
print(repr(s.recv(128)))
print(c.exec_inspect(e["Id"])["Running"])
"#,
        host = d.unix_host(),
    );
    let o = Cmd::new("python3", &["-c", &script])
        .timeout(60.0)
        .run()
        .ok();
    let mut lines = o.stdout.lines();
    assert_eq!(lines.next(), Some("b'one\\ntwo\\n'"), "{o}");
    assert!(
        lines.next().is_some_and(|l| l.starts_with("/dev/pts/")),
        "{o}"
    );
    // What an exec prints at once reaches docker-py, which reads past the 101 with a buffer.
    let at_once: Vec<&str> = lines.by_ref().take(6).collect();
    assert_eq!(
        at_once,
        [r"b'at once\r\n'", r"b'at once\n'"].repeat(3),
        "{o}"
    );
    assert_eq!(
        lines.next(),
        Some(r"[b'hello out\r\n', b'hello err\r\n']"),
        "{o}"
    );
    // Detached: the connection ends, the process goes on.
    assert_eq!(lines.next(), Some("b''"), "{o}");
    assert_eq!(lines.next(), Some("True"), "{o}");
    d.docker(&["rm", "-f", &id]).run().ok();
}

/// Names `name` resolves to inside container `c`, from its network's DNS; empty if none.
fn resolves(d: &Daemon, c: &str, name: &str) -> String {
    let o = d
        .docker(&[
            "exec",
            c,
            "sh",
            "-c",
            &format!(
                "nslookup {name} 2>/dev/null | sed -n '/^Name:/,$p' | grep -o '[0-9.]*$' || true"
            ),
        ])
        .run()
        .ok();
    o.out()
}

/// Links as dockerd keeps them: on a user network a link is a name only its container
/// resolves, to a target that may come later; the target lists the link's name; a legacy
/// link is removed with `DELETE /containers/PARENT/ALIAS?link=1`; inspect shows the aliases
/// asked for (null when none) and the DNS names.
fn links_as_dockerd_keeps_them() {
    let d = daemon();
    d.docker(&["network", "create", "lnk"]).run().ok();
    // The target does not exist yet: dockerd accepts this on a user network.
    let c1 = d
        .docker(&[
            "run",
            "-d",
            "--name",
            "lnk-c1",
            "--network",
            "lnk",
            "--link",
            "lnk-up:bar",
            "busybox",
            "sleep",
            "600",
        ])
        .run()
        .ok()
        .out();
    let ins = d.inspect(&c1);
    let ep = &ins["NetworkSettings"]["Networks"]["lnk"];
    assert_eq!(ep["Links"], serde_json::json!(["lnk-up:bar"]), "{ins}");
    assert!(ep["Aliases"].is_null(), "{ep}");
    assert_eq!(
        ep["DNSNames"],
        serde_json::json!(["lnk-c1", &c1[..12]]),
        "{ep}"
    );
    d.docker(&[
        "run",
        "-d",
        "--name",
        "lnk-up",
        "--network",
        "lnk",
        "busybox",
        "sleep",
        "600",
    ])
    .run()
    .ok();
    d.docker(&[
        "run",
        "-d",
        "--name",
        "lnk-c3",
        "--network",
        "lnk",
        "busybox",
        "sleep",
        "600",
    ])
    .run()
    .ok();
    let up_ip = d.inspect("lnk-up")["NetworkSettings"]["Networks"]["lnk"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for(
        "lnk-c1 to resolve its link",
        secs(30.0),
        || match resolves(d, "lnk-c1", "bar") {
            ip if ip == up_ip => Ok(()),
            other => Err(other),
        },
    );
    // The alias is lnk-c1's alone.
    assert_eq!(resolves(d, "lnk-c3", "bar"), "");
    assert_eq!(resolves(d, "lnk-c3", "lnk-up"), up_ip);

    // The link's name is listed with its target, as dockerd lists it.
    let names_of = |name: &str| -> Vec<String> {
        let o = d.api("GET", "/v1.44/containers/json", &[]);
        let body = o.stdout.rsplit_once('\n').unwrap().0;
        let list: serde_json::Value = serde_json::from_str(body).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .find(|c| c["Names"][0] == format!("/{name}"))
            .map(|c| serde_json::from_value(c["Names"].clone()).unwrap())
            .unwrap_or_default()
    };
    assert_eq!(names_of("lnk-up"), ["/lnk-up", "/lnk-c1/bar"]);
    // Removed, the link is gone from the list, from inspect and from lnk-c1's DNS.
    let o = d.api("DELETE", "/v1.44/containers/lnk-c1/bar?link=1", &[]);
    assert!(o.stdout.ends_with("\n204"), "{o}");
    assert_eq!(names_of("lnk-up"), ["/lnk-up"]);
    let links = d.inspect("lnk-c1")["HostConfig"]["Links"].to_string();
    assert!(!links.contains("bar"), "{links}");
    wait_for(
        "the removed link to stop resolving",
        secs(30.0),
        || match resolves(d, "lnk-c1", "bar") {
            ip if ip.is_empty() => Ok(()),
            other => Err(other),
        },
    );
    // A link that is not there, a container's own name, and a path without `link`.
    let o = d.api("DELETE", "/v1.44/containers/lnk-c1/bar?link=1", &[]);
    assert!(
        o.stdout.contains("has no link named bar") && o.stdout.ends_with("\n404"),
        "{o}"
    );
    let o = d.api("DELETE", "/v1.44/containers/lnk-c1?link=1", &[]);
    assert!(
        o.stdout.contains("cannot remove the default link name") && o.stdout.ends_with("\n409"),
        "{o}"
    );
    let o = d.api("DELETE", "/v1.44/containers/lnk-c1/bar", &[]);
    assert!(o.stdout.ends_with("\n404"), "{o}");
    assert!(d.inspect("lnk-c1")["State"]["Running"] == true);

    // On the default network a link's target must exist, as with dockerd.
    let o = d
        .docker(&["create", "--link", "lnk-none:x", "busybox", "true"])
        .run();
    assert!(
        o.code != 0 && o.stderr.contains("could not get container for lnk-none"),
        "{o}"
    );
    d.docker(&["rm", "-f", "lnk-c1", "lnk-up", "lnk-c3"])
        .run()
        .ok();
    d.docker(&["network", "rm", "lnk"]).run().ok();
}

/// A broken archive is read, then answered as dockerd answers it: 200, with the error in the
/// stream (docker-py raises ImageLoadError from it); the CLI still fails with the reason.
fn a_broken_load_errs_in_its_stream() {
    let d = daemon();
    let o = d.api(
        "POST",
        "/v1.44/images/load",
        &[
            "-H",
            "Content-Type: application/x-tar",
            "--data-binary",
            "not a tar archive",
        ],
    );
    assert!(o.stdout.ends_with("\n200"), "{o}");
    let body = o.stdout.rsplit_once('\n').unwrap().0;
    let message: serde_json::Value = serde_json::from_str(body.lines().last().unwrap()).unwrap();
    assert!(
        message["errorDetail"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
            && message["error"] == message["errorDetail"]["message"],
        "{o}"
    );
    let junk = short_tmp("junk").with_extension("tar");
    std::fs::write(&junk, "not a tar archive").unwrap();
    let o = d.hyper(&["load", "-i", junk.to_str().unwrap()]).run();
    assert!(
        o.code != 0 && o.stderr.contains(message["error"].as_str().unwrap()),
        "{o}"
    );
    let _ = std::fs::remove_file(junk);
}

/// `--tmpfs` and `--mount type=tmpfs`: a tmpfs in the VM's memory with Docker's defaults
/// (noexec, nosuid, nodev, mode 1777) and the options asked for; options hyper does not
/// honour, and sizes beyond the container's memory, are refused naming them.
fn tmpfs_in_the_vms_memory() {
    let d = daemon();
    let script = "grep ' /run/t ' /proc/mounts; stat -c %a /run/t; df -k /run/t | tail -1; \
                  cp /bin/busybox /run/t/true; /run/t/true && echo ran || echo refused; \
                  grep ' /x ' /proc/mounts; df -k /x | tail -1; stat -c %a /x";
    let o = d
        .docker(&[
            "run",
            "--rm",
            "--tmpfs",
            "/run/t:size=8m,mode=1770",
            "--mount",
            "type=tmpfs,destination=/x,tmpfs-size=1048576,tmpfs-mode=0700,readonly",
            "busybox",
            "sh",
            "-c",
            script,
        ])
        .timeout(120.0)
        .run()
        .ok();
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert!(lines.len() == 7, "{o}");
    let opts = |line: &str| line.split(' ').nth(3).unwrap_or("").to_string();
    assert!(lines[0].starts_with("tmpfs /run/t tmpfs "), "{o}");
    for flag in ["rw", "nosuid", "nodev", "noexec"] {
        assert!(opts(lines[0]).split(',').any(|f| f == flag), "{flag}: {o}");
    }
    assert_eq!(lines[1], "1770", "{o}");
    assert_eq!(lines[2].split_whitespace().nth(1), Some("8192"), "{o}");
    assert_eq!(lines[3], "refused", "noexec: {o}");
    assert!(lines[4].starts_with("tmpfs /x tmpfs ro,"), "{o}");
    assert_eq!(lines[5].split_whitespace().nth(1), Some("1024"), "{o}");
    assert_eq!(lines[6], "700", "{o}");

    // `exec` lifts noexec; inspect shows what was asked.
    let id = d
        .docker(&[
            "create",
            "--tmpfs",
            "/run/t:exec",
            "busybox",
            "sh",
            "-c",
            "cp /bin/busybox /run/t/echo && /run/t/echo ran",
        ])
        .run()
        .ok()
        .out();
    assert_eq!(
        d.inspect(&id)["HostConfig"]["Tmpfs"],
        serde_json::json!({"/run/t": "exec"})
    );
    let o = d.docker(&["start", "-a", &id]).timeout(120.0).run().ok();
    assert_eq!(o.stdout.trim(), "ran", "{o}");
    d.docker(&["rm", &id]).run().ok();

    for (args, code, says) in [
        (
            vec!["--tmpfs", "/t:uid=1000"],
            501,
            "tmpfs option \"uid=1000\" on /t is not supported",
        ),
        (
            vec!["--tmpfs", "/t:size=64g"],
            400,
            "does not fit in the container's memory",
        ),
        (
            vec!["--tmpfs", "/t", "-v", "/t"],
            400,
            "Duplicate mount point: /t",
        ),
    ] {
        let mut a = vec!["create"];
        a.extend(args);
        a.extend(["busybox", "true"]);
        let o = d.docker(&a).run();
        assert!(o.code != 0 && o.stderr.contains(says), "{a:?}: {o}");
        let body =
            serde_json::json!({"Image": "busybox", "HostConfig": {"Tmpfs": {"/t": "uid=1000"}}});
        if code == 501 {
            let api = d.api(
                "POST",
                "/v1.44/containers/create",
                &[
                    "-H",
                    "Content-Type: application/json",
                    "-d",
                    &body.to_string(),
                ],
            );
            assert!(api.stdout.ends_with("\n501"), "{api}");
        }
    }
}

/// `--log-opt max-size/max-file` rotate a container's json-file log as dockerd's do; beyond
/// what the operator lets one container keep, they are refused.
fn log_options_rotate_logs() {
    let d = daemon();
    let id = d
        .docker(&[
            "run", "-d", "--log-opt", "max-size=1k", "--log-opt", "max-file=2", "busybox", "sh",
            "-c", "i=0; while [ $i -lt 200 ]; do echo line-$i-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done",
        ])
        .run()
        .ok()
        .out();
    d.wait_status(&id, "exited", 120.0);
    assert_eq!(
        d.inspect(&id)["HostConfig"]["LogConfig"],
        serde_json::json!({"Type": "json-file", "Config": {"max-file": "2", "max-size": "1k"}})
    );
    let logs = d.docker(&["logs", &id]).run().ok().out();
    assert!(
        logs.ends_with("line-199-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"),
        "{logs}"
    );
    assert!(
        !logs.contains("line-0-"),
        "the oldest lines are rotated away: {logs}"
    );
    let files: Vec<String> = std::fs::read_dir(d.cdir(&id))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ctr.log"))
        .collect();
    assert!(files.len() <= 2, "{files:?}");
    d.docker(&["rm", &id]).run().ok();
    let o = d
        .docker(&["create", "--log-opt", "max-size=1g", "busybox", "true"])
        .run();
    assert!(
        o.code != 0 && o.stderr.contains("per container are kept here"),
        "{o}"
    );
    // Each rotation renames every kept file: their number is bounded.
    let o = d
        .docker(&[
            "create",
            "--log-opt",
            "max-size=1k",
            "--log-opt",
            "max-file=1000",
            "busybox",
            "true",
        ])
        .run();
    assert!(
        o.code != 0 && o.stderr.contains("a whole number from 1 to 100"),
        "{o}"
    );
}

/// `--group-add` by number and by the image's group name, for the main process and its execs;
/// a name the image does not have fails the start as dockerd's does.
fn group_add_for_every_process() {
    let d = daemon();
    let id = d
        .docker(&[
            "run",
            "-d",
            "--group-add",
            "1001",
            "--group-add",
            "nogroup",
            "busybox",
            "sh",
            "-c",
            "id -G; exec sleep 600",
        ])
        .run()
        .ok()
        .out();
    wait_for("the main process's groups", secs(30.0), || {
        match d.docker(&["logs", &id]).run().ok().out() {
            out if out == "0 1001 65534" => Ok(()),
            out => Err(out),
        }
    });
    let o = d.docker(&["exec", &id, "id", "-G"]).run().ok();
    assert_eq!(o.out(), "0 1001 65534", "{o}");
    assert_eq!(
        d.inspect(&id)["HostConfig"]["GroupAdd"],
        serde_json::json!(["1001", "nogroup"])
    );
    d.docker(&["rm", "-f", &id]).run().ok();
    let o = d
        .docker(&["run", "--rm", "--group-add", "audio", "busybox", "true"])
        .timeout(120.0)
        .run();
    assert!(
        o.code != 0 && o.stderr.contains("unable to find group audio"),
        "{o}"
    );
    let o = d
        .docker(&["create", "--group-add", "a:b", "busybox", "true"])
        .run();
    assert!(
        o.code != 0 && o.stderr.contains("invalid --group-add \"a:b\""),
        "{o}"
    );
}

/// `network disconnect`/`connect` of a container that has not started (it has no VM yet, so
/// its one interface is not fixed; docker-compose v1 reconnects each container it creates so):
/// it leaves its network and joins another with aliases; once started, its interface stays.
fn network_connect_before_start() {
    let d = daemon();
    d.docker(&["network", "create", "ncb"]).run().ok();
    let id = d
        .docker(&["create", "--name", "ncb-c", "busybox", "sleep", "600"])
        .run()
        .ok()
        .out();
    d.docker(&["network", "disconnect", "bridge", "ncb-c"])
        .run()
        .ok();
    let nets = d.inspect(&id)["NetworkSettings"]["Networks"].clone();
    assert!(nets.get("bridge").is_none(), "{nets}");
    d.docker(&["network", "connect", "--alias", "thealias", "ncb", "ncb-c"])
        .run()
        .ok();
    let ep = d.inspect(&id)["NetworkSettings"]["Networks"]["ncb"].clone();
    assert_eq!(ep["Aliases"], serde_json::json!(["thealias"]), "{ep}");
    d.docker(&["start", &id]).run().ok();
    d.docker(&[
        "run",
        "-d",
        "--name",
        "ncb-other",
        "--network",
        "ncb",
        "busybox",
        "sleep",
        "600",
    ])
    .run()
    .ok();
    let ip = ep["IPAddress"].as_str().unwrap().to_string();
    wait_for("the alias to resolve", secs(30.0), || {
        match resolves(d, "ncb-other", "thealias") {
            got if got == ip => Ok(()),
            got => Err(got),
        }
    });
    // Started, its interface is fixed.
    let o = d.docker(&["network", "disconnect", "ncb", "ncb-c"]).run();
    assert!(
        o.code != 0 && o.stderr.contains("keep their network interface for life"),
        "{o}"
    );
    let o = d.docker(&["network", "connect", "bridge", "ncb-c"]).run();
    assert!(o.code != 0 && o.stderr.contains("ncb-c has started"), "{o}");
    let o = d.docker(&["network", "connect", "ncb", "ncb-c"]).run();
    assert!(
        o.code != 0 && o.stderr.contains("already exists in network ncb"),
        "{o}"
    );
    d.docker(&["rm", "-f", "ncb-c", "ncb-other"]).run().ok();
    d.docker(&["network", "rm", "ncb"]).run().ok();
}
