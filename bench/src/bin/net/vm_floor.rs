//! The VM floor of the `net` bench (issue 19): two plain QEMU VMs built like hyper's (the same
//! kernel and virtio modules, the `vm` crate's command line, the default size's vCPUs and memory,
//! the same accelerator, QEMU as the `hyper-vm` user) whose taps sit on a bare Linux bridge in a
//! namespace of the bench's own: no nftables, no bridge netfilter, no NAT, no balancer. What two
//! VMs get on this host, so that hyper's paths divided by it show hyper's own cost.
//!
//! The floor's client is also booted alone, "on the internet" ([`ClientVm::internet`]), to fetch
//! from a container through its floating IP: that path's client is then a VM as the floor's is.
//!
//! The guests run the host's busybox (Debian's busybox-static, the binary the test image
//! carries): `/init` is a shell script ([`INIT`]) that loads the agent's virtio modules in the
//! agent's order, sets up `eth0` as the agent does (the tenant network's MTU, no IPv6), and then
//! either serves a file of zeros with `httpd` (the server) or waits for the bench's requests
//! (the client). The bench asks the client through a TCP connection from the bridge's namespace
//! (`nc`, outside the timed part); the client downloads the file with `wget` under `time -p`
//! ([`FETCH`]) and prints the result on its console, which the bench reads from the console log.

use std::cell::Cell;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bench::e2e_cleanup;
use e2e::{Cmd, Netns};
use net::tap::{self, TapSpec};
use vm::{Hypervisor, NicConfig, Qemu, VmConfig};

const BRIDGE: &str = "br0";
/// The bridge's own address: the bench's requests to the client come from it.
const BRIDGE_ADDR: &str = "10.98.0.1/24";
const SERVER_IP: &str = "10.98.0.2";
const CLIENT_IP: &str = "10.98.0.3";
/// The internet client's bridge (in the internet namespace, its gateway) and address.
const INTERNET_BRIDGE_IP: &str = "10.97.0.1";
const INTERNET_SUBNET: &str = "10.97.0.0/24";
const INTERNET_CLIENT_IP: &str = "10.97.0.2";
/// Port of the client's request listener (`nc -ll -p 7000` in [`INIT`]).
const REQUEST_PORT: &str = "7000";
/// The console line with which the client says it has seen the server's file ready ([`INIT`]).
const CLIENT_READY: &str = "floor-client: ready";

/// Sysctls of the bridge's namespace: a bare bridge passes frames without netfilter (a loaded
/// br_netfilter sends bridged IPv4 through the namespace's IP hooks by default), and as in
/// hyper's tenant namespaces the taps get no IPv6. Keys absent in this kernel are skipped.
const BARE_BRIDGE_SYSCTLS: &[(&str, &str)] = &[
    ("net/bridge/bridge-nf-call-iptables", "0"),
    ("net/bridge/bridge-nf-call-ip6tables", "0"),
    ("net/bridge/bridge-nf-call-arptables", "0"),
    ("net/ipv6/conf/all/disable_ipv6", "1"),
    ("net/ipv6/conf/default/disable_ipv6", "1"),
];

/// `/init` of both VMs. The kernel hands init the `floor_*` parameters of its command line as
/// environment variables: `floor_role` (server or client), `floor_ip`, `floor_mtu`, `floor_mb`
/// (server), `floor_server` (client) and `floor_gateway` (a client off the server's bridge).
/// `@MODULES@` is replaced by the modules in load order.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
export PATH=/bin
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
exec >/dev/console 2>&1
for m in @MODULES@; do insmod /lib/modules/$m.ko || echo "floor: insmod $m failed"; done
while [ ! -e /sys/class/net/eth0 ]; do sleep 0.1; done
echo 1 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6
ip link set lo up
ip link set eth0 mtu "$floor_mtu"
ip addr add "$floor_ip" dev eth0
ip link set eth0 up
[ -n "$floor_gateway" ] && ip route add default via "$floor_gateway"
if [ "$floor_role" = server ]; then
    # In RAM, as the container's copy sits in its page cache after its dd.
    mount -t tmpfs -o size=$((floor_mb + 1))m srv /srv
    dd if=/dev/zero of=/srv/big bs=1M count="$floor_mb" && echo ready > /srv/ready
    exec httpd -f -p 5001 -h /srv
fi
until [ "$(timeout -s KILL 10 wget -qO- "http://$floor_server:5001/ready" 2>/dev/null)" = ready ]; do
    sleep 0.5
done
echo "floor-client: ready"
exec nc -ll -p 7000 -e /fetch
"#;

/// The client's answer to one request of the bench (`nc -e` runs it with the connection on
/// stdin), `ID count` or `ID time`: one download of the server's file, the byte count or
/// `time -p`'s lines then the exit status, on the console as `floor-fetch ID: ...` lines.
/// `@TIMEOUT@` is replaced by the deadline of one download, seconds.
const FETCH: &str = r#"#!/bin/busybox sh
read id what
url="http://$floor_server:5001/big"
{
    if [ "$what" = count ]; then
        echo "bytes $(timeout -s KILL @TIMEOUT@ wget -qO- "$url" | wc -c)"
    else
        time -p timeout -s KILL @TIMEOUT@ wget -q -O /dev/null "$url"
    fi
    echo "status $?"
} 2>&1 | sed "s/^/floor-fetch $id: /" > /dev/console
"#;

/// A client VM that downloads its server's file when the bench asks; [`ClientVm::wait_ready`]
/// before asking it anything.
pub struct ClientVm {
    /// The namespace of the client's bridge, from which the bench's requests come.
    netns: String,
    ip: &'static str,
    /// The client, then the server when it is a VM of ours (the floor's).
    guests: Vec<Guest>,
    fetch_timeout: u32,
    requests: Cell<u32>,
}
/// One floor VM: its QEMU's pid (a child of ours) and directory.
struct Guest {
    pid: u32,
    dir: PathBuf,
}

impl Guest {
    fn console(&self) -> String {
        std::fs::read_to_string(self.dir.join(vm::CONSOLE_LOG)).unwrap_or_default()
    }

    /// The console's last lines and QEMU's stderr, for a failure's message.
    fn diagnostics(&self) -> String {
        let console = self.console();
        let lines: Vec<&str> = console.lines().collect();
        let err = std::fs::read_to_string(self.dir.join("qemu.err")).unwrap_or_default();
        format!(
            "{}: console (last lines):\n{}\nQEMU stderr:\n{err}",
            self.dir.display(),
            lines[lines.len().saturating_sub(20)..].join("\n")
        )
    }
}

impl ClientVm {
    /// The VM floor: the server VM (serving `mb` MiB) and its client VM on a bare bridge. Needs
    /// the `hyper-vm` user, which hyperd creates when it starts.
    pub fn floor(mb: u32, fetch_timeout: u32) -> ClientVm {
        let size = default_size();
        let room = size.memory_mib / 2;
        assert!(
            u64::from(mb) <= room,
            "--mb {mb}: the floor's server keeps the file in RAM, at most half its {} MiB",
            size.memory_mib
        );
        let dir = e2e_cleanup::path(e2e::short_tmp("bnv"));
        std::fs::create_dir_all(&dir).expect("the VM floor's directory");
        let initrd = build_initramfs(&dir, fetch_timeout);
        let netns = bare_bridge_namespace();
        let mtu = net::DEFAULT_MTU;
        let server = boot(
            &dir.join("server"),
            &initrd,
            &netns,
            "tap-server",
            [0x02, 0, 10, 98, 0, 2],
            &format!("floor_role=server floor_ip={SERVER_IP}/24 floor_mtu={mtu} floor_mb={mb}"),
        );
        let client = boot(
            &dir.join("client"),
            &initrd,
            &netns,
            "tap-client",
            [0x02, 0, 10, 98, 0, 3],
            &format!(
                "floor_role=client floor_ip={CLIENT_IP}/24 floor_mtu={mtu} floor_server={SERVER_IP}"
            ),
        );
        ClientVm {
            netns,
            ip: CLIENT_IP,
            guests: vec![client, server],
            fetch_timeout,
            requests: Cell::new(0),
        }
    }

    /// The floor's client VM, alone on a bare bridge in the namespace `internet`
    /// ([`Netns::internet`], linked to `node`), fetching from `server` (a floating IP) through
    /// the node: the internet namespace routes for it and the node routes its subnet back.
    pub fn internet(internet: &Netns, node: &Netns, server: &str, fetch_timeout: u32) -> ClientVm {
        let dir = e2e_cleanup::path(e2e::short_tmp("bni"));
        std::fs::create_dir_all(&dir).expect("the internet client's directory");
        let initrd = build_initramfs(&dir, fetch_timeout);
        set_bare_bridge_sysctls(internet);
        internet
            .run(|| std::fs::write("/proc/sys/net/ipv4/ip_forward", "1"))
            .expect("forwarding in the internet namespace");
        add_bare_bridge(internet, &format!("{INTERNET_BRIDGE_IP}/24"));
        node.ip(&["route", "add", INTERNET_SUBNET, "via", "203.0.113.2"]);
        let client = boot(
            &dir.join("client"),
            &initrd,
            &internet.name,
            "tap-client",
            [0x02, 0, 10, 97, 0, 2],
            &format!(
                "floor_role=client floor_ip={INTERNET_CLIENT_IP}/24 floor_mtu={} floor_server={server} floor_gateway={INTERNET_BRIDGE_IP}",
                net::DEFAULT_MTU
            ),
        );
        ClientVm {
            netns: internet.name.clone(),
            ip: INTERNET_CLIENT_IP,
            guests: vec![client],
            fetch_timeout,
            requests: Cell::new(0),
        }
    }

    /// The namespace of the client's bridge, which holds an address on it.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// The floor's server VM's big file, as its client VM fetches it.
    pub fn floor_server_url() -> String {
        format!("http://{SERVER_IP}:5001/big")
    }

    /// Waits until the client has seen the server's file ready.
    pub fn wait_ready(&self) {
        e2e::wait_for(
            "a client VM to see its server's file",
            e2e::secs(300.0),
            || {
                self.check_running();
                if self.guests[0].console().contains(CLIENT_READY) {
                    Ok(())
                } else {
                    Err(self.diagnostics())
                }
            },
        );
    }

    /// Bytes of one download by the client VM.
    pub fn count(&self) -> u64 {
        let answer = self.ask("count");
        answer
            .iter()
            .find_map(|l| l.strip_prefix("bytes "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no byte count in the client VM's answer {answer:?}"))
    }

    /// Seconds of one download, timed inside the client VM with `time -p`.
    pub fn seconds(&self) -> f64 {
        let answer = self.ask("time");
        assert!(
            answer.iter().any(|l| l == "status 0"),
            "the client VM's download failed: {answer:?}\n{}",
            self.diagnostics()
        );
        bench::real_seconds(&answer.join("\n"))
            .unwrap_or_else(|| panic!("no timing in the client VM's answer {answer:?}"))
    }

    /// Sends the client request `what` and returns its answer's lines from the console (without
    /// the `floor-fetch ID: ` prefix). The connection ends when the client has answered.
    fn ask(&self, what: &str) -> Vec<String> {
        self.check_running();
        let id = self.requests.get() + 1;
        self.requests.set(id);
        let deadline = (self.fetch_timeout + 60).to_string();
        Cmd::new(
            "ip",
            &[
                "netns",
                "exec",
                &self.netns,
                "timeout",
                "-s",
                "KILL",
                &deadline,
                "busybox",
                "nc",
                self.ip,
                REQUEST_PORT,
            ],
        )
        .stdin(format!("{id} {what}\n").as_bytes())
        .timeout(f64::from(self.fetch_timeout) + 90.0)
        .run()
        .ok();
        e2e::wait_for(
            &format!("the client VM's answer to request {id} on its console"),
            e2e::secs(30.0),
            || answer(&self.guests[0].console(), id).ok_or_else(|| self.diagnostics()),
        )
    }

    fn check_running(&self) {
        for g in &self.guests {
            assert!(
                !has_exited(g.pid),
                "a client or floor VM's QEMU exited: {}",
                g.diagnostics()
            );
        }
    }

    fn diagnostics(&self) -> String {
        let each: Vec<String> = self.guests.iter().map(Guest::diagnostics).collect();
        each.join("\n")
    }
}

fn default_size() -> node::sizes::Size {
    node::sizes::lookup(node::sizes::DEFAULT_SIZE).expect("the default size")
}

/// The `floor-fetch ID: ` lines of `console` (without the prefix), once the last of them, the
/// status, is there.
fn answer(console: &str, id: u32) -> Option<Vec<String>> {
    let prefix = format!("floor-fetch {id}: ");
    let lines: Vec<String> = console
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix(&prefix))
        .map(String::from)
        .collect();
    lines
        .iter()
        .any(|l| l.starts_with("status "))
        .then_some(lines)
}

/// Whether our child `pid` (not reaped: its `Child` is in the clean-up registry) has exited.
fn has_exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        // "pid (comm) state ...": comm may hold spaces, so look after the last ')'.
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

/// A gzip'd newc cpio (the host's `cpio` and `gzip`) of the host's busybox, [`INIT`], [`FETCH`]
/// and the agent's virtio modules from the kernel directory.
fn build_initramfs(dir: &Path, fetch_timeout: u32) -> PathBuf {
    bench::ensure_package(&["cpio", "--version"], "cpio").expect("cpio");
    let root = dir.join("initramfs");
    for d in ["bin", "dev", "proc", "sys", "srv", "lib/modules"] {
        std::fs::create_dir_all(root.join(d)).expect("the initramfs's directories");
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("copy /bin/busybox (Debian's busybox-static)");
    let modules = e2e::kernel_dir().join("modules");
    for m in vm::VIRTIO_MODULES {
        let file = format!("{m}.ko");
        std::fs::copy(modules.join(&file), root.join("lib/modules").join(&file))
            .unwrap_or_else(|e| panic!("copy {file} from {}: {e}", modules.display()));
    }
    write_script(
        &root.join("init"),
        &INIT.replace("@MODULES@", &vm::VIRTIO_MODULES.join(" ")),
    );
    write_script(
        &root.join("fetch"),
        &FETCH.replace("@TIMEOUT@", &fetch_timeout.to_string()),
    );
    let out = dir.join("initramfs.img");
    Cmd::new(
        "sh",
        &[
            "-c",
            r#"cd "$1" && find . | cpio -o -H newc -R 0:0 --quiet | gzip > "$2""#,
            "sh",
            &root.to_string_lossy(),
            &out.to_string_lossy(),
        ],
    )
    .run()
    .ok();
    out
}

fn write_script(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write a script of the initramfs");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .expect("make a script of the initramfs executable");
}

/// A namespace of the bench's own with a bare bridge holding [`BRIDGE_ADDR`]; returns its name.
fn bare_bridge_namespace() -> String {
    let ns = Netns::new("bfv");
    set_bare_bridge_sysctls(&ns);
    add_bare_bridge(&ns, BRIDGE_ADDR);
    e2e_cleanup::netns(ns)
}

fn set_bare_bridge_sysctls(ns: &Netns) {
    ns.run(|| {
        for (key, value) in BARE_BRIDGE_SYSCTLS {
            let path = Path::new("/proc/sys").join(key);
            if path.exists() {
                std::fs::write(&path, value).unwrap_or_else(|e| panic!("set {key}: {e}"));
            }
        }
    });
}

/// A bare bridge (no STP, no forward delay, no netfilter) [`BRIDGE`] in `ns`, holding
/// `address`.
fn add_bare_bridge(ns: &Netns, address: &str) {
    ns.ip(&[
        "link",
        "add",
        BRIDGE,
        "type",
        "bridge",
        "stp_state",
        "0",
        "forward_delay",
        "0",
        "nf_call_iptables",
        "0",
    ]);
    ns.ip(&["addr", "add", address, "dev", BRIDGE]);
    ns.ip(&["link", "set", BRIDGE, "up"]);
}

/// Boots one floor VM of the default size in `dir` with its tap `tap_name` on the bridge of
/// `netns`, the guest's MAC `mac` and `params` on the kernel command line.
fn boot(
    dir: &Path,
    initrd: &Path,
    netns: &str,
    tap_name: &str,
    mac: [u8; 6],
    params: &str,
) -> Guest {
    std::fs::create_dir_all(dir).expect("a floor VM's directory");
    let size = default_size();
    // The same device set as a container's: an (empty) qcow2 root disk of the root slot's size.
    let root_disk = dir.join("root.qcow2");
    Cmd::new(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            &root_disk.to_string_lossy(),
            &vm::ROOT_DISK_BYTES.to_string(),
        ],
    )
    .run()
    .ok();
    let ns_path = PathBuf::from(format!("/run/netns/{netns}"));
    let tap = tap::create(
        tap::Netns::At(&ns_path),
        &TapSpec {
            name: tap_name,
            mtu: net::DEFAULT_MTU,
            bridge: Some(BRIDGE),
            host_mac: Some(tap::host_side_mac(mac)),
        },
    )
    .unwrap_or_else(|e| panic!("tap {tap_name} in {netns}: {e}"));
    let cfg = VmConfig {
        // As hyperd's defaults: `--qemu qemu-system-x86_64`, `--accel auto`.
        binary: "qemu-system-x86_64".into(),
        accel: vm::Accel::detect(),
        kernel: e2e::kernel_dir().join("vmlinuz"),
        initrd: initrd.to_path_buf(),
        kernel_cmdline_extra: params.to_string(),
        vcpus: size.vcpus,
        memory_mib: size.vm_memory_mib(),
        root_disk,
        dir: dir.to_path_buf(),
        run_as: Some("hyper-vm".into()),
        tsc_khz: None,
        nic: Some(NicConfig {
            tap_fd: tap.raw_fd(),
            mac: mac.map(|b| format!("{b:02x}")).join(":"),
        }),
    };
    let mut cmd: Command = Qemu
        .command(&cfg)
        .expect("the floor VM's QEMU command line");
    let tap_fd = tap.raw_fd();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("qemu.err")).expect("qemu.err"))
        .process_group(0);
    // SAFETY: fcntl(2) is async-signal-safe; it clears close-on-exec on the tap's descriptor
    // in the child only, so that QEMU inherits it.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(tap_fd, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().expect("start a floor VM's QEMU");
    // QEMU holds the tap now; ours closes when `tap` drops.
    Guest {
        pid: e2e_cleanup::child(child),
        dir: dir.to_path_buf(),
    }
}
