//! Reading back what is installed in a namespace (links, addresses, routes, our nftables
//! tables), for [`crate::drift`] to hold against the model. A tenant's namespace costs two
//! processes, `ip -j addr` and `ip -j route`, and one `list ruleset` of our nftables helper for
//! its tables.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::apply::FIP_ROUTE_PROTO;
use crate::error::NetError;
use crate::guard::GUARD_TABLE;
use crate::iproute::{ip, parse_json};
use crate::model::TenantNetns;
use crate::netns::is_netns;
use crate::nft;

/// Our tables by name (`inet hyper`), each as `nft list` prints it: the kernel's own rendering,
/// so what was listed right after an apply is what an untouched table lists later.
pub type Tables = BTreeMap<String, String>;

/// The node's table (`inet hyper`, in the node's namespace).
pub const NODE_TABLE: &str = "inet hyper";
/// The tables of a tenant namespace.
pub const TENANT_TABLES: [&str; 2] = ["inet hyper", "bridge hyper"];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Installed {
    pub links: Vec<LinkState>,
    /// The node: our FIP routes (by protocol); a tenant namespace: its default route.
    pub routes: Vec<RouteState>,
    pub tables: Tables,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkState {
    pub name: String,
    /// Administratively up (`ip link set up`), whatever the carrier.
    pub up: bool,
    /// The bridge it is a port of.
    pub master: Option<String>,
    /// `bridge`, `veth`, `tun`...
    pub kind: Option<String>,
    /// IPv4 addresses in CIDR form (`10.0.0.1/24`).
    pub ipv4: Vec<String>,
    /// Its MAC (`0a:48:ac:10:00:01`).
    pub mac: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteState {
    /// `default`, or an address or prefix (`ip` leaves `/32` out).
    pub dst: String,
    pub gateway: Option<String>,
    pub dev: Option<String>,
}

impl Installed {
    pub fn link(&self, name: &str) -> Option<&LinkState> {
        self.links.iter().find(|l| l.name == name)
    }
}

/// The node's side, in the caller's namespace: links, FIP routes, our tables and the guard.
pub fn installed_on_node() -> Result<Installed, NetError> {
    let proto = FIP_ROUTE_PROTO.to_string();
    Ok(Installed {
        links: links(None)?,
        routes: routes(None, &["proto", &proto])?,
        tables: installed_tables(None, &[NODE_TABLE, GUARD_TABLE])?,
    })
}

/// A tenant's namespace, or `None` when it is gone.
pub fn installed_in_tenant(t: &TenantNetns) -> Result<Option<Installed>, NetError> {
    let ns = t.netns_path.as_path();
    if !is_netns(ns) {
        return Ok(None);
    }
    Ok(Some(Installed {
        links: links(Some(ns))?,
        routes: routes(Some(ns), &["default"])?,
        tables: installed_tables(Some(ns), &TENANT_TABLES)?,
    }))
}

/// The tables named in `names` that exist in the namespace (the caller's when `None`). One of
/// our namespaces holds only tables of ours (and hyper-lb's): its whole ruleset is listed at
/// once. The node's namespace may hold large rulesets of other software: each table is listed
/// on its own.
pub(crate) fn installed_tables(netns: Option<&Path>, names: &[&str]) -> Result<Tables, NetError> {
    if netns.is_some() {
        let listing = nft::run(netns, "list the nftables ruleset", "list ruleset")?;
        let mut tables = split_ruleset(&listing);
        tables.retain(|name, _| names.contains(&name.as_str()));
        return Ok(tables);
    }
    let mut tables = Tables::new();
    for name in names {
        match nft::run(
            None,
            "list an nftables table",
            &format!("list table {name}"),
        ) {
            Ok(listing) => {
                tables.insert(name.to_string(), listing);
            }
            Err(NetError::Command { stderr, .. })
                if stderr.contains("No such file or directory") => {}
            Err(e) => return Err(e),
        }
    }
    Ok(tables)
}

/// A listed ruleset cut into its tables, each as `nft list table` prints it (the ruleset's
/// listing is theirs one after another).
fn split_ruleset(listing: &str) -> Tables {
    let mut tables = Tables::new();
    let mut current: Option<(String, String)> = None;
    for line in listing.lines() {
        if let Some(header) = line.strip_prefix("table ") {
            tables.extend(current.take());
            let name = header.trim_end_matches('{').trim().to_string();
            current = Some((name, String::new()));
        }
        if let Some((_, text)) = &mut current {
            text.push_str(line);
            text.push('\n');
        }
    }
    tables.extend(current);
    tables
}

#[derive(Deserialize)]
struct RawLink {
    ifname: String,
    #[serde(default)]
    flags: Vec<String>,
    master: Option<String>,
    #[serde(default)]
    address: String,
    linkinfo: Option<RawLinkInfo>,
    #[serde(default)]
    addr_info: Vec<RawAddr>,
}

#[derive(Deserialize)]
struct RawLinkInfo {
    info_kind: Option<String>,
}

#[derive(Deserialize)]
struct RawAddr {
    family: String,
    local: String,
    prefixlen: u8,
}

pub(crate) fn links(netns: Option<&Path>) -> Result<Vec<LinkState>, NetError> {
    let out = ip(netns, "list links", &["-j", "-d", "addr", "show"])?;
    let raw: Vec<RawLink> = parse_json("ip -j -d addr show", &out)?;
    Ok(raw
        .into_iter()
        .map(|l| LinkState {
            up: l.flags.iter().any(|f| f == "UP"),
            master: l.master,
            kind: l.linkinfo.and_then(|i| i.info_kind),
            ipv4: l
                .addr_info
                .iter()
                .filter(|a| a.family == "inet")
                .map(|a| format!("{}/{}", a.local, a.prefixlen))
                .collect(),
            mac: l.address,
            name: l.ifname,
        })
        .collect())
}

#[derive(Deserialize)]
struct RawRoute {
    dst: String,
    gateway: Option<String>,
    dev: Option<String>,
}

fn routes(netns: Option<&Path>, filter: &[&str]) -> Result<Vec<RouteState>, NetError> {
    let mut args = vec!["-j", "-4", "route", "show"];
    args.extend_from_slice(filter);
    let out = ip(netns, "list routes", &args)?;
    let raw: Vec<RawRoute> = parse_json("ip -j route show", &out)?;
    Ok(raw
        .into_iter()
        .map(|r| RouteState {
            dst: r.dst,
            gateway: r.gateway,
            dev: r.dev,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ruleset_splits_into_its_tables_as_each_is_listed() {
        let inet = "table inet hyper {\n\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n\t\tct state established accept\n\t}\n}\n";
        let bridge = "table bridge hyper {\n\tchain forward {\n\t\ttype filter hook forward priority 0; policy accept;\n\t}\n}\n";
        let lb = "table ip hyper-lb {\n}\n";
        let tables = split_ruleset(&format!("{inet}{bridge}{lb}"));
        assert_eq!(tables.len(), 3);
        assert_eq!(tables["inet hyper"], inet);
        assert_eq!(tables["bridge hyper"], bridge);
        assert_eq!(tables["ip hyper-lb"], lb);
        assert!(split_ruleset("").is_empty());
    }
}
