//! Standby VMs: restored from the template ahead of time, before any container asks, so that a
//! start skips QEMU's spawn and the restore. A standby belongs to no container and has run
//! nothing but its agent and a rehearsal of a start (`HostMsg::Rehearse`) on its own scratch
//! disk ([`scratch_disk`], behind the root slot: [`vm::Boot::Standby`]); its tap sits in a
//! private namespace. A container claims it (`Request::Claim`): the shim puts the container's
//! disk behind the slot (`blockdev-reopen` of the raw node over the scratch disk) and its
//! volumes behind their slots (`crate::volumes::attach`), moves the tap into the tenant's
//! namespace and onto its bridge, resumes the VM (a waiting standby is paused), and moves its
//! directory over the container's, so that QEMU's chroot, the sockets and the logs end up where
//! every other part expects a container's. From then on it is that container's supervisor like
//! any other; nothing is ever claimed twice.
//!
//! A standby prepared for an image (`Spec::prepared_for`) goes one step further before it
//! waits: its own copy of the image's empty overlay ([`prepared_disk`]) goes behind the slot and
//! the agent mounts it read-only and reads ahead (`HostMsg::PrepareRoot`). Its claim attaches no
//! disk: the container's own must still be byte-equal to that copy ([`check_pristine`]), and the
//! copy takes its place as the directories merge.

use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::json;
use vm::Qmp;

use crate::{paths, Spec};

/// The scratch root every standby rehearses on (see [`scratch_disk`]), in the templates' dir.
const SCRATCH_BASE: &str = "scratch-root-5.ext4";
/// Scratch roots of earlier versions, removed when the current one is built.
const OLD_SCRATCH_BASES: &[&str] = &[
    "scratch-root.ext4",
    "scratch-root-2.ext4",
    "scratch-root-3.ext4",
    "scratch-root-4.ext4",
];
/// The program a standby's rehearsal runs: [`scratch_program`].
pub const SCRATCH_PROGRAM: &str = "/bin/true";

/// The MAC eth0 has in a template (QEMU's NIC of every template VM): set again, not changed.
const SCRATCH_MAC: &str = "02:00:00:00:00:01";

/// The process a standby's rehearsal starts: [`SCRATCH_PROGRAM`] as a container's command
/// would name it, found through the `PATH` and with the environment hyperd gives every
/// container.
pub fn scratch_process() -> agent_proto::ProcessSpec {
    agent_proto::ProcessSpec {
        args: vec![
            SCRATCH_PROGRAM
                .rsplit('/')
                .next()
                .unwrap_or(SCRATCH_PROGRAM)
                .to_string(),
            "rehearsal".to_string(),
        ],
        env: vec![
            format!("PATH={}", agent_proto::DEFAULT_PATH),
            "HOSTNAME=scratch".to_string(),
        ],
        cwd: "/".to_string(),
        user: "root".to_string(),
        ..Default::default()
    }
}

/// The network a standby's rehearsal gives eth0: a link-local address (its tap is in a
/// namespace of its own until the VM is claimed) and the tenant networks' default MTU, which
/// differs from the template's, so that the MTU's change is rehearsed and a claim on a default
/// network finds it set.
pub fn scratch_network() -> agent_proto::NetConfig {
    agent_proto::NetConfig {
        mac: SCRATCH_MAC.into(),
        ip: "169.254.0.2/16".into(),
        gateway: "169.254.0.1".into(),
        mtu: net::DEFAULT_MTU,
        resolv_conf: "nameserver 169.254.0.1\n".into(),
        hosts: vec!["169.254.0.3\tpeer".into()],
    }
}

/// A standby's scratch disk in `dir`: a qcow2 overlay (written by the rehearsal, gone with the
/// standby) over a shared, read-only ext4 of the root disk's size holding a tiny root with
/// [`SCRATCH_PROGRAM`] (built once under `templates`).
pub fn scratch_disk(spec: &Spec, templates: &Path, dir: &Path) -> Result<PathBuf> {
    let base = templates.join(SCRATCH_BASE);
    if !base.exists() {
        build_scratch_base(&base)?;
        for old in OLD_SCRATCH_BASES {
            let _ = std::fs::remove_file(templates.join(old));
        }
    }
    let overlay = dir.join("scratch.qcow2");
    let qemu_img = spec.qemu.with_file_name("qemu-img");
    let out = std::process::Command::new(if qemu_img.exists() {
        qemu_img.as_path()
    } else {
        Path::new("qemu-img")
    })
    .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
    .arg(&base)
    .arg(&overlay)
    .arg(vm::ROOT_DISK_BYTES.to_string())
    .output()
    .context("running qemu-img")?;
    if !out.status.success() {
        bail!(
            "qemu-img create: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(overlay)
}

fn build_scratch_base(base: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = base.with_extension(format!("tmp{}", std::process::id()));
    let tree = tmp.with_extension("tree");
    let _ = std::fs::remove_dir_all(&tree);
    // Only what the program needs: a start creates what an image lacks (`/proc`, `/sys`,
    // `/dev`, `/etc/hostname`, `hosts`, `resolv.conf`: images seldom have the last three), so
    // the rehearsal creates them too and the kernel's create paths are warm.
    for d in ["bin", "etc"] {
        std::fs::create_dir_all(tree.join(d))?;
    }
    let prog = tree.join(SCRATCH_PROGRAM.trim_start_matches('/'));
    std::fs::write(&prog, scratch_program())?;
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755))?;
    std::fs::write(tree.join("etc/passwd"), "root:x:0:0:root:/root:/bin/true\n")?;
    std::fs::write(tree.join("etc/group"), "root:x:0:\n")?;
    // Written at a start only where the image has one.
    std::fs::write(tree.join("etc/machine-id"), "")?;
    let _ = std::fs::remove_file(&tmp);
    let made = vm::ext4::make_from_tree(&tree, &tmp, vm::ROOT_DISK_BYTES, "hyper-scratch", None);
    let _ = std::fs::remove_dir_all(&tree);
    if let Err(e) = made {
        let _ = std::fs::remove_file(&tmp);
        bail!("the standby scratch root: {e}");
    }
    std::fs::rename(&tmp, base).context("publishing the scratch root")
}

/// Pages of [`scratch_program`]'s code segment (`CODE_PAGES` in `scratch.s`): a program of a
/// real one's size, so that the rehearsal's exec faults its pages in from the disk (readahead,
/// the page cache) as a container's first exec does.
const SCRATCH_CODE_PAGES: u32 = 127;

/// Pages of [`scratch_program`]'s data segment in the file, after the code; the last one's
/// tail is bss, which the kernel zeroes at exec as it does a C program's.
const SCRATCH_DATA_PAGES: u32 = 3;

/// Bytes of the last data page that are bss.
const SCRATCH_DATA_TAIL: u64 = 0x100;

/// What [`scratch_program`] writes to its stdout, so that the rehearsal relays output as a
/// start does.
pub const SCRATCH_OUTPUT: &[u8] = b"ok\n";

/// The code of [`scratch_program`], position-independent: `scratch.s` beside this file,
/// assembled (see there).
const SCRATCH_CODE: &[u8] = &[
    0x48, 0x8d, 0x35, 0xf9, 0xff, 0xff, 0xff, 0x48, 0x81, 0xe6, 0x00, 0xf0, 0xff, 0xff, 0x4c, 0x8d,
    0xa6, 0x00, 0xf0, 0x07, 0x00, 0xb9, 0x7f, 0x00, 0x00, 0x00, 0x8a, 0x06, 0x48, 0x81, 0xc6, 0x00,
    0x10, 0x00, 0x00, 0xff, 0xc9, 0x75, 0xf3, 0x41, 0xc6, 0x04, 0x24, 0x01, 0x41, 0x8a, 0x84, 0x24,
    0x00, 0x10, 0x00, 0x00, 0x41, 0x88, 0x84, 0x24, 0x00, 0x10, 0x00, 0x00, 0x41, 0xc6, 0x84, 0x24,
    0x00, 0x30, 0x00, 0x00, 0x01, 0x4c, 0x89, 0xe7, 0xbe, 0x00, 0x10, 0x00, 0x00, 0xba, 0x01, 0x00,
    0x00, 0x00, 0xb8, 0x0a, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xb8, 0x0c, 0x00, 0x00, 0x00, 0x31, 0xff,
    0x0f, 0x05, 0x48, 0x89, 0xc3, 0x48, 0x8d, 0xb8, 0x00, 0x10, 0x02, 0x00, 0xb8, 0x0c, 0x00, 0x00,
    0x00, 0x0f, 0x05, 0x48, 0x39, 0xd8, 0x0f, 0x84, 0x04, 0x01, 0x00, 0x00, 0xc6, 0x03, 0x01, 0xbf,
    0x02, 0x10, 0x00, 0x00, 0x48, 0x8d, 0xb3, 0x00, 0x01, 0x00, 0x00, 0xb8, 0x9e, 0x00, 0x00, 0x00,
    0x0f, 0x05, 0x48, 0x8d, 0xbb, 0x00, 0x02, 0x00, 0x00, 0xb8, 0xda, 0x00, 0x00, 0x00, 0x0f, 0x05,
    0x48, 0x8d, 0xbb, 0x00, 0x04, 0x00, 0x00, 0xbe, 0x20, 0x00, 0x00, 0x00, 0x31, 0xd2, 0x41, 0xba,
    0x53, 0x30, 0x05, 0x53, 0xb8, 0x4e, 0x01, 0x00, 0x00, 0x0f, 0x05, 0x31, 0xff, 0xbe, 0x03, 0x00,
    0x00, 0x00, 0x31, 0xd2, 0x4c, 0x8d, 0x93, 0x00, 0x05, 0x00, 0x00, 0xb8, 0x2e, 0x01, 0x00, 0x00,
    0x0f, 0x05, 0x48, 0x8d, 0x3d, 0xf5, 0x00, 0x00, 0x00, 0x48, 0x8d, 0xb3, 0x00, 0x10, 0x00, 0x00,
    0xba, 0x00, 0x10, 0x00, 0x00, 0xb8, 0x59, 0x00, 0x00, 0x00, 0x0f, 0x05, 0x48, 0x8d, 0xbb, 0x00,
    0x06, 0x00, 0x00, 0xbe, 0x08, 0x00, 0x00, 0x00, 0xba, 0x01, 0x00, 0x00, 0x00, 0xb8, 0x3e, 0x01,
    0x00, 0x00, 0x0f, 0x05, 0x48, 0x8d, 0xbb, 0x00, 0x00, 0x01, 0x00, 0xbe, 0x00, 0x10, 0x00, 0x00,
    0xba, 0x01, 0x00, 0x00, 0x00, 0xb8, 0x0a, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xbf, 0x10, 0x00, 0x00,
    0x00, 0x48, 0x8d, 0xb3, 0x00, 0x07, 0x00, 0x00, 0xb8, 0x9d, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xbf,
    0x02, 0x00, 0x00, 0x00, 0x31, 0xf6, 0x48, 0x8d, 0x93, 0x00, 0x08, 0x00, 0x00, 0x41, 0xba, 0x08,
    0x00, 0x00, 0x00, 0xb8, 0x0d, 0x00, 0x00, 0x00, 0x0f, 0x05, 0x48, 0x8d, 0xbb, 0x00, 0x20, 0x00,
    0x00, 0xbe, 0x00, 0x10, 0x00, 0x00, 0xb8, 0x4f, 0x00, 0x00, 0x00, 0x0f, 0x05, 0x48, 0xc7, 0x83,
    0x08, 0x09, 0x00, 0x00, 0xe8, 0x03, 0x00, 0x00, 0xbf, 0x01, 0x00, 0x00, 0x00, 0x31, 0xf6, 0x48,
    0x8d, 0x93, 0x00, 0x09, 0x00, 0x00, 0x45, 0x31, 0xd2, 0xb8, 0xe6, 0x00, 0x00, 0x00, 0x0f, 0x05,
    0xb8, 0x66, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xb8, 0x6e, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xbf, 0x01,
    0x00, 0x00, 0x00, 0x31, 0xf6, 0xba, 0x0a, 0x00, 0x00, 0x00, 0xb8, 0x48, 0x00, 0x00, 0x00, 0x0f,
    0x05, 0x89, 0xc7, 0xb8, 0x03, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xbf, 0x01, 0x00, 0x00, 0x00, 0x48,
    0x8d, 0x35, 0x15, 0x00, 0x00, 0x00, 0xba, 0x03, 0x00, 0x00, 0x00, 0xb8, 0x01, 0x00, 0x00, 0x00,
    0x0f, 0x05, 0x31, 0xff, 0xb8, 0xe7, 0x00, 0x00, 0x00, 0x0f, 0x05, 0x6f, 0x6b, 0x0a, 0x2f, 0x70,
    0x72, 0x6f, 0x63, 0x2f, 0x73, 0x65, 0x6c, 0x66, 0x2f, 0x65, 0x78, 0x65, 0x00,
];

/// A complete static x86-64 Linux program that walks a C program's first steps, writes
/// [`SCRATCH_OUTPUT`] to stdout and exits 0 ([`SCRATCH_CODE`]): an ELF header, a loadable code
/// segment of [`SCRATCH_CODE_PAGES`] pages (the code, then zeros) and a writable data segment
/// of [`SCRATCH_DATA_PAGES`] pages from the file (zeros; the end of the last one bss) and a
/// page of bss.
pub fn scratch_program() -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    const PAGE: u64 = 4096;
    const HEADERS: usize = 64 + 2 * 56;
    let code_bytes = u64::from(SCRATCH_CODE_PAGES) * PAGE;
    let data_bytes = u64::from(SCRATCH_DATA_PAGES) * PAGE;
    let total = code_bytes + data_bytes;
    let mut e = Vec::with_capacity(total as usize);
    e.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    e.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e.extend_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&(BASE + HEADERS as u64).to_le_bytes()); // entry: the code
    e.extend_from_slice(&64u64.to_le_bytes()); // program headers right after this one
    e.extend_from_slice(&0u64.to_le_bytes()); // no section headers
    e.extend_from_slice(&0u32.to_le_bytes());
    for half in [64u16, 56, 2, 0, 0, 0] {
        e.extend_from_slice(&half.to_le_bytes());
    }
    // PT_LOAD (type, flags, offset, vaddr, paddr, filesz, memsz, align): the code, R+X; the
    // data, R+W, with bss from the last data page's tail and a page of bss after it.
    for (flags, offset, size, memsz) in [
        (5u32, 0, code_bytes, code_bytes),
        (
            6u32,
            code_bytes,
            data_bytes - SCRATCH_DATA_TAIL,
            data_bytes + PAGE,
        ),
    ] {
        e.extend_from_slice(&1u32.to_le_bytes());
        e.extend_from_slice(&flags.to_le_bytes());
        e.extend_from_slice(&offset.to_le_bytes());
        e.extend_from_slice(&(BASE + offset).to_le_bytes());
        e.extend_from_slice(&(BASE + offset).to_le_bytes());
        e.extend_from_slice(&size.to_le_bytes());
        e.extend_from_slice(&memsz.to_le_bytes());
        e.extend_from_slice(&PAGE.to_le_bytes());
    }
    debug_assert_eq!(e.len(), HEADERS);
    e.extend_from_slice(SCRATCH_CODE);
    e.resize(total as usize, 0);
    e
}

/// How long a standby runs after its rehearsal before it is paused: the guest finishes what
/// the rehearsal left in the background (its journal commit, the namespaces' teardown).
pub const SETTLE: Duration = Duration::from_secs(2);

/// Pause (`stop`) or resume (`cont`) the standby's guest. A standby waits paused: an idle guest
/// under TCG still spends ~0.5% of a core on its timers, for every standby kept; a paused one
/// spends nothing, and its translated code stays.
pub fn set_running(qmp_sock: &Path, running: bool) -> Result<()> {
    let mut qmp = Qmp::connect(qmp_sock, Duration::from_secs(5))?;
    qmp.execute(if running { "cont" } else { "stop" }, json!({}))?;
    Ok(())
}

/// QEMU fd sets for the claimed disk: the overlay (read-write) and its base (read-only).
const OVERLAY_FDSET: u32 = 2;
const BASE_FDSET: u32 = 3;

/// The base (the image's raw disk) under a disk put behind the slot, as it was opened: its path
/// and which file that path was then.
#[derive(Debug)]
pub struct Base {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Base {
    fn opened(path: PathBuf, file: &File) -> Result<Base> {
        let meta = file.metadata().context("the base disk's metadata")?;
        Ok(Base {
            path,
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// Whether its path still names the file opened: an image removed and pulled again gets a
    /// new disk of another layout under the same path, and an overlay written over the old
    /// one would not read right over the new.
    fn unchanged(&self) -> Result<()> {
        let now = std::fs::metadata(&self.path)
            .with_context(|| format!("the image disk {}", self.path.display()))?;
        if (now.dev(), now.ino()) != (self.dev, self.ino) {
            bail!(
                "the image disk {} was made anew since this standby VM was prepared",
                self.path.display()
            );
        }
        Ok(())
    }
}

/// Put the container's root disk (a qcow2 overlay over a raw image disk) behind the standby's
/// root slot (`vm::root::attach`, which opens every node with the guest's discards passed on).
/// QEMU is chrooted and cannot open paths, so both files go over QMP as descriptors. The base
/// as opened, if the disk has one.
pub fn attach_root_disk(qmp_sock: &Path, root_disk: &Path) -> Result<Option<Base>> {
    let overlay = OpenOptions::new()
        .read(true)
        .write(true)
        .open(root_disk)
        .with_context(|| format!("opening {}", root_disk.display()))?;
    let base_path = crate::template::check_root_disk(&overlay)?.backing_file(&overlay)?;
    let base = base_path
        .as_ref()
        .map(|p| File::open(p).with_context(|| format!("opening {}", p.display())))
        .transpose()?;
    let mut qmp = Qmp::connect(qmp_sock, Duration::from_secs(5))?;
    qmp.execute_with_fd(
        "add-fd",
        json!({ "fdset-id": OVERLAY_FDSET }),
        overlay.as_fd(),
    )?;
    if let Some(base) = &base {
        qmp.execute_with_fd("add-fd", json!({ "fdset-id": BASE_FDSET }), base.as_fd())?;
    }
    let fdset = |n: u32| format!("/dev/fdset/{n}");
    vm::root::attach(
        &mut qmp,
        &fdset(OVERLAY_FDSET),
        base.is_some().then(|| fdset(BASE_FDSET)).as_deref(),
    )?;
    base_path
        .zip(base.as_ref())
        .map(|(path, file)| Base::opened(path, file))
        .transpose()
}

/// The root disk of a standby prepared for an image: its own copy of the image's empty
/// overlay, which becomes the container's `root.qcow2` when claimed ([`move_into`]).
pub fn prepared_disk(standby_dir: &Path) -> PathBuf {
    standby_dir.join(ROOT_DISK)
}

/// The name of a container's root disk in its directory.
const ROOT_DISK: &str = "root.qcow2";

/// Whether the container whose root disk is `root_disk` may claim the standby in `standby_dir`,
/// prepared for an image over `base`: its disk must be its directory's `root.qcow2` (the
/// standby's copy takes its place), still byte-equal to the standby's (never written: the
/// container never ran, and nothing was copied into it), over the same base file.
pub fn check_pristine(
    standby_dir: &Path,
    container_dir: &Path,
    root_disk: &Path,
    base: &Base,
) -> Result<()> {
    let in_place = root_disk.file_name() == Some(ROOT_DISK.as_ref())
        && root_disk
            .parent()
            .and_then(|p| std::fs::canonicalize(p).ok())
            .is_some_and(|p| p == container_dir);
    if !in_place {
        bail!(
            "the container's root disk {} is not its directory's {ROOT_DISK}",
            root_disk.display()
        );
    }
    if !same_bytes(root_disk, &prepared_disk(standby_dir))? {
        bail!(
            "the container's root disk is not the pristine disk this standby VM was prepared with"
        );
    }
    base.unchanged()
}

/// Whether the files `a` and `b` hold the same bytes (small ones: read whole).
pub fn same_bytes(a: &Path, b: &Path) -> Result<bool> {
    let meta = |p: &Path| std::fs::metadata(p).with_context(|| format!("reading {}", p.display()));
    if meta(a)?.len() != meta(b)?.len() {
        return Ok(false);
    }
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    Ok(read(a)? == read(b)?)
}

/// Move the container's files into the standby's directory, then the standby's directory over
/// the container's (empty by then), so everything the VM holds (QEMU's chroot, the agent's and
/// QEMU's sockets, the console, shim.sock, the shim's log) is the container's. The container's
/// earlier `console.log` and `shim.log` (from a previous run) give way to this VM's, and so do
/// what a previous run's VM left that the standby has too (its `qemu-modules` directory: a
/// second start of a container claimed no standby while that directory was in the way).
pub fn move_into(standby: &Path, container: &Path) -> Result<()> {
    let entries =
        std::fs::read_dir(container).with_context(|| format!("reading {}", container.display()))?;
    for e in entries {
        let e = e?;
        let name = e.file_name();
        let from = e.path();
        let to = standby.join(&name);
        if name == paths::CONSOLE_LOG || name == paths::SHIM_LOG || to.exists() {
            // A directory itself, not a link to one: a copy the VM made (never a mount).
            let removed = if e.file_type()?.is_dir() {
                std::fs::remove_dir_all(&from)
            } else {
                std::fs::remove_file(&from)
            };
            removed.with_context(|| format!("removing {}", from.display()))?;
        } else {
            std::fs::rename(&from, &to)
                .with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
        }
    }
    std::fs::rename(standby, container).with_context(|| {
        format!(
            "moving the standby VM's {} to {}",
            standby.display(),
            container.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `SCRATCH_CODE` is `scratch.s` assembled (GNU as, part of the toolchain that links us).
    #[test]
    fn the_scratch_code_is_its_source_assembled() {
        let dir = std::env::temp_dir().join(format!("standby-as-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/scratch.s");
        let run = |cmd: &str, args: &[&std::ffi::OsStr]| {
            let out = std::process::Command::new(cmd).args(args).output().unwrap();
            assert!(out.status.success(), "{cmd}: {out:?}");
        };
        let (obj, bin) = (dir.join("scratch.o"), dir.join("scratch.bin"));
        run(
            "as",
            &[
                "--64".as_ref(),
                "-o".as_ref(),
                obj.as_os_str(),
                src.as_os_str(),
            ],
        );
        run(
            "objcopy",
            &[
                "-O".as_ref(),
                "binary".as_ref(),
                "-j".as_ref(),
                ".text".as_ref(),
                obj.as_os_str(),
                bin.as_os_str(),
            ],
        );
        let assembled = std::fs::read(&bin).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(assembled, SCRATCH_CODE);
        let source = std::fs::read_to_string(&src).unwrap();
        assert!(source.contains(&format!(".equ CODE_PAGES, {SCRATCH_CODE_PAGES}\n")));
    }

    #[test]
    fn the_scratch_program_reads_its_pages_writes_and_exits_zero() {
        use std::os::unix::fs::PermissionsExt;
        let p = std::env::temp_dir().join(format!("standby-true-{}", std::process::id()));
        std::fs::write(&p, scratch_program()).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = std::process::Command::new(&p).output().unwrap();
        std::fs::remove_file(&p).unwrap();
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(out.stdout, SCRATCH_OUTPUT);
    }

    #[test]
    fn files_move_and_the_standby_takes_the_containers_place() {
        let root = std::env::temp_dir().join(format!("standby-move-{}", std::process::id()));
        let (s, c) = (root.join("standby"), root.join("c"));
        std::fs::create_dir_all(&s).unwrap();
        std::fs::create_dir_all(&c).unwrap();
        for (d, f, text) in [
            (&s, "console.log", "standby console"),
            (&s, "shim.log", "standby log"),
            (&c, "console.log", "old console"),
            (&c, "shim.log", "old log"),
            (&c, "spec.json", "{}"),
            (&c, "root.qcow2", "disk"),
            (&c, "ctr.log", "earlier output"),
        ] {
            std::fs::write(d.join(f), text).unwrap();
        }
        // A previous run's VM left its module directory; the standby has its own.
        for (d, text) in [(&s, "standby module"), (&c, "old module")] {
            std::fs::create_dir_all(d.join("qemu-modules")).unwrap();
            std::fs::write(d.join("qemu-modules/block-rbd.so"), text).unwrap();
        }
        move_into(&s, &c).unwrap();
        assert!(!s.exists());
        let read = |f: &str| std::fs::read_to_string(c.join(f)).unwrap();
        assert_eq!(read("console.log"), "standby console");
        assert_eq!(read("shim.log"), "standby log");
        assert_eq!(read("spec.json"), "{}");
        assert_eq!(read("root.qcow2"), "disk");
        assert_eq!(read("ctr.log"), "earlier output");
        assert_eq!(read("qemu-modules/block-rbd.so"), "standby module");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
