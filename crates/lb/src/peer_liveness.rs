//! Connections whose peer vanishes without a word are ended instead of held forever.
//!
//! A replica whose VM is killed (or a client VM that dies) takes its tap with it: no RST ever
//! comes, so a request waiting for its answer, or a relayed connection, would wait as long as
//! the balancer runs. TCP keepalive probes a connection that is quiet (a request sent and
//! acknowledged, its answer not begun), and TCP_USER_TIMEOUT ends it once probes or data have
//! gone unacknowledged that long. The peer's kernel acknowledges both however slow its
//! application is, so a slow answer or a long idle connection is never cut while the peer lives.

use std::os::fd::AsFd;
use std::time::Duration;

use nix::sys::socket::{setsockopt, sockopt};

/// Quiet time before the first probe.
const PROBE_AFTER: Duration = Duration::from_secs(5);
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a peer may leave probes or data unacknowledged before the connection ends.
const GIVE_UP_AFTER: Duration = Duration::from_secs(10);

/// Applies the probing to a connected TCP socket.
pub fn watch(socket: &impl AsFd) -> std::io::Result<()> {
    setsockopt(socket, sockopt::KeepAlive, &true)?;
    setsockopt(socket, sockopt::TcpKeepIdle, &secs(PROBE_AFTER))?;
    setsockopt(socket, sockopt::TcpKeepInterval, &secs(PROBE_INTERVAL))?;
    // Ignored while TCP_USER_TIMEOUT is set, which decides instead; kept as its fallback.
    setsockopt(socket, sockopt::TcpKeepCount, &5)?;
    setsockopt(
        socket,
        sockopt::TcpUserTimeout,
        &u32::try_from(GIVE_UP_AFTER.as_millis()).expect("fits"),
    )?;
    Ok(())
}

fn secs(duration: Duration) -> u32 {
    u32::try_from(duration.as_secs()).expect("fits")
}
