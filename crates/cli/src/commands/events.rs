//! `hyper events`: the tenant's event stream, as `docker events` prints it.

use std::collections::BTreeMap;

use clap::Args;
use http_body_util::BodyExt;
use serde_json::Value;

use super::Ctx;
use crate::format::Template;
use crate::transport::ApiRequest;
use crate::CliError;

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Show events created since this time (RFC 3339, Unix seconds, or relative: 1h, 10m)
    #[arg(long)]
    pub since: Option<String>,
    /// Stream events until this time (RFC 3339, Unix seconds, or relative: 10m, 0s)
    #[arg(long)]
    pub until: Option<String>,
    /// Filter output based on conditions provided (container=, image=, event=, label=, type=)
    #[arg(short = 'f', long = "filter")]
    pub filter: Vec<String>,
    /// Format output using a Go template
    #[arg(long)]
    pub format: Option<String>,
}

/// `docker events`' default line: `TIME type action id (k=v, ...)`.
fn render(e: &Value) -> String {
    let nanos = e["timeNano"].as_i64().unwrap_or(0);
    let time =
        chrono::DateTime::from_timestamp(nanos / 1_000_000_000, (nanos % 1_000_000_000) as u32)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
            .unwrap_or_default();
    let attrs: Vec<String> = e["Actor"]["Attributes"]
        .as_object()
        .map(|a| {
            a.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    format!(
        "{time} {} {} {} ({})",
        e["Type"].as_str().unwrap_or_default(),
        e["Action"].as_str().unwrap_or_default(),
        e["Actor"]["ID"].as_str().unwrap_or_default(),
        attrs.join(", ")
    )
}

pub async fn events(ctx: &Ctx, a: EventsArgs) -> Result<i32, CliError> {
    let mut filters: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in &a.filter {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| CliError::Msg(format!("bad filter {f:?}: use key=value")))?;
        filters
            .entry(k.to_string())
            .or_default()
            .push(v.to_string());
    }
    // Relative times are taken from now, here, as Docker's CLI does.
    let now = chrono::Utc::now();
    let time = |t: Option<String>| t.map(|t| super::containers::parse_time_arg(&t, now));
    let mut req = ApiRequest::get("/events")
        .query_opt("since", time(a.since))
        .query_opt("until", time(a.until));
    if !filters.is_empty() {
        req = req.query("filters", serde_json::to_string(&filters).expect("json"));
    }
    let template = a.format.as_deref().map(Template::parse).transpose()?;
    let mut body = ctx.client()?.send(req).await?.into_body();
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(crate::transport::ApiError::from)?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        buf.extend_from_slice(data);
        while let Some(i) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            let Ok(event) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            match &template {
                Some(t) => println!("{}", t.render(&event)?),
                None => println!("{}", render(&event)),
            }
        }
    }
    Ok(0)
}
