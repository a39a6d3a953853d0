//! Pulling images from registries through the OCI distribution API.
//!
//! A pull has two steps, so an API can answer with a status code before it starts streaming:
//! - [`Puller::resolve`] parses the reference the way Docker does (`busybox` is
//!   `docker.io/library/busybox:latest`), authenticates (anonymous, basic, or the bearer-token
//!   flow a `WWW-Authenticate: Bearer realm=..,service=..` challenge asks for: oci-client does
//!   that), fetches the manifest (an OCI or Docker v2 schema 2 manifest, or an index / manifest
//!   list from which linux/amd64 is picked) and the config blob, each checked against its digest.
//!   Unknown repository or tag and wrong credentials are told apart here.
//! - [`Puller::fetch`] downloads the layers the store lacks (three at a time), reporting
//!   progress as it goes. Every blob goes to a temp file while being hashed; only a blob whose
//!   sha256 is the digest that named it is decompressed (gzip, zstd or plain), checked for entries
//!   escaping the root, and renamed into the layer store under its diff ID, which must be the
//!   config's. A failed or interrupted pull leaves nothing behind but the layers it completed,
//!   so a retry resumes from them. Pulls of images sharing a layer fetch it once: a per-layer
//!   lock makes the second wait for the first and then find the layer stored.
//!
//! Plain HTTP is used only for registries on loopback or listed as insecure
//! ([`Puller::set_insecure`]); everything else is HTTPS (rustls with the ring provider).
//!
//! The puller knows nothing of tenants: the caller records which tenant pulled what. Each pull
//! uses its own client, so one caller's credentials or tokens never serve another's pull.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex, Once, RwLock};

use futures_util::{StreamExt, TryStreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc::UnboundedSender;

use crate::archive::check_digest;
use crate::error::{ImageError, IoContext};
use crate::{full_hex, layer, ImageInfo, ImageStore};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const ACCEPT: &[&str] = &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

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

/// Why a pull failed. The first three are the caller's to fix (400, 404, 401).
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("invalid reference format: {0}")]
    InvalidReference(String),
    /// Unknown repository or tag; the message carries the registry's reason.
    #[error("{0}")]
    NotFound(String),
    /// The registry refused the credentials (or their absence).
    #[error("{0}")]
    Unauthorized(String),
    /// The registry answered something we cannot use (schema 1, no linux/amd64...).
    #[error("{0}")]
    Unsupported(String),
    /// The registry could not be reached or failed.
    #[error("{context}")]
    Registry {
        context: String,
        #[source]
        source: OciDistributionError,
    },
    /// A plain HTTP exchange (login, token server) failed.
    #[error("{context}")]
    Http {
        context: String,
        #[source]
        source: reqwest::Error,
    },
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
    client: Client,
    reference: Reference,
    layers: Vec<Descriptor>,
    diff_ids: Vec<String>,
    config: Vec<u8>,
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

fn short(digest: &str) -> String {
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

    fn client_for(&self, registry: &str) -> Client {
        tls_provider();
        let protocol = if self.is_insecure(registry) {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        Client::new(ClientConfig {
            protocol,
            connect_timeout: Some(std::time::Duration::from_secs(30)),
            read_timeout: Some(std::time::Duration::from_secs(300)),
            ..Default::default()
        })
    }

    /// Fetches and checks the manifest and config of `reference` with `creds`.
    pub async fn resolve(
        &self,
        reference: Reference,
        creds: Option<&Credentials>,
    ) -> Result<Resolved, PullError> {
        let registry = reference.resolve_registry().to_string();
        let client = self.client_for(&registry);
        let auth = match creds {
            Some(c) if !c.username.is_empty() => {
                RegistryAuth::Basic(c.username.clone(), c.password.clone())
            }
            _ => RegistryAuth::Anonymous,
        };
        let name = format!("{}/{}", reference.registry(), reference.repository());
        let shown = reference.whole();

        let (raw, manifest_digest) = client
            .pull_manifest_raw(&reference, &auth, ACCEPT)
            .await
            .map_err(|e| classify(e, &shown, "manifest"))?;
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
            let by_digest = Reference::with_digest(
                reference.registry().to_string(),
                reference.repository().to_string(),
                pick.digest.clone(),
            );
            let (raw, digest) = client
                .pull_manifest_raw(&by_digest, &auth, ACCEPT)
                .await
                .map_err(|e| classify(e, &shown, "manifest"))?;
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
        if config_desc.size < 0 || config_desc.size as usize > MAX_JSON_BLOB {
            return Err(PullError::Unsupported(format!(
                "{shown}: config blob of {} bytes",
                config_desc.size
            )));
        }
        let mut config = Vec::new();
        client
            .pull_blob(&reference, config_desc.digest.as_str(), &mut config)
            .await
            .map_err(|e| classify(e, &shown, "config"))?;
        check_digest(&config, &config_desc.digest, "config")?;
        let value: serde_json::Value =
            serde_json::from_slice(&config).map_err(|source| ImageError::Json {
                context: format!("config {}", config_desc.digest),
                source,
            })?;
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
        for l in &layers {
            if full_hex(&l.digest).is_none() {
                return Err(PullError::Unsupported(format!(
                    "{shown}: unsupported layer digest {}",
                    l.digest
                )));
            }
        }
        let image_id = crate::archive::sha256_digest(&config);
        let present = self.store.get(&image_id).is_ok()
            && diff_ids.iter().all(|d| self.store.layer_path(d).exists());
        Ok(Resolved {
            client,
            tag: reference
                .tag()
                .map(str::to_string)
                .filter(|_| reference.digest().is_none()),
            reference,
            layers,
            diff_ids,
            config,
            name,
            manifest_digest,
            image_id,
            present,
        })
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
        tokio::task::spawn_blocking(move || store.add_pulled(&config, &diff_ids, repo_tags))
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
        let mut blob = r
            .client
            .pull_blob_stream(&r.reference, desc.digest.as_str())
            .await
            .map_err(|e| classify(e, &shown, "layer"))?;
        let total = if desc.size > 0 {
            Some(desc.size as u64)
        } else {
            blob.content_length
        };
        let tmp = self.store.temp("blob");
        let mut file = tokio::fs::File::create(tmp.path())
            .await
            .ctx(|| format!("creating {}", tmp.path().display()))?;
        let mut hash = Sha256::new();
        let mut got = 0u64;
        let mut reported = 0u64;
        while let Some(chunk) = blob.stream.next().await {
            let chunk = chunk.map_err(|e| ImageError::BadLayer {
                layer: desc.digest.clone(),
                reason: format!("download failed after {got} bytes: {e}"),
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
    serde_json::from_slice(raw).map_err(|source| {
        ImageError::Json {
            context: format!("manifest {digest}"),
            source,
        }
        .into()
    })
}

/// Sorts a registry failure into not found, unauthorized, or a plain failure.
fn classify(e: OciDistributionError, shown: &str, what: &str) -> PullError {
    match &e {
        OciDistributionError::RegistryError { envelope, .. } => {
            let reason = envelope
                .errors
                .iter()
                .map(|x| format!("{}: {}", code_name(&x.code), x.message))
                .collect::<Vec<_>>()
                .join("; ");
            let unauthorized = envelope
                .errors
                .iter()
                .any(|x| matches!(x.code, OciErrorCode::Unauthorized | OciErrorCode::Denied));
            let not_found = envelope.errors.iter().any(|x| {
                matches!(
                    x.code,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NotFound
                )
            });
            if unauthorized {
                PullError::Unauthorized(format!("pull access denied for {shown}: {reason}"))
            } else if not_found && what == "manifest" {
                PullError::NotFound(format!("manifest for {shown} not found: {reason}"))
            } else {
                PullError::Registry {
                    context: format!("fetching the {what} of {shown}: {reason}"),
                    source: e,
                }
            }
        }
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => PullError::Unauthorized(format!(
            "pull access denied for {shown}: unauthorized: authentication required or wrong credentials"
        )),
        OciDistributionError::ImageManifestNotFoundError(m) => {
            PullError::NotFound(format!("manifest for {shown} not found: {m}"))
        }
        OciDistributionError::ServerError { code: 404, .. } if what == "manifest" => {
            PullError::NotFound(format!("manifest for {shown} not found"))
        }
        _ => PullError::Registry {
            context: format!("fetching the {what} of {shown}"),
            source: e,
        },
    }
}

fn code_name(c: &OciErrorCode) -> String {
    serde_json::to_value(c)
        .ok()
        .and_then(|v| v.as_str().map(|s| s.to_ascii_lowercase().replace('_', " ")))
        .unwrap_or_else(|| format!("{c:?}"))
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
