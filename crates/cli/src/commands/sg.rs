//! `sg create|ls|inspect|update|rm`: security groups, written as YAML rule files and sent as
//! they are (`Content-Type: application/yaml`) after a local check; the server checks again.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use clap::{Args, Subcommand, ValueEnum};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{for_each, pretty_json, print_rows, Ctx};
use crate::transport::ApiRequest;
use crate::CliError;

#[derive(Subcommand, Debug)]
pub enum SgCmd {
    /// Create a security group from a YAML file
    Create(SgFileArgs),
    /// List security groups
    #[command(alias = "list")]
    Ls(SgLsArgs),
    /// Display a security group (YAML, as written, or JSON)
    Inspect(SgInspectArgs),
    /// Replace a security group's rules from a YAML file
    Update(SgFileArgs),
    /// Remove one or more security groups
    #[command(alias = "remove")]
    Rm(SgRmArgs),
}

#[derive(Args, Debug)]
pub struct SgFileArgs {
    /// The security group file (YAML)
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    pub name: String,
}

#[derive(Args, Debug)]
pub struct SgLsArgs {
    /// Only display names
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Format output using a Go template
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OutputFormat {
    Yaml,
    Json,
}

#[derive(Args, Debug)]
pub struct SgInspectArgs {
    /// Output format
    #[arg(short = 'o', long = "output", value_enum, default_value = "yaml")]
    pub output: OutputFormat,
    pub name: String,
}

#[derive(Args, Debug)]
pub struct SgRmArgs {
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

/// A rules file as the user writes it; unknown fields are refused so a typo is caught here.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SgFile {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    #[allow(dead_code)] // parsed only to check that it is a string
    description: Option<String>,
    #[serde(default)]
    rules: Vec<SgRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SgRule {
    direction: String,
    #[serde(default)]
    protocol: Option<String>,
    port_range_min: Option<u16>,
    port_range_max: Option<u16>,
    remote_ip_prefix: Option<String>,
    remote_group_name: Option<String>,
}

/// The order fields are written in, for `inspect`'s YAML.
const RULE_FIELDS: [&str; 6] = [
    "direction",
    "protocol",
    "port_range_min",
    "port_range_max",
    "remote_ip_prefix",
    "remote_group_name",
];

/// Checks a rules file for group `name`: it parses (the error says where when it does not),
/// names no other group, and every rule has a known direction and protocol, an ordered port
/// range and at most one remote.
pub fn check_file(text: &str, name: &str) -> Result<(), String> {
    let f: SgFile = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    if let Some(n) = f.name.as_deref().filter(|n| !n.is_empty() && *n != name) {
        return Err(format!(
            "name: the file names the group {n:?} but the command names {name:?}"
        ));
    }
    for (i, r) in f.rules.iter().enumerate() {
        if !matches!(r.direction.as_str(), "ingress" | "egress") {
            return Err(format!(
                "rules[{i}].direction: {:?} must be ingress or egress",
                r.direction
            ));
        }
        let proto = r.protocol.as_deref().unwrap_or("").to_ascii_lowercase();
        if !matches!(proto.as_str(), "" | "any" | "tcp" | "udp" | "icmp") {
            return Err(format!(
                "rules[{i}].protocol: {proto:?} must be tcp, udp, icmp or \"\" (any)"
            ));
        }
        if let (Some(min), Some(max)) = (r.port_range_min, r.port_range_max) {
            if min > max {
                return Err(format!(
                    "rules[{i}]: port_range_min {min} is above port_range_max {max}"
                ));
            }
        }
        if r.remote_ip_prefix.is_some() && r.remote_group_name.is_some() {
            return Err(format!(
                "rules[{i}]: give remote_ip_prefix or remote_group_name, not both"
            ));
        }
    }
    Ok(())
}

/// Reads and checks the file; the request carries it unchanged.
fn file_request(req: ApiRequest, path: &Path, name: &str) -> Result<ApiRequest, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Msg(format!("open {}: {e}", path.display())))?;
    check_file(&text, name).map_err(|e| {
        CliError::Msg(format!(
            "{}: invalid security group file: {e}",
            path.display()
        ))
    })?;
    Ok(req.body(Bytes::from(text), "application/yaml"))
}

/// A `GET /sg/NAME` object as the YAML a user writes (`name`, `description`, `rules`, fields in
/// the file's order), so `inspect`'s output can be edited and given to `update`.
pub fn to_yaml(g: &Value) -> String {
    use serde_yaml_ng::{Mapping, Value as Yaml};
    let yaml = |v: &Value| serde_yaml_ng::to_value(v).expect("JSON converts to YAML");
    let rules: Vec<Yaml> = g["Rules"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let mut m = Mapping::new();
            let known = RULE_FIELDS.iter().map(|k| (*k, &r[*k]));
            // Fields this CLI does not know yet still show, after the known ones.
            let others = r
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| !RULE_FIELDS.contains(&k.as_str()))
                .map(|(k, v)| (k.as_str(), v));
            for (k, v) in known.chain(others).filter(|(_, v)| !v.is_null()) {
                m.insert(Yaml::from(k), yaml(v));
            }
            Yaml::Mapping(m)
        })
        .collect();
    let mut doc = Mapping::new();
    doc.insert("name".into(), yaml(&g["Name"]));
    doc.insert("description".into(), yaml(&g["Description"]));
    doc.insert("rules".into(), Yaml::Sequence(rules));
    serde_yaml_ng::to_string(&doc).expect("YAML serializes")
}

/// One `sg ls` row.
pub fn ls_row(g: &Value) -> Value {
    let count = |k: &str| g[k].as_array().map_or(0, Vec::len).to_string();
    json!({
        "Name": g["Name"].as_str().unwrap_or(""),
        "Description": g["Description"].as_str().unwrap_or(""),
        "Rules": count("Rules"),
        "Containers": count("Containers"),
    })
}

fn ls_header() -> Value {
    json!({"Name": "NAME", "Description": "DESCRIPTION", "Rules": "RULES", "Containers": "CONTAINERS"})
}

pub async fn sg_cmd(ctx: &Ctx, c: SgCmd) -> Result<i32, CliError> {
    match c {
        SgCmd::Create(a) => {
            let req = file_request(
                ApiRequest::post(format!("/sg/{}", a.name)),
                &a.file,
                &a.name,
            )?;
            ctx.client()?.call(req).await?;
            println!("{}", a.name);
        }
        SgCmd::Update(a) => {
            let req = file_request(ApiRequest::put(format!("/sg/{}", a.name)), &a.file, &a.name)?;
            ctx.client()?.call(req).await?;
            println!("{}", a.name);
        }
        SgCmd::Ls(a) => {
            let list: Vec<Value> = ctx.client()?.json(ApiRequest::get("/sg")).await?;
            let rows: Vec<Value> = list.iter().map(ls_row).collect();
            let template = match (&a.format, a.quiet) {
                (_, true) => "{{.Name}}",
                (Some(f), _) => f.as_str(),
                (None, _) => "table {{.Name}}\t{{.Description}}\t{{.Rules}}\t{{.Containers}}",
            };
            print_rows(template, &ls_header(), &rows)?;
        }
        SgCmd::Inspect(a) => {
            let g: Value = ctx
                .client()?
                .json(ApiRequest::get(format!("/sg/{}", a.name)))
                .await?;
            match a.output {
                OutputFormat::Yaml => print!("{}", to_yaml(&g)),
                OutputFormat::Json => println!("{}", pretty_json(&g)),
            }
        }
        SgCmd::Rm(a) => {
            let client = ctx.client()?;
            return for_each(&a.names, |name| {
                let client = client.clone();
                async move {
                    client
                        .call(ApiRequest::delete(format!("/sg/{name}")))
                        .await?;
                    Ok(Some(name))
                }
            })
            .await;
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file as `inspect` writes it (list items not indented, as serde_yaml writes them).
    const WEB: &str = "\
name: web
description: HTTP from anywhere, DNS out
rules:
- direction: ingress
  protocol: tcp
  port_range_min: 80
  port_range_max: 80
  remote_ip_prefix: 0.0.0.0/0
- direction: egress
  protocol: udp
  port_range_min: 53
  port_range_max: 53
  remote_ip_prefix: 0.0.0.0/0
- direction: ingress
  protocol: ''
  remote_group_name: web
";

    #[test]
    fn good_files_pass() {
        check_file(WEB, "web").unwrap();
        check_file("rules: []\n", "any").unwrap();
        check_file("description: nothing in\n", "closed").unwrap();
        check_file("rules:\n  - direction: egress\n", "out").unwrap();
    }

    #[test]
    fn bad_files_say_where() {
        let cases = [
            (WEB, "db", "name: the file names the group \"web\""),
            ("rules:\n  - direction: ingres\n", "x", "rules[0].direction"),
            (
                "rules:\n  - direction: egress\n  - direction: ingress\n    protocol: sctp\n",
                "x",
                "rules[1].protocol",
            ),
            (
                "rules:\n  - direction: ingress\n    port_range_mix: 1\n",
                "x",
                "unknown field `port_range_mix`",
            ),
            (
                "rules:\n  - direction: ingress\n    port_range_min: 70000\n",
                "x",
                "line 3",
            ),
            ("rules:\n  - direction: [\n", "x", "line"),
            (
                "rules:\n  - direction: ingress\n    remote_ip_prefix: 10.0.0.0/8\n    remote_group_name: a\n",
                "x",
                "not both",
            ),
            ("rules:\n  - protocol: tcp\n", "x", "missing field `direction`"),
            (
                "rules:\n  - direction: ingress\n    protocol: tcp\n    port_range_min: 90\n    port_range_max: 80\n",
                "x",
                "rules[0]: port_range_min 90 is above port_range_max 80",
            ),
        ];
        for (i, (text, name, want)) in cases.iter().enumerate() {
            let err = check_file(text, name).unwrap_err();
            assert!(err.contains(want), "test[{i}]: {err}");
        }
    }

    #[test]
    fn inspect_yaml_round_trips() {
        let g = json!({
            "Name": "web", "Description": "HTTP from anywhere, DNS out",
            "Rules": [
                {"direction": "ingress", "protocol": "tcp", "port_range_min": 80, "port_range_max": 80, "remote_ip_prefix": "0.0.0.0/0"},
                {"remote_ip_prefix": "0.0.0.0/0", "port_range_max": 53, "port_range_min": 53, "protocol": "udp", "direction": "egress"},
                {"direction": "ingress", "protocol": "", "remote_group_name": "web", "port_range_min": null},
            ],
            "Containers": ["0123456789ab"],
        });
        let y = to_yaml(&g);
        assert_eq!(y, WEB);
        check_file(&y, "web").unwrap();
    }

    #[test]
    fn ls_rows() {
        let g = json!({"Name": "web", "Description": "d", "Rules": [{}, {}], "Containers": ["a"]});
        assert_eq!(
            ls_row(&g),
            json!({"Name": "web", "Description": "d", "Rules": "2", "Containers": "1"})
        );
        assert_eq!(ls_row(&json!({"Name": "x"}))["Rules"], "0");
    }
}
