//! git clones from a real git daemon on 127.0.0.1.

use super::downloads::{pinned, routes, Server};
use super::*;

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(["-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

/// A bare repository `base/repo.git`: `main` has README and src/lib.txt, `other` has OTHER.
fn make_repo(base: &Path) {
    let work = base.join("work");
    fs::create_dir_all(work.join("src")).unwrap();
    git(&work, &["init", "-q"]);
    fs::write(work.join("README"), "hello from git\n").unwrap();
    fs::write(work.join("src/lib.txt"), "x".repeat(3000)).unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "-qm", "one"]);
    git(&work, &["checkout", "-qb", "other"]);
    fs::write(work.join("OTHER"), "other branch\n").unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "-qm", "two"]);
    git(&work, &["checkout", "-q", "main"]);
    git(base, &["clone", "-q", "--bare", "work", "repo.git"]);
}

/// `git daemon` serving `base` on 127.0.0.1; killed when dropped.
struct GitDaemon {
    child: std::process::Child,
    port: u16,
}

impl GitDaemon {
    fn start(base: &Path) -> GitDaemon {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // git-daemon itself, not `git daemon`: the `git` wrapper runs it as a child and would
        // leave it behind when killed.
        let exec_path = Command::new("git").arg("--exec-path").output().unwrap();
        let exec_path = String::from_utf8(exec_path.stdout).unwrap();
        let child = Command::new(Path::new(exec_path.trim()).join("git-daemon"))
            .args(["--export-all", "--reuseaddr", "--listen=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let daemon = GitDaemon { child, port };
        let deadline = Instant::now() + Duration::from_secs_f64(10.0 * timeout_scale());
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "git daemon did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        daemon
    }

    fn url(&self, path: &str) -> String {
        format!("git://127.0.0.1:{}/{path}", self.port)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn clones_a_git_repository_without_its_history() {
    let base = TestDir::new("git-base");
    make_repo(&base.0);
    let daemon = GitDaemon::start(&base.0);
    let policy = loopback_allowed();

    let w = Work::new("git");
    let size = fetch_into(&daemon.url("repo.git"), &w.tree(), 1 << 20, &policy)
        .await
        .unwrap_or_else(|e| panic!("{}", chain(&e)));
    let t = w.tree();
    assert_eq!(
        fs::read_to_string(t.join("README")).unwrap(),
        "hello from git\n"
    );
    assert_eq!(fs::read(t.join("src/lib.txt")).unwrap().len(), 3000);
    assert!(!t.join(".git").exists());
    assert!(!t.join("OTHER").exists());
    assert_eq!(size, tree_size(&t).unwrap());
    let left: Vec<_> = fs::read_dir(&w.dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "git's HOME was not removed: {left:?}");

    let w = Work::new("git-branch");
    fetch_into(&daemon.url("repo.git#other"), &w.tree(), 1 << 20, &policy)
        .await
        .unwrap_or_else(|e| panic!("{}", chain(&e)));
    assert_eq!(
        fs::read_to_string(w.tree().join("OTHER")).unwrap(),
        "other branch\n"
    );
}

/// A server on 127.0.0.1 that greets every connection with a banner (as SSH or SMTP would)
/// and closes it; it lives as long as the test process.
fn banner_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            // Take git's request first: closing on unread data would reset the connection.
            let _ = conn.read(&mut [0u8; 4096]);
            let _ = conn.write_all(b"HTTP/1.0 400 SECRET-BANNER\r\n\r\n");
        }
    });
    addr
}

#[tokio::test]
async fn git_failures_are_refused_or_explained() {
    let base = TestDir::new("git-base");
    make_repo(&base.0);
    let daemon = GitDaemon::start(&base.0);
    let allowed = loopback_allowed();
    let default = AddressPolicy::default();
    let http = Server::start(routes);
    let banner = banner_server();
    // (URL, policy, volume size, expected text in the error chain)
    let cases: Vec<(String, &AddressPolicy, u64, &str)> = vec![
        (
            daemon.url("repo.git"),
            &default,
            1 << 20,
            "cannot fetch from 127.0.0.1: refused: address 127.0.0.1 (loopback)",
        ),
        (
            http.url("/org/repo.git"),
            &default,
            1 << 20,
            "refused: address 127.0.0.1 (loopback)",
        ),
        (
            daemon.url("repo.git"),
            &allowed,
            1000,
            "more than the volume's 1000",
        ),
        (
            daemon.url("missing.git"),
            &allowed,
            1 << 20,
            "git clone failed: fatal:",
        ),
        (
            daemon.url("repo.git#no-such-branch"),
            &allowed,
            1 << 20,
            "git clone failed: ",
        ),
        (
            daemon.url("repo.git#--upload-pack=touch"),
            &allowed,
            1 << 20,
            "is not a branch or tag name",
        ),
        // Something else on a git:// port: git's protocol error quotes what answered.
        (
            format!("git://{banner}/repo.git"),
            &allowed,
            1 << 20,
            "the server does not speak git",
        ),
    ];
    for (i, (url, policy, limit, want)) in cases.iter().enumerate() {
        let w = Work::new("git-bad");
        let err = fetch_into(url, &w.tree(), *limit, policy)
            .await
            .unwrap_err();
        let msg = chain(&err);
        assert!(msg.contains(want), "test[{i}]: {msg}");
        assert!(
            !msg.contains("SECRET") && !msg.contains("HTTP"),
            "test[{i}]: {msg}"
        );
    }
}

#[test]
fn git_stderr_is_trimmed_for_the_tenant() {
    let secrets = vec!["hunter2".to_string()];
    // (git's stderr, what the tenant sees)
    let cases: &[(&str, Option<&str>)] = &[
        (
            "remote: internal banner\nfatal: unable to access 'https://u:hunter2@h/r.git/': The requested URL returned error: 403\n",
            Some("fatal: unable to access 'https://u:***@h/r.git/': The requested URL returned error: 403"),
        ),
        (
            "fatal: protocol error: bad line length character: SSH-\n",
            Some("fatal: protocol error: the server does not speak git"),
        ),
        ("warning: something\nremote: hello\n", None),
        (
            "error: one\nerror: two\nerror: three\nerror: four\nfatal: five\n",
            Some("error: one; error: two; error: three; error: four"),
        ),
    ];
    for (i, (stderr, want)) in cases.iter().enumerate() {
        let got = git::tenant_message(stderr, &secrets);
        assert_eq!(got.as_deref(), *want, "test[{i}]");
    }
    let long = format!("fatal: {}", "é".repeat(500));
    let got = git::tenant_message(&long, &[]).unwrap();
    assert_eq!(got.chars().count(), 203, "{got}");
}

#[tokio::test]
async fn git_over_http_connects_only_where_pinned() {
    let server = Server::start(routes);
    let w = Work::new("git-pin");
    let home = w.dir.0.join("home");
    fs::create_dir(&home).unwrap();
    let url: Url = format!("http://pinned.invalid:{}/repo.git", server.addr.port())
        .parse()
        .unwrap();
    let target = pinned(server.addr);
    let cmd = git::command(&url, &target, None, &w.tree(), &home).unwrap();
    let err = git::run(cmd, &w.tree(), 1 << 20, &[]).await.unwrap_err();
    // The test server answers 404 to git's first request: the name reached it through the pin.
    let msg = chain(&err);
    assert!(
        msg.contains("repository") && msg.contains("not found"),
        "{msg}"
    );
    assert!(!msg.contains("resolve"), "{msg}");
}

#[test]
fn git_settings_allow_one_scheme_and_pin_names() {
    let target = Target {
        host: "example.com".into(),
        port: 443,
        addrs: vec![
            "93.184.215.14:443".parse().unwrap(),
            "[2606:2800:21f:cb07:6820:80da:af6b:8b2c]:443"
                .parse()
                .unwrap(),
        ],
        literal: false,
    };
    let url: Url = "https://example.com/r.git".parse().unwrap();
    let c = git::config(&url, &target);
    for want in [
        "protocol.allow=never",
        "protocol.https.allow=always",
        "http.followRedirects=false",
        "http.curloptResolve=example.com:443:93.184.215.14,[2606:2800:21f:cb07:6820:80da:af6b:8b2c]",
    ] {
        assert!(c.iter().any(|s| s == want), "{want} missing from {c:?}");
    }
    assert!(!c.iter().any(|s| s.starts_with("protocol.git.")), "{c:?}");
}
