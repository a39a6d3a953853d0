//! One running process (main or exec) and its stdio, bridged to frames with credit-based flow
//! control (see agent_proto's docs): output is read only while the host has granted credit, and
//! stdin credit is returned as bytes reach the process.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_proto::{Frame, GuestMsg, Kind};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::init::log;
use crate::process::Spawned;

/// Largest data frame the agent sends.
const CHUNK: usize = 32 * 1024;

/// Output credit for one stream.
pub struct Credit {
    avail: Mutex<i64>,
    notify: Notify,
}

impl Credit {
    pub fn new() -> Arc<Credit> {
        Arc::new(Credit {
            avail: Mutex::new(agent_proto::INITIAL_WINDOW as i64),
            notify: Notify::new(),
        })
    }

    pub fn grant(&self, n: u32) {
        *self.avail.lock().unwrap_or_else(|e| e.into_inner()) += n as i64;
        self.notify.notify_waiters();
    }

    /// Wait for credit and take up to `max` bytes of it.
    async fn take(&self, max: usize) -> usize {
        loop {
            let notified = self.notify.notified();
            {
                let mut a = self.avail.lock().unwrap_or_else(|e| e.into_inner());
                if *a > 0 {
                    let n = (*a as usize).min(max);
                    *a -= n as i64;
                    return n;
                }
            }
            notified.await;
        }
    }

    /// Give back credit taken but not used.
    fn refund(&self, n: usize) {
        *self.avail.lock().unwrap_or_else(|e| e.into_inner()) += n as i64;
    }
}

/// A non-blocking fd (pipe end or pty master) driven by tokio.
pub struct Fd(AsyncFd<OwnedFd>);

impl Fd {
    pub fn new(fd: OwnedFd) -> std::io::Result<Fd> {
        let flags = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))?;
        // SAFETY: the OwnedFd is moved into the AsyncFd, so it stays open and unchanged while registered.
        let afd =
            unsafe { AsyncFd::register(fd) }.map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Fd(afd))
    }

    pub fn raw(&self) -> i32 {
        self.0.get_ref().as_raw_fd()
    }

    pub async fn write_all(&self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let mut g = self.0.writable().await?;
            match g
                .try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(std::io::Error::from))
            {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
        Ok(())
    }
}

/// Set a pty's window size.
pub fn resize(master: &Fd, width: u16, height: u16) {
    let ws = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize struct.
    if unsafe { libc::ioctl(master.raw(), libc::TIOCSWINSZ, &ws) } != 0 {
        log!("TIOCSWINSZ: {}", std::io::Error::last_os_error());
    }
}

/// How long a pty's output waits for the rest of what the process wrote. The terminal layer
/// hands a line over in pieces (the text, then the "\r\n" it makes of "\n"); sent apart,
/// clients that read by chunk (docker-py) see a line split in two, which dockerd's slower
/// reads hide.
const PTY_GATHER: Duration = Duration::from_millis(5);

/// Reads what else is ready on `fd` into `buf` without waiting, after `got` bytes; the total.
fn gather(fd: &Fd, buf: &mut [u8], mut got: usize) -> usize {
    while got < buf.len() {
        match nix::unistd::read(fd.raw(), &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => break, // EAGAIN, or EIO once the process is gone: the next read says
        }
    }
    got
}

async fn pump_output(
    fd: Arc<Fd>,
    kind: Kind,
    stream: u32,
    credit: Arc<Credit>,
    out: mpsc::UnboundedSender<Frame>,
    is_pty: bool,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        // Wait for data first, then for credit, so stdout and stderr never starve each other.
        let Ok(mut g) = fd.0.readable().await else {
            return;
        };
        let n = credit.take(CHUNK).await;
        let got = match g.try_io(|f| {
            nix::unistd::read(f.as_raw_fd(), &mut buf[..n]).map_err(std::io::Error::from)
        }) {
            Ok(Ok(got)) => got,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {
                credit.refund(n);
                continue;
            }
            Ok(Err(_)) => return, // EIO on a pty once the process is gone, or a real error
            Err(_would_block) => {
                credit.refund(n);
                continue;
            }
        };
        if got == 0 {
            credit.refund(n);
            return; // EOF
        }
        let got = if is_pty && got < n {
            tokio::time::sleep(PTY_GATHER).await;
            gather(&fd, &mut buf[..n], got)
        } else {
            got
        };
        credit.refund(n - got);
        if out
            .send(Frame::new(kind, stream, buf[..got].to_vec()))
            .is_err()
        {
            return;
        }
    }
}

async fn pump_stdin(
    fd: Arc<Fd>,
    stream: u32,
    mut rx: mpsc::UnboundedReceiver<Option<Vec<u8>>>,
    out: mpsc::UnboundedSender<Frame>,
) {
    while let Some(Some(data)) = rx.recv().await {
        if let Err(e) = fd.write_all(&data).await {
            log!("stdin of stream {stream}: {e}");
            break;
        }
        let _ = out.send(Frame::window_update(stream, data.len() as u32));
    }
    // Dropping `fd` (the last reference for a pipe) closes the process's stdin.
}

/// How a session learns its process's end.
pub struct Exit {
    /// The exit code, from the reaper.
    pub code: oneshot::Receiver<i32>,
    /// The kernel's OOM-kill count before the process started (`process::oom_kills`).
    pub oom_before: u64,
}

/// Bridge `sp`'s stdio until the process exits and its output is drained, then send `Exited`.
pub async fn run(
    stream: u32,
    sp: Spawned,
    master: Option<Arc<Fd>>,
    exit: Exit,
    stdin_rx: mpsc::UnboundedReceiver<Option<Vec<u8>>>,
    credit: Arc<Credit>,
    out: mpsc::UnboundedSender<Frame>,
) {
    let mut readers = Vec::new();
    let mut stdin_task = None;
    if let Some(m) = master {
        readers.push(tokio::spawn(pump_output(
            m.clone(),
            Kind::Stdout,
            stream,
            credit.clone(),
            out.clone(),
            true,
        )));
        stdin_task = Some(tokio::spawn(pump_stdin(m, stream, stdin_rx, out.clone())));
    } else {
        for (fd, kind) in [(sp.stdout, Kind::Stdout), (sp.stderr, Kind::Stderr)] {
            if let Some(fd) = fd.and_then(|f| Fd::new(f).ok()) {
                readers.push(tokio::spawn(pump_output(
                    Arc::new(fd),
                    kind,
                    stream,
                    credit.clone(),
                    out.clone(),
                    false,
                )));
            }
        }
        if let Some(fd) = sp.stdin.and_then(|f| Fd::new(f).ok()) {
            stdin_task = Some(tokio::spawn(pump_stdin(
                Arc::new(fd),
                stream,
                stdin_rx,
                out.clone(),
            )));
        }
    }
    let exit_code = exit.code.await.unwrap_or(137);
    // Output still in flight (or held open by a background process) gets a short grace period.
    for r in readers {
        let abort = r.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), r)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    if let Some(t) = stdin_task {
        t.abort();
    }
    let oom_killed = crate::process::oom_kills() > exit.oom_before;
    let _ = out.send(Frame::guest(&GuestMsg::Exited {
        stream,
        exit_code,
        oom_killed,
    }));
}
