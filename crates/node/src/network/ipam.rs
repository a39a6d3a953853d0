//! Address management for tenant networks: subnets, gateways, container IPs and MACs. Pure
//! functions; the store transactions that claim an address live in `records`.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Parses a user's subnet: a network address with a prefix between /8 and /29 (a /30 leaves a
/// single container).
pub fn parse_subnet(s: &str) -> Result<Ipv4Net, String> {
    let net: Ipv4Net = s
        .parse()
        .map_err(|_| format!("invalid subnet {s:?}: use CIDR notation like 10.1.0.0/24"))?;
    if net.trunc() != net {
        return Err(format!(
            "invalid subnet {s}: it has host bits set; did you mean {}?",
            net.trunc()
        ));
    }
    if !(8..=29).contains(&net.prefix_len()) {
        return Err(format!(
            "invalid subnet {s}: the prefix must be between /8 and /29"
        ));
    }
    Ok(net)
}

/// The gateway of a subnet: its first host address.
pub fn gateway_of(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 1)
}

/// The lowest address of `subnet` that is neither the network, the broadcast, the gateway nor
/// in `used`.
pub fn next_free(
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    used: &BTreeSet<Ipv4Addr>,
) -> Option<Ipv4Addr> {
    subnet
        .hosts()
        .find(|ip| *ip != gateway && !used.contains(ip))
}

/// Docker's MAC scheme: 02:42 (locally administered) followed by the IPv4 address, so a MAC is
/// unique wherever the IP is.
pub fn mac_for(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

/// A free subnet for a user network that names none, as Docker picks them: 172.17-31.0.0/16,
/// then 192.168.0-240.0/20; none overlapping `taken`.
pub fn auto_subnet(taken: &[Ipv4Net]) -> Option<Ipv4Net> {
    let b = (17..=31u8).map(|x| Ipv4Net::new(Ipv4Addr::new(172, x, 0, 0), 16).expect("valid"));
    let c = (0..16u8).map(|x| Ipv4Net::new(Ipv4Addr::new(192, 168, x * 16, 0), 20).expect("valid"));
    b.chain(c).find(|n| !taken.iter().any(|t| overlaps(*t, *n)))
}

pub fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_are_checked() {
        assert!(parse_subnet("10.1.0.0/24").is_ok());
        assert!(parse_subnet("10.1.0.5/24")
            .unwrap_err()
            .contains("10.1.0.0/24"));
        assert!(parse_subnet("10.1.0.0/30").is_err());
        assert!(parse_subnet("banana").unwrap_err().contains("CIDR"));
    }

    #[test]
    fn addresses_skip_gateway_and_used() {
        let net: Ipv4Net = "172.16.0.0/16".parse().unwrap();
        let gw = gateway_of(net);
        assert_eq!(gw, Ipv4Addr::new(172, 16, 0, 1));
        let mut used = BTreeSet::new();
        assert_eq!(
            next_free(net, gw, &used),
            Some(Ipv4Addr::new(172, 16, 0, 2))
        );
        used.insert(Ipv4Addr::new(172, 16, 0, 2));
        assert_eq!(
            next_free(net, gw, &used),
            Some(Ipv4Addr::new(172, 16, 0, 3))
        );
        let tiny: Ipv4Net = "10.0.0.0/30".parse().unwrap();
        let used: BTreeSet<_> = [Ipv4Addr::new(10, 0, 0, 2)].into();
        assert_eq!(next_free(tiny, gateway_of(tiny), &used), None);
    }

    #[test]
    fn macs_follow_the_ip() {
        assert_eq!(mac_for(Ipv4Addr::new(172, 16, 0, 5)), "02:42:ac:10:00:05");
    }

    #[test]
    fn auto_subnets_avoid_taken_ones() {
        let taken: Vec<Ipv4Net> = vec!["172.16.0.0/12".parse().unwrap()];
        assert_eq!(auto_subnet(&taken).unwrap().to_string(), "192.168.0.0/20");
        assert_eq!(auto_subnet(&[]).unwrap().to_string(), "172.17.0.0/16");
    }
}
