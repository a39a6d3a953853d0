//! The CLI's configuration file (`$HYPER_CONFIG/config.json`, else `~/.hyper/config.json`),
//! endpoint selection and credentials, with the environment overriding the file.
//!
//! ```json
//! {"clouds": {"tcp://127.0.0.1:6443": {"accesskey": "..", "secretkey": "..", "region": ".."}},
//!  "auths": {"registry.example.com": {"auth": "base64(user:password)"}}}
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const DEFAULT_HOST: &str = "unix:///var/run/hyper.sock";
/// Hyper's historical default region.
pub const DEFAULT_REGION: &str = "us-west-1";
pub const FILE_NAME: &str = "config.json";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a valid config file")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot find the config directory: set HYPER_CONFIG or HOME")]
    NoHome,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CloudConfig {
    #[serde(default)]
    pub accesskey: String,
    #[serde(default)]
    pub secretkey: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region: String,
    /// The CA that signed the daemon's TLS certificate (written by hyperd for its default
    /// tenant); when set the CLI checks the server against it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tlscacert: String,
}

/// A registry login, as docker stores it: `auth` is base64 of `user:password`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegistryAuth {
    #[serde(default)]
    pub auth: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigFile {
    #[serde(default)]
    pub clouds: BTreeMap<String, CloudConfig>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub auths: BTreeMap<String, RegistryAuth>,
    /// Keys written by other tools are kept as they are.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// The environment variables the CLI reads, captured once so the logic stays testable.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub host: Option<String>,
    pub access: Option<String>,
    pub secret: Option<String>,
    pub region: Option<String>,
    pub config_dir: Option<String>,
    pub home: Option<String>,
    pub api_version: Option<String>,
}

impl Env {
    pub fn from_process() -> Self {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Self {
            host: get("HYPER_HOST"),
            access: get("HYPER_ACCESS"),
            secret: get("HYPER_SECRET"),
            region: get("HYPER_DEFAULT_REGION"),
            config_dir: get("HYPER_CONFIG"),
            home: get("HOME"),
            api_version: get("HYPER_API_VERSION"),
        }
    }

    pub fn config_dir(&self) -> Result<PathBuf, ConfigError> {
        if let Some(dir) = &self.config_dir {
            return Ok(PathBuf::from(dir));
        }
        self.home
            .as_ref()
            .map(|h| Path::new(h).join(".hyper"))
            .ok_or(ConfigError::NoHome)
    }
}

impl ConfigFile {
    /// Reads `dir/config.json`; a missing file is an empty configuration.
    pub fn load(dir: &Path) -> Result<Self, ConfigError> {
        let path = dir.join(FILE_NAME);
        match fs::read(&path) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Ok(Self::default()),
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| ConfigError::Parse { path, source })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }

    /// Writes `dir/config.json` with mode 0600 (the directory 0700), replacing it atomically.
    pub fn save(&self, dir: &Path) -> Result<(), ConfigError> {
        let path = dir.join(FILE_NAME);
        let werr = |source| ConfigError::Write {
            path: path.clone(),
            source,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(werr)?;
        let tmp = dir.join(format!(".{FILE_NAME}.tmp{}", std::process::id()));
        let mut data = serde_json::to_vec_pretty(self).expect("config serializes");
        data.push(b'\n');
        let write = || -> io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.set_permissions(fs::Permissions::from_mode(0o600))?;
            f.write_all(&data)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            werr(e)
        })
    }

    /// The cloud entry for `endpoint`, matching `tcp://`, `http://` and `https://` forms of the
    /// same host:port.
    pub fn cloud(&self, endpoint: &str) -> Option<&CloudConfig> {
        self.clouds.get(endpoint).or_else(|| {
            let want = strip_scheme(endpoint);
            self.clouds
                .iter()
                .find(|(k, _)| strip_scheme(k) == want)
                .map(|(_, v)| v)
        })
    }
}

fn strip_scheme(s: &str) -> &str {
    let s = s.trim_end_matches('/');
    s.split_once("://").map_or(s, |(_, rest)| rest)
}

/// `-H/--host`, else `HYPER_HOST`, else the first cloud in the file, else the local socket.
pub fn select_endpoint(flag: Option<&str>, env: &Env, file: &ConfigFile) -> String {
    flag.map(str::to_owned)
        .or_else(|| env.host.clone())
        .or_else(|| file.clouds.keys().next().cloned())
        .unwrap_or_else(|| DEFAULT_HOST.to_owned())
}

/// Keys for `endpoint`: the file's entry, overridden field by field by `HYPER_ACCESS`,
/// `HYPER_SECRET`, and for the region `-R` > `HYPER_DEFAULT_REGION` > file > default.
/// `None` when no access key or secret is known.
pub fn credentials(
    endpoint: &str,
    region_flag: Option<&str>,
    env: &Env,
    file: &ConfigFile,
) -> Option<auth::Credentials> {
    let cloud = file.cloud(endpoint).cloned().unwrap_or_default();
    let nonempty = |s: String| Some(s).filter(|s| !s.is_empty());
    let access_key = env.access.clone().or_else(|| nonempty(cloud.accesskey))?;
    let secret_key = env.secret.clone().or_else(|| nonempty(cloud.secretkey))?;
    let region = region_flag
        .map(str::to_owned)
        .or_else(|| env.region.clone())
        .or_else(|| nonempty(cloud.region))
        .unwrap_or_else(|| DEFAULT_REGION.to_owned());
    Some(auth::Credentials {
        access_key,
        secret_key,
        region,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(endpoint: &str, ak: &str, sk: &str, region: &str) -> ConfigFile {
        let mut f = ConfigFile::default();
        f.clouds.insert(
            endpoint.into(),
            CloudConfig {
                accesskey: ak.into(),
                secretkey: sk.into(),
                region: region.into(),
                tlscacert: String::new(),
            },
        );
        f
    }

    #[test]
    fn endpoint_precedence() {
        let file = file_with("tcp://10.0.0.1:6443", "a", "s", "");
        let env = Env {
            host: Some("tcp://env:1".into()),
            ..Env::default()
        };
        assert_eq!(select_endpoint(Some("unix:///x"), &env, &file), "unix:///x");
        assert_eq!(select_endpoint(None, &env, &file), "tcp://env:1");
        assert_eq!(
            select_endpoint(None, &Env::default(), &file),
            "tcp://10.0.0.1:6443"
        );
        assert_eq!(
            select_endpoint(None, &Env::default(), &ConfigFile::default()),
            DEFAULT_HOST
        );
    }

    #[test]
    fn credentials_env_overrides_file() {
        let file = file_with("tcp://127.0.0.1:6443", "fa", "fs", "eu-1");
        let ep = "tcp://127.0.0.1:6443";
        let c = credentials(ep, None, &Env::default(), &file).unwrap();
        assert_eq!(
            (
                c.access_key.as_str(),
                c.secret_key.as_str(),
                c.region.as_str()
            ),
            ("fa", "fs", "eu-1")
        );

        let env = Env {
            access: Some("ea".into()),
            secret: Some("es".into()),
            region: Some("er".into()),
            ..Env::default()
        };
        let c = credentials(ep, None, &env, &file).unwrap();
        assert_eq!(
            (
                c.access_key.as_str(),
                c.secret_key.as_str(),
                c.region.as_str()
            ),
            ("ea", "es", "er")
        );
        let c = credentials(ep, Some("flag"), &env, &file).unwrap();
        assert_eq!(c.region, "flag");

        // Same host:port under another scheme still matches; default region applies.
        let file = file_with("https://127.0.0.1:6443", "fa", "fs", "");
        let c = credentials(ep, None, &Env::default(), &file).unwrap();
        assert_eq!(c.region, DEFAULT_REGION);
        assert!(credentials("tcp://other:1", None, &Env::default(), &file).is_none());
    }

    #[test]
    fn save_and_load_round_trip_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("cfg");
        assert_eq!(ConfigFile::load(&sub).unwrap(), ConfigFile::default());
        let mut f = file_with("tcp://127.0.0.1:6443", "ak", "sk", "us-west-1");
        f.auths.insert(
            "reg.io".into(),
            RegistryAuth {
                auth: "dTpw".into(),
            },
        );
        f.other.insert("psFormat".into(), serde_json::json!("x"));
        f.save(&sub).unwrap();
        let meta = fs::metadata(sub.join(FILE_NAME)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(ConfigFile::load(&sub).unwrap(), f);
        let raw: serde_json::Value =
            serde_json::from_slice(&fs::read(sub.join(FILE_NAME)).unwrap()).unwrap();
        assert_eq!(raw["clouds"]["tcp://127.0.0.1:6443"]["accesskey"], "ak");
    }

    #[test]
    fn bad_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), "{nope").unwrap();
        assert!(matches!(
            ConfigFile::load(dir.path()),
            Err(ConfigError::Parse { .. })
        ));
    }
}
