//! How what is installed differs from what was applied: pure comparisons of the model (and of
//! the tables as listed right after their apply) with [`Installed`], one [`Drift`] per
//! difference, worded for the log.

use std::fmt;
use std::path::PathBuf;

use crate::installed::{Installed, Tables};
use crate::model::{NodeNet, TenantNetns, TENANT_UPLINK};
use crate::overlay::{plan, Overlay, OverlayState};
use crate::ruleset::fip_routes;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    NetnsGone(PathBuf),
    LinkMissing(String),
    LinkDown(String),
    AddressMissing {
        link: String,
        addr: String,
    },
    AddressStray {
        link: String,
        addr: String,
    },
    BridgeStray(String),
    TapDetached {
        tap: String,
        bridge: String,
    },
    RouteMissing(String),
    RouteStray(String),
    TableMissing(String),
    TableChanged(String),
    /// A VXLAN port no overlay asks for.
    LinkStray(String),
    /// A VXLAN port that is not as its overlay says.
    LinkChanged {
        link: String,
        detail: String,
    },
    FdbMissing {
        link: String,
        entry: String,
    },
    FdbStray {
        link: String,
        entry: String,
    },
    NeighbourMissing {
        dev: String,
        ip: String,
        mac: String,
    },
    NeighbourStray {
        dev: String,
        ip: String,
    },
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Drift::NetnsGone(path) => write!(f, "namespace {} is gone", path.display()),
            Drift::LinkMissing(link) => write!(f, "link {link} is missing"),
            Drift::LinkDown(link) => write!(f, "link {link} is down"),
            Drift::AddressMissing { link, addr } => write!(f, "{link} lacks address {addr}"),
            Drift::AddressStray { link, addr } => write!(f, "{link} has stray address {addr}"),
            Drift::BridgeStray(bridge) => write!(f, "stray bridge {bridge}"),
            Drift::TapDetached { tap, bridge } => write!(f, "{tap} is not a port of {bridge}"),
            Drift::RouteMissing(route) => write!(f, "route {route} is missing"),
            Drift::RouteStray(route) => write!(f, "stray route {route}"),
            Drift::TableMissing(table) => write!(f, "nftables table {table} is missing"),
            Drift::TableChanged(table) => write!(f, "nftables table {table} was changed"),
            Drift::LinkStray(link) => write!(f, "stray link {link}"),
            Drift::LinkChanged { link, detail } => write!(f, "link {link} {detail}"),
            Drift::FdbMissing { link, entry } => write!(f, "{link} lacks forwarding entry {entry}"),
            Drift::FdbStray { link, entry } => {
                write!(f, "{link} has stray forwarding entry {entry}")
            }
            Drift::NeighbourMissing { dev, ip, mac } => {
                write!(f, "{dev} lacks overlay neighbour {ip} at {mac}")
            }
            Drift::NeighbourStray { dev, ip } => {
                write!(f, "{dev} has stray overlay neighbour {ip}")
            }
        }
    }
}

/// The tenant's links, addresses and routes, on the node's side (`node`) and inside its
/// namespace (`inside`, `None` when the namespace is gone). Taps are only checked for being
/// ports of their bridge: they come and go with their VMs.
pub fn tenant_links(t: &TenantNetns, node: &Installed, inside: Option<&Installed>) -> Vec<Drift> {
    let transit = &t.transit;
    let mut drifts = link(node, &transit.host_if, &[format!("{}/31", transit.host_ip)]);
    let Some(inside) = inside else {
        drifts.push(Drift::NetnsGone(t.netns_path.clone()));
        return drifts;
    };
    drifts.extend(link(
        inside,
        TENANT_UPLINK,
        &[format!("{}/31", transit.peer_ip)],
    ));
    let gateway = transit.host_ip.to_string();
    let default_route = inside.routes.iter().any(|r| {
        r.dst == "default"
            && r.gateway.as_deref() == Some(gateway.as_str())
            && r.dev.as_deref() == Some(TENANT_UPLINK)
    });
    if !default_route {
        drifts.push(Drift::RouteMissing(format!(
            "default via {gateway} dev {TENANT_UPLINK}"
        )));
    }
    for bridge in &t.bridges {
        drifts.extend(link(inside, &bridge.ifname, &bridge.addresses()));
        for endpoint in &bridge.endpoints {
            let Some(tap) = inside.link(&endpoint.tap) else {
                continue;
            };
            if tap.master.as_deref() != Some(bridge.ifname.as_str()) {
                drifts.push(Drift::TapDetached {
                    tap: endpoint.tap.clone(),
                    bridge: bridge.ifname.clone(),
                });
            }
        }
    }
    for stray in inside.links.iter().filter(|l| {
        l.kind.as_deref() == Some("bridge") && !t.bridges.iter().any(|b| b.ifname == l.name)
    }) {
        drifts.push(Drift::BridgeStray(stray.name.clone()));
    }
    drifts
}

/// `name` exists, is up and carries exactly the IPv4 addresses `want`.
fn link(installed: &Installed, name: &str, want: &[String]) -> Vec<Drift> {
    let Some(link) = installed.link(name) else {
        return vec![Drift::LinkMissing(name.to_string())];
    };
    let mut drifts = Vec::new();
    if !link.up {
        drifts.push(Drift::LinkDown(name.to_string()));
    }
    for addr in want.iter().filter(|a| !link.ipv4.contains(a)) {
        drifts.push(Drift::AddressMissing {
            link: name.to_string(),
            addr: addr.clone(),
        });
    }
    for addr in link.ipv4.iter().filter(|a| !want.contains(a)) {
        drifts.push(Drift::AddressStray {
            link: name.to_string(),
            addr: addr.clone(),
        });
    }
    drifts
}

/// The node's FIP routes (`node.routes`, ours by protocol) against those of `tenants` and of
/// other nodes (`net.fips_elsewhere`).
pub fn node_fip_routes(net: &NodeNet, tenants: &[&TenantNetns], node: &Installed) -> Vec<Drift> {
    let wanted = fip_routes(net, tenants);
    let mut drifts = Vec::new();
    for w in &wanted {
        let (fip, via) = (w.fip.to_string(), w.via.to_string());
        let present = node.routes.iter().any(|r| {
            r.dst.trim_end_matches("/32") == fip
                && r.gateway.as_deref() == Some(via.as_str())
                && (w.dev.is_none() || r.dev.as_deref() == w.dev)
        });
        if !present {
            let dev = w.dev.map(|d| format!(" dev {d}")).unwrap_or_default();
            drifts.push(Drift::RouteMissing(format!("{fip} via {via}{dev}")));
        }
    }
    for route in &node.routes {
        let dst = route.dst.trim_end_matches("/32");
        if !wanted.iter().any(|w| w.fip.to_string() == dst) {
            drifts.push(Drift::RouteStray(route.dst.clone()));
        }
    }
    drifts
}

/// The overlays of `t` against what its namespace holds ([`crate::installed_overlays`]): the
/// same comparison [`crate::apply_overlays`] acts on. Their table is held against its listing
/// after the apply with [`tables`].
pub fn overlays(t: &TenantNetns, overlays: &[Overlay], installed: &OverlayState) -> Vec<Drift> {
    plan(t, overlays, installed)
        .into_iter()
        .map(|step| step.drift)
        .collect()
}

/// Each table of `applied` (as listed right after it was applied) against the same table now.
pub fn tables(applied: &Tables, installed: &Tables) -> Vec<Drift> {
    applied
        .iter()
        .filter_map(|(name, listing)| match installed.get(name) {
            None => Some(Drift::TableMissing(name.clone())),
            Some(now) if now != listing => Some(Drift::TableChanged(name.clone())),
            Some(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::installed::{LinkState, RouteState};
    use crate::model::{Bridge, Endpoint, ServiceVip, Transit, DEFAULT_MTU};

    fn tenant() -> TenantNetns {
        TenantNetns {
            name: "t0".into(),
            netns_path: "/data/net/t0/netns".into(),
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
                endpoints: vec![Endpoint {
                    tap: "tap0123456789ab".into(),
                    mac: [2, 0x42, 172, 16, 0, 2],
                    ip: Ipv4Addr::new(172, 16, 0, 2),
                    ports: vec![],
                    fip: Some(Ipv4Addr::new(198, 51, 100, 2)),
                    security_groups: None,
                }],
                services: vec![ServiceVip {
                    ip: Ipv4Addr::new(172, 16, 0, 10),
                    ports: vec![],
                    fip: None,
                }],
            }],
        }
    }

    fn link(name: &str, kind: &str, master: Option<&str>, ipv4: &[&str]) -> LinkState {
        LinkState {
            name: name.into(),
            up: true,
            master: master.map(String::from),
            kind: Some(kind.into()),
            ipv4: ipv4.iter().map(|a| a.to_string()).collect(),
            mac: String::new(),
        }
    }

    fn route(dst: &str, gateway: &str, dev: &str) -> RouteState {
        RouteState {
            dst: dst.into(),
            gateway: Some(gateway.into()),
            dev: Some(dev.into()),
        }
    }

    /// Everything `tenant()` asks for, as the kernel would list it.
    fn in_place() -> (Installed, Installed) {
        let node = Installed {
            links: vec![
                link("lo", "", None, &["127.0.0.1/8"]),
                link("hv-0", "veth", None, &["100.127.0.0/31"]),
            ],
            routes: vec![route("198.51.100.2", "100.127.0.1", "hv-0")],
            tables: Tables::new(),
        };
        let inside = Installed {
            links: vec![
                link("up0", "veth", None, &["100.127.0.1/31"]),
                link("br0", "bridge", None, &["172.16.0.1/16", "172.16.0.10/32"]),
                link("tap0123456789ab", "tun", Some("br0"), &[]),
            ],
            routes: vec![route("default", "100.127.0.0", "up0")],
            tables: Tables::new(),
        };
        (node, inside)
    }

    fn net() -> NodeNet {
        NodeNet {
            transit_cidr: "100.127.0.0/16".parse().unwrap(),
            fips_elsewhere: vec![],
        }
    }

    fn texts(drifts: &[Drift]) -> Vec<String> {
        drifts.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn nothing_drifts_when_everything_is_in_place() {
        let (node, inside) = in_place();
        let t = tenant();
        assert_eq!(tenant_links(&t, &node, Some(&inside)), []);
        assert_eq!(node_fip_routes(&net(), &[&t], &node), []);
        // A tap not there yet (its VM is starting) is not a drift either.
        let mut no_tap = inside.clone();
        no_tap.links.retain(|l| l.kind.as_deref() != Some("tun"));
        assert_eq!(tenant_links(&t, &node, Some(&no_tap)), []);
    }

    #[test]
    fn missing_links_addresses_and_routes_are_named() {
        let t = tenant();
        let (mut node, mut inside) = in_place();
        node.links.retain(|l| l.name != "hv-0");
        inside.links[0].up = false;
        inside.links[1].ipv4 = vec!["172.16.0.10/32".into(), "10.9.9.9/8".into()];
        inside.links[2].master = None;
        inside.links.push(link("br9", "bridge", None, &[]));
        inside.routes.clear();
        assert_eq!(
            texts(&tenant_links(&t, &node, Some(&inside))),
            [
                "link hv-0 is missing",
                "link up0 is down",
                "route default via 100.127.0.0 dev up0 is missing",
                "br0 lacks address 172.16.0.1/16",
                "br0 has stray address 10.9.9.9/8",
                "tap0123456789ab is not a port of br0",
                "stray bridge br9",
            ]
        );
        assert_eq!(
            texts(&tenant_links(&t, &node, None)),
            [
                "link hv-0 is missing",
                "namespace /data/net/t0/netns is gone"
            ]
        );
    }

    #[test]
    fn fip_routes_missing_misrouted_or_stray() {
        let t = tenant();
        let (mut node, _) = in_place();
        node.routes = vec![
            route("198.51.100.2", "100.127.0.9", "hv-4"),
            route("198.51.100.5", "100.127.0.1", "hv-0"),
        ];
        assert_eq!(
            texts(&node_fip_routes(&net(), &[&t], &node)),
            [
                "route 198.51.100.2 via 100.127.0.1 dev hv-0 is missing",
                "stray route 198.51.100.5",
            ]
        );
        assert_eq!(
            texts(&node_fip_routes(&net(), &[], &node)),
            ["stray route 198.51.100.2", "stray route 198.51.100.5"]
        );
    }

    #[test]
    fn tables_missing_or_changed_since_their_apply() {
        let applied: Tables = [
            (
                "inet hyper".to_string(),
                "table inet hyper {\n}\n".to_string(),
            ),
            (
                "bridge hyper".to_string(),
                "table bridge hyper {\n}\n".to_string(),
            ),
        ]
        .into();
        assert_eq!(tables(&applied, &applied), []);
        let mut now = applied.clone();
        now.remove("inet hyper");
        now.insert(
            "bridge hyper".into(),
            "table bridge hyper {\n\tchain x {\n\t}\n}\n".into(),
        );
        now.insert(
            "inet someone-else".into(),
            "table inet someone-else {\n}\n".into(),
        );
        assert_eq!(
            texts(&tables(&applied, &now)),
            [
                "nftables table bridge hyper was changed",
                "nftables table inet hyper is missing",
            ]
        );
        // Nothing applied (the node's table is removed when no tenant is left): nothing owed.
        assert_eq!(tables(&Tables::new(), &now), []);
    }
}
