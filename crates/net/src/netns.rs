//! Network namespaces kept alive by a bind mount on a file of hyperd's choosing (not /run/netns,
//! so hyperds in separate test namespaces never collide).

use std::fs::{self, OpenOptions};
use std::io::ErrorKind;
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::statfs::{statfs, FsType};

use crate::error::NetError;

/// `f_type` of nsfs, the filesystem of /proc/*/ns/* and of their bind mounts.
const NSFS_MAGIC: FsType = FsType(0x6e73_6673);

/// Whether `path` is a mounted network namespace (rather than missing or a leftover empty file).
pub fn is_netns(path: &Path) -> bool {
    statfs(path).is_ok_and(|fs| fs.filesystem_type() == NSFS_MAGIC)
}

/// Creates a new, empty network namespace bound at `path`, unless one is already there.
pub fn create_netns(path: &Path) -> Result<(), NetError> {
    if is_netns(path) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)
            .map_err(|e| NetError::io(format!("create {}", dir.display()), e))?;
    }
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| NetError::io(format!("create mount point {}", path.display()), e))?;
    // A namespace belongs to a thread: a throwaway thread moves into a fresh one and pins it.
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let fail = |what| {
                    move |source| NetError::Namespace {
                        what,
                        path: path.into(),
                        source,
                    }
                };
                unshare(CloneFlags::CLONE_NEWNET).map_err(fail("unshare network namespace"))?;
                mount(
                    Some("/proc/thread-self/ns/net"),
                    path,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(fail("bind-mount network namespace"))
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Unmounts and deletes the namespace file; a namespace already gone (or never made) is fine.
/// The namespace itself dies with its last user (processes still inside keep it alive; our
/// nftables helper's context of it is closed here).
pub fn remove_netns(path: &Path) -> Result<(), NetError> {
    // A helper that fails to answer is replaced, its contexts going with it: nothing to do.
    let _ = crate::nft::forget(path);
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(source) => {
            return Err(NetError::Namespace {
                what: "unmount network namespace",
                path: path.into(),
                source,
            })
        }
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            Err(NetError::io(format!("remove {}", path.display()), e))
        }
        _ => Ok(()),
    }
}
