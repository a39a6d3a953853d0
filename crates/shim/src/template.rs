//! VM templates (DESIGN decision 8): boot one VM per (QEMU, kernel, initramfs/agent, command
//! line, accelerator, size), let the agent come up and wait, snapshot it, and start containers by
//! restoring that snapshot behind their own disk.
//!
//! A template is a directory `TEMPLATES/<key>/`:
//! - `ram`: the guest's memory. The template VM maps it shared (`share=on`), so when it is
//!   paused the file *is* the guest RAM; restores map it private (`share=off`): each VM reads the
//!   pages it needs from the common page cache and gets its own copy of a page only when it
//!   writes it.
//! - `state`: the device state (CPU, virtio transports, timers), written by QEMU's migration
//!   with `x-ignore-shared` so the RAM is not copied into it (a few hundred KiB).
//! - `meta.json`: what the template was built from and when.
//!
//! The key is a SHA-256 over the layout version, the accelerator, vCPUs, memory, the full kernel
//! command line (which carries `tsc_early_khz` under TCG), and the content hashes of the QEMU
//! binary, the kernel and the initramfs (which contains the agent). Anything that changes gives
//! a new key, so a stale template is never found, let alone used. Content hashes are memoized in
//! `TEMPLATES/.hashes/` by the file's (device, inode, size, mtime, ctime): ctime cannot be set
//! from userspace, so a rewritten file is always hashed again, and a start does not pay ~0.1 s
//! of hashing 35 MB.
//!
//! QEMU stays confined while it saves and restores: it runs under the same `-sandbox`, `-runas`
//! and `-chroot` as any VM. The state file is opened here and handed over QMP (`getfd`,
//! `SCM_RIGHTS`) for `migrate fd:` / `migrate-incoming fd:`; the RAM file is opened by QEMU at
//! start-up, before it chroots and drops root.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use agent_proto::{Frame, GuestMsg, HostMsg, PROTOCOL_VERSION};
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use vm::{Accel, Boot, Hypervisor, Qemu, Qmp, VmConfig};

use crate::Spec;

/// Bumped whenever the device layout, the VM's CPU model or the template format changes (2: the
/// NIC; 3: the block driver probes a placeholder of the root disk's size at boot; 4: ARAT under
/// TCG; 5: no option ROM, restores without a kernel; 6: the volume slots; 7: the disks pause
/// the VM on ENOSPC, `vm::ON_WRITE_ERROR`; 8: no PIT).
pub const LAYOUT_VERSION: u32 = 8;
/// Guest RAM file inside a template directory.
pub const RAM: &str = "ram";
/// Device state file inside a template directory.
pub const STATE: &str = "state";
/// Description of a template, written last (its presence marks a complete template).
pub const META: &str = "meta.json";
/// The path the template VM's configuration names for its root disk; its slot holds a null
/// device of [`vm::ROOT_DISK_BYTES`] instead.
const DISK: &str = "disk.qcow2";

/// `TEMPLATES/<key>/meta.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub key: String,
    pub created_at: String,
    pub accel: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub cmdline: String,
    pub qemu: PathBuf,
    pub qemu_sha256: String,
    pub kernel: PathBuf,
    pub kernel_sha256: String,
    pub initrd: PathBuf,
    pub initrd_sha256: String,
    /// Seconds from spawning the template VM to its state being on disk.
    pub build_secs: f64,
    /// The RAM file's ctime (`sec.nsec`) once the template was complete (see
    /// `crate::integrity`: a template whose RAM file's ctime differs is never restored).
    #[serde(default)]
    pub ram_ctime: String,
    /// `crate::integrity::digest` of the RAM and the state files once the template was
    /// complete, checked before every restore.
    #[serde(default)]
    pub ram_sha256: String,
    #[serde(default)]
    pub state_sha256: String,
}

use crate::integrity::ctime_of;

/// A complete template ready to restore.
#[derive(Debug, Clone)]
pub struct Template {
    pub dir: PathBuf,
    pub meta: Meta,
}

impl Template {
    pub fn ram(&self) -> PathBuf {
        self.dir.join(RAM)
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join(STATE)
    }
}

/// The VM configuration every VM of `spec` boots with (cold, template or restored), apart from
/// the directory, the root disk and the NIC's tap.
pub fn vm_config(
    spec: &Spec,
    dir: &Path,
    root_disk: &Path,
    nic: Option<vm::NicConfig>,
) -> Result<VmConfig> {
    let accel = Accel::resolve(Some(&spec.accel)).map_err(|e| anyhow!(e))?;
    Ok(VmConfig {
        binary: spec.qemu.clone(),
        accel,
        kernel: spec.kernel.clone(),
        initrd: spec.initrd.clone(),
        kernel_cmdline_extra: spec.kernel_cmdline_extra.clone(),
        vcpus: spec.vcpus,
        memory_mib: spec.memory_mib,
        root_disk: root_disk.to_path_buf(),
        dir: dir.to_path_buf(),
        run_as: (!spec.run_as.is_empty()).then(|| spec.run_as.clone()),
        tsc_khz: None,
        nic,
    })
}

/// SHA-256 of a file's content, memoized under `cache` (see [`vm::digest::file_sha256`]).
fn content_hash(cache: &Path, path: &Path) -> Result<String> {
    vm::digest::file_sha256(cache, path).with_context(|| format!("hashing {}", path.display()))
}

/// The template's identity for `spec`: (key, meta without timings).
pub fn identify(spec: &Spec, templates: &Path) -> Result<Meta> {
    let cfg = vm_config(spec, templates, Path::new("/x"), None)?;
    let cmdline = Qemu::cmdline(&cfg)?;
    let cache = templates.join(".hashes");
    let qemu_sha256 = content_hash(&cache, &spec.qemu)?;
    let kernel_sha256 = content_hash(&cache, &spec.kernel)?;
    let initrd_sha256 = content_hash(&cache, &spec.initrd)?;
    let mut h = Sha256::new();
    for part in [
        format!("layout {LAYOUT_VERSION}"),
        format!("accel {}", cfg.accel),
        format!("vcpus {}", spec.vcpus),
        format!("memory {}", spec.memory_mib),
        format!("cmdline {cmdline}"),
        format!("run_as {}", spec.run_as),
        format!("qemu {qemu_sha256}"),
        format!("kernel {kernel_sha256}"),
        format!("initrd {initrd_sha256}"),
    ] {
        h.update(part.as_bytes());
        h.update(b"\n");
    }
    let key = hex::encode(&h.finalize()[..12]);
    Ok(Meta {
        key,
        created_at: String::new(),
        accel: cfg.accel.to_string(),
        vcpus: spec.vcpus,
        memory_mib: spec.memory_mib,
        cmdline,
        qemu: spec.qemu.clone(),
        qemu_sha256,
        kernel: spec.kernel.clone(),
        kernel_sha256,
        initrd: spec.initrd.clone(),
        initrd_sha256,
        build_secs: 0.0,
        ram_ctime: String::new(),
        ram_sha256: String::new(),
        state_sha256: String::new(),
    })
}

/// The complete template for `spec` if there is one.
pub fn find(spec: &Spec, templates: &Path) -> Result<Option<Template>> {
    let want = identify(spec, templates)?;
    let dir = templates.join(&want.key);
    Ok(load(&dir).filter(|t| t.meta.key == want.key))
}

fn load(dir: &Path) -> Option<Template> {
    let meta: Meta = serde_json::from_slice(&std::fs::read(dir.join(META)).ok()?).ok()?;
    if !dir.join(STATE).is_file() {
        return None;
    }
    let ctime = ctime_of(&dir.join(RAM))?;
    if ctime != meta.ram_ctime {
        eprintln!(
            "template {}: its RAM file changed after it was built (ctime {ctime}, recorded {}); \
             not using it",
            dir.display(),
            meta.ram_ctime
        );
        return None;
    }
    Some(Template {
        dir: dir.to_path_buf(),
        meta,
    })
}

/// Whether `t`'s RAM and state files hold what they held when it was built (their digests: see
/// `crate::integrity`; `load` has checked the RAM file's ctime). Reads the files' data.
fn intact(t: &Template) -> bool {
    let check = |file: PathBuf, want: &str| match crate::integrity::digest(&file) {
        Ok(d) if d == want => true,
        Ok(d) => {
            eprintln!(
                "template {}: {} changed after it was built (sha256 {d}, recorded {want}); not using it",
                t.dir.display(),
                file.display()
            );
            false
        }
        Err(e) => {
            eprintln!(
                "template {}: hashing {}: {e}",
                t.dir.display(),
                file.display()
            );
            false
        }
    };
    let t0 = Instant::now();
    let ok = check(t.ram(), &t.meta.ram_sha256) && check(t.state(), &t.meta.state_sha256);
    if ok {
        eprintln!(
            "template {}: verified in {:.3}s",
            t.meta.key,
            t0.elapsed().as_secs_f64()
        );
    }
    ok
}

/// Remove a template that is not intact (under its build lock): VMs restored from it keep their
/// mappings; the next one restores from a new file.
fn retire(t: &Template) {
    eprintln!("retiring template {}: it is rebuilt", t.dir.display());
    let _ = std::fs::remove_dir_all(&t.dir);
}

/// Whether the template `key` under `templates` still has the RAM file it had when built
/// (its ctime: a stat), for a claim of a standby restored from it earlier.
pub fn unchanged_since_built(templates: &Path, key: &str) -> bool {
    load(&templates.join(key)).is_some()
}

/// Every complete template under `templates` (for `hyper info`, pruning).
pub fn list(templates: &Path) -> Vec<Template> {
    let Ok(rd) = std::fs::read_dir(templates) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .filter_map(|e| load(&e.path()))
        .collect()
}

/// Why [`ensure`] gave no template.
#[derive(Debug, thiserror::Error)]
pub enum EnsureError {
    #[error("another process is building this template")]
    Busy,
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// Find the template for `spec`, or build it. With `wait` false, a template another process is
/// building gives [`EnsureError::Busy`] at once (the caller boots cold instead of queueing
/// behind a 3 s build on a 2-core machine).
pub fn ensure(spec: &Spec, templates: &Path, wait: bool) -> Result<Template, EnsureError> {
    std::fs::create_dir_all(templates)
        .with_context(|| format!("creating {}", templates.display()))?;
    let want = identify(spec, templates)?;
    let dir = templates.join(&want.key);
    if let Some(t) = load(&dir).filter(intact) {
        return Ok(t);
    }
    let lock =
        File::create(templates.join(format!("{}.lock", want.key))).context("template lock file")?;
    let mut flags = libc::LOCK_EX;
    if !wait {
        flags |= libc::LOCK_NB;
    }
    // SAFETY: flock on a descriptor we own; released when `lock` is closed.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), flags) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(EnsureError::Busy);
        }
        return Err(anyhow!(e).context("locking the template").into());
    }
    // Someone may have finished it while we waited.
    if let Some(t) = load(&dir) {
        if intact(&t) {
            return Ok(t);
        }
        retire(&t);
    }
    let t = build(spec, templates, want)?;
    prune(templates, &t);
    Ok(t)
}

/// Remove templates of the same size made from other inputs: nothing will ask for them again.
/// VMs restored from them keep their mappings (the RAM file's inode lives on until unmapped).
fn prune(templates: &Path, keep: &Template) {
    // Every template directory with a description, usable or not (a tampered one included).
    let all = std::fs::read_dir(templates)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let meta: Meta =
                serde_json::from_slice(&std::fs::read(e.path().join(META)).ok()?).ok()?;
            Some(Template {
                dir: e.path(),
                meta,
            })
        });
    for t in all {
        if t.meta.key != keep.meta.key
            && t.meta.vcpus == keep.meta.vcpus
            && t.meta.memory_mib == keep.meta.memory_mib
        {
            eprintln!(
                "removing stale template {} (built from other inputs)",
                t.dir.display()
            );
            let _ = std::fs::remove_dir_all(&t.dir);
            let _ = std::fs::remove_file(templates.join(format!("{}.lock", t.meta.key)));
        }
    }
}

/// Kills and reaps the template VM on every way out.
struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        BUILD_QEMU.store(0, std::sync::atomic::Ordering::SeqCst);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The template VM being built, for [`kill_build_vm_on_signals`]. QEMU's parent-death signal
/// does not survive its `-runas` (the kernel clears it when credentials change), so a builder
/// that is terminated must kill its VM itself.
static BUILD_QEMU: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn kill_build_vm(sig: libc::c_int) {
    let pid = BUILD_QEMU.load(std::sync::atomic::Ordering::SeqCst);
    // SAFETY: kill, signal and raise are async-signal-safe.
    unsafe {
        if pid > 0 {
            libc::kill(pid, libc::SIGKILL);
        }
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// On SIGTERM, SIGINT or SIGHUP: kill the template VM being built (if any), then die of the
/// signal as before. For processes that build templates before they install other handlers.
pub fn kill_build_vm_on_signals() {
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: installing a handler that only makes async-signal-safe calls.
        unsafe {
            libc::signal(sig, kill_build_vm as *const () as libc::sighandler_t);
        }
    }
}

fn build(spec: &Spec, templates: &Path, mut meta: Meta) -> Result<Template> {
    let t0 = Instant::now();
    let dir = templates.join(format!("{}.build", meta.key));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = (|| -> Result<()> {
        // Never opened: the template's root slot holds a null device (see `vm::Qemu`).
        let disk = dir.join(DISK);
        let ram = dir.join(RAM);
        File::create(&ram)?.set_len(spec.memory_mib << 20)?;
        // The same NIC as every container's (tap, vnet_hdr), so the device state fits their
        // taps; in a namespace of its own, so the template guest reaches nothing.
        let nic = crate::nic::Nic::for_template()?;
        let cfg = vm_config(spec, &dir, &disk, Some(nic.config()))?;
        let tap_fd = nic.config().tap_fd;
        let mut cmd = Qemu.command_for(&cfg, &Boot::TemplateSave { ram: ram.clone() })?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(dir.join("qemu.err"))?);
        // SAFETY: prctl and fcntl only between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                libc::fcntl(tap_fd, libc::F_SETFD, 0);
                Ok(())
            });
        }
        let spawned = cmd.spawn();
        // QEMU holds the tap now; with it goes the tap and its namespace.
        drop(nic);
        let mut vm = Guard(spawned.context("starting QEMU for the template")?);
        BUILD_QEMU.store(vm.0.id() as i32, std::sync::atomic::Ordering::SeqCst);
        let boot = Duration::from_secs(spec.boot_timeout_secs.max(1));
        wait_agent_idle(&cfg.agent_sock(), boot, &mut vm.0).map_err(|e| {
            let console = std::fs::read_to_string(cfg.console_log()).unwrap_or_default();
            let tail: Vec<&str> = console.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            e.context(format!("template VM console:\n{}", tail.join("\n")))
        })?;
        let mut qmp = Qmp::connect(&cfg.qmp_sock(), Duration::from_secs(10))?;
        qmp.execute(
            "migrate-set-capabilities",
            json!({"capabilities": [{"capability": "x-ignore-shared", "state": true}]}),
        )?;
        qmp.execute("stop", json!({}))?;
        let state = File::create(dir.join(STATE))?;
        qmp.send_fd("state", state.as_fd())?;
        qmp.execute("migrate", json!({"uri": "fd:state"}))?;
        qmp.wait_migration(Duration::from_secs(60))?;
        let _ = qmp.execute("quit", json!({}));
        drop(qmp);
        let _ = vm.0.wait();
        state.sync_all()?;
        File::open(&ram)?.sync_all()?;
        Ok(())
    })();
    if let Err(e) = result {
        let said = std::fs::read_to_string(dir.join("qemu.err")).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&dir);
        let e = if said.trim().is_empty() {
            e
        } else {
            e.context(format!("QEMU said: {}", said.trim()))
        };
        return Err(e.context("building the VM template"));
    }
    meta.created_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    // Read-only from here on (for whatever opens it by path; QEMU as root ignores modes).
    let ram = dir.join(RAM);
    let _ = std::fs::set_permissions(&ram, std::os::unix::fs::PermissionsExt::from_mode(0o444));
    meta.ram_ctime = ctime_of(&ram).context("stat the template's RAM file")?;
    meta.ram_sha256 = crate::integrity::digest(&ram).context("hashing the template's RAM")?;
    meta.state_sha256 =
        crate::integrity::digest(&dir.join(STATE)).context("hashing the template's state")?;
    meta.build_secs = t0.elapsed().as_secs_f64();
    let mut f = File::create(dir.join(META))?;
    f.write_all(&serde_json::to_vec_pretty(&meta)?)?;
    f.sync_all()?;
    for leftover in [vm::AGENT_SOCK, vm::QMP_SOCK, DISK] {
        let _ = std::fs::remove_file(dir.join(leftover));
    }
    let final_dir = templates.join(&meta.key);
    let _ = std::fs::remove_dir_all(&final_dir);
    std::fs::rename(&dir, &final_dir).context("publishing the template")?;
    Ok(Template {
        dir: final_dir,
        meta,
    })
}

/// Connect to the template VM's agent, greet it, read its `Ready`s until the line is quiet, and
/// disconnect, so the snapshot holds an agent waiting in its read loop with nothing in flight.
fn wait_agent_idle(sock: &Path, timeout: Duration, vm: &mut Child) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut s = loop {
        if let Some(st) = vm.try_wait()? {
            bail!("QEMU exited during boot ({st})");
        }
        match UnixStream::connect(sock) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(anyhow!(e).context("agent socket")),
        }
    };
    s.write_all(
        &Frame::host(&HostMsg::Hello {
            version: PROTOCOL_VERSION,
            entropy: crate::identity::host_random(64),
        })
        .encode(),
    )?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut readies = 0;
    loop {
        let now = Instant::now();
        if now >= deadline {
            bail!("guest agent not ready after {}s", timeout.as_secs());
        }
        // Once a Ready is in, wait for quiet (the boot-time Ready and the answer to Hello may
        // both come) rather than for the full boot timeout.
        let wait = if readies > 0 {
            Duration::from_millis(300)
        } else {
            (deadline - now).min(Duration::from_millis(500))
        };
        s.set_read_timeout(Some(wait))?;
        match s.read(&mut chunk) {
            Ok(0) => bail!("the agent connection closed"),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                while let Some((f, used)) = Frame::decode(&buf)? {
                    buf.drain(..used);
                    if let Ok(GuestMsg::Ready { .. }) = f.guest_msg() {
                        readies += 1;
                    }
                }
                if readies >= 2 && buf.is_empty() {
                    break;
                }
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                if readies > 0 && buf.is_empty() {
                    break;
                }
                if let Some(st) = vm.try_wait()? {
                    bail!("QEMU exited during boot ({st})");
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    drop(s);
    // The agent's reader notices the hang-up within its 50 ms poll.
    std::thread::sleep(Duration::from_millis(150));
    Ok(())
}

/// Whether a container's root disk fits the template's slot: its guest probed a disk of
/// [`vm::ROOT_DISK_BYTES`] when the template was made and keeps that capacity, so an overlay of
/// another virtual size must boot cold.
pub fn check_root_disk(disk: &File) -> Result<crate::qcow2::Header> {
    let header = crate::qcow2::Header::read(disk).context("the root disk")?;
    if header.size != vm::ROOT_DISK_BYTES {
        bail!(
            "the root disk's size ({} bytes) is not the template's ({} bytes)",
            header.size,
            vm::ROOT_DISK_BYTES
        );
    }
    Ok(header)
}

/// Restore `t` into the QEMU that was started with [`Boot::Restore`] in `dir`: load the device
/// state through an fd, let the guest run, and tell it the sizes of the `volumes` behind its
/// slots (it probed the template's placeholders). Blocking (QMP round trips, a few ms each).
pub fn restore(
    t: &Template,
    qmp_sock: &Path,
    volumes: &vm::Volumes,
    timeout: Duration,
) -> Result<()> {
    let state = File::open(t.state()).context("opening the template's state")?;
    let mut qmp = Qmp::connect(qmp_sock, timeout)?;
    qmp.execute(
        "migrate-set-capabilities",
        json!({"capabilities": [{"capability": "x-ignore-shared", "state": true}]}),
    )?;
    qmp.send_fd("state", state.as_fd())?;
    qmp.execute("migrate-incoming", json!({"uri": "fd:state"}))?;
    qmp.wait_migration(timeout)?;
    if qmp.status()? != "running" {
        qmp.execute("cont", json!({}))?;
    }
    vm::volume::announce_sizes(&mut qmp, volumes).context("announcing the volumes' sizes")?;
    // QEMU keeps the state fd it was given; closing it is its business (and closing ours here).
    let _ = qmp.execute("closefd", json!({"fdname": "state"}));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path) -> Spec {
        for f in ["qemu", "vmlinuz", "initrd"] {
            std::fs::write(dir.join(f), f).unwrap();
        }
        serde_json::from_value(json!({
            "id": "x", "qemu": dir.join("qemu"), "accel": "tcg",
            "kernel": dir.join("vmlinuz"), "initrd": dir.join("initrd"),
            "root_disk": "/r", "process": {"args": ["true"]}
        }))
        .unwrap()
    }

    #[test]
    fn key_changes_with_every_input() {
        let dir = std::env::temp_dir().join(format!("tmpl-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = spec(&dir);
        let t = dir.join("t");
        let base = identify(&s, &t).unwrap().key;
        assert_eq!(identify(&s, &t).unwrap().key, base, "stable");
        let mut c = s.clone();
        c.kernel_cmdline_extra = "loglevel=7".into();
        let mut m = s.clone();
        m.memory_mib += 1;
        let mut v = s.clone();
        v.vcpus += 1;
        for (i, other) in [c, m, v].iter().enumerate() {
            assert_ne!(identify(other, &t).unwrap().key, base, "test[{i}]");
        }
        // A rewritten kernel (new content) is hashed again despite the memo.
        std::thread::sleep(Duration::from_millis(10));
        std::fs::write(dir.join("vmlinuz"), "another kernel").unwrap();
        assert_ne!(identify(&s, &t).unwrap().key, base, "kernel content");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
