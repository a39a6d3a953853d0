//! Copying an image directory into a new volume ("copy-up", Docker's behaviour for an empty
//! volume mounted over a directory the image has): files, directories, symlinks and special
//! files with their owner, mode and timestamps. Hard links become separate copies and extended
//! attributes are not copied (neither is needed for what images keep in such directories).
//!
//! The copy goes to a directory of its own inside the volume and its entries are renamed into
//! place only once it is complete: a copy cut short (a full volume, a VM stopped) leaves only
//! that directory, which the next start counts as empty, removes and copies again, where a
//! half copy in place would pass for the volume's data from then on.
//!
//! The source is tenant input: nothing is followed (lstat, O_NOFOLLOW), so a symlink is copied
//! as a symlink and never read through. The walk keeps its own stack rather than recursing, so
//! a deep tree cannot exhaust the thread's stack.

use std::fs::{Metadata, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

#[derive(Debug, thiserror::Error)]
#[error("copying {path}")]
pub struct CopyError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// Where an interrupted copy-up left its work (see the module docs).
const INCOMPLETE: &str = ".hyper-copy-up-incomplete";

/// What an empty ext4 file system holds at its root. `lost+found` stays in a volume: mke2fs
/// makes it in advance, with blocks, so that e2fsck has somewhere to put what it recovers even
/// on a full file system; removing it would trade that for looks (a volume shows it as every
/// ext4 mount does, Kubernetes' volumes included). It does not make a volume non-empty.
const LOST_AND_FOUND: &str = "lost+found";

fn at(path: &Path) -> impl FnOnce(std::io::Error) -> CopyError + '_ {
    move |source| CopyError {
        path: path.to_path_buf(),
        source,
    }
}

/// Copy-up: when the volume mounted at `volume` is empty, fill it with what the image's
/// directory `image_dir` holds and give its root that directory's owner, mode and times (as
/// Docker does, so that an image's `chown app /data` holds for a volume there too). `false`
/// when the volume was not empty: it has been used, and its data wins.
pub fn up(image_dir: &Path, volume: &Path) -> Result<bool, CopyError> {
    if !is_empty(volume).map_err(at(volume))? {
        return Ok(false);
    }
    let staging = volume.join(INCOMPLETE);
    match std::fs::remove_dir_all(&staging) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(at(&staging)(e)),
        _ => {}
    }
    std::fs::create_dir(&staging).map_err(at(&staging))?;
    if let Err(e) = contents(image_dir, &staging) {
        // Give the space back; the next start tries again (and fails the same way if the
        // volume is too small).
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    for entry in std::fs::read_dir(&staging).map_err(at(&staging))? {
        let entry = entry.map_err(at(&staging))?;
        let to = volume.join(entry.file_name());
        std::fs::rename(entry.path(), &to).map_err(at(&to))?;
    }
    std::fs::remove_dir(&staging).map_err(at(&staging))?;
    let md = std::fs::symlink_metadata(image_dir).map_err(at(image_dir))?;
    metadata(&md, volume).map_err(at(volume))?;
    Ok(true)
}

/// Does the volume at `root` hold nothing but `lost+found` (and the leftovers of an interrupted
/// copy-up)?
fn is_empty(root: &Path) -> std::io::Result<bool> {
    for entry in std::fs::read_dir(root)? {
        let name = entry?.file_name();
        if name != LOST_AND_FOUND && name != INCOMPLETE {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Copy what the directory `src` holds into the existing directory `dst` (not `dst`'s own
/// owner, mode or times: see [`metadata`]).
fn contents(src: &Path, dst: &Path) -> Result<(), CopyError> {
    let mut todo: Vec<(PathBuf, PathBuf)> = vec![(src.to_path_buf(), dst.to_path_buf())];
    // Directories made, in the order made; their metadata goes on last, children first, so
    // that writing into them does not change the times just set.
    let mut made: Vec<(Metadata, PathBuf)> = Vec::new();
    while let Some((from, to)) = todo.pop() {
        for entry in std::fs::read_dir(&from).map_err(at(&from))? {
            let entry = entry.map_err(at(&from))?;
            let (s, d) = (entry.path(), to.join(entry.file_name()));
            let md = std::fs::symlink_metadata(&s).map_err(at(&s))?;
            if md.is_dir() {
                std::fs::create_dir(&d).map_err(at(&d))?;
                todo.push((s, d.clone()));
                made.push((md, d));
            } else {
                copy_entry(&s, &md, &d)?;
            }
        }
    }
    for (md, d) in made.iter().rev() {
        metadata(md, d).map_err(at(d))?;
    }
    Ok(())
}

/// Copy one non-directory and give it `md`'s owner, mode and times.
fn copy_entry(src: &Path, md: &Metadata, dst: &Path) -> Result<(), CopyError> {
    let ft = md.file_type();
    if ft.is_file() {
        copy_file(src, dst)?;
    } else if ft.is_symlink() {
        let link = std::fs::read_link(src).map_err(at(src))?;
        std::os::unix::fs::symlink(link, dst).map_err(at(dst))?;
    } else {
        // FIFOs, sockets, character and block devices: a new node of the same kind.
        let kind = SFlag::from_bits_truncate(md.mode() & libc::S_IFMT);
        nix::sys::stat::mknod(dst, kind, Mode::from_bits_truncate(0o600), md.rdev())
            .map_err(|e| at(dst)(e.into()))?;
    }
    metadata(md, dst).map_err(at(dst))
}

fn copy_file(src: &Path, dst: &Path) -> Result<(), CopyError> {
    let mut from = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(src)
        .map_err(at(src))?;
    let mut to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dst)
        .map_err(at(dst))?;
    std::io::copy(&mut from, &mut to).map_err(at(dst))?;
    Ok(())
}

/// Give `dst` the owner, mode and access/modification times of `md` (symlinks themselves, not
/// what they point to). The owner goes first: chown clears set-user-ID and set-group-ID bits.
fn metadata(md: &Metadata, dst: &Path) -> std::io::Result<()> {
    std::os::unix::fs::lchown(dst, Some(md.uid()), Some(md.gid()))?;
    if !md.file_type().is_symlink() {
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
    }
    let atime = TimeSpec::new(md.atime(), md.atime_nsec());
    let mtime = TimeSpec::new(md.mtime(), md.mtime_nsec());
    utimensat(None, dst, &atime, &mtime, UtimensatFlags::NoFollowSymlink)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{symlink, FileTypeExt};

    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("hyper-agent-copy-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn set(path: &Path, mode: u32, owner: u32, mtime: i64) {
        std::os::unix::fs::lchown(path, Some(owner), Some(owner + 1)).unwrap();
        if !std::fs::symlink_metadata(path).unwrap().is_symlink() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let t = TimeSpec::new(mtime, 0);
        utimensat(None, path, &t, &t, UtimensatFlags::NoFollowSymlink).unwrap();
    }

    #[test]
    fn copies_a_tree_with_owners_modes_times() {
        let base = scratch("tree");
        let (src, dst) = (base.join("src"), base.join("dst"));
        std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
        std::fs::create_dir(&dst).unwrap();
        std::fs::write(src.join("a.txt"), b"hello").unwrap();
        std::fs::write(src.join("sub/deeper/b"), b"deep").unwrap();
        symlink("/etc/passwd", src.join("sub/link")).unwrap();
        nix::unistd::mkfifo(&src.join("fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        set(&src.join("a.txt"), 0o4750, 1000, 1_000_000);
        set(&src.join("sub/deeper/b"), 0o600, 1001, 1_000_001);
        set(&src.join("sub/link"), 0, 1002, 1_000_002);
        set(&src.join("sub/deeper"), 0o700, 1003, 1_000_003);
        set(&src.join("sub"), 0o2775, 1004, 1_000_004);
        set(&src.join("fifo"), 0o640, 1005, 1_000_005);

        contents(&src, &dst).unwrap();

        assert_eq!(std::fs::read(dst.join("a.txt")).unwrap(), b"hello");
        assert_eq!(std::fs::read(dst.join("sub/deeper/b")).unwrap(), b"deep");
        assert_eq!(
            std::fs::read_link(dst.join("sub/link")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert!(std::fs::symlink_metadata(dst.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo());
        for (i, (p, mode, owner, mtime)) in [
            ("a.txt", 0o4750, 1000, 1_000_000),
            ("sub/deeper/b", 0o600, 1001, 1_000_001),
            ("sub/deeper", 0o700, 1003, 1_000_003),
            ("sub", 0o2775, 1004, 1_000_004),
            ("fifo", 0o640, 1005, 1_000_005),
        ]
        .into_iter()
        .enumerate()
        {
            let md = std::fs::symlink_metadata(dst.join(p)).unwrap();
            assert_eq!(md.mode() & 0o7777, mode, "test[{i}] {p} mode");
            assert_eq!(
                (md.uid(), md.gid()),
                (owner, owner + 1),
                "test[{i}] {p} owner"
            );
            assert_eq!(md.mtime(), mtime, "test[{i}] {p} mtime");
        }
        let link = std::fs::symlink_metadata(dst.join("sub/link")).unwrap();
        assert_eq!((link.uid(), link.mtime()), (1002, 1_000_002));

        // dst's own metadata is left alone by `contents`, set by `metadata`.
        let src_md = std::fs::symlink_metadata(&src).unwrap();
        set(&src, 0o1777, 1006, 1_000_006);
        let src_md2 = std::fs::symlink_metadata(&src).unwrap();
        assert_ne!(src_md.mode(), src_md2.mode());
        metadata(&src_md2, &dst).unwrap();
        let d = std::fs::symlink_metadata(&dst).unwrap();
        assert_eq!(
            (d.mode() & 0o7777, d.uid(), d.gid(), d.mtime()),
            (0o1777, 1006, 1007, 1_000_006)
        );
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn up_only_into_an_empty_volume() {
        let base = scratch("up");
        let (image, volume) = (base.join("image"), base.join("volume"));
        std::fs::create_dir_all(image.join("conf")).unwrap();
        std::fs::write(image.join("conf/app.ini"), b"k=v").unwrap();
        std::fs::create_dir_all(volume.join(LOST_AND_FOUND)).unwrap();
        // What an interrupted copy-up left.
        std::fs::create_dir_all(volume.join(INCOMPLETE).join("conf")).unwrap();
        std::fs::write(volume.join(INCOMPLETE).join("half"), b"").unwrap();
        set(&image, 0o750, 999, 1_000_000);

        assert!(is_empty(&volume).unwrap());
        assert!(up(&image, &volume).unwrap());
        let mut names: Vec<_> = std::fs::read_dir(&volume)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["conf", LOST_AND_FOUND]);
        assert_eq!(std::fs::read(volume.join("conf/app.ini")).unwrap(), b"k=v");
        let root = std::fs::metadata(&volume).unwrap();
        assert_eq!(
            (root.mode() & 0o7777, root.uid(), root.mtime()),
            (0o750, 999, 1_000_000)
        );

        // Used now: a second start leaves it alone.
        std::fs::write(image.join("new"), b"").unwrap();
        assert!(!is_empty(&volume).unwrap());
        assert!(!up(&image, &volume).unwrap());
        assert!(!volume.join("new").exists());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_clash_names_the_path() {
        let base = scratch("clash");
        let (src, dst) = (base.join("src"), base.join("dst"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::create_dir_all(&dst).unwrap();
        std::fs::write(src.join("x"), b"1").unwrap();
        std::fs::write(dst.join("x"), b"2").unwrap();
        let e = contents(&src, &dst).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("copying {}", dst.join("x").display())
        );
        std::fs::remove_dir_all(&base).unwrap();
    }
}
