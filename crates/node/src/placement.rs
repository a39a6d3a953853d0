//! Where a new container runs: by its size against each node's memory that containers have not
//! booked yet, never past it. Memory is booked by every container that is not stopped
//! (created, running, restarting): each VM gets its whole size's memory when it starts.

use std::collections::HashMap;

use crate::fleet::{Availability, NodeState, NodeStatus};
use crate::model::{Container, Status};

/// Whether `c` holds its size's memory on its node.
pub fn books_memory(c: &Container) -> bool {
    matches!(
        c.state.status,
        Status::Created | Status::Running | Status::Restarting
    )
}

/// Bytes a container of `size` books (its VM's memory).
pub fn memory_of(size: &str) -> u64 {
    crate::sizes::lookup(size).map_or(0, |s| s.vm_memory_mib() << 20)
}

/// Memory booked on each node by the containers of every tenant (records without a node,
/// from before the fleet, are left out: the node that adopts them books them when it does).
pub fn booked_by_node<'a>(
    containers: impl IntoIterator<Item = &'a Container>,
) -> HashMap<String, u64> {
    let mut booked = HashMap::new();
    for c in containers.into_iter().filter(|c| books_memory(c)) {
        *booked.entry(c.node.clone()).or_default() += memory_of(&c.size);
    }
    booked
}

/// The nodes a container of `size` may go to, best first: up, active, offering the size and
/// with `need` bytes unbooked; the most unbooked first, `me` first among equals (no trip).
pub fn order(
    nodes: &[NodeStatus],
    booked: &HashMap<String, u64>,
    size: &str,
    me: &str,
) -> Vec<String> {
    let need = memory_of(size);
    let mut fits: Vec<(u64, bool, &str)> = nodes
        .iter()
        .filter(|n| n.state == NodeState::Ready && n.record.availability == Availability::Active)
        .filter(|n| n.record.sizes.iter().any(|s| s == size))
        .filter_map(|n| {
            let used = booked.get(&n.record.name).copied().unwrap_or(0);
            let free = n.record.memory_bytes.saturating_sub(used);
            (free >= need).then_some((free, n.record.name != me, n.record.name.as_str()))
        })
        .collect();
    fits.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(b.2)));
    fits.into_iter()
        .map(|(_, _, name)| name.to_string())
        .collect()
}

/// The node for a service's next replica: of the nodes with room for it (`order`, best first),
/// the one that runs the fewest of its replicas (`running`, by node), so that losing a node
/// loses as few as can be; `None` when no node has room.
pub fn spread(order: &[String], running: &HashMap<String, usize>) -> Option<String> {
    order
        .iter()
        .min_by_key(|node| running.get(*node).copied().unwrap_or(0))
        .cloned()
}

/// The refusal when no node can take a container of `size`.
pub fn no_room(nodes: &[NodeStatus], booked: &HashMap<String, u64>, size: &str) -> String {
    let most_free = nodes
        .iter()
        .filter(|n| n.state == NodeState::Ready && n.record.availability == Availability::Active)
        .map(|n| {
            n.record
                .memory_bytes
                .saturating_sub(booked.get(&n.record.name).copied().unwrap_or(0))
        })
        .max()
        .unwrap_or(0);
    format!(
        "no room for a {size} container ({} MiB of memory): the most any node has free is {} MiB; stop or remove containers, or choose a smaller size",
        memory_of(size) >> 20,
        most_free >> 20
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::NodeRecord;

    fn node(
        name: &str,
        memory_mib: u64,
        state: NodeState,
        availability: Availability,
    ) -> NodeStatus {
        NodeStatus {
            record: NodeRecord {
                name: name.into(),
                id: name.into(),
                address: None,
                api_port: None,
                cpus: 2,
                memory_bytes: memory_mib << 20,
                disk_free_bytes: 0,
                sizes: vec!["s1".into(), "s4".into()],
                accel: "tcg".into(),
                version: "0".into(),
                joined: chrono::Utc::now(),
                started: chrono::Utc::now(),
                availability,
            },
            state,
        }
    }

    #[test]
    fn replicas_go_to_the_node_with_the_fewest_then_the_best() {
        let order: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let running = |counts: &[(&str, usize)]| {
            counts
                .iter()
                .map(|(n, c)| (n.to_string(), *c))
                .collect::<HashMap<_, _>>()
        };
        assert_eq!(spread(&order, &running(&[])).as_deref(), Some("a"));
        assert_eq!(spread(&order, &running(&[("a", 1)])).as_deref(), Some("b"));
        let two_each_but_c = running(&[("a", 2), ("b", 2), ("c", 1), ("gone", 0)]);
        assert_eq!(spread(&order, &two_each_but_c).as_deref(), Some("c"));
        assert_eq!(spread(&[], &running(&[])), None);
    }

    #[test]
    fn the_most_free_node_first_and_never_past_its_memory() {
        let s4 = memory_of("s4") >> 20;
        let nodes = [
            node("a", 4 * s4, NodeState::Ready, Availability::Active),
            node("b", 4 * s4, NodeState::Ready, Availability::Active),
            node("c", 9 * s4, NodeState::Down, Availability::Active),
            node("d", 9 * s4, NodeState::Ready, Availability::Drain),
        ];
        let mut booked = HashMap::new();
        assert_eq!(
            order(&nodes, &booked, "s4", "b"),
            ["b", "a"],
            "equals: this node first"
        );
        booked.insert("b".to_string(), s4 << 20);
        assert_eq!(
            order(&nodes, &booked, "s4", "b"),
            ["a", "b"],
            "the most free first"
        );
        booked.insert("a".to_string(), (4 * s4) << 20);
        assert_eq!(
            order(&nodes, &booked, "s4", "b"),
            ["b"],
            "a full node is no candidate"
        );
        booked.insert("b".to_string(), (4 * s4) << 20);
        assert!(
            order(&nodes, &booked, "s4", "b").is_empty(),
            "down and drained nodes take nothing"
        );
        assert!(no_room(&nodes, &booked, "s4").contains("the most any node has free is 0 MiB"));
        assert!(
            order(&nodes, &HashMap::new(), "l3", "a").is_empty(),
            "a size no node offers"
        );
    }
}
