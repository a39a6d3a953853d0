//! The node's disk (issue 17, finding 5): what each tenant really takes of it, against its
//! `storage_gb` quota, and the free-space reserve on the data root.
//!
//! A tenant's use is what its things take on the host: its containers' root overlays and its
//! local volumes by their allocated blocks (a root disk is 10 GB to its guest and a few MB on
//! the host until it writes), and its images by their size. Both checks gate new allocations
//! (a container's create, a volume's create, a pull, a load): they refuse what would start
//! from a tenant already at its quota, or a node short of its reserve. A container that keeps
//! writing is not stopped by them: its use shows in `GET /info` (`StorageUsage`), and a host
//! disk that fills up pauses the VMs whose writes fail (`shim::disk_full`) rather than
//! corrupting their disks.

use std::path::Path;

use serde::Serialize;

use super::Runtime;
use crate::{quota, Result, RuntimeError};

/// 10^9: quotas are in GB as volumes' sizes are.
const GB: u64 = 1_000_000_000;

/// How long a new allocation on a node short of disk space waits at most for removals'
/// teardowns to free enough.
const TEARDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// An operator's size: `2G`, `512M` (either case) or bytes; `None` when it is none of them or
/// does not fit in a u64.
pub fn parse_size(s: &str) -> Option<u64> {
    let (n, unit) = match s.char_indices().last() {
        Some((i, 'G' | 'g')) => (&s[..i], 1u64 << 30),
        Some((i, 'M' | 'm')) => (&s[..i], 1 << 20),
        _ => (s, 1),
    };
    n.parse::<u64>().ok()?.checked_mul(unit)
}

/// What a tenant takes of the node's disk, in bytes.
#[derive(Debug, Clone, Copy, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct StorageUsage {
    /// Root overlays, allocated.
    pub containers: u64,
    /// Local volumes, allocated.
    pub volumes: u64,
    /// Images, by size.
    pub images: u64,
    pub total: u64,
    /// The tenant's `storage_gb`, in bytes.
    pub quota: u64,
}

/// Bytes a file takes on its file system (0 when it is gone).
fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map_or(0, |m| m.blocks() * 512)
}

fn human(bytes: u64) -> String {
    format!("{:.2} GB", bytes as f64 / GB as f64)
}

impl Runtime {
    /// What `tenant` takes of this node's disk now.
    pub fn storage_usage(&self, tenant: &str) -> Result<StorageUsage> {
        let containers = self
            .list(tenant)
            .iter()
            .map(|c| allocated(&self.dir(&c.id).join("root.qcow2")))
            .sum();
        let volumes = self
            .volumes
            .list(tenant)?
            .iter()
            .filter(|v| v.driver == "local")
            .map(|v| allocated(&self.volume_file(&v.id)))
            .sum();
        let images = self.images.list(tenant)?.iter().map(|i| i.info.size).sum();
        let quota = quota::load(self.store.as_ref(), tenant)?
            .storage_gb
            .saturating_mul(GB);
        Ok(StorageUsage {
            containers,
            volumes,
            images,
            total: containers + volumes + images,
            quota,
        })
    }

    fn volume_file(&self, id: &str) -> std::path::PathBuf {
        self.cfg.data_root.join(format!("volumes/local/{id}.img"))
    }

    /// Refuse a new allocation for `tenant` (a container, a volume, an image) when the tenant is
    /// at its storage quota (403, as every quota) or the data root is below its free-space
    /// reserve (507). Short of the reserve while removed containers' disks are still being
    /// deleted (`teardown`), it waits for them first: a removal has already freed that space to
    /// its user.
    pub async fn check_storage(&self, tenant: &str) -> Result<()> {
        let space = || {
            shim::disk_full::space(&self.cfg.data_root)
                .map_err(RuntimeError::io("reading the data root's free space"))
        };
        let (mut free, total) = space()?;
        let reserve = self.cfg.disk_reserve.bytes(total);
        if free < reserve {
            let enough = || match space() {
                Ok((now, _)) => {
                    free = now;
                    now >= reserve
                }
                Err(_) => false,
            };
            self.teardowns.until(TEARDOWN_WAIT, enough).await;
        }
        if free < reserve {
            return Err(RuntimeError::NoSpace(format!(
                "this node is short of disk space ({} free, it keeps {} in reserve): nothing new can be \
                 stored on it until space is freed; remove unused containers, volumes or images, or ask \
                 the operator",
                human(free),
                human(reserve)
            )));
        }
        let u = self.storage_usage(tenant)?;
        if u.total >= u.quota {
            return Err(RuntimeError::Quota(format!(
                "storage quota exceeded: your containers' disks, volumes and images take {} of the \
                 {} GB of storage per account (containers {}, volumes {}, images {}); remove some, \
                 or ask the operator to raise the quota",
                human(u.total),
                u.quota / GB,
                human(u.containers),
                human(u.volumes),
                human(u.images)
            )));
        }
        Ok(())
    }

    /// Why the running container `id` is paused if its VM waits for disk space
    /// (`shim::disk_full`).
    pub fn paused_for_disk(&self, id: &str) -> Option<&'static str> {
        crate::shim_link::read_state(&self.dir(id))
            .filter(|s| s.disk_full)
            .map(|_| shim::disk_full::MESSAGE)
    }
}
