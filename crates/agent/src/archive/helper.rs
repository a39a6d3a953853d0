//! The helper process: chroot into the container's root, then stat, tar or untar one path.
//! Exit codes are the `ARCHIVE_*` ones of the protocol (1 for anything else), with the reason
//! on stderr.

use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use agent_proto::{
    ArchiveOp, ArchiveRequest, PathStat, ARCHIVE_INVALID, ARCHIVE_NOT_A_DIRECTORY,
    ARCHIVE_NOT_FOUND,
};

use crate::rootfs::ROOTFS;

struct Failure {
    code: i32,
    message: String,
}

fn fail(code: i32, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

fn io_fail(what: &str, path: &Path, e: io::Error) -> Failure {
    let code = match e.kind() {
        io::ErrorKind::NotFound => ARCHIVE_NOT_FOUND,
        _ if e.raw_os_error() == Some(libc::ENOTDIR) => ARCHIVE_NOT_FOUND,
        _ => 1,
    };
    fail(code, format!("{what} {}: {e}", path.display()))
}

/// The helper's `main`: never returns.
pub fn main() -> ! {
    let code = match run() {
        Ok(()) => 0,
        Err(f) => {
            let _ = writeln!(io::stderr(), "{}", f.message);
            f.code
        }
    };
    std::process::exit(code)
}

fn run() -> Result<(), Failure> {
    let arg = std::env::args().nth(1).unwrap_or_default();
    let req: ArchiveRequest = serde_json::from_str(&arg)
        .map_err(|e| fail(ARCHIVE_INVALID, format!("bad archive request: {e}")))?;
    if req.path.contains('\0') {
        return Err(fail(ARCHIVE_INVALID, "the path contains a NUL byte"));
    }
    nix::unistd::chroot(ROOTFS).map_err(|e| fail(1, format!("chroot {ROOTFS}: {e}")))?;
    nix::unistd::chdir("/").map_err(|e| fail(1, format!("chdir /: {e}")))?;
    let path = clean(&req.path);
    let follow = follows_last(&req.path);
    let (name, top) = names(&req.path, &path);
    let _frozen = (req.freeze && matches!(req.op, ArchiveOp::Export | ArchiveOp::Manifest))
        .then(Frozen::start);
    match req.op {
        ArchiveOp::Stat => write_stat(&mut io::stdout().lock(), &stat(&path, name, follow)?),
        ArchiveOp::Get => get(&path, name, &top, follow, false),
        ArchiveOp::Export => get(Path::new("/"), "/".into(), "", false, true),
        ArchiveOp::Manifest => manifest(),
        ArchiveOp::Put => put(&path, name, &req),
    }
}

/// The guest's processes stopped while the file system is read: `kill(-1, ...)` reaches every
/// process but init (the agent) and the caller (this helper). Continued when dropped, so also
/// when the read fails.
struct Frozen;

impl Frozen {
    fn start() -> Frozen {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(-1), nix::sys::signal::SIGSTOP);
        Frozen
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(-1), nix::sys::signal::SIGCONT);
    }
}

/// Docker's `filepath.Join("/", p)`: absolute and lexically cleaned (`..` above `/` stays at
/// `/`). A trailing `/` or `/.` is read separately ([`follows_last`], [`names`]).
pub fn clean(p: &str) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in Path::new(p).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Whether the path names what its last symlink points to (a trailing `/` or `/.`).
pub fn follows_last(p: &str) -> bool {
    p.ends_with('/') || p.ends_with("/.") || p == "."
}

/// Docker's names for a path: the stat's (`filepath.Base`: "/" for the root, "." for
/// `dir/.`) and the archive's top entry ("." for both of those).
pub fn names(raw: &str, cleaned: &Path) -> (String, String) {
    match cleaned.file_name() {
        None => ("/".into(), ".".into()),
        Some(_) if raw.ends_with("/.") || raw == "." => (".".into(), ".".into()),
        Some(n) => {
            let n = n.to_string_lossy().into_owned();
            (n.clone(), n)
        }
    }
}

fn stat(path: &Path, name: String, follow: bool) -> Result<PathStat, Failure> {
    let md = if follow {
        fs::metadata(path)
    } else {
        fs::symlink_metadata(path)
    }
    .map_err(|e| io_fail("stat", path, e))?;
    let link_target = if md.file_type().is_symlink() {
        fs::canonicalize(path)
            .or_else(|_| fs::read_link(path))
            .map(|t| t.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        String::new()
    };
    Ok(PathStat {
        name,
        size: md.size(),
        mode: md.mode(),
        mtime_secs: md.mtime(),
        mtime_nsecs: md.mtime_nsec().clamp(0, 999_999_999) as u32,
        link_target,
    })
}

fn write_stat(w: &mut impl Write, s: &PathStat) -> Result<(), Failure> {
    let mut line = serde_json::to_vec(s).map_err(|e| fail(1, e.to_string()))?;
    line.push(b'\n');
    w.write_all(&line)
        .and_then(|()| w.flush())
        .map_err(|e| fail(1, format!("writing the stat: {e}")))
}

/// The stat line, then the tar: entries named below `top` ("" for none: the tree's own
/// entries at the archive's top); with `one_fs`, nothing below another file system's mount.
fn get(path: &Path, name: String, top: &str, follow: bool, one_fs: bool) -> Result<(), Failure> {
    let st = stat(path, name, follow)?;
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(64 * 1024, stdout.lock());
    write_stat(&mut out, &st)?;
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    let dev = one_fs.then_some(md_dev(path)?);
    super::walk::append_tree(&mut b, path, Path::new(top), follow, dev)
        .map_err(|e| fail(1, format!("archiving {}: {e}", path.display())))?;
    b.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(|e| fail(1, format!("writing the archive: {e}")))
}

/// The stat line, then a `FileMeta` line per entry of the root file system.
fn manifest() -> Result<(), Failure> {
    let st = stat(Path::new("/"), "/".into(), false)?;
    let mut out = BufWriter::with_capacity(64 * 1024, io::stdout().lock());
    write_stat(&mut out, &st)?;
    agent_proto::walk_tree(Path::new("/"), &mut |meta| {
        let mut line = serde_json::to_vec(&meta).map_err(io::Error::other)?;
        line.push(b'\n');
        out.write_all(&line)
    })
    .and_then(|()| out.flush())
    .map_err(|e| fail(1, format!("listing the file system: {e}")))
}

fn md_dev(path: &Path) -> Result<u64, Failure> {
    fs::metadata(path)
        .map(|m| m.dev())
        .map_err(|e| io_fail("stat", path, e))
}

fn put(path: &Path, name: String, req: &ArchiveRequest) -> Result<(), Failure> {
    // The extraction point is the directory the whole path leads to.
    let md = fs::metadata(path).map_err(|e| io_fail("stat", path, e))?;
    if !md.is_dir() {
        return Err(fail(
            ARCHIVE_NOT_A_DIRECTORY,
            format!("extraction point is not a directory: {}", path.display()),
        ));
    }
    let owner = if req.chown_user.is_empty() {
        None
    } else {
        let id = crate::user::resolve_in_root(Path::new("/"), &req.chown_user, &[])
            .map_err(|e| fail(ARCHIVE_INVALID, format!("the owner for the copy: {e}")))?;
        Some((id.uid, id.gid))
    };
    write_stat(&mut io::stdout().lock(), &stat(path, name, true)?)?;
    let mut ar = tar::Archive::new(io::stdin().lock());
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(true);
    ar.set_preserve_mtime(true);
    ar.set_overwrite(true);
    ar.set_unpack_xattrs(false);
    extract(&mut ar, path, owner, req.no_overwrite_dir_non_dir)?;
    // Drain what follows the archive's end, so the sender is not cut off mid-write (stdin's
    // lock is the archive's: take it back rather than lock again).
    let _ = io::copy(&mut ar.into_inner().take(1 << 20), &mut io::sink());
    nix::unistd::sync();
    Ok(())
}

fn extract(
    ar: &mut tar::Archive<impl Read>,
    path: &Path,
    owner: Option<(u32, u32)>,
    no_overwrite_dir_non_dir: bool,
) -> Result<(), Failure> {
    let entries = ar
        .entries()
        .map_err(|e| fail(ARCHIVE_INVALID, format!("reading the archive: {e}")))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| fail(ARCHIVE_INVALID, format!("reading the archive: {e}")))?;
        let Some(rel) = inside(&entry.path_bytes()) else {
            continue;
        };
        let dst = path.join(&rel);
        let is_dir = entry.header().entry_type().is_dir();
        if rel.as_os_str().is_empty() || rel == Path::new(".") {
            // The extraction point itself: only its metadata could change; leave it.
            continue;
        }
        make_room(&dst, is_dir, no_overwrite_dir_non_dir)?;
        entry
            .unpack_in(path)
            .map_err(|e| fail(1, format!("extracting {}: {e}", rel.display())))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::lchown(&dst, Some(uid), Some(gid))
                .map_err(|e| io_fail("chown", &dst, e))?;
        }
    }
    Ok(())
}

/// The entry's path relative to the extraction point, or `None` when it would leave it
/// (absolute paths are taken as relative, as tar does; `..` is refused).
fn inside(raw: &[u8]) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let p = Path::new(std::ffi::OsStr::from_bytes(raw));
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Docker's rule: an existing entry is replaced unless both are directories; with
/// `noOverwriteDirNonDir`, replacing a directory by a non-directory (or the reverse) fails.
fn make_room(dst: &Path, is_dir: bool, no_overwrite_dir_non_dir: bool) -> Result<(), Failure> {
    let Ok(md) = fs::symlink_metadata(dst) else {
        return Ok(());
    };
    let existing_dir = md.is_dir();
    if existing_dir && is_dir {
        return Ok(());
    }
    if no_overwrite_dir_non_dir && existing_dir != is_dir {
        let what = if existing_dir {
            "cannot overwrite directory {} with non-directory"
        } else {
            "cannot overwrite non-directory {} with directory"
        };
        return Err(fail(
            ARCHIVE_INVALID,
            what.replace("{}", &dst.display().to_string()),
        ));
    }
    let r = if existing_dir {
        fs::remove_dir_all(dst)
    } else if md.file_type().is_socket() || !md.is_dir() {
        fs::remove_file(dst)
    } else {
        Ok(())
    };
    r.map_err(|e| io_fail("replacing", dst, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned_inside_the_root() {
        let cases = [
            ("/etc/hostname", "/etc/hostname"),
            ("etc/hostname", "/etc/hostname"),
            ("../../etc", "/etc"),
            ("/a/../../b/", "/b"),
            ("/dir/.", "/dir"),
            ("/", "/"),
            ("/./.", "/"),
        ];
        for (i, (input, want)) in cases.iter().enumerate() {
            assert_eq!(clean(input), PathBuf::from(want), "test[{i}]");
        }
        assert!(follows_last("/dir/") && follows_last("/dir/.") && !follows_last("/dir"));
        let n = |raw: &str| names(raw, &clean(raw));
        assert_eq!(n("/dir/."), (".".into(), ".".into()));
        assert_eq!(n("/"), ("/".into(), ".".into()));
        assert_eq!(n("/etc/hostname"), ("hostname".into(), "hostname".into()));
    }

    #[test]
    fn entries_never_leave_the_extraction_point() {
        assert_eq!(inside(b"a/b"), Some(PathBuf::from("a/b")));
        assert_eq!(inside(b"/etc/x"), Some(PathBuf::from("etc/x")));
        assert_eq!(inside(b"./x"), Some(PathBuf::from("x")));
        assert_eq!(inside(b"../x"), None);
        assert_eq!(inside(b"a/../../x"), None);
    }
}
