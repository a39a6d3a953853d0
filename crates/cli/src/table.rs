//! Docker-style text output: a tabwriter (Go's `text/tabwriter` with docker's settings:
//! minwidth 10, padding 3), human durations ("About a minute") and sizes ("4.26MB").

use std::io::{self, Write};

use chrono::{DateTime, TimeZone, Utc};

const MIN_WIDTH: usize = 10;
const PADDING: usize = 3;

/// Collects `\t`-separated lines and aligns their columns on [`TabWriter::flush`]. The last cell of
/// each line is not padded, as with Go's tabwriter when lines do not end in a tab.
#[derive(Default)]
pub struct TabWriter {
    rows: Vec<Vec<String>>,
}

impl TabWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one line (may contain several `\n`-separated lines).
    pub fn line(&mut self, line: &str) {
        for l in line.split('\n') {
            self.rows.push(l.split('\t').map(str::to_owned).collect());
        }
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = Vec::new();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
                let w = (cell.chars().count() + PADDING).max(MIN_WIDTH);
                if widths.len() <= i {
                    widths.push(w);
                } else {
                    widths[i] = widths[i].max(w);
                }
            }
        }
        let mut out = String::new();
        for row in &self.rows {
            let last = row.len().saturating_sub(1);
            for (i, cell) in row.iter().enumerate() {
                out.push_str(cell);
                if i < last {
                    let pad = widths[i] - cell.chars().count();
                    out.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push('\n');
        }
        out
    }

    pub fn flush(&self) -> io::Result<()> {
        let mut out = io::stdout().lock();
        out.write_all(self.render().as_bytes())?;
        out.flush()
    }
}

/// Docker's `units.HumanDuration`.
pub fn human_duration(d: chrono::Duration) -> String {
    let seconds = d.num_seconds();
    if seconds < 1 {
        return "Less than a second".into();
    }
    if seconds == 1 {
        return "1 second".into();
    }
    if seconds < 60 {
        return format!("{seconds} seconds");
    }
    let minutes = d.num_minutes();
    if minutes == 1 {
        return "About a minute".into();
    }
    if minutes < 60 {
        return format!("{minutes} minutes");
    }
    let hours = (seconds as f64 / 3600.0 + 0.5) as i64;
    if hours == 1 {
        "About an hour".into()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", d.num_hours() / 24 / 365)
    }
}

/// "3 minutes ago" for a unix timestamp, relative to `now`.
pub fn ago(unix: i64, now: DateTime<Utc>) -> String {
    match Utc.timestamp_opt(unix, 0).single() {
        Some(t) => format!("{} ago", human_duration(now - t)),
        None => String::new(),
    }
}

/// Go's `%.{prec}g` for the magnitudes we print (no exponent form below 10^prec).
fn format_g(v: f64, prec: usize) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let digits = v.abs().log10().floor() as i32 + 1;
    let decimals = (prec as i32 - digits).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

fn scaled(mut size: f64, base: f64, units: &[&str]) -> (f64, usize) {
    let mut i = 0;
    while size >= base && i < units.len() - 1 {
        size /= base;
        i += 1;
    }
    (size, i)
}

const DECIMAL: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
const BINARY: [&str; 9] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];

/// Docker's `units.HumanSizeWithPrecision(size, 3)` (decimal units): "4.26MB", "187MB".
pub fn human_size(size: f64) -> String {
    let (v, i) = scaled(size, 1000.0, &DECIMAL);
    format!("{}{}", format_g(v, 3), DECIMAL[i])
}

/// Docker's `units.BytesSize` (binary units, 4 significant digits): "1.944GiB".
pub fn bytes_size(size: f64) -> String {
    let (v, i) = scaled(size, 1024.0, &BINARY);
    format!("{}{}", format_g(v, 4), BINARY[i])
}

/// Cuts `s` to `max` characters, the last being "…" when cut (docker's `Ellipsis`).
pub fn ellipsis(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The 12-character short form of an ID, without a `sha256:` prefix.
pub fn short_id(id: &str) -> String {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    id.chars().take(12).collect()
}

/// Docker's `sortorder.NaturalLess`: runs of digits compare as numbers, so "9000/tcp" sorts
/// before "10000/tcp".
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (mut a, mut b) = (a, b);
    loop {
        let (Some(ca), Some(cb)) = (a.chars().next(), b.chars().next()) else {
            return a.len().cmp(&b.len());
        };
        if ca.is_ascii_digit() && cb.is_ascii_digit() {
            let na = a.find(|c: char| !c.is_ascii_digit()).unwrap_or(a.len());
            let nb = b.find(|c: char| !c.is_ascii_digit()).unwrap_or(b.len());
            let (da, db) = (
                a[..na].trim_start_matches('0'),
                b[..nb].trim_start_matches('0'),
            );
            let ord = da.len().cmp(&db.len()).then_with(|| da.cmp(db));
            if ord != Ordering::Equal {
                return ord;
            }
            (a, b) = (&a[na..], &b[nb..]);
        } else {
            if ca != cb {
                return ca.cmp(&cb);
            }
            (a, b) = (&a[ca.len_utf8()..], &b[cb.len_utf8()..]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tabwriter_aligns_like_docker() {
        let mut tw = TabWriter::new();
        tw.line("CONTAINER ID\tIMAGE\tNAMES");
        tw.line("0123456789ab\tbusybox:latest\tweb");
        assert_eq!(
            tw.render(),
            "CONTAINER ID   IMAGE            NAMES\n0123456789ab   busybox:latest   web\n"
        );
        let mut tw = TabWriter::new();
        tw.line("A\tB");
        assert_eq!(tw.render(), "A         B\n");
    }

    #[test]
    fn durations() {
        let cases = [
            (0, "Less than a second"),
            (1, "1 second"),
            (3, "3 seconds"),
            (60, "About a minute"),
            (119, "About a minute"),
            (120, "2 minutes"),
            (3600, "About an hour"),
            (2 * 3600, "2 hours"),
            (47 * 3600, "47 hours"),
            (48 * 3600, "2 days"),
            (15 * 86400, "2 weeks"),
            (70 * 86400, "2 months"),
            (800 * 86400, "2 years"),
        ];
        for (i, (secs, want)) in cases.iter().enumerate() {
            assert_eq!(
                human_duration(chrono::Duration::seconds(*secs)),
                *want,
                "test[{i}]"
            );
        }
    }

    #[test]
    fn sizes() {
        let cases = [
            (0.0, "0B"),
            (999.0, "999B"),
            (1000.0, "1kB"),
            (4_261_000.0, "4.26MB"),
            (187_000_000.0, "187MB"),
            (1_200_000_000.0, "1.2GB"),
        ];
        for (i, (n, want)) in cases.iter().enumerate() {
            assert_eq!(human_size(*n), *want, "test[{i}]");
        }
        assert_eq!(bytes_size(1024.0 * 1024.0 * 1.5), "1.5MiB");
        assert_eq!(bytes_size(2087354368.0), "1.944GiB");
    }

    #[test]
    fn natural_order() {
        let mut v = vec![
            "9000/tcp",
            "10000/tcp",
            "80/udp",
            "80/tcp",
            "net10",
            "net9",
            "a",
        ];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            [
                "80/tcp",
                "80/udp",
                "9000/tcp",
                "10000/tcp",
                "a",
                "net9",
                "net10"
            ]
        );
    }

    #[test]
    fn ids_and_ellipsis() {
        assert_eq!(short_id("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(
            ellipsis("sleep 1000000000000000000", 20),
            "sleep 1000000000000…"
        );
        assert_eq!(ellipsis("sh", 20), "sh");
    }
}
