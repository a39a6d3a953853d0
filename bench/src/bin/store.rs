//! The store's cost with etcd against redb (issue 18), in the same run: a quota-like
//! compare-and-swap (get, then a guarded put) and a `get` straight on each backend, then the
//! API's `ps` (1000 containers for the tenant) and `hyper run --rm busybox true` on a hyperd
//! over each. Prints ratios (etcd / redb), never pass/fail. Run as root after scripts/build;
//! it works in a network namespace of its own and starts its own etcd on loopback there.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use node::model::Container;
use store::etcd_server::EtcdServer;
use store::{Compare, Op, Store, Txn};

const TXN_ROUNDS: usize = 300;
const PS_ROUNDS: usize = 30;
const RUN_ROUNDS: usize = 3;
const CONTAINERS: usize = 1000;

fn main() -> anyhow::Result<()> {
    // Loopback of our own: etcd and the hyperds (their guard rules too) stay in here.
    e2e::enter_private_network_namespace();
    let etcd = EtcdServer::try_start().map_err(anyhow::Error::msg)?;
    let scratch = PathBuf::from(format!("/tmp/hbs{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let result = run(&etcd, &scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn run(etcd: &EtcdServer, scratch: &Path) -> anyhow::Result<()> {
    let url = format!("etcd://{}/bench", etcd.endpoint());
    {
        let redb: Arc<dyn Store> = Arc::new(store::RedbStore::open(&scratch.join("direct.redb"))?);
        let etcd: Arc<dyn Store> = Arc::new(store::EtcdStore::open(&url)?);
        println!("== the store itself ({TXN_ROUNDS} rounds, medians) ==");
        let (r_cas, r_get) = store_rounds(&*redb)?;
        let (e_cas, e_get) = store_rounds(&*etcd)?;
        row("quota CAS (get + guarded put)", r_cas, e_cas);
        row("get", r_get, e_get);
    }

    let redb_root = scratch.join("r");
    std::fs::create_dir_all(&redb_root)?;
    fill(&store::RedbStore::open(&redb_root.join("store.redb"))?)?;
    let etcd_url = format!("etcd://{}/hyper", etcd.endpoint());
    fill(&store::EtcdStore::open(&etcd_url)?)?;
    let etcd_root = scratch.join("e");
    std::fs::create_dir_all(&etcd_root)?;

    let mut ps = Vec::new();
    let mut runs = Vec::new();
    for (root, store) in [(&redb_root, "redb"), (&etcd_root, etcd_url.as_str())] {
        let d = Hyperd::start(root, store)?;
        ps.push(d.ps()?);
        runs.push(d.runs()?);
    }
    println!("\n== API, hyperd on each store ({CONTAINERS} containers for the tenant) ==");
    row(&format!("ps ({PS_ROUNDS} runs)"), ps[0], ps[1]);
    row(
        &format!("run --rm busybox true ({RUN_ROUNDS} runs, cold boots)"),
        runs[0],
        runs[1],
    );
    Ok(())
}

fn row(what: &str, redb: f64, etcd: f64) {
    println!(
        "{what:<45} redb {:>9.3} ms   etcd {:>9.3} ms   etcd/redb {:>6.1}x",
        redb * 1e3,
        etcd * 1e3,
        etcd / redb
    );
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Medians of the quota pattern (node/src/quota.rs) and of a plain get.
fn store_rounds(s: &dyn Store) -> anyhow::Result<(f64, f64)> {
    let key = "/counts/bench/containers";
    let (mut cas, mut get) = (Vec::new(), Vec::new());
    for _ in 0..TXN_ROUNDS {
        let t = Instant::now();
        let current = s.get(key)?;
        let n: u64 = current
            .as_ref()
            .and_then(|kv| std::str::from_utf8(&kv.value).ok()?.parse().ok())
            .unwrap_or(0);
        let guard = match &current {
            Some(kv) => Compare::ModRevision(key.into(), kv.mod_revision),
            None => Compare::Absent(key.into()),
        };
        let txn = Txn::new()
            .when(guard)
            .then(Op::Put(key.into(), (n + 1).to_string().into_bytes()));
        if !s.txn(txn)?.succeeded {
            bail!("nobody else writes here: the CAS must hold");
        }
        cas.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        s.get(key)?;
        get.push(t.elapsed().as_secs_f64());
    }
    Ok((median(cas), median(get)))
}

fn record(n: usize) -> Container {
    bench::exited_container(format!("{n:0>64x}"), "default", format!("c{n}"))
}

/// The tenant's containers, as hyperd stores them; 50 a transaction (etcd's default limit is
/// 128 ops).
fn fill(store: &dyn Store) -> anyhow::Result<()> {
    for chunk in (0..CONTAINERS).collect::<Vec<_>>().chunks(50) {
        let mut txn = Txn::new();
        for n in chunk {
            let c = record(*n);
            txn = txn
                .then(Op::Put(
                    format!("/names/default/{}", c.name),
                    c.id.clone().into_bytes(),
                ))
                .then(Op::Put(
                    format!("/containers/default/{}", c.id),
                    serde_json::to_vec(&c)?,
                ));
        }
        store.txn(txn)?;
    }
    Ok(())
}

struct Hyperd {
    child: Child,
    sock: PathBuf,
    root: PathBuf,
}

impl Drop for Hyperd {
    fn drop(&mut self) {
        // SAFETY: kill(2) of our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Hyperd {
    fn start(root: &Path, store: &str) -> anyhow::Result<Hyperd> {
        let kernel = e2e::kernel_dir();
        let k = root.join("kernel");
        std::fs::create_dir_all(&k)?;
        for f in ["vmlinuz", "modules", "version"] {
            std::os::unix::fs::symlink(kernel.join(f).canonicalize()?, k.join(f))?;
        }
        let sock = root.join("api.sock");
        let child = Command::new(e2e::hyperd_bin())
            .arg("--data-root")
            .arg(root)
            .args(["--store", store])
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .arg("--agent")
            .arg(e2e::agent_bin())
            .arg("--client-config-dir")
            .arg(root.join("client"))
            // Cold boots, no pool: nothing in the background takes the CPU the timings need.
            .args(["--templates", "off", "--standby-vms", "0"])
            // A bench host is not a production node: a small reserve, so a tight disk still runs.
            .args(["--disk-reserve", "1G"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(root.join("hyperd.log"))?)
            .spawn()
            .context("start hyperd (build first: scripts/build)")?;
        let d = Hyperd {
            child,
            sock,
            root: root.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while get(&d.sock, "/_ping").is_err() {
            if Instant::now() > deadline {
                bail!("hyperd did not come up: {}", d.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        d.hyper(&["load", "-i", e2e::busybox_tar().to_str().unwrap()])?;
        Ok(d)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("hyperd.log")).unwrap_or_default()
    }

    fn hyper(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(e2e::hyper_bin())
            .arg("-H")
            .arg(format!("unix://{}", self.sock.display()))
            .args(args)
            .env("HYPER_CONFIG", self.root.join("noconfig"))
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!(
                "hyper {}: {}\n{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn ps(&self) -> anyhow::Result<f64> {
        let mut times = Vec::new();
        for _ in 0..PS_ROUNDS {
            let t = Instant::now();
            let body = get(&self.sock, "/v1.44/containers/json?all=1")?;
            times.push(t.elapsed().as_secs_f64());
            let listed: serde_json::Value = serde_json::from_slice(&body).context("ps body")?;
            let count = listed.as_array().map_or(0, Vec::len);
            if count != CONTAINERS {
                bail!("ps listed {count} containers, want {CONTAINERS}");
            }
        }
        Ok(median(times))
    }

    fn runs(&self) -> anyhow::Result<f64> {
        self.hyper(&["run", "--rm", "busybox", "true"])?; // warm-up: the image's disk
        let mut times = Vec::new();
        for _ in 0..RUN_ROUNDS {
            let t = Instant::now();
            self.hyper(&["run", "--rm", "busybox", "true"])?;
            times.push(t.elapsed().as_secs_f64());
        }
        Ok(median(times))
    }
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
    Ok(raw[split + 4..].to_vec())
}
