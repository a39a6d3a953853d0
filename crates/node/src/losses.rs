//! Node loss: a node down (its lease gone) for longer than `--node-lost-after` is declared
//! lost by the first node up, by name, so that nodes do not race to: what ran there is stopped
//! for good in the store and billed no further ([`Runtime::declare_lost`]), and marked so. A
//! node that comes back finds the mark and stops its copies of what was declared lost
//! ([`Runtime::answer_own_loss`]). The
//! declaring node takes over the lost node's services and crons ([`adopt`]): the services'
//! lost replicas go, and its reconciler starts new ones; and it starts again the lost containers
//! whose restart policy asks for it ([`Runtime::start_lost_here`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fleet::NodeState;
use crate::Runtime;

/// How long a node may be down before it is declared lost, unless told otherwise: long enough
/// for a hyperd to restart without its containers being given up.
pub const DEFAULT_LOST_AFTER: Duration = Duration::from_secs(30);

/// Declares lost nodes, every second, for as long as hyperd runs, and stops this node's
/// copies of what was declared lost while it was away. Nothing to do for a node alone.
pub async fn follow_forever(rt: Arc<Runtime>, lost_after: Duration) {
    let me = rt.config().node_name.clone();
    let mut down_since: HashMap<String, Instant> = HashMap::new();
    let mut declared: HashSet<String> = HashSet::new();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Ok(nodes) = crate::fleet::list(rt.store().as_ref()) else {
            continue;
        };
        if nodes.iter().all(|n| n.record.name == me) {
            continue;
        }
        if let Err(e) = rt.answer_own_loss().await {
            tracing::warn!("stopping copies of lost containers: {e}");
        }
        for n in &nodes {
            let name = n.record.name.clone();
            if n.state == NodeState::Ready {
                down_since.remove(&name);
                declared.remove(&name);
            } else {
                down_since.entry(name).or_insert_with(Instant::now);
            }
        }
        down_since.retain(|name, _| nodes.iter().any(|n| &n.record.name == name));
        let declarer = nodes
            .iter()
            .filter(|n| n.state == NodeState::Ready)
            .map(|n| n.record.name.as_str())
            .min();
        if declarer != Some(me.as_str()) {
            continue;
        }
        for (name, since) in &down_since {
            if since.elapsed() < lost_after || declared.contains(name) {
                continue;
            }
            // The list is a few seconds old when a loss before this one took long to answer:
            // a node back meanwhile is not declared.
            if crate::fleet::get(rt.store().as_ref(), name)
                .is_ok_and(|n| n.state == NodeState::Ready)
            {
                continue;
            }
            let declaring = rt.declare_lost(name).and_then(|lost| {
                let kept = adopt(&rt, "/services/", name)? + adopt(&rt, "/crons/", name)?;
                Ok((lost, kept))
            });
            let (lost, services) = match declaring {
                Ok(done) => done,
                Err(e) => {
                    tracing::warn!("declaring node {name} lost: {e}");
                    continue;
                }
            };
            tracing::warn!(
                "node {name} is lost (down for {}s): {} of its containers stopped for good, {services} of its services and crons taken over",
                since.elapsed().as_secs(),
                lost.len()
            );
            declared.insert(name.clone());
            for c in &lost {
                match rt.start_lost_here(c).await {
                    Ok(Some(new)) => tracing::warn!(
                        "container {} of lost node {name} started here by its restart policy, as {}",
                        c.name,
                        new.id
                    ),
                    Ok(None) => {}
                    Err(e) => tracing::warn!("starting container {} of lost node {name} here: {e}", c.name),
                }
            }
        }
    }
}

/// Takes over the records under `prefix` (services, crons) that the `lost` node kept: this
/// node reconciles or fires them from now on. Returns how many.
fn adopt(rt: &Runtime, prefix: &str, lost: &str) -> crate::Result<usize> {
    let me = &rt.config().node_name;
    let mut adopted = 0;
    for kv in rt.store().range(prefix)? {
        let Ok(mut record) = serde_json::from_slice::<serde_json::Value>(&kv.value) else {
            continue;
        };
        if record.get("node").and_then(|n| n.as_str()) != Some(lost) {
            continue;
        }
        record["node"] = serde_json::Value::from(me.as_str());
        let txn = store::Txn::new()
            .when(store::Compare::ModRevision(kv.key.clone(), kv.mod_revision))
            .then(store::Op::Put(
                kv.key.clone(),
                record.to_string().into_bytes(),
            ));
        if rt.store().txn(txn)?.succeeded {
            tracing::warn!("{}: taken over from lost node {lost}", kv.key);
            adopted += 1;
        }
    }
    Ok(adopted)
}
