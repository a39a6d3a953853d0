//! `hyper usage`: what the account ran and what it costs, per resource and in all.

use clap::Args;
use serde_json::Value;

use super::Ctx;
use crate::format::Template;
use crate::table::TabWriter;
use crate::transport::ApiRequest;
use crate::CliError;

#[derive(Args, Debug)]
pub struct UsageArgs {
    /// Only usage that started at or after this time (RFC 3339 or Unix seconds)
    #[arg(long)]
    pub since: Option<String>,
    /// Only usage that started before this time (RFC 3339 or Unix seconds)
    #[arg(long)]
    pub until: Option<String>,
    /// Format output using a Go template (`{{json .}}` for all of it)
    #[arg(short = 'f', long)]
    pub format: Option<String>,
}

pub async fn usage(ctx: &Ctx, a: UsageArgs) -> Result<i32, CliError> {
    let req = ApiRequest::get("/usage")
        .query_opt("since", a.since)
        .query_opt("until", a.until);
    let v: Value = ctx.client()?.json(req).await?;
    if let Some(f) = a.format {
        println!("{}", Template::parse(&f)?.render(&v)?);
        return Ok(0);
    }
    let mut t = TabWriter::new();
    t.line("RESOURCE\tTYPE\tNAME\tSIZE\tSECONDS\tCOST (USD)");
    for r in v["Resources"].as_array().into_iter().flatten() {
        let id = r["Resource"].as_str().unwrap_or_default();
        t.line(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            &id[..id.len().min(12)],
            r["Type"].as_str().unwrap_or_default(),
            r["Name"].as_str().unwrap_or_default(),
            r["Size"].as_str().unwrap_or_default(),
            r["Seconds"],
            r["Dollars"].as_str().unwrap_or_default(),
        ));
    }
    t.line(&format!(
        "TOTAL\t\t\t\t\t{}",
        v["TotalDollars"].as_str().unwrap_or_default()
    ));
    t.flush()?;
    Ok(0)
}
