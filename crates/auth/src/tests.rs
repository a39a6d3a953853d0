use chrono::{NaiveDateTime, TimeDelta};

use super::*;

fn at(s: &str) -> DateTime<Utc> {
    NaiveDateTime::parse_from_str(s, DATE_FORMAT)
        .unwrap()
        .and_utc()
}

fn creds() -> Credentials {
    Credentials {
        access_key: "ak".into(),
        secret_key: "sk".into(),
        region: "us-west-1".into(),
    }
}

fn lookup(ak: &str) -> Option<String> {
    (ak == "ak").then(|| "sk".to_string())
}

/// A signed POST with a body; returns (method, uri, headers, body, time).
fn signed_post() -> (Method, Uri, HeaderMap, Vec<u8>, DateTime<Utc>) {
    let method = Method::POST;
    let uri: Uri = "/v1.23/containers/create?name=a+b".parse().unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(HOST, HeaderValue::from_static("hyper.example:443"));
    let body = br#"{"Image":"busybox"}"#.to_vec();
    let now = at("20261122T010515Z");
    sign(&creds(), &method, &uri, &mut headers, &body, now);
    (method, uri, headers, body, now)
}

#[test]
fn reference_vector() {
    let uri: Uri = "/v1.23/containers/json".parse().unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(HOST, HeaderValue::from_static("127.0.0.1:18443"));
    let now = at("20261122T010515Z");
    sign(&creds(), &Method::GET, &uri, &mut headers, b"", now);
    assert_eq!(
        headers[AUTHORIZATION],
        "HYPER-HMAC-SHA256 Credential=ak/20261122/us-west-1/hyper/hyper_request, \
         SignedHeaders=content-type;host;x-hyper-content-sha256;x-hyper-date, \
         Signature=7e3532c4168ce81efaa73a2371ab6ab8376cebd38aa387b22757e56c3eed04d5"
    );
    assert_eq!(headers[CONTENT_TYPE], "application/json");
    assert_eq!(headers[HEADER_DATE], "20261122T010515Z");
    assert_eq!(
        headers[HEADER_CONTENT_SHA256],
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        verify(&Method::GET, &uri, &headers, b"", now, lookup),
        Ok("ak".into())
    );
}

#[test]
fn host_from_uri_when_absent() {
    let uri: Uri = "https://127.0.0.1:18443/v1.23/containers/json"
        .parse()
        .unwrap();
    let mut headers = HeaderMap::new();
    let now = at("20261122T010515Z");
    sign(&creds(), &Method::GET, &uri, &mut headers, b"", now);
    assert_eq!(headers[HOST], "127.0.0.1:18443");
    assert!(headers[AUTHORIZATION]
        .to_str()
        .unwrap()
        .ends_with("7e3532c4168ce81efaa73a2371ab6ab8376cebd38aa387b22757e56c3eed04d5"));
}

#[test]
fn accepts_within_window() {
    let (m, u, h, b, now) = signed_post();
    for (i, d) in [-300i64, -60, 0, 60, 300].iter().enumerate() {
        let t = now + TimeDelta::seconds(*d);
        assert_eq!(
            verify(&m, &u, &h, &b, t, lookup),
            Ok("ak".into()),
            "test[{i}]"
        );
    }
}

#[test]
fn accepts_sigv4_query_order() {
    // A SigV4 client sends `?a=2&a=1` but signs `a=1&a=2` (sorted by value); sign() gives that
    // canonical query for `?a=1&a=2`.
    let uri: Uri = "/x?a=1&a=2".parse().unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(HOST, HeaderValue::from_static("h"));
    let now = at("20261122T010515Z");
    sign(&creds(), &Method::GET, &uri, &mut headers, b"", now);
    let reordered: Uri = "/x?a=2&a=1".parse().unwrap();
    assert_eq!(
        verify(&Method::GET, &reordered, &headers, b"", now, lookup),
        Ok("ak".into())
    );
}

#[test]
fn rejections() {
    let (m, u, h, b, now) = signed_post();
    type Case = (
        &'static str,
        Box<dyn Fn(&mut Method, &mut Uri, &mut HeaderMap, &mut Vec<u8>, &mut DateTime<Utc>)>,
        fn(&AuthError) -> bool,
    );
    let cases: Vec<Case> = vec![
        (
            "tampered body",
            Box::new(|_, _, _, b, _| b.push(b' ')),
            |e| *e == AuthError::BodyHashMismatch,
        ),
        (
            "tampered body hash header",
            Box::new(|_, _, h, b, _| {
                b.push(b' ');
                h.insert(
                    HEADER_CONTENT_SHA256,
                    HeaderValue::from_str(&sha256_hex(b)).unwrap(),
                );
            }),
            |e| *e == AuthError::BadSignature,
        ),
        (
            "stale date",
            Box::new(|_, _, _, _, t| *t += TimeDelta::seconds(301)),
            |e| matches!(e, AuthError::Expired { .. }),
        ),
        (
            "future date",
            Box::new(|_, _, _, _, t| *t -= TimeDelta::seconds(301)),
            |e| matches!(e, AuthError::Expired { .. }),
        ),
        (
            "tampered method",
            Box::new(|m, _, _, _, _| *m = Method::PUT),
            |e| *e == AuthError::BadSignature,
        ),
        (
            "tampered query",
            Box::new(|_, u, _, _, _| *u = "/v1.23/containers/create?name=ab".parse().unwrap()),
            |e| *e == AuthError::BadSignature,
        ),
        (
            "tampered host",
            Box::new(|_, _, h, _, _| {
                h.insert(HOST, HeaderValue::from_static("evil:443"));
            }),
            |e| *e == AuthError::BadSignature,
        ),
        (
            "unsigned x-hyper header added",
            Box::new(|_, _, h, _, _| {
                h.insert("x-hyper-extra", HeaderValue::from_static("1"));
            }),
            |e| matches!(e, AuthError::Malformed(m) if m.contains("x-hyper-extra")),
        ),
        (
            "no authorization",
            Box::new(|_, _, h, _, _| {
                h.remove(AUTHORIZATION);
            }),
            |e| *e == AuthError::Missing("Authorization"),
        ),
        (
            "no date",
            Box::new(|_, _, h, _, _| {
                h.remove(HEADER_DATE);
            }),
            |e| *e == AuthError::Missing("X-Hyper-Date"),
        ),
        (
            "bad date",
            Box::new(|_, _, h, _, _| {
                h.insert(HEADER_DATE, HeaderValue::from_static("2026-11-22"));
            }),
            |e| matches!(e, AuthError::Malformed(_)),
        ),
        (
            "wrong algorithm",
            Box::new(|_, _, h, _, _| {
                let v = h[AUTHORIZATION]
                    .to_str()
                    .unwrap()
                    .replace("HYPER-HMAC-SHA256", "AWS4-HMAC-SHA256");
                h.insert(AUTHORIZATION, HeaderValue::from_str(&v).unwrap());
            }),
            |e| matches!(e, AuthError::Malformed(_)),
        ),
        (
            "garbage authorization",
            Box::new(|_, _, h, _, _| {
                h.insert(
                    AUTHORIZATION,
                    HeaderValue::from_static("HYPER-HMAC-SHA256 nonsense"),
                );
            }),
            |e| matches!(e, AuthError::Malformed(_)),
        ),
        (
            "short signature",
            Box::new(|_, _, h, _, _| {
                let v = h[AUTHORIZATION].to_str().unwrap();
                let v = &v[..v.len() - 2];
                h.insert(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            }),
            |e| matches!(e, AuthError::Malformed(_)),
        ),
        (
            "host not signed",
            Box::new(|_, _, h, _, _| {
                let v = h[AUTHORIZATION]
                    .to_str()
                    .unwrap()
                    .replace("content-type;host;", "content-type;");
                h.insert(AUTHORIZATION, HeaderValue::from_str(&v).unwrap());
            }),
            |e| matches!(e, AuthError::Malformed(m) if m.contains("host")),
        ),
        (
            "scope date differs",
            Box::new(|_, _, h, _, _| {
                let v = h[AUTHORIZATION]
                    .to_str()
                    .unwrap()
                    .replace("/20261122/", "/20261121/");
                h.insert(AUTHORIZATION, HeaderValue::from_str(&v).unwrap());
            }),
            |e| matches!(e, AuthError::Malformed(_)),
        ),
        (
            "unknown key",
            Box::new(|_, _, h, _, _| {
                let v = h[AUTHORIZATION]
                    .to_str()
                    .unwrap()
                    .replace("Credential=ak/", "Credential=zz/");
                h.insert(AUTHORIZATION, HeaderValue::from_str(&v).unwrap());
            }),
            |e| *e == AuthError::UnknownKey("zz".into()),
        ),
    ];
    for (i, (name, mutate, check)) in cases.iter().enumerate() {
        let (mut m, mut u, mut h, mut b, mut t) = (m.clone(), u.clone(), h.clone(), b.clone(), now);
        mutate(&mut m, &mut u, &mut h, &mut b, &mut t);
        let err = verify(&m, &u, &h, &b, t, lookup).expect_err(name);
        assert!(check(&err), "test[{i}] {name}: got {err:?}");
        let msg = err.to_string();
        assert!(
            !msg.contains("sk") || msg.contains("ask"),
            "test[{i}] leaks: {msg}"
        );
    }
}

/// Found by `fuzz::fuzz_sign_then_verify`: only the first value of a header is signed, so a
/// second `Content-MD5` (or `X-Hyper-*`) value added after signing went through unnoticed.
#[test]
fn refuses_a_signed_header_sent_twice() {
    let (method, uri, mut headers, body, now) = signed_post();
    assert_eq!(
        verify(&method, &uri, &headers, &body, now, lookup),
        Ok("ak".into())
    );
    headers.append(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    let err = verify(&method, &uri, &headers, &body, now, lookup).unwrap_err();
    assert_eq!(
        err,
        AuthError::Malformed(
            "header content-type is sent more than once; a signed header takes one value".into()
        )
    );
}

#[test]
fn wrong_secret() {
    let (m, u, h, b, now) = signed_post();
    let err = verify(&m, &u, &h, &b, now, |_| Some("other".into())).unwrap_err();
    assert_eq!(err, AuthError::BadSignature);
    assert!(!err.to_string().contains("other"));
}

#[test]
fn debug_hides_secret() {
    assert!(!format!("{:?}", creds()).contains("\"sk\""));
}
