//! Checks `sign` and `verify` against vectors computed by the independent `tests/vectors.py`.

use auth::{sign, verify, Credentials};
use chrono::NaiveDateTime;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize)]
struct Vector {
    name: String,
    access_key: String,
    secret_key: String,
    region: String,
    method: String,
    uri: String,
    headers: BTreeMap<String, String>,
    body: String,
    date: String,
    expect: BTreeMap<String, String>,
}

#[test]
fn python_vectors() {
    let vectors: Vec<Vector> =
        serde_json::from_str(include_str!("vectors.json")).expect("vectors.json parses");
    assert!(vectors.len() >= 6);
    for (i, v) in vectors.iter().enumerate() {
        let creds = Credentials {
            access_key: v.access_key.clone(),
            secret_key: v.secret_key.clone(),
            region: v.region.clone(),
        };
        let method: Method = v.method.parse().unwrap();
        let uri: Uri = v.uri.parse().unwrap();
        let mut headers = HeaderMap::new();
        for (k, val) in &v.headers {
            headers.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(val).unwrap(),
            );
        }
        let now = NaiveDateTime::parse_from_str(&v.date, "%Y%m%dT%H%M%SZ")
            .unwrap()
            .and_utc();
        sign(&creds, &method, &uri, &mut headers, v.body.as_bytes(), now);
        for (k, want) in &v.expect {
            let got = headers.get(k.as_str()).map(|h| h.to_str().unwrap());
            assert_eq!(got, Some(want.as_str()), "test[{i}] {}: header {k}", v.name);
        }
        let later = now + chrono::TimeDelta::seconds(90);
        let ak = verify(&method, &uri, &headers, v.body.as_bytes(), later, |ak| {
            (ak == v.access_key).then(|| v.secret_key.clone())
        });
        assert_eq!(ak, Ok(v.access_key.clone()), "test[{i}] {}: verify", v.name);
    }
}
