//! What the node's tenant networking should look like. The integrator builds these from its
//! store; everything else in the crate makes the kernel match them.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;

use crate::error::NetError;

/// Name of the tenant side of every transit link (one per tenant netns, so it never clashes).
pub const TENANT_UPLINK: &str = "up0";
/// Every node-side transit link starts with this; the node's rules match them as `hv-*`.
pub const TRANSIT_PREFIX: &str = "hv-";
/// Linux interface names are at most 15 bytes.
const IFNAMSIZ_MAX: usize = 15;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeNet {
    /// Pool of transit /31s, one per tenant netns on this node (e.g. 100.127.0.0/16).
    pub transit_cidr: Ipv4Net,
    /// Floating IPs whose containers run on other nodes of the fleet: this node routes each
    /// to its node over the fleet's network, so that a FIP is reached through any node.
    pub fips_elsewhere: Vec<FipElsewhere>,
}

/// A floating IP held on another node, and that node's address on the fleet's network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FipElsewhere {
    pub fip: Ipv4Addr,
    pub node_ip: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantNetns {
    /// Short, `[a-z0-9-]`; only used for messages and by the integrator for `host_if`.
    pub name: String,
    /// Where the namespace is bind-mounted (e.g. `/var/lib/hyper/netns/<name>`).
    pub netns_path: PathBuf,
    pub transit: Transit,
    pub bridges: Vec<Bridge>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transit {
    /// Node-side veth name, `hv-...`, at most 15 bytes.
    pub host_if: String,
    pub host_ip: Ipv4Addr,
    pub peer_ip: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    pub ifname: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
    /// This node's own address on the network, in a fleet whose tenant has services: a /32
    /// of the bridge, whose MAC is then this node's own ([`node_mac`]) instead of the
    /// gateway's, so that the balancer reaches replicas on other nodes from it and their
    /// answers come back here. `None`: one node, or nothing to balance.
    pub node_ip: Option<Ipv4Addr>,
    /// The other nodes' own addresses on the network: their balancers' connections to this
    /// node's replicas pass the replicas' security groups, as this node's balancer's do.
    pub peer_node_ips: Vec<Ipv4Addr>,
    pub endpoints: Vec<Endpoint>,
    /// Load-balanced services with their address on this network.
    pub services: Vec<ServiceVip>,
}

/// MTU of tenant bridges unless told otherwise: leaves room for the VXLAN overlay.
pub const DEFAULT_MTU: u32 = 1450;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `tap<12 hex>`, created by the VM side inside the tenant netns.
    pub tap: String,
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub ports: Vec<PortMapping>,
    pub fip: Option<Ipv4Addr>,
    /// Flattened rules of all the endpoint's groups; `None` = no group = open.
    pub security_groups: Option<Vec<Rule>>,
}

/// A service's stable address on a bridge: an address of the bridge itself (/32), so the tenant
/// netns answers ARP for it and the balancer (`hyper-lb`, run by the integrator inside the tenant
/// netns) can bind it. Only `ports` are open on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceVip {
    pub ip: Ipv4Addr,
    pub ports: Vec<(Proto, u16)>,
    /// Forwards `fip:port` from outside to `ip:port` for each of `ports`.
    pub fip: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub proto: Proto,
    /// Publish only on this node address; `None` = every local address (and 127.0.0.1).
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Ingress,
    Egress,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleProto {
    Tcp,
    Udp,
    Icmp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    Any,
    Cidr(Ipv4Net),
    /// Members of a remote group, resolved by the integrator. Empty = matches nothing.
    Ips(Vec<Ipv4Addr>),
}

/// One security-group rule (Neutron semantics). Ports only apply to tcp/udp; a single bound
/// means that one port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub direction: Direction,
    /// `None` = any protocol.
    pub protocol: Option<RuleProto>,
    pub port_min: Option<u16>,
    pub port_max: Option<u16>,
    pub remote: Remote,
}

/// The transit link of the tenant netns with this index: the index-th /31 of the pool, node
/// side on the even address, named `hv-<index>`.
pub fn transit_for(node: &NodeNet, index: u32) -> Result<Transit, NetError> {
    let pairs = 1u64 << (32 - node.transit_cidr.prefix_len()).saturating_sub(1);
    if node.transit_cidr.prefix_len() > 31 || u64::from(index) >= pairs {
        return Err(NetError::Invalid(format!(
            "transit index {index} does not fit in {} ({pairs} links)",
            node.transit_cidr
        )));
    }
    let base = u32::from(node.transit_cidr.network()) + 2 * index;
    Ok(Transit {
        host_if: format!("{TRANSIT_PREFIX}{index}"),
        host_ip: Ipv4Addr::from(base),
        peer_ip: Ipv4Addr::from(base + 1),
    })
}

/// The MAC of a bridge (so of its gateway address): locally administered, `0a:48:` then the
/// gateway's IPv4 address, the same on every node, never changing with the ports.
pub fn gateway_mac(gateway: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = gateway.octets();
    [0x0a, 0x48, a, b, c, d]
}

/// The MAC of a bridge that has a node address ([`Bridge::node_ip`]): `0a:4e:` then that
/// address, unique on the network as the address is.
pub fn node_mac(node_ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = node_ip.octets();
    [0x0a, 0x4e, a, b, c, d]
}

impl Bridge {
    /// The bridge's MAC: the gateway's, or with a node address this node's own.
    pub fn mac(&self) -> [u8; 6] {
        self.node_ip.map_or(gateway_mac(self.gateway), node_mac)
    }

    /// Whether frames bridged between its ports must cross the inet hooks: only when an endpoint
    /// on it has security groups, which need conntrack (this kernel has none for the bridge
    /// family). Otherwise bridged frames skip them, the anti-spoofing of the `bridge` table
    /// still applying: that pass costs a tenth of a VM-to-VM transfer (issue 19).
    pub fn filters_bridged_frames(&self) -> bool {
        self.endpoints.iter().any(|e| e.security_groups.is_some())
    }

    /// The bridge's addresses: the gateway's with the subnet's prefix; the service VIPs and the
    /// node's own address as /32s (no subnet route of their own: the namespace answers ARP for
    /// them and the balancer binds them).
    pub(crate) fn addresses(&self) -> Vec<String> {
        let mut addrs = vec![format!("{}/{}", self.gateway, self.subnet.prefix_len())];
        addrs.extend(self.services.iter().map(|s| format!("{}/32", s.ip)));
        addrs.extend(self.node_ip.map(|ip| format!("{ip}/32")));
        addrs
    }
}

pub(crate) fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Interface names go into `ip` arguments and nft strings: keep them to what Linux and nft
/// accept unquoted-safely.
pub(crate) fn check_ifname(name: &str) -> Result<(), NetError> {
    let ok = !name.is_empty()
        && name.len() <= IFNAMSIZ_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(NetError::Invalid(format!("bad interface name {name:?}")))
    }
}

impl TenantNetns {
    /// Names and addresses the kernel and nft will be given; checked before touching anything.
    pub(crate) fn validate(&self) -> Result<(), NetError> {
        check_ifname(&self.transit.host_if)?;
        if !self.transit.host_if.starts_with(TRANSIT_PREFIX) {
            return Err(NetError::Invalid(format!(
                "transit link {:?} must start with {TRANSIT_PREFIX:?}",
                self.transit.host_if
            )));
        }
        for bridge in &self.bridges {
            check_ifname(&bridge.ifname)?;
            if bridge.ifname == TENANT_UPLINK || bridge.ifname == "lo" {
                return Err(NetError::Invalid(format!(
                    "reserved bridge name {:?}",
                    bridge.ifname
                )));
            }
            if !bridge.subnet.contains(&bridge.gateway) {
                return Err(NetError::Invalid(format!(
                    "gateway {} outside {} on {}",
                    bridge.gateway, bridge.subnet, bridge.ifname
                )));
            }
            for endpoint in &bridge.endpoints {
                check_ifname(&endpoint.tap)?;
            }
            if let Some(ip) = bridge.node_ip {
                let taken = ip == bridge.gateway
                    || bridge.services.iter().any(|s| s.ip == ip)
                    || bridge.endpoints.iter().any(|e| e.ip == ip);
                if !bridge.subnet.contains(&ip) || taken {
                    return Err(NetError::Invalid(format!(
                        "node address {ip} must be a free address of {} on {}",
                        bridge.subnet, bridge.ifname
                    )));
                }
            }
            for service in &bridge.services {
                if !bridge.subnet.contains(&service.ip) || service.ip == bridge.gateway {
                    return Err(NetError::Invalid(format!(
                        "service address {} must be in {} and not its gateway, on {}",
                        service.ip, bridge.subnet, bridge.ifname
                    )));
                }
            }
        }
        Ok(())
    }

    pub(crate) fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.bridges.iter().flat_map(|b| b.endpoints.iter())
    }

    pub(crate) fn services(&self) -> impl Iterator<Item = &ServiceVip> {
        self.bridges.iter().flat_map(|b| b.services.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// br0 on 172.16.0.0/24 with one service, 172.16.0.10:80/tcp.
    fn bridge_with_a_service() -> Bridge {
        Bridge {
            ifname: "br0".into(),
            subnet: "172.16.0.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(172, 16, 0, 1),
            mtu: DEFAULT_MTU,
            node_ip: None,
            peer_node_ips: vec![],
            endpoints: vec![],
            services: vec![ServiceVip {
                ip: Ipv4Addr::new(172, 16, 0, 10),
                ports: vec![(Proto::Tcp, 80)],
                fip: None,
            }],
        }
    }

    #[test]
    fn transit_links_are_consecutive_slash_31s() {
        let node = NodeNet {
            transit_cidr: "100.127.0.0/16".parse().unwrap(),
            fips_elsewhere: vec![],
        };
        let t = transit_for(&node, 3).unwrap();
        assert_eq!(t.host_if, "hv-3");
        assert_eq!(t.host_ip, Ipv4Addr::new(100, 127, 0, 6));
        assert_eq!(t.peer_ip, Ipv4Addr::new(100, 127, 0, 7));
        assert!(transit_for(&node, 32767).is_ok());
        assert!(transit_for(&node, 32768).is_err());
    }

    #[test]
    fn service_addresses_must_be_in_their_network_and_not_its_gateway() {
        let mut t = TenantNetns {
            name: "t".into(),
            netns_path: "/nowhere".into(),
            transit: Transit {
                host_if: "hv-0".into(),
                host_ip: Ipv4Addr::new(100, 127, 0, 0),
                peer_ip: Ipv4Addr::new(100, 127, 0, 1),
            },
            bridges: vec![bridge_with_a_service()],
        };
        assert!(t.validate().is_ok());
        for bad in [Ipv4Addr::new(172, 16, 0, 1), Ipv4Addr::new(172, 16, 1, 10)] {
            t.bridges[0].services[0].ip = bad;
            assert!(t.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_node_address_is_a_free_address_and_gives_the_bridge_its_own_mac() {
        let mut b = bridge_with_a_service();
        assert_eq!(b.mac(), gateway_mac(b.gateway));
        let mut t = TenantNetns {
            name: "t".into(),
            netns_path: "/nowhere".into(),
            transit: transit_for(
                &NodeNet {
                    transit_cidr: "100.127.0.0/16".parse().unwrap(),
                    fips_elsewhere: vec![],
                },
                0,
            )
            .unwrap(),
            bridges: vec![],
        };
        b.node_ip = Some(Ipv4Addr::new(172, 16, 0, 3));
        assert_eq!(b.mac(), [0x0a, 0x4e, 172, 16, 0, 3]);
        t.bridges = vec![b.clone()];
        assert!(t.validate().is_ok());
        for taken in [[172, 16, 0, 1], [172, 16, 0, 10], [172, 16, 1, 3]] {
            t.bridges[0].node_ip = Some(Ipv4Addr::from(taken));
            assert!(t.validate().is_err(), "{taken:?}");
        }
    }

    #[test]
    fn interface_names_are_checked() {
        assert!(check_ifname("tap0123456789ab").is_ok());
        assert!(check_ifname("tap0123456789abc").is_err());
        assert!(check_ifname("br0\"; flush").is_err());
    }
}
