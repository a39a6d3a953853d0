//! End-to-end, issue 17: the host channel is out of the container's reach, and the shim holds
//! against a guest that speaks the protocol with hostile intent.
//!
//! * `container_cannot_reach_the_host_channel`: a container process (the main one and an exec)
//!   lists its descriptors and the processes it can see, looks for the port's device nodes,
//!   makes one with mknod from sysfs, mounts a devtmpfs, and writes forged frames (an exit code,
//!   a log line) through every descriptor above 2 and every node it found. None of it may reach
//!   the shim: the recorded exit code and the log are the real ones.
//! * `hostile_guest_is_contained`: a test-only guest (`hyper-hostile-guest`, built here with
//!   the agent crate's `hostile-guest` feature, packed into an initramfs of its own) sends
//!   forged, malformed, oversized and flooding frames (see its source). The shim's memory,
//!   shim.log and ctr.log stay bounded, state.json shows no forged exit, and the shim still
//!   answers `state` and `shutdown`.
//!
//! Skipped (with a printed reason) unless `HYPER_TEST_KERNEL_DIR` is set, like `e2e.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod common;
use agent_proto::{Frame, GuestMsg};
use common::*;
use shim::{Request, ShimClient, State, Status};
use tokio::io::AsyncReadExt;

static ONE_VM_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The shim's resident memory may not pass this while the guest floods.
const RSS_LIMIT_KIB: u64 = 64 * 1024;
/// shim.log may not pass this (the rate limit keeps it far below).
const SHIM_LOG_LIMIT: u64 = 64 * 1024;
/// ctr.log rotation in the hostile VM's spec.
const LOG_MAX_BYTES: u64 = 1 << 20;
const LOG_MAX_FILES: u64 = 3;

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s * scale())
}

struct Fixture {
    kernel: PathBuf,
    modules: PathBuf,
    work: PathBuf,
}

fn fixture() -> Option<&'static Fixture> {
    static F: std::sync::OnceLock<Option<Fixture>> = std::sync::OnceLock::new();
    F.get_or_init(|| {
        let kdir = std::env::var("HYPER_TEST_KERNEL_DIR").ok()?;
        let (kernel, modules) = kernel_and_modules(Path::new(&kdir));
        let work = shared_scratch("hs-hostile");
        Some(Fixture {
            kernel,
            modules,
            work,
        })
    })
    .as_ref()
}

macro_rules! need_vm {
    () => {{
        let Some(f) = fixture() else {
            eprintln!("SKIPPED: set HYPER_TEST_KERNEL_DIR (and optionally HYPER_TEST_AGENT) to boot real VMs");
            return;
        };
        (f, ONE_VM_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner()))
    }};
}

/// The test-only guest, built static like the agent (never by default: `required-features`).
fn hostile_guest_binary() -> PathBuf {
    let root = workspace_root();
    let st = Command::new(env!("CARGO"))
        .args([
            "build",
            "-p",
            "agent",
            "--features",
            "hostile-guest",
            "--bin",
            "hyper-hostile-guest",
            "--target",
            "x86_64-unknown-linux-gnu",
        ])
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .current_dir(&root)
        .status()
        .expect("cargo build hostile guest");
    assert!(st.success(), "building the hostile guest failed");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or(root.join("target"));
    target.join("x86_64-unknown-linux-gnu/debug/hyper-hostile-guest")
}

struct Vm {
    dir: PathBuf,
}

impl Vm {
    /// Launch `hyper-shim` on a cold-booted VM (no template) with `initrd` and a root disk
    /// overlaid on `base`.
    fn new(f: &Fixture, name: &str, initrd: &Path, base: &Path, args: &[&str]) -> Vm {
        let dir = f.work.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let root = dir.join("root.qcow2");
        overlay(base, &root);
        let spec = serde_json::json!({
            "id": format!("{name:0<64}"), "accel": std::env::var("HYPER_TEST_ACCEL").unwrap_or_default(),
            "kernel": f.kernel, "initrd": initrd, "root_disk": root, "run_as": qemu_user(),
            "vcpus": 1, "memory_mib": 256, "boot_timeout_secs": (60.0 * scale()) as u64,
            "log_max_bytes": LOG_MAX_BYTES, "log_max_files": LOG_MAX_FILES, "hostname": name,
            "process": { "args": args, "env": ["PATH=/bin"], "cwd": "/", "user": "root" }
        });
        std::fs::write(
            dir.join("spec.json"),
            serde_json::to_vec_pretty(&spec).unwrap(),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_hyper-shim"))
            .arg("--dir")
            .arg(&dir)
            .output()
            .unwrap();
        let vm = Vm { dir };
        assert!(
            out.status.success(),
            "hyper-shim failed: {}\nshim.log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            vm.shim_log()
        );
        vm
    }

    fn client(&self) -> ShimClient {
        ShimClient::connect(&self.dir).expect("shim.sock")
    }

    fn console(&self) -> String {
        std::fs::read_to_string(self.dir.join("console.log")).unwrap_or_default()
    }

    fn shim_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("shim.log")).unwrap_or_default()
    }

    fn state(&self) -> State {
        State::load(&self.dir).unwrap()
    }

    fn shim_pid(&self) -> i32 {
        std::fs::read_to_string(self.dir.join("shim.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// ctr.log and its rotated files, oldest first.
    fn ctr_logs(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        for i in (1..LOG_MAX_FILES + 2).rev() {
            let p = self.dir.join(format!("ctr.log.{i}"));
            if let Ok(b) = std::fs::read(&p) {
                out.push((p, b));
            }
        }
        let p = self.dir.join("ctr.log");
        if let Ok(b) = std::fs::read(&p) {
            out.push((p, b));
        }
        out
    }

    /// Wait until the console has `line` (the guest says where it is).
    fn wait_console(&self, line: &str, limit: Duration) {
        let end = Instant::now() + limit;
        while !self.console().contains(line) {
            assert!(
                Instant::now() < end,
                "no {line:?} on the console\nconsole:\n{}\nshim.log:\n{}",
                self.console(),
                self.shim_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait for the shim to go away, QEMU with it.
    fn assert_gone(&self) {
        self.assert_gone_within(secs(20.0));
    }

    fn assert_gone_within(&self, limit: Duration) {
        let end = Instant::now() + limit;
        while self.dir.join("shim.sock").exists() || qemu_running(&self.dir) {
            assert!(
                Instant::now() < end,
                "shim or QEMU still there\nshim.log:\n{}",
                self.shim_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Vm {
    /// A failed test must not leave a VM behind: SIGTERM makes the shim kill QEMU and exit.
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("shim.pid")) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::SIGTERM,
                );
            }
        }
    }
}

/// Is a QEMU whose command line mentions `dir` alive (not a zombie)?
fn qemu_running(dir: &Path) -> bool {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            let p = e.path();
            let cmd =
                String::from_utf8_lossy(&std::fs::read(p.join("cmdline")).unwrap_or_default())
                    .into_owned();
            let stat = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
            let zombie = stat
                .rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'));
            !zombie && cmd.contains("qemu") && cmd.contains(&needle)
        })
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// What a container process runs to reach the host channel: `probe TAG` prints `TAG fd LINE`
/// for each of its descriptors (`ls -l /proc/self/fd`, without a redirection the shell would
/// save a descriptor for), `TAG proc PID COMM` for each process it sees, `TAG dev PATH` for each
/// port node in its /dev, and `TAG wrote ...` for each write of forged frames that succeeded
/// (through each descriptor above 2 it has, a node made with mknod from sysfs, a devtmpfs).
/// No redirection of stderr around the writes: ash would save stderr to a descriptor >= 10
/// for it, and the probe would then write into its own stderr.
const PROBE: &str = r#"
probe() {
  t=$1
  ls -l /proc/self/fd | while read l; do echo "$t fd $l"; done
  for p in /proc/[0-9]*; do read c < $p/comm && echo "$t proc ${p##*/} $c"; done 2>/dev/null
  for d in /dev/vport* /dev/hvc* /dev/virtio-ports; do [ -e "$d" ] && echo "$t dev $d"; done
  for n in $(ls /proc/self/fd); do
    [ "$n" -gt 2 ] && cat /hostile/frames.bin >&$n && echo "$t wrote fd $n"
  done
  for d in /sys/class/virtio-ports/*; do
    echo "$t sysfs $d $(cat $d/name) $(cat $d/dev)"
    rm -f /tmp/port
    mknod /tmp/port c $(cat $d/dev | tr : ' ') && cat /hostile/frames.bin > /tmp/port && echo "$t wrote mknod $d"
  done
  mkdir -p /tmp/dt
  if mount -t devtmpfs devtmpfs /tmp/dt; then
    for d in /tmp/dt/vport* /tmp/dt/hvc*; do
      [ -e "$d" ] && cat /hostile/frames.bin > $d && echo "$t wrote devtmpfs $d"
    done
    umount /tmp/dt
  fi
  echo "$t probe done"
}
"#;

/// The stdout of a multiplexed attach or exec stream (Docker's 8-byte frame headers), lossy.
fn demux_stdout(mut b: &[u8]) -> String {
    let mut out = Vec::new();
    while b.len() >= 8 {
        let len = u32::from_be_bytes(b[4..8].try_into().unwrap()) as usize;
        let body = &b[8..(8 + len).min(b.len())];
        if b[0] == 1 {
            out.extend_from_slice(body);
        }
        b = &b[(8 + len).min(b.len())..];
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What the probe writes: forged exits for the main stream and the first exec stream, and a
/// forged line for the container's log.
fn forged_frames() -> Vec<u8> {
    let mut b = Vec::new();
    for stream in [0, 1] {
        b.extend(
            Frame::guest(&GuestMsg::Exited {
                stream,
                exit_code: 42,
                oom_killed: true,
            })
            .encode(),
        );
    }
    b.extend(Frame::stdout(0, b"FORGED-BY-CONTAINER\n".to_vec()).encode());
    b
}

/// Check one probe's output (`tag` lines of `text`).
fn check_probe(tag: &str, text: &str) {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{tag} ")))
        .collect();
    let all = lines.join("\n");
    assert!(
        lines.contains(&format!("{tag} probe done").as_str()),
        "the {tag} probe did not finish:\n{text}"
    );
    // `ls -l` lines: "... 1 -> pipe:[123]". ls's own handle on the directory it lists is the
    // one descriptor beyond stdio that belongs there.
    let fds: Vec<(u32, &str)> = lines
        .iter()
        .filter_map(|l| l.strip_prefix(&format!("{tag} fd ")))
        .filter_map(|l| l.split_once(" -> "))
        .map(|(a, target)| (a.rsplit(' ').next().unwrap().parse().unwrap(), target))
        .filter(|(_, target)| !target.starts_with("/proc/"))
        .collect();
    assert!(
        !fds.is_empty(),
        "the {tag} probe listed no descriptors:\n{all}"
    );
    assert!(
        fds.iter().all(|&(n, _)| n <= 2),
        "the {tag} process holds descriptors beyond its stdio: {fds:?}\n{all}"
    );
    for l in &lines {
        assert!(!l.contains(" wrote "), "forged frames got out: {l}\n{all}");
        assert!(!l.starts_with(&format!("{tag} dev ")), "{l}\n{all}");
        // The agent (comm "init") is not in the container's PID namespace.
        assert!(
            !(l.starts_with(&format!("{tag} proc ")) && l.ends_with(" init")),
            "{l}\n{all}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{tag} sysfs "))),
        "the probe found no virtio port in sysfs to try:\n{all}"
    );
}

#[test]
fn container_cannot_reach_the_host_channel() {
    let (f, _g) = need_vm!();
    let initrd = f.work.join("agent-initrd.img");
    vm::build_initramfs(&agent_binary(), &f.modules, &initrd).expect("initramfs");
    let rootfs = f.work.join("probe-rootfs");
    let _ = std::fs::remove_dir_all(&rootfs);
    busybox_rootfs(
        &rootfs,
        &[
            "sh", "ls", "cat", "echo", "tr", "mknod", "mount", "umount", "mkdir", "rm", "sleep",
        ],
    );
    std::fs::create_dir_all(rootfs.join("hostile")).unwrap();
    std::fs::write(rootfs.join("hostile/probe.sh"), PROBE).unwrap();
    std::fs::write(rootfs.join("hostile/frames.bin"), forged_frames()).unwrap();
    let base = f.work.join("probe.ext4");
    ext4_image(&rootfs, &base, "64M");

    let vm = Vm::new(
        f,
        "probe",
        &initrd,
        &base,
        &[
            "sh",
            "-c",
            ". /hostile/probe.sh; probe main; trap 'exit 3' TERM; while true; do sleep 1; done",
        ],
    );
    let main_out = rt().block_on(async {
        let c = vm.client();
        let (resp, mut att) = c
            .stream(&Request::Attach {
                stdin: false,
                stdout: true,
                stderr: true,
            })
            .await
            .unwrap();
        assert!(resp.ok, "{resp:?}");
        let resp = c.request(&Request::Start).await.unwrap();
        assert!(resp.ok, "{resp:?}\n{}", vm.console());
        // The main probe's output, up to its last line.
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let end = tokio::time::Instant::now() + secs(60.0);
        while !demux_stdout(&got).contains("main probe done") {
            let n = tokio::time::timeout_at(end, att.read(&mut buf))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no end of the main probe: {}\nshim.log:\n{}",
                        String::from_utf8_lossy(&got),
                        vm.shim_log()
                    )
                })
                .unwrap();
            assert!(
                n > 0,
                "the attach ended early (a forged exit?): {}\nstate: {:?}",
                String::from_utf8_lossy(&got),
                vm.state()
            );
            got.extend_from_slice(&buf[..n]);
        }
        // An exec session (stream 1) tries the same.
        let exec_out = exec_sh(
            &c,
            "probe",
            ". /hostile/probe.sh; probe exec; exit 4",
            secs(60.0),
        )
        .await;
        let exec_text = String::from_utf8_lossy(&exec_out).into_owned();
        check_probe("exec", &demux_stdout(&exec_out));
        assert!(
            exec_out.ends_with(br#"{"exit_code":4}"#),
            "the exec's own exit code: {exec_text}"
        );
        assert_eq!(vm.state().status, Status::Running, "{:?}", vm.state());
        let st = stop(&c).await;
        assert_eq!(st.exit_code, Some(3), "{st:?}");
        demux_stdout(&got)
    });
    check_probe("main", &main_out);
    vm.assert_gone();
    let st = vm.state();
    assert_eq!(st.status, Status::Exited);
    assert_eq!(
        (st.exit_code, st.oom_killed),
        (Some(3), false),
        "the real exit: {st:?}"
    );
    let logs = vm.ctr_logs();
    let text: String = logs
        .iter()
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert!(text.contains("main probe done"), "{text}");
    assert!(!text.contains("FORGED"), "a forged log line:\n{text}");
    clean(&[&vm.dir, &initrd, &rootfs, &base]);
}

/// A VM of the hostile guest, `name`, on an empty root disk; with the files to clean after it.
fn hostile_vm(f: &Fixture, name: &str) -> (Vm, [PathBuf; 3]) {
    let initrd = f.work.join(format!("{name}-initrd.img"));
    vm::build_initramfs(&hostile_guest_binary(), &f.modules, &initrd).expect("initramfs");
    // The guest never mounts it, but the VM's device layout has a root disk.
    let rootfs = f.work.join(format!("{name}-rootfs"));
    std::fs::create_dir_all(&rootfs).unwrap();
    let base = f.work.join(format!("{name}.ext4"));
    ext4_image(&rootfs, &base, "16M");
    (
        Vm::new(f, name, &initrd, &base, &["true"]),
        [initrd, rootfs, base],
    )
}

/// Remove what a test that passed made (a failed one leaves it to look at).
fn clean(paths: &[&Path]) {
    for p in paths {
        let _ = std::fs::remove_dir_all(p).or_else(|_| std::fs::remove_file(p));
    }
}

#[test]
fn hostile_guest_is_contained() {
    let (f, _g) = need_vm!();
    let t0 = Instant::now();
    let (vm, [initrd, rootfs, base]) = hostile_vm(f, "hostile");
    let pid = vm.shim_pid();
    eprintln!("hostile VM up after {:.1}s", t0.elapsed().as_secs_f64());

    // Before Start: forged exits, replies, unknown kinds, huge strings.
    vm.wait_console("hostile: junk sent before start", secs(30.0));
    let rss_before = rss_kib(pid);
    let (rss_max, flood_secs) = rt().block_on(async {
        let c = vm.client();
        // An attacher that never reads: the shim must not queue output for it without bound.
        let (resp, _stalled) = c
            .stream(&Request::Attach {
                stdin: false,
                stdout: true,
                stderr: true,
            })
            .await
            .unwrap();
        assert!(resp.ok, "{resp:?}");
        let st = c.request(&Request::State).await.unwrap().state.unwrap();
        assert_eq!(
            (st.status, st.exit_code),
            (Status::Ready, None),
            "a forged exit before start: {st:?}\nshim.log:\n{}",
            vm.shim_log()
        );
        let resp = c.request(&Request::Start).await.unwrap();
        assert!(resp.ok, "{resp:?}\nshim.log:\n{}", vm.shim_log());
        assert_eq!(resp.pid, Some(4242));

        vm.wait_console("hostile: junk sent after start", secs(30.0));
        // An exec: an Exited before Started is dropped, an impossible exit code becomes 255,
        // a second Exited is dropped.
        let (resp, mut s) = c
            .stream(&Request::Exec {
                exec_id: "e1".into(),
                args: vec!["x".into()],
                env: vec![],
                cwd: String::new(),
                user: String::new(),
                tty: false,
                stdin: false,
                tty_width: 0,
                tty_height: 0,
            })
            .await
            .unwrap();
        assert!(resp.ok, "{resp:?}");
        assert_eq!(resp.pid, Some(7), "{resp:?}");
        let mut got = Vec::new();
        tokio::time::timeout(secs(30.0), s.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&got);
        assert!(text.contains("exec-out"), "{text}");
        assert!(got.ends_with(br#"{"exit_code":255}"#), "{text}");

        // Top: wrong reply kinds are dropped, the reply that fits is capped.
        let resp = c
            .request(&Request::Top {
                ps_args: String::new(),
            })
            .await
            .unwrap();
        assert!(resp.ok, "{resp:?}");
        let line = serde_json::to_vec(&resp).unwrap().len();
        assert!(line <= 600 * 1024, "a top answer of {line} bytes");
        assert!(resp.titles.as_ref().unwrap().len() <= 64);
        assert!(!resp.processes.as_ref().unwrap().is_empty());
        // Stats pass through for display only.
        let resp = c.request(&Request::Stats).await.unwrap();
        assert!(resp.ok, "{resp:?}");

        // The flood (SIGUSR1 is the guest's cue), then output beyond the window.
        let flood_t0 = Instant::now();
        let resp = c
            .request(&Request::Signal {
                signal: 10,
                exec_id: None,
                resume: false,
            })
            .await
            .unwrap();
        assert!(resp.ok, "{resp:?}");
        // Until the shim has read through the flood to the violation at its end, answering
        // all along.
        let mut rss_max = 0;
        let end = Instant::now() + secs(40.0);
        let mut asked = Instant::now();
        while !vm.shim_log().contains("protocol violation") {
            rss_max = rss_max.max(rss_kib(pid));
            if asked.elapsed() > Duration::from_secs(1) {
                let r = tokio::time::timeout(secs(5.0), c.request(&Request::State)).await;
                let st = r.expect("state during the flood").unwrap().state.unwrap();
                assert_eq!((st.status, st.exit_code), (Status::Running, None));
                asked = Instant::now();
            }
            assert!(
                rss_max < RSS_LIMIT_KIB,
                "shim RSS {rss_max} KiB during the flood"
            );
            assert!(
                Instant::now() < end,
                "the shim did not get through the flood\nconsole:\n{}\nshim.log:\n{}",
                vm.console(),
                vm.shim_log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let flood_secs = flood_t0.elapsed().as_secs_f64();
        assert!(vm.console().contains("hostile: violation sent"));
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss_max = rss_max.max(rss_kib(pid));

        // Still the container's state, still answering.
        let st = c.request(&Request::State).await.unwrap().state.unwrap();
        assert_eq!(
            (st.status, st.exit_code, st.error.as_str()),
            (Status::Running, None, ""),
            "{st:?}\nshim.log:\n{}",
            vm.shim_log()
        );
        let resp = c.request(&Request::Shutdown).await.unwrap();
        let st = resp.state.expect("state in the shutdown reply");
        assert_eq!((st.status, st.exit_code), (Status::Exited, Some(137)));
        (rss_max, flood_secs)
    });
    vm.assert_gone();
    let shim_log = vm.shim_log();
    eprintln!(
        "shim RSS {rss_before} KiB before, at most {rss_max} KiB during a {flood_secs:.1}s flood; \
         shim.log {} bytes; {}",
        shim_log.len(),
        vm.console()
            .lines()
            .find(|l| l.contains("hostile: flood done"))
            .unwrap_or("")
    );
    assert!(rss_max < RSS_LIMIT_KIB, "shim RSS {rss_max} KiB");

    let st = vm.state();
    assert_eq!(st.exit_code, Some(137), "{st:?}");
    assert!(!st.oom_killed, "{st:?}");
    assert!(st.error.contains("shut down"), "{st:?}");
    assert!(st.started_at.is_some() && st.finished_at.is_some());

    assert!(
        (shim_log.len() as u64) < SHIM_LOG_LIMIT,
        "shim.log is {} bytes:\n{}",
        shim_log.len(),
        shim_log.get(..4096).unwrap_or("")
    );
    assert!(
        shim_log.contains("protocol violation"),
        "the violation was not noticed:\n{shim_log}"
    );
    for l in shim_log.lines() {
        assert!(
            !l.starts_with("2099-") && !l.contains("FORGED shim line: main"),
            "a line written by the guest: {l}"
        );
    }
    let guest_lines = shim_log.lines().filter(|l| l.contains(" guest: ")).count();
    assert!(
        guest_lines <= 3 * 21,
        "{guest_lines} lines about the guest:\n{shim_log}"
    );

    let logs = vm.ctr_logs();
    let total: u64 = logs.iter().map(|(_, b)| b.len() as u64).sum();
    assert!(
        logs.len() as u64 <= LOG_MAX_FILES && total <= LOG_MAX_FILES * (LOG_MAX_BYTES + 128 * 1024),
        "ctr.log files: {:?}",
        logs.iter()
            .map(|(p, b)| (p.clone(), b.len()))
            .collect::<Vec<_>>()
    );
    for (p, b) in &logs {
        let text = String::from_utf8_lossy(b);
        assert!(!text.contains("FORGED"), "{}: a forged line", p.display());
        for l in text.lines() {
            let e: serde_json::Value = serde_json::from_str(l).expect("json-file lines");
            assert_eq!(e["stream"], "stdout", "{l}");
        }
    }
    eprintln!(
        "hostile_guest_is_contained: {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    clean(&[&vm.dir, &initrd, &rootfs, &base]);
}

/// A guest told to sync its disks at its end that spins instead is stopped once its QEMU has
/// used the CPU a sync may take: a guest cannot keep its VM running after its container ended.
#[test]
fn a_guest_that_spins_instead_of_syncing_is_stopped() {
    let (f, _g) = need_vm!();
    let (vm, [initrd, rootfs, base]) = hostile_vm(f, "spinning");
    rt().block_on(async {
        let c = vm.client();
        let resp = c.request(&Request::Start).await.unwrap();
        assert!(resp.ok, "{resp:?}\nshim.log:\n{}", vm.shim_log());
        let st = stop(&c).await;
        assert_eq!((st.status, st.exit_code), (Status::Exited, Some(0)));
    });
    vm.wait_console("hostile: spinning instead of syncing", secs(30.0));
    // Its 3 s of CPU, however slowly a loaded host gives them (10 s at most, then the wall
    // clock's ceiling ends it, which the log tells apart).
    vm.assert_gone_within(secs(60.0));
    let shim_log = vm.shim_log();
    assert!(
        shim_log.contains("VM used 3s of CPU without syncing: killing QEMU"),
        "{shim_log}"
    );
    assert_eq!(vm.state().exit_code, Some(0));
    clean(&[&vm.dir, &initrd, &rootfs, &base]);
}
