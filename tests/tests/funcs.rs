//! Serverless functions (issue 16): `hyper func` end to end on real microVMs. A call's output
//! is the function's, each call has a VM of its own that is gone after it, the concurrency
//! limit, the timeout, the UUID as the only key to the function endpoint, refusals, a restart
//! in the middle of a call, and Hyper's own client's captured requests replayed.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use e2e::*;
use serde_json::Value;

fn main() {
    let tests: &[(&'static str, TestFn)] = &[
        (
            "a_call_answers_from_a_vm_of_its_own",
            a_call_answers_from_a_vm_of_its_own,
        ),
        (
            "the_concurrency_limit_queues_calls",
            the_concurrency_limit_queues_calls,
        ),
        ("a_timeout_kills_the_vm", a_timeout_kills_the_vm),
        (
            "a_full_queue_refuses_and_rm_ends_calls",
            a_full_queue_refuses_and_rm_ends_calls,
        ),
        ("the_uuid_is_the_only_key", the_uuid_is_the_only_key),
        ("bad_input_is_refused", bad_input_is_refused),
        ("hypers_own_requests_replayed", hypers_own_requests_replayed),
        (
            "a_restart_fails_the_call_in_flight",
            a_restart_fails_the_call_in_flight,
        ),
    ];
    std::process::exit(run_tests(tests));
}

fn d() -> &'static Daemon {
    main_daemon()
}

/// `curl` on the function endpoint's path (no version prefix) over the unix socket: the body
/// and the status.
fn endpoint(d: &Daemon, method: &str, path: &str, extra: &[&str]) -> (String, u16) {
    split_status(d.api(method, path, extra))
}

fn split_status(o: Out) -> (String, u16) {
    let (body, status) = o.stdout.rsplit_once('\n').unwrap_or(("", &o.stdout));
    (body.to_string(), status.trim().parse().unwrap_or(0))
}

fn uuid(d: &Daemon, name: &str) -> String {
    let o = d.hyper(&["func", "inspect", name]).run().ok();
    o.json()[0]["UUID"].as_str().unwrap().to_string()
}

/// The status counters of a function.
fn status(d: &Daemon, name: &str) -> HashMap<String, u64> {
    let u = uuid(d, name);
    let (body, code) = endpoint(d, "GET", &format!("/status/{name}/{u}"), &[]);
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect()
}

/// Containers of function `name`'s calls that `hyper ps -a` lists.
fn call_containers(d: &Daemon, name: &str) -> Vec<String> {
    let o = d
        .hyper(&[
            "ps",
            "-a",
            "--no-trunc",
            "--filter",
            &format!("label=sh_hyper_func={name}"),
            "--format",
            "{{.ID}}",
        ])
        .run()
        .ok();
    o.stdout.lines().map(str::to_string).collect()
}

/// Waits until nothing of the containers `ids` is left: no record, no directory, no QEMU or
/// supervisor process.
fn nothing_left_of(d: &Daemon, ids: &[String]) {
    wait_for("the calls' VMs to be gone", secs(30.0), || {
        let mut left = Vec::new();
        for id in ids {
            let dir = d.cdir(id);
            if dir.exists() {
                left.push(format!("directory {}", dir.display()));
            }
            left.extend(processes_mentioning(&format!("{}/", dir.display())));
        }
        match left.is_empty() {
            true => Ok(()),
            false => Err(left.join("; ")),
        }
    });
}

/// Runs `f` while watching the call containers of `name`: returns what `f` returned and every
/// container id seen.
fn watching_calls<T: Send>(
    d: &'static Daemon,
    name: &str,
    f: impl FnOnce() -> T + Send,
) -> (T, Vec<String>) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let result = std::thread::scope(|s| {
        let (seen2, stop2, name2) = (seen.clone(), stop.clone(), name.to_string());
        s.spawn(move || {
            while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
                for id in call_containers(d, &name2) {
                    let mut v = seen2.lock().unwrap();
                    if !v.contains(&id) {
                        v.push(id);
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        });
        let r = f();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        r
    });
    let seen = seen.lock().unwrap().clone();
    (result, seen)
}

const BOOT_ID: &str = "tr a-z A-Z; cat /proc/sys/kernel/random/boot_id";

fn a_call_answers_from_a_vm_of_its_own() {
    let d = d();
    let o = d
        .hyper(&[
            "func", "create", "--name", "upper", "busybox", "sh", "-c", BOOT_ID,
        ])
        .run()
        .ok();
    let u = uuid(d, "upper");
    assert!(
        o.out().starts_with("upper is created with the address of ")
            && o.out().contains(&format!("/call/upper/{u}")),
        "{o}"
    );
    let ((first, second), seen) = watching_calls(d, "upper", || {
        // Synchronous: the function's stdout is the answer.
        let sync = d
            .hyper(&["func", "call", "--sync", "upper"])
            .stdin(b"hello func\n")
            .timeout(120.0)
            .run()
            .ok();
        // Asynchronous: a call id, then its output.
        let o = d
            .hyper(&["func", "call", "upper"])
            .stdin(b"second\n")
            .timeout(60.0)
            .run()
            .ok();
        let call = o
            .out()
            .strip_prefix("CallId: ")
            .expect("CallId")
            .to_string();
        let out = d
            .hyper(&["func", "get", "--wait", &call])
            .timeout(120.0)
            .run()
            .ok();
        (sync.stdout, (call, out.stdout))
    });
    let (call, second) = second;
    let mut a = first.lines();
    let mut b = second.lines();
    assert_eq!(a.next(), Some("HELLO FUNC"), "{first}");
    assert_eq!(b.next(), Some("SECOND"), "{second}");
    let (boot_a, boot_b) = (a.next().unwrap(), b.next().unwrap());
    assert_eq!(boot_a.len(), 36, "{first}");
    assert_ne!(boot_a, boot_b, "two calls ran in one VM");
    // The output stays: asked again, without waiting.
    let again = d.hyper(&["func", "get", &call]).run().ok();
    assert_eq!(again.stdout, second);
    // The logs tell each call's story, as Hyper's client prints them.
    let logs = d.hyper(&["func", "logs", "upper"]).run().ok();
    assert_eq!(logs.stdout.matches("[CALL]").count(), 2, "{logs}");
    assert_eq!(logs.stdout.matches("[FINISHED]").count(), 2, "{logs}");
    assert!(logs.stdout.contains("ShortStdin: second"), "{logs}");
    assert!(logs.stdout.contains("ShortStdout: SECOND"), "{logs}");
    let one = d
        .hyper(&["func", "logs", "--callid", &call, "--tail", "1", "upper"])
        .run()
        .ok();
    assert_eq!(one.stdout.matches("] CallId: ").count(), 1, "{one}");
    assert!(
        one.stdout.contains(&format!("[FINISHED] CallId: {call}")),
        "{one}"
    );
    let st = status(d, "upper");
    assert_eq!(
        (st["Total"], st["Finished"], st["Failed"]),
        (2, 2, 0),
        "{st:?}"
    );
    let table = d.hyper(&["func", "status", "upper"]).run().ok();
    assert!(table.stdout.starts_with("TOTAL"), "{table}");
    // Nothing is left of either call's VM.
    assert!(seen.len() <= 2, "{seen:?}");
    assert!(call_containers(d, "upper").is_empty());
    nothing_left_of(d, &seen);
    d.hyper(&["func", "rm", "upper"]).run().ok();
    let gone = d.hyper(&["func", "inspect", "upper"]).run().code(1);
    assert!(gone.stderr.contains("No such function: upper"), "{gone}");
}

fn the_concurrency_limit_queues_calls() {
    let d = d();
    d.hyper(&[
        "func",
        "create",
        "--name",
        "one",
        "--max-concurrency",
        "1",
        "busybox",
        "sh",
        "-c",
        "cat; sleep 2",
    ])
    .run()
    .ok();
    let inspect = d.hyper(&["func", "inspect", "one"]).run().ok().json();
    assert_eq!(inspect[0]["MaxConcurrency"], 1);
    let ((), seen) = watching_calls(d, "one", || {
        let call = |payload: &[u8]| {
            let o = d.hyper(&["func", "call", "one"]).stdin(payload).run().ok();
            o.out().strip_prefix("CallId: ").unwrap().to_string()
        };
        let first = call(b"first");
        let second = call(b"second");
        // While the first runs, the second waits.
        wait_for("one call running and one pending", secs(60.0), || {
            let st = status(d, "one");
            match (st["Running"], st["Pending"]) {
                (1, 1) => Ok(()),
                _ => Err(format!("{st:?}")),
            }
        });
        // Following the second call's log: it ends by itself once that call has.
        let follow = d
            .hyper(&["func", "logs", "-f", "--callid", &second, "one"])
            .timeout(120.0)
            .run()
            .ok();
        assert!(
            follow
                .stdout
                .contains(&format!("[FINISHED] CallId: {second}")),
            "{follow}"
        );
        assert!(!follow.stdout.contains(&first), "{follow}");
        for (id, want) in [(&first, "first"), (&second, "second")] {
            let o = d
                .hyper(&["func", "get", "--wait", id])
                .timeout(120.0)
                .run()
                .ok();
            assert_eq!(o.stdout, want);
        }
        // The second started only once the first had finished.
        let logs = d.hyper(&["func", "logs", "one"]).run().ok().stdout;
        let events: Vec<(String, String)> = logs
            .lines()
            .filter_map(|l| {
                let ev = l.split('[').nth(1)?.split(']').next()?.to_string();
                let id = l.split("CallId: ").nth(1)?.split(',').next()?.to_string();
                Some((ev, id))
            })
            .filter(|(ev, _)| ev == "START" || ev == "FINISHED")
            .collect();
        let want: Vec<(String, String)> = [
            ("START", &first),
            ("FINISHED", &first),
            ("START", &second),
            ("FINISHED", &second),
        ]
        .iter()
        .map(|(e, id)| (e.to_string(), id.to_string()))
        .collect();
        assert_eq!(events, want, "{logs}");
    });
    assert!(!seen.is_empty());
    nothing_left_of(d, &seen);
    d.hyper(&["func", "rm", "one"]).run().ok();
}

fn a_timeout_kills_the_vm() {
    let d = d();
    d.hyper(&[
        "func",
        "create",
        "--name",
        "slow",
        "--timeout",
        "2",
        "busybox",
        "sleep",
        "600",
    ])
    .run()
    .ok();
    let (o, seen) = watching_calls(d, "slow", || {
        d.hyper(&["func", "call", "--sync", "slow"])
            .timeout(120.0)
            .run()
    });
    let o = o.code(1);
    assert!(
        o.stderr.contains("timed out after 2s: its VM was killed"),
        "{o}"
    );
    assert_eq!(seen.len(), 1, "{seen:?}");
    nothing_left_of(d, &seen);
    let st = status(d, "slow");
    assert_eq!((st["Failed"], st["Running"]), (1, 0), "{st:?}");
    let logs = d.hyper(&["func", "logs", "slow"]).run().ok();
    assert!(
        logs.stdout.contains("[FAILED]") && logs.stdout.contains("timed out"),
        "{logs}"
    );
    d.hyper(&["func", "rm", "slow"]).run().ok();
}

/// Calls that may wait for a slot (node::funcs::MAX_PENDING).
const MAX_PENDING: usize = 64;

fn a_full_queue_refuses_and_rm_ends_calls() {
    let d = d();
    d.hyper(&[
        "func",
        "create",
        "--name",
        "busy",
        "--max-concurrency",
        "1",
        "busybox",
        "sleep",
        "600",
    ])
    .run()
    .ok();
    let u = uuid(d, "busy");
    let path = format!("/call/busy/{u}");
    let (body, code) = endpoint(d, "POST", &path, &[]);
    assert_eq!(code, 202, "{body}");
    let id = wait_for("the first call's VM", secs(60.0), || {
        match (
            call_containers(d, "busy").first(),
            status(d, "busy")["Running"],
        ) {
            (Some(id), 1) => Ok(id.clone()),
            (_, r) => Err(format!("{r} running")),
        }
    });
    // The queue takes MAX_PENDING more, in order, then says no.
    for i in 0..MAX_PENDING {
        let (body, code) = endpoint(d, "POST", &path, &[]);
        assert_eq!(code, 202, "call {i}: {body}");
    }
    let (body, code) = endpoint(d, "POST", &path, &[]);
    assert_eq!(code, 429, "{body}");
    assert!(body.contains("64 waiting"), "{body}");
    let st = status(d, "busy");
    assert_eq!(
        (st["Running"], st["Pending"]),
        (1, MAX_PENDING as u64),
        "{st:?}"
    );
    // Only one VM runs for all of them.
    assert_eq!(call_containers(d, "busy").len(), 1);
    // Removing the function ends its calls: the running one's VM is gone when rm returns.
    d.hyper(&["func", "rm", "busy"]).timeout(120.0).run().ok();
    assert!(call_containers(d, "busy").is_empty());
    nothing_left_of(d, &[id]);
}

fn the_uuid_is_the_only_key() {
    let d = d();
    d.hyper(&["func", "create", "--name", "mine", "busybox", "cat"])
        .run()
        .ok();
    let u = uuid(d, "mine");
    let (other, _) = d.new_tenant("funcother");
    // Another tenant neither sees nor manages it.
    let o = d
        .hyper_tcp(&other, &["func", "inspect", "mine"])
        .run()
        .code(1);
    assert!(o.stderr.contains("No such function: mine"), "{o}");
    let o = d.hyper_tcp(&other, &["func", "ls", "-q"]).run().ok();
    assert!(!o.stdout.contains("mine"), "{o}");
    d.hyper_tcp(&other, &["func", "rm", "mine"]).run().code(1);
    d.hyper_tcp(&other, &["func", "update", "--refresh", "mine"])
        .run()
        .code(1);
    d.hyper_tcp(&other, &["func", "call", "mine"]).run().code(1);
    // Without the UUID, the endpoint says the same 404 for a wrong UUID and a wrong name.
    let wrong = uuid_like(&u);
    let (a, code_a) = endpoint(d, "POST", &format!("/call/mine/{wrong}"), &[]);
    let (b, code_b) = endpoint(d, "POST", &format!("/call/nosuch/{u}"), &[]);
    assert_eq!((code_a, code_b), (404, 404));
    assert_eq!(a, b);
    for path in [
        format!("/status/mine/{wrong}"),
        format!("/logs/mine/{wrong}/"),
        format!("/output/mine/{wrong}/x"),
    ] {
        assert_eq!(endpoint(d, "GET", &path, &[]).1, 404, "{path}");
    }
    // The endpoint is on the TLS listener too, unsigned.
    let url = format!("https://127.0.0.1:{}/status/mine/{u}", d.tcp_port);
    let o = Cmd::new("curl", &["-sk", &url]).run().ok();
    assert!(o.stdout.contains("\"Total\":0"), "{o}");
    // --refresh revokes the old URL at once.
    d.hyper(&["func", "update", "--refresh", "mine"]).run().ok();
    let fresh = uuid(d, "mine");
    assert_ne!(fresh, u);
    assert_eq!(endpoint(d, "GET", &format!("/status/mine/{u}"), &[]).1, 404);
    assert_eq!(
        endpoint(d, "GET", &format!("/status/mine/{fresh}"), &[]).1,
        200
    );
    d.hyper(&["func", "rm", "mine"]).run().ok();
    // Gone with its function: the URL answers 404.
    assert_eq!(
        endpoint(d, "GET", &format!("/status/mine/{fresh}"), &[]).1,
        404
    );
}

/// A UUID of the same shape as `u`, not `u`.
fn uuid_like(u: &str) -> String {
    let flipped = if u.starts_with('0') { '1' } else { '0' };
    format!("{flipped}{}", &u[1..])
}

fn bad_input_is_refused() {
    let d = d();
    let cases: &[(&[&str], &str)] = &[
        (&["--name", "Bad_Name", "busybox"], "invalid function name"),
        (
            &["--name", "nosuchimg", "nosuchimage:1"],
            "image nosuchimage:1",
        ),
        (&["--name", "badsize", "--size", "xl9", "busybox"], "xl9"),
        (
            &["--name", "longtime", "--timeout", "99999", "busybox"],
            "invalid Timeout",
        ),
        (
            &["--name", "zero", "--max-concurrency", "0", "busybox"],
            "MaxConcurrency",
        ),
        (
            &[
                "--name",
                "prot",
                "-l",
                "sh_hyper_container_protection=true",
                "busybox",
            ],
            "do not support",
        ),
    ];
    for (i, (args, want)) in cases.iter().enumerate() {
        let mut a = vec!["func", "create"];
        a.extend_from_slice(args);
        let o = d.hyper(&a).run().code(1);
        assert!(o.stderr.contains(want), "test[{i}]: {o}");
    }
    let o = d.hyper(&["func", "ls", "-q"]).run().ok();
    for name in ["nosuchimg", "badsize", "longtime", "zero", "prot"] {
        assert!(
            !o.stdout.lines().any(|l| l == name),
            "{name} was created: {o}"
        );
    }
    // Fields we cannot honour: 501, named.
    let body = r#"{"Name":"ports","Config":{"Image":"busybox"},"HostConfig":{"PortBindings":{"80/tcp":[{"HostPort":"8080"}]}}}"#;
    let (text, code) = split_status(d.api(
        "POST",
        "/v1.23/funcs/create",
        &["-H", "Content-Type: application/json", "-d", body],
    ));
    assert_eq!(code, 501, "{text}");
    assert!(text.contains("HostConfig.PortBindings"), "{text}");
    let body = r#"{"Name":"usr","Config":{"Image":"busybox","User":"nobody"}}"#;
    let (text, code) = split_status(d.api("POST", "/v1.23/funcs/create", &["-d", body]));
    assert_eq!(code, 501, "{text}");
    assert!(text.contains("Config.User"), "{text}");
    // A name in use.
    d.hyper(&["func", "create", "--name", "dup", "busybox", "cat"])
        .run()
        .ok();
    let o = d
        .hyper(&["func", "create", "--name", "dup", "busybox", "cat"])
        .run()
        .code(1);
    assert!(o.stderr.contains("already exists"), "{o}");
    // A payload past the limit: 413, and no call made.
    let u = uuid(d, "dup");
    let big = d.data.join("big-payload");
    std::fs::write(&big, vec![b'x'; (1 << 20) + 1]).unwrap();
    let at = format!("@{}", big.display());
    let (text, code) = endpoint(
        d,
        "POST",
        &format!("/call/dup/{u}"),
        &["--data-binary", &at],
    );
    assert_eq!(code, 413, "{text}");
    assert_eq!(status(d, "dup")["Total"], 0);
    // A call of a function that does not exist; a call id that does not.
    let o = d.hyper(&["func", "call", "nosuch"]).run().code(1);
    assert!(o.stderr.contains("No such function: nosuch"), "{o}");
    let o = d.hyper(&["func", "get", "nosuchcall"]).run().code(1);
    assert!(o.stderr.contains("not found"), "{o}");
    let o = d
        .hyper(&["func", "logs", "--tail", "x", "dup"])
        .run()
        .code(1);
    assert!(o.stderr.contains("invalid tail"), "{o}");
    d.hyper(&["func", "rm", "dup"]).run().ok();
    let o = d.hyper(&["func", "rm", "dup"]).run().code(1);
    assert!(o.stderr.contains("No such function: dup"), "{o}");
}

/// A request Hyper's client sent, as captured (tests/fixtures/hypercli).
struct Captured {
    method: String,
    path: String,
    body: Option<String>,
    upgrade: bool,
}

fn captured(name: &str) -> Captured {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/hypercli")
        .join(format!("{name}.json"));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let body = match &v["body"] {
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    };
    Captured {
        method: v["method"].as_str().unwrap().into(),
        path: v["path"].as_str().unwrap().into(),
        body,
        upgrade: v["headers"]["Upgrade"].as_str() == Some("tcp"),
    }
}

/// Sends a captured request over the unix socket (as the default tenant: signatures are
/// checked on TCP only), with the captured UUID and call id swapped for live ones.
fn replay(d: &Daemon, name: &str, swaps: &[(&str, &str)]) -> (String, u16) {
    let c = captured(name);
    let mut path = c.path.clone();
    for (from, to) in swaps {
        path = path.replace(from, to);
    }
    let mut extra: Vec<String> = Vec::new();
    if let Some(b) = &c.body {
        let file = d.data.join(format!("{name}.body"));
        std::fs::write(&file, b).unwrap();
        extra.extend(["--data-binary".into(), format!("@{}", file.display())]);
        // Hyper's client streams call payloads (chunked) and sends JSON otherwise.
        if path.starts_with("/call/") {
            extra.extend(["-H".into(), "Transfer-Encoding: chunked".into()]);
        } else {
            extra.extend(["-H".into(), "Content-Type: application/json".into()]);
        }
    }
    if c.upgrade {
        return hijacked_get(d, &path);
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let o = d.api(&c.method, &path, &extra);
    split_status(o)
}

/// `GET path` with `Connection: Upgrade, Upgrade: tcp` as Hyper's client sends `logs -f`: the
/// status and what the stream carried within two seconds.
fn hijacked_get(d: &Daemon, path: &str) -> (String, u16) {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(&d.sock).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: Go-http-client/1.1\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
    )
    .unwrap();
    s.set_read_timeout(Some(secs(2.0))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (body, code)
}

fn hypers_own_requests_replayed() {
    let d = d();
    // The UUID and call id of the capture session, to be swapped for this run's.
    let old_uuid = captured("func-call-2").path["/call/echo1/".len()..].to_string();
    let old_call = captured("func-get-1").path["/v1.23/funcs/call/".len()..].to_string();
    let (old_uuid, old_call) = (old_uuid.as_str(), old_call.as_str());
    let (body, code) = replay(d, "func-create-2", &[]);
    assert_eq!(code, 201, "{body}");
    let f: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (
            f["Name"].as_str(),
            f["ContainerSize"].as_str(),
            f["Timeout"].as_u64()
        ),
        (Some("echo1"), Some("s2"), Some(30))
    );
    assert_eq!(
        f["Config"]["Env"],
        serde_json::json!(["GREETING=hi", "MODE=test"])
    );
    // `-p` cannot be honoured by calls that run at once: 501 naming it.
    let (body, code) = replay(d, "func-create-4", &[]);
    assert_eq!(code, 501, "{body}");
    assert!(body.contains("PortBindings"), "{body}");
    let (body, code) = replay(d, "func-ls-1", &[]);
    assert_eq!(code, 200);
    let list: Value = serde_json::from_str(&body).unwrap();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|f| f["Name"] == "echo1"),
        "{body}"
    );
    assert_eq!(replay(d, "func-inspect-1", &[]).1, 200);
    for (i, name) in ["func-update-1", "func-update-2"].iter().enumerate() {
        let (body, code) = replay(d, name, &[]);
        assert_eq!(code, 200, "test[{i}] {body}");
    }
    let f: Value = serde_json::from_str(&replay(d, "func-call-1", &[]).0).unwrap();
    assert_eq!(
        (f["ContainerSize"].as_str(), f["Timeout"].as_u64()),
        (Some("m1"), Some(60))
    );
    assert_eq!(f["Config"]["Env"], serde_json::json!(["A=1"]));
    let u = f["UUID"].as_str().unwrap().to_string();
    let swap = [(old_uuid, u.as_str())];
    let (body, code) = replay(d, "func-call-2", &swap);
    assert_eq!(code, 202, "{body}");
    let call: Value = serde_json::from_str(&body).unwrap();
    let call = call["CallId"].as_str().unwrap().to_string();
    let (body, code) = replay(d, "func-call-4", &swap);
    assert_eq!((code, body.as_str()), (200, "hello sync\n"));
    let (body, code) = replay(d, "func-call-6", &swap);
    assert_eq!((code, body.as_str()), (200, ""));
    let swap = [(old_uuid, u.as_str()), (old_call, call.as_str())];
    let f: Value = serde_json::from_str(&replay(d, "func-get-1", &swap).0).unwrap();
    assert_eq!(f["Name"], "echo1");
    assert_eq!(
        replay(d, "func-get-4", &swap),
        ("hello func\n".to_string(), 200)
    );
    assert_eq!(
        replay(d, "func-get-2", &swap),
        ("hello func\n".to_string(), 200)
    );
    let (body, code) = replay(d, "func-logs-2", &swap);
    assert_eq!(code, 200);
    let events: Vec<Value> = serde_json::Deserializer::from_str(&body)
        .into_iter::<Value>()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        events.iter().filter(|e| e["Event"] == "FINISHED").count(),
        3,
        "{body}"
    );
    for e in &events {
        for k in [
            "Time",
            "Event",
            "CallId",
            "ShortStdin",
            "ShortStdout",
            "ShortStderr",
            "Message",
        ] {
            assert!(e.get(k).is_some(), "{k} missing in {e}");
        }
    }
    let (body, _) = replay(d, "func-logs-4", &swap);
    assert!(
        body.contains("\"FINISHED\"") && body.contains(&call) && body.lines().count() <= 5,
        "{body}"
    );
    // `logs -f`: 101, then the stream (curl gives up after its --max-time).
    let (body, code) = replay(d, "func-logs-6", &swap);
    assert_eq!(code, 101, "{body}");
    assert!(body.contains("\"CALL\""), "{body}");
    let (body, code) = replay(d, "func-status-2", &swap);
    assert_eq!(code, 200);
    let st: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (st["Total"].as_u64(), st["Finished"].as_u64()),
        (Some(3), Some(3)),
        "{body}"
    );
    assert_eq!(replay(d, "func-update-3", &[]).1, 200);
    assert_eq!(replay(d, "func-rm-1", &[]).1, 204);
    assert_eq!(replay(d, "func-inspect-2", &[]).1, 404);
    assert_eq!(replay(d, "func-rm-1", &[]).1, 404);
}

fn restart_daemon() -> &'static Daemon {
    static D: OnceLock<Arc<Daemon>> = OnceLock::new();
    // With the listener Hyper's client needs: port 443 (this test binary has a network
    // namespace of its own, so the port is free and nothing else sees it).
    D.get_or_init(|| {
        Daemon::start(
            "fr",
            DaemonOpts {
                extra_args: vec!["-H".into(), "tcp://127.0.0.1:443".into()],
                ..DaemonOpts::default()
            },
        )
    })
}

fn a_restart_fails_the_call_in_flight() {
    let d = restart_daemon();
    d.hyper(&[
        "func", "create", "--name", "long", "busybox", "sleep", "600",
    ])
    .run()
    .ok();
    // The function endpoint on port 443 of HYPER_FUNC_ENDPOINT, over TLS, as Hyper's client
    // reaches it.
    let o = d
        .hyper(&["func", "status", "long"])
        .env("HYPER_FUNC_ENDPOINT", "127.0.0.1")
        .env("HYPER_TLSCACERT", d.data.join("tls/ca.pem"))
        .run()
        .ok();
    assert!(o.stdout.starts_with("TOTAL"), "{o}");
    // A result from before the restart.
    d.hyper(&[
        "func", "create", "--name", "kept", "busybox", "echo", "kept",
    ])
    .run()
    .ok();
    let o = d.hyper(&["func", "call", "kept"]).run().ok();
    let kept = o.out().strip_prefix("CallId: ").unwrap().to_string();
    let o = d
        .hyper(&["func", "get", "--wait", &kept])
        .timeout(120.0)
        .run()
        .ok();
    assert_eq!(o.stdout, "kept\n");
    let o = d.hyper(&["func", "call", "long"]).run().ok();
    let call = o.out().strip_prefix("CallId: ").unwrap().to_string();
    let id = wait_for("the call's container", secs(60.0), || {
        let st = status(d, "long");
        match (call_containers(d, "long").first(), st["Running"]) {
            (Some(id), 1) => Ok(id.clone()),
            _ => Err(format!("{st:?}")),
        }
    });
    d.kill9();
    d.restart();
    let st = status(d, "long");
    assert_eq!((st["Running"], st["Failed"]), (0, 1), "{st:?}");
    let o = d.hyper(&["func", "get", &call]).run().code(1);
    assert!(
        o.stderr
            .contains("hyperd restarted while the call was running"),
        "{o}"
    );
    assert!(call_containers(d, "long").is_empty());
    nothing_left_of(d, &[id]);
    // Results survive the restart.
    let o = d.hyper(&["func", "get", &kept]).run().ok();
    assert_eq!(o.stdout, "kept\n");
    d.hyper(&["func", "rm", "long", "kept"]).run().ok();
}
