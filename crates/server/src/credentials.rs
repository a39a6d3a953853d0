//! The life of a credential: every access key, token and client certificate has an id that is
//! not its secret, a creation time, an expiry and a state (active, expired, revoked), checked
//! on every request, so a revoked or expired one stops working at once, on connections
//! already open too.
//!
//! Ids: an access key is its own id; a token is `tok-` and the first 16 hex digits of its
//! SHA-256 (the store keeps only the hash); a client certificate is `crt-` and the first 16 hex
//! digits of the SHA-256 of its DER. A revoked credential keeps its record (marked, with the
//! time), so the listing and the refusal say when it was revoked.
//!
//! Records of the previous version: keys without `expires` never expire (as keys did); tokens
//! and certificates stored as a bare tenant name are rewritten by [`Accounts::migrate_legacy`]
//! at start as issued then, expiring after the default lifetime, so they keep working for that
//! long and then stop like any other.
//!
//! A credential revoked or expired for [`FORGET_AFTER`] is forgotten: its record is deleted
//! (so short-lived tokens issued by automation do not pile up), and it is then refused as
//! unknown.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use store::{Compare, Op, Txn};

use crate::accounts::{AccountError, Accounts, Key};

/// Tokens and certificates expire after this unless told otherwise (`--credential-ttl`).
pub const DEFAULT_TTL: TimeDelta = TimeDelta::days(90);
/// The longest lifetime one may ask for.
pub const MAX_TTL: TimeDelta = TimeDelta::days(3650);
/// Revoked and expired credentials stay listed this long, then their records go.
pub const FORGET_AFTER: TimeDelta = TimeDelta::days(30);
/// Hex digits of the hash that make a token's or certificate's id.
const ID_HEX: usize = 16;

/// When a credential was issued, until when it works, and whether it was revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifetime {
    pub created: DateTime<Utc>,
    /// `None`: no expiry (access keys unless asked).
    #[serde(default)]
    pub expires: Option<DateTime<Utc>>,
    #[serde(default)]
    pub revoked: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Active,
    Expired(DateTime<Utc>),
    Revoked(DateTime<Utc>),
}

impl Lifetime {
    pub fn issued(now: DateTime<Utc>, ttl: Option<TimeDelta>) -> Self {
        Self {
            created: now,
            expires: ttl.map(|t| now + t),
            revoked: None,
        }
    }

    /// Revocation wins over expiry: it is what the operator did.
    pub fn state(&self, now: DateTime<Utc>) -> State {
        match (self.revoked, self.expires) {
            (Some(at), _) => State::Revoked(at),
            (None, Some(at)) if at <= now => State::Expired(at),
            _ => State::Active,
        }
    }
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Active => "active",
            State::Expired(_) => "expired",
            State::Revoked(_) => "revoked",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Key,
    Token,
    Cert,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Key => "access key",
            Kind::Token => "token",
            Kind::Cert => "client certificate",
        }
    }
    fn reissue(self, tenant: &str) -> String {
        match self {
            Kind::Key => format!("get a new key pair with `hyperd tenant create {tenant}`"),
            Kind::Token => format!("issue a new one with `hyperd tenant token {tenant}`"),
            Kind::Cert => format!("issue a new one with `hyperd tenant cert {tenant} --out DIR`"),
        }
    }
}

/// A token's or certificate's record: `/tokens/<sha256>`, `/certs/<fingerprint>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub tenant: String,
    #[serde(flatten)]
    pub life: Lifetime,
}

/// A credential as the listing shows it: never a secret.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Listed {
    pub kind: Kind,
    pub id: String,
    pub created: DateTime<Utc>,
    pub expires: Option<DateTime<Utc>>,
    pub state: &'static str,
    pub revoked: Option<DateTime<Utc>>,
}

/// Why a credential that is known was refused: the message for the client, who proved to hold
/// it, so it may learn its id and when it stopped working.
pub fn refusal(kind: Kind, id: &str, tenant: &str, state: State) -> Option<String> {
    let (what, at) = match state {
        State::Active => return None,
        State::Expired(at) => ("expired", at),
        State::Revoked(at) => ("was revoked", at),
    };
    Some(format!(
        "{} {id} {what} on {}; {}",
        kind.noun(),
        at.format("%Y-%m-%dT%H:%M:%SZ"),
        kind.reissue(tenant)
    ))
}

/// `90d`, `24h`, `30m`, `2s`: a lifetime between one second and [`MAX_TTL`].
pub fn parse_ttl(text: &str) -> Result<TimeDelta, String> {
    let bad = || {
        format!("invalid lifetime {text:?}: give a number and a unit, s, m, h or d (e.g. 24h, 90d)")
    };
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (digits, unit) = text.split_at(split);
    let n: i64 = digits.parse().map_err(|_| bad())?;
    let per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(bad()),
    };
    let secs = n.checked_mul(per).ok_or_else(bad)?;
    if secs == 0 {
        return Err(format!("invalid lifetime {text:?}: it must be at least 1s"));
    }
    if secs > MAX_TTL.num_seconds() {
        return Err(format!(
            "invalid lifetime {text:?}: at most {}d",
            MAX_TTL.num_days()
        ));
    }
    Ok(TimeDelta::seconds(secs))
}

pub fn token_id(hash: &str) -> String {
    format!("tok-{}", &hash[..ID_HEX.min(hash.len())])
}

pub fn cert_id(fingerprint: &str) -> String {
    format!("crt-{}", &fingerprint[..ID_HEX.min(fingerprint.len())])
}

/// Where an id's record lives: the store prefix that holds it (one record) and its kind.
fn locate(id: &str) -> Result<(Kind, String), AccountError> {
    let hex_part = |rest: &str| {
        rest.len() == ID_HEX
            && rest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if let Some(rest) = id.strip_prefix("tok-") {
        if hex_part(rest) {
            return Ok((Kind::Token, format!("/tokens/{rest}")));
        }
    } else if let Some(rest) = id.strip_prefix("crt-") {
        if hex_part(rest) {
            return Ok((Kind::Cert, format!("/certs/{rest}")));
        }
    } else if !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Ok((Kind::Key, format!("/keys/{id}")));
    }
    Err(AccountError::InvalidId(id.into()))
}

/// A stored token or certificate record; the previous version stored the bare tenant name.
fn parse_record(value: &[u8]) -> Option<(Record, bool)> {
    if let Ok(record) = serde_json::from_slice::<Record>(value) {
        return Some((record, false));
    }
    let tenant = std::str::from_utf8(value).ok()?;
    let legacy = Record {
        tenant: tenant.to_string(),
        life: Lifetime {
            created: DateTime::UNIX_EPOCH,
            expires: None,
            revoked: None,
        },
    };
    Some((legacy, true))
}

/// A credential that let a request in: its tenant, and what a connection watches it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    pub tenant: String,
    pub store_key: String,
    pub expires: Option<DateTime<Utc>>,
}

impl Accounts {
    /// The tenant a bearer token acts for, or why it is refused (`None` in the error: unknown).
    pub fn check_token(&self, token: &str) -> Result<Admission, Option<String>> {
        let hash = crate::accounts::token_hash(token);
        self.check_record(Kind::Token, &format!("/tokens/{hash}"), &token_id(&hash))
    }

    /// The tenant of a client certificate of our CA, or why it is refused.
    pub fn check_cert(&self, fingerprint: &str) -> Result<Admission, Option<String>> {
        self.check_record(
            Kind::Cert,
            &format!("/certs/{fingerprint}"),
            &cert_id(fingerprint),
        )
    }

    fn check_record(&self, kind: Kind, key: &str, id: &str) -> Result<Admission, Option<String>> {
        let kv = self.store.get(key).ok().flatten().ok_or(None)?;
        let (record, _) = parse_record(&kv.value).ok_or(None)?;
        match refusal(kind, id, &record.tenant, record.life.state(Utc::now())) {
            None => Ok(Admission {
                tenant: record.tenant,
                store_key: key.to_string(),
                expires: record.life.expires,
            }),
            Some(why) => Err(Some(why)),
        }
    }

    /// Whether the credential stored at `store_key` still works (a connection it admitted
    /// requests on is cut when not).
    pub fn is_active(&self, store_key: &str) -> bool {
        let Ok(Some(kv)) = self.store.get(store_key) else {
            return false;
        };
        let life = if store_key.starts_with("/keys/") {
            serde_json::from_slice::<Key>(&kv.value)
                .map(|k| k.life)
                .ok()
        } else {
            parse_record(&kv.value).map(|(r, _)| r.life)
        };
        life.is_some_and(|l| l.state(Utc::now()) == State::Active)
    }

    /// Why a key whose signature matched is refused, if it is.
    pub fn key_refusal(&self, access: &str, key: &Key) -> Option<String> {
        refusal(Kind::Key, access, &key.tenant, key.life.state(Utc::now()))
    }

    pub(crate) fn put_record(
        &self,
        key: &str,
        tenant: &str,
        life: Lifetime,
    ) -> Result<Record, AccountError> {
        let record = Record {
            tenant: tenant.into(),
            life,
        };
        self.store
            .put(key, serde_json::to_vec(&record).expect("json"))?;
        Ok(record)
    }

    /// Every credential of the tenant, oldest first; never a secret.
    pub fn credentials_of(&self, tenant: &str) -> Result<Vec<Listed>, AccountError> {
        let now = Utc::now();
        let listed = |kind: Kind, id: String, life: &Lifetime| Listed {
            kind,
            id,
            created: life.created,
            expires: life.expires,
            state: life.state(now).name(),
            revoked: life.revoked,
        };
        let mut all = Vec::new();
        for kv in self.store.range("/keys/")? {
            if let Ok(key) = serde_json::from_slice::<Key>(&kv.value) {
                if key.tenant == tenant {
                    let id = kv.key.trim_start_matches("/keys/").to_string();
                    all.push(listed(Kind::Key, id, &key.life));
                }
            }
        }
        for (prefix, kind) in [("/tokens/", Kind::Token), ("/certs/", Kind::Cert)] {
            for kv in self.store.range(prefix)? {
                let Some((record, _)) = parse_record(&kv.value) else {
                    continue;
                };
                if record.tenant == tenant {
                    let hash = kv.key.trim_start_matches(prefix);
                    let id = match kind {
                        Kind::Token => token_id(hash),
                        _ => cert_id(hash),
                    };
                    all.push(listed(kind, id, &record.life));
                }
            }
        }
        all.sort_by_key(|c| c.created);
        Ok(all)
    }

    /// Revokes one credential by its id; it stops working at once. Returns its tenant.
    /// Revoking a revoked one is a no-op (the first time is kept).
    pub fn revoke(&self, id: &str) -> Result<String, AccountError> {
        let (kind, key) = locate(id)?;
        let found = match kind {
            Kind::Key => self.store.get(&key)?.into_iter().collect(),
            _ => self.store.range(&key)?,
        };
        let [kv] = found.as_slice() else {
            return Err(AccountError::NoSuchCredential(id.into()));
        };
        let now = Utc::now();
        let (tenant, value) = match kind {
            Kind::Key => {
                let mut k: Key = serde_json::from_slice(&kv.value)
                    .map_err(|_| AccountError::NoSuchCredential(id.into()))?;
                k.life.revoked.get_or_insert(now);
                (k.tenant.clone(), serde_json::to_vec(&k).expect("json"))
            }
            _ => {
                let (mut r, _) = parse_record(&kv.value)
                    .ok_or_else(|| AccountError::NoSuchCredential(id.into()))?;
                r.life.revoked.get_or_insert(now);
                (r.tenant.clone(), serde_json::to_vec(&r).expect("json"))
            }
        };
        let done = self.store.txn(
            Txn::new()
                .when(Compare::ModRevision(kv.key.clone(), kv.mod_revision))
                .then(Op::Put(kv.key.clone(), value)),
        )?;
        if !done.succeeded {
            // Changed meanwhile (another revocation): read it again.
            return self.revoke(id);
        }
        Ok(tenant)
    }

    /// Issues a new key pair and revokes every other credential of the tenant: keys, tokens
    /// and certificates. Returns the new pair and the ids revoked.
    pub fn rotate(
        &self,
        tenant: &str,
        key_ttl: Option<TimeDelta>,
    ) -> Result<(String, String, Vec<String>), AccountError> {
        if !self.tenant_exists(tenant)? {
            return Err(AccountError::NoSuchTenant(tenant.into()));
        }
        let (access, secret) = self.create_tenant(tenant, key_ttl)?;
        let mut revoked = Vec::new();
        for c in self.credentials_of(tenant)? {
            if c.id != access && c.state != "revoked" {
                self.revoke(&c.id)?;
                revoked.push(c.id);
            }
        }
        Ok((access, secret, revoked))
    }

    /// Deletes the records of credentials revoked or expired more than [`FORGET_AFTER`]
    /// before `now`. Returns how many.
    pub fn forget_stale(&self, now: DateTime<Utc>) -> Result<usize, AccountError> {
        let mut n = 0;
        for prefix in ["/keys/", "/tokens/", "/certs/"] {
            for kv in self.store.range(prefix)? {
                let life = match prefix {
                    "/keys/" => serde_json::from_slice::<Key>(&kv.value)
                        .ok()
                        .map(|k| k.life),
                    _ => parse_record(&kv.value).map(|(r, _)| r.life),
                };
                let ended = match life.map(|l| l.state(now)) {
                    Some(State::Revoked(at) | State::Expired(at)) => at,
                    _ => continue,
                };
                if now - ended > FORGET_AFTER {
                    self.store.txn(
                        Txn::new()
                            .when(Compare::ModRevision(kv.key.clone(), kv.mod_revision))
                            .then(Op::Delete(kv.key)),
                    )?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// [`Accounts::forget_stale`] now and then every day.
    pub async fn forget_stale_forever(self) {
        loop {
            match self.forget_stale(Utc::now()) {
                Ok(0) => {}
                Ok(n) => tracing::info!("forgot {n} credentials revoked or expired long ago"),
                Err(e) => tracing::warn!("forgetting old credentials: {e}"),
            }
            tokio::time::sleep(std::time::Duration::from_secs(86400)).await;
        }
    }

    /// Rewrites tokens and certificates stored by the previous version (a bare tenant name)
    /// as issued now, expiring after the default lifetime. Returns how many.
    pub fn migrate_legacy(&self) -> Result<usize, AccountError> {
        let mut n = 0;
        for prefix in ["/tokens/", "/certs/"] {
            for kv in self.store.range(prefix)? {
                let Some((mut record, true)) = parse_record(&kv.value) else {
                    continue;
                };
                record.life = Lifetime::issued(Utc::now(), Some(self.default_ttl));
                self.store.txn(
                    Txn::new()
                        .when(Compare::ModRevision(kv.key.clone(), kv.mod_revision))
                        .then(Op::Put(kv.key, serde_json::to_vec(&record).expect("json"))),
                )?;
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
