//! Tenant networking on one node (DESIGN decision 6): one network namespace per tenant with a
//! bridge per tenant network, a transit veth to the node's namespace, and nftables for NAT,
//! isolation, anti-spoofing and security groups. Everything lives in the kernel; hyperd can
//! rebuild it from its store at any time by calling the same idempotent functions again.

mod apply;
mod conntrack;
mod error;
mod exec;
mod iproute;
mod links;
mod model;
mod netns;
mod ruleset;
mod sysctl;
pub mod tap;

pub use apply::{apply_node_rules, apply_tenant_rules, remove_node_rules, FIP_ROUTE_PROTO};
pub use error::NetError;
pub use exec::{command_in_netns, in_netns, run_in_netns};
pub use links::{destroy_netns, ensure_netns, netns_inputs};
pub use model::*;
pub use netns::{create_netns, remove_netns};
pub use ruleset::{fip_routes, render_node_removal, render_node_rules, render_tenant_rules};
