//! The client hyperd uses: one connection per operation.

use std::io;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::{Request, Response};

#[derive(Debug, Clone)]
pub struct ShimClient {
    sock: PathBuf,
}

impl ShimClient {
    /// A client for the shim of container directory `dir`. Fails when no shim socket exists
    /// (the shim has exited: read `state.json`).
    pub fn connect(dir: &Path) -> io::Result<ShimClient> {
        let sock = dir.join(crate::paths::SHIM_SOCK);
        if !sock.exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no shim socket at {}", sock.display()),
            ));
        }
        Ok(ShimClient { sock })
    }

    /// Send one request and read the reply line. For `attach`/`exec` use [`Self::stream`].
    pub async fn request(&self, req: &Request) -> io::Result<Response> {
        let (resp, _) = self.stream(req).await?;
        Ok(resp)
    }

    /// Send one request, read the reply line and hand back the connection, positioned just
    /// after the reply (Docker multiplexed frames follow for attach/exec; write stdin to it and
    /// `shutdown()` the write half for stdin EOF).
    pub async fn stream(&self, req: &Request) -> io::Result<(Response, UnixStream)> {
        let mut s = UnixStream::connect(&self.sock).await?;
        let mut line = serde_json::to_vec(req).expect("request serializes");
        line.push(b'\n');
        s.write_all(&line).await?;
        let reply = read_line(&mut s).await?;
        let resp: Response = serde_json::from_slice(&reply)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok((resp, s))
    }
}

/// Read up to and excluding '\n' one byte at a time, so nothing after the line is consumed.
pub(crate) async fn read_line(s: &mut UnixStream) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    loop {
        if s.read(&mut b).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before end of line",
            ));
        }
        if b[0] == b'\n' {
            return Ok(out);
        }
        out.push(b[0]);
        if out.len() > 1 << 20 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
        }
    }
}
