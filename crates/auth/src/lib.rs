//! HYPER-HMAC-SHA256 request signing, an AWS Signature Version 4 variant used by the Hyper.sh CLI.
//!
//! A client signs a request with [`sign`]; the daemon checks it with [`verify`]. The algorithm
//! (see `shared/reference/hyper-extensions.md`, "Request signing"):
//!
//! 1. The client sets `X-Hyper-Date` (`YYYYMMDDTHHMMSSZ`, UTC), `Content-Type` (default
//!    `application/json`) and `X-Hyper-Content-Sha256` (hex SHA-256 of the body).
//! 2. Signed headers: `content-type`, `content-md5`, `host` and every `x-hyper-*` present,
//!    lowercased and sorted; a `:80`/`:443` port is dropped from host.
//! 3. Canonical request: `METHOD\nURI\nQUERY\n(name:value\n)*\nSIGNED_HEADERS\nPAYLOAD_HASH`,
//!    with the URI's leading slash and empty segments removed, and the query form-decoded then
//!    re-encoded with spaces as `%20`, sorted by name.
//! 4. String to sign: `HYPER-HMAC-SHA256\nDATE\nSCOPE\nhex(sha256(canonical))` with
//!    `SCOPE = YYYYMMDD/{region}/hyper/hyper_request`.
//! 5. Key: `HMAC(HMAC(HMAC(HMAC("HYPER"+secret, YYYYMMDD), region), "hyper"), "hyper_request")`.
//! 6. `Authorization: HYPER-HMAC-SHA256 Credential=AK/SCOPE, SignedHeaders=a;b, Signature=HEX`.
//!
//! The server accepts a request dated at most [`MAX_SKEW`] away from its clock.
//!
//! Query ordering: the Hyper CLI sorts parameters by name only (values of a repeated name keep
//! their order), whereas AWS SigV4 sorts by name then value. [`sign`] produces the CLI's form;
//! [`verify`] accepts either.

mod canonical;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use hmac::{Hmac, Mac};
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{HeaderMap, Method, Uri};
use sha2::{Digest, Sha256};

/// The algorithm name in `Authorization` and the string to sign.
pub const ALGORITHM: &str = "HYPER-HMAC-SHA256";
/// Header carrying the request time, `YYYYMMDDTHHMMSSZ` in UTC.
pub const HEADER_DATE: &str = "x-hyper-date";
/// Header carrying the hex SHA-256 of the body.
pub const HEADER_CONTENT_SHA256: &str = "x-hyper-content-sha256";
/// Largest accepted distance between the request date and the server clock.
pub const MAX_SKEW: TimeDelta = TimeDelta::minutes(5);

const DATE_FORMAT: &str = "%Y%m%dT%H%M%SZ";
const SERVICE: &str = "hyper";
const REQUEST_TYPE: &str = "hyper_request";

/// A user's key pair and the region their requests are scoped to.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field("region", &self.region)
            .finish()
    }
}

/// Why a request was refused. Messages are meant for the client: they say what to fix and
/// never carry the secret, the expected signature or the canonical request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// A required header is absent.
    #[error("request is not signed: missing {0} header")]
    Missing(&'static str),
    /// A header is present but not in the expected form.
    #[error("malformed signature: {0}")]
    Malformed(String),
    /// No secret is known for the access key.
    #[error("unknown access key {0:?}")]
    UnknownKey(String),
    /// The request date is too far from the server's clock.
    #[error(
        "request date {request} is more than 5 minutes away from the server time {server}; \
         check the client's clock"
    )]
    Expired { request: String, server: String },
    /// The signature does not match the request.
    #[error(
        "signature does not match; check the secret key and that the request was not modified \
         after signing"
    )]
    BadSignature,
    /// The body does not hash to `X-Hyper-Content-Sha256`.
    #[error("body does not match X-Hyper-Content-Sha256")]
    BodyHashMismatch,
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn signing_key(secret: &str, day: &str, region: &str) -> Vec<u8> {
    let k_date = hmac(format!("HYPER{secret}").as_bytes(), day);
    let k_region = hmac(&k_date, region);
    let k_service = hmac(&k_region, SERVICE);
    hmac(&k_service, REQUEST_TYPE)
}

/// The first value of a header, trimmed; `None` if absent or not visible ASCII/UTF-8.
fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// The (name, canonical value) pairs for `names`, or the first name that is missing.
fn signed_values(headers: &HeaderMap, names: &[String]) -> Result<Vec<(String, String)>, String> {
    names
        .iter()
        .map(|name| {
            let value = header_str(headers, name).ok_or_else(|| name.clone())?;
            let value = if name == "host" {
                canonical::canonical_host(value)
            } else {
                value
            };
            Ok((name.clone(), value.to_string()))
        })
        .collect()
}

/// Computes the hex signature of a request.
#[allow(clippy::too_many_arguments)]
fn signature(
    secret: &str,
    region: &str,
    date: &str,
    method: &Method,
    uri: &Uri,
    sort_query_values: bool,
    signed: &[(String, String)],
    payload_hash: &str,
) -> String {
    let canonical = canonical::canonical_request(
        method.as_str(),
        &canonical::canonical_path(uri.path()),
        &canonical::canonical_query(uri.query(), sort_query_values),
        signed,
        payload_hash,
    );
    let day = &date[..8];
    let scope = format!("{day}/{region}/{SERVICE}/{REQUEST_TYPE}");
    let to_sign = format!(
        "{ALGORITHM}\n{date}\n{scope}\n{}",
        sha256_hex(canonical.as_bytes())
    );
    hex::encode(hmac(&signing_key(secret, day, region), &to_sign))
}

/// Signs a request in place, as the Hyper CLI does.
///
/// Sets `Content-Type` to `application/json` if absent, and sets `X-Hyper-Date` (from `now`),
/// `X-Hyper-Content-Sha256` (of `body`) and `Authorization`.
///
/// `Host` must already be in `headers`, exactly as it will be sent (HTTP clients such as hyper
/// add it only when sending, after signing). If it is absent it is set from `uri`'s authority;
/// if `uri` has none, the request is signed without a host and [`verify`] will refuse it.
pub fn sign(
    creds: &Credentials,
    method: &Method,
    uri: &Uri,
    headers: &mut HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) {
    if !headers.contains_key(CONTENT_TYPE) {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    if !headers.contains_key(HOST) {
        if let Some(value) = uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            headers.insert(HOST, value);
        }
    }
    let date = now.format(DATE_FORMAT).to_string();
    let payload_hash = sha256_hex(body);
    headers.insert(
        HeaderName::from_static(HEADER_DATE),
        HeaderValue::from_str(&date).expect("date is ASCII"),
    );
    headers.insert(
        HeaderName::from_static(HEADER_CONTENT_SHA256),
        HeaderValue::from_str(&payload_hash).expect("hex is ASCII"),
    );
    headers.remove(AUTHORIZATION);

    let names = canonical::signable_headers(headers);
    let signed: Vec<(String, String)> = names
        .iter()
        .map(|name| {
            let raw = headers
                .get(name.as_str())
                .map(|v| v.as_bytes())
                .unwrap_or_default();
            let value = String::from_utf8_lossy(raw);
            let value = value.trim();
            let value = if name == "host" {
                canonical::canonical_host(value)
            } else {
                value
            };
            (name.clone(), value.to_string())
        })
        .collect();
    let sig = signature(
        &creds.secret_key,
        &creds.region,
        &date,
        method,
        uri,
        false,
        &signed,
        &payload_hash,
    );
    let auth = format!(
        "{ALGORITHM} Credential={}/{}/{}/{SERVICE}/{REQUEST_TYPE}, SignedHeaders={}, Signature={sig}",
        creds.access_key,
        &date[..8],
        creds.region,
        names.join(";"),
    );
    match HeaderValue::from_str(&auth) {
        Ok(v) => {
            headers.insert(AUTHORIZATION, v);
        }
        // Only a key or region with control characters gets here; leave the request unsigned
        // so the server says so, rather than panicking in the client.
        Err(_) => debug_assert!(false, "access key or region is not a valid header value"),
    }
}

/// The parts of an `Authorization` header.
struct Authorization<'a> {
    access_key: &'a str,
    day: &'a str,
    region: &'a str,
    signed_headers: Vec<String>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Result<Authorization<'_>, AuthError> {
    let malformed = |m: &str| AuthError::Malformed(m.to_string());
    let rest = value
        .strip_prefix(ALGORITHM)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or_else(|| malformed("Authorization must start with \"HYPER-HMAC-SHA256 \""))?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| malformed("Authorization parts must be name=value"))?;
        match k.trim() {
            "Credential" => credential = Some(v.trim()),
            "SignedHeaders" => signed = Some(v.trim()),
            "Signature" => signature = Some(v.trim()),
            _ => {}
        }
    }
    let credential = credential.ok_or_else(|| malformed("Authorization has no Credential"))?;
    let signed = signed.ok_or_else(|| malformed("Authorization has no SignedHeaders"))?;
    let signature = signature.ok_or_else(|| malformed("Authorization has no Signature"))?;

    let mut it = credential.rsplitn(5, '/');
    let (Some(request_type), Some(service), Some(region), Some(day), Some(access_key)) =
        (it.next(), it.next(), it.next(), it.next(), it.next())
    else {
        return Err(malformed(
            "Credential must be ACCESS_KEY/YYYYMMDD/REGION/hyper/hyper_request",
        ));
    };
    if service != SERVICE || request_type != REQUEST_TYPE || access_key.is_empty() {
        return Err(malformed(
            "Credential must be ACCESS_KEY/YYYYMMDD/REGION/hyper/hyper_request",
        ));
    }
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed("Signature must be 64 hex digits"));
    }
    let signed_headers: Vec<String> = signed.split(';').map(str::to_ascii_lowercase).collect();
    Ok(Authorization {
        access_key,
        day,
        region,
        signed_headers,
        signature,
    })
}

/// Compares two strings in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks a signed request and returns its access key.
///
/// `lookup` maps an access key to its secret. Checks, in order: the headers are present and
/// well formed; every signable header present (`content-type`, `content-md5`, `host`,
/// `x-hyper-*`) is signed, and `host`, `x-hyper-date`, `x-hyper-content-sha256` are among them;
/// the date is within [`MAX_SKEW`] of `now`; the key is known; the signature matches; the body
/// hashes to `X-Hyper-Content-Sha256`.
pub fn verify(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, AuthError> {
    let auth = headers
        .get(AUTHORIZATION)
        .ok_or(AuthError::Missing("Authorization"))?;
    let auth = auth
        .to_str()
        .map_err(|_| AuthError::Malformed("Authorization is not ASCII".into()))?;
    let auth = parse_authorization(auth)?;

    let date = headers
        .get(HEADER_DATE)
        .ok_or(AuthError::Missing("X-Hyper-Date"))?;
    let date = date.to_str().unwrap_or("").trim();
    let parsed = NaiveDateTime::parse_from_str(date, DATE_FORMAT)
        .map_err(|_| AuthError::Malformed("X-Hyper-Date must be YYYYMMDDTHHMMSSZ (UTC)".into()))?
        .and_utc();
    if auth.day != &date[..8] {
        return Err(AuthError::Malformed(
            "the date in Credential does not match X-Hyper-Date".into(),
        ));
    }
    let claimed_hash = headers
        .get(HEADER_CONTENT_SHA256)
        .ok_or(AuthError::Missing("X-Hyper-Content-Sha256"))?
        .to_str()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();

    for required in ["host", HEADER_DATE, HEADER_CONTENT_SHA256] {
        if !auth.signed_headers.iter().any(|h| h == required) {
            return Err(AuthError::Malformed(format!(
                "SignedHeaders must include {required}"
            )));
        }
    }
    for present in canonical::signable_headers(headers) {
        if !auth.signed_headers.contains(&present) {
            return Err(AuthError::Malformed(format!(
                "header {present} is present but not in SignedHeaders"
            )));
        }
        // Only one value is signed: a second one could be added on the way unnoticed.
        if headers.get_all(present.as_str()).iter().nth(1).is_some() {
            return Err(AuthError::Malformed(format!(
                "header {present} is sent more than once; a signed header takes one value"
            )));
        }
    }
    let signed = signed_values(headers, &auth.signed_headers).map_err(|name| {
        AuthError::Malformed(format!("signed header {name} is missing or not ASCII"))
    })?;

    if (parsed - now).abs() > MAX_SKEW {
        return Err(AuthError::Expired {
            request: parsed.format(DATE_FORMAT).to_string(),
            server: now.format(DATE_FORMAT).to_string(),
        });
    }

    let secret =
        lookup(auth.access_key).ok_or_else(|| AuthError::UnknownKey(auth.access_key.into()))?;
    let matches = |sort_values: bool| {
        let expected = signature(
            &secret,
            auth.region,
            date,
            method,
            uri,
            sort_values,
            &signed,
            &claimed_hash,
        );
        constant_time_eq(
            expected.as_bytes(),
            auth.signature.to_ascii_lowercase().as_bytes(),
        )
    };
    // The two query orders differ only when a name repeats with values out of order.
    if !matches(false) && !matches(true) {
        return Err(AuthError::BadSignature);
    }
    if !constant_time_eq(sha256_hex(body).as_bytes(), claimed_hash.as_bytes()) {
        return Err(AuthError::BodyHashMismatch);
    }
    Ok(auth.access_key.to_string())
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
