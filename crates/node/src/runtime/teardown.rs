//! The end of a removed container's VM on the host: its supervisor gone (QEMU killed and
//! reaped), its cgroup removed, its directory deleted.
//!
//! A forced removal of a running container without volumes does not wait for it. It freezes
//! the VM (SIGSTOP: no code of it runs again) and goes on to remove its records, name, address
//! and network rules. QEMU's exit, mostly the kernel freeing the VM's memory, comes once no
//! removal has been answered for a moment (or [`FREEZE_LIMIT`] after the freeze): with 100 removals at once,
//! the exits of the VMs killed first slowed the others' answers by half even at idle priority
//! (kernel work on the pages they free). A container with volumes waits: they are free for
//! another container only once QEMU has closed them. A hyperd that stops waits for the
//! teardowns in flight; one that crashes leaves directories and groups that the next one's
//! recovery removes, and kills the VMs it left frozen. A node short of disk space waits for
//! them too before it refuses a new allocation (`Runtime::check_storage`): the disks they are
//! deleting count as free.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;

use super::wait_for_supervisor_exit;
use crate::cgroups::Cgroups;
use crate::pidfd::Pidfd;

/// The longest a removed VM stays frozen, holding its memory, while removals go on.
const FREEZE_LIMIT: Duration = Duration::from_secs(2);
/// How long no removal must have been answered before frozen VMs are killed: the CLIs of a
/// burst of removals reach hyperd over a few hundred milliseconds, with gaps between them.
const QUIET_FOR: Duration = Duration::from_millis(250);

/// Teardowns running in the background, and the removals being answered.
#[derive(Default)]
pub(super) struct Teardowns {
    in_flight: watch::Sender<usize>,
    removals: watch::Sender<usize>,
}

/// Counts one out of its count when dropped (also if its task panics).
pub(super) struct Counted(watch::Sender<usize>);

impl Counted {
    fn new(count: &watch::Sender<usize>) -> Self {
        count.send_modify(|n| *n += 1);
        Self(count.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

impl Teardowns {
    pub(super) fn spawn(&self, teardown: impl Future<Output = ()> + Send + 'static) {
        let done = Counted::new(&self.in_flight);
        tokio::spawn(async move {
            teardown.await;
            drop(done);
        });
    }

    /// A removal being answered, until the guard is dropped.
    pub(super) fn removal(&self) -> Counted {
        Counted::new(&self.removals)
    }

    /// Kills the frozen `qemu` once no removal has been answered for [`QUIET_FOR`], at most
    /// [`FREEZE_LIMIT`] from now.
    pub(super) fn kill_when_quiet(&self, qemu: Pidfd) -> impl Future<Output = ()> + Send {
        let mut removals = self.removals.subscribe();
        let quiet = async move {
            loop {
                if removals.wait_for(|&n| n == 0).await.is_err() {
                    return;
                }
                // A removal that begins meanwhile starts the wait again.
                match tokio::time::timeout(QUIET_FOR, removals.changed()).await {
                    Ok(Ok(())) => continue,
                    Ok(Err(_)) | Err(_) => return,
                }
            }
        };
        async move {
            let _ = tokio::time::timeout(FREEZE_LIMIT, quiet).await;
            qemu.kill();
        }
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

    use super::{Pidfd, Teardowns};

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

    /// A frozen `sleep`, as a removal leaves a VM's QEMU, and its pidfd.
    fn frozen_process() -> (std::process::Child, Pidfd) {
        let child = std::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .expect("sleep");
        let pidfd = Pidfd::open(child.id() as i32).expect("a pidfd");
        pidfd.freeze();
        (child, pidfd)
    }

    /// The signal that ended `child`, once it has ended.
    fn killed_by(child: &mut std::process::Child) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        child.wait().expect("wait").signal()
    }

    #[tokio::test]
    async fn a_frozen_vm_is_killed_once_no_removal_is_answered() {
        let teardowns = Teardowns::default();
        let (mut vm, qemu) = frozen_process();
        let answering = teardowns.removal();
        let kill = tokio::spawn(teardowns.kill_when_quiet(qemu));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            vm.try_wait().expect("wait").is_none(),
            "killed while a removal was answered"
        );
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", vm.id())).expect("stat");
        assert!(stat.contains(") T "), "not frozen: {stat}");
        drop(answering);
        kill.await.expect("the kill");
        assert_eq!(killed_by(&mut vm), Some(libc::SIGKILL));
    }

    #[tokio::test]
    async fn removals_that_go_on_keep_a_vm_frozen_no_longer_than_the_limit() {
        let teardowns = Teardowns::default();
        let (mut vm, qemu) = frozen_process();
        let _answering = teardowns.removal();
        teardowns.kill_when_quiet(qemu).await;
        assert_eq!(killed_by(&mut vm), Some(libc::SIGKILL));
    }
}
