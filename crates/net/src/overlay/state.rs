//! Reading back the overlay parts of a tenant namespace: its VXLAN ports, their forwarding
//! entries, our neighbour entries and the overlay's table. [`super::plan`] holds them against
//! the model, for applying and for drift alike.

use std::path::Path;

use serde::Deserialize;

use crate::error::NetError;
use crate::installed::{installed_tables, Tables};
use crate::iproute::{bridge, ip, parse_json};
use crate::overlay::rules::OVERLAY_TABLE;

/// Protocol tag of the neighbour entries the overlay writes (`ip neigh show proto 214`), so
/// they are told from what the kernel learns.
pub const OVERLAY_NEIGH_PROTO: u8 = 214;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OverlayState {
    /// Every VXLAN link of the namespace.
    pub links: Vec<VxlanLink>,
    /// The forwarding entries on those links that the overlay manages.
    pub fdb: Vec<FdbEntry>,
    /// Neighbour entries tagged [`OVERLAY_NEIGH_PROTO`], on any link.
    pub neighbours: Vec<Neighbour>,
    /// The overlay's nftables table, if there.
    pub tables: Tables,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VxlanLink {
    pub name: String,
    pub vni: u32,
    pub local: Option<String>,
    pub port: u16,
    /// Whether the VXLAN device learns remote nodes from what it receives.
    pub learning: bool,
    pub mtu: u32,
    pub up: bool,
    pub master: Option<String>,
    /// Its flags as a bridge port, when it is one.
    pub bridge_port: Option<BridgePort>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct BridgePort {
    pub learning: bool,
    pub neigh_suppress: bool,
    pub flood: bool,
    pub mcast_flood: bool,
    pub bcast_flood: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdbEntry {
    pub link: String,
    pub mac: String,
    pub kind: FdbKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FdbKind {
    /// The VXLAN device's own entry: frames to `mac` go to this node (`None`: no address).
    Remote(Option<String>),
    /// The bridge's static entry: frames to `mac` leave through the VXLAN port.
    Static,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub dev: String,
    pub ip: String,
    pub mac: Option<String>,
}

/// Reads the overlay state of the namespace at `ns`.
pub(crate) fn read(ns: &Path) -> Result<OverlayState, NetError> {
    let links = vxlan_links(ns)?;
    let mut fdb = Vec::new();
    for link in &links {
        fdb.extend(fdb_entries(ns, &link.name)?);
    }
    Ok(OverlayState {
        fdb,
        links,
        neighbours: neighbours(ns)?,
        tables: installed_tables(Some(ns), &[OVERLAY_TABLE])?,
    })
}

#[derive(Deserialize)]
struct RawLink {
    ifname: String,
    #[serde(default)]
    flags: Vec<String>,
    mtu: u32,
    master: Option<String>,
    linkinfo: RawLinkInfo,
}

#[derive(Deserialize)]
struct RawLinkInfo {
    info_data: RawVxlan,
    info_slave_data: Option<BridgePort>,
}

#[derive(Deserialize)]
struct RawVxlan {
    id: u32,
    local: Option<String>,
    port: u16,
    learning: bool,
}

fn vxlan_links(ns: &Path) -> Result<Vec<VxlanLink>, NetError> {
    let out = ip(
        Some(ns),
        "list vxlan links",
        &["-j", "-d", "link", "show", "type", "vxlan"],
    )?;
    let raw: Vec<RawLink> = parse_json("ip -j -d link show type vxlan", &out)?;
    Ok(raw
        .into_iter()
        .map(|l| VxlanLink {
            up: l.flags.iter().any(|f| f == "UP"),
            name: l.ifname,
            vni: l.linkinfo.info_data.id,
            local: l.linkinfo.info_data.local,
            port: l.linkinfo.info_data.port,
            learning: l.linkinfo.info_data.learning,
            mtu: l.mtu,
            master: l.master,
            bridge_port: l.linkinfo.info_slave_data,
        })
        .collect())
}

#[derive(Deserialize)]
struct RawFdb {
    mac: String,
    dst: Option<String>,
    #[serde(default)]
    flags: Vec<String>,
    state: Option<String>,
}

/// The device's own entries, and the bridge's static ones (its `permanent` entries for the
/// port's own address are the bridge's business).
fn fdb_entries(ns: &Path, link: &str) -> Result<Vec<FdbEntry>, NetError> {
    let out = bridge(
        Some(ns),
        "list forwarding entries",
        &["-j", "fdb", "show", "dev", link],
    )?;
    let raw: Vec<RawFdb> = parse_json("bridge -j fdb show", &out)?;
    Ok(raw
        .into_iter()
        .filter_map(|e| {
            let kind = if e.flags.iter().any(|f| f == "self") {
                FdbKind::Remote(e.dst)
            } else if e.state.as_deref() == Some("static") {
                FdbKind::Static
            } else {
                return None;
            };
            Some(FdbEntry {
                link: link.to_string(),
                mac: e.mac,
                kind,
            })
        })
        .collect())
}

#[derive(Deserialize)]
struct RawNeighbour {
    dst: String,
    dev: String,
    lladdr: Option<String>,
}

fn neighbours(ns: &Path) -> Result<Vec<Neighbour>, NetError> {
    let proto = OVERLAY_NEIGH_PROTO.to_string();
    let out = ip(
        Some(ns),
        "list overlay neighbours",
        &["-j", "-4", "neigh", "show", "proto", &proto],
    )?;
    let raw: Vec<RawNeighbour> = parse_json("ip -j neigh show", &out)?;
    Ok(raw
        .into_iter()
        .map(|n| Neighbour {
            dev: n.dev,
            ip: n.dst,
            mac: n.lladdr,
        })
        .collect())
}
