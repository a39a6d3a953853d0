//! Security groups (OpenStack Neutron semantics): named rule sets a tenant writes in YAML and
//! puts containers in with the `sh_hyper_sg_<name>=yes` label. `/sg/{tenant}/{name}` holds a
//! [`SecurityGroup`]. No group = open; groups but no egress rule = no outbound; no ingress rule
//! = nothing gets in.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use store::{Compare, Op, Store, Txn};

use crate::model::Container;
use crate::{Result, RuntimeError};

/// The label prefix that puts a container in a group.
pub const LABEL_PREFIX: &str = "sh_hyper_sg_";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroup {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub rules: Vec<SgRule>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SgRule {
    pub direction: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_range_min: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_range_max: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_ip_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_group_name: Option<String>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

fn key(tenant: &str, name: &str) -> String {
    format!("/sg/{tenant}/{name}")
}

pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::Invalid(format!(
            "invalid security group name {name:?}: use 1 to 64 letters, digits, '_', '-' or '.'"
        )))
    }
}

/// Parses a rules file: YAML (JSON is YAML too), checked rule by rule.
pub fn parse(body: &[u8], name: &str) -> Result<SecurityGroup> {
    let mut g: SecurityGroup = serde_yaml_ng::from_slice(body).map_err(|e| {
        RuntimeError::Invalid(format!("the security group file does not parse: {e}"))
    })?;
    if !g.name.is_empty() && g.name != name {
        return Err(RuntimeError::Invalid(format!(
            "the file names the group {:?} but the request names {name:?}",
            g.name
        )));
    }
    g.name = name.to_string();
    for (i, r) in g.rules.iter_mut().enumerate() {
        check_rule(r).map_err(|e| RuntimeError::Invalid(format!("rule {}: {e}", i + 1)))?;
    }
    Ok(g)
}

fn check_rule(r: &mut SgRule) -> std::result::Result<(), String> {
    if !matches!(r.direction.as_str(), "ingress" | "egress") {
        return Err(format!(
            "direction {:?} must be ingress or egress",
            r.direction
        ));
    }
    r.protocol = r.protocol.to_ascii_lowercase();
    if r.protocol == "any" {
        r.protocol.clear();
    }
    if !matches!(r.protocol.as_str(), "" | "tcp" | "udp" | "icmp") {
        return Err(format!(
            "protocol {:?} must be tcp, udp, icmp or empty (any)",
            r.protocol
        ));
    }
    let ports = r.port_range_min.is_some() || r.port_range_max.is_some();
    if ports && !matches!(r.protocol.as_str(), "tcp" | "udp") {
        return Err("port ranges need protocol tcp or udp".into());
    }
    if ports {
        let min = r.port_range_min.or(r.port_range_max).unwrap_or(0);
        let max = r.port_range_max.or(r.port_range_min).unwrap_or(0);
        if min == 0 || min > max {
            return Err(format!(
                "port range {min}-{max} must satisfy 1 <= port_range_min <= port_range_max"
            ));
        }
        r.port_range_min = Some(min);
        r.port_range_max = Some(max);
    }
    if r.remote_ip_prefix.is_some() && r.remote_group_name.is_some() {
        return Err("give remote_ip_prefix or remote_group_name, not both".into());
    }
    if let Some(p) = &r.remote_ip_prefix {
        let net: Ipv4Net = p
            .parse()
            .or_else(|_| p.parse::<Ipv4Addr>().map(Ipv4Net::from))
            .map_err(|_| format!("remote_ip_prefix {p:?} is not an IPv4 CIDR"))?;
        r.remote_ip_prefix = Some(net.trunc().to_string());
    }
    Ok(())
}

pub fn get(store: &dyn Store, tenant: &str, name: &str) -> Result<SecurityGroup> {
    let kv = store
        .get(&key(tenant, name))?
        .ok_or_else(|| RuntimeError::NotFound(format!("security group {name} not found")))?;
    serde_json::from_slice(&kv.value)
        .map_err(|e| RuntimeError::Internal(format!("bad security group record: {e}")))
}

pub fn list(store: &dyn Store, tenant: &str) -> Result<Vec<SecurityGroup>> {
    store
        .range(&format!("/sg/{tenant}/"))?
        .iter()
        .map(|kv| {
            serde_json::from_slice(&kv.value)
                .map_err(|e| RuntimeError::Internal(format!("bad security group record: {e}")))
        })
        .collect()
}

/// Every remote group a rule names must exist in the tenant (or be the group itself).
fn check_remote_groups(store: &dyn Store, tenant: &str, g: &SecurityGroup) -> Result<()> {
    for r in &g.rules {
        if let Some(remote) = &r.remote_group_name {
            if remote != &g.name && store.get(&key(tenant, remote))?.is_none() {
                return Err(RuntimeError::Invalid(format!(
                    "remote_group_name {remote}: no such security group"
                )));
            }
        }
    }
    Ok(())
}

pub fn create(store: &dyn Store, tenant: &str, g: &SecurityGroup) -> Result<()> {
    validate_name(&g.name)?;
    check_remote_groups(store, tenant, g)?;
    let k = key(tenant, &g.name);
    let r = store.txn(
        Txn::new()
            .when(Compare::Absent(k.clone()))
            .then(Op::Put(k, serde_json::to_vec(g).expect("json"))),
    )?;
    if r.succeeded {
        Ok(())
    } else {
        Err(RuntimeError::Conflict(format!(
            "security group {} already exists; use sg update",
            g.name
        )))
    }
}

pub fn update(store: &dyn Store, tenant: &str, g: &SecurityGroup) -> Result<()> {
    get(store, tenant, &g.name)?;
    check_remote_groups(store, tenant, g)?;
    store.put(&key(tenant, &g.name), serde_json::to_vec(g).expect("json"))?;
    Ok(())
}

/// Removes a group no container is in and no other group refers to.
pub fn delete(store: &dyn Store, tenant: &str, name: &str, members: &[String]) -> Result<()> {
    get(store, tenant, name)?;
    if let Some(c) = members.first() {
        return Err(RuntimeError::Conflict(format!(
            "security group {name} is in use by container {c}; remove it from its containers first (hyper update --sg-rm {name})"
        )));
    }
    if let Some(other) = list(store, tenant)?.into_iter().find(|g| {
        g.name != name
            && g.rules
                .iter()
                .any(|r| r.remote_group_name.as_deref() == Some(name))
    }) {
        return Err(RuntimeError::Conflict(format!(
            "security group {name} is referred to by group {}",
            other.name
        )));
    }
    store.delete(&key(tenant, name))?;
    Ok(())
}

/// The groups a container is in, from its labels.
pub fn groups_of(c: &Container) -> Vec<String> {
    c.config
        .labels
        .iter()
        .filter(|(k, v)| k.starts_with(LABEL_PREFIX) && v.as_str() != "no" && v.as_str() != "false")
        .map(|(k, _)| k[LABEL_PREFIX.len()..].to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_files_parse_and_are_checked() {
        let g = parse(
            b"name: web\ndescription: web tier\nrules:\n- direction: ingress\n  protocol: TCP\n  port_range_min: 80\n  port_range_max: 80\n  remote_ip_prefix: 10.0.0.7/24\n- direction: egress\n",
            "web",
        )
        .unwrap();
        assert_eq!(g.rules[0].protocol, "tcp");
        assert_eq!(g.rules[0].remote_ip_prefix.as_deref(), Some("10.0.0.0/24"));
        assert_eq!(g.rules[1].protocol, "");
        for (bad, why) in [
            ("rules:\n- direction: sideways\n", "direction"),
            ("rules:\n- direction: ingress\n  protocol: icmp\n  port_range_min: 1\n", "tcp or udp"),
            ("rules:\n- direction: ingress\n  protocol: tcp\n  port_range_min: 90\n  port_range_max: 80\n", "port_range_min"),
            ("rules:\n- direction: ingress\n  remote_ip_prefix: nope\n", "IPv4"),
            ("rules: [\n", "does not parse"),
            ("name: other\n", "names the group"),
            ("rules:\n- direction: ingress\n  colour: red\n", "does not parse"),
        ] {
            let e = parse(bad.as_bytes(), "web").unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
