//! `exec`: create an exec instance, start it hijacked (or detached), then report its exit code.

use clap::Args;
use serde_json::{json, Value};

use super::Ctx;
use crate::stream::{self, RawTerminal};
use crate::transport::ApiRequest;
use crate::CliError;

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Keep STDIN open even if not attached
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Detached mode: run command in the background
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Set environment variables
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Give extended privileges to the command
    #[arg(long)]
    pub privileged: bool,
    /// Override the key sequence for detaching a container
    #[arg(long = "detach-keys")]
    pub detach_keys: Option<String>,
    pub container: String,
    #[arg(
        required = true,
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<String>,
}

pub fn exec_body(a: &ExecArgs) -> Value {
    let attach = !a.detach;
    let mut body = json!({
        "AttachStdin": a.interactive && attach,
        "AttachStdout": attach,
        "AttachStderr": attach,
        "Tty": a.tty,
        "Privileged": a.privileged,
        "Cmd": a.command,
    });
    let b = body.as_object_mut().expect("object");
    if !a.env.is_empty() {
        b.insert("Env".into(), json!(a.env));
    }
    if let Some(w) = &a.workdir {
        b.insert("WorkingDir".into(), json!(w));
    }
    if let Some(u) = &a.user {
        b.insert("User".into(), json!(u));
    }
    body
}

pub async fn exec(ctx: &Ctx, a: ExecArgs) -> Result<i32, CliError> {
    let client = ctx.client()?;
    let keys = crate::detach::keys(a.detach_keys.as_deref(), &ctx.file).map_err(CliError::Msg)?;
    let mut body = exec_body(&a);
    body["DetachKeys"] = json!(keys);
    let created: Value = client
        .json(ApiRequest::post(format!("/containers/{}/exec", a.container)).json(&body))
        .await?;
    let id = created["Id"]
        .as_str()
        .ok_or_else(|| CliError::Msg("the daemon returned no exec ID".into()))?
        .to_owned();
    let start = ApiRequest::post(format!("/exec/{id}/start"));
    if a.detach {
        client
            .call(start.json(&json!({"Detach": true, "Tty": a.tty})))
            .await?;
        return Ok(0);
    }
    let conn = client
        .hijack(start.json(&json!({"Detach": false, "Tty": a.tty})))
        .await?;
    let raw = if a.tty && a.interactive {
        RawTerminal::enable()?
    } else {
        None
    };
    let resize = (a.tty && std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .then(|| stream::monitor_tty_size(client.clone(), format!("/exec/{id}/resize")));
    let detach = (a.tty && a.interactive)
        .then(|| crate::detach::sequence(&keys))
        .transpose()
        .map_err(CliError::Msg)?;
    let result = stream::pump(conn, a.tty, a.interactive, detach).await;
    drop(raw);
    if let Some(r) = resize {
        r.abort();
    }
    if result? == stream::Ended::Detached {
        return Ok(0);
    }
    let info: Value = client
        .json(ApiRequest::get(format!("/exec/{id}/json")))
        .await?;
    Ok(info["ExitCode"].as_i64().map_or(0, |c| c as i32))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: ExecArgs,
    }

    #[test]
    fn body_from_flags() {
        let t = T::try_parse_from([
            "exec", "-it", "-e", "A=1", "-w", "/w", "-u", "app", "c1", "sh", "-c", "ls -l",
        ])
        .unwrap();
        assert_eq!(t.a.container, "c1");
        assert_eq!(
            exec_body(&t.a),
            json!({"AttachStdin": true, "AttachStdout": true, "AttachStderr": true, "Tty": true, "Privileged": false,
                   "Cmd": ["sh", "-c", "ls -l"], "Env": ["A=1"], "WorkingDir": "/w", "User": "app"})
        );
        let t = T::try_parse_from(["exec", "-d", "-i", "c1", "true"]).unwrap();
        let b = exec_body(&t.a);
        assert_eq!(
            (b["AttachStdin"].clone(), b["AttachStdout"].clone()),
            (json!(false), json!(false))
        );
    }
}
