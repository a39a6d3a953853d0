//! nftables rulesets as text, rendered by pure functions from the model. Each rendering replaces
//! our tables in one transaction (`add`, `delete`, then the full table), so there is never a
//! moment without rules and other tables of the namespace are never touched.
//!
//! Text rather than the JSON API: the rules read like the nft documentation, the tests compare
//! them line by line, and `nft -f -` reports errors against these very lines.

use std::collections::BTreeSet;
use std::fmt::{Display, Write};
use std::net::Ipv4Addr;

use crate::model::{
    mac_text, Direction, Endpoint, NodeNet, Proto, Remote, Rule, RuleProto, ServiceVip,
    TenantNetns, TENANT_UPLINK, TRANSIT_PREFIX,
};

/// The two tables of a tenant netns: `inet hyper` (filter, NAT, security groups) and
/// `bridge hyper` (anti-spoofing on the taps).
pub fn render_tenant_rules(t: &TenantNetns) -> String {
    let mut out = String::new();
    replace_table(&mut out, "inet", &tenant_inet_body(t));
    replace_table(&mut out, "bridge", &tenant_bridge_body(t));
    out
}

/// The `inet hyper` table of the node's own netns: published ports, NAT out, isolation.
pub fn render_node_rules(node: &NodeNet, tenants: &[&TenantNetns]) -> String {
    let mut out = String::new();
    replace_table(&mut out, "inet", &node_body(node, tenants));
    out
}

/// Deletes the node's table; fine if it is not there.
pub fn render_node_removal() -> String {
    "add table inet hyper\ndelete table inet hyper\n".to_string()
}

fn replace_table(out: &mut String, family: &str, body: &str) {
    replace_named_table(out, family, "hyper", body);
}

/// Adds (so that the delete cannot fail), deletes and defines the table in one transaction: the
/// kernel holds either the old table whole or the new one whole, never none.
pub(crate) fn replace_named_table(out: &mut String, family: &str, name: &str, body: &str) {
    writeln!(
        out,
        "add table {family} {name}\ndelete table {family} {name}\ntable {family} {name} {{\n{body}}}"
    )
    .unwrap();
}

/// `{ a, b }` for several, `a` for one (nft rejects neither, but one reads better).
fn set_of<T: Display>(items: impl IntoIterator<Item = T>) -> String {
    let items: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
    match items.as_slice() {
        [one] => one.clone(),
        _ => format!("{{ {} }}", items.join(", ")),
    }
}

pub(crate) fn quoted(name: &str) -> String {
    format!("\"{name}\"")
}

fn proto_name(proto: Proto) -> &'static str {
    match proto {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    }
}

/// `tcp dport { .. }` then `udp dport { .. }` for the protocols a service has ports of.
fn service_dports(service: &ServiceVip) -> Vec<String> {
    [Proto::Tcp, Proto::Udp]
        .into_iter()
        .filter_map(|proto| {
            let ports: Vec<u16> = service
                .ports
                .iter()
                .filter(|(p, _)| *p == proto)
                .map(|(_, port)| *port)
                .collect();
            (!ports.is_empty()).then(|| format!("{} dport {}", proto_name(proto), set_of(ports)))
        })
        .collect()
}

pub(crate) fn chain(out: &mut String, name: &str, hook: Option<&str>, rules: &[String]) {
    writeln!(out, "\tchain {name} {{").unwrap();
    if let Some(hook) = hook {
        writeln!(out, "\t\t{hook}").unwrap();
    }
    for rule in rules {
        writeln!(out, "\t\t{rule}").unwrap();
    }
    writeln!(out, "\t}}").unwrap();
}

fn egress_chain(tap: &str) -> String {
    format!("eg-{tap}")
}

fn ingress_chain(tap: &str) -> String {
    format!("in-{tap}")
}

fn tenant_inet_body(t: &TenantNetns) -> String {
    let mut out = String::new();
    let guarded: Vec<(&Endpoint, &Vec<Rule>)> = t
        .endpoints()
        .filter_map(|e| e.security_groups.as_ref().map(|rules| (e, rules)))
        .collect();
    for (map, chain_of) in [
        ("sg_egress", egress_chain as fn(&str) -> String),
        ("sg_ingress", ingress_chain),
    ] {
        writeln!(out, "\tmap {map} {{\n\t\ttype ipv4_addr : verdict").unwrap();
        if !guarded.is_empty() {
            let elements = guarded
                .iter()
                .map(|(e, _)| format!("{} : jump {}", e.ip, chain_of(&e.tap)));
            writeln!(
                out,
                "\t\telements = {{ {} }}",
                elements.collect::<Vec<_>>().join(", ")
            )
            .unwrap();
        }
        writeln!(out, "\t}}").unwrap();
    }
    chain(
        &mut out,
        "input",
        Some("type filter hook input priority filter; policy drop;"),
        &tenant_input(t),
    );
    chain(
        &mut out,
        "forward",
        Some("type filter hook forward priority filter; policy accept;"),
        &tenant_forward(t),
    );
    for (endpoint, rules) in &guarded {
        chain(
            &mut out,
            &egress_chain(&endpoint.tap),
            None,
            &security_group_chain(rules, Direction::Egress),
        );
        chain(
            &mut out,
            &ingress_chain(&endpoint.tap),
            None,
            &security_group_chain(rules, Direction::Ingress),
        );
    }
    chain(
        &mut out,
        "prerouting",
        Some("type nat hook prerouting priority dstnat; policy accept;"),
        &tenant_dnat(t),
    );
    chain(
        &mut out,
        "postrouting",
        Some("type nat hook postrouting priority srcnat; policy accept;"),
        &tenant_snat(t),
    );
    out
}

/// The tenant netns itself only answers DNS and ping on its gateways, and the ports of service
/// VIPs (the balancer listens there) from their own bridge and, DNATed from a service FIP, from
/// the uplink. Local delivery never crosses the forward chain, so security groups do not apply
/// to a guest reaching a VIP, as for DNS on the gateway; the balancer's connections to backends
/// are local output too, from the netns' own address on the bridge, and the backends' groups do
/// not filter them either.
fn tenant_input(t: &TenantNetns) -> Vec<String> {
    let mut rules = vec![
        "iifname \"lo\" accept".to_string(),
        "ct state established,related accept".to_string(),
    ];
    if !t.bridges.is_empty() {
        let bridges = set_of(t.bridges.iter().map(|b| quoted(&b.ifname)));
        let gateways = set_of(t.bridges.iter().map(|b| b.gateway));
        for service in ["udp dport 53", "tcp dport 53", "icmp type echo-request"] {
            rules.push(format!(
                "iifname {bridges} ip daddr {gateways} {service} accept"
            ));
        }
    }
    for bridge in &t.bridges {
        for service in &bridge.services {
            for dports in service_dports(service) {
                rules.push(format!(
                    "iifname {} ip daddr {} {dports} accept",
                    quoted(&bridge.ifname),
                    service.ip
                ));
                if service.fip.is_some() {
                    rules.push(format!(
                        "iifname {} ip daddr {} {dports} ct status dnat accept",
                        quoted(TENANT_UPLINK),
                        service.ip
                    ));
                }
            }
        }
    }
    rules
}

fn tenant_forward(t: &TenantNetns) -> Vec<String> {
    let up = quoted(TENANT_UPLINK);
    let mut rules = vec![
        "ct state established,related accept".to_string(),
        "ct state invalid drop".to_string(),
        // Nothing is routed back out where it came from (e.g. a FIP's unpublished port).
        format!("iifname {up} oifname {up} drop"),
        // From outside, only what a published port or FIP DNATed in.
        format!("iifname {up} ct status & dnat != dnat drop"),
    ];
    // User networks of a tenant are isolated from each other.
    for bridge in &t.bridges {
        let others: Vec<String> = t
            .bridges
            .iter()
            .filter(|o| o.ifname != bridge.ifname)
            .map(|o| quoted(&o.ifname))
            .collect();
        if !others.is_empty() {
            rules.push(format!(
                "iifname {} oifname {} drop",
                quoted(&bridge.ifname),
                set_of(others)
            ));
        }
    }
    // Other nodes' balancers reach this node's replicas as the local one does (local output,
    // which no group filters); the overlay's filter takes their addresses only from their own
    // nodes' MACs, and no guest here can send from them (its tap holds it to its own).
    for bridge in t.bridges.iter().filter(|b| !b.peer_node_ips.is_empty()) {
        rules.push(format!(
            "iifname {} ip saddr {} accept",
            quoted(&bridge.ifname),
            set_of(&bridge.peer_node_ips)
        ));
    }
    // A service's connections the balancer left to the kernel (DNAT to a replica, see
    // hyper-lb) are the balancer's as much as those it copies, which no group filters.
    for bridge in t.bridges.iter().filter(|b| !b.services.is_empty()) {
        let br = quoted(&bridge.ifname);
        rules.push(format!(
            "iifname {br} oifname {br} ct status dnat ct original ip daddr {} accept",
            set_of(
                bridge
                    .services
                    .iter()
                    .map(|s| s.ip)
                    .collect::<BTreeSet<_>>()
            )
        ));
    }
    rules.push("ip saddr vmap @sg_egress".to_string());
    rules.push("ip daddr vmap @sg_ingress".to_string());
    rules
}

/// Chain of one guarded endpoint for one direction: each allowing rule returns to `forward`,
/// anything else is dropped (Neutron: no rule in a direction = nothing passes that way).
fn security_group_chain(rules: &[Rule], direction: Direction) -> Vec<String> {
    let mut lines: Vec<String> = rules
        .iter()
        .filter(|r| r.direction == direction)
        .filter_map(security_group_rule)
        .collect();
    lines.push("drop".to_string());
    lines
}

/// One allowing rule, or `None` when it can match nothing (a remote group without members).
fn security_group_rule(rule: &Rule) -> Option<String> {
    // The remote end is the destination going out, the source coming in.
    let remote_field = match rule.direction {
        Direction::Egress => "ip daddr",
        Direction::Ingress => "ip saddr",
    };
    let mut parts = Vec::new();
    match &rule.remote {
        Remote::Any => {}
        Remote::Cidr(net) if net.prefix_len() == 0 => {}
        Remote::Cidr(net) => parts.push(format!("{remote_field} {net}")),
        Remote::Ips(ips) if ips.is_empty() => return None,
        Remote::Ips(ips) => parts.push(format!("{remote_field} {}", set_of(ips))),
    }
    let l4 = match rule.protocol {
        None => None,
        Some(RuleProto::Icmp) => {
            parts.push("meta l4proto icmp".to_string());
            None
        }
        Some(RuleProto::Tcp) => Some("tcp"),
        Some(RuleProto::Udp) => Some("udp"),
    };
    if let Some(l4) = l4 {
        match (rule.port_min, rule.port_max) {
            (Some(lo), Some(hi)) if lo < hi => parts.push(format!("{l4} dport {lo}-{hi}")),
            (Some(port), _) | (None, Some(port)) => parts.push(format!("{l4} dport {port}")),
            (None, None) => parts.push(format!("meta l4proto {l4}")),
        }
    }
    parts.push("return".to_string());
    Some(parts.join(" "))
}

/// Published ports arrive on the uplink already DNATed by the node to the peer address with the
/// host port; FIPs arrive with the FIP, and only their published ports answer. A service FIP
/// goes to its VIP (local delivery to the balancer) on the same port; those rules come first, as
/// a service port may equal some endpoint's published host port, whose rule matches any address.
fn tenant_dnat(t: &TenantNetns) -> Vec<String> {
    let mut rules = Vec::new();
    for service in t.services() {
        if let Some(fip) = service.fip {
            for dports in service_dports(service) {
                rules.push(format!("ip daddr {fip} {dports} dnat ip to {}", service.ip));
            }
        }
    }
    for endpoint in t.endpoints() {
        for port in &endpoint.ports {
            let (proto, to) = (
                proto_name(port.proto),
                format!("{}:{}", endpoint.ip, port.container_port),
            );
            rules.push(format!(
                "iifname {} {proto} dport {} dnat ip to {to}",
                quoted(TENANT_UPLINK),
                port.host_port
            ));
            if let Some(fip) = endpoint.fip {
                rules.push(format!(
                    "ip daddr {fip} {proto} dport {} dnat ip to {to}",
                    port.host_port
                ));
            }
        }
    }
    rules
}

/// FIP holders leave with their FIP; everyone else with the transit peer address.
fn tenant_snat(t: &TenantNetns) -> Vec<String> {
    let up = quoted(TENANT_UPLINK);
    let mut rules: Vec<String> = t
        .endpoints()
        .filter_map(|e| {
            e.fip
                .map(|fip| format!("oifname {up} ip saddr {} snat ip to {fip}", e.ip))
        })
        .collect();
    // A container reaching a FIP or published port of its own network: the answer would go
    // back across the bridge without the NAT undone (bridged frames skip conntrack), so the
    // request comes from the gateway instead, as through Docker's hairpin.
    for bridge in &t.bridges {
        rules.push(format!(
            "oifname {} ip saddr {net} ip daddr {net} ct status dnat masquerade",
            quoted(&bridge.ifname),
            net = bridge.subnet
        ));
    }
    if !t.bridges.is_empty() {
        rules.push(format!(
            "oifname {up} ip saddr {} masquerade",
            set_of(t.bridges.iter().map(|b| b.subnet))
        ));
    }
    rules
}

/// Anti-spoofing: a tap sends only as its endpoint (its MAC, and its IPv4 address in ARP and
/// IP), IPv4 and ARP only; a tap the model does not know yet sends nothing until its endpoint
/// is in the rules. Two sets of (tap, address) rather than a chain per tap: nftables parses,
/// commits and lists a tenant's table on every sync, and 100 endpoints made 100 chains of six
/// rules (a few ms of CPU per apply against well under one).
fn tenant_bridge_body(t: &TenantNetns) -> String {
    let mut out = String::new();
    let endpoints: Vec<&Endpoint> = t.endpoints().collect();
    let sets = [
        (
            "tap_mac",
            "ifname . ether_addr",
            endpoints
                .iter()
                .map(|e| format!("{} . {}", quoted(&e.tap), mac_text(&e.mac)))
                .collect::<Vec<_>>(),
        ),
        (
            "tap_ip",
            "ifname . ipv4_addr",
            endpoints
                .iter()
                .map(|e| format!("{} . {}", quoted(&e.tap), e.ip))
                .collect(),
        ),
    ];
    for (name, kind, elements) in sets {
        writeln!(out, "\tset {name} {{\n\t\ttype {kind}").unwrap();
        if !elements.is_empty() {
            writeln!(out, "\t\telements = {{ {} }}", elements.join(", ")).unwrap();
        }
        writeln!(out, "\t}}").unwrap();
    }
    let prerouting = [
        "iifname != \"tap*\" accept",
        "iifname . ether saddr != @tap_mac drop",
        "ether type arp iifname . arp saddr ether != @tap_mac drop",
        "ether type arp iifname . arp saddr ip != @tap_ip drop",
        "ether type ip iifname . ip saddr != @tap_ip drop",
        // IPv6, VLAN tags and anything else that could slip past the IPv4 checks.
        "ether type != { ip, arp } drop",
    ]
    .map(String::from);
    chain(
        &mut out,
        "prerouting",
        Some("type filter hook prerouting priority filter; policy accept;"),
        &prerouting,
    );
    out
}

fn node_body(node: &NodeNet, tenants: &[&TenantNetns]) -> String {
    let transit = quoted(&format!("{TRANSIT_PREFIX}*"));
    let mut publish = Vec::new();
    for t in tenants {
        for port in t.endpoints().flat_map(|e| &e.ports) {
            let to = format!("{}:{}", t.transit.peer_ip, port.host_port);
            let on = match port.host_ip {
                Some(host_ip) => format!("ip daddr {host_ip}"),
                None => "fib daddr type local".to_string(),
            };
            publish.push(format!(
                "{on} {} dport {} dnat ip to {to}",
                proto_name(port.proto),
                port.host_port
            ));
        }
    }
    let postrouting = [
        // Clients on the node's 127.0.0.1 cannot be answered at that address from a tenant.
        format!("oifname {transit} ip saddr 127.0.0.0/8 masquerade"),
        format!(
            "ip saddr {} oifname != {transit} masquerade",
            node.transit_cidr
        ),
    ];
    let mut out = String::new();
    chain(
        &mut out,
        "prerouting",
        Some("type nat hook prerouting priority dstnat; policy accept;"),
        &publish,
    );
    chain(
        &mut out,
        "output",
        Some("type nat hook output priority -100; policy accept;"),
        &publish,
    );
    chain(
        &mut out,
        "postrouting",
        Some("type nat hook postrouting priority srcnat; policy accept;"),
        &postrouting,
    );
    // Tenants never reach each other through the node, nor the node itself.
    let forward = [format!("iifname {transit} oifname {transit} drop")];
    chain(
        &mut out,
        "forward",
        Some("type filter hook forward priority filter; policy accept;"),
        &forward,
    );
    let input = [
        format!("iifname {transit} ct state established,related accept"),
        format!("iifname {transit} drop"),
    ];
    chain(
        &mut out,
        "input",
        Some("type filter hook input priority filter; policy accept;"),
        &input,
    );
    out
}

/// A route of the node's for a floating IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FipRoute<'a> {
    pub fip: Ipv4Addr,
    pub via: Ipv4Addr,
    /// The transit link of the tenant that holds it here; `None`: another node holds it, and
    /// `via` is that node's address on the fleet's network.
    pub dev: Option<&'a str>,
}

/// FIP routes the node must have: to the tenants that hold them here (endpoints' and
/// services' alike), then to the nodes that hold the others (a FIP held here wins).
pub fn fip_routes<'a>(node: &NodeNet, tenants: &[&'a TenantNetns]) -> Vec<FipRoute<'a>> {
    let mut routes: Vec<FipRoute<'a>> = tenants
        .iter()
        .flat_map(|t| {
            let fips = t.endpoints().filter_map(|e| e.fip);
            let fips = fips.chain(t.services().filter_map(|s| s.fip));
            fips.map(|fip| FipRoute {
                fip,
                via: t.transit.peer_ip,
                dev: Some(t.transit.host_if.as_str()),
            })
        })
        .collect();
    for e in &node.fips_elsewhere {
        if !routes.iter().any(|r| r.fip == e.fip) {
            routes.push(FipRoute {
                fip: e.fip,
                via: e.node_ip,
                dev: None,
            });
        }
    }
    routes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Bridge, FipElsewhere, PortMapping, ServiceVip, Transit};

    fn endpoint(
        tap: &str,
        last: u8,
        fip: Option<Ipv4Addr>,
        security_groups: Option<Vec<Rule>>,
    ) -> Endpoint {
        Endpoint {
            tap: tap.into(),
            mac: [0x02, 0, 0, 0, 0, last],
            ip: Ipv4Addr::new(172, 16, 0, last),
            ports: vec![PortMapping {
                proto: Proto::Tcp,
                host_ip: None,
                host_port: 8080,
                container_port: 80,
            }],
            fip,
            security_groups,
        }
    }

    fn tenant() -> TenantNetns {
        let web_only = vec![
            Rule {
                direction: Direction::Ingress,
                protocol: Some(RuleProto::Tcp),
                port_min: Some(80),
                port_max: Some(80),
                remote: Remote::Any,
            },
            Rule {
                direction: Direction::Egress,
                protocol: Some(RuleProto::Udp),
                port_min: Some(1000),
                port_max: Some(2000),
                remote: Remote::Cidr("10.0.0.0/8".parse().unwrap()),
            },
            Rule {
                direction: Direction::Ingress,
                protocol: None,
                port_min: None,
                port_max: None,
                remote: Remote::Ips(vec![
                    Ipv4Addr::new(172, 16, 0, 3),
                    Ipv4Addr::new(172, 16, 0, 4),
                ]),
            },
            Rule {
                direction: Direction::Ingress,
                protocol: Some(RuleProto::Icmp),
                port_min: None,
                port_max: None,
                remote: Remote::Ips(vec![]),
            },
        ];
        TenantNetns {
            name: "t1".into(),
            netns_path: "/var/lib/hyper/netns/t1".into(),
            transit: Transit {
                host_if: "hv-0".into(),
                host_ip: Ipv4Addr::new(100, 127, 0, 0),
                peer_ip: Ipv4Addr::new(100, 127, 0, 1),
            },
            bridges: vec![
                Bridge {
                    ifname: "br0".into(),
                    subnet: "172.16.0.0/16".parse().unwrap(),
                    gateway: Ipv4Addr::new(172, 16, 0, 1),
                    mtu: 1450,
                    node_ip: None,
                    peer_node_ips: vec![],
                    endpoints: vec![
                        endpoint(
                            "tapaaaaaaaaaaaa",
                            2,
                            Some(Ipv4Addr::new(198, 51, 100, 7)),
                            Some(web_only),
                        ),
                        endpoint("tapbbbbbbbbbbbb", 3, None, None),
                    ],
                    services: vec![ServiceVip {
                        ip: Ipv4Addr::new(172, 16, 0, 10),
                        ports: vec![(Proto::Tcp, 80), (Proto::Udp, 53), (Proto::Tcp, 443)],
                        fip: Some(Ipv4Addr::new(198, 51, 100, 8)),
                    }],
                },
                Bridge {
                    ifname: "br1".into(),
                    subnet: "10.9.0.0/24".parse().unwrap(),
                    gateway: Ipv4Addr::new(10, 9, 0, 1),
                    mtu: 1450,
                    node_ip: None,
                    peer_node_ips: vec![],
                    endpoints: vec![],
                    services: vec![ServiceVip {
                        ip: Ipv4Addr::new(10, 9, 0, 10),
                        ports: vec![(Proto::Tcp, 8000)],
                        fip: None,
                    }],
                },
            ],
        }
    }

    fn lines_of_chain(text: &str, name: &str) -> Vec<String> {
        let start = text
            .find(&format!("\tchain {name} {{"))
            .unwrap_or_else(|| panic!("no chain {name} in\n{text}"));
        text[start..]
            .lines()
            .skip(1)
            .map(str::trim)
            .take_while(|l| *l != "}")
            .map(String::from)
            .collect()
    }

    #[test]
    fn other_nodes_balancers_pass_the_groups_of_replicas_here() {
        let mut t = tenant();
        let forward = |t: &TenantNetns| lines_of_chain(&render_tenant_rules(t), "forward");
        assert!(!forward(&t).iter().any(|l| l.contains("saddr 172.16.0.3")));
        t.bridges[0].peer_node_ips =
            vec![Ipv4Addr::new(172, 16, 0, 3), Ipv4Addr::new(172, 16, 0, 4)];
        let rules = forward(&t);
        let accept = "iifname \"br0\" ip saddr { 172.16.0.3, 172.16.0.4 } accept";
        let at = rules.iter().position(|l| l == accept).expect("the accept");
        let groups = rules
            .iter()
            .position(|l| l == "ip daddr vmap @sg_ingress")
            .unwrap();
        assert!(at < groups, "{rules:?}");
    }

    #[test]
    fn tenant_tables_are_replaced_in_one_transaction() {
        let text = render_tenant_rules(&tenant());
        let heads: Vec<&str> = text.lines().filter(|l| !l.starts_with('\t')).collect();
        assert_eq!(
            heads,
            [
                "add table inet hyper",
                "delete table inet hyper",
                "table inet hyper {",
                "}",
                "add table bridge hyper",
                "delete table bridge hyper",
                "table bridge hyper {",
                "}"
            ]
        );
    }

    #[test]
    fn tenant_input_only_answers_dns_and_ping_on_gateways_and_service_ports_on_vips() {
        let input = lines_of_chain(&render_tenant_rules(&tenant()), "input");
        assert_eq!(input, [
            "type filter hook input priority filter; policy drop;",
            "iifname \"lo\" accept",
            "ct state established,related accept",
            "iifname { \"br0\", \"br1\" } ip daddr { 172.16.0.1, 10.9.0.1 } udp dport 53 accept",
            "iifname { \"br0\", \"br1\" } ip daddr { 172.16.0.1, 10.9.0.1 } tcp dport 53 accept",
            "iifname { \"br0\", \"br1\" } ip daddr { 172.16.0.1, 10.9.0.1 } icmp type echo-request accept",
            // A VIP from its own bridge only, and from outside only as DNATed from its FIP.
            "iifname \"br0\" ip daddr 172.16.0.10 tcp dport { 80, 443 } accept",
            "iifname \"up0\" ip daddr 172.16.0.10 tcp dport { 80, 443 } ct status dnat accept",
            "iifname \"br0\" ip daddr 172.16.0.10 udp dport 53 accept",
            "iifname \"up0\" ip daddr 172.16.0.10 udp dport 53 ct status dnat accept",
            "iifname \"br1\" ip daddr 10.9.0.10 tcp dport 8000 accept",
        ]);
    }

    #[test]
    fn tenant_forward_isolates_networks_then_dispatches_security_groups() {
        let text = render_tenant_rules(&tenant());
        assert_eq!(
            lines_of_chain(&text, "forward"),
            [
                "type filter hook forward priority filter; policy accept;",
                "ct state established,related accept",
                "ct state invalid drop",
                "iifname \"up0\" oifname \"up0\" drop",
                "iifname \"up0\" ct status & dnat != dnat drop",
                "iifname \"br0\" oifname \"br1\" drop",
                "iifname \"br1\" oifname \"br0\" drop",
                // A service's connections balanced by the kernel, as those the balancer copies.
                "iifname \"br0\" oifname \"br0\" ct status dnat ct original ip daddr 172.16.0.10 accept",
                "iifname \"br1\" oifname \"br1\" ct status dnat ct original ip daddr 10.9.0.10 accept",
                "ip saddr vmap @sg_egress",
                "ip daddr vmap @sg_ingress",
            ]
        );
        // Only the endpoint with groups is dispatched; the open one falls through to accept.
        assert!(text.contains("elements = { 172.16.0.2 : jump eg-tapaaaaaaaaaaaa }"));
        assert!(text.contains("elements = { 172.16.0.2 : jump in-tapaaaaaaaaaaaa }"));
        assert!(!text.contains("tapbbbbbbbbbbbb :"));
    }

    #[test]
    fn security_group_rules_allow_by_returning_and_drop_the_rest() {
        let text = render_tenant_rules(&tenant());
        assert_eq!(
            lines_of_chain(&text, "in-tapaaaaaaaaaaaa"),
            [
                "tcp dport 80 return",
                "ip saddr { 172.16.0.3, 172.16.0.4 } return",
                // The icmp rule's remote group is empty: it matches nothing and is left out.
                "drop",
            ]
        );
        assert_eq!(
            lines_of_chain(&text, "eg-tapaaaaaaaaaaaa"),
            ["ip daddr 10.0.0.0/8 udp dport 1000-2000 return", "drop"]
        );
    }

    #[test]
    fn groups_without_egress_rules_mean_no_outbound() {
        let rules = vec![Rule {
            direction: Direction::Ingress,
            protocol: None,
            port_min: None,
            port_max: None,
            remote: Remote::Any,
        }];
        assert_eq!(security_group_chain(&rules, Direction::Egress), ["drop"]);
        assert_eq!(
            security_group_chain(&rules, Direction::Ingress),
            ["return", "drop"]
        );
    }

    #[test]
    fn tenant_nat_publishes_ports_and_fips_service_fips_first_and_hairpins() {
        let text = render_tenant_rules(&tenant());
        assert_eq!(
            lines_of_chain(&text, "prerouting")[1..],
            [
                "ip daddr 198.51.100.8 tcp dport { 80, 443 } dnat ip to 172.16.0.10",
                "ip daddr 198.51.100.8 udp dport 53 dnat ip to 172.16.0.10",
                "iifname \"up0\" tcp dport 8080 dnat ip to 172.16.0.2:80",
                "ip daddr 198.51.100.7 tcp dport 8080 dnat ip to 172.16.0.2:80",
                "iifname \"up0\" tcp dport 8080 dnat ip to 172.16.0.3:80",
            ]
        );
        assert_eq!(
            lines_of_chain(&text, "postrouting")[1..],
            [
                "oifname \"up0\" ip saddr 172.16.0.2 snat ip to 198.51.100.7",
                "oifname \"br0\" ip saddr 172.16.0.0/16 ip daddr 172.16.0.0/16 ct status dnat masquerade",
                "oifname \"br1\" ip saddr 10.9.0.0/24 ip daddr 10.9.0.0/24 ct status dnat masquerade",
                "oifname \"up0\" ip saddr { 172.16.0.0/16, 10.9.0.0/24 } masquerade",
            ]
        );
    }

    fn bridge_table(text: &str) -> &str {
        &text[text.find("table bridge hyper {").expect("bridge table")..]
    }

    #[test]
    fn taps_may_only_send_as_their_endpoint() {
        let rendered = render_tenant_rules(&tenant());
        let text = bridge_table(&rendered);
        assert!(text.contains("elements = { \"tapaaaaaaaaaaaa\" . 02:00:00:00:00:02, \"tapbbbbbbbbbbbb\" . 02:00:00:00:00:03 }"), "{text}");
        assert!(
            text.contains(
                "elements = { \"tapaaaaaaaaaaaa\" . 172.16.0.2, \"tapbbbbbbbbbbbb\" . 172.16.0.3 }"
            ),
            "{text}"
        );
        assert_eq!(
            lines_of_chain(text, "prerouting")[1..],
            [
                "iifname != \"tap*\" accept",
                "iifname . ether saddr != @tap_mac drop",
                "ether type arp iifname . arp saddr ether != @tap_mac drop",
                "ether type arp iifname . arp saddr ip != @tap_ip drop",
                "ether type ip iifname . ip saddr != @tap_ip drop",
                "ether type != { ip, arp } drop",
            ]
        );
    }

    #[test]
    fn node_publishes_ports_and_keeps_tenants_apart() {
        let mut t = tenant();
        t.bridges[0].endpoints[1].ports[0] = PortMapping {
            proto: Proto::Udp,
            host_ip: Some(Ipv4Addr::new(192, 0, 2, 1)),
            host_port: 5353,
            container_port: 53,
        };
        let node = NodeNet {
            transit_cidr: "100.127.0.0/16".parse().unwrap(),
            fips_elsewhere: vec![],
        };
        let text = render_node_rules(&node, &[&t]);
        let publish = [
            "fib daddr type local tcp dport 8080 dnat ip to 100.127.0.1:8080",
            "ip daddr 192.0.2.1 udp dport 5353 dnat ip to 100.127.0.1:5353",
        ];
        assert_eq!(lines_of_chain(&text, "prerouting")[1..], publish);
        assert_eq!(lines_of_chain(&text, "output")[1..], publish);
        assert_eq!(
            lines_of_chain(&text, "postrouting")[1..],
            [
                "oifname \"hv-*\" ip saddr 127.0.0.0/8 masquerade",
                "ip saddr 100.127.0.0/16 oifname != \"hv-*\" masquerade",
            ]
        );
        assert_eq!(
            lines_of_chain(&text, "forward")[1..],
            ["iifname \"hv-*\" oifname \"hv-*\" drop"]
        );
        assert_eq!(
            lines_of_chain(&text, "input")[1..],
            [
                "iifname \"hv-*\" ct state established,related accept",
                "iifname \"hv-*\" drop"
            ]
        );
        let (peer, host_if) = (Ipv4Addr::new(100, 127, 0, 1), Some("hv-0"));
        let route = |last: u8, via: Ipv4Addr, dev: Option<&'static str>| FipRoute {
            fip: Ipv4Addr::new(198, 51, 100, last),
            via,
            dev,
        };
        assert_eq!(
            fip_routes(&node, &[&t]),
            [route(7, peer, host_if), route(8, peer, host_if)]
        );
        // Another node's FIPs go to that node; one held here stays here.
        let elsewhere = |last: u8| FipElsewhere {
            fip: Ipv4Addr::new(198, 51, 100, last),
            node_ip: Ipv4Addr::new(203, 0, 113, 2),
        };
        let fleet = NodeNet {
            fips_elsewhere: vec![elsewhere(8), elsewhere(9)],
            ..node.clone()
        };
        assert_eq!(
            fip_routes(&fleet, &[&t]),
            [
                route(7, peer, host_if),
                route(8, peer, host_if),
                route(9, Ipv4Addr::new(203, 0, 113, 2), None)
            ]
        );
    }

    #[test]
    fn empty_tenant_renders_valid_shapes() {
        let mut t = tenant();
        t.bridges.clear();
        let text = render_tenant_rules(&t);
        assert!(!text.contains("elements"));
        assert!(!text.contains("{  }"));
        // No tap is in the sets: none sends.
        assert!(lines_of_chain(bridge_table(&text), "prerouting")
            .contains(&"iifname . ether saddr != @tap_mac drop".to_string()));
    }
}
