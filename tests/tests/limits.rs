//! Noisy neighbours (issue 17, item 8): a tenant whose containers all spin leaves another
//! tenant's `run` and `exec` working, each VM's QEMU sits in a cgroup of its container with a
//! CPU quota and memory limit from its size (gone with the container), and each tenant's API
//! calls and streams over TCP are rate-limited apart from every other tenant's.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use e2e::*;

fn main() {
    let tests: &[(&'static str, TestFn)] = &[
        (
            "busy_tenant_leaves_another_responsive",
            busy_tenant_leaves_another_responsive,
        ),
        (
            "api_rate_and_streams_are_per_tenant",
            api_rate_and_streams_are_per_tenant,
        ),
        ("unconfined_for_comparison", unconfined_for_comparison),
    ];
    std::process::exit(run_tests(tests));
}

const BURST: usize = 30;
const MAX_STREAMS: usize = 3;

/// One hyperd for the file: VMs in cgroups (refusing to start without), and tight API limits.
fn daemon() -> &'static Daemon {
    static D: OnceLock<Arc<Daemon>> = OnceLock::new();
    D.get_or_init(|| {
        let opts = DaemonOpts {
            extra_args: [
                "--vm-cgroups",
                "on",
                "--api-rate",
                "2",
                "--api-burst",
                &BURST.to_string(),
                "--max-streams",
                &MAX_STREAMS.to_string(),
            ]
            .map(String::from)
            .to_vec(),
            ..DaemonOpts::default()
        };
        Daemon::start("lim", opts)
    })
}

/// A tenant with busybox loaded: its client config directory.
fn tenant_with_busybox(d: &Daemon, name: &str) -> PathBuf {
    let (cfg, _) = d.new_tenant(name);
    d.hyper_tcp(&cfg, &["load", "-i", busybox_tar().to_str().unwrap()])
        .timeout(120.0)
        .run()
        .ok();
    cfg
}

/// A fixed amount of CPU work for a guest: how long it takes shows the CPU share its VM gets.
const CPU_WORK: &str = "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done";

/// How long `run --rm busybox true`, `exec CTR true` and `exec CTR sh -c CPU_WORK` of `cfg`'s
/// tenant took. Each must succeed.
fn run_and_exec(d: &Daemon, cfg: &Path, ctr: &str) -> [Timing; 3] {
    timings(d, cfg, ctr).map(|t| Ok(t.unwrap_or_else(|e| panic!("{e}"))))
}

/// Each command's time, or how it failed.
type Timing = Result<Duration, String>;

/// As `run_and_exec`, with failures recorded rather than fatal.
fn timings(d: &Daemon, cfg: &Path, ctr: &str) -> [Timing; 3] {
    let commands: [&[&str]; 3] = [
        &["run", "--rm", "busybox", "true"],
        &["exec", ctr, "true"],
        &["exec", ctr, "sh", "-c", CPU_WORK],
    ];
    commands.map(|args| {
        let o = d.hyper_tcp(cfg, args).timeout(600.0).run();
        match o.code {
            0 => Ok(o.took),
            _ => Err(format!("`hyper {}`: {}", args.join(" "), o.stderr.trim())),
        }
    })
}

/// The cgroup directories `pid` is in, in the hierarchies with a cpu, memory or I/O
/// controller.
fn groups_of(pid: &str) -> Vec<PathBuf> {
    let limits = [
        "cpu.max",
        "cpu.cfs_quota_us",
        "memory.max",
        "memory.limit_in_bytes",
        "io.max",
        "blkio.throttle.read_bps_device",
    ];
    cgroup_dirs(pid)
        .into_iter()
        .filter(|dir| limits.iter().any(|f| dir.join(f).exists()))
        .collect()
}

/// The whole disk (`major:minor`) under the data root, where VMs' disks are files: what their
/// I/O limits name. None when the filesystem has no block device.
fn data_disk(d: &Daemon) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(&d.data).unwrap().dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    if major == 0 || !sys.exists() {
        return None;
    }
    if !sys.join("partition").exists() {
        return Some(format!("{major}:{minor}"));
    }
    let part = std::fs::canonicalize(&sys).unwrap();
    read(part.parent().unwrap(), "dev")
}

fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Checks the groups of container `id` (of one vCPU and `memory_mib`) for its QEMU and
/// supervisor, and returns them. Its disk I/O is limited when the data root is on a disk and
/// the node has a hierarchy that throttles.
fn check_groups(d: &Daemon, tenant: &str, id: &str, memory_mib: u64) -> Vec<PathBuf> {
    let procs = container_processes(d, id);
    let qemu = procs
        .iter()
        .find(|p| p.contains("qemu-system"))
        .unwrap_or_else(|| panic!("no QEMU of {id}: {procs:?}"));
    let qemu_pid = qemu.split_whitespace().next().unwrap();
    let dirs = groups_of(qemu_pid);
    assert!(
        !dirs.is_empty(),
        "QEMU {qemu_pid} of {id} is in no cpu/memory cgroup"
    );
    let want_tail = format!("tenant-{tenant}/{id}");
    let mut cpu_seen = false;
    let mut memory_seen = false;
    let disk = data_disk(d);
    // 64 MiB/s and 2000 operations per second each way for one vCPU.
    let (bps, iops) = (64u64 << 20, 2000);
    // A quarter CPU beyond the vCPU, the kernel's and QEMU's memory beyond the size's.
    let memory = ((memory_mib + 40 + 256) << 20).to_string();
    for dir in &dirs {
        let base = dir
            .parent()
            .and_then(Path::parent)
            .and_then(Path::file_name);
        assert!(
            dir.ends_with(&want_tail)
                && base.is_some_and(|b| b.to_string_lossy().starts_with("hyper-")),
            "QEMU of {id} is in {}, not its own group",
            dir.display()
        );
        if let Some(max) = read(dir, "cpu.max") {
            assert_eq!(max, "125000 100000", "{}", dir.display());
            cpu_seen = true;
        }
        if let Some(quota) = read(dir, "cpu.cfs_quota_us") {
            assert_eq!(quota, "125000", "{}", dir.display());
            assert_eq!(read(dir, "cpu.cfs_period_us").unwrap(), "100000");
            cpu_seen = true;
        }
        if let Some(max) = read(dir, "memory.max").or_else(|| read(dir, "memory.limit_in_bytes")) {
            assert_eq!(max, memory, "{}", dir.display());
            memory_seen = true;
        }
        if let (Some(disk), Some(max)) = (&disk, read(dir, "io.max")) {
            let want = format!("{disk} rbps={bps} wbps={bps} riops={iops} wiops={iops}");
            assert!(max.lines().any(|l| l == want), "{}: {max}", dir.display());
        }
        if let Some(disk) = &disk {
            for (file, want) in [
                ("blkio.throttle.read_bps_device", bps),
                ("blkio.throttle.write_bps_device", bps),
                ("blkio.throttle.read_iops_device", iops),
                ("blkio.throttle.write_iops_device", iops),
            ] {
                if let Some(max) = read(dir, file) {
                    let want = format!("{disk} {want}");
                    assert!(
                        max.lines().any(|l| l == want),
                        "{}/{file}: {max}",
                        dir.display()
                    );
                }
            }
        }
        // The supervisor goes with its VM.
        let members = read(dir, "cgroup.procs").unwrap();
        for p in &procs {
            let pid = p.split_whitespace().next().unwrap();
            assert!(
                members.lines().any(|m| m == pid),
                "{p} is not in {}: {members}",
                dir.display()
            );
        }
    }
    assert!(
        cpu_seen && memory_seen,
        "no CPU or memory limit for {id}: {dirs:?}"
    );
    dirs
}

/// Runs `sleeper` (`sleep`) for `cfg`'s tenant on a claimed standby VM: its ID.
fn claim_a_standby(d: &Daemon, cfg: &Path) -> String {
    for attempt in 1..=3 {
        wait_for("a standby VM ready", secs(120.0), || {
            match d.info_field("StandbyVMsReady") {
                n if n != "0" => Ok(()),
                _ => Err(d.info_field("StandbyVMs")),
            }
        });
        let run = [
            "run", "-d", "--name", "sleeper", "busybox", "sleep", "100000",
        ];
        d.hyper_tcp(cfg, &run).timeout(300.0).run().ok();
        let id = id_of(d, cfg, "sleeper");
        let log = std::fs::read_to_string(d.cdir(&id).join("shim.log")).unwrap_or_default();
        if log.contains(STANDBY_CLAIMED) {
            return id;
        }
        eprintln!("attempt {attempt} did not get a standby:\n{log}");
        d.hyper_tcp(cfg, &["rm", "-f", &id]).run().ok();
    }
    panic!("no start claimed a standby VM in three attempts");
}

fn id_of(d: &Daemon, cfg: &Path, name: &str) -> String {
    d.hyper_tcp(cfg, &["inspect", "--format", "{{.Id}}", name])
        .run()
        .ok()
        .out()
}

/// Prints how long tenant calm's `run_and_exec`s took, as the README quotes them.
fn figure(label: &str, runs: &[[Timing; 3]]) {
    let show = |i: usize| {
        runs.iter()
            .map(|r| match &r[i] {
                Ok(t) => format!("{:.2}s", t.as_secs_f64()),
                Err(e) => format!("failed ({})", e.lines().next().unwrap_or_default()),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "limits figure: tenant calm, {label}: run --rm busybox true: {}; exec true: {}; \
         exec of a 100000-step shell loop: {}",
        show(0),
        show(1),
        show(2)
    );
}

/// Runs `n` containers of `cfg`'s tenant spinning in a shell loop, named `spinN`: their IDs.
fn spin(d: &Daemon, cfg: &Path, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let name = format!("spin{i}");
            let run = [
                "run",
                "-d",
                "--name",
                &name,
                "busybox",
                "sh",
                "-c",
                "while :; do :; done",
            ];
            d.hyper_tcp(cfg, &run).timeout(300.0).run().ok();
            id_of(d, cfg, &name)
        })
        .collect()
}

/// The same measure on a hyperd with `--vm-cgroups off`, for comparison (printed, not
/// asserted); the flag leaves VMs out of any group of hyperd's.
fn unconfined_for_comparison() {
    let d = Daemon::start(
        "lof",
        DaemonOpts {
            extra_args: ["--vm-cgroups", "off"].map(String::from).to_vec(),
            ..DaemonOpts::default()
        },
    );
    let calm = tenant_with_busybox(&d, "calm");
    let busy = tenant_with_busybox(&d, "busy");
    let run = [
        "run", "-d", "--name", "sleeper", "busybox", "sleep", "100000",
    ];
    d.hyper_tcp(&calm, &run).timeout(300.0).run().ok();
    let sleeper = id_of(&d, &calm, "sleeper");
    let procs = container_processes(&d, &sleeper);
    let qemu = procs.iter().find(|p| p.contains("qemu-system")).unwrap();
    let qemu_pid = qemu.split_whitespace().next().unwrap();
    for dir in groups_of(qemu_pid) {
        assert!(
            !dir.to_string_lossy().contains("/hyper-"),
            "--vm-cgroups off, yet QEMU is in {}",
            dir.display()
        );
    }
    // A start can fail here under load (seen once: "the VM exited while starting", the shim's
    // start racing the exit of a VM whose `true` was done): recorded in the figure, not fatal,
    // as this test measures rather than checks.
    let quiet = [timings(&d, &calm, "sleeper"), timings(&d, &calm, "sleeper")];
    let spinning = spin(&d, &busy, 3);
    std::thread::sleep(secs(5.0));
    let loaded = [timings(&d, &calm, "sleeper"), timings(&d, &calm, "sleeper")];
    figure("--vm-cgroups off, busy tenant idle", &quiet);
    figure("--vm-cgroups off, busy tenant spinning in 3 VMs", &loaded);
    for id in &spinning {
        d.hyper_tcp(&busy, &["rm", "-f", id])
            .timeout(120.0)
            .run()
            .ok();
    }
    d.hyper_tcp(&calm, &["rm", "-f", "sleeper"])
        .timeout(120.0)
        .run()
        .ok();
    d.stop();
}

/// Tenant `busy` fills its quota of containers with busy loops; tenant `calm` still runs and
/// execs, and prints how long that took without and with the busy tenant (the figure of the
/// README; not asserted). Each busy VM is in its own group with its size's limits, across a
/// hyperd restart, and the groups go with the containers.
fn busy_tenant_leaves_another_responsive() {
    let d = daemon();
    let calm = tenant_with_busybox(d, "calm");
    let busy = tenant_with_busybox(d, "busy");
    const BUSY_VMS: usize = 3;
    d.tenant_admin(&["quota", "busy", "--containers", &BUSY_VMS.to_string()]);

    // A claimed standby VM was booted before it had an owner: it moves into the group.
    let sleeper = claim_a_standby(d, &calm);
    let calm_groups = check_groups(d, "calm", &sleeper, 512);
    let quiet = [
        run_and_exec(d, &calm, "sleeper"),
        run_and_exec(d, &calm, "sleeper"),
    ];

    // The first is of a size no standby has: its VM is in its group from the first
    // instruction.
    let mut spinning = Vec::new();
    for i in 0..BUSY_VMS {
        let name = format!("spin{i}");
        let size = if i == 0 { "s3" } else { "s4" };
        let run = [
            "run",
            "-d",
            "--size",
            size,
            "--name",
            &name,
            "busybox",
            "sh",
            "-c",
            "while :; do :; done",
        ];
        d.hyper_tcp(&busy, &run).timeout(300.0).run().ok();
        spinning.push(id_of(d, &busy, &name));
    }
    let log = std::fs::read_to_string(d.cdir(&spinning[0]).join("shim.log")).unwrap();
    assert!(
        !log.contains(STANDBY_CLAIMED),
        "an s3 VM was a standby: {log}"
    );
    let o = d
        .hyper_tcp(&busy, &["run", "-d", "busybox", "true"])
        .timeout(60.0)
        .run();
    assert!(
        o.code != 0 && o.stderr.contains("quota"),
        "a 4th container: {o}"
    );
    let busy_groups: Vec<Vec<PathBuf>> = spinning
        .iter()
        .enumerate()
        .map(|(i, id)| check_groups(d, "busy", id, if i == 0 { 256 } else { 512 }))
        .collect();
    // Let the loops run a while before measuring.
    std::thread::sleep(secs(5.0));
    let loaded = [
        run_and_exec(d, &calm, "sleeper"),
        run_and_exec(d, &calm, "sleeper"),
    ];
    figure("busy tenant idle", &quiet);
    figure(&format!("busy tenant spinning in {BUSY_VMS} VMs"), &loaded);
    // How often the quota held each spinning VM back (cpu.stat of v1 and v2), and the disk
    // I/O its group was charged with (io.stat, blkio.throttle.io_service_bytes).
    for (id, dirs) in spinning.iter().zip(&busy_groups) {
        if let Some(stat) = dirs.iter().find_map(|dir| read(dir, "cpu.stat")) {
            println!(
                "limits figure: cpu.stat of {}: {}",
                &id[..12],
                stat.replace('\n', " ")
            );
        }
        let io = ["io.stat", "blkio.throttle.io_service_bytes"];
        if let Some(stat) = dirs
            .iter()
            .find_map(|dir| io.iter().find_map(|f| read(dir, f)))
        {
            println!(
                "limits figure: disk I/O of {} (limit on {}): {}",
                &id[..12],
                data_disk(d).as_deref().unwrap_or("no disk"),
                stat.replace('\n', " ")
            );
        }
    }

    reads_from_the_disk_are_limited(d, &calm, &sleeper, &calm_groups);

    // A restarted hyperd finds the VMs in their groups and removes the groups with them.
    d.restart();
    assert_eq!(check_groups(d, "busy", &spinning[1], 512), busy_groups[1]);
    let removed: Vec<String> = spinning.iter().cloned().chain([sleeper.clone()]).collect();
    for id in &spinning {
        d.hyper_tcp(&busy, &["rm", "-f", id])
            .timeout(120.0)
            .run()
            .ok();
    }
    d.hyper_tcp(&calm, &["rm", "-f", "sleeper"])
        .timeout(120.0)
        .run()
        .ok();
    // `rm -f` answers once the VM is killed; the host's side of it (QEMU's exit, the
    // supervisor, the groups, the directory) follows in the background.
    wait_for("the removed VMs to be torn down", secs(30.0), || {
        let mut left: Vec<String> = removed.iter().flat_map(|id| d.teardown_left(id)).collect();
        for dir in busy_groups.iter().chain([&calm_groups]).flatten() {
            let tenant_dir = dir.parent().unwrap();
            left.extend(
                [dir, tenant_dir]
                    .into_iter()
                    .filter(|g| g.exists())
                    .map(|g| format!("group {}", g.display())),
            );
        }
        match left.is_empty() {
            true => Ok(()),
            false => Err(left.join("; ")),
        }
    });
}

/// Bytes read (`write` false) or written from `disk` charged to a group: v1's
/// `blkio.throttle.io_service_bytes` (`M:m Read N`), v2's `io.stat` (`M:m rbytes=N ...`).
fn bytes_moved(dirs: &[PathBuf], disk: &str, write: bool) -> Option<u64> {
    let (v1, v2) = if write {
        ("Write", "wbytes=")
    } else {
        ("Read", "rbytes=")
    };
    dirs.iter().find_map(|dir| {
        if let Some(stat) = read(dir, "blkio.throttle.io_service_bytes") {
            let want = format!("{disk} {v1} ");
            return stat
                .lines()
                .find_map(|l| l.strip_prefix(&want)?.parse().ok())
                .or(Some(0));
        }
        let stat = read(dir, "io.stat")?;
        let line = stat.lines().find(|l| l.starts_with(&format!("{disk} ")));
        Some(line.map_or(0, |l| {
            l.split_whitespace()
                .find_map(|kv| kv.strip_prefix(v2)?.parse().ok())
                .unwrap_or(0)
        }))
    })
}

/// A VM reading its disk past the host's page cache reads through its group's limit: the
/// bytes are charged to the group (asserted) and the rate is printed beside the host's own
/// read of the same file. Only where the data root is on a disk and the node throttles.
fn reads_from_the_disk_are_limited(d: &Daemon, cfg: &Path, id: &str, dirs: &[PathBuf]) {
    let Some(disk) = data_disk(d) else {
        println!("limits figure: no disk I/O limit: the data root is on no block device");
        return;
    };
    let Some(before) = bytes_moved(dirs, &disk, false) else {
        println!("limits figure: no disk I/O limit: no io or blkio group for the VM");
        return;
    };
    const MIB: u64 = 128;
    let written_before = bytes_moved(dirs, &disk, true).unwrap();
    let write = format!("dd if=/dev/zero of=/big bs=1M count={MIB} && sync");
    let wrote = d
        .hyper_tcp(cfg, &["exec", "sleeper", "sh", "-c", &write])
        .timeout(600.0)
        .run()
        .ok()
        .took;
    let written = bytes_moved(dirs, &disk, true).unwrap() - written_before;
    // The guest's data is on the host's disk now (its sync flushed QEMU's writes): drop the
    // host's cached pages of the VM's disk so that the guest's reads reach the device.
    let root = d.cdir(id).join("root.qcow2");
    let root = root.to_str().unwrap();
    Cmd::new(
        "dd",
        &[
            &format!("of={root}"),
            "oflag=nocache",
            "conv=notrunc,fdatasync",
            "count=0",
        ],
    )
    .run()
    .ok();
    Cmd::new("dd", &[&format!("if={root}"), "iflag=nocache", "count=0"])
        .run()
        .ok();
    let guest = d
        .hyper_tcp(
            cfg,
            &[
                "exec",
                "sleeper",
                "dd",
                "if=/big",
                "of=/dev/null",
                "bs=1M",
                "iflag=direct",
            ],
        )
        .timeout(600.0)
        .run()
        .ok()
        .took;
    let charged = bytes_moved(dirs, &disk, false).unwrap() - before;
    // Most of it at least: the host's page cache may have kept a few pages.
    assert!(
        charged >= MIB << 19,
        "the VM's group was charged {charged} bytes read from {disk} for a {MIB} MiB read"
    );
    let host = Cmd::new(
        "dd",
        &[
            &format!("if={root}"),
            "of=/dev/null",
            "bs=1M",
            "iflag=direct",
        ],
    )
    .run()
    .ok()
    .took;
    let size = std::fs::metadata(root).unwrap().len() as f64 / f64::from(1 << 20);
    d.hyper_tcp(cfg, &["exec", "sleeper", "rm", "/big"])
        .run()
        .ok();
    // Not asserted: on cgroup v1 what the kernel's flusher threads write back is charged to
    // the root group; what QEMU writes back itself (the guest's sync makes it fdatasync) is
    // the VM's.
    println!(
        "limits figure: the VM wrote {MIB} MiB and synced in {:.2}s ({} MiB written charged \
         to its group)",
        wrote.as_secs_f64(),
        written >> 20
    );
    println!(
        "limits figure: disk reads past the page cache: the VM read {MIB} MiB in {:.2}s \
         ({:.0} MiB/s, limit 64 MiB/s on {disk}; {} MiB charged to its group); the host read \
         its {size:.0} MiB disk file in {:.2}s ({:.0} MiB/s)",
        guest.as_secs_f64(),
        MIB as f64 / guest.as_secs_f64(),
        charged >> 20,
        host.as_secs_f64(),
        size / host.as_secs_f64()
    );
}

/// `n` requests of `path` over TLS with tenant token `token`, by one curl: each one's status
/// and headers (and body).
fn curl_statuses(d: &Daemon, token: &str, path: &str, n: usize) -> Vec<(String, String)> {
    let ca = d.data.join("tls").join("ca.pem");
    let url = format!("https://127.0.0.1:{}{path}", d.tcp_port);
    let header = format!("X-Hyper-Token: {token}");
    let mut a = vec![
        "-s",
        "--cacert",
        ca.to_str().unwrap(),
        "-H",
        &header,
        "-D",
        "-",
        "-w",
        "\nSTATUS %{http_code}\n",
    ];
    for _ in 0..n {
        a.push(&url);
    }
    let o = Cmd::new("curl", &a).timeout(120.0).run().ok();
    let mut out = Vec::new();
    let mut headers = String::new();
    for line in o.stdout.lines() {
        match line.strip_prefix("STATUS ") {
            Some(code) => out.push((code.to_string(), std::mem::take(&mut headers))),
            None => headers.push_str(&format!("{line}\n")),
        }
    }
    assert_eq!(out.len(), n, "{o}");
    out
}

fn token(d: &Daemon, tenant: &str) -> String {
    d.new_tenant(tenant);
    d.tenant_admin(&["token", tenant]).out()
}

/// Held-open `GET /events` of a tenant.
fn open_events(d: &Daemon, token: &str) -> Child {
    let ca = d.data.join("tls").join("ca.pem");
    Command::new("curl")
        .args(["-s", "-N", "--cacert"])
        .arg(&ca)
        .args(["-H", &format!("X-Hyper-Token: {token}")])
        .arg(format!("https://127.0.0.1:{}/v1.44/events", d.tcp_port))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn curl")
}

/// A tenant's burst beyond `--api-burst` gets 429 with Retry-After and Docker's message while
/// another tenant, and the operator's unix socket, carry on; streams beyond `--max-streams`
/// get 429 until one closes.
fn api_rate_and_streams_are_per_tenant() {
    let d = daemon();
    let greedy = token(d, "greedy");
    let other = token(d, "other");

    let answers = curl_statuses(d, &greedy, "/v1.44/containers/json", BURST + 10);
    let ok = answers.iter().filter(|(s, _)| s == "200").count();
    let refused: Vec<&(String, String)> = answers.iter().filter(|(s, _)| s == "429").collect();
    assert!(
        (BURST..BURST + 10).contains(&ok) && ok + refused.len() == BURST + 10,
        "statuses: {:?}",
        answers.iter().map(|a| &a.0).collect::<Vec<_>>()
    );
    let headers = refused[0].1.to_ascii_lowercase();
    assert!(headers.contains("retry-after: "), "{headers}");
    println!(
        "limits figure: {} of {} back-to-back requests of one tenant answered, {} refused with 429",
        ok,
        BURST + 10,
        refused.len()
    );
    let body = {
        let ca = d.data.join("tls").join("ca.pem");
        let url = format!("https://127.0.0.1:{}/v1.44/containers/json", d.tcp_port);
        let header = format!("X-Hyper-Token: {greedy}");
        Cmd::new(
            "curl",
            &["-s", "--cacert", ca.to_str().unwrap(), "-H", &header, &url],
        )
        .run()
        .ok()
        .json()
    };
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("too many requests"), "{body}");

    // Another tenant is not held up by the first one's bucket.
    let answers = curl_statuses(d, &other, "/v1.44/containers/json", 5);
    assert!(answers.iter().all(|(s, _)| s == "200"), "{answers:?}");
    // Nor is the operator on the unix socket, however fast.
    for i in 0..(BURST + 10) {
        let o = d.api("GET", "/v1.44/containers/json", &[]);
        assert!(o.stdout.ends_with("\n200"), "unix request {i}: {o}");
    }

    // Streams: MAX_STREAMS held-open event streams of one tenant, then the next is refused.
    let streamer = token(d, "streamer");
    let mut held: Vec<Child> = (0..MAX_STREAMS)
        .map(|_| open_events(d, &streamer))
        .collect();
    wait_for("the stream limit to refuse one more", secs(30.0), || {
        std::thread::sleep(Duration::from_millis(500));
        let (status, headers) = curl_statuses(d, &streamer, "/v1.44/events?until=1", 1).remove(0);
        if status == "429" && headers.to_ascii_lowercase().contains("retry-after") {
            Ok(())
        } else {
            Err(status)
        }
    });
    // Another tenant's stream is not refused.
    let (status, _) = curl_statuses(d, &other, "/v1.44/events?until=1", 1).remove(0);
    assert_eq!(status, "200");
    for c in &mut held {
        let _ = c.kill();
        let _ = c.wait();
    }
    wait_for("a closed stream to free its slot", secs(30.0), || {
        std::thread::sleep(Duration::from_millis(500));
        let (status, _) = curl_statuses(d, &streamer, "/v1.44/events?until=1", 1).remove(0);
        if status == "200" {
            Ok(())
        } else {
            Err(status)
        }
    });
}
