//! Where in the container's root a volume goes. The target comes from the host, but the
//! directories it passes through come from the image, which is tenant input: a symlink there
//! must not carry the mount out of the container's root into the agent's own tree. So the path
//! is walked one component at a time, each symlink read and interpreted relative to the
//! container's root (an absolute link starts again at that root, `..` stops at it: what
//! openat2's RESOLVE_IN_ROOT does, and what the container itself would see), and the
//! directories missing on the way are created. No container process runs yet at `Start`, so
//! nothing can swap a component between the walk and the mount.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Symlinks followed in one resolution before giving up (the kernel's limit, ELOOP).
const MAX_SYMLINKS: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("not an absolute path")]
    NotAbsolute,
    #[error("'..' is not allowed")]
    DotDot,
    #[error("a volume cannot be mounted over the container's root")]
    Root,
    #[error("{0} in the image is not a directory")]
    NotDirectory(String),
    #[error("too many levels of symbolic links")]
    SymlinkLoop,
    #[error("{0} in the image")]
    Io(String, #[source] std::io::Error),
}

/// The target in one canonical spelling ("/a/b": no empty or `.` components, no trailing
/// slash), after checking that it is absolute, has no `..` and is not the root. Freeze and
/// Thaw name volumes by it.
pub fn normalize(target: &str) -> Result<String, TargetError> {
    if !target.starts_with('/') {
        return Err(TargetError::NotAbsolute);
    }
    let mut out = String::new();
    for c in target.split('/').filter(|c| !c.is_empty() && *c != ".") {
        if c == ".." {
            return Err(TargetError::DotDot);
        }
        out.push('/');
        out.push_str(c);
    }
    if out.is_empty() {
        return Err(TargetError::Root);
    }
    Ok(out)
}

/// The directory under `root` (the container's root in the agent's view) that `target` names
/// for the container, created (mode 0755) where missing. See the module docs.
pub fn resolve(root: &Path, target: &str) -> Result<PathBuf, TargetError> {
    let mut pending: VecDeque<OsString> = normalize(target)?
        .split('/')
        .filter(|c| !c.is_empty())
        .map(OsString::from)
        .collect();
    let mut resolved: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            // Only from a symlink's text: at the root it stays there.
            resolved.pop();
            continue;
        }
        let path = join(root, &resolved).join(&name);
        let io = |e| TargetError::Io(in_container(&resolved, &name), e);
        match std::fs::symlink_metadata(&path) {
            Ok(md) if md.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(TargetError::SymlinkLoop);
                }
                let dest = std::fs::read_link(&path).map_err(io)?;
                if dest.is_absolute() {
                    resolved.clear();
                }
                prepend_components(&mut pending, &dest);
            }
            Ok(md) if md.is_dir() => resolved.push(name),
            Ok(_) => return Err(TargetError::NotDirectory(in_container(&resolved, &name))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                make_dir(&path).map_err(io)?;
                resolved.push(name);
            }
            Err(e) => return Err(io(e)),
        }
    }
    Ok(join(root, &resolved))
}

/// Put a symlink's components in front of what is still to be walked.
fn prepend_components(pending: &mut VecDeque<OsString>, link: &Path) {
    for c in link.components().rev() {
        match c {
            Component::Normal(n) => pending.push_front(n.to_os_string()),
            Component::ParentDir => pending.push_front(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
}

fn join(root: &Path, components: &[OsString]) -> PathBuf {
    let mut p = root.to_path_buf();
    p.extend(components);
    p
}

/// A path as the container spells it, for messages.
fn in_container(resolved: &[OsString], name: &OsString) -> String {
    join(Path::new("/"), resolved)
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// mkdir with mode 0755 whatever the umask.
fn make_dir(path: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().mode(0o755).create(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn normalize_cases() {
        let cases: [(&str, Result<&str, &str>); 9] = [
            ("/data", Ok("/data")),
            ("/data/", Ok("/data")),
            ("//var/./lib//db", Ok("/var/lib/db")),
            ("data", Err("NotAbsolute")),
            ("", Err("NotAbsolute")),
            ("/a/../b", Err("DotDot")),
            ("/..", Err("DotDot")),
            ("/", Err("Root")),
            ("/./", Err("Root")),
        ];
        for (i, (input, want)) in cases.into_iter().enumerate() {
            let got = normalize(input).map_err(|e| format!("{e:?}"));
            match want {
                Ok(w) => assert_eq!(got.as_deref(), Ok(w), "test[{i}] {input}"),
                Err(w) => assert!(got.is_err_and(|e| e == w), "test[{i}] {input}"),
            }
        }
    }

    /// A container root inside an otherwise empty directory, so that anything created outside
    /// the root shows.
    fn hostile_tree(name: &str) -> (PathBuf, PathBuf) {
        let outer =
            std::env::temp_dir().join(format!("hyper-agent-target-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&outer);
        let root = outer.join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("srv/app")).unwrap();
        std::fs::write(root.join("file"), b"x").unwrap();
        symlink("/etc", root.join("abs")).unwrap();
        symlink("../../../../..", root.join("up")).unwrap();
        symlink("/../../escaped", root.join("esc")).unwrap();
        symlink("/nowhere/deep", root.join("dangling")).unwrap();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();
        symlink("../srv/app", root.join("srv/rel")).unwrap();
        symlink("/file", root.join("tofile")).unwrap();
        (outer, root)
    }

    #[test]
    fn resolve_stays_in_root() {
        let (outer, root) = hostile_tree("resolve");
        let cases: [(&str, Result<&str, &str>); 11] = [
            ("/etc", Ok("etc")),
            ("/abs", Ok("etc")),
            ("/abs/sub", Ok("etc/sub")),
            ("/up/x", Ok("x")),
            ("/esc", Ok("escaped")),
            ("/dangling", Ok("nowhere/deep")),
            ("/srv/rel/data", Ok("srv/app/data")),
            ("/new/a/b", Ok("new/a/b")),
            ("/file/x", Err("NotDirectory(\"/file\")")),
            ("/tofile", Err("NotDirectory(\"/file\")")),
            ("/loop1/x", Err("SymlinkLoop")),
        ];
        for (i, (target, want)) in cases.into_iter().enumerate() {
            let got = resolve(&root, target).map_err(|e| format!("{e:?}"));
            match want {
                Ok(w) => {
                    assert_eq!(
                        got.as_deref().ok(),
                        Some(root.join(w).as_path()),
                        "test[{i}]"
                    );
                    assert!(root.join(w).is_dir(), "test[{i}] {target} made");
                }
                Err(w) => assert_eq!(got.err().as_deref(), Some(w), "test[{i}] {target}"),
            }
        }
        let outside: Vec<_> = std::fs::read_dir(&outer).unwrap().flatten().collect();
        assert_eq!(outside.len(), 1, "nothing created next to the root");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(root.join("new/a")).unwrap().mode() & 0o7777,
            0o755
        );
        std::fs::remove_dir_all(&outer).unwrap();
    }
}
