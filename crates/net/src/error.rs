//! One error type for the crate: what failed, and the tool's own words when a tool failed.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// `ip`, `nft` or `conntrack` exited non-zero.
    #[error("{what}: `{command}` failed ({status}): {stderr}")]
    Command {
        what: String,
        command: String,
        status: String,
        stderr: String,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{what} ({path}): {source}")]
    Namespace {
        what: &'static str,
        path: PathBuf,
        source: nix::Error,
    },
    #[error("invalid network model: {0}")]
    Invalid(String),
    #[error("unexpected output of `{command}`: {detail}")]
    Parse { command: String, detail: String },
}

impl NetError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        NetError::Io {
            what: what.into(),
            source,
        }
    }
}
