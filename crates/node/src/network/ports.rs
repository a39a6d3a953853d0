//! Published ports: Docker's `PortBindings`/`PublishAllPorts`/`ExposedPorts` turned into the
//! requests hyperd allocates on the node. Pure parsing; allocation is in `records`.

use std::net::Ipv4Addr;

use crate::model::{ContainerConfig, HostConfig};

/// One port to publish; `host_port: None` asks for a free one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRequest {
    pub proto: String,
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: Option<u16>,
    pub container_port: u16,
}

/// Where random host ports come from (Linux's default ephemeral range, as Docker uses).
pub const EPHEMERAL: std::ops::RangeInclusive<u16> = 32768..=60999;

/// `"80"`, `"80/tcp"`, `"53/udp"` -> (port, proto).
pub fn parse_container_port(key: &str) -> Result<(u16, String), String> {
    let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    let proto = proto.to_ascii_lowercase();
    if !matches!(proto.as_str(), "tcp" | "udp") {
        return Err(format!(
            "invalid port {key:?}: hyper publishes tcp and udp ports only"
        ));
    }
    if port.contains('-') {
        return Err(format!(
            "invalid port {key:?}: port ranges are not supported; publish each port"
        ));
    }
    let n: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port {key:?}: a port is a number from 1 to 65535"))?;
    Ok((n, proto))
}

fn parse_host_ip(s: &str) -> Result<Option<Ipv4Addr>, String> {
    match s {
        "" | "0.0.0.0" => Ok(None),
        _ => s
            .parse()
            .map(Some)
            .map_err(|_| format!("invalid host IP {s:?}: use an IPv4 address of this node")),
    }
}

fn parse_host_port(s: &str) -> Result<Option<u16>, String> {
    if s.is_empty() || s == "0" {
        return Ok(None);
    }
    if s.contains('-') {
        return Err(format!(
            "invalid host port {s:?}: port ranges are not supported"
        ));
    }
    s.parse()
        .ok()
        .filter(|p: &u16| *p > 0)
        .map(Some)
        .ok_or_else(|| format!("invalid host port {s:?}: a port is a number from 1 to 65535"))
}

/// Everything `-p` and `-P` ask for, in a stable order, duplicates refused.
pub fn requests(config: &ContainerConfig, hc: &HostConfig) -> Result<Vec<PortRequest>, String> {
    let mut out: Vec<PortRequest> = Vec::new();
    for (key, bindings) in &hc.port_bindings {
        let (container_port, proto) = parse_container_port(key)?;
        let bindings = bindings.clone().unwrap_or_default();
        if bindings.is_empty() {
            out.push(PortRequest {
                proto: proto.clone(),
                host_ip: None,
                host_port: None,
                container_port,
            });
        }
        for b in bindings {
            out.push(PortRequest {
                proto: proto.clone(),
                host_ip: parse_host_ip(&b.host_ip)?,
                host_port: parse_host_port(&b.host_port)?,
                container_port,
            });
        }
    }
    if hc.publish_all_ports {
        for key in config.exposed_ports.keys() {
            let (container_port, proto) = parse_container_port(key)?;
            let bound = out
                .iter()
                .any(|r| r.container_port == container_port && r.proto == proto);
            if !bound {
                out.push(PortRequest {
                    proto,
                    host_ip: None,
                    host_port: None,
                    container_port,
                });
            }
        }
    }
    for (i, a) in out.iter().enumerate() {
        if let Some(hp) = a.host_port {
            if out[..i]
                .iter()
                .any(|b| b.host_port == Some(hp) && b.proto == a.proto)
            {
                return Err(format!(
                    "host port {hp}/{} is published twice in this container",
                    a.proto
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hc(json: &str) -> HostConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn bindings_and_publish_all() {
        let mut config = ContainerConfig::default();
        config
            .exposed_ports
            .insert("80/tcp".into(), serde_json::json!({}));
        config
            .exposed_ports
            .insert("53/udp".into(), serde_json::json!({}));
        let h = hc(
            r#"{"PortBindings":{"80/tcp":[{"HostIp":"127.0.0.1","HostPort":"8080"}]},"PublishAllPorts":true}"#,
        );
        let r = requests(&config, &h).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].host_port, Some(8080));
        assert_eq!(r[0].host_ip, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(r[1].proto, "udp");
        assert_eq!(r[1].host_port, None);
    }

    #[test]
    fn bad_ports_are_refused() {
        let c = ContainerConfig::default();
        for bad in [
            r#"{"PortBindings":{"80/sctp":null}}"#,
            r#"{"PortBindings":{"0/tcp":null}}"#,
            r#"{"PortBindings":{"80/tcp":[{"HostIp":"","HostPort":"70000"}]}}"#,
            r#"{"PortBindings":{"80/tcp":[{"HostIp":"nope","HostPort":"1"}]}}"#,
            r#"{"PortBindings":{"80/tcp":[{"HostPort":"9"}],"81/tcp":[{"HostPort":"9"}]}}"#,
        ] {
            assert!(requests(&c, &hc(bad)).is_err(), "{bad}");
        }
    }
}
