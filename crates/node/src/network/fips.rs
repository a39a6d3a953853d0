//! Floating IPs: addresses of the node's pool a tenant allocates, names, attaches to one of its
//! containers and releases. `/fips/{ip}` holds a [`FipRecord`]; the tenant's count is a quota.
//! Traffic follows the records: the rules that carry it are rebuilt from them on every change.

use std::net::Ipv4Addr;

use chrono::{DateTime, Utc};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use store::{Compare, Op, Store, Txn};

use crate::quota::{self, Counter};
use crate::{Result, RuntimeError};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FipRecord {
    pub ip: Ipv4Addr,
    pub tenant: String,
    #[serde(default)]
    pub name: String,
    /// Container id, "" when unattached.
    #[serde(default)]
    pub container: String,
    /// Service name, "" when not held by a service.
    #[serde(default)]
    pub service: String,
    pub allocated: DateTime<Utc>,
}

fn key(ip: Ipv4Addr) -> String {
    format!("/fips/{ip}")
}

/// Every host address of the configured pool CIDRs (ipnet keeps all of a /31 or /32).
pub fn pool_addresses(pool: &[Ipv4Net]) -> Vec<Ipv4Addr> {
    pool.iter().flat_map(|net| net.hosts()).collect()
}

fn all(store: &dyn Store) -> Result<Vec<(FipRecord, u64)>> {
    store
        .range("/fips/")?
        .iter()
        .map(|kv| {
            serde_json::from_slice(&kv.value)
                .map(|r| (r, kv.mod_revision))
                .map_err(|e| RuntimeError::Internal(format!("bad floating IP record: {e}")))
        })
        .collect()
}

/// Every tenant's FIPs that are attached to a container.
pub fn attached_to_containers(store: &dyn Store) -> Result<Vec<FipRecord>> {
    Ok(all(store)?
        .into_iter()
        .map(|(r, _)| r)
        .filter(|r| !r.container.is_empty())
        .collect())
}

pub fn list(store: &dyn Store, tenant: &str) -> Result<Vec<FipRecord>> {
    Ok(all(store)?
        .into_iter()
        .map(|(r, _)| r)
        .filter(|r| r.tenant == tenant)
        .collect())
}

fn owned(store: &dyn Store, tenant: &str, ip: &str) -> Result<(FipRecord, u64)> {
    let not_found =
        || RuntimeError::NotFound(format!("floating IP {ip} not found in your account"));
    let addr: Ipv4Addr = ip.parse().map_err(|_| {
        RuntimeError::Invalid(format!("invalid floating IP {ip:?}: use an IPv4 address"))
    })?;
    let kv = store.get(&key(addr))?.ok_or_else(not_found)?;
    let r: FipRecord = serde_json::from_slice(&kv.value)
        .map_err(|e| RuntimeError::Internal(format!("bad floating IP record: {e}")))?;
    if r.tenant != tenant {
        return Err(not_found());
    }
    Ok((r, kv.mod_revision))
}

fn put_if_unchanged(store: &dyn Store, r: &FipRecord, rev: u64) -> Result<bool> {
    Ok(store
        .txn(
            Txn::new()
                .when(Compare::ModRevision(key(r.ip), rev))
                .then(Op::Put(key(r.ip), serde_json::to_vec(r).expect("json"))),
        )?
        .succeeded)
}

/// Allocates `count` addresses at once (all or none), within the tenant's quota.
pub fn allocate(
    store: &dyn Store,
    pool: &[Ipv4Addr],
    tenant: &str,
    count: u64,
) -> Result<Vec<Ipv4Addr>> {
    if count == 0 {
        return Err(RuntimeError::Invalid(
            "allocate at least one floating IP".into(),
        ));
    }
    if pool.is_empty() {
        return Err(RuntimeError::Unsupported(
            "this node has no floating IP pool; start hyperd with --fip-pool CIDR".into(),
        ));
    }
    let limit = quota::load(store, tenant)?.fips;
    loop {
        let counter = Counter::read(store, tenant, "fips")?;
        if counter.value() + count > limit {
            return Err(quota::exceeded("floating IPs", limit));
        }
        let taken: std::collections::BTreeSet<Ipv4Addr> =
            all(store)?.into_iter().map(|(r, _)| r.ip).collect();
        let free: Vec<Ipv4Addr> = pool
            .iter()
            .copied()
            .filter(|ip| !taken.contains(ip))
            .take(count as usize)
            .collect();
        if (free.len() as u64) < count {
            return Err(RuntimeError::Conflict(format!(
                "the floating IP pool has {} free addresses, {count} asked",
                free.len()
            )));
        }
        let mut txn = Txn::new()
            .when(counter.unchanged())
            .then(counter.set(counter.value() + count));
        for ip in &free {
            let r = FipRecord {
                ip: *ip,
                tenant: tenant.into(),
                name: String::new(),
                container: String::new(),
                service: String::new(),
                allocated: Utc::now(),
            };
            txn = txn
                .when(Compare::Absent(key(*ip)))
                .then(Op::Put(key(*ip), serde_json::to_vec(&r).expect("json")));
        }
        if store.txn(txn)?.succeeded {
            return Ok(free);
        }
    }
}

/// Releases an address (detaching it first when it is attached). Returns the container it
/// was attached to, if any.
pub fn release(store: &dyn Store, tenant: &str, ip: &str) -> Result<FipRecord> {
    loop {
        let (r, rev) = owned(store, tenant, ip)?;
        let counter = Counter::read(store, tenant, "fips")?;
        let done = store.txn(
            Txn::new()
                .when(Compare::ModRevision(key(r.ip), rev))
                .when(counter.unchanged())
                .then(counter.set(counter.value().saturating_sub(1)))
                .then(Op::Delete(key(r.ip))),
        )?;
        if done.succeeded {
            return Ok(r);
        }
    }
}

pub fn rename(store: &dyn Store, tenant: &str, ip: &str, name: &str) -> Result<()> {
    loop {
        let (mut r, rev) = owned(store, tenant, ip)?;
        r.name = name.into();
        if put_if_unchanged(store, &r, rev)? {
            return Ok(());
        }
    }
}

/// What a floating IP is attached to: one FIP per holder, one holder per FIP.
#[derive(Debug, Clone, Copy)]
pub enum Holder<'a> {
    Container { id: &'a str, name: &'a str },
    Service(&'a str),
}

impl Holder<'_> {
    fn slot(self, r: &mut FipRecord) -> &mut String {
        match self {
            Holder::Container { .. } => &mut r.container,
            Holder::Service(_) => &mut r.service,
        }
    }

    fn holds(self, r: &FipRecord) -> bool {
        match self {
            Holder::Container { id, .. } => r.container == id,
            Holder::Service(name) => r.service == name,
        }
    }

    fn key(self) -> String {
        match self {
            Holder::Container { id, .. } => id.to_string(),
            Holder::Service(name) => name.to_string(),
        }
    }

    fn already_has(self, ip: Ipv4Addr) -> String {
        match self {
            Holder::Container { name, .. } => {
                format!("container {name} already has floating IP {ip}; a container holds one")
            }
            Holder::Service(name) => format!("service {name} already has floating IP {ip}"),
        }
    }
}

/// The tenant's FIP attached to `holder`, with its record's revision.
fn held_by(store: &dyn Store, tenant: &str, holder: Holder) -> Result<Option<(FipRecord, u64)>> {
    Ok(all(store)?
        .into_iter()
        .find(|(r, _)| r.tenant == tenant && holder.holds(r)))
}

/// Attaches `ip` to `holder`.
pub fn attach(store: &dyn Store, tenant: &str, ip: &str, holder: Holder) -> Result<()> {
    loop {
        let (mut r, rev) = owned(store, tenant, ip)?;
        if holder.holds(&r) {
            return Ok(());
        }
        if !r.container.is_empty() || !r.service.is_empty() {
            return Err(RuntimeError::Conflict(format!(
                "floating IP {ip} is already attached; detach it first"
            )));
        }
        if let Some((other, _)) = held_by(store, tenant, holder)? {
            return Err(RuntimeError::Conflict(holder.already_has(other.ip)));
        }
        *holder.slot(&mut r) = holder.key();
        if put_if_unchanged(store, &r, rev)? {
            return Ok(());
        }
    }
}

/// Detaches the FIP of `holder`, returning it (`None`: it had none).
pub fn detach(store: &dyn Store, tenant: &str, holder: Holder) -> Result<Option<Ipv4Addr>> {
    loop {
        let Some((mut r, rev)) = held_by(store, tenant, holder)? else {
            return Ok(None);
        };
        holder.slot(&mut r).clear();
        if put_if_unchanged(store, &r, rev)? {
            return Ok(Some(r.ip));
        }
    }
}
