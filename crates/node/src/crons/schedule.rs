//! Cron's 5-field schedule, `minute hour day-of-month month day-of-week`, as Vixie cron reads
//! it: `*`, numbers, ranges `a-b`, steps `*/n`, `a-b/n` and `a/n` (from `a` to the end), lists
//! `a,b-c`, month names `jan`..`dec`, day names `sun`..`sat` (`0` and `7` are Sunday), and the
//! macros `@yearly`, `@monthly`, `@weekly`, `@daily`, `@hourly`. When both day fields are
//! restricted a day matches either (cron's rule); times are UTC.
//!
//! Hand-written: the workspace has no cron crate, the grammar is this small, and the common
//! crates read a 6- or 7-field form with seconds.

use chrono::{DateTime, Datelike, TimeDelta, Timelike, Utc};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    days_restricted: bool,
    weekdays_restricted: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// The first name stands for this number (`jan` = 1, `sun` = 0).
    names_from: u32,
}

const FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
        names_from: 0,
    },
    Field {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
        names_from: 0,
    },
    Field {
        name: "day of month",
        min: 1,
        max: 31,
        names: &[],
        names_from: 0,
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
        names: &MONTHS,
        names_from: 1,
    },
    // 7 is Sunday too; folded onto 0 after parsing.
    Field {
        name: "day of week",
        min: 0,
        max: 7,
        names: &DAYS,
        names_from: 0,
    },
];

impl Field {
    fn value(&self, text: &str) -> Result<u32, String> {
        let lower = text.to_ascii_lowercase();
        if let Some(i) = self.names.iter().position(|n| *n == lower) {
            return Ok(i as u32 + self.names_from);
        }
        let v: u32 = text.parse().map_err(|_| {
            let names = if self.names.is_empty() {
                String::new()
            } else {
                format!(
                    " or a name ({}..{})",
                    self.names[0],
                    self.names[self.names.len() - 1]
                )
            };
            format!("{} {text:?} is not a number{names}", self.name)
        })?;
        if v < self.min || v > self.max {
            return Err(format!(
                "{} {v} is out of range {}-{}",
                self.name, self.min, self.max
            ));
        }
        Ok(v)
    }

    /// One field's bit set.
    fn parse(&self, text: &str) -> Result<u64, String> {
        if text.is_empty() {
            return Err(format!("the {} field is empty", self.name));
        }
        let mut bits = 0u64;
        for item in text.split(',') {
            let (range, step) = match item.split_once('/') {
                Some((r, s)) => {
                    let step: u32 = s.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                        format!("{} step {s:?} must be a number above 0", self.name)
                    })?;
                    (r, Some(step))
                }
                None => (item, None),
            };
            let (lo, hi) = if range == "*" {
                (self.min, self.max)
            } else if let Some((a, b)) = range.split_once('-') {
                let (a, b) = (self.value(a)?, self.value(b)?);
                if a > b {
                    return Err(format!("{} range {range:?} goes backwards", self.name));
                }
                (a, b)
            } else {
                let a = self.value(range)?;
                // `a/n` runs from a to the end of the field.
                (a, if step.is_some() { self.max } else { a })
            };
            let mut v = lo;
            while v <= hi {
                bits |= 1 << v;
                v += step.unwrap_or(1);
            }
        }
        Ok(bits)
    }
}

impl std::str::FromStr for Schedule {
    type Err = String;

    /// Parses a schedule; the error says which field is wrong and why.
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let expanded = match text {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            t if t.starts_with('@') => {
                return Err(format!(
                    "unknown macro {t:?}: use @yearly, @monthly, @weekly, @daily or @hourly"
                ))
            }
            t => t,
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(format!(
                "a schedule has 5 fields (minute hour day-of-month month day-of-week), this one has {}",
                parts.len()
            ));
        }
        let mut bits = [0u64; 5];
        for (i, (field, part)) in FIELDS.iter().zip(&parts).enumerate() {
            bits[i] = field.parse(part)?;
        }
        // Sunday is 0 and 7.
        if bits[4] & (1 << 7) != 0 {
            bits[4] = (bits[4] | 1) & !(1 << 7);
        }
        let star = |p: &str| p.starts_with('*');
        let s = Schedule {
            minutes: bits[0],
            hours: bits[1],
            days: bits[2],
            months: bits[3],
            weekdays: bits[4],
            days_restricted: !star(parts[2]),
            weekdays_restricted: !star(parts[4]),
        };
        // A date that never comes (`0 0 30 2 *`) would never fire: refused.
        if s.next_after(DateTime::UNIX_EPOCH).is_none() {
            return Err("this schedule never fires (no such date)".into());
        }
        Ok(s)
    }
}

fn has(bits: u64, v: u32) -> bool {
    bits & (1 << v) != 0
}

impl Schedule {
    fn day_matches(&self, t: DateTime<Utc>) -> bool {
        let dom = has(self.days, t.day());
        let dow = has(self.weekdays, t.weekday().num_days_from_sunday());
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => dom || dow,
            (true, false) => dom,
            (false, true) => dow,
            (false, false) => true,
        }
    }

    /// Whether the schedule fires at the minute `t` falls in.
    pub fn matches(&self, t: DateTime<Utc>) -> bool {
        has(self.minutes, t.minute())
            && has(self.hours, t.hour())
            && has(self.months, t.month())
            && self.day_matches(t)
    }

    /// The first minute strictly after `t` at which the schedule fires (`None` if none within
    /// eight years: a date that never comes).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let floor = t.with_second(0)?.with_nanosecond(0)?;
        let mut c = floor + TimeDelta::minutes(1);
        let end = floor + TimeDelta::days(366 * 8);
        while c < end {
            if !has(self.months, c.month()) {
                // The first minute of the next month.
                let (y, m) = if c.month() == 12 {
                    (c.year() + 1, 1)
                } else {
                    (c.year(), c.month() + 1)
                };
                c = chrono::NaiveDate::from_ymd_opt(y, m, 1)?
                    .and_hms_opt(0, 0, 0)?
                    .and_utc();
            } else if !self.day_matches(c) {
                c = (c.date_naive() + TimeDelta::days(1))
                    .and_hms_opt(0, 0, 0)?
                    .and_utc();
            } else if !has(self.hours, c.hour()) {
                c = c.with_minute(0)? + TimeDelta::hours(1);
            } else if !has(self.minutes, c.minute()) {
                c += TimeDelta::minutes(1);
            } else {
                return Some(c);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn parse(s: &str) -> Schedule {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    /// The next `n` firing times after `from`, as RFC 3339.
    fn next_n(s: &str, from: &str, n: usize) -> Vec<String> {
        let s = parse(s);
        let mut t = at(from);
        (0..n)
            .map(|_| {
                t = s.next_after(t).unwrap();
                t.format("%Y-%m-%dT%H:%M").to_string()
            })
            .collect()
    }

    #[test]
    fn next_times() {
        let cases: &[(&str, &str, &[&str])] = &[
            (
                "* * * * *",
                "2030-01-01T00:00:30Z",
                &["2030-01-01T00:01", "2030-01-01T00:02"],
            ),
            (
                "*/15 * * * *",
                "2030-01-01T00:00:00Z",
                &[
                    "2030-01-01T00:15",
                    "2030-01-01T00:30",
                    "2030-01-01T00:45",
                    "2030-01-01T01:00",
                ],
            ),
            (
                "5,7-8 * * * *",
                "2030-01-01T00:06:00Z",
                &["2030-01-01T00:07", "2030-01-01T00:08", "2030-01-01T01:05"],
            ),
            (
                "10-30/10 2 * * *",
                "2030-01-01T00:00:00Z",
                &[
                    "2030-01-01T02:10",
                    "2030-01-01T02:20",
                    "2030-01-01T02:30",
                    "2030-01-02T02:10",
                ],
            ),
            (
                "50/5 * * * *",
                "2030-01-01T00:00:00Z",
                &["2030-01-01T00:50", "2030-01-01T00:55", "2030-01-01T01:50"],
            ),
            ("0 0 1 jan *", "2030-06-01T00:00:00Z", &["2031-01-01T00:00"]),
            (
                "0 12 * * MON-fri",
                "2030-01-04T13:00:00Z",
                &["2030-01-07T12:00", "2030-01-08T12:00"],
            ),
            (
                "0 0 * * 7",
                "2030-01-01T00:00:00Z",
                &["2030-01-06T00:00", "2030-01-13T00:00"],
            ),
            // Both day fields restricted: either matches (the 1st, or a Sunday).
            (
                "0 0 1 * sun",
                "2030-01-01T00:00:00Z",
                &[
                    "2030-01-06T00:00",
                    "2030-01-13T00:00",
                    "2030-01-20T00:00",
                    "2030-01-27T00:00",
                    "2030-02-01T00:00",
                ],
            ),
            ("0 0 29 2 *", "2030-01-01T00:00:00Z", &["2032-02-29T00:00"]),
            ("@hourly", "2030-01-01T00:00:00Z", &["2030-01-01T01:00"]),
            (
                "59 23 31 dec *",
                "2030-12-31T23:59:00Z",
                &["2031-12-31T23:59"],
            ),
        ];
        for (i, (s, from, want)) in cases.iter().enumerate() {
            assert_eq!(next_n(s, from, want.len()), *want, "test[{i}] {s}");
        }
    }

    #[test]
    fn bad_schedules_say_why() {
        let cases: &[(&str, &str)] = &[
            ("* * * *", "5 fields"),
            ("* * * * * *", "5 fields"),
            ("60 * * * *", "minute 60 is out of range 0-59"),
            ("* 24 * * *", "hour 24 is out of range 0-23"),
            ("* * 0 * *", "day of month 0 is out of range 1-31"),
            ("* * * 13 *", "month 13 is out of range 1-12"),
            ("* * * * 8", "day of week 8 is out of range 0-7"),
            ("*/0 * * * *", "step \"0\" must be a number above 0"),
            ("5-2 * * * *", "range \"5-2\" goes backwards"),
            ("x * * * *", "minute \"x\" is not a number"),
            ("* * * foo *", "or a name (jan..dec)"),
            ("1,,2 * * * *", "minute \"\" is not a number"),
            ("0 0 30 2 *", "never fires"),
            ("@often", "unknown macro"),
        ];
        for (i, (s, want)) in cases.iter().enumerate() {
            let e = s.parse::<Schedule>().unwrap_err();
            assert!(e.contains(want), "test[{i}] {s}: {e}");
        }
    }

    #[test]
    fn matches_its_own_times() {
        let s = parse("*/7 1-3 * * *");
        let mut t = at("2030-03-01T00:00:00Z");
        for _ in 0..50 {
            t = s.next_after(t).unwrap();
            assert!(s.matches(t), "{t}");
            assert!(!s.matches(t + TimeDelta::minutes(1)), "{t}");
        }
    }
}
