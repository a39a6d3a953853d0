//! End to end with a real registry: Debian's `docker-registry` on 127.0.0.1 (one open process
//! the test pushes to with curl, one behind htpasswd basic auth on the same storage), a private
//! two-layer image built here from the host's static busybox, and hyperd driven through the
//! `hyper` CLI over TCP (TLS, signed) by two tenants.
//!
//! Covers: `hyper login` checked by the registry (POST /auth) and `hyper logout`; `hyper pull`
//! of the private image; `hyper images --digests`; `hyper history`; `hyper run` sees both layers
//! (whiteout applied); `hyper rmi` refused while a container uses the image, allowed with `-f`;
//! tenant t2 cannot use tenant A's private image until its own login and pull succeed;
//! `hyper load -i http://127.0.0.1:...` (POST /images/load {"fromSrc"}). The tenants reach
//! the loopback registry because the operator allows it (`--allow-fetch 127.0.0.1/32`).
//!
//! `tenant_input_reaches_only_allowed_addresses`: a tenant over TCP cannot make hyperd connect
//! where the policy refuses (127.0.0.2, ::1, link-local; directly or through a redirect) with a
//! pull, a login or an archive URL, is told so with the flag that would allow it, and never
//! sees what answered on a port (a server there answers with a secret); failures of allowed
//! hosts are worded generically. The operator's unix socket is not limited.
//!
//! Run: `scripts/build && cargo test -p e2e --test registry`. Needs docker-registry, htpasswd,
//! curl, sha256sum, gzip, tar and a static /usr/bin/busybox (busybox-static).

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use e2e::*;
use serde_json::{json, Value};

const USER: &str = "alice";
const PASSWORD: &str = "s3cret";
const REPO: &str = "priv/app";

fn main() {
    let tests: &[(&'static str, TestFn)] = &[
        ("registry_pull_login_tenants", registry_pull_login_tenants),
        (
            "tenant_input_reaches_only_allowed_addresses",
            tenant_input_reaches_only_allowed_addresses,
        ),
    ];
    std::process::exit(run_tests(tests));
}

/// The daemon both tests share. Tenants reach loopback registries and servers only because
/// the operator allows 127.0.0.1 (and nothing else of loopback).
fn daemon() -> &'static Daemon {
    static D: std::sync::OnceLock<std::sync::Arc<Daemon>> = std::sync::OnceLock::new();
    D.get_or_init(|| {
        Daemon::start(
            "r",
            DaemonOpts {
                extra_args: vec!["--allow-fetch".into(), "127.0.0.1/32".into()],
                ..DaemonOpts::default()
            },
        )
    })
}

/// The registry processes; killed when dropped.
struct Registry {
    dir: PathBuf,
    open: String,
    private: String,
    children: Vec<Child>,
}

impl Drop for Registry {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_registry() -> Registry {
    let dir = short_tmp("reg");
    std::fs::create_dir_all(dir.join("storage")).unwrap();
    let out = Command::new("htpasswd")
        .args(["-Bbn", USER, PASSWORD])
        .output()
        .expect("htpasswd (apache2-utils)");
    assert!(out.status.success());
    std::fs::write(dir.join("htpasswd"), out.stdout).unwrap();
    let mut reg = Registry {
        open: format!("127.0.0.1:{}", free_port()),
        private: format!("127.0.0.1:{}", free_port()),
        dir: dir.clone(),
        children: Vec::new(),
    };
    for (name, addr, auth) in [
        ("open", reg.open.clone(), false),
        ("private", reg.private.clone(), true),
    ] {
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.join("storage").display()
        );
        if auth {
            cfg += &format!(
                "auth:\n  htpasswd:\n    realm: hyper-e2e\n    path: {}\n",
                dir.join("htpasswd").display()
            );
        }
        let path = dir.join(format!("{name}.yml"));
        std::fs::write(&path, cfg).unwrap();
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        reg.children.push(
            cmd.spawn()
                .expect("docker-registry: scripts/deps installs it"),
        );
        wait_for(&format!("docker-registry on {addr}"), secs(20.0), || {
            std::net::TcpStream::connect(&addr)
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
    }
    reg
}

fn sha256(path: &Path) -> String {
    let o = Cmd::new("sha256sum", &[path.to_str().unwrap()]).run().ok();
    format!("sha256:{}", o.stdout.split_whitespace().next().unwrap())
}

fn curl(args: &[&str]) -> Out {
    let mut a = vec!["-sS", "-f"];
    a.extend_from_slice(args);
    Cmd::new("curl", &a).run()
}

/// Builds a two-layer image from the host's static busybox and pushes it to the open registry
/// as `REPO:v1`; returns the manifest digest. Layer 1 (gzip): busybox, /etc/layer1, /data/old.
/// Layer 2 (plain tar): /etc/layer2 and a whiteout of /data/old.
fn push_image(reg: &Registry) -> String {
    let work = reg.dir.join("build");
    let (l1, l2) = (work.join("l1"), work.join("l2"));
    for d in ["bin", "etc", "data"] {
        std::fs::create_dir_all(l1.join(d)).unwrap();
    }
    std::fs::create_dir_all(l2.join("etc")).unwrap();
    std::fs::create_dir_all(l2.join("data")).unwrap();
    std::fs::copy("/usr/bin/busybox", l1.join("bin/busybox")).unwrap();
    for app in ["sh", "cat", "ls"] {
        std::os::unix::fs::symlink("busybox", l1.join("bin").join(app)).unwrap();
    }
    std::fs::write(l1.join("etc/layer1"), "one\n").unwrap();
    std::fs::write(l1.join("data/old"), "old\n").unwrap();
    std::fs::write(l2.join("etc/layer2"), "two\n").unwrap();
    std::fs::write(l2.join("data/.wh.old"), "").unwrap();
    let tar = |src: &Path, out: &Path| {
        Cmd::new(
            "tar",
            &[
                "--owner=0",
                "--group=0",
                "-C",
                src.to_str().unwrap(),
                "-cf",
                out.to_str().unwrap(),
                ".",
            ],
        )
        .run()
        .ok();
    };
    let (t1, t2) = (work.join("l1.tar"), work.join("l2.tar"));
    tar(&l1, &t1);
    tar(&l2, &t2);
    Cmd::new("gzip", &["-kn", t1.to_str().unwrap()]).run().ok();
    let g1 = work.join("l1.tar.gz");
    let config = json!({
        "architecture": "amd64", "os": "linux", "created": "2024-05-06T07:08:09Z",
        "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [sha256(&t1), sha256(&t2)]},
        "history": [{"created": "2024-05-06T07:08:09Z", "created_by": "ADD busybox layer-one-marker"},
                    {"created": "2024-05-06T07:08:09Z", "created_by": "RUN layer-two-marker"}],
    });
    let cfg_path = work.join("config.json");
    std::fs::write(&cfg_path, config.to_string()).unwrap();
    // The two-step upload: POST opens a session (Location), PUT with the digest closes it.
    let push_blob = |p: &Path| {
        let d = sha256(p);
        let start = format!("http://{}/v2/{REPO}/blobs/uploads/", reg.open);
        let o = curl(&["-X", "POST", "-D", "-", "-o", "/dev/null", &start]).ok();
        let location = o
            .stdout
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("location")
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no Location: {o}"));
        let location = if location.starts_with('/') {
            format!("http://{}{location}", reg.open)
        } else {
            location
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let data = format!("@{}", p.display());
        curl(&[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            &data,
            &format!("{location}{sep}digest={d}"),
        ])
        .ok();
        (d, std::fs::metadata(p).unwrap().len())
    };
    let (cd, cs) = push_blob(&cfg_path);
    let (d1, s1) = push_blob(&g1);
    let (d2, s2) = push_blob(&t2);
    let manifest = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": cd, "size": cs},
        "layers": [
            {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": d1, "size": s1},
            {"mediaType": "application/vnd.docker.image.rootfs.diff.tar", "digest": d2, "size": s2},
        ],
    });
    let m_path = work.join("manifest.json");
    std::fs::write(&m_path, manifest.to_string()).unwrap();
    let data = format!("@{}", m_path.display());
    curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/vnd.docker.distribution.manifest.v2+json",
        "--data-binary",
        &data,
        &format!("http://{}/v2/{REPO}/manifests/v1", reg.open),
    ])
    .ok();
    sha256(&m_path)
}

/// Serves `file` at every path on 127.0.0.1 (404 for paths ending in `missing`), one request
/// per connection, for as long as the test process lives.
fn serve_file(file: PathBuf) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && conn.read(&mut b).unwrap_or(0) == 1 {
                head.push(b[0]);
            }
            let line = String::from_utf8_lossy(&head)
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            if line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .ends_with("missing")
            {
                let _ = conn.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
            }
            let data = std::fs::read(&file).unwrap();
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/x-tar\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                data.len()
            );
            let _ = conn.write_all(&data);
        }
    });
    port
}

/// A second tenant's client config dir (keys printed by `hyperd tenant create`).
fn second_tenant(d: &Daemon, name: &str) -> PathBuf {
    let o = Cmd::new(
        hyperd_bin(),
        &[
            "--data-root",
            d.data.to_str().unwrap(),
            "tenant",
            "--socket",
            d.sock.to_str().unwrap(),
            "create",
            name,
        ],
    )
    .run()
    .ok();
    let field = |k: &str| {
        o.stdout
            .lines()
            .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| panic!("no {k} in {o}"))
    };
    let dir = d.data.join(format!("{name}cfg"));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = d.data.join("tls").join("ca.pem");
    let cfg = json!({"clouds": {d.tcp_host(): {"accesskey": field("access key:"), "secretkey": field("secret key:"),
        "region": "us-west-1", "tlscacert": ca.to_str().unwrap()}}});
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    dir
}

fn auths(dir: &Path) -> Value {
    let v: Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    v["auths"].clone()
}

fn registry_pull_login_tenants() {
    let reg = start_registry();
    let digest = push_image(&reg);
    let d = daemon();
    let image = format!("{}/{REPO}:v1", reg.private);
    let a = d.client_dir.clone();
    let hyper = |dir: &Path, args: &[&str]| d.hyper_tcp(dir, args).timeout(120.0).run();

    // Private: no pull without credentials, and a wrong password is refused by the registry
    // and not stored.
    let o = hyper(&a, &["pull", &image]);
    assert_ne!(o.code, 0, "{o}");
    assert!(
        o.stderr.to_lowercase().contains("unauthorized") || o.stderr.contains("denied"),
        "{o}"
    );
    let o = hyper(&a, &["login", "-u", USER, "-p", "wrong", &reg.private]);
    assert_ne!(o.code, 0, "wrong password accepted: {o}");
    assert!(
        auths(&a)[&reg.private].is_null(),
        "refused credentials stored: {o}"
    );
    let o = d
        .hyper_tcp(&a, &["login", "-u", USER, "--password-stdin", &reg.private])
        .stdin(format!("{PASSWORD}\n").as_bytes())
        .run()
        .ok();
    assert!(o.stdout.contains("Login Succeeded"), "{o}");
    assert!(auths(&a)[&reg.private]["auth"].is_string(), "{o}");

    // Pull, images --digests, history.
    let o = hyper(&a, &["pull", &image]).ok();
    assert!(o.stdout.contains(&format!("Digest: {digest}")), "{o}");
    assert!(o.stdout.contains("Downloaded newer image"), "{o}");
    let o = hyper(&a, &["images", "--digests"]).ok();
    let row = o
        .stdout
        .lines()
        .find(|l| l.contains(&format!("{}/{REPO}", reg.private)))
        .unwrap_or_else(|| panic!("no row for the pulled image: {o}"));
    assert!(
        row.contains(&digest) && row.split_whitespace().nth(1) == Some("v1"),
        "{o}"
    );
    assert!(o.stdout.lines().next().unwrap().contains("DIGEST"), "{o}");
    let o = hyper(&a, &["history", &image]).ok();
    assert!(
        o.stdout.contains("RUN layer-two-marker") && o.stdout.contains("layer-one-marker"),
        "{o}"
    );
    let o = hyper(&a, &["history", "-q", &image]).ok();
    assert_eq!(o.stdout.lines().count(), 2, "{o}");

    // Both layers, the whiteout applied.
    let o = hyper(
        &a,
        &[
            "run",
            "--rm",
            &image,
            "sh",
            "-c",
            "cat /etc/layer1 /etc/layer2; ls -A /data; echo end",
        ],
    )
    .ok();
    assert_eq!(o.stdout, "one\ntwo\nend\n", "{o}");

    // rmi refuses an image a container uses, unless forced.
    let o = hyper(&a, &["create", "--name", "user1", &image, "true"]).ok();
    let cid = o.out();
    let o = hyper(&a, &["rmi", &image]);
    assert_ne!(o.code, 0, "{o}");
    assert!(
        o.stderr.contains("being used by a container") || o.stderr.contains("must force"),
        "{o}"
    );
    hyper(&a, &["image", "inspect", &image]).ok();

    // Tenant t2: nothing of A's, and the private image only after its own login and pull.
    let b = second_tenant(d, "t2");
    let o = hyper(&b, &["images", "-q"]).ok();
    assert_eq!(o.out(), "", "t2 sees A's images: {o}");
    let o = hyper(&b, &["run", "--rm", &image, "true"]);
    assert_ne!(
        o.code, 0,
        "t2 ran A's private image without credentials: {o}"
    );
    assert!(
        o.stderr.to_lowercase().contains("unauthorized") || o.stderr.contains("denied"),
        "{o}"
    );
    let id = hyper(&a, &["image", "inspect", "-f", "{{.Id}}", &image])
        .ok()
        .out();
    let o = hyper(&b, &["image", "inspect", &id]);
    assert_ne!(o.code, 0, "t2 sees A's image by ID: {o}");
    let o = hyper(&b, &["create", &id, "true"]);
    assert_ne!(
        o.code, 0,
        "t2 created a container from A's image by ID: {o}"
    );
    let o = hyper(&b, &["login", "-u", "bob", "-p", PASSWORD, &reg.private]);
    assert_ne!(o.code, 0, "{o}");
    let o = hyper(&b, &["pull", &image]);
    assert_ne!(o.code, 0, "t2 pulled without credentials: {o}");
    hyper(&b, &["login", "-u", USER, "-p", PASSWORD, &reg.private]).ok();
    let o = hyper(&b, &["pull", "-q", &image]).ok();
    assert_eq!(o.out(), image, "{o}");
    let o = hyper(&b, &["run", "--rm", &image, "cat", "/etc/layer2"]).ok();
    assert_eq!(o.out(), "two", "{o}");
    let o = hyper(&b, &["logout", &reg.private]).ok();
    assert!(o.stdout.contains("Removing login credentials"), "{o}");
    assert!(auths(&b)[&reg.private].is_null(), "{o}");

    // rmi -f while A's container still uses it; the container goes afterwards.
    let o = hyper(&a, &["rmi", "-f", &image]).ok();
    assert!(
        o.stdout.contains("Untagged") || o.stdout.contains("Deleted"),
        "{o}"
    );
    hyper(&a, &["rm", "-f", &cid]).ok();
    // t2's copy is untouched.
    hyper(&b, &["image", "inspect", &image]).ok();

    // load -i URL: the daemon fetches the archive (t2 had no busybox until now).
    let port = serve_file(busybox_tar().to_path_buf());
    let o = hyper(
        &b,
        &[
            "load",
            "-i",
            &format!("http://127.0.0.1:{port}/busybox.tar"),
        ],
    )
    .ok();
    assert!(o.stdout.contains("Loaded image: busybox:latest"), "{o}");
    hyper(&b, &["image", "inspect", "busybox"]).ok();
    let o = hyper(
        &b,
        &["load", "-i", &format!("http://127.0.0.1:{port}/missing")],
    );
    assert_ne!(o.code, 0, "{o}");
    assert!(o.stderr.contains("404"), "{o}");
    let o = hyper(
        &b,
        &[
            "load",
            "-q",
            "-i",
            &format!("http://127.0.0.1:{port}/again.tar"),
        ],
    )
    .ok();
    assert_eq!(o.out(), "", "quiet load printed: {o}");
    let o = hyper(&b, &["load", "-i", "ftp://127.0.0.1/x.tar"]);
    assert_ne!(o.code, 0, "{o}");

    hyper(&a, &["logout", &reg.private]).ok();
    assert!(auths(&a)[&reg.private].is_null());

    // The stock docker CLI's login goes through the same POST /auth.
    let o = d
        .docker(&["login", "-u", USER, "--password-stdin", &reg.private])
        .stdin(format!("{PASSWORD}\n").as_bytes())
        .run()
        .ok();
    assert!(o.stdout.contains("Login Succeeded"), "{o}");
    let o = d
        .docker(&["login", "-u", USER, "--password-stdin", &reg.private])
        .stdin(b"wrong\n")
        .run();
    assert_ne!(o.code, 0, "{o}");
}

/// What the servers of the next test answer: it must never reach a tenant.
const SECRET: &str = "SECRET-BANNER-5d1e";

/// A server on `ip` that answers every connection with an HTTP 500 whose headers and body hold
/// [`SECRET`]; or, for paths starting `/to/`, a redirect to `http://` + the rest. Returns its
/// port and the number of connections it accepted.
fn secret_server(ip: &str) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = std::net::TcpListener::bind((ip, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hits.clone();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && conn.read(&mut b).unwrap_or(0) == 1 {
                head.push(b[0]);
            }
            let path = String::from_utf8_lossy(&head)
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .to_string();
            let _ = match path.strip_prefix("/to/") {
                Some(to) => write!(
                    conn,
                    "HTTP/1.1 302 Found\r\nLocation: http://{to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                ),
                None => {
                    let body =
                        format!(r#"{{"errors":[{{"code":"{SECRET}","message":"{SECRET}"}}]}}"#);
                    write!(
                        conn,
                        "HTTP/1.1 500 Internal Server Error\r\nServer: {SECRET}\r\nWWW-Authenticate: Bearer realm=\"http://{SECRET}/\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                }
            };
        }
    });
    (port, hits)
}

fn tenant_input_reaches_only_allowed_addresses() {
    let d = daemon();
    let (t, _) = d.new_tenant("t3");
    let hyper = |args: &[&str]| d.hyper_tcp(&t, args).timeout(60.0).run();
    let (inside, inside_hits) = secret_server("127.0.0.2");
    let (allowed, _) = secret_server("127.0.0.1");
    let hits = || inside_hits.load(std::sync::atomic::Ordering::SeqCst);

    // Refused, and told how the operator could allow it: a pull, a login, an archive URL, and
    // an allowed server redirecting there. Nothing connects.
    let refusal = "refused: address 127.0.0.2 (loopback) is not allowed; the operator can allow it with --allow-fetch 127.0.0.2/32";
    let cases: Vec<Vec<String>> = vec![
        vec!["pull".into(), format!("127.0.0.2:{inside}/x")],
        vec!["pull".into(), format!("127.0.0.2:{inside}/x:v1")],
        vec![
            "login".into(),
            "-u".into(),
            "u".into(),
            "-p".into(),
            "p".into(),
            format!("127.0.0.2:{inside}"),
        ],
        vec![
            "login".into(),
            "-u".into(),
            "u".into(),
            "-p".into(),
            "p".into(),
            format!("http://127.0.0.2:{inside}/v2/"),
        ],
        vec![
            "load".into(),
            "-i".into(),
            format!("http://127.0.0.2:{inside}/x.tar"),
        ],
        vec![
            "load".into(),
            "-i".into(),
            format!("http://127.0.0.1:{allowed}/to/127.0.0.2:{inside}/x.tar"),
        ],
    ];
    for (i, args) in cases.iter().enumerate() {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = hyper(&args);
        assert_ne!(o.code, 0, "test[{i}]: {o}");
        assert!(o.stderr.contains(refusal), "test[{i}]: {o}");
        assert!(
            !o.stderr.contains(SECRET) && !o.stdout.contains(SECRET),
            "test[{i}]: {o}"
        );
    }
    assert_eq!(
        hits(),
        0,
        "a tenant made hyperd connect to a refused address"
    );
    // Other loopback, link-local and unspecified addresses, IPv6 too.
    for (i, (target, range)) in [
        (format!("127.2:{inside}/x"), "(loopback)"),
        ("169.254.169.254/x".to_string(), "(link-local)"),
        (format!("0.0.0.0:{inside}/x"), "unspecified"),
    ]
    .iter()
    .enumerate()
    {
        let o = hyper(&["pull", target]);
        assert!(
            o.code != 0 && o.stderr.contains("refused: address") && o.stderr.contains(range),
            "test[{i}]: {o}"
        );
    }
    let o = hyper(&["load", "-i", &format!("http://[::1]:{inside}/x.tar")]);
    assert!(o.stderr.contains("refused: address ::1 (loopback)"), "{o}");

    // An allowed address: the failure is worded without anything the server sent.
    for (i, (args, want)) in [
        (
            vec!["pull".to_string(), format!("127.0.0.1:{allowed}/x")],
            "500",
        ),
        (
            vec![
                "login".into(),
                "-u".into(),
                "u".into(),
                "-p".into(),
                "p".into(),
                format!("127.0.0.1:{allowed}"),
            ],
            "not a registry",
        ),
        (
            vec![
                "load".into(),
                "-i".into(),
                format!("http://127.0.0.1:{allowed}/x.tar"),
            ],
            "answered 500",
        ),
    ]
    .iter()
    .enumerate()
    {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = hyper(&args);
        assert_ne!(o.code, 0, "test[{i}]: {o}");
        assert!(o.stderr.contains(want), "test[{i}]: {o}");
        assert!(!o.stderr.contains("refused: address"), "test[{i}]: {o}");
        assert!(
            !o.stderr.contains(SECRET) && !o.stdout.contains(SECRET),
            "test[{i}]: {o}"
        );
    }

    // The operator's unix socket is not limited: it reaches the server (and still is told
    // nothing of what answered).
    let o = d
        .hyper(&["pull", &format!("127.0.0.2:{inside}/x")])
        .timeout(60.0)
        .run();
    assert_ne!(o.code, 0, "{o}");
    assert!(!o.stderr.contains("refused: address"), "{o}");
    assert!(!o.stderr.contains(SECRET), "{o}");
    assert!(hits() > 0, "the operator's pull did not reach the server");
}
