//! Cutting a connection whose credential stops working. Every request is checked against the
//! store, but a request already admitted can last: `docker events`, `logs -f`, and the
//! hijacked streams of attach and exec. So each TCP connection remembers the credentials that
//! admitted its requests, and a small task per connection checks them again whenever a key,
//! token or certificate record changes (a store watch), when one reaches its expiry, and every
//! [`RECHECK`] in case a watch fell behind. When one no longer works, the connection's socket
//! is severed: reads and writes fail, so hyper, and any upgraded stream, end it.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, Notify};

use crate::accounts::Accounts;

/// The safety net behind the store watch.
const RECHECK: Duration = Duration::from_secs(30);
/// Distinct credentials one connection may use; a client needs one.
const MAX_PER_CONNECTION: usize = 16;

/// What every TCP connection's guard needs: the accounts and a counter bumped at each change
/// of a credential record.
#[derive(Clone)]
pub struct Guards {
    accounts: Accounts,
    changes: watch::Receiver<u64>,
}

impl Guards {
    /// Starts watching the credential records (keys, tokens, certificates).
    pub fn start(accounts: Accounts) -> Self {
        let (tx, changes) = watch::channel(0u64);
        for prefix in ["/keys/", "/tokens/", "/certs/"] {
            let mut events = accounts.store.watch(prefix);
            let tx = tx.clone();
            tokio::spawn(async move {
                while events.next().await.is_some() {
                    tx.send_modify(|n| *n += 1);
                }
            });
        }
        Self { accounts, changes }
    }

    /// Wraps a connection's socket, and guards it until the socket is dropped. The returned
    /// [`Admitted`] goes into each request so the authentication records its credential.
    pub fn guard<T>(&self, io: T) -> (Severable<T>, Admitted) {
        let (alive, dropped) = watch::channel(());
        let switch = Arc::new(Switch::default());
        let admitted = Admitted(Arc::default());
        tokio::spawn(watch_connection(
            self.clone(),
            admitted.clone(),
            switch.clone(),
            dropped,
        ));
        let io = Severable {
            inner: io,
            switch,
            _alive: alive,
        };
        (io, admitted)
    }
}

/// The credentials that admitted requests on one connection, by store key.
#[derive(Clone, Default)]
pub struct Admitted(Arc<AdmittedInner>);

#[derive(Default)]
struct AdmittedInner {
    list: Mutex<Vec<(String, Option<DateTime<Utc>>)>>,
    added: Notify,
}

impl Admitted {
    /// Records the credential at `store_key` (expiring at `expires`); false when the
    /// connection has used too many to keep watching another.
    pub fn admit(&self, store_key: &str, expires: Option<DateTime<Utc>>) -> bool {
        let mut list = self.0.list.lock().expect("admitted");
        if list.iter().any(|(k, _)| k == store_key) {
            return true;
        }
        if list.len() >= MAX_PER_CONNECTION {
            return false;
        }
        list.push((store_key.to_string(), expires));
        self.0.added.notify_one();
        true
    }

    fn next_expiry(&self) -> Option<DateTime<Utc>> {
        let list = self.0.list.lock().expect("admitted");
        list.iter().filter_map(|(_, e)| *e).min()
    }

    fn keys(&self) -> Vec<String> {
        let list = self.0.list.lock().expect("admitted");
        list.iter().map(|(k, _)| k.clone()).collect()
    }
}

async fn watch_connection(
    guards: Guards,
    admitted: Admitted,
    switch: Arc<Switch>,
    mut dropped: watch::Receiver<()>,
) {
    let Guards {
        accounts,
        mut changes,
    } = guards;
    changes.borrow_and_update();
    loop {
        let wait = match admitted.next_expiry() {
            Some(at) => (at - Utc::now()).to_std().unwrap_or_default().min(RECHECK),
            None => RECHECK,
        };
        tokio::select! {
            // The socket was dropped: the connection is over.
            _ = dropped.changed() => return,
            changed = changes.changed() => if changed.is_err() { return },
            _ = admitted.0.added.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        if let Some(key) = admitted.keys().iter().find(|k| !accounts.is_active(k)) {
            tracing::info!("closing a connection: its credential {key} no longer works");
            switch.sever();
            return;
        }
    }
}

#[derive(Default)]
struct Switch {
    severed: AtomicBool,
    reader: AtomicWaker,
    writer: AtomicWaker,
}

impl Switch {
    fn sever(&self) {
        self.severed.store(true, Ordering::Release);
        self.reader.wake();
        self.writer.wake();
    }

    fn check(&self, waker: &AtomicWaker, cx: &Context<'_>) -> io::Result<()> {
        waker.register(cx.waker());
        if self.severed.load(Ordering::Acquire) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the connection's credential was revoked or expired",
            ));
        }
        Ok(())
    }
}

/// A socket that fails every read and write once severed.
pub struct Severable<T> {
    inner: T,
    switch: Arc<Switch>,
    /// Dropped with the socket, which ends its guard.
    _alive: watch::Sender<()>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Severable<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.switch.check(&this.switch.reader, cx)?;
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Severable<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.switch.check(&this.switch.writer, cx)?;
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.switch.check(&this.switch.writer, cx)?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn a_connection_watches_each_credential_once_and_a_bounded_number() {
        let admitted = Admitted::default();
        let soon = Utc::now() + chrono::TimeDelta::minutes(1);
        assert!(admitted.admit("/keys/A", None));
        assert!(admitted.admit("/keys/A", None));
        assert!(admitted.admit("/tokens/b", Some(soon)));
        assert_eq!(admitted.keys(), ["/keys/A", "/tokens/b"]);
        assert_eq!(admitted.next_expiry(), Some(soon));
        for i in 2..MAX_PER_CONNECTION {
            assert!(admitted.admit(&format!("/tokens/{i}"), None), "test[{i}]");
        }
        assert!(!admitted.admit("/tokens/one-too-many", None));
        assert!(admitted.admit("/keys/A", None), "a known one is still fine");
    }

    /// A severed socket fails the read it was blocked in, and every write after.
    #[tokio::test]
    async fn severing_wakes_a_blocked_reader() {
        let (a, mut b) = tokio::io::duplex(64);
        let switch = Arc::new(Switch::default());
        let (alive, _dropped) = watch::channel(());
        let mut io = Severable {
            inner: a,
            switch: switch.clone(),
            _alive: alive,
        };
        b.write_all(b"x").await.unwrap();
        let mut buf = [0u8; 1];
        io.read_exact(&mut buf).await.unwrap();
        let reader = tokio::spawn(async move {
            let r = io.read(&mut buf).await;
            (r.map_err(|e| e.kind()), io)
        });
        tokio::task::yield_now().await;
        switch.sever();
        let (r, mut io) = reader.await.unwrap();
        assert_eq!(r, Err(io::ErrorKind::ConnectionAborted));
        assert!(io.write_all(b"y").await.is_err());
    }
}
