//! `hyper export` (a container's root file system as a tar, `GET /containers/{id}/export`)
//! and `hyper diff` (its changes against its image, `GET /containers/{id}/changes`).

use std::io::{IsTerminal, Write};

use clap::Args;
use http_body_util::BodyExt;
use serde_json::Value;

use super::Ctx;
use crate::transport::ApiRequest;
use crate::CliError;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Write to a file, instead of STDOUT
    #[arg(short = 'o', long = "output")]
    pub output: Option<String>,
    pub container: String,
}

pub async fn export(ctx: &Ctx, a: ExportArgs) -> Result<i32, CliError> {
    let mut out: Box<dyn Write> = match &a.output {
        Some(path) => Box::new(std::fs::File::create(path)?),
        None if std::io::stdout().is_terminal() => {
            return Err(CliError::Msg(
                "cowardly refusing to save to a terminal. Use the -o flag or redirect".into(),
            ))
        }
        None => Box::new(std::io::stdout().lock()),
    };
    let resp = ctx
        .client()?
        .send(ApiRequest::get(format!(
            "/containers/{}/export",
            a.container
        )))
        .await?;
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| CliError::Msg(format!("the export broke off: {e}")))?;
        if let Ok(data) = frame.into_data() {
            out.write_all(&data)?;
        }
    }
    out.flush()?;
    Ok(0)
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    pub container: String,
}

/// `C /etc`, `A /etc/new`, `D /old`: one line per change, as Docker prints them.
pub async fn diff(ctx: &Ctx, a: DiffArgs) -> Result<i32, CliError> {
    let changes: Value = ctx
        .client()?
        .json(ApiRequest::get(format!(
            "/containers/{}/changes",
            a.container
        )))
        .await?;
    for c in changes.as_array().into_iter().flatten() {
        let kind = match c["Kind"].as_u64() {
            Some(0) => "C",
            Some(1) => "A",
            Some(2) => "D",
            _ => "?",
        };
        println!("{kind} {}", c["Path"].as_str().unwrap_or_default());
    }
    Ok(0)
}
