//! Tenants and their API keys, kept in the store.
//!
//! Keys: `/tenants/<name>` -> `Tenant`, `/keys/<access key>` -> `Key`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rand::distributions::{Alphanumeric, DistString};
use serde::{Deserialize, Serialize};
use store::{Compare, Op, Store, Txn};

pub const DEFAULT_TENANT: &str = "default";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tenant {
    pub name: String,
    pub created: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Key {
    pub tenant: String,
    pub secret: String,
    pub created: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("invalid tenant name {0:?}: use 1-63 lowercase letters, digits and dashes")]
    InvalidName(String),
    #[error("store")]
    Store(#[from] store::StoreError),
}

#[derive(Clone)]
pub struct Accounts {
    store: Arc<dyn Store>,
}

impl Accounts {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Creates the tenant if needed and issues a new key pair for it.
    pub fn create_tenant(&self, name: &str) -> Result<(String, String), AccountError> {
        let valid = !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid {
            return Err(AccountError::InvalidName(name.into()));
        }
        let access = Alphanumeric
            .sample_string(&mut rand::thread_rng(), 20)
            .to_uppercase();
        let secret = Alphanumeric.sample_string(&mut rand::thread_rng(), 40);
        let tenant = Tenant {
            name: name.into(),
            created: Utc::now(),
        };
        let key = Key {
            tenant: name.into(),
            secret: secret.clone(),
            created: Utc::now(),
        };
        let tenant_key = format!("/tenants/{name}");
        self.store.txn(
            Txn::new()
                .when(Compare::Absent(tenant_key.clone()))
                .then(Op::Put(
                    tenant_key,
                    serde_json::to_vec(&tenant).expect("json"),
                ))
                .then(Op::Put(
                    format!("/keys/{access}"),
                    serde_json::to_vec(&key).expect("json"),
                ))
                .otherwise(Op::Put(
                    format!("/keys/{access}"),
                    serde_json::to_vec(&key).expect("json"),
                )),
        )?;
        Ok((access, secret))
    }

    pub fn tenant_exists(&self, name: &str) -> Result<bool, AccountError> {
        Ok(self.store.get(&format!("/tenants/{name}"))?.is_some())
    }

    pub fn key(&self, access: &str) -> Option<Key> {
        let kv = self.store.get(&format!("/keys/{access}")).ok()??;
        serde_json::from_slice(&kv.value).ok()
    }
}
