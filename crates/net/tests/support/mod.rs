//! A sandbox of network namespaces for one test: a "node" netns standing in for the one hyperd
//! runs in, a "client" netns linked to it (an outside host), tenant netns, and one "guest" netns
//! per endpoint linked to its bridge by a veth named like the tap (the VM NIC at L2). Nothing
//! leaves the sandbox; dropping it removes every namespace.

#![allow(dead_code)] // each test file uses part of it

pub mod fleet;

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use net::{
    create_netns, in_netns, remove_netns, run_in_netns, Bridge, Endpoint, NodeNet, PortMapping,
    Proto, TenantNetns,
};

pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// The FIP pool the client routes through the node.
pub const FIP_POOL: &str = "198.51.100.0/24";

pub struct Sandbox {
    pub dir: PathBuf,
    pub node: PathBuf,
    pub client: PathBuf,
    pub net: NodeNet,
    extra: Vec<PathBuf>,
}

impl Sandbox {
    pub fn new(tag: &str) -> Sandbox {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::SeqCst);
        let dir = PathBuf::from(format!(
            "/tmp/hyper-nettest-{}-{tag}-{n}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let sandbox = Sandbox {
            node: dir.join("node"),
            client: dir.join("client"),
            dir,
            net: NodeNet {
                transit_cidr: "100.127.0.0/16".parse().unwrap(),
                fips_elsewhere: vec![],
            },
            extra: Vec::new(),
        };
        create_netns(&sandbox.node).unwrap();
        create_netns(&sandbox.client).unwrap();
        ip(&sandbox.node, &["link", "set", "lo", "up"]);
        ip(&sandbox.client, &["link", "set", "lo", "up"]);
        let client = sandbox.client.to_string_lossy().into_owned();
        ip(
            &sandbox.node,
            &[
                "link", "add", "out0", "type", "veth", "peer", "name", "eth0", "netns", &client,
            ],
        );
        ip(
            &sandbox.node,
            &["addr", "add", &format!("{NODE_IP}/24"), "dev", "out0"],
        );
        ip(&sandbox.node, &["link", "set", "out0", "up"]);
        ip(
            &sandbox.client,
            &["addr", "add", &format!("{CLIENT_IP}/24"), "dev", "eth0"],
        );
        ip(&sandbox.client, &["link", "set", "eth0", "up"]);
        ip(
            &sandbox.client,
            &["route", "add", FIP_POOL, "via", &NODE_IP.to_string()],
        );
        sandbox
    }

    /// Runs `f` as hyperd would: on a thread of the node netns.
    pub fn on_node<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        in_netns(&self.node, f).unwrap()
    }

    /// A tenant netns model with one bridge `br0` per given subnet, at a path inside the sandbox.
    pub fn tenant(&self, name: &str, index: u32, bridges: Vec<Bridge>) -> TenantNetns {
        TenantNetns {
            name: name.into(),
            netns_path: self.dir.join(format!("tenant-{name}")),
            transit: net::transit_for(&self.net, index).unwrap(),
            bridges,
        }
    }

    /// Plugs a stand-in guest for `endpoint` into `bridge` of the (already ensured) tenant netns.
    pub fn attach_guest(
        &mut self,
        tenant: &TenantNetns,
        bridge: &Bridge,
        endpoint: &Endpoint,
    ) -> PathBuf {
        let guest = attach_guest_in(&self.dir, tenant, bridge, endpoint);
        self.extra.push(guest.clone());
        guest
    }
}

/// A guest netns for `endpoint` at a path inside `dir`, joined to `bridge` of the tenant netns
/// by a veth named like the endpoint's tap.
pub fn attach_guest_in(
    dir: &Path,
    tenant: &TenantNetns,
    bridge: &Bridge,
    endpoint: &Endpoint,
) -> PathBuf {
    let guest = dir.join(format!("guest-{}-{}", tenant.name, endpoint.tap));
    create_netns(&guest).unwrap();
    let tns = &tenant.netns_path;
    let guest_arg = guest.to_string_lossy().into_owned();
    let mtu = bridge.mtu.to_string();
    ip(
        tns,
        &[
            "link",
            "add",
            &endpoint.tap,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &guest_arg,
        ],
    );
    ip(
        tns,
        &[
            "link",
            "set",
            &endpoint.tap,
            "master",
            &bridge.ifname,
            "mtu",
            &mtu,
            "up",
        ],
    );
    let mac = endpoint
        .mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    ip(&guest, &["link", "set", "lo", "up"]);
    ip(
        &guest,
        &["link", "set", "eth0", "address", &mac, "mtu", &mtu, "up"],
    );
    ip(
        &guest,
        &[
            "addr",
            "add",
            &format!("{}/{}", endpoint.ip, bridge.subnet.prefix_len()),
            "dev",
            "eth0",
        ],
    );
    ip(
        &guest,
        &[
            "route",
            "add",
            "default",
            "via",
            &bridge.gateway.to_string(),
        ],
    );
    guest
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for path in self.extra.iter().chain([&self.client, &self.node]) {
            remove_netns(path).unwrap();
        }
        // Tenant netns are the tests' to destroy; a failed test may leave theirs: sweep them too.
        for entry in std::fs::read_dir(&self.dir).unwrap() {
            remove_netns(&entry.unwrap().path()).unwrap();
        }
        std::fs::remove_dir(&self.dir).unwrap();
    }
}

pub fn ip(netns: &Path, args: &[&str]) -> String {
    run_in_netns(netns, Command::new("ip").args(args)).unwrap_or_else(|e| panic!("{e}"))
}

pub fn bridge(ifname: &str, subnet: &str, endpoints: Vec<Endpoint>) -> Bridge {
    let subnet: ipnet::Ipv4Net = subnet.parse().unwrap();
    let gateway = Ipv4Addr::from(u32::from(subnet.network()) + 1);
    Bridge {
        ifname: ifname.into(),
        subnet,
        gateway,
        mtu: net::DEFAULT_MTU,
        node_ip: None,
        peer_node_ips: vec![],
        endpoints,
        services: Vec::new(),
    }
}

pub fn endpoint(n: u8, ip: &str) -> Endpoint {
    Endpoint {
        tap: format!("tap{n:012x}"),
        mac: [0x02, 0x48, 0x59, 0, 0, n],
        ip: ip.parse().unwrap(),
        ports: Vec::new(),
        fip: None,
        security_groups: None,
    }
}

pub fn tcp(host_port: u16, container_port: u16) -> PortMapping {
    PortMapping {
        proto: Proto::Tcp,
        host_ip: None,
        host_port,
        container_port,
    }
}

pub fn pings(netns: &Path, target: Ipv4Addr) -> bool {
    let target = target.to_string();
    run_in_netns(
        netns,
        Command::new("busybox").args(["ping", "-c", "1", "-W", "1", &target]),
    )
    .is_ok()
}

/// Pings with a source address of our choosing (which the guest need not own honestly).
pub fn pings_from(netns: &Path, source: Ipv4Addr, target: Ipv4Addr) -> bool {
    let (source, target) = (source.to_string(), target.to_string());
    run_in_netns(
        netns,
        Command::new("busybox").args(["ping", "-c", "1", "-W", "1", "-I", &source, &target]),
    )
    .is_ok()
}

/// A TCP server in a netns: greets each connection with `hello <peer address>` and echoes lines.
pub struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start(netns: &Path, port: u16) -> Server {
        Server::start_on(netns, Ipv4Addr::UNSPECIFIED, port)
    }

    /// Listening on one address only (e.g. a service VIP, as the balancer does).
    pub fn start_on(netns: &Path, ip: Ipv4Addr, port: u16) -> Server {
        let listener = in_netns(netns, || TcpListener::bind((ip, port)))
            .unwrap()
            .unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut handlers = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        let flag = flag.clone();
                        handlers.push(std::thread::spawn(move || serve(stream, peer, &flag)));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            handlers.into_iter().for_each(|h| h.join().unwrap());
        });
        Server {
            stop,
            thread: Some(thread),
        }
    }
}

fn serve(stream: TcpStream, peer: SocketAddr, stop: &AtomicBool) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    if writeln!(writer, "hello {}", peer.ip()).is_err() {
        return;
    }
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while !stop.load(Ordering::SeqCst) {
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {
                if writer.write_all(line.as_bytes()).is_err() {
                    return;
                }
                line.clear();
            }
            Err(_) => {} // timeout: look at the stop flag again
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
    }
}

/// A connection opened from inside a netns, with the server's greeting read.
pub struct Conn {
    pub greeting: String,
    reader: BufReader<TcpStream>,
}

/// Connects from `netns`; `None` if nothing answers within a second.
pub fn connect(netns: &Path, to: Ipv4Addr, port: u16) -> Option<Conn> {
    let target = SocketAddr::V4(SocketAddrV4::new(to, port));
    let stream = in_netns(netns, || {
        TcpStream::connect_timeout(&target, Duration::from_secs(1))
    })
    .unwrap()
    .ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut greeting = String::new();
    reader.read_line(&mut greeting).ok()?;
    Some(Conn {
        greeting: greeting.trim().to_string(),
        reader,
    })
}

impl Conn {
    /// Sends a line and expects it back; false if the connection no longer carries traffic.
    pub fn echoes(&mut self, text: &str) -> bool {
        if writeln!(self.reader.get_mut(), "{text}").is_err() {
            return false;
        }
        let mut line = String::new();
        matches!(self.reader.read_line(&mut line), Ok(n) if n > 0) && line.trim() == text
    }
}
