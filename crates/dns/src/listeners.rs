//! The set of listen addresses, kept matching the config across reloads.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use crate::config::Config;
use crate::listener::Listener;
use crate::network::Network;

pub struct Listeners {
    port: u16,
    active: HashMap<IpAddr, Listener>,
}

impl Listeners {
    pub fn new(port: u16) -> Self {
        Self {
            port,
            active: HashMap::new(),
        }
    }

    /// Stops listening where the config no longer asks, swaps the records of addresses kept
    /// (their sockets stay open, so no query is dropped), and binds new addresses. An address
    /// that cannot be bound is logged and tried again on the next apply.
    pub async fn apply(&mut self, config: &Config) {
        let wanted: HashSet<IpAddr> = config.networks.iter().map(|n| n.listen).collect();
        self.active.retain(|address, _| {
            let keep = wanted.contains(address);
            if !keep {
                tracing::info!(%address, "stopped listening");
            }
            keep
        });
        for (address, network) in Network::all_from(config) {
            if let Some(listener) = self.active.get(&address) {
                listener.update(network);
                continue;
            }
            match Listener::bind(SocketAddr::new(address, self.port), network).await {
                Ok(listener) => {
                    tracing::info!(%address, port = self.port, "listening");
                    self.active.insert(address, listener);
                }
                Err(err) => tracing::error!(
                    %address, port = self.port, %err,
                    "cannot listen; will try again on the next reload"
                ),
            }
        }
    }
}
