//! The tenant namespace's DNS server (`hyper-dns`, a [`TenantDaemon`]): every network's names,
//! answered on its gateway.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use serde_json::json;

use super::daemon::TenantDaemon;
use super::records::NetworkRecord;
use crate::model::Container;
use crate::services::ServiceRecord;
use crate::Result;

type Names = BTreeMap<String, Vec<Ipv4Addr>>;

/// One network's names: container names, short ids and aliases, answered on its gateway.
pub struct Zone {
    pub listen: Ipv4Addr,
    pub records: Names,
    /// Names only one container resolves, by its address: its links' aliases, as dockerd's
    /// embedded DNS answers a link on a user-defined network.
    pub links: BTreeMap<Ipv4Addr, Names>,
}

impl Zone {
    pub fn of_network(
        n: &NetworkRecord,
        containers: &[Container],
        services: &[ServiceRecord],
    ) -> Zone {
        let mut records = Names::new();
        for c in containers {
            let Some(ep) = c.endpoint.as_ref().filter(|e| e.network_id == n.id) else {
                continue;
            };
            let names = [c.name.clone(), c.short_id().to_string()]
                .into_iter()
                .chain(ep.aliases.iter().cloned());
            for name in names {
                let ips = records.entry(name.to_ascii_lowercase()).or_default();
                if !ips.contains(&ep.ip) {
                    ips.push(ep.ip);
                }
            }
        }
        for s in services.iter().filter(|s| s.network_id == n.id) {
            records.insert(s.spec.name.to_ascii_lowercase(), vec![s.ip]);
        }
        Zone {
            listen: n.gateway,
            records,
            links: link_aliases(n, containers),
        }
    }
}

/// Each container's links on network `n` whose target is on it too: client address -> alias
/// -> the target's address.
fn link_aliases(n: &NetworkRecord, containers: &[Container]) -> BTreeMap<Ipv4Addr, Names> {
    let on_network = |c: &Container| {
        c.endpoint
            .as_ref()
            .filter(|e| e.network_id == n.id)
            .map(|e| e.ip)
    };
    let mut out = BTreeMap::new();
    for c in containers {
        let Some(client) = on_network(c) else {
            continue;
        };
        for link in &c.host_config.links {
            let (target, alias) = super::parse_link(link);
            let found = containers
                .iter()
                .find(|t| t.name == target || t.id == target)
                .and_then(on_network);
            if let Some(ip) = found {
                out.entry(client)
                    .or_insert_with(Names::new)
                    .insert(alias.to_ascii_lowercase(), vec![ip]);
            }
        }
    }
    out
}

/// The node's own resolvers, for names outside the tenant. Loopback resolvers (a local stub)
/// are unreachable from a tenant namespace and left out.
fn upstream() -> Vec<String> {
    let conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    conf.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|s| s.trim().parse::<Ipv4Addr>().ok())
        .filter(|ip| !ip.is_loopback())
        .map(|ip| format!("{ip}:53"))
        .collect()
}

/// The tenant's DNS server, serving `zones`.
pub fn sync(binary: &Path, dir: &Path, netns: &Path, zones: &[Zone]) -> Result<()> {
    let config = json!({
        "networks": zones.iter().map(|z| json!({"listen": z.listen, "records": z.records, "links": z.links})).collect::<Vec<_>>(),
        "upstream": upstream(),
    });
    daemon(binary, dir).sync(&config, netns)
}

pub fn daemon<'a>(binary: &'a Path, dir: &'a Path) -> TenantDaemon<'a> {
    TenantDaemon {
        binary,
        name: "dns",
        dir,
    }
}
