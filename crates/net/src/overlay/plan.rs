//! The difference between the overlays wanted and what a namespace holds ([`OverlayState`]),
//! as steps: each names what differs (a [`Drift`]) and carries the `ip`/`bridge` commands that
//! fix it. Pure, so the same comparison serves applying, drift reports and unit tests; an
//! overlay already in place plans nothing, and re-applying it runs no command.

use std::path::Path;

use crate::drift::Drift;
use crate::model::{mac_text, Bridge, TenantNetns};
use crate::overlay::model::{Overlay, VXLAN_PORT};
use crate::overlay::state::{
    BridgePort, FdbEntry, FdbKind, Neighbour, OverlayState, VxlanLink, OVERLAY_NEIGH_PROTO,
};

/// The VXLAN port as a bridge port: it learns nothing (remote MACs come from the store, and a
/// forged frame must not move a local MAC onto the overlay), the bridge answers ARP for the
/// remote endpoints itself, and nothing is flooded to it: with no default entry in the VXLAN
/// device either, a frame goes to another node only when its destination MAC lives there.
pub(crate) const PORT: BridgePort = BridgePort {
    learning: false,
    neigh_suppress: true,
    flood: false,
    mcast_flood: false,
    bcast_flood: false,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Step {
    pub drift: Drift,
    pub cmds: Vec<Cmd>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cmd {
    pub tool: Tool,
    /// Run in the tenant namespace; else in the node's (the caller's).
    pub in_tenant: bool,
    pub what: &'static str,
    pub args: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tool {
    Ip,
    Bridge,
}

fn ip(what: &'static str, args: &[&str]) -> Cmd {
    Cmd {
        tool: Tool::Ip,
        in_tenant: true,
        what,
        args: args.iter().map(|a| a.to_string()).collect(),
    }
}

fn bridge(what: &'static str, args: &[&str]) -> Cmd {
    Cmd {
        tool: Tool::Bridge,
        ..ip(what, args)
    }
}

/// Steps that make the namespace of `t` hold exactly `overlays` (validated: an overlay on a
/// bridge `t` lacks is left out).
pub(crate) fn plan(t: &TenantNetns, overlays: &[Overlay], state: &OverlayState) -> Vec<Step> {
    let mut steps = Vec::new();
    for stray in state
        .links
        .iter()
        .filter(|l| !overlays.iter().any(|o| o.link_name() == l.name))
    {
        steps.push(Step {
            drift: Drift::LinkStray(stray.name.clone()),
            cmds: vec![ip("remove stray vxlan link", &["link", "del", &stray.name])],
        });
    }
    for o in overlays {
        let Some(bridge) = t.bridges.iter().find(|b| b.ifname == o.bridge) else {
            continue; // refused by validation before any apply
        };
        let fresh = plan_link(&t.netns_path, o, bridge, state, &mut steps);
        let installed: Vec<&FdbEntry> = match fresh {
            true => Vec::new(),
            false => state
                .fdb
                .iter()
                .filter(|e| e.link == o.link_name())
                .collect(),
        };
        plan_fdb(o, &installed, &mut steps);
    }
    plan_neighbours(overlays, &state.neighbours, &mut steps);
    steps
}

/// The VXLAN port of `o`; true when it is (re)created, so none of its entries are left.
fn plan_link(
    ns: &Path,
    o: &Overlay,
    bridge: &Bridge,
    state: &OverlayState,
    steps: &mut Vec<Step>,
) -> bool {
    let name = o.link_name();
    let existing = state.links.iter().find(|l| l.name == name);
    let wrong_tunnel = existing.and_then(|l| wrong_tunnel(l, o));
    if existing.is_none() || wrong_tunnel.is_some() {
        let mut cmds = Vec::new();
        let drift = match wrong_tunnel {
            Some(detail) => {
                cmds.push(ip(
                    "remove vxlan link to recreate it",
                    &["link", "del", &name],
                ));
                Drift::LinkChanged { link: name, detail }
            }
            None => Drift::LinkMissing(name),
        };
        cmds.extend([create(ns, o, bridge), attach(o, bridge), port(o)]);
        steps.push(Step { drift, cmds });
        return true;
    }
    let link = existing.expect("checked above");
    let attached =
        link.master.as_deref() == Some(bridge.ifname.as_str()) && link.up && link.mtu == bridge.mtu;
    if !attached {
        let detail = format!(
            "should be an up port of {} with mtu {} (master {:?}, up {}, mtu {})",
            bridge.ifname, bridge.mtu, link.master, link.up, link.mtu
        );
        steps.push(Step {
            drift: Drift::LinkChanged {
                link: name.clone(),
                detail,
            },
            cmds: vec![attach(o, bridge)],
        });
    }
    // A port that was detached and attached again has the bridge's default flags.
    if link.master.as_deref() != Some(bridge.ifname.as_str()) || link.bridge_port != Some(PORT) {
        steps.push(Step {
            drift: Drift::LinkChanged {
                link: name,
                detail: format!("port flags {:?}, not {PORT:?}", link.bridge_port),
            },
            cmds: vec![port(o)],
        });
    }
    false
}

/// What is wrong with the tunnel itself (only recreating the device changes it).
fn wrong_tunnel(link: &VxlanLink, o: &Overlay) -> Option<String> {
    let local = o.local_ip.to_string();
    let ok = link.vni == o.vni
        && link.local.as_deref() == Some(local.as_str())
        && link.port == VXLAN_PORT
        && !link.learning;
    (!ok).then(|| {
        format!(
            "is vni {} local {:?} port {} learning {}, not vni {} local {local} port {VXLAN_PORT} nolearning",
            link.vni, link.local, link.port, link.learning, o.vni
        )
    })
}

/// Created from the node's namespace straight into the tenant's: the device's UDP socket (and
/// so its underlay) stays in the node's namespace, and the node never holds the device.
fn create(ns: &Path, o: &Overlay, bridge: &Bridge) -> Cmd {
    let (name, ns) = (o.link_name(), ns.to_string_lossy());
    let (mtu, vni, local, port) = (
        bridge.mtu.to_string(),
        o.vni.to_string(),
        o.local_ip.to_string(),
        VXLAN_PORT.to_string(),
    );
    let args = [
        "link",
        "add",
        &name,
        "netns",
        &ns,
        "mtu",
        &mtu,
        "type",
        "vxlan",
        "id",
        &vni,
        "local",
        &local,
        "dstport",
        &port,
        "nolearning",
    ];
    Cmd {
        in_tenant: false,
        ..ip("create vxlan link", &args)
    }
}

fn attach(o: &Overlay, bridge: &Bridge) -> Cmd {
    let (name, mtu) = (o.link_name(), bridge.mtu.to_string());
    ip(
        "put vxlan link on its bridge",
        &[
            "link",
            "set",
            &name,
            "master",
            &bridge.ifname,
            "mtu",
            &mtu,
            "up",
        ],
    )
}

fn port(o: &Overlay) -> Cmd {
    let name = o.link_name();
    let flag = |on: bool| if on { "on" } else { "off" };
    bridge(
        "set vxlan port flags",
        &[
            "link",
            "set",
            "dev",
            &name,
            "learning",
            flag(PORT.learning),
            "neigh_suppress",
            flag(PORT.neigh_suppress),
            "flood",
            flag(PORT.flood),
            "mcast_flood",
            flag(PORT.mcast_flood),
            "bcast_flood",
            flag(PORT.bcast_flood),
        ],
    )
}

/// Per remote endpoint: the device's entry to its node and the bridge's entry to the port.
/// Anything else there goes, the all-zero default (flood) entry first of all.
fn plan_fdb(o: &Overlay, installed: &[&FdbEntry], steps: &mut Vec<Step>) {
    let link = o.link_name();
    let wanted: Vec<FdbEntry> = o
        .remotes
        .iter()
        .flat_map(|r| {
            let mac = mac_text(&r.mac);
            [
                FdbEntry {
                    link: link.clone(),
                    mac: mac.clone(),
                    kind: FdbKind::Remote(Some(r.node_ip.to_string())),
                },
                FdbEntry {
                    link: link.clone(),
                    mac,
                    kind: FdbKind::Static,
                },
            ]
        })
        .collect();
    for stray in installed.iter().filter(|e| !wanted.contains(e)) {
        let mut args = vec!["fdb", "del", &stray.mac, "dev", &link];
        match &stray.kind {
            FdbKind::Remote(Some(dst)) => args.extend(["dst", dst.as_str(), "self"]),
            FdbKind::Remote(None) => args.push("self"),
            FdbKind::Static => args.push("master"),
        }
        steps.push(Step {
            drift: Drift::FdbStray {
                link: link.clone(),
                entry: fdb_text(stray),
            },
            cmds: vec![bridge("remove stray forwarding entry", &args)],
        });
    }
    for missing in wanted.iter().filter(|e| !installed.contains(e)) {
        let mut args = vec!["fdb", "replace", &missing.mac, "dev", &link];
        match &missing.kind {
            FdbKind::Remote(dst) => {
                args.extend(["dst", dst.as_deref().expect("wanted"), "self", "permanent"])
            }
            // Sticky: not even a local port's traffic moves it (anti-spoofing stops that too).
            FdbKind::Static => args.extend(["master", "static", "sticky"]),
        }
        steps.push(Step {
            drift: Drift::FdbMissing {
                link: link.clone(),
                entry: fdb_text(missing),
            },
            cmds: vec![bridge("add forwarding entry", &args)],
        });
    }
}

fn fdb_text(e: &FdbEntry) -> String {
    match &e.kind {
        FdbKind::Remote(Some(dst)) => format!("{} dst {dst}", e.mac),
        FdbKind::Remote(None) => format!("{} (no dst)", e.mac),
        FdbKind::Static => format!("{} on the bridge", e.mac),
    }
}

/// The bridge answers ARP for a remote endpoint from these entries (neigh_suppress), and the
/// tenant namespace itself reaches it with them.
fn plan_neighbours(overlays: &[Overlay], installed: &[Neighbour], steps: &mut Vec<Step>) {
    let wanted: Vec<Neighbour> = overlays
        .iter()
        .flat_map(|o| {
            o.remotes.iter().map(|r| Neighbour {
                dev: o.bridge.clone(),
                ip: r.ip.to_string(),
                mac: Some(mac_text(&r.mac)),
            })
        })
        .collect();
    for stray in installed
        .iter()
        .filter(|n| !wanted.iter().any(|w| w.dev == n.dev && w.ip == n.ip))
    {
        steps.push(Step {
            drift: Drift::NeighbourStray {
                dev: stray.dev.clone(),
                ip: stray.ip.clone(),
            },
            cmds: vec![ip(
                "remove stray neighbour",
                &["neigh", "del", &stray.ip, "dev", &stray.dev],
            )],
        });
    }
    let proto = OVERLAY_NEIGH_PROTO.to_string();
    for missing in wanted.iter().filter(|w| !installed.contains(w)) {
        let mac = missing.mac.as_deref().expect("wanted");
        steps.push(Step {
            drift: Drift::NeighbourMissing {
                dev: missing.dev.clone(),
                ip: missing.ip.clone(),
                mac: mac.to_string(),
            },
            cmds: vec![ip(
                "add neighbour",
                &[
                    "neigh",
                    "replace",
                    &missing.ip,
                    "lladdr",
                    mac,
                    "dev",
                    &missing.dev,
                    "nud",
                    "permanent",
                    "proto",
                    &proto,
                ],
            )],
        });
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::model::{Transit, DEFAULT_MTU};
    use crate::overlay::model::RemoteEndpoint;

    fn tenant() -> TenantNetns {
        TenantNetns {
            name: "t".into(),
            netns_path: "/run/t/netns".into(),
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
                endpoints: vec![],
                services: vec![],
            }],
        }
    }

    fn overlay() -> Overlay {
        Overlay {
            bridge: "br0".into(),
            vni: 100,
            local_ip: Ipv4Addr::new(203, 0, 113, 10),
            remotes: vec![RemoteEndpoint {
                mac: [2, 0, 0, 0, 0, 3],
                ip: Ipv4Addr::new(172, 16, 0, 3),
                node_ip: Ipv4Addr::new(203, 0, 113, 11),
            }],
        }
    }

    /// What the kernel lists once `overlay()` is in place.
    fn in_place() -> OverlayState {
        OverlayState {
            links: vec![VxlanLink {
                name: "vx100".into(),
                vni: 100,
                local: Some("203.0.113.10".into()),
                port: VXLAN_PORT,
                learning: false,
                mtu: DEFAULT_MTU,
                up: true,
                master: Some("br0".into()),
                bridge_port: Some(PORT),
            }],
            fdb: vec![
                FdbEntry {
                    link: "vx100".into(),
                    mac: "02:00:00:00:00:03".into(),
                    kind: FdbKind::Remote(Some("203.0.113.11".into())),
                },
                FdbEntry {
                    link: "vx100".into(),
                    mac: "02:00:00:00:00:03".into(),
                    kind: FdbKind::Static,
                },
            ],
            neighbours: vec![Neighbour {
                dev: "br0".into(),
                ip: "172.16.0.3".into(),
                mac: Some("02:00:00:00:00:03".into()),
            }],
            tables: Default::default(),
        }
    }

    fn texts(steps: &[Step]) -> Vec<String> {
        steps.iter().map(|s| s.drift.to_string()).collect()
    }

    fn commands(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .flat_map(|s| &s.cmds)
            .map(|c| c.args.join(" "))
            .collect()
    }

    #[test]
    fn in_place_plans_nothing() {
        assert_eq!(plan(&tenant(), &[overlay()], &in_place()), []);
    }

    #[test]
    fn a_new_overlay_is_built_from_the_node_namespace_without_a_flood_entry() {
        let steps = plan(&tenant(), &[overlay()], &OverlayState::default());
        assert_eq!(
            commands(&steps),
            [
                "link add vx100 netns /run/t/netns mtu 1450 type vxlan id 100 local 203.0.113.10 dstport 4789 nolearning",
                "link set vx100 master br0 mtu 1450 up",
                "link set dev vx100 learning off neigh_suppress on flood off mcast_flood off bcast_flood off",
                "fdb replace 02:00:00:00:00:03 dev vx100 dst 203.0.113.11 self permanent",
                "fdb replace 02:00:00:00:00:03 dev vx100 master static sticky",
                "neigh replace 172.16.0.3 lladdr 02:00:00:00:00:03 dev br0 nud permanent proto 214",
            ]
        );
        let in_node: Vec<bool> = steps[0].cmds.iter().map(|c| c.in_tenant).collect();
        assert_eq!(in_node, [false, true, true]);
    }

    #[test]
    fn what_differs_is_named_and_only_that_is_fixed() {
        let mut state = in_place();
        state.links[0].bridge_port = Some(BridgePort {
            learning: true,
            ..PORT
        });
        state.fdb[0].kind = FdbKind::Remote(Some("203.0.113.99".into()));
        state.fdb.push(FdbEntry {
            link: "vx100".into(),
            mac: "00:00:00:00:00:00".into(),
            kind: FdbKind::Remote(Some("203.0.113.12".into())),
        });
        state.neighbours.push(Neighbour {
            dev: "br0".into(),
            ip: "172.16.0.9".into(),
            mac: Some("02:00:00:00:00:09".into()),
        });
        let steps = plan(&tenant(), &[overlay()], &state);
        assert_eq!(
            texts(&steps),
            [
                "link vx100 port flags Some(BridgePort { learning: true, neigh_suppress: true, flood: false, mcast_flood: false, bcast_flood: false }), not BridgePort { learning: false, neigh_suppress: true, flood: false, mcast_flood: false, bcast_flood: false }",
                "vx100 has stray forwarding entry 02:00:00:00:00:03 dst 203.0.113.99",
                "vx100 has stray forwarding entry 00:00:00:00:00:00 dst 203.0.113.12",
                "vx100 lacks forwarding entry 02:00:00:00:00:03 dst 203.0.113.11",
                "br0 has stray overlay neighbour 172.16.0.9",
            ]
        );
        assert_eq!(
            commands(&steps)[1..4],
            [
                "fdb del 02:00:00:00:00:03 dev vx100 dst 203.0.113.99 self",
                "fdb del 00:00:00:00:00:00 dev vx100 dst 203.0.113.12 self",
                "fdb replace 02:00:00:00:00:03 dev vx100 dst 203.0.113.11 self permanent",
            ]
        );
    }

    #[test]
    fn a_changed_tunnel_is_recreated_and_removal_takes_everything() {
        let mut o = overlay();
        o.local_ip = Ipv4Addr::new(203, 0, 113, 20);
        let steps = plan(&tenant(), &[o], &in_place());
        assert!(texts(&steps)[0].starts_with("link vx100 is vni 100 local Some(\"203.0.113.10\")"));
        assert_eq!(commands(&steps)[0], "link del vx100");
        assert!(commands(&steps)[1].contains("local 203.0.113.20"));
        // Recreated: its entries are made again, none deleted.
        assert!(!commands(&steps).iter().any(|c| c.starts_with("fdb del")));

        let gone = plan(&tenant(), &[], &in_place());
        assert_eq!(
            commands(&gone),
            ["link del vx100", "neigh del 172.16.0.3 dev br0"]
        );
    }
}
