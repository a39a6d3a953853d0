//! Writing a tree into a tar stream: depth first, names sorted, symlinks kept as links (only
//! the top one is followed when asked), sockets skipped (tar has no type for them, and Docker
//! leaves them out too). uid, gid, mode and mtime come from the file (`HeaderMode::Complete`).

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// Append `src` (a file, link, special file or directory with everything below it) as `name`
/// (an empty `name`: a directory's entries at the archive's top, without one for itself).
/// With `only_dev`, a directory of another file system (a mount point) is kept empty.
pub fn append_tree<W: Write>(
    b: &mut tar::Builder<W>,
    src: &Path,
    name: &Path,
    follow_top: bool,
    only_dev: Option<u64>,
) -> io::Result<()> {
    let md = if follow_top {
        fs::metadata(src)?
    } else {
        fs::symlink_metadata(src)?
    };
    if !md.is_dir() {
        return append_one(b, src, name, &md);
    }
    // The directory's own entry first, then its children (an explicit stack: a deep tree must
    // not exhaust the helper's stack).
    let mut stack = vec![(src.to_path_buf(), name.to_path_buf())];
    while let Some((dir, dir_name)) = stack.pop() {
        if !dir_name.as_os_str().is_empty() {
            append_dir(b, &dir, &dir_name)?;
        }
        if only_dev.is_some_and(|dev| fs::symlink_metadata(&dir).map(|m| m.dev()).ok() != Some(dev))
        {
            continue;
        }
        let mut children: Vec<_> = fs::read_dir(&dir)?
            .collect::<io::Result<Vec<_>>>()?
            .into_iter()
            .map(|e| e.file_name())
            .collect();
        children.sort();
        let mut dirs = Vec::new();
        for child in children {
            let (path, child_name) = (dir.join(&child), dir_name.join(&child));
            let md = fs::symlink_metadata(&path)?;
            if md.is_dir() {
                dirs.push((path, child_name));
            } else {
                append_one(b, &path, &child_name, &md)?;
            }
        }
        stack.extend(dirs.into_iter().rev());
    }
    Ok(())
}

/// A directory's entry, named with a trailing `/` as tar and Docker write them.
fn append_dir<W: Write>(b: &mut tar::Builder<W>, src: &Path, name: &Path) -> io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_metadata(&fs::metadata(src)?);
    let mut name = name.as_os_str().to_owned();
    name.push("/");
    b.append_data(&mut h, Path::new(&name), io::empty())
}

fn append_one<W: Write>(
    b: &mut tar::Builder<W>,
    src: &Path,
    name: &Path,
    md: &fs::Metadata,
) -> io::Result<()> {
    if md.file_type().is_socket() {
        return Ok(());
    }
    if md.is_file() {
        // Exactly the size the header says, whatever a running container does to the file
        // meanwhile (more bytes would break the archive's framing): cut, or padded with zeros.
        let mut h = tar::Header::new_gnu();
        h.set_metadata(md);
        let len = md.len();
        let data = fs::File::open(src)?
            .take(len)
            .chain(io::repeat(0))
            .take(len);
        return b.append_data(&mut h, name, data);
    }
    if md.file_type().is_symlink() {
        let mut h = tar::Header::new_gnu();
        h.set_metadata(md);
        h.set_size(0);
        return b.append_link(&mut h, name, fs::read_link(src)?);
    }
    // Fifos and devices (`md` is of the entry itself: not followed).
    b.append_path_with_name(src, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_in_tar_order_with_directories_marked() {
        let root = std::env::temp_dir().join(format!("walk-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("b/c")).unwrap();
        fs::write(root.join("a"), "x").unwrap();
        fs::write(root.join("b/c/d"), "y").unwrap();
        std::os::unix::fs::symlink("/nowhere", root.join("l")).unwrap();
        let names = |top: &str| {
            let mut b = tar::Builder::new(Vec::new());
            append_tree(&mut b, &root, Path::new(top), false, None).unwrap();
            let data = b.into_inner().unwrap();
            let mut ar = tar::Archive::new(&data[..]);
            ar.entries()
                .unwrap()
                .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names("t"),
            ["t/", "t/a", "t/l", "t/b/", "t/b/c/", "t/b/c/d"]
        );
        assert_eq!(names(""), ["a", "l", "b/", "b/c/", "b/c/d"]);
        let _ = fs::remove_dir_all(&root);
    }
}
