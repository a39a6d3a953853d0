//! `--store`: the embedded redb file (the default) or an etcd cluster.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

const USAGE: &str =
    "give redb (embedded, the default) or etcd://HOST:PORT[,HOST:PORT...][/NAMESPACE]";

pub fn open(data_root: &Path, spec: &str) -> anyhow::Result<Arc<dyn store::Store>> {
    if spec.starts_with("etcd://") {
        return etcd(spec);
    }
    if spec != "redb" {
        anyhow::bail!("--store {spec:?}: {USAGE}");
    }
    let store = store::RedbStore::open(&data_root.join("store.redb"))
        .context("open the state store (is another hyperd running on this data root?)")?;
    Ok(Arc::new(store))
}

#[cfg(feature = "etcd")]
fn etcd(spec: &str) -> anyhow::Result<Arc<dyn store::Store>> {
    let store = store::EtcdStore::open(spec).with_context(|| format!("--store {spec}"))?;
    tracing::info!("state store: {spec}");
    Ok(Arc::new(store))
}

#[cfg(not(feature = "etcd"))]
fn etcd(spec: &str) -> anyhow::Result<Arc<dyn store::Store>> {
    anyhow::bail!("--store {spec}: this hyperd was built without etcd (cargo feature `etcd`)")
}
