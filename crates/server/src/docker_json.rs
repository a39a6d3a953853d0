//! Our records in Docker's JSON shapes (docker-engine-api-v1.44.yaml): inspect, list items.

use chrono::{DateTime, Utc};
use node::model::{Container, Status};
use serde_json::{json, Value};

const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

pub fn time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
        .unwrap_or_else(|| ZERO_TIME.into())
}

/// "Up 3 seconds", "Up 3 seconds (Paused)", "Exited (0) 2 minutes ago", "Created": the STATUS
/// column of `docker ps`.
pub fn status_text(c: &Container, now: DateTime<Utc>) -> String {
    match c.state.status {
        Status::Running if c.is_paused() => format!(
            "Up {} (Paused)",
            human_duration(now - c.state.started_at.unwrap_or(now))
        ),
        Status::Running => format!(
            "Up {}{}",
            human_duration(now - c.state.started_at.unwrap_or(now)),
            match c.state.health.as_ref().map(|h| h.status.as_str()) {
                None => String::new(),
                Some("starting") => " (health: starting)".into(),
                Some(status) => format!(" ({status})"),
            }
        ),
        Status::Restarting => format!(
            "Restarting ({}) {} ago",
            c.state.exit_code,
            human_duration(now - c.state.finished_at.unwrap_or(now))
        ),
        Status::Exited => format!(
            "Exited ({}) {} ago",
            c.state.exit_code,
            human_duration(now - c.state.finished_at.unwrap_or(now))
        ),
        Status::Created => "Created".into(),
        Status::Removing => "Removal In Progress".into(),
        Status::Dead => "Dead".into(),
    }
}

/// Docker's go-units HumanDuration.
pub fn human_duration(d: chrono::TimeDelta) -> String {
    let secs = d.num_seconds().max(0);
    match secs {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        s if s < 60 => format!("{s} seconds"),
        s if s / 60 == 1 => "About a minute".into(),
        s if s < 3600 => format!("{} minutes", s / 60),
        s if (s as f64 / 3600.0).round() == 1.0 => "About an hour".into(),
        s if s < 48 * 3600 => format!("{} hours", (s as f64 / 3600.0).round() as i64),
        s if s < 7 * 24 * 3600 * 2 => format!("{} days", s / 86400),
        s if s < 30 * 24 * 3600 * 3 => format!("{} weeks", s / (7 * 86400)),
        s if s < 365 * 24 * 3600 * 2 => format!("{} months", s / (30 * 86400)),
        s => format!("{} years", s / (365 * 86400)),
    }
}

fn command_line(c: &Container) -> String {
    std::iter::once(c.path.as_str())
        .chain(c.args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Docker lists a linked container under each link's name too (`/web/db` for `web`'s
/// `--link db`): container id -> those names.
pub fn link_names(all: &[Container]) -> std::collections::HashMap<String, Vec<String>> {
    let mut names: std::collections::HashMap<String, Vec<String>> = Default::default();
    for parent in all {
        for link in &parent.host_config.links {
            let (target, alias) = node::network::parse_link(link);
            if let Some(t) = all.iter().find(|t| t.name == target || t.id == target) {
                names
                    .entry(t.id.clone())
                    .or_default()
                    .push(format!("/{}/{alias}", parent.name));
            }
        }
    }
    names
}

pub fn list_item(c: &Container, now: DateTime<Utc>) -> Value {
    json!({
        "Id": c.id,
        "Names": [format!("/{}", c.name)],
        "Image": c.image,
        "ImageID": c.image_id,
        "Command": command_line(c),
        "Created": c.created.timestamp(),
        "Ports": list_ports(c),
        "Labels": c.config.labels,
        "State": c.docker_state(),
        "Status": status_text(c, now),
        "HostConfig": {"NetworkMode": network_mode(c)},
        "NetworkSettings": {"Networks": networks(c)},
        "Mounts": mounts(c),
    })
}

/// `GET /containers/{id}/json`. Paths of the node (its log file) stay empty: tenants read logs
/// through the API.
pub fn inspect(c: &Container) -> Value {
    let s = &c.state;
    // Docker says null for what was not asked.
    let or_null = |v: Value| match &v {
        Value::Array(a) if a.is_empty() => Value::Null,
        Value::Object(o) if o.is_empty() => Value::Null,
        _ => v,
    };
    let binds = or_null(json!(c.host_config.binds));
    let host_mounts = or_null(json!(c.host_config.mounts));
    let volumes_from = or_null(json!(c.host_config.volumes_from));
    let anonymous = or_null(json!(c.config.volumes));
    let running = c.is_running();
    let mut state = json!({
        "Status": c.docker_state(),
        "Running": running,
        "Paused": c.is_paused(),
        "Restarting": s.status == Status::Restarting,
        "OOMKilled": s.oom_killed,
        "Dead": s.status == Status::Dead,
        "Pid": 0,
        "ExitCode": s.exit_code,
        "Error": s.error,
        "StartedAt": time(s.started_at),
        "FinishedAt": time(s.finished_at),
    });
    if let Some(health) = &s.health {
        state["Health"] = json!(health);
    }
    let mut inspect = json!({
        "Id": c.id,
        "Created": time(Some(c.created)),
        "Path": c.path,
        "Args": c.args,
        "State": state,
        "Image": c.image_id,
        "ResolvConfPath": "",
        "HostnamePath": "",
        "HostsPath": "",
        "LogPath": "",
        "Name": format!("/{}", c.name),
        "RestartCount": c.restart_count,
        "Driver": "qcow2",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": null,
        "HostConfig": {
            "AutoRemove": c.host_config.auto_remove,
            "RestartPolicy": c.host_config.restart_policy,
            "NetworkMode": network_mode(c),
            "LogConfig": {"Type": "json-file", "Config": c.host_config.log_config.config},
            "Runtime": "hyper",
            "Binds": binds,
            "Mounts": host_mounts,
            "VolumesFrom": volumes_from,
            "PortBindings": c.host_config.port_bindings,
            "PublishAllPorts": c.host_config.publish_all_ports,
            "Links": or_null(json!(legacy_links(c))),
            "Dns": c.host_config.dns,
            "DnsSearch": c.host_config.dns_search,
            "DnsOptions": c.host_config.dns_options,
            "ExtraHosts": c.host_config.extra_hosts,
            "Privileged": false,
            "VolumeDriver": c.host_config.volume_driver,
            "ConsoleSize": [0, 0],
            "ContainerIDFile": "",
            "Isolation": c.host_config.isolation,
            "Memory": 0, "NanoCpus": 0,
        },
        "GraphDriver": {"Name": "qcow2", "Data": null},
        "Mounts": mounts(c),
        "Config": {
            "Hostname": c.config.hostname,
            "Domainname": c.config.domainname,
            "User": c.config.user,
            "AttachStdin": c.config.attach_stdin,
            "AttachStdout": c.config.attach_stdout,
            "AttachStderr": c.config.attach_stderr,
            "Tty": c.config.tty,
            "OpenStdin": c.config.open_stdin,
            "StdinOnce": c.config.stdin_once,
            "Env": c.config.env,
            "Cmd": if c.config.cmd.is_empty() { Value::Null } else { json!(c.config.cmd) },
            "Entrypoint": if c.config.entrypoint.is_empty() { Value::Null } else { json!(c.config.entrypoint) },
            "Image": c.image,
            "WorkingDir": c.config.working_dir,
            "Labels": c.config.labels,
            "StopSignal": c.config.stop_signal,
            "StopTimeout": c.config.stop_timeout,
            "ExposedPorts": c.config.exposed_ports,
            "Volumes": anonymous,
        },
        "NetworkSettings": network_settings(c),
        "HyperSize": c.size,
    });
    if let Some(check) = &c.config.healthcheck {
        inspect["Config"]["Healthcheck"] = json!(check);
    }
    inspect["Config"]["OnBuild"] = Value::Null;
    if !c.host_config.tmpfs.is_empty() {
        inspect["HostConfig"]["Tmpfs"] = json!(c.host_config.tmpfs);
    }
    // What Docker reports of the resource controls and host namespaces hyper refuses: their
    // zero values (each VM is the boundary; its size is its resources).
    let zero = json!({
        "BlkioDeviceReadBps": [], "BlkioDeviceReadIOps": [], "BlkioDeviceWriteBps": [],
        "BlkioDeviceWriteIOps": [], "BlkioWeight": 0, "BlkioWeightDevice": [], "CapAdd": null,
        "CapDrop": null, "Cgroup": "", "CgroupParent": "", "CgroupnsMode": "private",
        "CpuCount": 0, "CpuPercent": 0, "CpuPeriod": 0, "CpuQuota": 0, "CpuRealtimePeriod": 0,
        "CpuRealtimeRuntime": 0, "CpuShares": 0, "CpusetCpus": "", "CpusetMems": "",
        "DeviceCgroupRules": null, "DeviceRequests": null, "Devices": [],
        "IOMaximumBandwidth": 0, "IOMaximumIOps": 0, "IpcMode": "private", "KernelMemory": 0,
        "KernelMemoryTCP": 0, "MaskedPaths": null, "MemoryReservation": 0, "MemorySwap": 0,
        "MemorySwappiness": null, "OomKillDisable": false, "OomScoreAdj": 0, "PidMode": "",
        "PidsLimit": null, "ReadonlyPaths": null, "ReadonlyRootfs": false, "SecurityOpt": null,
        "ShmSize": 0, "UTSMode": "", "Ulimits": [], "UsernsMode": "",
    });
    for (k, v) in zero.as_object().into_iter().flatten() {
        inspect["HostConfig"][k] = v.clone();
    }
    inspect["HostConfig"]["GroupAdd"] = or_null(json!(c.host_config.group_add));
    // The node that runs it, as Docker's classic Swarm showed it.
    if !c.node.is_empty() {
        inspect["Node"] = json!({"Name": c.node});
    }
    inspect
}

/// Docker's `MountPoint`s: every mount is a volume (a disk of the container's VM), so
/// `Source` is empty: no host path holds it.
fn mounts(c: &Container) -> Value {
    c.mounts
        .iter()
        .map(|m| {
            json!({
                "Type": "volume",
                "Name": m.volume,
                "Source": "",
                "Destination": m.destination,
                "Driver": "hyper",
                "Mode": if m.read_only { "ro" } else { "" },
                "RW": !m.read_only,
                "Propagation": "",
            })
        })
        .collect()
}

fn network_mode(c: &Container) -> String {
    match (&c.endpoint, c.host_config.network_mode.as_str()) {
        (None, _) => "none".into(),
        (Some(_), "") => "default".into(),
        (Some(_), m) => m.into(),
    }
}

/// `NetworkSettings.Networks`: the container's one network, keyed by its name.
/// `--link db:alias` as Docker's inspect shows it: `/db:/web/alias`.
fn legacy_links(c: &Container) -> Vec<String> {
    c.host_config
        .links
        .iter()
        .map(|l| {
            let (target, alias) = l.split_once(':').unwrap_or((l, l));
            format!("/{target}:/{}/{alias}", c.name)
        })
        .collect()
}

fn networks(c: &Container) -> Value {
    let Some(ep) = &c.endpoint else {
        return json!({"none": {
            "IPAMConfig": null, "Links": null, "Aliases": null, "NetworkID": "", "EndpointID": "",
            "Gateway": "", "IPAddress": "", "IPPrefixLen": 0, "IPv6Gateway": "",
            "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "MacAddress": "", "DriverOpts": null,
        }});
    };
    // As dockerd since API 1.45: Aliases are the ones asked for; the short ID is among the
    // DNS names (it still resolves) and not listed as an alias.
    let aliases = if ep.aliases.is_empty() {
        Value::Null
    } else {
        json!(ep.aliases)
    };
    let mut dns_names = vec![c.name.clone(), c.short_id().to_string()];
    dns_names.extend(ep.aliases.iter().cloned());
    json!({ ep.network_name.clone(): {
        "IPAMConfig": null,
        "Links": if c.host_config.links.is_empty() { Value::Null } else { json!(c.host_config.links) },
        "Aliases": aliases,
        "MacAddress": ep.mac,
        "NetworkID": ep.network_id,
        "EndpointID": c.id,
        "Gateway": ep.gateway.to_string(),
        "IPAddress": ep.ip.to_string(),
        "IPPrefixLen": ep.prefix_len,
        "IPv6Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "DNSNames": dns_names,
        "DriverOpts": null,
    }})
}

/// Docker's `NetworkSettings.Ports`: every exposed or published port, with its bindings
/// (`null` when only exposed).
fn ports(c: &Container) -> Value {
    let mut out = serde_json::Map::new();
    for key in c.config.exposed_ports.keys() {
        let key = if key.contains('/') {
            key.clone()
        } else {
            format!("{key}/tcp")
        };
        out.insert(key, Value::Null);
    }
    for p in c.endpoint.iter().flat_map(|e| &e.ports) {
        let key = format!("{}/{}", p.container_port, p.proto);
        let host_ip = p.host_ip.map_or("0.0.0.0".to_string(), |i| i.to_string());
        let binding = json!({"HostIp": host_ip, "HostPort": p.host_port.to_string()});
        match out.get_mut(&key) {
            Some(Value::Array(a)) => a.push(binding),
            _ => {
                out.insert(key, json!([binding]));
            }
        }
    }
    Value::Object(out)
}

fn network_settings(c: &Container) -> Value {
    let ep = c.endpoint.as_ref();
    json!({
        "Bridge": "", "SandboxID": "", "SandboxKey": "",
        "HairpinMode": false,
        "EndpointID": if ep.is_some() { c.id.as_str() } else { "" },
        "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0,
        "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "IPv6Gateway": "",
        "SecondaryIPAddresses": null, "SecondaryIPv6Addresses": null,
        "Ports": ports(c),
        "IPAddress": ep.map(|e| e.ip.to_string()).unwrap_or_default(),
        "IPPrefixLen": ep.map(|e| e.prefix_len).unwrap_or(0),
        "Gateway": ep.map(|e| e.gateway.to_string()).unwrap_or_default(),
        "MacAddress": ep.map(|e| e.mac.clone()).unwrap_or_default(),
        "Networks": networks(c),
    })
}

/// `Ports` of `GET /containers/json` (what `docker ps` prints).
fn list_ports(c: &Container) -> Value {
    let mut out: Vec<Value> = Vec::new();
    for p in c.endpoint.iter().flat_map(|e| &e.ports) {
        out.push(json!({
            "IP": p.host_ip.map_or("0.0.0.0".to_string(), |i| i.to_string()),
            "PrivatePort": p.container_port,
            "PublicPort": p.host_port,
            "Type": p.proto,
        }));
    }
    for key in c.config.exposed_ports.keys() {
        let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
        let published = c
            .endpoint
            .iter()
            .flat_map(|e| &e.ports)
            .any(|p| p.container_port.to_string() == port && p.proto == proto);
        if !published {
            out.push(json!({"PrivatePort": port.parse::<u16>().unwrap_or(0), "Type": proto}));
        }
    }
    Value::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_docker() {
        let cases = [
            (0, "Less than a second"),
            (1, "1 second"),
            (42, "42 seconds"),
            (61, "About a minute"),
            (600, "10 minutes"),
            (3700, "About an hour"),
            (3 * 3600, "3 hours"),
            (3 * 86400, "3 days"),
        ];
        for (i, (secs, want)) in cases.iter().enumerate() {
            assert_eq!(
                human_duration(chrono::TimeDelta::seconds(*secs)),
                *want,
                "test[{i}]"
            );
        }
    }
}
