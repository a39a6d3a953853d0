//! Per-tenant quotas, enforced atomically in the store: a counter per resource kind, changed
//! only by a compare-and-swap in the same transaction that creates or removes the resource, so
//! 20 concurrent creates against a quota of 10 leave exactly 10.

use serde::{Deserialize, Serialize};
use store::{Compare, KeyValue, Op, Store};

use crate::{Result, RuntimeError};

/// Hyper's defaults per account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Quotas {
    pub containers: u64,
    pub fips: u64,
    pub services: u64,
    pub volumes: u64,
    /// GB of volumes, all together.
    pub volume_gb: u64,
    pub snapshots: u64,
    /// GB (10^9 bytes) of the node's disk the tenant's root disks, volumes and images really
    /// take (allocated blocks, not their nominal sizes): see `Runtime::check_storage`.
    pub storage_gb: u64,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            containers: 10,
            fips: 2,
            services: 5,
            volumes: 40,
            volume_gb: 1000,
            snapshots: 40,
            storage_gb: 200,
        }
    }
}

/// An operator's change of some quotas (`hyperd tenant quota`): the fields given replace the
/// current ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaChange {
    pub containers: Option<u64>,
    pub fips: Option<u64>,
    pub services: Option<u64>,
    pub volumes: Option<u64>,
    pub volume_gb: Option<u64>,
    pub snapshots: Option<u64>,
    pub storage_gb: Option<u64>,
}

impl QuotaChange {
    pub fn apply(&self, q: &mut Quotas) {
        let set = |field: &mut u64, v: Option<u64>| *field = v.unwrap_or(*field);
        set(&mut q.containers, self.containers);
        set(&mut q.fips, self.fips);
        set(&mut q.services, self.services);
        set(&mut q.volumes, self.volumes);
        set(&mut q.volume_gb, self.volume_gb);
        set(&mut q.snapshots, self.snapshots);
        set(&mut q.storage_gb, self.storage_gb);
    }
}

impl std::fmt::Display for Quotas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} containers, {} floating IPs, {} services, {} volumes, {} GB of volumes, {} snapshots, {} GB of storage",
            self.containers,
            self.fips,
            self.services,
            self.volumes,
            self.volume_gb,
            self.snapshots,
            self.storage_gb
        )
    }
}

pub fn quotas_key(tenant: &str) -> String {
    format!("/quotas/{tenant}")
}

pub fn load(store: &dyn Store, tenant: &str) -> Result<Quotas> {
    Ok(match store.get(&quotas_key(tenant))? {
        Some(kv) => {
            serde_json::from_slice(&kv.value).map_err(|e| RuntimeError::Internal(e.to_string()))?
        }
        None => Quotas::default(),
    })
}

/// A counted resource kind and its current count.
pub struct Counter {
    key: String,
    current: Option<KeyValue>,
}

impl Counter {
    pub fn read(store: &dyn Store, tenant: &str, kind: &str) -> Result<Self> {
        let key = format!("/counts/{tenant}/{kind}");
        let current = store.get(&key)?;
        Ok(Self { key, current })
    }

    pub fn value(&self) -> u64 {
        self.current
            .as_ref()
            .and_then(|kv| std::str::from_utf8(&kv.value).ok()?.parse().ok())
            .unwrap_or(0)
    }

    /// The transaction's guard: the counter is still what we read.
    pub fn unchanged(&self) -> Compare {
        match &self.current {
            Some(kv) => Compare::ModRevision(self.key.clone(), kv.mod_revision),
            None => Compare::Absent(self.key.clone()),
        }
    }

    pub fn set(&self, value: u64) -> Op {
        Op::Put(self.key.clone(), value.to_string().into_bytes())
    }
}

pub fn exceeded(kind: &str, limit: u64) -> RuntimeError {
    RuntimeError::Quota(format!(
        "quota exceeded: at most {limit} {kind} per account; remove some, or ask the operator to raise the quota"
    ))
}
