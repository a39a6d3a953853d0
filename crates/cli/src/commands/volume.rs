//! `volume create|ls|inspect|rm|prune|init` over the `/volumes` API. hyperd reports a
//! volume's size and the container it is attached to in its `Status` (`Size`, `Container`);
//! Hyper.sh carried them as the labels `size` and `container`, read when `Status` lacks them.
//! `ls` shows them as columns.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::{for_each, inspect_each, print_rows, Ctx};
use crate::commands::containers::filters_json;
use crate::commands::run::label_map;
use crate::commands::system::confirm;
use crate::commands::volume_init::{init_volumes, parse_init_arg};
use crate::table::{human_size, natural_cmp, short_id};
use crate::transport::ApiRequest;
use crate::CliError;

#[derive(Subcommand, Debug)]
pub enum VolumeCmd {
    /// Create a volume
    Create(VolumeCreateArgs),
    /// List volumes
    #[command(alias = "list")]
    Ls(VolumeLsArgs),
    /// Display detailed information on one or more volumes
    Inspect(VolumeInspectArgs),
    /// Remove one or more volumes
    #[command(alias = "remove")]
    Rm(VolumeRmArgs),
    /// Remove all unused volumes
    Prune(VolumePruneArgs),
    /// Fill volumes from local paths or URLs
    Init(VolumeInitArgs),
}

#[derive(Args, Debug)]
pub struct VolumeCreateArgs {
    /// Specify volume name
    #[arg(long)]
    pub name: Option<String>,
    /// Size in GB (default 10, or the snapshot's size with --snapshot); the daemon checks it
    #[arg(long)]
    pub size: Option<String>,
    /// Create the volume from a snapshot
    #[arg(long)]
    pub snapshot: Option<String>,
    /// Specify volume driver name
    #[arg(short = 'd', long, default_value = "hyper")]
    pub driver: String,
    /// Set driver specific options
    #[arg(short = 'o', long = "opt")]
    pub opts: Vec<String>,
    /// Set metadata for a volume
    #[arg(long = "label")]
    pub labels: Vec<String>,
    #[arg(value_name = "VOLUME")]
    pub volume: Option<String>,
}

#[derive(Args, Debug)]
pub struct VolumeLsArgs {
    /// Only display volume names
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Provide filter values (e.g. "dangling=true")
    #[arg(short = 'f', long = "filter")]
    pub filter: Vec<String>,
    /// Format output using a Go template
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct VolumeInspectArgs {
    /// Format output using a Go template
    #[arg(short = 'f', long)]
    pub format: Option<String>,
    #[arg(required = true, value_name = "VOLUME")]
    pub volumes: Vec<String>,
}

#[derive(Args, Debug)]
pub struct VolumeRmArgs {
    /// Force the removal of one or more volumes
    #[arg(short = 'f', long)]
    pub force: bool,
    #[arg(required = true, value_name = "VOLUME")]
    pub volumes: Vec<String>,
}

#[derive(Args, Debug)]
pub struct VolumePruneArgs {
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Provide filter values (e.g. "label=<label>")
    #[arg(long = "filter")]
    pub filter: Vec<String>,
}

#[derive(Args, Debug)]
pub struct VolumeInitArgs {
    /// A local path (directory or file) or a git/http(s) URL, and the volume to fill from it
    #[arg(required = true, value_name = "SOURCE:VOLUME")]
    pub specs: Vec<String>,
}

pub async fn volume_cmd(ctx: &Ctx, c: VolumeCmd) -> Result<i32, CliError> {
    match c {
        VolumeCmd::Create(a) => {
            let body = create_body(&a).map_err(CliError::Msg)?;
            let req = ApiRequest::post("/volumes/create").json(&body);
            let v: Value = ctx.client()?.json(req).await?;
            println!("{}", v["Name"].as_str().unwrap_or(""));
            Ok(0)
        }
        VolumeCmd::Ls(a) => ls(ctx, a).await,
        VolumeCmd::Inspect(a) => {
            inspect_each(ctx, a.format.as_deref(), &a.volumes, |v| {
                format!("/volumes/{v}")
            })
            .await
        }
        VolumeCmd::Rm(a) => {
            let client = ctx.client()?;
            for_each(&a.volumes, |name| {
                let client = client.clone();
                let req = rm_request(&name, a.force);
                async move {
                    client.call(req).await?;
                    Ok(Some(name))
                }
            })
            .await
        }
        VolumeCmd::Prune(a) => prune(ctx, a).await,
        VolumeCmd::Init(a) => {
            let cwd = std::env::current_dir()?;
            let sources = a
                .specs
                .iter()
                .map(|s| parse_init_arg(s, &cwd))
                .collect::<Result<Vec<_>, _>>()
                .map_err(CliError::Msg)?;
            let client = ctx.client()?;
            init_volumes(&client, &sources).await?;
            Ok(0)
        }
    }
}

/// The `POST /volumes/create` body. `--size` and `--snapshot` win over `-o size=` and
/// `-o snapshot=`; a snapshot without a size sends `"size": ""` (Hyper's "the snapshot's
/// size"), no snapshot the default 10 GB.
pub fn create_body(a: &VolumeCreateArgs) -> Result<Value, String> {
    let name =
        match (&a.name, &a.volume) {
            (Some(_), Some(_)) => return Err(
                "conflicting options: either specify --name or provide positional arg, not both"
                    .into(),
            ),
            (n, v) => n.as_ref().or(v.as_ref()).cloned().unwrap_or_default(),
        };
    let mut opts = label_map(&a.opts);
    if let Some(s) = &a.snapshot {
        opts.insert("snapshot".into(), json!(s));
    }
    if let Some(n) = &a.size {
        opts.insert("size".into(), json!(n));
    }
    if !opts.contains_key("size") {
        let size = if opts.contains_key("snapshot") {
            ""
        } else {
            "10"
        };
        opts.insert("size".into(), json!(size));
    }
    Ok(json!({
        "Name": name,
        "Driver": a.driver,
        "DriverOpts": opts,
        "Labels": label_map(&a.labels),
    }))
}

pub fn rm_request(name: &str, force: bool) -> ApiRequest {
    ApiRequest::delete(format!("/volumes/{name}")).flag("force", force)
}

/// One `volume ls` row: docker's fields, plus Hyper's `Size` ("10 GB") and `Container` (the
/// short ID of the container the volume is attached to).
pub fn ls_row(v: &Value) -> Value {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_owned();
    let label = |k: &str| v["Labels"][k].as_str().unwrap_or("").to_owned();
    let labels: Vec<String> = v["Labels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    let status = |k: &str| v["Status"][k].as_str().map(str::to_owned);
    let size = status("Size").unwrap_or_else(|| match label("size") {
        s if s.is_empty() => s,
        s => format!("{s} GB"),
    });
    let container = status("Container").unwrap_or_else(|| label("container"));
    json!({
        "Name": s("Name"),
        "Driver": s("Driver"),
        "Scope": s("Scope"),
        "Mountpoint": s("Mountpoint"),
        "CreatedAt": s("CreatedAt"),
        "Labels": labels.join(","),
        "Size": size,
        "Container": short_id(&container),
    })
}

fn ls_header() -> Value {
    json!({
        "Name": "VOLUME NAME", "Driver": "DRIVER", "Scope": "SCOPE", "Mountpoint": "MOUNTPOINT",
        "CreatedAt": "CREATED", "Labels": "LABELS", "Size": "SIZE", "Container": "CONTAINER",
    })
}

/// The `Warnings` of a list response, on stderr.
pub fn print_warnings(resp: &Value) {
    for w in resp["Warnings"].as_array().into_iter().flatten() {
        if let Some(w) = w.as_str().filter(|w| !w.is_empty()) {
            eprintln!("WARNING: {w}");
        }
    }
}

async fn ls(ctx: &Ctx, a: VolumeLsArgs) -> Result<i32, CliError> {
    let req = ApiRequest::get("/volumes").query_opt("filters", filters_json(&a.filter)?);
    let resp: Value = ctx.client()?.json(req).await?;
    if !a.quiet {
        print_warnings(&resp);
    }
    let mut rows: Vec<Value> = resp["Volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(ls_row)
        .collect();
    // Docker lists volumes by name.
    rows.sort_by(|x, y| {
        natural_cmp(
            x["Name"].as_str().unwrap_or(""),
            y["Name"].as_str().unwrap_or(""),
        )
    });
    let template = match (&a.format, a.quiet) {
        (_, true) => "{{.Name}}",
        (Some(f), _) => f.as_str(),
        (None, _) => "table {{.Driver}}\t{{.Name}}\t{{.Size}}\t{{.Container}}",
    };
    print_rows(template, &ls_header(), &rows)?;
    Ok(0)
}

/// Docker's report: the names deleted, then the space reclaimed.
pub fn prune_report(resp: &Value) -> String {
    let deleted: Vec<&str> = resp["VolumesDeleted"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut out = String::new();
    if !deleted.is_empty() {
        out.push_str(&format!("Deleted Volumes:\n{}\n\n", deleted.join("\n")));
    }
    let space = resp["SpaceReclaimed"].as_f64().unwrap_or(0.0);
    out.push_str(&format!("Total reclaimed space: {}\n", human_size(space)));
    out
}

async fn prune(ctx: &Ctx, a: VolumePruneArgs) -> Result<i32, CliError> {
    if !a.force
        && !confirm("WARNING! This will remove all volumes not used by at least one container.\nAre you sure you want to continue? [y/N] ")?
    {
        return Ok(0);
    }
    let req = ApiRequest::post("/volumes/prune").query_opt("filters", filters_json(&a.filter)?);
    let resp: Value = ctx.client()?.json(req).await?;
    print!("{}", prune_report(&resp));
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
        cmd: VolumeCmd,
    }

    fn parse(args: &[&str]) -> Result<VolumeCmd, clap::Error> {
        T::try_parse_from(std::iter::once("volume").chain(args.iter().copied())).map(|t| t.cmd)
    }

    fn create(args: &[&str]) -> Result<Value, String> {
        match parse(&[&["create"], args].concat()).unwrap() {
            VolumeCmd::Create(a) => create_body(&a),
            other => panic!("not create: {other:?}"),
        }
    }

    #[test]
    fn create_bodies() {
        let body = |name: &str, driver: &str, opts: Value, labels: Value| {
            Ok(json!({"Name": name, "Driver": driver, "DriverOpts": opts, "Labels": labels}))
        };
        let cases: Vec<(&[&str], Result<Value, String>)> = vec![
            (&[], body("", "hyper", json!({"size": "10"}), json!({}))),
            (&["data"], body("data", "hyper", json!({"size": "10"}), json!({}))),
            (
                &["--name", "data", "--size", "20", "-d", "rbd", "--label", "a=b"],
                body("data", "rbd", json!({"size": "20"}), json!({"a": "b"})),
            ),
            (
                &["--snapshot", "snap1"],
                body("", "hyper", json!({"size": "", "snapshot": "snap1"}), json!({})),
            ),
            (
                &["--snapshot", "snap1", "--size", "10"],
                body("", "hyper", json!({"size": "10", "snapshot": "snap1"}), json!({})),
            ),
            (
                &["-o", "size=30", "--opt", "snapshot=s", "-o", "k=v", "v"],
                body("v", "hyper", json!({"size": "30", "snapshot": "s", "k": "v"}), json!({})),
            ),
            (
                &["-o", "size=30", "--size", "40", "--driver", "local"],
                body("", "local", json!({"size": "40"}), json!({})),
            ),
            (
                &["--size", "ten"],
                body("", "hyper", json!({"size": "ten"}), json!({})),
            ),
            (
                &["--name", "a", "b"],
                Err("conflicting options: either specify --name or provide positional arg, not both".into()),
            ),
        ];
        for (i, (args, want)) in cases.into_iter().enumerate() {
            assert_eq!(create(args), want, "test[{i}] {args:?}");
        }
        assert!(parse(&["create", "a", "b"]).is_err());
    }

    #[test]
    fn requests() {
        assert_eq!(rm_request("v", false).path_and_query(), "/v1.44/volumes/v");
        let r = rm_request("v", true);
        assert_eq!(r.method, http::Method::DELETE);
        assert_eq!(r.path_and_query(), "/v1.44/volumes/v?force=1");
    }

    #[test]
    fn ls_like_hyper() {
        let t = Template::parse("table {{.Driver}}\t{{.Name}}\t{{.Size}}\t{{.Container}}").unwrap();
        let mut tw = TabWriter::new();
        tw.line(&t.render(&ls_header()).unwrap());
        for v in [
            json!({"Name": "data", "Driver": "rbd", "Scope": "local",
                   "Labels": {"size": "10", "container": "0123456789abcdef0123"}}),
            json!({"Name": "logs", "Driver": "local", "Labels": {"size": "50", "container": "", "env": "prod"}}),
            json!({"Name": "bare", "Driver": "local", "Labels": null}),
        ] {
            tw.line(&t.render(&ls_row(&v)).unwrap());
        }
        assert_eq!(
            tw.render(),
            "DRIVER    VOLUME NAME   SIZE      CONTAINER\n\
             rbd       data          10 GB     0123456789ab\n\
             local     logs          50 GB     \n\
             local     bare                    \n"
        );
        let row = ls_row(&json!({"Name": "logs", "Labels": {"size": "50", "env": "prod"}}));
        assert_eq!(row["Labels"], "env=prod,size=50");
    }

    #[test]
    fn prune_reports() {
        let cases = [
            (
                json!({"VolumesDeleted": ["a", "b"], "SpaceReclaimed": 2_000_000}),
                "Deleted Volumes:\na\nb\n\nTotal reclaimed space: 2MB\n",
            ),
            (
                json!({"VolumesDeleted": null, "SpaceReclaimed": 0}),
                "Total reclaimed space: 0B\n",
            ),
        ];
        for (i, (resp, want)) in cases.iter().enumerate() {
            assert_eq!(prune_report(resp), *want, "test[{i}]");
        }
    }

    #[test]
    fn subcommands_and_flags() {
        assert!(matches!(parse(&["list", "-q", "-f", "dangling=true"]),
            Ok(VolumeCmd::Ls(a)) if a.quiet && a.filter == ["dangling=true"]));
        assert!(matches!(parse(&["remove", "-f", "a", "b"]),
            Ok(VolumeCmd::Rm(a)) if a.force && a.volumes == ["a", "b"]));
        assert!(matches!(parse(&["inspect", "-f", "{{.Name}}", "a"]),
            Ok(VolumeCmd::Inspect(a)) if a.format.as_deref() == Some("{{.Name}}")));
        assert!(matches!(parse(&["prune", "-f", "--filter", "label=a"]),
            Ok(VolumeCmd::Prune(a)) if a.force && a.filter == ["label=a"]));
        assert!(matches!(parse(&["init", "./a:v1", "https://h/r.git:v2"]),
            Ok(VolumeCmd::Init(a)) if a.specs.len() == 2));
        for (i, bad) in [&["rm"][..], &["inspect"], &["init"]].iter().enumerate() {
            assert!(parse(bad).is_err(), "test[{i}]");
        }
    }
}
