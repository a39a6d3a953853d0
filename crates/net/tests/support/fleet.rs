//! A fleet in namespaces for overlay tests: a "datacenter" netns holding one bridge, and per
//! node a netns (standing in for the one hyperd runs in) linked to that bridge with an
//! underlay address from TEST-NET-3. Tenant and guest netns are made inside the fleet's
//! directory; dropping the fleet removes every namespace in it, whatever the test left.
//! The datacenter bridge counts the VXLAN packets it carries to each node.

use std::net::{Ipv4Addr, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use net::{create_netns, in_netns, remove_netns, run_in_netns, Bridge, Endpoint, TenantNetns};

use super::{attach_guest_in, ip};

pub struct Fleet {
    pub dir: PathBuf,
    pub dc: PathBuf,
    pub nodes: Vec<Node>,
}

pub struct Node {
    pub netns: PathBuf,
    pub underlay: Ipv4Addr,
}

impl Fleet {
    pub fn new(tag: &str, nodes: usize) -> Fleet {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::SeqCst);
        let dir = PathBuf::from(format!("/tmp/hyper-ovl-{}-{tag}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut fleet = Fleet {
            dc: dir.join("dc"),
            dir,
            nodes: Vec::new(),
        };
        create_netns(&fleet.dc).unwrap();
        ip(&fleet.dc, &["link", "add", "dc0", "type", "bridge"]);
        ip(&fleet.dc, &["link", "set", "dc0", "up"]);
        let mut counters = String::new();
        for i in 0..nodes {
            let node = Node {
                netns: fleet.dir.join(format!("node{i}")),
                underlay: Ipv4Addr::new(203, 0, 113, 10 + i as u8),
            };
            create_netns(&node.netns).unwrap();
            ip(&node.netns, &["link", "set", "lo", "up"]);
            let (port, node_arg) = (format!("n{i}"), node.netns.to_string_lossy().into_owned());
            ip(
                &fleet.dc,
                &[
                    "link", "add", &port, "type", "veth", "peer", "name", "ul0", "netns", &node_arg,
                ],
            );
            ip(&fleet.dc, &["link", "set", &port, "master", "dc0", "up"]);
            ip(
                &node.netns,
                &[
                    "addr",
                    "add",
                    &format!("{}/24", node.underlay),
                    "dev",
                    "ul0",
                ],
            );
            ip(&node.netns, &["link", "set", "ul0", "up"]);
            counters.push_str(&format!(
                "\t\tip daddr {} udp dport 4789 counter\n",
                node.underlay
            ));
            fleet.nodes.push(node);
        }
        let watch = format!(
            "table bridge watch {{\n\tchain forward {{\n\t\ttype filter hook forward priority filter; policy accept;\n{counters}\t}}\n}}\n"
        );
        let file = fleet.dir.join("watch.nft");
        std::fs::write(&file, watch).unwrap();
        run_in_netns(&fleet.dc, Command::new("nft").arg("-f").arg(&file)).unwrap();
        fleet
    }

    /// Runs `f` as hyperd would on node `i`: on a thread of its netns.
    pub fn on_node<R: Send>(&self, i: usize, f: impl FnOnce() -> R + Send) -> R {
        in_netns(&self.nodes[i].netns, f).unwrap()
    }

    /// A tenant netns model for node `i` with transit link `index`, at a path inside the fleet.
    pub fn tenant(&self, i: usize, name: &str, index: u32, bridges: Vec<Bridge>) -> TenantNetns {
        let transit_cidr = "100.127.0.0/16".parse().unwrap();
        let net = net::NodeNet {
            transit_cidr,
            fips_elsewhere: vec![],
        };
        TenantNetns {
            name: format!("n{i}-{name}"),
            netns_path: self.dir.join(format!("n{i}-tenant-{name}")),
            transit: net::transit_for(&net, index).unwrap(),
            bridges,
        }
    }

    /// A stand-in guest for `endpoint` on `bridge` of the (already ensured) tenant netns.
    pub fn attach_guest(&self, t: &TenantNetns, bridge: &Bridge, endpoint: &Endpoint) -> PathBuf {
        attach_guest_in(&self.dir, t, bridge, endpoint)
    }

    /// VXLAN packets the datacenter has carried to node `i` so far.
    pub fn vxlan_packets_to(&self, i: usize) -> u64 {
        let listing = run_in_netns(
            &self.dc,
            Command::new("nft").args(["list", "table", "bridge", "watch"]),
        )
        .unwrap();
        let needle = format!("ip daddr {} ", self.nodes[i].underlay);
        let line = listing
            .lines()
            .find(|l| l.contains(&needle))
            .unwrap_or_else(|| panic!("no counter for node {i} in\n{listing}"));
        let count = line.split("packets ").nth(1).expect("a counter");
        count.split(' ').next().unwrap().parse().unwrap()
    }

    /// Sends one raw VXLAN packet from node `from`'s netns to node `to`, as a forger on the
    /// underlay could.
    pub fn send_vxlan(&self, from: usize, to: usize, packet: &[u8]) {
        let socket = in_netns(&self.nodes[from].netns, || UdpSocket::bind("0.0.0.0:0"))
            .unwrap()
            .unwrap();
        socket
            .send_to(packet, (self.nodes[to].underlay, 4789))
            .unwrap();
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for entry in std::fs::read_dir(&self.dir).unwrap() {
            remove_netns(&entry.unwrap().path()).unwrap();
        }
        std::fs::remove_dir(&self.dir).unwrap();
    }
}

/// A VXLAN packet (header and inner frame) carrying one UDP datagram, every field ours to
/// choose: the forger's tool.
pub struct Forged {
    pub vni: u32,
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub dst_port: u16,
}

impl Forged {
    pub fn packet(&self, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x08, 0, 0, 0];
        p.extend_from_slice(&self.vni.to_be_bytes()[1..]);
        p.push(0);
        p.extend_from_slice(&self.dst_mac);
        p.extend_from_slice(&self.src_mac);
        p.extend_from_slice(&[0x08, 0x00]);
        let total = (20 + 8 + payload.len()) as u16;
        let mut ipv4 = vec![0x45, 0];
        ipv4.extend_from_slice(&total.to_be_bytes());
        ipv4.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
        ipv4.extend_from_slice(&self.src_ip.octets());
        ipv4.extend_from_slice(&self.dst_ip.octets());
        let sum = checksum(&ipv4);
        ipv4[10..12].copy_from_slice(&sum.to_be_bytes());
        p.extend_from_slice(&ipv4);
        p.extend_from_slice(&4000u16.to_be_bytes());
        p.extend_from_slice(&self.dst_port.to_be_bytes());
        p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]); // no UDP checksum, as IPv4 allows
        p.extend_from_slice(payload);
        p
    }
}

fn checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
