//! `hyper config [--accesskey AK --secretkey SK --default-region R] [ENDPOINT]`: stores the
//! keys for a cloud endpoint in the config file (mode 0600), prompting for missing ones.

use clap::Args;

use super::Ctx;
use crate::commands::system::prompt_secret;
use crate::config::{ConfigFile, FILE_NAME};
use crate::CliError;

#[derive(Args, Debug)]
pub struct ConfigArgs {
    /// Access key
    #[arg(long)]
    pub accesskey: Option<String>,
    /// Secret key
    #[arg(long)]
    pub secretkey: Option<String>,
    /// Default region for this endpoint
    #[arg(long = "default-region")]
    pub default_region: Option<String>,
    /// Endpoint (default: -H / HYPER_HOST / the first configured cloud / the local socket)
    pub endpoint: Option<String>,
}

/// Applies the flags to `file` for `endpoint`, keeping what is not given.
pub fn apply(
    file: &mut ConfigFile,
    endpoint: &str,
    ak: Option<String>,
    sk: Option<String>,
    region: Option<String>,
) {
    let entry = file.clouds.entry(endpoint.to_owned()).or_default();
    if let Some(ak) = ak {
        entry.accesskey = ak;
    }
    if let Some(sk) = sk {
        entry.secretkey = sk;
    }
    if let Some(r) = region {
        entry.region = r;
    }
}

pub async fn config(ctx: &Ctx, a: ConfigArgs) -> Result<i32, CliError> {
    let endpoint = a.endpoint.clone().unwrap_or_else(|| ctx.endpoint.clone());
    crate::transport::Endpoint::parse(&endpoint)?;
    let dir = ctx.config_dir()?;
    let mut file = ConfigFile::load(&dir)?;
    let existing = file.clouds.get(&endpoint).cloned().unwrap_or_default();
    let ask =
        |given: Option<String>, have: &str, label: &str| -> Result<Option<String>, CliError> {
            match given {
                Some(v) => Ok(Some(v)),
                None if have.is_empty() => Ok(Some(prompt_secret(label)?)),
                None => Ok(None),
            }
        };
    let ak = ask(a.accesskey, &existing.accesskey, "Enter Access Key: ")?;
    let sk = ask(a.secretkey, &existing.secretkey, "Enter Secret Key: ")?;
    apply(&mut file, &endpoint, ak, sk, a.default_region);
    file.save(&dir)?;
    eprintln!(
        "WARNING: Your login credentials have been saved in {}",
        dir.join(FILE_NAME).display()
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_keeps_unset_fields() {
        let mut f = ConfigFile::default();
        apply(
            &mut f,
            "tcp://h:1",
            Some("a".into()),
            Some("s".into()),
            Some("r".into()),
        );
        apply(&mut f, "tcp://h:1", Some("a2".into()), None, None);
        let c = &f.clouds["tcp://h:1"];
        assert_eq!(
            (
                c.accesskey.as_str(),
                c.secretkey.as_str(),
                c.region.as_str()
            ),
            ("a2", "s", "r")
        );
    }
}
