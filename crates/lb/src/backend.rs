//! One replica behind a service: its address, health and load.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::net::{TcpSocket, TcpStream};

use crate::config::{BackendConfig, HealthConfig};
use crate::peer_liveness;
use crate::upstream::IdleConnections;

/// A dead replica's address usually refuses at once; this bounds the unreachable case.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Just added, no check passed yet: not used, so a replica still booting gets nothing.
    Unknown,
    Up,
    Down,
}

struct HealthRecord {
    state: Health,
    /// Consecutive check results in the current streak (only one of them is non-zero).
    successes: u32,
    failures: u32,
    since: DateTime<Utc>,
}

pub struct Backend {
    pub id: String,
    pub addr: SocketAddr,
    pub source: Option<IpAddr>,
    /// Open TCP connections (tcp, https) or requests in flight (http, httpsTerm).
    active: AtomicUsize,
    /// Connections the kernel balanced to it, as last counted (see `crate::kernel`).
    kernel_active: AtomicUsize,
    health: Mutex<HealthRecord>,
    /// Kept-alive HTTP connections to this backend; closed when the backend is dropped.
    pub idle: IdleConnections,
}

/// What the status file says about a backend.
pub struct Snapshot {
    pub healthy: bool,
    pub active: usize,
    pub since: DateTime<Utc>,
}

impl Backend {
    pub fn new(config: &BackendConfig) -> Self {
        Self {
            id: config.id.clone(),
            addr: config.addr,
            source: config.source,
            active: AtomicUsize::new(0),
            kernel_active: AtomicUsize::new(0),
            health: Mutex::new(HealthRecord {
                state: Health::Unknown,
                successes: 0,
                failures: 0,
                since: Utc::now(),
            }),
            idle: IdleConnections::default(),
        }
    }

    pub fn is_up(&self) -> bool {
        self.health().state == Health::Up
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    pub fn set_kernel_active(&self, n: usize) {
        self.kernel_active.store(n, Ordering::Relaxed);
    }

    /// Counts one connection or request until the returned guard is dropped.
    pub fn track(self: &Arc<Self>) -> Active {
        self.active.fetch_add(1, Ordering::Relaxed);
        Active(self.clone())
    }

    pub fn snapshot(&self) -> Snapshot {
        let record = self.health();
        Snapshot {
            healthy: record.state == Health::Up,
            active: self.active() + self.kernel_active.load(Ordering::Relaxed),
            since: record.since,
        }
    }

    /// Feeds one check result; returns the new state when it changed. An unknown backend goes
    /// up on its first success (scale-ups take effect at once) and down after `fall` failures.
    pub fn record_check(&self, passed: bool, rules: &HealthConfig) -> Option<Health> {
        let mut record = self.health();
        if passed {
            record.failures = 0;
            record.successes += 1;
        } else {
            record.successes = 0;
            record.failures += 1;
        }
        let next = match record.state {
            Health::Unknown | Health::Down if passed => {
                let needed = if record.state == Health::Unknown {
                    1
                } else {
                    rules.rise
                };
                if record.successes >= needed {
                    Health::Up
                } else {
                    record.state
                }
            }
            Health::Unknown | Health::Up if !passed && record.failures >= rules.fall => {
                Health::Down
            }
            unchanged => unchanged,
        };
        if next == record.state {
            return None;
        }
        record.state = next;
        record.since = Utc::now();
        Some(next)
    }

    /// A TCP connection to the backend (from its source address, if it has one), without
    /// Nagle (we relay, we don't batch), ended if the backend vanishes.
    pub async fn connect(&self) -> std::io::Result<TcpStream> {
        let socket = match self.addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if let Some(source) = self.source {
            socket.bind(SocketAddr::new(source, 0))?;
        }
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(self.addr))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        stream.set_nodelay(true)?;
        peer_liveness::watch(&stream)?;
        Ok(stream)
    }

    fn health(&self) -> std::sync::MutexGuard<'_, HealthRecord> {
        self.health
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One active connection or request on a backend (leastconn and the status file count them).
pub struct Active(Arc<Backend>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend() -> Backend {
        Backend::new(&BackendConfig {
            id: "a".into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            source: None,
        })
    }

    #[tokio::test]
    async fn connections_leave_from_the_source_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let from = |source: Option<&str>| {
            Backend::new(&BackendConfig {
                id: "a".into(),
                addr: listener.local_addr().unwrap(),
                source: source.map(|s| s.parse().unwrap()),
            })
        };
        for (source, seen) in [(Some("127.0.0.2"), "127.0.0.2"), (None, "127.0.0.1")] {
            let _stream = from(source).connect().await.unwrap();
            let (_, peer) = listener.accept().await.unwrap();
            assert_eq!(peer.ip().to_string(), seen);
        }
    }

    #[tokio::test]
    async fn backend_connections_are_probed_so_a_vanished_backend_ends_them() {
        use nix::sys::socket::{getsockopt, sockopt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = Backend::new(&BackendConfig {
            id: "a".into(),
            addr: listener.local_addr().unwrap(),
            source: None,
        });
        let stream = backend.connect().await.unwrap();
        assert!(getsockopt(&stream, sockopt::KeepAlive).unwrap());
        assert!(getsockopt(&stream, sockopt::TcpUserTimeout).unwrap() > 0);
    }

    fn rules() -> HealthConfig {
        HealthConfig {
            fall: 3,
            rise: 2,
            ..HealthConfig::default()
        }
    }

    #[test]
    fn unknown_goes_up_on_the_first_success() {
        let backend = backend();
        assert!(!backend.is_up());
        assert_eq!(backend.record_check(true, &rules()), Some(Health::Up));
        assert!(backend.is_up());
    }

    #[test]
    fn down_after_fall_failures_and_up_after_rise_successes() {
        let backend = backend();
        backend.record_check(true, &rules());
        assert_eq!(backend.record_check(false, &rules()), None);
        assert_eq!(backend.record_check(false, &rules()), None);
        assert_eq!(backend.record_check(false, &rules()), Some(Health::Down));
        assert_eq!(backend.record_check(true, &rules()), None);
        assert_eq!(backend.record_check(false, &rules()), None);
        assert_eq!(backend.record_check(true, &rules()), None);
        assert_eq!(backend.record_check(true, &rules()), Some(Health::Up));
    }

    #[test]
    fn a_never_healthy_backend_is_reported_down_after_fall_failures() {
        let backend = backend();
        backend.record_check(false, &rules());
        backend.record_check(false, &rules());
        assert_eq!(backend.record_check(false, &rules()), Some(Health::Down));
    }

    #[test]
    fn active_counts_guards() {
        let backend = Arc::new(backend());
        let one = backend.track();
        let two = backend.track();
        assert_eq!(backend.active(), 2);
        drop(one);
        drop(two);
        assert_eq!(backend.active(), 0);
    }
}
