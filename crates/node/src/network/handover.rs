//! What a stopping hyperd hands the next one for each tenant namespace it leaves up (issue 19):
//! what the namespace's links were built from (a digest) and the ruleset loaded into it, with
//! its tables as the kernel listed them after the load. The next hyperd takes those as applied,
//! so its first sync of the tenant does not build again what is there (a tenant's first start
//! after hyperd's own paid ~0.06 s for it). What the store says now is still what is applied:
//! a sync compares it with what was handed over and applies any difference, and the reconciler
//! reads the kernel back within its interval, as after any sync. Written at a clean stop only,
//! and removed as it is read, so a crash later never hands over state that went stale.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// In the tenant's state directory (`DATA/net/tN`).
const FILE: &str = "applied.json";

#[derive(Serialize, Deserialize)]
pub(super) struct Handover {
    /// [`links_digest`] of what the links were built from.
    pub links: String,
    /// The tenant ruleset as rendered and loaded.
    pub rules: String,
    /// Its tables as `nft list` printed them right after.
    pub installed: net::Tables,
}

/// A digest of what a namespace's links are built from (the inputs' own rendering: a hyperd
/// that renders them otherwise builds the links again, which is always safe).
pub(super) fn links_digest(inputs: &net::NetnsInputs) -> String {
    hex::encode(Sha256::digest(format!("{inputs:?}").as_bytes()))
}

pub(super) fn write(dir: &Path, handover: &Handover) -> std::io::Result<()> {
    let tmp = dir.join(format!("{FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec(handover)?)?;
    std::fs::rename(&tmp, dir.join(FILE))
}

/// The handover in `dir`, removed as it is read (`None`: none, or unreadable).
pub(super) fn take(dir: &Path) -> Option<Handover> {
    let path = dir.join(FILE);
    let raw = std::fs::read(&path).ok()?;
    let _ = std::fs::remove_file(&path);
    serde_json::from_slice(&raw).ok()
}
