//! `hyper commit`: a container's file system and settings as a new image (`POST /commit`).

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
    let mut req = ApiRequest::post("/commit")
        .query("container", &a.container)
        .query("pause", a.pause)
        .query_opt("author", a.author.as_ref())
        .query_opt("comment", a.message.as_ref());
    if let Some(reference) = &a.repository {
        // A colon after the last slash starts the tag (`registry:5000/app` has none).
        let (repo, tag) = match reference.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, tag),
            _ => (reference.as_str(), ""),
        };
        req = req.query("repo", repo).query("tag", tag);
    }
    for change in &a.changes {
        req = req.query("changes", change);
    }
    let answer: Value = ctx.client()?.json(req).await?;
    println!("{}", answer["Id"].as_str().unwrap_or_default());
    Ok(0)
}
