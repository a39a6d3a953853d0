//! Putting rendered rules and FIP routes into the kernel.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::Path;

use crate::conntrack;
use crate::error::NetError;
use crate::guard::{render_guard, GUARD_TABLE};
use crate::installed::{installed_tables, Tables, NODE_TABLE, TENANT_TABLES};
use crate::iproute::{ip, ip_ignoring_absent, routes_with_proto};
use crate::model::{NodeNet, TenantNetns};
use crate::ruleset::{
    fip_routes, render_node_removal, render_node_rules, render_tenant_rules, FipRoute,
};

/// Route protocol number tagging our FIP routes in the node netns (`ip route show proto 213`),
/// so stale ones can be found. Unassigned in /etc/iproute2/rt_protos.
pub const FIP_ROUTE_PROTO: u8 = 213;

/// Replaces the tenant netns' tables, then forgets the tracked connections of `flush_conntrack_for`
/// (the endpoints whose security groups, ports or FIP changed, and the detached FIP of a service,
/// which ends only the flows that came through it) so the change reaches them at once. Returns
/// the tables as the kernel now lists them (see [`crate::drift::tables`]).
pub fn apply_tenant_rules(
    t: &TenantNetns,
    flush_conntrack_for: &[Ipv4Addr],
) -> Result<Tables, NetError> {
    t.validate()?;
    nft(
        Some(&t.netns_path),
        &format!("apply rules of tenant netns {}", t.name),
        &render_tenant_rules(t),
    )?;
    conntrack::forget(&t.netns_path, flush_conntrack_for)?;
    installed_tables(Some(&t.netns_path), &TENANT_TABLES)
}

/// Replaces the node's table (caller's netns) and makes the FIP routes exactly those of
/// `tenants` and of other nodes (`node.fips_elsewhere`). Returns the table as the kernel now
/// lists it.
pub fn apply_node_rules(node: &NodeNet, tenants: &[&TenantNetns]) -> Result<Tables, NetError> {
    for t in tenants {
        t.validate()?;
    }
    nft(None, "apply node rules", &render_node_rules(node, tenants))?;
    sync_fip_routes(&fip_routes(node, tenants))?;
    installed_tables(None, &[NODE_TABLE])
}

/// Removes the node's table and every FIP route (the guard stays).
pub fn remove_node_rules() -> Result<(), NetError> {
    nft(None, "remove node rules", &render_node_removal())?;
    sync_fip_routes(&[])
}

/// Installs (or puts back) the node's guard in the caller's netns (see [`crate::guard`]).
/// Returns it as the kernel lists it.
pub fn install_guard(fleet: &[std::net::Ipv4Addr]) -> Result<Tables, NetError> {
    nft(None, "install the node's guard", &render_guard(fleet))?;
    installed_tables(None, &[GUARD_TABLE])
}

pub(crate) fn nft(netns: Option<&Path>, what: &str, ruleset: &str) -> Result<(), NetError> {
    crate::nft::run(netns, what, ruleset).map(drop)
}

fn sync_fip_routes(wanted: &[FipRoute]) -> Result<(), NetError> {
    let keep: HashSet<String> = wanted.iter().map(|r| r.fip.to_string()).collect();
    let proto = FIP_ROUTE_PROTO.to_string();
    for stale in routes_with_proto(None, FIP_ROUTE_PROTO)? {
        if !keep.contains(stale.dst.trim_end_matches("/32")) {
            ip_ignoring_absent(
                None,
                "remove stale FIP route",
                &["route", "del", &stale.dst, "proto", &proto],
            )?;
        }
    }
    if wanted.iter().any(|r| r.dev.is_none()) {
        // Passing FIPs on to the nodes that hold them, this node forwards even when no
        // tenant of its own has set forwarding on yet.
        crate::sysctl::set("net/ipv4/ip_forward", "1")?;
    }
    for r in wanted {
        let (dst, via) = (format!("{}/32", r.fip), r.via.to_string());
        let mut args = vec!["route", "replace", &dst, "via", &via];
        args.extend(r.dev.iter().flat_map(|dev| ["dev", *dev]));
        args.extend(["proto", &proto]);
        ip(None, "FIP route", &args)?;
    }
    Ok(())
}
