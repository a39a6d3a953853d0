//! `fip allocate|ls|attach|detach|release|name`: Hyper's floating IPs (`/fips` endpoints).

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::{for_each, print_rows, Ctx};
use crate::commands::containers::filters_json;
use crate::transport::ApiRequest;
use crate::CliError;

#[derive(Subcommand, Debug)]
pub enum FipCmd {
    /// Allocate floating IPs (printed one per line)
    Allocate(FipAllocateArgs),
    /// List floating IPs
    #[command(alias = "list")]
    Ls(FipLsArgs),
    /// Attach a floating IP to a container
    #[command(alias = "associate")]
    Attach(FipAttachArgs),
    /// Detach the floating IP of a container
    #[command(alias = "disassociate")]
    Detach(FipDetachArgs),
    /// Release floating IPs
    #[command(alias = "rm")]
    Release(FipReleaseArgs),
    /// Name a floating IP
    Name(FipNameArgs),
}

#[derive(Args, Debug)]
pub struct FipAllocateArgs {
    /// How many to allocate
    #[arg(value_name = "COUNT", default_value_t = 1)]
    pub count: u32,
}

#[derive(Args, Debug)]
pub struct FipLsArgs {
    /// Only display the IPs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Provide filter values
    #[arg(short = 'f', long = "filter")]
    pub filter: Vec<String>,
    /// Format output using a Go template
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct FipAttachArgs {
    #[arg(value_name = "FIP")]
    pub ip: String,
    pub container: String,
}

#[derive(Args, Debug)]
pub struct FipDetachArgs {
    pub container: String,
}

#[derive(Args, Debug)]
pub struct FipReleaseArgs {
    #[arg(required = true, value_name = "FIP")]
    pub ips: Vec<String>,
}

#[derive(Args, Debug)]
pub struct FipNameArgs {
    #[arg(value_name = "FIP")]
    pub ip: String,
    pub name: String,
}

pub fn allocate_request(count: u32) -> ApiRequest {
    ApiRequest::post("/fips/allocate").query("count", count)
}

pub fn attach_request(ip: &str, container: &str) -> ApiRequest {
    ApiRequest::post("/fips/attach")
        .query("ip", ip)
        .query("container", container)
}

pub fn detach_request(container: &str) -> ApiRequest {
    ApiRequest::post("/fips/detach").query("container", container)
}

pub fn release_request(ip: &str) -> ApiRequest {
    ApiRequest::post("/fips/release").query("ip", ip)
}

pub fn name_request(ip: &str, name: &str) -> ApiRequest {
    ApiRequest::post("/fips/name")
        .query("ip", ip)
        .query("name", name)
}

pub async fn fip_cmd(ctx: &Ctx, c: FipCmd) -> Result<i32, CliError> {
    let client = ctx.client()?;
    match c {
        FipCmd::Allocate(a) => {
            let ips: Vec<String> = client.json(allocate_request(a.count)).await?;
            for ip in ips {
                println!("{ip}");
            }
        }
        FipCmd::Ls(a) => {
            let req = ApiRequest::get("/fips").query_opt("filters", filters_json(&a.filter)?);
            let list: Vec<Value> = client.json(req).await?;
            let rows: Vec<Value> = list.iter().map(ls_row).collect();
            let template = match (&a.format, a.quiet) {
                (_, true) => "{{.FIP}}",
                (Some(f), _) => f.as_str(),
                (None, _) => "table {{.FIP}}\t{{.Name}}\t{{.Container}}\t{{.Service}}",
            };
            print_rows(template, &ls_header(), &rows)?;
        }
        FipCmd::Attach(a) => {
            client.call(attach_request(&a.ip, &a.container)).await?;
        }
        FipCmd::Detach(a) => {
            let ip: String = client.json(detach_request(&a.container)).await?;
            println!("{ip}");
        }
        FipCmd::Release(a) => {
            return for_each(&a.ips, |ip| {
                let client = client.clone();
                async move {
                    client.call(release_request(&ip)).await?;
                    Ok(None)
                }
            })
            .await;
        }
        FipCmd::Name(a) => {
            client.call(name_request(&a.ip, &a.name)).await?;
        }
    }
    Ok(0)
}

/// A `GET /fips` entry (`{"fip","name","container","service"}`) as a row for `--format`.
pub fn ls_row(f: &Value) -> Value {
    let s = |k: &str| f[k].as_str().unwrap_or("").to_owned();
    json!({"FIP": s("fip"), "Name": s("name"), "Container": s("container"), "Service": s("service")})
}

fn ls_header() -> Value {
    json!({"FIP": "FLOATING IP", "Name": "NAME", "Container": "CONTAINER", "Service": "SERVICE"})
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
        cmd: FipCmd,
    }

    fn parse(args: &[&str]) -> FipCmd {
        T::try_parse_from(std::iter::once("fip").chain(args.iter().copied()))
            .unwrap()
            .cmd
    }

    #[test]
    fn requests() {
        let pq = |r: ApiRequest| {
            assert_eq!(r.method, http::Method::POST);
            r.path_and_query()
        };
        assert_eq!(pq(allocate_request(3)), "/v1.44/fips/allocate?count=3");
        assert_eq!(
            pq(attach_request("1.2.3.4", "web")),
            "/v1.44/fips/attach?ip=1.2.3.4&container=web"
        );
        assert_eq!(
            pq(detach_request("web")),
            "/v1.44/fips/detach?container=web"
        );
        assert_eq!(
            pq(release_request("1.2.3.4")),
            "/v1.44/fips/release?ip=1.2.3.4"
        );
        assert_eq!(
            pq(name_request("1.2.3.4", "my ip")),
            "/v1.44/fips/name?ip=1.2.3.4&name=my%20ip"
        );
    }

    #[test]
    fn arguments_and_aliases() {
        assert!(matches!(parse(&["allocate"]), FipCmd::Allocate(a) if a.count == 1));
        assert!(matches!(parse(&["allocate", "2"]), FipCmd::Allocate(a) if a.count == 2));
        assert!(matches!(
            parse(&["associate", "1.2.3.4", "web"]),
            FipCmd::Attach(a) if a.ip == "1.2.3.4" && a.container == "web"
        ));
        assert!(
            matches!(parse(&["disassociate", "web"]), FipCmd::Detach(a) if a.container == "web")
        );
        assert!(matches!(parse(&["release", "a", "b"]), FipCmd::Release(a) if a.ips.len() == 2));
        assert!(T::try_parse_from(["fip", "release"]).is_err());
        assert!(T::try_parse_from(["fip", "allocate", "two"]).is_err());
    }

    #[test]
    fn ls_table() {
        let t = Template::parse("table {{.FIP}}\t{{.Name}}\t{{.Container}}\t{{.Service}}").unwrap();
        let mut tw = TabWriter::new();
        tw.line(&t.render(&ls_header()).unwrap());
        for f in [
            json!({"fip": "203.0.113.7", "name": "front", "container": "web", "service": ""}),
            json!({"fip": "203.0.113.8", "name": "", "container": "", "service": "lb"}),
        ] {
            tw.line(&t.render(&ls_row(&f)).unwrap());
        }
        assert_eq!(
            tw.render(),
            "FLOATING IP   NAME      CONTAINER   SERVICE\n\
             203.0.113.7   front     web         \n\
             203.0.113.8                         lb\n"
        );
    }
}
