//! End-to-end: boot real microVMs through the `hyper-shim` binary.
//!
//! Skipped (with a printed reason) unless `HYPER_TEST_KERNEL_DIR` is set. It may point at
//! hyperd's `DATA/kernel` (`vmlinuz`, `modules/`) or at an unpacked Debian kernel package
//! (`boot/vmlinuz-*`, `lib/modules/`). The agent is `HYPER_TEST_AGENT`, or is built here
//! (static, `--target x86_64-unknown-linux-gnu`). Waits scale with `HYPER_TEST_TIMEOUT_SCALE`.
//! VMs boot one at a time (2-core CI machines). `HYPER_TEST_EXEC_DELAY_MS` delays the exec after
//! start (diagnoses the agent race where an exec right after `Started` gets "container is not
//! running").

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod common;
use common::*;
use shim::{Request, ShimClient, State, Status};
use tokio::io::{AsyncBufReadExt, AsyncReadExt};

static ONE_VM_AT_A_TIME: Mutex<()> = Mutex::new(());

fn deadline(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs_f64(secs as f64 * scale())
}

struct Fixture {
    kernel: PathBuf,
    initrd: PathBuf,
    base_img: PathBuf,
    work: PathBuf,
}

/// Shared per test binary: initramfs and a busybox root disk.
fn fixture() -> Option<&'static Fixture> {
    static F: std::sync::OnceLock<Option<Fixture>> = std::sync::OnceLock::new();
    F.get_or_init(|| {
        let Ok(kdir) = std::env::var("HYPER_TEST_KERNEL_DIR") else {
            return None;
        };
        let (kernel, modules) = kernel_and_modules(Path::new(&kdir));
        let work = shared_scratch("hs");
        let initrd = work.join("initrd.img");
        vm::build_initramfs(&agent_binary(), &modules, &initrd).expect("initramfs");
        let rootfs = work.join("rootfs");
        busybox_rootfs(
            &rootfs,
            &["sh", "echo", "cat", "sleep", "true", "false", "ps", "ls"],
        );
        let base_img = work.join("base.ext4");
        ext4_image(&rootfs, &base_img, "64M");
        Some(Fixture {
            kernel,
            initrd,
            base_img,
            work,
        })
    })
    .as_ref()
}

struct Vm {
    dir: PathBuf,
}

impl Vm {
    fn new(f: &Fixture, name: &str, args: &[&str]) -> Vm {
        Vm::new_with(f, name, args, serde_json::json!({}))
    }

    /// With `extra`'s fields added to the spec.
    fn new_with(f: &Fixture, name: &str, args: &[&str], extra: serde_json::Value) -> Vm {
        let dir = f.work.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let root = dir.join("root.qcow2");
        common::overlay(&f.base_img, &root);
        let run_as = qemu_user();
        let spec = serde_json::json!({
            "id": format!("{name:0<64}"), "accel": std::env::var("HYPER_TEST_ACCEL").unwrap_or_default(),
            "kernel": f.kernel, "initrd": f.initrd, "root_disk": root, "run_as": run_as,
            "vcpus": 1, "memory_mib": 256, "boot_timeout_secs": (60.0 * scale()) as u64,
            "log_max_bytes": 1048576, "log_max_files": 2, "hostname": name,
            "process": { "args": args, "env": ["PATH=/bin"], "cwd": "/", "user": "root" }
        });
        let mut spec = spec;
        for (k, v) in extra.as_object().expect("an object") {
            spec[k] = v.clone();
        }
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
        assert!(
            out.status.success(),
            "hyper-shim failed: {}\nshim.log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(dir.join("shim.log")).unwrap_or_default()
        );
        Vm { dir }
    }

    fn client(&self) -> ShimClient {
        ShimClient::connect(&self.dir).expect("shim.sock")
    }

    fn console(&self) -> String {
        std::fs::read_to_string(self.dir.join("console.log")).unwrap_or_default()
    }

    /// Wait for the shim to go away, then check nothing of this VM is left running.
    fn assert_gone(&self) {
        let end = deadline(20);
        while self.dir.join("shim.sock").exists() || qemu_running(&self.dir) {
            assert!(
                Instant::now() < end,
                "shim or QEMU still there\nconsole:\n{}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!self.dir.join("agent.sock").exists());
    }

    fn state(&self) -> State {
        State::load(&self.dir).unwrap()
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
            let cmd = std::fs::read(p.join("cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
            let zombie = stat
                .rsplit(')')
                .next()
                .map(|r| r.trim_start().starts_with('Z'))
                .unwrap_or(false);
            !zombie
                && String::from_utf8_lossy(&cmd).contains("qemu")
                && String::from_utf8_lossy(&cmd).contains(&needle)
        })
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

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn echo_hi() {
    let (f, _g) = need_vm!();
    let vm = Vm::new(f, "echo", &["echo", "hi"]);
    assert_eq!(vm.state().status, Status::Ready);
    rt().block_on(async {
        let c = vm.client();
        // Attach before start, like `docker run` does.
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
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), att.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, [&[1u8, 0, 0, 0, 0, 0, 0, 3][..], b"hi\n"].concat());
    });
    vm.assert_gone();
    let st = vm.state();
    assert_eq!(st.status, Status::Exited);
    assert_eq!(st.exit_code, Some(0), "{st:?}");
    assert!(st.started_at.is_some() && st.finished_at.is_some());
    let log = std::fs::read_to_string(vm.dir.join("ctr.log")).unwrap();
    let first: serde_json::Value =
        serde_json::from_str(log.lines().next().expect("a log line")).unwrap();
    assert_eq!(first["log"], "hi\n");
    assert_eq!(first["stream"], "stdout");
}

#[test]
fn exec_then_stop() {
    let (f, _g) = need_vm!();
    // The main process is PID 1 of the container's PID namespace, so (as in Docker) SIGTERM
    // reaches it only through a handler: trap it and exit 7.
    let vm = Vm::new(
        f,
        "stop",
        &[
            "sh",
            "-c",
            "trap 'exit 7' TERM; while true; do sleep 1; done",
        ],
    );
    rt().block_on(async {
        let c = vm.client();
        assert!(
            c.request(&Request::Start).await.unwrap().ok,
            "{}",
            vm.console()
        );
        if let Ok(ms) = std::env::var("HYPER_TEST_EXEC_DELAY_MS") {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
        }
        let got = exec_sh(
            &c,
            "e1",
            "echo out; echo err >&2; exit 3",
            Duration::from_secs(30),
        )
        .await;
        let text = String::from_utf8_lossy(&got);
        assert!(text.contains("out\n") && text.contains("err\n"), "{text:?}");
        assert!(got.ends_with(br#"{"exit_code":3}"#), "{text:?}");
        let st = stop(&c).await;
        assert_eq!(st.status, Status::Exited);
        assert_eq!(st.exit_code, Some(7), "{st:?}");
    });
    vm.assert_gone();
    assert_eq!(vm.state().exit_code, Some(7));
}

/// A disposable (`--rm`) container's disk: kept, what its processes wrote synced, for a stop
/// that a start follows (`keep_disk`, a restart); gone unsynced with its VM when the process
/// ended on its own first. The stop's reply says which, for the restart to know.
#[test]
fn a_disposable_disk_is_kept_only_for_a_stop_before_the_end() {
    let (f, _g) = need_vm!();
    let disposable = serde_json::json!({ "disposable": true });
    let main = "trap 'exit 0' TERM; while true; do sleep 1; done";
    let vm = Vm::new_with(f, "keepdisk", &["sh", "-c", main], disposable.clone());
    rt().block_on(async {
        let c = vm.client();
        assert!(
            c.request(&Request::Start).await.unwrap().ok,
            "{}",
            vm.console()
        );
        let got = exec_sh(&c, "w", "echo kept > /kept", Duration::from_secs(30)).await;
        assert!(got.ends_with(br#"{"exit_code":0}"#), "{got:?}");
        let resp = c
            .request(&Request::Stop {
                signal: 15,
                timeout_secs: 20,
                keep_disk: true,
            })
            .await
            .unwrap();
        assert_eq!(resp.disk_kept, Some(true), "{resp:?}");
    });
    vm.assert_gone();
    assert_eq!(file_on_disk(&vm.dir, "/kept").as_deref(), Some("kept\n"));

    let vm = Vm::new_with(f, "losedisk", &["true"], disposable);
    rt().block_on(async {
        // Held open, so that the supervisor still answers once its VM is gone.
        let mut held = tokio::net::UnixStream::connect(vm.dir.join("shim.sock"))
            .await
            .unwrap();
        let c = vm.client();
        assert!(
            c.request(&Request::Start).await.unwrap().ok,
            "{}",
            vm.console()
        );
        // The supervisor has decided (and says so) before it stops QEMU; it answers for 3 s
        // after QEMU is gone.
        let end = deadline(30);
        let decided = || {
            std::fs::read_to_string(vm.dir.join("shim.log"))
                .unwrap_or_default()
                .contains("the container's disk goes with it")
        };
        while !decided() {
            assert!(Instant::now() < end, "{}", vm.console());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        use tokio::io::AsyncWriteExt;
        held.write_all(b"{\"op\":\"stop\",\"keep_disk\":true}\n")
            .await
            .unwrap();
        let mut reply = String::new();
        tokio::io::BufReader::new(held)
            .read_line(&mut reply)
            .await
            .unwrap();
        let resp: shim::Response = serde_json::from_str(&reply)
            .unwrap_or_else(|e| panic!("the stop's reply {reply:?}: {e}"));
        assert_eq!(resp.disk_kept, Some(false), "{reply}");
    });
    vm.assert_gone();
}

/// `path`'s content in the ext4 of the overlay `dir/root.qcow2`, if it is there, as the next
/// mount would see it.
fn file_on_disk(dir: &Path, path: &str) -> Option<String> {
    let raw = dir.join("root.raw");
    let qcow2 = dir.join("root.qcow2");
    sh(Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(&qcow2)
        .arg(&raw));
    // The guest never unmounts (QEMU is stopped once it synced): what it wrote may still sit
    // in ext4's journal only, which the next mount replays. debugfs reads without replaying,
    // so replay it first, as that mount would.
    let replayed = Command::new("e2fsck")
        .args(["-E", "journal_only", "-p"])
        .arg(&raw)
        .status()
        .unwrap();
    assert!(
        replayed.code().is_some_and(|c| c <= 1),
        "e2fsck: {replayed}"
    );
    let out = Command::new("debugfs")
        .args(["-R", &format!("cat {path}")])
        .arg(&raw)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&raw);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

#[test]
fn qemu_killed_from_outside_is_137() {
    let (f, _g) = need_vm!();
    let vm = Vm::new(f, "kill", &["sleep", "1000"]);
    rt().block_on(async {
        let c = vm.client();
        assert!(c.request(&Request::Start).await.unwrap().ok);
        let pid = vm.state().qemu_pid.unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::SIGKILL,
        )
        .unwrap();
    });
    vm.assert_gone();
    let st = vm.state();
    assert_eq!(st.exit_code, Some(137), "{st:?}");
    assert!(st.error.contains("exited unexpectedly"), "{st:?}");
}
