//! `cron create|ls|inspect|history|rm`: Hyper's cron jobs (`/crons` endpoints). `create` takes
//! Hyper's CLI's flags and sends Hyper's `Cron` body (every key, the container's options as
//! `Config`/`HostConfig`/`NetConfig`, `Tty` forced on as Hyper did), plus our extensions
//! `--concurrency` and `--missed`.

use std::path::PathBuf;

use clap::{ArgAction, Args, Subcommand};
use serde_json::{json, Value};

use super::{for_each, print_rows, Ctx};
use crate::commands::images::{pull_image, registry_auth_header};
use crate::commands::run::{self, with_default_tag, ContainerOptions};
use crate::transport::ApiRequest;
use crate::CliError;

#[derive(Subcommand, Debug)]
pub enum CronCmd {
    /// Create a cron job
    #[command(disable_help_flag = true)]
    Create(Box<CronCreateArgs>),
    /// List cron jobs
    #[command(alias = "list")]
    Ls(CronLsArgs),
    /// Display detailed information on one or more cron jobs
    Inspect(CronInspectArgs),
    /// Show the runs of a cron job (the last 100)
    History(CronHistoryArgs),
    /// Remove one or more cron jobs (and their runs' containers)
    #[command(alias = "remove")]
    Rm(CronRmArgs),
}

#[derive(Args, Debug, Clone, Default)]
pub struct CronCreateArgs {
    /// Cron name
    #[arg(long)]
    pub name: String,
    /// Name of every run's container (kept after the run until the next one replaces it)
    #[arg(long = "container-name")]
    pub container_name: Option<String>,
    /// The minutes of the schedule (0-59, ranges, steps, lists)
    #[arg(long, default_value = "0", allow_hyphen_values = true)]
    pub minute: String,
    /// The hours of the schedule (0-23)
    #[arg(long, default_value = "0", allow_hyphen_values = true)]
    pub hour: String,
    /// The days of the month of the schedule (1-31)
    #[arg(long, default_value = "*", allow_hyphen_values = true)]
    pub dom: String,
    /// The months of the schedule (1-12 or jan-dec)
    #[arg(long, default_value = "*", allow_hyphen_values = true)]
    pub month: String,
    /// The days of the week of the schedule (0-7 or sun-sat)
    #[arg(long, default_value = "*", allow_hyphen_values = true)]
    pub week: String,
    /// The whole schedule, "MIN HOUR DOM MONTH DOW" (instead of --minute ... --week)
    #[arg(long, conflicts_with_all = ["minute", "hour", "dom", "month", "week"])]
    pub schedule: Option<String>,
    /// When a run is due while the previous one still runs: allow (both run), forbid (skip
    /// the new one) or replace (kill the old one); hyperd's default is forbid
    #[arg(long, value_parser = ["allow", "forbid", "replace"])]
    pub concurrency: Option<String>,
    /// Runs that fell due while hyperd was down: run-once (the latest, when hyperd is back) or
    /// skip; hyperd's default is run-once
    #[arg(long, value_parser = ["run-once", "skip"])]
    pub missed: Option<String>,
    /// Access key the runs are made with (one of your own; with --secret-key)
    #[arg(long = "access-key")]
    pub access_key: Option<String>,
    /// Secret key of --access-key (checked, never stored)
    #[arg(long = "secret-key")]
    pub secret_key: Option<String>,
    /// Mail address for run reports (refused: hyperd sends no mail)
    #[arg(long)]
    pub mailto: Option<String>,
    /// When to send mail (refused unless the default: hyperd sends no mail)
    #[arg(long, default_value = "on-failure")]
    pub mail: String,
    /// Set environment variables
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long = "env-file")]
    pub env_file: Vec<PathBuf>,
    /// Set meta data on the runs' containers
    #[arg(short = 'l', long = "label")]
    pub labels: Vec<String>,
    /// Read in a line delimited file of labels
    #[arg(long = "label-file")]
    pub label_file: Vec<PathBuf>,
    /// Container size (s1..s4, m1..m3, l1..l3; default s4)
    #[arg(long, default_value = "s4")]
    pub size: String,
    /// Security group for each run's container (repeatable)
    #[arg(long = "sg")]
    pub sg: Vec<String>,
    /// Do not create volumes for the image's VOLUMEs
    #[arg(long = "noauto-volume")]
    pub noauto_volume: bool,
    /// Bind mount a volume (NAME:/path[:ro])
    #[arg(short = 'v', long = "volume")]
    pub volumes: Vec<String>,
    /// Publish a container's port(s) to the host
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Publish all exposed ports to random ports
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// Expose a port or a range of ports
    #[arg(long)]
    pub expose: Vec<String>,
    /// Add link to another container
    #[arg(long = "link")]
    pub links: Vec<String>,
    /// Restart policy of a run's container (no or on-failure[:N])
    #[arg(long, default_value = "no")]
    pub restart: String,
    /// Overwrite the default ENTRYPOINT of the image
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// Container host name
    #[arg(short = 'h', long)]
    pub hostname: Option<String>,
    /// Signal to stop a run's container
    #[arg(long = "stop-signal", default_value = "SIGTERM")]
    pub stop_signal: String,
    /// Print help
    #[arg(long, action = ArgAction::Help)]
    pub help: Option<bool>,
    /// The image to run
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// Command and arguments
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct CronLsArgs {
    /// Filter output based on conditions provided (name=, image=, container-name=)
    #[arg(short = 'f', long = "filter")]
    pub filters: Vec<String>,
    /// Only display names
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Format output using a Go template
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct CronInspectArgs {
    /// Format the output using the given Go template
    #[arg(short = 'f', long)]
    pub format: Option<String>,
    #[arg(required = true, value_name = "CRON")]
    pub crons: Vec<String>,
}

#[derive(Args, Debug)]
pub struct CronHistoryArgs {
    /// Show runs started since this time (Unix seconds, RFC 3339, or a duration such as 10m)
    #[arg(long)]
    pub since: Option<String>,
    /// Number of runs to show from the end of the history
    #[arg(long, default_value = "all")]
    pub tail: String,
    /// Also print each run's output
    #[arg(long)]
    pub logs: bool,
    #[arg(value_name = "CRON")]
    pub cron: String,
}

#[derive(Args, Debug)]
pub struct CronRmArgs {
    #[arg(required = true, value_name = "CRON")]
    pub crons: Vec<String>,
}

/// `-l`/`--label-file` lines in `key=value` form (files first, as Hyper's CLI reads them).
fn labels(a: &CronCreateArgs) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for f in &a.label_file {
        let text = std::fs::read_to_string(f).map_err(|e| format!("open {}: {e}", f.display()))?;
        out.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
    }
    out.extend(a.labels.iter().cloned());
    Ok(out)
}

/// The `POST /crons/create` body: Hyper's `Cron` with every key, plus our policies when given.
pub fn create_body(
    a: &CronCreateArgs,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Value, String> {
    let schedule = match &a.schedule {
        Some(s) => s.clone(),
        None => {
            let fields = [&a.minute, &a.hour, &a.dom, &a.month, &a.week];
            if fields
                .iter()
                .map(|f| f.as_str())
                .eq(["0", "0", "*", "*", "*"])
            {
                return Err(
                    "must specify at least one schedule (--minute, --hour, --dom, --month, \
                     --week or --schedule)"
                        .into(),
                );
            }
            fields.map(|f| f.as_str()).join(" ")
        }
    };
    if a.access_key.is_some() != a.secret_key.is_some() {
        return Err("give --access-key and --secret-key together".into());
    }
    let (hostname, domainname) = match &a.hostname {
        Some(h) => match h.split_once('.') {
            Some((h, d)) => (h.to_owned(), d.to_owned()),
            None => (h.clone(), String::new()),
        },
        None => (String::new(), String::new()),
    };
    let o = ContainerOptions {
        env: a.env.clone(),
        env_file: a.env_file.clone(),
        workdir: a.workdir.clone(),
        entrypoint: a.entrypoint.clone(),
        labels: labels(a)?,
        restart: Some(a.restart.clone()),
        stop_signal: Some(a.stop_signal.clone()),
        size: Some(a.size.clone()),
        sg: a.sg.clone(),
        noauto_volume: a.noauto_volume,
        publish: a.publish.clone(),
        publish_all: a.publish_all,
        expose: a.expose.clone(),
        volumes: a.volumes.clone(),
        links: a.links.clone(),
        network: Some("bridge".into()),
        image: a.image.clone(),
        command: a.command.clone(),
        ..ContainerOptions::default()
    };
    let mut config = run::create_body(&o, false, lookup)?;
    let c = config.as_object_mut().expect("object");
    let host_config = c.remove("HostConfig").unwrap_or(Value::Null);
    let net_config = c
        .remove("NetworkingConfig")
        .unwrap_or_else(|| json!({"EndpointsConfig": {}}));
    // Hyper's cron runs always had a terminal.
    c.insert("Tty".into(), json!(true));
    c.insert("Hostname".into(), json!(hostname));
    c.insert("Domainname".into(), json!(domainname));
    let mut body = json!({
        "Name": "",
        "Schedule": schedule,
        "AccessKey": a.access_key.clone().unwrap_or_default(),
        "SecretKey": a.secret_key.clone().unwrap_or_default(),
        "ContainerName": a.container_name.clone().unwrap_or_default(),
        "Config": config,
        "HostConfig": host_config,
        "NetConfig": net_config,
        "Owner": "",
        "OwnerEmail": a.mailto.clone().unwrap_or_default(),
        "MailPolicy": a.mail,
        "SuccessCount": 0,
        "ErrorCount": 0,
        "LastRun": "0001-01-01T00:00:00Z",
        "Created": "0001-01-01T00:00:00Z",
        "Disabled": false,
        "Tags": null,
    });
    if let Some(p) = &a.concurrency {
        body["ConcurrencyPolicy"] = json!(p);
    }
    if let Some(p) = &a.missed {
        body["MissedRunPolicy"] = json!(p);
    }
    Ok(body)
}

/// `-f key=value` flags to Docker's `filters` JSON.
fn filters_json(filters: &[String]) -> Result<Option<String>, String> {
    if filters.is_empty() {
        return Ok(None);
    }
    let mut m = serde_json::Map::new();
    for f in filters {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| format!("bad format of filter (expected name=value): {f}"))?;
        m.entry(k.to_lowercase())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("object")
            .insert(v.to_owned(), json!(true));
    }
    Ok(Some(Value::Object(m).to_string()))
}

fn ls_row(c: &Value) -> Value {
    let cmd: Vec<&str> = c["Config"]["Cmd"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    json!({
        "Name": c["Name"], "Schedule": c["Schedule"], "Image": c["Config"]["Image"],
        "Command": cmd.join(" "), "Concurrency": c["ConcurrencyPolicy"],
        "NextRun": c["NextRun"].as_str().filter(|t| !t.starts_with("0001-")).unwrap_or("-"),
    })
}

const LS_TABLE: &str =
    "table {{.Name}}\t{{.Schedule}}\t{{.Image}}\t{{.Command}}\t{{.Concurrency}}\t{{.NextRun}}";

fn ls_header() -> Value {
    json!({"Name": "NAME", "Schedule": "SCHEDULE", "Image": "IMAGE", "Command": "COMMAND",
           "Concurrency": "CONCURRENCY", "NextRun": "NEXT RUN"})
}

fn unix(t: &Value) -> String {
    t.as_i64()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// One history row as Hyper's CLI shows it: Status `success` is done, `error` failed, anything
/// else `-`; End is `-` while it runs.
fn history_row(h: &Value) -> Value {
    let status = match h["Status"].as_str() {
        Some("success") => "done",
        Some("error") => "failed",
        _ => "-",
    };
    let end = if h["FinishedAt"].as_i64().unwrap_or(0) == 0 {
        "-".to_owned()
    } else {
        unix(&h["FinishedAt"])
    };
    json!({
        "Container": h["Container"].as_str().filter(|c| !c.is_empty()).unwrap_or("-"),
        "Scheduled": unix(&h["Scheduled"]), "Start": unix(&h["StartedAt"]), "End": end,
        "Status": status, "Message": h["Message"],
    })
}

const HISTORY_TABLE: &str =
    "table {{.Container}}\t{{.Scheduled}}\t{{.Start}}\t{{.End}}\t{{.Status}}\t{{.Message}}";

fn history_header() -> Value {
    json!({"Container": "CONTAINER", "Scheduled": "DUE", "Start": "START", "End": "END",
           "Status": "STATUS", "Message": "MESSAGE"})
}

async fn create(ctx: &Ctx, a: &CronCreateArgs) -> Result<i32, CliError> {
    let body = create_body(a, &|k| std::env::var(k).ok()).map_err(CliError::Msg)?;
    let client = ctx.client()?;
    let req = ApiRequest::post("/crons/create")
        .query("name", &a.name)
        .json(&body);
    match client.call(req.clone()).await {
        Err(e) if e.is_not_found() && e.to_string().contains("No such image") => {
            let image = with_default_tag(&a.image);
            eprintln!("Unable to find image '{image}' locally");
            let auth = registry_auth_header(ctx, &image);
            pull_image(&client, &image, auth, true).await?;
            client.call(req).await?;
        }
        other => {
            other?;
        }
    }
    println!("Cron {} is created.", a.name);
    Ok(0)
}

pub async fn cron_cmd(ctx: &Ctx, c: CronCmd) -> Result<i32, CliError> {
    match c {
        CronCmd::Create(a) => create(ctx, &a).await,
        CronCmd::Ls(a) => {
            let filters = filters_json(&a.filters).map_err(CliError::Msg)?;
            let req = ApiRequest::get("/crons").query_opt("filters", filters.as_ref());
            let list: Vec<Value> = ctx.client()?.json(req).await?;
            let rows: Vec<Value> = list.iter().map(ls_row).collect();
            let template = match (&a.format, a.quiet) {
                (_, true) => "{{.Name}}",
                (Some(f), _) => f.as_str(),
                (None, _) => LS_TABLE,
            };
            print_rows(template, &ls_header(), &rows)?;
            Ok(0)
        }
        CronCmd::Inspect(a) => {
            super::inspect_each(ctx, a.format.as_deref(), &a.crons, |name| {
                format!("/crons/{name}")
            })
            .await
        }
        CronCmd::History(a) => {
            let req = ApiRequest::get(format!("/crons/{}/history", a.cron))
                .query_opt("since", a.since.as_ref())
                .query("tail", &a.tail);
            let runs: Vec<Value> = ctx.client()?.json(req).await?;
            if a.logs {
                for h in &runs {
                    let row = history_row(h);
                    println!(
                        "=== {} due {} {} {}",
                        row["Container"].as_str().unwrap_or("-"),
                        row["Scheduled"].as_str().unwrap_or(""),
                        row["Status"].as_str().unwrap_or(""),
                        h["Message"].as_str().unwrap_or("")
                    );
                    print!("{}", h["Logs"].as_str().unwrap_or(""));
                }
                return Ok(0);
            }
            let rows: Vec<Value> = runs.iter().map(history_row).collect();
            print_rows(HISTORY_TABLE, &history_header(), &rows)?;
            Ok(0)
        }
        CronCmd::Rm(a) => {
            let client = ctx.client()?;
            for_each(&a.crons, |name| {
                let client = client.clone();
                async move {
                    client
                        .call(ApiRequest::delete(format!("/crons/{name}")))
                        .await?;
                    Ok(Some(name))
                }
            })
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct T {
        #[command(subcommand)]
        cmd: CronCmd,
    }

    fn parse(args: &[&str]) -> Result<CronCmd, clap::Error> {
        T::try_parse_from(std::iter::once("cron").chain(args.iter().copied())).map(|t| t.cmd)
    }

    fn body(args: &[&str]) -> Result<Value, String> {
        let mut all = vec!["create"];
        all.extend_from_slice(args);
        let CronCmd::Create(a) = parse(&all).unwrap() else {
            panic!("not create")
        };
        create_body(&a, &|_| None)
    }

    #[test]
    fn hypers_body_with_every_key() {
        let b = body(&[
            "--name",
            "job",
            "--minute",
            "*/5",
            "--hour",
            "1-3",
            "-e",
            "A=1",
            "-l",
            "x=y",
            "--size",
            "s2",
            "--sg",
            "web",
            "-h",
            "box.example.com",
            "busybox",
            "echo",
            "hi",
        ])
        .unwrap();
        assert_eq!(b["Schedule"], "*/5 1-3 * * *");
        assert_eq!(b["Name"], "");
        assert_eq!(b["MailPolicy"], "on-failure");
        assert_eq!(b["OwnerEmail"], "");
        assert_eq!(b["AccessKey"], "");
        assert_eq!(b["Tags"], Value::Null);
        let c = &b["Config"];
        assert_eq!(c["Image"], "busybox");
        assert_eq!(c["Cmd"], json!(["echo", "hi"]));
        assert_eq!(c["Tty"], true);
        assert_eq!(c["Env"], json!(["A=1"]));
        assert_eq!(c["Hostname"], "box");
        assert_eq!(c["Domainname"], "example.com");
        assert_eq!(c["StopSignal"], "SIGTERM");
        assert_eq!(
            c["Labels"],
            json!({"x": "y", "sh_hyper_instancetype": "s2", "sh_hyper_sg_web": "yes"})
        );
        assert!(c.get("HostConfig").is_none());
        assert_eq!(b["HostConfig"]["NetworkMode"], "bridge");
        assert_eq!(b["HostConfig"]["RestartPolicy"]["Name"], "no");
        assert_eq!(b["NetConfig"], json!({"EndpointsConfig": {}}));
        assert!(b.get("ConcurrencyPolicy").is_none());
    }

    #[test]
    fn schedules_policies_and_refusals() {
        let b = body(&[
            "--name",
            "j",
            "--schedule",
            "0 3 * * mon",
            "--concurrency",
            "replace",
            "--missed",
            "skip",
            "busybox",
        ])
        .unwrap();
        assert_eq!(b["Schedule"], "0 3 * * mon");
        assert_eq!(b["ConcurrencyPolicy"], "replace");
        assert_eq!(b["MissedRunPolicy"], "skip");
        assert!(body(&["--name", "j", "busybox"])
            .unwrap_err()
            .contains("at least one schedule"));
        assert!(body(&[
            "--name",
            "j",
            "--minute",
            "5",
            "--access-key",
            "AK",
            "busybox"
        ])
        .unwrap_err()
        .contains("together"));
        assert!(parse(&[
            "create",
            "--name",
            "j",
            "--schedule",
            "* * * * *",
            "--minute",
            "1",
            "busybox"
        ])
        .is_err());
        assert!(parse(&[
            "create",
            "--name",
            "j",
            "--concurrency",
            "sometimes",
            "busybox"
        ])
        .is_err());
        assert!(parse(&["create", "--minute", "1", "busybox"]).is_err());
    }

    #[test]
    fn history_rows_like_hypers() {
        let r = history_row(
            &json!({"Container": "c1", "StartedAt": 1893456000, "FinishedAt": 0,
                                    "Status": "running", "Message": "", "Scheduled": 1893456000}),
        );
        assert_eq!(
            (r["Status"].as_str(), r["End"].as_str()),
            (Some("-"), Some("-"))
        );
        assert_eq!(r["Start"], "2030-01-01 00:00:00 UTC");
        let r = history_row(
            &json!({"Container": "c1", "StartedAt": 1, "FinishedAt": 2, "Status": "success"}),
        );
        assert_eq!(r["Status"], "done");
        let r = history_row(
            &json!({"Container": "", "StartedAt": 1, "FinishedAt": 2, "Status": "error"}),
        );
        assert_eq!(
            (r["Status"].as_str(), r["Container"].as_str()),
            (Some("failed"), Some("-"))
        );
        assert_eq!(
            filters_json(&["name=a".into(), "image=busybox".into()])
                .unwrap()
                .unwrap(),
            r#"{"image":{"busybox":true},"name":{"a":true}}"#
        );
        assert!(filters_json(&["name".into()]).is_err());
    }
}
