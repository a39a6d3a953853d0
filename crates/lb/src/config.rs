//! The config file hyperd writes: the services of one tenant, each with its listen address,
//! protocol, balancing policy, health check and backends.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub services: Vec<ServiceConfig>,
    /// Balance the services that allow it in the kernel (see `crate::kernel`): hyperd sets it
    /// for the balancer it runs as root in a tenant's namespace.
    #[serde(default)]
    pub kernel_balancing: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub name: String,
    pub listen: SocketAddr,
    pub protocol: Protocol,
    #[serde(default)]
    pub algorithm: Algorithm,
    #[serde(default)]
    pub session_affinity: bool,
    /// PEM certificate chain and private key in one file; `httpsTerm` only.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub backends: Vec<BackendConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Protocol {
    #[serde(rename = "tcp")]
    Tcp,
    #[serde(rename = "http")]
    Http,
    /// TLS passed through untouched: an L4 proxy like `tcp`.
    #[serde(rename = "https")]
    Https,
    /// TLS terminated here, plain HTTP to the backends.
    #[serde(rename = "httpsTerm")]
    HttpsTerm,
}

impl Protocol {
    /// Whether requests are proxied one by one (and health checked with HTTP GET).
    pub fn is_http(self) -> bool {
        matches!(self, Self::Http | Self::HttpsTerm)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    #[default]
    Roundrobin,
    Leastconn,
    Source,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Seconds between checks; fractions allowed (tests use them).
    pub interval_secs: f64,
    /// Consecutive failures that take a backend down.
    pub fall: u32,
    /// Consecutive successes that bring a down backend back.
    pub rise: u32,
    /// Path of the HTTP GET check (http and httpsTerm).
    pub http_path: String,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            interval_secs: 3.0,
            fall: 3,
            rise: 2,
            http_path: "/".into(),
        }
    }
}

impl HealthConfig {
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.interval_secs)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// The replica's container id, the key of the status file.
    pub id: String,
    pub addr: SocketAddr,
    /// The address connections to it leave from (a replica on another node of the fleet is
    /// reached from this node's own address on the network); none: the kernel's choice.
    #[serde(default)]
    pub source: Option<IpAddr>,
}

impl Config {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let config: Self = daemon_kit::json_file::read(path)?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> anyhow::Result<()> {
        let mut names = HashSet::new();
        let mut listens = HashSet::new();
        for service in &self.services {
            if !names.insert(&service.name) {
                bail!("two services are named {:?}", service.name);
            }
            if !listens.insert(service.listen) {
                bail!("two services listen on {}", service.listen);
            }
            service
                .check()
                .with_context(|| format!("service {:?}", service.name))?;
        }
        Ok(())
    }
}

impl ServiceConfig {
    fn check(&self) -> anyhow::Result<()> {
        if self.protocol == Protocol::HttpsTerm && self.tls_cert.is_none() {
            bail!("httpsTerm needs tls_cert");
        }
        let health = &self.health;
        if !(health.interval_secs.is_finite() && health.interval_secs > 0.0) {
            bail!("health.interval_secs must be positive");
        }
        if health.fall == 0 || health.rise == 0 {
            bail!("health.fall and health.rise must be at least 1");
        }
        if !health.http_path.starts_with('/') {
            bail!("health.http_path must start with /");
        }
        let mut ids = HashSet::new();
        for backend in &self.backends {
            if !ids.insert(&backend.id) {
                bail!("two backends have id {:?}", backend.id);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<Config> {
        let config: Config = serde_json::from_str(text)?;
        config.check()?;
        Ok(config)
    }

    #[test]
    fn full_service_parses_and_defaults_fill_the_rest() {
        let config = parse(
            r#"{ "services": [
                { "name": "web", "listen": "172.16.255.10:80", "protocol": "httpsTerm",
                  "algorithm": "leastconn", "session_affinity": true, "tls_cert": "/c.pem",
                  "health": { "interval_secs": 3, "fall": 3, "rise": 2, "http_path": "/hz" },
                  "backends": [ { "id": "3f2a9c1b7e4d", "addr": "172.16.0.5:8080" } ] },
                { "name": "db", "listen": "172.16.255.11:5432", "protocol": "tcp" } ] }"#,
        )
        .unwrap();
        let web = &config.services[0];
        assert_eq!(web.protocol, Protocol::HttpsTerm);
        assert_eq!(web.algorithm, Algorithm::Leastconn);
        assert_eq!(web.health.http_path, "/hz");
        let db = &config.services[1];
        assert_eq!(db.algorithm, Algorithm::Roundrobin);
        assert_eq!(db.health, HealthConfig::default());
        assert!(db.backends.is_empty());
    }

    #[test]
    fn inconsistent_configs_are_refused() {
        let one = |service: &str| parse(&format!(r#"{{ "services": [ {service} ] }}"#));
        assert!(
            one(r#"{ "name": "a", "listen": "10.0.0.1:443", "protocol": "httpsTerm" }"#).is_err()
        );
        assert!(one(
            r#"{ "name": "a", "listen": "10.0.0.1:80", "protocol": "http",
                 "health": { "interval_secs": 0 } }"#
        )
        .is_err());
        assert!(one(
            r#"{ "name": "a", "listen": "10.0.0.1:80", "protocol": "tcp",
                 "backends": [ { "id": "x", "addr": "10.0.0.2:1" }, { "id": "x", "addr": "10.0.0.3:1" } ] }"#
        )
        .is_err());
        assert!(parse(
            r#"{ "services": [ { "name": "a", "listen": "10.0.0.1:80", "protocol": "tcp" },
                               { "name": "b", "listen": "10.0.0.1:80", "protocol": "tcp" } ] }"#
        )
        .is_err());
        assert!(one(r#"{ "name": "a", "listen": "10.0.0.1:80", "protocol": "udp" }"#).is_err());
    }
}
