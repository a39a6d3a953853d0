//! The node signature on a request passed on: `NODE UNIX-SECONDS TENANT HEX`, an
//! HMAC-SHA256 of who, when, for whom, the method and the path with its query.

use http::Method;
use ring::hmac;

use super::MAX_SKEW_SECS;

fn signed_text(from: &str, at: i64, tenant: &str, method: &Method, target: &str) -> String {
    format!("{from}\n{at}\n{tenant}\n{method}\n{target}")
}

/// The value of [`HEADER`] for a request `from` this node at `at` (Unix seconds).
pub(super) fn signature(
    key: &hmac::Key,
    from: &str,
    at: i64,
    tenant: &str,
    method: &Method,
    target: &str,
) -> String {
    let text = signed_text(from, at, tenant, method, target);
    let mac = hex::encode(hmac::sign(key, text.as_bytes()));
    format!("{from} {at} {tenant} {mac}")
}

/// Checks a [`HEADER`] value against the request at time `now`: the tenant, or why not.
pub(super) fn check(
    key: &hmac::Key,
    value: &str,
    method: &Method,
    target: &str,
    now: i64,
) -> Result<String, String> {
    let [from, at, tenant, mac] = value.split(' ').collect::<Vec<_>>()[..] else {
        return Err("malformed node signature".into());
    };
    let at: i64 = at.parse().map_err(|_| "malformed node signature")?;
    if (now - at).abs() > MAX_SKEW_SECS {
        return Err(format!(
            "node signature of {from} is more than {MAX_SKEW_SECS} s off this node's clock"
        ));
    }
    let mac = hex::decode(mac).map_err(|_| "malformed node signature")?;
    let text = signed_text(from, at, tenant, method, target);
    hmac::verify(key, text.as_bytes(), &mac).map_err(|_| {
        format!("node signature of {from} does not verify (a node of another fleet?)")
    })?;
    Ok(tenant.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_hold_only_for_the_request_and_key_they_were_made_for() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"fleet one");
        let other = hmac::Key::new(hmac::HMAC_SHA256, b"fleet two");
        let target = "/containers/web/json";
        let value = signature(&key, "n1", 1000, "acme", &Method::GET, target);
        assert_eq!(
            check(&key, &value, &Method::GET, target, 1010),
            Ok("acme".into())
        );
        let refused = |v: &str, method: &Method, target: &str, now: i64, why: &str| {
            let e = check(&key, v, method, target, now).unwrap_err();
            assert!(e.contains(why), "{e}");
        };
        refused(&value, &Method::DELETE, target, 1000, "does not verify");
        refused(
            &value,
            &Method::GET,
            "/containers/db/json",
            1000,
            "does not verify",
        );
        refused(
            &value.replace("acme", "other"),
            &Method::GET,
            target,
            1000,
            "does not verify",
        );
        refused(
            &value,
            &Method::GET,
            target,
            1000 + 121,
            "off this node's clock",
        );
        refused("n1 1000 acme", &Method::GET, target, 1000, "malformed");
        let foreign = signature(&other, "n1", 1000, "acme", &Method::GET, target);
        refused(&foreign, &Method::GET, target, 1000, "does not verify");
    }
}
