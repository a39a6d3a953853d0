//! The receiving side's filter, in a table of its own in the tenant namespace (`bridge
//! hyper-overlay`), rendered like [`crate::ruleset`] and replaced the same way, in one
//! transaction.
//!
//! A frame that comes out of a VXLAN port passes only with the MAC and IPv4 source (or ARP
//! sender) of a known remote endpoint of that network, and only to an endpoint of this node.
//! The sending node already holds its guests to their identity, so this stops what did not
//! come through a sending node's taps: a forged VXLAN packet on the underlay, or a node that
//! lost its rules. It runs before the bridge learns or forwards anything. A VXLAN port the
//! rules do not know sends nothing. In nftables a drop in any base chain is final, so the
//! tenant's own `bridge hyper` table (whose policy accepts what is not a tap's) cannot undo it.

use crate::model::{mac_text, TenantNetns};
use crate::overlay::model::{Overlay, VXLAN_PREFIX};
use crate::ruleset::{chain, quoted, replace_named_table};

/// The overlay's table, as `nft list` names it.
pub const OVERLAY_TABLE: &str = "bridge hyper-overlay";

/// The table for `overlays`, replacing any earlier one in one transaction.
pub fn render_overlay_rules(t: &TenantNetns, overlays: &[Overlay]) -> String {
    let dispatch: Vec<String> = overlays
        .iter()
        .map(|o| format!("{} : jump {}", quoted(&o.link_name()), filter_chain(o)))
        .collect();
    let mut prerouting = Vec::new();
    if !dispatch.is_empty() {
        prerouting.push(format!("iifname vmap {{ {} }}", dispatch.join(", ")));
    }
    prerouting.push(format!(
        "iifname {} drop",
        quoted(&format!("{VXLAN_PREFIX}*"))
    ));
    let mut body = String::new();
    chain(
        &mut body,
        "prerouting",
        Some("type filter hook prerouting priority filter; policy accept;"),
        &prerouting,
    );
    for o in overlays {
        chain(&mut body, &filter_chain(o), None, &filter_rules(t, o));
    }
    let (family, name) = table_name();
    let mut out = String::new();
    replace_named_table(&mut out, family, name, &body);
    out
}

/// Deletes the table; fine if it is not there.
pub(crate) fn render_overlay_removal() -> String {
    let (family, name) = table_name();
    format!("add table {family} {name}\ndelete table {family} {name}\n")
}

fn table_name() -> (&'static str, &'static str) {
    OVERLAY_TABLE.split_once(' ').expect("family and name")
}

fn filter_chain(o: &Overlay) -> String {
    format!("ov-{}", o.link_name())
}

fn filter_rules(t: &TenantNetns, o: &Overlay) -> Vec<String> {
    // This node's endpoints, and the bridge itself when it has a node address (the balancer's
    // connections to replicas on other nodes are answered to it).
    let local: Vec<String> = t
        .bridges
        .iter()
        .filter(|b| b.ifname == o.bridge)
        .flat_map(|b| {
            let own = b.node_ip.map(|_| b.mac());
            b.endpoints.iter().map(|e| e.mac).chain(own)
        })
        .map(|mac| mac_text(&mac))
        .collect();
    let mut rules = Vec::new();
    if !local.is_empty() && !o.remotes.is_empty() {
        rules.push(format!("ether daddr != {{ {} }} drop", local.join(", ")));
        let ip_pairs = o
            .remotes
            .iter()
            .map(|r| format!("{} . {}", mac_text(&r.mac), r.ip));
        rules.push(format!(
            "ether saddr . ip saddr {{ {} }} accept",
            ip_pairs.collect::<Vec<_>>().join(", ")
        ));
        let arp_triples = o.remotes.iter().map(|r| {
            let mac = mac_text(&r.mac);
            format!("{mac} . {mac} . {}", r.ip)
        });
        rules.push(format!(
            "ether saddr . arp saddr ether . arp saddr ip {{ {} }} accept",
            arp_triples.collect::<Vec<_>>().join(", ")
        ));
    }
    // IPv6, VLAN tags, other sources, and everything when nobody is on either side.
    rules.push("drop".to_string());
    rules
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::model::{Bridge, Endpoint, Transit, DEFAULT_MTU};
    use crate::overlay::model::RemoteEndpoint;

    fn tenant(local_macs: &[[u8; 6]]) -> TenantNetns {
        let endpoints = local_macs
            .iter()
            .enumerate()
            .map(|(i, mac)| Endpoint {
                tap: format!("tap00000000000{i}"),
                mac: *mac,
                ip: Ipv4Addr::new(172, 16, 0, 2 + i as u8),
                ports: vec![],
                fip: None,
                security_groups: None,
            })
            .collect();
        TenantNetns {
            name: "t".into(),
            netns_path: "/nowhere".into(),
            transit: Transit {
                host_if: "hv-0".into(),
                host_ip: Ipv4Addr::new(100, 127, 0, 0),
                peer_ip: Ipv4Addr::new(100, 127, 0, 1),
            },
            bridges: vec![Bridge {
                ifname: "br0".into(),
                subnet: "172.16.0.0/16".parse().unwrap(),
                gateway: Ipv4Addr::new(172, 16, 0, 1),
                mtu: DEFAULT_MTU,
                node_ip: None,
                peer_node_ips: vec![],
                endpoints,
                services: vec![],
            }],
        }
    }

    fn overlay(remotes: &[(u8, u8)]) -> Overlay {
        Overlay {
            bridge: "br0".into(),
            vni: 100,
            local_ip: Ipv4Addr::new(203, 0, 113, 10),
            remotes: remotes
                .iter()
                .map(|(mac, ip)| RemoteEndpoint {
                    mac: [2, 0, 0, 0, 0, *mac],
                    ip: Ipv4Addr::new(172, 16, 0, *ip),
                    node_ip: Ipv4Addr::new(203, 0, 113, 11),
                })
                .collect(),
        }
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().map(str::trim).collect()
    }

    #[test]
    fn only_known_remotes_reach_local_endpoints() {
        let t = tenant(&[[2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 4]]);
        let text = render_overlay_rules(&t, &[overlay(&[(3, 3), (5, 5)])]);
        assert_eq!(
            lines(&text),
            [
                "add table bridge hyper-overlay",
                "delete table bridge hyper-overlay",
                "table bridge hyper-overlay {",
                "chain prerouting {",
                "type filter hook prerouting priority filter; policy accept;",
                "iifname vmap { \"vx100\" : jump ov-vx100 }",
                "iifname \"vx*\" drop",
                "}",
                "chain ov-vx100 {",
                "ether daddr != { 02:00:00:00:00:02, 02:00:00:00:00:04 } drop",
                "ether saddr . ip saddr { 02:00:00:00:00:03 . 172.16.0.3, 02:00:00:00:00:05 . 172.16.0.5 } accept",
                "ether saddr . arp saddr ether . arp saddr ip { 02:00:00:00:00:03 . 02:00:00:00:00:03 . 172.16.0.3, 02:00:00:00:00:05 . 02:00:00:00:00:05 . 172.16.0.5 } accept",
                "drop",
                "}",
                "}",
            ]
        );
    }

    #[test]
    fn a_bridge_with_a_node_address_takes_answers_to_it() {
        let mut t = tenant(&[]);
        t.bridges[0].node_ip = Some(Ipv4Addr::new(172, 16, 0, 9));
        let text = render_overlay_rules(&t, &[overlay(&[(3, 3)])]);
        assert!(
            lines(&text).contains(&"ether daddr != { 0a:4e:ac:10:00:09 } drop"),
            "{text}"
        );
    }

    #[test]
    fn nobody_on_either_side_lets_nothing_through() {
        let no_remotes = render_overlay_rules(&tenant(&[[2, 0, 0, 0, 0, 2]]), &[overlay(&[])]);
        let nobody_here = render_overlay_rules(&tenant(&[]), &[overlay(&[(3, 3)])]);
        for text in [no_remotes, nobody_here] {
            let chain: Vec<&str> = lines(&text)
                .into_iter()
                .skip_while(|l| *l != "chain ov-vx100 {")
                .collect();
            assert_eq!(chain[1..3], ["drop", "}"], "{text}");
        }
        // Without overlays, any VXLAN port is dropped whole.
        let none = render_overlay_rules(&tenant(&[]), &[]);
        assert!(!none.contains("vmap") && none.contains("iifname \"vx*\" drop"));
    }
}
