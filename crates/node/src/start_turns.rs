//! Turns at bringing a VM up. Under TCG a VM's start is CPU work in its own QEMU (translating
//! and running the guest's code), and many at once on a few cores cost more CPU than the same
//! starts a few at a time: each switch between QEMUs finds the next one's translated code and
//! caches cold. Measured on 2 cores, 40 claimed standbys: all at once 4.2-5.3 s and 7.8-10.2 s
//! of host CPU, four at a time 3.5 s and 6.4 s, two at a time 4.0 s and 7.0 s. So at most
//! [`StartTurns::for_host`] starts hold a turn at once (more VMs come up only when one outlasts
//! its longest hold) and the other starts wait their turn.
//!
//! Tenants take turns, so one tenant's burst does not queue another's single start behind all
//! of it. A turn is held [`HOLD_MAX`] at most: a start that takes longer (a cold boot, a guest
//! that does not answer) goes on without it, so no guest holds up the others' starts.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

/// The longest a start keeps its turn from the others (a claim takes ~0.2 s here, a restore
/// ~0.6 s, a cold boot ~2.3 s).
pub const HOLD_MAX: Duration = Duration::from_secs(2);

/// Starts allowed to bring their VMs up at once (see the module's doc).
pub struct StartTurns {
    queue: Arc<Mutex<Queue>>,
    hold_max: Duration,
}

#[derive(Default)]
struct Queue {
    /// Turns nobody holds; while any is free, nobody waits.
    free: usize,
    /// Tenants with starts waiting, in the order they are served.
    tenants: VecDeque<String>,
    /// Each waiting tenant's starts, in the order they came.
    waiting: HashMap<String, VecDeque<oneshot::Sender<()>>>,
}

impl Queue {
    /// A turn given back: to the first waiting start of the tenant next in line (who then goes
    /// to the back of the line), or kept free.
    fn hand_on(&mut self) {
        while let Some(tenant) = self.tenants.pop_front() {
            let Some(starts) = self.waiting.get_mut(&tenant) else {
                continue;
            };
            let next = starts.pop_front();
            if starts.is_empty() {
                self.waiting.remove(&tenant);
            } else {
                self.tenants.push_back(tenant);
            }
            // A start whose client went away while it waited takes no turn.
            if next.is_some_and(|start| start.send(()).is_ok()) {
                return;
            }
        }
        self.free += 1;
    }
}

impl StartTurns {
    /// Twice the host's CPUs (four on the 2-core machine of the measurement above).
    pub fn for_host() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::new(2 * cpus, HOLD_MAX)
    }

    fn new(turns: usize, hold_max: Duration) -> Self {
        Self {
            queue: Arc::new(Mutex::new(Queue {
                free: turns,
                ..Queue::default()
            })),
            hold_max,
        }
    }

    /// Waits for a turn of `tenant`'s; held until the [`Turn`] is dropped, or [`HOLD_MAX`].
    pub async fn take(&self, tenant: &str) -> Turn {
        let waiting = {
            let mut queue = self.queue.lock().expect("poisoned");
            let queue = &mut *queue;
            if queue.free > 0 {
                queue.free -= 1;
                None
            } else {
                let (tx, rx) = oneshot::channel();
                let starts = queue.waiting.entry(tenant.to_string()).or_default();
                if starts.is_empty() {
                    queue.tenants.push_back(tenant.to_string());
                }
                starts.push_back(tx);
                Some(Waiting {
                    rx,
                    queue: self.queue.clone(),
                })
            }
        };
        if let Some(mut waiting) = waiting {
            // Every sender sends before it is dropped: an error cannot happen.
            let _ = (&mut waiting.rx).await;
        }
        Turn::new(self.queue.clone(), self.hold_max)
    }
}

/// A start waiting for its turn. Dropped before it took it (its client went away), it passes on
/// a turn that reached it meanwhile.
struct Waiting {
    rx: oneshot::Receiver<()>,
    queue: Arc<Mutex<Queue>>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.rx.close();
        if self.rx.try_recv().is_ok() {
            self.queue.lock().expect("poisoned").hand_on();
        }
    }
}

/// A start's turn: given back when dropped, or after the longest hold.
pub struct Turn {
    held: Arc<AtomicBool>,
    queue: Arc<Mutex<Queue>>,
    /// Gives the turn back after the longest hold (none outside an async runtime).
    timer: Option<tokio::task::AbortHandle>,
}

impl Turn {
    fn new(queue: Arc<Mutex<Queue>>, hold_max: Duration) -> Self {
        let held = Arc::new(AtomicBool::new(true));
        let (h, q) = (held.clone(), queue.clone());
        let timer = tokio::runtime::Handle::try_current().ok().map(|rt| {
            rt.spawn(async move {
                tokio::time::sleep(hold_max).await;
                give_back(&h, &q);
            })
            .abort_handle()
        });
        Self { held, queue, timer }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        if let Some(timer) = &self.timer {
            timer.abort();
        }
        give_back(&self.held, &self.queue);
    }
}

/// Hands the turn on, once.
fn give_back(held: &AtomicBool, queue: &Mutex<Queue>) {
    if held.swap(false, Ordering::SeqCst) {
        queue.lock().expect("poisoned").hand_on();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    /// Whether `f` is ready at its first poll (the turn given at once or handed on already).
    fn ready_now<F: Future>(f: std::pin::Pin<&mut F>) -> Option<F::Output> {
        match f.poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        }
    }

    #[tokio::test]
    async fn no_more_turns_than_there_are() {
        let turns = StartTurns::new(2, HOLD_MAX);
        let a = turns.take("a").await;
        let _b = turns.take("a").await;
        let mut third = pin!(turns.take("a"));
        assert!(ready_now(third.as_mut()).is_none(), "a third turn of two");
        drop(a);
        assert!(
            ready_now(third.as_mut()).is_some(),
            "a turn given back is handed on"
        );
    }

    #[tokio::test]
    async fn tenants_take_turns() {
        let turns = StartTurns::new(1, HOLD_MAX);
        let first = turns.take("busy").await;
        let mut busy = [
            Box::pin(turns.take("busy")),
            Box::pin(turns.take("busy")),
            Box::pin(turns.take("busy")),
        ];
        for start in &mut busy {
            assert!(ready_now(start.as_mut()).is_none());
        }
        // Another tenant's start, come after the burst's, is next but one.
        let mut other = pin!(turns.take("other"));
        assert!(ready_now(other.as_mut()).is_none());
        drop(first);
        let second = ready_now(busy[0].as_mut()).expect("the burst's second start");
        assert!(ready_now(other.as_mut()).is_none());
        drop(second);
        assert!(
            ready_now(busy[1].as_mut()).is_none(),
            "the burst went on before the other tenant's turn"
        );
        let theirs = ready_now(other.as_mut()).expect("the other tenant's turn");
        drop(theirs);
        assert!(ready_now(busy[1].as_mut()).is_some());
    }

    #[tokio::test]
    async fn a_start_that_went_away_takes_no_turn() {
        let turns = StartTurns::new(1, HOLD_MAX);
        let first = turns.take("a").await;
        let mut gone = Box::pin(turns.take("a"));
        assert!(ready_now(gone.as_mut()).is_none());
        let mut next = pin!(turns.take("b"));
        assert!(ready_now(next.as_mut()).is_none());
        drop(gone);
        assert!(
            ready_now(next.as_mut()).is_none(),
            "a start that went away gave back a turn it never had"
        );
        drop(first);
        assert!(
            ready_now(next.as_mut()).is_some(),
            "the turn went to a start nobody waits for"
        );
    }

    #[tokio::test]
    async fn a_turn_reaching_a_start_that_went_away_is_handed_on() {
        let turns = StartTurns::new(1, HOLD_MAX);
        let first = turns.take("a").await;
        let mut gone = Box::pin(turns.take("a"));
        assert!(ready_now(gone.as_mut()).is_none());
        let mut next = pin!(turns.take("a"));
        assert!(ready_now(next.as_mut()).is_none());
        // The turn reaches the waiting start, which is dropped before it ran again.
        drop(first);
        drop(gone);
        let turn = ready_now(next.as_mut()).expect("the turn was lost");
        let mut after = pin!(turns.take("a"));
        assert!(
            ready_now(after.as_mut()).is_none(),
            "one turn handed on twice"
        );
        drop(turn);
        assert!(ready_now(after.as_mut()).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_start_gives_its_turn_on_after_the_longest_hold() {
        let turns = StartTurns::new(1, Duration::from_secs(2));
        let long = turns.take("hostile").await;
        let mut next = pin!(turns.take("other"));
        assert!(ready_now(next.as_mut()).is_none());
        tokio::time::sleep(Duration::from_millis(1900)).await;
        assert!(ready_now(next.as_mut()).is_none(), "handed on too soon");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let turn = ready_now(next.as_mut()).expect("still held past the longest hold");
        // The long start's end, later, does not give back a second turn.
        drop(long);
        let mut more = pin!(turns.take("a"));
        assert!(ready_now(more.as_mut()).is_none(), "one turn counted twice");
        drop(turn);
        assert!(ready_now(more.as_mut()).is_some());
    }
}
