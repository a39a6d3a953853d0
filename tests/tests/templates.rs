//! VM template integrity (issue 17, finding 6): the RAM file every restored VM maps is held
//! open read-write by each restored QEMU (QEMU 7.2), so a template written to after it was
//! built must never be restored, nor a standby restored from it claimed: the next start
//! rebuilds it and the container runs all the same.

use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use e2e::*;

fn main() {
    let tests: &[(&'static str, TestFn)] = &[(
        "a_modified_template_is_never_restored",
        a_modified_template_is_never_restored,
    )];
    std::process::exit(run_tests(tests));
}

/// The complete template under the daemon's data root (there is one size here).
fn template(d: &Daemon) -> (PathBuf, serde_json::Value) {
    let dir = std::fs::read_dir(d.data.join("templates"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.join("meta.json").is_file())
        .expect("a template");
    let meta = serde_json::from_slice(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap();
    (dir, meta)
}

fn a_modified_template_is_never_restored() {
    let d = main_daemon();
    wait_for("a standby VM ready", secs(180.0), || {
        match d.info_field("StandbyVMsReady") {
            n if n != "0" => Ok(()),
            _ => Err(d.info_field("StandbyVMs")),
        }
    });
    let (dir, before) = template(d);
    // One byte of the guest's memory changed through a read-write descriptor, as a QEMU taken
    // over by its guest could (the file's mode is 0444; QEMU opens it as root).
    {
        let ram = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join("ram"))
            .unwrap();
        let mut b = [0u8; 1];
        ram.read_exact_at(&mut b, 4096).unwrap();
        ram.write_all_at(&[!b[0]], 4096).unwrap();
    }
    let id = d
        .hyper(&["run", "-d", "busybox", "sh", "-c", "echo ran; sleep 600"])
        .timeout(180.0)
        .run()
        .ok()
        .out();
    wait_for("the container's output", secs(60.0), || {
        let logs = d.hyper(&["logs", &id]).run().ok().stdout;
        logs.contains("ran").then_some(()).ok_or(logs)
    });
    // Not on a standby restored from the old file: that claim was refused, and the VM was
    // restored from a template built anew.
    let shim_log = std::fs::read_to_string(d.cdir(&id).join("shim.log")).unwrap();
    assert!(!shim_log.contains(STANDBY_CLAIMED), "{shim_log}");
    assert!(shim_log.contains("restored from template"), "{shim_log}");
    let hyperd_log = std::fs::read_to_string(&d.log).unwrap();
    assert!(
        hyperd_log.contains("this standby VM was restored from has changed since: not claiming it"),
        "{}",
        d.log_tail(40)
    );
    let (_, after) = template(d);
    assert_eq!(after["key"], before["key"], "same inputs, same key");
    assert_ne!(after["created_at"], before["created_at"], "rebuilt");
    assert_ne!(after["ram_ctime"], before["ram_ctime"]);
    d.hyper(&["rm", "-f", &id]).timeout(60.0).run().ok();
}
