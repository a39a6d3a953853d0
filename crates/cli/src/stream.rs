//! Attached streams: Docker's multiplexed framing (8-byte header: stream, 3 zero bytes, u32
//! big-endian length, then the payload) for non-TTY containers, raw bytes for TTY ones; copying
//! stdin up a hijacked connection with a half-close on EOF; the local terminal in raw mode;
//! window-size propagation.

use std::io::{self, IsTerminal};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use nix::sys::termios::{self, SetArg, Termios};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::transport::{ApiRequest, Client};

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
/// The daemon reports an error inside the stream.
pub const SYSTEMERR: u8 = 3;
const HEADER_LEN: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("stream I/O failed")]
    Io(#[from] io::Error),
    #[error("unrecognized stream type {0} in the multiplexed output")]
    BadStream(u8),
    #[error("Error response from daemon: {0}")]
    Daemon(String),
}

/// Splits Docker's multiplexed stream into frames; feed it bytes as they arrive.
#[derive(Default)]
pub struct Demuxer {
    buf: BytesMut,
}

impl Demuxer {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, if one has arrived.
    pub fn next_frame(&mut self) -> Option<(u8, Bytes)> {
        if self.buf.len() < HEADER_LEN {
            return None;
        }
        let len = u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]) as usize;
        if self.buf.len() < HEADER_LEN + len {
            return None;
        }
        let stream = self.buf[0];
        self.buf.advance(HEADER_LEN);
        Some((stream, self.buf.split_to(len).freeze()))
    }

    /// Bytes of an incomplete frame left over.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// Encodes one frame (used by tests; the server has its own).
pub fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![stream, 0, 0, 0];
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// Writes container output to stdout/stderr: raw for a TTY, demultiplexed otherwise.
pub struct OutputSink<'a, O, E> {
    tty: bool,
    demux: Demuxer,
    out: &'a mut O,
    err: &'a mut E,
}

impl<'a, O: AsyncWrite + Unpin, E: AsyncWrite + Unpin> OutputSink<'a, O, E> {
    pub fn new(tty: bool, out: &'a mut O, err: &'a mut E) -> Self {
        Self {
            tty,
            demux: Demuxer::default(),
            out,
            err,
        }
    }

    pub async fn write(&mut self, data: &[u8]) -> Result<(), StreamError> {
        if self.tty {
            self.out.write_all(data).await?;
            self.out.flush().await?;
            return Ok(());
        }
        self.demux.push(data);
        while let Some((stream, payload)) = self.demux.next_frame() {
            match stream {
                STDIN | STDOUT => {
                    self.out.write_all(&payload).await?;
                    self.out.flush().await?;
                }
                STDERR => {
                    self.err.write_all(&payload).await?;
                    self.err.flush().await?;
                }
                SYSTEMERR => {
                    return Err(StreamError::Daemon(
                        String::from_utf8_lossy(&payload).trim().to_owned(),
                    ))
                }
                other => return Err(StreamError::BadStream(other)),
            }
        }
        Ok(())
    }
}

/// Copies the container's output to our stdout/stderr until the daemon closes it.
pub async fn copy_output<R: AsyncRead + Unpin>(mut r: R, tty: bool) -> Result<(), StreamError> {
    copy_output_to(
        &mut r,
        tty,
        &mut tokio::io::stdout(),
        &mut tokio::io::stderr(),
    )
    .await
}

pub async fn copy_output_to<R, O, E>(
    r: &mut R,
    tty: bool,
    out: &mut O,
    err: &mut E,
) -> Result<(), StreamError>
where
    R: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 32 * 1024];
    let mut sink = OutputSink::new(tty, out, err);
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        sink.write(&buf[..n]).await?;
    }
}

/// Copies a streamed response body (logs) to stdout/stderr.
pub async fn copy_body(mut body: hyper::body::Incoming, tty: bool) -> Result<(), StreamError> {
    use http_body_util::BodyExt;
    let (mut out, mut err) = (tokio::io::stdout(), tokio::io::stderr());
    let mut sink = OutputSink::new(tty, &mut out, &mut err);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(io::Error::other)?;
        if let Some(data) = frame.data_ref() {
            sink.write(data).await?;
        }
    }
    Ok(())
}

/// How an attached session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The daemon closed the output: the process is done (or its stream was).
    Closed,
    /// The user typed the detach keys: the process runs on.
    Detached,
}

/// Runs an attached session on a hijacked connection: our stdin goes up (if `stdin`), with a
/// write-side shutdown on EOF so the process sees EOF; output comes down until the daemon
/// closes it, which ends the session. With `detach` (the detach keys of a TTY session), typing
/// them is noticed, so that the session's end counts as leaving it.
pub async fn pump<S>(
    io: S,
    tty: bool,
    stdin: bool,
    detach: Option<Vec<u8>>,
) -> Result<Ended, StreamError>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let detached = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = detached.clone();
    let input = stdin.then(|| {
        tokio::spawn(async move {
            let mut input = tokio::io::stdin();
            let mut watch = detach.map(crate::detach::Watch::new);
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match input.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if watch.as_mut().is_some_and(|w| w.seen_in(&buf[..n])) {
                    seen.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                if wr.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            let _ = wr.shutdown().await;
            wr
        })
    });
    let result = copy_output(&mut rd, tty).await;
    if let Some(task) = input {
        task.abort();
    }
    result?;
    Ok(match detached.load(std::sync::atomic::Ordering::SeqCst) {
        true => Ended::Detached,
        false => Ended::Closed,
    })
}

/// Puts stdin in raw mode while alive; dropping it restores the previous settings.
pub struct RawTerminal {
    saved: Termios,
}

impl RawTerminal {
    /// `None` when stdin is not a terminal.
    pub fn enable() -> io::Result<Option<Self>> {
        let stdin = io::stdin();
        if !stdin.is_terminal() {
            return Ok(None);
        }
        let saved = termios::tcgetattr(&stdin).map_err(io::Error::from)?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        // Keep output post-processing so "\n" from our own messages still returns the carriage.
        raw.output_flags.insert(termios::OutputFlags::OPOST);
        termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw).map_err(io::Error::from)?;
        Ok(Some(Self { saved }))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}

/// The terminal's (height, width), from stdout.
pub fn terminal_size() -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the valid, exclusively borrowed `ws`.
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

/// Sends the terminal size to `resize_path` (`/containers/{id}/resize` or `/exec/{id}/resize`)
/// now (retrying briefly while the process starts) and on every SIGWINCH.
pub fn monitor_tty_size(client: Arc<Client>, resize_path: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let resize = |(h, w): (u16, u16)| {
            client.call(
                ApiRequest::post(resize_path.clone())
                    .query("h", h)
                    .query("w", w),
            )
        };
        if let Some(size) = terminal_size() {
            for attempt in 0..5u64 {
                if resize(size).await.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100 * (attempt + 1))).await;
            }
        }
        let Ok(mut winch) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        else {
            return;
        };
        while winch.recv().await.is_some() {
            if let Some(size) = terminal_size() {
                let _ = resize(size).await;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demux_frames_across_chunks() {
        let mut data = frame(STDOUT, b"hello\n");
        data.extend(frame(STDERR, b"oops"));
        data.extend(frame(STDOUT, b""));
        let mut d = Demuxer::default();
        let mut got = Vec::new();
        // Byte by byte: no frame is produced before it is complete.
        for b in &data {
            d.push(std::slice::from_ref(b));
            while let Some(f) = d.next_frame() {
                got.push(f);
            }
        }
        assert_eq!(
            got,
            vec![
                (STDOUT, Bytes::from_static(b"hello\n")),
                (STDERR, Bytes::from_static(b"oops")),
                (STDOUT, Bytes::new()),
            ]
        );
        assert_eq!(d.pending(), 0);
        d.push(&[1, 0, 0, 0, 0, 0, 1]);
        assert!(d.next_frame().is_none());
    }

    #[test]
    fn frame_header_layout() {
        assert_eq!(frame(STDERR, &[0xaa; 258])[..8], [2, 0, 0, 0, 0, 0, 1, 2]);
    }

    #[tokio::test]
    async fn copy_output_splits_streams() {
        let mut data = frame(STDOUT, b"out");
        data.extend(frame(STDERR, b"err"));
        let (mut out, mut err) = (Vec::new(), Vec::new());
        copy_output_to(&mut data.as_slice(), false, &mut out, &mut err)
            .await
            .unwrap();
        assert_eq!((out.as_slice(), err.as_slice()), (&b"out"[..], &b"err"[..]));

        let (mut out, mut err) = (Vec::new(), Vec::new());
        copy_output_to(&mut &b"raw tty"[..], true, &mut out, &mut err)
            .await
            .unwrap();
        assert_eq!(out, b"raw tty");

        let data = frame(SYSTEMERR, b"boom");
        let r = copy_output_to(
            &mut data.as_slice(),
            false,
            &mut Vec::new(),
            &mut Vec::new(),
        )
        .await;
        assert!(matches!(r, Err(StreamError::Daemon(m)) if m == "boom"));
    }
}
