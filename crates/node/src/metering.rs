//! Per-second metering and the charges that follow from Hyper's price table.
//!
//! Every segment of use leaves a record in the store, `/usage/<tenant>/<resource>/<start
//! nanos>`: a container's run (start to exit, with its size), a container's root disk (create to
//! remove), an image the tenant holds (load or pull to rmi). A segment still open is billed up
//! to now. Money is exact: integer nano-dollars (s1 costs 400 per second), never floating point;
//! storage, whose per-second rate is a fraction of a nano-dollar, is summed exactly as bytes x
//! seconds and rounded up once per segment.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use store::Store;

use crate::{Result, RuntimeError};

/// Each run, start or restart is billed at least this long (Hyper's rule).
pub const MINIMUM_BILLED_SECONDS: i64 = 10;

/// Storage costs 0.1 $ per GB-month (10^8 nano-dollars), a month being 30 days here: one
/// nano-dollar buys 10^9 x 2 592 000 / 10^8 = 25 920 000 byte-seconds.
pub const BYTE_SECONDS_PER_NANODOLLAR: u128 = 25_920_000;

/// A container's writable root is billed at its provisioned size (the sparse 10 GB overlay).
pub const ROOT_DISK_BYTES: u64 = 10_000_000_000;

/// Nano-dollars per second for each size (reference/hyper-extensions.md).
pub const PRICES: [(&str, u64); 10] = [
    ("s1", 400),
    ("s2", 600),
    ("s3", 1_000),
    ("s4", 2_000),
    ("m1", 4_000),
    ("m2", 8_000),
    ("m3", 15_000),
    ("l1", 30_000),
    ("l2", 60_000),
    ("l3", 120_000),
];

/// What a segment bills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A container's run, at its size's price per second.
    Container,
    /// A container's root disk, per GB-month.
    Rootfs,
    /// An image the tenant holds, per GB-month.
    Image,
    /// A volume, per GB-month, from create to rm.
    Volume,
    /// A volume snapshot, per GB-month at half a volume's price.
    Snapshot,
    /// A floating IP the tenant holds: [`FIP_MONTHLY`] for every calendar month it is held in,
    /// a started month counting whole.
    Fip,
}

/// What a floating IP costs per calendar month, in nano-dollars (1 $).
pub const FIP_MONTHLY: u64 = 1_000_000_000;

/// Calendar months `[start, end]` touches (both ends included).
fn months_touched(start: DateTime<Utc>, end: DateTime<Utc>) -> u64 {
    use chrono::Datelike;
    let index = |t: DateTime<Utc>| i64::from(t.year()) * 12 + i64::from(t.month0());
    (index(end) - index(start) + 1).max(1) as u64
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Container => "container",
            Kind::Rootfs => "rootfs",
            Kind::Image => "image",
            Kind::Fip => "fip",
            Kind::Volume => "volume",
            Kind::Snapshot => "snapshot",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// The container's or the image's ID.
    pub container: String,
    pub name: String,
    /// Instance size of a container run; empty for storage.
    pub size: String,
    #[serde(default = "container_kind")]
    pub kind: Kind,
    /// Bytes of storage; 0 for a run.
    #[serde(default)]
    pub bytes: u64,
    pub start: DateTime<Utc>,
    pub end: Option<DateTime<Utc>>,
}

fn container_kind() -> Kind {
    Kind::Container
}

impl Segment {
    pub fn run(container: &str, name: &str, size: &str, start: DateTime<Utc>) -> Self {
        let (container, name, size) = (container.into(), name.into(), size.into());
        Self {
            container,
            name,
            size,
            kind: Kind::Container,
            bytes: 0,
            start,
            end: None,
        }
    }

    pub fn storage(
        kind: Kind,
        resource: &str,
        name: &str,
        bytes: u64,
        start: DateTime<Utc>,
    ) -> Self {
        let (container, name) = (resource.into(), name.into());
        Self {
            container,
            name,
            size: String::new(),
            kind,
            bytes,
            start,
            end: None,
        }
    }

    /// A floating IP held from `start`.
    pub fn fip(ip: &str, start: DateTime<Utc>) -> Self {
        Self::storage(Kind::Fip, ip, ip, 0, start)
    }

    /// (seconds billed, nano-dollars) up to its end, or `now` while open.
    fn charge(&self, now: DateTime<Utc>) -> (i64, u64) {
        let end = self.end.unwrap_or(now);
        match self.kind {
            Kind::Container => {
                let seconds = billed_seconds(self.start, end);
                (seconds, seconds as u64 * price(&self.size))
            }
            Kind::Fip => (
                (end - self.start).num_seconds().max(0),
                months_touched(self.start, end) * FIP_MONTHLY,
            ),
            Kind::Rootfs | Kind::Image | Kind::Volume | Kind::Snapshot => {
                let seconds = (end - self.start).num_seconds().max(0);
                let byte_seconds = u128::from(self.bytes) * seconds as u128;
                // Snapshots cost half (0.05 $ against 0.1 $ per GB-month).
                let per_nanodollar = match self.kind {
                    Kind::Snapshot => 2 * BYTE_SECONDS_PER_NANODOLLAR,
                    _ => BYTE_SECONDS_PER_NANODOLLAR,
                };
                (seconds, byte_seconds.div_ceil(per_nanodollar) as u64)
            }
        }
    }
}

/// What one container cost within a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Charge {
    pub resource: String,
    pub name: String,
    #[serde(rename = "Type")]
    pub kind: &'static str,
    pub size: String,
    pub seconds: i64,
    /// Nano-dollars.
    pub cost: u64,
}

fn key(tenant: &str, container: &str, start: DateTime<Utc>) -> String {
    format!(
        "/usage/{tenant}/{container}/{:020}",
        start.timestamp_nanos_opt().unwrap_or(0)
    )
}

pub fn price(size: &str) -> u64 {
    PRICES
        .iter()
        .find(|(s, _)| *s == size)
        .map_or(0, |(_, p)| *p)
}

/// Seconds billed for one segment: whole seconds rounded up, at least the minimum.
pub fn billed_seconds(start: DateTime<Utc>, end: DateTime<Utc>) -> i64 {
    let nanos = (end - start).num_nanoseconds().unwrap_or(i64::MAX).max(0);
    let seconds = (nanos + 999_999_999) / 1_000_000_000;
    seconds.max(MINIMUM_BILLED_SECONDS)
}

pub struct Meter {
    store: Arc<dyn Store>,
}

impl Meter {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    pub fn open_segment(&self, tenant: &str, seg: &Segment) -> Result<()> {
        self.store.put(
            &key(tenant, &seg.container, seg.start),
            serde_json::to_vec(seg).expect("json"),
        )?;
        Ok(())
    }

    /// Closes the container's open segment (if any) at `end`.
    pub fn close_segment(&self, tenant: &str, container: &str, end: DateTime<Utc>) -> Result<()> {
        self.close_where(tenant, container, end, |_| true)
    }

    /// Closes the container's open segments of `kind` (a lost node's run, not its disk).
    pub fn close_segments_of_kind(
        &self,
        tenant: &str,
        container: &str,
        kind: Kind,
        end: DateTime<Utc>,
    ) -> Result<()> {
        self.close_where(tenant, container, end, |seg| seg.kind == kind)
    }

    fn close_where(
        &self,
        tenant: &str,
        container: &str,
        end: DateTime<Utc>,
        which: impl Fn(&Segment) -> bool,
    ) -> Result<()> {
        for kv in self.store.range(&format!("/usage/{tenant}/{container}/"))? {
            let mut seg: Segment = serde_json::from_slice(&kv.value)
                .map_err(|e| RuntimeError::Internal(e.to_string()))?;
            if seg.end.is_none() && which(&seg) {
                seg.end = Some(end.max(seg.start));
                self.store
                    .put(&kv.key, serde_json::to_vec(&seg).expect("json"))?;
            }
        }
        Ok(())
    }

    /// Charges per container for segments that started in `[since, until)`; open segments are
    /// billed up to `now`.
    pub fn usage(
        &self,
        tenant: &str,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Charge>> {
        let mut charges: Vec<Charge> = Vec::new();
        for kv in self.store.range(&format!("/usage/{tenant}/"))? {
            let seg: Segment = serde_json::from_slice(&kv.value)
                .map_err(|e| RuntimeError::Internal(e.to_string()))?;
            if since.is_some_and(|s| seg.start < s) || until.is_some_and(|u| seg.start >= u) {
                continue;
            }
            let (seconds, cost) = seg.charge(now);
            let kind = seg.kind.as_str();
            match charges
                .iter_mut()
                .find(|c| c.resource == seg.container && c.size == seg.size && c.kind == kind)
            {
                Some(c) => {
                    c.seconds += seconds;
                    c.cost += cost;
                    c.name = seg.name.clone();
                }
                None => charges.push(Charge {
                    resource: seg.container.clone(),
                    name: seg.name.clone(),
                    kind,
                    size: seg.size.clone(),
                    seconds,
                    cost,
                }),
            }
        }
        Ok(charges)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    #[test]
    fn seconds_round_up_with_a_minimum() {
        let t0 = Utc::now();
        let cases = [
            (0, 10),
            (3_000, 10),
            (10_000, 10),
            (10_001, 11),
            (61_500, 62),
        ];
        for (i, (millis, want)) in cases.iter().enumerate() {
            assert_eq!(
                billed_seconds(t0, t0 + TimeDelta::milliseconds(*millis)),
                *want,
                "test[{i}]"
            );
        }
    }

    #[test]
    fn usage_sums_segments_and_bills_open_ones_to_now() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(store::RedbStore::open(&dir.path().join("db")).unwrap());
        let meter = Meter::new(store);
        let t0 = DateTime::parse_from_rfc3339("2026-11-22T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let seg = |start: i64, end: Option<i64>, size: &str| Segment {
            end: end.map(|e| t0 + TimeDelta::seconds(e)),
            ..Segment::run("c1", "web", size, t0 + TimeDelta::seconds(start))
        };
        meter.open_segment("t", &seg(0, None, "s1")).unwrap();
        meter
            .close_segment("t", "c1", t0 + TimeDelta::seconds(3))
            .unwrap(); // 3 s -> 10
        meter.open_segment("t", &seg(100, Some(125), "s1")).unwrap(); // 25 s
        meter.open_segment("t", &seg(200, None, "s1")).unwrap(); // open: to now = 260 -> 60 s
        meter
            .open_segment("other", &seg(0, Some(1000), "l3"))
            .unwrap();
        let usage = meter
            .usage("t", None, None, t0 + TimeDelta::seconds(260))
            .unwrap();
        assert_eq!(usage.len(), 1);
        assert_eq!(usage[0].seconds, 10 + 25 + 60);
        assert_eq!(usage[0].cost, 95 * 400);
        let windowed = meter
            .usage(
                "t",
                Some(t0 + TimeDelta::seconds(50)),
                Some(t0 + TimeDelta::seconds(150)),
                t0,
            )
            .unwrap();
        assert_eq!(windowed[0].seconds, 25);
    }

    #[test]
    fn floating_ips_cost_a_dollar_per_started_calendar_month() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let held = |from: &str, to: &str| Segment {
            end: Some(at(to)),
            ..Segment::fip("198.51.100.1", at(from))
        };
        // A minute in November is November.
        assert_eq!(
            held("2026-11-22T10:00:00Z", "2026-11-22T10:01:00Z")
                .charge(at("2026-12-01T00:00:00Z"))
                .1,
            FIP_MONTHLY
        );
        // The last second of November and the first of December: two months.
        assert_eq!(
            held("2026-11-30T23:59:59Z", "2026-12-01T00:00:01Z")
                .charge(at("2026-12-01T00:00:01Z"))
                .1,
            2 * FIP_MONTHLY
        );
        // Across a new year.
        assert_eq!(
            held("2026-12-15T00:00:00Z", "2027-02-01T00:00:00Z")
                .charge(at("2027-02-01T00:00:00Z"))
                .1,
            3 * FIP_MONTHLY
        );
    }

    #[test]
    fn storage_is_billed_per_gb_month_exactly() {
        let t0 = Utc::now();
        let closed = |kind, bytes, seconds| Segment {
            end: Some(t0 + TimeDelta::seconds(seconds)),
            ..Segment::storage(kind, "r", "n", bytes, t0)
        };
        // 1 GB for 30 days is 0.1 $ = 10^8 nano-dollars.
        assert_eq!(
            closed(Kind::Image, 1_000_000_000, 30 * 86_400).charge(t0),
            (30 * 86_400, 100_000_000)
        );
        // A 10 GB root disk for one second costs 385.8 nano-dollars: 386, rounded up once.
        assert_eq!(
            closed(Kind::Rootfs, ROOT_DISK_BYTES, 1).charge(t0),
            (1, 386)
        );
    }
}
