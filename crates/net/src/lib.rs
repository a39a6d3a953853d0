//! Tenant networking on one node (DESIGN decision 6): one network namespace per tenant with a
//! bridge per tenant network, a transit veth to the node's namespace, and nftables for NAT,
//! isolation, anti-spoofing and security groups. Everything lives in the kernel; hyperd can
//! rebuild it from its store at any time by calling the same idempotent functions again, and
//! read it back ([`installed_on_node`], [`installed_in_tenant`]) to find what drifted
//! ([`drift`]). A guard table ([`install_guard`]) keeps tenants off the node whatever
//! becomes of the rest. A tenant network spans nodes through a VXLAN overlay
//! ([`apply_overlays`], docs/overlay.md).

mod apply;
mod conntrack;
pub mod drift;
mod error;
mod exec;
mod guard;
mod installed;
mod iproute;
mod links;
mod locate;
mod model;
mod netns;
mod nft;
mod overlay;
mod rtnl;
mod ruleset;
mod sysctl;
pub mod tap;

pub use apply::{
    apply_node_rules, apply_tenant_rules, install_guard, remove_node_rules, FIP_ROUTE_PROTO,
};
pub use error::NetError;
pub use exec::{command_in_netns, in_netns, run_in_netns};
pub use guard::{render_guard, GUARD_TABLE};
pub use installed::{
    installed_in_tenant, installed_on_node, Installed, LinkState, RouteState, Tables, NODE_TABLE,
    TENANT_TABLES,
};
pub use links::{destroy_netns, ensure_netns, netns_inputs, NetnsInputs};
pub use locate::our_binary;
pub use model::*;
pub use netns::{create_netns, is_netns, remove_netns};
pub use overlay::{
    apply_overlays, installed_overlays, remove_overlays, render_overlay_rules, BridgePort,
    FdbEntry, FdbKind, Neighbour, Overlay, OverlayState, RemoteEndpoint, VxlanLink,
    OVERLAY_NEIGH_PROTO, OVERLAY_TABLE, VXLAN_OVERHEAD, VXLAN_PORT, VXLAN_PREFIX,
};
pub use ruleset::{
    fip_routes, render_node_removal, render_node_rules, render_tenant_rules, FipRoute,
};
