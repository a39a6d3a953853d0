//! `save` (`GET /images/get?names=..`, the tar written to a file or stdout as it arrives) and
//! `push` (`POST /images/{name}/push?tag=..` with the `X-Registry-Auth` of `hyper login`,
//! following Docker's JSON progress stream).

use std::io::{IsTerminal, Write};

use clap::Args;
use http_body_util::BodyExt;

use super::Ctx;
use crate::commands::images::{follow_progress, registry_auth_header, split_tag};
use crate::transport::ApiRequest;
use crate::CliError;

#[derive(Args, Debug)]
pub struct SaveArgs {
    /// Write to a file, instead of STDOUT
    #[arg(short = 'o', long)]
    pub output: Option<String>,
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PushArgs {
    /// Push all tags of the repository
    #[arg(short = 'a', long = "all-tags")]
    pub all_tags: bool,
    /// Suppress verbose output
    #[arg(short = 'q', long)]
    pub quiet: bool,
    #[arg(value_name = "NAME[:TAG]")]
    pub image: String,
}

pub async fn save(ctx: &Ctx, a: SaveArgs) -> Result<i32, CliError> {
    if a.output.is_none() && std::io::stdout().is_terminal() {
        return Err(CliError::Msg(
            "cowardly refusing to save to a terminal. Use the -o flag or redirect".into(),
        ));
    }
    let mut req = ApiRequest::get("/images/get");
    for name in &a.images {
        req = req.query("names", name);
    }
    let client = ctx.client()?;
    let resp = client.send(req).await?;
    // The file is written next to its final name and renamed at the end, so a failed save
    // leaves no partial archive behind under that name.
    let (mut out, tmp): (Box<dyn Write>, Option<(String, String)>) = match &a.output {
        Some(path) => {
            let tmp = format!("{path}.hyper-save-tmp");
            let f = std::fs::File::create(&tmp)
                .map_err(|e| CliError::Msg(format!("failed to save image: {tmp}: {e}")))?;
            (
                Box::new(std::io::BufWriter::new(f)),
                Some((tmp, path.clone())),
            )
        }
        None => (Box::new(std::io::stdout().lock()), None),
    };
    let mut body = resp.into_body();
    let result: Result<(), CliError> = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                CliError::Msg(format!("failed to save image: the archive broke off: {e}"))
            })?;
            if let Some(data) = frame.data_ref() {
                out.write_all(data)?;
            }
        }
        out.flush()?;
        Ok(())
    }
    .await;
    drop(out);
    match (result, tmp) {
        (Ok(()), Some((tmp, path))) => std::fs::rename(&tmp, &path)
            .map_err(|e| CliError::Msg(format!("failed to save image: {path}: {e}")))?,
        (Err(e), Some((tmp, _))) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        (r, None) => r?,
    }
    Ok(0)
}

pub async fn push(ctx: &Ctx, a: PushArgs) -> Result<i32, CliError> {
    let (name, tag) = match a.image.split_once('@') {
        Some(_) => {
            return Err(CliError::Msg(format!(
                "invalid reference {}: cannot push a digest reference",
                a.image
            )))
        }
        None => split_tag(&a.image),
    };
    if a.all_tags && !tag.is_empty() {
        return Err(CliError::Msg("tag can't be used with --all-tags/-a".into()));
    }
    let tag = match (a.all_tags, tag) {
        (true, _) => "",
        (false, "") => "latest",
        (false, t) => t,
    };
    let mut req = ApiRequest::post(format!("/images/{name}/push")).query("tag", tag);
    if let Some(auth) = registry_auth_header(ctx, &a.image) {
        req = req.header("x-registry-auth", auth);
    }
    let client = ctx.client()?;
    let resp = client.send(req).await?;
    follow_progress(resp, false, a.quiet).await?;
    if a.quiet {
        println!("{}", a.image);
    }
    Ok(0)
}
