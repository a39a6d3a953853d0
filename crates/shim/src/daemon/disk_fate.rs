//! What becomes of a disposable (`--rm`, no volumes) container's disk when its process ends,
//! decided once by whichever comes first: the end itself (the disk goes with the container, so
//! QEMU stops without the guest's sync) or a stop that a start follows (`restart`: the guest
//! syncs). A process that ends on its own just before a restart's stop arrives has its disk
//! discarded, and the stop's reply says so: the restart must not start it on that disk.

use std::sync::atomic::{AtomicU8, Ordering};

const UNDECIDED: u8 = 0;
const KEEP: u8 = 1;
const DISCARD: u8 = 2;

#[derive(Debug, Default)]
pub struct DiskFate(AtomicU8);

impl DiskFate {
    /// Keep the disk, unless it is already discarded; whether it is kept.
    pub fn keep(&self) -> bool {
        self.settle(KEEP) == KEEP
    }

    /// Discard the disk, unless it is already kept; whether it is discarded.
    pub fn discard(&self) -> bool {
        self.settle(DISCARD) == DISCARD
    }

    fn settle(&self, fate: u8) -> u8 {
        match self
            .0
            .compare_exchange(UNDECIDED, fate, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => fate,
            Err(decided) => decided,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DiskFate;

    #[test]
    fn the_first_decision_stands() {
        let kept = DiskFate::default();
        assert!(kept.keep());
        assert!(!kept.discard());
        assert!(kept.keep());

        let discarded = DiskFate::default();
        assert!(discarded.discard());
        assert!(!discarded.keep());
        assert!(discarded.discard());
    }
}
