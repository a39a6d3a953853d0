//! End-to-end: the container's root disk in every boot (cold, restored from its template,
//! claimed from a standby), through the `hyper-shim` binary, on real microVMs.
//!
//! Same switches as `templates.rs`: skipped (with a printed reason) unless
//! `HYPER_TEST_KERNEL_DIR` is set; `HYPER_TEST_AGENT`, `HYPER_TEST_ACCEL`,
//! `HYPER_TEST_TIMEOUT_SCALE`. One VM at a time.
//!
//! - What a container deletes and trims frees the host's blocks: ~100 MiB written to the root
//!   and synced grow the container's `root.qcow2` by as much; deleted and `fstrim`med, they are
//!   given back (the guest's discards pass through every block node down to the file).
//! - A VM whose write finds the host's file system full is paused, not handed an I/O error
//!   (`vm::ON_WRITE_ERROR`); with room again it resumes by itself (`shim::disk_full`) and all
//!   it wrote is on its disk, intact.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod common;
use common::boots::*;
use common::*;
use shim::{Request, ShimClient};

static ONE_VM_AT_A_TIME: Mutex<()> = Mutex::new(());

macro_rules! need_vm {
    () => {{
        let Some(f) = fixture() else {
            eprintln!("SKIPPED: set HYPER_TEST_KERNEL_DIR (and optionally HYPER_TEST_AGENT) to boot real VMs");
            return;
        };
        (f, ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner()))
    }};
}

const MIB: u64 = 1 << 20;
/// What the container writes to its root.
const FILL_MIB: u64 = 100;

/// Fills the root with [`FILL_MIB`] and syncs, says `written`, waits for SIGUSR1 (the test
/// measures the overlay meanwhile), then deletes the file and trims the root file system.
fn fill_then_trim_script() -> String {
    format!(
        "trap 'go=1' USR1; dd if=/dev/zero of=/fill bs=1M count={FILL_MIB} 2>/dev/null && sync && echo written; \
         while [ -z \"$go\" ]; do sleep 1; done; rm /fill && sync && fstrim / && echo trimmed"
    )
}

/// Bytes the host's file system holds for the container's overlay.
fn allocated(dir: &Path) -> u64 {
    std::fs::metadata(dir.join("root.qcow2")).unwrap().blocks() * 512
}

/// Starts the container in `dir` (its supervisor is up), lets it fill its root, then delete and
/// trim; returns the overlay's allocated bytes when it was full and at the end.
fn fill_then_trim(dir: &Path) -> (u64, u64) {
    let shim_log = || std::fs::read_to_string(dir.join("shim.log")).unwrap_or_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let c = ShimClient::connect(dir).unwrap();
    let resp = rt.block_on(c.request(&Request::Start)).unwrap();
    assert!(resp.ok, "{resp:?}\n{}", shim_log());
    let end = Instant::now() + Duration::from_secs_f64(120.0 * scale());
    while !ctr_output(dir).contains("written") {
        assert!(
            Instant::now() < end,
            "the container did not fill its root:\n{}\n{}",
            ctr_output(dir),
            shim_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let full = allocated(dir);
    let resp = ask(
        dir,
        Request::Signal {
            signal: nix::sys::signal::Signal::SIGUSR1 as i32,
            exec_id: None,
            resume: false,
        },
    );
    assert!(resp.ok, "{resp:?}");
    let resp = rt
        .block_on(async {
            tokio::time::timeout(
                Duration::from_secs_f64(120.0 * scale()),
                c.request(&Request::Wait),
            )
            .await
        })
        .expect("the container did not exit")
        .unwrap();
    assert_eq!(
        resp.state.unwrap().exit_code,
        Some(0),
        "{}\n{}",
        ctr_output(dir),
        shim_log()
    );
    assert!(ctr_output(dir).contains("trimmed"), "{}", ctr_output(dir));
    wait_shim_gone(dir);
    (full, allocated(dir))
}

#[test]
fn deleted_and_trimmed_files_free_the_overlay_in_every_boot() {
    let (f, _g) = need_vm!();
    let disk = base_disk_with(&f, "disk-t", &["dd", "sync", "rm", "fstrim"]);
    let script = fill_then_trim_script();
    let mut cold = spec(&f, "cold", &disk, "WHO=c", &script);
    cold.template_dir = None;
    let restored = spec(&f, "restored", &disk, "WHO=r", &script);
    let claimed = spec(&f, "claimed", &disk, "WHO=s", &script);
    let template = shim::template::ensure(&restored, &f.work.join("templates"), true)
        .unwrap_or_else(|e| panic!("template: {}", chain(&e)));

    let mut seen = Vec::new();
    for (boot, log_says) in [
        ("cold", "(cold boot)".to_string()),
        (
            "restored",
            format!("restored from template {}", template.meta.key),
        ),
        ("claimed", "standby: claimed by container".to_string()),
    ] {
        let dir = match boot {
            "cold" => container_dir(&f, boot, &disk, cold.clone()),
            "restored" => container_dir(&f, boot, &disk, restored.clone()),
            _ => {
                let standby = standby(&f, "standby-t", &restored);
                wait_paused(&standby);
                let dir = container_dir(&f, boot, &disk, claimed.clone());
                let resp = claim(&standby, &dir);
                assert!(resp.ok, "claim: {resp:?}");
                dir
            }
        };
        if boot != "claimed" {
            launch(&dir);
        }
        let (full, after) = fill_then_trim(&dir);
        let log = std::fs::read_to_string(dir.join("shim.log")).unwrap_or_default();
        assert!(log.contains(&log_says), "{boot}: not a {boot} VM:\n{log}");
        eprintln!(
            "{boot}: overlay {} MiB full, {} MiB after rm and fstrim",
            full / MIB,
            after / MIB
        );
        seen.push((boot, full, after));
    }
    for (boot, full, after) in &seen {
        // The writes reached the overlay, and the trim gave (nearly) all of them back.
        assert!(*full >= FILL_MIB * MIB * 9 / 10, "{boot}: {seen:?}");
        assert!(
            *after + FILL_MIB * MIB * 9 / 10 <= *full,
            "{boot}: the trim did not free the overlay's blocks (bytes full, after): {seen:?}"
        );
    }
}

/// Writes [`BIG_MIB`] of a known stream to the root, syncs, then checks the file against the
/// same stream made again and counts the kernel's I/O error lines.
const BIG_MIB: u64 = 120;

fn write_and_check_script() -> String {
    let bytes = BIG_MIB * MIB;
    format!(
        "yes hyper-disk-full | head -c {bytes} > /big && sync && a=$(sha256sum < /big) && \
         b=$(yes hyper-disk-full | head -c {bytes} | sha256sum) && \
         echo size=$(wc -c < /big) same=$([ \"$a\" = \"$b\" ] && echo yes || echo no) && \
         echo ioerrors=$(dmesg | grep -ciE 'i/o error|ext4-fs error')"
    )
}

/// A tmpfs mounted on its path, unmounted (lazily: a VM may still hold it) when dropped.
struct SmallFs(std::path::PathBuf);

impl SmallFs {
    /// A tmpfs of `mib` MiB on `at` (made here).
    fn mount(at: &Path, mib: u64) -> SmallFs {
        std::fs::create_dir_all(at).unwrap();
        sh(std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(at));
        SmallFs(at.to_path_buf())
    }

    fn grow(&self, mib: u64) {
        sh(std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(&self.0));
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_host_disk_pauses_the_vm_in_every_boot() {
    let (f, _g) = need_vm!();
    // A root file system with room for the writes (the host's disk will not have it).
    let rootfs = f.work.join("rootfs-disk-full");
    busybox_rootfs(
        &rootfs,
        &[
            "sh",
            "echo",
            "cat",
            "head",
            "yes",
            "sync",
            "sha256sum",
            "wc",
            "dmesg",
            "grep",
            "true",
            "sleep",
        ],
    );
    std::fs::write(rootfs.join("etc/machine-id"), "").unwrap();
    let disk = f.work.join("base-disk-full.ext4");
    ext4_image(&rootfs, &disk, "256M");
    let script = write_and_check_script();
    let mut cold = spec(&f, "cold", &disk, "WHO=c", &script);
    cold.template_dir = None;
    let restored = spec(&f, "restored", &disk, "WHO=r", &script);
    let claimed = spec(&f, "claimed", &disk, "WHO=s", &script);
    shim::template::ensure(&restored, &f.work.join("templates"), true)
        .unwrap_or_else(|e| panic!("template: {}", chain(&e)));

    for boot in ["cold", "restored", "claimed"] {
        // The overlay on a file system with less room than the writes take.
        let small = SmallFs::mount(&f.work.join(format!("small-{boot}")), 48);
        let root = small.0.join("root.qcow2");
        overlay(&disk, &root);
        let mut s = match boot {
            "cold" => cold.clone(),
            "restored" => restored.clone(),
            _ => claimed.clone(),
        };
        s.root_disk = root;
        let dir = container_dir(&f, boot, &disk, s.clone());
        // `container_dir` made its own overlay: the spec names the small one.
        std::fs::write(dir.join("spec.json"), serde_json::to_vec(&s).unwrap()).unwrap();
        if boot == "claimed" {
            let standby = standby(&f, "standby-p", &restored);
            wait_paused(&standby);
            let resp = claim(&standby, &dir);
            assert!(resp.ok, "claim: {resp:?}");
        } else {
            launch(&dir);
        }
        let shim_log = || std::fs::read_to_string(dir.join("shim.log")).unwrap_or_default();
        let resp = ask(&dir, Request::Start);
        assert!(resp.ok, "{resp:?}\n{}", shim_log());
        // The host disk fills: the VM is paused (and says so), the guest sees no error.
        let end = Instant::now() + Duration::from_secs_f64(180.0 * scale());
        while !shim::State::load(&dir).is_ok_and(|s| s.disk_full) {
            assert!(
                Instant::now() < end,
                "{boot}: the VM was not paused:\n{}\n{}",
                ctr_output(&dir),
                shim_log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(
            !ctr_output(&dir).contains("size="),
            "{boot}: finished on a full disk?"
        );
        // Room again: it resumes by itself, and every byte it wrote is there.
        small.grow(400);
        let end = Instant::now() + Duration::from_secs_f64(180.0 * scale());
        while !ctr_output(&dir).contains("ioerrors=") {
            assert!(
                Instant::now() < end,
                "{boot}: the container did not finish:\n{}\n{}",
                ctr_output(&dir),
                shim_log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let out = ctr_output(&dir);
        assert!(
            out.contains(&format!("size={} same=yes", BIG_MIB * MIB)),
            "{boot}: {out}"
        );
        assert!(out.contains("ioerrors=0"), "{boot}: {out}\n{}", shim_log());
        assert!(
            shim_log().contains("running again"),
            "{boot}: {}",
            shim_log()
        );
        assert!(
            !shim::State::load(&dir).unwrap().disk_full,
            "{boot}: still marked paused"
        );
        wait_shim_gone(&dir);
        drop(small);
        eprintln!("{boot}: paused on a full host disk, resumed, data intact");
    }
}
