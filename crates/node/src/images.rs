//! A tenant's view of images: which images it has and under which tags. The bytes live once
//! per node in the image crate's content store; tenancy lives here, in the store.
//!
//! Keys: `/images/<tenant>/<image id>` -> `TenantImage`, `/tags/<tenant>/<name:tag>` -> image id
//! (a pulled digest reference `name@sha256:..` is a key there too, so it resolves).
//!
//! Pulls: the bytes are shared by every tenant of the node, but a tenant only gets an image by
//! pulling it itself, and every pull asks the registry for the manifest with that tenant's own
//! credentials, so a private image one tenant pulled is not usable by another until the registry
//! has accepted the other's credentials.

mod export;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use store::{Op, Store, Txn};

use crate::metering::{Kind, Meter, Segment};
use crate::{Result, RuntimeError};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenantImage {
    pub id: String,
    pub tags: Vec<String>,
    pub added: DateTime<Utc>,
    /// `name@sha256:<manifest digest>` of each pull (Docker's RepoDigests).
    #[serde(default)]
    pub digests: Vec<String>,
}

/// An image as the API shows it: the tenant's tags plus the stored content.
#[derive(Debug, Clone)]
pub struct ImageView {
    pub tenant: TenantImage,
    pub info: image::ImageInfo,
}

/// Docker's short form of a reference: `docker.io/library/busybox` is `busybox`, a missing tag
/// is `latest`. A digest reference (`name@sha256:...`) is kept as given.
pub fn normalize(reference: &str) -> String {
    let reference = reference.trim();
    let (name, suffix) = match reference.split_once('@') {
        Some((n, d)) => (n, format!("@{d}")),
        None => {
            let last_slash = reference.rfind('/').map_or(0, |i| i + 1);
            match reference[last_slash..].rfind(':') {
                Some(i) => (
                    &reference[..last_slash + i],
                    reference[last_slash + i..].to_string(),
                ),
                None => (reference, ":latest".to_string()),
            }
        }
    };
    let name = name
        .strip_prefix("docker.io/")
        .or_else(|| name.strip_prefix("index.docker.io/"))
        .unwrap_or(name);
    let name = name.strip_prefix("library/").unwrap_or(name);
    format!("{name}{suffix}")
}

pub struct Images {
    store: Arc<dyn Store>,
    content: Arc<image::ImageStore>,
    puller: image::pull::Puller,
    /// Where pulls, logins and archive downloads may connect for a tenant (the operator's
    /// `--allow-fetch` over the default of public addresses only).
    tenant_policy: std::sync::RwLock<image::policy::AddressPolicy>,
}

fn image_key(tenant: &str, id: &str) -> String {
    format!("/images/{tenant}/{id}")
}
fn tag_key(tenant: &str, tag: &str) -> String {
    format!("/tags/{tenant}/{tag}")
}

impl Images {
    pub fn new(store: Arc<dyn Store>, content: Arc<image::ImageStore>) -> Self {
        let puller = image::pull::Puller::new(content.clone());
        Self {
            store,
            content,
            puller,
            tenant_policy: Default::default(),
        }
    }

    /// The registry client side; [`Images::pull`] records what it fetched for a tenant.
    pub fn puller(&self) -> &image::pull::Puller {
        &self.puller
    }

    /// Registries (`host:port`) pulled from over plain HTTP, besides loopback ones. Plain HTTP
    /// only: an insecure registry is not exempt from the tenant policy.
    pub fn set_insecure_registries(&self, registries: Vec<String>) {
        self.puller.set_insecure(registries);
    }

    /// The addresses tenants' pulls, logins and archive downloads may reach (default: public
    /// unicast only).
    pub fn set_tenant_policy(&self, policy: image::policy::AddressPolicy) {
        *self
            .tenant_policy
            .write()
            .unwrap_or_else(|e| e.into_inner()) = policy;
    }

    /// Where hyperd may connect for a tenant's pull, login or download.
    pub fn tenant_reach(&self) -> image::fetch::Reach {
        image::fetch::Reach::Tenant(
            self.tenant_policy
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }

    /// Fetches what `resolved` lacks, records the image for `tenant` under the pulled tag (or
    /// digest), and returns Docker's closing status line ("Downloaded newer image for ...").
    pub async fn pull(
        &self,
        tenant: &str,
        resolved: &image::pull::Resolved,
        progress: &tokio::sync::mpsc::UnboundedSender<image::pull::Progress>,
    ) -> std::result::Result<String, PullFailure> {
        let tag = resolved
            .tag
            .as_ref()
            .map(|t| normalize(&format!("{}:{}", resolved.name, t)));
        let digest_ref = normalize(&format!("{}@{}", resolved.name, resolved.manifest_digest));
        let had = match &tag {
            Some(t) => self.store.get(&tag_key(tenant, t))?,
            None => self.store.get(&tag_key(tenant, &digest_ref))?,
        }
        .is_some_and(|kv| kv.value == resolved.image_id.as_bytes());
        let info = self
            .puller
            .fetch(resolved, tag.iter().cloned().collect(), progress)
            .await?;
        let tags: Vec<String> = tag.iter().cloned().collect();
        self.add(tenant, &info.id, &tags)?;
        let mut record = self.record(tenant, &info.id)?.ok_or_else(|| {
            RuntimeError::Internal(format!("image {} vanished while recording it", info.id))
        })?;
        if !record.digests.contains(&digest_ref) {
            record.digests.push(digest_ref.clone());
        }
        self.store.txn(
            Txn::new()
                .then(Op::Put(
                    tag_key(tenant, &digest_ref),
                    info.id.as_bytes().to_vec(),
                ))
                .then(Self::put_ops(&record, tenant)),
        )?;
        let shown = tag.unwrap_or(digest_ref);
        Ok(if had && resolved.present {
            format!("Status: Image is up to date for {shown}")
        } else {
            format!("Status: Downloaded newer image for {shown}")
        })
    }

    pub fn content(&self) -> &Arc<image::ImageStore> {
        &self.content
    }

    fn record(&self, tenant: &str, id: &str) -> Result<Option<TenantImage>> {
        Ok(match self.store.get(&image_key(tenant, id))? {
            Some(kv) => Some(
                serde_json::from_slice(&kv.value)
                    .map_err(|e| RuntimeError::Internal(e.to_string()))?,
            ),
            None => None,
        })
    }

    fn put_ops(record: &TenantImage, tenant: &str) -> Op {
        Op::Put(
            image_key(tenant, &record.id),
            serde_json::to_vec(record).expect("json"),
        )
    }

    /// Loads an archive (docker save or OCI layout) for a tenant; returns "Loaded image" lines.
    pub async fn load(&self, tenant: &str, archive: std::path::PathBuf) -> Result<Vec<String>> {
        let content = self.content.clone();
        let loaded = tokio::task::spawn_blocking(move || -> Result<Vec<image::ImageInfo>> {
            let file =
                std::fs::File::open(&archive).map_err(RuntimeError::io("open uploaded archive"))?;
            Ok(content.load_archive(std::io::BufReader::new(file))?)
        })
        .await
        .map_err(|e| RuntimeError::Internal(e.to_string()))??;
        let mut lines = Vec::new();
        for info in loaded {
            let tags: Vec<String> = info.repo_tags.iter().map(|t| normalize(t)).collect();
            self.add(tenant, &info.id, &tags)?;
            if tags.is_empty() {
                lines.push(format!("Loaded image ID: {}", info.id));
            }
            lines.extend(tags.iter().map(|t| format!("Loaded image: {t}")));
        }
        Ok(lines)
    }

    /// Gives the tenant an image and points tags at it, taking each tag from any image that had it.
    pub fn add(&self, tenant: &str, id: &str, tags: &[String]) -> Result<()> {
        let mut txn = Txn::new();
        let existing = self.record(tenant, id)?;
        if existing.is_none() {
            // The tenant pays for the image's storage from now until it removes the image.
            let (size, name) = (
                self.content.get(id).map_or(0, |i| i.size),
                tags.first().map_or(id, String::as_str),
            );
            let segment = Segment::storage(Kind::Image, id, name, size, Utc::now());
            if let Err(e) = Meter::new(self.store.clone()).open_segment(tenant, &segment) {
                tracing::error!("metering image {id}: {e}");
            }
        }
        let mut record = existing.unwrap_or(TenantImage {
            id: id.into(),
            tags: vec![],
            added: Utc::now(),
            digests: vec![],
        });
        for tag in tags {
            if let Some(old) = self.store.get(&tag_key(tenant, tag))? {
                let old_id = String::from_utf8_lossy(&old.value).to_string();
                if old_id != id {
                    if let Some(mut other) = self.record(tenant, &old_id)? {
                        other.tags.retain(|t| t != tag);
                        txn = txn.then(Self::put_ops(&other, tenant));
                    }
                }
            }
            if !record.tags.contains(tag) {
                record.tags.push(tag.clone());
            }
            txn = txn.then(Op::Put(tag_key(tenant, tag), id.as_bytes().to_vec()));
        }
        self.store.txn(txn.then(Self::put_ops(&record, tenant)))?;
        Ok(())
    }

    /// Finds an image by tag, full ID, or unique ID prefix (with or without `sha256:`).
    pub fn resolve(&self, tenant: &str, reference: &str) -> Result<ImageView> {
        let not_found = || RuntimeError::NotFound(format!("No such image: {reference}"));
        let id = if let Some(kv) = self.store.get(&tag_key(tenant, &normalize(reference)))? {
            String::from_utf8_lossy(&kv.value).to_string()
        } else {
            let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
            if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(not_found());
            }
            let matches: Vec<_> = self
                .store
                .range(&format!("/images/{tenant}/sha256:{hex}"))?
                .into_iter()
                .map(|kv| kv.key.rsplit('/').next().unwrap_or_default().to_string())
                .collect();
            match matches.as_slice() {
                [one] => one.clone(),
                [] => return Err(not_found()),
                _ => {
                    return Err(RuntimeError::Invalid(format!(
                        "image ID prefix {reference} is ambiguous"
                    )))
                }
            }
        };
        let tenant_image = self.record(tenant, &id)?.ok_or_else(not_found)?;
        // In a fleet the tenant's tags are every node's, the content only where it was
        // pulled, loaded or copied: elsewhere the image is not there.
        let info = self.content.get(&id).map_err(|e| match e {
            image::ImageError::NotFound(_) => not_found(),
            e => e.into(),
        })?;
        Ok(ImageView {
            tenant: tenant_image,
            info,
        })
    }

    pub fn list(&self, tenant: &str) -> Result<Vec<ImageView>> {
        let mut out = Vec::new();
        for kv in self.store.range(&format!("/images/{tenant}/"))? {
            let tenant_image: TenantImage = serde_json::from_slice(&kv.value)
                .map_err(|e| RuntimeError::Internal(e.to_string()))?;
            if let Ok(info) = self.content.get(&tenant_image.id) {
                out.push(ImageView {
                    tenant: tenant_image,
                    info,
                });
            }
        }
        Ok(out)
    }

    pub fn tag(&self, tenant: &str, source: &str, target: &str) -> Result<()> {
        let view = self.resolve(tenant, source)?;
        let target = normalize(target);
        if target.contains('@') {
            return Err(RuntimeError::Invalid(format!(
                "refusing to create a tag with a digest reference: {target}"
            )));
        }
        self.add(tenant, &view.info.id, &[target])
    }

    /// Untags (`rmi name:tag` of an image with more tags) or deletes the tenant's image.
    /// `in_use` says whether a container of this tenant uses the image ID.
    pub fn remove(
        &self,
        tenant: &str,
        reference: &str,
        force: bool,
        in_use: bool,
    ) -> Result<Vec<(String, String)>> {
        let view = self.resolve(tenant, reference)?;
        let mut record = view.tenant;
        let by_tag = normalize(reference);
        let mut report = Vec::new();
        if record.tags.contains(&by_tag) && record.tags.len() > 1 && !force {
            record.tags.retain(|t| t != &by_tag);
            self.store.txn(
                Txn::new()
                    .then(Op::Delete(tag_key(tenant, &by_tag)))
                    .then(Self::put_ops(&record, tenant)),
            )?;
            report.push(("Untagged".into(), by_tag));
            return Ok(report);
        }
        if in_use && !force {
            return Err(RuntimeError::Conflict(format!(
                "conflict: unable to remove repository reference \"{reference}\" (must force) - image {} is being used by a container",
                &record.id[7..19]
            )));
        }
        let mut txn = Txn::new().then(Op::Delete(image_key(tenant, &record.id)));
        for tag in &record.tags {
            txn = txn.then(Op::Delete(tag_key(tenant, tag)));
            report.push(("Untagged".into(), tag.clone()));
        }
        for d in &record.digests {
            txn = txn.then(Op::Delete(tag_key(tenant, d)));
            report.push(("Untagged".into(), d.clone()));
        }
        self.store.txn(txn)?;
        if let Err(e) = Meter::new(self.store.clone()).close_segment(tenant, &record.id, Utc::now())
        {
            tracing::error!("metering the removal of image {}: {e}", record.id);
        }
        report.push(("Deleted".into(), record.id.clone()));
        // The content goes when no tenant holds the image any more.
        let still_held = self
            .store
            .range("/images/")?
            .iter()
            .any(|kv| kv.key.ends_with(&format!("/{}", record.id)));
        if !still_held && !in_use {
            let content = self.content.clone();
            let id = record.id.clone();
            if let Err(e) = content.remove(&id) {
                tracing::warn!("removing image content {id}: {e}");
            }
        }
        Ok(report)
    }
}

/// Why [`Images::pull`] failed: the registry or the content store, or our own store.
#[derive(Debug, thiserror::Error)]
pub enum PullFailure {
    #[error(transparent)]
    Pull(#[from] image::pull::PullError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl From<store::StoreError> for PullFailure {
    fn from(e: store::StoreError) -> Self {
        PullFailure::Runtime(e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn normalizes_like_docker() {
        let cases = [
            ("busybox", "busybox:latest"),
            ("busybox:1.36", "busybox:1.36"),
            ("docker.io/library/busybox:latest", "busybox:latest"),
            ("library/busybox", "busybox:latest"),
            ("localhost:5000/app", "localhost:5000/app:latest"),
            ("localhost:5000/app:v2", "localhost:5000/app:v2"),
            ("me/app@sha256:abcd", "me/app@sha256:abcd"),
        ];
        for (i, (input, want)) in cases.iter().enumerate() {
            assert_eq!(normalize(input), *want, "test[{i}]");
        }
    }
}
