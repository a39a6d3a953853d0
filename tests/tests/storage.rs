//! The node's disk (issue 17, finding 5) on a hyperd whose data root is a small ext4 of its
//! own: a tenant's real disk use counted against its storage quota, the free-space reserve, and
//! a VM whose disk write finds the host disk full paused, not corrupted, then resumed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use e2e::*;

fn main() {
    let tests: &[(&'static str, TestFn)] = &[
        (
            "storage_quota_counts_real_use",
            storage_quota_counts_real_use,
        ),
        (
            "the_reserve_refuses_new_things",
            the_reserve_refuses_new_things,
        ),
        (
            "a_full_disk_pauses_the_vm_clean",
            a_full_disk_pauses_the_vm_clean,
        ),
    ];
    std::process::exit(run_tests(tests));
}

/// What hyperd keeps free on its data root here.
const RESERVE_MIB: u64 = 96;

fn daemon() -> &'static Daemon {
    static D: OnceLock<Arc<Daemon>> = OnceLock::new();
    D.get_or_init(|| {
        Daemon::start(
            "st",
            DaemonOpts {
                data_fs_mib: Some(1536),
                extra_args: vec!["--disk-reserve".into(), format!("{RESERVE_MIB}M")],
                ..DaemonOpts::default()
            },
        )
    })
}

/// The tests share one small data root, and each fills it or measures it: one at a time.
fn disk_to_myself() -> MutexGuard<'static, ()> {
    static DISK: Mutex<()> = Mutex::new(());
    DISK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Bytes an unprivileged writer may still use on the file system holding `p`.
fn free_bytes(p: &Path) -> u64 {
    let s = nix::sys::statvfs::statvfs(p).unwrap();
    s.blocks_available() as u64 * s.fragment_size() as u64
}

/// A file on the data root's file system taking all but `leave` bytes of its free space
/// (written by root, as QEMU's writes are not: root may also use ext4's reserved blocks, so
/// hyperd's own writes go on while the VMs' fail); removed when dropped.
struct Filler(PathBuf);

impl Filler {
    fn leaving(d: &Daemon, leave: u64) -> Filler {
        let path = d.data.join("filler");
        let size = free_bytes(&d.data).saturating_sub(leave);
        let f = std::fs::File::create(&path).unwrap();
        nix::fcntl::fallocate(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            nix::fcntl::FallocateFlags::empty(),
            0,
            size as i64,
        )
        .unwrap();
        Filler(path)
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `storage_gb` counts what the tenant's containers, volumes and images really take, and gates
/// new ones with 403 naming the quota and the use.
fn storage_quota_counts_real_use() {
    let _disk = disk_to_myself();
    let d = daemon();
    let usage = |k: &str| -> u64 {
        d.info_field(&format!("StorageUsage.{k}"))
            .parse()
            .unwrap_or_else(|e| panic!("StorageUsage.{k}: {e}"))
    };
    assert!(usage("Images") > 0, "busybox counts");
    assert_eq!(usage("Quota"), 200_000_000_000, "the default: 200 GB");
    // A root disk counts by what it takes on the host, not by its 10 GB.
    let before = usage("Containers");
    let id = d
        .hyper(&[
            "run",
            "-d",
            "busybox",
            "sh",
            "-c",
            "dd if=/dev/urandom of=/f bs=1M count=40 && sync && echo written && sleep 600",
        ])
        .timeout(120.0)
        .run()
        .ok()
        .out();
    wait_for("the container's write", secs(120.0), || {
        let logs = d.hyper(&["logs", &id]).run().ok().stdout;
        logs.contains("written").then_some(()).ok_or(logs)
    });
    let grew = usage("Containers") - before;
    assert!(
        (40 << 20..(1 << 30)).contains(&grew),
        "40 MiB written: the root disks grew by {grew} bytes"
    );
    assert_eq!(
        usage("Total"),
        usage("Containers") + usage("Volumes") + usage("Images")
    );

    // At its quota, the tenant gets nothing new: no container, volume or image. The quota
    // comes back however this ends: the other tests share the tenant.
    struct QuotaBack<'a>(&'a Daemon);
    impl Drop for QuotaBack<'_> {
        fn drop(&mut self) {
            self.0
                .tenant_admin(&["quota", "default", "--storage-gb", "200"]);
        }
    }
    let _back = QuotaBack(d);
    let q = d.tenant_admin(&["quota", "default", "--storage-gb", "0"]);
    assert!(q.stdout.contains("0 GB of storage"), "{q}");
    let tar = busybox_tar();
    for args in [
        vec!["run", "--rm", "busybox", "true"],
        vec!["volume", "create", "--name", "over"],
        vec!["load", "-i", tar.to_str().unwrap()],
    ] {
        let o = d.hyper(&args).timeout(60.0).run();
        assert!(
            o.code != 0
                && o.stderr.contains("storage quota exceeded")
                && o.stderr.contains("0 GB of storage per account")
                && o.stderr.contains("(containers "),
            "{args:?}: {o}"
        );
    }
    let api = d.api(
        "POST",
        "/v1.44/volumes/create",
        &["-d", "{\"Name\":\"over\"}"],
    );
    assert!(api.stdout.ends_with("\n403"), "{api}");
    // A tenant under its quota again is served again.
    drop(_back);
    d.hyper(&["volume", "create", "--name", "under"]).run().ok();
    d.hyper(&["volume", "rm", "under"]).run().ok();
    d.hyper(&["rm", "-f", &id]).timeout(60.0).run().ok();
}

/// Below the reserve, new containers and volumes are refused with 507 saying the node is short
/// of disk; with space back, they are made again.
fn the_reserve_refuses_new_things() {
    let _disk = disk_to_myself();
    let d = daemon();
    let filler = Filler::leaving(d, (RESERVE_MIB / 2) << 20);
    for args in [
        vec!["run", "--rm", "busybox", "true"],
        vec!["volume", "create", "--name", "short"],
    ] {
        let o = d.hyper(&args).timeout(60.0).run();
        assert!(
            o.code != 0
                && o.stderr.contains("this node is short of disk space")
                && o.stderr.contains("in reserve"),
            "{args:?}: {o}"
        );
    }
    let api = d.api(
        "POST",
        "/v1.44/volumes/create",
        &["-d", "{\"Name\":\"short\"}"],
    );
    assert!(api.stdout.ends_with("\n507"), "{api}");
    drop(filler);
    let o = d
        .hyper(&["run", "--rm", "busybox", "echo", "room"])
        .timeout(120.0)
        .run()
        .ok();
    assert_eq!(o.out(), "room");
}

/// A container that writes more than the host disk has left is paused (inspect says why), not
/// handed I/O errors; once space is freed it resumes by itself, and everything it wrote is on
/// its disk, intact. Removed, its space is free for new things at once.
fn a_full_disk_pauses_the_vm_clean() {
    let _disk = disk_to_myself();
    let d = daemon();
    // The data: 300 MiB of a known stream, written, synced, then read back and checked
    // against the same stream made again, inside the guest. Room for ~150 MiB of it.
    let script = "yes hyper-storage-check | head -c 314572800 > /big && sync && \
                  a=$(sha256sum < /big) && b=$(yes hyper-storage-check | head -c 314572800 | sha256sum) && \
                  echo size=$(wc -c < /big) same=$([ \"$a\" = \"$b\" ] && echo yes || echo no) && \
                  echo ioerrors=$(dmesg | grep -ciE 'i/o error|ext4-fs error|buffer i/o') && sleep 600";
    let filler = Filler::leaving(d, 150 << 20);
    let id = d
        .hyper(&["run", "-d", "busybox", "sh", "-c", script])
        .timeout(120.0)
        .run()
        .ok()
        .out();
    let state = |f: &str| {
        d.hyper(&["inspect", "-f", &format!("{{{{.State.{f}}}}}"), &id])
            .run()
            .ok()
            .out()
    };
    wait_for(
        "the VM paused for lack of disk",
        secs(300.0),
        || match state("Status").as_str() {
            "paused" => Ok(()),
            s => Err(format!("{s}: {}", d.hyper(&["logs", &id]).run().stdout)),
        },
    );
    assert_eq!(state("Paused"), "true");
    assert!(
        state("Error").contains("ran out of disk space"),
        "{}",
        state("Error")
    );
    // It stays paused while the disk is full.
    std::thread::sleep(secs(5.0));
    assert_eq!(state("Status"), "paused");
    drop(filler);
    wait_for("the container's check", secs(300.0), || {
        let logs = d.hyper(&["logs", &id]).run().ok().stdout;
        logs.contains("ioerrors=").then_some(()).ok_or(logs)
    });
    let logs = d.hyper(&["logs", &id]).run().ok().stdout;
    assert!(logs.contains("size=314572800 same=yes"), "{logs}");
    assert!(logs.contains("ioerrors=0"), "{logs}");
    assert_eq!(state("Status"), "running");
    assert_eq!(state("Error"), "");
    // The node short of its reserve again, now for want of the space this container's disk
    // takes: `rm -f` answers once the VM is killed and deletes the disk in the background, yet
    // the space is its user's at once (a new allocation waits for the deletion).
    let filler = Filler::leaving(d, (RESERVE_MIB / 2) << 20);
    d.hyper(&["rm", "-f", &id]).timeout(60.0).run().ok();
    d.hyper(&["volume", "create", "--name", "freed"]).run().ok();
    d.hyper(&["volume", "rm", "freed"]).run().ok();
    drop(filler);
    // The next test to take the disk measures what is free: the disk must be gone first.
    d.wait_torn_down(&[id], secs(60.0));
}
