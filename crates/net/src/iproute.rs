//! The `ip` tool, in the caller's namespace (the node's) or a tenant's, with JSON output parsed.

use std::path::Path;
use std::process::Command;

use serde::Deserialize;

use crate::error::NetError;
use crate::exec::{command_in_netns, run};

/// Runs `ip ARGS` in the namespace at `netns`, or in the caller's namespace when `None`.
pub(crate) fn ip(netns: Option<&Path>, what: &str, args: &[&str]) -> Result<String, NetError> {
    iproute2("ip", netns, what, args)
}

/// Runs `bridge ARGS` (forwarding entries, port flags), like [`ip`].
pub(crate) fn bridge(netns: Option<&Path>, what: &str, args: &[&str]) -> Result<String, NetError> {
    iproute2("bridge", netns, what, args)
}

fn iproute2(
    program: &str,
    netns: Option<&Path>,
    what: &str,
    args: &[&str],
) -> Result<String, NetError> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    match netns {
        Some(path) => run(what, command_in_netns(path, &mut cmd)?, None),
        None => run(what, &mut cmd, None),
    }
}

/// Like [`ip`] but a missing device (or route, or address) is not an error: used where the goal
/// is that something is gone.
pub(crate) fn ip_ignoring_absent(
    netns: Option<&Path>,
    what: &str,
    args: &[&str],
) -> Result<(), NetError> {
    match ip(netns, what, args) {
        Err(NetError::Command { stderr, .. })
            if stderr.contains("Cannot find device")
                || stderr.contains("No such process")
                || stderr.contains("does not exist") =>
        {
            Ok(())
        }
        other => other.map(drop),
    }
}

pub(crate) fn parse_json<T: for<'de> Deserialize<'de>>(
    command: &str,
    text: &str,
) -> Result<T, NetError> {
    // `ip -j` prints nothing at all (not `[]`) for some empty listings.
    let text = if text.trim().is_empty() { "[]" } else { text };
    serde_json::from_str(text).map_err(|e| NetError::Parse {
        command: command.into(),
        detail: e.to_string(),
    })
}

#[derive(Deserialize)]
struct Link {
    ifname: String,
}

/// Names of the links matching `ip link show ARGS` (e.g. `type bridge`, `dev X`).
pub(crate) fn link_names(netns: Option<&Path>, filter: &[&str]) -> Result<Vec<String>, NetError> {
    let mut args = vec!["-j", "link", "show"];
    args.extend_from_slice(filter);
    let out = ip(netns, "list links", &args)?;
    Ok(parse_json::<Vec<Link>>("ip -j link show", &out)?
        .into_iter()
        .map(|l| l.ifname)
        .collect())
}

pub(crate) fn link_exists(netns: Option<&Path>, ifname: &str) -> Result<bool, NetError> {
    match link_names(netns, &["dev", ifname]) {
        Ok(names) => Ok(!names.is_empty()),
        Err(NetError::Command { stderr, .. }) if stderr.contains("does not exist") => Ok(false),
        Err(e) => Err(e),
    }
}

#[derive(Deserialize)]
struct AddrInfo {
    #[serde(default)]
    addr_info: Vec<Addr>,
}

#[derive(Deserialize)]
struct Addr {
    family: String,
    local: String,
    prefixlen: u8,
}

/// Makes `ifname` carry exactly the IPv4 addresses `want` (CIDR form, e.g. `10.0.0.1/24`).
pub(crate) fn sync_ipv4_addrs(
    netns: Option<&Path>,
    ifname: &str,
    want: &[String],
) -> Result<(), NetError> {
    let out = ip(
        netns,
        "list addresses",
        &["-j", "-4", "addr", "show", "dev", ifname],
    )?;
    let links: Vec<AddrInfo> = parse_json("ip -j addr show", &out)?;
    let present: Vec<String> = links
        .iter()
        .flat_map(|l| &l.addr_info)
        .filter(|a| a.family == "inet")
        .map(|a| format!("{}/{}", a.local, a.prefixlen))
        .collect();
    for stale in present.iter().filter(|a| !want.contains(a)) {
        ip(
            netns,
            &format!("remove stale address from {ifname}"),
            &["addr", "del", stale, "dev", ifname],
        )?;
    }
    for missing in want.iter().filter(|a| !present.contains(a)) {
        ip(
            netns,
            &format!("address {ifname}"),
            &["addr", "add", missing, "dev", ifname],
        )?;
    }
    Ok(())
}

#[derive(Deserialize)]
pub(crate) struct Route {
    pub dst: String,
}

/// Routes of the main table with the given protocol number (ours are tagged).
pub(crate) fn routes_with_proto(netns: Option<&Path>, proto: u8) -> Result<Vec<Route>, NetError> {
    let proto = proto.to_string();
    let out = ip(
        netns,
        "list routes",
        &["-j", "-4", "route", "show", "proto", &proto],
    )?;
    parse_json("ip -j route show", &out)
}
