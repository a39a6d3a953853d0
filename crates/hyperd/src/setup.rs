//! What hyperd checks and prepares before it serves: QEMU, the guest kernel, the initramfs
//! with the agent, the VM user, the default tenant.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

use crate::DaemonArgs;

pub struct Host {
    pub qemu: PathBuf,
    pub accel: vm::Accel,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub shim: PathBuf,
    /// The per-tenant DNS server.
    pub dns: PathBuf,
    /// The per-tenant service load balancer.
    pub lb: PathBuf,
}

fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Path::new(name).is_file().then(|| PathBuf::from(name));
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

pub fn check_host(data_root: &Path, args: &DaemonArgs) -> anyhow::Result<Host> {
    if data_root.as_os_str().len() > 60 {
        bail!(
            "--data-root {} is too long: unix sockets live below it; use a path under 60 bytes",
            data_root.display()
        );
    }
    let qemu = which(&args.qemu).with_context(|| {
        format!(
            "{} not found: install QEMU (apt-get install qemu-system-x86), or pass --qemu",
            args.qemu
        )
    })?;
    which("qemu-img").context("qemu-img not found: install it (apt-get install qemu-utils)")?;
    which("mkfs.ext4").context("mkfs.ext4 not found: install it (apt-get install e2fsprogs)")?;
    let accel = vm::Accel::resolve(Some(args.accel.as_str()).filter(|a| *a != "auto"))
        .map_err(|e| anyhow::anyhow!("--accel: {e}"))?;

    let kernel_dir = data_root.join("kernel");
    let kernel = args
        .kernel
        .clone()
        .unwrap_or_else(|| kernel_dir.join("vmlinuz"));
    if !kernel.is_file() {
        bail!(
            "no guest kernel at {}: run scripts/setup (it fetches Debian's linux-image-cloud-amd64), or pass --kernel",
            kernel.display()
        );
    }
    let modules = kernel_dir.join("modules");
    if !modules.is_dir() {
        bail!(
            "no guest kernel modules in {}: run scripts/setup",
            modules.display()
        );
    }
    let agent = args.agent.clone().or_else(|| net::our_binary("hyper-agent")).context(
        "hyper-agent not found next to hyperd or in /usr/local/lib/hyper: run scripts/setup, or pass --agent",
    )?;
    let shim = net::our_binary("hyper-shim")
        .context("hyper-shim not found next to hyperd: run scripts/setup")?;
    let dns = net::our_binary("hyper-dns")
        .context("hyper-dns not found next to hyperd: run scripts/setup")?;
    let lb = net::our_binary("hyper-lb")
        .context("hyper-lb not found next to hyperd: run scripts/setup")?;
    // The `net` crate starts it itself (it finds it the same way); missing, it would only
    // show at the first container's start.
    net::our_binary("hyper-nft")
        .context("hyper-nft not found next to hyperd: run scripts/setup")?;
    let initrd = initramfs(&kernel, &agent, &modules, &kernel_dir)?;
    ensure_user(&args.vm_user)?;
    std::fs::create_dir_all(data_root.join("c"))?;
    let tmp = data_root.join("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    Ok(Host {
        qemu,
        accel,
        kernel,
        initrd,
        shim,
        dns,
        lb,
    })
}

/// The initramfs is keyed on the kernel, the agent and the modules, so a change of any of them
/// builds a new one and a stale one is never used (`.cpio` since it is no longer gzip'd, so
/// that a gzip'd one of an earlier build is not taken for it).
fn initramfs(
    kernel: &Path,
    agent: &Path,
    modules: &Path,
    out_dir: &Path,
) -> anyhow::Result<PathBuf> {
    let agent_bytes = std::fs::read(agent).with_context(|| format!("read {}", agent.display()))?;
    vm::check_agent(agent, &agent_bytes)?;
    let mut names: Vec<_> = std::fs::read_dir(modules)?
        .flatten()
        .map(|e| e.path())
        .collect();
    names.sort();
    // The files' digests are memoized: hashing them all again took a start of hyperd ~25 ms.
    let cache = out_dir.join(".hashes");
    let mut hash = Sha256::new();
    for file in [kernel, agent]
        .into_iter()
        .chain(names.iter().map(PathBuf::as_path))
    {
        let digest = vm::digest::file_sha256(&cache, file)
            .with_context(|| format!("hashing {}", file.display()))?;
        hash.update(digest.as_bytes());
    }
    let key = &hex::encode(hash.finalize())[..16];
    let out = out_dir.join(format!("initramfs-{key}.cpio"));
    if !out.is_file() {
        vm::build_initramfs(agent, modules, &out).context("build the guest initramfs")?;
        tracing::info!("built {}", out.display());
    }
    Ok(out)
}

fn ensure_user(name: &str) -> anyhow::Result<()> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    if passwd.lines().any(|l| l.split(':').next() == Some(name)) {
        return Ok(());
    }
    let status = std::process::Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ])
        .status()
        .context("run useradd")?;
    if !status.success() {
        bail!("could not create the user {name} that QEMU runs as");
    }
    Ok(())
}

pub fn node_id(data_root: &Path) -> anyhow::Result<String> {
    let path = data_root.join("node-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        return Ok(id.trim().to_string());
    }
    let bytes: [u8; 16] = std::array::from_fn(|_| rand_byte());
    let id = hex::encode(bytes);
    std::fs::write(&path, &id)?;
    Ok(id)
}

fn rand_byte() -> u8 {
    let mut b = [0u8; 1];
    // SAFETY: getrandom writes at most one byte into a valid one-byte buffer.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), 1, 0) };
    b[0]
}

/// First start: the default tenant, with its keys written where the `hyper` CLI reads them.
/// `ca`: the CA behind the TCP API's TLS, recorded so the CLI checks the server; `None` when
/// TCP is plain HTTP, and then the endpoint is written as `http://` so the CLI speaks it.
pub fn default_tenant(
    accounts: &server::Accounts,
    hosts: &[String],
    config_dir: Option<PathBuf>,
    ca: Option<PathBuf>,
) -> anyhow::Result<()> {
    if accounts.tenant_exists(server::accounts::DEFAULT_TENANT)? {
        return Ok(());
    }
    let (access, secret) = accounts.create_tenant(server::accounts::DEFAULT_TENANT, None)?;
    let Some(endpoint) = hosts.iter().find(|h| h.starts_with("tcp://")) else {
        return Ok(());
    };
    let dir = config_dir
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".hyper")))
        .context("no HOME to write the client config to")?;
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("config.json");
    let mut config: serde_json::Value = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| serde_json::json!({}));
    if !config["clouds"].is_object() {
        config["clouds"] = serde_json::json!({});
    }
    let mut cloud =
        serde_json::json!({"accesskey": access, "secretkey": secret, "region": "us-west-1"});
    let endpoint = match &ca {
        Some(ca) => {
            cloud["tlscacert"] = serde_json::json!(ca);
            endpoint.clone()
        }
        None => endpoint.replacen("tcp://", "http://", 1),
    };
    config["clouds"][endpoint] = cloud;
    std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    tracing::info!(
        "created the default tenant; its keys are in {}",
        path.display()
    );
    Ok(())
}

/// Build the VM template for `spec` (a shim spec without `template_dir`) under `dir` ahead of
/// time, through `hyper-shim --build-template` (the shim owns templates; hyperd only asks).
/// Never fails hyperd: a container whose template is missing builds it or boots cold.
pub async fn build_template(mut spec: serde_json::Value, dir: PathBuf) {
    let t0 = std::time::Instant::now();
    let Some(shim) = net::our_binary("hyper-shim") else {
        return;
    };
    spec["template_dir"] = serde_json::json!(dir);
    let path = dir.join(".ahead.json");
    let res = async {
        std::fs::create_dir_all(&dir)?;
        std::fs::write(&path, serde_json::to_vec_pretty(&spec)?)?;
        let child = tokio::process::Command::new(&shim)
            .arg("--build-template")
            .arg(&path)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        // If hyperd stops first, SIGTERM (not SIGKILL) lets the builder kill its template VM.
        let term = TermOnDrop(child.id());
        let out = child.wait_with_output().await?;
        std::mem::forget(term);
        if !out.status.success() {
            anyhow::bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
    .await;
    match res {
        Ok(t) => tracing::info!(
            "VM template ready: {t} ({:.1}s)",
            t0.elapsed().as_secs_f64()
        ),
        Err(e) => tracing::warn!(
            "VM template not built ahead of time ({e:#}); containers build it on first start \
             or boot cold"
        ),
    }
}

/// Sends SIGTERM to a child process when dropped (the task awaiting it was aborted).
struct TermOnDrop(Option<u32>);

impl Drop for TermOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            // SAFETY: kill with a pid of our own child (not yet reaped: its wait was abandoned).
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
    }
}
