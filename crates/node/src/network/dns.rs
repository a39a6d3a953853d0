//! Keeps each tenant namespace's DNS server (`hyper-dns`) running with the tenant's names.
//!
//! The server is a process of its own inside the namespace, listening on every network's
//! gateway, so names keep resolving while hyperd is stopped. hyperd writes its config
//! (`DIR/dns.json`, temp + rename) and signals it (SIGHUP) to reload; when it is not running
//! (first use, a crash, a reboot) hyperd starts it.

use std::net::Ipv4Addr;
use std::path::Path;

use serde_json::json;

use super::records::NetworkRecord;
use crate::model::Container;
use crate::{Result, RuntimeError};

const CONFIG: &str = "dns.json";
const PIDFILE: &str = "dns.pid";
const LOG: &str = "dns.log";

/// One network's names: container names, short ids and aliases, answered on its gateway.
pub struct Zone {
    pub listen: Ipv4Addr,
    pub records: std::collections::BTreeMap<String, Vec<Ipv4Addr>>,
}

impl Zone {
    pub fn of_network(n: &NetworkRecord, containers: &[Container]) -> Zone {
        let mut records: std::collections::BTreeMap<String, Vec<Ipv4Addr>> = Default::default();
        for c in containers {
            let Some(ep) = c.endpoint.as_ref().filter(|e| e.network_id == n.id) else {
                continue;
            };
            let names = [c.name.clone(), c.short_id().to_string()]
                .into_iter()
                .chain(ep.aliases.iter().cloned());
            for name in names {
                let ips = records.entry(name.to_ascii_lowercase()).or_default();
                if !ips.contains(&ep.ip) {
                    ips.push(ep.ip);
                }
            }
        }
        Zone {
            listen: n.gateway,
            records,
        }
    }
}

/// The node's own resolvers, for names outside the tenant. Loopback resolvers (a local stub)
/// are unreachable from a tenant namespace and left out.
fn upstream() -> Vec<String> {
    let conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    conf.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|s| s.trim().parse::<Ipv4Addr>().ok())
        .filter(|ip| !ip.is_loopback())
        .map(|ip| format!("{ip}:53"))
        .collect()
}

fn running_pid(dir: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(dir.join(PIDFILE))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    String::from_utf8_lossy(&cmdline)
        .contains("hyper-dns")
        .then_some(pid)
}

/// Writes the config and makes the server serve it.
pub fn sync(binary: &Path, dir: &Path, netns: &Path, zones: &[Zone]) -> Result<()> {
    let config = json!({
        "networks": zones.iter().map(|z| json!({"listen": z.listen, "records": z.records})).collect::<Vec<_>>(),
        "upstream": upstream(),
    });
    let path = dir.join(CONFIG);
    let tmp = dir.join(format!("{CONFIG}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(&config).expect("json"))
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(RuntimeError::io(format!("write {}", path.display())))?;
    if let Some(pid) = running_pid(dir) {
        // SAFETY: kill with a pid read from our pidfile and checked to be hyper-dns.
        unsafe { libc::kill(pid, libc::SIGHUP) };
        return Ok(());
    }
    spawn(binary, dir, netns)
}

/// Starts the server inside the tenant's namespace. `--daemon` returns once it serves (or
/// failed, with the reason in `dns.log`), leaving it in a session of its own, so it outlives
/// hyperd.
fn spawn(binary: &Path, dir: &Path, netns: &Path) -> Result<()> {
    let mut cmd = std::process::Command::new(binary);
    cmd.arg("--daemon")
        .arg("--config")
        .arg(dir.join(CONFIG))
        .arg("--pidfile")
        .arg(dir.join(PIDFILE))
        .arg("--log")
        .arg(dir.join(LOG));
    net::command_in_netns(netns, &mut cmd)
        .map_err(|e| RuntimeError::Internal(format!("networking: {e}")))?;
    let status = cmd
        .status()
        .map_err(RuntimeError::io(format!("run {}", binary.display())))?;
    if !status.success() {
        let log = std::fs::read_to_string(dir.join(LOG)).unwrap_or_default();
        let last = log.lines().last().unwrap_or("").to_string();
        return Err(RuntimeError::Internal(format!(
            "the tenant's DNS server did not start: {last}"
        )));
    }
    Ok(())
}

/// Stops the server (its namespace is going away).
pub fn stop(dir: &Path) {
    if let Some(pid) = running_pid(dir) {
        // SAFETY: kill with a pid read from our pidfile and checked to be hyper-dns.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
}
