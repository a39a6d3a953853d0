//! Pulls from a real registry: Debian's `docker-registry` on 127.0.0.1, started once for this
//! test binary (three processes on one storage directory: an open one the tests push to, one
//! behind htpasswd basic auth and one behind a token server, both serving the same repositories
//! as private ones). The images are built here, blob by blob, and pushed through the registry's
//! own API.
//!
//! The token server is this test's own ([`TokenServer`], std::net on 127.0.0.1): it answers the
//! realm of the registry's `Bearer` challenge with a JWT (ES256, signed with ring) whose `x5c`
//! header carries a self-signed certificate that the registry trusts through its
//! `auth.token.rootcertbundle`, so the registry really verifies what it is given.
//!
//! Needs `docker-registry`, `htpasswd` (apache2-utils) and `openssl`: `scripts/deps` installs
//! the first two; openssl makes the token keys.
//! Run: `cargo test -p image --test registry`.

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use image::fetch::Reach;
use image::policy::AddressPolicy;
use image::pull::{parse_reference, Credentials, Progress, PullError, Puller};
use image::{ImageInfo, ImageStore};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::{Client, Reference};
use serde_json::json;
use sha2::{Digest, Sha256};

const USER: &str = "alice";
const PASSWORD: &str = "s3cret";

struct Registry {
    /// `127.0.0.1:PORT` of the open registry.
    open: String,
    /// `127.0.0.1:PORT` of the one behind basic auth (same storage).
    private: String,
    /// `127.0.0.1:PORT` of the one behind the token server (same storage).
    token: String,
    tokens: Arc<TokenServer>,
    storage: PathBuf,
}

const TOKEN_SERVICE: &str = "hyper-test-registry";
const TOKEN_ISSUER: &str = "hyper-test-issuer";
/// A user the token server answers with a token signed by a key the registry does not trust.
const FORGER: &str = "mallory";

/// One request the token server saw.
#[derive(Debug, Clone)]
struct TokenRequest {
    /// The decoded query parameters (`service`, `scope`, `account`).
    query: Vec<(String, String)>,
    /// The user of the `Authorization: Basic` header, if any.
    user: Option<String>,
    /// The HTTP status answered.
    status: u16,
}

/// The test's token server: grants `pull` on what the scope asks to [`USER`] with [`PASSWORD`],
/// nothing to anonymous callers (as Docker Hub does for a private repository: the registry then
/// refuses), a forged token to [`FORGER`], and 401 to wrong passwords.
struct TokenServer {
    addr: String,
    /// PKCS#8 of the trusted key and DER of its certificate; the same for the untrusted one.
    trusted: (Vec<u8>, Vec<u8>),
    untrusted: (Vec<u8>, Vec<u8>),
    seen: std::sync::Mutex<Vec<TokenRequest>>,
}

/// A P-256 key (PKCS#8 DER) and its self-signed certificate (DER, and the PEM's path).
fn make_key(dir: &Path, name: &str) -> (Vec<u8>, Vec<u8>, PathBuf) {
    let (key, pem, der) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.der")),
    );
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl is needed for the token server's keys");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let (k, p, d) = (
        key.to_str().unwrap(),
        pem.to_str().unwrap(),
        der.to_str().unwrap(),
    );
    // ring makes the key (it reads only its own PKCS#8 form), openssl the certificate.
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &ring::rand::SystemRandom::new(),
    )
    .unwrap();
    std::fs::write(&key, pkcs8.as_ref()).unwrap();
    run(&[
        "req",
        "-x509",
        "-new",
        "-key",
        k,
        "-keyform",
        "DER",
        "-out",
        p,
        "-days",
        "2",
        "-subj",
        &format!("/CN={name}"),
    ]);
    run(&["x509", "-in", p, "-outform", "DER", "-out", d]);
    (
        std::fs::read(&key).unwrap(),
        std::fs::read(&der).unwrap(),
        pem,
    )
}

fn b64url(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// An ES256 JWT as docker-registry's token auth wants it.
fn sign_token(key: &(Vec<u8>, Vec<u8>), subject: &str, access: serde_json::Value) -> String {
    use base64::Engine;
    use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    let rng = ring::rand::SystemRandom::new();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &key.0, &rng).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = json!({"typ": "JWT", "alg": "ES256",
        "x5c": [base64::engine::general_purpose::STANDARD.encode(&key.1)]});
    let claims = json!({"iss": TOKEN_ISSUER, "sub": subject, "aud": TOKEN_SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{subject}"),
        "access": access});
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let sig = pair.sign(&rng, signing_input.as_bytes()).unwrap();
    format!("{signing_input}.{}", b64url(sig.as_ref()))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let v = u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?');
                out.push(v);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl TokenServer {
    fn start(dir: &Path) -> (Arc<TokenServer>, PathBuf) {
        let (tk, tc, bundle) = make_key(dir, "trusted");
        let (uk, uc, _) = make_key(dir, "untrusted");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = Arc::new(TokenServer {
            addr: listener.local_addr().unwrap().to_string(),
            trusted: (tk, tc),
            untrusted: (uk, uc),
            seen: Default::default(),
        });
        let s = server.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let _ = s.serve(conn);
            }
        });
        (server, bundle)
    }

    fn serve(&self, mut conn: std::net::TcpStream) -> std::io::Result<()> {
        use std::io::Read;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte)? == 1 {
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let target = head.split_whitespace().nth(1).unwrap_or("");
        let query: Vec<(String, String)> = target
            .split_once('?')
            .map(|(_, q)| q)
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (percent_decode(k), percent_decode(v)))
            .collect();
        let basic = head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            if !k.eq_ignore_ascii_case("authorization") {
                return None;
            }
            use base64::Engine;
            let b = v.trim().strip_prefix("Basic ")?;
            let raw = base64::engine::general_purpose::STANDARD.decode(b).ok()?;
            let (u, p) = String::from_utf8(raw)
                .ok()?
                .split_once(':')
                .map(|(u, p)| (u.to_string(), p.to_string()))?;
            Some((u, p))
        });
        // On every repository the scopes name: what was asked for to the right user (pull
        // and push), pull only to anyone else.
        let trusted_user = matches!(&basic, Some((u, p)) if u == USER && p == PASSWORD);
        let access: Vec<serde_json::Value> = query
            .iter()
            .filter(|(k, _)| k == "scope")
            .flat_map(|(_, v)| v.split(' ').map(str::to_string).collect::<Vec<_>>())
            .filter_map(|scope| {
                let mut parts = scope.splitn(3, ':');
                let (kind, name) = (parts.next()?, parts.next()?);
                let actions: Vec<&str> = match parts.next() {
                    Some(asked) if trusted_user => asked.split(',').collect(),
                    _ => vec!["pull"],
                };
                (kind == "repository")
                    .then(|| json!({"type": "repository", "name": name, "actions": actions}))
            })
            .collect();
        let (status, body) = match &basic {
            Some((u, p)) if u == USER && p == PASSWORD => (
                200,
                json!({"token": sign_token(&self.trusted, u, json!(access))}),
            ),
            Some((u, _)) if u == FORGER => (
                200,
                json!({"token": sign_token(&self.untrusted, u, json!(access))}),
            ),
            Some(_) => (401, json!({"details": "incorrect username or password"})),
            None => (
                200,
                json!({"access_token": sign_token(&self.trusted, "", json!([]))}),
            ),
        };
        self.seen.lock().unwrap().push(TokenRequest {
            query,
            user: basic.map(|(u, _)| u),
            status,
        });
        let body = body.to_string();
        let reason = if status == 200 { "OK" } else { "Unauthorized" };
        write!(
            conn,
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        conn.flush()
    }

    fn requests(&self) -> Vec<TokenRequest> {
        self.seen.lock().unwrap().clone()
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn deadline() -> Duration {
    let scale: f64 = std::env::var("HYPER_TEST_TIME_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    Duration::from_secs_f64(10.0 * scale)
}

/// Starts `docker-registry serve CONFIG` from a thread that lives as long as the test process,
/// with PDEATHSIG so the registry dies with it.
fn spawn_registry(config: &Path, log: &Path, addr: &str) {
    let (tx, rx) = std::sync::mpsc::channel();
    let config = config.to_path_buf();
    let log = log.to_path_buf();
    let log_path = log.clone();
    std::thread::spawn(move || {
        let out = std::fs::File::create(&log_path).unwrap();
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        match cmd.spawn() {
            Ok(mut child) => {
                tx.send(Ok(())).unwrap();
                let _ = child.wait();
            }
            Err(e) => tx.send(Err(e)).unwrap(),
        }
    });
    rx.recv().unwrap().unwrap_or_else(|e| {
        panic!("cannot run docker-registry ({e}): install it with scripts/deps")
    });
    let start = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        if start.elapsed() > deadline() {
            panic!(
                "docker-registry did not listen on {addr}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Removes the registry's directory as this test binary exits (libtest has no after-all hook).
fn remove_at_exit(dir: PathBuf) {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    extern "C" fn remove() {
        if let Some(dir) = DIR.get() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    if DIR.set(dir).is_ok() {
        // SAFETY: `remove` is a plain function that stays valid for the process's life.
        assert_eq!(unsafe { libc::atexit(remove) }, 0);
    }
}

/// A test binary killed before its exit leaves its registry's directory: remove those of
/// earlier runs whose process is gone (their registries died with it, by PDEATHSIG).
fn reap_stale_dirs() {
    for e in std::fs::read_dir("/tmp").into_iter().flatten().flatten() {
        if !e.file_name().to_string_lossy().starts_with("hyreg") {
            continue;
        }
        let Ok(owner) = std::fs::read_to_string(e.path().join("owner.pid")) else {
            continue;
        };
        if !Path::new(&format!("/proc/{}", owner.trim())).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| {
        reap_stale_dirs();
        let dir = tempfile::Builder::new()
            .prefix("hyreg")
            .tempdir_in("/tmp")
            .unwrap()
            .keep();
        std::fs::write(dir.join("owner.pid"), std::process::id().to_string()).unwrap();
        remove_at_exit(dir.clone());
        let storage = dir.join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        let out = Command::new("htpasswd")
            .args(["-Bbn", USER, PASSWORD])
            .output()
            .expect("htpasswd (apache2-utils): install it with scripts/deps");
        assert!(out.status.success());
        std::fs::write(dir.join("htpasswd"), out.stdout).unwrap();
        let (open, private, token) = (
            format!("127.0.0.1:{}", free_port()),
            format!("127.0.0.1:{}", free_port()),
            format!("127.0.0.1:{}", free_port()),
        );
        let (tokens, bundle) = TokenServer::start(&dir);
        for (name, addr, auth) in [
            ("open", &open, ""),
            ("private", &private, "basic"),
            ("token", &token, "token"),
        ] {
            let mut cfg = format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                storage.display()
            );
            if auth == "basic" {
                cfg += &format!(
                    "auth:\n  htpasswd:\n    realm: hyper-test\n    path: {}\n",
                    dir.join("htpasswd").display()
                );
            } else if auth == "token" {
                cfg += &format!(
                    "auth:\n  token:\n    realm: http://{}/token\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                    tokens.addr,
                    bundle.display()
                );
            }
            let path = dir.join(format!("{name}.yml"));
            std::fs::write(&path, cfg).unwrap();
            spawn_registry(&path, &dir.join(format!("{name}.log")), addr);
        }
        Registry {
            open,
            private,
            token,
            tokens,
            storage,
        }
    })
}

// ---- building and pushing images ----

fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A layer tar; names are written raw so tests can make ones the tar crate would refuse.
struct Layer(tar::Builder<Vec<u8>>);

impl Layer {
    fn new() -> Layer {
        Layer(tar::Builder::new(Vec::new()))
    }
    fn entry(&mut self, kind: tar::EntryType, name: &str, link: &str, data: &[u8]) -> &mut Self {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_size(data.len() as u64);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }
    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.entry(tar::EntryType::Regular, name, "", data)
    }
    fn dir(&mut self, name: &str) -> &mut Self {
        self.entry(tar::EntryType::Directory, name, "", b"")
    }
    fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(tar::EntryType::Symlink, name, target, b"")
    }
    fn finish(&mut self) -> Vec<u8> {
        std::mem::replace(&mut self.0, tar::Builder::new(Vec::new()))
            .into_inner()
            .unwrap()
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Oci,
    Docker,
}

fn client() -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    })
}

/// Pushes an image (each layer as given: plain, gzip...) as `repo:tag` (or untagged when
/// `tag` is None) and returns (manifest digest, manifest bytes, image ID).
async fn push(
    repo: &str,
    tag: Option<&str>,
    layers: &[(Vec<u8>, Vec<u8>)],
    kind: Kind,
    arch: &str,
) -> (String, Vec<u8>, String) {
    let reg = registry();
    let c = client();
    let any = Reference::with_tag(reg.open.clone(), repo.into(), "x".into());
    let diff_ids: Vec<String> = layers.iter().map(|(tar, _)| digest(tar)).collect();
    let config = serde_json::to_vec(&json!({
        "architecture": arch, "os": "linux", "created": "2024-01-02T03:04:05Z",
        "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "test"}],
    }))
    .unwrap();
    let (m_type, c_type, l_type) = match kind {
        Kind::Oci => (
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.config.v1+json",
            "application/vnd.oci.image.layer.v1.tar+gzip",
        ),
        Kind::Docker => (
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.container.image.v1+json",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
        ),
    };
    c.push_blob(&any, config.clone(), &digest(&config))
        .await
        .unwrap();
    let mut descs = Vec::new();
    for (_, blob) in layers {
        c.push_blob(&any, blob.clone(), &digest(blob))
            .await
            .unwrap();
        descs.push(json!({"mediaType": l_type, "digest": digest(blob), "size": blob.len()}));
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": m_type,
        "config": {"mediaType": c_type, "digest": digest(&config), "size": config.len()},
        "layers": descs,
    }))
    .unwrap();
    let mdigest = digest(&manifest);
    let target = match tag {
        Some(t) => Reference::with_tag(reg.open.clone(), repo.into(), t.into()),
        None => Reference::with_digest(reg.open.clone(), repo.into(), mdigest.clone()),
    };
    c.push_manifest_raw(
        &target,
        manifest.clone(),
        http::HeaderValue::from_static(m_type),
    )
    .await
    .unwrap();
    (mdigest, manifest, digest(&config))
}

/// A one-layer image whose file `/id` says `content`, gzip-compressed.
fn simple_layer(content: &str) -> (Vec<u8>, Vec<u8>) {
    let tar = Layer::new().file("id", content.as_bytes()).finish();
    let gz = gzip(&tar);
    (tar, gz)
}

// ---- pulling ----

/// Pulls here go the way a tenant's do, through the address policy, with the loopback
/// registries allowed as an operator would allow them (`--allow-fetch 127.0.0.1/32`).
fn tenant() -> Reach {
    Reach::Tenant(AddressPolicy::new(vec!["127.0.0.1/32".parse().unwrap()]))
}

struct Node {
    _dir: tempfile::TempDir,
    puller: Puller,
}

fn node() -> Node {
    let dir = tempfile::Builder::new()
        .prefix("hyimg")
        .tempdir_in("/tmp")
        .unwrap();
    let store = Arc::new(ImageStore::open(dir.path().join("images")).unwrap());
    Node {
        puller: Puller::new(store),
        _dir: dir,
    }
}

async fn pull_with(
    n: &Node,
    image: &str,
    creds: Option<&Credentials>,
) -> Result<(ImageInfo, Vec<Progress>), PullError> {
    let resolved = n
        .puller
        .resolve(parse_reference(image, None)?, creds, &tenant())
        .await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let info = n
        .puller
        .fetch(&resolved, vec![image.to_string()], &tx)
        .await;
    drop(tx);
    let mut events = Vec::new();
    while let Some(p) = rx.recv().await {
        events.push(p);
    }
    Ok((info?, events))
}

async fn pull(n: &Node, image: &str) -> Result<(ImageInfo, Vec<Progress>), PullError> {
    pull_with(n, image, None).await
}

/// `debugfs -R "cat PATH"` on the image's disk: the file's content, or None if absent.
fn disk_file(n: &Node, id: &str, path: &str) -> Option<String> {
    debugfs(n, id, &format!("cat {path}"))
}

fn debugfs(n: &Node, id: &str, request: &str) -> Option<String> {
    let disk = n.puller.store().ensure_disk(id).unwrap();
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(request)
        .arg(&disk)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("not found") {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn statuses(events: &[Progress]) -> Vec<String> {
    events
        .iter()
        .map(|p| format!("{}: {}", p.id.clone().unwrap_or_default(), p.status))
        .collect()
}

#[tokio::test]
async fn single_layer_oci_then_up_to_date() {
    let reg = registry();
    let (tar, gz) = simple_layer("single");
    let (_, _, id) = push(
        "t/single",
        Some("v1"),
        &[(tar, gz.clone())],
        Kind::Oci,
        "amd64",
    )
    .await;
    let n = node();
    let image = format!("{}/t/single:v1", reg.open);
    let (info, events) = pull(&n, &image).await.unwrap();
    assert_eq!(info.id, id);
    let s = statuses(&events);
    let short = &digest(&gz)[7..19];
    assert_eq!(s[0], "v1: Pulling from t/single");
    for want in [
        "Pulling fs layer",
        "Downloading",
        "Verifying Checksum",
        "Download complete",
        "Pull complete",
    ] {
        assert!(
            s.contains(&format!("{short}: {want}")),
            "{want} missing in {s:?}"
        );
    }
    let dl = events.iter().find(|p| p.status == "Downloading").unwrap();
    assert_eq!(dl.total, Some(gz.len() as u64));
    assert_eq!(disk_file(&n, &info.id, "/id").as_deref(), Some("single"));

    // Again: present, nothing fetched.
    let r = n
        .puller
        .resolve(parse_reference(&image, None).unwrap(), None, &tenant())
        .await
        .unwrap();
    assert!(r.present);
}

#[tokio::test]
async fn multi_layer_docker_manifest_with_whiteouts_and_plain_layer() {
    let reg = registry();
    let l1 = Layer::new()
        .dir("etc")
        .file("etc/a", b"a1")
        .file("etc/gone", b"x")
        .dir("data")
        .file("data/old", b"old")
        .symlink("etc/link", "a")
        .finish();
    let l2 = Layer::new()
        .file("etc/a", b"a2")
        .file("etc/.wh.gone", b"")
        .dir("data")
        .file("data/.wh..wh..opq", b"")
        .file("data/new", b"new")
        .finish();
    // The second layer travels uncompressed.
    let layers = [(l1.clone(), gzip(&l1)), (l2.clone(), l2.clone())];
    let (mdigest, _, id) = push("t/multi", Some("latest"), &layers, Kind::Docker, "amd64").await;
    let n = node();
    let (info, _) = pull(&n, &format!("{}/t/multi", reg.open)).await.unwrap();
    assert_eq!(info.id, id);
    assert_eq!(info.layers, vec![digest(&l1), digest(&l2)]);
    assert_eq!(disk_file(&n, &id, "/etc/a").as_deref(), Some("a2"));
    assert_eq!(disk_file(&n, &id, "/etc/gone"), None);
    assert_eq!(disk_file(&n, &id, "/data/old"), None);
    assert_eq!(disk_file(&n, &id, "/data/new").as_deref(), Some("new"));
    let link = debugfs(&n, &id, "stat /etc/link").unwrap();
    assert!(link.contains("Fast link dest: \"a\""), "{link}");

    // A digest pin resolves to the same image.
    let (pinned, _) = pull(&n, &format!("{}/t/multi@{mdigest}", reg.open))
        .await
        .unwrap();
    assert_eq!(pinned.id, id);
}

#[tokio::test]
async fn index_picks_linux_amd64() {
    let reg = registry();
    let (ta, ga) = simple_layer("amd64");
    let (tb, gb) = simple_layer("arm64");
    let (da, ma, ida) = push("t/multiarch", None, &[(ta, ga)], Kind::Oci, "amd64").await;
    let (db, mb, _) = push("t/multiarch", None, &[(tb, gb)], Kind::Oci, "arm64").await;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": db, "size": mb.len(),
             "platform": {"architecture": "arm64", "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": da, "size": ma.len(),
             "platform": {"architecture": "amd64", "os": "linux"}},
        ],
    }))
    .unwrap();
    client()
        .push_manifest_raw(
            &Reference::with_tag(reg.open.clone(), "t/multiarch".into(), "latest".into()),
            index.clone(),
            http::HeaderValue::from_static("application/vnd.oci.image.index.v1+json"),
        )
        .await
        .unwrap();
    let n = node();
    let image = format!("{}/t/multiarch", reg.open);
    let r = n
        .puller
        .resolve(parse_reference(&image, None).unwrap(), None, &tenant())
        .await
        .unwrap();
    // The digest reported is the index's, as docker reports it.
    assert_eq!(r.manifest_digest, digest(&index));
    let (info, _) = pull(&n, &image).await.unwrap();
    assert_eq!(info.id, ida);
    assert_eq!(disk_file(&n, &ida, "/id").as_deref(), Some("amd64"));
}

#[tokio::test]
async fn private_repo_needs_the_right_credentials() {
    let reg = registry();
    let (tar, gz) = simple_layer("private");
    let (_, _, id) = push("t/private", Some("v1"), &[(tar, gz)], Kind::Oci, "amd64").await;
    let image = format!("{}/t/private:v1", reg.private);
    let n = node();
    let anon = pull(&n, &image).await.unwrap_err();
    assert!(matches!(anon, PullError::Unauthorized(_)), "{anon:?}");
    let wrong = Credentials {
        username: USER.into(),
        password: "nope".into(),
    };
    let e = pull_with(&n, &image, Some(&wrong)).await.unwrap_err();
    assert!(matches!(e, PullError::Unauthorized(_)), "{e:?}");
    assert!(
        n.puller.store().list().is_empty(),
        "nothing cached on refusal"
    );
    let right = Credentials {
        username: USER.into(),
        password: PASSWORD.into(),
    };
    let (info, _) = pull_with(&n, &image, Some(&right)).await.unwrap();
    assert_eq!(info.id, id);
    assert_eq!(disk_file(&n, &id, "/id").as_deref(), Some("private"));
    // The image being in the store does not let another caller in without credentials.
    let again = pull(&n, &image).await.unwrap_err();
    assert!(matches!(again, PullError::Unauthorized(_)), "{again:?}");
}

#[tokio::test]
async fn unknown_tag_and_repo_are_not_found() {
    let reg = registry();
    let (tar, gz) = simple_layer("known");
    push("t/known", Some("v1"), &[(tar, gz)], Kind::Oci, "amd64").await;
    let n = node();
    for (i, image) in [
        format!("{}/t/known:nope", reg.open),
        format!("{}/t/never-pushed:v1", reg.open),
    ]
    .iter()
    .enumerate()
    {
        let e = pull(&n, image).await.unwrap_err();
        match e {
            PullError::NotFound(m) => assert!(m.contains("unknown"), "test[{i}]: {m}"),
            other => panic!("test[{i}]: {other:?}"),
        }
    }
}

#[tokio::test]
async fn tampered_blob_is_refused_and_nothing_stored() {
    let reg = registry();
    let (tar, gz) = simple_layer("tampered-original");
    push(
        "t/tampered",
        Some("v1"),
        &[(tar, gz.clone())],
        Kind::Oci,
        "amd64",
    )
    .await;
    // Swap the blob's bytes in the registry's storage (same length).
    let hex = &digest(&gz)[7..];
    let data = reg.storage.join(format!(
        "docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ));
    let mut bytes = std::fs::read(&data).unwrap();
    let last = bytes.len() - 9;
    bytes[last] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();
    let n = node();
    let e = pull(&n, &format!("{}/t/tampered:v1", reg.open))
        .await
        .unwrap_err();
    let msg = format!("{e}");
    assert!(msg.contains("digest") || msg.contains("Digest"), "{msg}");
    assert!(n.puller.store().list().is_empty());
    let layers = std::fs::read_dir(n.puller.store().root().join("layers"))
        .unwrap()
        .count();
    assert_eq!(layers, 0, "no layer stored");
    let tmp = std::fs::read_dir(n.puller.store().root().join("tmp"))
        .unwrap()
        .count();
    assert_eq!(tmp, 0, "no temp file left");
}

#[tokio::test]
async fn path_escape_is_refused() {
    let reg = registry();
    for (i, name) in ["../escape", "a/../../escape"].iter().enumerate() {
        let tar = Layer::new().file("ok", b"ok").file(name, b"evil").finish();
        let repo = format!("t/escape{i}");
        push(
            &repo,
            Some("v1"),
            &[(tar.clone(), gzip(&tar))],
            Kind::Oci,
            "amd64",
        )
        .await;
        let n = node();
        let e = pull(&n, &format!("{}/{repo}:v1", reg.open))
            .await
            .unwrap_err();
        assert!(format!("{e}").contains("escapes"), "test[{i}]: {e}");
        assert!(n.puller.store().list().is_empty(), "test[{i}]");
        assert!(!n.puller.store().root().join("escape").exists());
        assert!(!Path::new("/tmp/escape").exists());
    }
}

#[tokio::test]
async fn concurrent_pulls_fetch_a_shared_layer_once() {
    let reg = registry();
    let base = Layer::new().file("base", &vec![7u8; 3 << 20]).finish();
    let base_gz = (base.clone(), gzip(&base));
    let (ta, ga) = simple_layer("top-a");
    let (tb, gb) = simple_layer("top-b");
    push(
        "t/share-a",
        Some("v1"),
        &[base_gz.clone(), (ta, ga)],
        Kind::Oci,
        "amd64",
    )
    .await;
    push(
        "t/share-b",
        Some("v1"),
        &[base_gz.clone(), (tb, gb)],
        Kind::Docker,
        "amd64",
    )
    .await;
    let n = node();
    let (ia, ib) = (
        format!("{}/t/share-a:v1", reg.open),
        format!("{}/t/share-b:v1", reg.open),
    );
    let (a, b) = tokio::join!(pull(&n, &ia), pull(&n, &ib));
    let (a, b) = (a.unwrap(), b.unwrap());
    let short = &digest(&base_gz.1)[7..19];
    let verified =
        a.1.iter()
            .chain(&b.1)
            .filter(|p| p.id.as_deref() == Some(short) && p.status == "Verifying Checksum")
            .count();
    assert_eq!(
        verified, 1,
        "the shared layer was downloaded {verified} times"
    );
    assert_eq!(disk_file(&n, &b.0.id, "/id").as_deref(), Some("top-b"));
    // A third image with the layer: "Already exists".
    let (tc, gc) = simple_layer("top-c");
    push(
        "t/share-c",
        Some("v1"),
        &[base_gz, (tc, gc)],
        Kind::Oci,
        "amd64",
    )
    .await;
    let (_, events) = pull(&n, &format!("{}/t/share-c:v1", reg.open))
        .await
        .unwrap();
    assert!(statuses(&events).contains(&format!("{short}: Already exists")));
}

#[tokio::test]
async fn token_auth_private_repo() {
    let reg = registry();
    let (tar, gz) = simple_layer("behind-a-token");
    let (_, _, id) = push("t/tok", Some("v1"), &[(tar, gz)], Kind::Docker, "amd64").await;
    let image = format!("{}/t/tok:v1", reg.token);
    let n = node();
    let creds = |user: &str, password: &str| Credentials {
        username: user.into(),
        password: password.into(),
    };
    let before = reg.tokens.requests().len();

    // Anonymous: the token server grants nothing, the registry refuses.
    let anon = pull(&n, &image).await.unwrap_err();
    assert!(matches!(anon, PullError::Unauthorized(_)), "{anon:?}");
    // Wrong password: the token server refuses.
    let wrong = pull_with(&n, &image, Some(&creds(USER, "nope")))
        .await
        .unwrap_err();
    assert!(matches!(wrong, PullError::Unauthorized(_)), "{wrong:?}");
    // A token the registry cannot verify (signed by a key outside its bundle).
    let forged = pull_with(&n, &image, Some(&creds(FORGER, "x")))
        .await
        .unwrap_err();
    assert!(matches!(forged, PullError::Unauthorized(_)), "{forged:?}");
    assert!(
        n.puller.store().list().is_empty(),
        "nothing cached on refusal"
    );

    let (info, _) = pull_with(&n, &image, Some(&creds(USER, PASSWORD)))
        .await
        .unwrap();
    assert_eq!(info.id, id);
    assert_eq!(disk_file(&n, &id, "/id").as_deref(), Some("behind-a-token"));

    // What the token server was asked: the challenge's service and the pull scope, with the
    // user's basic credentials when there are some.
    let seen: Vec<TokenRequest> = reg.tokens.requests()[before..]
        .iter()
        .filter(|r| {
            r.query
                .iter()
                .any(|(k, v)| k == "scope" && v == "repository:t/tok:pull")
        })
        .cloned()
        .collect();
    let users: Vec<(Option<&str>, u16)> =
        seen.iter().map(|r| (r.user.as_deref(), r.status)).collect();
    for want in [
        (None, 200),
        (Some(USER), 401),
        (Some(FORGER), 200),
        (Some(USER), 200),
    ] {
        assert!(users.contains(&want), "{want:?} not in {users:?}");
    }
    assert!(seen.iter().all(|r| r
        .query
        .iter()
        .any(|(k, v)| k == "service" && v == TOKEN_SERVICE)));
}

#[tokio::test]
async fn login_checks_credentials() {
    let reg = registry();
    let n = node();
    let creds = |user: &str, password: &str| Credentials {
        username: user.into(),
        password: password.into(),
    };
    let cases = [
        // (server, credentials, accepted)
        (reg.token.clone(), creds(USER, PASSWORD), true),
        (reg.token.clone(), creds(USER, "nope"), false),
        (reg.token.clone(), creds(FORGER, "x"), false),
        (
            format!("http://{}/", reg.token),
            creds(USER, PASSWORD),
            true,
        ),
        (reg.private.clone(), creds(USER, PASSWORD), true),
        (reg.private.clone(), creds(USER, "nope"), false),
        (reg.private.clone(), creds("bob", PASSWORD), false),
        // A registry without auth takes anything, as with docker login.
        (reg.open.clone(), creds("anyone", "x"), true),
    ];
    for (i, (server, c, ok)) in cases.iter().enumerate() {
        let got = n.puller.login(server, c, &tenant()).await;
        match (got, ok) {
            (Ok(()), true) => {}
            (Err(PullError::Unauthorized(_)), false) => {}
            (got, _) => panic!("test[{i}] {server} {c:?}: {got:?}"),
        }
    }
    // Nothing listening: not an authorization failure.
    let dead = format!("127.0.0.1:{}", free_port());
    let e = n
        .puller
        .login(&dead, &creds(USER, PASSWORD), &tenant())
        .await
        .unwrap_err();
    assert!(matches!(e, PullError::Http { .. }), "{e:?}");

    // Without the operator's allowance a tenant reaches none of it; the operator does.
    let nowhere = Reach::Tenant(AddressPolicy::default());
    let e = n
        .puller
        .login(&reg.private, &creds(USER, PASSWORD), &nowhere)
        .await
        .unwrap_err();
    assert!(matches!(e, PullError::Refused(_)), "{e:?}");
    let e = n
        .puller
        .resolve(
            parse_reference(&format!("{}/t/any:v1", reg.open), None).unwrap(),
            None,
            &nowhere,
        )
        .await
        .err()
        .expect("refused");
    assert!(
        e.to_string().contains("refused: address 127.0.0.1 (loopback) is not allowed; the operator can allow it with --allow-fetch 127.0.0.1/32"),
        "{e}"
    );
    n.puller
        .login(&reg.private, &creds(USER, PASSWORD), &Reach::Operator)
        .await
        .unwrap();
}

// ---- pushing ----

async fn push_as(
    n: &Node,
    repository: &str,
    tag: &str,
    id: &str,
    creds: Option<&Credentials>,
) -> Result<(image::push::Pushed, Vec<Progress>), PullError> {
    let session = n.puller.push_session(repository, creds, &tenant()).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let pushed = n.puller.push(&session, tag, id, &tx).await;
    drop(tx);
    let mut events = Vec::new();
    while let Some(p) = rx.recv().await {
        events.push(p);
    }
    Ok((pushed?, events))
}

#[tokio::test]
async fn push_with_a_token_then_pull_back_elsewhere() {
    let reg = registry();
    let l1 = simple_layer("pushed-bottom");
    let l2 = Layer::new().file("top", b"pushed-top").finish();
    let (_, _, id) = push(
        "t/push-src",
        Some("v1"),
        &[l1, (l2.clone(), l2)],
        Kind::Oci,
        "amd64",
    )
    .await;
    let a = node();
    let (info, _) = pull(&a, &format!("{}/t/push-src:v1", reg.open))
        .await
        .unwrap();
    assert_eq!(info.id, id);
    let repository = format!("{}/t/pushed", reg.token);
    let creds = Credentials {
        username: USER.into(),
        password: PASSWORD.into(),
    };

    // Anonymous: the token server grants nothing, the registry refuses the upload.
    let e = push_as(&a, &repository, "v1", &id, None).await.unwrap_err();
    assert!(
        matches!(&e, PullError::Unauthorized(m) if m.contains("push access denied")),
        "{e:?}"
    );
    // A token the registry cannot verify.
    let forged = Credentials {
        username: FORGER.into(),
        password: "x".into(),
    };
    let e = push_as(&a, &repository, "v1", &id, Some(&forged))
        .await
        .unwrap_err();
    assert!(matches!(e, PullError::Unauthorized(_)), "{e:?}");

    let before = reg.tokens.requests().len();
    let (pushed, events) = push_as(&a, &repository, "v1", &id, Some(&creds))
        .await
        .unwrap();
    let s = statuses(&events);
    assert_eq!(
        s.iter().filter(|s| s.ends_with(": Pushed")).count(),
        2,
        "{s:?}"
    );
    // Each layer's gzip blob is remembered, to be looked for before compressing it again.
    let remembered = std::fs::read_dir(a._dir.path().join("images/pushed"))
        .unwrap()
        .count();
    assert_eq!(remembered, 2);
    assert!(events
        .iter()
        .any(|p| p.status == "Pushing" && p.total.is_some()));
    assert!(
        reg.tokens.requests()[before..].iter().any(|r| r
            .query
            .iter()
            .any(|(k, v)| k == "scope" && v == "repository:t/pushed:pull,push")),
        "no push scope asked for"
    );

    // A fresh node pulls it back: the same image, the same files.
    let b = node();
    let (got, _) = pull_with(&b, &format!("{repository}:v1"), Some(&creds))
        .await
        .unwrap();
    assert_eq!(got.id, id);
    assert_eq!(got.layers, info.layers);
    assert_eq!(disk_file(&b, &id, "/id").as_deref(), Some("pushed-bottom"));
    assert_eq!(disk_file(&b, &id, "/top").as_deref(), Some("pushed-top"));
    let r = b
        .puller
        .resolve(
            parse_reference(&format!("{repository}:v1"), None).unwrap(),
            Some(&creds),
            &tenant(),
        )
        .await
        .unwrap();
    assert_eq!(r.manifest_digest, pushed.digest);

    // Again, under another tag: every blob is there already.
    let (_, events) = push_as(&a, &repository, "v2", &id, Some(&creds))
        .await
        .unwrap();
    let s = statuses(&events);
    assert_eq!(
        s.iter()
            .filter(|s| s.ends_with(": Layer already exists"))
            .count(),
        2,
        "{s:?}"
    );
    assert!(!s.iter().any(|s| s.ends_with(": Pushed")), "{s:?}");
}
