//! A project as hyperd keeps it (`/compose/{tenant}/{project}`), so that any client can
//! manage it later: each service's config and config hash, and what the project made
//! (network, volumes) and holds (containers, floating IPs, security groups).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use store::Store;

use crate::error::ApiError;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ServiceRecord {
    /// The service's config as posted (canonical form).
    pub config: serde_json::Value,
    pub hash: String,
    /// The floating IP the service's first container holds.
    pub fip: Option<String>,
    pub security_groups: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ProjectRecord {
    pub name: String,
    pub tenant: String,
    pub created: Option<DateTime<Utc>>,
    pub updated: Option<DateTime<Utc>>,
    pub services: BTreeMap<String, ServiceRecord>,
    /// Services in start order (dependencies first).
    pub order: Vec<String>,
    /// The project's network (`<project>_default`).
    pub network: String,
    /// Volumes the project made: `name in the file -> volume name`.
    pub volumes: BTreeMap<String, String>,
    /// External volumes the project uses (never removed by it).
    pub external_volumes: Vec<String>,
    /// Container name -> id, as of the last operation.
    pub containers: BTreeMap<String, String>,
}

fn key(tenant: &str, project: &str) -> String {
    format!("/compose/{tenant}/{project}")
}

pub fn load(
    store: &dyn Store,
    tenant: &str,
    project: &str,
) -> Result<Option<ProjectRecord>, ApiError> {
    match store.get(&key(tenant, project))? {
        None => Ok(None),
        Some(kv) => serde_json::from_slice(&kv.value).map(Some).map_err(|e| {
            ApiError::new(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("compose record of {project}: {e}"),
            )
        }),
    }
}

pub fn save(store: &dyn Store, r: &ProjectRecord) -> Result<(), ApiError> {
    let bytes = serde_json::to_vec(r).expect("a project record serializes");
    store.put(&key(&r.tenant, &r.name), bytes)?;
    Ok(())
}

pub fn delete(store: &dyn Store, tenant: &str, project: &str) -> Result<(), ApiError> {
    store.delete(&key(tenant, project))?;
    Ok(())
}
