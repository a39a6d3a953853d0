//! `/_ping`, `/version`, `/info`: what clients use to find out who they talk to.

use axum::extract::State;
use axum::http::header::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Value};

use crate::error::ApiResult;
use crate::transport::TenantId;
use crate::{AppState, API_VERSION, MIN_API_VERSION};

fn version_headers() -> [(HeaderName, HeaderValue); 4] {
    [
        (
            HeaderName::from_static("api-version"),
            HeaderValue::from_static(API_VERSION),
        ),
        (
            HeaderName::from_static("docker-experimental"),
            HeaderValue::from_static("false"),
        ),
        (
            HeaderName::from_static("ostype"),
            HeaderValue::from_static("linux"),
        ),
        (
            HeaderName::from_static("cache-control"),
            HeaderValue::from_static("no-cache, no-store, must-revalidate"),
        ),
    ]
}

pub async fn ping() -> Response {
    (version_headers(), "OK").into_response()
}

fn host_kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string()
}

pub async fn version(State(app): State<AppState>) -> Response {
    let v = env!("CARGO_PKG_VERSION");
    let body = json!({
        "Platform": {"Name": "Hyper"},
        "Components": [{"Name": "Engine", "Version": v, "Details": {
            "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "Os": "linux", "Arch": "amd64",
            "Accelerator": app.runtime.config().accel,
        }}],
        "Version": v,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": "",
        "Os": "linux",
        "Arch": "amd64",
        "KernelVersion": host_kernel(),
        "BuildTime": "",
    });
    (version_headers(), Json(body)).into_response()
}

pub async fn info(
    State(app): State<AppState>,
    axum::extract::Extension(TenantId(tenant)): Extension<TenantId>,
) -> ApiResult<Json<Value>> {
    // The tenant's containers on every node: any node answers the same.
    let containers = app.runtime.list_fleet(&tenant)?;
    let running = containers.iter().filter(|c| c.is_running()).count();
    let images = app.runtime.images.list(&tenant)?.len();
    let cfg = app.runtime.config();
    let standby = app
        .runtime
        .standby
        .as_ref()
        .map(|pool| (pool.ready_count(), pool.target(), pool.ceiling()));
    // Of those, the ones prepared for this tenant's images (never another tenant's).
    let standby_prepared = app
        .runtime
        .standby
        .as_ref()
        .map(|pool| pool.prepared_for(&tenant));
    // What the ready standbys cost the host, as measured, the operator's bound on it, and
    // whether the host's memory reserve holds the pool back.
    let standby_memory = app.runtime.standby.as_ref().map(|pool| {
        let held_back = pool.held_back_by_host_memory();
        (pool.memory(), pool.memory_max(), held_back)
    });
    // VM templates: in use or not, how many are ready (a complete one has meta.json, written
    // last) and the age of the newest.
    let templates = match &cfg.template_dir {
        None => "off (every container boots cold)".to_string(),
        Some(dir) => {
            let ages: Vec<u64> = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .filter_map(|e| {
                    e.ok()?
                        .path()
                        .join("meta.json")
                        .metadata()
                        .ok()?
                        .modified()
                        .ok()
                })
                .filter_map(|t| t.elapsed().ok().map(|d| d.as_secs()))
                .collect();
            match ages.iter().min() {
                None => "on (none built yet: the first start builds one)".to_string(),
                Some(age) => {
                    let age = match age {
                        s if *s < 120 => format!("{s}s"),
                        s if *s < 7200 => format!("{}m", s / 60),
                        s if *s < 172_800 => format!("{}h", s / 3600),
                        s => format!("{}d", s / 86400),
                    };
                    format!("on ({} ready, newest built {age} ago)", ages.len())
                }
            }
        }
    };
    // The fleet as one host: how many nodes and what they hold together (never which nodes).
    let fleet = node::fleet::capacity(
        &node::fleet::list(&**app.runtime.store())?,
        &app.runtime.booked_by_node()?,
    );
    let mut info = json!({
        "ID": app.node_id,
        "Name": app.node_name,
        "Containers": containers.len(),
        "ContainersRunning": running,
        "ContainersPaused": 0,
        "ContainersStopped": containers.len() - running,
        "Images": images,
        "Driver": "qcow2",
        "DriverStatus": [["Backing Filesystem", "ext4"]],
        "LoggingDriver": "json-file",
        "CgroupDriver": "none",
        "KernelVersion": host_kernel(),
        "OperatingSystem": "Hyper (one microVM per container)",
        "OSType": "linux",
        "Architecture": std::env::consts::ARCH,
        "NCPU": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "MemTotal": node::host::memory_bytes(),
        // No path of the node: tenants learn nothing of its layout.
        "DockerRootDir": "",
        "ServerVersion": env!("CARGO_PKG_VERSION"),
        "Runtimes": {"hyper": {"path": file_name(&cfg.qemu)}},
        "DefaultRuntime": "hyper",
        "Isolation": "",
        "SecurityOptions": ["name=microvm"],
        "Tenant": tenant,
        // What the tenant's root disks, volumes and images take of the node's disk, and its
        // `storage_gb` quota, in bytes.
        "StorageUsage": app.runtime.storage_usage(&tenant)?,
        "Hypervisor": {"Name": "qemu", "Accelerator": cfg.accel, "Kernel": file_name(&cfg.kernel)},
        "Templates": templates,
        "StandbyVMs": standby.map_or_else(
            || "off".to_string(),
            |(ready, target, ceiling)| {
                let (used, max, held_back) = standby_memory.unwrap_or_default();
                let mib = |b: u64| b >> 20;
                let mut memory = match max {
                    Some(max) => format!("{} MiB of at most {} MiB", mib(used), mib(max)),
                    None => format!("{} MiB", mib(used)),
                };
                if held_back {
                    memory.push_str(", held back by the host's memory reserve");
                }
                if target < ceiling {
                    format!("{ready} of {target} ready, {memory} (grows to {ceiling} for bursts of starts)")
                } else {
                    format!("{ready} of {target} ready, {memory}")
                }
            },
        ),
        "StandbyVMsMemory": standby_memory.map(|m| m.0),
        "StandbyVMsMemoryMax": standby_memory.and_then(|m| m.1),
        "StandbyVMsReady": standby.map(|s| s.0),
        "StandbyVMsPrepared": standby_prepared,
        "StandbyVMsTarget": standby.map(|s| s.1),
        "Fleet": fleet,
        "Warnings": [],
    });
    // Docker's keys for what a VM cloud has no counterpart of, with Docker's zero values.
    let docker_zero = json!({
        "Debug": false, "ExperimentalBuild": false, "LiveRestoreEnabled": true,
        "MemoryLimit": true, "SwapLimit": false, "KernelMemory": false, "KernelMemoryTCP": false,
        "CpuCfsPeriod": false, "CpuCfsQuota": false, "CPUShares": false, "CPUSet": false,
        "PidsLimit": false, "OomKillDisable": false, "IPv4Forwarding": true,
        "BridgeNfIptables": true, "BridgeNfIp6tables": false, "CgroupVersion": "",
        "NFd": 0, "NGoroutines": 0, "NEventsListener": 0, "SystemTime": crate::docker_json::time(Some(chrono::Utc::now())),
        "OSVersion": "", "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {"AllowNondistributableArtifactsCIDRs": [], "AllowNondistributableArtifactsHostnames": [],
            "InsecureRegistryCIDRs": [], "IndexConfigs": {}, "Mirrors": []},
        "GenericResources": null, "HttpProxy": "", "HttpsProxy": "", "NoProxy": "", "Labels": [],
        "Plugins": {"Volume": ["local", "rbd"], "Network": ["bridge", "null"], "Authorization": null, "Log": ["json-file"]},
        "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": false, "Error": "", "RemoteManagers": null},
        "InitBinary": "", "ContainerdCommit": {"ID": "", "Expected": ""},
        "RuncCommit": {"ID": "", "Expected": ""}, "InitCommit": {"ID": "", "Expected": ""},
    });
    for (k, v) in docker_zero.as_object().into_iter().flatten() {
        info[k] = v.clone();
    }
    Ok(Json(info))
}

/// A binary's or image's name without the node's directories.
fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
