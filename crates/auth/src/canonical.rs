//! The canonical forms HYPER-HMAC-SHA256 signs: path, query, headers and the request as a whole.
//!
//! These follow the Hyper CLI (a Go client derived from AWS SigV4), which is the client we must
//! stay compatible with:
//! - path: split on `/`, empty segments dropped (so no leading slash), each segment percent-decoded
//!   then re-encoded with the SigV4 unreserved set `A-Z a-z 0-9 - _ . ~`;
//! - query: form-decoded (`+` is a space), re-encoded with the same set (so a space becomes `%20`),
//!   sorted by name; values of a repeated name keep their order (Go's `url.Values.Encode`);
//! - host: a `:80` or `:443` port is dropped.

use http::HeaderMap;

/// The headers a client must sign when they are present (besides every `x-hyper-*`).
const ALWAYS_SIGNED: [&str; 3] = ["content-type", "content-md5", "host"];

/// Whether a (lowercase) header name is one that must be signed when present.
pub(crate) fn is_signable(name: &str) -> bool {
    ALWAYS_SIGNED.contains(&name) || name.starts_with("x-hyper-")
}

/// The sorted, lowercase names of the signable headers present in `headers`.
pub(crate) fn signable_headers(headers: &HeaderMap) -> Vec<String> {
    let mut names: Vec<String> = headers
        .keys()
        .map(|k| k.as_str().to_ascii_lowercase())
        .filter(|k| is_signable(k))
        .collect();
    names.sort();
    names.dedup();
    names
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

/// Percent-encodes every byte outside the SigV4 unreserved set, with upper-case hex.
pub(crate) fn encode(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if is_unreserved(b) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
    out
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes `s`; with `plus_is_space`, `+` decodes to a space (form encoding). An invalid
/// escape is kept literally.
pub(crate) fn decode(s: &str, plus_is_space: bool) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// The canonical URI: no leading slash, no empty segments, each segment re-encoded.
pub(crate) fn canonical_path(path: &str) -> String {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| encode(&decode(s, false)))
        .collect::<Vec<_>>()
        .join("/")
}

/// The canonical query string. With `sort_values`, parameters are sorted by name then value as
/// AWS SigV4 specifies; without, values of a repeated name keep their order (the Hyper CLI).
pub(crate) fn canonical_query(query: Option<&str>, sort_values: bool) -> String {
    let Some(query) = query else {
        return String::new();
    };
    let mut params: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (encode(&decode(k, true)), encode(&decode(v, true)))
        })
        .collect();
    if sort_values {
        params.sort();
    } else {
        // Stable: equal names keep their relative order.
        params.sort_by(|a, b| a.0.cmp(&b.0));
    }
    params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Drops a `:80` or `:443` port from a Host value.
pub(crate) fn canonical_host(host: &str) -> &str {
    for port in [":80", ":443"] {
        if let Some(h) = host.strip_suffix(port) {
            // A bare IPv6 address (no brackets) has no port to drop.
            if !h.is_empty() && (h.ends_with(']') || !h.contains(':')) {
                return h;
            }
        }
    }
    host
}

/// The canonical request, given each signed header's (trimmed) value in `signed` order.
pub(crate) fn canonical_request(
    method: &str,
    path: &str,
    query: &str,
    signed: &[(String, String)],
    payload_hash: &str,
) -> String {
    let mut out = String::new();
    out.push_str(method);
    out.push('\n');
    out.push_str(path);
    out.push('\n');
    out.push_str(query);
    out.push('\n');
    for (name, value) in signed {
        out.push_str(name);
        out.push(':');
        out.push_str(value);
        out.push('\n');
    }
    out.push('\n');
    let names: Vec<&str> = signed.iter().map(|(n, _)| n.as_str()).collect();
    out.push_str(&names.join(";"));
    out.push('\n');
    out.push_str(payload_hash);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let cases = [
            ("/v1.23/containers/json", "v1.23/containers/json"),
            ("//v1.23//containers/", "v1.23/containers"),
            ("/", ""),
            ("", ""),
            ("/a%20b/c d", "a%20b/c%20d"),
            ("/x/%2f", "x/%2F"),
        ];
        for (i, (input, want)) in cases.iter().enumerate() {
            assert_eq!(canonical_path(input), *want, "test[{i}]");
        }
    }

    #[test]
    fn queries() {
        let cases = [
            (None, "", ""),
            (Some(""), "", ""),
            (Some("b=2&a=1"), "a=1&b=2", "a=1&b=2"),
            (Some("q=a+b&r=c%20d"), "q=a%20b&r=c%20d", "q=a%20b&r=c%20d"),
            (Some("all"), "all=", "all="),
            (Some("x=2&x=1"), "x=2&x=1", "x=1&x=2"),
            (
                Some("f=%7B%22a%22%3A1%7D"),
                "f=%7B%22a%22%3A1%7D",
                "f=%7B%22a%22%3A1%7D",
            ),
            (Some("p=%2B&&z="), "p=%2B&z=", "p=%2B&z="),
        ];
        for (i, (input, go, sigv4)) in cases.iter().enumerate() {
            assert_eq!(canonical_query(*input, false), *go, "test[{i}] go");
            assert_eq!(canonical_query(*input, true), *sigv4, "test[{i}] sigv4");
        }
    }

    #[test]
    fn hosts() {
        let cases = [
            ("example.com:443", "example.com"),
            ("example.com:80", "example.com"),
            ("example.com:8443", "example.com:8443"),
            ("127.0.0.1:18443", "127.0.0.1:18443"),
            ("[::1]:443", "[::1]"),
            ("::1:443", "::1:443"),
            ("example.com", "example.com"),
        ];
        for (i, (input, want)) in cases.iter().enumerate() {
            assert_eq!(canonical_host(input), *want, "test[{i}]");
        }
    }

    #[test]
    fn decode_keeps_bad_escapes() {
        assert_eq!(decode("%zz%4", false), b"%zz%4");
        assert_eq!(decode("%41+", false), b"A+");
        assert_eq!(decode("%41+", true), b"A ");
    }
}
