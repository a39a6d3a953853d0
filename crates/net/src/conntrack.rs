//! Forgetting tracked connections of some addresses in a tenant netns, so a security-group change
//! reaches connections already open: the next packet is evaluated as new (dropped if no longer
//! allowed, picked up again mid-stream thanks to nf_conntrack_tcp_loose if still allowed).
//!
//! The `conntrack` CLI (Debian package `conntrack`) rather than netlink: there is no well-kept Rust
//! crate for ctnetlink deletes, and the CLI is the same kind of dependency as `ip` and `nft`.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use crate::error::NetError;
use crate::exec::{command_in_netns, run};

pub(crate) fn forget(netns: &Path, ips: &[Ipv4Addr]) -> Result<(), NetError> {
    for ip in ips {
        let ip = ip.to_string();
        // Either end, before or after NAT (a published port's flow has the endpoint only as reply source).
        for filter in ["--orig-src", "--orig-dst", "--reply-src", "--reply-dst"] {
            let mut cmd = Command::new("conntrack");
            cmd.args(["-D", "-f", "ipv4", filter, &ip]);
            match run(
                &format!("delete connections of {ip}"),
                command_in_netns(netns, &mut cmd)?,
                None,
            ) {
                // conntrack exits 1 when nothing matched.
                Err(NetError::Command { stderr, .. }) if stderr.contains("0 flow entries") => {}
                other => other.map(drop)?,
            }
        }
    }
    Ok(())
}
