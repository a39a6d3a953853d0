//! `hyper-dns`: the DNS server of one tenant, answering container names on the tenant's networks.
//!
//! # Running
//! ```text
//! hyper-dns --config PATH --pidfile PATH [--log PATH] [--port 53] [--daemon]
//! ```
//! hyperd starts one per tenant network namespace, from inside it (setns already done): the
//! server binds the addresses the config names and nothing else. It must outlive hyperd
//! restarts, so hyperd runs it with `--daemon`: the process forks, the child starts a new
//! session, moves to `/`, sends stdin/stdout to /dev/null, binds its listeners and writes the
//! pidfile; only then does the parent exit, 0 (serving) or 1 (failed; the reason is in the log).
//! hyperd can therefore simply run it and wait for the exit status. Without `--daemon` it stays
//! in the foreground (tests, debugging). `--log` appends stderr (logs and panics) to a file;
//! otherwise logs go to whatever stderr was inherited. `RUST_LOG` sets the level (default info).
//!
//! # Config
//! A JSON file, which hyperd replaces atomically (temp + rename):
//! ```json
//! { "networks": [ { "listen": "172.16.0.1",
//!                   "records": { "web": ["172.16.0.2"], "3f2a9c1b7e4d": ["172.16.0.2"] } } ],
//!   "upstream": ["192.0.2.53:53"] }
//! ```
//! `upstream` entries may omit the port (53). `SIGHUP` re-reads the file and applies it: kept
//! addresses keep their sockets and just swap records (no query is dropped), removed addresses
//! stop, new ones are bound. An address that cannot be bound is logged and retried on the next
//! reload while the others serve; a config that cannot be read is logged and the previous one
//! kept. `SIGTERM`/`SIGINT` stop the server and remove the pidfile.
//!
//! # Answers
//! Each listen address answers from its own network's records only (names are scoped per
//! network, as in Docker), over UDP and TCP:
//! - exact names, case-insensitive, with or without the trailing dot: A (and AAAA for IPv6
//!   record addresses), every address, rotated on each query; other types get NOERROR with no
//!   answer, so resolvers don't wait on upstream for AAAA; TTL 10 s since containers come and go;
//! - PTR for a record address: every name holding it;
//! - a name of a single label it does not have (the tenant's own names: where containers and
//!   services live): NXDOMAIN at once, authoritative, but for the types a top-level domain has
//!   at its apex (SOA, NS, DNSSEC records), which go upstream;
//! - anything else is forwarded verbatim over UDP to each upstream in turn (2 s each) and the
//!   reply relayed verbatim; with no upstream, or none answering, SERVFAIL (Docker's behaviour).
//!
//! # Why a hand-written server
//! Messages are parsed and built with `hickory-proto` (std only: no DNSSEC, no TLS). The IO is a
//! small tokio loop per address rather than `hickory-server`: per-network scoping, swapping
//! records on SIGHUP under live sockets and relaying upstream replies verbatim are each a few
//! lines here, but would need a custom authority, a catalog rebuild per reload and a resolver
//! stack there. One single-threaded runtime per process: there is one process per tenant.

mod answer;
mod config;
mod forward;
#[cfg(test)]
mod fuzz;
mod handler;
mod listener;
mod listeners;
mod network;
mod records;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use daemon_kit::{ReadyNotice, Signal, Signals};

use crate::config::Config;
use crate::listeners::Listeners;

#[derive(Parser)]
#[command(
    name = "hyper-dns",
    version,
    about = "Per-tenant DNS server for Hyper's container networks"
)]
struct Cli {
    /// The JSON config hyperd writes; re-read on SIGHUP.
    #[arg(long)]
    config: PathBuf,
    /// Where to write this process's pid once it serves.
    #[arg(long)]
    pidfile: PathBuf,
    /// Append logs (and panics) to this file instead of stderr.
    #[arg(long)]
    log: Option<PathBuf>,
    /// UDP and TCP port on every listen address (other than 53 only for tests).
    #[arg(long, default_value_t = 53)]
    port: u16,
    /// Fork into a new session; the parent exits once the server is serving.
    #[arg(long)]
    daemon: bool,
}

fn main() -> ExitCode {
    daemon_kit::exit_code("hyper-dns", run(Cli::parse()))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // Absolute before a daemon moves to `/`, so a reload still finds the config.
    let config = std::path::absolute(&cli.config).context("config path")?;
    let pidfile = std::path::absolute(&cli.pidfile).context("pidfile path")?;
    daemon_kit::logging::init(cli.log.as_deref())?;
    let ready = cli.daemon.then(daemon_kit::daemonize).transpose()?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?
        .block_on(serve(&config, &pidfile, cli.port, ready))
}

async fn serve(
    config_path: &Path,
    pidfile: &Path,
    port: u16,
    ready: Option<ReadyNotice>,
) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let mut signals = Signals::install()?;
    let mut listeners = Listeners::new(port);
    listeners.apply(&config).await;
    let _pidfile = daemon_kit::serving(pidfile, ready)?;

    while let Signal::Reload = signals.next().await {
        match Config::load(config_path) {
            Ok(config) => {
                listeners.apply(&config).await;
                tracing::info!("config reloaded");
            }
            Err(err) => tracing::error!("reload failed, keeping the previous config: {err:#}"),
        }
    }
    tracing::info!("stopping");
    Ok(())
}
