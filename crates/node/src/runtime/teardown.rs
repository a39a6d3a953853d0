//! The end of a removed container's VM on the host: its supervisor gone (QEMU killed and
//! reaped), its cgroup removed, its directory deleted.
//!
//! A forced removal of a running container without volumes does not wait for it. By then the
//! VM is killed (SIGKILL: no code of it runs again) and its supervisor has recorded the end;
//! the removal goes on to remove its records, name, address and network rules. What is left
//! is QEMU's exit, mostly the kernel freeing the VM's memory: with 100 removals at once, they
//! waited ~0.3 s on average for it. A container with volumes waits: they are free for another
//! container only once QEMU has closed them. A hyperd that stops waits for the teardowns in
//! flight; one that crashes leaves directories and groups that the next one's recovery
//! removes. A node short of disk space waits for them too before it refuses a new allocation
//! (`Runtime::check_storage`): the disks they are deleting count as free.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;

use super::wait_for_supervisor_exit;
use crate::cgroups::Cgroups;

/// Teardowns running in the background.
#[derive(Default)]
pub(super) struct Teardowns {
    in_flight: watch::Sender<usize>,
}

/// Counts one teardown out when dropped (also if its task panics).
struct InFlight(watch::Sender<usize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

impl Teardowns {
    pub(super) fn spawn(&self, teardown: impl Future<Output = ()> + Send + 'static) {
        self.in_flight.send_modify(|n| *n += 1);
        let done = InFlight(self.in_flight.clone());
        tokio::spawn(async move {
            teardown.await;
            drop(done);
        });
    }

    /// Waits, at most `limit`, until `enough()` holds or no teardown is left in flight, asking
    /// again as each one ends; returns its last answer.
    pub(super) async fn until(&self, limit: Duration, mut enough: impl FnMut() -> bool) -> bool {
        let mut n = self.in_flight.subscribe();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if enough() {
                return true;
            }
            if *n.borrow_and_update() == 0 {
                return false;
            }
            if !matches!(
                tokio::time::timeout_at(deadline, n.changed()).await,
                Ok(Ok(()))
            ) {
                return enough();
            }
        }
    }

    /// Waits, at most `limit`, for the teardowns in flight; `Err` holds how many are left.
    pub(super) async fn finish(&self, limit: Duration) -> Result<(), usize> {
        self.until(limit, || false).await;
        match *self.in_flight.borrow() {
            0 => Ok(()),
            left => Err(left),
        }
    }
}

/// Waits for the supervisor of `dir` to exit, then removes the VM's group and `dir`.
pub(super) async fn teardown(dir: PathBuf, cgroups: Option<Cgroups>, tenant: String, id: String) {
    wait_for_supervisor_exit(&dir).await;
    if let Some(cgroups) = &cgroups {
        super::confine::release_group(cgroups, &tenant, &id).await;
    }
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        tracing::warn!("removing {}: {e}", dir.display());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::Teardowns;

    #[tokio::test]
    async fn finish_waits_for_the_teardowns_in_flight() {
        let teardowns = Teardowns::default();
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        teardowns.spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            flag.store(true, Ordering::SeqCst);
        });
        // One that panics is counted out all the same.
        teardowns.spawn(async { panic!("a teardown that fails") });
        assert_eq!(teardowns.finish(Duration::from_secs(10)).await, Ok(()));
        assert!(done.load(Ordering::SeqCst));
        assert_eq!(*teardowns.in_flight.borrow(), 0);
    }

    #[tokio::test]
    async fn until_asks_again_as_each_teardown_ends() {
        let teardowns = Teardowns::default();
        let ended = Arc::new(AtomicUsize::new(0));
        for ms in [100, 300, 5_000] {
            let ended = ended.clone();
            teardowns.spawn(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                ended.fetch_add(1, Ordering::SeqCst);
            });
        }
        // Enough once two have ended: it does not wait for the third.
        let two = || ended.load(Ordering::SeqCst) >= 2;
        assert!(teardowns.until(Duration::from_secs(10), two).await);
        assert_eq!(ended.load(Ordering::SeqCst), 2);
        // Never enough: it gives up at its limit, with one still in flight.
        assert!(!teardowns.until(Duration::from_millis(200), || false).await);
        assert_eq!(*teardowns.in_flight.borrow(), 1);
        // None in flight: it answers at once.
        let idle = Teardowns::default();
        assert!(!idle.until(Duration::from_secs(10), || false).await);
    }
}
