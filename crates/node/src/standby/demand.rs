//! How many standby VMs a node should keep: as many as the largest burst of starts it saw
//! lately, so that a burst that comes again (a compose file, a CI fan-out, a service scaled
//! out) finds a VM ready for every start. Pure bookkeeping, fed with the time of each start.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Starts at most this far apart count as one burst.
pub const BURST: Duration = Duration::from_secs(10);
/// How long a burst is remembered by default: the pool stays sized for it this long after it.
pub const DEFAULT_HOLD: Duration = Duration::from_secs(15 * 60);

#[derive(Debug)]
pub struct Demand {
    /// How long a burst is remembered.
    hold: Duration,
    /// Starts within the last [`BURST`].
    recent: VecDeque<Instant>,
    /// (when, starts in the [`BURST`] up to then), counts strictly decreasing from front to
    /// back: the front is the largest burst within `hold` (a sliding-window maximum).
    peaks: VecDeque<(Instant, usize)>,
}

impl Demand {
    /// Remembering each burst for `hold`.
    pub fn new(hold: Duration) -> Self {
        Self {
            hold,
            recent: VecDeque::new(),
            peaks: VecDeque::new(),
        }
    }

    /// A start at `now`.
    pub fn record(&mut self, now: Instant) {
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= BURST)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        let starts = self.recent.len();
        while self.peaks.back().is_some_and(|(_, c)| *c <= starts) {
            self.peaks.pop_back();
        }
        self.peaks.push_back((now, starts));
    }

    /// The most starts seen within one [`BURST`] during the `hold` before `now`.
    pub fn peak(&mut self, now: Instant) -> usize {
        while self
            .peaks
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) >= self.hold)
        {
            self.peaks.pop_front();
        }
        self.peaks.front().map_or(0, |(_, c)| *c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_burst_is_the_starts_within_its_window() {
        let t0 = Instant::now();
        let mut d = Demand::new(DEFAULT_HOLD);
        assert_eq!(d.peak(t0), 0);
        for i in 0..20 {
            d.record(t0 + Duration::from_millis(100 * i));
        }
        assert_eq!(d.peak(t0 + secs(3)), 20);
        // Starts one a minute never make a burst of more than one.
        let mut slow = Demand::new(DEFAULT_HOLD);
        for i in 0..10 {
            slow.record(t0 + secs(60 * i));
        }
        assert_eq!(slow.peak(t0 + secs(600)), 1);
    }

    #[test]
    fn the_largest_burst_is_remembered_then_forgotten() {
        let t0 = Instant::now();
        let mut d = Demand::new(DEFAULT_HOLD);
        for i in 0..8 {
            d.record(t0 + Duration::from_millis(10 * i));
        }
        // A smaller burst later does not hide the larger one while it is remembered.
        for i in 0..3 {
            d.record(t0 + secs(60) + Duration::from_millis(10 * i));
        }
        assert_eq!(d.peak(t0 + secs(120)), 8);
        // Once the large one is forgotten, the smaller one (still remembered) is the peak.
        assert_eq!(d.peak(t0 + DEFAULT_HOLD + secs(1)), 3);
        assert_eq!(d.peak(t0 + secs(60) + DEFAULT_HOLD + secs(1)), 0);
    }

    #[test]
    fn a_larger_burst_replaces_a_smaller_one() {
        let t0 = Instant::now();
        let mut d = Demand::new(DEFAULT_HOLD);
        d.record(t0);
        d.record(t0 + secs(1));
        for i in 0..5 {
            d.record(t0 + secs(30) + Duration::from_millis(i));
        }
        assert_eq!(d.peak(t0 + secs(31)), 5);
        assert_eq!(d.peak(t0 + secs(30) + DEFAULT_HOLD - secs(1)), 5);
    }
}
