//! What a create request may ask for that hyper does not do: every field of `Config`,
//! `HostConfig` and the endpoint settings is either one we act on, or refused with a 501 naming
//! it when it is set. A field not listed here is refused too, so a field Docker adds later
//! is never silently dropped.

use serde_json::Value;

use crate::error::{ApiError, ApiResult};

/// `Config` fields the runtime acts on (or that carry nothing at run time, as `Shell`).
const CONFIG_HANDLED: &[&str] = &[
    "Hostname",
    "Domainname",
    "User",
    "AttachStdin",
    "AttachStdout",
    "AttachStderr",
    "Tty",
    "OpenStdin",
    "StdinOnce",
    "Env",
    "Cmd",
    "Entrypoint",
    "Image",
    "WorkingDir",
    "Labels",
    "StopSignal",
    "StopTimeout",
    "ExposedPorts",
    "Volumes",
    "Healthcheck",
    "HostConfig",
    "NetworkingConfig",
    "Shell",
    "ArgsEscaped",
];

/// `HostConfig` fields the runtime acts on. `ConsoleSize` is a first terminal size, which the
/// client's resize follows; `ContainerIDFile` is the client's own business.
const HOST_CONFIG_HANDLED: &[&str] = &[
    "Binds",
    "NetworkMode",
    "PortBindings",
    "RestartPolicy",
    "AutoRemove",
    "VolumeDriver",
    "VolumesFrom",
    "Mounts",
    "Tmpfs",
    "GroupAdd",
    "Dns",
    "DnsOptions",
    "DnsSearch",
    "ExtraHosts",
    "Links",
    "PublishAllPorts",
    "Memory",
    "NanoCpus",
    "LogConfig",
    "PidMode",
    "IpcMode",
    "UTSMode",
    "UsernsMode",
    "CgroupnsMode",
    "ConsoleSize",
    "ContainerIDFile",
];

/// Why a field is refused, and what to do instead, where there is more to say than its name.
const REASONS: &[(&str, &str)] = &[
    (
        "Privileged",
        "--privileged: every container is already root in its own VM",
    ),
    ("Devices", "host devices (--device): the VM is the boundary"),
    (
        "CapAdd",
        "--cap-add: every container is already root in its own VM",
    ),
    ("CapDrop", "--cap-drop"),
    (
        "CpuShares",
        "--cpu-shares: choose a size with --size (or --cpus) instead",
    ),
    (
        "CpuQuota",
        "--cpu-quota: choose a size with --size (or --cpus) instead",
    ),
    (
        "CpuPeriod",
        "--cpu-period: choose a size with --size (or --cpus) instead",
    ),
    (
        "CpusetCpus",
        "--cpuset-cpus: choose a size with --size instead",
    ),
    (
        "MemoryReservation",
        "--memory-reservation: choose a size with --size (or -m) instead",
    ),
    ("MemorySwap", "--memory-swap: a VM's memory is its size"),
    ("SecurityOpt", "--security-opt"),
    ("Sysctls", "--sysctl"),
    (
        "Init",
        "--init: the guest agent is the container's init already",
    ),
    ("ReadonlyRootfs", "--read-only"),
    ("ShmSize", "--shm-size"),
    ("Ulimits", "--ulimit"),
    ("OomScoreAdj", "--oom-score-adj"),
    ("PidsLimit", "--pids-limit"),
    (
        "StorageOpt",
        "--storage-opt: the root disk is 10 GB; use volumes for more",
    ),
    (
        "MacAddress",
        "--mac-address: the network assigns each VM its address",
    ),
    ("NetworkDisabled", "network disabled: use --network none"),
    (
        "IPAMConfig",
        "a fixed address (--ip): the network assigns each VM its address",
    ),
];

/// Values that mean "not set" although they are not empty.
fn unset(field: &str, value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => {
            n.as_f64() == Some(0.0)
                || (n.as_i64() == Some(-1)
                    && matches!(field, "MemorySwappiness" | "MemorySwap" | "PidsLimit"))
        }
        Value::String(s) => s.is_empty() || (field == "Isolation" && s == "default"),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

fn refuse(place: &str, field: &str) -> ApiError {
    ApiError::not_implemented(match REASONS.iter().find(|(f, _)| *f == field) {
        Some((_, why)) => {
            format!("hyper does not support {why}; {place}.{field} must be left unset")
        }
        None => format!("hyper does not support {place}.{field}: leave it unset"),
    })
}

fn check_fields(place: &str, object: &Value, handled: &[&str]) -> ApiResult<()> {
    for (field, value) in object.as_object().into_iter().flatten() {
        if !handled.contains(&field.as_str()) && !unset(field, value) {
            return Err(refuse(place, field));
        }
    }
    Ok(())
}

/// Refuses what a create asks for and hyper does not do, naming the option.
pub fn refuse_unsupported(body: &Value) -> ApiResult<()> {
    check_fields("Config", body, CONFIG_HANDLED)?;
    let hc = &body["HostConfig"];
    check_fields("HostConfig", hc, HOST_CONFIG_HANDLED)?;
    for mode in [
        "PidMode",
        "IpcMode",
        "UTSMode",
        "UsernsMode",
        "CgroupnsMode",
    ] {
        let value = hc[mode].as_str().unwrap_or("");
        if !matches!(value, "" | "private" | "shareable") {
            return Err(ApiError::not_implemented(format!(
                "hyper does not support {mode}={value}: each container has its own VM, and no host namespace to share"
            )));
        }
    }
    let log_type = hc["LogConfig"]["Type"].as_str().unwrap_or("");
    // Docker's own drivers; any other name is no driver at all, as dockerd says.
    const DRIVERS: [&str; 12] = [
        "none",
        "local",
        "syslog",
        "journald",
        "gelf",
        "fluentd",
        "awslogs",
        "splunk",
        "etwlogs",
        "gcplogs",
        "logentries",
        "json-file",
    ];
    if !log_type.is_empty() && !DRIVERS.contains(&log_type) {
        return Err(ApiError::bad_request(format!(
            "logger: no log driver named '{log_type}' is registered"
        )));
    }
    if !matches!(log_type, "" | "json-file") {
        return Err(ApiError::not_implemented(format!(
            "hyper does not support the log driver {log_type:?}: logs are kept as json-file, read them with `logs`"
        )));
    }
    for endpoint in body["NetworkingConfig"]["EndpointsConfig"]
        .as_object()
        .into_iter()
        .flat_map(|e| e.values())
    {
        refuse_unsupported_endpoint(endpoint)?;
    }
    Ok(())
}

/// An `EndpointSettings` (at create, or in a network connect): what hyper does not do, 501.
pub fn refuse_unsupported_endpoint(endpoint: &Value) -> ApiResult<()> {
    check_fields(
        "EndpointSettings",
        endpoint,
        &["Aliases", "Links", "NetworkID"],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_pass_and_set_fields_are_named() {
        let docker_cli_defaults = json!({
            "Image": "busybox", "Env": [], "Cmd": ["true"], "MacAddress": "",
            "NetworkDisabled": false, "OnBuild": null,
            "HostConfig": {"Memory": 0, "MemorySwappiness": -1, "MemorySwap": 0,
                "OomKillDisable": false, "PidsLimit": null, "Isolation": "",
                "LogConfig": {"Type": "", "Config": {}}, "ConsoleSize": [24, 80],
                "GroupAdd": null, "ShmSize": 0, "BlkioWeight": 0},
            "NetworkingConfig": {"EndpointsConfig": {"net": {"Aliases": ["a"], "IPAMConfig": null}}}
        });
        assert!(refuse_unsupported(&docker_cli_defaults).is_ok());
        for (body, named) in [
            (
                json!({"HostConfig": {"Sysctls": {"net.ipv4.ip_forward": "1"}}}),
                "HostConfig.Sysctls",
            ),
            (
                json!({"MacAddress": "02:42:ac:11:00:02"}),
                "Config.MacAddress",
            ),
            (
                json!({"HostConfig": {"NewThing": 1}}),
                "HostConfig.NewThing",
            ),
            (
                json!({"NetworkingConfig": {"EndpointsConfig": {"n": {"IPAMConfig": {"IPv4Address": "10.0.0.9"}}}}}),
                "EndpointSettings.IPAMConfig",
            ),
            (
                json!({"HostConfig": {"LogConfig": {"Type": "syslog", "Config": {}}}}),
                "log driver \"syslog\"",
            ),
        ] {
            let e = refuse_unsupported(&body).unwrap_err();
            assert_eq!(e.status, 501);
            assert!(e.message.contains(named), "{}", e.message);
        }
    }
}
