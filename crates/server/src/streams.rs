//! Hijacked connections (attach, exec start) and Docker's stream framing.
//!
//! Without a TTY, Docker multiplexes stdout and stderr on one connection: each chunk has an
//! 8-byte header `[stream, 0, 0, 0, len u32 BE]`. With a TTY the stream is raw. The VM
//! supervisor always sends framed output (and one last frame, stream 255, with an exec's exit
//! code); here it is passed on framed or unframed as the client expects.

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http::{header, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::detach_keys::Escape;
use crate::error::ApiError;
use crate::limits::StreamSlot;

/// The stream byte of the supervisor's last exec frame, which carries `{"exit_code": N}`.
const EXIT_FRAME: u8 = 255;

pub fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&[stream, 0, 0, 0]);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A client's raw connection, with the tenant's stream slot (`crate::limits`) to hold for as
/// long as the stream is open.
pub type Hijacked = (hyper::upgrade::Upgraded, Option<StreamSlot>);

/// How long output waits after a 101 for clients that read the 101 through a buffered reader
/// and then the raw socket (docker-py): bytes that arrive with the 101 land in that buffer
/// and are lost to them.
pub const AFTER_101: std::time::Duration = std::time::Duration::from_millis(100);

/// Whether the client is one that loses what arrives with a 101 (docker-py; the Docker CLI
/// reads on from the same buffer).
pub fn loses_bytes_after_101(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ua| ua.starts_with("docker-sdk-python"))
}

/// Answers `101 UPGRADED` and hands back the future of the raw connection.
pub fn hijack(
    req: &mut Request,
) -> Result<
    (
        Response,
        impl std::future::Future<Output = Option<Hijacked>>,
    ),
    ApiError,
> {
    let wants_upgrade = req.headers().get(header::UPGRADE).is_some();
    if !wants_upgrade {
        return Err(ApiError::bad_request(
            "this endpoint needs a hijacked connection: send Connection: Upgrade, Upgrade: tcp",
        ));
    }
    let slot = req.extensions_mut().remove::<StreamSlot>();
    let on_upgrade = hyper::upgrade::on(req);
    let response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "tcp")
        .header(header::CONTENT_TYPE, "application/vnd.docker.raw-stream")
        .body(Body::empty())
        .expect("valid response");
    let upgraded = async move { on_upgrade.await.ok().map(|io| (io, slot)) };
    Ok((response, upgraded))
}

/// Copies client input to the supervisor and its frames back to the client until the process
/// is done. `on_end` gets the exit code when the supervisor sent one (exec) *before* the
/// client's stream is closed: a client that asks for the exit code as soon as the stream ends
/// (`docker exec` inspects the exec then) must find it recorded.
///
/// With `detach` (a TTY session with stdin), the detach keys end the client's session at once
/// while the process runs on: its stdin stays open and its output is drained to its end.
/// `replay` (attach's `logs=1`) goes to the client first.
pub async fn pump(
    upgraded: hyper::upgrade::Upgraded,
    shim: BufReader<UnixStream>,
    session: Session,
    on_end: impl FnOnce(Option<i64>) + Send + 'static,
) {
    let Session {
        tty,
        stdin,
        detach,
        replay,
        wait_for_exit,
    } = session;
    let client = TokioIo::new(upgraded);
    let (mut client_rd, mut client_wr) = tokio::io::split(client);
    if client_wr.write_all(&replay).await.is_err() {
        return on_end(None);
    }
    let (mut shim_rd, mut shim_wr) = tokio::io::split(shim);
    let input = copy_input(&mut client_rd, &mut shim_wr, stdin, tty, detach);
    let output = forward_frames(&mut shim_rd, &mut client_wr, tty);
    let code = tokio::select! {
        code = output => code,
        () = input => {
            // Detached (or a terminal's input ended): the client goes now, the process
            // carries on unwatched; an exec's output is drained to learn its exit code.
            let _ = client_wr.shutdown().await;
            drop(client_wr);
            let code = match wait_for_exit {
                true => forward_frames(&mut shim_rd, &mut tokio::io::sink(), tty).await,
                false => None,
            };
            drop(shim_wr);
            on_end(code);
            return;
        }
    };
    on_end(code);
    let _ = client_wr.shutdown().await;
}

/// How a client's session goes.
#[derive(Default)]
pub struct Session {
    /// Raw output (a terminal) rather than Docker's multiplexed frames.
    pub tty: bool,
    /// The client's input goes to the process.
    pub stdin: bool,
    pub detach: Option<Escape>,
    pub replay: Vec<u8>,
    /// After a detach, follow the process to its exit code (an exec's), rather than let go.
    pub wait_for_exit: bool,
}

/// Answers a hijacked request with `data` alone (attach's `logs=1&stream=0`).
pub async fn send_and_close(upgraded: hyper::upgrade::Upgraded, data: &[u8]) {
    let mut client = TokioIo::new(upgraded);
    let _ = client.write_all(data).await;
    let _ = client.shutdown().await;
}

/// The client's input to the process until the detach keys (then it returns). The end of the
/// client's input ends a terminal session the same way (Docker's rule: the process keeps its
/// stdin, as after the keys, which the Docker CLI itself watches for and does not send);
/// otherwise it is the end of the process's stdin (then this waits for ever).
async fn copy_input(
    client: &mut (impl AsyncRead + Unpin),
    process: &mut (impl AsyncWrite + Unpin),
    stdin: bool,
    tty: bool,
    mut detach: Option<Escape>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match client.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Without stdin the input is drained and ignored; a client closing its side must not
        // end the output.
        if !stdin {
            continue;
        }
        let (pass, detached) = match &mut detach {
            Some(escape) => escape.feed(&buf[..n]),
            None => (buf[..n].to_vec(), false),
        };
        if !pass.is_empty() && process.write_all(&pass).await.is_err() {
            break;
        }
        if detached {
            return;
        }
    }
    if stdin && tty {
        return;
    }
    let _ = process.shutdown().await;
    std::future::pending::<()>().await;
}

async fn forward_frames(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
    tty: bool,
) -> Option<i64> {
    let mut header = [0u8; 8];
    loop {
        if from.read_exact(&mut header).await.is_err() {
            return None;
        }
        let len = u32::from_be_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
        let mut payload = vec![0u8; len];
        if from.read_exact(&mut payload).await.is_err() {
            return None;
        }
        if header[0] == EXIT_FRAME {
            let v: serde_json::Value = serde_json::from_slice(&payload).unwrap_or_default();
            return v["exit_code"].as_i64();
        }
        let written = if tty {
            to.write_all(&payload).await
        } else {
            to.write_all(&frame(header[0], &payload)).await
        };
        if written.is_err() || to.flush().await.is_err() {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_pass_through_or_unwrap_and_exit_code_ends() {
        let mut input = frame(1, b"out");
        input.extend(frame(2, b"err"));
        input.extend(frame(EXIT_FRAME, br#"{"exit_code":3}"#));
        let mut framed = Vec::new();
        assert_eq!(
            forward_frames(&mut input.as_slice(), &mut framed, false).await,
            Some(3)
        );
        let mut want = frame(1, b"out");
        want.extend(frame(2, b"err"));
        assert_eq!(framed, want);
        let mut raw = Vec::new();
        assert_eq!(
            forward_frames(&mut input.as_slice(), &mut raw, true).await,
            Some(3)
        );
        assert_eq!(raw, b"outerr");
    }
}
