//! Tarball downloads from a real HTTP server on 127.0.0.1.

use super::*;

/// A tiny HTTP/1.1 server on 127.0.0.1: each connection gets one answer from `route`, then
/// is closed. Stops when dropped.
pub(super) struct Server {
    pub(super) addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Server {
    pub(super) fn start(route: fn(&str, SocketAddr) -> Vec<u8>) -> Server {
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

    pub(super) fn url(&self, path: &str) -> String {
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

pub(super) fn routes(path: &str, me: SocketAddr) -> Vec<u8> {
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

/// A name no resolver knows, pinned to `addr`: what `resolve_checked` makes of a host name.
pub(super) fn pinned(addr: SocketAddr) -> Target {
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
