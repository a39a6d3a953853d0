//! A service as stored (`/services/{tenant}/{name}`) and as the API speaks it (Hyper's field
//! names, PascalCase).

use std::net::Ipv4Addr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Result, RuntimeError};

/// The label that makes a container a replica of a service.
pub const SERVICE_LABEL: &str = "sh_hyper_service";
/// The label holding the service generation a replica was made for (rolling updates).
pub const GENERATION_LABEL: &str = "sh_hyper_service_generation";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ServiceSpec {
    pub name: String,
    pub image: String,
    pub replicas: u32,
    pub service_port: u16,
    /// Defaults to `service_port`.
    pub container_port: u16,
    /// tcp | http | https | httpsTerm
    pub protocol: String,
    /// roundrobin | leastconn | source
    pub algorithm: String,
    pub session_affinity: bool,
    /// PEM chain plus key (httpsTerm).
    #[serde(rename = "SSLCert")]
    pub ssl_cert: String,
    pub health_check_interval: u32,
    pub health_check_fall: u32,
    pub health_check_rise: u32,
    pub health_check_path: String,
    pub container_size: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub labels: std::collections::BTreeMap<String, String>,
    pub volumes: Vec<String>,
    pub security_groups: Vec<String>,
    pub stop_signal: String,
    pub stdin: bool,
    pub tty: bool,
    pub working_dir: String,
}

impl Default for ServiceSpec {
    fn default() -> Self {
        Self {
            name: String::new(),
            image: String::new(),
            replicas: 1,
            service_port: 0,
            container_port: 0,
            protocol: "tcp".into(),
            algorithm: "roundrobin".into(),
            session_affinity: false,
            ssl_cert: String::new(),
            health_check_interval: 3,
            health_check_fall: 3,
            health_check_rise: 2,
            health_check_path: "/".into(),
            container_size: String::new(),
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            env: Vec::new(),
            labels: Default::default(),
            volumes: Vec::new(),
            security_groups: Vec::new(),
            stop_signal: String::new(),
            stdin: false,
            tty: false,
            working_dir: String::new(),
        }
    }
}

/// What hyperd keeps: the spec plus what it decided (IP, generation) and observed (status).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServiceRecord {
    pub tenant: String,
    pub spec: ServiceSpec,
    /// The stable address in the tenant's default network.
    pub ip: Ipv4Addr,
    pub network_id: String,
    /// Bumped by a rolling update; replicas of older generations are replaced one at a time.
    pub generation: u64,
    pub created: DateTime<Utc>,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub message: String,
    /// Replicas being taken out of the balancer before they stop (scale down, rolling update).
    #[serde(default)]
    pub draining: Vec<String>,
    /// The fleet node whose reconciler keeps it (and runs its replicas); empty in records from
    /// before the fleet, kept by any node.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
}

pub fn key(tenant: &str, name: &str) -> String {
    format!("/services/{tenant}/{name}")
}

/// Fills defaults and checks a spec from `POST /services/create`.
pub fn validate(spec: &mut ServiceSpec) -> Result<()> {
    let bad = |m: String| Err(RuntimeError::Invalid(m));
    crate::validate::container_name(&spec.name).map_err(|_| {
        RuntimeError::Invalid(format!(
            "invalid service name {:?}: use [a-zA-Z0-9][a-zA-Z0-9_.-], at least 2 characters",
            spec.name
        ))
    })?;
    if spec.name.len() > 48 {
        return bad("a service name has at most 48 characters".into());
    }
    if spec.image.is_empty() {
        return bad("a service needs an image".into());
    }
    if spec.service_port == 0 {
        return bad("a service needs a ServicePort (1-65535)".into());
    }
    if spec.container_port == 0 {
        spec.container_port = spec.service_port;
    }
    if spec.replicas > 50 {
        return bad("at most 50 replicas per service".into());
    }
    if !matches!(
        spec.protocol.as_str(),
        "tcp" | "http" | "https" | "httpsTerm"
    ) {
        return bad(format!(
            "invalid Protocol {:?}: tcp, http, https or httpsTerm",
            spec.protocol
        ));
    }
    if !matches!(
        spec.algorithm.as_str(),
        "roundrobin" | "leastconn" | "source"
    ) {
        return bad(format!(
            "invalid Algorithm {:?}: roundrobin, leastconn or source",
            spec.algorithm
        ));
    }
    if spec.protocol == "httpsTerm" && spec.ssl_cert.trim().is_empty() {
        return bad("Protocol httpsTerm needs SSLCert (a PEM certificate chain and key)".into());
    }
    if spec.protocol == "httpsTerm"
        && !(spec.ssl_cert.contains("BEGIN CERTIFICATE") && spec.ssl_cert.contains("PRIVATE KEY"))
    {
        return bad("SSLCert must hold a PEM certificate chain and its private key".into());
    }
    if spec.health_check_interval == 0 || spec.health_check_fall == 0 || spec.health_check_rise == 0
    {
        return bad(
            "HealthCheckInterval, HealthCheckFall and HealthCheckRise must be at least 1".into(),
        );
    }
    if !spec.health_check_path.starts_with('/') {
        return bad("HealthCheckPath must start with /".into());
    }
    // What the replicas' creates would refuse, refused once here rather than at every one.
    let command: Vec<String> = spec.entrypoint.iter().chain(&spec.cmd).cloned().collect();
    crate::validate::process(&command, &spec.env, &spec.working_dir, "", &[])?;
    if !spec.volumes.is_empty() {
        return Err(RuntimeError::Unsupported(
            "volumes on services are not supported yet".into(),
        ));
    }
    for g in &spec.security_groups {
        crate::network::sg::validate_name(g)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_get_defaults_and_checks() {
        let mut s: ServiceSpec = serde_json::from_str(
            r#"{"Name":"web","Image":"busybox","ServicePort":80,"Replicas":3}"#,
        )
        .unwrap();
        validate(&mut s).unwrap();
        assert_eq!(s.container_port, 80);
        assert_eq!((s.protocol.as_str(), s.health_check_fall), ("tcp", 3));
        for bad in [
            r#"{"Name":"web","Image":"busybox"}"#,
            r#"{"Name":"web","Image":"busybox","ServicePort":80,"Protocol":"udp"}"#,
            r#"{"Name":"web","Image":"busybox","ServicePort":80,"Protocol":"httpsTerm"}"#,
            r#"{"Name":"w","Image":"busybox","ServicePort":80}"#,
            r#"{"Name":"web","Image":"busybox","ServicePort":80,"Env":["A=\u0000"]}"#,
            r#"{"Name":"web","Image":"busybox","ServicePort":80,"Cmd":["a\u0000"]}"#,
        ] {
            let mut s: ServiceSpec = serde_json::from_str(bad).unwrap();
            assert!(validate(&mut s).is_err(), "{bad}");
        }
    }
}
