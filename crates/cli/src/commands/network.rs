//! `network ls|create|rm|inspect|connect|disconnect|prune` over Docker's `/networks` API.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::{for_each, inspect_each, print_rows, Ctx};
use crate::commands::containers::filters_json;
use crate::commands::run::label_map;
use crate::commands::system::confirm;
use crate::table::{natural_cmp, short_id};
use crate::transport::ApiRequest;
use crate::CliError;

#[derive(Subcommand, Debug)]
pub enum NetworkCmd {
    /// List networks
    #[command(alias = "list")]
    Ls(NetworkLsArgs),
    /// Create a network
    Create(NetworkCreateArgs),
    /// Remove one or more networks
    #[command(alias = "remove")]
    Rm(NetworkNamesArgs),
    /// Display detailed information on one or more networks
    Inspect(NetworkInspectArgs),
    /// Connect a container to a network
    Connect(NetworkConnectArgs),
    /// Disconnect a container from a network
    Disconnect(NetworkDisconnectArgs),
    /// Remove all unused networks
    Prune(NetworkPruneArgs),
}

#[derive(Args, Debug)]
pub struct NetworkLsArgs {
    /// Only display network IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Do not truncate the output
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Provide filter values (e.g. "name=web")
    #[arg(short = 'f', long = "filter")]
    pub filter: Vec<String>,
    /// Format output using a Go template
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct NetworkCreateArgs {
    /// Driver to manage the network
    #[arg(short = 'd', long, default_value = "bridge")]
    pub driver: String,
    /// Subnet in CIDR format
    #[arg(long)]
    pub subnet: Option<String>,
    /// Gateway for the subnet
    #[arg(long)]
    pub gateway: Option<String>,
    /// Restrict external access to the network
    #[arg(long)]
    pub internal: bool,
    /// Set metadata on a network
    #[arg(long = "label")]
    pub labels: Vec<String>,
    pub name: String,
}

#[derive(Args, Debug)]
pub struct NetworkNamesArgs {
    #[arg(required = true, value_name = "NETWORK")]
    pub networks: Vec<String>,
}

#[derive(Args, Debug)]
pub struct NetworkInspectArgs {
    /// Format output using a Go template
    #[arg(short = 'f', long)]
    pub format: Option<String>,
    #[arg(required = true, value_name = "NETWORK")]
    pub networks: Vec<String>,
}

#[derive(Args, Debug)]
pub struct NetworkConnectArgs {
    pub network: String,
    pub container: String,
}

#[derive(Args, Debug)]
pub struct NetworkDisconnectArgs {
    /// Force the container to disconnect from a network
    #[arg(short = 'f', long)]
    pub force: bool,
    pub network: String,
    pub container: String,
}

#[derive(Args, Debug)]
pub struct NetworkPruneArgs {
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Provide filter values (e.g. "label=<key>=<value>")
    #[arg(long = "filter")]
    pub filter: Vec<String>,
}

pub async fn network_cmd(ctx: &Ctx, c: NetworkCmd) -> Result<i32, CliError> {
    match c {
        NetworkCmd::Ls(a) => ls(ctx, a).await,
        NetworkCmd::Create(a) => create(ctx, a).await,
        NetworkCmd::Rm(a) => rm(ctx, a).await,
        NetworkCmd::Inspect(a) => inspect(ctx, a).await,
        NetworkCmd::Connect(a) => {
            let req = ApiRequest::post(format!("/networks/{}/connect", a.network))
                .json(&json!({"Container": a.container}));
            ctx.client()?.call(req).await?;
            Ok(0)
        }
        NetworkCmd::Disconnect(a) => {
            let req = ApiRequest::post(format!("/networks/{}/disconnect", a.network))
                .json(&json!({"Container": a.container, "Force": a.force}));
            ctx.client()?.call(req).await?;
            Ok(0)
        }
        NetworkCmd::Prune(a) => prune(ctx, a).await,
    }
}

/// The `POST /networks/create` body.
pub fn create_body(a: &NetworkCreateArgs) -> Value {
    let mut ipam = serde_json::Map::new();
    if let Some(s) = &a.subnet {
        ipam.insert("Subnet".into(), json!(s));
    }
    if let Some(g) = &a.gateway {
        ipam.insert("Gateway".into(), json!(g));
    }
    let config: Vec<Value> = if ipam.is_empty() {
        Vec::new()
    } else {
        vec![Value::Object(ipam)]
    };
    let mut body = json!({
        "Name": a.name,
        "Driver": a.driver,
        "IPAM": {"Driver": "default", "Config": config},
        "Labels": label_map(&a.labels),
    });
    if a.internal {
        body["Internal"] = json!(true);
    }
    body
}

/// One `docker network ls` row with docker's field names.
pub fn ls_row(n: &Value, trunc: bool) -> Value {
    let id = n["Id"].as_str().unwrap_or("");
    let labels: Vec<String> = n["Labels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    json!({
        "ID": if trunc { short_id(id) } else { id.to_owned() },
        "Name": n["Name"].as_str().unwrap_or(""),
        "Driver": n["Driver"].as_str().unwrap_or(""),
        "Scope": n["Scope"].as_str().unwrap_or(""),
        "IPv6": n["EnableIPv6"].as_bool().unwrap_or(false).to_string(),
        "Internal": n["Internal"].as_bool().unwrap_or(false).to_string(),
        "Labels": labels.join(","),
        "CreatedAt": n["Created"].as_str().unwrap_or(""),
    })
}

fn ls_header() -> Value {
    json!({
        "ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE", "IPv6": "IPV6",
        "Internal": "INTERNAL", "Labels": "LABELS", "CreatedAt": "CREATED",
    })
}

async fn ls(ctx: &Ctx, a: NetworkLsArgs) -> Result<i32, CliError> {
    let req = ApiRequest::get("/networks").query_opt("filters", filters_json(&a.filter)?);
    let mut list: Vec<Value> = ctx.client()?.json(req).await?;
    // Docker lists networks by name.
    list.sort_by(|x, y| {
        natural_cmp(
            x["Name"].as_str().unwrap_or(""),
            y["Name"].as_str().unwrap_or(""),
        )
    });
    let rows: Vec<Value> = list.iter().map(|n| ls_row(n, !a.no_trunc)).collect();
    let template = match (&a.format, a.quiet) {
        (_, true) => "{{.ID}}",
        (Some(f), _) => f.as_str(),
        (None, _) => "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}",
    };
    print_rows(template, &ls_header(), &rows)?;
    Ok(0)
}

async fn create(ctx: &Ctx, a: NetworkCreateArgs) -> Result<i32, CliError> {
    let req = ApiRequest::post("/networks/create").json(&create_body(&a));
    let resp: Value = ctx.client()?.json(req).await?;
    if let Some(w) = resp["Warning"].as_str().filter(|w| !w.is_empty()) {
        eprintln!("WARNING: {w}");
    }
    println!("{}", resp["Id"].as_str().unwrap_or(""));
    Ok(0)
}

async fn rm(ctx: &Ctx, a: NetworkNamesArgs) -> Result<i32, CliError> {
    let client = ctx.client()?;
    for_each(&a.networks, |name| {
        let client = client.clone();
        async move {
            client
                .call(ApiRequest::delete(format!("/networks/{name}")))
                .await?;
            Ok(Some(name))
        }
    })
    .await
}

async fn inspect(ctx: &Ctx, a: NetworkInspectArgs) -> Result<i32, CliError> {
    inspect_each(ctx, a.format.as_deref(), &a.networks, |n| {
        format!("/networks/{n}")
    })
    .await
}

async fn prune(ctx: &Ctx, a: NetworkPruneArgs) -> Result<i32, CliError> {
    if !a.force && !confirm("WARNING! This will remove all custom networks not used by at least one container.\nAre you sure you want to continue? [y/N] ")? {
        return Ok(0);
    }
    let req = ApiRequest::post("/networks/prune").query_opt("filters", filters_json(&a.filter)?);
    let resp: Value = ctx.client()?.json(req).await?;
    let deleted: Vec<&str> = resp["NetworksDeleted"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !deleted.is_empty() {
        println!("Deleted Networks:\n{}", deleted.join("\n"));
    }
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
        cmd: NetworkCmd,
    }

    fn parse(args: &[&str]) -> NetworkCmd {
        T::try_parse_from(std::iter::once("network").chain(args.iter().copied()))
            .unwrap()
            .cmd
    }

    #[test]
    fn create_bodies() {
        let NetworkCmd::Create(a) = parse(&[
            "create",
            "--subnet",
            "10.1.0.0/24",
            "--gateway",
            "10.1.0.1",
            "--label",
            "env=prod",
            "--internal",
            "back",
        ]) else {
            panic!("not create")
        };
        assert_eq!(
            create_body(&a),
            json!({"Name": "back", "Driver": "bridge", "Internal": true, "Labels": {"env": "prod"},
                   "IPAM": {"Driver": "default", "Config": [{"Subnet": "10.1.0.0/24", "Gateway": "10.1.0.1"}]}})
        );
        let NetworkCmd::Create(a) = parse(&["create", "front"]) else {
            panic!("not create")
        };
        let b = create_body(&a);
        assert_eq!(b["IPAM"]["Config"], json!([]));
        assert!(b.get("Internal").is_none());
    }

    #[test]
    fn ls_like_docker() {
        let n = json!({"Id": "0123456789abcdef0123", "Name": "back", "Driver": "bridge", "Scope": "local",
                       "Labels": {"env": "prod"}});
        let t = Template::parse("table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}").unwrap();
        let mut tw = TabWriter::new();
        tw.line(&t.render(&ls_header()).unwrap());
        tw.line(&t.render(&ls_row(&n, true)).unwrap());
        assert_eq!(
            tw.render(),
            "NETWORK ID     NAME      DRIVER    SCOPE\n0123456789ab   back      bridge    local\n"
        );
        assert_eq!(ls_row(&n, false)["ID"], "0123456789abcdef0123");
        assert_eq!(ls_row(&n, true)["Labels"], "env=prod");
    }

    #[test]
    fn subcommands_and_aliases() {
        assert!(matches!(parse(&["list"]), NetworkCmd::Ls(_)));
        assert!(
            matches!(parse(&["remove", "a", "b"]), NetworkCmd::Rm(a) if a.networks == ["a", "b"])
        );
        assert!(matches!(
            parse(&["disconnect", "-f", "n", "c"]),
            NetworkCmd::Disconnect(a) if a.force && a.network == "n" && a.container == "c"
        ));
    }
}
