//! Errors of the image store.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong loading, reading or building an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// An I/O operation failed; `context` says which.
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// The archive is neither a `docker save` tarball nor an OCI image layout.
    #[error("archive has no manifest.json or index.json")]
    NoManifest,
    /// The archive is recognised but inconsistent (missing blob, bad JSON field...).
    #[error("invalid archive: {0}")]
    BadArchive(String),
    /// A JSON document in the archive or the store does not parse.
    #[error("invalid JSON in {context}")]
    Json {
        context: String,
        #[source]
        source: serde_json::Error,
    },
    /// A blob does not hash to the digest that names it.
    #[error("{what} {digest} digest mismatch (content hashes to {actual})")]
    DigestMismatch {
        what: &'static str,
        digest: String,
        actual: String,
    },
    /// A layer entry would land outside the image root.
    #[error("path escapes the root: {0}")]
    PathEscape(String),
    /// An entry's parent in the tree is a symlink or a file, and this archive may not replace
    /// it (see `unpack::Parents::Refuse`).
    #[error("{0}: a parent is a symlink or a file, not a directory (entries are never written through links)")]
    NotADirectory(String),
    /// A layer holds something that cannot be unpacked.
    #[error("bad layer {layer}: {reason}")]
    BadLayer { layer: String, reason: String },
    /// No image with that ID (or unique ID prefix).
    #[error("no such image: {0}")]
    NotFound(String),
    /// An ID prefix matches more than one image.
    #[error("image ID prefix {0} is ambiguous")]
    Ambiguous(String),
    /// mkfs.ext4 could not be run or failed.
    #[error("building the disk {disk} failed: {reason}")]
    Mkfs { disk: PathBuf, reason: String },
}

/// Shorthand for the store's results.
pub type Result<T, E = ImageError> = std::result::Result<T, E>;

/// Adds a context message to an I/O error.
pub(crate) trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| ImageError::Io {
            context: context(),
            source,
        })
    }
}
