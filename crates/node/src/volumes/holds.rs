//! Which running container holds each volume: one at a time, across the whole fleet (two VMs
//! mounting one ext4 would corrupt it). Each hold is a store record, claimed in one
//! transaction for all of a container's volumes:
//! - `/volume-holders/{tenant}/{volume}` -> `{node}/{container}`.
//!
//! A hold ends when its container stops; a crash's are ended at recovery
//! ([`Volumes::end_holds_of_node`]), a lost node's container's when the fleet declares it lost
//! (once the lost node is fenced from a shared volume).

use std::collections::HashSet;

use store::{Compare, KeyValue, Op, Txn};

use super::{in_use, Volumes};
use crate::Result;

const PREFIX: &str = "/volume-holders/";

pub(super) fn key(tenant: &str, volume: &str) -> String {
    format!("{PREFIX}{tenant}/{volume}")
}

/// A volume's holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub node: String,
    /// The container's id (or a pseudo-holder, such as a volume being initialised).
    pub container: String,
}

impl Holder {
    fn parse(kv: &KeyValue) -> Option<Self> {
        let value = std::str::from_utf8(&kv.value).ok()?;
        let (node, container) = value.split_once('/')?;
        Some(Self {
            node: node.to_string(),
            container: container.to_string(),
        })
    }

    fn value(&self) -> Vec<u8> {
        format!("{}/{}", self.node, self.container).into_bytes()
    }
}

impl Volumes {
    pub fn holder(&self, tenant: &str, volume: &str) -> Result<Option<Holder>> {
        Ok(self
            .store
            .get(&key(tenant, volume))?
            .as_ref()
            .and_then(Holder::parse))
    }

    /// Container `container` of this node holds every one of `volumes`, or none of them: 409
    /// naming the container that holds one already.
    pub fn hold(&self, tenant: &str, container: &str, volumes: &[String]) -> Result<()> {
        let me = Holder {
            node: self.node.clone(),
            container: container.to_string(),
        };
        loop {
            let mut txn = Txn::new();
            for volume in volumes {
                let k = key(tenant, volume);
                match self.store.get(&k)? {
                    Some(kv) => match Holder::parse(&kv) {
                        Some(other) if other != me => {
                            return Err(in_use(volume, &other.container));
                        }
                        _ => txn = txn.when(Compare::ModRevision(k.clone(), kv.mod_revision)),
                    },
                    None => txn = txn.when(Compare::Absent(k.clone())),
                }
                txn = txn.then(Op::Put(k, me.value()));
            }
            if self.store.txn(txn)?.succeeded {
                return Ok(());
            }
        }
    }

    /// The hold of this node's `container` on each of `volumes` ends (a hold another has
    /// taken meanwhile stays).
    pub fn release(&self, tenant: &str, container: &str, volumes: &[String]) {
        self.release_held_by(tenant, &self.node, container, volumes)
    }

    /// [`Self::release`] for a container of any node (one of a lost node's).
    pub fn release_held_by(&self, tenant: &str, node: &str, container: &str, volumes: &[String]) {
        let holder = Holder {
            node: node.to_string(),
            container: container.to_string(),
        };
        for volume in volumes {
            let k = key(tenant, volume);
            let txn = Txn::new()
                .when(Compare::Value(k.clone(), holder.value()))
                .then(Op::Delete(k));
            if let Err(e) = self.store.txn(txn) {
                tracing::error!("releasing volume {volume} of {container}: {e}");
            }
        }
    }

    /// Ends the holds of `node`'s containers but those in `running`: at recovery, what
    /// stopped while hyperd was away (or was being initialised).
    pub fn end_holds_of_node(&self, node: &str, running: &HashSet<String>) -> Result<usize> {
        let mut ended = 0;
        for kv in self.store.range(PREFIX)? {
            let Some(h) = Holder::parse(&kv) else {
                continue;
            };
            if h.node != node || running.contains(&h.container) {
                continue;
            }
            let txn = Txn::new()
                .when(Compare::ModRevision(kv.key.clone(), kv.mod_revision))
                .then(Op::Delete(kv.key.clone()));
            if self.store.txn(txn)?.succeeded {
                ended += 1;
            }
        }
        Ok(ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volumes::tests::volumes_on;

    #[test]
    fn one_container_holds_a_volume_across_nodes() {
        let (_dir, store, n1) = volumes_on("n1", None);
        let (_, _, n2) = volumes_on("n2", Some(store));
        let both = ["a".to_string(), "b".to_string()];
        n1.hold("t", "c1", &both).unwrap();
        // Held again by the same container (a restart of hyperd): fine.
        n1.hold("t", "c1", &both).unwrap();
        let e = n2.hold("t", "c2", &["b".into()]).unwrap_err();
        assert!(e.to_string().contains("in use by container c1"), "{e}");
        // Another tenant's volume of the same name is another volume.
        n2.hold("u", "c2", &["b".into()]).unwrap();
        // All or nothing: c2 holds neither when one is taken.
        let e = n2.hold("t", "c2", &["z".into(), "a".into()]).unwrap_err();
        assert!(e.to_string().contains("c1"), "{e}");
        assert_eq!(n2.holder("t", "z").unwrap(), None);
        // Only the holder's node and container release it.
        n2.release("t", "c1", &both);
        assert_eq!(n1.holder("t", "a").unwrap().unwrap().container, "c1");
        n1.release("t", "c1", &["a".into()]);
        n2.hold("t", "c2", &["a".into()]).unwrap();
        assert_eq!(
            n1.holder("t", "a").unwrap(),
            Some(Holder {
                node: "n2".into(),
                container: "c2".into()
            })
        );
        // A lost node's container's hold ends through another node.
        n2.release_held_by("t", "n1", "c1", &["b".into()]);
        assert_eq!(n2.holder("t", "b").unwrap(), None);
        n1.hold("t", "c1", &["b".into()]).unwrap();
        // n1 recovering with nothing running: its holds end, n2's stay.
        assert_eq!(n2.end_holds_of_node("n1", &HashSet::new()).unwrap(), 1);
        assert_eq!(n2.holder("t", "b").unwrap(), None);
        assert!(n2.holder("t", "a").unwrap().is_some());
        let running = HashSet::from(["c2".to_string()]);
        assert_eq!(n2.end_holds_of_node("n2", &running).unwrap(), 0);
    }
}
