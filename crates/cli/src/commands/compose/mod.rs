//! `hyper compose`: Hyper's compose, kept in the cloud. The CLI reads the file ([`file`]) and
//! posts the project to hyperd's `/compose/*` as Hyper's own client does (`up`, `create`,
//! `start`, `stop`, `kill`, `rm`, `down`); `ps`, `logs`, `scale`, `run`, `pull`, `restart` and
//! `config` work client-side over the ordinary API ([`local`]), as Hyper's client did.

pub mod file;
mod local;

use std::path::PathBuf;

use clap::{Args, Subcommand};
use http_body_util::BodyExt;
use serde_json::{json, Value};

use super::Ctx;
use crate::transport::ApiRequest;
use crate::CliError;
use file::ComposeFile;

/// `-f` and `-p`, accepted before the subcommand (docker-compose) and after it (Hyper's CLI).
#[derive(Args, Debug, Default, Clone)]
pub struct ProjectOpts {
    /// Specify an alternate compose file (default: docker-compose.yml)
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Specify an alternate project name (default: directory name)
    #[arg(short = 'p', long = "project-name")]
    pub project: Option<String>,
}

#[derive(Args, Debug)]
pub struct ComposeArgs {
    #[command(flatten)]
    pub opts: ProjectOpts,
    #[command(subcommand)]
    pub cmd: ComposeCmd,
}

#[derive(Args, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    pub opts: ProjectOpts,
    /// Detached mode: run containers in the background, print new container names
    #[arg(short = 'd', long = "detach")]
    pub detach: bool,
    /// Recreate containers even if their configuration and image haven't changed
    #[arg(long = "force-recreate", conflicts_with = "no_recreate")]
    pub force_recreate: bool,
    /// If containers already exist, don't recreate them
    #[arg(long = "no-recreate")]
    pub no_recreate: bool,
    pub services: Vec<String>,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    pub opts: ProjectOpts,
    /// Recreate containers even if their configuration and image haven't changed
    #[arg(long = "force-recreate", conflicts_with = "no_recreate")]
    pub force_recreate: bool,
    /// If containers already exist, don't recreate them
    #[arg(long = "no-recreate")]
    pub no_recreate: bool,
    pub services: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ServicesArgs {
    #[command(flatten)]
    pub opts: ProjectOpts,
    pub services: Vec<String>,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    #[command(flatten)]
    pub opts: ProjectOpts,
    /// Specify a shutdown timeout in seconds
    #[arg(short = 't', long = "timeout", default_value_t = 10)]
    pub timeout: i64,
    pub services: Vec<String>,
}

#[derive(Args, Debug)]
pub struct KillArgs {
    #[command(flatten)]
    pub opts: ProjectOpts,
    /// SIGNAL to send to the container
    #[arg(short = 's', default_value = "KILL")]
    pub signal: String,
    pub services: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Specify an alternate project name (default: directory name)
    #[arg(short = 'p', long = "project-name")]
    pub project: Option<String>,
    /// Specify an alternate compose file (default: docker-compose.yml)
    #[arg(long = "file")]
    pub file: Option<PathBuf>,
    /// Don't ask to confirm removal
    #[arg(short = 'f', long = "force")]
    pub force: bool,
    /// Remove any anonymous volumes attached to containers
    #[arg(short = 'v')]
    pub volumes: bool,
    /// Stop the containers, if required, before removing
    #[arg(short = 's', long = "stop")]
    pub stop: bool,
    pub services: Vec<String>,
}

#[derive(Args, Debug)]
pub struct DownArgs {
    /// Specify an alternate project name (default: directory name)
    #[arg(short = 'p', long = "project-name")]
    pub project: Option<String>,
    /// Specify an alternate compose file (default: docker-compose.yml)
    #[arg(long = "file")]
    pub file: Option<PathBuf>,
    /// Remove images: 'all' removes all images used by any service, 'local' only images without a custom tag
    #[arg(long = "rmi", value_parser = ["all", "local"])]
    pub rmi: Option<String>,
    /// Remove named volumes declared in the `volumes` section of the Compose file and anonymous volumes attached to containers
    #[arg(short = 'v', long = "volumes")]
    pub volumes: bool,
    /// Remove containers for services not defined in the Compose file
    #[arg(long = "remove-orphans")]
    pub remove_orphans: bool,
}

#[derive(Args, Debug)]
pub struct PsArgs {
    #[command(flatten)]
    pub opts: ProjectOpts,
    /// Only display IDs
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    pub services: Vec<String>,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Specify an alternate project name (default: directory name)
    #[arg(short = 'p', long = "project-name")]
    pub project: Option<String>,
    /// Specify an alternate compose file (default: docker-compose.yml)
    #[arg(long = "file")]
    pub file: Option<PathBuf>,
    /// Follow log output
    #[arg(short = 'f', long = "follow")]
    pub follow: bool,
    /// Show timestamps
    #[arg(short = 't', long = "timestamps")]
    pub timestamps: bool,
    /// Number of lines to show from the end of the logs for each container
    #[arg(long = "tail")]
    pub tail: Option<String>,
    /// Produce monochrome output
    #[arg(long = "no-color")]
    pub no_color: bool,
    pub services: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ScaleArgs {
    #[command(flatten)]
    pub opts: ProjectOpts,
    /// Specify a shutdown timeout in seconds
    #[arg(short = 't', long = "timeout", default_value_t = 10)]
    pub timeout: i64,
    /// SERVICE=NUM
    #[arg(required = true)]
    pub scales: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub opts: ProjectOpts,
    /// Run container in the background and print its name
    #[arg(short = 'd', long = "detach")]
    pub detach: bool,
    /// Remove container after run
    #[arg(long = "rm")]
    pub rm: bool,
    /// Set an environment variable (can be used multiple times)
    #[arg(short = 'e')]
    pub env: Vec<String>,
    /// Assign a name to the container
    #[arg(long = "name")]
    pub name: Option<String>,
    /// Don't start linked services
    #[arg(long = "no-deps")]
    pub no_deps: bool,
    /// Disable pseudo-tty allocation
    #[arg(short = 'T')]
    pub no_tty: bool,
    pub service: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ConfigArgs {
    #[command(flatten)]
    pub opts: ProjectOpts,
    /// Only validate the configuration, don't print anything
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    /// Print the service names, one per line
    #[arg(long = "services")]
    pub services: bool,
    /// Print the volume names, one per line
    #[arg(long = "volumes")]
    pub volumes: bool,
}

#[derive(Subcommand, Debug)]
pub enum ComposeCmd {
    /// Create and start containers
    Up(UpArgs),
    /// Create services
    Create(CreateArgs),
    /// Start services
    Start(ServicesArgs),
    /// Stop services
    Stop(StopArgs),
    /// Restart services
    Restart(StopArgs),
    /// Kill containers
    Kill(KillArgs),
    /// Remove stopped containers
    Rm(RmArgs),
    /// Stop and remove containers, networks, images, and volumes
    Down(DownArgs),
    /// List containers
    Ps(PsArgs),
    /// Pull service images
    Pull(ServicesArgs),
    /// View output from containers
    Logs(LogsArgs),
    /// Set number of containers for a service
    Scale(ScaleArgs),
    /// Run a one-off command
    Run(RunArgs),
    /// Validate and view the Compose file
    Config(ConfigArgs),
}

/// What every subcommand resolves first: the file (when one is needed) and the project name.
pub(crate) struct Project {
    pub name: String,
    pub file: Option<ComposeFile>,
}

fn lookup(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

impl Project {
    /// `-p`, else `COMPOSE_PROJECT_NAME`, else the compose file's directory name.
    fn resolve(top: &ProjectOpts, sub: &ProjectOpts, need_file: bool) -> Result<Self, CliError> {
        let file_arg = sub.file.as_ref().or(top.file.as_ref());
        let path = ComposeFile::locate(file_arg.map(PathBuf::as_path));
        let file = match (&path, need_file) {
            (Ok(p), true) => {
                let f = ComposeFile::load(p, &lookup)?;
                let mut seen = Vec::new();
                for v in &f.unset {
                    if !seen.contains(v) {
                        eprintln!(
                            "WARNING: The {v} variable is not set. Defaulting to a blank string."
                        );
                        seen.push(v.clone());
                    }
                }
                Some(f)
            }
            (Err(_), true) => return Err(path.unwrap_err()),
            _ => None,
        };
        let raw = match sub.project.as_ref().or(top.project.as_ref()) {
            Some(p) => p.clone(),
            None => match std::env::var("COMPOSE_PROJECT_NAME")
                .ok()
                .filter(|p| !p.is_empty())
            {
                Some(p) => p,
                None => {
                    let p = path.unwrap_or_else(|_| PathBuf::from("docker-compose.yml"));
                    let abs = std::path::absolute(&p).unwrap_or(p);
                    abs.parent()
                        .and_then(|d| d.file_name())
                        .map(|n| n.to_string_lossy().to_string())
                        .unwrap_or_else(|| "default".into())
                }
            },
        };
        let name = file::normalize_project(&raw);
        if name.is_empty() {
            return Err(CliError::Msg(format!(
                "invalid project name {raw:?}: give -p NAME with letters or digits"
            )));
        }
        Ok(Project { name, file })
    }

    fn file(&self) -> &ComposeFile {
        self.file.as_ref().expect("the command loaded the file")
    }
}

/// The user's registry credentials, as Hyper's client sends them in `auths` (decoded).
fn auths(ctx: &Ctx) -> Value {
    use base64::Engine;
    let mut out = serde_json::Map::new();
    for (server, a) in &ctx.file.auths {
        let Some(decoded) = base64::engine::general_purpose::STANDARD
            .decode(&a.auth)
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
        else {
            continue;
        };
        let Some((user, password)) = decoded.split_once(':') else {
            continue;
        };
        out.insert(
            server.clone(),
            json!({"username": user, "password": password, "email": "", "serveraddress": server}),
        );
    }
    Value::Object(out)
}

/// A `/compose/*` request with Hyper's query: `project`, and `services` joined by `}{`.
fn request(path: &str, project: &str, services: &[String]) -> ApiRequest {
    let mut r = ApiRequest::post(format!("/compose/{path}")).query("project", project);
    if !services.is_empty() {
        r = r.query("services", services.join("}{"));
    }
    r
}

/// Prints a compose jsonmessage stream the way docker-compose reports its work; the
/// stream's error, if any, is the command's.
async fn follow(resp: hyper::Response<hyper::body::Incoming>) -> Result<(), CliError> {
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    let mut failure = None;
    let mut handle = |line: &[u8]| {
        let line = String::from_utf8_lossy(line);
        let line = line.trim();
        if line.is_empty() {
            return;
        }
        let v: Value = serde_json::from_str(line).unwrap_or_else(|_| json!({"status": line}));
        if let Some(e) = v["errorDetail"]["message"].as_str().or(v["error"].as_str()) {
            failure = Some(e.to_string());
            return;
        }
        let id = v["id"].as_str().unwrap_or("");
        let status = v["status"].as_str().unwrap_or("");
        let text = match status {
            "Network created" => format!("Creating network \"{id}\" with the default driver"),
            "Volume created" => format!("Creating volume \"{id}\" with hyper driver"),
            "Network removed" => format!("Removing network {id}"),
            "Volume removed" => format!("Removing volume {id}"),
            "Up-to-date" => format!("{id} is up-to-date"),
            "Created" => format!("Creating {id} ... done"),
            "Recreated" => format!("Recreating {id} ... done"),
            "Started" => format!("Starting {id} ... done"),
            "Stopped" => format!("Stopping {id} ... done"),
            "Killed" => format!("Killing {id} ... done"),
            "Removed" => format!("Removing {id} ... done"),
            "Creating" | "Recreating" | "Starting" | "Stopping" | "Killing" | "Removing" => return,
            "Pulling" => format!("Pulling {id} ..."),
            s if id.is_empty() => s.to_string(),
            s => format!("{id}: {s}"),
        };
        eprintln!("{text}");
    };
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(crate::transport::ApiError::from)?;
        if let Some(data) = frame.data_ref() {
            buf.extend_from_slice(data);
            while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                handle(&line);
            }
        }
    }
    handle(&buf);
    match failure {
        Some(e) => Err(CliError::Msg(format!("ERROR: {e}"))),
        None => Ok(()),
    }
}

async fn post_and_follow(ctx: &Ctx, req: ApiRequest) -> Result<(), CliError> {
    let client = ctx.client()?;
    let resp = client.send(req).await?;
    follow(resp).await
}

/// `fip: auto` as Hyper's client resolves it: free floating IPs of the tenant first, then
/// newly allocated ones.
async fn resolve_auto_fips(ctx: &Ctx, f: &mut ComposeFile) -> Result<(), CliError> {
    let auto: Vec<String> = f
        .services
        .iter()
        .filter(|(_, s)| s["fip"] == "auto")
        .map(|(n, _)| n.clone())
        .collect();
    if auto.is_empty() {
        return Ok(());
    }
    let client = ctx.client()?;
    let list: Value = client.json(ApiRequest::get("/fips")).await?;
    let mut free: Vec<String> = list
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| {
            f["container"].as_str().unwrap_or("").is_empty()
                && f["service"].as_str().unwrap_or("").is_empty()
        })
        .filter_map(|f| f["fip"].as_str().map(String::from))
        .collect();
    if free.len() < auto.len() {
        let n = auto.len() - free.len();
        eprintln!("Allocating {n} floating IP(s) for fip: auto");
        let new: Vec<String> = client
            .json(ApiRequest::post("/fips/allocate").query("count", n))
            .await?;
        free.extend(new);
    }
    for (svc, ip) in auto.iter().zip(free) {
        f.services.get_mut(svc).expect("listed")["fip"] = json!(ip);
    }
    Ok(())
}

async fn up(
    ctx: &Ctx,
    top: &ProjectOpts,
    a: UpArgs,
    start: bool,
    detach: bool,
) -> Result<i32, CliError> {
    let mut p = Project::resolve(top, &a.opts, true)?;
    for s in &a.services {
        if !p.file().services.contains_key(s) {
            return Err(CliError::Msg(format!("ERROR: No such service: {s}")));
        }
    }
    if start {
        resolve_auto_fips(ctx, p.file.as_mut().expect("loaded")).await?;
    }
    let body = p.file().wrapper(auths(ctx));
    let mut req = request(if start { "up" } else { "create" }, &p.name, &a.services).json(&body);
    if a.force_recreate {
        req = req.query("forcerecreate", "true");
    }
    if a.no_recreate {
        req = req.query("norecreate", "true");
    }
    post_and_follow(ctx, req).await?;
    if start && !detach {
        return local::attach_to_project(ctx, &p.name, &a.services).await;
    }
    Ok(0)
}

pub async fn compose_cmd(ctx: &Ctx, a: ComposeArgs) -> Result<i32, CliError> {
    let top = a.opts;
    match a.cmd {
        ComposeCmd::Up(u) => {
            let d = u.detach;
            up(ctx, &top, u, true, d).await
        }
        ComposeCmd::Create(c) => {
            let u = UpArgs {
                opts: c.opts,
                detach: true,
                force_recreate: c.force_recreate,
                no_recreate: c.no_recreate,
                services: c.services,
            };
            up(ctx, &top, u, false, true).await
        }
        ComposeCmd::Start(s) => {
            let p = Project::resolve(&top, &s.opts, false)?;
            post_and_follow(ctx, request("start", &p.name, &s.services)).await?;
            Ok(0)
        }
        ComposeCmd::Stop(s) => {
            let p = Project::resolve(&top, &s.opts, false)?;
            post_and_follow(
                ctx,
                request("stop", &p.name, &s.services).query("seconds", s.timeout),
            )
            .await?;
            Ok(0)
        }
        ComposeCmd::Restart(s) => {
            let p = Project::resolve(&top, &s.opts, false)?;
            post_and_follow(
                ctx,
                request("stop", &p.name, &s.services).query("seconds", s.timeout),
            )
            .await?;
            post_and_follow(ctx, request("start", &p.name, &s.services)).await?;
            Ok(0)
        }
        ComposeCmd::Kill(k) => {
            let p = Project::resolve(&top, &k.opts, false)?;
            post_and_follow(
                ctx,
                request("kill", &p.name, &k.services).query("signal", &k.signal),
            )
            .await?;
            Ok(0)
        }
        ComposeCmd::Rm(r) => {
            let sub = ProjectOpts {
                file: r.file.clone(),
                project: r.project.clone(),
            };
            let p = Project::resolve(&top, &sub, false)?;
            if r.stop {
                post_and_follow(
                    ctx,
                    request("stop", &p.name, &r.services).query("seconds", 10),
                )
                .await?;
            }
            if !r.force && !local::confirm_rm(ctx, &p.name, &r.services).await? {
                return Ok(0);
            }
            let mut req = request("rm", &p.name, &r.services);
            if r.volumes {
                req = req.query("rmvol", "true");
            }
            post_and_follow(ctx, req).await?;
            Ok(0)
        }
        ComposeCmd::Down(d) => {
            let sub = ProjectOpts {
                file: d.file.clone(),
                project: d.project.clone(),
            };
            let p = Project::resolve(&top, &sub, false)?;
            let mut req = request("down", &p.name, &[]);
            if let Some(rmi) = &d.rmi {
                req = req.query("rmi", rmi);
            }
            if d.volumes {
                req = req.query("rmvol", "true");
            }
            if d.remove_orphans {
                req = req.query("rmorphans", "true");
            }
            post_and_follow(ctx, req).await?;
            Ok(0)
        }
        ComposeCmd::Ps(a) => {
            let p = Project::resolve(&top, &a.opts, false)?;
            local::ps(ctx, &p.name, &a.services, a.quiet).await
        }
        ComposeCmd::Pull(a) => {
            let p = Project::resolve(&top, &a.opts, true)?;
            local::pull(ctx, p.file(), &a.services).await
        }
        ComposeCmd::Logs(a) => {
            let sub = ProjectOpts {
                file: a.file.clone(),
                project: a.project.clone(),
            };
            let p = Project::resolve(&top, &sub, false)?;
            local::logs(ctx, &p.name, &a).await
        }
        ComposeCmd::Scale(a) => {
            let p = Project::resolve(&top, &a.opts, false)?;
            local::scale(ctx, &p.name, &a.scales, a.timeout).await
        }
        ComposeCmd::Run(a) => {
            let p = Project::resolve(&top, &a.opts, true)?;
            local::run(ctx, &p, a).await
        }
        ComposeCmd::Config(a) => {
            let p = Project::resolve(&top, &a.opts, true)?;
            local::config(p.file(), &a)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{Cli, Cmd};

    fn compose(args: &[&str]) -> ComposeArgs {
        let mut a = vec!["hyper", "compose"];
        a.extend_from_slice(args);
        match Cli::try_parse_from(a).unwrap().cmd {
            Cmd::Compose(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn project_flags_before_and_after_the_subcommand() {
        let c = compose(&["-f", "a.yml", "-p", "shop", "up", "-d", "web"]);
        assert_eq!(c.opts.file.as_deref(), Some(std::path::Path::new("a.yml")));
        let ComposeCmd::Up(u) = c.cmd else { panic!() };
        assert!(u.detach);
        assert_eq!(u.services, ["web"]);
        // Hyper's CLI takes them after the subcommand.
        let c = compose(&["up", "-f", "b.yml", "-p", "Cap_Demo.2", "-d"]);
        let ComposeCmd::Up(u) = c.cmd else { panic!() };
        assert_eq!(u.opts.project.as_deref(), Some("Cap_Demo.2"));
        // logs -f follows; rm -f forces.
        let ComposeCmd::Logs(l) = compose(&["logs", "-f", "web"]).cmd else {
            panic!()
        };
        assert!(l.follow);
        let ComposeCmd::Rm(r) = compose(&["rm", "-f", "-v"]).cmd else {
            panic!()
        };
        assert!(r.force && r.volumes);
        assert!(Cli::try_parse_from([
            "hyper",
            "compose",
            "up",
            "--force-recreate",
            "--no-recreate"
        ])
        .is_err());
        assert!(Cli::try_parse_from(["hyper", "compose", "down", "--rmi", "some"]).is_err());
        let ComposeCmd::Run(r) = compose(&["run", "--rm", "web", "sh", "-c", "echo hi"]).cmd else {
            panic!()
        };
        assert_eq!(r.command, ["sh", "-c", "echo hi"]);
    }

    #[test]
    fn pull_takes_several_images() {
        let Cmd::Pull(p) = Cli::try_parse_from(["hyper", "pull", "wordpress", "mysql"])
            .unwrap()
            .cmd
        else {
            panic!()
        };
        assert_eq!(p.images, ["wordpress", "mysql"]);
        assert!(Cli::try_parse_from(["hyper", "pull"]).is_err());
    }

    #[test]
    fn services_joined_as_hypers_client_joins_them() {
        let r = request("up", "shop", &["db".into(), "web".into()]);
        assert_eq!(
            r.path_and_query_with("/v1.23"),
            "/v1.23/compose/up?project=shop&services=db%7D%7Bweb"
        );
    }
}
