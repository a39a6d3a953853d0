//! Which network addresses a tenant-supplied URL may make the node connect to.
//!
//! hyperd fetches volume sources, image archives and registry pulls and logins from URLs and
//! registries a tenant names, from the node itself: outside every tenant network, beside the
//! node's own services, its metadata endpoints and the operator's private networks. Left open,
//! a URL is a way in to all of them (server-side request forgery). So every address a URL's
//! host resolves to, after each redirect, is checked here before anything connects, and the
//! connection is then pinned to the checked address (see `source` and `fetch`), so a second DNS
//! answer cannot swap another in.
//!
//! The default allows public unicast addresses only: everything in IANA's special-purpose
//! registries that is not globally reachable is refused, and so is every address of this
//! node's own interfaces, public ones included (DESIGN, Decided 12: the node's own addresses and
//! loopback are never reachable from tenant input). The operator widens it with CIDRs
//! (`--allow-fetch`), for a registry or git server on a private network, or on loopback in
//! tests; what the operator allows is allowed, whatever it covers.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// The hyperd flag that adds a CIDR to the allow list: refusals name it, so whoever reads one
/// knows what the operator could do.
pub const ALLOW_FLAG: &str = "--allow-fetch";

/// IPv4 ranges refused by default, with the name a refusal gives. First match wins (the
/// broadcast address sits inside 240/4).
const REFUSED_V4: &[(Ipv4Addr, u8, &str)] = &[
    (
        Ipv4Addr::new(0, 0, 0, 0),
        8,
        "\"this network\", unspecified",
    ),
    (Ipv4Addr::new(10, 0, 0, 0), 8, "private"),
    (
        Ipv4Addr::new(100, 64, 0, 0),
        10,
        "shared address space (CGNAT)",
    ),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback"),
    (Ipv4Addr::new(169, 254, 0, 0), 16, "link-local"),
    (Ipv4Addr::new(172, 16, 0, 0), 12, "private"),
    (Ipv4Addr::new(192, 0, 0, 0), 24, "IETF protocol assignments"),
    (Ipv4Addr::new(192, 0, 2, 0), 24, "documentation"),
    (Ipv4Addr::new(192, 88, 99, 0), 24, "6to4 relay anycast"),
    (Ipv4Addr::new(192, 168, 0, 0), 16, "private"),
    (Ipv4Addr::new(198, 18, 0, 0), 15, "benchmarking"),
    (Ipv4Addr::new(198, 51, 100, 0), 24, "documentation"),
    (Ipv4Addr::new(203, 0, 113, 0), 24, "documentation"),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast"),
    (Ipv4Addr::new(255, 255, 255, 255), 32, "broadcast"),
    (Ipv4Addr::new(240, 0, 0, 0), 4, "reserved"),
];

/// IPv6 ranges refused by default inside 2000::/3 (everything outside it is refused as not
/// global unicast, after IPv4-mapped and NAT64 addresses are judged by their IPv4 address).
const REFUSED_V6: &[(Ipv6Addr, u8, &str)] = &[
    (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
        32,
        "documentation",
    ),
    (
        Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0),
        20,
        "documentation",
    ),
    (
        Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
        23,
        "IETF protocol assignments",
    ),
    (Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16, "6to4"),
];

/// A refused address, and how the operator could allow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The address as resolved.
    pub addr: IpAddr,
    /// Why: the range it is in ("loopback", "private", "an address of this node"...).
    pub range: &'static str,
}

impl Refused {
    /// The narrowest CIDR that would allow the address.
    pub fn allow_cidr(&self) -> IpNet {
        IpNet::from(canonical(self.addr))
    }

    /// The refusal without naming what the address was for (a registry, a token server, an
    /// archive's URL, a redirect's target): "refused: address 127.0.0.1 (loopback) is not
    /// allowed; the operator can allow it with --allow-fetch 127.0.0.1/32".
    pub fn plain(&self) -> String {
        self.worded("")
    }

    fn worded(&self, purpose: &str) -> String {
        format!(
            "refused: address {} ({}) is not allowed{purpose}; the operator can allow it with {ALLOW_FLAG} {}",
            self.addr,
            self.range,
            self.allow_cidr()
        )
    }
}

/// The refusal as volume sources word it (see [`Refused::plain`] for everything else).
impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.worded(" for volume sources"))
    }
}

impl std::error::Error for Refused {}

/// The operator's allow list over the default of public unicast addresses only.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    allowed: Vec<IpNet>,
}

impl AddressPolicy {
    /// The default policy widened by `allowed` (an address inside any of them is allowed,
    /// whatever range it is in, the node's own addresses included: allow the one server, a
    /// /32 or /128, rather than a range the node sits in).
    pub fn new(allowed: Vec<IpNet>) -> AddressPolicy {
        AddressPolicy { allowed }
    }

    /// The CIDRs the operator allowed.
    pub fn allowed(&self) -> &[IpNet] {
        &self.allowed
    }

    /// Whether the node may connect to `ip` for a tenant.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refused> {
        let canon = canonical(ip);
        if self
            .allowed
            .iter()
            .any(|n| n.contains(&ip) || n.contains(&canon))
        {
            return Ok(());
        }
        let range = special_range(canon).or_else(|| own_address(canon));
        match range {
            Some(range) => Err(Refused { addr: ip, range }),
            None => Ok(()),
        }
    }
}

/// The address a connection to `ip` really reaches: the IPv4 address inside an IPv4-mapped
/// IPv6 address (a dual-stack socket connects to it over IPv4) or a NAT64 one (64:ff9b::/96, the
/// translator connects to it), else `ip` itself.
fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else {
        return ip;
    };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let s = v6.segments();
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let o = v6.octets();
        return IpAddr::V4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    ip
}

/// The special-purpose range `ip` (canonical) is in, if it is not public unicast.
fn special_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => REFUSED_V4
            .iter()
            .find(|(net, len, _)| {
                prefix_match(u32::from(v4).into(), u32::from(*net).into(), *len, 32)
            })
            .map(|(_, _, name)| *name),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_loopback() {
                Some("loopback")
            } else if prefix_match(bits, 0xfc00 << 112, 7, 128) {
                Some("unique local (private)")
            } else if prefix_match(bits, 0xfe80 << 112, 10, 128) {
                Some("link-local")
            } else if prefix_match(bits, 0xff00 << 112, 8, 128) {
                Some("multicast")
            } else if !prefix_match(bits, 0x2000 << 112, 3, 128) {
                Some("not global unicast")
            } else {
                REFUSED_V6
                    .iter()
                    .find(|(net, len, _)| prefix_match(bits, u128::from(*net), *len, 128))
                    .map(|(_, _, name)| *name)
            }
        }
    }
}

/// Whether the top `len` of `width` bits of `a` and `net` agree.
fn prefix_match(a: u128, net: u128, len: u8, width: u32) -> bool {
    let shift = width - u32::from(len);
    len == 0 || (a >> shift) == (net >> shift)
}

/// "an address of this node" if one of this host's interfaces has `ip`. Checked at each call:
/// addresses come and go. A failure to list them refuses (fail closed).
fn own_address(ip: IpAddr) -> Option<&'static str> {
    match local_addresses() {
        Ok(addrs) => addrs
            .iter()
            .any(|a| canonical(*a) == ip)
            .then_some("an address of this node"),
        Err(e) => {
            tracing::warn!(error = %e, "listing this node's addresses");
            Some("unknown: this node's addresses could not be listed")
        }
    }
}

/// Every address of this host's interfaces (getifaddrs(3)).
fn local_addresses() -> io::Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `head` is a valid place for getifaddrs to store its list's head.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, freed only below.
        let ifa = unsafe { &*cur };
        out.extend(sockaddr_ip(ifa.ifa_addr));
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed once; nothing borrowed from
    // the list outlives this call (the addresses were copied out).
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// The IP address in a socket address from getifaddrs, if it is IPv4 or IPv6.
fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: `sa` points to a sockaddr of the live getifaddrs list, whose family says
    // which larger struct it really is; each cast below matches its family.
    unsafe {
        match i32::from((*sa).sa_family) {
            libc::AF_INET => {
                let sin = &*(sa as *const libc::sockaddr_in);
                Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))))
            }
            libc::AF_INET6 => {
                let sin6 = &*(sa as *const libc::sockaddr_in6);
                Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn default_policy_refuses_non_public_addresses() {
        // (address, the range named in the refusal, or None if allowed)
        let cases: &[(&str, Option<&str>)] = &[
            ("1.1.1.1", None),
            ("8.8.8.8", None),
            ("100.63.255.255", None),
            ("100.128.0.0", None),
            ("172.15.255.255", None),
            ("172.32.0.0", None),
            ("192.169.0.1", None),
            ("223.255.255.254", None),
            ("0.0.0.0", Some("\"this network\", unspecified")),
            ("10.1.2.3", Some("private")),
            ("100.64.0.1", Some("shared address space (CGNAT)")),
            ("127.0.0.1", Some("loopback")),
            ("127.255.255.254", Some("loopback")),
            ("169.254.169.254", Some("link-local")),
            ("172.16.0.1", Some("private")),
            ("172.31.255.255", Some("private")),
            ("192.0.0.8", Some("IETF protocol assignments")),
            ("192.0.2.1", Some("documentation")),
            ("192.168.1.1", Some("private")),
            ("198.18.0.1", Some("benchmarking")),
            ("198.51.100.7", Some("documentation")),
            ("203.0.113.9", Some("documentation")),
            ("224.0.0.1", Some("multicast")),
            ("239.255.255.250", Some("multicast")),
            ("240.0.0.1", Some("reserved")),
            ("255.255.255.255", Some("broadcast")),
            ("2606:4700:4700::1111", None),
            ("2a00:1450:4001::1", None),
            ("::", Some("unspecified")),
            ("::1", Some("loopback")),
            ("fc00::1", Some("unique local (private)")),
            ("fd12:3456::1", Some("unique local (private)")),
            ("fe80::1", Some("link-local")),
            ("ff02::1", Some("multicast")),
            ("2001:db8::1", Some("documentation")),
            ("2002:7f00:1::1", Some("6to4")),
            ("2001::1", Some("IETF protocol assignments")),
            ("100::1", Some("not global unicast")),
            ("::127.0.0.1", Some("not global unicast")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("::ffff:10.0.0.1", Some("private")),
            ("::ffff:169.254.169.254", Some("link-local")),
            ("::ffff:8.8.8.8", None),
            ("64:ff9b::7f00:1", Some("loopback")),
            ("64:ff9b::808:808", None),
        ];
        let policy = AddressPolicy::default();
        for (i, (addr, want)) in cases.iter().enumerate() {
            let got = policy.check(ip(addr)).err().map(|r| r.range);
            assert_eq!(got, *want, "test[{i}]: {addr}");
        }
    }

    #[test]
    fn allowed_cidrs_widen_the_default() {
        let policy = AddressPolicy::new(vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.20.0.0/16".parse().unwrap(),
            "fd00::/8".parse().unwrap(),
        ]);
        // (address, allowed?)
        let cases: &[(&str, bool)] = &[
            ("127.0.0.1", true),
            ("::ffff:127.0.0.1", true),
            ("127.0.0.2", false),
            ("::1", false),
            ("10.20.30.40", true),
            ("10.21.0.1", false),
            ("fd00::5", true),
            ("fc00::5", false),
            ("1.1.1.1", true),
        ];
        for (i, (addr, want)) in cases.iter().enumerate() {
            assert_eq!(policy.check(ip(addr)).is_ok(), *want, "test[{i}]: {addr}");
        }
    }

    #[test]
    fn refusal_names_the_address_and_the_fix() {
        let cases: &[(&str, &str)] = &[
            (
                "127.0.0.1",
                "refused: address 127.0.0.1 (loopback) is not allowed for volume sources; the operator can allow it with --allow-fetch 127.0.0.1/32",
            ),
            (
                "::ffff:10.0.0.1",
                "refused: address ::ffff:10.0.0.1 (private) is not allowed for volume sources; the operator can allow it with --allow-fetch 10.0.0.1/32",
            ),
            (
                "fe80::1",
                "refused: address fe80::1 (link-local) is not allowed for volume sources; the operator can allow it with --allow-fetch fe80::1/128",
            ),
        ];
        for (i, (addr, want)) in cases.iter().enumerate() {
            let err = AddressPolicy::default().check(ip(addr)).unwrap_err();
            assert_eq!(err.to_string(), *want, "test[{i}]");
            let plain = want.replace(" for volume sources", "");
            assert_eq!(err.plain(), plain, "test[{i}]");
        }
    }

    #[test]
    fn the_nodes_own_addresses_are_refused() {
        let own = local_addresses().unwrap();
        assert!(own.iter().any(|a| a.is_loopback()), "{own:?}");
        for (i, a) in own.iter().enumerate() {
            let err = AddressPolicy::default().check(*a).unwrap_err();
            assert!(!err.range.is_empty(), "test[{i}]: {a}");
        }
    }
}
