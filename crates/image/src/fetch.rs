//! Every connection hyperd makes to a registry, a token server or an archive URL that a caller
//! named, and downloading an image archive from a URL (Hyper's
//! `POST /images/load {"fromSrc": URL}`).
//!
//! Who the connection is for decides where it may go ([`Reach`], DESIGN, Decided 12):
//! - [`Reach::Tenant`]: only addresses the operator's [`AddressPolicy`] allows (public unicast
//!   plus `--allow-fetch`; never loopback, link-local, private ranges or this node's own
//!   addresses by default). The one HTTP client of this module ([`Http`]) enforces it on every
//!   connection it makes, redirects and token realms included:
//!   - a host name is resolved by the client's own resolver, which checks every address and
//!     hands the connector only checked ones (any refused address refuses the host), so the
//!     connection is pinned to what was checked: there is no second lookup to rebind;
//!   - an IP literal is never resolved, so it is checked before the request ([`Http::get`]) and
//!     at each redirect (the client's redirect policy), up to [`MAX_REDIRECTS`] hops;
//!   - no proxy (a proxy would connect elsewhere for us, past the checks).
//! - [`Reach::Operator`]: the operator acting through hyperd's root-only unix socket: anywhere,
//!   as today (loopback registries of tests and setup scripts); system proxies apply.
//!
//! Errors never carry what answered (a body, a banner, a header's text, a certificate's names):
//! a refusal names the address and the flag that would allow it; any other failure is worded
//! from a fixed set ("connection refused", "timed out", "the server answered 404 Not Found"...).
//! The full error goes to hyperd's log, for the operator.
//!
//! Downloads: only `http://` and `https://` URLs; HTTPS checks the server's certificate
//! (rustls, ring). The body goes to a file the caller names, capped at `max_bytes`; a non-2xx
//! answer, one whose first block is not a tar header (checked as it arrives: the archive
//! reader's errors would quote what answered), a body that stops short of its
//! `Content-Length`, or one over the cap fails the download. The caller loads the file with
//! [`ImageStore::load_archive`](crate::ImageStore::load_archive), which checks every digest as
//! for an uploaded archive.

use std::error::Error as StdError;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;
use tokio::io::AsyncWriteExt;

use crate::policy::{AddressPolicy, Refused};

/// Redirects followed at most in one request (a registry's blob redirect to its storage needs
/// one or two).
pub const MAX_REDIRECTS: usize = 10;

/// Whom a connection is made for, and so where it may go (see the module docs).
#[derive(Debug, Clone)]
pub enum Reach {
    /// The operator, through hyperd's unix socket (root only): anywhere.
    Operator,
    /// A tenant: only what the policy allows, after resolution and at every redirect.
    Tenant(AddressPolicy),
}

/// A connection the policy refused: the host as named (in a URL the caller gave, or a
/// redirect or token realm it led to) and the address refused. Displays as "cannot connect to
/// HOST: refused: address A (range) is not allowed; the operator can allow it with
/// --allow-fetch CIDR".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot connect to {host}: {}", .refused.plain())]
pub struct Blocked {
    pub host: String,
    pub refused: Refused,
}

/// A host name that does not resolve (the resolver's own words are left out).
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve host {0}")]
struct Unresolved(String);

/// A redirect that is not followed (not http(s), too many).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BadRedirect(&'static str);

/// Why an exchange failed, in words that carry nothing the other end sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    /// The policy refused an address on the way.
    #[error(transparent)]
    Blocked(Blocked),
    /// Anything else: connection refused, timed out, TLS failed, not HTTP...
    #[error("{0}")]
    Failed(&'static str),
}

impl NetError {
    /// Sorts a client error, logging the whole of it (for the operator) first. Never shows the
    /// error's own text to the caller: it may quote what answered (a certificate's names, a
    /// redirect's target).
    pub(crate) fn of(e: &reqwest::Error) -> NetError {
        tracing::info!(error = %error_chain(e), "outgoing request failed");
        let mut next: Option<&(dyn StdError + 'static)> = Some(e);
        // The socket's own error, if connecting failed at the TCP level; a connect failure
        // without one is the TLS handshake's.
        let (mut os_error, mut unresolved) = (None, false);
        while let Some(err) = next {
            if let Some(b) = err.downcast_ref::<Blocked>() {
                return NetError::Blocked(b.clone());
            }
            if let Some(b) = err.downcast_ref::<BadRedirect>() {
                return NetError::Failed(b.0);
            }
            unresolved |= err.is::<Unresolved>();
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                if io.raw_os_error().is_some() {
                    os_error = Some(io.kind());
                }
            }
            next = err.source();
        }
        use std::io::ErrorKind as K;
        NetError::Failed(if unresolved || e.is_dns() {
            "the host name does not resolve"
        } else if e.is_timeout() || os_error == Some(K::TimedOut) {
            "timed out"
        } else if e.is_redirect() {
            "too many redirects"
        } else if e.is_connect() {
            match os_error {
                Some(K::ConnectionRefused) => "connection refused",
                Some(K::HostUnreachable | K::NetworkUnreachable) => "no route to the host",
                Some(_) => "could not connect",
                None => {
                    "the TLS handshake failed (not TLS, or a certificate this node does not trust)"
                }
            }
        } else if e.is_body() || e.is_decode() {
            "the transfer broke off"
        } else {
            "the exchange failed (the connection closed, or the server does not speak HTTP)"
        })
    }
}

fn error_chain(e: &dyn StdError) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}

/// The policy's resolver: every address a name resolves to must be allowed, or the name is
/// refused as a whole (a name that also points inside is not a source). Only checked addresses
/// reach the connector, which connects to them and nowhere else.
struct PolicyResolver(AddressPolicy);

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs = resolve_checked(&host, &policy).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

type BoxError = Box<dyn StdError + Send + Sync>;

/// The addresses `host` resolves to (port 0: the connector sets the URL's), each allowed.
async fn resolve_checked(host: &str, policy: &AddressPolicy) -> Result<Vec<SocketAddr>, BoxError> {
    let mut addrs: Vec<SocketAddr> = Vec::new();
    let found = tokio::net::lookup_host((host, 0))
        .await
        .map_err(|_| Unresolved(host.to_string()))?;
    for a in found {
        if !addrs.contains(&a) {
            addrs.push(a);
        }
    }
    if addrs.is_empty() {
        return Err(Unresolved(host.to_string()).into());
    }
    for a in &addrs {
        check_ip(host, a.ip(), policy)?;
    }
    Ok(addrs)
}

fn check_ip(host: &str, ip: IpAddr, policy: &AddressPolicy) -> Result<(), Blocked> {
    policy.check(ip).map_err(|refused| Blocked {
        host: host.to_string(),
        refused,
    })
}

/// Checks `url`'s host when it is an IP literal (a name is checked by the resolver when the
/// connection is made). URL parsing already wrote every IPv4 spelling (`127.1`, `0x7f000001`)
/// as a dotted quad, and IPv6 ones in brackets.
fn check_literal(url: &Url, policy: &AddressPolicy) -> Result<(), Blocked> {
    let host = url.host_str().unwrap_or_default();
    match host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        Ok(ip) => check_ip(host, ip, policy),
        Err(_) => Ok(()),
    }
}

/// The HTTP client of registry pulls, logins and archive downloads, bound to one [`Reach`]:
/// rustls over ring, 30 s to connect, 5 min without data at most, at most [`MAX_REDIRECTS`]
/// redirects. Requests go through [`Http::get`], which checks IP literals; see the module docs
/// for the rest.
pub(crate) struct Http {
    client: reqwest::Client,
    policy: Option<AddressPolicy>,
}

impl Http {
    pub(crate) fn new(reach: &Reach) -> Result<Http, NetError> {
        crate::pull::tls_provider();
        let builder = reqwest::Client::builder()
            .user_agent(concat!("hyperd/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(300));
        let (builder, policy) = match reach {
            Reach::Operator => (
                builder.redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS)),
                None,
            ),
            Reach::Tenant(policy) => {
                let hops = policy.clone();
                let redirect = reqwest::redirect::Policy::custom(move |attempt| {
                    if attempt.previous().len() >= MAX_REDIRECTS {
                        return attempt.error(BadRedirect("too many redirects"));
                    }
                    if !matches!(attempt.url().scheme(), "http" | "https") {
                        return attempt.error(BadRedirect("a redirect leads away from http(s)"));
                    }
                    match check_literal(attempt.url(), &hops) {
                        Ok(()) => attempt.follow(),
                        Err(blocked) => attempt.error(blocked),
                    }
                });
                let builder = builder
                    .no_proxy()
                    .dns_resolver(PolicyResolver(policy.clone()))
                    .redirect(redirect);
                (builder, Some(policy.clone()))
            }
        };
        let client = builder.build().map_err(|e| NetError::of(&e))?;
        Ok(Http { client, policy })
    }

    /// A GET of `url` (`http(s)://` only), refused at once if its host is an address the
    /// policy refuses.
    pub(crate) fn get(&self, url: &str) -> Result<reqwest::RequestBuilder, NetError> {
        self.request(reqwest::Method::GET, url)
    }

    /// A request of any method (a push's HEAD, POST, PUT), checked as [`Http::get`].
    pub(crate) fn request(
        &self,
        method: reqwest::Method,
        url: &str,
    ) -> Result<reqwest::RequestBuilder, NetError> {
        let parsed = Url::parse(url).map_err(|_| NetError::Failed("not a valid URL"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(NetError::Failed(
                "only http:// and https:// URLs are supported",
            ));
        }
        if let Some(policy) = &self.policy {
            check_literal(&parsed, policy).map_err(NetError::Blocked)?;
        }
        Ok(self.client.request(method, parsed))
    }

    /// Sends `req`, sorting a failure into a [`NetError`].
    pub(crate) fn send(
        req: reqwest::RequestBuilder,
    ) -> impl Future<Output = Result<reqwest::Response, NetError>> {
        let sent = req.send();
        async move { sent.await.map_err(|e| NetError::of(&e)) }
    }
}

/// Reads a whole body of at most `max` bytes; `Ok(None)` if it is longer.
pub(crate) async fn read_capped(
    mut resp: reqwest::Response,
    max: usize,
) -> Result<Option<Vec<u8>>, NetError> {
    if resp.content_length().is_some_and(|l| l > max as u64) {
        return Ok(None);
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| NetError::of(&e))? {
        if out.len() + chunk.len() > max {
            return Ok(None);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Some(out))
}

/// Why a download failed. Messages name the URL's host (never its user, password or query)
/// and nothing the server sent but its status.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Not an `http(s)://` URL: the caller's mistake.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// The URL, or a redirect it led to, names an address the operator's policy refuses.
    #[error("fetching from {host}: {blocked}")]
    Refused { host: String, blocked: Blocked },
    /// The server answered, but not with the archive.
    #[error("fetching from {host}: the server answered {status}")]
    Status {
        host: String,
        status: reqwest::StatusCode,
    },
    /// Over the size cap.
    #[error("fetching from {host}: the archive is larger than {max} bytes")]
    TooLarge { host: String, max: u64 },
    /// Fewer bytes than announced.
    #[error("fetching from {host}: truncated download ({got} of {want} bytes)")]
    Truncated { host: String, got: u64, want: u64 },
    /// The answer is not a tar archive. Told by its first block, before the rest is fetched;
    /// nothing of it is kept (the tar reader's errors would quote what answered).
    #[error("fetching from {host}: the answer is not a tar archive (docker save or OCI layout)")]
    NotTar { host: String },
    /// The server could not be reached, or the exchange failed.
    #[error("fetching from {host}: {reason}")]
    Http { host: String, reason: &'static str },
    /// Writing the file failed.
    #[error("writing {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// `host[:port]` of a URL, for messages.
fn shown_host(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

/// A tar header block's size.
const TAR_BLOCK: usize = 512;

/// Whether `block` (512 bytes) is a ustar, pax or GNU tar header: the magic every tool that
/// writes image archives (docker save, skopeo, umoci, GNU and Go tar) puts at offset 257.
fn is_tar_header(block: &[u8]) -> bool {
    block.get(257..262) == Some(b"ustar")
}

/// Downloads `url` into `dest` (created or truncated) for `reach`; returns the bytes written.
/// The answer must be a tar archive (its first block is checked as it arrives).
pub async fn download(
    url: &str,
    dest: &Path,
    max_bytes: u64,
    reach: &Reach,
) -> Result<u64, FetchError> {
    let invalid = |reason: String| FetchError::InvalidUrl {
        url: url.to_string(),
        reason,
    };
    let parsed = Url::parse(url).map_err(|e| invalid(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(
            "only http:// and https:// URLs are supported".into(),
        ));
    }
    if parsed.host_str().unwrap_or_default().is_empty() {
        return Err(invalid("the URL has no host".into()));
    }
    let host = shown_host(&parsed);
    let net = |e: NetError| match e {
        NetError::Blocked(blocked) => FetchError::Refused {
            host: host.clone(),
            blocked,
        },
        NetError::Failed(reason) => FetchError::Http {
            host: host.clone(),
            reason,
        },
    };
    let http = Http::new(reach).map_err(net)?;
    let resp = Http::send(http.get(parsed.as_str()).map_err(net)?)
        .await
        .map_err(net)?;
    if !resp.status().is_success() {
        return Err(FetchError::Status {
            host,
            status: resp.status(),
        });
    }
    let too_large = || FetchError::TooLarge {
        host: host.clone(),
        max: max_bytes,
    };
    let want = resp.content_length();
    if want.is_some_and(|w| w > max_bytes) {
        return Err(too_large());
    }
    let io = |source| FetchError::Io {
        path: dest.display().to_string(),
        source,
    };
    let mut file = tokio::fs::File::create(dest).await.map_err(io)?;
    let mut got = 0u64;
    // The first tar block, until it is judged.
    let mut head: Option<Vec<u8>> = Some(Vec::new());
    let not_tar = || FetchError::NotTar { host: host.clone() };
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| net(NetError::of(&e)))?;
        got += chunk.len() as u64;
        if got > max_bytes {
            return Err(too_large());
        }
        if let Some(h) = head.as_mut() {
            let need = TAR_BLOCK - h.len();
            h.extend_from_slice(&chunk[..chunk.len().min(need)]);
            if h.len() >= TAR_BLOCK {
                if !is_tar_header(h) {
                    return Err(not_tar());
                }
                head = None;
            }
        }
        file.write_all(&chunk).await.map_err(io)?;
    }
    if head.is_some() {
        return Err(not_tar());
    }
    file.flush().await.map_err(io)?;
    if let Some(want) = want.filter(|w| *w != got) {
        return Err(FetchError::Truncated { host, got, want });
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::{http_response, FakeServer, TestDir};

    /// What the tests' servers answer: a banner that must never reach an error message.
    const SECRET: &str = "SECRET-BANNER-7f3a";

    fn tenant(allowed: &[&str]) -> Reach {
        Reach::Tenant(AddressPolicy::new(
            allowed.iter().map(|c| c.parse().unwrap()).collect(),
        ))
    }

    fn secret_server(ip: &str) -> FakeServer {
        FakeServer::start(ip, |_| {
            http_response(
                "500 Internal Server Error",
                &[("Server", SECRET), ("WWW-Authenticate", SECRET)],
                SECRET.as_bytes(),
            )
        })
    }

    fn chain(e: &dyn StdError) -> String {
        error_chain(e)
    }

    #[test]
    fn literal_hosts_are_checked() {
        let policy = AddressPolicy::default();
        // (URL, the range refused, or None when the host is allowed or is a name)
        let cases: &[(&str, Option<&str>)] = &[
            ("http://127.0.0.1:5000/v2/", Some("loopback")),
            ("http://127.1/", Some("loopback")),
            ("http://0x7f000001/", Some("loopback")),
            ("http://2130706433/", Some("loopback")),
            ("https://[::1]:443/", Some("loopback")),
            ("http://[::ffff:127.0.0.1]/", Some("loopback")),
            ("http://[::ffff:a9fe:a9fe]/", Some("link-local")),
            (
                "http://169.254.169.254/latest/meta-data/",
                Some("link-local"),
            ),
            ("http://10.1.2.3/", Some("private")),
            ("http://192.168.0.1/", Some("private")),
            ("http://0.0.0.0:80/", Some("\"this network\", unspecified")),
            ("http://1.1.1.1/", None),
            ("http://registry.example.com/", None),
        ];
        for (i, (url, want)) in cases.iter().enumerate() {
            let got = check_literal(&Url::parse(url).unwrap(), &policy)
                .err()
                .map(|b| b.refused.range);
            assert_eq!(got, *want, "test[{i}] {url}");
        }
    }

    #[tokio::test]
    async fn the_resolver_checks_every_address_of_a_name() {
        let err = resolve_checked("localhost", &AddressPolicy::default())
            .await
            .unwrap_err();
        let blocked = err.downcast_ref::<Blocked>().expect("a refusal");
        assert_eq!(blocked.host, "localhost");
        assert_eq!(blocked.refused.range, "loopback");
        assert!(
            blocked
                .to_string()
                .starts_with("cannot connect to localhost: refused: address ")
                && blocked.to_string().contains(
                    "(loopback) is not allowed; the operator can allow it with --allow-fetch "
                ),
            "{blocked}"
        );
        // Allowed once every address it has is.
        let all = AddressPolicy::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ]);
        let addrs = resolve_checked("localhost", &all).await.unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
        let err = resolve_checked("no-such-host.invalid", &all)
            .await
            .unwrap_err();
        assert!(err.is::<Unresolved>(), "{err}");
    }

    #[tokio::test]
    async fn tenants_never_connect_to_refused_addresses() {
        let banner = secret_server("127.0.0.2");
        let dir = TestDir::new("fetch");
        let dest = dir.0.join("a.tar");
        for (i, url) in [
            format!("{}/a.tar", banner.url()),
            format!("http://127.2:{}/a.tar", banner.addr.port()),
            format!("http://[::ffff:127.0.0.2]:{}/a.tar", banner.addr.port()),
        ]
        .iter()
        .enumerate()
        {
            let e = download(url, &dest, 1 << 20, &tenant(&[]))
                .await
                .unwrap_err();
            assert!(matches!(e, FetchError::Refused { .. }), "test[{i}]: {e:?}");
            let msg = chain(&e);
            assert!(
                msg.contains("refused: address ") && msg.contains("(loopback) is not allowed; the operator can allow it with --allow-fetch 127.0.0.2/32"),
                "test[{i}]: {msg}"
            );
            assert!(!msg.contains(SECRET), "test[{i}]: {msg}");
        }
        let e = download(&banner.url(), &dest, 1 << 20, &tenant(&[]))
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("fetching from 127.0.0.2:{}: cannot connect to 127.0.0.2: refused: address 127.0.0.2 (loopback) is not allowed; the operator can allow it with --allow-fetch 127.0.0.2/32", banner.addr.port())
        );
        // Through a name: refused by the resolver.
        let e = download(
            &format!("http://localhost:{}/", banner.addr.port()),
            &dest,
            1 << 20,
            &tenant(&[]),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, FetchError::Refused { .. }), "{e:?}");
        assert_eq!(banner.hits(), 0, "a refused address was connected to");
        // The operator may.
        let e = download(&banner.url(), &dest, 1 << 20, &Reach::Operator)
            .await
            .unwrap_err();
        assert!(matches!(e, FetchError::Status { .. }), "{e:?}");
        assert_eq!(banner.hits(), 1);
    }

    #[tokio::test]
    async fn redirects_are_checked_at_each_hop() {
        let tar = crate::test_utils::Layer::new()
            .file("a", b"a", 0o644, 0, 0)
            .finish();
        let (inside_tar, outside_tar) = (tar.clone(), tar.clone());
        let inside = FakeServer::start("127.0.0.2", move |_| {
            http_response("200 OK", &[], &inside_tar)
        });
        let port = inside.addr.port();
        let outside = FakeServer::start("127.0.0.3", move |path| {
            let to = match path {
                "/literal" => format!("http://127.0.0.2:{port}/x"),
                "/name" => format!("http://localhost:{port}/x"),
                "/relative" => "/ok".to_string(),
                "/ok" => return http_response("200 OK", &[], &outside_tar),
                "/scheme" => "file:///etc/passwd".to_string(),
                _ => format!("http://127.0.0.3:{port}{path}"),
            };
            http_response("302 Found", &[("Location", &to)], b"")
        });
        let reach = tenant(&["127.0.0.3/32"]);
        let dir = TestDir::new("redirect");
        let dest = dir.0.join("a.tar");
        for path in ["/literal", "/name"] {
            let e = download(&format!("{}{path}", outside.url()), &dest, 1 << 20, &reach)
                .await
                .unwrap_err();
            assert!(matches!(e, FetchError::Refused { .. }), "{path}: {e:?}");
            assert!(
                chain(&e).contains("(loopback) is not allowed"),
                "{path}: {e}"
            );
        }
        assert_eq!(inside.hits(), 0, "a redirect reached a refused address");
        let got = download(
            &format!("{}/relative", outside.url()),
            &dest,
            1 << 20,
            &reach,
        )
        .await
        .unwrap();
        assert_eq!(got, tar.len() as u64);
        // Not followed at all: the redirect is the answer.
        let e = download(&format!("{}/scheme", outside.url()), &dest, 1 << 20, &reach)
            .await
            .unwrap_err();
        assert!(matches!(e, FetchError::Status { .. }), "{e:?}");
        // The operator's requests follow them.
        let got = download(
            &format!("{}/literal", outside.url()),
            &dest,
            1 << 20,
            &Reach::Operator,
        )
        .await
        .unwrap();
        assert_eq!(got, tar.len() as u64);
        assert_eq!(inside.hits(), 1);
    }

    #[tokio::test]
    async fn errors_never_show_what_answered() {
        let http = secret_server("127.0.0.1");
        let banner = FakeServer::start("127.0.0.1", |_| {
            format!("SSH-2.0-{SECRET}\r\n").into_bytes()
        });
        let ok = FakeServer::start("127.0.0.1", |_| {
            http_response("200 OK", &[], SECRET.repeat(100).as_bytes())
        });
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let reach = tenant(&["127.0.0.1/32"]);
        let dir = TestDir::new("secret");
        let dest = dir.0.join("a.tar");
        // (URL, what the message must say)
        let cases = [
            (
                format!("{}/x", http.url()),
                "the server answered 500 Internal Server Error",
            ),
            (format!("{}/x", banner.url()), "the exchange failed"),
            (format!("{}/x", ok.url()), "is not a tar archive"),
            (format!("http://{closed}/x"), "connection refused"),
            (format!("https://{}/x", http.addr), "TLS handshake failed"),
        ];
        for (i, (url, want)) in cases.iter().enumerate() {
            let e = download(url, &dest, 1 << 20, &reach).await.unwrap_err();
            let msg = chain(&e);
            assert!(msg.contains(want), "test[{i}]: {msg}");
            assert!(!msg.contains(SECRET), "test[{i}]: {msg}");
        }
    }
}
