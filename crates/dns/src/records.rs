//! One network's names: forward (name -> addresses) and reverse (address -> names) lookups.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use hickory_proto::rr::Name;

pub struct Records {
    by_name: HashMap<String, Addresses>,
    /// Keyed by the lowercased in-addr.arpa / ip6.arpa name of each address.
    by_reverse_name: HashMap<Name, Vec<Name>>,
}

/// A name's addresses, handed out in rotating order so clients that take the first one spread out.
struct Addresses {
    all: Vec<IpAddr>,
    next_first: AtomicUsize,
}

impl Records {
    /// Names that are not valid DNS names are skipped with a warning: one odd container name
    /// must not take the whole network's DNS down.
    pub fn new(configured: &BTreeMap<String, Vec<IpAddr>>) -> Self {
        let mut by_name = HashMap::new();
        let mut by_reverse_name: HashMap<Name, Vec<Name>> = HashMap::new();
        for (name, addresses) in configured {
            let key = lookup_key(name);
            let Ok(fqdn) = Name::from_ascii(format!("{key}.")) else {
                tracing::warn!(name, "skipping a record whose name is not a valid DNS name");
                continue;
            };
            for address in addresses {
                let reverse = Name::from(*address).to_lowercase();
                let names = by_reverse_name.entry(reverse).or_default();
                if !names.contains(&fqdn) {
                    names.push(fqdn.clone());
                }
            }
            by_name.insert(
                key,
                Addresses {
                    all: addresses.clone(),
                    next_first: AtomicUsize::new(0),
                },
            );
        }
        Self {
            by_name,
            by_reverse_name,
        }
    }

    /// All addresses of `name`, rotated by one on each call; `None` if the network has no such name.
    pub fn addresses(&self, name: &Name) -> Option<Vec<IpAddr>> {
        let entry = self.by_name.get(&lookup_key(&name.to_ascii()))?;
        let mut addresses = entry.all.clone();
        if !addresses.is_empty() {
            let first = entry.next_first.fetch_add(1, Ordering::Relaxed) % addresses.len();
            addresses.rotate_left(first);
        }
        Some(addresses)
    }

    /// The names holding the address that `reverse_name` (an *.arpa name) stands for.
    pub fn names_for(&self, reverse_name: &Name) -> Option<&[Name]> {
        let mut key = reverse_name.to_lowercase();
        key.set_fqdn(true);
        self.by_reverse_name.get(&key).map(Vec::as_slice)
    }
}

/// Names match case-insensitively, with or without the trailing dot, and nothing else.
fn lookup_key(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(entries: &[(&str, &[&str])]) -> Records {
        let configured = entries
            .iter()
            .map(|(name, ips)| {
                (
                    name.to_string(),
                    ips.iter().map(|ip| ip.parse().unwrap()).collect(),
                )
            })
            .collect();
        Records::new(&configured)
    }

    fn name(text: &str) -> Name {
        Name::from_ascii(text).unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn matches_exact_names_in_any_case_with_or_without_the_dot() {
        let records = records(&[("web", &["172.16.0.2"])]);
        assert_eq!(
            records.addresses(&name("web")),
            Some(vec![ip("172.16.0.2")])
        );
        assert_eq!(
            records.addresses(&name("WEB.")),
            Some(vec![ip("172.16.0.2")])
        );
        assert_eq!(records.addresses(&name("web.example.com.")), None);
        assert_eq!(records.addresses(&name("we")), None);
    }

    #[test]
    fn rotates_several_addresses() {
        let records = records(&[("web", &["10.0.0.1", "10.0.0.2", "10.0.0.3"])]);
        let firsts: Vec<IpAddr> = (0..4)
            .map(|_| records.addresses(&name("web")).unwrap()[0])
            .collect();
        assert_eq!(
            firsts,
            [
                ip("10.0.0.1"),
                ip("10.0.0.2"),
                ip("10.0.0.3"),
                ip("10.0.0.1")
            ]
        );
        assert_eq!(records.addresses(&name("web")).unwrap().len(), 3);
    }

    #[test]
    fn reverse_lookup_gives_every_name_of_an_address() {
        let records = records(&[("web", &["172.16.0.2"]), ("3f2a9c1b7e4d", &["172.16.0.2"])]);
        let names = records
            .names_for(&name("2.0.16.172.IN-ADDR.ARPA."))
            .unwrap();
        assert_eq!(names, [name("3f2a9c1b7e4d."), name("web.")]);
        assert!(records
            .names_for(&name("3.0.16.172.in-addr.arpa."))
            .is_none());
    }

    #[test]
    fn skips_names_dns_cannot_carry() {
        let long = "x".repeat(64);
        let records = records(&[(long.as_str(), &["10.0.0.1"]), ("ok", &["10.0.0.2"])]);
        assert!(records.addresses(&name("ok")).is_some());
        assert!(records.names_for(&name("1.0.0.10.in-addr.arpa.")).is_none());
    }
}
