//! What a container's network looks like from inside: its /etc/resolv.conf, the extra
//! /etc/hosts lines (links, `--add-host`) and Docker's link environment variables. Pure.

use std::net::Ipv4Addr;

use crate::model::{Container, HostConfig};
use crate::{Result, RuntimeError};

/// The tenant's DNS server answers on the gateway; `--dns` servers follow it (resolvers move
/// to the next server when one fails), `--dns-search` and `--dns-option` as Docker writes them.
pub fn resolv_conf(gateway: Ipv4Addr, hc: &HostConfig) -> String {
    let mut out = format!("nameserver {gateway}\n");
    for s in &hc.dns {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !hc.dns_search.is_empty() {
        out.push_str(&format!("search {}\n", hc.dns_search.join(" ")));
    }
    if !hc.dns_options.is_empty() {
        out.push_str(&format!("options {}\n", hc.dns_options.join(" ")));
    }
    out
}

/// Checks `--dns` addresses and `--add-host` entries at create.
pub fn validate(hc: &HostConfig) -> Result<()> {
    for s in &hc.dns {
        s.parse::<std::net::IpAddr>().map_err(|_| {
            RuntimeError::Invalid(format!(
                "invalid --dns {s:?}: give a DNS server's IP address"
            ))
        })?;
    }
    for h in &hc.extra_hosts {
        parse_extra_host(h)?;
    }
    Ok(())
}

/// `host:ip` (Docker also accepts `host=ip`).
fn parse_extra_host(h: &str) -> Result<(String, String)> {
    let (host, ip) = h
        .split_once(['=', ':'])
        .ok_or_else(|| RuntimeError::Invalid(format!("invalid --add-host {h:?}: use host:ip")))?;
    ip.parse::<std::net::IpAddr>().map_err(|_| {
        RuntimeError::Invalid(format!(
            "invalid --add-host {h:?}: {ip:?} is not an IP address"
        ))
    })?;
    if host.is_empty() {
        return Err(RuntimeError::Invalid(format!(
            "invalid --add-host {h:?}: the host name is empty"
        )));
    }
    Ok((host.to_string(), ip.to_string()))
}

/// `name:alias`, `name`, or the Docker CLI's `/name:/me/alias` -> (target, alias).
pub fn parse_link(link: &str) -> (String, String) {
    let (target, alias) = link.split_once(':').unwrap_or((link, link));
    let target = target.trim_start_matches('/').to_string();
    let alias = alias.rsplit('/').next().unwrap_or(alias).to_string();
    (target, alias)
}

/// Extra /etc/hosts lines: each link's target under its alias and name, then `--add-host`.
pub fn hosts_lines(links: &[(Container, String)], hc: &HostConfig) -> Vec<String> {
    let mut out = Vec::new();
    for (target, alias) in links {
        if let Some(ep) = &target.endpoint {
            let mut names = vec![alias.clone()];
            if &target.name != alias {
                names.push(target.name.clone());
            }
            names.push(target.short_id().to_string());
            out.push(format!("{}\t{}", ep.ip, names.join(" ")));
        }
    }
    for h in &hc.extra_hosts {
        if let Ok((host, ip)) = parse_extra_host(h) {
            out.push(format!("{ip}\t{host}"));
        }
    }
    out
}

/// Docker's legacy link variables for `--link target:alias` seen from container `me`:
/// `ALIAS_NAME`, `ALIAS_PORT`, `ALIAS_PORT_80_TCP{,_ADDR,_PORT,_PROTO}`, `ALIAS_ENV_*`.
pub fn link_env(me: &str, target: &Container, alias: &str) -> Vec<String> {
    let prefix: String = alias
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    let mut out = vec![format!("{prefix}_NAME=/{me}/{alias}")];
    let Some(ep) = &target.endpoint else {
        return out;
    };
    let mut ports: Vec<(u16, String)> = target
        .config
        .exposed_ports
        .keys()
        .filter_map(|k| super::ports::parse_container_port(k).ok())
        .collect();
    ports.sort();
    if let Some((port, proto)) = ports.first() {
        out.push(format!("{prefix}_PORT={proto}://{}:{port}", ep.ip));
    }
    for (port, proto) in &ports {
        let p = format!("{prefix}_PORT_{port}_{}", proto.to_ascii_uppercase());
        out.push(format!("{p}={proto}://{}:{port}", ep.ip));
        out.push(format!("{p}_ADDR={}", ep.ip));
        out.push(format!("{p}_PORT={port}"));
        out.push(format!("{p}_PROTO={proto}"));
    }
    for e in &target.config.env {
        let Some((k, v)) = e.split_once('=') else {
            continue;
        };
        if !matches!(k, "PATH" | "HOME" | "HOSTNAME") {
            out.push(format!("{prefix}_ENV_{k}={v}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_puts_the_gateway_first() {
        let hc: HostConfig = serde_json::from_str(
            r#"{"Dns":["9.9.9.9"],"DnsSearch":["corp"],"DnsOptions":["ndots:2"]}"#,
        )
        .unwrap();
        assert_eq!(
            resolv_conf(Ipv4Addr::new(172, 16, 0, 1), &hc),
            "nameserver 172.16.0.1\nnameserver 9.9.9.9\nsearch corp\noptions ndots:2\n"
        );
    }

    #[test]
    fn links_and_hosts_parse_like_docker() {
        assert_eq!(parse_link("db:data"), ("db".into(), "data".into()));
        assert_eq!(parse_link("/db:/web/data"), ("db".into(), "data".into()));
        assert_eq!(parse_link("db"), ("db".into(), "db".into()));
        let bad: HostConfig = serde_json::from_str(r#"{"ExtraHosts":["nope"]}"#).unwrap();
        assert!(validate(&bad).is_err());
        let good: HostConfig =
            serde_json::from_str(r#"{"ExtraHosts":["db.local:10.0.0.9"]}"#).unwrap();
        validate(&good).unwrap();
        assert_eq!(hosts_lines(&[], &good), ["10.0.0.9\tdb.local"]);
    }
}
