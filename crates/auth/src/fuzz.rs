//! Fuzz targets for the signature's canonical request and its verification, on what any
//! client (or anyone on the network) can send: paths, queries, headers, `Authorization` and
//! `X-Hyper-Date` values (proptest on stable, see `scripts/fuzz`).

use chrono::{DateTime, TimeZone, Utc};
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, HOST};
use http::{HeaderMap, Method, Uri};
use proptest::prelude::*;

use super::canonical::{canonical_host, canonical_path, canonical_query, decode, encode};
use super::*;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 1, 5, 15).unwrap()
}

/// Text a URL may carry, with the characters that make encoding interesting.
fn url_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            "[a-zA-Z0-9]{1,3}",
            Just("%".to_string()),
            "%[0-9a-fA-FgG]{0,2}",
            prop::sample::select(vec![
                "+", " ", "~", ".", "..", "=", "&", "/", "//", "é", ":", "?", "#"
            ])
            .prop_map(String::from),
        ],
        0..8,
    )
    .prop_map(|p| p.concat())
}

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => "[ -~]{0,16}".prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..16),
    ]
}

/// A request as a client could make it: method, path and query text, extra headers (some
/// signable), a Host and a body.
#[derive(Debug, Clone)]
struct Request {
    method: Method,
    uri: String,
    headers: Vec<(String, Vec<u8>)>,
    host: String,
    body: Vec<u8>,
}

fn request() -> impl Strategy<Value = Request> {
    let method = prop::sample::select(vec![
        Method::GET,
        Method::POST,
        Method::DELETE,
        Method::PUT,
        Method::HEAD,
    ]);
    let name = prop_oneof![
        "x-hyper-[a-z0-9-]{1,8}",
        prop::sample::select(vec!["content-type", "content-md5", "x-other", "accept"])
            .prop_map(String::from),
    ];
    (
        method,
        prop::collection::vec(url_text(), 0..5),
        prop::option::of(prop::collection::vec((url_text(), url_text()), 0..5)),
        prop::collection::vec((name, header_value()), 0..4),
        prop_oneof![
            Just("hyper.example:443".to_string()),
            Just("[::1]:80".to_string()),
            "[a-z0-9.:]{1,20}",
        ],
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(method, segments, query, headers, host, body)| {
            let mut uri = format!("/{}", segments.join("/"));
            if let Some(q) = query {
                let q: Vec<String> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
                uri = format!("{uri}?{}", q.join("&"));
            }
            Request {
                method,
                uri,
                headers,
                host,
                body,
            }
        })
}

fn creds() -> impl Strategy<Value = Credentials> {
    ("[A-Za-z0-9]{1,20}", ".{0,20}", "[a-z0-9-]{1,12}").prop_map(|(a, s, r)| Credentials {
        access_key: a,
        secret_key: s,
        region: r,
    })
}

/// Text shaped like `X-Hyper-Date` values: digits, signs, separators and spaces.
fn date_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9TZ +:.-]{0,20}",
        "[0-9]{8}T[0-9]{6}Z",
        "[ +-]?[0-9]{1,6}[ ]?[0-9]{1,2}[ ]?[0-9]{1,2}T[ ]?[0-9]{1,2}[ ]?[0-9]{1,2}[ ]?[0-9]{1,2}Z",
    ]
}

proptest! {
    /// Decoding undoes encoding, for any bytes and either decoding mode; encoded text holds
    /// only unreserved characters and upper-case escapes.
    #[test]
    fn fuzz_percent_round_trip(bytes in prop::collection::vec(any::<u8>(), 0..64), plus in any::<bool>()) {
        let encoded = encode(&bytes);
        prop_assert_eq!(decode(&encoded, plus), bytes);
        let mut chars = encoded.bytes();
        while let Some(b) = chars.next() {
            if b == b'%' {
                for _ in 0..2 {
                    let h = chars.next().unwrap();
                    prop_assert!(h.is_ascii_digit() || (b'A'..=b'F').contains(&h));
                }
            } else {
                prop_assert!(b.is_ascii_alphanumeric() || b"-_.~".contains(&b));
            }
        }
    }

    /// Canonical forms are fixed points: canonicalising one again changes nothing (a client
    /// and a server that normalise differently would disagree on the signature).
    #[test]
    fn fuzz_canonical_forms(path in url_text(), query in prop::option::of(url_text()), host in ".{0,24}") {
        let p = canonical_path(&path);
        prop_assert_eq!(canonical_path(&p), p.clone());
        prop_assert!(!p.starts_with('/') && !p.contains("//"));
        for sort in [false, true] {
            let q = canonical_query(query.as_deref(), sort);
            prop_assert_eq!(canonical_query(Some(&q), sort), q);
        }
        let h = canonical_host(&host);
        prop_assert!(host.starts_with(h));
    }

    /// A request signed by [`sign`] verifies as its access key once it has gone through the
    /// wire (its URI re-parsed from text), when each signed header has one ASCII value; it is
    /// refused when its body changes. Other headers are refused as malformed, not a panic.
    #[test]
    fn fuzz_sign_then_verify(req in request(), creds in creds()) {
        let Ok(uri) = req.uri.parse::<Uri>() else {
            return Ok(());
        };
        let mut headers = HeaderMap::new();
        let Ok(host) = HeaderValue::from_str(&req.host) else {
            return Ok(());
        };
        headers.insert(HOST, host);
        for (name, value) in &req.headers {
            let Ok(value) = HeaderValue::from_bytes(value) else {
                continue;
            };
            headers.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value);
        }
        sign(&creds, &req.method, &uri, &mut headers, &req.body, now());
        let sent: Uri = uri.to_string().parse().expect("a URI parses from its own text");
        let lookup = |ak: &str| (ak == creds.access_key).then(|| creds.secret_key.clone());
        let got = verify(&req.method, &sent, &headers, &req.body, now(), lookup);
        let signable = |n: &HeaderName| canonical::is_signable(n.as_str());
        let once = headers.keys().filter(|n| signable(n)).all(|n| headers.get_all(n).iter().count() == 1);
        let ascii = headers.keys().filter(|n| signable(n)).all(|n| headers[n].to_str().is_ok());
        if once && ascii {
            prop_assert_eq!(got, Ok(creds.access_key.clone()));
            let mut tampered = req.body.clone();
            tampered.push(b'x');
            prop_assert_eq!(
                verify(&req.method, &sent, &headers, &tampered, now(), lookup),
                Err(AuthError::BodyHashMismatch)
            );
        } else {
            prop_assert!(matches!(got, Err(AuthError::Malformed(_))), "{got:?}");
        }
    }

    /// Whatever `Authorization` and `X-Hyper-Date` hold, verification answers with an error
    /// (never a panic), never accepts an unsigned request, and its message never carries the
    /// secret.
    #[test]
    fn fuzz_verify_headers(
        auth in prop_oneof![
            ".{0,80}",
            "HYPER-HMAC-SHA256 Credential=[a-z/0-9]{0,30}, SignedHeaders=[a-z;-]{0,40}, Signature=[0-9a-f]{60,66}",
        ],
        date in date_text(),
        hash in "[0-9a-f]{0,64}",
    ) {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_static("hyper.example"));
        if let Ok(v) = HeaderValue::from_str(&auth) {
            headers.insert(AUTHORIZATION, v);
        }
        if let Ok(v) = HeaderValue::from_str(&date) {
            headers.insert(HEADER_DATE, v);
        }
        headers.insert(HEADER_CONTENT_SHA256, HeaderValue::from_str(&hash).unwrap());
        let uri: Uri = "/v1.23/info".parse().unwrap();
        let secret = "fuzz-secret-value";
        let got = verify(&Method::GET, &uri, &headers, b"", now(), |_| Some(secret.to_string()));
        let err = got.expect_err("a request nobody signed is refused");
        prop_assert!(!err.to_string().contains(secret));
    }
}
