//! `GET /usage?since=&until=`: what the tenant ran and what it costs, per resource and in all.
//! Money is in nano-dollars (integers) with a dollar string beside it for people.

use axum::extract::{Query, State};
use axum::{Extension, Json};
use chrono::Utc;
use serde_json::{json, Value};

use super::{time_param, Params};
use crate::error::ApiResult;
use crate::transport::TenantId;
use crate::AppState;

/// `123456789` nano-dollars -> `"0.123457"` (rounded to a micro-dollar, for display only).
pub fn dollars(nanos: u64) -> String {
    let micros = nanos.div_ceil(1_000);
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

pub async fn usage(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Query(q): Query<Params>,
) -> ApiResult<Json<Value>> {
    let since = time_param(&q, "since")?;
    let until = time_param(&q, "until")?;
    let charges = app.runtime.meter.usage(&tenant, since, until, Utc::now())?;
    let total: u64 = charges.iter().map(|c| c.cost).sum();
    let items: Vec<Value> = charges
        .iter()
        .map(|c| {
            let mut v = serde_json::to_value(c).expect("json");
            v["Dollars"] = json!(dollars(c.cost));
            v
        })
        .collect();
    Ok(Json(json!({
        "Tenant": tenant,
        "Since": since.map(|t| t.to_rfc3339()),
        "Until": until.map(|t| t.to_rfc3339()),
        "Resources": items,
        "TotalCost": total,
        "TotalDollars": dollars(total),
        "Unit": "nano-USD",
    })))
}

#[cfg(test)]
mod tests {
    #[test]
    fn dollars_read_right() {
        assert_eq!(super::dollars(0), "0.000000");
        assert_eq!(super::dollars(4_000), "0.000004");
        assert_eq!(super::dollars(1_234_567_890), "1.234568");
    }
}
