//! The network records in the store and the transactions that claim addresses and ports.
//!
//! Keys:
//! - `/networks/{tenant}/{id}`: a tenant network ([`NetworkRecord`]); `/netnames/{tenant}/{name}`
//!   -> id.
//! - `/ipam/{tenant}/{network}/{ip}` -> container id: one key per used address.
//! - `/vni-last` -> the last VXLAN id given to a network (ids are never reused).
//! - `/hostports/{proto}/{port}` -> `{tenant}/{container}`: host ports are unique per node.
//! - `/transit/{node}/{tenant}` -> index, `/transit-index/{node}/{index}` -> tenant: the
//!   tenant's link to that node (its /31 in the node's transit range). Records from before
//!   the fleet (`/transit/{tenant}`) are adopted by the first node that starts.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use chrono::{DateTime, Utc};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use store::{Compare, Op, Store, Txn};

use super::ipam;
use crate::quota::Counter;
use crate::{Result, RuntimeError};

/// The network every tenant has, named as Docker names its default one.
pub const DEFAULT_NETWORK: &str = "bridge";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NetworkRecord {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// The bridge's name inside the tenant's namespace (`br0` for the default network).
    pub bridge: String,
    pub created: DateTime<Utc>,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Its VXLAN id across nodes, unique in the fleet; 0 until it first spans two nodes.
    #[serde(default)]
    pub vni: u32,
}

fn network_key(tenant: &str, id: &str) -> String {
    format!("/networks/{tenant}/{id}")
}
fn netname_key(tenant: &str, name: &str) -> String {
    format!("/netnames/{tenant}/{name}")
}
fn ipam_prefix(tenant: &str, network: &str) -> String {
    format!("/ipam/{tenant}/{network}/")
}
fn hostport_key(proto: &str, port: u16) -> String {
    format!("/hostports/{proto}/{port}")
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| RuntimeError::Internal(format!("bad record: {e}")))
}

pub fn list_networks(store: &dyn Store, tenant: &str) -> Result<Vec<NetworkRecord>> {
    store
        .range(&format!("/networks/{tenant}/"))?
        .iter()
        .map(|kv| decode(&kv.value))
        .collect()
}

/// A network by name, full id or unique id prefix.
pub fn find_network(store: &dyn Store, tenant: &str, reference: &str) -> Result<NetworkRecord> {
    if let Some(kv) = store.get(&netname_key(tenant, reference))? {
        let id = String::from_utf8_lossy(&kv.value).into_owned();
        if let Some(kv) = store.get(&network_key(tenant, &id))? {
            return decode(&kv.value);
        }
    }
    let matches: Vec<NetworkRecord> = list_networks(store, tenant)?
        .into_iter()
        .filter(|n| !reference.is_empty() && n.id.starts_with(reference))
        .collect();
    match matches.len() {
        1 => Ok(matches.into_iter().next().expect("one")),
        0 => Err(RuntimeError::NotFound(format!(
            "network {reference} not found"
        ))),
        _ => Err(RuntimeError::Invalid(format!(
            "network {reference} is ambiguous ({} matches)",
            matches.len()
        ))),
    }
}

/// Records a network, its name unique in the tenant and its subnet overlapping none of the
/// tenant's others nor `reserved` (the node's transit and floating IP ranges).
pub fn create_network(
    store: &dyn Store,
    mut record: NetworkRecord,
    reserved: &[Ipv4Net],
) -> Result<NetworkRecord> {
    for r in reserved {
        if ipam::overlaps(*r, record.subnet) {
            return Err(RuntimeError::Invalid(format!(
                "subnet {} overlaps {r}, which this node reserves for its own links; choose another",
                record.subnet
            )));
        }
    }
    loop {
        // The count of the tenant's networks guards the transaction: a concurrent create
        // changes it, and this one retries against the new set.
        let guard = Counter::read(store, &record.tenant, "networks")?;
        let existing = list_networks(store, &record.tenant)?;
        if let Some(other) = existing
            .iter()
            .find(|n| ipam::overlaps(n.subnet, record.subnet))
        {
            return Err(RuntimeError::Conflict(format!(
                "subnet {} overlaps {} of network {}",
                record.subnet, other.subnet, other.name
            )));
        }
        let used: BTreeSet<&str> = existing.iter().map(|n| n.bridge.as_str()).collect();
        record.bridge = (0..)
            .map(|i| format!("br{i}"))
            .find(|b| !used.contains(b.as_str()))
            .expect("a free bridge name");
        let txn = Txn::new()
            .when(guard.unchanged())
            .when(Compare::Absent(netname_key(&record.tenant, &record.name)))
            .then(guard.set(guard.value() + 1))
            .then(Op::Put(
                netname_key(&record.tenant, &record.name),
                record.id.clone().into_bytes(),
            ))
            .then(Op::Put(
                network_key(&record.tenant, &record.id),
                serde_json::to_vec(&record).expect("json"),
            ));
        if store.txn(txn)?.succeeded {
            return Ok(record);
        }
        if store
            .get(&netname_key(&record.tenant, &record.name))?
            .is_some()
        {
            return Err(RuntimeError::Conflict(format!(
                "network with name {} already exists",
                record.name
            )));
        }
    }
}

pub fn delete_network(store: &dyn Store, n: &NetworkRecord) -> Result<()> {
    if !store.range(&ipam_prefix(&n.tenant, &n.id))?.is_empty() {
        return Err(RuntimeError::Conflict(format!(
            "error while removing network: network {} id {} has active endpoints",
            n.name, n.id
        )));
    }
    loop {
        let guard = Counter::read(store, &n.tenant, "networks")?;
        let r = store.txn(
            Txn::new()
                .when(guard.unchanged())
                .then(guard.set(guard.value().saturating_sub(1)))
                .then(Op::Delete(network_key(&n.tenant, &n.id)))
                .then(Op::Delete(netname_key(&n.tenant, &n.name))),
        )?;
        if r.succeeded {
            return Ok(());
        }
    }
}

/// Claims the lowest free address of `n` for `container`.
pub fn claim_ip(store: &dyn Store, n: &NetworkRecord, container: &str) -> Result<Ipv4Addr> {
    loop {
        let used: BTreeSet<Ipv4Addr> = store
            .range(&ipam_prefix(&n.tenant, &n.id))?
            .iter()
            .filter_map(|kv| kv.key.rsplit('/').next()?.parse().ok())
            .collect();
        let ip = ipam::next_free(n.subnet, n.gateway, &used).ok_or_else(|| {
            RuntimeError::Conflict(format!(
                "no free address left in network {} ({})",
                n.name, n.subnet
            ))
        })?;
        let key = format!("{}{ip}", ipam_prefix(&n.tenant, &n.id));
        let claimed = store.txn(
            Txn::new()
                .when(Compare::Absent(key.clone()))
                .then(Op::Put(key, container.as_bytes().to_vec())),
        )?;
        if claimed.succeeded {
            return Ok(ip);
        }
    }
}

pub fn release_ip(store: &dyn Store, tenant: &str, network: &str, ip: Ipv4Addr) -> Result<()> {
    store.delete(&format!("{}{ip}", ipam_prefix(tenant, network)))?;
    Ok(())
}

/// What an address a node holds on a network is recorded for: `node:NAME` (container ids are
/// hex, services' `service:NAME`).
const NODE_OWNER: &str = "node:";

/// The nodes' own addresses on `n` (where their balancers reach replicas from), by node.
pub fn node_addresses(store: &dyn Store, n: &NetworkRecord) -> Result<BTreeMap<String, Ipv4Addr>> {
    Ok(store
        .range(&ipam_prefix(&n.tenant, &n.id))?
        .iter()
        .filter_map(|kv| {
            let node = std::str::from_utf8(&kv.value)
                .ok()?
                .strip_prefix(NODE_OWNER)?;
            Some((node.to_string(), kv.key.rsplit('/').next()?.parse().ok()?))
        })
        .collect())
}

/// `node`'s own address on `n`, claimed the first time it is asked for.
pub fn claim_node_ip(store: &dyn Store, n: &NetworkRecord, node: &str) -> Result<Ipv4Addr> {
    match node_addresses(store, n)?.remove(node) {
        Some(ip) => Ok(ip),
        None => claim_ip(store, n, &format!("{NODE_OWNER}{node}")),
    }
}

/// Gives `node`'s own address on `n` back, if it holds one.
pub fn release_node_ip(store: &dyn Store, n: &NetworkRecord, node: &str) -> Result<()> {
    if let Some(ip) = node_addresses(store, n)?.remove(node) {
        release_ip(store, &n.tenant, &n.id, ip)?;
    }
    Ok(())
}

/// Gives back every address `node` holds on any tenant's network (the node is removed from
/// the fleet); how many.
pub fn release_node_ips_everywhere(store: &dyn Store, node: &str) -> Result<usize> {
    let owner = format!("{NODE_OWNER}{node}");
    let mut released = 0;
    for kv in store.range("/ipam/")? {
        if kv.value != owner.as_bytes() {
            continue;
        }
        let done = store.txn(
            Txn::new()
                .when(Compare::Value(kv.key.clone(), kv.value.clone()))
                .then(Op::Delete(kv.key.clone())),
        )?;
        released += usize::from(done.succeeded);
    }
    Ok(released)
}

/// Claims `proto/port` on the node for `owner` (`tenant/container`). A port held by another
/// container, or bound by a process of the node, is refused as Docker words it.
pub fn claim_host_port(
    store: &dyn Store,
    proto: &str,
    host_ip: Option<Ipv4Addr>,
    port: u16,
    owner: &str,
) -> Result<bool> {
    if !port_free_on_node(proto, host_ip, port) {
        return Ok(false);
    }
    let key = hostport_key(proto, port);
    let r = store.txn(
        Txn::new()
            .when(Compare::Absent(key.clone()))
            .then(Op::Put(key, owner.as_bytes().to_vec())),
    )?;
    Ok(r.succeeded)
}

pub fn release_host_port(store: &dyn Store, proto: &str, port: u16, owner: &str) -> Result<()> {
    let key = hostport_key(proto, port);
    store.txn(
        Txn::new()
            .when(Compare::Value(key.clone(), owner.as_bytes().to_vec()))
            .then(Op::Delete(key)),
    )?;
    Ok(())
}

/// Whether a process of the node already listens on the port (its traffic would never reach
/// the container).
fn port_free_on_node(proto: &str, host_ip: Option<Ipv4Addr>, port: u16) -> bool {
    let addr = (host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED), port);
    match proto {
        "udp" => std::net::UdpSocket::bind(addr).is_ok(),
        _ => std::net::TcpListener::bind(addr).is_ok(),
    }
}

/// The tenant's transit index on `node`, claimed on first use.
pub fn transit_index(store: &dyn Store, node: &str, tenant: &str, max: u32) -> Result<u32> {
    let key = format!("/transit/{node}/{tenant}");
    loop {
        if let Some(kv) = store.get(&key)? {
            return String::from_utf8_lossy(&kv.value)
                .parse()
                .map_err(|e| RuntimeError::Internal(format!("bad transit index: {e}")));
        }
        let used: BTreeSet<u32> = store
            .range(&format!("/transit-index/{node}/"))?
            .iter()
            .filter_map(|kv| kv.key.rsplit('/').next()?.parse().ok())
            .collect();
        let index = (0..max).find(|i| !used.contains(i)).ok_or_else(|| {
            RuntimeError::Internal("the node's transit range is exhausted".into())
        })?;
        let ikey = format!("/transit-index/{node}/{index}");
        let r = store.txn(
            Txn::new()
                .when(Compare::Absent(key.clone()))
                .when(Compare::Absent(ikey.clone()))
                .then(Op::Put(key.clone(), index.to_string().into_bytes()))
                .then(Op::Put(ikey, tenant.as_bytes().to_vec())),
        )?;
        if r.succeeded {
            return Ok(index);
        }
    }
}

/// Tenants holding a transit index on `node` (their namespaces there exist or should).
pub fn tenants_with_transit(store: &dyn Store, node: &str) -> Result<Vec<(String, u32)>> {
    let prefix = format!("/transit/{node}/");
    Ok(store
        .range(&prefix)?
        .iter()
        .filter_map(|kv| {
            let tenant = kv.key.strip_prefix(&prefix)?.to_string();
            let index = String::from_utf8_lossy(&kv.value).parse().ok()?;
            Some((tenant, index))
        })
        .collect())
}

pub fn release_transit(store: &dyn Store, node: &str, tenant: &str, index: u32) -> Result<()> {
    store.txn(
        Txn::new()
            .then(Op::Delete(format!("/transit/{node}/{tenant}")))
            .then(Op::Delete(format!("/transit-index/{node}/{index}"))),
    )?;
    Ok(())
}

/// Gives `node` the transit records of a hyperd from before the fleet (`/transit/{tenant}`,
/// `/transit-index/{index}`): it was the only node, so they were this one's.
pub fn adopt_legacy_transit(store: &dyn Store, node: &str) -> Result<()> {
    let legacy = |prefix: &str| -> Result<Vec<(String, Vec<u8>)>> {
        Ok(store
            .range(prefix)?
            .into_iter()
            .filter(|kv| !kv.key[prefix.len()..].contains('/'))
            .map(|kv| (kv.key[prefix.len()..].to_string(), kv.value))
            .collect())
    };
    let mut txn = Txn::new();
    for (prefix, rest) in [
        ("/transit/", legacy("/transit/")?),
        ("/transit-index/", legacy("/transit-index/")?),
    ] {
        for (name, value) in rest {
            txn = txn
                .then(Op::Delete(format!("{prefix}{name}")))
                .then(Op::Put(format!("{prefix}{node}/{name}"), value));
        }
    }
    if !txn.success.is_empty() {
        store.txn(txn)?;
    }
    Ok(())
}

/// The highest VXLAN id (24 bits).
const VNI_MAX: u32 = (1 << 24) - 1;

/// The network's VXLAN id, given on first use: the next after `/vni-last`, in the same
/// transaction that writes it into the network's record (two nodes asking at once agree).
pub fn vni_of(store: &dyn Store, network: &NetworkRecord) -> Result<u32> {
    if network.vni != 0 {
        return Ok(network.vni);
    }
    let key = network_key(&network.tenant, &network.id);
    loop {
        let Some(kv) = store.get(&key)? else {
            return Err(RuntimeError::NotFound(format!(
                "network {} is gone",
                network.name
            )));
        };
        let mut record: NetworkRecord = serde_json::from_slice(&kv.value)
            .map_err(|e| RuntimeError::Internal(format!("bad network record: {e}")))?;
        if record.vni != 0 {
            return Ok(record.vni);
        }
        let last = store.get("/vni-last")?;
        let (next, last_unchanged) = match &last {
            Some(l) => {
                let n: u32 = String::from_utf8_lossy(&l.value)
                    .parse()
                    .map_err(|e| RuntimeError::Internal(format!("bad /vni-last: {e}")))?;
                (
                    n + 1,
                    Compare::ModRevision("/vni-last".into(), l.mod_revision),
                )
            }
            None => (1, Compare::Absent("/vni-last".into())),
        };
        if next > VNI_MAX {
            return Err(RuntimeError::Conflict(
                "the fleet has given out every VXLAN id".into(),
            ));
        }
        record.vni = next;
        let done = store.txn(
            Txn::new()
                .when(Compare::ModRevision(key.clone(), kv.mod_revision))
                .when(last_unchanged)
                .then(Op::Put(
                    key.clone(),
                    serde_json::to_vec(&record).expect("json"),
                ))
                .then(Op::Put("/vni-last".into(), next.to_string().into_bytes())),
        )?;
        if done.succeeded {
            return Ok(next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_nodes_addresses_are_given_back_and_no_others() {
        let dir = tempfile::tempdir().unwrap();
        let store = store::RedbStore::open(&dir.path().join("s.redb")).unwrap();
        let network = |tenant: &str| NetworkRecord {
            id: "n0".into(),
            tenant: tenant.into(),
            name: "bridge".into(),
            subnet: "172.16.0.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(172, 16, 0, 1),
            bridge: "br0".into(),
            created: Utc::now(),
            labels: Default::default(),
            vni: 0,
        };
        let (a, b) = (network("a"), network("b"));
        let gone = claim_node_ip(&store, &a, "n2").unwrap();
        claim_node_ip(&store, &b, "n2").unwrap();
        let kept = claim_node_ip(&store, &a, "n1").unwrap();
        let container = claim_ip(&store, &a, "c1").unwrap();
        assert_eq!(release_node_ips_everywhere(&store, "n2").unwrap(), 2);
        let left = node_addresses(&store, &a).unwrap();
        assert_eq!(left, BTreeMap::from([("n1".to_string(), kept)]));
        assert!(node_addresses(&store, &b).unwrap().is_empty());
        // The next claim may take the freed address; the container keeps its own.
        assert_eq!(claim_ip(&store, &a, "c2").unwrap(), gone);
        assert_ne!(container, gone);
    }
}
