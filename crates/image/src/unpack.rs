//! Unpacking layers into a directory tree, the way overlayfs would stack them.
//!
//! Each layer is a tar of changes against the layers below it (OCI image spec, "layer"):
//! - `dir/.wh.name` deletes `dir/name` from the lower layers;
//! - `dir/.wh..wh..opq` hides everything the lower layers had in `dir`.
//!
//! Whiteouts only affect lower layers, so each layer is read twice: first to apply its
//! whiteouts, then to create its entries.
//!
//! Safety, since this runs as root on the host:
//! - an entry name with `..` or an absolute path is refused ([`ImageError::PathEscape`]);
//! - no symlink is ever followed: every parent of an entry is checked with `lstat` to be a real
//!   directory, and one that is not (say `lib -> usr/lib` from a lower layer) is replaced by a
//!   directory, which is what overlayfs shows when an upper layer has that directory; files are
//!   created with `O_NOFOLLOW|O_EXCL`, owners set with `lchown`, times with `AT_SYMLINK_NOFOLLOW`;
//!   a symlink's target is stored as is and only ever resolved inside the guest;
//! - a hard link must name an existing non-directory inside the root, reached without symlinks;
//! - device nodes are skipped with a warning (the guest's /dev is devtmpfs).
//!
//! Owners and modes come from the tar headers, never from the host.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::error::{ImageError, IoContext, Result};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// The normalised relative path of a layer entry; refuses `..` and absolute paths. The root
/// itself (`./` or `/`) is the empty path.
pub(crate) fn entry_path(p: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    let mut absolute = false;
    for c in p.components() {
        match c {
            Component::Normal(s) => {
                if absolute {
                    return Err(ImageError::PathEscape(p.display().to_string()));
                }
                out.push(s)
            }
            Component::CurDir => {}
            Component::RootDir => absolute = true,
            Component::ParentDir | Component::Prefix(_) => {
                return Err(ImageError::PathEscape(p.display().to_string()))
            }
        }
    }
    Ok(out)
}

fn io_err(path: &Path, what: &str) -> impl FnOnce() -> String {
    let s = format!("{what} {}", path.display());
    move || s
}

/// Walks `rel`'s parents under `root` without following symlinks. With `create`, missing
/// parents are made and non-directories replaced by directories; without, returns `None` as
/// soon as a parent is not a real directory.
fn parent_dir(root: &Path, rel: &Path, create: bool) -> Result<Option<PathBuf>> {
    let mut cur = root.to_path_buf();
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            cur.push(c);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.is_dir() => {}
                Ok(_) if create => {
                    tracing::debug!(path = %cur.display(), "replacing a non-directory parent");
                    fs::remove_file(&cur).ctx(io_err(&cur, "removing"))?;
                    mkdir(&cur)?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => mkdir(&cur)?,
                Ok(_) => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e).ctx(io_err(&cur, "inspecting")),
            }
        }
    }
    Ok(Some(cur))
}

fn mkdir(path: &Path) -> Result<()> {
    fs::create_dir(path).ctx(io_err(path, "creating directory"))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).ctx(io_err(path, "chmod"))
}

/// Removes whatever is at `path` (a directory recursively), without following symlinks.
fn remove_any(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).ctx(io_err(path, "removing")),
        Ok(_) => fs::remove_file(path).ctx(io_err(path, "removing")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).ctx(io_err(path, "inspecting")),
    }
}

fn cpath(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| ImageError::PathEscape(path.display().to_string()))
}

/// Sets the modification and access time of `path` itself, not of a symlink's target.
fn set_mtime(path: &Path, mtime: u64) -> Result<()> {
    let c = cpath(path)?;
    let t = libc::timespec {
        tv_sec: mtime.min(i64::MAX as u64) as libc::time_t,
        tv_nsec: 0,
    };
    let times = [t, t];
    // SAFETY: `c` is a valid NUL-terminated string and `times` an array of two timespecs, both
    // alive for the call; utimensat does not keep the pointers.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error()).ctx(io_err(path, "setting times of"));
    }
    Ok(())
}

/// Owner, then mode (chown clears set-id bits), of something that is not a symlink.
fn set_owner_mode(path: &Path, uid: u32, gid: u32, mode: u32) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).ctx(io_err(path, "chown"))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777)).ctx(io_err(path, "chmod"))
}

/// Unpacks layer tars (uncompressed, bottom first) into `root`, which must exist.
pub(crate) fn unpack_layers(layers: &[(PathBuf, String)], root: &Path) -> Result<()> {
    let mut dir_times: HashMap<PathBuf, u64> = HashMap::new();
    for (tar_path, label) in layers {
        apply_whiteouts(tar_path, root, label, &mut dir_times)?;
        unpack_entries(tar_path, root, label, &mut dir_times)?;
    }
    // Directory times last: creating children changes them. Deepest first.
    let mut dirs: Vec<_> = dir_times.into_iter().collect();
    dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (rel, mtime) in dirs {
        let path = root.join(&rel);
        if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            set_mtime(&path, mtime)?;
        }
    }
    Ok(())
}

fn open_tar(path: &Path) -> Result<tar::Archive<io::BufReader<File>>> {
    let f = File::open(path).ctx(io_err(path, "opening"))?;
    Ok(tar::Archive::new(io::BufReader::with_capacity(1 << 16, f)))
}

fn bad(label: &str, e: impl std::fmt::Display) -> ImageError {
    ImageError::BadLayer {
        layer: label.to_string(),
        reason: e.to_string(),
    }
}

fn apply_whiteouts(
    tar_path: &Path,
    root: &Path,
    label: &str,
    dir_times: &mut HashMap<PathBuf, u64>,
) -> Result<()> {
    let mut archive = open_tar(tar_path)?;
    for entry in archive.entries().map_err(|e| bad(label, e))? {
        let entry = entry.map_err(|e| bad(label, e))?;
        let rel = entry_path(&entry.path().map_err(|e| bad(label, e))?)?;
        let Some(name) = rel.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !name.starts_with(WHITEOUT_PREFIX) {
            continue;
        }
        let Some(parent) = parent_dir(root, &rel, false)? else {
            continue;
        };
        if name == OPAQUE {
            let rd = match fs::read_dir(&parent) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).ctx(io_err(&parent, "reading")),
            };
            for child in rd {
                let child = child.ctx(io_err(&parent, "reading"))?;
                remove_any(&child.path())?;
            }
        } else {
            let victim = &name[WHITEOUT_PREFIX.len()..];
            if victim.is_empty() || victim == "." || victim == ".." {
                return Err(bad(label, format!("bad whiteout {}", rel.display())));
            }
            remove_any(&parent.join(victim))?;
            dir_times.retain(|p, _| !p.starts_with(rel.with_file_name(victim)));
        }
    }
    Ok(())
}

fn unpack_entries(
    tar_path: &Path,
    root: &Path,
    label: &str,
    dir_times: &mut HashMap<PathBuf, u64>,
) -> Result<()> {
    let mut archive = open_tar(tar_path)?;
    for entry in archive.entries().map_err(|e| bad(label, e))? {
        let mut entry = entry.map_err(|e| bad(label, e))?;
        let rel = entry_path(&entry.path().map_err(|e| bad(label, e))?)?;
        let is_whiteout = rel
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(WHITEOUT_PREFIX));
        if is_whiteout {
            continue;
        }
        let h = entry.header();
        let kind = h.entry_type();
        let uid = u32::try_from(h.uid().map_err(|e| bad(label, e))?).map_err(|e| bad(label, e))?;
        let gid = u32::try_from(h.gid().map_err(|e| bad(label, e))?).map_err(|e| bad(label, e))?;
        let mode = h.mode().map_err(|e| bad(label, e))?;
        let mtime = h.mtime().unwrap_or(0);

        if rel.as_os_str().is_empty() {
            // The root directory itself: take its metadata.
            if kind.is_dir() {
                set_owner_mode(root, uid, gid, mode)?;
                dir_times.insert(rel, mtime);
            }
            continue;
        }
        let parent = parent_dir(root, &rel, true)?.expect("created");
        let path = parent.join(rel.file_name().expect("non-empty path has a name"));
        let existing = fs::symlink_metadata(&path).ok();

        match kind {
            tar::EntryType::Directory => {
                if !existing.as_ref().is_some_and(|m| m.is_dir()) {
                    remove_any(&path)?;
                    fs::create_dir(&path).ctx(io_err(&path, "creating directory"))?;
                }
                set_owner_mode(&path, uid, gid, mode)?;
                dir_times.insert(rel, mtime);
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                remove_any(&path)?;
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .ctx(io_err(&path, "creating"))?;
                io::copy(&mut entry, &mut f).map_err(|e| bad(label, e))?;
                f.flush().ctx(io_err(&path, "writing"))?;
                drop(f);
                set_owner_mode(&path, uid, gid, mode)?;
                set_mtime(&path, mtime)?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| bad(label, e))?
                    .ok_or_else(|| {
                        bad(label, format!("symlink {} has no target", rel.display()))
                    })?;
                remove_any(&path)?;
                std::os::unix::fs::symlink(&target, &path)
                    .ctx(io_err(&path, "creating symlink"))?;
                std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
                    .ctx(io_err(&path, "chown"))?;
                set_mtime(&path, mtime)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| bad(label, e))?
                    .ok_or_else(|| {
                        bad(label, format!("hard link {} has no target", rel.display()))
                    })?;
                let target_rel = entry_path(&target)?;
                if target_rel == rel {
                    continue;
                }
                let target_parent = parent_dir(root, &target_rel, false)?;
                let target_path = target_parent
                    .zip(target_rel.file_name())
                    .map(|(p, n)| p.join(n))
                    .filter(|t| fs::symlink_metadata(t).is_ok_and(|m| !m.is_dir()))
                    .ok_or_else(|| {
                        bad(
                            label,
                            format!(
                                "hard link {} -> {}: target missing",
                                rel.display(),
                                target_rel.display()
                            ),
                        )
                    })?;
                remove_any(&path)?;
                // link(2) does not follow a symlink target: the link is to the symlink itself.
                fs::hard_link(&target_path, &path).ctx(io_err(&path, "creating hard link"))?;
            }
            tar::EntryType::Fifo => {
                remove_any(&path)?;
                let c = cpath(&path)?;
                // SAFETY: `c` is a valid NUL-terminated path alive for the call.
                if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
                    return Err(io::Error::last_os_error()).ctx(io_err(&path, "creating fifo"));
                }
                set_owner_mode(&path, uid, gid, mode)?;
                set_mtime(&path, mtime)?;
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                tracing::warn!(layer = label, path = %rel.display(), "skipping device node");
            }
            other => {
                tracing::warn!(layer = label, path = %rel.display(), kind = ?other, "skipping unsupported entry");
            }
        }
    }
    Ok(())
}
