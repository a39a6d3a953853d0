//! `--log` and the tracing subscriber: `RUST_LOG` sets the level (default info).

use std::fs::File;
use std::io::IsTerminal;
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::Context;
use nix::unistd::dup2;
use tracing_subscriber::EnvFilter;

/// Logs to stderr; with `log`, stderr (tracing's output, and any panic message) is first
/// pointed at that file, appended. Colours only on a terminal.
pub fn init(log: Option<&Path>) -> anyhow::Result<()> {
    if let Some(path) = log {
        send_stderr_to(path)?;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(log.is_none() && std::io::stderr().is_terminal())
        .init();
    Ok(())
}

fn send_stderr_to(path: &Path) -> anyhow::Result<()> {
    let log = File::options()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("open log {}", path.display()))?;
    dup2(log.as_raw_fd(), 2).context("stderr to the log")?;
    Ok(())
}
