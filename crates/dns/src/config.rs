//! The config file hyperd writes: which addresses to listen on, the names each network knows,
//! and where unknown names go.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use anyhow::bail;
use serde::Deserialize;

/// Port assumed for an upstream written as a bare address.
const DNS_PORT: u16 = 53;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub networks: Vec<NetworkConfig>,
    #[serde(default, deserialize_with = "upstream_addresses")]
    pub upstream: Vec<SocketAddr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// The network's gateway address inside the tenant namespace.
    pub listen: IpAddr,
    /// Container name, alias or short id -> its addresses on this network.
    #[serde(default)]
    pub records: BTreeMap<String, Vec<IpAddr>>,
    /// Names only one client resolves: client address -> name -> addresses (a container's
    /// links on a user-defined network).
    #[serde(default)]
    pub links: BTreeMap<IpAddr, BTreeMap<String, Vec<IpAddr>>>,
}

impl Config {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let config: Self = daemon_kit::json_file::read(path)?;
        config.check()?;
        Ok(config)
    }

    /// Two networks on one address could not be told apart by the listener.
    fn check(&self) -> anyhow::Result<()> {
        let mut seen = HashSet::new();
        for network in &self.networks {
            if !seen.insert(network.listen) {
                bail!("two networks listen on {}", network.listen);
            }
        }
        Ok(())
    }
}

/// "192.0.2.53:53" or a bare "192.0.2.53" (port 53), as resolv.conf lists them.
fn upstream_addresses<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<SocketAddr>, D::Error> {
    let texts = Vec::<String>::deserialize(deserializer)?;
    texts
        .iter()
        .map(|text| {
            text.parse::<SocketAddr>()
                .or_else(|_| {
                    text.parse::<IpAddr>()
                        .map(|ip| SocketAddr::new(ip, DNS_PORT))
                })
                .map_err(|_| serde::de::Error::custom(format!("bad upstream address {text:?}")))
        })
        .collect()
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
    fn reads_the_documented_shape() {
        let config = parse(
            r#"{ "networks": [ { "listen": "172.16.0.1",
                 "records": { "web": ["172.16.0.2"], "db": ["172.16.0.3"] } } ],
                 "upstream": ["192.0.2.53:53", "192.0.2.54"] }"#,
        )
        .unwrap();
        assert_eq!(
            config.networks[0].listen,
            "172.16.0.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            config.networks[0].records["db"],
            ["172.16.0.3".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            config.upstream,
            [
                "192.0.2.53:53".parse::<SocketAddr>().unwrap(),
                "192.0.2.54:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn upstream_and_records_may_be_left_out() {
        let config = parse(r#"{ "networks": [ { "listen": "10.0.0.1" } ] }"#).unwrap();
        assert!(config.upstream.is_empty());
        assert!(config.networks[0].records.is_empty());
    }

    #[test]
    fn refuses_two_networks_on_one_address() {
        let err =
            parse(r#"{ "networks": [ { "listen": "10.0.0.1" }, { "listen": "10.0.0.1" } ] }"#)
                .unwrap_err();
        assert!(err.to_string().contains("two networks"), "{err}");
    }

    #[test]
    fn refuses_a_bad_upstream() {
        assert!(parse(r#"{ "networks": [], "upstream": ["dns.example"] }"#).is_err());
    }
}
