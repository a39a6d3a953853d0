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
