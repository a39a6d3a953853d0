//! A process held by a pidfd: its signals reach that process, never one that took its pid
//! after it exited.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub struct Pidfd {
    pid: i32,
    fd: OwnedFd,
}

impl Pidfd {
    /// `None` when the process is gone, or the kernel has no pidfds (before 5.3).
    pub fn open(pid: i32) -> Option<Self> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return None;
        }
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Some(Self { pid, fd })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The descriptor, which turns readable when the process exits.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// SIGSTOP: none of its code runs until it is killed.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGKILL, frozen or not.
    pub fn kill(&self) {
        self.signal(libc::SIGKILL);
    }

    /// A process that has exited already has nothing to signal.
    fn signal(&self, signal: i32) {
        // SAFETY: pidfd_send_signal reads only its arguments; no siginfo is passed.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    }
}
