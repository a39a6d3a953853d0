//! The node's guard against its tenant links: a table of its own (`inet hyper-guard`) that
//! drops whatever a transit link (`hv-*`) brings to the node itself, unless it answers the
//! node's own traffic, and whatever would cross from one tenant to another through the node.
//!
//! The node's `inet hyper` table says the same, but hyperd re-renders that one with every
//! published port and removes it when no tenant is left; the guard never changes, so it is
//! installed once at hyperd's start, before any tenant link is touched, and is never removed
//! (the links, and the VMs behind them, outlive hyperd). In nftables a drop in any base chain
//! is final whatever other tables accept, so with `inet hyper` gone, stale or wrong, tenants
//! still cannot reach the node's own addresses (its transit ends, its LAN and loopback
//! addresses). Nothing a tenant needs arrives there: its DNS server and balancer live in its
//! own namespace, and published ports and floating IPs are forwarded, not delivered.
//!
//! In a fleet it also keeps tenants off the other nodes (nothing of a tenant's goes to a
//! node's own address: its overlay traffic leaves from the node, not from the tenant), and
//! takes VXLAN from the fleet's nodes only: a frame from anyone else could claim to be any
//! tenant's. Its table is rendered again, in one transaction, when the fleet's addresses
//! change.

use std::net::Ipv4Addr;

use crate::model::TRANSIT_PREFIX;
use crate::overlay::VXLAN_PORT;
use crate::ruleset::{chain, quoted, replace_named_table};

/// The guard's table, as `nft list` names it.
pub const GUARD_TABLE: &str = "inet hyper-guard";

/// Before the filter chains of every other table: nothing else sees what the guard drops.
const PRIORITY: &str = "filter - 10";

/// The guard, replacing any earlier one in one transaction; `fleet`: the addresses of the
/// fleet's nodes (none off a fleet's network).
pub fn render_guard(fleet: &[Ipv4Addr]) -> String {
    let transit = quoted(&format!("{TRANSIT_PREFIX}*"));
    let nodes = match fleet {
        [] => None,
        addresses => Some(format!(
            "{{ {} }}",
            addresses
                .iter()
                .map(Ipv4Addr::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    };
    let mut input = vec![
        // Replies to the node's own connections (published ports reached on 127.0.0.1).
        format!("iifname {transit} ct state established,related accept"),
        format!("iifname {transit} drop"),
    ];
    let mut forward = vec![format!("iifname {transit} oifname {transit} drop")];
    if let Some(nodes) = &nodes {
        input.push(format!("udp dport {VXLAN_PORT} ip saddr != {nodes} drop"));
        forward.push(format!("iifname {transit} ip daddr {nodes} drop"));
    }
    let mut body = String::new();
    chain(
        &mut body,
        "input",
        Some(&format!(
            "type filter hook input priority {PRIORITY}; policy accept;"
        )),
        &input,
    );
    chain(
        &mut body,
        "forward",
        Some(&format!(
            "type filter hook forward priority {PRIORITY}; policy accept;"
        )),
        &forward,
    );
    let (family, name) = GUARD_TABLE.split_once(' ').expect("family and name");
    let mut out = String::new();
    replace_named_table(&mut out, family, name, &body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_drops_what_transit_links_bring_to_the_node_in_one_transaction() {
        let text = render_guard(&[]);
        let mut lines = text.lines().map(str::trim);
        assert_eq!(lines.next(), Some("add table inet hyper-guard"));
        assert_eq!(lines.next(), Some("delete table inet hyper-guard"));
        assert_eq!(lines.next(), Some("table inet hyper-guard {"));
        let rest: Vec<&str> = lines.collect();
        assert_eq!(
            rest,
            [
                "chain input {",
                "type filter hook input priority filter - 10; policy accept;",
                "iifname \"hv-*\" ct state established,related accept",
                "iifname \"hv-*\" drop",
                "}",
                "chain forward {",
                "type filter hook forward priority filter - 10; policy accept;",
                "iifname \"hv-*\" oifname \"hv-*\" drop",
                "}",
                "}",
            ]
        );
    }

    #[test]
    fn in_a_fleet_tenants_stay_off_the_nodes_and_vxlan_comes_from_them_only() {
        let fleet = [
            Ipv4Addr::new(198, 51, 100, 1),
            Ipv4Addr::new(198, 51, 100, 2),
        ];
        let text = render_guard(&fleet);
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for rule in [
            "udp dport 4789 ip saddr != { 198.51.100.1, 198.51.100.2 } drop",
            "iifname \"hv-*\" ip daddr { 198.51.100.1, 198.51.100.2 } drop",
        ] {
            assert!(lines.contains(&rule), "{rule} in\n{text}");
        }
    }
}
