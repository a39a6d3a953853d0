//! The records hyperd keeps per container, in the store, shaped after Docker's so the API layer
//! can answer `inspect` without translation tables.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

/// Docker's container `Config` (the fields we act on; the rest is refused or ignored by the API
/// layer before it gets here).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerConfig {
    pub hostname: String,
    pub domainname: String,
    pub user: String,
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
    pub tty: bool,
    pub open_stdin: bool,
    pub stdin_once: bool,
    #[serde(deserialize_with = "null_as_default")]
    pub env: Vec<String>,
    #[serde(deserialize_with = "string_or_list")]
    pub cmd: Vec<String>,
    #[serde(deserialize_with = "string_or_list")]
    pub entrypoint: Vec<String>,
    pub image: String,
    pub working_dir: String,
    #[serde(deserialize_with = "null_as_default")]
    pub labels: std::collections::BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<i64>,
    /// `{"80/tcp": {}}`: ports the image or `--expose` declares (what `-P` publishes).
    #[serde(deserialize_with = "null_as_default")]
    pub exposed_ports: std::collections::BTreeMap<String, serde_json::Value>,
    /// `{"/data": {}}`: anonymous volumes (`-v /data`).
    #[serde(deserialize_with = "null_as_default")]
    pub volumes: std::collections::BTreeMap<String, serde_json::Value>,
    /// The request's, merged with the image's `HEALTHCHECK` at create.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
}

/// Docker's `Healthcheck`: `Test` is `["CMD", args...]`, `["CMD-SHELL", line]`, `["NONE"]`
/// or empty (the image's); durations in nanoseconds, zero meaning the default.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct HealthConfig {
    #[serde(deserialize_with = "null_as_default")]
    pub test: Vec<String>,
    #[serde(deserialize_with = "null_as_default")]
    pub interval: i64,
    #[serde(deserialize_with = "null_as_default")]
    pub timeout: i64,
    #[serde(deserialize_with = "null_as_default")]
    pub start_period: i64,
    #[serde(deserialize_with = "null_as_default")]
    pub start_interval: i64,
    #[serde(deserialize_with = "null_as_default")]
    pub retries: i64,
}

/// `State.Health` as Docker shows it: `starting`, `healthy` or `unhealthy`, the failures in a
/// row, and the last probes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Health {
    pub status: String,
    pub failing_streak: u64,
    pub log: Vec<HealthProbe>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct HealthProbe {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub exit_code: i64,
    pub output: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct RestartPolicy {
    pub name: String,
    pub maximum_retry_count: i64,
}

/// The part of Docker's `HostConfig` that hyperd honours.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct HostConfig {
    pub auto_remove: bool,
    #[serde(deserialize_with = "null_as_default")]
    pub restart_policy: RestartPolicy,
    /// "", "default", "bridge" (the tenant's default network), "none", or a user network.
    pub network_mode: String,
    /// `{"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}` as `-p` sends it.
    #[serde(deserialize_with = "null_as_default")]
    pub port_bindings: std::collections::BTreeMap<String, Option<Vec<PortBinding>>>,
    pub publish_all_ports: bool,
    /// `name:alias` (the Docker CLI sends `/name:/me/alias`; both are accepted).
    #[serde(deserialize_with = "null_as_default")]
    pub links: Vec<String>,
    #[serde(deserialize_with = "null_as_default")]
    pub dns: Vec<String>,
    #[serde(deserialize_with = "null_as_default")]
    pub dns_search: Vec<String>,
    #[serde(deserialize_with = "null_as_default")]
    pub dns_options: Vec<String>,
    /// `host:ip` lines for /etc/hosts (`--add-host`).
    #[serde(deserialize_with = "null_as_default")]
    pub extra_hosts: Vec<String>,
    /// `NAME:/path[:ro]` (`-v`): volumes, never host paths.
    #[serde(deserialize_with = "null_as_default")]
    pub binds: Vec<String>,
    /// `--mount type=volume,...`.
    #[serde(deserialize_with = "null_as_default")]
    pub mounts: Vec<crate::volumes::request::MountSpec>,
    /// `--volume-driver`: the driver of the volumes this create makes (named ones made on
    /// first use, anonymous ones) when `--mount` names none.
    pub volume_driver: String,
    /// "" or "default" (a VM per container is hyper's only isolation), shown as asked.
    #[serde(deserialize_with = "null_as_default")]
    pub isolation: String,
    /// `--volumes-from CTR[:ro|rw]`.
    #[serde(deserialize_with = "null_as_default")]
    pub volumes_from: Vec<String>,
    /// `--group-add`: further groups of the container's processes, numbers or names.
    #[serde(deserialize_with = "strings_or_numbers")]
    pub group_add: Vec<String>,
    /// The log driver (json-file, the only one) and its options (see `crate::log_options`).
    #[serde(deserialize_with = "null_as_default")]
    pub log_config: LogConfig,
    /// `--tmpfs /path[:options]`: path -> Docker's option string (see `crate::tmpfs`).
    #[serde(deserialize_with = "null_as_default")]
    pub tmpfs: std::collections::BTreeMap<String, String>,
}

/// Docker's `HostConfig.LogConfig`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct LogConfig {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(deserialize_with = "null_as_default")]
    pub config: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct PortBinding {
    pub host_ip: String,
    pub host_port: String,
}

/// A port published on the node: `host_ip:host_port` (node) -> `container_port` (container).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PublishedPort {
    /// "tcp" or "udp".
    pub proto: String,
    /// `None`: every address of the node.
    pub host_ip: Option<std::net::Ipv4Addr>,
    pub host_port: u16,
    pub container_port: u16,
}

/// A container's place in its tenant's network, decided at create and kept for its life (the
/// IP survives stop and start).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Endpoint {
    pub network_id: String,
    pub network_name: String,
    pub ip: std::net::Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: std::net::Ipv4Addr,
    pub mac: String,
    /// Extra names the container answers to on its network (compose's service names).
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub ports: Vec<PublishedPort>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Created,
    Running,
    Restarting,
    Removing,
    Exited,
    Dead,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Restarting => "restarting",
            Status::Removing => "removing",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub status: Status,
    pub exit_code: i64,
    pub error: String,
    pub oom_killed: bool,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Set when the user stopped it: `unless-stopped` and `always` then leave it alone.
    pub stopped_by_user: bool,
    /// While it runs with a health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// Its VM is stopped (`docker pause`); only meaningful while it runs.
    #[serde(default)]
    pub paused: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Container {
    pub id: String,
    pub tenant: String,
    /// Without Docker's leading slash.
    pub name: String,
    pub created: DateTime<Utc>,
    /// The image as the user named it.
    pub image: String,
    pub image_id: String,
    /// The resolved command: entrypoint + cmd after merging with the image.
    pub path: String,
    pub args: Vec<String>,
    pub config: ContainerConfig,
    pub host_config: HostConfig,
    /// Instance type, `s4` unless a label asked otherwise.
    pub size: String,
    pub state: State,
    pub restart_count: u64,
    /// `None`: `--network none` (or a record from before networking).
    #[serde(default)]
    pub endpoint: Option<Endpoint>,
    /// Its volumes, in slot order (decided at create).
    #[serde(default)]
    pub mounts: Vec<crate::volumes::Mount>,
    /// The fleet node that runs it (`--node-name`). Empty in records from before the fleet:
    /// the first node to recover them adopts them.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    /// When the fleet declared its node lost (`crate::losses`): it is stopped for good there,
    /// whatever that node says when it comes back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost: Option<DateTime<Utc>>,
}

impl Container {
    pub fn short_id(&self) -> &str {
        &self.id[..12]
    }
    pub fn is_running(&self) -> bool {
        matches!(self.state.status, Status::Running | Status::Restarting)
    }
    /// Running with its VM stopped (`docker pause`).
    pub fn is_paused(&self) -> bool {
        self.is_running() && self.state.paused
    }
    /// Docker's state word (`State.Status`, the `status` filter): "paused" for a paused one.
    pub fn docker_state(&self) -> &'static str {
        if self.is_paused() {
            "paused"
        } else {
            self.state.status.as_str()
        }
    }
}

fn null_as_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `GroupAdd` as docker-py sends it too: numbers among the strings; `null` is none.
fn strings_or_numbers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Item {
        Text(String),
        Number(u32),
    }
    let items = Option::<Vec<Item>>::deserialize(d)?.unwrap_or_default();
    Ok(items
        .into_iter()
        .map(|i| match i {
            Item::Text(t) => t,
            Item::Number(n) => n.to_string(),
        })
        .collect())
}

/// Docker accepts `"Cmd": "echo hi"` as well as a list; a string is run through a shell.
fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<Either>::deserialize(d)? {
        None => Vec::new(),
        Some(Either::One(s)) => vec!["/bin/sh".into(), "-c".into(), s],
        Some(Either::Many(v)) => v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_accepts_docker_shapes() {
        let c: ContainerConfig = serde_json::from_str(
            r#"{"Cmd":"echo hi","Entrypoint":null,"Env":null,"Labels":{"a":"b"},"Tty":true}"#,
        )
        .unwrap();
        assert_eq!(c.cmd, ["/bin/sh", "-c", "echo hi"]);
        assert!(c.entrypoint.is_empty() && c.env.is_empty() && c.tty);
        assert_eq!(c.labels["a"], "b");
    }
}
