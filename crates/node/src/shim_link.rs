//! hyperd's side of the per-VM supervisor's socket (docs/internals.md, "hyper-shim"): one
//! connection per operation, a JSON line each way, then raw frames for attach and exec.

use std::path::Path;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::RuntimeError;

pub use shim::{
    NetworkSpec, ProcessSpec, Spec as ShimSpec, State as ShimState, Status as ShimStatus,
};

pub fn read_state(dir: &Path) -> Option<ShimState> {
    ShimState::load(dir).ok()
}

/// The supervisor's RFC 3339 times.
pub fn parse_time(t: &Option<String>) -> Option<chrono::DateTime<chrono::Utc>> {
    t.as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// The longest reply line read from a supervisor: what it relays of a guest is capped well
/// below this, so a longer line is a broken supervisor, not something to buffer.
const MAX_REPLY: u64 = 8 << 20;

/// Sends one request and reads the reply line. Returns the reply and, for streaming operations,
/// the connection positioned at the first frame.
pub async fn call(
    dir: &Path,
    request: Value,
) -> Result<(Value, BufReader<UnixStream>), RuntimeError> {
    let sock = dir.join("shim.sock");
    let stream = UnixStream::connect(&sock)
        .await
        .map_err(RuntimeError::ShimGone)?;
    let mut stream = BufReader::new(stream);
    let mut line = serde_json::to_vec(&request).expect("json");
    line.push(b'\n');
    stream
        .get_mut()
        .write_all(&line)
        .await
        .map_err(RuntimeError::ShimGone)?;
    let mut reply = String::new();
    (&mut stream)
        .take(MAX_REPLY)
        .read_line(&mut reply)
        .await
        .map_err(RuntimeError::ShimGone)?;
    if reply.len() as u64 >= MAX_REPLY && !reply.ends_with('\n') {
        return Err(RuntimeError::Internal(format!(
            "the VM supervisor's reply is over {MAX_REPLY} bytes"
        )));
    }
    if reply.is_empty() {
        return Err(RuntimeError::ShimGone(std::io::Error::other(
            "the VM supervisor closed the connection",
        )));
    }
    let reply: Value = serde_json::from_str(&reply)
        .map_err(|e| RuntimeError::Internal(format!("bad reply from the VM supervisor: {e}")))?;
    if reply["ok"].as_bool() != Some(true) {
        let message = reply["error"]
            .as_str()
            .unwrap_or("the VM supervisor refused the request")
            .to_string();
        return Err(RuntimeError::Shim(message));
    }
    Ok((reply, stream))
}

/// A request whose reply is all we need.
pub async fn request(dir: &Path, request: Value) -> Result<Value, RuntimeError> {
    Ok(call(dir, request).await?.0)
}
