//! The time crons run by. Normally the real UTC clock; for tests hyperd takes a virtual clock
//! (`--clock-start`, `--clock-anchor`, `--clock-speed`, hidden flags) that reads `start` at
//! the real instant `anchor` and runs `speed` times faster, so that a test sees a cron's minutes
//! go by in seconds with real containers. Given the same flags after a restart, the virtual
//! clock carries on from where it is, and the time hyperd was down passes for crons too (that
//! is what the missed-run policy is about).

use std::sync::OnceLock;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clock {
    start: DateTime<Utc>,
    anchor: DateTime<Utc>,
    speed: f64,
}

impl Default for Clock {
    fn default() -> Self {
        Self::real()
    }
}

impl Clock {
    pub fn real() -> Self {
        let now = Utc::now();
        Self {
            start: now,
            anchor: now,
            speed: 1.0,
        }
    }

    /// A virtual clock reading `start` at the real time `anchor` (default: now), `speed`
    /// times faster than real time.
    pub fn virtual_clock(
        start: DateTime<Utc>,
        anchor: Option<DateTime<Utc>>,
        speed: f64,
    ) -> Result<Self, String> {
        if !(speed.is_finite() && (0.001..=10_000.0).contains(&speed)) {
            return Err(format!(
                "clock speed {speed}: give a number from 0.001 to 10000"
            ));
        }
        Ok(Self {
            start,
            anchor: anchor.unwrap_or_else(Utc::now),
            speed,
        })
    }

    pub fn is_real(&self) -> bool {
        self.speed == 1.0 && self.start == self.anchor
    }

    pub fn now(&self) -> DateTime<Utc> {
        if self.is_real() {
            return Utc::now();
        }
        let real = (Utc::now() - self.anchor).num_microseconds().unwrap_or(0) as f64;
        self.start + TimeDelta::microseconds((real * self.speed) as i64)
    }

    /// How long, in real time, until the clock reads `t` (zero if it is past).
    pub fn real_until(&self, t: DateTime<Utc>) -> Duration {
        let virt = (t - self.now()).num_microseconds().unwrap_or(0).max(0) as f64;
        Duration::from_micros((virt / self.speed) as u64)
    }
}

static CLOCK: OnceLock<Clock> = OnceLock::new();

/// Sets the process's cron clock, once, before the scheduler starts; later calls are ignored.
pub fn set(clock: Clock) {
    let _ = CLOCK.set(clock);
}

/// The process's cron clock (real unless [`set`] said otherwise).
pub fn get() -> Clock {
    *CLOCK.get_or_init(Clock::real)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_time_runs_faster_from_its_start() {
        let start = DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let anchor = Utc::now() - TimeDelta::seconds(10);
        let c = Clock::virtual_clock(start, Some(anchor), 6.0).unwrap();
        let now = c.now();
        assert!(now >= start + TimeDelta::seconds(60), "{now}");
        assert!(now < start + TimeDelta::seconds(120), "{now}");
        let wait = c.real_until(start + TimeDelta::seconds(600));
        assert!(
            wait > Duration::from_secs(80) && wait <= Duration::from_secs(90),
            "{wait:?}"
        );
        assert!(Clock::virtual_clock(start, None, 0.0).is_err());
        assert!(Clock::real().is_real());
    }
}
