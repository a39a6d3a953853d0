//! `snapshot create|ls|inspect|rm`: Hyper's volume snapshots (`/snapshots` endpoints). A
//! volume is made from one with `volume create --snapshot`.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::{for_each, inspect_each, print_rows, Ctx};
use crate::commands::containers::filters_json;
use crate::commands::volume::print_warnings;
use crate::transport::ApiRequest;
use crate::CliError;

#[derive(Subcommand, Debug)]
pub enum SnapshotCmd {
    /// Create a snapshot of a volume
    Create(SnapshotCreateArgs),
    /// List snapshots
    #[command(alias = "list")]
    Ls(SnapshotLsArgs),
    /// Display detailed information on one or more snapshots
    Inspect(SnapshotInspectArgs),
    /// Remove one or more snapshots
    #[command(alias = "remove")]
    Rm(SnapshotRmArgs),
}

#[derive(Args, Debug)]
pub struct SnapshotCreateArgs {
    /// Specify volume to create snapshot
    #[arg(short = 'v', long)]
    pub volume: String,
    /// Specify snapshot name
    #[arg(long)]
    pub name: Option<String>,
    /// Force to create snapshot, needed if volume is in use
    #[arg(short = 'f', long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct SnapshotLsArgs {
    /// Only display snapshot names
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Provide filter values (e.g. "volume=data")
    #[arg(short = 'f', long = "filter")]
    pub filter: Vec<String>,
    /// Format output using a Go template
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct SnapshotInspectArgs {
    /// Format output using a Go template
    #[arg(short = 'f', long)]
    pub format: Option<String>,
    #[arg(required = true, value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
}

#[derive(Args, Debug)]
pub struct SnapshotRmArgs {
    #[arg(required = true, value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
}

pub async fn snapshot_cmd(ctx: &Ctx, c: SnapshotCmd) -> Result<i32, CliError> {
    match c {
        SnapshotCmd::Create(a) => {
            let s: Value = ctx.client()?.json(create_request(&a)).await?;
            println!("{}", display_name(&s));
            Ok(0)
        }
        SnapshotCmd::Ls(a) => ls(ctx, a).await,
        SnapshotCmd::Inspect(a) => {
            inspect_each(ctx, a.format.as_deref(), &a.snapshots, |s| {
                format!("/snapshots/{s}")
            })
            .await
        }
        SnapshotCmd::Rm(a) => {
            let client = ctx.client()?;
            for_each(&a.snapshots, |name| {
                let client = client.clone();
                async move {
                    client
                        .call(ApiRequest::delete(format!("/snapshots/{name}")))
                        .await?;
                    Ok(Some(name))
                }
            })
            .await
        }
    }
}

/// `POST /snapshots/create`, with its values both in the query (`name` even when empty,
/// `force` only when set) and as the JSON body, as Hyper's client sends them.
pub fn create_request(a: &SnapshotCreateArgs) -> ApiRequest {
    let name = a.name.clone().unwrap_or_default();
    ApiRequest::post("/snapshots/create")
        .query("volume", &a.volume)
        .query("name", &name)
        .query_opt("force", a.force.then_some("true"))
        .json(&json!({"Name": name, "Volume": a.volume, "Force": a.force}))
}

/// A snapshot is known by its name, or by its ID when it has none.
fn display_name(s: &Value) -> &str {
    s["Name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .or(s["ID"].as_str())
        .unwrap_or("")
}

/// One `snapshot ls` row; `Size` is in GB ("10 GB").
pub fn ls_row(s: &Value) -> Value {
    json!({
        "ID": s["ID"].as_str().unwrap_or(""),
        "Name": display_name(s),
        "Volume": s["Volume"].as_str().unwrap_or(""),
        "Size": format!("{} GB", s["Size"].as_i64().unwrap_or(0)),
        "CreatedAt": s["CreatedAt"].as_str().unwrap_or(""),
    })
}

fn ls_header() -> Value {
    json!({"ID": "SNAPSHOT ID", "Name": "SNAPSHOT NAME", "Volume": "VOLUME", "Size": "SIZE",
           "CreatedAt": "CREATED"})
}

async fn ls(ctx: &Ctx, a: SnapshotLsArgs) -> Result<i32, CliError> {
    let req = ApiRequest::get("/snapshots").query_opt("filters", filters_json(&a.filter)?);
    let resp: Value = ctx.client()?.json(req).await?;
    if !a.quiet {
        print_warnings(&resp);
    }
    let rows: Vec<Value> = resp["Snapshots"]
        .as_array()
        .into_iter()
        .flatten()
        .map(ls_row)
        .collect();
    let template = match (&a.format, a.quiet) {
        (_, true) => "{{.Name}}",
        (Some(f), _) => f.as_str(),
        (None, _) => "table {{.Name}}\t{{.Volume}}\t{{.Size}}",
    };
    print_rows(template, &ls_header(), &rows)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::format::Template;
    use crate::table::TabWriter;

    #[derive(Parser)]
    struct T {
        #[command(subcommand)]
        cmd: SnapshotCmd,
    }

    fn parse(args: &[&str]) -> Result<SnapshotCmd, clap::Error> {
        T::try_parse_from(std::iter::once("snapshot").chain(args.iter().copied())).map(|t| t.cmd)
    }

    #[test]
    fn create_requests() {
        let cases: [(&[&str], &str, Value); 3] = [
            (
                &["-v", "data"],
                "/v1.44/snapshots/create?volume=data&name=",
                json!({"Name": "", "Volume": "data", "Force": false}),
            ),
            (
                &["--volume", "data", "--name", "s1", "-f"],
                "/v1.44/snapshots/create?volume=data&name=s1&force=true",
                json!({"Name": "s1", "Volume": "data", "Force": true}),
            ),
            (
                &["--name", "my snap", "--force", "-v", "d"],
                "/v1.44/snapshots/create?volume=d&name=my%20snap&force=true",
                json!({"Name": "my snap", "Volume": "d", "Force": true}),
            ),
        ];
        for (i, (args, path, body)) in cases.into_iter().enumerate() {
            let Ok(SnapshotCmd::Create(a)) = parse(&[&["create"], args].concat()) else {
                panic!("test[{i}]: not create")
            };
            let r = create_request(&a);
            assert_eq!(r.method, http::Method::POST, "test[{i}]");
            assert_eq!(r.path_and_query(), path, "test[{i}]");
            assert_eq!(
                serde_json::from_slice::<Value>(&r.body).unwrap(),
                body,
                "test[{i}]"
            );
        }
        assert!(
            parse(&["create", "--name", "s"]).is_err(),
            "the volume is required"
        );
    }

    #[test]
    fn ls_table() {
        let t = Template::parse("table {{.Name}}\t{{.Volume}}\t{{.Size}}").unwrap();
        let mut tw = TabWriter::new();
        tw.line(&t.render(&ls_header()).unwrap());
        for s in [
            json!({"ID": "0123456789abcdef", "Name": "before-upgrade", "Volume": "data", "Size": 10}),
            json!({"ID": "fedcba9876543210", "Name": "", "Volume": "logs", "Size": 50}),
        ] {
            tw.line(&t.render(&ls_row(&s)).unwrap());
        }
        assert_eq!(
            tw.render(),
            "SNAPSHOT NAME      VOLUME    SIZE\n\
             before-upgrade     data      10 GB\n\
             fedcba9876543210   logs      50 GB\n"
        );
    }

    #[test]
    fn subcommands_and_aliases() {
        assert!(matches!(parse(&["list", "-q"]), Ok(SnapshotCmd::Ls(a)) if a.quiet));
        assert!(
            matches!(parse(&["remove", "a", "b"]), Ok(SnapshotCmd::Rm(a)) if a.snapshots == ["a", "b"])
        );
        assert!(matches!(
            parse(&["inspect", "-f", "{{.Size}}", "s"]),
            Ok(SnapshotCmd::Inspect(a)) if a.format.as_deref() == Some("{{.Size}}")
        ));
        assert!(parse(&["rm"]).is_err());
    }
}
