//! Drives a command on a pseudo-terminal, the way a person at a terminal would: for
//! `hyper exec -it` / `hyper run -it`, which put the local terminal in raw mode.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Output seen on the terminal and the exit code.
#[derive(Debug)]
pub struct PtyOut {
    pub output: String,
    pub code: i32,
}

/// Runs `cmd` with stdin/stdout/stderr on a new pty (its controlling terminal, 80x24). Once
/// `wait_for` appears in the output (or at once when empty) types `input`, then waits for the
/// command to exit within `timeout`. Panics with the output so far on timeout.
pub fn run_on_pty(cmd: Command, wait_for: &str, input: &str, timeout: Duration) -> PtyOut {
    run_on_pty_steps(cmd, &[(wait_for, input)], timeout)
}

/// As [`run_on_pty`], with several steps: each waits for its text to appear after what the
/// previous step typed (at once when empty), then types its input.
pub fn run_on_pty_steps(mut cmd: Command, steps: &[(&str, &str)], timeout: Duration) -> PtyOut {
    let winsize = nix::pty::Winsize {
        ws_row: 24,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&winsize), None).expect("openpty");
    let master: OwnedFd = pty.master;
    let slave: OwnedFd = pty.slave;
    cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave));
    // SAFETY: setsid and ioctl are async-signal-safe; stdin (fd 0) is the pty slave by now.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn on pty");
    drop(cmd); // closes our copies of the slave: EOF/EIO on the master once the child is gone

    let out = Arc::new(Mutex::new(Vec::<u8>::new()));
    let mut reader = std::fs::File::from(master.try_clone().unwrap());
    let out2 = out.clone();
    let rt = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out2.lock().unwrap().extend_from_slice(&buf[..n]),
            }
        }
    });
    let text = |o: &Arc<Mutex<Vec<u8>>>| String::from_utf8_lossy(&o.lock().unwrap()).into_owned();
    let end = Instant::now() + timeout;
    let mut writer = std::fs::File::from(master);
    let (mut step, mut seen_from) = (0, 0);
    let status = loop {
        if let Some((wait_for, input)) = steps.get(step) {
            let (seen, len) = {
                let out = out.lock().unwrap();
                let since = String::from_utf8_lossy(&out[seen_from.min(out.len())..]).into_owned();
                (wait_for.is_empty() || since.contains(wait_for), out.len())
            };
            if seen {
                writer.write_all(input.as_bytes()).expect("type on the pty");
                (step, seen_from) = (step + 1, len);
            }
        }
        let typed = format!("{step} of {} steps", steps.len());
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "command on the pty did not finish within {timeout:?} (typed: {typed}); output:\n{}",
                text(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // The reader ends with EIO once no process holds the slave; do not wait forever for it.
    let _ = writer.as_raw_fd();
    drop(writer);
    let t_end = Instant::now() + Duration::from_secs(2);
    while !rt.is_finished() && Instant::now() < t_end {
        std::thread::sleep(Duration::from_millis(20));
    }
    use std::os::unix::process::ExitStatusExt;
    PtyOut {
        output: text(&out),
        code: status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
    }
}
