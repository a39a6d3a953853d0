//! The tenant namespace's load balancer (`hyper-lb`, a [`TenantDaemon`]): one listener per
//! service on its stable IP, spreading connections over the replicas that are running and not
//! draining (a `tcp` service's, round robin or by source, through the kernel's DNAT). Its status file (backend health) feeds the service reconciler.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use serde::Deserialize;
use serde_json::json;

use super::daemon::TenantDaemon;
use crate::services::ServiceRecord;
use crate::{Result, RuntimeError};

/// A replica the balancer may send to: its short id and address.
pub struct Backend {
    pub id: String,
    pub addr: (Ipv4Addr, u16),
    /// Where the balancer's connections to it leave from (`None`: the kernel's choice).
    pub source: Option<Ipv4Addr>,
}

pub fn daemon<'a>(binary: &'a Path, dir: &'a Path) -> TenantDaemon<'a> {
    TenantDaemon {
        binary,
        name: "lb",
        dir,
    }
}

/// Serves `services` (stops the balancer when there are none).
pub fn sync(
    binary: &Path,
    dir: &Path,
    netns: &Path,
    services: &[(ServiceRecord, Vec<Backend>)],
) -> Result<()> {
    let d = daemon(binary, dir);
    if services.is_empty() {
        d.stop();
        return Ok(());
    }
    let mut out = Vec::new();
    for (svc, backends) in services {
        let s = &svc.spec;
        let mut entry = json!({
            "name": s.name,
            "listen": format!("{}:{}", svc.ip, s.service_port),
            "protocol": s.protocol,
            "algorithm": s.algorithm,
            "session_affinity": s.session_affinity,
            "health": {
                "interval_secs": s.health_check_interval,
                "fall": s.health_check_fall,
                "rise": s.health_check_rise,
                "http_path": s.health_check_path,
            },
            "backends": backends.iter().map(|b| json!({"id": b.id, "addr": format!("{}:{}", b.addr.0, b.addr.1), "source": b.source})).collect::<Vec<_>>(),
        });
        if s.protocol == "httpsTerm" {
            let pem = dir.join(format!("lb-{}.pem", s.name));
            write_private(&pem, s.ssl_cert.as_bytes())?;
            entry["tls_cert"] = json!(pem);
        }
        out.push(entry);
    }
    // It runs as root in the tenant's namespace: the `tcp` services that allow it are balanced
    // by the kernel there (DNAT), which the tenant's forward chain lets through.
    d.sync(&json!({ "services": out, "kernel_balancing": true }), netns)
}

/// The certificate's key stays readable by root only.
fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(RuntimeError::io(format!("write {}", tmp.display())))?;
    f.write_all(data)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(RuntimeError::io(format!("write {}", path.display())))
}

#[derive(Debug, Default, Deserialize)]
pub struct Status {
    #[serde(default)]
    pub services: BTreeMap<String, ServiceStatus>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ServiceStatus {
    #[serde(default)]
    pub backends: BTreeMap<String, BackendStatus>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BackendStatus {
    pub healthy: bool,
    #[serde(default)]
    pub active: u64,
    pub since: chrono::DateTime<chrono::Utc>,
}

/// The balancer's last report (empty when it has none yet).
pub fn status(binary: &Path, dir: &Path) -> Status {
    std::fs::read(daemon(binary, dir).status_path())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}
