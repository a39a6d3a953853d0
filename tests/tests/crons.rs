//! Crons end to end (issue 16): hyperd runs a cron's containers at its minutes by a test clock
//! (`--clock-start/--clock-anchor/--clock-speed`, ten times real time here), each run's output
//! and exit code land in the history, the overlap policies hold, and across a hyperd restart the
//! history stays, no run doubles and missed runs follow their policy. Beside them: tenants
//! cannot see each other's crons, keys and mail fields are checked, bad schedules are refused,
//! and the requests Hyper's own client sent (captured into `tests/fixtures/hypercli/`) are
//! replayed over the unix socket.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use e2e::*;
use serde_json::{json, Value};

fn main() {
    let tests: &[(&'static str, TestFn)] = &[
        (
            "cron_runs_overlap_policies_and_restart",
            cron_runs_overlap_policies_and_restart,
        ),
        (
            "cron_tenancy_keys_and_refusals",
            cron_tenancy_keys_and_refusals,
        ),
        (
            "hypers_cron_requests_replayed",
            hypers_cron_requests_replayed,
        ),
    ];
    std::process::exit(run_tests(tests));
}

// ---------------------------------------------------------------------------------------------
// The cron clock

/// hyperd's cron clock as the test set it: `start` (Unix seconds) at the real time `anchor`,
/// `speed` times real time. Given to every (re)start of the daemon, so it carries on.
struct CronClock {
    start: i64,
    anchor: f64,
    speed: f64,
}

fn real_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

impl CronClock {
    fn new(start: &str, speed: f64) -> Self {
        let start = chrono::DateTime::parse_from_rfc3339(start)
            .unwrap()
            .timestamp();
        CronClock {
            start,
            anchor: real_now(),
            speed,
        }
    }

    fn args(&self) -> Vec<String> {
        let start = chrono::DateTime::from_timestamp(self.start, 0)
            .unwrap()
            .to_rfc3339();
        vec![
            "--clock-start".into(),
            start,
            "--clock-anchor".into(),
            format!("{:.6}", self.anchor),
            "--clock-speed".into(),
            self.speed.to_string(),
        ]
    }

    /// The cron clock now, Unix seconds.
    fn now(&self) -> f64 {
        self.start as f64 + (real_now() - self.anchor) * self.speed
    }

    /// The start of the minute `k` minutes after the current one.
    fn minute(&self, k: i64) -> i64 {
        ((self.now() / 60.0).floor() as i64 + k) * 60
    }

    /// A minute at least `lead` minutes ahead such that it and the `span` minutes after it
    /// are in one hour (so a schedule can list them as minutes of one hour).
    fn slot(&self, lead: i64, span: i64) -> i64 {
        let t = self.minute(lead);
        if (t + span * 60) / 3600 == t / 3600 {
            t
        } else {
            (t / 3600 + 1) * 3600
        }
    }

    fn wait_until(&self, t: i64, what: &str) {
        let real = ((t as f64 - self.now()) / self.speed).max(0.0);
        wait_for(what, secs(real + 30.0), || {
            if self.now() >= t as f64 {
                Ok(())
            } else {
                Err(format!("the cron clock reads {}", hm(self.now() as i64)))
            }
        });
    }
}

fn hm(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .unwrap()
        .format("%H:%M:%S")
        .to_string()
}

/// A schedule firing at these minutes (of one hour) every day.
fn at(times: &[i64]) -> String {
    let hour = times[0] / 3600 % 24;
    assert!(times.iter().all(|t| t / 3600 % 24 == hour), "{times:?}");
    let minutes: Vec<String> = times.iter().map(|t| (t / 60 % 60).to_string()).collect();
    format!("{} {hour} * * *", minutes.join(","))
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// The body and HTTP status of a `Daemon::api` call.
fn body_status(o: &Out) -> (Value, u16) {
    let (body, status) = o.stdout.rsplit_once('\n').unwrap_or(("", &o.stdout));
    let status = status.trim().parse().unwrap_or(0);
    (serde_json::from_str(body).unwrap_or(Value::Null), status)
}

/// The cron's history (our extension fields included), over the unix socket.
fn history(d: &Daemon, name: &str) -> Vec<Value> {
    let o = d.api("GET", &format!("/v1.44/crons/{name}/history"), &[]);
    let (v, status) = body_status(&o);
    assert_eq!(status, 200, "{o}");
    v.as_array().cloned().unwrap_or_default()
}

/// Waits until the cron's history has `n` runs, all finished.
fn wait_finished(d: &Daemon, name: &str, n: usize, timeout: f64) -> Vec<Value> {
    wait_for(
        &format!("{n} finished runs of cron {name}"),
        secs(timeout),
        || {
            let h = history(d, name);
            if h.len() == n && h.iter().all(|r| r["FinishedAt"].as_i64() != Some(0)) {
                Ok(h)
            } else {
                Err(serde_json::to_string(&h).unwrap())
            }
        },
    )
}

fn cron_create(d: &Daemon, name: &str, schedule: &str, extra: &[&str], cmd: &[&str]) {
    let mut a = vec!["cron", "create", "--name", name, "--schedule", schedule];
    a.extend_from_slice(extra);
    a.push("busybox");
    a.extend_from_slice(cmd);
    let o = d.hyper(&a).run().ok();
    assert!(
        o.stdout.contains(&format!("Cron {name} is created.")),
        "{o}"
    );
}

/// IDs of the tenant's containers of a cron's runs (`running` only, or all).
fn run_containers(d: &Daemon, cron: &str, running: bool) -> Vec<String> {
    let filter = format!("label=sh_hyper_cron={cron}");
    let mut a = vec!["ps", "-q", "--no-trunc", "--filter", &filter];
    if !running {
        a.push("-a");
    }
    d.hyper(&a)
        .run()
        .ok()
        .stdout
        .split_whitespace()
        .map(String::from)
        .collect()
}

fn scheduled(h: &[Value]) -> Vec<i64> {
    h.iter().map(|r| r["Scheduled"].as_i64().unwrap()).collect()
}

fn field<'a>(r: &'a Value, k: &str) -> &'a str {
    r[k].as_str().unwrap_or("")
}

// ---------------------------------------------------------------------------------------------
// Runs, overlap, restart

fn cron_runs_overlap_policies_and_restart() {
    let clock = CronClock::new("2030-01-01T00:00:00Z", 10.0);
    let dd = Daemon::start(
        "cr",
        DaemonOpts {
            extra_args: clock.args(),
            ..DaemonOpts::default()
        },
    );
    let d: &Daemon = &dd;

    // 1. Runs at their minutes; output and exit code in the history; containers removed.
    let a = clock.slot(2, 3);
    cron_create(d, "ok", &at(&[a, a + 120]), &[], &["echo", "hello-cron"]);
    cron_create(
        d,
        "fail",
        &at(&[a + 60]),
        &[],
        &["sh", "-c", "echo failing >&2; exit 3"],
    );
    // With a container name, every run's container has it and the last one is kept.
    cron_create(
        d,
        "named",
        &at(&[a + 60, a + 180]),
        &["--container-name", "nightly-job"],
        &["sh", "-c", "echo named-run $HOSTNAME"],
    );
    let next = d
        .hyper(&["cron", "inspect", "-f", "{{.NextRun}}", "ok"])
        .run()
        .ok()
        .out();
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(&next)
            .unwrap()
            .timestamp(),
        a,
        "NextRun of ok"
    );
    let ok = wait_finished(d, "ok", 2, 120.0 * 2.0);
    let fail = wait_finished(d, "fail", 1, 60.0);
    assert_eq!(scheduled(&ok), [a, a + 120], "{ok:?}");
    for r in &ok {
        assert_eq!(field(r, "Status"), "success", "{r}");
        assert_eq!(r["ExitCode"], 0, "{r}");
        assert!(field(r, "Logs").contains("hello-cron"), "{r}");
        assert!(field(r, "Message").starts_with("exit code 0"), "{r}");
        assert_eq!(field(r, "Job"), "ok", "{r}");
        assert!(field(r, "Container").starts_with("ok-2030"), "{r}");
        let (start, end, due) = (
            r["StartedAt"].as_i64().unwrap(),
            r["FinishedAt"].as_i64().unwrap(),
            r["Scheduled"].as_i64().unwrap(),
        );
        assert!(due <= start && start <= end, "{r}");
    }
    assert_eq!(scheduled(&fail), [a + 60], "{fail:?}");
    let f = &fail[0];
    assert_eq!(
        (field(f, "Status"), f["ExitCode"].as_i64()),
        ("error", Some(3)),
        "{f}"
    );
    assert!(field(f, "Message").starts_with("exit code 3"), "{f}");
    assert!(field(f, "Logs").contains("failing"), "{f}");
    wait_for("the runs' containers to go", secs(60.0), || {
        let left = [
            run_containers(d, "ok", false),
            run_containers(d, "fail", false),
        ]
        .concat();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    });
    let named = wait_finished(d, "named", 2, 120.0);
    assert_eq!(scheduled(&named), [a + 60, a + 180], "{named:?}");
    assert!(
        named.iter().all(|r| field(r, "Container") == "nightly-job"),
        "{named:?}"
    );
    assert!(
        named.iter().all(|r| field(r, "Status") == "success"),
        "{named:?}"
    );
    let kept = d.wait_status("nightly-job", "exited", 30.0);
    assert_eq!(kept["Id"], named[1]["ContainerId"], "{kept}");
    assert_ne!(named[0]["ContainerId"], named[1]["ContainerId"]);
    assert_eq!(run_containers(d, "named", false).len(), 1);
    let o = d.hyper(&["logs", "nightly-job"]).run().ok();
    assert!(o.stdout.contains("named-run"), "{o}");

    // What the CLI shows: Hyper's words for the statuses, and the counts.
    let o = d.hyper(&["cron", "history", "ok"]).run().ok();
    assert_eq!(o.stdout.matches(" done ").count(), 2, "{o}");
    let o = d.hyper(&["cron", "history", "fail"]).run().ok();
    assert!(
        o.stdout.contains("failed") && o.stdout.contains("exit code 3"),
        "{o}"
    );
    let o = d.hyper(&["cron", "history", "--logs", "fail"]).run().ok();
    assert!(o.stdout.contains("failing"), "{o}");
    let counts = |name: &str| {
        d.hyper(&[
            "cron",
            "inspect",
            "-f",
            "{{.SuccessCount}} {{.ErrorCount}}",
            name,
        ])
        .run()
        .ok()
        .out()
    };
    assert_eq!((counts("ok"), counts("fail")), ("2 0".into(), "0 1".into()));
    let o = d.hyper(&["cron", "ls"]).run().ok();
    assert!(
        o.stdout.contains("ok") && o.stdout.contains("echo hello-cron"),
        "{o}"
    );

    // 2. Overlapping runs: forbid skips, replace kills the old run, allow runs both.
    let b = clock.slot(2, 5);
    cron_create(
        d,
        "forbid",
        &at(&[b, b + 60]),
        &["--concurrency", "forbid"],
        &["sleep", "12"],
    );
    cron_create(
        d,
        "replace",
        &at(&[b + 120, b + 180]),
        &["--concurrency", "replace"],
        &["sh", "-c", "echo started; sleep 600"],
    );
    cron_create(
        d,
        "allow",
        &at(&[b + 240, b + 300]),
        &["--concurrency", "allow"],
        &["sleep", "20"],
    );
    let h = wait_finished(d, "forbid", 2, 60.0 * 3.0);
    assert_eq!(scheduled(&h), [b, b + 60], "{h:?}");
    assert_eq!(field(&h[0], "Status"), "success", "{h:?}");
    assert_eq!(field(&h[1], "Status"), "skipped", "{h:?}");
    assert!(
        field(&h[1], "Message").contains("still running (concurrency policy forbid)"),
        "{h:?}"
    );
    assert_eq!(field(&h[1], "Container"), "", "{h:?}");

    let h = wait_for(
        "the replaced run killed and its successor running",
        secs(60.0 * 3.0),
        || {
            let h = history(d, "replace");
            let ok = h.len() == 2
                && h[0]["FinishedAt"].as_i64() != Some(0)
                && field(&h[1], "Status") == "running"
                && !field(&h[1], "ContainerId").is_empty();
            if ok {
                Ok(h)
            } else {
                Err(serde_json::to_string(&h).unwrap())
            }
        },
    );
    assert_eq!(scheduled(&h), [b + 120, b + 180], "{h:?}");
    assert_eq!(field(&h[0], "Status"), "error", "{h:?}");
    assert!(
        field(&h[0], "Message").contains("killed: replaced by the run due at"),
        "{h:?}"
    );
    wait_for("only the new run's VM to remain", secs(60.0), || {
        let running = run_containers(d, "replace", false);
        if running.len() == 1 && running[0] == field(&h[1], "ContainerId") {
            Ok(())
        } else {
            Err(format!("{running:?}"))
        }
    });

    wait_for("both runs of allow at once", secs(60.0 * 3.0), || {
        let running = run_containers(d, "allow", true);
        if running.len() == 2 {
            Ok(())
        } else {
            Err(serde_json::to_string(&history(d, "allow")).unwrap())
        }
    });
    let h = wait_finished(d, "allow", 2, 120.0);
    assert_eq!(scheduled(&h), [b + 240, b + 300], "{h:?}");
    assert!(h.iter().all(|r| field(r, "Status") == "success"), "{h:?}");

    // Removing a cron kills its running run.
    d.hyper(&["cron", "rm", "replace", "forbid", "allow"])
        .run()
        .ok();
    wait_for(
        "the removed cron's run to go",
        secs(60.0),
        || match run_containers(d, "replace", false) {
            left if left.is_empty() => Ok(()),
            left => Err(format!("{left:?}")),
        },
    );
    let o = d.hyper(&["cron", "history", "replace"]).run();
    assert!(
        o.code != 0 && o.stderr.contains("No such cron: replace"),
        "{o}"
    );

    // 3. hyperd killed while a run runs and while runs fall due: the history stays, the
    // running run is taken up again and not started twice, the missed runs follow their
    // policy (run-once: once; skip: recorded as skipped).
    let l = clock.minute(2);
    cron_create(d, "long", &at(&[l]), &[], &["sleep", "45"]);
    let before: BTreeMap<&str, Vec<Value>> = ["ok", "fail"]
        .into_iter()
        .map(|n| (n, history(d, n)))
        .collect();
    wait_for("the long run to run", secs(60.0 * 3.0), || {
        let h = history(d, "long");
        match h.first() {
            Some(r)
                if field(r, "Status") == "running"
                    && run_containers(d, "long", true).len() == 1 =>
            {
                Ok(())
            }
            _ => Err(serde_json::to_string(&h).unwrap()),
        }
    });
    let m = clock.minute(2);
    cron_create(
        d,
        "once",
        &at(&[m]),
        &["--missed", "run-once"],
        &["echo", "missed-run"],
    );
    cron_create(
        d,
        "skip",
        &at(&[m]),
        &["--missed", "skip"],
        &["echo", "missed-run"],
    );
    d.kill9();
    clock.wait_until(
        m + 30,
        "the missed runs' minute to pass while hyperd is down",
    );
    d.restart();

    let h = wait_finished(d, "long", 1, 120.0);
    assert_eq!(scheduled(&h), [l], "{h:?}");
    assert_eq!(field(&h[0], "Status"), "success", "{h:?}");
    let h = wait_finished(d, "once", 1, 120.0);
    assert_eq!(scheduled(&h), [m], "{h:?}");
    assert_eq!(field(&h[0], "Status"), "success", "{h:?}");
    assert!(
        field(&h[0], "Message").contains("missed while hyperd was down"),
        "{h:?}"
    );
    assert!(field(&h[0], "Logs").contains("missed-run"), "{h:?}");
    let h = history(d, "skip");
    assert_eq!(scheduled(&h), [m], "{h:?}");
    assert_eq!(field(&h[0], "Status"), "skipped", "{h:?}");
    assert!(
        field(&h[0], "Message").contains("passed while hyperd was down"),
        "{h:?}"
    );
    for (name, h) in &before {
        assert_eq!(&history(d, name), h, "history of {name} after the restart");
    }
    // A minute later, still one run each: nothing ran twice.
    clock.wait_until(clock.minute(1) + 10, "a minute after the restart");
    assert_eq!(history(d, "long").len(), 1);
    assert_eq!(history(d, "once").len(), 1);
    assert_eq!(history(d, "skip").len(), 1);

    d.hyper(&["cron", "rm", "ok", "fail", "named", "long", "once", "skip"])
        .run()
        .ok();
    assert_eq!(d.hyper(&["cron", "ls", "-q"]).run().ok().out(), "");
    wait_for("no cron containers left", secs(60.0), || {
        let o = d
            .hyper(&["ps", "-aq", "--filter", "label=sh_hyper_cron"])
            .run()
            .ok();
        if o.out().is_empty() {
            Ok(())
        } else {
            Err(o.stdout)
        }
    });
}

// ---------------------------------------------------------------------------------------------
// The API: tenants, keys, refusals

/// A hyperd whose crons never fire during these tests (their schedules are hours away).
fn api_daemon() -> &'static Daemon {
    static D: OnceLock<Arc<Daemon>> = OnceLock::new();
    D.get_or_init(|| {
        let clock = CronClock::new("2030-01-01T00:00:30Z", 1.0);
        Daemon::start(
            "ca",
            DaemonOpts {
                extra_args: clock.args(),
                ..DaemonOpts::default()
            },
        )
    })
}

/// The secret key in a client config directory `Daemon::new_tenant` made.
fn secret_of(dir: &Path) -> String {
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    let cloud = cfg["clouds"].as_object().unwrap().values().next().unwrap();
    cloud["secretkey"].as_str().unwrap().to_string()
}

/// `hyper cron create` over TCP as a tenant, expected to fail: its stderr.
fn create_fails(d: &Daemon, cfg: &Path, args: &[&str]) -> String {
    let mut a = vec!["cron", "create"];
    a.extend_from_slice(args);
    let o = d.hyper_tcp(cfg, &a).run();
    assert_ne!(o.code, 0, "{o}");
    o.stderr
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn cron_tenancy_keys_and_refusals() {
    let d = api_daemon();
    let (cfg_a, ak_a) = d.new_tenant("crona");
    let (cfg_b, ak_b) = d.new_tenant("cronb");
    for cfg in [&cfg_a, &cfg_b] {
        d.hyper_tcp(cfg, &["load", "-i", busybox_tar().to_str().unwrap()])
            .timeout(120.0)
            .run()
            .ok();
    }
    let sk_a = secret_of(&cfg_a);
    let sk_b = secret_of(&cfg_b);
    let named = |name: &str, extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["--name", name, "--minute", "30", "--hour", "5"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v.push("busybox".into());
        v.push("true".into());
        v
    };
    let with = |extra: &[&str]| named("mine", extra);

    // Keys: another tenant's, or a wrong secret, are refused; one's own are checked and kept
    // as the access key only.
    let e = create_fails(
        d,
        &cfg_a,
        &refs(&with(&["--access-key", &ak_b, "--secret-key", &sk_b])),
    );
    assert!(
        e.contains(&format!("AccessKey {ak_b} is not a key of your account")),
        "{e}"
    );
    let e = create_fails(
        d,
        &cfg_a,
        &refs(&with(&["--access-key", &ak_a, "--secret-key", "wrong"])),
    );
    assert!(e.contains("SecretKey does not match"), "{e}");
    let e = create_fails(
        d,
        &cfg_a,
        &refs(&with(&["--access-key", "NOSUCHKEY", "--secret-key", "x"])),
    );
    assert!(e.contains("is not a key of your account"), "{e}");
    let o = d
        .hyper_tcp(
            &cfg_a,
            &refs(
                &[
                    vec!["cron".into(), "create".into()],
                    with(&["--access-key", &ak_a, "--secret-key", &sk_a]),
                ]
                .concat(),
            ),
        )
        .run()
        .ok();
    assert!(o.stdout.contains("Cron mine is created."), "{o}");
    let v = d
        .hyper_tcp(&cfg_a, &["cron", "inspect", "mine"])
        .run()
        .ok()
        .json()[0]
        .clone();
    assert_eq!(
        (field(&v, "AccessKey"), field(&v, "SecretKey")),
        (ak_a.as_str(), "")
    );
    assert_eq!(field(&v, "Owner"), "crona");
    assert!(
        !v.to_string().contains(&sk_a),
        "the secret is given back: {v}"
    );
    let e = create_fails(d, &cfg_a, &refs(&with(&[])));
    assert!(e.contains("a cron named mine already exists"), "{e}");

    // Another tenant neither sees nor touches it.
    assert_eq!(
        d.hyper_tcp(&cfg_b, &["cron", "ls", "-q"]).run().ok().out(),
        ""
    );
    for cmd in [
        vec!["cron", "inspect", "mine"],
        vec!["cron", "history", "mine"],
        vec!["cron", "rm", "mine"],
    ] {
        let o = d.hyper_tcp(&cfg_b, &cmd).run();
        assert!(
            o.code != 0 && o.stderr.contains("No such cron: mine"),
            "{o}"
        );
    }
    assert_eq!(
        d.hyper_tcp(&cfg_a, &["cron", "ls", "-q"]).run().ok().out(),
        "mine"
    );
    // ... and may use the same name for its own.
    d.hyper_tcp(
        &cfg_b,
        &refs(&[vec!["cron".into(), "create".into()], with(&[])].concat()),
    )
    .run()
    .ok();
    d.hyper_tcp(&cfg_b, &["cron", "rm", "mine"]).run().ok();
    assert_eq!(
        d.hyper_tcp(&cfg_a, &["cron", "ls", "-q"]).run().ok().out(),
        "mine"
    );

    // Mail: refused, not ignored.
    let e = create_fails(
        d,
        &cfg_a,
        &refs(&named("m2", &["--mailto", "ops@example.com"])),
    );
    assert!(e.contains("mail notifications are not supported"), "{e}");
    let e = create_fails(d, &cfg_a, &refs(&named("m2", &["--mail", "always"])));
    assert!(e.contains("mail policy \"always\""), "{e}");

    // Schedules: refused with what is wrong.
    for (args, want) in [
        (
            vec!["--name", "sched", "--minute", "61"],
            "invalid schedule \"61 0 * * *\": minute 61 is out of range 0-59",
        ),
        (
            vec!["--name", "sched", "--minute", "5", "--week", "fri-mon"],
            "day of week range \"fri-mon\" goes backwards",
        ),
        (
            vec!["--name", "sched", "--schedule", "* * *"],
            "a schedule has 5 fields",
        ),
        (
            vec![
                "--name", "sched", "--minute", "0", "--dom", "31", "--month", "feb",
            ],
            "never fires",
        ),
    ] {
        let mut a = args.clone();
        a.extend(["busybox", "true"]);
        let e = create_fails(d, &cfg_a, &a);
        assert!(e.contains(want), "{args:?}: {e}");
    }
    let e = create_fails(d, &cfg_a, &["--name", "sched", "busybox", "true"]);
    assert!(e.contains("must specify at least one schedule"), "{e}");

    // Container options: the create's checks, and what a cron run cannot be.
    let e = create_fails(
        d,
        &cfg_a,
        &[
            "--name",
            "sched",
            "--minute",
            "1",
            "--restart",
            "always",
            "busybox",
        ],
    );
    assert!(e.contains("a cron run must end"), "{e}");
    let e = create_fails(
        d,
        &cfg_a,
        &[
            "--name", "sched", "--minute", "1", "--size", "x9", "busybox",
        ],
    );
    assert!(e.contains("x9"), "{e}");
    let e = create_fails(
        d,
        &cfg_a,
        &[
            "--name",
            "sched",
            "--minute",
            "1",
            "--container-name",
            "job",
            "--concurrency",
            "allow",
            "busybox",
        ],
    );
    assert!(e.contains("two runs cannot overlap"), "{e}");
    let e = create_fails(
        d,
        &cfg_a,
        &["--name", "sched", "--minute", "1", "nosuch/image:1"],
    );
    assert!(!e.is_empty(), "{e}");
    // 501 for what hyperd does not honour, over the wire.
    let body = json!({"Schedule": "1 * * * *", "Config": {"Image": "busybox"},
                      "HostConfig": {"Privileged": true}});
    let o = d.api(
        "POST",
        "/v1.23/crons/create?name=priv",
        &[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &body.to_string(),
        ],
    );
    let (v, status) = body_status(&o);
    assert_eq!(status, 501, "{o}");
    assert!(
        v["message"].as_str().unwrap_or("").contains("privileged"),
        "{o}"
    );
    let body =
        json!({"Schedule": "1 * * * *", "Config": {"Image": "busybox"}, "Tags": {"zone": "a"}});
    let o = d.api(
        "POST",
        "/v1.23/crons/create?name=tags",
        &[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &body.to_string(),
        ],
    );
    assert_eq!(body_status(&o).1, 501, "{o}");

    d.hyper_tcp(&cfg_a, &["cron", "rm", "mine"]).run().ok();
    assert_eq!(
        d.hyper_tcp(&cfg_a, &["cron", "ls", "-q"]).run().ok().out(),
        ""
    );
}

// ---------------------------------------------------------------------------------------------
// Hyper's own client's requests, replayed

fn fixture(name: &str) -> Value {
    let p: PathBuf = workspace_root()
        .join("tests/fixtures/hypercli")
        .join(format!("{name}.json"));
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

/// Sends a captured request as it was (method, path with Hyper's `/v1.23`, content type,
/// user agent, body), with `change` applied to its body first; the answer and status.
fn replay(d: &Daemon, f: &Value, change: impl FnOnce(&mut Value)) -> (Value, u16, Out) {
    let mut body = f["body"].clone();
    change(&mut body);
    let method = f["method"].as_str().unwrap();
    let path = f["path"].as_str().unwrap();
    let mut extra: Vec<String> = Vec::new();
    for h in ["Content-Type", "User-Agent"] {
        if let Some(v) = f["headers"][h].as_str() {
            extra.push("-H".into());
            extra.push(format!("{h}: {v}"));
        }
    }
    if !(body.is_null() || body == "") {
        extra.push("--data-binary".into());
        extra.push(body.to_string());
    }
    let refs: Vec<&str> = extra.iter().map(String::as_str).collect();
    let o = d.api(method, path, &refs);
    let (v, status) = body_status(&o);
    (v, status, o)
}

/// What Hyper's client decodes a `Cron` into: each key with its Go type.
fn assert_go_cron(v: &Value) {
    for k in [
        "Name",
        "Schedule",
        "AccessKey",
        "SecretKey",
        "ContainerName",
        "Owner",
        "OwnerEmail",
        "MailPolicy",
    ] {
        assert!(v[k].is_string(), "{k} in {v}");
    }
    for k in ["Config", "HostConfig", "NetConfig"] {
        assert!(v[k].is_object() || v[k].is_null(), "{k} in {v}");
    }
    for k in ["SuccessCount", "ErrorCount"] {
        assert!(v[k].is_i64(), "{k} in {v}");
    }
    for k in ["LastRun", "Created"] {
        assert!(
            chrono::DateTime::parse_from_rfc3339(v[k].as_str().unwrap_or("")).is_ok(),
            "{k} in {v}"
        );
    }
    assert!(
        v["Disabled"].is_boolean() && (v["Tags"].is_null() || v["Tags"].is_object()),
        "{v}"
    );
    assert!(
        v["Config"]["Cmd"].is_array() || v["Config"]["Cmd"].is_null(),
        "{v}"
    );
}

fn hypers_cron_requests_replayed() {
    let d = api_daemon();
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(d.client_dir.join("config.json")).unwrap()).unwrap();
    let cloud = cfg["clouds"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone();
    let (ak, sk) = (
        cloud["accesskey"].as_str().unwrap().to_string(),
        cloud["secretkey"].as_str().unwrap().to_string(),
    );

    // `cron create --name nightly ... --container-name nightly-job busybox sh -c ...`
    let (v, status, o) = replay(d, &fixture("cron-create-2"), |_| {});
    assert_eq!(status, 201, "{o}");
    assert_go_cron(&v);
    assert_eq!(
        (field(&v, "Name"), field(&v, "Schedule")),
        ("nightly", "30 2 * * 1-5"),
        "{v}"
    );
    // `--access-key AK --secret-key SK`: the unix socket acts as the default tenant, whose
    // keys these are.
    let f = fixture("cron-create-4");
    let (_, status, o) = replay(d, &f, |b| {
        b["AccessKey"] = json!(ak);
        b["SecretKey"] = json!(sk);
    });
    assert_eq!(status, 201, "{o}");
    // ... another tenant's keys are not.
    let (other_ak, _) = d.new_tenant("replayother");
    let (v, status, o) = replay(d, &f, |b| {
        b["AccessKey"] = json!(other_ak);
        b["SecretKey"] = json!("whatever");
    });
    assert_eq!(status, 403, "{o}");
    assert!(
        field(&v, "message").contains("not a key of your account"),
        "{o}"
    );
    // `--mailto ops@example.com --mail on-success`: refused, saying why.
    let full = fixture("cron-create-6");
    let (v, status, o) = replay(d, &full, |_| {});
    assert_eq!(status, 501, "{o}");
    assert!(
        field(&v, "message").contains("mail notifications are not supported"),
        "{o}"
    );
    // The same without mail (and without its security group, which this daemon lacks): taken,
    // with every container option Hyper's client put in it.
    let (v, status, o) = replay(d, &full, |b| {
        b["OwnerEmail"] = json!("");
        b["MailPolicy"] = json!("on-failure");
        b["Config"]["Labels"]
            .as_object_mut()
            .unwrap()
            .remove("sh_hyper_sg_web");
        b["Config"]["Labels"]["sh_hyper_cron_concurrency"] = json!("replace");
    });
    assert_eq!(status, 201, "{o}");
    assert_eq!(field(&v, "ContainerName"), "full-job", "{v}");
    assert_eq!(field(&v, "ConcurrencyPolicy"), "replace", "{v}");
    assert_eq!(v["HostConfig"]["Binds"], json!(["vol1:/data"]), "{v}");
    assert_eq!(v["Config"]["Hostname"], "job", "{v}");

    // `cron ls`: a bare array of Crons.
    let (v, status, o) = replay(d, &fixture("cron-ls-1"), |_| {});
    assert_eq!(status, 200, "{o}");
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|c| field(c, "Name"))
        .collect();
    assert_eq!(names, ["every5", "full", "nightly"], "{o}");
    v.as_array().unwrap().iter().for_each(assert_go_cron);
    // `cron inspect nightly`
    let (v, status, o) = replay(d, &fixture("cron-inspect-1"), |_| {});
    assert_eq!(status, 200, "{o}");
    assert_go_cron(&v);
    assert_eq!(field(&v, "ContainerName"), "nightly-job");
    assert_eq!(v["Config"]["Env"], json!(["A=1", "B=two"]));
    assert_eq!(v["Config"]["Labels"]["sh_hyper_instancetype"], "s3");
    // `cron history nightly` and `--tail 3 --since 2026-12-04T00:00:00`: no runs yet.
    for name in ["cron-history-1", "cron-history-2"] {
        let (v, status, o) = replay(d, &fixture(name), |_| {});
        assert_eq!((status, v.clone()), (200, json!([])), "{o}");
    }
    // `cron rm nightly every5 full`, then `cron ls` is empty.
    for name in ["cron-rm-1", "cron-rm-2", "cron-rm-3"] {
        let (_, status, o) = replay(d, &fixture(name), |_| {});
        assert_eq!(status, 204, "{o}");
    }
    let (v, status, o) = replay(d, &fixture("cron-ls-2"), |_| {});
    assert_eq!((status, v), (200, json!([])), "{o}");
    // Gone: what Hyper's client turns into "No such cron job".
    let (_, status, o) = replay(d, &fixture("cron-inspect-1"), |_| {});
    assert_eq!(status, 404, "{o}");
}
