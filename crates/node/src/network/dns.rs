//! The tenant namespace's DNS server (`hyper-dns`, a [`TenantDaemon`]): every network's names,
//! answered on its gateway.

use std::net::Ipv4Addr;
use std::path::Path;

use serde_json::json;

use super::daemon::TenantDaemon;
use super::records::NetworkRecord;
use crate::model::Container;
use crate::services::ServiceRecord;
use crate::Result;

/// One network's names: container names, short ids and aliases, answered on its gateway.
pub struct Zone {
    pub listen: Ipv4Addr,
    pub records: std::collections::BTreeMap<String, Vec<Ipv4Addr>>,
}

impl Zone {
    pub fn of_network(
        n: &NetworkRecord,
        containers: &[Container],
        services: &[ServiceRecord],
    ) -> Zone {
        let mut records: std::collections::BTreeMap<String, Vec<Ipv4Addr>> = Default::default();
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
        }
    }
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
        "networks": zones.iter().map(|z| json!({"listen": z.listen, "records": z.records})).collect::<Vec<_>>(),
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
