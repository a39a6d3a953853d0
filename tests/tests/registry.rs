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
//! `save_load_round_trip`: `hyper save`/`docker save` write Docker's tarball, the same bytes
//! for the same image; it loads into another tenant as the same image ID; a tenant cannot save
//! another's image (by name or ID). `push_then_pull_from_another_tenant`: `hyper push` and
//! `docker push` to the basic-auth registry (refused without credentials), the registry's
//! blobs checked against the image, a second push uploads nothing, another tenant pulls the
//! same image ID back; a push to an address the policy refuses connects nowhere.
//! `pull_of_a_present_image`: "Image is up to date" and no blob GET in the registry's access
//! log; registry down: pull fails, run uses the present image.
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
        ("save_load_round_trip", save_load_round_trip),
        (
            "push_then_pull_from_another_tenant",
            push_then_pull_from_another_tenant,
        ),
        ("pull_of_a_present_image", pull_of_a_present_image),
        (
            "compose_pulls_with_the_users_auths",
            compose_pulls_with_the_users_auths,
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

impl Registry {
    /// Stops the registry processes (the registry becomes unreachable).
    fn stop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
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
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
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
    // Quiet hides progress only: what was loaded is said, as `docker load -q` says it.
    assert!(o.out().starts_with("Loaded image"), "quiet load: {o}");
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

/// The members of a tar file, by name.
fn tar_members(path: &Path) -> Vec<String> {
    let o = Cmd::new("tar", &["-tf", path.to_str().unwrap()]).run().ok();
    o.stdout.lines().map(str::to_string).collect()
}

/// One member of a tar file, as text.
fn tar_member(path: &Path, name: &str) -> String {
    Cmd::new("tar", &["-xOf", path.to_str().unwrap(), name])
        .run()
        .ok()
        .stdout
}

/// `hyper save` and `docker save` write Docker's tarball, it loads back (into another tenant
/// too) as the same image, and a tenant saves only its own images.
fn save_load_round_trip() {
    let d = daemon();
    let work = short_tmp("save");
    std::fs::create_dir_all(&work).unwrap();
    let a = d.client_dir.clone();
    let hyper = |dir: &Path, args: &[&str]| d.hyper_tcp(dir, args).timeout(120.0).run();
    let id = hyper(&a, &["image", "inspect", "-f", "{{.Id}}", "busybox"])
        .ok()
        .out();

    // hyper save: Docker's layout (manifest.json, repositories, OCI index and blobs).
    let ours = work.join("ours.tar");
    hyper(&a, &["save", "-o", ours.to_str().unwrap(), "busybox"]).ok();
    let members = tar_members(&ours);
    for m in ["manifest.json", "index.json", "oci-layout", "repositories"] {
        assert!(members.iter().any(|x| x == m), "no {m}: {members:?}");
    }
    let hex = id.strip_prefix("sha256:").unwrap();
    assert!(
        members.iter().any(|x| x == &format!("blobs/sha256/{hex}")),
        "no config blob named by the image ID: {members:?}"
    );
    let manifest: Value = serde_json::from_str(&tar_member(&ours, "manifest.json")).unwrap();
    assert_eq!(
        manifest[0]["RepoTags"],
        json!(["busybox:latest"]),
        "{manifest}"
    );
    assert_eq!(manifest[0]["Config"], format!("blobs/sha256/{hex}"));

    // The stock docker CLI (GET /images/{name}/get) gets the same bytes; two names of one
    // image (GET /images/get?names=..&names=..) make one entry.
    let theirs = work.join("theirs.tar");
    d.docker(&["save", "-o", theirs.to_str().unwrap(), "busybox"])
        .run()
        .ok();
    assert_eq!(sha256(&ours), sha256(&theirs), "docker save differs");
    let both = work.join("both.tar");
    hyper(
        &a,
        &["save", "-o", both.to_str().unwrap(), "busybox", &id[7..19]],
    )
    .ok();
    let manifest: Value = serde_json::from_str(&tar_member(&both, "manifest.json")).unwrap();
    assert_eq!(manifest.as_array().unwrap().len(), 1, "{manifest}");
    let o = d.api(
        "GET",
        "/v1.44/images/get?names=busybox&names=nosuchimage",
        &["-o", "/dev/null"],
    );
    assert!(o.stdout.ends_with("404"), "{o}");

    // Another tenant has none of it, by name or ID, and no file is left by the failure.
    let b = second_tenant(d, "t5");
    let refused = work.join("refused.tar");
    for name in ["busybox", id.as_str()] {
        let o = hyper(&b, &["save", "-o", refused.to_str().unwrap(), name]);
        assert_ne!(o.code, 0, "t5 saved A's image {name}: {o}");
        assert!(o.stderr.contains("No such image"), "{o}");
        assert!(
            !refused.exists(),
            "a failed save left {}",
            refused.display()
        );
    }

    // Loaded by that tenant: the same image ID and tag; its own save is byte for byte ours.
    let o = hyper(&b, &["load", "-i", ours.to_str().unwrap()]).ok();
    assert!(o.stdout.contains("Loaded image: busybox:latest"), "{o}");
    let got = hyper(&b, &["image", "inspect", "-f", "{{.Id}}", "busybox"])
        .ok()
        .out();
    assert_eq!(got, id);
    let again = work.join("again.tar");
    hyper(&b, &["save", "-o", again.to_str().unwrap(), "busybox"]).ok();
    assert_eq!(sha256(&again), sha256(&ours));
    // docker load of the docker save output, through the same daemon.
    d.docker(&["load", "-i", theirs.to_str().unwrap()])
        .run()
        .ok();
    let got = d
        .docker(&["image", "inspect", "-f", "{{.Id}}", "busybox"])
        .run()
        .ok()
        .out();
    assert_eq!(got, id);
    let _ = std::fs::remove_dir_all(&work);
}

/// The digest the registry stores `reference` (`registry/repo:tag`) under, fetched with curl
/// as `user:password`, and the manifest itself.
fn registry_manifest(registry: &str, repo: &str, tag: &str) -> (String, Value) {
    let auth = format!("{USER}:{PASSWORD}");
    let o = curl(&[
        "-u",
        &auth,
        "-H",
        "Accept: application/vnd.docker.distribution.manifest.v2+json",
        &format!("http://{registry}/v2/{repo}/manifests/{tag}"),
    ])
    .ok();
    let digest = format!("sha256:{}", hex_sha256(o.stdout.as_bytes()));
    (digest, serde_json::from_str(&o.stdout).unwrap())
}

fn hex_sha256(data: &[u8]) -> String {
    let o = Cmd::new("sha256sum", &["-"]).stdin(data).run().ok();
    o.stdout.split_whitespace().next().unwrap().to_string()
}

/// `hyper push` and `docker push` upload a tenant's image to a registry behind basic auth; the
/// registry holds exactly the image (config blob = image ID, gunzipped layers = diff IDs);
/// another tenant pulls it back as the same image; a second push finds every layer there;
/// an unknown image, missing credentials and an address the policy refuses fail clearly.
fn push_then_pull_from_another_tenant() {
    let reg = start_registry();
    let d = daemon();
    let a = d.client_dir.clone();
    let hyper = |dir: &Path, args: &[&str]| d.hyper_tcp(dir, args).timeout(180.0).run();
    let id = hyper(&a, &["image", "inspect", "-f", "{{.Id}}", "busybox"])
        .ok()
        .out();
    let target = format!("{}/pushed/bb:v1", reg.private);

    // Unknown image: 404 before anything is sent.
    let o = hyper(&a, &["push", &format!("{}/nothing/here:v1", reg.private)]);
    assert_ne!(o.code, 0, "{o}");
    assert!(
        o.stderr
            .contains("An image does not exist locally with the tag"),
        "{o}"
    );
    hyper(&a, &["tag", "busybox", &target]).ok();
    // No credentials: the registry refuses, and the stream says so.
    let o = hyper(&a, &["push", &target]);
    assert_ne!(o.code, 0, "pushed without credentials: {o}");
    assert!(
        o.stderr.contains("push access denied") && o.stderr.to_lowercase().contains("unauthorized"),
        "{o}"
    );

    hyper(&a, &["login", "-u", USER, "-p", PASSWORD, &reg.private]).ok();
    let o = hyper(&a, &["push", &target]).ok();
    assert!(
        o.stdout.contains(&format!(
            "The push refers to repository [{}/pushed/bb]",
            reg.private
        )) && o.stdout.contains(": Pushed"),
        "{o}"
    );
    let (digest, manifest) = registry_manifest(&reg.private, "pushed/bb", "v1");
    assert!(
        o.stdout.contains(&format!("v1: digest: {digest} size: ")),
        "{o}"
    );
    // What the registry holds is the image: its config blob is the image ID, and each layer
    // gunzips to the diff ID hyper stores.
    assert_eq!(manifest["config"]["digest"], json!(id), "{manifest}");
    let layers: Vec<String> = serde_json::from_str(
        &hyper(
            &a,
            &[
                "image",
                "inspect",
                "-f",
                "{{json .RootFS.Layers}}",
                "busybox",
            ],
        )
        .ok()
        .out(),
    )
    .unwrap();
    let blobs = manifest["layers"].as_array().unwrap();
    assert_eq!(blobs.len(), layers.len(), "{manifest}");
    let work = reg.dir.join("check");
    std::fs::create_dir_all(&work).unwrap();
    for (i, (blob, diff_id)) in blobs.iter().zip(&layers).enumerate() {
        let gz = work.join(format!("l{i}.gz"));
        let url = format!(
            "http://{}/v2/pushed/bb/blobs/{}",
            reg.private,
            blob["digest"].as_str().unwrap()
        );
        let auth = format!("{USER}:{PASSWORD}");
        curl(&["-L", "-u", &auth, "-o", gz.to_str().unwrap(), &url]).ok();
        assert_eq!(sha256(&gz), blob["digest"].as_str().unwrap());
        Cmd::new("gunzip", &["-f", gz.to_str().unwrap()]).run().ok();
        assert_eq!(&sha256(&work.join(format!("l{i}"))), diff_id, "layer {i}");
    }

    // Again: every layer is found in the registry, nothing is uploaded.
    let o = hyper(&a, &["push", &target]).ok();
    assert!(o.stdout.contains("Layer already exists"), "{o}");
    assert!(!o.stdout.contains(": Pushed"), "{o}");

    // Another tenant pulls it back (after its own login) as the same image.
    let b = second_tenant(d, "t6");
    let o = hyper(&b, &["pull", &target]);
    assert_ne!(o.code, 0, "t6 pulled without credentials: {o}");
    hyper(&b, &["login", "-u", USER, "-p", PASSWORD, &reg.private]).ok();
    let o = hyper(&b, &["pull", &target]).ok();
    assert!(o.stdout.contains(&format!("Digest: {digest}")), "{o}");
    let got = hyper(&b, &["image", "inspect", "-f", "{{.Id}}", &target])
        .ok()
        .out();
    assert_eq!(got, id);
    // t6 cannot push A's tags: they are not its own.
    let o = hyper(&b, &["push", &format!("{}/pushed/bb:other", reg.private)]);
    assert!(
        o.code != 0 && o.stderr.contains("An image does not exist locally"),
        "{o}"
    );

    // The stock docker CLI: docker login, docker tag, docker push.
    let o = d
        .docker(&["login", "-u", USER, "--password-stdin", &reg.private])
        .stdin(format!("{PASSWORD}\n").as_bytes())
        .run()
        .ok();
    assert!(o.stdout.contains("Login Succeeded"), "{o}");
    let docker_target = format!("{}/docker/bb:v2", reg.private);
    d.docker(&["tag", "busybox", &docker_target]).run().ok();
    let o = d
        .docker(&["push", &docker_target])
        .timeout(180.0)
        .run()
        .ok();
    let (digest, _) = registry_manifest(&reg.private, "docker/bb", "v2");
    assert!(o.stdout.contains(&format!("v2: digest: {digest}")), "{o}");
    d.docker(&["rmi", &docker_target]).run().ok();

    // A registry where the operator's policy does not let tenants go: refused before any
    // connection, with the flag that would allow it (as for a pull).
    let (port, hits) = secret_server("127.0.0.2");
    let refused_target = format!("127.0.0.2:{port}/x:v1");
    hyper(&a, &["tag", "busybox", &refused_target]).ok();
    let o = hyper(&a, &["push", &refused_target]);
    assert_ne!(o.code, 0, "{o}");
    assert!(
        o.stderr.contains("refused: address 127.0.0.2 (loopback) is not allowed; the operator can allow it with --allow-fetch 127.0.0.2/32"),
        "{o}"
    );
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    for t in [&refused_target, &target] {
        hyper(&a, &["rmi", t]).ok();
    }
    hyper(&a, &["logout", &reg.private]).ok();
}

/// Lines of a registry's log that fetched a blob (GET .../blobs/...).
fn blob_gets(reg: &Registry, which: &str) -> usize {
    std::fs::read_to_string(reg.dir.join(format!("{which}.log")))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("GET /v2/") && l.contains("/blobs/"))
        .count()
}

/// A pull of an image the tenant has: with the registry up, "Image is up to date" and no blob
/// fetched (the registry's access log says so); with it down, the pull fails as Docker's does
/// (it always asks the registry) and the image stays; `run` never pulls a present image.
fn pull_of_a_present_image() {
    let mut reg = start_registry();
    push_image(&reg);
    let d = daemon();
    let t = second_tenant(d, "t7");
    let hyper = |args: &[&str]| d.hyper_tcp(&t, args).timeout(120.0).run();
    let image = format!("{}/{REPO}:v1", reg.open);

    let o = hyper(&["pull", &image]).ok();
    assert!(o.stdout.contains("Downloaded newer image"), "{o}");
    let before = blob_gets(&reg, "open");
    assert!(
        before >= 3,
        "the access log shows no blob fetches: {before}"
    );
    let o = hyper(&["pull", &image]).ok();
    assert!(
        o.stdout
            .contains(&format!("Status: Image is up to date for {image}")),
        "{o}"
    );
    assert!(!o.stdout.contains("Pull complete"), "{o}");
    assert_eq!(
        blob_gets(&reg, "open"),
        before,
        "an up-to-date pull fetched blobs"
    );
    // The stock docker CLI (another tenant: the operator's) says the same once it has it.
    let o = d.docker(&["pull", &image]).timeout(120.0).run().ok();
    assert!(o.stdout.contains("Downloaded newer image"), "{o}");
    let o = d.docker(&["pull", &image]).timeout(120.0).run().ok();
    assert!(o.stdout.contains("Image is up to date"), "{o}");
    assert_eq!(
        blob_gets(&reg, "open"),
        before,
        "a pull of a stored image fetched blobs"
    );

    // The registry down: pull fails (hyper and docker CLIs), the image is still there, and
    // run uses it without asking the registry.
    reg.stop();
    let o = hyper(&["pull", &image]);
    assert_ne!(o.code, 0, "{o}");
    assert!(o.stderr.contains("connection refused"), "{o}");
    let o = d.docker(&["pull", &image]).timeout(120.0).run();
    assert_ne!(o.code, 0, "{o}");
    assert!(o.stderr.contains("connection refused"), "{o}");
    hyper(&["image", "inspect", &image]).ok();
    let o = hyper(&["run", "--rm", &image, "cat", "/etc/layer2"]).ok();
    assert_eq!(o.out(), "two", "{o}");
    assert!(!o.stderr.contains("Unable to find image"), "{o}");
    hyper(&["rmi", &image]).ok();
    d.docker(&["rmi", &image]).run().ok();
}

/// `hyper compose up` of a project whose image is private: hyperd pulls it with the `auths`
/// the CLI posts (the user's logins, as Hyper's client sends them), and without a login the
/// registry's refusal ends the stream.
fn compose_pulls_with_the_users_auths() {
    let reg = start_registry();
    push_image(&reg);
    let d = daemon();
    let t = second_tenant(d, "compo");
    let image = format!("{}/{REPO}:v1", reg.private);
    let dir = short_tmp("rcmp");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("docker-compose.yml");
    std::fs::write(
        &file,
        format!("version: '2'\nservices:\n  app:\n    image: {image}\n    command: [ls, /data]\n"),
    )
    .unwrap();
    let compose = |args: &[&str]| {
        let mut a = vec!["compose", "-f", file.to_str().unwrap(), "-p", "rc"];
        a.extend_from_slice(args);
        d.hyper_tcp(&t, &a).timeout(180.0).run()
    };
    let o = compose(&["up", "-d"]);
    assert_ne!(o.code, 0, "{o}");
    let err = o.stderr.to_lowercase();
    assert!(
        err.contains("unauthorized") || err.contains("denied"),
        "{o}"
    );
    d.hyper_tcp(&t, &["login", "-u", USER, "--password-stdin", &reg.private])
        .stdin(format!("{PASSWORD}\n").as_bytes())
        .run()
        .ok();
    let o = compose(&["up", "-d"]).ok();
    assert!(o.stderr.contains(&format!("Pulling {image}")), "{o}");
    assert!(o.stderr.contains("Starting rc-app-1 ... done"), "{o}");
    let o = d.hyper_tcp(&t, &["images"]).run().ok();
    assert!(o.stdout.contains(&format!("{}/{REPO}", reg.private)), "{o}");
    compose(&["down"]).ok();
    let _ = std::fs::remove_dir_all(&dir);

    // `hyper pull a b`: each image in turn; one that fails makes the exit status 1, the
    // others are pulled all the same.
    let missing = format!("{}/{REPO}:nosuchtag", reg.private);
    let o = d
        .hyper_tcp(&t, &["pull", &missing, &image])
        .timeout(120.0)
        .run();
    assert_eq!(o.code, 1, "{o}");
    assert!(
        o.stderr.contains(&format!("Error pulling {missing}")),
        "{o}"
    );
    assert!(
        o.stdout.contains(&image) && !o.stdout.contains(&missing),
        "{o}"
    );
}
