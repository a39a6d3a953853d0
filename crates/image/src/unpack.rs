//! Unpacking layers into a directory tree, the way overlayfs would stack them; the entry
//! writer ([`Unpacker`]) is shared with tenant uploads for volumes (`source::unpack_upload`).
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
//!   directory, which is what overlayfs shows when an upper layer has that directory (a volume
//!   upload has no layers: there it is an error, see [`Parents`]); files are
//!   created with `O_NOFOLLOW|O_EXCL`, owners set with `lchown`, times with `AT_SYMLINK_NOFOLLOW`;
//!   a symlink's target is stored as is and only ever resolved inside the guest;
//! - a hard link must name an existing non-directory inside the root, reached without symlinks;
//! - device nodes are skipped with a warning (the guest's /dev is devtmpfs).
//!
//! Owners and modes come from the tar headers, never from the host.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
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

/// What [`parent_dir`] does with a parent that is missing or not a real directory.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parents {
    /// Only look: `None` as soon as a parent is missing or not a real directory.
    Lookup,
    /// Make missing parents and replace non-directories by directories: overlayfs shows an
    /// upper layer's directory over a lower layer's symlink or file.
    Replace,
    /// Make missing parents; a parent that is not a real directory is an error
    /// ([`ImageError::NotADirectory`]). A tenant's tar that writes `link/file` after
    /// `link -> /etc` is hostile or broken, and what GNU tar does with it (follow the link) is
    /// exactly what must not happen on the host.
    Refuse,
}

/// Walks `rel`'s parents under `root` without following symlinks, dealing with missing and
/// non-directory parents as `parents` says. `None` only in [`Parents::Lookup`].
pub(crate) fn parent_dir(root: &Path, rel: &Path, parents: Parents) -> Result<Option<PathBuf>> {
    let mut cur = root.to_path_buf();
    let Some(parent) = rel.parent() else {
        return Ok(Some(cur));
    };
    for c in parent.components() {
        cur.push(c);
        match (fs::symlink_metadata(&cur), parents) {
            (Ok(m), _) if m.is_dir() => {}
            (Ok(_), Parents::Replace) => {
                tracing::debug!(path = %cur.display(), "replacing a non-directory parent");
                fs::remove_file(&cur).ctx(io_err(&cur, "removing"))?;
                mkdir(&cur)?;
            }
            (Ok(_), Parents::Refuse) => {
                return Err(ImageError::NotADirectory(rel.display().to_string()))
            }
            (Err(e), Parents::Replace | Parents::Refuse) if e.kind() == io::ErrorKind::NotFound => {
                mkdir(&cur)?
            }
            (Ok(_), Parents::Lookup) => return Ok(None),
            (Err(e), Parents::Lookup) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            (Err(e), _) => return Err(e).ctx(io_err(&cur, "inspecting")),
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

/// What one archive entry makes, its metadata already read from the headers by the caller.
pub(crate) struct Node<'a> {
    /// Normalised by [`entry_path`]; empty for the root itself.
    pub rel: &'a Path,
    pub kind: NodeKind,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub mtime: u64,
}

/// The kinds of entry [`Unpacker::create`] makes.
pub(crate) enum NodeKind {
    Dir,
    /// A regular file: its content is the data reader given to [`Unpacker::create`].
    File,
    /// A symlink and its target, stored as is: it is only ever resolved inside the guest.
    Symlink(PathBuf),
    /// A hard link to an earlier entry, named by its normalised path under the root.
    HardLink(PathBuf),
    Fifo,
}

/// Creates archive entries under a root (see the module doc for the rules) and sets the
/// directories' times once everything is in.
pub(crate) struct Unpacker<'a> {
    root: &'a Path,
    parents: Parents,
    /// Directory modification times by relative path, applied by [`Unpacker::finish`]
    /// (creating children changes them).
    dir_times: HashMap<PathBuf, u64>,
}

impl<'a> Unpacker<'a> {
    /// `parents` is [`Parents::Replace`] or [`Parents::Refuse`]: how to treat a parent that is
    /// not a real directory. `root` must exist.
    pub(crate) fn new(root: &'a Path, parents: Parents) -> Unpacker<'a> {
        Unpacker {
            root,
            parents,
            dir_times: HashMap::new(),
        }
    }

    /// Creates `node`, replacing whatever was at its path (never what a symlink there points
    /// to); a file's content is read from `data`. `label` names the archive in errors.
    pub(crate) fn create(&mut self, node: &Node, data: &mut dyn Read, label: &str) -> Result<()> {
        let Some(name) = node.rel.file_name() else {
            // The root directory itself: take its metadata.
            if matches!(node.kind, NodeKind::Dir) {
                set_owner_mode(self.root, node.uid, node.gid, node.mode)?;
                self.dir_times.insert(PathBuf::new(), node.mtime);
            }
            return Ok(());
        };
        let path = parent_dir(self.root, node.rel, self.parents)?
            .ok_or_else(|| ImageError::NotADirectory(node.rel.display().to_string()))?
            .join(name);
        match &node.kind {
            NodeKind::Dir => {
                if !fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                    remove_any(&path)?;
                    fs::create_dir(&path).ctx(io_err(&path, "creating directory"))?;
                }
                set_owner_mode(&path, node.uid, node.gid, node.mode)?;
                self.dir_times.insert(node.rel.to_path_buf(), node.mtime);
            }
            NodeKind::File => {
                write_file(&path, data, label)?;
                set_owner_mode(&path, node.uid, node.gid, node.mode)?;
                set_mtime(&path, node.mtime)?;
            }
            NodeKind::Symlink(target) => {
                remove_any(&path)?;
                std::os::unix::fs::symlink(target, &path).ctx(io_err(&path, "creating symlink"))?;
                std::os::unix::fs::lchown(&path, Some(node.uid), Some(node.gid))
                    .ctx(io_err(&path, "chown"))?;
                set_mtime(&path, node.mtime)?;
            }
            NodeKind::HardLink(target) => self.hard_link(node.rel, &path, target, label)?,
            NodeKind::Fifo => {
                remove_any(&path)?;
                let c = cpath(&path)?;
                // SAFETY: `c` is a valid NUL-terminated path alive for the call.
                if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
                    return Err(io::Error::last_os_error()).ctx(io_err(&path, "creating fifo"));
                }
                set_owner_mode(&path, node.uid, node.gid, node.mode)?;
                set_mtime(&path, node.mtime)?;
            }
        }
        Ok(())
    }

    /// A hard link at `path` (entry `rel`) to the earlier entry `target`, which must be a
    /// non-directory reached from the root without symlinks.
    fn hard_link(&self, rel: &Path, path: &Path, target: &Path, label: &str) -> Result<()> {
        if target == rel {
            return Ok(());
        }
        let target_path = parent_dir(self.root, target, Parents::Lookup)?
            .zip(target.file_name())
            .map(|(p, n)| p.join(n))
            .filter(|t| fs::symlink_metadata(t).is_ok_and(|m| !m.is_dir()))
            .ok_or_else(|| {
                bad(
                    label,
                    format!(
                        "hard link {} -> {}: target missing",
                        rel.display(),
                        target.display()
                    ),
                )
            })?;
        remove_any(path)?;
        // link(2) does not follow a symlink target: the link is to the symlink itself.
        fs::hard_link(&target_path, path).ctx(io_err(path, "creating hard link"))
    }

    /// Drops the recorded times of `rel` and everything under it (a whiteout removed them).
    fn forget_times_under(&mut self, rel: &Path) {
        self.dir_times.retain(|p, _| !p.starts_with(rel));
    }

    /// Sets the recorded directory times, deepest first (setting a child's time touches
    /// nothing above it, but creating it did).
    pub(crate) fn finish(self) -> Result<()> {
        let mut dirs: Vec<_> = self.dir_times.into_iter().collect();
        dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        for (rel, mtime) in dirs {
            let path = self.root.join(&rel);
            if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                set_mtime(&path, mtime)?;
            }
        }
        Ok(())
    }
}

/// Writes a new regular file at `path` from `data`: whatever was there goes first, and the file
/// is created with `O_EXCL|O_NOFOLLOW`, so a symlink raced into place is never written through.
fn write_file(path: &Path, data: &mut dyn Read, label: &str) -> Result<()> {
    remove_any(path)?;
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .ctx(io_err(path, "creating"))?;
    io::copy(data, &mut f).map_err(|e| bad(label, e))?;
    f.flush().ctx(io_err(path, "writing"))
}

/// Unpacks layer tars (uncompressed, bottom first) into `root`, which must exist.
pub(crate) fn unpack_layers(layers: &[(PathBuf, String)], root: &Path) -> Result<()> {
    let mut unpacker = Unpacker::new(root, Parents::Replace);
    for (tar_path, label) in layers {
        apply_whiteouts(tar_path, &mut unpacker, label)?;
        unpack_entries(tar_path, &mut unpacker, label)?;
    }
    unpacker.finish()
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

/// One layer entry as read from its headers, with everything checked that the entry alone can
/// fail: its path and a hard link's target stay inside the root ([`entry_path`]), a whiteout
/// names something, a link has a target, owner and mode are numbers. Unpacking and loading a
/// layer ([`crate::layer::ingest`]) read entries through this one function, so a layer that
/// would fail to unpack at its image's first start is refused when it arrives.
pub(crate) struct LayerEntry {
    /// Normalised by [`entry_path`]; empty for the root itself.
    pub rel: PathBuf,
    pub what: EntryKind,
}

/// What a [`LayerEntry`] does.
pub(crate) enum EntryKind {
    /// `dir/.wh..wh..opq`: everything the lower layers had in `dir` is hidden.
    Opaque,
    /// `dir/.wh.NAME`: `dir/NAME` is deleted from the lower layers.
    Whiteout(String),
    /// Something to create.
    Node {
        kind: NodeKind,
        uid: u32,
        gid: u32,
        mode: u32,
        mtime: u64,
    },
    /// What layers may hold but a root disk does not need (device nodes: the guest's /dev is
    /// devtmpfs), or what it cannot hold; logged when unpacked.
    Skipped(tar::EntryType),
}

pub(crate) fn read_entry<R: Read>(entry: &tar::Entry<R>, label: &str) -> Result<LayerEntry> {
    let rel = entry_path(&entry.path().map_err(|e| bad(label, e))?)?;
    if let Some(name) = rel
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| n.starts_with(WHITEOUT_PREFIX))
    {
        let what = if name == OPAQUE {
            EntryKind::Opaque
        } else {
            let victim = &name[WHITEOUT_PREFIX.len()..];
            if victim.is_empty() || victim == "." || victim == ".." {
                return Err(bad(label, format!("bad whiteout {}", rel.display())));
            }
            EntryKind::Whiteout(victim.to_string())
        };
        return Ok(LayerEntry { rel, what });
    }
    let link = || -> Result<PathBuf> {
        let target = entry.link_name().map_err(|e| bad(label, e))?;
        target
            .map(|t| t.into_owned())
            .ok_or_else(|| bad(label, format!("link {} has no target", rel.display())))
    };
    let kind = match entry.header().entry_type() {
        tar::EntryType::Directory => NodeKind::Dir,
        tar::EntryType::Regular | tar::EntryType::Continuous => NodeKind::File,
        tar::EntryType::Symlink => NodeKind::Symlink(link()?),
        tar::EntryType::Link => {
            let target = link()?;
            NodeKind::HardLink(entry_path(&target).map_err(|_| {
                ImageError::PathEscape(format!(
                    "{} (the target of hard link {})",
                    target.display(),
                    rel.display()
                ))
            })?)
        }
        tar::EntryType::Fifo => NodeKind::Fifo,
        other => {
            return Ok(LayerEntry {
                rel,
                what: EntryKind::Skipped(other),
            })
        }
    };
    let h = entry.header();
    let uid = u32::try_from(h.uid().map_err(|e| bad(label, e))?).map_err(|e| bad(label, e))?;
    let gid = u32::try_from(h.gid().map_err(|e| bad(label, e))?).map_err(|e| bad(label, e))?;
    let mode = h.mode().map_err(|e| bad(label, e))?;
    let mtime = h.mtime().unwrap_or(0);
    Ok(LayerEntry {
        rel,
        what: EntryKind::Node {
            kind,
            uid,
            gid,
            mode,
            mtime,
        },
    })
}

fn apply_whiteouts(tar_path: &Path, unpacker: &mut Unpacker, label: &str) -> Result<()> {
    let mut archive = open_tar(tar_path)?;
    for entry in archive.entries().map_err(|e| bad(label, e))? {
        let entry = entry.map_err(|e| bad(label, e))?;
        let LayerEntry { rel, what } = read_entry(&entry, label)?;
        if !matches!(what, EntryKind::Opaque | EntryKind::Whiteout(_)) {
            continue;
        }
        let Some(parent) = parent_dir(unpacker.root, &rel, Parents::Lookup)? else {
            continue;
        };
        if let EntryKind::Whiteout(victim) = what {
            remove_any(&parent.join(&victim))?;
            unpacker.forget_times_under(&rel.with_file_name(victim));
            continue;
        }
        let rd = match fs::read_dir(&parent) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).ctx(io_err(&parent, "reading")),
        };
        for child in rd {
            let child = child.ctx(io_err(&parent, "reading"))?;
            remove_any(&child.path())?;
        }
    }
    Ok(())
}

fn unpack_entries(tar_path: &Path, unpacker: &mut Unpacker, label: &str) -> Result<()> {
    let mut archive = open_tar(tar_path)?;
    for entry in archive.entries().map_err(|e| bad(label, e))? {
        let mut entry = entry.map_err(|e| bad(label, e))?;
        let LayerEntry { rel, what } = read_entry(&entry, label)?;
        let (kind, uid, gid, mode, mtime) = match what {
            EntryKind::Node {
                kind,
                uid,
                gid,
                mode,
                mtime,
            } => (kind, uid, gid, mode, mtime),
            EntryKind::Skipped(tar::EntryType::Char | tar::EntryType::Block) => {
                tracing::warn!(layer = label, path = %rel.display(), "skipping device node");
                continue;
            }
            EntryKind::Skipped(other) => {
                tracing::warn!(layer = label, path = %rel.display(), kind = ?other, "skipping unsupported entry");
                continue;
            }
            EntryKind::Opaque | EntryKind::Whiteout(_) => continue,
        };
        let node = Node {
            rel: &rel,
            kind,
            uid,
            gid,
            mode,
            mtime,
        };
        unpacker.create(&node, &mut entry, label)?;
    }
    Ok(())
}

/// Refuses layers (uncompressed tars, bottom first) that [`unpack_layers`] would fail on: what
/// each entry alone can fail ([`read_entry`]) and what depends on the layers below, a hard link
/// whose target is not there (missing, a directory, or reached through a symlink or a file).
/// Works on names only, as the unpacker would see them, writing nothing: an image is checked
/// this way when it is loaded, before anything of it is stored.
pub(crate) fn check_layers(layers: &[(PathBuf, String)]) -> Result<()> {
    let mut tree = Shadow::default();
    for (tar_path, label) in layers {
        let entries = |f: &mut dyn FnMut(LayerEntry) -> Result<()>| -> Result<()> {
            let mut archive = open_tar(tar_path)?;
            for entry in archive.entries_with_seek().map_err(|e| bad(label, e))? {
                f(read_entry(&entry.map_err(|e| bad(label, e))?, label)?)?;
            }
            Ok(())
        };
        entries(&mut |e| {
            match e.what {
                EntryKind::Opaque => tree.hide_under(e.rel.parent().unwrap_or(Path::new(""))),
                EntryKind::Whiteout(victim) => tree.remove(&e.rel.with_file_name(victim)),
                _ => {}
            }
            Ok(())
        })?;
        entries(&mut |e| {
            let EntryKind::Node { kind, .. } = e.what else {
                return Ok(());
            };
            tree.create(&e.rel, &kind)
                .map_err(|reason| bad(label, reason))
        })?;
    }
    Ok(())
}

/// The tree layers make, by names: whether each path is a real directory or something else,
/// following [`Unpacker`]'s rules with [`Parents::Replace`].
#[derive(Default)]
struct Shadow {
    /// Every path present, relative to the root; `true` for a directory.
    dirs: std::collections::BTreeMap<PathBuf, bool>,
}

impl Shadow {
    /// `path` and everything under it, gone (`remove_any`).
    fn remove(&mut self, path: &Path) {
        let under: Vec<PathBuf> = self
            .dirs
            .range(path.to_path_buf()..)
            .take_while(|(p, _)| p.starts_with(path))
            .map(|(p, _)| p.clone())
            .collect();
        for p in under {
            self.dirs.remove(&p);
        }
    }

    /// Everything under `dir` gone, `dir` kept (an opaque whiteout), if `dir` is reached
    /// through real directories ([`Parents::Lookup`]).
    fn hide_under(&mut self, dir: &Path) {
        if !self.reached(dir) {
            return;
        }
        let children: Vec<PathBuf> = self
            .dirs
            .range(dir.to_path_buf()..)
            .take_while(|(p, _)| p.starts_with(dir))
            .filter(|(p, _)| p.as_path() != dir)
            .map(|(p, _)| p.clone())
            .collect();
        for p in children {
            self.dirs.remove(&p);
        }
    }

    /// Whether `path` is the root or a real directory reached through real directories.
    fn reached(&self, path: &Path) -> bool {
        let mut cur = PathBuf::new();
        for c in path.components() {
            cur.push(c);
            if self.dirs.get(&cur) != Some(&true) {
                return false;
            }
        }
        true
    }

    /// What [`Unpacker::create`] does to the tree; `Err` with the reason it would fail.
    fn create(&mut self, rel: &Path, kind: &NodeKind) -> std::result::Result<(), String> {
        if rel.as_os_str().is_empty() {
            return Ok(());
        }
        // Parents: made, or a non-directory replaced by one.
        let mut cur = PathBuf::new();
        for c in rel.parent().into_iter().flat_map(Path::components) {
            cur.push(c);
            self.dirs.insert(cur.clone(), true);
        }
        match kind {
            NodeKind::Dir => {
                if self.dirs.get(rel) != Some(&true) {
                    self.remove(rel);
                    self.dirs.insert(rel.to_path_buf(), true);
                }
            }
            NodeKind::HardLink(target) if target == rel => {}
            NodeKind::HardLink(target) => {
                let there = target.parent().is_some_and(|p| self.reached(p))
                    && self.dirs.get(target) == Some(&false);
                if !there {
                    return Err(format!(
                        "hard link {} -> {}: target missing",
                        rel.display(),
                        target.display()
                    ));
                }
                self.remove(rel);
                self.dirs.insert(rel.to_path_buf(), false);
            }
            NodeKind::File | NodeKind::Symlink(_) | NodeKind::Fifo => {
                self.remove(rel);
                self.dirs.insert(rel.to_path_buf(), false);
            }
        }
        Ok(())
    }
}
