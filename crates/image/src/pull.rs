//! Pulling images from registries through the OCI distribution API.
//!
//! A pull has two steps, so an API can answer with a status code before it starts streaming:
//! - [`Puller::resolve`] parses the reference the way Docker does (`busybox` is
//!   `docker.io/library/busybox:latest`), authenticates (anonymous, basic, or the bearer-token
//!   flow a `WWW-Authenticate: Bearer realm=..,service=..` challenge of `GET /v2/` asks for,
//!   with the pull scope of the repository; a token that expires mid-pull is asked for again),
//!   fetches the manifest (an OCI or Docker v2 schema 2 manifest, or an index / manifest list
//!   from which linux/amd64 is picked) and the config blob, each checked against its digest.
//!   Unknown repository or tag and wrong credentials are told apart here.
//! - [`Puller::fetch`] downloads the layers the store lacks (three at a time), reporting
//!   progress as it goes. Every blob goes to a temp file while being hashed; only a blob whose
//!   sha256 is the digest that named it is decompressed (gzip, zstd or plain), checked for entries
//!   escaping the root, and renamed into the layer store under its diff ID, which must be the
//!   config's. A failed or interrupted pull leaves nothing behind but the layers it completed,
//!   so a retry resumes from them. Pulls of images sharing a layer fetch it once: a per-layer
//!   lock makes the second wait for the first and then find the layer stored.
//!
//! Every request (registry, token server, the storage a blob GET redirects to) goes through the
//! [`Reach`] of the caller (see [`fetch`](crate::fetch)): for a tenant, only to addresses the
//! operator's policy allows, checked after resolution and at each redirect. That is why the
//! protocol is spoken here over that one client rather than through oci-client, whose HTTP
//! client takes no resolver or redirect policy from outside (its `Reference` parsing is kept).
//! Errors quote nothing a registry sent but status codes and the distribution spec's error
//! codes.
//!
//! Plain HTTP is used only for registries on loopback or listed as insecure
//! ([`Puller::set_insecure`]); everything else is HTTPS (rustls with the ring provider).
//! Insecure means plain HTTP, nothing more: it does not exempt an address from the policy.
//!
//! The puller knows nothing of tenants: the caller records which tenant pulled what, and says
//! whom each pull is for. Each pull uses its own client, so one caller's credentials or tokens
//! never serve another's pull.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex, Once, RwLock};

use futures_util::{StreamExt, TryStreamExt};
use oci_client::Reference;
use reqwest::header::{ACCEPT, WWW_AUTHENTICATE};
use reqwest::StatusCode;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc::UnboundedSender;

use crate::archive::check_digest;
use crate::error::{ImageError, IoContext};
use crate::fetch::{read_capped, Http, NetError, Reach};
use crate::login::{fetch_token, net_error, parse_challenge, Challenge};
use crate::{full_hex, layer, ImageInfo, ImageStore};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const ACCEPT_MEDIA_TYPES: &[&str] = &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// Largest manifest or config blob accepted.
const MAX_JSON_BLOB: usize = 16 << 20;
/// Layers downloaded at once by one pull (Docker's default).
const PARALLEL_LAYERS: usize = 3;
/// A "Downloading" progress message at most every this many bytes.
const PROGRESS_STEP: u64 = 512 << 10;

/// Registry credentials.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({})", self.username)
    }
}

/// Why a pull failed. The first three are the caller's to fix (400, 404, 401); so is
/// [`PullError::Refused`] (403). No variant carries text a registry or token server sent
/// beyond status codes and the distribution spec's error codes.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("invalid reference format: {0}")]
    InvalidReference(String),
    /// Unknown repository or tag.
    #[error("{0}")]
    NotFound(String),
    /// The registry refused the credentials (or their absence).
    #[error("{0}")]
    Unauthorized(String),
    /// The registry answered something we cannot use (schema 1, no linux/amd64...).
    #[error("{0}")]
    Unsupported(String),
    /// The registry, its token server or a redirect led to an address the caller may not
    /// reach: "... cannot connect to HOST: refused: address A (range) is not allowed; the
    /// operator can allow it with --allow-fetch CIDR".
    #[error("{0}")]
    Refused(String),
    /// The registry answered with a failure.
    #[error("{0}")]
    Registry(String),
    /// The registry or token server could not be reached, or the exchange broke off.
    #[error("{0}")]
    Http(String),
    /// A blob failed a check, or the store failed.
    #[error(transparent)]
    Image(#[from] ImageError),
}

/// One progress event, shaped like Docker's JSON progress messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The layer (12 hex digits of its digest), or the tag for the opening line; `None` for
    /// image-wide lines.
    pub id: Option<String>,
    pub status: String,
    /// Bytes so far and in all, for "Downloading".
    pub current: Option<u64>,
    pub total: Option<u64>,
}

impl Progress {
    fn layer(id: &str, status: &str) -> Progress {
        Progress {
            id: Some(id.to_string()),
            status: status.to_string(),
            current: None,
            total: None,
        }
    }
}

/// A descriptor in a manifest.
#[derive(Debug, Clone, Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: i64,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
}

#[derive(Debug, Deserialize)]
struct ManifestDoc {
    #[serde(rename = "schemaVersion", default)]
    schema_version: Option<i64>,
    #[serde(rename = "mediaType", default)]
    media_type: String,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

/// An image whose manifest and config were fetched and checked; [`Puller::fetch`] gets the rest.
pub struct Resolved {
    session: Session,
    reference: Reference,
    layers: Vec<Descriptor>,
    diff_ids: Vec<String>,
    /// The config blob; `None` for an image the store already held, whose config was not
    /// fetched.
    config: Option<Vec<u8>>,
    /// `registry/repository` as written by the user's registry (`docker.io/library/busybox`).
    pub name: String,
    /// The tag pulled, if the reference named one rather than a digest.
    pub tag: Option<String>,
    /// The digest of the manifest (or index) the reference points at.
    pub manifest_digest: String,
    /// `sha256:<hex>` of the config: the image ID.
    pub image_id: String,
    /// Whether the store already holds this image (all layers and its record).
    pub present: bool,
}

/// Pulls images into an [`ImageStore`]. Share one per node.
pub struct Puller {
    store: Arc<ImageStore>,
    insecure: RwLock<Vec<String>>,
    /// One lock per layer being fetched, by diff ID.
    inflight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// rustls needs a process-wide crypto provider: ring (aws-lc-rs is a large C build). Called
/// before any client is built; public for programs that build their own oci-client.
pub fn tls_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Whether `registry` (`host[:port]`) is on this machine.
fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry.rsplit_once(':').map_or(registry, |(h, _)| h)
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

pub(crate) fn short(digest: &str) -> String {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    hex.chars().take(12).collect()
}

/// Parses a reference as Docker does; a tag or digest given apart (`fromImage` + `tag` of the
/// API) is joined to it.
pub fn parse_reference(image: &str, tag: Option<&str>) -> Result<Reference, PullError> {
    let full = match tag.filter(|t| !t.is_empty()) {
        Some(t) if t.contains(':') => format!("{image}@{t}"),
        Some(t) => format!("{image}:{t}"),
        None => image.to_string(),
    };
    Reference::from_str(&full).map_err(|e| PullError::InvalidReference(format!("{full}: {e}")))
}

impl Puller {
    pub fn new(store: Arc<ImageStore>) -> Puller {
        Puller {
            store,
            insecure: RwLock::new(Vec::new()),
            inflight: Mutex::new(HashMap::new()),
        }
    }

    pub fn store(&self) -> &Arc<ImageStore> {
        &self.store
    }

    /// Registries (`host:port`) reached over plain HTTP besides loopback ones.
    pub fn set_insecure(&self, registries: Vec<String>) {
        *self.insecure.write().unwrap_or_else(|e| e.into_inner()) = registries;
    }

    pub(crate) fn is_insecure(&self, registry: &str) -> bool {
        is_loopback(registry)
            || self
                .insecure
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .any(|r| r == registry)
    }

    /// Fetches and checks the manifest and config of `reference` with `creds`, connecting only
    /// where `reach` allows.
    pub async fn resolve(
        &self,
        reference: Reference,
        creds: Option<&Credentials>,
        reach: &Reach,
    ) -> Result<Resolved, PullError> {
        let name = format!("{}/{}", reference.registry(), reference.repository());
        let shown = reference.whole();
        let session = Session::open(self, &reference, creds, reach, &shown, Access::Pull).await?;

        let top = reference
            .digest()
            .or(reference.tag())
            .unwrap_or("latest")
            .to_string();
        let (raw, manifest_digest) = session.manifest(&top, &shown).await?;
        if let Some(d) = reference.digest() {
            check_digest(&raw, d, "manifest")?;
        }
        let mut doc = parse_manifest(&raw, &manifest_digest)?;
        let mut depth = 0;
        while let Some(list) = doc.manifests.take() {
            depth += 1;
            if depth > 3 {
                return Err(PullError::Unsupported(format!(
                    "{shown}: indexes nested too deep"
                )));
            }
            let pick = list
                .iter()
                .find(|d| {
                    d.platform
                        .as_ref()
                        .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
                })
                .or_else(|| list.iter().find(|d| d.platform.is_none()))
                .ok_or_else(|| {
                    PullError::Unsupported(format!(
                        "no matching manifest for linux/amd64 in the manifest list entries of {shown}"
                    ))
                })?;
            if full_hex(&pick.digest).is_none() {
                return Err(PullError::Unsupported(format!(
                    "{shown}: the index names a manifest by a digest that is not sha256"
                )));
            }
            let (raw, digest) = session.manifest(&pick.digest, &shown).await?;
            check_digest(&raw, &pick.digest, "manifest")?;
            doc = parse_manifest(&raw, &digest)?;
        }
        if doc.schema_version == Some(1)
            || doc
                .media_type
                .starts_with("application/vnd.docker.distribution.manifest.v1")
        {
            return Err(PullError::Unsupported(format!(
                "{shown}: Docker image manifest schema 1 is not supported (push the image again with a current tool)"
            )));
        }
        let (Some(config_desc), Some(layers)) = (doc.config, doc.layers) else {
            return Err(PullError::Unsupported(format!(
                "{shown}: the manifest has no config or no layers"
            )));
        };
        if config_desc.size < 0
            || config_desc.size as usize > MAX_JSON_BLOB
            || full_hex(&config_desc.digest).is_none()
        {
            return Err(PullError::Unsupported(format!(
                "{shown}: a config blob of {} bytes, or whose digest is not sha256",
                config_desc.size
            )));
        }
        for l in &layers {
            if full_hex(&l.digest).is_none() {
                return Err(PullError::Unsupported(format!(
                    "{shown}: the manifest names a layer by a digest that is not sha256"
                )));
            }
        }
        // An image the store holds whole (the config's digest is its ID) needs no blob at all:
        // Docker does not fetch anything of an image it has either.
        if let Some(info) = self.stored(&config_desc.digest, layers.len()) {
            return Ok(Resolved {
                session,
                tag: reference
                    .tag()
                    .map(str::to_string)
                    .filter(|_| reference.digest().is_none()),
                reference,
                layers,
                diff_ids: info.layers,
                config: None,
                name,
                manifest_digest,
                image_id: info.id,
                present: true,
            });
        }
        let resp = session.blob(&config_desc.digest, &shown, "config").await?;
        let config = read_capped(resp, MAX_JSON_BLOB)
            .await
            .map_err(net_error(&format!("fetching the config of {shown}")))?
            .ok_or_else(|| {
                PullError::Unsupported(format!(
                    "{shown}: the config blob is larger than {MAX_JSON_BLOB} bytes"
                ))
            })?;
        check_digest(&config, &config_desc.digest, "config")?;
        // The parser's own message may quote the blob: left out.
        let value: serde_json::Value = serde_json::from_slice(&config)
            .map_err(|_| PullError::Unsupported(format!("{shown}: the config blob is not JSON")))?;
        let diff_ids: Vec<String> = value
            .pointer("/rootfs/diff_ids")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|d| d.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if diff_ids.len() != layers.len() || diff_ids.iter().any(|d| full_hex(d).is_none()) {
            return Err(ImageError::BadArchive(format!(
                "{shown}: the manifest lists {} layers but the config {} valid diff IDs",
                layers.len(),
                diff_ids.len()
            ))
            .into());
        }
        let image_id = crate::archive::sha256_digest(&config);
        let present = self.store.get(&image_id).is_ok()
            && diff_ids.iter().all(|d| self.store.layer_path(d).exists());
        Ok(Resolved {
            session,
            tag: reference
                .tag()
                .map(str::to_string)
                .filter(|_| reference.digest().is_none()),
            reference,
            layers,
            diff_ids,
            config: Some(config),
            name,
            manifest_digest,
            image_id,
            present,
        })
    }

    /// The stored image whose config has `digest`, if the store holds it whole with
    /// `layers` layers.
    fn stored(&self, digest: &str, layers: usize) -> Option<ImageInfo> {
        let info = self.store.get(digest).ok()?;
        (info.id == digest
            && info.layers.len() == layers
            && info
                .layers
                .iter()
                .all(|d| self.store.layer_path(d).exists()))
        .then_some(info)
    }

    /// Downloads the missing layers of `r` and records the image (with `repo_tags`) in the store.
    pub async fn fetch(
        &self,
        r: &Resolved,
        repo_tags: Vec<String>,
        progress: &UnboundedSender<Progress>,
    ) -> Result<ImageInfo, PullError> {
        let send = |p: Progress| {
            let _ = progress.send(p);
        };
        let opening = r.tag.clone().unwrap_or_else(|| r.manifest_digest.clone());
        send(Progress {
            id: Some(opening),
            status: format!("Pulling from {}", r.reference.repository()),
            current: None,
            total: None,
        });
        let mut todo = Vec::new();
        for (desc, diff_id) in r.layers.iter().zip(&r.diff_ids) {
            let id = short(&desc.digest);
            if self.store.layer_path(diff_id).exists() {
                if !r.present {
                    send(Progress::layer(&id, "Already exists"));
                }
            } else {
                send(Progress::layer(&id, "Pulling fs layer"));
                todo.push((desc.clone(), diff_id.clone()));
            }
        }
        futures_util::stream::iter(todo)
            // Owned items: borrowed ones make this future not `Send` for a spawned task
            // (rust-lang/rust#102211).
            .map(|(desc, diff_id): (Descriptor, String)| async move {
                self.fetch_layer(r, &desc, &diff_id, progress).await
            })
            .buffer_unordered(PARALLEL_LAYERS)
            .try_collect::<Vec<()>>()
            .await?;

        let store = self.store.clone();
        let config = r.config.clone();
        let diff_ids = r.diff_ids.clone();
        let id = r.image_id.clone();
        tokio::task::spawn_blocking(move || match config {
            Some(config) => store.add_pulled(&config, &diff_ids, repo_tags),
            None => store.get(&id),
        })
        .await
        .map_err(|e| ImageError::BadArchive(format!("commit task: {e}")))?
        .map_err(PullError::from)
    }

    fn lock_for(&self, diff_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(diff_id.to_string()).or_default().clone()
    }

    fn unlock(&self, diff_id: &str, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut m = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        // Ours plus the map's: nobody else waits.
        if Arc::strong_count(&lock) <= 2 {
            m.remove(diff_id);
        }
    }

    async fn fetch_layer(
        &self,
        r: &Resolved,
        desc: &Descriptor,
        diff_id: &str,
        progress: &UnboundedSender<Progress>,
    ) -> Result<(), PullError> {
        let lock = self.lock_for(diff_id);
        let result = {
            let _held = lock.lock().await;
            self.fetch_layer_locked(r, desc, diff_id, progress).await
        };
        self.unlock(diff_id, lock);
        result
    }

    async fn fetch_layer_locked(
        &self,
        r: &Resolved,
        desc: &Descriptor,
        diff_id: &str,
        progress: &UnboundedSender<Progress>,
    ) -> Result<(), PullError> {
        let id = short(&desc.digest);
        let send = |p: Progress| {
            let _ = progress.send(p);
        };
        if self.store.layer_path(diff_id).exists() {
            // Another pull fetched it while we waited.
            send(Progress::layer(&id, "Download complete"));
            send(Progress::layer(&id, "Pull complete"));
            return Ok(());
        }
        let shown = r.reference.whole();
        let resp = r.session.blob(&desc.digest, &shown, "layer").await?;
        let total = if desc.size > 0 {
            Some(desc.size as u64)
        } else {
            resp.content_length()
        };
        let mut stream = resp.bytes_stream();
        let tmp = self.store.temp("blob");
        let mut file = tokio::fs::File::create(tmp.path())
            .await
            .ctx(|| format!("creating {}", tmp.path().display()))?;
        let mut hash = Sha256::new();
        let mut got = 0u64;
        let mut reported = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ImageError::BadLayer {
                layer: desc.digest.clone(),
                reason: format!("download failed after {got} bytes: {}", NetError::of(&e)),
            })?;
            hash.update(&chunk);
            file.write_all(&chunk)
                .await
                .ctx(|| format!("writing {}", tmp.path().display()))?;
            got += chunk.len() as u64;
            if total.is_some_and(|t| got > t) {
                return Err(ImageError::BadLayer {
                    layer: desc.digest.clone(),
                    reason: format!(
                        "the registry sent more than the {} bytes announced",
                        total.unwrap_or(0)
                    ),
                }
                .into());
            }
            if got - reported >= PROGRESS_STEP || Some(got) == total {
                reported = got;
                send(Progress {
                    id: Some(id.clone()),
                    status: "Downloading".into(),
                    current: Some(got),
                    total,
                });
            }
        }
        file.sync_all()
            .await
            .ctx(|| format!("writing {}", tmp.path().display()))?;
        drop(file);
        if let Some(t) = total.filter(|t| got != *t) {
            return Err(ImageError::BadLayer {
                layer: desc.digest.clone(),
                reason: format!("truncated download: {got} of {t} bytes"),
            }
            .into());
        }
        send(Progress::layer(&id, "Verifying Checksum"));
        let actual = format!("sha256:{}", hex::encode(hash.finalize()));
        if actual != desc.digest {
            return Err(ImageError::DigestMismatch {
                what: "layer",
                digest: desc.digest.clone(),
                actual,
            }
            .into());
        }
        send(Progress::layer(&id, "Download complete"));
        send(Progress::layer(&id, "Extracting"));
        let store = self.store.clone();
        let digest = desc.digest.clone();
        let diff_id = diff_id.to_string();
        tracing::debug!(layer = %digest, media_type = %desc.media_type, "ingesting");
        tokio::task::spawn_blocking(move || store.store_layer(tmp, &digest, &diff_id))
            .await
            .map_err(|e| ImageError::BadArchive(format!("ingest task: {e}")))??;
        send(Progress::layer(&id, "Pull complete"));
        Ok(())
    }
}

/// The credentials in Docker's `X-Registry-Auth` header: base64url (or standard base64) of
/// `{"username","password"}` or of `{"auth": base64("user:password")}`; `None` when empty.
pub fn decode_registry_auth(header: &str) -> Option<Credentials> {
    use base64::Engine;
    let header = header.trim();
    if header.is_empty() {
        return None;
    }
    let engines = [
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::STANDARD_NO_PAD,
    ];
    let raw = engines.iter().find_map(|e| e.decode(header).ok())?;
    let v: serde_json::Value = serde_json::from_slice(&raw).ok()?;
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    let (mut username, mut password) = (field("username"), field("password"));
    if username.is_empty() {
        let auth = field("auth");
        let decoded = engines.iter().find_map(|e| e.decode(&auth).ok())?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (u, p) = decoded.split_once(':')?;
        (username, password) = (u.to_string(), p.to_string());
    }
    (!username.is_empty()).then_some(Credentials { username, password })
}

fn parse_manifest(raw: &[u8], digest: &str) -> Result<ManifestDoc, PullError> {
    if raw.len() > MAX_JSON_BLOB {
        return Err(PullError::Unsupported(format!(
            "manifest {digest} is {} bytes",
            raw.len()
        )));
    }
    // The parser's own message may quote the manifest (an unexpected value): left out.
    serde_json::from_slice(raw).map_err(|_| {
        PullError::Unsupported(format!(
            "manifest {digest} is not an image manifest or index (JSON)"
        ))
    })
}

/// The error codes of the distribution spec (and Docker's registry): the only part of an
/// error answer shown, lower case with spaces ("manifest unknown").
const ERROR_CODES: &[&str] = &[
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "MANIFEST_UNVERIFIED",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "TAG_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
    "TOOMANYREQUESTS",
];

/// Largest error answer read for its codes.
pub(crate) const MAX_ERROR_ANSWER: usize = 64 << 10;

/// The known error codes of an error answer's `{"errors": [{"code": ..}]}`.
pub(crate) fn error_codes(body: &[u8]) -> Vec<&'static str> {
    #[derive(Deserialize)]
    struct Envelope {
        #[serde(default)]
        errors: Vec<Entry>,
    }
    #[derive(Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
    }
    let Ok(env) = serde_json::from_slice::<Envelope>(body) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in env.errors {
        if let Some(c) = ERROR_CODES.iter().find(|c| c.eq_ignore_ascii_case(&e.code)) {
            if !out.contains(c) {
                out.push(*c);
            }
        }
    }
    out
}

pub(crate) fn code_words(code: &str) -> String {
    code.to_ascii_lowercase().replace('_', " ")
}

/// Sorts a registry's failure answer to a request for the `what` ("manifest", "config",
/// "layer") of `shown` into not found, unauthorized, or a plain failure.
async fn answered(resp: reqwest::Response, shown: &str, what: &str) -> PullError {
    let status = resp.status();
    let body = read_capped(resp, MAX_ERROR_ANSWER)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    let codes = error_codes(&body);
    let detail = if codes.is_empty() {
        format!("the registry answered {status}")
    } else {
        codes
            .iter()
            .map(|c| code_words(c))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let unauthorized = status == StatusCode::UNAUTHORIZED
        || status == StatusCode::FORBIDDEN
        || codes
            .iter()
            .any(|c| matches!(*c, "UNAUTHORIZED" | "DENIED"));
    let not_found = status == StatusCode::NOT_FOUND
        || codes
            .iter()
            .any(|c| matches!(*c, "MANIFEST_UNKNOWN" | "NAME_UNKNOWN"));
    if unauthorized {
        PullError::Unauthorized(format!("pull access denied for {shown}: {detail}"))
    } else if not_found && what == "manifest" {
        PullError::NotFound(format!("manifest for {shown} not found: {detail}"))
    } else {
        PullError::Registry(format!("fetching the {what} of {shown}: {detail}"))
    }
}

/// What a session may do in its repository: the scope of the tokens it asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Pull,
    Push,
}

impl Access {
    fn scope(self) -> &'static str {
        match self {
            Access::Pull => "pull",
            Access::Push => "pull,push",
        }
    }

    pub(crate) fn verb(self) -> &'static str {
        match self {
            Access::Pull => "pull",
            Access::Push => "push",
        }
    }

    fn doing(self) -> &'static str {
        match self {
            Access::Pull => "pulling",
            Access::Push => "pushing",
        }
    }
}

/// How requests to the registry are authorized.
#[derive(Clone)]
pub(crate) enum Auth {
    None,
    Basic(Credentials),
    Bearer(String),
}

/// One repository of one registry as one caller reaches it: the caller's HTTP client, the
/// registry's base URL and the authorization it asked for.
pub(crate) struct Session {
    pub(crate) http: Http,
    /// `http(s)://host[:port]/v2/`.
    pub(crate) base: String,
    /// `host[:port]` of the registry's API.
    registry: String,
    pub(crate) repository: String,
    access: Access,
    creds: Option<Credentials>,
    /// The Bearer challenge, kept to ask for a new token when one expires mid-pull.
    challenge: Option<Challenge>,
    pub(crate) auth: RwLock<Auth>,
}

impl Session {
    /// Pings the registry (`GET /v2/`) and authorizes as its challenge asks.
    pub(crate) async fn open(
        puller: &Puller,
        reference: &Reference,
        creds: Option<&Credentials>,
        reach: &Reach,
        shown: &str,
        access: Access,
    ) -> Result<Session, PullError> {
        let registry = reference.resolve_registry().to_string();
        let scheme = if puller.is_insecure(&registry) {
            "http"
        } else {
            "https"
        };
        let base = format!("{scheme}://{registry}/v2/");
        let context = format!(
            "{} {shown}: reaching the registry {registry}",
            access.doing()
        );
        let net = net_error(&context);
        let http = Http::new(reach).map_err(&net)?;
        let ping = Http::send(http.get(&base).map_err(&net)?)
            .await
            .map_err(&net)?;
        let creds = creds.filter(|c| !c.username.is_empty()).cloned();
        let challenge = (ping.status() == StatusCode::UNAUTHORIZED)
            .then(|| {
                ping.headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|h| h.to_str().ok())
                    .and_then(parse_challenge)
            })
            .flatten();
        drop(ping);
        let mut session = Session {
            http,
            base,
            registry,
            repository: reference.repository().to_string(),
            access,
            creds,
            challenge: None,
            auth: RwLock::new(Auth::None),
        };
        // Anything but 401 (200, or a failure): go on without authorization; the manifest's
        // answer tells.
        let auth = match challenge {
            Some(c) if c.scheme == "bearer" => {
                session.challenge = Some(c);
                Auth::Bearer(session.token(shown).await?)
            }
            _ => match &session.creds {
                Some(c) => Auth::Basic(c.clone()),
                None => Auth::None,
            },
        };
        *session.auth.write().unwrap_or_else(|e| e.into_inner()) = auth;
        Ok(session)
    }

    /// A token for the session's access to the repository, from the token server of the
    /// challenge.
    pub(crate) async fn token(&self, shown: &str) -> Result<String, PullError> {
        let challenge = self.challenge.as_ref().expect("a bearer challenge");
        let scope = format!("repository:{}:{}", self.repository, self.access.scope());
        fetch_token(
            &self.http,
            &self.registry,
            challenge,
            Some(&scope),
            self.creds.as_ref(),
        )
        .await
        .map_err(|e| match e {
            PullError::Unauthorized(why) => PullError::Unauthorized(format!(
                "{} access denied for {shown}: {why}",
                self.access.verb()
            )),
            other => other,
        })
    }

    /// GETs `path` below the repository with the session's authorization; a 401 to a bearer
    /// token asks for a new token (it may have expired) and tries once more.
    async fn get(
        &self,
        path: &str,
        accept: Option<&str>,
        shown: &str,
        what: &str,
    ) -> Result<reqwest::Response, PullError> {
        let url = format!("{}{}/{path}", self.base, self.repository);
        let context = format!("fetching the {what} of {shown}");
        let net = net_error(&context);
        let mut retried = false;
        loop {
            let mut req = self.http.get(&url).map_err(&net)?;
            if let Some(a) = accept {
                req = req.header(ACCEPT, a);
            }
            let auth = self.auth.read().unwrap_or_else(|e| e.into_inner()).clone();
            req = match &auth {
                Auth::None => req,
                Auth::Basic(c) => req.basic_auth(&c.username, Some(&c.password)),
                Auth::Bearer(t) => req.bearer_auth(t),
            };
            let resp = Http::send(req).await.map_err(&net)?;
            if resp.status() == StatusCode::UNAUTHORIZED
                && matches!(auth, Auth::Bearer(_))
                && !retried
            {
                retried = true;
                let token = self.token(shown).await?;
                *self.auth.write().unwrap_or_else(|e| e.into_inner()) = Auth::Bearer(token);
                continue;
            }
            return Ok(resp);
        }
    }

    /// The manifest `reference` (a tag or digest) names, and its digest.
    async fn manifest(&self, reference: &str, shown: &str) -> Result<(Vec<u8>, String), PullError> {
        let accept = ACCEPT_MEDIA_TYPES.join(", ");
        let path = format!("manifests/{reference}");
        let resp = self.get(&path, Some(&accept), shown, "manifest").await?;
        if !resp.status().is_success() {
            return Err(answered(resp, shown, "manifest").await);
        }
        let raw = read_capped(resp, MAX_JSON_BLOB)
            .await
            .map_err(net_error(&format!("fetching the manifest of {shown}")))?
            .ok_or_else(|| {
                PullError::Unsupported(format!(
                    "{shown}: the manifest is larger than {MAX_JSON_BLOB} bytes"
                ))
            })?;
        let digest = crate::archive::sha256_digest(&raw);
        Ok((raw, digest))
    }

    /// The successful answer to a GET of the blob `digest` (redirects followed, each hop
    /// checked as the first).
    async fn blob(
        &self,
        digest: &str,
        shown: &str,
        what: &str,
    ) -> Result<reqwest::Response, PullError> {
        let resp = self
            .get(&format!("blobs/{digest}"), None, shown, what)
            .await?;
        if !resp.status().is_success() {
            return Err(answered(resp, shown, what).await);
        }
        Ok(resp)
    }
}

impl ImageStore {
    /// Ingests a downloaded, digest-checked blob as the layer `diff_id`.
    fn store_layer(&self, blob: crate::TempPath, digest: &str, diff_id: &str) -> crate::Result<()> {
        let dest = self.temp("layer");
        let got = layer::ingest(blob.path(), dest.path(), digest)?;
        drop(blob);
        if got.diff_id != diff_id {
            return Err(ImageError::DigestMismatch {
                what: "layer (uncompressed)",
                digest: diff_id.to_string(),
                actual: got.diff_id,
            });
        }
        let _guard = self.meta.lock().unwrap_or_else(|e| e.into_inner());
        let path = self.layer_path(diff_id);
        if !path.exists() {
            std::fs::rename(dest.path(), &path).ctx(|| format!("storing layer {diff_id}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::AddressPolicy;
    use crate::test_utils::{self, http_response, FakeServer, TestDir};

    /// What the tests' servers answer: text that must never reach an error message.
    const SECRET: &str = "SECRET-BANNER-91c2";

    fn tenant(allowed: &[&str]) -> Reach {
        Reach::Tenant(AddressPolicy::new(
            allowed.iter().map(|c| c.parse().unwrap()).collect(),
        ))
    }

    fn puller(dir: &TestDir) -> Puller {
        Puller::new(Arc::new(ImageStore::open(dir.0.join("images")).unwrap()))
    }

    async fn resolve(p: &Puller, image: &str, reach: &Reach) -> Result<Resolved, PullError> {
        p.resolve(parse_reference(image, None).unwrap(), None, reach)
            .await
    }

    fn chain(e: &dyn std::error::Error) -> String {
        let mut out = e.to_string();
        let mut next = e.source();
        while let Some(s) = next {
            out = format!("{out}: {s}");
            next = s.source();
        }
        out
    }

    /// A registry on 127.0.0.1 whose `x:v1` has a config blob served by a redirect to
    /// `storage` (another address), and whose token realm, if `realm` is given, is there.
    fn registry(storage: String, realm: Option<String>, config: Vec<u8>) -> FakeServer {
        let layer = test_utils::digest(b"layer");
        let cfg_digest = test_utils::digest(&config);
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": cfg_digest, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer, "size": 5}],
        })
        .to_string();
        FakeServer::start("127.0.0.1", move |path| match (path, &realm) {
            ("/v2/", Some(realm)) => http_response(
                "401 Unauthorized",
                &[(
                    "WWW-Authenticate",
                    &format!("Bearer realm=\"{realm}\",service=\"fake\""),
                )],
                b"",
            ),
            ("/v2/", None) => http_response("200 OK", &[], b"{}"),
            ("/v2/x/manifests/v1", _) => http_response(
                "200 OK",
                &[("Content-Type", OCI_MANIFEST)],
                manifest.as_bytes(),
            ),
            (p, _) if p.starts_with("/v2/x/blobs/") => http_response(
                "307 Temporary Redirect",
                &[("Location", &format!("{storage}/blob"))],
                b"",
            ),
            _ => http_response("404 Not Found", &[], b""),
        })
    }

    fn config_blob() -> Vec<u8> {
        test_utils::config(&[b"layer".to_vec()])
    }

    #[tokio::test]
    async fn token_realms_and_blob_redirects_are_checked() {
        let dir = TestDir::new("pull-guard");
        let p = puller(&dir);
        let config = config_blob();
        let served = config.clone();
        let inside = FakeServer::start("127.0.0.2", move |path| match path {
            "/blob" => http_response("200 OK", &[], &served),
            _ => http_response("200 OK", &[], br#"{"token":"t"}"#),
        });
        let reach = tenant(&["127.0.0.1/32"]);

        // The realm of the registry's challenge names a refused address.
        let reg = registry(
            inside.url(),
            Some(format!("{}/token", inside.url())),
            config.clone(),
        );
        let image = format!("{}/x:v1", reg.addr);
        let e = resolve(&p, &image, &reach).await.err().expect("refused");
        assert!(matches!(e, PullError::Refused(_)), "{e:?}");
        let want = "cannot connect to 127.0.0.2: refused: address 127.0.0.2 (loopback) is not allowed; the operator can allow it with --allow-fetch 127.0.0.2/32";
        assert!(e.to_string().contains(want), "{e}");
        let e = p
            .login(
                &reg.addr.to_string(),
                &Credentials {
                    username: "u".into(),
                    password: "p".into(),
                },
                &reach,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(e, PullError::Refused(_)) && e.to_string().contains(want),
            "{e:?}"
        );

        // A blob GET redirected to a refused address.
        let reg = registry(inside.url(), None, config.clone());
        let image = format!("{}/x:v1", reg.addr);
        let e = resolve(&p, &image, &reach).await.err().expect("refused");
        assert!(
            matches!(e, PullError::Refused(_)) && e.to_string().contains(want),
            "{e:?}"
        );
        assert_eq!(inside.hits(), 0, "a refused address was connected to");

        // The registry itself refused, however it is named.
        let before = reg.hits();
        for image in [
            format!("{}/x:v1", reg.addr),
            format!("localhost:{}/x:v1", reg.addr.port()),
        ] {
            let e = resolve(&p, &image, &tenant(&[]))
                .await
                .err()
                .expect("refused");
            assert!(matches!(e, PullError::Refused(_)), "{image}: {e:?}");
            assert!(e.to_string().contains("(loopback) is not allowed"), "{e}");
        }
        assert_eq!(reg.hits(), before, "a refused registry was connected to");

        // The operator follows the redirect; so does a tenant allowed both addresses.
        let r = resolve(&p, &image, &Reach::Operator).await.unwrap();
        assert_eq!(r.image_id, test_utils::digest(&config));
        let both = tenant(&["127.0.0.1/32", "127.0.0.2/32"]);
        resolve(&p, &image, &both).await.unwrap();
        assert_eq!(inside.hits(), 2);
    }

    #[tokio::test]
    async fn registry_failures_quote_nothing_that_answered() {
        let dir = TestDir::new("pull-secret");
        let p = puller(&dir);
        let reach = tenant(&["127.0.0.1/32"]);
        let envelope = serde_json::json!({"errors": [
            {"code": "MANIFEST_UNKNOWN", "message": SECRET, "detail": SECRET},
            {"code": SECRET, "message": SECRET}]})
        .to_string();
        let reg = FakeServer::start("127.0.0.1", move |path| match path {
            "/v2/" => http_response("200 OK", &[], b"{}"),
            "/v2/typed/manifests/latest" => http_response(
                "200 OK",
                &[("Content-Type", OCI_MANIFEST)],
                format!(r#"{{"schemaVersion":"{SECRET}","layers":[{{"digest":"{SECRET}"}}]}}"#)
                    .as_bytes(),
            ),
            "/v2/gone/manifests/latest" => http_response(
                "404 Not Found",
                &[("Content-Type", "application/json")],
                envelope.as_bytes(),
            ),
            _ => http_response(
                "500 Internal Server Error",
                &[("Server", SECRET)],
                SECRET.as_bytes(),
            ),
        });
        let broken = FakeServer::start("127.0.0.1", |_| {
            http_response(
                "500 Internal Server Error",
                &[("Server", SECRET)],
                SECRET.as_bytes(),
            )
        });
        let banner = FakeServer::start("127.0.0.1", |_| {
            format!("SSH-2.0-{SECRET}\r\n").into_bytes()
        });
        let auth = FakeServer::start("127.0.0.1", |_| {
            http_response(
                "401 Unauthorized",
                &[("WWW-Authenticate", &format!("{SECRET} realm=x"))],
                SECRET.as_bytes(),
            )
        });
        let creds = Credentials {
            username: "u".into(),
            password: "p".into(),
        };
        // (pull or login, server, what the message must say)
        let cases = [
            ("pull", format!("{}/gone", reg.addr), "manifest unknown"),
            (
                "pull",
                format!("{}/typed", reg.addr),
                "is not an image manifest",
            ),
            (
                "pull",
                format!("{}/x:v1", reg.addr),
                "the registry answered 500 Internal Server Error",
            ),
            (
                "pull",
                format!("{}/x:v1", banner.addr),
                "the exchange failed",
            ),
            (
                "pull",
                format!("{}/x:v1", broken.addr),
                "the registry answered 500 Internal Server Error",
            ),
            (
                "login",
                broken.addr.to_string(),
                "answered 500 Internal Server Error: not a registry",
            ),
            ("login", banner.addr.to_string(), "the exchange failed"),
            (
                "login",
                auth.addr.to_string(),
                "an authentication scheme hyper does not speak",
            ),
        ];
        for (i, (what, server, want)) in cases.iter().enumerate() {
            let e = match *what {
                "pull" => resolve(&p, server, &reach).await.err().expect("a failure"),
                _ => p.login(server, &creds, &reach).await.unwrap_err(),
            };
            let msg = chain(&e);
            assert!(msg.contains(want), "test[{i}]: {msg}");
            assert!(!msg.contains(SECRET), "test[{i}]: {msg}");
        }
    }

    #[test]
    fn registry_auth_header() {
        use base64::Engine;
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE.encode(s);
        let want = Some(Credentials {
            username: "u".into(),
            password: "p:w".into(),
        });
        let cases = [
            (
                enc(r#"{"username":"u","password":"p:w","serveraddress":"x"}"#),
                want.clone(),
            ),
            (
                enc(&format!(
                    r#"{{"auth":"{}"}}"#,
                    base64::engine::general_purpose::STANDARD.encode("u:p:w")
                )),
                want,
            ),
            (enc("{}"), None),
            (String::new(), None),
            ("%%%".into(), None),
        ];
        for (i, (h, want)) in cases.iter().enumerate() {
            assert_eq!(decode_registry_auth(h), *want, "test[{i}]");
        }
    }

    #[test]
    fn loopback_registries() {
        let cases = [
            ("127.0.0.1:5000", true),
            ("localhost:5000", true),
            ("localhost", true),
            ("[::1]:5000", true),
            ("127.9.9.9", true),
            ("registry.example.com", false),
            ("10.0.0.1:5000", false),
            ("index.docker.io", false),
        ];
        for (i, (r, want)) in cases.iter().enumerate() {
            assert_eq!(is_loopback(r), *want, "test[{i}] {r}");
        }
    }

    #[test]
    fn references_like_docker() {
        let cases = [
            ("busybox", None, "docker.io/library/busybox:latest"),
            ("busybox", Some("1.36"), "docker.io/library/busybox:1.36"),
            ("127.0.0.1:5000/a/b", Some("v1"), "127.0.0.1:5000/a/b:v1"),
            (
                "me/app",
                Some("sha256:0000000000000000000000000000000000000000000000000000000000000000"),
                "docker.io/me/app@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            ),
        ];
        for (i, (image, tag, want)) in cases.iter().enumerate() {
            assert_eq!(
                parse_reference(image, *tag).unwrap().whole(),
                *want,
                "test[{i}]"
            );
        }
        // Docker's rule too: an upper-case first component is a registry host (so
        // `UPPER/case` parses), an upper-case repository path is refused.
        assert!(parse_reference("me/UPPER", None).is_err());
        assert!(parse_reference("reg:5000/Upper/case", None).is_err());
    }
}
