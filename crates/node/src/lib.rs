//! The node role: runs a tenant's containers on this host, one microVM each, through the per-VM
//! supervisor (`hyper-shim`), and keeps their records in the store.

pub mod cgroups;
pub mod crons;
pub mod events;
pub mod fleet;
pub mod funcs;
#[cfg(test)]
mod fuzz_inputs;
pub mod host;
pub mod images;
pub mod log_options;
pub mod logs;
pub mod losses;
pub mod metering;
pub mod model;
pub mod network;
pub mod other_nodes;
mod pidfd;
pub mod placement;
mod priority;
pub mod quota;
mod reserve;
mod runtime;
pub mod services;
pub mod shim_link;
pub mod sizes;
pub mod standby;
mod start_turns;
pub mod tmpfs;
pub mod validate;
pub mod volumes;

pub use reserve::Reserve;
pub use runtime::{
    parse_size, Archive, ArchiveOp, ArchiveRequest, CommitRequest, ExecConfig, ExecInfo,
    InitAnswer, PathStat, Runtime, RuntimeConfig, StorageUsage, WaitCondition,
};

/// Everything the node can refuse or fail at. The API layer maps each kind to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// 404
    #[error("{0}")]
    NotFound(String),
    /// 400
    #[error("{0}")]
    Invalid(String),
    /// 409
    #[error("{0}")]
    Conflict(String),
    /// 403: over a quota
    #[error("{0}")]
    Quota(String),
    /// 507: the node is short of disk space
    #[error("{0}")]
    NoSpace(String),
    /// 503: the node (or the fleet) has no memory left for a container of that size
    #[error("{0}")]
    NoRoom(String),
    /// 501: asked for something hyper does not do (yet)
    #[error("{0}")]
    Unsupported(String),
    /// 304 in Docker's API: already in the asked state
    #[error("{0}")]
    NotModified(String),
    #[error("{0}")]
    Shim(String),
    #[error("the VM supervisor is not reachable")]
    ShimGone(#[source] std::io::Error),
    #[error("{0}")]
    Internal(String),
    #[error("store")]
    Store(#[from] store::StoreError),
    #[error("image")]
    Image(#[from] image::ImageError),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl RuntimeError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
        let context = context.into();
        move |source| RuntimeError::Io { context, source }
    }
}

pub type Result<T> = std::result::Result<T, RuntimeError>;

/// The whole chain of causes, `outer: inner: innermost`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
