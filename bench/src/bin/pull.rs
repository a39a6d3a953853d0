//! Pull time of a multi-layer image beside `skopeo copy` of the same image from the same local
//! registry, in the same run, and the time to build the image's ext4 disk.
//!
//! ```text
//! cargo run --release -p bench --bin pull -- [--runs N] [--layers L] [--layer-mb M] [--keep]
//! ```
//!
//! 1. Starts Debian's `docker-registry` on 127.0.0.1 (own storage under `/tmp/hbp<pid>`).
//! 2. Generates `L` layers, each a tar of one file of `M` MB of random bytes (xorshift, so
//!    incompressible like real binaries), gzip-compressed (fast level), plus a config and a
//!    Docker v2 manifest, and pushes them as `bench/pull:v1` with oci-client.
//! 3. N rounds, the order of the two alternating (so drift of the machine hits both alike):
//!    - hyper: `image::pull::Puller` (what hyperd runs for `POST /images/create`) into an
//!      empty store: manifest, config, every layer downloaded three at a time, its sha256
//!      checked, decompressed, its diff ID checked and stored;
//!    - skopeo: `skopeo copy docker://127.0.0.1:PORT/bench/pull:v1 dir:/tmp/hbp<pid>/skopeo-N`
//!      (downloads and checks digests; it does not decompress).
//!
//!    Each round starts from nothing on both sides. Then `ImageStore::ensure_disk` builds the
//!    image's ext4 disk from the last hyper store, timed and reported per 100 MB of unpacked
//!    content.
//! 4. Removes what it started: the registry (killed; PDEATHSIG also kills it if the bench dies)
//!    and the temp dir (unless `--keep`), also on SIGINT/SIGTERM/SIGHUP.
//!
//! Prints medians and minimums, and the ratio hyper / skopeo (the aim: ≤ 1) and the disk
//! build time per 100 MB (the aim: < 1 s). Never passes or fails on an absolute time.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bench::{median, min};
use clap::Parser;
use image::pull::{parse_reference, Puller};
use image::ImageStore;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::{Client, Reference};
use serde_json::json;
use sha2::{Digest, Sha256};

const REPO: &str = "bench/pull";
const TAG: &str = "v1";

#[derive(Parser, Debug)]
#[command(about = "Registry pull time of hyper beside skopeo copy, and ext4 disk build time")]
struct Args {
    /// Timed rounds (each: one hyper pull and one skopeo copy)
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Layers in the image
    #[arg(long, default_value_t = 4)]
    layers: usize,
    /// MB of random data per layer
    #[arg(long = "layer-mb", default_value_t = 16)]
    layer_mb: usize,
    /// Keep the temp dir /tmp/hbp<pid>
    #[arg(long)]
    keep: bool,
}

// ---- clean-up: what we started, undone on exit, on error and on a signal ----

struct Started {
    registry: Option<u32>,
    dir: Option<PathBuf>,
    keep: bool,
}

fn started() -> &'static Mutex<Started> {
    static S: OnceLock<Mutex<Started>> = OnceLock::new();
    S.get_or_init(|| {
        Mutex::new(Started {
            registry: None,
            dir: None,
            keep: false,
        })
    })
}

fn cleanup() {
    let mut s = started().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(pid) = s.registry.take() {
        // SAFETY: kill(2) on the registry we spawned; waitpid reaps it (ours, not yet reaped).
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
            libc::waitpid(pid as i32, std::ptr::null_mut(), 0);
        }
    }
    if let Some(dir) = s.dir.take() {
        if s.keep {
            eprintln!("kept {}", dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

// ---- the image ----

/// xorshift64*: fast, incompressible enough for gzip, no dependency.
struct Rng(u64);

impl Rng {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// (uncompressed tar, gzip) of one layer holding `data/layerN.bin` of `mb` MB.
fn make_layer(n: usize, mb: usize, rng: &mut Rng) -> Result<(Vec<u8>, Vec<u8>)> {
    let mut data = vec![0u8; mb << 20];
    rng.fill(&mut data);
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    tar.append_data(&mut h, format!("data/layer{n}.bin"), data.as_slice())?;
    let tar = tar.into_inner()?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar)?;
    Ok((tar, gz.finish()?))
}

fn client() -> Client {
    image::pull::tls_provider();
    Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    })
}

/// Pushes the image; returns its compressed and unpacked sizes.
async fn push(registry: &str, layers: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
    let c = client();
    let target = Reference::with_tag(registry.into(), REPO.into(), TAG.into());
    let diff_ids: Vec<String> = layers.iter().map(|(t, _)| digest(t)).collect();
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "created": "2024-01-02T03:04:05Z",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))?;
    c.push_blob(&target, config.clone(), &digest(&config))
        .await
        .context("pushing the config")?;
    let mut descs = Vec::new();
    for (_, gz) in layers {
        c.push_blob(&target, gz.clone(), &digest(gz))
            .await
            .context("pushing a layer")?;
        descs.push(
            json!({"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                          "digest": digest(gz), "size": gz.len()}),
        );
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": digest(&config), "size": config.len()},
        "layers": descs,
    }))?;
    c.push_manifest_raw(
        &target,
        manifest,
        http::HeaderValue::from_static("application/vnd.docker.distribution.manifest.v2+json"),
    )
    .await
    .context("pushing the manifest")?;
    Ok(())
}

// ---- the registry ----

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn start_registry(dir: &Path) -> Result<String> {
    let addr = format!("127.0.0.1:{}", free_port()?);
    let cfg = format!(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
        dir.join("storage").display()
    );
    let path = dir.join("registry.yml");
    std::fs::write(&path, cfg)?;
    let log = std::fs::File::create(dir.join("registry.log"))?;
    let mut cmd = Command::new("docker-registry");
    cmd.arg("serve")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
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
    let child = cmd
        .spawn()
        .context("docker-registry (apt-get install docker-registry, or scripts/deps)")?;
    started().lock().unwrap().registry = Some(child.id());
    let end = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&addr).is_err() {
        if Instant::now() > end {
            bail!(
                "docker-registry did not listen on {addr}: {}",
                std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(addr)
}

// ---- the measured paths ----

/// One hyper pull into an empty store; returns (seconds, the store, the image ID).
async fn hyper_pull(dir: &Path, image: &str) -> Result<(f64, Arc<ImageStore>, String)> {
    let store = Arc::new(ImageStore::open(dir.to_path_buf())?);
    let puller = Puller::new(store.clone());
    let t = Instant::now();
    let resolved = puller
        .resolve(
            parse_reference(image, None)?,
            None,
            &image::fetch::Reach::Operator,
        )
        .await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let info = puller
        .fetch(&resolved, vec![image.to_string()], &tx)
        .await?;
    let took = t.elapsed().as_secs_f64();
    drop(tx);
    let _ = drain.await;
    Ok((took, store, info.id))
}

fn skopeo_copy(image: &str, dest: &Path) -> Result<f64> {
    let t = Instant::now();
    let out = Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{image}"))
        .arg(format!("dir:{}", dest.display()))
        .output()?;
    let took = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("skopeo copy: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(took)
}

fn fmt(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.3}"))
}

async fn run(args: &Args) -> Result<()> {
    if args.runs == 0 || args.layers == 0 || args.layer_mb == 0 {
        bail!("--runs, --layers and --layer-mb must be at least 1");
    }
    bench::ensure_package(&["skopeo", "--version"], "skopeo")?;
    let dir = PathBuf::from(format!("/tmp/hbp{}", std::process::id()));
    std::fs::create_dir_all(dir.join("storage"))?;
    {
        let mut s = started().lock().unwrap();
        s.dir = Some(dir.clone());
        s.keep = args.keep;
    }
    let registry = start_registry(&dir)?;

    let t = Instant::now();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id()));
    let layers = (0..args.layers)
        .map(|n| make_layer(n, args.layer_mb, &mut rng))
        .collect::<Result<Vec<_>>>()?;
    let compressed: usize = layers.iter().map(|(_, gz)| gz.len()).sum();
    push(&registry, &layers).await?;
    drop(layers);
    println!(
        "image: {} layers x {} MB random, {:.1} MB compressed; generated and pushed in {:.1}s",
        args.layers,
        args.layer_mb,
        compressed as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );

    let image = format!("{registry}/{REPO}:{TAG}");
    let (mut hyper, mut skopeo) = (Vec::new(), Vec::new());
    let mut last = None;
    for i in 0..args.runs {
        let hdir = dir.join(format!("hyper-{i}"));
        let sdir = dir.join(format!("skopeo-{i}"));
        let do_skopeo = || skopeo_copy(&image, &sdir);
        if i % 2 == 0 {
            hyper.push(hyper_pull(&hdir, &image).await?);
            skopeo.push(do_skopeo()?);
        } else {
            skopeo.push(do_skopeo()?);
            hyper.push(hyper_pull(&hdir, &image).await?);
        }
        let (h, s) = (hyper.last().map(|x| x.0), skopeo.last().copied());
        println!("round {i}: hyper {}s  skopeo {}s", fmt(h), fmt(s));
        std::fs::remove_dir_all(&sdir)?;
        // The last round's store stays for the disk build.
        let (_, store, id) = hyper.last().expect("pushed above");
        last = Some((store.clone(), id.clone()));
        if i + 1 < args.runs {
            std::fs::remove_dir_all(&hdir)?;
        }
    }
    let (store, id) = last.expect("at least one round");
    let size = store.get(&id)?.size;
    let t = Instant::now();
    store.ensure_disk(&id)?;
    let disk = t.elapsed().as_secs_f64();

    let h: Vec<f64> = hyper.iter().map(|x| x.0).collect();
    let ratio = |m: Option<f64>, n: Option<f64>| match (m, n) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    };
    println!("\n{:<34} {:>9} {:>9}", "seconds", "median", "min");
    println!(
        "{:<34} {:>9} {:>9}",
        "hyper pull (Puller)",
        fmt(median(&h)),
        fmt(min(&h))
    );
    println!(
        "{:<34} {:>9} {:>9}",
        "skopeo copy docker:// dir:",
        fmt(median(&skopeo)),
        fmt(min(&skopeo))
    );
    println!(
        "{:<34} {:>9} {:>9}",
        "ratio hyper / skopeo (aim <= 1)",
        ratio(median(&h), median(&skopeo)),
        ratio(min(&h), min(&skopeo))
    );
    println!(
        "\next4 disk build (ensure_disk): {disk:.3}s for {:.1} MB unpacked = {:.3}s per 100 MB (aim < 1)",
        size as f64 / 1e6,
        disk / (size as f64 / 1e8)
    );
    println!(
        "\nnote: skopeo's dir: target only stores the compressed blobs; hyper also decompresses \
         each layer and checks its diff ID before storing it."
    );
    Ok(())
}

fn main() {
    let args = Args::parse();
    bench::on_termination_signal(cleanup);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(run(&args));
    cleanup();
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
