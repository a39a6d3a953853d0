//! The node's guard and the reconciler (issue 17): what hyperd installed is checked against
//! what it applied, and what the store says against what it applied, every few seconds.
//!
//! The syncs skip what they applied last ([`super::SyncState`]), so a table deleted by hand, a
//! link or address removed, a route gone would stay gone until the store next changed. A pass
//! reads the kernel back (four processes per namespace), names every difference at warn and
//! forgets the parts that drifted, then syncs every tenant whose state is not what the store
//! says, which puts back what drifted and applies any change a failed sync left behind.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use net::drift::Drift;
use tokio::sync::watch;

use super::{dns, lb, net_err, Networks, SyncState};
use crate::{Result, Runtime};

/// How often the reconciler runs unless told otherwise: drift is repaired within this.
pub const DEFAULT_RECONCILE_INTERVAL: Duration = Duration::from_secs(10);

/// Runs [`Networks::reconcile`] every `every` until `shutdown` turns true.
pub async fn reconcile_forever(
    runtime: Arc<Runtime>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = runtime.with_networks(|n| n.reconcile()).await {
            tracing::error!("reconciling the node's networks with the store: {e}");
        }
    }
}

impl Networks {
    /// Installs the node's guard (`net::install_guard`): at hyperd's start, before any tenant
    /// link is built or rebuilt.
    pub fn install_guard(&self) -> Result<()> {
        let fleet = self.fleet_addresses()?;
        let mut guard = self.sync.lock().expect("poisoned");
        let state: &mut SyncState = &mut guard;
        self.in_node(|| install_guard_locked(state, fleet))
    }

    /// The guard again when the fleet's node addresses changed since it was installed.
    pub(super) fn follow_fleet_in_guard_locked(&self, state: &mut SyncState) -> Result<()> {
        let fleet = self.fleet_addresses()?;
        if state.guard_fleet != fleet {
            install_guard_locked(state, fleet)?;
        }
        Ok(())
    }

    /// One pass of the reconciler: repairs what drifted from what was applied (logging each
    /// drift at warn) and applies what the store holds and the kernel does not yet.
    pub fn reconcile(&self) -> Result<()> {
        let mut guard = self.sync.lock().expect("poisoned");
        let state: &mut SyncState = &mut guard;
        self.in_node(|| self.reconcile_locked(state))
    }

    fn reconcile_locked(&self, state: &mut SyncState) -> Result<()> {
        let node = net::installed_on_node().map_err(net_err)?;
        // The guard first: it keeps tenants off the node while the rest is repaired.
        let drifts = match &state.guard {
            Some(installed) => net::drift::tables(installed, &node.tables),
            None => vec![Drift::TableMissing(net::GUARD_TABLE.into())],
        };
        if !drifts.is_empty() {
            report("the node's guard", &drifts);
            let fleet = state.guard_fleet.clone();
            install_guard_locked(state, fleet)?;
        }
        self.follow_fleet_in_guard_locked(state)?;
        let models = self.transit_models()?;
        for (tenant, model) in &models {
            match tenant_drift(state, tenant, model, &node) {
                Ok(drifts) if drifts.is_empty() => {}
                Ok(drifts) => {
                    report(&format!("tenant {tenant} ({})", model.name), &drifts);
                    state.links.remove(tenant);
                    state.tenant_rules.remove(tenant);
                }
                Err(e) => tracing::error!("reading back the network of tenant {tenant}: {e}"),
            }
        }
        if let Some(applied) = &state.node {
            let node_net = self.node_net()?;
            if applied.input == self.node_input(&node_net, &models) {
                let refs: Vec<&net::TenantNetns> = models.iter().map(|(_, m)| m).collect();
                let mut drifts = net::drift::tables(&applied.installed, &node.tables);
                drifts.extend(net::drift::node_fip_routes(&node_net, &refs, &node));
                if !drifts.is_empty() {
                    report("the node", &drifts);
                    state.node = None;
                }
            }
        }
        for tenant in self.tenants()? {
            let owed = match models.iter().find(|(t, _)| *t == tenant) {
                Some((_, model)) => {
                    !applied(state, &tenant, model) || self.daemon_down(&tenant, model)?
                }
                // Containers with a network and no link yet: the sync decides.
                None => true,
            };
            if owed {
                if let Err(e) = self.sync_tenant_locked(&tenant, &[], state, false) {
                    tracing::error!("reconciling the network of tenant {tenant}: {e}");
                }
            }
        }
        self.sync_node_locked(state)
    }

    /// Whether a helper daemon the tenant's namespace should have (`hyper-dns` always,
    /// `hyper-lb` with a service) is not running: it crashed or was killed, and only a sync
    /// starts it again (and says so: the sync that repairs drift may be the one to find it).
    fn daemon_down(&self, tenant: &str, model: &net::TenantNetns) -> Result<bool> {
        let Some(dir) = model.netns_path.parent() else {
            return Ok(false);
        };
        if !dns::daemon(&self.cfg.dns_binary, dir).is_running() {
            return Ok(true);
        }
        Ok(
            !self.services(tenant)?.is_empty()
                && !lb::daemon(&self.cfg.lb_binary, dir).is_running(),
        )
    }
}

fn install_guard_locked(state: &mut SyncState, fleet: Vec<Ipv4Addr>) -> Result<()> {
    state.guard = None;
    state.guard = Some(net::install_guard(&fleet).map_err(net_err)?);
    state.guard_fleet = fleet;
    Ok(())
}

/// Whether the syncs applied the tenant's namespace and rules as `model` has them.
fn applied(state: &SyncState, tenant: &str, model: &net::TenantNetns) -> bool {
    state.links.get(tenant) == Some(&net::netns_inputs(model))
        && state.tenant_rules.get(tenant).map(|a| &a.input)
            == Some(&net::render_tenant_rules(model))
}

/// What drifted in the tenant's namespace and its link since the syncs applied `model`
/// (nothing to check while a change is still to be applied: the sync that follows does it).
fn tenant_drift(
    state: &SyncState,
    tenant: &str,
    model: &net::TenantNetns,
    node: &net::Installed,
) -> Result<Vec<Drift>> {
    if !applied(state, tenant, model) {
        return Ok(Vec::new());
    }
    let inside = net::installed_in_tenant(model).map_err(net_err)?;
    let mut drifts = net::drift::tenant_links(model, node, inside.as_ref());
    if let (Some(inside), Some(rules)) = (&inside, state.tenant_rules.get(tenant)) {
        drifts.extend(net::drift::tables(&rules.installed, &inside.tables));
    }
    Ok(drifts)
}

fn report(scope: &str, drifts: &[Drift]) {
    let list: Vec<String> = drifts.iter().map(ToString::to_string).collect();
    tracing::warn!("network drift in {scope}: {}; repairing", list.join("; "));
}
