//! End-to-end tests for Hyper: the real `hyperd`, `hyper-shim`, QEMU/TCG microVMs and the guest
//! agent, driven through the `hyper` CLI, the stock `docker` CLI and `curl`, asserting what a
//! user sees.
//!
//! Run: `scripts/build && cargo test -p e2e` (add a substring to run only some tests:
//! `cargo test -p e2e -- restart`; `--list` lists them). Nothing is built here: the binaries come
//! from `target/debug` (`hyper`, `hyperd`, `hyper-shim`) and
//! `target/x86_64-unknown-linux-gnu/debug/hyper-agent`.
//!
//! Environment:
//! - `HYPER_TEST_KERNEL_DIR`: guest kernel cache (`vmlinuz`, `modules/`, `version`), default
//!   `/var/cache/hyper-test/kernel`; fetched there once with `scripts/fetch-kernel` if missing.
//! - `HYPER_TEST_TIMEOUT_SCALE`: multiplies every deadline (default 1) for slow machines.
//! - `HYPER_TEST_THREADS`: tests run at once (default 2: under TCG a boot costs a core for ~3 s,
//!   and each test boots its VMs one after the other, so at most two VMs boot at once).
//! - `HYPER_TEST_KEEP=1`: keep the data roots (`/tmp/hy-*`) after the run for a post-mortem.
//! - `DOCKER` (default `/usr/local/bin/docker`), the stock Docker CLI.
//!
//! Shape: one test binary with its own `main` (see `Cargo.toml`): [`run_tests`] starts no daemon
//! itself; [`main_daemon`] starts the shared hyperd on first use (a `OnceLock`), tests that must
//! kill or misconfigure a daemon start their own with [`Daemon::start`]. Every daemon is
//! registered, so at the end [`run_tests`] removes every container, stops each daemon and checks
//! that no QEMU, shim or `DATA/c/*` directory is left. A failing test prints the daemons' logs and
//! the guest consoles.

pub mod pty;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Time

pub fn scale() -> f64 {
    std::env::var("HYPER_TEST_TIMEOUT_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|s: &f64| *s > 0.0)
        .unwrap_or(1.0)
}

/// The standby VMs a test's hyperd keeps however quiet it is (`--standby-vms`; hyperd's own
/// default under TCG is its ceiling, sized for one hyperd on the host, not for several).
const STANDBY_VMS: usize = 2;

/// The most standby VMs a test's hyperd keeps after a burst (`--standby-vms-max`).
const STANDBY_VMS_MAX: usize = 3;

/// `secs` scaled by `HYPER_TEST_TIMEOUT_SCALE`.
pub fn secs(secs: f64) -> Duration {
    Duration::from_secs_f64(secs * scale())
}

/// Polls `f` until it returns `Some`, every 100 ms, for at most `timeout` (already scaled by the
/// caller through [`secs`]); panics with `what` and the last observation otherwise.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let end = Instant::now() + timeout;
    let mut last;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) => last = e,
        }
        if Instant::now() >= end {
            panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------
// Paths and binaries

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn binary(rel: &str) -> PathBuf {
    let p = target_dir().join(rel);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/build before the end-to-end tests",
        p.display()
    );
    p
}

pub fn hyper_bin() -> PathBuf {
    binary("debug/hyper")
}
pub fn hyperd_bin() -> PathBuf {
    binary("debug/hyperd")
}
pub fn agent_bin() -> PathBuf {
    binary("x86_64-unknown-linux-gnu/debug/hyper-agent")
}
pub fn docker_bin() -> PathBuf {
    std::env::var_os("DOCKER")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/local/bin/docker".into())
}

/// A short unique path under /tmp (unix sockets live below it: < 108 bytes).
pub fn short_tmp(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    PathBuf::from(format!(
        "/tmp/hy-{}{}-{}",
        std::process::id(),
        tag,
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// The guest kernel, fetched once into the cache dir.
pub fn kernel_dir() -> &'static Path {
    static K: OnceLock<PathBuf> = OnceLock::new();
    K.get_or_init(|| {
        let dir = std::env::var_os("HYPER_TEST_KERNEL_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| "/var/cache/hyper-test/kernel".into());
        if !dir.join("vmlinuz").is_file() || !dir.join("version").is_file() {
            eprintln!("e2e: fetching the guest kernel into {}", dir.display());
            let st = Command::new(workspace_root().join("scripts/fetch-kernel"))
                .arg(&dir)
                .status()
                .expect("run scripts/fetch-kernel");
            assert!(
                st.success(),
                "scripts/fetch-kernel {} failed",
                dir.display()
            );
        }
        dir
    })
}

/// The kernel release the guests must report: `linux-image-6.1.0-56-cloud-amd64 6.1.192-2` in
/// `version` gives `6.1.0-56-cloud-amd64`.
pub fn guest_kernel_release() -> String {
    let v = std::fs::read_to_string(kernel_dir().join("version")).expect("kernel version file");
    let pkg = v
        .split_whitespace()
        .next()
        .expect("package in version file");
    pkg.strip_prefix("linux-image-")
        .unwrap_or_else(|| panic!("unexpected kernel package {pkg:?}"))
        .to_string()
}

/// The busybox image archive, built once per run.
pub fn busybox_tar() -> &'static Path {
    static T: OnceLock<PathBuf> = OnceLock::new();
    T.get_or_init(|| {
        let out = PathBuf::from(format!("/tmp/hy-{}-busybox.tar", std::process::id()));
        let st = Command::new(workspace_root().join("scripts/make-busybox-image"))
            .arg(&out)
            .arg("busybox:latest")
            .stderr(Stdio::null())
            .status()
            .expect("run scripts/make-busybox-image");
        assert!(st.success(), "scripts/make-busybox-image failed");
        out
    })
}

// ---------------------------------------------------------------------------------------------
// Running commands

/// What a command printed and how it ended.
#[derive(Debug, Clone)]
pub struct Out {
    pub cmd: String,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Out {
    /// Panics unless the command exited 0.
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "command failed: {self}");
        self
    }
    /// Panics unless the exit code is `code`.
    pub fn code(self, code: i32) -> Self {
        assert_eq!(self.code, code, "unexpected exit code: {self}");
        self
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self}"))
    }
    pub fn out(&self) -> String {
        self.stdout.trim().to_string()
    }
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exited {} after {:.1}s\n--- stdout\n{}--- stderr\n{}---",
            self.cmd,
            self.code,
            self.took.as_secs_f64(),
            self.stdout,
            self.stderr
        )
    }
}

/// A command to run with a deadline; the child is killed when the deadline passes.
pub struct Cmd {
    cmd: Command,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
    text: String,
}

impl Cmd {
    pub fn new(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Self {
        let mut cmd = Command::new(program.as_ref());
        cmd.args(args);
        let name = Path::new(program.as_ref())
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Cmd {
            cmd,
            stdin: None,
            timeout: secs(60.0),
            text: format!("{name} {}", args.join(" ")),
        }
    }
    pub fn env(mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.env(k, v);
        self
    }
    pub fn stdin(mut self, data: &[u8]) -> Self {
        self.stdin = Some(data.to_vec());
        self
    }
    /// Unscaled seconds; scaled here.
    pub fn timeout(mut self, s: f64) -> Self {
        self.timeout = secs(s);
        self
    }
    pub fn run(mut self) -> Out {
        let start = Instant::now();
        self.cmd
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self
            .cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn `{}`: {e}", self.text));
        if let Some(data) = self.stdin.take() {
            let mut w = child.stdin.take().unwrap();
            std::thread::spawn(move || {
                let _ = w.write_all(&data);
            });
        }
        let out_t = reader(child.stdout.take().unwrap());
        let err_t = reader(child.stderr.take().unwrap());
        let end = start + self.timeout;
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait") {
                break st;
            }
            if Instant::now() >= end {
                let _ = child.kill();
                let _ = child.wait();
                let stdout = out_t.join().unwrap_or_default();
                let stderr = err_t.join().unwrap_or_default();
                panic!(
                    "`{}` did not finish within {:?}\n--- stdout\n{stdout}--- stderr\n{stderr}---",
                    self.text, self.timeout
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        use std::os::unix::process::ExitStatusExt;
        let code = status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        Out {
            cmd: self.text,
            code,
            stdout: out_t.join().unwrap_or_default(),
            stderr: err_t.join().unwrap_or_default(),
            took: start.elapsed(),
        }
    }
}

fn reader(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

// ---------------------------------------------------------------------------------------------
// Network namespaces the tests make

/// A named network namespace (`ip netns add`), deleted when dropped (also when a test panics).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("hy-{tag}-{}", std::process::id());
        Cmd::new("ip", &["netns", "add", &name]).run().ok();
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// Removes the namespace (idempotent).
    pub fn delete(&self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }

    /// A namespace standing for the internet: linked to `node` by a veth (`host_if` on the
    /// node at 203.0.113.1, `eth0` here at 203.0.113.2, TEST-NET-3) and routing `fip_pool`
    /// through the node. The node-side link goes with the namespace.
    pub fn internet(tag: &str, node: &Netns, host_if: &str, fip_pool: &str) -> Netns {
        let ns = Netns::new(tag);
        node.ip(&[
            "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ]);
        node.ip(&["addr", "add", "203.0.113.1/24", "dev", host_if]);
        node.ip(&["link", "set", host_if, "up"]);
        ns.ip(&["addr", "add", "203.0.113.2/24", "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        ns.ip(&["route", "add", fip_pool, "via", "203.0.113.1"]);
        ns
    }

    /// Joins two nodes' namespaces by a veth (`dc0` in each) standing for the datacenter's
    /// network, with `a_ip` and `b_ip` (/24) on its ends. The link goes with the namespaces.
    pub fn datacenter_link(a: &Netns, a_ip: &str, b: &Netns, b_ip: &str) {
        a.ip(&[
            "link", "add", "dc0", "type", "veth", "peer", "name", "dc0", "netns", &b.name,
        ]);
        for (ns, ip) in [(a, a_ip), (b, b_ip)] {
            ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "dc0"]);
            ns.ip(&["link", "set", "dc0", "up"]);
        }
    }

    /// A namespace standing for the datacenter's network: a bridge that each node's namespace
    /// joins by a veth (`dc0` there, with its address /24). The links go with the namespace.
    pub fn datacenter(tag: &str, nodes: &[(&Netns, &str)]) -> Netns {
        let dc = Netns::new(tag);
        dc.ip(&["link", "add", "br0", "type", "bridge"]);
        dc.ip(&["link", "set", "br0", "up"]);
        for (i, (node, ip)) in nodes.iter().enumerate() {
            let port = format!("p{i}");
            dc.ip(&[
                "link", "add", &port, "type", "veth", "peer", "name", "dc0", "netns", &node.name,
            ]);
            dc.ip(&["link", "set", &port, "master", "br0", "up"]);
            node.ip(&["addr", "add", &format!("{ip}/24"), "dev", "dc0"]);
            node.ip(&["link", "set", "dc0", "up"]);
        }
        dc
    }

    /// `ip -n NAME ARGS`, which must succeed.
    pub fn ip(&self, args: &[&str]) {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        Cmd::new("ip", &a).run().ok();
    }

    /// Runs `f` on a thread inside the namespace (namespaces are per thread).
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let file = std::fs::File::open(self.path()).expect("open netns");
        std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .expect("thread in netns")
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.delete();
    }
}

/// One HTTP/1.0 GET with short timeouts: the body on a 200, or why not.
pub fn http_get(addr: &str, path: &str) -> Result<String, String> {
    let sa: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut s = std::net::TcpStream::connect_timeout(&sa, secs(3.0)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(secs(5.0)))
        .map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").map_err(|e| e.to_string())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).map_err(|e| e.to_string())?;
    match resp.split_once("\r\n\r\n") {
        Some((head, body))
            if head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200") =>
        {
            Ok(body.to_string())
        }
        _ => Err(format!("unexpected response: {resp:?}")),
    }
}

// ---------------------------------------------------------------------------------------------
// hyperd

/// How to start a hyperd.
#[derive(Default, Clone)]
pub struct DaemonOpts {
    pub kernel_cmdline_extra: Option<String>,
    pub boot_timeout: Option<u64>,
    /// More hyperd flags (e.g. `--fip-pool CIDR`).
    pub extra_args: Vec<String>,
    /// Variables of the kit's environment for hyperd (such as `HYPERD_STANDBY_VMS`) left out,
    /// so that hyperd's own default applies.
    pub env_remove: Vec<&'static str>,
    /// The data root on an ext4 file system of this many MiB of its own (a loop-mounted image,
    /// unmounted and removed at teardown), to fill it up.
    pub data_fs_mib: Option<u64>,
    /// Another node's data root whose fleet secrets (the sealing key and the TLS CA) this one
    /// starts with, as an operator copies them to each node of a fleet.
    pub secrets_from: Option<PathBuf>,
}

/// A hyperd this test binary started, on its own data root, listening on a unix socket and a
/// loopback TCP port, with the default tenant's keys in `client_dir/config.json`.
pub struct Daemon {
    pub data: PathBuf,
    pub sock: PathBuf,
    pub tcp_port: u16,
    pub client_dir: PathBuf,
    pub log: PathBuf,
    /// The node's network namespace for this daemon (`--node-netns`): several daemons share
    /// this process's namespace for their APIs, each has its own transit links, node rules,
    /// FIP routes and published ports. Clients of published ports and FIPs connect from here.
    pub node: Netns,
    opts: DaemonOpts,
    child: Mutex<Option<Child>>,
}

thread_local! {
    /// Daemons the test running on this thread used: their logs are printed when it fails.
    static USED: std::cell::RefCell<Vec<Arc<Daemon>>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn note_used(d: &Arc<Daemon>) {
    USED.with(|u| {
        let mut u = u.borrow_mut();
        if !u.iter().any(|x| Arc::ptr_eq(x, d)) {
            u.push(d.clone());
        }
    });
}

fn registry() -> &'static Mutex<Vec<Arc<Daemon>>> {
    static R: OnceLock<Mutex<Vec<Arc<Daemon>>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(Vec::new()))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl Daemon {
    /// Makes a fresh data root (kernel linked from the cache), starts hyperd, waits for its API
    /// and loads the busybox image.
    pub fn start(tag: &str, opts: DaemonOpts) -> Arc<Daemon> {
        let data = short_tmp(tag);
        if let Some(mib) = opts.data_fs_mib {
            mount_small_fs(&data, mib);
        }
        let kdir = kernel_dir();
        // A directory of links, not a link to the cache: hyperd writes the initramfs next to
        // the kernel, and daemons starting at once must not race on one file.
        let k = data.join("kernel");
        std::fs::create_dir_all(&k).unwrap();
        for f in ["vmlinuz", "modules", "version"] {
            std::os::unix::fs::symlink(kdir.join(f).canonicalize().unwrap(), k.join(f)).unwrap();
        }
        std::fs::write(data.join("owner.pid"), std::process::id().to_string()).unwrap();
        if let Some(from) = &opts.secrets_from {
            std::fs::create_dir_all(data.join("tls")).unwrap();
            for f in ["seal.key", "tls/ca.pem", "tls/ca-key.pem"] {
                std::fs::copy(from.join(f), data.join(f)).unwrap();
            }
        }
        let node_tag = data
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace("hy-", "node");
        let d = Arc::new(Daemon {
            node: Netns::new(&node_tag),
            sock: data.join("api.sock"),
            tcp_port: free_port(),
            client_dir: data.join("client"),
            log: data.join("hyperd.log"),
            data,
            opts,
            child: Mutex::new(None),
        });
        registry().lock().unwrap().push(d.clone());
        note_used(&d);
        d.spawn(&[]);
        d.wait_ready();
        d.hyper(&["load", "-i", busybox_tar().to_str().unwrap()])
            .timeout(120.0)
            .run()
            .ok();
        d
    }

    pub fn unix_host(&self) -> String {
        format!("unix://{}", self.sock.display())
    }
    pub fn tcp_host(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.tcp_port)
    }

    /// Spawns hyperd with the daemon's flags and `extra` after them (a flag given twice takes
    /// the last).
    fn spawn(&self, extra: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(hyperd_bin());
        cmd.arg("--data-root")
            .arg(&self.data)
            .arg("-H")
            .arg(self.unix_host())
            .arg("-H")
            .arg(self.tcp_host())
            .arg("--agent")
            .arg(agent_bin())
            .arg("--client-config-dir")
            .arg(&self.client_dir)
            .arg("--node-netns")
            .arg(self.node.path())
            .env("HYPERD_LOG", "info")
            // The tests' hyperds share two cores: a burst in one test would grow the pool to
            // what fits the host's memory, and its refills would slow every other test.
            .env("HYPERD_STANDBY_VMS", STANDBY_VMS.to_string())
            .env("HYPERD_STANDBY_VMS_MAX", STANDBY_VMS_MAX.to_string())
            // Nor may another test's memory decide how many a test's hyperd keeps.
            .env("HYPERD_STANDBY_MEMORY_RESERVE", "0");
        if let Some(x) = &self.opts.kernel_cmdline_extra {
            cmd.arg("--kernel-cmdline-extra").arg(x);
        }
        if let Some(t) = self.opts.boot_timeout {
            cmd.arg("--boot-timeout").arg(t.to_string());
        }
        cmd.args(&self.opts.extra_args).args(extra);
        for var in &self.opts.env_remove {
            cmd.env_remove(var);
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = cmd.spawn().expect("spawn hyperd");
        *self.child.lock().unwrap() = Some(child);
    }

    /// Waits until `hyper version` answers on the unix socket.
    pub fn wait_ready(&self) {
        wait_for(
            &format!("hyperd on {} to answer", self.data.display()),
            secs(60.0),
            || {
                // The lock is let go before a panic: teardown takes it again.
                let exited = match self.child.lock().unwrap().as_mut() {
                    Some(c) => c.try_wait().ok().flatten(),
                    None => None,
                };
                if let Some(st) = exited {
                    panic!(
                        "hyperd exited ({st}) while starting:\n{}",
                        self.log_tail(40)
                    );
                }
                let o = self.hyper(&["version"]).timeout(10.0).run();
                if o.code == 0 {
                    Ok(())
                } else {
                    Err(o.stderr)
                }
            },
        );
    }

    /// `kill -9` hyperd (containers must carry on under their shims).
    pub fn kill9(&self) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts hyperd again on the same data root.
    pub fn restart(&self) {
        self.kill9();
        self.start_again();
    }

    /// Starts hyperd on its data root after [`Daemon::terminate`] or [`Daemon::kill9`].
    pub fn start_again(&self) {
        self.start_again_with(&[]);
    }

    /// As [`Daemon::start_again`], with `extra` flags beside the daemon's own.
    pub fn start_again_with(&self, extra: &[&str]) {
        self.spawn(extra);
        self.wait_ready();
    }

    /// SIGTERM and wait (falls back to SIGKILL), then stop the standby VMs hyperd leaves for
    /// its next start: nothing of this daemon runs afterwards.
    pub fn stop(&self) {
        self.terminate();
        stop_standbys(&self.data);
        stop_idle_networks(&self.data);
    }

    /// SIGTERM and wait (falls back to SIGKILL); its ready standby VMs stay, as they do for an
    /// operator's hyperd.
    pub fn terminate(&self) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            // SAFETY: plain kill(2) on a child we spawned and have not reaped yet.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let end = Instant::now() + secs(10.0);
            while Instant::now() < end {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.lock().unwrap().as_ref().map(|c| c.id())
    }

    /// `hyper -H unix://... ARGS` with an empty config dir (the unix socket needs no keys).
    pub fn hyper(&self, args: &[&str]) -> Cmd {
        let host = self.unix_host();
        let mut a = vec!["-H", host.as_str()];
        a.extend_from_slice(args);
        Cmd::new(hyper_bin(), &a)
            .env("HYPER_CONFIG", self.data.join("noconfig"))
            .env_remove_hyper()
    }

    /// `hyper -H tcp://... ARGS` signing with the keys in `config_dir`.
    pub fn hyper_tcp(&self, config_dir: &Path, args: &[&str]) -> Cmd {
        let host = self.tcp_host();
        let mut a = vec!["-H", host.as_str()];
        a.extend_from_slice(args);
        Cmd::new(hyper_bin(), &a)
            .env("HYPER_CONFIG", config_dir)
            .env_remove_hyper()
    }

    /// `hyperd tenant --socket SOCK ARGS` against this daemon; must succeed.
    pub fn tenant_admin(&self, args: &[&str]) -> Out {
        let mut a = vec![
            "--data-root",
            self.data.to_str().unwrap(),
            "tenant",
            "--socket",
            self.sock.to_str().unwrap(),
        ];
        a.extend_from_slice(args);
        Cmd::new(hyperd_bin(), &a).run().ok()
    }

    /// Creates tenant `name` through the running daemon and writes its keys to a client config
    /// directory for [`Daemon::hyper_tcp`]; returns the directory and the access key.
    pub fn new_tenant(&self, name: &str) -> (PathBuf, String) {
        let o = self.tenant_admin(&["create", name]);
        let field = |k: &str| {
            o.stdout
                .lines()
                .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
                .unwrap_or_else(|| panic!("no {k} in {o}"))
        };
        let access = field("access key:");
        let dir = self.data.join(format!("{name}cfg"));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = serde_json::json!({"clouds": {self.tcp_host(): {
            "accesskey": access,
            "secretkey": field("secret key:"),
            "region": "us-west-1",
        }}});
        std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
        (dir, access)
    }

    /// `hyper service create` of an HTTP service `name` (see [`service_create_args`]); not
    /// run yet.
    pub fn http_service(&self, name: &str, replicas: usize, serve: &str) -> Cmd {
        let args = service_create_args(name, replicas, "http", &[], serve);
        self.hyper(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// One field of `hyper info` (`StandbyVMsReady`...).
    pub fn info_field(&self, field: &str) -> String {
        self.hyper(&["info", "--format", &format!("{{{{.{field}}}}}")])
            .run()
            .ok()
            .out()
    }

    /// `curl` of `METHOD path` on the unix socket (`path` with its version prefix, e.g.
    /// `/v1.44/volumes`), `extra` curl arguments before the URL; stdout is the body, then a
    /// line with the HTTP status.
    pub fn api(&self, method: &str, path: &str, extra: &[&str]) -> Out {
        let sock = self.sock.to_string_lossy().into_owned();
        let url = format!("http://hyper{path}");
        let mut a = vec![
            "-s",
            "-w",
            "\n%{http_code}",
            "--unix-socket",
            &sock,
            "-X",
            method,
        ];
        a.extend_from_slice(extra);
        a.push(&url);
        Cmd::new("curl", &a).run().ok()
    }

    /// `hyper run -d ARGS` as a start goes by default: under templates on a claimed standby VM
    /// (once one is ready; when another test took it first, the container is removed and run
    /// again, three times at most), cold under `HYPERD_TEMPLATES=off`. Its ID and its shim.log.
    pub fn run_on_the_default_path(&self, args: &[&str]) -> (String, String) {
        let cold = std::env::var("HYPERD_TEMPLATES").as_deref() == Ok("off");
        for attempt in 1..=3 {
            if !cold {
                wait_for("a standby VM ready", secs(120.0), || {
                    match self.info_field("StandbyVMsReady") {
                        n if n != "0" => Ok(()),
                        _ => Err(self.info_field("StandbyVMs")),
                    }
                });
            }
            let mut a = vec!["run", "-d"];
            a.extend_from_slice(args);
            let id = self.hyper(&a).timeout(120.0).run().ok().out();
            let log = std::fs::read_to_string(self.cdir(&id).join("shim.log")).unwrap_or_default();
            if cold || log.contains(STANDBY_CLAIMED) {
                return (id, log);
            }
            eprintln!("attempt {attempt} did not get a standby:\n{log}");
            self.hyper(&["rm", "-f", &id]).run().ok();
        }
        panic!("no start claimed a standby VM in three attempts");
    }

    /// The stock docker CLI against the unix socket.
    pub fn docker(&self, args: &[&str]) -> Cmd {
        Cmd::new(docker_bin(), args)
            .env("DOCKER_HOST", self.unix_host())
            .env("DOCKER_CONFIG", self.data.join("docker-config"))
            .env("DOCKER_CLI_HINTS", "false")
    }

    /// Container directory `DATA/c/<id12>`.
    pub fn cdir(&self, id: &str) -> PathBuf {
        self.data.join("c").join(&id[..12.min(id.len())])
    }

    /// What is left on the host of the removed container `id`: its QEMU and shim processes and
    /// its directory. `rm -f` answers once the VM is killed; the rest goes in the background.
    pub fn teardown_left(&self, id: &str) -> Vec<String> {
        let dir = self.cdir(id);
        let mut left = container_processes(self, id);
        if dir.exists() {
            left.push(format!("directory {}", dir.display()));
        }
        left
    }

    /// Waits, at most `timeout`, until nothing is left on the host of the removed containers
    /// `ids` (`teardown_left`).
    pub fn wait_torn_down(&self, ids: &[String], timeout: Duration) {
        wait_for("the removed containers to be torn down", timeout, || {
            let left: Vec<String> = ids.iter().flat_map(|id| self.teardown_left(id)).collect();
            left.is_empty().then_some(()).ok_or(left.join("; "))
        });
    }

    /// Full ID of a container (by name or ID), via inspect.
    pub fn id_of(&self, name: &str) -> String {
        let v = self.inspect(name);
        v["Id"].as_str().expect("Id").to_string()
    }

    /// `hyper inspect NAME` as JSON (the first element).
    pub fn inspect(&self, name: &str) -> Value {
        let o = self.hyper(&["inspect", name]).run().ok();
        let v = o.json();
        v.get(0)
            .cloned()
            .unwrap_or_else(|| panic!("empty inspect: {o}"))
    }

    /// Waits until the container's State.Status is `status`.
    pub fn wait_status(&self, name: &str, status: &str, timeout: f64) -> Value {
        wait_for(&format!("{name} to be {status}"), secs(timeout), || {
            let o = self.hyper(&["inspect", name]).run();
            if o.code != 0 {
                return Err(o.to_string());
            }
            let v = o.json()[0].clone();
            if v["State"]["Status"] == status {
                Ok(v)
            } else {
                Err(v["State"].to_string())
            }
        })
    }

    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log, n)
    }

    /// hyperd's log, and every guest console and supervisor log on this data root.
    pub fn diagnostics(&self) -> String {
        let mut s = format!(
            "===== hyperd {} (log {})\n{}",
            self.data.display(),
            self.log.display(),
            self.log_tail(60)
        );
        if let Ok(rd) = std::fs::read_dir(self.data.join("c")) {
            for e in rd.flatten() {
                let p = e.path().join("console.log");
                s += &format!("===== console {}\n{}", p.display(), tail(&p, 25));
                let p = e.path().join("shim.log");
                s += &format!("===== {}\n{}", p.display(), tail(&p, 15));
                let st = e.path().join("state.json");
                if let Ok(t) = std::fs::read_to_string(&st) {
                    s += &format!("===== {}\n{t}\n", st.display());
                }
            }
        }
        s
    }

    /// Removes every container, stops hyperd, returns what was left behind.
    fn teardown(&self) -> Vec<String> {
        let mut leaks = Vec::new();
        if self.pid().is_some() {
            // Services first: their reconciler would replace removed replicas.
            let o = self.hyper(&["service", "ls", "-q"]).run();
            for name in o.stdout.split_whitespace() {
                let r = self.hyper(&["service", "rm", name]).timeout(120.0).run();
                if r.code != 0 {
                    leaks.push(format!("service rm {name} failed: {r}"));
                }
            }
            let o = self.hyper(&["ps", "-aq", "--no-trunc"]).run();
            for id in o.stdout.split_whitespace() {
                let r = self.hyper(&["rm", "-f", id]).timeout(60.0).run();
                // `ps` lists the fleet's containers: another node's daemon removes its own.
                if r.code != 0 && !r.stderr.contains("runs on another node") {
                    leaks.push(format!("rm -f {id} failed: {r}"));
                }
            }
            self.stop();
        }
        self.node.delete();
        leaks.extend(leftovers(&self.data));
        leaks
    }
}

trait EnvRemove {
    fn env_remove_hyper(self) -> Self;
}
impl EnvRemove for Cmd {
    fn env_remove_hyper(mut self) -> Self {
        for k in ["HYPER_HOST", "HYPER_ACCESS", "HYPER_SECRET", "HYPER_REGION"] {
            self.cmd.env_remove(k);
        }
        self
    }
}

pub fn tail(p: &Path, n: usize) -> String {
    let t = std::fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|e| format!("(cannot read: {e})\n"));
    let lines: Vec<&str> = t.lines().collect();
    let mut s = lines[lines.len().saturating_sub(n)..].join("\n");
    s.push('\n');
    s
}

/// Processes whose command line mentions `needle` (QEMU and shims name files under the data
/// root), or whose root or working directory is under it (a VM that started as a standby names
/// its standby directory, but its chroot and its supervisor's cwd moved into the container's),
/// as "pid cmdline".
pub fn processes_mentioning(needle: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) || name == me {
            continue;
        }
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        let lives_in = |link: &str| {
            std::fs::read_link(e.path().join(link))
                .is_ok_and(|p| format!("{}/", p.display()).starts_with(needle))
        };
        if !cmd.is_empty() && (cmd.contains(needle) || lives_in("root") || lives_in("cwd")) {
            out.push(format!("{name} {}", cmd.trim()));
        }
    }
    out
}

/// The arguments of `hyper service create` of a `protocol` service `name` on port 80 of
/// `replicas` busybox replicas running `sh -c serve`, health-checked every second (down after
/// 2 failures, up after 1), as the service tests and benchmarks use it; `extra` goes before
/// the image.
pub fn service_create_args(
    name: &str,
    replicas: usize,
    protocol: &str,
    extra: &[&str],
    serve: &str,
) -> Vec<String> {
    let replicas = replicas.to_string();
    let mut args = vec![
        "service",
        "create",
        "--name",
        name,
        "--replicas",
        &replicas,
        "--service-port",
        "80",
        "--protocol",
        protocol,
        "--health-check-interval",
        "1",
        "--health-check-fall",
        "2",
        "--health-check-rise",
        "1",
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["busybox", "sh", "-c", serve]);
    args.into_iter().map(String::from).collect()
}

/// SIGKILL to every process whose command line mentions `needle` (one of our directories).
fn kill_processes_mentioning(needle: &str) {
    for p in processes_mentioning(needle) {
        if let Some(pid) = p
            .split_whitespace()
            .next()
            .and_then(|s| s.parse::<i32>().ok())
        {
            // SAFETY: kill(2) on a pid read from /proc; worst case it is already gone.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Kills the standby VMs (QEMU and supervisor) a stopped hyperd left under `data`, and removes
/// their directories.
pub fn stop_standbys(data: &Path) {
    let standby = data.join("standby");
    let needle = format!("{}/", standby.display());
    kill_processes_mentioning(&needle);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_mentioning(&needle).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_dir_all(&standby);
}

/// The tenant namespaces a stopped hyperd leaves with no VM on them (it keeps every one for its
/// next start): their DNS servers and balancers killed, the namespaces unmounted, their
/// directories removed. Those with a tap (a running container) stay.
pub fn stop_idle_networks(data: &Path) {
    for dir in std::fs::read_dir(data.join("net"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
    {
        let netns = dir.join("netns");
        let net = format!("--net={}", netns.display());
        let taps = Cmd::new(
            "nsenter",
            &[&net, "ip", "-o", "link", "show", "type", "tun"],
        )
        .run();
        if taps.code == 0 && !taps.stdout.trim().is_empty() {
            continue;
        }
        let needle = format!("{}/", dir.display());
        kill_processes_mentioning(&needle);
        let _ = nix::mount::umount2(&netns, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// QEMU or shim processes of `data`, and container directories under `DATA/c`.
pub fn leftovers(data: &Path) -> Vec<String> {
    let root = format!("{}/", data.display());
    let mut l: Vec<String> = processes_mentioning(&root)
        .into_iter()
        .filter(|p| {
            [
                "qemu-system",
                "hyper-shim",
                "hyperd",
                "hyper-dns",
                "hyper-lb",
            ]
            .iter()
            .any(|b| p.contains(b))
        })
        .map(|p| format!("process left: {p}"))
        .collect();
    if let Ok(rd) = std::fs::read_dir(data.join("c")) {
        for e in rd.flatten() {
            l.push(format!("container dir left: {}", e.path().display()));
        }
    }
    // Tenant namespaces are bind mounts under DATA/net/tN: none may outlive the containers.
    if let Ok(rd) = std::fs::read_dir(data.join("net")) {
        for e in rd.flatten() {
            l.push(format!("tenant network left: {}", e.path().display()));
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for m in mounts.lines().filter_map(|line| line.split(' ').nth(4)) {
        if m.starts_with(&root) {
            l.push(format!("mount left: {m}"));
        }
    }
    // VM cgroups: a stopped hyperd's base group (`hyper-NODE` below its own, which is this
    // process's) goes with its last VM.
    if let Ok(node) = std::fs::read_to_string(data.join("node-id")) {
        let node = node.trim();
        let base = format!("hyper-{}", &node[..node.len().min(12)]);
        for dir in cgroup_dirs("self") {
            if dir.join(&base).exists() {
                l.push(format!("cgroup left: {}", dir.join(&base).display()));
            }
        }
    }
    l
}

/// The cgroup directories process `pid` (or `self`) is in, one per mounted hierarchy.
pub fn cgroup_dirs(pid: &str) -> Vec<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    // (mount point, cgroup2, super options)
    let mounts: Vec<(String, bool, String)> = mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let point = left.split(' ').nth(4)?.to_string();
            let mut right = right.split(' ');
            let fstype = right.next()?;
            let options = right.nth(1).unwrap_or_default().to_string();
            matches!(fstype, "cgroup" | "cgroup2").then_some((point, fstype == "cgroup2", options))
        })
        .collect();
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let mut dirs = Vec::new();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let mount = mounts.iter().find(|(_, v2, options)| {
            if controllers.is_empty() {
                *v2
            } else {
                !*v2 && controllers
                    .split(',')
                    .all(|c| options.split(',').any(|o| o == c))
            }
        });
        if let Some((point, ..)) = mount {
            dirs.push(Path::new(point).join(path.trim_start_matches('/')));
        }
    }
    dirs
}

/// QEMU/shim processes of one container (its directory is in their command lines).
pub fn container_processes(d: &Daemon, id: &str) -> Vec<String> {
    processes_mentioning(&format!("{}", d.cdir(id).display()))
        .into_iter()
        .filter(|p| p.contains("qemu-system") || p.contains("hyper-shim"))
        .collect()
}

/// Moves this test process (still single-threaded) into a network namespace of its own with
/// only `lo` up: every hyperd, VM, bridge, nftables rule and client the tests start lives there,
/// and nothing they do can reach the machine's real networks. The namespace goes away with the
/// process.
pub fn enter_private_network_namespace() {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .expect("unshare(CLONE_NEWNET): the end-to-end tests run as root");
    let st = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("run ip");
    assert!(st.success(), "ip link set lo up failed");
}

/// Data roots of earlier runs whose test process is gone: kill their processes, remove them.
fn reap_stale_roots() {
    for e in std::fs::read_dir("/tmp").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("hy-") {
            continue;
        }
        let Ok(owner) = std::fs::read_to_string(e.path().join("owner.pid")) else {
            continue;
        };
        let alive = Path::new(&format!("/proc/{}", owner.trim())).exists();
        if alive {
            continue;
        }
        let root = format!("{}/", e.path().display());
        kill_processes_mentioning(&root);
        // Tenant namespaces are bind mounts below the root, and the root may be a small file
        // system of its own (`mount_small_fs`): detach them first.
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for m in mounts.lines().filter_map(|l| l.split(' ').nth(4)) {
            if m.starts_with(&root) || Path::new(m) == e.path() {
                let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        eprintln!("e2e: removed a stale data root {}", e.path().display());
        let _ = std::fs::remove_dir_all(e.path());
        let _ = std::fs::remove_file(e.path().with_extension("fs.img"));
    }
    reap_stale_namespaces();
}

/// Network namespaces an earlier test process made (`Netns::new` names them `hy-TAG-PID`) and
/// could not delete because it was killed: deleted when that process is gone.
fn reap_stale_namespaces() {
    for e in std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(owner) = name
            .strip_prefix("hy-")
            .and_then(|rest| rest.rsplit_once('-'))
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{owner}")).exists() {
            continue;
        }
        eprintln!("e2e: removed a stale network namespace {name}");
        Netns { name }.delete();
    }
}

/// An ext4 file system of `mib` MiB mounted on `at` (made here), from a sparse image beside
/// it; unmounted and removed at teardown.
fn mount_small_fs(at: &Path, mib: u64) {
    let image = at.with_extension("fs.img");
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(mib << 20))
        .unwrap();
    std::fs::create_dir_all(at).unwrap();
    Cmd::new("mkfs.ext4", &["-q", "-F", image.to_str().unwrap()])
        .run()
        .ok();
    Cmd::new(
        "mount",
        &["-o", "loop", image.to_str().unwrap(), at.to_str().unwrap()],
    )
    .run()
    .ok();
    let at = at.to_path_buf();
    at_teardown(move || {
        // Detached, not unmounted: a VM's QEMU killed just before may still be closing its
        // files there (the file system goes when it has).
        let _ = nix::mount::umount2(&at, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(&image);
    });
}

/// The hyperd shared by the tests that neither kill nor reconfigure it.
pub fn main_daemon() -> &'static Daemon {
    static D: OnceLock<Arc<Daemon>> = OnceLock::new();
    let d = D.get_or_init(|| Daemon::start("m", DaemonOpts::default()));
    note_used(d);
    d
}

// ---------------------------------------------------------------------------------------------
// Runner

pub type TestFn = fn();

/// What a shim's log says when its VM was a claimed standby.
pub const STANDBY_CLAIMED: &str = "standby: claimed by container";

/// Work left for the end of the run.
type TeardownHook = Box<dyn FnOnce() + Send>;

fn teardown_hooks() -> &'static Mutex<Vec<TeardownHook>> {
    static H: OnceLock<Mutex<Vec<TeardownHook>>> = OnceLock::new();
    H.get_or_init(Mutex::default)
}

/// Runs `f` when the tests are over, after every daemon has been stopped.
pub fn at_teardown(f: impl FnOnce() + Send + 'static) {
    teardown_hooks().lock().unwrap().push(Box::new(f));
}

// ---------------------------------------------------------------------------------------------
// Ceph

/// A real Ceph cluster (`scripts/ceph-cluster`: 1 mon, 1 mgr, 3 OSDs in a namespace of their
/// own, linked to this process's by a veth), started once per test binary on first use and
/// stopped at teardown.
pub struct Ceph {
    pub dir: PathBuf,
}

impl Ceph {
    pub fn get() -> &'static Ceph {
        static C: OnceLock<Ceph> = OnceLock::new();
        C.get_or_init(|| {
            let dir = short_tmp("ceph");
            let script = workspace_root().join("scripts/ceph-cluster");
            Cmd::new(&script, &["start", dir.to_str().unwrap()])
                .timeout(300.0)
                .run()
                .ok();
            let stop_dir = dir.clone();
            at_teardown(move || {
                Cmd::new(&script, &["stop", stop_dir.to_str().unwrap()])
                    .timeout(120.0)
                    .run()
                    .ok();
            });
            Ceph { dir }
        })
    }

    pub fn conf(&self) -> PathBuf {
        self.dir.join("ceph.conf")
    }

    /// `scripts/ceph-cluster CMD DIR ARGS`, which must succeed.
    pub fn script(&self, cmd: &str, args: &[&str]) -> Out {
        let mut a = vec![cmd, self.dir.to_str().unwrap()];
        a.extend_from_slice(args);
        Cmd::new(workspace_root().join("scripts/ceph-cluster"), &a)
            .timeout(180.0)
            .run()
            .ok()
    }

    /// `rbd ARGS` as the cluster's admin.
    pub fn rbd(&self, args: &[&str]) -> Out {
        let conf = self.conf();
        let mut a = vec!["-c", conf.to_str().unwrap(), "--id", "admin"];
        a.extend_from_slice(args);
        Cmd::new("rbd", &a).timeout(120.0).run()
    }
}

/// Name, passed, duration.
type TestResult = (&'static str, bool, Duration);

/// Runs `tests` (name, fn) on `HYPER_TEST_THREADS` threads, prints each duration, then tears
/// every daemon down and checks for leaks. Returns the process exit code.
pub fn run_tests(tests: &[(&'static str, TestFn)]) -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let exact = args.iter().any(|a| a == "--exact");
    let mut filters = Vec::new();
    let mut it = args.iter();
    let mut threads: usize = std::env::var("HYPER_TEST_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--list" => {
                for (n, _) in tests {
                    println!("{n}: test");
                }
                return 0;
            }
            "--test-threads" => {
                threads = it.next().and_then(|s| s.parse().ok()).unwrap_or(threads);
            }
            s if s.starts_with("--test-threads=") => {
                threads = s["--test-threads=".len()..].parse().unwrap_or(threads);
            }
            s if s.starts_with('-') => {} // --nocapture, -q, ... : nothing to do
            s => filters.push(s.to_string()),
        }
    }
    let selected: Vec<(&'static str, TestFn)> = tests
        .iter()
        .copied()
        .filter(|(n, _)| {
            filters.is_empty()
                || filters.iter().any(|f| {
                    if exact {
                        n == f
                    } else {
                        n.contains(f.as_str())
                    }
                })
        })
        .collect();
    if selected.is_empty() {
        println!("e2e: no test matches {filters:?}");
        return 0;
    }
    reap_stale_roots();
    enter_private_network_namespace();
    let started = Instant::now();
    println!(
        "running {} end-to-end tests on {} threads",
        selected.len(),
        threads.max(1)
    );
    let queue = Arc::new(Mutex::new(selected.into_iter()));
    let results: Arc<Mutex<Vec<TestResult>>> = Arc::default();
    let workers: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let queue = queue.clone();
            let results = results.clone();
            std::thread::spawn(move || loop {
                let Some((name, f)) = queue.lock().unwrap().next() else {
                    break;
                };
                let t = Instant::now();
                println!("test {name} ... started");
                USED.with(|u| u.borrow_mut().clear());
                let ok = std::panic::catch_unwind(f).is_ok();
                let took = t.elapsed();
                if !ok {
                    let mut diag = String::new();
                    USED.with(|u| {
                        for d in u.borrow().iter() {
                            diag += &d.diagnostics();
                        }
                    });
                    println!("---- {name} failed; diagnostics:\n{diag}");
                }
                println!(
                    "test {name} ... {} ({:.1}s)",
                    if ok { "ok" } else { "FAILED" },
                    took.as_secs_f64()
                );
                results.lock().unwrap().push((name, ok, took));
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }

    // Teardown and the leak check, as the last "test".
    let t = Instant::now();
    let mut leaks = Vec::new();
    let hooks: Vec<TeardownHook> = teardown_hooks().lock().unwrap().drain(..).collect();
    let daemons: Vec<Arc<Daemon>> = registry().lock().unwrap().drain(..).collect();
    for d in &daemons {
        let l = d.teardown();
        if !l.is_empty() {
            println!("{}", d.diagnostics());
        }
        leaks.extend(l);
    }
    // After the daemons: what they used (a Ceph cluster) goes last.
    for hook in hooks {
        hook();
    }
    let keep = std::env::var("HYPER_TEST_KEEP").is_ok_and(|v| v == "1");
    if !keep {
        for d in &daemons {
            let _ = std::fs::remove_dir_all(&d.data);
        }
        let _ = std::fs::remove_file(format!("/tmp/hy-{}-busybox.tar", std::process::id()));
    }
    for l in &leaks {
        println!("LEAK: {l}");
    }
    let mut results = results.lock().unwrap().clone();
    results.push(("zz_no_leftovers", leaks.is_empty(), t.elapsed()));
    println!(
        "test zz_no_leftovers ... {}",
        if leaks.is_empty() { "ok" } else { "FAILED" }
    );

    println!(
        "\nsummary ({:.1}s in all):",
        started.elapsed().as_secs_f64()
    );
    let mut failed = 0;
    for (n, ok, took) in &results {
        println!(
            "  {:<28} {:>6.1}s  {}",
            n,
            took.as_secs_f64(),
            if *ok { "ok" } else { "FAILED" }
        );
        failed += usize::from(!ok);
    }
    println!(
        "test result: {}. {} passed; {} failed",
        if failed == 0 { "ok" } else { "FAILED" },
        results.len() - failed,
        failed
    );
    i32::from(failed > 0)
}
