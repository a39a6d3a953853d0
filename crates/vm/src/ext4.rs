//! ext4 filesystems for a guest's root slot, made from a directory tree with `mkfs.ext4 -d`
//! (no mount, no loop device): an image's disk (crate `image`) and a standby VM's scratch root
//! (crate `shim`).

use std::path::Path;
use std::process::Command;

/// Makes an ext4 filesystem of `size` bytes in `disk` (created here, sparse) holding the tree
/// at `tree`, labelled `label`; `inodes`, when given, is the inode count. What `mkfs.ext4`
/// said when it fails.
pub fn make_from_tree(
    tree: &Path,
    disk: &Path,
    size: u64,
    label: &str,
    inodes: Option<u64>,
) -> Result<(), String> {
    let f =
        std::fs::File::create_new(disk).map_err(|e| format!("creating {}: {e}", disk.display()))?;
    f.set_len(size)
        .map_err(|e| format!("sizing {}: {e}", disk.display()))?;
    drop(f);
    let mut mkfs = Command::new("mkfs.ext4");
    // A small journal: a container's disk is not a database server's.
    mkfs.args(["-q", "-F", "-b", "4096", "-J", "size=32", "-L", label]);
    if let Some(n) = inodes {
        mkfs.args(["-N", &n.to_string()]);
    }
    let out = mkfs
        .arg("-d")
        .arg(tree)
        .arg(disk)
        .arg(format!("{}k", size / 1024))
        .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
        .output()
        .map_err(|e| format!("running mkfs.ext4: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "mkfs.ext4 exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}
