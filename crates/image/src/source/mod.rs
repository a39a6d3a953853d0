//! Volume sources: turning a tenant's git repository, tarball URL or uploaded tar into a
//! directory tree, from which the caller builds the volume's ext4 disk (`mkfs.ext4 -d`).
//!
//! - [`fetch_into`] fetches a URL: a git repository (`git://...`, or `http(s)://...` whose path
//!   ends with `.git`; `#name` picks a branch or tag) as a shallow clone without its `.git`, or
//!   any other `http(s)://` URL as a tar archive (plain, gzip or zstd, told by its first bytes).
//! - [`unpack_upload`] unpacks a tar the tenant sent (the same formats).
//! - [`tree_size`] measures a tree the way the size limits here count.
//!
//! All of it runs as root on the node for a hostile tenant (DESIGN, Decided 12), hence:
//! - every address a URL leads to, after each redirect, passes the operator's
//!   [`AddressPolicy`] before anything connects, and the connection is pinned to the addresses
//!   checked (no second DNS lookup, no proxy), so DNS rebinding cannot swap in another;
//! - archives are unpacked by the image crate's safe writer (no `..`, no absolute paths, never
//!   through a symlink, owners and modes from the headers), with bounded memory;
//! - sizes are limited while data arrives, not only afterwards, so a source cannot fill the
//!   node's disk; git runs with a timeout;
//! - errors tell the tenant what to fix (an HTTP status, "not a tar archive", a size against
//!   the volume's) but carry nothing of what answered (no body, no banner), so a URL cannot be
//!   used to read what runs on a port the policy allows.
//!
//! Work files (a download, git's empty `HOME`) go beside `tree`, on the same disk, never inside
//! it, and are removed when done.

mod git;
mod http;
mod upload;

#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::fs;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;

use crate::policy::{AddressPolicy, Refused};
use crate::{ImageError, TempPath};

pub use upload::unpack_upload;

/// What one directory entry costs on a volume beyond its file's bytes, roughly: one 4 KiB
/// block (a directory's first block, the tail block of a file, a long symlink's target), which
/// also covers its inode and directory entry. Deliberately generous: the check before mkfs
/// should fail rather than mkfs.
pub const ENTRY_OVERHEAD: u64 = 4096;

/// Longest a fetch may take, git clone or download (then it is stopped and fails). Ten minutes
/// bring a few GiB at the speeds a node sees; a slower source is better copied in by the tenant.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(600);

/// Why a volume source could not be turned into a tree. Every variant but [`SourceError::Io`]
/// is the tenant's to fix; `Io` is the node's own failure.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The URL is not one this accepts.
    #[error("invalid volume source URL: {reason}")]
    InvalidUrl { reason: String },
    /// The host name does not resolve.
    #[error("cannot resolve host {host}")]
    Resolve {
        host: String,
        #[source]
        source: io::Error,
    },
    /// The host resolves to (or is) an address the policy refuses. The refusal is part of the
    /// message, not a cause: it is the one thing the tenant must see, however errors are printed.
    #[error("cannot fetch from {host}: {refused}")]
    Refused { host: String, refused: Refused },
    /// Connecting, TLS, or the transfer failed (the source has no URL in it: it may hold
    /// credentials).
    #[error("downloading from {host} failed")]
    Http {
        host: String,
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with a status other than success or a redirect.
    #[error("the server at {host} answered {status}")]
    Status {
        host: String,
        status: reqwest::StatusCode,
    },
    /// A redirect this does not follow.
    #[error("bad redirect from {host}: {reason}")]
    Redirect { host: String, reason: String },
    /// Too many redirects in a row.
    #[error("more than {max} redirects")]
    TooManyRedirects { max: usize },
    /// The body ended before its announced length.
    #[error("the download from {host} stopped after {got} of {want} bytes")]
    Truncated { host: String, got: u64, want: u64 },
    /// The source does not fit the volume.
    #[error("{what} needs at least {size} bytes, more than the volume's {limit}")]
    TooLarge {
        what: &'static str,
        size: u64,
        limit: u64,
    },
    /// The content is not a tar archive (nor a gzip or zstd compressed one). No cause is kept:
    /// the tar reader's would quote the bytes that answered.
    #[error("the source is not a tar archive (plain, gzip or zstd), or is empty")]
    NotTar,
    /// A tar archive that cannot be read or holds something invalid (`reason` quotes nothing
    /// of the archive but its entry names).
    #[error("invalid tar archive: {reason}")]
    BadArchive { reason: String },
    /// An entry names a path outside the tree (`..`, absolute).
    #[error("archive entry {path} escapes the volume's root")]
    PathEscape { path: String },
    /// An entry would be written through a symlink or below a file of the same archive.
    #[error("archive entry {path}: a parent is a symlink or a file, not a directory (entries are never written through links)")]
    ParentNotDir { path: String },
    /// An entry of a kind a volume source may not hold.
    #[error(
        "archive entry {path} is {kind}; volume sources hold files, directories and links only"
    )]
    Unsupported { path: String, kind: String },
    /// git clone failed; `message` is git's own error, trimmed.
    #[error("git clone failed: {message}")]
    Git { message: String },
    /// The fetch took longer than [`FETCH_TIMEOUT`].
    #[error("fetching the source took longer than {} s", .limit.as_secs())]
    Timeout { limit: Duration },
    /// A local operation failed: the node's fault, not the tenant's.
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl SourceError {
    fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> SourceError {
        let context = context.into();
        move |source| SourceError::Io { context, source }
    }
}

/// The shared unpacker's errors, in this module's terms.
impl From<ImageError> for SourceError {
    fn from(e: ImageError) -> SourceError {
        match e {
            ImageError::PathEscape(path) => SourceError::PathEscape { path },
            ImageError::NotADirectory(path) => SourceError::ParentNotDir { path },
            ImageError::BadLayer { reason, .. } => SourceError::BadArchive { reason },
            ImageError::Io { context, source } => SourceError::Io { context, source },
            other => SourceError::BadArchive {
                reason: other.to_string(),
            },
        }
    }
}

/// What kind of source a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Git,
    Tarball,
}

/// Parses and classifies a source URL.
fn parse(url: &str) -> Result<(Url, Kind), SourceError> {
    let invalid = |reason: String| SourceError::InvalidUrl { reason };
    let parsed = Url::parse(url).map_err(|e| invalid(e.to_string()))?;
    let git_path = parsed.path().trim_end_matches('/').ends_with(".git");
    let kind = match parsed.scheme() {
        "git" => Kind::Git,
        "http" | "https" if git_path => Kind::Git,
        "http" | "https" => Kind::Tarball,
        other => {
            return Err(invalid(format!(
                "scheme {other}: volume sources are git://, http:// or https:// URLs"
            )))
        }
    };
    let host = parsed.host_str().unwrap_or("");
    if host.is_empty() {
        return Err(invalid("the URL has no host".into()));
    }
    // A trailing dot would make the pinned name differ from the one the client looks up, and
    // a client that misses its pin resolves the name itself.
    if host.ends_with('.') {
        return Err(invalid(format!(
            "write the host without its trailing dot ({})",
            host.trim_end_matches('.')
        )));
    }
    Ok((parsed, kind))
}

/// Where a URL's connections go: the host as written and the addresses it was checked at.
struct Target {
    /// The URL's host (`[...]` around an IPv6 literal).
    host: String,
    /// The port, explicit or the scheme's.
    port: u16,
    /// Every address the host resolved to, each allowed by the policy; the connection must go
    /// to one of these and nowhere else.
    addrs: Vec<SocketAddr>,
    /// Whether the host is an IP literal (then there is nothing to pin: no lookup happens).
    literal: bool,
}

/// Resolves `url`'s host and checks every address against `policy`. Any refused address
/// refuses the whole host: a name that also points inside is not a source.
async fn resolve_checked(url: &Url, policy: &AddressPolicy) -> Result<Target, SourceError> {
    let host = url.host_str().unwrap_or_default().to_string();
    let port = url
        .port_or_known_default()
        .or_else(|| (url.scheme() == "git").then_some(git::DEFAULT_PORT))
        .ok_or_else(|| SourceError::InvalidUrl {
            reason: "the URL has no port".into(),
        })?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let (addrs, literal) = match bare.parse::<IpAddr>() {
        Ok(ip) => (vec![SocketAddr::new(ip, port)], true),
        Err(_) => (lookup(bare, port).await?, false),
    };
    for a in &addrs {
        policy
            .check(a.ip())
            .map_err(|refused| SourceError::Refused {
                host: host.clone(),
                refused,
            })?;
    }
    Ok(Target {
        host,
        port,
        addrs,
        literal,
    })
}

/// The addresses `host` resolves to, without duplicates, in the resolver's order.
async fn lookup(host: &str, port: u16) -> Result<Vec<SocketAddr>, SourceError> {
    let resolve = |source| SourceError::Resolve {
        host: host.to_string(),
        source,
    };
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for a in tokio::net::lookup_host((host, port))
        .await
        .map_err(resolve)?
    {
        if !addrs.contains(&a) {
            addrs.push(a);
        }
    }
    if addrs.is_empty() {
        return Err(resolve(io::Error::new(
            io::ErrorKind::NotFound,
            "no addresses",
        )));
    }
    Ok(addrs)
}

/// Fetches the source `url` names into `tree` (an existing, empty directory, in a directory
/// only root may enter: the content keeps its owners and set-id bits) and returns the tree's
/// size as [`tree_size`] measures it. `limit_bytes` is the volume's size: the download and the
/// unpacked or checked-out content are each refused as soon as they exceed it.
///
/// Refused: other schemes, hosts with any address `policy` refuses (at each redirect), more
/// than 5 redirects, a non-2xx answer, content that is not a tar archive, archive entries as
/// [`unpack_upload`] refuses them, a git clone that fails or outgrows the limit, anything that
/// takes longer than [`FETCH_TIMEOUT`]. On error `tree` may hold part of the content.
pub async fn fetch_into(
    url: &str,
    tree: &Path,
    limit_bytes: u64,
    policy: &AddressPolicy,
) -> Result<u64, SourceError> {
    let (url, kind) = parse(url)?;
    match kind {
        Kind::Git => git::clone(url, tree, limit_bytes, policy).await,
        Kind::Tarball => {
            let download = scratch_beside(tree, "download")?;
            let deadline = tokio::time::timeout(
                FETCH_TIMEOUT,
                http::download(url, download.path(), limit_bytes, policy),
            );
            deadline.await.map_err(|_| SourceError::Timeout {
                limit: FETCH_TIMEOUT,
            })??;
            let (archive, dest) = (download.path().to_path_buf(), tree.to_path_buf());
            blocking(move || unpack_upload(&archive, &dest, limit_bytes)).await
        }
    }
}

/// Runs blocking file work off the async runtime's threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SourceError> + Send + 'static,
) -> Result<T, SourceError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SourceError::Io {
            context: "unpacking the source".into(),
            source: io::Error::other(e.to_string()),
        })?
}

/// A fresh path beside `tree` (same directory, so same disk and same access rules), removed
/// when dropped. Nothing is created there yet.
fn scratch_beside(tree: &Path, tag: &str) -> Result<TempPath, SourceError> {
    let (Some(parent), Some(name)) = (tree.parent(), tree.file_name()) else {
        return Err(SourceError::Io {
            context: format!("{} has no parent directory", tree.display()),
            source: io::Error::from(io::ErrorKind::InvalidInput),
        });
    };
    let n: u64 = rand::random();
    let name = format!(".{}.{tag}-{n:016x}", name.to_string_lossy());
    Ok(TempPath(Some(parent.join(name))))
}

/// The room `tree` needs on a volume, roughly: the bytes of its regular files (hard-linked ones
/// once) plus [`ENTRY_OVERHEAD`] per directory entry below the root. Symlinks are not followed;
/// entries that vanish during the walk are skipped (git is still writing while its clone is
/// watched).
pub fn tree_size(tree: &Path) -> Result<u64, SourceError> {
    let mut seen = HashSet::new();
    let mut total = 0u64;
    let mut dirs: Vec<PathBuf> = vec![tree.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(SourceError::io(format!("reading {}", dir.display()))(e)),
        };
        for entry in entries {
            let entry = entry.map_err(SourceError::io(format!("reading {}", dir.display())))?;
            let meta = match entry.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    let context = format!("inspecting {}", entry.path().display());
                    return Err(SourceError::io(context)(e));
                }
            };
            total = total.saturating_add(ENTRY_OVERHEAD);
            if meta.is_dir() {
                dirs.push(entry.path());
            } else if meta.is_file() && (meta.nlink() == 1 || seen.insert((meta.dev(), meta.ino())))
            {
                total = total.saturating_add(meta.len());
            }
        }
    }
    Ok(total)
}
