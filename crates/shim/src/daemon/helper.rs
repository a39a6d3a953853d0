//! A helper VM (`Spec::helper`) serves one copy for hyperd, which shuts it down afterwards.
//! One left without any connection for [`IDLE`] (hyperd died mid-copy) ends itself: the
//! serving loop then syncs the guest and stops QEMU as for any end.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{now, Shim};

pub(super) const IDLE: Duration = Duration::from_secs(300);

pub(super) async fn end_when_idle(shim: Arc<Shim>, mut conns: watch::Receiver<usize>) {
    loop {
        if conns.wait_for(|n| *n == 0).await.is_err() {
            return;
        }
        let busy_again = tokio::time::timeout(IDLE, conns.wait_for(|n| *n > 0)).await;
        if busy_again.is_err() {
            slog!("helper VM idle for {}s: shutting down", IDLE.as_secs());
            shim.finish(0, false, String::new());
            return;
        }
    }
}
