//! Real traffic through real namespaces, bridges, veths and nftables: each test builds its own
//! sandbox (see support) and proves one promise of tenant networking.

mod support;

use std::net::Ipv4Addr;

use net::{
    apply_node_rules, apply_tenant_rules, destroy_netns, ensure_netns, remove_node_rules,
    Direction, Proto, Remote, Rule, RuleProto, ServiceVip, TenantNetns,
};
use support::*;

const LOCALHOST: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

fn sync(sandbox: &Sandbox, tenants: &[&TenantNetns]) {
    sandbox.on_node(|| {
        for t in tenants {
            ensure_netns(t).unwrap();
            apply_tenant_rules(t, &[]).unwrap();
        }
        apply_node_rules(&sandbox.net, tenants).unwrap();
    });
}

fn teardown(sandbox: &Sandbox, tenants: &[&TenantNetns]) {
    sandbox.on_node(|| {
        for t in tenants {
            destroy_netns(t).unwrap();
        }
        remove_node_rules().unwrap();
    });
}

fn tcp_rule(direction: Direction, port: u16, remote: Remote) -> Rule {
    Rule {
        direction,
        protocol: Some(RuleProto::Tcp),
        port_min: Some(port),
        port_max: Some(port),
        remote,
    }
}

#[test]
fn bridge_neighbours_gateway_node_and_published_ports() {
    let mut sandbox = Sandbox::new("basic");
    let mut web = endpoint(1, "172.16.0.2");
    web.ports.push(tcp(8080, 80));
    let other = endpoint(2, "172.16.0.3");
    let t = sandbox.tenant(
        "a",
        0,
        vec![bridge(
            "br0",
            "172.16.0.0/16",
            vec![web.clone(), other.clone()],
        )],
    );
    sync(&sandbox, &[&t]);
    let br = &t.bridges[0];
    let g_web = sandbox.attach_guest(&t, br, &web);
    let g_other = sandbox.attach_guest(&t, br, &other);
    let _servers = [
        Server::start(&g_web, 80),
        Server::start(&g_other, 80),
        Server::start(&sandbox.node, 7000),
        Server::start(&sandbox.client, 9000),
        Server::start(&t.netns_path, 53),
        Server::start(&t.netns_path, 7001),
    ];

    // Neighbours on a bridge.
    assert!(pings(&g_other, web.ip));
    assert_eq!(
        connect(&g_other, web.ip, 80).unwrap().greeting,
        "hello 172.16.0.3"
    );
    // The gateway answers ping and DNS, nothing else.
    assert!(pings(&g_web, br.gateway));
    assert!(connect(&g_web, br.gateway, 53).is_some());
    assert!(connect(&g_web, br.gateway, 7001).is_none());
    // The node is out of reach, though it answers the outside.
    assert!(connect(&sandbox.client, NODE_IP, 7000).is_some());
    assert!(connect(&g_web, NODE_IP, 7000).is_none());
    assert!(connect(&g_web, t.transit.host_ip, 7000).is_none());
    assert!(!pings(&g_web, NODE_IP));
    // A published port, from outside, from the node's address on the node, and from 127.0.0.1.
    assert_eq!(
        connect(&sandbox.client, NODE_IP, 8080).unwrap().greeting,
        "hello 192.0.2.2"
    );
    assert!(connect(&sandbox.node, NODE_IP, 8080)
        .unwrap()
        .echoes("via node address"));
    assert!(connect(&sandbox.node, LOCALHOST, 8080)
        .unwrap()
        .echoes("via localhost"));
    assert!(connect(&sandbox.client, NODE_IP, 80).is_none());
    // Outbound leaves through the node, masqueraded to the node's address.
    assert_eq!(
        connect(&g_other, CLIENT_IP, 9000).unwrap().greeting,
        "hello 192.0.2.1"
    );

    // Everything again changes nothing.
    sync(&sandbox, &[&t]);
    assert_eq!(
        connect(&sandbox.client, NODE_IP, 8080).unwrap().greeting,
        "hello 192.0.2.2"
    );
    assert!(pings(&g_other, web.ip));
    teardown(&sandbox, &[&t]);
}

#[test]
fn tenants_cannot_reach_each_other() {
    let mut sandbox = Sandbox::new("isolation");
    let a_ep = endpoint(1, "172.16.0.2");
    let mut b_ep = endpoint(2, "172.16.0.3");
    b_ep.ports.push(tcp(8080, 80));
    b_ep.fip = Some("198.51.100.9".parse().unwrap());
    let c_ep = endpoint(3, "10.1.0.2");
    let a = sandbox.tenant(
        "a",
        0,
        vec![bridge("br0", "172.16.0.0/16", vec![a_ep.clone()])],
    );
    let b = sandbox.tenant(
        "b",
        1,
        vec![bridge("br0", "172.16.0.0/16", vec![b_ep.clone()])],
    );
    let c = sandbox.tenant(
        "c",
        2,
        vec![bridge("br0", "10.1.0.0/24", vec![c_ep.clone()])],
    );
    sync(&sandbox, &[&a, &b, &c]);
    let g_a = sandbox.attach_guest(&a, &a.bridges[0], &a_ep);
    let g_b = sandbox.attach_guest(&b, &b.bridges[0], &b_ep);
    let g_c = sandbox.attach_guest(&c, &c.bridges[0], &c_ep);
    let _servers = [
        Server::start(&g_a, 80),
        Server::start(&g_b, 80),
        Server::start(&g_c, 80),
    ];
    // Even a node that routes to tenant c's subnet must not carry a's traffic there.
    let c_peer = c.transit.peer_ip.to_string();
    ip(
        &sandbox.node,
        &["route", "add", "10.1.0.0/24", "via", &c_peer],
    );

    // Same subnet, other tenant: not there at all.
    assert!(!pings(&g_a, b_ep.ip));
    assert!(connect(&g_a, b_ep.ip, 80).is_none());
    // Other subnet, other tenant: not through the node, not inside c either.
    assert!(connect(&g_a, c_ep.ip, 80).is_none());
    assert!(!pings(&g_a, c_ep.ip));
    // b's published port and FIP work from outside, never from tenant a.
    assert!(connect(&sandbox.client, NODE_IP, 8080).is_some());
    assert!(connect(&sandbox.client, b_ep.fip.unwrap(), 8080).is_some());
    assert!(connect(&g_a, NODE_IP, 8080).is_none());
    assert!(connect(&g_a, b_ep.fip.unwrap(), 8080).is_none());
    // And b reaches nobody either.
    assert!(connect(&g_b, a_ep.ip, 80).is_none());
    assert!(connect(&g_b, c_ep.ip, 80).is_none());
    teardown(&sandbox, &[&a, &b, &c]);
}

#[test]
fn floating_ip_in_and_out_and_released() {
    let mut sandbox = Sandbox::new("fip");
    let fip: Ipv4Addr = "198.51.100.7".parse().unwrap();
    let mut holder = endpoint(1, "172.16.0.2");
    holder.ports.push(tcp(8080, 80));
    holder.fip = Some(fip);
    let plain = endpoint(2, "172.16.0.3");
    let mut t = sandbox.tenant(
        "a",
        0,
        vec![bridge(
            "br0",
            "172.16.0.0/16",
            vec![holder.clone(), plain.clone()],
        )],
    );
    sync(&sandbox, &[&t]);
    let g_holder = sandbox.attach_guest(&t, &t.bridges[0], &holder);
    let g_plain = sandbox.attach_guest(&t, &t.bridges[0], &plain);
    let _servers = [
        Server::start(&g_holder, 80),
        Server::start(&sandbox.client, 9000),
    ];

    assert_eq!(
        connect(&sandbox.client, fip, 8080).unwrap().greeting,
        "hello 192.0.2.2"
    );
    assert!(
        connect(&sandbox.client, fip, 80).is_none(),
        "unpublished ports stay closed on a FIP"
    );
    assert_eq!(
        connect(&g_holder, CLIENT_IP, 9000).unwrap().greeting,
        "hello 198.51.100.7"
    );
    assert_eq!(
        connect(&g_plain, CLIENT_IP, 9000).unwrap().greeting,
        "hello 192.0.2.1"
    );

    // Release the FIP: the model changes, rules and routes follow.
    t.bridges[0].endpoints[0].fip = None;
    sandbox.on_node(|| {
        apply_tenant_rules(&t, &[holder.ip]).unwrap();
        apply_node_rules(&sandbox.net, &[&t]).unwrap();
    });
    assert!(connect(&sandbox.client, fip, 8080).is_none());
    assert_eq!(
        ip(
            &sandbox.node,
            &["route", "show", "proto", &net::FIP_ROUTE_PROTO.to_string()]
        ),
        ""
    );
    assert_eq!(
        connect(&g_holder, CLIENT_IP, 9000).unwrap().greeting,
        "hello 192.0.2.1"
    );
    teardown(&sandbox, &[&t]);
}

#[test]
fn service_vip_on_its_bridge_and_through_a_fip() {
    let mut sandbox = Sandbox::new("vip");
    let (vip, fip): (Ipv4Addr, Ipv4Addr) = (
        "172.16.0.10".parse().unwrap(),
        "198.51.100.20".parse().unwrap(),
    );
    // Publishes host port 80, the service's port, with nothing listening behind it: the FIP's
    // port 80 must still reach the balancer. Its groups have no egress rule at all.
    let mut guest = endpoint(1, "172.16.0.2");
    guest.ports.push(tcp(80, 80));
    guest.security_groups = Some(Vec::new());
    let elsewhere = endpoint(2, "10.2.0.2");
    let mut t = sandbox.tenant(
        "a",
        0,
        vec![
            bridge("br0", "172.16.0.0/16", vec![guest.clone()]),
            bridge("br1", "10.2.0.0/24", vec![elsewhere.clone()]),
        ],
    );
    t.bridges[0].services.push(ServiceVip {
        ip: vip,
        ports: vec![(Proto::Tcp, 80)],
        fip: Some(fip),
    });
    sync(&sandbox, &[&t]);
    sync(&sandbox, &[&t]);
    let g_guest = sandbox.attach_guest(&t, &t.bridges[0], &guest);
    let g_elsewhere = sandbox.attach_guest(&t, &t.bridges[1], &elsewhere);
    // The balancer's stand-ins, bound to the VIP inside the tenant netns.
    let _servers = [
        Server::start_on(&t.netns_path, vip, 80),
        Server::start_on(&t.netns_path, vip, 7001),
    ];

    // On its bridge, service ports only; not from the tenant's other network.
    assert_eq!(
        connect(&g_guest, vip, 80).unwrap().greeting,
        "hello 172.16.0.2"
    );
    assert!(connect(&g_guest, vip, 7001).is_none());
    assert!(connect(&g_elsewhere, vip, 80).is_none());
    // From outside through the FIP, the client's own address seen; again service ports only.
    let mut via_fip = connect(&sandbox.client, fip, 80).unwrap();
    assert_eq!(via_fip.greeting, "hello 192.0.2.2");
    assert!(via_fip.echoes("through the fip"));
    assert!(connect(&sandbox.client, fip, 7001).is_none());
    assert!(connect(&sandbox.client, vip, 80).is_none());

    // The FIP is detached: rules and routes follow.
    t.bridges[0].services[0].fip = None;
    sandbox.on_node(|| {
        apply_tenant_rules(&t, &[fip]).unwrap();
        apply_node_rules(&sandbox.net, &[&t]).unwrap();
    });
    assert!(connect(&sandbox.client, fip, 80).is_none());
    assert_eq!(
        ip(
            &sandbox.node,
            &["route", "show", "proto", &net::FIP_ROUTE_PROTO.to_string()]
        ),
        ""
    );
    assert!(connect(&g_guest, vip, 80).is_some());

    // The service goes: so does its address, and the gateway stays.
    t.bridges[0].services.clear();
    sync(&sandbox, &[&t]);
    let addrs = ip(&t.netns_path, &["-4", "-br", "addr", "show", "dev", "br0"]);
    assert!(
        !addrs.contains("172.16.0.10") && addrs.contains("172.16.0.1/16"),
        "{addrs}"
    );
    assert!(connect(&g_guest, vip, 80).is_none());
    teardown(&sandbox, &[&t]);
}

#[test]
fn security_groups_apply_to_new_and_established_connections() {
    let mut sandbox = Sandbox::new("sg");
    let mut guarded = endpoint(1, "172.16.0.2");
    guarded.ports = vec![tcp(8080, 80), tcp(8081, 81)];
    guarded.security_groups = Some(vec![tcp_rule(Direction::Ingress, 80, Remote::Any)]);
    let peer = endpoint(2, "172.16.0.3");
    let stranger = endpoint(3, "172.16.0.4");
    let mut t = sandbox.tenant(
        "a",
        0,
        vec![bridge(
            "br0",
            "172.16.0.0/16",
            vec![guarded.clone(), peer.clone(), stranger.clone()],
        )],
    );
    sync(&sandbox, &[&t]);
    let g_guarded = sandbox.attach_guest(&t, &t.bridges[0], &guarded);
    let g_peer = sandbox.attach_guest(&t, &t.bridges[0], &peer);
    let g_stranger = sandbox.attach_guest(&t, &t.bridges[0], &stranger);
    let _servers = [
        Server::start(&g_guarded, 80),
        Server::start(&g_guarded, 81),
        Server::start(&g_peer, 80),
        Server::start(&t.netns_path, 53),
    ];
    let set_rules = |t: &mut TenantNetns, rules: Vec<Rule>| {
        t.bridges[0].endpoints[0].security_groups = Some(rules);
        sandbox.on_node(|| apply_tenant_rules(t, &[guarded.ip]).unwrap());
    };

    // Ingress tcp 80 only; groups without an egress rule: no outbound, but DNS on the gateway.
    assert!(connect(&g_peer, guarded.ip, 80).is_some());
    assert!(connect(&g_peer, guarded.ip, 81).is_none());
    assert!(connect(&sandbox.client, NODE_IP, 8080).is_some());
    assert!(connect(&sandbox.client, NODE_IP, 8081).is_none());
    assert!(connect(&g_guarded, peer.ip, 80).is_none());
    assert!(connect(&g_guarded, t.bridges[0].gateway, 53).is_some());

    // Widening the group keeps established connections and lets new ones in, nothing recreated.
    let mut on_80 = connect(&g_peer, guarded.ip, 80).unwrap();
    assert!(on_80.echoes("before"));
    let any_egress = Rule {
        direction: Direction::Egress,
        protocol: None,
        port_min: None,
        port_max: None,
        remote: Remote::Any,
    };
    set_rules(
        &mut t,
        vec![
            tcp_rule(Direction::Ingress, 80, Remote::Any),
            tcp_rule(Direction::Ingress, 81, Remote::Any),
            any_egress,
        ],
    );
    assert!(on_80.echoes("still allowed"));
    let mut on_81 = connect(&g_peer, guarded.ip, 81).expect("81 allowed now");
    assert!(connect(&g_guarded, peer.ip, 80).is_some());

    // Narrowing it cuts the established connection that is no longer allowed, only that one.
    set_rules(&mut t, vec![tcp_rule(Direction::Ingress, 81, Remote::Any)]);
    assert!(!on_80.echoes("cut"));
    assert!(on_81.echoes("kept"));
    assert!(connect(&g_peer, guarded.ip, 80).is_none());

    // A remote restricted to some members' IPs.
    set_rules(
        &mut t,
        vec![tcp_rule(Direction::Ingress, 80, Remote::Ips(vec![peer.ip]))],
    );
    assert!(connect(&g_peer, guarded.ip, 80).is_some());
    assert!(connect(&g_stranger, guarded.ip, 80).is_none());
    teardown(&sandbox, &[&t]);
}

#[test]
fn spoofed_and_unknown_senders_are_dropped() {
    let mut sandbox = Sandbox::new("spoof");
    let liar = endpoint(1, "172.16.0.2");
    let victim = endpoint(2, "172.16.0.3");
    let t = sandbox.tenant(
        "a",
        0,
        vec![bridge(
            "br0",
            "172.16.0.0/16",
            vec![liar.clone(), victim.clone()],
        )],
    );
    sync(&sandbox, &[&t]);
    let g_liar = sandbox.attach_guest(&t, &t.bridges[0], &liar);
    let g_victim = sandbox.attach_guest(&t, &t.bridges[0], &victim);
    assert!(pings(&g_liar, victim.ip));

    // Another source address, with neighbours known both ways so only the IPv4 check can stop it.
    let fake: Ipv4Addr = "172.16.0.99".parse().unwrap();
    let mac = |m: [u8; 6]| {
        m.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    ip(
        &g_liar,
        &["addr", "add", &format!("{fake}/16"), "dev", "eth0"],
    );
    ip(
        &g_victim,
        &[
            "neigh",
            "replace",
            &fake.to_string(),
            "lladdr",
            &mac(liar.mac),
            "dev",
            "eth0",
        ],
    );
    assert!(!pings_from(&g_liar, fake, victim.ip));
    assert!(pings_from(&g_liar, liar.ip, victim.ip));

    // Another MAC address.
    ip(
        &g_liar,
        &["link", "set", "eth0", "address", "02:66:66:66:66:66"],
    );
    ip(&g_liar, &["neigh", "flush", "dev", "eth0"]);
    assert!(!pings(&g_liar, victim.ip));

    // A tap the rules do not know yet.
    let unknown = endpoint(3, "172.16.0.4");
    let g_unknown = sandbox.attach_guest(&t, &t.bridges[0], &unknown);
    assert!(!pings(&g_unknown, victim.ip));
    teardown(&sandbox, &[&t]);
}
