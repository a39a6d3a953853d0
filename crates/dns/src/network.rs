//! What a listener answers from: its network's records and the shared upstream servers.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::config::{Config, NetworkConfig};
use crate::records::Records;

pub struct Network {
    pub records: Records,
    /// Names of one client's own, looked up before the network's.
    pub client_records: HashMap<IpAddr, Records>,
    pub upstream: Arc<[SocketAddr]>,
}

impl Network {
    pub fn new(config: &NetworkConfig, upstream: Arc<[SocketAddr]>) -> Self {
        Self {
            records: Records::new(&config.records),
            client_records: config
                .links
                .iter()
                .map(|(client, names)| (*client, Records::new(names)))
                .collect(),
            upstream,
        }
    }

    /// One `Network` per configured listen address.
    pub fn all_from(config: &Config) -> Vec<(IpAddr, Network)> {
        let upstream: Arc<[SocketAddr]> = config.upstream.clone().into();
        config
            .networks
            .iter()
            .map(|network| (network.listen, Network::new(network, upstream.clone())))
            .collect()
    }
}
