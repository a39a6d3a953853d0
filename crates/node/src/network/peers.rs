//! Other nodes' containers in this node's tenant networks: a container another node starts,
//! moves or removes changes the VXLAN peers (and the DNS names) of its tenant here, as does
//! another node's own address on a network (its balancer's), and a node going down or coming
//! up changes the peers of every tenant. A floating IP attached anywhere is routed by every
//! node to the one that runs its container. The node's own changes go
//! through its own syncs.

use std::sync::Arc;

use crate::model::Container;
use crate::Runtime;

/// Syncs a tenant's network here whenever another node's container of it changes, and every
/// tenant's when a node comes up or goes down, until hyperd stops. Nothing to follow without
/// `--node-address` (no overlay: one node).
pub async fn follow_other_nodes_forever(runtime: Arc<Runtime>) {
    if runtime.config().net.node_address.is_none() {
        return;
    }
    let node = runtime.config().node_name.clone();
    let mut containers = runtime.store().watch("/containers/");
    let mut nodes = runtime.store().watch("/nodes-alive/");
    let mut addresses = runtime.store().watch("/ipam/");
    let mut fips = runtime.store().watch("/fips/");
    let own_claim = format!("node:{node}");
    loop {
        let synced = tokio::select! {
            Some(change) = containers.next() => {
                let Some(tenant) = change.key().split('/').nth(2).map(String::from) else {
                    continue;
                };
                if let store::Event::Put(kv) = &change {
                    if serde_json::from_slice::<Container>(&kv.value).is_ok_and(|c| c.node == node) {
                        continue;
                    }
                }
                runtime.with_networks(move |n| n.sync_tenant(&tenant, &[])).await
            }
            Some(_) = nodes.next() => runtime.with_networks(|n| n.sync_all()).await,
            // A FIP attached, detached or released through another node: its container's node
            // routes and forwards it, the others route it there. A release does not say
            // whose it was.
            Some(change) = fips.next() => match &change {
                store::Event::Put(kv) => {
                    let Ok(f) = serde_json::from_slice::<super::fips::FipRecord>(&kv.value) else {
                        continue;
                    };
                    runtime.with_networks(move |n| n.sync_tenant(&f.tenant, &[])).await
                }
                _ => runtime.with_networks(|n| n.sync_all()).await,
            },
            // Another node's own address on a network (its balancer's) came or went; a
            // removal does not say whose, so any is followed.
            Some(change) = addresses.next() => {
                let Some(tenant) = change.key().split('/').nth(2).map(String::from) else {
                    continue;
                };
                if let store::Event::Put(kv) = &change {
                    if !kv.value.starts_with(b"node:") || kv.value == own_claim.as_bytes() {
                        continue;
                    }
                }
                runtime.with_networks(move |n| n.sync_tenant(&tenant, &[])).await
            }
            else => return,
        };
        if let Err(e) = synced {
            tracing::warn!("following the fleet's other nodes: {e}");
        }
    }
}
