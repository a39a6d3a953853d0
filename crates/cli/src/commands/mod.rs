//! One module per command group; each exposes its clap arguments and an async `run`-style
//! function returning the process exit code.

pub mod commit;
pub mod compose;
pub mod config;
pub mod containers;
pub mod cp;
pub mod cron;
pub mod events;
pub mod exec;
pub mod export;
pub mod fip;
pub mod func;
pub mod health;
pub mod image_transfer;
pub mod images;
pub mod mounts;
pub mod network;
pub mod run;
pub mod service;
pub mod sg;
pub mod snapshot;
pub mod system;
pub mod usage;
pub mod volume;
pub mod volume_init;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use crate::config::{ConfigFile, Env};
use crate::transport::Client;
use crate::CliError;

/// What every command may need: the environment, the config file, the chosen endpoint and a
/// client for it (built on first use, so `hyper config` works with a bad endpoint).
pub struct Ctx {
    pub env: Env,
    pub file: ConfigFile,
    pub endpoint: String,
    pub region: Option<String>,
    client: OnceLock<Arc<Client>>,
}

impl Ctx {
    pub fn new(env: Env, file: ConfigFile, endpoint: String, region: Option<String>) -> Self {
        Self {
            env,
            file,
            endpoint,
            region,
            client: OnceLock::new(),
        }
    }

    pub fn config_dir(&self) -> Result<PathBuf, CliError> {
        Ok(self.env.config_dir()?)
    }

    pub fn client(&self) -> Result<Arc<Client>, CliError> {
        if let Some(c) = self.client.get() {
            return Ok(c.clone());
        }
        let creds = crate::config::credentials(
            &self.endpoint,
            self.region.as_deref(),
            &self.env,
            &self.file,
        );
        let ca = std::env::var_os("HYPER_TLSCACERT")
            .map(PathBuf::from)
            .or_else(|| {
                let cloud = self.file.cloud(&self.endpoint)?;
                (!cloud.tlscacert.is_empty()).then(|| PathBuf::from(&cloud.tlscacert))
            });
        let mut c = Client::new(&self.endpoint, creds, ca.as_deref())?;
        if let Some(v) = &self.env.api_version {
            c = c.with_api_version(v);
        }
        let c = Arc::new(c);
        Ok(self.client.get_or_init(|| c).clone())
    }
}

/// Runs `f` for each name, printing what it returns on success and the error otherwise, as
/// docker's multi-container commands do; exit status 1 if any failed.
pub async fn for_each<F, Fut>(names: &[String], mut f: F) -> Result<i32, CliError>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<Option<String>, CliError>>,
{
    let mut status = 0;
    for name in names {
        match f(name.clone()).await {
            Ok(Some(line)) => println!("{line}"),
            Ok(None) => {}
            Err(e) => {
                eprintln!("{}", crate::error_chain(&e));
                status = 1;
            }
        }
    }
    Ok(status)
}

/// Prints rows through a `--format` template: with the `table` prefix (or for the default
/// formats) a header row rendered from `header` and aligned columns, otherwise one line per row.
pub fn print_rows(
    template: &str,
    header: &serde_json::Value,
    rows: &[serde_json::Value],
) -> Result<(), CliError> {
    let t = crate::format::Template::parse(template)?;
    if t.table {
        let mut tw = crate::table::TabWriter::new();
        tw.line(&t.render(header)?);
        for r in rows {
            tw.line(&t.render(r)?);
        }
        tw.flush()?;
    } else {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        for r in rows {
            writeln!(out, "{}", t.render(r)?)?;
        }
    }
    Ok(())
}

/// `inspect` for one kind of object, as docker does it: the objects found as one JSON array
/// (or each through the template), then the error of each name that was not; exit status 1 if
/// any failed.
pub async fn inspect_each(
    ctx: &Ctx,
    format: Option<&str>,
    names: &[String],
    path: impl Fn(&str) -> String,
) -> Result<i32, CliError> {
    let client = ctx.client()?;
    let template = format.map(crate::format::Template::parse).transpose()?;
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for name in names {
        match client
            .json::<serde_json::Value>(crate::transport::ApiRequest::get(path(name)))
            .await
        {
            Ok(v) => found.push(v),
            Err(e) => errors.push(crate::error_chain(&e)),
        }
    }
    containers::print_inspect(&found, template.as_ref())?;
    for e in &errors {
        eprintln!("{e}");
    }
    Ok(i32::from(!errors.is_empty()))
}

/// JSON the way `docker inspect` prints it: 4-space indentation.
pub fn pretty_json(v: &serde_json::Value) -> String {
    use serde::Serialize;
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    v.serialize(&mut ser).expect("JSON value serializes");
    String::from_utf8(buf).expect("JSON is UTF-8")
}
