//! hyperd's side of fleet membership: the node flags, this node's record, and the operator's
//! `hyperd node ...` commands (through the running daemon's unix socket).

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use node::fleet::{Availability, NodeRecord};
use server::fleet_link::FleetLink;

#[derive(clap::Args)]
pub struct NodeArgs {
    /// This node's name in the fleet (default: the host name).
    #[arg(long = "node-name", env = "HYPERD_NODE_NAME")]
    name: Option<String>,
    /// The IPv4 address other nodes reach this one at (the fleet's network).
    #[arg(long = "node-address", env = "HYPERD_NODE_ADDRESS", value_parser = parse_node_address)]
    address: Option<Ipv4Addr>,
    /// Seconds this node stays up for the fleet without renewing its lease: past it, the node
    /// is down.
    #[arg(
        long = "node-lease",
        default_value_t = node::fleet::DEFAULT_LEASE.as_secs(),
        value_parser = clap::value_parser!(u64).range(2..=300),
        env = "HYPERD_NODE_LEASE"
    )]
    lease_secs: u64,
    /// The port of this node's fleet listener on --node-address, where other nodes pass it
    /// the requests for what it runs.
    #[arg(
        long = "node-port",
        default_value_t = server::fleet_link::DEFAULT_PORT,
        // 0 would listen on a port the other nodes are never told.
        value_parser = clap::value_parser!(u16).range(1..),
        env = "HYPERD_NODE_PORT"
    )]
    port: u16,
    /// Memory this node offers containers, e.g. 16G (default: all of the host's): the
    /// containers placed here never book more (each its size's memory, from create until it
    /// stops).
    #[arg(long = "node-memory", env = "HYPERD_NODE_MEMORY", value_parser = crate::parse_memory)]
    memory: Option<u64>,
    /// Seconds a node of the fleet may be down before it is declared lost: its running
    /// containers are then stopped for good (billed no further, removable through any node)
    /// and stopped on it if it comes back.
    #[arg(
        long = "node-lost-after",
        default_value_t = node::losses::DEFAULT_LOST_AFTER.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..=86400),
        env = "HYPERD_NODE_LOST_AFTER"
    )]
    lost_after_secs: u64,
}

/// An address other nodes can send to: not 0.0.0.0, loopback, multicast or broadcast (the
/// overlay would refuse it at every sync; refused here, at start).
fn parse_node_address(s: &str) -> Result<Ipv4Addr, String> {
    let ip: Ipv4Addr = s
        .parse()
        .map_err(|_| format!("{s:?}: give this node's IPv4 address on the fleet's network"))?;
    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_broadcast() {
        return Err(format!(
            "{ip}: other nodes cannot reach this node there; give its address on the fleet's network"
        ));
    }
    Ok(ip)
}

impl NodeArgs {
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }

    pub fn address(&self) -> Option<Ipv4Addr> {
        self.address
    }

    pub fn lost_after(&self) -> Duration {
        Duration::from_secs(self.lost_after_secs)
    }

    /// Memory the node's containers may book, in bytes.
    pub fn memory(&self) -> u64 {
        self.memory.unwrap_or_else(node::host::memory_bytes)
    }
}

/// This node's part of the one API of the fleet: the link other nodes' requests go through,
/// and the listener on `--node-address` that takes theirs (`server::fleet_link`). `None` for
/// a node off the fleet's network.
pub fn link(
    args: &NodeArgs,
    name: &str,
    accounts: &server::Accounts,
    tls: Option<&server::tls::Authority>,
    node_netns: Option<&Path>,
    store: Arc<dyn store::Store>,
) -> anyhow::Result<Option<(Arc<FleetLink>, server::Listener)>> {
    let Some(address) = args.address else {
        return Ok(None);
    };
    let Some(tls) = tls else {
        anyhow::bail!(
            "--node-address: nodes talk to each other over TLS; a fleet node cannot run with --insecure-http"
        );
    };
    let link = Arc::new(FleetLink::new(
        name.to_string(),
        accounts.fleet_key(),
        tls.node_client_config()?,
        node_netns.map(Path::to_path_buf),
        store,
    ));
    let port = args.port;
    let socket = node::network::in_netns_of(node_netns, || listen_free(address, port))
        .with_context(|| format!("listen for other nodes on {address}:{port} (--node-port)"))?;
    let listener = server::Listener::Node(
        tokio::net::TcpListener::from_std(socket)?,
        tls.node_server_setup(address)?,
        link.clone(),
    );
    Ok(Some((link, listener)))
}

/// This node as it registers: its name, address and what it can hold.
pub fn node_record(
    args: &NodeArgs,
    data_root: &Path,
    accel: vm::Accel,
) -> anyhow::Result<NodeRecord> {
    let name = node_name(args.name.as_deref(), data_root)?;
    let memory_bytes = args.memory();
    let disk = nix::sys::statvfs::statvfs(data_root)
        .with_context(|| format!("free space under {}", data_root.display()))?;
    let now = chrono::Utc::now();
    Ok(NodeRecord {
        name,
        id: crate::setup::node_id(data_root)?,
        address: args.address,
        api_port: args.address.map(|_| args.port),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
        memory_bytes,
        disk_free_bytes: disk.blocks_available() as u64 * disk.fragment_size() as u64,
        sizes: node::sizes::SIZES
            .iter()
            .filter(|s| s.vm_memory_mib() << 20 <= memory_bytes)
            .map(|s| s.name.to_string())
            .collect(),
        accel: accel.as_str().to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        joined: now,
        started: now,
        availability: Availability::Active,
    })
}

/// A listening socket on `address:port` that may be bound before the address is up (a node
/// may start before its network is).
fn listen_free(address: Ipv4Addr, port: u16) -> std::io::Result<std::net::TcpListener> {
    use nix::sys::socket::{self as s, sockopt};
    use std::os::fd::AsRawFd;
    let fd = s::socket(
        s::AddressFamily::Inet,
        s::SockType::Stream,
        s::SockFlag::SOCK_CLOEXEC | s::SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    s::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    s::setsockopt(&fd, sockopt::IpFreebind, &true)?;
    let at = std::net::SocketAddrV4::new(address, port);
    s::bind(fd.as_raw_fd(), &s::SockaddrIn::from(at))?;
    s::listen(&fd, s::Backlog::new(128)?)?;
    Ok(std::net::TcpListener::from(fd))
}

/// The data root's node name: kept in `DATA/node-name` from its first start (the host name
/// then, unless `--node-name` said otherwise), since its containers carry it: a host renamed
/// later keeps its containers. A different `--node-name` on a data root that has one is
/// refused.
fn node_name(asked: Option<&str>, data_root: &Path) -> anyhow::Result<String> {
    let path = data_root.join("node-name");
    let kept = std::fs::read_to_string(&path)
        .ok()
        .map(|s| s.trim().to_string());
    let name = match (kept, asked) {
        (Some(kept), Some(asked)) if kept != asked => anyhow::bail!(
            "--node-name {asked}: this data root is node {kept} (its containers carry that name); start it as {kept}"
        ),
        (Some(kept), _) => kept,
        (None, Some(asked)) => asked.to_string(),
        (None, None) => name_from_host(
            &std::fs::read_to_string("/proc/sys/kernel/hostname")
                .context("read the host name (or give --node-name)")?,
        ),
    };
    node::fleet::validate_name(&name).map_err(|e| anyhow::anyhow!("--node-name: {e}"))?;
    Ok(name)
}

/// Keeps the name the node joined under (see [`node_name`]).
pub fn remember_name(data_root: &Path, name: &str) -> anyhow::Result<()> {
    let path = data_root.join("node-name");
    std::fs::write(&path, name).with_context(|| format!("write {}", path.display()))
}

/// A node name from the host name: lowercase, other characters as '-', at most 63.
fn name_from_host(host: &str) -> String {
    let name: String = host
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '.' | '-' => c,
            _ => '-',
        })
        .skip_while(|c| !c.is_ascii_alphanumeric())
        .take(63)
        .collect();
    if name.is_empty() {
        "node".to_string()
    } else {
        name
    }
}

#[derive(Subcommand)]
pub enum NodeCommand {
    /// List the fleet's nodes: up (ready) or down, active or drained.
    #[command(visible_alias = "list")]
    Ls,
    /// Show nodes in full, as JSON.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Take a node out of placement: nothing new goes there; what runs there stays.
    Drain { name: String },
    /// Put a drained node back into placement.
    Activate { name: String },
    /// Forget a node that is down (its name may then be taken by another).
    Rm { name: String },
}

pub async fn node_command(socket: &Path, command: NodeCommand) -> anyhow::Result<()> {
    use crate::admin_client::require;
    use hyper::Method;
    let none = serde_json::Value::Null;
    match command {
        NodeCommand::Ls => {
            let nodes = require(socket, Method::GET, "/admin/nodes", none).await?;
            print!("{}", table(nodes.as_array().map_or(&[][..], Vec::as_slice)));
        }
        NodeCommand::Inspect { names } => {
            let mut out = Vec::new();
            for name in names {
                let path = format!("/admin/nodes/{name}");
                out.push(require(socket, Method::GET, &path, none.clone()).await?);
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        NodeCommand::Drain { name } => {
            let path = format!("/admin/nodes/{name}/drain");
            require(socket, Method::POST, &path, none).await?;
            println!("{name}");
        }
        NodeCommand::Activate { name } => {
            let path = format!("/admin/nodes/{name}/activate");
            require(socket, Method::POST, &path, none).await?;
            println!("{name}");
        }
        NodeCommand::Rm { name } => {
            let path = format!("/admin/nodes/{name}");
            require(socket, Method::DELETE, &path, none).await?;
            println!("{name}");
        }
    }
    Ok(())
}

/// `node ls`'s table.
fn table(nodes: &[serde_json::Value]) -> String {
    let mut rows = vec![[
        "NAME".to_string(),
        "STATUS".into(),
        "AVAILABILITY".into(),
        "ADDRESS".into(),
        "CPUS".into(),
        "MEMORY".into(),
        "VERSION".into(),
    ]];
    for n in nodes {
        let text = |k: &str| n[k].as_str().unwrap_or("").to_string();
        rows.push([
            text("Name"),
            text("State"),
            text("Availability"),
            n["Address"].as_str().unwrap_or("-").to_string(),
            n["Cpus"].to_string(),
            format!("{} GiB", n["MemoryBytes"].as_u64().unwrap_or(0) >> 30),
            text("Version"),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_root_keeps_its_node_name() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(node_name(Some("n1"), dir.path()).unwrap(), "n1");
        remember_name(dir.path(), "n1").unwrap();
        assert_eq!(node_name(None, dir.path()).unwrap(), "n1");
        assert_eq!(node_name(Some("n1"), dir.path()).unwrap(), "n1");
        let e = node_name(Some("n2"), dir.path()).unwrap_err().to_string();
        assert!(e.contains("this data root is node n1"), "{e}");
        assert!(node_name(Some("Bad Name"), tempfile::tempdir().unwrap().path()).is_err());
    }

    #[test]
    fn a_node_address_is_one_other_nodes_can_reach() {
        assert_eq!(
            parse_node_address("10.0.0.11"),
            Ok(Ipv4Addr::new(10, 0, 0, 11))
        );
        for bad in [
            "0.0.0.0",
            "127.0.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "node1",
            "",
        ] {
            assert!(parse_node_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn any_host_name_makes_a_valid_node_name() {
        for (host, name) in [
            ("web-1\n", "web-1"),
            ("CI_Runner.local", "ci-runner.local"),
            ("_x", "x"),
            ("", "node"),
            ("___", "node"),
        ] {
            assert_eq!(name_from_host(host), name);
            assert!(node::fleet::validate_name(name).is_ok(), "{name}");
        }
        assert_eq!(name_from_host(&"h".repeat(80)).len(), 63);
    }
}
