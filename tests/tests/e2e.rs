//! The end-to-end suite; see the `e2e` crate docs for how it runs and the environment it reads.
//! Each test is one area run as sequential sub-cases (VMs booted one after the other inside a
//! test; two tests at a time).

use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use e2e::*;

fn main() {
    let tests: &[(&'static str, TestFn)] = &[
        // Longest first, so the two threads stay busy.
        ("restart_safety", restart_safety),
        (
            "a_start_cut_short_by_hyperds_death",
            a_start_cut_short_by_hyperds_death,
        ),
        ("container_lifecycle", container_lifecycle),
        (
            "rm_f_leaves_the_vms_end_behind",
            rm_f_leaves_the_vms_end_behind,
        ),
        ("docker_cli", docker_cli),
        ("stop_and_signals", stop_and_signals),
        ("run_exit_codes", run_exit_codes),
        (
            "restart_keeps_an_rm_container",
            restart_keeps_an_rm_container,
        ),
        ("run_guest_isolation", run_guest_isolation),
        ("logs_and_wait", logs_and_wait),
        ("stdin_pipe", stdin_pipe),
        ("boot_failure", boot_failure),
        ("refusals", refusals),
        ("tcp_auth_and_tenants", tcp_auth_and_tenants),
        ("quota_and_usage", quota_and_usage),
        ("docker_py_with_token", docker_py_with_token),
        ("supervisor_killed", supervisor_killed),
        ("termination_protection", termination_protection),
        ("events_stream", events_stream),
        ("standby_vms", standby_vms),
        ("standby_pool_follows_bursts", standby_pool_follows_bursts),
        ("standby_floor_default", standby_floor_default),
        (
            "standby_prepared_for_an_image",
            standby_prepared_for_an_image,
        ),
        (
            "standby_pool_leaves_the_host_its_memory",
            standby_pool_leaves_the_host_its_memory,
        ),
        (
            "standby_pool_within_its_memory_bound",
            standby_pool_within_its_memory_bound,
        ),
        ("standbys_outlive_hyperd", standbys_outlive_hyperd),
        (
            "root_disk_gives_back_trimmed_blocks",
            root_disk_gives_back_trimmed_blocks,
        ),
        ("nul_bytes_refused_at_create", nul_bytes_refused_at_create),
        (
            "image_hard_link_refused_at_load",
            image_hard_link_refused_at_load,
        ),
    ];
    std::process::exit(run_tests(tests));
}

fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Lines of `hyper logs` output (stdout).
fn log_lines(d: &Daemon, name: &str) -> Vec<String> {
    d.hyper(&["logs", name])
        .run()
        .ok()
        .stdout
        .lines()
        .map(str::to_string)
        .collect()
}

fn wait_log_contains(d: &Daemon, name: &str, needle: &str, timeout: f64) {
    wait_for(
        &format!("{needle:?} in the logs of {name}"),
        secs(timeout),
        || {
            let o = d.hyper(&["logs", name]).run();
            if o.stdout.contains(needle) || o.stderr.contains(needle) {
                Ok(())
            } else {
                Err(o.to_string())
            }
        },
    );
}

fn assert_gone(d: &Daemon, id: &str) {
    wait_for(
        &format!("the VM and directory of {} to go", &id[..12]),
        secs(15.0),
        || {
            let p = container_processes(d, id);
            let dir = d.cdir(id);
            if p.is_empty() && !dir.exists() {
                Ok(())
            } else {
                Err(format!("processes {p:?}, dir exists: {}", dir.exists()))
            }
        },
    );
}

/// `docker events` from `since` to `until` (unix times), with `args` (filters, format).
fn docker_events(d: &Daemon, since: &str, until: &str, args: &[&str]) -> Out {
    let mut all = vec!["events", "--since", since, "--until", until];
    all.extend_from_slice(args);
    d.docker(&all).run().ok()
}

fn time(v: &serde_json::Value) -> DateTime<Utc> {
    let s = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("bad time {s:?}: {e}"))
        .with_timezone(&Utc)
}

// -------------------------------------------------------------------------------------------

/// `hyper run --rm busybox uname -r` shows the guest kernel; the guest sees neither the host's
/// processes nor its files.
fn run_guest_isolation() {
    let d = main_daemon();
    let o = d
        .hyper(&["run", "--rm", "busybox", "uname", "-r"])
        .run()
        .ok();
    let host = Command::new("uname").arg("-r").output().unwrap();
    let host = String::from_utf8_lossy(&host.stdout).trim().to_string();
    assert_eq!(o.out(), guest_kernel_release(), "{o}");
    assert_ne!(o.out(), host, "the guest reports the host's kernel");

    let marker = short_tmp("mark");
    std::fs::write(&marker, "host secret").unwrap();
    let script = format!(
        "ps; echo ---; cat {m} 2>&1 || true; echo ---; cat /proc/1/cmdline | tr '\\0' ' '",
        m = marker.display()
    );
    let o = d
        .hyper(&["run", "--rm", "busybox", "sh", "-c", &script])
        .run();
    std::fs::remove_file(&marker).unwrap();
    let o = o.ok();
    let parts: Vec<&str> = o.stdout.split("---\n").collect();
    assert_eq!(parts.len(), 3, "{o}");
    let procs: Vec<&str> = parts[0].lines().skip(1).collect();
    assert!(
        procs.len() <= 3,
        "the guest sees more than its own processes: {o}"
    );
    for p in &procs {
        assert!(
            p.contains("sh") || p.contains("ps"),
            "unexpected process in the guest: {p:?}\n{o}"
        );
    }
    for host_only in ["hyperd", "qemu", "hyper-agent", "cargo", "hyper-shim"] {
        assert!(!parts[0].contains(host_only), "guest sees {host_only}: {o}");
    }
    assert!(
        parts[1].contains("No such file") && !parts[1].contains("host secret"),
        "the guest reads a host file: {o}"
    );
    assert!(
        parts[2].starts_with("sh -c"),
        "PID 1 is not the container's process: {o}"
    );
}

/// run -d, ps, inspect, exec, exec -it on a terminal, rename, restart, stop, start, rm -f.
fn container_lifecycle() {
    let d = main_daemon();
    let o = d
        .hyper(&[
            "run", "-d", "--name", "web", "busybox", "httpd", "-f", "-p", "8080",
        ])
        .run()
        .ok();
    let id = o.out();
    assert!(is_id(&id), "run -d prints the ID: {o}");

    let o = d.hyper(&["ps"]).run().ok();
    let line = o
        .stdout
        .lines()
        .find(|l| l.ends_with(" web") || l.contains(" web "))
        .unwrap_or_else(|| panic!("web not in ps: {o}"));
    assert!(line.starts_with(&id[..12]) && line.contains("Up"), "{o}");

    let v = d.inspect("web");
    assert_eq!(v["Id"], id.as_str());
    assert_eq!(v["Name"], "/web");
    assert_eq!(v["State"]["Running"], true, "{v}");
    assert_eq!(v["State"]["Status"], "running");
    assert_eq!(
        v["Config"]["Cmd"],
        serde_json::json!(["httpd", "-f", "-p", "8080"])
    );
    let started1 = v["State"]["StartedAt"].clone();

    let o = d.hyper(&["exec", "web", "ps"]).run().ok();
    assert!(o.stdout.contains("httpd -f -p 8080"), "{o}");
    assert!(!o.stdout.contains("agent"), "exec ps shows the agent: {o}");

    let o = d
        .hyper(&["exec", "web", "sh", "-c", "echo out; echo err >&2; exit 4"])
        .run();
    assert_eq!(
        (o.code, o.out(), o.stderr.trim()),
        (4, "out".into(), "err"),
        "{o}"
    );

    // An interactive shell through a real terminal.
    let mut cmd = Command::new(hyper_bin());
    cmd.args(["-H", &d.unix_host(), "exec", "-it", "web", "sh"])
        .env("HYPER_CONFIG", d.data.join("noconfig"))
        .env("TERM", "xterm");
    let t = e2e::pty::run_on_pty(cmd, "#", "echo $((6*7)); exit\r", secs(60.0));
    assert_eq!(t.code, 0, "exec -it exit code; terminal:\n{}", t.output);
    assert!(
        t.output.lines().any(|l| l.trim() == "42"),
        "no 42 on the terminal:\n{:?}",
        t.output
    );

    d.hyper(&["rename", "web", "web2"]).run().ok();
    assert_eq!(d.inspect("web2")["Name"], "/web2");
    let o = d.hyper(&["inspect", "web"]).run().code(1);
    assert!(o.stderr.contains("No such object: web"), "{o}");

    d.hyper(&["restart", "-t", "1", "web2"])
        .timeout(90.0)
        .run()
        .ok();
    let v = d.wait_status("web2", "running", 30.0);
    assert_ne!(
        v["State"]["StartedAt"], started1,
        "restart did not start it again"
    );

    // httpd is PID 1 of its namespace and has no SIGTERM handler: stop must SIGKILL it.
    let t0 = Instant::now();
    d.hyper(&["stop", "-t", "1", "web2"])
        .timeout(60.0)
        .run()
        .ok();
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "stop did not wait for -t 1"
    );
    let v = d.inspect("web2");
    assert_eq!(v["State"]["Status"], "exited", "{v}");
    assert_eq!(v["State"]["ExitCode"], 137, "{v}");
    assert!(
        container_processes(d, &id).is_empty(),
        "a stopped container keeps its VM"
    );
    let o = d.hyper(&["ps"]).run().ok();
    assert!(!o.stdout.contains("web2"), "stopped container in ps: {o}");
    let o = d.hyper(&["ps", "-a"]).run().ok();
    assert!(o.stdout.contains("Exited (137)"), "{o}");

    d.hyper(&["start", "web2"]).timeout(90.0).run().ok();
    d.wait_status("web2", "running", 30.0);
    let o = d.hyper(&["exec", "web2", "ps"]).run().ok();
    assert!(o.stdout.contains("httpd"), "{o}");

    d.hyper(&["rm", "-f", "web2"]).timeout(60.0).run().ok();
    let o = d.hyper(&["ps", "-a"]).run().ok();
    assert!(!o.stdout.contains("web2"), "{o}");
    assert_gone(d, &id);
}

/// `logs` and `logs -f` (which ends when the container exits), stdout and stderr kept apart,
/// `wait` prints the exit code.
fn logs_and_wait() {
    let d = main_daemon();
    d.hyper(&[
        "run",
        "-d",
        "--name",
        "printer",
        "busybox",
        "sh",
        "-c",
        "for i in 1 2 3 4 5; do echo line$i; sleep 0.5; done; echo oops >&2; exit 5",
    ])
    .run()
    .ok();
    let t0 = Instant::now();
    let o = d.hyper(&["logs", "-f", "printer"]).timeout(60.0).run().ok();
    assert_eq!(
        o.stdout.lines().collect::<Vec<_>>(),
        ["line1", "line2", "line3", "line4", "line5"],
        "{o}"
    );
    assert_eq!(o.stderr.trim(), "oops", "{o}");
    let v = d.inspect("printer");
    assert_eq!(
        v["State"]["Status"],
        "exited",
        "logs -f returned at {:?} while {v}",
        t0.elapsed()
    );
    let o = d.hyper(&["wait", "printer"]).run().ok();
    assert_eq!(o.out(), "5", "{o}");
    assert_eq!(log_lines(d, "printer").len(), 5);
    // --tail counts the lines of both streams, as docker's does.
    let o = d.hyper(&["logs", "--tail", "2", "printer"]).run().ok();
    assert_eq!(
        (o.stdout.as_str(), o.stderr.as_str()),
        ("line5\n", "oops\n"),
        "{o}"
    );
    let id = d.id_of("printer");
    d.hyper(&["rm", "printer"]).run().ok();
    assert_gone(d, &id);
}

/// `echo hi | hyper run -i --rm busybox cat`, a few times (stdin that ends before the
/// container has started is the racy case), and with the docker CLI.
fn stdin_pipe() {
    let d = main_daemon();
    for i in 0..3 {
        let o = d
            .hyper(&["run", "-i", "--rm", "busybox", "cat"])
            .stdin(b"hi\n")
            .timeout(30.0)
            .run()
            .ok();
        assert_eq!(o.stdout, "hi\n", "test[{i}]: {o}");
    }
    let o = d
        .docker(&["run", "-i", "--rm", "busybox", "cat"])
        .stdin(b"hi\n")
        .timeout(30.0)
        .run()
        .ok();
    assert_eq!(o.stdout, "hi\n", "docker: {o}");
    let o = d
        .hyper(&["run", "-i", "--rm", "busybox", "wc", "-c"])
        .stdin(&vec![b'x'; 300_000])
        .timeout(120.0)
        .run()
        .ok();
    assert_eq!(o.out(), "300000", "{o}");
}

/// kill -s USR1 reaches a trapping shell; stop sends SIGTERM (143 from the trap) and falls back
/// to SIGKILL after -t (137 for busybox sleep, which as PID 1 ignores SIGTERM); wait prints it.
fn stop_and_signals() {
    let d = main_daemon();
    d.hyper(&[
        "run", "-d", "--name", "trapper", "busybox", "sh", "-c",
        "trap 'echo got-usr1' USR1; trap 'echo got-term; exit 143' TERM; echo ready; while :; do sleep 0.2; done",
    ])
    .run()
    .ok();
    wait_log_contains(d, "trapper", "ready", 30.0);
    d.hyper(&["kill", "-s", "USR1", "trapper"]).run().ok();
    wait_log_contains(d, "trapper", "got-usr1", 10.0);
    assert_eq!(d.inspect("trapper")["State"]["Running"], true);
    let t0 = Instant::now();
    let o = d.hyper(&["stop", "-t", "5", "trapper"]).run().ok();
    assert_eq!(o.out(), "trapper", "{o}");
    assert!(
        t0.elapsed() < secs(4.0),
        "stop waited for the timeout: the trap did not run"
    );
    let v = d.inspect("trapper");
    assert_eq!(v["State"]["ExitCode"], 143, "{v}");
    assert!(log_lines(d, "trapper").contains(&"got-term".to_string()));
    assert_eq!(d.hyper(&["wait", "trapper"]).run().ok().out(), "143");

    d.hyper(&["run", "-d", "--name", "sleeper", "busybox", "sleep", "1000"])
        .run()
        .ok();
    let t0 = Instant::now();
    d.hyper(&["stop", "-t", "1", "sleeper"])
        .timeout(60.0)
        .run()
        .ok();
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "stop did not wait 1 s"
    );
    let v = d.inspect("sleeper");
    assert_eq!(v["State"]["ExitCode"], 137, "{v}");
    assert_eq!(d.hyper(&["wait", "sleeper"]).run().ok().out(), "137");

    // kill (SIGKILL by default) of a running container.
    d.hyper(&["start", "sleeper"]).timeout(90.0).run().ok();
    d.hyper(&["kill", "sleeper"]).run().ok();
    let v = d.wait_status("sleeper", "exited", 30.0);
    assert_eq!(v["State"]["ExitCode"], 137, "{v}");

    let ids = [d.id_of("trapper"), d.id_of("sleeper")];
    d.hyper(&["rm", "trapper", "sleeper"]).run().ok();
    for id in ids {
        assert_gone(d, &id);
    }
}

/// `restart` keeps a `--rm` container and what its disk holds, as Docker's does (its end
/// skips the guest's sync only when the disk goes with it); its next stop removes it.
fn restart_keeps_an_rm_container() {
    let d = main_daemon();
    let o = d
        .hyper(&[
            "run", "-d", "--rm", "--name", "rmkept", "busybox", "sleep", "1000",
        ])
        .run()
        .ok();
    let id = o.out();
    d.hyper(&["exec", "rmkept", "sh", "-c", "echo written > /written"])
        .run()
        .ok();
    d.hyper(&["restart", "-t", "1", "rmkept"])
        .timeout(90.0)
        .run()
        .ok();
    let o = d.hyper(&["exec", "rmkept", "cat", "/written"]).run().ok();
    assert_eq!(
        o.out(),
        "written",
        "the file written before the restart: {o}"
    );
    assert_eq!(d.inspect("rmkept")["State"]["Status"], "running");

    d.hyper(&["stop", "-t", "1", "rmkept"])
        .timeout(60.0)
        .run()
        .ok();
    wait_for("the stopped --rm container to go", secs(30.0), || {
        match d.hyper(&["inspect", "rmkept"]).run() {
            o if o.code == 1 => Ok(()),
            o => Err(o.to_string()),
        }
    });
    assert_gone(d, &id);
}

/// Docker's exit codes for `run`.
fn run_exit_codes() {
    let d = main_daemon();
    d.hyper(&["run", "--rm", "busybox", "sh", "-c", "exit 3"])
        .run()
        .code(3);
    let o = d
        .hyper(&["run", "--rm", "busybox", "nosuch"])
        .timeout(90.0)
        .run()
        .code(127);
    assert!(o.stderr.contains("nosuch"), "{o}");
    let o = d
        .hyper(&["run", "--rm", "busybox", "/etc/passwd"])
        .timeout(90.0)
        .run()
        .code(126);
    assert!(o.stderr.to_lowercase().contains("permission denied"), "{o}");
    let o = d
        .hyper(&["run", "--name", "bad name!", "busybox", "true"])
        .run()
        .code(125);
    assert!(o.stderr.contains("name"), "{o}");
    d.hyper(&[
        "run",
        "--rm",
        "--mount",
        "type=bind,src=/tmp,dst=/c",
        "busybox",
        "true",
    ])
    .run()
    .code(125);
    // --rm containers whose start failed are gone.
    let o = d.hyper(&["ps", "-a", "--no-trunc"]).run().ok();
    for c in ["nosuch", "/etc/passwd", "bad name"] {
        assert!(!o.stdout.contains(c), "{c} left behind: {o}");
    }
}

/// What a VM cannot do is refused with a message naming the option; Docker's errors for unknown
/// containers and names in use.
fn refusals() {
    let d = main_daemon();
    let cases: &[(&[&str], &str)] = &[
        // `hyper run -v /etc:/x` uploads the directory into a new volume; a bind is refused.
        (&["--mount", "type=bind,src=/etc,dst=/hostetc"], "bind"),
        (&["--privileged"], "privileged"),
        (&["--network", "host"], "network"),
        (&["--device", "/dev/kvm"], "device"),
    ];
    for (i, (flags, word)) in cases.iter().enumerate() {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["busybox", "true"]);
        let o = d.hyper(&args).run();
        assert_eq!(o.code, 125, "test[{i}]: {o}");
        assert!(
            o.stderr.to_lowercase().contains(word),
            "test[{i}]: message does not name {word}: {o}"
        );
        // The stock docker CLI gets the same refusal.
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["busybox", "true"]);
        let o = d.docker(&args).run();
        assert_eq!(o.code, 125, "test[{i}] docker: {o}");
        assert!(
            o.stderr.to_lowercase().contains(word),
            "test[{i}] docker: {o}"
        );
    }
    for (i, cmd) in [
        &["inspect", "nosuchctr"][..],
        &["stop", "nosuchctr"],
        &["rm", "nosuchctr"],
        &["logs", "nosuchctr"],
        &["exec", "nosuchctr", "true"],
        &["kill", "nosuchctr"],
    ]
    .iter()
    .enumerate()
    {
        let o = d.hyper(cmd).run();
        assert_eq!(o.code, 1, "test[{i}]: {o}");
        // docker's wording: inspect looks for any object type.
        let want = if cmd[0] == "inspect" {
            "No such object"
        } else {
            "No such container"
        };
        assert!(o.stderr.contains(want), "test[{i}]: {o}");
    }

    let o = d
        .hyper(&["create", "--name", "dup", "busybox", "true"])
        .run()
        .ok();
    let id = o.out();
    let o = d
        .hyper(&["create", "--name", "dup", "busybox", "true"])
        .run()
        .code(125);
    assert!(
        o.stderr.contains("already in use") && o.stderr.contains("Conflict"),
        "{o}"
    );
    let o = Cmd::new(
        "curl",
        &[
            "-s",
            "-w",
            "\n%{http_code}",
            "--unix-socket",
            d.sock.to_str().unwrap(),
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"Image":"busybox"}"#,
            "http://hyper/v1.44/containers/create?name=dup",
        ],
    )
    .run()
    .ok();
    let (body, status) = o.stdout.rsplit_once('\n').unwrap();
    assert_eq!(status, "409", "{o}");
    let v: serde_json::Value = serde_json::from_str(body).expect("JSON error body");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("already in use"),
        "{o}"
    );
    d.hyper(&["rm", "dup"]).run().ok();
    assert_gone(d, &id);
}

/// The stock docker CLI against the unix socket.
fn docker_cli() {
    let d = main_daemon();
    let o = d
        .docker(&["run", "--rm", "busybox", "echo", "hi"])
        .timeout(90.0)
        .run()
        .ok();
    assert_eq!(o.stdout, "hi\n", "{o}");

    let o = d
        .docker(&[
            "run",
            "-d",
            "--name",
            "dk",
            "busybox",
            "sh",
            "-c",
            "echo hello-docker; sleep 1000",
        ])
        .timeout(90.0)
        .run()
        .ok();
    let id = o.out();
    assert!(is_id(&id), "{o}");
    let o = d
        .docker(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"])
        .run()
        .ok();
    assert!(o.stdout.lines().any(|l| l.starts_with("dk Up")), "{o}");
    let o = d.docker(&["inspect", "dk"]).run().ok();
    let v = o.json()[0].clone();
    assert_eq!(
        (v["Id"].as_str(), v["Name"].as_str()),
        (Some(id.as_str()), Some("/dk"))
    );
    assert_eq!(v["State"]["Running"], true);
    let o = d.docker(&["exec", "dk", "echo", "in-exec"]).run().ok();
    assert_eq!(o.stdout, "in-exec\n", "{o}");
    let o = d.docker(&["exec", "dk", "sh", "-c", "exit 9"]).run();
    assert_eq!(o.code, 9, "{o}");
    wait_for("hello-docker in docker logs", secs(10.0), || {
        let o = d.docker(&["logs", "dk"]).run();
        if o.stdout == "hello-docker\n" {
            Ok(())
        } else {
            Err(o.to_string())
        }
    });
    let o = d
        .docker(&["inspect", "-f", "{{.State.Status}} {{.Name}}", "dk"])
        .run()
        .ok();
    assert_eq!(o.out(), "running /dk");
    d.docker(&["rm", "-f", "dk"]).timeout(60.0).run().ok();
    let o = d.docker(&["ps", "-a"]).run().ok();
    assert!(!o.stdout.contains("dk"), "{o}");
    assert_gone(d, &id);

    // docker run --rm of a missing executable: 127, and the daemon removes the container
    // (the docker CLI waits for that removal).
    let o = d
        .docker(&["run", "--rm", "busybox", "nosuch"])
        .timeout(40.0)
        .run();
    assert_eq!(o.code, 127, "{o}");
    let o = d.docker(&["ps", "-a", "--no-trunc"]).run().ok();
    assert!(!o.stdout.contains("nosuch"), "{o}");
}

// -------------------------------------------------------------------------------------------

/// TCP is TLS by default. Unsigned and badly signed requests get 401; the CLI signs with the
/// keys written at first start (and checks the server against the CA written with them); a
/// second tenant sees nothing of the first; a revoked key stops working; a token and a client
/// certificate let clients in that cannot sign (docker-py, the stock Docker CLI).
fn tcp_auth_and_tenants() {
    let dd = Daemon::start("t", DaemonOpts::default());
    let d: &Daemon = &dd;
    let ca = d.data.join("tls").join("ca.pem");
    let ca_arg = ca.to_str().unwrap().to_string();
    let url = format!("https://127.0.0.1:{}/v1.44/containers/json", d.tcp_port);
    let curl = |extra: &[&str]| {
        let mut a = vec![
            "-s",
            "--cacert",
            ca_arg.as_str(),
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ];
        a.extend_from_slice(extra);
        a.push(&url);
        Cmd::new("curl", &a).run().ok().stdout
    };
    assert_eq!(curl(&[]), "401", "unsigned request");
    let cfg: serde_json::Value = serde_json::from_slice(
        &std::fs::read(d.client_dir.join("config.json"))
            .expect("config.json written at first start"),
    )
    .unwrap();
    let cloud = &cfg["clouds"][d.tcp_host().as_str()];
    assert_eq!(
        cloud["tlscacert"].as_str(),
        Some(ca_arg.as_str()),
        "the CA is recorded for the CLI"
    );
    let ak = cloud["accesskey"].as_str().expect("accesskey").to_string();
    let date = Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let auth = format!(
        "Authorization: HYPER-HMAC-SHA256 Credential={ak}/{}/us-west-1/hyper/hyper_request, SignedHeaders=content-type;host;x-hyper-content-sha256;x-hyper-date, Signature={}",
        &date[..8],
        "0".repeat(64)
    );
    let status = curl(&[
        "-H",
        &auth,
        "-H",
        &format!("X-Hyper-Date: {date}"),
        "-H",
        "X-Hyper-Content-Sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "-H",
        "Content-Type: application/json",
    ]);
    assert_eq!(status, "401", "badly signed request");

    let o = d
        .hyper(&["create", "--name", "mine", "busybox", "true"])
        .run()
        .ok();
    let id = o.out();
    let o = d.hyper_tcp(&d.client_dir, &["ps", "-a"]).run().ok();
    assert!(o.stdout.contains("mine"), "default tenant over TCP: {o}");
    d.hyper_tcp(&d.client_dir, &["inspect", &id]).run().ok();

    // A second tenant, created while the daemon runs.
    let admin = |args: &[&str]| d.tenant_admin(args);
    let (dir2, ak2) = d.new_tenant("t2");
    let o = d.hyper_tcp(&dir2, &["ps", "-a"]).run().ok();
    assert!(
        !o.stdout.contains("mine") && !o.stdout.contains(&id[..12]),
        "tenant t2 sees the default tenant's container: {o}"
    );
    let o = d.hyper_tcp(&dir2, &["inspect", &id]).run();
    assert_eq!(o.code, 1, "{o}");
    assert!(o.stderr.contains("No such object"), "{o}");
    let o = d.hyper_tcp(&dir2, &["logs", &id]).run();
    assert!(o.code == 1 && o.stderr.contains("No such container"), "{o}");
    let o = Cmd::new(
        "curl",
        &[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
            &ca_arg,
            "-X",
            "DELETE",
            &format!("https://127.0.0.1:{}/containers/{id}", d.tcp_port),
        ],
    )
    .run()
    .ok();
    assert_eq!(o.stdout, "401");
    let o = d.hyper_tcp(&dir2, &["rm", "-f", &id]).run();
    assert_eq!(o.code, 1, "t2 removed the default tenant's container: {o}");
    // Images belong to tenants too: t2 has none until it loads one.
    let o = d.hyper_tcp(&dir2, &["images", "-q"]).run().ok();
    assert_eq!(o.out(), "", "t2 sees the default tenant's images: {o}");
    d.hyper_tcp(&dir2, &["load", "-i", busybox_tar().to_str().unwrap()])
        .timeout(60.0)
        .run()
        .ok();
    let o = d
        .hyper_tcp(&dir2, &["create", "--name", "mine", "busybox", "true"])
        .run();
    assert_eq!(o.code, 0, "names are per tenant: {o}");
    let o = d.hyper(&["ps", "-a", "--no-trunc"]).run().ok();
    assert!(o.stdout.contains(&id), "{o}");
    d.hyper_tcp(&d.client_dir, &["rm", "mine"]).run().ok();
    d.hyper_tcp(&dir2, &["rm", "mine"]).run().ok();

    // A token, for clients that cannot sign: t2's token sees t2's world only.
    let token = admin(&["token", "t2"]).out();
    let with_token = |token: &str| {
        let header = format!("X-Hyper-Token: {token}");
        curl(&["-H", &header])
    };
    assert_eq!(with_token(&token), "200");
    assert_eq!(with_token("hyt_forged"), "401");

    // The stock Docker CLI over TLS with a client certificate of t2.
    let certs = d.data.join("t2certs");
    admin(&["cert", "t2", "--out", certs.to_str().unwrap()]);
    let tls_docker = |args: &[&str]| {
        let host = d.tcp_host();
        let mut a = vec!["--tlsverify", "-H", host.as_str()];
        a.extend_from_slice(args);
        Cmd::new(docker_bin(), &a)
            .env("DOCKER_CERT_PATH", &certs)
            .run()
    };
    let o = tls_docker(&["ps", "-a", "--format", "{{.Names}}"]);
    assert_eq!(o.code, 0, "docker --tlsverify with t2's certificate: {o}");
    assert!(
        !o.stdout.contains(&id[..12]) && !o.stdout.contains("mine"),
        "{o}"
    );
    let o = tls_docker(&["inspect", &id]);
    assert_ne!(
        o.code, 0,
        "t2 inspected the default tenant's container over TLS: {o}"
    );

    // A client certificate of another CA gets a 401 that says so.
    let foreign = d.data.join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    let (fcert, fkey) = (foreign.join("cert.pem"), foreign.join("key.pem"));
    Cmd::new(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=t2",
            "-keyout",
            fkey.to_str().unwrap(),
            "-out",
            fcert.to_str().unwrap(),
        ],
    )
    .run()
    .ok();
    let o = Cmd::new(
        "curl",
        &[
            "-s",
            "--cacert",
            &ca_arg,
            "--cert",
            fcert.to_str().unwrap(),
            "--key",
            fkey.to_str().unwrap(),
            &url,
        ],
    )
    .run()
    .ok();
    assert!(
        o.stdout.contains("not issued by this cloud's CA"),
        "foreign client certificate: {o}"
    );

    // Revoked keys stop working at once.
    admin(&["revoke", &ak2]);
    let o = d.hyper_tcp(&dir2, &["ps"]).run();
    assert_ne!(o.code, 0, "a revoked key still works: {o}");
    assert!(o.stderr.contains("was revoked on"), "{o}");
}

/// hyperd killed while a start is in flight: the next hyperd ends what that start left (a
/// supervisor and its VM that no record counts as running), and only then removes the VM's
/// group, which it could not while the VM was in it (it used to wait 10 s for it, and warn).
fn a_start_cut_short_by_hyperds_death() {
    let dd = Daemon::start("k", DaemonOpts::default());
    let d: &Daemon = &dd;
    // A size the standby pool does not hold, so that the start restores or boots a VM of its
    // own and is in flight long enough to be caught.
    let caught = (1..=3).find_map(|attempt| {
        let name = format!("cut{attempt}");
        let run = [
            "run", "-d", "--name", &name, "--size", "s3", "busybox", "sleep", "1000",
        ];
        std::thread::scope(|s| {
            let start = s.spawn(|| d.hyper(&run).timeout(300.0).run());
            let in_flight = wait_for("the start's VM", secs(120.0), || {
                let v = d.hyper(&["inspect", &name]).run();
                if v.code != 0 {
                    return Err(format!("not created yet: {v}"));
                }
                let v = v.json();
                let (id, status) = (
                    v[0]["Id"].as_str().unwrap_or_default(),
                    &v[0]["State"]["Status"],
                );
                let vm = container_processes(d, id)
                    .iter()
                    .any(|p| p.contains("qemu-system"));
                match status.as_str() {
                    Some("created") if vm => Ok(Some(id.to_string())),
                    Some("created") => Err("no VM yet".into()),
                    _ => Ok(None),
                }
            });
            if in_flight.is_some() {
                d.kill9();
            }
            let _ = start.join();
            in_flight
        })
    });
    let id = caught.expect("no start was caught in flight in 3 attempts");
    d.start_again();
    wait_for("nothing of the cut start to run", secs(30.0), || {
        let left = container_processes(d, &id);
        left.is_empty().then_some(()).ok_or(left.join("; "))
    });
    let log = std::fs::read_to_string(&d.log).unwrap_or_default();
    assert!(
        !log.contains(&format!("{id}: Device or resource busy")),
        "the VM's group was removed before its VM was ended:\n{}",
        d.log_tail(30)
    );
    assert_ne!(d.inspect(&id)["State"]["Status"], "running");
    d.hyper(&["rm", "-f", &id]).timeout(60.0).run().ok();
}

/// `rm -f` of a running container without volumes answers once its VM is frozen, not once
/// QEMU has exited: the container is gone at once, `die` (137) comes before `destroy` as from
/// Docker, and its VM, supervisor and directory follow. A hyperd stopped right after such a
/// removal finishes the VM's teardown before it exits; one that died after a removal froze a
/// VM and before the record went ends that VM when it starts again, and the container shows
/// the exit; one that died after the record went ends the VM and removes its group.
fn rm_f_leaves_the_vms_end_behind() {
    let dd = Daemon::start("td", DaemonOpts::default());
    let d: &Daemon = &dd;
    let since = Utc::now().timestamp().to_string();
    let ids: Vec<String> = ["td0", "td1"]
        .iter()
        .map(|name| {
            d.hyper(&["run", "-d", "--name", name, "busybox", "sleep", "1000"])
                .timeout(300.0)
                .run()
                .ok()
                .out()
        })
        .collect();
    d.hyper(&["rm", "-f", "td0"]).timeout(60.0).run().ok();
    let o = d.hyper(&["ps", "-a"]).run().ok();
    assert!(!o.stdout.contains("td0"), "{o}");
    d.hyper(&["inspect", "td0"]).run().code(1);
    assert_gone(d, &ids[0]);
    let until = (Utc::now().timestamp() + 1).to_string();
    let o = docker_events(
        d,
        &since,
        &until,
        &[
            "--filter",
            "container=td0",
            "--format",
            "{{.Action}} {{.Actor.Attributes.exitCode}}",
        ],
    );
    let actions: Vec<&str> = o.stdout.lines().map(str::trim).collect();
    let at = |a: &str| actions.iter().position(|l| l.starts_with(a));
    assert!(
        matches!((at("die 137"), at("destroy ")), (Some(die), Some(destroy)) if die < destroy),
        "die (137), then destroy: {o}"
    );
    d.hyper(&["rm", "-f", "td1"]).timeout(60.0).run().ok();
    d.terminate();
    let left = container_processes(d, &ids[1]);
    assert!(
        left.is_empty() && !d.cdir(&ids[1]).exists(),
        "a stopped hyperd left the removed container's VM {left:?} or directory ({}):\n{}",
        d.cdir(&ids[1]).exists(),
        d.log_tail(30)
    );
    d.start_again();
    let cut = d
        .hyper(&["run", "-d", "--name", "td2", "busybox", "sleep", "1000"])
        .timeout(300.0)
        .run()
        .ok()
        .out();
    let state = std::fs::read(d.cdir(&cut).join("state.json")).expect("the VM's state.json");
    let state: serde_json::Value = serde_json::from_slice(&state).expect("state.json");
    let qemu = state["qemu_pid"].as_i64().expect("qemu_pid") as i32;
    // As a removal leaves the VM before its record goes.
    // SAFETY: plain kill(2) of the QEMU this container's state names.
    unsafe { libc::kill(qemu, libc::SIGSTOP) };
    d.kill9();
    d.start_again();
    let v = d.wait_status("td2", "exited", 60.0);
    assert_eq!(v["State"]["ExitCode"], 137, "{v}");
    wait_for("the frozen VM to go", secs(15.0), || {
        let left = container_processes(d, &cut);
        left.is_empty().then_some(()).ok_or(left.join("; "))
    });
    d.hyper(&["rm", "td2"]).timeout(60.0).run().ok();
    // hyperd killed while a removed VM waits frozen for its kill: the next one ends it, and its
    // group goes (the suite's leftover check looks for groups).
    let frozen = d
        .hyper(&["run", "-d", "--name", "td3", "busybox", "sleep", "1000"])
        .timeout(300.0)
        .run()
        .ok()
        .out();
    d.hyper(&["rm", "-f", "td3"]).timeout(60.0).run().ok();
    d.kill9();
    d.start_again();
    assert_gone(d, &frozen);
}

/// kill -9 hyperd: containers carry on, exits are recorded by their shims, a new hyperd picks
/// everything up.
fn restart_safety() {
    let dd = Daemon::start("r", DaemonOpts::default());
    let d: &Daemon = &dd;
    let counter = d
        .hyper(&[
            "run",
            "-d",
            "--name",
            "counter",
            "busybox",
            "sh",
            "-c",
            "i=0; while :; do echo $i; i=$((i+1)); sleep 0.2; done",
        ])
        .run()
        .ok()
        .out();
    let seven = d
        .hyper(&[
            "run",
            "-d",
            "--name",
            "seven",
            "busybox",
            "sh",
            "-c",
            "sleep 3; exit 7",
        ])
        .run()
        .ok()
        .out();
    // A `--rm` container whose end hyperd recorded but did not get to remove (made so in the
    // store while no hyperd runs, below) goes once hyperd is back, as dockerd's do at its start.
    let ended = d
        .hyper(&["run", "-d", "--name", "ended", "busybox", "true"])
        .run()
        .ok()
        .out();
    wait_for("ended to exit", secs(60.0), || {
        match d.inspect("ended")["State"]["Status"].as_str() {
            Some("exited") => Ok(()),
            s => Err(format!("{s:?}")),
        }
    });
    d.kill9();
    let killed_at = Utc::now();
    set_auto_remove(&d.data, &ended);
    let log = d.cdir(&counter).join("ctr.log");
    let lines_at_kill = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .count();

    // The second container exits while no hyperd runs: its shim records the exit and goes.
    wait_for("seven to exit under its shim", secs(30.0), || {
        let st = std::fs::read_to_string(d.cdir(&seven).join("state.json")).unwrap_or_default();
        let p = container_processes(d, &seven);
        if st.contains("\"exited\"") && p.is_empty() {
            Ok(())
        } else {
            Err(format!("state {st}, processes {p:?}"))
        }
    });
    // The counter keeps counting meanwhile.
    wait_for("counter to keep logging without hyperd", secs(20.0), || {
        let n = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count();
        if n >= lines_at_kill + 10 {
            Ok(())
        } else {
            Err(format!("{n} lines, {lines_at_kill} at kill"))
        }
    });
    let back_at = Utc::now();
    d.restart();

    let v = d.inspect("seven");
    assert_eq!(v["State"]["Status"], "exited", "{v}");
    assert_eq!(v["State"]["ExitCode"], 7, "{v}");
    let fin = time(&v["State"]["FinishedAt"]);
    assert!(
        fin < back_at,
        "FinishedAt {fin} is not before hyperd came back ({back_at})"
    );
    assert!(
        fin > killed_at - chrono::Duration::seconds(1),
        "FinishedAt {fin} before the kill {killed_at}?"
    );
    let o = d.hyper(&["ps", "-a"]).run().ok();
    assert!(
        o.stdout
            .lines()
            .any(|l| l.contains("seven") && l.contains("Exited (7)")),
        "{o}"
    );

    let v = d.inspect("counter");
    assert_eq!(v["State"]["Running"], true, "{v}");
    let before = log_lines(d, "counter").len();
    wait_for("counter logs to grow after the restart", secs(10.0), || {
        let n = log_lines(d, "counter").len();
        if n > before + 3 {
            Ok(())
        } else {
            Err(format!("{n} lines"))
        }
    });
    let nums: Vec<u64> = log_lines(d, "counter")
        .iter()
        .map(|l| {
            l.trim()
                .parse()
                .unwrap_or_else(|_| panic!("not a number: {l:?}"))
        })
        .collect();
    assert_eq!(nums[0], 0);
    for w in nums.windows(2) {
        assert_eq!(w[1], w[0] + 1, "gap in the counter's logs around {}", w[0]);
    }
    assert!(nums.len() > lines_at_kill + 10);
    // Streams still work on a container adopted after the restart.
    let o = d.hyper(&["exec", "counter", "echo", "adopted"]).run().ok();
    assert_eq!(o.out(), "adopted");

    d.hyper(&["inspect", "ended"]).run().code(1);
    assert_gone(d, &ended);

    d.hyper(&["rm", "-f", "counter", "seven"])
        .timeout(60.0)
        .run()
        .ok();
    assert_gone(d, &counter);
    assert_gone(d, &seven);
}

/// Sets `AutoRemove` in container `id`'s record, in the store of a hyperd that is not running.
fn set_auto_remove(data: &std::path::Path, id: &str) {
    use store::Store;
    let st = store::RedbStore::open(&data.join("store.redb")).expect("open the store");
    let kv = st
        .range("/containers/")
        .expect("range /containers/")
        .into_iter()
        .find(|kv| kv.key.ends_with(id))
        .expect("the container's record");
    let mut v: serde_json::Value = serde_json::from_slice(&kv.value).expect("record JSON");
    v["host_config"]["AutoRemove"] = true.into();
    st.put(&kv.key, serde_json::to_vec(&v).unwrap())
        .expect("write the record");
}

/// A guest kernel that panics: `run` fails within the boot timeout with the console's last
/// lines, exit 125, and leaves no VM.
fn boot_failure() {
    let dd = Daemon::start(
        "b",
        DaemonOpts {
            kernel_cmdline_extra: Some("rdinit=/nonexistent init=/nonexistent panic=1".into()),
            boot_timeout: Some(20),
            ..DaemonOpts::default()
        },
    );
    let d: &Daemon = &dd;
    let t0 = Instant::now();
    let o = d
        .hyper(&["run", "--name", "broken", "busybox", "true"])
        .timeout(120.0)
        .run()
        .code(125);
    let took = t0.elapsed();
    assert!(
        took < secs(20.0) + Duration::from_secs(10),
        "took {took:?} for a boot timeout of 20 s"
    );
    assert!(
        o.stderr.contains("Kernel panic")
            || o.stderr.contains("VFS")
            || o.stderr.contains("nonexistent"),
        "the error does not carry the guest console: {o}"
    );
    let id = d.id_of("broken");
    assert!(
        container_processes(d, &id).is_empty(),
        "VM left after a failed boot"
    );
    for f in ["shim.sock", "agent.sock"] {
        assert!(
            !d.cdir(&id).join(f).exists(),
            "{f} left after a failed boot"
        );
    }
    d.hyper(&["rm", "-f", "broken"]).run().ok();
    assert_gone(d, &id);

    let o = d
        .hyper(&["run", "--rm", "busybox", "true"])
        .timeout(120.0)
        .run()
        .code(125);
    let o2 = d.hyper(&["ps", "-aq"]).run().ok();
    assert_eq!(
        o2.out(),
        "",
        "run --rm with a failed boot leaves a container: {o}"
    );
    let c = std::fs::read_dir(d.data.join("c"))
        .map(|r| r.count())
        .unwrap_or(0);
    assert_eq!(c, 0, "container dirs left after failed boots");
}

// -------------------------------------------------------------------------------------------

/// Quotas hold under concurrency; usage bills each run segment max(10, ceil(seconds)) at the
/// size's price, exactly from the times the supervisor recorded, even across a kill -9 of hyperd.
fn quota_and_usage() {
    let dd = Daemon::start("q", DaemonOpts::default());
    let d: &Daemon = &dd;
    // 20 concurrent creates against the default quota of 10 leave exactly 10.
    let results: Vec<Out> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|_| s.spawn(|| d.hyper(&["create", "busybox", "true"]).run()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let created = results.iter().filter(|o| o.code == 0).count();
    assert_eq!(created, 10, "20 concurrent creates against a quota of 10");
    let refused = results
        .iter()
        .find(|o| o.code != 0)
        .expect("some were refused");
    assert!(
        refused.stderr.contains("quota exceeded") && refused.stderr.contains("10 containers"),
        "{refused}"
    );
    let ids = d.hyper(&["ps", "-aq", "--no-trunc"]).run().ok().out();
    assert_eq!(ids.lines().count(), 10);
    for id in ids.lines() {
        d.hyper(&["rm", id]).run().ok();
    }

    // A short run bills the 10-second minimum: s1 costs 400 nano-dollars a second.
    d.hyper(&[
        "run", "--rm", "--size", "s1", "--name", "short", "busybox", "true",
    ])
    .run()
    .ok();
    // A longer run exits while hyperd is down; its supervisor's times are what gets billed.
    let long = d
        .hyper(&[
            "run", "-d", "--size", "s2", "--name", "long", "busybox", "sleep", "11",
        ])
        .run()
        .ok()
        .out();
    d.kill9();
    wait_for("long to exit under its shim", secs(40.0), || {
        let st = std::fs::read_to_string(d.cdir(&long).join("state.json")).unwrap_or_default();
        if st.contains("\"exited\"") {
            Ok(())
        } else {
            Err(st)
        }
    });
    d.restart();
    let state = &d.wait_status("long", "exited", 30.0)["State"];
    let time = |k: &str| chrono::DateTime::parse_from_rfc3339(state[k].as_str().unwrap()).unwrap();
    let ran = time("FinishedAt") - time("StartedAt");
    let want_long = ((ran.num_nanoseconds().unwrap() + 999_999_999) / 1_000_000_000).max(10);

    let usage = d.hyper(&["usage", "-f", "{{json .}}"]).run().ok().json();
    let resources = usage["Resources"].as_array().unwrap();
    let find = |name: &str, kind: &str| {
        resources
            .iter()
            .find(|r| r["Name"] == name && r["Type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} usage for {name}: {usage}"))
            .clone()
    };
    let short = find("short", "container");
    assert_eq!(
        (short["Seconds"].as_i64(), short["Cost"].as_u64()),
        (Some(10), Some(4_000)),
        "{short}"
    );
    let long_usage = find("long", "container");
    assert_eq!(
        long_usage["Seconds"].as_i64(),
        Some(want_long),
        "{long_usage} vs ran {ran}"
    );
    assert_eq!(
        long_usage["Cost"].as_u64(),
        Some(want_long as u64 * 600),
        "{long_usage}"
    );
    // Storage: the root disk (10 GB) and the image are billed per GB-month, by the second.
    let disk = find("long", "rootfs");
    let (disk_seconds, disk_cost) = (
        disk["Seconds"].as_u64().unwrap(),
        disk["Cost"].as_u64().unwrap(),
    );
    assert_eq!(
        disk_cost,
        (disk_seconds * 10_000_000_000).div_ceil(25_920_000),
        "{disk}"
    );
    find("busybox:latest", "image");
    let sum: u64 = resources.iter().map(|r| r["Cost"].as_u64().unwrap()).sum();
    assert_eq!(usage["TotalCost"].as_u64(), Some(sum), "{usage}");
    let table = d.hyper(&["usage"]).run().ok().stdout;
    assert!(table.contains("TOTAL") && table.contains("long"), "{table}");
    d.hyper(&["rm", "long"]).run().ok();
}

/// docker-py cannot sign: it gets in over TLS with a tenant token sent through the Docker
/// client's configurable HTTP headers, and sees that tenant's containers only.
fn docker_py_with_token() {
    let dd = Daemon::start("p", DaemonOpts::default());
    let d: &Daemon = &dd;
    let admin = |args: &[&str]| d.tenant_admin(args);
    // The default tenant's container must stay invisible to t2.
    d.hyper(&["create", "--name", "pyhidden", "busybox", "true"])
        .run()
        .ok();
    let keys = admin(&["create", "t2"]);
    let field = |k: &str| {
        keys.stdout
            .lines()
            .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
            .unwrap()
    };
    let dir2 = d.data.join("t2cfg");
    std::fs::create_dir_all(&dir2).unwrap();
    let cloud = serde_json::json!({"accesskey": field("access key:"), "secretkey": field("secret key:"), "region": "us-west-1"});
    std::fs::write(
        dir2.join("config.json"),
        serde_json::json!({"clouds": {d.tcp_host(): cloud}}).to_string(),
    )
    .unwrap();
    d.hyper_tcp(&dir2, &["load", "-i", busybox_tar().to_str().unwrap()])
        .timeout(60.0)
        .run()
        .ok();
    let id = d
        .hyper_tcp(&dir2, &["create", "--name", "pyvisible", "busybox", "true"])
        .run()
        .ok()
        .out();
    let token = admin(&["token", "t2"]).out();
    let other = d;
    let docker_config = other.data.join("dockercfg");
    std::fs::create_dir_all(&docker_config).unwrap();
    std::fs::write(
        docker_config.join("config.json"),
        serde_json::json!({"HttpHeaders": {"X-Hyper-Token": token}}).to_string(),
    )
    .unwrap();
    let script = r#"
import sys, docker
from docker.tls import TLSConfig
c = docker.DockerClient(base_url=sys.argv[1], tls=TLSConfig(ca_cert=sys.argv[2], verify=True), version="auto")
print(" ".join(sorted(x.name for x in c.containers.list(all=True))))
print(c.containers.get(sys.argv[3]).attrs["Name"])
try:
    c.containers.get("pyhidden")
    print("VISIBLE")
except docker.errors.NotFound:
    print("notfound")
"#;
    let url = format!("https://127.0.0.1:{}", other.tcp_port);
    let ca = other.data.join("tls").join("ca.pem");
    let o = Cmd::new("python3", &["-c", script, &url, ca.to_str().unwrap(), &id])
        .env("DOCKER_CONFIG", &docker_config)
        // requests lets these override the client's own CA; point them at ours.
        .env("REQUESTS_CA_BUNDLE", &ca)
        .env("CURL_CA_BUNDLE", &ca)
        .run();
    assert_eq!(
        o.code, 0,
        "docker-py with a token (is the docker package installed? scripts/deps installs it): {o}"
    );
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines, ["pyvisible", "/pyvisible", "notfound"], "{o}");
    d.hyper_tcp(&dir2, &["rm", "pyvisible"]).run().ok();
    d.hyper(&["rm", "pyhidden"]).run().ok();
}

/// A VM supervisor killed with SIGKILL: the container is recorded as killed (137) and its VM
/// does not outlive it.
fn supervisor_killed() {
    let d = main_daemon();
    let id = d
        .hyper(&["run", "-d", "--name", "orphan", "busybox", "sleep", "1000"])
        .run()
        .ok()
        .out();
    let pid: i32 = std::fs::read_to_string(d.cdir(&id).join("shim.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: plain kill(2) of the container's supervisor, whose pid it recorded.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let state = &d.wait_status("orphan", "exited", 30.0)["State"];
    assert_eq!(state["ExitCode"], 137, "{state}");
    wait_for("the orphaned VM to be killed", secs(20.0), || {
        let p = container_processes(d, &id);
        if p.is_empty() {
            Ok(())
        } else {
            Err(format!("{p:?}"))
        }
    });
    d.hyper(&["rm", "orphan"]).run().ok();
}

/// `--protection=true`: stop, kill, restart and rm (forced too) are refused, through hyper and
/// the Docker CLI, until `hyper update --protection=false` lifts it.
fn termination_protection() {
    let d = main_daemon();
    let id = d
        .hyper(&[
            "run",
            "-d",
            "--protection=true",
            "--name",
            "guarded",
            "busybox",
            "sleep",
            "1000",
        ])
        .run()
        .ok()
        .out();
    let labels = &d.inspect("guarded")["Config"]["Labels"];
    assert_eq!(labels["sh_hyper_container_protection"], "true", "{labels}");
    for args in [
        vec!["stop", "-t", "1", "guarded"],
        vec!["kill", "guarded"],
        vec!["restart", "guarded"],
        vec!["rm", "-f", "guarded"],
    ] {
        let o = d.hyper(&args).run();
        assert_ne!(o.code, 0, "{args:?} of a protected container: {o}");
        assert!(o.stderr.contains("protected"), "{o}");
    }
    let o = d.docker(&["rm", "-f", "guarded"]).run();
    assert!(
        o.code != 0 && o.stderr.contains("protected"),
        "docker rm -f: {o}"
    );
    assert_eq!(d.inspect("guarded")["State"]["Running"], true);
    d.hyper(&["update", "--protection=false", "guarded"])
        .run()
        .ok();
    d.hyper(&["rm", "-f", "guarded"]).run().ok();
    assert_gone(d, &id);
}

/// `docker events` replays the tenant's events from observed state: a process that exits by
/// itself is a `die`, with its exit code; filters pick the container.
fn events_stream() {
    let d = main_daemon();
    let since = Utc::now().timestamp().to_string();
    d.hyper(&["run", "--name", "evt", "busybox", "sh", "-c", "exit 3"])
        .run()
        .code(3);
    d.hyper(&["rename", "evt", "evt2"]).run().ok();
    d.hyper(&["rm", "evt2"]).run().ok();
    let until = (Utc::now().timestamp() + 1).to_string();
    let o = docker_events(
        d,
        &since,
        &until,
        &["--filter", "container=evt2", "--format", "{{.Action}}"],
    );
    let actions: Vec<&str> = o.stdout.lines().map(str::trim).collect();
    assert_eq!(
        actions,
        ["rename", "destroy"],
        "events of evt2 by name: {o}"
    );
    let o = d
        .hyper(&[
            "events",
            "--since",
            &since,
            "--until",
            &until,
            "--filter",
            "container=evt2",
            "--format",
            "{{.Action}}",
        ])
        .run()
        .ok();
    assert_eq!(
        o.stdout.lines().collect::<Vec<_>>(),
        ["rename", "destroy"],
        "hyper events: {o}"
    );
    let o = docker_events(
        d,
        &since,
        &until,
        &[
            "--filter",
            "event=die",
            "--format",
            "{{.Actor.Attributes.name}} {{.Actor.Attributes.exitCode}}",
        ],
    );
    assert!(
        o.stdout.lines().any(|l| l.trim() == "evt 3"),
        "the die event with its exit code: {o}"
    );
    // Hyper's websocket stream, with Hyper's filter syntax: only start events of one container.
    let sock = std::os::unix::net::UnixStream::connect(&d.sock).unwrap();
    sock.set_read_timeout(Some(secs(60.0))).unwrap();
    let filters = r#"{"container":{"wsevt":true},"event":{"start":true}}"#;
    let escaped: String = filters
        .chars()
        .map(|c| match c {
            '"' | '{' | '}' | ':' | ',' => format!("%{:02X}", c as u32),
            c => c.to_string(),
        })
        .collect();
    let url = format!("ws://hyperd/v1.23/events/ws?filters={escaped}");
    let (mut ws, _) = tungstenite::client(url.as_str(), sock).expect("websocket handshake");
    d.hyper(&["run", "--name", "wsevt", "busybox", "true"])
        .run()
        .ok();
    d.hyper(&["run", "--rm", "busybox", "true"]).run().ok();
    let message = ws.read().expect("an event over the websocket");
    let event: serde_json::Value = serde_json::from_str(message.to_text().unwrap()).unwrap();
    let got = (
        event["Action"].as_str(),
        event["Actor"]["Attributes"]["name"].as_str(),
    );
    assert_eq!(got, (Some("start"), Some("wsevt")), "{event}");
    assert_eq!(event["Type"], "container");
    d.hyper(&["rm", "wsevt"]).run().ok();
    let _ = ws.close(None);
    let o = docker_events(d, &since, &until, &["--format", "{{.Action}}"]);
    let all: Vec<&str> = o.stdout.lines().collect();
    for want in ["create", "start", "die", "rename", "destroy"] {
        assert!(all.contains(&want), "{want} missing from {all:?}");
    }
}

/// With templates on, hyperd keeps standby VMs (`hyper info`), and a start claims one: the
/// container runs in a VM that was restored before it was asked for. Cold-boot runs of the suite
/// (`HYPERD_TEMPLATES=off`) have none.
fn standby_vms() {
    let d = main_daemon();
    if std::env::var("HYPERD_TEMPLATES").as_deref() == Ok("off") {
        assert_eq!(d.info_field("StandbyVMs"), "off");
        return;
    }
    claim_a_standby(d);
}

/// A burst of starts grows the standby pool to the burst's size (up to `--standby-vms-max`), it
/// refills to that, and once the burst is forgotten (`--standby-vms-hold`) the surplus is
/// stopped. Its own daemon: other tests' starts would make bursts of their own.
fn standby_pool_follows_bursts() {
    if std::env::var("HYPERD_TEMPLATES").as_deref() == Ok("off") {
        return;
    }
    let args = [
        "--standby-vms",
        "1",
        "--standby-vms-max",
        "2",
        "--standby-vms-hold",
        "20",
    ];
    let dd = Daemon::start(
        "sp",
        DaemonOpts {
            extra_args: args.iter().map(|a| a.to_string()).collect(),
            ..DaemonOpts::default()
        },
    );
    let d: &Daemon = &dd;
    let info = |field: &str| d.info_field(field);
    let pool_is = |ready: usize, target: usize| standby_pool_is(d, ready, target);
    wait_for("the pool's floor of one standby", secs(120.0), || {
        pool_is(1, 1)
    });

    let ids: Vec<String> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..2)
            .map(|_| s.spawn(|| d.hyper(&["run", "-d", "busybox", "sleep", "600"]).run()))
            .collect();
        runs.into_iter()
            .map(|r| r.join().unwrap().ok().out())
            .collect()
    });
    assert_eq!(info("StandbyVMsTarget"), "2", "{}", info("StandbyVMs"));
    let mut rm = vec!["rm", "-f"];
    rm.extend(ids.iter().map(String::as_str));
    d.hyper(&rm).run().ok();
    wait_for("the pool refilled to the burst", secs(120.0), || {
        pool_is(2, 2)
    });
    wait_for(
        "the surplus stopped once the burst is forgotten",
        secs(60.0),
        || pool_is(1, 1),
    );
}

/// What a claimed standby's log says when it was prepared for the container's image.
const PREPARED: &str = "standby: prepared for image";

/// After a tenant's first start of an image, the pool prepares a standby for that tenant and
/// image (its own copy of the image's empty overlay, mounted read-only, the program read ahead):
/// the next container of that image claims it, runs as its own (its hostname, hosts file, an
/// empty disk of the image's), and keeps the disk across a stop and a start. Another tenant's
/// start of the same image, a container something was copied into before its start, and a
/// restart never get one; removing the image stops it. Its own daemon, so that the pool holds
/// one generic and one prepared standby.
fn standby_prepared_for_an_image() {
    if std::env::var("HYPERD_TEMPLATES").as_deref() == Ok("off") {
        return;
    }
    let args = ["--standby-vms", "2", "--standby-vms-max", "2"];
    let dd = Daemon::start(
        "pi",
        DaemonOpts {
            extra_args: args.iter().map(|a| a.to_string()).collect(),
            ..DaemonOpts::default()
        },
    );
    let d: &Daemon = &dd;
    let prepared = |d: &Daemon, n: &str| {
        wait_for(
            &format!("{n} standby prepared for the tenant's busybox"),
            secs(120.0),
            || match d.info_field("StandbyVMsPrepared") {
                p if p == n && d.info_field("StandbyVMsReady") == "2" => Ok(()),
                p => Err(format!("{p} prepared; {}", d.info_field("StandbyVMs"))),
            },
        )
    };
    let shim_log = |id: &str| std::fs::read_to_string(d.cdir(id).join("shim.log")).unwrap();
    wait_for("two standbys ready", secs(120.0), || {
        standby_pool_is(d, 2, 2)
    });
    assert_eq!(d.info_field("StandbyVMsPrepared"), "0");

    let a = d
        .hyper(&[
            "run",
            "-d",
            "busybox",
            "sh",
            "-c",
            "echo a > /marker; sleep 600",
        ])
        .run()
        .ok()
        .out();
    assert!(!shim_log(&a).contains(PREPARED), "{}", shim_log(&a));
    prepared(d, "1");
    let script = "cat /marker 2>&1; echo host $(hostname); grep -c bee /etc/hosts; sleep 600";
    let b = d
        .hyper(&[
            "run",
            "-d",
            "--hostname",
            "bee",
            "busybox",
            "sh",
            "-c",
            script,
        ])
        .run()
        .ok()
        .out();
    let log = shim_log(&b);
    assert!(
        log.contains(PREPARED) && log.contains(STANDBY_CLAIMED),
        "{log}"
    );
    wait_log_contains(d, &b, "host bee", 60.0);
    let out = d.hyper(&["logs", &b]).run().ok();
    assert!(
        out.stdout.contains("No such file") && !out.stdout.lines().any(|l| l == "a"),
        "the prepared disk held another container's file: {out}"
    );
    assert!(
        out.stdout.lines().any(|l| l == "1"),
        "no bee in /etc/hosts: {out}"
    );
    // The prepared copy is the container's disk from then on.
    d.hyper(&["exec", &b, "sh", "-c", "echo b > /b-file && sync"])
        .run()
        .ok();
    d.hyper(&["stop", "-t", "1", &b]).timeout(60.0).run().ok();
    prepared(d, "1");
    d.hyper(&["start", &b]).timeout(60.0).run().ok();
    let o = d.hyper(&["exec", &b, "cat", "/b-file"]).run().ok();
    assert_eq!(o.out(), "b");
    assert!(
        !shim_log(&b).contains(PREPARED),
        "a restart took a prepared standby"
    );

    // Never another tenant's, even of the same image.
    let (dir2, _) = d.new_tenant("t2");
    d.hyper_tcp(&dir2, &["load", "-i", busybox_tar().to_str().unwrap()])
        .timeout(120.0)
        .run()
        .ok();
    let info2 = d.hyper_tcp(&dir2, &["info", "-f", "{{json .StandbyVMsPrepared}}"]);
    assert_eq!(info2.run().ok().out(), "0");
    let other = d
        .hyper_tcp(&dir2, &["run", "-d", "busybox", "sleep", "600"])
        .timeout(120.0)
        .run()
        .ok()
        .out();
    assert!(!shim_log(&other).contains(PREPARED), "{}", shim_log(&other));
    assert_eq!(d.info_field("StandbyVMsPrepared"), "1", "taken by t2");
    d.hyper_tcp(&dir2, &["rm", "-f", &other]).run().ok();

    // A file copied in before the first start: the disk is no longer the image's empty one.
    let c = d
        .hyper(&["create", "busybox", "cat", "/copied"])
        .run()
        .ok()
        .out();
    let file = d.data.join("copied");
    std::fs::write(&file, "copied in\n").unwrap();
    d.hyper(&["cp", file.to_str().unwrap(), &format!("{c}:/copied")])
        .timeout(120.0)
        .run()
        .ok();
    prepared(d, "1");
    let o = d.hyper(&["start", "-a", &c]).timeout(60.0).run().ok();
    assert_eq!(o.out(), "copied in");
    assert!(!shim_log(&c).contains(PREPARED), "{}", shim_log(&c));

    // The image removed: its prepared standby goes, and with it the disk it held open.
    d.hyper(&["rm", "-f", &a, &b, &c]).run().ok();
    prepared(d, "1");
    let prepared_dirs = || {
        std::fs::read_dir(d.data.join("standby"))
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read_to_string(e.path().join("spec.json"))
                    .is_ok_and(|s| s.contains("prepared_for"))
            })
            .count()
    };
    assert_eq!(prepared_dirs(), 1);
    d.hyper(&["rmi", "busybox"]).run().ok();
    assert_eq!(d.info_field("StandbyVMsPrepared"), "0");
    // Stopped in the background: `rmi` does not wait for it.
    wait_for(
        "the prepared standby stopped",
        secs(30.0),
        || match prepared_dirs() {
            0 => Ok(()),
            n => Err(format!("{n} prepared standby directories")),
        },
    );
}

/// Without `--standby-vms` and `--standby-vms-max`, a hyperd's pool grows to one standby for
/// each default-size container its node offers memory for (3 of 512 MiB here), and under TCG
/// keeps that ceiling ready (there a fresh restore's start costs several times a claim), with
/// KVM two.
fn standby_floor_default() {
    if std::env::var("HYPERD_TEMPLATES").as_deref() == Ok("off") {
        return;
    }
    let dd = Daemon::start(
        "sf",
        DaemonOpts {
            extra_args: vec!["--node-memory".into(), "1536M".into()],
            env_remove: vec!["HYPERD_STANDBY_VMS", "HYPERD_STANDBY_VMS_MAX"],
            ..DaemonOpts::default()
        },
    );
    let d: &Daemon = &dd;
    let (want, text) = match d.info_field("Hypervisor.Accelerator").as_str() {
        "tcg" => (3, "3 of 3 ready"),
        _ => (2, "2 of 2 ready (grows to 3 for bursts of starts)"),
    };
    wait_for("the default floor of standbys ready", secs(120.0), || {
        standby_pool_is(d, want, want)
    });
    // What they cost, as measured: "3 of 3 ready, 180 MiB", and the bytes, from one `info`
    // (the measure moves between two).
    let both = d
        .hyper(&["info", "--format", "{{.StandbyVMs}}|{{.StandbyVMsMemory}}"])
        .run()
        .ok()
        .out();
    let (pool, memory) = both.split_once('|').unwrap_or_default();
    let (count, cost) = pool
        .split_once(", ")
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .unwrap_or_default();
    let (count_text, grows) = text.split_once(" (").map_or((text, ""), |(a, b)| (a, b));
    assert_eq!(count, count_text);
    let memory: u64 = memory.trim().parse().unwrap();
    assert!(
        memory > 0 && cost.starts_with(&format!("{} MiB", memory >> 20)),
        "{cost}"
    );
    assert!(
        grows.is_empty() || cost.ends_with(&format!("({grows}")),
        "{cost}"
    );
}

/// `--standby-memory-max`: the pool stops growing short of the bound (the ready standbys'
/// PSS, as measured), below the count it was asked for, and `hyper info` says so.
fn standby_pool_within_its_memory_bound() {
    if std::env::var("HYPERD_TEMPLATES").as_deref() == Ok("off") {
        return;
    }
    let dd = Daemon::start(
        "sm",
        DaemonOpts {
            extra_args: [
                "--standby-vms",
                "3",
                "--standby-vms-max",
                "3",
                "--standby-memory-max",
                "64M",
            ]
            .map(String::from)
            .to_vec(),
            env_remove: vec!["HYPERD_STANDBY_VMS", "HYPERD_STANDBY_VMS_MAX"],
            ..DaemonOpts::default()
        },
    );
    let d: &Daemon = &dd;
    wait_for("a standby ready", secs(180.0), || {
        match d.info_field("StandbyVMsReady").as_str() {
            "0" => Err(d.info_field("StandbyVMs")),
            _ => Ok(()),
        }
    });
    // Another launch, if the bound allowed one, would follow at once: give it the time a
    // launch takes, then the pool must have stopped short of its target.
    std::thread::sleep(secs(20.0));
    // (A standby's PSS under TCG is well over a third of 64 MiB: its translation buffer.)
    let ready: u64 = d.info_field("StandbyVMsReady").parse().unwrap();
    assert!(ready < 3, "{}", d.info_field("StandbyVMs"));
    assert!(
        d.info_field("StandbyVMs").contains("of at most 64 MiB"),
        "{}",
        d.info_field("StandbyVMs")
    );
}

/// `--standby-memory-reserve`: the pool leaves that much of the host's memory available. A
/// hyperd started again with a reserve the host is under (99% of its memory) stops the standby
/// it adopted at its first upkeep, launches none instead, and says why; a start restores a VM
/// of its own.
fn standby_pool_leaves_the_host_its_memory() {
    if std::env::var("HYPERD_TEMPLATES").as_deref() == Ok("off") {
        return;
    }
    let dd = Daemon::start(
        "sr",
        DaemonOpts {
            // A hold of 4 s: the pool's upkeep every second.
            extra_args: ["--standby-vms-hold", "4"].map(String::from).to_vec(),
            ..DaemonOpts::default()
        },
    );
    let d: &Daemon = &dd;
    wait_for("the pool full", secs(180.0), || standby_pool_is(d, 2, 2));
    d.terminate();
    d.start_again_with(&["--standby-memory-reserve", "99%"]);
    wait_for("the adopted standbys stopped", secs(60.0), || {
        standby_pool_is(d, 0, 2)
    });
    assert!(
        d.log_tail(200)
            .contains("the host's available memory is under the standby pool's reserve"),
        "{}",
        d.log_tail(40)
    );
    // None launched instead: a launch takes seconds, the upkeep asks every second.
    std::thread::sleep(secs(10.0));
    standby_pool_is(d, 0, 2).unwrap();
    let pool = d.info_field("StandbyVMs");
    assert!(
        pool.contains(", held back by the host's memory reserve"),
        "{pool}"
    );
    let o = d
        .hyper(&["run", "--rm", "busybox", "echo", "hi"])
        .run()
        .ok();
    assert_eq!(o.out(), "hi");
    // Nor after the start (a refill follows a start by half a second).
    std::thread::sleep(secs(3.0));
    standby_pool_is(d, 0, 2).unwrap();
}

/// Ready standby VMs outlive hyperd, as containers do: the next hyperd on the data root adopts
/// the very VMs (not new ones) when they fit its pool, and a start claims one; one that does not
/// fit (its spec differs from what the pool launches now) is stopped and replaced.
fn standbys_outlive_hyperd() {
    if std::env::var("HYPERD_TEMPLATES").as_deref() == Ok("off") {
        return;
    }
    let dd = Daemon::start(
        "so",
        DaemonOpts {
            extra_args: ["--standby-vms", "1", "--standby-vms-max", "1"]
                .map(String::from)
                .to_vec(),
            ..DaemonOpts::default()
        },
    );
    let d: &Daemon = &dd;
    let full = || {
        wait_for("one standby ready", secs(180.0), || {
            standby_pool_is(d, 1, 1)
        })
    };
    // Each standby's directory and QEMU.
    let standbys = || -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = std::fs::read_dir(d.data.join("standby"))
            .unwrap()
            .flatten()
            .map(|e| {
                let state: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(e.path().join("state.json")).unwrap())
                        .unwrap();
                let qemu = state["qemu_pid"].as_u64().unwrap();
                (e.file_name().to_string_lossy().into_owned(), qemu)
            })
            .collect();
        v.sort();
        v
    };
    full();
    let before = standbys();
    d.terminate();
    for (_, qemu) in &before {
        assert!(
            std::path::Path::new(&format!("/proc/{qemu}")).exists(),
            "the standby's QEMU {qemu} went with hyperd"
        );
    }
    d.start_again();
    full();
    assert_eq!(standbys(), before, "the same VMs, adopted");
    assert!(
        std::fs::read_to_string(&d.log)
            .unwrap()
            .contains("1 adopted, 0 stopped"),
        "{}",
        d.log_tail(20)
    );
    // The first start claims the adopted VM.
    let (id, log) = d.run_on_the_default_path(&["busybox", "sh", "-c", "echo up; sleep 600"]);
    wait_log_contains(d, &id, "up", 60.0);
    d.hyper(&["rm", "-f", &id]).run().ok();
    assert!(
        log.contains(&format!("qemu pid {} ", before[0].1)) && log.contains(STANDBY_CLAIMED),
        "{log}"
    );

    // A standby whose spec is not what the pool launches now is stopped at the next start.
    full();
    let before = standbys();
    let spec_path = d.data.join("standby").join(&before[0].0).join("spec.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&spec_path).unwrap()).unwrap();
    spec["boot_timeout_secs"] = serde_json::json!(1);
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    d.restart();
    full();
    let after = standbys();
    assert_ne!(after, before, "a new standby, not the one that did not fit");
    assert!(
        !std::path::Path::new(&format!("/proc/{}", before[0].1)).exists(),
        "the standby that did not fit still runs"
    );
}

/// Whether `d`'s pool has `ready` standbys (in `hyper info` and as directories) of `target`.
fn standby_pool_is(d: &Daemon, ready: usize, target: usize) -> Result<(), String> {
    let (r, t) = (
        d.info_field("StandbyVMsReady"),
        d.info_field("StandbyVMsTarget"),
    );
    let dirs = std::fs::read_dir(d.data.join("standby")).map_or(0, |e| e.count());
    if r == ready.to_string() && t == target.to_string() && dirs == ready {
        Ok(())
    } else {
        Err(format!(
            "{}; {dirs} standby directories",
            d.info_field("StandbyVMs")
        ))
    }
}

/// A start claims a ready standby, which has rehearsed a start.
fn claim_a_standby(d: &Daemon) {
    let (id, log) = d.run_on_the_default_path(&["busybox", "sh", "-c", "echo up; sleep 600"]);
    wait_log_contains(d, &id, "up", 60.0);
    d.hyper(&["rm", "-f", &id]).run().ok();
    assert!(
        log.contains(STANDBY_CLAIMED)
            && log.contains("(standby)")
            && log.contains("rehearsed a start"),
        "{log}"
    );
}

const MIB: u64 = 1 << 20;

/// What a container deletes and trims (`fstrim /`) gives the host its blocks back, on the
/// default start path (a claimed standby under templates, a cold boot under
/// `HYPERD_TEMPLATES=off`): ~100 MiB written and synced grow the container's overlay
/// (`DATA/c/<id12>/root.qcow2`) by as much, and the trim frees them. Each boot on its own:
/// the shim's VM tests (`crates/shim/tests/root_disk.rs`).
fn root_disk_gives_back_trimmed_blocks() {
    use std::os::unix::fs::MetadataExt;
    let d = main_daemon();
    let (id, boot) = start_on_the_default_path(d);
    let overlay = d.cdir(&id).join("root.qcow2");
    let allocated = || std::fs::metadata(&overlay).unwrap().blocks() * 512;
    let exec = |script: &str| {
        d.hyper(&["exec", &id, "sh", "-c", script])
            .timeout(120.0)
            .run()
            .ok()
    };
    let before = allocated();
    exec("dd if=/dev/zero of=/fill bs=1M count=100 2>/dev/null && sync");
    let full = allocated();
    exec("rm /fill && sync && fstrim /");
    let after = allocated();
    d.hyper(&["rm", "-f", &id]).run().ok();
    let seen = format!(
        "{boot}: overlay {} MiB before, {} MiB full, {} MiB after rm and fstrim",
        before / MIB,
        full / MIB,
        after / MIB
    );
    eprintln!("{seen}");
    assert!(
        full >= before + 90 * MIB,
        "the writes did not reach the overlay: {seen}"
    );
    assert!(after + 90 * MIB <= full, "the trim freed nothing: {seen}");
}

/// Starts `busybox sleep 600` as a start goes by default (see
/// `Daemon::run_on_the_default_path`): its ID and how its VM came up.
fn start_on_the_default_path(d: &Daemon) -> (String, String) {
    let (id, log) = d.run_on_the_default_path(&["busybox", "sleep", "600"]);
    let how = if log.contains(STANDBY_CLAIMED) {
        "claimed standby"
    } else {
        "cold boot"
    };
    (id, how.to_string())
}

/// A NUL byte in what becomes the container's process (its environment, command, working
/// directory, user) is refused at create with a 400 naming where it is, and nothing is
/// created; it used to be accepted and fail at every start.
fn nul_bytes_refused_at_create() {
    let d = main_daemon();
    let cases = [
        (
            r#""Cmd":["true"],"Env":["GOOD=1","BAD_VAR=a\u0000b"]"#,
            "invalid environment variable BAD_VAR: it contains a NUL byte",
        ),
        (r#""Cmd":["sh","-c","echo a\u0000b"]"#, "argument 2"),
        (
            r#""Cmd":["true"],"WorkingDir":"/tmp\u0000x""#,
            "invalid working directory",
        ),
        (r#""Cmd":["true"],"User":"root\u0000""#, "invalid user"),
    ];
    for (i, (fields, named)) in cases.iter().enumerate() {
        let name = format!("nul{i}");
        let body = format!(r#"{{"Image":"busybox",{fields}}}"#);
        let o = d.api(
            "POST",
            &format!("/v1.44/containers/create?name={name}"),
            &["-H", "Content-Type: application/json", "-d", &body],
        );
        let (json, status) = o.stdout.rsplit_once('\n').unwrap();
        assert_eq!(status, "400", "test[{i}]: {o}");
        let message = serde_json::from_str::<serde_json::Value>(json).unwrap()["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            message.contains(named) && message.contains("NUL"),
            "test[{i}]: {message}"
        );
        let o = d
            .hyper(&["ps", "-aq", "--filter", &format!("name={name}")])
            .run()
            .ok();
        assert!(o.out().is_empty(), "test[{i}]: created anyway: {o}");
    }
}

/// One tar member (ustar): a header, then `data` padded to the block.
fn tar_member(name: &str, kind: u8, link: &str, data: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    let mut put = |at: usize, bytes: &[u8]| h[at..at + bytes.len()].copy_from_slice(bytes);
    put(0, name.as_bytes());
    for (at, len, value) in [
        (100, 8, 0o644),
        (108, 8, 0),
        (116, 8, 0),
        (124, 12, data.len() as u64),
        (136, 12, 0),
    ] {
        put(at, format!("{value:0w$o}\0", w = len - 1).as_bytes());
    }
    put(148, b"        ");
    put(156, &[kind]);
    put(157, link.as_bytes());
    put(257, b"ustar\0");
    put(263, b"00");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

/// An image whose layer holds a hard link out of the root is refused by `hyper load`, saying
/// so, and nothing of it is left in the image store; it used to load and fail at `run`.
fn image_hard_link_refused_at_load() {
    let d = main_daemon();
    let work = short_tmp("hl");
    let tree = work.join("archive");
    std::fs::create_dir_all(tree.join("l0")).unwrap();
    let mut layer = tar_member("etc/motd", b'0', "", b"hi\n");
    layer.extend(tar_member("h", b'1', "../../../etc/shadow", b""));
    layer.extend([0u8; 1024]);
    std::fs::write(tree.join("l0/layer.tar"), &layer).unwrap();
    let sum = Cmd::new("sha256sum", &[tree.join("l0/layer.tar").to_str().unwrap()])
        .run()
        .ok();
    let diff_id = sum.stdout.split_whitespace().next().unwrap().to_string();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
    });
    std::fs::write(tree.join("config.json"), config.to_string()).unwrap();
    let manifest = serde_json::json!([{"Config": "config.json", "RepoTags": ["hardlink:evil"],
                                       "Layers": ["l0/layer.tar"]}]);
    std::fs::write(tree.join("manifest.json"), manifest.to_string()).unwrap();
    let archive = work.join("evil.tar");
    Cmd::new(
        "tar",
        &[
            "-C",
            tree.to_str().unwrap(),
            "-cf",
            archive.to_str().unwrap(),
            ".",
        ],
    )
    .run()
    .ok();

    let o = d.hyper(&["load", "-i", archive.to_str().unwrap()]).run();
    assert_ne!(o.code, 0, "{o}");
    assert!(
        o.stderr
            .contains("../../../etc/shadow (the target of hard link h)")
            && o.stderr.contains("escapes the root"),
        "{o}"
    );
    let images = d.hyper(&["images", "-a"]).run().ok();
    assert!(!images.stdout.contains("hardlink"), "{images}");
    let store = d.data.join("images");
    assert!(
        !store.join("layers").join(format!("{diff_id}.tar")).exists(),
        "the layer was stored"
    );
    // Other tests' loads pass through the work directory too: it must empty.
    wait_for(
        "the image store's work directory to empty",
        secs(30.0),
        || {
            let tmp: Vec<_> = std::fs::read_dir(store.join("tmp"))
                .map(|rd| rd.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            if tmp.is_empty() {
                Ok(())
            } else {
                Err(format!("{tmp:?}"))
            }
        },
    );
    std::fs::remove_dir_all(&work).unwrap();
}
