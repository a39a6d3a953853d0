//! Links, addresses, routes and sysctls of a tenant netns and of its transit link to the node.
//! Every step checks or replaces, so running it again (e.g. after a hyperd restart) is harmless.

use std::path::Path;

use crate::error::NetError;
use crate::exec::in_netns;
use crate::installed;
use crate::iproute::{ip, ip_ignoring_absent, link_exists, link_names, sync_ipv4_addrs};
use crate::model::{mac_text, Bridge, TenantNetns, Transit, TENANT_UPLINK};
use crate::netns::{create_netns, remove_netns};
use crate::overlay::remove_overlays;
use crate::sysctl;

/// Makes the tenant netns match `t`: namespace, `lo`, sysctls, transit link with its default
/// route, and exactly the bridges of `t` (others are deleted) with their gateway and service
/// addresses. Taps of `t` that exist are put back on their bridge if they left it (a bridge
/// deleted and made again has no ports); they are not touched beyond that.
/// Runs in the caller's namespace as the node's.
pub fn ensure_netns(t: &TenantNetns) -> Result<(), NetError> {
    t.validate()?;
    let ns = t.netns_path.as_path();
    create_netns(ns)?;
    ip(Some(ns), "bring up lo", &["link", "set", "lo", "up"])?;
    in_netns(ns, tenant_sysctls)??;
    ensure_transit(ns, &t.transit)?;
    sync_bridges(ns, &t.bridges)?;
    reattach_taps(ns, &t.bridges)
}

/// What [`ensure_netns`] builds the namespace from: `t` without what is plugged into its
/// bridges (the endpoints: taps come and go with every start, and it leaves them alone), but
/// with which bridges pass bridged frames through the inet hooks (which their endpoints'
/// security groups decide). A caller may skip `ensure_netns` while this stays the same, and
/// miss nothing: the bridges' service addresses are in it, and so is whatever the model gains,
/// unless taken out here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetnsInputs {
    netns: TenantNetns,
    filtering_bridges: Vec<String>,
}

pub fn netns_inputs(t: &TenantNetns) -> NetnsInputs {
    let mut netns = t.clone();
    for bridge in &mut netns.bridges {
        bridge.endpoints.clear();
    }
    let filtering_bridges = t
        .bridges
        .iter()
        .filter(|b| b.filters_bridged_frames())
        .map(|b| b.ifname.clone())
        .collect();
    NetnsInputs {
        netns,
        filtering_bridges,
    }
}

/// Removes the overlays, the transit link and the namespace file. Tolerates any part being gone
/// already.
pub fn destroy_netns(t: &TenantNetns) -> Result<(), NetError> {
    // Not left to die with the namespace: that waits for its last user, and meanwhile the
    // VXLAN ports would hold their VNIs on the node and keep taking in frames.
    remove_overlays(t)?;
    ip_ignoring_absent(
        None,
        "remove transit link",
        &["link", "del", &t.transit.host_if],
    )?;
    remove_netns(&t.netns_path)
}

fn tenant_sysctls() -> Result<(), NetError> {
    sysctl::set("net/ipv4/ip_forward", "1")?;
    // Bridged IPv4 skips the inet hooks unless its bridge asks for them (see
    // `Bridge::filters_bridged_frames`); routed IPv4 always crosses them.
    sysctl::set("net/bridge/bridge-nf-call-iptables", "0")?;
    // Tenant networks are IPv4 only; no link-local chatter, and taps inherit `default`.
    sysctl::set("net/ipv6/conf/all/disable_ipv6", "1")?;
    sysctl::set("net/ipv6/conf/default/disable_ipv6", "1")?;
    // After a security-group change we delete conntrack entries; the flows still allowed must be
    // picked up mid-stream again.
    sysctl::set("net/netfilter/nf_conntrack_tcp_loose", "1")
}

fn ensure_transit(ns: &Path, transit: &Transit) -> Result<(), NetError> {
    let host_if = transit.host_if.as_str();
    // A veth pair lives or dies whole, but an end can pair with something else: the namespace
    // was recreated under a live node end, or the transit index changed. Then start over
    // (deleting either end takes its old peer with it).
    if !(link_exists(None, host_if)? && link_exists(Some(ns), TENANT_UPLINK)?) {
        ip_ignoring_absent(None, "remove stale transit link", &["link", "del", host_if])?;
        ip_ignoring_absent(
            Some(ns),
            "remove stale uplink",
            &["link", "del", TENANT_UPLINK],
        )?;
        let ns_arg = ns.to_string_lossy();
        ip(
            None,
            "create transit link",
            &[
                "link",
                "add",
                host_if,
                "type",
                "veth",
                "peer",
                "name",
                TENANT_UPLINK,
                "netns",
                &ns_arg,
            ],
        )?;
    }
    sync_ipv4_addrs(None, host_if, &[format!("{}/31", transit.host_ip)])?;
    ip(
        None,
        "bring up transit link",
        &["link", "set", host_if, "up"],
    )?;
    sync_ipv4_addrs(
        Some(ns),
        TENANT_UPLINK,
        &[format!("{}/31", transit.peer_ip)],
    )?;
    ip(
        Some(ns),
        "bring up uplink",
        &["link", "set", TENANT_UPLINK, "up"],
    )?;
    let gateway = transit.host_ip.to_string();
    ip(
        Some(ns),
        "default route",
        &[
            "route",
            "replace",
            "default",
            "via",
            &gateway,
            "dev",
            TENANT_UPLINK,
        ],
    )?;
    sysctl::set("net/ipv4/ip_forward", "1")?;
    // Published ports reached via 127.0.0.1 are DNATed out of this link with that source.
    sysctl::set(&format!("net/ipv4/conf/{host_if}/route_localnet"), "1")
}

fn sync_bridges(ns: &Path, bridges: &[Bridge]) -> Result<(), NetError> {
    for stale in link_names(Some(ns), &["type", "bridge"])? {
        if !bridges.iter().any(|b| b.ifname == stale) {
            ip_ignoring_absent(Some(ns), "remove bridge", &["link", "del", &stale])?;
        }
    }
    let installed = installed::links(Some(ns))?;
    for bridge in bridges {
        let name = bridge.ifname.as_str();
        if !link_exists(Some(ns), name)? {
            // No STP and no forward delay: ports forward at once.
            let args = [
                "link",
                "add",
                name,
                "type",
                "bridge",
                "stp_state",
                "0",
                "forward_delay",
                "0",
            ];
            ip(Some(ns), "create bridge", &args)?;
        }
        let (mtu, mac) = (bridge.mtu.to_string(), mac_text(&bridge.mac()));
        // nf_call_iptables on: this bridge's bridged frames cross the inet hooks, whatever
        // the namespace's sysctl says; off: neither says so, and they skip them.
        let filtering = if bridge.filters_bridged_frames() {
            "1"
        } else {
            "0"
        };
        let args = [
            "link",
            "set",
            name,
            "mtu",
            &mtu,
            "type",
            "bridge",
            "nf_call_iptables",
            filtering,
        ];
        ip(Some(ns), "set bridge mtu and filtering", &args)?;
        // A set address stays put; an unset one follows the lowest port MAC as taps come and go,
        // and the guests' ARP entries for the gateway would go stale. Set only when it differs:
        // setting it, even to the same, flushes the bridge's neighbours, the overlay's too.
        let current = installed.iter().find(|l| l.name == name).map(|l| &l.mac);
        if current != Some(&mac) {
            let args = ["link", "set", name, "address", &mac];
            ip(Some(ns), "set bridge address", &args)?;
        }
        sync_ipv4_addrs(Some(ns), name, &bridge.addresses())?;
        ip(Some(ns), "bring up bridge", &["link", "set", name, "up"])?;
    }
    Ok(())
}

fn reattach_taps(ns: &Path, bridges: &[Bridge]) -> Result<(), NetError> {
    let links = installed::links(Some(ns))?;
    for bridge in bridges {
        for endpoint in &bridge.endpoints {
            let detached = links.iter().any(|l| {
                l.name == endpoint.tap && l.master.as_deref() != Some(bridge.ifname.as_str())
            });
            if detached {
                let args = ["link", "set", &endpoint.tap, "master", &bridge.ifname];
                ip(Some(ns), "put tap back on its bridge", &args)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::model::{Endpoint, ServiceVip};

    fn tenant() -> TenantNetns {
        TenantNetns {
            name: "t0".into(),
            netns_path: "/nowhere/netns".into(),
            transit: Transit {
                host_if: "hv-0".into(),
                host_ip: Ipv4Addr::new(100, 127, 0, 0),
                peer_ip: Ipv4Addr::new(100, 127, 0, 1),
            },
            bridges: vec![Bridge {
                ifname: "br0".into(),
                subnet: "172.16.0.0/16".parse().unwrap(),
                gateway: Ipv4Addr::new(172, 16, 0, 1),
                mtu: crate::model::DEFAULT_MTU,
                node_ip: None,
                peer_node_ips: vec![],
                endpoints: vec![],
                services: vec![],
            }],
        }
    }

    #[test]
    fn a_service_address_and_a_guarded_tap_are_inputs_of_the_namespace_and_a_tap_is_not() {
        let before = tenant();
        let mut with_tap = before.clone();
        with_tap.bridges[0].endpoints.push(Endpoint {
            tap: "tap0123456789ab".into(),
            mac: [2, 0x42, 172, 16, 0, 2],
            ip: Ipv4Addr::new(172, 16, 0, 2),
            ports: vec![],
            fip: None,
            security_groups: None,
        });
        assert_eq!(netns_inputs(&with_tap), netns_inputs(&before));
        // A security group on it is: its bridge's frames must then cross the inet hooks.
        let mut guarded = with_tap.clone();
        guarded.bridges[0].endpoints[0].security_groups = Some(vec![]);
        assert_ne!(netns_inputs(&guarded), netns_inputs(&with_tap));
        // A service taking the address the container had (or any other) is a change the
        // namespace must see: the VIP goes on the bridge.
        let mut with_service = with_tap.clone();
        with_service.bridges[0].endpoints.clear();
        with_service.bridges[0].services.push(ServiceVip {
            ip: Ipv4Addr::new(172, 16, 0, 2),
            ports: vec![(crate::model::Proto::Tcp, 80)],
            fip: None,
        });
        assert_ne!(netns_inputs(&with_service), netns_inputs(&before));
        let mut moved = with_service.clone();
        moved.bridges[0].services[0].ip = Ipv4Addr::new(172, 16, 0, 3);
        assert_ne!(netns_inputs(&moved), netns_inputs(&with_service));
    }
}
