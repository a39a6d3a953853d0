//! `hyper-lb`: the load balancer of one tenant's services.
//!
//! # Running
//! ```text
//! hyper-lb --config PATH --pidfile PATH [--status PATH] [--log PATH] [--daemon]
//! ```
//! hyperd starts one per tenant network namespace, from inside it, and puts each service's
//! stable IP on the tenant's bridge. The balancer must keep serving while hyperd is stopped or
//! restarting, so hyperd runs it with `--daemon`: the process forks, the child starts a new
//! session, moves to `/`, sends stdin/stdout to /dev/null, binds its listeners and writes the
//! pidfile; only then does the parent exit, 0 (serving) or 1 (failed; the reason is in the
//! log). Without `--daemon` it stays in the foreground (tests, debugging). `--log` appends
//! stderr (logs and panics) to a file. `RUST_LOG` sets the level (default info).
//!
//! # Config
//! A JSON file hyperd replaces atomically (see `config.rs` for every field and default):
//! ```json
//! { "services": [ { "name": "web", "listen": "172.16.255.10:80",
//!     "protocol": "tcp" | "http" | "https" | "httpsTerm",
//!     "algorithm": "roundrobin" | "leastconn" | "source", "session_affinity": false,
//!     "tls_cert": "/path/web.pem",
//!     "health": { "interval_secs": 3, "fall": 3, "rise": 2, "http_path": "/" },
//!     "backends": [ { "id": "3f2a9c1b7e4d", "addr": "172.16.0.5:8080",
//!                     "source": "172.16.0.3" } ] } ] }
//! ```
//! A top-level `"kernel_balancing": true` (hyperd sets it) has the kernel balance the `tcp`
//! services that allow it (see `kernel.rs`); the balancer then keeps the table `ip hyper-lb`
//! of its namespace, and removes it as it stops.
//! `SIGHUP` re-reads it and applies it without dropping a connection: a service kept on the
//! same address keeps its socket and takes the new settings; a removed service (or one moved
//! to another address) stops accepting, its connections finish and kept-alive HTTP clients
//! are closed after their current request; backends removed from a service get nothing new
//! while their connections and requests finish; new backends are checked at once and used
//! from their first passed check. A new service that cannot listen yet (address not
//! assigned) or whose certificate does not load is logged and retried on the next reload; a
//! running service whose new certificate does not load keeps its previous settings (its
//! backends are still updated); a config that cannot be read is logged and the previous one
//! kept. `SIGTERM`/`SIGINT` stop at once.
//!
//! # Status
//! `--status` is rewritten atomically whenever a backend's health changes, after each reload
//! and at least every (shortest) health check interval:
//! `{"services": {"web": {"backends": {"3f2a9c1b7e4d":
//!   {"healthy": true, "active": 2, "since": "2024-05-01T12:00:00.000Z"}}}}}`.
//! `since` is the last health change (or when the backend was added); `active` counts
//! connections (tcp, https) or requests in flight (http, httpsTerm), with the established
//! connections the kernel balanced to it as last counted.
//!
//! # Threads
//! A two-worker tokio runtime: enough to keep proxying while a TLS handshake computes, few
//! enough for one process per tenant.

mod backend;
mod config;
mod health;
mod kernel;
mod listener;
mod peer_liveness;
mod pool;
mod proxy_body;
mod proxy_http;
mod proxy_tcp;
mod service;
mod services;
mod status;
mod tls;
mod upstream;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use daemon_kit::{ReadyNotice, Signal, Signals};

use crate::config::Config;
use crate::services::Services;

#[derive(Parser)]
#[command(
    name = "hyper-lb",
    version,
    about = "Per-tenant service load balancer for Hyper"
)]
struct Cli {
    /// The JSON config hyperd writes; re-read on SIGHUP.
    #[arg(long)]
    config: PathBuf,
    /// Where to write this process's pid once it serves.
    #[arg(long)]
    pidfile: PathBuf,
    /// Where to keep the JSON health status of every backend.
    #[arg(long)]
    status: Option<PathBuf>,
    /// Append logs (and panics) to this file instead of stderr.
    #[arg(long)]
    log: Option<PathBuf>,
    /// Fork into a new session; the parent exits once the balancer is serving.
    #[arg(long)]
    daemon: bool,
}

struct Paths {
    config: PathBuf,
    pidfile: PathBuf,
    status: Option<PathBuf>,
}

fn main() -> ExitCode {
    daemon_kit::exit_code("hyper-lb", run(Cli::parse()))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // Absolute before a daemon moves to `/`.
    let absolute =
        |path: &Path| std::path::absolute(path).with_context(|| format!("{}", path.display()));
    let paths = Paths {
        config: absolute(&cli.config)?,
        pidfile: absolute(&cli.pidfile)?,
        status: cli.status.as_deref().map(absolute).transpose()?,
    };
    daemon_kit::logging::init(cli.log.as_deref())?;
    let ready = cli.daemon.then(daemon_kit::daemonize).transpose()?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?
        .block_on(serve(&paths, ready))
}

async fn serve(paths: &Paths, ready: Option<ReadyNotice>) -> anyhow::Result<()> {
    let config = Config::load(&paths.config)?;
    let mut signals = Signals::install()?;
    let mut services = Services::default();
    services.apply(&config).await;
    let mut kernel = kernel::Balancing::new(config.kernel_balancing);
    kernel.sync(&services);
    write_status(paths, &services);
    let _pidfile = daemon_kit::serving(&paths.pidfile, ready)?;

    let health_changed = services.health_changed.clone();
    loop {
        tokio::select! {
            signal = signals.next() => {
                let Signal::Reload = signal else { break };
                match Config::load(&paths.config) {
                    Ok(config) => {
                        services.apply(&config).await;
                        kernel.set_enabled(config.kernel_balancing);
                        tracing::info!("config reloaded");
                    }
                    Err(err) => tracing::error!("reload failed, keeping the previous config: {err:#}"),
                }
                kernel.sync(&services);
                write_status(paths, &services);
            }
            _ = health_changed.notified() => {
                kernel.sync(&services);
                write_status(paths, &services);
            }
            _ = tokio::time::sleep(services.status_interval()) => {
                kernel.sync(&services);
                kernel.count(&services);
                write_status(paths, &services);
            }
        }
    }
    tracing::info!("stopping");
    kernel.stop();
    Ok(())
}

fn write_status(paths: &Paths, services: &Services) {
    if let Some(path) = &paths.status {
        if let Err(err) = status::write(path, &status::render(services)) {
            tracing::error!(path = %path.display(), %err, "cannot write the status");
        }
    }
}
