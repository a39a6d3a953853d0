//! Downloading a tarball over HTTP(S) to a file, for [`fetch_into`](super::fetch_into).
//!
//! Redirects are followed here, not by reqwest, so that each hop's host is resolved and checked
//! against the policy before it is connected to; each request goes through a client pinned to
//! the checked addresses, with no proxy, and whose resolver refuses every other lookup (so a
//! name that somehow missed its pin fails rather than resolving on its own).

use std::future;
use std::path::Path;

use futures_util::StreamExt;
use reqwest::dns::{Name, Resolve, Resolving};
use reqwest::{Response, Url};
use tokio::io::AsyncWriteExt;

use super::{resolve_checked, SourceError, Target};
use crate::policy::AddressPolicy;

/// Redirects followed at most (curl's and browsers' limits are higher; a source needs few).
const MAX_REDIRECTS: usize = 5;

/// Downloads `url` into `dest` (created), following up to [`MAX_REDIRECTS`] redirects, and
/// returns the bytes written. More than `limit` bytes fail, announced or not.
pub(super) async fn download(
    url: Url,
    dest: &Path,
    limit: u64,
    policy: &AddressPolicy,
) -> Result<u64, SourceError> {
    let mut url = url;
    for _ in 0..=MAX_REDIRECTS {
        let resp = get(&url, policy).await?;
        match redirect_target(&url, &resp)? {
            Some(next) => url = next,
            None => return save(resp, &host_of(&url), dest, limit).await,
        }
    }
    Err(SourceError::TooManyRedirects { max: MAX_REDIRECTS })
}

fn host_of(url: &Url) -> String {
    url.host_str().unwrap_or_default().to_string()
}

/// One GET of `url` through a client pinned to its checked addresses; redirects are returned,
/// not followed.
async fn get(url: &Url, policy: &AddressPolicy) -> Result<Response, SourceError> {
    let target = resolve_checked(url, policy).await?;
    let http = |source: reqwest::Error| SourceError::Http {
        host: target.host.clone(),
        source: source.without_url(),
    };
    let client = pinned_client(&target).map_err(http)?;
    client.get(url.clone()).send().await.map_err(http)
}

/// A client that connects only to `target`'s checked addresses: no redirects, no proxy (which
/// would connect elsewhere on our behalf), and a resolver that fails every lookup the pin does
/// not answer.
pub(super) fn pinned_client(target: &Target) -> reqwest::Result<reqwest::Client> {
    crate::pull::tls_provider();
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(NoLookups)
        .connect_timeout(std::time::Duration::from_secs(30))
        .read_timeout(std::time::Duration::from_secs(60));
    if !target.literal {
        builder = builder.resolve_to_addrs(&target.host, &target.addrs);
    }
    builder.build()
}

/// A resolver that resolves nothing: every connection must go to a pinned address.
struct NoLookups;

impl Resolve for NoLookups {
    fn resolve(&self, name: Name) -> Resolving {
        let err = format!("{} was not resolved and checked first", name.as_str());
        Box::pin(future::ready(Err(err.into())))
    }
}

/// Where a redirect answer sends us, if `resp` is one.
fn redirect_target(url: &Url, resp: &Response) -> Result<Option<Url>, SourceError> {
    if !resp.status().is_redirection() || resp.status() == reqwest::StatusCode::NOT_MODIFIED {
        return Ok(None);
    }
    let bad = |reason: &str| SourceError::Redirect {
        host: host_of(url),
        reason: reason.to_string(),
    };
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .ok_or_else(|| bad("no Location"))?
        .to_str()
        .map_err(|_| bad("Location is not text"))?;
    let next = url
        .join(location)
        .map_err(|_| bad("Location is not a URL"))?;
    if !matches!(next.scheme(), "http" | "https") {
        return Err(bad("it leads away from http(s)"));
    }
    Ok(Some(next))
}

/// Streams a successful answer into `dest`, stopping as soon as it passes `limit`.
async fn save(resp: Response, host: &str, dest: &Path, limit: u64) -> Result<u64, SourceError> {
    if !resp.status().is_success() {
        return Err(SourceError::Status {
            host: host.to_string(),
            status: resp.status(),
        });
    }
    let too_large = |size| SourceError::TooLarge {
        what: "the download",
        size,
        limit,
    };
    let want = resp.content_length();
    if let Some(w) = want.filter(|w| *w > limit) {
        return Err(too_large(w));
    }
    let io = |what: &str| SourceError::io(format!("{what} {}", dest.display()));
    let mut file = tokio::fs::File::create(dest)
        .await
        .map_err(io("creating"))?;
    let mut got = 0u64;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| SourceError::Http {
            host: host.to_string(),
            source: e.without_url(),
        })?;
        got += chunk.len() as u64;
        if got > limit {
            return Err(too_large(got));
        }
        file.write_all(&chunk).await.map_err(io("writing"))?;
    }
    file.flush().await.map_err(io("writing"))?;
    match want {
        Some(want) if want != got => Err(SourceError::Truncated {
            host: host.to_string(),
            got,
            want,
        }),
        _ => Ok(got),
    }
}
