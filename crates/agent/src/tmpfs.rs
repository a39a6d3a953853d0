//! Docker's tmpfs mounts (`--tmpfs`, `--mount type=tmpfs`): file systems in the guest's memory,
//! mounted into the container's root at `Start` after its volumes.

use std::path::Path;

use agent_proto::TmpfsMount;
use nix::mount::{mount, MsFlags};

use crate::volumes::target::{self, TargetError};

#[derive(Debug, thiserror::Error)]
pub enum TmpfsError {
    #[error("tmpfs target {target:?}")]
    Target {
        target: String,
        #[source]
        source: TargetError,
    },
    #[error("mount a tmpfs on {target}")]
    Mount {
        target: String,
        #[source]
        source: nix::Error,
    },
}

/// Mounts each of `mounts`, in order, under `root` (the container's root in the agent's
/// namespace); the target is resolved inside that root as a volume's is.
pub fn mount_all(root: &Path, mounts: &[TmpfsMount]) -> Result<(), TmpfsError> {
    mounts.iter().try_for_each(|m| mount_one(root, m))
}

fn mount_one(root: &Path, m: &TmpfsMount) -> Result<(), TmpfsError> {
    let dir = target::resolve(root, &m.target).map_err(|source| TmpfsError::Target {
        target: m.target.clone(),
        source,
    })?;
    let mut data = format!("mode={:o}", m.mode & 0o7777);
    if m.size_bytes > 0 {
        data.push_str(&format!(",size={}", m.size_bytes));
    }
    mount(
        Some("tmpfs"),
        &dir,
        Some("tmpfs"),
        flags(m),
        Some(data.as_str()),
    )
    .map_err(|source| TmpfsError::Mount {
        target: m.target.clone(),
        source,
    })
}

fn flags(m: &TmpfsMount) -> MsFlags {
    [
        (m.read_only, MsFlags::MS_RDONLY),
        (m.noexec, MsFlags::MS_NOEXEC),
        (m.nosuid, MsFlags::MS_NOSUID),
        (m.nodev, MsFlags::MS_NODEV),
    ]
    .into_iter()
    .filter(|(on, _)| *on)
    .fold(MsFlags::empty(), |all, (_, flag)| all | flag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_become_mount_flags() {
        let m = TmpfsMount {
            read_only: true,
            noexec: true,
            nodev: true,
            ..Default::default()
        };
        assert_eq!(
            flags(&m),
            MsFlags::MS_RDONLY | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV
        );
        assert_eq!(flags(&TmpfsMount::default()), MsFlags::empty());
    }
}
