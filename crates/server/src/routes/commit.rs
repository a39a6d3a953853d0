//! `POST /commit`: a container's file system and settings as a new image of its tenant.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::transport::TenantId;
use crate::AppState;

/// The query's value of `name` (its last, as Go's `Form.Get` would give the first: one is sent).
pub(crate) fn one<'a>(q: &'a [(String, String)], name: &str) -> &'a str {
    q.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

/// `repo:tag` from the query's `repo` and `tag` (`latest` when no tag), none without `repo`.
pub(crate) fn new_image_name(q: &[(String, String)]) -> ApiResult<Option<String>> {
    let (mut repo, mut tag_name) = (one(q, "repo"), one(q, "tag"));
    // The Docker CLI sends `repo=name:tag` and no tag (a colon after the last slash is a tag's).
    if tag_name.is_empty() {
        if let Some((name, tag)) = repo.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
            (repo, tag_name) = (name, tag);
        }
    }
    let repo_ok = repo
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._/:-".contains(&b));
    let tag_ok = tag_name.len() <= 128
        && tag_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && !tag_name.starts_with(['.', '-']);
    if !repo_ok || !tag_ok {
        return Err(ApiError::bad_request(format!(
            "invalid reference format: {repo}:{tag_name} (a repository is lowercase letters, \
             digits and . _ / - ; a tag letters, digits and _ . -)"
        )));
    }
    Ok(match (repo, tag_name) {
        ("", "") => None,
        ("", _) => {
            return Err(ApiError::bad_request(
                "a tag needs a repository: give repo as well",
            ))
        }
        (repo, "") => Some(format!("{repo}:latest")),
        (repo, tag) => Some(format!("{repo}:{tag}")),
    })
}

/// The `changes` Dockerfile instructions: Docker's builder reads each value as Dockerfile
/// lines, one per value or several in one.
pub(crate) fn instructions(q: &[(String, String)]) -> Vec<String> {
    q.iter()
        .filter(|(k, _)| k == "changes")
        .flat_map(|(_, v)| v.lines().map(str::to_string))
        .collect()
}

pub async fn commit(
    State(app): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Query(q): Query<Vec<(String, String)>>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let container = one(&q, "container");
    if container.is_empty() {
        return Err(ApiError::bad_request(
            "missing container: name the container to commit (?container=NAME)",
        ));
    }
    let tag = new_image_name(&q)?;
    let changes = instructions(&q);
    let config = match serde_json::from_slice::<Value>(&body) {
        _ if body.iter().all(u8::is_ascii_whitespace) => None,
        Ok(Value::Null) => None,
        Ok(Value::Object(o)) => Some(o),
        _ => {
            return Err(ApiError::bad_request(
                "the body is the new image's config, a JSON object",
            ))
        }
    };
    let pause = !matches!(
        one(&q, "pause").to_ascii_lowercase().as_str(),
        "0" | "false" | "no"
    );
    let req = node::CommitRequest {
        tag,
        author: one(&q, "author").into(),
        comment: one(&q, "comment").into(),
        pause,
        changes,
        config,
    };
    let id = app.runtime.commit(&tenant, container, req).await?;
    Ok((StatusCode::CREATED, Json(json!({"Id": id}))))
}
