//! `Freeze` and `Thaw`: FIFREEZE makes the kernel write a file system's dirty data and journal
//! out and then block every new write to it until FITHAW, so that the host can copy the disk
//! behind it in a consistent state. Both work through any open file of the file system; the
//! agent keeps the root directory of each volume it mounted open for that, so a volume is found
//! by the target `Start` named, never by walking a path the container can change since.
//!
//! One task owns the volumes and what is frozen, and runs the requests one after the other (a
//! `Thaw` sent while its `Freeze` is still syncing waits for it instead of overtaking it); the
//! ioctls themselves, which can take a while, run on blocking threads, so the message loop only
//! hands requests over. A file system left frozen for longer than the limit (a host that died
//! mid-snapshot) is thawed by the task itself.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::target;
use crate::init::log;

// FIFREEZE = _IOWR('X', 119, int), FITHAW = _IOWR('X', 120, int); the kernel ignores the int.
nix::ioctl_readwrite!(fifreeze, b'X', 119, libc::c_int);
nix::ioctl_readwrite!(fithaw, b'X', 120, libc::c_int);

/// A volume mounted at `Start`.
pub struct Mounted {
    /// The target as `Start` named it, normalized ([`target::normalize`]).
    pub target: String,
    /// The root directory of the volume's file system, held open.
    pub root: File,
}

#[derive(Debug, thiserror::Error)]
pub enum FreezeError {
    #[error("{0} is not a volume of this container")]
    NotAVolume(String),
    #[error("freezing {0}")]
    Freeze(String, #[source] std::io::Error),
    #[error("thawing {0}")]
    Thaw(String, #[source] std::io::Error),
    #[error("the agent's freezer has stopped")]
    Stopped,
}

/// The two kernel calls, behind a trait so that the bookkeeping around them is tested without
/// a file system to freeze.
pub trait FsFreeze: Send + Sync {
    fn freeze(&self, m: &Mounted) -> std::io::Result<()>;
    fn thaw(&self, m: &Mounted) -> std::io::Result<()>;
}

/// The real thing: the ioctls.
struct Ioctl;

impl FsFreeze for Ioctl {
    fn freeze(&self, m: &Mounted) -> std::io::Result<()> {
        let mut unused: libc::c_int = 0;
        // SAFETY: FIFREEZE on an open directory; the int argument is valid (and unused).
        unsafe { fifreeze(m.root.as_raw_fd(), &mut unused) }?;
        Ok(())
    }

    fn thaw(&self, m: &Mounted) -> std::io::Result<()> {
        let mut unused: libc::c_int = 0;
        // SAFETY: FITHAW on an open directory; the int argument is valid (and unused).
        unsafe { fithaw(m.root.as_raw_fd(), &mut unused) }?;
        Ok(())
    }
}

type Reply<T> = oneshot::Sender<T>;

enum Command {
    Adopt(Vec<Mounted>),
    Freeze(Vec<String>, Reply<Result<(), FreezeError>>),
    Thaw(Vec<String>, Reply<Result<(), FreezeError>>),
    ThawAll(Reply<()>),
}

/// The handle of the task that owns the volumes (see the module docs).
#[derive(Clone)]
pub struct Freezer {
    tx: mpsc::UnboundedSender<Command>,
}

impl Freezer {
    /// The freezer of the real kernel, with the protocol's limit on a freeze.
    pub fn start() -> Freezer {
        let limit = Duration::from_secs(agent_proto::FREEZE_MAX_SECS);
        Freezer::spawn(Arc::new(Ioctl), limit)
    }

    /// Start the task; what stays frozen longer than `limit` is thawed by it.
    fn spawn(fs: Arc<dyn FsFreeze>, limit: Duration) -> Freezer {
        let (tx, rx) = mpsc::unbounded_channel();
        let state = State {
            fs,
            limit,
            mounts: HashMap::new(),
            frozen: HashMap::new(),
        };
        tokio::spawn(serve(state, rx));
        Freezer { tx }
    }

    /// Take over the volumes a `Start` mounted (called from its blocking thread, before the
    /// host hears `Started`, so before any `Freeze` for them).
    pub fn adopt(&self, mounted: Vec<Mounted>) {
        let _ = self.tx.send(Command::Adopt(mounted));
    }

    /// Freeze the volumes at these targets: all of them, or (on an error) none.
    pub async fn freeze(&self, targets: Vec<String>) -> Result<(), FreezeError> {
        self.ask(|r| Command::Freeze(targets, r)).await?
    }

    /// Thaw the volumes at these targets; thawing one that is not frozen is no error.
    pub async fn thaw(&self, targets: Vec<String>) -> Result<(), FreezeError> {
        self.ask(|r| Command::Thaw(targets, r)).await?
    }

    /// Thaw everything frozen (before the agent syncs and powers off).
    pub async fn thaw_all(&self) {
        let _ = self.ask(Command::ThawAll).await;
    }

    async fn ask<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, FreezeError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(command(tx))
            .map_err(|_| FreezeError::Stopped)?;
        rx.await.map_err(|_| FreezeError::Stopped)
    }
}

struct State {
    fs: Arc<dyn FsFreeze>,
    limit: Duration,
    mounts: HashMap<String, Arc<Mounted>>,
    /// Frozen targets and when they thaw by themselves.
    frozen: HashMap<String, Instant>,
}

async fn serve(mut st: State, mut rx: mpsc::UnboundedReceiver<Command>) {
    loop {
        let due = st.frozen.values().min().copied();
        tokio::select! {
            command = rx.recv() => match command {
                Some(c) => st.run(c).await,
                None => return,
            },
            () = sleep_until(due) => st.thaw_overdue().await,
        }
    }
}

/// Sleep until `at`; for ever when `None`.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl State {
    async fn run(&mut self, command: Command) {
        match command {
            Command::Adopt(mounted) => {
                for m in mounted {
                    self.mounts.insert(m.target.clone(), Arc::new(m));
                }
            }
            Command::Freeze(targets, reply) => {
                let _ = reply.send(self.freeze(&targets).await);
            }
            Command::Thaw(targets, reply) => {
                let _ = reply.send(self.thaw(&targets).await);
            }
            Command::ThawAll(reply) => {
                let all: Vec<String> = self.frozen.keys().cloned().collect();
                if let Err(e) = self.thaw(&all).await {
                    log!("thawing the volumes: {}", crate::error_chain(&e));
                }
                let _ = reply.send(());
            }
        }
    }

    /// The volumes at `targets`, each once.
    fn lookup(&self, targets: &[String]) -> Result<Vec<Arc<Mounted>>, FreezeError> {
        let mut found: Vec<Arc<Mounted>> = Vec::new();
        for t in targets {
            let m = target::normalize(t)
                .ok()
                .and_then(|key| self.mounts.get(&key))
                .ok_or_else(|| FreezeError::NotAVolume(t.clone()))?;
            if !found.iter().any(|f| f.target == m.target) {
                found.push(m.clone());
            }
        }
        Ok(found)
    }

    /// Freeze what is not frozen yet; on an error, thaw again what this call froze. Every
    /// target's automatic thaw is (re)set to `limit` from now: a host that asks again is still
    /// there.
    async fn freeze(&mut self, targets: &[String]) -> Result<(), FreezeError> {
        let mounts = self.lookup(targets)?;
        let mut newly: Vec<&Arc<Mounted>> = Vec::new();
        for m in mounts
            .iter()
            .filter(|m| !self.frozen.contains_key(&m.target))
        {
            if let Err(e) = self.blocking(m, |fs, m| fs.freeze(m)).await {
                for n in newly {
                    if let Err(e) = self.blocking(n, |fs, m| fs.thaw(m)).await {
                        log!("thawing {} after a failed freeze: {e}", n.target);
                    }
                }
                return Err(FreezeError::Freeze(m.target.clone(), e));
            }
            newly.push(m);
        }
        let until = Instant::now() + self.limit;
        for m in &mounts {
            self.frozen.insert(m.target.clone(), until);
        }
        Ok(())
    }

    /// Thaw every target (going on past a failure); the first failure is the answer.
    async fn thaw(&mut self, targets: &[String]) -> Result<(), FreezeError> {
        let mut first_error = None;
        for m in self.lookup(targets)? {
            self.frozen.remove(&m.target);
            match self.blocking(&m, |fs, m| fs.thaw(m)).await {
                Ok(()) => {}
                // EINVAL: the file system is not frozen (a repeated Thaw, one after the
                // automatic thaw, one for a volume never frozen). The host wants it thawed and
                // it is: success, so that Thaw is idempotent.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) => {
                    first_error.get_or_insert(FreezeError::Thaw(m.target.clone(), e));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Thaw what has been frozen for longer than `limit` without a `Thaw`.
    async fn thaw_overdue(&mut self) {
        let now = Instant::now();
        let overdue: Vec<String> = self
            .frozen
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(target, _)| target.clone())
            .collect();
        log!(
            "no Thaw within {} s: thawing {}",
            self.limit.as_secs(),
            overdue.join(" ")
        );
        if let Err(e) = self.thaw(&overdue).await {
            log!("{}", crate::error_chain(&e));
        }
    }

    /// Run one kernel call on a blocking thread.
    async fn blocking(
        &self,
        m: &Arc<Mounted>,
        call: fn(&dyn FsFreeze, &Mounted) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let (fs, m) = (self.fs.clone(), m.clone());
        tokio::task::spawn_blocking(move || call(fs.as_ref(), &m))
            .await
            .map_err(std::io::Error::other)?
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    use super::*;

    /// The kernel's rules: FIFREEZE on a frozen file system is EBUSY, FITHAW on a thawed one
    /// EINVAL; freezing "/broken" fails.
    #[derive(Default)]
    struct Fake {
        frozen: Mutex<BTreeSet<String>>,
        calls: Mutex<Vec<String>>,
    }

    impl FsFreeze for Fake {
        fn freeze(&self, m: &Mounted) -> std::io::Result<()> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("freeze {}", m.target));
            if m.target == "/broken" {
                return Err(std::io::Error::from_raw_os_error(libc::EOPNOTSUPP));
            }
            if !self.frozen.lock().unwrap().insert(m.target.clone()) {
                return Err(std::io::Error::from_raw_os_error(libc::EBUSY));
            }
            Ok(())
        }

        fn thaw(&self, m: &Mounted) -> std::io::Result<()> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("thaw {}", m.target));
            if !self.frozen.lock().unwrap().remove(&m.target) {
                return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
            }
            Ok(())
        }
    }

    impl Fake {
        fn frozen(&self) -> Vec<String> {
            self.frozen.lock().unwrap().iter().cloned().collect()
        }
    }

    fn with_volumes(limit: Duration) -> (Freezer, Arc<Fake>) {
        let fake = Arc::new(Fake::default());
        let freezer = Freezer::spawn(fake.clone(), limit);
        let mounted = ["/a", "/b", "/broken"]
            .iter()
            .map(|t| Mounted {
                target: t.to_string(),
                root: File::open("/").unwrap(),
            })
            .collect();
        freezer.adopt(mounted);
        (freezer, fake)
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn freeze_and_thaw() {
        let (freezer, fake) = with_volumes(Duration::from_secs(60));
        let e = freezer.freeze(strings(&["/a", "/c"])).await.unwrap_err();
        assert_eq!(e.to_string(), "/c is not a volume of this container");
        assert!(fake.calls.lock().unwrap().is_empty(), "nothing frozen");

        freezer
            .freeze(strings(&["/a", "/b/", "//a"]))
            .await
            .unwrap();
        assert_eq!(fake.frozen(), ["/a", "/b"]);
        // Frozen already: not frozen twice (the kernel would say EBUSY).
        freezer.freeze(strings(&["/a"])).await.unwrap();
        freezer.thaw(strings(&["/a"])).await.unwrap();
        assert_eq!(fake.frozen(), ["/b"]);
        // Not frozen: EINVAL from the kernel, success for the host.
        freezer.thaw(strings(&["/a"])).await.unwrap();
        freezer.thaw_all().await;
        assert!(fake.frozen().is_empty());
    }

    #[tokio::test]
    async fn a_failed_freeze_thaws_what_it_froze() {
        let (freezer, fake) = with_volumes(Duration::from_secs(60));
        freezer.freeze(strings(&["/b"])).await.unwrap();
        let e = freezer
            .freeze(strings(&["/a", "/broken"]))
            .await
            .unwrap_err();
        assert_eq!(
            crate::error_chain(&e),
            format!(
                "freezing /broken: {}",
                std::io::Error::from_raw_os_error(libc::EOPNOTSUPP)
            )
        );
        // "/b" was frozen by an earlier request and stays so.
        assert_eq!(fake.frozen(), ["/b"]);
    }

    #[tokio::test]
    async fn thaws_by_itself_after_the_limit() {
        let (freezer, fake) = with_volumes(Duration::from_millis(1000));
        freezer.freeze(strings(&["/a"])).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Asking again renews the limit.
        freezer.freeze(strings(&["/a", "/b"])).await.unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(fake.frozen(), ["/a", "/b"]);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert!(fake.frozen().is_empty());
        let mut calls = fake.calls.lock().unwrap().clone();
        calls[2..].sort();
        assert_eq!(calls, ["freeze /a", "freeze /b", "thaw /a", "thaw /b"]);
    }
}
