//! The signals hyperd drives a daemon with: SIGHUP reloads, SIGTERM (or SIGINT) stops.

use tokio::signal::unix::{signal, SignalKind};

pub enum Signal {
    Reload,
    Stop,
}

pub struct Signals {
    hangup: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    /// Install before serving: SIGHUP's default action would kill us once hyperd thinks we
    /// are up. Needs a tokio runtime.
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            hangup: signal(SignalKind::hangup())?,
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// The next signal. Cancel-safe, so it can be one branch of a `select!`.
    pub async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.hangup.recv() => Signal::Reload,
            _ = self.terminate.recv() => Signal::Stop,
            _ = self.interrupt.recv() => Signal::Stop,
        }
    }
}
