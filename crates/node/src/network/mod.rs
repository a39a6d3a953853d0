//! Tenant networks on this node (issue 4): the records (networks, addresses, host ports,
//! floating IPs, security groups) and their realisation in the kernel through the `net` crate.
//!
//! The store is the truth; the kernel state (namespaces, bridges, nftables, routes) and the
//! DNS server's records are derived from it by [`Networks::sync_tenant`], which is idempotent
//! and runs after every change and at hyperd's start. Nothing on the data path lives in
//! hyperd's process: the rules and links stay in the kernel, the taps with their VMs, and each
//! tenant's DNS server is a process of its own, so traffic keeps flowing while hyperd restarts.

mod daemon;
mod dns;
pub mod fips;
#[cfg(test)]
mod fuzz;
mod guest_files;
mod handover;
pub use guest_files::parse_link;
pub mod ipam;
pub mod lb;
mod peers;
mod ports;
mod reconcile;
pub mod records;
pub mod sg;

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use ipnet::Ipv4Net;
use store::Store;

use crate::model::{Container, Endpoint, PublishedPort};
use crate::services::{ServiceRecord, SERVICE_LABEL};
use crate::shim_link::NetworkSpec;
use crate::{Result, RuntimeError};
pub use peers::follow_other_nodes_forever;

/// Runs `f` in the network namespace at `path` (`None`: the caller's), as sockets made for
/// the node's network must be.
pub fn in_netns_of<R: Send>(
    path: Option<&std::path::Path>,
    f: impl FnOnce() -> std::io::Result<R> + Send,
) -> std::io::Result<R> {
    match path {
        None => f(),
        Some(path) => net::in_netns(path, f).map_err(std::io::Error::other)?,
    }
}
pub use reconcile::{reconcile_forever, DEFAULT_RECONCILE_INTERVAL};
pub use records::{NetworkRecord, DEFAULT_NETWORK};

#[derive(Debug, Clone)]
pub struct NetConfig {
    /// This node's name in the fleet: its containers get taps here, its transit links are its
    /// own.
    pub node_name: String,
    /// This node's address on the fleet's network (`--node-address`): tenant networks reach
    /// other nodes through VXLAN from it. `None`: no overlay (one node).
    pub node_address: Option<Ipv4Addr>,
    /// `DATA/net`: one directory per tenant namespace (its mount point, DNS config and pid).
    pub state_dir: PathBuf,
    /// The subnet of every tenant's default network.
    pub default_subnet: Ipv4Net,
    pub mtu: u32,
    /// Where the /31 links between the node and the tenant namespaces come from.
    pub transit_cidr: Ipv4Net,
    /// Floating IP pool (empty: none).
    pub fip_pool: Vec<Ipv4Net>,
    pub dns_binary: PathBuf,
    /// The per-tenant service load balancer.
    pub lb_binary: PathBuf,
    /// The node's side of tenant networking (transit links, node rules, FIP routes, published
    /// ports) lives in this network namespace; `None`: the one hyperd runs in.
    pub node_netns: Option<PathBuf>,
}

pub struct Networks {
    store: Arc<dyn Store>,
    cfg: NetConfig,
    fip_pool: Vec<Ipv4Addr>,
    /// Serialises syncs: each rebuilds a tenant's whole ruleset from the store.
    sync: Mutex<SyncState>,
    /// Per tenant: how many syncs were asked for (see [`Networks::sync_tenant`]).
    sync_requests: Mutex<HashMap<String, u64>>,
}

/// What the syncs of this hyperd have put in place. The store stays the truth: hyperd applies
/// everything at start (this holds then only what the previous hyperd handed over, see
/// [`handover`]), and a sync skips only a step whose input is the very one it applied last
/// (each `ip` or `nft` run costs a process, and a start or a removal ran a dozen of them).
/// The reconciler ([`reconcile`]) checks that the kernel still holds what is recorded here
/// and forgets what it does not, so the next sync puts it back.
#[derive(Default)]
struct SyncState {
    /// Tenants whose namespace is up with nothing in it, and since when (see [`LINGER`]).
    idle: HashMap<String, Instant>,
    /// Per tenant: what its namespace was last built from (`net::netns_inputs`).
    links: HashMap<String, net::NetnsInputs>,
    /// Per tenant: the ruleset last loaded into its namespace.
    tenant_rules: HashMap<String, Applied>,
    /// The node's ruleset and FIP routes as last applied.
    node: Option<Applied>,
    /// The node's guard as installed (`None`: not yet).
    guard: Option<net::Tables>,
    /// The fleet's node addresses the installed guard was rendered with.
    guard_fleet: Vec<Ipv4Addr>,
    /// Per tenant: the overlays last applied to its namespace, with the receiving filter they
    /// were rendered into (it also depends on the local endpoints).
    overlays: HashMap<String, (Vec<net::Overlay>, String)>,
    /// Per tenant: the floating IP of each local endpoint (by its address) as last applied.
    fips: HashMap<String, HashMap<Ipv4Addr, Ipv4Addr>>,
    /// Per tenant: the requests (counted in `Networks::sync_requests`) the last successful
    /// sync covers: all those made before it began.
    synced: HashMap<String, u64>,
}

/// A ruleset as rendered, and its tables as the kernel listed them right after.
struct Applied {
    input: String,
    installed: net::Tables,
}

impl SyncState {
    fn forget(&mut self, tenant: &str) {
        self.idle.remove(tenant);
        self.links.remove(tenant);
        self.tenant_rules.remove(tenant);
        self.overlays.remove(tenant);
        self.fips.remove(tenant);
    }
}

/// How long a tenant's namespace stays up once nothing uses it: short-lived containers in a
/// row (`run --rm`) then find it ready instead of building it (links, rules, DNS) and tearing
/// it down each time. [`Networks::reap_idle`] takes down the ones idle for longer.
pub const LINGER: Duration = Duration::from_secs(300);

fn tap_name(container_id: &str) -> String {
    format!("tap{}", &container_id[..12])
}

fn net_err(e: net::NetError) -> RuntimeError {
    RuntimeError::Internal(format!("networking: {e}"))
}

/// Is `mode` the tenant's default network?
fn is_default(mode: &str) -> bool {
    matches!(mode, "" | "default" | DEFAULT_NETWORK)
}

impl Networks {
    pub fn new(store: Arc<dyn Store>, cfg: NetConfig) -> Self {
        let fip_pool = fips::pool_addresses(&cfg.fip_pool);
        Self {
            store,
            cfg,
            fip_pool,
            sync: Mutex::new(SyncState::default()),
            sync_requests: Mutex::default(),
        }
    }

    fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// Ranges a tenant's subnets must stay clear of.
    fn reserved(&self) -> Vec<Ipv4Net> {
        let mut r = vec![self.cfg.transit_cidr];
        r.extend(self.cfg.fip_pool.iter().copied());
        r
    }

    // ---- networks (Docker's /networks) ----

    /// The tenant's default network, made on first use.
    pub fn default_network(&self, tenant: &str) -> Result<NetworkRecord> {
        match records::find_network(self.store(), tenant, DEFAULT_NETWORK) {
            Err(RuntimeError::NotFound(_)) => {}
            other => return other,
        }
        let subnet = self.cfg.default_subnet;
        match self.create_network(tenant, DEFAULT_NETWORK, Some(subnet), Default::default()) {
            Err(RuntimeError::Conflict(_)) => {
                records::find_network(self.store(), tenant, DEFAULT_NETWORK)
            }
            other => other,
        }
    }

    pub fn create_network(
        &self,
        tenant: &str,
        name: &str,
        subnet: Option<Ipv4Net>,
        labels: std::collections::BTreeMap<String, String>,
    ) -> Result<NetworkRecord> {
        crate::validate::network_name(name)?;
        if name != DEFAULT_NETWORK && is_default(name) || name == "none" || name == "host" {
            return Err(RuntimeError::Invalid(format!(
                "{name} is a pre-defined network and cannot be created"
            )));
        }
        if name != DEFAULT_NETWORK {
            // Make sure the default network takes its subnet first.
            self.default_network(tenant)?;
        }
        let subnet = match subnet {
            Some(s) => s,
            None => {
                let mut taken: Vec<Ipv4Net> = records::list_networks(self.store(), tenant)?
                    .iter()
                    .map(|n| n.subnet)
                    .collect();
                taken.extend(self.reserved());
                ipam::auto_subnet(&taken).ok_or_else(|| {
                    RuntimeError::Conflict(
                        "no free subnet left for a new network; give --subnet".into(),
                    )
                })?
            }
        };
        let record = NetworkRecord {
            id: crate::runtime::random_id(),
            tenant: tenant.into(),
            name: name.into(),
            subnet,
            gateway: ipam::gateway_of(subnet),
            bridge: String::new(),
            created: Utc::now(),
            labels,
            vni: 0,
        };
        records::create_network(self.store(), record, &self.reserved())
    }

    pub fn list_networks(&self, tenant: &str) -> Result<Vec<NetworkRecord>> {
        self.default_network(tenant)?;
        records::list_networks(self.store(), tenant)
    }

    pub fn find_network(&self, tenant: &str, reference: &str) -> Result<NetworkRecord> {
        if is_default(reference) {
            return self.default_network(tenant);
        }
        records::find_network(self.store(), tenant, reference)
    }

    pub fn remove_network(&self, tenant: &str, reference: &str) -> Result<()> {
        let n = self.find_network(tenant, reference)?;
        if n.name == DEFAULT_NETWORK {
            return Err(RuntimeError::Invalid(format!(
                "{DEFAULT_NETWORK} is a pre-defined network and cannot be removed"
            )));
        }
        records::delete_network(self.store(), &n)?;
        self.sync_tenant(tenant, &[])
    }

    // ---- endpoints ----

    /// Claims the container's address and host ports at create. `None` for `--network none`.
    pub fn plan_endpoint(&self, c: &Container, aliases: Vec<String>) -> Result<Option<Endpoint>> {
        let mode = c.host_config.network_mode.as_str();
        if mode == "none" {
            if !c.host_config.port_bindings.is_empty() || c.host_config.publish_all_ports {
                return Err(RuntimeError::Invalid(
                    "conflicting options: port publishing and the container type network mode"
                        .into(),
                ));
            }
            return Ok(None);
        }
        if mode == "host" || mode.starts_with("container:") {
            return Err(RuntimeError::Unsupported(format!(
                "hyper does not support --network {mode}: every container has its own VM and network interface"
            )));
        }
        guest_files::validate(&c.host_config)?;
        let requests = ports::requests(&c.config, &c.host_config).map_err(RuntimeError::Invalid)?;
        let network = self.find_network(&c.tenant, mode).map_err(|e| match e {
            RuntimeError::NotFound(m) => RuntimeError::Invalid(m),
            e => e,
        })?;
        // Host ports are checked against what listens in the node's namespace.
        self.in_node(|| self.claim(c, &network, aliases, &requests))
    }

    fn claim(
        &self,
        c: &Container,
        network: &NetworkRecord,
        aliases: Vec<String>,
        requests: &[ports::PortRequest],
    ) -> Result<Option<Endpoint>> {
        let ip = records::claim_ip(self.store(), network, &c.id)?;
        let owner = format!("{}/{}", c.tenant, c.id);
        let mut published: Vec<PublishedPort> = Vec::new();
        let undo = |published: &[PublishedPort]| {
            for p in published {
                let _ = records::release_host_port(self.store(), &p.proto, p.host_port, &owner);
            }
            let _ = records::release_ip(self.store(), &c.tenant, &network.id, ip);
        };
        for r in requests {
            let port = match r.host_port {
                Some(p) => {
                    if !records::claim_host_port(self.store(), &r.proto, r.host_ip, p, &owner)? {
                        undo(&published);
                        let host = r.host_ip.map_or("0.0.0.0".to_string(), |i| i.to_string());
                        return Err(RuntimeError::Conflict(format!(
                            "Bind for {host}:{p} failed: port is already allocated"
                        )));
                    }
                    p
                }
                None => match self.claim_random_port(&r.proto, r.host_ip, &owner)? {
                    Some(p) => p,
                    None => {
                        undo(&published);
                        return Err(RuntimeError::Conflict(
                            "no free host port left to publish on".into(),
                        ));
                    }
                },
            };
            published.push(PublishedPort {
                proto: r.proto.clone(),
                host_ip: r.host_ip,
                host_port: port,
                container_port: r.container_port,
            });
        }
        Ok(Some(Endpoint {
            network_id: network.id.clone(),
            network_name: network.name.clone(),
            ip,
            prefix_len: network.subnet.prefix_len(),
            gateway: network.gateway,
            mac: ipam::mac_for(ip),
            aliases,
            ports: published,
        }))
    }

    fn claim_random_port(
        &self,
        proto: &str,
        host_ip: Option<Ipv4Addr>,
        owner: &str,
    ) -> Result<Option<u16>> {
        let span = u32::from(ports::EPHEMERAL.end() - ports::EPHEMERAL.start()) + 1;
        let start = rand::random::<u32>() % span;
        for i in 0..span {
            let port = *ports::EPHEMERAL.start() + ((start + i) % span) as u16;
            if records::claim_host_port(self.store(), proto, host_ip, port, owner)? {
                return Ok(Some(port));
            }
        }
        Ok(None)
    }

    /// Gives back what [`Networks::plan_endpoint`] claimed and the container's floating IP
    /// (`rm` detaches it). The kernel side follows with the next sync.
    pub fn release_endpoint(&self, c: &Container) -> Result<()> {
        let owner = format!("{}/{}", c.tenant, c.id);
        if let Some(ep) = &c.endpoint {
            for p in &ep.ports {
                records::release_host_port(self.store(), &p.proto, p.host_port, &owner)?;
            }
            records::release_ip(self.store(), &c.tenant, &ep.network_id, ep.ip)?;
        }
        fips::detach(self.store(), &c.tenant, container_holder(c))?;
        Ok(())
    }

    /// Everything the VM side needs to plug the container in, after making sure its tenant's
    /// namespace, bridge, rules and DNS are in place.
    pub fn start_spec(&self, c: &Container) -> Result<Option<NetworkSpec>> {
        let Some(ep) = &c.endpoint else {
            return Ok(None);
        };
        self.sync_tenant(&c.tenant, &[])?;
        let network = records::find_network(self.store(), &c.tenant, &ep.network_id)?;
        let containers = self.containers(&c.tenant)?;
        let mut links = Vec::new();
        for l in &c.host_config.links {
            let (target, alias) = guest_files::parse_link(l);
            if let Some(t) = containers
                .iter()
                .find(|t| t.name == target || t.id == target)
            {
                links.push((t.clone(), alias));
            }
        }
        Ok(Some(NetworkSpec {
            netns: self.netns_path(&c.tenant)?,
            bridge: network.bridge.clone(),
            tap: tap_name(&c.id),
            mac: ep.mac.clone(),
            ip: format!("{}/{}", ep.ip, ep.prefix_len),
            gateway: ep.gateway.to_string(),
            mtu: self.cfg.mtu,
            resolv_conf: guest_files::resolv_conf(ep.gateway, &c.host_config),
            hosts: guest_files::hosts_lines(&links, &c.host_config),
        }))
    }

    /// Docker's link variables for the container's `--link`s (resolved at start).
    pub fn link_env(&self, c: &Container) -> Result<Vec<String>> {
        let mut env = Vec::new();
        if c.host_config.links.is_empty() {
            return Ok(env);
        }
        let containers = self.containers(&c.tenant)?;
        for l in &c.host_config.links {
            let (target, alias) = guest_files::parse_link(l);
            if let Some(t) = containers
                .iter()
                .find(|t| t.name == target || t.id == target)
            {
                env.extend(guest_files::link_env(&c.name, t, &alias));
            }
        }
        Ok(env)
    }

    /// Checks `--link` targets at create: each must be a container of the tenant on the same
    /// network. On a network of the tenant's own making a link is, as with dockerd, a name
    /// only this container resolves (see `dns::Zone`), and its target may come later.
    pub fn check_links(&self, c: &Container) -> Result<()> {
        if c.host_config.links.is_empty() {
            return Ok(());
        }
        let Some(ep) = &c.endpoint else {
            return Err(RuntimeError::Invalid(
                "conflicting options: --link needs a network (not --network none)".into(),
            ));
        };
        let on_user_network = ep.network_name != DEFAULT_NETWORK;
        let containers = self.containers(&c.tenant)?;
        for l in &c.host_config.links {
            let (target, _) = guest_files::parse_link(l);
            let found = containers
                .iter()
                .find(|t| t.name == target || t.id == target);
            let t = match found {
                Some(t) => t,
                None if on_user_network => continue,
                None => {
                    return Err(RuntimeError::Invalid(format!(
                        "could not get container for {target}: no such container"
                    )))
                }
            };
            if t.endpoint.as_ref().map(|e| &e.network_id) != Some(&ep.network_id) {
                return Err(RuntimeError::Invalid(format!(
                    "cannot link to {target}: it is not on network {}",
                    ep.network_name
                )));
            }
        }
        Ok(())
    }

    // ---- floating IPs ----

    pub fn fip_allocate(&self, tenant: &str, count: u64) -> Result<Vec<Ipv4Addr>> {
        fips::allocate(self.store(), &self.fip_pool, tenant, count)
    }

    pub fn fip_list(&self, tenant: &str) -> Result<Vec<fips::FipRecord>> {
        fips::list(self.store(), tenant)
    }

    pub fn fip_release(&self, tenant: &str, ip: &str) -> Result<()> {
        fips::release(self.store(), tenant, ip)?;
        // The sync forgets the flows of the endpoint that had it.
        self.sync_tenant(tenant, &[])
    }

    pub fn fip_attach(&self, c: &Container, ip: &str) -> Result<()> {
        if c.endpoint.is_none() {
            return Err(RuntimeError::Invalid(format!(
                "container {} has no network (--network none)",
                c.name
            )));
        }
        fips::attach(self.store(), &c.tenant, ip, container_holder(c))?;
        self.sync_tenant(&c.tenant, &[])
    }

    pub fn fip_detach(&self, c: &Container) -> Result<Ipv4Addr> {
        let ip = fips::detach(self.store(), &c.tenant, container_holder(c))?.ok_or_else(|| {
            RuntimeError::NotFound(format!("container {} has no floating IP", c.name))
        })?;
        self.sync_tenant(&c.tenant, &[])?;
        Ok(ip)
    }

    pub fn fip_rename(&self, tenant: &str, ip: &str, name: &str) -> Result<()> {
        fips::rename(self.store(), tenant, ip, name)
    }

    // ---- security groups ----

    pub fn sg_members(&self, tenant: &str, name: &str) -> Result<Vec<String>> {
        Ok(self
            .containers(tenant)?
            .into_iter()
            .filter(|c| sg::groups_of(c).iter().any(|g| g == name))
            .map(|c| c.id)
            .collect())
    }

    /// Re-applies a tenant's rules after a group changed, cutting its members' tracked
    /// connections so the new rules judge them too.
    pub fn sg_changed(&self, tenant: &str, name: &str) -> Result<()> {
        let flush: Vec<Ipv4Addr> = self
            .containers(tenant)?
            .iter()
            .filter(|c| sg::groups_of(c).iter().any(|g| g == name))
            .filter_map(|c| c.endpoint.as_ref().map(|e| e.ip))
            .collect();
        self.sync_tenant(tenant, &flush)
    }

    /// Every group named in the container's labels must exist.
    /// (A 400, not a 404: on create, clients read a 404 as "no such image" and pull.)
    pub fn check_groups(&self, c: &Container) -> Result<()> {
        for g in sg::groups_of(c) {
            sg::get(self.store(), &c.tenant, &g).map_err(|e| match e {
                RuntimeError::NotFound(m) => {
                    RuntimeError::Invalid(format!("{m}: create it with hyper sg create"))
                }
                e => e,
            })?;
        }
        Ok(())
    }

    pub fn store_handle(&self) -> &dyn Store {
        self.store()
    }

    // ---- the kernel side ----

    /// The tenant's networks as they span nodes: for each with endpoints on other nodes that
    /// are up and have an address (their containers, and their own addresses on the default
    /// network that their balancers use), those endpoints and their nodes (see
    /// docs/overlay.md). None without `--node-address`.
    fn overlays(
        &self,
        containers: &[Container],
        networks: &[NetworkRecord],
    ) -> Result<Vec<net::Overlay>> {
        let Some(local_ip) = self.cfg.node_address else {
            return Ok(Vec::new());
        };
        // (network, MAC, address, node) of every endpoint on another node.
        let mut remote: Vec<(&str, [u8; 6], Ipv4Addr, String)> = containers
            .iter()
            .filter(|c| !self.is_local(c))
            .filter_map(|c| {
                let ep = c.endpoint.as_ref()?;
                Some((
                    ep.network_id.as_str(),
                    parse_mac(&ep.mac),
                    ep.ip,
                    c.node.clone(),
                ))
            })
            .collect();
        for n in networks.iter().filter(|n| n.name == DEFAULT_NETWORK) {
            for (node, ip) in records::node_addresses(self.store(), n)? {
                if !crate::fleet::runs_here(&node, &self.cfg.node_name) {
                    remote.push((n.id.as_str(), net::node_mac(ip), ip, node));
                }
            }
        }
        if remote.is_empty() {
            return Ok(Vec::new());
        }
        let nodes = self.ready_node_addresses()?;
        let mut overlays = Vec::new();
        for n in networks {
            let remotes: Vec<net::RemoteEndpoint> = remote
                .iter()
                .filter(|(network, ..)| *network == n.id)
                .filter_map(|(_, mac, ip, node)| {
                    Some(net::RemoteEndpoint {
                        mac: *mac,
                        ip: *ip,
                        node_ip: *nodes.get(node)?,
                    })
                })
                .collect();
            if remotes.is_empty() {
                continue;
            }
            overlays.push(net::Overlay {
                bridge: n.bridge.clone(),
                vni: records::vni_of(self.store(), n)?,
                local_ip,
                remotes,
            });
        }
        Ok(overlays)
    }

    /// In a fleet, this node holds an address of its own on the tenant's default network
    /// while the tenant has services: its balancer reaches replicas on other nodes from it.
    /// Given back when the services are gone.
    fn hold_node_address(&self, tenant: &str, services: &[ServiceRecord]) -> Result<()> {
        if self.cfg.node_address.is_none() {
            return Ok(());
        }
        let network = match records::find_network(self.store(), tenant, DEFAULT_NETWORK) {
            Err(RuntimeError::NotFound(_)) => return Ok(()),
            other => other?,
        };
        if services.is_empty() {
            records::release_node_ip(self.store(), &network, &self.cfg.node_name)
        } else {
            records::claim_node_ip(self.store(), &network, &self.cfg.node_name).map(|_| ())
        }
    }

    /// This node's own address on network `n` and the other nodes' (see
    /// [`Networks::hold_node_address`]).
    fn node_addresses(&self, n: &NetworkRecord) -> Result<(Option<Ipv4Addr>, Vec<Ipv4Addr>)> {
        if self.cfg.node_address.is_none() || n.name != DEFAULT_NETWORK {
            return Ok((None, Vec::new()));
        }
        let mut all = records::node_addresses(self.store(), n)?;
        let own = all.remove(&self.cfg.node_name);
        Ok((own, all.into_values().collect()))
    }

    /// The fleet's nodes that are up, by name, with their addresses on its network.
    fn ready_node_addresses(&self) -> Result<HashMap<String, Ipv4Addr>> {
        Ok(crate::fleet::list(self.store())?
            .into_iter()
            .filter(|n| n.state == crate::fleet::NodeState::Ready)
            .filter_map(|n| Some((n.record.name, n.record.address?)))
            .collect())
    }

    /// The addresses of the fleet's nodes, this one's included, whether up or down (a node
    /// coming back is let in at once); none off a fleet's network.
    fn fleet_addresses(&self) -> Result<Vec<Ipv4Addr>> {
        let Some(own) = self.cfg.node_address else {
            return Ok(Vec::new());
        };
        let mut addresses: Vec<Ipv4Addr> = crate::fleet::list(self.store())?
            .into_iter()
            .filter_map(|n| n.record.address)
            .chain([own])
            .collect();
        addresses.sort();
        addresses.dedup();
        Ok(addresses)
    }

    /// Whether this node runs the container (and so holds its tap, FIP and published ports).
    fn is_local(&self, c: &Container) -> bool {
        crate::fleet::runs_here(&c.node, &self.cfg.node_name)
    }

    /// The tenant's containers on every node (names, links and security groups span nodes).
    fn containers(&self, tenant: &str) -> Result<Vec<Container>> {
        self.store()
            .range(&format!("/containers/{tenant}/"))?
            .iter()
            .map(|kv| {
                serde_json::from_slice(&kv.value)
                    .map_err(|e| RuntimeError::Internal(format!("bad container record: {e}")))
            })
            .collect()
    }

    fn services(&self, tenant: &str) -> Result<Vec<ServiceRecord>> {
        self.store()
            .range(&format!("/services/{tenant}/"))?
            .iter()
            .map(|kv| {
                serde_json::from_slice(&kv.value)
                    .map_err(|e| RuntimeError::Internal(format!("bad service record: {e}")))
            })
            .collect()
    }

    /// A stable address for a service in the tenant's default network.
    pub fn claim_service_ip(
        &self,
        tenant: &str,
        service: &str,
    ) -> Result<(NetworkRecord, Ipv4Addr)> {
        let network = self.default_network(tenant)?;
        let ip = records::claim_ip(self.store(), &network, &format!("service:{service}"))?;
        Ok((network, ip))
    }

    pub fn release_service_ip(&self, tenant: &str, network: &str, ip: Ipv4Addr) -> Result<()> {
        records::release_ip(self.store(), tenant, network, ip)
    }

    /// The tenant balancer's last health report.
    pub fn lb_status(&self, tenant: &str) -> Result<lb::Status> {
        let Some(index) = self.existing_transit(tenant)? else {
            return Ok(lb::Status::default());
        };
        Ok(lb::status(&self.cfg.lb_binary, &self.tenant_dir(index)))
    }

    pub fn fip_attach_service(&self, tenant: &str, ip: &str, service: &str) -> Result<()> {
        fips::attach(self.store(), tenant, ip, fips::Holder::Service(service))?;
        self.sync_tenant(tenant, &[])
    }

    pub fn fip_detach_service(&self, tenant: &str, service: &str) -> Result<Option<Ipv4Addr>> {
        let ip = fips::detach(self.store(), tenant, fips::Holder::Service(service))?;
        self.sync_tenant(tenant, &[])?;
        Ok(ip)
    }

    /// The tenant's transit index, when its namespace exists (or should).
    fn existing_transit(&self, tenant: &str) -> Result<Option<u32>> {
        Ok(
            records::tenants_with_transit(self.store(), &self.cfg.node_name)?
                .into_iter()
                .find_map(|(t, index)| (t == tenant).then_some(index)),
        )
    }

    fn tenant_dir(&self, index: u32) -> PathBuf {
        self.cfg.state_dir.join(format!("t{index}"))
    }

    fn netns_path(&self, tenant: &str) -> Result<PathBuf> {
        let index = records::transit_index(
            self.store(),
            &self.cfg.node_name,
            tenant,
            self.transit_slots(),
        )?;
        Ok(self.tenant_dir(index).join("netns"))
    }

    /// How many /31 links the transit range holds.
    fn transit_slots(&self) -> u32 {
        ((1u64 << (32 - u32::from(self.cfg.transit_cidr.prefix_len()))) / 2) as u32
    }

    /// The tenant's namespace as the `net` crate realises it, from the store.
    fn tenant_model(&self, tenant: &str, index: u32) -> Result<net::TenantNetns> {
        let containers = self.containers(tenant)?;
        let networks = records::list_networks(self.store(), tenant)?;
        let attached = fips::list(self.store(), tenant)?;
        let groups = sg::list(self.store(), tenant)?;
        let services = self.services(tenant)?;
        let mut bridges = Vec::new();
        for n in &networks {
            let endpoints = containers
                .iter()
                .filter(|c| self.is_local(c))
                .filter_map(|c| Some((c, c.endpoint.as_ref()?)))
                .filter(|(_, ep)| ep.network_id == n.id)
                .map(|(c, ep)| net::Endpoint {
                    tap: tap_name(&c.id),
                    mac: parse_mac(&ep.mac),
                    ip: ep.ip,
                    ports: ep
                        .ports
                        .iter()
                        .map(|p| net::PortMapping {
                            proto: if p.proto == "udp" {
                                net::Proto::Udp
                            } else {
                                net::Proto::Tcp
                            },
                            host_ip: p.host_ip,
                            host_port: p.host_port,
                            container_port: p.container_port,
                        })
                        .collect(),
                    fip: attached.iter().find(|f| f.container == c.id).map(|f| f.ip),
                    security_groups: security_rules(c, &groups, &containers),
                })
                .collect();
            let vips = services
                .iter()
                .filter(|s| s.network_id == n.id)
                .map(|s| net::ServiceVip {
                    ip: s.ip,
                    ports: vec![(net::Proto::Tcp, s.spec.service_port)],
                    fip: attached
                        .iter()
                        .find(|f| f.service == s.spec.name)
                        .map(|f| f.ip),
                })
                .collect();
            let (node_ip, peer_node_ips) = self.node_addresses(n)?;
            bridges.push(net::Bridge {
                ifname: n.bridge.clone(),
                subnet: n.subnet,
                gateway: n.gateway,
                mtu: self.cfg.mtu,
                node_ip,
                peer_node_ips,
                endpoints,
                services: vips,
            });
        }
        Ok(net::TenantNetns {
            name: format!("t{index}"),
            netns_path: self.tenant_dir(index).join("netns"),
            transit: net::transit_for(&self.node_net_alone(), index).map_err(net_err)?,
            bridges,
        })
    }

    /// Makes the kernel match the store for `tenant` (and the node's shared rules), or tears
    /// the tenant's namespace down when none of its containers has a network any more.
    ///
    /// Concurrent requests for one tenant share a sync: a sync reads the store after it
    /// begins, so it covers every request made before that, and a request that finds such a
    /// sync done (while it waited for the lock) returns at once. A burst of 100 starts or
    /// removals then costs a few syncs instead of 100 in a row, each rebuilding rules and DNS
    /// for all the tenant's containers, and another tenant's sync waits behind a few.
    pub fn sync_tenant(&self, tenant: &str, flush: &[Ipv4Addr]) -> Result<()> {
        let request = {
            let mut requests = self.sync_requests.lock().expect("poisoned");
            let n = requests.entry(tenant.to_string()).or_default();
            *n += 1;
            *n
        };
        let mut guard = self.sync.lock().expect("poisoned");
        let state: &mut SyncState = &mut guard;
        if flush.is_empty() && state.synced.get(tenant).is_some_and(|&s| s >= request) {
            return Ok(());
        }
        let covers = self.sync_requests.lock().expect("poisoned")[tenant];
        self.in_node(|| {
            self.sync_tenant_locked(tenant, flush, state, false)?;
            self.sync_node_locked(state)
        })?;
        state.synced.insert(tenant.to_string(), covers);
        Ok(())
    }

    /// Take down the namespaces of tenants idle for [`LINGER`].
    pub fn reap_idle(&self) -> Result<()> {
        let mut guard = self.sync.lock().expect("poisoned");
        let state: &mut SyncState = &mut guard;
        let due: Vec<String> = state
            .idle
            .iter()
            .filter(|(_, since)| since.elapsed() >= LINGER)
            .map(|(t, _)| t.clone())
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        self.in_node(|| {
            for tenant in &due {
                self.sync_tenant_locked(tenant, &[], state, true)?;
            }
            self.sync_node_locked(state)
        })
    }

    /// Runs `f` in the node's network namespace (see [`NetConfig::node_netns`]).
    fn in_node<R: Send>(&self, f: impl FnOnce() -> Result<R> + Send) -> Result<R> {
        match &self.cfg.node_netns {
            None => f(),
            Some(path) => net::in_netns(path, f).map_err(net_err)?,
        }
    }

    /// `reap`: take this tenant's namespace down now if nothing uses it (else it lingers).
    fn sync_tenant_locked(
        &self,
        tenant: &str,
        flush: &[Ipv4Addr],
        state: &mut SyncState,
        reap: bool,
    ) -> Result<()> {
        let containers = self.containers(tenant)?;
        let services = self.services(tenant)?;
        let in_use = containers
            .iter()
            .any(|c| self.is_local(c) && c.endpoint.is_some())
            || !services.is_empty();
        let index = match self.existing_transit(tenant)? {
            Some(index) => index,
            None if !in_use => return Ok(()),
            None => records::transit_index(
                self.store(),
                &self.cfg.node_name,
                tenant,
                self.transit_slots(),
            )?,
        };
        self.hold_node_address(tenant, &services)?;
        let model = self.tenant_model(tenant, index)?;
        let dir = self.tenant_dir(index);
        if in_use {
            state.idle.remove(tenant);
        } else if !reap {
            state
                .idle
                .entry(tenant.to_string())
                .or_insert_with(Instant::now);
        }
        if !in_use && reap {
            state.forget(tenant);
            dns::daemon(&self.cfg.dns_binary, &dir).stop();
            lb::daemon(&self.cfg.lb_binary, &dir).stop();
            net::destroy_netns(&model).map_err(net_err)?;
            let _ = std::fs::remove_dir_all(&dir);
            return records::release_transit(self.store(), &self.cfg.node_name, tenant, index);
        }
        std::fs::create_dir_all(&dir)
            .map_err(RuntimeError::io(format!("create {}", dir.display())))?;
        // The namespace, its links, bridges and service addresses: built again whenever any of
        // what they are built from changed (a service created or removed changes the bridge's
        // addresses, with no link added or removed).
        let links = net::netns_inputs(&model);
        if state.links.get(tenant) != Some(&links) || !model.netns_path.exists() {
            state.links.remove(tenant);
            net::ensure_netns(&model).map_err(net_err)?;
            state.links.insert(tenant.to_string(), links);
        }
        // An endpoint whose FIP came, went or changed forgets its tracked connections (so a
        // detached or released address stops carrying even the ones it had), whichever node
        // the change was made through: the NAT of its flows lives here.
        let fips: HashMap<Ipv4Addr, Ipv4Addr> = model
            .bridges
            .iter()
            .flat_map(|b| &b.endpoints)
            .filter_map(|e| Some((e.ip, e.fip?)))
            .collect();
        let mut flush = flush.to_vec();
        if let Some(before) = state.fips.get(tenant) {
            let changed = |ip: &Ipv4Addr| before.get(ip) != fips.get(ip);
            let ips: BTreeSet<Ipv4Addr> = before.keys().chain(fips.keys()).copied().collect();
            flush.extend(ips.into_iter().filter(changed));
        }
        state.fips.insert(tenant.to_string(), fips);
        let rules = net::render_tenant_rules(&model);
        let applied = state.tenant_rules.get(tenant).map(|a| &a.input);
        if applied != Some(&rules) || !flush.is_empty() {
            state.tenant_rules.remove(tenant);
            let installed = net::apply_tenant_rules(&model, &flush).map_err(net_err)?;
            let applied = Applied {
                input: rules,
                installed,
            };
            state.tenant_rules.insert(tenant.to_string(), applied);
        }
        let networks = records::list_networks(self.store(), tenant)?;
        let overlays = self.overlays(&containers, &networks)?;
        // One node (no --node-address) has no overlay to read back or apply.
        if self.cfg.node_address.is_some() {
            let rules = net::render_overlay_rules(&model, &overlays);
            let applied = (overlays, rules);
            if state.overlays.get(tenant) != Some(&applied) {
                state.overlays.remove(tenant);
                net::apply_overlays(&model, &applied.0).map_err(net_err)?;
                state.overlays.insert(tenant.to_string(), applied);
            }
        }
        let zones: Vec<dns::Zone> = networks
            .iter()
            .map(|n| dns::Zone::of_network(n, &containers, &services))
            .collect();
        dns::sync(&self.cfg.dns_binary, &dir, &model.netns_path, &zones)?;
        // Replicas on other nodes are reached from this node's own address on the network;
        // without one they are out of reach.
        let own_address = |network: &str| {
            let n = networks.iter().find(|n| n.id == network)?;
            model.bridges.iter().find(|b| b.ifname == n.bridge)?.node_ip
        };
        let balanced: Vec<(ServiceRecord, Vec<lb::Backend>)> = services
            .into_iter()
            .map(|svc| {
                let backends = containers
                    .iter()
                    .filter(|c| {
                        c.config.labels.get(SERVICE_LABEL) == Some(&svc.spec.name)
                            && c.is_running()
                            && !svc.draining.contains(&c.id)
                    })
                    .filter_map(|c| {
                        let source = match self.is_local(c) {
                            true => None,
                            false => Some(own_address(&svc.network_id)?),
                        };
                        Some(lb::Backend {
                            id: c.short_id().to_string(),
                            addr: (c.endpoint.as_ref()?.ip, svc.spec.container_port),
                            source,
                        })
                    })
                    .collect();
                (svc, backends)
            })
            .collect();
        lb::sync(&self.cfg.lb_binary, &dir, &model.netns_path, &balanced)
    }

    /// The tenants holding a transit link, each with its namespace as the `net` crate
    /// realises it.
    fn transit_models(&self) -> Result<Vec<(String, net::TenantNetns)>> {
        records::tenants_with_transit(self.store(), &self.cfg.node_name)?
            .into_iter()
            .map(|(tenant, index)| Ok((tenant.clone(), self.tenant_model(&tenant, index)?)))
            .collect()
    }

    /// What the node gets: its ruleset and the FIP routes (most container changes leave both
    /// as they were), or nothing at all when no tenant has a link. The table is the same for
    /// no tenants and for tenants without published ports: the input says which it is.
    fn node_input(&self, node: &net::NodeNet, models: &[(String, net::TenantNetns)]) -> String {
        if models.is_empty() && node.fips_elsewhere.is_empty() {
            return "removed".to_string();
        }
        let refs: Vec<&net::TenantNetns> = models.iter().map(|(_, m)| m).collect();
        format!(
            "{}\n{:?}",
            net::render_node_rules(node, &refs),
            net::fip_routes(node, &refs)
        )
    }

    /// The node's side (transit pool, other nodes' FIPs) as the `net` crate realises it.
    fn node_net(&self) -> Result<net::NodeNet> {
        Ok(net::NodeNet {
            fips_elsewhere: self.fips_elsewhere()?,
            ..self.node_net_alone()
        })
    }

    /// [`Networks::node_net`] without what other nodes hold.
    fn node_net_alone(&self) -> net::NodeNet {
        net::NodeNet {
            transit_cidr: self.cfg.transit_cidr,
            fips_elsewhere: Vec::new(),
        }
    }

    /// The FIPs of containers that other nodes run (up, and not lost), each with the address
    /// of its node: this node routes them there, so a FIP is reached through any node and
    /// follows its container when it moves.
    fn fips_elsewhere(&self) -> Result<Vec<net::FipElsewhere>> {
        if self.cfg.node_address.is_none() {
            return Ok(Vec::new());
        }
        let held = fips::attached_to_containers(self.store())?;
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let nodes = self.ready_node_addresses()?;
        let mut elsewhere = Vec::new();
        for f in held {
            let key = format!("/containers/{}/{}", f.tenant, f.container);
            let Some(kv) = self.store().get(&key)? else {
                continue;
            };
            let Ok(c) = serde_json::from_slice::<Container>(&kv.value) else {
                continue;
            };
            if self.is_local(&c) || c.lost.is_some() {
                continue;
            }
            if let Some(node_ip) = nodes.get(&c.node) {
                elsewhere.push(net::FipElsewhere {
                    fip: f.ip,
                    node_ip: *node_ip,
                });
            }
        }
        Ok(elsewhere)
    }

    fn sync_node_locked(&self, state: &mut SyncState) -> Result<()> {
        let models = self.transit_models()?;
        let node = self.node_net()?;
        let input = self.node_input(&node, &models);
        if state.node.as_ref().map(|a| &a.input) == Some(&input) {
            return Ok(());
        }
        state.node = None;
        let installed = if models.is_empty() && node.fips_elsewhere.is_empty() {
            net::remove_node_rules().map_err(net_err)?;
            net::Tables::new()
        } else {
            let refs: Vec<&net::TenantNetns> = models.iter().map(|(_, m)| m).collect();
            net::apply_node_rules(&node, &refs).map_err(net_err)?
        };
        state.node = Some(Applied { input, installed });
        Ok(())
    }

    /// Every tenant with containers on this node or a transit link here: those whose network
    /// may be owed.
    fn tenants(&self) -> Result<Vec<String>> {
        Ok(self
            .store()
            .range("/containers/")?
            .iter()
            .filter(|kv| {
                serde_json::from_slice::<Container>(&kv.value).is_ok_and(|c| self.is_local(&c))
            })
            .filter_map(|kv| kv.key.split('/').nth(2).map(String::from))
            .chain(
                records::tenants_with_transit(self.store(), &self.cfg.node_name)?
                    .into_iter()
                    .map(|(t, _)| t),
            )
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect())
    }

    /// At hyperd's start: rebuild every tenant's namespace, rules and DNS from the store
    /// (a no-op for what survived; a repair for what did not).
    pub fn recover(&self) -> Result<()> {
        records::adopt_legacy_transit(self.store(), &self.cfg.node_name)?;
        self.take_handovers()?;
        self.sync_all()
    }

    /// As hyperd stops: every tenant namespace stays up, idle ones too (the next hyperd takes
    /// down those still idle after [`LINGER`]); what each was built from is handed over
    /// ([`handover`]), so the next hyperd's first sync of it builds nothing again.
    pub fn hand_over(&self) -> Result<()> {
        let guard = self.sync.lock().expect("poisoned");
        for (tenant, index) in records::tenants_with_transit(self.store(), &self.cfg.node_name)? {
            let (Some(links), Some(rules)) =
                (guard.links.get(&tenant), guard.tenant_rules.get(&tenant))
            else {
                continue;
            };
            let handover = handover::Handover {
                links: handover::links_digest(links),
                rules: rules.input.clone(),
                installed: rules.installed.clone(),
            };
            let dir = self.tenant_dir(index);
            if let Err(e) = handover::write(&dir, &handover) {
                tracing::warn!("handing the network of tenant {tenant} over: {e}");
            }
        }
        Ok(())
    }

    /// What the previous hyperd handed over, taken as applied where the namespace is still
    /// there and its links' inputs are still the same.
    fn take_handovers(&self) -> Result<()> {
        let mut guard = self.sync.lock().expect("poisoned");
        for (tenant, index) in records::tenants_with_transit(self.store(), &self.cfg.node_name)? {
            let dir = self.tenant_dir(index);
            let Some(handover) = handover::take(&dir) else {
                continue;
            };
            if !net::is_netns(&dir.join("netns")) {
                continue;
            }
            // A model that cannot be built now is the sync's to report.
            let Ok(model) = self.tenant_model(&tenant, index) else {
                continue;
            };
            let links = net::netns_inputs(&model);
            if handover::links_digest(&links) == handover.links {
                guard.links.insert(tenant.clone(), links);
            }
            let applied = Applied {
                input: handover.rules,
                installed: handover.installed,
            };
            guard.tenant_rules.insert(tenant, applied);
        }
        Ok(())
    }

    /// Syncs every tenant whose network this node owes (a node of the fleet came or went:
    /// the overlays' peers change).
    pub fn sync_all(&self) -> Result<()> {
        let tenants = self.tenants()?;
        let mut guard = self.sync.lock().expect("poisoned");
        let state: &mut SyncState = &mut guard;
        self.in_node(|| {
            self.follow_fleet_in_guard_locked(state)?;
            for t in &tenants {
                if let Err(e) = self.sync_tenant_locked(t, &[], state, false) {
                    tracing::error!("rebuilding the network of tenant {t}: {e}");
                }
            }
            self.sync_node_locked(state)
        })
    }
}

fn container_holder(c: &Container) -> fips::Holder<'_> {
    fips::Holder::Container {
        id: &c.id,
        name: &c.name,
    }
}

fn parse_mac(s: &str) -> [u8; 6] {
    let mut mac = [0u8; 6];
    for (i, part) in s.split(':').take(6).enumerate() {
        mac[i] = u8::from_str_radix(part, 16).unwrap_or(0);
    }
    mac
}

/// The flattened rules of the container's groups, remote groups resolved to their members'
/// addresses; `None` when it is in no group (open).
fn security_rules(
    c: &Container,
    groups: &[sg::SecurityGroup],
    containers: &[Container],
) -> Option<Vec<net::Rule>> {
    let names = sg::groups_of(c);
    if names.is_empty() {
        return None;
    }
    let mut rules = Vec::new();
    for g in groups.iter().filter(|g| names.contains(&g.name)) {
        for r in &g.rules {
            let remote = if let Some(p) = &r.remote_ip_prefix {
                match p.parse() {
                    Ok(net) => net::Remote::Cidr(net),
                    Err(_) => continue,
                }
            } else if let Some(group) = &r.remote_group_name {
                net::Remote::Ips(
                    containers
                        .iter()
                        .filter(|m| sg::groups_of(m).contains(group))
                        .filter_map(|m| m.endpoint.as_ref().map(|e| e.ip))
                        .collect(),
                )
            } else {
                net::Remote::Any
            };
            rules.push(net::Rule {
                direction: if r.direction == "egress" {
                    net::Direction::Egress
                } else {
                    net::Direction::Ingress
                },
                protocol: match r.protocol.as_str() {
                    "tcp" => Some(net::RuleProto::Tcp),
                    "udp" => Some(net::RuleProto::Udp),
                    "icmp" => Some(net::RuleProto::Icmp),
                    _ => None,
                },
                port_min: r.port_range_min,
                port_max: r.port_range_max,
                remote,
            });
        }
    }
    Some(rules)
}
