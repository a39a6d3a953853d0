//! Hidden, test-only flags for the clock crons run by (`node::crons::clock`): end-to-end
//! tests make a cron's minutes go by in seconds with them. Not for production: every other
//! time (containers, billing, credentials) stays real.

use chrono::{DateTime, Utc};

#[derive(clap::Args, Debug, Clone)]
pub struct ClockArgs {
    /// TEST ONLY: the cron clock reads this RFC 3339 time at --clock-anchor.
    #[arg(long, hide = true)]
    clock_start: Option<DateTime<Utc>>,
    /// TEST ONLY: the real time (Unix seconds) at which the cron clock reads --clock-start
    /// (default: when hyperd starts). Give the same value after a restart and the cron clock
    /// carries on, the downtime included.
    #[arg(long, hide = true, requires = "clock_start")]
    clock_anchor: Option<f64>,
    /// TEST ONLY: how much faster than real time the cron clock runs.
    #[arg(long, hide = true, default_value_t = 1.0, requires = "clock_start")]
    clock_speed: f64,
}

/// Sets the cron clock from the flags (real without them).
pub fn install(args: &ClockArgs) -> anyhow::Result<()> {
    let Some(start) = args.clock_start else {
        return Ok(());
    };
    let anchor = args
        .clock_anchor
        .map(|s| {
            DateTime::from_timestamp_micros((s * 1e6) as i64)
                .ok_or_else(|| anyhow::anyhow!("--clock-anchor {s}: not a time"))
        })
        .transpose()?;
    let clock = node::crons::clock::Clock::virtual_clock(start, anchor, args.clock_speed)
        .map_err(|e| anyhow::anyhow!("--clock-speed: {e}"))?;
    tracing::warn!(
        "crons run by a TEST clock: {start} at {}, x{}",
        anchor
            .map(|a| a.to_rfc3339())
            .unwrap_or_else(|| "start".into()),
        args.clock_speed
    );
    node::crons::clock::set(clock);
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        clock: ClockArgs,
    }

    #[test]
    fn flags_need_a_start() {
        let t = T::try_parse_from(["hyperd"]).unwrap();
        assert!(t.clock.clock_start.is_none());
        assert!(T::try_parse_from(["hyperd", "--clock-speed", "10"]).is_err());
        assert!(T::try_parse_from(["hyperd", "--clock-anchor", "1"]).is_err());
        let t = T::try_parse_from([
            "hyperd",
            "--clock-start",
            "2030-01-01T00:00:00Z",
            "--clock-anchor",
            "1796342400.5",
            "--clock-speed",
            "10",
        ])
        .unwrap();
        assert_eq!(t.clock.clock_speed, 10.0);
        assert!(T::try_parse_from(["hyperd", "--clock-start", "tomorrow"]).is_err());
    }
}
