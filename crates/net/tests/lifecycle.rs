//! Building, rebuilding and tearing down: everything is idempotent, follows the model, tolerates
//! half-gone state, leaves the node's other tables alone and leaves nothing behind.

mod support;

use std::process::Command;

use net::{
    apply_node_rules, apply_tenant_rules, destroy_netns, ensure_netns, remove_node_rules,
    run_in_netns, TenantNetns,
};
use support::*;

fn nft_tables(netns: &std::path::Path) -> String {
    run_in_netns(netns, Command::new("nft").args(["list", "tables"])).unwrap()
}

fn bridges_in(t: &TenantNetns) -> String {
    ip(&t.netns_path, &["-br", "link", "show", "type", "bridge"])
}

#[test]
fn rebuilds_follow_the_model_and_teardown_is_complete() {
    let sandbox = Sandbox::new("lifecycle");
    run_in_netns(
        &sandbox.node,
        Command::new("nft").args(["add", "table", "inet", "someone-else"]),
    )
    .unwrap();
    let mut t = sandbox.tenant("a", 5, vec![bridge("br0", "172.16.0.0/16", vec![])]);
    t.bridges[0].endpoints.push(endpoint(1, "172.16.0.2"));
    t.bridges[0].endpoints[0].fip = Some("198.51.100.3".parse().unwrap());
    let empty = sandbox.tenant("empty", 6, vec![]);

    sandbox.on_node(|| {
        for _ in 0..2 {
            ensure_netns(&t).unwrap();
            ensure_netns(&empty).unwrap();
            apply_tenant_rules(&t, &[t.bridges[0].endpoints[0].ip]).unwrap();
            apply_tenant_rules(&empty, &[]).unwrap();
            apply_node_rules(&sandbox.net, &[&t, &empty]).unwrap();
        }
    });
    assert!(bridges_in(&t).contains("br0"));
    assert!(ip(&t.netns_path, &["-4", "addr", "show", "dev", "br0"]).contains("172.16.0.1/16"));
    let br0 = ip(&t.netns_path, &["link", "show", "br0"]);
    assert!(
        br0.contains("mtu 1450") && br0.contains("link/ether 0a:48:ac:10:00:01"),
        "{br0}"
    );
    assert!(ip(&t.netns_path, &["route", "show", "default"]).contains("via 100.127.0.10 dev up0"));
    assert!(ip(&sandbox.node, &["-4", "addr", "show", "dev", "hv-5"]).contains("100.127.0.10/31"));
    assert_eq!(
        ip(&sandbox.node, &["route", "show", "proto", "213"]).trim(),
        "198.51.100.3 via 100.127.0.11 dev hv-5"
    );
    let sysctl = |key: &str| {
        std::fs::read_to_string(format!("/proc/sys/{key}"))
            .unwrap()
            .trim()
            .to_string()
    };
    let tenant_sysctls = net::in_netns(&t.netns_path, || {
        [
            "net/ipv4/ip_forward",
            "net/bridge/bridge-nf-call-iptables",
            "net/netfilter/nf_conntrack_tcp_loose",
        ]
        .map(sysctl)
    })
    .unwrap();
    assert_eq!(tenant_sysctls, ["1", "0", "1"]);
    // Bridged frames cross the inet hooks only on a bridge with a guarded endpoint.
    let filtering = |t: &TenantNetns| {
        ip(&t.netns_path, &["-d", "link", "show", "br0"]).contains("nf_call_iptables 1")
    };
    assert!(!filtering(&t));
    t.bridges[0].endpoints[0].security_groups = Some(vec![]);
    sandbox.on_node(|| ensure_netns(&t).unwrap());
    assert!(filtering(&t));
    t.bridges[0].endpoints[0].security_groups = None;
    sandbox.on_node(|| ensure_netns(&t).unwrap());
    assert!(!filtering(&t));
    assert_eq!(
        sandbox.on_node(|| sysctl("net/ipv4/conf/hv-5/route_localnet")),
        "1"
    );

    // The model changes: br0 goes, br1 comes, the transit link moves to another index.
    t.bridges = vec![bridge("br1", "10.2.0.0/24", vec![])];
    t.transit = net::transit_for(&sandbox.net, 7).unwrap();
    sandbox.on_node(|| {
        ensure_netns(&t).unwrap();
        apply_tenant_rules(&t, &[]).unwrap();
        apply_node_rules(&sandbox.net, &[&t]).unwrap();
    });
    let bridges = bridges_in(&t);
    assert!(
        bridges.contains("br1") && !bridges.contains("br0"),
        "{bridges}"
    );
    assert!(ip(&sandbox.node, &["link", "show", "dev", "hv-7"]).contains("hv-7"));
    assert!(ip(&t.netns_path, &["route", "show", "default"]).contains("via 100.127.0.14 dev up0"));
    assert_eq!(
        ip(&sandbox.node, &["route", "show", "proto", "213"]),
        "",
        "the stale FIP route is gone"
    );

    // Half-gone state: the node side of the transit link vanished; ensure repairs it.
    ip(&sandbox.node, &["link", "del", "hv-7"]);
    sandbox.on_node(|| ensure_netns(&t).unwrap());
    assert!(ip(&sandbox.node, &["-4", "addr", "show", "dev", "hv-7"]).contains("100.127.0.14/31"));

    sandbox.on_node(|| {
        for _ in 0..2 {
            destroy_netns(&t).unwrap();
            destroy_netns(&empty).unwrap();
            remove_node_rules().unwrap();
        }
    });
    assert!(!t.netns_path.exists() && !empty.netns_path.exists());
    let links = ip(&sandbox.node, &["-br", "link"]);
    assert!(!links.contains("hv-"), "{links}");
    let tables = nft_tables(&sandbox.node);
    assert!(
        tables.contains("someone-else") && !tables.contains("hyper"),
        "{tables}"
    );
}

#[test]
fn bad_models_are_refused_before_touching_anything() {
    let sandbox = Sandbox::new("invalid");
    let mut t = sandbox.tenant("a", 0, vec![bridge("br0", "172.16.0.0/16", vec![])]);
    t.bridges[0].gateway = "10.0.0.1".parse().unwrap();
    let err = sandbox.on_node(|| ensure_netns(&t)).unwrap_err();
    assert!(
        err.to_string()
            .contains("gateway 10.0.0.1 outside 172.16.0.0/16"),
        "{err}"
    );
    assert!(!t.netns_path.exists());
    t.bridges[0].gateway = "172.16.0.1".parse().unwrap();
    t.transit.host_if = "eth0".into();
    assert!(sandbox.on_node(|| ensure_netns(&t)).is_err());
}

#[test]
fn tool_errors_carry_their_stderr() {
    let sandbox = Sandbox::new("errors");
    let t = sandbox.tenant("a", 0, vec![]);
    // No namespace was ever made at this path.
    let err = apply_tenant_rules(&t, &[]).unwrap_err().to_string();
    assert!(err.contains("open network namespace"), "{err}");
    let err = run_in_netns(
        &sandbox.node,
        Command::new("ip").args(["link", "del", "nothere"]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("Cannot find device \"nothere\""), "{err}");
}
