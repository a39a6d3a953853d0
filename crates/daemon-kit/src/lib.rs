//! The process plumbing shared by hyperd's per-tenant daemons (`hyper-dns`, `hyper-lb`).
//!
//! hyperd relies on the same life cycle from each of them: with `--daemon` the launcher exits
//! 0 once the daemon serves or 1 once it failed (the reason in the `--log` file); the pidfile
//! is written only when serving; SIGHUP reloads the config, SIGTERM/SIGINT stop, and the
//! pidfile is removed on the way out only if it still holds our pid. The order of a start:
//! [`logging::init`], then [`daemonize`] (before any thread), then the runtime, [`Signals`],
//! binding, and [`serving`]; [`exit_code`] reports how it ended.

mod daemonize;
mod exit;
pub mod json_file;
pub mod logging;
mod pidfile;
mod serving;
mod signals;

pub use daemonize::{daemonize, ReadyNotice};
pub use exit::exit_code;
pub use pidfile::Pidfile;
pub use serving::serving;
pub use signals::{Signal, Signals};
