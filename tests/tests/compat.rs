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

/// `pause` stops the whole VM (issue 15): inspect and ps say paused, a counter inside stops
/// counting, exec and attach are refused, it stays paused across a hyperd restart, inspect
/// follows the VM when it is resumed behind hyperd's back, the guest's clock is right after an
/// unpause, stop, kill and rm -f work, and the events say pause and unpause.
fn pause_stops_the_whole_vm() {
    let d = daemon();
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
