//! info, version, login, logout.

use std::io::{BufRead, IsTerminal, Read, Write};

use base64::Engine;
use clap::Args;
use serde_json::{json, Value};

use super::Ctx;
use crate::commands::images::DOCKER_HUB;
use crate::config::RegistryAuth;
use crate::format::{display, Template};
use crate::table::bytes_size;
use crate::transport::{ApiRequest, API_PREFIX};
use crate::CliError;

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Format output using a Go template
    #[arg(short = 'f', long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct VersionArgs {
    /// Format output using a Go template
    #[arg(short = 'f', long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Username
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// Password
    #[arg(short = 'p', long)]
    pub password: Option<String>,
    /// Take the password from stdin
    #[arg(long = "password-stdin")]
    pub password_stdin: bool,
    /// Registry server (default: Docker Hub)
    pub server: Option<String>,
}

#[derive(Args, Debug)]
pub struct LogoutArgs {
    pub server: Option<String>,
}

fn field(v: &Value, k: &str) -> String {
    match &v[k] {
        Value::Null => String::new(),
        other => display(other),
    }
}

/// `docker info`'s layout for the fields a Hyper daemon reports.
pub fn render_info(v: &Value) -> String {
    let mut s = String::new();
    let mut line = |k: &str, val: String| s.push_str(&format!("{k}: {val}\n"));
    line("Containers", field(v, "Containers"));
    line(" Running", field(v, "ContainersRunning"));
    line(" Paused", field(v, "ContainersPaused"));
    line(" Stopped", field(v, "ContainersStopped"));
    line("Images", field(v, "Images"));
    for (label, key) in [
        ("Server Version", "ServerVersion"),
        ("Storage Driver", "Driver"),
        ("Kernel Version", "KernelVersion"),
        ("Operating System", "OperatingSystem"),
        ("OSType", "OSType"),
        ("Architecture", "Architecture"),
        ("CPUs", "NCPU"),
    ] {
        if !v[key].is_null() {
            line(label, field(v, key));
        }
    }
    if let Some(m) = v["MemTotal"].as_f64() {
        line("Total Memory", bytes_size(m));
    }
    for (label, key) in [
        ("Name", "Name"),
        ("ID", "ID"),
        ("Tenant", "Tenant"),
        ("Templates", "Templates"),
        ("Standby VMs", "StandbyVMs"),
    ] {
        if !v[key].is_null() {
            line(label, field(v, key));
        }
    }
    let fleet = &v["Fleet"];
    if let Some(ready) = fleet["NodesReady"].as_u64() {
        let draining = match fleet["NodesDraining"].as_u64().unwrap_or(0) {
            0 => String::new(),
            n => format!(", {n} draining"),
        };
        let memory = bytes_size(fleet["MemoryBytes"].as_f64().unwrap_or(0.0));
        let free = bytes_size(fleet["MemoryFreeBytes"].as_f64().unwrap_or(0.0));
        line(
            "Fleet",
            format!(
                "{ready} of {} nodes ready{draining}: {} CPUs, {memory} ({free} free)",
                fleet["Nodes"].as_u64().unwrap_or(0),
                fleet["Cpus"].as_u64().unwrap_or(0)
            ),
        );
    }
    s
}

pub async fn info(ctx: &Ctx, a: InfoArgs) -> Result<i32, CliError> {
    let client = ctx.client()?;
    let v: Value = client.json(ApiRequest::get("/info")).await?;
    match a.format {
        Some(f) => println!("{}", Template::parse(&f)?.render(&v)?),
        None => print!("{}", render_info(&v)),
    }
    Ok(0)
}

/// Docker names architectures as Go does.
fn go_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

fn client_version() -> Value {
    json!({
        "Version": env!("CARGO_PKG_VERSION"),
        "ApiVersion": API_PREFIX.trim_start_matches("/v"),
        "Os": std::env::consts::OS,
        "Arch": go_arch(std::env::consts::ARCH),
    })
}

pub async fn version(ctx: &Ctx, a: VersionArgs) -> Result<i32, CliError> {
    let client = ctx.client()?;
    let server = client.json::<Value>(ApiRequest::get("/version")).await;
    let all = json!({"Client": client_version(), "Server": server.as_ref().ok()});
    if let Some(f) = a.format {
        println!("{}", Template::parse(&f)?.render(&all)?);
    } else {
        let c = &all["Client"];
        println!("Client:");
        println!(" Version:           {}", field(c, "Version"));
        println!(" API version:       {}", field(c, "ApiVersion"));
        println!(
            " OS/Arch:           {}/{}",
            field(c, "Os"),
            field(c, "Arch")
        );
        if let Ok(s) = &server {
            println!("\nServer:");
            println!(" Version:           {}", field(s, "Version"));
            println!(
                " API version:       {} (minimum version {})",
                field(s, "ApiVersion"),
                field(s, "MinAPIVersion")
            );
            println!(
                " OS/Arch:           {}/{}",
                field(s, "Os"),
                field(s, "Arch")
            );
            if !s["KernelVersion"].is_null() {
                println!(" Kernel Version:    {}", field(s, "KernelVersion"));
            }
        }
    }
    server?;
    Ok(0)
}

pub(crate) fn prompt(label: &str) -> Result<String, CliError> {
    eprint!("{label}");
    std::io::stderr().flush()?;
    let mut s = String::new();
    std::io::stdin().lock().read_line(&mut s)?;
    Ok(s.trim_end_matches(['\r', '\n']).to_owned())
}

/// Docker's y/N question; anything but y/yes is no.
pub(crate) fn confirm(question: &str) -> Result<bool, CliError> {
    let answer = prompt(question)?;
    Ok(matches!(answer.trim().to_lowercase().as_str(), "y" | "yes"))
}

/// Reads a line with echo off when stdin is a terminal.
pub fn prompt_secret(label: &str) -> Result<String, CliError> {
    use nix::sys::termios::{self, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return prompt(label);
    }
    let saved = termios::tcgetattr(&stdin).map_err(std::io::Error::from)?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    termios::tcsetattr(&stdin, SetArg::TCSANOW, &quiet).map_err(std::io::Error::from)?;
    let r = prompt(label);
    let _ = termios::tcsetattr(&stdin, SetArg::TCSANOW, &saved);
    eprintln!();
    r
}

pub async fn login(ctx: &Ctx, a: LoginArgs) -> Result<i32, CliError> {
    let server = a.server.clone().unwrap_or_else(|| DOCKER_HUB.to_owned());
    let username = match a.username {
        Some(u) => u,
        None => prompt("Username: ")?,
    };
    let password = match (a.password, a.password_stdin) {
        (Some(_), true) => {
            return Err(CliError::Msg(
                "--password and --password-stdin are mutually exclusive".into(),
            ))
        }
        (Some(p), false) => {
            eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
            p
        }
        (None, true) => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s.trim_end_matches(['\r', '\n']).to_owned()
        }
        (None, false) => prompt_secret("Password: ")?,
    };
    if username.is_empty() || password.is_empty() {
        return Err(CliError::Msg(
            "Error: Username and password are required".into(),
        ));
    }
    let client = ctx.client()?;
    let body = json!({"username": username, "password": password, "serveraddress": server});
    match client.call(ApiRequest::post("/auth").json(&body)).await {
        Ok(_) => {}
        // A daemon without /auth cannot check the password: keep it, pull will tell.
        Err(e) if matches!(e.status().map(|s| s.as_u16()), Some(404 | 501)) => {
            eprintln!(
                "WARNING: the daemon could not verify these credentials ({})",
                crate::error_chain(&e)
            );
        }
        Err(e) => return Err(e.into()),
    }
    let dir = ctx.config_dir()?;
    let mut file = crate::config::ConfigFile::load(&dir)?;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    file.auths.insert(server, RegistryAuth { auth });
    file.save(&dir)?;
    println!("Login Succeeded");
    Ok(0)
}

pub async fn logout(ctx: &Ctx, a: LogoutArgs) -> Result<i32, CliError> {
    let server = a.server.unwrap_or_else(|| DOCKER_HUB.to_owned());
    let dir = ctx.config_dir()?;
    let mut file = crate::config::ConfigFile::load(&dir)?;
    if file.auths.remove(&server).is_some() {
        println!("Removing login credentials for {server}");
        file.save(&dir)?;
    } else {
        println!("Not logged in to {server}");
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_layout() {
        let v = json!({"Containers": 3, "ContainersRunning": 1, "ContainersPaused": 0, "ContainersStopped": 2,
                       "Images": 5, "ServerVersion": "0.1.0", "NCPU": 2, "MemTotal": 1073741824u64, "Name": "h"});
        let s = render_info(&v);
        assert!(s.starts_with("Containers: 3\n Running: 1\n Paused: 0\n Stopped: 2\nImages: 5\nServer Version: 0.1.0\n"));
        assert!(s.contains("CPUs: 2\nTotal Memory: 1GiB\nName: h\n"));
    }
}
