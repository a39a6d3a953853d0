//! `hyper commit` (a container's file system and settings as a new image, `POST /commit`) and
//! `hyper import` (a root file system tar as one, `POST /images/create?fromSrc=`).

use clap::Args;
use serde_json::Value;

use super::Ctx;
use crate::transport::ApiRequest;
use crate::CliError;

#[derive(Args, Debug)]
pub struct CommitArgs {
    /// Author (e.g., "John Hannibal Smith <hannibal@a-team.com>")
    #[arg(short = 'a', long)]
    pub author: Option<String>,
    /// Apply Dockerfile instruction to the created image
    #[arg(short = 'c', long = "change")]
    pub changes: Vec<String>,
    /// Commit message
    #[arg(short = 'm', long)]
    pub message: Option<String>,
    /// Pause container during commit
    #[arg(short = 'p', long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub pause: bool,
    pub container: String,
    /// REPOSITORY[:TAG]
    pub repository: Option<String>,
}

pub async fn commit(ctx: &Ctx, a: CommitArgs) -> Result<i32, CliError> {
    let req = ApiRequest::post("/commit")
        .query("container", &a.container)
        .query("pause", a.pause)
        .query_opt("author", a.author.as_ref())
        .query_opt("comment", a.message.as_ref());
    let req = named(req, a.repository.as_deref(), &a.changes);
    let answer: Value = ctx.client()?.json(req).await?;
    println!("{}", answer["Id"].as_str().unwrap_or_default());
    Ok(0)
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Apply Dockerfile instruction to the created image
    #[arg(short = 'c', long = "change")]
    pub changes: Vec<String>,
    /// Set commit message for imported image
    #[arg(short = 'm', long)]
    pub message: Option<String>,
    /// file|URL|- (a root file system tar, plain or compressed)
    pub source: String,
    /// REPOSITORY[:TAG]
    pub repository: Option<String>,
}

/// `hyper import`: a root file system tar as a new image (`POST /images/create?fromSrc=`);
/// a URL is fetched by the daemon, a file or stdin sent as the body.
pub async fn import(ctx: &Ctx, a: ImportArgs) -> Result<i32, CliError> {
    let remote = super::images::is_url(&a.source);
    let req = ApiRequest::post("/images/create")
        .query("fromSrc", if remote { a.source.as_str() } else { "-" })
        .query_opt("message", a.message.as_ref());
    let req = named(req, a.repository.as_deref(), &a.changes);
    let mut req = req;
    if !remote {
        let data = if a.source == "-" {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)?;
            v
        } else {
            std::fs::read(&a.source)
                .map_err(|e| CliError::Msg(format!("open {}: {e}", a.source)))?
        };
        req = req.body(data.into(), "application/x-tar");
    }
    let answer: Value = ctx.client()?.json(req).await?;
    println!("{}", answer["status"].as_str().unwrap_or_default());
    Ok(0)
}

/// The new image's `repo` and `tag` (from `REPOSITORY[:TAG]`) and its `--change`s, as commit
/// and import send them.
fn named(mut req: ApiRequest, repository: Option<&str>, changes: &[String]) -> ApiRequest {
    if let Some(reference) = repository {
        let (repo, tag) = super::images::split_tag(reference);
        req = req.query("repo", repo).query("tag", tag);
    }
    for change in changes {
        req = req.query("changes", change);
    }
    req
}
