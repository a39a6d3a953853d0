//! How many standby VMs a node should keep: as many as the largest burst of starts it saw
//! lately, so that a burst that comes again (a compose file, a CI fan-out, a service scaled
//! out) finds a VM ready for every start. Pure bookkeeping, fed with the time of each start.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use shim::PrepareSpec;

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

    /// A start that arrived `at`. Starts are recorded nearly in the order they arrived (when
    /// their VM comes up, tenants taking turns): kept in order of arrival, and counted within
    /// the [`BURST`] up to the latest arrival.
    pub fn record(&mut self, at: Instant) {
        let i = self.recent.partition_point(|t| *t <= at);
        self.recent.insert(i, at);
        let latest = *self.recent.back().expect("just recorded");
        while self
            .recent
            .front()
            .is_some_and(|t| latest.duration_since(*t) >= BURST)
        {
            self.recent.pop_front();
        }
        let starts = self.recent.len();
        while self.peaks.back().is_some_and(|(_, c)| *c <= starts) {
            self.peaks.pop_back();
        }
        self.peaks.push_back((latest, starts));
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

/// What a standby is prepared for: one tenant's containers of one image.
pub type Key = (String, String);

/// How many (tenant, image) pairs standbys are prepared for at most: the most recently started.
pub const MAX_PREPARED_KEYS: usize = 8;
/// How many of those one tenant's pairs may be: its most recently started images (one tenant
/// starting many images does not push every other tenant's out).
pub const MAX_PREPARED_KEYS_PER_TENANT: usize = 2;

/// The recent pristine starts (first starts of a container whose disk nothing has written) of
/// each (tenant, image), for standbys prepared for them: as many for a pair as its largest
/// recent burst, prepared as its latest start asked.
#[derive(Debug)]
pub struct Wanted {
    hold: Duration,
    /// Most recently started last; at most [`MAX_PREPARED_KEYS`].
    keys: Vec<(Key, PrepareSpec, Demand)>,
}

impl Wanted {
    pub fn new(hold: Duration) -> Self {
        Self {
            hold,
            keys: Vec::new(),
        }
    }

    /// A pristine start of `key` at `now`, whose standby would be prepared with `spec`.
    pub fn record(&mut self, key: Key, spec: PrepareSpec, now: Instant) {
        let mut demand = match self.keys.iter().position(|(k, _, _)| *k == key) {
            Some(i) => self.keys.remove(i).2,
            None => Demand::new(self.hold),
        };
        demand.record(now);
        let tenant = key.0.clone();
        self.keys.push((key, spec, demand));
        let of_tenant = self.keys.iter().filter(|(k, _, _)| k.0 == tenant).count();
        if of_tenant > MAX_PREPARED_KEYS_PER_TENANT {
            let oldest = self.keys.iter().position(|(k, _, _)| k.0 == tenant);
            self.keys.remove(oldest.expect("the tenant has pairs"));
        }
        if self.keys.len() > MAX_PREPARED_KEYS {
            self.keys.remove(0);
        }
    }

    /// Whether standbys are still prepared for `key`.
    pub fn has(&self, key: &Key) -> bool {
        self.keys.iter().any(|(k, _, _)| k == key)
    }

    /// Every pair still remembered, most recently started first, with its preparation and its
    /// largest recent burst (pairs whose bursts are all forgotten are dropped).
    pub fn now(&mut self, now: Instant) -> Vec<(Key, PrepareSpec, usize)> {
        let mut out = Vec::new();
        self.keys.retain_mut(|(key, spec, demand)| {
            let peak = demand.peak(now);
            if peak > 0 {
                out.push((key.clone(), spec.clone(), peak));
            }
            peak > 0
        });
        out.reverse();
        out
    }

    /// No more standbys prepared for `key` (its image was removed, a preparation failed).
    pub fn forget(&mut self, key: &Key) {
        self.keys.retain(|(k, _, _)| k != key);
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
    fn starts_recorded_out_of_order_count_as_they_arrived() {
        let t0 = Instant::now();
        let mut d = Demand::new(DEFAULT_HOLD);
        // 10 of one tenant's burst at 0 s, another tenant's 10 from 10.5 s, then the rest of
        // the first burst, taken late: no 10 s held more than 10 of them.
        for _ in 0..10 {
            d.record(t0);
        }
        for i in 0..10 {
            d.record(t0 + Duration::from_millis(10_500 + i));
        }
        for _ in 0..5 {
            d.record(t0);
        }
        assert_eq!(d.peak(t0 + secs(11)), 10);
        // A late one within the window counts.
        d.record(t0 + secs(5));
        assert_eq!(d.peak(t0 + secs(11)), 11);
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

    fn prep(image: &str) -> PrepareSpec {
        PrepareSpec {
            tenant: "t".into(),
            image_id: image.into(),
            overlay_template: format!("/{image}.overlay.qcow2").into(),
            process: shim::ProcessSpec::default(),
            preread_max: 1,
        }
    }

    fn key(image: &str) -> Key {
        ("t".into(), image.into())
    }

    #[test]
    fn pairs_are_wanted_as_their_bursts_most_recent_first_then_forgotten() {
        let t0 = Instant::now();
        let mut w = Wanted::new(DEFAULT_HOLD);
        for i in 0..5 {
            w.record(key("a"), prep("a"), t0 + Duration::from_millis(i));
        }
        w.record(key("b"), prep("b"), t0 + secs(60));
        let now = w.now(t0 + secs(61));
        let got: Vec<(&str, usize)> = now.iter().map(|(k, _, n)| (k.1.as_str(), *n)).collect();
        assert_eq!(got, [("b", 1), ("a", 5)]);
        assert_eq!(
            w.now(t0 + DEFAULT_HOLD + secs(1)).len(),
            1,
            "a is forgotten"
        );
        w.forget(&key("b"));
        assert!(w.now(t0 + secs(62)).is_empty());
    }

    #[test]
    fn only_the_most_recently_started_pairs_are_kept() {
        let t0 = Instant::now();
        let mut w = Wanted::new(DEFAULT_HOLD);
        // Each of another tenant.
        let key = |i: usize| (i.to_string(), "img".to_string());
        for i in 0..MAX_PREPARED_KEYS + 3 {
            w.record(key(i), prep("img"), t0 + secs(i as u64));
        }
        let now = w.now(t0 + secs(100));
        assert_eq!(now.len(), MAX_PREPARED_KEYS);
        assert_eq!(now[0].0, key(MAX_PREPARED_KEYS + 2));
        assert!(now.iter().all(|(k, _, _)| k != &key(0)));
    }

    #[test]
    fn one_tenant_keeps_only_its_most_recent_pairs() {
        let t0 = Instant::now();
        let mut w = Wanted::new(DEFAULT_HOLD);
        let other: Key = ("u".into(), "x".into());
        w.record(other.clone(), prep("x"), t0);
        for i in 0..5 {
            w.record(key(&i.to_string()), prep(&i.to_string()), t0 + secs(i));
        }
        let now: Vec<Key> = w
            .now(t0 + secs(10))
            .into_iter()
            .map(|(k, _, _)| k)
            .collect();
        assert_eq!(now, [key("4"), key("3"), other]);
    }
}
