//! Kernel balancing (issue 19): a `tcp` service balanced round robin or by source address, with
//! every backend reached from the kernel's choice of address, is balanced by nftables in the
//! balancer's namespace rather than by copying its bytes. The balancer keeps the table
//! `ip hyper-lb` holding one DNAT rule per such service to its healthy backends, and replaces it
//! whenever a backend's health or the config changes; a service with no healthy backend has no
//! rule, so its clients reach the listener, which closes them as before. The listener stays for
//! what the rule does not take: the service's floating IP (its traffic is DNATed to the service
//! address in the same hook, and a connection is DNATed once per hook) and any other service.
//!
//! What differs from a copied connection: a backend that refuses is not skipped for another
//! (its health check takes it out), and a connection's load is read from the kernel's tracked
//! connections ([`count`]) for the status file.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::config::{Algorithm, Protocol};
use crate::service::Service;
use crate::services::Services;

/// The balancer's own table, beside hyperd's `inet hyper` and `bridge hyper`.
const TABLE: &str = "ip hyper-lb";

/// How often the table is loaded again unchanged: what took it out of the kernel meanwhile
/// (a flush by hand) is repaired within this.
const RELOAD: Duration = Duration::from_secs(10);

/// The table as last loaded, so that only a change (or [`RELOAD`]) loads it again.
pub struct Balancing {
    enabled: bool,
    loaded: Option<(String, Instant)>,
}

impl Balancing {
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            loaded: None,
        }
    }

    /// Follows the config's `kernel_balancing` (off: the table goes).
    pub fn set_enabled(&mut self, enabled: bool) {
        if self.enabled && !enabled {
            self.stop();
        }
        self.enabled = enabled;
    }

    /// Makes the table match `services` and their backends' health now. A failure is logged
    /// and tried again at the next change or tick: meanwhile the listeners serve.
    pub fn sync(&mut self, services: &Services) {
        if !self.enabled {
            return;
        }
        let ruleset = render(services.listening());
        if let Some((loaded, at)) = &self.loaded {
            if *loaded == ruleset && at.elapsed() < RELOAD {
                return;
            }
        }
        match apply(&ruleset) {
            Ok(()) => self.loaded = Some((ruleset, Instant::now())),
            Err(err) => {
                self.loaded = None;
                tracing::error!("kernel balancing: {err:#}; the balancer copies meanwhile");
            }
        }
    }

    /// Each kernel-balanced backend's established connections, for the status file.
    pub fn count(&self, services: &Services) {
        if !self.enabled || !services.listening().any(|(listen, s)| takes(listen, s)) {
            return;
        }
        let counts = match count() {
            Ok(counts) => counts,
            Err(err) => return tracing::warn!("counting kernel-balanced connections: {err:#}"),
        };
        for (listen, service) in services.listening() {
            let balanced = takes(listen, service);
            for backend in service.pool.backends() {
                let n = counts.get(&(listen, backend.addr)).copied().unwrap_or(0);
                backend.set_kernel_active(if balanced { n } else { 0 });
            }
        }
    }

    /// The balancer stops: its table goes, and clients reach the listeners (none) again.
    pub fn stop(&mut self) {
        if self.enabled {
            if let Err(err) = remove() {
                tracing::error!("removing the kernel balancing table: {err:#}");
            }
            self.loaded = None;
        }
    }
}

/// Whether `service` listening on `listen` is balanced by the kernel.
fn takes(listen: SocketAddr, service: &Service) -> bool {
    let settings = service.settings();
    listen.is_ipv4()
        && settings.protocol == Protocol::Tcp
        && matches!(
            settings.algorithm,
            Algorithm::Roundrobin | Algorithm::Source
        )
        && !settings.session_affinity
        && service
            .pool
            .backends()
            .iter()
            .all(|b| b.source.is_none() && b.addr.is_ipv4())
}

/// The table for `services` (listen address, service), replacing whatever it held.
fn render<'a>(services: impl Iterator<Item = (SocketAddr, &'a Arc<Service>)>) -> String {
    let mut rules = String::new();
    for (listen, service) in services.filter(|(listen, s)| takes(*listen, s)) {
        let up: Vec<SocketAddr> = service
            .pool
            .backends()
            .iter()
            .filter(|b| b.is_up())
            .map(|b| b.addr)
            .collect();
        if up.is_empty() {
            continue;
        }
        let choice = match service.settings().algorithm {
            Algorithm::Source => "jhash ip saddr",
            _ => "numgen inc",
        };
        let map: Vec<String> = up
            .iter()
            .enumerate()
            .map(|(i, b)| format!("{i} : {} . {}", b.ip(), b.port()))
            .collect();
        let _ = writeln!(
            rules,
            "    ip daddr {} tcp dport {} dnat ip to {choice} mod {} map {{ {} }}",
            listen.ip(),
            listen.port(),
            up.len(),
            map.join(", ")
        );
    }
    format!(
        "add table {TABLE}\ndelete table {TABLE}\ntable {TABLE} {{\n  chain prerouting {{\n    \
         type nat hook prerouting priority dstnat; policy accept;\n{rules}  }}\n}}\n"
    )
}

/// Loads `ruleset` (see [`render`]) into this namespace.
fn apply(ruleset: &str) -> anyhow::Result<()> {
    nft(ruleset)
}

/// Takes the table out.
fn remove() -> anyhow::Result<()> {
    nft(&format!("add table {TABLE}\ndelete table {TABLE}\n"))
}

fn nft(script: &str) -> anyhow::Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("run nft")?;
    child
        .stdin
        .take()
        .context("nft's stdin")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("nft: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// The established connections the kernel balanced, by service address and backend: from the
/// kernel's tracked connections (`conntrack -L`), those whose original destination is a
/// service's address and whose reply comes from the backend.
fn count() -> anyhow::Result<HashMap<(SocketAddr, SocketAddr), usize>> {
    let out = Command::new("conntrack")
        .args(["-L", "-p", "tcp", "--state", "ESTABLISHED"])
        .stderr(Stdio::null())
        .output()
        .context("run conntrack")?;
    if !out.status.success() {
        bail!("conntrack -L exited with {}", out.status);
    }
    Ok(parse_connections(&String::from_utf8_lossy(&out.stdout)))
}

/// `tcp 6 431999 ESTABLISHED src=C dst=VIP sport=P dport=80 src=B dst=G sport=8080 dport=Q ...`:
/// (VIP:80, B:8080) counted once per line whose reply source differs from its original
/// destination (DNATed).
fn parse_connections(listing: &str) -> HashMap<(SocketAddr, SocketAddr), usize> {
    let mut counts = HashMap::new();
    for line in listing.lines() {
        let field = |key: &str, nth: usize| -> Option<&str> {
            line.split_whitespace()
                .filter_map(|w| w.strip_prefix(key))
                .nth(nth)
        };
        let addr = |ip: Option<&str>, port: Option<&str>| -> Option<SocketAddr> {
            Some(SocketAddr::new(
                ip?.parse::<IpAddr>().ok()?,
                port?.parse().ok()?,
            ))
        };
        let (Some(to), Some(from)) = (
            addr(field("dst=", 0), field("dport=", 0)),
            addr(field("src=", 1), field("sport=", 1)),
        ) else {
            continue;
        };
        if to != from {
            *counts.entry((to, from)).or_insert(0) += 1;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dnated_connections_are_counted_by_service_and_backend() {
        let listing = "\
tcp      6 431999 ESTABLISHED src=172.16.0.9 dst=172.16.255.10 sport=40000 dport=80 src=172.16.0.5 dst=172.16.0.1 sport=8080 dport=40000 [ASSURED] mark=0 use=1
tcp      6 431999 ESTABLISHED src=172.16.0.8 dst=172.16.255.10 sport=40001 dport=80 src=172.16.0.5 dst=172.16.0.1 sport=8080 dport=40001 [ASSURED] mark=0 use=1
tcp      6 431999 ESTABLISHED src=172.16.0.8 dst=172.16.255.10 sport=40002 dport=80 src=172.16.0.6 dst=172.16.0.1 sport=8080 dport=40002 [ASSURED] mark=0 use=1
tcp      6 431999 ESTABLISHED src=172.16.0.8 dst=172.16.0.1 sport=40003 dport=53 src=172.16.0.1 dst=172.16.0.8 sport=53 dport=40003 [ASSURED] mark=0 use=1
";
        let counts = parse_connections(listing);
        let vip: SocketAddr = "172.16.255.10:80".parse().unwrap();
        assert_eq!(counts[&(vip, "172.16.0.5:8080".parse().unwrap())], 2);
        assert_eq!(counts[&(vip, "172.16.0.6:8080".parse().unwrap())], 1);
        // Not DNATed: the gateway's own DNS.
        assert_eq!(counts.len(), 2);
    }
}
