//! Relaying queries for names the network does not know to the upstream servers, over UDP.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::timeout;

/// Per upstream server; short so that a client's own retry (glibc: 5 s) still finds us answering.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_DATAGRAM: usize = 65_535;

/// Sends `query` verbatim to each upstream in turn and returns the first reply, verbatim (it
/// carries the client's id already). `None` when none answered in time.
pub async fn forward(query: &[u8], upstream: &[SocketAddr]) -> Option<Vec<u8>> {
    for server in upstream {
        match timeout(UPSTREAM_TIMEOUT, ask(query, *server)).await {
            Ok(Ok(reply)) => return Some(reply),
            Ok(Err(err)) => tracing::debug!(%server, %err, "upstream failed"),
            Err(_) => tracing::debug!(%server, "upstream timed out"),
        }
    }
    None
}

async fn ask(query: &[u8], server: SocketAddr) -> std::io::Result<Vec<u8>> {
    // A fresh socket per query: a random source port, and connect() makes the kernel drop
    // datagrams from anyone but the server.
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    socket.send(query).await?;
    let mut buf = vec![0; MAX_DATAGRAM];
    loop {
        let len = socket.recv(&mut buf).await?;
        if answers(&buf[..len], query) {
            buf.truncate(len);
            return Ok(buf);
        }
    }
}

/// A reply to `query`: same id, and the QR bit set.
fn answers(reply: &[u8], query: &[u8]) -> bool {
    reply.len() >= 12 && reply[..2] == query[..2] && reply[2] & 0x80 != 0
}
