//! The records hyperd keeps per volume and per snapshot, in the store under the tenant.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Hyper's label marking a volume made for one container (`hyper run -v ./dir:/p`, a URL
/// source): it goes when that container goes.
pub const AUTOREMOVE_LABEL: &str = "autoremove";

/// Bytes in one of Hyper's "GB" (sizes are binary, as the root disk's 10 GB is).
pub const GB: u64 = 1 << 30;

/// A GB as prices count it (0.1 $ per GB-month: 10^9 bytes).
pub const BILLED_GB: u64 = 1_000_000_000;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Volume {
    /// Never reused: the backend's name for the volume's blocks.
    pub id: String,
    pub tenant: String,
    /// The tenant's name for it (unique per tenant).
    pub name: String,
    /// The backend: "local" or "rbd".
    pub driver: String,
    pub size_gb: u64,
    pub labels: BTreeMap<String, String>,
    /// What the client asked for, as Docker echoes it (`size`, `snapshot`).
    pub options: BTreeMap<String, String>,
    pub created: DateTime<Utc>,
    /// Made for a container's `-v /path` or an image's `VOLUME` (Docker's anonymous volumes):
    /// `rm -v` and `run --rm` remove it with the container.
    #[serde(default)]
    pub anonymous: bool,
    /// The node whose disk holds it (a `local` volume in a fleet): containers that use it
    /// run there. Empty for shared storage (`rbd`) and in records from before the fleet.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
}

impl Volume {
    pub fn bytes(&self) -> u64 {
        self.size_gb * GB
    }

    /// On storage every node reaches (rbd), not on one node's disk: a container using it can
    /// run on any node, once the last one to attach it is fenced.
    pub fn on_shared_storage(&self) -> bool {
        self.node.is_empty() && self.driver != "local"
    }

    /// Goes with the container that uses it.
    pub fn goes_with_container(&self) -> bool {
        self.anonymous
            || self
                .labels
                .get(AUTOREMOVE_LABEL)
                .is_some_and(|v| v == "true")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    pub id: String,
    pub tenant: String,
    pub name: String,
    /// The volume's name when the snapshot was taken.
    pub volume: String,
    pub driver: String,
    pub size_gb: u64,
    pub created: DateTime<Utc>,
}

/// A container's use of a volume, kept in its record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Mount {
    /// The volume's name.
    pub volume: String,
    /// Absolute path in the container.
    pub destination: String,
    pub read_only: bool,
    /// `volume-nocopy`: do not copy the image's files into the volume when it is empty.
    #[serde(default)]
    pub no_copy: bool,
}
