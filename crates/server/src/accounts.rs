//! Tenants and their API keys, kept in the store.
//!
//! Keys: `/tenants/<name>` -> `Tenant`, `/keys/<access key>` -> `Key` (its secret sealed, see
//! `seal`), `/certs/<fingerprint>` and `/tokens/<sha256>` -> `credentials::Record`. How long
//! each works and how it is revoked: `credentials`.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use rand::distributions::{Alphanumeric, DistString};
use serde::{Deserialize, Serialize};
use store::{Compare, Op, Store, Txn};

use crate::credentials::{cert_id, token_id, Lifetime, Record, DEFAULT_TTL};
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
    #[serde(flatten)]
    pub life: Lifetime,
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("invalid tenant name {0:?}: use 1-63 lowercase letters, digits and dashes")]
    InvalidName(String),
    #[error("no tenant {0:?}")]
    NoSuchTenant(String),
    #[error(
        "invalid credential id {0:?}: give an access key, a token id (tok-...) or a certificate \
         id (crt-...), as `hyperd tenant keys NAME` lists them"
    )]
    InvalidId(String),
    #[error("no credential {0}")]
    NoSuchCredential(String),
    #[error("store")]
    Store(#[from] store::StoreError),
}

#[derive(Clone)]
pub struct Accounts {
    pub(crate) store: Arc<dyn Store>,
    sealer: Arc<Sealer>,
    /// How long tokens and certificates work when not told.
    pub(crate) default_ttl: TimeDelta,
}

impl Accounts {
    pub fn new(store: Arc<dyn Store>, sealer: Arc<Sealer>) -> Self {
        Self {
            store,
            sealer,
            default_ttl: DEFAULT_TTL,
        }
    }

    /// The key nodes of one fleet sign the requests they pass each other with.
    pub fn fleet_key(&self) -> ring::hmac::Key {
        self.sealer.fleet_key()
    }

    pub fn with_default_ttl(mut self, ttl: TimeDelta) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// The secret of an access key, for checking a signature (whatever the key's state: a
    /// revoked or expired key is refused once the caller has proved to hold it).
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

    /// Creates the tenant if needed and issues a new key pair for it, expiring after `ttl`
    /// (`None`: never).
    pub fn create_tenant(
        &self,
        name: &str,
        ttl: Option<TimeDelta>,
    ) -> Result<(String, String), AccountError> {
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
            life: Lifetime::issued(Utc::now(), ttl),
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

    /// Remembers a client certificate (by fingerprint) as the tenant's, for `life` (which
    /// matches the certificate's own validity). Returns its id.
    pub fn record_cert(
        &self,
        tenant: &str,
        fingerprint: &str,
        life: Lifetime,
    ) -> Result<String, AccountError> {
        self.put_record(&format!("/certs/{fingerprint}"), tenant, life)?;
        Ok(cert_id(fingerprint))
    }

    /// The lifetime of a certificate issued now for `ttl` (`None`: the default).
    pub fn cert_lifetime(&self, ttl: Option<TimeDelta>) -> Lifetime {
        Lifetime::issued(Utc::now(), Some(ttl.unwrap_or(self.default_ttl)))
    }

    /// A bearer token for clients that cannot sign, working for `ttl` (`None`: the default).
    /// Only its hash is stored: unlike an HMAC secret, a token is only ever compared. Returns
    /// the token, its id and record.
    pub fn create_token(
        &self,
        tenant: &str,
        ttl: Option<TimeDelta>,
    ) -> Result<(String, String, Record), AccountError> {
        let token = format!(
            "hyt_{}",
            Alphanumeric.sample_string(&mut rand::thread_rng(), 40)
        );
        let hash = token_hash(&token);
        let record = self.put_record(
            &format!("/tokens/{hash}"),
            tenant,
            Lifetime::issued(Utc::now(), Some(ttl.unwrap_or(self.default_ttl))),
        )?;
        Ok((token, token_id(&hash), record))
    }
}

pub(crate) fn token_hash(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}
