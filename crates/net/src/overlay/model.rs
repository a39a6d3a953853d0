//! What the overlay of a tenant network should look like on this node. The node layer builds
//! these from the store (see docs/overlay.md); the rest of [`crate::overlay`] makes the kernel
//! match them.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use crate::error::NetError;
use crate::model::{gateway_mac, mac_text, Bridge, TenantNetns};

/// VXLAN's UDP port (IANA), the same on every node.
pub const VXLAN_PORT: u16 = 4789;
/// What VXLAN over IPv4 wraps around a frame: outer IPv4 (20) + UDP (8) + VXLAN (8) + inner
/// Ethernet header (14). The underlay's MTU must be at least the bridge's MTU plus this
/// (1450 + 50 = 1500, an ordinary Ethernet).
pub const VXLAN_OVERHEAD: u32 = 50;
/// Every VXLAN port of a tenant namespace is named this and its VNI (`vx100`).
pub const VXLAN_PREFIX: &str = "vx";
/// VNIs are 24 bits.
const VNI_MAX: u32 = (1 << 24) - 1;

/// One tenant network (a bridge of the tenant namespace) extended to other nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlay {
    /// The network: `ifname` of one of the namespace's bridges.
    pub bridge: String,
    /// The network's VXLAN id, the same on every node, unique in the fleet (1..=16777215).
    pub vni: u32,
    /// This node's underlay address (in the node's namespace): the source of its VXLAN
    /// packets and where the other nodes send theirs.
    pub local_ip: Ipv4Addr,
    /// The network's endpoints on other nodes (this node's own are the bridge's endpoints).
    pub remotes: Vec<RemoteEndpoint>,
}

/// An endpoint of the network on another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteEndpoint {
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    /// The underlay address of the node it runs on.
    pub node_ip: Ipv4Addr,
}

impl Overlay {
    /// The network's VXLAN port. The VNI is unique on the node (the kernel refuses a second
    /// device with one VNI on the node's UDP socket), so the name is too.
    pub fn link_name(&self) -> String {
        format!("{VXLAN_PREFIX}{}", self.vni)
    }
}

/// An address a node can have on the underlay.
fn is_underlay_unicast(ip: Ipv4Addr) -> bool {
    !(ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_broadcast())
}

/// Checks `overlays` against the namespace they go into, before anything is touched: names
/// and numbers the tools will be given, and no remote endpoint that could pass for something
/// of this node (a local endpoint, the gateway, a service address) or steal its traffic.
pub(crate) fn validate(t: &TenantNetns, overlays: &[Overlay]) -> Result<(), NetError> {
    let invalid = |text: String| Err(NetError::Invalid(text));
    let mut vnis = HashSet::new();
    let mut bridges = HashSet::new();
    for b in &t.bridges {
        if b.ifname.starts_with(VXLAN_PREFIX) {
            return invalid(format!(
                "bridge {:?} takes the name space of VXLAN ports ({VXLAN_PREFIX}*)",
                b.ifname
            ));
        }
    }
    for o in overlays {
        let vni = o.vni;
        let Some(bridge) = t.bridges.iter().find(|b| b.ifname == o.bridge) else {
            return invalid(format!("overlay vni {vni}: no bridge {:?}", o.bridge));
        };
        if !(1..=VNI_MAX).contains(&vni) {
            return invalid(format!("vni {vni} outside 1..={VNI_MAX}"));
        }
        if !vnis.insert(vni) {
            return invalid(format!("vni {vni} is given twice"));
        }
        if !bridges.insert(&o.bridge) {
            return invalid(format!("bridge {} has two overlays", o.bridge));
        }
        if !is_underlay_unicast(o.local_ip) {
            return invalid(format!(
                "vni {vni}: bad local underlay address {}",
                o.local_ip
            ));
        }
        validate_remotes(bridge, o)?;
    }
    Ok(())
}

fn validate_remotes(bridge: &Bridge, o: &Overlay) -> Result<(), NetError> {
    let vni = o.vni;
    let invalid = |text: String| Err(NetError::Invalid(format!("vni {vni}: {text}")));
    let mut macs = HashSet::new();
    let mut ips = HashSet::new();
    for r in &o.remotes {
        let (mac, ip) = (mac_text(&r.mac), r.ip);
        if r.mac[0] & 1 == 1 || r.mac == [0; 6] {
            return invalid(format!("remote MAC {mac} is not a unicast address"));
        }
        let ours = r.mac == gateway_mac(bridge.gateway) || r.mac == bridge.mac();
        if ours || bridge.endpoints.iter().any(|e| e.mac == r.mac) {
            return invalid(format!("remote MAC {mac} is one of this node's"));
        }
        if !bridge.subnet.contains(&ip) || ip == bridge.gateway {
            return invalid(format!(
                "remote address {ip} must be in {} and not its gateway",
                bridge.subnet
            ));
        }
        if bridge.endpoints.iter().any(|e| e.ip == ip)
            || bridge.services.iter().any(|s| s.ip == ip)
            || bridge.node_ip == Some(ip)
        {
            return invalid(format!("remote address {ip} is one of this node's"));
        }
        if !macs.insert(r.mac) || !ips.insert(ip) {
            return invalid(format!("remote {mac} {ip} clashes with another remote"));
        }
        if !is_underlay_unicast(r.node_ip) || r.node_ip == o.local_ip {
            return invalid(format!(
                "remote {ip}: bad node address {} (this node is {})",
                r.node_ip, o.local_ip
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Endpoint, ServiceVip, Transit, DEFAULT_MTU};

    fn tenant() -> TenantNetns {
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
                endpoints: vec![Endpoint {
                    tap: "tap000000000001".into(),
                    mac: [2, 0, 0, 0, 0, 2],
                    ip: Ipv4Addr::new(172, 16, 0, 2),
                    ports: vec![],
                    fip: None,
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

    #[test]
    fn a_sound_overlay_passes() {
        assert!(validate(&tenant(), &[overlay()]).is_ok());
        assert_eq!(overlay().link_name(), "vx100");
    }

    #[test]
    fn remotes_that_could_pass_for_this_node_are_refused() {
        let t = tenant();
        type Break = fn(&mut Overlay);
        let cases: Vec<(&str, Break)> = vec![
            ("local endpoint's MAC", |o| {
                o.remotes[0].mac = [2, 0, 0, 0, 0, 2]
            }),
            ("gateway MAC", |o| {
                o.remotes[0].mac = [0x0a, 0x48, 172, 16, 0, 1]
            }),
            ("multicast MAC", |o| {
                o.remotes[0].mac = [1, 0, 0x5e, 0, 0, 1]
            }),
            ("local endpoint's IP", |o| {
                o.remotes[0].ip = Ipv4Addr::new(172, 16, 0, 2)
            }),
            ("service VIP", |o| {
                o.remotes[0].ip = Ipv4Addr::new(172, 16, 0, 10)
            }),
            ("gateway", |o| {
                o.remotes[0].ip = Ipv4Addr::new(172, 16, 0, 1)
            }),
            ("outside the subnet", |o| {
                o.remotes[0].ip = Ipv4Addr::new(10, 0, 0, 3)
            }),
            ("on this node", |o| o.remotes[0].node_ip = o.local_ip),
            ("twice", |o| o.remotes.push(o.remotes[0].clone())),
            ("vni 0", |o| o.vni = 0),
            ("vni too large", |o| o.vni = 1 << 24),
            ("unknown bridge", |o| o.bridge = "br9".into()),
            ("no local address", |o| o.local_ip = Ipv4Addr::UNSPECIFIED),
        ];
        for (i, (what, break_it)) in cases.into_iter().enumerate() {
            let mut o = overlay();
            break_it(&mut o);
            assert!(validate(&t, &[o]).is_err(), "test[{i}] {what}");
        }
        let mut twice = overlay();
        twice.remotes.clear();
        assert!(validate(&t, &[twice.clone(), twice]).is_err());
    }
}
