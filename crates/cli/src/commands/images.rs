//! Image commands: images, image inspect/ls/rm/pull/load/tag, rmi, tag, load, pull; plus the
//! pull used by `run` and the `X-Registry-Auth` header built from `hyper login`'s credentials.

use std::io::{IsTerminal, Read};

use base64::Engine;
use bytes::Bytes;
use chrono::{TimeZone, Utc};
use clap::{Args, Subcommand};
use http::HeaderValue;
use http_body_util::BodyExt;
use serde_json::{json, Value};

use super::{for_each, print_rows, Ctx};
use crate::commands::containers::{filters_json, print_inspect};
use crate::format::Template;
use crate::table::{ago, human_size, short_id};
use crate::transport::{ApiRequest, Client};
use crate::CliError;

pub const DOCKER_HUB: &str = "https://index.docker.io/v1/";

#[derive(Args, Debug)]
pub struct ImagesArgs {
    /// Only show image IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Show all images (default hides intermediate images)
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Show digests
    #[arg(long)]
    pub digests: bool,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Filter output based on conditions provided
    #[arg(short = 'f', long = "filter")]
    pub filter: Vec<String>,
    /// Format output using a Go template
    #[arg(long)]
    pub format: Option<String>,
    /// REPOSITORY[:TAG]
    pub reference: Option<String>,
}

#[derive(Args, Debug)]
pub struct ImageInspectArgs {
    /// Format output using a Go template
    #[arg(short = 'f', long)]
    pub format: Option<String>,
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RmiArgs {
    /// Force removal of the image
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Do not delete untagged parents
    #[arg(long = "no-prune")]
    pub no_prune: bool,
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

#[derive(Args, Debug)]
pub struct TagArgs {
    pub source: String,
    pub target: String,
}

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Read from tar archive file or an http(s):// URL (fetched by the daemon), instead of STDIN
    #[arg(short = 'i', long)]
    pub input: Option<String>,
    /// Suppress the load output
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// Only show image IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Print sizes and dates in human readable format (`--human=false` for raw values; `-H` is
    /// the daemon host here)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub human: bool,
    /// Format output using a Go template
    #[arg(long)]
    pub format: Option<String>,
    pub image: String,
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// Suppress verbose output
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// One or more images (`hyper pull wordpress mysql`)
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum ImageCmd {
    /// Display detailed information on one or more images
    Inspect(ImageInspectArgs),
    /// List images
    #[command(alias = "list")]
    Ls(ImagesArgs),
    /// Remove one or more images
    Rm(RmiArgs),
    /// Download an image from a registry
    Pull(PullArgs),
    /// Load an image from a tar archive or STDIN
    Load(LoadArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(TagArgs),
    /// Show the history of an image
    History(HistoryArgs),
    /// Upload an image to a registry
    Push(super::image_transfer::PushArgs),
    /// Save one or more images to a tar archive (streamed to STDOUT by default)
    Save(super::image_transfer::SaveArgs),
}

pub async fn image_cmd(ctx: &Ctx, c: ImageCmd) -> Result<i32, CliError> {
    match c {
        ImageCmd::Inspect(a) => image_inspect(ctx, a).await,
        ImageCmd::Ls(a) => images(ctx, a).await,
        ImageCmd::Rm(a) => rmi(ctx, a).await,
        ImageCmd::Pull(a) => pull(ctx, a).await,
        ImageCmd::Load(a) => load(ctx, a).await,
        ImageCmd::Tag(a) => tag(ctx, a).await,
        ImageCmd::History(a) => history(ctx, a).await,
        ImageCmd::Push(a) => super::image_transfer::push(ctx, a).await,
        ImageCmd::Save(a) => super::image_transfer::save(ctx, a).await,
    }
}

/// `repo:tag` -> (`repo`, `tag`); the tag is after the last `:` that follows the last `/`.
pub fn split_tag(reference: &str) -> (&str, &str) {
    let slash = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[slash..].rfind(':') {
        Some(i) => (&reference[..slash + i], &reference[slash + i + 1..]),
        None => (reference, ""),
    }
}

/// (`fromImage`, `tag`) for `POST /images/create`: a digest or tag, `latest` by default.
pub fn pull_params(image: &str) -> (String, String) {
    if let Some((name, digest)) = image.split_once('@') {
        return (name.to_owned(), digest.to_owned());
    }
    let (name, tag) = split_tag(image);
    (
        name.to_owned(),
        if tag.is_empty() {
            "latest".into()
        } else {
            tag.to_owned()
        },
    )
}

/// The registry a reference lives in, as `hyper login` keys it.
pub fn registry_of(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first.to_owned()
        }
        _ => DOCKER_HUB.to_owned(),
    }
}

/// Docker's `X-Registry-Auth`: base64url of `{"username","password","serveraddress"}`.
pub fn encode_registry_auth(user: &str, password: &str, server: &str) -> String {
    let v = json!({"username": user, "password": password, "serveraddress": server});
    base64::engine::general_purpose::URL_SAFE.encode(v.to_string())
}

pub fn registry_auth_header(ctx: &Ctx, image: &str) -> Option<HeaderValue> {
    let server = registry_of(image);
    let entry = ctx.file.auths.get(&server)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(&entry.auth)
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    HeaderValue::from_str(&encode_registry_auth(user, password, &server)).ok()
}

/// One line of a progress stream (`pull`, `load`), as docker prints it without a terminal;
/// `None` for progress-bar updates. An `error` field is returned as `Err`.
pub fn progress_line(v: &Value) -> Result<Option<String>, String> {
    if let Some(e) = v["errorDetail"]["message"].as_str().or(v["error"].as_str()) {
        return Err(e.to_owned());
    }
    if let Some(s) = v["stream"].as_str() {
        return Ok(Some(s.trim_end_matches('\n').to_owned()));
    }
    if v.get("progress").is_some() || v["progressDetail"].get("current").is_some() {
        return Ok(None);
    }
    let status = v["status"].as_str().unwrap_or("");
    Ok(Some(match v["id"].as_str() {
        Some(id) if !id.is_empty() => format!("{id}: {status}"),
        _ => status.to_owned(),
    }))
}

/// Per-layer progress bars for a pull on a terminal, the way `docker pull` draws them: one
/// line per layer (`id: status [bar] current/total`), image-wide lines printed above.
struct Bars {
    multi: indicatif::MultiProgress,
    layers: std::collections::HashMap<String, indicatif::ProgressBar>,
}

impl Bars {
    fn new(to_stderr: bool) -> Bars {
        let target = if to_stderr {
            indicatif::ProgressDrawTarget::stderr()
        } else {
            indicatif::ProgressDrawTarget::stdout()
        };
        Bars {
            multi: indicatif::MultiProgress::with_draw_target(target),
            layers: Default::default(),
        }
    }

    fn update(&mut self, v: &Value) {
        let status = v["status"].as_str().unwrap_or("");
        let id = v["id"].as_str().unwrap_or("");
        let is_layer = !id.is_empty() && !status.starts_with("Pulling from");
        if !is_layer {
            let text = if id.is_empty() {
                status.to_owned()
            } else {
                format!("{id}: {status}")
            };
            let _ = self.multi.println(text);
            return;
        }
        let multi = &self.multi;
        let bar = self.layers.entry(id.to_owned()).or_insert_with(|| {
            let b = multi.add(indicatif::ProgressBar::new(0));
            b.set_style(
                indicatif::ProgressStyle::with_template("{prefix}: {msg}")
                    .expect("static template"),
            );
            b.set_prefix(id.to_owned());
            b
        });
        let detail = &v["progressDetail"];
        match (detail["current"].as_u64(), detail["total"].as_u64()) {
            (Some(current), Some(total)) if total > 0 => {
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{prefix}: {msg:<11} [{bar:40}] {bytes}/{total_bytes}",
                    )
                    .expect("static template")
                    .progress_chars("=> "),
                );
                bar.set_length(total);
                bar.set_position(current);
            }
            _ => {
                bar.set_style(
                    indicatif::ProgressStyle::with_template("{prefix}: {msg}")
                        .expect("static template"),
                );
            }
        }
        bar.set_message(status.to_owned());
    }

    fn finish(&self) {
        for b in self.layers.values() {
            b.abandon();
        }
    }
}

/// Reads a JSON-lines progress response: progress bars on a terminal, docker's plain lines
/// otherwise, nothing but errors when `quiet`.
pub(crate) async fn follow_progress(
    resp: hyper::Response<hyper::body::Incoming>,
    to_stderr: bool,
    quiet: bool,
) -> Result<(), CliError> {
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    let tty = if to_stderr {
        std::io::stderr().is_terminal()
    } else {
        std::io::stdout().is_terminal()
    };
    let mut bars = (tty && !quiet).then(|| Bars::new(to_stderr));
    let mut handle = |line: &[u8]| -> Result<(), CliError> {
        let line = String::from_utf8_lossy(line);
        let line = line.trim();
        if line.is_empty() {
            return Ok(());
        }
        let v: Value = serde_json::from_str(line).unwrap_or_else(|_| json!({"stream": line}));
        let text = progress_line(&v).map_err(CliError::Msg)?;
        if quiet {
            return Ok(());
        }
        if let Some(bars) = bars.as_mut().filter(|_| v.get("status").is_some()) {
            bars.update(&v);
            return Ok(());
        }
        if let Some(text) = text {
            if to_stderr {
                eprintln!("{text}");
            } else {
                println!("{text}");
            }
        }
        Ok(())
    };
    let result = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(crate::transport::ApiError::from)?;
            if let Some(data) = frame.data_ref() {
                buf.extend_from_slice(data);
                while let Some(i) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=i).collect();
                    handle(&line)?;
                }
            }
        }
        handle(&buf)
    }
    .await;
    if let Some(b) = &bars {
        b.finish();
    }
    result
}

/// `POST /images/create`, following the progress stream to the end.
pub async fn pull_image(
    client: &Client,
    image: &str,
    auth: Option<HeaderValue>,
    to_stderr: bool,
) -> Result<(), CliError> {
    pull_image_quiet(client, image, auth, to_stderr, false).await
}

async fn pull_image_quiet(
    client: &Client,
    image: &str,
    auth: Option<HeaderValue>,
    to_stderr: bool,
    quiet: bool,
) -> Result<(), CliError> {
    let (name, tag) = pull_params(image);
    let mut req = ApiRequest::post("/images/create")
        .query("fromImage", name)
        .query("tag", tag);
    if let Some(a) = auth {
        req = req.header("x-registry-auth", a);
    }
    let resp = client.send(req).await?;
    follow_progress(resp, to_stderr, quiet).await
}

/// `pull IMAGE...`: each image in turn, as docker pulls one; exit status 1 if any failed.
pub async fn pull(ctx: &Ctx, a: PullArgs) -> Result<i32, CliError> {
    let client = ctx.client()?;
    if a.images.len() == 1 {
        pull_one(ctx, &client, &a.images[0], a.quiet).await?;
        return Ok(0);
    }
    let mut status = 0;
    for image in &a.images {
        if let Err(e) = pull_one(ctx, &client, image, a.quiet).await {
            eprintln!("Error pulling {image}: {}", crate::error_chain(&e));
            status = 1;
        }
    }
    Ok(status)
}

async fn pull_one(ctx: &Ctx, client: &Client, image: &str, quiet: bool) -> Result<(), CliError> {
    let auth = registry_auth_header(ctx, image);
    pull_image_quiet(client, image, auth, false, quiet).await?;
    let (name, tag) = pull_params(image);
    let sep = if tag.starts_with("sha256:") { '@' } else { ':' };
    println!("{name}{sep}{tag}");
    Ok(())
}

pub fn images_header() -> Value {
    json!({"Repository": "REPOSITORY", "Tag": "TAG", "Digest": "DIGEST", "ID": "IMAGE ID",
           "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "Size": "SIZE"})
}

/// One row per repository tag (or one `<none>` row), with docker's field names.
pub fn image_rows(img: &Value, trunc: bool, now: chrono::DateTime<Utc>) -> Vec<Value> {
    let id = img["Id"].as_str().unwrap_or("");
    let id = if trunc { short_id(id) } else { id.to_owned() };
    let created = img["Created"].as_i64().unwrap_or(0);
    let size = human_size(img["Size"].as_f64().unwrap_or(0.0));
    let digests: Vec<(&str, &str)> = img["RepoDigests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|d| d.split_once('@'))
        .collect();
    let mut tags: Vec<(String, String)> = img["RepoTags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|t| *t != "<none>:<none>")
        .map(|t| {
            let (r, tag) = split_tag(t);
            (r.to_owned(), tag.to_owned())
        })
        .collect();
    if tags.is_empty() {
        match digests.first() {
            Some((repo, _)) => tags.push((repo.to_string(), "<none>".into())),
            None => tags.push(("<none>".into(), "<none>".into())),
        }
    }
    tags.into_iter()
        .map(|(repo, tag)| {
            let digest = digests.iter().find(|(r, _)| *r == repo).map_or("<none>", |(_, d)| d);
            json!({
                "Repository": repo, "Tag": tag, "Digest": digest, "ID": id,
                "CreatedSince": ago(created, now),
                "CreatedAt": Utc.timestamp_opt(created, 0).single().map(|t| t.format("%Y-%m-%d %H:%M:%S +0000 UTC").to_string()).unwrap_or_default(),
                "Size": size,
            })
        })
        .collect()
}

pub async fn images(ctx: &Ctx, a: ImagesArgs) -> Result<i32, CliError> {
    let client = ctx.client()?;
    let mut filters = a.filter.clone();
    if let Some(r) = &a.reference {
        filters.push(format!("reference={r}"));
    }
    let req = ApiRequest::get("/images/json")
        .flag("all", a.all)
        .flag("digests", a.digests)
        .query_opt("filters", filters_json(&filters)?);
    let list: Vec<Value> = client.json(req).await?;
    let now = Utc::now();
    let mut rows: Vec<Value> = list
        .iter()
        .flat_map(|i| image_rows(i, !a.no_trunc, now))
        .collect();
    let template = if a.quiet {
        let mut seen = std::collections::HashSet::new();
        rows.retain(|r| seen.insert(r["ID"].to_string()));
        "{{.ID}}".to_owned()
    } else if let Some(f) = &a.format {
        f.clone()
    } else if a.digests {
        "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}".into()
    } else {
        "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}".into()
    };
    print_rows(&template, &images_header(), &rows)?;
    Ok(0)
}

pub async fn image_inspect(ctx: &Ctx, a: ImageInspectArgs) -> Result<i32, CliError> {
    let client = ctx.client()?;
    let template = a.format.as_deref().map(Template::parse).transpose()?;
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for name in &a.images {
        match client
            .json::<Value>(ApiRequest::get(format!("/images/{name}/json")))
            .await
        {
            Ok(v) => found.push(v),
            Err(e) if e.is_not_found() => errors.push(format!("Error: No such image: {name}")),
            Err(e) => return Err(e.into()),
        }
    }
    print_inspect(&found, template.as_ref())?;
    for e in &errors {
        eprintln!("{e}");
    }
    Ok(i32::from(!errors.is_empty()))
}

pub async fn rmi(ctx: &Ctx, a: RmiArgs) -> Result<i32, CliError> {
    let client = ctx.client()?;
    for_each(&a.images, |name| {
        let client = client.clone();
        let req = ApiRequest::delete(format!("/images/{name}"))
            .flag("force", a.force)
            .flag("noprune", a.no_prune);
        async move {
            let items: Vec<Value> = client.json(req).await?;
            let lines: Vec<String> = items
                .iter()
                .flat_map(|i| {
                    let u = i["Untagged"].as_str().map(|s| format!("Untagged: {s}"));
                    let d = i["Deleted"].as_str().map(|s| format!("Deleted: {s}"));
                    [u, d].into_iter().flatten()
                })
                .collect();
            Ok((!lines.is_empty()).then(|| lines.join("\n")))
        }
    })
    .await
}

pub async fn tag(ctx: &Ctx, a: TagArgs) -> Result<i32, CliError> {
    let client = ctx.client()?;
    let (repo, tag) = split_tag(&a.target);
    let req = ApiRequest::post(format!("/images/{}/tag", a.source))
        .query("repo", repo)
        .query("tag", if tag.is_empty() { "latest" } else { tag });
    client.call(req).await?;
    Ok(0)
}

/// Whether `hyper load -i` names a URL for the daemon to fetch rather than a local file.
pub fn is_url(input: &str) -> bool {
    input.starts_with("http://") || input.starts_with("https://")
}

pub async fn load(ctx: &Ctx, a: LoadArgs) -> Result<i32, CliError> {
    if let Some(url) = a.input.as_deref().filter(|i| is_url(i)) {
        // Hyper's form: the daemon downloads the archive.
        let client = ctx.client()?;
        let req = ApiRequest::post("/images/load").json(&json!({"fromSrc": url, "quiet": a.quiet}));
        let resp = client.send(req).await?;
        follow_progress(resp, false, false).await?;
        return Ok(0);
    }
    let data = match &a.input {
        Some(path) => {
            std::fs::read(path).map_err(|e| CliError::Msg(format!("open {path}: {e}")))?
        }
        None => {
            if std::io::stdin().is_terminal() {
                return Err(CliError::Msg(
                    "requested load from stdin, but stdin is empty".into(),
                ));
            }
            let mut v = Vec::new();
            std::io::stdin().read_to_end(&mut v)?;
            v
        }
    };
    let client = ctx.client()?;
    // `file=true` is Hyper's marker for a tar body; Docker-compatible servers ignore it.
    let req = ApiRequest::post("/images/load")
        .flag("quiet", a.quiet)
        .query("file", "true")
        .body(Bytes::from(data), "application/x-tar");
    let resp = client.send(req).await?;
    follow_progress(resp, false, false).await?;
    Ok(0)
}

/// One `docker history` row per entry of `GET /images/{name}/history`.
pub fn history_rows(
    entries: &[Value],
    trunc: bool,
    human: bool,
    now: chrono::DateTime<Utc>,
) -> Vec<Value> {
    entries
        .iter()
        .map(|e| {
            let id = e["Id"].as_str().unwrap_or("<missing>");
            let id = if trunc && id != "<missing>" { short_id(id) } else { id.to_owned() };
            let created = e["Created"].as_i64().unwrap_or(0);
            let created_by = e["CreatedBy"].as_str().unwrap_or("");
            let created_by = if trunc && created_by.chars().count() > 45 {
                format!("{}…", created_by.chars().take(44).collect::<String>())
            } else {
                created_by.to_owned()
            };
            let size = e["Size"].as_f64().unwrap_or(0.0);
            json!({
                "ID": id,
                "CreatedSince": if human { ago(created, now) } else {
                    Utc.timestamp_opt(created, 0).single().map(|t| t.to_rfc3339()).unwrap_or_default()
                },
                "CreatedAt": Utc.timestamp_opt(created, 0).single().map(|t| t.to_rfc3339()).unwrap_or_default(),
                "CreatedBy": created_by,
                "Size": if human { human_size(size) } else { format!("{size}") },
                "Comment": e["Comment"].as_str().unwrap_or(""),
            })
        })
        .collect()
}

pub async fn history(ctx: &Ctx, a: HistoryArgs) -> Result<i32, CliError> {
    let client = ctx.client()?;
    let entries: Vec<Value> = client
        .json(ApiRequest::get(format!("/images/{}/history", a.image)))
        .await?;
    let rows = history_rows(&entries, !a.no_trunc, a.human, Utc::now());
    let template = if a.quiet {
        "{{.ID}}".to_owned()
    } else if let Some(f) = &a.format {
        f.clone()
    } else {
        "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}".into()
    };
    let header = json!({"ID": "IMAGE", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT",
                        "CreatedBy": "CREATED BY", "Size": "SIZE", "Comment": "COMMENT"});
    print_rows(&template, &header, &rows)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        assert_eq!(split_tag("busybox:1.36"), ("busybox", "1.36"));
        assert_eq!(split_tag("reg:5000/a/b"), ("reg:5000/a/b", ""));
        assert_eq!(split_tag("reg:5000/a/b:x"), ("reg:5000/a/b", "x"));
        assert_eq!(pull_params("busybox"), ("busybox".into(), "latest".into()));
        assert_eq!(pull_params("a@sha256:00"), ("a".into(), "sha256:00".into()));
        assert_eq!(registry_of("busybox"), DOCKER_HUB);
        assert_eq!(registry_of("library/busybox"), DOCKER_HUB);
        assert_eq!(registry_of("reg.io/x/y:1"), "reg.io");
        assert_eq!(registry_of("localhost:5000/x"), "localhost:5000");
    }

    #[test]
    fn registry_auth_encoding() {
        let enc = encode_registry_auth("u", "p", "reg.io");
        let dec = base64::engine::general_purpose::URL_SAFE
            .decode(enc)
            .unwrap();
        let v: Value = serde_json::from_slice(&dec).unwrap();
        assert_eq!(
            v,
            json!({"username": "u", "password": "p", "serveraddress": "reg.io"})
        );
    }

    #[test]
    fn progress_lines() {
        let cases = [
            (
                json!({"status": "Pulling from library/busybox", "id": "latest"}),
                Ok(Some("latest: Pulling from library/busybox".to_owned())),
            ),
            (
                json!({"status": "Downloading", "progressDetail": {"current": 1, "total": 2}, "progress": "[=> ]", "id": "a"}),
                Ok(None),
            ),
            (
                json!({"status": "Digest: sha256:abc"}),
                Ok(Some("Digest: sha256:abc".to_owned())),
            ),
            (
                json!({"stream": "Loaded image: busybox:latest\n"}),
                Ok(Some("Loaded image: busybox:latest".to_owned())),
            ),
            (
                json!({"errorDetail": {"message": "not found"}, "error": "not found"}),
                Err("not found".to_owned()),
            ),
        ];
        for (i, (v, want)) in cases.into_iter().enumerate() {
            assert_eq!(progress_line(&v), want, "test[{i}]");
        }
    }

    #[test]
    fn history_table_rows() {
        let now = Utc.timestamp_opt(100_000, 0).unwrap();
        let long = "/bin/sh -c #(nop) ADD file:0123456789abcdef0123456789abcdef in / ";
        let entries = [
            json!({"Id": "<missing>", "Created": 100_000 - 3600, "CreatedBy": long, "Size": 1_500_000, "Comment": ""}),
            json!({"Id": "sha256:0123456789abcdef", "Created": 100_000 - 60, "CreatedBy": "RUN x", "Size": 0}),
        ];
        let rows = history_rows(&entries, true, true, now);
        assert_eq!(rows[0]["ID"], "<missing>", "test[0]");
        assert_eq!(rows[0]["CreatedSince"], "About an hour ago", "test[0]");
        assert_eq!(
            rows[0]["CreatedBy"].as_str().unwrap().chars().count(),
            45,
            "test[0]"
        );
        assert_eq!(rows[0]["Size"], "1.5MB", "test[0]");
        assert_eq!(rows[1]["ID"], "0123456789ab", "test[1]");
        let raw = history_rows(&entries, false, false, now);
        assert_eq!(raw[0]["CreatedBy"], long, "test[2]");
        assert_eq!(raw[0]["Size"], "1500000", "test[2]");
        assert!(is_url("https://x/a.tar") && is_url("http://127.0.0.1:1/a") && !is_url("a.tar"));
    }

    #[test]
    fn image_table_rows() {
        let now = Utc.timestamp_opt(100_000, 0).unwrap();
        let img = json!({"Id": "sha256:0123456789abcdef", "Created": 100_000 - 7200, "Size": 4_261_000,
                         "RepoTags": ["busybox:latest", "busybox:1"], "RepoDigests": ["busybox@sha256:ff"]});
        let rows = image_rows(&img, true, now);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0],
            json!({"Repository": "busybox", "Tag": "latest", "Digest": "sha256:ff", "ID": "0123456789ab",
                                   "CreatedSince": "2 hours ago", "CreatedAt": "1970-01-02 01:46:40 +0000 UTC", "Size": "4.26MB"})
        );
        let dangling = image_rows(&json!({"Id": "sha256:aa", "RepoTags": null}), true, now);
        assert_eq!(
            (
                dangling[0]["Repository"].as_str(),
                dangling[0]["Tag"].as_str()
            ),
            (Some("<none>"), Some("<none>"))
        );
    }
}
