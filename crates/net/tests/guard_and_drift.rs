//! The node's guard and reading back what is installed, in a sandbox of namespaces: the guard
//! alone keeps a guest off the node's own addresses; what the kernel lists right after an
//! apply shows no drift, and what is broken by hand is named, then repaired by the same calls.

mod support;

use net::drift::{self, Drift};
use net::{
    apply_node_rules, apply_tenant_rules, destroy_netns, ensure_netns, install_guard,
    installed_in_tenant, installed_on_node, remove_node_rules, run_in_netns, TenantNetns,
};
use support::*;

fn nft(netns: &std::path::Path, args: &[&str]) {
    run_in_netns(netns, std::process::Command::new("nft").args(args)).unwrap();
}

/// Every difference between the model and the kernel, on the node's thread.
fn drifts(sandbox: &Sandbox, t: &TenantNetns, applied: &net::Tables) -> Vec<Drift> {
    sandbox.on_node(|| {
        let node = installed_on_node().unwrap();
        let inside = installed_in_tenant(t).unwrap();
        let mut found = drift::tenant_links(t, &node, inside.as_ref());
        found.extend(drift::node_fip_routes(&sandbox.net, &[t], &node));
        found.extend(drift::tables(applied, &inside.unwrap().tables));
        found
    })
}

/// Builds the tenant and the node's side; the tenant's tables as listed right after.
fn apply(sandbox: &Sandbox, t: &TenantNetns) -> net::Tables {
    sandbox.on_node(|| {
        ensure_netns(t).unwrap();
        let tables = apply_tenant_rules(t, &[]).unwrap();
        apply_node_rules(&sandbox.net, &[t]).unwrap();
        tables
    })
}

#[test]
fn the_guard_alone_keeps_guests_off_the_node() {
    let mut sandbox = Sandbox::new("guard");
    let t = sandbox.tenant(
        "a",
        0,
        vec![bridge(
            "br0",
            "172.16.0.0/16",
            vec![endpoint(1, "172.16.0.2")],
        )],
    );
    sandbox.on_node(|| {
        install_guard(&[]).unwrap();
        ensure_netns(&t).unwrap();
        apply_tenant_rules(&t, &[]).unwrap();
        apply_node_rules(&sandbox.net, &[&t]).unwrap();
    });
    let guest = sandbox.attach_guest(&t, &t.bridges[0], &t.bridges[0].endpoints[0]);
    let _service = Server::start(&sandbox.node, 7000);
    assert!(connect(&sandbox.client, NODE_IP, 7000).is_some());
    assert!(connect(&guest, NODE_IP, 7000).is_none());

    // hyperd's node table gone: the guard still drops.
    sandbox.on_node(|| remove_node_rules().unwrap());
    assert!(connect(&guest, NODE_IP, 7000).is_none());
    assert!(connect(&guest, t.transit.host_ip, 7000).is_none());
    // And it was the guard: without it the node is open (what the node table alone failed).
    nft(&sandbox.node, &["delete", "table", "inet", "hyper-guard"]);
    assert!(connect(&guest, NODE_IP, 7000).is_some());
    sandbox.on_node(|| destroy_netns(&t).unwrap());
}

#[test]
fn drift_is_named_and_repaired() {
    let mut sandbox = Sandbox::new("drift");
    let mut t = sandbox.tenant(
        "a",
        2,
        vec![bridge(
            "br0",
            "172.16.0.0/16",
            vec![endpoint(1, "172.16.0.2")],
        )],
    );
    t.bridges[0].endpoints[0].fip = Some("198.51.100.3".parse().unwrap());
    let applied = apply(&sandbox, &t);
    assert_eq!(
        applied.keys().collect::<Vec<_>>(),
        ["bridge hyper", "inet hyper"]
    );
    sandbox.attach_guest(&t, &t.bridges[0], &t.bridges[0].endpoints[0]);
    assert_eq!(drifts(&sandbox, &t, &applied), []);

    let ns = t.netns_path.clone();
    ip(&ns, &["addr", "del", "172.16.0.1/16", "dev", "br0"]);
    ip(&ns, &["link", "set", "tap000000000001", "nomaster"]);
    ip(&ns, &["route", "del", "default"]);
    ip(
        &sandbox.node,
        &["route", "del", "198.51.100.3/32", "proto", "213"],
    );
    ip(&sandbox.node, &["link", "set", "hv-2", "down"]);
    nft(&ns, &["delete", "table", "bridge", "hyper"]);
    nft(&ns, &["add", "chain", "inet", "hyper", "extra"]);
    let found: Vec<String> = drifts(&sandbox, &t, &applied)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        found,
        [
            "link hv-2 is down",
            "route default via 100.127.0.4 dev up0 is missing",
            "br0 lacks address 172.16.0.1/16",
            "tap000000000001 is not a port of br0",
            "route 198.51.100.3 via 100.127.0.5 dev hv-2 is missing",
            "nftables table bridge hyper is missing",
            "nftables table inet hyper was changed",
        ]
    );
    let applied = apply(&sandbox, &t);
    assert_eq!(drifts(&sandbox, &t, &applied), []);
    sandbox.on_node(|| {
        destroy_netns(&t).unwrap();
        remove_node_rules().unwrap();
    });
}
