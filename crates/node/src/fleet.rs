//! The fleet's members (issue 18): every hyperd registers its node in the store with its
//! capacity, and says it is alive with a key under a lease it renews. A node whose lease ended
//! (its hyperd stopped, crashed, froze or lost the store for longer than the lease) is down.
//!
//! Store keys:
//! - `/nodes/<name>` -> [`NodeRecord`]: what the node is and can hold, and whether the
//!   operator drained it. Stays when the node goes down, until `hyperd node rm`.
//! - `/nodes-alive/<name>` -> [`Alive`], under the node's lease: present while it is up.
//! - `/nodes-lost/<name>` -> when the fleet declared it lost (`crate::losses`), until the node
//!   has stopped its copies of what ran there.
//!
//! A name belongs to one node (its data root's node id): a second hyperd taking a name in use
//! is refused, and a node restarted on the same data root takes its own name back at once (it
//! revokes the lease its earlier run left).

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use store::{Compare, LeaseId, Op, Store, Txn};

use crate::{Result, RuntimeError};

/// How long a node stays up without renewing its lease.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

fn record_key(name: &str) -> String {
    format!("/nodes/{name}")
}
pub(crate) fn lost_key(name: &str) -> String {
    format!("/nodes-lost/{name}")
}
fn alive_key(name: &str) -> String {
    format!("/nodes-alive/{name}")
}

/// Whether the scheduler may place new work on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    #[default]
    Active,
    /// The operator took it out of placement (`hyperd node drain`); what runs there stays.
    Drain,
}

/// A node as it registered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeRecord {
    pub name: String,
    /// The data root's node id: who owns the name.
    pub id: String,
    /// Where other nodes reach it (the fleet's network).
    pub address: Option<Ipv4Addr>,
    /// The port of its fleet listener there, where other nodes pass it requests.
    #[serde(default)]
    pub api_port: Option<u16>,
    pub cpus: u64,
    pub memory_bytes: u64,
    /// Free bytes under its data root when it registered.
    pub disk_free_bytes: u64,
    /// The instance types it can run (those whose memory fits in its own).
    pub sizes: Vec<String>,
    /// kvm or tcg.
    pub accel: String,
    pub version: String,
    /// First registration under this name.
    pub joined: DateTime<Utc>,
    /// This hyperd's registration.
    pub started: DateTime<Utc>,
    pub availability: Availability,
}

/// The value of a node's alive key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Alive {
    id: String,
    lease: i64,
}

/// Up (its lease lives) or down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Ready,
    Down,
}

/// A node as `node ls` and `node inspect` show it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeStatus {
    #[serde(flatten)]
    pub record: NodeRecord,
    pub state: NodeState,
}

/// Whether `node` runs what a record carrying `owner` describes (a container, a service, a
/// cron): its own, or one from before the fleet (no owner), which any node takes.
pub fn runs_here(owner: &str, node: &str) -> bool {
    owner.is_empty() || owner == node
}

/// Checks a node name: DNS-label-like, as host names are.
pub fn validate_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "node name {name:?}: give 1 to 63 lowercase letters, digits, '-' or '.', starting with a letter or digit"
        ))
    }
}

/// This hyperd's membership: registered, renewing its lease until [`Membership::leave`].
pub struct Membership {
    store: Arc<dyn Store>,
    name: String,
    id: String,
    ttl: Duration,
    lease: Mutex<LeaseId>,
}

impl Membership {
    /// Registers this node (`record.joined`, `availability` are kept from an earlier
    /// registration of the same node) and says it is alive under a new lease of `ttl`.
    pub fn join(store: Arc<dyn Store>, mut record: NodeRecord, ttl: Duration) -> Result<Arc<Self>> {
        let name = record.name.clone();
        validate_name(&name).map_err(RuntimeError::Invalid)?;
        if let Some(kv) = store.get(&alive_key(&name))? {
            let alive: Alive = serde_json::from_slice(&kv.value).map_err(corrupt)?;
            if alive.id != record.id {
                return Err(RuntimeError::Conflict(format!(
                    "node name {name} is in use by another hyperd that is up (node id {}): give this one another --node-name",
                    alive.id
                )));
            }
            // This data root's earlier run: its lease has not run out yet.
            store.lease_revoke(LeaseId(alive.lease))?;
        }
        let earlier = store.get(&record_key(&name))?;
        if let Some(kv) = &earlier {
            let old: NodeRecord = serde_json::from_slice(&kv.value).map_err(corrupt)?;
            if old.id != record.id {
                return Err(RuntimeError::Conflict(format!(
                    "node name {name} belongs to another node (node id {}, down): remove it with `hyperd node rm {name}` or give this one another --node-name",
                    old.id
                )));
            }
            record.joined = old.joined;
            record.availability = old.availability;
        }
        let lease = store.lease_grant(ttl)?;
        let alive = Alive {
            id: record.id.clone(),
            lease: lease.0,
        };
        let record_unchanged = match &earlier {
            Some(kv) => Compare::ModRevision(record_key(&name), kv.mod_revision),
            None => Compare::Absent(record_key(&name)),
        };
        let done = store.txn(
            Txn::new()
                .when(Compare::Absent(alive_key(&name)))
                .when(record_unchanged)
                .then(Op::Put(record_key(&name), to_json(&record)))
                .then(Op::PutLeased(alive_key(&name), to_json(&alive), lease)),
        )?;
        if !done.succeeded {
            store.lease_revoke(lease)?;
            return Err(RuntimeError::Conflict(format!(
                "node name {name} was taken while this hyperd registered it: try again"
            )));
        }
        tracing::info!(node = %name, "joined the fleet (lease {} s)", ttl.as_secs());
        Ok(Arc::new(Self {
            store,
            name,
            id: record.id,
            ttl,
            lease: Mutex::new(lease),
        }))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Renews the lease a third of its time to live apart, forever. A lease that ran out (the
    /// store was out of reach for longer than it) is replaced: the node says it is alive
    /// again, under the same name.
    pub async fn renew_forever(self: Arc<Self>) {
        loop {
            tokio::time::sleep(self.ttl / 3).await;
            let lease = *self.lease.lock().expect("poisoned");
            match self.store.lease_keep_alive(lease) {
                Ok(true) => {}
                Ok(false) => {
                    tracing::error!(node = %self.name, "this node's lease ran out (it was down for the fleet); registering again");
                    if let Err(e) = self.alive_again() {
                        tracing::warn!(node = %self.name, "registering again: {e}");
                    }
                }
                Err(e) => tracing::warn!(node = %self.name, "renewing this node's lease: {e}"),
            }
        }
    }

    fn alive_again(&self) -> Result<()> {
        let lease = self.store.lease_grant(self.ttl)?;
        let alive = Alive {
            id: self.id.clone(),
            lease: lease.0,
        };
        let done = self.store.txn(
            Txn::new()
                .when(Compare::Absent(alive_key(&self.name)))
                .then(Op::PutLeased(alive_key(&self.name), to_json(&alive), lease)),
        )?;
        if !done.succeeded {
            self.store.lease_revoke(lease)?;
            return Err(RuntimeError::Conflict(format!(
                "node name {} is held by another hyperd now",
                self.name
            )));
        }
        *self.lease.lock().expect("poisoned") = lease;
        Ok(())
    }

    /// As hyperd stops: the node is down at once (not a lease later).
    pub fn leave(&self) {
        let lease = *self.lease.lock().expect("poisoned");
        if let Err(e) = self.store.lease_revoke(lease) {
            tracing::warn!(node = %self.name, "leaving the fleet: {e}");
        }
    }
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("json")
}

fn corrupt(e: serde_json::Error) -> RuntimeError {
    RuntimeError::Internal(format!("a node record in the store is unreadable: {e}"))
}

/// Every registered node, by name, up or down.
pub fn list(store: &dyn Store) -> Result<Vec<NodeStatus>> {
    let alive: std::collections::HashSet<String> = store
        .range("/nodes-alive/")?
        .into_iter()
        .map(|kv| kv.key["/nodes-alive/".len()..].to_string())
        .collect();
    store
        .range("/nodes/")?
        .into_iter()
        .map(|kv| {
            let record: NodeRecord = serde_json::from_slice(&kv.value).map_err(corrupt)?;
            let state = if alive.contains(&record.name) {
                NodeState::Ready
            } else {
                NodeState::Down
            };
            Ok(NodeStatus { record, state })
        })
        .collect()
}

/// One node by name.
pub fn get(store: &dyn Store, name: &str) -> Result<NodeStatus> {
    let record: NodeRecord = match store.get(&record_key(name))? {
        Some(kv) => serde_json::from_slice(&kv.value).map_err(corrupt)?,
        None => return Err(no_such_node(name)),
    };
    let state = if store.get(&alive_key(name))?.is_some() {
        NodeState::Ready
    } else {
        NodeState::Down
    };
    Ok(NodeStatus { record, state })
}

fn no_such_node(name: &str) -> RuntimeError {
    RuntimeError::NotFound(format!("No such node: {name}"))
}

/// Sets whether new work may be placed on the node. Returns the node as it is now.
pub fn set_availability(
    store: &dyn Store,
    name: &str,
    availability: Availability,
) -> Result<NodeStatus> {
    // Compare-and-swap: a node registering at the same moment keeps what it read or retries.
    for _ in 0..10 {
        let Some(kv) = store.get(&record_key(name))? else {
            return Err(no_such_node(name));
        };
        let mut record: NodeRecord = serde_json::from_slice(&kv.value).map_err(corrupt)?;
        record.availability = availability;
        let done = store.txn(
            Txn::new()
                .when(Compare::ModRevision(record_key(name), kv.mod_revision))
                .then(Op::Put(record_key(name), to_json(&record))),
        )?;
        if done.succeeded {
            return get(store, name);
        }
    }
    Err(RuntimeError::Conflict(format!(
        "node {name} kept changing: try again"
    )))
}

/// Forgets a node that is down (its name may then be taken by another). An up node is
/// refused: stop its hyperd first.
pub fn remove(store: &dyn Store, name: &str) -> Result<()> {
    if store.get(&record_key(name))?.is_none() {
        return Err(no_such_node(name));
    }
    let done = store.txn(
        Txn::new()
            .when(Compare::Absent(alive_key(name)))
            .then(Op::Delete(record_key(name)))
            .then(Op::Delete(lost_key(name))),
    )?;
    if !done.succeeded {
        return Err(RuntimeError::Conflict(format!(
            "node {name} is up: stop its hyperd first (a node is removed once it is down)"
        )));
    }
    // Its own addresses on tenant networks (its balancers') are free for the others.
    crate::network::records::release_node_ips_everywhere(store, name)?;
    Ok(())
}

/// What the fleet can hold, over the nodes that are up.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Capacity {
    pub nodes: usize,
    pub nodes_ready: usize,
    /// Ready nodes the operator drained (counted in `nodes_ready`, not in the totals).
    pub nodes_draining: usize,
    pub cpus: u64,
    pub memory_bytes: u64,
    /// Of `memory_bytes`, what containers have not booked (`crate::placement`).
    pub memory_free_bytes: u64,
}

/// The fleet's capacity: nodes up and active count in the totals; `booked`: memory booked
/// on each node.
pub fn capacity(nodes: &[NodeStatus], booked: &std::collections::HashMap<String, u64>) -> Capacity {
    let mut c = Capacity {
        nodes: nodes.len(),
        ..Capacity::default()
    };
    for n in nodes.iter().filter(|n| n.state == NodeState::Ready) {
        c.nodes_ready += 1;
        if n.record.availability == Availability::Drain {
            c.nodes_draining += 1;
            continue;
        }
        c.cpus += n.record.cpus;
        c.memory_bytes += n.record.memory_bytes;
        let used = booked.get(&n.record.name).copied().unwrap_or(0);
        c.memory_free_bytes += n.record.memory_bytes.saturating_sub(used);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let s = store::RedbStore::open(&dir.path().join("db")).unwrap();
        (dir, Arc::new(s))
    }

    fn record(name: &str, id: &str) -> NodeRecord {
        NodeRecord {
            name: name.into(),
            id: id.into(),
            address: Some(Ipv4Addr::new(192, 0, 2, 1)),
            api_port: None,
            cpus: 2,
            memory_bytes: 4 << 30,
            disk_free_bytes: 10 << 30,
            sizes: vec!["s4".into()],
            accel: "tcg".into(),
            version: "test".into(),
            joined: Utc::now(),
            started: Utc::now(),
            availability: Availability::Active,
        }
    }

    #[test]
    fn names_are_dns_labels() {
        for good in ["n1", "node-a.rack2", "0"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "A", "a b", "a/b", &"x".repeat(64)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_name_belongs_to_one_node() {
        let (_d, s) = store();
        let a = Membership::join(s.clone(), record("n1", "id-a"), DEFAULT_LEASE).unwrap();
        // Another node under the same name, while it is up: refused.
        let e = Membership::join(s.clone(), record("n1", "id-b"), DEFAULT_LEASE)
            .err()
            .unwrap();
        assert!(e.to_string().contains("in use by another hyperd"), "{e}");
        // The same node again (a restart before its lease ran out): takes it back, keeps
        // what the operator set.
        set_availability(&*s, "n1", Availability::Drain).unwrap();
        let again = Membership::join(s.clone(), record("n1", "id-a"), DEFAULT_LEASE).unwrap();
        assert_eq!(
            get(&*s, "n1").unwrap().record.availability,
            Availability::Drain
        );
        assert_eq!(get(&*s, "n1").unwrap().state, NodeState::Ready);
        drop(a);
        // Down, the name still belongs to its node until removed.
        again.leave();
        assert_eq!(get(&*s, "n1").unwrap().state, NodeState::Down);
        let e = Membership::join(s.clone(), record("n1", "id-b"), DEFAULT_LEASE)
            .err()
            .unwrap();
        assert!(e.to_string().contains("hyperd node rm n1"), "{e}");
        remove(&*s, "n1").unwrap();
        Membership::join(s.clone(), record("n1", "id-b"), DEFAULT_LEASE).unwrap();
    }

    #[test]
    fn an_up_node_is_not_removed() {
        let (_d, s) = store();
        let _m = Membership::join(s.clone(), record("n1", "id-a"), DEFAULT_LEASE).unwrap();
        let e = remove(&*s, "n1").err().unwrap();
        assert!(matches!(e, RuntimeError::Conflict(_)), "{e}");
        assert!(matches!(remove(&*s, "nx"), Err(RuntimeError::NotFound(_))));
    }

    #[test]
    fn capacity_counts_active_nodes_that_are_up() {
        let status = |name: &str, state, availability| NodeStatus {
            record: NodeRecord {
                availability,
                ..record(name, name)
            },
            state,
        };
        let nodes = [
            status("a", NodeState::Ready, Availability::Active),
            status("b", NodeState::Ready, Availability::Drain),
            status("c", NodeState::Down, Availability::Active),
        ];
        let booked = [("a".to_string(), 1 << 30), ("b".to_string(), 1 << 30)].into();
        assert_eq!(
            capacity(&nodes, &booked),
            Capacity {
                nodes: 3,
                nodes_ready: 2,
                nodes_draining: 1,
                cpus: 2,
                memory_bytes: 4 << 30,
                memory_free_bytes: 3 << 30,
            }
        );
    }
}
