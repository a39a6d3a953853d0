//! The cross-node overlay with real traffic: nodes are namespaces joined by a "datacenter"
//! bridge (see support::fleet), each with tenant namespaces, bridges and stand-in guests, and
//! real kernel VXLAN between them. Each test proves one promise of docs/overlay.md.

mod support;

use std::net::{Ipv4Addr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use net::drift;
use net::{
    apply_overlays, apply_tenant_rules, destroy_netns, ensure_netns, in_netns, installed_overlays,
    run_in_netns, Direction, Endpoint, Overlay, OverlayState, Remote, RemoteEndpoint, Rule,
    RuleProto, TenantNetns,
};
use support::fleet::{Fleet, Forged, Node};
use support::*;

const A: usize = 0;
const B: usize = 1;
const C: usize = 2;

fn remote(e: &Endpoint, node: &Node) -> RemoteEndpoint {
    RemoteEndpoint {
        mac: e.mac,
        ip: e.ip,
        node_ip: node.underlay,
    }
}

fn overlay(vni: u32, node: &Node, remotes: Vec<RemoteEndpoint>) -> Overlay {
    Overlay {
        bridge: "br0".into(),
        vni,
        local_ip: node.underlay,
        remotes,
    }
}

/// What the node layer does on node `i`: namespace, tenant rules, overlays.
fn up(fleet: &Fleet, i: usize, t: &TenantNetns, overlays: &[Overlay]) -> net::Tables {
    fleet.on_node(i, || {
        ensure_netns(t).unwrap();
        apply_tenant_rules(t, &[]).unwrap();
        apply_overlays(t, overlays).unwrap()
    })
}

fn busybox(netns: &Path, args: &[&str]) -> Result<String, net::NetError> {
    run_in_netns(netns, Command::new("busybox").args(args))
}

/// A ping of `size` payload bytes; the guest's MTU is the bridge's, so 1422 fills a 1450-byte
/// IPv4 packet exactly (Linux sets DF on it: nothing on the way may fragment it).
/// Whether `target` answers a ping within ten tries of a second: the first packet after a
/// change may wait on the underlay's ARP (an entry that failed while a link was down, say).
fn pings_soon(netns: &Path, target: Ipv4Addr) -> bool {
    (0..10).any(|_| pings(netns, target))
}

fn pings_sized(netns: &Path, target: Ipv4Addr, size: usize) -> bool {
    let (target, size) = (target.to_string(), size.to_string());
    busybox(netns, &["ping", "-c", "1", "-W", "1", "-s", &size, &target]).is_ok()
}

/// The MAC that answers ARP for `target`, if any.
fn arping(netns: &Path, target: Ipv4Addr) -> Option<String> {
    let target = target.to_string();
    let out = busybox(
        netns,
        &["arping", "-c", "1", "-w", "1", "-I", "eth0", &target],
    )
    .ok()?;
    let start = out.find('[')? + 1;
    Some(out[start..start + 17].to_string())
}

fn mac(m: [u8; 6]) -> String {
    m.map(|b| format!("{b:02x}")).join(":")
}

fn tcp_rule(port: u16, remote: Remote) -> Rule {
    Rule {
        direction: Direction::Ingress,
        protocol: Some(RuleProto::Tcp),
        port_min: Some(port),
        port_max: Some(port),
        remote,
    }
}

fn any(direction: Direction, protocol: Option<RuleProto>) -> Rule {
    Rule {
        direction,
        protocol,
        port_min: None,
        port_max: None,
        remote: Remote::Any,
    }
}

#[test]
fn a_network_across_nodes_works_as_on_one_node_and_stays_its_tenants() {
    let fleet = Fleet::new("span", 3);
    let (a, b, c) = (&fleet.nodes[A], &fleet.nodes[B], &fleet.nodes[C]);
    // Tenant one: a1 and a3 on node A, b1 on node B; b1's groups let in tcp 80 from a1 only.
    let a1 = endpoint(1, "172.16.0.2");
    let a3 = endpoint(3, "172.16.0.6");
    let mut b1 = endpoint(2, "172.16.0.3");
    b1.security_groups = Some(vec![
        tcp_rule(80, Remote::Ips(vec![a1.ip])),
        any(Direction::Ingress, Some(RuleProto::Icmp)),
        any(Direction::Egress, None),
    ]);
    // Tenant two, same subnet: x on node A, y on node C at b1's very address.
    let x = endpoint(4, "172.16.0.4");
    let y = endpoint(5, "172.16.0.3");
    let subnet = "172.16.0.0/16";
    let one_a = fleet.tenant(
        A,
        "one",
        0,
        vec![bridge("br0", subnet, vec![a1.clone(), a3.clone()])],
    );
    let one_b = fleet.tenant(B, "one", 0, vec![bridge("br0", subnet, vec![b1.clone()])]);
    let two_a = fleet.tenant(A, "two", 1, vec![bridge("br0", subnet, vec![x.clone()])]);
    let two_c = fleet.tenant(C, "two", 0, vec![bridge("br0", subnet, vec![y.clone()])]);
    up(&fleet, A, &one_a, &[overlay(100, a, vec![remote(&b1, b)])]);
    up(
        &fleet,
        B,
        &one_b,
        &[overlay(100, b, vec![remote(&a1, a), remote(&a3, a)])],
    );
    up(&fleet, A, &two_a, &[overlay(200, a, vec![remote(&y, c)])]);
    up(&fleet, C, &two_c, &[overlay(200, c, vec![remote(&x, a)])]);
    let g_a1 = fleet.attach_guest(&one_a, &one_a.bridges[0], &a1);
    let g_a3 = fleet.attach_guest(&one_a, &one_a.bridges[0], &a3);
    let g_b1 = fleet.attach_guest(&one_b, &one_b.bridges[0], &b1);
    let g_x = fleet.attach_guest(&two_a, &two_a.bridges[0], &x);
    let g_y = fleet.attach_guest(&two_c, &two_c.bridges[0], &y);
    let _servers = [
        Server::start(&g_a1, 80),
        Server::start(&g_b1, 80),
        Server::start(&g_b1, 81),
        Server::start(&g_y, 82),
    ];

    // Across nodes as on one bridge, full-size frames included.
    assert!(pings_soon(&g_a1, b1.ip));
    assert!(
        pings_sized(&g_a1, b1.ip, 1422),
        "a 1450-byte packet crosses whole"
    );
    let mut conn = connect(&g_a1, b1.ip, 80).expect("a1 reaches b1");
    assert_eq!(conn.greeting, "hello 172.16.0.2");
    assert!(
        conn.echoes(&"x".repeat(20_000)),
        "full-size TCP segments cross"
    );
    assert_eq!(
        connect(&g_b1, a1.ip, 80).unwrap().greeting,
        "hello 172.16.0.3"
    );

    // b1's groups, enforced on its node for a peer on another: a3 and port 81 stay out.
    assert!(connect(&g_a3, b1.ip, 80).is_none());
    assert!(connect(&g_a1, b1.ip, 81).is_none());
    assert!(pings_soon(&g_a3, b1.ip));

    // ARP for a remote endpoint is answered on this node: with node B cut off the underlay,
    // a1 still learns b1's MAC, and x (tenant two) learns y's for the same address.
    ip(&b.netns, &["link", "set", "ul0", "down"]);
    ip(&g_a1, &["neigh", "flush", "dev", "eth0"]);
    assert_eq!(arping(&g_a1, b1.ip), Some(mac(b1.mac)));
    assert_eq!(arping(&g_x, y.ip), Some(mac(y.mac)));
    assert_eq!(arping(&g_a1, "172.16.0.99".parse().unwrap()), None);
    assert!(!pings(&g_a1, b1.ip), "b1's node is cut off");
    ip(&b.netns, &["link", "set", "ul0", "up"]);
    assert!(pings_soon(&g_a1, b1.ip));

    // Tenant two has its own network on its own VNI: the same address is y there, b1 is not.
    assert_eq!(
        connect(&g_x, y.ip, 82).unwrap().greeting,
        "hello 172.16.0.4"
    );
    assert!(connect(&g_x, b1.ip, 80).is_none());
    assert!(connect(&g_x, a1.ip, 80).is_none());
    assert!(!pings(&g_x, a1.ip));
    assert!(connect(&g_y, a1.ip, 80).is_none());
    assert!(connect(&g_a1, y.ip, 82).is_none());

    for (i, t) in [(A, &one_a), (B, &one_b), (A, &two_a), (C, &two_c)] {
        fleet.on_node(i, || destroy_netns(t).unwrap());
    }
}

#[test]
fn forged_frames_from_the_underlay_are_dropped() {
    let fleet = Fleet::new("forge", 2);
    let (a, b) = (&fleet.nodes[A], &fleet.nodes[B]);
    let a1 = endpoint(1, "172.16.0.2");
    let b1 = endpoint(2, "172.16.0.3");
    let one_a = fleet.tenant(
        A,
        "one",
        0,
        vec![bridge("br0", "172.16.0.0/16", vec![a1.clone()])],
    );
    let one_b = fleet.tenant(
        B,
        "one",
        0,
        vec![bridge("br0", "172.16.0.0/16", vec![b1.clone()])],
    );
    up(&fleet, A, &one_a, &[overlay(100, a, vec![remote(&b1, b)])]);
    up(&fleet, B, &one_b, &[overlay(100, b, vec![remote(&a1, a)])]);
    let g_a1 = fleet.attach_guest(&one_a, &one_a.bridges[0], &a1);
    fleet.attach_guest(&one_b, &one_b.bridges[0], &b1);
    let inbox = in_netns(&g_a1, || UdpSocket::bind("0.0.0.0:7777"))
        .unwrap()
        .unwrap();
    inbox
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    // a1 has spoken: its node's bridge knows its MAC behind its tap.
    assert!(pings_soon(&g_a1, b1.ip));

    // Packets a forger on the underlay sends to node A, here from node B's address.
    let gateway_mac = [0x0a, 0x48, 172, 16, 0, 1];
    let honest = Forged {
        vni: 100,
        dst_mac: a1.mac,
        src_mac: b1.mac,
        src_ip: b1.ip,
        dst_ip: a1.ip,
        dst_port: 7777,
    };
    let sends: Vec<(&str, Forged)> = vec![
        ("honest-first", Forged { ..honest }),
        (
            "other mac",
            Forged {
                src_mac: [2, 0x66, 0, 0, 0, 1],
                ..honest
            },
        ),
        (
            "other ip",
            Forged {
                src_ip: "172.16.0.99".parse().unwrap(),
                ..honest
            },
        ),
        (
            "a1 itself",
            Forged {
                src_mac: a1.mac,
                src_ip: a1.ip,
                ..honest
            },
        ),
        (
            "the gateway",
            Forged {
                src_mac: gateway_mac,
                src_ip: "172.16.0.1".parse().unwrap(),
                ..honest
            },
        ),
        (
            "routed by the gateway",
            Forged {
                dst_mac: gateway_mac,
                ..honest
            },
        ),
        ("honest-last", Forged { ..honest }),
    ];
    for (label, forged) in &sends {
        fleet.send_vxlan(B, A, &forged.packet(label.as_bytes()));
    }
    let mut received = Vec::new();
    let mut buf = [0u8; 2048];
    while received.last().map(String::as_str) != Some("honest-last") {
        let (n, _) = inbox
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("{e}; got only {received:?}"));
        received.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert_eq!(received, ["honest-first", "honest-last"]);

    // The frame in a1's name moved nothing: a1's MAC is still behind its tap, and it works.
    let fdb = run_in_netns(
        &one_a.netns_path,
        Command::new("bridge").args(["fdb", "show", "br", "br0"]),
    )
    .unwrap();
    let a1_entries: Vec<&str> = fdb
        .lines()
        .filter(|l| l.starts_with(&mac(a1.mac)))
        .collect();
    assert_eq!(a1_entries.len(), 1, "{fdb}");
    assert!(a1_entries[0].contains("dev tap000000000001"), "{fdb}");
    assert!(pings_soon(&g_a1, b1.ip));
    fleet.on_node(A, || destroy_netns(&one_a).unwrap());
    fleet.on_node(B, || destroy_netns(&one_b).unwrap());
}

#[test]
fn nothing_floods_and_arp_stays_home() {
    let fleet = Fleet::new("flood", 3);
    let (a, b) = (&fleet.nodes[A], &fleet.nodes[B]);
    let a1 = endpoint(1, "172.16.0.2");
    let b1 = endpoint(2, "172.16.0.3");
    let one_a = fleet.tenant(
        A,
        "one",
        0,
        vec![bridge("br0", "172.16.0.0/16", vec![a1.clone()])],
    );
    let one_b = fleet.tenant(
        B,
        "one",
        0,
        vec![bridge("br0", "172.16.0.0/16", vec![b1.clone()])],
    );
    up(&fleet, A, &one_a, &[overlay(100, a, vec![remote(&b1, b)])]);
    up(&fleet, B, &one_b, &[overlay(100, b, vec![remote(&a1, a)])]);
    let g_a1 = fleet.attach_guest(&one_a, &one_a.bridges[0], &a1);
    fleet.attach_guest(&one_b, &one_b.bridges[0], &b1);
    let before = (fleet.vxlan_packets_to(B), fleet.vxlan_packets_to(C));

    // Broadcast (ARP for nobody), unknown unicast and multicast from a1: none leaves node A.
    assert!(!pings(&g_a1, "172.16.0.77".parse().unwrap()));
    ip(
        &g_a1,
        &[
            "neigh",
            "replace",
            "172.16.0.78",
            "lladdr",
            "02:48:59:00:00:78",
            "dev",
            "eth0",
        ],
    );
    assert!(!pings(&g_a1, "172.16.0.78".parse().unwrap()));
    let _ = busybox(&g_a1, &["ping", "-c", "1", "-W", "1", "224.0.0.1"]);
    // ARP for b1 is answered on node A without a packet to B.
    assert_eq!(arping(&g_a1, b1.ip), Some(mac(b1.mac)));
    assert_eq!(
        (fleet.vxlan_packets_to(B), fleet.vxlan_packets_to(C)),
        before,
        "nothing went to node B or C"
    );

    // What is for b1 goes to node B, and only there (the counters do count).
    assert!(pings_soon(&g_a1, b1.ip));
    assert!(fleet.vxlan_packets_to(B) > before.0);
    assert_eq!(fleet.vxlan_packets_to(C), 0);
    fleet.on_node(A, || destroy_netns(&one_a).unwrap());
    fleet.on_node(B, || destroy_netns(&one_b).unwrap());
}

fn vxlan_sockets(node: &Node) -> String {
    run_in_netns(
        &node.netns,
        Command::new("ss").args(["-Hnlu", "sport", "=", ":4789"]),
    )
    .unwrap()
}

fn ifindex(t: &TenantNetns, link: &str) -> String {
    ip(&t.netns_path, &["-o", "link", "show", "dev", link])
        .split(':')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn reapplying_changes_nothing_drift_is_repaired_and_removal_leaves_nothing() {
    let fleet = Fleet::new("lifecycle", 2);
    let (a, b) = (&fleet.nodes[A], &fleet.nodes[B]);
    let a1 = endpoint(1, "172.16.0.2");
    let b1 = endpoint(2, "172.16.0.3");
    let one_a = fleet.tenant(
        A,
        "one",
        0,
        vec![bridge("br0", "172.16.0.0/16", vec![a1.clone()])],
    );
    let one_b = fleet.tenant(
        B,
        "one",
        0,
        vec![bridge("br0", "172.16.0.0/16", vec![b1.clone()])],
    );
    let mut ov_a = overlay(100, a, vec![remote(&b1, b)]);
    let ov_b = overlay(100, b, vec![remote(&a1, a)]);

    // Before its namespace exists: refused, nothing made.
    let err = fleet
        .on_node(A, || apply_overlays(&one_a, &[ov_a.clone()]))
        .unwrap_err();
    assert!(err.to_string().contains("ensure_netns first"), "{err}");
    let applied = up(&fleet, A, &one_a, &[ov_a.clone()]);
    up(&fleet, B, &one_b, &[ov_b]);
    assert_eq!(applied.keys().collect::<Vec<_>>(), ["bridge hyper-overlay"]);
    let g_a1 = fleet.attach_guest(&one_a, &one_a.bridges[0], &a1);
    let g_b1 = fleet.attach_guest(&one_b, &one_b.bridges[0], &b1);
    let _server = Server::start(&g_b1, 80);
    let mut conn = connect(&g_a1, b1.ip, 80).unwrap();
    let vxlan = ip(&one_a.netns_path, &["-d", "link", "show", "dev", "vx100"]);
    for expected in [
        "mtu 1450",
        "master br0",
        "vxlan id 100 local 203.0.113.10",
        "dstport 4789",
        "nolearning",
    ] {
        assert!(vxlan.contains(expected), "{expected} in {vxlan}");
    }
    assert!(
        vxlan_sockets(a).contains(":4789"),
        "the socket is in the node's namespace"
    );
    assert_eq!(ip(&a.netns, &["-br", "link", "show", "type", "vxlan"]), "");

    // Again: same state, same device, the open connection untouched, no drift.
    let state = fleet.on_node(A, || installed_overlays(&one_a).unwrap().unwrap());
    let index = ifindex(&one_a, "vx100");
    for _ in 0..2 {
        assert_eq!(
            fleet.on_node(A, || apply_overlays(&one_a, &[ov_a.clone()]).unwrap()),
            applied
        );
    }
    let again = fleet.on_node(A, || installed_overlays(&one_a).unwrap().unwrap());
    assert_eq!(again, state);
    assert_eq!(ifindex(&one_a, "vx100"), index);
    assert!(conn.echoes("after re-applying"));
    assert_eq!(drift::overlays(&one_a, &[ov_a.clone()], &again), []);
    assert_eq!(drift::tables(&applied, &again.tables), []);

    // Broken by hand: named, then repaired by the same call.
    let ns = one_a.netns_path.clone();
    let bridge_tool = |args: &[&str]| {
        run_in_netns(&ns, Command::new("bridge").args(args)).unwrap();
    };
    bridge_tool(&["fdb", "del", &mac(b1.mac), "dev", "vx100", "self"]);
    bridge_tool(&[
        "fdb",
        "append",
        "00:00:00:00:00:00",
        "dev",
        "vx100",
        "dst",
        "203.0.113.99",
        "self",
        "permanent",
    ]);
    bridge_tool(&["link", "set", "dev", "vx100", "learning", "on"]);
    ip(&ns, &["neigh", "del", "172.16.0.3", "dev", "br0"]);
    let broken = fleet.on_node(A, || installed_overlays(&one_a).unwrap().unwrap());
    let found: Vec<String> = drift::overlays(&one_a, &[ov_a.clone()], &broken)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(found.len(), 4, "{found:?}");
    assert!(found[0].starts_with("link vx100 port flags Some(BridgePort { learning: true"));
    assert_eq!(
        found[1..],
        [
            "vx100 has stray forwarding entry 00:00:00:00:00:00 dst 203.0.113.99",
            "vx100 lacks forwarding entry 02:48:59:00:00:02 dst 203.0.113.11",
            "br0 lacks overlay neighbour 172.16.0.3 at 02:48:59:00:00:02",
        ]
    );
    fleet.on_node(A, || apply_overlays(&one_a, &[ov_a.clone()]).unwrap());
    let repaired = fleet.on_node(A, || installed_overlays(&one_a).unwrap().unwrap());
    assert_eq!(drift::overlays(&one_a, &[ov_a.clone()], &repaired), []);
    assert!(pings_soon(&g_a1, b1.ip));

    // b1 leaves the network: its entries go, and so does the way to it.
    ov_a.remotes.clear();
    fleet.on_node(A, || apply_overlays(&one_a, &[ov_a.clone()]).unwrap());
    let without = fleet.on_node(A, || installed_overlays(&one_a).unwrap().unwrap());
    assert_eq!(
        (without.fdb.len(), without.neighbours.len()),
        (0, 0),
        "{without:?}"
    );
    assert!(!pings(&g_a1, b1.ip));

    // The overlay goes: no device, no table, no socket left on node A.
    let tables = fleet.on_node(A, || apply_overlays(&one_a, &[]).unwrap());
    assert!(tables.is_empty());
    let gone = fleet.on_node(A, || installed_overlays(&one_a).unwrap().unwrap());
    assert_eq!(gone, OverlayState::default());
    assert_eq!(vxlan_sockets(a), "");
    // Destroying a namespace takes its overlay down with it at once.
    assert!(vxlan_sockets(b).contains(":4789"));
    fleet.on_node(B, || destroy_netns(&one_b).unwrap());
    assert_eq!(vxlan_sockets(b), "");
    fleet.on_node(A, || destroy_netns(&one_a).unwrap());
}
