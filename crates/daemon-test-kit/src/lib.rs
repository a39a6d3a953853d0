//! Running a daemon-kit binary (`hyper-dns`, `hyper-lb`) the way hyperd does, from tests:
//! config, pidfile and log in a scratch directory; everything stopped on drop, also when a test
//! panics.

mod daemon;
mod scratch;

pub use daemon::Daemon;
pub use scratch::Scratch;
