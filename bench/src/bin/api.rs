//! API costs of accounts: what a HYPER-HMAC-SHA256 check costs per request beside the floor of
//! one HMAC-SHA256 over the same canonical request, and how long `ps` takes for a tenant with
//! 1000 containers while another tenant has 10000, beside `/_ping` on the same socket.
//! Prints ratios, never pass/fail.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hmac::Mac;
use http::{HeaderMap, HeaderValue, Method, Uri};
use node::model::Container;
use store::{Op, Store, Txn};

const SIGNATURE_ROUNDS: u32 = 20_000;
const PS_ROUNDS: usize = 30;

fn main() -> anyhow::Result<()> {
    signatures();
    ps_latency()
}

fn signatures() {
    let creds = auth::Credentials {
        access_key: "AK".into(),
        secret_key: "SK".repeat(20),
        region: "us-west-1".into(),
    };
    let (method, uri): (Method, Uri) =
        (Method::GET, "/v1.44/containers/json?all=1".parse().unwrap());
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("127.0.0.1:6443"));
    let now = chrono::Utc::now();
    auth::sign(&creds, &method, &uri, &mut headers, b"", now);
    let started = Instant::now();
    for _ in 0..SIGNATURE_ROUNDS {
        let who = auth::verify(&method, &uri, &headers, b"", now, |_| {
            Some(creds.secret_key.clone())
        });
        assert!(who.is_ok());
    }
    let verify = started.elapsed().as_secs_f64() / f64::from(SIGNATURE_ROUNDS);
    // The floor: one HMAC-SHA256 over a canonical request of the same size.
    let canonical = format!("GET\nv1.44/containers/json\nall=1\n{:?}\n", headers);
    let started = Instant::now();
    for _ in 0..SIGNATURE_ROUNDS {
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(creds.secret_key.as_bytes()).unwrap();
        mac.update(canonical.as_bytes());
        std::hint::black_box(mac.finalize());
    }
    let floor = started.elapsed().as_secs_f64() / f64::from(SIGNATURE_ROUNDS);
    println!("== signature verification ({SIGNATURE_ROUNDS} requests) ==");
    println!(
        "HYPER-HMAC-SHA256 verify             {:>9.2} us/request",
        verify * 1e6
    );
    println!(
        "floor: one HMAC-SHA256 of the request {:>8.2} us/request",
        floor * 1e6
    );
    println!(
        "ratio                                 {:>8.1}x  (SigV4 derives 4 keys and hashes twice)",
        verify / floor
    );
}

fn record(tenant: &str, n: usize) -> Container {
    let id = format!("{:0>64}", format!("{n:x}{}", tenant.len()));
    bench::exited_container(id, tenant, format!("{tenant}-{n}"))
}

fn fill_store(path: &Path) -> anyhow::Result<()> {
    let store = store::RedbStore::open(path)?;
    for (tenant, count) in [("default", 1000), ("other", 10_000)] {
        for chunk in (0..count).collect::<Vec<_>>().chunks(1000) {
            let mut txn = Txn::new();
            for n in chunk {
                let c = record(tenant, *n);
                txn = txn
                    .then(Op::Put(
                        format!("/names/{tenant}/{}", c.name),
                        c.id.clone().into_bytes(),
                    ))
                    .then(Op::Put(
                        format!("/containers/{tenant}/{}", c.id),
                        serde_json::to_vec(&c)?,
                    ));
            }
            store.txn(txn)?;
        }
    }
    Ok(())
}

/// One HTTP/1.1 GET over the unix socket; returns the body.
fn get(sock: &Path, path: &str) -> anyhow::Result<Vec<u8>> {
    let mut s = UnixStream::connect(sock)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: hyperd\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no HTTP header end")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {head}");
    }
    let body = raw[split + 4..].to_vec();
    // Chunked bodies (axum's JSON is not chunked, but be safe) are not decoded: callers only
    // count and parse JSON arrays.
    Ok(body)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

struct Daemon(Child, PathBuf);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn ps_latency() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?
        .to_path_buf();
    let data = PathBuf::from(format!("/tmp/hba{}", std::process::id()));
    std::fs::create_dir_all(&data)?;
    let kernel = ["/var/lib/hyper/kernel", "/var/cache/hyper-test/kernel"]
        .into_iter()
        .map(PathBuf::from)
        .find(|k| k.join("vmlinuz").is_file())
        .context("no guest kernel: run scripts/setup or scripts/deps first")?;
    std::os::unix::fs::symlink(&kernel, data.join("kernel"))?;
    fill_store(&data.join("store.redb"))?;
    let sock = data.join("api.sock");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let child = Command::new(target.join("debug/hyperd"))
        .arg("--data-root")
        .arg(&data)
        .arg("-H")
        .arg(format!("unix://{}", sock.display()))
        .arg("--agent")
        .arg(target.join("x86_64-unknown-linux-gnu/debug/hyper-agent"))
        .arg("--client-config-dir")
        .arg(data.join("client"))
        // No standby VMs: filling a pool would take the CPU the API's timings need.
        .args(["--standby-vms", "0"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(data.join("hyperd.log"))?)
        .spawn()
        .context("start hyperd (build first: scripts/build)")?;
    let _daemon = Daemon(child, data.clone());
    let deadline = Instant::now() + Duration::from_secs(120);
    while get(&sock, "/_ping").is_err() {
        if Instant::now() > deadline {
            bail!(
                "hyperd did not come up: {}",
                std::fs::read_to_string(data.join("hyperd.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let time = |path: &str| -> anyhow::Result<(f64, Vec<u8>)> {
        let mut times = Vec::new();
        let mut body = Vec::new();
        for _ in 0..PS_ROUNDS {
            let t = Instant::now();
            body = get(&sock, path)?;
            times.push(t.elapsed().as_secs_f64());
        }
        Ok((median(times), body))
    };
    let (ping, _) = time("/_ping")?;
    let (ps, body) = time("/v1.44/containers/json?all=1")?;
    let listed: serde_json::Value = serde_json::from_slice(&body).context("ps body")?;
    let count = listed.as_array().map_or(0, Vec::len);
    println!("\n== ps with 1000 containers for this tenant, 10000 for another ({PS_ROUNDS} runs, medians) ==");
    println!(
        "floor: GET /_ping on the same socket      {:>8.2} ms",
        ping * 1e3
    );
    println!(
        "GET /containers/json?all=1 ({count} listed) {:>8.2} ms",
        ps * 1e3
    );
    println!(
        "ratio                                     {:>8.1}x",
        ps / ping
    );
    if count != 1000 {
        bail!("ps listed {count} containers, want 1000: another tenant's leaked in or some are missing");
    }
    Ok(())
}
