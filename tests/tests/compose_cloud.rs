//! Compose kept in the cloud (issue 16): our CLI's `hyper compose` against hyperd's
//! `/compose/*`, with real VMs; the requests Hyper's own client sends, replayed raw over the
//! unix socket; refusals; another tenant. The stock docker-compose's path is network.rs's.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use e2e::*;
use serde_json::{json, Value};

fn main() {
    let tests: &[(&'static str, TestFn)] = &[
        ("project_lifecycle", project_lifecycle),
        ("hyper_client_requests", hyper_client_requests),
        ("refusals", refusals),
        ("health_run_logs_config", health_run_logs_config),
        ("captured_fixtures", captured_fixtures),
    ];
    std::process::exit(run_tests(tests));
}

/// TEST-NET-3: never routed anywhere real; lives in this daemon's node namespace only.
const FIP_POOL: &str = "203.0.113.0/29";

fn daemon() -> &'static Daemon {
    static D: OnceLock<Arc<Daemon>> = OnceLock::new();
    D.get_or_init(|| {
        Daemon::start(
            "cc",
            DaemonOpts {
                extra_args: vec!["--fip-pool".into(), FIP_POOL.into()],
                ..DaemonOpts::default()
            },
        )
    })
}

struct ProjectDir {
    dir: PathBuf,
}

impl ProjectDir {
    fn new(tag: &str) -> Self {
        let dir = short_tmp(tag);
        std::fs::create_dir_all(&dir).unwrap();
        ProjectDir { dir }
    }
    fn write(&self, text: &str) -> &Path {
        std::fs::write(self.dir.join("docker-compose.yml"), text).unwrap();
        &self.dir
    }
    fn file(&self) -> String {
        self.dir.join("docker-compose.yml").display().to_string()
    }
}

impl Drop for ProjectDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `hyper compose -f FILE -p PROJECT ARGS` on the unix socket (the default tenant).
fn compose(d: &Daemon, file: &str, project: &str, args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut a = vec!["compose", "-f", file, "-p", project];
    a.extend_from_slice(args);
    let mut c = d.hyper(&a).timeout(300.0);
    for (k, v) in env {
        c = c.env(k, v);
    }
    c.run()
}

/// The project's containers as `compose ps` finds them: name -> (id, state).
fn project_containers(d: &Daemon, project: &str) -> Vec<(String, String, String)> {
    let o = d
        .hyper(&[
            "ps",
            "-a",
            "--no-trunc",
            "--filter",
            &format!("label=sh.hyper.compose.project={project}"),
            "--format",
            "{{.Names}} {{.ID}} {{.State}}",
        ])
        .run()
        .ok();
    let mut v: Vec<(String, String, String)> = o
        .stdout
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            // Untruncated, Names lists the links to a container too (`db,web/database`).
            let name = it.next()?.split(',').find(|n| !n.contains('/'))?;
            Some((
                name.to_string(),
                it.next()?.to_string(),
                it.next()?.to_string(),
            ))
        })
        .collect();
    v.sort();
    v
}

fn id_in(list: &[(String, String, String)], name: &str) -> String {
    list.iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, id, _)| id.clone())
        .unwrap_or_else(|| panic!("no {name} in {list:?}"))
}

const PROJECT_FILE: &str = r#"version: "2"
services:
  db:
    image: busybox
    command: httpd -f -p 80 -h /etc
    expose: ["80"]
    size: s1
    noauto_volume: true
  web:
    image: busybox
    command: httpd -f -p 80 -h /etc
    links: ["db:database"]
    depends_on: [db]
    ports: ["18090:80"]
    volumes: ["data:/data"]
    environment:
      GREETING: ${GREETING}
    fip: FIP
    security_groups: [ccweb]
volumes:
  data:
    driver_opts:
      size: "10"
"#;

/// A project with links, a published port, a floating IP, a security group, noauto_volume
/// and a size: up, names across services, scale, ps, a no-op second up, a changed service
/// recreated with its data and FIP while the other keeps its container, --force-recreate,
/// another tenant blind to it, and down -v leaving nothing.
fn project_lifecycle() {
    let d = daemon();
    let p = ProjectDir::new("ccp");
    let inet = Netns::internet("ccinet", &d.node, "hy-ccin0", FIP_POOL);
    let fip = d.hyper(&["fip", "allocate", "1"]).run().ok().out();
    let rules = p.dir.join("sg.yaml");
    std::fs::write(
        &rules,
        "name: ccweb\nrules:\n  - direction: ingress\n    protocol: tcp\n    port_range_min: 80\n    port_range_max: 80\n    remote_ip_prefix: 0.0.0.0/0\n  - direction: egress\n",
    )
    .unwrap();
    d.hyper(&["sg", "create", "-f", rules.to_str().unwrap(), "ccweb"])
        .run()
        .ok();
    p.write(&PROJECT_FILE.replace("FIP", &fip));
    let f = p.file();
    let o = compose(d, &f, "shop", &["up", "-d"], &[("GREETING", "one")]).ok();
    assert!(o.stderr.contains("Creating shop-web-1 ... done"), "{o}");

    let list = project_containers(d, "shop");
    let names: Vec<&str> = list.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, ["shop-db-1", "shop-web-1"], "{list:?}");
    assert!(list.iter().all(|(_, _, s)| s == "running"), "{list:?}");
    let web = d.inspect("shop-web-1");
    let db = d.inspect("shop-db-1");
    let labels = &web["Config"]["Labels"];
    assert_eq!(labels["sh.hyper.compose.service"], "web", "{labels}");
    assert_eq!(labels["sh.hyper.compose.oneoff"], "False");
    assert_eq!(labels["sh_hyper_sg_ccweb"], "yes");
    assert_eq!(db["Config"]["Labels"]["sh_hyper_instancetype"], "s1");
    assert_eq!(db["Config"]["Labels"]["sh_hyper_noauto_volume"], "true");
    assert!(web["Config"]["Env"]
        .as_array()
        .unwrap()
        .contains(&json!("GREETING=one")));
    assert_eq!(
        d.hyper(&["port", "shop-web-1", "80"]).run().ok().out(),
        "0.0.0.0:18090"
    );
    // Names and link aliases resolve across services.
    let db_host = db["Config"]["Hostname"].as_str().unwrap().to_string();
    for name in ["db", "database"] {
        let o = d
            .hyper(&[
                "exec",
                "shop-web-1",
                "wget",
                "-qO-",
                &format!("http://{name}/hostname"),
            ])
            .timeout(60.0)
            .run()
            .ok();
        assert_eq!(o.out(), db_host, "{name}: {o}");
    }
    // The FIP reaches web's published port.
    let web_host = web["Config"]["Hostname"].as_str().unwrap().to_string();
    let through_fip = || {
        wait_for("web through its FIP", secs(30.0), || {
            inet.run(|| http_get(&format!("{fip}:18090"), "/hostname"))
        })
    };
    assert_eq!(through_fip().trim(), web_host);
    d.hyper(&["exec", "shop-web-1", "sh", "-c", "echo kept > /data/f"])
        .timeout(60.0)
        .run()
        .ok();

    // ps shows it; another tenant sees nothing and cannot take it down.
    let ps = compose(d, &f, "shop", &["ps"], &[]).ok();
    assert!(
        ps.stdout.contains("shop-web-1") && ps.stdout.contains("18090->80/tcp"),
        "{ps}"
    );
    assert!(
        ps.stdout
            .lines()
            .any(|l| l.starts_with("shop-db-1") && l.contains(" Up")),
        "{ps}"
    );
    let (other, _) = d.new_tenant("ccother");
    let o = d
        .hyper_tcp(&other, &["compose", "-p", "shop", "ps", "-q"])
        .run()
        .ok();
    assert_eq!(o.out(), "", "{o}");
    let o = d
        .hyper_tcp(&other, &["compose", "-p", "shop", "stop"])
        .run();
    assert!(o.code != 0 && o.stderr.contains("no such project"), "{o}");
    let o = d
        .hyper_tcp(&other, &["compose", "-p", "shop", "down", "-v"])
        .run()
        .ok();
    assert!(!o.stderr.contains("shop-"), "{o}");
    assert_eq!(project_containers(d, "shop").len(), 2);

    // Scale: a second db that answers to the service's name too.
    let o = compose(d, &f, "shop", &["scale", "db=2"], &[]).ok();
    assert!(o.stderr.contains("shop-db-2"), "{o}");
    let list = project_containers(d, "shop");
    assert_eq!(list.len(), 3, "{list:?}");
    assert_eq!(
        d.inspect("shop-db-2")["Config"]["Labels"]["sh.hyper.compose.container-number"],
        "2"
    );
    let ids = list.clone();

    // An unchanged project's up changes nothing.
    let o = compose(d, &f, "shop", &["up", "-d"], &[("GREETING", "one")]).ok();
    assert!(o.stderr.contains("shop-web-1 is up-to-date"), "{o}");
    assert_eq!(project_containers(d, "shop"), ids);

    // web changed: only web is recreated, with its volume's data and its FIP.
    let o = compose(d, &f, "shop", &["up", "-d"], &[("GREETING", "two")]).ok();
    assert!(o.stderr.contains("Recreating shop-web-1 ... done"), "{o}");
    let now = project_containers(d, "shop");
    assert_ne!(id_in(&now, "shop-web-1"), id_in(&ids, "shop-web-1"));
    assert_eq!(id_in(&now, "shop-db-1"), id_in(&ids, "shop-db-1"));
    assert_eq!(id_in(&now, "shop-db-2"), id_in(&ids, "shop-db-2"));
    let o = d
        .hyper(&["exec", "shop-web-1", "cat", "/data/f"])
        .timeout(60.0)
        .run()
        .ok();
    assert_eq!(o.out(), "kept");
    let ls = d.hyper(&["fip", "ls"]).run().ok();
    assert!(
        ls.stdout
            .lines()
            .any(|l| l.contains(&fip) && l.contains("shop-web-1")),
        "{ls}"
    );
    let new_host = d.inspect("shop-web-1")["Config"]["Hostname"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new_host, web_host);
    wait_for("the FIP to reach the new web", secs(30.0), || {
        match inet.run(|| http_get(&format!("{fip}:18090"), "/hostname")) {
            Ok(b) if b.trim() == new_host => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });

    // Back to one db, then --force-recreate recreates everything.
    compose(d, &f, "shop", &["scale", "db=1"], &[]).ok();
    let before = project_containers(d, "shop");
    assert_eq!(before.len(), 2, "{before:?}");
    compose(
        d,
        &f,
        "shop",
        &["up", "-d", "--force-recreate"],
        &[("GREETING", "two")],
    )
    .ok();
    let after = project_containers(d, "shop");
    for name in ["shop-db-1", "shop-web-1"] {
        assert_ne!(id_in(&after, name), id_in(&before, name), "{name}");
    }

    // fip taken out of the file: web is recreated without it; the FIP stays the tenant's.
    p.write(&PROJECT_FILE.replace("    fip: FIP\n", ""));
    let o = compose(d, &f, "shop", &["up", "-d"], &[("GREETING", "two")]).ok();
    assert!(o.stderr.contains("Recreating shop-web-1 ... done"), "{o}");
    let ls = d.hyper(&["fip", "ls"]).run().ok();
    assert!(
        ls.stdout
            .lines()
            .any(|l| l.contains(&fip) && !l.contains("shop-web-1")),
        "{ls}"
    );

    // down -v: no containers, volume or network left; the FIP stays the tenant's, free.
    let o = compose(d, &f, "shop", &["down", "-v"], &[]).ok();
    assert!(o.stderr.contains("Removing network shop_default"), "{o}");
    assert!(project_containers(d, "shop").is_empty());
    let vols = d.hyper(&["volume", "ls", "-q"]).run().ok();
    assert!(!vols.stdout.contains("shop_data"), "{vols}");
    let nets = d
        .hyper(&["network", "ls", "--format", "{{.Name}}"])
        .run()
        .ok();
    assert!(!nets.stdout.contains("shop_default"), "{nets}");
    let ls = d.hyper(&["fip", "ls"]).run().ok();
    assert!(!ls.stdout.contains("shop-web-1"), "{ls}");
    d.hyper(&["fip", "release", &fip]).run().ok();
    d.hyper(&["sg", "rm", "ccweb"]).run().ok();
}

/// POSTs a body to hyperd as Hyper's client does (`/v1.23`, JSON), returning body and status.
fn hyper_post(d: &Daemon, path_and_query: &str, body: &str) -> (String, u16) {
    let o = d.api(
        "POST",
        &format!("/v1.23{path_and_query}"),
        &[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ],
    );
    let (text, code) = o.stdout.trim_end().rsplit_once('\n').unwrap_or(("", ""));
    (text.to_string(), code.parse().unwrap_or(0))
}

/// The jsonmessage lines of a compose stream; panics on an errorDetail.
fn stream_ok(body: &str) -> Vec<Value> {
    let lines: Vec<Value> = body
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines.iter().all(|l| l.get("errorDetail").is_none()),
        "{body}"
    );
    lines
}

/// Requests shaped exactly as Hyper's client (hypercli 1.10.17) sends them: the wrapper with
/// `ServiceConfigs.M`, `external_links: null`, the whole `auths` map, services joined by `}{`
/// (URL-encoded); `compose ps` as its label filter. Create only: no VM is booted.
fn hyper_client_requests() {
    let d = daemon();
    let body = json!({
        "ServiceConfigs": {"M": {
            "a": {"image": "busybox", "command": ["sleep", "1000"], "external_links": null,
                  "environment": ["X=1"], "size": "s2"},
            "b": {"image": "busybox", "command": ["sleep", "1000"], "external_links": null,
                  "links": ["a"], "container_name": "raw-bee"},
            "c": {"image": "busybox", "external_links": null}
        }},
        "VolumeConfigs": null,
        "NetworkConfigs": null,
        "auths": {"https://index.docker.io/v1/": {"username": "u", "password": "pw-never-stored-7f3a", "email": "", "serveraddress": "https://index.docker.io/v1/"}}
    })
    .to_string();
    let (text, code) = hyper_post(
        d,
        "/compose/create?project=Raw_Proj&services=a%7D%7Bb",
        &body,
    );
    assert_eq!(code, 200, "{text}");
    let lines = stream_ok(&text);
    assert!(
        lines
            .iter()
            .any(|l| l["id"] == "rawproj-a-1" || l["id"] == "raw_proj-a-1"),
        "{text}"
    );
    // b (and a, which it links to) were created; c was not named.
    let filters = json!({"label": {"sh.hyper.compose.project=raw_proj": true, "sh.hyper.compose.service=b": true}});
    let o = d.api(
        "GET",
        &format!(
            "/v1.23/containers/json?all=1&filters={}",
            percent(&filters.to_string())
        ),
        &[],
    );
    assert!(o.stdout.contains("/raw-bee"), "{o}");
    let all = project_containers(d, "raw_proj");
    let names: Vec<&str> = all.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, ["raw-bee", "raw_proj-a-1"], "{all:?}");
    assert_eq!(
        d.inspect("raw_proj-a-1")["Config"]["Labels"]["sh_hyper_instancetype"],
        "s2"
    );
    // The credentials went to no store: they appear nowhere under the data root's store.
    let store = std::fs::read(d.data.join("store.redb")).unwrap_or_default();
    assert!(!store.is_empty());
    assert!(!String::from_utf8_lossy(&store).contains("pw-never-stored-7f3a"));
    // An unchanged create is a no-op; stop of a created project is one too.
    let (text, code) = hyper_post(
        d,
        "/compose/create?project=Raw_Proj&services=a%7D%7Bb",
        &body,
    );
    assert_eq!(code, 200);
    assert!(
        text.contains("Up-to-date") && !text.contains("\"Created\""),
        "{text}"
    );
    let (text, code) = hyper_post(d, "/compose/stop?project=Raw_Proj&seconds=10", "");
    assert_eq!(code, 200, "{text}");
    stream_ok(&text);
    let (text, code) = hyper_post(d, "/compose/rm?project=Raw_Proj&services=b&rmvol=true", "");
    assert_eq!(code, 200, "{text}");
    stream_ok(&text);
    let names: Vec<String> = project_containers(d, "raw_proj")
        .into_iter()
        .map(|(n, _, _)| n)
        .collect();
    assert_eq!(names, ["raw_proj-a-1"]);
    let (text, code) = hyper_post(
        d,
        "/compose/down?project=Raw_Proj&rmvol=true&rmorphans=true",
        "",
    );
    assert_eq!(code, 200, "{text}");
    stream_ok(&text);
    assert!(project_containers(d, "raw_proj").is_empty());
    let (text, code) = hyper_post(d, "/compose/start?project=Raw_Proj", "");
    assert_eq!(code, 404, "{text}");
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Keys hyperd cannot honour are refused by name, before anything is made; so are host
/// paths (with the ordinary create's words), `fip: auto` and someone else's floating IP.
fn refusals() {
    let d = daemon();
    let post = |svc: Value| {
        let body = json!({"ServiceConfigs": {"M": {"s": svc}}}).to_string();
        hyper_post(d, "/compose/up?project=bad", &body)
    };
    let cases: &[(Value, u16, &str)] = &[
        (
            json!({"image": "busybox", "cap_add": ["NET_ADMIN"]}),
            400,
            "\"cap_add\"",
        ),
        (
            json!({"image": "busybox", "external_links": ["x"]}),
            400,
            "\"external_links\"",
        ),
        (json!({"image": "busybox", "fip": "auto"}), 400, "auto"),
        (
            json!({"image": "busybox", "fip": "203.0.113.7"}),
            400,
            "not allocated to you",
        ),
        (
            json!({"image": "busybox", "volumes": ["/srv:/data"]}),
            501,
            "host bind mounts are not supported",
        ),
        (json!({"image": "busybox", "size": "huge"}), 400, "huge"),
        (
            json!({"image": "busybox", "security_groups": ["nosuchsg"]}),
            400,
            "security group nosuchsg not found",
        ),
    ];
    for (i, (svc, status, needle)) in cases.iter().enumerate() {
        let (text, code) = post(svc.clone());
        assert_eq!(code, *status, "test[{i}]: {text}");
        let text = serde_json::from_str::<Value>(&text).unwrap()["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(text.contains(needle), "test[{i}]: {text}");
    }
    let body = json!({"ServiceConfigs": {"M": {"s": {"image": "busybox"}}},
                      "VolumeConfigs": {"v": {"Driver": "hyper", "DriverOpts": {"size": "1"}, "External": false}}});
    let (text, code) = hyper_post(d, "/compose/up?project=bad", &body.to_string());
    assert_eq!(code, 400, "{text}");
    assert!(
        text.contains("volume v: volume size 1 GB is out of range"),
        "{text}"
    );
    assert!(project_containers(d, "bad").is_empty());
    let nets = d.hyper(&["network", "ls"]).run().ok();
    assert!(!nets.stdout.contains("bad_default"), "{nets}");
    // Our CLI refuses such a file itself, naming the key.
    let p = ProjectDir::new("ccr");
    p.write("version: '3'\nservices:\n  s:\n    image: busybox\n    cap_add: [NET_ADMIN]\n");
    let o = compose(d, &p.file(), "bad", &["up", "-d"], &[]);
    assert!(o.code != 0 && o.stderr.contains("\"cap_add\""), "{o}");
    let o = compose(d, &p.file(), "bad", &["config"], &[]);
    assert!(o.code != 0 && o.stderr.contains("\"cap_add\""), "{o}");
}

/// A hyperd of its own for the replay (its `down --rmi all` removes the tenant's busybox),
/// with the capture's floating IP pool.
fn fixture_daemon() -> &'static Daemon {
    static D: OnceLock<Arc<Daemon>> = OnceLock::new();
    D.get_or_init(|| {
        Daemon::start(
            "cf",
            DaemonOpts {
                extra_args: vec!["--fip-pool".into(), "198.51.100.0/28".into()],
                ..DaemonOpts::default()
            },
        )
    })
}

/// Sends one captured request (tests/fixtures/hypercli/NAME.json) as it was sent, on the unix
/// socket; the answer's body and status.
fn replay(d: &Daemon, name: &str) -> (String, u16) {
    let f = workspace_root().join(format!("tests/fixtures/hypercli/{name}.json"));
    let v: Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
    let body = match &v["body"] {
        Value::String(s) => s.clone(),
        b => b.to_string(),
    };
    let mut extra: Vec<String> = Vec::new();
    for h in ["Content-Type", "User-Agent", "Transfer-Encoding"] {
        if let Some(val) = v["headers"][h].as_str() {
            extra.push("-H".into());
            extra.push(format!("{h}: {val}"));
        }
    }
    if v["method"] != "GET" {
        extra.push("--data-binary".into());
        extra.push(body);
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let o = d.api(
        v["method"].as_str().unwrap(),
        v["path"].as_str().unwrap(),
        &extra,
    );
    let (text, code) = o.stdout.trim_end().rsplit_once('\n').unwrap_or(("", ""));
    (text.to_string(), code.parse().unwrap_or(0))
}

/// A captured `/compose/*` request replayed: 200 and a stream without an error.
fn replay_ok(d: &Daemon, name: &str) -> Vec<Value> {
    let (text, code) = replay(d, name);
    assert_eq!(code, 200, "{name}: {text}");
    stream_ok(&text)
}

fn states(d: &Daemon, project: &str) -> Vec<(String, String)> {
    project_containers(d, project)
        .into_iter()
        .map(|(n, _, s)| (n, s))
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// The requests Hyper's own client sent (captured, tests/fixtures/hypercli), replayed in the
/// order a user would run them, each checked against what the user would then see.
fn captured_fixtures() {
    let d = fixture_daemon();
    // What the capture's tenant held: the security group `web`, FIPs .1 and .2.
    let dir = ProjectDir::new("cfx");
    let rules = dir.dir.join("web.yaml");
    std::fs::write(&rules, "name: web\nrules:\n  - direction: ingress\n    protocol: tcp\n    port_range_min: 80\n    port_range_max: 80\n    remote_ip_prefix: 0.0.0.0/0\n  - direction: egress\n").unwrap();
    d.hyper(&["sg", "create", "-f", rules.to_str().unwrap(), "web"])
        .run()
        .ok();
    let fips = d.hyper(&["fip", "allocate", "2"]).run().ok().out();
    assert!(
        fips.contains("198.51.100.1") && fips.contains("198.51.100.2"),
        "{fips}"
    );

    // A version 1 file (capv1).
    replay_ok(d, "compose-up-29");
    assert_eq!(states(d, "capv1"), pairs(&[("capv1-app-1", "running")]));
    assert_eq!(
        d.inspect("capv1-app-1")["Config"]["Labels"]["sh_hyper_instancetype"],
        "s1"
    );

    // capdemo: container_name, a named volume, links, ports, env, labels, size, FIP, SG.
    replay_ok(d, "compose-up-2");
    assert_eq!(
        states(d, "capdemo"),
        pairs(&[("capdemo-db", "running"), ("capdemo-web-1", "running")])
    );
    let web = d.inspect("capdemo-web-1");
    let env = web["Config"]["Env"].to_string();
    assert!(
        env.contains("WEB_THEME=dark") && env.contains("GREETING=hello"),
        "{env}"
    );
    assert_eq!(web["Config"]["Labels"]["sh_hyper_sg_web"], "yes");
    assert_eq!(web["Config"]["WorkingDir"], "/srv");
    assert_eq!(
        d.hyper(&["port", "capdemo-web-1", "80"]).run().ok().out(),
        "0.0.0.0:8080"
    );
    let ls = d.hyper(&["fip", "ls"]).run().ok();
    assert!(
        ls.stdout
            .lines()
            .any(|l| l.contains("198.51.100.1") && l.contains("capdemo-web-1")),
        "{ls}"
    );
    let o = d
        .hyper(&[
            "exec",
            "capdemo-web-1",
            "sh",
            "-c",
            "nc database 5432 </dev/null",
        ])
        .timeout(60.0)
        .run()
        .ok();
    assert_eq!(o.out(), "db");
    // compose ps's label queries, per service.
    for (fixture, name) in [
        ("compose-ps-1", "/capdemo-db"),
        ("compose-ps-2", "/capdemo-web-1"),
    ] {
        let (text, code) = replay(d, fixture);
        assert_eq!(code, 200, "{text}");
        let list: Value = serde_json::from_str(&text).unwrap();
        let names: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["Names"][0].as_str().unwrap())
            .collect();
        assert_eq!(names, [name], "{fixture}");
    }
    let ids = project_containers(d, "capdemo");

    // The project is hyperd's, in its store: it outlives a kill -9 of hyperd.
    d.restart();

    // Nothing changed: --no-recreate, one service, create: the same containers.
    for f in ["compose-up-6", "compose-up-8", "compose-create-1"] {
        replay_ok(d, f);
        assert_eq!(project_containers(d, "capdemo"), ids, "{f}");
    }
    // create --force-recreate web: a new web, created, not started; start db web starts it.
    replay_ok(d, "compose-create-2");
    let now = project_containers(d, "capdemo");
    assert_eq!(id_in(&now, "capdemo-db"), id_in(&ids, "capdemo-db"));
    assert_ne!(id_in(&now, "capdemo-web-1"), id_in(&ids, "capdemo-web-1"));
    assert_eq!(
        states(d, "capdemo"),
        pairs(&[("capdemo-db", "running"), ("capdemo-web-1", "created")])
    );
    replay_ok(d, "compose-start-2");
    assert_eq!(
        states(d, "capdemo"),
        pairs(&[("capdemo-db", "running"), ("capdemo-web-1", "running")])
    );
    // stop -t 3 web, stop, start, kill db web, rm web.
    replay_ok(d, "compose-stop-2");
    assert_eq!(
        states(d, "capdemo"),
        pairs(&[("capdemo-db", "running"), ("capdemo-web-1", "exited")])
    );
    replay_ok(d, "compose-stop-1");
    assert_eq!(
        states(d, "capdemo"),
        pairs(&[("capdemo-db", "exited"), ("capdemo-web-1", "exited")])
    );
    replay_ok(d, "compose-start-1");
    assert_eq!(
        states(d, "capdemo"),
        pairs(&[("capdemo-db", "running"), ("capdemo-web-1", "running")])
    );
    replay_ok(d, "compose-kill-2");
    let s = states(d, "capdemo");
    assert!(s.iter().all(|(_, st)| st == "exited"), "{s:?}");
    replay_ok(d, "compose-rm-2");
    assert_eq!(states(d, "capdemo"), pairs(&[("capdemo-db", "exited")]));
    // up --force-recreate: db anew, web again, the FIP back on web.
    let before = project_containers(d, "capdemo");
    replay_ok(d, "compose-up-4");
    let now = project_containers(d, "capdemo");
    assert_ne!(id_in(&now, "capdemo-db"), id_in(&before, "capdemo-db"));
    assert_eq!(
        states(d, "capdemo"),
        pairs(&[("capdemo-db", "running"), ("capdemo-web-1", "running")])
    );
    let ls = d.hyper(&["fip", "ls"]).run().ok();
    assert!(
        ls.stdout
            .lines()
            .any(|l| l.contains("198.51.100.1") && l.contains("capdemo-web-1")),
        "{ls}"
    );
    // kill, rm -v, down --remove-orphans --rmi local, down -v --rmi all.
    replay_ok(d, "compose-kill-1");
    replay_ok(d, "compose-rm-1");
    assert!(states(d, "capdemo").is_empty());
    let vols = d.hyper(&["volume", "ls", "-q"]).run().ok();
    assert!(vols.stdout.contains("capdemo_dbdata"), "{vols}");
    replay_ok(d, "compose-down-2");
    let nets = d
        .hyper(&["network", "ls", "--format", "{{.Name}}"])
        .run()
        .ok();
    assert!(!nets.stdout.contains("capdemo_default"), "{nets}");
    replay_ok(d, "compose-down-1");
    let vols = d.hyper(&["volume", "ls", "-q"]).run().ok();
    assert!(!vols.stdout.contains("capdemo"), "{vols}");
    // capv1 still runs: another project is another project.
    assert_eq!(states(d, "capv1"), pairs(&[("capv1-app-1", "running")]));

    // capauto: fip: auto as the client resolved it (the two free FIPs).
    replay_ok(d, "compose-up-27");
    let ls = d.hyper(&["fip", "ls"]).run().ok();
    for (ip, c) in [
        ("198.51.100.1", "capauto-a-1"),
        ("198.51.100.2", "capauto-b-1"),
    ] {
        assert!(
            ls.stdout.lines().any(|l| l.contains(ip) && l.contains(c)),
            "{ls}"
        );
    }
    for p in ["capauto", "capv1"] {
        let (text, code) = hyper_post(d, &format!("/compose/down?project={p}&rmvol=true"), "");
        assert_eq!(code, 200, "{text}");
        stream_ok(&text);
        assert!(states(d, p).is_empty());
    }
}

/// `depends_on` with `condition: service_healthy` waits for the health check; `config` shows
/// the interpolated project; `run` runs a one-off command of a service; `logs` prefixes each
/// line with its container; `restart` stops and starts.
fn health_run_logs_config() {
    let d = daemon();
    let p = ProjectDir::new("cch");
    p.write(
        r#"version: "2.4"
services:
  db:
    image: busybox
    command: sleep 1000
    healthcheck:
      test: ["CMD-SHELL", "test -e /tmp/ready || touch /tmp/ready; true"]
      interval: 1s
      retries: 3
  app:
    image: busybox
    command: sh -c 'echo hello-from-$${HOSTNAME%%.*}-${WHO:-nobody}; sleep 1000'
    depends_on:
      db:
        condition: service_healthy
"#,
    );
    let f = p.file();
    let o = compose(d, &f, "hc", &["config"], &[("WHO", "tester")]).ok();
    assert!(
        o.stdout.contains("hello-from-$${HOSTNAME%%.*}-tester")
            || o.stdout.contains("hello-from-${HOSTNAME%%.*}-tester"),
        "{o}"
    );
    let o = compose(d, &f, "hc", &["config", "--services"], &[]).ok();
    assert_eq!(o.stdout, "app\ndb\n");

    let o = compose(d, &f, "hc", &["up", "-d"], &[("WHO", "tester")]).ok();
    let healthy = o.stderr.find("db: Healthy").expect("db waited for");
    let app_started = o
        .stderr
        .find("Starting hc-app-1 ... done")
        .expect("app started");
    assert!(healthy < app_started, "{o}");
    assert_eq!(d.inspect("hc-db-1")["State"]["Health"]["Status"], "healthy");

    let o = wait_for("app's output in compose logs", secs(60.0), || {
        let o = compose(d, &f, "hc", &["logs", "app"], &[]).ok();
        if o.stdout.contains("| hello-from-") {
            Ok(o)
        } else {
            Err(o.to_string())
        }
    });
    assert!(
        o.stdout
            .lines()
            .any(|l| l.starts_with("hc-app-1") && l.ends_with("-tester")),
        "{o}"
    );

    let o = compose(
        d,
        &f,
        "hc",
        &["run", "--rm", "--no-deps", "app", "echo", "one-off"],
        &[],
    )
    .ok();
    assert_eq!(o.stdout.trim(), "one-off", "{o}");
    assert_eq!(project_containers(d, "hc").len(), 2);

    let before = id_in(&project_containers(d, "hc"), "hc-app-1");
    compose(d, &f, "hc", &["restart", "-t", "1", "app"], &[]).ok();
    let now = project_containers(d, "hc");
    assert_eq!(id_in(&now, "hc-app-1"), before);
    assert!(now.iter().all(|(_, _, s)| s == "running"), "{now:?}");
    compose(d, &f, "hc", &["down"], &[]).ok();
    assert!(project_containers(d, "hc").is_empty());
}
