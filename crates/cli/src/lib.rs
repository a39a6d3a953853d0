//! The `hyper` CLI: Docker's commands and flags against a Hyper cloud. `main` parses the
//! command line, loads the configuration, runs one command and returns the exit status.
//!
//! Layout: `transport` (connectors, signing, hijack), `stream` (demux, stdin pump, raw tty),
//! `format` (Go-template subset), `table` (tabwriter, human units), `config` (file + env),
//! `commands/*` (one file per command group).
//!
//! Choices worth knowing:
//! - Exit codes follow docker: 125 when `run`/`create` is refused (message `hyper: ...`),
//!   126/127 for start failures that say "permission denied" / "executable file not found",
//!   otherwise the container's code; 1 for other errors; clap usage errors exit 125.
//! - `tcp://host` without a port means port 6443 (`transport::DEFAULT_TCP_PORT`).
//! - `update --protection/--sg-add/--sg-rm` send Hyper fields next to Docker's in the update
//!   body: `"Protection": bool`, `"SecurityGroups": {"Add": [..], "Remove": [..]}`.
//! - `load` sends the tar with `?file=true` (Hyper's marker; Docker servers ignore it).
//! - `sg create/update` send the user's YAML file unchanged (`Content-Type: application/yaml`)
//!   after checking it locally; `service create` sends only the fields whose flags were given
//!   (plus Name, Image, Replicas, ServicePort), leaving the defaults to the server.
//! - `run -v SRC:/path` with a local path (absolute, or `./`/`../` when it exists here) or a
//!   git/http(s) URL does what Hyper's client did: a new volume labelled `autoremove=true`,
//!   filled through `/volumes/initialize` (local sources uploaded as a tar) and
//!   `/volumes/uploadfinish`, then bound as `<volume>:/path`; deleted if the create fails.

pub mod commands;
pub mod config;
pub mod detach;
pub mod format;
pub mod stream;
pub mod table;
mod tls;
pub mod transport;

use clap::{Parser, Subcommand};

use crate::commands::{
    commit, compose, config as config_cmd, containers, cp, cron, events, exec, export, fip, func,
    image_transfer, images, network, run, service, sg, snapshot, system, usage, volume, Ctx,
};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Api(#[from] transport::ApiError),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Stream(#[from] stream::StreamError),
    #[error(transparent)]
    Format(#[from] format::FormatError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Msg(String),
    /// `run`/`create` failures: printed as `hyper: <error>.` with docker's exit code.
    #[error("{source}")]
    Run {
        code: i32,
        #[source]
        source: Box<CliError>,
    },
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Run { code, .. } => *code,
            _ => 1,
        }
    }
}

/// The error and its causes on one line, `: `-separated (messages never repeat their cause).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        // Transparent wrappers report the same message as their source: skip duplicates.
        let m = c.to_string();
        if !s.ends_with(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

#[derive(Parser, Debug)]
#[command(
    name = "hyper",
    version,
    about = "A container cloud with the Docker API: every container in its own microVM"
)]
pub struct Cli {
    /// Daemon endpoint (unix:///path or tcp://host:port); default $HYPER_HOST, the config file, or unix:///var/run/hyper.sock
    #[arg(short = 'H', long = "host", global = true)]
    pub host: Option<String>,
    /// Region to sign requests for
    #[arg(short = 'R', long = "region", global = true)]
    pub region: Option<String>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Create and run a new container from an image
    #[command(disable_help_flag = true)]
    Run(run::RunArgs),
    /// Create a new container
    #[command(disable_help_flag = true)]
    Create(run::CreateArgs),
    /// Start one or more stopped containers
    Start(containers::StartArgs),
    /// Stop one or more running containers
    Stop(containers::StopArgs),
    /// Restart one or more containers
    Restart(containers::StopArgs),
    /// Kill one or more running containers
    Kill(containers::KillArgs),
    /// Pause all processes within one or more containers (their VMs stop)
    Pause(containers::PauseArgs),
    /// Unpause all processes within one or more containers
    Unpause(containers::PauseArgs),
    /// Remove one or more containers
    Rm(containers::RmArgs),
    /// List containers
    #[command(alias = "ls")]
    Ps(containers::PsArgs),
    /// Return low-level information on containers or images
    Inspect(containers::InspectArgs),
    /// Fetch the logs of a container
    Logs(containers::LogsArgs),
    /// Execute a command in a running container
    Exec(exec::ExecArgs),
    /// Attach local standard input, output, and error streams to a running container
    Attach(containers::AttachArgs),
    /// Block until one or more containers stop, then print their exit codes
    Wait(containers::NamesArgs),
    /// Rename a container
    Rename(containers::RenameArgs),
    /// Update configuration of one or more containers
    Update(containers::UpdateArgs),
    /// Display the running processes of a container
    Top(containers::TopArgs),
    /// Copy files/folders between a container and the local filesystem
    Cp(cp::CpArgs),
    /// Create a new image from a container's changes
    Commit(commit::CommitArgs),
    /// Export a container's filesystem as a tar archive
    Export(export::ExportArgs),
    /// Inspect changes to files or directories on a container's filesystem
    Diff(export::DiffArgs),
    /// Display a live stream of container(s) resource usage statistics
    Stats(containers::StatsArgs),
    /// List port mappings or a specific mapping for the container
    Port(containers::PortArgs),
    /// List images
    Images(images::ImagesArgs),
    /// Manage images
    #[command(subcommand)]
    Image(images::ImageCmd),
    /// Remove one or more images
    Rmi(images::RmiArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(images::TagArgs),
    /// Load an image from a tar archive, a URL or STDIN
    Load(images::LoadArgs),
    /// Import the contents from a tarball to create a filesystem image
    Import(commit::ImportArgs),
    /// Show the history of an image
    History(images::HistoryArgs),
    /// Download an image from a registry
    Pull(images::PullArgs),
    /// Upload an image to a registry
    Push(image_transfer::PushArgs),
    /// Save one or more images to a tar archive (streamed to STDOUT by default)
    Save(image_transfer::SaveArgs),
    /// Display system-wide information
    Info(system::InfoArgs),
    /// Show the Hyper version information
    Version(system::VersionArgs),
    /// Log in to a registry
    Login(system::LoginArgs),
    /// Log out from a registry
    Logout(system::LogoutArgs),
    /// Configure access keys for a Hyper cloud endpoint
    Config(config_cmd::ConfigArgs),
    /// Show what the account ran and what it costs
    Usage(usage::UsageArgs),
    /// Get real time events from the server
    Events(events::EventsArgs),
    /// Manage networks
    #[command(subcommand)]
    Network(network::NetworkCmd),
    /// Manage floating IPs
    #[command(subcommand)]
    Fip(fip::FipCmd),
    /// Manage security groups
    #[command(subcommand)]
    Sg(sg::SgCmd),
    /// Manage services (load-balanced groups of containers)
    #[command(subcommand)]
    Service(service::ServiceCmd),
    /// Manage cron jobs (containers run on a schedule)
    #[command(subcommand)]
    Cron(cron::CronCmd),
    /// Manage volumes
    #[command(subcommand)]
    Volume(volume::VolumeCmd),
    /// Manage volume snapshots
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCmd),
    /// Manage serverless functions
    #[command(subcommand)]
    Func(func::FuncCmd),
    /// Define and run multi-container applications, kept in the cloud
    Compose(compose::ComposeArgs),
}

async fn dispatch(ctx: &Ctx, cmd: Cmd) -> Result<i32, CliError> {
    match cmd {
        Cmd::Run(a) => run::run(ctx, a).await,
        Cmd::Create(a) => run::create(ctx, a).await,
        Cmd::Start(a) => containers::start(ctx, a).await,
        Cmd::Stop(a) => containers::stop(ctx, a, "stop").await,
        Cmd::Restart(a) => containers::stop(ctx, a, "restart").await,
        Cmd::Kill(a) => containers::kill(ctx, a).await,
        Cmd::Pause(a) => containers::pause(ctx, a, "pause").await,
        Cmd::Unpause(a) => containers::pause(ctx, a, "unpause").await,
        Cmd::Rm(a) => containers::rm(ctx, a).await,
        Cmd::Ps(a) => containers::ps(ctx, a).await,
        Cmd::Inspect(a) => containers::inspect(ctx, a).await,
        Cmd::Logs(a) => containers::logs(ctx, a).await,
        Cmd::Exec(a) => exec::exec(ctx, a).await,
        Cmd::Attach(a) => containers::attach(ctx, a).await,
        Cmd::Wait(a) => containers::wait(ctx, a).await,
        Cmd::Rename(a) => containers::rename(ctx, a).await,
        Cmd::Update(a) => containers::update(ctx, a).await,
        Cmd::Top(a) => containers::top(ctx, a).await,
        Cmd::Cp(a) => cp::cp(ctx, a).await,
        Cmd::Commit(a) => commit::commit(ctx, a).await,
        Cmd::Export(a) => export::export(ctx, a).await,
        Cmd::Diff(a) => export::diff(ctx, a).await,
        Cmd::Stats(a) => containers::stats(ctx, a).await,
        Cmd::Port(a) => containers::port(ctx, a).await,
        Cmd::Images(a) => images::images(ctx, a).await,
        Cmd::Image(c) => images::image_cmd(ctx, c).await,
        Cmd::Rmi(a) => images::rmi(ctx, a).await,
        Cmd::Tag(a) => images::tag(ctx, a).await,
        Cmd::Load(a) => images::load(ctx, a).await,
        Cmd::Import(a) => commit::import(ctx, a).await,
        Cmd::History(a) => images::history(ctx, a).await,
        Cmd::Pull(a) => images::pull(ctx, a).await,
        Cmd::Push(a) => image_transfer::push(ctx, a).await,
        Cmd::Save(a) => image_transfer::save(ctx, a).await,
        Cmd::Info(a) => system::info(ctx, a).await,
        Cmd::Version(a) => system::version(ctx, a).await,
        Cmd::Login(a) => system::login(ctx, a).await,
        Cmd::Logout(a) => system::logout(ctx, a).await,
        Cmd::Config(a) => config_cmd::config(ctx, a).await,
        Cmd::Usage(a) => usage::usage(ctx, a).await,
        Cmd::Events(a) => events::events(ctx, a).await,
        Cmd::Network(c) => network::network_cmd(ctx, c).await,
        Cmd::Fip(c) => fip::fip_cmd(ctx, c).await,
        Cmd::Sg(c) => sg::sg_cmd(ctx, c).await,
        Cmd::Service(c) => service::service_cmd(ctx, c).await,
        Cmd::Cron(c) => cron::cron_cmd(ctx, c).await,
        Cmd::Volume(c) => volume::volume_cmd(ctx, c).await,
        Cmd::Snapshot(c) => snapshot::snapshot_cmd(ctx, c).await,
        Cmd::Func(c) => func::func_cmd(ctx, c).await,
        Cmd::Compose(a) => compose::compose_cmd(ctx, a).await,
    }
}

/// Parses the command line, runs the command, prints any error and returns the exit status.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            // docker exits 125 on flag errors; help and --version are not errors.
            return if e.use_stderr() { 125 } else { 0 };
        }
    };
    let env = config::Env::from_process();
    let file = match env.config_dir().and_then(|d| config::ConfigFile::load(&d)) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("WARNING: {}", error_chain(&e));
            config::ConfigFile::default()
        }
    };
    let endpoint = config::select_endpoint(cli.host.as_deref(), &env, &file);
    let ctx = Ctx::new(env, file, endpoint, cli.region);
    let is_run = matches!(cli.cmd, Cmd::Run(_) | Cmd::Create(_));
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hyper: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let result = rt.block_on(dispatch(&ctx, cli.cmd));
    // Do not wait for a blocked stdin reader on the way out.
    rt.shutdown_background();
    match result {
        Ok(code) => code,
        Err(e) => {
            let msg = error_chain(&e);
            match &e {
                CliError::Run { .. } if is_run => {
                    let msg = msg.trim_end_matches('.');
                    eprintln!("hyper: {msg}.");
                    if e.exit_code() == 125 {
                        eprintln!("See 'hyper run --help'.");
                    }
                }
                _ => eprintln!("{msg}"),
            }
            e.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn error_chain_skips_transparent_duplicates() {
        let e = CliError::Run {
            code: 125,
            source: Box::new(CliError::Api(transport::ApiError::Daemon {
                status: http::StatusCode::CONFLICT,
                message: "name in use".into(),
            })),
        };
        assert_eq!(error_chain(&e), "Error response from daemon: name in use");
        assert_eq!(e.exit_code(), 125);
    }
}
