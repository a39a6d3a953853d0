//! Downloading an image archive from a URL, for Hyper's `POST /images/load {"fromSrc": URL}`.
//!
//! Only `http://` and `https://` URLs; HTTPS checks the server's certificate (rustls, ring).
//! The body goes to a file the caller names, capped at `max_bytes`; a non-2xx answer, a body
//! that stops short of its `Content-Length`, or one over the cap fails the download. The caller
//! loads the file with [`ImageStore::load_archive`](crate::ImageStore::load_archive), which checks
//! every digest as for an uploaded archive.

use std::path::Path;

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Not an `http(s)://` URL: the caller's mistake.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// The server answered, but not with the archive.
    #[error("fetching {url}: the server answered {status}")]
    Status { url: String, status: u16 },
    /// Over the size cap.
    #[error("fetching {url}: the archive is larger than {max} bytes")]
    TooLarge { url: String, max: u64 },
    /// Fewer bytes than announced.
    #[error("fetching {url}: truncated download ({got} of {want} bytes)")]
    Truncated { url: String, got: u64, want: u64 },
    /// The server could not be reached, or the connection failed.
    #[error("{context}")]
    Http {
        context: String,
        #[source]
        source: reqwest::Error,
    },
    /// Writing the file failed.
    #[error("writing {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The HTTP client for registry logins and archive downloads: rustls over ring, 30 s to
/// connect, 5 min without data at most.
pub(crate) fn http_client() -> reqwest::Result<reqwest::Client> {
    crate::pull::tls_provider();
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(30))
        .read_timeout(std::time::Duration::from_secs(300))
        .build()
}

/// Downloads `url` into `dest` (created or truncated); returns the bytes written.
pub async fn download(url: &str, dest: &Path, max_bytes: u64) -> Result<u64, FetchError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| FetchError::InvalidUrl {
        url: url.to_string(),
        reason: e.to_string(),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(FetchError::InvalidUrl {
            url: url.to_string(),
            reason: "only http:// and https:// URLs are supported".into(),
        });
    }
    let http = |context: String| move |source| FetchError::Http { context, source };
    let client = http_client().map_err(http("building the HTTP client".into()))?;
    let resp = client
        .get(parsed)
        .send()
        .await
        .map_err(http(format!("fetching {url}")))?;
    if !resp.status().is_success() {
        return Err(FetchError::Status {
            url: url.to_string(),
            status: resp.status().as_u16(),
        });
    }
    let want = resp.content_length();
    if want.is_some_and(|w| w > max_bytes) {
        return Err(FetchError::TooLarge {
            url: url.to_string(),
            max: max_bytes,
        });
    }
    let io = |source| FetchError::Io {
        path: dest.display().to_string(),
        source,
    };
    let mut file = tokio::fs::File::create(dest).await.map_err(io)?;
    let mut got = 0u64;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(http(format!("fetching {url} (after {got} bytes)")))?;
        got += chunk.len() as u64;
        if got > max_bytes {
            return Err(FetchError::TooLarge {
                url: url.to_string(),
                max: max_bytes,
            });
        }
        file.write_all(&chunk).await.map_err(io)?;
    }
    file.flush().await.map_err(io)?;
    if let Some(want) = want.filter(|w| *w != got) {
        return Err(FetchError::Truncated {
            url: url.to_string(),
            got,
            want,
        });
    }
    Ok(got)
}
