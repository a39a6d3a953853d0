//! Tenants and their API keys, kept in the store.
//!
//! Keys: `/tenants/<name>` -> `Tenant`, `/keys/<access key>` -> `Key` (its secret sealed, see
//! `seal`), `/certs/<fingerprint>` and `/tokens/<sha256>` -> tenant.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rand::distributions::{Alphanumeric, DistString};
use serde::{Deserialize, Serialize};
use store::{Compare, Op, Store, Txn};

use crate::seal::Sealer;

pub const DEFAULT_TENANT: &str = "default";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tenant {
    pub name: String,
    pub created: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Key {
    pub tenant: String,
    /// The HMAC secret, sealed with the key outside the store.
    pub sealed_secret: String,
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
    sealer: Arc<Sealer>,
}

impl Accounts {
    pub fn new(store: Arc<dyn Store>, sealer: Arc<Sealer>) -> Self {
        Self { store, sealer }
    }

    /// The secret of an access key, for checking a signature.
    pub fn secret(&self, access: &str) -> Option<String> {
        let key = self.key(access)?;
        match self.sealer.open(&key.sealed_secret) {
            Ok(secret) => Some(secret),
            Err(e) => {
                tracing::error!("access key {access}: {e}");
                None
            }
        }
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
            sealed_secret: self.sealer.seal(&secret),
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

    /// Every key of the tenant (access keys only; secrets never leave the store).
    pub fn keys_of(&self, tenant: &str) -> Result<Vec<String>, AccountError> {
        Ok(self
            .store
            .range("/keys/")?
            .into_iter()
            .filter_map(|kv| {
                let key: Key = serde_json::from_slice(&kv.value).ok()?;
                (key.tenant == tenant).then(|| kv.key.trim_start_matches("/keys/").to_string())
            })
            .collect())
    }

    /// Revokes an access key at once; returns whether it existed.
    pub fn revoke_key(&self, access: &str) -> Result<bool, AccountError> {
        let existed = self.store.get(&format!("/keys/{access}"))?.is_some();
        self.store.delete(&format!("/keys/{access}"))?;
        Ok(existed)
    }

    /// Remembers a client certificate (by fingerprint) as the tenant's.
    pub fn record_cert(&self, tenant: &str, fingerprint: &str) -> Result<(), AccountError> {
        self.store
            .put(&format!("/certs/{fingerprint}"), tenant.as_bytes().to_vec())?;
        Ok(())
    }

    pub fn tenant_of_cert(&self, fingerprint: &str) -> Option<String> {
        let kv = self.store.get(&format!("/certs/{fingerprint}")).ok()??;
        Some(String::from_utf8_lossy(&kv.value).to_string())
    }

    /// A bearer token for clients that cannot sign. Only its hash is stored: unlike an HMAC
    /// secret, a token is only ever compared.
    pub fn create_token(&self, tenant: &str) -> Result<String, AccountError> {
        let token = format!(
            "hyt_{}",
            Alphanumeric.sample_string(&mut rand::thread_rng(), 40)
        );
        self.store.put(
            &format!("/tokens/{}", token_hash(&token)),
            tenant.as_bytes().to_vec(),
        )?;
        Ok(token)
    }

    pub fn tenant_of_token(&self, token: &str) -> Option<String> {
        let kv = self
            .store
            .get(&format!("/tokens/{}", token_hash(token)))
            .ok()??;
        Some(String::from_utf8_lossy(&kv.value).to_string())
    }
}

fn token_hash(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}
