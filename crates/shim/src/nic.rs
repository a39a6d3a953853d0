//! The VM's NIC on the host side: the tap behind its virtio-net device (DESIGN decision 6).
//!
//! The shim opens the tap (in the tenant's namespace, enslaved to the tenant's bridge) and QEMU
//! inherits the descriptor. The tap is not persistent: once QEMU and the shim have closed it,
//! it is gone, so a dead VM leaves none behind. A container without a network, and the template
//! VM, get a tap in a private namespace of their own with nothing else in it: the same device
//! and backend (so template snapshots fit every container), nothing reachable.

use anyhow::{anyhow, Context, Result};
use net::tap::{self, Netns, PrivateTap, Tap, TapSpec};
use sha2::{Digest, Sha256};

use crate::Spec;

/// Tap name inside a private namespace (nothing else is there to clash with).
const PRIVATE_TAP: &str = "tap0";
/// MTU of a tap no traffic crosses.
const PRIVATE_MTU: u32 = 1500;
/// The template VM's MAC. Restored guests replace it at `Start` (their agent sets the
/// container's MAC, which also reaches QEMU's receive filter).
const TEMPLATE_MAC: &str = "02:00:00:00:00:01";

/// An open tap and the MAC the guest's NIC gets.
#[derive(Debug)]
pub struct Nic {
    tap: Tap,
    mac: String,
}

impl Nic {
    /// The container's NIC: on its tenant's bridge, or private when it has no network.
    pub fn for_container(spec: &Spec) -> Result<Nic> {
        let Some(n) = &spec.network else {
            return private(mac_for_id(&spec.id));
        };
        let t = tap::create(Netns::At(&n.netns), &tenant_tap(n)?)
            .with_context(|| format!("creating tap {}", where_in_tenant(n)))?;
        Ok(Nic {
            tap: t,
            mac: n.mac.clone(),
        })
    }

    /// The template VM's NIC: the same backend as every container's, in a private namespace.
    pub fn for_template() -> Result<Nic> {
        private(TEMPLATE_MAC.to_string())
    }

    /// What QEMU's command line needs. The descriptor stays ours: keep `self` alive until
    /// QEMU has been spawned with it (and has inherited it).
    pub fn config(&self) -> vm::NicConfig {
        vm::NicConfig {
            tap_fd: self.tap.raw_fd(),
            mac: self.mac.clone(),
        }
    }
}

/// A standby VM's NIC: the template's, in a private namespace, until a container claims the VM;
/// then the tap moves into the container's tenant namespace and onto its bridge (a container
/// without a network keeps it private). The guest's MAC is the container's from `Start` on.
#[derive(Debug)]
pub struct StandbyNic(PrivateTap);

impl StandbyNic {
    pub fn new() -> Result<StandbyNic> {
        tap::create_private(&TapSpec {
            name: PRIVATE_TAP,
            mtu: PRIVATE_MTU,
            bridge: None,
            host_mac: None,
        })
        .map(StandbyNic)
        .context("creating a tap in a private network namespace")
    }

    pub fn config(&self) -> vm::NicConfig {
        vm::NicConfig {
            tap_fd: self.0.tap.raw_fd(),
            mac: TEMPLATE_MAC.to_string(),
        }
    }

    /// Give the NIC to the container of `spec`. QEMU keeps its descriptor; ours closes.
    pub fn claim(self, spec: &Spec) -> Result<()> {
        let Some(n) = &spec.network else {
            return Ok(());
        };
        self.0
            .move_to(&n.netns, &tenant_tap(n)?)
            .with_context(|| format!("moving the standby VM's tap to {}", where_in_tenant(n)))?;
        Ok(())
    }
}

/// The container's tap in its tenant's namespace, on its network's bridge.
fn tenant_tap(n: &crate::NetworkSpec) -> Result<TapSpec<'_>> {
    let guest = tap::parse_mac(&n.mac).ok_or_else(|| anyhow!("bad MAC {:?}", n.mac))?;
    Ok(TapSpec {
        name: &n.tap,
        mtu: n.mtu,
        bridge: Some(&n.bridge),
        host_mac: Some(tap::host_side_mac(guest)),
    })
}

fn where_in_tenant(n: &crate::NetworkSpec) -> String {
    format!("{} on {} in {}", n.tap, n.bridge, n.netns.display())
}

fn private(mac: String) -> Result<Nic> {
    let t = tap::create(
        Netns::Private,
        &TapSpec {
            name: PRIVATE_TAP,
            mtu: PRIVATE_MTU,
            bridge: None,
            host_mac: None,
        },
    )
    .context("creating a tap in a private network namespace")?;
    Ok(Nic { tap: t, mac })
}

/// A stable, locally administered unicast MAC for a container without a network.
fn mac_for_id(id: &str) -> String {
    let h = Sha256::digest(id.as_bytes());
    format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        h[0], h[1], h[2], h[3], h[4]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_macs_are_local_unicast_and_stable() {
        let a = mac_for_id("abc");
        assert_eq!(a, mac_for_id("abc"));
        assert_ne!(a, mac_for_id("abd"));
        let m = tap::parse_mac(&a).unwrap();
        assert_eq!(m[0], 0x02);
    }
}
