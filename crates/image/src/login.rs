//! Checking registry credentials the way `docker login` does, for `POST /auth`, and the token
//! servers of registries (shared with pulls).
//!
//! The registry's base endpoint `GET /v2/` says how it wants to be authenticated:
//! - `200`: no authentication at all; any credentials "succeed" (Docker says the same).
//! - `401` with `WWW-Authenticate: Basic realm=".."`: the same request again with the
//!   credentials in an `Authorization: Basic` header must give `200`.
//! - `401` with `WWW-Authenticate: Bearer realm="https://auth/token",service="registry"`: the
//!   token server at `realm` is asked (`?service=..&account=USER`, credentials in
//!   `Authorization: Basic`) for a token with no scope, which must be granted (`200` with
//!   `{"token"}` or `{"access_token"}`) and then accepted by `GET /v2/`.
//!
//! Anything refused on the way is [`PullError::Unauthorized`]; an unreachable registry or token
//! server is [`PullError::Http`], an address the caller may not reach [`PullError::Refused`]
//! (the realm comes from the registry's answer, so it is checked like the registry itself: every
//! request goes through [`Http`], see [`fetch`](crate::fetch)). Plain HTTP follows the puller's
//! rule (loopback or insecure). Messages quote nothing the servers sent but status codes.

use std::collections::HashMap;

use reqwest::header::WWW_AUTHENTICATE;
use reqwest::StatusCode;

use crate::fetch::{read_capped, Http, NetError, Reach};
use crate::pull::{Credentials, PullError, Puller};

/// Largest token server answer read.
const MAX_TOKEN_ANSWER: usize = 1 << 20;

/// Docker Hub as `docker login` names it, and the host that serves its registry API.
const DOCKER_HUB_NAMES: &[&str] = &[
    "https://index.docker.io/v1/",
    "index.docker.io",
    "docker.io",
    "registry-1.docker.io",
];
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A parsed `WWW-Authenticate` challenge: the scheme (lower case) and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: HashMap<String, String>,
}

/// Parses `Scheme k="v", k2=v2` (quoted values may hold commas and `\"`). `None` for an empty
/// header.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.is_empty() {
        return None;
    }
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ','))
            .collect::<String>()
            .trim()
            .to_ascii_lowercase();
        if key.is_empty() {
            break;
        }
        if chars.next_if_eq(&'=').is_none() {
            params.insert(key, String::new());
            continue;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ','))
                .collect::<String>()
                .trim()
                .to_string();
        }
        params.insert(key, value);
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

/// `host[:port]` of the registry API for what a user gave `login` (a host, or a URL).
pub fn registry_host(server: &str) -> String {
    let s = server.trim();
    if DOCKER_HUB_NAMES.contains(&s) {
        return DOCKER_HUB_API.to_string();
    }
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = s.split('/').next().unwrap_or(s).to_string();
    if DOCKER_HUB_NAMES.contains(&host.as_str()) {
        DOCKER_HUB_API.to_string()
    } else {
        host
    }
}

fn refused(host: &str, why: &str) -> PullError {
    PullError::Unauthorized(format!(
        "login to {host} refused: {why} (unauthorized: incorrect username or password)"
    ))
}

/// A failed exchange as a [`PullError`], `context` saying which.
pub(crate) fn net_error(context: &str) -> impl Fn(NetError) -> PullError + '_ {
    move |e| match e {
        NetError::Blocked(b) => PullError::Refused(format!("{context}: {b}")),
        NetError::Failed(reason) => PullError::Http(format!("{context}: {reason}")),
    }
}

/// Asks the token server of a Bearer `challenge` from `registry` for a token with `scope`
/// (none: a login's check), sending `creds` if there are some. The token server refusing
/// (401, 403) is [`PullError::Unauthorized`] with the status as its message.
pub(crate) async fn fetch_token(
    http: &Http,
    registry: &str,
    challenge: &Challenge,
    scope: Option<&str>,
    creds: Option<&Credentials>,
) -> Result<String, PullError> {
    let realm = challenge
        .params
        .get("realm")
        .filter(|r| r.starts_with("https://") || r.starts_with("http://"))
        .ok_or_else(|| {
            PullError::Unsupported(format!(
                "{registry}: bearer challenge without an HTTP realm"
            ))
        })?;
    let context = format!("reaching the token server of {registry}");
    let net = net_error(&context);
    let mut query = Vec::new();
    if let Some(c) = creds {
        query.push(("account", c.username.as_str()));
    }
    if let Some(s) = challenge.params.get("service") {
        query.push(("service", s));
    }
    if let Some(s) = scope {
        query.push(("scope", s));
    }
    let mut req = http.get(realm).map_err(&net)?.query(&query);
    if let Some(c) = creds {
        req = req.basic_auth(&c.username, Some(&c.password));
    }
    let resp = Http::send(req).await.map_err(&net)?;
    let status = resp.status();
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Err(PullError::Unauthorized(format!(
            "the token server answered {status}"
        )));
    }
    if !status.is_success() {
        return Err(PullError::Registry(format!(
            "the token server of {registry} answered {status}"
        )));
    }
    let no_token =
        || PullError::Unsupported(format!("the token server of {registry} sent no token"));
    let body = read_capped(resp, MAX_TOKEN_ANSWER)
        .await
        .map_err(&net)?
        .ok_or_else(no_token)?;
    let body: serde_json::Value = serde_json::from_slice(&body).map_err(|_| no_token())?;
    body["token"]
        .as_str()
        .or(body["access_token"].as_str())
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .ok_or_else(no_token)
}

impl Puller {
    /// Checks `creds` against the registry named by `server` (see the module docs), connecting
    /// only where `reach` allows.
    pub async fn login(
        &self,
        server: &str,
        creds: &Credentials,
        reach: &Reach,
    ) -> Result<(), PullError> {
        let host = registry_host(server);
        if host.is_empty() {
            return Err(PullError::InvalidReference(format!(
                "invalid registry address {server:?}"
            )));
        }
        let scheme = if self.is_insecure(&host) {
            "http"
        } else {
            "https"
        };
        let base = format!("{scheme}://{host}/v2/");
        let context = format!("reaching the registry at {base}");
        let net = net_error(&context);
        let http = Http::new(reach).map_err(&net)?;
        let ping = Http::send(http.get(&base).map_err(&net)?)
            .await
            .map_err(&net)?;
        let status = ping.status();
        if status.is_success() {
            return Ok(());
        }
        if status != StatusCode::UNAUTHORIZED {
            return Err(PullError::Unsupported(format!(
                "{base} answered {status}: not a registry (v2 API)"
            )));
        }
        let challenge = ping
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|h| h.to_str().ok())
            .and_then(parse_challenge)
            .ok_or_else(|| {
                PullError::Unsupported(format!("{base} answered 401 without a challenge"))
            })?;
        let token = match challenge.scheme.as_str() {
            "basic" => None,
            "bearer" => match fetch_token(&http, &host, &challenge, None, Some(creds)).await {
                Ok(t) => Some(t),
                Err(PullError::Unauthorized(why)) => return Err(refused(&host, &why)),
                Err(e) => return Err(e),
            },
            // The scheme's name is left out: it is text the server chose.
            _ => {
                return Err(PullError::Unsupported(format!(
                    "{host} asks for an authentication scheme hyper does not speak (only Basic and Bearer)"
                )))
            }
        };
        let check = match &token {
            Some(t) => http.get(&base).map_err(&net)?.bearer_auth(t),
            None => http
                .get(&base)
                .map_err(&net)?
                .basic_auth(&creds.username, Some(&creds.password)),
        };
        let status = Http::send(check).await.map_err(&net)?.status();
        match status {
            s if s.is_success() => Ok(()),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(refused(&host, &format!("the registry answered {status}")))
            }
            s => Err(PullError::Unsupported(format!("{base} answered {s}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let p = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let cases = [
            (
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io""#,
                Some((
                    "bearer",
                    p(&[
                        ("realm", "https://auth.docker.io/token"),
                        ("service", "registry.docker.io"),
                    ]),
                )),
            ),
            (
                r#"Basic realm="hyper-test""#,
                Some(("basic", p(&[("realm", "hyper-test")]))),
            ),
            (
                r#"Bearer realm="http://127.0.0.1:1/t", scope="repository:a/b:pull,push",error="insufficient_scope""#,
                Some((
                    "bearer",
                    p(&[
                        ("realm", "http://127.0.0.1:1/t"),
                        ("scope", "repository:a/b:pull,push"),
                        ("error", "insufficient_scope"),
                    ]),
                )),
            ),
            (
                r#"Bearer Realm=http://x/t , service=reg"#,
                Some(("bearer", p(&[("realm", "http://x/t"), ("service", "reg")]))),
            ),
            (
                r#"Basic realm="a \"q\"""#,
                Some(("basic", p(&[("realm", "a \"q\"")]))),
            ),
            ("Negotiate", Some(("negotiate", p(&[])))),
            ("", None),
        ];
        for (i, (h, want)) in cases.into_iter().enumerate() {
            let got = parse_challenge(h).map(|c| (c.scheme, c.params));
            let want = want.map(|(s, p)| (s.to_string(), p));
            assert_eq!(got, want, "test[{i}] {h}");
        }
    }

    #[test]
    fn registry_hosts() {
        let cases = [
            ("https://index.docker.io/v1/", "registry-1.docker.io"),
            ("docker.io", "registry-1.docker.io"),
            ("127.0.0.1:5000", "127.0.0.1:5000"),
            ("http://127.0.0.1:5000/v2/", "127.0.0.1:5000"),
            ("https://reg.example.com", "reg.example.com"),
        ];
        for (i, (s, want)) in cases.iter().enumerate() {
            assert_eq!(registry_host(s), *want, "test[{i}]");
        }
    }
}
