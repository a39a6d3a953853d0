//! The `--health-*` flags of `run` and `create`: Docker's `Healthcheck` in the create body.

use clap::{ArgAction, Args};
use serde_json::{json, Value};

#[derive(Args, Debug, Clone, Default)]
pub struct HealthFlags {
    /// Command to run to check health
    #[arg(long = "health-cmd")]
    pub cmd: Option<String>,
    /// Time between running the check (ms|s|m|h) (default 30s)
    #[arg(long = "health-interval", value_parser = go_duration)]
    pub interval: Option<i64>,
    /// Maximum time to allow one check to run (ms|s|m|h) (default 30s)
    #[arg(long = "health-timeout", value_parser = go_duration)]
    pub timeout: Option<i64>,
    /// Start period for the container to initialize before starting health-retries countdown (ms|s|m|h) (default 0s)
    #[arg(long = "health-start-period", value_parser = go_duration)]
    pub start_period: Option<i64>,
    /// Time between running the check during the start period (ms|s|m|h) (default 5s)
    #[arg(long = "health-start-interval", value_parser = go_duration)]
    pub start_interval: Option<i64>,
    /// Consecutive failures needed to report unhealthy
    #[arg(long = "health-retries")]
    pub retries: Option<i64>,
    /// Disable any container-specified HEALTHCHECK
    #[arg(long = "no-healthcheck", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, default_value_t = false)]
    pub none: bool,
}

impl HealthFlags {
    /// The body's `Healthcheck`, if any flag asked for one.
    pub fn healthcheck(&self) -> Result<Option<Value>, String> {
        let tuned = self.cmd.is_some()
            || self.interval.is_some()
            || self.timeout.is_some()
            || self.start_period.is_some()
            || self.start_interval.is_some()
            || self.retries.is_some();
        if self.none {
            if tuned {
                return Err("--no-healthcheck conflicts with --health-* options".into());
            }
            return Ok(Some(json!({"Test": ["NONE"]})));
        }
        if !tuned {
            return Ok(None);
        }
        if self.retries.is_some_and(|r| r < 0) {
            return Err("--health-retries cannot be negative".into());
        }
        let test = match &self.cmd {
            Some(cmd) => json!(["CMD-SHELL", cmd]),
            None => json!([]),
        };
        Ok(Some(json!({
            "Test": test,
            "Interval": self.interval.unwrap_or(0),
            "Timeout": self.timeout.unwrap_or(0),
            "StartPeriod": self.start_period.unwrap_or(0),
            "StartInterval": self.start_interval.unwrap_or(0),
            "Retries": self.retries.unwrap_or(0),
        })))
    }
}

/// Go's `time.ParseDuration` ("1m30s", "500ms", "1.5h"), in nanoseconds; never negative here.
pub fn go_duration(s: &str) -> Result<i64, String> {
    let bad =
        || format!("invalid duration {s:?}: use a number and a unit, as in 30s, 1m30s or 500ms");
    if s == "0" {
        return Ok(0);
    }
    if s.starts_with('-') {
        return Err(format!("invalid duration {s:?}: it cannot be negative"));
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let number: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total += number * scale;
        rest = &rest[unit_len..];
    }
    if total > i64::MAX as f64 {
        return Err(format!("invalid duration {s:?}: too long"));
    }
    Ok(total as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_go_does() {
        assert_eq!(go_duration("30s"), Ok(30_000_000_000));
        assert_eq!(go_duration("1m30s"), Ok(90_000_000_000));
        assert_eq!(go_duration("500ms"), Ok(500_000_000));
        assert_eq!(go_duration("1.5h"), Ok(5_400_000_000_000));
        assert_eq!(go_duration("0"), Ok(0));
        for bad in ["", "10", "1x", "s", "-1s"] {
            assert!(go_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_make_docker_healthchecks() {
        let flags = HealthFlags {
            cmd: Some("wget -qO- localhost".into()),
            interval: Some(1_000_000_000),
            retries: Some(2),
            ..HealthFlags::default()
        };
        let h = flags.healthcheck().unwrap().unwrap();
        assert_eq!(h["Test"], json!(["CMD-SHELL", "wget -qO- localhost"]));
        assert_eq!(h["Interval"], 1_000_000_000);
        assert_eq!(h["Retries"], 2);
        assert_eq!(HealthFlags::default().healthcheck(), Ok(None));
        let off = HealthFlags {
            none: true,
            ..HealthFlags::default()
        };
        assert_eq!(off.healthcheck().unwrap().unwrap()["Test"], json!(["NONE"]));
        let both = HealthFlags {
            none: true,
            retries: Some(1),
            ..HealthFlags::default()
        };
        assert!(both.healthcheck().is_err());
    }
}
