//! Where a volume's blocks live. One trait, a backend per kind of storage (youki's cgroup
//! managers, Cloud Hypervisor's hypervisors): `local` (a sparse file per volume on this node)
//! now, Ceph `rbd` beside it. Calls block (mkfs, copies): the caller runs them off the async
//! runtime. The volume's content is the tenant's: a backend copies and clones it as blocks and
//! never mounts or parses it on the host.

use std::path::{Path, PathBuf};
use std::process::Command;

use shim::VolumeDisk;

/// A volume backend's failure, with what it was doing.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BackendError(pub String);

pub type BackendResult<T> = std::result::Result<T, BackendError>;

pub trait Backend: Send + Sync {
    /// The driver name users see ("local", "rbd").
    fn name(&self) -> &'static str;
    /// A new volume `id` of `bytes`, holding an empty ext4 file system, or the tree at `tree`.
    fn create(&self, id: &str, bytes: u64, tree: Option<&Path>) -> BackendResult<()>;
    /// Replace volume `id`'s content with a new file system holding `tree` (a volume being
    /// initialised, attached to no VM).
    fn replace(&self, id: &str, bytes: u64, tree: &Path) -> BackendResult<()>;
    /// A new volume `id` of `bytes` with snapshot `snapshot`'s blocks (`bytes` is at least the
    /// snapshot's size; the guest grows the file system to the device).
    fn create_from_snapshot(&self, id: &str, snapshot: &str, bytes: u64) -> BackendResult<()>;
    /// Snapshot `snapshot` of volume `id`'s blocks as they are now (the caller has frozen the
    /// guest's file system when a VM uses it).
    fn snapshot(&self, id: &str, snapshot: &str) -> BackendResult<()>;
    fn remove(&self, id: &str) -> BackendResult<()>;
    fn remove_snapshot(&self, snapshot: &str) -> BackendResult<()>;
    /// How a VM reaches volume `id`.
    fn disk(&self, id: &str) -> VolumeDisk;
    /// Bytes the volume takes on its storage now (`system df`).
    fn used_bytes(&self, id: &str) -> u64;
    /// Volume and snapshot ids the backend holds, for cleaning up after a crash.
    fn list(&self) -> BackendResult<(Vec<String>, Vec<String>)>;
    /// Cuts every client that has volume `id` open off from it (the VM of a node the fleet
    /// lost), so that another node may take it: the storage refuses their writes from then on.
    fn fence(&self, id: &str) -> BackendResult<()>;
}

/// `local`: one sparse raw file per volume under `DATA/volumes`, ext4 inside. QEMU opens it
/// with `discard=unmap`, so files deleted in the guest (and `fstrim`) punch holes in it.
/// Snapshots are sparse copies beside it.
pub struct Local {
    volumes: PathBuf,
    snapshots: PathBuf,
}

const IMG: &str = "img";

impl Local {
    pub fn new(data_root: &Path) -> BackendResult<Self> {
        let volumes = data_root.join("volumes/local");
        let snapshots = data_root.join("volumes/snapshots");
        for d in [&volumes, &snapshots] {
            std::fs::create_dir_all(d)
                .map_err(|e| BackendError(format!("creating {}: {e}", d.display())))?;
        }
        Ok(Self { volumes, snapshots })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.volumes.join(format!("{id}.{IMG}"))
    }

    fn snapshot_path(&self, id: &str) -> PathBuf {
        self.snapshots.join(format!("{id}.{IMG}"))
    }

    /// Builds `path` through a temporary name, so a crash leaves no half-made volume under
    /// the real one.
    fn publish(path: &Path, make: impl FnOnce(&Path) -> BackendResult<()>) -> BackendResult<()> {
        let tmp = path.with_extension("tmp");
        let _ = std::fs::remove_file(&tmp);
        if let Err(e) = make(&tmp) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, path)
            .map_err(|e| BackendError(format!("publishing {}: {e}", path.display())))
    }
}

/// An ext4 file system of `bytes` in a new sparse file at `disk`, holding `tree` or nothing.
pub(super) fn make_ext4(disk: &Path, bytes: u64, tree: Option<&Path>) -> BackendResult<()> {
    if let Some(tree) = tree {
        return vm::ext4::make_from_tree(tree, disk, bytes, "hyper-volume", None)
            .map_err(BackendError);
    }
    let empty = disk.with_extension("empty");
    let _ = std::fs::remove_dir_all(&empty);
    std::fs::create_dir_all(&empty)
        .map_err(|e| BackendError(format!("creating {}: {e}", empty.display())))?;
    let made = vm::ext4::make_from_tree(&empty, disk, bytes, "hyper-volume", None);
    let _ = std::fs::remove_dir(&empty);
    made.map_err(BackendError)
}

/// A sparse copy (holes stay holes; a reflink where the file system has them).
fn sparse_copy(from: &Path, to: &Path) -> BackendResult<()> {
    let out = Command::new("cp")
        .args(["--sparse=always", "--reflink=auto", "--"])
        .arg(from)
        .arg(to)
        .output()
        .map_err(|e| BackendError(format!("running cp: {e}")))?;
    if !out.status.success() {
        return Err(BackendError(format!(
            "copying {} to {}: {}",
            from.display(),
            to.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn remove_file(path: &Path) -> BackendResult<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(BackendError(format!("removing {}: {e}", path.display()))),
    }
}

fn ids_in(dir: &Path) -> BackendResult<Vec<String>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| BackendError(format!("reading {}: {e}", dir.display())))?;
    Ok(entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(&format!(".{IMG}")).map(String::from)
        })
        .collect())
}

impl Backend for Local {
    fn name(&self) -> &'static str {
        "local"
    }

    fn create(&self, id: &str, bytes: u64, tree: Option<&Path>) -> BackendResult<()> {
        Self::publish(&self.path(id), |tmp| make_ext4(tmp, bytes, tree))
    }

    fn replace(&self, id: &str, bytes: u64, tree: &Path) -> BackendResult<()> {
        Self::publish(&self.path(id), |tmp| make_ext4(tmp, bytes, Some(tree)))
    }

    fn create_from_snapshot(&self, id: &str, snapshot: &str, bytes: u64) -> BackendResult<()> {
        Self::publish(&self.path(id), |tmp| {
            sparse_copy(&self.snapshot_path(snapshot), tmp)?;
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(tmp)
                .map_err(|e| BackendError(format!("opening {}: {e}", tmp.display())))?;
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if bytes > len {
                f.set_len(bytes)
                    .map_err(|e| BackendError(format!("growing {}: {e}", tmp.display())))?;
            }
            Ok(())
        })
    }

    fn snapshot(&self, id: &str, snapshot: &str) -> BackendResult<()> {
        Self::publish(&self.snapshot_path(snapshot), |tmp| {
            sparse_copy(&self.path(id), tmp)
        })
    }

    fn remove(&self, id: &str) -> BackendResult<()> {
        remove_file(&self.path(id))
    }

    fn remove_snapshot(&self, snapshot: &str) -> BackendResult<()> {
        remove_file(&self.snapshot_path(snapshot))
    }

    fn disk(&self, id: &str) -> VolumeDisk {
        VolumeDisk::Local {
            path: self.path(id),
        }
    }

    fn used_bytes(&self, id: &str) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(self.path(id)).map_or(0, |m| m.blocks() * 512)
    }

    fn list(&self) -> BackendResult<(Vec<String>, Vec<String>)> {
        Ok((ids_in(&self.volumes)?, ids_in(&self.snapshots)?))
    }

    fn fence(&self, id: &str) -> BackendResult<()> {
        Err(BackendError(format!(
            "local volume {id} lives on its node's disk: no other node can take it"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e2fsck_clean(path: &Path) -> bool {
        Command::new("e2fsck")
            .args(["-fn"])
            .arg(path)
            .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    #[test]
    fn local_volumes_are_sparse_ext4_and_snapshots_copy_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let b = Local::new(dir.path()).unwrap();
        let size = 128 << 20;
        b.create("v1", size, None).unwrap();
        let path = dir.path().join("volumes/local/v1.img");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
        assert!(b.used_bytes("v1") < size / 2, "not sparse");
        assert!(e2fsck_clean(&path));
        b.snapshot("v1", "s1").unwrap();
        b.create_from_snapshot("v2", "s1", 2 * size).unwrap();
        let v2 = dir.path().join("volumes/local/v2.img");
        assert_eq!(std::fs::metadata(&v2).unwrap().len(), 2 * size);
        let (vols, snaps) = b.list().unwrap();
        assert_eq!((vols.len(), snaps), (2, vec!["s1".to_string()]));
        b.remove("v1").unwrap();
        b.remove("v1").unwrap();
        b.remove_snapshot("s1").unwrap();
        assert_eq!(b.list().unwrap().0, ["v2"]);
        assert!(matches!(b.disk("v2"), VolumeDisk::Local { path } if path == v2));
    }

    #[test]
    fn a_tree_becomes_the_volume_content() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("www")).unwrap();
        std::fs::write(tree.join("www/index.html"), "hello").unwrap();
        let b = Local::new(dir.path()).unwrap();
        b.create("v", 128 << 20, Some(&tree)).unwrap();
        let out = Command::new("debugfs")
            .args(["-R", "cat /www/index.html"])
            .arg(dir.path().join("volumes/local/v.img"))
            .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello");
    }
}
