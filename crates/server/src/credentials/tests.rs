use std::sync::Arc;

use super::*;
use crate::seal::Sealer;

fn accounts(dir: &std::path::Path) -> Accounts {
    let store = store::RedbStore::open(&dir.join("store.redb")).unwrap();
    let sealer = Sealer::load_or_create(&dir.join("seal.key")).unwrap();
    Accounts::new(Arc::new(store), Arc::new(sealer))
}

#[test]
fn lifetimes_parse() {
    let cases: [(&str, Option<i64>); 12] = [
        ("2s", Some(2)),
        ("30m", Some(1800)),
        ("24h", Some(86400)),
        ("90d", Some(90 * 86400)),
        (" 7d ", Some(7 * 86400)),
        ("3650d", Some(3650 * 86400)),
        ("3651d", None),
        ("0s", None),
        ("10", None),
        ("d", None),
        ("5w", None),
        ("99999999999999999999d", None),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let got = parse_ttl(text).ok().map(|t| t.num_seconds());
        assert_eq!(got, *want, "test[{i}] {text:?}");
    }
    assert!(parse_ttl("5w").unwrap_err().contains("s, m, h or d"));
}

#[test]
fn state_follows_expiry_and_revocation() {
    let t0 = Utc::now();
    let mut life = Lifetime::issued(t0, Some(TimeDelta::hours(1)));
    assert_eq!(life.state(t0), State::Active);
    let end = t0 + TimeDelta::hours(1);
    assert_eq!(life.state(end), State::Expired(end));
    life.revoked = Some(t0);
    assert_eq!(life.state(t0), State::Revoked(t0), "revocation wins");
    assert_eq!(Lifetime::issued(t0, None).state(end), State::Active);
}

#[test]
fn refusals_name_the_credential_and_how_to_replace_it() {
    let at = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
        .unwrap()
        .to_utc();
    let why = refusal(
        Kind::Token,
        "tok-0123456789abcdef",
        "t1",
        State::Expired(at),
    )
    .unwrap();
    assert_eq!(
        why,
        "token tok-0123456789abcdef expired on 2026-01-02T03:04:05Z; issue a new one with \
         `hyperd tenant token t1`"
    );
    let why = refusal(Kind::Cert, "crt-x", "t1", State::Revoked(at)).unwrap();
    assert!(
        why.starts_with("client certificate crt-x was revoked on"),
        "{why}"
    );
    assert_eq!(refusal(Kind::Key, "AK", "t1", State::Active), None);
}

#[test]
fn ids_are_checked_before_they_reach_the_store() {
    let cases = [
        ("tok-0123456789abcdef", Some(Kind::Token)),
        ("crt-0123456789abcdef", Some(Kind::Cert)),
        ("ABCDEF0123456789XYZW", Some(Kind::Key)),
        // An empty or short hash part would match a whole range of records.
        ("tok-", None),
        ("tok-0123", None),
        ("crt-0123456789ABCDEF", None),
        ("../x", None),
        ("", None),
    ];
    for (i, (id, want)) in cases.iter().enumerate() {
        assert_eq!(locate(id).ok().map(|(k, _)| k), *want, "test[{i}] {id:?}");
    }
}

#[test]
fn tokens_are_stored_hashed_with_an_id_and_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let a = accounts(dir.path());
    a.create_tenant("t1", None).unwrap();
    let (token, id, record) = a.create_token("t1", None).unwrap();
    assert_eq!(record.life.expires, Some(record.life.created + DEFAULT_TTL));
    let admitted = a.check_token(&token).unwrap();
    assert_eq!(admitted.tenant, "t1");
    assert!(a.is_active(&admitted.store_key));
    for kv in a.store.range("/").unwrap() {
        let text = String::from_utf8_lossy(&kv.value);
        assert!(!text.contains(&token) && !kv.key.contains(&token), "{kv:?}");
    }
    let listed = a.credentials_of("t1").unwrap();
    assert_eq!(
        listed.iter().map(|c| c.kind).collect::<Vec<_>>(),
        [Kind::Key, Kind::Token]
    );
    assert_eq!(listed[1].id, id);
    assert_eq!(a.revoke(&id).unwrap(), "t1");
    let why = a.check_token(&token).unwrap_err().unwrap();
    assert!(why.contains(&id) && why.contains("revoked"), "{why}");
    assert!(!a.is_active(&admitted.store_key));
    assert_eq!(a.check_token("hyt_other"), Err(None));
    assert!(matches!(
        a.revoke("tok-ffffffffffffffff"),
        Err(AccountError::NoSuchCredential(_))
    ));
}

#[test]
fn rotation_revokes_every_other_credential_of_the_tenant_only() {
    let dir = tempfile::tempdir().unwrap();
    let a = accounts(dir.path());
    let (old_key, _) = a.create_tenant("t1", None).unwrap();
    let (other_key, _) = a.create_tenant("t2", None).unwrap();
    let (token, _, _) = a.create_token("t1", None).unwrap();
    let (other_token, _, _) = a.create_token("t2", None).unwrap();
    let cert = a
        .record_cert("t1", &"ab".repeat(32), a.cert_lifetime(None))
        .unwrap();
    let (new_key, _, revoked) = a.rotate("t1", Some(TimeDelta::days(1))).unwrap();
    assert_eq!(revoked.len(), 3, "{revoked:?}");
    assert!(revoked.contains(&old_key) && revoked.contains(&cert));
    assert!(a.check_token(&token).is_err());
    assert!(a.check_cert(&"ab".repeat(32)).is_err());
    let key = a.key(&old_key).unwrap();
    assert!(a.key_refusal(&old_key, &key).unwrap().contains("revoked"));
    let key = a.key(&new_key).unwrap();
    assert_eq!(a.key_refusal(&new_key, &key), None);
    assert!(key.life.expires.is_some());
    // The other tenant keeps all it had.
    assert_eq!(a.check_token(&other_token).unwrap().tenant, "t2");
    let key = a.key(&other_key).unwrap();
    assert_eq!(a.key_refusal(&other_key, &key), None);
    assert!(matches!(
        a.rotate("nobody", None),
        Err(AccountError::NoSuchTenant(_))
    ));
}

/// What the previous version wrote still loads: keys without an expiry never expire; bare
/// tenant names under /tokens and /certs become records issued at migration, expiring after
/// the default lifetime.
#[test]
fn records_of_the_previous_version_load() {
    let dir = tempfile::tempdir().unwrap();
    let a = accounts(dir.path()).with_default_ttl(TimeDelta::days(2));
    let sealed = Sealer::load_or_create(&dir.path().join("seal.key"))
        .unwrap()
        .seal("secret");
    let old_key = json_of(&serde_json::json!({
        "tenant": "t1", "sealed_secret": sealed, "created": "2025-01-01T00:00:00Z",
    }));
    a.store.put("/keys/OLDKEY", old_key).unwrap();
    let hash = crate::accounts::token_hash("hyt_old");
    a.store
        .put(&format!("/tokens/{hash}"), b"t1".to_vec())
        .unwrap();
    let fp = "cd".repeat(32);
    a.store
        .put(&format!("/certs/{fp}"), b"t1".to_vec())
        .unwrap();

    assert_eq!(a.secret("OLDKEY").as_deref(), Some("secret"));
    let key = a.key("OLDKEY").unwrap();
    assert_eq!(key.life.expires, None);
    assert_eq!(a.key_refusal("OLDKEY", &key), None);
    assert_eq!(a.check_token("hyt_old").unwrap().tenant, "t1");

    assert_eq!(a.migrate_legacy().unwrap(), 2);
    assert_eq!(a.migrate_legacy().unwrap(), 0, "once");
    assert_eq!(a.check_token("hyt_old").unwrap().tenant, "t1");
    assert_eq!(a.check_cert(&fp).unwrap().tenant, "t1");
    assert!(a.is_active("/keys/OLDKEY"));
    let listed = a.credentials_of("t1").unwrap();
    assert_eq!(listed.len(), 3);
    for c in listed.iter().filter(|c| c.kind != Kind::Key) {
        assert_eq!(c.expires, Some(c.created + TimeDelta::days(2)), "{c:?}");
    }
    a.revoke(&cert_id(&fp)).unwrap();
    assert!(a.check_cert(&fp).is_err());
    a.revoke("OLDKEY").unwrap();
    assert!(a.key_refusal("OLDKEY", &a.key("OLDKEY").unwrap()).is_some());
    assert!(!a.is_active("/keys/OLDKEY"));
}

fn json_of(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

#[test]
fn credentials_ended_long_ago_are_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let a = accounts(dir.path());
    let (key, _) = a.create_tenant("t1", None).unwrap();
    let (old_token, old_id, _) = a.create_token("t1", Some(TimeDelta::hours(1))).unwrap();
    let (revoked_token, revoked_id, _) = a.create_token("t1", None).unwrap();
    a.revoke(&revoked_id).unwrap();
    let now = Utc::now();
    assert_eq!(a.forget_stale(now).unwrap(), 0, "nothing ended 30 days ago");
    let later = now + FORGET_AFTER + TimeDelta::days(1);
    // By then the one-hour token has expired and the other is long revoked; the key works.
    assert_eq!(a.forget_stale(later).unwrap(), 2);
    let ids: Vec<String> = a
        .credentials_of("t1")
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, [key]);
    assert!(!ids.contains(&old_id));
    assert_eq!(a.check_token(&old_token), Err(None));
    assert_eq!(a.check_token(&revoked_token), Err(None));
}
