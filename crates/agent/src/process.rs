//! Starting container processes and collecting their exit status.
//!
//! Namespaces: the main process is the init of a new PID namespace, so it cannot see or signal
//! the agent. The agent cannot simply unshare(CLONE_NEWPID) for itself at startup, because a
//! process whose pid_for_children differs from its own PID namespace can no longer create
//! threads (clone(CLONE_THREAD) gives EINVAL) and the agent needs threads. Instead the thread
//! that forks switches its own (per-thread) pid_for_children just around the fork: unshare for
//! the main process, setns into the main process's PID namespace for an exec, and setns back to
//! the agent's namespace right after. The main process also gets its own mount
//! namespace in which the root disk becomes `/` with pivot_root(2), and the agent's whole tree
//! is then detached from that namespace (possible because PID 1 moved off the initramfs at boot,
//! `init::leave_rootfs`). Exec sessions join that mount namespace with setns and chroot into
//! the main process's root.
//!
//! Descriptors: a container process starts with its three stdio descriptors and nothing else.
//! The agent opens everything close-on-exec, and the child marks whatever is left above 2
//! close-on-exec right before exec (`seal_inherited_fds`), so neither a descriptor opened
//! without the flag nor one another thread opened during the fork reaches the container. The
//! container's fresh `/dev` (`enter_new_root`) holds no node of the host channel either.
//!
//! Reaping: one reaper calls waitpid(-1) for everything (the agent is PID 1 and a subreaper);
//! callers register for the pids they started. The reaper never runs while a spawn is in
//! progress, because std's spawn waits for a child whose exec failed itself.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use agent_proto::ProcessSpec;
use nix::mount::{mount, MsFlags};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use tokio::sync::oneshot;

use crate::lookup::{self, LookupError};
use crate::rootfs::ROOTFS;
use crate::user;

/// Held while forking, so the reaper cannot steal std's own wait for a failed exec.
pub static SPAWN_LOCK: Mutex<()> = Mutex::new(());

enum ChildState {
    Waiting(oneshot::Sender<i32>),
    Exited(i32),
}

static CHILDREN: Mutex<Option<HashMap<i32, ChildState>>> = Mutex::new(None);

/// Map a wait status to Docker's exit code (128+N for signal N). `None` when not an exit.
pub fn exit_code(status: WaitStatus) -> Option<(i32, i32)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw(), code)),
        WaitStatus::Signaled(pid, sig, _) => Some((pid.as_raw(), 128 + sig as i32)),
        _ => None,
    }
}

/// Register interest in `pid`'s exit code.
pub fn register(pid: i32) -> oneshot::Receiver<i32> {
    let (tx, rx) = oneshot::channel();
    let mut g = CHILDREN.lock().unwrap_or_else(|e| e.into_inner());
    let map = g.get_or_insert_with(HashMap::new);
    match map.remove(&pid) {
        Some(ChildState::Exited(code)) => {
            let _ = tx.send(code);
        }
        _ => {
            map.insert(pid, ChildState::Waiting(tx));
        }
    }
    rx
}

/// Reap every exited child without blocking. False when a spawn holds the lock (reaping now
/// could take the status of a child that spawn is waiting for): try again later.
pub fn reap() -> bool {
    let Ok(_spawn) = SPAWN_LOCK.try_lock() else {
        return false;
    };
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return true,
            Ok(st) => {
                if let Some((pid, code)) = exit_code(st) {
                    let mut g = CHILDREN.lock().unwrap_or_else(|e| e.into_inner());
                    let map = g.get_or_insert_with(HashMap::new);
                    match map.remove(&pid) {
                        Some(ChildState::Waiting(tx)) => {
                            let _ = tx.send(code);
                        }
                        _ => {
                            // Not (yet) registered: keep the code for a later register().
                            if map.len() > 4096 {
                                map.retain(|_, s| matches!(s, ChildState::Waiting(_)));
                            }
                            map.insert(pid, ChildState::Exited(code));
                        }
                    }
                }
            }
        }
    }
}

/// Which process tree a spawn goes into.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// The main process: new mount namespace over the root disk.
    Main,
    /// An exec session into the container of the main process `main_pid`.
    Exec { main_pid: i32 },
}

/// A started process and the agent's ends of its stdio.
pub struct Spawned {
    pub pid: i32,
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// TTY sessions: the pty master (stdin and output).
    pub master: Option<OwnedFd>,
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SpawnError {
    pub message: String,
    pub exit_code: i32,
}

impl SpawnError {
    fn new(message: impl Into<String>, exit_code: i32) -> SpawnError {
        SpawnError {
            message: message.into(),
            exit_code,
        }
    }
}

impl From<LookupError> for SpawnError {
    fn from(e: LookupError) -> SpawnError {
        SpawnError::new(e.to_string(), e.exit_code())
    }
}

/// Exit code for a failed exec by errno (Docker: 127 not found, 126 cannot execute).
pub fn exec_errno_exit_code(errno: i32) -> i32 {
    if errno == libc::ENOENT {
        agent_proto::EXIT_NOT_FOUND
    } else {
        agent_proto::EXIT_NOT_EXECUTABLE
    }
}

/// What a start of a process settles before it looks for the program: who it runs as, its
/// whole environment and its working directory.
pub struct Settled {
    pub ident: user::Identity,
    pub env: Vec<(String, String)>,
    pub cwd: String,
}

impl Settled {
    /// Those of `spec` in `root`: its user and groups against the root's passwd and group
    /// files, the environment's defaults, `/` for an empty working directory.
    pub fn in_root(root: &Path, spec: &ProcessSpec) -> Result<Self, user::UserError> {
        let ident = user::resolve_in_root(root, &spec.user, &spec.group_add)?;
        let env = build_env(&spec.env, &ident.home, spec.tty);
        let cwd = if spec.cwd.is_empty() { "/" } else { &spec.cwd };
        Ok(Settled {
            ident,
            env,
            cwd: cwd.to_string(),
        })
    }
}

/// The program `spec` names (empty if none).
pub fn program(spec: &ProcessSpec) -> &str {
    spec.args.first().map(String::as_str).unwrap_or("")
}

/// Where `prog` is in `root`, looked for along the PATH of `env` (a name with a '/' from `cwd`).
pub fn find_program(
    root: &Path,
    prog: &str,
    env: &[(String, String)],
    cwd: &str,
) -> Result<String, LookupError> {
    let path_var = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map_or(lookup::DEFAULT_PATH, |(_, v)| v.as_str());
    lookup::find_executable(prog, path_var, cwd, |p| lookup::check_in_root(root, p))
}

/// The full environment: the spec's, plus PATH, HOME (and TERM for a TTY) when missing.
pub fn build_env(spec_env: &[String], home: &str, tty: bool) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    for e in spec_env {
        let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
        if k.is_empty() {
            continue;
        }
        env.retain(|(ek, _)| ek != k);
        env.push((k.to_string(), v.to_string()));
    }
    let has = |env: &Vec<(String, String)>, k: &str| env.iter().any(|(ek, _)| ek == k);
    if !has(&env, "PATH") {
        env.push(("PATH".into(), lookup::DEFAULT_PATH.into()));
    }
    if !has(&env, "HOME") {
        env.push(("HOME".into(), home.into()));
    }
    if tty && !has(&env, "TERM") {
        env.push(("TERM".into(), "xterm".into()));
    }
    env
}

fn cstr(s: &str) -> Result<CString, SpawnError> {
    CString::new(s).map_err(|_| SpawnError::new(format!("NUL byte in {s:?}"), 126))
}

fn open_rdonly(p: &Path) -> Result<OwnedFd, SpawnError> {
    std::fs::File::open(p)
        .map(OwnedFd::from)
        .map_err(|e| SpawnError::new(format!("open {}: {e}", p.display()), 126))
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SpawnError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| SpawnError::new(format!("pipe: {e}"), 126))
}

/// Start `spec`. Blocking (forks and waits for the exec): call from a blocking thread.
pub fn spawn(spec: &ProcessSpec, target: Target) -> Result<Spawned, SpawnError> {
    if matches!(target, Target::Main) && std::process::id() == 1 && !crate::init::left_rootfs() {
        return Err(SpawnError::new(
            "the agent could not leave the initramfs at boot (see the VM console), so the container's root cannot be isolated",
            126,
        ));
    }
    let root: PathBuf = match target {
        Target::Main => PathBuf::from(ROOTFS),
        Target::Exec { main_pid } => PathBuf::from(format!("/proc/{main_pid}/root")),
    };
    let Settled { ident, env, cwd } =
        Settled::in_root(&root, spec).map_err(|e| SpawnError::new(e.to_string(), 126))?;
    if matches!(target, Target::Main) {
        // Docker creates a missing working directory.
        let _ = std::fs::create_dir_all(root.join(cwd.trim_start_matches('/')));
        for d in ["proc", "sys", "dev"] {
            let _ = std::fs::create_dir_all(root.join(d));
        }
    }
    if matches!(target, Target::Exec { .. }) && !root.join(cwd.trim_start_matches('/')).is_dir() {
        return Err(SpawnError::new(
            format!("chdir to cwd (\"{cwd}\"): no such directory"),
            126,
        ));
    }
    let prog = program(spec);
    let exe = find_program(&root, prog, &env, &cwd)?;

    let mut cmd = Command::new(&exe);
    cmd.arg0(prog)
        .args(&spec.args[1..])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)));

    let mut out = Spawned {
        pid: 0,
        stdin: None,
        stdout: None,
        stderr: None,
        master: None,
    };
    if spec.tty {
        let ws = nix::pty::Winsize {
            ws_row: if spec.tty_height == 0 {
                24
            } else {
                spec.tty_height
            },
            ws_col: if spec.tty_width == 0 {
                80
            } else {
                spec.tty_width
            },
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&ws), None)
            .map_err(|e| SpawnError::new(format!("openpty: {e}"), 126))?;
        let dup = |fd: &OwnedFd| {
            fd.try_clone()
                .map_err(|e| SpawnError::new(format!("dup: {e}"), 126))
        };
        // openpty(3) opens both ends without O_CLOEXEC: mark them at once (the slave reaches
        // the child only through its stdio; a spawn racing on another thread is covered by
        // `seal_inherited_fds`).
        for fd in [&pty.master, &pty.slave] {
            let _ = nix::fcntl::fcntl(
                fd.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            );
        }
        cmd.stdin(Stdio::from(dup(&pty.slave)?))
            .stdout(Stdio::from(dup(&pty.slave)?))
            .stderr(Stdio::from(pty.slave));
        out.master = Some(pty.master);
    } else {
        if spec.open_stdin {
            let (r, w) = pipe()?;
            cmd.stdin(Stdio::from(r));
            out.stdin = Some(w);
        } else {
            cmd.stdin(Stdio::null());
        }
        let (r, w) = pipe()?;
        cmd.stdout(Stdio::from(w));
        out.stdout = Some(r);
        let (r, w) = pipe()?;
        cmd.stderr(Stdio::from(w));
        out.stderr = Some(r);
    }

    // Everything the child needs, prepared before the fork.
    let cwd_c = cstr(&cwd)?;
    let tty = spec.tty;
    let ident2 = ident.clone();
    let exec_fds: Option<(OwnedFd, OwnedFd)> = match target {
        Target::Main => None,
        Target::Exec { main_pid } => Some((
            open_rdonly(Path::new(&format!("/proc/{main_pid}/ns/mnt")))?,
            open_rdonly(Path::new(&format!("/proc/{main_pid}/root")))?,
        )),
    };
    let raw_exec_fds: Option<(RawFd, RawFd)> = exec_fds
        .as_ref()
        .map(|(a, b)| (a.as_raw_fd(), b.as_raw_fd()));
    // SAFETY: the closure runs in the forked child before exec; it only makes syscalls (and the
    // small allocations of nix path conversion, safe after glibc's fork).
    unsafe {
        cmd.pre_exec(move || {
            match raw_exec_fds {
                None => enter_new_root()?,
                Some((mnt, rootfd)) => {
                    nix::sched::setns(
                        std::os::fd::BorrowedFd::borrow_raw(mnt),
                        nix::sched::CloneFlags::CLONE_NEWNS,
                    )?;
                    nix::unistd::fchdir(rootfd)?;
                    nix::unistd::chroot(".")?;
                }
            }
            child_common(tty, &ident2, &cwd_c)?;
            seal_inherited_fds()
        });
    }
    let own_pidns = open_rdonly(Path::new("/proc/thread-self/ns/pid"))?;
    let target_pidns = match target {
        Target::Main => None,
        Target::Exec { main_pid } => {
            Some(open_rdonly(Path::new(&format!("/proc/{main_pid}/ns/pid")))?)
        }
    };
    let child = {
        use nix::sched::{setns, unshare, CloneFlags};
        let _g = SPAWN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let entered = match &target_pidns {
            None => unshare(CloneFlags::CLONE_NEWPID),
            Some(fd) => setns(fd, CloneFlags::CLONE_NEWPID),
        };
        if let Err(e) = entered {
            return Err(SpawnError::new(
                format!("entering the container's PID namespace: {e}"),
                126,
            ));
        }
        let child = cmd.spawn();
        if let Err(e) = setns(&own_pidns, CloneFlags::CLONE_NEWPID) {
            // This thread would now fork into the container: never let it spawn again.
            crate::init::log!("restoring PID namespace: {e}");
            std::process::abort();
        }
        child
    };
    drop(cmd);
    drop(exec_fds);
    match child {
        Ok(c) => {
            out.pid = c.id() as i32;
            Ok(out)
        }
        Err(e) => {
            let errno = e.raw_os_error().unwrap_or(0);
            Err(SpawnError::new(
                format!("exec {prog}: {e}"),
                exec_errno_exit_code(errno),
            ))
        }
    }
}

/// In the main process's child: own mount namespace, root disk as `/` with proc, sys and a
/// minimal /dev.
fn enter_new_root() -> std::io::Result<()> {
    use nix::fcntl::OFlag;
    use nix::sched::{unshare, CloneFlags};
    use nix::sys::stat::{makedev, mknod, umask, Mode, SFlag};
    use std::os::fd::FromRawFd;
    unshare(CloneFlags::CLONE_NEWNS)?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )?;
    mount(
        Some(ROOTFS),
        ROOTFS,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )?;
    let p = |s: &str| format!("{ROOTFS}{s}");
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(
        Some("proc"),
        p("/proc").as_str(),
        Some("proc"),
        nosuid,
        None::<&str>,
    )?;
    mount(
        Some("sysfs"),
        p("/sys").as_str(),
        Some("sysfs"),
        nosuid | MsFlags::MS_RDONLY,
        None::<&str>,
    )?;
    mount(
        Some("tmpfs"),
        p("/dev").as_str(),
        Some("tmpfs"),
        MsFlags::MS_NOSUID,
        Some("mode=755,size=65536k"),
    )?;
    let old = umask(Mode::empty());
    for (name, maj, min) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        let _ = mknod(
            p(&format!("/dev/{name}")).as_str(),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(maj, min),
        );
    }
    let _ = std::fs::create_dir(p("/dev/pts"));
    let _ = std::fs::create_dir(p("/dev/shm"));
    let _ = std::fs::create_dir(p("/dev/mqueue"));
    umask(old);
    mount(
        Some("/dev/pts"),
        p("/dev/pts").as_str(),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )?;
    let _ = mount(
        Some("shm"),
        p("/dev/shm").as_str(),
        Some("tmpfs"),
        nosuid,
        Some("mode=1777,size=65536k"),
    );
    let _ = mount(
        Some("mqueue"),
        p("/dev/mqueue").as_str(),
        Some("mqueue"),
        nosuid,
        None::<&str>,
    );
    for (link, target) in [
        ("/dev/ptmx", "pts/ptmx"),
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
        ("/dev/core", "/proc/kcore"),
    ] {
        let _ = std::os::unix::fs::symlink(target, p(link));
    }
    // pivot_root(".", ".") (as runc does): the disk becomes the namespace's root and the
    // agent's root is stacked on top of it at "/"; detaching that leaves nothing of the agent's
    // tree (its /, /dev, /proc, /run ...) in this namespace. Works because the agent left the
    // initramfs at boot (init::leave_rootfs): pivot_root refuses to move rootfs.
    let old_root = nix::fcntl::open(
        "/",
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: old_root was just opened and is owned here.
    let old_root = unsafe { OwnedFd::from_raw_fd(old_root) };
    nix::unistd::chdir(ROOTFS)?;
    nix::unistd::pivot_root(".", ".")?;
    nix::unistd::fchdir(old_root.as_raw_fd())?;
    drop(old_root);
    nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH)?;
    nix::unistd::chdir("/")?;
    Ok(())
}

/// In every child, last thing before exec: every descriptor above 2 becomes close-on-exec, so
/// the process starts with its stdio and nothing else of the agent's (the virtio-serial port to
/// the host, other sessions' pipes and ptys, namespace and volume descriptors), whatever flags
/// they were opened with or whichever thread opened them while this one forked. Marked rather
/// than closed: std reports a failed exec through its own close-on-exec pipe.
fn seal_inherited_fds() -> std::io::Result<()> {
    // SAFETY: close_range(2) with CLOSE_RANGE_CLOEXEC only sets descriptor flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return Ok(());
    }
    // Kernels before 5.11: every descriptor up to the limit, one by one.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let max = lim.rlim_cur.min(1 << 20) as i32;
    for fd in 3..max {
        // SAFETY: F_SETFD on any integer; a closed one gives EBADF, which is ignored.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// In every child, after the root is in place: session/TTY, identity, cwd, signals.
fn child_common(tty: bool, ident: &user::Identity, cwd: &CString) -> std::io::Result<()> {
    nix::unistd::setsid()?;
    if tty {
        // SAFETY: TIOCSCTTY on stdin (the pty slave) with argument 0.
        if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    let groups: Vec<nix::unistd::Gid> = ident
        .groups
        .iter()
        .map(|g| nix::unistd::Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&groups)?;
    nix::unistd::setgid(nix::unistd::Gid::from_raw(ident.gid))?;
    nix::unistd::setuid(nix::unistd::Uid::from_raw(ident.uid))?;
    nix::unistd::chdir(cwd.as_c_str())?;
    nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    )?;
    for sig in 1..32 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: restoring the default disposition.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    Ok(())
}

/// The kernel's OOM-kill counter (/proc/vmstat `oom_kill`).
pub fn oom_kills() -> u64 {
    std::fs::read_to_string("/proc/vmstat")
        .ok()
        .and_then(|t| parse_vmstat_oom(&t))
        .unwrap_or(0)
}

pub fn parse_vmstat_oom(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;
    use nix::unistd::Pid;

    #[test]
    fn exit_codes() {
        let p = Pid::from_raw(5);
        let cases = [
            (WaitStatus::Exited(p, 0), Some((5, 0))),
            (WaitStatus::Exited(p, 3), Some((5, 3))),
            (
                WaitStatus::Signaled(p, Signal::SIGKILL, false),
                Some((5, 137)),
            ),
            (
                WaitStatus::Signaled(p, Signal::SIGTERM, true),
                Some((5, 143)),
            ),
            (WaitStatus::Stopped(p, Signal::SIGSTOP), None),
            (WaitStatus::StillAlive, None),
        ];
        for (i, (st, want)) in cases.into_iter().enumerate() {
            assert_eq!(exit_code(st), want, "test[{i}]");
        }
        assert_eq!(exec_errno_exit_code(libc::ENOENT), 127);
        assert_eq!(exec_errno_exit_code(libc::EACCES), 126);
        assert_eq!(exec_errno_exit_code(libc::ENOEXEC), 126);
    }

    #[test]
    fn env_defaults() {
        let env = build_env(
            &["A=1".into(), "A=2".into(), "B".into(), "=x".into()],
            "/root",
            true,
        );
        let get = |k: &str| env.iter().find(|(ek, _)| ek == k).map(|(_, v)| v.clone());
        assert_eq!(get("A").as_deref(), Some("2"));
        assert_eq!(get("B").as_deref(), Some(""));
        assert_eq!(get("PATH").as_deref(), Some(lookup::DEFAULT_PATH));
        assert_eq!(get("HOME").as_deref(), Some("/root"));
        assert_eq!(get("TERM").as_deref(), Some("xterm"));
        let env = build_env(&["PATH=/x".into(), "HOME=/h".into()], "/root", false);
        assert_eq!(
            env,
            vec![("PATH".into(), "/x".into()), ("HOME".into(), "/h".into())]
        );
    }

    #[test]
    fn vmstat() {
        assert_eq!(parse_vmstat_oom("pgfault 1\noom_kill 3\nfoo 2\n"), Some(3));
        assert_eq!(parse_vmstat_oom("pgfault 1\n"), None);
    }

    #[test]
    fn reaper_registry_either_order() {
        // Exit recorded before registration is delivered on register.
        {
            let mut g = CHILDREN.lock().unwrap();
            g.get_or_insert_with(HashMap::new)
                .insert(999_999, ChildState::Exited(7));
        }
        let mut rx = register(999_999);
        assert_eq!(rx.try_recv().unwrap(), 7);
    }
}
