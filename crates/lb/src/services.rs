//! The running services, kept matching the config across reloads.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::config::{Config, ServiceConfig};
use crate::listener::Listener;
use crate::service::Service;

struct Running {
    service: Arc<Service>,
    listener: Listener,
}

#[derive(Default)]
pub struct Services {
    running: BTreeMap<String, Running>,
    /// Shared with every service's health checks.
    pub health_changed: Arc<Notify>,
}

impl Services {
    /// Removed services (and services moving to another address) stop accepting and drain;
    /// kept ones keep their socket and take the new settings and backends; new ones are
    /// bound. A service that cannot start (address not assignable yet, bad certificate) is
    /// logged and tried again on the next apply.
    pub async fn apply(&mut self, config: &Config) {
        let still_here = |name: &str, running: &Running| {
            config
                .services
                .iter()
                .any(|s| s.name == name && s.listen == running.listener.address)
        };
        let leaving: Vec<String> = self
            .running
            .iter()
            .filter(|(name, running)| !still_here(name, running))
            .map(|(name, _)| name.clone())
            .collect();
        // Closed before binding, so a new service may take over a freed address.
        for name in leaving {
            let running = self.running.remove(&name).expect("listed above");
            running.listener.close().await;
            running.service.stop();
            tracing::info!(service = %name, "stopped listening; draining");
        }
        for config in &config.services {
            match self.running.get(&config.name) {
                Some(running) => running.service.update(config),
                None => match self.start(config).await {
                    Ok(running) => {
                        tracing::info!(service = %config.name, listen = %config.listen, protocol = ?config.protocol, "listening");
                        self.running.insert(config.name.clone(), running);
                    }
                    Err(err) => tracing::error!(
                        service = %config.name, listen = %config.listen,
                        "cannot start: {err:#}; will try again on the next reload"
                    ),
                },
            }
        }
    }

    async fn start(&self, config: &ServiceConfig) -> anyhow::Result<Running> {
        let service = Service::new(config, self.health_changed.clone())?;
        let listener = Listener::bind(config.listen, service.clone()).await?;
        Ok(Running { service, listener })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Service>> {
        self.running.values().map(|running| &running.service)
    }

    /// Each listening service with its address.
    pub fn listening(&self) -> impl Iterator<Item = (SocketAddr, &Arc<Service>)> {
        self.running
            .values()
            .map(|running| (running.listener.address, &running.service))
    }

    /// The shortest health check interval, which the status file is rewritten at least as
    /// often as.
    pub fn status_interval(&self) -> Duration {
        self.iter()
            .map(|service| service.settings().health.interval())
            .min()
            .unwrap_or(Duration::from_secs(3))
    }
}
