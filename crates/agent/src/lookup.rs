//! Finding the executable the way execvp would, but against the container's root rather than the
//! agent's, so that "not found" (127) and "not executable" (126) are known before the fork and
//! reported like Docker does.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

pub use agent_proto::DEFAULT_PATH;

/// What is at a path inside the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Missing,
    /// Exists but is a directory or has no execute bit.
    NotExecutable,
    Executable,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("exec: \"{0}\": executable file not found in $PATH")]
    NotFound(String),
    #[error("exec: \"{0}\": permission denied")]
    NotExecutable(String),
    #[error("no command specified")]
    Empty,
}

impl LookupError {
    /// Docker's exit codes for failed starts.
    pub fn exit_code(&self) -> i32 {
        match self {
            LookupError::NotFound(_) | LookupError::Empty => agent_proto::EXIT_NOT_FOUND,
            LookupError::NotExecutable(_) => agent_proto::EXIT_NOT_EXECUTABLE,
        }
    }
}

/// Resolve `prog` using `path` and `check` (which answers for a path inside the container).
/// A name with a '/' is taken as is (relative to `cwd`). Like execvp, a candidate that exists but
/// is not executable is skipped, and "permission denied" is reported only if nothing better is
/// found.
pub fn find_executable(
    prog: &str,
    path: &str,
    cwd: &str,
    check: impl Fn(&str) -> Access,
) -> Result<String, LookupError> {
    if prog.is_empty() {
        return Err(LookupError::Empty);
    }
    let candidates: Vec<String> = if prog.contains('/') {
        if prog.starts_with('/') {
            vec![prog.to_string()]
        } else {
            let cwd = if cwd.is_empty() { "/" } else { cwd };
            vec![format!(
                "{}/{}",
                cwd.trim_end_matches('/'),
                prog.trim_start_matches("./")
            )]
        }
    } else {
        path.split(':')
            .map(|d| if d.is_empty() { "." } else { d })
            .filter(|d| d.starts_with('/'))
            .map(|d| format!("{}/{}", d.trim_end_matches('/'), prog))
            .collect()
    };
    let mut denied = false;
    for c in &candidates {
        match check(c) {
            Access::Executable => return Ok(c.clone()),
            Access::NotExecutable => denied = true,
            Access::Missing => {}
        }
    }
    if denied {
        Err(LookupError::NotExecutable(prog.to_string()))
    } else {
        Err(LookupError::NotFound(prog.to_string()))
    }
}

/// Check `path` inside the directory tree `root`, resolving symlinks (absolute ones too) within
/// `root` with openat2(RESOLVE_IN_ROOT).
pub fn check_in_root(root: &Path, path: &str) -> Access {
    let Some(fd) = open_in_root(root, path, libc::O_PATH) else {
        return Access::Missing;
    };
    let Ok(st) = nix::sys::stat::fstat(fd.as_raw_fd()) else {
        return Access::Missing;
    };
    if st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_mode & 0o111 != 0 {
        Access::Executable
    } else {
        Access::NotExecutable
    }
}

/// Open `path` inside the directory tree `root` with `flags` (and `O_CLOEXEC`), resolving
/// symlinks (absolute ones too) within `root` with openat2(RESOLVE_IN_ROOT).
pub fn open_in_root(root: &Path, path: &str, flags: i32) -> Option<OwnedFd> {
    let rootdir = std::fs::File::open(root).ok()?;
    let cpath = std::ffi::CString::new(path.trim_start_matches('/')).ok()?;
    // struct open_how { u64 flags; u64 mode; u64 resolve; }
    let how: [u64; 3] = [(flags | libc::O_CLOEXEC) as u64, 0, libc::RESOLVE_IN_ROOT];
    // SAFETY: valid dirfd, NUL-terminated path, a properly sized open_how struct.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            rootdir.as_raw_fd(),
            cpath.as_ptr(),
            how.as_ptr(),
            std::mem::size_of_val(&how),
        )
    };
    // SAFETY: openat2 returned a new fd we own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs(p: &str) -> Access {
        match p {
            "/bin/sh" | "/usr/bin/env" | "/app/run" => Access::Executable,
            "/usr/local/bin/env" | "/etc/passwd" | "/bin/data" | "/bin" => Access::NotExecutable,
            _ => Access::Missing,
        }
    }

    #[test]
    fn lookup_cases() {
        let cases: Vec<(&str, &str, &str, Result<&str, LookupError>)> = vec![
            ("sh", DEFAULT_PATH, "/", Ok("/bin/sh")),
            ("env", DEFAULT_PATH, "/", Ok("/usr/bin/env")), // skips the non-executable one first in PATH
            ("/bin/sh", "", "/", Ok("/bin/sh")),
            ("./run", DEFAULT_PATH, "/app", Ok("/app/run")),
            ("run", "/app/", "/", Ok("/app/run")),
            (
                "nope",
                DEFAULT_PATH,
                "/",
                Err(LookupError::NotFound("nope".into())),
            ),
            (
                "/etc/passwd",
                DEFAULT_PATH,
                "/",
                Err(LookupError::NotExecutable("/etc/passwd".into())),
            ),
            (
                "data",
                "/bin",
                "/",
                Err(LookupError::NotExecutable("data".into())),
            ),
            (
                "/bin",
                DEFAULT_PATH,
                "/",
                Err(LookupError::NotExecutable("/bin".into())),
            ),
            ("", DEFAULT_PATH, "/", Err(LookupError::Empty)),
            (
                "sh",
                "relative:also",
                "/",
                Err(LookupError::NotFound("sh".into())),
            ),
        ];
        for (i, (prog, path, cwd, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                find_executable(prog, path, cwd, fs),
                want.map(str::to_string),
                "test[{i}] {prog}"
            );
        }
        assert_eq!(LookupError::NotFound("x".into()).exit_code(), 127);
        assert_eq!(LookupError::NotExecutable("x".into()).exit_code(), 126);
    }

    #[test]
    fn check_in_root_follows_absolute_symlinks_inside_root() {
        let dir = std::env::temp_dir().join(format!("hyper-agent-lookup-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::write(dir.join("bin/busybox"), b"x").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.join("bin/busybox"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("/bin/busybox", dir.join("bin/sh")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", dir.join("bin/dangling")).unwrap();
        std::fs::write(dir.join("bin/text"), b"x").unwrap();
        assert_eq!(check_in_root(&dir, "/bin/sh"), Access::Executable);
        assert_eq!(check_in_root(&dir, "/bin/dangling"), Access::Missing);
        assert_eq!(check_in_root(&dir, "/bin/text"), Access::NotExecutable);
        assert_eq!(check_in_root(&dir, "/bin"), Access::NotExecutable);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
