//! `service create|ls|inspect|scale|rolling-update|attach-fip|detach-fip|rm`: Hyper's load
//! balanced services (`/services` endpoints), their replicas being ordinary containers.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use super::{for_each, print_rows, Ctx};
use crate::commands::run::{env_list, label_map};
use crate::transport::ApiRequest;
use crate::CliError;

#[derive(Subcommand, Debug)]
pub enum ServiceCmd {
    /// Create a service
    Create(Box<ServiceCreateArgs>),
    /// List services
    #[command(alias = "list")]
    Ls(ServiceLsArgs),
    /// Display detailed information on one or more services
    Inspect(ServiceInspectArgs),
    /// Scale one or more services
    Scale(ServiceScaleArgs),
    /// Replace a service's containers with a new image, one at a time
    #[command(name = "rolling-update")]
    RollingUpdate(ServiceRollingUpdateArgs),
    /// Attach a floating IP to a service
    #[command(name = "attach-fip")]
    AttachFip(ServiceAttachFipArgs),
    /// Detach the floating IP of a service
    #[command(name = "detach-fip")]
    DetachFip(ServiceNameArg),
    /// Remove one or more services
    #[command(alias = "remove")]
    Rm(ServiceRmArgs),
}

#[derive(Args, Debug)]
pub struct ServiceCreateArgs {
    /// Service name
    #[arg(long)]
    pub name: String,
    /// Number of containers
    #[arg(long, default_value_t = 1)]
    pub replicas: u32,
    /// Port the service listens on
    #[arg(long = "service-port")]
    pub service_port: u16,
    /// Port the containers listen on (default: the service port)
    #[arg(long = "container-port")]
    pub container_port: Option<u16>,
    /// Protocol (httpsTerm: TLS ends at the service, HTTP goes to the containers)
    #[arg(long, value_parser = ["tcp", "http", "https", "httpsTerm"])]
    pub protocol: Option<String>,
    /// How to pick a container
    #[arg(long, value_parser = ["roundrobin", "leastconn", "source"])]
    pub algorithm: Option<String>,
    /// Send each client to the same container
    #[arg(long = "session-affinity")]
    pub session_affinity: bool,
    /// PEM file with the certificate chain and its key
    #[arg(long = "ssl-cert", value_name = "FILE")]
    pub ssl_cert: Option<PathBuf>,
    /// Seconds between health checks
    #[arg(long = "health-check-interval")]
    pub health_check_interval: Option<u32>,
    /// Failed checks before a container is taken out
    #[arg(long = "health-check-fall")]
    pub health_check_fall: Option<u32>,
    /// Passed checks before a container is put back
    #[arg(long = "health-check-rise")]
    pub health_check_rise: Option<u32>,
    /// Path of the HTTP health check (http and httpsTerm; default /)
    #[arg(long = "health-check-path")]
    pub health_check_path: Option<String>,
    /// Container size (s1..s4, m1..m3, l1..l3)
    #[arg(long)]
    pub size: Option<String>,
    /// Set environment variables
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long = "env-file")]
    pub env_file: Vec<PathBuf>,
    /// Set meta data on the containers
    #[arg(short = 'l', long = "label")]
    pub labels: Vec<String>,
    /// Overwrite the default ENTRYPOINT of the image
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Working directory inside the containers
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// Security group to join (repeatable)
    #[arg(long = "sg")]
    pub sg: Vec<String>,
    /// Mount a volume in each container
    #[arg(short = 'v', long = "volume")]
    pub volumes: Vec<String>,
    /// Signal to stop the containers
    #[arg(long = "stop-signal")]
    pub stop_signal: Option<String>,
    /// Keep STDIN open
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    pub tty: bool,
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
pub struct ServiceLsArgs {
    /// Only display names
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Format output using a Go template
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct ServiceInspectArgs {
    /// Format output using a Go template
    #[arg(short = 'f', long)]
    pub format: Option<String>,
    #[arg(required = true, value_name = "SERVICE")]
    pub services: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ServiceScaleArgs {
    #[arg(required = true, value_name = "SERVICE=REPLICAS")]
    pub specs: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ServiceRollingUpdateArgs {
    /// The new image
    #[arg(long)]
    pub image: String,
    #[arg(value_name = "SERVICE")]
    pub name: String,
}

#[derive(Args, Debug)]
pub struct ServiceAttachFipArgs {
    /// The floating IP
    #[arg(long)]
    pub fip: String,
    #[arg(value_name = "SERVICE")]
    pub name: String,
}

#[derive(Args, Debug)]
pub struct ServiceNameArg {
    #[arg(value_name = "SERVICE")]
    pub name: String,
}

#[derive(Args, Debug)]
pub struct ServiceRmArgs {
    /// Keep the service's containers
    #[arg(long)]
    pub keep: bool,
    #[arg(required = true, value_name = "SERVICE")]
    pub services: Vec<String>,
}

/// The `POST /services/create` body: the name, image, replicas and service port always, every
/// other field only when its flag was given (the server has the defaults).
pub fn create_body(
    a: &ServiceCreateArgs,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Value, String> {
    if a.protocol.as_deref() == Some("httpsTerm") && a.ssl_cert.is_none() {
        return Err("--protocol httpsTerm needs --ssl-cert".into());
    }
    let mut b = Map::new();
    let mut set = |k: &str, v: Value| {
        b.insert(k.to_owned(), v);
    };
    set("Name", json!(a.name));
    set("Image", json!(a.image));
    set("Replicas", json!(a.replicas));
    set("ServicePort", json!(a.service_port));
    let optional = [
        ("ContainerPort", a.container_port.map(Value::from)),
        ("Protocol", a.protocol.as_deref().map(Value::from)),
        ("Algorithm", a.algorithm.as_deref().map(Value::from)),
        (
            "SessionAffinity",
            a.session_affinity.then_some(Value::Bool(true)),
        ),
        (
            "HealthCheckInterval",
            a.health_check_interval.map(Value::from),
        ),
        ("HealthCheckFall", a.health_check_fall.map(Value::from)),
        ("HealthCheckRise", a.health_check_rise.map(Value::from)),
        (
            "HealthCheckPath",
            a.health_check_path.as_deref().map(Value::from),
        ),
        ("ContainerSize", a.size.as_deref().map(Value::from)),
        // Docker's --entrypoint is one word; an empty one clears the image's.
        ("Entrypoint", a.entrypoint.as_deref().map(|e| json!([e]))),
        ("Cmd", (!a.command.is_empty()).then(|| json!(a.command))),
        ("WorkingDir", a.workdir.as_deref().map(Value::from)),
        ("SecurityGroups", (!a.sg.is_empty()).then(|| json!(a.sg))),
        ("Volumes", (!a.volumes.is_empty()).then(|| json!(a.volumes))),
        ("StopSignal", a.stop_signal.as_deref().map(Value::from)),
        ("Stdin", a.interactive.then_some(Value::Bool(true))),
        ("Tty", a.tty.then_some(Value::Bool(true))),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            set(k, v);
        }
    }
    let env = env_list(&a.env, &a.env_file, lookup)?;
    if !env.is_empty() {
        set("Env", json!(env));
    }
    if !a.labels.is_empty() {
        set("Labels", Value::Object(label_map(&a.labels)));
    }
    if let Some(path) = &a.ssl_cert {
        let pem =
            std::fs::read_to_string(path).map_err(|e| format!("open {}: {e}", path.display()))?;
        set("SSLCert", json!(pem));
    }
    Ok(Value::Object(b))
}

/// `NAME=N` to (name, replicas), as `docker service scale` takes them.
pub fn parse_scale(spec: &str) -> Result<(String, u32), String> {
    let bad = || format!("invalid scale specifier '{spec}': expected SERVICE=REPLICAS");
    let (name, n) = spec.split_once('=').ok_or_else(bad)?;
    if name.is_empty() {
        return Err(bad());
    }
    let n = n
        .parse()
        .map_err(|_| format!("invalid replicas value {n:?} for {name}: a number is needed"))?;
    Ok((name.to_owned(), n))
}

/// `POST /services/NAME/update` with one change: `{"Replicas": N}`, `{"Image": ..}` or
/// `{"FIP": ip}` (`""` detaches).
pub fn update_request(name: &str, change: Value) -> ApiRequest {
    ApiRequest::post(format!("/services/{name}/update")).json(&change)
}

pub fn rm_request(name: &str, keep: bool) -> ApiRequest {
    ApiRequest::delete(format!("/services/{name}")).query("keep", keep)
}

/// One `service ls` row from a `GET /services` entry.
pub fn ls_row(s: &Value) -> Value {
    let text = |k: &str| s[k].as_str().unwrap_or("").to_owned();
    let num = |k: &str| s[k].as_u64().map(|n| n.to_string()).unwrap_or_default();
    let service_port = num("ServicePort");
    let container_port = s["ContainerPort"]
        .as_u64()
        .filter(|&p| p != 0)
        .map_or_else(|| service_port.clone(), |p| p.to_string());
    let protocol = s["Protocol"]
        .as_str()
        .filter(|p| !p.is_empty())
        .unwrap_or("tcp");
    json!({
        "Name": text("Name"),
        "Image": text("Image"),
        "IP": text("IP"),
        "FIP": text("FIP"),
        "Ports": format!("{service_port}->{container_port}/{protocol}"),
        "Replicas": num("Replicas"),
        "Status": text("Status"),
        "Message": text("Message"),
    })
}

fn ls_header() -> Value {
    json!({
        "Name": "NAME", "Image": "IMAGE", "IP": "IP", "FIP": "FIP", "Ports": "PORTS",
        "Replicas": "REPLICAS", "Status": "STATUS", "Message": "MESSAGE",
    })
}

const LS_TABLE: &str =
    "table {{.Name}}\t{{.IP}}\t{{.FIP}}\t{{.Ports}}\t{{.Replicas}}\t{{.Status}}\t{{.Message}}";

pub async fn service_cmd(ctx: &Ctx, c: ServiceCmd) -> Result<i32, CliError> {
    match c {
        ServiceCmd::Create(a) => {
            let body = create_body(&a, &|k| std::env::var(k).ok()).map_err(CliError::Msg)?;
            let req = ApiRequest::post("/services/create").json(&body);
            let resp: Value = ctx.client()?.json(req).await?;
            println!("{}", resp["Name"].as_str().unwrap_or(&a.name));
            Ok(0)
        }
        ServiceCmd::Ls(a) => {
            let list: Vec<Value> = ctx.client()?.json(ApiRequest::get("/services")).await?;
            let rows: Vec<Value> = list.iter().map(ls_row).collect();
            let template = match (&a.format, a.quiet) {
                (_, true) => "{{.Name}}",
                (Some(f), _) => f.as_str(),
                (None, _) => LS_TABLE,
            };
            print_rows(template, &ls_header(), &rows)?;
            Ok(0)
        }
        ServiceCmd::Inspect(a) => inspect(ctx, a).await,
        ServiceCmd::Scale(a) => {
            // Every specifier is checked before any service changes.
            for spec in &a.specs {
                parse_scale(spec).map_err(CliError::Msg)?;
            }
            let client = ctx.client()?;
            for_each(&a.specs, |spec| {
                let client = client.clone();
                async move {
                    let (name, replicas) = parse_scale(&spec).map_err(CliError::Msg)?;
                    client
                        .call(update_request(&name, json!({"Replicas": replicas})))
                        .await?;
                    Ok(Some(format!("{name} scaled to {replicas}")))
                }
            })
            .await
        }
        ServiceCmd::RollingUpdate(a) => update_one(ctx, &a.name, json!({"Image": a.image})).await,
        ServiceCmd::AttachFip(a) => update_one(ctx, &a.name, json!({"FIP": a.fip})).await,
        ServiceCmd::DetachFip(a) => update_one(ctx, &a.name, json!({"FIP": ""})).await,
        ServiceCmd::Rm(a) => {
            let client = ctx.client()?;
            for_each(&a.services, |name| {
                let client = client.clone();
                async move {
                    client.call(rm_request(&name, a.keep)).await?;
                    Ok(Some(name))
                }
            })
            .await
        }
    }
}

async fn update_one(ctx: &Ctx, name: &str, change: Value) -> Result<i32, CliError> {
    ctx.client()?.call(update_request(name, change)).await?;
    println!("{name}");
    Ok(0)
}

/// Like docker: the services found as one JSON array, then an error line per missing one.
async fn inspect(ctx: &Ctx, a: ServiceInspectArgs) -> Result<i32, CliError> {
    super::inspect_each(ctx, a.format.as_deref(), &a.services, |name| {
        format!("/services/{name}")
    })
    .await
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
        cmd: ServiceCmd,
    }

    fn parse(args: &[&str]) -> Result<ServiceCmd, clap::Error> {
        T::try_parse_from(std::iter::once("service").chain(args.iter().copied())).map(|t| t.cmd)
    }

    fn body(args: &[&str]) -> Result<Value, String> {
        let mut all = vec!["create"];
        all.extend_from_slice(args);
        let ServiceCmd::Create(a) = parse(&all).unwrap() else {
            panic!("not create")
        };
        create_body(&a, &|k| (k == "HOME").then(|| "/root".to_owned()))
    }

    #[test]
    fn minimal_create() {
        let b = body(&["--name", "web", "--service-port", "80", "nginx"]).unwrap();
        assert_eq!(
            b,
            json!({"Name": "web", "Image": "nginx", "Replicas": 1, "ServicePort": 80})
        );
        assert!(parse(&["create", "--service-port", "80", "nginx"]).is_err());
        assert!(parse(&["create", "--name", "web", "nginx"]).is_err());
    }

    #[test]
    fn every_create_flag_is_sent() {
        let mut cert = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut cert, b"-----BEGIN CERTIFICATE-----\n").unwrap();
        let cert_path = cert.path().to_str().unwrap().to_owned();
        let b = body(&[
            "--name",
            "web",
            "--replicas",
            "3",
            "--service-port",
            "443",
            "--container-port",
            "8080",
            "--protocol",
            "httpsTerm",
            "--algorithm",
            "leastconn",
            "--session-affinity",
            "--ssl-cert",
            &cert_path,
            "--health-check-interval",
            "5",
            "--health-check-fall",
            "4",
            "--health-check-rise",
            "1",
            "--size",
            "s2",
            "-e",
            "A=1",
            "-e",
            "HOME",
            "-l",
            "tier=front",
            "--entrypoint",
            "/start",
            "-w",
            "/srv",
            "--sg",
            "web",
            "--sg",
            "ssh",
            "-v",
            "data:/data",
            "--stop-signal",
            "SIGQUIT",
            "-i",
            "-t",
            "nginx",
            "nginx",
            "-g",
            "daemon off;",
        ])
        .unwrap();
        assert_eq!(
            b,
            json!({
                "Name": "web", "Image": "nginx", "Replicas": 3, "ServicePort": 443, "ContainerPort": 8080,
                "Protocol": "httpsTerm", "Algorithm": "leastconn", "SessionAffinity": true,
                "SSLCert": "-----BEGIN CERTIFICATE-----\n", "HealthCheckInterval": 5, "HealthCheckFall": 4,
                "HealthCheckRise": 1, "ContainerSize": "s2", "Env": ["A=1", "HOME=/root"],
                "Labels": {"tier": "front"}, "Entrypoint": ["/start"], "Cmd": ["nginx", "-g", "daemon off;"],
                "WorkingDir": "/srv", "SecurityGroups": ["web", "ssh"], "Volumes": ["data:/data"],
                "StopSignal": "SIGQUIT", "Stdin": true, "Tty": true,
            })
        );
    }

    #[test]
    fn bad_create_flags() {
        fn with<'a>(extra: &[&'a str]) -> Vec<&'a str> {
            let mut v = vec!["--name", "web", "--service-port", "80"];
            v.extend_from_slice(extra);
            v.push("nginx");
            v
        }
        assert!(body(&with(&["--protocol", "httpsTerm"]))
            .unwrap_err()
            .contains("needs --ssl-cert"));
        assert!(body(&with(&["--ssl-cert", "/nonexistent/cert.pem"]))
            .unwrap_err()
            .contains("/nonexistent/cert.pem"));
        let mut all = vec!["create"];
        all.extend(with(&["--protocol", "udp"]));
        assert!(parse(&all).is_err());
        let mut all = vec!["create"];
        all.extend(with(&["--algorithm", "random"]));
        assert!(parse(&all).is_err());
    }

    #[test]
    fn update_and_rm_requests() {
        assert_eq!(parse_scale("web=3").unwrap(), ("web".to_owned(), 3));
        for bad in ["web", "=3", "web=x", "web=-1"] {
            assert!(parse_scale(bad).is_err(), "{bad}");
        }
        let r = update_request("web", json!({"FIP": ""}));
        assert_eq!(r.method, http::Method::POST);
        assert_eq!(r.path_and_query(), "/v1.44/services/web/update");
        assert_eq!(&r.body[..], br#"{"FIP":""}"#);
        assert_eq!(
            rm_request("web", false).path_and_query(),
            "/v1.44/services/web?keep=false"
        );
        assert_eq!(rm_request("web", true).method, http::Method::DELETE);
        assert!(matches!(
            parse(&["attach-fip", "--fip", "1.2.3.4", "web"]).unwrap(),
            ServiceCmd::AttachFip(a) if a.fip == "1.2.3.4" && a.name == "web"
        ));
        assert!(matches!(
            parse(&["rolling-update", "--image", "nginx:2", "web"]).unwrap(),
            ServiceCmd::RollingUpdate(a) if a.image == "nginx:2"
        ));
        assert!(parse(&["rolling-update", "web"]).is_err());
    }

    #[test]
    fn ls_table() {
        let s = json!({"Name": "web", "Image": "nginx", "IP": "10.0.0.9", "FIP": "203.0.113.7",
                       "ServicePort": 80, "ContainerPort": 8080, "Protocol": "http", "Replicas": 2,
                       "Status": "active", "Message": "", "Containers": ["a", "b"]});
        let t = Template::parse(LS_TABLE).unwrap();
        let mut tw = TabWriter::new();
        tw.line(&t.render(&ls_header()).unwrap());
        tw.line(&t.render(&ls_row(&s)).unwrap());
        assert_eq!(
            tw.render(),
            "NAME      IP         FIP           PORTS           REPLICAS   STATUS    MESSAGE\n\
             web       10.0.0.9   203.0.113.7   80->8080/http   2          active    \n"
        );
        let bare = ls_row(&json!({"Name": "db", "ServicePort": 5432}));
        assert_eq!(bare["Ports"], "5432->5432/tcp");
    }
}
