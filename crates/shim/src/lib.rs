//! hyper-shim: one supervisor per microVM, like containerd-shim or conmon.
//!
//! It boots QEMU, holds the agent connection (protocol in `agent-proto`), writes the main
//! process's output to `ctr.log` (Docker json-file), records the exit in `state.json`, and serves
//! hyperd on `shim.sock`. hyperd may crash or restart at any time: the shim keeps logging and
//! serves new connections. The contract is `docs/internals.md`.
//!
//! This library holds the contract's types ([`Spec`], [`State`], [`Request`], [`Response`]), the
//! client hyperd uses ([`ShimClient`]) and the daemon itself ([`daemon`]).

pub mod client;
pub mod daemon;
pub mod disk_full;
mod identity;
pub mod integrity;
pub mod log;
pub mod nic;
mod qcow2;
pub mod standby;
pub mod template;
mod types;
mod volumes;

pub use client::ShimClient;
pub use types::*;

/// File names inside a container directory.
pub mod paths {
    pub const SPEC: &str = "spec.json";
    pub const STATE: &str = "state.json";
    pub const SHIM_SOCK: &str = "shim.sock";
    pub const SHIM_PID: &str = "shim.pid";
    pub const CTR_LOG: &str = "ctr.log";
    /// The shim's own diagnostics (not part of the container's logs).
    pub const SHIM_LOG: &str = "shim.log";
    pub use vm::{AGENT_SOCK, CONSOLE_LOG};
}
