//! End-to-end: VM templates through the `hyper-shim` binary, on real microVMs.
//!
//! Same switches as `e2e.rs`: skipped (with a printed reason) unless `HYPER_TEST_KERNEL_DIR` is
//! set; `HYPER_TEST_AGENT`, `HYPER_TEST_ACCEL`, `HYPER_TEST_TIMEOUT_SCALE`. One VM at a time.
//!
//! - Two containers restored from one template differ in everything that must not be shared
//!   (hostname, /dev/urandom stream, boot id, clock set from the host), and each sees its own
//!   root disk (content and size) and env.
//! - A template whose inputs changed (kernel command line here; kernel, initramfs and QEMU are
//!   content-hashed into the key, see the unit tests) is rebuilt, never used, and the stale one
//!   removed.
//! - A template whose RAM file was written to after it was built is not used; one whose
//!   content differs from its recorded digest is retired and rebuilt.
//! - A template that fails to restore falls back to a cold boot, and the container still runs.
//! - A volume (an ext4 file) is the container's in a cold boot, a restore and a claimed standby:
//!   the guest sees it in its slot (serial) with its own size, the container reads what the host
//!   wrote and what earlier runs wrote; its file systems freeze and thaw on request.
//! - The same with a Ceph RBD image as the volume, when `HYPER_TEST_CEPH_DIR` names a running
//!   cluster of `scripts/ceph-cluster start DIR` (skipped with a note otherwise); no key file is
//!   left in the VM's directory and the image has no watcher once the VMs are gone.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod common;
use common::boots::*;
use common::*;
use shim::{Request, Spec};

static ONE_VM_AT_A_TIME: Mutex<()> = Mutex::new(());

const PROBE: &str = "echo host=$(hostname); \
echo random=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'); \
echo boot_id=$(cat /proc/sys/kernel/random/boot_id); \
echo env=$WHO; echo marker=$(cat /marker); echo sectors=$(cat /sys/block/vda/size); \
echo machine_id=$(cat /etc/machine-id); echo now=$(date +%s)";

macro_rules! need_vm {
    () => {{
        let Some(f) = fixture() else {
            eprintln!("SKIPPED: set HYPER_TEST_KERNEL_DIR (and optionally HYPER_TEST_AGENT) to boot real VMs");
            return;
        };
        (f, ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner()))
    }};
}

/// The containers `alpha` (WHO=a on disk-a) and `bravo` (WHO=b on disk-b) running [`PROBE`],
/// and their template, built ahead of time as hyperd does (one for both: the same size).
struct Probes {
    disk_a: PathBuf,
    disk_b: PathBuf,
    alpha: Spec,
    bravo: Spec,
    template: shim::template::Template,
}

fn probes(f: &Fixture) -> Probes {
    let (disk_a, disk_b) = (base_disk(f, "disk-a"), base_disk(f, "disk-b"));
    let alpha = spec(f, "alpha", &disk_a, "WHO=a", PROBE);
    let bravo = spec(f, "bravo", &disk_b, "WHO=b", PROBE);
    let template = shim::template::ensure(&alpha, &f.work.join("templates"), true)
        .unwrap_or_else(|e| panic!("template: {}", chain(&e)));
    Probes {
        disk_a,
        disk_b,
        alpha,
        bravo,
        template,
    }
}

#[test]
fn two_containers_from_one_template_differ() {
    let (f, _g) = need_vm!();
    let p = probes(&f);
    let (disk_a, disk_b, sa, sb, t) = (p.disk_a, p.disk_b, p.alpha, p.bravo, p.template);
    assert!(t.ram().is_file() && t.state().is_file());
    // Let the template's clock fall behind the host's: the restore must set it.
    std::thread::sleep(Duration::from_secs(3));
    let a = run(&f, "alpha", &disk_a, sa);
    let b = run(&f, "bravo", &disk_b, sb);
    for r in [&a, &b] {
        assert!(
            r.shim_log
                .contains(&format!("restored from template {}", t.meta.key)),
            "not restored:\n{}",
            r.shim_log
        );
    }
    assert_distinct(&a, &b);
}

/// What two containers `alpha` (WHO=a on disk-a) and `bravo` (WHO=b on disk-b) from one
/// template must show: their own hostname, env and disk, and no identity shared.
fn assert_distinct(a: &Run, b: &Run) {
    let (fa, fb) = (fields(&a.output), fields(&b.output));
    eprintln!("alpha: {fa:?}\nbravo: {fb:?}");
    assert_eq!(fa["host"], "alpha");
    assert_eq!(fb["host"], "bravo");
    assert_eq!((fa["env"].as_str(), fb["env"].as_str()), ("a", "b"));
    assert_eq!(
        (fa["marker"].as_str(), fb["marker"].as_str()),
        ("disk-a", "disk-b")
    );
    // The block device is the container's overlay, of the root slot's size.
    let sectors = (vm::ROOT_DISK_BYTES / 512).to_string();
    assert_eq!(
        (fa["sectors"].as_str(), fb["sectors"].as_str()),
        (sectors.as_str(), sectors.as_str())
    );
    assert_eq!(fa["random"].len(), 64);
    assert_ne!(fa["random"], fb["random"], "same /dev/urandom stream");
    assert_ne!(fa["boot_id"], fb["boot_id"], "same boot id");
    assert_eq!(fa["machine_id"].len(), 32);
    assert_ne!(fa["machine_id"], fb["machine_id"]);
    let host_now = chrono::Utc::now().timestamp();
    for (n, x) in [("alpha", &fa), ("bravo", &fb)] {
        let guest: i64 = x["now"].parse().unwrap();
        assert!(
            (host_now - guest).abs() <= 30 && guest >= host_now - 30,
            "{n}: guest clock {guest}, host {host_now}"
        );
    }
}

#[test]
fn containers_claim_standby_vms_and_still_differ() {
    let (f, _g) = need_vm!();
    let p = probes(&f);
    let (disk_a, disk_b, sa, sb, t) = (p.disk_a, p.disk_b, p.alpha, p.bravo, p.template);
    let (s1, s2) = (standby(&f, "standby-1", &sa), standby(&f, "standby-2", &sa));
    for s in [&s1, &s2] {
        let log = std::fs::read_to_string(s.join("shim.log")).unwrap();
        assert!(
            log.contains(&format!("restored from template {}", t.meta.key))
                && log.contains("rehearsed a start"),
            "{log}"
        );
    }
    // A standby is for containers of its template only; a refused claim leaves the
    // container's directory as it was.
    let mut bigger = sa.clone();
    bigger.memory_mib += 64;
    let other = container_dir(&f, "other", &disk_a, bigger);
    let resp = claim(&s2, &other);
    assert!(!resp.ok, "{resp:?}");
    assert!(resp.error.unwrap_or_default().contains("template"));
    assert!(other.join("spec.json").is_file() && other.join("root.qcow2").is_file());
    let s3 = standby(&f, "standby-3", &sa);

    // Waiting standbys are paused; a claim resumes the VM.
    for s in [&s1, &s3] {
        wait_paused(s);
    }
    let a = run_claimed(&f, "alpha", &disk_a, sa, &s1);
    let b = run_claimed(&f, "bravo", &disk_b, sb, &s3);
    for (r, s) in [(&a, &s1), (&b, &s3)] {
        assert!(!s.exists(), "the standby's directory is still there");
        assert!(
            r.shim_log.contains("standby: claimed by container"),
            "{}",
            r.shim_log
        );
        assert!(r.shim_log.contains("(standby)"), "{}", r.shim_log);
    }
    assert_distinct(&a, &b);
}

#[test]
fn stale_template_is_rebuilt_and_broken_one_falls_back() {
    let (f, _g) = need_vm!();
    let disk = base_disk(&f, "disk-s");
    let templates = f.work.join("templates");
    let s1 = spec(&f, "old", &disk, "WHO=s", "echo marker=$(cat /marker)");
    let t1 = shim::template::ensure(&s1, &templates, true)
        .unwrap_or_else(|e| panic!("template: {}", chain(&e)));
    // A template whose content is not what it was built with (its recorded digest differs,
    // as when the RAM file changed in a way its ctime does not show) is retired and rebuilt.
    {
        let meta = t1.dir.join(shim::template::META);
        let mut m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
        m["ram_sha256"] = "0".repeat(64).into();
        std::fs::write(&meta, serde_json::to_vec(&m).unwrap()).unwrap();
    }
    let t1 = shim::template::ensure(&s1, &templates, true)
        .unwrap_or_else(|e| panic!("template: {}", chain(&e)));
    let rebuilt: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t1.dir.join(shim::template::META)).unwrap()).unwrap();
    assert_ne!(rebuilt["ram_sha256"], "0".repeat(64), "not rebuilt");
    // A template whose RAM file was written after it was built is never restored.
    assert!(shim::template::find(&s1, &templates).unwrap().is_some());
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(t1.ram())
            .unwrap();
        f.write_all_at(&[0], 0).unwrap();
    }
    assert!(
        shim::template::find(&s1, &templates).unwrap().is_none(),
        "a tampered template was found"
    );
    // Another kernel command line: the old template must not be used; a new one is built by
    // the start itself, and the old one removed.
    let mut s2 = s1.clone();
    s2.kernel_cmdline_extra = "hyper.test=stale".into();
    assert!(shim::template::find(&s2, &templates).unwrap().is_none());
    let r = run(&f, "new", &disk, s2.clone());
    let t2 = shim::template::find(&s2, &templates)
        .unwrap()
        .expect("rebuilt");
    assert_ne!(t1.meta.key, t2.meta.key);
    assert!(
        r.shim_log
            .contains(&format!("restored from template {}", t2.meta.key)),
        "{}",
        r.shim_log
    );
    assert!(!t1.dir.exists(), "the stale template is still there");
    assert_eq!(fields(&r.output)["marker"], "disk-s");

    // A template that cannot be restored (its device state truncated, and recorded so: a
    // changed one would be rebuilt, see above): cold boot, and the container runs all the same.
    std::fs::write(t2.state(), b"QEVM").unwrap();
    {
        let meta = t2.dir.join(shim::template::META);
        let mut m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
        m["state_sha256"] = shim::integrity::digest(&t2.state()).unwrap().into();
        std::fs::write(&meta, serde_json::to_vec(&m).unwrap()).unwrap();
    }
    let r = run(&f, "fallback", &disk, s2);
    assert!(r.shim_log.contains("booting cold"), "{}", r.shim_log);
    assert!(r.shim_log.contains("(cold boot)"), "{}", r.shim_log);
    assert_eq!(fields(&r.output)["marker"], "disk-s");
}

/// The probe of a container with a volume at /data: every virtio disk (name, serial, sectors,
/// the most one discard may free), the host's file on the volume, and the runs so far (this
/// one appended as `$RUN`).
const VOLUME_PROBE: &str =
    "for d in /sys/block/vd*; do echo \"dev=${d##*/} $(cat $d/serial) $(cat $d/size) $(cat $d/queue/discard_max_bytes)\"; done; \
echo data=$(cat /data/hello); echo $RUN >> /data/runs; echo runs=$(cat /data/runs | tr '\\n' ' ')";

/// Volume slot and size of the test volume (slot 1, so that neither the device name nor slot 0
/// lines up by chance).
const VOL_SLOT: u8 = 1;
const VOL_BYTES: u64 = 64 << 20;

/// A 64 MiB ext4 volume holding `/hello`, as hyperd's local backend makes one.
fn volume_disk(f: &Fixture) -> PathBuf {
    let tree = f.work.join("volume-tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("hello"), "from the host").unwrap();
    let img = f.work.join("volume.img");
    ext4_image(&tree, &img, "64M");
    assert_eq!(std::fs::metadata(&img).unwrap().len(), VOL_BYTES);
    img
}

fn with_volume(mut s: Spec, disk: &shim::VolumeDisk, run: &str) -> Spec {
    s.process.env.push(format!("RUN={run}"));
    s.volumes = vec![shim::VolumeSpec {
        disk: disk.clone(),
        mount: agent_proto::VolumeMount {
            slot: VOL_SLOT,
            target: "/data".into(),
            size_bytes: VOL_BYTES,
            ..Default::default()
        },
    }];
    s
}

/// What [`VOLUME_PROBE`] must show after the runs `runs`.
fn assert_volume_seen(output: &str, runs: &str) {
    eprintln!("{output}");
    let disks: Vec<&str> = output
        .lines()
        .filter_map(|l| l.strip_prefix("dev="))
        .collect();
    // The root disk (no serial), then every slot with its serial: the volume with its own
    // size, the empty ones with the placeholder's.
    assert_eq!(disks.len(), 1 + vm::VOLUME_SLOTS, "{output}");
    for slot in 0..vm::VOLUME_SLOTS {
        let sectors = if slot == usize::from(VOL_SLOT) {
            VOL_BYTES / 512
        } else {
            vm::volume::EMPTY_SLOT_BYTES / 512
        };
        let want = format!(" {} {sectors} ", vm::volume_serial(slot));
        let disk = disks.iter().find(|d| d.contains(&want));
        let disk = disk.unwrap_or_else(|| panic!("no disk{want}:\n{output}"));
        // The guest may discard (`discard=unmap` passes it on: the file's blocks are freed).
        assert_ne!(disk.rsplit(' ').next(), Some("0"), "{disk}");
    }
    let f = fields(output);
    assert_eq!(f["data"], "from the host", "{output}");
    assert_eq!(f["runs"], runs, "{output}");
}

/// A cold-booted container with the volume: the probe, then `Freeze`/`Thaw` of its volume while
/// it runs (and not before), then a stop. Returns the container's directory.
fn cold_with_volume(f: &Fixture, disk: &Path, img: &shim::VolumeDisk) -> PathBuf {
    let mut s = with_volume(
        spec(
            f,
            "cold",
            disk,
            "WHO=c",
            &format!("{VOLUME_PROBE}; echo probed; exec sleep 600"),
        ),
        img,
        "cold",
    );
    s.template_dir = None;
    let dir = container_dir(f, "cold", disk, s);
    launch(&dir);
    let shim_log = || std::fs::read_to_string(dir.join("shim.log")).unwrap_or_default();
    let freeze = || Request::Freeze {
        targets: vec!["/data".into()],
    };
    let r = ask(&dir, freeze());
    assert!(!r.ok && r.error.unwrap().contains("not running"));
    assert!(ask(&dir, Request::Start).ok, "{}", shim_log());
    let output = || ctr_output(&dir);
    let end = Instant::now() + Duration::from_secs_f64(60.0 * scale());
    while !output().contains("probed") {
        assert!(
            Instant::now() < end,
            "no probe output:\n{}\n{}",
            output(),
            shim_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_volume_seen(&output(), "cold");
    let r = ask(&dir, freeze());
    assert!(r.ok, "freeze: {r:?}");
    let r = ask(
        &dir,
        Request::Thaw {
            targets: vec!["/data".into()],
        },
    );
    assert!(r.ok, "thaw: {r:?}");
    let r = ask(
        &dir,
        Request::Freeze {
            targets: vec!["/nowhere".into()],
        },
    );
    assert!(!r.ok, "froze a path that is no volume: {r:?}");
    let r = ask(
        &dir,
        Request::Stop {
            signal: 9,
            timeout_secs: 10,
            keep_disk: false,
        },
    );
    assert_eq!(r.state.unwrap().status, shim::Status::Exited);
    assert!(shim_log().contains("(cold boot)"), "{}", shim_log());
    wait_shim_gone(&dir);
    dir
}

#[test]
fn a_volume_in_cold_restored_and_claimed_vms() {
    let (f, _g) = need_vm!();
    let disk = base_disk(&f, "disk-v");
    let img = shim::VolumeDisk::Local {
        path: volume_disk(&f),
    };
    volume_in_every_boot(&f, &disk, &img);
}

/// The volume `img` in a cold-booted, a restored and a claimed container, in that order (each
/// reads what the ones before wrote). Returns their directories.
fn volume_in_every_boot(f: &Fixture, disk: &Path, img: &shim::VolumeDisk) -> [PathBuf; 3] {
    let cold = cold_with_volume(f, disk, img);

    // Restored from the template: the guest probed the slot's placeholder when the template was
    // made and must learn the volume's size.
    let s = with_volume(
        spec(f, "restored", disk, "WHO=r", VOLUME_PROBE),
        img,
        "restored",
    );
    let restored = run(f, "restored", disk, s.clone());
    let r = &restored;
    assert!(
        r.shim_log.contains("restored from template"),
        "{}",
        r.shim_log
    );
    assert_volume_seen(&r.output, "cold restored");

    // Claimed from a standby: the volume is attached to a paused VM.
    let sb = standby(f, "standby-v", &s);
    wait_paused(&sb);
    let s = with_volume(
        spec(f, "claimed", disk, "WHO=s", VOLUME_PROBE),
        img,
        "claimed",
    );
    let claimed = run_claimed(f, "claimed", disk, s, &sb);
    let r = &claimed;
    assert!(
        r.shim_log.contains("standby: claimed by container"),
        "{}",
        r.shim_log
    );
    assert_volume_seen(&r.output, "cold restored claimed");
    for r in [&restored, &claimed] {
        for l in r.shim_log.lines() {
            if l.contains("restored from template") || l.contains("claimed in") {
                eprintln!("{l}");
            }
        }
    }
    [cold, restored.dir.clone(), claimed.dir.clone()]
}

/// The test cluster `HYPER_TEST_CEPH_DIR` names (made by `scripts/ceph-cluster start DIR`).
struct Ceph {
    dir: PathBuf,
    /// The first monitor, `ip:3300`.
    monitor: String,
    /// client.hyper's key.
    key: String,
}

fn ceph() -> Option<Ceph> {
    let dir = PathBuf::from(std::env::var_os("HYPER_TEST_CEPH_DIR")?);
    let env = std::fs::read_to_string(dir.join("cluster.env")).unwrap_or_else(|e| {
        panic!(
            "HYPER_TEST_CEPH_DIR={}: no cluster.env ({e}); start one with scripts/ceph-cluster start DIR",
            dir.display()
        )
    });
    let var = |k: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k} in {}/cluster.env", dir.display()))
            .to_string()
    };
    Some(Ceph {
        monitor: var("MON_V2"),
        key: var("HYPER_KEY"),
        dir,
    })
}

impl Ceph {
    /// `rbd` as client.hyper.
    fn rbd(&self) -> Command {
        let mut c = Command::new("rbd");
        c.arg("-c")
            .arg(self.dir.join("ceph.conf"))
            .args(["--id", "hyper"]);
        c
    }
}

/// An RBD image of the test cluster, removed when dropped.
struct RbdImage<'a> {
    ceph: &'a Ceph,
    name: String,
}

impl Drop for RbdImage<'_> {
    fn drop(&mut self) {
        let _ = self
            .ceph
            .rbd()
            .args(["rm", "--no-progress", &self.name])
            .output();
    }
}

#[test]
fn an_rbd_volume_in_cold_restored_and_claimed_vms() {
    let Some(ceph) = ceph() else {
        eprintln!("SKIPPED: set HYPER_TEST_CEPH_DIR to a cluster started by scripts/ceph-cluster start DIR");
        return;
    };
    let (f, _g) = need_vm!();
    let disk = base_disk(&f, "disk-r");
    // The volume's ext4 (as for a local volume), imported as the image: 64 MiB, `/hello`.
    let image = RbdImage {
        ceph: &ceph,
        name: format!(
            "hyper-test-{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_micros()
        ),
    };
    let local = volume_disk(&f);
    let out = ceph
        .rbd()
        .args(["import", "--no-progress"])
        .arg(&local)
        .arg(format!("rbd/{}", image.name))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rbd import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let img = shim::VolumeDisk::Rbd {
        pool: "rbd".into(),
        image: image.name.clone(),
        user: "hyper".into(),
        key: ceph.key.clone(),
        monitors: vec![ceph.monitor.clone()],
    };
    let dirs = volume_in_every_boot(&f, &disk, &img);
    for d in &dirs {
        // The key went to QEMU and not beyond: no file left, nothing on a command line.
        assert!(!d.join("vol1.key").exists(), "{}", d.display());
        let log = std::fs::read_to_string(d.join("shim.log")).unwrap_or_default();
        assert!(
            !log.contains(&ceph.key),
            "the key is in {}/shim.log",
            d.display()
        );
    }
    // Every QEMU closed the image (clean exits release librbd's lock and watch).
    let out = ceph.rbd().args(["status", &image.name]).output().unwrap();
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(status.contains("Watchers: none"), "{status}");
}
