//! Volume sources against hostile archives, a real HTTP server and a real git daemon, all on
//! 127.0.0.1 (refused addresses are refused before anything connects).

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::test_utils::{gzip, Layer, TestDir};

/// The error and its causes, as hyperd shows them (server::error::error_chain).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn loopback_allowed() -> AddressPolicy {
    AddressPolicy::new(vec!["127.0.0.1/32".parse().unwrap()])
}

fn timeout_scale() -> f64 {
    std::env::var("HYPER_TEST_TIMEOUT_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

/// A work dir with `tree/` (the target) and `outside/` (must stay empty), plus the archive.
struct Work {
    dir: TestDir,
}

impl Work {
    fn new(tag: &str) -> Work {
        let dir = TestDir::new(tag);
        fs::create_dir(dir.0.join("tree")).unwrap();
        fs::create_dir(dir.0.join("outside")).unwrap();
        Work { dir }
    }
    fn tree(&self) -> PathBuf {
        self.dir.0.join("tree")
    }
    fn outside(&self) -> PathBuf {
        self.dir.0.join("outside")
    }
    fn archive(&self, data: &[u8]) -> PathBuf {
        let p = self.dir.0.join("upload.tar");
        fs::write(&p, data).unwrap();
        p
    }
    fn unpack(&self, data: &[u8], limit: u64) -> Result<u64, SourceError> {
        unpack_upload(&self.archive(data), &self.tree(), limit)
    }
}

/// A directory's tar: root entry, nested dirs, owners and modes, set-id bit, links.
fn directory_tar() -> Vec<u8> {
    Layer::new()
        .dir("./", 0o750)
        .dir("./etc/", 0o700)
        .file("./etc/conf", b"key=value\n", 0o640, 1000, 1001)
        .file("./bin-tool", b"#!/bin/sh\n", 0o4755, 0, 0)
        .symlink("./passwd", "/etc/passwd")
        .symlink("./rel", "etc/conf")
        .hardlink("./etc/conf2", "./etc/conf")
        .finish()
}

#[test]
fn upload_unpacks_a_directory_tar() {
    let w = Work::new("up-dir");
    let size = w.unpack(&directory_tar(), 1 << 20).unwrap();
    let t = w.tree();
    assert_eq!(size, tree_size(&t).unwrap());
    assert_eq!(
        fs::metadata(&t).unwrap().permissions().mode() & 0o7777,
        0o750
    );
    let conf = fs::metadata(t.join("etc/conf")).unwrap();
    assert_eq!(fs::read(t.join("etc/conf")).unwrap(), b"key=value\n");
    assert_eq!(
        (conf.uid(), conf.gid(), conf.mode() & 0o7777),
        (1000, 1001, 0o640)
    );
    assert_eq!(conf.nlink(), 2);
    assert_eq!(fs::metadata(t.join("etc/conf2")).unwrap().ino(), conf.ino());
    assert_eq!(
        fs::metadata(t.join("bin-tool")).unwrap().mode() & 0o7777,
        0o4755
    );
    assert_eq!(
        fs::read_link(t.join("passwd")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(fs::read_link(t.join("rel")).unwrap(), Path::new("etc/conf"));
    assert_eq!(conf.mtime(), 1_700_000_000);
    // Six entries below the root (etc, conf, conf2, bin-tool, passwd, rel); conf's bytes once.
    assert_eq!(size, 6 * ENTRY_OVERHEAD + 10 + 10);
}

#[test]
fn upload_of_a_single_file_lands_under_its_name() {
    let w = Work::new("up-file");
    let tar = Layer::new()
        .file("notes.txt", b"hello", 0o644, 0, 0)
        .finish();
    w.unpack(&gzip(&tar), 1 << 20).unwrap();
    assert_eq!(fs::read(w.tree().join("notes.txt")).unwrap(), b"hello");
}

#[test]
fn upload_reads_long_names_and_pax_records() {
    let w = Work::new("up-pax");
    let long = format!("{}/file", "d".repeat(150));
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o600);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(4);
    // A GNU long name (the name is over 100 bytes).
    b.append_data(&mut h.clone(), &long, &b"long"[..]).unwrap();
    // A pax header giving the path and an owner too large for the octal field.
    b.append_pax_extensions([("path", &b"pax/named"[..]), ("uid", b"3000000")])
        .unwrap();
    b.append_data(&mut h, "short", &b"pax!"[..]).unwrap();
    w.unpack(&b.into_inner().unwrap(), 1 << 20).unwrap();
    assert_eq!(fs::read(w.tree().join(&long)).unwrap(), b"long");
    let pax = w.tree().join("pax/named");
    assert_eq!(fs::read(&pax).unwrap(), b"pax!");
    assert_eq!(fs::metadata(&pax).unwrap().uid(), 3_000_000);
    assert!(!w.tree().join("short").exists());
}

/// A tar whose only entry is a pax header of `n` bytes, then a file.
fn huge_pax(n: usize) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let value = vec![b'x'; n];
    b.append_pax_extensions([("comment", value.as_slice())])
        .unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(0);
    b.append_data(&mut h, "f", &b""[..]).unwrap();
    b.into_inner().unwrap()
}

#[test]
fn upload_refuses_hostile_or_broken_tars() {
    let outside = |w: &Work| w.outside().display().to_string();
    // (archive, volume size, expected error in the chain)
    type Case = (Box<dyn Fn(&Work) -> Vec<u8>>, u64, &'static str);
    let cases: Vec<Case> = vec![
        (
            Box::new(|_| Layer::new().file("../escape", b"x", 0o644, 0, 0).finish()),
            1 << 20,
            "archive entry ../escape escapes the volume's root",
        ),
        (
            Box::new(|_| Layer::new().file("/etc/owned", b"x", 0o644, 0, 0).finish()),
            1 << 20,
            "archive entry /etc/owned escapes the volume's root",
        ),
        (
            Box::new(|_| Layer::new().file("a/../../x", b"x", 0o644, 0, 0).finish()),
            1 << 20,
            "escapes the volume's root",
        ),
        (
            Box::new(move |w| {
                Layer::new()
                    .symlink("evil", &outside(w))
                    .file("evil/owned", b"x", 0o644, 0, 0)
                    .finish()
            }),
            1 << 20,
            "archive entry evil/owned: a parent is a symlink or a file",
        ),
        (
            Box::new(move |w| {
                Layer::new()
                    .symlink("evil", &outside(w))
                    .dir("evil/sub/", 0o755)
                    .finish()
            }),
            1 << 20,
            "archive entry evil/sub: a parent is a symlink",
        ),
        (
            Box::new(|_| {
                Layer::new()
                    .file("f", b"x", 0o644, 0, 0)
                    .file("f/x", b"x", 0o644, 0, 0)
                    .finish()
            }),
            1 << 20,
            "archive entry f/x: a parent is a symlink or a file",
        ),
        (
            Box::new(move |w| {
                fs::write(w.outside().join("secret"), b"s").unwrap();
                Layer::new()
                    .symlink("evil", &outside(w))
                    .hardlink("stolen", "evil/secret")
                    .finish()
            }),
            1 << 20,
            "hard link stolen -> evil/secret: target missing",
        ),
        (
            Box::new(|_| Layer::new().hardlink("stolen", "../x").finish()),
            1 << 20,
            "archive entry ../x escapes the volume's root",
        ),
        (
            Box::new(|_| Layer::new().chardev("dev/sda").finish()),
            1 << 20,
            "archive entry dev/sda is a character device; volume sources hold files",
        ),
        (
            Box::new(|_| Layer::new().fifo("pipe").finish()),
            1 << 20,
            "archive entry pipe is a fifo",
        ),
        (
            Box::new(|_| Layer::new().file("big", &[7; 10_000], 0o644, 0, 0).finish()),
            8192,
            "the unpacked archive (file bytes plus 4 KiB per entry) needs at least 14608 bytes, more than the volume's 8192",
        ),
        (
            Box::new(|_| {
                let mut l = Layer::new();
                for i in 0..20 {
                    l.file(&format!("empty{i}"), b"", 0o644, 0, 0);
                }
                l.finish()
            }),
            10 * ENTRY_OVERHEAD,
            "more than the volume's 40960",
        ),
        (
            Box::new(|_| huge_pax(2 << 20)),
            1 << 30,
            "invalid tar archive: a long name or pax header of",
        ),
        (
            Box::new(|_| b"<html><body>SECRET-BANNER</body></html>".repeat(20)),
            1 << 20,
            "the source is not a tar archive",
        ),
        (
            Box::new(|_| Vec::new()),
            1 << 20,
            "the source is not a tar archive",
        ),
        (
            Box::new(|_| gzip(b"not a tar at all, but gzipped")),
            1 << 20,
            "the source is not a tar archive",
        ),
    ];
    for (i, (make, limit, want)) in cases.iter().enumerate() {
        let w = Work::new("up-bad");
        let err = w.unpack(&make(&w), *limit).unwrap_err();
        let msg = chain(&err);
        assert!(msg.contains(want), "test[{i}]: {msg}");
        assert!(!msg.contains("SECRET"), "test[{i}]: {msg}");
        let left: Vec<_> = fs::read_dir(w.outside())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != "secret")
            .collect();
        assert!(left.is_empty(), "test[{i}]: wrote outside: {left:?}");
        assert!(!w.dir.0.join("escape").exists(), "test[{i}]");
    }
}

#[test]
fn tree_size_counts_entries_and_bytes_once() {
    let w = Work::new("size");
    let t = w.tree();
    fs::create_dir(t.join("d")).unwrap();
    fs::write(t.join("d/a"), [0u8; 5000]).unwrap();
    fs::hard_link(t.join("d/a"), t.join("b")).unwrap();
    std::os::unix::fs::symlink("/nowhere/with/a/long/target", t.join("l")).unwrap();
    // d, d/a, b, l: four entries, 5000 bytes once.
    assert_eq!(tree_size(&t).unwrap(), 4 * ENTRY_OVERHEAD + 5000);
}

#[test]
fn urls_are_classified_or_refused() {
    // (URL, Ok(kind) or the error's text)
    let cases: &[(&str, Result<Kind, &str>)] = &[
        ("git://example.com/repo", Ok(Kind::Git)),
        ("https://example.com/org/repo.git", Ok(Kind::Git)),
        ("http://example.com/org/repo.git/", Ok(Kind::Git)),
        ("https://example.com/org/repo.git#v1.2", Ok(Kind::Git)),
        ("https://example.com/files/site.tar.gz", Ok(Kind::Tarball)),
        ("http://example.com/download?id=3", Ok(Kind::Tarball)),
        ("ftp://example.com/a.tar", Err("scheme ftp")),
        ("file:///etc/passwd", Err("scheme file")),
        ("ssh://git@example.com/repo.git", Err("scheme ssh")),
        ("https://example.com./a.tar", Err("trailing dot")),
        ("not a url", Err("invalid volume source URL")),
    ];
    for (i, (url, want)) in cases.iter().enumerate() {
        match (parse(url), want) {
            (Ok((_, kind)), Ok(k)) => assert_eq!(kind, *k, "test[{i}]"),
            (Err(e), Err(text)) => assert!(e.to_string().contains(text), "test[{i}]: {e}"),
            (got, _) => panic!("test[{i}]: {url}: {got:?}"),
        }
    }
}

/// A tiny HTTP/1.1 server on 127.0.0.1: each connection gets one answer from `route`, then
/// is closed. Stops when dropped.
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Server {
    fn start(route: fn(&str, SocketAddr) -> Vec<u8>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let Some(path) = request_path(&mut conn) else {
                    continue;
                };
                let _ = conn.write_all(&route(&path, addr));
            }
        });
        Server { addr, stop }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

/// The path of the request on `conn` (its head read to the blank line).
fn request_path(conn: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&head).lines().next()?.to_string();
    line.split(' ').nth(1).map(str::to_string)
}

fn answer(status: &str, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

fn redirect(to: String) -> Vec<u8> {
    answer(
        "302 Found",
        &[("Location", to), ("Content-Length", "0".into())],
        b"",
    )
}

fn routes(path: &str, me: SocketAddr) -> Vec<u8> {
    let sized = |body: &[u8]| {
        answer(
            "200 OK",
            &[("Content-Length", body.len().to_string())],
            body,
        )
    };
    match path {
        "/site.tar.gz" => sized(&gzip(&directory_tar())),
        "/hop" => redirect("/site.tar.gz".into()),
        "/hop2" => redirect(format!("http://{me}/hop")),
        "/loop" => redirect("/loop".into()),
        "/away" => redirect(format!("http://127.0.0.2:{}/site.tar.gz", me.port())),
        "/elsewhere" => redirect("file:///etc/passwd".into()),
        "/page" => sized(b"<html>SECRET-BANNER</html>"),
        "/big" => sized(&[0u8; 100_000]),
        // No length: the body ends when the connection closes.
        "/stream" => answer("200 OK", &[], &[0u8; 100_000]),
        _ => answer(
            "404 Not Found",
            &[("Content-Length", "13".into())],
            b"SECRET-BANNER",
        ),
    }
}

#[tokio::test]
async fn fetches_a_tarball_directly_and_through_redirects() {
    let server = Server::start(routes);
    for (i, path) in ["/site.tar.gz", "/hop", "/hop2"].iter().enumerate() {
        let w = Work::new("fetch");
        let size = fetch_into(&server.url(path), &w.tree(), 1 << 20, &loopback_allowed())
            .await
            .unwrap_or_else(|e| panic!("test[{i}]: {}", chain(&e)));
        assert_eq!(size, tree_size(&w.tree()).unwrap(), "test[{i}]");
        assert_eq!(
            fs::read(w.tree().join("etc/conf")).unwrap(),
            b"key=value\n",
            "test[{i}]"
        );
        // The download went beside the tree and is gone.
        let names: Vec<_> = fs::read_dir(&w.dir.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|n| !n.contains("download")),
            "test[{i}]: {names:?}"
        );
    }
}

#[tokio::test]
async fn fetch_failures_say_what_to_fix_and_nothing_of_the_answer() {
    let server = Server::start(routes);
    let allowed = loopback_allowed();
    let default = AddressPolicy::default();
    let port = server.addr.port();
    // (URL, policy, volume size, expected text in the error chain)
    let cases: Vec<(String, &AddressPolicy, u64, String)> = vec![
        (
            server.url("/site.tar.gz"),
            &default,
            1 << 20,
            "cannot fetch from 127.0.0.1: refused: address 127.0.0.1 (loopback) is not allowed for volume sources; the operator can allow it with --allow-fetch 127.0.0.1/32".into(),
        ),
        (
            format!("http://localhost:{port}/site.tar.gz"),
            &default,
            1 << 20,
            "cannot fetch from localhost: refused: address".into(),
        ),
        (
            server.url("/away"),
            &allowed,
            1 << 20,
            "cannot fetch from 127.0.0.2: refused: address 127.0.0.2 (loopback)".into(),
        ),
        (
            server.url("/missing"),
            &allowed,
            1 << 20,
            "the server at 127.0.0.1 answered 404 Not Found".into(),
        ),
        (
            server.url("/page"),
            &allowed,
            1 << 20,
            "the source is not a tar archive".into(),
        ),
        (
            server.url("/loop"),
            &allowed,
            1 << 20,
            "more than 5 redirects".into(),
        ),
        (
            server.url("/elsewhere"),
            &allowed,
            1 << 20,
            "bad redirect from 127.0.0.1: it leads away from http(s)".into(),
        ),
        (
            server.url("/big"),
            &allowed,
            50_000,
            "the download needs at least 100000 bytes, more than the volume's 50000".into(),
        ),
        (
            server.url("/stream"),
            &allowed,
            50_000,
            "the download needs at least".into(),
        ),
    ];
    for (i, (url, policy, limit, want)) in cases.iter().enumerate() {
        let w = Work::new("fetch-bad");
        let err = fetch_into(url, &w.tree(), *limit, policy)
            .await
            .unwrap_err();
        let msg = chain(&err);
        assert!(msg.contains(want.as_str()), "test[{i}]: {msg}");
        assert!(!msg.contains("SECRET"), "test[{i}]: {msg}");
        // A refusal reads whole without its causes too (`format!("{e}")`).
        if want.contains("refused") {
            assert!(err.to_string().contains(want.as_str()), "test[{i}]: {err}");
        }
    }
}

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
    let cases: &[(&str, &str)] = &[
        (
            "remote: internal banner\nfatal: unable to access 'https://u:hunter2@h/r.git/': The requested URL returned error: 403\n",
            "fatal: unable to access 'https://u:***@h/r.git/': The requested URL returned error: 403",
        ),
        (
            "fatal: protocol error: bad line length character: SSH-\n",
            "fatal: protocol error: the server does not speak git",
        ),
        ("warning: something\n", "git gave no reason"),
        (
            "error: one\nerror: two\nerror: three\nerror: four\nfatal: five\n",
            "error: one; error: two; error: three; error: four",
        ),
    ];
    for (i, (stderr, want)) in cases.iter().enumerate() {
        assert_eq!(git::tenant_message(stderr, &secrets), *want, "test[{i}]");
    }
    let long = format!("fatal: {}", "é".repeat(500));
    let got = git::tenant_message(&long, &[]);
    assert_eq!(got.chars().count(), 203, "{got}");
}

/// A name no resolver knows, pinned to `addr`: what `resolve_checked` makes of a host name.
fn pinned(addr: SocketAddr) -> Target {
    Target {
        host: "pinned.invalid".into(),
        port: addr.port(),
        addrs: vec![addr],
        literal: false,
    }
}

#[tokio::test]
async fn http_clients_connect_only_where_pinned() {
    let server = Server::start(routes);
    let client = http::pinned_client(&pinned(server.addr)).unwrap();
    let url = format!("http://pinned.invalid:{}/site.tar.gz", server.addr.port());
    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    // Any other name fails instead of being looked up.
    let other = format!("http://localhost:{}/site.tar.gz", server.addr.port());
    let err = client.get(&other).send().await.unwrap_err();
    assert!(
        chain(&err).contains("localhost was not resolved and checked first"),
        "{}",
        chain(&err)
    );
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
