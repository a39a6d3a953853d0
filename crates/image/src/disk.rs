//! Building an image's ext4 root disk with `mkfs.ext4 -d` (no mount, no loop device).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::{ImageError, IoContext, Result};

const BLOCK: u64 = 4096;
const MIB: u64 = 1 << 20;

/// Space and inodes a tree needs.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct TreeUsage {
    pub bytes: u64,
    pub inodes: u64,
}

/// Walks `root` without following symlinks; a hard-linked file counts once.
pub(crate) fn usage(root: &Path) -> Result<TreeUsage> {
    let mut u = TreeUsage::default();
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        u.inodes += 1;
        u.bytes += BLOCK;
        for e in fs::read_dir(&dir).ctx(|| format!("reading {}", dir.display()))? {
            let e = e.ctx(|| format!("reading {}", dir.display()))?;
            let m = fs::symlink_metadata(e.path())
                .ctx(|| format!("inspecting {}", e.path().display()))?;
            if m.is_dir() {
                stack.push(e.path());
            } else if m.nlink() < 2 || seen.insert(m.ino()) {
                u.inodes += 1;
                u.bytes += m.len().div_ceil(BLOCK) * BLOCK;
            }
        }
    }
    Ok(u)
}

/// Disk size for a tree: the root disk's size, or content * 1.3 + 64 MiB (rounded up to a MiB)
/// for a tree too big for it. A filesystem that already fills the overlay needs no online grow
/// when a container starts, and a sparse file costs only what is written.
pub(crate) fn disk_size(content: u64) -> u64 {
    ((content + content * 3 / 10 + 64 * MIB).div_ceil(MIB) * MIB).max(vm::ROOT_DISK_BYTES)
}

/// Makes an ext4 filesystem at `disk` (which must not exist) holding the tree at `tree`.
pub(crate) fn mkfs(tree: &Path, disk: &Path) -> Result<()> {
    let u = usage(tree)?;
    let size = disk_size(u.bytes);
    // Room for the container to create files too: ext4's usual one inode per 16 KiB, or
    // twice the tree's if it has more.
    let inodes = (u.inodes * 2).max(size / 16384);
    vm::ext4::make_from_tree(tree, disk, size, "hyper-root", Some(inodes)).map_err(|reason| {
        ImageError::Mkfs {
            disk: disk.into(),
            reason,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(disk_size(0), vm::ROOT_DISK_BYTES);
        assert_eq!(disk_size(10 * MIB), vm::ROOT_DISK_BYTES);
        assert_eq!(disk_size(10 << 30), (13 << 30) + 64 * MIB);
    }
}
