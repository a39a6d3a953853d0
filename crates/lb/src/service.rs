//! One service: its current settings and backends, shared by its listener, its connections
//! and its health checks. Settings are swapped whole on reload; connections read them per
//! connection (and per request), so a reload never touches one in progress.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use tokio::sync::{watch, Notify};
use tokio_rustls::TlsAcceptor;

use crate::backend::Backend;
use crate::config::{Algorithm, HealthConfig, Protocol, ServiceConfig};
use crate::pool::Pool;
use crate::{health, tls};

pub struct Settings {
    pub protocol: Protocol,
    pub algorithm: Algorithm,
    pub session_affinity: bool,
    pub health: HealthConfig,
    /// httpsTerm only.
    pub tls: Option<TlsAcceptor>,
}

pub struct Service {
    pub name: String,
    settings: RwLock<Arc<Settings>>,
    pub pool: Pool,
    /// Set once the service is removed: kept-alive HTTP connections close after their
    /// current request.
    stopping: watch::Sender<bool>,
    /// Wakes the status writer when a backend changes health.
    pub health_changed: Arc<Notify>,
}

impl Service {
    /// Fails only when an httpsTerm certificate cannot be loaded.
    pub fn new(config: &ServiceConfig, health_changed: Arc<Notify>) -> anyhow::Result<Arc<Self>> {
        let tls = load_tls(config)?;
        let service = Arc::new(Self {
            name: config.name.clone(),
            settings: RwLock::new(Arc::new(settings(config, tls))),
            pool: Pool::default(),
            stopping: watch::Sender::new(false),
            health_changed,
        });
        service.set_backends(config);
        Ok(service)
    }

    /// Applies a reloaded config. If its certificate does not load, the previous settings
    /// (protocol and certificate included) stay in force; the backends are updated anyway.
    pub fn update(self: &Arc<Self>, config: &ServiceConfig) {
        match load_tls(config) {
            Ok(tls) => {
                *self.settings.write().unwrap_or_else(|p| p.into_inner()) =
                    Arc::new(settings(config, tls))
            }
            Err(err) => {
                tracing::error!(service = %self.name, "{err:#}; keeping the previous settings")
            }
        }
        self.set_backends(config);
    }

    pub fn settings(&self) -> Arc<Settings> {
        self.settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn pick(&self, client: IpAddr, tried: &[Arc<Backend>]) -> Option<Arc<Backend>> {
        let settings = self.settings();
        self.pool
            .pick(settings.algorithm, settings.session_affinity, client, tried)
    }

    /// Asks kept-alive connections to close after their current request. Connections finish
    /// on their own (drain); backends stay usable and checked until the last one is gone and
    /// the service is dropped.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    fn set_backends(self: &Arc<Self>, config: &ServiceConfig) {
        let service = Arc::downgrade(self);
        self.pool.set_backends(&config.backends, |backend| {
            health::spawn(backend, service.clone())
        });
    }
}

fn settings(config: &ServiceConfig, tls: Option<TlsAcceptor>) -> Settings {
    Settings {
        protocol: config.protocol,
        algorithm: config.algorithm,
        session_affinity: config.session_affinity,
        health: config.health.clone(),
        tls,
    }
}

fn load_tls(config: &ServiceConfig) -> anyhow::Result<Option<TlsAcceptor>> {
    match (&config.protocol, &config.tls_cert) {
        (Protocol::HttpsTerm, Some(path)) => tls::acceptor(path).map(Some),
        _ => Ok(None),
    }
}
