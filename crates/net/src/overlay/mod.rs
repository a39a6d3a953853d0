//! The cross-node L2 overlay (DESIGN decisions 6 and 11): a tenant network spans nodes through
//! kernel VXLAN, one VNI per network, unicast only. On each node the network's bridge gets one
//! VXLAN port; its UDP socket lives in the node's namespace (the underlay), the port itself in
//! the tenant's. The store says where every endpoint runs, so nothing is learned or flooded:
//! each remote endpoint gets a forwarding entry to its node and a neighbour entry the bridge
//! answers ARP from, and a frame crosses to another node only when its destination lives there.
//! Frames arriving from another node pass a filter of known remote identities ([`rules`]).
//! See docs/overlay.md for what the node layer feeds in.
//!
//! [`apply_overlays`] runs after [`crate::ensure_netns`] (the bridges must exist) and, like
//! the rest of the crate, in the caller's namespace as the node's.

mod model;
mod plan;
mod rules;
mod state;

use std::path::Path;

use crate::apply::nft;
use crate::error::NetError;
use crate::installed::{installed_tables, Tables};
use crate::iproute::{bridge, ip};
use crate::model::TenantNetns;
use crate::netns::is_netns;
pub use model::{Overlay, RemoteEndpoint, VXLAN_OVERHEAD, VXLAN_PORT, VXLAN_PREFIX};
pub(crate) use plan::plan;
use plan::{Cmd, Tool};
pub use rules::{render_overlay_rules, OVERLAY_TABLE};
pub use state::{
    BridgePort, FdbEntry, FdbKind, Neighbour, OverlayState, VxlanLink, OVERLAY_NEIGH_PROTO,
};

/// Makes the overlays of the tenant namespace exactly `overlays` (none: every VXLAN port,
/// entry and the overlay's table go). Links and entries change only where they differ, so
/// applying the same again touches no device or entry (the table is replaced with the same in
/// one transaction, as every apply of the crate does). The filter goes in before a port or
/// endpoint is added and
/// comes out after one is removed, so the overlay never carries what the filter does not know.
/// Returns the overlay's table as the kernel lists it (see [`crate::drift::tables`]); empty
/// without overlays.
pub fn apply_overlays(t: &TenantNetns, overlays: &[Overlay]) -> Result<Tables, NetError> {
    t.validate()?;
    model::validate(t, overlays)?;
    let ns = t.netns_path.as_path();
    if !is_netns(ns) {
        return Err(NetError::Invalid(format!(
            "no namespace at {} for the overlays of {} (ensure_netns first)",
            ns.display(),
            t.name
        )));
    }
    if !overlays.is_empty() {
        nft(
            Some(ns),
            "apply overlay rules",
            &render_overlay_rules(t, overlays),
        )?;
    }
    for step in plan(t, overlays, &state::read(ns)?) {
        for cmd in &step.cmds {
            run_cmd(ns, cmd)?;
        }
    }
    if overlays.is_empty() {
        nft(
            Some(ns),
            "remove overlay rules",
            &rules::render_overlay_removal(),
        )?;
    }
    installed_tables(Some(ns), &[OVERLAY_TABLE])
}

/// Removes every overlay of the tenant namespace; fine if the namespace is gone. A VXLAN port
/// must not outlive its use: it holds its VNI on the node's socket for as long as it exists,
/// and a namespace only dies with its last user.
pub fn remove_overlays(t: &TenantNetns) -> Result<(), NetError> {
    if is_netns(&t.netns_path) {
        apply_overlays(t, &[])?;
    }
    Ok(())
}

/// The overlay state of the tenant namespace, or `None` when it is gone; hold it against the
/// model with [`crate::drift::overlays`] and [`crate::drift::tables`].
pub fn installed_overlays(t: &TenantNetns) -> Result<Option<OverlayState>, NetError> {
    let ns = t.netns_path.as_path();
    if !is_netns(ns) {
        return Ok(None);
    }
    state::read(ns).map(Some)
}

fn run_cmd(ns: &Path, cmd: &Cmd) -> Result<(), NetError> {
    let args: Vec<&str> = cmd.args.iter().map(String::as_str).collect();
    let netns = cmd.in_tenant.then_some(ns);
    match cmd.tool {
        Tool::Ip => ip(netns, cmd.what, &args),
        Tool::Bridge => bridge(netns, cmd.what, &args),
    }
    .map(drop)
}
