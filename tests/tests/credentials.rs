//! Credentials (issue 17, item 2): every access key, token and client certificate has an id,
//! an expiry and a state; it can be listed (never its secret), revoked by id or by rotating
//! the tenant, and a revoked or expired one is refused at once, on a kept-alive TLS
//! connection too. Clients: curl, the stock Docker CLI, hyper, and a keep-alive HTTPS client
//! over rustls that holds one connection across the revocation.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use e2e::*;

fn main() {
    let tests: &[(&'static str, TestFn)] = &[
        ("token_revoked_then_expired", token_revoked_then_expired),
        (
            "rotate_refuses_an_open_connection",
            rotate_refuses_an_open_connection,
        ),
        (
            "certificate_expires_and_is_revoked_by_id",
            certificate_expires_and_is_revoked_by_id,
        ),
        (
            "keys_expire_and_admin_is_the_operators",
            keys_expire_and_admin_is_the_operators,
        ),
        (
            "streams_end_with_their_credential",
            streams_end_with_their_credential,
        ),
        (
            "exec_session_ends_with_its_certificate",
            exec_session_ends_with_its_certificate,
        ),
    ];
    std::process::exit(run_tests(tests));
}

/// No VM boots here: templates off keeps the daemon from building one.
fn daemon() -> &'static Daemon {
    static D: OnceLock<Arc<Daemon>> = OnceLock::new();
    D.get_or_init(|| {
        let opts = DaemonOpts {
            extra_args: ["--templates", "off", "--credential-ttl", "30d"]
                .map(String::from)
                .to_vec(),
            ..DaemonOpts::default()
        };
        Daemon::start("cr", opts)
    })
}

/// `hyperd tenant ARGS` against the daemon, whatever its exit code.
fn admin(d: &Daemon, args: &[&str]) -> Out {
    let mut a = vec![
        "--data-root",
        d.data.to_str().unwrap(),
        "tenant",
        "--socket",
        d.sock.to_str().unwrap(),
    ];
    a.extend_from_slice(args);
    Cmd::new(hyperd_bin(), &a).run()
}

/// The `hyperd tenant keys` line of credential `id`.
fn listed(d: &Daemon, tenant: &str, id: &str) -> String {
    let o = admin(d, &["keys", tenant]).ok();
    o.stdout
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(id))
        .unwrap_or_else(|| panic!("{id} not listed: {o}"))
        .to_string()
}

/// The ids `hyperd tenant keys` lists for a kind.
fn ids_of(d: &Daemon, tenant: &str, kind: &str) -> Vec<String> {
    admin(d, &["keys", tenant])
        .ok()
        .stdout
        .lines()
        .filter(|l| l.starts_with(&format!("{kind} ")))
        .map(|l| l.split_whitespace().nth(1).unwrap().to_string())
        .collect()
}

fn wait_expired(d: &Daemon, tenant: &str, id: &str) {
    wait_for(&format!("{id} to expire"), secs(30.0), || {
        let line = listed(d, tenant, id);
        if line.ends_with("expired") {
            Ok(())
        } else {
            Err(line)
        }
    });
}

/// GET /containers/json over TCP with extra curl arguments: (status, body).
fn curl(d: &Daemon, extra: &[&str]) -> (String, String) {
    let ca = d.data.join("tls").join("ca.pem");
    let url = format!("https://127.0.0.1:{}/v1.44/containers/json", d.tcp_port);
    let mut a = vec![
        "-s",
        "--cacert",
        ca.to_str().unwrap(),
        "-w",
        "\n%{http_code}",
    ];
    a.extend_from_slice(extra);
    a.push(&url);
    let o = Cmd::new("curl", &a).run().ok();
    let (body, status) = o.stdout.rsplit_once('\n').unwrap();
    (status.to_string(), body.to_string())
}

fn with_token(d: &Daemon, token: &str) -> (String, String) {
    curl(d, &["-H", &format!("X-Hyper-Token: {token}")])
}

/// `docker --tlsverify` with the certificate in `certs`.
fn tls_docker(d: &Daemon, certs: &Path, args: &[&str]) -> Out {
    let host = d.tcp_host();
    let mut a = vec!["--tlsverify", "-H", host.as_str()];
    a.extend_from_slice(args);
    Cmd::new(docker_bin(), &a)
        .env("DOCKER_CERT_PATH", certs)
        .env("DOCKER_CONFIG", d.data.join("docker-config"))
        .run()
}

/// A token works until revoked by its id, then gets a 401 that names it; one issued for 2s
/// stops by itself; the listing shows ids and states, never the token.
fn token_revoked_then_expired() {
    let d = daemon();
    d.new_tenant("tokt");
    let o = admin(d, &["token", "tokt"]).ok();
    let token = o.out();
    let id = ids_of(d, "tokt", "token")
        .pop()
        .expect("the token is listed");
    assert!(id.starts_with("tok-") && o.stderr.contains(&id), "{o}");
    assert_eq!(with_token(d, &token).0, "200");
    let listing = admin(d, &["keys", "tokt"]).ok();
    assert!(
        !listing.stdout.contains(&token[4..]),
        "the listing shows the token: {listing}"
    );
    let line = listed(d, "tokt", &id);
    assert!(line.ends_with("active"), "{listing}");
    // Issued without --expires: the daemon's --credential-ttl.
    let dates: Vec<chrono::DateTime<chrono::Utc>> = line
        .split_whitespace()
        .skip(2)
        .take(2)
        .map(|t| t.parse().unwrap())
        .collect();
    assert_eq!(dates[1] - dates[0], chrono::TimeDelta::days(30), "{line}");

    let o = admin(d, &["revoke", &id]).ok();
    assert!(o.stdout.contains("tokt"), "{o}");
    let (status, body) = with_token(d, &token);
    assert_eq!(status, "401", "a revoked token: {body}");
    assert!(
        body.contains(&format!("token {id} was revoked on")),
        "{body}"
    );
    assert!(listed(d, "tokt", &id).contains("revoked"));

    let o = admin(d, &["token", "tokt", "--expires", "2s"]).ok();
    let short = o.out();
    let short_id = ids_of(d, "tokt", "token")
        .into_iter()
        .find(|i| *i != id)
        .unwrap();
    wait_expired(d, "tokt", &short_id);
    let (status, body) = with_token(d, &short);
    assert_eq!(status, "401", "an expired token: {body}");
    assert!(
        body.contains(&format!("token {short_id} expired on"))
            && body.contains("hyperd tenant token tokt"),
        "{body}"
    );

    // Lifetimes that make no sense are refused, by the CLI and by the daemon.
    for bad in ["0s", "5w", "soon"] {
        let o = admin(d, &["token", "tokt", "--expires", bad]);
        assert_ne!(o.code, 0, "{o}");
        assert!(o.stderr.contains("invalid lifetime"), "{o}");
    }
    let o = d.api(
        "POST",
        "/admin/tenants/tokt/token",
        &[
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"Expires":"5w"}"#,
        ],
    );
    assert!(
        o.stdout.ends_with("400") && o.stdout.contains("s, m, h or d"),
        "{o}"
    );
    let o = admin(d, &["revoke", "tok-ffffffffffffffff"]);
    assert!(o.code == 1 && o.stderr.contains("no credential"), "{o}");
    let o = admin(d, &["revoke", "tok-12"]);
    assert!(
        o.code == 1 && o.stderr.contains("invalid credential id"),
        "{o}"
    );
}

/// `tenant rotate` revokes the tenant's certificate, token and key: a request on a TLS
/// connection opened before (and used with keep-alive) is refused and the connection closed;
/// `docker --tlsverify`, the token and the old key fail; the new key works.
fn rotate_refuses_an_open_connection() {
    let d = daemon();
    let (cfg, old_key) = d.new_tenant("rott");
    let certs = d.data.join("rott-certs");
    admin(d, &["cert", "rott", "--out", certs.to_str().unwrap()]).ok();
    let token = admin(d, &["token", "rott"]).ok().out();
    let o = tls_docker(d, &certs, &["ps"]);
    assert_eq!(o.code, 0, "{o}");
    let mut conn = HttpsConn::open(d, &certs);
    assert_eq!(conn.get("/v1.44/containers/json").unwrap().0, 200);
    assert_eq!(conn.get("/v1.44/info").unwrap().0, 200, "keep-alive");

    let rotation = admin(d, &["rotate", "rott"]).ok();
    for id in ids_of(d, "rott", "cert")
        .iter()
        .chain(&ids_of(d, "rott", "token"))
    {
        assert!(
            rotation.stderr.contains(id.as_str()),
            "{id} not revoked: {rotation}"
        );
    }
    conn.assert_refused("/v1.44/containers/json", "was revoked on");

    let o = tls_docker(d, &certs, &["ps"]);
    assert!(o.code != 0 && o.stderr.contains("was revoked on"), "{o}");
    assert_eq!(with_token(d, &token).0, "401");
    let o = d.hyper_tcp(&cfg, &["ps"]).run();
    assert!(
        o.code != 0
            && o.stderr
                .contains(&format!("access key {old_key} was revoked")),
        "{o}"
    );
    let field = |k: &str| {
        rotation
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| panic!("no {k} in {rotation}"))
    };
    let new_cfg = d.data.join("rott-new");
    std::fs::create_dir_all(&new_cfg).unwrap();
    let cfg_json = serde_json::json!({"clouds": {d.tcp_host(): {
        "accesskey": field("access key:"), "secretkey": field("secret key:"), "region": "us-west-1",
    }}});
    std::fs::write(new_cfg.join("config.json"), cfg_json.to_string()).unwrap();
    let o = d.hyper_tcp(&cfg, &["ps"]).run();
    assert!(
        o.code != 0
            && o.stderr
                .contains(&format!("access key {old_key} was revoked")),
        "{o}"
    );
    d.hyper_tcp(&new_cfg, &["ps"]).run().ok();
    let rotated = admin(d, &["keys", "rott"]).ok();
    for line in rotated.stdout.lines().skip(1) {
        let active = line.ends_with("active");
        assert_eq!(
            active,
            line.contains(&field("access key:")),
            "after rotate: {rotated}"
        );
    }
}

/// A certificate issued for 2s is refused once past it, with a 401 saying so; another one is
/// revoked by its id while a connection with it is open: refused there at once, and closed.
fn certificate_expires_and_is_revoked_by_id() {
    let d = daemon();
    d.new_tenant("crtt");
    let short = d.data.join("crtt-short");
    admin(
        d,
        &[
            "cert",
            "crtt",
            "--out",
            short.to_str().unwrap(),
            "--expires",
            "2s",
        ],
    )
    .ok();
    let short_id = ids_of(d, "crtt", "cert").pop().unwrap();
    assert!(short_id.starts_with("crt-"), "{short_id}");
    wait_expired(d, "crtt", &short_id);
    let o = tls_docker(d, &short, &["ps"]);
    assert!(
        o.code != 0
            && o.stderr
                .contains(&format!("client certificate {short_id} expired on")),
        "{o}"
    );

    let certs = d.data.join("crtt-long");
    let o = admin(d, &["cert", "crtt", "--out", certs.to_str().unwrap()]).ok();
    let id = ids_of(d, "crtt", "cert")
        .into_iter()
        .find(|i| *i != short_id)
        .unwrap();
    assert!(o.stdout.contains(&id), "{o}");
    let line = listed(d, "crtt", &id);
    assert!(line.ends_with("active"), "{line}");
    assert!(tls_docker(d, &certs, &["ps"]).code == 0);
    let mut conn = HttpsConn::open(d, &certs);
    assert_eq!(conn.get("/v1.44/containers/json").unwrap().0, 200);
    admin(d, &["revoke", &id]).ok();
    conn.assert_refused(
        "/v1.44/containers/json",
        &format!("client certificate {id} was revoked on"),
    );
    let o = tls_docker(d, &certs, &["ps"]);
    assert!(o.code != 0 && o.stderr.contains("was revoked on"), "{o}");
    // The listing shows both, and no key material.
    let listing = admin(d, &["keys", "crtt"]).ok();
    let key_pem = std::fs::read_to_string(certs.join("key.pem")).unwrap();
    let key_line = key_pem.lines().nth(1).unwrap();
    assert!(!listing.stdout.contains(key_line), "{listing}");
    assert!(listing.stdout.contains(&short_id) && listing.stdout.contains(&id));
}

/// An access key created with --expires stops by itself with a 401 that says so, and one
/// revoked by id at once. The admin API is the operator's: over TCP a tenant, signing or with
/// a token, cannot list or revoke another's credentials (nor its own).
fn keys_expire_and_admin_is_the_operators() {
    let d = daemon();
    let (victim_cfg, victim_key) = d.new_tenant("keyv");
    d.new_tenant("keyo");
    let other_token = admin(d, &["token", "keyo"]).ok().out();
    let victim_token = admin(d, &["token", "keyv"]).ok().out();
    let victim_token_id = ids_of(d, "keyv", "token").pop().unwrap();
    let base = format!("https://127.0.0.1:{}", d.tcp_port);
    let ca = d.data.join("tls").join("ca.pem");
    for (method, path) in [
        (
            "POST",
            format!("/admin/credentials/{victim_token_id}/revoke"),
        ),
        ("POST", format!("/admin/credentials/{victim_key}/revoke")),
        ("POST", "/admin/tenants/keyv/rotate".to_string()),
        ("GET", "/admin/tenants/keyv/credentials".to_string()),
    ] {
        let o = Cmd::new(
            "curl",
            &[
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--cacert",
                ca.to_str().unwrap(),
                "-X",
                method,
                "-H",
                &format!("X-Hyper-Token: {other_token}"),
                &format!("{base}{path}"),
            ],
        )
        .run()
        .ok();
        assert_eq!(o.stdout, "404", "{method} {path} over TCP");
        let o = d.hyper_tcp(&victim_cfg, &["ps"]).run();
        assert_eq!(o.code, 0, "after {method} {path}: {o}");
    }
    assert_eq!(with_token(d, &victim_token).0, "200");

    // Keys: revoked by id, and expiring.
    admin(d, &["revoke", &victim_key]).ok();
    let o = d.hyper_tcp(&victim_cfg, &["ps"]).run();
    assert!(
        o.code != 0
            && o.stderr
                .contains(&format!("access key {victim_key} was revoked on")),
        "{o}"
    );
    let o = admin(d, &["create", "keyv", "--expires", "2s"]).ok();
    let key = o
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("access key:"))
        .unwrap()
        .trim()
        .to_string();
    let secret = o
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("secret key:"))
        .unwrap()
        .trim()
        .to_string();
    let cfg = d.data.join("keyv-short");
    std::fs::create_dir_all(&cfg).unwrap();
    let cfg_json = serde_json::json!({"clouds": {d.tcp_host(): {
        "accesskey": key, "secretkey": secret, "region": "us-west-1",
    }}});
    std::fs::write(cfg.join("config.json"), cfg_json.to_string()).unwrap();
    wait_expired(d, "keyv", &key);
    let o = d.hyper_tcp(&cfg, &["ps"]).run();
    assert!(
        o.code != 0
            && o.stderr.contains(&format!("access key {key} expired on"))
            && o.stderr.contains("hyperd tenant create keyv"),
        "{o}"
    );
    let listing = admin(d, &["keys", "keyv"]).ok();
    assert!(!listing.stdout.contains(&secret), "{listing}");
}

/// A request already admitted ends when its credential goes: a `GET /events` stream let in by a
/// token is cut when the token is revoked, and `docker --tlsverify events` ends when the
/// tenant is rotated.
fn streams_end_with_their_credential() {
    let d = daemon();
    d.new_tenant("strt");
    let token = admin(d, &["token", "strt"]).ok().out();
    let id = ids_of(d, "strt", "token").pop().unwrap();
    let mut conn = HttpsConn::connect(d, None);
    let status = conn
        .send("/v1.44/events", &format!("X-Hyper-Token: {token}\r\n"))
        .unwrap();
    assert_eq!(status, 200);
    conn.skip_headers();
    admin(d, &["revoke", &id]).ok();
    assert!(conn.closed(), "the event stream outlived its token");

    let certs = d.data.join("strt-certs");
    admin(d, &["cert", "strt", "--out", certs.to_str().unwrap()]).ok();
    let printed = d.data.join("strt-events.out");
    let host = d.tcp_host();
    // From before the volume is made: the event counts even if it comes before the stream
    // is up.
    let since = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 1)
    .to_string();
    let mut events = std::process::Command::new(docker_bin())
        .args([
            "--tlsverify",
            "-H",
            &host,
            "events",
            "--since",
            &since,
            "--format",
            "{{.Type}} {{.Action}}",
        ])
        .env("DOCKER_CERT_PATH", &certs)
        .env("DOCKER_CONFIG", d.data.join("docker-config"))
        .stdout(std::fs::File::create(&printed).unwrap())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The stream is up once it shows an event of the tenant.
    tls_docker(d, &certs, &["volume", "create", "strtv"]);
    wait_for("docker events to show the volume", secs(60.0), || {
        let text = std::fs::read_to_string(&printed).unwrap_or_default();
        match text.contains("volume create") {
            true => Ok(()),
            false => Err(text),
        }
    });
    admin(d, &["rotate", "strt"]).ok();
    let exited = wait_for("docker events to end", secs(60.0), || {
        events
            .try_wait()
            .unwrap()
            .ok_or_else(|| "still running".to_string())
    });
    let mut stderr = String::new();
    events
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!exited.success(), "docker events: {exited} {stderr}");
    let fresh = d.data.join("strt-fresh");
    admin(d, &["cert", "strt", "--out", fresh.to_str().unwrap()]).ok();
    let o = tls_docker(d, &fresh, &["volume", "rm", "strtv"]);
    assert_eq!(o.code, 0, "{o}");
}

/// A hijacked stream (`docker exec -i`, in a real VM) is cut when the certificate that
/// opened it is revoked: the session was echoing, and ends without being asked to.
fn exec_session_ends_with_its_certificate() {
    let d = daemon();
    d.new_tenant("exet");
    let certs = d.data.join("exet-certs");
    admin(d, &["cert", "exet", "--out", certs.to_str().unwrap()]).ok();
    let docker = |args: &[&str]| {
        let o = tls_docker(d, &certs, args);
        assert_eq!(o.code, 0, "{o}");
        o
    };
    docker(&["load", "-i", busybox_tar().to_str().unwrap()]);
    let id = docker(&["run", "-d", "busybox", "sleep", "600"]).out();
    // The harness's teardown removes the default tenant's containers only.
    let _remove = RemoveWithFreshCert { d, id: id.clone() };
    let host = d.tcp_host();
    let mut session = std::process::Command::new(docker_bin())
        .args(["--tlsverify", "-H", &host, "exec", "-i", &id, "cat"])
        .env("DOCKER_CERT_PATH", &certs)
        .env("DOCKER_CONFIG", d.data.join("docker-config"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = session.stdin.take().unwrap();
    stdin.write_all(b"echoed\n").unwrap();
    let mut out = BufReader::new(session.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "echoed\n", "the session works before the revocation");

    let cert = ids_of(d, "exet", "cert").pop().unwrap();
    admin(d, &["revoke", &cert]).ok();
    let exited = wait_for("docker exec to end", secs(60.0), || {
        session
            .try_wait()
            .unwrap()
            .ok_or_else(|| "still running".to_string())
    });
    assert!(!exited.success(), "docker exec ended well: {exited}");
    drop(stdin);
}

/// Removes tenant exet's container, also when the test fails, with a certificate of its own.
struct RemoveWithFreshCert<'a> {
    d: &'a Daemon,
    id: String,
}

impl Drop for RemoveWithFreshCert<'_> {
    fn drop(&mut self) {
        let fresh = self.d.data.join("exet-fresh");
        admin(self.d, &["cert", "exet", "--out", fresh.to_str().unwrap()]);
        let o = tls_docker(self.d, &fresh, &["rm", "-f", &self.id]);
        if o.code != 0 && !std::thread::panicking() {
            panic!("{o}");
        }
    }
}

/// An HTTPS/1.1 client holding one connection, with a client certificate.
struct HttpsConn {
    io: BufReader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
}

impl HttpsConn {
    /// A connection presenting the client certificate in `certs`.
    fn open(d: &Daemon, certs: &Path) -> HttpsConn {
        Self::connect(d, Some(certs))
    }

    /// A connection checking the server against the daemon's CA, with a client certificate or
    /// none.
    fn connect(d: &Daemon, certs: Option<&Path>) -> HttpsConn {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(d.data.join("tls").join("ca.pem")).unwrap() {
            roots.add(ca.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match certs {
            Some(certs) => {
                let chain = CertificateDer::pem_file_iter(certs.join("cert.pem"))
                    .unwrap()
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap();
                let key = PrivateKeyDer::from_pem_file(certs.join("key.pem")).unwrap();
                config.with_client_auth_cert(chain, key).unwrap()
            }
            None => config.with_no_client_auth(),
        };
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let tls = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let tcp = TcpStream::connect(("127.0.0.1", d.tcp_port)).unwrap();
        tcp.set_read_timeout(Some(secs(30.0))).unwrap();
        HttpsConn {
            io: BufReader::new(rustls::StreamOwned::new(tls, tcp)),
        }
    }

    /// GET `path` on this connection: (status, body), or how the connection failed.
    fn get(&mut self, path: &str) -> std::io::Result<(u16, String)> {
        let code = self.send(path, "")?;
        Ok((code, self.read_body()?))
    }

    /// Sends GET `path` with `headers` (each ending in CRLF) and reads the status line; the
    /// headers are left to read.
    fn send(&mut self, path: &str, headers: &str) -> std::io::Result<u16> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n");
        self.io.get_mut().write_all(request.as_bytes())?;
        let mut status = String::new();
        if self.io.read_line(&mut status)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let code: u16 = status
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no HTTP status line: {status:?}"));
        Ok(code)
    }

    /// Reads the headers and the body of a response whose status line was read.
    fn read_body(&mut self) -> std::io::Result<String> {
        let (mut length, mut chunked) = (0usize, false);
        loop {
            let mut line = String::new();
            self.io.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap(),
                "transfer-encoding" => chunked = value.contains("chunked"),
                _ => {}
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                self.io.read_line(&mut size)?;
                let n = usize::from_str_radix(size.trim(), 16).unwrap();
                let mut chunk = vec![0; n + 2];
                self.io.read_exact(&mut chunk)?;
                body.extend_from_slice(&chunk[..n]);
                if n == 0 {
                    break;
                }
            }
        } else {
            body.resize(length, 0);
            self.io.read_exact(&mut body)?;
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// The next request on this connection is refused: its credential's guard has cut the
    /// connection already, or the request gets a 401 saying it was revoked and the
    /// connection is closed after it.
    fn assert_refused(&mut self, path: &str, because: &str) {
        match self.get(path) {
            Err(_) => {}
            Ok((401, body)) => {
                assert!(body.contains(because), "{body}");
                assert!(self.closed(), "the refused connection stays open");
            }
            Ok((status, body)) => panic!("a request on the open connection got {status}: {body}"),
        }
    }

    /// Reads the headers of a response whose status line was read, leaving its body.
    fn skip_headers(&mut self) {
        loop {
            let mut line = String::new();
            self.io.read_line(&mut line).unwrap();
            if line.trim_end().is_empty() {
                return;
            }
        }
    }

    /// Whether the server closes the connection (end of stream or a reset) before the read
    /// timeout; what it still sends before is skipped.
    fn closed(&mut self) -> bool {
        use std::io::ErrorKind::{TimedOut, WouldBlock};
        let mut buf = [0u8; 4096];
        loop {
            match self.io.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) => return !matches!(e.kind(), WouldBlock | TimedOut),
            }
        }
    }
}
