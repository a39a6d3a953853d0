//! End-to-end: the VMs' NICs, through the `hyper-shim` binary, on real microVMs.
//!
//! Same switches as `e2e.rs`: skipped (with a printed reason) unless `HYPER_TEST_KERNEL_DIR` is
//! set; `HYPER_TEST_AGENT`, `HYPER_TEST_ACCEL`, `HYPER_TEST_TIMEOUT_SCALE`.
//!
//! Every interface lives in a network namespace the test creates (`hyper-shimtest-<pid>-<n>`,
//! removed at the end, failed or not) with a bridge `br0` at 172.30.0.1/24, standing in for a
//! tenant's namespace. No traffic leaves it.
//!
//! - Three containers on one bridge, one booted cold and two restored from one template: each
//!   has the MAC, address and MTU its spec gave (the restored ones not the template's), the
//!   /etc/hosts and /etc/resolv.conf the spec said, and pings the gateway and the other two.
//!   Once they are stopped no tap is left in the namespace.
//! - A container without a network still has its NIC (fixed device layout), but only `lo` is up.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod common;
use common::*;
use shim::{NetworkSpec, Request, ShimClient, Spec};

static ONE_TEST_AT_A_TIME: Mutex<()> = Mutex::new(());

const GATEWAY: &str = "172.30.0.1";
const RESOLV: &str = "nameserver 172.30.0.1\nsearch hyper.test\n";

struct Fixture {
    kernel: PathBuf,
    initrd: PathBuf,
    base_img: PathBuf,
    work: PathBuf,
    run_as: String,
}

/// Shared per test binary: initramfs and a busybox root disk whose /etc/hosts has an entry of
/// the image's own and whose /etc/resolv.conf is a symlink (both must be replaced).
fn fixture() -> Option<&'static Fixture> {
    static F: std::sync::OnceLock<Option<Fixture>> = std::sync::OnceLock::new();
    F.get_or_init(|| {
        let kdir = std::env::var("HYPER_TEST_KERNEL_DIR").ok()?;
        let (kernel, modules) = kernel_and_modules(Path::new(&kdir));
        let work = shared_scratch("hn");
        let initrd = work.join("initrd.img");
        vm::build_initramfs(&agent_binary(), &modules, &initrd).expect("initramfs");
        let rootfs = work.join("rootfs");
        busybox_rootfs(
            &rootfs,
            &["sh", "echo", "cat", "sleep", "ip", "ping", "true"],
        );
        std::fs::write(rootfs.join("etc/hosts"), "10.9.9.9\timage-entry\n").unwrap();
        std::os::unix::fs::symlink("/run/image-resolv.conf", rootfs.join("etc/resolv.conf"))
            .unwrap();
        let base_img = work.join("base.ext4");
        ext4_image(&rootfs, &base_img, "32M");
        Some(Fixture {
            kernel,
            initrd,
            base_img,
            work,
            run_as: qemu_user(),
        })
    })
    .as_ref()
}

/// A network namespace with `br0` (172.30.0.1/24), removed on drop.
struct TenantNetns {
    name: String,
}

impl TenantNetns {
    fn new(tag: &str) -> TenantNetns {
        let name = format!("hyper-shimtest-{}-{tag}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        sh(Command::new("ip").args(["netns", "add", &name]));
        let ns = TenantNetns { name };
        for args in [
            "link set lo up",
            "link add br0 type bridge",
            "addr add 172.30.0.1/24 dev br0",
            "link set br0 up",
        ] {
            ns.ip(args);
        }
        ns
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    fn ip(&self, args: &str) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.name])
            .args(args.split_whitespace())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip -n {} {args}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Interface names in the namespace.
    fn links(&self) -> Vec<String> {
        self.ip("-o link show")
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap().to_string())
            .collect()
    }
}

impl Drop for TenantNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A test's own directory below the fixture's (VM directories, templates), removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(f: &Fixture, tag: &str) -> Scratch {
        let d = f.work.join(tag);
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A started container; dropping it makes sure its VM is gone (SIGTERM to the shim).
struct Vm {
    dir: PathBuf,
}

impl Drop for Vm {
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

impl Vm {
    fn output(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("ctr.log")).unwrap_or_default();
        log.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| v["log"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    fn diagnostics(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        format!(
            "output:\n{}\nshim.log:\n{}\nconsole:\n{}",
            self.output(),
            read("shim.log"),
            read("console.log")
        )
    }

    /// Wait until the output has a line `line`.
    fn wait_for_line(&self, line: &str, secs: f64) {
        let end = Instant::now() + Duration::from_secs_f64(secs * scale());
        while !self.output().lines().any(|l| l == line) {
            assert!(
                Instant::now() < end,
                "no line {line:?} after {secs}s\n{}",
                self.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Kill the main process and wait for the shim (and so QEMU) to be gone.
    fn stop(&self) {
        rt().block_on(async {
            let c = ShimClient::connect(&self.dir).unwrap();
            let resp = c
                .request(&Request::Stop {
                    signal: 9,
                    timeout_secs: 5,
                    keep_disk: false,
                })
                .await
                .unwrap();
            assert!(resp.ok, "{resp:?}");
        });
        let end = Instant::now() + Duration::from_secs_f64(20.0 * scale());
        while self.dir.join("shim.sock").exists() {
            assert!(Instant::now() < end, "shim still there");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn spec(f: &Fixture, name: &str, script: &str, network: Option<NetworkSpec>) -> Spec {
    let mut s: Spec = serde_json::from_value(serde_json::json!({
        "id": format!("{name:0<64}"), "accel": std::env::var("HYPER_TEST_ACCEL").unwrap_or_default(),
        "kernel": f.kernel, "initrd": f.initrd, "root_disk": "/unset", "run_as": f.run_as,
        "vcpus": 1, "memory_mib": 256, "boot_timeout_secs": (60.0 * scale()) as u64,
        "log_max_bytes": 1048576, "log_max_files": 2, "hostname": name,
        "process": { "args": ["sh", "-c", script], "env": ["PATH=/bin"], "cwd": "/", "user": "root" }
    }))
    .unwrap();
    s.network = network;
    s
}

fn network(ns: &TenantNetns, last_octet: u8, hosts: &[&str]) -> NetworkSpec {
    NetworkSpec {
        netns: ns.path(),
        bridge: "br0".into(),
        tap: format!("tap0000000000{last_octet:02x}"),
        mac: format!("02:00:ac:1e:00:{last_octet:02x}"),
        ip: format!("172.30.0.{last_octet}/24"),
        gateway: GATEWAY.into(),
        mtu: 1450,
        resolv_conf: RESOLV.into(),
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
    }
}

/// Launch the shim for `spec` in `scratch/name` (disk: an overlay of the base image) and start
/// the container.
fn start(f: &Fixture, scratch: &Scratch, name: &str, mut spec: Spec) -> Vm {
    let dir = scratch.0.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let root = dir.join("root.qcow2");
    common::overlay(&f.base_img, &root);
    spec.root_disk = root;
    std::fs::write(dir.join("spec.json"), serde_json::to_vec(&spec).unwrap()).unwrap();
    let vm = Vm { dir: dir.clone() };
    let out = Command::new(env!("CARGO_BIN_EXE_hyper-shim"))
        .arg("--dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "hyper-shim failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        vm.diagnostics()
    );
    rt().block_on(async {
        let resp = ShimClient::connect(&dir)
            .unwrap()
            .request(&Request::Start)
            .await
            .unwrap();
        assert!(resp.ok, "{resp:?}\n{}", vm.diagnostics());
    });
    vm
}

/// Print what the guest sees of its network, ping the gateway and `peers` (retrying while they
/// boot), say `done`, and stay up until stopped.
fn probe(peers: &[&str]) -> String {
    let mut s = String::from(
        "echo mac=$(cat /sys/class/net/eth0/address); \
         echo mtu=$(cat /sys/class/net/eth0/mtu); \
         echo addr=$(ip -o -4 addr show dev eth0); \
         echo route=$(ip route show default); \
         while IFS= read -r l; do echo \"hosts:$l\"; done < /etc/hosts; \
         while IFS= read -r l; do echo \"resolv:$l\"; done < /etc/resolv.conf; ",
    );
    for p in std::iter::once(&GATEWAY).chain(peers) {
        s.push_str(&format!(
            "n=0; until ping -c1 -W1 {p} >/dev/null 2>&1; do n=$((n+1)); \
             [ $n -ge 180 ] && break; done; \
             [ $n -lt 180 ] && echo ping_{p}=ok || echo ping_{p}=fail; "
        ));
    }
    s.push_str("echo done; exec sleep 100000");
    s
}

fn check_guest(vm: &Vm, name: &str, last_octet: u8, extra_hosts: &[&str], peers: &[&str]) {
    let out = vm.output();
    let has = |l: &str| out.lines().any(|x| x == l);
    let ctx = || vm.diagnostics();
    assert!(
        has(&format!("mac=02:00:ac:1e:00:{last_octet:02x}")),
        "{name}: MAC\n{}",
        ctx()
    );
    assert!(has("mtu=1450"), "{name}: MTU\n{}", ctx());
    let addr = out.lines().find(|l| l.starts_with("addr=")).unwrap_or("");
    assert!(
        addr.contains(&format!("inet 172.30.0.{last_octet}/24")),
        "{name}: {addr}\n{}",
        ctx()
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with(&format!("route=default via {GATEWAY} dev eth0"))),
        "{name}: route\n{}",
        ctx()
    );
    let hosts: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("hosts:"))
        .collect();
    assert_eq!(hosts[0], "127.0.0.1\tlocalhost", "{name}: {hosts:?}");
    let tail: Vec<String> = extra_hosts
        .iter()
        .map(|h| h.to_string())
        .chain([format!("172.30.0.{last_octet}\t{name}")])
        .collect();
    assert_eq!(
        &hosts[hosts.len() - tail.len()..],
        tail.iter().map(String::as_str).collect::<Vec<_>>(),
        "{name}: {hosts:?}"
    );
    assert!(
        !hosts
            .iter()
            .any(|h| h.contains("image-entry") || h.contains("127.0.1.1")),
        "{name}: {hosts:?}"
    );
    let resolv: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("resolv:"))
        .collect();
    assert_eq!(resolv, RESOLV.lines().collect::<Vec<_>>(), "{name}");
    for p in std::iter::once(&GATEWAY).chain(peers) {
        assert!(has(&format!("ping_{p}=ok")), "{name}: ping {p}\n{}", ctx());
    }
}

macro_rules! need_vm {
    () => {{
        let Some(f) = fixture() else {
            eprintln!("SKIPPED: set HYPER_TEST_KERNEL_DIR (and optionally HYPER_TEST_AGENT) to boot real VMs");
            return;
        };
        (f, ONE_TEST_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner()))
    }};
}

#[test]
fn cold_and_template_vms_share_a_bridge() {
    let (f, _g) = need_vm!();
    let ns = TenantNetns::new("br");
    let scratch = Scratch::new(f, "bridge");
    let templates = scratch.0.join("templates");
    // alpha boots cold; bravo and charlie are restored from one template.
    let (a, b, c) = ("172.30.0.11", "172.30.0.12", "172.30.0.13");
    let links = ["172.30.0.12\tbravo b", "172.30.0.13\tcharlie"];
    let sa = spec(f, "alpha", &probe(&[b, c]), Some(network(&ns, 11, &links)));
    let mut sb = spec(f, "bravo", &probe(&[a, c]), Some(network(&ns, 12, &[])));
    let mut sc = spec(f, "charlie", &probe(&[a, b]), Some(network(&ns, 13, &[])));
    sb.template_dir = Some(templates.clone());
    sc.template_dir = Some(templates.clone());
    // Ahead of time, as hyperd does (one VM booting at a time).
    let t =
        shim::template::ensure(&sb, &templates, true).unwrap_or_else(|e| panic!("template: {e:#}"));
    let va = start(f, &scratch, "alpha", sa);
    let vb = start(f, &scratch, "bravo", sb);
    let vc = start(f, &scratch, "charlie", sc);
    for v in [&vb, &vc] {
        let log = std::fs::read_to_string(v.dir.join("shim.log")).unwrap();
        assert!(
            log.contains(&format!("restored from template {}", t.meta.key)),
            "not restored:\n{log}"
        );
    }
    // Each tap is on the bridge while its VM runs.
    let links_now = ns.links();
    for tap in ["tap00000000000b", "tap00000000000c", "tap00000000000d"] {
        assert!(links_now.iter().any(|l| l == tap), "{links_now:?}");
        let master = ns.ip(&format!("-o link show dev {tap}"));
        assert!(master.contains("master br0"), "{master}");
    }
    for v in [&va, &vb, &vc] {
        v.wait_for_line("done", 240.0);
    }
    check_guest(&va, "alpha", 11, &links, &[b, c]);
    check_guest(&vb, "bravo", 12, &[], &[a, c]);
    check_guest(&vc, "charlie", 13, &[], &[a, b]);
    for v in [&va, &vb, &vc] {
        v.stop();
    }
    // The taps went with their VMs.
    let left = ns.links();
    assert_eq!(left, ["lo", "br0"], "taps left behind: {left:?}");
}

#[test]
fn no_network_brings_up_only_lo() {
    let (f, _g) = need_vm!();
    let script = "echo lo=$(cat /sys/class/net/lo/flags); \
        echo eth0=$(cat /sys/class/net/eth0/flags); \
        while IFS= read -r l; do echo \"hosts:$l\"; done < /etc/hosts; \
        ping -c1 -W1 127.0.0.1 >/dev/null 2>&1 && echo lo_ping=ok; \
        echo done; exec sleep 100000";
    let scratch = Scratch::new(f, "none");
    let v = start(f, &scratch, "lonely", spec(f, "lonely", script, None));
    v.wait_for_line("done", 120.0);
    let out = v.output();
    let flags = |k: &str| -> u32 {
        let hex = out
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=0x")))
            .unwrap_or_else(|| panic!("no {k} flags\n{}", v.diagnostics()));
        u32::from_str_radix(hex, 16).unwrap()
    };
    const IFF_UP: u32 = 1;
    assert_eq!(flags("lo") & IFF_UP, IFF_UP, "lo is down");
    // The NIC is there (fixed device layout) but stays down.
    assert_eq!(flags("eth0") & IFF_UP, 0, "eth0 is up");
    assert!(
        out.lines().any(|l| l == "lo_ping=ok"),
        "{}",
        v.diagnostics()
    );
    // No network: the image's /etc/hosts, with the hostname added.
    assert!(
        out.lines().any(|l| l == "hosts:10.9.9.9\timage-entry"),
        "{out}"
    );
    assert!(out.lines().any(|l| l == "hosts:127.0.1.1\tlonely"), "{out}");
    v.stop();
}
